"""Worker processes seen from the main process: spawn, pin, who owns which
queue, attach/detach on link changes, restarts, counters.

The main process keeps the control plane (sockets, handshakes, reconnects).
Each worker is ``python -m memifx.workers.loop FD``, pinned to one CPU with
psutil, and talks to the main process over a socketpair
(memifx.workers.protocol).  Its first message is the plan: the node kind it
runs, by import path (memifx.workers.node), and what that kind needs.

When a link comes up the pool sends every worker an ``attach``: the region
fds (the worker maps them itself), the geometry and private positions of the
queues that worker owns, and their eventfds.  When it goes down it sends
``detach``; the worker stops using those queues, drops its mapping and
answers ``detached`` with their final counters.  Each worker unmaps only
memory it no longer touches, and every message carries the link's
generation, so a late message about an old link is never applied to a new
one.

Who owns what is the pool's ``needs(name, w)``, one rule per node kind
(memifx.nodes): every rule gives every transmit ring exactly one producer
and every receive ring exactly one consumer, whatever the links do.

A pool may also take over a link that is already up (``take_over``: the
attach carries the positions the main process's queues reached) and hand
it back when it stops (``stop(hand_back=True)``: every worker answers the
detach with its queues' final state, Queue.state(), and the main
process's queues continue from there).  Either way the link stays up and
no frame is lost or seen twice; the peer notices nothing.

A worker that dies is restarted; the links it served are flapped (its
private ring positions died with it), which shows in link_flaps.

A worker's counters snapshot (every few tenths of a second, on ``report``,
and in its ``detached`` and final messages) may carry fds: the pool's
handler reads what it needs of them before they are closed.  Queue
counters, and the counter blocks a node kind declares (``counter_blocks``),
do not wait for a snapshot: workers count them straight into slots of the
stats file (``node_slots`` in the plan: one slot per worker and counter
block, kept across restarts; memifx/counted.pyx), so a worker killed
mid-traffic loses none of them.

Several pools may run in one process, each on its own interfaces; ``stop``
ends one pool's workers and unhooks it from its interfaces, which stay
connected, while the others carry on.
"""
from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import time
from typing import (TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Mapping, Optional,
                    Sequence, Set, Tuple)

from memifx.errors import MemifError
from memifx.fdwait import wait_readable
from memifx.workers import protocol
from memifx.workers.protocol import DEAD_PEER, HandoffError, Message

if TYPE_CHECKING:
    from memifx.interface import Interface
    from memifx.stats import StatsFile

log = logging.getLogger("memifx")

DETACH_WAIT = 1.0           # seconds a link-down waits for each worker to let go

# How a Worker hands what it read to its pool: handle(worker, msg, fds).
Handler = Callable[["Worker", Message, List[int]], None]


def parse_cpus(text: str) -> List[int]:
    """'2-5,8' -> [2, 3, 4, 5, 8]: the CPUs workers are pinned to."""
    cpus: List[int] = []
    for part in filter(None, text.split(",")):
        lo, _, hi = part.partition("-")
        cpus.extend(range(int(lo), int(hi or lo) + 1))
    if not cpus:
        raise ValueError("empty CPU list")
    return sorted(set(cpus))


class Worker:
    """One worker process, seen from the main process."""

    synced: int                 # the latest sync it answered, where its pool syncs (router)

    def __init__(self, index: int, cpu: Optional[int], plan: Mapping[str, Any],
                 handle: Handler, stats_fd: Optional[int] = None,
                 plan_fds: Iterable[int] = ()) -> None:
        self.index, self.cpu = index, cpu
        self.handle = handle            # handle(worker, msg, fds): the pool's dispatcher
        self.recv_lock = threading.Lock()
        self.detached: Set[Tuple[str, int]] = set()  # (key, gen) the worker has let go of
        # key -> (gen, {"rx"/"tx": {index: state}}): where its queues of that link stopped
        self.final_states: Dict[str, Tuple[int, Dict[str, Dict[str, Any]]]] = {}
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "memifx.workers.loop", str(theirs.fileno())],
            pass_fds=[theirs.fileno()])
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        self.counters: Message = {}     # the latest snapshot: {"nodes": ..., "queues": ...}
        self.send_error: Optional[OSError] = None  # why the last send that failed did
        if cpu is not None:
            import psutil
            try:
                psutil.Process(self.proc.pid).cpu_affinity([cpu])
            except (psutil.Error, OSError) as e:
                log.warning("worker %d: cannot pin to CPU %d: %s", index, cpu, e)
        try:
            with self.lock:
                protocol.send(self.sock, dict(plan, op="plan", worker=index,
                                              stats=stats_fd is not None),
                              ([stats_fd] if stats_fd is not None else []) + list(plan_fds))
        except OSError as e:
            if e.errno not in DEAD_PEER:    # a dead one is restarted by poll()
                self.proc.kill()
                self.proc.wait()
                self.sock.close()
                raise

    def send(self, msg: Message, fds: Sequence[int] = ()) -> bool:
        """Send ``msg`` with ``fds``; False if it did not go out.  A worker
        that died is restarted by poll(); any other failure is logged here
        and the caller decides what it costs (an attach fails its link)."""
        with self.lock:
            try:
                protocol.send(self.sock, msg, fds)
                return True
            except OSError as e:
                if e.errno not in DEAD_PEER:
                    log.error("worker %d: cannot send %s with %d fds: %s",
                              self.index, msg.get("op"), len(fds), e)
                self.send_error = e
                return False

    def pump(self, timeout: float) -> None:
        """Read and dispatch what the worker sent (waiting up to ``timeout``
        for the first message).  Any thread may pump; one at a time."""
        with self.recv_lock:
            fd = self.sock.fileno()
            if fd < 0 or not wait_readable([fd], timeout):
                return
            while True:
                try:
                    msg, fds = protocol.recv(self.sock, socket.MSG_DONTWAIT)
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
                    protocol.close_fds(fds)

    def wait_detached(self, key: str, gen: int, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while (key, gen) not in self.detached and self.alive() and time.monotonic() < end:
            self.pump(min(0.05, max(0.0, end - time.monotonic())))
        return (key, gen) in self.detached

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        self.send({"op": "stop"})


class WorkerPool:
    """The workers of one pipeline: ``workers`` processes running the node
    kind ``node`` (an import path, memifx.workers.node) on ``interfaces``,
    pinned round-robin to ``cpus`` (None: not pinned).  A node kind's pool
    subclasses this with its ownership rule (``needs``) and what its plan
    carries (``plan_fields``, ``plan_for_spawn``)."""

    def __init__(self, interfaces: Sequence[Interface], workers: int,
                 cpus: Optional[Sequence[int]], quiet: float = 100e-6,
                 node: Optional[str] = None, stats: Optional[StatsFile] = None) -> None:
        if not isinstance(node, str):
            raise TypeError("node: the node kind's import path, 'module:Class'")
        self.interfaces = {i.name: i for i in interfaces}
        self.nworkers = workers
        self.cpus = cpus
        self.node = node
        self.gens = {name: 0 for name in self.interfaces}
        # name -> the connection the workers were given, while it is up
        self.attached: Dict[str, Any] = {}
        self.restarts = 0
        self.stopping = False
        self.retired: List[Message] = []  # counter snapshots of workers that died
        self.plan: Message = {"workers": workers, "node": node,
                     "tx_queues": {n: i.tx_queues for n, i in self.interfaces.items()},
                     "modes": {n: list(i.rx_modes) for n, i in self.interfaces.items()},
                     "quiet": quiet}
        self.plan.update(self.plan_fields())
        self.stats = stats              # StatsFile: workers count straight into it
        self.node_blocks = self.counter_blocks()
        if stats is not None and self.node_blocks:
            self.plan["node_slots"] = [{name: stats.node_slot(size)
                                        for name, size in self.node_blocks.items()}
                                       for _ in range(workers)]
        self.lock = threading.RLock()
        self.workers = [self.spawn(w) for w in range(workers)]
        self.hooked = list(interfaces)  # whose link changes we follow until stop()
        for intf in self.hooked:
            intf.on_link(self._on_down, first=True)     # quiesce before anyone folds
            intf.on_link(self._on_up)

    # ------------------------------------------- what a node kind's pool says

    def plan_fields(self) -> Message:
        """{key: value} the node kind adds to every worker's plan."""
        return {}

    def needs(self, name: str, w: int) -> Tuple[Set[int], Set[int]]:
        """(rx, tx): the sets of queue indices of interface ``name`` worker
        ``w`` owns.  The default gives worker w the queues q with
        ``q mod workers == w``, both ways."""
        intf = self.interfaces[name]
        return ({q for q in range(intf.rx_queues) if q % self.nworkers == w},
                {q for q in range(intf.tx_queues) if q % self.nworkers == w})

    def counter_blocks(self) -> Dict[str, int]:
        """{name: bytes} of the counter blocks one worker's node counts into
        stats file slots (memifx/counted.pyx; ``node_slots`` in the plan)."""
        return {}

    def plan_for_spawn(self, w: int) -> Tuple[Message, Sequence[int]]:
        """The plan message for worker w and the fds that go with it (after
        the stats fd)."""
        return self.plan, ()

    def slot_values(self) -> List[Dict[str, List[int]]]:
        """Per worker, {block name: its slot's u64s}: what every worker that
        ever had that index counted (a restarted one continues there)."""
        stats = self.stats
        assert stats is not None, "node_slots are only planned with a stats file"
        return [{name: stats.read_slot(off, self.node_blocks[name])
                 for name, off in per.items()} for per in self.plan["node_slots"]]

    def spawn(self, w: int) -> Worker:
        """Start worker w (again, after a restart) and record where it runs."""
        plan, plan_fds = self.plan_for_spawn(w)
        worker = Worker(w, self._cpu(w), plan, self.handle,
                        self.stats.fileno() if self.stats is not None else None, plan_fds)
        if self.stats is not None:
            for name, intf in self.interfaces.items():
                rx, tx = self.needs(name, w)
                for kind, need in (("rx", rx), ("tx", tx)):
                    for i in need:
                        self.stats.set_worker(intf, kind, i, w, worker.cpu)
        return worker

    def _cpu(self, w: int) -> Optional[int]:
        return self.cpus[w % len(self.cpus)] if self.cpus else None

    def mapping(self) -> List[str]:
        """Human-readable, a line per worker: where it runs, what it serves."""
        return ["worker %d (pid %d, cpu %s): %s" % (
            w.index, w.pid, "any" if w.cpu is None else w.cpu, self.describe(w.index))
            for w in self.workers]

    def describe(self, w: int) -> str:
        """What worker ``w`` serves, for mapping()."""
        parts = []
        for name in self.interfaces:
            rx, tx = self.needs(name, w)
            if rx or tx:
                parts.append("%s rx%s tx%s" % (name, ",".join(map(str, sorted(rx))) or "-",
                                               ",".join(map(str, sorted(tx))) or "-"))
        return ", ".join(parts) or "idle"

    # ------------------------------------------------------- link changes

    def _attach(self, intf: Interface, worker: Worker) -> None:
        conn = intf.connection
        if conn is None:
            return
        rx_need, tx_need = self.needs(intf.name, worker.index)
        queues, fds = [], list(conn.memory.fds)
        try:
            for kind, qs, need in (("rx", conn.rx, rx_need), ("tx", conn.tx, tx_need)):
                for q in qs:
                    if q.index in need:
                        slot = (self.stats.live_slot(intf, kind, q.index)
                                if self.stats is not None else None)
                        queues.append(dict(q.geometry(), kind=kind,
                                           state=q.state(), slot=slot))
                        fds.append(q.fd)
        except MemifError as err:
            intf.report_fault(conn, "worker %d cannot take over: %s" % (worker.index,
                                                                        err.reason))
            return
        if not worker.send({"op": "attach", "key": intf.name, "gen": self.gens[intf.name],
                            "regions": conn.memory.sizes(), "queues": queues}, fds):
            e = worker.send_error
            if e is not None and e.errno not in DEAD_PEER:  # a dead one: _restart flaps it
                intf.report_fault(conn, "worker %d attach failed: %s" % (
                    worker.index, e.strerror or e))

    def take_over(self) -> None:
        """Attach the workers to the links of our interfaces that are up
        already (those that come up later attach at link-up): they continue
        from the positions the queues of this process reached, which nobody
        in this process may touch from now on.  The link stays up."""
        with self.lock:
            for intf in self.hooked:
                conn = intf.connection
                if conn is not None and self.attached.get(intf.name) is not conn:
                    self._on_up(intf, True)

    def _on_up(self, intf: Interface, up: bool) -> None:
        if not up:
            return
        with self.lock:
            self.gens[intf.name] += 1
            self.attached[intf.name] = intf.connection
            if self.stats is not None:
                self.stats.link_changed(intf, True)     # live slots exist before we hand them out
            for w in self.workers:
                self._attach(intf, w)

    def _on_down(self, intf: Interface, up: bool) -> None:
        """Before the interface and the stats file fold this link's counters:
        every worker stops using its queues and says so (bounded wait)."""
        if up:
            return
        with self.lock:
            self.attached.pop(intf.name, None)      # its mapping and fds go with it
            gen = self.gens[intf.name]
            for w in self.workers:
                w.send({"op": "detach", "key": intf.name, "gen": gen})
            for w in self.workers:
                if not w.wait_detached(intf.name, gen, DETACH_WAIT):
                    log.warning("worker %d did not let go of %s in time", w.index, intf.name)

    def set_rx_mode(self, intf: Interface, index: int, mode: str) -> None:
        """Receive mode of ``intf``'s queue ``index``: set by the worker
        that serves it (now, and on every later attach or restart), and
        recorded in ``intf.rx_modes``.  ValueError/IndexError for a mode or
        queue that does not exist."""
        from memifx.interface import RX_MODES
        if mode not in RX_MODES:
            raise ValueError("rx mode must be %s" % ", ".join(RX_MODES))
        if not 0 <= index < intf.rx_queues:
            raise IndexError("no receive queue %d" % index)
        with self.lock:
            intf.rx_modes[index] = mode
            self.plan["modes"][intf.name][index] = mode
            for w in self.workers:
                if index in self.needs(intf.name, w.index)[0]:
                    w.send({"op": "rx_mode", "key": intf.name, "index": index, "mode": mode})

    # ----------------------------------------------------------- running

    def poll(self, timeout: float) -> None:
        """Handle worker messages for up to ``timeout`` seconds; restart dead workers."""
        socks = {w.sock.fileno(): w for w in self.workers}
        socks.pop(-1, None)             # closed: being replaced
        for fd in wait_readable(list(socks), timeout):
            socks[fd].pump(0)
        if not self.stopping:
            for w in list(self.workers):
                if not w.alive():
                    self._restart(w)

    def handle(self, w: Worker, msg: Message, fds: Sequence[int] = ()) -> None:
        """A message from worker ``w`` (its fds are closed after this returns)."""
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
            w.final_states[msg["key"]] = (msg["gen"], msg.get("states") or {})
            w.detached.add((msg["key"], msg["gen"]))
        elif op == "fault":
            intf = self.interfaces.get(msg["key"])
            if intf is not None and msg["gen"] == self.gens[msg["key"]] and intf.connection:
                intf.report_fault(intf.connection, msg["reason"])

    def _restart(self, w: Worker) -> None:
        code = w.proc.returncode
        log.warning("worker %d (pid %d) died (%s); restarting", w.index, w.pid,
                    "signal %d" % -code if code and code < 0 else "exit %s" % code)
        self.restarts += 1
        self.retired.append(w.counters)
        w.sock.close()
        with self.lock:
            self.workers[w.index] = self.spawn(w.index)
            # Its private ring positions died with it: flap what it served.
            for name, intf in self.interfaces.items():
                rx, tx = self.needs(name, w.index)
                if (rx or tx) and intf.connection is not None:
                    intf.report_fault(intf.connection, "worker %d restarted" % w.index)
        self.on_restart(w.index)

    def on_restart(self, index: int) -> None:
        """Hook for the command (it prints the event)."""

    def node_counters(self) -> Dict[str, Any]:
        """Node counters ({name: packets, bytes, drops}) summed over the
        snapshots of live and retired workers."""
        total: Dict[str, Any] = {}
        for snap in self.node_snapshots():
            for name, c in (snap or {}).get("nodes", {}).items():
                t = total.setdefault(name, {"packets": 0, "bytes": 0, "drops": {}})
                t["packets"] += c["packets"]
                t["bytes"] += c["bytes"]
                for r, n in c["drops"].items():
                    t["drops"][r] = t["drops"].get(r, 0) + n
        return total

    def node_snapshots(self) -> List[Message]:
        """The snapshots node_counters adds up: the latest of every live
        worker and the last of every one that died."""
        return [w.counters for w in self.workers] + self.retired

    def _hand_back(self, intf: Interface) -> None:
        """Detach the workers from ``intf``'s live link and make the queues
        of this process continue where theirs stopped; a link whose state
        did not all come back is taken down (its positions are unknown)."""
        conn = intf.connection
        if conn is None or self.attached.get(intf.name) is not conn:
            return
        live: Any = conn
        key, gen = intf.name, self.gens[intf.name]
        for w in self.workers:
            w.send({"op": "detach", "key": key, "gen": gen})
        queues = {"rx": {q.index: q for q in live.rx}, "tx": {q.index: q for q in live.tx}}
        problem = None
        for w in self.workers:
            rx, tx = self.needs(key, w.index)
            owned = {"rx": rx & set(queues["rx"]), "tx": tx & set(queues["tx"])}
            if not (owned["rx"] or owned["tx"]):
                w.wait_detached(key, gen, DETACH_WAIT)
                continue
            if not w.wait_detached(key, gen, DETACH_WAIT):
                problem = "worker %d did not hand back its queues" % w.index
                continue
            got_gen, states = w.final_states.pop(key, (None, {}))
            if got_gen != gen:
                states = {}
            for kind in ("rx", "tx"):
                for index in owned[kind]:
                    state = states.get(kind, {}).get(str(index))
                    try:
                        if state is None:
                            raise ValueError("no state for %s queue %d" % (kind, index))
                        queues[kind][index].restore(state)
                    except (ValueError, TypeError) as e:
                        problem = "worker %d handed back a bad state: %s" % (w.index, e)
        self.attached.pop(key, None)
        for q in live.rx:               # as at link-up here: adaptive starts polling
            q.set_interrupt(intf.rx_modes[q.index] == "interrupt")
        if problem is not None:
            log.warning("memif %s: %s", key, problem)
            intf.report_fault(live, problem)

    def stop(self, timeout: float = 5.0, hand_back: bool = False) -> None:
        """Stop this pool's workers (their final snapshots are read) and stop
        following its interfaces' link changes; the interfaces stay as they
        are, and other pools of this process are not touched.  ``hand_back``:
        the links the workers serve stay up and this process's queues
        continue exactly where the workers' stopped (else their positions
        are stale: the caller cycles those links)."""
        with self.lock:
            self.stopping = True
            for intf in self.hooked:
                intf.remove_on_link(self._on_down)
                intf.remove_on_link(self._on_up)
            if hand_back:
                for intf in self.hooked:
                    self._hand_back(intf)
            self.hooked = []
            self.attached.clear()
            if self.stats is not None:
                for intf in self.interfaces.values():
                    self.stats.clear_workers(intf)
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
