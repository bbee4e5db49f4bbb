"""The shared-memory layout, declared once in csrc/memif.h and read through
memifx.layout: its values against the facts of MEMIF.md (written here as the
spec gives them, the one place a test spells them out), the slave layout's
invariants, and the users that must agree with it (Queue, Interface, the
slave's handshake)."""
import os

import pytest

import memifx
from memifx import control, layout
from memifx.errors import MemifError
from memifx.memory import Memory
from memifx.ring import Queue

from rogue import RogueMaster

pytestmark = pytest.mark.timeout(30)


def test_constants_are_the_specs():
    assert layout.COOKIE == 0x3E31F20
    assert layout.VERSION == 0x0200
    assert layout.RING_HEADER_SIZE == 128
    assert layout.DESC_SIZE == 16
    assert (layout.COOKIE_OFFSET, layout.FLAGS_OFFSET,
            layout.HEAD_OFFSET, layout.TAIL_OFFSET) == (0, 4, 6, 64)
    assert layout.RING_FLAG_MASK_INT == 1 and layout.DESC_FLAG_NEXT == 1
    assert layout.MAX_LOG2_RING_SIZE == 14      # DPDK's cap: every peer takes it
    assert layout.MAX_REGIONS == 256


@pytest.mark.parametrize("log2", [0, 1, 2, 4, 10, 14, 15])
def test_ring_sizes(log2):
    assert layout.ring_bytes(log2) == 128 + 16 * (1 << log2)
    stride = layout.ring_stride(log2)
    assert stride % 64 == 0 and 0 <= stride - layout.ring_bytes(log2) < 64
    assert layout.desc_offset(0) == 128
    assert layout.desc_offset((1 << log2) - 1) + 16 == layout.ring_bytes(log2)


def test_two_slot_ring_is_padded_to_a_cache_line():
    assert layout.ring_bytes(1) == 160 and layout.ring_stride(1) == 192


@pytest.mark.parametrize("log2", [-1, 32, 255])
def test_log2_outside_a_defined_shift_is_refused(log2):
    for f in (layout.ring_bytes, layout.ring_stride):
        with pytest.raises((ValueError, OverflowError)):
            f(log2)
    with pytest.raises((ValueError, OverflowError)):
        layout.slave_layout(1, 1, log2, 2048)


@pytest.mark.parametrize("n_s2m,n_m2s,log2,buffer_size,rx_pool", [
    (1, 1, 1, 128, 1), (1, 1, 4, 2048, 2), (3, 2, 10, 2048, 2), (2, 5, 6, 9216, 1),
    (255, 255, 2, 128, 2)])
def test_slave_layout(n_s2m, n_m2s, log2, buffer_size, rx_pool):
    lay = layout.slave_layout(n_s2m, n_m2s, log2, buffer_size, rx_pool)
    n, size = n_s2m + n_m2s, 1 << log2
    assert len(lay.ring_offsets) == len(lay.nbufs) == len(lay.buffer_offsets) == n
    assert lay.nbufs == [size] * n_s2m + [rx_pool * size] * n_m2s
    # rings back to back from 0, each on a cache line, none overlapping
    assert lay.ring_offsets[0] == 0
    for a, b in zip(lay.ring_offsets, lay.ring_offsets[1:]):
        assert b - a == layout.ring_stride(log2) and a % 64 == 0
    last_ring_end = lay.ring_offsets[-1] + layout.ring_bytes(log2)
    # buffers from the first page after the rings, each ring's in one run
    assert lay.buffers_at % 4096 == 0 and 0 <= lay.buffers_at - last_ring_end < 4096 + 64
    at = lay.buffers_at
    for off, count in zip(lay.buffer_offsets, lay.nbufs):
        assert off == at
        at += count * buffer_size
    assert lay.size == at


def test_queue_refuses_a_ring_larger_than_the_limit():
    """Regression: Queue took log2 15 while the header, HELLO and ADD_RING
    all cap it at 14; a ring is now refused past the one limit wherever it
    is built (here with a region large enough to hold it)."""
    mem = Memory()
    region = layout.slave_layout(1, 0, 15, 128).size
    os.close(mem.create_region(region, "test-layout"))
    for log2, ok in ((14, True), (15, False), (16, False)):
        fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        try:
            q = Queue(mem, 0, 0, log2, slave=False, tx=False, index=0, fd=fd)
        except MemifError as e:
            os.close(fd)                    # a Queue owns its fd only once built
            assert not ok and str(e) == "ring size out of range"
        else:
            q.close()
            assert ok, log2


def test_interface_limits_come_from_the_layout():
    memifx.Interface(name="x", ring_size=1 << layout.MAX_LOG2_RING_SIZE)
    with pytest.raises(ValueError, match="2 to %d" % (1 << layout.MAX_LOG2_RING_SIZE)):
        memifx.Interface(name="x", ring_size=1 << (layout.MAX_LOG2_RING_SIZE + 1))
    memifx.Interface(name="x", max_regions=layout.MAX_REGIONS)
    with pytest.raises(ValueError):
        memifx.Interface(name="x", max_regions=layout.MAX_REGIONS + 1)


def test_slave_region_is_the_slave_layout(abstract_sock):
    """What a memifx slave announces (region size, ring offsets) is
    slave_layout with the control plane's receive pool."""
    master = RogueMaster.listen(abstract_sock)
    slave = memifx.Interface(socket=abstract_sock, role="slave", name="s", ring_size=64,
                             tx_queues=2, rx_queues=3, buffer_size=1024)
    try:
        slave.connect()
        master.accept()
        master.handshake()
        assert slave.wait_connected(5)
        lay = layout.slave_layout(2, 3, 6, 1024, control.RX_POOL)
        regions = [m for m in master.seen if type(m).__name__ == "AddRegion"]
        assert [r.size for r in regions] == [lay.size]
        assert [r.offset for r in master.s2m + master.m2s] == lay.ring_offsets
    finally:
        slave.close()
        master.close()
