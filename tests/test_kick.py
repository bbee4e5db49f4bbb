"""Kicks and eventfd drains never block on the peer (csrc/irq_guard.h).

The peer shares each ring eventfd's open file description: it can preset the
counter to 2^64-2 (any write of 1 then waits for a reader) and flip
O_NONBLOCK whenever it likes, so a "look at the flags, then write" check
loses the race sooner or later.  Here a toggler process (tests/toggler.py)
flips the flag nonstop while memifx transmits thousands of bursts to a
rogue consumer that has interrupts unmasked, in both roles: first with a
sane counter (every kick must arrive, the link stays up), then with the
counter full (the next kick ends the link with a reason).  No burst may
take longer than BURST_BOUND, far above the design bound (IRQ_WAIT_BOUND),
and an interface of the same process with a good peer is served throughout.

Nothing here busy-polls but the toggler (one process) and the test's own
transmit loop: two CPUs at most.
"""
import errno
import fcntl
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid

import psutil
import pytest

import memifx
from memifx import ring
from conftest import read_until, wait_for
from loopback import Loopback
from rogue import RogueMaster, RogueSlave
from test_link import frame, pump

pytestmark = pytest.mark.timeout(60)

TOGGLER = os.path.join(os.path.dirname(__file__), "toggler.py")
IRQ_FAULTS = ("ring interrupt fd made blocking", "ring interrupt fd would block")
FULL = struct.pack("<Q", 0xFFFFFFFFFFFFFFFE)    # the most an eventfd holds: +1 waits
BURST_BOUND = 0.05      # generous for a loaded 2-CPU machine; see ring.IRQ_WAIT_BOUND
CALM = 25               # bursts per link with a sane counter, the flag flipping
RING_SIZE = 64
FRAME = b"k" * 60


class Toggler:
    """The toggler process, pointed at the eventfds of the current link."""

    def __init__(self, procs):
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = procs.start([sys.executable, TOGGLER, str(theirs.fileno())],
                                pass_fds=[theirs.fileno()])
        theirs.close()
        self.sock.settimeout(10)

    def torment(self, *fds):
        """Flip O_NONBLOCK on ``fds`` from now on (none: stop)."""
        socket.send_fds(self.sock, [b"t"], list(fds))
        assert self.sock.recv(16) == b"ok"

    def close(self):
        """Stop the process; return how many flips it made."""
        self.sock.close()
        out, _ = self.proc.communicate(timeout=10)
        assert out.startswith("FLIPS "), out
        return int(out.split()[1])


class Clock:
    """Times calls.  ``worst`` is the longest call the thread was not
    preempted in (no involuntary context switch: on a loaded 2-CPU machine
    a preempted call can take any time, and says nothing about memifx);
    a call that waits on an fd only switches voluntarily, so it counts."""

    def __init__(self):
        self.worst = self.worst_preempted = 0.0
        self.calls = self.preempted = 0

    def __call__(self, fn, *args):
        before = resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw
        t = time.perf_counter()
        try:
            return fn(*args)
        finally:
            took = time.perf_counter() - t
            self.calls += 1
            if resource.getrusage(resource.RUSAGE_THREAD).ru_nivcsw != before:
                self.preempted += 1
                self.worst_preempted = max(self.worst_preempted, took)
            else:
                self.worst = max(self.worst, took)

    def report(self, what):
        print("%s: %d bursts, worst %.2f ms (%d preempted, worst %.2f ms)"
              % (what, self.calls, self.worst * 1e3, self.preempted,
                 self.worst_preempted * 1e3))
        assert self.preempted < self.calls / 10      # the bound was really tested
        assert self.worst < BURST_BOUND


@pytest.fixture
def toggler(procs):
    t = Toggler(procs)
    yield t
    if t.sock.fileno() >= 0:
        t.close()


@pytest.fixture
def bystanders():
    """A good master/slave pair on a socket of its own, in this process."""
    path = "@memifx-kick-good-" + uuid.uuid4().hex[:12]
    m = memifx.Interface(socket=path, id=0, role="master", name="good-master").connect()
    s = memifx.Interface(socket=path, id=0, role="slave", name="good-slave",
                         ring_size=RING_SIZE).connect()
    assert s.wait_connected(5) and wait_for(lambda: m.connected, 5)
    yield m, s
    s.close()
    m.close()


def served(a, b):
    """Frames cross both ways and neither side ever lost the link."""
    for src, dst, tag in ((a, b, 1), (b, a, 2)):
        sent = [bytes([tag, i]) * 30 for i in range(8)]
        assert src.tx_burst(sent) == len(sent)
        got = []
        assert wait_for(lambda: got.extend(dst.rx_burst()) or len(got) >= len(sent), 5)
        assert got == sent
    assert a.connected and b.connected
    assert a.info()["link_flaps"] == 0 and b.info()["link_flaps"] == 0


def counter(efd):
    """Read (and clear) a nonzero eventfd counter, whatever its flags."""
    return struct.unpack("<Q", os.read(efd, 8))[0]


def calm_phase(burst, efd, at_least):
    """Bursts (each kicks once) with a sane counter while the toggler flips
    the flag, until the flag was seen cleared between bursts at least once
    (so the flipping really overlapped our kicks); return how many."""
    n = cleared = 0
    end = time.monotonic() + 10
    while n < at_least or not cleared:
        assert time.monotonic() < end, "the toggler never got to flip the flag"
        assert burst() == 1
        n += 1
        cleared += not fcntl.fcntl(efd, fcntl.F_GETFL) & os.O_NONBLOCK
    return n


def kick_into_full(intf, burst):
    """One more burst (its kick meets the full counter): the link goes down."""
    burst()
    assert wait_for(lambda: not intf.connected, 5), "a kick into a full eventfd kept the link"


# ============================================ the toggling attack, both roles

def test_toggling_attack_on_master(abstract_sock, toggler, bystanders):
    """A rogue slave flips O_NONBLOCK on the M2S eventfd (memifx writes it)
    while the master transmits; then it fills the counter."""
    master = memifx.Interface(socket=abstract_sock, id=0, role="master",
                              name="mx-master").connect()
    clock = Clock()
    links = 40
    try:
        for _ in range(links):
            r = RogueSlave.connect(master.socket)
            try:
                r.handshake()
                assert master.wait_connected(5)
                efd = r.efds[1]                       # M2S: the master kicks it
                r.m2s[0].flags = 0                    # unmasked: "wake me"
                toggler.torment(efd)

                def burst():
                    r.post(1)
                    return clock(master.tx_burst, [FRAME])
                n = calm_phase(burst, efd, CALM)
                assert master.connected, master.info()["last_disconnect"]
                assert counter(efd) == n              # every kick arrived
                os.write(efd, FULL)
                kick_into_full(master, burst)
                assert r.outcome() in IRQ_FAULTS
                assert master.info()["last_disconnect"] in IRQ_FAULTS
                toggler.torment()
            finally:
                r.close()
        flips = toggler.close()
    finally:
        master.close()
    clock.report("master (%d flips)" % flips)
    assert clock.calls >= links * (CALM + 1)
    assert flips > links * 10                         # it really raced us
    served(*bystanders)


@pytest.mark.parametrize("how", ["copy", "zero-copy"])
def test_toggling_attack_on_slave(abstract_sock, toggler, bystanders, how):
    """A rogue master flips O_NONBLOCK on the S2M eventfd (memifx writes it)
    while the slave transmits; then it fills the counter."""
    m = RogueMaster.listen(abstract_sock)
    slave = memifx.Interface(socket=abstract_sock, id=0, role="slave", name="mx-slave",
                             ring_size=RING_SIZE).connect()
    clock = Clock()
    links = 12

    def send():
        if how == "copy":
            return clock(slave.tx_burst, [FRAME])
        bufs = slave.tx_alloc(1)
        if not bufs:
            return 0
        with memoryview(bufs[0]) as v:
            v[:len(FRAME)] = FRAME
        return clock(slave.tx_commit, bufs, [len(FRAME)])

    try:
        for _ in range(links):
            m.accept()
            m.handshake()
            assert slave.wait_connected(5)
            efd = m.efds[0]                           # S2M: the slave kicks it
            m.s2m[0].flags = 0
            toggler.torment(efd)

            def burst():
                n = send()
                m.take()
                return n
            n = calm_phase(burst, efd, CALM * 4)
            assert slave.connected, slave.info()["last_disconnect"]
            assert counter(efd) == n
            os.write(efd, FULL)
            kick_into_full(slave, burst)
            assert m.outcome() in IRQ_FAULTS
            assert slave.info()["last_disconnect"] in IRQ_FAULTS
            toggler.torment()
        flips = toggler.close()
    finally:
        slave.close()
        m.close()
    clock.report("slave, %s (%d flips)" % (how, flips))
    assert clock.calls >= links * (CALM * 4 + 1)
    assert flips > links * 10
    served(*bystanders)


# ====================================== the guard itself: threads and forks

def _make_blocking(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)


def _stuck_kick(blocking=True):
    """One kick into an eventfd that is full (and made blocking): return the
    seconds it took and the fault reason."""
    lb = Loopback(log2=3, buffer_size=128)
    try:
        tx, rx = lb.s2m
        rx.set_interrupt(True)
        os.write(tx.fd, FULL)
        if blocking:
            _make_blocking(tx.fd)
        t = time.perf_counter()
        assert tx.tx_frames([FRAME]) == 1             # queued; only the kick failed
        took = time.perf_counter() - t
        assert rx.rx_frames(4) == [FRAME]
        return took, tx.fault_reason()
    finally:
        lb.close()


def _timers():
    with open("/proc/self/timers") as f:
        return sum(1 for line in f if line.startswith("ID:"))


def test_counter_full_is_a_fault_not_a_retry():
    """A full counter on a non-blocking eventfd: the write fails at once
    (EAGAIN) and that alone ends the link (2^64-2 kicks are never owed)."""
    took, reason = _stuck_kick(blocking=False)
    assert reason == "ring interrupt fd would block"
    assert took < BURST_BOUND


def test_every_thread_gets_a_timer_and_frees_it():
    """Threads made by Python get their own guard on their first kick
    (lazily: a thread that never kicks has none) and free it when they
    exit."""
    _stuck_kick()                                     # this thread's guard exists
    signo = ring.irq_guard_signo()
    assert signo and ring.IRQ_WAIT_BOUND <= 0.001
    base = _timers()
    results, alive = [], []
    go = threading.Event()

    def kicker():
        results.append(_stuck_kick())
        alive.append(_timers())
        go.wait(10)
    threads = [threading.Thread(target=kicker) for _ in range(4)]
    for t in threads:
        t.start()
    assert wait_for(lambda: len(alive) == len(threads), 10)
    assert _timers() == base + len(threads)           # one each
    go.set()
    for t in threads:
        t.join(10)
    assert wait_for(lambda: _timers() == base, 5)     # freed at thread exit
    for took, reason in results:
        assert reason == "ring interrupt fd made blocking"
        assert took < BURST_BOUND
    assert ring.irq_guard_signo() == signo             # one signal per process


def test_control_loop_thread_gets_a_timer():
    """The control loop's thread (where link callbacks run) is guarded too."""
    from memifx.loop import default_loop
    _stuck_kick()
    base = _timers()
    took, reason = default_loop().run_sync(_stuck_kick)
    assert reason == "ring interrupt fd made blocking" and took < BURST_BOUND
    assert _timers() <= base + 1                      # (none if it had kicked before)


def _in_child(fn, timeout=10):
    """Run fn() in a forked child; return its exit code (fn's return value)."""
    pid = os.fork()
    if pid == 0:
        code = 99
        try:
            code = fn()
        finally:
            os._exit(code)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    pytest.fail("the forked child blocked")


def _refuse_preadv2():
    """seccomp: preadv2 fails with EOPNOTSUPP in this process from now on,
    as on a kernel whose eventfd has no RWF_NOWAIT (x86-64 only)."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    class Filter(ctypes.Structure):
        _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8),
                    ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]

    class Prog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(Filter))]
    NR_PREADV2, EOPNOTSUPP = 327, 95
    prog = (Filter * 4)(
        Filter(0x20, 0, 0, 0),                   # ld [nr]
        Filter(0x15, 0, 1, NR_PREADV2),          # jeq preadv2
        Filter(0x06, 0, 0, 0x00050000 | EOPNOTSUPP),   # ret errno
        Filter(0x06, 0, 0, 0x7FFF0000))          # ret allow
    fprog = Prog(4, prog)
    PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
    assert libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0
    assert libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) == 0


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="syscall number for x86-64")
def test_drain_without_rwf_nowait_is_guarded_too():
    """Where preadv2(RWF_NOWAIT) is refused, drain() reads under the guard:
    a wakeup is still read, and with the toggler flipping the flag of the
    empty eventfd, thousands of drains each return within the bound (a
    read that caught the flag cleared faults the queue; "look, then read"
    would sooner or later block for good)."""
    def child():
        _refuse_preadv2()
        lb = Loopback(log2=3, buffer_size=128)
        tx, rx = lb.s2m
        rx.set_interrupt(True)
        try:
            os.preadv(rx.fd, [bytearray(8)], -1, os.RWF_NOWAIT)
            return 4                             # the filter did not take
        except OSError as e:
            if e.errno != errno.EOPNOTSUPP:
                return 5
        if tx.tx_frames([FRAME]) != 1 or not rx.drain() or rx.fault_reason():
            return 1                             # a wakeup is read
        if rx.drain() or rx.fault_reason():
            return 2                             # empty: nothing, and no fault
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        p = subprocess.Popen([sys.executable, TOGGLER, str(theirs.fileno())],
                             pass_fds=[theirs.fileno()], stdout=subprocess.DEVNULL)
        theirs.close()
        try:
            socket.send_fds(mine, [b"t"], [rx.fd])
            mine.settimeout(10)
            mine.recv(16)
            worst, n, end = 0.0, 0, time.monotonic() + 15
            while (n < 3000 or not rx.fault_reason()) and time.monotonic() < end:
                n += 1
                t = time.perf_counter()
                rx.drain()
                worst = max(worst, time.perf_counter() - t)
        finally:
            mine.close()
            p.wait(10)
        if rx.fault_reason() != IRQ_FAULTS[0]:
            return 3                             # never caught it blocking: no race
        return 0 if worst < BURST_BOUND else 6
    assert _in_child(child, timeout=40) == 0


def test_fork_child_gets_its_own_timer():
    """Timers are not inherited: a forked child (a worker) that kicks must
    not use its parent's guard, which does not exist there."""
    _stuck_kick()                                     # the parent's guard exists

    def child():
        took, reason = _stuck_kick()
        return 0 if reason == IRQ_FAULTS[0] and took < BURST_BOUND else 1
    assert _in_child(child) == 0


# ==================================================== in a worker process

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def _workers_of(p):
    return [c for c in psutil.Process(p.pid).children()
            if "memifx.worker" in " ".join(c.cmdline())]


def test_toggling_attack_on_xconnect_worker(procs, sockdir, toggler):
    """xconnect A <-> B with one worker: a rogue slave on A flips the flag
    of the eventfd the worker kicks, then fills it.  The worker faults the
    link (the rogue gets the reason), is neither stuck nor restarted, and
    B's good peer, then a good slave on A, are served by the same worker."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = procs.start(MEMIFX + ["xconnect",
                              "socket=%s,role=master,name=A,rx-mode=interrupt" % a,
                              "socket=%s,role=master,name=B,rx-mode=interrupt" % b,
                              "--workers", "1"])
    read_until(p, "xconnect A <-> B")
    sb = memifx.Interface(socket=b, name="sb").connect()
    sa = None
    try:
        assert sb.wait_connected(5)
        read_until(p, "B: link up")
        (worker,) = _workers_of(p)
        r = RogueSlave.connect(a)
        try:
            r.handshake()
            read_until(p, "A: link up")
            ring_ = r.m2s[0]
            efd = r.efds[1]                           # M2S: the worker kicks it
            ring_.flags = 0
            r.post(32)
            toggler.torment(efd)
            sent = cleared = 0
            end = time.monotonic() + 20
            while sent < 300 or not cleared:
                assert time.monotonic() < end, (sent, cleared)
                assert sb.tx_burst([FRAME]) == 1
                sent += 1
                assert wait_for(lambda: ring_.tail == sent, 5, 0.0002), "worker stopped"
                r.post(1)
                cleared += not fcntl.fcntl(efd, fcntl.F_GETFL) & os.O_NONBLOCK
            kicks = counter(efd)
            assert 0 < kicks <= sent                  # they arrived, the link is up
            os.write(efd, FULL)
            t = time.monotonic()
            assert sb.tx_burst([FRAME]) == 1
            assert r.outcome() in IRQ_FAULTS
            took = time.monotonic() - t
            toggler.torment()
        finally:
            r.close()
        read_until(p, "A: link down")
        print("worker: %d frames through a flipping eventfd, fault after %.1f ms"
              % (sent, took * 1e3))
        assert [w.pid for w in _workers_of(p)] == [worker.pid]     # never restarted
        sa = memifx.Interface(socket=a, name="sa").connect()
        assert sa.wait_connected(5)
        read_until(p, "A: link up")
        f = [frame(i, 100) for i in range(200)]
        assert pump(sa, sb, f, window=48) == f
        g = [frame(1000 + i, 100) for i in range(200)]
        assert pump(sb, sa, g, window=48) == g
        assert [w.pid for w in _workers_of(p)] == [worker.pid]
    finally:
        if sa is not None:
            sa.close()
        sb.close()
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    assert p.returncode == 0, out
    assert "restarts: 0" in out, out
