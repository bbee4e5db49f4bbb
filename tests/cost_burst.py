"""Workload for tests/test_cost.py, meant to run under callgrind.

    python tests/cost_burst.py N [FRAME_SIZE [BURST [MODE]]]

Pushes N frames (default 64 bytes) in bursts of BURST (default 256) through
in-process loopback rings (tests/loopback.py), twice, then checks that
everything arrived.  MODE says what sits between the slave's transmit and receive:

- ``ring`` (default): nothing; one S2M ring, slave tx_batch -> master rx_batch.
- ``xconnect``: the l2-xconnect node; slave tx_batch -> S2M ring -> master
  rx queue -> XConnect.poll -> master tx queue -> M2S ring -> slave rx_batch.
- ``ip4``: the IPv4 router's nodes, driven as ``memifx ip4-forward`` drives
  them (Router.poll on one receive queue, a transmit Queue per output
  interface); slave tx_batch -> S2M ring -> Router.poll (interface 0 in,
  interface 1 out) -> M2S ring -> slave rx_batch.  Every frame is an
  IPv4/UDP frame to our MAC with a valid checksum and a route with a static
  neighbor, so every one is forwarded (TTL 64 -> 63, MACs rewritten), and
  every one is the usual frame the router's ip4-fast node takes alone.
- ``ip4-options``: the same with 4 bytes of IPv4 options (NOPs) in every
  header, which ip4-fast leaves to the router's general graph.
- ``ip4-two-way``: the router between two pairs of rings, half of each
  burst in on interface 0 and out of 1, half back the other way (to the
  sender, a static neighbor on interface 0), one Router.poll per interface
  in turn, as a worker serving both interfaces polls them.
- ``ip4-spread``: one input, two outputs: frames in on interface 0 go, in
  turn, to a gateway out of interface 1 and to one out of interface 2 (a
  third interface), as a router's traffic spreads over its routes: the
  ring-to-ring pass writes to both outputs.
- ``gen-zeros`` / ``gen-pattern``: no rings; ``memifx gen``'s per-burst
  work alone: Generator.fill into one staging buffer, as the gen source
  calls it (zeros: headers and stamp only after the first burst).
- ``gen-fill-tx`` / ``gen-send-copy`` / ``gen-send-zc``: ``memifx gen``'s
  transmit side into one S2M ring (zeros payload, 4 flows; with
  ``-fixed`` appended, ``--payload fixed``: no stamps), the master
  taking each burst with rx_batch: Generator.fill into a staging buffer
  then Queue.tx_batch (the sender before memifx.stream), or
  memifx.stream.Stream.send copying, or zero-copy (frames written in the
  slave's ring buffers).  The master's copy is outside what the test counts.
  ``gen-send-zc-master``: the same as master, zero-copy into the buffers
  the slave posted on one M2S ring (the slave receiving with rx_batch).
  With ``-spread`` appended, each flow goes to a destination of its own
  (``--dst-step 256``): the generator's loop for spread flows (and, fixed
  and zero-copy, the held buffers' flow fields rewritten per frame).
- ``sink-stamp`` / ``sink-full``: no rings; each burst is made by
  Generator.fill (zeros payload for stamp, pattern for full) and then
  checked by Checker.check with ``memifx sink --verify stamp`` / ``full``.
  The test takes the checker's share from callgrind_annotate.
- ``sink-LEVEL-copy`` / ``sink-LEVEL-zc``, LEVEL one of stamp, full, seq
  and count: ``memifx sink --verify LEVEL``'s receive step over a real ring: each
  burst is made by Generator.fill and sent with tx_batch over one S2M ring
  (slave to master), then the master receives and checks it with
  Checker.drain (copied out, as ``memifx sink``) or Checker.drain_in_place
  (read where it lies, ``memifx sink --zero-copy``).  ``sink-seq-zc-slave``:
  the same as slave, on one M2S ring (master to slave; the slave's buffers
  posted again as it consumes them).

It moves them twice, the first time to warm up (tests/cost_phases.py):
the profile of the second holds the N frames alone, without interpreter
start, imports, building the rings, the router and its FIB, or first calls.
"""
import os
import struct
import sys
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cost_phases import PHASES, bursts  # noqa: E402
from loopback import Loopback  # noqa: E402

# ip4 mode: interface 0 (frames in) and 1 (frames out), one route, one neighbor
MAC_IN = bytes.fromhex("020000000101")
MAC_OUT = bytes.fromhex("020000000102")
HOST = bytes.fromhex("02aa00000005")        # the sender, 10.0.1.5
NEXT_HOP = bytes.fromhex("0a00000000fd")    # 10.0.2.253
IP_IN, IP_OUT, SRC, GW, DST = (bytes(map(int, a.split("."))) for a in
                               ("10.0.1.1", "10.0.2.1", "10.0.1.5", "10.0.2.253", "172.16.5.1"))
# ip4-spread's second output: interface 2, a gateway to 192.168.0.0/16
MAC_OUT2 = bytes.fromhex("020000000103")
NEXT_HOP2 = bytes.fromhex("0a00000000fe")   # 10.0.3.253
IP_OUT2, GW2, DST2 = (bytes(map(int, a.split("."))) for a in
                      ("10.0.3.1", "10.0.3.253", "192.168.5.1"))


def ip_checksum(header):
    s = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def udp_frame(size, ttl=64, options=b"", dst=DST):
    """An Ethernet/IPv4/UDP frame of ``size`` bytes (no FCS) from HOST to
    ``dst``, addressed to MAC_IN, with a valid header checksum (and
    ``options``, a multiple of 4 bytes, in the header)."""
    total = size - 14
    hl = 20 + len(options)
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x40 | hl // 4, 0, total, 0x1234, 0, ttl, 17, 0,
                               SRC, dst) + options)
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    payload = bytes(i & 0xFF for i in range(total - hl - 8))
    udp = struct.pack("!HHHH", 1234, 5678, total - hl, 0)
    return MAC_IN + HOST + b"\x08\x00" + bytes(ip) + udp + payload


def forwarded(frame, next_hop=NEXT_HOP, mac_out=MAC_OUT):
    """What the router makes of ``frame`` sent to ``next_hop`` from
    ``mac_out``: new MACs, TTL - 1, checksum fixed."""
    hl = (frame[14] & 0xF) * 4
    ip = bytearray(frame[14:14 + hl])
    ip[8] -= 1
    ip[10:12] = b"\0\0"
    struct.pack_into("!H", ip, 10, ip_checksum(bytes(ip)))
    return next_hop + mac_out + b"\x08\x00" + bytes(ip) + frame[14 + hl:]


def make_router(outputs=1):
    """The router of the ip4 modes; with ``outputs`` 2, also interface 2
    and its gateway (ip4-spread)."""
    from memifx.fib import Fib
    from memifx.ip4 import Router
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    fib.add_route("10.0.1.1/32", "local", ifindex=0)
    fib.add_route("10.0.2.1/32", "local", ifindex=1)
    fib.add_route("172.16.0.0/12", "gateway", gw=int.from_bytes(GW, "big"), ifindex=1)
    router = Router(fib)
    router.add_interface(0, MAC_IN, int.from_bytes(IP_IN, "big"))
    router.add_interface(1, MAC_OUT, int.from_bytes(IP_OUT, "big"))
    router.add_neighbor(1, int.from_bytes(GW, "big"), NEXT_HOP)
    if outputs == 2:
        fib.add_route("10.0.3.0/24", "connected", ifindex=2)
        fib.add_route("10.0.3.1/32", "local", ifindex=2)
        fib.add_route("192.168.0.0/16", "gateway", gw=int.from_bytes(GW2, "big"), ifindex=2)
        router.add_interface(2, MAC_OUT2, int.from_bytes(IP_OUT2, "big"))
        router.add_neighbor(2, int.from_bytes(GW2, "big"), NEXT_HOP2)
    router.set_time(1000)
    return router


TESTER_MODES = ("gen-zeros", "gen-pattern", "sink-stamp", "sink-full")
SINK_RING_MODES = tuple("sink-%s-%s" % (level, how) for how in ("copy", "zc")
                        for level in ("stamp", "full", "seq", "count")) + (
    "sink-seq-zc-slave",)


def tester(mode, n, size, burst):
    from memifx.traffic import Checker, Generator
    zeros = mode in ("gen-zeros", "sink-stamp")
    gen = Generator([size], flows=4, payload="zeros" if zeros else "pattern")
    flows = array("I", range(4))
    buf = bytearray(burst * size)
    lens = array("I", [0]) * burst
    checker = Checker(verify=mode[5:]) if mode.startswith("sink") else None
    for _ in bursts(n // burst):
        if gen.fill(buf, lens, burst, flows, 0, zeros)[0] != burst:
            raise SystemExit("short fill")
        if checker is not None and checker.check(buf, lens, burst) != burst:
            raise SystemExit("checker: %r" % checker.counters())
    if checker is not None:
        c = checker.counters()
        if c["received"] != PHASES * n or c["lost"] or c["reordered"] or c["corrupt"]:
            raise SystemExit("checker: %r" % c)


def sink_ring(mode, n, size, burst):
    from memifx.traffic import Checker, Generator
    level = mode.split("-")[1]
    stamp = level != "full"
    gen = Generator([size], flows=4, payload="zeros" if stamp else "pattern")
    flows = array("I", range(4))
    buf = bytearray(burst * size)
    lens = array("I", [0]) * burst
    checker = Checker(verify=level)
    if mode.endswith("-slave"):         # the slave receives, on an M2S ring
        lb = Loopback(log2=10, buffer_size=2048, n_s2m=0, n_m2s=1)
        tx, rx = lb.m2s
    else:
        lb = Loopback(log2=10, buffer_size=2048, n_m2s=0)
        tx, rx = lb.s2m
    rbuf = bytearray(burst * 2048)
    rlens = array("I", [0]) * burst
    for _ in bursts(n // burst):
        if gen.fill(buf, lens, burst, flows, 0, stamp)[0] != burst:
            raise SystemExit("short fill")
        if tx.tx_batch(buf, lens) != burst:
            raise SystemExit("short tx")
        if "-zc" in mode:
            got = checker.drain_in_place(rx, rbuf, burst, 1)
        else:
            got = checker.drain(rx, rbuf, rlens, 1)
        if got != burst:
            raise SystemExit("short drain: %d" % got)
    c = checker.counters()
    good = 0 if level == "count" else PHASES * n        # count: counted, none judged
    if (c["packets"] != PHASES * n or c["received"] != good or c["lost"] or c["reordered"]
            or c["corrupt"]):
        raise SystemExit("checker: %r" % c)
    lb.close()


SEND_MODES = ("gen-fill-tx", "gen-send-copy", "gen-send-zc", "gen-send-copy-fixed",
              "gen-send-zc-fixed", "gen-send-copy-spread", "gen-send-zc-spread",
              "gen-send-zc-fixed-spread", "gen-send-zc-master")


def sender(mode, n, size, burst):
    from memifx.stream import Stream
    from memifx.traffic import Checker, Generator
    if mode.endswith("-master"):        # the master sends into the buffers the slave posts
        lb = Loopback(log2=10, buffer_size=2048, n_s2m=0, n_m2s=1)
        tx, rx = lb.m2s
    else:
        lb = Loopback(log2=10, buffer_size=2048, n_m2s=0)
        tx, rx = lb.s2m
    payload = "fixed" if "-fixed" in mode else "zeros"
    # -spread: each flow to a destination of its own (gen --dst-step)
    dst_step = 256 if mode.endswith("-spread") else 0
    gen = Generator([size], flows=4, payload=payload, dst_step=dst_step)
    dst = bytearray(burst * size)
    out = array("I", [0]) * burst
    if mode == "gen-fill-tx":
        buf = bytearray(burst * size)
        lens = array("I", [0]) * burst
        flows = array("I", range(4))

        def send():
            gen.fill(buf, lens, burst, flows, 0, True)
            return tx.tx_batch(buf, lens)
    else:
        st = Stream(gen, range(4), burst, headers_only=True,
                    zero_copy=mode.startswith("gen-send-zc"))

        def send():
            return st.send(tx, burst, 1)
    for _ in bursts(n // burst):
        if send() != burst:
            raise SystemExit("short send")
        if rx.rx_batch(dst, out) != burst:
            raise SystemExit("short rx")
    if payload == "fixed":
        # the last burst, every byte: what a fresh generator makes (a burst
        # is a whole number of flow cycles, so each buffer kept its flow)
        ref = bytearray(burst * size)
        Generator([size], flows=4, payload="fixed", dst_step=dst_step).fill(
            ref, out, burst, array("I", range(4)))
        if dst != ref:
            raise SystemExit("fixed frames differ")
    elif Checker(verify="full").check(dst, out, burst) != burst:    # the last burst
        raise SystemExit("checker: corrupt frames")
    if rx.counters()["packets"] != PHASES * n:
        raise SystemExit("rx counted %r" % rx.counters())
    lb.close()


def two_way(n, size, burst):
    """ip4-two-way: BURST / 2 frames each way per round."""
    lb = Loopback(log2=10, buffer_size=2048, n_s2m=2, n_m2s=2)
    router = make_router()
    router.add_neighbor(0, int.from_bytes(SRC, "big"), HOST)
    half = burst // 2
    there = udp_frame(size)
    back = bytearray(there)                  # the reply: to the sender, through interface 1
    back[0:12] = MAC_OUT + NEXT_HOP
    back[26:34] = DST + SRC
    back[24:26] = b"\0\0"
    struct.pack_into("!H", back, 24, ip_checksum(bytes(back[14:34])))
    back = bytes(back)
    feeds = [p.tx for p in lb.s2m_pairs]
    rxqs = [p.rx for p in lb.s2m_pairs]
    txqs = [p.tx for p in lb.m2s_pairs]
    drains = [p.rx for p in lb.m2s_pairs]
    srcs = [there * half, back * half]
    lens = array("I", [size]) * half
    dst = bytearray(half * size)
    out = array("I", [0]) * half
    for _ in bursts(n // burst):
        for i in (0, 1):
            if feeds[i].tx_batch(srcs[i], lens) != half:
                raise SystemExit("short tx")
        for i in (0, 1):
            if router.poll(i, rxqs[i], txqs, half, 1) != half:
                raise SystemExit("short forward")
        for i in (0, 1):
            if drains[i].rx_batch(dst, out) != half:
                raise SystemExit("short rx")
    for i in (0, 1):
        c = router.counters(i, 2)["rx"][i]          # ring i is queue i of its interface
        if c["forwarded"] != PHASES * n // 2 or any(c["drops"].values()):
            raise SystemExit("router: %r" % c)
    lb.close()


def spread(n, size, burst):
    """ip4-spread: each burst in on interface 0, frames in turn to
    interface 1 and 2; each output's frames checked byte for byte."""
    lb = Loopback(log2=10, buffer_size=2048, n_m2s=2)
    router = make_router(outputs=2)
    feed, rx = lb.s2m
    txqs = [None] + [p.tx for p in lb.m2s_pairs]
    drains = [p.rx for p in lb.m2s_pairs]
    half = burst // 2
    there = [udp_frame(size), udp_frame(size, dst=DST2)]
    src = (there[0] + there[1]) * half
    expect = [forwarded(there[0]) * half, forwarded(there[1], NEXT_HOP2, MAC_OUT2) * half]
    lens = array("I", [size]) * burst
    dst = [bytearray(half * size) for _ in drains]
    out = array("I", [0]) * half
    for _ in bursts(n // burst):
        if feed.tx_batch(src, lens) != burst:
            raise SystemExit("short tx")
        if router.poll(0, rx, txqs, burst, 1) != burst:
            raise SystemExit("short forward")
        for i in (0, 1):
            if drains[i].rx_batch(dst[i], out) != half:
                raise SystemExit("short rx")
    c = router.counters(0)["rx"][0]
    if c["forwarded"] != PHASES * n or any(c["drops"].values()) or dst != expect:
        raise SystemExit("router: %r" % c)
    lb.close()


def main():
    n = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    burst = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    mode = sys.argv[4] if len(sys.argv) > 4 else "ring"
    assert n % burst == 0
    assert mode in (("ring", "xconnect", "ip4", "ip4-options", "ip4-two-way", "ip4-spread")
                    + TESTER_MODES
                    + SINK_RING_MODES + SEND_MODES), mode
    if mode in TESTER_MODES:
        return tester(mode, n, size, burst)
    if mode in SINK_RING_MODES:
        return sink_ring(mode, n, size, burst)
    if mode in SEND_MODES:
        return sender(mode, n, size, burst)
    if mode == "ip4-two-way":
        return two_way(n, size, burst)
    if mode == "ip4-spread":
        return spread(n, size, burst)
    lb = Loopback(log2=10, buffer_size=2048, n_m2s=0 if mode == "ring" else 1)
    tx, rx = lb.s2m
    if mode.startswith("ip4"):
        frame = udp_frame(size, options=b"\x01" * 4 if mode == "ip4-options" else b"")
        src = frame * burst
        expect = forwarded(frame) * burst
    else:
        src = bytes(range(256)) * (burst * size // 256 + 1)
        src = src[:burst * size]
        expect = src
    lens = array("I", [size]) * burst
    dst = bytearray(burst * size)
    out = array("I", [0]) * burst
    if mode == "ring":
        for _ in bursts(n // burst):
            if tx.tx_batch(src, lens) != burst:
                raise SystemExit("short tx")
            if rx.rx_batch(dst, out) != burst:
                raise SystemExit("short rx")
    else:
        mtx, srx = lb.m2s
        if mode == "xconnect":
            from memifx.xconnect import XConnect
            node = XConnect()

            def forward():
                return node.poll(rx, mtx, burst, 1)
        else:
            node = make_router()
            txqs = [None, mtx]

            def forward():
                return node.poll(0, rx, txqs, burst, 1)
        for _ in bursts(n // burst):
            if tx.tx_batch(src, lens) != burst:
                raise SystemExit("short tx")
            if forward() != burst:
                raise SystemExit("short forward")
            if srx.rx_batch(dst, out) != burst:
                raise SystemExit("short rx")
        if mode.startswith("ip4"):
            c = node.counters(0)["rx"][0]
            if c["forwarded"] != PHASES * n or any(c["drops"].values()):
                raise SystemExit("router: %r" % c)
        if mtx.counters()["packets"] != PHASES * n:
            raise SystemExit("node moved %r" % mtx.counters())
    if dst != expect or rx.counters()["packets"] != PHASES * n:
        raise SystemExit("data mismatch")
    lb.close()


if __name__ == "__main__":
    main()
