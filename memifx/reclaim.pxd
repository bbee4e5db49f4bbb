from libc.stdint cimport uint32_t, uint64_t

# An item unlinked from a shared table, waiting for every reader to pass a
# quiescent point before it may be written again.
cdef struct retired_t:
    uint32_t what           # the table's own name for the item
    uint64_t epoch


cdef class Limbo:
    cdef retired_t *items           # in retirement order, so epochs never decrease
    cdef uint64_t count
    cdef uint64_t cap
    cdef readonly uint64_t epoch    # tag of what is retired now (see begin)

    cdef int add(self, uint32_t what) noexcept nogil
    cdef uint64_t ready(self, uint64_t token) noexcept nogil
    cdef void drop(self, uint64_t n) noexcept nogil
