"""memifx.Interface: one memif interface, either role, as an application sees it.

Control plane
    Sockets and handshakes run in a ControlLoop (memifx/loop.py).  By default
    that is one background thread per process, shared by every interface.
    Pass ``loop=memifx.ControlLoop()`` to drive it from your own event loop
    instead: poll ``loop.fileno()`` and call ``loop.run_once(0)`` when it is
    readable, or at the latest after ``loop.next_timeout()`` seconds.

Threading
    Data-path calls (``tx_burst``, ``rx_burst``, ...) never touch the control
    loop.  Each queue is single-threaded: use one thread per queue (different
    queues may be used from different threads at once).  Burst loops run with
    the GIL released.

While the link is down
    ``tx_burst``/``tx_from`` return 0, ``rx_burst`` returns ``[]``,
    ``rx_into`` returns 0, ``rx_zero_copy`` yields ``[]``, ``tx_alloc``
    returns ``[]`` and ``rx_fd`` returns None; ``forward`` returns 0 while
    either of its two links is down (received frames wait in the ring).
    Nothing blocks.  A slave keeps
    reconnecting (backoff up to 1 s); a master keeps listening.

Chained frames
    A frame longer than one buffer travels as a chain of descriptors.  The
    copying calls hide this: ``rx_burst`` returns each frame as one ``bytes``,
    ``rx_into`` packs whole frames, ``tx_burst``/``tx_from`` split long frames
    over as many buffers as needed, ``forward`` does both.  Zero-copy calls show the wire: one
    ``Buffer`` per descriptor, ``buf.chained`` set on all but the last of a
    frame; ``tx_alloc`` buffers each carry one frame of at most buffer_size.
    No frame longer than ``max_frame`` bytes (default DEFAULT_MAX_FRAME,
    10240) is received or sent: it is a counted drop "frame too long", and
    a received one's whole chain is consumed.  This bounds what a receive
    burst can allocate to max_frame per frame, whatever the peer announces.
    A slave's receive ring draws on a pool of two buffers per slot: while the
    application holds zero-copy buffers the ring is reposted from the pool,
    and held buffers may be handed back in any order.  A buffer must be
    handed back (``rx_zero_copy`` does it on exit): one that is dropped without
    release stays out of the pool until the link goes down.

Disconnect safety
    A link going down never unmaps memory under a running burst or a held
    zero-copy buffer: queues and buffers keep the mapping alive, and buffers
    of a dead link (or already handed back) refuse further use.

Access control
    ``allow_uid`` / ``allow_gid`` (lists of ids or names) admit only a peer
    process whose uid, or one of whose groups, is listed (the kernel's
    SO_PEERCRED/SO_PEERGROUPS, checked by a master on each slave and by a
    slave on its master); unset, everyone who can reach the socket is
    admitted.  ``owner`` ("uid:gid") and ``perm`` (0o660) set a master's
    socket file's owner and mode before it listens.
    An abstract socket ("@name") has no file: anyone in the network namespace
    can reach it, and the allow lists are the only gate.  A peer refused for
    its credentials, its secret or an unknown id hears only "peer not
    allowed"; ``info()["refused"]`` counts the precise causes, and a refused
    peer never changes the interface's state or ``last_disconnect``.

Limits (master side; a hostile local peer must not exhaust us)
    ``max_connections`` (256) control connections and ``max_handshakes`` (32)
    of them not yet up, per listening socket (the largest value among the
    interfaces sharing it).  At the cap the oldest connection that has not
    sent INIT is evicted ("too many connections"); one that sends no INIT
    within 1 s is cut off ("handshake timeout").  Per link at most
    ``max_regions`` (16; HELLO advertises it) memory regions of together
    ``max_region_bytes`` (1 GiB) bytes ("too many regions", "memory regions
    too large").  ``info()["listener"]`` counts evictions and refusals.

Peer memory that shrinks
    A master maps what its slave shared; a slave that truncates a region it
    could not seal loses its link ("memory region truncated", counted in
    ``info()["memory_faults"]``): the pages read as zeros from then on, and
    no SIGBUS reaches the process (memifx/guard.pyx).

Roles: ``slave`` (also ``client``) creates the shared memory and connects;
``master`` (also ``server``) listens.  ``ring_size`` and ``buffer_size`` are
the slave's to choose; a master uses what its slave set up.
"""
from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast

from memifx import access, control, guard, wire
from memifx.errors import MemifError
from memifx.layout import MAX_LOG2_RING_SIZE, MAX_REGIONS
from memifx.loop import default_loop
from memifx.ring import DEFAULT_MAX_FRAME, MAX_FRAME_SIZE

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

    from memifx.loop import ControlLoop, Timer
    from memifx.ring import Buffer, Queue

# callback(interface, up) of on_link
LinkCallback = Callable[["Interface", bool], object]
# counters of one queue (Queue.counters(), summed over links)
Counters = dict[str, Any]

log = logging.getLogger("memifx")

DEFAULT_SOCKET = "/run/memif.sock"
ROLES = {"master": "master", "server": "master", "slave": "slave", "client": "slave"}
RX_MODES = ("polling", "interrupt", "adaptive")
MAX_QUEUES = 255
RECONNECT_MIN, RECONNECT_MAX = 0.05, 1.0
# Master-side limits against hostile peers: (default, lowest, highest).
# Connections and handshakes are per listening socket (the largest value of
# the interfaces on it); regions and region bytes are per link.
LIMITS: dict[str, tuple[int, int, int]] = {
    "max_connections": (256, 1, 65536),
    "max_handshakes": (32, 1, 65536),
    "max_regions": (16, 1, MAX_REGIONS),
    "max_region_bytes": (1 << 30, 1 << 12, 1 << 48),
    "max_frame": (DEFAULT_MAX_FRAME, 64, MAX_FRAME_SIZE),   # longer: "frame too long"
}


class Interface:
    """One memif interface, either role (see the module docstring)."""

    def __init__(self, socket: str = DEFAULT_SOCKET, id: int = 0, role: str = "slave",
                 secret: str | bytes | None = None,
                 mode: str = "ethernet", rx_queues: int = 1, tx_queues: int = 1,
                 ring_size: int = 1024, buffer_size: int = 2048, name: str = "memifx",
                 loop: ControlLoop | None = None,
                 allow_uid: access.IdList = None, allow_gid: access.IdList = None,
                 owner: access.Owner = None, perm: int | str | None = None,
                 max_connections: int = LIMITS["max_connections"][0],
                 max_handshakes: int = LIMITS["max_handshakes"][0],
                 max_regions: int = LIMITS["max_regions"][0],
                 max_region_bytes: int = LIMITS["max_region_bytes"][0],
                 max_frame: int = LIMITS["max_frame"][0]) -> None:
        if role not in ROLES:
            raise ValueError("role must be master or slave (server/client), not %r" % role)
        if mode not in wire.MODES:
            raise ValueError("mode must be one of %s" % ", ".join(wire.MODES))
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and not 1 <= len(secret) <= wire.MAX_SECRET:
            raise ValueError("secret must be 1 to %d bytes" % wire.MAX_SECRET)
        if secret and b"\0" in secret:
            raise ValueError("secret must not contain NUL")
        for what, n in (("rx_queues", rx_queues), ("tx_queues", tx_queues)):
            if not 1 <= n <= MAX_QUEUES:
                raise ValueError("%s must be 1 to %d" % (what, MAX_QUEUES))
        if ring_size < 2 or ring_size & (ring_size - 1) or \
                ring_size > 1 << MAX_LOG2_RING_SIZE:
            raise ValueError("ring_size must be a power of two, 2 to %d"
                             % (1 << MAX_LOG2_RING_SIZE))
        if not 128 <= buffer_size <= 65535:
            raise ValueError("buffer_size must be 128 to 65535")
        if not 0 <= id < 1 << 32:
            raise ValueError("id must be a u32")
        if not socket or socket == "@":
            raise ValueError("socket path is empty")
        self.access = access.Policy(allow_uid, allow_gid)
        self.socket_owner = access.owner(owner)
        self.socket_perm = access.perm(perm)
        if (owner is not None or perm is not None) and \
                (socket.startswith("@") or ROLES.get(role) != "master"):
            raise ValueError("owner/perm apply to a master's filesystem socket (an abstract "
                             "socket has no file: use allow_uid/allow_gid)")
        # peers turned away, by precise cause
        self.refused: collections.Counter[str] = collections.Counter()
        for what, n in (("max_connections", max_connections),
                        ("max_handshakes", max_handshakes), ("max_regions", max_regions),
                        ("max_region_bytes", max_region_bytes), ("max_frame", max_frame)):
            _, lo, hi = LIMITS[what]
            if not lo <= n <= hi:
                raise ValueError("%s must be %d to %d" % (what, lo, hi))
        self.max_connections = max_connections
        self.max_handshakes = max_handshakes
        self.max_regions = max_regions
        self.max_region_bytes = max_region_bytes
        self.socket = socket
        self.id = id
        self.role = ROLES[role]
        self.secret: bytes | None = secret
        self.mode = mode
        self.mode_id = wire.MODES[mode]
        self.rx_queues = rx_queues
        self.tx_queues = tx_queues
        self.ring_size = ring_size
        self.log2_ring_size = ring_size.bit_length() - 1
        self.buffer_size = buffer_size
        self.max_frame = max_frame      # longer frames: counted drops "frame too long"
        self.name = name
        self.loop = loop
        self._channel: control.Channel | None = None    # control connection, up or in handshake
        self._conn: control.Connection | None = None    # while the link is up
        self._listener: control.Listener | None = None
        self._retry: Timer | None = None
        self._backoff = RECONNECT_MIN
        self._active = False
        self._callbacks: list[LinkCallback] = []
        self.rx_modes = ["polling"] * rx_queues     # per receive queue; set with set_rx_mode
        self._up = threading.Condition()
        self._last_reason: str | None = None
        self._totals: dict[str, list[Counters | None]] = {
            "rx": [None] * rx_queues, "tx": [None] * tx_queues}
        # A link going down: its queues still count in stats() until their
        # counters are in _totals (the link-down callbacks run in between).
        self._going: control.Connection | None = None
        self._counting = threading.Lock()   # _totals and _going change together
        self._flaps = 0
        self._memory_faults = 0         # links lost to a truncated peer region

    # ----------------------------------------------------------- lifecycle

    def connect(self) -> Interface:
        """Start listening (master) or connecting (slave).  Returns at once."""
        if self.loop is None:
            self.loop = default_loop()
        self.loop.run_sync(self._start)
        return self

    def __enter__(self) -> Interface:
        return self.connect()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        if self._active:
            return
        assert self.loop is not None
        if self.role == "master":
            listener = self.loop.listeners.get(self.socket) or \
                control.Listener(self.loop, self.socket, self.socket_owner, self.socket_perm)
            for what, mine, theirs in (("owner", self.socket_owner, listener.owner),
                                       ("perm", self.socket_perm, listener.perm)):
                if mine is not None and mine != theirs:
                    if not listener.interfaces:
                        listener.remove(self)
                    raise MemifError("socket %s already listens with another %s"
                                     % (self.socket, what))
            if self.id in listener.interfaces:
                if not listener.interfaces:
                    listener.remove(self)
                raise MemifError("interface id %d already in use on %s" % (self.id, self.socket))
            listener.interfaces[self.id] = self
            self._listener = listener
        self._active = True
        if self.role == "slave":
            self._try_connect()

    def _try_connect(self) -> None:
        self._retry = None
        if not self._active or self._channel is not None:
            return
        try:
            self._channel = control.slave_connect(self)
        except OSError as e:
            log.debug("memif %s: connect %s: %s", self.name, self.socket, e)
            self._schedule_reconnect()

    def _schedule_reconnect(self) -> None:
        if self._active and self._retry is None and self.loop is not None:
            self._retry = self.loop.call_later(self._backoff, self._try_connect)
            self._backoff = min(self._backoff * 2, RECONNECT_MAX)

    def close(self, reason: str = "interface closed") -> None:
        """Disconnect (DISCONNECT with ``reason``), stop listening/reconnecting."""
        if self.loop is None:
            return
        self.loop.run_sync(self._stop, reason)

    def _stop(self, reason: str) -> None:
        self._active = False
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        if self._channel is not None:
            self._channel.fail(reason)
        if self._listener is not None:
            self._listener.remove(self)
            self._listener = None

    # ------------------------------------------------- called by channels

    def _channel_up(self, channel: object, conn: control.Connection) -> None:
        self._backoff = RECONNECT_MIN
        for i, q in enumerate(conn.rx):
            if self.rx_modes[i] == "interrupt":
                q.set_interrupt(True)
        # The fault guard calls this from a control loop if the peer
        # truncates a region under us (cleared at link-down: no cycle left).
        conn.memory.on_fault = lambda: self.report_fault(conn, guard.REASON)
        with self._up:
            self._conn = conn
            self._up.notify_all()
        log.info("memif %s: link up (peer %r)", self.name, conn.peer_name)
        self._notify(True)

    def _channel_down(self, channel: object, reason: str) -> None:
        if channel is not self._channel:
            return
        self._channel = None
        with self._counting:
            conn, self._conn = self._conn, None
            self._going = conn
        self._last_reason = reason
        if conn is not None:
            conn.memory.on_fault = None
            if reason == guard.REASON:
                self._memory_faults += 1
            self._flaps += 1
            log.info("memif %s: link down: %s", self.name, reason)
            # Callbacks first: a worker pool stops its workers' use of these
            # queues there, so the counters read below are final.
            self._notify(False)
            with self._counting:
                for kind, queues in (("rx", conn.rx), ("tx", conn.tx)):
                    for q in queues:
                        self._totals[kind][q.index] = _sum(self._totals[kind][q.index],
                                                          q.counters())
                self._going = None
        if self.role == "slave":
            self._schedule_reconnect()

    def fold_counters(self, kind: str, index: int, counters: Counters | None) -> None:
        """Fold counters a worker process kept for one of our queues into the
        totals (a worker pool calls this when the worker lets go of the queue)."""
        with self._counting:
            self._totals[kind][index] = _sum(self._totals[kind][index], counters)

    def _notify(self, up: bool) -> None:
        for cb in list(self._callbacks):
            try:
                cb(self, up)
            except Exception:
                log.exception("memif %s: link callback failed", self.name)

    def refuse(self, cause: str, creds: access.Creds | None, authenticated: bool) -> None:
        """The control channel turned a peer away on this interface: count
        the precise cause and log it.  Only a peer that proved it may use
        this interface (credentials and secret) leaves its reason in
        ``last_disconnect``; a stranger changes nothing but the counter."""
        self.refused[cause] += 1
        log.info("memif %s: refused %s: %s", self.name, access.describe_peer(creds), cause)
        if authenticated:
            self._last_reason = cause

    def report_fault(self, conn: control.Connection, reason: str) -> None:
        """Take the link of ``conn`` (the ``connection`` it was found on)
        down with ``reason``, from the control loop; nothing if the link has
        been replaced since.  Any thread may call it (a worker pool does, for
        faults its workers saw)."""
        if conn.memory.faulted:
            # Whatever the rings made of the zeros, the cause is the truncation.
            reason = guard.REASON

        def fail() -> None:
            if self._conn is conn and self._channel is not None:
                self._channel.fail(reason)
        assert self.loop is not None
        self.loop.call_soon(fail)

    # ---------------------------------------------------------- state

    @property
    def connected(self) -> bool:
        """Whether the link is up."""
        return self._conn is not None

    @property
    def connection(self) -> control.Connection | None:
        """The link's Connection (memory, rx and tx queues, peer) while it is
        up, else None.  Read it once and keep the object: it is replaced at
        every reconnect."""
        return self._conn

    def wait_connected(self, timeout: float = 5.0) -> bool:
        """True once the link is up (False after ``timeout`` seconds)."""
        if self.loop is not None and not self.loop.threaded:
            import time
            end = time.monotonic() + timeout
            while self._conn is None and time.monotonic() < end:
                self.loop.run_once(min(0.05, max(0.0, end - time.monotonic())))
            return self._conn is not None
        with self._up:
            return self._up.wait_for(lambda: self._conn is not None, timeout)

    def on_link(self, callback: LinkCallback, first: bool = False) -> None:
        """callback(interface, up: bool), called from the control loop, in
        registration order (``first``: before those already registered)."""
        if first:
            self._callbacks.insert(0, callback)
        else:
            self._callbacks.append(callback)

    def remove_on_link(self, callback: LinkCallback) -> None:
        """Stop calling ``callback`` (registered with on_link); no error if
        it is not registered."""
        try:
            self._callbacks.remove(callback)
        except ValueError:
            pass

    def info(self) -> dict[str, Any]:
        """State, peer, configuration and (while up) the negotiated link, for display."""
        conn = self._conn
        d: dict[str, Any] = {
            "name": self.name, "role": self.role, "socket": self.socket, "id": self.id,
            "mode": self.mode,
            "state": "up" if conn else ("connecting" if self._channel else
                                        ("listening" if self._listener else "down")),
            "peer_name": conn.peer_name if conn else None,
            "peer": access.as_dict(conn.peer_creds) if conn else None,
            "last_disconnect": self._last_reason,
            "link_flaps": self._flaps,
            "refused": dict(self.refused),
            "access": self.access.describe(),
            "memory_faults": self._memory_faults,
            "configured": {"rx_queues": self.rx_queues, "tx_queues": self.tx_queues,
                           "ring_size": self.ring_size, "buffer_size": self.buffer_size,
                           "max_frame": self.max_frame},
        }
        listener = self._listener
        if listener is not None:
            d["listener"] = listener.stats()
        if conn:
            d.update({
                "rx_queues": len(conn.rx), "tx_queues": len(conn.tx),
                "rx_ring_sizes": [q.size for q in conn.rx],
                "tx_ring_sizes": [q.size for q in conn.tx],
                "buffer_size": self.buffer_size if self.role == "slave" else None,
                "regions": conn.memory.sizes(),
                "rx_modes": list(self.rx_modes[:len(conn.rx)]),
                "warnings": list(conn.warnings),
            })
        listener = self._listener
        if listener is not None:
            # peers refused before they named an interface on this socket
            d["socket_refused"] = dict(listener.refused)
        return d

    def stats(self) -> dict[str, Any]:
        """Per-queue counters since creation (across reconnects)."""
        out: dict[str, Any] = {}
        with self._counting:
            conn = self._conn or self._going
            for kind, n in (("rx", self.rx_queues), ("tx", self.tx_queues)):
                live = {q.index: q.counters() for q in getattr(conn, kind)} if conn else {}
                out[kind] = [_sum(self._totals[kind][i], live.get(i)) for i in range(n)]
        out["link_flaps"] = self._flaps
        out["refused"] = dict(self.refused)
        out["memory_faults"] = self._memory_faults
        return out

    # ----------------------------------------------------------- data path

    def _q(self, kind: str, queue: int) -> tuple[Queue, control.Connection] | tuple[None, None]:
        limit = self.rx_queues if kind == "rx" else self.tx_queues
        if not 0 <= queue < limit:
            raise IndexError("%s queue %d out of range (0..%d)" % (kind, queue, limit - 1))
        conn = self._conn
        if conn is None:
            return None, None
        queues: list[Queue] = conn.rx if kind == "rx" else conn.tx
        return (queues[queue], conn) if queue < len(queues) else (None, None)

    def _after(self, q: Queue, conn: control.Connection | None) -> None:
        if q.fault and conn is not None:
            self.report_fault(conn, _fault_reason(q))

    def active_queues(self, kind: str) -> list[Queue]:
        """The negotiated data-path Queue objects ("rx" or "tx") for pipeline
        nodes; [] while the link is down.  After a node ran on them, call
        check_faults()."""
        conn = self._conn
        if conn is None:
            return []
        queues: list[Queue] = conn.rx if kind == "rx" else conn.tx
        return queues

    def check_faults(self) -> None:
        """End the link if the peer broke one of its rings (see ring.pyx)."""
        conn = self._conn
        if conn is not None:
            for q in conn.rx + conn.tx:
                if q.fault:
                    self.report_fault(conn, _fault_reason(q))
                    return

    def tx_burst(self, frames: Sequence[ReadableBuffer], queue: int = 0) -> int:
        """Copy bytes-like frames into the ring; return how many were queued."""
        q, conn = self._q("tx", queue)
        if q is None:
            return 0
        n = q.tx_frames(frames)
        self._after(q, conn)
        return n

    def tx_from(self, buf: ReadableBuffer, lengths: ReadableBuffer, queue: int = 0) -> int:
        """Transmit frames packed back to back in ``buf`` (lengths: uint32 array)."""
        # The batch calls are the per-burst path: the queue is looked up
        # inline (no _q/_after calls), which is a fair part of a burst's
        # Python cost.
        conn = self._conn
        if conn is not None and 0 <= queue < self.tx_queues and queue < len(conn.tx):
            q = conn.tx[queue]
            n: int = q.tx_batch(buf, lengths)
            if q.fault:
                self.report_fault(conn, _fault_reason(q))
            return n
        self._q("tx", queue)        # IndexError for a queue out of range
        return 0

    def rx_burst(self, queue: int = 0, max: int = 256) -> list[bytes]:
        """Up to ``max`` received frames as bytes; [] if none or link down."""
        q, conn = self._q("rx", queue)
        if q is None:
            return []
        frames = q.rx_frames(max)
        self._after(q, conn)
        return frames

    def rx_into(self, buf: WriteableBuffer, lengths: WriteableBuffer, queue: int = 0) -> int:
        """Copy frames back to back into writable ``buf``, lengths into the
        writable uint32 array ``lengths``; return the number of frames."""
        conn = self._conn
        if conn is not None and 0 <= queue < self.rx_queues and queue < len(conn.rx):
            q = conn.rx[queue]
            n: int = q.rx_batch(buf, lengths)
            if q.fault:
                self.report_fault(conn, _fault_reason(q))
            return n
        self._q("rx", queue)        # IndexError for a queue out of range
        return 0

    def forward(self, to: Interface, max: int = 256, queue: int = 0, to_queue: int = 0) -> int:
        """Move up to ``max`` frames received on ``queue`` to transmit queue
        ``to_queue`` of ``to`` (another interface, or this one), each frame
        copied once, ring buffer to ring buffer, with no Python per frame
        and the GIL released: what ``rx_into`` then ``tx_from`` do, without
        the intermediate buffer and its second copy.  Returns the frames
        queued on ``to``.

        Frames ``to`` cannot take now (its ring is full, its link is down)
        stay in this receive ring for the next call: nothing is dropped but
        a frame longer than ``to`` can send, counted "frame too long" on its
        transmit queue.  The calling thread uses both queues."""
        conn = self._conn
        peer = to._conn
        if conn is not None and peer is not None and 0 <= queue < self.rx_queues and \
                0 <= to_queue < to.tx_queues and queue < len(conn.rx) and \
                to_queue < len(peer.tx):
            rxq, txq = conn.rx[queue], peer.tx[to_queue]
            n: int = rxq.forward(txq, max)
            if rxq.fault:
                self.report_fault(conn, _fault_reason(rxq))
            if txq.fault:
                to.report_fault(peer, _fault_reason(txq))
            return n
        self._q("rx", queue)        # IndexError for a queue out of range
        to._q("tx", to_queue)
        return 0

    @contextmanager
    def rx_zero_copy(self, queue: int = 0, max: int = 256) -> Iterator[list[Buffer]]:
        """Slave: yield Buffer objects viewing shared memory; they go back to
        the ring when the block exits (release every memoryview first)."""
        if self.role != "slave":
            raise MemifError("zero-copy receive is for the slave side")
        q, conn = self._q("rx", queue)
        if q is None:
            yield []
            return
        bufs = q.rx_buffers(max)
        self._after(q, conn)
        try:
            yield bufs
        finally:
            q.release_buffers(bufs)

    def tx_alloc(self, n: int, queue: int = 0) -> list[Buffer]:
        """Slave: lend up to ``n`` free transmit buffers (each one frame)."""
        if self.role != "slave":
            raise MemifError("tx_alloc is for the slave side")
        q, conn = self._q("tx", queue)
        if q is None:
            return []
        bufs = q.tx_alloc(n)
        self._after(q, conn)
        return bufs

    def tx_commit(self, bufs: Iterable[Buffer], lengths: Iterable[int], queue: int = 0) -> int:
        """Slave: send the first len(bufs) buffers from tx_alloc with these lengths."""
        q, conn = self._q("tx", queue)
        if q is None:
            return 0
        n = q.tx_commit(list(bufs), list(lengths))
        self._after(q, conn)
        return n

    # ---------------------------------------------------------- interrupts

    def set_rx_mode(self, mode: str, queue: int = 0) -> None:
        """"polling" (MASK_INT set: the peer never signals), "interrupt"
        (the peer signals rx_fd(queue) after publishing), or "adaptive" (starts
        polling; a run loop's rxmode.Idler switches it to interrupt when the
        queue is quiet and back on the first wakeup)."""
        if mode not in RX_MODES:
            raise ValueError("rx mode must be polling, interrupt or adaptive")
        self._q("rx", queue)
        self.rx_modes[queue] = mode
        q, _ = self._q("rx", queue)
        if q is not None:
            q.set_interrupt(mode == "interrupt")

    def rx_fd(self, queue: int = 0) -> int | None:
        """The eventfd that becomes readable when the peer signals this queue
        (None while down; a new fd after each reconnect)."""
        q, _ = self._q("rx", queue)
        return q.fd if q is not None else None

    def rx_pending(self, queue: int = 0) -> bool:
        """Whether frames are waiting (cheap; no syscall)."""
        q, _ = self._q("rx", queue)
        return q is not None and q.pending()

    def rx_ack(self, queue: int = 0) -> bool:
        """Clear rx_fd(queue) after it was readable."""
        q, conn = self._q("rx", queue)
        if q is None:
            return False
        woken = q.drain()
        self._after(q, conn)
        return woken

    def __repr__(self) -> str:
        return "<memifx.Interface %s %s %s id=%d %s>" % (
            self.name, self.role, self.socket, self.id, self.info()["state"])


def _fault_reason(q: Queue) -> str:
    """The reason string of a queue whose ``fault`` is set (always a known one)."""
    return cast(str, q.fault_reason())


def _sum(*counters: Counters | None) -> Counters:
    """Add queue counter dicts (None counts as zero)."""
    from memifx.stats.schema import QUEUE       # not at the top: keeps `import memifx` light
    return QUEUE.add(*counters)
