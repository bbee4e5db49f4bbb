"""Interop with DPDK's net_memif driver, run through dpdk-testpmd.

DPDK's memif was written independently of memifx, so frames surviving a round
trip through it, byte for byte, is the proof that both roles speak memif.
testpmd runs in ``io`` forward mode with a single port: every frame it
receives on queue i goes back out unchanged, in order, on queue i.

CPU budget (2 shared CPUs): testpmd gets ``-l 0,1``, so its one forwarding
lcore busy-polls CPU 1 while the main lcore 0 sleeps; this process polls rx
but sleeps 0.5 ms whenever a poll finds nothing.  Each test starts its own
testpmd (unique --file-prefix, pre-removed socket file), stops it before
closing the memifx side (testpmd may crash when its peer vanishes
mid-forwarding; no test relies on that), and removes /var/run/dpdk/<prefix>
afterwards.  The tests about testpmd's own exit stop it with SIGTERM; at a
test's end it is killed (nothing is asserted about that exit, and a SIGTERM
exit waits out the rest of testpmd's one-second stats sleep).
"""
import os
import random
import shutil
import signal
import subprocess
import threading
import time

import pytest

import memifx
from conftest import read_until, wait_for

if shutil.which("dpdk-testpmd") is None:
    pytest.skip("dpdk-testpmd is not installed", allow_module_level=True)

pytestmark = [pytest.mark.dpdk, pytest.mark.timeout(60)]

RUNTIME_DIR = "/var/run/dpdk"
READY_TOKEN = "Port statistics"     # first stats block: forwarding has started
START_TIMEOUT = 25.0


class PmdPeer:
    """One dpdk-testpmd process with a single net_memif port."""

    def __init__(self, procs, prefix, role, socket, abstract, queues, devargs, eal):
        self.prefix = prefix
        self.role = role
        self.socket = socket
        self.abstract = abstract
        if role == "server" and not abstract:
            try:
                os.unlink(socket)           # a stale file makes the port fail to probe
            except FileNotFoundError:
                pass
        vdev = ["net_memif0", "role=" + role, "socket=" + socket,
                "socket-abstract=" + ("yes" if abstract else "no")]
        devargs.setdefault("id", 0)
        vdev += ["%s=%s" % kv for kv in devargs.items()]
        self.args = (["dpdk-testpmd", "--no-huge", "-m", "128", "--no-pci",
                      "--file-prefix=" + prefix, "-l", "0,1",
                      "--log-level=pmd.net.memif:info"] + list(eal) +
                     ["--vdev=" + ",".join(vdev), "--",
                      "--forward-mode=io", "--auto-start", "--stats-period", "1",
                      "--total-num-mbufs=16384",
                      "--rxq=%d" % queues, "--txq=%d" % queues])
        self.lines = []
        self.reader = None
        self.proc = procs.start(self.args, stdin=subprocess.DEVNULL)

    def _drain(self):
        # Keep reading so the pipe never fills and blocks testpmd's main lcore.
        for line in self.proc.stdout:
            self.lines.append(line)

    def start_reader(self):
        self.reader = threading.Thread(target=self._drain, daemon=True)
        self.reader.start()

    def wait_ready(self, timeout=START_TIMEOUT):
        self.lines.append(read_until(self.proc, READY_TOKEN, timeout))
        self.start_reader()

    def output(self):
        return "".join(self.lines)

    def wait_output(self, token, timeout=START_TIMEOUT):
        """For a peer whose output is already being drained."""
        return wait_for(lambda: any(token in line for line in self.lines), timeout)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10.0):
        """SIGTERM (testpmd stops forwarding, closes its port, exits); SIGKILL
        as a backstop.  Returns the exit status."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        return self.reap()

    def kill(self):
        """SIGKILL, for a test's end."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)
        return self.reap()

    def reap(self):
        """The rest of testpmd's output, read; its exit status."""
        if self.reader is None:
            self.start_reader()
        self.reader.join(5)
        return self.proc.returncode


class Dpdk:
    """Starts testpmd peers and memifx interfaces for one test; at the end it
    kills every testpmd first, then closes the interfaces."""

    def __init__(self, procs, unique):
        self.procs = procs
        self.unique = unique
        self.peers = []
        self.interfaces = []

    def _peer(self, role, socket, abstract, queues, devargs, eal):
        prefix = "%s-%d" % (self.unique, len(self.peers))
        peer = PmdPeer(self.procs, prefix, role, socket, abstract, queues, devargs, eal)
        self.peers.append(peer)
        return peer

    def server(self, socket, abstract=False, queues=1, eal=(), **devargs):
        """A testpmd server (memif master), returned once it forwards."""
        peer = self._peer("server", socket, abstract, queues, devargs, eal)
        peer.wait_ready()
        return peer

    def client(self, socket, abstract=False, queues=1, eal=(), **devargs):
        """A testpmd client (memif slave).  It connects once, at port start
        (it never retries), so the memifx master must already listen; ready
        is the master's wait_connected."""
        peer = self._peer("client", socket, abstract, queues, devargs, eal)
        peer.start_reader()
        return peer

    def interface(self, **kw):
        kw.setdefault("name", "memifx-" + self.unique)
        intf = memifx.Interface(**kw)
        self.interfaces.append(intf)
        return intf.connect()

    def cleanup(self):
        for peer in self.peers:
            peer.kill()
        for intf in self.interfaces:
            intf.close()
        for peer in self.peers:
            shutil.rmtree(os.path.join(RUNTIME_DIR, peer.prefix), ignore_errors=True)
            if peer.role == "server" and not peer.abstract:
                try:
                    os.unlink(peer.socket)
                except FileNotFoundError:
                    pass


@pytest.fixture
def dpdk(procs, unique):
    d = Dpdk(procs, unique)
    yield d
    d.cleanup()


# ------------------------------------------------------------------ helpers

def make_frames(n, seed, tag=0, sizes=(60, 1518)):
    """n frames of random bytes with random lengths in ``sizes`` (both ends
    included, and both present); each starts with its tag and number."""
    rng = random.Random(seed)
    lo, hi = sizes
    frames = []
    for i in range(n):
        size = lo if i == 0 else hi if i == 1 else rng.randint(lo, hi)
        head = bytes([tag]) + i.to_bytes(4, "big")
        frames.append(head + rng.randbytes(size - len(head)))
    return frames


def exchange(intf, frames_by_queue, timeout=20.0):
    """Send each queue's frames on that tx queue and collect what comes back
    on the rx queue of the same number, until every queue has as many frames
    as it sent (or the timeout).  Sleeps briefly when a round does nothing."""
    queues = list(frames_by_queue)
    sent = {q: 0 for q in queues}
    got = {q: [] for q in queues}
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        progress = False
        for q in queues:
            frames = frames_by_queue[q]
            if sent[q] < len(frames):
                n = intf.tx_burst(frames[sent[q]:sent[q] + 32], queue=q)
                sent[q] += n
                progress |= n > 0
            rx = intf.rx_burst(queue=q)
            got[q].extend(rx)
            progress |= bool(rx)
        if all(len(got[q]) >= len(frames_by_queue[q]) for q in queues):
            break
        if not progress:
            time.sleep(0.0005)
    return got


def echo(intf, frames, timeout=20.0):
    return exchange(intf, {0: frames}, timeout)[0]


def assert_same(got, want, peer):
    assert len(got) == len(want), "sent %d frames, got %d back\n%s" % (
        len(want), len(got), peer.output()[-3000:])
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, "frame %d differs (%d vs %d bytes)" % (i, len(g), len(w))


def link_up(intf, peer, timeout=15.0):
    """The link is up and testpmd forwards.  A client's link comes up during
    its port start, before forwarding starts, and testpmd then drains and
    frees whatever its rx queues hold for up to a second: frames sent in that
    window vanish.  So wait for its first stats block as well."""
    assert intf.wait_connected(timeout), "no link: %s\n%s" % (
        intf.info(), peer.output()[-3000:])
    if peer.role == "client":
        assert peer.wait_output(READY_TOKEN), "testpmd never forwarded:\n" + \
            peer.output()[-3000:]


# ------------------------------------------------- (1) memifx slave, echo

@pytest.mark.parametrize("abstract", [False, True], ids=["fs-socket", "abstract-socket"])
def test_slave_echo_through_testpmd_server(dpdk, sock, unique, abstract):
    if abstract:
        # DPDK uses the socket= string itself as the abstract name (no
        # leading NUL in the string, no padding): '@' + that string in memifx.
        dpdk_socket = "/memifx-" + unique
        our_socket = "@" + dpdk_socket
    else:
        dpdk_socket = our_socket = sock
    peer = dpdk.server(dpdk_socket, abstract=abstract)
    if abstract:
        with open("/proc/net/unix") as f:
            names = [line.split()[-1] for line in f if len(line.split()) >= 8]
        assert "@" + dpdk_socket in names
        assert not os.path.exists(dpdk_socket)
    else:
        assert os.path.exists(sock)
    intf = dpdk.interface(socket=our_socket, role="slave")
    link_up(intf, peer)
    info = intf.info()
    assert info["rx_queues"] == info["tx_queues"] == 1
    frames = make_frames(400, seed=1)
    assert_same(echo(intf, frames), frames, peer)
    st = intf.stats()
    assert st["tx"][0]["packets"] == st["rx"][0]["packets"] == len(frames)
    assert st["rx"][0]["bytes"] == sum(map(len, frames))


# ------------------------------------------------ (2) memifx master, echo

@pytest.mark.parametrize("zero_copy", [False, True], ids=["copy", "zero-copy"])
def test_master_echo_through_testpmd_client(dpdk, sock, zero_copy):
    intf = dpdk.interface(socket=sock, role="master")
    if zero_copy:
        peer = dpdk.client(sock, eal=["--single-file-segments"], **{"zero-copy": "yes"})
    else:
        peer = dpdk.client(sock)
    link_up(intf, peer)
    info = intf.info()
    if zero_copy:
        # The DPDK client exports its mempool memory as region 1 and up.
        assert len(info["regions"]) >= 2
        assert info["regions"][1] >= 64 << 20
    frames = make_frames(400, seed=2)
    assert_same(echo(intf, frames), frames, peer)


def test_master_abstract_socket_with_testpmd_client(dpdk, unique):
    """testpmd's default (socket-abstract=yes) against a memifx '@' master."""
    name = "/memifx-" + unique
    intf = dpdk.interface(socket="@" + name, role="master")
    peer = dpdk.client(name, abstract=True)
    link_up(intf, peer)
    frames = make_frames(100, seed=3)
    assert_same(echo(intf, frames), frames, peer)


# ----------------------------------------------------------- (3) secrets

def test_master_secret_right_and_wrong(dpdk, sock):
    intf = dpdk.interface(socket=sock, role="master", secret="open sesame")
    peer = dpdk.client(sock, secret="open sesame")
    link_up(intf, peer)
    frames = make_frames(50, seed=4)
    assert_same(echo(intf, frames), frames, peer)
    peer.stop()
    assert wait_for(lambda: not intf.connected, 10)

    # A wrong secret: the master refuses INIT, counts the precise cause,
    # and tells the peer only that it is not allowed (a stranger must not
    # learn whether a secret is set); the interface's own state is untouched.
    last = intf.info()["last_disconnect"]
    bad = dpdk.client(sock, secret="open barley")
    assert wait_for(lambda: intf.info()["refused"].get("incorrect secret"), 15), \
        "%s\n%s" % (intf.info(), bad.output()[-3000:])
    assert not intf.connected and intf.info()["last_disconnect"] == last
    # The DPDK client reads our DISCONNECT and logs its reason.
    assert bad.wait_output("Disconnect received: peer not allowed", 10), bad.output()[-3000:]
    assert bad.alive()
    bad.stop()

    # No secret at all.
    none = dpdk.client(sock)
    assert wait_for(lambda: intf.info()["refused"].get("secret required"), 15), \
        "%s\n%s" % (intf.info(), none.output()[-3000:])
    assert not intf.connected and intf.info()["last_disconnect"] == last
    assert none.wait_output("Disconnect received: peer not allowed", 10), none.output()[-3000:]
    none.stop()


def test_slave_secret_right_and_wrong(dpdk, sock):
    peer = dpdk.server(sock, secret="open sesame")
    # The DPDK server answers INIT with a DISCONNECT in its own wording.
    for secret, reason in (("open barley", "Incorrect secret"), (None, "Secret required")):
        wrong = dpdk.interface(socket=sock, role="slave", secret=secret, name="wrong")
        assert wait_for(lambda: wrong.info()["last_disconnect"] is not None, 15)
        assert wrong.info()["last_disconnect"] == reason
        assert not wrong.connected
        wrong.close()

    right = dpdk.interface(socket=sock, role="slave", secret="open sesame", name="right")
    link_up(right, peer)
    frames = make_frames(50, seed=5)
    assert_same(echo(right, frames), frames, peer)


# ---------------------------------------------------- (4) two queue pairs

def _two_queue_echo(intf, peer):
    frames = {q: make_frames(300, seed=10 + q, tag=q) for q in (0, 1)}
    got = exchange(intf, frames)
    for q in (0, 1):
        # io mode: rx queue q carries exactly what went out on tx queue q
        assert_same(got[q], frames[q], peer)


def test_slave_two_queue_pairs(dpdk, sock):
    peer = dpdk.server(sock, queues=2)
    intf = dpdk.interface(socket=sock, role="slave", rx_queues=2, tx_queues=2)
    link_up(intf, peer)
    info = intf.info()
    assert info["rx_queues"] == info["tx_queues"] == 2
    _two_queue_echo(intf, peer)


def test_master_two_queue_pairs(dpdk, sock):
    intf = dpdk.interface(socket=sock, role="master", rx_queues=2, tx_queues=2)
    peer = dpdk.client(sock, queues=2)
    link_up(intf, peer)
    info = intf.info()
    assert info["rx_queues"] == info["tx_queues"] == 2
    _two_queue_echo(intf, peer)


# ------------------------------------------- (5) chains over 512-byte buffers

def test_slave_chained_frames_512_byte_buffers(dpdk, sock):
    peer = dpdk.server(sock)
    intf = dpdk.interface(socket=sock, role="slave", buffer_size=512)
    link_up(intf, peer)
    frames = make_frames(200, seed=6) + make_frames(100, seed=7, sizes=(1518, 1518))
    # 1518 bytes take 3 buffers of 512; a 512-byte frame exactly one.
    frames += make_frames(20, seed=8, sizes=(512, 512)) + make_frames(20, seed=9, sizes=(513, 513))
    assert_same(echo(intf, frames), frames, peer)


def test_master_chained_frames_testpmd_bsize_512(dpdk, sock):
    intf = dpdk.interface(socket=sock, role="master")
    peer = dpdk.client(sock, bsize=512)
    link_up(intf, peer)
    frames = make_frames(200, seed=11) + make_frames(100, seed=12, sizes=(1518, 1518))
    frames += make_frames(20, seed=13, sizes=(512, 512)) + make_frames(20, seed=14, sizes=(513, 513))
    assert_same(echo(intf, frames), frames, peer)


# --------------------------------------------- (6) testpmd goes away, returns

def test_slave_sees_sigterm_and_reconnects(dpdk, sock):
    peer = dpdk.server(sock)
    intf = dpdk.interface(socket=sock, role="slave")
    link_up(intf, peer)
    frames = make_frames(100, seed=15)
    assert_same(echo(intf, frames), frames, peer)

    peer.stop()
    assert wait_for(lambda: not intf.connected, 10)
    info = intf.info()
    assert info["last_disconnect"] == "peer closed the connection", info
    assert info["link_flaps"] == 1
    assert intf.tx_burst(frames[:1]) == 0 and intf.rx_burst() == []

    fresh = dpdk.server(sock)
    link_up(intf, fresh, timeout=20)
    frames = make_frames(100, seed=16)
    assert_same(echo(intf, frames), frames, fresh)
    assert intf.stats()["rx"][0]["packets"] == 200


def test_master_sees_sigterm_and_takes_new_client(dpdk, sock):
    intf = dpdk.interface(socket=sock, role="master")
    peer = dpdk.client(sock)
    link_up(intf, peer)
    frames = make_frames(100, seed=17)
    assert_same(echo(intf, frames), frames, peer)

    peer.stop()
    assert wait_for(lambda: not intf.connected, 10)
    info = intf.info()
    assert info["last_disconnect"] == "peer closed the connection", info
    assert info["state"] == "listening"

    fresh = dpdk.client(sock)
    link_up(intf, fresh)
    frames = make_frames(100, seed=18)
    assert_same(echo(intf, frames), frames, fresh)
