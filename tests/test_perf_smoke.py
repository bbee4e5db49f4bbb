"""perf/run.py end to end on its cheapest cell: one quick trial of memifx gen
(slave) -> memifx sink (master) at 64 B, results in a scratch directory (the
committed perf/results/ stay as they are).  Checks the JSON has a positive
rate, no corrupt frame, and that the Markdown table was written."""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


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
