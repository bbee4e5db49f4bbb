"""Flows with destinations of their own (Generator ``dst_step``, ``memifx
gen --dst-step``): flow f's frames go to ``dst_ip`` + f * dst_step, so that
one generator spreads its traffic over a router's routes.

Every way a frame is made (copied or written in place, stamped or fixed,
Ethernet or IP mode, one size or several) puts the flow's destination in
the header with a right checksum (scapy recomputes it); the receiver still
takes every stamped frame as good; a router with a route per destination
forwards every frame by its own route; the CLI and the agent pass the
option on.
"""
import ipaddress
import sys
from array import array

import pytest
from scapy.all import IP, UDP, Ether, rdpcap

from conftest import wait_for
from loopback import Loopback
from memifx.fib import Fib
from memifx.ip4 import Router
from memifx.stream import Stream
from memifx.traffic import Checker, Generator
from test_gen_sink import finish
from test_agent_config import base, load

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
FIRST = "20.0.0.1"
FLOWS = 37
STEP = 0x10101          # every byte of the address moves: carries in both checksum words


def destination(flow, first=FIRST, step=STEP):
    return str(ipaddress.IPv4Address(int(ipaddress.IPv4Address(first)) + flow * step))


def packets(frames, ip_mode):
    """scapy's IP layer of each frame."""
    return [IP(f) if ip_mode else Ether(f)[IP] for f in frames]


def assert_each_flow_to_its_destination(frames, ip_mode):
    """Each frame's destination is its flow's (the flow read back from the
    UDP source port, 1024 + flow) and its header checksum is right."""
    assert frames
    for ip in packets(frames, ip_mode):
        flow = ip[UDP].sport - 1024
        assert 0 <= flow < FLOWS
        assert ip.dst == destination(flow)
        sent = ip.chksum
        del ip.chksum
        assert IP(bytes(ip)).chksum == sent


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", ["pattern", "zeros", "fixed"])
@pytest.mark.parametrize("ip_mode", [False, True], ids=["ethernet", "ip"])
@pytest.mark.parametrize("sizes", [[64], [64, 700, 1500]], ids=["one-size", "mixed"])
def test_copied_frames(payload, ip_mode, sizes):
    """fill(), as gen's copying path stages bursts, twice over the same
    buffer (headers_only the second time, where it applies)."""
    gen = Generator(sizes, ip_mode=ip_mode, flows=FLOWS, dst_ip=bytes([20, 0, 0, 1]),
                    dst_step=STEP, payload=payload)
    checker = Checker(ip_mode=ip_mode, verify="count" if payload == "fixed" else "full")
    buf = bytearray(100 * 1500)
    lens = array("I", [0]) * 100
    frames = []
    for again in (False, True):
        n, _ = gen.fill(buf, lens, 100, array("I", range(FLOWS)),
                        headers_only=again and payload != "pattern" and len(sizes) == 1)
        assert n == 100
        good = checker.check(buf, lens, n)
        assert good == (0 if payload == "fixed" else n)
        off = 0
        for k in range(n):
            frames.append(bytes(buf[off:off + lens[k]]))
            off += lens[k]
    assert checker.corrupt == 0
    assert_each_flow_to_its_destination(frames, ip_mode)
    assert {p.dst for p in packets(frames, ip_mode)} == {destination(f) for f in range(FLOWS)}


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", ["pattern", "zeros", "fixed"])
@pytest.mark.parametrize("ip_mode", [False, True], ids=["ethernet", "ip"])
def test_frames_written_in_place(payload, ip_mode):
    """Zero-copy (Stream over loopback rings, both roles): frames written
    straight into the ring's buffers, slots reused many times.  Each frame
    belongs to the next flow in turn, even a fixed frame in a buffer that
    holds one already (which, without destinations per flow, keeps the
    flow it was first written for)."""
    lb = Loopback(log2=6, buffer_size=2048)
    try:
        for tx, rx in (lb.s2m, lb.m2s):
            gen = Generator([128], ip_mode=ip_mode, flows=FLOWS, dst_ip=bytes([20, 0, 0, 1]),
                            dst_step=STEP, payload=payload)
            st = Stream(gen, range(FLOWS), 16, headers_only=payload != "pattern",
                        zero_copy=True)
            frames = []
            while len(frames) < 600:
                st.send(tx, 600 - st.admitted, 2)
                frames += rx.rx_frames(64)
            assert_each_flow_to_its_destination(frames, ip_mode)
            assert [p[UDP].sport - 1024 for p in packets(frames, ip_mode)] == \
                [k % FLOWS for k in range(len(frames))]
            if payload != "fixed":
                checker = Checker(ip_mode=ip_mode, verify="full")
                some = frames[:200]
                lens = array("I", [len(f) for f in some])
                assert checker.check(bytearray(b"".join(some)), lens, len(some)) == len(some)
    finally:
        lb.close()


def test_range_and_defaults():
    """The last flow's destination must not wrap past 255.255.255.255; one
    flow, or a step of 0, sends to dst_ip as before."""
    last = bytes([255, 255, 255, 255 - 2 * 100])
    assert Generator([64], flows=3, dst_ip=last, dst_step=100).destination(2) == b"\xff" * 4
    with pytest.raises(ValueError, match="flow 2's destination would lie past"):
        Generator([64], flows=3, dst_ip=last, dst_step=101)
    one = Generator([64], flows=1, dst_ip=bytes([10, 0, 0, 9]), dst_step=5)
    assert (one.dst_step, one.destination(0)) == (0, bytes([10, 0, 0, 9]))
    flat = Generator([64], flows=4, dst_ip=bytes([10, 0, 0, 9]))
    assert {flat.destination(f) for f in range(4)} == {bytes([10, 0, 0, 9])}
    spread = Generator([64], flows=4, dst_ip=bytes([10, 0, 0, 9]), dst_step=256)
    assert [spread.destination(f) for f in range(4)] == \
        [bytes([10, 0, f, 9]) for f in range(4)]
    with pytest.raises(IndexError):
        spread.destination(4)


@pytest.mark.timeout(30)
def test_router_forwards_each_flow_by_its_own_route():
    """256 flows, one address in each of 256 /24s, each /24 routed to a
    gateway of its own: every frame leaves towards its flow's gateway, and
    a flow whose /24 has no route is dropped "no route", counted."""
    flows = 256
    fib = Fib()
    fib.add_route("10.0.1.0/24", "connected", ifindex=0)
    fib.add_route("10.0.2.0/24", "connected", ifindex=1)
    for f in range(flows - 1):                      # the last flow's /24 has no route
        fib.add_route("20.0.%d.0/24" % f, "gateway", gw=int(ipaddress.IPv4Address(
            "10.0.2.%d" % (f % 200 + 2))), ifindex=1)
    r = Router(fib)
    r.add_interface(0, bytes.fromhex("02fe0000000a"), int(ipaddress.IPv4Address("10.0.1.1")))
    r.add_interface(1, bytes.fromhex("02fe0000000b"), int(ipaddress.IPv4Address("10.0.2.1")))
    for g in range(200):
        r.add_neighbor(1, int(ipaddress.IPv4Address("10.0.2.%d" % (g + 2))),
                       bytes([2, 0xaa, 0, 0, 0, g]))
    r.set_time(1000)
    gen = Generator([64], flows=flows, dst_mac=bytes.fromhex("02fe0000000a"),
                    src_ip=bytes([10, 0, 1, 5]), dst_ip=bytes([20, 0, 0, 1]), dst_step=256)
    buf = bytearray(256 * 64)
    lens = array("I", [0]) * 256
    n, _ = gen.fill(buf, lens, 256, array("I", range(flows)))
    frames = [bytes(buf[i * 64:(i + 1) * 64]) for i in range(n)]
    out = r.process(0, frames)
    assert len(out) == flows - 1
    for o, f in out:
        e = Ether(f)
        flow = e[UDP].sport - 1024
        assert (o, e[IP].dst) == (1, "20.0.%d.1" % flow)
        assert e.dst == "02:aa:00:00:00:%02x" % (flow % 200)
    rx = r.counters(0)["rx"][0]
    assert (rx["forwarded"], rx["drops"]["no route"]) == (flows - 1, 1)


@pytest.mark.timeout(60)
def test_cli_gen_dst_step_to_sink(procs, sock, tmp_path):
    """gen --flows 8 --dst-step 256 -> sink --pcap: the capture holds each
    flow's destination, the sink counts every frame good."""
    cap = str(tmp_path / "got.pcap")
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt" % sock,
                                 "--pcap", cap, "--count", "800", "--json"])
    wait_for(lambda: __import__("os").path.exists(sock), 10)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=slave" % sock, "--flows", "8",
                                "--dst-ip", "20.0.0.1", "--dst-step", "256", "--count", "800",
                                "--rate", "100000", "--json"])
    g = finish(gen)
    s = finish(sink)
    assert g["packets"] == s["received"] == 800 and s["corrupt"] == 0
    dsts = [p[IP].dst for p in rdpcap(cap)]
    assert len(dsts) == 800
    assert sorted(set(dsts)) == ["20.0.%d.1" % f for f in range(8)]


def test_agent_passes_dst_step_on(tmp_path):
    doc = base(tmp_path)
    del doc["xconnects"]["x2"]
    doc["endpoints"] = {"g": {"kind": "gen", "interface": "e", "flows": 16,
                              "dst-ip": "20.0.0.1", "dst-step": 256}}
    assert load(doc).pipelines["g"].params["dst_step"] == 256
