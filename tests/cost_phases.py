"""The measured phase of a cost workload (tests/cost_burst.py,
tests/cost_echo.py) under callgrind.

A workload runs its loop over N frames twice, the first time to warm up,
and marks the end of each run by calling ``memifx.ring.irq_guard_signo``
(which nothing else in a workload calls).  tests/test_cost.py runs it with
``--dump-before=MARK``: callgrind writes a profile at each mark, so the last
numbered one holds the measured N frames alone; start-up, imports, building
the rings and every first-call cost are in the ones before.  One process a
cell, where a difference of two runs (N and 2N frames) took two; the
generator's step adds about 1 Ir a frame (one a burst of 256) to a whole
program's figure.
"""
from memifx.ring import irq_guard_signo

MARK = "__pyx_pw_6memifx_4ring_*irq_guard_signo"
PHASES = 2          # frames a workload moves in all: PHASES * N


def bursts(k):
    """Iterate ``k`` bursts to warm up, mark, ``k`` measured bursts, mark."""
    for _ in range(PHASES):
        for _ in range(k):
            yield
        irq_guard_signo()
