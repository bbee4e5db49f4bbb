# The fault guard (guard.pyx, csrc/guard.h) as other modules use it: the
# table of peer mappings lives in guard.pyx alone, so nothing else includes
# guard.h.
from libc.stdint cimport uint64_t

cdef int watch(void *base, uint64_t size, object owner) except -1
cdef void forget(int slot) noexcept
cdef bint faulted(int slot) noexcept nogil
