"""Writing this process's stats file (layout: memifx/stats/layout.py).

Counters
    Each configured queue has a *base* slot, the sum of its connections that
    are gone, and while the link is up a *live* slot the queue's data path
    counts into directly (memifx/slots.pyx points the Queue at it): a reader
    shows base + live.  At link down the live slot is added into the base and
    retired; a new connection gets a fresh slot, so a late increment from a
    burst that was still running on the old queue can never land in the new
    connection's counters (retired slots are reused after SLOT_GRACE seconds).
    Moving counters and changing metadata happen with the seqlock odd, so a
    reader never sees a connection's counters twice or not at all.
    A slot's u64s are schema.QUEUE's, in its order; the metadata lists them.
    Node counters (xconnect directions, ip4-forward's per-queue counters and
    drops by reason, gen/sink) are copied into the metadata every REFRESH
    seconds by a background thread: cheap, never per packet.  A worker's
    xconnect and ip4 router nodes count straight into slots of their own
    (``node_slot``, ``attach_node_fd``; a slot is as large as the node's
    counter block), which outlive the worker: a killed worker loses none of
    its counts, and the one that replaces it continues in the same slots.
    Every slot, queue or node, starts on a SLOT_ALIGN block of its own, so
    no two slots share a cache line.

The file is removed at exit (``close``, registered with atexit by
``process_stats``).
"""
from __future__ import annotations

import atexit
import collections
import json
import logging
import mmap
import os
import shlex
import stat
import struct
import sys
import threading
import time
from contextlib import contextmanager
from typing import (TYPE_CHECKING, Any, Callable, Deque, Dict, Iterator, List, Optional,
                    Sequence, Tuple)

import psutil

from memifx import slots
from memifx.counted import CountedNode
from memifx.ring import Queue
from memifx.stats import schema
from memifx.stats.exporters import MetricsServer, prometheus_text
from memifx.stats.layout import (HEADER, MAGIC, META, META_AT, PAGE, SEQ, VERSION,
                                 page_round, stats_dir, unlink)
from memifx.stats.reader import FileGrew, Process, read_mapping

if TYPE_CHECKING:
    from memifx.interface import Interface      # not at run time: interface imports stats

log = logging.getLogger("memifx")

META_INITIAL = 16 * PAGE
CHUNK = 16 * PAGE           # counter slots are allocated this much at a time
REFRESH = 0.5               # seconds between metadata/node counter refreshes
SLOT_GRACE = 2.0            # seconds before a retired live slot is reused
SLOT = slots.COUNTER_SIZE   # bytes of one queue's counters (counters_t = schema.QUEUE)
# Every slot starts on a block of its own of this many bytes: two cache lines,
# a line and the neighbour the adjacent-line prefetcher fetches with it.
# Slots are written at every burst by workers on different CPUs; packed at
# SLOT bytes, one queue's ring_full or irq_sent shared a line with the next
# queue's packets, and each such write took the line from the other CPU.
SLOT_ALIGN = 128
_U64S = struct.Struct("=%dQ" % (SLOT // 8))


def _command_line() -> str:
    return " ".join(["memifx"] + [shlex.quote(a) for a in sys.argv[1:]])


class _Region:
    """One mapped, page-aligned part of the file."""

    __slots__ = ("offset", "size", "mm")

    def __init__(self, offset: int, size: int, mm: mmap.mmap) -> None:
        self.offset, self.size, self.mm = offset, size, mm


SlotRef = Tuple[_Region, int]   # a counter slot: (region, offset in region)
NodeProvider = Callable[[], List[Dict[str, Any]]]     # StatsFile.set_nodes


class _Tracked:
    """One interface in the file: base slots per configured queue, the live
    slot of each connected queue, and who serves which queue."""

    def __init__(self, intf: Interface) -> None:
        self.intf = intf
        self.base: Dict[str, List[SlotRef]] = {"rx": [], "tx": []}
        self.live: Dict[str, Dict[int, Tuple[Queue, _Region, int]]] = \
            {"rx": {}, "tx": {}}                # index -> (queue, region, offset)
        # (kind, index) -> (worker, cpu)
        self.workers: Dict[Tuple[str, int], Tuple[Optional[int], Optional[int]]] = {}


# Mappings of closed files stay mapped until exit: a burst that was still
# running on another thread may hold a pointer into them.
_retired_regions: List[List[_Region]] = []


class StatsFile:
    """The stats file of this process (see the module docstring).

    ``anonymous=True`` keeps the same layout in a memfd nobody else sees:
    used when the directory cannot be written, so --prometheus-port still
    works."""

    def __init__(self, directory: Optional[str] = None, anonymous: bool = False) -> None:
        self.pid = os.getpid()
        self.start_time = psutil.Process().create_time()
        self.path: Optional[str] = None
        self.closed = False
        self._lock = threading.RLock()
        self._regions: List[_Region] = []
        self._size = 0
        self._chunk: Optional[_Region] = None
        self._chunk_used = 0
        # retired live slots: (retired at, region, offset)
        self._free: Deque[Tuple[float, _Region, int]] = collections.deque()
        self._tracked: List[_Tracked] = []
        self._nodes: Optional[NodeProvider] = None
        self._node_entries: List[Dict[str, Any]] = []
        self._meta_json: Optional[bytes] = None
        self._servers: List[MetricsServer] = []
        self._stop = threading.Event()
        tmp: Optional[str] = None
        if anonymous:
            self._fd = os.memfd_create("memifx-stats", os.MFD_CLOEXEC)
        else:
            d = directory or stats_dir()
            os.makedirs(d, mode=0o755, exist_ok=True)
            st = os.lstat(d)
            if not stat.S_ISDIR(st.st_mode) or st.st_uid not in (os.geteuid(), 0):
                raise PermissionError("%s is not a directory of ours" % d)
            tmp = os.path.join(d, ".%d.tmp" % self.pid)
            self._fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC |
                               os.O_NOFOLLOW, 0o644)
        try:
            self._header = self._append(PAGE)
            self._meta = self._append(META_INITIAL)
            HEADER.pack_into(self._header.mm, 0, MAGIC, VERSION, HEADER.size, self.pid,
                             self.start_time, 0, self._meta.offset, self._meta.size, 0)
            self._write_meta(self._dumps(self._build_meta()))
            if tmp is not None:
                # readers only look at complete files: rename is atomic
                self.path = os.path.join(os.path.dirname(tmp), "%d.stats" % self.pid)
                os.rename(tmp, self.path)
        except BaseException:
            os.close(self._fd)
            if tmp is not None:
                unlink(tmp)
            raise
        self._thread = threading.Thread(target=self._refresher, name="memifx-stats",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ regions

    def _append(self, size: int) -> _Region:
        size = page_round(size)
        os.ftruncate(self._fd, self._size + size)
        r = _Region(self._size, size, mmap.mmap(self._fd, size, offset=self._size))
        self._regions.append(r)
        self._size += size
        return r

    def _alloc(self) -> SlotRef:
        """A zeroed counter slot: (region, offset in region)."""
        if self._free and time.monotonic() - self._free[0][0] >= SLOT_GRACE:
            _, region, off = self._free.popleft()
            _U64S.pack_into(region.mm, off, *([0] * (SLOT // 8)))
            return region, off
        return self._new_slot()

    def _new_slot(self, size: int = SLOT) -> SlotRef:
        """A never used (zero) slot of ``size`` bytes (in one region, on
        SLOT_ALIGN blocks of its own): (region, offset in region)."""
        size = -(-size // SLOT_ALIGN) * SLOT_ALIGN
        if self._chunk is None or self._chunk_used + size > self._chunk.size:
            self._chunk, self._chunk_used = self._append(max(CHUNK, size)), 0
        region, off = self._chunk, self._chunk_used
        self._chunk_used += size
        return region, off

    @staticmethod
    def _read(slot: SlotRef) -> List[int]:
        region, off = slot
        return list(_U64S.unpack_from(region.mm, off))

    @staticmethod
    def _write(slot: SlotRef, values: Sequence[int]) -> None:
        region, off = slot
        _U64S.pack_into(region.mm, off, *values)

    # ----------------------------------------------------------- metadata

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Change counters or metadata with the seqlock odd; the metadata is
        rebuilt and written before it turns even again."""
        slots.seq_begin(self._header.mm, SEQ)
        try:
            yield
        finally:
            try:
                self._write_meta(self._dumps(self._build_meta()))
            finally:
                slots.seq_end(self._header.mm, SEQ)

    def _dumps(self, meta: Dict[str, Any]) -> bytes:
        return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()

    def _write_meta(self, data: bytes) -> None:
        if len(data) > self._meta.size:
            self._meta = self._append(2 * len(data))
        self._meta.mm[:len(data)] = data
        META.pack_into(self._header.mm, META_AT, self._meta.offset,
                         self._meta.size, len(data))
        self._meta_json = data

    def _build_meta(self) -> Dict[str, Any]:
        return {
            "pid": self.pid, "started": self.start_time,
            "command": _command_line(), "cmdline": list(sys.argv),
            "counter_size": SLOT, "counter_fields": schema.QUEUE.fields(),
            "interfaces": [self._describe(t) for t in self._tracked],
            "nodes": self._node_entries,
        }

    def _describe(self, t: _Tracked) -> Dict[str, Any]:
        info = t.intf.info()
        keys = ("name", "role", "socket", "id", "mode", "state", "peer_name",
                "last_disconnect", "link_flaps", "configured", "rx_queues", "tx_queues",
                "peer", "refused", "socket_refused", "listener", "memory_faults")
        d: Dict[str, Any] = {k: info.get(k) for k in keys}
        modes = list(getattr(t.intf, "rx_modes", []))
        d["queues"] = {}
        for kind in ("rx", "tx"):
            qs: List[Dict[str, Any]] = []
            for i, base in enumerate(t.base[kind]):
                live = t.live[kind].get(i)
                worker, cpu = t.workers.get((kind, i), (None, None))
                qs.append({"queue": i, "base": base[0].offset + base[1],
                           "live": live[1].offset + live[2] if live else None,
                           "rx_mode": modes[i] if kind == "rx" and i < len(modes) else None,
                           "worker": worker, "cpu": cpu})
            d["queues"][kind] = qs
        return d

    def refresh(self) -> None:
        """Copy node counters and interface state in (the refresher thread
        does it every REFRESH seconds); a no-op when nothing changed."""
        with self._lock:
            if self.closed:
                return
            if self._nodes is not None:
                try:
                    self._node_entries = list(self._nodes())
                except Exception:
                    log.debug("stats: node counters failed", exc_info=True)
            data = self._dumps(self._build_meta())
            if data != self._meta_json:
                slots.seq_begin(self._header.mm, SEQ)
                try:
                    self._write_meta(data)
                finally:
                    slots.seq_end(self._header.mm, SEQ)

    def _refresher(self) -> None:
        while not self._stop.wait(REFRESH):
            try:
                self.refresh()
            except Exception:
                log.exception("stats: refresh failed")

    # --------------------------------------------------------- interfaces

    def track(self, intf: Interface) -> None:
        """Count ``intf``'s queues in this file from now on (totals from
        before are carried over), following reconnects."""
        with self._lock:
            if self.closed or any(t.intf is intf for t in self._tracked):
                return
            t = _Tracked(intf)
            totals = intf.stats()
            live = {kind: {q.index: q.counters() for q in intf.active_queues(kind)}
                    for kind in ("rx", "tx")}
            with self._writing():
                for kind in ("rx", "tx"):
                    for i, total in enumerate(totals[kind]):
                        slot = self._alloc()
                        gone = zip(schema.QUEUE.flat(total),
                                   schema.QUEUE.flat(live[kind].get(i)))
                        self._write(slot, [max(0, a - b) for a, b in gone])
                        t.base[kind].append(slot)
                self._tracked.append(t)
                intf.on_link(self.link_changed)
                if intf.connected:
                    self._attach(t)

    def untrack(self, intf: Interface) -> None:
        """Stop counting ``intf`` here (an interface removed for good): its
        queues count privately again, it leaves the file's description, and
        its slots are reused after SLOT_GRACE (a reader may still hold the
        old description)."""
        with self._lock:
            mine = [t for t in self._tracked if t.intf is intf]
            if self.closed or not mine:
                return
            intf.remove_on_link(self.link_changed)
            now = time.monotonic()
            with self._writing():
                for t in mine:
                    self._fold(t)
                    self._tracked.remove(t)
                    for kind in ("rx", "tx"):
                        self._free.extend((now, region, off) for region, off in t.base[kind])

    def set_nodes(self, provider: NodeProvider) -> None:
        """provider() -> a list of node counter dicts: "node" (its name), any
        of "interface", "queue", "direction" (labels), numbers, and "drops"
        ({reason: n}).  Called from the refresher thread."""
        with self._lock:
            self._nodes = provider
        self.refresh()

    def set_worker(self, intf: Interface, kind: str, index: int, worker: int,
                   cpu: Optional[int] = None) -> None:
        """Record which worker (and CPU) serves a queue, for show/metrics."""
        with self._lock:
            for t in self._tracked:
                if t.intf is intf:
                    t.workers[(kind, index)] = (worker, cpu)
        self.refresh()

    def clear_workers(self, intf: Interface) -> None:
        """No worker serves ``intf``'s queues any more (its pool stopped)."""
        with self._lock:
            for t in self._tracked:
                if t.intf is intf:
                    t.workers.clear()
        self.refresh()

    def live_slot(self, intf: Interface, kind: str, index: int) -> Optional[int]:
        """File offset of the slot ``intf``'s queue counts into now (None
        while down).  A worker process that runs the queue maps fileno() and
        attaches its own Queue there (attach_fd); the slot changes with each
        connection."""
        with self._lock:
            for t in self._tracked:
                if t.intf is intf:
                    live = t.live[kind].get(index)
                    return live[1].offset + live[2] if live else None
        return None

    def fileno(self) -> int:
        return self._fd

    def node_slot(self, size: int = SLOT) -> int:
        """File offset of a new zeroed slot of ``size`` bytes for one counter
        block of a worker's node (attach_node_fd; the node's
        counter_block_size()); it lives as long as this file."""
        with self._lock:
            region, off = self._new_slot(size)
            return region.offset + off

    def read_slot(self, offset: int, size: int = SLOT) -> List[int]:
        """The u64s of the ``size``-byte slot at file offset ``offset`` (also
        after close: the mappings stay until exit)."""
        for r in self._regions:
            if r.offset <= offset and offset + size <= r.offset + r.size:
                return list(struct.unpack_from("=%dQ" % (size // 8), r.mm, offset - r.offset))
        raise ValueError("no slot at offset %d" % offset)

    def link_changed(self, intf: Interface, up: bool) -> None:
        with self._lock:
            if self.closed:
                return
            for t in self._tracked:
                if t.intf is intf:
                    with self._writing():
                        if up:
                            self._attach(t)
                        else:
                            self._fold(t)

    def _attach(self, t: _Tracked) -> None:
        for kind in ("rx", "tx"):
            for q in t.intf.active_queues(kind):
                cur = t.live[kind].get(q.index)
                if cur is not None:
                    if cur[0] is q:
                        continue
                    self._fold_one(t, kind, q.index)
                if q.index >= len(t.base[kind]):
                    continue
                region, off = self._alloc()
                slots.attach(q, region.mm, off, region)
                t.live[kind][q.index] = (q, region, off)

    def _fold(self, t: _Tracked) -> None:
        for kind in ("rx", "tx"):
            for index in list(t.live[kind]):
                self._fold_one(t, kind, index)

    def _fold_one(self, t: _Tracked, kind: str, index: int) -> None:
        q, region, off = t.live[kind].pop(index)
        slots.detach(q)
        live = self._read((region, off))
        base = t.base[kind][index]
        self._write(base, [a + b for a, b in zip(self._read(base), live)])
        self._free.append((time.monotonic(), region, off))

    # -------------------------------------------------------------- reading

    def read(self) -> Optional[Process]:
        """This process's counters, parsed the way ``memifx show`` does."""
        for _ in range(20):
            with self._lock:
                if self.closed:
                    return None
                mm = mmap.mmap(self._fd, self._size, prot=mmap.PROT_READ)
            try:
                return read_mapping(mm)
            except FileGrew:
                continue                # it grew meanwhile: map it again
            finally:
                mm.close()
        return None

    def serve_metrics(self, port: int, host: str = "") -> MetricsServer:
        server = MetricsServer(port, lambda: prometheus_text(self.read()), host)
        self._servers.append(server)
        return server

    # ------------------------------------------------------------------ exit

    def close(self) -> None:
        """Stop the refresher and metrics servers and remove the file.
        Queues count privately again; mappings stay until exit."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if os.getpid() != self.pid:
                return                  # a forked child: the file is its parent's
            for t in self._tracked:
                for kind in ("rx", "tx"):
                    for q, _, _ in t.live[kind].values():
                        slots.detach(q)
            if self.path is not None:
                unlink(self.path)
            _retired_regions.append(self._regions)
            os.close(self._fd)
        self._stop.set()
        for s in self._servers:
            s.close()
        if self._thread is not threading.current_thread():
            self._thread.join(2)


# ------------------------------------------------------------ this process

_current: Optional[StatsFile] = None
_warned = False


def process_stats(directory: Optional[str] = None) -> Optional[StatsFile]:
    """This process's StatsFile, created on first use.  When the directory
    cannot be written, warn once on stderr and keep the counters in memory
    only (--prometheus-port still works, ``memifx show`` will not list us)."""
    global _current, _warned
    if _current is not None and not _current.closed and _current.pid == os.getpid():
        return _current
    try:
        _current = StatsFile(directory)
    except OSError as e:
        if not _warned:
            _warned = True
            sys.stderr.write("memifx: warning: no stats file in %s (%s); memifx show "
                             "will not list this process\n" % (directory or stats_dir(), e))
        try:
            _current = StatsFile(anonymous=True)
        except OSError:
            _current = None
    if _current is not None:
        atexit.register(_current.close)
    return _current


def attach_fd(queue: Queue, fd: int, offset: int) -> None:
    """Make ``queue`` (e.g. in a worker process) count into the slot at file
    offset ``offset`` of a stats file open as ``fd``.  The mapping lives as
    long as the queue counts there."""
    start = offset // PAGE * PAGE
    mm = mmap.mmap(fd, page_round(offset - start + SLOT), offset=start)
    slots.attach(queue, mm, offset - start, mm)


def attach_node_fd(node: CountedNode, fd: int, offset: int, block: int = 0) -> None:
    """Make counter block ``block`` of ``node`` (a memifx.counted.CountedNode
    in a worker: XConnect, Router) count into the node slot at file offset
    ``offset`` (node_slot) of a stats file open as ``fd``, adding to what the
    slot holds."""
    start = offset // PAGE * PAGE
    mm = mmap.mmap(fd, page_round(offset - start + node.counter_block_size(block)), offset=start)
    slots.attach_node(node, mm, offset - start, mm, block)
