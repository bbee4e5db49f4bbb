"""``memifx gen SPEC``: the traffic generator.

A thin wrapper: a Dataplane with the interface (and the --receive one) and
one ``gen`` pipeline (memifx/runtime/tester.py), hosted by
memifx.nodes.tester.TesterNode in this process or, with --workers/--cpus, on
worker processes.  Frames come from a source, a burst at a time: stamped
frames (memifx.tester.Synth, flows spread over the transmit queues by a hash
of the flow id) or, with --pcap, a capture's frames unchanged on queue 0
(memifx.tester.Replay).  memifx.tester.Sender moves them into the rings with
back-pressure (a burst the ring does not take at once is offered again,
never lost) and the rate limiter.  ``--zero-copy``: stamped frames are
written straight into the ring's buffers (one pass per frame, as a libmemif
application sends) instead of copied from a staging buffer (the default,
the work testpmd's txonly does), and the --receive side checks frames where
they lie, as ``sink --zero-copy`` does.

``--receive SPEC2`` checks what comes back on a second interface, as a
hardware tester does; ``--capture FILE`` writes whatever arrives on the
generator's own interface to a pcap file.  The run ends when every frame
went out (or --duration ran out, or SIGINT); then it waits for the peer to
take what is still in the rings and for the receivers to see what is still
on its way, and reports.
"""
import ipaddress
import re
import time

import click

from memifx import pcap
from memifx.cli.common import (Stop, Ticker, build_dataplane, default_workers, emit_json,
                               start_pipeline, tester_workers)
from memifx.cli.sink import summary
from memifx.runtime.tester import IMIX

QUIET = 0.5                # end of run: seconds without arrivals before giving up
QUIET_RECEIVE = 1.0
DRAIN_MAX = 10.0           # end of run: longest wait for rings and receivers

_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")


class SizeType(click.ParamType):
    name = "64|1518|9000|imix|BYTES"

    def convert(self, value, param, ctx):
        if isinstance(value, list):
            return value
        if str(value).lower() == "imix":
            return list(IMIX)
        try:
            n = int(value)
        except ValueError:
            self.fail("%r: expected 64, 1518, 9000, imix or a byte count" % value, param, ctx)
        if not 48 <= n <= 65535:
            self.fail("%d: frame size must be 48..65535" % n, param, ctx)
        return [n]


class MacType(click.ParamType):
    name = "XX:XX:XX:XX:XX:XX"

    def convert(self, value, param, ctx):
        if isinstance(value, bytes):
            return value
        if not _MAC.match(value):
            self.fail("%r: expected XX:XX:XX:XX:XX:XX" % value, param, ctx)
        return bytes(int(x, 16) for x in value.split(":"))


class Ip4Type(click.ParamType):
    name = "A.B.C.D"

    def convert(self, value, param, ctx):
        if isinstance(value, bytes):
            return value
        try:
            return ipaddress.IPv4Address(value).packed
        except ValueError:
            self.fail("%r: expected an IPv4 address A.B.C.D" % value, param, ctx)


def load_replay(path, mode):
    """The pcap file's frames, checked against the interface's mode (a usage
    error of --pcap if they do not fit)."""
    try:
        cap = pcap.read(path)
    except (OSError, pcap.PcapError) as e:
        raise click.BadParameter(str(e), param_hint="--pcap")
    if not len(cap):
        raise click.BadParameter("%s holds no frames" % path, param_hint="--pcap")
    want_ip = mode == "ip"
    if want_ip and cap.linktype not in pcap.RAW_IP:
        raise click.BadParameter("%s has link type %d; an ip-mode interface needs raw IP "
                                 "(101 or 228)" % (path, cap.linktype), param_hint="--pcap")
    if not want_ip and cap.linktype != pcap.LINKTYPE_ETHERNET:
        raise click.BadParameter("%s has link type %d; an %s-mode interface needs "
                                 "Ethernet (1)" % (path, cap.linktype, mode),
                                 param_hint="--pcap")
    return cap


def drain(poll, pending, missing, quiet, limit):
    """End of run: let the peer take what is still in our rings (or it is
    lost when the link goes down) and the receivers see what is still on its
    way: until ``pending()`` (frames in our rings) is 0 and nothing is
    ``missing()``, or ``poll()`` (frames that arrived) saw nothing for
    ``quiet`` seconds; ``limit`` seconds at most."""
    begin = last_arrival = time.monotonic()
    while time.monotonic() - begin < limit:
        moved = poll()
        now = time.monotonic()
        if moved:
            last_arrival = now
        if pending() == 0 and (not missing() or now - last_arrival > quiet):
            return
        if not moved:
            time.sleep(0.0005)


def run_gen(spec, sizes, count, duration, rate, flows, src_mac, dst_mac, src_ip, dst_ip,
            pcap_path, receive_spec, capture_path, stats_interval, json_out, prometheus_port=0,
            payload="pattern", verify="full", workers=None, cpus=None, zero_copy=False,
            dst_step=0):
    workers = tester_workers(workers, cpus)
    if workers != 0 and (pcap_path or capture_path):
        raise click.UsageError("--pcap and --capture run in the main process only: "
                               "leave out --workers and --cpus")
    name = spec.name or "memifx%d" % spec.id
    named = [(name, spec)]
    rx_name = None
    if receive_spec is not None:
        rx_name = receive_spec.name or "memifx%d" % receive_spec.id
        if rx_name == name:
            rx_name += "-rx"
        named.append((rx_name, receive_spec))
    replay = load_replay(pcap_path, spec.mode) if pcap_path else None
    dp = build_dataplane(prometheus_port, json_out, named)
    intf = dp.interfaces[name]
    rx_specs = [receive_spec] if receive_spec is not None else []
    workers = default_workers(workers, cpus, max([spec.tx_queues] +
                                                 [s.rx_queues for s in rx_specs]))
    p = start_pipeline(dp, "gen", "gen", rx_specs, json_out,
                       busy=not rate or any(s.rx_mode != "interrupt" for s in rx_specs),
                       interface=name, receive=rx_name, workers=workers, cpus=cpus,
                       sizes=sizes, flows=flows, payload=payload, src_mac=src_mac,
                       dst_mac=dst_mac, src_ip=src_ip, dst_ip=dst_ip, dst_step=dst_step,
                       count=count, rate=rate,
                       duration=duration, replay=replay, capture=capture_path,
                       verify=verify, zero_copy=zero_copy)
    stop = Stop(0)
    if not json_out:
        what = ("replaying %d frames of %s" % (len(replay), pcap_path) if pcap_path else
                "%s frames, %d flow%s" % ("imix" if len(set(sizes)) > 1 else
                                          "%d-byte" % sizes[0], flows, "s" if flows > 1 else ""))
        if dst_step and flows > 1 and not pcap_path:
            what += " (flow f to %s + f x %d)" % (
                ipaddress.IPv4Address(dst_ip) if dst_ip else "198.19.0.1", dst_step)
        click.echo("gen: %s %s on %s id %d: %s, rate %s%s%s"
                   % (intf.name, intf.role, intf.socket, intf.id, what,
                      "%g pps" % rate if rate else "unlimited",
                      ", count %d" % count if count else "",
                      ", zero-copy" if zero_copy and (not pcap_path or rx_name) else ""))
    ticker = Ticker(0 if json_out else stats_interval,
                    [intf.name + " tx"] + [n + " rx" for n, _ in p.receive_counters()],
                    lambda: [p.sent()] + [c["packets"] for _, c in p.receive_counters()])

    def arrivals():
        """One round of the data plane; frames that arrived meanwhile."""
        before = p.received()
        if p.pool is not None:
            p.refresh(0.05)
        else:
            dp.poll(0.05)
        return p.received() - before
    try:
        while not stop and not p.sending_done():
            dp.poll(0.1)
            ticker.maybe()
        if not p.sending_done():
            p.finish()
        drain(arrivals, p.in_flight, p.missing,
              QUIET_RECEIVE if rx_name is not None else QUIET,
              1.0 if stop.flag else DRAIN_MAX)
    finally:
        dp.close("gen finished")
    rx_intf = dp.interfaces[rx_name] if rx_name is not None else None
    return report(p, intf, rx_intf, sizes, flows, rate, pcap_path, capture_path, json_out)


def report(run, intf, rx_intf, sizes, flows, rate, pcap_path, capture_path, json_out):
    result = run.send_result()
    result.update({"sizes": sorted(set(sizes)) if not pcap_path else None,
                   "flows": flows if not pcap_path else None, "rate": rate,
                   "interface": intf.stats()})
    received = run.receive_result()
    if received is not None:
        r, got = received
        # We know what was sent: frames still missing at the end are lost
        # too (the sequence window only sees gaps before the last arrival).
        r["lost"] = max(0, result["packets"] - got)
        r["interface"] = rx_intf.stats()
        result["receive"] = r
        for k in ("received", "lost", "reordered", "duplicated", "corrupt", "latency_us"):
            result[k] = r[k]
    captured = run.captured()
    if captured is not None:
        result["captured"] = captured
    if json_out:
        emit_json(result)
    else:
        click.echo("gen: sent %d frames, %d bytes in %.3f s: %.3f Mpps, %.3f Gbit/s "
                   "(ring full %d times)" % (result["packets"], result["bytes"],
                                             result["seconds"], result["mpps"],
                                             result["gbps"], result["ring_full"]))
        if received is not None:
            click.echo(summary(result["receive"], "gen receive"))
        if captured is not None:
            click.echo("gen: captured %d frames to %s" % (captured, capture_path))
        if "workers" in result:
            click.echo("workers: %d, restarts: %d" % (result["workers"]["count"],
                                                      result["workers"]["restarts"]))
    return result
