"""The one place the agent meets the Dataplane (memifx.runtime): each plan
operation as a Dataplane call, and what the agent reads back (link state,
problems, metrics).  Everything the agent knows about the runtime's API is in
this module.
"""
import os

try:
    from memifx.runtime import Dataplane, DataplaneError
except ImportError:                 # the runtime is not there: the agent cannot run
    Dataplane = None

    class DataplaneError(Exception):
        reason = ""


class ApplyError(Exception):
    """An operation the data plane refused; ``reason`` says why."""

    def __init__(self, reason):
        self.reason = reason
        super().__init__(reason)


class DataplaneApplier:
    """Runs plan operations on a Dataplane that this object owns (or is
    given), and answers the agent's questions about it."""

    def __init__(self, dataplane=None, prometheus_port=0):
        if dataplane is None:
            if Dataplane is None:
                raise ApplyError("memifx.runtime is not available")
            dataplane = Dataplane(stats=True, prometheus_port=prometheus_port)
        self.dp = dataplane

    def execute(self, op):
        """Do one plan.Op; ApplyError with the data plane's reason if refused."""
        try:
            getattr(self, "_" + op.action)(op)
        except DataplaneError as e:
            raise ApplyError(getattr(e, "reason", None) or str(e)) from None

    def _add_interface(self, op):
        self.dp.add_interface(op.name, dict(op.item, name=op.name))

    def _remove_interface(self, op):
        self.dp.remove_interface(op.name)

    def _set_rx_mode(self, op):
        self.dp.set_rx_mode(op.name, op.item.get("rx-mode", "polling"))

    def _set_routes(self, op):
        self.dp.set_routes(op.name, list(op.item.routes))

    def _remove_pipeline(self, op):
        self.dp.remove_pipeline(op.name)

    def _add_pipeline(self, op):
        pipe = op.item
        params = dict(pipe.params)
        if pipe.kind in ("xconnect", "ip4"):
            params["interfaces"] = list(pipe.interfaces)
        else:
            params["interface"] = pipe.interfaces[0]
        if pipe.kind == "ip4":
            params["routes"] = list(pipe.routes)
        self.dp.add_pipeline(op.name, pipe.kind, **params)

    # ------------------------------------------------------------ read back

    def interfaces_up(self):
        """{interface name: link up?} for the interfaces the data plane has."""
        out = {}
        for name, entry in self.dp.state().get("interfaces", {}).items():
            out[name] = bool(entry.get("up", entry.get("connected", False)))
        return out

    def problems(self):
        """What makes the data plane unhealthy (dead workers...); [] if none."""
        return list(self.dp.problems())

    def metrics(self):
        """The Prometheus text of this process's stats file."""
        from memifx import stats
        for proc in stats.scan():
            if proc.get("pid") == os.getpid():
                return stats.prometheus_text(proc)
        return ""

    def state(self):
        return self.dp.state()

    def run(self, stop):
        """Carry traffic in this thread until ``stop`` is set."""
        self.dp.run(_Flag(stop))

    def close(self):
        self.dp.close()



class _Flag:
    """A threading.Event seen as the truth value the data path's loop tests
    (``while not stop``) as well as an Event."""

    def __init__(self, event):
        self.event = event

    def __bool__(self):
        return self.event.is_set()

    def is_set(self):
        return self.event.is_set()

    def wait(self, timeout=None):
        return self.event.wait(timeout)
