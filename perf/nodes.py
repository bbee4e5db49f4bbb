"""Instructions per frame of each data-path node, counted by callgrind.

    python perf/nodes.py [--size 64] [--frames 65536] [--out FILE.md]

Cycle counters are not available on this VM, but instruction counts under
``valgrind --tool=callgrind`` are exact and repeatable.  Every node runs in
one process on in-process loopback rings (tests/loopback.py), in bursts of
256, the way gen, sink, xconnect and ip4-forward drive them:

- gen: ``Generator.fill`` (pattern, or zeros with headers only), then
  ``Queue.tx_batch`` on the slave's S2M ring;
- sink: ``Queue.rx_batch`` on the master's side, then ``Checker.check``
  (every byte, or headers and stamp);
- xconnect: ``XConnect.poll`` (master rx -> master tx, one copy);
- ip4: ``Router.poll`` (the whole router graph, tests/cost_burst.py's setup:
  the headers copied into the router's arena, the rest of each frame once,
  ring to ring).

The script runs itself twice under callgrind (N and 2N frames) and divides
the difference of each node's inclusive cost by N: start-up cost cancels out.
A node's cost includes its share of the per-burst call (argument checks,
buffer acquisition), not the interpreter around it.

``--time`` also runs each workload natively, in a process of its own on one
CPU, and times each node's calls (nanoseconds per frame, median of 5 runs
after a warm-up run).  Everything stays in that CPU's caches, so what
the time adds to the instructions is the core's own stalls: a store read
back wider than it was written, a long chain of dependent loads, a
mispredicted branch.  Between two builds on the same machine it shows what
the counts cannot; between two machines it is not comparable.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import statistics
import tempfile
import time
from array import array

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests"))

BURST = 256

# node: (name, workload, regex over callgrind function names (the
# Python-visible entry points), the call workload() times for it)
NODES = [
    ("gen fill, pattern", "fill-pattern", r"Generator_\d+fill$", "fill"),
    ("gen fill, zeros (headers only)", "fill-zeros", r"Generator_\d+fill$", "fill"),
    ("ring tx (slave tx_batch)", "ring", r"Queue_\d+tx_batch$", "tx"),
    ("ring rx (master rx_batch)", "ring", r"Queue_\d+rx_batch$", "rx"),
    ("check, every byte", "check-full", r"Checker_\d+check$", "check"),
    ("check, stamp only", "check-stamp", r"Checker_\d+check$", "check"),
    ("xconnect poll", "xconnect", r"XConnect_\d+poll$", "poll"),
    ("ip4 router poll", "ip4", r"Router_\d+poll$", "poll"),
]


def workload(kind, frames, size, timed_passes=0):
    """Runs ``frames`` frames of one kind; raises on any miscount.  With
    ``timed_passes``, runs that many more passes of ``frames`` over the same
    rings and returns, for each, the nanoseconds spent in each timed call
    (NODES' last column)."""
    from loopback import Loopback
    from memifx.traffic import Checker, Generator
    lb = Loopback(log2=10, buffer_size=2048, n_m2s=1)
    tx, rx = lb.s2m
    mtx, srx = lb.m2s
    lens = array("I", [size]) * BURST
    out = array("I", [0]) * BURST
    staging = bytearray(BURST * size)
    dst = bytearray(BURST * size)
    flows = array("I", [0])
    gen = Generator([size], payload="zeros" if kind in ("fill-zeros", "check-stamp")
                    else "pattern")
    checker = Checker(verify="stamp" if kind == "check-stamp" else "full")
    if kind == "ip4":
        import cost_burst
        frame = cost_burst.udp_frame(size)
        staging[:] = frame * BURST
        router = cost_burst.make_router()
        txqs = [None, mtx]
    elif kind == "xconnect":
        from memifx.xconnect import XConnect
        node = XConnect()
    clock = time.perf_counter_ns
    passes = [None] + [{} for _ in range(timed_passes)]

    def call(key, f, *args):
        if spent is None:
            return f(*args)
        t = clock()
        r = f(*args)
        spent[key] = spent.get(key, 0) + clock() - t
        return r

    for spent in passes:
        for _ in range(frames // BURST):
            if kind != "ip4":
                call("fill", gen.fill, staging, lens, BURST, flows, 0, kind == "fill-zeros")
            if call("tx", tx.tx_batch, staging, lens) != BURST:
                raise SystemExit("short tx")
            if kind == "xconnect":
                moved = call("poll", node.poll, rx, mtx, BURST, 1)
            elif kind == "ip4":
                moved = call("poll", router.poll, 0, rx, txqs, BURST, 1)
            else:
                moved = call("rx", rx.rx_batch, dst, out)
                if kind.startswith("check") and call("check", checker.check, dst, out,
                                                     moved) != moved:
                    raise SystemExit("check failed: %r" % checker.counters())
            if moved != BURST:
                raise SystemExit("short %s: %d" % (kind, moved))
            if kind in ("xconnect", "ip4") and srx.rx_batch(dst, out) != BURST:
                raise SystemExit("short rx")
    lb.close()
    return passes[1:]


def inclusive(path):
    """{function name: inclusive Ir} from a callgrind output file."""
    text = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--threshold=100",
                           "--show-percs=no", path],
                          capture_output=True, text=True, check=True).stdout
    costs = {}
    for line in text.splitlines():
        m = re.match(r"\s*([\d,]+)\s+(?:\*\s+)?\S+?:(\S+)\s", line)
        if m:
            name = m.group(2).split("'")[0]
            costs[name] = max(costs.get(name, 0), int(m.group(1).replace(",", "")))
    return costs


def measure(kind, pattern, frames, size, tmp):
    runs = []
    for n in (frames, 2 * frames):
        out = os.path.join(tmp, "cg.%s.%d" % (kind, n))
        subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=" + out,
                        sys.executable, os.path.abspath(__file__), "--run", kind,
                        "--frames", str(n), "--size", str(size)],
                       check=True, capture_output=True)
        costs = inclusive(out)
        runs.append(sum(v for k, v in costs.items() if re.search(pattern, k)))
    return (runs[1] - runs[0]) / frames


def timed(kind, frames, size, runs=5):
    """{timed call: nanoseconds per frame}, the median of ``runs`` runs of
    ``frames`` frames after one to warm up, in this process."""
    per_run = workload(kind, frames, size, runs)
    return {key: statistics.median(r[key] for r in per_run) / frames for key in per_run[0]}


def measure_time(kind, frames, size, cpu):
    """timed() in a process of its own on CPU ``cpu`` (any where None)."""
    cmd = [sys.executable, os.path.abspath(__file__), "--run", kind, "--time",
           "--frames", str(frames), "--size", str(size)]
    if cpu is not None:
        cmd[:0] = ["taskset", "-c", str(cpu)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def measure_all(frames=65536, size=64, only=None, time_cpu=False):
    """[(node, Ir per frame, ns per frame or None)] for every node (whose
    name contains ``only``); the time (measure_time) where ``time_cpu`` is
    not False: a CPU number, or None for any."""
    frames -= frames % BURST
    out = []
    times = {}
    with tempfile.TemporaryDirectory(prefix="mxnodes-") as tmp:
        for name, kind, pattern, key in NODES:
            if only and only not in name:
                continue
            ns = None
            if time_cpu is not False:
                if kind not in times:
                    times[kind] = measure_time(kind, frames, size, time_cpu)
                ns = times[kind][key]
            out.append((name, measure(kind, pattern, frames, size, tmp), ns))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--frames", type=int, default=65536)
    ap.add_argument("--out", help="also write the table to this Markdown file")
    ap.add_argument("--only", help="nodes whose name contains this")
    ap.add_argument("--time", action="store_true",
                    help="also time each node natively (ns per frame, one CPU)")
    ap.add_argument("--cpu", type=int, default=1,
                    help="the CPU --time runs on (default 1)")
    ap.add_argument("--run", help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.frames -= a.frames % BURST
    if a.run:
        if a.time:
            print(json.dumps(timed(a.run, a.frames, a.size)))
        else:
            workload(a.run, a.frames, a.size)
        return 0
    cpu = (a.cpu if a.cpu < os.cpu_count() else None) if a.time else False
    lines = ["| node | Ir per %d-byte frame |%s" % (a.size, " ns per frame |" if a.time else ""),
             "|---|---|%s" % ("---|" if a.time else "")]
    for name, ir, ns in measure_all(a.frames, a.size, a.only, cpu):
        lines.append("| %s | %.1f |%s" % (name, ir, " %.2f |" % ns if a.time else ""))
        print(lines[-1], flush=True)
    if a.out:
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
