"""Type stubs for memifx.handoff (compiled): a queue's whole private state, handed between processes."""
from typing import Any

from memifx.ring import Queue

def export_state(q: Queue) -> list[Any]: ...
def restore_state(q: Queue, state: list[Any]) -> None: ...
