"""memifx gen and sink with --workers: exact counts split over workers, the
report equal to the sum of the per-queue counters, live counters in
``memifx show``, a worker SIGKILLed mid-run replaced without frames counted
twice or silently dropped, and CLI errors.

CPU budget (2 CPUs shared): every gen here is rate-limited (its workers
sleep between batches) and every sink is in interrupt mode, so no process
busy-polls.
"""
import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from conftest import read_until, wait_for
from test_gen_sink import assert_clean, finish, stop

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def workers_of(p):
    return [c for c in psutil.Process(p.pid).children()
            if "memifx.workers.loop" in " ".join(c.cmdline())]


def per_queue(stats, kind, key="packets"):
    return [q[key] for q in stats[kind]]


def show(pid):
    out = subprocess.run(MEMIFX + ["show", "--json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    procs = [x for x in json.loads(out)["processes"] if x["pid"] == pid]
    return procs[0] if procs else None


@pytest.mark.timeout(90)
@pytest.mark.parametrize("size, count", [("64", 60001), ("imix", 36000)])
def test_gen_workers_to_sink_workers_exact(procs, sockdir, monkeypatch, size, count):
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    sock = os.path.join(sockdir, "s")
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt,queues=2"
                                 % sock, "--workers", "2", "--cpus", "0-1", "--json"])
    assert wait_for(lambda: os.path.exists(sock), 10)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % sock, "--workers", "2",
                                "--size", size, "--count", str(count), "--flows", "16",
                                "--rate", "60000", "--json"])
    g = finish(gen)
    assert g["packets"] == count and g["unsent"] == 0
    assert g["workers"] == {"count": 2, "restarts": 0}
    # the totals are the per-queue counters added up; both queues carried traffic
    assert sum(per_queue(g["interface"], "tx")) == count
    assert sum(per_queue(g["interface"], "tx", "bytes")) == g["bytes"]
    assert all(n > 0 for n in per_queue(g["interface"], "tx"))
    if size == "imix":
        assert g["bytes"] == count // 12 * (7 * 64 + 4 * 570 + 1518)
    else:
        assert g["bytes"] == count * 64
    # live: the sink's workers count into its stats file, node counters included
    assert wait_for(lambda: any(n.get("node") == "sink" and n["packets"] == count
                                for n in (show(sink.pid) or {}).get("nodes", [])), 10)
    live = show(sink.pid)["interfaces"][0]
    assert sorted(q["worker"] for q in live["queues"]["rx"]) == [0, 1]
    assert sum(q["packets"] for q in live["stats"]["rx"]) == count
    s = stop(sink)
    assert_clean(s, count)
    assert s["bytes"] == g["bytes"]
    assert s["workers"] == {"count": 2, "restarts": 0}
    assert sum(per_queue(s["interface"], "rx")) == count
    assert per_queue(s["interface"], "rx") == per_queue(g["interface"], "tx")


@pytest.mark.timeout(90)
def test_gen_workers_zeros_to_sink_workers_stamp(procs, sockdir):
    """The load-test modes with workers: gen's workers write zeros after the
    stamp (headers only), the sink's workers check headers and stamps; still
    an exact count, nothing lost, reordered or corrupt."""
    sock = os.path.join(sockdir, "s")
    count = 40000
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt,queues=2"
                                 % sock, "--workers", "2", "--verify", "stamp", "--json"])
    assert wait_for(lambda: os.path.exists(sock), 10)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % sock, "--workers", "2",
                                "--size", "1518", "--payload", "zeros", "--count", str(count),
                                "--flows", "16", "--rate", "60000", "--json"])
    g = finish(gen)
    assert g["packets"] == count and g["unsent"] == 0 and g["bytes"] == count * 1518
    assert g["workers"] == {"count": 2, "restarts": 0}
    assert all(n > 0 for n in per_queue(g["interface"], "tx"))
    assert wait_for(lambda: sum(q["packets"] for q in
                                (show(sink.pid) or {"interfaces": [{"stats": {"rx": []}}]})
                                ["interfaces"][0]["stats"]["rx"]) >= count, 10)
    s = stop(sink)
    assert_clean(s, count)
    assert s["bytes"] == g["bytes"]
    assert s["workers"] == {"count": 2, "restarts": 0}
    assert per_queue(s["interface"], "rx") == per_queue(g["interface"], "tx")


def test_payload_and_verify_reach_the_workers(monkeypatch):
    """The plan a TesterPool hands a worker makes the worker's Generator
    write zeros (headers only, one size) and its Checker check what it was
    told to."""
    from memifx.nodes import tester as tester_workers
    from memifx.tester import make_generator
    from memifx.workers import pool as worker

    def no_spawn(self, interfaces, workers, cpus, quiet=100e-6, node=None, stats=None):
        self.nworkers = workers
        self.plan = {"workers": workers, "node": node}
    monkeypatch.setattr(worker.WorkerPool, "__init__", no_spawn)

    class Port:
        def __init__(self, name):
            self.name, self.mode = name, "eth"
    args = {"sizes": [64], "ip_mode": False, "flows": 4, "src_mac": "020000000001",
            "dst_mac": "ffffffffffff", "src_ip": "c6120001", "dst_ip": "c6130001",
            "payload": "zeros", "queues": 2, "burst": 32}
    assert make_generator(args).zeros
    for verify in ("stamp", "full", "seq"):
        pool = tester_workers.TesterPool(2, None, send=Port("a"), receive=Port("b"), gen=args,
                                         count=100, verify=verify)
        plan, fds = pool.plan_for_spawn(1)
        node = tester_workers.TesterNode(dict(plan, worker=1), list(fds), lambda *a: None)
        assert node.sender.source.gen.zeros and node.sender.source.headers_only
        assert node.receiver.checker.verify == verify


@pytest.mark.timeout(60)
def test_gen_workers_with_receive(procs, abstract_sock):
    """Both ends of one link in one gen: each worker sends on its transmit
    queue and checks its receive queue; the report is the workers' added up."""
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % abstract_sock,
                                "--size", "imix", "--count", "30000", "--flows", "8",
                                "--rate", "50000", "--workers", "2",
                                "--receive", "socket=%s,role=master,queues=2,name=b,"
                                "rx-mode=interrupt" % abstract_sock, "--json"])
    g = finish(gen)
    assert g["packets"] == 30000
    assert_clean(g["receive"], 30000)
    for k in ("received", "lost", "reordered", "duplicated", "corrupt", "latency_us"):
        assert g[k] == g["receive"][k]
    assert g["receive"]["bytes"] == g["bytes"]
    assert per_queue(g["receive"]["interface"], "rx") == per_queue(g["interface"], "tx")


@pytest.mark.timeout(90)
@pytest.mark.parametrize("victim", ["sink", "gen"])
def test_killed_worker_restarted_counters_consistent(procs, sockdir, monkeypatch, victim):
    """SIGKILL one worker of the sink or of the gen mid-run: it is restarted,
    the link flaps, gen still sends exactly --count, and every frame is
    either received or counted lost (never twice)."""
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    sock = os.path.join(sockdir, "s")
    count = 150000
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt,queues=2"
                                 % sock, "--workers", "2", "--json"])
    assert wait_for(lambda: os.path.exists(sock), 10)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % sock, "--workers", "2",
                                "--count", str(count), "--flows", "8", "--rate", "50000"])
    read_until(gen, "gen: ")
    target = sink if victim == "sink" else gen
    assert wait_for(lambda: len(workers_of(target)) == 2, 10)
    assert wait_for(lambda: sum(q["packets"] for q in
                                (show(sink.pid) or {"interfaces": [{"stats": {"rx": []}}]})
                                ["interfaces"][0]["stats"]["rx"]) > 20000, 20)
    victim_pid = workers_of(target)[0].pid
    os.kill(victim_pid, signal.SIGKILL)
    read_until(target, "died: restarted", 20)
    assert wait_for(lambda: len(workers_of(target)) == 2 and
                    victim_pid not in [w.pid for w in workers_of(target)], 10)
    line = read_until(gen, "gen: sent", 60)
    assert int(line.split()[2]) == count
    read_until(gen, "workers: 2, restarts: %d" % (victim == "gen"))
    assert gen.wait(15) == 0
    s = stop(sink)
    assert s["workers"]["restarts"] == (victim == "sink")
    assert s["interface"]["link_flaps"] >= 2                # the restart's flap, then gen's end
    # nothing counted twice, nothing missing silently
    assert s["duplicated"] == 0 and s["corrupt"] == 0 and s["resets"] == 0
    assert s["received"] + s["lost"] - s["reordered"] == count, s
    assert s["received"] <= sum(per_queue(s["interface"], "rx"))


@pytest.mark.timeout(30)
@pytest.mark.parametrize("args, message", [
    (["sink", "socket=@memifx-never", "--cpus", "1-0"], "expected CPU numbers"),
    (["gen", "socket=@memifx-never", "--cpus", "x"], "expected CPU numbers"),
    (["gen", "socket=@memifx-never", "--cpus", "4095"], "not CPUs this process may use"),
    (["gen", "socket=@memifx-never", "--workers", "-1"], "--workers"),
    (["sink", "socket=@memifx-never", "--workers", "2", "--pcap", "/tmp/never.pcap"],
     "main process only"),
])
def test_worker_option_errors(args, message):
    r = subprocess.run(MEMIFX + args, capture_output=True, text=True, timeout=20)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in r.stderr


@pytest.mark.timeout(60)
def test_gen_workers_all_killed_after_sending_reports_real_time(procs, abstract_sock, sockdir,
                                                                monkeypatch):
    """Every gen worker SIGKILLed once it has sent its share, while its frames
    still wait in the rings (the sink is stopped): the replacements send
    nothing (each resumes after the frames its ring counted), yet the report
    gives the time the frames really took to go out (the dead workers' first
    and last frame), not 0 s and 0 Mpps."""
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    count, rate = 1000, 2000.0              # 0.5 s; fits in the two rings untaken
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt,queues=2"
                                 % abstract_sock])
    read_until(sink, "receiving")
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % abstract_sock, "--workers", "2",
                                "--count", str(count), "--flows", "8", "--rate", str(rate)])
    try:
        read_until(gen, "link up", 20)
        os.kill(sink.pid, signal.SIGSTOP)      # nothing is taken from the rings from now on
        assert wait_for(lambda: len(workers_of(gen)) == 2, 10)
        first = workers_of(gen)

        def in_rings():
            p = show(gen.pid)
            return sum(per_queue(p["interfaces"][0]["stats"], "tx")) if p else 0
        assert wait_for(lambda: in_rings() == count, 20, 0.1)
        time.sleep(0.3)                         # the workers' last reports, handled
        for w in first:
            os.kill(w.pid, signal.SIGKILL)
        line = read_until(gen, "gen: sent", 30)
        read_until(gen, "workers: 2, restarts: 2")
        assert gen.wait(15) == 0
    finally:
        os.kill(sink.pid, signal.SIGCONT)
    # gen: sent N frames, B bytes in S s: R Mpps, G Gbit/s (ring full F times)
    words = line.split()
    sent, seconds, mpps = int(words[2]), float(words[7]), float(words[9])
    assert sent == count
    assert 0.8 * (count - 64) / rate < seconds < count / rate + 1.0, line
    assert mpps == pytest.approx(count / seconds / 1e6, abs=0.001)


def test_resumed_sender_spans_frames_its_dead_worker_never_reported(monkeypatch):
    """A gen worker that died before reporting what it sent (its ring
    counters say more than its last report): its successor's sender starts
    from the pool's start and ends no earlier than the death was seen, so
    those frames are inside the reported time; a worker that reported all it
    sent hands on its own first and last frame times."""
    from memifx.nodes import tester as tester_workers
    from memifx.workers import pool as worker

    def no_spawn(self, interfaces, workers, cpus, quiet=100e-6, node=None, stats=None):
        self.nworkers = workers
        self.plan = {"workers": workers, "node": node}
    monkeypatch.setattr(worker.WorkerPool, "__init__", no_spawn)

    class Port:
        name, mode, sent = "a", "eth", [300, 500]

        def stats(self):
            return {"tx": [{"packets": n, "bytes": 64 * n} for n in self.sent]}
    args = {"sizes": [64], "ip_mode": False, "flows": 8, "src_mac": "020000000001",
            "dst_mac": "ffffffffffff", "src_ip": "c6120001", "dst_ip": "c6130001",
            "payload": "pattern", "queues": 2, "burst": 32}
    pool = tester_workers.TesterPool(2, None, send=Port(), gen=args, count=1000)
    pool.spawned = {0, 1}
    pool.states = {1: {"done": True, "sender": {"sent": 500, "bytes": 32000, "ring_full": 0,
                                                "unsent": 0, "t_up": 5.0, "t_last": 6.0,
                                                "in_flight": 0}}}
    before = time.monotonic()
    plans = {w: pool.plan_for_spawn(w)[0] for w in (0, 1)}
    resumed = {w: p["tester"]["resume"]["sender"] for w, p in plans.items()}
    assert resumed[0]["queues"] == {"0": 300}
    assert resumed[0]["t_up"] == pool.started and resumed[0]["t_last"] >= before
    assert (resumed[1]["t_up"], resumed[1]["t_last"]) == (5.0, 6.0)
    node = tester_workers.TesterNode(dict(plans[1], worker=1), [], lambda *a: None)
    assert node.done and (node.sender.t_up, node.sender.t_last) == (5.0, 6.0)
