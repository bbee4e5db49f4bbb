"""The runtime (memifx/runtime): pipelines and interfaces added and removed
while another pipeline carries traffic, in this process and on workers;
routes changed live; management errors.

The Dataplane runs in the test process, its poll loop on a thread of its
own, and the management calls come from the test thread (as the agent's
would).  The traffic comes from ``memifx gen --receive`` in another process
at a limited rate, so the box's two CPUs are never both spinning: every
interface here is in interrupt mode and the gen sleeps between batches."""
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from scapy.all import IP, UDP, Ether, raw

import memifx
from memifx.runtime import Dataplane, DataplaneError
from conftest import wait_for
from test_link import frame, pump

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
COUNT = 30000
RATE = 15000            # frames a second: two seconds of traffic


def master(path, **extra):
    d = {"socket": path, "role": "master", "rx-mode": "interrupt"}
    d.update(extra)
    return d


class Running:
    """A Dataplane polled by a thread of its own until stopped."""

    def __init__(self, stats=False):
        self.dp = Dataplane(stats=stats)
        self.done = threading.Event()
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        try:
            self.dp.run(self.done.is_set)
        except BaseException as e:          # reported by stop()
            self.error = e

    def stop(self):
        self.done.set()
        self.thread.join(10)
        self.dp.close()
        assert not self.thread.is_alive()
        assert self.error is None, self.error


@pytest.fixture
def running():
    r = Running()
    yield r
    if not r.done.is_set():
        r.stop()


def start_gen(procs, a, b):
    return procs.start(MEMIFX + ["gen", "socket=%s,name=tester" % a, "--receive",
                                 "socket=%s,name=tester-rx,ring-size=4096" % b,
                                 "--count", str(COUNT), "--rate", str(RATE), "--json"],
                       stderr=subprocess.PIPE)


def gen_result(p, timeout=60):
    out, err = p.communicate(timeout=timeout)
    assert p.returncode == 0, out + err
    return json.loads(out.strip().splitlines()[-1])


def churn_while(gen, dp, sockdir, workers, rounds_at_least=2):
    """While ``gen`` runs: add a second xconnect pipeline on two new
    interfaces, carry frames through it, remove it and its interfaces; add
    and remove a lone interface.  Returns how many rounds were done."""
    rounds = 0
    while gen.poll() is None or rounds < rounds_at_least:
        c, d = (os.path.join(sockdir, "%s%d.sock" % (x, rounds)) for x in "cd")
        dp.add_interface("c", master(c))
        dp.add_interface("d", master(d))
        dp.add_pipeline("p2", "xconnect", interfaces=["c", "d"], workers=workers)
        sc = memifx.Interface(socket=c, name="sc").connect()
        sd = memifx.Interface(socket=d, name="sd").connect()
        try:
            assert sc.wait_connected(10) and sd.wait_connected(10)
            frames = [frame(rounds * 1000 + i, 100) for i in range(200)]
            # Until both links are up on our side too, what c receives is
            # dropped as "tx link down" (and pump's window would wait for it).
            assert wait_for(lambda: all(i["up"] for n, i in dp.state()["interfaces"].items()
                                        if n in "cd"), 10)
            if workers:     # the workers attach once the link is up
                assert wait_for(lambda: dp.state()["pipelines"]["p2"]["workers"]["alive"], 10)
                time.sleep(0.1)
            assert pump(sc, sd, frames, window=64) == frames
            # (workers report their counters twice a second without a stats file)
            assert wait_for(lambda: dp.state()["pipelines"]["p2"]["counters"]["c->d"]
                            ["packets"] == 200, 5)
        finally:
            sc.close()
            sd.close()
        dp.remove_pipeline("p2")
        dp.remove_interface("c")
        dp.remove_interface("d")
        assert not os.path.exists(c)
        dp.add_interface("e", master(os.path.join(sockdir, "e%d.sock" % rounds)))
        dp.remove_interface("e")
        rounds += 1
    return rounds


@pytest.mark.timeout(120)
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "workers"])
def test_churn_beside_a_loaded_pipeline_loses_nothing(running, procs, sockdir, workers):
    dp = running.dp
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    dp.add_interface("a", master(a))
    dp.add_interface("b", master(b, **{"ring-size": 4096}))
    dp.add_pipeline("p1", "xconnect", interfaces=["a", "b"], workers=workers)
    gen = start_gen(procs, a, b)
    rounds = churn_while(gen, dp, sockdir, workers)
    result = gen_result(gen)
    rx = result["receive"]
    assert result["packets"] == COUNT
    assert (rx["received"], rx["lost"], rx["corrupt"], rx["duplicated"]) == (COUNT, 0, 0, 0), rx
    state = dp.state()
    assert list(state["pipelines"]) == ["p1"] and list(state["interfaces"]) == ["a", "b"]
    assert wait_for(lambda: dp.state()["pipelines"]["p1"]["counters"]["a->b"]["packets"]
                    == COUNT, 5)
    p1 = dp.state()["pipelines"]["p1"]
    assert not any(p1["counters"]["a->b"]["drops"].values())
    assert p1["workers"]["count"] == workers and p1["workers"]["restarts"] == 0
    for name in ("a", "b"):         # p1's links went down only when gen left
        assert state["interfaces"][name]["link_flaps"] <= 1
        assert "pipeline" not in (state["interfaces"][name]["last_disconnect"] or "")
    assert dp.problems() == []
    assert rounds >= 2
    running.stop()


SPEC_A = {"mac": "02:00:00:00:00:01", "ip": "10.0.1.1/24"}
SPEC_B = {"mac": "02:00:00:00:00:02", "ip": "10.0.2.1/24"}
GW1, GW2 = "0a:00:00:00:00:fe", "0a:00:00:00:00:fd"


def udp(n):
    return [raw(Ether(dst=SPEC_A["mac"], src="0a:00:00:00:01:05") /
                IP(src="10.0.1.5", dst="172.20.1.1", id=i) / UDP(sport=1000, dport=2000) /
                (b"x" * 20)) for i in range(n)]


def arriving(sa, sb, n):
    """Send n routed frames on sa; the destination MACs of what reaches sb."""
    got = pump(sa, sb, udp(n), timeout=2)
    return [Ether(f).dst for f in got]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "workers"])
def test_set_routes_live(running, sockdir, workers):
    dp = running.dp
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    dp.add_interface("a", master(a, **SPEC_A))
    dp.add_interface("b", master(b, **SPEC_B))
    dp.add_pipeline("r", "ip4", interfaces=["a", "b"], workers=workers,
                    routes=["172.16.0.0/12,via=10.0.2.254"],
                    neighbors=["10.0.2.254,%s" % GW1, "10.0.2.253,%s,dev=b" % GW2])
    sa = memifx.Interface(socket=a, name="sa").connect()
    sb = memifx.Interface(socket=b, name="sb").connect()
    try:
        assert sa.wait_connected(10) and sb.wait_connected(10)
        assert wait_for(lambda: all(i["up"] for i in dp.state()["interfaces"].values()), 10)
        if workers:
            assert wait_for(lambda: dp.state()["pipelines"]["r"]["workers"]["alive"], 10)
            time.sleep(0.2)                 # the attach reaches the worker

        def counted():      # workers without a stats file report twice a second
            c = dp.state()["pipelines"]["r"]["counters"]["interfaces"]["a"]["rx"]
            return (sum(q["forwarded"] for q in c), sum(q["drops"]["no route"] for q in c))
        assert arriving(sa, sb, 50) == [GW1] * 50
        assert dp.set_routes("r", ["172.16.0.0/12,via=10.0.2.253"]) == (0, 0, 1)
        assert arriving(sa, sb, 50) == [GW2] * 50
        assert dp.set_routes("r", []) == (0, 1, 0)
        # no route: every frame counted as dropped, so none can arrive (a
        # condition, instead of waiting out arriving()'s timeout for nothing)
        assert sa.tx_burst(udp(50)) == 50
        assert wait_for(lambda: counted() == (100, 50), 5), counted()
        assert sb.rx_burst() == []
        assert dp.set_routes("r", ["172.16.0.0/12,via=10.0.2.254"]) == (1, 0, 0)
        assert arriving(sa, sb, 50) == [GW1] * 50
        with pytest.raises(DataplaneError, match="172.16.0.0/99"):
            dp.set_routes("r", ["172.16.0.0/99,via=10.0.2.254"])
        assert arriving(sa, sb, 10) == [GW1] * 10   # a rejected set changes nothing
        assert wait_for(lambda: counted() == (160, 50), 5), counted()
    finally:
        sa.close()
        sb.close()
    running.stop()


@pytest.mark.timeout(30)
def test_management_errors_are_clear(running, sockdir):
    dp = running.dp
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    dp.add_interface("a", master(a))
    dp.add_interface("b", master(b))
    dp.add_pipeline("x", "xconnect", interfaces=["a", "b"])
    with pytest.raises(DataplaneError, match="interface a is used by pipeline x"):
        dp.remove_interface("a")
    with pytest.raises(DataplaneError, match="interface a exists"):
        dp.add_interface("a", master(a + "2"))
    with pytest.raises(DataplaneError, match="role=boss: allowed values are"):
        dp.add_interface("c", {"socket": a + "3", "role": "boss"})
    with pytest.raises(DataplaneError, match="unknown key 'colour'"):
        dp.add_interface("c", {"socket": a + "3", "colour": "red"})
    with pytest.raises(DataplaneError, match="unknown pipeline kind 'bridge'"):
        dp.add_pipeline("y", "bridge", interfaces=["a"])
    with pytest.raises(DataplaneError, match="a xconnect pipeline takes 2 interfaces, not 1"):
        dp.add_pipeline("y", "xconnect", interfaces=["a"])
    dp.add_interface("c", master(a + "4"))
    with pytest.raises(DataplaneError, match="interface b is used by pipeline x"):
        dp.add_pipeline("y", "xconnect", interfaces=["c", "b"])
    with pytest.raises(DataplaneError, match="no interface nope"):
        dp.add_pipeline("y", "echo", interface="nope")
    with pytest.raises(DataplaneError, match="only ip4 pipelines have routes"):
        dp.set_routes("x", [])
    with pytest.raises(DataplaneError, match="no pipeline nope"):
        dp.remove_pipeline("nope")
    with pytest.raises(DataplaneError, match="ip=A.B.C.D/LEN is required"):
        dp.add_pipeline("r", "ip4", interfaces=["c"])
    assert sorted(dp.state()["pipelines"]) == ["x"]     # the refused ones left nothing
    dp.set_rx_mode("a", "adaptive")
    assert dp.state()["interfaces"]["a"]["rx_modes"] == ["adaptive"]
    with pytest.raises(DataplaneError, match="a: rx mode must be polling, interrupt or adaptive"):
        dp.set_rx_mode("a", "sometimes")
    with pytest.raises(DataplaneError, match="a: rx queue 3 out of range"):
        dp.set_rx_mode("a", "polling", queue=3)
    dp.add_pipeline("e", "echo", interface="c")
    state = dp.state()
    assert state["pipelines"]["e"]["graph"] == ["memif-input", "l2-xconnect",
                                                "interface-output"]
    assert state["interfaces"]["c"]["pipeline"] == "e"
    dp.remove_pipeline("x")
    dp.remove_interface("a")        # free now
    assert sorted(dp.state()["interfaces"]) == ["b", "c"]
    json.dumps(dp.state())          # JSON-able
    dp.run(True)                    # a stop given as a truth value: done at once
    running.stop()
    with pytest.raises(DataplaneError, match="dataplane closed"):
        dp.add_interface("z", master(a + "5"))


@pytest.mark.timeout(30)
def test_echo_pipeline_in_process_answers(running, sockdir):
    dp = running.dp
    a = os.path.join(sockdir, "a.sock")
    dp.add_interface("a", master(a))
    dp.add_pipeline("e", "echo", interface="a")
    s = memifx.Interface(socket=a, name="s").connect()
    try:
        assert s.wait_connected(10)
        frames = [frame(i, 64 + i) for i in range(100)]
        assert pump(s, s, frames) == frames
    finally:
        s.close()
    assert dp.state()["pipelines"]["e"]["counters"]["a->a"]["packets"] == 100
    running.stop()


@pytest.mark.timeout(40)
def test_problems_show_a_worker_death_then_clear(running, sockdir):
    dp = running.dp
    dp.add_interface("a", master(os.path.join(sockdir, "a.sock")))
    dp.add_interface("b", master(os.path.join(sockdir, "b.sock")))
    p = dp.add_pipeline("x", "xconnect", interfaces=["a", "b"], workers=1)
    assert dp.problems() == []
    pid = p.pool.workers[0].pid
    os.kill(pid, 9)
    assert wait_for(lambda: any("worker 0" in line for line in dp.problems()), 10), \
        dp.problems()
    assert wait_for(lambda: dp.state()["pipelines"]["x"]["workers"] ==
                    {"count": 1, "alive": 1, "restarts": 1}, 10)
    assert p.pool.workers[0].pid != pid
    assert wait_for(lambda: dp.problems() == [], 10), dp.problems()
    running.stop()
