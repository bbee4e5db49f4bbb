"""``memifx ip4-forward``: an IPv4 router between memif interfaces.

A thin wrapper: a Dataplane with the interfaces and one ``ip4`` pipeline
(memifx/runtime/ip4.py: the FIB, the neighbor table, ARP learning, the
router node in this process or, with --workers N, on N workers that map the
tables read-only).

SIGHUP re-reads --routes-file and applies only the difference to the live
FIB (new routes, changed next hops, removed routes; addresses a removed
route covered fall back to the next shorter route), with no restart and no
pause in forwarding.  A file with a bad line is rejected whole and the FIB
stays as it was.  Each reload prints one line (to stderr with --json) and is
listed under "route reloads" in the --json report.
"""
import signal

import click

from memifx.cli.common import (CPUS, Stop, Ticker, build_dataplane, default_workers, emit_json,
                               fail, prometheus_option, run_dataplane, start_pipeline)
from memifx.cli.spec import SPEC
from memifx.runtime import DataplaneError
from memifx.runtime.ip4 import Reloader, check_specs


def summary_lines(result):
    for name, c in result["interfaces"].items():
        rx = {k: sum(q[k] for q in c["rx"]) for k in
              ("packets", "forwarded", "echo replies", "arp replies", "local")}
        drops = {}
        for q in c["rx"]:
            for r, n in q["drops"].items():
                if n:
                    drops[r] = drops.get(r, 0) + n
        tx = sum(q["packets"] for q in c["tx"])
        full = sum(q["drops"]["tx ring full"] for q in c["tx"])
        yield ("%s: rx %d, forwarded %d, echo replies %d, arp replies %d, local %d, "
               "tx %d (ring full %d, link down %d), drops %s"
               % (name, rx["packets"], rx["forwarded"], rx["echo replies"], rx["arp replies"],
                  rx["local"], tx, full, c["tx link down"], drops or "none"))


@click.command("ip4-forward")
@click.option("--interface", "specs", type=SPEC, multiple=True, metavar="SPEC",
              help="An interface (repeatable); needs name= and ip=A.B.C.D/LEN.")
@click.option("--route", "routes", multiple=True, metavar="PREFIX,via=GW,dev=NAME",
              help="A static route (repeatable); via or dev may be left out, not both.")
@click.option("--routes-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Routes, one a line as for --route ('#' comments; spaces work as commas).")
@click.option("--neighbor", "neighbors", multiple=True, metavar="IP,MAC,dev=NAME",
              help="A static neighbor (repeatable).")
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until SIGINT/SIGTERM).")
@click.option("--stats-interval", type=float, default=0,
              help="Print per-interface rates every S seconds.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object with all counters at exit.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Worker processes running the data path (default: min(receive queues, "
                   "allowed CPUs), at most the smallest transmit queue count); 0: run it "
                   "in this process.")
@click.option("--cpus", type=CPUS, default=None,
              help="CPUs for the workers, e.g. 2-5,8 (default: those this process may use).")
@prometheus_option
def ip4_forward(specs, routes, routes_file, neighbors, duration, stats_interval, json_out,
                workers, cpus, prometheus_port):
    """Route IPv4 between memif interfaces (longest-prefix match, ARP, ICMP echo)."""
    if not specs:
        raise click.UsageError("at least one --interface is required")
    try:
        check_specs(specs)
    except DataplaneError as e:
        raise fail(None, e)
    dp = build_dataplane(prometheus_port, json_out, [(s.name, s) for s in specs])
    stop = Stop(duration)
    workers = default_workers(workers, cpus, max(s.rx_queues for s in specs))
    most = min(s.tx_queues for s in specs)
    if workers > most:
        click.echo("note: %d workers reduced to %d: every worker needs its own transmit "
                   "queue on each interface (the smallest has %d)" % (workers, most, most),
                   err=True)
        workers = most
    p = start_pipeline(dp, "ip4", "ip4", specs, json_out, interfaces=[s.name for s in specs],
                       routes=routes, neighbors=neighbors, routes_file=routes_file,
                       workers=workers, cpus=cpus)
    names = ["%s rx" % s.name for s in specs] + ["%s tx" % s.name for s in specs]

    def packets():
        rx, tx = [], []
        for i, s in enumerate(specs):
            c = p.interface_counters(i)
            rx.append(sum(q["packets"] for q in c["rx"]))
            tx.append(sum(q["packets"] for q in c["tx"]))
        return rx + tx
    ticker = Ticker(stats_interval if not json_out else 0, names, packets)
    if not json_out:
        click.echo("ip4-forward: %d interfaces (%s), %d routes%s"
                   % (len(specs), ", ".join("%s %s %s" % (s.name, s.mode, s.ip) for s in specs),
                      p.fib.routes,
                      " (file loaded in %.2f s)" % p.load_seconds if routes_file else ""))
    reloader = Reloader(p, lambda line: click.echo(line, err=json_out))
    signal.signal(signal.SIGHUP, reloader.request)
    run_dataplane(dp, stop, ticker, "ip4-forward stopped", lambda: reloader.maybe(dp.lock))
    result = p.report(stop.elapsed, {s.name: dp.interfaces[s.name].stats() for s in specs})
    result["route reloads"] = reloader.events
    if p.pool is not None:
        result["workers"] = {"count": p.pool.nworkers, "restarts": p.pool.restarts}
    if json_out:
        emit_json(result)
    else:
        for line in summary_lines(result):
            click.echo(line)
        if p.pool is not None:
            click.echo("workers: %d, restarts: %d" % (p.pool.nworkers, p.pool.restarts))
