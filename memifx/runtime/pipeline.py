"""Pipeline kinds, described by data, and the pipelines built from them.

A kind names its small graph of nodes (as VPP names them: the job each
does) and the node class that runs that graph on a burst, by import path
so that this module imports no host.  A pipeline is one kind applied to
some interfaces; it runs either in this process (memifx/runtime/local.py)
or on its own worker pool (memifx/workers/), the same node class in both.
"""
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Type

from memifx.interface import Interface
from memifx.runtime.errors import DataplaneError
from memifx.runtime.local import LocalHost
from memifx.workers.node import Node, load

Counters = Dict[str, Any]
RESTART_SHOWN = 5.0     # seconds a worker's restart stays among the problems


@dataclass(frozen=True)
class Kind:
    """One pipeline kind: ``graph`` the node names a frame passes, in
    order; ``node`` the class hosting them ("module:Class"); ``interfaces``
    how many interfaces it takes (0: one or more)."""
    name: str
    graph: Tuple[str, ...]
    node: str
    interfaces: int

    def node_class(self) -> Type[Node]:
        return load(self.node)


KINDS: Dict[str, Kind] = {k.name: k for k in (
    Kind("xconnect", ("memif-input", "l2-xconnect", "interface-output"),
         "memifx.nodes.xconnect:XConnectNode", 2),
    Kind("echo", ("memif-input", "l2-xconnect", "interface-output"),
         "memifx.nodes.xconnect:XConnectNode", 1),
    Kind("ip4", ("memif-input", "ethernet-input", "arp-input", "ip4-input", "ip4-lookup",
                 "ip4-local", "ip4-rewrite", "interface-output"),
         "memifx.nodes.router:RouterNode", 0),
    Kind("gen", ("gen", "interface-output"),
         "memifx.nodes.tester:TesterNode", 0),
    Kind("sink", ("memif-input", "sink"), "memifx.nodes.tester:TesterNode", 1),
)}


def allowed_cpus() -> List[int]:
    return sorted(os.sched_getaffinity(0))


class Pipeline:
    """One pipeline: a kind over named interfaces, hosted in this process
    (``workers`` 0) or on a worker pool of its own."""

    def __init__(self, name: str, kind: Kind, interfaces: Mapping[str, Interface],
                 workers: int = 0, cpus: Optional[Sequence[int]] = None,
                 quiet: float = 100e-6, stats: Any = None) -> None:
        self.name, self.kind = name, kind
        self.interfaces = dict(interfaces)
        self.nworkers = workers
        self.cpus = list(cpus) if cpus else allowed_cpus()
        self.quiet = quiet
        self.stats = stats
        self.host: Optional[LocalHost] = None
        self.pool: Any = None
        self.final: Optional[Counters] = None     # counters at stop
        self.restarted_at: Dict[int, float] = {}  # worker index -> when it was restarted
        self.on_restart: Optional[Callable[[int], None]] = None     # the command's hook

    def hook_restarts(self) -> None:
        """Called once the pool exists: note each restart, then tell on_restart."""
        def restarted(index: int) -> None:
            self.restarted_at[index] = time.monotonic()
            if self.on_restart is not None:
                self.on_restart(index)
        self.pool.on_restart = restarted

    # what each kind provides
    def counters(self) -> Counters:
        raise NotImplementedError

    def node_entries(self) -> List[Counters]:
        """Counter dicts for the stats file (StatsFile.set_nodes)."""
        return []

    def after_pass(self) -> None:
        """Control-plane work after a pass or a pool poll (ARP learning)."""

    # common
    def run_pass(self) -> int:
        return self.host.run_pass() if self.host is not None else 0

    def poll_pool(self, timeout: float) -> None:
        if self.pool is not None:
            self.pool.poll(timeout)

    def worker_fds(self) -> List[int]:
        if self.pool is None:
            return []
        return [fd for fd in (w.sock.fileno() for w in self.pool.workers) if fd >= 0]

    def stop(self, hand_back: bool = False) -> None:
        """Stop its workers (they let go of every queue); counters final.
        ``hand_back``: the links the workers served stay up, this process's
        queues continuing where theirs stopped (WorkerPool.stop)."""
        if self.pool is not None:
            self.pool.stop(hand_back=hand_back)     # it unregisters its link callbacks too
        self.final = self.counters()

    def workers_state(self) -> Dict[str, Any]:
        if self.pool is None:
            return {"count": 0, "alive": 0, "restarts": 0}
        return {"count": self.pool.nworkers,
                "alive": sum(1 for w in self.pool.workers if w.alive()),
                "restarts": self.pool.restarts}

    def problems(self) -> List[str]:
        """A dead worker, and one restarted less than RESTART_SHOWN seconds
        ago (the pool restarts it at once: a probe would rarely see it dead)."""
        out = []
        if self.pool is not None and self.final is None:
            now = time.monotonic()
            for w in self.pool.workers:
                if not w.alive():
                    out.append("pipeline %s: worker %d (pid %d) is not running"
                               % (self.name, w.index, w.pid))
                elif now - self.restarted_at.get(w.index, -RESTART_SHOWN) < RESTART_SHOWN:
                    out.append("pipeline %s: worker %d died and was restarted %.1f s ago"
                               % (self.name, w.index, now - self.restarted_at[w.index]))
        return out

    def mapping(self) -> List[str]:
        return self.pool.mapping() if self.pool is not None else []

    def state(self) -> Dict[str, Any]:
        return {"kind": self.kind.name, "graph": list(self.kind.graph),
                "node": self.kind.node, "interfaces": list(self.interfaces),
                "workers": self.workers_state(), "counters": self.counters()}


class XConnectPipeline(Pipeline):
    """``xconnect`` (A <-> B) and ``echo`` (A -> A): receive queue i of src
    into transmit queue i mod n of dst, per direction."""

    def __init__(self, name: str, kind: Kind, interfaces: Mapping[str, Interface],
                 workers: int = 0, cpus: Optional[Sequence[int]] = None,
                 quiet: float = 100e-6, stats: Any = None) -> None:
        super().__init__(name, kind, interfaces, workers, cpus, quiet, stats)
        names = list(self.interfaces)
        if kind.name == "echo":
            self.directions = [(names[0], names[0])]
        else:
            self.directions = [(names[0], names[1]), (names[1], names[0])]
        self.names = ["%s->%s" % d for d in self.directions]
        if workers:
            from memifx.nodes.xconnect import XConnectPool
            ifs = [self.interfaces[n] for n in names]
            self.pool = XConnectPool(ifs, [(self.interfaces[s], self.interfaces[d])
                                         for s, d in self.directions],
                                   workers, self.cpus, quiet, stats=stats)
            self.hook_restarts()
        else:
            plan = {"directions": self.directions,
                    "tx_queues": {n: i.tx_queues for n, i in self.interfaces.items()}}
            self.host = LocalHost(kind.node_class(), plan, (), self.interfaces)

    def counters(self) -> Counters:
        """{direction "A->B": {packets, bytes, drops}}."""
        if self.final is not None:
            return self.final
        if self.pool is not None:
            got = self.pool.node_counters()
            return {n: got.get(n, {"packets": 0, "bytes": 0, "drops": {}}) for n in self.names}
        assert self.host is not None
        nodes = self.host.node.nodes
        return {n: nodes[n].counters() for n in self.names}

    def node_entries(self) -> List[Counters]:
        if self.kind.name == "echo":
            (c,) = self.counters().values()
            return [dict(c, node="echo", interface=self.directions[0][0])]
        return [dict(c, node="xconnect", direction=n) for n, c in self.counters().items()]


def pipeline_class(kind: str) -> Callable[..., Pipeline]:
    if kind in ("xconnect", "echo"):
        return XConnectPipeline
    if kind == "ip4":
        from memifx.runtime.ip4 import Ip4Pipeline
        return Ip4Pipeline
    if kind in ("gen", "sink"):
        from memifx.runtime.tester import TesterPipeline
        return TesterPipeline
    raise DataplaneError("unknown pipeline kind %r; kinds are %s"
                         % (kind, ", ".join(sorted(KINDS))))
