"""Exceptions carrying memif reason strings."""
from __future__ import annotations


class MemifError(Exception):
    """A memif failure; ``reason`` is the string sent or received in DISCONNECT."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason: str = reason


class LinkDown(MemifError):
    """The operation needs a connected link."""
