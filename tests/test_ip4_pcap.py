"""ip4-forward, checked with the tools a user would use: frames built with
scapy, written to a pcap file, replayed by ``memifx gen --pcap`` into one
router interface; what the router forwards captured by ``memifx sink --pcap``
on the others, what it answers on the sending interface (ARP and ICMP echo
replies, ICMP time exceeded, frames routed back out) captured by
``gen --capture``; the captures read back with scapy and compared byte for
byte with what the router must make of each input (every expected frame
there, nothing else; frames of one kind in input order):

- forwarded: the same IP packet with TTL - 1 and a checksum equal to scapy's
  recomputation (edge cases: a checksum that becomes 0x0000, one that was
  0x0000), Ethernet padding left behind, dst MAC = the next hop's, src MAC =
  the output interface's, output interface by longest-prefix match over
  overlapping routes, /0 and /32;
- every drop reason reachable from the wire, and nothing of it on any capture;
  the counts by reason from the router's ``--json`` ("arp queue full" needs
  more than 256 ARP replies in one pass, which depends on how gen's bursts
  meet the router's passes, and "no memory" cannot be provoked: both are
  covered on the nodes in test_ip4.py and must be 0 here);
- ARP request for us -> ARP reply, ICMP echo -> echo reply, TTL expiry ->
  ICMP time exceeded, unresolved next hop -> one ARP request out the other
  interface, an ARP reply -> learned by the control plane;
- ip mode: bare IPv4 routed, IPv6 counted "not ipv4", no route counted.

Processes: the router (masters, rx-mode=interrupt: asleep when idle), one
sink per output interface (slaves, rx-mode=interrupt) and gen (slave; the
only one that spins, and only while it sends).
"""
import json
import os
import signal
import struct
import sys
from collections import Counter

import pytest
from scapy.all import (ARP, ICMP, IP, TCP, UDP, Ether, IPOption_NOP, IPOption_RR, IPv6,
                       ICMPv6EchoRequest, RawPcapReader, Raw, raw, wrpcap)

from memifx.ip4 import DROP_REASONS, TX_DROPS
from conftest import read_until, wait_for

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
BCAST = "ff:ff:ff:ff:ff:ff"

# ------------------------------------------------------- the ethernet setup

MAC = {"a": "02:00:00:00:01:01", "b": "02:00:00:00:01:02", "c": "02:00:00:00:01:03"}
ADDR = {"a": "10.0.1.1", "b": "10.0.2.1", "c": "10.0.3.1"}
HOST_A, HOST_A_IP = "02:aa:00:00:00:05", "10.0.1.5"      # gen's side of link a
NB = {"10.0.2.254": "0a:00:00:00:02:fe", "10.0.2.253": "0a:00:00:00:02:fd",
      "10.0.2.252": "0a:00:00:00:02:fc", "10.0.3.253": "0a:00:00:00:03:fd",
      "10.0.3.254": "0a:00:00:00:03:fe", "10.0.3.9": "0a:00:00:00:03:09",
      "203.0.113.9": "0a:00:00:00:71:09", HOST_A_IP: HOST_A}
NB_DEV = {"10.0.2.254": "b", "10.0.2.253": "b", "10.0.2.252": "b", "10.0.3.253": "c",
          "10.0.3.254": "c", "10.0.3.9": "c", "203.0.113.9": "c", HOST_A_IP: "a"}
ROUTES = ["0.0.0.0/0,via=10.0.2.254",
          "172.16.0.0/12,via=10.0.3.253",
          "172.16.5.0/24,via=10.0.2.253",
          "172.16.5.128/25,via=10.0.3.254",
          "172.16.5.200/32,via=10.0.2.252",
          "203.0.113.0/24,dev=c",                # connected style: the destination is the hop
          "192.0.2.0/24,via=%s" % HOST_A_IP]     # back out the interface it came in on
# destination -> (output interface, next hop) by longest-prefix match
LPM = {
    "8.8.8.8": ("b", "10.0.2.254"),              # /0
    "172.15.255.255": ("b", "10.0.2.254"),       # just below the /12: /0
    "172.32.0.0": ("b", "10.0.2.254"),           # just above the /12: /0
    "172.16.0.0": ("c", "10.0.3.253"),           # /12, first address
    "172.31.255.255": ("c", "10.0.3.253"),       # /12, last address
    "172.16.4.255": ("c", "10.0.3.253"),         # /12, just below the /24
    "172.16.6.0": ("c", "10.0.3.253"),           # /12, just above the /24
    "172.16.5.0": ("b", "10.0.2.253"),           # /24
    "172.16.5.127": ("b", "10.0.2.253"),         # /24, just below the /25
    "172.16.5.128": ("c", "10.0.3.254"),         # /25
    "172.16.5.199": ("c", "10.0.3.254"),         # /25, just below the /32
    "172.16.5.200": ("b", "10.0.2.252"),         # /32
    "172.16.5.201": ("c", "10.0.3.254"),         # /25, just above the /32
    "172.16.5.255": ("c", "10.0.3.254"),         # /25, last address
    "203.0.113.9": ("c", "203.0.113.9"),         # dev route, static neighbor
    "10.0.3.9": ("c", "10.0.3.9"),               # connected
    "10.0.2.253": ("b", "10.0.2.253"),           # connected, a router's address
    "192.0.2.77": ("a", HOST_A_IP),              # via the host that sent it
    HOST_A_IP: ("a", HOST_A_IP),                 # to the sender itself
}
# the destinations of the special cases below, by the same rules
LPM_MORE = {"172.16.5.1": ("b", "10.0.2.253"), "172.16.5.130": ("c", "10.0.3.254"),
            "172.16.0.1": ("c", "10.0.3.253"), "172.16.5.140": ("c", "10.0.3.254"),
            "172.16.5.10": ("b", "10.0.2.253"), "172.16.5.20": ("b", "10.0.2.253"),
            "8.8.4.4": ("b", "10.0.2.254")}


def ip_sum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def ident_for_checksum(pkt, zero_after_forwarding):
    """An IP id that makes the header checksum 0x0000: of the packet as sent,
    or of the packet after the router decremented its TTL."""
    q = pkt[IP].copy()
    q.id = 0
    q.chksum = 0
    if zero_after_forwarding:
        q.ttl -= 1
    h = raw(q)[:q.ihl * 4] if q.ihl else raw(q)[:20]
    s = ip_sum(h)
    # the other words must add up to 0xFFFF (ones' complement) with the id in
    return 0xFFFF - s if s != 0xFFFF else 0


class Plan:
    """The frames gen replays, in order, and what must come out where.

    Within one burst the router's nodes run one after the other (arp-input,
    ip4-local, ip4-rewrite, ip4-icmp-error, arp-request), each appending to
    the transmit vector, so frames of different kinds can leave in another
    order than they came in, depending on how the frames fell into bursts.
    Frames of one kind keep their order: that is checked."""

    def __init__(self, names):
        self.frames = []
        self.out = {n: [] for n in names}       # per output interface: (kind, frame, what)
        self.drops = Counter()
        self.forwarded = 0

    def send(self, frame, drop=None, **outs):
        """``outs``: interface name -> (kind, expected frame)."""
        frame = raw(frame) if not isinstance(frame, bytes) else frame
        self.frames.append(frame)
        if drop:
            assert drop in DROP_REASONS, drop
            self.drops[drop] += 1
        for name, (kind, expected) in outs.items():
            self.out[name].append((kind, expected, "input #%d (%s -> %s)"
                                   % (len(self.frames) - 1, drop or "local", kind)))
        return frame

    def kinds(self):
        return Counter(k for outs in self.out.values() for k, _, _ in outs)

    def forward(self, frame, out, hop_mac, out_mac, pad=b""):
        """``frame`` (scapy, Ethernet or bare IP) must leave on ``out``: TTL - 1,
        checksum recomputed, new MACs unless ``hop_mac`` is None (ip mode)."""
        frame = frame.__class__(raw(frame))     # every field as on the wire
        ip = frame[IP]
        expect = IP(raw(ip))
        expect.ttl -= 1
        del expect.chksum
        expect = raw(IP(raw(expect)))
        assert len(expect) == ip.len
        if hop_mac is not None:
            expect = raw(Ether(dst=hop_mac, src=out_mac, type=0x0800)) + expect
        self.send(raw(frame) + pad)
        self.out[out].append(("forwarded", expect, "input #%d (forwarded to %s)"
                              % (len(self.frames) - 1, ip.dst)))
        self.forwarded += 1


def eth(dst=None, src=HOST_A, **kw):
    return Ether(dst=dst or MAC["a"], src=src, **kw)


def udp(dst, ttl=64, src=HOST_A_IP, size=18, **kw):
    return IP(src=src, dst=dst, ttl=ttl, **kw) / UDP(sport=1234, dport=5678) / \
        (bytes(range(256)) * 40)[:size]


def patched(b, offset, value, fix_checksum=False):
    """Ethernet frame bytes with IP header byte ``offset`` replaced."""
    b = bytearray(b)
    b[14 + offset] = value
    if fix_checksum:
        b[24:26] = b"\0\0"
        ihl = (b[14] & 0xF) * 4 or 20
        b[24:26] = struct.pack("!H", ~ip_sum(bytes(b[14:14 + ihl])) & 0xFFFF)
    return bytes(b)


def echo_reply(request, out_mac, l2=True):
    """What the router answers to an echo request to one of its addresses."""
    ip = request[IP]
    rep = IP(raw(ip))
    rep.src, rep.dst, rep.ttl = ip.dst, ip.src, 64
    rep[ICMP].type = 0
    del rep.chksum
    del rep[ICMP].chksum
    rep = raw(IP(raw(rep)))
    return raw(Ether(dst=request.src, src=out_mac, type=0x0800)) + rep if l2 else rep


def time_exceeded(request, router_ip, out_mac, l2=True):
    """ICMP time exceeded about ``request`` (its IP header and 8 bytes)."""
    ip = raw(request[IP])
    quote = ip[:(ip[0] & 0xF) * 4 + 8]
    te = raw(IP(src=router_ip, dst=request[IP].src, ttl=64, id=0, tos=0, flags=0) /
             ICMP(type=11, code=0) / Raw(quote))
    return raw(Ether(dst=request.src, src=out_mac, type=0x0800)) + te if l2 else te


def arp_request_from(name, target):
    return raw(Ether(dst=BCAST, src=MAC[name], type=0x0806) /
               ARP(op=1, hwsrc=MAC[name], psrc=ADDR[name], hwdst="00:00:00:00:00:00",
                   pdst=target))


def ethernet_plan():
    p = Plan(["a", "b", "c"])
    hop = {dst: (out, NB[nh]) for dst, (out, nh) in dict(LPM, **LPM_MORE).items()}
    # ---- forwarded, one per LPM case, TTL/size/options/protocol varied
    for k, dst in enumerate(LPM):
        out, mac = hop[dst]
        ttl = [64, 2, 255, 128, 3][k % 5]
        pkt = eth() / udp(dst, ttl=ttl, id=1000 + k, tos=k * 4, size=k * 37 % 300)
        p.forward(pkt, out, mac, MAC[out])
    # IP options (IHL 6 and 15), TCP, a fragment, an echo request not for us,
    # Ethernet padding, an IPv4 frame to the broadcast MAC (accepted), jumbo
    # and chained frames (buffer size 2048), checksums that end or start 0x0000
    specials = [
        (eth() / IP(src=HOST_A_IP, dst="172.16.5.1", id=2001, options=[IPOption_NOP()] * 4) /
         UDP() / b"options", b""),
        (eth() / IP(src=HOST_A_IP, dst="8.8.8.8", id=2002,
                    options=[IPOption_RR(routers=["1.2.3.4"] * 9)]) / UDP() / b"rr", b""),
        (eth() / IP(src=HOST_A_IP, dst="172.16.5.130", id=2003) / TCP(sport=80, dport=443,
                                                                        flags="S"), b""),
        (eth() / IP(src=HOST_A_IP, dst="172.16.5.200", id=2004, flags="MF", frag=100) /
         Raw(b"f" * 64), b""),
        (eth() / IP(src=HOST_A_IP, dst="8.8.8.8", id=2005) / ICMP(id=5, seq=6) / b"ping",
         b""),
        (eth() / IP(src=HOST_A_IP, dst="172.16.0.1", id=2006) / UDP() / b"pad", b"\0" * 17),
        (eth(dst=BCAST) / IP(src=HOST_A_IP, dst="172.16.5.1", id=2007) / UDP() / b"bc", b""),
        (eth() / udp("172.16.5.140", id=2008, size=1472), b""),
        (eth() / udp("172.16.5.10", id=2009, size=3000), b""),
        (eth() / udp("8.8.4.4", id=2010, size=8972), b""),           # 9000-byte frame
    ]
    for zero_after in (True, False):
        pkt = eth() / udp("172.16.5.20", ttl=33, size=10)
        pkt[IP].id = ident_for_checksum(pkt, zero_after)
        pkt = Ether(raw(pkt))
        fwd = IP(raw(pkt[IP]))
        fwd.ttl -= 1
        del fwd.chksum
        assert (pkt[IP].chksum, IP(raw(fwd)).chksum).count(0) == 1
        assert (IP(raw(fwd)).chksum == 0) == zero_after
        specials.append((pkt, b""))
    for pkt, pad in specials:
        pkt = Ether(raw(pkt))
        out, mac = hop[pkt[IP].dst]
        p.forward(pkt, out, mac, MAC[out], pad)

    # ---- local: answered, counted, learned
    req = eth(dst=BCAST) / ARP(op=1, hwsrc=HOST_A, psrc=HOST_A_IP, pdst="10.0.1.1")
    p.send(req, a=("arp reply", raw(Ether(dst=HOST_A, src=MAC["a"], type=0x0806) /
                                    ARP(op=2, hwsrc=MAC["a"], psrc="10.0.1.1", hwdst=HOST_A,
                                        pdst=HOST_A_IP))))
    ping = eth() / IP(src=HOST_A_IP, dst="10.0.1.1", id=3001) / ICMP(id=7, seq=1) / b"hello"
    p.send(ping, a=("echo reply", echo_reply(ping, MAC["a"])))
    ping2 = eth() / IP(src=HOST_A_IP, dst="10.0.2.1", id=3002, tos=8) / \
        ICMP(id=7, seq=2) / (b"x" * 1001)                 # our address on b, asked on a
    p.send(ping2, a=("echo reply", echo_reply(ping2, MAC["a"])))
    ping3 = eth() / IP(src=HOST_A_IP, dst="10.0.1.1", id=3006) / ICMP(id=7, seq=3) / b"odd"
    p.send(raw(ping3) + b"\xee" * 15,                 # Ethernet padding: not echoed
           a=("echo reply", echo_reply(ping3, MAC["a"])))
    req2 = eth(dst=MAC["a"]) / ARP(op=1, hwsrc=HOST_A, psrc=HOST_A_IP, pdst="10.0.1.1")
    p.send(raw(req2) + b"\0" * 18,                    # unicast, padded to 60 bytes
           a=("arp reply", raw(Ether(dst=HOST_A, src=MAC["a"], type=0x0806) /
                               ARP(op=2, hwsrc=MAC["a"], psrc="10.0.1.1", hwdst=HOST_A,
                                   pdst=HOST_A_IP))))
    p.send(eth() / udp("10.0.1.1", id=3003))                         # local, counted
    p.send(eth() / udp("10.0.1.255", id=3004))                       # subnet broadcast
    p.send(eth(dst=BCAST) / udp("255.255.255.255", id=3005))         # limited broadcast
    p.send(eth(dst=MAC["a"]) / ARP(op=2, hwsrc="02:aa:00:00:00:77", psrc="10.0.1.77",
                                   hwdst=MAC["a"], pdst="10.0.1.1"))  # learned
    local = 3

    # ---- every drop reason the wire can reach (all on a)
    good = raw(eth() / udp("172.16.5.1", id=4000))
    p.send(good[:10], drop="short")
    p.send(good[:14 + 19], drop="short")
    p.send(eth(dst="02:00:00:00:09:09") / udp("172.16.5.1", id=4001), drop="wrong dst mac")
    p.send(eth(dst="01:00:5e:00:00:01") / udp("172.16.5.1", id=4002), drop="wrong dst mac")
    p.send(eth() / IPv6(dst="2001:db8::1") / UDP(), drop="not ipv4")
    p.send(raw(eth(type=0x88CC)) + b"\0" * 46, drop="not ipv4")
    p.send(patched(good, 0, 0x55, fix_checksum=True), drop="bad version")
    p.send(patched(good, 0, 0x44), drop="bad header length")
    p.send(eth() / IP(src=HOST_A_IP, dst="172.16.5.1", len=200) / UDP(), drop="bad length")
    p.send(patched(good, 11, good[25] ^ 0x55), drop="bad checksum")
    for ttl in (1, 0):
        pkt = eth() / udp("172.16.5.1", ttl=ttl, id=4010 + ttl)
        p.send(pkt, drop="ttl expired",
               a=("time exceeded", time_exceeded(pkt, "10.0.1.1", MAC["a"])))
    pkt = eth() / IP(src=HOST_A_IP, dst="8.8.8.8", ttl=1, id=4012, options=[IPOption_NOP()] * 4) \
        / ICMP(id=3, seq=4) / b"traceroute"             # about an echo: yes, quoting options
    p.send(pkt, drop="ttl expired", a=("time exceeded", time_exceeded(pkt, "10.0.1.1", MAC["a"])))
    # never about an ICMP error, nor a fragment other than the first
    p.send(eth() / IP(src=HOST_A_IP, dst="8.8.8.8", ttl=1, id=4013) / ICMP(type=3, code=1) /
           IP(src="8.8.8.8", dst=HOST_A_IP) / UDP(), drop="ttl expired")
    p.send(eth() / IP(src=HOST_A_IP, dst="8.8.8.8", ttl=1, id=4014, frag=185) / Raw(b"y" * 40),
           drop="ttl expired")
    p.send(eth() / udp("10.0.2.77", id=4020), drop="arp unresolved",
           b=("arp request", arp_request_from("b", "10.0.2.77")))
    p.send(eth() / udp("10.0.2.77", id=4021), drop="arp unresolved")   # asked already
    p.send(eth() / udp("203.0.113.50", id=4022), drop="arp unresolved",
           c=("arp request", arp_request_from("c", "203.0.113.50")))
    arp = raw(eth(dst=BCAST) / ARP(op=1, hwsrc=HOST_A, psrc=HOST_A_IP, pdst="10.0.1.1"))
    p.send(arp[:19] + b"\x05" + arp[20:], drop="bad arp")              # hardware size 5
    p.send(eth(dst=BCAST) / ARP(op=3, pdst="10.0.1.1"), drop="bad arp")
    p.send(eth(dst=BCAST) / ARP(op=1, hwsrc=HOST_A, psrc=HOST_A_IP, pdst="10.0.1.99"),
           drop="arp not for us")
    p.send(eth(dst=BCAST) / ARP(op=1, hwsrc=HOST_A, psrc=HOST_A_IP, pdst="10.0.2.1"),
           drop="arp not for us")                                      # b's, asked on a
    p.send(eth() / IP(src=HOST_A_IP, dst="10.0.1.1") / ICMP(chksum=0x1234),
           drop="bad icmp checksum")
    p.send(raw(eth() / udp("172.16.5.1", id=4030)) + b"\0" * 70000, drop="too long")
    # a last forwarded frame: the router kept going after all that
    p.forward(eth() / udp("172.16.5.200", id=4040), "b", NB["10.0.2.252"], MAC["b"])
    return p, local


# ------------------------------------------------------------ processes

def router(procs, sock, specs, routes, neighbors):
    args = MEMIFX + ["ip4-forward", "--json"]
    for i, s in enumerate(specs):
        args += ["--interface", "socket=%s,id=%d,role=master,rx-mode=interrupt,%s" % (sock, i, s)]
    for r in routes:
        args += ["--route", r]
    for n in neighbors:
        args += ["--neighbor", n]
    p = procs.start(args)
    assert wait_for(lambda: os.path.exists(sock), 15), "router did not start"
    return p


def sink(procs, sock, ifid, name, mode, path, count):
    """A sink that stops by itself once it has ``count`` frames (more in its
    last burst would be captured too); connected when this returns."""
    p = procs.start(MEMIFX + ["sink", "socket=%s,id=%d,name=%s,mode=%s,rx-mode=interrupt"
                              % (sock, ifid, name, mode), "--pcap", path,
                              "--count", str(count), "--duration", "60"])
    read_until(p, "%s: link up" % name, 20)
    return p


def finish(p, timeout=30):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


def stop(p, timeout=20):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out
    return out


def read_pcap(path, linktype):
    """The frames of a capture as bytes, read with scapy (raw records: no
    dissection of what is not IP)."""
    r = RawPcapReader(path)
    try:
        assert r.linktype == linktype
        return [bytes(data) for data, _ in r]
    finally:
        r.close()


def dissect(frame, l2):
    return Ether(frame) if l2 else IP(frame)


def check_capture(got, plan, name, l2=True):
    """``got`` holds exactly the frames expected on ``name``, each kind in order."""
    want = plan.out[name]
    missing = Counter(w for _, w, _ in want) - Counter(got)
    extra = Counter(got) - Counter(w for _, w, _ in want)
    if missing or extra:
        lines = ["%s: %d frames captured, %d expected" % (name, len(got), len(want))]
        for _, w, what in want:
            if w in missing:
                lines.append("missing  %s: %s" % (what, dissect(w, l2).summary()))
        for g in extra:
            lines.append("unexpected %s" % dissect(g, l2).summary())
            gp = dissect(g, l2)
            for _, w, what in want:         # the same packet, changed wrongly?
                wp = dissect(w, l2)
                if w in missing and IP in gp and IP in wp and \
                        (gp[IP].id, gp[IP].dst) == (wp[IP].id, wp[IP].dst):
                    lines.append("  vs %s: ttl %d/%d, checksum %#06x/%#06x, macs %s/%s"
                                 % (what, gp[IP].ttl, wp[IP].ttl, gp[IP].chksum,
                                    wp[IP].chksum, l2 and (gp.dst, gp.src),
                                    l2 and (wp.dst, wp.src)))
                    lines.append("  got  %s\n  want %s" % (g.hex(), w.hex()))
        raise AssertionError("\n".join(lines))
    for kind in {k for k, _, _ in want}:
        frames = [w for k, w, _ in want if k == kind]
        assert [g for g in got if g in frames] == frames, "%s: %s out of order" % (name, kind)


def recomputed(frame, l2):
    """The frame as scapy would build it (IP and ICMP checksums recomputed)."""
    q = dissect(frame, l2)
    del q[IP].chksum
    if ICMP in q:
        del q[ICMP].chksum
    return raw(q)


# ----------------------------------------------------------------- tests

@pytest.mark.timeout(90)
def test_ethernet_forwarding_replies_and_drops(procs, sock, tmp_path):
    plan, local = ethernet_plan()
    src = str(tmp_path / "in.pcap")
    wrpcap(src, [Raw(f) for f in plan.frames], linktype=1)
    # max-frame above the largest IPv4 packet: the router's own "too long" is tested
    specs = ["name=%s,mac=%s,ip=%s/24,max-frame=100000" % (n, MAC[n], ADDR[n]) for n in "abc"]
    neighbors = ["%s,%s,dev=%s" % (ip, mac, NB_DEV[ip]) for ip, mac in NB.items()]
    r = router(procs, sock, specs, ROUTES, neighbors)
    caps = {n: str(tmp_path / ("%s.pcap" % n)) for n in "abc"}
    sinks = {n: sink(procs, sock, i, "sink-" + n, "ethernet", caps[n], len(plan.out[n]))
             for i, n in ((1, "b"), (2, "c"))}
    gen = procs.start(MEMIFX + ["gen", "socket=%s,id=0,name=gen-a,max-frame=100000" % sock,
                                "--pcap", src,
                                "--capture", caps["a"], "--json"])
    g = json.loads(finish(gen, 60).strip().splitlines()[-1])
    for s in sinks.values():
        finish(s)
    result = json.loads(stop(r).strip().splitlines()[-1])

    # gen sent everything, and captured what came back on a
    assert g["packets"] == len(plan.frames)
    assert g["captured"] == len(plan.out["a"])
    got = {n: read_pcap(caps[n], 1) for n in "abc"}
    for n in "abc":
        check_capture(got[n], plan, n)
    # every frame that left is valid as scapy sees it (IP and ICMP checksums)
    for n in "abc":
        for f in got[n]:
            if Ether(f).type == 0x0800:
                assert f == recomputed(f, True)[:len(f)], (n, Ether(f).summary())

    # the router's own account
    expected = dict({k: 0 for k in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0))
    expected.update(plan.drops)
    assert result["drops"] == expected
    assert not {k for k in DROP_REASONS if k not in plan.drops} - {"arp queue full", "no route",
                                                                   "no memory"}
    ia = result["interfaces"]["a"]["rx"][0]
    assert ia["packets"] == len(plan.frames)
    kinds = plan.kinds()
    assert (kinds["echo reply"], kinds["arp reply"], kinds["arp request"],
            kinds["time exceeded"]) == (3, 2, 2, 3)
    assert (ia["forwarded"], ia["echo replies"], ia["arp replies"], ia["local"],
            ia["arp to control plane"], ia["arp requests sent"], ia["icmp errors sent"]) == \
        (plan.forwarded, kinds["echo reply"], kinds["arp reply"], local, 1,
         kinds["arp request"], kinds["time exceeded"])
    assert ia["packets"] == ia["forwarded"] + ia["echo replies"] + ia["arp replies"] + \
        ia["local"] + ia["arp to control plane"] + sum(ia["drops"].values())
    for n in "abc":
        assert result["interfaces"][n]["tx"][0]["packets"] == len(plan.out[n])
    # the ARP reply from 10.0.1.77 was learned; static neighbors all there
    assert result["arp"] == {"learned": 1, "ignored": 0}
    learned = {(e["dev"], e["ip"], e["mac"]) for e in result["neighbors"]}
    assert ("a", "10.0.1.77", "02:aa:00:00:00:77") in learned
    assert len(learned) == len(NB) + 1


# ---------------------------------------------------------------- ip mode

IP_ROUTES = ["172.16.0.0/12,via=10.0.2.2",
             "172.16.5.0/24,via=10.0.1.2",          # back out a
             "172.16.5.7/32,dev=b",
             "198.51.100.0/24,via=10.0.2.3"]
IP_LPM = {"172.20.1.1": "b", "172.16.5.1": "a", "172.16.5.7": "b", "172.16.5.8": "a",
          "172.31.0.0": "b", "10.0.2.9": "b", "10.0.1.9": "a", "198.51.100.200": "b"}


def ip_plan():
    p = Plan(["a", "b"])
    for k, dst in enumerate(IP_LPM):
        pkt = udp(dst, ttl=[64, 2, 255][k % 3], id=500 + k, size=k * 111 % 1400)
        p.forward(pkt, IP_LPM[dst], None, None)
    p.forward(IP(src="10.0.1.5", dst="172.16.5.7", id=600, options=[IPOption_NOP()] * 8) /
              TCP(), "b", None, None)
    p.forward(udp("172.20.1.1", id=601, size=5000), "b", None, None)   # chained
    # bare IPv6 and other non-IPv4
    p.send(IPv6(dst="2001:db8::1") / UDP() / b"six", drop="not ipv4")
    p.send(IPv6(dst="2001:db8::1") / ICMPv6EchoRequest(), drop="not ipv4")
    good = raw(udp("172.20.1.1", id=700))
    p.send(bytes([0x55]) + good[1:], drop="bad version")
    p.send(good[:10], drop="short")
    p.send(bytes([0x44]) + good[1:], drop="bad header length")
    p.send(raw(IP(src="10.0.1.5", dst="172.20.1.1", len=300) / UDP()), drop="bad length")
    p.send(good[:10] + bytes([good[10] ^ 0x55]) + good[11:], drop="bad checksum")
    p.send(udp("8.8.8.8", id=701), drop="no route")
    pkt = udp("172.20.1.1", ttl=1, id=702)
    p.send(pkt, drop="ttl expired",
           a=("time exceeded", time_exceeded(pkt, "10.0.1.1", None, l2=False)))
    ping = IP(src="10.0.1.5", dst="10.0.1.1", id=703) / ICMP(id=9, seq=9) / b"bare"
    p.send(ping, a=("echo reply", echo_reply(ping, None, l2=False)))
    p.send(udp("10.0.1.1", id=704))                         # local, counted
    p.forward(udp("172.16.5.7", id=705), "b", None, None)   # and it still forwards
    return p


@pytest.mark.timeout(90)
def test_ip_mode_forwarding(procs, sock, tmp_path):
    plan = ip_plan()
    src = str(tmp_path / "in.pcap")
    wrpcap(src, [Raw(f) for f in plan.frames], linktype=101)
    specs = ["name=a,mode=ip,ip=10.0.1.1/24", "name=b,mode=ip,ip=10.0.2.1/24"]
    r = router(procs, sock, specs, IP_ROUTES, [])
    caps = {n: str(tmp_path / ("%s.pcap" % n)) for n in "ab"}
    s = sink(procs, sock, 1, "sink-b", "ip", caps["b"], len(plan.out["b"]))
    gen = procs.start(MEMIFX + ["gen", "socket=%s,id=0,name=gen-a,mode=ip" % sock, "--pcap", src,
                                "--capture", caps["a"], "--json"])
    g = json.loads(finish(gen, 60).strip().splitlines()[-1])
    finish(s)
    result = json.loads(stop(r).strip().splitlines()[-1])

    assert g["packets"] == len(plan.frames) and g["captured"] == len(plan.out["a"])
    for n in "ab":
        got = read_pcap(caps[n], 101)
        check_capture(got, plan, n, l2=False)
        for f in got:
            assert f == recomputed(f, False)[:len(f)], (n, IP(f).summary())
    expected = dict({k: 0 for k in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0))
    expected.update(plan.drops)
    assert result["drops"] == expected
    ia = result["interfaces"]["a"]["rx"][0]
    assert (ia["packets"], ia["forwarded"], ia["echo replies"], ia["local"],
            ia["icmp errors sent"]) == (len(plan.frames), plan.forwarded, 1, 1, 1)
    for n in "ab":
        assert result["interfaces"][n]["tx"][0]["packets"] == len(plan.out[n])
