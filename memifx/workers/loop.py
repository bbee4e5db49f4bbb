"""The worker process: ``python -m memifx.workers.loop FD``.

A worker runs the data path of one pool (memifx.workers.pool) on the
queues the main process hands it, over the socket FD (the protocol is
memifx.workers.protocol).  Its first message is the plan: the node kind it
runs, by import path (memifx.workers.node), and what that kind needs.  Then
it loops: a pass of the node over the attached links, then, when a pass
found nothing or every CONTROL_EVERY passes, the control socket, faults and
counters.  Idle, it sleeps on its receive queues' eventfds and the control
socket (memifx.rxmode.Idler) unless the node waits itself.

It answers ``sync`` with ``synced`` between two passes, where no node holds
a pointer into tables the main process shares (the FIB: memifx.nodes.router
explains why), whatever its node kind.  A peer that truncates a region a
worker maps, or a ring fault, becomes a ``fault`` for that link: the main
process takes the link down with that reason.

Ctrl-C reaches the whole process group: the main process decides when a
worker stops (a ``stop`` message, or its end of the socket closing).
"""
import logging
import os
import signal
import socket
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from memifx import guard, slots
from memifx import stats as stats_file
from memifx.errors import MemifError
from memifx.fdwait import wait_readable
from memifx.interface import RX_MODES
from memifx.memory import Memory
from memifx.ring import Queue
from memifx.rxmode import Idler
from memifx.workers import node as node_kinds
from memifx.workers.protocol import HandoffError, Message, close_fds, recv, send

log = logging.getLogger("memifx")

COUNTERS_EVERY = 0.5        # seconds between counter snapshots from a worker
CONTROL_EVERY = 256         # busy passes between looks at the control socket


class Attached:
    """One interface's link as a worker holds it: the link a Node's run()
    gets (memifx.workers.node), and a port for Idler and
    memifx.tester.Receiver."""

    def __init__(self, gen: int, memory: Memory, rx: Dict[int, Queue], tx: Dict[int, Queue],
                 modes: List[str]) -> None:
        self.gen, self.memory, self.rx, self.tx = gen, memory, rx, tx
        self.rx_modes = modes
        self.connected = True
        self.fault_sent = False         # a fault was reported for this link
        # (kind, index) of the queues counted in no stats slot
        self.unslotted: Set[Tuple[str, int]] = set()

    def active_queues(self, kind: str) -> List[Queue]:
        return list((self.rx if kind == "rx" else self.tx).values())

    def check_faults(self) -> None:
        """The worker loop reports faults of every attached queue itself."""

    def counters(self) -> Dict[str, Dict[int, Dict[str, Any]]]:
        return {"rx": {i: q.counters() for i, q in self.rx.items()},
                "tx": {i: q.counters() for i, q in self.tx.items()}}


class WorkerLoop:
    """One worker: its socket to the main process, its plan and node, the
    links it holds."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.plan: Optional[Message] = None
        self.stats_fd: Optional[int] = None
        self.links: Dict[str, Attached] = {}  # interface name -> Attached
        self.node: Optional[node_kinds.Node] = None
        self.idler: Optional[Idler] = None
        self.last_counters = 0.0

    def tell(self, msg: Message, fds: Sequence[int] = ()) -> None:
        """Write ``msg`` with ``fds`` to the main process."""
        send(self.sock, msg, fds)

    # ------------------------------------------------------------ messages

    def start(self, plan: Message, fds: List[int]) -> None:
        """The plan: make the node it names, count where it says."""
        self.plan = plan
        if plan.get("stats") and fds:
            self.stats_fd = fds.pop(0)
        self.node = node_kinds.load(plan["node"])(plan, fds, self.tell)
        if self.stats_fd is not None:
            self.node.count_in(self.stats_fd)
        self.idler = Idler([], plan["quiet"], wake_fds=[self.sock.fileno()])

    def attach(self, msg: Message, fds: List[int]) -> None:
        """Take over a link: map its regions, rebuild the queues we own.
        MemifError if the fds are not what the message announces."""
        plan = self.plan
        assert plan is not None, "attach before the plan"     # read_control keeps it out
        nreg = len(msg["regions"])
        if len(fds) != nreg + len(msg["queues"]):
            raise MemifError("worker %d: fd handoff incomplete (%d fds for %d regions "
                             "and %d queues)" % (plan["worker"], len(fds), nreg,
                                                 len(msg["queues"])))
        memory = Memory()
        for fd, size in zip(fds[:nreg], msg["regions"]):
            memory.add_peer_region(fd, size)
        rx: Dict[int, Queue] = {}
        tx: Dict[int, Queue] = {}
        unslotted: Set[Tuple[str, int]] = set()
        modes = plan["modes"][msg["key"]]
        for q, qfd in zip(msg["queues"], fds[nreg:]):
            g = dict(q)
            kind, state = g.pop("kind"), g.pop("state")
            queue = Queue(memory, g["region"], g["ring_offset"], g["log2_size"],
                          slave=g["slave"], tx=g["tx"], index=g["index"], fd=qfd,
                          buffer_size=g["buffer_size"], buf_offset=g["buf_offset"],
                          nbufs=g["nbufs"], max_frame=g["max_frame"])
            fds.remove(qfd)             # the queue owns it now
            queue.restore(state)
            slot = g.pop("slot", None)
            if slot is not None and self.stats_fd is not None:
                # Counted where show reads, on from what the slot holds (what
                # the main process counted there before handing it over).
                kept = os.pread(self.stats_fd, slots.COUNTER_SIZE, slot)
                stats_file.attach_fd(queue, self.stats_fd, slot)
                os.pwrite(self.stats_fd, kept, slot)    # nothing counts here meanwhile
            else:
                unslotted.add((kind, g["index"]))
            if kind == "rx":
                queue.set_interrupt(modes[g["index"]] == "interrupt")
                rx[g["index"]] = queue
            else:
                tx[g["index"]] = queue
        link = Attached(msg["gen"], memory, rx, tx, modes)
        link.unslotted = unslotted
        self.links[msg["key"]] = link

    def detach(self, msg: Message) -> None:
        """Let go of a link and say so, with the counters of its queues
        that no stats slot holds and where each queue stopped (the main
        process continues from there when the link stays up)."""
        link = self.links.get(msg["key"])
        if link is None or link.gen != msg["gen"]:
            self.tell({"op": "detached", "key": msg["key"], "gen": msg["gen"], "queues": {}})
            return
        del self.links[msg["key"]]
        states: Dict[str, Dict[int, Any]] = {"rx": {}, "tx": {}}
        for kind in ("rx", "tx"):
            for q in link.active_queues(kind):
                q.close()
                try:
                    states[kind][q.index] = q.state()
                except MemifError as e:     # missing: the main process cycles the link
                    log.warning("worker: %s %s queue %d: %s", msg["key"], kind, q.index, e)
        queues = {kind: {i: c for i, c in per.items() if (kind, i) in link.unslotted}
                  for kind, per in link.counters().items()}
        self.report({"op": "detached", "key": msg["key"], "gen": msg["gen"], "queues": queues,
                     "states": states})

    def set_rx_mode(self, msg: Message) -> None:
        """Receive mode of one queue of a link this worker serves (and of
        that queue on every later attach)."""
        plan = self.plan
        assert plan is not None, "read_control keeps it out before the plan"
        key, index, mode = msg["key"], msg["index"], msg["mode"]
        modes = plan["modes"].get(key)
        if modes is None or not 0 <= index < len(modes) or mode not in RX_MODES:
            log.error("worker: rx mode %r of %s queue %r refused", mode, key, index)
            return
        modes[index] = mode
        link = self.links.get(key)
        q = link.rx.get(index) if link is not None else None
        if q is None:
            return
        idler = self.idler
        assert idler is not None, "the plan made it"
        idler.armed = [a for a in idler.armed if a is not q]    # adaptive no more
        q.set_interrupt(mode == "interrupt")

    def snapshot(self) -> Tuple[Message, List[int]]:
        """The counters message and the fds that go with it (ours to close)."""
        assert self.node is not None, "a snapshot before the plan"
        fields, fds = self.node.snapshot()
        msg: Message = {"op": "counters",
                        "queues": {k: link.counters() for k, link in self.links.items()}}
        msg.update(fields)
        return msg, fds

    def report(self, msg: Optional[Message] = None) -> None:
        """Send a counters snapshot, alone or inside ``msg`` as "snapshot"."""
        snap, fds = self.snapshot()
        try:
            if msg is None:
                self.tell(snap, fds)
            else:
                msg["snapshot"] = snap
                self.tell(msg, fds)
        finally:
            close_fds(fds)

    def handle(self, msg: Optional[Message], fds: List[int]) -> bool:
        """One control message; False once the worker should stop."""
        if msg is None or msg.get("op") == "stop":
            if self.plan is not None:
                self.report()
            return False
        try:
            op = msg["op"]
            if op == "plan":
                self.start(msg, fds)
            elif op == "attach":
                try:
                    self.attach(msg, fds)
                except (MemifError, OSError, ValueError) as e:
                    log.warning("worker: cannot attach %s: %s", msg["key"], e)
                    self.tell({"op": "fault", "key": msg["key"], "gen": msg["gen"],
                               "reason": getattr(e, "reason", None) or str(e)})
            elif op == "detach":
                self.detach(msg)
            elif op == "rx_mode":
                self.set_rx_mode(msg)
            elif op == "report":
                self.report()
            elif op == "sync":
                # Between passes: nothing of the FIB is held from before.
                self.tell({"op": "synced", "gen": msg["gen"]})
            else:
                assert self.node is not None, "a node message before the plan"
                self.node.message(msg)
        finally:
            close_fds(fds)              # what no queue took: region fds are dup'd
        idler = self.idler
        assert idler is not None, "the plan made it"
        idler.interfaces = list(self.links.values())
        idler.armed = [q for q in idler.armed if not q.closed]
        return True

    def read_control(self, block: bool) -> bool:
        """Handle the control messages waiting (``block``: wait for one).
        False once the worker should stop."""
        while True:
            try:
                msg, fds = recv(self.sock, 0 if block else socket.MSG_DONTWAIT)
            except BlockingIOError:
                return True
            except HandoffError as e:
                lost = e.msg or {}
                if lost.get("op") == "attach" and self.plan is not None:   # it would go unserved
                    self.tell({"op": "fault", "key": lost["key"], "gen": lost["gen"],
                               "reason": "worker %d: fd handoff failed: %s" % (
                                   self.plan["worker"], e.reason)})
                else:
                    log.error("worker: a message was lost: %s", e)
                continue
            if self.plan is None and msg is not None and msg.get("op") not in ("plan", "stop"):
                log.error("worker: %r before its plan, ignored", msg.get("op"))
                close_fds(fds)
                continue
            if not self.handle(msg, fds):
                return False
            if block and self.plan is not None:
                block = False

    # ----------------------------------------------------------- the loop

    def report_faults(self, memory_faulted: bool) -> None:
        """A fault of each link (once per link): a region a peer truncated
        (``memory_faulted``: the guard counted one since the last look) goes
        first, before any ring fault the zeros in its place caused."""
        if memory_faulted:
            for key, link in self.links.items():
                if link.memory.faulted and not link.fault_sent:
                    link.fault_sent = True
                    self.tell({"op": "fault", "key": key, "gen": link.gen,
                               "reason": guard.REASON})
        for key, link in self.links.items():
            for q in link.active_queues("rx") + link.active_queues("tx"):
                if q.fault and not link.fault_sent:
                    self.tell({"op": "fault", "key": key, "gen": link.gen,
                               "reason": q.fault_reason()})
                    break

    def run(self) -> int:
        """Serve until told to stop; the exit status."""
        if not self.read_control(block=True):       # the plan first
            return 0
        passes = 0
        moved = 0
        fault_count = guard.fault_count     # one atomic load, looked at between passes
        faults_seen = fault_count()
        while True:
            passes += 1
            look = not moved or passes % CONTROL_EVERY == 0
            if look and not self.read_control(block=False):
                return 0
            node, idler = self.node, self.idler
            assert node is not None and idler is not None, "the plan made them"
            moved = node.run(self.links)
            look = not moved or passes % CONTROL_EVERY == 0
            if look:
                faults = fault_count()
                self.report_faults(faults != faults_seen)
                faults_seen = faults
            if node.report_now or look:
                now = time.monotonic()
                if node.report_now or now - self.last_counters >= COUNTERS_EVERY:
                    node.report_now = False
                    self.report()
                    self.last_counters = now
            if node.idle(moved):
                pass
            elif self.links:
                idler.after(moved)
            else:
                wait_readable([self.sock.fileno()], 0.1)


def main(fd: int) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    return WorkerLoop(socket.socket(fileno=fd)).run()


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main(int(sys.argv[1])))
