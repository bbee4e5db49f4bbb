"""``memifx sink SPEC``: receive, verify every stamped frame in full, report.

The receive path is one ``Receiver``: each pass copies a burst per receive
queue out of the ring (``rx_into``: frames back to back in one buffer), hands
the burst to ``memifx.traffic.Checker`` (stamps, full payload, sequence
window, latency; GIL released, no Python object per frame) and, when asked,
appends it to a pcap file.  ``memifx gen --receive`` and ``--capture`` use the
same class.
"""
import time
from array import array

import click

from memifx import pcap
from memifx.traffic import Checker
from memifx.cli.common import Stop, Ticker, connect_all, emit_json, start_stats
from memifx.rxmode import Idler

BURST = 256
SLOT = 9216 + 64            # room per frame in the copy buffer (jumbo frames)


class Receiver:
    """Drains every receive queue of one interface, a burst at a time."""

    def __init__(self, intf, writer=None, burst=BURST, verify="full"):
        self.intf = intf
        self.checker = Checker(ip_mode=intf.mode == "ip", payload=verify == "full")
        self.buf = bytearray(burst * SLOT)
        self.lengths = array("I", bytes(4 * burst))
        self.writer = writer
        self.first = self.last = None       # monotonic time of first/last burst

    def poll(self):
        """One burst from each receive queue; returns frames received."""
        moved = 0
        intf, buf, lengths = self.intf, self.buf, self.lengths
        for q in range(len(intf.active_queues("rx"))):
            n = intf.rx_into(buf, lengths, q)
            if n:
                self.checker.check(buf, lengths, n)
                if self.writer is not None:
                    self.writer.write_batch(buf, lengths, n)
                moved += n
        if moved:
            self.last = time.monotonic()
            if self.first is None:
                self.first = self.last
        return moved

    @property
    def packets(self):
        return self.checker.packets

    @property
    def arrived(self):
        """Distinct stamped frames that arrived (good or damaged)."""
        c = self.checker
        return c.received + c.corrupt - c.duplicated

    def result(self):
        c = self.checker
        seconds = (self.last - self.first) if self.first is not None else 0.0
        out = rates(c.packets, c.bytes, seconds)
        out.update(c.counters())
        lat = c.latency()
        out["latency_us"] = {k: round(v / 1000.0, 3) for k, v in lat.items()} if lat else None
        return out


def rates(packets, nbytes, seconds):
    return {"packets": packets, "bytes": nbytes, "seconds": round(seconds, 6),
            "mpps": round(packets / seconds / 1e6, 6) if seconds > 0 else 0.0,
            "gbps": round(nbytes * 8 / seconds / 1e9, 6) if seconds > 0 else 0.0}


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
             verify="full"):
    intf = spec.interface()
    writer = pcap.Writer(pcap_path, linktype(intf)) if pcap_path else None
    rx = Receiver(intf, writer, verify=verify)
    stop = Stop(duration)
    start_stats([intf], prometheus_port, lambda: [dict(rx.checker.counters(), node="sink",
                                                       interface=intf.name, direction="rx")])
    connect_all([intf], json_out)
    if not json_out:
        click.echo("sink: %s %s on %s id %d, %s mode, receiving"
                   % (intf.name, intf.role, intf.socket, intf.id, spec.rx_mode))
    ticker = Ticker(0 if json_out else stats_interval, [intf.name],
                    lambda: [rx.packets])
    idle = Idler([intf], spec.quiet)
    try:
        while not stop and not (count and rx.packets >= count):
            idle.after(rx.poll())
            ticker.maybe()
    finally:
        intf.close("sink stopped")
        if writer is not None:
            writer.close()
    result = rx.result()
    result["interface"] = intf.stats()
    if writer is not None:
        result["captured"] = writer.frames
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
    return result
