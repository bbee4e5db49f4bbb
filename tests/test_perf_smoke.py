"""The perf suite (perf/run.py and its harness, scenarios and report modules).

The smoke test runs perf/run.py end to end on its cheapest cell: one quick
trial of memifx gen (slave) -> memifx sink (master) at 64 B, results in a
scratch directory (the committed perf/results/ stay as they are).  It checks
the JSON has a positive rate, no corrupt frame, and that the Markdown table was
written.  The other tests run the harness and the report without processes:
the rounds of trials with scripted scenario functions, the trial window over
scripted samples, the report against the committed results, the README
rewrite, and the test table that --list and --only use."""
import json
import os
import subprocess
import sys
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
    names = ("harness", "scenarios", "report")
    for n in names:
        monkeypatch.delitem(sys.modules, n, raising=False)
    import harness
    import report
    import scenarios
    yield types.SimpleNamespace(harness=harness, scenarios=scenarios, report=report)
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
    assert only == ["xc-memifx-worker", "xc-memifx-inproc", "ip4-1route", "ip4-1M",
                    "ip4-1route-worker"]
    assert scenarios.selected([]) == scenarios.TESTS
