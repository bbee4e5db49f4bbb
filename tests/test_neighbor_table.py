"""The shared neighbor table (memifx/neighbor.pyx): a dict's semantics under
random add / change / remove sequences (tombstones keep probe chains whole,
trailing ones are cleared), the capacity limit, a read-only view in another
process that follows changes and never returns a MAC that was not the
key's, and the Router reading the same table."""
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memifx.neighbor import NeighborTable, NeighborTableFull

SETTINGS = settings(deadline=None, max_examples=80, suppress_health_check=[HealthCheck.too_slow])


def mac(k):
    return bytes([2, 0, 0, (k >> 16) & 0xFF, (k >> 8) & 0xFF, k & 0xFF])


@pytest.mark.timeout(120)
@SETTINGS
@given(ops=st.lists(st.tuples(st.booleans(), st.integers(0, 3), st.integers(0, 40),
                              st.integers(0, 1000)), max_size=200))
def test_behaves_like_a_dict(ops):
    t = NeighborTable(64)                 # small: long chains, wrap-around, tombstones
    want = {}
    for add, ifindex, ip, m in ops:
        if add and len(want) < 40:
            t.add(ifindex, ip, mac(m))
            want[(ifindex, ip)] = mac(m)
        else:
            assert t.discard(ifindex, ip) == ((ifindex, ip) in want)
            want.pop((ifindex, ip), None)
        assert len(t) == len(want)
    for ifindex in range(4):
        for ip in range(41):
            assert t.get(ifindex, ip) == want.get((ifindex, ip))
    assert sorted(t.items()) == sorted((i, ip, m) for (i, ip), m in want.items())
    view = NeighborTable.from_shared(t.fd)
    assert sorted(view.items()) == sorted(t.items())
    for (i, ip) in want:
        t.discard(i, ip)
    assert t.tombstones == 0            # an empty table has no chains left to keep


@pytest.mark.timeout(60)
def test_capacity_and_read_only_view():
    t = NeighborTable(16)
    for k in range(12):
        t.add(0, k, mac(k))
    with pytest.raises(NeighborTableFull, match="neighbor table full"):
        t.add(0, 99, mac(99))
    t.add(0, 3, mac(33))                # changing one is no new entry
    t.discard(0, 5)                     # a tombstone (unless its chain ended there)
    t.add(0, 5, mac(55))                # back in its own slot
    t.discard(0, 4)
    t.discard(0, 6)
    t.discard(0, 7)
    t.add(0, 99, mac(99))
    view = NeighborTable.from_shared(t.fd)
    assert view.shared and view.get(0, 99) == mac(99) and view.get(0, 3) == mac(33)
    assert view.get(0, 5) == mac(55) and view.get(0, 4) is None
    with pytest.raises(ValueError, match="read-only"):
        view.add(0, 1, mac(1))
    with pytest.raises(ValueError, match="read-only"):
        view.discard(0, 1)
    t.discard(0, 99)
    assert view.get(0, 99) is None


@pytest.mark.timeout(60)
def test_router_reads_the_shared_table():
    from memifx.fib import Fib
    from memifx.ip4 import Router
    t = NeighborTable()
    r = Router(Fib(groups=4, nexthops=4), t)
    r.add_neighbor(1, 7, mac(7))
    assert t.get(1, 7) == mac(7) and r.neighbor(1, 7) == mac(7) and r.nbr_count == 1
    t.add(1, 8, mac(8))
    assert (1, 8, mac(8)) in r.neighbors()
    assert r.remove_neighbor(1, 7) and not r.remove_neighbor(1, 7)
    assert r.neighbor_table is t


HAMMER = r"""
import sys
from memifx.neighbor import NeighborTable
view = NeighborTable.from_shared(int(sys.argv[1]))
bad = seen = 0
for _ in range(int(sys.argv[2])):
    for ip in range(8):
        m = view.get(0, ip)
        if m is not None:
            seen += 1
            if m[5] != ip or m[4] != m[3]:      # another key's MAC, or half of one
                bad += 1
print(bad, seen)
"""


@pytest.mark.timeout(90)
def test_a_reader_never_gets_another_keys_mac():
    """The writer removes and re-adds keys that land in each other's slots
    (tombstones reused) and changes MACs, while a reader process looks up
    every key: each answer is that key's MAC, whole, or a miss."""
    t = NeighborTable(16)
    p = subprocess.Popen([sys.executable, "-c", HAMMER, str(t.fd), "20000"],
                         pass_fds=[t.fd], stdout=subprocess.PIPE, text=True)
    try:
        n = 0
        while p.poll() is None:
            for ip in range(8):
                t.add(0, ip, bytes([2, 0, 0, n & 0xFF, n & 0xFF, ip]))
            for ip in range(0, 8, 2):
                t.discard(0, ip)
            n += 1
        out, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    bad, seen = map(int, out.split())
    assert bad == 0 and seen > 0 and n > 10
