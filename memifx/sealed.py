"""Shared tables: a memfd that one process writes and others only read.

The main process creates the file at its final size (sparse: pages cost
memory only once written), maps it writable, then seals it: the size can no
longer change, and no one (the main process included) can map it writable
again or write() to it (F_SEAL_FUTURE_WRITE).  The mapping the main process
already holds stays writable, so it is the only writer there will ever be.

A reader gets the fd (over a socket), checks the seals and the size with
fstat before it maps anything, and maps it PROT_READ.
"""
import fcntl
import os

# Missing from the fcntl module of some Pythons (3.11 has none); the value is
# Linux's (5.1+).
F_SEAL_FUTURE_WRITE = getattr(fcntl, "F_SEAL_FUTURE_WRITE", 0x0010)
WRITER_SEALS = (fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | F_SEAL_FUTURE_WRITE
                | fcntl.F_SEAL_SEAL)


class SharedTableError(ValueError):
    """A shared table file that is not what it claims to be."""


def create(name, size):
    """A new memfd of ``size`` bytes (all holes), sealable; the caller owns it."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
    except BaseException:
        os.close(fd)
        raise
    return fd


def seal(fd):
    """After the writer mapped it: fixed size, no new writable mapping, no write()."""
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, WRITER_SEALS)


def check(fd, what, size=None):
    """Before a reader maps it: the seals are in place and the size is
    ``size`` (if given).  Returns the size."""
    seals = fcntl.fcntl(fd, fcntl.F_GET_SEALS)
    fixed = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW
    if seals & fixed != fixed or not seals & (F_SEAL_FUTURE_WRITE | fcntl.F_SEAL_WRITE):
        raise SharedTableError("shared %s: the file is not sealed (seals 0x%x)" % (what, seals))
    st_size = os.fstat(fd).st_size
    if size is not None and st_size != size:
        raise SharedTableError("shared %s: the file is %d bytes, its header says %d"
                               % (what, st_size, size))
    return st_size
