# C declarations of csrc/irq_guard.h: eventfd reads and writes that wait on
# the peer at most IRQ_GUARD_BOUND_NS (a per-thread timer interrupts them).
from libc.stdint cimport uint64_t

cdef extern from "irq_guard.h" nogil:
    const long IRQ_GUARD_BOUND_NS
    const int IRQ_GUARD_UNAVAILABLE
    int irq_guard_write(int fd, uint64_t v)
    int irq_guard_read(int fd, uint64_t *v)
    int irq_guard_signal()
