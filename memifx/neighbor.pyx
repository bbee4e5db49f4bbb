# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The neighbor table: (interface, IPv4 address) -> MAC, in shared memory.

One open-addressing table in a sealed memfd (a SealedTable,
memifx/table.pyx; csrc/neighbor.h has the layout and the seqlock), of a
fixed capacity set at creation (sparse: unused entries
cost no memory).  The process that creates it is its only writer (the main
process: static entries, ARP learning); every worker maps it read-only
(``NeighborTable.from_shared``) and its ip4-rewrite node looks up in it
directly, so a change made by the main process is seen by every worker at
once, with no message and no private copy.

Readers never see an entry half written (per-entry sequence numbers) and a
delete never cuts a probe chain (tombstones).  The table takes entries while
live entries and tombstones together stay under 3/4 of the capacity.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint32_t, uint64_t
from libc.string cimport memcpy

from memifx.table import TableFull

DEFAULT_CAPACITY = 1 << 16


class NeighborTableFull(TableFull, MemoryError):
    """No room for another neighbor."""


cdef inline uint64_t mac_word(const uint8_t *m) noexcept nogil:
    cdef uint64_t w = 0
    memcpy(&w, m, 6)
    return w


cdef class NeighborTable(SealedTable):
    """(ifindex, ip) -> 6-byte MAC.  ``NeighborTable(capacity)`` creates one
    (this process writes it); ``NeighborTable.from_shared(fd)`` maps one
    read-only."""

    def __cinit__(self, uint32_t capacity=DEFAULT_CAPACITY, *, bint _view=False):
        cdef size_t total
        self.what = "neighbor table"
        if _view:
            return
        if capacity < 16 or capacity & (capacity - 1) or capacity > (1 << 26):
            raise ValueError("capacity must be a power of two, 16..%d" % (1 << 26))
        total = NBR_PAGE + <size_t>capacity * sizeof(nbr_entry_t)
        self.create_file("memifx-neighbors", total, NBR_MAGIC)
        self.hdr = <nbr_header_t *>self.base
        self.hdr.entries_offset = NBR_PAGE
        self.hdr.capacity = capacity
        self.entries = <nbr_entry_t *>(self.base + NBR_PAGE)
        self.mask = capacity - 1

    @staticmethod
    def from_shared(int fd):
        """A read-only view of the table whose ``fd`` this is: seals and size
        checked before mapping, the header after.  The fd may be closed then."""
        cdef NeighborTable t = NeighborTable.__new__(NeighborTable, _view=True)
        cdef size_t size = t.map_shared(fd, NBR_PAGE, NBR_MAGIC)
        cdef nbr_header_t *h
        h = t.hdr = <nbr_header_t *>t.base
        if (h.entries_offset % 32 or h.capacity < 16 or h.capacity & (h.capacity - 1)
                or h.entries_offset + <uint64_t>h.capacity * sizeof(nbr_entry_t) > size):
            raise t.bad_header()
        t.entries = <nbr_entry_t *>(t.base + h.entries_offset)
        t.mask = h.capacity - 1
        return t

    # ------------------------------------------------------------- writer

    cdef int put(self, uint64_t key, uint64_t mac) noexcept nogil:
        """Insert or update: 0, or NBR_FULL."""
        cdef uint32_t s = nbr_home(key, self.mask), n, spot = 0xFFFFFFFFu
        cdef nbr_entry_t *e
        for n in range(self.mask + 1):
            e = &self.entries[s]
            if e.key == key:
                if e.mac != mac:
                    nbr_write(e, key, mac)
                return 0
            if e.key == NBR_TOMBSTONE:
                if spot == 0xFFFFFFFFu:
                    spot = s
            elif e.key == NBR_EMPTY:
                break
            s = (s + 1) & self.mask
        if spot != 0xFFFFFFFFu:          # reuse the first tombstone on the way
            nbr_write(&self.entries[spot], key, mac)
            nbr_u32_store(&self.hdr.tombstones, self.hdr.tombstones - 1)
        else:
            if (self.hdr.count + self.hdr.tombstones + 1) * 4 > (self.mask + 1) * 3:
                return NBR_FULL
            nbr_write(&self.entries[s], key, mac)
        nbr_u32_store(&self.hdr.count, self.hdr.count + 1)
        return 0

    cdef bint remove(self, uint64_t key) noexcept nogil:
        cdef uint32_t s = nbr_home(key, self.mask), n
        cdef nbr_entry_t *e
        for n in range(self.mask + 1):
            e = &self.entries[s]
            if e.key == key:
                break
            if e.key == NBR_EMPTY:
                return False
            s = (s + 1) & self.mask
        else:
            return False
        nbr_write(e, NBR_TOMBSTONE, 0)
        nbr_u32_store(&self.hdr.count, self.hdr.count - 1)
        nbr_u32_store(&self.hdr.tombstones, self.hdr.tombstones + 1)
        # Where the chain ends right after, tombstones may become empty again:
        # a search that now stops earlier would have found nothing further on.
        if self.entries[(s + 1) & self.mask].key == NBR_EMPTY:
            while self.entries[s].key == NBR_TOMBSTONE:
                nbr_write(&self.entries[s], NBR_EMPTY, 0)
                nbr_u32_store(&self.hdr.tombstones, self.hdr.tombstones - 1)
                s = (s - 1) & self.mask
        return True

    def add(self, uint32_t ifindex, uint32_t ip, const uint8_t[:] mac):
        """Set the MAC of neighbor ``ip`` on interface ``ifindex``; readers
        everywhere see the change at once."""
        cdef uint8_t m[6]
        self.check_writable()
        if mac.shape[0] != 6:
            raise ValueError("a MAC is 6 bytes")
        for i in range(6):
            m[i] = mac[i]
        self.raise_for(self.put(nbr_key(ifindex, ip), mac_word(m)))

    cdef object full_error(self, int rc):
        return NeighborTableFull("neighbor table full (%d entries, %d deleted ones held)"
                                 % (self.hdr.count, self.hdr.tombstones))

    def discard(self, uint32_t ifindex, uint32_t ip):
        """Forget a neighbor; returns whether it was there."""
        self.check_writable()
        return self.remove(nbr_key(ifindex, ip))

    # ------------------------------------------------------------ readers

    def get(self, uint32_t ifindex, uint32_t ip):
        """The MAC as bytes, or None."""
        cdef uint64_t mac
        if not nbr_find(self.entries, self.mask, nbr_key(ifindex, ip), &mac):
            return None
        return PyBytes_FromStringAndSize(<const char *>&mac, 6)

    def items(self):
        """[(ifindex, ip, mac bytes)] in no particular order."""
        out = []
        cdef uint32_t i
        cdef uint64_t k, mac
        for i in range(self.mask + 1):
            if nbr_read(&self.entries[i], &k, &mac) and k != NBR_EMPTY and k != NBR_TOMBSTONE:
                k -= 1
                out.append((<uint32_t>(k >> 32), <uint32_t>(k & 0xFFFFFFFFu),
                            PyBytes_FromStringAndSize(<const char *>&mac, 6)))
        return out

    def __len__(self):
        return nbr_u32_load(&self.hdr.count)

    @property
    def capacity(self):
        return self.mask + 1

    @property
    def tombstones(self):
        """Deleted entries still holding probe chains together."""
        return nbr_u32_load(&self.hdr.tombstones)
