"""Peers that are correct but unlike memifx: libmemif's habits, faked with a raw
socket and memfds.  Buffers in region 1, garbage in message padding, EOF
without DISCONNECT, a master that ACKs an unknown id and then closes, and
peers that close with something of ours unread (the kernel then reports a
reset before what they sent): the reason is the same either way."""
import array
import mmap
import os
import select
import socket
import struct
import time

import pytest

import memifx
from memifx import layout, wire
from conftest import wait_for

pytestmark = pytest.mark.timeout(30)

LOG2 = 4
SIZE = 1 << LOG2
BUF = 2048


def send(sock, msg, fd=None, garbage=True):
    data = wire.encode(msg)
    if garbage:                       # heap leftovers after the body, as libmemif sends
        body_len = 2 + {wire.Ack: 0, wire.Connect: 32, wire.Init: 63}.get(type(msg), 0)
        if type(msg) in (wire.Ack, wire.Connect, wire.Init):
            data = data[:body_len] + bytes((i * 7 + 3) & 0xFF for i in range(128 - body_len))
    anc = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
    sock.sendmsg([data], anc)


def recv(sock, timeout=3):
    sock.settimeout(timeout)
    data = sock.recv(256)
    return wire.decode(data) if data else None


class LibmemifLikeSlave:
    """Region 0: one S2M and one M2S ring; region 1: the buffers."""

    def __init__(self, path, secret=None):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.sock.connect(path)
        hello = recv(self.sock)
        assert isinstance(hello, wire.Hello)
        ring_bytes = layout.ring_bytes(LOG2)
        self.r0 = os.memfd_create("r0", os.MFD_ALLOW_SEALING)
        self.r1 = os.memfd_create("r1", os.MFD_ALLOW_SEALING)
        os.ftruncate(self.r0, 2 * ring_bytes)
        os.ftruncate(self.r1, 2 * SIZE * BUF)
        self.m0 = mmap.mmap(self.r0, 2 * ring_bytes)
        self.m1 = mmap.mmap(self.r1, 2 * SIZE * BUF)
        self.rings = {"s2m": 0, "m2s": ring_bytes}
        for off in self.rings.values():
            struct.pack_into("<IHH", self.m0, off, layout.COOKIE, 0, 0)
        self.evs = [os.eventfd(0), os.eventfd(0)]
        steps = [
            (wire.Init(0x200, 0, 0, secret or b"", "libmemif-like"), None),
            (wire.AddRegion(0, 2 * ring_bytes), self.r0),
            (wire.AddRegion(1, 2 * SIZE * BUF), self.r1),
            (wire.AddRing(1, 0, 0, self.rings["s2m"], LOG2, 0), self.evs[0]),
            (wire.AddRing(0, 0, 0, self.rings["m2s"], LOG2, 0), self.evs[1]),
        ]
        for msg, fd in steps:
            send(self.sock, msg, fd)
            assert isinstance(recv(self.sock), wire.Ack), msg
        send(self.sock, wire.Connect("libmemif-like"))
        assert isinstance(recv(self.sock), wire.Connected)
        self.head = {"s2m": 0, "m2s": 0}

    def desc(self, ring, slot, flags, region, length, offset):
        struct.pack_into("<HHIII", self.m0, self.rings[ring] + layout.desc_offset(slot),
                         flags, region, length, offset, 0)

    def set_head(self, ring, v):
        struct.pack_into("<H", self.m0, self.rings[ring] + layout.HEAD_OFFSET, v & 0xFFFF)

    def tail(self, ring):
        return struct.unpack_from("<H", self.m0, self.rings[ring] + layout.TAIL_OFFSET)[0]

    def transmit(self, frame):
        slot = self.head["s2m"] % SIZE
        off = slot * BUF                              # s2m buffers first in region 1
        self.m1[off:off + len(frame)] = frame
        self.desc("s2m", slot, 0, 1, len(frame), off)
        self.head["s2m"] += 1
        self.set_head("s2m", self.head["s2m"])

    def post_rx(self):
        for slot in range(SIZE):
            self.desc("m2s", slot, 0, 1, BUF, (SIZE + slot) * BUF)
        self.head["m2s"] = SIZE
        self.set_head("m2s", SIZE)

    def received(self):
        out = []
        for slot in range(self.tail("m2s")):
            flags, region, length, offset, _ = struct.unpack_from(
                "<HHIII", self.m0, self.rings["m2s"] + layout.desc_offset(slot))
            assert region == 1
            out.append(bytes(self.m1[offset:offset + length]))
        return out

    def close(self):
        self.sock.close()
        self.m0.close()
        self.m1.close()
        for fd in [self.r0, self.r1] + self.evs:
            os.close(fd)


def test_libmemif_slave_buffers_in_region_1(sock):
    master = memifx.Interface(socket=sock, role="master", name="m").connect()
    try:
        peer = LibmemifLikeSlave(sock)
        assert master.wait_connected(3)
        assert master.info()["regions"] == [2 * layout.ring_bytes(LOG2), 2 * SIZE * BUF]
        frames = [os.urandom(60 + i) for i in range(5)]
        for f in frames:
            peer.transmit(f)
        assert master.rx_burst() == frames
        assert peer.tail("s2m") == 5                    # buffers handed back
        peer.post_rx()
        assert master.tx_burst(frames) == 5
        assert peer.received() == frames
        # EOF without DISCONNECT is an ordinary link down ...
        peer.close()
        assert wait_for(lambda: not master.connected, 3)
        assert master.info()["last_disconnect"] == "peer closed the connection"
        # ... and the next peer is served
        peer = LibmemifLikeSlave(sock)
        assert master.wait_connected(3)
        peer.close()
    finally:
        master.close()


def test_master_that_acks_unknown_id_then_closes(sockdir):
    """A libmemif master answers an INIT for an id it does not have with ACK and
    closes.  The memifx slave must see link down and keep retrying, calmly."""
    path = os.path.join(sockdir, "fake.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lsock.bind(path)
    lsock.listen(8)
    slave = memifx.Interface(socket=path, role="slave", id=42, name="s").connect()
    attempts = 0
    try:
        lsock.settimeout(3)
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                conn, _ = lsock.accept()
            except socket.timeout:
                break
            attempts += 1
            send(conn, wire.Hello("libmemif", 0x200, 0x200, 255, 255, 255, 14))
            assert isinstance(recv(conn), wire.Init)
            send(conn, wire.Ack())
            conn.close()
        assert not slave.connected
        assert slave.info()["last_disconnect"] == "peer closed the connection"
        # backoff: a handful of attempts in 1.5 s, not a busy spin
        assert 2 <= attempts <= 12
    finally:
        slave.close()
        lsock.close()


def readable(sock, timeout=3):
    """Whether something arrived on ``sock`` (left unread)."""
    return bool(select.select([sock], [], [], timeout)[0])


def fake_master(path):
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    lsock.bind(path)
    lsock.listen(8)
    lsock.settimeout(3)
    return lsock


def test_master_that_closes_with_our_message_unread(sockdir):
    """A master that ACKs INIT and closes once the slave's next message is
    waiting, unread: the kernel reports that close as a reset, ahead of the
    ACK.  The reason is the same as when the close lands first (EPIPE on
    send, or end of file): the peer closed the connection."""
    path = os.path.join(sockdir, "fake.sock")
    lsock = fake_master(path)
    slave = memifx.Interface(socket=path, role="slave", id=42, name="s").connect()
    try:
        conn, _ = lsock.accept()
        for _ in range(2):
            send(conn, wire.Hello("libmemif", 0x200, 0x200, 255, 255, 255, 14))
            assert isinstance(recv(conn), wire.Init)
            send(conn, wire.Ack())
            assert readable(conn)                   # ADD_REGION, left unread
            conn.close()
            conn, _ = lsock.accept()                # the slave saw the link down, retries
            assert not slave.connected
            assert slave.info()["last_disconnect"] == "peer closed the connection"
        conn.close()
    finally:
        slave.close()
        lsock.close()


def test_disconnect_reason_kept_when_the_close_is_a_reset(sockdir):
    """A master that sends DISCONNECT and closes without reading our INIT:
    what it said before closing is the reason, not the reset the kernel
    reports first."""
    path = os.path.join(sockdir, "fake.sock")
    lsock = fake_master(path)
    slave = memifx.Interface(socket=path, role="slave", id=42, name="s").connect()
    try:
        conn, _ = lsock.accept()
        send(conn, wire.Hello("libmemif", 0x200, 0x200, 255, 255, 255, 14))
        assert readable(conn)                       # INIT, left unread
        send(conn, wire.Disconnect(code=0, reason="unmatched interface id"))
        conn.close()
        assert wait_for(lambda: slave.info()["last_disconnect"] is not None, 3)
        assert slave.info()["last_disconnect"] == "unmatched interface id"
    finally:
        slave.close()
        lsock.close()


def test_slave_that_closes_with_our_ack_unread(sock):
    """The master's side of the same order: a slave sends INIT and closes
    with the ACK unread.  The master's reason is the peer's close."""
    master = memifx.Interface(socket=sock, role="master", id=0, name="m").connect()
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.connect(sock)
        assert isinstance(recv(s), wire.Hello)
        send(s, wire.Init(0x200, 0, 0, b"", "closer"))
        assert readable(s)                          # ACK, left unread
        s.close()
        assert wait_for(lambda: master.info()["last_disconnect"] is not None, 3)
        assert master.info()["last_disconnect"] == "peer closed the connection"
    finally:
        master.close()
