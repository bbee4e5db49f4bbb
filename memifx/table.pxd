from libc.stdint cimport uint8_t, uint64_t

# The first words of every table file (csrc/table.h).
cdef extern from "table.h" nogil:
    ctypedef struct table_header_t:
        uint64_t magic
        uint64_t size

# Results of a table's writer routines in C (0 is success).  A table's own
# "no room" codes are further negative numbers, turned into its TableFull
# exception by its full_error().
cdef enum:
    TABLE_OK = 0
    TABLE_NOMEM = -1        # out of heap memory (the writer's private indexes)


cdef class SealedTable:
    cdef int memfd                  # -1 in a read-only view (it keeps only the mapping)
    cdef uint8_t *base
    cdef size_t size
    cdef readonly bint shared       # a read-only view (from_shared)
    cdef str what                   # the table's name in messages ("FIB")

    cdef int create_file(self, str name, size_t size, uint64_t magic) except -1
    cdef size_t map_shared(self, int fd, size_t header_size, uint64_t magic) except 0
    cdef object bad_header(self)
    cdef int raise_for(self, int rc) except -1
    cdef object full_error(self, int rc)
