# cython: language_level=3
"""The memif shared-memory layout for Python code: csrc/memif.h's constants
and sizes, computed by the header's own functions.

The control plane (control.py, interface.py) and the tests take every ring
size, offset and limit from here, so the layout is declared once, in C, and
a change there reaches every user.
"""
from libc.stdint cimport uint32_t, uint64_t

from memifx.memif cimport (
    MEMIF_COOKIE, MEMIF_VERSION, MEMIF_CACHELINE, MEMIF_RING_HDR_SIZE, MEMIF_DESC_SIZE,
    MEMIF_RING_FLAG_MASK_INT, MEMIF_DESC_FLAG_NEXT, MEMIF_MAX_LOG2_RING_SIZE,
    MEMIF_MAX_REGIONS, MEMIF_RING_COOKIE_OFFSET, MEMIF_RING_FLAGS_OFFSET,
    MEMIF_RING_HEAD_OFFSET, MEMIF_RING_TAIL_OFFSET, MEMIF_PAGE_SIZE,
    memif_ring_bytes, memif_ring_stride, memif_desc_offset, memif_slave_ring_offset,
    memif_slave_buffers_at)

COOKIE = MEMIF_COOKIE
VERSION = MEMIF_VERSION
CACHELINE = MEMIF_CACHELINE                 # a ring's offset is a multiple of this
RING_HEADER_SIZE = MEMIF_RING_HDR_SIZE      # descriptors start here
DESC_SIZE = MEMIF_DESC_SIZE
RING_FLAG_MASK_INT = MEMIF_RING_FLAG_MASK_INT
DESC_FLAG_NEXT = MEMIF_DESC_FLAG_NEXT
MAX_LOG2_RING_SIZE = MEMIF_MAX_LOG2_RING_SIZE
MAX_REGIONS = MEMIF_MAX_REGIONS
COOKIE_OFFSET = MEMIF_RING_COOKIE_OFFSET   # byte offsets inside a ring header
FLAGS_OFFSET = MEMIF_RING_FLAGS_OFFSET
HEAD_OFFSET = MEMIF_RING_HEAD_OFFSET
TAIL_OFFSET = MEMIF_RING_TAIL_OFFSET
PAGE_SIZE = MEMIF_PAGE_SIZE                 # a slave's buffers start on a page

# The largest log2 the functions below take: their C shifts are defined up to
# it, and it is far past any ring size a peer may use.
MAX_LOG2_ARGUMENT = 31


cdef uint32_t checked_log2(long long log2_size) except? 0xFFFFFFFF:
    if not 0 <= log2_size <= MAX_LOG2_ARGUMENT:
        raise ValueError("log2 ring size must be 0 to %d" % MAX_LOG2_ARGUMENT)
    return <uint32_t>log2_size


def ring_bytes(log2_size):
    """Bytes of one ring of ``1 << log2_size`` slots: header and descriptors."""
    return memif_ring_bytes(checked_log2(log2_size))


def ring_stride(log2_size):
    """Bytes from one ring to the next in a slave's region: the ring's bytes
    rounded up to a cache line (a master checks that a ring is aligned)."""
    return memif_ring_stride(checked_log2(log2_size))


def desc_offset(uint32_t slot):
    """Offset of descriptor ``slot`` from the start of its ring."""
    return memif_desc_offset(slot)


class SlaveLayout:
    """Region 0 as a memifx slave lays it out: ``ring_offsets[i]`` and
    ``buffer_offsets[i]`` (where ring i's ``nbufs[i]`` buffers start) for the
    S2M rings then the M2S rings, and the region's ``size`` in bytes."""

    def __init__(self, ring_offsets, buffers_at, nbufs, buffer_offsets, size):
        self.ring_offsets = ring_offsets
        self.buffers_at = buffers_at
        self.nbufs = nbufs
        self.buffer_offsets = buffer_offsets
        self.size = size


def slave_layout(uint32_t n_s2m, uint32_t n_m2s, log2_size, uint64_t buffer_size,
                 uint32_t rx_pool=1):
    """How a memifx slave lays out region 0 for these rings: every ring back
    to back (S2M first), then, from a page boundary, one buffer per slot of
    each S2M ring and ``rx_pool`` per slot of each M2S ring (a receive pool
    larger than the ring lets the application hold zero-copy buffers without
    leaving the ring empty)."""
    cdef uint32_t log2 = checked_log2(log2_size)
    cdef uint32_t n = n_s2m + n_m2s
    cdef uint64_t size = 1ULL << log2
    cdef uint64_t at = memif_slave_buffers_at(n, log2)
    nbufs = [size] * n_s2m + [rx_pool * size] * n_m2s
    offsets = []
    for count in nbufs:
        offsets.append(at)
        at += count * buffer_size
    return SlaveLayout([memif_slave_ring_offset(i, log2) for i in range(n)],
                       memif_slave_buffers_at(n, log2), nbufs, offsets, at)
