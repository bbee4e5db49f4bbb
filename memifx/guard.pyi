"""Type stubs for memifx.guard (compiled): SIGBUS from truncated peer memory."""
import logging

log: logging.Logger

REASON: str
SLOTS: int

def fileno() -> int: ...
def fault_count() -> int: ...
def dispatch() -> None: ...
