"""Pipelines move between hosts over links that stay up: a pipeline on
workers takes over an interface whose link is up (the workers continue
from the positions this process's queues reached), removing it hands the
queues back, and rx modes of worker-served queues change in the worker.
The peer never sees a DISCONNECT; no frame is lost or delivered twice.

The traffic comes from ``memifx gen --receive`` in another process at a
limited rate (interrupt mode everywhere else), as in test_runtime."""
import contextlib
import os
import signal
import subprocess
import time

import pytest

import memifx
from memifx import stats
from conftest import wait_for
from test_link import frame, pump
from test_runtime import GW1, MEMIFX, SPEC_A, SPEC_B, Running, arriving, gen_result

COUNT = 40000
RATE = 20000            # frames a second: two seconds of traffic
PEER_LEAVING = ("gen finished",)      # what the gen says as it closes its links
HOSTS = [1, 0, 2, 1, 0]     # workers of each pipeline in turn (0: in this process)


def spec(path, role, **extra):
    d = {"socket": path, "role": role, "rx-mode": "interrupt"}
    d.update(extra)
    return d


def start_gen(procs, a, b, role, queues=1):
    q = "rx-queues=%d,tx-queues=%d" % (queues, queues)
    return procs.start(MEMIFX + ["gen", "socket=%s,name=tester,role=%s,%s" % (a, role, q),
                                 "--receive", "socket=%s,name=tester-rx,ring-size=4096,role=%s,%s"
                                 % (b, role, q), "--flows", str(4 * queues),
                                 "--count", str(COUNT), "--rate", str(RATE), "--json"],
                       stderr=subprocess.PIPE)


@contextlib.contextmanager
def two_links(sockdir, spec_a=(), spec_b=()):
    """A Dataplane polled by a thread of its own, with master interfaces a
    and b (``spec_a``, ``spec_b``: more of their specs) and a slave
    Interface linked to each, all up: (dataplane, slave on a, slave on b),
    closed and stopped at the end."""
    running = Running()
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    sa = sb = None
    try:
        running.dp.add_interface("a", spec(a, "master", **dict(spec_a)))
        running.dp.add_interface("b", spec(b, "master", **dict(spec_b)))
        sa = memifx.Interface(socket=a, name="sa").connect()
        sb = memifx.Interface(socket=b, name="sb").connect()
        assert sa.wait_connected(10) and sb.wait_connected(10)
        assert wait_for(lambda: all(i["up"] for i in running.dp.state()["interfaces"].values()),
                        10)
        yield running.dp, sa, sb
    finally:
        for s in (sa, sb):
            if s is not None:
                s.close()
        running.stop()


def flaps(dp):
    return {n: (i["link_flaps"], i["last_disconnect"])
            for n, i in dp.state()["interfaces"].items()}


def peer_flaps(pid):
    """{interface: link_flaps} of process ``pid`` as ``memifx show`` reads
    its stats file; None before it has one."""
    for proc in stats.scan():
        if proc["pid"] == pid:
            return {i["name"]: i["link_flaps"] for i in proc["interfaces"]}
    return None


@pytest.fixture
def stats_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("MEMIFX_STATS_DIR", str(tmp_path / "stats"))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("role,with_stats,queues", [("master", True, 1), ("slave", False, 1),
                                                  ("master", True, 2)],
                         ids=["master-stats", "slave", "master-2-queues"])
def test_pipelines_change_hosts_under_traffic_without_a_flap(procs, sockdir, stats_dir,
                                                             role, with_stats, queues):
    """xconnect in-process, on 1 and 2 workers, in turn, under a gen's
    traffic: every frame arrives once and in order, no link goes down until
    the gen leaves, and the interface counters count each frame once.  As
    slave, this process's receive queues keep a buffer pool of their own:
    it moves with them."""
    running = Running(stats=with_stats)    # a worker's queue counts in this one's slot
    dp = running.dp
    try:
        a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
        peer_role = "slave" if role == "master" else "master"
        nq = {"rx-queues": str(queues), "tx-queues": str(queues)}
        dp.add_interface("a", spec(a, role, **nq))
        dp.add_interface("b", spec(b, role, **dict(nq, **{"ring-size": "4096"})))
        dp.add_pipeline("p", "xconnect", interfaces=["a", "b"], workers=0)
        gen = start_gen(procs, a, b, peer_role, queues)
        assert wait_for(lambda: all(i["up"] for i in dp.state()["interfaces"].values()), 10)
        assert wait_for(lambda: dp.state()["interfaces"]["a"]["stats"]["rx"][0]["packets"], 10)
        steps = peer_looked = 0
        while gen.poll() is None or steps < len(HOSTS):
            workers = HOSTS[steps % len(HOSTS)]
            dp.remove_pipeline("p")
            time.sleep(0.02)                # unserved a moment: frames wait in the ring
            dp.add_pipeline("p", "xconnect", interfaces=["a", "b"], workers=workers)
            time.sleep(0.15)
            for n, (count, reason) in flaps(dp).items():    # down only when the gen ends
                assert count == 0 or (count == 1 and reason in PEER_LEAVING), (n, reason)
            seen = peer_flaps(gen.pid)
            if gen.poll() is None and seen is not None and not any(seen.values()):
                peer_looked += 1            # and the peer says so too
            steps += 1
        result = gen_result(gen)
        rx = result["receive"]
        assert result["packets"] == COUNT
        assert (rx["received"], rx["lost"], rx["corrupt"], rx["duplicated"]) == \
            (COUNT, 0, 0, 0), rx
        dp.remove_pipeline("p")             # workers' counters are folded by now
        st = dp.state()["interfaces"]
        for name in ("a", "b"):             # the gen leaving, only
            assert (st[name]["link_flaps"], st[name]["last_disconnect"] in PEER_LEAVING) \
                == (1, True), st[name]
        # Each frame counted once, whoever served the queue at the time.
        assert sum(q["packets"] for q in st["a"]["stats"]["rx"]) == COUNT
        assert sum(q["packets"] for q in st["b"]["stats"]["tx"]) == COUNT
        assert not any(sum(q["drops"].values()) for q in st["a"]["stats"]["rx"])
        if queues > 1:                      # the flows really spread over the queues
            assert all(q["packets"] for q in st["a"]["stats"]["rx"])
        assert dp.problems() == []
        assert steps >= len(HOSTS) and peer_looked >= 3
        if with_stats:                      # memifx show: no worker serves them now
            shown = stats.read_file(dp.stats.path)[0]["interfaces"]
            assert [q["worker"] for i in shown for kind in ("rx", "tx")
                    for q in i["queues"][kind]] == [None] * 4 * queues
    finally:
        running.stop()


@pytest.mark.timeout(60)
def test_rx_mode_of_a_worker_served_queue_changes_in_the_worker(sockdir):
    """set_rx_mode on an interface a worker serves: the worker clears or
    sets MASK_INT on that ring (the peer's kicks show it), state() says the
    new mode, and the link stays up."""
    with two_links(sockdir, spec_a={"rx-mode": "polling"}) as (dp, sa, sb):
        dp.add_pipeline("p", "xconnect", interfaces=["a", "b"], workers=1)
        time.sleep(0.2)                     # the attach reaches the worker

        def kicks():
            return sa.stats()["tx"][0]["irq_sent"]
        frames = [frame(i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames
        assert kicks() == 0                 # polling: MASK_INT set, the peer never signals
        dp.set_rx_mode("a", "interrupt")
        assert dp.state()["interfaces"]["a"]["rx_modes"] == ["interrupt"]
        time.sleep(0.2)
        frames = [frame(100 + i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames
        assert kicks() > 0                  # the worker cleared MASK_INT
        dp.set_rx_mode("a", "polling", 0)
        assert dp.state()["interfaces"]["a"]["rx_modes"] == ["polling"]
        time.sleep(0.2)
        before = kicks()
        frames = [frame(200 + i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames
        assert kicks() == before
        # adaptive: quiet, the worker unmasks and sleeps; the first burst
        # kicks it.  Then interrupt, set while it sleeps that way: the ring
        # stays unmasked for good (adaptive masks it again at each
        # wakeup), so every later burst kicks too.
        dp.set_rx_mode("a", "adaptive")
        time.sleep(0.3)
        before = kicks()
        frames = [frame(300 + i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames
        assert kicks() > before
        time.sleep(0.3)                     # quiet again: unmasked, asleep
        dp.set_rx_mode("a", "interrupt")
        assert dp.state()["interfaces"]["a"]["rx_modes"] == ["interrupt"]
        for rnd in range(3):
            time.sleep(0.1)
            before = kicks()
            frames = [frame(400 + 100 * rnd + i, 100) for i in range(50)]
            assert pump(sa, sb, frames, window=16) == frames
            assert kicks() > before, rnd
        assert flaps(dp) == {"a": (0, None), "b": (0, None)}
        assert sa.info()["link_flaps"] == 0 and sb.info()["link_flaps"] == 0


@pytest.mark.timeout(30)
def test_queue_restore_refuses_a_state_that_does_not_fit(sock):
    """A slave receive queue's handed-back pool must be its pool, each
    buffer once; positions must be u16s.  A bad state changes nothing."""
    m = memifx.Interface(socket=sock, role="master", name="m").connect()
    s = memifx.Interface(socket=sock, name="s", ring_size=16).connect()
    try:
        assert s.wait_connected(10) and m.wait_connected(10)
        q = s.connection.rx[0]
        good = q.state()
        pos, posted, bufs, free = good
        assert (pos, posted, len(bufs), len(bufs) + len(free)) == (0, 16, 16, q.nbufs)
        assert sorted(bufs + free) == list(range(q.nbufs))
        bad = [[pos, posted, bufs[:-1], free],                    # a buffer missing
               [pos, posted, bufs[:-1] + bufs[:1], free],         # one twice
               [pos, posted, bufs, free + [q.nbufs]],             # outside the pool
               [pos, posted + 1, bufs, free],                     # more posted than listed
               [-1, posted, bufs, free],
               [pos, posted, bufs, free[:-1] + ["x"]]]
        for state in bad:
            with pytest.raises(ValueError):
                q.restore(state)
        assert q.state() == good
        # The queue still works after the refusals.
        frames = [frame(i, 100) for i in range(40)]
        assert pump(m, s, frames, window=8) == frames
        state = q.state()
        q.restore(state)
        assert q.state() == state
        frames = [frame(100 + i, 100) for i in range(40)]
        assert pump(m, s, frames, window=8) == frames
    finally:
        s.close()
        m.close()


@pytest.mark.timeout(60)
def test_a_worker_that_cannot_hand_back_costs_its_link_a_cycle(sockdir):
    """A worker that does not answer the detach (stopped) cannot say where
    its queues stopped: removing its pipeline cycles the links it served,
    with a reason, instead of guessing; they come back and carry frames."""
    with two_links(sockdir) as (dp, sa, sb):
        p = dp.add_pipeline("p", "xconnect", interfaces=["a", "b"], workers=1)
        time.sleep(0.2)
        frames = [frame(i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames
        worker = p.pool.workers[0].proc
        os.kill(worker.pid, signal.SIGSTOP)
        try:
            dp.remove_pipeline("p")
        finally:
            if worker.poll() is None:
                os.kill(worker.pid, signal.SIGCONT)
        st = dp.state()["interfaces"]
        for name in ("a", "b"):
            assert st[name]["link_flaps"] == 1
            assert "did not hand back" in st[name]["last_disconnect"], st[name]
        assert sa.wait_connected(10) and sb.wait_connected(10)
        assert wait_for(lambda: all(i["up"] for i in dp.state()["interfaces"].values()), 10)
        dp.add_pipeline("p", "xconnect", interfaces=["a", "b"], workers=0)
        frames = [frame(100 + i, 100) for i in range(50)]
        assert pump(sa, sb, frames, window=16) == frames


@pytest.mark.timeout(60)
def test_a_router_moves_between_hosts_without_a_flap(sockdir):
    """ip4 in-process, on a worker, in turn: the routed frames
    arrive every time, the links stay up (the router's queues change hands
    as xconnect's do)."""
    router = dict(routes=["172.16.0.0/12,via=10.0.2.254"],
                  neighbors=["10.0.2.254,%s" % GW1])
    with two_links(sockdir, SPEC_A, SPEC_B) as (dp, sa, sb):
        for workers in (0, 1, 0, 1):
            dp.add_pipeline("r", "ip4", interfaces=["a", "b"], workers=workers,
                            **dict(router))
            time.sleep(0.2)                 # the attach reaches the workers
            assert arriving(sa, sb, 50) == [GW1] * 50, workers
            dp.remove_pipeline("r")
        assert flaps(dp) == {"a": (0, None), "b": (0, None)}
        assert sa.info()["link_flaps"] == 0 and sb.info()["link_flaps"] == 0
