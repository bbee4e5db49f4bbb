"""``memifx xconnect A B``: L2 cross-connect, rx queue i -> tx queue i mod n."""
import click

from memifx.xconnect import XConnect
from memifx.cli.common import Stop, Ticker, connect_all, emit_json
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
def xconnect(spec_a, spec_b, duration, stats_interval, json_out):
    """Cross-connect two memif interfaces: every frame from A leaves on B and vice versa."""
    a, b = spec_a.interface(), spec_b.interface()
    if a.name == b.name:
        b.name += "-b"
    stop = Stop(duration)
    connect_all([a, b], json_out)
    dirs = [(a, b, XConnect()), (b, a, XConnect())]
    names = ["%s->%s" % (s.name, d.name) for s, d, _ in dirs]
    ticker = Ticker(stats_interval if not json_out else 0, names,
                    lambda: [n.packets for _, _, n in dirs])
    if not json_out:
        click.echo("xconnect %s <-> %s" % (a.name, b.name))
    idle = Idler([a, b], min(spec_a.quiet, spec_b.quiet))
    try:
        while not stop:
            moved = 0
            for src, dst, node in dirs:
                moved += forward_pass(src, dst, node)
            idle.after(moved)
            ticker.maybe()
    finally:
        for intf in (a, b):
            intf.close("xconnect stopped")
    seconds = stop.elapsed
    result = {"seconds": seconds,
              "directions": {n: d.counters() for n, (_, _, d) in zip(names, dirs)},
              "interfaces": {i.name: i.stats() for i in (a, b)}}
    if json_out:
        emit_json(result)
    else:
        for n, (_, _, d) in zip(names, dirs):
            c = d.counters()
            click.echo("%s: %d frames, %.3f Mpps, drops %s"
                       % (n, c["packets"], c["packets"] / seconds / 1e6, c["drops"]))
