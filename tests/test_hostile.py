"""memifx against a hostile peer (MEMIF.md, "The peer is untrusted").

A rogue slave (tests/rogue.py: plain sockets, memfd, mmap, eventfd) talks to a
memifx master in this process, and a rogue master to a memifx slave.  Each
test sends one bad thing and checks that memifx (a) neither crashes nor
hangs, (b) says why (the DISCONNECT string the rogue gets, the interface's
``last_disconnect``, or a drop counted by reason in ``stats()``), and (c)
afterwards serves a well-behaved peer with traffic crossing both ways.

Nothing here busy-polls: memifx masters listen, rx loops sleep between polls.
"""
import array
import fcntl
import gc
import os
import socket
import struct
import sys
import threading
import time

import pytest

import memifx
from memifx import wire
import conftest
from conftest import cross, frames, read_until, receive, wait_for
from rogue import (DESC_NEXT, RogueMaster, RogueSlave, Scribbler, eventfd, memfd,
                   memfd_maps, open_fds, raw, ring_bytes)

pytestmark = pytest.mark.timeout(30)

SECRET = b"s3cret"
RING_SIZE = 64
COUNTER_FAULT = "ring counter moved past the ring"
POSTED_FAULT = "posted buffer outside memory region"
IRQ_FAULT = "ring interrupt fd made blocking"


def drops(intf, kind="rx", queue=0):
    return intf.stats()[kind][queue]["drops"]


def last_reason(intf):
    return intf.info()["last_disconnect"]


# ------------------------------------------------------------------ peers

@pytest.fixture
def master(abstract_sock):
    """A memifx master (id 0, two queues each way) and, on the same socket,
    one that wants a secret (id 1)."""
    m = memifx.Interface(socket=abstract_sock, id=0, role="master", name="mx-master",
                         rx_queues=2, tx_queues=2).connect()
    m1 = memifx.Interface(socket=abstract_sock, id=1, role="master", name="mx-secret",
                          secret=SECRET).connect()
    m.secret_intf = m1
    yield m
    m.close()
    m1.close()


def serves_good_slave(master, id=0, secret=None, nq=None):
    """(c) for the master: a normal memifx slave connects, traffic crosses."""
    target = master if id == 0 else master.secret_intf
    assert target.id == id
    nq = nq or target.rx_queues
    conftest.serves_good_slave(target, ring_size=RING_SIZE, secret=secret,
                               rx_queues=nq, tx_queues=nq)


def refused(rogue, reason, intf=None, prefix=False):
    """(b): the rogue gets DISCONNECT with ``reason``, then EOF; the memifx
    interface (if the rogue got as far as one) records the same reason."""
    got = rogue.outcome()
    if prefix:
        assert got is not None and got.startswith(reason), got
    else:
        assert got == reason
    assert rogue.is_closed()
    if intf is not None:
        assert wait_for(lambda: last_reason(intf) == got, 5), intf.info()
        assert not intf.connected
    return got


def rogue_slave(master, init=True, **kw):
    r = RogueSlave.connect(master.socket)
    if init:
        r.init(**kw)
        r.ack()
    return r


def settle(before_fds, before_maps=None, timeout=3.0):
    """Wait for the control loop to close and unmap what it was given."""
    def ok():
        gc.collect()
        return open_fds() <= before_fds and (before_maps is None or
                                             memfd_maps() <= before_maps)
    assert wait_for(ok, timeout, 0.02), (open_fds(), before_fds, memfd_maps(), before_maps)


# ============================================== rogue slave vs memifx master

def test_rogue_is_sane(master):
    """The rogue's correct handshake and data path work: the bad ones below
    differ from it in one thing each."""
    with rogue_slave(master, init=False) as r:
        assert r.hello.max_s2m_ring == 1 and r.hello.max_m2s_ring == 1
        assert r.hello.max_log2_ring_size == 14
        r.handshake(n_s2m=2, n_m2s=2)
        assert master.wait_connected(5)
        r.send_frame(b"from rogue" * 6)
        assert receive(master, 1) == [b"from rogue" * 6]
        assert r.s2m[0].tail == 1
        r.post(4)
        sent = frames(3, 700) + [b"z" * 5000]             # the last one is a chain
        assert master.tx_burst(sent) == 3
        assert master.tx_burst(sent[3:]) == 0               # needs 3 buffers, 1 left
        r.post(4)
        assert master.tx_burst(sent[3:]) == 1
        assert r.take() == sent
    assert wait_for(lambda: last_reason(master) == "peer closed the connection", 5)
    serves_good_slave(master)


@pytest.mark.parametrize("size", [1, 2, 64, 127, 129, 4096])
@pytest.mark.parametrize("after_init", [False, True], ids=["before-init", "after-init"])
def test_wrong_message_size(master, size, after_init):
    with rogue_slave(master, init=after_init) as r:
        r.send_raw(raw(wire.INIT if not after_init else wire.ADD_REGION, size=size))
        refused(r, "invalid message size", master if after_init else None, prefix=True)
    serves_good_slave(master)


@pytest.mark.parametrize("after_init", [False, True], ids=["before-init", "after-init"])
def test_zero_length_message(master, after_init):
    """An empty SEQPACKET record reads like EOF, but the peer is still there:
    it is a message of the wrong size (regression: "peer closed the
    connection", and no DISCONNECT)."""
    with rogue_slave(master, init=after_init) as r:
        r.send_raw(b"")
        refused(r, "invalid message size 0", master if after_init else None)
    serves_good_slave(master)


def test_eof_is_a_normal_link_down(master):
    with rogue_slave(master) as r:
        r.send_raw(b"")                 # an empty record, then EOF right away
        r.sock.shutdown(socket.SHUT_WR)
        assert r.outcome() in (None, "invalid message size 0")
    assert wait_for(lambda: last_reason(master) in ("peer closed the connection",
                                                    "invalid message size 0"))
    with rogue_slave(master) as r:
        pass
    assert wait_for(lambda: last_reason(master) == "peer closed the connection")
    serves_good_slave(master)


def test_fd_without_payload(master):
    before = open_fds()
    with rogue_slave(master) as r:
        fd = memfd(4096)
        r.send_raw(b"", [fd])
        os.close(fd)
        refused(r, "invalid message size 0", master)
    settle(before)
    serves_good_slave(master)


@pytest.mark.parametrize("msg_type", [0, 9, 0x0101, 0xFFFF])
def test_unknown_type(master, msg_type):
    with rogue_slave(master, init=False) as r:
        r.send_raw(raw(msg_type, b"\x01" * 40))
        refused(r, "unknown message type %d" % msg_type)
    with rogue_slave(master) as r:
        r.send_raw(raw(msg_type))
        refused(r, "unknown message type %d" % msg_type, master)
    serves_good_slave(master)


@pytest.mark.parametrize("first", ["ack", "hello", "add_region", "add_ring", "connect",
                                   "connected"])
def test_message_before_init(master, first):
    before = open_fds()
    with rogue_slave(master, init=False) as r:
        if first == "ack":
            r.send(wire.Ack())
        elif first == "hello":
            r.send(r.hello)
        elif first == "add_region":
            r.add_region(0, 4096)
        elif first == "add_ring":
            r.add_ring(0)
        elif first == "connect":
            r.send(wire.Connect(if_name="x"))
        else:
            r.send(wire.Connected(if_name="x"))
        refused(r, "message before INIT")
    settle(before)
    assert last_reason(master) is None          # never got as far as an interface
    serves_good_slave(master)


@pytest.mark.parametrize("init,reason", [
    (dict(version=0x0100), "unsupported version"),
    (dict(version=0x0300), "unsupported version"),
    (dict(version=0), "unsupported version"),
    (dict(id=7), "peer not allowed"),                   # unmatched interface id
    (dict(id=0xFFFFFFFF), "peer not allowed"),
    (dict(mode=1), "mode mismatch"),
    (dict(mode=200), "mode mismatch"),
    (dict(id=1), "peer not allowed"),                   # secret required
    (dict(id=1, secret=b"wrong"), "peer not allowed"),  # incorrect secret
    (dict(id=1, secret=SECRET + b"x"), "peer not allowed"),
    (dict(id=1, secret=SECRET[:-1]), "peer not allowed"),
], ids=lambda v: v if isinstance(v, str) else "-".join("%s=%s" % i for i in v.items()))
def test_init_refused(master, init, reason):
    with rogue_slave(master, init=False) as r:
        r.init(**init)
        refused(r, reason)
    # only a peer that authenticated (here: mode mismatch on the open id 0)
    # is recorded on the interface it asked for; a stranger changes nothing
    target = master.secret_intf if init.get("id") == 1 else master
    recorded = reason if reason == "mode mismatch" else None
    assert wait_for(lambda: last_reason(target) == recorded, 2)
    serves_good_slave(master)
    serves_good_slave(master, id=1, secret=SECRET)


def test_secret_field_without_nul(master):
    """24 bytes of secret, no NUL: read at most the field, never past it."""
    with rogue_slave(master, init=False) as r:
        r.send_raw(struct.pack("<HHIB24s32s", wire.INIT, wire.VERSION, 1, 0,
                               SECRET + b"A" * 18, b"N" * 32).ljust(128, b"\0"))
        refused(r, "peer not allowed")
    assert master.secret_intf.info()["refused"] == {"incorrect secret": 1}
    serves_good_slave(master, id=1, secret=SECRET)


def test_already_connected(master):
    good = memifx.Interface(socket=master.socket, id=0, role="slave", name="good-slave",
                            ring_size=RING_SIZE).connect()
    try:
        assert good.wait_connected(5) and wait_for(lambda: master.connected)
        with rogue_slave(master, init=False) as r:
            r.init(id=0)
            refused(r, "already connected")
        assert master.connected and good.connected
        cross(good, master, tag=3)
        cross(master, good, tag=4)
    finally:
        good.close()
    assert wait_for(lambda: not master.connected)
    # an interface in the middle of a handshake is taken too
    with rogue_slave(master) as first:
        with rogue_slave(master, init=False) as second:
            second.init(id=0)
            refused(second, "already connected")
        first.add_region(0, 1 << 16)
        first.ack()
    assert wait_for(lambda: last_reason(master) == "peer closed the connection")
    serves_good_slave(master)


# ---------------------------------------------------------------- ADD_REGION

def _pipe():
    r, w = os.pipe()
    os.close(w)
    return r


def _sealed_for_write():
    fd = memfd(1 << 16)
    fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE)
    return fd


@pytest.mark.parametrize("case,reason", [
    ("no-fd", "missing memory region fd"),
    ("index-1-first", "unexpected region index"),
    ("index-256", "too many regions"),
    ("index-65535", "too many regions"),
    ("larger-than-memfd", "memory region fd smaller than announced (4096 < 8192)"),
    ("pipe", "memory region fd is not a regular file"),
    ("eventfd", "memory region fd is not a regular file"),
    ("socket", "memory region fd is not a regular file"),
    ("size-0", "invalid region size 0"),
    ("size-over-4G", "invalid region size %d" % ((1 << 32) + 4096)),
    ("size-u64-max", "invalid region size %d" % ((1 << 64) - 1)),
    ("write-sealed", "cannot map memory region"),
    ("read-only", "cannot map memory region"),
    ("second-wrong-index", "unexpected region index"),
])
def test_add_region_refused(master, case, reason):
    before_fds, before_maps = open_fds(), memfd_maps()
    with rogue_slave(master) as r:
        fd, size, index = None, 1 << 16, 0
        if case == "no-fd":
            fd = -1
        elif case == "index-1-first":
            index = 1
        elif case == "index-256":
            index = 256
        elif case == "index-65535":
            index = 65535
        elif case == "larger-than-memfd":
            r.add_region(0, 8192, fd_size=4096)
            size = None
        elif case == "pipe":
            fd = _pipe()
        elif case == "eventfd":
            fd = eventfd()
        elif case == "socket":
            fd = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM).detach()
        elif case == "size-0":
            size = 0
        elif case == "size-over-4G":
            r.add_region(0, (1 << 32) + 4096, fd_size=(1 << 32) + 4096)
            size = None
        elif case == "size-u64-max":
            r.add_region(0, (1 << 64) - 1, fd_size=4096)
            size = None
        elif case == "write-sealed":
            fd = _sealed_for_write()
        elif case == "read-only":          # the same memfd, opened read-only
            rw = memfd(size)
            fd = os.open("/proc/self/fd/%d" % rw, os.O_RDONLY)
            os.close(rw)
        elif case == "second-wrong-index":
            r.add_region(0, size)
            r.ack()
            index = 2
        if size is not None:
            r.add_region(index, size, fd=fd)
            if fd not in (None, -1):
                os.close(fd)
        refused(r, reason, master, prefix=True)
    settle(before_fds, before_maps)
    serves_good_slave(master)


def test_unsealed_region_gets_sealed(master):
    """A memfd that allows sealing but is not sealed: the master seals it
    against shrinking itself before mapping (no SIGBUS later)."""
    with rogue_slave(master) as r:
        fd = memfd(1 << 16, seal=False)
        try:
            r.add_region(0, 1 << 16, fd=fd)
            r.ack()
            assert fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_SHRINK
            with pytest.raises(OSError):
                os.ftruncate(fd, 4096)
        finally:
            os.close(fd)
    serves_good_slave(master)


SHRINK_RACE = r"""
import os, stat, sys
sys.path.insert(0, sys.argv[2])
import memifx
from rogue import RogueSlave
path, size = sys.argv[1], 1 << 16
m = memifx.Interface(socket=path, role="master").connect()
real_fstat = os.fstat

def fstat(fd, *a, **kw):
    # The peer wins the race: it shrinks the region right after the master
    # looked at its size (here through the master's own fd, same file).
    st = real_fstat(fd, *a, **kw)
    if stat.S_ISREG(st.st_mode) and st.st_size == size:
        try:
            os.ftruncate(fd, 0)
            print("SHRUNK", flush=True)
        except OSError as e:
            print("SEALED", e.errno, flush=True)
    return st

os.fstat = fstat
r = RogueSlave.connect(path)
r.handshake(region_size=size, seal=False)   # CONNECT: the master reads the cookie
os.fstat = real_fstat
print("CONNECTED", m.wait_connected(5), m.info()["regions"], flush=True)
"""


def test_region_shrunk_between_check_and_seal(procs, abstract_sock):
    """The master must seal before it checks the size: a peer that truncates
    the memfd in between would leave a mapping past the end of the file, and
    the master's first access would be SIGBUS (regression: it checked, then
    sealed).  Run in a child, since the failure mode kills the process."""
    here = os.path.dirname(os.path.abspath(__file__))
    p = procs.start([sys.executable, "-c", SHRINK_RACE, abstract_sock, here])
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0, "child died (%s):\n%s" % (p.returncode, out)
    assert "SEALED" in out and "SHRUNK" not in out, out
    assert "CONNECTED True [65536]" in out, out


def test_unsealable_region_is_a_warning(master):
    """A memfd without MFD_ALLOW_SEALING cannot be sealed: the link comes up
    with a warning in info() (interop: a master cannot require seals)."""
    with rogue_slave(master, init=False) as r:
        r.handshake(sealable=False)
        assert master.wait_connected(5)
        assert master.info()["warnings"] == ["region 0: region not sealed against shrinking"]
        r.send_frame(b"w" * 60)
        assert receive(master, 1) == [b"w" * 60]
    serves_good_slave(master)


@pytest.mark.parametrize("n", [2, 3, 16])
@pytest.mark.parametrize("on", ["init", "add_region", "add_ring", "connect"])
def test_extra_fds_closed(master, on, n):
    """Two or more fds on one message: refused, and every one of them closed
    (more than fit in the receive buffer: MSG_CTRUNC, also refused)."""
    before = open_fds()
    with rogue_slave(master, init=on != "init") as r:
        fds = [memfd(4096)] + [eventfd() for _ in range(n - 1)]
        if on == "init":
            msg = wire.Init(version=wire.VERSION, id=0, mode=0, secret=b"", name="x")
        elif on == "add_region":
            msg = wire.AddRegion(index=0, size=4096)
        elif on == "add_ring":
            r.add_region(0, 1 << 16)
            r.ack()
            fds.reverse()
            msg = wire.AddRing(flags=1, index=0, region=0, offset=0, log2_ring_size=6,
                               private_hdr_size=0)
        else:
            msg = wire.Connect(if_name="x")
        r.send(msg, fds)
        for fd in fds:
            os.close(fd)
        reason = "too many fds in one message" if n <= 4 else "control message truncated"
        refused(r, reason, master if on != "init" else None)
    settle(before)
    serves_good_slave(master)


def test_fd_on_message_that_takes_none_is_closed(master):
    before = open_fds()
    with rogue_slave(master, init=False) as r:
        fd = memfd(4096)
        r.send(wire.Init(version=wire.VERSION, id=0, mode=0, secret=b"", name="x"), [fd])
        r.ack()
        r.send(wire.Ack(), [fd])
        os.close(fd)
        refused(r, "unexpected message", master)
    settle(before)
    serves_good_slave(master)


# ------------------------------------------------------------------ ADD_RING

REGION = 1 << 16


@pytest.mark.parametrize("ring,reason", [
    (dict(fd=-1), "missing ring interrupt fd"),
    (dict(fd="pipe"), "ring interrupt fd is not an eventfd"),
    (dict(fd="memfd"), "ring interrupt fd is not an eventfd"),
    (dict(private=8), "private headers not supported"),
    (dict(index=2), "too many rings"),
    (dict(index=2, s2m=False), "too many rings"),
    (dict(index=0xFFFF), "too many rings"),
    (dict(index=1), "unexpected ring index"),
    (dict(index=1, s2m=False), "unexpected ring index"),
    (dict(offset=REGION), "ring outside memory region"),
    (dict(offset=0xFFFFFFC0), "ring outside memory region"),
    (dict(offset=REGION - ring_bytes(6) + 64), "ring outside memory region"),
    (dict(offset=32), "ring outside memory region"),
    (dict(offset=4), "ring outside memory region"),
    (dict(log2=15), "ring size out of range"),
    (dict(log2=255), "ring size out of range"),
    (dict(log2=14), "ring outside memory region"),
    (dict(region=1), "unexpected region index"),
    (dict(region=0xFFFF), "unexpected region index"),
], ids=lambda v: v if isinstance(v, str) else "-".join("%s=%s" % i for i in v.items()))
def test_add_ring_refused(master, ring, reason):
    before_fds, before_maps = open_fds(), memfd_maps()
    with rogue_slave(master) as r:
        r.add_region(0, REGION)
        r.ack()
        ring = dict(ring)
        made = None
        if ring.get("fd") == "pipe":
            made = ring["fd"] = _pipe()
        elif ring.get("fd") == "memfd":
            made = ring["fd"] = memfd(4096)
        r.add_ring(**ring)
        if made is not None:
            os.close(made)
        refused(r, reason, master)
    settle(before_fds, before_maps)
    serves_good_slave(master)


def test_add_ring_before_region(master):
    with rogue_slave(master) as r:
        r.add_ring(0)
        refused(r, "unexpected region index", master)
    serves_good_slave(master)


def test_ring_index_order_per_direction(master):
    """Second S2M ring announced twice: the index must advance."""
    with rogue_slave(master) as r:
        r.add_region(0, REGION)
        r.ack()
        r.add_ring(0, offset=0)
        r.ack()
        r.add_ring(0, offset=4096)
        refused(r, "unexpected ring index", master)
    serves_good_slave(master)


# ------------------------------------------------------------------- CONNECT

@pytest.mark.parametrize("case,reason", [
    ("no-rings", "missing rings"),
    ("no-region", "missing rings"),
    ("s2m-only", "missing rings"),
    ("m2s-only", "missing rings"),
    ("bad-cookie", "wrong cookie"),
    ("bad-cookie-second-ring", "wrong cookie"),
])
def test_connect_refused(master, case, reason):
    before_fds, before_maps = open_fds(), memfd_maps()
    with rogue_slave(master, init=False) as r:
        if case == "no-region":
            r.init()
            r.ack()
        else:
            r.handshake(connect=False, region_size=REGION,
                        n_s2m=0 if case in ("m2s-only", "no-rings") else 1,
                        n_m2s=0 if case in ("s2m-only", "no-rings") else 1)
            if case == "bad-cookie":
                r.s2m[0].cookie = 0x3E31F21
            elif case == "bad-cookie-second-ring":
                r.m2s[0].cookie = 0
        r.send(wire.Connect(if_name="x"))
        refused(r, reason, master)
    settle(before_fds, before_maps)
    serves_good_slave(master)


def test_message_after_connected(master):
    with rogue_slave(master, init=False) as r:
        r.handshake()
        assert master.wait_connected(5)
        r.add_region(1, REGION)
        refused(r, "unexpected message", master)
    serves_good_slave(master)


def test_disconnect_with_garbage_reason(master):
    with rogue_slave(master, init=False) as r:
        r.handshake()
        assert master.wait_connected(5)
        r.send_raw(struct.pack("<HI96s", wire.DISCONNECT, 0xDEAD, b"\xff\xfe" * 48)
                   .ljust(128, b"\xaa"))
        assert r.is_closed()
    assert wait_for(lambda: not master.connected and last_reason(master))
    assert isinstance(last_reason(master), str)
    serves_good_slave(master)


# ------------------------------------------------------- stalls and closes

def test_handshake_timeout(master):
    """A slave that stalls, before or after INIT, is cut off after ~3 s, and
    the memory it sent is unmapped."""
    before_fds, before_maps = open_fds(), memfd_maps()
    t0 = time.monotonic()
    silent = rogue_slave(master, init=False)
    half = rogue_slave(master)
    half.add_region(0, REGION)
    half.ack()
    try:
        assert refused(silent, "handshake timeout") == "handshake timeout"
        refused(half, "handshake timeout", master)
        took = time.monotonic() - t0
        assert 2.5 < took < 5, took
    finally:
        silent.close()
        half.close()
    settle(before_fds, before_maps)
    serves_good_slave(master)


def test_peer_closes_mid_handshake(master):
    before_fds, before_maps = open_fds(), memfd_maps()
    with rogue_slave(master) as r:
        r.add_region(0, REGION)
        r.ack()
        r.add_ring(0)
        r.ack()
    assert wait_for(lambda: last_reason(master) == "peer closed the connection")
    settle(before_fds, before_maps)
    serves_good_slave(master)


def test_peer_that_never_reads(abstract_sock, caplog):
    """A slave that floods its handshake and never reads the ACKs: once the
    master cannot send, it ends the link (regression: the send error escaped
    into the control loop, the ACK was lost and the handshake went on)."""
    with open("/proc/sys/net/core/wmem_default") as f:
        if int(f.read()) > 1 << 19:
            pytest.skip("socket buffers hold every ACK of a handshake here")
    m = memifx.Interface(socket=abstract_sock, role="master", name="mx-wide",
                         rx_queues=255, tx_queues=255, max_regions=256).connect()
    try:
        r = rogue_slave(m, init=False)
        r.init()
        fd = memfd(1 << 20)
        try:
            for i in range(256):
                r.add_region(i, 1 << 20, fd=fd)
            for i in range(510):
                r.add_ring(i % 255, s2m=i < 255, offset=i * 256, log2=0)
        except OSError:
            pass                                # the master hung up on us
        finally:
            os.close(fd)
            r.close()
        assert wait_for(lambda: last_reason(m) is not None, 5)
        assert last_reason(m) == "peer does not read the control channel"
        assert m._channel is None
        assert not [rec for rec in caplog.records if rec.levelno >= 40], caplog.text
        serves_good_slave(m, nq=1)
    finally:
        m.close()


def test_no_leaks_after_bad_handshakes(master):
    """fds and memfd mappings given to the master come back to where they
    were after a batch of bad handshakes, some of them after link up."""
    def bad_ring(r):
        r.add_region(0, REGION)
        r.ack()
        fd = _pipe()
        r.add_ring(0, fd=fd)
        os.close(fd)

    def bad_cookie(r):
        r.add_region(0, REGION)
        r.ack()
        r.add_ring(0)
        r.ack()
        r.add_ring(0, s2m=False, offset=4096)
        r.ack()
        r.send(wire.Connect(if_name="x"))

    def two_fds(r):
        a, b = memfd(REGION), memfd(REGION)
        r.send(wire.AddRegion(index=0, size=REGION), [a, b])
        os.close(a)
        os.close(b)

    def too_small(r):
        r.add_region(0, REGION, fd_size=4096)

    def many_regions_then_bad(r):
        for i in range(5):
            r.add_region(i, REGION)
            r.ack()
        r.add_ring(0, offset=REGION)

    def close_midway(r):
        r.add_region(0, REGION)
        r.ack()
        r.close()

    def connected_then_garbage(r):
        r.handshake(id=0, region_size=None)
        assert wait_for(lambda: master.connected)
        master.tx_burst([b"x" * 60])
        r.send_raw(raw(77))

    scenarios = [bad_ring, bad_cookie, two_fds, too_small, many_regions_then_bad,
                 close_midway, connected_then_garbage]
    gc.collect()
    time.sleep(0.05)
    before_fds, before_maps = open_fds(), memfd_maps()
    for _ in range(3):
        for scenario in scenarios:
            r = rogue_slave(master, init=scenario is not connected_then_garbage)
            try:
                scenario(r)
                if r.sock.fileno() >= 0:
                    r.outcome()
            finally:
                r.close()
            assert wait_for(lambda: master.info()["state"] == "listening" and
                            master._channel is None, 5)
    settle(before_fds, before_maps)
    serves_good_slave(master)
    settle(before_fds, before_maps)


# ================================== data path: rogue slave vs memifx master

@pytest.fixture
def linked(master):
    """A rogue slave with one ring each way (64 slots), connected to ``master``."""
    r = rogue_slave(master, init=False)
    r.handshake()
    assert master.wait_connected(5)
    yield r
    r.close()


def test_rx_bad_descriptors_dropped(master, linked):
    r = linked
    ring = r.s2m[0]
    size = r.region_size
    bad = [
        dict(region=1, offset=r.buf(ring, 0), length=60),          # region out of range
        dict(region=0xFFFF, offset=0, length=1),
        dict(offset=0xFFFFFF00, length=0x200),                     # u32 sum wraps to 0x100
        dict(offset=0x200, length=0xFFFFFF00),                     # the same, the other way
        dict(offset=size - 32, length=64),                         # past the end
        dict(offset=size, length=1),
        dict(offset=0, length=0xFFFFFFFF),
        dict(offset=0xFFFFFFFF, length=0xFFFFFFFF),
    ]
    for k, d in enumerate(bad):
        ring.put(ring.head, **d)
        ring.head = ring.head + 1
        assert master.rx_burst() == []
        assert ring.tail == ring.head                               # consumed all the same
        assert drops(master)["bad descriptor"] == k + 1
    # a bad link in the middle of a chain drops the whole frame, nothing else
    h = ring.head
    ring.put(h, flags=DESC_NEXT, offset=r.buf(ring, h), length=100)
    ring.put(h + 1, flags=DESC_NEXT, offset=0xFFFFFFF0, length=0x20)
    ring.put(h + 2, offset=r.buf(ring, h + 2), length=100)
    ring.head = h + 3
    assert master.rx_burst() == []
    assert ring.tail == h + 3
    assert drops(master)["bad descriptor"] == len(bad) + 1
    # the last bytes of the region are fine
    h = ring.head
    r.mem[size - 64:size] = b"E" * 64
    ring.put(h, offset=size - 64, length=64)
    ring.put(h + 1, offset=size, length=0)                          # empty, at the end
    ring.head = h + 2
    assert master.rx_burst() == [b"E" * 64, b""]
    assert master.connected
    r.send_frame(b"after" * 20)
    assert receive(master, 1) == [b"after" * 20]
    st = master.stats()["rx"][0]
    assert st["packets"] == 3 and st["drops"]["bad descriptor"] == len(bad) + 1


def test_rx_chain_never_ends(master, linked):
    r = linked
    ring = r.s2m[0]
    # an unfinished chain is waited for, not dropped
    for s in range(10):
        ring.put(s, flags=DESC_NEXT, offset=r.buf(ring, s), length=10)
    ring.head = 10
    assert master.rx_burst() == [] and ring.tail == 0
    assert drops(master)["chain too long"] == 0
    # NEXT on every slot of a full ring: it can never end
    for s in range(RING_SIZE):
        ring.put(s, flags=DESC_NEXT, offset=r.buf(ring, s), length=10)
    ring.head = RING_SIZE
    assert master.rx_burst() == []
    assert drops(master)["chain too long"] == 1
    assert ring.tail == RING_SIZE and master.connected
    r.send_frame(b"next" * 20)
    assert receive(master, 1) == [b"next" * 20]


def test_rx_frame_too_long(master, linked):
    r = linked
    ring = r.s2m[0]
    size = r.region_size
    n = memifx.MAX_FRAME_SIZE // (size - 1) + 1      # overlapping views of the region
    for s in range(n):
        ring.put(s, flags=DESC_NEXT if s < n - 1 else 0, offset=0, length=size - 1)
    ring.head = n
    assert master.rx_burst() == []
    assert drops(master)["frame too long"] == 1
    r.send_frame(b"ok" * 40)
    assert receive(master, 1) == [b"ok" * 40]


@pytest.mark.parametrize("move", ["ahead", "far-ahead", "backwards"])
def test_rx_head_past_ring(master, linked, move):
    r = linked
    ring = r.s2m[0]
    r.send_frame(b"a" * 60)
    r.send_frame(b"b" * 60)
    assert receive(master, 2) == [b"a" * 60, b"b" * 60]
    assert ring.tail == 2
    ring.head = {"ahead": 2 + RING_SIZE + 1, "far-ahead": 2 + 0x8000,
                 "backwards": 1}[move]
    assert master.rx_burst() == []
    refused(r, COUNTER_FAULT, master)
    serves_good_slave(master)


def test_master_ignores_clobbered_tails(master, linked):
    """tail is the master's: the slave writing it changes nothing."""
    r = linked
    r.send_frame(b"1" * 60)
    assert receive(master, 1) == [b"1" * 60]
    r.s2m[0].tail = 0x4321
    r.m2s[0].tail = 0x00FF
    r.send_frame(b"2" * 60)
    assert receive(master, 1) == [b"2" * 60]
    assert r.s2m[0].tail == 2
    r.post(1)
    assert master.tx_burst([b"3" * 60]) == 1
    assert r.m2s[0].tail == 1 and r.take() == [b"3" * 60]
    assert master.connected


def test_rx_head_exactly_full_is_fine(master, linked):
    r = linked
    ring = r.s2m[0]
    for s in range(RING_SIZE):
        off = r.buf(ring, s)
        r.mem[off:off + 4] = struct.pack("<I", s)
        ring.put(s, offset=off, length=4)
    ring.head = RING_SIZE
    got = receive(master, RING_SIZE)
    assert got == [struct.pack("<I", s) for s in range(RING_SIZE)]
    assert master.connected


@pytest.mark.parametrize("posted", [
    dict(region=1), dict(region=0xFFFF), dict(offset=0xFFFFFF00, length=0x200),
    dict(offset="end-32", length=64), dict(offset="end", length=2048),
    dict(length=0), dict(offset=0xFFFFFFFF, length=0xFFFFFFFF),
], ids=lambda d: "-".join("%s=%s" % i for i in d.items()))
def test_tx_posted_buffer_outside_region(master, linked, posted):
    r = linked
    ring = r.m2s[0]
    r.post(1)                                   # one good buffer first
    assert master.tx_burst([b"g" * 60]) == 1
    assert r.take() == [b"g" * 60]
    d = dict(offset=r.buf(ring, 1), length=2048)
    d.update(posted)
    if d["offset"] == "end-32":
        d["offset"] = r.region_size - 32
    elif d["offset"] == "end":
        d["offset"] = r.region_size
    ring.put(1, **d)
    ring.head = 2
    snapshot = bytes(r.mem)
    assert master.tx_burst([b"x" * 100]) == 0
    refused(r, POSTED_FAULT, master)
    assert bytes(r.mem) == snapshot              # nothing written anywhere
    serves_good_slave(master)


def test_tx_fault_publishes_what_it_took(master, linked):
    """A bad posted buffer in the middle of a burst: the frames before it
    were counted and reported as taken, so they are published too
    (regression: tx_burst said 1 and counted 1, but tail never moved)."""
    r = linked
    ring = r.m2s[0]
    r.post(2)
    ring.put(1, offset=r.region_size, length=2048)
    assert master.tx_burst([b"a" * 60, b"b" * 60]) == 1
    refused(r, POSTED_FAULT, master)
    assert ring.tail == 1
    assert r.take() == [b"a" * 60]
    assert master.stats()["tx"][0]["packets"] == 1
    serves_good_slave(master)


@pytest.mark.parametrize("move", ["ahead", "backwards"])
def test_tx_head_past_ring(master, linked, move):
    r = linked
    ring = r.m2s[0]
    r.post(2)
    assert master.tx_burst([b"g" * 60] * 2) == 2
    ring.head = 2 + RING_SIZE + 1 if move == "ahead" else 1
    assert master.tx_burst([b"x" * 60]) == 0
    refused(r, COUNTER_FAULT, master)
    serves_good_slave(master)


def test_tx_chain_into_posted_buffers_of_any_size(master, linked):
    """Tiny posted buffers: a frame becomes a chain over them, never a write
    past a buffer's posted length."""
    r = linked
    ring = r.m2s[0]
    guard = b"\xee" * 32
    for s in range(8):
        off = r.buf(ring, s)
        ring.put(s, offset=off, length=16)
        r.mem[off + 16:off + 48] = guard
    ring.head = 8
    payload = bytes(range(100))
    assert master.tx_burst([payload]) == 1
    assert ring.tail == 7
    assert r.take() == [payload]
    for s in range(8):
        off = r.buf(ring, s)
        assert r.mem[off + 16:off + 48] == guard


def _make_blocking(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)


def _in_thread(fn, timeout=2.0):
    """Run fn in a thread; return (finished, result)."""
    out = []
    t = threading.Thread(target=lambda: out.append(fn()), daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), (out[0] if out else None), t


def test_tx_kick_never_blocks(master, linked):
    """The eventfd's file description is shared with the peer: it can clear
    O_NONBLOCK and saturate the counter.  The master's interrupt write must
    not block; it ends the link instead (regression: tx_burst hung)."""
    r = linked
    efd = r.efds[1]                             # the M2S ring's: the master writes it
    _make_blocking(efd)
    os.write(efd, struct.pack("<Q", 0xFFFFFFFFFFFFFFFE))
    r.m2s[0].flags = 0                          # clear MASK_INT: "wake me"
    r.post(4)
    done, sent, t = _in_thread(lambda: master.tx_burst([b"k" * 60]))
    os.read(efd, 8)                             # let a stuck write finish
    t.join(5)
    assert done, "tx_burst blocked on the peer's eventfd"
    assert sent == 1
    refused(r, IRQ_FAULT, master)
    serves_good_slave(master)


def test_rx_ack_never_blocks(master, linked):
    """Same for reading: rx_ack() on an empty eventfd the peer made blocking
    (regression: it hung in read())."""
    r = linked
    efd = r.efds[0]                             # the S2M ring's: the master reads it
    master.set_rx_mode("interrupt")
    _make_blocking(efd)
    done, _, t = _in_thread(lambda: master.rx_ack())
    os.write(efd, struct.pack("<Q", 1))         # let a stuck read finish
    t.join(5)
    assert done, "rx_ack blocked on the peer's eventfd"
    assert master.rx_ack()                      # the count written above
    r.send_frame(b"i" * 60)
    assert receive(master, 1) == [b"i" * 60]    # reading hurts nobody: link stays up
    assert master.connected
    master.set_rx_mode("polling")


def test_master_survives_scribbler(master, linked):
    """A thread rewrites descriptors at random while traffic flows; counters
    stay honest.  The master counts drops and never crashes; on the M2S ring
    it may only end the link with a proper reason."""
    r = linked
    s2m, m2s = r.s2m[0], r.m2s[0]
    sc = Scribbler([s2m], r.region_size, seed=7)
    sc.start()
    received = rounds = 0
    into, lengths = bytearray(1 << 18), array.array("I", [0] * RING_SIZE)
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            free = RING_SIZE - ((s2m.head - s2m.tail) & 0xFFFF)
            h = s2m.head
            for k in range(min(free, 16)):
                if k % 2:
                    s2m.put(h + k, offset=r.buf(s2m, h + k), length=64)
            s2m.head = h + min(free, 16)
            if rounds % 2:
                received += len(master.rx_burst())
            else:
                received += master.rx_into(into, lengths)
            rounds += 1
            time.sleep(0.0005)
    finally:
        sc.stop()
    st = master.stats()["rx"][0]
    assert master.connected, last_reason(master)
    assert sc.writes > 1000
    assert st["packets"] == received
    assert st["drops"]["bad descriptor"] > 0
    # now the ring the master writes into
    sc = Scribbler([m2s], r.region_size, seed=8)
    sc.start()
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end and master.connected:
            free = RING_SIZE - ((m2s.head - m2s.tail) & 0xFFFF)
            r.post(free)
            master.tx_burst(frames(8, 300))
            time.sleep(0.0005)
    finally:
        sc.stop()
    if not master.connected:
        assert r.outcome() in (POSTED_FAULT, COUNTER_FAULT)
    r.close()
    assert wait_for(lambda: not master.connected)
    serves_good_slave(master)


# ================================== rogue master vs memifx slave

@pytest.fixture
def rogue_master(abstract_sock):
    m = RogueMaster.listen(abstract_sock)
    yield m
    m.close()


@pytest.fixture
def slave(abstract_sock):
    s = memifx.Interface(socket=abstract_sock, id=0, role="slave", name="mx-slave",
                         ring_size=RING_SIZE)
    yield s
    s.close()


def serves_good_master(slave, rogue_master, procs=None):
    """(c) for the slave: once the rogue is gone, a normal master on the same
    socket gets traffic both ways."""
    rogue_master.close()
    if procs is not None:
        p = procs.endpoint("--socket", slave.socket, "--role", "master", "--name", "echo")
        read_until(p, "STARTED")
        assert slave.wait_connected(8), slave.info()
        read_until(p, "LINK UP mx-slave")
        sent = frames(16, 200, 9)
        assert slave.tx_burst(sent) == 16
        assert receive(slave, 16) == sent
        return
    m = memifx.Interface(socket=slave.socket, id=0, role="master", name="good-master")
    m.connect()
    try:
        assert slave.wait_connected(8), slave.info()
        assert wait_for(lambda: m.connected)
        cross(slave, m, tag=5)
        cross(m, slave, tag=6)
    finally:
        m.close()


def linked_slave(rogue_master, slave):
    slave.connect()
    rogue_master.accept()
    rogue_master.handshake()
    assert slave.wait_connected(5)
    assert wait_for(lambda: rogue_master.m2s[0].head == RING_SIZE)   # posted
    return rogue_master


@pytest.mark.parametrize("case,reason", [
    ("old-version", "incompatible protocol version"),
    ("new-version", "incompatible protocol version"),
    ("inverted-versions", "incompatible protocol version"),
    ("log2-0", "ring size out of range"),
    ("short", "invalid message size 100"),
    ("empty", "invalid message size 0"),
    ("unknown-type", "unknown message type 42"),
    ("ack-first", "unexpected message"),
    ("connected-first", "unexpected message"),
    ("connected-early", "unexpected message"),
    ("hello-twice", "unexpected message"),
    ("ack-after-connect", "unexpected message"),
])
def test_slave_refuses_bad_master(rogue_master, slave, procs, case, reason):
    m = rogue_master
    slave.connect()
    hello = {
        "old-version": m.hello_msg(min_version=0x0100, max_version=0x0100),
        "new-version": m.hello_msg(min_version=0x0300, max_version=0x0301),
        "inverted-versions": m.hello_msg(min_version=0x0201, max_version=0x0100),
        "log2-0": m.hello_msg(max_log2_ring_size=0),
        "short": raw(wire.HELLO, size=100),
        "empty": b"",
        "unknown-type": raw(42),
        "ack-first": wire.Ack(),
        "connected-first": wire.Connected(if_name="x"),
    }.get(case, True)
    m.accept(hello=hello)
    if case == "connected-early":
        m.expect(wire.Init)
        m.send(wire.Connected(if_name="x"))
    elif case == "hello-twice":
        m.expect(wire.Init)
        m.send(m.hello_msg())
    elif case == "ack-after-connect":
        m.expect(wire.Init)
        while not isinstance(m.seen[-1], wire.Connect):
            m.send(wire.Ack())
            m.recv()
            for fd in m.last_fds:
                os.close(fd)
        m.send(wire.Ack())
    refused(m, reason, slave)
    serves_good_master(slave, m, procs if case == "old-version" else None)


@pytest.mark.parametrize("nfds", [1, 2])
def test_slave_closes_fds_it_did_not_ask_for(rogue_master, slave, nfds):
    m = rogue_master
    memifx.default_loop()
    before = open_fds()
    slave.connect()
    m.accept()
    m.expect(wire.Init)
    fds = [memfd(4096) for _ in range(nfds)]
    m.send(wire.Ack(), fds)
    for fd in fds:
        os.close(fd)
    if nfds == 1:
        assert isinstance(m.recv(), wire.AddRegion)     # taken as a plain ACK
        m.fds.extend(m.last_fds)
        m.close()
    else:
        refused(m, "too many fds in one message", slave)
        m.close()
    assert wait_for(lambda: not slave._channel or slave._channel.memory is None)
    slave.close()
    settle(before)


def _zero_copy_send(slave, payload):
    bufs = slave.tx_alloc(1)
    with memoryview(bufs[0]) as v:
        v[:len(payload)] = payload
    return slave.tx_commit(bufs, [len(payload)])


@pytest.mark.parametrize("how", ["copy", "zero-copy"])
def test_slave_kick_never_blocks(rogue_master, slave, how):
    """The rogue master makes the S2M eventfd blocking and fills its counter:
    the slave's tx must not hang (regression)."""
    m = linked_slave(rogue_master, slave)
    efd = m.efds[0]                                 # S2M: the slave writes it
    _make_blocking(efd)
    os.write(efd, struct.pack("<Q", 0xFFFFFFFFFFFFFFFE))
    m.s2m[0].flags = 0                              # "interrupt me"
    if how == "copy":
        done, sent, t = _in_thread(lambda: slave.tx_burst([b"k" * 60]))
    else:
        done, sent, t = _in_thread(lambda: _zero_copy_send(slave, b"k" * 60))
    os.read(efd, 8)
    t.join(5)
    assert done, "tx blocked on the peer's eventfd"
    assert sent == 1
    assert m.take() == [b"k" * 60]
    # tx_commit itself reports the fault (regression: it waited for the
    # next tx_alloc to notice)
    refused(m, IRQ_FAULT, slave)
    serves_good_master(slave, m)


def test_slave_ignores_clobbered_heads(rogue_master, slave):
    """head is the slave's: a master that writes it changes nothing, the
    slave keeps its own record of what it posted and published."""
    m = linked_slave(rogue_master, slave)
    m.s2m[0].head = 0x7777
    m.m2s[0].head = 0x1234
    sent = frames(4)
    assert slave.tx_burst(sent) == 4
    assert m.s2m[0].head == 4
    m.m2s[0].head = RING_SIZE
    m.give(b"one" * 20)
    assert receive(slave, 1) == [b"one" * 20]
    assert m.m2s[0].head == RING_SIZE + 1               # its own count again
    assert slave.connected


def test_slave_no_leaks(rogue_master, slave):
    """Each HELLO makes the slave build memory and eventfds; a master that
    then breaks the handshake (or the link) must not leave any behind."""
    m = rogue_master
    memifx.default_loop()                   # its own fds are not a leak
    gc.collect()
    before_fds, before_maps = open_fds(), memfd_maps()
    slave.connect()
    for k in range(6):
        m.accept()
        if k % 2:
            m.handshake()
            assert slave.wait_connected(5)
            m.send_raw(raw(99))
            refused(m, "unknown message type 99", slave)
        else:
            m.expect(wire.Init)
            m.send(wire.Ack())
            m.expect(wire.AddRegion)
            m.fds.extend(m.last_fds)
            m.send(wire.Connected(if_name="x"))
            refused(m, "unexpected message", slave)
        for mp in m.maps:
            mp.close()
        for fd in m.fds:
            os.close(fd)
        m.maps, m.fds = [], []
    m.close()
    slave.close()
    settle(before_fds, before_maps)


def test_slave_handshake_timeout(rogue_master, slave):
    slave.connect()
    t0 = time.monotonic()
    rogue_master.accept()
    assert isinstance(rogue_master.recv(), wire.Init)
    refused(rogue_master, "handshake timeout", slave)
    assert 2.5 < time.monotonic() - t0 < 5
    serves_good_master(slave, rogue_master)


def test_slave_survives_hello_extremes(rogue_master, slave):
    """Ring counts and sizes from HELLO are clamped, never trusted."""
    m = rogue_master
    slave.connect()
    m.accept(hello=m.hello_msg(max_m2s_ring=0xFFFF, max_s2m_ring=0xFFFF,
                               max_region=0, max_log2_ring_size=255,
                               name=b"\xff" * 32))
    m.handshake()
    assert slave.wait_connected(5)
    assert len(m.s2m) == 1 and len(m.m2s) == 1
    assert m.s2m[0].size == RING_SIZE
    m.close()
    assert wait_for(lambda: not slave.connected)


def test_slave_tx_tail_past_head(rogue_master, slave):
    m = linked_slave(rogue_master, slave)
    sent = frames(3)
    assert slave.tx_burst(sent) == 3
    assert m.take() == sent
    m.s2m[0].tail = 5
    assert slave.tx_burst(frames(1)) == 0
    refused(m, COUNTER_FAULT, slave)
    serves_good_master(slave, m)


def test_slave_tx_tail_far_behind(rogue_master, slave):
    m = linked_slave(rogue_master, slave)
    assert slave.tx_burst(frames(3)) == 3
    m.s2m[0].tail = (3 - RING_SIZE - 1) & 0xFFFF
    assert slave.tx_alloc(1) == []
    refused(m, COUNTER_FAULT, slave)
    serves_good_master(slave, m)


@pytest.mark.parametrize("move", ["past-posted", "backwards"])
def test_slave_rx_tail_past_ring(rogue_master, slave, move):
    m = linked_slave(rogue_master, slave)
    m.give(b"a" * 60)
    m.give(b"b" * 60)
    assert receive(slave, 2) == [b"a" * 60, b"b" * 60]
    ring = m.m2s[0]
    assert wait_for(lambda: ring.head == RING_SIZE + 2)
    ring.tail = ring.head + 1 if move == "past-posted" else 1
    assert slave.rx_burst() == []
    refused(m, COUNTER_FAULT, slave)
    serves_good_master(slave, m)


def test_slave_rx_bad_lengths_dropped(rogue_master, slave):
    m = linked_slave(rogue_master, slave)
    for k, length in enumerate([2049, 0x10000, 0xFFFFFFFF]):
        m.give(b"x" * 60, length=length)
        assert slave.rx_burst() == []
        assert drops(slave)["bad descriptor"] == k + 1
    # a bad length in the middle of a chain drops the frame
    m.give(b"1" * 2048, flags=DESC_NEXT)
    m.give(b"2" * 60, flags=DESC_NEXT, length=4096)
    m.give(b"3" * 60)
    assert slave.rx_burst() == []
    assert drops(slave)["bad descriptor"] == 4
    m.give(b"good" * 15)
    assert receive(slave, 1) == [b"good" * 15]
    assert slave.connected


def test_slave_rx_uses_its_own_buffers(rogue_master, slave):
    """The master's region/offset in M2S descriptors are ignored: the slave
    reads the buffer it posted in that slot, whatever the descriptor says."""
    m = linked_slave(rogue_master, slave)
    ring = m.m2s[0]
    m.give(b"mine" * 15)
    _, reg, length, off, _ = ring.desc(0)
    ring.put(0, region=0xFFFF, offset=0xFFFFFF00, length=60)
    # the same for the next slot, published together with a chain across it
    t = ring.tail
    _, _, _, off1, _ = ring.desc(t)
    m.regions[0][off1:off1 + 2048] = b"A" * 2048
    _, _, _, off2, _ = ring.desc(t + 1)
    m.regions[0][off2:off2 + 10] = b"B" * 10
    ring.put(t, flags=DESC_NEXT, region=3, offset=0xFFFFFFF0, length=2048)
    ring.put(t + 1, region=0, offset=0, length=10)
    ring.tail = t + 2
    assert receive(slave, 2) == [b"mine" * 15, b"A" * 2048 + b"B" * 10]
    assert drops(slave)["bad descriptor"] == 0


def test_slave_rx_chain_never_ends(rogue_master, slave):
    m = linked_slave(rogue_master, slave)
    ring = m.m2s[0]
    for s in range(RING_SIZE):
        fl, reg, length, off, _ = ring.desc(s)
        ring.put(s, flags=DESC_NEXT, region=reg, offset=off, length=10)
    ring.tail = RING_SIZE
    assert slave.rx_burst() == []
    assert drops(slave)["chain too long"] == 1
    assert wait_for(lambda: ring.head == 2 * RING_SIZE)        # re-posted
    m.give(b"after" * 12)
    assert receive(slave, 1) == [b"after" * 12]


def test_slave_survives_scribbler(rogue_master, slave):
    """The rogue master rewrites every descriptor of both rings at random
    while it moves tail correctly; the slave drops by reason, never faults."""
    m = linked_slave(rogue_master, slave)
    s2m, m2s = m.s2m[0], m.m2s[0]
    size = len(m.regions[0])
    sc = Scribbler([s2m, m2s], size, seed=11)
    sc.start()
    got = rounds = 0
    into, lengths = bytearray(1 << 18), array.array("I", [0] * RING_SIZE)
    try:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:
            s2m.tail = s2m.head                     # take everything, unread
            slave.tx_burst(frames(8, 100))
            t, h = m2s.tail, m2s.head
            m2s.tail = t + ((h - t) & 0xFFFF) // 2 + 1 if h != t else t
            kind = rounds % 3
            if kind == 0:
                got += len(slave.rx_burst())
            elif kind == 1:
                got += slave.rx_into(into, lengths)
            else:
                with slave.rx_zero_copy() as bufs:
                    got += sum(1 for b in bufs if not b.chained)
                    for b in bufs:
                        assert len(b) <= 2048
                        bytes(b)            # every byte of it is readable
            rounds += 1
            time.sleep(0.0005)
    finally:
        sc.stop()
    assert slave.connected, last_reason(slave)
    st = slave.stats()
    assert st["rx"][0]["drops"]["bad descriptor"] > 0
    assert st["rx"][0]["packets"] == got
    assert st["tx"][0]["packets"] > 0
    serves_good_master(slave, m)
