"""The node contract: what a worker (or the main process) runs on the
queues it holds, and how a plan names it.

A node kind is a ``Node`` subclass.  A plan names it by import path,
``"package.module:Class"`` (``import_path``); the worker loop imports it by
that path (``load``), so memifx.workers never imports a node kind: the
kinds (memifx.nodes) import memifx.workers, never the other way round.

The same class can be hosted in a worker (memifx.workers.loop) or in the
main process: the host builds it once, then calls ``run`` pass after pass
and ``idle`` after each pass.  What it needs from its host:

- ``plan``: a dict of plain JSON values; ``plan["worker"]`` is the worker
  index (0 in-process), ``plan["workers"]`` their count, and the rest is
  what the pool that made the plan put there for its kind.
- ``fds``: the plan's fds (after the stats fd).  Those the constructor
  leaves in the list are closed after it; one it keeps it removes.
- ``tell(msg, fds=())``: writes a message to the main process (a worker's
  socket; in-process, whatever the host does with it).
- ``links`` (for ``run``): {interface name: link} of the links up now.  A
  link has ``.rx`` and ``.tx`` (dicts queue index -> memifx.ring.Queue, only
  the queues this host owns), ``.rx_modes`` (per receive queue, "polling",
  "interrupt" or "adaptive"), ``.memory`` (the mapped regions),
  ``.connected``, ``active_queues(kind)`` and ``check_faults()`` (so it
  serves as a port of memifx.tester.Receiver).
"""
import importlib
from typing import Any, List, Mapping, Protocol, Sequence, Tuple, Type

from memifx.ring import Queue
from memifx.workers.protocol import Message


class Tell(Protocol):
    """How a node writes a message (and fds) to the main process."""

    def __call__(self, msg: Message, fds: Sequence[int] = ...) -> None: ...


class Link(Protocol):
    """What a node's run() gets per interface: the queues this host owns
    (memifx.workers.loop.Attached in a worker, memifx.runtime.local.LocalLink
    in the main process)."""

    @property
    def rx(self) -> Mapping[int, Queue]: ...

    @property
    def tx(self) -> Mapping[int, Queue]: ...


class Node:
    """A node kind.  Made from the plan and the plan's fds; ``tell`` writes to
    the main process.  Setting ``report_now`` asks the host for a counters
    snapshot after the pass."""
    report_now = False

    def __init__(self, plan: Message, fds: List[int], tell: Tell) -> None:
        self.plan, self.tell = plan, tell

    def run(self, links: Mapping[str, Link]) -> int:
        """One pass over ``links`` ({interface name: link}); frames moved."""
        return 0

    def idle(self, moved: int) -> bool:
        """After a pass: True if the node waited itself, False to let the
        host decide (a worker sleeps on the receive queues' eventfds)."""
        return False

    def snapshot(self) -> Tuple[Message, List[int]]:
        """(fields for the counters message, fds to send with it; the host
        closes them once sent)."""
        return {"nodes": {}}, []

    def message(self, msg: Message) -> None:
        """A control message the host does not know (one for this kind)."""

    def count_in(self, stats_fd: int) -> None:
        """Count into the stats file open as ``stats_fd`` where the plan says."""


def import_path(kind: Type[Node]) -> str:
    """The name a plan carries for the Node class ``kind``: "module:Class"."""
    return "%s:%s" % (kind.__module__, kind.__qualname__)


def load(path: object) -> Type[Node]:
    """The Node class a plan names by ``path`` ("module:Class").  ValueError
    if the path is malformed, cannot be imported or is not a Node."""
    module, sep, name = path.partition(":") if isinstance(path, str) else ("", "", "")
    if not sep or not module or not name:
        raise ValueError("node kind %r: expected 'module:Class'" % (path,))
    try:
        kind: Any = importlib.import_module(module)
        for part in name.split("."):
            kind = getattr(kind, part)
    except (ImportError, AttributeError) as e:
        raise ValueError("node kind %r: %s" % (path, e)) from None
    if not (isinstance(kind, type) and issubclass(kind, Node)):
        raise ValueError("node kind %r is not a Node" % (path,))
    return kind
