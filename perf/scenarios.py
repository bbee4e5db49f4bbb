"""The perf suite's scenarios: one function per family of cells, and the table
of tests (name, group, frame sizes, function, description) that --list prints
and --only selects from.

A scenario function takes the run's configuration (``cfg.out``: results
directory; ``cfg.warm`` and ``cfg.trial``: warm-up and measured seconds) and a
frame size (a string: "64", "imix", or "-" for a test without frames), runs one
trial in fresh processes and returns its result dict: "mpps" (the receiver's
mean rate over the trial, or None for a latency or CPU test), "samples" and
what else the family measures (corrupt, p50_us, p99_us, cpu_percent, ...).
"""
import atexit
import functools
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import namedtuple

import cpuplan
from harness import (BUF, DUT_CPU, HERE, MEMIFX, PY, RING, ROOT, SINK_CPU, TESTER_CPU,
                     Session, memifx_samples, spec, testpmd_samples, wait_window)

# The load-test modes: the same work per frame as testpmd's txonly/rxonly (one
# copy each way, headers written and read); the sink's full check is a
# correctness tool, measured by tests, not here.
LEAN_TX = ["--payload", "zeros"]
LEAN_RX = ["--verify", "stamp"]


# The zero-copy load-test modes, the work of libmemif's benchmark: gen writes
# each frame straight into the ring's buffers (one pass), sink reads the stamp
# alone where the frame lies (sequence and latency; --verify seq).
ZERO_COPY_TX = ["--zero-copy"]
ZERO_COPY_RX = ["--zero-copy", "--verify", "seq"]

# The DUT cells' tester, cheaper per frame on each side than the
# cross-connect it measures (perf/results/peer-cost-vm.md: about 44 and 41
# instructions per frame against xconnect's 66), so that those cells
# measure the DUT (split: each side on a CPU of its own; on one CPU, as gen
# --receive, the two add up, still well below the stamped tester's): gen
# sends fixed frames from its own buffers (only descriptors written once a
# buffer holds one), the receiver counts (descriptors checked, frames not
# read).  What the DUT does to frames, the tests check.
DUT_TX = ["--payload", "fixed", "--zero-copy"]
DUT_RX = ["--zero-copy", "--verify", "count"]


@functools.lru_cache(maxsize=None)
def command_help(command):
    """``memifx COMMAND --help`` (asked once per run)."""
    return subprocess.run(MEMIFX + [command, "--help"], capture_output=True, text=True,
                          cwd=ROOT).stdout


def zero_copy_missing():
    """Why the zero-copy cells cannot run with this memifx (gen or sink
    without --zero-copy), or None when they can."""
    lacking = [c for c in ("gen", "sink") if "--zero-copy" not in command_help(c)]
    if lacking:
        return "this memifx's %s no --zero-copy" % (
            " and ".join(lacking) + (" have" if len(lacking) > 1 else " has"))
    if "|seq" not in command_help("sink"):      # the choice, as --help lists it
        return "this memifx's sink has no --verify seq"
    return None


def uni_memifx(cfg, size, gen_role, zero_copy=False):
    """memifx gen (CPU 0) -> memifx sink (CPU 1) on one socket, gen in
    ``gen_role``; the master starts first.  The sink's receive rate.
    ``zero_copy``: both in their zero-copy modes."""
    sink_role = "master" if gen_role == "slave" else "slave"
    with Session(cfg.out) as s:
        sock = s.sock("u")
        # start the master first
        ssink = spec(sock, role=sink_role, name="snk")
        sgen = spec(sock, role=gen_role, name="gen")
        sink_args = (MEMIFX + ["sink", ssink, "--stats-interval", "1"]
                     + (ZERO_COPY_RX if zero_copy else LEAN_RX))
        gen_args = (MEMIFX + ["gen", sgen, "--size", str(size), "--stats-interval", "1"]
                    + LEAN_TX + (ZERO_COPY_TX if zero_copy else []))
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
    with Session(cfg.out) as s:
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


def tester(s, cfg, size, a, b, role="slave", rate=None, extra=(), work=(LEAN_TX, LEAN_RX)):
    """memifx gen --receive pinned to CPU 0: sends on a, receives on b.
    ``work``: (gen's options, its receiver's), stamped frames checked by
    default."""
    args = MEMIFX + ["gen", spec(a, role=role, name="tester", **{"ring-size": 4096}),
                     "--receive", spec(b, role=role, name="tester-rx", **{"ring-size": 16384}),
                     "--size", str(size), "--stats-interval", "1"] + work[0] + work[1]
    args += list(extra)
    if rate:
        args += ["--rate", str(rate)]
    return s.start(args, [TESTER_CPU])


def split_tester(cfg):
    """Whether the DUT cells' tester sends and receives on CPUs of their own
    (gen on CPU 0, sink on CPU 2) rather than both on CPU 0 (gen --receive):
    --tester split|one, or by default split wherever CPU 2 is usable."""
    mode = getattr(cfg, "tester", "auto")
    if mode == "auto":
        return SINK_CPU in cpuplan.usable_cpus()
    return mode == "split"


def tester_work():
    """(gen's options, its receiver's) for the DUT cells' tester: DUT_TX and
    DUT_RX where this memifx has them (probed from gen --help, which lists
    each option's choices: "|fixed" and "|count"; the words alone are in
    older helps too), else the lean stamped ones."""
    helps = command_help("gen")
    if "|fixed" in helps and "|count" in helps:
        return DUT_TX, DUT_RX
    return LEAN_TX, LEAN_RX


def measure_tester(s, cfg, size, a, b, role="slave", extra=()):
    """Run the tester through a DUT already listening on a and b; its receive
    rate.  ``extra``: gen's options (what it sends)."""
    work = tester_work()
    if split_tester(cfg):
        # the receiver first, so no frame is offered before it listens
        rx = s.start(MEMIFX + ["sink", spec(b, role=role, name="tester-rx",
                                            **{"ring-size": 16384}),
                               "--stats-interval", "1"] + work[1], [SINK_CPU])
        rx.wait_line(r"^sink:", 20)
        tx = s.start(MEMIFX + ["gen", spec(a, role=role, name="tester", **{"ring-size": 4096}),
                               "--size", str(size), "--stats-interval", "1"] + work[0]
                     + list(extra), [TESTER_CPU])
        name, kind = "tester-rx", "split"
    else:
        rx = tx = tester(s, cfg, size, a, b, role, extra=extra, work=work)
        name, kind = "tester-rx rx", "one-cpu"
    if work[0] is not DUT_TX:
        kind += "-stamped"
    mpps, raw = wait_window(lambda: memifx_samples(rx, name), cfg.warm, cfg.trial,
                            cfg.warm + cfg.trial + 40)
    if tx is not rx:
        tx.stop()
    out = rx.stop()
    m = re.search(r"corrupt (\d+)", out)
    return {"mpps": mpps, "samples": raw, "corrupt": int(m.group(1)) if m else None,
            "tester": kind}


def xc_memifx(cfg, size, workers, traffic=()):
    """The tester through memifx xconnect A <-> B (both master): in process
    pinned to CPU 1 (workers=0) or with one worker on CPU 1.  ``traffic``:
    gen's options, what the tester sends."""
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        args = MEMIFX + ["xconnect", spec(a, role="master", name="A"),
                         spec(b, role="master", name="B"), "--workers", str(workers)]
        if workers:
            args += ["--cpus", str(DUT_CPU)]
        x = s.start(args, [DUT_CPU] if not workers else None)
        x.wait_line(r"^xconnect ", 30)
        return measure_tester(s, cfg, size, a, b, extra=traffic)


def xc_testpmd(cfg, size, traffic=()):
    """The tester through testpmd io forwarding between two memif server
    ports.  ``traffic``: gen's options, what the tester sends."""
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        # main lcore 0 (sleeps, prints stats), forwarding lcore 1
        tp = s.testpmd(["net_memif0,role=server,id=0,socket=%s,socket-abstract=no" % a,
                        "net_memif1,role=server,id=0,socket=%s,socket-abstract=no" % b],
                       "io", cpus="%d,%d" % (TESTER_CPU, DUT_CPU))
        tp.wait_line(r"Port statistics", 30)
        return measure_tester(s, cfg, size, a, b, extra=traffic)


# ------------------------------------------------------------------ N queues
#
# N queues, N workers on each side, every busy worker on a CPU of its own and
# the main processes (which sleep) on one housekeeping CPU: cpuplan.plan.

def cell_plan(cfg, n):
    """The CPU plan of an n-queue cell: ``cfg.plan`` when the caller fixed
    one (tests), else this machine's; RuntimeError when it has too few CPUs
    (run.py skips such cells before they start)."""
    fixed = getattr(cfg, "plan", None)
    if fixed is not None:
        return fixed
    p, reason = cpuplan.plan(n, cpuplan.usable_cpus())
    if p is None:
        raise RuntimeError(reason)
    return p


def gentle(cfg):
    """Spec keys and gen options of a cell that must not busy-poll (a test on
    a machine without spare CPUs sets ``cfg.mq_rate``): receivers in
    interrupt mode, gen limited to ``--rate cfg.mq_rate``.  Nothing for a
    measuring run."""
    rate = getattr(cfg, "mq_rate", None)
    if not rate:
        return {}, []
    return {"rx-mode": "interrupt"}, ["--rate", str(rate)]


@functools.lru_cache(maxsize=None)
def flows_for(n):
    """The fewest flows (at least n) that give every one of n transmit queues
    a flow of its own, as gen hashes flows onto queues."""
    from memifx.tester import queue_flows
    f = n
    while not all(queue_flows(f, n)):
        f += 1
    return f


def workers_args(cpus):
    """--workers/--cpus for one busy worker on each of ``cpus``."""
    return ["--workers", str(len(cpus)), "--cpus", cpuplan.cpu_list(cpus)]


def start_main(s, args, ready, cp):
    """A memifx command with workers: started unpinned (its --cpus must be
    CPUs it may use), and once it says ``ready`` (its workers are running and
    pinned) its own threads go to the housekeeping CPU."""
    p = s.start(args)
    p.wait_line(ready, 30)
    p.pin_threads([cp.housekeeping])
    return p


def testpmd_queues(n):
    """testpmd's options for n queues per port, one forwarding lcore per queue.
    With two ports (io), DPDK 22.11's testpmd gives lcore k queue k of both
    ports (`show config fwd`), as xconnect gives worker k queue k of A and B."""
    return ["--nb-cores=%d" % n, "--rxq=%d" % n, "--txq=%d" % n]


def mq_result(mpps, raw, n, cp, out=None):
    """One n-queue trial's result; the receiver's corrupt count when its
    final report (``out``) has one."""
    r = {"mpps": mpps, "samples": raw, "queues": n,
         "cpus": {"housekeeping": cp.housekeeping, "sender": list(cp.sender),
                  "receiver": list(cp.receiver)}}
    if out is not None:
        m = re.search(r"corrupt (\d+)", out)
        r["corrupt"] = int(m.group(1)) if m else None
        m = re.search(r"workers: (\d+), restarts: (\d+)", out)
        if m:
            r["workers"], r["restarts"] = int(m.group(1)), int(m.group(2))
    return r


def mq_gensink_memifx(cfg, size, n):
    """memifx gen (slave, n workers) -> memifx sink (master, n workers) over
    n queues; the sink's receive rate."""
    cp = cell_plan(cfg, n)
    irq, rate = gentle(cfg)
    with Session(cfg.out) as s:
        sock = s.sock("u")
        sink = start_main(s, MEMIFX + ["sink", spec(sock, role="master", name="snk", queues=n,
                                                    **irq), "--stats-interval", "1"]
                          + workers_args(cp.receiver) + LEAN_RX, r"^sink:", cp)
        start_main(s, MEMIFX + ["gen", spec(sock, role="slave", name="gen", queues=n, **irq),
                                "--size", str(size), "--flows", str(flows_for(n)),
                                "--stats-interval", "1"] + workers_args(cp.sender) + LEAN_TX
                   + rate, r"^gen:", cp)
        mpps, raw = wait_window(lambda: memifx_samples(sink, "snk"), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 60)
        return mq_result(mpps, raw, n, cp, sink.stop())


def mq_gensink_testpmd(cfg, size, n):
    """testpmd txonly (client) -> rxonly (server) over n queues, n forwarding
    lcores each, main lcores on the housekeeping CPU."""
    cp = cell_plan(cfg, n)
    with Session(cfg.out) as s:
        sock = s.sock("t")
        server = "net_memif0,role=server,id=0,socket=%s,socket-abstract=no" % sock
        client = "net_memif0,role=client,id=0,socket=%s,socket-abstract=no,rsize=%d,bsize=%d" % (
            sock, RING.bit_length() - 1, BUF)
        rx = s.testpmd([server], "rxonly", cpus=cpuplan.cpu_list([cp.housekeeping] + cp.receiver),
                       main_lcore=cp.housekeeping, extra=testpmd_queues(n))
        rx.wait_line(r"Port statistics|Press enter", 30)
        tx = s.testpmd([client], "txonly", cpus=cpuplan.cpu_list([cp.housekeeping] + cp.sender),
                       main_lcore=cp.housekeeping,
                       extra=["--txpkts=%s" % size] + testpmd_queues(n))
        mpps, raw = wait_window(lambda: testpmd_samples(rx, 0), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 40)
        tx.stop()           # the sender first: testpmd dislikes a vanishing peer
        return mq_result(mpps, raw, n, cp)


def mq_tester(s, cfg, size, a, b, n, cp):
    """The tester (gen --receive, slave) over n queue pairs with n workers on
    the sender CPUs; its receive rate through the DUT listening on a and b."""
    irq, rate = gentle(cfg)
    work = tester_work()
    t = start_main(s, MEMIFX + ["gen", spec(a, role="slave", name="tester", queues=n,
                                            **dict(irq, **{"ring-size": 4096})),
                                "--receive", spec(b, role="slave", name="tester-rx", queues=n,
                                                  **dict(irq, **{"ring-size": 16384})),
                                "--size", str(size), "--flows", str(flows_for(n)),
                                "--stats-interval", "1"]
                   + workers_args(cp.sender) + work[0] + work[1] + rate, r"^gen:", cp)
    mpps, raw = wait_window(lambda: memifx_samples(t, "tester-rx rx"), cfg.warm, cfg.trial,
                            cfg.warm + cfg.trial + 60)
    return mq_result(mpps, raw, n, cp, t.stop())


def mq_xc_memifx(cfg, size, n):
    """The tester through memifx xconnect A <-> B (both master, n queues each)
    with n workers on the receiver CPUs."""
    cp = cell_plan(cfg, n)
    irq, _ = gentle(cfg)
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        start_main(s, MEMIFX + ["xconnect", spec(a, role="master", name="A", queues=n, **irq),
                                spec(b, role="master", name="B", queues=n, **irq)]
                   + workers_args(cp.receiver), r"^xconnect ", cp)
        return mq_tester(s, cfg, size, a, b, n, cp)


def mq_xc_testpmd(cfg, size, n):
    """The tester through testpmd io between two memif server ports of n
    queues each, n forwarding lcores on the receiver CPUs."""
    cp = cell_plan(cfg, n)
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        tp = s.testpmd(["net_memif0,role=server,id=0,socket=%s,socket-abstract=no" % a,
                        "net_memif1,role=server,id=0,socket=%s,socket-abstract=no" % b],
                       "io", cpus=cpuplan.cpu_list([cp.housekeeping] + cp.receiver),
                       main_lcore=cp.housekeeping, extra=testpmd_queues(n))
        tp.wait_line(r"Port statistics", 30)
        return mq_tester(s, cfg, size, a, b, n, cp)


def routes_file(n):
    """A routes file of ``n`` routes (cached in the temp dir across runs: the
    million-line file takes seconds to write)."""
    path = os.path.join(tempfile.gettempdir(), "memifx-perf-routes-%d.txt" % n)
    if not os.path.exists(path):
        with open(path + ".tmp", "w") as f:
            # n /24s in 20.0.0.0/6.. spread over the space; plus the tester's /16 last
            for i in range(n - 1):
                f.write("%d.%d.%d.0/24,via=10.0.2.2\n" % (20 + (i >> 16), (i >> 8) & 255, i & 255))
            f.write("198.19.0.0/16,via=10.0.2.2\n")
        os.rename(path + ".tmp", path)
    return path


# the router's MAC on A (the tester's destination MAC) and the next hop's on B
ROUTER_MAC_A = "02:fe:00:00:00:0a"
HOST_B_MAC = "02:aa:00:00:00:0b"


def ip4_has_workers():
    """Whether this memifx's ip4-forward takes --workers."""
    return "--workers" in command_help("ip4-forward")


# What the tester sends through the router: to its MAC on a, routed via b.
IP4_TRAFFIC = ["--dst-mac", ROUTER_MAC_A, "--src-ip", "10.0.1.5", "--dst-ip", "198.19.0.1"]
# ... spread over the million routes: 65536 flows, each to a /24 of its
# own, 15 /24s apart (routes_file's /24s run on from 20.0.0.0), so that each
# flow's FIB entry lies in a cache line of its own: 4 MiB of the table
IP4_SPREAD = ["--dst-mac", ROUTER_MAC_A, "--src-ip", "10.0.1.5", "--flows", "65536",
              "--dst-ip", "20.0.0.1", "--dst-step", str(15 * 256)]


def dst_step_missing():
    """Why the spread cell cannot run with this memifx (gen without
    --dst-step), or None when it can."""
    return None if "--dst-step" in command_help("gen") else "this memifx's gen has no --dst-step"


def ip4_forward_args(a, b, nroutes, **kw):
    """``memifx ip4-forward`` between masters on a and b (``kw``: more spec
    keys for both), its neighbor on b and ``nroutes`` routes covering
    IP4_TRAFFIC's destination."""
    args = ["ip4-forward",
            "--interface", spec(a, role="master", name="a", ip="10.0.1.1/24",
                                mac=ROUTER_MAC_A, **kw),
            "--interface", spec(b, role="master", name="b", ip="10.0.2.1/24", **kw),
            "--neighbor", "10.0.2.2,%s,dev=b" % HOST_B_MAC]
    if nroutes == 1:
        return args + ["--route", "198.19.0.0/16,via=10.0.2.2"]
    return args + ["--routes-file", routes_file(nroutes)]


def ip4(cfg, size, nroutes, workers=0, traffic=IP4_TRAFFIC):
    """workers=0: the router's data path in its own process, pinned to CPU 1;
    1: one worker process on CPU 1 (when this memifx's ip4-forward has workers).
    ``traffic``: gen's options, what the tester sends."""
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        args = MEMIFX + ip4_forward_args(a, b, nroutes)
        if ip4_has_workers():
            args += ["--workers", str(workers)] + (["--cpus", str(DUT_CPU)] if workers else [])
        elif workers:
            raise RuntimeError("this ip4-forward has no --workers")
        r = s.start(args, [DUT_CPU] if not workers else None)
        r.wait_line(r"ip4-forward: \d+ interfaces", 300)
        return measure_tester(s, cfg, size, a, b, extra=traffic)


def pyapi(cfg, size, variant):
    """The tester through perf/pyecho.py ``variant`` (burst, zc, batch) on CPU 1;
    zc runs pyecho as the slave (zero-copy receive is the slave's).  The
    tester is the DUT cells' (tester_work) on CPU 0, so the cell measures
    the Python forwarder, not the tester."""
    work = tester_work()
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        dut_role = "slave" if variant == "zc" else "master"
        tester_role = "master" if variant == "zc" else "slave"
        if tester_role == "master":
            t = tester(s, cfg, size, a, b, role="master", work=work)
            t.wait_line(r"^gen:", 20)
            d = s.start([PY, os.path.join(HERE, "pyecho.py"), variant, a, b, dut_role],
                        [DUT_CPU])
        else:
            d = s.start([PY, os.path.join(HERE, "pyecho.py"), variant, a, b, dut_role],
                        [DUT_CPU])
            d.wait_line(r"pyecho: .* listening", 20)
            t = tester(s, cfg, size, a, b, role="slave", work=work)
        mpps, raw = wait_window(lambda: memifx_samples(t, "tester-rx rx"), cfg.warm, cfg.trial,
                                cfg.warm + cfg.trial + 40)
        return {"mpps": mpps, "samples": raw,
                "tester": "one-cpu" if work[0] is DUT_TX else "one-cpu-stamped"}


def irq_xconnect(s, a, b):
    """memifx xconnect A <-> B (both master, interrupt mode) in process on
    CPU 1, started and listening."""
    irq = {"rx-mode": "interrupt"}
    x = s.start(MEMIFX + ["xconnect", spec(a, role="master", name="A", **irq),
                          spec(b, role="master", name="B", **irq), "--workers", "0"],
                [DUT_CPU])
    x.wait_line(r"^xconnect ", 30)
    return x


def irq_tester(s, a, b, args):
    """memifx gen on CPU 0 in interrupt mode: sends on a, receives on b."""
    irq = {"rx-mode": "interrupt"}
    return s.start(MEMIFX + ["gen", spec(a, name="tester", **irq),
                             "--receive", spec(b, name="tester-rx", **irq)] + list(args),
                   [TESTER_CPU])


def irq_latency(cfg, size, rate=10000):
    """Round trip tester -> xconnect (interrupt mode, in process, CPU 1) -> tester."""
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        irq_xconnect(s, a, b)
        secs = cfg.warm + cfg.trial
        t = irq_tester(s, a, b, ["--size", str(size), "--rate", str(rate),
                                 "--duration", str(secs), "--json"])
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
    with Session(cfg.out) as s:
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
    with Session(cfg.out) as s:
        a, b = s.sock("a"), s.sock("b")
        x = irq_xconnect(s, a, b)
        irq_tester(s, a, b, ["--rate", "1", "--stats-interval", "1"])
        x.wait_line(r"B: link up", 20)
        time.sleep(1.0)
        px = psutil.Process(x.p.pid)
        c0, w0 = px.cpu_times(), time.monotonic()
        time.sleep(max(cfg.trial, 2))
        c1, w1 = px.cpu_times(), time.monotonic()
        used = (c1.user + c1.system - c0.user - c0.system) / (w1 - w0)
        return {"mpps": None, "cpu_percent": round(max(0.0, 100 * used), 3)}


@functools.lru_cache(maxsize=None)
def probe_binary():
    """perf/probe.c compiled with the system C compiler, once per run, into a
    scratch directory removed at exit."""
    tmp = tempfile.mkdtemp(prefix="mxprobe-", dir="/tmp")
    atexit.register(shutil.rmtree, tmp, True)
    out = os.path.join(tmp, "probe")
    subprocess.run(["cc", "-O2", "-pthread", os.path.join(HERE, "probe.c"), "-o", out],
                   check=True)
    return out


def probe(*args):
    """Run perf/probe.c with ``args``; its JSON line."""
    r = subprocess.run([probe_binary()] + [str(a) for a in args], check=True,
                       capture_output=True, text=True, timeout=120)
    return json.loads(r.stdout.strip().splitlines()[-1])


def host_ring(cfg, size):
    """The bare C copy ring's rate at ``size``."""
    return {"mpps": probe("ring", size, cfg.trial)["mpps"]}


def host_wake(cfg, size):
    """The bare C eventfd round trip (p50_us, p99_us, ...); no rate."""
    j = probe("wake", int(20000 * cfg.trial))
    j["mpps"] = None
    return j


Test = namedtuple("Test", "name group sizes run description queues unavailable",
                  defaults=(False, None))
Test.__doc__ = """One test of the suite: ``run(cfg, size)`` is one trial of one cell
(``run(cfg, size, n)`` for a test with ``queues``: one cell per queue count
of --queues, named by queue_cell); ``sizes`` are the frame sizes of the full
suite, in table order; ``unavailable()``, if given, says why this memifx
cannot run the test (None: it can)."""


def queue_cell(name, n):
    """The cell name of test ``name`` at ``n`` queues."""
    return "%s-q%d" % (name, n)


def cell_queues(test_name, cell_name):
    """The queue count of ``cell_name`` if it is a cell of the n-queue test
    ``test_name``, else None."""
    head, _, n = cell_name.rpartition("-q")
    return int(n) if head == test_name and n.isdigit() else None

TESTS = [
    Test("uni-memifx-gen-slave", "uni", ["64", "1518", "imix", "9000"],
         lambda c, z: uni_memifx(c, z, "slave"),
         "memifx gen (slave, CPU 0) -> memifx sink (master, CPU 1)"),
    Test("uni-memifx-gen-master", "uni", ["64", "1518", "imix", "9000"],
         lambda c, z: uni_memifx(c, z, "master"),
         "the reverse roles: gen master, sink slave"),
    Test("uni-memifx-zc-slave", "uni", ["64", "1518"],
         lambda c, z: uni_memifx(c, z, "slave", zero_copy=True),
         "memifx gen --zero-copy (slave, CPU 0) -> memifx sink --zero-copy (master, CPU 1): "
         "frames written once into the slave's buffers, the stamp alone read where the "
         "frame lies (--verify seq)",
         unavailable=zero_copy_missing),
    Test("uni-memifx-zc-master", "uni", ["64", "1518"],
         lambda c, z: uni_memifx(c, z, "master", zero_copy=True),
         "the reverse roles: gen --zero-copy master (writes into the buffers the sink "
         "posts), sink --zero-copy slave", unavailable=zero_copy_missing),
    Test("uni-testpmd", "uni", ["64", "1518"], uni_testpmd,
         "testpmd txonly (client, lcore 0) -> testpmd rxonly (server, lcore 1)"),
    Test("uni-testpmd-master-tx", "uni", ["64", "1518"],
         lambda c, z: uni_testpmd(c, z, "server"),
         "the reverse roles: testpmd txonly (server, lcore 0) -> rxonly (client, lcore 1)"),
    Test("xc-memifx-worker", "xc", ["64", "1518", "imix", "9000"],
         lambda c, z: xc_memifx(c, z, 1),
         "tester gen --receive (CPU 0) -> memifx xconnect --workers 1 --cpus 1 -> tester"),
    Test("xc-memifx-inproc", "xc", ["64", "1518"], lambda c, z: xc_memifx(c, z, 0),
         "same, xconnect --workers 0 pinned to CPU 1"),
    Test("xc-testpmd", "xc", ["64", "1518"], xc_testpmd,
         "same tester -> testpmd io, two memif server ports, lcore 1 -> tester"),
    Test("xc-memifx-spread", "xc", ["64", "1518"],
         lambda c, z: xc_memifx(c, z, 0, traffic=IP4_SPREAD),
         "xc-memifx-inproc with ip4-1M-spread's traffic (65536 flows, each to an address of "
         "its own): the tester rewrites each frame's flow fields in its buffer, so every "
         "frame's first line crosses to the DUT's CPU, as a fresh frame's does (the other "
         "xc cells' fixed frames sit unchanged in both CPUs' caches); ip4-1M-spread's "
         "like-for-like reference", unavailable=dst_step_missing),
    Test("xc-testpmd-spread", "xc", ["64", "1518"],
         lambda c, z: xc_testpmd(c, z, traffic=IP4_SPREAD),
         "xc-testpmd with the same traffic", unavailable=dst_step_missing),
    Test("mq-gensink-memifx", "mq", ["64"], mq_gensink_memifx,
         "N queues: memifx gen (slave, --workers N) -> memifx sink (master, --workers N), "
         "each worker on a CPU of its own, main processes on a housekeeping CPU",
         queues=True),
    Test("mq-gensink-testpmd", "mq", ["64"], mq_gensink_testpmd,
         "N queues: testpmd txonly (client) -> rxonly (server), --rxq/--txq/--nb-cores=N",
         queues=True),
    Test("mq-xc-memifx", "mq", ["64"], mq_xc_memifx,
         "N queues: tester gen --receive (--workers N) -> memifx xconnect --workers N -> tester",
         queues=True),
    Test("mq-xc-testpmd", "mq", ["64"], mq_xc_testpmd,
         "N queues: the same tester -> testpmd io, two server ports of N queues, "
         "--nb-cores=N -> tester", queues=True),
    Test("ip4-1route", "ip4", ["64", "1518"], lambda c, z: ip4(c, z, 1),
         "tester -> memifx ip4-forward --workers 0 (CPU 1), 1 route -> tester"),
    Test("ip4-1M", "ip4", ["64", "1518"], lambda c, z: ip4(c, z, 1000000),
         "same with 1,000,000 /24 routes from a routes file (the tester sends to one "
         "destination: one FIB entry is hot)"),
    Test("ip4-1M-spread", "ip4", ["64", "1518"],
         lambda c, z: ip4(c, z, 1000000, traffic=IP4_SPREAD),
         "same, the tester's 65536 flows each to a /24 of its own, 15 /24s apart "
         "(gen --dst-step 3840): a FIB cache line per flow, 4 MiB of the table",
         unavailable=dst_step_missing),
    Test("ip4-1route-worker", "ip4", ["64"], lambda c, z: ip4(c, z, 1, 1),
         "ip4-1route with --workers 1 --cpus 1 (if ip4-forward has workers)"),
    Test("py-burst", "py", ["64"], lambda c, z: pyapi(c, z, "burst"),
         "the Python API forwarder perf/pyecho.py (CPU 1) as the DUT: "
         "rx_burst -> tx_burst"),
    Test("py-zc", "py", ["64"], lambda c, z: pyapi(c, z, "zc"),
         "the same, rx_zero_copy -> tx_burst (pyecho is the slave)"),
    Test("py-batch", "py", ["64"], lambda c, z: pyapi(c, z, "batch"),
         "the same, rx_into -> tx_from"),
    Test("py-forward", "py", ["64"], lambda c, z: pyapi(c, z, "forward"),
         "the same, a.forward(b): ring to ring, one copy per frame"),
    Test("irq-latency", "irq", ["64"], irq_latency,
         "gen at 10 kfps through xconnect in interrupt mode: p50/p99 of gen's stamps "
         "(send time to receive time, tester and DUT in interrupt mode)"),
    Test("irq-pingpong", "irq", ["64", "1518"], lambda c, z: pingpong(c, z, "interrupt"),
         "one frame at a time, perf/pingpong.py -> memifx echo, both in interrupt mode: "
         "round trip p50/p99 from Python (perf_counter_ns)"),
    Test("poll-pingpong", "irq", ["64"], lambda c, z: pingpong(c, z, "polling"),
         "the same with both sides busy-polling (the floor)"),
    Test("irq-idle", "irq", ["64"], irq_idle,
         "CPU used by an interrupt-mode xconnect with links up and no traffic"),
    Test("host-c-ring", "host", ["64", "1518"], host_ring,
         "perf/probe.c: a bare C copy ring between CPUs 0 and 1 (memifx's buffer layout, "
         "one copy in, one copy out), no memif and no Python: how much the machine "
         "itself moves from trial to trial"),
    Test("host-c-wake", "host", ["-"], host_wake,
         "perf/probe.c: eventfd ping-pong between two threads asleep in epoll: the "
         "host's floor for an interrupt-mode round trip"),
]


def selected(only):
    """The tests named by ``only`` (each a name, a name prefix or a group), in
    table order; all of them when ``only`` is empty."""
    if not only:
        return TESTS
    return [t for t in TESTS if any(t.name == o or t.name.startswith(o) or t.group == o
                                    for o in only)]


def build_cells(tests, sizes, queues, cpus, have_testpmd):
    """The (name, size, fn) cells to run for ``tests``, in table order, and
    {name: reason} of those that cannot run here: a testpmd test without
    dpdk-testpmd, a test this memifx cannot run (its ``unavailable``), an
    n-queue cell with fewer than 2n + 1 of ``cpus``.  ``sizes``: the frame
    sizes wanted (None: each test's own); ``queues``: the queue counts of the
    n-queue tests."""
    cells, skipped = [], {}
    for t in tests:
        names = [(queue_cell(t.name, n), n) for n in queues] if t.queues else [(t.name, None)]
        reason = None
        if "testpmd" in t.name and not have_testpmd:
            reason = "dpdk-testpmd not installed"
        elif t.unavailable is not None:
            reason = t.unavailable()
        for name, n in names:
            why = reason or (cpuplan.plan(n, cpus)[1] if n is not None else None)
            if why:
                skipped[name] = why
                continue
            run = t.run if n is None else functools.partial(
                lambda run, n, c, z: run(c, z, n), t.run, n)
            cells += [(name, size, run) for size in t.sizes if not sizes or size in sizes]
    return cells, skipped
