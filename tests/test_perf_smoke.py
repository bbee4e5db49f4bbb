"""The perf suite (perf/run.py and its harness, scenarios and report modules).

The smoke test runs perf/run.py end to end on its cheapest cell: one quick
trial of memifx gen (slave) -> memifx sink (master) at 64 B, results in a
scratch directory (the committed perf/results/ stay as they are).  It checks
the JSON has a positive rate, no corrupt frame, and that the Markdown table was
written.  The other tests run the harness and the report without processes:
the rounds of trials with scripted scenario functions, the trial window over
scripted samples, the report against the committed results, the README
rewrite, and the test table that --list and --only use.

The multi-queue cells need 2N + 1 CPUs to measure; here they are tested for
their CPU plans and which cells run or are skipped on a machine of a given
size, and run once at N = 2 on two CPUs with nothing busy-polling (interrupt
mode, gen rate-limited), which checks their command lines and results, not
their speed."""
import json
import os
import subprocess
import sys
import time
import types

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PERF = os.path.join(ROOT, "perf")
RESULTS = os.path.join(PERF, "results")


@pytest.fixture
def perf_modules(monkeypatch):
    """perf/'s harness, scenarios and report, imported as perf/run.py imports
    them (perf/ on sys.path); the names are dropped again afterwards."""
    monkeypatch.syspath_prepend(PERF)
    names = ("cpuplan", "harness", "scenarios", "report", "run")
    for n in names:
        monkeypatch.delitem(sys.modules, n, raising=False)
    import cpuplan
    import harness
    import report
    import run
    import scenarios
    yield types.SimpleNamespace(cpuplan=cpuplan, harness=harness, scenarios=scenarios,
                                report=report, run=run)
    for n in names:
        sys.modules.pop(n, None)


@pytest.mark.perf
@pytest.mark.timeout(90)
def test_perf_run_quick_smoke(tmp_path):
    out = tmp_path / "results"
    p = subprocess.run([sys.executable, os.path.join(ROOT, "perf", "run.py"), "--quick",
                        "--only", "uni-memifx-gen-slave", "--sizes", "64", "--out", str(out)],
                       capture_output=True, text=True, timeout=80, cwd=ROOT)
    assert p.returncode == 0, p.stdout + p.stderr
    res = json.loads((out / "results.json").read_text())
    cell = res["tests"]["uni-memifx-gen-slave"]["64"]
    assert "error" not in cell, cell
    assert cell["mpps"]["median"] > 0, cell
    assert cell["trials"][0]["corrupt"] == 0
    table = (out / "results.md").read_text()
    assert "| uni-memifx-gen-slave | 64 |" in table


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_report_renders_committed_results_again(perf_modules, tmp_path):
    """The committed results.md is exactly what the report renders from the
    committed results.json: the Markdown depends on the JSON alone, and its
    format has not drifted from the committed run's."""
    with open(os.path.join(RESULTS, "results.json")) as f:
        results = json.load(f)
    with open(os.path.join(RESULTS, "results.md")) as f:
        committed = f.read()
    text = perf_modules.report.write_report(results, str(tmp_path))
    assert text + "\n" == committed
    assert (tmp_path / "results.md").read_text() == committed
    assert json.loads((tmp_path / "results.json").read_text()) == results


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_report_cell_summary_and_verdicts(perf_modules):
    report = perf_modules.report
    trials = [{"mpps": 2.0, "p50_us": 10.0}, {"mpps": 4.0, "p50_us": None},
              {"mpps": 3.0, "p50_us": 30.0}]
    cell = report.summarize_cell(trials, None, "64")
    assert cell["mpps"] == {"median": 3.0, "min": 2.0, "max": 4.0, "n": 3}
    assert cell["gbps"]["median"] == pytest.approx(3.0 * 64 * 8 / 1000)
    assert cell["p50_us"] == {"median": 20.0, "min": 10.0, "max": 30.0, "n": 2}
    assert "error" not in cell and "p99_us" not in cell
    failed = report.summarize_cell([], "RuntimeError: no line", "1518")
    assert failed == {"trials": [], "error": "RuntimeError: no line"}
    assert report.fmt(cell["mpps"]) == "3.00 (2.00–4.00)"
    # whole interval above 1: the ratio counts; straddling 1: it does not
    r, text = report.ratio_text({"median": 3, "min": 2.5, "max": 3.5},
                                {"median": 1, "min": 0.9, "max": 1.1})
    assert r == 3 and "does not count" not in text
    r, text = report.ratio_text({"median": 1.1, "min": 0.8, "max": 1.4},
                                {"median": 1, "min": 0.9, "max": 1.1})
    assert "does not count" in text
    a = {"median": 3.0, "min": 2.9, "max": 3.1, "n": 3}
    b = {"median": 1.0, "min": 0.9, "max": 1.1, "n": 3}
    assert report.verdict(3.0, 1.3, a, b) == "met"
    assert report.verdict(3.0, 2.9, a, b) == "median meets it, the spread does not"
    assert report.verdict(3.0, 6.0, a, dict(b, n=1)) == (
        "missed by 50 % (fewer than 3 trials: indicative only)")


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_update_readme_replaces_or_appends_the_section(perf_modules, tmp_path):
    report = perf_modules.report
    table = "# title\n\nrow 1\n![chart](results.png)\n"
    readme = tmp_path / "README.md"
    readme.write_text("# memifx\n\nintro\n")
    report.update_readme(table, True, str(readme))
    first = readme.read_text()
    assert first.startswith("# memifx\n\nintro\n\n## Performance\n\n<!-- perf:begin -->\n")
    assert "![chart](perf/results/results.png)" in first and "# title" not in first
    assert first.endswith("<!-- perf:end -->\n")
    readme.write_text(first + "\n## After\n")
    report.update_readme("# title\n\nrow 2\n", False, str(readme))
    second = readme.read_text()
    assert "row 2" in second and "row 1" not in second
    assert second.count("<!-- perf:begin -->") == 1 and second.endswith("\n## After\n")


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_run_rounds_retries_once_and_drops_a_failed_cell(perf_modules, tmp_path):
    """Trial k of every cell before trial k + 1 of any; a start that fails is
    retried once; a cell that failed twice is reported and not run again."""
    harness = perf_modules.harness
    calls = []
    flaky_failed = []

    def steady(cfg, size):
        calls.append(("steady", size))
        return {"mpps": 1.0}

    def flaky(cfg, size):
        calls.append(("flaky", size))
        if not flaky_failed:
            flaky_failed.append(1)
            raise RuntimeError("no line\nmore output")
        return {"mpps": 2.0}

    def broken(cfg, size):
        calls.append(("broken", size))
        raise RuntimeError("never starts")

    cfg = types.SimpleNamespace(trials=2, out=str(tmp_path))
    cells = [("steady", "64", steady), ("flaky", "64", flaky), ("broken", "64", broken)]
    trials, errors = harness.run_rounds(cfg, cells)
    assert calls == [("steady", "64"), ("flaky", "64"), ("flaky", "64"),
                     ("broken", "64"), ("broken", "64"),
                     ("steady", "64"), ("flaky", "64")]
    assert trials[("steady", "64")] == [{"mpps": 1.0, "attempts": 1}] * 2
    assert trials[("flaky", "64")] == [{"mpps": 2.0, "attempts": 2}, {"mpps": 2.0, "attempts": 1}]
    assert trials[("broken", "64")] == []
    assert errors == {("broken", "64"): "RuntimeError: never starts"}


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_wait_window_skips_idle_partial_and_warmup_samples(perf_modules):
    harness = perf_modules.harness
    samples = [0.0, 0.0, 0.5, 9.0, 4.0, 6.0, 100.0]
    # zeros before traffic, the partial first interval (0.5), 1 warm-up (9.0), 2 measured
    mean, raw = harness.wait_window(lambda: samples, 1, 2, 5)
    assert mean == 5.0 and raw == samples
    with pytest.raises(RuntimeError, match="no 3 rate samples"):
        harness.wait_window(lambda: [0.0, 1.0, 2.0], 1, 2, 0.3)


@pytest.mark.perf
@pytest.mark.timeout(60)
def test_list_and_only_come_from_the_test_table(perf_modules):
    scenarios = perf_modules.scenarios
    names = [t.name for t in scenarios.TESTS]
    assert len(names) == len(set(names))
    for t in scenarios.TESTS:
        assert t.description and t.sizes and callable(t.run), t
    p = subprocess.run([sys.executable, os.path.join(PERF, "run.py"), "--list"],
                       capture_output=True, text=True, timeout=30, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    listed = [l.split()[0] for l in p.stdout.splitlines() if not l.startswith(" ")]
    assert listed == names
    assert scenarios.TESTS[0].description.split()[0] in p.stdout
    only = [t.name for t in scenarios.selected(["ip4", "xc-memifx"])]
    assert only == ["xc-memifx-worker", "xc-memifx-inproc", "xc-memifx-spread", "ip4-1route",
                    "ip4-1M", "ip4-1M-spread", "ip4-1route-worker"]
    assert [t.name for t in scenarios.selected(["xc"])][-2:] == ["xc-memifx-spread",
                                                                 "xc-testpmd-spread"]
    assert scenarios.selected([]) == scenarios.TESTS


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_queues_and_budget_options(perf_modules):
    run = perf_modules.run
    cfg = run.parse_args([])
    assert cfg.queues == [1] and cfg.stop_at is None
    cfg = run.parse_args(["--queues", "1,2,4,2", "--budget", "60"])
    assert cfg.queues == [1, 2, 4]
    assert 50 < cfg.stop_at - time.monotonic() <= 60
    for bad in ("0", "1,x", ",", "-2"):
        with pytest.raises(SystemExit):
            run.parse_args(["--queues", bad])


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_tester_split_where_cpu_2_is_usable(perf_modules, monkeypatch):
    """The DUT cells' tester: gen and sink on CPUs of their own where CPU 2
    is usable (--tester auto), else gen --receive; --tester forces either."""
    run, sc = perf_modules.run, perf_modules.scenarios
    assert run.parse_args([]).tester == "auto"
    for cpus, auto in (([0, 1], False), ([0, 1, 2, 3], True), ([0, 1, 3], False)):
        monkeypatch.setattr(sc.cpuplan, "usable_cpus", lambda cpus=cpus: cpus)
        assert sc.split_tester(run.parse_args([])) is auto
        assert sc.split_tester(run.parse_args(["--tester", "split"])) is True
        assert sc.split_tester(run.parse_args(["--tester", "one"])) is False
    with pytest.raises(SystemExit):
        run.parse_args(["--tester", "both"])


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_dut_tester_sends_fixed_frames_and_counts(perf_modules, monkeypatch):
    """The DUT cells' tester's options: fixed frames counted where this
    memifx's gen has --payload fixed and --verify count, else the lean
    stamped ones."""
    sc = perf_modules.scenarios
    # (an older gen's help has --count and may say "fixed": the choices decide)
    helps = {"gen": "--count N  a fixed rate  --payload [pattern|zeros|fixed] "
                    "--verify [full|stamp]"}
    monkeypatch.setattr(sc, "command_help", lambda c: helps[c])
    assert sc.tester_work() == (sc.LEAN_TX, sc.LEAN_RX)
    helps["gen"] += " [full|stamp|seq|count]"
    assert sc.tester_work() == (sc.DUT_TX, sc.DUT_RX)
    helps["gen"] = "--count N  --payload [pattern|zeros]  --verify [full|stamp|seq|count]"
    assert sc.tester_work() == (sc.LEAN_TX, sc.LEAN_RX)
    assert "fixed" in sc.DUT_TX and "count" in sc.DUT_RX


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_cpu_plans_never_share_a_cpu(perf_modules):
    cpuplan = perf_modules.cpuplan
    assert cpuplan.plan(7, range(16)) == (cpuplan.Plan(0, list(range(1, 8)),
                                                       list(range(8, 15))), None)
    assert cpuplan.plan(2, [9, 3, 5, 1, 7])[0] == cpuplan.Plan(1, [3, 5], [7, 9])
    p, why = cpuplan.plan(1, [0, 1])
    assert p is None and "needs 3 CPUs" in why and "2 usable" in why
    for ncpus in range(1, 18):
        for n in range(1, 9):
            p, why = cpuplan.plan(n, range(ncpus))
            if ncpus < 2 * n + 1:
                assert p is None and why, (n, ncpus)
                continue
            assert why is None
            used = [p.housekeeping] + p.sender + p.receiver
            assert len(p.sender) == len(p.receiver) == n
            assert len(set(used)) == len(used) == 2 * n + 1, (n, ncpus, p)
    assert cpuplan.cpu_list([1, 2, 5]) == "1,2,5"


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_cells_run_or_are_skipped_with_a_reason(perf_modules):
    """Which cells a machine of a given size runs: an n-queue cell only with
    2n + 1 CPUs, a testpmd test only with testpmd, a test its memifx cannot
    run never; each skipped one with its reason; each n-queue cell's
    function gets its n."""
    sc = perf_modules.scenarios
    got = []
    tests = [
        sc.Test("one", "g", ["64", "1518"], lambda c, z: got.append(("one", z)), "d"),
        sc.Test("mq-x", "g", ["64"], lambda c, z, n: got.append(("mq-x", z, n)), "d",
                queues=True),
        sc.Test("mq-x-testpmd", "g", ["64"], lambda c, z, n: None, "d", queues=True),
        sc.Test("zc", "g", ["64"], lambda c, z: None, "d", unavailable=lambda: "no flag"),
    ]
    cells, skipped = sc.build_cells(tests, None, [1, 2, 4], list(range(5)), False)
    assert [(name, size) for name, size, _ in cells] == [
        ("one", "64"), ("one", "1518"), ("mq-x-q1", "64"), ("mq-x-q2", "64")]
    assert set(skipped) == {"mq-x-q4", "mq-x-testpmd-q1", "mq-x-testpmd-q2",
                            "mq-x-testpmd-q4", "zc"}
    assert "needs 9 CPUs" in skipped["mq-x-q4"] and "5 usable" in skipped["mq-x-q4"]
    assert skipped["mq-x-testpmd-q1"] == "dpdk-testpmd not installed"
    assert skipped["zc"] == "no flag"
    for _, size, fn in cells:
        fn(None, size)
    assert got == [("one", "64"), ("one", "1518"), ("mq-x", "64", 1), ("mq-x", "64", 2)]
    # two CPUs: no n-queue cell at all; --sizes filters
    cells, skipped = sc.build_cells(tests, ["1518"], [1], [0, 1], True)
    assert [(name, size) for name, size, _ in cells] == [("one", "1518")]
    assert "needs 3 CPUs" in skipped["mq-x-q1"] and "mq-x-testpmd-q1" in skipped
    # the real table: names round-trip, the mq group selects the n-queue tests
    mq = sc.selected(["mq"])
    assert mq and all(t.queues for t in mq)
    assert all(sc.cell_queues(t.name, sc.queue_cell(t.name, 7)) == 7 for t in mq)
    assert sc.cell_queues("mq-xc-memifx", "mq-xc-memifx-testpmd-q1") is None
    assert sc.flows_for(1) == 1 and all(sc.flows_for(n) >= n for n in range(1, 9))


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_zero_copy_cells_skip_without_the_flags(perf_modules, monkeypatch):
    sc = perf_modules.scenarios
    helps = {"gen": "--size  --zero-copy  write in place",
             "sink": "--verify [full|stamp]  sequence numbers start at 0"}
    monkeypatch.setattr(sc, "command_help", lambda c: helps[c])
    assert sc.zero_copy_missing() == "this memifx's sink has no --zero-copy"
    helps["sink"] += " --zero-copy"
    assert sc.zero_copy_missing() == "this memifx's sink has no --verify seq"
    helps["sink"] += " [full|stamp|seq|count]"
    assert sc.zero_copy_missing() is None
    zc = [t for t in sc.TESTS if "-zc-" in t.name]
    assert [t.name for t in zc] == ["uni-memifx-zc-slave", "uni-memifx-zc-master"]
    assert all(t.unavailable is sc.zero_copy_missing for t in zc)


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_run_rounds_starts_no_trial_after_the_budget(perf_modules, tmp_path):
    harness = perf_modules.harness
    calls = []

    def slow(cfg, size):
        calls.append(size)
        time.sleep(0.3)
        return {"mpps": 1.0}

    cfg = types.SimpleNamespace(trials=3, out=str(tmp_path), stop_at=time.monotonic() + 0.2)
    trials, errors = harness.run_rounds(cfg, [("a", "64", slow), ("b", "64", slow)])
    assert calls == ["64"] and errors == {}
    assert trials == {("a", "64"): [{"mpps": 1.0, "attempts": 1}], ("b", "64"): []}


def cell(report, size, *mpps):
    return report.summarize_cell([{"mpps": m} for m in mpps], None, size)


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_report_divides_each_ip4_cell_by_the_xconnect_of_its_traffic(perf_modules):
    """ip4-1M-spread's tester moves every frame's line to the DUT's CPU,
    which the hot cells' does not: it is divided by xc-memifx-spread (the
    same traffic through xconnect), the others by xc-memifx-inproc; and
    xc-memifx-spread by testpmd io under that traffic."""
    report = perf_modules.report
    tests = {"xc-memifx-inproc": {"64": cell(report, "64", 99, 100, 101)},
             "xc-memifx-spread": {"64": cell(report, "64", 39, 40, 41)},
             "ip4-1M": {"64": cell(report, "64", 49, 50, 51)},
             "ip4-1M-spread": {"64": cell(report, "64", 29, 30, 31)},
             "xc-testpmd-spread": {"64": cell(report, "64", 19, 20, 21)}}
    results = {"host": "vm, 2 CPUs", "date": "d", "quick": False, "trials": 3,
               "trial_seconds": 2, "warmup_seconds": 1, "loadavg": "0 0 0", "tests": tests,
               "skipped": {}}
    lines = report.render_markdown(results).splitlines()
    assert any(l.startswith("| ip4-1M | xc-memifx-inproc | 64 | 0.50× ") for l in lines)
    assert any(l.startswith("| ip4-1M-spread | xc-memifx-spread | 64 | 0.75× ") for l in lines)
    assert not any(l.startswith("| ip4-1M-spread | xc-memifx-inproc ") for l in lines)
    # and that xconnect against testpmd io under the same traffic
    assert any(l.startswith("| xc-memifx-spread | xc-testpmd-spread | 64 | 2.00× ")
               for l in lines)


@pytest.mark.perf
@pytest.mark.timeout(30)
def test_report_queue_zero_copy_and_skipped_sections(perf_modules):
    report = perf_modules.report
    restarted = cell(report, "64", 20, 21, 22)
    restarted["trials"][1]["restarts"] = 1
    tests = {"mq-gensink-memifx-q1": {"64": restarted},
             "mq-gensink-memifx-q2": {"64": cell(report, "64", 38, 40, 41)},
             "mq-gensink-memifx-q4": {"64": cell(report, "64", 60, 63, 64)},
             "mq-gensink-testpmd-q1": {"64": cell(report, "64", 18, 18.1, 18.2)},
             "mq-gensink-testpmd-q2": {"64": cell(report, "64", 28, 28.4, 29)},
             "mq-xc-memifx-q2": {"64": {"trials": [], "error": "RuntimeError: no line"}},
             "uni-memifx-zc-slave": {"64": cell(report, "64", 30, 31, 32),
                                     "1518": cell(report, "1518", 8, 8.2, 8.4)}}
    results = {"host": "device, 16 CPUs", "date": "d", "quick": False, "trials": 3,
               "trial_seconds": 2, "warmup_seconds": 1, "loadavg": "0 0 0", "tests": tests,
               "skipped": {"mq-xc-testpmd-q2": "dpdk-testpmd not installed"}}
    text = report.render_markdown(results)
    lines = text.splitlines()
    # every n-queue cell in the main table, in queue order
    rows = [l.split(" | ")[0][2:] for l in lines if l.startswith("| mq-gensink-memifx-q")]
    assert rows == ["mq-gensink-memifx-q1", "mq-gensink-memifx-q2", "mq-gensink-memifx-q4"]
    assert next(l for l in lines if l.startswith("| mq-gensink-memifx-q1 |")).endswith(
        "| worker restarts 1 |")
    # per N: ratio to testpmd at that N, per-queue efficiency against N = 1
    q2 = next(l for l in lines if l.startswith("| 2 | 64 | 40.00"))
    assert "1.41×" in q2 and "| met |" in q2 and "0.95 / 0.78" in q2 and q2.endswith("| met |")
    q4 = next(l for l in lines if l.startswith("| 4 | 64 | 63.00"))
    # 63 / (4 x 21) = 0.75: 17 % short of 0.9; no testpmd cell at 4
    assert "0.75 / -" in q4 and "missed by 17 %" in q4
    assert any(l.startswith("| 2 | 64 | error |") for l in lines)
    # zero-copy against the libmemif figures for a 16-core machine
    assert "not measured here" in text
    zc = [l for l in lines if l.startswith("| uni-memifx-zc-slave | ")]
    assert "25.0, issue 13, 16-core Xeon" in zc[-2] and "1.24×" in zc[-2] and "met" in zc[-2]
    assert "8.6, issue 13, 16-core Xeon" in zc[-1] and "missed by 5 %" in zc[-1]
    assert "- mq-xc-testpmd-q2: dpdk-testpmd not installed" in lines
    # a 2-CPU host is compared with the 2-vCPU VM figures
    results["host"] = "vm, 2 CPUs"
    assert "41.2, issue 13, 2-vCPU VM" in report.render_markdown(results)
    # the DUT cells' tester as the run recorded it (older runs: stamped)
    assert "tester `memifx gen --receive` on CPU 0" in report.render_markdown(results)
    results["tester_work"] = "fixed-count"
    assert ("tester `memifx gen --receive --payload fixed --zero-copy --verify count` on CPU 0"
            in report.render_markdown(results))
    # the py cells' tester, as their trials recorded it (older runs: not said)
    assert "py tests:" not in report.render_markdown(results)
    tests["py-batch"] = {"64": cell(report, "64", 30, 31, 32)}
    for t in tests["py-batch"]["64"]["trials"]:
        t["tester"] = "one-cpu"
    assert ("the tester is `memifx gen --receive --payload fixed --zero-copy --verify count` "
            "on CPU 0" in report.render_markdown(results))
    tests["py-batch"]["64"]["trials"][0]["tester"] = "one-cpu-stamped"
    assert "`memifx gen --receive` on CPU 0, sending on A and receiving on B, stamped" \
        in report.render_markdown(results)
    del tests["py-batch"]
    results["tester"] = "split"
    text = report.render_markdown(results)
    assert "`memifx gen --payload fixed --zero-copy` on CPU 0" in text
    assert "`memifx sink --zero-copy --verify count` on CPU 2" in text
    assert report.efficiency(tests, "mq-gensink-memifx", 2, "64") == pytest.approx(40 / 42)
    assert report.efficiency(tests, "mq-xc-memifx", 2, "64") is None


@pytest.mark.perf
@pytest.mark.timeout(60)
def test_nodes_time_each_node_and_the_report_shows_it(perf_modules, monkeypatch):
    """perf/nodes.py --time: each timed pass reports every call of its
    workload, over the same rings; the report's node table gets a time
    column only where every row has a time (older runs have none)."""
    monkeypatch.delitem(sys.modules, "nodes", raising=False)
    import nodes
    passes = nodes.workload("ip4", 2048, 64, timed_passes=2)
    assert len(passes) == 2
    assert all(set(p) == {"tx", "poll"} and min(p.values()) > 0 for p in passes)
    per_frame = nodes.timed("ring", 1024, 64, runs=3)
    assert set(per_frame) == {"fill", "tx", "rx"} and 0 < min(per_frame.values()) < 10_000
    assert nodes.workload("xconnect", 1024, 64) == []
    report = perf_modules.report
    results = {"host": "vm, 2 CPUs", "date": "d", "quick": False, "trials": 3,
               "trial_seconds": 2, "warmup_seconds": 1, "loadavg": "0 0 0", "tests": {},
               "nodes": [["xconnect poll", 83.1, 7.34], ["ip4 router poll", 202.3, 16.6]]}
    lines = report.render_markdown(results).splitlines()
    assert "| node | Ir per frame | ns per frame, one CPU |" in lines
    assert "| ip4 router poll | 202 | 16.6 |" in lines
    results["nodes"] = [["xconnect poll", 83.1], ["ip4 router poll", 202.3]]
    lines = report.render_markdown(results).splitlines()
    assert "| node | Ir per frame |" in lines and "| ip4 router poll | 202 |" in lines


@pytest.mark.perf
@pytest.mark.timeout(120)
def test_two_queue_cells_run_on_two_cpus_without_busy_polling(perf_modules, tmp_path):
    """gen -> sink and tester -> xconnect at N = 2 (two workers each side),
    on the first two usable CPUs, receivers in interrupt mode and gen at 20
    kpps: each reports a positive rate, 2 workers and no restart; the sink
    no corrupt frame, the xconnect cell's tester (fixed frames, counted)
    nothing it could find corrupt."""
    sc, cpuplan = perf_modules.scenarios, perf_modules.cpuplan
    cpus = cpuplan.usable_cpus()[:2]
    cfg = types.SimpleNamespace(out=str(tmp_path), warm=0, trial=1, mq_rate=20000,
                                plan=cpuplan.Plan(cpus[0], cpus, cpus))
    for fn in (sc.mq_gensink_memifx, sc.mq_xc_memifx):
        r = fn(cfg, "64", 2)
        assert r["queues"] == 2 and r["mpps"] > 0, (fn.__name__, r)
        assert r["workers"] == 2 and r["restarts"] == 0, (fn.__name__, r)
        assert r["corrupt"] == (0 if fn is sc.mq_gensink_memifx else None), (fn.__name__, r)
