"""The ``xconnect`` node kind: links cross-connected in pairs of directions.

Who owns what: in a direction ``src -> dst``, receive queue i of src feeds
transmit queue ``t = i mod (dst's configured tx queues)``; the pair belongs
to worker ``t mod W``.  So every transmit ring has exactly one producer, and
a receive ring exactly one consumer, whatever the links do.  While dst is
down the owner drains src's receive ring and counts the frames "tx link
down", as the in-process loop does.

Each worker counts each direction into its own counter block in the stats
file (one slot per worker and direction, kept across restarts), so a worker
killed mid-traffic loses none of them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Mapping, Optional, Sequence, Set, Tuple

from memifx.workers.node import Link, Node, Tell, import_path
from memifx.workers.pool import WorkerPool
from memifx.workers.protocol import Message

if TYPE_CHECKING:
    from memifx.interface import Interface
    from memifx.stats import StatsFile


def owner(tx_index: int, workers: int) -> int:
    """The worker that owns transmit queue ``tx_index`` (and what feeds it)."""
    return tx_index % workers


class XConnectNode(Node):
    """Receive queue i of src into transmit queue i mod n of dst, for every
    direction (src, dst) of ``plan["directions"]``."""

    def __init__(self, plan: Message, fds: List[int], tell: Tell) -> None:
        from memifx.xconnect import XConnect
        super().__init__(plan, fds, tell)
        self.nodes = {"%s->%s" % (s, d): XConnect() for s, d in plan["directions"]}

    def count_in(self, stats_fd: int) -> None:
        from memifx.stats import attach_node_fd
        slots = self.plan.get("node_slots")
        for name, offset in (slots[self.plan["worker"]] if slots else {}).items():
            attach_node_fd(self.nodes[name], stats_fd, offset)

    def run(self, links: Mapping[str, Link]) -> int:
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

    def snapshot(self) -> Tuple[Message, List[int]]:
        return {"nodes": {n: node.counters() for n, node in self.nodes.items()}}, []


class XConnectPool(WorkerPool):
    """The workers of xconnect: ``directions`` a list of (src, dst)
    Interfaces."""

    def __init__(self, interfaces: Sequence[Interface],
                 directions: Sequence[Tuple[Interface, Interface]], workers: int,
                 cpus: Optional[Sequence[int]], quiet: float = 100e-6,
                 stats: Optional[StatsFile] = None) -> None:
        self.directions = [(s.name, d.name) for s, d in directions]
        super().__init__(interfaces, workers, cpus, quiet, node=import_path(XConnectNode),
                         stats=stats)

    def plan_fields(self) -> Message:
        return {"directions": self.directions}

    def counter_blocks(self) -> Dict[str, int]:
        """One counter block per direction."""
        from memifx.xconnect import COUNTER_SIZE
        return {"%s->%s" % d: COUNTER_SIZE for d in self.directions}

    def needs(self, name: str, w: int) -> Tuple[Set[int], Set[int]]:
        rx: Set[int] = set()
        tx: Set[int] = set()
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

    def describe(self, w: int) -> str:
        pairs = []
        for src, dst in self.directions:
            ntx = self.interfaces[dst].tx_queues
            for i in range(self.interfaces[src].rx_queues):
                if owner(i % ntx, self.nworkers) == w:
                    pairs.append("%s rx%d -> %s tx%d" % (src, i, dst, i % ntx))
        return ", ".join(pairs) or "idle"

    def node_snapshots(self) -> List[Message]:
        """Read where the workers count (the stats file) when they do."""
        if "node_slots" not in self.plan:
            return super().node_snapshots()
        from memifx.xconnect import counters_from_slot
        return [{"nodes": {name: counters_from_slot(values) for name, values in per.items()}}
                for per in self.slot_values()]
