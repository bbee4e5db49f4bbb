"""The data path of ``memifx gen`` and ``memifx sink``, wherever it runs.

- ``Synth``: stamped frames (sequence number per flow, timestamp, a pattern
  or zeros over the rest) made by one memifx.traffic.Generator; a
  memifx.stream.Stream per transmit queue makes them and puts them into the
  ring, many bursts per call in C, copied from a staging buffer or (zero
  copy) written in the ring's buffers.  Flows are spread over the queues by
  a hash of the flow id.
- ``Replay``: the frames of a pcap file, unchanged, on queue 0.
- ``Sender``: moves frames from a source into transmit rings: admission by
  count and rate, back-pressure (a burst the ring does not take at once stays
  pending and is offered again, a stamped one with fresh stamps), and the
  counters of what went out.
- ``Receiver``: copies a burst per receive queue out of the ring (frames back
  to back in one buffer) and hands it to memifx.traffic.Checker (every byte,
  or less: ``verify`` is one of its levels); optionally appends it to a pcap
  file.  With ``zero_copy`` the Checker reads each frame where it
  lies in the ring's buffers instead (Checker.drain_in_place), as a libmemif
  receiver does; a pcap writer keeps the copy.

They work on Queue objects, not on an Interface, so the same classes run in
the main process (memifx/runtime/tester.py) and in worker processes
(memifx/nodes/tester.py).
"""
from __future__ import annotations

import os
import time
from array import array
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from memifx.rxmode import sleep_on
from memifx.stream import Stream
from memifx.traffic import Checker, Generator, span

Counters = Dict[str, Any]

BURST = 256
DRAIN_BURSTS = 16           # bursts a Receiver takes per queue in one call into C
SEND_BURSTS = 16            # bursts a Sender puts into one queue in one call into C
SLOT = 9216 + 64            # room per frame in the receive copy buffer (jumbo frames)
SLEEP_MIN = 0.0002          # seconds: shorter waits for the rate limiter spin
CATCH_UP = 0.005            # seconds of frames a rate-limited sender may owe and still
                            # send at once (an oversleep, a preemption); after a longer
                            # stall it starts afresh (at least 2 bursts are owed)
STALL_SPINS = 8             # zero-progress passes before yielding the CPU (a sleep
                            # would let a receiver on another CPU run dry: ~60 us)


def flow_queue(flow: int, nqueues: int) -> int:
    """The transmit queue of a flow: a multiplicative hash, stable per flow."""
    return ((flow * 2654435761) & 0xFFFFFFFF) * nqueues >> 32


def queue_flows(flows: int, nqueues: int) -> List[List[int]]:
    """The flows of each queue: ``groups[q]`` lists the flows hashed onto q."""
    groups: List[List[int]] = [[] for _ in range(nqueues)]
    for f in range(flows):
        groups[flow_queue(f, nqueues)].append(f)
    return groups


def make_generator(args: Dict[str, Any]) -> Generator:
    """A Generator from a plain dict (sizes, ip_mode, flows, payload, and the
    addresses as hex strings): how a worker gets the main process's."""
    return Generator(args["sizes"], ip_mode=args["ip_mode"], flows=args["flows"],
                     src_mac=bytes.fromhex(args["src_mac"]),
                     dst_mac=bytes.fromhex(args["dst_mac"]),
                     src_ip=bytes.fromhex(args["src_ip"]), dst_ip=bytes.fromhex(args["dst_ip"]),
                     dst_step=args.get("dst_step", 0), payload=args.get("payload", "pattern"))


def single_size(args: Dict[str, Any]) -> bool:
    """Whether the Generator of these arguments makes frames of one size."""
    return len(set(args["sizes"])) == 1


class Pending:
    """A burst on its way out: frames k..n of a packed buffer remain."""
    __slots__ = ("view", "lview", "n", "k", "off", "total")

    def __init__(self, view: memoryview, lview: memoryview, n: int, total: int) -> None:
        self.view, self.lview, self.n, self.total = view, lview, n, total
        self.k = self.off = 0


class Synth:
    """Stamped frames: a memifx.stream.Stream per transmit queue, which
    makes them and puts them into the ring, many bursts per call, in C.
    ``single_size``: the generator makes frames of one size.  ``owned(q)``,
    if given, picks the queues this process sends on (a worker's share).
    ``zero_copy``: the streams write frames straight into the rings'
    buffers instead of copying them from a staging buffer."""

    def __init__(self, gen: Generator, nqueues: int, burst: int, single_size: bool,
                 owned: Optional[Callable[[int], bool]] = None,
                 zero_copy: bool = False) -> None:
        self.gen = gen
        # Zeros after the stamp, one frame size: each staging buffer keeps
        # its frames at the same offsets, so their payload stays zero and a
        # refill writes headers and stamps only.
        self.headers_only = gen.zeros and single_size
        self.zero_copy = zero_copy
        groups = queue_flows(gen.flows, nqueues)
        self.queues = [q for q, g in enumerate(groups) if g and (owned is None or owned(q))]
        self.flows = {q: groups[q] for q in self.queues}
        self.streams = {q: Stream(gen, groups[q], burst, headers_only=self.headers_only,
                                  zero_copy=zero_copy) for q in self.queues}
        self.burst = burst
        self.exhausted = False

    @property
    def unsent(self) -> int:
        return sum(st.unsent for st in self.streams.values())

    def resume(self, q: int, sent: int) -> None:
        """Continue queue q as if its first ``sent`` frames had gone out: the
        flows take turns, so each one's next sequence number follows."""
        flows = self.flows[q]
        rounds, extra = divmod(sent, len(flows))
        for j, f in enumerate(flows):
            self.gen.set_sequence(f, rounds + (j < extra))
        self.streams[q].set_cursor(extra)


class Replay:
    """The frames of a pcap capture (memifx.pcap.Capture), unchanged and in
    order, on queue 0; ``repeat``: start over at the end instead of running
    out."""

    def __init__(self, capture: Any, repeat: bool) -> None:
        self.cap = capture
        self.view = memoryview(capture.data)
        self.lview = memoryview(capture.lengths)
        self.repeat = repeat
        self.pos = 0
        self.queues = [0]

    @property
    def exhausted(self) -> bool:
        return not self.repeat and self.pos == len(self.cap)

    def next(self, q: int, n: int) -> Optional[Pending]:
        if self.pos == len(self.cap):
            if not self.repeat:
                return None
            self.pos = 0
        i = self.pos
        j = min(len(self.cap), i + n)
        self.pos = j
        return Pending(self.view[self.cap.offsets[i]:], self.lview[i:j], j - i,
                       span(self.cap.lengths, i, j - i))


class Sender:
    """Moves bursts from a source into the transmit rings: admission by
    count and rate, back-pressure, and the counters of what went out."""

    def __init__(self, source: Any, burst: int, count: int, rate: float,
                 wait: Callable[[float], Any] = time.sleep) -> None:
        self.source, self.burst = source, burst
        self.count, self.rate = count, rate
        self.wait = wait                # how a rate-limited sender sleeps
        # a rate-limited sender waits for a batch worth ~100 us of traffic
        self.min_batch = max(1, min(burst, int(rate * 2 * SLEEP_MIN))) if rate else 1
        self.pending: Dict[int, Pending] = {}     # queue -> Pending
        self.sent = self.bytes = self.admitted = self.ring_full = 0
        self.t_up: Optional[float] = None
        self.t_last: Optional[float] = None
        self.rate_t0: Optional[float] = None
        self.start = self.stalls = 0

    @property
    def done(self) -> bool:
        return bool((self.count and self.sent >= self.count) or
                    (self.source.exhausted and not self.unsent))

    def budget(self, now: float) -> int:
        """Frames that may be admitted now."""
        if self.t_up is None:
            self.t_up = now
        if self.rate_t0 is None:        # frames admitted before (a resumed sender) count
            self.rate_t0 = now - (self.admitted / self.rate if self.rate else 0)
        budget = self.count - self.admitted if self.count else 1 << 62
        if self.rate:
            allowed = int((now - self.rate_t0) * self.rate) - self.admitted
            owed = max(2 * self.burst, int(self.rate * CATCH_UP))
            if allowed > owed:                  # after a long stall: no catch-up flood
                self.rate_t0 = now - (self.admitted + owed) / self.rate
                allowed = owed
            budget = min(budget, allowed)
        return budget

    def send_pass(self, txqs: Sequence[Any], budget: int) -> int:
        """Each queue's pending frames, then new ones, into ring ``q mod
        len(txqs)`` (a None ring is not ours to use now: the frames wait):
        up to SEND_BURSTS bursts per queue for stamped frames (in C, by the
        queue's Stream), one for a capture's; returns frames sent."""
        moved = 0
        queues = self.source.queues
        self.start = (self.start + 1) % len(queues)     # no queue always first
        streams = self.source.streams if isinstance(self.source, Synth) else None
        for q in queues[self.start:] + queues[:self.start]:
            txq = txqs[q % len(txqs)]
            if streams is not None:
                if txq is not None:
                    sent, admitted = self.send_stream(streams[q], txq, budget)
                    budget -= admitted
                    moved += sent
                continue
            p = self.pending.get(q)
            if p is None:
                n = min(self.burst, budget)
                last = self.count and 0 < n == self.count - self.admitted
                if txq is None or n < self.min_batch and not last:
                    continue
                p = self.source.next(q, n)
                if p is None:
                    continue
                self.pending[q] = p
                self.admitted += p.n
                budget -= p.n
            elif txq is None:
                continue
            m = txq.tx_batch(p.view[p.off:] if p.off else p.view,
                             p.lview[p.k:] if p.k else p.lview)
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

    def send_stream(self, st: Stream, txq: Any, budget: int) -> Tuple[int, int]:
        """Stamped frames of one queue's Stream: (frames sent, frames admitted)."""
        if not st.unsent:
            n = min(self.burst, budget)
            last = self.count and 0 < n == self.count - self.admitted
            if n <= 0 or n < self.min_batch and not last:
                return 0, 0
        admitted, nbytes, ring_full = st.admitted, st.bytes, st.ring_full
        m = st.send(txq, max(budget, 0), SEND_BURSTS)
        admitted = st.admitted - admitted
        self.admitted += admitted
        self.bytes += st.bytes - nbytes
        self.ring_full += st.ring_full - ring_full
        return m, admitted

    def idle(self, moved: int) -> None:
        """After a pass: yield the CPU when the ring stays full (to a peer
        that shares it), or sleep until the rate limiter admits the next
        batch."""
        if moved:
            self.t_last = time.monotonic()
            self.stalls = 0
        elif self.unsent:
            self.stalls += 1
            if self.stalls >= STALL_SPINS:
                os.sched_yield()
                self.stalls = 0
        elif self.rate and self.rate_t0 is not None:
            due = self.rate_t0 + (self.admitted + self.min_batch) / self.rate
            due -= time.monotonic()
            # A sleep costs ~60 us or more of timer slack: worth it only when
            # the next batch is far off; closer than that, poll again.
            if due > SLEEP_MIN:
                self.wait(min(due - SLEEP_MIN / 2, 0.01))

    @property
    def unsent(self) -> int:
        """Frames made but not taken by a ring yet."""
        n = sum(p.n - p.k for p in self.pending.values())
        return n + self.source.unsent if isinstance(self.source, Synth) else n

    def result(self) -> Counters:
        return send_result(self.sent, self.bytes, self.ring_full, self.unsent,
                           self.t_up, self.t_last)


def sleep_or_receive(receivers: Sequence[Receiver], seconds: float) -> None:
    """A Sender's wait when the same loop also receives: sleep ``seconds``,
    or less if a receive queue signals a frame (queues in interrupt mode
    do), so that the receiver takes it at once and the latency it measures
    is the path's, not the sender's pacing.  With no queue (links down)
    a wait on no fd is a plain sleep."""
    sleep_on([q for r in receivers for q in r.port.active_queues("rx")], seconds)


def send_result(sent: int, nbytes: int, ring_full: int, unsent: int, t_up: Optional[float],
                t_last: Optional[float]) -> Counters:
    """gen's report of what went out (t_up, t_last: first admission and last
    frame sent, monotonic)."""
    seconds = (t_last - t_up) if t_last is not None and t_up is not None else 0.0
    r = rates(sent, nbytes, seconds)
    r.update({"ring_full": ring_full, "unsent": unsent})
    return r


def in_flight(txqs: Sequence[Any]) -> int:
    """Frames published on these transmit rings the peer has not taken yet."""
    return sum(q.in_flight() for q in txqs if q is not None)


class Receiver:
    """Drains every receive queue ``port.active_queues("rx")`` offers, a
    burst at a time.  ``port``: an Interface, or a worker's share of one.
    ``verify``: what is checked, a Checker level ("full": every byte).
    ``zero_copy``: check each frame in place in the ring's buffers (either
    role; nothing is written to them), ``buf`` being only the room for a
    frame that must be copied to be checked (chained, or not the usual
    frame).  Not with a pcap ``writer``: a capture copies every frame anyway."""

    def __init__(self, port: Any, ip_mode: bool, writer: Any = None, burst: int = BURST,
                 verify: str = "full", zero_copy: bool = False) -> None:
        self.port = port
        self.checker = Checker(ip_mode=ip_mode, verify=verify)
        self.zero_copy = zero_copy
        self.burst = burst
        self.buf = bytearray(burst * SLOT)
        self.lengths = array("I", bytes(4 * burst))
        self.writer = writer
        self.first: Optional[float] = None      # monotonic time of first/last burst
        self.last: Optional[float] = None

    def poll(self) -> int:
        """One burst from each receive queue; returns frames received."""
        moved = 0
        buf, lengths = self.buf, self.lengths
        for q in self.port.active_queues("rx"):
            if self.writer is None:
                if self.zero_copy:
                    moved += self.checker.drain_in_place(q, buf, self.burst, DRAIN_BURSTS)
                else:
                    moved += self.checker.drain(q, buf, lengths, DRAIN_BURSTS)
                continue
            n = q.rx_batch(buf, lengths)
            if n:
                self.checker.check(buf, lengths, n)
                self.writer.write_batch(buf, lengths, n)
                moved += n
        self.port.check_faults()
        if moved:
            self.last = time.monotonic()
            if self.first is None:
                self.first = self.last
        return moved

    @property
    def packets(self) -> int:
        return self.checker.packets

    @property
    def arrived(self) -> int:
        return arrived(self.checker.counters(), self.checker.verify)

    def result(self) -> Counters:
        return receive_result(self.checker, self.first, self.last)


def arrived(counters: Counters, verify: str) -> int:
    """Frames of ours that arrived, from Checker.counters() of a checker at
    level ``verify``: distinct stamped frames (good or damaged), or at
    "count", where nothing is read, every frame."""
    if verify == "count":
        return int(counters["packets"])
    return int(counters["received"] + counters["corrupt"] - counters["duplicated"])


def receive_result(checker: Checker, first: Optional[float], last: Optional[float]) -> Counters:
    """sink's report from a Checker and the times of the first and last burst."""
    seconds = (last - first) if first is not None and last is not None else 0.0
    out = rates(checker.packets, checker.bytes, seconds)
    out.update(checker.counters(), verify=checker.verify)
    lat = checker.latency()
    out["latency_us"] = {k: round(v / 1000.0, 3) for k, v in lat.items()} if lat else None
    return out


def rates(packets: int, nbytes: int, seconds: float) -> Counters:
    return {"packets": packets, "bytes": nbytes, "seconds": round(seconds, 6),
            "mpps": round(packets / seconds / 1e6, 6) if seconds > 0 else 0.0,
            "gbps": round(nbytes * 8 / seconds / 1e9, 6) if seconds > 0 else 0.0}
