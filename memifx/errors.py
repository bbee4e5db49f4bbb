"""Exceptions carrying memif reason strings."""


class MemifError(Exception):
    """A memif failure; ``reason`` is the string sent or received in DISCONNECT."""

    def __init__(self, reason):
        super().__init__(reason)
        self.reason = reason


class LinkDown(MemifError):
    """The operation needs a connected link."""
