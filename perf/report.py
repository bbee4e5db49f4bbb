"""The perf suite's report: statistics over trials, the ratios against testpmd
and their verdicts, and the output files (results.json, results.md, results.png)
and the README's performance section.

The Markdown is rendered from the results.json document alone, so a stored
run's table can be rendered again without rerunning it.
"""
import json
import os
import statistics

from harness import BUF, RING, ROOT
from scenarios import TESTS, cell_queues, queue_cell

# Average L2 size of the imix mix (7:4:1 of 64/570/1518 bytes).
IMIX_AVG = (7 * 64 + 4 * 570 + 1518) / 12.0

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
    "memifx-zc": "tx: gen writes each frame once, straight into the shared buffer "
                 "(headers from a template, stamp patched; --zero-copy --payload zeros); "
                 "rx: sink reads the stamp alone where the frame lies: sequence and "
                 "latency (--zero-copy --verify seq)",
    "libmemif": "tx writes each frame into the shared buffers, rx reads the 4-byte "
                "sequence in place (C, zero-copy)",
}

# libmemif tx → rx, 1 queue, ring 1024, buffer 2048, slave sends: the figures
# quoted in issue 13 (measured outside this project's tests, not by this
# suite), by machine.  Mpps by frame size.
LIBMEMIF_ISSUE = {
    "issue 13, 2-vCPU VM, median of 3": {"64": 41.2, "1518": 16.7},
    "issue 13, 16-core Xeon, 1 trial": {"64": 25.0, "1518": 8.6},
}
ZERO_COPY_TESTS = ("uni-memifx-zc-slave", "uni-memifx-zc-master")

# The n-queue pairs: (memifx test, testpmd test, what they are)
MQ_PAIRS = [
    ("mq-gensink-memifx", "mq-gensink-testpmd", "gen → sink vs testpmd txonly → rxonly"),
    ("mq-xc-memifx", "mq-xc-testpmd", "tester → xconnect vs tester → testpmd io"),
]
MQ_EFFICIENCY = 0.9     # target: Mpps at N >= 0.9 * N * Mpps at 1 queue

# (memifx test, testpmd test, work key memifx, work key testpmd, target)
RATIOS = [
    ("uni-memifx-gen-slave", "uni-testpmd", "memifx-uni", "testpmd-uni", 1.3),
    ("uni-memifx-gen-master", "uni-testpmd-master-tx", "memifx-uni", "testpmd-uni", 1.3),
    ("xc-memifx-worker", "xc-testpmd", "memifx-xc", "testpmd-xc", 1.2),
    ("xc-memifx-inproc", "xc-testpmd", "memifx-xc", "testpmd-xc", 1.2),
    ("xc-memifx-spread", "xc-testpmd-spread", "memifx-xc", "testpmd-xc", 1.2),
]

# (ip4 test, the xconnect test it is divided by: the one whose tester sends
# the same traffic; spread flows move each frame's line between the CPUs)
IP4_VS_XC = [
    ("ip4-1route", "xc-memifx-inproc"),
    ("ip4-1M", "xc-memifx-inproc"),
    ("ip4-1M-spread", "xc-memifx-spread"),
]


def frame_bytes(size):
    """L2 bytes of one frame of a size column ("64", "imix"; 0 for "-": no frame)."""
    if size == "imix":
        return IMIX_AVG
    return float(size) if size.isdigit() else 0.0


def summarize(vals):
    """Median, min, max and count of the values that are not None; None if none is."""
    vals = [v for v in vals if v is not None]
    if not vals:
        return None
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "n": len(vals)}


def summarize_cell(trials, error, size):
    """One cell of results["tests"]: its trials, its error if it failed, and
    summaries over the trials of the rate (Mpps and Gbit/s) and of the
    latency and CPU figures that its trials carry."""
    cell = {"trials": trials}
    if error is not None:
        cell["error"] = error
    if trials:
        cell["mpps"] = summarize([t.get("mpps") for t in trials])
        if cell["mpps"]:
            cell["gbps"] = {k: v * frame_bytes(size) * 8 / 1000.0 if k != "n" else v
                            for k, v in cell["mpps"].items()}
        for key in ("p50_us", "p99_us", "cpu_percent"):
            if any(t.get(key) is not None for t in trials):
                cell[key] = summarize([t.get(key) for t in trials])
    return cell


def fmt(st, scale=1.0, digits=2):
    """"median (min–max)" of a summary, each times ``scale``; "-" for none."""
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


def cell_names(test, tests):
    """The result names of ``test`` present in ``tests``: its name, or for an
    n-queue test its cells in order of queue count."""
    if not test.queues:
        return [test.name] if test.name in tests else []
    cells = [(cell_queues(test.name, k), k) for k in tests]
    return [k for n, k in sorted(c for c in cells if c[0] is not None)]


def host_cpus(results):
    """The CPU count in results["host"] ("name, 16 CPUs"); None if absent."""
    tail = results.get("host", "").rsplit(", ", 1)[-1].split()
    return int(tail[0]) if tail and tail[0].isdigit() else None


def libmemif_reference(results):
    """The issue's libmemif figures from the machine closest to this run's
    host (the 2-vCPU VM for up to 2 CPUs, else the 16-core Xeon): (where,
    {size: Mpps})."""
    vm, xeon = LIBMEMIF_ISSUE.items()
    cpus = host_cpus(results)
    return vm if cpus is not None and cpus <= 2 else xeon


def zero_copy_rows(results):
    """Zero-copy gen → sink against the issue's libmemif tx → rx figure:
    table rows (none without zero-copy cells)."""
    tests = results["tests"]
    where, ref = libmemif_reference(results)
    rows = []
    for name in ZERO_COPY_TESTS:
        for size in ("64", "1518"):
            st = tests.get(name, {}).get(size, {}).get("mpps")
            if not st or size not in ref:
                continue
            r = st["median"] / ref[size]
            v = ("met" if st["min"] / ref[size] >= 1.0 else
                 "median meets it, the spread does not" if r >= 1.0 else
                 "missed by %.0f %%" % (100 * (1 - r)))
            if st["n"] < 3:
                v += " (fewer than 3 trials: indicative only)"
            rows.append("| %s | %s | %s | %.1f, %s | %.2f× (%.2f–%.2f) | ≥ 1.0×: %s |" % (
                name, size, fmt(st), ref[size], where, r, st["min"] / ref[size],
                st["max"] / ref[size], v))
    return rows


def efficiency(tests, name, n, size):
    """Per-queue efficiency of ``name`` at n queues: median Mpps at n / (n x
    median Mpps at 1 queue), from this run; None without both cells."""
    st = tests.get(queue_cell(name, n), {}).get(size, {}).get("mpps")
    one = tests.get(queue_cell(name, 1), {}).get(size, {}).get("mpps")
    if not st or not one or one["median"] <= 0:
        return None
    return st["median"] / (n * one["median"])


def queue_rows(results):
    """The n-queue tables (one per MQ_PAIRS entry present): lines."""
    tests = results["tests"]
    L = []
    for m, t, what in MQ_PAIRS:
        counts = sorted({n for k in tests for n in (cell_queues(m, k), cell_queues(t, k))
                         if n is not None})
        if not counts:
            continue
        L.append("\n### %s\n" % what)
        L.append("| N | frame | memifx Mpps | testpmd Mpps | ratio (range) | "
                 "≥ 1.0× testpmd | per-queue efficiency, memifx / testpmd | "
                 "≥ %.1f |" % MQ_EFFICIENCY)
        L.append("|---|---|---|---|---|---|---|---|")
        for n in counts:
            sizes = sorted({z for k in (queue_cell(m, n), queue_cell(t, n))
                            for z in tests.get(k, {})}, key=frame_bytes)
            for size in sizes:
                cm = tests.get(queue_cell(m, n), {}).get(size, {})
                ct = tests.get(queue_cell(t, n), {}).get(size, {})
                r, text = ratio_text(cm.get("mpps"), ct.get("mpps"))
                em, et = efficiency(tests, m, n, size), efficiency(tests, t, n, size)
                L.append("| %d | %s | %s | %s | %s | %s | %s / %s | %s |" % (
                    n, size, fmt(cm.get("mpps")) if "error" not in cm else "error",
                    fmt(ct.get("mpps")) if "error" not in ct else "error", text,
                    verdict(r, 1.0, cm["mpps"], ct["mpps"]) if r is not None else "-",
                    "%.2f" % em if em is not None else "-",
                    "%.2f" % et if et is not None else "-",
                    "-" if em is None or n == 1 else "met" if em >= MQ_EFFICIENCY else
                    "missed by %.0f %%" % (100 * (1 - em / MQ_EFFICIENCY))))
    return L


# gen --receive's options as the one-CPU tester that counts runs it
# (scenarios.DUT_TX + DUT_RX, --zero-copy said once)
ONE_CPU_COUNTING = " --payload fixed --zero-copy --verify count"


def render_markdown(results):
    """The Markdown report of one run (a results.json document): the table of
    every cell, the ratios against testpmd with their verdicts, the host's
    floor, the per-node instruction counts and the chart's link."""
    tests = results["tests"]
    L = []
    quick = results["quick"]
    L.append("# memifx performance (perf/run.py%s)\n" % (" --quick" if quick else ""))
    L.append("%s; %s; %d trial(s) x %g s after %g s warm-up, in rounds over all cells; "
             "median (min–max). MRR: rate received under maximum offered load. Ring %d, buffer %d. "
             "Frame sizes: L2 bytes without FCS. Load average at start: %s, at end: %s.\n"
             % (results["host"], results["date"], results["trials"], results["trial_seconds"],
                results["warmup_seconds"], RING, BUF,
                results["loadavg"], results.get("loadavg_end", "?")))
    if quick:
        L.append("**Quick run: 1 short trial per cell, no spread; orientation only.**\n")
    L.append("| test | frame | Mpps | Gbit/s | notes |")
    L.append("|---|---|---|---|---|")
    for name, sizes in [(k, t.sizes) for t in TESTS for k in cell_names(t, tests)]:
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
            restarts = sum(t.get("restarts") or 0 for t in cell["trials"])
            if restarts:
                notes.append("worker restarts %d" % restarts)
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
    # ip4 vs xconnect under the same traffic
    for n, x in IP4_VS_XC:
        for size in ("64", "1518"):
            cm = tests.get(n, {}).get(size, {}).get("mpps")
            cx = tests.get(x, {}).get(size, {}).get("mpps")
            r, text = ratio_text(cm, cx)
            if r is not None:
                L.append("| %s | %s | %s | %s | %.2f× | ≥ 0.9×: %s | %s | %s |"
                         % (n, x, size, text, cm["max"] / cx["max"], verdict(r, 0.9, cm, cx),
                            WORK["ip4"], WORK["xc"]))
    zc = zero_copy_rows(results)
    if zc:
        L.append("\n## Zero-copy against libmemif (reference figures from issue 13, "
                 "not measured here)\n")
        L.append("libmemif tx → rx was measured outside this suite; its figures are the "
                 "ones the issue quotes, from the machine closest to this host. Work per "
                 "frame: memifx %s; libmemif %s.\n" % (WORK["memifx-zc"], WORK["libmemif"]))
        L.append("| test | frame | Mpps | libmemif Mpps, where | ratio (memifx min–max) | "
                 "target |")
        L.append("|---|---|---|---|---|---|")
        L.extend(zc)
    mq = queue_rows(results)
    if mq:
        L.append("\n## N queues, N workers each side (same run)\n")
        L.append("Each busy worker or testpmd forwarding lcore on a CPU of its own "
                 "(N for the sender, N for the receiver or DUT), the main processes on one "
                 "more (perf/cpuplan.py). Per-queue efficiency: median Mpps at N / (N × "
                 "median Mpps at 1 queue), same run. Work per frame as in the 1-queue "
                 "ratios above: gen → sink as uni-memifx-gen-slave, testpmd as uni-testpmd, "
                 "xconnect as xc-memifx-worker, testpmd io as xc-testpmd.\n")
        L.extend(mq)
    if results.get("skipped"):
        L.append("\n## Skipped cells\n")
        L.extend("- %s: %s" % (k, v) for k, v in sorted(results["skipped"].items()))
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
    py = [t.get("tester") for name, cells in results["tests"].items() if name.startswith("py-")
          for c in cells.values() for t in c.get("trials", [])]
    if any(py):
        # (runs before round 8 of issue 13 recorded none, and say nothing here)
        py_fixed = set(py) == {"one-cpu"}
        L.append("py tests: perf/pyecho.py on CPU 1 is the DUT; the tester is `memifx gen "
                 "--receive%s` on CPU 0, sending on A and receiving on B%s.\n"
                 % ((ONE_CPU_COUNTING, "") if py_fixed
                    else ("", ", stamped frames checked")))
    # (runs before round 7 of issue 13 recorded no tester_work: stamped)
    fixed = results.get("tester_work") == "fixed-count"
    how = " (fixed frames, only descriptors written; counted, not read)" if fixed else ""
    if results.get("tester") == "split":
        who = ("tester `memifx gen%s` on CPU 0 sends on A, `memifx sink%s` on CPU 2 receives "
               "on B (each side a CPU of its own)%s"
               % ((" --payload fixed --zero-copy", " --zero-copy --verify count", how)
                  if fixed else ("", "", "")))
    else:
        who = ("tester `memifx gen --receive%s` on CPU 0 sends on A and receives on B%s"
               % (ONE_CPU_COUNTING if fixed else "", how))
    if not fixed:
        bound = "so the DUT ratios are bounded by the tester's own rate"
    elif results.get("tester") == "split":
        bound = ("and each of its halves costs fewer instructions per frame than any DUT "
                 "here, so the DUT ratios are the DUTs' own")
    else:
        bound = ("and its two halves on one CPU cost about 85 instructions per frame "
                 "together, more than xconnect's 66 (perf/results/peer-cost-vm.md), so an "
                 "xconnect cell may still be bounded by the tester: its ratios are lower "
                 "bounds")
    L.append("DUT tests: %s; the DUT polls on CPU 1 (xconnect --workers 1 --cpus 1; "
             "--workers 0 pinned; testpmd io with its forwarding lcore 1 and its sleeping "
             "main lcore 0). The tester is the same for every DUT, %s.\n" % (who, bound))
    if results.get("nodes"):
        L.append("## Instructions per frame, per node (callgrind, 64 B, bursts of 256)\n")
        L.append("Counted by `perf/nodes.py` on in-process loopback rings: exact and "
                 "repeatable where cycle counters are not available. A node's figure "
                 "includes its share of the per-burst call, not the interpreter loop "
                 "around it. The speed of a pair of pollers is bounded by the slower "
                 "side's instructions per frame plus the cache-line transfers between "
                 "the CPUs, which instructions do not show.\n")
        timed = all(len(row) > 2 and row[2] is not None for row in results["nodes"])
        if timed:
            L.append("The time is the same workload run natively, in a process of its own "
                     "on one CPU, everything in that CPU's caches: what it adds to the "
                     "instructions is the core's own stalls. Compare it between builds "
                     "on one machine, not between machines.\n")
        L.append("| node | Ir per frame |%s" % (" ns per frame, one CPU |" if timed else ""))
        L.append("|---|---|%s" % ("---|" if timed else ""))
        for row in results["nodes"]:
            L.append("| %s | %.0f |%s" % (row[0], row[1], " %.1f |" % row[2] if timed else ""))
        L.append("")
    if results.get("chart"):
        L.append("![chart](results.png)\n")
    else:
        L.append("(No chart: %s.)\n" % results.get("chart_note", "matplotlib not installed"))
    return "\n".join(L)


def write_report(results, out):
    """results.json (raw) and results.md (the table) in directory ``out``;
    returns the Markdown text."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, sort_keys=True)
    text = render_markdown(results)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(text + "\n")
    return text


def chart(results, out):
    """results.png in ``out``: one panel of bars per frame size (median with
    min-max), if matplotlib is importable; whether a chart was written.
    Without matplotlib, results["chart_note"] says why."""
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
        for name in [k for t in TESTS for k in cell_names(t, results["tests"])]:
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
    fig.savefig(os.path.join(out, "results.png"), dpi=100)
    plt.close(fig)
    return True




def update_readme(table, has_chart, path=os.path.join(ROOT, "README.md")):
    """Replace the README's performance section (between the perf:begin and
    perf:end markers; a new "Performance" section at the end if they are
    absent) with ``table`` less its title."""
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
