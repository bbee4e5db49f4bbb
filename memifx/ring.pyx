# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Ring producers and consumers: the memif data path.

One :class:`Queue` is one ring seen from one side.  Which counter we own and
which we read depends on role and direction (MEMIF.md, "Who moves what"):

=============  ======  ===========  ===============  ==========================
queue          ring    we write     we read (peer)   ``pos`` is
=============  ======  ===========  ===============  ==========================
slave  tx      S2M     head         tail             head we published
slave  rx      M2S     head         tail             next slot to receive
master rx      S2M     tail         head             tail we published
master tx      M2S     tail         head             tail we published
=============  ======  ===========  ===============  ==========================

Every burst reads the peer's counter once (acquire), checks that it is
possible, reads each descriptor once into a local copy and validates that copy
against our own records (slave) or the region table (master), then publishes
our counter once (release).  Nothing per packet touches Python: the loops run
with the GIL released.

A receive burst is two steps, ``gather`` (validate descriptors into a list
of segments) and ``commit`` (consume slots, count, hand buffers back), so the
copy, batch and zero-copy front ends share one validated walk of the ring.
Forwarding ring to ring (xconnect, ``Queue.forward``) first moves the usual
frames in one loop over both rings (``forward_usual``) and leaves the rest
of the burst to those steps; copying out to a caller's buffer (``rx_copy``)
and in from one (``tx_packed``) do the same over their one ring.  The
per-slot steps of those loops (``usual_rx_in``, ``usual_tx_in``) are inline
in ring.pxd, for other modules' one-pass loops too; a loop takes a ring's
slots as runs of descriptors in a row (``run_from``: up to the ring's end,
then from its start), not a slot index masked per frame.
"""
from cpython.buffer cimport (PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE,
                             PyBUF_FORMAT, PyBUF_C_CONTIGUOUS)
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.string cimport memcpy
from libc.errno cimport errno, EAGAIN, EINTR, EINVAL, ENOSYS, EOPNOTSUPP
from posix.unistd cimport read, write, close
from posix.fcntl cimport fcntl, F_GETFL, O_NONBLOCK
from posix.uio cimport iovec

from memifx.memif cimport (
    memif_ring_t, memif_desc_t, MEMIF_COOKIE, MEMIF_RING_FLAG_MASK_INT,
    MEMIF_DESC_FLAG_NEXT, memif_load_acquire, memif_store_release, memif_fence,
    memif_desc_read, memif_ring_flags, memif_set_ring_flags, memif_ring_bytes,
    MEMIF_CACHELINE, MEMIF_MAX_LOG2_RING_SIZE)
from memifx.memory cimport Memory, region_t
from memifx.irq_guard cimport (irq_guard_write, irq_guard_read, irq_guard_signal,
                               IRQ_GUARD_BOUND_NS, IRQ_GUARD_UNAVAILABLE)

from memifx.errors import MemifError, LinkDown

cdef extern from *:
    """
    #include <sys/uio.h>
    #ifndef RWF_NOWAIT
    #define RWF_NOWAIT 0x00000008
    #endif
    """
    ssize_t preadv2(int fd, const iovec *iov, int iovcnt, long offset, int flags) nogil
    const int RWF_NOWAIT

cdef enum:  # Frame limits
    # Largest frame a queue may be configured to assemble from, or split
    # into, a chain of descriptors (its ``max_frame``).
    MAX_FRAME = 1 << 20
    # The default max_frame: a 9216-byte jumbo frame (the common switch
    # limit) with room for VLAN tags and a trailer, and exactly five default
    # 2048-byte buffers.  It bounds what one receive burst can make us
    # allocate (max_frame x burst, 2.5 MiB for 256 frames) whatever the peer
    # announces.
    DEFAULT_FRAME = 10240

MAX_FRAME_SIZE = MAX_FRAME
DEFAULT_MAX_FRAME = DEFAULT_FRAME

DROP_REASONS = ("bad descriptor", "chain too long", "frame too long")
FAULT_REASONS = {
    FAULT_COUNTER: "ring counter moved past the ring",
    FAULT_POSTED: "posted buffer outside memory region",
    FAULT_IRQ_FD: "ring interrupt fd made blocking",
    FAULT_IRQ_FULL: "ring interrupt fd would block",
}

# How long a kick or drain may wait on the peer's eventfd before the link
# faults (csrc/irq_guard.h), in seconds.
IRQ_WAIT_BOUND = IRQ_GUARD_BOUND_NS / 1e9


def irq_guard_signo():
    """The real-time signal that interrupts a blocked eventfd syscall
    (0 until this process guarded its first one)."""
    return irq_guard_signal()


cdef uint32_t scatter(uint32_t i, uint32_t n) noexcept:
    """Where buffer ``i`` of ``n`` sits (a permutation of 0..n-1): slot order
    is not address order.  A consumer walking a ring whose buffers lie at a
    fixed stride trains the CPU's stride prefetcher, which then pulls in the
    buffers the producer is writing that moment, and every such line goes
    back and forth between the CPUs.

    The step is about 0.618 n, odd and coprime with n, so neighbouring slots
    land far apart and alternate between two distances.  It also spreads
    consecutive slots over the cache sets, which an order whose neighbours
    differ only in high address bits (bit reversal) does not.  The figures
    behind this choice are in perf/README.md."""
    cdef uint32_t step = <uint32_t>(n * 0.618) | 1
    while gcd(step, n) != 1:
        step += 2
    return <uint32_t>((<uint64_t>i * step) % n)


cdef uint32_t gcd(uint32_t a, uint32_t b) noexcept:
    while b:
        a, b = b, a % b
    return a


cdef inline uint32_t copy_usual(Queue rxq, Queue txq, uint32_t n, uint64_t *nbytes,
                                bint rslave, bint tslave) noexcept nogil:
    """Queue.forward_usual's loop over at most ``n`` frames, for the roles
    given (constants where it is inlined): copies the usual frames from the
    front of rxq's ring into txq's next slots and writes their descriptors,
    consuming and publishing nothing.  Returns how many; ``nbytes`` gets
    their bytes."""
    cdef side_t r = side_of(rxq)
    cdef side_t t = side_of(txq)
    # the longest frame both queues take
    cdef uint32_t most = rxq.max_frame if rxq.max_frame < txq.max_frame else txq.max_frame
    cdef uint32_t k = 0, j, m, length
    cdef uint64_t total = 0
    cdef char *src
    cdef char *dst
    cdef memif_desc_t *w
    cdef run_t ru, tu
    while k < n:
        # as far as either ring's end: the slots there in a row
        m = n - k
        m = min(m, run_from(&r, k, &ru))
        m = min(m, run_from(&t, k, &tu))
        j = 0
        while j < m:
            src = usual_rx_in(&r, &ru, j, most, rslave, &length)
            if src == NULL:
                break
            dst = usual_tx_in(&t, &tu, j, length, tslave, &w)
            if dst == NULL:
                break
            memcpy(dst, src, length)
            tx_written(w, length)
            total += length
            j += 1
        k += j
        if j < m:
            break
    nbytes[0] = total
    return k


cdef inline uint32_t copy_out_usual(Queue q, uint8_t *base, uint64_t room, uint32_t *lengths,
                                    uint32_t n, uint64_t *nbytes, bint slave) noexcept nogil:
    """Queue.rx_copy's loop over the usual frames at the front of q's ring
    (at most ``n``), for the role given: each copied to ``base`` after the
    one before while ``room`` lasts, its length into ``lengths``; nothing
    consumed.  Returns how many; ``nbytes`` gets their bytes."""
    cdef side_t r = side_of(q)
    cdef uint32_t most = q.max_frame
    cdef uint32_t k = 0, j, m, length
    cdef uint64_t off = 0
    cdef char *src
    cdef run_t u
    while k < n:
        m = min(n - k, run_from(&r, k, &u))     # as far as the ring's end
        j = 0
        while j < m:
            src = usual_rx_in(&r, &u, j, most, slave, &length)
            if src == NULL or off + length > room:
                break
            memcpy(base + off, src, length)
            lengths[k + j] = length
            off += length
            j += 1
        k += j
        if j < m:
            break
    nbytes[0] = off
    return k


cdef inline uint32_t copy_in_usual(Queue q, const uint8_t *base, const uint32_t *lengths,
                                   uint32_t n, uint64_t *nbytes, bint slave) noexcept nogil:
    """Queue.tx_packed's loop over the usual frames at the front of a
    packed batch (at most ``n``): each, copied from ``base`` after the one
    before, fits the buffer of q's next slot whole and is not empty nor
    longer than max_frame.  Descriptors written, nothing published.
    Returns how many; ``nbytes`` gets their bytes."""
    cdef side_t t = side_of(q)
    cdef uint32_t most = q.max_frame
    cdef uint32_t k = 0, j, m, length
    cdef uint64_t off = 0
    cdef char *dst
    cdef memif_desc_t *w
    cdef run_t u
    while k < n:
        m = min(n - k, run_from(&t, k, &u))     # as far as the ring's end
        j = 0
        while j < m:
            length = lengths[k + j]
            if length == 0 or length > most:
                break
            dst = usual_tx_in(&t, &u, j, length, slave, &w)
            if dst == NULL:
                break
            memcpy(dst, base + off, length)
            tx_written(w, length)
            off += length
            j += 1
        k += j
        if j < m:
            break
    nbytes[0] = off
    return k


cdef inline void own_buffers(const uint32_t *slot_buf, uint32_t n, char *bufs, uint32_t bs,
                             uint8_t **ptrs, uint32_t *room) noexcept nogil:
    """Slave transmit: the buffers of ``n`` slots in a row, whose buffer
    numbers are ``slot_buf[0..n)``, into ``ptrs``/``room``."""
    cdef uint32_t i
    for i in range(n):
        ptrs[i] = <uint8_t *>bufs + <uint64_t>slot_buf[i] * bs
        room[i] = bs


cdef inline void write_posted(memif_desc_t *w, uint32_t b, uint32_t bs,
                              uint32_t buf_offset) noexcept nogil:
    """Slave rx: descriptor ``w`` posts our buffer ``b``, written whole
    whatever the peer left there."""
    w.flags = 0
    w.region = 0
    w.length = bs
    w.offset = buf_offset + b * bs
    w.metadata = 0


cdef inline void post_own(memif_desc_t *w, const uint32_t *slot_buf, uint32_t n, uint32_t bs,
                          uint32_t buf_offset) noexcept nogil:
    """Slave rx: ``n`` slots in a row, descriptors from ``w``, post again
    the buffers our record says they hold (``slot_buf``)."""
    cdef uint32_t i
    for i in range(n):
        write_posted(&w[i], slot_buf[i], bs, buf_offset)


cdef inline uint32_t posted_buffers(const memif_desc_t *w, uint32_t n, const region_t *regions,
                                    uint16_t nregions, uint8_t **ptrs,
                                    uint32_t *room) noexcept nogil:
    """Master transmit: the buffers the slave posted in ``n`` descriptors
    in a row from ``w``, each read once and checked (inside a region, its
    end in 64 bits; length not 0), into ``ptrs``/``room``.  Returns how
    many before the first bad one (``n``: none)."""
    cdef uint32_t i
    cdef memif_desc_t d
    for i in range(n):
        d = memif_desc_read(&w[i])
        if not desc_in_region(regions, nregions, &d) or d.length == 0:
            return i
        ptrs[i] = <uint8_t *>regions[d.region].base + d.offset
        room[i] = d.length
    return n


cdef inline uint64_t set_lengths(memif_desc_t *w, const uint32_t *lengths,
                                 uint32_t n) noexcept nogil:
    """Transmit: ``n`` descriptors in a row from ``w`` hold one-slot
    frames of ``lengths`` bytes (region and offset stay: see tx_copy);
    returns their bytes."""
    cdef uint32_t i, length
    cdef uint64_t nbytes = 0
    for i in range(n):
        length = lengths[i]         # (read once: the stores below may alias it)
        w[i].length = length
        w[i].flags = 0
        nbytes += length
    return nbytes


cdef char *FORMAT_B = "B"


cdef int get_lengths(object obj, Py_buffer *view, bint writable) except -1:
    """Acquire ``obj`` as the lengths of a batch call: a C-contiguous
    one-dimensional array of native uint32 (array("I"), a memoryview cast
    to "I", numpy uint32).  Checking the format here, once a call, costs
    less than a typed memoryview's set-up."""
    cdef const char *fmt
    cdef bytes shown
    PyObject_GetBuffer(obj, view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS |
                       (PyBUF_WRITABLE if writable else 0))
    fmt = view.format if view.format != NULL else FORMAT_B
    if fmt[0] == c'@' or fmt[0] == c'=' or fmt[0] == c'<':   # native or little-endian: x86, arm
        fmt += 1
    if view.ndim != 1 or view.itemsize != 4 or fmt[0] != c'I' or fmt[1] != 0:
        shown = view.format if view.format != NULL else FORMAT_B
        msg = ("lengths must be a one-dimensional uint32 array (format 'I'), not %d-dimensional "
               "format %r" % (view.ndim, shown.decode("ascii", "replace")))
        PyBuffer_Release(view)
        raise ValueError(msg)
    return 0


cdef class Queue:
    """One ring of a connected interface.  Not thread-safe: one thread per queue."""

    def __cinit__(self, Memory mem not None, uint16_t region, uint64_t ring_offset, uint32_t log2_size,
                  bint slave, bint tx, int index, int fd,
                  uint32_t buffer_size=0, uint64_t buf_offset=0, uint32_t nbufs=0,
                  uint32_t max_frame=DEFAULT_FRAME):
        cdef uint32_t i
        self.fd = -1
        self.segs = NULL
        self.slot_buf = self.free_bufs = NULL
        self.c = &self.own
        if region >= mem.count:
            raise MemifError("unexpected region index")
        if log2_size > MEMIF_MAX_LOG2_RING_SIZE:
            raise MemifError("ring size out of range")
        if not 1 <= max_frame <= MAX_FRAME:
            raise ValueError("max_frame must be 1 to %d" % MAX_FRAME)
        self.max_frame = max_frame
        cdef region_t r = mem.regions[region]
        if ring_offset % MEMIF_CACHELINE != 0 or \
                ring_offset + memif_ring_bytes(log2_size) > r.size:
            raise MemifError("ring outside memory region")
        self.mem = mem
        self.ring = <memif_ring_t *>(r.base + ring_offset)
        self.region_index = region
        self.ring_offset = ring_offset
        self.log2_size = log2_size
        self.size = 1u << log2_size
        self.mask = <uint16_t>(self.size - 1)
        self.slave = slave
        self.tx = tx
        self.index = index
        self.buffer_size = buffer_size
        if slave:
            if buffer_size == 0:
                raise MemifError("a slave queue needs a buffer size")
            self.nbufs = nbufs if nbufs else self.size
            if self.nbufs < self.size or (tx and self.nbufs != self.size):
                raise MemifError("a receive pool needs at least one buffer per slot; "
                                 "a transmit ring exactly one")
            if buf_offset + <uint64_t>self.nbufs * buffer_size > mem.regions[0].size:
                raise MemifError("buffers outside memory region")
            self.bufs = mem.regions[0].base + buf_offset
            self.buf_offset = <uint32_t>buf_offset
            self.slot_buf = <uint32_t *>PyMem_Malloc(self.size * sizeof(uint32_t))
            if self.slot_buf == NULL:
                raise MemoryError()
            if tx:
                for i in range(self.size):          # each slot has its own buffer for good
                    self.slot_buf[i] = scatter(i, self.size)
            else:
                self.free_bufs = <uint32_t *>PyMem_Malloc(self.nbufs * sizeof(uint32_t))
                if self.free_bufs == NULL:
                    raise MemoryError()
        self.segs = <seg_t *>PyMem_Malloc(self.size * sizeof(seg_t))
        self.frames = <frame_t *>PyMem_Malloc(self.size * sizeof(frame_t))
        self.src = <const uint8_t **>PyMem_Malloc(self.size * sizeof(uint8_t *))
        self.lens = <uint32_t *>PyMem_Malloc(self.size * sizeof(uint32_t))
        if not (self.segs and self.frames and self.src and self.lens):
            raise MemoryError()
        # Own the eventfd only once nothing can fail: on an exception the
        # caller still owns it and closes it (__dealloc__ must not as well).
        self.fd = fd

    def __dealloc__(self):
        PyMem_Free(self.segs)
        PyMem_Free(self.frames)
        PyMem_Free(<void *>self.src)
        PyMem_Free(self.lens)
        PyMem_Free(self.slot_buf)
        PyMem_Free(self.free_bufs)
        # Arguments that failed to convert skip __cinit__'s body: fd is then
        # the zero the object started as, not ours (mem is still None).
        if self.fd >= 0 and self.mem is not None:
            close(self.fd)

    # ---------------------------------------------------------------- setup

    def init_ring(self):
        """Slave, before CONNECT: cookie, counters, and (tx) our descriptors."""
        cdef uint32_t i
        self.ring.cookie = MEMIF_COOKIE
        self.ring.head = 0
        self.ring.tail = 0
        memif_set_ring_flags(self.ring, MEMIF_RING_FLAG_MASK_INT if not self.tx else 0)
        for i in range(self.size):
            self.ring.desc[i].flags = 0
            self.ring.desc[i].region = 0
            self.ring.desc[i].length = self.buffer_size if not self.tx else 0
            self.ring.desc[i].offset = self.buf_offset + (
                self.slot_buf[i] if self.tx else i) * self.buffer_size
            self.ring.desc[i].metadata = 0

    def check_cookie(self):
        return self.ring.cookie == MEMIF_COOKIE

    def start(self):
        """Called when the link comes up.  The master resets both counters
        (the slave has written nothing yet); the slave posts its receive buffers."""
        self.pos = self.posted = 0
        self._fill_pool()
        if not self.slave:
            self.ring.head = 0
            self.ring.tail = 0
            if not self.tx:
                memif_set_ring_flags(self.ring, MEMIF_RING_FLAG_MASK_INT)
        elif not self.tx:
            with nogil:
                self.refill()

    cdef void _fill_pool(self) noexcept:
        """Slave rx: every pool buffer is free (start() posts them)."""
        cdef uint32_t i
        if self.free_bufs == NULL:
            return
        self.nfree = self.nbufs
        for i in range(self.nfree):             # a stack: pops come out as buffers 0, 1...
            self.free_bufs[i] = scatter(self.nbufs - 1 - i, self.nbufs)
        self.zc_held = 0

    def geometry(self):
        """Constructor arguments (but memory and fd) that rebuild this queue
        in another process over the same regions."""
        return dict(region=self.region_index, ring_offset=self.ring_offset,
                    log2_size=self.log2_size, slave=self.slave, tx=self.tx,
                    index=self.index, buffer_size=self.buffer_size,
                    buf_offset=self.buf_offset, nbufs=self.nbufs, max_frame=self.max_frame)

    def state(self):
        """Our private state, whole, so that another Queue over the same
        ring (rebuilt from geometry(), in this process or in a worker)
        continues exactly where this one stopped: ``[pos, posted,
        posted_bufs, free_bufs]``, plain JSON.  The lists are empty but for
        a slave receive queue: the pool buffer of each slot from pos to
        posted, and its free stack (bottom first); it never reads that back
        from the ring, where the peer may rewrite descriptors.  MemifError
        while zero-copy or tx_alloc buffers are lent out (they would be lost
        or delivered twice)."""
        cdef uint16_t i, n
        if self.zc_held or self.reserved:
            raise MemifError("queue %d has buffers lent out: it cannot be handed over now"
                             % self.index)
        posted, free = [], []
        if self.free_bufs != NULL:
            n = <uint16_t>(self.posted - self.pos)
            posted = [self.slot_buf[<uint16_t>(self.pos + i) & self.mask] for i in range(n)]
            free = [self.free_bufs[i] for i in range(self.nfree)]
        return [self.pos, self.posted, posted, free]

    def restore(self, state):
        """Continue from ``state`` (state() of a queue of the same
        geometry).  ValueError if it does not fit this queue, before
        anything changes: for a slave receive queue, the posted and free
        buffers must be every pool buffer exactly once and no more slots
        posted than the ring has."""
        cdef uint32_t k
        pos, posted, posted_bufs, free_bufs = state
        if (type(pos) is not int or type(posted) is not int
                or not (0 <= pos <= 0xFFFF and 0 <= posted <= 0xFFFF)):
            raise ValueError("queue %d: positions out of range" % self.index)
        if self.free_bufs == NULL:
            if posted_bufs or free_bufs:
                raise ValueError("queue %d keeps no buffer pool" % self.index)
            self.pos, self.posted = pos, posted
            return
        in_use = <uint16_t>(posted - pos)
        if (in_use > self.size or len(posted_bufs) != in_use
                or len(posted_bufs) + len(free_bufs) != self.nbufs):
            raise ValueError("queue %d: %d posted and %d free buffers do not make its pool "
                             "of %d with %d slots posted" % (self.index, len(posted_bufs),
                                                            len(free_bufs), self.nbufs, in_use))
        seen = bytearray(self.nbufs)
        for v in list(posted_bufs) + list(free_bufs):
            if type(v) is not int or not 0 <= v < self.nbufs or seen[v]:
                raise ValueError("queue %d: buffer %r twice or outside its pool"
                                 % (self.index, v))
            seen[v] = 1
        self.pos, self.posted = pos, posted
        for k in range(in_use):
            self.slot_buf[<uint16_t>(pos + k) & self.mask] = posted_bufs[k]
        for k in range(len(free_bufs)):
            self.free_bufs[k] = free_bufs[k]
        self.nfree = len(free_bufs)
        self.zc_held = 0

    def close(self):
        """Link down: no burst starts on this queue again; lent buffers die."""
        self.closed = True
        self.epoch += 1

    # ------------------------------------------------------------ transmit

    cdef _check_tx(self):
        if not self.tx:
            raise ValueError("not a transmit queue")
        if self.reserved:
            raise MemifError("tx_alloc buffers are outstanding: tx_commit them first")

    cdef uint32_t tx_copy(self, uint32_t n) noexcept nogil:
        """Copy ``n`` frames (self.src/self.lens) into the ring; return how many
        were taken (queued, or dropped and counted).  Of those taken,
        ``tx_dropped`` were dropped as too long and the rest, ``tx_bytes``
        bytes, queued: a caller that counts frames per reason needs both."""
        return self.tx_write(n, NULL, NULL)

    cdef uint32_t tx_copy_parts(self, uint32_t n, const seg_t *parts,
                                const uint32_t *nparts) noexcept nogil:
        """tx_copy for frames in pieces: frame i is the next ``nparts[i]``
        (at least 1) pieces of ``parts`` one after the other, ``self.lens[i]``
        bytes in all (the pieces must hold that many); self.src is not read.
        A node that rewrote a frame's headers in a private copy sends them
        and the untouched rest straight from the receive ring this way: one
        copy of the payload."""
        return self.tx_write(n, parts, nparts)

    cdef uint16_t tx_room(self) noexcept nogil:
        """Transmit slots free now, from the peer's counter (read once,
        acquire).  A counter moved past what is possible is FAULT_COUNTER
        (and 0 slots)."""
        cdef uint16_t peer, avail
        if self.slave:
            peer = memif_load_acquire(&self.ring.tail)
            if <uint16_t>(self.pos - peer) > self.size:
                self.fault = FAULT_COUNTER
                return 0
            return <uint16_t>(self.size - <uint16_t>(self.pos - peer))
        peer = memif_load_acquire(&self.ring.head)
        avail = <uint16_t>(peer - self.pos)
        if avail > self.size:
            self.fault = FAULT_COUNTER
            return 0
        return avail

    cdef uint32_t tx_write(self, uint32_t n, const seg_t *parts,
                           const uint32_t *nparts) noexcept nogil:
        """tx_copy (``parts`` NULL: frame i is self.src[i]) and
        tx_copy_parts.  A frame that fits the next slot's buffer is copied
        there at once; anything else (a chain, a refusal, a fault) takes
        the general loop after it."""
        cdef memif_ring_t *ring = self.ring
        cdef uint16_t avail, used = 0, start, slot
        cdef uint32_t i, c, cap, remaining, bs = self.buffer_size, dropped = 0
        # parts: frame i's first, the one being copied, bytes left in it
        cdef uint32_t pi = 0, pj = 0, left = 0, o
        cdef uint64_t nbytes = 0
        cdef const uint8_t *p
        cdef memif_desc_t d
        cdef memif_desc_t *w
        cdef char *dst
        cdef const region_t *regions = self.mem.regions
        cdef uint16_t nregions = self.mem.count
        # read once: memcpy could, for all the compiler knows, change self
        cdef bint slave = self.slave
        cdef uint16_t pos = self.pos, mask = self.mask
        cdef uint32_t max_frame = self.max_frame
        cdef char *bufs = self.bufs
        cdef const uint32_t *slot_buf = self.slot_buf
        self.tx_dropped = 0
        self.tx_bytes = 0
        if self.closed or self.fault:
            return 0
        avail = self.tx_room()
        if self.fault:
            return 0
        i = 0
        while i < n:
            remaining = self.lens[i]
            # The usual frame: whole, into the one buffer of the next slot,
            # which holds it (any other case: the general loop below).
            if used < avail and 0 < remaining <= max_frame:
                slot = <uint16_t>(pos + used) & mask
                w = &ring.desc[slot]
                dst = NULL
                if slave:
                    if remaining <= bs:
                        dst = bufs + <uint64_t>slot_buf[slot] * bs
                else:
                    d = memif_desc_read(w)
                    if desc_in_region(regions, nregions, &d) and d.length >= remaining:
                        dst = regions[d.region].base + d.offset
                if dst != NULL:
                    if parts == NULL:
                        memcpy(dst, self.src[i], remaining)
                    else:
                        left = remaining
                        for pj in range(pi, pi + nparts[i]):
                            c = parts[pj].len if parts[pj].len < left else left
                            memcpy(dst, parts[pj].ptr, c)
                            dst += c
                            left -= c
                        pi += nparts[i]
                    w.length = remaining
                    w.flags = 0
                    used += 1
                    nbytes += remaining
                    i += 1
                    continue
            if parts == NULL:
                p = self.src[i]
            else:
                pj = pi
                p = <const uint8_t *>parts[pj].ptr
                left = parts[pj].len
            if remaining > max_frame or (slave and (remaining + bs - 1) / bs > self.size):
                self.c.drops[DROP_TOO_LONG] += 1
                dropped += 1
                if parts != NULL:
                    pi += nparts[i]
                i += 1
                continue
            start = used
            while True:
                if used == avail:
                    break
                slot = <uint16_t>(pos + used) & mask
                w = &ring.desc[slot]
                if slave:
                    dst = bufs + <uint64_t>slot_buf[slot] * bs
                    cap = bs
                else:
                    d = memif_desc_read(w)
                    if not desc_in_region(regions, nregions, &d) or d.length == 0:
                        # Not this frame; the ones before it were copied,
                        # counted and are returned as taken: publish them.
                        self.fault = FAULT_POSTED
                        used = start
                        break
                    dst = regions[d.region].base + d.offset
                    cap = d.length
                c = remaining if remaining < cap else cap
                if parts == NULL:
                    memcpy(dst, p, c)
                    p += c
                else:
                    o = 0
                    while left < c - o:     # this piece ends inside the buffer
                        memcpy(dst + o, p, left)
                        o += left
                        pj += 1
                        p = <const uint8_t *>parts[pj].ptr
                        left = parts[pj].len
                    memcpy(dst + o, p, c - o)
                    p += c - o
                    left -= c - o
                remaining -= c
                used += 1
                # Slave: region, offset and metadata of each slot were written
                # once (init_ring) and only the peer could change them, to
                # its own harm: we never read them back.  Storing just what
                # changes keeps the descriptor lines' traffic to a minimum.
                w.length = c
                w.flags = MEMIF_DESC_FLAG_NEXT if remaining else 0
                if remaining == 0:
                    break
            if self.fault:
                break
            if remaining or used == start:  # did not fit (an empty frame still needs a slot)
                used = start
                if start == 0 and avail == self.size:
                    # The peer's whole ring of buffers cannot hold it: it never will.
                    self.c.drops[DROP_TOO_LONG] += 1
                    dropped += 1
                    if parts != NULL:
                        pi += nparts[i]
                    i += 1
                    continue
                self.c.ring_full += 1
                break
            nbytes += self.lens[i]
            if parts != NULL:
                pi += nparts[i]
            i += 1
        self.tx_dropped = dropped
        self.tx_bytes = nbytes
        self.tx_published(used, i - dropped, nbytes)
        return i

    cdef uint32_t tx_packed(self, const uint8_t *base, const uint32_t *lengths,
                            uint32_t n) noexcept nogil:
        """tx_batch on raw pointers: ``n`` frames packed back to back from
        ``base``; returns how many were taken (as tx_copy counts them).  The
        usual frames at the front go in one pass (copy_in_usual); from the
        first other one on, tx_copy a ring's worth at a time until the ring
        stops taking them."""
        # src and lens in locals: a store through either could, for all the
        # compiler knows, change the pointers in self, reloaded per frame.
        cdef const uint8_t **src = self.src
        cdef uint32_t *lens = self.lens
        cdef uint32_t sent = 0, m, got, i
        cdef uint64_t off = 0
        if n and not (self.closed or self.fault or self.reserved):
            m = self.tx_room()
            if n < m:
                m = n
            if self.slave:
                sent = copy_in_usual(self, base, lengths, m, &off, True)
            else:
                sent = copy_in_usual(self, base, lengths, m, &off, False)
            if sent:
                self.tx_published(<uint16_t>sent, sent, off)
        while sent < n:
            m = n - sent
            if m > self.size:
                m = self.size
            for i in range(m):
                src[i] = base + off
                lens[i] = lengths[sent + i]
                off += lengths[sent + i]
            got = self.tx_copy(m)
            sent += got
            if got < m:
                break
        return sent

    cdef uint32_t tx_reserve(self, uint32_t n, uint8_t **ptrs, uint32_t *room,
                             uint32_t *first) noexcept nogil:
        """Zero-copy transmit, step one: up to ``n`` free transmit buffers in
        ring order, nothing published.  ``ptrs[i]``/``room[i]``: where frame
        i goes and how many bytes fit there; ``*first``: the ring slot of
        ``ptrs[0]`` (the others follow it, modulo the ring size).

        Slave: its own slot buffers (fixed per slot).  Master: the buffers
        the slave posted, each descriptor read once and validated as tx_copy
        does (region, offset + length in 64 bits, length not 0): a bad one
        is FAULT_POSTED and ends the list, so the buffers before it can
        still be published.  A ring with fewer than ``n`` free counts
        ring_full, as tx_copy does.  Returns how many; 0 on a closed or
        faulty ring or while tx_alloc buffers are out.  Until tx_publish,
        nothing else may transmit on this queue."""
        cdef uint16_t avail
        cdef uint32_t run, got, bs = self.buffer_size
        cdef side_t s
        cdef run_t u
        if self.closed or self.fault or self.reserved or n == 0:
            return 0
        avail = self.tx_room()
        if self.fault:
            return 0
        if n > avail:
            n = avail
            self.c.ring_full += 1
        first[0] = self.pos & self.mask
        # the slots up to the ring's end, then from its start
        s = side_of(self)
        run = min(n, run_from(&s, 0, &u))
        if self.slave:      # our own buffers, one per slot for good
            own_buffers(u.slot_buf, run, self.bufs, bs, ptrs, room)
            run_from(&s, run, &u)
            own_buffers(u.slot_buf, n - run, self.bufs, bs, ptrs + run, room + run)
            return n
        got = posted_buffers(u.desc, run, s.regions, s.nregions, ptrs, room)
        if got == run and run < n:
            run_from(&s, run, &u)
            got += posted_buffers(u.desc, n - run, s.regions, s.nregions, ptrs + run, room + run)
        if got < n:
            self.fault = FAULT_POSTED
        return got

    cdef uint32_t tx_publish(self, uint32_t n, const uint32_t *lengths) noexcept nogil:
        """Zero-copy transmit, step two: publish the first ``n`` buffers the
        last tx_reserve gave, frame i ``lengths[i]`` bytes (each one within
        its ``room[i]`` and max_frame: the caller's promise), count them and
        kick the peer.  Returns ``n``, or 0 if the link went down meanwhile."""
        cdef uint32_t run
        cdef uint64_t nbytes
        cdef side_t s
        cdef run_t u
        if n == 0 or self.closed:
            return 0
        # the slots up to the ring's end, then from its start
        s = side_of(self)
        run = min(n, run_from(&s, 0, &u))
        nbytes = set_lengths(u.desc, lengths, run)
        run_from(&s, run, &u)
        nbytes += set_lengths(u.desc, lengths + run, n - run)
        self.tx_published(<uint16_t>n, n, nbytes)
        return n

    cdef void tx_published(self, uint16_t used, uint32_t packets, uint64_t nbytes) noexcept nogil:
        """Transmit: the descriptors of the next ``used`` slots are written,
        ``packets`` frames of ``nbytes`` bytes: count them, publish the
        slots (release) and kick the peer."""
        self.c.packets += packets
        self.c.bytes += nbytes
        if used == 0:
            return
        self.pos = <uint16_t>(self.pos + used)
        if self.slave:
            memif_store_release(&self.ring.head, self.pos)
        else:
            memif_store_release(&self.ring.tail, self.pos)
        self.kick()

    cdef void kick(self) noexcept nogil:
        """Signal the consumer unless it masked interrupts.  Never waits on
        the peer longer than IRQ_WAIT_BOUND: the eventfd's file description
        is shared with it, and a write to one it made blocking and filled
        would wait forever (csrc/irq_guard.h).  A full counter is a fault,
        whether the write was refused (non-blocking) or interrupted."""
        cdef uint64_t one = 1
        cdef int err, fl
        memif_fence()
        if self.fault or memif_ring_flags(self.ring) & MEMIF_RING_FLAG_MASK_INT:
            return
        err = irq_guard_write(self.fd, 1)
        if err == 0:
            self.c.irq_sent += 1
        elif err == EINTR:
            self.fault = FAULT_IRQ_FD
        elif err == EAGAIN:             # 2^64-2 kicks are never owed: the peer filled it
            self.fault = FAULT_IRQ_FULL
        elif err == IRQ_GUARD_UNAVAILABLE:
            # No timer for this thread (the kernel refused one): the best
            # left is to look at the flags first, which the peer can race.
            fl = fcntl(self.fd, F_GETFL)
            if fl < 0 or not (fl & O_NONBLOCK):
                self.fault = FAULT_IRQ_FD
            elif write(self.fd, &one, 8) == 8:
                self.c.irq_sent += 1
            elif errno == EAGAIN:
                self.fault = FAULT_IRQ_FULL

    # ------------------------------------------------------------- receive

    cdef uint32_t gather(self, uint32_t max_frames) noexcept nogil:
        """Walk the published slots into self.frames/self.segs without
        consuming them; return the number of frames (dropped ones included)."""
        cdef memif_ring_t *ring = self.ring
        cdef const region_t *regions = self.mem.regions
        cdef uint16_t nregions = self.mem.count
        cdef uint16_t peer, avail, used = 0, start, slot, limit
        cdef uint32_t n = 0, nseg = 0, first, one
        cdef uint64_t length
        cdef int drop
        cdef memif_desc_t d
        cdef char *ptr
        # read once: a store into segs or frames could, for all the
        # compiler knows, change self
        cdef side_t r = side_of(self)
        cdef bint slave = self.slave
        cdef uint16_t pos = self.pos, mask = self.mask
        cdef uint32_t bs = self.buffer_size, max_frame = self.max_frame
        cdef char *bufs = self.bufs
        cdef const uint32_t *slot_buf = self.slot_buf
        cdef seg_t *segs = self.segs
        cdef frame_t *frames = self.frames
        if self.closed or self.fault:
            return 0
        if self.slave:
            peer = memif_load_acquire(&ring.tail)
            limit = <uint16_t>(self.posted - self.pos)
        else:
            peer = memif_load_acquire(&ring.head)
            limit = <uint16_t>self.size
        avail = <uint16_t>(peer - self.pos)
        if avail > limit:
            self.fault = FAULT_COUNTER
            return 0
        while n < max_frames and used < avail:
            # The usual frame (usual_rx), or the general walk below from
            # the same slot.
            ptr = usual_rx(&r, used, max_frame, slave, &one)
            if ptr != NULL:
                segs[nseg].ptr = ptr
                segs[nseg].len = one
                used += 1
                frames[n].first_seg = nseg
                frames[n].nsegs = 1
                frames[n].length = one
                frames[n].end = used
                frames[n].drop = -1
                nseg += 1
                n += 1
                continue
            first = nseg
            start = used
            length = 0
            drop = -1
            while True:
                if used == avail:
                    if avail < limit or n:
                        # The rest of the chain is not published yet, or
                        # it may be once the frames before it are consumed.
                        if n == 0:
                            self.c.chain_waits += 1
                        return n
                    drop = DROP_CHAIN       # fills every slot we lent and still goes on
                    break
                slot = <uint16_t>(pos + used) & mask
                used += 1
                d = memif_desc_read(&ring.desc[slot])
                if drop < 0:
                    if slave:
                        # Our own record says where the buffer is; only the
                        # length comes from the peer.
                        if d.length > bs:
                            drop = DROP_BAD_DESC
                        ptr = bufs + <uint64_t>slot_buf[slot] * bs
                    elif desc_in_region(regions, nregions, &d):
                        ptr = regions[d.region].base + d.offset
                    else:
                        drop = DROP_BAD_DESC
                    if drop < 0:
                        length += d.length
                        if length > max_frame:
                            drop = DROP_TOO_LONG
                        else:
                            segs[nseg].ptr = ptr
                            segs[nseg].len = d.length
                            nseg += 1
                if not (d.flags & MEMIF_DESC_FLAG_NEXT):
                    break
            if drop >= 0:
                nseg = first
            frames[n].first_seg = first
            frames[n].nsegs = nseg - first
            frames[n].length = length
            frames[n].end = used
            frames[n].drop = drop
            n += 1
        return n

    cdef void commit(self, uint32_t nframes, bint hold) noexcept nogil:
        """Consume the first ``nframes`` gathered frames and count them.
        ``hold``: the buffers of the frames delivered are lent to the
        application (zero-copy) and come back through release_buffers; the
        buffers of dropped frames go back to the pool at once."""
        cdef uint32_t i, start = 0, j
        cdef uint64_t packets = 0, nbytes = 0
        cdef const frame_t *frames = self.frames
        if nframes == 0:
            return
        for i in range(nframes):
            if frames[i].drop < 0:
                packets += 1
                nbytes += frames[i].length
            else:
                self.c.drops[frames[i].drop] += 1
            if self.slave and not (hold and frames[i].drop < 0):
                for j in range(start, frames[i].end):
                    self.free_bufs[self.nfree] = self.slot_buf[<uint16_t>(self.pos + j) & self.mask]
                    self.nfree += 1
            elif self.slave:
                self.zc_held += frames[i].end - start
            start = frames[i].end
        self.rx_released(<uint16_t>self.frames[nframes - 1].end, packets, nbytes)

    cdef void rx_released(self, uint16_t used, uint32_t packets, uint64_t nbytes) noexcept nogil:
        """Receive: the next ``used`` slots are consumed, ``packets`` frames
        of ``nbytes`` bytes delivered (their buffers already back in the pool
        or lent out): count them and give the slots back (master: publish
        our counter; slave: post pool buffers into them)."""
        self.c.packets += packets
        self.c.bytes += nbytes
        self.pos = <uint16_t>(self.pos + used)
        if self.slave:
            self.refill()
        else:
            memif_store_release(&self.ring.tail, self.pos)

    cdef void refill(self) noexcept nogil:
        """Slave rx: post free pool buffers into every empty slot (our record
        of where each buffer is, never the peer's)."""
        cdef uint16_t target = <uint16_t>(self.pos + self.size)
        cdef uint16_t start = self.posted
        while self.posted != target and self.nfree:
            self.nfree -= 1
            self.post(self.posted & self.mask, self.free_bufs[self.nfree])
            self.posted += 1
        if self.posted != start:
            memif_store_release(&self.ring.head, self.posted)

    cdef inline void post(self, uint16_t slot, uint32_t b) noexcept nogil:
        """Slave rx: buffer ``b`` into ``slot`` (our record, then the
        descriptor)."""
        self.slot_buf[slot] = b
        write_posted(&self.ring.desc[slot], b, self.buffer_size, self.buf_offset)

    # ------------------------------------------------- Python front ends

    def tx_frames(self, frames):
        """Copy a sequence of bytes-like frames in; return how many were taken.
        Goes on a ring's worth at a time (like tx_batch) until the ring is full."""
        cdef Py_ssize_t total = len(frames), done = 0, n, i, k
        cdef uint32_t sent = 0
        cdef Py_buffer *views
        self._check_tx()
        if total == 0:
            return 0
        n = total if total < self.size else self.size
        views = <Py_buffer *>PyMem_Malloc(n * sizeof(Py_buffer))
        if views == NULL:
            raise MemoryError()
        try:
            while done < total:
                n = total - done
                if n > self.size:
                    n = self.size
                k = 0
                try:
                    for i in range(n):
                        PyObject_GetBuffer(frames[done + i], &views[i], PyBUF_SIMPLE)
                        k += 1
                        if views[i].len > 0xFFFFFFFF:
                            raise ValueError("frame too long")
                        self.src[i] = <const uint8_t *>views[i].buf
                        self.lens[i] = <uint32_t>views[i].len
                    with nogil:
                        sent = self.tx_copy(<uint32_t>n)
                finally:
                    for i in range(k):
                        PyBuffer_Release(&views[i])
                done += sent
                if sent < n:
                    break
        finally:
            PyMem_Free(views)
        return done

    def tx_batch(self, buf, lengths):
        """Transmit frames packed back to back in ``buf`` (any C-contiguous
        buffer), their lengths in ``lengths`` (a one-dimensional uint32
        array); return how many were taken."""
        cdef Py_buffer data, lens
        cdef uint32_t sent
        self._check_tx()
        get_lengths(lengths, &lens, False)
        try:
            PyObject_GetBuffer(buf, &data, PyBUF_SIMPLE)
        except BaseException:
            PyBuffer_Release(&lens)
            raise
        with nogil:
            sent = self.tx_checked(<const uint8_t *>data.buf, <uint64_t>data.len,
                                   <const uint32_t *>lens.buf, <uint32_t>lens.shape[0])
        PyBuffer_Release(&data)
        PyBuffer_Release(&lens)
        if sent == TX_OVERRUN:
            raise ValueError("lengths add up to more than the buffer")
        return sent

    cdef uint32_t tx_checked(self, const uint8_t *base, uint64_t room, const uint32_t *lengths,
                             uint32_t n) noexcept nogil:
        """tx_packed() that first checks the whole batch fits its buffer
        (``room`` bytes): TX_OVERRUN, nothing sent, when the lengths add up
        to more."""
        cdef uint64_t total = 0
        cdef uint32_t i
        for i in range(n):
            total += lengths[i]
        if total > room:
            return TX_OVERRUN
        return self.tx_packed(base, lengths, n)


    def rx_frames(self, uint32_t max_frames):
        """Receive up to ``max_frames`` frames as a list of bytes (copies)."""
        cdef uint32_t n, i, s
        cdef frame_t *f
        cdef char *dst
        if self.tx:
            raise ValueError("not a receive queue")
        if max_frames > self.size:
            max_frames = self.size
        with nogil:
            n = self.gather(max_frames)
        out = []
        for i in range(n):
            f = &self.frames[i]
            if f.drop >= 0:
                continue
            if f.nsegs == 1:
                b = PyBytes_FromStringAndSize(self.segs[f.first_seg].ptr, f.length)
            else:
                b = PyBytes_FromStringAndSize(NULL, f.length)
                dst = PyBytes_AS_STRING(b)
                for s in range(f.first_seg, f.first_seg + f.nsegs):
                    memcpy(dst, self.segs[s].ptr, self.segs[s].len)
                    dst += self.segs[s].len
            out.append(b)
        with nogil:
            self.commit(n, False)
        return out

    def rx_batch(self, buf, lengths):
        """Copy frames back to back into ``buf`` (any writable C-contiguous
        buffer), their lengths into ``lengths`` (a writable one-dimensional
        uint32 array); return the number of frames.  Stops when either is full."""
        cdef Py_buffer data, lens
        cdef uint32_t k = 0
        if self.tx:
            raise ValueError("not a receive queue")
        PyObject_GetBuffer(buf, &data, PyBUF_WRITABLE)
        try:
            get_lengths(lengths, &lens, True)
        except BaseException:
            PyBuffer_Release(&data)
            raise
        if data.len and lens.shape[0]:
            with nogil:
                k = self.rx_copy(<uint8_t *>data.buf, <uint64_t>data.len, <uint32_t *>lens.buf,
                                 <uint32_t>lens.shape[0] if lens.shape[0] < self.size else self.size)
        PyBuffer_Release(&lens)
        PyBuffer_Release(&data)
        return k

    cdef uint32_t rx_copy(self, uint8_t *base, uint64_t room, uint32_t *lengths,
                          uint32_t maxf) noexcept nogil:
        """rx_batch() on raw pointers (``room`` bytes at ``base``, ``maxf``
        lengths), for nodes that loop over bursts in C."""
        # The frame and segment tables in locals: memcpy may write anywhere
        # as far as the compiler knows, which would reload them per frame.
        cdef const frame_t *frames = self.frames
        cdef const seg_t *sg
        cdef const seg_t *segs = self.segs
        cdef uint32_t n, i, s, k = 0, take = 0, length
        cdef uint64_t off = 0
        cdef uint8_t *dst
        if maxf > self.size:
            maxf = self.size
        # the usual frames in one pass; the rest below, after them
        n = self.rx_ready()
        if maxf < n:
            n = maxf
        if self.slave:
            k = copy_out_usual(self, base, room, lengths, n, &off, True)
        else:
            k = copy_out_usual(self, base, room, lengths, n, &off, False)
        if k:
            self.rx_consumed(k, off)
            if k == maxf:
                return k
        n = self.gather(maxf - k)
        for i in range(n):
            if frames[i].drop < 0:
                if off + frames[i].length > room:
                    if k or off:
                        break
                    self.frames[i].drop = DROP_TOO_LONG     # could never fit: do not stall
                    take = i + 1
                    continue
                length = <uint32_t>frames[i].length
                sg = &segs[frames[i].first_seg]
                if frames[i].nsegs == 1:
                    memcpy(base + off, sg.ptr, length)
                else:
                    dst = base + off
                    for s in range(frames[i].nsegs):
                        memcpy(dst, sg[s].ptr, sg[s].len)
                        dst += sg[s].len
                off += length
                lengths[k] = length
                k += 1
            take = i + 1
        self.commit(take, False)
        return k

    def forward(self, Queue txq not None, uint32_t max_frames=256):
        """Move up to ``max_frames`` received frames to the transmit queue
        ``txq``, each copied once, ring buffer to ring buffer, with the GIL
        released; return how many were queued on ``txq``.  Frames ``txq``
        cannot take now (ring full, link down, fault) stay in this ring for
        the next call; a frame longer than ``txq`` can ever send is dropped
        and counted there ("frame too long").  The calling thread uses both
        queues."""
        cdef uint32_t r
        if self.tx:
            raise ValueError("not a receive queue")
        txq._check_tx()
        with nogil:
            r = self.forward_to(txq, max_frames)
        return r

    cdef uint32_t forward_usual(self, Queue txq, uint32_t max_frames) noexcept nogil:
        """Receive queue -> transmit queue ``txq`` in one pass over both
        rings, for the usual frames at the front of this one: one slot, a
        good buffer, and a length txq's next slot holds whole.  It stops at
        the first other frame, at ``max_frames``, or where either ring has
        no more; the caller then takes the rest through gather, tx_copy and
        commit, which decide every case (and the first frame of that walk is
        the one this loop stopped at: order is kept).  What it moves is
        consumed here, queued on txq and counted on both queues, as those
        three would have; ``txq.tx_bytes`` holds its bytes.  Each
        descriptor is read once into a local; the payload is copied unread.
        Returns the frames moved."""
        cdef uint16_t room
        cdef uint32_t n, k
        cdef uint64_t nbytes = 0
        txq.tx_dropped = 0
        txq.tx_bytes = 0
        if txq.closed or txq.fault or txq.reserved:
            return 0
        n = self.rx_ready()
        room = txq.tx_room()
        if max_frames < n:
            n = max_frames
        if room < n:
            n = room
        # the roles as constants: a loop for each pair, without their tests
        if self.slave:
            if txq.slave:
                k = copy_usual(self, txq, n, &nbytes, True, True)
            else:
                k = copy_usual(self, txq, n, &nbytes, True, False)
        elif txq.slave:
            k = copy_usual(self, txq, n, &nbytes, False, True)
        else:
            k = copy_usual(self, txq, n, &nbytes, False, False)
        if k == 0:
            return 0
        self.rx_consumed(k, nbytes)     # every byte was read above
        txq.tx_bytes = nbytes
        txq.tx_published(<uint16_t>k, k, nbytes)
        return k

    cdef uint16_t rx_ready(self) noexcept nogil:
        """Receive: slots the peer published that we have not taken, from
        its counter (read once, acquire); 0 also when the counter is past
        what is possible, which gather finds and faults."""
        cdef uint16_t peer, limit
        if self.closed or self.fault:
            return 0
        if self.slave:
            peer = memif_load_acquire(&self.ring.tail)
            limit = <uint16_t>(self.posted - self.pos)
        else:
            peer = memif_load_acquire(&self.ring.head)
            limit = <uint16_t>self.size
        if <uint16_t>(peer - self.pos) > limit:
            return 0
        return <uint16_t>(peer - self.pos)

    cdef void rx_consumed(self, uint32_t k, uint64_t nbytes) noexcept nogil:
        """Receive: the next ``k`` slots, ``k`` one-slot frames of ``nbytes``
        bytes in all that were read to the end, are consumed: counted, and
        their buffers handed back (slave: into the pool and posted again;
        master: the counter published)."""
        cdef uint32_t i, run
        cdef uint16_t pos = self.pos, mask = self.mask
        cdef side_t s
        cdef run_t u
        if self.slave:
            if self.posted == <uint16_t>(pos + self.size):
                # Every slot held a posted buffer, so the slots refill
                # would post into are these: each takes its own buffer
                # back, without the round trip through the pool (and
                # refill, below, finds nothing left to do); the slots up
                # to the ring's end, then from its start.
                s = side_of(self)
                run = min(k, run_from(&s, 0, &u))
                post_own(u.desc, u.slot_buf, run, s.bs, self.buf_offset)
                run_from(&s, run, &u)
                post_own(u.desc, u.slot_buf, k - run, s.bs, self.buf_offset)
                self.posted += k
                memif_store_release(&self.ring.head, self.posted)
            else:
                for i in range(k):
                    self.free_bufs[self.nfree + i] = self.slot_buf[<uint16_t>(pos + i) & mask]
                self.nfree += k
        self.rx_released(<uint16_t>k, k, nbytes)

    cdef uint32_t forward_to(self, Queue txq, uint32_t max_frames) noexcept nogil:
        """forward() without the checks."""
        cdef const frame_t *frames = self.frames
        cdef const frame_t *f
        cdef const uint8_t **src = txq.src
        cdef uint32_t *lens = txq.lens
        # Our own lens array is free on a receive queue: it holds how many
        # segments each frame has, for tx_copy_parts.
        cdef uint32_t *nparts = self.lens
        cdef uint32_t n, i, k = 0, taken, take, usual
        cdef bint chained = False
        if max_frames > self.size:
            max_frames = self.size
        if max_frames > txq.size:       # txq.src / txq.lens hold txq.size frames
            max_frames = txq.size
        usual = self.forward_usual(txq, max_frames)
        if usual == max_frames:
            return usual
        n = self.gather(max_frames - usual)
        if n == 0:
            return usual
        for i in range(n):
            f = &frames[i]
            if f.drop >= 0:
                continue
            if f.nsegs == 1:
                src[k] = <const uint8_t *>self.segs[f.first_seg].ptr
            else:
                chained = True
            lens[k] = <uint32_t>f.length
            nparts[k] = f.nsegs
            k += 1
        if chained:
            # The delivered frames' segments are self.segs in order (a frame
            # the ring dropped has none): each frame is its own segments.
            taken = txq.tx_copy_parts(k, self.segs, nparts)
        else:
            taken = txq.tx_copy(k)
        take = n
        if taken < k:
            # Consume up to the first frame txq did not take (and the
            # dropped ones before it); it and the rest stay in the ring.
            k = 0
            for i in range(n):
                if frames[i].drop < 0:
                    if k == taken:
                        take = i
                        break
                    k += 1
        self.commit(take, False)
        return usual + taken - txq.tx_dropped

    def rx_buffers(self, uint32_t max_frames):
        """Slave zero-copy receive: Buffer objects viewing the shared buffers,
        one per descriptor.  Hand them back with release_buffers()."""
        cdef uint32_t n, i, s
        cdef frame_t *f
        cdef Buffer b
        if self.tx:
            raise ValueError("not a receive queue")
        if not self.slave:
            raise MemifError("zero-copy receive is for the slave side")
        if max_frames > self.size:
            max_frames = self.size
        with nogil:
            n = self.gather(max_frames)
            self.commit(n, True)
        out = []
        for i in range(n):
            f = &self.frames[i]
            for s in range(f.first_seg, f.first_seg + f.nsegs):
                b = Buffer.__new__(Buffer)
                b._bind(self, self.segs[s].ptr, self.segs[s].len, self.buffer_size,
                        s + 1 < f.first_seg + f.nsegs)
                out.append(b)
        return out

    def release_buffers(self, list bufs):
        """Give zero-copy receive buffers back to the pool, in any order and
        any grouping; the ring is refilled with them at once."""
        cdef Buffer b
        if not bufs or not any(b.valid for b in bufs):
            return                      # empty, or released already
        for b in bufs:
            if b.queue is not self:
                raise ValueError("buffer belongs to another queue")
            if b.exports:
                raise BufferError("a view of a zero-copy buffer is still alive")
        for b in bufs:
            if b.valid:                 # each live buffer once
                if not self.closed and self.zc_held:
                    self.free_bufs[self.nfree] = <uint32_t>((b.ptr - self.bufs) // self.buffer_size)
                    self.nfree += 1
                    self.zc_held -= 1
                b._invalidate()
        if not self.closed:
            with nogil:
                self.refill()

    def tx_alloc(self, uint32_t n):
        """Slave zero-copy transmit: lend up to ``n`` free ring buffers."""
        cdef uint16_t peer, free, k, slot
        cdef Buffer b
        if not (self.slave and self.tx):
            raise MemifError("tx_alloc is for the slave side")
        if self.closed or self.fault:
            return []
        peer = memif_load_acquire(&self.ring.tail)
        if <uint16_t>(self.pos - peer) > self.size:
            self.fault = FAULT_COUNTER
            return []
        free = <uint16_t>(self.size - <uint16_t>(self.pos - peer) - self.reserved)
        if n > free:
            n = free
        out = []
        for k in range(n):
            slot = <uint16_t>(self.pos + self.reserved + k) & self.mask
            b = Buffer.__new__(Buffer)
            b._bind(self, self.bufs + <uint64_t>self.slot_buf[slot] * self.buffer_size,
                    self.buffer_size,
                    self.buffer_size, False)
            b.slot = slot
            out.append(b)
        self.reserved += <uint16_t>n
        return out

    def tx_commit(self, list bufs, lengths):
        """Publish the first len(bufs) lent buffers with their lengths; every
        other lent buffer is taken back.  Returns the number sent."""
        cdef uint32_t i, n = len(bufs), length
        cdef uint64_t nbytes = 0
        cdef uint16_t slot
        cdef Buffer b
        cdef memif_desc_t *w
        if len(lengths) != n:
            raise ValueError("one length per buffer")
        if self.closed:                  # link down: the buffers died with it
            self.reserved = 0
            return 0
        for i in range(n):
            b = bufs[i]
            if b.queue is not self or b.epoch != self.epoch or b.ptr == NULL:
                raise MemifError("buffer is not from this queue's current allocation")
            if b.slot != (<uint16_t>(self.pos + i) & self.mask):
                raise ValueError("buffers must be committed in the order tx_alloc gave them")
            if lengths[i] > self.buffer_size or lengths[i] < 0:
                raise ValueError("length larger than the buffer")
            if b.exports:
                raise BufferError("a view of a zero-copy buffer is still alive")
        for i in range(n):
            b = bufs[i]
            length = lengths[i]
            w = &self.ring.desc[b.slot]
            w.flags = 0
            w.region = 0
            w.offset = self.buf_offset + self.slot_buf[b.slot] * self.buffer_size
            w.length = length
            w.metadata = 0
            nbytes += length
            b._invalidate()
        self.epoch += 1                  # the rest of the allocation is void
        self.reserved = 0
        with nogil:
            self.tx_published(<uint16_t>n, n, nbytes)
        return n

    # ---------------------------------------------------------- interrupts

    def set_interrupt(self, bint enabled, bint switch=False):
        """Receive rings: clear MASK_INT to be woken through the eventfd.
        ``switch``: an adaptive-mode change, counted in mode_switches."""
        if self.tx:
            raise ValueError("interrupt mode is a property of receive rings")
        memif_set_ring_flags(self.ring, 0 if enabled else MEMIF_RING_FLAG_MASK_INT)
        memif_fence()
        if switch:
            self.c.mode_switches += 1

    def pending(self):
        """Whether the peer published something we have not received."""
        if self.closed:
            return False
        if self.slave:
            return memif_load_acquire(&self.ring.tail) != self.pos
        return memif_load_acquire(&self.ring.head) != self.pos

    def in_flight(self):
        """Transmit: slots published that the peer has not consumed yet
        (0 once it has taken everything; a sender waits for that before
        closing, or the peer loses what was still in the ring)."""
        if not self.tx or self.closed:
            return 0
        if self.slave:
            return <uint16_t>(self.pos - memif_load_acquire(&self.ring.tail))
        return <uint16_t>(self.size - <uint16_t>(memif_load_acquire(&self.ring.head) - self.pos))

    def drain(self):
        """Clear the eventfd after a wakeup; never waits on the peer longer
        than IRQ_WAIT_BOUND (see kick())."""
        cdef uint64_t v = 0
        cdef ssize_t r
        cdef iovec iov
        cdef int err, fl
        iov.iov_base = &v
        iov.iov_len = 8
        with nogil:
            # RWF_NOWAIT: never wait, whatever the peer did to the flags of
            # the file description we share with it.
            r = preadv2(self.fd, &iov, 1, -1, RWF_NOWAIT)
            if r < 0 and (errno == EOPNOTSUPP or errno == EINVAL or errno == ENOSYS):
                err = irq_guard_read(self.fd, &v)       # an older kernel
                if err == 0:
                    r = 8
                elif err == EINTR:
                    self.fault = FAULT_IRQ_FD
                elif err == IRQ_GUARD_UNAVAILABLE:
                    fl = fcntl(self.fd, F_GETFL)
                    if fl >= 0 and fl & O_NONBLOCK:
                        r = read(self.fd, &v, 8)
                    else:
                        self.fault = FAULT_IRQ_FD
        if r == 8:
            self.c.irq_received += v
            return True
        return False

    cdef void attach_counters(self, counters_t *slot, object owner) noexcept:
        """Count into ``slot`` from now on (a shared stats file kept alive by
        ``owner``), carrying over what was counted so far."""
        slot[0] = self.c[0]
        self.c = slot
        self.c_owner = owner

    def fault_reason(self):
        return FAULT_REASONS.get(self.fault)

    def counters(self):
        """This queue's counters as a dict, named by memifx/stats/schema.py QUEUE."""
        cdef const uint64_t *u = <const uint64_t *>self.c
        from memifx.stats.schema import QUEUE   # imports this module: not at the top
        return QUEUE.nested([u[i] for i in range(sizeof(counters_t) // 8)])


cdef class Buffer:
    """A view of one shared-memory buffer (zero-copy).  Supports the buffer
    protocol while valid; after it is handed back, or its link goes down and
    the application lets it go, using it raises instead of touching memory."""

    cdef _bind(self, Queue q, char *ptr, uint32_t length, uint32_t capacity, bint chained):
        self.queue = q
        self.ptr = ptr
        self.length = length
        self.capacity = capacity
        self.chained = chained
        self.epoch = q.epoch

    cdef _invalidate(self):
        self.ptr = NULL
        self.length = 0

    @property
    def valid(self):
        return self.ptr != NULL and self.epoch == self.queue.epoch

    def __len__(self):
        return self.length if self.valid else 0

    @property
    def bytes(self):
        if not self.valid:
            raise BufferError("buffer was released")
        return PyBytes_FromStringAndSize(self.ptr, self.length)

    def __getbuffer__(self, Py_buffer *view, int flags):
        if not self.valid:
            raise BufferError("buffer was released")
        view.buf = self.ptr
        view.obj = self
        view.len = self.length
        view.readonly = 0
        view.itemsize = 1
        view.format = FORMAT_B if flags & 0x0004 else NULL   # PyBUF_FORMAT
        view.ndim = 1
        view.shape = NULL
        view.strides = NULL
        view.suboffsets = NULL
        view.internal = NULL
        self.exports += 1

    def __releasebuffer__(self, Py_buffer *view):
        self.exports -= 1

    def __repr__(self):
        return "<memifx.Buffer len=%d%s%s>" % (
            self.length, " chained" if self.chained else "",
            "" if self.valid else " released")
