"""``memifx xconnect A B``: L2 cross-connect, rx queue i -> tx queue i mod n."""
import click

from memifx.xconnect import XConnect
from memifx.cli.common import (CPUS, Stop, Ticker, connect_all, emit_json, start_workers,
                               prometheus_option, start_stats)
from memifx.rxmode import Idler
from memifx.cli.spec import SPEC

ROUNDS = 64          # bursts per queue per pass, with the GIL released


def forward_pass(src, dst, node):
    """Every receive queue of src once; returns frames moved."""
    rxqs = src.active_queues("rx")
    if not rxqs:
        return 0
    txqs = dst.active_queues("tx")
    moved = 0
    for i, rxq in enumerate(rxqs):
        if txqs:
            moved += node.poll(rxq, txqs[i % len(txqs)], 256, ROUNDS)
        else:
            node.discard(rxq)
    src.check_faults()
    dst.check_faults()
    return moved


@click.command()
@click.argument("spec_a", type=SPEC)
@click.argument("spec_b", type=SPEC)
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until SIGINT/SIGTERM).")
@click.option("--stats-interval", type=float, default=0, help="Print per-direction rates every S seconds.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object with all counters at exit.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Worker processes running the data path (default: min(queue pairs, "
                   "allowed CPUs)); 0: run it in this process.")
@click.option("--cpus", type=CPUS, default=None,
              help="CPUs for the workers, e.g. 2-5,8 (default: those this process may use).")
@prometheus_option
def xconnect(spec_a, spec_b, duration, stats_interval, json_out, workers, cpus,
             prometheus_port):
    """Cross-connect two memif interfaces: every frame from A leaves on B and vice versa."""
    a, b = spec_a.interface(), spec_b.interface()
    if a.name == b.name:
        b.name += "-b"
    stop = Stop(duration)
    quiet = min(spec_a.quiet, spec_b.quiet)
    dirs = [(a, b, XConnect()), (b, a, XConnect())]
    names = ["%s->%s" % (s.name, d.name) for s, d, _ in dirs]
    pool = None

    def direction_counters():
        if pool is not None:
            got = pool.node_counters()
            return {n: got.get(n, {"packets": 0, "bytes": 0, "drops": {}}) for n in names}
        return {n: d.counters() for n, (_, _, d) in zip(names, dirs)}

    ticker = Ticker(stats_interval if not json_out else 0, names,
                    lambda: [c["packets"] for c in direction_counters().values()])
    sf = start_stats([a, b], prometheus_port, lambda: [dict(c, node="xconnect", direction=n)
                                                       for n, c in direction_counters().items()])
    pool = start_workers([a, b], [(a, b), (b, a)], workers, cpus, quiet,
                         max(a.rx_queues, b.rx_queues), [spec_a, spec_b], json_out, sf)
    connect_all([a, b], json_out)
    if not json_out:
        click.echo("xconnect %s <-> %s" % (a.name, b.name))
    idle = Idler([a, b], quiet)
    try:
        while not stop:
            if pool is not None:
                pool.poll(0.1)
            else:
                moved = 0
                for src, dst, node in dirs:
                    moved += forward_pass(src, dst, node)
                idle.after(moved)
            ticker.maybe()
    finally:
        for intf in (a, b):
            intf.close("xconnect stopped")
        if pool is not None:
            pool.stop()
    seconds = stop.elapsed
    result = {"seconds": seconds, "directions": direction_counters(),
              "interfaces": {i.name: i.stats() for i in (a, b)}}
    if pool is not None:
        result["workers"] = {"count": pool.nworkers, "restarts": pool.restarts}
    if json_out:
        emit_json(result)
    else:
        for n, c in result["directions"].items():
            click.echo("%s: %d frames, %.3f Mpps, drops %s"
                       % (n, c["packets"], c["packets"] / seconds / 1e6, c["drops"]))
        if pool is not None:
            click.echo("workers: %d, restarts: %d" % (pool.nworkers, pool.restarts))
