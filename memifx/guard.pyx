# cython: language_level=3
"""Fault containment: a peer that truncates shared memory costs it its link,
never our process.

A slave may send a region memfd it can still shrink (one created without
MFD_ALLOW_SEALING, as DPDK's zero-copy memory is).  Once it truncates the
file, our next access to a page past the new end raises SIGBUS.  Here a
process-wide SIGBUS handler (csrc/guard.h) repairs that: inside a mapping
recorded with :func:`watch` it maps zero pages over the whole mapping, marks
it faulted and wakes the control plane; the access that faulted then reads
zeros, which the data path drops as bad descriptors.  Any other SIGBUS goes
on to the previous handler (faulthandler, say) or kills the process as it
would have without us.

Why a handler that repairs the mapping rather than sigsetjmp/siglongjmp
around every access to peer memory: the data path is nogil C loops that we
would have to bracket burst by burst (a setjmp per burst, and a longjmp out
of a loop that holds half-updated ring state), and it would still not cover
memory we do not control the access to: a worker process's node, or an
application reading a buffer through the buffer protocol.  The repair costs
nothing on the data path and covers every access, from any thread.

Who hears about a fault:
- a ControlLoop reads :func:`fileno` and calls :func:`dispatch`, which calls
  the ``on_fault`` callback of each Memory that faulted (an Interface sets
  it while its link is up: the link is ended with :data:`REASON`);
- a worker process has no loop: it compares :func:`fault_count` between two
  passes (one atomic load) and asks each of its Memory objects ``faulted``.
"""
import logging
import os
import weakref

from libc.stdint cimport uint64_t

from memifx.errors import MemifError

log = logging.getLogger("memifx")

cdef extern from "guard.h" nogil:
    int GUARD_SLOTS
    int guard_install(int wake_fd)
    int guard_register(void *base, uint64_t size)
    void guard_release(int slot)
    int guard_faulted(int slot)
    int guard_take_report(int slot)
    uint64_t guard_fault_count()

REASON = "memory region truncated"
SLOTS = GUARD_SLOTS

# The wake pipe: the handler writes one byte per fault; control loops poll
# the read end.  Created at import, so every loop can register it at once.
_wake_r, _wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
_owners = {}                # slot -> weakref to the object that holds the mapping


cdef int watch(void *base, uint64_t size, object owner) except -1:
    """Record a peer mapping (before its first use); returns its slot.  The
    SIGBUS handler is installed here, and put back in front if another one
    (faulthandler.enable(), say) took its place since."""
    if guard_install(_wake_w) != 0:
        raise OSError("cannot install the SIGBUS handler")
    cdef int slot = guard_register(base, size)
    if slot < 0:
        raise MemifError("too many shared memory regions in this process (%d)" % GUARD_SLOTS)
    _owners[slot] = weakref.ref(owner)
    return slot


cdef void forget(int slot) noexcept:
    """Before munmap: the handler no longer looks at this mapping."""
    _owners.pop(slot, None)
    guard_release(slot)


cdef bint faulted(int slot) noexcept nogil:
    return guard_faulted(slot) != 0


def fileno():
    """Readable after a fault: poll it and call :func:`dispatch`."""
    return _wake_r


def fault_count():
    """Peer mappings replaced by zeros in this process, ever."""
    return guard_fault_count()


def dispatch():
    """Drain the wake pipe; call ``on_fault()`` once for each owner whose
    mapping faulted since.  Any thread; each fault is dispatched once."""
    try:
        while os.read(_wake_r, 4096):
            pass
    except BlockingIOError:
        pass
    for slot, ref in list(_owners.items()):
        if not guard_take_report(slot):
            continue
        owner = ref()
        callback = getattr(owner, "on_fault", None)
        log.info("memif: a peer truncated memory it shares with us; its pages read as zeros")
        if callback is not None:
            try:
                callback()
            except Exception:
                log.exception("memif: fault callback failed")
