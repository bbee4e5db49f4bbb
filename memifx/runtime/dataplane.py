"""The Dataplane: interfaces, pipelines and worker processes of one process.

One thread owns the data path and calls ``poll`` (or ``run``): a pass of
every pipeline hosted in this process, the worker pools' messages, ARP
learning, and sleeping when nothing moved.  Management calls (add and
remove interfaces and pipelines, rx modes, routes, state) may come from any
thread: they wake the poller and take the same lock, so they happen between
two passes, never during one (the in-process quiescence rule).  A pipeline
on workers keeps its own pool; link changes reach its workers through the
pool's link callbacks (attach at link-up, detach before link-down), so the
links of one pipeline come and go without touching another's.

Each interface belongs to at most one pipeline.  Moving an interface
between hosts never takes its link down: a pipeline on workers that takes
an interface that is up hands the workers the positions its queues reached
here (WorkerPool.take_over), and removing it hands them back
(``stop(hand_back=True)``), so whoever serves the queues next continues
exactly: no frame lost, none twice, and the peer sees no DISCONNECT.  Only
a worker that dies, or one that cannot say where it stopped, costs a link
cycle.  Rx modes of worker-served queues change in the worker that serves
them (a control message), also without a flap.
"""
import importlib
import logging
import threading
import time
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import memifx
from memifx.fdwait import wait_readable
from memifx.interface import Interface
from memifx.loop import WakePipe
from memifx.runtime.errors import DataplaneError
from memifx.runtime.pipeline import KINDS, Pipeline, pipeline_class
from memifx.rxmode import Idler

log = logging.getLogger("memifx")

POOL_EVERY = 0.01       # seconds between looks at worker pools while passes run here
LinkCallback = Callable[[Interface, bool], None]


def spec_of(name: str, spec: Any) -> Any:
    """A cli.spec.Spec from a Spec or a mapping of the spec keys, named ``name``."""
    import click
    cli_spec = importlib.import_module("memifx.cli.spec")   # the CLI's rules, one copy
    if not isinstance(spec, cli_spec.Spec):
        try:
            spec = cli_spec.spec_from_mapping(spec)
        except click.BadParameter as e:
            raise DataplaneError("%s: %s" % (name, e.message))
    spec.name = name
    return spec


class Dataplane:
    """See the module docstring.  ``stats``: keep this process's stats file
    (``memifx show``) with every interface and pipeline counter in it;
    ``prometheus_port``: also serve it at /metrics (0: off); ``on_link``:
    called (interface, up) on every interface's link change."""

    def __init__(self, stats: bool = True, prometheus_port: int = 0,
                 on_link: Optional[LinkCallback] = None) -> None:
        self.lock = threading.RLock()
        self.interfaces: Dict[str, Interface] = {}
        self.specs: Dict[str, Any] = {}
        self.pipelines: Dict[str, Pipeline] = {}
        self.on_link = on_link
        self.closed = False
        self.stats: Any = None
        self._waker = WakePipe()
        self._idler: Optional[Idler] = None
        self._last_pools = 0.0
        self._moved = 0                 # frames the last round moved here
        if stats:
            from memifx import stats as stats_file
            self.stats = stats_file.process_stats()
        if self.stats is not None:
            self.stats.set_nodes(self._node_entries)
            if prometheus_port:
                try:
                    self.stats.serve_metrics(prometheus_port)
                except OSError as e:
                    self.close()
                    raise DataplaneError("--prometheus-port %d: %s"
                                         % (prometheus_port, e.strerror or e))

    # ------------------------------------------------------------ locking

    def _managing(self) -> Any:
        """The lock, after waking the poller so it lets go soon."""
        self._waker.wake()
        return self.lock

    # --------------------------------------------------------- interfaces

    def add_interface(self, name: str, spec: Any, connect: bool = True) -> Interface:
        """Create interface ``name`` from ``spec`` (a cli.spec.Spec, or a mapping
        of the spec keys: socket, id, role, mode, rx-queues, ...) and, unless
        ``connect`` is False, start connecting at once."""
        with self._managing():
            self._check_open()
            if name in self.interfaces:
                raise DataplaneError("interface %s exists" % name)
            spec = spec_of(name, spec)
            try:
                intf: Interface = spec.interface()
            except ValueError as e:
                raise DataplaneError("%s: %s" % (name, e))
            self.interfaces[name] = intf
            self.specs[name] = spec
            if self.on_link is not None:
                intf.on_link(self.on_link)
            if self.stats is not None:
                self.stats.track(intf)
            if connect:
                self.connect(name)
            return intf

    def connect(self, name: str) -> None:
        """Start connecting an interface added with connect=False.
        DataplaneError (the interface removed) if it cannot listen/connect."""
        with self._managing():
            intf = self._interface(name)
            try:
                intf.connect()
            except memifx.MemifError as e:
                intf.close()
                del self.interfaces[name]
                del self.specs[name]
                raise DataplaneError("%s: %s" % (name, e.reason))

    def remove_interface(self, name: str, reason: str = "interface removed") -> None:
        with self._managing():
            intf = self._interface(name)
            user = self._user(name)
            if user is not None:
                raise DataplaneError("interface %s is used by pipeline %s (remove the "
                                     "pipeline first)" % (name, user))
            del self.interfaces[name]
            del self.specs[name]
            intf.close(reason)
            if self.stats is not None:
                self.stats.untrack(intf)        # memifx show stops listing it
            self._idler = None

    def set_rx_mode(self, name: str, mode: str, queue: Optional[int] = None) -> None:
        """Receive mode of one queue, or of every receive queue (None)."""
        with self._managing():
            intf = self._interface(name)
            user = self._user(name)
            pool = self.pipelines[user].pool if user is not None else None
            queues = range(intf.rx_queues) if queue is None else [queue]
            try:
                for q in queues:
                    if pool is not None:
                        pool.set_rx_mode(intf, q, mode)     # the worker serving it
                    else:
                        intf.set_rx_mode(mode, q)
            except (ValueError, IndexError) as e:
                raise DataplaneError("%s: %s" % (name, e))
            self.specs[name].rx_mode = mode if queue is None else self.specs[name].rx_mode

    # ---------------------------------------------------------- pipelines

    def add_pipeline(self, name: str, kind: str, *, interfaces: Sequence[str] = (),
                     interface: Optional[str] = None, workers: int = 0,
                     cpus: Optional[Sequence[int]] = None, **params: Any) -> Pipeline:
        """A pipeline of ``kind`` (see KINDS) over existing interfaces:
        ``interfaces`` (xconnect: [a, b]; ip4: one or more) or ``interface``
        (echo).  ``workers``: 0 runs it in this process, N on N worker
        processes pinned to ``cpus`` (default: those allowed).  ip4 takes
        ``routes`` and ``neighbors`` (texts as --route/--neighbor) and
        ``routes_file``; gen and sink their options (memifx/runtime/tester.py),
        gen's ``receive`` naming a second interface it checks."""
        with self._managing():
            self._check_open()
            if name in self.pipelines:
                raise DataplaneError("pipeline %s exists" % name)
            if kind not in KINDS:
                raise DataplaneError("unknown pipeline kind %r; kinds are %s"
                                     % (kind, ", ".join(sorted(KINDS))))
            k = KINDS[kind]
            names = list(interfaces) + ([interface] if interface is not None else [])
            if kind == "gen":           # one interface, and the one it checks, if any
                if len(names) != 1:
                    raise DataplaneError("a gen pipeline takes 1 interface, not %d"
                                         % len(names))
                if params.get("receive") is not None:
                    names.append(params["receive"])
            if k.interfaces and len(names) != k.interfaces:
                raise DataplaneError("a %s pipeline takes %d interface%s, not %d"
                                     % (kind, k.interfaces, "s" if k.interfaces > 1 else "",
                                        len(names)))
            if not names:
                raise DataplaneError("a %s pipeline needs interfaces" % kind)
            if len(set(names)) != len(names):
                raise DataplaneError("interface given twice: %s" % ", ".join(names))
            for n in names:
                self._interface(n)
                user = self._user(n)
                if user is not None:
                    raise DataplaneError("interface %s is used by pipeline %s" % (n, user))
            if workers < 0:
                raise DataplaneError("workers must be 0 or more", "--workers")
            specs = [self.specs[n] for n in names]
            quiet = min(s.quiet for s in specs)
            ifs = {n: self.interfaces[n] for n in names}
            if kind in ("gen", "sink"):
                from memifx.runtime.tester import check_options
                check_options(kind, params)
            if kind in ("ip4", "gen", "sink"):
                params["specs"] = specs
            elif params:
                raise DataplaneError("%s takes no %s" % (kind, ", ".join(sorted(params))))
            try:
                p = pipeline_class(kind)(name, k, ifs, workers, cpus, quiet, self.stats,
                                         **params)
            except (ValueError, OSError) as e:
                raise DataplaneError("pipeline %s: %s" % (name, e))
            self.pipelines[name] = p
            if p.pool is not None:
                p.pool.take_over()      # links up now; the others attach at link-up
            self._idler = None
            if self.stats is not None:
                self.stats.refresh()        # its counters listed from now on
            return p

    def remove_pipeline(self, name: str) -> None:
        """Stop pipeline ``name`` (its workers, if any); its interfaces stay,
        their links up, their queues where the pipeline left them."""
        with self._managing():
            p = self._pipeline(name)
            del self.pipelines[name]
            self._idler = None
            p.stop(hand_back=True)
            if self.stats is not None:
                self.stats.refresh()

    def pipeline(self, name: str) -> Pipeline:
        with self.lock:
            return self._pipeline(name)

    def set_routes(self, name: str, routes: Iterable[str]) -> Tuple[int, int, int]:
        """The static routes of ip4 pipeline ``name`` become ``routes``;
        only the difference is applied.  Returns (added, removed, changed)."""
        with self._managing():
            p = self._pipeline(name)
            if p.kind.name != "ip4":
                raise DataplaneError("pipeline %s is %s: only ip4 pipelines have routes"
                                     % (name, p.kind.name))
            return p.set_routes(routes)     # type: ignore[attr-defined, no-any-return]

    # ------------------------------------------------------------- state

    def state(self) -> Dict[str, Any]:
        """Interfaces and pipelines, JSON-able."""
        with self._managing():
            users = {n: p for p, pl in self.pipelines.items() for n in pl.interfaces}
            interfaces = {}
            for name, intf in self.interfaces.items():
                info = intf.info()
                interfaces[name] = {
                    "up": intf.connected, "state": info["state"], "role": intf.role,
                    "socket": intf.socket, "id": intf.id, "mode": intf.mode,
                    "peer": info["peer_name"], "last_disconnect": info["last_disconnect"],
                    "link_flaps": info["link_flaps"], "rx_modes": list(intf.rx_modes),
                    "pipeline": users.get(name), "stats": intf.stats()}
            return {"interfaces": interfaces,
                    "pipelines": {n: p.state() for n, p in self.pipelines.items()}}

    def problems(self) -> List[str]:
        """What is wrong, one line each; empty when healthy."""
        with self.lock:
            out = []
            if self.closed:
                out.append("dataplane closed")
            for p in self.pipelines.values():
                out.extend(p.problems())
            return out

    # ----------------------------------------------------------- running

    def poll(self, timeout: float = 0.1) -> int:
        """One round: a pass of every in-process pipeline, the worker pools'
        messages (restarting dead workers), ARP learning; when nothing moved,
        sleep (on the receive queues, worker sockets and management wake-ups;
        ``timeout`` at most when nothing runs here).  Frames moved here."""
        with self.lock:
            self._waker.drain()
            local = [p for p in self.pipelines.values() if p.host is not None]
            pooled = [p for p in self.pipelines.values() if p.pool is not None]
            moved = 0
            for p in local:
                moved += p.run_pass()
            now = time.monotonic()
            if pooled and (not local or not self._moved or now - self._last_pools >= POOL_EVERY):
                self._last_pools = now
                for p in pooled:
                    p.poll_pool(0)
            for p in self.pipelines.values():
                p.after_pass()
            self._moved = moved
            if local:
                idler = self._local_idler(local, pooled)
                if not any(p.host is not None and p.host.idle(moved) for p in local):
                    idler.after(moved)
            elif not moved:
                fds = [self._waker.fileno()] + [fd for p in pooled for fd in p.worker_fds()]
                if wait_readable(fds, timeout):
                    for p in pooled:
                        p.poll_pool(0)
            return moved

    def run(self, stop: Any) -> None:
        """poll() until ``stop()`` is true; ``stop`` may also be an object
        whose truth value says it (``while not stop``, as a CLI's Stop)."""
        done: Callable[[], bool] = stop if callable(stop) else (lambda: bool(stop))
        while not done():
            self.poll(0.1)

    def close(self, reason: str = "dataplane closed") -> None:
        """Stop every pipeline, close every interface, close the stats file.
        Pipeline counters stay readable (final)."""
        with self._managing():
            if self.closed:
                return
            self.closed = True
            for intf in self.interfaces.values():
                intf.close(reason)
            for p in self.pipelines.values():
                p.stop()
            if self.stats is not None:
                self.stats.close()
            self._waker.close()

    def mapping(self) -> List[str]:
        """Which worker serves which queues, every pipeline's."""
        with self.lock:
            return [line for p in self.pipelines.values() for line in p.mapping()]

    # ----------------------------------------------------------- helpers

    def _check_open(self) -> None:
        if self.closed:
            raise DataplaneError("dataplane closed")

    def _interface(self, name: str) -> Interface:
        try:
            return self.interfaces[name]
        except KeyError:
            raise DataplaneError("no interface %s" % name) from None

    def _pipeline(self, name: str) -> Pipeline:
        try:
            return self.pipelines[name]
        except KeyError:
            raise DataplaneError("no pipeline %s" % name) from None

    def _user(self, name: str) -> Optional[str]:
        for pname, p in self.pipelines.items():
            if name in p.interfaces:
                return pname
        return None

    def _local_idler(self, local: List[Pipeline], pooled: List[Pipeline]) -> Idler:
        if self._idler is None:
            ifs = [i for p in local for i in p.interfaces.values()]
            self._idler = Idler(ifs, min(p.quiet for p in local))
        self._idler.wake_fds = ([self._waker.fileno()]
                                + [fd for p in pooled for fd in p.worker_fds()])
        return self._idler

    def _node_entries(self) -> List[Dict[str, Any]]:
        """Every pipeline's node counters, for the stats file."""
        out: List[Dict[str, Any]] = []
        for p in list(self.pipelines.values()):
            try:
                out.extend(p.node_entries())
            except Exception:
                log.debug("stats: pipeline %s counters unreadable now", p.name, exc_info=True)
        return out
