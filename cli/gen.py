"""``memifx gen SPEC``: the traffic generator.

Frames come from a source, a burst at a time:

- ``Synth`` (memifx/tester.py): stamped frames, flows spread over the
  transmit queues by a hash of the flow id.
- ``Replay``: the frames of a pcap file, unchanged, on queue 0 (in order).

memifx.tester.Sender moves them into the rings: a burst the ring does not
take at once stays pending and is offered again (back-pressure, never loss);
its stamps are refreshed before each retry.  The rate limiter admits frames
by time: when it is ahead it sleeps until a batch worth at least ~100 us of
traffic is due, so a limited generator idles instead of spinning.

``--receive SPEC2`` adds a Receiver on a second interface in the same loop:
one process sends on one port and checks what comes back on the other, as a
hardware tester does.  ``--capture FILE`` adds one on the generator's own
interface that writes whatever arrives to a pcap file.

With ``--workers N`` the sending (and the receiving of --receive) runs in N
worker processes (memifx/tester_workers.py); this process keeps the links,
ends the run when every worker has sent its share, and reports the workers'
results added up, in the same shape.
"""
import functools
import ipaddress
import re
import time

import click

from memifx import pcap
from memifx.tester import BURST, Pending, Receiver, Sender, Synth, arrived, in_flight, \
    make_generator, receive_result, single_size, sleep_or_receive
from memifx.traffic import span
from memifx.cli.common import (Stop, Ticker, connect_all, emit_json, start_stats,
                               start_workers, tester_workers)
from memifx.cli.sink import summary, linktype

IMIX = [64, 570, 64, 1518, 64, 570, 64, 64, 570, 64, 570, 64]     # 7:4:1, interleaved
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


class Replay:
    restamp = False

    def __init__(self, capture, repeat):
        self.cap = capture
        self.view = memoryview(capture.data)
        self.lview = memoryview(capture.lengths)
        self.repeat = repeat
        self.pos = 0
        self.queues = [0]

    @property
    def exhausted(self):
        return not self.repeat and self.pos == len(self.cap)

    def next(self, q, n):
        if self.pos == len(self.cap):
            if not self.repeat:
                return None
            self.pos = 0
        i = self.pos
        j = min(len(self.cap), i + n)
        self.pos = j
        return Pending(self.view[self.cap.offsets[i]:], self.lview[i:j], j - i,
                       span(self.cap.lengths, i, j - i))


def load_replay(path, intf, count, duration):
    try:
        cap = pcap.read(path)
    except (OSError, pcap.PcapError) as e:
        raise click.BadParameter(str(e), param_hint="--pcap")
    if not len(cap):
        raise click.BadParameter("%s holds no frames" % path, param_hint="--pcap")
    want_ip = intf.mode == "ip"
    if want_ip and cap.linktype not in pcap.RAW_IP:
        raise click.BadParameter("%s has link type %d; an ip-mode interface needs raw IP "
                                 "(101 or 228)" % (path, cap.linktype), param_hint="--pcap")
    if not want_ip and cap.linktype != pcap.LINKTYPE_ETHERNET:
        raise click.BadParameter("%s has link type %d; an %s-mode interface needs "
                                 "Ethernet (1)" % (path, cap.linktype, intf.mode),
                                 param_hint="--pcap")
    return Replay(cap, repeat=bool(count or duration))


def make_source(spec, intf, sizes, count, duration, flows, src_mac, dst_mac, src_ip, dst_ip,
                pcap_path, payload="pattern"):
    """(source, burst, the Generator's arguments or None) for the options given."""
    if pcap_path:
        return load_replay(pcap_path, intf, count, duration), BURST, None
    if src_ip is None:
        src_ip = spec.ip.ip.packed if spec.ip is not None else bytes([198, 18, 0, 1])
    args = {"sizes": list(sizes), "ip_mode": intf.mode == "ip", "flows": flows,
            "src_mac": (src_mac or spec.mac_bytes()).hex(),
            "dst_mac": (dst_mac or b"\xff" * 6).hex(), "src_ip": bytes(src_ip).hex(),
            "dst_ip": (dst_ip or bytes([198, 19, 0, 1])).hex(), "payload": payload}
    try:
        gen = make_generator(args)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--size/--flows")
    burst = max(16, min(BURST, (4 << 20) // gen.max_size))
    args.update(queues=spec.tx_queues, burst=burst)
    return Synth(gen, spec.tx_queues, burst, single_size(args)), burst, args


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
            payload="pattern", verify="full", workers=None, cpus=None):
    workers = tester_workers(workers, cpus)
    if workers != 0 and (pcap_path or capture_path):
        raise click.UsageError("--pcap and --capture run in the main process only: "
                               "leave out --workers and --cpus")
    intf = spec.interface()
    source, burst, gen_args = make_source(spec, intf, sizes, count, duration, flows, src_mac,
                                          dst_mac, src_ip, dst_ip, pcap_path, payload)
    interfaces = [intf]
    rx_intf = writer = None
    if receive_spec is not None:
        rx_intf = receive_spec.interface()
        if rx_intf.name == intf.name:
            rx_intf.name += "-rx"
        interfaces.append(rx_intf)
    if capture_path:
        writer = pcap.Writer(capture_path, linktype(intf))
    pool = None
    run = GenHere(intf, rx_intf, writer, Sender(source, burst, count, rate), pcap_path, verify)

    def nodes():
        out = [{"node": "gen", "interface": intf.name, "direction": "tx",
                "packets": run.sent(), "bytes": run.sent_bytes(), "ring_full": run.ring_full()}]
        return out + [dict(c, node="gen-receive", interface=name, direction="rx")
                      for name, c in run.receive_counters()]
    sf = start_stats(interfaces, prometheus_port, nodes)
    if workers != 0:
        from memifx.nodes.tester import TesterPool

        def make_pool(n, allowed):
            return TesterPool(n, allowed, spec.quiet, sf, send=intf, receive=rx_intf,
                              gen=gen_args, count=count, rate=rate, duration=duration,
                              verify=verify)
        specs = [s for s in (receive_spec,) if s is not None]
        pool = start_workers(interfaces, [], workers, cpus, spec.quiet,
                             max([spec.tx_queues] + [s.rx_queues for s in specs]), specs,
                             json_out, sf, make_pool,
                             busy=not rate or any(s.rx_mode != "interrupt" for s in specs))
        run = GenInWorkers(pool, rx_intf)
    stop = Stop(0)
    connect_all(interfaces, json_out)
    if not json_out:
        what = ("replaying %d frames of %s" % (len(source.cap), pcap_path) if pcap_path else
                "%s frames, %d flow%s" % ("imix" if len(set(sizes)) > 1 else
                                          "%d-byte" % sizes[0], flows, "s" if flows > 1 else ""))
        click.echo("gen: %s %s on %s id %d: %s, rate %s%s"
                   % (intf.name, intf.role, intf.socket, intf.id, what,
                      "%g pps" % rate if rate else "unlimited",
                      ", count %d" % count if count else ""))
    ticker = Ticker(0 if json_out else stats_interval,
                    [intf.name + " tx"] + [name + " rx" for name, _ in run.receive_counters()],
                    lambda: [run.sent()] + [c["packets"] for _, c in run.receive_counters()])
    try:
        run.send(stop, ticker, duration, interfaces)
        drain(run.poll, run.in_flight, run.missing,
              QUIET_RECEIVE if rx_intf is not None else QUIET,
              1.0 if stop.flag else DRAIN_MAX)
    finally:
        for i in interfaces:
            i.close("gen finished")
        if writer is not None:
            writer.close()
        if pool is not None:
            pool.stop()
    return report(run, intf, rx_intf, sizes, flows, rate, pcap_path, capture_path, json_out)


class GenHere:
    """gen's data path in this process: one loop sends and receives."""

    def __init__(self, intf, rx_intf, writer, sender, pcap_path, verify="full"):
        self.intf, self.sender, self.replay = intf, sender, bool(pcap_path)
        self.receiver = (Receiver(rx_intf, rx_intf.mode == "ip", verify=verify)
                         if rx_intf is not None else None)
        self.capturer = (Receiver(intf, intf.mode == "ip", writer, verify=verify)
                         if writer is not None else None)
        self.receivers = [r for r in (self.receiver, self.capturer) if r is not None]
        if self.receivers:
            sender.wait = functools.partial(sleep_or_receive, self.receivers)

    def sent(self):
        return self.sender.sent

    def sent_bytes(self):
        return self.sender.bytes

    def ring_full(self):
        return self.sender.ring_full

    def receive_counters(self):
        return [(r.port.name, r.checker.counters()) for r in self.receivers]

    def send(self, stop, ticker, duration, interfaces):
        sender, intf = self.sender, self.intf
        while not stop and not sender.done:
            for r in self.receivers:
                r.poll()
            ticker.maybe()
            now = time.monotonic()
            txqs = intf.active_queues("tx")
            if not txqs or (sender.t_up is None and
                            not all(i.connected for i in interfaces)):
                # link down: pending frames wait; and the first frame waits
                # for every link, or a DUT would drop it towards a receive
                # side that is not there yet
                time.sleep(0.01)
                continue
            budget = sender.budget(now)
            if duration and now - sender.t_up >= duration:
                break
            moved = sender.send_pass(txqs, budget)
            intf.check_faults()
            sender.idle(moved)

    def poll(self):
        return sum(r.poll() for r in self.receivers)

    def in_flight(self):
        return in_flight(self.intf.active_queues("tx"))

    def _arrived(self, r):
        """Frames of ours that r has seen: stamped ones, unless we replay."""
        return r.arrived if r is self.receiver and not self.replay else r.packets

    def missing(self):
        return any(self._arrived(r) < self.sender.sent for r in self.receivers)

    def send_result(self):
        return self.sender.result()

    def receive_result(self):
        """(sink's report, frames of ours that arrived), or None without --receive."""
        r = self.receiver
        return None if r is None else (r.result(), self._arrived(r))

    def captured(self):
        return self.capturer.writer.frames if self.capturer is not None else None


class GenInWorkers:
    """gen's data path in worker processes (a TesterPool): this process
    waits for them, and reads their results."""

    def __init__(self, pool, rx_intf):
        self.pool, self.rx_intf = pool, rx_intf
        self.sent, self.sent_bytes, self.ring_full = pool.sent, pool.sent_bytes, pool.ring_full
        self.in_flight = pool.in_flight

    def receive_counters(self):
        if self.rx_intf is None:
            return []
        return [(self.rx_intf.name, self.pool.receive_counters())]

    def send(self, stop, ticker, duration, interfaces):
        while not stop and not self.pool.sending_done():
            self.pool.poll(0.1)
            ticker.maybe()
        if not self.pool.sending_done():
            self.pool.finish()

    def poll(self):
        before = self.pool.received()
        self.pool.refresh(0.05)
        return self.pool.received() - before

    def missing(self):
        return self.rx_intf is not None and arrived(self.pool.receive_counters()) < self.sent()

    def send_result(self):
        r = self.pool.send_result()
        r["workers"] = {"count": self.pool.nworkers, "restarts": self.pool.restarts}
        return r

    def receive_result(self):
        if self.rx_intf is None:
            return None
        checker, first, last = self.pool.merged_checker()
        return receive_result(checker, first, last), arrived(checker.counters())

    def captured(self):
        return None


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
