# cython: language_level=3
"""A table in shared memory: one sealed memfd that the process creating it
writes and other processes map read-only (memifx/sealed.py has the seals).

``SealedTable`` is the base of Fib and NeighborTable.  It owns the file and
the mapping for its whole life: ``create_file`` makes the memfd, maps it
writable, seals it (so that first mapping stays the only writable one) and
writes the header's first words, magic and size (csrc/table.h);
``map_shared`` checks a received fd's seals and size, maps it PROT_READ and
checks magic and size; deallocation unmaps and closes.  A subclass lays out
the rest of its header and its tables inside ``base``, and checks the rest
of a shared header after map_shared.

Errors have one mapping for every table: a file that is not a sealed table
raises sealed.SharedTableError, a failed mmap OSError (with errno), a
writer routine's TABLE_NOMEM MemoryError, and the table's own "no room"
codes its TableFull subclass (``full_error``).
"""
from libc.errno cimport errno
from libc.stdint cimport uint64_t
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close

import os

from memifx import sealed


class TableFull(Exception):
    """A shared table has no room left: its capacities are fixed when it is
    created.  FibFull and NeighborTableFull are this."""


cdef class SealedTable:
    """One sealed memfd and its mapping; see the module docstring."""

    def __cinit__(self):
        self.memfd = -1
        self.what = "table"

    def __dealloc__(self):
        # C calls only: at interpreter exit the os module may be gone already.
        if self.base != NULL:
            munmap(self.base, self.size)
        if self.memfd >= 0:
            close(self.memfd)

    cdef int create_file(self, str name, size_t size, uint64_t magic) except -1:
        """A new memfd of ``size`` bytes (sparse) mapped writable at ``base``,
        then sealed: this mapping is the only writer there will ever be.
        The header starts with ``magic`` and the size."""
        cdef table_header_t *h
        cdef void *p
        self.memfd = sealed.create(name, size)
        p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, self.memfd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "cannot map the %s (%d bytes)" % (self.what, size))
        self.base = <unsigned char *>p
        self.size = size
        sealed.seal(self.memfd)
        h = <table_header_t *>p
        h.magic = magic
        h.size = size
        return 0

    cdef size_t map_shared(self, int fd, size_t header_size, uint64_t magic) except 0:
        """Map another process's table read-only: seals and size checked
        before mapping (at least ``header_size`` bytes), magic and size in
        the header after.  Returns the size; the caller checks the rest of
        its header.  The fd is not kept."""
        cdef void *p
        cdef const table_header_t *h
        cdef size_t size = sealed.check(fd, self.what)
        if size < header_size or size == 0:
            raise sealed.SharedTableError("shared %s: the file is too small (%d bytes)"
                                          % (self.what, size))
        p = mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, "cannot map the shared %s" % self.what)
        self.base = <unsigned char *>p
        self.size = size
        self.shared = True
        h = <const table_header_t *>p
        if h.magic != magic or h.size != size:
            raise self.bad_header()
        return size

    cdef object bad_header(self):
        """The error for a shared file whose header does not describe it."""
        return sealed.SharedTableError("shared %s: the header does not describe the file"
                                       % self.what)

    cdef int raise_for(self, int rc) except -1:
        """Raise what a writer routine's result means (nothing for TABLE_OK
        or a positive result)."""
        if rc >= TABLE_OK:
            return 0
        if rc == TABLE_NOMEM:
            raise MemoryError()
        raise self.full_error(rc)

    cdef object full_error(self, int rc):
        """The exception for one of this table's "no room" codes."""
        return TableFull("%s full" % self.what)

    def check_writable(self):
        """Raises ValueError on a read-only view (from_shared)."""
        if self.shared:
            raise ValueError("a shared %s view is read-only" % self.what)

    @property
    def fd(self):
        """The memfd, to send to readers (owned by this table; -1 in a view)."""
        return self.memfd

    @property
    def memory(self):
        """Bytes of the shared file (sparse: only what was written is memory)."""
        return self.size
