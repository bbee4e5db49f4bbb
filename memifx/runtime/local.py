"""Hosting a node kind in this process.

The node classes the workers run (XConnectNode, RouterNode, ...) take
``links``: {interface name: an object with ``rx`` and ``tx`` dicts of
queue index -> Queue}.  A worker builds them from the fds it was handed;
here they are built from each interface's live ``connection``, so the same
class moves the frames in both hosts.  A node's ``tell`` messages (the ARP
replies its data path queued) go to ``on_message`` directly instead of over
a socket.

Ownership: a worker pool gives worker w the queues of its ownership rule.
Here one thread holds every queue, but a node may still pick its transmit
queue by its worker index (the router sends on transmit queue ``w mod n``),
so the host runs the node once per *lane*: lane w with the receive queues
``i mod lanes == w``, as a pool of ``lanes`` workers would split them.
With one lane per receive queue, receive queue i leaves on transmit queue
``i mod n``, as frames always did in-process.
"""
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from memifx.interface import Interface

Message = Dict[str, Any]


class LocalLink:
    """One interface's live connection as a node sees it (the in-process
    twin of the worker's Attached).  ``tx`` has an entry for every
    configured transmit queue: index t is negotiated queue ``t mod n``, so
    a node that maps by the configured count still finds a queue when the
    peer agreed to fewer."""

    def __init__(self, intf: Interface, conn: Any, lane: Optional[int] = None,
                 lanes: int = 1) -> None:
        self.conn = conn
        self.rx_modes = intf.rx_modes
        self.rx = {q.index: q for q in conn.rx
                   if lane is None or q.index % lanes == lane}
        n = len(conn.tx)
        self.tx = {t: conn.tx[t % n] for t in range(intf.tx_queues)} if n else {}
        self.connected = True

    def active_queues(self, kind: str) -> List[Any]:
        """The receive queues of this lane, or every negotiated transmit
        queue once (a port of memifx.tester.Receiver)."""
        return list(self.rx.values()) if kind == "rx" else list(self.conn.tx)

    def check_faults(self) -> None:
        """LocalHost checks every interface's faults after each pass."""


class LocalHost:
    """A node kind driven from this process's poll loop."""

    def __init__(self, node_class: Callable[..., Any], plan: Message, fds: Sequence[int],
                 interfaces: Mapping[str, Interface], lanes: int = 1,
                 on_message: Optional[Callable[[Message], None]] = None) -> None:
        self.plan = dict(plan, worker=0)
        self.interfaces = dict(interfaces)
        self.lanes = max(1, lanes)
        self.on_message = on_message
        self.node = node_class(self.plan, list(fds), self.tell)
        self._links: List[Dict[str, LocalLink]] = []
        self._conns: Dict[str, Any] = {}

    def tell(self, msg: Message, fds: Sequence[int] = ()) -> None:
        """What a worker would send to the main process, handled at once."""
        if self.on_message is not None:
            self.on_message(msg)

    def _lane_links(self) -> List[Dict[str, LocalLink]]:
        """Per lane, {name: LocalLink} of the interfaces that are up (rebuilt
        when a connection changes)."""
        conns = {name: intf.connection for name, intf in self.interfaces.items()}
        if conns != self._conns or not self._links:
            self._conns = conns
            self._links = [
                {name: LocalLink(self.interfaces[name], conn,
                                 None if self.lanes == 1 else w, self.lanes)
                 for name, conn in conns.items() if conn is not None}
                for w in range(self.lanes)]
        return self._links

    def run_pass(self) -> int:
        """Every receive queue once, through the node; faults reported."""
        moved = 0
        for w, links in enumerate(self._lane_links()):
            self.plan["worker"] = w
            moved += self.node.run(links)
        self.plan["worker"] = 0
        for intf in self.interfaces.values():
            intf.check_faults()
        return moved

    def idle(self, moved: int) -> bool:
        """Whether the node waited itself (see Node.idle)."""
        return bool(self.node.idle(moved))
