# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""l2-xconnect: every frame received on one queue leaves on another, untouched.

The node takes the vector a receive burst gathered (validated pointers into
the peer's or our shared memory), hands it to the transmit queue's producer,
and only then consumes the receive slots: one copy per frame, straight from
ring buffer to ring buffer, as memif's rule (the master copies) allows.
Frames the transmit ring has no room for are counted drops ("tx ring full"):
a stalled direction never blocks the other one.
"""
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memcpy

from memifx.ring cimport Queue, frame_t, seg_t


cdef class XConnect:
    """Counters and scratch memory of one direction of a cross-connect."""
    cdef readonly uint64_t packets
    cdef readonly uint64_t bytes
    cdef readonly uint64_t tx_full       # dropped: no room in the transmit ring
    cdef readonly uint64_t link_down     # dropped: the transmit interface is down
    cdef char *stage                     # chained frames are made contiguous here
    cdef uint64_t stage_size

    def __dealloc__(self):
        free(self.stage)

    cdef int forward(self, Queue rxq, Queue txq, uint32_t max_frames) noexcept nogil:
        """One burst from rxq to txq; returns frames moved (or -1: no memory)."""
        cdef uint32_t n, i, k = 0, s, taken
        cdef uint64_t need = 0, off = 0
        cdef frame_t *f
        cdef char *p
        if max_frames > rxq.size:
            max_frames = rxq.size
        if max_frames > txq.size:
            max_frames = txq.size
        n = rxq.gather(max_frames)
        if n == 0:
            return 0
        for i in range(n):
            if rxq.frames[i].drop < 0 and rxq.frames[i].nsegs > 1:
                need += rxq.frames[i].length
        if need > self.stage_size:
            p = <char *>realloc(self.stage, need)
            if p == NULL:
                return -1
            self.stage = p
            self.stage_size = need
        for i in range(n):
            f = &rxq.frames[i]
            if f.drop >= 0:
                continue
            if f.nsegs == 1:
                txq.src[k] = <const uint8_t *>rxq.segs[f.first_seg].ptr
            else:
                txq.src[k] = <const uint8_t *>(self.stage + off)
                for s in range(f.first_seg, f.first_seg + f.nsegs):
                    memcpy(self.stage + off, rxq.segs[s].ptr, rxq.segs[s].len)
                    off += rxq.segs[s].len
            txq.lens[k] = <uint32_t>f.length
            k += 1
        taken = txq.tx_copy(k)
        for i in range(taken):
            self.bytes += txq.lens[i]
        self.packets += taken
        self.tx_full += k - taken
        rxq.commit(n, False)
        return <int>taken

    def poll(self, Queue rxq, Queue txq, uint32_t max_frames=256, uint32_t rounds=1):
        """Up to ``rounds`` bursts with the GIL released (stops at the first
        empty one); returns frames moved."""
        cdef uint64_t total = 0
        cdef int r = 0
        cdef uint32_t i
        with nogil:
            for i in range(rounds):
                r = self.forward(rxq, txq, max_frames)
                if r <= 0:
                    break
                total += r
        if r < 0:
            raise MemoryError()
        return total

    def discard(self, Queue rxq):
        """The transmit side is down: consume what arrived, count it dropped."""
        cdef uint32_t n, i
        with nogil:
            n = rxq.gather(rxq.size)
            for i in range(n):
                if rxq.frames[i].drop < 0:
                    self.link_down += 1
            rxq.commit(n, False)
        return n

    def counters(self):
        return {"packets": self.packets, "bytes": self.bytes,
                "drops": {"tx ring full": self.tx_full, "tx link down": self.link_down}}
