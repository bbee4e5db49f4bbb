# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Test traffic: synthesised, stamped frames (``fill``) and their verification
(``check``), each a loop over a whole burst with the GIL released.

A stamped frame, as ``memifx gen`` sends it::

    [Ethernet, 14]  dst, src, type 0x0800          (absent on ip-mode interfaces)
    IPv4, 20        no options, DF, TTL 64, proto UDP, header checksum, id = seq
    UDP, 8          source port 1024 + flow, destination port 28024, checksum 0
    stamp, 20       magic "MX", flow u16, sequence u64, CLOCK_MONOTONIC ns u64
    payload         the rest of the frame: 64-bit words seed(seq, flow) + k * STEP
                    (magic "MX"), or zeros (magic "MZ", ``payload="zeros"``)

The pattern makes every byte of every frame checkable.  Zeros are the cheap
payload of a load test: a burst staged in the same buffer as the last one
only needs its headers written (``fill(headers_only=True)``), so each frame
costs the sender little more than the copy into the ring, as a DPDK txonly
frame does.

Stamp fields are in host byte order: both ends of a memif share a host, and
CLOCK_MONOTONIC is one clock for every process on it, so ``now - timestamp``
at the receiver is the one-way latency.

The checker treats an IPv4/UDP frame to port 28024 as ours.  Ours with a
wrong magic, IP header checksum, IP or UDP length, or (at ``verify="full"``,
not "stamp": headers and stamp only) a single payload byte off is
*corrupt*.  Anything else is *other* (ARP, ICMP, replayed captures).
Cheaper levels read less: "seq" the stamp alone (a frame with the magic
where gen puts the stamp is ours), "count" nothing at all.
Good frames feed a per-flow sequence window (lost, reordered, duplicated) and
a latency histogram (64 buckets per power of two: about 1.5% resolution);
a frame whose stamp is sound but whose pattern is not is corrupt, yet still
marks its sequence number as arrived (damaged, not lost).  Sequences start
at 0, so frames sent before a sink started count as lost.  A flow that starts
over (behind, yet stamped later than anything seen: a new gen run) resets its
window and counts in ``resets``.

The checker reads frames either packed back to back in a private buffer
(``check``, ``drain``: what rx_copy() writes) or where they lie in the
ring's shared buffers (``drain_in_place``: ``memifx sink --zero-copy``).
Peer memory can change while it is read, so the usual frame is decided
from header words each read once into locals, with every offset bounded by
our copy of the descriptor's length; any other frame is copied out first
and decided on the copy.  A truncated region reads as zeros (memifx/guard.pyx).
"""
from cpython.buffer cimport PyObject_GetBuffer, PyBuffer_Release, PyBUF_SIMPLE, PyBUF_WRITABLE
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcmp, memcpy, memset

from memifx.inet cimport checksum_add, inet_checksum, inet_fold, ones_add, sums_to_all_ones
from memifx.ring cimport (Queue, frame_t, seg_t, DROP_TOO_LONG, get_lengths, side_t,
                          run_t, run_from, side_of, usual_rx_in)

import struct

cdef extern from *:
    """
    #define mx_unlikely(x) __builtin_expect(!!(x), 0)
    #define mx_keep_branch() __asm__ __volatile__("")
    #define mx_little_endian (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    """
    int __builtin_clzll(unsigned long long) nogil
    bint unlikely "mx_unlikely"(bint) nogil      # a hint: lay out the branch as rare
    # No code; a branch that holds it stays a branch (not a conditional move)
    void keep_branch "mx_keep_branch"() nogil
    const bint LITTLE_ENDIAN "mx_little_endian"     # the host's byte order
    uint16_t __builtin_bswap16(uint16_t) nogil

cdef struct views_t:
    # The buffers of one call, acquired with the buffer protocol (plain
    # PyObject_GetBuffer: a typed memoryview's set-up costs some thousand
    # instructions a call) and released together by release_views().
    Py_buffer v[3]
    int n                   # how many are held


cdef inline int get_bytes(views_t *b, object obj, bint writable) except -1:
    """Acquire ``obj`` (any C-contiguous buffer) as bytes into the next view."""
    PyObject_GetBuffer(obj, &b.v[b.n], PyBUF_WRITABLE if writable else PyBUF_SIMPLE)
    b.n += 1
    return 0


cdef inline int get_u32(views_t *b, object obj, bint writable) except -1:
    """Acquire ``obj`` as a one-dimensional uint32 array into the next view."""
    get_lengths(obj, &b.v[b.n], writable)
    b.n += 1
    return 0


cdef inline void release_views(views_t *b) noexcept:
    while b.n:
        b.n -= 1
        PyBuffer_Release(&b.v[b.n])


cdef inline uint32_t u32_count(const Py_buffer *v) noexcept:
    """Items of a uint32 view acquired by get_u32, as a count a burst can
    use (a longer array counts as 2**32 - 1 items)."""
    return <uint32_t>v.shape[0] if <uint64_t>v.shape[0] < 0xffffffffULL else 0xffffffffU


cdef uint64_t SEED_MUL = 0x9E3779B97F4A7C15ULL
cdef uint64_t SEED_XOR = 0x6D656D6966786D78ULL
cdef uint64_t STEP = 0xD1B54A32D192ED03ULL

HEADER_BYTES = IP_HLEN + UDP_HLEN + STAMP_LEN     # smallest stamped IP packet
STAMP_PORT = UDP_PORT
VERIFY_LEVELS = ("full", "stamp", "seq", "count")     # Checker(verify=): VERIFY_* in order

cdef enum:
    PCAP_REC = 16           # pcap record header: ts_sec, ts_usec, caplen, len

PCAP_RECORD = PCAP_REC

cdef enum:                  # what check_one() found
    GOOD = 0
    CORRUPT = 1
    OTHER = 2


def monotonic_ns():
    """CLOCK_MONOTONIC in ns, the clock of the stamps."""
    return now_ns()


cdef inline void put16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = <uint8_t>(v >> 8)
    p[1] = <uint8_t>v


cdef inline uint16_t get16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((<uint16_t>p[0] << 8) | p[1])


cdef inline uint64_t pattern_seed(uint64_t seq, uint16_t flow) noexcept nogil:
    return (seq + 1) * SEED_MUL ^ SEED_XOR ^ (<uint64_t>flow << 40)


cdef inline void write_pattern(uint8_t *p, uint32_t length, uint64_t w) noexcept nogil:
    # No address of ``w`` taken (the tail goes through ``tail``): a loop the
    # compiler vectorises.
    cdef uint64_t k, words = length >> 3, tail
    for k in range(words):
        memcpy(p + 8 * k, &w, 8)
        w += STEP
    if length & 7:
        tail = w
        memcpy(p + 8 * words, &tail, length & 7)


cdef inline void zero_tail(uint8_t *p, uint32_t length) noexcept nogil:
    """``length`` zero bytes at ``p``: up to 16 as two overlapping stores
    (a frame's few bytes after its stamp, as a 64-byte frame has, cost a
    call to memset several times over), more through memset."""
    cdef uint64_t z = 0
    if length >= 8:
        if length > 16:
            memset(p, 0, length)
            return
        memcpy(p, &z, 8)
        memcpy(p + length - 8, &z, 8)
    elif length >= 4:
        memcpy(p, &z, 4)
        memcpy(p + length - 4, &z, 4)
    elif length >= 2:
        memcpy(p, &z, 2)
        memcpy(p + length - 2, &z, 2)
    elif length:
        p[0] = 0


cdef inline bint pattern_ok(const uint8_t *p, uint32_t length, uint64_t w) noexcept nogil:
    """Whether ``length`` bytes at ``p`` are the pattern that starts with
    word ``w``.  The differences of all words are or-ed together, without
    an exit per word: a loop the compiler vectorises (a damaged frame costs
    as much as a sound one)."""
    cdef uint64_t k, words = length >> 3, v, diff = 0
    for k in range(words):
        memcpy(&v, p + 8 * k, 8)
        diff |= v ^ w
        w += STEP
    if diff:
        return False
    if length & 7:
        # the bytes present, in memory order, as write_pattern() cut them
        if LITTLE_ENDIAN:       # the low bytes of the word: read without a call
            v = 0
            for k in range(length & 7):
                v |= <uint64_t>p[8 * words + k] << (8 * k)
            return v == (w & ((1ULL << (8 * (length & 7))) - 1))
        v = 0
        memcpy(&v, p + 8 * words, length & 7)
        return memcmp(&v, &w, length & 7) == 0
    return True


cdef inline bint zeros_ok(const uint8_t *p, uint32_t length) noexcept nogil:
    cdef uint32_t k, words = length >> 3
    cdef uint64_t v, acc = 0
    for k in range(words):
        memcpy(&v, p + 8 * k, 8)
        acc |= v
    for k in range(words * 8, length):
        acc |= p[k]
    return acc == 0


cdef inline bint payload_ok(const uint8_t *p, uint32_t length, uint16_t magic, uint64_t seq,
                            uint16_t flow) noexcept nogil:
    """The payload after a sound stamp with this magic, sequence and flow."""
    if magic == STAMP_MAGIC_ZEROS:
        return zeros_ok(p, length)
    return pattern_ok(p, length, pattern_seed(seq, flow))


cdef inline uint16_t sport(uint32_t flow) noexcept nogil:
    """The UDP source port of a flow's frames."""
    return <uint16_t>(SPORT_BASE + (flow if flow < SPORT_SPAN else flow - SPORT_SPAN))


cdef inline uint32_t flow_ports(uint16_t flow) noexcept nogil:
    """The UDP source and destination ports of a flow's frames, as the four
    bytes lie in memory, read as a host integer."""
    cdef uint8_t b[4]
    cdef uint32_t v
    put16(b, sport(flow))
    put16(b + 2, UDP_PORT)
    memcpy(&v, b, 4)
    return v


cdef inline uint32_t lat_bucket(uint64_t v) noexcept nogil:
    """The latency histogram's bucket of ``v`` ns: ``v`` itself below
    LAT_SUB, else LAT_SUB buckets per power of two, ``v >> shift`` in
    [LAT_SUB, 2 * LAT_SUB) picking one.  Without a branch: ``v | LAT_SUB``
    makes the shift 0 below LAT_SUB, where the formula gives ``v``."""
    cdef uint32_t shift = 63 - LAT_SUB_BITS - __builtin_clzll(v | LAT_SUB)
    return shift * LAT_SUB + <uint32_t>(v >> shift)


cdef inline uint64_t lat_bucket_top(uint32_t b) noexcept nogil:
    """Largest value that falls into bucket ``b``."""
    cdef uint32_t shift
    if b < LAT_SUB:
        return b
    shift = (b - LAT_SUB) // LAT_SUB
    return ((<uint64_t>(LAT_SUB + (b - LAT_SUB) % LAT_SUB) + 1) << shift) - 1


class GeneratorError(ValueError):
    """A Generator argument refused; ``argument`` names it (``sizes``,
    ``flows``, ``payload``, ``dst_step``, ``src_mac`` ...), so that a caller
    can point at the option it came from."""

    def __init__(self, reason, argument):
        super().__init__(reason)
        self.argument = argument


def _mac(value, what):
    b = bytes(value)
    if len(b) != 6:
        raise GeneratorError("%s must be 6 bytes" % what, what)
    return b


def _ip4(value, what):
    b = bytes(value)
    if len(b) != 4:
        raise GeneratorError("%s must be 4 bytes" % what, what)
    return b


cdef inline void write_frame(uint8_t *p, const uint8_t *t, uint32_t hlen, uint32_t size,
                             uint32_t flow, uint64_t seq, uint64_t ts, bint zeros,
                             bint payload, const dst_t *dsts) noexcept nogil:
    """One frame of ``size`` bytes from its size's template ``t`` (``hlen``
    bytes of headers): then what is per frame (IP id and checksum, source
    port, destination where ``dsts`` gives one per flow, stamp) and, if
    ``payload``, the payload."""
    cdef uint8_t *ip = p + hlen - IP_HLEN - UDP_HLEN
    cdef uint8_t *st = p + hlen
    cdef uint32_t rest = size - hlen - STAMP_LEN
    cdef uint16_t f16 = <uint16_t>flow, id16, csum
    cdef uint16_t magic = STAMP_MAGIC_ZEROS if zeros else STAMP_MAGIC
    cdef uint8_t stamp[STAMP_LEN]
    # A fixed-size copy (inlined); the stamp overwrites what lies beyond
    # the template (every frame has room for template and stamp).
    memcpy(p, t, HDR_MAX)
    put16(ip + 4, <uint16_t>seq)
    # The template's checksum is for id 0: add the id (RFC 1624), all in
    # memory order as inet_checksum() works.
    memcpy(&csum, t + hlen - IP_HLEN - UDP_HLEN + 10, 2)
    memcpy(&id16, ip + 4, 2)
    if dsts != NULL:
        memcpy(ip + 16, &dsts[flow].addr, 4)
        csum = checksum_add(csum, ones_add(id16, dsts[flow].sum))
    else:
        csum = checksum_add(csum, id16)
    memcpy(ip + 10, &csum, 2)
    put16(ip + IP_HLEN, sport(flow))
    # the stamp built in registers, stored at once
    memcpy(stamp, &magic, 2)
    memcpy(stamp + 2, &f16, 2)
    memcpy(stamp + 4, &seq, 8)
    memcpy(stamp + 12, &ts, 8)
    memcpy(st, stamp, STAMP_LEN)
    if not zeros:
        write_pattern(st + STAMP_LEN, rest, pattern_seed(seq, f16))
    elif payload:
        zero_tail(st + STAMP_LEN, rest)


cdef inline void set_flow(uint8_t *p, const uint8_t *t, uint32_t hlen, uint32_t flow,
                          const dst_t *dsts) noexcept nogil:
    """Make the fixed frame at ``p`` (made from template ``t``) one of
    ``flow``: its source port and, where ``dsts`` gives one per flow, its
    destination, with the template's checksum (IP id 0) adjusted to it."""
    cdef uint8_t *ip = p + hlen - IP_HLEN - UDP_HLEN
    cdef uint16_t csum
    put16(p + hlen - UDP_HLEN, sport(flow))
    if dsts != NULL:
        memcpy(ip + 16, &dsts[flow].addr, 4)
        memcpy(&csum, t + hlen - IP_HLEN - UDP_HLEN + 10, 2)
        csum = checksum_add(csum, dsts[flow].sum)
        memcpy(ip + 10, &csum, 2)


cdef inline void write_fixed(uint8_t *p, const uint8_t *t, uint32_t hlen, uint32_t size,
                             uint32_t flow, bint payload, const dst_t *dsts) noexcept nogil:
    """An unstamped frame (payload "fixed") of ``size`` bytes: its size's
    template as it is (IP id 0, the checksum for it) with the flow's source
    port (and destination, where ``dsts`` gives one per flow), zeros where
    a stamp would be and, if ``payload``, after it (else the caller knows
    they are zeros already: a fixed frame's)."""
    memcpy(p, t, HDR_MAX)           # the template's bytes past hlen are zeros
    set_flow(p, t, hlen, flow, dsts)
    if payload:
        memset(p + hlen, 0, size - hlen)


cdef struct cycle_t:
    # Where the generator is in its cycles of flows and sizes, held in
    # locals while a burst is made: the frames are bytes, which may alias
    # anything, so the compiler would reload the generator's fields after
    # each frame written.
    const uint32_t *flows   # the flows frames belong to, in turn
    uint32_t nflows
    uint32_t cursor         # flows[cursor]: the next frame's flow
    uint64_t *seqs          # per flow: its next sequence number
    const uint32_t *sizes   # the frame sizes, in turn
    uint32_t nsizes
    uint32_t si             # sizes[si]: the next frame's size


cdef inline uint32_t next_flow(const uint32_t *flows, uint32_t nflows,
                               uint32_t *cursor) noexcept nogil:
    """The next frame's flow, ``flows[cursor]``; the flow cycle moves on by
    one.  The fill loops keep the cycles in locals and pass their addresses."""
    cdef uint32_t flow = flows[cursor[0]]
    cursor[0] += 1
    if cursor[0] == nflows:
        cursor[0] = 0
    return flow


cdef inline uint64_t next_seq(const uint32_t *flows, uint32_t nflows, uint32_t *cursor,
                              uint64_t *seqs, uint32_t *flow) noexcept nogil:
    """The next frame's flow (into ``flow``: next_flow()) and its sequence
    number, which moves on by one."""
    cdef uint64_t seq
    flow[0] = next_flow(flows, nflows, cursor)
    seq = seqs[flow[0]]
    seqs[flow[0]] = seq + 1
    return seq


cdef inline cycle_t cycle_of(Generator g, const uint32_t *flows, uint32_t nflows,
                            uint32_t cursor) noexcept nogil:
    """``g``'s cycles, ``flows`` taken in turn from ``cursor``."""
    cdef cycle_t c
    c.flows = flows
    c.nflows = nflows
    c.cursor = cursor
    c.seqs = g.seq
    c.sizes = g.sizes
    c.nsizes = g.nsizes
    c.si = g.size_pos
    return c


cdef inline (uint32_t, uint64_t) fill_frames(
        cycle_t *c, uint8_t *base, uint64_t room, uint32_t *lengths, uint32_t n, uint64_t ts,
        const uint8_t *hdr, uint32_t hlen, bint zeros, bint payload, bint fixed,
        bint single, const dst_t *dsts) noexcept nogil:
    """Generator.fill_raw's loop (``fixed``: unstamped frames; ``single``:
    one frame size; ``dsts``: the flows' destinations, or NULL, a constant
    too); returns (frames, bytes).  The cycles in plain locals,
    as in fill_frames_at()."""
    cdef uint32_t i = 0, size = c.sizes[c.si], flow, si = c.si
    cdef const uint32_t *flows = c.flows
    cdef const uint32_t *sizes = c.sizes
    cdef uint64_t *seqs = c.seqs
    cdef uint32_t cursor = c.cursor, nflows = c.nflows, nsizes = c.nsizes
    cdef const uint8_t *t = hdr + si * HDR_MAX
    cdef uint64_t off = 0, seq
    while i < n:
        if not single:
            size = sizes[si]
            t = hdr + si * HDR_MAX
        if off + size > room:
            break
        if not single:
            si += 1
            if si == nsizes:
                si = 0
        if fixed:       # no sequence numbers
            write_fixed(base + off, t, hlen, size, next_flow(flows, nflows, &cursor), payload,
                        dsts)
        else:
            seq = next_seq(flows, nflows, &cursor, seqs, &flow)
            write_frame(base + off, t, hlen, size, flow, seq, ts, zeros, payload, dsts)
        lengths[i] = size
        off += size
        i += 1
    c.cursor = cursor
    c.si = si
    return i, off


cdef inline (uint32_t, uint64_t) fill_sized(
        cycle_t *c, uint8_t *base, uint64_t room, uint32_t *lengths, uint32_t n, uint64_t ts,
        const uint8_t *hdr, uint32_t hlen, bint zeros, bint payload, bint fixed) noexcept nogil:
    """fill_frames() with one frame size, or several, as a constant (flows
    without destinations of their own)."""
    if c.nsizes == 1:
        return fill_frames(c, base, room, lengths, n, ts, hdr, hlen, zeros, payload, fixed, True,
                           NULL)
    return fill_frames(c, base, room, lengths, n, ts, hdr, hlen, zeros, payload, fixed, False,
                       NULL)


cdef inline (uint32_t, uint64_t) fill_kind(
        cycle_t *c, uint8_t *base, uint64_t room, uint32_t *lengths, uint32_t n, uint64_t ts,
        const uint8_t *hdr, uint32_t hlen, bint zeros, bint payload, bint fixed) noexcept nogil:
    """fill_sized() with the payload kind as a constant."""
    if not zeros:
        return fill_sized(c, base, room, lengths, n, ts, hdr, hlen, False, True, False)
    if fixed:
        if payload:
            return fill_sized(c, base, room, lengths, n, ts, hdr, hlen, True, True, True)
        return fill_sized(c, base, room, lengths, n, ts, hdr, hlen, True, False, True)
    if payload:
        return fill_sized(c, base, room, lengths, n, ts, hdr, hlen, True, True, False)
    return fill_sized(c, base, room, lengths, n, ts, hdr, hlen, True, False, False)


cdef inline uint32_t fill_frames_at(
        cycle_t *c, uint8_t **ptrs, const uint32_t *room, uint32_t *lengths, uint32_t *held,
        uint32_t n, uint64_t ts, const uint8_t *hdr, uint32_t hlen, bint zeros,
        bint track, bint fixed, bint single, const dst_t *dsts) noexcept nogil:
    """Generator.fill_at's loop (``track``: ``held`` is kept, zeros only;
    ``fixed``: unstamped frames, and a buffer ``held`` says holds one of
    this size is sent as it is; ``single``: one frame size; ``dsts``: the
    flows' destinations, or NULL).  The cycles in
    plain locals: with the frames' stores counted as aliasing everything,
    fields reached through ``c`` would be reloaded per frame."""
    cdef uint32_t i = 0, size = c.sizes[c.si], flow, si = c.si
    cdef const uint32_t *flows = c.flows
    cdef const uint32_t *sizes = c.sizes
    cdef uint64_t *seqs = c.seqs
    cdef uint32_t cursor = c.cursor, nflows = c.nflows, nsizes = c.nsizes
    cdef const uint8_t *t = hdr + si * HDR_MAX
    cdef uint64_t seq
    while i < n:
        if not single:
            size = sizes[si]
            t = hdr + si * HDR_MAX
        if size > room[i]:
            break
        if not single:
            si += 1
            if si == nsizes:
                si = 0
        if fixed:       # no sequence numbers
            flow = next_flow(flows, nflows, &cursor)
            if not track:
                write_fixed(ptrs[i], t, hlen, size, flow, True, dsts)
            elif held[i] != size:
                # (the flow of its first frame stays a buffer's, unless
                # flows have destinations of their own: then each frame
                # takes its flow's port and destination)
                write_fixed(ptrs[i], t, hlen, size, flow, held[i] < size, dsts)
                held[i] = size
            elif dsts != NULL:
                set_flow(ptrs[i], t, hlen, flow, dsts)
            lengths[i] = size
            i += 1
            continue
        seq = next_seq(flows, nflows, &cursor, seqs, &flow)
        if not zeros:
            write_frame(ptrs[i], t, hlen, size, flow, seq, ts, False, True, dsts)
        elif not track:
            write_frame(ptrs[i], t, hlen, size, flow, seq, ts, True, True, dsts)
        elif held[i] >= size:
            write_frame(ptrs[i], t, hlen, size, flow, seq, ts, True, False, dsts)
        else:
            held[i] = size
            write_frame(ptrs[i], t, hlen, size, flow, seq, ts, True, True, dsts)
        lengths[i] = size
        i += 1
    c.cursor = cursor
    c.si = si
    return i


cdef inline uint32_t fill_sized_at(
        cycle_t *c, uint8_t **ptrs, const uint32_t *room, uint32_t *lengths, uint32_t *held,
        uint32_t n, uint64_t ts, const uint8_t *hdr, uint32_t hlen, bint zeros,
        bint track, bint fixed) noexcept nogil:
    """fill_frames_at() with one frame size, or several, as a constant
    (flows without destinations of their own)."""
    if c.nsizes == 1:
        return fill_frames_at(c, ptrs, room, lengths, held, n, ts, hdr, hlen, zeros, track,
                              fixed, True, NULL)
    return fill_frames_at(c, ptrs, room, lengths, held, n, ts, hdr, hlen, zeros, track,
                          fixed, False, NULL)


cdef inline uint32_t fill_kind_at(
        cycle_t *c, uint8_t **ptrs, const uint32_t *room, uint32_t *lengths, uint32_t *held,
        uint32_t n, uint64_t ts, const uint8_t *hdr, uint32_t hlen, bint zeros,
        bint fixed) noexcept nogil:
    """fill_sized_at() with the payload kind and whether ``held`` is kept
    (not NULL: zeros only) as constants."""
    if not zeros:
        return fill_sized_at(c, ptrs, room, lengths, NULL, n, ts, hdr, hlen, False, False, False)
    if fixed:
        if held != NULL:
            return fill_sized_at(c, ptrs, room, lengths, held, n, ts, hdr, hlen, True, True, True)
        return fill_sized_at(c, ptrs, room, lengths, NULL, n, ts, hdr, hlen, True, False, True)
    if held != NULL:
        return fill_sized_at(c, ptrs, room, lengths, held, n, ts, hdr, hlen, True, True, False)
    return fill_sized_at(c, ptrs, room, lengths, NULL, n, ts, hdr, hlen, True, False, False)


cdef void spread_destinations(dst_t *dsts, uint32_t flows, const uint8_t *first,
                              uint32_t step) noexcept nogil:
    """Flow f's destination, ``first`` + f * step (known not to wrap), and
    what it adds to a header's sum where the template holds ``first``: the
    new address's two 16-bit words plus the complements of the old's, in
    memory order (inet.pxd), folded."""
    cdef uint32_t f, a, base = ((<uint32_t>first[0] << 24) | (<uint32_t>first[1] << 16)
                                | (<uint32_t>first[2] << 8) | first[3])
    cdef uint16_t o1, o2, n1, n2
    cdef uint8_t b[4]
    memcpy(&o1, first, 2)
    memcpy(&o2, first + 2, 2)
    for f in range(flows):
        a = base + f * step
        b[0] = a >> 24
        b[1] = (a >> 16) & 0xFF
        b[2] = (a >> 8) & 0xFF
        b[3] = a & 0xFF
        memcpy(&dsts[f].addr, b, 4)
        memcpy(&n1, b, 2)
        memcpy(&n2, b + 2, 2)
        dsts[f].sum = inet_fold(<uint64_t>n1 + n2 + (o1 ^ 0xFFFF) + (o2 ^ 0xFFFF))


cdef class Generator:
    """Writes bursts of stamped frames.

    ``sizes``: frame sizes used in turn (one size, or a mix such as IMIX);
    a size is the L2 frame without FCS (ethernet) or the IP packet (ip mode).
    Each flow has its own sequence, starting at 0.  ``payload``: "pattern"
    (every byte checkable), "zeros", or "fixed": zeros and no stamp either,
    the same frame per size and flow again and again, so that a buffer that
    holds one need not be written again (a zero-copy slave sends it as it
    is); the receiver can count such frames only (Checker verify="count").
    ``dst_step``: flow f's frames go to ``dst_ip`` + f * dst_step (0: every
    flow to dst_ip), to spread the flows over a router's routes.
    """

    def __cinit__(self):
        self.seq = NULL
        self.sizes = NULL
        self.hdr = NULL
        self.dsts = NULL

    def __init__(self, sizes, *, bint ip_mode=False, uint32_t flows=1,
                 src_mac=b"\x02\0\0\0\0\x01", dst_mac=b"\xff" * 6,
                 src_ip=b"\xc6\x12\0\x01", dst_ip=b"\xc6\x13\0\x01",
                 uint32_t dst_step=0, payload="pattern"):
        cdef uint32_t i, l2 = 0 if ip_mode else ETH_HLEN
        cdef uint16_t csum
        sizes = [int(s) for s in sizes]
        if not sizes:
            raise GeneratorError("no frame sizes", "sizes")
        if not 1 <= flows <= MAX_FLOWS:
            raise GeneratorError("flows must be 1 to %d" % MAX_FLOWS, "flows")
        for s in sizes:
            if s < l2 + HEADER_BYTES or s - l2 > 65535:
                raise GeneratorError("frame size %d out of range (%d..%d)"
                                     % (s, l2 + HEADER_BYTES, l2 + 65535), "sizes")
        if payload not in ("pattern", "zeros", "fixed"):
            raise GeneratorError("payload must be 'pattern', 'zeros' or 'fixed'", "payload")
        self.zeros = payload != "pattern"
        self.fixed = payload == "fixed"
        self.ip_mode = ip_mode
        self.flows = flows
        eth = b"" if ip_mode else (_mac(dst_mac, "dst_mac") + _mac(src_mac, "src_mac")
                                   + b"\x08\x00")
        addrs = _ip4(src_ip, "src_ip") + _ip4(dst_ip, "dst_ip")
        if dst_step and int.from_bytes(addrs[4:], "big") + (flows - 1) * dst_step > 0xFFFFFFFF:
            raise GeneratorError("flow %d's destination would lie past 255.255.255.255 "
                                 "(dst_ip + flow * dst_step)" % (flows - 1), "dst_step")
        free(self.seq)
        free(self.sizes)
        free(self.hdr)
        free(self.dsts)
        self.dsts = NULL
        self.seq = <uint64_t *>calloc(flows, sizeof(uint64_t))
        self.sizes = <uint32_t *>calloc(len(sizes), sizeof(uint32_t))
        self.hdr = <uint8_t *>calloc(len(sizes), HDR_MAX)
        if self.seq == NULL or self.sizes == NULL or self.hdr == NULL:
            raise MemoryError()
        self.dst_step = dst_step if flows > 1 else 0
        if self.dst_step:
            self.dsts = <dst_t *>calloc(flows, sizeof(dst_t))
            if self.dsts == NULL:
                raise MemoryError()
            spread_destinations(self.dsts, flows, <const uint8_t *>addrs + 4, dst_step)
        self.nsizes = len(sizes)
        self.size_pos = 0
        self.hlen = l2 + IP_HLEN + UDP_HLEN
        for i in range(self.nsizes):
            self.sizes[i] = sizes[i]
            # IPv4: DF, TTL 64, UDP, id and checksum written per frame; UDP
            # checksum 0; the source port is flow 0's
            ip_len = sizes[i] - l2
            t = (eth + bytes([0x45, 0]) + ip_len.to_bytes(2, "big") + b"\0\0\x40\0\x40\x11\0\0"
                 + addrs + SPORT_BASE.to_bytes(2, "big") + UDP_PORT.to_bytes(2, "big")
                 + (ip_len - IP_HLEN).to_bytes(2, "big") + b"\0\0")
            memcpy(self.hdr + i * HDR_MAX, <const char *>t, self.hlen)
            csum = inet_checksum(self.hdr + i * HDR_MAX + l2, IP_HLEN)
            memcpy(self.hdr + i * HDR_MAX + l2 + 10, &csum, 2)
        self.max_size = max(sizes)

    def __dealloc__(self):
        free(self.seq)
        free(self.sizes)
        free(self.hdr)
        free(self.dsts)

    def destination(self, uint32_t flow):
        """The IPv4 destination of ``flow``'s frames (4 bytes)."""
        cdef uint32_t hl = ETH_HLEN if not self.ip_mode else 0
        if flow >= self.flows:
            raise IndexError("flow out of range")
        if self.dsts != NULL:
            return (<char *>&self.dsts[flow].addr)[:4]
        return (<char *>self.hdr + hl + 16)[:4]

    def sequence(self, uint32_t flow):
        """The next sequence number of ``flow``."""
        if flow >= self.flows:
            raise IndexError("flow out of range")
        return self.seq[flow]

    def set_sequence(self, uint32_t flow, uint64_t seq):
        """Make ``seq`` the next sequence number of ``flow`` (a worker that
        takes over a dead one's flows continues where the wire left off)."""
        if flow >= self.flows:
            raise IndexError("flow out of range")
        self.seq[flow] = seq

    def fill(self, buf, lengths, uint32_t n, flows, uint32_t cursor=0,
             bint headers_only=False):
        """Write ``n`` frames back to back into ``buf``, their sizes into
        ``lengths``; frame i belongs to flow ``flows[(cursor + i) % len(flows)]``.
        Stops early when ``buf`` is full.  Returns (frames, bytes).

        ``headers_only`` (zeros payload): the caller knows the payload bytes
        of these frames are zeros already (a zeroed buffer that only ever held
        frames of this generator, of this one size at these offsets); only
        headers and stamps are written (payload "fixed": headers only, what
        would be the stamp being zeros too)."""
        cdef bint payload = not (headers_only and self.zeros)
        cdef uint32_t nflows, i = 0
        cdef uint64_t off = 0, room
        cdef uint8_t *base
        cdef uint32_t *lens
        cdef const uint32_t *fl
        cdef views_t b
        b.n = 0
        try:
            get_bytes(&b, buf, True)
            get_u32(&b, lengths, True)
            try:
                get_u32(&b, flows, False)
            except ValueError as e:     # get_lengths names the argument "lengths"
                raise ValueError(str(e).replace("lengths", "flows", 1)) from None
            base = <uint8_t *>b.v[0].buf
            room = <uint64_t>b.v[0].len
            lens = <uint32_t *>b.v[1].buf
            if n > u32_count(&b.v[1]):
                n = u32_count(&b.v[1])
            fl = <const uint32_t *>b.v[2].buf
            nflows = u32_count(&b.v[2])
            if n == 0 or room == 0:
                return 0, 0
            if nflows == 0:
                raise ValueError("no flows")
            for i in range(nflows):
                if fl[i] >= self.flows:
                    raise ValueError("flow %d out of range" % fl[i])
            with nogil:
                i, off = self.fill_raw(base, room, lens, n, fl, nflows, cursor % nflows,
                                       payload, now_ns())
        finally:
            release_views(&b)
        return i, off

    cdef (uint32_t, uint64_t) fill_raw(self, uint8_t *base, uint64_t room, uint32_t *lengths,
                                       uint32_t n, const uint32_t *flows, uint32_t nflows,
                                       uint32_t cursor, bint payload,
                                       uint64_t ts) noexcept nogil:
        """fill() on raw pointers."""
        cdef uint32_t i
        cdef uint64_t off
        cdef cycle_t c = cycle_of(self, flows, nflows, cursor)
        # header length, payload kind and one-or-several sizes as constants:
        # the compiler makes a loop for each (and one loop, deciding those
        # per frame, for flows with destinations of their own)
        if self.dsts != NULL:
            i, off = fill_frames(&c, base, room, lengths, n, ts, self.hdr, self.hlen,
                                 self.zeros, payload, self.fixed, False, self.dsts)
        elif self.hlen == ETH_HLEN + IP_HLEN + UDP_HLEN:
            i, off = fill_kind(&c, base, room, lengths, n, ts, self.hdr,
                               ETH_HLEN + IP_HLEN + UDP_HLEN, self.zeros, payload, self.fixed)
        else:
            i, off = fill_kind(&c, base, room, lengths, n, ts, self.hdr, IP_HLEN + UDP_HLEN,
                               self.zeros, payload, self.fixed)
        self.size_pos = c.si
        return i, off

    cdef uint32_t fill_at(self, uint8_t **ptrs, const uint32_t *room, uint32_t *lengths,
                          uint32_t *held, uint32_t n, const uint32_t *flows, uint32_t nflows,
                          uint32_t cursor, uint64_t ts) noexcept nogil:
        """Frame i into its own buffer ``ptrs[i]`` of ``room[i]`` bytes (the
        frames of a zero-copy burst, written in place); stops before a frame
        its buffer cannot hold.  Returns the frames written, their sizes in
        ``lengths``.  ``held`` (NULL: nothing known): ``held[i]`` bytes of
        ``ptrs[i]`` are a zeros-payload frame written here before, so a
        zeros frame no longer than that needs its headers and stamp only (a
        fixed one of that size, nothing); updated to what each buffer holds
        after."""
        cdef uint32_t i, k
        cdef cycle_t c = cycle_of(self, flows, nflows, cursor)
        # header length, payload kind and whether ``held`` is kept as
        # constants: the compiler makes a loop for each (and, for flows with
        # destinations of their own, one for the DUT cells' tester, fixed
        # Ethernet frames of one size in held buffers, and one deciding
        # those per frame for the rest)
        if self.dsts != NULL:
            if (self.fixed and held != NULL and c.nsizes == 1
                    and self.hlen == ETH_HLEN + IP_HLEN + UDP_HLEN):
                i = fill_frames_at(&c, ptrs, room, lengths, held, n, ts, self.hdr,
                                   ETH_HLEN + IP_HLEN + UDP_HLEN, True, True, True, True,
                                   self.dsts)
            else:
                i = fill_frames_at(&c, ptrs, room, lengths, held, n, ts, self.hdr, self.hlen,
                                   self.zeros, held != NULL and self.zeros, self.fixed, False,
                                   self.dsts)
        elif self.hlen == ETH_HLEN + IP_HLEN + UDP_HLEN:
            i = fill_kind_at(&c, ptrs, room, lengths, held, n, ts, self.hdr,
                             ETH_HLEN + IP_HLEN + UDP_HLEN, self.zeros, self.fixed)
        else:
            i = fill_kind_at(&c, ptrs, room, lengths, held, n, ts, self.hdr,
                             IP_HLEN + UDP_HLEN, self.zeros, self.fixed)
        if held != NULL and not self.zeros:
            for k in range(i):
                held[k] = 0             # a pattern frame there now
        self.size_pos = c.si
        return i

    cdef void restamp_raw(self, uint8_t *base, const uint32_t *lengths, uint32_t n,
                          uint64_t ts) noexcept nogil:
        """restamp() on raw pointers: frames made by fill_raw, packed from ``base``."""
        cdef uint32_t i, stamp = self.hlen + 12
        cdef uint64_t off = 0
        if self.fixed:
            return                      # no stamps
        for i in range(n):
            if lengths[i] >= stamp + 8:
                memcpy(base + off + stamp, &ts, 8)
            off += lengths[i]

    def restamp(self, buf, lengths):
        """Write the current time into frames made by fill() that are still
        waiting to go out (their transmit ring was full)."""
        cdef uint32_t i = 0, n
        cdef uint64_t off = 0, room
        cdef uint8_t *base
        cdef const uint32_t *lens
        cdef views_t b
        b.n = 0
        try:
            get_bytes(&b, buf, True)
            get_u32(&b, lengths, False)
            base = <uint8_t *>b.v[0].buf
            room = <uint64_t>b.v[0].len
            lens = <const uint32_t *>b.v[1].buf
            n = u32_count(&b.v[1])
            with nogil:
                while i < n and off + lens[i] <= room:      # the frames buf holds
                    off += lens[i]
                    i += 1
                self.restamp_raw(base, lens, i, now_ns())
        finally:
            release_views(&b)


def span(lengths, uint32_t first, uint32_t n):
    """Bytes of frames first..first+n-1 of a packed burst."""
    cdef uint64_t s = 0, end = <uint64_t>first + n
    cdef uint32_t i
    cdef const uint32_t *lens
    cdef views_t b
    b.n = 0
    get_u32(&b, lengths, False)
    lens = <const uint32_t *>b.v[0].buf
    if end > u32_count(&b.v[0]):
        end = u32_count(&b.v[0])
    for i in range(first, <uint32_t>end):
        s += lens[i]
    release_views(&b)
    return s


cdef struct tally_t:         # a burst's results, kept in locals while it is checked
    flow_t **flows          # the checker's flow table and latency histogram: in
    uint64_t *hist          # locals, the compiler need not reload them after a store
    uint64_t now
    uint64_t lat_sum
    uint64_t lat_min
    uint64_t lat_max
    # The current run of good frames with one timestamp (a sender stamps a
    # whole burst with one): they share a latency, so its bucket is worked
    # out once a run and the histogram, sum, minimum and maximum take the
    # run at once (tally_flush).  At the start: the empty run of timestamp
    # 0, whose latency is ``now``.
    uint64_t run_ts
    uint64_t run_lat
    uint64_t run            # frames in the run
    uint32_t run_bucket
    # what the headers of a frame of ``length`` bytes hold, in memory order:
    # the last frame's (a burst's frames mostly have one size)
    uint32_t length
    uint32_t ip_w0          # version and IHL, total length (TOS masked out)
    uint32_t udp_len        # UDP length


cdef inline uint64_t load64(const uint8_t *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef inline uint32_t load16(const uint8_t *p) noexcept nogil:
    cdef uint16_t v
    memcpy(&v, p, 2)
    return v


cdef inline uint32_t load32(const uint8_t *p) noexcept nogil:
    cdef uint32_t v
    memcpy(&v, p, 4)
    return v


cdef inline uint32_t bswap16(uint32_t v) noexcept nogil:
    """The low 16 bits of ``v`` as they lie in memory in network order, read
    as a host integer."""
    return __builtin_bswap16(<uint16_t>v)


cdef inline bint fast_good(Checker self, const uint8_t *p, uint32_t length, uint32_t l2,
                           int level, tally_t *t) noexcept nogil:
    """The usual frame (ours, IPv4 without options, sound, next in its flow's
    sequence), checked and counted in one pass; False for any other frame,
    having changed nothing, so that check_one() decides it.  ``level``
    (VERIFY_FULL, _STAMP or _SEQ) says what is checked: at VERIFY_SEQ the
    stamp alone, where gen puts it, and no header.

    ``p`` may be a peer's shared buffer that changes under us: each header
    word is read once into a local and every decision is taken on the
    locals; the payload check reads only within ``length`` (our copy of the
    descriptor's), so whatever the peer writes meanwhile can make a frame
    look damaged, never make us read outside it.  The checks are word
    compares: the IPv4 header as five 32-bit words (version, length, total
    length and protocol picked out of them, and their checksum), the UDP
    ports as one 32-bit word against the flow's, the IP total length and
    the UDP length against what ``t`` worked out for this frame length,
    the stamp as three 64-bit loads (magic and flow from the first, the
    sequence number compared with the flow's next in one go).  The
    latency goes into the histogram and ``t``; the checker's counters are
    left to the caller (tally_end)."""
    cdef const uint8_t *ip = p + l2
    cdef const uint8_t *st = ip + IP_HLEN + UDP_HLEN
    cdef uint32_t avail = length - l2, w0, w2, magic
    cdef uint64_t head, seq, ts, lat, s
    cdef flow_t *f
    # l2 + IP_HLEN + UDP_HLEN + STAMP_LEN <= length <= l2 + 0xffff, as one compare
    if length - (l2 + IP_HLEN + UDP_HLEN + STAMP_LEN) > 0xffff - (IP_HLEN + UDP_HLEN + STAMP_LEN):
        return False
    head = load64(st)                               # magic u16, flow u16, seq low half
    seq = load64(st + 4)
    ts = load64(st + 12)
    f = t.flows[(head >> 16) & 0xffff]
    magic = <uint32_t>(head & 0xffff)
    if (f == NULL or seq != f.next or ts < f.newest
            or (magic | (STAMP_MAGIC ^ STAMP_MAGIC_ZEROS)) != STAMP_MAGIC_ZEROS):
        return False
    if level != VERIFY_SEQ:
        if l2 and load16(p + 12) != 0x0008:
            return False
        if length != t.length:
            t.length = length
            t.ip_w0 = 0x45 | (bswap16(avail) << 16)
            t.udp_len = bswap16(avail - IP_HLEN)
        w0 = load32(ip)                 # version/IHL, TOS, total length
        w2 = load32(ip + 8)             # TTL, protocol, checksum
        # The header's ones' complement sum must be 0xffff.  That sum of
        # 16-bit words folds their plain sum S modulo 0xffff (2**16 = 1 mod
        # 0xffff), mapping a non-zero multiple of 0xffff to 0xffff; adding
        # 32-bit words instead changes S by multiples of 0xffff only; S > 0
        # (version byte, checked).  So: S % 0xffff == 0, tested as a
        # multiply and a compare.
        s = <uint64_t>w0 + load32(ip + 4) + w2 + load32(ip + 12) + load32(ip + 16)
        if ((w0 & 0xffff00ffU) != t.ip_w0 or (w2 & 0xff00) != (17 << 8)
                or load32(ip + IP_HLEN) != f.ports                  # UDP ports
                or load16(ip + IP_HLEN + 4) != t.udp_len            # UDP length
                or not sums_to_all_ones(s)):
            return False
    if level == VERIFY_FULL and not payload_ok(
            st + STAMP_LEN, avail - IP_HLEN - UDP_HLEN - STAMP_LEN,
            <uint16_t>magic, seq, <uint16_t>(head >> 16)):
        return False
    f.newest = ts
    if unlikely(ts != t.run_ts):
        tally_flush(t)
        t.run_ts = ts
        t.run_lat = lat = t.now - ts if t.now > ts else 0
        t.run_bucket = lat_bucket(lat)
    t.run += 1
    f.next = seq + 1
    f.seen[(seq % WINDOW) >> 6] |= 1ULL << (seq & 63)
    return True


cdef inline void tally_start(Checker self, tally_t *t, uint64_t now) noexcept nogil:
    t.flows = self.flow
    t.hist = self.lat_hist
    t.now = now if now else now_ns()
    t.lat_sum = 0
    t.length = 0            # no frame is that short: the first one sets them
    t.ip_w0 = t.udp_len = 0
    t.lat_min = self.lat_min
    t.lat_max = self.lat_max
    t.run_ts = 0
    t.run_lat = t.now
    t.run_bucket = lat_bucket(t.now)
    t.run = 0


cdef inline void tally_flush(tally_t *t) noexcept nogil:
    """The current run of one latency into the histogram, sum, minimum and
    maximum; the run is empty after."""
    if t.run:
        t.hist[t.run_bucket] += t.run
        t.lat_sum += t.run_lat * t.run
        if t.run_lat < t.lat_min:
            t.lat_min = t.run_lat
        if t.run_lat > t.lat_max:
            t.lat_max = t.run_lat
        t.run = 0


cdef inline void tally_end(Checker self, tally_t *t, uint32_t frames, uint64_t nbytes,
                           uint32_t fast) noexcept nogil:
    """The burst's results into the checker: ``frames`` looked at, of which
    ``fast`` passed fast_good() (check_one() counted the others itself)."""
    tally_flush(t)
    self.packets += frames
    self.bytes += nbytes
    self.received += fast
    self.lat_sum += t.lat_sum
    if t.lat_min < self.lat_min:
        self.lat_min = t.lat_min
    if t.lat_max > self.lat_max:
        self.lat_max = t.lat_max


cdef inline uint32_t check_frames(Checker self, const uint8_t *base, const uint32_t *lengths,
                                  uint32_t n, uint32_t l2, int level,
                                  uint64_t now) noexcept nogil:
    """Checker.check_packed for ``l2`` bytes of Ethernet header (0 or 14) at
    ``level`` (not VERIFY_COUNT: count_packed): fast_good() for each frame,
    and check_one() for those it does not take."""
    cdef uint32_t i, good = 0, slow = 0, length
    cdef uint64_t off = 0
    cdef const uint8_t *p
    cdef tally_t t
    tally_start(self, &t, now)
    for i in range(n):
        p = base + off
        length = lengths[i]
        off += length
        if not fast_good(self, p, length, l2, level, &t):
            slow += 1
            if self.check_one(p, length, t.now) == GOOD:
                good += 1
    tally_end(self, &t, n, off, n - slow)
    return good + n - slow


cdef inline uint32_t check_gathered(Checker self, Queue q, uint32_t n, uint8_t *scratch,
                                    uint64_t room, uint32_t l2, int level) noexcept nogil:
    """Checker.check_in_place for ``l2`` bytes of Ethernet header at
    ``level`` (not VERIFY_COUNT: count_gathered).  A frame in one buffer goes
    to fast_good() where it lies; any other (chained, or one check_one()
    must decide) is copied into ``scratch`` first, so that the general
    check, which reads fields more than once, never reads memory the peer
    can change.  A frame longer than ``scratch`` is dropped "frame too
    long", as rx_copy() drops one longer than its buffer."""
    cdef uint32_t i, s, skipped = 0, slow = 0, length, frames
    cdef uint64_t nbytes = 0, off
    cdef frame_t *fr
    cdef frame_t *table = q.frames     # in locals: the checker's stores may alias q
    cdef const seg_t *segs = q.segs
    cdef const uint8_t *p
    cdef tally_t t
    tally_start(self, &t, 0)
    # Only the rare frames are counted in the loop (skipped: dropped by the
    # ring or here; slow: decided by check_one()), so that the usual one
    # keeps fewer values live.
    for i in range(n):
        fr = &table[i]
        if unlikely(fr.drop >= 0):
            skipped += 1
            continue
        length = <uint32_t>fr.length
        if fr.nsegs == 1:
            p = <const uint8_t *>segs[fr.first_seg].ptr
        elif length > room:
            fr.drop = DROP_TOO_LONG
            skipped += 1
            continue
        else:
            off = 0
            for s in range(fr.first_seg, fr.first_seg + fr.nsegs):
                memcpy(scratch + off, segs[s].ptr, segs[s].len)
                off += segs[s].len
            p = scratch
        if not fast_good(self, p, length, l2, level, &t):
            if p != scratch:
                if length > room:
                    fr.drop = DROP_TOO_LONG
                    skipped += 1
                    continue
                memcpy(scratch, p, length)
            self.check_one(scratch, length, t.now)
            slow += 1
        nbytes += length
    frames = n - skipped
    tally_end(self, &t, frames, nbytes, frames - slow)
    return frames


cdef inline uint32_t check_usual(Checker self, Queue q, uint32_t maxf, uint8_t *scratch,
                                 uint64_t room, uint32_t l2, int level) noexcept nogil:
    """Checker.check_usual_in_place for ``l2`` bytes of Ethernet header at
    ``level`` (not VERIFY_COUNT: count_usual): the usual ring frames at the
    front of q (one slot, a good buffer: ring.usual_rx_in), at most ``maxf``,
    each checked where it lies (fast_good(), or check_one() on a copy in
    ``scratch``) and consumed at once (q.rx_consumed), without gather's
    tables.  It stops at the first other frame, or one that must be copied
    and is longer than ``scratch``: gather and check_gathered() take those.
    Returns the frames taken, every one delivered."""
    cdef side_t r = side_of(q)
    cdef uint32_t n = q.rx_ready(), k = 0, j, m, slow = 0, length, most = q.max_frame
    cdef bint slave = q.slave
    cdef uint64_t nbytes = 0
    cdef const uint8_t *p
    cdef tally_t t
    cdef run_t u
    if maxf < n:
        n = maxf
    if n == 0:
        return 0
    tally_start(self, &t, 0)
    while k < n:
        m = min(n - k, run_from(&r, k, &u))     # as far as the ring's end
        j = 0
        while j < m:
            p = <const uint8_t *>usual_rx_in(&r, &u, j, most, slave, &length)
            if p == NULL:
                break
            if not fast_good(self, p, length, l2, level, &t):
                if length > room:
                    break
                memcpy(scratch, p, length)
                self.check_one(scratch, length, t.now)
                slow += 1
            nbytes += length
            j += 1
        k += j
        if j < m:
            break
    tally_end(self, &t, k, nbytes, k - slow)
    if k:
        q.rx_consumed(k, nbytes)
    return k


# VERIFY_COUNT: the three loops above, reading no frame

cdef inline uint32_t count_packed(Checker self, const uint32_t *lengths,
                                  uint32_t n) noexcept nogil:
    """check_frames() at VERIFY_COUNT: frames and bytes; none is good."""
    cdef uint32_t i
    cdef uint64_t nbytes = 0
    for i in range(n):
        nbytes += lengths[i]
    self.packets += n
    self.bytes += nbytes
    return 0


cdef inline uint32_t count_gathered(Checker self, Queue q, uint32_t n) noexcept nogil:
    """check_gathered() at VERIFY_COUNT: no frame is read, so none is
    copied, whatever its length or chain; the ring's drops are skipped."""
    cdef uint32_t i, frames = 0
    cdef uint64_t nbytes = 0
    cdef const frame_t *table = q.frames
    for i in range(n):
        if table[i].drop < 0:
            nbytes += <uint32_t>table[i].length
            frames += 1
    self.packets += frames
    self.bytes += nbytes
    return frames


cdef inline uint32_t count_usual(Checker self, Queue q, uint32_t maxf) noexcept nogil:
    """check_usual() at VERIFY_COUNT: each usual frame's descriptor is
    checked by ring.usual_rx_in and its length counted; the frame is not read."""
    cdef side_t r = side_of(q)
    cdef uint32_t n = q.rx_ready(), k = 0, j, m, length, most = q.max_frame
    cdef bint slave = q.slave
    cdef uint64_t nbytes = 0
    cdef run_t u
    if maxf < n:
        n = maxf
    while k < n:
        m = min(n - k, run_from(&r, k, &u))     # as far as the ring's end
        j = 0
        while j < m and usual_rx_in(&r, &u, j, most, slave, &length) != NULL:
            nbytes += length
            j += 1
        k += j
        if j < m:
            break
    if k:
        self.packets += k
        self.bytes += nbytes
        q.rx_consumed(k, nbytes)
    return k


cdef class Checker:
    """Verifies bursts of received frames and keeps the counters.
    ``verify``, what is read of each frame (VERIFY_LEVELS):

    - "full": headers, stamp and every payload byte;
    - "stamp": headers and stamp (the payload is not read);
    - "seq": the stamp alone, where gen puts it (after Ethernet, IPv4
      without options and UDP): magic, flow, sequence and timestamp, so
      loss, order, duplicates and latency are still counted, but a frame
      is ours by its magic and never counts as corrupt;
    - "count": nothing; frames and bytes are counted, none is good, lost or
      late.  (What DPDK's rxonly does: the cheapest receiver.)"""

    def __cinit__(self, bint ip_mode=False, str verify="full"):
        if verify not in VERIFY_LEVELS:
            raise ValueError("verify %r: one of %s" % (verify, ", ".join(VERIFY_LEVELS)))
        self.ip_mode = ip_mode
        self.level = VERIFY_LEVELS.index(verify)
        self.flow = <flow_t **>calloc(MAX_FLOWS, sizeof(flow_t *))
        if self.flow == NULL:
            raise MemoryError()
        self.lat_min = <uint64_t>-1

    @property
    def verify(self):
        """What is read of each frame: one of VERIFY_LEVELS."""
        return VERIFY_LEVELS[self.level]

    def __dealloc__(self):
        cdef uint32_t i
        if self.flow != NULL:
            for i in range(MAX_FLOWS):
                free(self.flow[i])
            free(self.flow)

    def check(self, buf, lengths, uint32_t n=0xffffffff, uint64_t now=0):
        """Check the first ``n`` frames packed back to back in ``buf`` (the
        layout rx_into() writes).  ``now``: when they were received,
        CLOCK_MONOTONIC ns, the time their latencies count from (0: now).
        Returns how many were good."""
        cdef uint32_t i, good = 0
        cdef uint64_t off = 0
        cdef const uint32_t *lens
        cdef views_t b
        b.n = 0
        try:
            get_bytes(&b, buf, False)
            get_u32(&b, lengths, False)
            lens = <const uint32_t *>b.v[1].buf
            if n > u32_count(&b.v[1]):
                n = u32_count(&b.v[1])
            for i in range(n):
                off += lens[i]
            if off > <uint64_t>b.v[0].len:
                raise ValueError("lengths add up to more than the buffer")
            if n:
                with nogil:
                    good = self.check_packed(<const uint8_t *>b.v[0].buf, lens, n, now)
        finally:
            release_views(&b)
        return good

    def drain(self, Queue q not None, buf, lengths, uint32_t bursts):
        """Receive and check up to ``bursts`` bursts from receive queue
        ``q`` in one call (``q.rx_batch(buf, lengths)`` then check(), looped
        in C): the per-call cost of Python is paid once for all of them.
        Stops early at a burst that finds the ring empty.  Returns the
        frames received."""
        cdef uint32_t n, total = 0, maxf
        cdef uint64_t room
        cdef uint8_t *base
        cdef uint32_t *lens
        cdef views_t b
        if q.tx:
            raise ValueError("not a receive queue")
        b.n = 0
        try:
            get_bytes(&b, buf, True)
            get_u32(&b, lengths, True)
            base = <uint8_t *>b.v[0].buf
            room = <uint64_t>b.v[0].len
            lens = <uint32_t *>b.v[1].buf
            maxf = u32_count(&b.v[1])
            if maxf and room:
                with nogil:
                    while bursts:
                        n = q.rx_copy(base, room, lens, maxf)
                        if n == 0:
                            break
                        self.check_packed(base, lens, n, 0)
                        total += n
                        bursts -= 1
        finally:
            release_views(&b)
        return total

    def drain_in_place(self, Queue q not None, scratch, uint32_t max_frames, uint32_t bursts):
        """Receive and check up to ``bursts`` bursts of up to ``max_frames``
        frames from receive queue ``q`` in one call, each frame where it lies
        in the ring's buffer (either role: a slave reads its own buffers, a
        master the slave's, and neither writes them), then consume the burst
        (a slave's buffers go straight back to its pool).  ``scratch``: room
        for a frame that must be copied to be checked (chained, or not the
        usual frame); a longer one is dropped "frame too long".  Stops early
        at a burst that finds the ring empty.  Returns the frames received."""
        cdef uint32_t n, k, total = 0
        cdef uint64_t room
        cdef uint8_t *base
        cdef views_t b
        if q.tx:
            raise ValueError("not a receive queue")
        if max_frames > q.size:
            max_frames = q.size
        b.n = 0
        try:
            get_bytes(&b, scratch, True)
            base = <uint8_t *>b.v[0].buf
            room = <uint64_t>b.v[0].len
            if room == 0:
                raise ValueError("no scratch buffer")
            if max_frames:
                with nogil:
                    while bursts:
                        # the usual frames in one pass, the rest of the burst as gathered
                        k = self.check_usual_in_place(q, max_frames, base, room)
                        n = 0
                        if k < max_frames:
                            n = q.gather(max_frames - k)
                            if n:
                                total += self.check_in_place(q, n, base, room)
                                q.commit(n, False)
                        if k + n == 0:
                            break
                        total += k
                        bursts -= 1
        finally:
            release_views(&b)
        return total

    # The three loops below take the header length and the level as
    # constants: the compiler makes a loop for each.

    cdef uint32_t check_usual_in_place(self, Queue q, uint32_t maxf, uint8_t *scratch,
                                       uint64_t room) noexcept nogil:
        """The usual frames at the front of receive queue ``q``, checked
        where they lie and consumed; returns how many (check_usual)."""
        cdef int level = self.level
        if level == VERIFY_COUNT:
            return count_usual(self, q, maxf)
        if self.ip_mode:
            if level == VERIFY_FULL:
                return check_usual(self, q, maxf, scratch, room, 0, VERIFY_FULL)
            if level == VERIFY_STAMP:
                return check_usual(self, q, maxf, scratch, room, 0, VERIFY_STAMP)
            return check_usual(self, q, maxf, scratch, room, 0, VERIFY_SEQ)
        if level == VERIFY_FULL:
            return check_usual(self, q, maxf, scratch, room, ETH_HLEN, VERIFY_FULL)
        if level == VERIFY_STAMP:
            return check_usual(self, q, maxf, scratch, room, ETH_HLEN, VERIFY_STAMP)
        return check_usual(self, q, maxf, scratch, room, ETH_HLEN, VERIFY_SEQ)

    cdef uint32_t check_in_place(self, Queue q, uint32_t n, uint8_t *scratch,
                                 uint64_t room) noexcept nogil:
        """Check the ``n`` frames q.gather() found, where they lie; returns
        the frames delivered (a dropped one is left to q.commit() to count)."""
        cdef int level = self.level
        if level == VERIFY_COUNT:
            return count_gathered(self, q, n)
        if self.ip_mode:
            if level == VERIFY_FULL:
                return check_gathered(self, q, n, scratch, room, 0, VERIFY_FULL)
            if level == VERIFY_STAMP:
                return check_gathered(self, q, n, scratch, room, 0, VERIFY_STAMP)
            return check_gathered(self, q, n, scratch, room, 0, VERIFY_SEQ)
        if level == VERIFY_FULL:
            return check_gathered(self, q, n, scratch, room, ETH_HLEN, VERIFY_FULL)
        if level == VERIFY_STAMP:
            return check_gathered(self, q, n, scratch, room, ETH_HLEN, VERIFY_STAMP)
        return check_gathered(self, q, n, scratch, room, ETH_HLEN, VERIFY_SEQ)

    cdef uint32_t check_packed(self, const uint8_t *base, const uint32_t *lengths,
                               uint32_t n, uint64_t now) noexcept nogil:
        """check() on raw pointers; the lengths are known to fit."""
        cdef int level = self.level
        if level == VERIFY_COUNT:
            return count_packed(self, lengths, n)
        if self.ip_mode:
            if level == VERIFY_FULL:
                return check_frames(self, base, lengths, n, 0, VERIFY_FULL, now)
            if level == VERIFY_STAMP:
                return check_frames(self, base, lengths, n, 0, VERIFY_STAMP, now)
            return check_frames(self, base, lengths, n, 0, VERIFY_SEQ, now)
        if level == VERIFY_FULL:
            return check_frames(self, base, lengths, n, ETH_HLEN, VERIFY_FULL, now)
        if level == VERIFY_STAMP:
            return check_frames(self, base, lengths, n, ETH_HLEN, VERIFY_STAMP, now)
        return check_frames(self, base, lengths, n, ETH_HLEN, VERIFY_SEQ, now)

    cdef int check_one(self, const uint8_t *p, uint32_t length, uint64_t now) noexcept nogil:
        """One frame, every case (the caller counts packets and bytes), at
        VERIFY_FULL, _STAMP or _SEQ."""
        cdef const uint8_t *ip = p
        cdef const uint8_t *udp
        cdef const uint8_t *st
        cdef uint32_t ip_len, ihl, rest, avail = length
        cdef uint32_t at = (0 if self.ip_mode else ETH_HLEN) + IP_HLEN + UDP_HLEN
        cdef uint16_t magic, flow
        cdef uint64_t seq, ts
        if self.level == VERIFY_SEQ:
            # at ``at``, where gen puts the stamp; a frame is ours by its magic alone
            if length < at + STAMP_LEN:
                self.other += 1
                return OTHER
            st = p + at
            memcpy(&magic, st, 2)
            if magic != STAMP_MAGIC and magic != STAMP_MAGIC_ZEROS:
                self.other += 1
                return OTHER
            memcpy(&flow, st + 2, 2)
            memcpy(&seq, st + 4, 8)
            memcpy(&ts, st + 12, 8)
            return self.good(flow, seq, ts, now)
        if not self.ip_mode:
            if length < ETH_HLEN or get16(p + 12) != 0x0800:
                self.other += 1
                return OTHER
            ip = p + ETH_HLEN
            avail = length - ETH_HLEN
        if avail < IP_HLEN + UDP_HLEN or (ip[0] >> 4) != 4 or ip[9] != 17:
            self.other += 1
            return OTHER
        ihl = (ip[0] & 0x0f) * 4
        if ihl < IP_HLEN or avail < ihl + UDP_HLEN or get16(ip + ihl + 2) != UDP_PORT:
            self.other += 1
            return OTHER
        # Ours from here on: every failed check is corruption.
        udp = ip + ihl
        st = udp + UDP_HLEN
        ip_len = get16(ip + 2)
        if (ip_len != avail or inet_checksum(ip, ihl) != 0 or
                get16(udp + 4) != ip_len - ihl or ip_len < ihl + UDP_HLEN + STAMP_LEN):
            self.corrupt += 1
            return CORRUPT
        memcpy(&magic, st, 2)
        memcpy(&flow, st + 2, 2)
        memcpy(&seq, st + 4, 8)
        memcpy(&ts, st + 12, 8)
        if ((magic != STAMP_MAGIC and magic != STAMP_MAGIC_ZEROS) or
                get16(udp) != sport(flow)):
            self.corrupt += 1
            return CORRUPT
        rest = ip_len - ihl - UDP_HLEN - STAMP_LEN
        if self.level == VERIFY_FULL and not payload_ok(st + STAMP_LEN, rest, magic, seq, flow):
            # The stamp looks sound: the frame arrived, damaged (not lost).
            self.corrupt += 1
            self.track(flow, seq, ts)
            return CORRUPT
        return self.good(flow, seq, ts, now)

    cdef int good(self, uint16_t flow, uint64_t seq, uint64_t ts, uint64_t now) noexcept nogil:
        """A frame that passed check_one(): received, its latency, its sequence."""
        cdef flow_t *f
        cdef uint64_t lat
        self.received += 1
        lat = now - ts if now > ts else 0
        self.lat_hist[lat_bucket(lat)] += 1
        self.lat_sum += lat
        if lat < self.lat_min:
            self.lat_min = lat
        if lat > self.lat_max:
            self.lat_max = lat
        f = self.flow[flow]
        if f != NULL and seq == f.next and ts >= f.newest:     # in order: the usual case
            f.newest = ts
            f.next = seq + 1
            f.seen[(seq % WINDOW) >> 6] |= 1ULL << (seq & 63)
        else:
            self.track(flow, seq, ts)
        return GOOD

    cdef void track(self, uint16_t flow, uint64_t seq, uint64_t ts) noexcept nogil:
        cdef flow_t *f = self.flow[flow]
        cdef uint64_t s, word = (seq % WINDOW) >> 6, bit = 1ULL << (seq & 63)
        if f == NULL:
            f = <flow_t *>calloc(1, sizeof(flow_t))
            if f == NULL:
                return                          # no memory: no sequence tracking
            self.flow[flow] = f
            f.ports = flow_ports(flow)
        if seq < f.next and ts > f.newest:
            # Behind, yet stamped later than anything seen: a new sender run
            # counting from 0 again, not a late or repeated frame.
            self.resets += 1
            memset(f.seen, 0, sizeof(f.seen))
            f.next = 0
        if ts > f.newest:
            f.newest = ts
        if seq >= f.next:
            if seq - f.next >= WINDOW:
                memset(f.seen, 0, sizeof(f.seen))
            else:
                s = f.next
                while s < seq:
                    f.seen[(s % WINDOW) >> 6] &= ~(1ULL << (s & 63))
                    s += 1
            self.lost += seq - f.next
            f.next = seq + 1
        elif f.next - seq <= WINDOW and f.seen[word] & bit:
            self.duplicated += 1
            return
        else:
            # Late.  (Beyond the window a repeat looks the same: count it late.)
            self.reordered += 1
            if self.lost:
                self.lost -= 1
            if f.next - seq > WINDOW:
                return
        f.seen[word] |= bit

    def latency(self):
        """Latency in ns: min, mean, p50, p90, p99, p999, max (None if no frames)."""
        cdef uint64_t count = self.received, target, acc
        cdef uint32_t b
        if count == 0:
            return None
        out = {"min": self.lat_min, "mean": self.lat_sum // count, "max": self.lat_max}
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            target = <uint64_t>(q * count)
            if target < 1:
                target = 1
            acc = 0
            for b in range(LAT_BUCKETS):
                acc += self.lat_hist[b]
                if acc >= target:
                    break
            out[name] = min(lat_bucket_top(b), self.lat_max)
        return out

    def counters(self):
        return {"packets": self.packets, "bytes": self.bytes, "received": self.received,
                "lost": self.lost, "reordered": self.reordered,
                "duplicated": self.duplicated, "corrupt": self.corrupt,
                "other": self.other, "resets": self.resets}


    def export(self):
        """Everything this checker knows as bytes: the counters, the latency
        histogram and the sequence window of every flow it has seen.  A
        Checker in another process takes it in with merge(): that is how the
        results of worker processes are added up, and how a restarted worker
        carries on with its predecessor's flows."""
        cdef uint32_t b, f
        head = [self.packets, self.bytes, self.received, self.corrupt, self.other,
                self.lost, self.reordered, self.duplicated, self.resets,
                self.lat_min, self.lat_max, self.lat_sum]
        hist = [(b, self.lat_hist[b]) for b in range(LAT_BUCKETS) if self.lat_hist[b]]
        flows = [f for f in range(MAX_FLOWS) if self.flow[f] != NULL]
        parts = [_EXPORT_HEAD.pack(*head), _U64.pack(len(hist))]
        parts.extend(_PAIR.pack(b, n) for b, n in hist)
        parts.append(_U64.pack(len(flows)))
        for f in flows:
            parts.append(_U64.pack(f))
            parts.append((<char *>self.flow[f])[:sizeof(flow_t)])
        return b"".join(parts)

    def merge(self, state):
        """Add a state made by export(): counters and latency histograms add
        up (minimum and maximum combine); a flow this checker has not seen
        takes over the exported sequence window, one it has seen keeps its
        own (a flow lives in one worker, so merged states do not overlap)."""
        cdef const uint8_t[::1] v = state
        cdef uint64_t off, n, i, f
        cdef flow_t *fp
        head = _EXPORT_HEAD.unpack_from(state, 0)
        (self.packets, self.bytes, self.received, self.corrupt, self.other, self.lost,
         self.reordered, self.duplicated, self.resets) = [
            a + b for a, b in zip((self.packets, self.bytes, self.received, self.corrupt,
                                   self.other, self.lost, self.reordered, self.duplicated,
                                   self.resets), head[:9])]
        self.lat_min = min(self.lat_min, head[9])
        self.lat_max = max(self.lat_max, head[10])
        self.lat_sum += head[11]
        off = _EXPORT_HEAD.size
        n = _U64.unpack_from(state, off)[0]
        off += _U64.size
        for i in range(n):
            b, count = _PAIR.unpack_from(state, off)
            if b >= LAT_BUCKETS:
                raise ValueError("latency bucket %d out of range" % b)
            self.lat_hist[b] += count
            off += _PAIR.size
        n = _U64.unpack_from(state, off)[0]
        off += _U64.size
        if off + n * (_U64.size + sizeof(flow_t)) > <uint64_t>v.shape[0]:
            raise ValueError("truncated checker state")
        for i in range(n):
            f = _U64.unpack_from(state, off)[0]
            off += _U64.size
            if f >= MAX_FLOWS:
                raise ValueError("flow %d out of range" % f)
            if self.flow[f] == NULL:
                fp = <flow_t *>calloc(1, sizeof(flow_t))
                if fp == NULL:
                    raise MemoryError()
                memcpy(fp, &v[off], sizeof(flow_t))
                fp.ports = flow_ports(<uint16_t>f)
                self.flow[f] = fp
            off += sizeof(flow_t)


_EXPORT_HEAD = struct.Struct("=12Q")     # Checker.export(): the counters, in order
_U64 = struct.Struct("=Q")
_PAIR = struct.Struct("=QQ")             # latency bucket, count


def pcap_records(const uint8_t[::1] buf, const uint32_t[::1] lengths, uint32_t n,
                 uint8_t[::1] out, uint64_t ts_ns, uint32_t snaplen=262144):
    """Write pcap records (16-byte header in host order, microsecond time, then
    the frame cut to ``snaplen``) for the first ``n`` packed frames into
    ``out``; returns the bytes written.  ``out`` needs n * 16 + sum(lengths)."""
    cdef uint32_t i, cap
    cdef uint32_t hdr[4]
    cdef uint64_t off = 0, pos = 0, room = buf.shape[0], oroom = out.shape[0]
    cdef bint short = False
    if n > <uint32_t>lengths.shape[0]:
        n = lengths.shape[0]
    if n == 0:
        return 0
    hdr[0] = <uint32_t>(ts_ns // 1000000000ULL)
    hdr[1] = <uint32_t>((ts_ns % 1000000000ULL) // 1000)
    with nogil:
        for i in range(n):
            cap = lengths[i] if lengths[i] < snaplen else snaplen
            if off + lengths[i] > room or pos + PCAP_REC + cap > oroom:
                short = True
                break
            hdr[2] = cap
            hdr[3] = lengths[i]
            memcpy(&out[pos], hdr, PCAP_REC)
            memcpy(&out[pos + PCAP_REC], &buf[off], cap)
            pos += PCAP_REC + cap
            off += lengths[i]
    if short:
        raise ValueError("burst does not fit")
    return pos
