"""Instructions per frame, memifx beside dpdk-testpmd, each counted by callgrind.

    python perf/peer_cost.py                       # 64 and 1518 B, every pair (~15 min)
    python perf/peer_cost.py --sizes 64 --only forward --out perf/results/peer-cost.md

Rates on a small shared VM swing two- and threefold from one trial to the
next; instruction counts do not.  So beside the rate cells of perf/run.py,
this measures what each side executes per frame in the same topologies:

    send      memifx gen (copying; --zero-copy;   testpmd txonly   -> a sink
              --payload fixed)
    receive   memifx sink (stamp; --zero-copy;    testpmd rxonly   <- a gen
              --verify seq, count)
    forward   memifx xconnect, ip4-forward        testpmd io       <- gen --receive

The measured program runs under ``valgrind --tool=callgrind`` pinned to CPU 1;
its peer is a native memifx process on CPU 0.  Under callgrind the measured
side is some 30 times slower than its peer, so its receive rings are always
full and its transmit rings always have room: every burst is a full one, the
way a saturated data path runs.

- testpmd runs interactively: ``start``, ``--seconds`` of traffic, ``stop``.
  Its forwarding lcore is a thread of its own (``--separate-threads``) that
  does nothing but the forwarding loop between those two commands, so that
  thread's instructions over the frames moved meanwhile (counted by the
  native peer, or by testpmd's port statistics for rxonly) are its cost per
  frame, loop and driver included.  Both of its lcores share CPU 1
  (valgrind runs one thread at a time anyway), so the peer has CPU 0 to
  itself.  Saturation is checked, not assumed: the calls the lcore made
  into the memif driver (from its profile) must carry 90 % of full bursts
  of 32 on average, else the cell fails; empty polls would count as
  testpmd's cost per frame.
- memifx runs its command twice, for F and 2F frames, and takes the
  difference of the instructions of its data path over F: start-up,
  handshakes and the last idle moments cancel out.  The data path is every
  thread of the command's worker processes (``--trace-children``) where it
  has workers (xconnect, ip4-forward: one each), or of the command itself
  (gen, sink); a main process beside workers is the control plane, as
  testpmd's main lcore is, and left out.  The forwarders' interfaces are
  ``rx-mode=adaptive``: they poll while traffic flows and sleep once it
  stops, so idle moments cost next to nothing.  Repeated runs agree within
  about 1 Ir per frame at F = 300 000.

Work per frame differs, as it does in the rate cells: testpmd copies every
frame into an mbuf on receive and out of one on transmit (io: two copies);
memifx xconnect copies once, ring to ring; a memifx sink reads headers and
stamp.  The table says so beside each ratio.  testpmd's figures include its
burst of 32 (its default), memifx's its own 256.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import time

from harness import (BUF, DUT_CPU, MEMIFX, RING, TESTER_CPU, Session, log, spec)
from scenarios import IP4_TRAFFIC, LEAN_RX, LEAN_TX, ip4_forward_args, tester

MEASURED_CPU, PEER_CPU = DUT_CPU, TESTER_CPU     # the peers and scenarios.tester: CPU 0
# The ring of a peer that sends to the measured receiver (gen, as slave,
# sets its size): as the perf suite's tester's.  With 1024 slots, testpmd
# rxonly's bursts were only 77-93 % full on average: the peer refills in
# the steps testpmd frees, one pass each.
SENDER_RING = {"ring-size": 4096}
FULL_BURSTS = 0.9       # testpmd's bursts must be this full on average (saturated)
STARTUP = 180           # seconds a program under callgrind may take to listen or connect

# The cells: (group, name, side, work per frame).  The group's testpmd cell
# is what the others' ratios are taken against.
CELLS = [
    ("send", "testpmd txonly", "testpmd",
     "frames made from a template mbuf, each copied into the ring"),
    ("send", "memifx gen", "memifx",
     "headers and stamp written, each frame copied into the ring (--payload zeros)"),
    ("send", "memifx gen --zero-copy", "memifx",
     "headers and stamp written straight into the ring's buffers"),
    ("send", "memifx gen --zero-copy --payload fixed", "memifx",
     "no stamp: each slave buffer written once, then only its descriptor"),
    ("receive", "testpmd rxonly", "testpmd",
     "each frame copied into an mbuf, then freed"),
    ("receive", "memifx sink", "memifx",
     "each frame copied out, headers and stamp checked (--verify stamp)"),
    ("receive", "memifx sink --zero-copy", "memifx",
     "headers and stamp checked where the frame lies"),
    ("receive", "memifx sink --verify count", "memifx",
     "each frame copied out, counted, not read (testpmd rxonly's work)"),
    ("receive", "memifx sink --zero-copy --verify seq", "memifx",
     "the stamp alone read where the frame lies (sequence, latency)"),
    ("receive", "memifx sink --zero-copy --verify count", "memifx",
     "descriptors checked, frames counted, none read"),
    ("forward", "testpmd io", "testpmd",
     "copied into an mbuf from one ring, out of it into the other"),
    ("forward", "memifx xconnect", "memifx",
     "copied once, ring to ring (one worker)"),
    ("forward", "memifx ip4-forward", "memifx",
     "headers parsed, looked up (1 route), rewritten; copied once, ring to ring (one worker)"),
]


def callgrind(outdir, *extra):
    """The command prefix that runs a program under callgrind, one profile
    per process (and per thread with --separate-threads) in ``outdir``."""
    return ["valgrind", "--tool=callgrind", "--dump-instr=no",
            "--callgrind-out-file=" + os.path.join(outdir, "cg.%p")] + list(extra)


def profiles(outdir):
    """[(command line, instructions counted, path)] of every profile in ``outdir``."""
    out = []
    for name in sorted(os.listdir(outdir)):
        if not name.startswith("cg."):
            continue
        cmd, total = "", None
        with open(os.path.join(outdir, name)) as f:
            for line in f:
                if line.startswith("cmd:"):
                    cmd = line[4:].strip()
                m = re.match(r"(?:summary|totals):\s+(\d+)", line)
                if m:
                    total = int(m.group(1))
                    break
        if total is not None:
            out.append((cmd, total, os.path.join(outdir, name)))
    return out


def data_path_ir(outdir):
    """The instructions of the processes that ran the data path: a memifx
    command's workers where it has them (its main process is the control
    plane, as testpmd's main lcore is), else the command itself."""
    found = profiles(outdir)
    workers = [t for cmd, t, _ in found if "memifx.workers.loop" in cmd]
    return sum(workers) if workers else sum(t for _, t, _ in found)


def driver_calls(path):
    """Calls testpmd's own code made into the memif driver (its receive and
    transmit bursts), in one thread's profile ``path``."""
    names, ob, cob, n = {}, "", None, 0
    with open(path) as f:
        for line in f:
            if line.startswith(("ob=", "cob=")):
                key, _, val = line.rstrip("\n").partition("=")
                m = re.match(r"\((\d+)\)(?: (.*))?$", val)
                # a name is given in full the first time, by its number after
                name = names.setdefault(m.group(1), m.group(2) or "") if m else val
                if key == "ob":
                    ob, cob = name, None
                else:
                    cob = name
            elif line.startswith("calls="):
                if ob.endswith("dpdk-testpmd") and "librte_net_memif" in (cob or ob):
                    n += int(line[6:].split()[0])
                cob = None              # a cob= names the callee of one call only
    return n


def wait_path(path, proc, timeout):
    """Wait until ``path`` exists (a master's socket: it listens)."""
    end = time.monotonic() + timeout
    while not os.path.exists(path):
        if proc.p.poll() is not None or time.monotonic() > end:
            raise RuntimeError("%s never listened on %s:\n%s" % (
                " ".join(proc.args[:6]), path, proc.text()[-2000:]))
        time.sleep(0.2)


def wait_exit(proc, timeout):
    """The output of ``proc`` once it exits by itself; RuntimeError after
    ``timeout`` seconds."""
    try:
        proc.p.wait(timeout)
    except subprocess.TimeoutExpired:
        raise RuntimeError("%s did not finish in %d s:\n%s" % (
            " ".join(proc.args[:6]), timeout, proc.text()[-2000:]))
    proc.t.join(10)
    return proc.text()


def last_json(text):
    """The JSON object a memifx command printed last (its --json report)."""
    for line in reversed(text.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON report in:\n" + text[-2000:])


# ------------------------------------------------------------------ memifx

def cell_options(name):
    """The options a memifx cell's name gives its command ("memifx sink
    --zero-copy --verify seq"); gen's --payload and sink's --verify are
    LEAN_TX's and LEAN_RX's unless the name says otherwise."""
    opts = name.split()[2:]
    lean = LEAN_TX if name.startswith("memifx gen") else LEAN_RX
    return (lean if lean[0] not in opts else []) + opts


def memifx_once(cfg, name, size, frames):
    """(instructions of the measured memifx command's data path, frames it
    moved) for one run of ``frames`` frames."""
    opts = cell_options(name)
    with Session(cfg.results) as s:
        a, b = s.sock("a"), s.sock("b")
        cg = os.path.join(s.dir, "cg")
        os.mkdir(cg)
        under = callgrind(cg, "--trace-children=yes")
        if name.startswith("memifx gen"):
            # (fixed frames have no stamp to check: the peer counts them)
            peer_rx = ["--verify", "count"] if "fixed" in opts else LEAN_RX
            peer = s.start(MEMIFX + ["sink", spec(a, role="master", name="peer")] + peer_rx,
                           [PEER_CPU])
            wait_path(a, peer, 30)
            gen = s.start(under + MEMIFX + ["gen", spec(a, role="slave", name="gen"),
                                            "--size", str(size), "--count", str(frames),
                                            "--json"] + opts, [MEASURED_CPU])
            moved = last_json(wait_exit(gen, STARTUP + 600))["packets"]
        elif name.startswith("memifx sink"):
            sink = s.start(under + MEMIFX + ["sink", spec(a, role="master", name="sink"),
                                             "--count", str(frames), "--json"] + opts,
                           [MEASURED_CPU])
            wait_path(a, sink, STARTUP)
            s.start(MEMIFX + ["gen", spec(a, role="slave", name="peer", **SENDER_RING),
                              "--size", str(size)] + LEAN_TX, [PEER_CPU])
            moved = last_json(wait_exit(sink, STARTUP + 600))["packets"]
        else:
            moved = forward_once(s, cfg, under, name, size, frames, a, b)
        return data_path_ir(cg), moved


def forward_once(s, cfg, under, name, size, frames, a, b):
    """One run of a memifx forwarder between two masters, fed by the perf
    suite's tester (gen --receive); the frames that came back (every frame
    sent was forwarded)."""
    adaptive = {"rx-mode": "adaptive"}
    if name == "memifx xconnect":
        args, traffic = ["xconnect", spec(a, role="master", name="A", **adaptive),
                         spec(b, role="master", name="B", **adaptive)], []
    else:
        args, traffic = ip4_forward_args(a, b, 1, **adaptive), IP4_TRAFFIC
    dut = s.start(under + MEMIFX + args + ["--workers", "1", "--cpus", str(MEASURED_CPU)],
                  [MEASURED_CPU])
    wait_path(a, dut, STARTUP)
    wait_path(b, dut, STARTUP)
    t = tester(s, cfg, size, a, b, extra=["--count", str(frames), "--json"] + traffic)
    r = last_json(wait_exit(t, STARTUP + 600))
    if r["received"] != r["packets"]:
        raise RuntimeError("%s: %d of %d frames came back" % (name, r["received"], r["packets"]))
    dut.stop(timeout=120)           # SIGTERM: it reports and exits, callgrind writes
    return r["received"]


def memifx_cost(cfg, name, size):
    """Instructions per frame of a memifx command: the difference of a run
    of 2F frames and one of F, over F."""
    f = cfg.frames
    ir1, n1 = memifx_once(cfg, name, size, f)
    ir2, n2 = memifx_once(cfg, name, size, 2 * f)
    if n2 <= n1:
        raise RuntimeError("%s: %d frames, then %d" % (name, n1, n2))
    return {"ir_per_frame": (ir2 - ir1) / (n2 - n1), "frames": [n1, n2], "ir": [ir1, ir2]}


# ------------------------------------------------------------------ testpmd

def testpmd_cost(cfg, name, size):
    """Instructions per frame of testpmd's forwarding lcore between
    ``start`` and ``stop``, frames counted by the native peer (rxonly: by
    testpmd's port statistics, as its sender keeps sending)."""
    fwd = name.split()[1]
    with Session(cfg.results) as s:
        a, b = s.sock("a"), s.sock("b")
        cg = os.path.join(s.dir, "cg")
        os.mkdir(cg)
        server = "net_memif%d,role=server,id=0,socket=%s,socket-abstract=no"
        client = ("net_memif0,role=client,id=0,socket=%s,socket-abstract=no,rsize=%d,bsize=%d"
                  % (a, RING.bit_length() - 1, BUF))
        # Both lcores, and every other thread of the process, on the measured
        # CPU: the peer has the other to itself.  (With only the lcores
        # there, something of testpmd's under valgrind took CPU time from
        # the peer: rxonly's bursts were 35 % full over 8 s.)
        lcores = "0@%d,1@%d" % (MEASURED_CPU, MEASURED_CPU)
        pin = [MEASURED_CPU]
        # line-buffered: testpmd answers commands through stdio on a pipe
        under = ["stdbuf", "-oL"] + callgrind(cg, "--separate-threads=yes")
        if fwd == "txonly":
            peer = s.start(MEMIFX + ["sink", spec(a, role="master", name="peer")] + LEAN_RX,
                           [PEER_CPU])
            wait_path(a, peer, 30)
            tp = s.testpmd([client], "txonly", wrap=under, lcores=lcores, interactive=True,
                           pin=pin, extra=["--txpkts=%d" % size])
        else:
            vdevs = [server % (0, a)] + ([server % (1, b)] if fwd == "io" else [])
            tp = s.testpmd(vdevs, fwd, wrap=under, lcores=lcores, interactive=True, pin=pin)
            wait_path(a, tp, STARTUP)
            if fwd == "io":
                wait_path(b, tp, STARTUP)
                peer = tester(s, cfg, size, a, b)
            else:
                peer = s.start(MEMIFX + ["gen", spec(a, role="slave", name="peer", **SENDER_RING),
                                         "--size", str(size)] + LEAN_TX, [PEER_CPU])
        # every link of the peer up: it sends (or waits for frames)
        peer.wait_line(r"^(peer|tester): link up", STARTUP)
        if fwd == "io":
            peer.wait_line(r"^tester-rx: link up", STARTUP)
        tp.wait_line(r"^Done$", STARTUP)    # its link check over: it reads commands
        tp.send("start")
        tp.wait_line(r"packet forwarding - ports=", 60)
        time.sleep(cfg.seconds)
        tp.send("stop")
        tp.wait_line(r"Accumulated forward statistics", 120)
        if fwd == "rxonly":
            tp.send("show port stats 0")
            # (the forward statistics' line reads RX-packets ... RX-dropped)
            shown = tp.wait_line(r"RX-packets:\s+\d+\s+RX-missed:", 60)
        said = peer.stop(timeout=60)        # the peer first: testpmd no longer forwards
        tp.send("quit")
        wait_exit(tp, 120)
        # the forwarding lcore: the thread that executed the most
        _, lcore, path = max(profiles(cg), key=lambda p: p[1])
        calls = driver_calls(path)
    if fwd == "txonly":
        # frames the sink took, and those testpmd made but found no room for
        moved = int(re.search(r"^sink: (\d+) frames", said, re.M).group(1))
        moved += int(re.search(r"Accumulated forward statistics.*?TX-dropped:\s+(\d+)",
                               tp.text(), re.S).group(1))
    elif fwd == "io":
        moved = int(re.search(r"^gen receive: .*received (\d+)", said, re.M).group(1))
    else:
        moved = int(re.search(r"RX-packets:\s+(\d+)", shown).group(1))
    if not moved:
        raise RuntimeError("%s moved no frames:\n%s\n---\n%s"
                           % (name, tp.text()[-3000:], said[-1500:]))
    # Saturated, every receive burst of the measured port is full (32
    # frames) and so is every transmit burst; io also polls its idle second
    # port once per round: 3 driver calls per 32 frames there, 1 otherwise.
    # A peer that does not keep up shows as empty polls, which would count
    # as testpmd's cost per frame.
    fill = moved / calls * (3 if fwd == "io" else 1) / 32 if calls else 0.0
    if fill < FULL_BURSTS:
        raise RuntimeError("%s was not kept saturated: %d frames in %d driver calls "
                           "(bursts %.0f%% full)" % (name, moved, calls, 100 * fill))
    return {"ir_per_frame": lcore / moved, "frames": [moved], "ir": [lcore],
            "driver_calls": calls, "burst_fill": round(fill, 3)}


# ------------------------------------------------------------------ report

def table(results, sizes):
    """Markdown: per group, each cell's instructions per frame at each size
    and its ratio to testpmd's (testpmd / memifx: > 1 where memifx does less)."""
    lines = ["| group | program | work per frame | " + " | ".join(
        "%s B: Ir/frame (testpmd ÷ this)" % z for z in sizes) + " |",
             "|---|---|---|" + "---|" * len(sizes)]
    for group, name, side, work in CELLS:
        if name not in results:
            continue
        base = next(n for g, n, sd, _ in CELLS if g == group and sd == "testpmd")
        cols = []
        for z in sizes:
            c = results[name].get(str(z))
            b = results.get(base, {}).get(str(z))
            if c is None:
                cols.append("—")
            elif side == "testpmd" or b is None:
                cols.append("%.1f" % c["ir_per_frame"])
            else:
                cols.append("%.1f (%.2f×)" % (c["ir_per_frame"],
                                              b["ir_per_frame"] / c["ir_per_frame"]))
        lines.append("| %s | %s | %s | %s |" % (group, name, work, " | ".join(cols)))
    return "\n".join(lines) + "\n"


def header(cfg, sizes):
    """What the table was measured with: when, where, how many frames."""
    dpdk = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "dpdk"],
                          capture_output=True, text=True).stdout.strip() or "unknown"
    return ("`perf/peer_cost.py --sizes %s --frames %d --seconds %g`, %s, %s (%d CPUs), "
            "DPDK %s. Instructions per frame under callgrind; in brackets, testpmd's "
            "figure in the same group divided by this one (> 1: memifx executes fewer).\n\n"
            % (",".join(map(str, sizes)), cfg.frames, cfg.seconds,
               time.strftime("%Y-%m-%d"), os.uname().nodename, os.cpu_count(), dpdk))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="64,1518", help="frame sizes, comma-separated")
    ap.add_argument("--only", action="append", default=[],
                    help="a group (send, receive, forward) or a program name prefix")
    ap.add_argument("--frames", type=int, default=2_000_000,
                    help="F: memifx runs F and 2F frames")
    ap.add_argument("--seconds", type=float, default=8.0,
                    help="testpmd's time between start and stop")
    ap.add_argument("--out", help="also write the table to this Markdown file")
    ap.add_argument("--json", help="also write every figure to this JSON file")
    cfg = ap.parse_args()
    # where a failed cell's output goes (failures.log): beside the results
    cfg.results = os.path.dirname(os.path.abspath(cfg.out or cfg.json or "peer-cost"))
    sizes = [int(z) for z in cfg.sizes.split(",")]
    cells = [c for c in CELLS
             if not cfg.only or any(o == c[0] or c[1].startswith(o) for o in cfg.only)]
    results = {}
    for z in sizes:
        for group, name, side, _ in cells:
            log("%s, %d B..." % (name, z))
            fn = testpmd_cost if side == "testpmd" else memifx_cost
            r = fn(cfg, name, z)
            log("  %.1f Ir/frame" % r["ir_per_frame"])
            results.setdefault(name, {})[str(z)] = r
    text = table(results, sizes)
    print(text, end="")
    if cfg.out:
        with open(cfg.out, "w") as f:
            f.write(header(cfg, sizes) + text)
    if cfg.json:
        with open(cfg.json, "w") as f:
            json.dump({"sizes": sizes, "frames": cfg.frames, "seconds": cfg.seconds,
                       "cells": results}, f, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
