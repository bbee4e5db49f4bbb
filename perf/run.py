#!/usr/bin/env python3
"""memifx performance suite, side by side with DPDK's net_memif (dpdk-testpmd).

    python perf/run.py                  # the full suite (>= 3 trials x 5 s each, ~15 min)
    python perf/run.py --quick          # 1 trial x 1 s: development and smoke test
    python perf/run.py --only uni-memifx-gen-slave --sizes 64
    python perf/run.py --list

Method (FD.io CSIT's MRR): the rate *received* under maximum offered load.
Each trial starts fresh processes, waits for the first frames, discards a
warm-up (1 s; 0 with --quick) and then averages the receiver's per-second rate
samples over the trial (5 s; 1 s with --quick).  Trials run in rounds: the
first trial of every cell, then the second of every cell, and so on, so a slow
drift of the host falls on memifx and testpmd alike.  The median of the trials
is reported with min-max.  Every busy poller is pinned to a CPU of its own (CPU 0:
generator/tester, CPU 1: sink/DUT); two pollers on one CPU would measure the
scheduler.  Frame sizes are L2 bytes without FCS; Gbit/s = Mpps x size x 8
(imix: 7:4:1 of 64/570/1518, 353.8 B average).

Tests (names for --only; a prefix selects a group):
  uni-memifx-gen-slave      memifx gen (slave, CPU 0) -> memifx sink (master, CPU 1)
  uni-memifx-gen-master     the reverse roles: gen master, sink slave
  uni-testpmd               testpmd txonly (client, lcore 0) -> testpmd rxonly (server, lcore 1)
  xc-memifx-worker          tester gen --receive (CPU 0) -> memifx xconnect --workers 1 --cpus 1 -> tester
  xc-memifx-inproc          same, xconnect --workers 0 pinned to CPU 1
  xc-testpmd                same tester -> testpmd io, two memif server ports, lcore 1 -> tester
  ip4-1route                tester -> memifx ip4-forward --workers 0 (CPU 1), 1 route -> tester
  ip4-1M                    same with 1,000,000 /24 routes from a routes file (the tester
                            sends to one destination: one FIB entry is hot)
  ip4-1route-worker         ip4-1route with --workers 1 --cpus 1 (if ip4-forward has workers)
  py-burst, py-zc, py-batch the Python API forwarder perf/pyecho.py (CPU 1) as the DUT
  irq-latency               gen at 10 kfps through xconnect in interrupt mode: p50/p99 of gen's
                            stamps (send time to receive time, tester and DUT in interrupt mode)
  irq-pingpong              one frame at a time, perf/pingpong.py -> memifx echo, both in
                            interrupt mode: round trip p50/p99 from Python (perf_counter_ns)
  poll-pingpong             the same with both sides busy-polling (the floor)
  irq-idle                  CPU used by an interrupt-mode xconnect with links up and no traffic
  host-c-ring               perf/probe.c: a bare C copy ring between CPUs 0 and 1 (memifx's
                            buffer layout, one copy in, one copy out), no memif and no Python:
                            how much the machine itself moves from trial to trial
  host-c-wake               perf/probe.c: eventfd ping-pong between two threads asleep in
                            epoll: the host's floor for an interrupt-mode round trip

Ring 1024 slots and 2048-byte buffers everywhere (the tester's receive side
uses a larger ring, as tests/test_pipeline.py does, so it is not the bottleneck).
Results: perf/results/results.json (raw), results.md (table), results.png (chart,
if matplotlib is installed: pip install memifx[perf]).
"""
import argparse
import atexit
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
RESULTS = os.path.join(HERE, "results")
PY = sys.executable
MEMIFX = [PY, "-m", "memifx.cli.main"]
TESTER_CPU, DUT_CPU = 0, 1
IMIX_AVG = (7 * 64 + 4 * 570 + 1518) / 12.0
RING, BUF = 1024, 2048
# The load-test modes: the same work per frame as testpmd's txonly/rxonly (one
# copy each way, headers written and read); the sink's full check is a
# correctness tool, measured by tests, not here.
LEAN_TX = ["--payload", "zeros"]
LEAN_RX = ["--verify", "stamp"]

# Work per frame on each side, stated next to every ratio.
WORK = {
    "memifx-uni": "tx: gen writes headers and stamp, copies every byte into the ring "
                  "(--payload zeros); rx: sink copies every byte out, checks headers, "
                  "stamp, sequence and latency (--verify stamp)",
    "testpmd-uni": "tx: txonly builds an mbuf, PMD copies it in; rx: PMD copies into an "
                   "mbuf, rxonly frees it unread",
    "memifx-xc": "1 copy, ring A → ring B (no intermediate buffer; chained frames 2)",
    "testpmd-xc": "2 copies: ring → mbuf → ring (io forwarding)",
    "ip4": "1 copy + Ethernet/IPv4 parse, LPM lookup, MAC rewrite, TTL and checksum update",
    "xc": "1 copy, ring A → ring B",
}


def frame_bytes(size):
    if size == "imix":
        return IMIX_AVG
    return float(size) if size.isdigit() else 0.0       # "-": no frame


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ processes

class Proc:
    """A process in its own session, pinned, whose stdout lines are collected
    with arrival times by a thread."""

    def __init__(self, args, cpus=None, env=None):
        e = dict(os.environ, PYTHONUNBUFFERED="1")
        e.update(env or {})
        self.args = args
        # pinned before exec, so every thread and child starts on its CPU
        pin = (lambda: os.sched_setaffinity(0, set(cpus))) if cpus is not None else None
        self.p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True, start_new_session=True, env=e, cwd=ROOT,
                                  preexec_fn=pin)
        self.lines = []
        self.cond = threading.Condition()
        self.t = threading.Thread(target=self._read, daemon=True)
        self.t.start()

    def _read(self):
        for line in self.p.stdout:
            with self.cond:
                self.lines.append((time.monotonic(), line.rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.cond.notify_all()

    def wait_line(self, pattern, timeout):
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for _, l in self.lines:
                    if rx.search(l):
                        return l
                left = end - time.monotonic()
                if left <= 0 or (self.p.poll() is not None and not self.t.is_alive()):
                    raise RuntimeError("%s: no %r in %.0f s; output:\n%s" % (
                        os.path.basename(self.args[0]) + " " + " ".join(self.args[1:4]),
                        pattern, timeout, self.text()[-3000:]))
                self.cond.wait(min(left, 0.2))

    def text(self):
        with self.cond:
            return "\n".join(l for _, l in self.lines)

    def stop(self, timeout=10):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self.t.join(5)
        return self.text()


class Session:
    """Processes and scratch files of one trial; everything goes at exit."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="mxperf-", dir="/tmp")
        self.procs = []
        self.prefixes = []

    def sock(self, name):
        return os.path.join(self.dir, name + ".sock")

    def start(self, args, cpus=None):
        p = Proc(args, cpus)
        self.procs.append(p)
        return p

    def testpmd(self, vdevs, fwd, cpus="0,1", main_lcore=None, extra=()):
        prefix = "mxperf" + uuid.uuid4().hex[:8]
        self.prefixes.append(prefix)
        args = ["dpdk-testpmd", "--no-huge", "-m", "128", "--no-pci",
                "--file-prefix=" + prefix, "-l", cpus]
        if main_lcore is not None:
            args += ["--main-lcore", str(main_lcore)]
        args += ["--vdev=" + v for v in vdevs]
        args += ["--", "--forward-mode=" + fwd, "--auto-start", "--stats-period", "1",
                 "--total-num-mbufs=16384"] + list(extra)
        return self.start(args)

    def close(self):
        for p in reversed(self.procs):
            p.stop()
        for prefix in self.prefixes:
            shutil.rmtree("/var/run/dpdk/" + prefix, ignore_errors=True)
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, etype, exc, tb):
        if etype is not None:
            # keep what every process said, for the failure log
            for p in self.procs:
                p.stop()
            with open(os.path.join(RESULTS, "failures.log"), "a") as f:
                f.write("=== %s: %s\n" % (time.strftime("%H:%M:%S"), exc))
                for p in self.procs:
                    f.write("--- %s (rc %s)\n%s\n" % (" ".join(p.args[:5]), p.p.returncode,
                                                      p.text()[-2000:]))
        self.close()


# ------------------------------------------------------------------ sampling

def memifx_samples(proc, name):
    """Per-interval Mpps samples of one name from a memifx Ticker line."""
    rx = re.compile(r"(?:^|\s)%s\s+([\d.]+) Mpps" % re.escape(name))
    out = []
    with proc.cond:
        lines = list(proc.lines)
    for _, l in lines:
        m = rx.search(l)
        if m:
            out.append(float(m.group(1)))
    return out


def testpmd_samples(proc, port, key="Rx-pps"):
    """Per-stats-period pps samples of one port from testpmd's NIC statistics."""
    out, cur = [], None
    with proc.cond:
        lines = list(proc.lines)
    for _, l in lines:
        m = re.search(r"NIC statistics for port (\d+)", l)
        if m:
            cur = int(m.group(1))
            continue
        m = re.search(r"%s:\s+(\d+)" % key, l)
        if m and cur == port:
            out.append(int(m.group(1)) / 1e6)
    return out


def wait_window(sampler, warm, trial, timeout):
    """Wait until traffic flows, then for warm + trial samples after that;
    returns the mean of the trial samples (the warm-up ones discarded)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        s = sampler()
        first = next((i for i, v in enumerate(s) if v > 0.001), None)
        # the first non-zero sample is a partial interval: skip it too
        if first is not None and len(s) >= first + 1 + warm + trial:
            w = s[first + 1 + warm:first + 1 + warm + trial]
            return sum(w) / len(w), s
        time.sleep(0.2)
    raise RuntimeError("no %d rate samples within %.0f s: %r" % (warm + trial, timeout, sampler()))


# ------------------------------------------------------------------ tests

def spec(sock, **kw):
    kw.setdefault("ring-size", RING)
    kw.setdefault("buffer-size", BUF)
    return ",".join(["socket=" + sock] + ["%s=%s" % (k, v) for k, v in kw.items()])


def uni_memifx(cfg, size, gen_role):
    sink_role = "master" if gen_role == "slave" else "slave"
    with Session() as s:
        sock = s.sock("u")
        # start the master first
        ssink = spec(sock, role=sink_role, name="snk")
        sgen = spec(sock, role=gen_role, name="gen")
        sink_args = MEMIFX + ["sink", ssink, "--stats-interval", "1"] + LEAN_RX
        gen_args = MEMIFX + ["gen", sgen, "--size", str(size), "--stats-interval", "1"] + LEAN_TX
        first, second = (sink_args, DUT_CPU), (gen_args, TESTER_CPU)
        if gen_role == "master":
            first, second = second, first
        p1 = s.start(first[0], [first[1]])
        p1.wait_line(r"sink:|gen:", 20)
        p2 = s.start(second[0], [second[1]])
        sink = p1 if gen_role == "slave" else p2
        mpps, raw = wait_window(lambda: memifx_samples(sink, "snk"), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 30)
        out = sink.stop()
        m = re.search(r"corrupt (\d+)", out)
        return {"mpps": mpps, "samples": raw, "corrupt": int(m.group(1)) if m else None}


def uni_testpmd(cfg, size, tx_role="client"):
    """txonly -> rxonly; tx_role "client" (slave) like uni-memifx-gen-slave,
    "server" (master) like uni-memifx-gen-master.  The sender's forwarding
    lcore polls on CPU 0, the receiver's on CPU 1."""
    rx_role = "server" if tx_role == "client" else "client"
    with Session() as s:
        sock = s.sock("t")
        server = "net_memif0,role=server,id=0,socket=%s,socket-abstract=no" % sock
        # the client (slave) sets the ring and buffer sizes of the connection
        client = "net_memif0,role=client,id=0,socket=%s,socket-abstract=no,rsize=%d,bsize=%d" % (
            sock, RING.bit_length() - 1, BUF)
        first = s.testpmd([server], "rxonly" if rx_role == "server" else "txonly",
                          cpus="%d,%d" % (TESTER_CPU, DUT_CPU),
                          main_lcore=TESTER_CPU if rx_role == "server" else DUT_CPU,
                          extra=[] if rx_role == "server" else ["--txpkts=%s" % size])
        first.wait_line(r"Port statistics|Press enter", 30)
        second = s.testpmd([client], "txonly" if tx_role == "client" else "rxonly",
                           cpus="%d,%d" % (TESTER_CPU, DUT_CPU),
                           main_lcore=DUT_CPU if tx_role == "client" else TESTER_CPU,
                           extra=["--txpkts=%s" % size] if tx_role == "client" else [])
        rx, tx = (first, second) if rx_role == "server" else (second, first)
        mpps, raw = wait_window(lambda: testpmd_samples(rx, 0), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 40)
        tx.stop()           # the sender first: testpmd dislikes a vanishing peer
        # a check on what was counted: bytes per frame from testpmd's own byte rate
        bps = [b for b in testpmd_samples(rx, 0, "Rx-bps") if b > 0]
        pps = [p for p in raw if p > 0]
        bpf = (sum(bps) / sum(pps) / 8) if bps and pps else None
        return {"mpps": mpps, "samples": raw,
                "bytes_per_frame": round(bpf, 1) if bpf else None}


def tester(s, cfg, size, a, b, role="slave", rate=None, extra=()):
    """memifx gen --receive pinned to CPU 0: sends on a, receives on b."""
    args = MEMIFX + ["gen", spec(a, role=role, name="tester", **{"ring-size": 4096}),
                     "--receive", spec(b, role=role, name="tester-rx", **{"ring-size": 16384}),
                     "--size", str(size), "--stats-interval", "1"] + LEAN_TX + LEAN_RX
    args += list(extra)
    if rate:
        args += ["--rate", str(rate)]
    return s.start(args, [TESTER_CPU])


def measure_tester(s, cfg, size, a, b, role="slave", extra=()):
    """Run the tester through a DUT already listening on a and b; its receive rate."""
    t = tester(s, cfg, size, a, b, role, extra=extra)
    mpps, raw = wait_window(lambda: memifx_samples(t, "tester-rx rx"), cfg.warm, cfg.trial,
                            cfg.warm + cfg.trial + 40)
    out = t.stop()
    m = re.search(r"corrupt (\d+)", out)
    return {"mpps": mpps, "samples": raw, "corrupt": int(m.group(1)) if m else None}


def xc_memifx(cfg, size, workers):
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        args = MEMIFX + ["xconnect", spec(a, role="master", name="A"),
                         spec(b, role="master", name="B"), "--workers", str(workers)]
        if workers:
            args += ["--cpus", str(DUT_CPU)]
        x = s.start(args, [DUT_CPU] if not workers else None)
        x.wait_line(r"^xconnect ", 30)
        return measure_tester(s, cfg, size, a, b)


def xc_testpmd(cfg, size):
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        # main lcore 0 (sleeps, prints stats), forwarding lcore 1
        tp = s.testpmd(["net_memif0,role=server,id=0,socket=%s,socket-abstract=no" % a,
                        "net_memif1,role=server,id=0,socket=%s,socket-abstract=no" % b],
                       "io", cpus="%d,%d" % (TESTER_CPU, DUT_CPU))
        tp.wait_line(r"Port statistics", 30)
        r = measure_tester(s, cfg, size, a, b)
        return r


def routes_file(n):
    path = os.path.join(tempfile.gettempdir(), "memifx-perf-routes-%d.txt" % n)
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            # n /24s in 20.0.0.0/6.. spread over the space; plus the tester's /16 last
            for i in range(n - 1):
                f.write("%d.%d.%d.0/24,via=10.0.2.2\n" % (20 + (i >> 16), (i >> 8) & 255, i & 255))
            f.write("198.19.0.0/16,via=10.0.2.2\n")
        os.rename(path + ".tmp", path)
    return path


ROUTER_MAC_A = "02:fe:00:00:00:0a"
HOST_B_MAC = "02:aa:00:00:00:0b"


_IP4_WORKERS = None


def ip4_has_workers():
    global _IP4_WORKERS
    if _IP4_WORKERS is None:
        h = subprocess.run(MEMIFX + ["ip4-forward", "--help"], capture_output=True, text=True,
                           cwd=ROOT).stdout
        _IP4_WORKERS = "--workers" in h
    return _IP4_WORKERS


def ip4(cfg, size, nroutes, workers=0):
    """workers=0: the router's data path in its own process, pinned to CPU 1;
    1: one worker process on CPU 1 (when this memifx's ip4-forward has workers)."""
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        args = MEMIFX + ["ip4-forward",
                         "--interface", spec(a, role="master", name="a", ip="10.0.1.1/24",
                                             mac=ROUTER_MAC_A),
                         "--interface", spec(b, role="master", name="b", ip="10.0.2.1/24"),
                         "--neighbor", "10.0.2.2,%s,dev=b" % HOST_B_MAC]
        if nroutes == 1:
            args += ["--route", "198.19.0.0/16,via=10.0.2.2"]
        else:
            args += ["--routes-file", routes_file(nroutes)]
        if ip4_has_workers():
            args += ["--workers", str(workers)] + (["--cpus", str(DUT_CPU)] if workers else [])
        elif workers:
            raise RuntimeError("this ip4-forward has no --workers")
        r = s.start(args, [DUT_CPU] if not workers else None)
        r.wait_line(r"ip4-forward: \d+ interfaces", 300)
        return measure_tester(s, cfg, size, a, b,
                              extra=["--dst-mac", ROUTER_MAC_A,
                                     "--src-ip", "10.0.1.5", "--dst-ip", "198.19.0.1"])


def pyapi(cfg, size, variant):
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        dut_role = "slave" if variant == "zc" else "master"
        tester_role = "master" if variant == "zc" else "slave"
        if tester_role == "master":
            t = tester(s, cfg, size, a, b, role="master")
            t.wait_line(r"^gen:", 20)
            d = s.start([PY, os.path.join(HERE, "pyecho.py"), variant, a, b, dut_role],
                        [DUT_CPU])
        else:
            d = s.start([PY, os.path.join(HERE, "pyecho.py"), variant, a, b, dut_role],
                        [DUT_CPU])
            d.wait_line(r"pyecho: .* listening", 20)
            t = tester(s, cfg, size, a, b, role="slave")
        mpps, raw = wait_window(lambda: memifx_samples(t, "tester-rx rx"), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 40)
        return {"mpps": mpps, "samples": raw}


def irq_latency(cfg, size, rate=10000):
    """Round trip tester -> xconnect (interrupt mode, in process, CPU 1) -> tester."""
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        x = s.start(MEMIFX + ["xconnect", spec(a, role="master", name="A", **{"rx-mode": "interrupt"}),
                              spec(b, role="master", name="B", **{"rx-mode": "interrupt"}),
                              "--workers", "0"], [DUT_CPU])
        x.wait_line(r"^xconnect ", 30)
        secs = cfg.warm + cfg.trial
        t = s.start(MEMIFX + ["gen", spec(a, name="tester", **{"rx-mode": "interrupt"}),
                              "--receive", spec(b, name="tester-rx", **{"rx-mode": "interrupt"}),
                              "--size", str(size), "--rate", str(rate),
                              "--duration", str(secs), "--json"], [TESTER_CPU])
        deadline = time.monotonic() + secs + 30
        while t.p.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        out = t.stop()
        j = json.loads([l for l in out.splitlines() if l.startswith("{")][-1])
        lat = j["receive"].get("latency_us") or {}
        return {"mpps": j["receive"]["mpps"], "p50_us": lat.get("p50"), "p99_us": lat.get("p99"),
                "max_us": lat.get("max"), "lost": j["receive"]["lost"], "rate": rate}


def pingpong(cfg, size, mode):
    """Single frames, one at a time: perf/pingpong.py (slave, CPU 0) ->
    memifx echo (master, CPU 1) -> back; both sides in the given rx mode
    (interrupt: each side sleeps on its eventfd between frames)."""
    with Session() as s:
        sock = s.sock("e")
        e = s.start(MEMIFX + ["echo", spec(sock, role="master", name="echo", **{"rx-mode": mode})],
                    [DUT_CPU])
        e.wait_line(r"echoing", 20)
        count = int(20000 * cfg.trial)
        p = s.start([PY, os.path.join(HERE, "pingpong.py"), sock, str(count), mode, str(size)],
                    [TESTER_CPU])
        p.wait_line(r"^\{", 60 + cfg.trial * 10)
        j = json.loads(p.wait_line(r"^\{", 1))
        j["mpps"] = None
        return j


def irq_idle(cfg, size):
    """CPU time used by an interrupt-mode xconnect (in process) while both links
    are up and no frame flows (the tester sends 1 frame per second)."""
    import psutil
    with Session() as s:
        a, b = s.sock("a"), s.sock("b")
        x = s.start(MEMIFX + ["xconnect", spec(a, role="master", name="A", **{"rx-mode": "interrupt"}),
                              spec(b, role="master", name="B", **{"rx-mode": "interrupt"}),
                              "--workers", "0"], [DUT_CPU])
        x.wait_line(r"^xconnect ", 30)
        s.start(MEMIFX + ["gen", spec(a, name="tester", **{"rx-mode": "interrupt"}),
                          "--receive", spec(b, name="tester-rx", **{"rx-mode": "interrupt"}),
                          "--rate", "1", "--stats-interval", "1"], [TESTER_CPU])
        x.wait_line(r"B: link up", 20)
        time.sleep(1.0)
        px = psutil.Process(x.p.pid)
        c0, w0 = px.cpu_times(), time.monotonic()
        time.sleep(max(cfg.trial, 2))
        c1, w1 = px.cpu_times(), time.monotonic()
        used = (c1.user + c1.system - c0.user - c0.system) / (w1 - w0)
        return {"mpps": None, "cpu_percent": round(max(0.0, 100 * used), 3)}


_probe = None


def probe(*args):
    """Run perf/probe.c (built once per run, with the system C compiler) and
    return its JSON line."""
    global _probe
    if _probe is None:
        tmp = tempfile.mkdtemp(prefix="mxprobe-", dir="/tmp")
        atexit.register(shutil.rmtree, tmp, True)
        out = os.path.join(tmp, "probe")
        subprocess.run(["cc", "-O2", "-pthread", os.path.join(HERE, "probe.c"), "-o", out],
                       check=True)
        _probe = out
    r = subprocess.run([_probe] + [str(a) for a in args], check=True, capture_output=True,
                       text=True, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def host_ring(cfg, size):
    return {"mpps": probe("ring", size, cfg.trial)["mpps"]}


def host_wake(cfg, size):
    j = probe("wake", int(20000 * cfg.trial))
    j["mpps"] = None
    return j


TESTS = [
    # name, group, sizes (full), function, trials-applicable
    ("uni-memifx-gen-slave", "uni", ["64", "1518", "imix", "9000"], lambda c, z: uni_memifx(c, z, "slave")),
    ("uni-memifx-gen-master", "uni", ["64", "1518", "imix", "9000"], lambda c, z: uni_memifx(c, z, "master")),
    ("uni-testpmd", "uni", ["64", "1518"], uni_testpmd),
    ("uni-testpmd-master-tx", "uni", ["64", "1518"], lambda c, z: uni_testpmd(c, z, "server")),
    ("xc-memifx-worker", "xc", ["64", "1518", "imix", "9000"], lambda c, z: xc_memifx(c, z, 1)),
    ("xc-memifx-inproc", "xc", ["64", "1518"], lambda c, z: xc_memifx(c, z, 0)),
    ("xc-testpmd", "xc", ["64", "1518"], xc_testpmd),
    ("ip4-1route", "ip4", ["64", "1518"], lambda c, z: ip4(c, z, 1)),
    ("ip4-1M", "ip4", ["64", "1518"], lambda c, z: ip4(c, z, 1000000)),
    ("ip4-1route-worker", "ip4", ["64"], lambda c, z: ip4(c, z, 1, 1)),
    ("py-burst", "py", ["64"], lambda c, z: pyapi(c, z, "burst")),
    ("py-zc", "py", ["64"], lambda c, z: pyapi(c, z, "zc")),
    ("py-batch", "py", ["64"], lambda c, z: pyapi(c, z, "batch")),
    ("irq-latency", "irq", ["64"], irq_latency),
    ("irq-pingpong", "irq", ["64", "1518"], lambda c, z: pingpong(c, z, "interrupt")),
    ("poll-pingpong", "irq", ["64"], lambda c, z: pingpong(c, z, "polling")),
    ("irq-idle", "irq", ["64"], irq_idle),
    ("host-c-ring", "host", ["64", "1518"], host_ring),
    ("host-c-wake", "host", ["-"], host_wake),
]

# (memifx test, testpmd test, work key memifx, work key testpmd, target)
RATIOS = [
    ("uni-memifx-gen-slave", "uni-testpmd", "memifx-uni", "testpmd-uni", 1.3),
    ("uni-memifx-gen-master", "uni-testpmd-master-tx", "memifx-uni", "testpmd-uni", 1.3),
    ("xc-memifx-worker", "xc-testpmd", "memifx-xc", "testpmd-xc", 1.2),
    ("xc-memifx-inproc", "xc-testpmd", "memifx-xc", "testpmd-xc", 1.2),
]


def selected(only):
    if not only:
        return TESTS
    return [t for t in TESTS if any(t[0] == o or t[0].startswith(o) or t[1] == o for o in only)]


# ------------------------------------------------------------------ report

def summarize(vals):
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def fmt(st, scale=1.0, digits=2):
    if st is None:
        return "-"
    f = "%%.%df" % digits
    return (f + " (" + f + "–" + f + ")") % (st["median"] * scale, st["min"] * scale,
                                             st["max"] * scale)


def ratio_text(m, t):
    """Median ratio, with the ratios of the extremes; 'counts' only when the
    interval of ratios excludes 1 (the margin exceeds the min-max spread)."""
    if not m or not t or t["median"] <= 0 or t["min"] <= 0:
        return None, "-"
    r = m["median"] / t["median"]
    lo, hi = m["min"] / t["max"], m["max"] / t["min"]
    counts = lo > 1 or hi < 1
    return r, "%.2f× (%.2f–%.2f)%s" % (r, lo, hi, "" if counts else ", within spread: does not count")


def verdict(r, target, a, b):
    """met (even the worst pairing of trials reaches the target), met by the
    median only (the spread reaches below it), or missed by N %; and whether
    the run can say so (>= 3 trials)."""
    if a["min"] / b["max"] >= target:
        v = "met"
    elif r >= target:
        v = "median meets it, the spread does not"
    else:
        v = "missed by %.0f %%" % (100 * (1 - r / target))
    if min(a["n"], b["n"]) < 3:
        v += " (fewer than 3 trials: indicative only)"
    return v


def floor_rows(tests):
    """memifx's interrupt round trip against host-c-wake (medians: that floor
    is steady): table rows.  host-c-ring is not divided into anything: its
    fast or slow state does not follow the memif pairs' (see perf/README.md)."""
    rows = []
    wake = tests.get("host-c-wake", {}).get("-", {})
    for size in ("64", "1518"):
        ping = tests.get("irq-pingpong", {}).get(size, {})
        for key in ("p50_us", "p99_us"):
            if ping.get(key) and wake.get(key):
                rows.append("| irq-pingpong %s | %s | %s µs | %s µs | %.2f |" % (
                    key[:3], size, fmt(ping[key], 1, 1), fmt(wake[key], 1, 1),
                    ping[key]["median"] / wake[key]["median"]))
    return rows


def write_report(results, cfg):
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    tests = results["tests"]
    L = []
    L.append("# memifx performance (perf/run.py%s)\n" % (" --quick" if cfg.quick else ""))
    L.append("%s; %s; %d trial(s) x %g s after %g s warm-up, in rounds over all cells; "
             "median (min–max). MRR: rate received under maximum offered load. Ring %d, buffer %d. "
             "Frame sizes: L2 bytes without FCS. Load average at start: %s, at end: %s.\n"
             % (results["host"], results["date"], cfg.trials, cfg.trial, cfg.warm, RING, BUF,
                results["loadavg"], results.get("loadavg_end", "?")))
    if cfg.quick:
        L.append("**Quick run: 1 short trial per cell, no spread; orientation only.**\n")
    L.append("| test | frame | Mpps | Gbit/s | notes |")
    L.append("|---|---|---|---|---|")
    for name, group, sizes, _ in TESTS:
        if name not in tests:
            continue
        for size in sorted(tests[name], key=lambda z: sizes.index(z) if z in sizes else 99):
            cell = tests[name][size]
            if "error" in cell:
                L.append("| %s | %s | - | - | error: %s |" % (name, size, cell["error"][:120]))
                continue
            st = cell.get("mpps")
            g = frame_bytes(size) * 8 / 1000.0
            notes = []
            if cell.get("p50_us") is not None:
                notes.append("round trip p50 %s µs, p99 %s µs%s"
                             % (fmt(cell["p50_us"], 1, 1), fmt(cell["p99_us"], 1, 1),
                                " at %d fps" % cell["trials"][0]["rate"]
                                if cell["trials"][0].get("rate") else ", one frame at a time"))
            if cell.get("cpu_percent") is not None:
                notes.append("idle CPU %s %%" % fmt(cell["cpu_percent"], 1, 2))
            bpf = [t["bytes_per_frame"] for t in cell["trials"] if t.get("bytes_per_frame")]
            if bpf:
                notes.append("testpmd counted %.0f B/frame" % statistics.median(bpf))
            corrupt = sum(t.get("corrupt") or 0 for t in cell["trials"])
            if corrupt:
                notes.append("corrupt %d" % corrupt)
            L.append("| %s | %s | %s | %s | %s |" % (
                name, size, fmt(st, 1, 2) if cell.get("mpps") else "-",
                fmt(st, g, 2) if cell.get("mpps") else "-",
                "; ".join(notes)))
    L.append("\n## Ratios against testpmd (same run)\n")
    L.append("A ratio counts only when its whole min–max interval (memifx min / testpmd max "
             "to memifx max / testpmd min) lies on one side of 1. *best vs best* divides "
             "the best trials: on this host a process mostly keeps a fast or a slow state "
             "for its whole trial, whatever the program (host-c-ring shows it too), so the "
             "best trials compare the two implementations in the fast state.\n")
    L.append("| test | vs | frame | ratio (range) | best vs best | target | "
             "work per frame, test | work per frame, vs |")
    L.append("|---|---|---|---|---|---|---|---|")
    for m, t, wm, wt, target in RATIOS:
        for size in ("64", "1518"):
            cm = tests.get(m, {}).get(size, {}).get("mpps")
            ct = tests.get(t, {}).get(size, {}).get("mpps")
            r, text = ratio_text(cm, ct)
            if r is None:
                continue
            L.append("| %s | %s | %s | %s | %.2f× | ≥ %.1f×: %s | %s | %s |" % (
                m, t, size, text, cm["max"] / ct["max"], target, verdict(r, target, cm, ct),
                WORK[wm], WORK[wt]))
    # ip4 vs xconnect
    for n in ("ip4-1route", "ip4-1M"):
        for size in ("64", "1518"):
            cm = tests.get(n, {}).get(size, {}).get("mpps")
            cx = tests.get("xc-memifx-inproc", {}).get(size, {}).get("mpps")
            r, text = ratio_text(cm, cx)
            if r is not None:
                L.append("| %s | xc-memifx-inproc | %s | %s | %.2f× | ≥ 0.9×: %s | %s | %s |"
                         % (n, size, text, cm["max"] / cx["max"], verdict(r, 0.9, cm, cx),
                            WORK["ip4"], WORK["xc"]))
    floor = floor_rows(tests)
    if floor:
        L.append("\n## Against the host's own floor (same run)\n")
        L.append("host-c-wake is two threads of a C program waking each other through "
                 "eventfds, both asleep in epoll_wait between frames, in the same rounds "
                 "as irq-pingpong: the round trip this host allows any program. "
                 "host-c-ring, in the table above, does memif's work per frame in bare C "
                 "(one copy into a ring of 1024 buffers of 2048 B laid out as memifx's "
                 "slave lays them, one copy out, CPU 0 to CPU 1). It is not a ceiling to "
                 "divide by: it lands in a fast or a slow state of its own, independently "
                 "of the memif pairs, and shows how much the machine moves.\n")
        L.append("| test | frame | memifx | host floor | ratio |")
        L.append("|---|---|---|---|---|")
        L.extend(floor)
    L.append("\nirq-latency is gen's stamp-to-arrival time at 10 kfps through an "
             "interrupt-mode xconnect: between its batches gen sleeps on its receive "
             "queue's eventfd, so each frame costs two wakeups (the DUT's and gen's) plus "
             "gen's batching of 4 frames; irq-pingpong is the single-frame round trip "
             "(send, sleep on the eventfd, wake on the reply) through `memifx echo` in "
             "interrupt mode, poll-pingpong the same with both sides busy-polling.\n")
    L.append("\nPython API targets at 64 B: burst ≥ 3 Mpps, batch ≥ 10 Mpps. Interrupt mode: "
             "idle CPU ≈ 0, p99 < 50 µs.\n")
    L.append("DUT tests: tester `memifx gen --receive` on CPU 0 sends on A and receives on B; "
             "the DUT polls on CPU 1 (xconnect --workers 1 --cpus 1; --workers 0 pinned; "
             "testpmd io with its forwarding lcore 1 and its sleeping main lcore 0). "
             "The tester is the same for every DUT, so the DUT ratios are bounded by the "
             "tester's own rate.\n")
    if results.get("nodes"):
        L.append("## Instructions per frame, per node (callgrind, 64 B, bursts of 256)\n")
        L.append("Counted by `perf/nodes.py` on in-process loopback rings: exact and "
                 "repeatable where cycle counters are not available. A node's figure "
                 "includes its share of the per-burst call, not the interpreter loop "
                 "around it. The speed of a pair of pollers is bounded by the slower "
                 "side's instructions per frame plus the cache-line transfers between "
                 "the CPUs, which instructions do not show.\n")
        L.append("| node | Ir per frame |")
        L.append("|---|---|")
        for name, ir in results["nodes"]:
            L.append("| %s | %.0f |" % (name, ir))
        L.append("")
    if results.get("chart"):
        L.append("![chart](results.png)\n")
    else:
        L.append("(No chart: %s.)\n" % results.get("chart_note", "matplotlib not installed"))
    with open(os.path.join(RESULTS, "results.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    return "\n".join(L)


def chart(results):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        results["chart_note"] = "matplotlib not importable (pip install memifx[perf])"
        return False
    sizes = ["64", "1518", "imix", "9000"]
    panels = []
    for size in sizes:
        bars = []
        for name, group, _, _ in TESTS:
            st = results["tests"].get(name, {}).get(size, {}).get("mpps")
            if st and not name.startswith("irq"):
                bars.append((name, st))
        if bars:
            panels.append((size, bars))
    if not panels:
        return False
    fig, axes = plt.subplots(1, len(panels), figsize=(4 + 2.2 * sum(len(b) for _, b in panels) / 3, 5),
                             gridspec_kw={"width_ratios": [len(b) for _, b in panels]},
                             squeeze=False)
    for ax, (size, bars) in zip(axes[0], panels):
        vals = [st["median"] for _, st in bars]
        errs = [[st["median"] - st["min"] for _, st in bars],
                [st["max"] - st["median"] for _, st in bars]]
        colors = ["tab:orange" if "testpmd" in n else "tab:gray" if n.startswith("host")
                  else "tab:blue" for n, _ in bars]
        ax.bar(range(len(bars)), vals, yerr=errs, color=colors, capsize=3)
        ax.set_xticks(range(len(bars)))
        ax.set_xticklabels([n for n, _ in bars], rotation=90, fontsize=7)
        ax.set_title("%s B" % size if size != "imix" else "IMIX")
    axes[0][0].set_ylabel("Mpps (MRR: median, min–max)")
    fig.suptitle("memifx (blue), dpdk-testpmd net_memif (orange), bare C ring (gray)%s"
                 % (" — quick run" if results.get("quick") else ""))
    fig.tight_layout()
    fig.savefig(os.path.join(RESULTS, "results.png"), dpi=100)
    plt.close(fig)
    return True


def run_trial(cfg, name, size, fn, k):
    """One trial of a cell: its result dict, or the error text after a
    second failed attempt (a trial that fails to start is retried once)."""
    err = None
    for attempt in range(2):
        try:
            r = fn(cfg, size)
        except Exception as e:      # a failed cell is reported, the suite goes on
            err = "%s: %s" % (type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            log("%s %s trial %d attempt %d: %s (see %s)" % (
                name, size, k + 1, attempt + 1, err[:200],
                os.path.join(RESULTS, "failures.log")))
            continue
        r["attempts"] = attempt + 1
        log("%s %s trial %d: %s" % (name, size, k + 1, {
            k2: (round(v, 3) if isinstance(v, float) else v)
            for k2, v in r.items() if k2 != "samples"}))
        return r
    return err


def main():
    global RESULTS
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1 trial of 1 s, no warm-up")
    ap.add_argument("--only", action="append", default=[],
                    help="a test name, a name prefix or a group (uni, xc, ip4, py, irq); repeatable")
    ap.add_argument("--sizes", help="comma-separated subset of frame sizes")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--trial-seconds", type=int, default=None,
                    help="seconds per trial (the receivers report once a second)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for results.{md,json,png} (default perf/results)")
    ap.add_argument("--update-readme", action="store_true",
                    help="replace README.md's performance section (between the "
                         "<!-- perf:begin --> and <!-- perf:end --> markers; appended if absent) "
                         "with this run's table")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--no-nodes", action="store_true",
                    help="skip the per-node instruction counts (perf/nodes.py, ~1 min)")
    cfg = ap.parse_args()
    RESULTS = os.path.abspath(cfg.out)
    os.makedirs(RESULTS, exist_ok=True)
    if cfg.list:
        for t in TESTS:
            print("%-24s %-4s %s" % (t[0], t[1], ",".join(t[2])))
        return 0
    cfg.trials = cfg.trials or (1 if cfg.quick else 3)
    cfg.trial = cfg.trial_seconds or (1 if cfg.quick else 5)
    cfg.warm = 0 if cfg.quick else 1
    want_sizes = cfg.sizes.split(",") if cfg.sizes else None
    have_testpmd = shutil.which("dpdk-testpmd") is not None
    results = {"host": "%s, %d CPUs" % (os.uname().nodename, os.cpu_count()),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": cfg.quick,
               "loadavg": "%.2f %.2f %.2f" % os.getloadavg(), "trials": cfg.trials,
               "trial_seconds": cfg.trial, "warmup_seconds": cfg.warm, "tests": {}}
    cells = []                      # (name, size, fn), in table order
    for name, group, sizes, fn in selected(cfg.only):
        if "testpmd" in name and not have_testpmd:
            log("%s: skipped, dpdk-testpmd not installed" % name)
            continue
        cells += [(name, size, fn) for size in sizes if not want_sizes or size in want_sizes]
    # Rounds: trial k of every cell before trial k + 1 of any, so that a slow
    # drift of the host (a neighbour's load) falls on memifx and testpmd alike
    # instead of on whichever ran during it.
    trials = {(name, size): [] for name, size, _ in cells}
    errors = {}
    for k in range(cfg.trials):
        for name, size, fn in cells:
            if (name, size) in errors:
                continue            # it failed twice in an earlier round
            r = run_trial(cfg, name, size, fn, k)
            if isinstance(r, str):
                errors[(name, size)] = r
                continue
            trials[(name, size)].append(r)
    for name, size, _ in cells:
        cell = {"trials": trials[(name, size)]}
        if (name, size) in errors:
            cell["error"] = errors[(name, size)]
        if cell["trials"]:
            cell["mpps"] = summarize([t.get("mpps") for t in cell["trials"]])
            if cell["mpps"]:
                cell["gbps"] = {k: v * frame_bytes(size) * 8 / 1000.0 if k != "n" else v
                                for k, v in cell["mpps"].items()}
            for key in ("p50_us", "p99_us", "cpu_percent"):
                if any(t.get(key) is not None for t in cell["trials"]):
                    cell[key] = summarize([t.get(key) for t in cell["trials"]])
        results["tests"].setdefault(name, {})[size] = cell
    results["loadavg_end"] = "%.2f %.2f %.2f" % os.getloadavg()
    if not cfg.no_nodes and not cfg.quick and shutil.which("valgrind"):
        sys.path.insert(0, HERE)
        import nodes
        log("instructions per frame, per node (callgrind)...")
        results["nodes"] = nodes.measure_all(frames=32768)
    results["chart"] = chart(results)
    table = write_report(results, cfg)
    print(table)
    if cfg.update_readme:
        update_readme(table, results["chart"])
    return 0


def update_readme(table, has_chart):
    path = os.path.join(ROOT, "README.md")
    with open(path) as f:
        text = f.read()
    body = table.split("\n", 1)[1]            # drop the report's own title
    if has_chart:
        body = body.replace("![chart](results.png)", "![chart](perf/results/results.png)")
    block = ("<!-- perf:begin -->\n_Generated by `python perf/run.py --update-readme`; "
             "raw data in perf/results/results.json._\n\n" + body.strip() + "\n<!-- perf:end -->")
    if "<!-- perf:begin -->" in text and "<!-- perf:end -->" in text:
        head, rest = text.split("<!-- perf:begin -->", 1)
        tail = rest.split("<!-- perf:end -->", 1)[1]
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n## Performance\n\n" + block + "\n"
    with open(path, "w") as f:
        f.write(text)


if __name__ == "__main__":
    sys.exit(main())
