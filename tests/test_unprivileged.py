"""memifx needs no privileges: a memif pair in both roles, with traffic and
``memifx show``, run as user and group 65534 (nobody/nogroup) with no
supplementary groups.

CI runs as root, so the test drops privileges with ``setpriv``.  The
interpreter must be one that user can execute: the venv's python may link
to an interpreter under root's home (pyenv in /root, mode 0700), so the
first of these that runs as that user is used: ``sys.executable``, the
venv's base interpreter, ``/usr/bin/python3.X`` of the same version (the
extensions are built for this X).  The venv's site-packages and the tree
are put on its path; they must be readable by that user (a checkout under
a private home is not: the test then skips and says so).

Pair 1 (abstract socket): ``memifx gen`` as slave -> ``memifx sink`` as
master.  Pair 2 (a filesystem socket in a directory owned by that user):
``memifx gen`` as master -> ``memifx sink`` as slave.  While the sinks wait,
``memifx show --json`` (as that user, default stats directory) lists them.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile

import pytest

from conftest import wait_for

pytestmark = pytest.mark.timeout(90)

UID = GID = 65534
TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = sysconfig.get_paths()["purelib"]
FRAMES = 2000
# run a module's main as that user, with the venv's site-packages (and so
# the editable install of this tree) on the path
BOOT = ("import site, sys; site.addsitedir(%r); sys.path.insert(0, %r); "
        "sys.argv = ['memifx'] + sys.argv[1:]; "
        "from memifx.cli.main import main; main()" % (SITE, TREE))


def drop():
    return [shutil.which("setpriv"), "--reuid=%d" % UID, "--regid=%d" % GID,
            "--clear-groups", "--"]


def clean_env():
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/",
           "PYTHONDONTWRITEBYTECODE": "1", "PYTHONUNBUFFERED": "1"}
    return env


def interpreters():
    v = "%d.%d" % sys.version_info[:2]
    seen = []
    for p in (sys.executable, getattr(sys, "_base_executable", None),
              os.path.realpath(sys.executable), "/usr/bin/python" + v,
              "/usr/local/bin/python" + v):
        if p and p not in seen and os.path.exists(p):
            seen.append(p)
    return seen


def find_python():
    """An interpreter of this version that user can run and that imports
    memifx from this tree; or pytest.skip with why not."""
    if os.geteuid() != 0:
        pytest.skip("not root: cannot drop privileges (and this run already has none)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    tried = []
    probe = ("import site, sys; site.addsitedir(%r); sys.path.insert(0, %r); "
             "import memifx.ring, memifx.cli.main; print(sys.version_info[:2], "
             "memifx.__file__)" % (SITE, TREE))
    for py in interpreters():
        r = subprocess.run(drop() + [py, "-c", probe], capture_output=True, text=True,
                           env=clean_env(), cwd="/", timeout=30)
        if r.returncode == 0 and str(tuple(sys.version_info[:2])) in r.stdout:
            return py
        tried.append("%s: %s" % (py, (r.stderr.strip().splitlines() or ["?"])[-1]))
    pytest.skip("no interpreter runs memifx as uid %d: %s" % (UID, "; ".join(tried)))


def uids(pid):
    """Real, effective, saved and filesystem uids of a process."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return {int(u) for u in line.split()[1:]}
    except OSError:
        pass
    return None


def memifx_as_nobody(procs, py, *args):
    return procs.start(drop() + [py, "-c", BOOT] + list(args), env=clean_env(), cwd="/")


def finish(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out[out.index("{"):])


def test_pair_as_nobody(procs, unique):
    py = find_python()
    print("\nrunning as uid %d with %s" % (UID, py))
    sockdir = tempfile.mkdtemp(prefix="mx-nobody-", dir="/tmp")
    try:
        os.chown(sockdir, UID, GID)
        os.chmod(sockdir, 0o700)
        abstract = "@%s-nobody" % unique
        path = os.path.join(sockdir, "memif.sock")
        common = ",rx-mode=interrupt"

        # both sinks wait for their peers; show must list them
        sink1 = memifx_as_nobody(procs, py, "sink", "socket=%s,id=0,role=master%s"
                                 % (abstract, common), "--count", str(FRAMES), "--json")
        sink2 = memifx_as_nobody(procs, py, "sink", "socket=%s,id=3,role=slave%s"
                                 % (path, common), "--count", str(FRAMES), "--json")
        mine = {sink1.pid, sink2.pid}
        for pid in mine:                 # setpriv execs: the pid is memifx's
            assert wait_for(lambda: uids(pid) == {UID}, 10), uids(pid)

        def listed():
            r = subprocess.run(drop() + [py, "-c", BOOT, "show", "--json"],
                               capture_output=True, text=True, env=clean_env(), cwd="/",
                               timeout=30)
            assert r.returncode == 0, r.stdout + r.stderr
            shown = json.loads(r.stdout)
            listed.last = shown
            return {p["pid"] for p in shown["processes"]} >= mine
        assert wait_for(listed, 20, 0.2), listed.last
    except BaseException:
        shutil.rmtree(sockdir, ignore_errors=True)
        raise
    try:
        gen1 = memifx_as_nobody(procs, py, "gen", "socket=%s,id=0,role=slave" % abstract,
                                "--count", str(FRAMES), "--rate", "20000", "--json")
        r1 = finish(gen1)
        s1 = finish(sink1)
        gen2 = memifx_as_nobody(procs, py, "gen", "socket=%s,id=3,role=master" % path,
                                "--count", str(FRAMES), "--rate", "20000", "--json")
        assert wait_for(lambda: os.path.exists(path), 10)
        assert os.stat(path).st_uid == UID
        r2 = finish(gen2)
        s2 = finish(sink2)
    finally:
        shutil.rmtree(sockdir, ignore_errors=True)
    for gen, sink in ((r1, s1), (r2, s2)):
        assert gen["packets"] == FRAMES, gen
        assert sink["received"] == FRAMES and sink["lost"] == 0 and sink["corrupt"] == 0, sink
