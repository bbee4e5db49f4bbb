# cython: language_level=3
"""Shared-memory regions of one memif connection.

A :class:`Memory` is the set of regions of one connection: the slave creates
them (memfd, sealed against shrinking), the master maps what the slave sent
after checking the fd.  The mappings live exactly as long as the ``Memory``
object: queues and zero-copy buffers hold a reference to it, so a link that
goes down while a burst or a held buffer still points into a region never
unmaps memory under it.

Every region the peer sent is watched by the fault guard (memifx/guard.pyx)
for as long as it is mapped: if the peer truncates it, our accesses read
zeros, ``faulted`` becomes true and ``on_fault`` is called, instead of the
process dying of SIGBUS.  The regions we create ourselves are sealed against
shrinking and need no guard.
"""
import os
import fcntl
import stat

from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED
from posix.unistd cimport close
from libc.errno cimport errno
from libc.string cimport strerror

from memifx.errors import MemifError
from memifx.guard cimport watch, forget, faulted

# Largest region we map: offsets in descriptors are u32, so a region larger
# than 4 GiB cannot be addressed past its first 4 GiB anyway; DPDK's zero-copy
# slave exports its whole EAL memory, which stays well under this.
MAX_REGION_SIZE = 1 << 32


def _filesystem_of(int fd):
    """The type of the filesystem fd lives on, from /proc alone: asking the
    file itself (fstat, fstatfs) could wait on a FUSE daemon the peer runs."""
    mnt = None
    with open("/proc/self/fdinfo/%d" % fd) as f:
        for line in f:
            if line.startswith("mnt_id:"):
                mnt = line.split()[1]
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if fields[0] == mnt and "-" in fields:
                return fields[fields.index("-") + 1]
    return None


def check_memory_file(int fd):
    """Refuse a region fd unless it is a memfd (its /proc link reads
    "/memfd:NAME (deleted)") or a file on hugetlbfs (DPDK's zero-copy memory
    on real hugepages): files whose pages are plain memory.  Any other file
    (FUSE, NFS, disk) could make a page fault wait or fail, so it is never
    mapped.  Decided from /proc alone, before the file is asked anything."""
    try:
        link = os.readlink("/proc/self/fd/%d" % fd)
    except OSError:
        link = ""
    if not link.startswith("/"):        # pipe:[..], socket:[..], anon_inode:[..]
        raise MemifError("memory region fd is not a regular file")
    if link.startswith("/memfd:"):
        return
    try:
        if _filesystem_of(fd) == "hugetlbfs":
            return
    except OSError:
        pass
    raise MemifError("memory region fd is not a memfd")


def _memfd_seals(int fd):
    try:
        return fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    except OSError:
        return 0


def check_region_fd(int fd, uint64_t size):
    """Validate a region fd from the peer before mapping it; return a warning
    string (or None).  Raises MemifError with the reason to disconnect."""
    if size == 0 or size > MAX_REGION_SIZE:
        raise MemifError("invalid region size %d" % size)
    check_memory_file(fd)
    warning = None
    seals = _memfd_seals(fd)
    if not seals & fcntl.F_SEAL_SHRINK:
        # Seal it ourselves when the memfd allows it; otherwise the peer could
        # truncate it later and turn our next access into SIGBUS.  Seal
        # before looking at the size: a size checked first could shrink
        # before the seal lands.
        try:
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
        except OSError:
            warning = "region not sealed against shrinking"
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise MemifError("memory region fd is not a regular file")
    if <uint64_t>st.st_size < size:
        raise MemifError("memory region fd smaller than announced (%d < %d)"
                         % (st.st_size, size))
    return warning


cdef class Memory:
    """Regions of one connection, indexed as on the wire."""

    def __cinit__(self):
        cdef int i
        self.count = 0
        self.fds = []
        self.on_fault = None
        for i in range(MAX_REGIONS):
            self.guard_slots[i] = -1

    def __dealloc__(self):
        # C calls only: at interpreter exit the os module may be gone already.
        cdef uint16_t i
        cdef int fd
        if self.fds:
            for fd in self.fds:
                close(fd)
        for i in range(self.count):
            if self.guard_slots[i] >= 0:
                forget(self.guard_slots[i])
                self.guard_slots[i] = -1
            if self.regions[i].base != NULL:
                munmap(self.regions[i].base, self.regions[i].size)
                self.regions[i].base = NULL

    cdef char *_map(self, int fd, uint64_t size, bint guarded=False) except NULL:
        if self.count >= MAX_REGIONS:
            raise MemifError("too many regions")
        cdef void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
        if p == MAP_FAILED:
            raise MemifError("cannot map memory region: %s"
                             % strerror(errno).decode())
        if guarded:
            try:
                self.guard_slots[self.count] = watch(p, size, self)
            except BaseException:
                munmap(p, size)
                raise
        self.regions[self.count].base = <char *>p
        self.regions[self.count].size = size
        self.count += 1
        return <char *>p

    def add_peer_region(self, int fd, uint64_t size):
        """Check and map a region received from the peer; returns a warning or None."""
        warning = check_region_fd(fd, size)
        self._map(fd, size, True)
        self.fds.append(os.dup(fd))
        return warning

    def create_region(self, uint64_t size, str name="memifx"):
        """Create, size, seal and map a new memfd region (slave side).
        Returns the fd; the caller sends it and closes it."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, size)
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS,
                        fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
            self._map(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self.fds.append(os.dup(fd))
        return fd

    @property
    def faulted(self):
        """Whether a peer region was truncated under us (it reads zeros now)."""
        cdef uint16_t i
        for i in range(self.count):
            if self.guard_slots[i] >= 0 and faulted(self.guard_slots[i]):
                return True
        return False

    def region_size(self, uint16_t index):
        if index >= self.count:
            raise IndexError(index)
        return self.regions[index].size

    def sizes(self):
        return [self.regions[i].size for i in range(self.count)]
