cimport cython
from cpython.buffer cimport Py_buffer
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from memifx.memif cimport memif_ring_t, memif_desc_t, memif_desc_read, MEMIF_DESC_FLAG_NEXT
from memifx.memory cimport Memory, region_t

# Why a frame offered to or received from a ring was dropped.
cdef enum:  # Drop reasons
    DROP_BAD_DESC = 0     # descriptor outside its region / longer than the buffer we posted
    DROP_CHAIN = 1        # chain that never ends inside the ring
    DROP_TOO_LONG = 2     # frame longer than the queue's max_frame, or than the whole ring can hold
    N_DROPS = 3

# Peer faults that end the connection (the burst stops, the control plane
# disconnects with the reason string).
cdef enum:  # Faults
    FAULT_NONE = 0
    FAULT_COUNTER = 1     # head/tail moved past what is possible
    FAULT_POSTED = 2      # a buffer the slave posted lies outside its regions
    FAULT_IRQ_FD = 3      # an eventfd syscall blocked past the bound (peer made it blocking)
    FAULT_IRQ_FULL = 4    # the peer filled the eventfd counter: a kick would block

cdef struct counters_t:             # u64s only: shared stats files map it as an array
    uint64_t packets
    uint64_t bytes
    uint64_t drops[N_DROPS]
    uint64_t ring_full    # bursts that stopped on a full ring (back-pressure)
    uint64_t irq_sent
    uint64_t irq_received
    uint64_t mode_switches  # adaptive rx mode: polling <-> interrupt
    uint64_t chain_waits  # rx bursts that stopped at a chain whose end is not published yet

# tx_checked: the lengths add up to more than the buffer (nothing sent).
cdef enum:
    TX_OVERRUN = 0xFFFFFFFF

cdef struct seg_t:
    char *ptr
    uint32_t len

cdef struct frame_t:
    uint32_t first_seg
    uint32_t nsegs
    uint64_t length
    uint32_t end          # slots consumed up to and including this frame
    int drop              # -1, or the Drop reason

@cython.final           # direct (inlinable) calls to its cdef methods
cdef class Queue:
    cdef Memory mem                 # keeps every mapping alive while we exist
    cdef memif_ring_t *ring
    cdef readonly uint16_t region_index    # where the ring lives (geometry())
    cdef readonly uint64_t ring_offset
    cdef readonly uint32_t log2_size
    cdef readonly uint32_t size
    cdef uint16_t mask
    cdef readonly bint slave
    cdef readonly bint tx
    cdef readonly int index
    cdef uint16_t pos               # our own counter: see the module docstring
    cdef uint16_t posted            # slave rx: head we published
    cdef readonly uint32_t nbufs    # slave: buffers of this queue (rx: its pool)
    cdef uint32_t *slot_buf         # slave: where the buffer of each slot sits (tx: fixed)
    cdef uint32_t *free_bufs        # slave rx: stack of pool buffers not in use
    cdef uint32_t nfree
    cdef uint16_t reserved          # slave tx: slots lent out by tx_alloc
    cdef readonly uint32_t zc_held      # slave rx: zero-copy buffers lent out
    cdef char *bufs                 # slave: this ring's buffers
    cdef readonly uint32_t buffer_size
    cdef readonly uint32_t max_frame    # longer frames are dropped "frame too long", both ways
    cdef uint32_t tx_dropped        # frames the last tx_copy dropped (too long), among those taken
    cdef uint64_t tx_bytes          # bytes of the frames the last tx_copy queued
    cdef uint32_t buf_offset        # slave: offset of bufs in region 0
    cdef readonly int fd            # the ring's eventfd, owned
    cdef readonly int fault
    cdef readonly bint closed
    cdef readonly uint64_t epoch    # bumps whenever lent buffers become invalid
    cdef counters_t *c              # &own, or a slot in a shared stats file
    cdef counters_t own
    cdef object c_owner             # keeps the memory behind c alive
    cdef seg_t *segs
    cdef frame_t *frames
    cdef const uint8_t **src
    cdef uint32_t *lens

    cdef uint32_t tx_copy(self, uint32_t n) noexcept nogil
    cdef uint32_t tx_packed(self, const uint8_t *base, const uint32_t *lengths,
                            uint32_t n) noexcept nogil
    cdef uint32_t tx_reserve(self, uint32_t n, uint8_t **ptrs, uint32_t *room,
                             uint32_t *first) noexcept nogil
    cdef uint32_t tx_publish(self, uint32_t n, const uint32_t *lengths) noexcept nogil
    cdef uint32_t tx_copy_parts(self, uint32_t n, const seg_t *parts,
                                const uint32_t *nparts) noexcept nogil
    cdef uint16_t tx_room(self) noexcept nogil
    cdef uint32_t tx_write(self, uint32_t n, const seg_t *parts,
                           const uint32_t *nparts) noexcept nogil
    cdef uint32_t gather(self, uint32_t max_frames) noexcept nogil
    cdef uint32_t rx_copy(self, uint8_t *base, uint64_t room, uint32_t *lengths,
                          uint32_t maxf) noexcept nogil
    cdef uint32_t tx_checked(self, const uint8_t *base, uint64_t room, const uint32_t *lengths,
                             uint32_t n) noexcept nogil
    cdef uint32_t forward_usual(self, Queue txq, uint32_t max_frames) noexcept nogil
    cdef uint16_t rx_ready(self) noexcept nogil
    cdef void rx_consumed(self, uint32_t k, uint64_t nbytes) noexcept nogil
    cdef uint32_t forward_to(self, Queue txq, uint32_t max_frames) noexcept nogil
    cdef void commit(self, uint32_t nframes, bint hold) noexcept nogil
    cdef void rx_released(self, uint16_t used, uint32_t packets, uint64_t nbytes) noexcept nogil
    cdef void refill(self) noexcept nogil
    cdef inline void post(self, uint16_t slot, uint32_t b) noexcept nogil
    cdef void tx_published(self, uint16_t used, uint32_t packets, uint64_t nbytes) noexcept nogil
    cdef void kick(self) noexcept nogil

    cdef _check_tx(self)
    cdef void _fill_pool(self) noexcept
    cdef void attach_counters(self, counters_t *slot, object owner) noexcept


cdef class Buffer:
    cdef Queue queue            # keeps the mapping alive
    cdef char *ptr
    cdef uint32_t length
    cdef readonly uint32_t capacity
    cdef readonly bint chained  # the frame continues in the next buffer
    cdef uint16_t slot
    cdef uint64_t epoch
    cdef int exports

    cdef _bind(self, Queue q, char *ptr, uint32_t length, uint32_t capacity, bint chained)
    cdef _invalidate(self)


# The lengths of a batch call (a C-contiguous one-dimensional native uint32
# buffer) acquired into ``view``, or ValueError; the caller releases it.
cdef int get_lengths(object obj, Py_buffer *view, bint writable) except -1


# The one-pass loops (Queue.forward_usual, rx_copy, tx_packed, a checker
# that reads frames where they lie, the router's ip4-fast): their per-slot
# steps, shared inline, here.

cdef inline bint desc_in_region(const region_t *regions, uint16_t count,
                                const memif_desc_t *d) noexcept nogil:
    # 64-bit sum: offset and length are both u32 from the peer.
    return (d.region < count and
            <uint64_t>d.offset + <uint64_t>d.length <= regions[d.region].size)


cdef struct side_t:             # a queue's fields, read once a burst
    memif_ring_t *ring
    const region_t *regions
    uint16_t nregions
    uint16_t pos
    uint16_t mask
    uint32_t bs
    const uint32_t *slot_buf
    char *bufs


cdef inline side_t side_of(Queue q) noexcept nogil:
    cdef side_t r
    r.ring = q.ring
    r.regions = q.mem.regions
    r.nregions = q.mem.count
    r.pos = q.pos
    r.mask = q.mask
    r.bs = q.buffer_size
    r.slot_buf = q.slot_buf
    r.bufs = q.bufs
    return r


cdef struct run_t:              # a ring's slots in a row, up to its end
    memif_desc_t *desc          # their descriptors
    const uint32_t *slot_buf    # (slave) their buffers' numbers, our record


cdef inline uint32_t run_from(const side_t *s, uint32_t k, run_t *u) noexcept nogil:
    """The slots from the ``k``-th from ``s.pos`` to the ring's end, into
    ``u``; returns how many.  A loop over a burst takes them as ``u``'s
    j-th (usual_rx_in, usual_tx_in) without a slot index masked per frame."""
    cdef uint32_t slot = <uint16_t>(s.pos + k) & s.mask
    u.desc = &s.ring.desc[slot]
    u.slot_buf = s.slot_buf + slot
    return <uint32_t>s.mask + 1 - slot


cdef inline char *usual_rx_in(const side_t *r, const run_t *u, uint32_t j, uint32_t most,
                              bint slave, uint32_t *length) noexcept nogil:
    """Where the frame in run ``u``'s ``j``-th slot lies if it is the usual
    one: one slot (no NEXT), at most ``most`` bytes, a good buffer (slave:
    our own record, the length within it; master: inside a region).  NULL
    for any other frame, which the caller leaves to gather.  ``length``:
    its length, from our one read of the descriptor."""
    cdef memif_desc_t d = memif_desc_read(&u.desc[j])
    length[0] = d.length
    if (d.flags & MEMIF_DESC_FLAG_NEXT) or d.length > most:
        return NULL
    if slave:
        if d.length > r.bs:
            return NULL
        return r.bufs + <uint64_t>u.slot_buf[j] * r.bs
    if desc_in_region(r.regions, r.nregions, &d):
        return r.regions[d.region].base + d.offset
    return NULL


cdef inline char *usual_rx(const side_t *r, uint32_t k, uint32_t most, bint slave,
                           uint32_t *length) noexcept nogil:
    """usual_rx_in() for the ``k``-th slot from ``r.pos``."""
    cdef run_t u
    run_from(r, k, &u)
    return usual_rx_in(r, &u, 0, most, slave, length)


cdef inline char *usual_tx_in(const side_t *t, const run_t *u, uint32_t j, uint32_t length,
                              bint slave, memif_desc_t **w) noexcept nogil:
    """Where a frame of ``length`` bytes goes if run ``u``'s ``j``-th slot
    holds it whole (slave: our own buffer of that slot; master: the buffer
    the slave posted there, inside a region and at least that long, its
    descriptor read once).  NULL otherwise: the caller leaves the frame to
    tx_write, which decides every case.  ``w``: the slot's descriptor,
    which nothing here writes: a caller that copies the frame there then
    calls tx_written on it."""
    cdef memif_desc_t d
    w[0] = &u.desc[j]
    if slave:
        if length > t.bs:
            return NULL
        return t.bufs + <uint64_t>u.slot_buf[j] * t.bs
    d = memif_desc_read(w[0])
    if desc_in_region(t.regions, t.nregions, &d) and d.length >= length:
        return t.regions[d.region].base + d.offset
    return NULL


cdef inline char *usual_tx(const side_t *t, uint32_t k, uint32_t length, bint slave,
                           memif_desc_t **w) noexcept nogil:
    """usual_tx_in() for the ``k``-th slot from ``t.pos``."""
    cdef run_t u
    run_from(t, k, &u)
    return usual_tx_in(t, &u, 0, length, slave, w)


cdef inline void tx_written(memif_desc_t *w, uint32_t length) noexcept nogil:
    """The slot of descriptor ``w`` holds a whole frame of ``length`` bytes
    (published later, with the slots before it: tx_published).  Slave:
    region and offset were written once (init_ring) and stay."""
    w.length = length
    w.flags = 0
