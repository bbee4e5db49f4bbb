"""CPU sets for the multi-queue cells: which CPUs each side's busy pollers get,
and whether this machine has enough of them.

A multi-queue cell at N queues has two sides of N busy pollers each (the
sender's workers and the receiver's or DUT's workers) and one housekeeping
CPU for what sleeps: the memifx commands' main processes (control plane,
counters once a second) and testpmd's main lcores.  The sets never overlap,
so no two busy pollers ever share a CPU; a machine with fewer than 2N + 1
usable CPUs does not get the cell at that N (skipped, with the reason).
"""
import os
from collections import namedtuple

Plan = namedtuple("Plan", "housekeeping sender receiver")
Plan.__doc__ = """CPUs of one multi-queue cell: ``housekeeping`` (one CPU for the
main processes, which sleep), ``sender`` and ``receiver`` (N CPUs each, one
per busy worker or lcore)."""


def usable_cpus():
    """The CPUs this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))


def cpus_needed(n):
    """CPUs a cell with ``n`` queues needs: n pollers per side plus one for
    housekeeping."""
    return 2 * n + 1


def plan(n, cpus):
    """The Plan for ``n`` queues over ``cpus`` (a list of CPU numbers) and
    None, or None and the reason it cannot run here."""
    if n < 1:
        return None, "%d queues: at least 1 needed" % n
    cpus = sorted(set(cpus))
    need = cpus_needed(n)
    if len(cpus) < need:
        return None, ("%d queue%s: needs %d CPUs (%d busy per side + 1 housekeeping), "
                      "%d usable here" % (n, "s" if n > 1 else "", need, n, len(cpus)))
    return Plan(cpus[0], cpus[1:1 + n], cpus[1 + n:1 + 2 * n]), None


def cpu_list(cpus):
    """``cpus`` as the comma-separated text that --cpus and testpmd's -l take."""
    return ",".join(str(c) for c in cpus)
