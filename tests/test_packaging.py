"""An sdist built from this tree installs into a fresh venv and works there."""
import os
import subprocess
import sys
import tarfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SMOKE = r"""
import os, memifx, memifx.cli.main
sock = "@memifx-sdist-%d" % os.getpid()
m = memifx.Interface(socket=sock, role="master", name="m").connect()
s = memifx.Interface(socket=sock, role="slave", name="s").connect()
assert s.wait_connected(5) and m.wait_connected(5)
frames = [os.urandom(n) for n in (60, 1500, 9000)]
assert s.tx_burst(frames) == 3 and m.rx_burst() == frames
s.close(); m.close()
import importlib.util
assert importlib.util.find_spec("cli") is None and importlib.util.find_spec("perf") is None
print("SMOKE OK", memifx.__file__)
"""


@pytest.mark.timeout(600)
def test_sdist_installs_and_runs(tmp_path):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "setup.py", "-q", "sdist", "-d", str(dist)], cwd=ROOT,
                   check=True, capture_output=True)
    (sdist,) = dist.iterdir()
    with tarfile.open(sdist) as t:
        names = t.getnames()
    for needed in ("csrc/memif.h", "memifx/ring.pxd", "memifx/memory.pxd", "memifx/memif.pxd",
                   "memifx/ring.pyx", "cli/main.py", "pyproject.toml", "README.md"):
        assert any(n.endswith(needed) for n in names), needed
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    # Unoptimised (setup.py's MEMIFX_OPTIMIZE): what this checks is that the
    # sdist holds everything a build needs and that the result runs; the -O3
    # build of the same sources is what every other test runs.
    r = subprocess.run([py, "-m", "pip", "install", "-q", str(sdist)],
                       capture_output=True, text=True,
                       env=dict(os.environ, MEMIFX_OPTIMIZE="0"))
    assert r.returncode == 0, r.stdout + r.stderr
    r = subprocess.run([py, "-c", SMOKE], cwd=str(tmp_path), capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0 and "SMOKE OK" in r.stdout, r.stdout + r.stderr
    assert str(venv) in r.stdout                    # the installed copy, not the tree
    r = subprocess.run([str(venv / "bin" / "memifx"), "--version"], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0 and "memifx" in r.stdout


def test_import_without_extension_is_explained(tmp_path):
    """A source tree without the compiled modules says what to do."""
    pkg = tmp_path / "memifx"
    pkg.mkdir()
    for name in os.listdir(os.path.join(ROOT, "memifx")):
        if name.endswith(".py"):
            with open(os.path.join(ROOT, "memifx", name)) as f:
                (pkg / name).write_text(f.read())
    r = subprocess.run([sys.executable, "-S", "-c", "import memifx"], cwd=str(tmp_path),
                       capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "PYTHONPATH": str(tmp_path)})
    assert r.returncode != 0
    assert "not built" in r.stderr and "build_ext --inplace" in r.stderr
