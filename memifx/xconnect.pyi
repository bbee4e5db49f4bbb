"""Type stubs for memifx.xconnect (compiled): the l2-xconnect node."""
from collections.abc import Sequence
from typing import Any

from memifx.counted import CountedNode
from memifx.ring import Queue

DROP_REASONS: tuple[str, ...]
COUNTER_SIZE: int
DROPS_OFFSET: int

class XConnect(CountedNode):
    """Counters and scratch memory of one direction of a cross-connect."""

    def poll(self, rxq: Queue, txq: Queue, max_frames: int = ..., rounds: int = ...) -> int: ...
    def discard(self, rxq: Queue) -> int: ...
    @property
    def packets(self) -> int: ...
    @property
    def bytes(self) -> int: ...
    def counters(self) -> dict[str, Any]: ...

def counters_from_slot(values: Sequence[int]) -> dict[str, Any]: ...
