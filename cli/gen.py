"""``memifx gen SPEC``: the traffic generator.

Frames come from a source, a burst at a time:

- ``Synth``: memifx.traffic.Generator writes stamped frames (sequence number
  per flow, timestamp, pattern over the rest) into a staging buffer per
  transmit queue; flows are spread over the queues by a hash of the flow id.
- ``Replay``: the frames of a pcap file, unchanged, on queue 0 (in order).

A burst the ring does not take at once stays pending and is offered again
(back-pressure, never loss); its stamps are refreshed before each retry.  The
rate limiter admits frames by time: when it is ahead it sleeps until a batch
worth at least ~100 us of traffic is due, so a limited generator idles
instead of spinning.

``--receive SPEC2`` adds a Receiver (cli/sink.py) on a second interface in the
same loop: one process sends on one port and checks what comes back on the
other, as a hardware tester does.  ``--capture FILE`` adds one on the
generator's own interface that writes whatever arrives to a pcap file.
"""
import ipaddress
import os
import re
import time
from array import array

import click

from memifx import pcap
from memifx.traffic import Generator, span
from memifx.cli.common import Stop, Ticker, connect_all, emit_json, start_stats
from memifx.cli.sink import Receiver, rates, summary, linktype

BURST = 256
IMIX = [64, 570, 64, 1518, 64, 570, 64, 64, 570, 64, 570, 64]     # 7:4:1, interleaved
SLEEP_MIN = 0.0002          # seconds: shorter waits for the rate limiter spin
STALL_SPINS = 8            # zero-progress passes before yielding the CPU (a sleep
                           # would let a receiver on another CPU run dry: ~60 us)
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


def flow_queue(flow, nqueues):
    """The transmit queue of a flow: a multiplicative hash, stable per flow."""
    return ((flow * 2654435761) & 0xFFFFFFFF) * nqueues >> 32


class Pending:
    """A burst on its way out: frames k..n of a packed buffer remain."""
    __slots__ = ("view", "lview", "n", "k", "off", "total")

    def __init__(self, view, lview, n, total):
        self.view, self.lview, self.n, self.total = view, lview, n, total
        self.k = self.off = 0


class Synth:
    restamp = True

    def __init__(self, gen, nqueues, burst, single_size):
        self.gen = gen
        # Zeros after the stamp, one frame size: each staging buffer keeps
        # its frames at the same offsets, so their payload stays zero and a
        # refill writes headers and stamps only.
        self.headers_only = gen.zeros and single_size
        groups = [[] for _ in range(nqueues)]
        for f in range(gen.flows):
            groups[flow_queue(f, nqueues)].append(f)
        self.queues = [q for q, g in enumerate(groups) if g]
        self.flows = {q: array("I", groups[q]) for q in self.queues}
        self.cursor = dict.fromkeys(self.queues, 0)
        self.staging = {}
        self.burst = burst
        self.exhausted = False

    def next(self, q, n):
        st = self.staging.get(q)
        if st is None:
            buf = bytearray(self.burst * self.gen.max_size)
            lengths = array("I", bytes(4 * self.burst))
            st = self.staging[q] = (buf, memoryview(buf), lengths, memoryview(lengths))
        buf, view, lengths, lview = st
        n, total = self.gen.fill(buf, lengths, n, self.flows[q], self.cursor[q],
                                 self.headers_only)
        self.cursor[q] = (self.cursor[q] + n) % len(self.flows[q])
        return Pending(view, lview[:n], n, total) if n else None


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


class Sender:
    """Moves bursts from a source into the transmit queues: admission by
    --count and --rate, back-pressure, and the counters of what went out."""

    def __init__(self, intf, source, burst, count, rate):
        self.intf, self.source, self.burst = intf, source, burst
        self.count, self.rate = count, rate
        # a rate-limited sender waits for a batch worth ~100 us of traffic
        self.min_batch = max(1, min(burst, int(rate * 2 * SLEEP_MIN))) if rate else 1
        self.pending = {}               # queue -> Pending
        self.sent = self.bytes = self.admitted = self.ring_full = 0
        self.t_up = self.t_last = self.rate_t0 = None
        self.start = self.stalls = 0

    @property
    def done(self):
        return ((self.count and self.sent >= self.count) or
                (self.source.exhausted and not self.pending))

    def budget(self, now):
        """Frames that may be admitted now."""
        if self.t_up is None:
            self.t_up = self.rate_t0 = now
        budget = self.count - self.admitted if self.count else 1 << 62
        if self.rate:
            allowed = int((now - self.rate_t0) * self.rate) - self.admitted
            if allowed > 2 * self.burst:        # after a stall: no catch-up flood
                self.rate_t0 = now - (self.admitted + self.burst) / self.rate
                allowed = self.burst
            budget = min(budget, allowed)
        return budget

    def send_pass(self, txqs, budget):
        """One burst per queue (pending ones first); returns frames sent."""
        moved = 0
        queues = self.source.queues
        self.start = (self.start + 1) % len(queues)     # no queue always first
        for q in queues[self.start:] + queues[:self.start]:
            p = self.pending.get(q)
            if p is None:
                n = min(self.burst, budget)
                last = self.count and 0 < n == self.count - self.admitted
                if n < self.min_batch and not last:
                    continue
                p = self.source.next(q, n)
                if p is None:
                    continue
                self.pending[q] = p
                self.admitted += p.n
                budget -= p.n
            elif self.source.restamp:
                self.source.gen.restamp(p.view[p.off:], p.lview[p.k:])
            m = self.intf.tx_from(p.view[p.off:] if p.off else p.view,
                                  p.lview[p.k:] if p.k else p.lview, q % txqs)
            if m == p.n - p.k:
                self.bytes += p.total - p.off
                del self.pending[q]
            else:
                self.ring_full += 1
                if m:
                    b = span(p.lview, p.k, m)
                    self.bytes += b
                    p.off += b
                    p.k += m
            moved += m
        self.sent += moved
        return moved

    def idle(self, moved):
        """After a pass: yield the CPU when the ring stays full (to a peer
        that shares it), or sleep until the rate limiter admits the next
        batch."""
        if moved:
            self.t_last = time.monotonic()
            self.stalls = 0
        elif self.pending:
            self.stalls += 1
            if self.stalls >= STALL_SPINS:
                os.sched_yield()
                self.stalls = 0
        elif self.rate:
            due = self.rate_t0 + (self.admitted + self.min_batch) / self.rate
            due -= time.monotonic()
            # A sleep costs ~60 us or more of timer slack: worth it only when
            # the next batch is far off; closer than that, poll again.
            if due > SLEEP_MIN:
                time.sleep(min(due - SLEEP_MIN / 2, 0.01))

    def in_flight(self):
        return sum(q.in_flight() for q in self.intf.active_queues("tx"))

    def result(self):
        seconds = (self.t_last - self.t_up) if self.t_last is not None else 0.0
        r = rates(self.sent, self.bytes, seconds)
        r.update({"ring_full": self.ring_full,
                  "unsent": sum(p.n - p.k for p in self.pending.values())})
        return r


def make_source(spec, intf, sizes, count, duration, flows, src_mac, dst_mac, src_ip, dst_ip,
                pcap_path, payload="pattern"):
    """(source, burst) for the options given."""
    if pcap_path:
        return load_replay(pcap_path, intf, count, duration), BURST
    if src_ip is None:
        src_ip = spec.ip.ip.packed if spec.ip is not None else bytes([198, 18, 0, 1])
    try:
        gen = Generator(sizes, ip_mode=intf.mode == "ip", flows=flows,
                        src_mac=src_mac or spec.mac_bytes(), dst_mac=dst_mac or b"\xff" * 6,
                        src_ip=src_ip, dst_ip=dst_ip or bytes([198, 19, 0, 1]),
                        payload=payload)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--size/--flows")
    burst = max(16, min(BURST, (4 << 20) // gen.max_size))
    return Synth(gen, spec.tx_queues, burst, len(set(sizes)) == 1), burst


def drain(sender, receivers, waiting, quiet, limit):
    """End of run: let the peer take what is still in our rings (or it is
    lost when the link goes down) and the receivers see what is still on its
    way: until no receiver is ``waiting(r)``, or none heard anything for
    ``quiet`` seconds; ``limit`` seconds at most."""
    begin = last_arrival = time.monotonic()
    while time.monotonic() - begin < limit:
        moved = sum(r.poll() for r in receivers)
        now = time.monotonic()
        if moved:
            last_arrival = now
        missing = any(waiting(r) for r in receivers)
        if sender.in_flight() == 0 and (not missing or now - last_arrival > quiet):
            return
        if not moved:
            time.sleep(0.0005)


def run_gen(spec, sizes, count, duration, rate, flows, src_mac, dst_mac, src_ip, dst_ip,
            pcap_path, receive_spec, capture_path, stats_interval, json_out, prometheus_port=0,
            payload="pattern", verify="full"):
    intf = spec.interface()
    source, burst = make_source(spec, intf, sizes, count, duration, flows, src_mac, dst_mac,
                                src_ip, dst_ip, pcap_path, payload)
    interfaces = [intf]
    receiver = capturer = writer = None
    if receive_spec is not None:
        rx_intf = receive_spec.interface()
        if rx_intf.name == intf.name:
            rx_intf.name += "-rx"
        interfaces.append(rx_intf)
        receiver = Receiver(rx_intf, verify=verify)
    if capture_path:
        writer = pcap.Writer(capture_path, linktype(intf))
        capturer = Receiver(intf, writer, verify=verify)
    receivers = [r for r in (receiver, capturer) if r is not None]
    sender = Sender(intf, source, burst, count, rate)

    def arrived(r):
        """Frames of ours that r has seen: stamped ones, unless we replay."""
        return r.arrived if r is receiver and not pcap_path else r.packets

    stop = Stop(0)
    start_stats(interfaces, prometheus_port, lambda: [
        {"node": "gen", "interface": intf.name, "direction": "tx", "packets": sender.sent,
         "bytes": sender.bytes, "ring_full": sender.ring_full}] + [
        dict(r.checker.counters(), node="gen-receive", interface=r.intf.name, direction="rx")
        for r in receivers])
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
                    [intf.name + " tx"] + [r.intf.name + " rx" for r in receivers],
                    lambda: [sender.sent] + [r.packets for r in receivers])
    try:
        while not stop and not sender.done:
            for r in receivers:
                r.poll()
            ticker.maybe()
            now = time.monotonic()
            txqs = len(intf.active_queues("tx"))
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
            sender.idle(sender.send_pass(txqs, budget))
        drain(sender, receivers, lambda r: arrived(r) < sender.sent,
              QUIET_RECEIVE if receiver is not None else QUIET,
              1.0 if stop.flag else DRAIN_MAX)
    finally:
        for i in interfaces:
            i.close("gen finished")
        if writer is not None:
            writer.close()
    report(sender, receiver, capturer, arrived, sizes, flows, rate, pcap_path,
           capture_path, json_out)


def report(sender, receiver, capturer, arrived, sizes, flows, rate, pcap_path,
           capture_path, json_out):
    result = sender.result()
    result.update({"sizes": sorted(set(sizes)) if not pcap_path else None,
                   "flows": flows if not pcap_path else None, "rate": rate,
                   "interface": sender.intf.stats()})
    if receiver is not None:
        r = receiver.result()
        # We know what was sent: frames still missing at the end are lost
        # too (the sequence window only sees gaps before the last arrival).
        r["lost"] = max(0, sender.sent - arrived(receiver))
        r["interface"] = receiver.intf.stats()
        result["receive"] = r
        for k in ("received", "lost", "reordered", "duplicated", "corrupt", "latency_us"):
            result[k] = r[k]
    if capturer is not None:
        result["captured"] = capturer.writer.frames
    if json_out:
        emit_json(result)
    else:
        click.echo("gen: sent %d frames, %d bytes in %.3f s: %.3f Mpps, %.3f Gbit/s "
                   "(ring full %d times)" % (result["packets"], result["bytes"],
                                             result["seconds"], result["mpps"],
                                             result["gbps"], result["ring_full"]))
        if receiver is not None:
            click.echo(summary(result["receive"], "gen receive"))
        if capturer is not None:
            click.echo("gen: captured %d frames to %s"
                       % (capturer.writer.frames, capture_path))
    return result
