from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t

from memifx.reclaim cimport Limbo
from memifx.table cimport SealedTable, TABLE_OK, TABLE_NOMEM

# The shared-memory layout of the FIB and its atomics (csrc/fib.h).
cdef extern from "fib.h" nogil:
    const uint64_t FIB_MAGIC
    const uint32_t FIB_PAGE

    ctypedef struct nexthop_t "fib_nexthop_t":
        uint32_t gw         # host byte order; 0 unless NH_GATEWAY
        uint16_t ifindex
        uint8_t kind

    ctypedef struct fib_header_t:
        uint64_t magic
        uint64_t size
        uint64_t tbl24_offset
        uint64_t tbl8_offset
        uint64_t nh_offset
        uint32_t groups_cap
        uint32_t nh_cap
        uint32_t nh_count
        uint32_t groups_used
        uint64_t routes

    uint32_t fib_entry_load(const uint32_t *p)
    void fib_entry_publish(uint32_t *p, uint32_t v)
    uint32_t fib_u32_load_acquire(const uint32_t *p)
    void fib_u32_store_release(uint32_t *p, uint32_t v)
    uint64_t fib_u64_load_relaxed(const uint64_t *p)
    void fib_u64_store_relaxed(uint64_t *p, uint64_t v)

# What a route leads to.
cdef enum:  # Next-hop kinds
    NH_CONNECTED = 0    # the destination is on the link: resolve the destination itself
    NH_GATEWAY = 1      # send to the gateway address on the output interface
    NH_LOCAL = 2        # one of our own addresses: deliver locally
    NH_BROADCAST = 3    # a broadcast address: received, never forwarded
    N_NH_KINDS = 4

# A table entry is one u32:
#   bit 0      valid (a route covers this entry)
#   bit 1      group: bits 8..31 name a 256-entry second-level block
#   bits 2..7  prefix length of the route that wrote the entry (0..32)
#   bits 8..31 next-hop index (or block number)
# A first-level entry that is not a group always has a length of 24 or less:
# a /24 holds a block exactly while some route longer than /24 lies in it.
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

# Results of the writer's C routines (0 is success; see memifx/table.pxd).
cdef enum:
    FIB_OK = TABLE_OK
    FIB_NOMEM = TABLE_NOMEM # out of heap memory (the writer's private indexes)
    FIB_NO_GROUPS = -2      # every second-level block is in use
    FIB_NO_NEXTHOPS = -3    # every next-hop record is in use
    FIB_NOT_FOUND = -4      # no such route

# A route as routes.parse_routes hands it out and apply_routes takes it (16 bytes).
cdef struct route_t:
    uint32_t prefix
    uint8_t length
    uint8_t kind
    uint16_t ifindex
    uint32_t gw
    uint32_t line           # of the routes text, for messages (0: none)

cdef class Fib(SealedTable):
    # the shared file (SealedTable.base): header page, then the tables
    cdef fib_header_t *hdr
    cdef uint32_t *tbl24            # indexed by the top 24 bits of the address
    cdef uint32_t *tbl8             # blocks of 256, indexed by the low 8 bits
    cdef nexthop_t *nh
    cdef readonly uint32_t groups_cap
    cdef readonly uint32_t nh_cap
    # the writer's private state (heap; none of it in a view)
    cdef uint32_t ngroups           # blocks ever handed out (high-water mark)
    cdef uint32_t *free_groups      # blocks free to reuse now (a stack)
    cdef uint32_t nfree_groups
    cdef uint32_t *free_nh          # next-hop records free to reuse now (a stack)
    cdef uint32_t nfree_nh
    cdef uint32_t *nh_refs          # routes per next hop; NH_FREE: not in use
    cdef uint32_t *nh_hash          # open addressing: slot -> next-hop index + 1
    cdef uint32_t nh_hash_cap
    cdef uint64_t *rules            # every route: (prefix, length) -> next hop; see rule_word
    cdef uint64_t rules_cap
    cdef uint64_t rules_count
    cdef Limbo limbo                # unlinked blocks and records, not yet reusable
    cdef public bint defer_reuse    # readers in other processes: hold retired items back

    cdef void point(self)
    cdef void retire(self, uint32_t what) noexcept nogil
    cdef void release(self, uint32_t what) noexcept nogil
    cdef uint32_t nh_home(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil
    cdef int64_t nexthop_c(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil
    cdef void nh_unref(self, uint32_t i) noexcept nogil
    cdef uint64_t rule_slot(self, uint32_t prefix, uint32_t length) noexcept nogil
    cdef int64_t rule_find(self, uint32_t prefix, uint32_t length) noexcept nogil
    cdef int rules_reserve(self) noexcept nogil
    cdef void rule_remove(self, uint64_t s) noexcept nogil
    cdef int64_t group_alloc(self) noexcept nogil
    cdef void rewrite(self, uint32_t prefix, uint32_t length, uint32_t word,
                      bint deleting) noexcept nogil
    cdef int route_set_c(self, uint32_t prefix, uint32_t length, uint32_t index) noexcept nogil
    cdef int route_delete_c(self, uint32_t prefix, uint32_t length) noexcept nogil
    cdef int check_route(self, uint32_t prefix, uint32_t length) except -1


cdef inline uint32_t netmask(uint32_t length) noexcept nogil:
    return 0 if length == 0 else (<uint32_t>0xFFFFFFFFu) << (32 - length)


cdef inline int64_t fib_lookup(const uint32_t *tbl24, const uint32_t *tbl8,
                               uint32_t addr) noexcept nogil:
    """Longest-prefix match: the next-hop index, or FIB_MISS.  Safe while the
    main process changes the tables (see csrc/fib.h)."""
    cdef uint32_t e = fib_entry_load(&tbl24[addr >> 8])
    if e & E_GROUP:
        e = fib_entry_load(&tbl8[((e >> E_INDEX_SHIFT) << 8) | (addr & 0xFF)])
    if e & E_VALID:
        return e >> E_INDEX_SHIFT
    return FIB_MISS
