# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""One transmit queue's stream of stamped frames, sent many bursts per call.

A :class:`Stream` is what ``memifx gen`` does for one transmit queue: it
holds the queue's flows and their cursor, asks the shared
memifx.traffic.Generator for frames and puts them into the ring, looping in
C with the GIL released over up to ``bursts`` bursts per ``send()`` call, so
Python is paid once for all of them.  Two ways to put frames in the ring:

- copying (the default, the work testpmd's txonly does): a burst is written
  into a staging buffer, then copied into the ring (Queue.tx_packed).  A
  burst the ring does not take at once stays pending: the next call first
  writes fresh timestamps into what is left and offers it again.  Zeros
  payload, one frame size: the staging buffer keeps every frame at the same
  offset, so after the first burst only headers and stamps are written.
- zero-copy (``zero_copy=True``, as a libmemif application works): the
  frames are written straight into the ring's buffers (Queue.tx_reserve,
  then Queue.tx_publish), one pass per frame, nothing staged and so nothing
  pending: a frame is made only once a buffer is free for it.  As slave
  the buffers are our own, one per slot for good: the stream remembers, per
  slot, how long a zeros frame it wrote there, so a zeros frame that is no
  longer needs headers and stamp only (the region is never assumed zero),
  and a fixed one (payload "fixed": no stamp) of that length nothing: the
  slot is published as it is.
  As master the buffers are the ones the slave posted, validated by the
  queue; a frame longer than the buffer posted for it (the slave posts
  short ones) goes out through the copying path, which chains buffers.
  A queue whose max_frame or (slave) buffer size is below the largest
  frame is sent to by copying.

Back-pressure: a call ends at the first burst the ring does not take in
full (counted in ``ring_full``, once per call, as the Python sender counts
a pass); admission is ``budget``: frames made in this call never exceed it.
"""
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free

from memifx.ring cimport Queue
from memifx.traffic cimport Generator, now_ns


cdef inline uint64_t sum_lengths(const uint32_t *lengths, uint32_t n) noexcept nogil:
    """Bytes of ``n`` frames (in a local: the stream's fields are not
    reloaded and stored per frame)."""
    cdef uint64_t b = 0
    cdef uint32_t i
    for i in range(n):
        b += lengths[i]
    return b


cdef class Stream:
    """The frames of ``flows`` (a sequence of flow ids of ``gen``, taken
    in turn) for one transmit queue, ``burst`` frames a burst.
    ``headers_only``: the generator makes zeros frames of one size (the
    staging buffer's payload stays zero).  ``zero_copy``: write frames in
    the ring's buffers (see the module docstring)."""
    cdef Generator gen
    cdef uint32_t *flows
    cdef readonly uint32_t nflows
    cdef uint32_t _cursor
    cdef readonly uint32_t burst
    cdef readonly bint headers_only
    cdef readonly bint zero_copy
    cdef uint8_t *stage             # copying: a burst, packed
    cdef uint64_t stage_room
    cdef uint32_t *lengths          # frame sizes of the staged (or reserved) burst
    cdef uint32_t pend_k, pend_n    # staged frames k..n-1 still to go
    cdef uint64_t pend_off          # where frame k starts
    cdef uint8_t **ptrs             # zero-copy: the reserved buffers
    cdef uint32_t *room
    cdef uint32_t *hold             # per frame of a burst: held[] of its slot
    cdef uint32_t *held             # slave zero-copy: per slot, zeros frame bytes there
    cdef uint32_t held_size
    cdef Queue held_queue           # the queue whose slots ``held`` describes
    cdef bint short_buf             # the last zero-copy burst met a buffer too short
    cdef readonly uint64_t admitted     # frames made
    cdef readonly uint64_t sent         # frames the ring took
    cdef readonly uint64_t bytes
    cdef readonly uint64_t ring_full    # calls that stopped at a full ring

    def __cinit__(self):
        self.flows = NULL
        self.stage = NULL
        self.lengths = self.room = self.hold = self.held = NULL
        self.ptrs = NULL

    def __init__(self, Generator gen not None, flows, uint32_t burst, *,
                 bint headers_only=False, bint zero_copy=False):
        cdef uint32_t i
        flows = [int(f) for f in flows]
        if not flows:
            raise ValueError("no flows")
        if burst == 0:
            raise ValueError("burst must be at least 1")
        for f in flows:
            if not 0 <= f < gen.flows:
                raise ValueError("flow %d out of range" % f)
        self.gen = gen
        self.nflows = len(flows)
        self.burst = burst
        self.headers_only = headers_only and gen.zeros
        self.zero_copy = zero_copy
        self.flows = <uint32_t *>PyMem_Malloc(self.nflows * sizeof(uint32_t))
        self.stage_room = <uint64_t>burst * gen.max_size
        # calloc: headers_only relies on a payload that starts zero
        self.stage = <uint8_t *>calloc(self.stage_room, 1)
        self.lengths = <uint32_t *>PyMem_Malloc(burst * sizeof(uint32_t))
        self.room = <uint32_t *>PyMem_Malloc(burst * sizeof(uint32_t))
        self.hold = <uint32_t *>PyMem_Malloc(burst * sizeof(uint32_t))
        self.ptrs = <uint8_t **>PyMem_Malloc(burst * sizeof(uint8_t *))
        if not (self.flows and self.stage and self.lengths and self.room and self.hold
                and self.ptrs):
            raise MemoryError()
        for i in range(self.nflows):
            self.flows[i] = flows[i]

    def __dealloc__(self):
        PyMem_Free(self.flows)
        free(self.stage)
        PyMem_Free(self.lengths)
        PyMem_Free(self.room)
        PyMem_Free(self.hold)
        PyMem_Free(self.ptrs)
        PyMem_Free(self.held)

    @property
    def cursor(self):
        """Index into the flows of the next frame's flow."""
        return self._cursor

    def set_cursor(self, uint32_t value):
        """Make flow ``value`` (mod the number of flows) the next frame's."""
        self._cursor = value % self.nflows

    @property
    def unsent(self):
        """Frames made but not taken by the ring yet (copying mode)."""
        return self.pend_n - self.pend_k

    def send(self, Queue q not None, uint64_t budget, uint32_t bursts):
        """Up to ``bursts`` bursts into transmit queue ``q``, making at most
        ``budget`` new frames (pending ones go first and were counted when
        made); stops at a burst the ring does not take in full.  Returns the
        frames the ring took."""
        cdef uint64_t total
        cdef uint32_t i
        cdef bint zc
        if not q.tx:
            raise ValueError("not a transmit queue")
        zc = (self.zero_copy and self.gen.max_size <= q.max_frame and
              (not q.slave or self.gen.max_size <= q.buffer_size))
        if zc and q.slave and self.gen.zeros and q is not self.held_queue:
            # new ring buffers: nothing known of what they hold (a pattern
            # payload is written in full anyway: nothing to track)
            if self.held_size != q.size:
                PyMem_Free(self.held)
                self.held = <uint32_t *>PyMem_Malloc(q.size * sizeof(uint32_t))
                if self.held == NULL:
                    self.held_size = 0
                    raise MemoryError()
                self.held_size = q.size
            for i in range(q.size):
                self.held[i] = 0
            self.held_queue = q
        elif q.slave and not zc and q is self.held_queue:
            self.held_queue = None      # copying writes the slots: forget them
        with nogil:
            total = self.run(q, budget, bursts, zc)
        return total

    cdef uint64_t run(self, Queue q, uint64_t budget, uint32_t bursts,
                      bint zc) noexcept nogil:
        cdef uint64_t total = 0, ts = now_ns()
        cdef uint32_t n, k
        if self.pend_k < self.pend_n:
            # staged earlier, the ring was full: fresh stamps, offer again
            self.gen.restamp_raw(self.stage + self.pend_off, self.lengths + self.pend_k,
                                 self.pend_n - self.pend_k, ts)
            total += self.offer(q)
            if self.pend_k < self.pend_n:
                self.ring_full += 1
                return total
            if bursts:
                bursts -= 1
        while bursts and budget:
            n = self.burst if budget > self.burst else <uint32_t>budget
            if zc:
                k = self.send_in_place(q, n, ts)
                total += k
                budget -= k
                n -= k
                if n and not self.short_buf:
                    self.ring_full += 1     # (or a fault: the ring stops)
                    break
            if n:           # copying, or the rest of a burst after a short buffer
                budget -= self.stage_burst(n, ts)
                total += self.offer(q)
                if self.pend_k < self.pend_n:
                    self.ring_full += 1
                    break
            bursts -= 1
            ts = now_ns()
        return total

    cdef uint32_t send_in_place(self, Queue q, uint32_t n, uint64_t ts) noexcept nogil:
        """One zero-copy burst of up to ``n`` frames; returns frames sent.
        ``short_buf``: it stopped at a buffer too short for the next frame."""
        cdef uint32_t got, k, i, first = 0, slot, mask = q.size - 1
        cdef uint32_t *hold = NULL
        cdef bint wraps = False
        got = q.tx_reserve(n, self.ptrs, self.room, &first)
        self.short_buf = False
        if got == 0:
            return 0
        if self.held_queue is q:
            slot = first & mask
            if slot + got <= q.size:
                hold = self.held + slot     # the burst's slots in a row: used in place
            else:
                wraps = True                # the ring wraps within the burst: a copy
                hold = self.hold
                for i in range(got):
                    hold[i] = self.held[(slot + i) & mask]
        k = self.gen.fill_at(self.ptrs, self.room, self.lengths, hold, got, self.flows,
                             self.nflows, self._cursor, ts)
        if wraps:
            for i in range(k):
                self.held[(slot + i) & mask] = hold[i]
        self.short_buf = k < got
        self._cursor = (self._cursor + k) % self.nflows
        self.admitted += k
        k = q.tx_publish(k, self.lengths)
        self.sent += k
        self.bytes += sum_lengths(self.lengths, k)
        return k

    cdef uint32_t stage_burst(self, uint32_t n, uint64_t ts) noexcept nogil:
        """Make up to ``n`` frames into the staging buffer; they are pending."""
        cdef uint32_t k
        cdef uint64_t nbytes
        k, nbytes = self.gen.fill_raw(self.stage, self.stage_room, self.lengths, n,
                                      self.flows, self.nflows, self._cursor,
                                      not self.headers_only, ts)
        self._cursor = (self._cursor + k) % self.nflows
        self.admitted += k
        self.pend_k, self.pend_n, self.pend_off = 0, k, 0
        return k

    cdef uint32_t offer(self, Queue q) noexcept nogil:
        """Copy what is pending into the ring; returns frames taken."""
        cdef uint32_t m
        cdef uint64_t b
        m = q.tx_packed(self.stage + self.pend_off, self.lengths + self.pend_k,
                        self.pend_n - self.pend_k)
        b = sum_lengths(self.lengths + self.pend_k, m)
        self.pend_k += m
        self.pend_off += b
        self.sent += m
        self.bytes += b
        if self.pend_k == self.pend_n:
            self.pend_k = self.pend_n = 0
            self.pend_off = 0
        return m
