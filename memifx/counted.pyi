"""Type stubs for memifx.counted (compiled): the base of nodes with counter blocks."""

class CountedNode:
    """Base of nodes with counter blocks."""

    def counter_block_size(self, block: int = ...) -> int: ...
