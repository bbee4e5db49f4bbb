"""The one place the agent meets the Dataplane (memifx.runtime): each plan
operation as a Dataplane call, and what the agent reads back (link state,
problems, metrics).  Everything the agent knows about the runtime's API is in
this module.
"""
import os
import threading
from typing import Any, Dict, List, Optional, Protocol

from memifx.agent.plan import Op
from memifx.runtime import Dataplane, DataplaneError


class Applier(Protocol):
    """What the Agent needs of the data plane: DataplaneApplier, or a test
    double with the same methods."""

    def execute(self, op: Op) -> None: ...

    def interfaces_up(self) -> Dict[str, bool]: ...

    def problems(self) -> List[str]: ...

    def metrics(self) -> str: ...

    def run(self, stop: threading.Event) -> None: ...

    def close(self) -> None: ...


class ApplyError(Exception):
    """An operation the data plane refused; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class DataplaneApplier:
    """Runs plan operations on a Dataplane that this object owns (or is
    given), and answers the agent's questions about it."""

    def __init__(self, dataplane: Optional[Dataplane] = None, prometheus_port: int = 0) -> None:
        if dataplane is None:
            dataplane = Dataplane(stats=True, prometheus_port=prometheus_port)
        self.dp = dataplane

    def execute(self, op: Op) -> None:
        """Do one plan.Op; ApplyError with the data plane's reason if refused."""
        try:
            getattr(self, "_" + op.action)(op)
        except DataplaneError as e:
            raise ApplyError(getattr(e, "reason", None) or str(e)) from None

    def _add_interface(self, op: Op) -> None:
        self.dp.add_interface(op.name, dict(op.spec, name=op.name))

    def _remove_interface(self, op: Op) -> None:
        self.dp.remove_interface(op.name)

    def _set_rx_mode(self, op: Op) -> None:
        self.dp.set_rx_mode(op.name, op.spec.get("rx-mode", "polling"))

    def _set_routes(self, op: Op) -> None:
        self.dp.set_routes(op.name, list(op.pipeline.routes))

    def _remove_pipeline(self, op: Op) -> None:
        self.dp.remove_pipeline(op.name)

    def _add_pipeline(self, op: Op) -> None:
        pipe = op.pipeline
        params = dict(pipe.params)
        if pipe.kind in ("xconnect", "ip4"):
            params["interfaces"] = list(pipe.interfaces)
        else:
            params["interface"] = pipe.interfaces[0]
        if pipe.kind == "ip4":
            params["routes"] = list(pipe.routes)
        self.dp.add_pipeline(op.name, pipe.kind, **params)

    # ------------------------------------------------------------ read back

    def interfaces_up(self) -> Dict[str, bool]:
        """{interface name: link up?} for the interfaces the data plane has."""
        out: Dict[str, bool] = {}
        for name, entry in self.dp.state().get("interfaces", {}).items():
            out[name] = bool(entry.get("up", entry.get("connected", False)))
        return out

    def problems(self) -> List[str]:
        """What makes the data plane unhealthy (dead workers...); [] if none."""
        return list(self.dp.problems())

    def metrics(self) -> str:
        """The Prometheus text of this process's stats file."""
        from memifx import stats
        for proc in stats.scan():
            if proc.get("pid") == os.getpid():
                return stats.prometheus_text(proc)
        return ""

    def state(self) -> Dict[str, Any]:
        return self.dp.state()

    def run(self, stop: threading.Event) -> None:
        """Carry traffic in this thread until ``stop`` is set."""
        self.dp.run(_Flag(stop))

    def close(self) -> None:
        self.dp.close()



class _Flag:
    """A threading.Event seen as the truth value the data path's loop tests
    (``while not stop``) as well as an Event."""

    def __init__(self, event: threading.Event) -> None:
        self.event = event

    def __bool__(self) -> bool:
        return self.event.is_set()

    def is_set(self) -> bool:
        return self.event.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        return self.event.wait(timeout)
