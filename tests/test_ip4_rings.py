"""ip4-forward through real rings: headers from the private copy, the rest of
each frame copied once, straight from the receive ring to the transmit ring.

Router.poll must give, frame for frame, what Router.process gives for the
same frames (tests/test_ip4.py checks process against scapy), whatever the
buffer size: one buffer per frame, chains whose first buffer holds all the
headers, and chains whose headers straddle buffers.  Frames the router
answers itself (ARP, ICMP echo, time exceeded) and drops go through the same
burst, and every frame is counted once.
"""
import pytest
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
