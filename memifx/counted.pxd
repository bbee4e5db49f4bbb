from libc.stdint cimport uint64_t

cdef class CountedNode:
    cdef dict block_owners              # block -> what keeps its slot's mapping alive

    cdef Py_ssize_t block_size(self, Py_ssize_t block) except -1
    cdef uint64_t *block_at(self, Py_ssize_t block) noexcept
    cdef void block_moved(self, Py_ssize_t block, uint64_t *at) noexcept
    cdef int count_into(self, Py_ssize_t block, uint64_t *slot, object owner) except -1
