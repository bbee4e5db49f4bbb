"""Shared fixtures: unique socket names, and processes killed by process group."""
import os
import shutil
import struct
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ENDPOINT = os.path.join(HERE, "endpoint.py")


@pytest.fixture
def sockdir():
    """A short private directory for filesystem sockets (AF_UNIX paths are
    limited to 107 bytes, pytest's tmp_path can be longer)."""
    d = tempfile.mkdtemp(prefix="mx-", dir="/tmp")
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def sock(sockdir):
    return os.path.join(sockdir, "memif.sock")


@pytest.fixture
def abstract_sock():
    return "@memifx-test-" + uuid.uuid4().hex[:12]


@pytest.fixture
def unique():
    """A unique token for names and DPDK --file-prefix."""
    return "mx" + uuid.uuid4().hex[:10]


class Procs:
    """Start processes in their own process groups; kill every group at the end."""

    def __init__(self):
        self.procs = []

    def start(self, args, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.STDOUT)
        kw.setdefault("text", True)
        p = subprocess.Popen(args, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def endpoint(self, *args, **kw):
        """tests/endpoint.py with the given arguments (see its docstring)."""
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        return self.start([sys.executable, ENDPOINT] + [str(a) for a in args], env=env, **kw)

    def kill_all(self):
        for p in self.procs:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        for p in self.procs:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                pass
            for f in (p.stdout, p.stderr, p.stdin):
                if f:
                    f.close()


@pytest.fixture
def procs():
    ps = Procs()
    yield ps
    ps.kill_all()


def wait_for(pred, timeout=10.0, interval=0.01):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return True
        time.sleep(interval)
    return pred()


def read_until(proc, token, timeout=10.0):
    """Read a process's stdout lines until one contains ``token``.

    Reads the pipe itself, a byte at a time: the text wrapper of
    ``proc.stdout`` would read ahead, and a line it buffered is a line
    ``select`` no longer sees (two lines written together, the second never
    found).  Nothing past the returned line is consumed, so readline() or
    communicate() later still get the rest."""
    import selectors
    fd = proc.stdout.fileno()
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    end = time.monotonic() + timeout
    seen = []
    line = bytearray()
    try:
        while time.monotonic() < end:
            if not sel.select(max(0.0, end - time.monotonic())):
                continue
            b = os.read(fd, 1)
            if not b:
                break
            line += b
            if b != b"\n":
                continue
            text = line.decode(errors="replace")
            line.clear()
            seen.append(text)
            if token in text:
                return text
    finally:
        sel.close()
    seen.append(line.decode(errors="replace"))
    raise AssertionError("%r not seen; output was:\n%s" % (token, "".join(seen)))


def frames(n, size=60, tag=0):
    """``n`` distinct frames of ``size`` bytes: tag and index, then a filler byte."""
    return [struct.pack("<HH", tag, i) + bytes([(i + tag) & 0xFF]) * (size - 4)
            for i in range(n)]


def receive(intf, n, timeout=5.0, queue=0):
    """Poll (with sleeps) until ``n`` frames arrived; return them."""
    got = []

    def more():
        got.extend(intf.rx_burst(queue))
        return len(got) >= n
    wait_for(more, timeout, 0.002)
    return got


def cross(a, b, n=8, tag=1):
    """Frames from a to b arrive intact."""
    sent = frames(n, 60 + tag, tag)
    assert a.tx_burst(sent) == n
    assert receive(b, n) == sent


def serves_good_slave(master, ring_size=64, **kw):
    """A well-behaved memifx slave in this process connects to ``master``'s
    socket and id (``kw``: more Interface arguments), frames cross both
    ways, then it leaves and the master sees the link go down."""
    import memifx
    slave = memifx.Interface(socket=master.socket, id=master.id, role="slave",
                             name="good-slave", ring_size=ring_size, **kw).connect()
    try:
        assert slave.wait_connected(5), slave.info()
        assert wait_for(lambda: master.connected, 5)
        cross(slave, master, tag=1)
        cross(master, slave, tag=2)
    finally:
        slave.close()
    assert wait_for(lambda: not master.connected, 5)
