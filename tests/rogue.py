"""A hostile memif peer in plain Python, for tests/test_hostile.py.

Nothing here uses memifx's own channel, memory or ring code: sockets are
``socket.socket(AF_UNIX, SOCK_SEQPACKET)``, regions are ``os.memfd_create`` +
``mmap``, interrupts are ``os.eventfd``, fds travel with ``sendmsg`` and
SCM_RIGHTS.  memifx.wire is used only to encode well-formed messages; a
malformed one is built with ``raw()`` / struct.

    s = RogueSlave.connect("@sock")        # reads HELLO
    s.handshake()                          # a complete, correct handshake ...
    s.s2m[0].put(0, offset=..., length=...)
    s.s2m[0].head = 1                      # ... then anything at all

    m = RogueMaster.listen("@sock")
    m.accept()                             # sends HELLO
    m.handshake()                          # ACKs everything, maps the region
    m.m2s[0].tail = 5

Every blocking call has a timeout: a memifx that hangs makes a test fail with
``socket.timeout`` instead of hanging it.
"""
import array
import mmap
import os
import random
import socket
import struct
import threading
import time

from memifx import layout, wire
from memifx.layout import ring_bytes  # noqa: F401  (tests take it from here)

COOKIE = layout.COOKIE
PAGE = layout.PAGE_SIZE
DESC_NEXT = layout.DESC_FLAG_NEXT
MASK_INT = layout.RING_FLAG_MASK_INT
TIMEOUT = 5.0

_DESC = struct.Struct("<HHIII")


def sockaddr(path):
    return "\0" + path[1:] if path.startswith("@") else path


def raw(msg_type, body=b"", size=wire.MSG_SIZE):
    """A control message of any type and any size (zero padded / cut)."""
    data = struct.pack("<H", msg_type) + body
    return data.ljust(size, b"\0")[:size]


def memfd(size, name="rogue", sealable=True, seal=True):
    """A region fd: memfd of ``size`` bytes, sealed against shrinking unless told."""
    flags = os.MFD_CLOEXEC | (os.MFD_ALLOW_SEALING if sealable else 0)
    fd = os.memfd_create(name, flags)
    os.ftruncate(fd, size)
    if sealable and seal:
        import fcntl
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK)
    return fd


def eventfd():
    return os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)


def open_fds():
    """Entries in /proc/self/fd (the listing's own fd included, every time)."""
    return len(os.listdir("/proc/self/fd"))


def memfd_maps():
    """Lines of /proc/self/maps that map a memfd."""
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if "memfd:" in line)


class Ring:
    """One ring inside a mapping, read and written the way a peer would:
    plain loads and stores into shared memory, nothing checked."""

    def __init__(self, mem, offset, log2, s2m, index):
        self.mem = mem
        self.offset = offset
        self.log2 = log2
        self.size = 1 << log2
        self.mask = self.size - 1
        self.s2m = s2m
        self.index = index

    def _u16(self, at):
        return struct.unpack_from("<H", self.mem, self.offset + at)[0]

    def _set_u16(self, at, v):
        struct.pack_into("<H", self.mem, self.offset + at, v & 0xFFFF)

    cookie = property(
        lambda self: struct.unpack_from("<I", self.mem, self.offset + layout.COOKIE_OFFSET)[0],
        lambda self, v: struct.pack_into("<I", self.mem, self.offset + layout.COOKIE_OFFSET, v))
    flags = property(lambda self: self._u16(layout.FLAGS_OFFSET),
                     lambda self, v: self._set_u16(layout.FLAGS_OFFSET, v))
    head = property(lambda self: self._u16(layout.HEAD_OFFSET),
                    lambda self, v: self._set_u16(layout.HEAD_OFFSET, v))
    tail = property(lambda self: self._u16(layout.TAIL_OFFSET),
                    lambda self, v: self._set_u16(layout.TAIL_OFFSET, v))

    def desc(self, slot):
        """(flags, region, length, offset, metadata) of slot ``slot & mask``."""
        return _DESC.unpack_from(self.mem, self.offset + layout.desc_offset(slot & self.mask))

    def put(self, slot, flags=0, region=0, length=0, offset=0, metadata=0):
        _DESC.pack_into(self.mem, self.offset + layout.desc_offset(slot & self.mask),
                        flags & 0xFFFF, region & 0xFFFF, length & 0xFFFFFFFF,
                        offset & 0xFFFFFFFF, metadata & 0xFFFFFFFF)

    def init(self):
        self.cookie = COOKIE
        self.flags = 0
        self.head = 0
        self.tail = 0


class Peer:
    """One control connection: raw sends, fd passing, receives with timeouts."""

    def __init__(self, sock, timeout=TIMEOUT):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.seen = []                  # every message received
        self.fds = []                   # fds we own (closed by close())
        self.maps = []                  # mmaps we own

    # ------------------------------------------------------------ sending

    def send_raw(self, data, fds=()):
        anc = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", list(fds)))] \
            if fds else []
        self.sock.sendmsg([data], anc)

    def send(self, msg, fds=()):
        self.send_raw(wire.encode(msg), fds)

    # ---------------------------------------------------------- receiving

    def recv(self, timeout=None):
        """The next message, decoded (None on EOF).  fds that came with it are
        kept in ``self.last_fds`` (the caller owns them)."""
        if timeout is not None:
            self.sock.settimeout(timeout)
        try:
            data, anc, _, _ = self.sock.recvmsg(wire.MSG_SIZE + 1, socket.CMSG_SPACE(16))
        except ConnectionResetError:
            data, anc = b"", []
        fds = []
        for level, kind, payload in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(payload[:len(payload) - len(payload) % 4])
                fds.extend(a)
        self.last_fds = fds
        if not data and not fds:
            return None
        msg = wire.decode(data)
        self.seen.append(msg)
        return msg

    def expect(self, cls, timeout=None):
        msg = self.recv(timeout)
        if not isinstance(msg, cls):
            for fd in self.last_fds:
                os.close(fd)
            raise AssertionError("expected %s, got %r" % (cls.__name__, msg))
        return msg

    def outcome(self, timeout=TIMEOUT):
        """Read until the peer ends the link: its DISCONNECT reason, or None
        for a bare close.  Raises socket.timeout if it does neither."""
        end = time.monotonic() + timeout
        while True:
            msg = self.recv(max(0.01, end - time.monotonic()))
            for fd in self.last_fds:
                os.close(fd)
            if msg is None:
                return None
            if isinstance(msg, wire.Disconnect):
                return msg.reason

    def is_closed(self, timeout=TIMEOUT):
        """True once the peer has closed (EOF); fails if it sends anything but
        DISCONNECT first."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.recv(max(0.01, end - time.monotonic()))
            except socket.timeout:
                return False
            if msg is None:
                return True
        return False

    def close(self):
        if self.sock is not None:
            self.sock.close()
        for m in self.maps:
            try:
                m.close()
            except BufferError:
                pass
        self.maps = []
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class RogueSlave(Peer):
    """A memif slave that does whatever the test says."""

    @classmethod
    def connect(cls, path, hello=True, timeout=TIMEOUT):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        s.settimeout(timeout)
        s.connect(sockaddr(path))
        peer = cls(s, timeout)
        peer.hello = peer.expect(wire.Hello) if hello else None
        return peer

    def init(self, id=0, mode=0, secret=b"", name="rogue", version=wire.VERSION):
        self.send(wire.Init(version=version, id=id, mode=mode, secret=secret, name=name))

    def ack(self):
        return self.expect(wire.Ack)

    def add_region(self, index, size, fd=None, fd_size=None, sealable=True):
        """ADD_REGION with a fresh memfd of ``fd_size`` (default ``size``) unless
        ``fd`` is given (-1: send none).  Our copy of the fd is closed."""
        mine = fd is None
        if mine:
            fd = memfd(size if fd_size is None else fd_size, sealable=sealable)
        try:
            self.send(wire.AddRegion(index=index, size=size), [] if fd == -1 else [fd])
        finally:
            if mine:
                os.close(fd)

    def add_ring(self, index=0, s2m=True, region=0, offset=0, log2=6, private=0,
                 fd=None, flags=None):
        """ADD_RING with a fresh eventfd unless ``fd`` is given (-1: none)."""
        mine = fd is None
        if mine:
            fd = eventfd()
        try:
            self.send(wire.AddRing(flags=(wire.RING_S2M if s2m else 0) if flags is None
                                   else flags, index=index, region=region, offset=offset,
                                   log2_ring_size=log2, private_hdr_size=private),
                      [] if fd == -1 else [fd])
        finally:
            if mine:
                os.close(fd)

    def handshake(self, id=0, n_s2m=1, n_m2s=1, log2=6, buffer_size=2048, secret=b"",
                  name="rogue", region_size=None, connect=True, sealable=True,
                  seal=True):
        """A correct handshake; afterwards ``self.mem`` maps region 0 and
        ``self.s2m``/``self.m2s`` are its rings.  Buffers of ring i (S2M then
        M2S), slot j, are at ``self.buf(i, j)``."""
        self.log2, self.buffer_size = log2, buffer_size
        region = layout.slave_layout(n_s2m, n_m2s, log2, buffer_size)
        self.buffers_at = region.buffers_at
        self.region_size = region_size or region.size
        fd = memfd(self.region_size, sealable=sealable, seal=seal)
        self.fds.append(fd)
        self.mem = mmap.mmap(fd, self.region_size, mmap.MAP_SHARED,
                             mmap.PROT_READ | mmap.PROT_WRITE)
        self.maps.append(self.mem)
        self.s2m = [Ring(self.mem, region.ring_offsets[i], log2, True, i)
                    for i in range(n_s2m)]
        self.m2s = [Ring(self.mem, region.ring_offsets[n_s2m + i], log2, False, i)
                    for i in range(n_m2s)]
        self.efds = []
        for r in self.s2m + self.m2s:
            r.init()
        self.init(id=id, secret=secret, name=name)
        self.ack()
        self.add_region(0, self.region_size, fd=fd)
        self.ack()
        for r in self.s2m + self.m2s:
            e = eventfd()
            self.fds.append(e)
            self.efds.append(e)
            self.add_ring(r.index, s2m=r.s2m, offset=r.offset, log2=log2, fd=e)
            self.ack()
        if connect:
            self.send(wire.Connect(if_name=name))
            self.expect(wire.Connected)
        return self

    def buf(self, ring, slot):
        """Offset in region 0 of buffer ``slot`` of ring ``ring`` (S2M first)."""
        i = ring.index if ring.s2m else len(self.s2m) + ring.index
        return self.buffers_at + (i * ring.size + (slot & ring.mask)) * self.buffer_size

    def send_frame(self, payload, ring=None):
        """Put one well-formed frame on an S2M ring (one slot) and publish it."""
        ring = ring or self.s2m[0]
        h = ring.head
        off = self.buf(ring, h)
        self.mem[off:off + len(payload)] = payload
        ring.put(h, length=len(payload), offset=off)
        ring.head = h + 1

    def post(self, n, ring=None):
        """Post ``n`` empty buffers on an M2S ring, as a slave does."""
        ring = ring or self.m2s[0]
        h = ring.head
        for k in range(n):
            ring.put(h + k, length=self.buffer_size, offset=self.buf(ring, h + k))
        ring.head = h + n

    def cut_region(self, how):
        """Shrink region 0 (our own fd; the handshake must have been made
        with ``sealable=False``).  ``zero``: to nothing, rings included;
        ``buffers``: to one page, the rings stay, every buffer goes, and a
        frame is then published on the first S2M ring pointing into the lost
        buffers (only the page that is left is touched here)."""
        if how == "zero":
            os.ftruncate(self.fds[0], 0)
            return
        assert how == "buffers" and self.buffers_at == PAGE
        ring = self.s2m[0]
        h = ring.head
        ring.put(h, length=60, offset=self.buf(ring, h))
        os.ftruncate(self.fds[0], PAGE)
        ring.head = h + 1
        os.eventfd_write(self.efds[0], 1)

    def take(self, ring=None, since=0):
        """Frames the master has put on an M2S ring, slots ``since``..tail."""
        ring = ring or self.m2s[0]
        out, cur = [], b""
        for s in range(since, ring.tail):
            fl, reg, length, off, _ = ring.desc(s)
            cur += bytes(self.mem[off:off + length])
            if not fl & DESC_NEXT:
                out.append(cur)
                cur = b""
        return out


class RogueMaster(Peer):
    """A memif master that does whatever the test says: listens, accepts one
    connection at a time."""

    @classmethod
    def listen(cls, path):
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        ls.bind(sockaddr(path))
        ls.listen(8)
        ls.settimeout(TIMEOUT)
        peer = cls.__new__(cls)
        peer.listener = ls
        peer.path = path
        peer.sock = None
        peer.seen, peer.fds, peer.maps = [], [], []
        return peer

    def hello_msg(self, **kw):
        d = dict(name="rogue-master", min_version=wire.VERSION, max_version=wire.VERSION,
                 max_region=255, max_m2s_ring=255, max_s2m_ring=255, max_log2_ring_size=14)
        d.update(kw)
        return wire.Hello(**d)

    def accept(self, hello=True, timeout=TIMEOUT):
        """Accept the next connection (closing a previous one) and send HELLO."""
        if self.sock is not None:
            self.sock.close()
        self.listener.settimeout(timeout)
        s, _ = self.listener.accept()
        s.settimeout(TIMEOUT)
        self.sock = s
        if hello is True:
            self.send(self.hello_msg())
        elif hello is not False and hello is not None:     # (an Ack is falsy)
            self.send_raw(hello) if isinstance(hello, bytes) else self.send(hello)
        return self

    def handshake(self):
        """Answer a slave's handshake correctly; map region(s); record rings."""
        self.init = self.expect(wire.Init)
        self.send(wire.Ack())
        self.regions = []
        self.s2m, self.m2s, self.efds = [], [], []
        while True:
            msg = self.recv()
            fds = self.last_fds
            self.fds.extend(fds)
            if isinstance(msg, wire.AddRegion):
                m = mmap.mmap(fds[0], msg.size, mmap.MAP_SHARED,
                              mmap.PROT_READ | mmap.PROT_WRITE)
                self.maps.append(m)
                self.regions.append(m)
            elif isinstance(msg, wire.AddRing):
                s2m = bool(msg.flags & wire.RING_S2M)
                r = Ring(self.regions[msg.region], msg.offset, msg.log2_ring_size, s2m,
                         msg.index)
                (self.s2m if s2m else self.m2s).append(r)
                self.efds.append(fds[0])
            elif isinstance(msg, wire.Connect):
                self.send(wire.Connected(if_name="rogue-master"))
                return self
            else:
                raise AssertionError("unexpected %r in handshake" % (msg,))
            self.send(wire.Ack())

    def take(self, ring=None):
        """Receive every frame the slave published on an S2M ring; hand the
        slots back (tail = head)."""
        ring = ring or self.s2m[0]
        out, cur = [], b""
        t, h = ring.tail, ring.head
        while t != h:
            fl, reg, length, off, _ = ring.desc(t)
            cur += bytes(self.regions[reg][off:off + length])
            if not fl & DESC_NEXT:
                out.append(cur)
                cur = b""
            t = (t + 1) & 0xFFFF
        ring.tail = t
        return out

    def give(self, payload, ring=None, length=None, flags=0):
        """Put one frame into the next buffer the slave posted on an M2S ring
        (at the descriptor's offset, as the slave wrote it) and publish it."""
        ring = ring or self.m2s[0]
        t = ring.tail
        fl, reg, blen, off, _ = ring.desc(t)
        self.regions[reg][off:off + len(payload)] = payload
        ring.put(t, flags=flags, region=reg, offset=off,
                 length=len(payload) if length is None else length)
        ring.tail = t + 1

    def close(self):
        super().close()
        self.listener.close()


class Scribbler(threading.Thread):
    """Rewrites random descriptors of some rings until stopped: random flags,
    region, length and offset, sometimes plausible, often not."""

    def __init__(self, rings, region_size, seed=1):
        super().__init__(daemon=True, name="scribbler")
        self.rings = rings
        self.region_size = region_size
        self.rng = random.Random(seed)
        self.halt = threading.Event()
        self.writes = 0

    def value(self, limit):
        r = self.rng.random()
        if r < 0.4:
            return self.rng.randrange(limit)
        if r < 0.6:
            return 0xFFFFFFFF - self.rng.randrange(4096)
        if r < 0.8:
            return limit - self.rng.randrange(64)
        return self.rng.getrandbits(32)

    def run(self):
        rng = self.rng
        while not self.halt.is_set():
            for _ in range(50):
                ring = rng.choice(self.rings)
                ring.put(rng.randrange(ring.size),
                         flags=rng.choice((0, 0, 1, 0xFFFF)),
                         region=rng.choice((0, 0, 0, 1, 0xFFFF)),
                         length=self.value(4096) if rng.random() < 0.7
                         else self.value(self.region_size),
                         offset=self.value(self.region_size),
                         metadata=rng.getrandbits(32))
                self.writes += 1
            time.sleep(0)

    def stop(self):
        self.halt.set()
        self.join(5)
