"""``memifx sink SPEC``: receive, verify every stamped frame (in full, or
less: ``--verify``), report.

A thin wrapper: a Dataplane with the one interface and one ``sink``
pipeline (memifx/runtime/tester.py).  Its receive path is one
``memifx.tester.Receiver`` in memifx.nodes.tester.TesterNode: each pass
copies a burst per receive queue out of the ring (frames back to back in one
buffer), hands the burst to ``memifx.traffic.Checker`` (stamps, full
payload, sequence window, latency; GIL released, no Python object per frame)
and, when asked, appends it to a pcap file.  With ``--zero-copy`` the
Checker reads each frame where it lies in the ring's buffers instead (slave:
its own buffers; master: the slave's, read only), as a libmemif receiver
does; with ``--pcap`` the frames are copied anyway.  ``memifx gen --receive`` and
``--capture`` use the same class.

With ``--workers N`` (or ``--cpus``) the receive queues are spread over N
worker processes (a TesterPool, queue q to worker q mod N) and the report
adds up their Checkers' states: the same numbers, counted in parallel.
``--count`` then ends the run once the workers together have looked at N
frames; they report every 0.5 s, so they may have taken a few more by the
time they are stopped.
"""
import click

from memifx.cli.common import (Stop, Ticker, build_dataplane, default_workers, emit_json,
                               start_pipeline, tester_workers)


def summary(r, what="sink"):
    line = ("%s: %d frames, %d bytes in %.3f s: %.3f Mpps, %.3f Gbit/s"
            % (what, r["packets"], r["bytes"], r["seconds"], r["mpps"], r["gbps"]))
    if r.get("verify") == "count":
        return line + "; counted, not checked (--verify count)"
    line += ("; received %d, lost %d, reordered %d, duplicated %d, corrupt %d, other %d"
             % (r["received"], r["lost"], r["reordered"], r["duplicated"], r["corrupt"],
                r["other"]))
    lat = r.get("latency_us")
    if lat:
        line += ("; latency us min %.1f p50 %.1f p90 %.1f p99 %.1f max %.1f"
                 % (lat["min"], lat["p50"], lat["p90"], lat["p99"], lat["max"]))
    return line


def run_sink(spec, duration, count, pcap_path, stats_interval, json_out, prometheus_port=0,
             verify="full", workers=None, cpus=None, zero_copy=False):
    workers = tester_workers(workers, cpus)
    if workers != 0 and pcap_path:
        raise click.UsageError("--pcap runs in the main process only: leave out --workers "
                               "and --cpus")
    name = spec.name or "memifx%d" % spec.id
    dp = build_dataplane(prometheus_port, json_out, [(name, spec)])
    stop = Stop(duration)
    workers = default_workers(workers, cpus, spec.rx_queues)
    p = start_pipeline(dp, "sink", "sink", [spec], json_out, interface=name, workers=workers,
                       cpus=cpus, verify=verify, capture=pcap_path, zero_copy=zero_copy)
    intf = dp.interfaces[name]
    if not json_out:
        click.echo("sink: %s %s on %s id %d, %s mode, receiving"
                   % (intf.name, intf.role, intf.socket, intf.id, spec.rx_mode))
    ticker = Ticker(0 if json_out else stats_interval, [intf.name], lambda: [p.received()])
    try:
        while not stop and not (count and p.received() >= count):
            dp.poll(0.1)
            ticker.maybe()
    finally:
        dp.close("sink stopped")
    result, _ = p.receive_result()
    result["interface"] = intf.stats()
    captured = p.captured()
    if captured is not None:
        result["captured"] = captured
    if p.pool is not None:
        result["workers"] = {"count": p.pool.nworkers, "restarts": p.pool.restarts}
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
        if p.pool is not None:
            click.echo("workers: %d, restarts: %d" % (p.pool.nworkers, p.pool.restarts))
    return result
