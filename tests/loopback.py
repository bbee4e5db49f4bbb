"""In-process loopback rings for data-path unit tests (no sockets, no control channel).

A :class:`Loopback` lays out one memfd region the way the slave does after
HELLO (memifx.layout.slave_layout, as memifx/control.py's
SlaveChannel.on_hello uses it): every S2M ring, then every M2S ring, then
each ring's buffers from a page-aligned offset.  It builds the
slave's queues on that region and the master's queues on the same memory,
either through a second :class:`Memory` that maps a duplicate of the memfd
(the default: what a real master does, so every pointer the master uses comes
from descriptor offsets in its own mapping) or on the very same ``Memory``.

Then it brings the link up in the order the control channel does: the slave
initialises its rings, the master starts (resets the counters), the slave
starts (posts its receive buffers).

    lb = Loopback(log2=4, buffer_size=128)
    lb.s2m.tx.tx_frames([b"x" * 300])      # slave -> master
    lb.s2m.rx.rx_frames(8)
    lb.m2s.tx.tx_frames([b"y"])            # master -> slave
    lb.m2s.rx.rx_frames(8)

``lb.counters(ring)`` reads head and tail straight out of the shared ring
header (through a third, read-only mapping), so tests can see the u16
counters wrap.
"""
import mmap
import os
import struct
from collections import namedtuple

from memifx import layout
from memifx.memory import Memory
from memifx.ring import Queue

# One ring as a (producer, consumer) pair: ``tx`` transmits into it, ``rx``
# receives from it.  For S2M the slave is ``tx``; for M2S the master is.
Pair = namedtuple("Pair", "tx rx")
Desc = namedtuple("Desc", "flags region length offset metadata")


class Loopback:
    """``n_s2m`` + ``n_m2s`` rings of ``1 << log2`` slots, ``buffer_size``
    bytes per slave buffer.  ``share_memory``: the master uses the slave's own
    ``Memory`` object instead of a second mapping of the memfd.  ``rx_pool``:
    receive buffers per slot of each M2S ring (the slave's receive pool).
    ``max_frame``: every queue's (default: the Queue default)."""

    def __init__(self, log2=4, buffer_size=2048, n_s2m=1, n_m2s=1, share_memory=False,
                 start=True, rx_pool=1, max_frame=None):
        self.log2 = log2
        self.size = 1 << log2
        self.buffer_size = buffer_size
        nrings = n_s2m + n_m2s
        region = layout.slave_layout(n_s2m, n_m2s, log2, buffer_size, rx_pool)
        self.buffers_at = region.buffers_at
        self.nbufs = region.nbufs
        self.buf_offsets = region.buffer_offsets
        self.region_size = region.size
        self.ring_offsets = region.ring_offsets

        self.slave_mem = Memory()
        fd = self.slave_mem.create_region(self.region_size, "memifx-loopback")
        try:
            if share_memory:
                self.master_mem = self.slave_mem
            else:
                self.master_mem = Memory()
                warning = self.master_mem.add_peer_region(fd, self.region_size)
                assert warning is None, warning
            self._peek = mmap.mmap(fd, self.region_size, mmap.MAP_SHARED, mmap.PROT_READ)
            # what a hostile peer writes (poke_desc)
            self._poke = mmap.mmap(fd, self.region_size, mmap.MAP_SHARED,
                                   mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)

        self.slave_tx, self.slave_rx, self.master_rx, self.master_tx = [], [], [], []
        limit = {} if max_frame is None else {"max_frame": max_frame}
        for i in range(nrings):
            s2m = i < n_s2m
            index = i if s2m else i - n_s2m
            efd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            mfd = os.dup(efd)
            # Each Queue owns (and closes) its fd; the two sides share one eventfd.
            sq = Queue(self.slave_mem, 0, self.ring_offsets[i], log2, slave=True, tx=s2m,
                       index=index, fd=efd, buffer_size=buffer_size,
                       buf_offset=self.buf_offsets[i], nbufs=self.nbufs[i], **limit)
            mq = Queue(self.master_mem, 0, self.ring_offsets[i], log2, slave=False,
                       tx=not s2m, index=index, fd=mfd, **limit)
            if s2m:
                self.slave_tx.append(sq)
                self.master_rx.append(mq)
            else:
                self.slave_rx.append(sq)
                self.master_tx.append(mq)
        self.s2m_pairs = [Pair(t, r) for t, r in zip(self.slave_tx, self.master_rx)]
        self.m2s_pairs = [Pair(t, r) for t, r in zip(self.master_tx, self.slave_rx)]
        if start:
            self.start()

    @property
    def s2m(self):
        """First S2M ring: (slave tx, master rx)."""
        return self.s2m_pairs[0]

    @property
    def m2s(self):
        """First M2S ring: (master tx, slave rx)."""
        return self.m2s_pairs[0]

    def queues(self):
        return self.slave_tx + self.slave_rx + self.master_rx + self.master_tx

    def start(self):
        """Link up, in the control channel's order."""
        for q in self.slave_tx + self.slave_rx:
            q.init_ring()
        for q in self.master_rx + self.master_tx:
            q.start()
        for q in self.slave_tx + self.slave_rx:
            q.start()

    def counters(self, ring):
        """(head, tail) of ring number ``ring`` (S2M rings first), read from
        shared memory."""
        off = self.ring_offsets[ring]
        head, = struct.unpack_from("<H", self._peek, off + layout.HEAD_OFFSET)
        tail, = struct.unpack_from("<H", self._peek, off + layout.TAIL_OFFSET)
        return head, tail

    def desc(self, ring, slot):
        """Descriptor ``slot`` of ring number ``ring``, from shared memory."""
        off = self.ring_offsets[ring] + layout.desc_offset(slot)
        return Desc._make(struct.unpack_from("<HHIII", self._peek, off))

    def poke_desc(self, ring, slot, **fields):
        """Rewrite fields of descriptor ``slot`` of ring number ``ring`` in
        shared memory, as a hostile peer would."""
        off = self.ring_offsets[ring] + layout.desc_offset(slot)
        d = self.desc(ring, slot)._replace(**fields)
        struct.pack_into("<HHIII", self._poke, off, *d)

    def read(self, offset, length):
        """Bytes of the region at ``offset`` (descriptors' offsets are into it)."""
        return self._peek[offset:offset + length]

    def write(self, offset, data):
        """Write ``data`` into the region at ``offset``, as a peer can."""
        self._poke[offset:offset + len(data)] = data

    def close(self):
        for q in self.queues():
            q.close()
        self._peek.close()
        self._poke.close()


def push(pair, frames, burst=None):
    """Send ``frames`` through ``pair`` with tx_frames/rx_frames in bursts of
    at most ``burst`` (default: ring size); return the frames received."""
    tx, rx = pair
    burst = burst or tx.size
    out = []
    i = 0
    stalls = 0
    while i < len(frames):
        sent = tx.tx_frames(frames[i:i + burst])
        i += sent
        got = rx.rx_frames(rx.size)
        out.extend(got)
        if not sent and not got:
            stalls += 1
            assert stalls < 3, "loopback made no progress"
        else:
            stalls = 0
    while True:
        got = rx.rx_frames(rx.size)
        if not got:
            break
        out.extend(got)
    return out
