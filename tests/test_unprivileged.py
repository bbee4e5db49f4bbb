"""memifx needs no privileges: a memif pair in both roles, with traffic and
``memifx show``, run as user and group 65534 (nobody/nogroup) with no
supplementary groups.

CI runs as root, so the test drops privileges with ``setpriv``.  The
checkout and the venv may sit where that user cannot read (a clone under
/root, mode 0700), so what runs is a copy, in a private temporary
directory that user may read: the memifx package as built here (its
extensions included) with the CLI, and the packages it imports (click,
psutil).  The interpreter must be one that user can execute, of this
version (the extensions are built for it): the first of ``sys.executable``,
its real path, ``/usr/bin/python3.X``, ``/usr/local/bin/python3.X`` that
imports the copy as that user.  If none does, the test skips and says why.

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
import tempfile

import pytest

from conftest import wait_for

pytestmark = pytest.mark.timeout(90)

UID = GID = 65534
FRAMES = 2000
SKIP_FILES = shutil.ignore_patterns("*.c", "*.pyx", "*.pxd", "__pycache__")


def copy_for_nobody(root):
    """memifx (as imported here), its CLI and its dependencies under
    ``root``; returns the directory to put on sys.path."""
    import click
    import psutil
    import memifx
    import memifx.cli
    lib = os.path.join(root, "lib")
    shutil.copytree(os.path.dirname(memifx.__file__), os.path.join(lib, "memifx"),
                    ignore=SKIP_FILES)
    shutil.copytree(os.path.dirname(memifx.cli.__file__), os.path.join(lib, "memifx", "cli"),
                    ignore=SKIP_FILES, dirs_exist_ok=True)
    for mod in (click, psutil):
        shutil.copytree(os.path.dirname(mod.__file__),
                        os.path.join(lib, mod.__name__), ignore=SKIP_FILES)
    for d, dirs, files in os.walk(root):
        os.chmod(d, 0o755)
        for f in files:
            os.chmod(os.path.join(d, f), 0o644 | (os.stat(os.path.join(d, f)).st_mode & 0o111))
    return lib


def boot(lib):
    """python -c text that runs the memifx CLI from the copy."""
    return ("import sys; sys.path.insert(0, %r); sys.argv = ['memifx'] + sys.argv[1:]; "
            "from memifx.cli.main import main; main()" % lib)


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


def find_python(lib):
    """An interpreter of this version that user can run and that imports
    the copy of memifx; or pytest.skip with why not."""
    if os.geteuid() != 0:
        pytest.skip("not root: cannot drop privileges (and this run already has none)")
    if not shutil.which("setpriv"):
        pytest.skip("setpriv (util-linux) not installed")
    tried = []
    probe = ("import sys; sys.path.insert(0, %r); "
             "import memifx.ring, memifx.cli.main; print(sys.version_info[:2], "
             "memifx.__file__)" % lib)
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


def memifx_as_nobody(procs, cmd, *args):
    return procs.start(drop() + cmd + list(args), env=clean_env(), cwd="/")


def finish(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return json.loads(out[out.index("{"):])


def test_pair_as_nobody(procs, unique):
    work = tempfile.mkdtemp(prefix="mx-nobody-", dir="/tmp")
    try:
        pair_as_nobody(procs, unique, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def pair_as_nobody(procs, unique, work):
    lib = copy_for_nobody(work)
    py = find_python(lib)
    cmd = [py, "-c", boot(lib)]
    print("\nrunning as uid %d with %s" % (UID, py))
    sockdir = os.path.join(work, "sock")
    os.mkdir(sockdir)
    os.chown(sockdir, UID, GID)
    os.chmod(sockdir, 0o700)
    abstract = "@%s-nobody" % unique
    path = os.path.join(sockdir, "memif.sock")
    irq = ",rx-mode=interrupt"

    # both sinks wait for their peers; show must list them
    sink1 = memifx_as_nobody(procs, cmd, "sink", "socket=%s,id=0,role=master%s"
                             % (abstract, irq), "--count", str(FRAMES), "--json")
    sink2 = memifx_as_nobody(procs, cmd, "sink", "socket=%s,id=3,role=slave%s"
                             % (path, irq), "--count", str(FRAMES), "--json")
    mine = {sink1.pid, sink2.pid}
    for pid in mine:                     # setpriv execs: the pid is memifx's
        assert wait_for(lambda: uids(pid) == {UID}, 10), uids(pid)

    def listed():
        r = subprocess.run(drop() + cmd + ["show", "--json"], capture_output=True,
                           text=True, env=clean_env(), cwd="/", timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        listed.last = json.loads(r.stdout)
        return {p["pid"] for p in listed.last["processes"]} >= mine
    assert wait_for(listed, 20, 0.2), listed.last

    gen1 = memifx_as_nobody(procs, cmd, "gen", "socket=%s,id=0,role=slave" % abstract,
                            "--count", str(FRAMES), "--rate", "20000", "--json")
    r1 = finish(gen1)
    s1 = finish(sink1)
    gen2 = memifx_as_nobody(procs, cmd, "gen", "socket=%s,id=3,role=master" % path,
                            "--count", str(FRAMES), "--rate", "20000", "--json")
    assert wait_for(lambda: os.path.exists(path), 10)
    assert os.stat(path).st_uid == UID
    r2 = finish(gen2)
    s2 = finish(sink2)
    for gen, sink in ((r1, s1), (r2, s2)):
        assert gen["packets"] == FRAMES, gen
        assert sink["received"] == FRAMES and sink["lost"] == 0 and sink["corrupt"] == 0, sink
