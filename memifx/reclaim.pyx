# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Deferred reuse of shared-table memory: quiescent-state reclamation.

A writer that unlinks a block from a table that readers in other processes
walk without locks must not write that block again while a reader may
still be inside it.  The writer retires it into a ``Limbo`` instead, tagged
with the current epoch.  ``begin()`` returns a token for everything retired
so far and starts a new epoch; once every reader has passed a quiescent
point (between bursts) after that call, the items ``ready(token)`` names
may be reused, and ``drop`` forgets them.  Items are kept in retirement
order, so the ready ones are always a prefix.

What an item is (a block, a record) and how it is freed is the table's
business: the Limbo only holds u32 names and epochs.
"""
from libc.stdlib cimport realloc, free
from libc.string cimport memmove


cdef class Limbo:
    """Retired items of one table and the epoch counter of its handshake."""

    def __dealloc__(self):
        free(self.items)

    cdef int add(self, uint32_t what) noexcept nogil:
        """Hold ``what`` until the epoch current now is done; -1 when there is
        no memory to hold it (then it is never reused: a leak, never a hazard)."""
        cdef retired_t *t
        cdef uint64_t cap
        if self.count == self.cap:
            cap = self.cap * 2 if self.cap else 64
            t = <retired_t *>realloc(self.items, cap * sizeof(retired_t))
            if t == NULL:
                return -1
            self.items = t
            self.cap = cap
        self.items[self.count].what = what
        self.items[self.count].epoch = self.epoch
        self.count += 1
        return 0

    cdef uint64_t ready(self, uint64_t token) noexcept nogil:
        """How many of the oldest items were retired up to ``token``'s epoch
        (``items[0:n]`` may be reused once every reader passed it)."""
        cdef uint64_t n = 0
        while n < self.count and self.items[n].epoch <= token:
            n += 1
        return n

    cdef void drop(self, uint64_t n) noexcept nogil:
        """Forget the ``n`` oldest items (the caller freed them)."""
        memmove(self.items, self.items + n, (self.count - n) * sizeof(retired_t))
        self.count -= n

    def begin(self):
        """A token for everything retired so far; what is retired later gets
        the next one."""
        self.epoch += 1
        return self.epoch - 1

    def __len__(self):
        return self.count
