# cython: language_level=3
"""A queue's private state, whole, so that another Queue over the same ring
(in this process or in a worker) continues exactly where this one stopped.

A Queue keeps its own ring position, and a slave receive queue also keeps
its own record of which pool buffer sits in each slot it posted and which
buffers are free (it never reads that back from the ring: the peer may
rewrite descriptors).  Handing a live queue to a worker and back without
taking the link down needs all of it: ``export_state`` reads it,
``restore_state`` installs it in a queue rebuilt from the same geometry.
The state is plain JSON: ``[pos, posted, posted_bufs, free_bufs]``, the
lists empty but for a slave receive queue.

Only a quiescent queue can be exported: no zero-copy buffers lent out, no
tx_alloc slots reserved (they would be lost or delivered twice).
"""
from libc.stdint cimport uint16_t, uint32_t
from memifx.ring cimport Queue

from memifx.errors import MemifError


def export_state(Queue q not None):
    """``[pos, posted, posted_bufs, free_bufs]`` of ``q``: its positions
    and, for a slave receive queue, the pool buffer of each slot from pos
    to posted and its free stack (bottom first).  MemifError if buffers are
    lent out."""
    cdef uint16_t i, n
    if q.zc_held or q.reserved:
        raise MemifError("queue %d has buffers lent out: it cannot be handed over now"
                         % q.index)
    posted, free = [], []
    if q.free_bufs != NULL:
        n = <uint16_t>(q.posted - q.pos)
        posted = [q.slot_buf[<uint16_t>(q.pos + i) & q.mask] for i in range(n)]
        free = [q.free_bufs[i] for i in range(q.nfree)]
    return [q.pos, q.posted, posted, free]


def restore_state(Queue q not None, state):
    """Continue from ``state`` (export_state of a queue of the same
    geometry).  ValueError if it does not fit this queue: for a slave
    receive queue, the posted and free buffers must be every pool buffer
    exactly once and no more slots posted than the ring has."""
    cdef uint32_t k
    pos, posted, posted_bufs, free_bufs = state
    if type(pos) is not int or type(posted) is not int or not (0 <= pos <= 0xFFFF and 0 <= posted <= 0xFFFF):
        raise ValueError("queue %d: positions out of range" % q.index)
    if q.free_bufs == NULL:
        if posted_bufs or free_bufs:
            raise ValueError("queue %d keeps no buffer pool" % q.index)
        q.pos, q.posted = pos, posted
        return
    in_use = <uint16_t>(posted - pos)
    if in_use > q.size or len(posted_bufs) != in_use \
            or len(posted_bufs) + len(free_bufs) != q.nbufs:
        raise ValueError("queue %d: %d posted and %d free buffers do not make its pool "
                         "of %d with %d slots posted" % (q.index, len(posted_bufs),
                                                        len(free_bufs), q.nbufs, in_use))
    seen = bytearray(q.nbufs)
    for v in list(posted_bufs) + list(free_bufs):
        if type(v) is not int or not 0 <= v < q.nbufs or seen[v]:
            raise ValueError("queue %d: buffer %r twice or outside its pool" % (q.index, v))
        seen[v] = 1
    q.pos, q.posted = pos, posted
    for k in range(in_use):
        q.slot_buf[<uint16_t>(pos + k) & q.mask] = posted_bufs[k]
    for k in range(len(free_bufs)):
        q.free_bufs[k] = free_bufs[k]
    q.nfree = len(free_bufs)
    q.zc_held = 0
