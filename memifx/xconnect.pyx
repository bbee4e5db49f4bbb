# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""l2-xconnect: every frame received on one queue leaves on another, untouched.

The node takes the vector a receive burst gathered (validated pointers into
the peer's or our shared memory), hands it to the transmit queue's producer,
and only then consumes the receive slots: one copy per frame, straight from
ring buffer to ring buffer, as memif's rule (the master copies) allows.
The usual frame (one slot, a good buffer, a length the transmit slot
holds) takes a shorter way: one loop over both rings (Queue.forward_usual)
until the first other frame, which goes, with the rest of the burst, the
way above.  A stalled direction never blocks the other one: frames the transmit side
cannot take are dropped and counted by reason.

Accounting: every frame the receive queue delivers to the node is in
exactly one of ``packets`` (forwarded) or ``drops[reason]``, so for one
direction ``rx packets = packets + sum(drops)``.

A chained frame is copied the same way, segment by segment from its
receive buffers into the transmit buffers (Queue.tx_copy_parts): one copy
too, and no staging memory.

The counters are one block of u64s (xc_counters_t) that may live in a stats
file slot (memifx/counted.pyx): a worker process counts straight into shared
memory, so its totals survive it being killed.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy

from memifx.ring cimport Queue, frame_t, seg_t

DROP_REASONS = ("tx ring full", "tx link down", "tx frame too long", "tx fault")
COUNTER_SIZE = sizeof(xc_counters_t)
cdef xc_counters_t _layout
DROPS_OFFSET = <char *>&_layout.drops[0] - <char *>&_layout   # tests check schema.XCONNECT


cdef class XConnect:
    """Counters and scratch memory of one direction of a cross-connect."""

    def __cinit__(self):
        self.c = &self.own

    def __dealloc__(self):
        free(self.nparts)

    # counter block 0, xc_counters_t (memifx/counted.pyx moves it into a slot)
    cdef Py_ssize_t block_size(self, Py_ssize_t block) except -1:
        if block != 0:
            raise ValueError("an xconnect node has one counter block")
        return sizeof(xc_counters_t)

    cdef uint64_t *block_at(self, Py_ssize_t block) noexcept:
        return <uint64_t *>self.c if block == 0 else NULL

    cdef void block_moved(self, Py_ssize_t block, uint64_t *at) noexcept:
        self.c = <xc_counters_t *>at

    cdef int forward(self, Queue rxq, Queue txq, uint32_t max_frames) noexcept nogil:
        """One burst from rxq to txq; returns frames moved.  self.nparts
        holds rxq.size entries (poll)."""
        cdef uint32_t n, i, j, k = 0, taken, usual
        cdef bint chained = False
        cdef frame_t *f
        if max_frames > rxq.size:
            max_frames = rxq.size
        if max_frames > txq.size:
            max_frames = txq.size
        # the usual frames in one pass; the rest (and their drops) below
        usual = rxq.forward_usual(txq, max_frames)
        if usual:
            self.c.packets += usual
            self.c.bytes += txq.tx_bytes
            if usual == max_frames:
                return <int>usual
        n = rxq.gather(max_frames - usual)
        if n == 0:
            return <int>usual
        for i in range(n):
            f = &rxq.frames[i]
            if f.drop >= 0:
                continue
            if f.nsegs == 1:
                txq.src[k] = <const uint8_t *>rxq.segs[f.first_seg].ptr
            else:
                chained = True
            txq.lens[k] = <uint32_t>f.length
            k += 1
        if chained:
            # The delivered frames' segments are rxq.segs in order (a frame
            # the ring dropped has none): each frame is its own segments.
            j = 0
            for i in range(n):
                if rxq.frames[i].drop < 0:
                    self.nparts[j] = rxq.frames[i].nsegs
                    j += 1
            taken = txq.tx_copy_parts(k, rxq.segs, self.nparts)
        else:
            taken = txq.tx_copy(k)
        self.c.packets += taken - txq.tx_dropped
        self.c.bytes += txq.tx_bytes
        self.c.drops[XC_TOO_LONG] += txq.tx_dropped
        if taken < k:
            if txq.closed:
                self.c.drops[XC_LINK_DOWN] += k - taken
            elif txq.fault:
                self.c.drops[XC_TX_FAULT] += k - taken
            else:
                self.c.drops[XC_TX_FULL] += k - taken
        rxq.commit(n, False)
        return <int>(usual + taken - txq.tx_dropped)

    def poll(self, Queue rxq, Queue txq, uint32_t max_frames=256, uint32_t rounds=1):
        """Up to ``rounds`` bursts with the GIL released (stops at the first
        empty one); returns frames moved."""
        cdef uint64_t total = 0
        cdef int r = 0
        cdef uint32_t i
        cdef uint32_t *a
        if rxq.size > self.nparts_size:
            a = <uint32_t *>realloc(self.nparts, rxq.size * sizeof(uint32_t))
            if a == NULL:
                raise MemoryError()
            self.nparts = a
            self.nparts_size = rxq.size
        with nogil:
            for i in range(rounds):
                r = self.forward(rxq, txq, max_frames)
                if r <= 0:
                    break
                total += r
        return total

    def discard(self, Queue rxq):
        """The transmit side is down: consume what arrived, count it dropped."""
        cdef uint32_t n, i
        with nogil:
            n = rxq.gather(rxq.size)
            for i in range(n):
                if rxq.frames[i].drop < 0:
                    self.c.drops[XC_LINK_DOWN] += 1
            rxq.commit(n, False)
        return n

    @property
    def packets(self):
        return self.c.packets

    @property
    def bytes(self):
        return self.c.bytes

    def counters(self):
        """{"packets", "bytes", "drops": {reason: n}}: memifx/stats/schema.py XCONNECT."""
        cdef const uint64_t *u = <const uint64_t *>self.c
        return counters_from_slot([u[i] for i in range(sizeof(xc_counters_t) // 8)])


def counters_from_slot(values):
    """XConnect.counters() of a node that counted into a stats file slot,
    from that slot's u64s (StatsFile.read_slot)."""
    from memifx.stats.schema import XCONNECT    # imports this module: not at the top
    return XCONNECT.nested(values)
