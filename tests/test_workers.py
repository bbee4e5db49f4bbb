"""Worker processes: queue pairs spread over pinned workers, counters that add
up, a killed worker restarted, and peers SIGKILLed mid-traffic again and again
without a leaked fd or mapping in the main process or its workers."""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

import memifx
from conftest import read_until, wait_for
from test_link import frame, pump

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def xconnect(procs, a, b, *extra, queues=1):
    p = procs.start(MEMIFX + ["xconnect",
                              "socket=%s,role=master,name=A,queues=%d,rx-mode=interrupt" % (a, queues),
                              "socket=%s,role=master,name=B,queues=%d,rx-mode=interrupt" % (b, queues)]
                    + list(extra))
    read_until(p, "xconnect A <-> B")
    return p


def workers_of(p):
    return [c for c in psutil.Process(p.pid).children() if "memifx.workers.loop" in " ".join(c.cmdline())]


def finish(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    return json.loads(out.strip().splitlines()[-1]), out


@pytest.mark.timeout(60)
def test_two_queue_pairs_on_two_pinned_workers(procs, sockdir, monkeypatch):
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = procs.start(MEMIFX + ["xconnect",
                              "socket=%s,role=master,name=A,queues=2,rx-mode=interrupt" % a,
                              "socket=%s,role=master,name=B,queues=2,rx-mode=interrupt" % b,
                              "--workers", "2", "--cpus", "0-1", "--json"])
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    assert wait_for(lambda: len(workers_of(p)) == 2, 10)
    cpus = sorted(tuple(w.cpu_affinity()) for w in workers_of(p))
    assert cpus == [(0,), (1,)]
    sa = memifx.Interface(socket=a, name="sa", rx_queues=2, tx_queues=2).connect()
    sb = memifx.Interface(socket=b, name="sb", rx_queues=2, tx_queues=2).connect()
    try:
        assert sa.wait_connected(5) and sb.wait_connected(5)
        for q in (0, 1):
            f = [frame(q * 10000 + i, 64 + q) for i in range(1000)]
            assert pump(sa, sb, f, tx_queue=q, rx_queues=(q,)) == f
            g = [frame(50000 + q * 10000 + i, 128) for i in range(500)]
            assert pump(sb, sa, g, tx_queue=q, rx_queues=(q,)) == g
        # the workers count straight into the stats file: show sees it live
        shown = json.loads(subprocess.run(MEMIFX + ["show", "--json"], capture_output=True,
                                          text=True, timeout=30, check=True).stdout)
        (proc,) = [x for x in shown["processes"] if x["pid"] == p.pid]
        live = {i["name"]: i for i in proc["interfaces"]}
        assert [q["packets"] for q in live["A"]["stats"]["rx"]] == [1000, 1000]
        assert [q["packets"] for q in live["B"]["stats"]["rx"]] == [500, 500]
        assert sorted(q["worker"] for q in live["A"]["queues"]["rx"]) == [0, 1]
    finally:
        sa.close()
        sb.close()
    result, _ = finish(p)
    assert result["workers"] == {"count": 2, "restarts": 0}
    assert result["directions"]["A->B"]["packets"] == 2000
    assert result["directions"]["B->A"]["packets"] == 1000
    ia, ib = result["interfaces"]["A"], result["interfaces"]["B"]
    assert [q["packets"] for q in ia["rx"]] == [1000, 1000]       # counted by the workers
    assert [q["packets"] for q in ib["tx"]] == [1000, 1000]
    assert [q["packets"] for q in ib["rx"]] == [500, 500]
    assert [q["packets"] for q in ia["tx"]] == [500, 500]


@pytest.mark.timeout(60)
def test_mapping_printed_and_overcommit_warned(procs, sockdir):
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = procs.start(MEMIFX + ["xconnect", "socket=%s,role=master,name=A,queues=3" % a,
                              "socket=%s,role=master,name=B,queues=3" % b,
                              "--workers", "3", "--cpus", "1", "--duration", "0.5"])
    out, _ = p.communicate(timeout=20)
    assert "busy-polling workers on 1 CPUs" in out
    for w in range(3):
        assert "worker %d (pid" % w in out and "cpu 1" in out
    assert "A rx2 -> B tx2" in out


@pytest.mark.timeout(60)
def test_killed_worker_is_restarted_and_traffic_resumes(procs, sockdir):
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = xconnect(procs, a, b, "--workers", "1")
    sa = memifx.Interface(socket=a, name="sa").connect()
    sb = memifx.Interface(socket=b, name="sb").connect()
    try:
        assert sa.wait_connected(5) and sb.wait_connected(5)
        f = [frame(i, 100) for i in range(300)]
        assert pump(sa, sb, f) == f
        (w,) = workers_of(p)
        os.kill(w.pid, signal.SIGKILL)
        read_until(p, "worker 0 died: restarted")
        # the links it served flap, and come back
        assert wait_for(lambda: sa.info()["link_flaps"] >= 1 and sb.info()["link_flaps"] >= 1, 10)
        assert sa.wait_connected(5) and sb.wait_connected(5)
        assert wait_for(lambda: len(workers_of(p)) == 1 and workers_of(p)[0].pid != w.pid, 5)
        g = [frame(1000 + i, 100) for i in range(300)]
        assert pump(sa, sb, g) == g
    finally:
        sa.close()
        sb.close()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    assert "workers: 1, restarts: 1" in out


def resources(pids):
    """fd count and shared-memory mapping count of each process."""
    out = {}
    for pid in pids:
        fds = len(os.listdir("/proc/%d/fd" % pid))
        with open("/proc/%d/maps" % pid) as f:
            maps = sum(1 for line in f if "memfd:" in line)
        out[pid] = (fds, maps)
    return out


def sigkill_cycles(procs, sockdir, cycles):
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = xconnect(procs, a, b, "--workers", "1")
    sb = memifx.Interface(socket=b, name="sb").connect()
    assert sb.wait_connected(5)
    read_until(p, "B: link up")
    worker = workers_of(p)[0].pid
    before = None
    try:
        for cycle in range(cycles):
            gen = procs.start(MEMIFX + ["gen", "socket=%s,name=peer" % a, "--rate", "200000"],
                              stdout=open(os.devnull, "w"))
            read_until(p, "A: link up")
            got = 0
            end = time.monotonic() + 5
            while got < 200 and time.monotonic() < end:     # traffic really flows
                got += len(sb.rx_burst())
                time.sleep(0.0005)
            assert got >= 200, "cycle %d: no traffic" % cycle
            os.killpg(gen.pid, signal.SIGKILL)              # mid-traffic
            gen.wait(5)
            procs.procs.remove(gen)
            read_until(p, "A: link down")
            while sb.rx_burst():
                pass
            if cycle == 1:                   # after two full cycles: steady state
                time.sleep(0.3)
                before = resources([p.pid, worker])
        time.sleep(0.5)
        after = resources([p.pid, worker])
        assert after == before, (before, after)
        assert workers_of(p)[0].pid == worker           # never crashed, never restarted
    finally:
        sb.close()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    assert p.returncode == 0, out


@pytest.mark.timeout(240)
def test_peer_sigkilled_mid_traffic_50_cycles(procs, sockdir):
    sigkill_cycles(procs, sockdir, 50)


@pytest.mark.soak
@pytest.mark.timeout(3600)
def test_peer_sigkilled_mid_traffic_1000_cycles(procs, sockdir):
    sigkill_cycles(procs, sockdir, 1000)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", ["0", "1"])
def test_slave_side_worker_uses_the_whole_receive_pool(procs, sockdir, workers):
    """xconnect as a slave, in the main process and in a worker: the receive
    pool (two buffers per slot) cycles many times over a small ring and every
    frame arrives intact, both ways."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    ma = memifx.Interface(socket=a, role="master", name="ma", ring_size=64).connect()
    mb = memifx.Interface(socket=b, role="master", name="mb").connect()
    p = procs.start(MEMIFX + ["xconnect", "socket=%s,name=A,rx-mode=interrupt,ring-size=64" % a,
                              "socket=%s,name=B,rx-mode=interrupt" % b,
                              "--workers", workers])
    try:
        assert ma.wait_connected(5) and mb.wait_connected(5)
        read_until(p, "B: link up")
        # many rounds: every pool buffer (2 x 64) is used, content intact.
        # A's rings have 64 slots and xconnect drops (counted) what a full
        # transmit ring cannot take: never more in flight than that.
        f = [frame(i, 60 + i % 1400) for i in range(3000)]
        assert pump(ma, mb, f, pace=16, window=48) == f
        g = [frame(9000 + i, 200) for i in range(3000)]
        assert pump(mb, ma, g, pace=16, window=48) == g
    finally:
        ma.close()
        mb.close()


@pytest.mark.timeout(60)
def test_one_pool_stops_while_another_carries_traffic(sockdir):
    """Two xconnect pools in one process, each on its own two interfaces:
    stopping one loses no frame of the other, leaves its own interfaces
    connected, and unhooks it from their link changes (a flap after the stop
    reaches it no more)."""
    import threading
    from memifx.nodes.xconnect import XConnectPool
    path = {n: os.path.join(sockdir, n) for n in "abcd"}
    masters = {n: memifx.Interface(socket=path[n], role="master", name=n.upper())
               for n in "abcd"}
    for intf in masters.values():
        intf.set_rx_mode("interrupt")
    A, B, C, D = (masters[n] for n in "abcd")
    first = XConnectPool([A, B], [(A, B), (B, A)], 1, None)
    second = XConnectPool([C, D], [(C, D), (D, C)], 1, None)
    slaves = {}
    try:
        for n in "abcd":
            masters[n].connect()
            slaves[n] = memifx.Interface(socket=path[n], name="s" + n).connect()
        assert all(s.wait_connected(5) for s in slaves.values())
        f = [frame(i, 64) for i in range(200)]
        assert pump(slaves["a"], slaves["b"], f) == f       # the first pool serves
        # C -> D until 2000 frames have crossed after the first pool stopped
        stopper = threading.Thread(target=first.stop)
        got, sent, stopped_at = [], [], None
        end = time.monotonic() + 40
        while time.monotonic() < end:
            if stopped_at is None and not stopper.is_alive() and len(got) >= 2000:
                if stopper.ident is None:
                    stopper.start()
                else:
                    stopped_at = len(got)
            if stopped_at is not None and len(got) >= stopped_at + 2000 and len(got) == len(sent):
                break
            if len(sent) - len(got) < 256 and (stopped_at is None or
                                               len(sent) < stopped_at + 2000):
                burst = [frame(len(sent) + i, 64 + (len(sent) + i) % 64) for i in range(64)]
                sent += burst[:slaves["c"].tx_burst(burst)]
            arrived = slaves["d"].rx_burst()
            got += arrived
            second.poll(0)
            if not arrived:
                time.sleep(0.0002)
        assert stopped_at is not None, "the first pool did not stop"
        assert len(got) >= stopped_at + 2000 and got == sent    # nothing lost or reordered
        assert not any(w.alive() for w in first.workers)
        assert A.connected and B.connected and slaves["a"].connected
        gens = dict(first.gens)
        slaves["a"].close()
        assert wait_for(lambda: not A.connected, 5)
        slaves["a"] = memifx.Interface(socket=path["a"], name="sa").connect()
        assert slaves["a"].wait_connected(5) and wait_for(lambda: A.connected, 5)
        assert first.gens == gens               # the stopped pool heard nothing
        g = [frame(50000 + i, 128) for i in range(500)]
        assert pump(slaves["d"], slaves["c"], g) == g       # the second one serves on
    finally:
        for s in slaves.values():
            s.close()
        if not first.stopping:
            first.stop()
        second.stop()
        for intf in masters.values():
            intf.close()


@pytest.mark.timeout(60)
def test_workers_import_no_node_kind_and_plans_name_kinds_by_path():
    """Imports run one way: memifx.workers never imports memifx.nodes (a
    worker loads its kind by the plan's import path), and a path that is not
    a Node is refused with a clear error."""
    code = ("import sys, memifx.workers.pool, memifx.workers.loop\n"
            "print(sorted(m for m in sys.modules if m.startswith('memifx.nodes')))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    assert out.strip() == "[]"
    from memifx.nodes.router import RouterNode
    from memifx.nodes.tester import TesterNode
    from memifx.nodes.xconnect import XConnectNode
    from memifx.workers.node import import_path, load
    for kind in (XConnectNode, RouterNode, TesterNode):
        assert load(import_path(kind)) is kind
    assert import_path(XConnectNode) == "memifx.nodes.xconnect:XConnectNode"
    for bad, why in (("xconnect", "expected 'module:Class'"), (None, "expected"),
                     ("memifx.nodes.router:RouterPool", "is not a Node"),
                     ("memifx.nodes.nope:X", "No module named"),
                     ("memifx.nodes.xconnect:Nope", "has no attribute")):
        with pytest.raises(ValueError, match=why):
            load(bad)
