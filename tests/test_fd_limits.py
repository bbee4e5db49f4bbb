"""fd numbers and fd counts that select() and SCM_RIGHTS cannot take.

- Waits on fds numbered 1024 or above (select() raises for them): an idle
  interrupt-mode forwarder sleeps instead of spinning, in its own process and
  in a worker, and a pool whose worker sockets are up there still hears them.
- A worker attach that needs more fds than one message passes (SCM_MAX_FD,
  253): 255 queues on one worker attach and carry traffic; a handoff that
  fails (the worker out of fds) fails the link with a reason, and the link
  is served once the worker can take it again.
- The worker channel: messages in parts, MSG_CTRUNC an error, received fds
  close-on-exec, fds of a message that arrived incomplete closed.
"""
import fcntl
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

import memifx
from conftest import wait_for
from memifx.fdwait import wait_readable
from memifx.workers import protocol as wire
from rogue import open_fds
from test_link import frame, pump

HIGHFD = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "highfd.py")]
MEMIFX_MAIN = "memifx.cli.main"


def fd_numbers(pid, kind):
    """fd numbers of process ``pid`` whose /proc link starts with ``kind``."""
    base = "/proc/%d/fd" % pid
    out = []
    for name in os.listdir(base):
        try:
            if os.readlink(os.path.join(base, name)).startswith(kind):
                out.append(int(name))
        except OSError:
            pass                        # closed meanwhile
    return out


def fd_links(pid):
    """{fd: what it is} of process ``pid``."""
    base = "/proc/%d/fd" % pid
    out = {}
    for name in os.listdir(base):
        try:
            out[int(name)] = os.readlink(os.path.join(base, name))
        except OSError:
            pass
    return out


def settled_fds(pid, still=0.3, timeout=10):
    """fd_links(pid) once it stayed the same for ``still`` seconds."""
    end = time.monotonic() + timeout
    last = fd_links(pid)
    while time.monotonic() < end:
        time.sleep(still)
        now = fd_links(pid)
        if now == last:
            return now
        last = now
    raise AssertionError("fds of %d still changing: %s" % (pid, last))


def cpu_seconds(pid):
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def cpu_share(pid, seconds):
    """The share of one CPU the process and its children use over ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def workers_of(p):
    return [c for c in psutil.Process(p.pid).children()
            if "memifx.worker" in " ".join(c.cmdline())]


def finish(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=30)
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture
def many_fds():
    """This process may open a few thousand fds (restored after)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


# ------------------------------------------------------------- fdwait

@pytest.mark.timeout(30)
def test_wait_readable_on_an_fd_above_1024(many_fds):
    r, w = os.pipe()
    high = 1500
    try:
        os.dup2(r, high)
        assert wait_readable([high], 0) == []
        os.write(w, b"x")
        assert wait_readable([r, high], 1) == [r, high]
    finally:
        for fd in (r, w, high):
            os.close(fd)


@pytest.mark.timeout(30)
def test_wait_readable_keeps_sub_millisecond_timeouts():
    """A rate-limited sender sleeps tens of microseconds: poll()'s
    millisecond timeout would round that up to 1 ms."""
    r, w = os.pipe()
    try:
        took = []
        for _ in range(20):
            t0 = time.perf_counter()
            assert wait_readable([r], 100e-6) == []
            took.append(time.perf_counter() - t0)
        assert 100e-6 <= min(took) < 800e-6, took
    finally:
        os.close(r)
        os.close(w)


@pytest.mark.timeout(30)
def test_wait_readable_reports_a_closed_fd_and_refuses_a_negative_one():
    r, w = os.pipe()
    os.close(r)
    os.close(w)
    t0 = time.monotonic()
    assert wait_readable([r], 5) == [r]         # not open: look again, don't sleep
    assert time.monotonic() - t0 < 1
    with pytest.raises(ValueError):
        wait_readable([-1], 0)


@pytest.mark.timeout(30)
def test_wait_readable_runs_signal_handlers_and_waits_on():
    r, w = os.pipe()
    seen = []
    old = signal.signal(signal.SIGALRM, lambda *a: seen.append(1))
    try:
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        t0 = time.monotonic()
        assert wait_readable([r], 0.3) == []
        assert seen and time.monotonic() - t0 >= 0.29

        def boom(*a):
            raise KeyboardInterrupt
        signal.signal(signal.SIGALRM, boom)
        signal.setitimer(signal.ITIMER_REAL, 0.05)
        with pytest.raises(KeyboardInterrupt):
            wait_readable([r], 5)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        os.close(r)
        os.close(w)


# ------------------------------------------------------ worker channel

def _eventfds(n):
    return [os.eventfd(0, os.EFD_CLOEXEC) for _ in range(n)]


@pytest.mark.timeout(30)
def test_channel_carries_any_number_of_fds_and_bytes(many_fds):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sent = _eventfds(600)                       # > 2 x SCM_MAX_FD
    msg = {"op": "attach", "blob": "z" * 100000}    # > 3 parts of text
    try:
        wire.send(a, msg, sent)
        got, fds = wire.recv(b)
        assert got == msg and len(fds) == len(sent)
        for s, r in zip(sent, fds):         # the same objects, in order
            assert os.fstat(s).st_ino == os.fstat(r).st_ino
            assert fcntl.fcntl(r, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
        for fd in fds:
            os.close(fd)
    finally:
        for fd in sent:
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_channel_drops_a_message_its_sender_aborted(many_fds):
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = _eventfds(300)
    bad = os.eventfd(0)
    os.close(bad)                               # the second part fails: EBADF
    base = open_fds()
    try:
        with pytest.raises(OSError):
            wire.send(a, {"op": "attach"}, sent + [bad])
        wire.send(a, {"op": "next"}, sent[:1])
        with pytest.raises(wire.HandoffError):
            wire.recv(b)                        # its first part, then the abort
        assert open_fds() == base               # what did arrive is closed
        got, fds = wire.recv(b)
        assert got == {"op": "next"} and len(fds) == 1
        os.close(fds[0])
    finally:
        for fd in sent:
            os.close(fd)
        a.close()
        b.close()


@pytest.mark.timeout(30)
def test_channel_fds_cut_short_are_an_error_and_closed(many_fds):
    """MSG_CTRUNC (here: the receiver is out of fds) is an error that
    still names the message, and nothing that did arrive stays open."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    sent = _eventfds(40)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        wire.send(a, {"op": "attach", "key": "A", "gen": 3}, sent)
        base = open_fds()
        taken = {int(n) for n in os.listdir("/proc/self/fd")}
        limit, free = 0, 0
        while free < 10:                        # room for 10 of the 40
            free += limit not in taken
            limit += 1
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        try:
            with pytest.raises(wire.HandoffError) as e:
                wire.recv(b)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        assert "MSG_CTRUNC" in e.value.reason
        assert e.value.msg == {"op": "attach", "key": "A", "gen": 3}
        assert open_fds() == base
    finally:
        for fd in sent:
            os.close(fd)
        a.close()
        b.close()


# ---------------------------------------------------- whole processes

def start_xconnect(procs, a, b, workers, *extra, queues=1, ring=1024, floor=1100,
                   role="master"):
    spec = "socket=%s,role=" + role + ",name=%s,queues=%d,ring-size=%d,rx-mode=interrupt"
    qa, qb = queues if isinstance(queues, tuple) else (queues, queues)
    p = procs.start(HIGHFD + ["--floor", str(floor), MEMIFX_MAIN, "xconnect",
                              spec % (a, "A", qa, ring), spec % (b, "B", qb, ring),
                              "--workers", str(workers), "--json"] + list(extra),
                    stdout=subprocess.PIPE, stderr=None)
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 15)
    if workers:
        assert wait_for(lambda: len(workers_of(p)) == workers, 10)
    return p


@pytest.mark.timeout(90)
@pytest.mark.parametrize("role,workers", [("master", 0), ("master", 1), ("slave", 0),
                                          ("slave", 1)])
def test_interrupt_mode_with_fds_above_1024_sleeps_and_forwards(procs, sockdir, role, workers):
    """Every fd of the forwarder is 1024 or above (the worker's control
    socket keeps its number): idle, it sleeps (it spun at 100 % when
    select() failed); traffic crosses; the pool hears its workers."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    peer = "slave" if role == "master" else "master"
    sa = memifx.Interface(socket=a, role=peer, name="sa", rx_queues=2, tx_queues=2)
    sb = memifx.Interface(socket=b, role=peer, name="sb", rx_queues=2, tx_queues=2)
    if role == "master":
        p = start_xconnect(procs, a, b, workers, queues=2)
        sa.connect()
        sb.connect()
    else:
        sa.connect()
        sb.connect()
        p = start_xconnect(procs, a, b, workers, queues=2, role="slave")
    try:
        assert sa.wait_connected(10) and sb.wait_connected(10)
        evs = fd_numbers(p.pid, "anon_inode:[eventfd]")
        assert len(evs) >= 8 and min(evs) >= 1024, evs
        if workers:
            (w,) = workers_of(p)
            assert max(fd_numbers(w.pid, "socket:")) >= 1024
            assert max(fd_numbers(p.pid, "socket:")) >= 1024
        # start-up (a worker's imports, attaches) is over once half a second
        # is quiet; a spinning forwarder never gets there
        wait_for(lambda: cpu_share(p.pid, 0.5) < 0.05, 5, 0)
        share = cpu_share(p.pid, 2)
        print("\nidle %s, fds >= 1024, %d workers: %.2f %% CPU" % (role, workers, share * 100))
        assert share < 0.05
        for q in (0, 1):
            f = [frame(q * 10000 + i, 64) for i in range(300)]
            assert pump(sa, sb, f, tx_queue=q, rx_queues=(q,)) == f
            g = [frame(50000 + q * 10000 + i, 100) for i in range(200)]
            assert pump(sb, sa, g, tx_queue=q, rx_queues=(q,)) == g
    finally:
        sa.close()
        sb.close()
    result = finish(p)
    assert result["directions"]["A->B"]["packets"] == 600     # the workers' counters arrived
    assert result["directions"]["B->A"]["packets"] == 400
    if workers:
        assert result["workers"] == {"count": 1, "restarts": 0}


QUEUES = 255


@pytest.mark.timeout(120)
def test_255_queues_on_one_worker_attach_and_carry_traffic(procs, sockdir, many_fds):
    """One worker takes 2 x 255 queues of each link: ~1000 fds, four
    messages' worth of SCM_RIGHTS (more in one sendmsg is EINVAL, which
    left the link up with nobody serving it)."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start_xconnect(procs, a, b, 1, queues=QUEUES, ring=16, floor=0)
    kw = dict(rx_queues=QUEUES, tx_queues=QUEUES, ring_size=16)
    sa = memifx.Interface(socket=a, name="sa", **kw).connect()
    sb = memifx.Interface(socket=b, name="sb", **kw).connect()
    try:
        assert sa.wait_connected(20) and sb.wait_connected(20)
        assert sa.info()["rx_queues"] == QUEUES
        (w,) = workers_of(p)
        # the worker holds every eventfd of both links
        assert wait_for(lambda: len(fd_numbers(w.pid, "anon_inode:[eventfd]")) == 4 * QUEUES, 10)
        for q in (0, 1, 128, 253, 254):
            f = [frame(q * 1000 + i, 64) for i in range(40)]
            assert pump(sa, sb, f, tx_queue=q, rx_queues=(q,), window=8) == f
            g = [frame(500000 + q * 1000 + i, 64) for i in range(40)]
            assert pump(sb, sa, g, tx_queue=q, rx_queues=(q,), window=8) == g
    finally:
        sa.close()
        sb.close()
    result = finish(p)
    assert result["workers"] == {"count": 1, "restarts": 0}
    assert result["directions"]["A->B"]["packets"] == 200
    assert result["directions"]["B->A"]["packets"] == 200


@pytest.mark.timeout(120)
def test_a_failed_fd_handoff_fails_the_link_with_a_reason(procs, sockdir, many_fds):
    """The worker cannot take A's ~520 fds (its fd limit): A goes down with
    a reason instead of staying up unserved; B (a few fds) is served all the
    while; the worker lives on and leaks nothing; A is served once the
    worker can take it."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start_xconnect(procs, a, b, 1, queues=(QUEUES, 1), ring=16, floor=0)
    (w,) = workers_of(p)
    base = len(os.listdir("/proc/%d/fd" % w.pid))
    soft, hard = w.rlimit(psutil.RLIMIT_NOFILE)
    w.rlimit(psutil.RLIMIT_NOFILE, (base + 64, hard))
    kw = dict(rx_queues=QUEUES, tx_queues=QUEUES, ring_size=16)
    sb = memifx.Interface(socket=b, name="sb", ring_size=16).connect()
    sa = memifx.Interface(socket=a, name="sa", **kw)
    try:
        assert sb.wait_connected(10)
        assert wait_for(lambda: len(fd_numbers(w.pid, "anon_inode:[eventfd]")) == 2, 10)
        with_b = settled_fds(w.pid)                     # B's link attached
        sa.connect()
        assert wait_for(lambda: "fd handoff failed" in (sa.info()["last_disconnect"] or ""), 20), \
            sa.info()
        assert "MSG_CTRUNC" in sa.info()["last_disconnect"]
        # B is served meanwhile: its frames leave its ring (ring of 16;
        # counted "tx link down" while A is down)
        sent = 0
        for i in range(100):
            sent += sb.tx_burst([frame(i, 64)])
            time.sleep(0.002)
        assert sent == 100 and sb.connected
        assert w.is_running() and workers_of(p) == [w]      # not restarted
        sa.close()
        assert wait_for(lambda: len(fd_links(w.pid)) == len(with_b), 10), \
            "%s\n%s" % (with_b, fd_links(w.pid))
        w.rlimit(psutil.RLIMIT_NOFILE, (soft, hard))
        sa = memifx.Interface(socket=a, name="sa", **kw).connect()
        assert sa.wait_connected(20)
        f = [frame(1000 + i, 64) for i in range(40)]
        assert pump(sa, sb, f, tx_queue=200, rx_queues=(0,), window=8) == f
        g = [frame(2000 + i, 64) for i in range(40)]
        assert pump(sb, sa, g, tx_queue=0, rx_queues=(0,), window=8) == g
    finally:
        sa.close()
        sb.close()
    result = finish(p)
    assert result["workers"] == {"count": 1, "restarts": 0}
    assert result["directions"]["A->B"]["packets"] == 40
    drops = result["directions"]["B->A"]["drops"]
    assert drops["tx link down"] == 100 and sum(drops.values()) == 100

def start_worker(procs):
    """A bare worker process with an xconnect plan, and our end of its socket."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    p = procs.start([sys.executable, "-m", "memifx.workers.loop", str(theirs.fileno())],
                    pass_fds=[theirs.fileno()], stdout=None, stderr=None)
    theirs.close()
    wire.send(ours, {"op": "plan", "worker": 0, "stats": False,
                     "node": "memifx.nodes.xconnect:XConnectNode", "directions": [], "workers": 1, "tx_queues": {},
                     "modes": {"A": ["interrupt"]}, "quiet": 1e-4})
    return p, ours


def next_reply(sock, op, timeout=5):
    """The next message ``op`` from a worker (counters snapshots skipped)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if wait_readable([sock.fileno()], end - time.monotonic()):
            msg, fds = wire.recv(sock)
            for fd in fds:
                os.close(fd)
            if msg is None or msg.get("op") == op:
                return msg
    raise AssertionError("no %r from the worker" % op)


@pytest.mark.timeout(60)
def test_worker_closes_fds_no_message_takes_and_reports_a_short_handoff(procs):
    p, sock = start_worker(procs)
    try:
        next_reply(sock, "counters")            # it has its plan
        base = len(os.listdir("/proc/%d/fd" % p.pid))
        extra = _eventfds(5)
        wire.send(sock, {"op": "report"}, extra)    # a message that takes no fd
        next_reply(sock, "counters")
        assert wait_for(lambda: len(os.listdir("/proc/%d/fd" % p.pid)) == base, 5)
        region = os.memfd_create("r")
        os.ftruncate(region, 4096)
        # an attach announcing a region and a queue, with only the region's fd
        wire.send(sock, {"op": "attach", "key": "A", "gen": 7, "regions": [4096],
                         "queues": [{"kind": "rx"}]}, [region])
        fault = next_reply(sock, "fault")
        assert fault["key"] == "A" and fault["gen"] == 7
        assert "fd handoff incomplete" in fault["reason"]
        assert wait_for(lambda: len(os.listdir("/proc/%d/fd" % p.pid)) == base, 5)
        assert p.poll() is None                 # it serves on
        for fd in extra + [region]:
            os.close(fd)
    finally:
        sock.close()
    p.wait(10)                                  # our end closed: it stops


@pytest.mark.timeout(60)
def test_an_attach_the_main_process_cannot_send_fails_the_link(sockdir, monkeypatch):
    """sendmsg refusing the attach (EINVAL, as for > 253 fds in one message)
    fails that link with the reason; it was swallowed and the link stayed up
    with nobody serving it.  Once the attach goes out, the link is served."""
    import errno
    from memifx.nodes.xconnect import XConnectPool as WorkerPool
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    A = memifx.Interface(socket=a, role="master", name="A")
    B = memifx.Interface(socket=b, role="master", name="B")
    for intf in (A, B):
        intf.set_rx_mode("interrupt")
    real_send, refuse = wire.send, [True]

    def send(sock, msg, fds=()):
        if refuse[0] and msg.get("op") == "attach" and msg.get("key") == "A":
            raise OSError(errno.EINVAL, os.strerror(errno.EINVAL))
        real_send(sock, msg, fds)
    monkeypatch.setattr(wire, "send", send)
    pool = WorkerPool([A, B], [(A, B), (B, A)], 1, None)
    A.connect()
    B.connect()
    sa = memifx.Interface(socket=a, name="sa").connect()
    sb = memifx.Interface(socket=b, name="sb").connect()
    try:
        def reason():
            pool.poll(0.01)
            return sa.info()["last_disconnect"] or ""
        assert wait_for(lambda: "worker 0 attach failed" in reason(), 10), sa.info()
        assert "Invalid argument" in reason()
        assert sb.connected                     # B was attached all along
        refuse[0] = False
        assert wait_for(lambda: pool.poll(0.01) or sa.connected, 10)
        f = [frame(i, 64) for i in range(50)]
        got, end = [], time.monotonic() + 10
        sent = sa.tx_burst(f)
        while len(got) < sent and time.monotonic() < end:
            pool.poll(0.01)
            got += sb.rx_burst()
        assert sent == 50 and got == f
    finally:
        sa.close()
        sb.close()
        A.close()
        B.close()
        pool.stop()
