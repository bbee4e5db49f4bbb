"""ip4-forward with --workers: the router's passes in pinned worker processes.

The router of tests/test_ip4.py (same interfaces, routes, neighbors), every
interface with two queue pairs and two workers, rx-mode=interrupt so no more
than the two workers are ever busy.  Worker w serves receive queue w of each
interface and transmits on transmit queue w of each, so what a slave sends on
queue q comes back on its queue q.  Checked here: forwarding on both queues
(TTL, checksum, MACs), ICMP echo, drop counters summed over the workers in
--json, ARP learning through a worker (the reply reaches one worker, the
main process learns it, the other worker forwards with it), the FIB mapped
read-only and shared by every worker, and a SIGKILLed worker restarted with
traffic resuming.
"""
import os
import signal
import time

import psutil
import pytest
from scapy.all import ARP, ICMP, IP, Ether, raw

from conftest import read_until, wait_for
from test_ip4 import (DROP_CASES, HOST_A, LPM, MAC_A, MAC_B, PROBES, SPECS, ROUTES, NEIGHBORS,
                      MEMIFX, close_all, collect, eth, recomputed, slaves, stop_json, udp)
from memifx.ip4 import DROP_REASONS, TX_DROPS

QUEUES = 2
LEARNED_MAC = "0a:00:00:00:00:77"


def router(procs, sock, *extra):
    args = MEMIFX + ["ip4-forward", "--json", "--workers", "2", "--cpus", "0-1"]
    for i, s in enumerate(SPECS):
        args += ["--interface", "socket=%s,id=%d,role=master,rx-mode=interrupt,queues=%d,%s"
                 % (sock, i, QUEUES, s)]
    for r in ROUTES:
        args += ["--route", r]
    for n in NEIGHBORS:
        args += ["--neighbor", n]
    p = procs.start(args + list(extra))
    assert wait_for(lambda: os.path.exists(sock), 15)
    return p


def workers_of(p):
    return [c for c in psutil.Process(p.pid).children()
            if "memifx.workers.loop" in " ".join(c.cmdline())]


def fib_maps(pid):
    """The lines of /proc/PID/maps that map the shared FIB."""
    with open("/proc/%d/maps" % pid) as f:
        return [line.split() for line in f if "memifx-fib" in line]


def ping_frame(intf_index):
    addr, mac, host = PROBES[intf_index]
    ping = IP(src=host, dst=addr) / ICMP(id=0x78)
    return raw(ping) if mac is None else raw(Ether(dst=mac, src=HOST_A) / ping)


def up_on_every_queue(ifs):
    """Ping the router on each queue of each link until that queue's worker
    answers (it attaches a moment after the slave sees the link), then drain."""
    for k, intf in enumerate(ifs):
        for q in range(QUEUES):
            assert wait_for(lambda: intf.tx_burst([ping_frame(k)], queue=q)
                            and collect(intf, 1, 0.5, queue=q), 10, 0.01), (k, q)
    for intf in ifs:
        for q in range(QUEUES):
            while intf.rx_burst(q):
                pass


def forward_both_queues(a, b, c, base):
    """Frames to every LPM destination on each queue of a; each arrives on the
    same queue index of its output link, in order, rewritten correctly."""
    for q in range(QUEUES):
        frames, want = [], {0: [], 1: [], 2: []}
        for k in range(120):
            dst = sorted(LPM)[k % len(LPM)]
            ident = base + q * 1000 + k
            frames.append(raw(eth() / IP(src="10.0.1.5", dst=dst, ttl=3 + k, id=ident)
                              / (b"%05d" % k)))
            want[LPM[dst][0]].append((ident, dst, 2 + k))
        assert a.tx_burst(frames, queue=q) == len(frames)
        for o, intf in enumerate((a, b, c)):
            got = collect(intf, len(want[o]), queue=q)
            assert len(got) == len(want[o]), (q, o)
            for raw_out, (ident, dst, ttl) in zip(got, want[o]):
                pkt = IP(raw_out) if o == 2 else Ether(raw_out)
                if o != 2:
                    assert (pkt.dst, pkt.src) == (LPM[dst][1], [MAC_A, MAC_B][o])
                assert (pkt[IP].id, pkt[IP].dst, pkt[IP].ttl) == (ident, dst, ttl)
                assert raw(pkt) == raw(recomputed(pkt))          # checksum updated right
    return 120


@pytest.mark.timeout(90)
def test_two_workers_forward_echo_and_sum_drops(procs, sock):
    p = router(procs, sock)
    assert wait_for(lambda: len(workers_of(p)) == 2, 10)
    ws = workers_of(p)
    assert sorted(tuple(w.cpu_affinity()) for w in ws) == [(0,), (1,)]
    a, b, c = ifs = slaves(sock, rx_queues=QUEUES, tx_queues=QUEUES)
    try:
        up_on_every_queue(ifs)
        # one FIB, shared: every worker maps the same memfd, read-only, shared
        maps = {w.pid: fib_maps(w.pid) for w in ws}
        for pid, lines in maps.items():
            assert lines, "worker %d maps no FIB" % pid
            assert all(line[1] == "r--s" for line in lines), lines
        inodes = {line[4] for lines in maps.values() for line in lines}
        assert len(inodes) == 1, maps
        # the main process holds the one writable mapping (no heap copy, no export)
        assert [line[1] for line in fib_maps(p.pid)] == ["rw-s"]
        assert {line[4] for line in fib_maps(p.pid)} == inodes
        sent = forward_both_queues(a, b, c, 0)
        # ICMP echo on each queue, answered on that queue
        for q in range(QUEUES):
            a.tx_burst([raw(eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(id=5, seq=q)
                            / b"xyz")], queue=q)
            (rep,) = collect(a, 1, queue=q)
            rep = Ether(rep)
            assert (rep[ICMP].type, rep[ICMP].seq, rep[IP].src, rep.src) == \
                (0, q, "10.0.1.1", MAC_A)
            assert raw(rep) == raw(recomputed(rep))
        # one of each drop, spread over both queues (so over both workers)
        for k, (reason, i, frame) in enumerate(DROP_CASES):
            assert ifs[i].tx_burst([frame], queue=k % QUEUES) == 1
        # what the drops provoke: 2 time exceeded back to a, 1 ARP request out b
        te = collect(a, 1, queue=0) + collect(a, 1, queue=1)
        assert len(te) == 2 and all(Ether(f)[ICMP].type == 11 for f in te)
        arp = []
        assert wait_for(lambda: arp.extend(Ether(f) for q in range(QUEUES)
                                           for f in b.rx_burst(q)) or arp, 5)
        time.sleep(0.2)
        arp += [Ether(f) for q in range(QUEUES) for f in b.rx_burst(q)]
        assert [f[ARP].pdst for f in arp] == ["10.0.2.77"]
    finally:
        close_all(ifs)
    result = stop_json(p)
    assert result["workers"] == {"count": 2, "restarts": 0}
    expected = dict({r: 0 for r in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0))
    for reason, _, _ in DROP_CASES:
        expected[reason] += 1
    assert result["drops"] == expected
    ra = result["interfaces"]["a"]
    assert [q["forwarded"] for q in ra["rx"]] == [sent, sent]         # one per worker
    assert all(q["echo replies"] >= 2 for q in ra["rx"])               # probes and pings
    assert sum(q["icmp errors sent"] for q in ra["rx"]) == 2
    for name in ("a", "b", "c"):                 # the ring counters agree with the router's
        r = result["interfaces"][name]
        assert [q["packets"] for q in r["ring"]["rx"]] == [q["packets"] for q in r["rx"]]
        assert [q["packets"] for q in r["ring"]["tx"]] == [q["packets"] for q in r["tx"]]
    assert not os.path.exists(sock)


def learn_through_a_worker(a, b):
    """Traffic from a's queue 0 (worker 0) to an unresolved host: an ARP
    request; the host answers on b's queue 1 (worker 1); the main process
    learns it and tells every worker; worker 0's traffic then flows."""
    a.tx_burst([raw(udp("10.0.2.77", id=1))], queue=0)
    (q,) = collect(b, 1, queue=0)
    q = Ether(q)
    assert (q.dst, q[ARP].op, q[ARP].pdst, q[ARP].psrc) == \
        ("ff:ff:ff:ff:ff:ff", 1, "10.0.2.77", "10.0.2.1")
    b.tx_burst([raw(Ether(dst=MAC_B, src=LEARNED_MAC) /
                    ARP(op=2, hwsrc=LEARNED_MAC, psrc="10.0.2.77", hwdst=MAC_B,
                        pdst="10.0.2.1"))], queue=1)
    got = []

    def flows():
        a.tx_burst([raw(udp("10.0.2.77", id=2))], queue=0)
        got.extend(f for f in collect(b, 1, 0.2, queue=0) if Ether(f).type == 0x0800)
        return got
    assert wait_for(flows, 10, 0.05)
    assert Ether(got[0]).dst == LEARNED_MAC and Ether(got[0])[IP].id == 2


def to_learned(a, b, q, n=20):
    a.tx_burst([raw(udp("10.0.2.77", id=500 + k)) for k in range(n)], queue=q)
    got = [Ether(f) for f in collect(b, n, queue=q)]
    assert [(f.dst, f[IP].id, f[IP].ttl) for f in got] == \
        [(LEARNED_MAC, 500 + k, 63) for k in range(n)]


@pytest.mark.timeout(90)
def test_arp_learning_through_a_worker_and_worker_restart(procs, sock):
    p = router(procs, sock)
    assert wait_for(lambda: len(workers_of(p)) == 2, 10)
    a, b, c = ifs = slaves(sock, rx_queues=QUEUES, tx_queues=QUEUES)
    try:
        up_on_every_queue(ifs)
        learn_through_a_worker(a, b)
        for q in range(QUEUES):                  # both workers know the learned neighbor
            to_learned(a, b, q)
        # SIGKILL worker 1: reported, restarted; the links flap and come back
        victim = [w for w in workers_of(p) if w.cpu_affinity() == [1]][0]
        os.kill(victim.pid, signal.SIGKILL)
        read_until(p, "worker 1 died: restarted", 10)
        assert wait_for(lambda: all(i.info()["link_flaps"] >= 1 for i in ifs), 10)
        for i in ifs:
            assert i.wait_connected(10)
        assert wait_for(lambda: len(workers_of(p)) == 2
                        and victim.pid not in [w.pid for w in workers_of(p)], 10)
        new = [w for w in workers_of(p) if w.pid != victim.pid and w.cpu_affinity() == [1]]
        assert len(new) == 1 and [l[1] for l in fib_maps(new[0].pid)] == ["r--s"]
        up_on_every_queue(ifs)
        # traffic resumes on both queues; the new worker got the learned neighbor
        forward_both_queues(a, b, c, 10000)
        for q in range(QUEUES):
            to_learned(a, b, q)
    finally:
        close_all(ifs)
    result = stop_json(p)
    assert result["workers"] == {"count": 2, "restarts": 1}
    assert result["arp"]["learned"] == 1
    assert {"dev": "b", "ip": "10.0.2.77", "mac": LEARNED_MAC} in result["neighbors"]
    ra = result["interfaces"]["a"]
    # the dead worker's counters, as last reported, are part of the sums
    assert ra["rx"][0]["forwarded"] >= 120 + 1 + 20 and ra["rx"][1]["forwarded"] >= 120


@pytest.mark.timeout(60)
def test_workers_reduced_to_the_smallest_tx_queue_count(procs, sock):
    args = MEMIFX + ["ip4-forward", "--workers", "2", "--duration", "0.5",
                     "--interface", "socket=%s,id=0,role=master,rx-mode=interrupt,queues=2,%s"
                     % (sock, SPECS[0]),
                     "--interface", "socket=%s,id=1,role=master,rx-mode=interrupt,%s"
                     % (sock, SPECS[1])]
    out, _ = procs.start(args).communicate(timeout=30)
    assert "2 workers reduced to 1" in out
    assert "worker 0 (pid" in out and "worker 1 (pid" not in out
    assert "workers: 1, restarts: 0" in out


@pytest.mark.timeout(60)
def test_fib_shared_view_agrees_and_is_read_only():
    """from_shared() maps the Fib's own memfd read-only and answers every
    lookup as the writer does; the view refuses changes."""
    import random
    from memifx.fib import Fib
    rnd = random.Random(3)
    fib = Fib()
    for k in range(3000):
        length = rnd.choice([8, 16, 20, 24, 24, 26, 28, 32])
        net = rnd.getrandbits(32) & ((0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF)
        fib.insert(net, length, fib.add_nexthop("gateway", rnd.getrandbits(32), k % 4))
    view = Fib.from_shared(fib.fd)
    assert view.shared and not fib.shared and view.fd == -1
    assert (view.routes, view.nnh, view.blocks) == (fib.routes, fib.nnh, fib.blocks)
    for _ in range(20000):
        a = rnd.getrandbits(32)
        i = fib.lookup(a)
        assert view.lookup(a) == i and (i < 0 or view.nexthop(i) == fib.nexthop(i))
    inode = str(os.fstat(fib.fd).st_ino)

    def ours():                 # other tests' Fibs may still be alive in this process
        return sorted(line[1] for line in fib_maps(os.getpid()) if line[4] == inode)
    assert ours() == ["r--s", "rw-s"]
    for change in (lambda: view.add_route("1.0.0.0/8", "connected"),
                   lambda: view.insert(0, 0, 0), lambda: view.delete(0, 0),
                   lambda: view.load_routes(b"1.0.0.0/8,dev=a", ["a"]),
                   lambda: view.apply_routes(b"")):
        with pytest.raises(ValueError, match="read-only"):
            change()
    del view
    assert ours() == ["rw-s"]                   # unmapped with the view
    del fib
    assert not ours()


@pytest.mark.timeout(90)
def test_sigkilled_worker_keeps_its_router_counts(procs, sock):
    """The router's worker is SIGKILLed mid-traffic, twice: what it counted
    survives (its counters live in the stats file), so a's receive queue
    still equals the router's outcomes on a, and what it forwarded equals
    b's transmit outcomes.  Tolerance: one burst (256 frames) per kill, the
    frames between the queue's counters and the router's outcome counters,
    or between forwarded and b's transmit counters."""
    args = MEMIFX + ["ip4-forward", "--json", "--workers", "1", "--cpus", "0"]
    for i, s in enumerate(SPECS):
        args += ["--interface", "socket=%s,id=%d,role=master,rx-mode=interrupt,%s"
                 % (sock, i, s)]
    for r in ROUTES:
        args += ["--route", r]
    for n in NEIGHBORS:
        args += ["--neighbor", n]
    p = procs.start(args)
    assert wait_for(lambda: os.path.exists(sock), 15)

    def live_workers():
        """The live worker processes (a killed one may linger as a zombie)."""
        out = []
        for w in psutil.Process(p.pid).children():
            try:
                if w.status() != psutil.STATUS_ZOMBIE and \
                        "memifx.workers.loop" in " ".join(w.cmdline()):
                    out.append(w)
            except psutil.Error:
                pass
        return out

    def replaced(old):
        ws = live_workers()
        return len(ws) == 1 and ws[0].pid != old
    assert wait_for(lambda: len(live_workers()) == 1, 10)
    a, b, c = ifs = slaves(sock)
    # 3 of 4 frames forwarded out of b, 1 of 4 dropped "no route"
    burst = [raw(udp("172.20.1.1" if k % 4 else "192.0.2.1", id=k)) for k in range(64)]
    kills = 0
    try:
        for round_ in range(2):
            end = time.monotonic() + 0.6 + 0.37 * round_
            while time.monotonic() < end:
                a.tx_burst(burst)
                while b.rx_burst(max=1024):
                    pass
                time.sleep(0.002)
            (w,) = live_workers()
            os.kill(w.pid, signal.SIGKILL)
            kills += 1
            assert wait_for(lambda: replaced(w.pid), 10)
            for i in ifs:
                assert i.wait_connected(10)
    finally:
        close_all(ifs)
    result = stop_json(p)
    assert result["workers"]["restarts"] == kills
    ra, rb = result["interfaces"]["a"], result["interfaces"]["b"]
    received = ra["ring"]["rx"][0]["packets"]          # the queue's counters (stats file)
    outcomes = ra["rx"][0]                              # the router's
    assert received > 5000, received
    ends = (outcomes["forwarded"] + outcomes["echo replies"] + outcomes["arp replies"]
            + outcomes["arp to control plane"] + outcomes["local"]
            + sum(outcomes["drops"].values()))
    assert abs(received - ends) <= 256 * kills, (received, outcomes)
    assert abs(received - outcomes["packets"]) <= 256 * kills, (received, outcomes)
    assert outcomes["drops"]["no route"] > 1000, outcomes
    tx = rb["tx"][0]
    replies = rb["rx"][0]["echo replies"] + rb["rx"][0]["arp replies"]     # b's own, out of b
    left = tx["packets"] + sum(tx["drops"].values()) + rb["tx link down"] - replies
    assert abs(outcomes["forwarded"] - left) <= 256 * kills, (outcomes, rb)
    assert abs(rb["ring"]["tx"][0]["packets"] - tx["packets"]) <= 256 * kills, rb
