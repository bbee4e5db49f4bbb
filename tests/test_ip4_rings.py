"""ip4-forward through real rings: headers from the private copy (or, ring to
ring, from registers they were read into once), the rest of each frame copied
once, straight from the receive ring to the transmit ring.

Router.poll must give, frame for frame, what Router.process gives for the
same frames (tests/test_ip4.py checks process against scapy), whatever the
buffer size: one buffer per frame, chains whose first buffer holds all the
headers, and chains whose headers straddle buffers.  Frames the router
answers itself (ARP, ICMP echo, time exceeded) and drops go through the same
burst, and every frame is counted once.
"""
import pytest
from hypothesis import example, given, settings, strategies as st
from scapy.all import ARP, ICMP, IP, IPOption_NOP, UDP, Ether, raw

from loopback import Loopback
from memifx.fib import Fib
from memifx.ip4 import Router

MAC_IN, MAC_OUT = "02:00:00:00:01:01", "02:00:00:00:01:02"
HOST = "02:aa:00:00:00:05"           # the sender, 10.0.1.5
NEXT_HOP = "0a:00:00:00:00:fd"       # 10.0.2.253


def ip(text):
    return int.from_bytes(bytes(map(int, text.split("."))), "big")


def mac(text):
    return bytes(int(x, 16) for x in text.split(":"))


def make_router():
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    fib.add_route("10.0.1.1/32", "local", ifindex=0)
    fib.add_route("10.0.2.1/32", "local", ifindex=1)
    fib.add_route("172.16.0.0/12", "gateway", gw=ip("10.0.2.253"), ifindex=1)
    r = Router(fib)
    r.add_interface(0, mac(MAC_IN), ip("10.0.1.1"))
    r.add_interface(1, mac(MAC_OUT), ip("10.0.2.1"))
    r.add_neighbor(1, ip("10.0.2.253"), mac(NEXT_HOP))
    r.set_time(1000)
    return r


def payload(n):
    return bytes(i * 7 & 0xFF for i in range(n))


def udp_frame(size, nopts=0, ttl=64, pad=0, dst="172.16.5.1"):
    """An Ethernet/IPv4/UDP frame of ``size`` bytes before ``pad`` bytes of
    Ethernet padding."""
    head = (Ether(dst=MAC_IN, src=HOST)
            / IP(src="10.0.1.5", dst=dst, ttl=ttl, options=[IPOption_NOP()] * nopts)
            / UDP(sport=7, dport=9))
    return raw(head / payload(max(0, size - len(raw(head))))) + b"\0" * pad


def frames():
    out = [udp_frame(s, nopts) for s in (60, 64, 100, 127, 128, 129, 140, 200, 600, 1000, 1518)
           for nopts in (0, 10)]
    out += [udp_frame(1000, pad=60),                                # padding stays behind
            udp_frame(1518, ttl=1),                                 # time exceeded back
            udp_frame(1518, nopts=10, ttl=1),
            raw(Ether(dst=MAC_IN, src=HOST) / IP(src="10.0.1.5", dst="10.0.1.1")
                / ICMP(type=8, id=7, seq=1) / payload(1400)),        # echo reply, whole
            raw(Ether(dst=MAC_IN, src=HOST)
                / IP(src="10.0.1.5", dst="10.0.1.1", options=[IPOption_NOP()] * 4)
                / ICMP(type=8, id=7, seq=2) / payload(90)),
            raw(Ether(dst=MAC_IN, src=HOST) / IP(src="10.0.1.5", dst="10.0.1.1")
                / ICMP(type=8, id=7, seq=3, chksum=0x1234) / payload(900)),   # bad icmp checksum
            raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST)
                / ARP(op=1, hwsrc=HOST, psrc="10.0.1.5", pdst="10.0.1.1")),
            raw(Ether(dst=MAC_IN, src=HOST) / IP(src="10.0.1.5", dst="8.8.8.8") / UDP()
                / payload(1400))]
    bad = bytearray(udp_frame(1518))
    bad[24] ^= 0x55                                                 # header checksum
    out.append(bytes(bad))
    return out


def run_rings(buffer_size, log2, batch):
    """Send frames() through interface 0 in batches; returns (outputs per
    interface, router, rx queue)."""
    lb = Loopback(log2=log2, buffer_size=buffer_size, n_s2m=1, n_m2s=2)
    r = make_router()
    (stx, mrx), out_pairs = lb.s2m, lb.m2s_pairs
    txqs = [p.tx for p in out_pairs]
    got = [[], []]
    todo = frames()
    while todo:
        sent = stx.tx_frames(todo[:batch])
        assert sent
        todo = todo[sent:]
        while r.poll(0, mrx, txqs, 256, 1):
            pass
        for o, p in enumerate(out_pairs):
            while True:
                f = p.rx.rx_frames(p.rx.size)
                if not f:
                    break
                got[o].extend(f)
    return got, r, mrx, lb


@pytest.mark.timeout(60)
@pytest.mark.parametrize("buffer_size, log2, batch",
                         [(2048, 6, 16), (256, 8, 16), (128, 9, 16), (64, 10, 12)],
                         ids=["one-buffer", "chained", "headers-fill-first", "headers-straddle"])
def test_poll_matches_process(buffer_size, log2, batch):
    got, r, mrx, lb = run_rings(buffer_size, log2, batch)
    ref = make_router()
    want = [[], []]
    fs = frames()
    for i in range(0, len(fs), 8):
        for o, f in ref.process(0, fs[i:i + 8]):
            want[o].append(f)
    assert [len(g) for g in got] == [len(w) for w in want] == [5, 23]
    # every output in the order its frame came in, whichever nodes it took
    # (ip4-fast or the general graph), so bursts of 16 and of 8 agree
    assert got[1] == want[1]
    assert got[0] == want[0]
    # every frame counted once, and in the same place as process counts it
    assert r.counters(0)["rx"] == ref.counters(0)["rx"]
    c = r.counters(0)["rx"][0]
    assert c["packets"] == len(fs) and mrx.counters()["packets"] == len(fs)
    assert c["forwarded"] == 23 and c["echo replies"] == 2 and c["arp replies"] == 1
    assert c["icmp errors sent"] == 2 and c["drops"]["ttl expired"] == 2
    assert c["drops"]["bad icmp checksum"] == 1 and c["drops"]["no route"] == 1
    assert c["drops"]["bad checksum"] == 1
    assert sum(t["packets"] for t in r.counters(1, 1, 256)["tx"]) == 23   # queue index 1
    lb.close()


@pytest.mark.timeout(60)
def test_forwarded_long_frames_exact():
    """Independent of process: TTL - 1, checksum fixed, new MACs, the rest
    byte for byte, the Ethernet padding left behind."""
    got, _, _, lb = run_rings(256, 8, 16)
    sent = [f for f in frames()[:-1]            # the last one has a bad header checksum
            if IP in Ether(f) and Ether(f)[IP].dst == "172.16.5.1" and Ether(f)[IP].ttl > 1]
    assert len(got[1]) == len(sent)
    for f, g in zip(sent, got[1]):
        e = Ether(f)
        hl = e[IP].ihl * 4
        assert g[:14] == mac(NEXT_HOP) + mac(MAC_OUT) + b"\x08\x00"
        assert len(g) == 14 + e[IP].len
        assert g[14 + 8] == e[IP].ttl - 1
        q = IP(g[14:])
        want = q.copy()
        del want.chksum
        assert q.chksum == IP(raw(want)).chksum
        assert g[14 + hl:] == f[14 + hl:14 + e[IP].len]
        assert g[14:14 + 8] == f[14:14 + 8] and g[14 + 12:14 + hl] == f[14 + 12:14 + hl]
    lb.close()


@pytest.mark.timeout(60)
def test_receive_slots_consumed_when_transmit_raises():
    """The receive slots are held until interface-output is done: a failure
    picking a transmit queue still consumes them (counted once, never
    delivered twice)."""
    lb = Loopback(log2=6, buffer_size=256, n_s2m=1, n_m2s=1)
    r = make_router()
    stx, mrx = lb.s2m
    fs = [udp_frame(1518)] * 8
    assert stx.tx_frames(fs) == 8
    with pytest.raises(TypeError):
        r.poll(0, mrx, [None, "not a queue"], 256, 1)
    assert r.poll(0, mrx, [None, lb.m2s.tx], 256, 1) == 0
    assert mrx.counters()["packets"] == 8 and r.counters(0)["rx"][0]["packets"] == 8
    assert lb.m2s.rx.rx_frames(64) == []
    # the next frames go through
    assert stx.tx_frames(fs) == 8
    assert r.poll(0, mrx, [None, lb.m2s.tx], 256, 1) == 8
    assert len(lb.m2s.rx.rx_frames(64)) == 8
    assert r.counters(0)["rx"][0]["packets"] == 16
    lb.close()


@pytest.mark.timeout(60)
def test_tx_ring_full_and_link_down_still_consume_rx():
    """Frames the transmit side cannot take are dropped and counted; the
    receive ring is emptied either way."""
    lb = Loopback(log2=4, buffer_size=2048, n_s2m=1, n_m2s=1)
    r = make_router()
    stx, mrx = lb.s2m
    assert stx.tx_frames([udp_frame(1518)] * 16) == 16
    assert r.poll(0, mrx, [None, lb.m2s.tx], 256, 1) == 16
    stx.tx_frames([udp_frame(1518)] * 16)
    assert r.poll(0, mrx, [None, lb.m2s.tx], 256, 1) == 16     # the M2S ring is full now
    stx.tx_frames([udp_frame(1518)] * 4)
    assert r.poll(0, mrx, [None, None], 256, 1) == 4
    tx = r.counters(1)["tx"][0]
    assert tx["packets"] == 16 and tx["drops"]["tx ring full"] == 16
    assert r.counters(1)["tx link down"] == 4
    assert r.counters(0)["rx"][0]["forwarded"] == 36
    assert len(lb.m2s.rx.rx_frames(64)) == 16
    lb.close()


def forwarded_as(f, dst_mac, src_mac):
    """``f`` routed on by hand (independent of the router): new MACs, TTL
    - 1, the header checksum recomputed, the Ethernet padding left behind."""
    e = Ether(f)
    q = e[IP].copy()
    q.ttl -= 1
    del q.chksum
    return raw(Ether(dst=dst_mac, src=src_mac) / IP(raw(q)))[:14 + e[IP].len]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("ways", ["1" * 32, "10" * 16, "1" * 20 + "0" * 12, "0" * 31 + "1"],
                         ids=["one-way", "alternating", "two-runs", "last-differs"])
@pytest.mark.parametrize("size", [64, 100, 1518])
def test_fast_bursts_one_way_or_two(ways, size):
    """Bursts ip4-fast takes whole, every frame out of one interface (transmit
    reads the burst as it lies) or out of both (interface-output sorts
    them): each interface's frames exact and in order, every frame counted
    once, process() agreeing."""
    lb = Loopback(log2=6, buffer_size=2048, n_s2m=1, n_m2s=2)
    r, ref = make_router(), make_router()
    for x in (r, ref):
        x.add_neighbor(0, ip("10.0.1.5"), mac(HOST))      # a hairpin out of interface 0
    (stx, mrx), out_pairs = lb.s2m, lb.m2s_pairs
    sent = [udp_frame(size, dst="172.16.5.%d" % i if w == "1" else "10.0.1.5")
            for i, w in enumerate(ways)]
    assert stx.tx_frames(sent) == len(sent)
    assert r.poll(0, mrx, [p.tx for p in out_pairs], 256, 1) == len(sent)
    got = [p.rx.rx_frames(64) for p in out_pairs]
    want = [[forwarded_as(f, mac(HOST), mac(MAC_IN)) for f, w in zip(sent, ways) if w == "0"],
            [forwarded_as(f, mac(NEXT_HOP), mac(MAC_OUT)) for f, w in zip(sent, ways) if w == "1"]]
    assert got == want
    out = ref.process(0, sent)
    assert [[b for o, b in out if o == i] for i in (0, 1)] == want
    c = r.counters(0)["rx"][0]
    assert c["packets"] == c["forwarded"] == len(sent) and not any(c["drops"].values())
    assert r.counters(0)["rx"] == ref.counters(0)["rx"]
    assert [sum(t["packets"] for t in r.counters(i, 1, 256)["tx"]) for i in (0, 1)] \
        == [ways.count("0"), ways.count("1")]
    lb.close()


def header_sum(words):
    s = sum(words)
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@pytest.mark.timeout(60)
@pytest.mark.parametrize("nopts", [0, 1], ids=["fast", "graph"])
def test_ttl_checksum_update_at_every_edge(nopts):
    """The TTL's checksum update (inet.pxd's ttl_down) against a checksum
    recomputed by scapy, for every checksum from 0xFE00 up and from 0 to
    0xFF: where the sum carries, in either byte order, and where the result
    is 0.  Without options the first burst goes through memif-input's walk
    (ip4-fast), the second ring to ring; with an option both go through
    the general graph (ip4-rewrite)."""
    def frame(ident):
        return raw(Ether(dst=MAC_IN, src=HOST)
                   / IP(src="10.0.1.5", dst="172.16.5.1", id=ident,
                        options=[IPOption_NOP()] * nopts)
                   / UDP() / payload(20))
    hl = 20 + 4 * nopts
    base = bytearray(frame(0)[14:14 + hl])
    base[10:12] = b"\0\0"
    s = header_sum(int.from_bytes(base[i:i + 2], "big") for i in range(0, hl, 2))
    sent = []
    for target in list(range(0xFE00, 0xFFFF)) + list(range(0x100)):
        # the IP id that makes the header's checksum ``target``
        ident = ((~target & 0xFFFF) - s) % 0xFFFF
        f = frame(ident)
        if Ether(f)[IP].chksum == target:
            sent.append(f)
    assert len(sent) > 500
    lb = Loopback(log2=10, buffer_size=2048, n_s2m=1, n_m2s=2)
    r = make_router()
    (stx, mrx), out_pairs = lb.s2m, lb.m2s_pairs
    got = []
    for part in (sent[:256], sent[256:]):
        assert stx.tx_frames(part) == len(part)
        assert r.poll(0, mrx, [p.tx for p in out_pairs], 256, 2) == len(part)
        got += out_pairs[1].rx.rx_frames(1024)
    assert got == [forwarded_as(f, mac(NEXT_HOP), mac(MAC_OUT)) for f in sent]
    assert r.counters(0)["rx"][0]["forwarded"] == len(sent)
    lb.close()


@pytest.mark.timeout(60)
def test_pass_queues_released_when_txqs_is_wrong():
    """poll holds a reference to each of the pass's transmit Queues for the
    pass; a txqs entry that is no Queue is a TypeError, and the references
    taken before it are given back."""
    import sys
    lb = Loopback(log2=6, buffer_size=2048, n_s2m=1, n_m2s=2)
    r = make_router()
    r.add_neighbor(0, ip("10.0.1.5"), mac(HOST))
    (stx, mrx), out_pairs = lb.s2m, lb.m2s_pairs
    txqs = [p.tx for p in out_pairs]
    both = [udp_frame(64), udp_frame(64, dst="10.0.1.5")]     # out of 1, and back out of 0
    assert stx.tx_frames(both) == 2
    assert r.poll(0, mrx, txqs, 256, 1) == 2                # the pass now goes both ways
    before = sys.getrefcount(txqs[0])
    assert stx.tx_frames(both) == 2

    def wrong():
        try:
            r.poll(0, mrx, [txqs[0], "not a queue"], 256, 1)
        except TypeError:
            return True     # (the exception, and its traceback, gone on return)
        return False

    assert all(wrong() for _ in range(3))
    after = sys.getrefcount(txqs[0])     # (outside the assert, which holds its operands)
    assert after == before
    assert r.poll(0, mrx, txqs, 256, 1) == 2                # and the frames are still there
    assert [len(p.rx.rx_frames(64)) for p in out_pairs] == [2, 2]
    lb.close()


# ------------------------------------------------- the ring-to-ring pass
#
# Router.poll first moves what ip4-fast takes out of one interface ring to
# ring (forward_fast), then gives the rest of the burst to memif-input and
# the graph.  Whatever the mix, where the pass stops and the graph goes on
# must not show: each interface gets what process() gives for the same
# frames, in order, and every frame is counted once, in the same place.

def mixed_frame(kind, i, size):
    """One frame of a kind the pass takes ("fwd1" out of interface 1,
    "fwd0" back out of interface 0) or leaves to the graph."""
    if kind == "fwd1":
        return udp_frame(size, dst="172.16.5.%d" % (i % 250))
    if kind == "fwd0":
        return udp_frame(size, dst="10.0.1.5")
    if kind == "options":
        return udp_frame(size, nopts=2)
    if kind == "ttl1":
        return udp_frame(size, ttl=1)
    if kind == "long":                      # chained on 2048-byte buffers
        return udp_frame(3000)
    if kind == "unresolved":                # connected, no neighbor: ARP request
        return udp_frame(size, dst="10.0.2.77")
    if kind == "noroute":
        return udp_frame(size, dst="8.8.8.8")
    if kind == "badsum":
        f = bytearray(udp_frame(size))
        f[24] ^= 0x55
        return bytes(f)
    if kind == "arp":
        return raw(Ether(dst="ff:ff:ff:ff:ff:ff", src=HOST)
                   / ARP(op=1, hwsrc=HOST, psrc="10.0.1.5", pdst="10.0.1.1"))
    if kind == "echo":
        return raw(Ether(dst=MAC_IN, src=HOST) / IP(src="10.0.1.5", dst="10.0.1.1")
                   / ICMP(type=8, id=7, seq=i) / payload(max(0, size - 42)))
    raise ValueError(kind)


# mostly frames the pass takes, as traffic is
MIX = ["fwd1"] * 12 + ["fwd0"] * 4 + ["options", "ttl1", "long", "unresolved", "noroute",
                                      "badsum", "arp", "echo", "spoiled"]


def router_rings(role):
    """(loopback, the router's receive queue, its transmit queues, the
    senders' queue into it, the queues its outputs are read from): the
    router as master (S2M in, M2S out) or as slave (M2S in, S2M out)."""
    if role == "master":
        lb = Loopback(log2=6, buffer_size=2048, n_s2m=1, n_m2s=2, max_frame=4000)
        (feed, rxq), outs = lb.s2m, lb.m2s_pairs
    else:
        lb = Loopback(log2=6, buffer_size=2048, n_s2m=2, n_m2s=1, max_frame=4000)
        (feed, rxq), outs = lb.m2s, lb.s2m_pairs
    return lb, rxq, [p.tx for p in outs], feed, [p.rx for p in outs]


def tx_packets(r):
    """Frames the router queued on interface 1, any queue."""
    return sum(t["packets"] for t in r.counters(1, 1, 256)["tx"])


def frames_that_fit(lengths, caps):
    """How many frames of these lengths, in order, a ring whose free slots
    hold ``caps`` bytes each takes: each frame the slots its bytes fill
    (at least one); the first that does not fit stops it."""
    slot = n = 0
    for length in lengths:
        end, got = slot, 0
        while end < len(caps) and (got < length or end == slot):
            got += caps[end]
            end += 1
        if got < length or end == slot:
            break
        slot, n = end, n + 1
    return n


@pytest.mark.timeout(120)
@pytest.mark.parametrize("role", ["master", "slave"])
@settings(max_examples=60, deadline=None, derandomize=True)
@given(kinds=st.lists(st.sampled_from(MIX), min_size=1, max_size=30),
       warm=st.sampled_from(["fwd1", "fwd1", "fwd0", "both", "both", None]),
       size=st.sampled_from([64, 200, 1518]),
       busy=st.sampled_from([0, 1, 20, 40, 50, 56, 60, 62, 63, 64]),
       short=st.sets(st.integers(0, 63), max_size=6))
# the pass running out of transmit room, with and without the graph after it
@example(kinds=["fwd1"] * 8, warm="fwd1", size=64, busy=60, short=set())
@example(kinds=["fwd1"] * 3 + ["fwd0"] + ["fwd1"] * 3, warm="fwd1", size=1518, busy=62,
         short={0})
# the pass writing to both outputs, one of them running out of room
@example(kinds=["fwd1", "fwd0"] * 6, warm="both", size=64, busy=60, short=set())
def test_pass_and_graph_agree_with_process(role, kinds, warm, size, busy, short):
    """Any mix behind warm-up frames that point the pass at interface 1,
    interface 0, both ("both": one frame each way) or nowhere yet; interface 1's ring with ``busy`` of its 64
    slots still unread (frames past its room are dropped "tx ring full",
    wherever they were decided); the router as master, with the posted
    buffers in ``short`` only 100 bytes (the pass leaves such a slot to
    the graph's transmit, which chains), or as slave; "spoiled": a
    descriptor the ring drops (outside the region, or longer than the
    buffer the slave posted)."""
    lb, rxq, txqs, feed, readers = router_rings(role)
    r, ref = make_router(), make_router()
    for x in (r, ref):
        x.add_neighbor(0, ip("10.0.1.5"), mac(HOST))      # a hairpin out of interface 0
    try:
        if warm:
            w = [mixed_frame(k, 0, size) for k in (["fwd1", "fwd0"] if warm == "both"
                                                     else [warm])]
            assert feed.tx_frames(w) == len(w)
            assert r.poll(0, rxq, txqs, 256, 1) == len(w)
            ref.process(0, w)
            for q in readers:
                q.rx_frames(64)
        sent_before = tx_packets(r)
        assert txqs[1].tx_frames([b"\0" * 60] * busy) == busy
        room = 64 - busy
        caps = [2048] * room                # interface 1's free slots, in order
        if role == "master":
            first = busy + (1 if warm in ("fwd1", "both") else 0)
            for s in short:
                if s < room:
                    lb.poke_desc(2, (first + s) % 64, length=100)   # its M2S ring
                    caps[s] = 100
        frames = [mixed_frame("fwd1" if k == "spoiled" else k, i, size)
                  for i, k in enumerate(kinds)]
        assert feed.tx_frames(frames) == len(frames)
        rx_ring = 0 if role == "master" else 2
        start = 2 if warm == "both" else 1 if warm else 0
        slot = start
        for k, f in zip(kinds, frames):
            if k == "spoiled":          # the master reads a region offset; the slave, the length
                lb.poke_desc(rx_ring, slot % 64, **({"offset": lb.region_size} if role == "master"
                                                    else {"length": 4096}))
            slot += -(-len(f) // 2048)
        r.poll(0, rxq, txqs, 256, 4)
        assert not rxq.pending()
        # what process() does with the same frames, the spoiled ones never seen
        out = ref.process(0, [f for k, f in zip(kinds, frames) if k != "spoiled"])
        want = [[b for o, b in out if o == i] for i in (0, 1)]
        fit = frames_that_fit([len(f) for f in want[1]], caps)
        assert readers[0].rx_frames(64) == want[0]
        assert readers[1].rx_frames(64)[busy:] == want[1][:fit]
        assert r.counters(0)["rx"] == ref.counters(0)["rx"]
        assert rxq.counters()["drops"]["bad descriptor"] == kinds.count("spoiled")
        assert tx_packets(r) - sent_before == fit
        assert sum(t["drops"]["tx ring full"] for t in r.counters(1, 1, 256)["tx"]) \
            == len(want[1]) - fit
    finally:
        lb.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", ["master", "slave"])
def test_pass_keeps_to_the_outputs_max_frame(role):
    """Bare IP packets in, Ethernet frames out: a packet as long as the
    queues' max_frame leaves 14 bytes longer than the output takes.  The
    pass takes the packets that still fit after their Ethernet header and
    leaves the rest to transmit, which counts each "tx frame too long";
    none leaves longer than max_frame."""
    most = 1000
    if role == "master":
        lb = Loopback(log2=6, buffer_size=2048, n_s2m=1, n_m2s=2, max_frame=most)
        (feed, rxq), outs = lb.s2m, lb.m2s_pairs
    else:
        lb = Loopback(log2=6, buffer_size=2048, n_s2m=2, n_m2s=1, max_frame=most)
        (feed, rxq), outs = lb.m2s, lb.s2m_pairs
    txqs, readers = [p.tx for p in outs], [p.rx for p in outs]
    r = ip_mode_router(True, False)
    try:
        # a first burst points the pass at interface 1
        assert feed.tx_frames([udp_frame(100, dst="172.16.9.9")[14:]]) == 1
        assert r.poll(0, rxq, txqs, 256, 1) == 1
        assert len(readers[1].rx_frames(64)) == 1
        # IPv4 total lengths: the longest that fits once framed, then too long
        lengths = [most - 14 - 1, most - 14, most - 14 + 1, most - 1, most, 500]
        packets = [udp_frame(n + 14, dst="172.16.9.%d" % i)[14:] for i, n in enumerate(lengths)]
        assert [len(p) for p in packets] == lengths
        assert feed.tx_frames(packets) == len(packets)
        assert r.poll(0, rxq, txqs, 256, 1) == len(packets)
        got = readers[1].rx_frames(64)
        assert [len(g) for g in got] == [n + 14 for n in lengths if n + 14 <= most]
        tx = r.counters(1, 1, 256)["tx"]
        assert sum(t["drops"]["tx frame too long"] for t in tx) == 3
        assert sum(t["packets"] for t in tx) == 1 + 3
        assert txqs[1].counters()["drops"]["frame too long"] == 3
        assert r.counters(0)["rx"][0]["forwarded"] == 1 + len(packets)
    finally:
        lb.close()


def ip_mode_router(in_ip, out_ip):
    """make_router's routes, with interface 0 and / or 1 in IP mode."""
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    fib.add_route("172.16.0.0/12", "gateway", gw=ip("10.0.2.253"), ifindex=1)
    r = Router(fib)
    r.add_interface(0, mac(MAC_IN), ip("10.0.1.1"), ip_mode=in_ip)
    r.add_interface(1, mac(MAC_OUT), ip("10.0.2.1"), ip_mode=out_ip)
    r.add_neighbor(1, ip("10.0.2.253"), mac(NEXT_HOP))
    r.set_time(1000)
    return r


@pytest.mark.timeout(60)
@pytest.mark.parametrize("role", ["master", "slave"])
@pytest.mark.parametrize("in_ip, out_ip", [(True, False), (False, True), (True, True)],
                         ids=["ip-to-eth", "eth-to-ip", "ip-to-ip"])
@pytest.mark.parametrize("size", [64, 1518])
def test_pass_between_ip_mode_and_ethernet(role, in_ip, out_ip, size):
    """The pass on an IP mode input (no Ethernet header to check or drop)
    and into an IP mode output (none put in front): two bursts, the second
    taken by the pass up to a frame with options, the rest by the graph;
    what leaves is what process() gives."""
    lb, rxq, txqs, feed, readers = router_rings(role)
    r, ref = ip_mode_router(in_ip, out_ip), ip_mode_router(in_ip, out_ip)
    try:
        def strip(f):
            return f[14:] if in_ip else f
        bursts = [[strip(udp_frame(size, dst="172.16.9.%d" % i)) for i in range(3)],
                  [strip(udp_frame(size, dst="172.16.8.%d" % i)) for i in range(5)]
                  + [strip(udp_frame(size, nopts=3))]
                  + [strip(udp_frame(size, dst="172.16.7.%d" % i)) for i in range(4)]]
        for b in bursts:
            assert feed.tx_frames(b) == len(b)
            assert r.poll(0, rxq, txqs, 256, 1) == len(b)
            want = [f for o, f in ref.process(0, b) if o == 1]
            assert len(want) == len(b)
            got = readers[1].rx_frames(64)
            assert got == want
            assert all(len(g) == (size - 14 if out_ip else size) for g in got)
        assert r.counters(0)["rx"] == ref.counters(0)["rx"]
    finally:
        lb.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("size", [64, 1518])
def test_pass_across_the_rings_ends(size):
    """Bursts of 11 on 16-slot rings, the output ring 5 slots ahead of the
    input: the ring to ring pass takes each ring's slots up to its end and
    then from its start, the two ends at different frames of a burst.
    Every frame leaves exact and in order, and is counted once."""
    lb = Loopback(log2=4, buffer_size=2048, n_s2m=1, n_m2s=2)
    r = make_router()
    (stx, mrx), out_pairs = lb.s2m, lb.m2s_pairs
    ahead = out_pairs[1]
    assert ahead.tx.tx_frames([b"\0" * 60] * 5) == 5 and len(ahead.rx.rx_frames(16)) == 5
    for burst in range(9):
        sent = [udp_frame(size, dst="172.16.5.%d" % (burst * 11 + i)) for i in range(11)]
        assert stx.tx_frames(sent) == 11
        assert r.poll(0, mrx, [p.tx for p in out_pairs], 256, 1) == 11
        assert ahead.rx.rx_frames(16) == [forwarded_as(f, mac(NEXT_HOP), mac(MAC_OUT))
                                          for f in sent]
    c = r.counters(0)["rx"][0]
    assert c["packets"] == c["forwarded"] == 99 and not any(c["drops"].values())
    lb.close()
