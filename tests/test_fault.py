"""A peer that truncates the memory it shared (memifx/guard.pyx).

A slave may send a region memfd that cannot be sealed (DPDK's zero-copy
memory is one), then shrink it under us.  Every access past the new end
would be SIGBUS.  Here: the process that maps it survives, in the main
process and in a worker; the link that faulted goes down with "memory region
truncated", counted; the other links of the process keep passing traffic;
fds and mappings go back to their baseline.  Also: a region fd that is not a
memfd is refused, and a memifx slave's own regions cannot be truncated by
its master at all.

Scenarios where memifx itself maps the truncated region run in a fresh
interpreter (``isolated``): if the guard failed, SIGBUS would kill that
child and fail the test, not the whole session.
"""
import gc
import json
import os
import signal
import subprocess
import sys
import tempfile
import uuid

import pytest

import memifx
from memifx import guard
from conftest import cross, frames, receive, wait_for
from rogue import PAGE, RogueMaster, RogueSlave, memfd_maps, open_fds

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))
MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
REASON = "memory region truncated"
RING_SIZE = 64


def settle(before_fds, before_maps, timeout=5.0):
    def ok():
        gc.collect()
        return open_fds() <= before_fds and memfd_maps() <= before_maps
    assert wait_for(ok, timeout, 0.02), (open_fds(), before_fds, memfd_maps(), before_maps)


def isolated(scenario, *args, timeout=45):
    """Run ``scenario`` (a function of this module) in a fresh interpreter;
    returns its stdout.  Fails with its output if it did not exit cleanly."""
    code = ("import sys; sys.path.insert(0, %r); import test_fault; "
            "test_fault.%s(*sys.argv[1:]); print('SCENARIO OK', flush=True)" % (HERE, scenario))
    p = subprocess.run([sys.executable, "-c", code] + [str(a) for a in args],
                       capture_output=True, text=True, timeout=timeout)
    out = p.stdout + p.stderr
    assert p.returncode == 0 and "SCENARIO OK" in p.stdout, \
        "child exited with %s:\n%s" % (p.returncode, out)
    return out


# ============================================ memifx master, main process

def _master_survives(how, via="burst"):
    """Child: two master interfaces on one socket, a good slave on id 1, a
    rogue on id 0 with an unsealable region that it truncates.  ``via``:
    the application's rx_burst touches the lost pages, or (``node``) a
    pipeline node's direct use of the queue, which reports nothing itself:
    the guard's wakeup of the control loop ends the link."""
    path = "@memifx-fault-" + uuid.uuid4().hex[:12]
    bad = memifx.Interface(socket=path, id=0, role="master", name="bad").connect()
    good = memifx.Interface(socket=path, id=1, role="master", name="good").connect()
    slave = memifx.Interface(socket=path, id=1, role="slave", name="good-slave",
                             ring_size=RING_SIZE).connect()
    assert slave.wait_connected(5) and good.wait_connected(5)
    cross(slave, good, tag=1)
    gc.collect()
    before_fds, before_maps = open_fds(), memfd_maps()
    faults = guard.fault_count()

    r = RogueSlave.connect(path)
    r.handshake(sealable=False)
    assert bad.wait_connected(5)
    assert bad.info()["warnings"] == ["region 0: region not sealed against shrinking"]
    r.send_frame(b"a" * 60)
    assert receive(bad, 1) == [b"a" * 60]
    r.cut_region(how)
    # The burst that touches the lost pages reads zeros instead of dying: a
    # frame being copied then holds zeros (bytes the peer could have
    # written itself), an empty ring has nothing.
    if via == "node":
        (q,) = bad.active_queues("rx")
        got = q.rx_frames(256)
        del q                               # a node lets go of its queues
    else:
        got = bad.rx_burst()
    assert got == ([bytes(60)] if how == "buffers" else [])
    assert r.outcome() == REASON
    assert wait_for(lambda: bad.info()["last_disconnect"] == REASON, 5), bad.info()
    assert not bad.connected
    assert guard.fault_count() == faults + 1
    assert bad.info()["memory_faults"] == 1
    assert good.info()["memory_faults"] == 0
    # The other link of this process never noticed.
    assert slave.connected and good.connected
    assert good.info()["link_flaps"] == 0
    cross(slave, good, tag=2)
    cross(good, slave, tag=3)
    r.close()
    settle(before_fds, before_maps)
    # The interface that lost its link serves a well-behaved peer again.
    again = memifx.Interface(socket=path, id=0, role="slave", name="good-again",
                             ring_size=RING_SIZE).connect()
    assert again.wait_connected(5) and bad.wait_connected(5)
    cross(again, bad, tag=4)
    cross(bad, again, tag=5)
    again.close()
    assert wait_for(lambda: not bad.connected, 5)
    settle(before_fds, before_maps)
    for i in (slave, good, bad):
        i.close()


@pytest.mark.parametrize("how,via", [("zero", "burst"), ("buffers", "burst"),
                                     ("zero", "node"), ("buffers", "node")])
def test_master_survives_truncated_region(how, via):
    isolated("_master_survives", how, via)


def _tx_into_truncated_region():
    """Child: the master transmits into buffers the slave posted, then lost."""
    path = "@memifx-fault-" + uuid.uuid4().hex[:12]
    bad = memifx.Interface(socket=path, id=0, role="master", name="bad").connect()
    r = RogueSlave.connect(path)
    r.handshake(sealable=False)
    assert bad.wait_connected(5)
    r.post(8)
    os.ftruncate(r.fds[0], PAGE)            # the rings stay, the buffers go
    bad.tx_burst(frames(4))                 # copies into the lost buffers
    assert r.outcome() == REASON
    assert wait_for(lambda: bad.info()["last_disconnect"] == REASON, 5), bad.info()
    r.close()
    bad.close()


def test_master_tx_into_truncated_region():
    isolated("_tx_into_truncated_region")


def _truncated_during_handshake():
    """Child: the region shrinks before CONNECT, so reading the ring cookie
    at CONNECT is the first access."""
    path = "@memifx-fault-" + uuid.uuid4().hex[:12]
    m = memifx.Interface(socket=path, id=0, role="master", name="m").connect()
    r = RogueSlave.connect(path)
    r.handshake(sealable=False, connect=False)
    os.ftruncate(r.fds[0], 0)
    r.send(memifx.wire.Connect(if_name="rogue"))
    assert r.outcome() == REASON
    assert wait_for(lambda: m.info()["last_disconnect"] == REASON, 5), m.info()
    r.close()
    m.close()


def test_truncated_before_connect():
    isolated("_truncated_during_handshake")


def _two_links_fault_at_once():
    """Child: two rogue links truncated together, each read by its own
    thread at the same moment; a good link beside them."""
    import threading
    path = "@memifx-fault-" + uuid.uuid4().hex[:12]
    bad = [memifx.Interface(socket=path, id=i, role="master", name="bad%d" % i).connect()
           for i in (0, 2)]
    good = memifx.Interface(socket=path, id=1, role="master", name="good").connect()
    slave = memifx.Interface(socket=path, id=1, role="slave", name="good-slave",
                             ring_size=RING_SIZE).connect()
    assert slave.wait_connected(5) and good.wait_connected(5)
    rogues = []
    for intf in bad:
        r = RogueSlave.connect(path)
        r.handshake(id=intf.id, sealable=False)
        assert intf.wait_connected(5)
        rogues.append(r)
    faults = guard.fault_count()
    go = threading.Barrier(3)

    def reader(intf):
        go.wait()
        for _ in range(100):
            intf.rx_burst()

    threads = [threading.Thread(target=reader, args=(i,)) for i in bad]
    for t in threads:
        t.start()
    for r in rogues:
        r.cut_region("buffers")
    go.wait()
    for t in threads:
        t.join(10)
    for r in rogues:
        assert r.outcome() == REASON
        r.close()
    assert guard.fault_count() == faults + 2
    assert all(wait_for(lambda: i.info()["last_disconnect"] == REASON, 5) for i in bad)
    cross(slave, good, tag=2)
    assert good.info()["link_flaps"] == 0
    for i in bad + [good, slave]:
        i.close()


def test_two_links_fault_at_once():
    isolated("_two_links_fault_at_once")


# ============================================ memifx master, worker process

@pytest.fixture
def xconnect(procs, sockdir, monkeypatch):
    """``memifx xconnect --workers 1`` between masters A and B (interrupt
    mode: the worker sleeps), a good slave on B already up."""
    monkeypatch.setenv("MEMIFX_STATS_DIR", os.path.join(sockdir, "stats"))
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = procs.start(MEMIFX + ["xconnect",
                              "socket=%s,role=master,name=A,rx-mode=interrupt" % a,
                              "socket=%s,role=master,name=B,rx-mode=interrupt" % b,
                              "--workers", "1", "--json"])
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    assert wait_for(lambda: len(workers_of(p)) == 1, 10)
    sb = memifx.Interface(socket=b, name="sb", ring_size=RING_SIZE).connect()
    assert sb.wait_connected(5)
    p.sockets = a, b
    p.sb = sb
    yield p
    sb.close()


def footprint(pid):
    """(open fds, memfd mappings) of another process."""
    with open("/proc/%d/maps" % pid) as f:
        maps = sum(1 for line in f if "memfd:" in line)
    return len(os.listdir("/proc/%d/fd" % pid)), maps


def back_to(pid, before, timeout=5.0):
    def ok():
        return all(now <= was for now, was in zip(footprint(pid), before))
    assert wait_for(ok, timeout), (pid, footprint(pid), before)


def workers_of(p):
    import psutil
    return [c.pid for c in psutil.Process(p.pid).children()
            if "memifx.worker" in " ".join(c.cmdline())]


def finish(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    return json.loads(out.strip().splitlines()[-1]), out


def good_traffic_through(p, sb):
    """A good slave on A; frames cross A <-> B through the worker."""
    sa = memifx.Interface(socket=p.sockets[0], name="sa", ring_size=RING_SIZE).connect()
    try:
        assert sa.wait_connected(5)
        sent = frames(16, 100, 7)
        assert sa.tx_burst(sent) == 16
        assert receive(sb, 16) == sent
        back = frames(16, 90, 8)
        assert sb.tx_burst(back) == 16
        assert receive(sa, 16) == back
    finally:
        sa.close()


@pytest.mark.parametrize("how", ["zero", "buffers"])
def test_worker_survives_truncated_region(xconnect, how):
    p, sb = xconnect, xconnect.sb
    (worker,) = workers_of(p)
    assert wait_for(lambda: footprint(worker)[1] >= 1, 5)     # it has mapped B's region
    before = {pid: footprint(pid) for pid in (p.pid, worker)}
    r = RogueSlave.connect(p.sockets[0])
    try:
        r.handshake(sealable=False, log2=6)
        r.send_frame(b"z" * 60)
        assert receive(sb, 1) == [b"z" * 60]
        os.eventfd_write(r.efds[0], 1)
        r.cut_region(how)
        if how == "zero":
            os.eventfd_write(r.efds[0], 1)      # the worker wakes and reads the ring
        assert r.outcome() == REASON
    finally:
        r.close()
    assert workers_of(p) == [worker]            # not restarted: it survived
    assert sb.connected and sb.info()["link_flaps"] == 0
    # The frame in flight when the pages went is forwarded with zeros.
    expect = [bytes(60)] if how == "buffers" else []
    assert receive(sb, len(expect), timeout=1) == expect
    for pid, was in before.items():             # the worker dropped its mapping too
        back_to(pid, was)
    good_traffic_through(p, sb)
    assert workers_of(p) == [worker]
    assert wait_for(lambda: "memory faults  A: 1" in show(), 5), show()
    sb.close()
    result, out = finish(p)
    assert result["workers"] == {"count": 1, "restarts": 0}, out
    assert result["interfaces"]["A"]["memory_faults"] == 1, out


def show(*args):
    return subprocess.run(MEMIFX + ["show"] + list(args), capture_output=True, text=True,
                          timeout=30).stdout


def test_worker_attach_after_shrink_fails_the_link_only(xconnect):
    """The region shrinks after the main process checked it, before the
    worker maps it: the worker's own check refuses it; the link goes down
    with that reason, the worker stays (regression: it raised, died, was
    restarted, and the link flapped again and again)."""
    p, sb = xconnect, xconnect.sb
    (worker,) = workers_of(p)
    assert wait_for(lambda: footprint(worker)[1] >= 1, 5)
    before = {pid: footprint(pid) for pid in (p.pid, worker)}
    r = RogueSlave.connect(p.sockets[0])
    try:
        r.handshake(sealable=False, connect=False)
        os.ftruncate(r.fds[0], PAGE)            # the rings stay: CONNECT passes
        r.send(memifx.wire.Connect(if_name="rogue"))
        r.expect(memifx.wire.Connected)
        reason = r.outcome()
        assert reason.startswith("memory region fd smaller than announced"), reason
    finally:
        r.close()
    assert workers_of(p) == [worker]
    for pid, was in before.items():
        back_to(pid, was)
    good_traffic_through(p, sb)
    sb.close()
    result, out = finish(p)
    assert result["workers"] == {"count": 1, "restarts": 0}, out


# ================================================= what is not a memfd

def test_region_that_is_not_a_memfd_is_refused(abstract_sock):
    m = memifx.Interface(socket=abstract_sock, id=0, role="master", name="m").connect()
    try:
        with tempfile.TemporaryFile(dir=HERE) as f:
            f.truncate(1 << 16)
            with RogueSlave.connect(abstract_sock) as r:
                r.init()
                r.ack()
                r.add_region(0, 1 << 16, fd=f.fileno())
                assert r.outcome() == "memory region fd is not a memfd"
        assert wait_for(lambda: m.info()["last_disconnect"] == "memory region fd is not a memfd")
        slave = memifx.Interface(socket=abstract_sock, id=0, role="slave", name="s",
                                 ring_size=RING_SIZE).connect()
        try:
            assert slave.wait_connected(5) and m.wait_connected(5)
            cross(slave, m)
        finally:
            slave.close()
    finally:
        m.close()


# ============================================ memifx slave vs rogue master

def test_slave_regions_cannot_be_truncated(abstract_sock):
    """Our own memory is sealed: the master cannot shrink it, and a buffer
    the application holds (zero-copy) keeps its bytes."""
    rm = RogueMaster.listen(abstract_sock)
    s = memifx.Interface(socket=abstract_sock, id=0, role="slave", name="s",
                         ring_size=RING_SIZE).connect()
    try:
        rm.accept()
        rm.handshake()
        assert s.wait_connected(5)
        assert wait_for(lambda: rm.m2s[0].head == RING_SIZE)
        rm.give(b"h" * 80)
        os.eventfd_write(rm.efds[-1], 1)
        held = []
        assert wait_for(lambda: s.rx_pending(), 5)
        with s.rx_zero_copy() as bufs:
            assert len(bufs) == 1
            for fd in rm.fds:
                if os.readlink("/proc/self/fd/%d" % fd).startswith("/memfd:"):
                    with pytest.raises(PermissionError):
                        os.ftruncate(fd, 0)
                    held.append(fd)
            with memoryview(bufs[0]) as v:
                assert bytes(v) == b"h" * 80
        assert held
        frames_ = frames(4)
        assert s.tx_burst(frames_) == 4
        assert rm.take() == frames_
    finally:
        s.close()
        rm.close()


# ======================================================== the guard itself

FAULTHANDLER = r"""
import faulthandler, mmap, os, sys
sys.path.insert(0, sys.argv[1])
order, what = sys.argv[2], sys.argv[3]
import memifx
from rogue import RogueSlave
if order == "before":
    faulthandler.enable()
path = "@memifx-fault-fh-%d" % os.getpid()
m = [memifx.Interface(socket=path, id=i, role="master").connect() for i in (0, 1)]
r = RogueSlave.connect(path)
r.handshake(sealable=False)                 # the guard watches a region: installed
assert m[0].wait_connected(5)
if order == "after":
    faulthandler.enable()                   # in front of the guard ...
    r = RogueSlave.connect(path)
    r.handshake(id=1, sealable=False)       # ... until the next region puts it back
    assert m[1].wait_connected(5)
if what == "peer":
    os.ftruncate(r.fds[0], 0)
    m[1 if order == "after" else 0].rx_burst()
    print("PEER SURVIVED", flush=True)
    sys.exit(0)
fd = os.memfd_create("not-a-peer-region")
os.ftruncate(fd, 1 << 16)
mem = mmap.mmap(fd, 1 << 16)
os.ftruncate(fd, 0)
print("TOUCHING", flush=True)
mem[4096] = 1                               # not the peer's memory: must stay fatal
print("SURVIVED", flush=True)
"""


@pytest.mark.parametrize("order", ["before", "after"])
@pytest.mark.parametrize("what", ["peer", "foreign"])
def test_guard_and_faulthandler(order, what):
    """faulthandler enabled before memifx watches peer memory, or after:
    a peer's truncation is survived, without a traceback; any other SIGBUS
    still reaches faulthandler (one traceback) and kills the process."""
    p = subprocess.run([sys.executable, "-c", FAULTHANDLER, HERE, order, what],
                       capture_output=True, text=True, timeout=30)
    out = p.stdout + p.stderr[-3000:]
    if what == "peer":
        assert p.returncode == 0 and "PEER SURVIVED" in p.stdout, out
        assert "Fatal Python error" not in p.stderr, out
    else:
        assert "TOUCHING" in p.stdout and "SURVIVED" not in p.stdout, out
        assert p.returncode == -signal.SIGBUS, out
        assert p.stderr.count("Fatal Python error: Bus error") == 1, out
