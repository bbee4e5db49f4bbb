"""The live FIB: routes changed while readers in other processes look up.

- add / replace / delete against a brute-force longest-prefix match
  (hypothesis: random sequences), blocks folded back and reused, next-hop
  records counted and freed, FibFull at the fixed capacities;
- retired items held back until sync_done when readers elsewhere may still
  see them (defer_reuse), reused at once otherwise;
- apply_routes: the difference only, in counts;
- the shared view follows every change; the seals: no one else can map the
  file writable, write to it or resize it (checked from another process).
"""
import mmap
import os
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memifx.fib import Fib, FibFull, RouteError, pack_route
from memifx.routes import load_routes, parse_routes
from test_ip4 import ANCHORS, A, brute_lpm, mask, near_address

SETTINGS = settings(deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow])

# Small capacities: the same code, and exhaustion is reachable.
SMALL = dict(groups=64, nexthops=64)


def gw_of(fib, addr):
    i = fib.lookup(addr)
    return None if i < 0 else fib.nexthop(i)[1]


def probes_for(routes, extra=()):
    out = list(extra) + list(ANCHORS)
    for net, length in routes:
        out += [net, net | (~mask(length) & 0xFFFFFFFF), (net - 1) & 0xFFFFFFFF,
                (net | (~mask(length) & 0xFFFFFFFF)) + 1 & 0xFFFFFFFF]
    return out


@st.composite
def operations(draw):
    """[(op, (net, length), gateway)]: adds (some replacing), deletes of
    present and absent routes, over prefixes that overlap a lot."""
    pool = draw(st.lists(st.tuples(near_address(), st.integers(0, 32)), min_size=1, max_size=25))
    pool = [(a & mask(l), l) for a, l in pool]
    ops = []
    for _ in range(draw(st.integers(1, 60))):
        key = draw(st.sampled_from(pool))
        if draw(st.integers(0, 2)) == 0:
            ops.append(("del", key, 0))
        else:
            ops.append(("add", key, draw(st.integers(1, 6))))
    return ops


@pytest.mark.timeout(120)
@SETTINGS
@given(ops=operations(), extra=st.lists(near_address(), max_size=20))
def test_add_replace_delete_match_brute_force(ops, extra):
    fib = Fib(**SMALL)
    routes = {}
    for op, (net, length), gw in ops:
        if op == "add":
            fib.insert(net, length, fib.add_nexthop("gateway", gw, 0))
            routes[(net, length)] = gw
        else:
            assert fib.delete(net, length) == ((net, length) in routes)
            routes.pop((net, length), None)
    probes = probes_for(routes, extra) + probes_for([k for _, k, _ in ops])
    assert [gw_of(fib, a) for a in probes] == [brute_lpm(routes, a) for a in probes]
    assert fib.routes == len(routes)
    assert sorted((p, l) for p, l, _ in fib.route_list()) == sorted(routes)
    # a block exactly for each /24 holding a route longer than /24
    assert fib.blocks == len({net >> 8 for net, length in routes if length > 24})
    # next-hop records: one per gateway in use (unused ones were freed)
    used = {fib.nexthop(i) for _, _, i in fib.route_list()}
    assert used == {("gateway", gw, 0) for gw in routes.values()}
    # deleting everything leaves an empty table
    for net, length in list(routes):
        assert fib.delete(net, length)
    assert fib.routes == 0 and fib.blocks == 0
    assert all(fib.lookup(a) == -1 for a in probes)


@pytest.mark.timeout(60)
def test_delete_restores_the_covering_route_and_folds_blocks():
    fib = Fib(**SMALL)
    fib.add_route("10.0.0.0/8", "gateway", 1)
    fib.add_route("10.1.0.0/16", "gateway", 2)
    fib.add_route("10.1.2.0/24", "gateway", 3)
    fib.add_route("10.1.2.128/25", "gateway", 4)
    fib.add_route("10.1.2.200/32", "gateway", 5)
    assert fib.blocks == 1
    assert [gw_of(fib, a) for a in ("10.1.2.200", "10.1.2.201", "10.1.2.5", "10.1.3.1",
                                    "10.2.0.1")] == [5, 4, 3, 2, 1]
    assert fib.delete_route("10.1.2.128/25")
    assert [gw_of(fib, a) for a in ("10.1.2.200", "10.1.2.201", "10.1.2.5")] == [5, 3, 3]
    assert fib.blocks == 1
    assert fib.delete_route("10.1.2.200/32")        # the last one longer than /24
    assert fib.blocks == 0 and gw_of(fib, "10.1.2.200") == 3
    assert fib.delete_route("10.1.0.0/16")
    assert [gw_of(fib, a) for a in ("10.1.2.5", "10.1.3.1")] == [3, 1]
    assert not fib.delete_route("10.1.0.0/16")
    assert fib.delete_route("10.0.0.0/8")
    assert [gw_of(fib, a) for a in ("10.1.2.5", "10.1.3.1")] == [3, None]
    # replacing keeps the route count and moves the traffic
    fib.add_route("10.1.2.0/24", "gateway", 9)
    assert fib.routes == 1 and gw_of(fib, "10.1.2.5") == 9
    assert fib.route("10.1.2.0/24") == fib.lookup("10.1.2.5") and fib.route("10.0.0.0/8") is None


@pytest.mark.timeout(60)
def test_capacity_full_and_reuse():
    fib = Fib(groups=4, nexthops=3)
    for k in range(4):
        fib.add_route("10.0.%d.1/32" % k, "gateway", 1)
    assert fib.blocks == 4
    with pytest.raises(FibFull, match="FIB full: all 4 second-level blocks"):
        fib.add_route("10.0.9.1/32", "gateway", 1)
    assert fib.lookup("10.0.9.1") == -1 and fib.routes == 4     # nothing half done
    # without readers elsewhere a freed block is reused at once
    fib.delete_route("10.0.0.1/32")
    fib.add_route("10.0.9.1/32", "gateway", 1)
    assert gw_of(fib, "10.0.9.1") == 1
    fib.add_route("1.0.0.0/8", "gateway", 2)
    fib.add_route("2.0.0.0/8", "gateway", 3)
    with pytest.raises(FibFull, match="next-hop records"):
        fib.add_route("3.0.0.0/8", "gateway", 4)
    fib.delete_route("2.0.0.0/8")               # gateway 3 unused: its record is freed
    fib.add_route("3.0.0.0/8", "gateway", 4)
    assert gw_of(fib, "3.1.1.1") == 4 and gw_of(fib, "2.1.1.1") is None
    with pytest.raises(FibFull) as e:           # from routes text: line and text too
        load_routes(fib, b"# x\n10.0.20.1/32 dev a\n", ["a"])
    assert e.value.line == 2 and isinstance(e.value, RouteError)


@pytest.mark.timeout(60)
def test_retired_items_wait_for_readers():
    fib = Fib(groups=2, nexthops=4)
    fib.defer_reuse = True
    fib.add_route("10.0.0.1/32", "gateway", 1)
    fib.add_route("10.0.1.1/32", "gateway", 1)
    fib.delete_route("10.0.0.1/32")
    assert fib.retired == 1                     # the block: a reader may still be in it
    with pytest.raises(FibFull, match="1 waiting for readers"):
        fib.add_route("10.0.2.1/32", "gateway", 1)
    token = fib.sync_begin()
    fib.delete_route("10.0.1.1/32")             # retired after the token: held back
    assert fib.retired == 3                     # two blocks and gateway 1's record
    assert fib.sync_done(token) == 1 and fib.retired == 2
    fib.add_route("10.0.2.1/32", "gateway", 1)
    assert fib.sync_done(fib.sync_begin()) == 2 and fib.retired == 0


@pytest.mark.timeout(60)
def test_apply_routes_changes_only_the_difference():
    fib = Fib(**SMALL)
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    base = pack_route(A("10.0.1.0"), 24, "connected", ifindex=0)
    first = parse_routes(fib, b"172.16.0.0/12 via 10.0.1.9\n172.16.5.0/24 via 10.0.1.8\n"
                             b"192.0.2.0/24 dev a\n", ["a"])
    assert fib.apply_routes(base + first) == (3, 0, 0)
    assert fib.apply_routes(base + first) == (0, 0, 0)
    second = parse_routes(fib, b"172.16.0.0/12 via 10.0.1.7\n172.16.5.0/24 via 10.0.1.8\n"
                              b"198.51.100.0/24 dev a\n", ["a"])
    assert fib.apply_routes(base + second) == (1, 1, 1)
    assert gw_of(fib, "172.16.9.9") == A("10.0.1.7") and fib.lookup("192.0.2.1") == -1
    assert fib.nexthop(fib.lookup("198.51.100.1")) == ("connected", 0, 0)
    # later records win; a bad record changes nothing
    assert fib.apply_routes(base + second + pack_route(A("172.16.0.0"), 12, "gateway",
                                                       A("10.0.1.6"))) == (0, 0, 1)
    with pytest.raises(ValueError, match="not a route"):
        fib.apply_routes(base + pack_route(A("10.0.0.1"), 8, "connected"))
    assert fib.routes == 4
    # a bad line: nothing parsed, nothing changed
    with pytest.raises(RouteError) as e:
        parse_routes(fib, b"10.9.0.0/16 dev a\nnonsense\n", ["a"])
    assert e.value.line == 2 and fib.routes == 4


@pytest.mark.timeout(60)
def test_shared_view_follows_changes():
    fib = Fib(**SMALL)
    view = Fib.from_shared(fib.fd)
    assert view.lookup("10.1.2.3") == -1
    fib.add_route("10.0.0.0/8", "gateway", 1)
    assert view.nexthop(view.lookup("10.1.2.3")) == ("gateway", 1, 0)
    fib.add_route("10.1.2.0/28", "gateway", 2)
    assert view.nexthop(view.lookup("10.1.2.3")) == ("gateway", 2, 0) and view.blocks == 1
    fib.delete_route("10.1.2.0/28")
    assert view.nexthop(view.lookup("10.1.2.3")) == ("gateway", 1, 0) and view.blocks == 0
    fib.delete_route("10.0.0.0/8")
    assert view.lookup("10.1.2.3") == -1 and view.routes == 0


TRY_WRITE = r"""
import mmap, os, sys
fd = int(sys.argv[1])
size = os.fstat(fd).st_size
results = []
for what, attempt in (
        ("mmap", lambda: mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)),
        ("write", lambda: os.pwrite(fd, b"x", 0)),
        ("truncate", lambda: os.ftruncate(fd, size // 2)),
        ("grow", lambda: os.ftruncate(fd, size * 2))):
    try:
        attempt()
        results.append(what + " allowed")
    except OSError:
        results.append(what + " refused")
m = mmap.mmap(fd, size, mmap.MAP_SHARED, mmap.PROT_READ)
results.append("read ok" if m[:8] else "read empty")
print(",".join(results))
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("table", ["fib", "neighbors"])
def test_no_other_process_can_map_it_writable(table):
    from memifx.neighbor import NeighborTable
    t = Fib(**SMALL) if table == "fib" else NeighborTable(64)
    if table == "fib":
        t.add_route("10.0.0.0/8", "gateway", 1)
    else:
        t.add(0, 1, b"\x02\x00\x00\x00\x00\x01")
    out = subprocess.run([sys.executable, "-c", TRY_WRITE, str(t.fd)], pass_fds=[t.fd],
                         capture_output=True, text=True, timeout=30)
    assert out.stdout.strip() == ("mmap refused,write refused,truncate refused,grow refused,"
                                  "read ok"), out.stderr
    # the same in this process: only the creator's first mapping is writable
    with pytest.raises(OSError):
        mmap.mmap(t.fd, os.fstat(t.fd).st_size, mmap.MAP_SHARED, mmap.PROT_WRITE)


@pytest.mark.timeout(60)
def test_a_reader_refuses_an_unsealed_or_bad_file():
    from memifx.neighbor import NeighborTable
    from memifx.sealed import SharedTableError
    fd = os.memfd_create("not-sealed")
    try:
        os.ftruncate(fd, 1 << 20)
        for cls in (Fib, NeighborTable):
            with pytest.raises(SharedTableError, match="not sealed"):
                cls.from_shared(fd)
    finally:
        os.close(fd)
    t = NeighborTable(64)
    with pytest.raises(SharedTableError, match="header"):
        Fib.from_shared(t.fd)           # sealed, but not a FIB


CONCURRENT_READER = r"""
import sys
from array import array
from memifx.fib import Fib
view = Fib.from_shared(int(sys.argv[1]))
addrs = array("I", [int(a) for a in sys.argv[2].split(",")])
out = array("q", [0]) * len(addrs)
allowed = [set(), set()]
for k in range(2):
    for x in sys.argv[3 + k].split(","):
        allowed[k].add(int(x))
bad = 0
for _ in range(int(sys.argv[5])):
    view.lookup_many(addrs, out)
    for i, r in enumerate(out):
        gw = -1 if r < 0 else view.nexthop(r)[1]
        if gw not in allowed[i % 2]:
            bad += 1
print("bad", bad)
"""


@pytest.mark.timeout(90)
def test_a_reader_in_another_process_sees_only_old_or_new():
    """While the main process adds and deletes longer routes over and over
    (blocks split, filled, folded), a reader process only ever gets one of
    the answers the routes allow: the /16's gateway or the /30's."""
    fib = Fib(groups=8, nexthops=8)
    # Blocks are reused at once here (every incarnation of the block holds
    # only these two routes' entries, so reuse cannot change the answers):
    # the writer keeps going for as long as the reader reads.
    fib.add_route("10.1.0.0/16", "gateway", 16)
    addrs = [A("10.1.2.1"), A("10.1.2.100")]     # inside the /30 / never inside
    p = subprocess.Popen([sys.executable, "-c", CONCURRENT_READER, str(fib.fd),
                          ",".join(map(str, addrs)), "16,30", "16", "20000"],
                         pass_fds=[fib.fd], stdout=subprocess.PIPE, text=True)
    try:
        cycles = 0
        while p.poll() is None:
            fib.add_route("10.1.2.0/30", "gateway", 30)
            fib.delete_route("10.1.2.0/30")
            cycles += 1
        out, _ = p.communicate(timeout=60)
    finally:
        p.kill()
    assert out.split() == ["bad", "0"] and cycles > 100
