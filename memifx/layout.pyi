"""Type stubs for memifx.layout (compiled): the memif shared-memory layout."""

COOKIE: int
VERSION: int
CACHELINE: int
RING_HEADER_SIZE: int
DESC_SIZE: int
RING_FLAG_MASK_INT: int
DESC_FLAG_NEXT: int
MAX_LOG2_RING_SIZE: int
MAX_REGIONS: int
COOKIE_OFFSET: int
FLAGS_OFFSET: int
HEAD_OFFSET: int
TAIL_OFFSET: int
PAGE_SIZE: int
MAX_LOG2_ARGUMENT: int

class SlaveLayout:
    ring_offsets: list[int]
    buffers_at: int
    nbufs: list[int]
    buffer_offsets: list[int]
    size: int
    def __init__(self, ring_offsets: list[int], buffers_at: int, nbufs: list[int],
                 buffer_offsets: list[int], size: int) -> None: ...

def ring_bytes(log2_size: int) -> int: ...
def ring_stride(log2_size: int) -> int: ...
def desc_offset(slot: int) -> int: ...
def slave_layout(n_s2m: int, n_m2s: int, log2_size: int, buffer_size: int,
                 rx_pool: int = ...) -> SlaveLayout: ...
