from libc.stdint cimport uint32_t, uint64_t
from memifx.counted cimport CountedNode
from memifx.ring cimport Queue

# Why the l2-xconnect node dropped a frame it received (frames the receive
# queue itself dropped are in that queue's counters, never here).
cdef enum:  # XConnect drop reasons
    XC_TX_FULL = 0        # no room in the transmit ring
    XC_LINK_DOWN = 1      # the transmit interface is down
    XC_TOO_LONG = 2       # longer than the transmit queue's max_frame or its peer's ring
    XC_TX_FAULT = 3       # the transmit queue faulted (its link is being dropped)
    N_XC_DROPS = 4

cdef struct xc_counters_t:          # u64s only: a stats file slot holds it
    uint64_t packets                # forwarded
    uint64_t bytes
    uint64_t drops[N_XC_DROPS]

cdef class XConnect(CountedNode):  # one counter block (0): xc_counters_t
    cdef xc_counters_t *c           # &own, or a slot in a shared stats file
    cdef xc_counters_t own
    cdef uint32_t *nparts           # segments of each frame of a burst with chained ones
    cdef uint32_t nparts_size

    cdef int forward(self, Queue rxq, Queue txq, uint32_t max_frames) noexcept nogil
