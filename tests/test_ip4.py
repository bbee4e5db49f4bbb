"""ip4-forward: the FIB, the router's nodes, and the command end to end.

Three layers:
- the FIB (memifx/fib.pyx) against a brute-force longest-prefix match;
- the node graph (memifx/ip4.pyx) through Router.process(), which runs the
  same nodes on frames handed in as bytes: fast and exact, every drop reason;
- ``memifx ip4-forward`` in a subprocess with master interfaces in interrupt
  mode (it sleeps when idle), driven by slave memifx.Interface objects here.
"""
import ipaddress
import json
import os
import random
import signal
import sys
import time
from array import array

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings, strategies as st
from scapy.all import ARP, ICMP, IP, IPerror, IPOption_NOP, IPv6, UDP, Ether, raw

import memifx
from memifx.runtime.ip4 import build_fib
from memifx.cli.main import main
from memifx.cli.spec import parse_spec
from memifx.fib import Fib, RouteError
from memifx.routes import load_routes
from memifx.ip4 import DROP_REASONS, TX_DROPS, Router
from conftest import read_until, wait_for

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
SETTINGS = settings(deadline=None, max_examples=60,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])


def A(text):
    return int(ipaddress.IPv4Address(text))


def mask(length):
    return (0xFFFFFFFF << (32 - length)) & 0xFFFFFFFF if length else 0


# ---------------------------------------------------------------- the FIB

def brute_lpm(routes, addr):
    """routes: {(network int, length): value}; the value of the longest match, or None."""
    best = None
    for (net, length), value in routes.items():
        if addr & mask(length) == net and (best is None or length > best[0]):
            best = (length, value)
    return None if best is None else best[1]


def fib_of(routes, order):
    """A Fib with each route's value as the gateway of its own next hop."""
    fib = Fib()
    for key in order:
        net, length = key
        fib.insert(net, length, fib.add_nexthop("gateway", routes[key], 0))
    return fib


def gw_of(fib, addr):
    i = fib.lookup(addr)
    return None if i < 0 else fib.nexthop(i)[1]


@pytest.mark.timeout(60)
def test_fib_overlaps_edges_and_order():
    routes = {(A("10.0.0.0"), 8): 1, (A("10.1.0.0"), 16): 2, (A("10.1.2.0"), 24): 3,
              (A("10.1.2.128"), 25): 4, (A("10.1.2.200"), 32): 5, (0, 0): 6,
              (A("10.1.2.0"), 31): 7}
    probes = {"10.2.3.4": 1, "10.1.3.3": 2, "10.1.2.1": 7, "10.1.2.2": 3, "10.1.2.127": 3,
              "10.1.2.128": 4, "10.1.2.200": 5, "10.1.2.201": 4, "10.1.2.255": 4,
              "11.0.0.1": 6, "0.0.0.0": 6, "255.255.255.255": 6, "10.1.2.0": 7}
    keys = list(routes)
    rnd = random.Random(7)
    orders = [keys, keys[::-1]] + [rnd.sample(keys, len(keys)) for _ in range(6)]
    for order in orders:
        fib = fib_of(routes, order)
        for addr, want in probes.items():
            assert gw_of(fib, addr) == want, (addr, order)
    # /32 and /0 alone; an empty table misses everything
    fib = Fib()
    assert fib.lookup("1.2.3.4") == -1
    fib.insert(A("1.2.3.4"), 32, fib.add_nexthop("gateway", 9, 0))
    assert gw_of(fib, "1.2.3.4") == 9 and fib.lookup("1.2.3.5") == -1
    assert fib.lookup("1.2.3.3") == -1
    fib.insert(0, 0, fib.add_nexthop("gateway", 8, 0))
    assert gw_of(fib, "1.2.3.4") == 9 and gw_of(fib, "1.2.3.5") == 8
    # the same prefix again replaces its next hop
    fib.insert(0, 0, fib.add_nexthop("gateway", 10, 0))
    assert gw_of(fib, "1.2.3.5") == 10 and gw_of(fib, "1.2.3.4") == 9
    # next hops are shared
    assert fib.add_nexthop("gateway", 8, 0) == fib.add_nexthop("gateway", 8, 0)
    assert fib.add_nexthop("gateway", 8, 1) != fib.add_nexthop("gateway", 8, 0)
    with pytest.raises(ValueError):
        fib.insert(A("1.2.3.4"), 24, 0)         # host bits
    with pytest.raises(ValueError):
        fib.insert(0, 33, 0)
    with pytest.raises(ValueError):
        fib.insert(0, 8, 1000)                  # no such next hop


ANCHORS = [A("10.1.2.3"), A("10.1.3.200"), A("192.168.255.1"), A("0.0.0.0"), A("255.255.255.255")]


@st.composite
def near_address(draw):
    """Addresses that share long prefixes with each other, so routes overlap."""
    base = draw(st.sampled_from(ANCHORS))
    keep = draw(st.integers(0, 32))             # leading bits taken from the anchor
    low = draw(st.integers(0, (1 << (32 - keep)) - 1)) if keep < 32 else 0
    return (base & mask(keep)) | low


@st.composite
def route_sets(draw):
    prefixes = draw(st.lists(st.tuples(near_address(), st.integers(0, 32)), max_size=40))
    routes = {}
    for i, (addr, length) in enumerate(prefixes):
        routes[(addr & mask(length), length)] = i + 1
    return routes


@pytest.mark.timeout(90)
@SETTINGS
@given(routes=route_sets(), probes=st.lists(near_address(), min_size=1, max_size=40),
       seed=st.integers(0, 1000))
def test_fib_matches_brute_force(routes, probes, seed):
    keys = list(routes)
    shuffled = random.Random(seed).sample(keys, len(keys))
    probes = probes + [net for net, _ in keys] + [net | (~mask(l) & 0xFFFFFFFF) for net, l in keys]
    want = [brute_lpm(routes, a) for a in probes]
    for order in (keys, shuffled):
        fib = fib_of(routes, order)
        assert [gw_of(fib, a) for a in probes] == want
        # the vector lookup (GIL released) agrees with the scalar one
        out = array("q", [0]) * len(probes)
        fib.lookup_many(array("I", probes), out)
        assert [None if i < 0 else fib.nexthop(i)[1] for i in out] == want


@pytest.mark.timeout(60)
def test_routes_text_syntax_and_errors():
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    text = (b"# a comment line\n\n"
            b"172.16.0.0/12,via=10.0.1.9,dev=a\n"
            b"  172.17.0.0/16 via 10.0.2.9   # gateway decides the interface\n"
            b"172.18.0.0/16\tdev b\r\n"
            b"1.2.3.4,via=10.0.1.7\n"
            b"0.0.0.0/0 dev=a via=10.0.2.254")       # no newline at the end
    assert load_routes(fib, text, ["a", "b"]) == 5
    assert fib.nexthop(fib.lookup("172.16.9.9")) == ("gateway", A("10.0.1.9"), 0)
    assert fib.nexthop(fib.lookup("172.17.9.9")) == ("gateway", A("10.0.2.9"), 1)
    assert fib.nexthop(fib.lookup("172.18.9.9")) == ("connected", 0, 1)
    assert fib.nexthop(fib.lookup("1.2.3.4")) == ("gateway", A("10.0.1.7"), 0)
    assert fib.nexthop(fib.lookup("1.2.3.5")) == ("gateway", A("10.0.2.254"), 0)
    bad = [(b"10.0.0.0/33,dev=a", "prefix"), (b"10.0.0.1/8,dev=a", "host bits"),
           (b"10.0.0.0/8,via=10.0.0.256", "gateway"), (b"10.0.0.0/8,dev=zz", "unknown interface"),
           (b"10.0.0.0/8,gw=1.1.1.1", "unexpected word"), (b"10.0.0.0/8", "needs via"),
           (b"10.0.0.0/8,via=99.9.9.9", "no connected subnet"), (b"10.0.0.0/8,dev=a,dev=b", "twice"),
           (b"1.2.3/8,dev=a", "prefix"), (b"10.0.0.0/8,via", "gateway"), (b"x", "prefix")]
    for line, words in bad:
        with pytest.raises(RouteError) as e:
            load_routes(fib, b"# ok\n10.9.0.0/16,dev=a\n" + line + b"\n", ["a", "b"])
        assert e.value.line == 3 and words in e.value.reason, (line, e.value)


def lpm_by_dict(by_len, addr):
    for length in range(32, -1, -1):
        v = by_len[length].get(addr & mask(length))
        if v is not None:
            return v
    return None


@pytest.fixture(scope="module")
def million_routes(tmp_path_factory):
    """A routes file of 1,000,000 distinct prefixes, mostly /24 as in a full
    Internet table, some shorter, some longer (second-level blocks)."""
    rnd = random.Random(2024)
    lengths = [24] * 55 + [23] * 8 + [22] * 10 + [21] * 4 + [20] * 4 + [19] * 2 + [18] * 2 \
        + [17] * 1 + [16] * 3 + [12] * 1 + [25] * 2 + [26] * 2 + [28] * 2 + [30] * 2 + [32] * 2
    by_len = [dict() for _ in range(33)]
    lines = []
    gws = ["10.0.1.%d" % i for i in range(2, 10)] + ["10.0.2.%d" % i for i in range(2, 10)]
    while len(lines) < 1_000_000:
        length = rnd.choice(lengths)
        net = rnd.getrandbits(32) & mask(length)
        if net in by_len[length]:
            continue
        gw = gws[len(lines) % len(gws)]
        by_len[length][net] = A(gw)
        lines.append("%s/%d,via=%s\n" % (ipaddress.IPv4Address(net), length, gw))
    path = tmp_path_factory.mktemp("routes") / "routes1m.txt"
    path.write_text("".join(lines))
    return str(path), by_len


@pytest.mark.timeout(90)
def test_million_routes_load_time(million_routes):
    path, by_len = million_routes
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    start = time.monotonic()
    with open(path, "rb") as f:
        n = load_routes(fib, f.read(), ["a", "b"])
    seconds = time.monotonic() - start
    print("\n1,000,000-route file: loaded in %.3f s (%d second-level blocks, %d next hops)"
          % (seconds, fib.blocks, fib.nnh))
    assert n == 1_000_000
    assert seconds < 60
    rnd = random.Random(5)
    by_len[24][A("10.0.1.0")] = "connected a"
    by_len[24][A("10.0.2.0")] = "connected b"
    probes = [rnd.getrandbits(32) for _ in range(20000)]
    for a in probes:
        want = lpm_by_dict(by_len, a)
        i = fib.lookup(a)
        got = None if i < 0 else fib.nexthop(i)
        if isinstance(want, str):
            assert got == ("connected", 0, 0 if want.endswith("a") else 1)
        else:
            assert (got[1] if got else None) == want, ipaddress.IPv4Address(a)
        assert want is None or got[0] != "connected" or isinstance(want, str)


# ----------------------------------------------------- the nodes, no rings

MAC_A, MAC_B = "02:00:00:00:01:01", "02:00:00:00:01:02"
HOST_A = "02:aa:00:00:00:05"             # a host on A's link, 10.0.1.5
N254, N253, N252 = "0a:00:00:00:00:fe", "0a:00:00:00:00:fd", "0a:00:00:00:00:fc"

SPECS = ["name=a,mac=%s,ip=10.0.1.1/24" % MAC_A,
         "name=b,mac=%s,ip=10.0.2.1/24" % MAC_B,
         "name=c,mode=ip,ip=10.0.3.1/24"]
ROUTES = ["172.16.0.0/12,via=10.0.2.253",
          "172.16.5.0/24,via=10.0.3.2",          # out the ip-mode interface
          "172.16.5.7/32,via=10.0.2.252,dev=b",
          "198.51.100.0/24,dev=b"]               # connected-style: ARP for the destination
NEIGHBORS = ["10.0.2.254,%s" % N254, "10.0.2.253,%s,dev=b" % N253,
             "10.0.2.252,%s,dev=b" % N252, "10.0.1.5,%s,dev=a" % HOST_A,
             "198.51.100.9,%s,dev=b" % N254]
# destination -> (output interface, next-hop MAC or None for the ip-mode one)
LPM = {"172.20.1.1": (1, N253), "172.16.5.1": (2, None), "172.16.5.7": (1, N252),
       "10.0.3.77": (2, None), "10.0.1.5": (0, HOST_A), "198.51.100.9": (1, N254)}


def mac_bytes(text):
    return bytes(int(x, 16) for x in text.split(":"))


@pytest.fixture
def node():
    """The router of the end-to-end tests, without rings: (router, fib)."""
    return make_node()


def make_node():
    from memifx.runtime.ip4 import parse_neighbor
    specs = [parse_spec(s) for s in SPECS]
    fib, _, _ = build_fib(specs, ROUTES, None)
    r = Router(fib)
    for i, s in enumerate(specs):
        r.add_interface(i, s.mac_bytes(), int(s.ip.ip), s.mode == "ip")
    for n in NEIGHBORS:
        r.add_neighbor(*parse_neighbor(n, specs))
    r.set_time(1000)
    return r, fib


def eth(dst=MAC_A, src=HOST_A):
    return Ether(dst=dst, src=src)


def udp(dst, ttl=64, src="10.0.1.5", **kw):
    return eth() / IP(src=src, dst=dst, ttl=ttl, **kw) / UDP(sport=1234, dport=5678) / (b"x" * 30)


def drops(r, ifindex=0):
    return dict(r.counters(ifindex)["rx"][0]["drops"])


def recomputed(pkt):
    """The same packet with scapy's own IP (and ICMP) checksums."""
    q = pkt.copy()
    del q[IP].chksum
    if ICMP in q:
        del q[ICMP].chksum
    return q.__class__(raw(q))


@pytest.mark.timeout(60)
@SETTINGS
@given(ttl=st.integers(2, 255), tos=st.integers(0, 255), ident=st.integers(0, 65535),
       nopts=st.integers(0, 10), dst=st.sampled_from(sorted(LPM)), size=st.integers(0, 1400),
       pad=st.integers(0, 20))
def test_forward_ttl_checksum_macs_lpm(node, ttl, tos, ident, nopts, dst, size, pad):
    r, _ = node
    frame = raw(eth() / IP(src="10.0.1.5", dst=dst, ttl=ttl, tos=tos, id=ident,
                           options=[IPOption_NOP()] * nopts) / UDP(sport=7, dport=9)
                / (bytes(range(256)) * 6)[:size]) + b"\0" * pad     # Ethernet padding
    out = r.process(0, [frame])
    want_if, want_mac = LPM[dst]
    assert len(out) == 1 and out[0][0] == want_if
    sent = Ether(frame[:len(frame) - pad])
    if want_mac is None:
        got = IP(out[0][1])                     # bare IP on the ip-mode interface
        assert raw(got) == raw(recomputed(got)) and len(raw(got)) == sent[IP].len
    else:
        got = Ether(out[0][1])
        assert (got.dst, got.src, got.type) == (want_mac, MAC_B if want_if == 1 else MAC_A, 0x0800)
        assert len(out[0][1]) == 14 + sent[IP].len           # the padding stays behind
        assert raw(got) == raw(recomputed(got))
        got = got[IP]
    assert got.ttl == ttl - 1 and got.chksum == recomputed(got).chksum
    expect = sent[IP].copy()
    expect.ttl -= 1
    del expect.chksum
    assert raw(got) == raw(IP(raw(expect)))     # only TTL and checksum changed


def ip_bytes(**kw):
    return raw(IP(src="10.0.1.5", **kw) / UDP() / b"payload!")


def with_byte(b, offset, value):
    b = bytearray(b)
    b[offset] = value
    return bytes(b)


def bad_checksum(b):
    b = bytearray(b)
    b[10] ^= 0x55
    return bytes(b)


def set_version(b, version):
    b = bytearray(b)
    b[0] = (version << 4) | (b[0] & 0xF)
    b[10:12] = b"\0\0"
    s = sum((b[i] << 8) | b[i + 1] for i in range(0, 20, 2))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    b[10:12] = (~s & 0xFFFF).to_bytes(2, "big")
    return bytes(b)


ETH_HDR = raw(eth())[:12]
# (reason, input interface, frame): one of each, every one a drop
DROP_CASES = [
    ("short", 0, ETH_HDR[:10]),
    ("short", 0, ETH_HDR + b"\x08\x00" + ip_bytes(dst="10.0.2.9")[:19]),
    ("short", 2, b""),
    ("wrong dst mac", 0, raw(eth(dst="02:00:00:00:09:09") / IP(dst="172.20.1.1") / UDP())),
    ("wrong dst mac", 0, raw(eth(dst="01:00:5e:00:00:01") / IP(dst="172.20.1.1") / UDP())),
    ("not ipv4", 0, raw(eth() / IPv6(dst="2001:db8::1") / UDP())),
    ("not ipv4", 0, ETH_HDR + b"\x88\xcc" + b"\0" * 46),
    ("not ipv4", 2, raw(IPv6(dst="2001:db8::1") / UDP())),
    ("bad version", 0, ETH_HDR + b"\x08\x00" + set_version(ip_bytes(dst="172.20.1.1"), 5)),
    ("bad version", 2, set_version(ip_bytes(dst="172.20.1.1"), 7)),
    ("bad header length", 0, ETH_HDR + b"\x08\x00" + with_byte(ip_bytes(dst="172.20.1.1"), 0, 0x44)),
    ("bad header length", 2, with_byte(ip_bytes(dst="172.20.1.1"), 0, 0x4F)),
    ("bad length", 0, ETH_HDR + b"\x08\x00" + raw(IP(dst="172.20.1.1", len=200) / UDP())),
    ("bad length", 2, raw(IP(dst="172.20.1.1", len=19) / UDP())),
    ("bad checksum", 0, ETH_HDR + b"\x08\x00" + bad_checksum(ip_bytes(dst="172.20.1.1"))),
    ("bad checksum", 2, bad_checksum(ip_bytes(dst="10.0.1.5"))),
    ("ttl expired", 0, raw(udp("172.20.1.1", ttl=1))),
    ("ttl expired", 0, raw(udp("172.20.1.1", ttl=0))),
    ("no route", 0, raw(udp("8.8.8.8"))),
    ("arp unresolved", 0, raw(udp("10.0.2.77"))),
    ("bad arp", 0, with_byte(raw(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, pdst="10.0.1.1")), 19, 5)),
    ("bad arp", 0, raw(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=3, pdst="10.0.1.1"))),
    ("arp not for us", 0, raw(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, psrc="10.0.1.5",
                                                                  hwsrc=HOST_A, pdst="10.0.1.99"))),
    ("bad icmp checksum", 0, raw(eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(chksum=0x1234))),
]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("reason, ifindex, frame", DROP_CASES,
                         ids=["%s-%s" % (c[0], c[1]) for c in DROP_CASES])
def test_every_drop_reason(node, reason, ifindex, frame):
    r, _ = node
    before = drops(r, ifindex)
    out = r.process(ifindex, [frame])
    after = drops(r, ifindex)
    changed = {k: after[k] - before[k] for k in after if after[k] != before[k]}
    assert changed == {reason: 1}
    if reason == "ttl expired":
        assert [o for o, _ in out] == [ifindex]         # ICMP time exceeded back
    elif reason == "arp unresolved":
        assert [o for o, _ in out] == [1]               # an ARP request out b
    else:
        assert out == []


@pytest.mark.timeout(60)
def test_arp_queue_full_and_no_route_then_default(node):
    r, fib = node
    replies = [raw(eth() / ARP(op=2, psrc="10.0.1.%d" % (i % 250 + 2), hwsrc=HOST_A,
                               pdst="10.0.1.1", hwdst=MAC_A)) for i in range(256)]
    assert r.process(0, replies) == []
    assert r.process(0, replies[:3]) == []
    assert drops(r)["arp queue full"] == 3
    assert len(r.take_arp()) == 256 and r.take_arp() == []
    # /0 added while the router runs: what had no route now goes to the default
    assert r.process(0, [raw(udp("8.8.8.8"))]) == []
    fib.add_route("0.0.0.0/0", "gateway", gw=A("10.0.2.254"), ifindex=1)
    out = r.process(0, [raw(udp("8.8.8.8")), raw(udp("172.20.1.1"))])
    assert [(o, Ether(b).dst) for o, b in out] == [(1, N254), (1, N253)]
    assert drops(r)["no route"] == 1


@pytest.mark.timeout(60)
def test_local_echo_arp_reply_and_learning(node):
    r, _ = node
    # ICMP echo to our address on the receiving interface, and to another one of ours
    for dst in ("10.0.1.1", "10.0.2.1"):
        req = eth() / IP(src="10.0.1.5", dst=dst, ttl=1, id=77) / ICMP(id=9, seq=3) / b"ping data"
        (o, b), = r.process(0, [raw(req)])
        rep = Ether(b)
        assert o == 0 and (rep.dst, rep.src) == (HOST_A, MAC_A)
        assert (rep[IP].src, rep[IP].dst, rep[ICMP].type, rep[ICMP].id, rep[ICMP].seq) == \
            (dst, "10.0.1.5", 0, 9, 3)
        assert bytes(rep[ICMP].payload) == b"ping data"
        assert raw(rep) == raw(recomputed(rep))
    # other traffic to us, and to a subnet broadcast, is counted, not answered
    assert r.process(0, [raw(udp("10.0.1.1")), raw(udp("10.0.2.255")),
                         raw(eth(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.1.5", dst="255.255.255.255") / UDP())]) == []
    c = r.counters(0)["rx"][0]
    assert c["echo replies"] == 2 and c["local"] == 3
    # ARP request for our address: answered in the data path
    req = eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=HOST_A, psrc="10.0.1.5", pdst="10.0.1.1")
    (o, b), = r.process(0, [raw(req)])
    rep = Ether(b)
    assert o == 0 and (rep.dst, rep.src, rep.type) == (HOST_A, MAC_A, 0x0806)
    assert (rep[ARP].op, rep[ARP].hwsrc, rep[ARP].psrc, rep[ARP].hwdst, rep[ARP].pdst) == \
        (2, MAC_A, "10.0.1.1", HOST_A, "10.0.1.5")
    # an ARP reply goes to the control plane; once learned, traffic flows
    assert r.process(0, [raw(udp("10.0.2.77"))])[0][0] == 1     # an ARP request out b
    rep = Ether(dst=MAC_B, src="0a:00:00:00:00:77") / ARP(op=2, hwsrc="0a:00:00:00:00:77",
                                                         psrc="10.0.2.77", pdst="10.0.2.1", hwdst=MAC_B)
    assert r.process(1, [raw(rep)]) == []
    learned = r.take_arp()
    assert learned == [(1, A("10.0.2.77"), mac_bytes("0a:00:00:00:00:77"))]
    r.add_neighbor(*learned[0])
    (o, b), = r.process(0, [raw(udp("10.0.2.77"))])
    assert o == 1 and Ether(b).dst == "0a:00:00:00:00:77"
    assert r.remove_neighbor(1, A("10.0.2.77")) and not r.remove_neighbor(1, A("10.0.2.77"))
    assert r.neighbor(1, A("10.0.2.77")) is None and r.neighbor(1, A("10.0.2.253")) == mac_bytes(N253)
    c = r.counters(1)["rx"][0]
    assert c["arp to control plane"] == 1


@pytest.mark.timeout(60)
def test_arp_request_rate_limited(node):
    r, _ = node
    out = r.process(0, [raw(udp("10.0.2.77")), raw(udp("10.0.2.77")), raw(udp("10.0.2.78"))])
    reqs = [Ether(b) for o, b in out]
    assert [(q.dst, q.src, q[ARP].op, q[ARP].hwsrc, q[ARP].psrc, q[ARP].pdst) for q in reqs] == [
        ("ff:ff:ff:ff:ff:ff", MAC_B, 1, MAC_B, "10.0.2.1", "10.0.2.77"),
        ("ff:ff:ff:ff:ff:ff", MAC_B, 1, MAC_B, "10.0.2.1", "10.0.2.78")]
    assert r.process(0, [raw(udp("10.0.2.77"))]) == []          # asked less than 1 s ago
    r.set_time(2100)
    assert len(r.process(0, [raw(udp("10.0.2.77"))])) == 1
    assert drops(r)["arp unresolved"] == 5
    assert r.counters(0)["rx"][0]["arp requests sent"] == 3
    # a flood of distinct unresolved next hops is capped by the global budget
    flood = [raw(udp("198.51.100.%d" % i)) for i in range(10, 250)]
    assert len(r.process(0, flood)) == 99         # what is left of the budget of 100
    r.set_time(2110)
    assert len(r.process(0, flood)) == 10


@pytest.mark.timeout(60)
def test_time_exceeded(node):
    r, _ = node
    sent = udp("172.20.1.1", ttl=1, id=4242)
    (o, b), = r.process(0, [raw(sent)])
    te = Ether(b)
    assert o == 0 and (te.dst, te.src) == (HOST_A, MAC_A)
    assert (te[IP].src, te[IP].dst, te[ICMP].type, te[ICMP].code) == ("10.0.1.1", "10.0.1.5", 11, 0)
    assert raw(te) == raw(recomputed(te))
    assert te[IPerror].id == 4242 and raw(te[ICMP].payload) == raw(sent[IP])[:28]
    # never about an ICMP error, a non-first fragment, or a broadcast source
    quiet = [eth() / IP(src="10.0.1.5", dst="172.20.1.1", ttl=1) / ICMP(type=3, code=1),
             eth() / IP(src="10.0.1.5", dst="172.20.1.1", ttl=1, frag=10) / (b"x" * 20),
             eth() / IP(src="255.255.255.255", dst="172.20.1.1", ttl=1) / UDP()]
    assert r.process(0, [raw(p) for p in quiet]) == []
    # on an ip-mode interface the error is a bare IP packet
    (o, b), = r.process(2, [raw(IP(src="10.0.3.2", dst="172.20.1.1", ttl=1) / UDP())])
    assert o == 2 and IP(b)[ICMP].type == 11 and IP(b).src == "10.0.3.1"
    assert drops(r)["ttl expired"] == 4 and drops(r, 2)["ttl expired"] == 1


@pytest.mark.timeout(60)
def test_checksums_over_odd_lengths(node):
    """The Internet checksum (memifx/inet.pxd) over an odd number of bytes:
    echo requests with payloads of every length 0-9 answered with a right
    checksum, one with a wrong checksum dropped, and time exceeded about
    short packets (the ICMP error then quotes all of them, 8 + 25 or 8 + 26
    bytes) right as scapy computes it."""
    r, _ = node
    for n in range(10):
        req = eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(id=3, seq=n) / bytes(range(1, n + 1))
        (o, b), = r.process(0, [raw(req)])
        rep = Ether(b)
        assert o == 0 and rep[ICMP].type == 0 and bytes(rep[ICMP].payload) == bytes(range(1, n + 1))
        assert raw(rep) == raw(recomputed(rep))
    bad = eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(id=3, seq=99, chksum=0x4321) / b"odd"
    assert r.process(0, [raw(bad)]) == []
    assert drops(r)["bad icmp checksum"] == 1
    for n in (5, 6):
        sent = eth() / IP(src="10.0.1.5", dst="172.20.1.1", ttl=1, proto=253) / bytes(range(7, 7 + n))
        (o, b), = r.process(0, [raw(sent)])
        te = Ether(b)
        assert te[ICMP].type == 11 and raw(te[ICMP].payload) == raw(sent[IP])
        assert raw(te) == raw(recomputed(te))


@pytest.mark.timeout(60)
def test_ip_mode_interface(node):
    r, _ = node
    # bare IP in on c, out on a with an Ethernet header from the neighbor table
    (o, b), = r.process(2, [raw(IP(src="10.0.3.2", dst="10.0.1.5", ttl=9) / UDP() / b"hi")])
    f = Ether(b)
    assert o == 0 and (f.dst, f.src, f[IP].ttl) == (HOST_A, MAC_A, 8)
    assert raw(f) == raw(recomputed(f))
    # echo on the ip-mode interface comes back bare
    (o, b), = r.process(2, [raw(IP(src="10.0.3.2", dst="10.0.3.1") / ICMP(seq=5))])
    assert o == 2 and IP(b)[ICMP].type == 0 and IP(b).dst == "10.0.3.2"
    c = r.counters(2)["rx"][0]
    assert (c["forwarded"], c["echo replies"]) == (1, 1)


@pytest.mark.timeout(60)
def test_every_packet_accounted_for(node):
    r, _ = node
    frames = [f for _, i, f in DROP_CASES if i == 0] + [raw(udp(d)) for d in LPM] + [
        raw(eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP()), raw(udp("10.0.1.1")),
        raw(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=HOST_A, psrc="10.0.1.5", pdst="10.0.1.1")),
        raw(eth() / ARP(op=2, hwsrc=HOST_A, psrc="10.0.1.5", pdst="10.0.1.1"))]
    r.process(0, frames)
    c = r.counters(0)["rx"][0]
    outcomes = c["forwarded"] + c["echo replies"] + c["arp replies"] + c["arp to control plane"] \
        + c["local"] + sum(c["drops"].values())
    assert c["packets"] == len(frames) == outcomes
    assert set(c["drops"]) == set(DROP_REASONS)


# Usual frames (ip4-fast takes them in one pass) and every other kind (the
# general graph decides them), to the same output interfaces.
# 198.51.100.9 and .10: one connected route, two neighbors (N254, N_10).
N_10 = "0a:00:00:00:00:10"
USUAL = [raw(udp(d, ttl=t)) for d in ("172.20.1.1", "172.16.5.7", "198.51.100.9",
                                      "198.51.100.10") for t in (2, 64)] + [
    raw(udp("198.51.100.9")), raw(udp("172.16.5.1")), raw(udp("10.0.1.5"))]
UNUSUAL = [f for _, i, f in DROP_CASES if i == 0] + [
    raw(udp("172.20.1.1", options=[IPOption_NOP()] * 4)),          # options: forwarded
    raw(eth(dst="ff:ff:ff:ff:ff:ff") / IP(src="10.0.1.5", dst="172.20.1.1") / UDP()),
    raw(eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(seq=3)),
    raw(eth() / IP(src="10.0.1.5", dst="10.0.1.255") / UDP()),
    raw(eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=HOST_A, psrc="10.0.1.5", pdst="10.0.1.1"))]


@pytest.mark.timeout(120)
@SETTINGS
@given(order=st.permutations(USUAL + UNUSUAL))
def test_burst_outcome_is_each_frames_alone(order):
    """A burst mixing usual and unusual frames: each frame leaves (or is
    counted) exactly as when it comes alone, and everything leaves in the
    order it came (whether ip4-fast or the general graph took it)."""
    burst, _ = make_node()
    alone, _ = make_node()
    for r in (burst, alone):
        r.add_neighbor(1, A("198.51.100.10"), mac_bytes(N_10))
    got = burst.process(0, order)
    want = [out for f in order for out in alone.process(0, [f])]
    assert got == want
    assert burst.counters(0) == alone.counters(0)
    assert burst.counters(0)["rx"][0]["forwarded"] >= len(USUAL)


# ------------------------------------------------- the command, end to end

def router_args(sock, extra=(), json_out=True, spec_extra=""):
    args = MEMIFX + ["ip4-forward"]
    for i, s in enumerate(SPECS):
        args += ["--interface", "socket=%s,id=%d,role=master,rx-mode=interrupt,%s%s"
                 % (sock, i, s, spec_extra)]
    for r in ROUTES:
        args += ["--route", r]
    for n in NEIGHBORS:
        args += ["--neighbor", n]
    return args + list(extra) + (["--json"] if json_out else [])


# per link: the router's address and MAC, and a host of ours there
PROBES = [("10.0.1.1", MAC_A, "10.0.1.5"), ("10.0.2.1", MAC_B, "10.0.2.99"),
          ("10.0.3.1", None, "10.0.3.2")]


def slaves(sock, n=3, **kw):
    ifs = [memifx.Interface(socket=sock, id=0, name="host-a", **kw),
           memifx.Interface(socket=sock, id=1, name="host-b", **kw),
           memifx.Interface(socket=sock, id=2, name="host-c", mode="ip", **kw)][:n]
    for i in ifs:
        i.connect()
    for i in ifs:
        assert i.wait_connected(10)
    wait_router_up(ifs)
    return ifs


def wait_router_up(ifs):
    """A slave sees the link up a moment before the router does, and what the
    router routes to a link it still thinks down is dropped ("tx link down").
    So ping the router on every link until it answers there, then drain."""
    for intf, (addr, mac, host) in zip(ifs, PROBES):
        ping = IP(src=host, dst=addr) / ICMP(id=0x77)
        frame = raw(ping) if mac is None else raw(Ether(dst=mac, src=HOST_A) / ping)
        assert wait_for(lambda: intf.tx_burst([frame]) and collect(intf, 1, 0.5), 10, 0.01)
    time.sleep(0.1)
    for intf in ifs:
        while intf.rx_burst():
            pass


def collect(intf, n, timeout=5.0, queue=0):
    got = []
    end = time.monotonic() + timeout
    while len(got) < n and time.monotonic() < end:
        b = intf.rx_burst(queue)
        got += b
        if not b:
            time.sleep(0.002)
    return got


def close_all(ifs):
    for i in ifs:
        i.close()


def read_all(p, tokens, timeout):
    """Read lines until every token was seen, in any order."""
    left = set(tokens)
    end = time.monotonic() + timeout
    while left:
        line = read_until(p, "", max(0.1, end - time.monotonic()))
        left = {t for t in left if t not in line}


def stop_json(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0, out
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.timeout(90)
def test_e2e_forwarding_lpm_and_drops(procs, sock, tmp_path):
    routes_file = tmp_path / "routes.txt"
    routes_file.write_text("# from a file\n203.0.113.0/24 via 10.0.2.254\n"
                           "203.0.113.128/25,dev=c\n")
    # max-frame above the largest IPv4 packet: the router's own "too long" is tested
    p = procs.start(router_args(sock, ["--routes-file", str(routes_file)],
                                spec_extra=",max-frame=100000"))
    assert wait_for(lambda: os.path.exists(sock), 15)
    a, b, c = ifs = slaves(sock, max_frame=100000)
    try:
        lpm = dict(LPM, **{"203.0.113.1": (1, N254), "203.0.113.200": (2, None)})
        frames, want = [], {0: [], 1: [], 2: []}
        for k in range(300):
            dst = sorted(lpm)[k % len(lpm)]
            pkt = eth() / IP(src="10.0.1.5", dst=dst, ttl=2 + k % 250, id=k) / UDP() / (b"%05d" % k)
            frames.append(raw(pkt))
            want[lpm[dst][0]].append((k, dst))
        assert a.tx_burst(frames[:150]) == 150
        assert a.tx_burst(frames[150:]) == 150
        got = {1: collect(b, len(want[1])), 2: collect(c, len(want[2])), 0: collect(a, len(want[0]))}
        for o, frames_out in got.items():
            assert len(frames_out) == len(want[o])
            for raw_out, (k, dst) in zip(frames_out, want[o]):      # in order
                pkt = IP(raw_out) if o == 2 else Ether(raw_out)
                if o != 2:
                    assert (pkt.dst, pkt.src) == (lpm[dst][1], [MAC_A, MAC_B][o])
                assert (pkt[IP].id, pkt[IP].dst, pkt[IP].ttl) == (k, dst, 1 + k % 250)
                assert raw(pkt) == raw(recomputed(pkt))
        # bare IP from c out on b
        assert c.tx_burst([raw(IP(src="10.0.3.2", dst="172.20.1.1") / UDP())]) == 1
        (f,) = collect(b, 1)
        assert Ether(f).dst == N253 and Ether(f)[IP].ttl == 63
        # one of each drop
        for reason, i, frame in DROP_CASES:
            assert ifs[i].tx_burst([frame]) == 1
        assert a.tx_burst([raw(udp("172.20.1.1")) + b"\0" * 70000]) == 1     # chained, no IPv4 fits
        # replies the drops provoke: time exceeded x2 back to a, an ARP request out b
        assert len(collect(a, 2)) == 2
        (q,) = collect(b, 1)
        assert Ether(q)[ARP].pdst == "10.0.2.77"
        time.sleep(0.3)
        assert not a.rx_burst() and not b.rx_burst() and not c.rx_burst()
    finally:
        close_all(ifs)
    result = stop_json(p)
    expected = dict({r: 0 for r in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0))
    for reason, _, _ in DROP_CASES:
        expected[reason] += 1
    expected["too long"] += 1
    assert result["drops"] == expected
    ia, ib = result["interfaces"]["a"]["rx"][0], result["interfaces"]["b"]["rx"][0]
    assert ia["forwarded"] == 300 and ia["icmp errors sent"] == 2
    assert result["interfaces"]["c"]["rx"][0]["forwarded"] == 1
    assert result["interfaces"]["b"]["tx"][0]["packets"] == len(want[1]) + 2 + ib["echo replies"]
    assert ia["packets"] == 300 + 1 + sum(1 for _, i, _ in DROP_CASES if i == 0) + ia["echo replies"]
    assert result["interfaces"]["a"]["ring"]["rx"][0]["packets"] == ia["packets"]
    assert result["routes"] > 0 and not os.path.exists(sock)


@pytest.mark.timeout(90)
def test_e2e_arp_icmp_learning_and_link_events(procs, sock):
    p = procs.start(router_args(sock, ["--stats-interval", "0.5", "--workers", "0"],
                                json_out=False))
    read_until(p, "ip4-forward: 3 interfaces", 15)
    a, b, c = ifs = slaves(sock)
    try:
        read_all(p, ["a: link up", "b: link up", "c: link up"], 10)
        # ARP request for the router's address on a
        req = eth(dst="ff:ff:ff:ff:ff:ff") / ARP(op=1, hwsrc=HOST_A, psrc="10.0.1.5", pdst="10.0.1.1")
        a.tx_burst([raw(req)])
        (rep,) = collect(a, 1)
        assert Ether(rep)[ARP].op == 2 and Ether(rep)[ARP].hwsrc == MAC_A
        # ICMP echo
        a.tx_burst([raw(eth() / IP(src="10.0.1.5", dst="10.0.1.1") / ICMP(id=1, seq=2) / b"abc")])
        (rep,) = collect(a, 1)
        assert Ether(rep)[ICMP].type == 0 and Ether(rep)[IP].src == "10.0.1.1"
        assert raw(Ether(rep)) == raw(recomputed(Ether(rep)))
        # unresolved next hop: an ARP request out b, nothing forwarded
        a.tx_burst([raw(udp("10.0.2.77", id=1))])
        (q,) = collect(b, 1)
        q = Ether(q)
        assert (q.dst, q[ARP].op, q[ARP].pdst, q[ARP].psrc) == \
            ("ff:ff:ff:ff:ff:ff", 1, "10.0.2.77", "10.0.2.1")
        # b's host answers; the control plane learns it and traffic flows
        b.tx_burst([raw(Ether(dst=MAC_B, src="0a:00:00:00:00:77") /
                        ARP(op=2, hwsrc="0a:00:00:00:00:77", psrc="10.0.2.77",
                            hwdst=MAC_B, pdst="10.0.2.1"))])
        got = []

        def flows():
            a.tx_burst([raw(udp("10.0.2.77", id=2))])
            got.extend(f for f in collect(b, 1, 0.2) if Ether(f).type == 0x0800)
            return got
        assert wait_for(flows, 10, 0.05)
        assert Ether(got[0]).dst == "0a:00:00:00:00:77" and Ether(got[0])[IP].id == 2
        # TTL 1: ICMP time exceeded back
        a.tx_burst([raw(udp("172.20.1.1", ttl=1))])
        (te,) = collect(a, 1)
        assert Ether(te)[ICMP].type == 11
        read_until(p, "a rx", 5)                                 # a stats line
        b.close()
        read_until(p, "b: link down", 10)
    finally:
        close_all(ifs)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=20)
    assert p.returncode == 0
    assert "a: rx" in out and "arp unresolved" in out and "ttl expired" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, words", [
    (["--interface", "socket=@x,ip=10.0.0.1/24"], ["name= is required"]),
    (["--interface", "socket=@x,name=a"], ["ip=A.B.C.D/LEN is required"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24,mode=punt-inject"], ["mode", "ethernet|ip"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24",
      "--interface", "socket=@y,name=a,ip=10.0.1.1/24"], ["name=a", "two interfaces"]),
    ([], ["--interface"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--route", "10.1.0.0/16,via=10.0.0.2,dev=b"],
     ["--route", "unknown interface"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--route", "10.1.0.1/16,dev=a"],
     ["--route", "host bits"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--route", "10.1.0.0/16,via=9.9.9.9"],
     ["--route", "connected subnet"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--route", "10.1.0.0/16"],
     ["--route", "via=GW or dev=NAME"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--neighbor", "10.0.0.9,zz:00:00:00:00:00"],
     ["--neighbor", "MAC"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--neighbor", "10.9.0.9,02:00:00:00:00:01"],
     ["--neighbor", "subnet"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--neighbor", "10.0.0.9,02:00:00:00:00:01,dev=q"],
     ["--neighbor", "no interface named"]),
    (["--interface", "socket=@x,name=a,ip=10.0.0.1/24", "--routes-file", "/nonexistent/routes"],
     ["--routes-file", "No such file"]),
    (["--interface", "socket=@x,name=a,ip=300.0.0.1/24"], ["ip=300.0.0.1/24"]),
])
def test_cli_bad_arguments_exit_2(args, words):
    r = CliRunner().invoke(main, ["ip4-forward"] + args)
    assert r.exit_code == 2, r.output
    error_lines = [line for line in r.output.splitlines() if line.startswith("Error")]
    assert len(error_lines) == 1
    for w in words:
        assert w in error_lines[0], r.output


@pytest.mark.timeout(60)
def test_cli_bad_routes_file_line(tmp_path):
    f = tmp_path / "r.txt"
    f.write_text("10.1.0.0/16,dev=a\n10.2.0.0/16,via=10.0.0.2\n10.3.0.0/16,dev=zz\n")
    r = CliRunner().invoke(main, ["ip4-forward", "--interface", "socket=@x,name=a,ip=10.0.0.1/24",
                                  "--routes-file", str(f)])
    assert r.exit_code == 2 and "line 3" in r.output and "unknown interface" in r.output


@pytest.mark.timeout(90)
def test_e2e_queues_and_link_down(procs, sock):
    """rx queue i leaves on tx queue i; counters per queue; an interface that is
    down counts what was routed to it as "tx link down"."""
    args = MEMIFX + ["ip4-forward", "--json"]
    for i, s in enumerate(SPECS):
        args += ["--interface", "socket=%s,id=%d,role=master,rx-mode=interrupt,queues=2,%s"
                 % (sock, i, s)]
    args += ["--route", ROUTES[0], "--route", ROUTES[1], "--route", "0.0.0.0/0,via=10.0.2.254",
             "--neighbor", NEIGHBORS[0], "--neighbor", NEIGHBORS[1]]
    p = procs.start(args)
    assert wait_for(lambda: os.path.exists(sock), 15)
    a, b = ifs = slaves(sock, 2, rx_queues=2, tx_queues=2)      # c stays down
    try:
        cases = ((0, 7, "172.20.1.1", N253), (1, 11, "8.8.8.8", N254))   # /12, and /0
        for q, n, dst, _ in cases:
            assert a.tx_burst([raw(udp(dst, id=q * 100 + k)) for k in range(n)], queue=q) == n
        for q, n, dst, mac in cases:
            got = [Ether(f) for f in collect(b, n, queue=q)]
            assert [(f.dst, f[IP].dst, f[IP].id) for f in got] == [(mac, dst, q * 100 + k) for k in range(n)]
        assert a.tx_burst([raw(udp("172.16.5.1"))] * 3) == 3     # via c, which is down
        time.sleep(0.3)
    finally:
        close_all(ifs)
    result = stop_json(p)
    ra, rb = result["interfaces"]["a"], result["interfaces"]["b"]
    assert [q["forwarded"] for q in ra["rx"]] == [10, 11]
    assert [q["packets"] for q in rb["tx"]] == [7 + rb["rx"][0]["echo replies"], 11]
    assert result["interfaces"]["c"]["tx link down"] == 3
    assert result["drops"]["tx link down"] == 3
