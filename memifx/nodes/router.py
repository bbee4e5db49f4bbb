"""The ``ip4`` node kind: the router of ip4-forward.

The plan carries the interfaces (index, MAC, address, ip mode) and two fds:
the FIB and the neighbor table, each one sealed memfd that the main process
created, maps writable and changes in place, and every worker maps
read-only (Fib.from_shared, NeighborTable.from_shared): one copy of the
tables however many workers, and a change (a route added or deleted at run
time, a neighbor learned) is seen by every worker at once, without a
message.  Ownership: worker w has receive queue i of every interface with
``i mod W == w`` and transmit queue ``w`` of every interface (RouterPool
makes W no larger than any interface's transmit queue count), so one
producer per transmit ring.  The ARP replies a worker's data path queued
come back as ``arp`` for the control plane to judge.

Workers read the FIB without locks, so a second-level block or next-hop
record the main process unlinks must not be reused while a worker may still
be looking at it.  The main process retires such items and, when some are
waiting, sends every worker ``sync`` with a token; a worker answers
``synced`` when it reads the message, between two passes, where it holds no
pointer into the tables (memifx.workers.loop answers it for every kind);
once every live worker has answered, the items retired before the token are
free again (Fib.sync_begin / sync_done).  A worker started later never saw
them, so it counts as synced from birth.

Each worker counts each interface into its own counter block in the stats
file (Router block i = ifindex i), kept across restarts.
"""
from __future__ import annotations

import logging
import time
from typing import (TYPE_CHECKING, Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set,
                    Tuple)

from memifx.workers.node import Link, Node, Tell, import_path
from memifx.workers.pool import Worker, WorkerPool
from memifx.workers.protocol import Message

if TYPE_CHECKING:
    from memifx.fib import Fib
    from memifx.interface import Interface
    from memifx.neighbor import NeighborTable
    from memifx.ring import Queue
    from memifx.stats import StatsFile

log = logging.getLogger("memifx")


class RouterNode(Node):
    """Our own Router over the FIB and the neighbor table the main process
    shares (both mapped read-only; the plan's fds, closed after)."""

    def __init__(self, plan: Message, fds: List[int], tell: Tell) -> None:
        from memifx.fib import Fib
        from memifx.ip4 import Router
        from memifx.neighbor import NeighborTable
        super().__init__(plan, fds, tell)
        ip4 = plan["ip4"]
        self.router = r = Router(Fib.from_shared(fds[0]), NeighborTable.from_shared(fds[1]))
        for i, (info, name) in enumerate(zip(ip4["info"], ip4["names"])):
            r.add_interface(i, bytes.fromhex(info["mac"]), info["ip"], info["ip_mode"],
                            ip4["rx_queues"][i], plan["tx_queues"][name])

    def count_in(self, stats_fd: int) -> None:
        from memifx.stats import attach_node_fd
        slots = self.plan.get("node_slots")
        for i, name in enumerate(self.plan["ip4"]["names"]):
            if slots:
                attach_node_fd(self.router, stats_fd, slots[self.plan["worker"]][name], i)

    def run(self, links: Mapping[str, Link]) -> int:
        """Every receive queue this worker owns once, through the router; the
        transmit queue of each interface is ours alone (index = worker mod n)."""
        plan, router = self.plan, self.router
        names = plan["ip4"]["names"]
        router.set_time(int(time.monotonic() * 1000))
        txqs: List[Optional[Queue]] = []
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

    def snapshot(self) -> Tuple[Message, List[int]]:
        ip4 = self.plan["ip4"]
        if self.plan.get("node_slots"):
            return {"nodes": {}}, []    # counted in the stats file, read there
        return {"nodes": {}, "router": [
            self.router.counters(i, ip4["rx_queues"][i], self.plan["tx_queues"][name])
            for i, name in enumerate(ip4["names"])]}, []


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

    def __init__(self, interfaces: Sequence[Interface], workers: int,
                 cpus: Optional[Sequence[int]], router_info: Iterable[Mapping[str, Any]],
                 fib: Fib, neighbors: NeighborTable, quiet: float = 100e-6,
                 stats: Optional[StatsFile] = None) -> None:
        if any(i.tx_queues < workers for i in interfaces):
            raise ValueError("every interface needs at least %d transmit queues" % workers)
        self.order = [i.name for i in interfaces]
        self.fib = fib
        self.neighbors = neighbors
        fib.defer_reuse = True          # readers in other processes from now on
        self.sync_token: Optional[int] = None  # the sync the workers are answering, if any
        # (ifindex, ip, mac) from the workers' data paths
        self.arp_pending: List[Tuple[int, int, bytes]] = []
        self.ip4: Message = {"names": self.order, "info": list(router_info),
                    "rx_queues": [i.rx_queues for i in interfaces]}
        self.queue_counts = [(i.rx_queues, i.tx_queues) for i in interfaces]
        super().__init__(interfaces, workers, cpus, quiet, node=import_path(RouterNode),
                         stats=stats)

    def counter_blocks(self) -> Dict[str, int]:
        """One counter block per interface (Router block i = ifindex i)."""
        from memifx.ip4 import counter_block_size
        return {name: counter_block_size(nrx, ntx)
                for name, (nrx, ntx) in zip(self.order, self.queue_counts)}

    def plan_for_spawn(self, w: int) -> Tuple[Message, Sequence[int]]:
        return dict(self.plan, ip4=self.ip4), [self.fib.fd, self.neighbors.fd]

    def spawn(self, w: int) -> Worker:
        # It maps the tables after everything retired so far was unlinked.
        synced = self.fib.sync_begin()
        worker = super().spawn(w)
        worker.synced = synced
        return worker

    def needs(self, name: str, w: int) -> Tuple[Set[int], Set[int]]:
        intf = self.interfaces[name]
        rx = {i for i in range(intf.rx_queues) if i % self.nworkers == w}
        return rx, {w % intf.tx_queues}

    def describe(self, w: int) -> str:
        parts = []
        for name in self.order:
            rx, tx = self.needs(name, w)
            parts.append("%s rx%s tx%s" % (name, ",".join(map(str, sorted(rx))) or "-",
                                           ",".join(map(str, sorted(tx)))))
        return "ip4 " + ", ".join(parts)

    def set_neighbor(self, ifindex: int, ip: int, mac: Optional[bytes]) -> None:
        """Add or change a neighbor (mac bytes), or remove it (mac None): the
        shared table changes, every worker sees it at once."""
        if mac is None:
            self.neighbors.discard(ifindex, ip)
        else:
            self.neighbors.add(ifindex, ip, bytes(mac))

    def take_arp(self) -> List[Tuple[int, int, bytes]]:
        """ARP replies the workers reported since the last call (as Router.take_arp)."""
        out, self.arp_pending = self.arp_pending, []
        return out

    def handle(self, w: Worker, msg: Message, fds: Sequence[int] = ()) -> None:
        op = msg.get("op")
        if op == "arp":
            self.arp_pending.extend((i, ip, bytes.fromhex(mac)) for i, ip, mac in msg["entries"])
        elif op == "synced":
            w.synced = max(w.synced, msg["gen"])
        else:
            super().handle(w, msg, fds)

    # ------------------------------------------- reclaiming retired items

    def poll(self, timeout: float) -> None:
        super().poll(timeout)
        self.reclaim()

    def reclaim(self) -> bool:
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

    def synchronize(self, timeout: float = 1.0) -> bool:
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

    def router_counters(self, ifindex: int, base: Dict[str, Any]) -> Dict[str, Any]:
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
                total = add_counters(total, counters_from_block(per[name], nrx, ntx))
            return total
        for snap in self.node_snapshots():
            routed = (snap or {}).get("router")
            if routed and ifindex < len(routed):
                total = add_counters(total, routed[ifindex])
        return total


def add_counters(a: Any, b: Any) -> Any:
    """Sum two counter trees of the same shape (dicts, lists, numbers)."""
    if isinstance(a, dict):
        return {k: add_counters(v, b.get(k, 0) if isinstance(b, dict) else 0)
                for k, v in a.items()}
    if isinstance(a, list):
        return [add_counters(x, y) for x, y in zip(a, b)] + a[len(b):]
    return a + b
