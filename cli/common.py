"""What every long-running command shares: signals, link events, stats lines."""
import json
import signal
import time

import click


class Stop:
    """Set by SIGINT/SIGTERM, or when --duration runs out."""

    def __init__(self, duration=0):
        self.flag = False
        self.start = time.monotonic()
        self.end = self.start + duration if duration else None
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.flag = True

    def __bool__(self):
        return self.flag or (self.end is not None and time.monotonic() >= self.end)

    @property
    def elapsed(self):
        return time.monotonic() - self.start


def print_link(json_out):
    """An on_link callback that tells the operator (unless --json)."""
    def cb(intf, up):
        if json_out:
            return
        if up:
            click.echo("%s: link up (peer %s)" % (intf.name, intf.info()["peer_name"]))
        else:
            click.echo("%s: link down (%s)" % (intf.name, intf.info()["last_disconnect"]))
    return cb


class Ticker:
    """Prints a rate line every ``interval`` seconds from a packets() callback."""

    def __init__(self, interval, names, packets):
        self.interval, self.names, self.packets = interval, names, packets
        self.last = time.monotonic()
        self.prev = packets()

    def maybe(self):
        if not self.interval:
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        cur = self.packets()
        parts = ["%s %7.3f Mpps" % (n, (c - p) / (now - self.last) / 1e6)
                 for n, c, p in zip(self.names, cur, self.prev)]
        click.echo("  ".join(parts))
        self.last, self.prev = now, cur


def emit_json(obj):
    click.echo(json.dumps(obj, sort_keys=True))


class CpuListType(click.ParamType):
    name = "LIST"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        from memifx.workers.pool import parse_cpus
        import os
        try:
            cpus = parse_cpus(value)
        except ValueError:
            self.fail("%r: expected CPU numbers and ranges, e.g. 2-5,8" % value, param, ctx)
        allowed = os.sched_getaffinity(0)
        outside = [c for c in cpus if c not in allowed]
        if outside:
            self.fail("%s: not CPUs this process may use (%s)" % (
                ",".join(map(str, outside)), ",".join(map(str, sorted(allowed)))), param, ctx)
        return cpus


CPUS = CpuListType()


def tester_worker_options(work, not_with):
    """--workers and --cpus of gen and sink; ``work``: what the workers do."""
    def add(f):
        f = click.option("--cpus", type=CPUS, default=None,
                         help="CPUs to pin the workers to, e.g. 2-5,8 (default: those this "
                              "process may use).")(f)
        return click.option("--workers", type=click.IntRange(0, 64), default=None,
                            help="Worker processes that %s.  Default: this process, unless "
                                 "--cpus is given (then min(queues, those CPUs)).  Not with "
                                 "%s." % (work, not_with))(f)
    return add


def tester_workers(workers, cpus):
    """gen and sink keep their data path in this process unless --workers or
    --cpus is given: 0 then, else --workers as given (None: one per queue,
    up to the CPUs allowed, see default_workers)."""
    if workers is None and cpus is None:
        return 0
    return workers


# ------------------------------------------------------- the runtime

def default_workers(workers, cpus, queue_pairs):
    """--workers as given, or min(queue pairs, allowed CPUs) when not."""
    import os
    if workers is None:
        workers = min(queue_pairs, len(cpus or os.sched_getaffinity(0)))
    return workers


def fail(dp, e):
    """A DataplaneError as the command's error: a usage error of the option
    it names, else a plain one (the Dataplane closed first)."""
    if dp is not None:
        dp.close()
    if e.option:
        return click.BadParameter(e.reason, param_hint=e.option)
    return click.ClickException(e.reason)


def build_dataplane(prometheus_port, json_out, named_specs):
    """The command's Dataplane (closed when the command ends) with these
    (name, Spec) interfaces, not connected yet (start_pipeline connects)."""
    from memifx.runtime import Dataplane, DataplaneError
    try:
        dp = Dataplane(stats=True, prometheus_port=prometheus_port,
                       on_link=print_link(json_out))
    except DataplaneError as e:
        raise fail(None, e)
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        ctx.call_on_close(dp.close)
    try:
        for name, spec in named_specs:
            dp.add_interface(name, spec, connect=False)
    except DataplaneError as e:
        raise fail(dp, e)
    return dp


def start_pipeline(dp, name, kind, specs, json_out, busy=None, **params):
    """Add the command's one pipeline, tell the operator where its workers
    run (warning about too many busy pollers; ``busy``: whether the workers
    spin, by default unless every spec is in interrupt mode), then connect
    every interface."""
    from memifx.runtime import DataplaneError
    try:
        p = dp.add_pipeline(name, kind, **params)
    except DataplaneError as e:
        raise fail(dp, e)
    if p.pool is not None:
        if busy is None:
            busy = any(s.rx_mode != "interrupt" for s in specs)
        if busy and p.pool.nworkers > len(p.cpus):
            click.echo("warning: %d busy-polling workers on %d CPUs: they will starve "
                       "each other (use rx-mode=interrupt or fewer workers)"
                       % (p.pool.nworkers, len(p.cpus)), err=True)

        def restarted(index):
            click.echo("worker %d died: restarted" % index, err=True)
        p.on_restart = restarted
        if not json_out:
            for line in p.mapping():
                click.echo(line)
    for n in list(dp.interfaces):
        try:
            dp.connect(n)
        except DataplaneError as e:
            raise fail(dp, e)
    return p


def run_dataplane(dp, stop, ticker=None, reason="stopped", each=None):
    """Poll until ``stop``; ``each()`` after every round; close at the end."""
    try:
        while not stop:
            dp.poll(0.1)
            if each is not None:
                each()
            if ticker is not None:
                ticker.maybe()
    finally:
        dp.close(reason)


# ------------------------------------------------------------- statistics

def prometheus_option(f):
    """--prometheus-port for a long-running command."""
    return click.option(
        "--prometheus-port", type=click.IntRange(0, 65535), default=0, metavar="PORT",
        help="Serve the counters at http://HOST:PORT/metrics in the Prometheus text "
             "format (0: off).")(f)
