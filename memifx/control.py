"""The memif control channel: listener, and the master and slave handshakes.

Runs only inside a ControlLoop (loop.py).  Each accepted or connected
SOCK_SEQPACKET socket is one :class:`Channel`; it ends in exactly one of two
ways: ``link up`` (a :class:`Connection` handed to the interface) followed
later by ``link down``, or ``link down`` alone.  Every field the peer sends is
checked here before anything is mapped or used; a violation sends DISCONNECT
with the reason string and closes the socket.

Who the peer is (its SO_PEERCRED credentials against the interface's allow
lists, memifx/access.py) is decided before anything else it says is used.
A peer refused for its credentials, its secret or an interface id that does
not exist hears only "peer not allowed", so a stranger learns neither which
ids exist nor which want a secret; the interface counts the precise cause,
and only a peer that authenticated can change the interface's state.
Limits (each a per-interface setting, see Interface): a listener holds at
most ``max_connections`` control connections and ``max_handshakes`` of them
not yet up.  At either cap the oldest connection that has not sent INIT is
evicted to make room, so a flood of idle connections cannot lock a good slave
out; only when every one has sent INIT is the newcomer refused.  A connection
must send INIT within INIT_TIMEOUT.  A link may bring at most ``max_regions``
regions of together ``max_region_bytes`` bytes.  When accept() runs out of
file descriptors the listener stops reading for a while (backoff) instead of
spinning on a socket that stays readable.  Every eviction and refusal is
counted in ``Listener.counters``.
"""
import array
import collections
import errno
import fcntl
import hmac
import logging
import os
import socket
import stat
import time

from memifx import access, guard, wire
from memifx.errors import MemifError
from memifx.memory import MAX_REGION_SIZE, Memory
from memifx.layout import MAX_LOG2_RING_SIZE, MAX_REGIONS, slave_layout
from memifx.ring import Queue

log = logging.getLogger("memifx")

HANDSHAKE_TIMEOUT = 3.0
INIT_TIMEOUT = 1.0      # a master's deadline for INIT after HELLO
ACCEPT_BACKOFF_MIN, ACCEPT_BACKOFF_MAX = 0.1, 1.0
ACCEPT_LOG_INTERVAL = 60.0  # one warning per episode of fd exhaustion, at most a minute
RX_POOL = 2             # receive buffers per ring slot (slave side)
# The reason for a peer that closed its socket without DISCONNECT, however
# the close shows (end of file, a reset, a broken pipe).
PEER_CLOSED = "peer closed the connection"


def sockaddr(path):
    """'@name' is an abstract socket; anything else a filesystem path."""
    return "\0" + path[1:] if path.startswith("@") else path


def is_eventfd(fd):
    try:
        return os.readlink("/proc/self/fd/%d" % fd) == "anon_inode:[eventfd]"
    except OSError:
        return False


def set_nonblocking(fd):
    fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)


class Connection:
    """What one link needs on the data path: memory, queues, peer facts."""

    def __init__(self, memory, rx, tx, peer_name, warnings=(), peer_creds=None):
        self.memory = memory
        self.rx = rx
        self.tx = tx
        self.peer_name = peer_name
        self.warnings = list(warnings)
        self.peer_creds = peer_creds     # access.Creds of the peer process

    def close(self):
        for q in self.rx + self.tx:
            q.close()


class Listener:
    """One listening socket; serves every master interface registered on its path.

    ``owner`` ((uid, gid), -1 = unchanged) and ``perm`` are applied to a
    filesystem socket after bind() and before listen(), so no peer can
    connect while the file still has the umask's mode.  ``refused`` counts
    the peers turned away before they reached an interface, by cause."""

    def __init__(self, loop, path, owner=None, perm=None):
        self.loop = loop
        self.path = path
        self.owner = owner
        self.perm = perm
        self.interfaces = {}                # interface id -> Interface
        self.refused = collections.Counter()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
        try:
            self._bind(sock)
            sock.listen(64)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.channels = {}                  # live MasterChannels, oldest first
        self.counters = {"accepted": 0, "evicted": 0, "refused": 0,
                         "init_timeouts": 0, "accept_backoffs": 0,
                         "regions_refused": 0}
        self._backoff = ACCEPT_BACKOFF_MIN
        self._resume = None                 # timer while accepting is paused
        self._logged_at = None              # last "cannot accept" warning
        loop.add_reader(sock.fileno(), self._accept)
        loop.listeners[path] = self

    def _bind(self, sock):
        addr = sockaddr(self.path)
        if not self.path.startswith("@"):
            directory = os.path.dirname(self.path) or "."
            if not os.path.isdir(directory):
                raise MemifError("socket directory %s does not exist" % directory)
            self._remove_stale_socket(addr)
        try:
            sock.bind(addr)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise MemifError("socket %s is in use by another process" % self.path)
            raise MemifError("cannot bind %s: %s" % (self.path, e.strerror))
        if not self.path.startswith("@"):
            try:
                if self.owner is not None:
                    os.chown(self.path, *self.owner)
                if self.perm is not None:
                    os.chmod(self.path, self.perm)
            except OSError as e:
                os.unlink(self.path)
                raise MemifError("cannot set owner/mode of %s: %s" % (self.path, e.strerror))

    def _remove_stale_socket(self, addr):
        """Only a socket nobody listens on may be replaced: any other file at
        the path (a regular file, a link, a directory) is someone else's and
        is an error.  The probe never blocks: a listener with a full backlog
        (EAGAIN) is alive."""
        try:
            st = os.lstat(self.path)
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(st.st_mode):
            raise MemifError("%s exists and is not a socket (not replacing it)" % self.path)
        probe = socket.socket(socket.AF_UNIX,
                              socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC)
        try:
            probe.connect(addr)
        except ConnectionRefusedError:
            os.unlink(self.path)            # stale: its listener is gone
            return
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EPROTOTYPE):
                raise MemifError("cannot probe socket %s: %s" % (self.path, e.strerror))
        finally:
            probe.close()
        raise MemifError("socket %s is in use by another process" % self.path)

    def admits(self, creds):
        """Whether any interface on this socket would admit these credentials."""
        return any(i.access.admits(creds) for i in self.interfaces.values())

    def refuse(self, cause, creds, detail=""):
        """A peer turned away before it reached an interface: count, log."""
        self.refused[cause] += 1
        log.info("memif socket %s: refused %s: %s%s", self.path,
                 access.describe_peer(creds), cause, " (%s)" % detail if detail else "")

    def hello(self):
        """HELLO advertises the largest ring counts configured on this socket."""
        intfs = list(self.interfaces.values())
        return wire.Hello(
            name=intfs[0].name if len(intfs) == 1 else "memifx",
            min_version=wire.VERSION, max_version=wire.VERSION,
            max_region=max(i.max_regions for i in intfs) - 1,
            max_m2s_ring=max(i.tx_queues for i in intfs) - 1,
            max_s2m_ring=max(i.rx_queues for i in intfs) - 1,
            max_log2_ring_size=MAX_LOG2_RING_SIZE)

    # ------------------------------------------------- connection limits

    def limit(self, name):
        """A listener-wide limit: the largest any interface on it allows."""
        return max(getattr(i, name) for i in self.interfaces.values())

    def stats(self):
        """Counters, and what is open now (for info())."""
        d = dict(self.counters)
        channels = list(self.channels)          # info() may run in another thread
        d["connections"] = len(channels)
        d["handshakes"] = sum(1 for c in channels if c.connection is None)
        d["accepting"] = self._resume is None
        return d

    def _accept(self):
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return
        except OSError as e:            # EMFILE, ENFILE, ENOBUFS, ENOMEM, ...
            self._pause(e)
            return
        if self._backoff > ACCEPT_BACKOFF_MIN:
            log.info("memifx %s: accepting connections again", self.path)
            self._backoff = ACCEPT_BACKOFF_MIN
        if not self.interfaces:
            conn.close()
            return
        self.counters["accepted"] += 1
        if not self._make_room():
            self.counters["refused"] += 1
            log.info("memifx %s: connection refused: too many connections", self.path)
            _refuse(conn, "too many connections")
            return
        MasterChannel(self, conn)

    def _make_room(self):
        """Room for one more connection under both caps: evict the oldest
        connections that have not sent INIT; False if that is not enough."""
        def over():
            handshakes = sum(1 for c in self.channels if c.connection is None)
            return (len(self.channels) >= self.limit("max_connections") or
                    handshakes >= self.limit("max_handshakes"))
        while over():
            victim = next((c for c in self.channels if c.intf is None), None)
            if victim is None:
                return False
            self.counters["evicted"] += 1
            victim.fail("too many connections")
        return True

    def forget(self, channel):
        """A channel is closed: it no longer counts against the caps."""
        self.channels.pop(channel, None)

    def _pause(self, error):
        """accept() failed, typically for lack of fds or memory: the listener
        stays readable, so stop reading it for a while instead of spinning; the
        links already up are served meanwhile.  Warned once per episode (a
        process hovering at its fd limit warns at most once a minute)."""
        self.counters["accept_backoffs"] += 1
        now = time.monotonic()
        if self._logged_at is None or now - self._logged_at >= ACCEPT_LOG_INTERVAL:
            self._logged_at = now
            log.warning("memifx %s: cannot accept connections: %s; retrying with backoff",
                        self.path, error.strerror)
        self.loop.remove_reader(self.sock.fileno())
        self._resume = self.loop.call_later(self._backoff, self._resume_accepting)
        self._backoff = min(self._backoff * 2, ACCEPT_BACKOFF_MAX)

    def _resume_accepting(self):
        self._resume = None
        if self.sock.fileno() >= 0:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def remove(self, intf):
        self.interfaces.pop(intf.id, None)
        if not self.interfaces:
            if self._resume is not None:
                self._resume.cancel()
                self._resume = None
            self.loop.remove_reader(self.sock.fileno())
            self.sock.close()
            self.loop.listeners.pop(self.path, None)
            if not self.path.startswith("@"):
                try:
                    os.unlink(self.path)
                except OSError:
                    pass


def _out_of_fds(fd):
    """Whether this process cannot open one more fd now (after MSG_CTRUNC:
    the kernel drops received fds it cannot install)."""
    try:
        os.close(os.dup(fd))
    except OSError as e:
        return e.errno in (errno.EMFILE, errno.ENFILE)
    return False


def _refuse(sock, reason):
    """Turn away an accepted connection: DISCONNECT with the reason, close."""
    try:
        sock.setblocking(False)
        sock.send(wire.encode(wire.Disconnect(code=0, reason=reason)))
    except OSError:
        pass
    sock.close()


class Channel:
    """One control connection: framing, fd passing, timeouts, teardown."""

    def __init__(self, loop, sock):
        self.loop = loop
        self.sock = sock
        self.intf = None
        self.connection = None          # set once the link is up
        self.closed = False
        try:
            self.peer_creds = access.peer_creds(sock)
        except OSError:
            self.peer_creds = None      # unknown: admitted only where no list is set
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), self._readable)
        self.timer = loop.call_later(HANDSHAKE_TIMEOUT, self.fail, "handshake timeout")

    # ------------------------------------------------------------ framing

    def send(self, msg, fd=None):
        data = wire.encode(msg)
        anc = [] if fd is None else [
            (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [fd]))]
        self.sock.sendmsg([data], anc)

    def _readable(self):
        """Handle one message.  The loop calls this once per readiness, so a
        peer that floods its socket gets one message per round, like every
        other channel, and cannot starve them."""
        if self.closed:
            return
        fds = []
        try:
            try:
                data, anc, flags = self._receive()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.down(PEER_CLOSED if e.errno in (errno.ECONNRESET, errno.EPIPE)
                          else "control socket error: %s" % e.strerror)
                return
            for level, kind, payload in anc:
                if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                    a = array.array("i")
                    a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
                    fds.extend(a)
            if not data and not fds:
                if self._peer_still_there():
                    # an empty record (SEQPACKET allows them), not end of file
                    raise MemifError("invalid message size 0")
                self.down(PEER_CLOSED)
                return
            if flags & socket.MSG_CTRUNC:
                raise MemifError("out of file descriptors" if _out_of_fds(self.sock.fileno())
                                 else "control message truncated")
            if len(fds) > 1:
                raise MemifError("too many fds in one message")
            msg = wire.decode(data)
            self.handle(msg, fds)
        except MemifError as e:
            self.fail(e.reason)
        except OSError as e:
            # A reply we could not send: the peer is gone, or it stopped
            # reading (its receive queue is full).  Either way the handshake
            # cannot go on without that message: end the link, never leave
            # it half done.
            if e.errno in (errno.EPIPE, errno.ECONNRESET):
                self.down(PEER_CLOSED)
            elif e.errno in (errno.EAGAIN, errno.ENOBUFS):
                self.down("peer does not read the control channel")
            elif e.errno in (errno.EMFILE, errno.ENFILE):
                self.fail("out of file descriptors")
            else:
                self.down("control socket error: %s" % e.strerror)
        finally:
            for fd in fds:              # whatever a handler did not take
                os.close(fd)

    def _receive(self):
        """One record: (data, ancillary data, flags).  A peer that closes
        while something we sent is still unread on its side makes the kernel
        report a reset, once, ahead of whatever the peer sent before closing
        (perhaps a DISCONNECT with its reason): read on past it, so that the
        reason the link ends with does not depend on whose close or send
        landed first."""
        # received fds are close-on-exec from the start: a child spawned
        # meanwhile must never inherit a peer's memory
        args = (wire.MSG_SIZE + 1, socket.CMSG_SPACE(4 * array.array("i").itemsize),
                socket.MSG_CMSG_CLOEXEC)
        try:
            data, anc, flags, _ = self.sock.recvmsg(*args)
        except ConnectionResetError:
            data, anc, flags, _ = self.sock.recvmsg(*args)
        return data, anc, flags

    def _peer_still_there(self):
        """After a zero-length read: at end of file another read returns
        nothing at once; a live peer has either more to read or nothing yet."""
        try:
            return bool(self.sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False

    @staticmethod
    def take_fd(fds):
        return fds.pop() if fds else None

    # ----------------------------------------------------------- teardown

    def fail(self, reason):
        """Our side ends the link: DISCONNECT with the reason, then close."""
        if self.closed:
            return
        log.info("memif %s: disconnect: %s", self.intf.name if self.intf else "?", reason)
        try:
            self.send(wire.Disconnect(code=0, reason=reason))
        except OSError:
            pass
        self.down(reason)

    def down(self, reason):
        """The link is over (either side): close the socket, tell the interface."""
        if self.closed:
            return
        self.closed = True
        self.timer.cancel()
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        if self.connection is not None:
            self.connection.close()
        self.release()
        if self.intf is not None:
            self.intf._channel_down(self, reason)

    def release(self):
        """Drop our references to memory and queues (the Connection, if any,
        keeps its own for bursts still running)."""
        self.memory = None
        self.rx = []
        self.tx = []

    def handle_disconnect(self, msg):
        self.down(msg.reason or "peer disconnected")


class MasterChannel(Channel):
    """The master's side of one accepted connection."""

    def __init__(self, listener, sock):
        super().__init__(listener.loop, sock)
        self.listener = listener
        self.memory = Memory()
        self.rx = []                     # S2M rings
        self.tx = []                     # M2S rings
        self.warnings = []
        self.peer_name = ""
        self.init_timer = self.loop.call_later(INIT_TIMEOUT, self._init_deadline)
        listener.channels[self] = None      # counts against the caps until down()
        if not listener.admits(self.peer_creds):
            # no interface here would take this peer: it hears nothing more
            # about this socket, not even the HELLO's names and ring counts
            listener.refuse("peer credentials", self.peer_creds)
            self.fail(access.NOT_ALLOWED)
            return
        try:
            self.send(listener.hello())
        except OSError:
            self.down("cannot send HELLO")

    def _init_deadline(self):
        if self.intf is None:
            self.listener.counters["init_timeouts"] += 1
            self.fail("handshake timeout")

    def down(self, reason):
        self.init_timer.cancel()
        self.listener.forget(self)
        super().down(reason)

    def handle(self, msg, fds):
        if isinstance(msg, wire.Disconnect):
            return self.handle_disconnect(msg)
        if self.intf is None:
            if not isinstance(msg, wire.Init):
                raise MemifError("message before INIT")
            return self.on_init(msg)
        if self.connection is not None:
            raise MemifError("unexpected message")
        if isinstance(msg, wire.AddRegion):
            return self.on_add_region(msg, self.take_fd(fds))
        if isinstance(msg, wire.AddRing):
            return self.on_add_ring(msg, self.take_fd(fds))
        if isinstance(msg, wire.Connect):
            return self.on_connect(msg)
        raise MemifError("unexpected message")

    def on_init(self, msg):
        if msg.version >> 8 != wire.VERSION >> 8:
            raise MemifError("unsupported version")
        intf = self.listener.interfaces.get(msg.id)
        if intf is None:
            self.listener.refuse("unmatched interface id", self.peer_creds, "id %d" % msg.id)
            raise MemifError(access.NOT_ALLOWED)
        cause = self.authenticate(intf, msg)
        if cause is None and intf._channel is not None:
            cause = "already connected"
        elif cause is None and msg.mode != intf.mode_id:
            cause = "mode mismatch"
        if cause:
            # This channel never belongs to the interface, so no link-down
            # reaches it: the interface counts the refusal, and only a peer
            # that authenticated may leave its reason in last_disconnect.
            authenticated = cause in ("already connected", "mode mismatch")
            intf.refuse(cause, self.peer_creds, authenticated)
            raise MemifError(cause if authenticated else access.NOT_ALLOWED)
        self.intf = intf
        intf._channel = self
        self.peer_name = msg.name
        self.send(wire.Ack())

    def authenticate(self, intf, msg):
        """None if this peer may use ``intf`` (credentials admitted, secret
        right), else the precise cause, for the local log and counters only."""
        if not intf.access.admits(self.peer_creds):
            return "peer credentials"
        if intf.secret:
            if not msg.secret:
                return "secret required"
            if not hmac.compare_digest(msg.secret, intf.secret):
                return "incorrect secret"
        return None

    def on_add_region(self, msg, fd):
        if fd is None:
            raise MemifError("missing memory region fd")
        try:
            self.check_region_limits(msg)
            if msg.index != self.memory.count:
                raise MemifError("unexpected region index")
            warning = self.memory.add_peer_region(fd, msg.size)
        finally:
            os.close(fd)                 # the mapping is what we keep
        if warning:
            self.warnings.append("region %d: %s" % (msg.index, warning))
        self.send(wire.Ack())

    def check_region_limits(self, msg):
        """This interface's caps on region count and total bytes (counted)."""
        reason = None
        if msg.index >= min(self.intf.max_regions, MAX_REGIONS):
            reason = "too many regions"
        elif 0 < msg.size <= MAX_REGION_SIZE and \
                sum(self.memory.sizes()) + msg.size > self.intf.max_region_bytes:
            reason = "memory regions too large"
        if reason:
            self.listener.counters["regions_refused"] += 1
            raise MemifError(reason)

    def on_add_ring(self, msg, fd):
        if fd is None:
            raise MemifError("missing ring interrupt fd")
        try:
            if not is_eventfd(fd):
                raise MemifError("ring interrupt fd is not an eventfd")
            if msg.private_hdr_size:
                raise MemifError("private headers not supported")
            s2m = bool(msg.flags & wire.RING_S2M)
            rings = self.rx if s2m else self.tx
            limit = self.intf.rx_queues if s2m else self.intf.tx_queues
            if msg.index >= limit:
                raise MemifError("too many rings")
            if msg.index != len(rings):
                raise MemifError("unexpected ring index")
            if msg.log2_ring_size > MAX_LOG2_RING_SIZE:
                raise MemifError("ring size out of range")
            set_nonblocking(fd)
            q = Queue(self.memory, msg.region, msg.offset, msg.log2_ring_size,
                      slave=False, tx=not s2m, index=msg.index, fd=fd,
                      max_frame=self.intf.max_frame)
        except BaseException:
            os.close(fd)
            raise
        rings.append(q)                  # the queue owns the eventfd now
        self.send(wire.Ack())

    def on_connect(self, msg):
        if not self.rx or not self.tx:
            raise MemifError("missing rings")
        for q in self.rx + self.tx:
            if not q.check_cookie():
                raise MemifError(guard.REASON if self.memory.faulted else "wrong cookie")
        for q in self.rx + self.tx:
            q.start()
        self.peer_name = msg.if_name or self.peer_name
        self.timer.cancel()
        self.connection = Connection(self.memory, self.rx, self.tx, self.peer_name,
                                     self.warnings, self.peer_creds)
        # Up on our side before the slave hears CONNECTED: whoever sees the
        # slave up may send to us at once, and must find us up too.
        self.intf._channel_up(self, self.connection)
        self.send(wire.Connected(if_name=self.intf.name))


class SlaveChannel(Channel):
    """The slave's side: builds memory and rings from HELLO, then the handshake."""

    def __init__(self, intf, sock):
        super().__init__(intf.loop, sock)
        self.intf = intf
        self.pending = []               # messages to send, one per ACK
        self.memory = None
        self.rx = []
        self.tx = []
        self.peer_name = ""
        self.region_fd = None

    def handle(self, msg, fds):
        if isinstance(msg, wire.Disconnect):
            return self.handle_disconnect(msg)
        if self.connection is not None:
            raise MemifError("unexpected message")
        if self.memory is None:
            if not isinstance(msg, wire.Hello):
                raise MemifError("unexpected message")
            return self.on_hello(msg)
        if isinstance(msg, wire.Ack) and self.pending:
            return self.send_next()
        if isinstance(msg, wire.Connected) and not self.pending:
            return self.on_connected(msg)
        raise MemifError("unexpected message")

    def on_hello(self, msg):
        intf = self.intf
        if not intf.access.admits(self.peer_creds):
            # the listener is not who we may give our memory to (anyone can
            # take an abstract socket name first)
            intf.refuse("peer credentials", self.peer_creds, authenticated=False)
            raise MemifError(access.NOT_ALLOWED)
        if not msg.min_version <= wire.VERSION <= msg.max_version:
            raise MemifError("incompatible protocol version")
        self.peer_name = msg.name
        n_s2m = min(intf.tx_queues, msg.max_s2m_ring + 1)
        n_m2s = min(intf.rx_queues, msg.max_m2s_ring + 1)
        log2 = min(intf.log2_ring_size, msg.max_log2_ring_size, MAX_LOG2_RING_SIZE)
        if log2 < 1:
            raise MemifError("ring size out of range")
        # a transmit ring has one buffer per slot; a receive ring a pool of
        # RX_POOL buffers per slot, so that zero-copy buffers the application
        # holds do not leave the ring empty
        layout = slave_layout(n_s2m, n_m2s, log2, intf.buffer_size, RX_POOL)
        total = layout.size
        if total >= 1 << 32:
            raise MemifError("memory region would exceed 4 GiB")
        self.memory = Memory()
        self.region_fd = self.memory.create_region(total, "memifx-" + intf.name)
        rings = []
        for i in range(n_s2m + n_m2s):
            tx = i < n_s2m                # S2M rings first, then M2S
            index = i if tx else i - n_s2m
            fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            try:
                q = Queue(self.memory, 0, layout.ring_offsets[i], log2, slave=True, tx=tx,
                          index=index, fd=fd, buffer_size=intf.buffer_size,
                          buf_offset=layout.buffer_offsets[i], nbufs=layout.nbufs[i],
                          max_frame=intf.max_frame)
            except BaseException:
                os.close(fd)
                raise
            q.init_ring()
            (self.tx if tx else self.rx).append(q)
            rings.append((wire.AddRing(flags=wire.RING_S2M if tx else 0, index=index,
                                       region=0, offset=layout.ring_offsets[i],
                                       log2_ring_size=log2, private_hdr_size=0), q.fd))
        self.pending = [
            (wire.Init(version=wire.VERSION, id=intf.id, mode=intf.mode_id,
                       secret=intf.secret or b"", name=intf.name), None),
            (wire.AddRegion(index=0, size=total), self.region_fd),
        ] + rings + [(wire.Connect(if_name=intf.name), None)]
        self.send_next()

    def send_next(self):
        msg, fd = self.pending.pop(0)
        self.send(msg, fd)
        if fd is not None and fd == self.region_fd:
            os.close(fd)                # the master holds its own copy now
            self.region_fd = None

    def on_connected(self, msg):
        self.timer.cancel()
        if msg.if_name:
            self.peer_name = msg.if_name
        for q in self.rx + self.tx:
            q.start()
        self.connection = Connection(self.memory, self.rx, self.tx, self.peer_name,
                                     peer_creds=self.peer_creds)
        self.intf._channel_up(self, self.connection)

    def down(self, reason):
        if self.region_fd is not None:
            os.close(self.region_fd)
            self.region_fd = None
        super().down(reason)


def slave_connect(intf):
    """Open a control connection for a slave interface; raise OSError if the
    master is not there (the caller retries with backoff)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_CLOEXEC)
    try:
        sock.setblocking(False)
        sock.connect(sockaddr(intf.socket))
    except OSError:
        sock.close()
        raise
    return SlaveChannel(intf, sock)
