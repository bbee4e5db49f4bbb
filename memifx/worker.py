"""Worker processes: the data path of a run loop, pinned to CPUs.

The main process keeps the control plane (sockets, handshakes, reconnects).
Each worker is ``python -m memifx.worker``, pinned to one CPU with psutil,
connected to the main process by a SOCK_SEQPACKET socketpair.  Messages are
JSON; fds travel with them as SCM_RIGHTS.  One message may need more fds than
the kernel passes at once (SCM_MAX_FD, 253: a link with many regions or
queues) or more bytes than one datagram should carry, so each goes out as
one or more parts (send/recv below); a message that arrives incomplete is a
HandoffError, and an attach that fails in either process fails that link
with a reason instead of leaving it up with nobody serving it.

When a link comes up the main process sends every worker an ``attach``: the
region fds (the worker maps them itself), the geometry and private positions
of the queues that worker owns, and their eventfds.  When it goes down it
sends ``detach``; the worker stops using those queues, drops its mapping and
answers ``detached`` with their final counters.  Each worker unmaps only
memory it no longer touches, and every message carries the link's generation,
so a late message about an old link is never applied to a new one.

Who owns what: in a direction ``src -> dst``, receive queue i of src feeds
transmit queue ``t = i mod (dst's configured tx queues)``; the pair belongs to
worker ``t mod W``.  So every transmit ring has exactly one producer, and a
receive ring exactly one consumer, whatever the links do.  While dst is down
the owner drains src's receive ring and counts the frames "tx link down", as
the in-process loop does.

A worker that dies is restarted; the links it served are flapped (its private
ring positions died with it), which shows in link_flaps.

What a worker runs is its plan's node kind, a ``Node`` class: ``xconnect``
(above), ``ip4``, the router of ``ip4-forward`` (RouterPool), and ``gen`` and
``sink``, the traffic tester (memifx/tester_workers.py, TesterPool).

For ip4 the plan also carries the interfaces (index, MAC, address, ip mode)
and two fds: the FIB and the neighbor table, each one sealed memfd that the
main process created, maps writable and changes in place, and every worker
maps read-only (Fib.from_shared, NeighborTable.from_shared): one copy of the
tables however many workers, and a change (a route added or deleted at run
time, a neighbor learned) is seen by every worker at once, without a
message.  Ownership: worker w has receive queue i of every interface with
``i mod W == w`` and transmit queue ``w`` of every interface (RouterPool
makes W no larger than any interface's transmit queue count), so again one
producer per transmit ring.  The ARP replies a worker's data path queued
come back as ``arp`` for the control plane to judge.

Workers read the FIB without locks, so a second-level block or next-hop
record the main process unlinks must not be reused while a worker may still
be looking at it.  The main process retires such items and, when some are
waiting, sends every worker ``sync`` with a token; a worker answers
``synced`` when it reads the message, between two passes, where it holds no
pointer into the tables; once every live worker has answered, the items
retired before the token are free again (Fib.sync_begin / sync_done).  A
worker started later never saw them, so it counts as synced from birth.
The worker loop answers ``sync`` whatever its node kind (only RouterPool
sends it).

A worker's counters snapshot (every COUNTERS_EVERY seconds, on ``report``,
and in its ``detached`` and final messages) may carry fds: the pool's
handler reads what it needs of them before they are closed.  Queue
counters, and the xconnect and ip4 nodes', do not wait for a snapshot:
workers count them straight into slots of the stats file (``node_slots``
in the plan: one slot per worker and counter block, an xconnect direction
or a router interface, kept across restarts; memifx/counted.pyx), so a
worker killed mid-traffic loses none of them.
"""
import array
import errno
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

from memifx.fdwait import wait_readable

log = logging.getLogger("memifx")

COUNTERS_EVERY = 0.5        # seconds between counter snapshots from a worker
CONTROL_EVERY = 256         # busy passes between looks at the control socket
DETACH_WAIT = 1.0           # seconds a link-down waits for each worker to let go


# ------------------------------------------------------------------ wire
#
# A message is its JSON text and its fds, sent as parts: each part is one
# datagram, PART header (index, count) then up to PART_BYTES of the text,
# with up to PART_FDS of the fds.  The sender writes all parts of a message
# back to back under its lock; a sender that fails half way sends a part with
# count 0 (abort), so the receiver drops what it has instead of waiting.

PART = struct.Struct("<II")
PART_FDS = 253              # SCM_MAX_FD: more in one sendmsg is EINVAL
PART_BYTES = 32 << 10
PART_WAIT = 1.0             # seconds the receiver waits for the next part
DEAD_PEER = (errno.EPIPE, errno.ECONNRESET, errno.ENOTCONN)     # the worker died


class HandoffError(Exception):
    """A message arrived incomplete (its fds truncated, a part missing or
    aborted).  Its fds are closed; ``msg`` is the message if its text was
    whole (so the receiver knows which link it was about), else None."""

    def __init__(self, reason, msg=None):
        super().__init__(reason)
        self.reason, self.msg = reason, msg


def send(sock, msg, fds=()):
    """Send ``msg`` and ``fds`` in as many parts as they need.  The caller
    holds whatever lock keeps other writers of ``sock`` out meanwhile."""
    data = json.dumps(msg).encode()
    fds = list(fds)
    count = max(1, -(-len(data) // PART_BYTES), -(-len(fds) // PART_FDS))
    for i in range(count):
        chunk = fds[i * PART_FDS:(i + 1) * PART_FDS]
        anc = ([(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", chunk))]
               if chunk else [])
        try:
            sock.sendmsg([PART.pack(i, count), data[i * PART_BYTES:(i + 1) * PART_BYTES]],
                         anc)
        except OSError:
            if i:
                try:
                    sock.send(PART.pack(0, 0))
                except OSError:
                    pass                # a dead socket: nobody waits for the rest
            raise


def _recv_part(sock, flags):
    """(index, count, text, fds, truncated) of one part, or None on EOF."""
    data, anc, mflags, _ = sock.recvmsg(PART.size + PART_BYTES,
                                        socket.CMSG_SPACE(PART_FDS * 4),
                                        flags | socket.MSG_CMSG_CLOEXEC)
    fds = []
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            a = array.array("i")
            a.frombytes(payload[:len(payload) - len(payload) % a.itemsize])
            fds.extend(a)
    if not data:
        _close(fds)
        return None
    truncated = bool(mflags & (socket.MSG_CTRUNC | socket.MSG_TRUNC)) or len(data) < PART.size
    if len(data) < PART.size:
        return 0, 1, b"", fds, True
    index, count = PART.unpack_from(data)
    return index, count, data[PART.size:], fds, truncated


def recv(sock, flags=0):
    """One message and its fds, or (None, []) on EOF; BlockingIOError if none
    (with MSG_DONTWAIT).  HandoffError if it arrived incomplete."""
    part = _recv_part(sock, flags)
    if part is None:
        return None, []
    index, count, text, fds, truncated = part
    texts = [text]
    problem = None
    if count == 0:
        problem = "message aborted by its sender"
    elif index != 0:
        problem = "stray part %d of %d" % (index + 1, count)
    try:
        while problem is None and len(texts) < count:
            if not wait_readable([sock.fileno()], PART_WAIT):
                part = None
            else:
                part = _recv_part(sock, socket.MSG_DONTWAIT)
            if part is None:
                problem = "message incomplete (%d of %d parts)" % (len(texts), count)
                break
            index, count_i, text, more, cut = part
            fds.extend(more)
            truncated |= cut
            if count_i != count or index != len(texts):
                problem = "message cut short by another (%d of %d parts)" % (len(texts), count)
            else:
                texts.append(text)
    except OSError as e:
        problem = "message incomplete: %s" % (e.strerror or e)
    except BaseException:
        _close(fds)
        raise
    if problem is not None:
        _close(fds)
        raise HandoffError(problem)
    try:
        msg = json.loads(b"".join(texts))
    except ValueError:
        _close(fds)
        raise HandoffError("message unreadable") from None
    if truncated:
        _close(fds)
        raise HandoffError("fds truncated (MSG_CTRUNC)", msg)
    return msg, fds


def _close(fds):
    for fd in fds:
        os.close(fd)


def owner(tx_index, workers):
    return tx_index % workers


def parse_cpus(text):
    """'2-5,8' -> [2, 3, 4, 5, 8]"""
    cpus = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    return sorted(set(cpus))


# ------------------------------------------------------------- main side

class Worker:
    """One worker process, seen from the main process."""

    def __init__(self, index, cpu, plan, handle, stats_fd=None, plan_fds=()):
        self.index, self.cpu = index, cpu
        self.handle = handle            # handle(worker, msg, fds): the pool's dispatcher
        self.recv_lock = threading.Lock()
        self.detached = set()           # (key, gen) the worker has let go of
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memifx.worker", str(theirs.fileno())],
            pass_fds=[theirs.fileno()])
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.counters = {}              # the latest snapshot: {"nodes": ..., "queues": ...}
        self.send_error = None          # why the last send that failed did
        if cpu is not None:
            import psutil
            try:
                psutil.Process(self.proc.pid).cpu_affinity([cpu])
            except (psutil.Error, OSError) as e:
                log.warning("worker %d: cannot pin to CPU %d: %s", index, cpu, e)
        try:
            with self.lock:
                send(self.sock, dict(plan, op="plan", worker=index, stats=stats_fd is not None),
                     ([stats_fd] if stats_fd is not None else []) + list(plan_fds))
        except OSError as e:
            if e.errno not in DEAD_PEER:    # a dead one is restarted by poll()
                self.proc.kill()
                self.proc.wait()
                self.sock.close()
                raise

    def send(self, msg, fds=()):
        """Send ``msg`` with ``fds``; False if it did not go out.  A worker
        that died is restarted by poll(); any other failure is logged here
        and the caller decides what it costs (an attach fails its link)."""
        with self.lock:
            try:
                send(self.sock, msg, fds)
                return True
            except OSError as e:
                if e.errno not in DEAD_PEER:
                    log.error("worker %d: cannot send %s with %d fds: %s",
                              self.index, msg.get("op"), len(fds), e)
                self.send_error = e
                return False

    def pump(self, timeout):
        """Read and dispatch what the worker sent (waiting up to ``timeout``
        for the first message).  Any thread may pump; one at a time."""
        with self.recv_lock:
            fd = self.sock.fileno()
            if fd < 0 or not wait_readable([fd], timeout):
                return
            while True:
                try:
                    msg, fds = recv(self.sock, socket.MSG_DONTWAIT)
                except BlockingIOError:
                    return
                except HandoffError as e:
                    log.error("worker %d: a message from it was lost: %s", self.index, e)
                    continue
                except OSError:
                    return                  # it died: poll() restarts it
                try:
                    if msg is None:
                        return
                    self.handle(self, msg, fds)     # it reads what it needs of the fds
                finally:
                    for fd in fds:
                        os.close(fd)

    def wait_detached(self, key, gen, timeout):
        end = time.monotonic() + timeout
        while (key, gen) not in self.detached and self.alive() and time.monotonic() < end:
            self.pump(min(0.05, max(0.0, end - time.monotonic())))
        return (key, gen) in self.detached

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def close(self):
        self.send({"op": "stop"})


class WorkerPool:
    """The workers of one command: who owns which queue, attach/detach on link
    changes, counters, restarts."""

    def __init__(self, interfaces, directions, workers, cpus, quiet=100e-6, node="xconnect",
                 stats=None):
        self.interfaces = {i.name: i for i in interfaces}
        self.directions = [(s.name, d.name) for s, d in directions]
        self.nworkers = workers
        self.cpus = cpus
        self.node = node
        self.gens = {name: 0 for name in self.interfaces}
        self.restarts = 0
        self.stopping = False
        self.retired = []               # counter snapshots of workers that died
        self.plan = {"directions": self.directions, "workers": workers, "node": node,
                     "tx_queues": {n: i.tx_queues for n, i in self.interfaces.items()},
                     "modes": {n: list(i.rx_modes) for n, i in self.interfaces.items()},
                     "quiet": quiet}
        self.stats = stats              # StatsFile: workers count straight into it
        self.node_blocks = self.counter_blocks()
        if stats is not None and self.node_blocks:
            self.plan["node_slots"] = [{name: stats.node_slot(size)
                                        for name, size in self.node_blocks.items()}
                                       for _ in range(workers)]
        self.lock = threading.RLock()
        self.workers = [self._spawn(w) for w in range(workers)]
        for intf in interfaces:
            intf.on_link(self._on_down, first=True)     # quiesce before anyone folds
            intf.on_link(self._on_up)

    def counter_blocks(self):
        """{name: bytes} of the counter blocks one worker's node counts into
        stats file slots (memifx/counted.pyx; ``node_slots`` in the plan):
        one per xconnect direction."""
        if self.node != "xconnect":
            return {}
        from memifx.xconnect import COUNTER_SIZE
        return {"%s->%s" % d: COUNTER_SIZE for d in self.directions}

    def slot_values(self):
        """Per worker, {block name: its slot's u64s}: what every worker that
        ever had that index counted (a restarted one continues there)."""
        return [{name: self.stats.read_slot(off, self.node_blocks[name])
                 for name, off in per.items()} for per in self.plan["node_slots"]]

    def _plan_for_spawn(self, w):
        """The plan message for worker w and the fds that go with it (after
        the stats fd)."""
        return self.plan, ()

    def _spawn(self, w):
        plan, plan_fds = self._plan_for_spawn(w)
        worker = Worker(w, self._cpu(w), plan, self._handle,
                        self.stats.fileno() if self.stats is not None else None, plan_fds)
        if self.stats is not None:
            for name, intf in self.interfaces.items():
                rx, tx = self._needs(name, w)
                for kind, need in (("rx", rx), ("tx", tx)):
                    for i in need:
                        self.stats.set_worker(intf, kind, i, w, worker.cpu)
        return worker

    def _cpu(self, w):
        return self.cpus[w % len(self.cpus)] if self.cpus else None

    def mapping(self):
        """Human-readable: which worker serves which queue pairs."""
        lines = []
        for w in self.workers:
            pairs = []
            for src, dst in self.directions:
                ntx = self.interfaces[dst].tx_queues
                for i in range(self.interfaces[src].rx_queues):
                    if owner(i % ntx, self.nworkers) == w.index:
                        pairs.append("%s rx%d -> %s tx%d" % (src, i, dst, i % ntx))
            lines.append("worker %d (pid %d, cpu %s): %s" % (
                w.index, w.pid, "any" if w.cpu is None else w.cpu, ", ".join(pairs) or "idle"))
        return lines

    # ------------------------------------------------------- link changes

    def _needs(self, name, w):
        """Indices of the rx and tx queues of interface ``name`` worker w owns."""
        rx, tx = set(), set()
        intf = self.interfaces[name]
        for src, dst in self.directions:
            ntx = self.interfaces[dst].tx_queues
            if src == name:
                rx.update(i for i in range(intf.rx_queues)
                          if owner(i % ntx, self.nworkers) == w)
            if dst == name:
                tx.update(t for t in range(intf.tx_queues)
                          if owner(t, self.nworkers) == w)
        return rx, tx

    def _attach(self, intf, worker):
        conn = intf.connection
        if conn is None:
            return
        rx_need, tx_need = self._needs(intf.name, worker.index)
        queues, fds = [], list(conn.memory.fds)
        for kind, qs, need in (("rx", conn.rx, rx_need), ("tx", conn.tx, tx_need)):
            for q in qs:
                if q.index in need:
                    slot = (self.stats.live_slot(intf, kind, q.index)
                            if self.stats is not None else None)
                    queues.append(dict(q.geometry(), kind=kind, state=q.state(), slot=slot))
                    fds.append(q.fd)
        if not worker.send({"op": "attach", "key": intf.name, "gen": self.gens[intf.name],
                            "regions": conn.memory.sizes(), "queues": queues}, fds):
            e = worker.send_error
            if e is not None and e.errno not in DEAD_PEER:  # a dead one: _restart flaps it
                intf.report_fault(conn, "worker %d attach failed: %s" % (
                    worker.index, e.strerror or e))

    def _on_up(self, intf, up):
        if not up:
            return
        with self.lock:
            self.gens[intf.name] += 1
            if self.stats is not None:
                self.stats.link_changed(intf, True)     # live slots exist before we hand them out
            for w in self.workers:
                self._attach(intf, w)

    def _on_down(self, intf, up):
        """Before the interface and the stats file fold this link's counters:
        every worker stops using its queues and says so (bounded wait)."""
        if up:
            return
        with self.lock:
            gen = self.gens[intf.name]
            for w in self.workers:
                w.send({"op": "detach", "key": intf.name, "gen": gen})
            for w in self.workers:
                if not w.wait_detached(intf.name, gen, DETACH_WAIT):
                    log.warning("worker %d did not let go of %s in time", w.index, intf.name)

    # ----------------------------------------------------------- running

    def poll(self, timeout):
        """Handle worker messages for up to ``timeout`` seconds; restart dead workers."""
        socks = {w.sock.fileno(): w for w in self.workers}
        socks.pop(-1, None)             # closed: being replaced
        for fd in wait_readable(list(socks), timeout):
            socks[fd].pump(0)
        if not self.stopping:
            for w in list(self.workers):
                if not w.alive():
                    self._restart(w)

    def _handle(self, w, msg, fds=()):
        op = msg.get("op")
        if op == "counters":
            w.counters = msg
        elif op == "detached":
            intf = self.interfaces.get(msg["key"])
            if intf is not None:        # queues that had no stats slot report here
                for kind in ("rx", "tx"):
                    for index, counters in msg["queues"].get(kind, {}).items():
                        intf.fold_counters(kind, int(index), counters)
            w.counters = msg.get("snapshot", w.counters)
            w.detached.add((msg["key"], msg["gen"]))
        elif op == "fault":
            intf = self.interfaces.get(msg["key"])
            if intf is not None and msg["gen"] == self.gens[msg["key"]] and intf.connection:
                intf.report_fault(intf.connection, msg["reason"])

    def _restart(self, w):
        code = w.proc.returncode
        log.warning("worker %d (pid %d) died (%s); restarting", w.index, w.pid,
                    "signal %d" % -code if code and code < 0 else "exit %s" % code)
        self.restarts += 1
        self.retired.append(w.counters)
        w.sock.close()
        with self.lock:
            self.workers[w.index] = self._spawn(w.index)
            # Its private ring positions died with it: flap what it served.
            for name, intf in self.interfaces.items():
                rx, tx = self._needs(name, w.index)
                if (rx or tx) and intf.connection is not None:
                    intf.report_fault(intf.connection, "worker %d restarted" % w.index)
        self.on_restart(w.index)

    def on_restart(self, index):
        """Hook for the command (it prints the event)."""

    def node_counters(self):
        """Node counters summed over live and retired workers."""
        total = {}
        if "node_slots" in self.plan:           # read where the workers count
            from memifx.xconnect import counters_from_slot
            snaps = [{"nodes": {name: counters_from_slot(values)
                                for name, values in per.items()}}
                     for per in self.slot_values()]
        else:
            snaps = [w.counters for w in self.workers] + self.retired
        for snap in snaps:
            for name, c in (snap or {}).get("nodes", {}).items():
                t = total.setdefault(name, {"packets": 0, "bytes": 0, "drops": {}})
                t["packets"] += c["packets"]
                t["bytes"] += c["bytes"]
                for r, n in c["drops"].items():
                    t["drops"][r] = t["drops"].get(r, 0) + n
        return total

    def stop(self, timeout=5.0):
        self.stopping = True
        for w in self.workers:
            w.close()
        end = time.monotonic() + timeout
        for w in self.workers:
            while w.alive() and time.monotonic() < end:
                self.poll(0.05)
            if w.alive():
                w.proc.kill()
                w.proc.wait()
            else:                         # the final snapshot it sent on stop
                self.poll(0)
            w.sock.close()


class RouterPool(WorkerPool):
    """The workers of ip4-forward: the ``ip4`` node kind.

    ``interfaces`` in router order (list index = ifindex); ``router_info``
    one dict per interface: ``mac`` (hex string), ``ip`` (int), ``ip_mode``;
    ``fib`` the Fib and ``neighbors`` the NeighborTable this process writes
    (the workers map both read-only).  ``workers`` must not exceed any
    interface's transmit queue count (the command reduces it).

    Routes and neighbors may change while the workers run: change ``fib``
    (add_route, delete_route, apply_routes) and ``neighbors`` directly, from
    the thread that calls poll().  The pool then makes the fib hold retired
    blocks back until every worker has moved on (reclaimed in poll(), or at
    once with synchronize())."""

    def __init__(self, interfaces, workers, cpus, router_info, fib, neighbors,
                 quiet=100e-6, stats=None):
        if any(i.tx_queues < workers for i in interfaces):
            raise ValueError("every interface needs at least %d transmit queues" % workers)
        self.order = [i.name for i in interfaces]
        self.fib = fib
        self.neighbors = neighbors
        fib.defer_reuse = True          # readers in other processes from now on
        self.sync_token = None          # the sync the workers are answering, if any
        self.arp_pending = []           # (ifindex, ip, mac) from the workers' data paths
        self.ip4 = {"names": self.order, "info": list(router_info),
                    "rx_queues": [i.rx_queues for i in interfaces]}
        self.queue_counts = [(i.rx_queues, i.tx_queues) for i in interfaces]
        super().__init__(interfaces, [], workers, cpus, quiet, node="ip4", stats=stats)

    def counter_blocks(self):
        """One counter block per interface (Router block i = ifindex i)."""
        from memifx.ip4 import counter_block_size
        return {name: counter_block_size(nrx, ntx)
                for name, (nrx, ntx) in zip(self.order, self.queue_counts)}

    def _plan_for_spawn(self, w):
        return dict(self.plan, ip4=self.ip4), [self.fib.fd, self.neighbors.fd]

    def _spawn(self, w):
        # It maps the tables after everything retired so far was unlinked.
        synced = self.fib.sync_begin()
        worker = super()._spawn(w)
        worker.synced = synced
        return worker

    def _needs(self, name, w):
        intf = self.interfaces[name]
        rx = {i for i in range(intf.rx_queues) if i % self.nworkers == w}
        return rx, {w % intf.tx_queues}

    def mapping(self):
        lines = []
        for w in self.workers:
            parts = []
            for name in self.order:
                rx, tx = self._needs(name, w.index)
                parts.append("%s rx%s tx%s" % (name, ",".join(map(str, sorted(rx))) or "-",
                                               ",".join(map(str, sorted(tx)))))
            lines.append("worker %d (pid %d, cpu %s): ip4 %s" % (
                w.index, w.pid, "any" if w.cpu is None else w.cpu, ", ".join(parts)))
        return lines

    def set_neighbor(self, ifindex, ip, mac):
        """Add or change a neighbor (mac bytes), or remove it (mac None): the
        shared table changes, every worker sees it at once."""
        if mac is None:
            self.neighbors.discard(ifindex, ip)
        else:
            self.neighbors.add(ifindex, ip, bytes(mac))

    def take_arp(self):
        """ARP replies the workers reported since the last call (as Router.take_arp)."""
        out, self.arp_pending = self.arp_pending, []
        return out

    def _handle(self, w, msg, fds=()):
        op = msg.get("op")
        if op == "arp":
            self.arp_pending.extend((i, ip, bytes.fromhex(mac)) for i, ip, mac in msg["entries"])
        elif op == "synced":
            w.synced = max(w.synced, msg["gen"])
        else:
            super()._handle(w, msg, fds)

    # ------------------------------------------- reclaiming retired items

    def poll(self, timeout):
        super().poll(timeout)
        self.reclaim()

    def reclaim(self):
        """One step of the handshake: finish the sync in flight if every live
        worker answered, else start one if the fib holds retired items.
        Returns whether items are still waiting."""
        with self.lock:
            if self.sync_token is not None:
                if any(w.synced < self.sync_token for w in self.workers if w.alive()):
                    return True
                freed = self.fib.sync_done(self.sync_token)
                log.debug("fib: %d retired items free again (sync %d)", freed, self.sync_token)
                self.sync_token = None
            if not self.fib.retired:
                return False
            self.sync_token = self.fib.sync_begin()
            for w in self.workers:
                w.send({"op": "sync", "gen": self.sync_token})
            return True

    def synchronize(self, timeout=1.0):
        """Wait (up to ``timeout`` seconds) until every worker has moved past
        the FIB changes made so far, so what they retired is free again.
        Returns whether nothing is left waiting."""
        end = time.monotonic() + timeout
        while self.reclaim():
            left = end - time.monotonic()
            if left <= 0:
                return False
            for w in self.workers:
                w.pump(min(0.01, left))
        return True

    def router_counters(self, ifindex, base):
        """Router.counters of interface ``ifindex`` summed over live and retired
        workers, added to ``base`` (all zeros, the right shape, when the main
        process routes nothing itself).  Read from the workers' stats file
        slots where they count (nothing lost when one is killed), else from
        their snapshots."""
        total = base
        if "node_slots" in self.plan:
            from memifx.ip4 import counters_from_block
            name = self.order[ifindex]
            nrx, ntx = self.queue_counts[ifindex]
            for per in self.slot_values():
                total = _add(total, counters_from_block(per[name], nrx, ntx))
            return total
        for snap in [w.counters for w in self.workers] + self.retired:
            per = (snap or {}).get("router")
            if per and ifindex < len(per):
                total = _add(total, per[ifindex])
        return total


def _add(a, b):
    """Sum two counter trees of the same shape (dicts, lists, numbers)."""
    if isinstance(a, dict):
        return {k: _add(v, b.get(k, 0) if isinstance(b, dict) else 0) for k, v in a.items()}
    if isinstance(a, list):
        return [_add(x, y) for x, y in zip(a, b)] + a[len(b):]
    return a + b


# ----------------------------------------------------------- worker side

class Attached:
    """One interface's link as a worker holds it (quacks like Interface for
    Idler and memifx.tester.Receiver)."""

    def __init__(self, gen, memory, rx, tx, modes):
        self.gen, self.memory, self.rx, self.tx = gen, memory, rx, tx
        self.rx_modes = modes
        self.connected = True
        self.fault_sent = False         # a truncation was reported for this link

    def active_queues(self, kind):
        return list((self.rx if kind == "rx" else self.tx).values())

    def check_faults(self):
        """The worker loop reports faults of every attached queue itself."""

    def counters(self):
        return {"rx": {i: q.counters() for i, q in self.rx.items()},
                "tx": {i: q.counters() for i, q in self.tx.items()}}


class Node:
    """A node kind: what a worker runs on the queues it holds.  Made from
    the plan and the plan's fds (after the stats fd; those left in the list
    are closed after the constructor); ``tell(msg, fds=())`` writes to the
    main process.  Setting ``report_now`` sends a counters snapshot after
    the pass."""
    report_now = False

    def __init__(self, plan, fds, tell):
        self.plan, self.tell = plan, tell

    def run(self, links):
        """One pass over ``links`` ({interface name: Attached}); frames moved."""
        return 0

    def idle(self, moved):
        """After a pass: True if the node waited itself, False to let the
        worker's Idler decide (sleep on the receive queues' eventfds)."""
        return False

    def snapshot(self):
        """(fields for the counters message, fds to send with it)."""
        return {"nodes": {}}, []

    def message(self, msg):
        """A control message for this kind."""

    def count_in(self, stats_fd):
        """Count into the stats file open as ``stats_fd`` where the plan says."""


class XConnectNode(Node):
    """``xconnect``: receive queue i of src into transmit queue i mod n of dst."""

    def __init__(self, plan, fds, tell):
        from memifx.xconnect import XConnect
        super().__init__(plan, fds, tell)
        self.nodes = {"%s->%s" % (s, d): XConnect() for s, d in plan["directions"]}

    def count_in(self, stats_fd):
        from memifx.stats import attach_node_fd
        slots = self.plan.get("node_slots")
        for name, offset in (slots[self.plan["worker"]] if slots else {}).items():
            attach_node_fd(self.nodes[name], stats_fd, offset)

    def run(self, links):
        moved = 0
        for src, dst in self.plan["directions"]:
            a, b = links.get(src), links.get(dst)
            if a is None:
                continue
            node = self.nodes["%s->%s" % (src, dst)]
            ntx = self.plan["tx_queues"][dst]
            for i, rxq in a.rx.items():
                txq = b.tx.get(i % ntx) if b is not None else None
                if txq is not None:
                    moved += node.poll(rxq, txq, 256, 64)
                else:
                    moved += node.discard(rxq)      # counted "tx link down"
        return moved

    def snapshot(self):
        return {"nodes": {n: node.counters() for n, node in self.nodes.items()}}, []


class RouterNode(Node):
    """``ip4``: our own Router over the FIB and the neighbor table the main
    process shares (both mapped read-only; the plan's fds, closed after)."""

    def __init__(self, plan, fds, tell):
        from memifx.fib import Fib
        from memifx.ip4 import Router
        from memifx.neighbor import NeighborTable
        super().__init__(plan, fds, tell)
        ip4 = plan["ip4"]
        self.router = r = Router(Fib.from_shared(fds[0]), NeighborTable.from_shared(fds[1]))
        for i, (info, name) in enumerate(zip(ip4["info"], ip4["names"])):
            r.add_interface(i, bytes.fromhex(info["mac"]), info["ip"], info["ip_mode"],
                            ip4["rx_queues"][i], plan["tx_queues"][name])

    def count_in(self, stats_fd):
        from memifx.stats import attach_node_fd
        slots = self.plan.get("node_slots")
        for i, name in enumerate(self.plan["ip4"]["names"]):
            if slots:
                attach_node_fd(self.router, stats_fd, slots[self.plan["worker"]][name], i)

    def run(self, links):
        """Every receive queue this worker owns once, through the router; the
        transmit queue of each interface is ours alone (index = worker mod n)."""
        plan, router = self.plan, self.router
        names = plan["ip4"]["names"]
        router.set_time(int(time.monotonic() * 1000))
        txqs = []
        for name in names:
            link = links.get(name)
            txqs.append(None if link is None
                        else link.tx.get(plan["worker"] % plan["tx_queues"][name]))
        n = 0
        for ifindex, name in enumerate(names):
            link = links.get(name)
            if link is not None:
                for rxq in link.rx.values():
                    n += router.poll(ifindex, rxq, txqs, 256, 64)
        learned = router.take_arp()
        if learned:
            self.tell({"op": "arp", "entries": [[i, ip, mac.hex()] for i, ip, mac in learned]})
        return n

    def snapshot(self):
        ip4 = self.plan["ip4"]
        if self.plan.get("node_slots"):
            return {"nodes": {}}, []    # counted in the stats file, read there
        return {"nodes": {}, "router": [
            self.router.counters(i, ip4["rx_queues"][i], self.plan["tx_queues"][name])
            for i, name in enumerate(ip4["names"])]}, []


def node_kind(name):
    """The Node class of a plan's ``node``."""
    if name == "xconnect":
        return XConnectNode
    if name == "ip4":
        return RouterNode
    if name in ("gen", "sink"):
        from memifx.tester_workers import TesterNode
        return TesterNode
    raise ValueError("unknown node kind %r" % name)


def worker_main(fd):
    from memifx import guard
    from memifx.errors import MemifError
    from memifx.memory import Memory
    from memifx.ring import Queue
    from memifx.rxmode import Idler

    from memifx import stats as stats_file
    # Ctrl-C reaches the whole process group: the main process decides when
    # we stop (a "stop" message, or its end of the socket closing).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sock = socket.socket(fileno=fd)
    plan = None
    stats_fd = None
    links = {}
    node = None
    idler = None
    last_counters = 0.0

    def tell(msg, fds=()):
        send(sock, msg, fds)

    def snapshot():
        """The counters message and the fds that go with it (ours to close)."""
        fields, fds = node.snapshot()
        msg = {"op": "counters", "queues": {k: link.counters() for k, link in links.items()}}
        msg.update(fields)
        return msg, fds

    def report(msg=None):
        """Send a counters snapshot, alone or inside ``msg`` as "snapshot"."""
        snap, fds = snapshot()
        try:
            if msg is None:
                send(sock, snap, fds)
            else:
                msg["snapshot"] = snap
                send(sock, msg, fds)
        finally:
            for fd_ in fds:
                os.close(fd_)

    def attach(msg, fds):
        """Take over a link: map its regions, rebuild the queues we own.
        MemifError if the fds are not what the message announces."""
        nreg = len(msg["regions"])
        if len(fds) != nreg + len(msg["queues"]):
            raise MemifError("worker %d: fd handoff incomplete (%d fds for %d regions "
                             "and %d queues)" % (plan["worker"], len(fds), nreg,
                                                 len(msg["queues"])))
        memory = Memory()
        for fd_, size in zip(fds[:nreg], msg["regions"]):
            memory.add_peer_region(fd_, size)
        rx, tx = {}, {}
        unslotted = set()
        modes = plan["modes"][msg["key"]]
        for q, qfd in zip(msg["queues"], fds[nreg:]):
            g = dict(q)
            kind, state = g.pop("kind"), g.pop("state")
            queue = Queue(memory, g["region"], g["ring_offset"], g["log2_size"],
                          slave=g["slave"], tx=g["tx"], index=g["index"], fd=qfd,
                          buffer_size=g["buffer_size"], buf_offset=g["buf_offset"],
                          nbufs=g["nbufs"], max_frame=g["max_frame"])
            fds.remove(qfd)             # the queue owns it now
            queue.restore(*state)
            slot = g.pop("slot", None)
            if slot is not None and stats_fd is not None:
                stats_file.attach_fd(queue, stats_fd, slot)     # counted where show reads
            else:
                unslotted.add((kind, g["index"]))
            if kind == "rx":
                queue.set_interrupt(modes[g["index"]] == "interrupt")
                rx[g["index"]] = queue
            else:
                tx[g["index"]] = queue
        links[msg["key"]] = Attached(msg["gen"], memory, rx, tx, modes)
        links[msg["key"]].unslotted = unslotted

    def detach(msg):
        link = links.get(msg["key"])
        if link is None or link.gen != msg["gen"]:
            send(sock, {"op": "detached", "key": msg["key"], "gen": msg["gen"],
                        "queues": {}})
            return
        del links[msg["key"]]
        for q in link.active_queues("rx") + link.active_queues("tx"):
            q.close()
        queues = {kind: {i: c for i, c in per.items() if (kind, i) in link.unslotted}
                  for kind, per in link.counters().items()}
        report({"op": "detached", "key": msg["key"], "gen": msg["gen"], "queues": queues})

    passes = 0
    moved = 0
    fault_count = guard.fault_count     # one atomic load, looked at between passes
    faults_seen = fault_count()
    while True:
        # Control messages: before the plan, block for it; then look only
        # when a pass found nothing, or every CONTROL_EVERY passes.
        passes += 1
        while plan is None or not moved or passes % CONTROL_EVERY == 0:
            try:
                msg, fds = recv(sock, 0 if plan is None else socket.MSG_DONTWAIT)
            except BlockingIOError:
                break
            except HandoffError as e:
                lost = e.msg or {}
                if lost.get("op") == "attach":      # that link would go unserved
                    send(sock, {"op": "fault", "key": lost["key"], "gen": lost["gen"],
                                "reason": "worker %d: fd handoff failed: %s" % (
                                    plan["worker"], e.reason)})
                else:
                    log.error("worker: a message was lost: %s", e)
                continue
            if msg is None or msg.get("op") == "stop":
                if plan is not None:
                    report()
                return 0
            try:
                if msg["op"] == "plan":
                    plan = msg
                    if plan.get("stats") and fds:
                        stats_fd = fds.pop(0)
                    node = node_kind(plan["node"])(plan, fds, tell)
                    if stats_fd is not None:
                        node.count_in(stats_fd)
                    idler = Idler([], plan["quiet"], wake_fds=[sock.fileno()])
                elif msg["op"] == "attach":
                    try:
                        attach(msg, fds)
                    except (MemifError, OSError, ValueError) as e:
                        log.warning("worker: cannot attach %s: %s", msg["key"], e)
                        send(sock, {"op": "fault", "key": msg["key"], "gen": msg["gen"],
                                    "reason": getattr(e, "reason", None) or str(e)})
                elif msg["op"] == "detach":
                    detach(msg)
                elif msg["op"] == "report":
                    report()
                elif msg["op"] == "sync":
                    # Between passes: nothing of the FIB is held from before.
                    send(sock, {"op": "synced", "gen": msg["gen"]})
                else:
                    node.message(msg)
            finally:
                for fd_ in fds:         # what no queue took: region fds are dup'd
                    os.close(fd_)
            idler.interfaces = list(links.values())
            idler.armed = [q for q in idler.armed if not q.closed]
        moved = node.run(links)
        if (not moved or passes % CONTROL_EVERY == 0) and fault_count() != faults_seen:
            # A peer truncated a region we map (the guard gave us zeros in
            # its place): its link goes down for that reason, before any ring
            # fault the zeros caused is reported.
            faults_seen = fault_count()
            for key, link in links.items():
                if link.memory.faulted and not link.fault_sent:
                    link.fault_sent = True
                    send(sock, {"op": "fault", "key": key, "gen": link.gen,
                                "reason": guard.REASON})
        for key, link in links.items() if (not moved or passes % CONTROL_EVERY == 0) else ():
            for q in link.active_queues("rx") + link.active_queues("tx"):
                if q.fault and not link.fault_sent:
                    send(sock, {"op": "fault", "key": key, "gen": link.gen,
                                "reason": q.fault_reason()})
                    break
        if node.report_now or not moved or passes % CONTROL_EVERY == 0:
            now = time.monotonic()
            if node.report_now or now - last_counters >= COUNTERS_EVERY:
                node.report_now = False
                report()
                last_counters = now
        if node.idle(moved):
            pass
        elif links:
            idler.after(moved)
        else:
            wait_readable([sock.fileno()], 0.1)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(worker_main(int(sys.argv[1])))
