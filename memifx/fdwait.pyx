"""Waiting until file descriptors are readable: ppoll(2) for any fd number.

Every wait of memifx on an fd (receive queues' eventfds, worker control
sockets) goes through ``wait_readable``.  select() cannot do it: it refuses
fd numbers at or above FD_SETSIZE (1024), and a process serving many links
has its eventfds and sockets up there.  poll() takes any fd but only a
millisecond timeout, too coarse for a rate-limited sender that sleeps for
tens of microseconds between batches; ppoll takes both.  The GIL is released
while waiting.

Errors are not swallowed: a signal (EINTR) runs Python's handlers and the
wait goes on for the time left, as PEP 475 has it for the standard library;
any other failure raises OSError.  An fd that is not open (a link went down
and closed it under the caller) is reported ready, so the caller looks at its
state again instead of sleeping on a stale list.
"""
from cpython.exc cimport PyErr_CheckSignals, PyErr_SetFromErrno
from cpython.mem cimport PyMem_Malloc, PyMem_Free
from libc.errno cimport errno, EINTR
from posix.time cimport timespec, clock_gettime, CLOCK_MONOTONIC

cdef extern from "<poll.h>" nogil:
    ctypedef unsigned long nfds_t
    struct pollfd:
        int fd
        short events
        short revents
    enum:
        POLLIN
    int ppoll(pollfd *fds, nfds_t nfds, const timespec *tmo, const void *sigmask)

cdef enum:
    ON_STACK = 16           # fds waited on without an allocation


cdef inline double now() noexcept nogil:
    cdef timespec t
    clock_gettime(CLOCK_MONOTONIC, &t)
    return t.tv_sec + t.tv_nsec * 1e-9


def wait_readable(fds, timeout=None):
    """Wait until one of ``fds`` (ints) is readable, has hung up, has an
    error or is not open, or ``timeout`` seconds pass (None: no limit).
    Returns the list of those fds, in the order given ([] on timeout)."""
    cdef pollfd stack[ON_STACK]
    cdef pollfd *p = stack
    cdef Py_ssize_t n = len(fds), i
    cdef int r
    cdef double end = 0, left = 0
    cdef timespec ts
    cdef timespec *tsp = NULL
    if n > ON_STACK:
        p = <pollfd *>PyMem_Malloc(n * sizeof(pollfd))
        if p == NULL:
            raise MemoryError()
    try:
        for i, fd in enumerate(fds):
            p[i].fd = fd
            if p[i].fd < 0:
                raise ValueError("fd %d is not a file descriptor" % fd)
            p[i].events = POLLIN
            p[i].revents = 0
        if timeout is not None:
            left = max(0.0, <double>timeout)
            end = now() + left
            tsp = &ts
        while True:
            if tsp != NULL:
                ts.tv_sec = <long>left
                ts.tv_nsec = <long>((left - ts.tv_sec) * 1e9)
            with nogil:
                r = ppoll(p, n, tsp, NULL)
            if r >= 0:
                break
            if errno != EINTR:
                PyErr_SetFromErrno(OSError)
            PyErr_CheckSignals()        # raises if a handler did
            if tsp != NULL:
                left = end - now()
                if left <= 0:
                    return []
        if r == 0:
            return []
        return [p[i].fd for i in range(n) if p[i].revents]
    finally:
        if p != stack:
            PyMem_Free(p)
