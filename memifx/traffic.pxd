cimport cython
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline uint64_t now_ns() noexcept nogil:
    """CLOCK_MONOTONIC in ns: the clock of the stamps (gen and sink)."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <uint64_t>ts.tv_sec * 1000000000ULL + <uint64_t>ts.tv_nsec
from memifx.ring cimport Queue

# Test traffic: what `memifx gen` writes and `memifx sink` checks.
cdef enum:
    ETH_HLEN = 14
    IP_HLEN = 20
    UDP_HLEN = 8
    STAMP_LEN = 20          # magic u16, flow u16, seq u64, timestamp u64
    STAMP_MAGIC = 0x584d    # "MX" in the first two payload bytes: a pattern follows
    STAMP_MAGIC_ZEROS = 0x5a4d  # "MZ": zeros follow
    UDP_PORT = 28024        # destination port of every stamped frame ("mx")
    SPORT_BASE = 1024       # UDP source port = SPORT_BASE + flow % SPORT_SPAN
    SPORT_SPAN = 64512
    MAX_FLOWS = 65536       # the flow id is a u16 in the stamp
    WINDOW = 1024           # per-flow sequence window of the checker (bits)
    WINDOW_WORDS = 16       # WINDOW / 64
    LAT_SUB_BITS = 6
    LAT_SUB = 64            # latency histogram: buckets per power of two (1 << LAT_SUB_BITS)
    LAT_BUCKETS = 64 + 58 * 64

cdef struct flow_t:
    uint64_t next           # highest sequence number seen + 1
    uint64_t newest         # latest timestamp seen (a sender stamps in sequence order)
    uint64_t seen[WINDOW_WORDS]  # bit (s % WINDOW): s in [next - WINDOW, next) arrived
    uint32_t ports          # its frames' UDP ports as they lie in memory (a host u32)


cdef enum:                  # what a Checker reads of each frame (memifx sink --verify)
    VERIFY_FULL = 0         # headers, stamp and every payload byte
    VERIFY_STAMP = 1        # headers and stamp
    VERIFY_SEQ = 2          # the stamp alone, where gen puts it
    VERIFY_COUNT = 3        # nothing: frames and bytes are counted

cdef enum:
    HDR_MAX = 48            # room for one header template (Ethernet + IPv4 + UDP = 42)

cdef struct dst_t:          # a flow's IPv4 destination, where flows go to several
    uint32_t addr           # the address as it lies in the header (a host u32)
    uint16_t sum            # what it adds to the header's sum against the template's
                            # (checksum_add's argument, memory order)

@cython.final           # direct (inlinable) calls to its cdef methods
cdef class Generator:
    cdef readonly bint ip_mode
    cdef readonly uint32_t flows
    cdef uint64_t *seq              # next sequence number, per flow
    cdef uint32_t *sizes            # frame sizes, used in turn
    cdef uint8_t *hdr               # per size: the headers of flow 0, sequence 0
    cdef dst_t *dsts                # per flow: its destination (NULL: the template's)
    cdef readonly uint32_t dst_step # flow f's destination: the template's + f * dst_step
    cdef uint32_t hlen              # bytes of each template
    cdef uint32_t nsizes
    cdef uint32_t size_pos
    cdef readonly uint32_t max_size
    cdef readonly bint zeros        # payload: zeros (else the pattern)
    cdef readonly bint fixed        # payload "fixed": zeros, and no stamp

    cdef (uint32_t, uint64_t) fill_raw(self, uint8_t *base, uint64_t room, uint32_t *lengths,
                                       uint32_t n, const uint32_t *flows, uint32_t nflows,
                                       uint32_t cursor, bint payload,
                                       uint64_t ts) noexcept nogil
    cdef uint32_t fill_at(self, uint8_t **ptrs, const uint32_t *room, uint32_t *lengths,
                          uint32_t *held, uint32_t n, const uint32_t *flows, uint32_t nflows,
                          uint32_t cursor, uint64_t ts) noexcept nogil
    cdef void restamp_raw(self, uint8_t *base, const uint32_t *lengths, uint32_t n,
                          uint64_t ts) noexcept nogil


@cython.final           # direct (inlinable) calls to its cdef methods
cdef class Checker:
    cdef readonly bint ip_mode
    cdef int level                  # VERIFY_*
    cdef flow_t **flow              # MAX_FLOWS entries, allocated on first sight
    cdef readonly uint64_t packets      # every frame looked at
    cdef readonly uint64_t bytes
    cdef readonly uint64_t received     # stamped frames that passed every check
    cdef readonly uint64_t corrupt      # ours (UDP port) but something is wrong
    cdef readonly uint64_t other        # not a stamped frame at all
    cdef readonly uint64_t lost         # sequence gaps not filled (yet)
    cdef readonly uint64_t reordered    # arrived after a later frame of its flow
    cdef readonly uint64_t duplicated
    cdef readonly uint64_t resets       # a flow started over (the sender restarted)
    cdef uint64_t lat_hist[LAT_BUCKETS]
    cdef uint64_t lat_min, lat_max, lat_sum

    cdef int check_one(self, const uint8_t *p, uint32_t length, uint64_t now) noexcept nogil
    cdef uint32_t check_packed(self, const uint8_t *base, const uint32_t *lengths,
                               uint32_t n, uint64_t now) noexcept nogil
    cdef uint32_t check_usual_in_place(self, Queue q, uint32_t maxf, uint8_t *scratch,
                                       uint64_t room) noexcept nogil
    cdef uint32_t check_in_place(self, Queue q, uint32_t n, uint8_t *scratch,
                                 uint64_t room) noexcept nogil
    cdef int good(self, uint16_t flow, uint64_t seq, uint64_t ts, uint64_t now) noexcept nogil
    cdef void track(self, uint16_t flow, uint64_t seq, uint64_t ts) noexcept nogil
