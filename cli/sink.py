"""``memifx sink SPEC``: receive, verify every stamped frame in full, report.

The receive path is one ``memifx.tester.Receiver``: each pass copies a burst
per receive queue out of the ring (frames back to back in one buffer), hands
the burst to ``memifx.traffic.Checker`` (stamps, full payload, sequence
window, latency; GIL released, no Python object per frame) and, when asked,
appends it to a pcap file.  ``memifx gen --receive`` and ``--capture`` use the
same class.

With ``--workers N`` (or ``--cpus``) the receive queues are spread over N
worker processes (memifx/tester_workers.py, queue q to worker q mod N) and
the report adds up their Checkers' states: the same numbers, counted in
parallel.  ``--count`` then ends the run once the workers together have
looked at N frames; they report every 0.5 s, so they may have taken a few
more by the time they are stopped.
"""
import click

from memifx import pcap
from memifx.tester import Receiver, receive_result
from memifx.cli.common import (Stop, Ticker, connect_all, emit_json, start_stats,
                               start_workers, tester_workers)
from memifx.rxmode import Idler


def summary(r, what="sink"):
    line = ("%s: %d frames, %d bytes in %.3f s: %.3f Mpps, %.3f Gbit/s; received %d, "
            "lost %d, reordered %d, duplicated %d, corrupt %d, other %d"
            % (what, r["packets"], r["bytes"], r["seconds"], r["mpps"], r["gbps"],
               r["received"], r["lost"], r["reordered"], r["duplicated"], r["corrupt"],
               r["other"]))
    lat = r.get("latency_us")
    if lat:
        line += ("; latency us min %.1f p50 %.1f p90 %.1f p99 %.1f max %.1f"
                 % (lat["min"], lat["p50"], lat["p90"], lat["p99"], lat["max"]))
    return line


def linktype(intf):
    return pcap.LINKTYPE_RAW if intf.mode == "ip" else pcap.LINKTYPE_ETHERNET


def run_sink(spec, duration, count, pcap_path, stats_interval, json_out, prometheus_port=0,
             verify="full", workers=None, cpus=None):
    workers = tester_workers(workers, cpus)
    if workers != 0 and pcap_path:
        raise click.UsageError("--pcap runs in the main process only: leave out --workers "
                               "and --cpus")
    intf = spec.interface()
    writer = pcap.Writer(pcap_path, linktype(intf)) if pcap_path else None
    rx = Receiver(intf, intf.mode == "ip", writer, verify=verify)
    pool = None
    stop = Stop(duration)

    def counters():
        return pool.receive_counters() if pool is not None else rx.checker.counters()
    sf = start_stats([intf], prometheus_port, lambda: [dict(counters(), node="sink",
                                                            interface=intf.name,
                                                            direction="rx")])
    if workers != 0:
        from memifx.nodes.tester import TesterPool

        def make_pool(n, allowed):
            return TesterPool(n, allowed, spec.quiet, sf, receive=intf)
        pool = start_workers([intf], [], workers, cpus, spec.quiet, spec.rx_queues, [spec],
                             json_out, sf, make_pool)
    connect_all([intf], json_out)
    if not json_out:
        click.echo("sink: %s %s on %s id %d, %s mode, receiving"
                   % (intf.name, intf.role, intf.socket, intf.id, spec.rx_mode))
    ticker = Ticker(0 if json_out else stats_interval, [intf.name],
                    lambda: [counters()["packets"]])
    idle = Idler([intf], spec.quiet)
    try:
        while not stop and not (count and counters()["packets"] >= count):
            if pool is not None:
                pool.poll(0.1)
            else:
                idle.after(rx.poll())
            ticker.maybe()
    finally:
        intf.close("sink stopped")
        if writer is not None:
            writer.close()
        if pool is not None:
            pool.stop()
    result = receive_result(*pool.merged_checker()) if pool is not None else rx.result()
    result["interface"] = intf.stats()
    if writer is not None:
        result["captured"] = writer.frames
    if pool is not None:
        result["workers"] = {"count": pool.nworkers, "restarts": pool.restarts}
    if json_out:
        emit_json(result)
    else:
        click.echo(summary(result))
        drops = {}
        for q in result["interface"]["rx"]:
            for k, v in q["drops"].items():
                if v:
                    drops[k] = drops.get(k, 0) + v
        if drops:
            click.echo("sink: ring drops %s" % drops)
        if pool is not None:
            click.echo("workers: %d, restarts: %d" % (pool.nworkers, pool.restarts))
    return result
