"""``memifx xconnect A B``: L2 cross-connect, rx queue i -> tx queue i mod n.

A thin wrapper: a Dataplane with the two interfaces and one ``xconnect``
pipeline (memifx/runtime)."""
import click

from memifx.cli.common import (CPUS, Stop, Ticker, build_dataplane, emit_json, default_workers,
                               prometheus_option, run_dataplane, start_pipeline)
from memifx.cli.spec import SPEC


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
    a_name = spec_a.name or "memifx%d" % spec_a.id
    b_name = spec_b.name or "memifx%d" % spec_b.id
    if a_name == b_name:
        b_name += "-b"
    dp = build_dataplane(prometheus_port, json_out, [(a_name, spec_a), (b_name, spec_b)])
    stop = Stop(duration)
    workers = default_workers(workers, cpus, max(spec_a.rx_queues, spec_b.rx_queues))
    p = start_pipeline(dp, "xconnect", "xconnect", [spec_a, spec_b], json_out,
                       interfaces=[a_name, b_name], workers=workers, cpus=cpus)
    names = p.names
    ticker = Ticker(stats_interval if not json_out else 0, names,
                    lambda: [c["packets"] for c in p.counters().values()])
    if not json_out:
        click.echo("xconnect %s <-> %s" % (a_name, b_name))
    run_dataplane(dp, stop, ticker, "xconnect stopped")
    seconds = stop.elapsed
    result = {"seconds": seconds, "directions": p.counters(),
              "interfaces": {n: dp.interfaces[n].stats() for n in (a_name, b_name)}}
    if p.pool is not None:
        result["workers"] = {"count": p.pool.nworkers, "restarts": p.pool.restarts}
    if json_out:
        emit_json(result)
    else:
        for n, c in result["directions"].items():
            click.echo("%s: %d frames, %.3f Mpps, drops %s"
                       % (n, c["packets"], c["packets"] / seconds / 1e6, c["drops"]))
        if p.pool is not None:
            click.echo("workers: %d, restarts: %d" % (p.pool.nworkers, p.pool.restarts))
