# cython: language_level=3
"""Nodes whose counters can live in a stats file slot.

A node (an xconnect direction, the ip4 router, ...) keeps its counters in
*blocks*: each block one C struct of u64s (or a fixed run of them), counted
into with plain increments on the data path.  A block starts in the node's
own memory; ``count_into`` moves it into a slot of a shared stats file
(memifx/stats/writer.py ``node_slot``, memifx/slots.pyx ``attach_node``), adding
what was counted so far to what the slot holds.  From then on the node
counts straight into shared memory: its totals outlive the process, and a
worker that replaces a killed one continues in the same slot.

A subclass says how many bytes block ``b`` has (``block_size``), where it
counts now (``block_at``) and takes the new address (``block_moved``);
moving and keeping the mapping alive are done here, once for every node kind.
"""
from libc.stdint cimport uint64_t


cdef class CountedNode:
    """Base of nodes with counter blocks (see the module docstring)."""

    cdef Py_ssize_t block_size(self, Py_ssize_t block) except -1:
        raise ValueError("no counter block %d" % block)

    cdef uint64_t *block_at(self, Py_ssize_t block) noexcept:
        return NULL

    cdef void block_moved(self, Py_ssize_t block, uint64_t *at) noexcept:
        pass

    cdef int count_into(self, Py_ssize_t block, uint64_t *slot, object owner) except -1:
        """Count block ``block`` into ``slot`` (block_size bytes) from now on,
        adding what it holds now; ``owner`` keeps the slot's memory mapped."""
        cdef Py_ssize_t i, n = self.block_size(block) // 8
        cdef uint64_t *cur = self.block_at(block)
        if cur == NULL:
            raise ValueError("no counter block %d" % block)
        if cur != slot:
            for i in range(n):
                slot[i] += cur[i]
        self.block_moved(block, slot)
        if self.block_owners is None:
            self.block_owners = {}
        self.block_owners[block] = owner
        return 0

    def counter_block_size(self, Py_ssize_t block=0):
        """Bytes of counter block ``block`` (what its stats file slot needs)."""
        return self.block_size(block)
