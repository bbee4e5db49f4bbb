from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

# What a route leads to.
cdef enum:  # Next-hop kinds
    NH_CONNECTED = 0    # the destination is on the link: resolve the destination itself
    NH_GATEWAY = 1      # send to the gateway address on the output interface
    NH_LOCAL = 2        # one of our own addresses: deliver locally
    NH_BROADCAST = 3    # a broadcast address: received, never forwarded
    N_NH_KINDS = 4

cdef struct nexthop_t:
    uint32_t gw         # host byte order; 0 unless NH_GATEWAY
    uint16_t ifindex
    uint8_t kind

# A table entry is one u32:
#   bit 0      valid (a route covers this entry)
#   bit 1      group: bits 8..31 name a 256-entry second-level block
#   bits 2..7  prefix length of the route that wrote the entry (0..32)
#   bits 8..31 next-hop index (or block number)
cdef enum:
    E_VALID = 1
    E_GROUP = 2
    E_DEPTH_SHIFT = 2
    E_DEPTH_MASK = 0x3F
    E_INDEX_SHIFT = 8
    MAX_INDEX = 0xFFFFFF
    TBL24_SIZE = 1 << 24

cdef enum:
    FIB_MISS = -1

cdef class Fib:
    cdef uint32_t *tbl24            # indexed by the top 24 bits of the address
    cdef uint32_t *tbl8             # blocks of 256, indexed by the low 8 bits
    cdef uint32_t ngroups
    cdef uint32_t groups_cap
    cdef nexthop_t *nh
    cdef readonly uint32_t nnh
    cdef uint32_t nh_cap
    cdef uint32_t *nh_hash          # open addressing: slot -> next-hop index + 1
    cdef uint32_t nh_hash_cap
    cdef readonly uint64_t routes   # insertions (replacing one counts again)
    cdef void *view_map             # a read-only view (from_shared): the mapping, else NULL
    cdef size_t view_size

    cdef int insert_c(self, uint32_t prefix, uint32_t length, uint32_t index) noexcept nogil
    cdef int64_t nexthop_c(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil


cdef inline int64_t fib_lookup(const uint32_t *tbl24, const uint32_t *tbl8,
                               uint32_t addr) noexcept nogil:
    """Longest-prefix match: the next-hop index, or FIB_MISS."""
    cdef uint32_t e = tbl24[addr >> 8]
    if e & E_GROUP:
        e = tbl8[((e >> E_INDEX_SHIFT) << 8) | (addr & 0xFF)]
    if e & E_VALID:
        return e >> E_INDEX_SHIFT
    return FIB_MISS
