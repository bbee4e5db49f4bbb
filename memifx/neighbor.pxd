from libc.stdint cimport uint8_t, uint32_t, uint64_t

from memifx.table cimport SealedTable

# The shared-memory layout of the neighbor table and its seqlock (csrc/neighbor.h).
cdef extern from "neighbor.h" nogil:
    const uint64_t NBR_MAGIC
    const uint32_t NBR_PAGE
    const uint64_t NBR_EMPTY
    const uint64_t NBR_TOMBSTONE

    ctypedef struct nbr_entry_t:
        uint32_t seq
        uint64_t key
        uint64_t mac

    ctypedef struct nbr_header_t:
        uint64_t magic
        uint64_t size
        uint64_t entries_offset
        uint32_t capacity
        uint32_t count
        uint32_t tombstones

    uint64_t nbr_key(uint32_t ifindex, uint32_t ip)
    uint32_t nbr_home(uint64_t key, uint32_t mask)
    int nbr_read(const nbr_entry_t *e, uint64_t *key, uint64_t *mac)
    int nbr_find(const nbr_entry_t *t, uint32_t mask, uint64_t key, uint64_t *mac)
    void nbr_write(nbr_entry_t *e, uint64_t key, uint64_t mac)
    uint32_t nbr_u32_load(const uint32_t *p)
    void nbr_u32_store(uint32_t *p, uint32_t v)


# The writer's "no room" result (see memifx/table.pxd).
cdef enum:
    NBR_FULL = -2


cdef class NeighborTable(SealedTable):
    cdef nbr_header_t *hdr
    cdef nbr_entry_t *entries
    cdef readonly uint32_t mask     # capacity - 1

    cdef int put(self, uint64_t key, uint64_t mac) noexcept nogil
    cdef bint remove(self, uint64_t key) noexcept nogil
