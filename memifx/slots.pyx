# cython: language_level=3
"""Counter slots in a shared stats file (see memifx/stats/).

A queue counts into a ``counters_t`` (memifx/ring.pxd): normally one inside
the Queue object, but ``attach`` points it at a slot of a mapping we share
with readers in other processes, so the data path publishes its counters by
simply counting.  ``attach_node`` does the same for a node's counter block
(memifx/counted.pyx: xconnect, ip4 router).  Also the seqlock word of the file's header: writers make it
odd while they change metadata or move counters, readers retry until they saw
the same even value before and after their copy.
"""
from libc.stdint cimport uint64_t
from memifx.ring cimport Queue, counters_t, N_DROPS
from memifx.counted cimport CountedNode

from memifx.ring import DROP_REASONS

cdef extern from *:
    """
    #include <stdint.h>
    static inline uint64_t mx_seq_load(const uint64_t *p) {
        uint64_t v = __atomic_load_n(p, __ATOMIC_ACQUIRE);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        return v;
    }
    static inline void mx_seq_begin(uint64_t *p) {
        __atomic_store_n(p, *p + 1, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_RELEASE);  /* odd before any data */
    }
    static inline void mx_seq_end(uint64_t *p) {
        __atomic_store_n(p, *p + 1, __ATOMIC_RELEASE);  /* data before even */
    }
    """
    uint64_t mx_seq_load(const uint64_t *p) noexcept nogil
    void mx_seq_begin(uint64_t *p) noexcept nogil
    void mx_seq_end(uint64_t *p) noexcept nogil


COUNTER_SIZE = sizeof(counters_t)


def _fields():
    """[(name, byte offset)] of every u64 in counters_t as the compiler laid
    it out: what tests/test_stats.py compares memifx/stats/schema.py QUEUE
    with.  Drops are named "drops:<reason>"; a field added to the struct
    without a name here shows up as "extra<byte offset>"."""
    cdef counters_t t
    cdef char *b = <char *>&t
    named = {
        <Py_ssize_t>(<char *>&t.packets - b): "packets",
        <Py_ssize_t>(<char *>&t.bytes - b): "bytes",
        <Py_ssize_t>(<char *>&t.ring_full - b): "ring_full",
        <Py_ssize_t>(<char *>&t.irq_sent - b): "irq_sent",
        <Py_ssize_t>(<char *>&t.irq_received - b): "irq_received",
        <Py_ssize_t>(<char *>&t.mode_switches - b): "mode_switches",
        <Py_ssize_t>(<char *>&t.chain_waits - b): "chain_waits",
    }
    for i in range(N_DROPS):
        named[<Py_ssize_t>(<char *>&t.drops[i] - b)] = "drops:" + DROP_REASONS[i]
    return [(named.get(off, "extra%d" % off), off) for off in range(0, sizeof(counters_t), 8)]


COUNTER_FIELDS = _fields()


cdef char *_address(object buf, Py_ssize_t offset, Py_ssize_t size) except NULL:
    """The address of ``size`` bytes at ``offset`` in a writable buffer (an
    mmap).  The pointer stays valid while the mapping does: callers keep the
    mapping alive (it is never closed explicitly)."""
    cdef unsigned char[::1] view = buf
    if offset < 0 or offset % 8 or offset + size > view.shape[0]:
        raise ValueError("slot %d+%d outside a %d-byte mapping" % (offset, size, view.shape[0]))
    return <char *>&view[0] + offset


def attach(Queue q not None, object buf, Py_ssize_t offset, object owner):
    """Make ``q`` count into the slot at ``offset`` of ``buf`` from now on
    (carrying over what it counted so far); ``owner`` keeps ``buf`` mapped."""
    q.attach_counters(<counters_t *>_address(buf, offset, sizeof(counters_t)), owner)


def attach_node(CountedNode node not None, object buf, Py_ssize_t offset, object owner,
                Py_ssize_t block=0):
    """Make counter block ``block`` of ``node`` (an XConnect, a Router, any
    memifx.counted.CountedNode) count into the slot at ``offset`` of ``buf``,
    adding its counts so far to the slot's; ``owner`` keeps ``buf`` mapped."""
    cdef Py_ssize_t size = node.block_size(block)
    node.count_into(block, <uint64_t *>_address(buf, offset, size), owner)


def detach(Queue q not None):
    """Back to the queue's private counters (the shared slot keeps its values)."""
    q.attach_counters(&q.own, None)


def seq_begin(object buf, Py_ssize_t offset):
    mx_seq_begin(<uint64_t *>_address(buf, offset, 8))


def seq_end(object buf, Py_ssize_t offset):
    mx_seq_end(<uint64_t *>_address(buf, offset, 8))


def seq_load(const unsigned char[::1] buf, Py_ssize_t offset):
    if offset < 0 or offset % 8 or offset + 8 > buf.shape[0]:
        raise ValueError("seq word outside the mapping")
    return mx_seq_load(<const uint64_t *>(&buf[0] + offset))
