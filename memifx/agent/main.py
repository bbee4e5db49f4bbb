"""The agent: holds the desired configuration, applies it to the data plane
by difference, and keeps account of what is applied, item by item.

Documents arrive from a source (memifx/agent/store.py: a file, or etcd) on
the source's thread; ``submit`` validates one whole (a bad one changes
nothing and is reported in ``state()``), and ``converge`` plans applied ->
desired (memifx/agent/plan.py) and runs the operations.  An operation that
fails leaves its item with the data plane's reason as its error and the
rest goes on; failed items are retried every ``retry-seconds``.  A pipeline
whose interfaces are not all applied waits (error "waiting for ...").

The data path runs on the main thread (``applier.run``); sources, retries
and the HTTP API (memifx/agent/http.py) call in from other threads, one
management call at a time under the agent's lock.
"""
import logging
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple, TypeVar

from memifx.agent import config as configmod
from memifx.agent.apply import Applier, ApplyError
from memifx.agent.config import Config, ConfigError, Pipeline
from memifx.agent.plan import Op, plan
from memifx.agent.store import Source

T = TypeVar("T")

log = logging.getLogger("memifx.agent")


class Agent:
    """Desired vs applied state over an applier (apply.DataplaneApplier or a
    test double with the same methods)."""

    def __init__(self, applier: Applier) -> None:
        self.applier = applier
        self.lock = threading.RLock()
        self.desired: Optional[Config] = None         # once a document was accepted
        self.applied = Config()
        self.errors: Dict[str, str] = {}              # "section/name" -> its last error
        self.document_error: Optional[str] = None     # why the last document was rejected
        self.source: Optional[str] = None             # where the accepted document came from
        self.generation = 0          # documents accepted
        self.store: Optional[Source] = None           # set by its start(); status() in /state

    # ---------------------------------------------------------- documents

    def submit(self, data: Any, origin: str = "document") -> bool:
        """Validate a document (text or parsed data) and, if good, make it the
        desired state and apply it.  Returns True if accepted."""
        try:
            if isinstance(data, (str, bytes)):
                data = configmod.parse_text(data, origin)     # its errors name origin
        except ConfigError as e:
            self._refuse(str(e))
            return False
        try:
            cfg = configmod.load(data)
        except ConfigError as e:
            self._refuse("%s: %s" % (origin, e))
            return False
        with self.lock:
            self.desired, self.source = cfg, origin
            self.document_error = None
            self.generation += 1
            log.info("accepted %s (generation %d)", origin, self.generation)
            self.converge()
        return True

    def reject(self, origin: str, reason: str) -> None:
        """A document that could not even be read: same as a rejected one."""
        self._refuse("%s: %s" % (origin, reason))

    def _refuse(self, message: str) -> None:
        with self.lock:
            self.document_error = message
        log.warning("rejected %s", message)

    def converge(self) -> List[Op]:
        """Apply the difference between applied and desired; returns the
        operations that failed."""
        failed: List[Op] = []
        with self.lock:
            if self.desired is None:
                return failed
            ops = plan(self.applied, self.desired)
            for op in ops:
                err = self._execute(op)
                if err:
                    failed.append(op)
                    self.errors[op.key] = err
                    log.warning("%s: %s", op, err)
                else:
                    self.errors.pop(op.key, None)
            for key in list(self.errors):          # items no longer wanted
                section, _, name = key.partition("/")
                if not self._wanted(section, name) and not self._applied(section, name):
                    del self.errors[key]
        return failed

    def _execute(self, op: Op) -> Optional[str]:
        if op.action == "add_pipeline":
            missing = [i for i in op.pipeline.interfaces if i not in self.applied.interfaces]
            if missing:
                return "waiting for interface %s" % ", ".join(missing)
        try:
            self.applier.execute(op)
        except ApplyError as e:
            return e.reason
        except Exception as e:       # a data plane bug: report it, keep the agent up
            log.exception("%s", op)
            return "internal error: %s: %s" % (type(e).__name__, e)
        a = self.applied
        if op.action == "remove_interface":
            a.interfaces.pop(op.name)
        elif op.action in ("add_interface", "set_rx_mode"):
            a.interfaces[op.name] = op.spec
        elif op.action == "remove_pipeline":
            a.pipelines.pop(op.name)
        else:
            a.pipelines[op.name] = op.pipeline
        return None

    def _wanted(self, section: str, name: str) -> bool:
        d = self.desired
        assert d is not None, "converge looks only with a desired state"
        if section == "interfaces":
            return name in d.interfaces
        return name in d.pipelines and d.pipelines[name].section == section

    def _applied(self, section: str, name: str) -> bool:
        a = self.applied
        if section == "interfaces":
            return name in a.interfaces
        return name in a.pipelines and a.pipelines[name].section == section

    def in_sync(self) -> bool:
        with self.lock:
            return self.desired is not None and not plan(self.applied, self.desired)

    # ---------------------------------------------------------- reading back

    def config_view(self) -> Dict[str, Any]:
        """GET /config: the accepted document, as given."""
        with self.lock:
            return {"source": self.source, "generation": self.generation,
                    "document": self.desired.document if self.desired else None}

    def state_view(self) -> Dict[str, Any]:
        """GET /state: each item's desired and applied form and last error."""
        with self.lock:
            desired = self.desired or Config()
            up = self._links()
            items: Dict[str, Dict[str, Any]] = {}
            for cfg, which in ((desired, "desired"), (self.applied, "applied")):
                for name, spec in cfg.interfaces.items():
                    items.setdefault("interfaces/" + name, {})[which] = dict(spec)
                for name, pipe in cfg.pipelines.items():
                    items.setdefault("%s/%s" % (pipe.section, name), {})[which] = \
                        _pipeline_view(pipe)
            for key, item in items.items():
                item.setdefault("desired", None)
                item.setdefault("applied", None)
                item["in_sync"] = item["desired"] == item["applied"]
                item["error"] = self.errors.get(key)
                if key.startswith("interfaces/"):
                    item["up"] = up.get(key.partition("/")[2], False)
            return {"generation": self.generation, "source": self.source,
                    "document_error": self.document_error,
                    "in_sync": all(i["in_sync"] for i in items.values()),
                    "store": self.store.status() if self.store else None,
                    "items": dict(sorted(items.items()))}

    def _links(self) -> Dict[str, bool]:
        try:
            return self.applier.interfaces_up()
        except Exception as e:            # a read-back must not take the API down
            log.warning("reading link state: %s", e)
            return {}

    def health(self) -> Tuple[bool, List[str]]:
        """(alive, problems) for /healthz: the process answers and no worker
        is dead."""
        problems = list(self.applier.problems())
        return not problems, problems

    def readiness(self) -> Tuple[bool, List[str]]:
        """(ready, reasons) for /readyz: a document is applied in full and the
        required interfaces are up."""
        with self.lock:
            reasons: List[str] = []
            if self.desired is None:
                return False, ["no configuration yet"]
            for key, err in sorted(self.errors.items()):
                reasons.append("%s: %s" % (key, err))
            if not reasons and plan(self.applied, self.desired):
                reasons.append("configuration not applied yet")
            up = self._links()
            for name in self.desired.required_interfaces():
                if not up.get(name):
                    reasons.append("interfaces/%s: link down" % name)
            return not reasons, reasons

    def metrics(self) -> str:
        return self.applier.metrics()

    # ---------------------------------------------------------- running

    def retry_loop(self, stop: threading.Event) -> None:
        """Retry failed items every retry-seconds until ``stop`` is set."""
        while not stop.wait(self._retry_seconds()):
            with self.lock:
                if self.desired is not None and (self.errors or plan(self.applied,
                                                                      self.desired)):
                    self.converge()

    def _retry_seconds(self) -> float:
        with self.lock:
            s = self.desired.settings if self.desired else configmod.Settings()
            return s.retry_seconds

    def settings(self) -> configmod.Settings:
        with self.lock:
            return self.desired.settings if self.desired else configmod.Settings()


def _pipeline_view(pipe: Pipeline) -> Dict[str, Any]:
    out: Dict[str, Any] = {"kind": pipe.kind, "interfaces": list(pipe.interfaces)}
    out.update({k: v for k, v in pipe.params.items()})
    if pipe.kind == "ip4":
        out["routes"] = list(pipe.routes)
    return out


def wait_for(predicate: Callable[[], T], timeout: float, step: float = 0.05) -> T:
    """Poll ``predicate`` until true or ``timeout`` seconds; its last value."""
    end = time.monotonic() + timeout
    while True:
        v = predicate()
        if v or time.monotonic() >= end:
            return v
        time.sleep(step)



def run_agent(applier: Applier, source: Source, stop: threading.Event,
              http_port: Optional[int] = None, http_bind: Optional[str] = None) -> Agent:
    """The agent process: the first document, then the HTTP API, the source's
    watch and the retries on threads, and the data path on this thread until
    ``stop`` (a threading.Event) is set.  The HTTP port and address come from
    the first accepted document (or the arguments); later changes to them
    take effect at the next start.  OSError if the API's port is taken."""
    from memifx.agent.http import ApiServer
    agent = Agent(applier)
    server: Optional[ApiServer] = None
    retry: Optional[threading.Thread] = None
    try:
        source.start(agent, stop)
        s = agent.settings()
        port = s.http_port if http_port is None else http_port
        if port:
            server = ApiServer(agent, port, http_bind or s.http_bind)
        retry = threading.Thread(target=agent.retry_loop, args=(stop,), name="agent-retry",
                                 daemon=True)
        retry.start()
        applier.run(stop)
    finally:
        stop.set()
        source.close()
        if server:
            server.close()
        if retry:
            retry.join(5)
        applier.close()
    return agent
