"""ip4-forward with workers and routes changed at run time.

SIGHUP re-reads --routes-file: traffic on both queues (both workers) moves
to a changed next hop, a new route starts carrying traffic, a bad file is
rejected whole, and a deleted route's traffic falls back to the covering
--route or to "no route", all without a restart.  And the memory the tables
cost the main process: with a million routes and two workers, the FIB is in
shared memory once, not also in the main process's heap.
"""
import ipaddress
import random
import re
import signal
import time

import pytest
from scapy.all import Ether, IP, raw

from conftest import read_until, wait_for
from test_ip4 import N252, N253, N254, collect, close_all, slaves, stop_json, udp
from test_ip4_workers import QUEUES, router, up_on_every_queue, workers_of

ROUTED = "172.30.1.1"          # inside the --route 172.16.0.0/12 via 10.0.2.253
OTHER = "203.0.113.5"          # no route but the file's


def out_mac(a, b, dst, q, ident):
    """Send one frame to ``dst`` on queue q of a: the destination MAC it
    leaves b with, or None if it does not come out."""
    assert a.tx_burst([raw(udp(dst, id=ident))], queue=q) == 1
    got = [Ether(f) for f in collect(b, 1, 0.5, queue=q)]
    assert all(f[IP].id == ident for f in got)
    return got[0].dst if got else None


def paths(a, b, ident):
    return {(dst, q): out_mac(a, b, dst, q, ident + 10 * q + k)
            for k, dst in enumerate((ROUTED, OTHER)) for q in range(QUEUES)}


def reload(p, routes_file, text, token):
    routes_file.write_text(text)
    p.send_signal(signal.SIGHUP)
    return read_until(p, token, 15)


@pytest.mark.timeout(120)
def test_sighup_reload_with_workers(procs, sock, tmp_path):
    routes_file = tmp_path / "routes.txt"
    routes_file.write_text("172.30.0.0/16 via 10.0.2.252\n")
    p = router(procs, sock, "--routes-file", str(routes_file))
    assert wait_for(lambda: len(workers_of(p)) == 2, 10)
    pids = sorted(w.pid for w in workers_of(p))
    a, b, c = ifs = slaves(sock, rx_queues=QUEUES, tx_queues=QUEUES)
    unrouted = 0
    try:
        up_on_every_queue(ifs)
        got = paths(a, b, 100)
        assert got == {(ROUTED, 0): N252, (ROUTED, 1): N252, (OTHER, 0): None, (OTHER, 1): None}
        unrouted += 2
        # a changed next hop and a new route
        line = reload(p, routes_file, "203.0.113.0/24 via 10.0.2.252\n"
                      "172.30.0.0/16 via 10.0.2.254\n", "routes reload")
        assert re.search(r"routes reloaded: \+1 -0 ~1 \([\d.]+ s\)", line), line
        assert wait_for(lambda: paths(a, b, 200)[(ROUTED, 1)] == N254, 5, 0.05)
        assert paths(a, b, 300) == {(ROUTED, 0): N254, (ROUTED, 1): N254,
                                    (OTHER, 0): N252, (OTHER, 1): N252}
        # a bad line: nothing of the file is taken
        line = reload(p, routes_file, "203.0.113.0/24 via 10.0.2.253\nbogus line\n",
                      "routes reload")
        assert "rejected" in line and "line 2" in line and "routes unchanged" in line
        assert paths(a, b, 400)[(OTHER, 0)] == N252
        # everything removed: the covering --route takes over, the rest has no route
        line = reload(p, routes_file, "# nothing\n", "routes reload")
        assert "routes reloaded: +0 -2 ~0" in line, line
        assert paths(a, b, 500) == {(ROUTED, 0): N253, (ROUTED, 1): N253,
                                    (OTHER, 0): None, (OTHER, 1): None}
        unrouted += 2
        assert sorted(w.pid for w in workers_of(p)) == pids         # no restart
    finally:
        close_all(ifs)
    result = stop_json(p)
    assert result["workers"] == {"count": 2, "restarts": 0}
    reloads = result["route reloads"]
    assert [r["ok"] for r in reloads] == [True, False, True]
    assert [(r["added"], r["removed"], r["changed"]) for r in reloads if r["ok"]] == \
        [(1, 0, 1), (0, 2, 0)]
    assert result["drops"]["no route"] == unrouted


def million_routes_file(path):
    rnd = random.Random(11)
    nets = set()
    while len(nets) < 1_000_000:
        length = 24 if rnd.random() < 0.9 else rnd.choice((20, 22, 26, 28, 32))
        nets.add((rnd.getrandbits(32) & ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF), length))
    gws = ["10.0.2.%d" % k for k in range(2, 10)]
    path.write_text("".join("%s/%d via %s\n" % (ipaddress.IPv4Address(n), l, gws[k % 8])
                            for k, (n, l) in enumerate(nets)))


def status(pid):
    with open("/proc/%d/status" % pid) as f:
        return {k: int(v.split()[0]) * 1024 for k, v in
                (line.split(":", 1) for line in f) if v.strip().endswith("kB")}


@pytest.mark.timeout(180)
def test_million_routes_one_copy_with_workers(procs, sock, tmp_path):
    """Before the FIB lived in shared memory, the main process of
    ip4-forward --workers kept its heap FIB (64 MiB first level, touched
    nearly everywhere by a million routes, plus the blocks) and exported a
    copy: its anonymous memory alone was well over 200 MiB.  Now the tables
    are shared memory, mapped once, and what is private to the main process
    is Python and the route index."""
    routes_file = tmp_path / "routes.txt"
    million_routes_file(routes_file)
    p = router(procs, sock, "--routes-file", str(routes_file))
    assert wait_for(lambda: len(workers_of(p)) == 2, 60)
    time.sleep(1.0)
    main = status(p.pid)
    fib = main["RssShmem"]
    print("\nmain process with 1,000,000 routes: RssAnon %.0f MiB, RssShmem %.0f MiB"
          % (main["RssAnon"] / 2**20, fib / 2**20))
    assert fib > 100 << 20                       # the tables, touched by the routes
    assert main["RssAnon"] < 110 << 20           # no second copy of them
    for w in workers_of(p):                      # workers map them, copy nothing
        assert status(w.pid)["RssAnon"] < 80 << 20
    p.send_signal(signal.SIGTERM)
    p.communicate(timeout=30)
