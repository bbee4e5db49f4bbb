from libc.stdint cimport uint16_t, uint64_t

# One mapped region as the data path sees it: bounds for descriptor checks.
cdef struct region_t:
    char *base
    uint64_t size

from memifx.memif cimport MEMIF_MAX_REGIONS as MAX_REGIONS

cdef class Memory:
    cdef region_t regions[MAX_REGIONS]
    cdef readonly uint16_t count
    cdef readonly list fds          # our own dup of each region's fd, for workers
    cdef int guard_slots[MAX_REGIONS]   # guard.pyx slot of each peer region, or -1
    cdef public object on_fault     # called (control loop) if a peer region faulted
    cdef object __weakref__
    cdef char *_map(self, int fd, uint64_t size, bint guarded=*) except NULL
