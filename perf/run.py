#!/usr/bin/env python3
"""memifx performance suite, side by side with DPDK's net_memif (dpdk-testpmd).

    python perf/run.py                  # the full suite (>= 3 trials x 5 s each, ~15 min)
    python perf/run.py --quick          # 1 trial x 1 s: development and smoke test
    python perf/run.py --only uni-memifx-gen-slave --sizes 64
    python perf/run.py --list
    python perf/run.py --only mq --queues 1,2,4,7    # N queues, N workers each side

N-queue cells (group mq) run once per --queues count N where the machine has
2N + 1 CPUs: N for the sender's busy workers, N for the receiver's or DUT's,
one for the main processes (perf/cpuplan.py); elsewhere they are skipped, and
the report says why.  Trial k runs on every cell before trial k + 1 of any;
--budget stops starting trials after that many seconds, and a cell then shows
the trials it got.

Method (FD.io CSIT's MRR): the rate *received* under maximum offered load.
Each trial starts fresh processes, waits for the first frames, discards a
warm-up (1 s; 0 with --quick) and then averages the receiver's per-second rate
samples over the trial (5 s; 1 s with --quick).  Trials run in rounds: the
first trial of every cell, then the second of every cell, and so on, so a slow
drift of the host falls on memifx and testpmd alike.  The median of the trials
is reported with min-max.  Every busy poller is pinned to a CPU of its own (CPU 0:
generator/tester, CPU 1: sink/DUT, CPU 2 where usable: the DUT cells' receiving
tester, --tester; the N-queue cells: see below); two pollers on
one CPU would measure the scheduler.  Frame sizes are L2 bytes without FCS; Gbit/s = Mpps x size x 8
(imix: 7:4:1 of 64/570/1518, 353.8 B average).

The tests, their groups and frame sizes: --list (or --help).  A name for
--only may be a test's name, a prefix of names or a group (uni, xc, mq, ip4,
py, irq, host).

Ring 1024 slots and 2048-byte buffers everywhere (the tester's receive side
uses a larger ring, as tests/test_pipeline.py does, so it is not the bottleneck).
Results: perf/results/results.json (raw), results.md (table), results.png (chart,
if matplotlib is installed: pip install memifx[perf]).

Layout: harness.py runs processes and trials, scenarios.py holds the tests,
report.py turns results into files; this file is the command line only.
"""
import argparse
import os
import shutil
import sys
import textwrap
import time

import cpuplan
from harness import HERE, log, run_rounds
from report import chart, summarize_cell, update_readme, write_report
from scenarios import DUT_TX, TESTS, build_cells, selected, split_tester, tester_work


def listing():
    """One line per test: name, group, frame sizes; its description beneath."""
    lines = []
    for t in TESTS:
        lines.append("%-24s %-4s %s%s" % (t.name, t.group, ",".join(t.sizes),
                                          " x --queues" if t.queues else ""))
        lines += textwrap.wrap(t.description, 79, initial_indent="    ",
                               subsequent_indent="    ")
    return "\n".join(lines)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="tests (name, group, frame sizes):\n" + listing())
    ap.add_argument("--quick", action="store_true", help="1 trial of 1 s, no warm-up")
    ap.add_argument("--only", action="append", default=[],
                    help="a test name, a name prefix or a group (uni, xc, mq, ip4, py, irq, "
                         "host); "
                         "repeatable")
    ap.add_argument("--sizes", help="comma-separated subset of frame sizes")
    ap.add_argument("--queues", type=queue_counts, default=[1],
                    help="queue counts N of the mq tests, comma-separated (default 1); "
                         "a count needs 2N + 1 CPUs, else its cells are skipped")
    ap.add_argument("--budget", type=float, default=None,
                    help="start no trial after this many seconds (the cells keep the "
                         "trials they got; default: no limit)")
    ap.add_argument("--trials", type=int, default=None)
    ap.add_argument("--trial-seconds", type=int, default=None,
                    help="seconds per trial (the receivers report once a second)")
    ap.add_argument("--out", default=os.path.join(HERE, "results"),
                    help="directory for results.{md,json,png} (default perf/results)")
    ap.add_argument("--update-readme", action="store_true",
                    help="replace README.md's performance section (between the "
                         "<!-- perf:begin --> and <!-- perf:end --> markers; appended if absent) "
                         "with this run's table")
    ap.add_argument("--tester", choices=("auto", "split", "one"), default="auto",
                    help="the DUT cells' tester: split = gen on CPU 0 and sink on CPU 2 "
                         "(each side a CPU of its own), one = gen --receive on CPU 0; "
                         "auto (default): split where CPU 2 is usable")
    ap.add_argument("--list", action="store_true", help="list the tests and exit")
    ap.add_argument("--no-nodes", action="store_true",
                    help="skip the per-node instruction counts and times (perf/nodes.py, ~1 min)")
    cfg = ap.parse_args(argv)
    cfg.out = os.path.abspath(cfg.out)
    cfg.trials = cfg.trials or (1 if cfg.quick else 3)
    cfg.trial = cfg.trial_seconds or (1 if cfg.quick else 5)
    cfg.warm = 0 if cfg.quick else 1
    cfg.stop_at = time.monotonic() + cfg.budget if cfg.budget else None
    return cfg


def queue_counts(text):
    """--queues: comma-separated positive counts, in the order given, once each."""
    try:
        counts = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("not a comma-separated list of counts: %r" % text)
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError("queue counts must be >= 1: %r" % text)
    return list(dict.fromkeys(counts))


def main(argv=None):
    cfg = parse_args(argv)
    os.makedirs(cfg.out, exist_ok=True)
    if cfg.list:
        print(listing())
        return 0
    want_sizes = cfg.sizes.split(",") if cfg.sizes else None
    have_testpmd = shutil.which("dpdk-testpmd") is not None
    results = {"host": "%s, %d CPUs" % (os.uname().nodename, os.cpu_count()),
               "date": time.strftime("%Y-%m-%d %H:%M:%S"), "quick": cfg.quick,
               "loadavg": "%.2f %.2f %.2f" % os.getloadavg(), "trials": cfg.trials,
               "trial_seconds": cfg.trial, "warmup_seconds": cfg.warm, "tests": {},
               "tester": "split" if split_tester(cfg) else "one-cpu",
               "tester_work": "fixed-count" if tester_work()[0] is DUT_TX else "stamped"}
    # (name, size, fn), in table order
    cells, skipped = build_cells(selected(cfg.only), want_sizes, cfg.queues,
                                 cpuplan.usable_cpus(), have_testpmd)
    for name, why in skipped.items():
        log("%s: skipped, %s" % (name, why))
    if skipped:
        results["skipped"] = skipped
    trials, errors = run_rounds(cfg, cells)
    for name, size, _ in cells:
        results["tests"].setdefault(name, {})[size] = summarize_cell(
            trials[(name, size)], errors.get((name, size)), size)
    results["loadavg_end"] = "%.2f %.2f %.2f" % os.getloadavg()
    if not cfg.no_nodes and not cfg.quick and shutil.which("valgrind"):
        import nodes
        log("instructions and time per frame, per node (callgrind; one CPU)...")
        cpu = 1 if 1 in cpuplan.usable_cpus() else None     # the DUT's CPU in the cells
        results["nodes"] = nodes.measure_all(frames=32768, time_cpu=cpu)
    results["chart"] = chart(results, cfg.out)
    table = write_report(results, cfg.out)
    print(table)
    if cfg.update_readme:
        update_readme(table, results["chart"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
