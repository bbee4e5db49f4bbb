"""Live statistics of a memifx process, in one small shared-memory file.

Every long-running memifx command keeps ``<dir>/<pid>.stats`` while it runs:
``<dir>`` is $MEMIFX_STATS_DIR if set, else /run/memifx for root, else
$XDG_RUNTIME_DIR/memifx (/tmp/memifx-<uid> without it).  ``memifx show`` and
``--prometheus-port`` read these files; the process being read does nothing
for its readers.  The file is removed at exit; a file whose process is gone
(no such pid, or a pid reused by a process started at another time) is
ignored by readers and removed by the first one that finds it.

Layout (native byte order: the file never leaves the host)
    Page 0, the header:
        0   magic "MEMIFXST"
        8   u32 layout version, 12 u32 header bytes
        16  u64 pid
        24  f64 start time of the process (psutil create_time)
        32  u64 seq: a seqlock, odd while metadata or counters are being moved
        40  u64 metadata offset, 48 u64 its capacity, 56 u64 its length
    Then page-aligned regions, appended as needed:
        - the metadata: JSON with the command line, the interfaces (name,
          role, socket, id, mode, state, peer, link flaps, queues with rx
          mode, worker and CPU, and the file offsets of each queue's counter
          slots), the node counters, and the names and offsets of the u64s in
          one counter slot.  When it outgrows its region a larger one is
          appended and the header points there.
        - counter chunks: slots, each one ``counters_t`` (memifx/ring.pxd).

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
    Node counters (xconnect directions, ip4-forward's per-queue counters and
    drops by reason, gen/sink) are copied into the metadata every REFRESH
    seconds by a background thread: cheap, never per packet.  A worker's
    xconnect and ip4 router nodes count straight into slots of their own
    (``node_slot``, ``attach_node_fd``; a slot is as many SLOTs as the
    node's counter block needs), which outlive the worker: a killed worker
    loses none of its counts, and the one that replaces it continues in the
    same slots.

Prometheus
    ``MetricsServer`` serves the same numbers at /metrics in the Prometheus
    text exposition format (version 0.0.4), read from the process's own stats
    file.  It is http.server from the standard library in a daemon thread
    rather than the prometheus-client package: memifx already has every
    number in the stats file, so the package would only add its own metric
    registry to keep in sync plus a runtime dependency, for what is about 60
    lines of formatting here.
"""
import atexit
import collections
import json
import logging
import mmap
import os
import re
import shlex
import stat
import struct
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psutil

from memifx import slots

log = logging.getLogger("memifx")

MAGIC = b"MEMIFXST"
VERSION = 1
HEADER = struct.Struct("=8sIIQdQQQQ")
SEQ = 32                    # offset of the seqlock word
META_AT = 40                # offset of (metadata offset, capacity, length)
PAGE = mmap.ALLOCATIONGRANULARITY
META_INITIAL = 16 * PAGE
CHUNK = 16 * PAGE           # counter slots are allocated this much at a time
REFRESH = 0.5               # seconds between metadata/node counter refreshes
SLOT_GRACE = 2.0            # seconds before a retired live slot is reused
SLOT = slots.COUNTER_SIZE
FIELDS = slots.COUNTER_FIELDS
_U64S = struct.Struct("=%dQ" % (SLOT // 8))
_FILE = re.compile(r"^(\d+)\.stats$")
_TMP = re.compile(r"^\.(\d+)\.tmp$")


def stats_dir():
    """Where this user's memifx processes keep their stats files."""
    d = os.environ.get("MEMIFX_STATS_DIR")
    if d:
        return d
    if os.geteuid() == 0:
        return "/run/memifx"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "memifx")
    return "/tmp/memifx-%d" % os.geteuid()


def _round(n):
    return (n + PAGE - 1) // PAGE * PAGE


def _command_line():
    return " ".join(["memifx"] + [shlex.quote(a) for a in sys.argv[1:]])


def _flat(counters):
    """A queue counter dict (Queue.counters()) as u64s in slot order."""
    out = []
    for name, _ in FIELDS:
        if name.startswith("drops:"):
            out.append(counters.get("drops", {}).get(name[6:], 0))
        else:
            out.append(counters.get(name, 0))
    return out


def _nested(values, fields):
    """Slot u64s back to the dict Queue.counters() and Interface.stats() use."""
    out = {"drops": {}}
    for (name, _), v in zip(fields, values):
        if name.startswith("drops:"):
            out["drops"][name[6:]] = v
        else:
            out[name] = v
    return out


class _Region:
    __slots__ = ("offset", "size", "mm")

    def __init__(self, offset, size, mm):
        self.offset, self.size, self.mm = offset, size, mm


class _Tracked:
    """One interface in the file: base slots per configured queue, the live
    slot of each connected queue, and who serves which queue."""

    def __init__(self, intf):
        self.intf = intf
        self.base = {"rx": [], "tx": []}        # (region, offset in region)
        self.live = {"rx": {}, "tx": {}}        # index -> (queue, region, offset)
        self.workers = {}                       # (kind, index) -> (worker, cpu)


# Mappings of closed files stay mapped until exit: a burst that was still
# running on another thread may hold a pointer into them.
_retired_regions = []


class StatsFile:
    """The stats file of this process (see the module docstring).

    ``anonymous=True`` keeps the same layout in a memfd nobody else sees:
    used when the directory cannot be written, so --prometheus-port still
    works."""

    def __init__(self, directory=None, anonymous=False):
        self.pid = os.getpid()
        self.start_time = psutil.Process().create_time()
        self.path = None
        self.closed = False
        self._lock = threading.RLock()
        self._regions = []
        self._size = 0
        self._chunk, self._chunk_used = None, 0
        self._free = collections.deque()        # (retired at, region, offset)
        self._tracked = []
        self._nodes = None
        self._node_entries = []
        self._meta_json = None
        self._servers = []
        self._stop = threading.Event()
        tmp = None
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
                _unlink(tmp)
            raise
        self._thread = threading.Thread(target=self._refresher, name="memifx-stats",
                                        daemon=True)
        self._thread.start()

    # ------------------------------------------------------------ regions

    def _append(self, size):
        size = _round(size)
        os.ftruncate(self._fd, self._size + size)
        r = _Region(self._size, size, mmap.mmap(self._fd, size, offset=self._size))
        self._regions.append(r)
        self._size += size
        return r

    def _alloc(self):
        """A zeroed counter slot: (region, offset in region)."""
        if self._free and time.monotonic() - self._free[0][0] >= SLOT_GRACE:
            _, region, off = self._free.popleft()
            _U64S.pack_into(region.mm, off, *([0] * (SLOT // 8)))
            return region, off
        return self._new_slot()

    def _new_slot(self, size=SLOT):
        """A never used (zero) slot of ``size`` bytes (whole SLOTs, in one
        region): (region, offset in region)."""
        size = -(-size // SLOT) * SLOT
        if self._chunk is None or self._chunk_used + size > self._chunk.size:
            self._chunk, self._chunk_used = self._append(max(CHUNK, size)), 0
        region, off = self._chunk, self._chunk_used
        self._chunk_used += size
        return region, off

    @staticmethod
    def _read(slot):
        region, off = slot
        return list(_U64S.unpack_from(region.mm, off))

    @staticmethod
    def _write(slot, values):
        region, off = slot
        _U64S.pack_into(region.mm, off, *values)

    # ----------------------------------------------------------- metadata

    @contextmanager
    def _writing(self):
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

    def _dumps(self, meta):
        return json.dumps(meta, sort_keys=True, separators=(",", ":")).encode()

    def _write_meta(self, data):
        if len(data) > self._meta.size:
            self._meta = self._append(2 * len(data))
        self._meta.mm[:len(data)] = data
        struct.pack_into("=QQQ", self._header.mm, META_AT, self._meta.offset,
                         self._meta.size, len(data))
        self._meta_json = data

    def _build_meta(self):
        return {
            "pid": self.pid, "started": self.start_time,
            "command": _command_line(), "cmdline": list(sys.argv),
            "counter_size": SLOT, "counter_fields": FIELDS,
            "interfaces": [self._describe(t) for t in self._tracked],
            "nodes": self._node_entries,
        }

    def _describe(self, t):
        info = t.intf.info()
        d = {k: info.get(k) for k in ("name", "role", "socket", "id", "mode", "state",
                                      "peer_name", "last_disconnect", "link_flaps",
                                      "configured", "rx_queues", "tx_queues",
                                      "peer", "refused", "socket_refused", "listener",
                                      "memory_faults")}
        modes = list(getattr(t.intf, "rx_modes", []))
        d["queues"] = {}
        for kind in ("rx", "tx"):
            qs = []
            for i, base in enumerate(t.base[kind]):
                live = t.live[kind].get(i)
                worker, cpu = t.workers.get((kind, i), (None, None))
                qs.append({"queue": i, "base": base[0].offset + base[1],
                           "live": live[1].offset + live[2] if live else None,
                           "rx_mode": modes[i] if kind == "rx" and i < len(modes) else None,
                           "worker": worker, "cpu": cpu})
            d["queues"][kind] = qs
        return d

    def refresh(self):
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

    def _refresher(self):
        while not self._stop.wait(REFRESH):
            try:
                self.refresh()
            except Exception:
                log.exception("stats: refresh failed")

    # --------------------------------------------------------- interfaces

    def track(self, intf):
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
                        self._write(slot, [max(0, a - b) for a, b in
                                           zip(_flat(total), _flat(live[kind].get(i, {})))])
                        t.base[kind].append(slot)
                self._tracked.append(t)
                intf.on_link(self.link_changed)
                if intf.connected:
                    self._attach(t)

    def set_nodes(self, provider):
        """provider() -> a list of node counter dicts: "node" (its name), any
        of "interface", "queue", "direction" (labels), numbers, and "drops"
        ({reason: n}).  Called from the refresher thread."""
        with self._lock:
            self._nodes = provider
        self.refresh()

    def set_worker(self, intf, kind, index, worker, cpu=None):
        """Record which worker (and CPU) serves a queue, for show/metrics."""
        with self._lock:
            for t in self._tracked:
                if t.intf is intf:
                    t.workers[(kind, index)] = (worker, cpu)
        self.refresh()

    def live_slot(self, intf, kind, index):
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

    def fileno(self):
        return self._fd

    def node_slot(self, size=SLOT):
        """File offset of a new zeroed slot of ``size`` bytes for one counter
        block of a worker's node (attach_node_fd; the node's
        counter_block_size()); it lives as long as this file."""
        with self._lock:
            region, off = self._new_slot(size)
            return region.offset + off

    def read_slot(self, offset, size=SLOT):
        """The u64s of the ``size``-byte slot at file offset ``offset`` (also
        after close: the mappings stay until exit)."""
        for r in self._regions:
            if r.offset <= offset and offset + size <= r.offset + r.size:
                return list(struct.unpack_from("=%dQ" % (size // 8), r.mm, offset - r.offset))
        raise ValueError("no slot at offset %d" % offset)

    def link_changed(self, intf, up):
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

    def _attach(self, t):
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

    def _fold(self, t):
        for kind in ("rx", "tx"):
            for index in list(t.live[kind]):
                self._fold_one(t, kind, index)

    def _fold_one(self, t, kind, index):
        q, region, off = t.live[kind].pop(index)
        slots.detach(q)
        live = self._read((region, off))
        base = t.base[kind][index]
        self._write(base, [a + b for a, b in zip(self._read(base), live)])
        self._free.append((time.monotonic(), region, off))

    # -------------------------------------------------------------- reading

    def read(self):
        """This process's counters, parsed the way ``memifx show`` does."""
        for _ in range(20):
            with self._lock:
                if self.closed:
                    return None
                mm = mmap.mmap(self._fd, self._size, prot=mmap.PROT_READ)
            try:
                return _read_mapping(mm)
            except _Retry:
                continue                # it grew meanwhile: map it again
            finally:
                mm.close()
        return None

    def serve_metrics(self, port, host=""):
        server = MetricsServer(port, lambda: prometheus_text(self.read()), host)
        self._servers.append(server)
        return server

    # ------------------------------------------------------------------ exit

    def close(self):
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
                _unlink(self.path)
            _retired_regions.append(self._regions)
            os.close(self._fd)
        self._stop.set()
        for s in self._servers:
            s.close()
        if self._thread is not threading.current_thread():
            self._thread.join(2)


def _unlink(path, ino=None):
    """Remove ``path`` (only if it is still the file ``ino``); True if gone."""
    try:
        if ino is not None and os.lstat(path).st_ino != ino:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False


# ------------------------------------------------------------ this process

_current = None
_warned = False


def process_stats(directory=None):
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


def attach_fd(queue, fd, offset):
    """Make ``queue`` (e.g. in a worker process) count into the slot at file
    offset ``offset`` of a stats file open as ``fd``.  The mapping lives as
    long as the queue counts there."""
    start = offset // PAGE * PAGE
    mm = mmap.mmap(fd, _round(offset - start + SLOT), offset=start)
    slots.attach(queue, mm, offset - start, mm)


def attach_node_fd(node, fd, offset, block=0):
    """Make counter block ``block`` of ``node`` (a memifx.counted.CountedNode
    in a worker: XConnect, Router) count into the node slot at file offset
    ``offset`` (node_slot) of a stats file open as ``fd``, adding to what the
    slot holds."""
    start = offset // PAGE * PAGE
    mm = mmap.mmap(fd, _round(offset - start + node.counter_block_size(block)), offset=start)
    slots.attach_node(node, mm, offset - start, mm, block)


# ---------------------------------------------------------------- readers

class _Retry(Exception):
    pass


def _alive(pid, start_time):
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - start_time) > 0.05:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _parse(data):
    """A consistent copy of a stats file -> the process's description."""
    magic, version, _, pid, started, _, moff, _, mlen = HEADER.unpack_from(data, 0)
    if moff + mlen > len(data):
        raise _Retry()
    meta = json.loads(bytes(data[moff:moff + mlen]))
    fields = [tuple(f) for f in meta["counter_fields"]]
    u64s = struct.Struct("=%dQ" % len(fields))

    def slot(off):
        if off + u64s.size > len(data):
            raise _Retry()
        return list(u64s.unpack_from(data, off))

    interfaces = []
    for m in meta["interfaces"]:
        intf = {k: v for k, v in m.items() if k != "queues"}
        intf["queues"] = {}
        intf["stats"] = {"link_flaps": m.get("link_flaps")}
        intf["totals"] = {}
        for kind in ("rx", "tx"):
            qs, per = [], []
            total = [0] * len(fields)
            for q in m["queues"][kind]:
                values = slot(q["base"])
                if q["live"] is not None:
                    values = [a + b for a, b in zip(values, slot(q["live"]))]
                total = [a + b for a, b in zip(total, values)]
                c = _nested(values, fields)
                per.append(c)
                qs.append({"queue": q["queue"], "rx_mode": q["rx_mode"], "worker": q["worker"],
                           "cpu": q["cpu"], "connected": q["live"] is not None,
                           "counters": c})
            intf["queues"][kind] = qs
            intf["stats"][kind] = per
            intf["totals"][kind] = _nested(total, fields)
        interfaces.append(intf)
    return {"pid": pid, "started": started, "command": meta.get("command"),
            "cmdline": meta.get("cmdline"), "interfaces": interfaces,
            "nodes": meta.get("nodes", [])}


def _header(mm):
    if len(mm) < HEADER.size:
        return None
    h = HEADER.unpack_from(mm, 0)
    if h[0] != MAGIC or h[1] != VERSION:
        return None
    return h


def _read_mapping(mm, tries=500):
    """Seqlock read of a mapped stats file: copy it between two equal even
    values of seq.  Returns the parsed description, or None if the writer
    kept it busy (a file that grew meanwhile raises _Retry)."""
    for _ in range(tries):
        s1 = slots.seq_load(mm, SEQ)
        if s1 & 1:
            time.sleep(0.001)
            continue
        data = mm[:]
        if slots.seq_load(mm, SEQ) != s1:
            continue
        return _parse(data)
    return None


def read_file(path):
    """(description or None, status): status is "ok", "stale" (its process is
    gone), "invalid", "busy" or "gone"; the third item is the file's inode."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None, "gone", None
    try:
        ino = os.fstat(fd).st_ino
        for _ in range(20):
            size = os.fstat(fd).st_size
            if size < PAGE:
                return None, "invalid", ino
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            try:
                h = _header(mm)
                if h is None:
                    return None, "invalid", ino
                if not _alive(h[3], h[4]):
                    return None, "stale", ino
                try:
                    d = _read_mapping(mm)
                except _Retry:
                    continue            # the file grew: map it again
                except (ValueError, KeyError, TypeError):
                    return None, "invalid", ino
                if d is None:
                    return None, "busy", ino
                d["file"] = path
                return d, "ok", ino
            finally:
                mm.close()
        return None, "busy", ino
    finally:
        os.close(fd)


def scan(directory=None, clean=True):
    """Every running memifx process that has a stats file in ``directory``,
    by pid.  Files of processes that are gone are removed (``clean``)."""
    d = directory or stats_dir()
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out = []
    for name in names:
        path = os.path.join(d, name)
        tmp = _TMP.match(name)
        if tmp:
            if clean and not psutil.pid_exists(int(tmp.group(1))):
                _unlink(path)
            continue
        m = _FILE.match(name)
        if not m:
            continue
        desc, status, ino = read_file(path)
        if status == "ok":
            out.append(desc)
        elif clean and (status == "stale" or
                        (status == "invalid" and not psutil.pid_exists(int(m.group(1))))):
            _unlink(path, ino)
    return sorted(out, key=lambda p: p["pid"])


# ------------------------------------------------------------- prometheus

_QUEUE_METRICS = (
    ("packets", "memifx_packets_total", "Frames through a memif queue."),
    ("bytes", "memifx_bytes_total", "Bytes through a memif queue."),
    ("ring_full", "memifx_ring_full_total", "Bursts that stopped on a full ring."),
    ("irq_sent", "memifx_interrupts_sent_total", "Interrupts signalled to the peer."),
    ("irq_received", "memifx_interrupts_received_total", "Interrupts received from the peer."),
    ("mode_switches", "memifx_rx_mode_switches_total",
     "Adaptive rx mode switches between polling and interrupt."),
    ("chain_waits", "memifx_rx_chain_waits_total",
     "Receive bursts that stopped at a chained frame whose end was not published yet."),
)
_NODE_LABELS = ("interface", "queue", "direction")


def _escape(v):
    return str(v).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _metric_name(key):
    name = re.sub(r"[^a-zA-Z0-9_]", "_", str(key)).strip("_").lower()
    return name[:-6] if name.endswith("_total") else name


class _Exposition:
    def __init__(self):
        self.metrics = collections.OrderedDict()

    def add(self, name, kind, help_text, labels, value):
        m = self.metrics.setdefault(name, (kind, help_text, []))
        m[2].append((labels, value))

    def text(self):
        lines = []
        for name, (kind, help_text, samples) in self.metrics.items():
            lines.append("# HELP %s %s" % (name, help_text))
            lines.append("# TYPE %s %s" % (name, kind))
            for labels, value in samples:
                body = ",".join('%s="%s"' % (k, _escape(v)) for k, v in labels)
                lines.append("%s{%s} %s" % (name, body, value) if body else
                             "%s %s" % (name, value))
        return "\n".join(lines) + "\n"


def prometheus_text(proc):
    """The Prometheus text exposition of one process's description (from
    read_file or StatsFile.read)."""
    ex = _Exposition()
    if proc is None:
        return "# memifx: no statistics available\n"
    for intf in proc["interfaces"]:
        name = intf["name"]
        ex.add("memifx_link_up", "gauge", "1 while the memif link is up.",
               [("interface", name)], 1 if intf["state"] == "up" else 0)
        ex.add("memifx_link_flaps_total", "counter", "Times the link went down.",
               [("interface", name)], intf.get("link_flaps") or 0)
        ex.add("memifx_interface_info", "gauge", "Interface facts (value always 1).",
               [("interface", name), ("role", intf["role"]), ("mode", intf["mode"]),
                ("socket", intf["socket"]), ("id", intf["id"]), ("state", intf["state"]),
                ("peer", intf.get("peer_name") or "")], 1)
        for kind in ("rx", "tx"):
            for q in intf["queues"][kind]:
                labels = [("interface", name), ("queue", q["queue"]), ("direction", kind)]
                c = q["counters"]
                for key, metric, help_text in _QUEUE_METRICS:
                    if key in c:
                        ex.add(metric, "counter", help_text, labels, c[key])
                for reason, n in c["drops"].items():
                    ex.add("memifx_drops_total", "counter", "Frames a queue dropped, by reason.",
                           labels + [("reason", reason)], n)
    for node in proc.get("nodes") or []:
        labels = [("node", node.get("node", ""))] + \
            [(k, node[k]) for k in _NODE_LABELS if node.get(k) is not None]
        for key, value in node.items():
            if key in ("node",) + _NODE_LABELS:
                continue
            if key == "drops" and isinstance(value, dict):
                for reason, n in value.items():
                    ex.add("memifx_node_drops_total", "counter",
                           "Frames a graph node dropped, by reason.",
                           labels + [("reason", reason)], n)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                ex.add("memifx_node_%s_total" % _metric_name(key), "counter",
                       "Graph node counter %r." % key, labels, value)
    return ex.text()


class MetricsServer:
    """GET /metrics from a tiny threaded HTTP server in a daemon thread."""

    def __init__(self, port, source, host=""):
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                try:
                    body = source().encode()
                except Exception:
                    log.exception("metrics: reading the counters failed")
                    self.send_error(500)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer((host, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.2,),
                                       name="memifx-metrics", daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
