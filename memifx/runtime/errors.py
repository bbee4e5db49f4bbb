"""The runtime's one exception."""
from typing import Optional

from memifx.errors import MemifError


class DataplaneError(MemifError):
    """A management call that cannot be done; ``reason`` says why.  ``option``
    names the command-line option the bad value came from, when there is one
    (the CLI turns the error into a usage error for that option)."""

    def __init__(self, reason: str, option: Optional[str] = None) -> None:
        super().__init__(reason)
        self.option = option
