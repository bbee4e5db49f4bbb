"""Every frame counted: max frame size, bounded allocations, and the
conservation of frames through xconnect (issue 10, attacks 7 and 8).

For one xconnect direction, every frame the receive queue delivers to the
node is forwarded or dropped by exactly one reason:
``rx packets = node packets + sum(node drops)`` and ``node packets = tx
packets``.  Frames the receive queue itself drops are in its own counters.
"""
import json
import os
import signal
import struct
import sys
import time
import tracemalloc

import click
import psutil
import pytest

import memifx
from memifx.ring import DEFAULT_MAX_FRAME, MAX_FRAME_SIZE
from memifx.xconnect import XConnect
from memifx.cli.spec import parse_spec
from conftest import wait_for
from loopback import Loopback
from rogue import DESC_NEXT, RogueSlave

pytestmark = pytest.mark.timeout(30)
MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
RING_SIZE = 64


def frame(i, size):
    return struct.pack("<I", i) + bytes([i & 0xFF]) * (size - 4)


def drops(intf, kind="rx"):
    return intf.stats()[kind][0]["drops"]


# ---------------------------------------------------- receive: max frame

@pytest.fixture
def master(abstract_sock):
    m = memifx.Interface(socket=abstract_sock, role="master", name="acct-master",
                         max_frame=4096).connect()
    yield m
    m.close()


@pytest.fixture
def rogue(master):
    """A rogue slave, one 64-slot ring each way, its region 4 MiB (sparse)."""
    r = RogueSlave.connect(master.socket)
    r.handshake(region_size=4 << 20)
    assert master.wait_connected(5)
    yield r
    r.close()


def test_default_max_frame_is_a_jumbo_frame_with_room():
    assert DEFAULT_MAX_FRAME == 10240 >= 9216 + 18
    assert memifx.Interface(name="x").max_frame == DEFAULT_MAX_FRAME
    with pytest.raises(ValueError):
        memifx.Interface(name="x", max_frame=MAX_FRAME_SIZE + 1)


def test_spec_key_max_frame():
    assert parse_spec("role=master,max-frame=9000").interface_args()["max_frame"] == 9000
    assert memifx.Interface(**parse_spec("role=master").interface_args()).max_frame == \
        DEFAULT_MAX_FRAME
    with pytest.raises(click.BadParameter, match="max-frame"):
        parse_spec("max-frame=%d" % (MAX_FRAME_SIZE + 1))
    with pytest.raises(click.BadParameter, match="max-frame"):
        parse_spec("bogus=1")               # listed among the allowed keys


def test_oversize_chain_dropped_and_skipped_whole(master, rogue):
    r, ring = rogue, rogue.s2m[0]
    # 3 x 2048 bytes: longer than max_frame 4096; the whole chain is consumed
    for s in range(3):
        ring.put(s, flags=DESC_NEXT if s < 2 else 0, offset=r.buf(ring, s), length=2048)
    # then exactly max_frame bytes in two slots: delivered
    payload = frame(7, 4096)
    for k, s in enumerate((3, 4)):
        off = r.buf(ring, s)
        r.mem[off:off + 2048] = payload[2048 * k:2048 * (k + 1)]
        ring.put(s, flags=DESC_NEXT if k == 0 else 0, offset=off, length=2048)
    ring.head = 5
    assert master.rx_burst() == [payload]
    assert ring.tail == 5
    assert drops(master)["frame too long"] == 1
    assert master.stats()["rx"][0]["packets"] == 1
    assert master.connected


def test_one_descriptor_announcing_1mib_is_dropped(master, rogue):
    r, ring = rogue, rogue.s2m[0]
    ring.put(0, offset=0, length=1 << 20)       # inside the (4 MiB) region: valid
    ring.head = 1
    assert master.rx_burst() == [] and ring.tail == 1
    assert drops(master)["frame too long"] == 1
    r.send_frame(b"after" * 20)
    assert wait_for(lambda: master.rx_burst() == [b"after" * 20], 2)


def test_rx_burst_allocation_bounded_by_max_frame(abstract_sock):
    """A ring full of descriptors that each announce 1 MiB (all views of the
    same sparse region): a burst used to allocate 64 MiB; with the default
    max_frame it allocates (next to) nothing and counts 64 drops."""
    m = memifx.Interface(socket=abstract_sock, role="master", name="acct-alloc").connect()
    r = RogueSlave.connect(m.socket)
    try:
        r.handshake(region_size=4 << 20)
        assert m.wait_connected(5)
        ring = r.s2m[0]
        for s in range(RING_SIZE):
            ring.put(s, offset=0, length=1 << 20)
        ring.head = RING_SIZE
        tracemalloc.start()
        try:
            got = m.rx_burst()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert got == [] and ring.tail == RING_SIZE
        assert drops(m)["frame too long"] == RING_SIZE
        assert peak < 256 * 1024, peak
        # frames up to max_frame still arrive, and cost what they carry
        for s in range(RING_SIZE, RING_SIZE + 8):
            ring.put(s, offset=0, length=DEFAULT_MAX_FRAME)
        ring.head = RING_SIZE + 8
        tracemalloc.start()
        try:
            got = m.rx_burst()
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert len(got) == 8
        assert peak < 8 * DEFAULT_MAX_FRAME + 64 * 1024, peak
    finally:
        r.close()
        m.close()


def test_tx_frame_longer_than_max_frame_is_a_counted_drop(abstract_sock):
    m = memifx.Interface(socket=abstract_sock, role="master", name="acct-m").connect()
    s = memifx.Interface(socket=abstract_sock, role="slave", name="acct-s",
                         max_frame=4096).connect()
    try:
        assert s.wait_connected(5) and m.wait_connected(5)
        assert s.tx_burst([frame(1, 100), frame(2, 4097), frame(3, 4096)]) == 3
        assert drops(s, "tx")["frame too long"] == 1
        assert s.stats()["tx"][0]["packets"] == 2
        got = []
        assert wait_for(lambda: got.extend(m.rx_burst()) or len(got) == 2, 5)
        assert got == [frame(1, 100), frame(3, 4096)]
    finally:
        s.close()
        m.close()


# ------------------------------------------------ receive: unfinished chains

def test_chain_behind_other_frames_is_not_dropped(master, rogue):
    """A chain that fills the ring after other frames may still end once
    those are consumed: it is waited for, not counted "chain too long"."""
    r, ring = rogue, rogue.s2m[0]
    r.send_frame(b"first" * 12)                 # slot 0
    for s in range(1, RING_SIZE):               # a chain on every other slot
        off = r.buf(ring, s)
        r.mem[off:off + 10] = bytes([s]) * 10
        ring.put(s, flags=DESC_NEXT, offset=off, length=10)
    ring.head = RING_SIZE
    assert master.rx_burst() == [b"first" * 12]
    assert ring.tail == 1
    off = r.buf(ring, RING_SIZE)                # slot 0 again: the chain ends
    r.mem[off:off + 10] = b"E" * 10
    ring.put(RING_SIZE, offset=off, length=10)
    ring.head = RING_SIZE + 1
    want = b"".join(bytes([s]) * 10 for s in range(1, RING_SIZE)) + b"E" * 10
    assert master.rx_burst() == [want]
    assert ring.tail == RING_SIZE + 1
    assert sum(drops(master).values()) == 0


def test_unfinished_chain_is_counted_while_it_stalls(master, rogue):
    r, ring = rogue, rogue.s2m[0]
    for s in range(10):
        ring.put(s, flags=DESC_NEXT, offset=r.buf(ring, s), length=10)
    ring.head = 10
    for _ in range(3):
        assert master.rx_burst() == []
    assert master.stats()["rx"][0]["chain_waits"] == 3
    assert ring.tail == 0 and sum(drops(master).values()) == 0
    ring.put(10, offset=r.buf(ring, 10), length=10)     # the end comes
    ring.head = 11
    assert [len(f) for f in master.rx_burst()] == [110]


# ------------------------------------------------------ xconnect in-process

class Path:
    """sender (slave tx) -> A (master rx) -> XConnect -> B (master tx) ->
    receiver (slave rx), over two loopbacks."""

    def __init__(self, log2=6, tx_max_frame=None):
        self.a = Loopback(log2=log2)
        self.b = Loopback(log2=log2, max_frame=tx_max_frame)
        self.sender, self.rxq = self.a.s2m
        self.txq, self.receiver = self.b.m2s
        self.node = XConnect()

    def close(self):
        self.a.close()
        self.b.close()

    def balanced(self):
        c = self.node.counters()
        rx = self.rxq.counters()["packets"]
        assert rx == c["packets"] + sum(c["drops"].values()), (rx, c)
        assert self.txq.counters()["packets"] == c["packets"]
        return c


def test_xconnect_counts_too_long_and_full_by_reason():
    p = Path(tx_max_frame=4000)
    try:
        sent = got = longs = 0

        def burst(k):
            nonlocal sent, longs
            fs = [frame(k * 32 + i, 5000 if i % 8 == 0 else 200) for i in range(32)]
            n = p.sender.tx_frames(fs)
            longs += sum(1 for f in fs[:n] if len(f) == 5000)
            sent += n
            p.node.poll(p.rxq, p.txq, 256, 4)
        for k in range(10):                     # the receiver keeps up
            burst(k)
            got += len(p.receiver.rx_frames(RING_SIZE))
        c = p.balanced()
        assert c["drops"]["tx frame too long"] == longs == 40
        assert sum(c["drops"].values()) == longs and got == c["packets"] == 280
        for k in range(10, 50):                 # a receiver slower than the sender
            burst(k)
            if k % 4 == 3:
                got += len(p.receiver.rx_frames(RING_SIZE))
        while p.node.poll(p.rxq, p.txq, 256, 4) or p.rxq.pending():
            got += len(p.receiver.rx_frames(RING_SIZE))
        got += len(p.receiver.rx_frames(RING_SIZE))
        c = p.balanced()
        assert p.rxq.counters()["packets"] == sent
        # a frame behind a full ring is "tx ring full", whatever its length
        assert 40 < c["drops"]["tx frame too long"] <= longs
        assert c["drops"]["tx ring full"] > 0
        assert c["drops"]["tx fault"] == c["drops"]["tx link down"] == 0
        assert got == c["packets"]
        assert c["bytes"] == p.txq.counters()["bytes"]
        assert p.txq.counters()["drops"]["frame too long"] == c["drops"]["tx frame too long"]
    finally:
        p.close()


def test_xconnect_tx_fault_is_not_ring_full():
    p = Path()
    try:
        assert p.sender.tx_frames([frame(i, 100) for i in range(4)]) == 4
        assert p.node.poll(p.rxq, p.txq) == 4
        # the receiver's next posted buffer now points outside its region
        p.b.poke_desc(1, 4, offset=p.b.region_size)
        assert p.sender.tx_frames([frame(i, 100) for i in range(8)]) == 8
        p.node.poll(p.rxq, p.txq)
        assert p.txq.fault_reason() == "posted buffer outside memory region"
        c = p.balanced()
        assert c["drops"]["tx fault"] == 8
        assert c["drops"]["tx ring full"] == 0
    finally:
        p.close()


def test_xconnect_link_down_is_its_own_reason():
    p = Path()
    try:
        p.txq.close()
        assert p.sender.tx_frames([frame(i, 100) for i in range(5)]) == 5
        p.node.poll(p.rxq, p.txq)
        c = p.balanced()
        assert c["drops"]["tx link down"] == 5 and c["drops"]["tx ring full"] == 0
    finally:
        p.close()


def test_chained_frames_forwarded_without_staging():
    """Chained (jumbo) frames go segment by segment from the receive buffers
    into the transmit buffers: byte for byte, and no scratch memory that
    grows with the frames (the node keeps one u32 per ring slot)."""
    p = Path(log2=8)
    try:
        jumbo = [frame(i, 9000) for i in range(51)]     # 5 slots each: 255 of 256
        assert p.sender.tx_frames(jumbo) == 51
        assert p.node.poll(p.rxq, p.txq) == 51
        assert p.receiver.rx_frames(256) == jumbo
        mixed = [frame(k, (60, 3000, 2048, 2049, 9000)[k % 5]) for k in range(40)]
        assert p.sender.tx_frames(mixed) == 40
        assert p.node.poll(p.rxq, p.txq) == 40
        assert p.receiver.rx_frames(256) == mixed
        p.balanced()
    finally:
        p.close()


def udp_frame(size):
    """An IPv4/UDP frame of ``size`` bytes that cost_burst's router forwards."""
    import cost_burst as cb
    total = size - 14
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, total, 1, 0, 64, 17, 0,
                               cb.SRC, cb.DST))
    struct.pack_into("!H", ip, 10, cb.ip_checksum(bytes(ip)))
    udp = struct.pack("!HHHH", 1234, 5678, total - 20, 0)
    return cb.MAC_IN + cb.HOST + b"\x08\x00" + bytes(ip) + udp + b"u" * (total - 28)


def test_ip4_router_counts_tx_too_long_and_fault_by_reason():
    """The router's transmit side: frames its output queue drops as too long
    are not counted as sent; a faulted queue is not "tx ring full"."""
    from cost_burst import make_router
    p = Path(tx_max_frame=1000)
    try:
        router = make_router()
        txqs = [None, p.txq]
        fs = [udp_frame(1500 if i % 2 else 100) for i in range(8)]
        assert p.sender.tx_frames(fs) == 8
        assert router.poll(0, p.rxq, txqs, 256, 1) == 8
        tx = router.counters(1)["tx"][0]
        assert tx["packets"] == 4 == p.txq.counters()["packets"]
        assert tx["drops"] == {"tx ring full": 0, "tx frame too long": 4, "tx fault": 0}
        assert len(p.receiver.rx_frames(RING_SIZE)) == 4
        p.b.poke_desc(1, 4, offset=p.b.region_size)        # a bad posted buffer
        assert p.sender.tx_frames([udp_frame(100)] * 3) == 3
        router.poll(0, p.rxq, txqs, 256, 1)
        assert p.txq.fault_reason() == "posted buffer outside memory region"
        tx = router.counters(1)["tx"][0]
        assert tx["drops"] == {"tx ring full": 0, "tx frame too long": 4, "tx fault": 3}
    finally:
        p.close()


# ------------------------------------------------- xconnect, real processes

def start_xconnect(procs, a, b, *extra, b_spec=""):
    p = procs.start(MEMIFX + ["xconnect",
                              "socket=%s,role=master,name=A,rx-mode=interrupt" % a,
                              "socket=%s,role=master,name=B,rx-mode=interrupt%s" % (b, b_spec),
                              "--json"] + list(extra))
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    return p


def finish(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=15)
    return json.loads(out.strip().splitlines()[-1])


def slaves(a, b):
    sa = memifx.Interface(socket=a, name="sa").connect()
    sb = memifx.Interface(socket=b, name="sb").connect()
    assert sa.wait_connected(5) and sb.wait_connected(5)
    return sa, sb


@pytest.mark.timeout(60)
def test_xconnect_conservation_under_overload(procs, sockdir):
    """A sender faster than the receiver, some frames too long for B's
    max-frame: every frame A received is forwarded or dropped by reason."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start_xconnect(procs, a, b, "--workers", "0", b_spec=",max-frame=4000")
    sa, sb = slaves(a, b)
    sent = longs = got = 0
    try:
        end = time.monotonic() + 1.5
        i = 0
        last_rx = time.monotonic()
        while time.monotonic() < end:
            fs = [frame(i + k, 5000 if (i + k) % 16 == 0 else 100) for k in range(64)]
            n = sa.tx_burst(fs)
            longs += sum(1 for f in fs[:n] if len(f) == 5000)
            sent += n
            i += 64
            if time.monotonic() - last_rx > 0.02:   # the receiver: 50 polls a second
                got += len(sb.rx_burst(max=256))
                last_rx = time.monotonic()
            time.sleep(0.001)
        assert wait_for(lambda: sum(q.in_flight() for q in sa.active_queues("tx")) == 0, 5)
        time.sleep(0.2)
        while True:
            n = len(sb.rx_burst(max=1024))
            got += n
            if not n:
                time.sleep(0.05)
                n = len(sb.rx_burst(max=1024))
                got += n
                if not n:
                    break
    finally:
        sa.close()
        sb.close()
    result = finish(p)
    d = result["directions"]["A->B"]
    ia, ib = result["interfaces"]["A"], result["interfaces"]["B"]
    assert ia["rx"][0]["packets"] == sent
    assert ia["rx"][0]["packets"] == d["packets"] + sum(d["drops"].values()), (ia, d)
    assert ib["tx"][0]["packets"] == d["packets"]
    # a frame behind a full ring is "tx ring full", whatever its length
    assert 0 < d["drops"]["tx frame too long"] <= longs
    assert ib["tx"][0]["drops"]["frame too long"] == d["drops"]["tx frame too long"]
    assert d["drops"]["tx ring full"] > 0
    assert got == d["packets"]


@pytest.mark.timeout(90)
def test_sigkilled_worker_keeps_its_node_counts(procs, sockdir):
    """The worker is SIGKILLed mid-traffic: what it counted before survives
    (it counted in the stats file), so the totals still balance, within the
    one burst a kill can interrupt between two counters."""
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start_xconnect(procs, a, b, "--workers", "1")
    sa, sb = slaves(a, b)
    got = 0
    kills = 0
    try:
        def workers():
            """The live worker processes (a killed one may linger as a zombie)."""
            out = []
            for c in psutil.Process(p.pid).children():
                try:
                    if c.status() != psutil.STATUS_ZOMBIE and \
                            "memifx.worker" in " ".join(c.cmdline()):
                        out.append(c)
                except psutil.Error:
                    pass
            return out

        def replaced(old):
            ws = workers()
            return len(ws) == 1 and ws[0].pid != old
        assert wait_for(lambda: len(workers()) == 1, 10)
        for round_ in range(2):
            end = time.monotonic() + 0.6 + 0.37 * round_
            i = 0
            while time.monotonic() < end:
                sa.tx_burst([frame(i + k, 100) for k in range(64)])
                i += 64
                got += len(sb.rx_burst(max=1024))
                time.sleep(0.002)
            (w,) = workers()
            os.kill(w.pid, signal.SIGKILL)
            kills += 1
            assert wait_for(lambda: replaced(w.pid), 10)
            assert wait_for(lambda: sa.connected and sb.connected, 10)
        got += len(sb.rx_burst(max=1024))
    finally:
        sa.close()
        sb.close()
    result = finish(p)
    assert result["workers"]["restarts"] == kills
    d = result["directions"]["A->B"]
    ia, ib = result["interfaces"]["A"], result["interfaces"]["B"]
    rx = ia["rx"][0]["packets"]
    forwarded = d["packets"]
    assert rx > 5000, rx
    assert abs(rx - (forwarded + sum(d["drops"].values()))) <= 256 * kills, (rx, d)
    assert abs(ib["tx"][0]["packets"] - forwarded) <= 256 * kills, (ib, d)


# ------------------------------------- xconnect: any burst, either role

MIX_SIZES = {"usual": 200, "small": 60, "empty": 0, "chained": 3000, "long": 5000,
             "bad": 200}      # "bad": a usual frame whose descriptor the peer spoils
MIX_TX_MAX = 4000             # "long" is longer than the transmit side takes
MIX_SLOTS = 64


def mix_slots(size):
    return max(1, -(-size // 2048))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("rx_role", ["master", "slave"])
@pytest.mark.parametrize("tx_role", ["master", "slave"])
def test_xconnect_any_burst_is_exact_and_in_order(rx_role, tx_role):
    """XConnect.poll over a burst of any mix: usual frames (which the node
    moves in one pass over both rings), small, empty, chained and too-long
    ones, descriptors the peer spoiled, and a transmit ring with only
    ``room`` free slots, in each role on each side.  What arrives is exactly
    what a frame-by-frame model says, in order, and every frame is counted
    once: by the receive queue (bad descriptor), or by the node as sent,
    "tx frame too long" or "tx ring full" (everything behind the first frame
    that does not fit)."""
    from hypothesis import given, settings, strategies as st

    @settings(max_examples=60, deadline=None, derandomize=True)
    @given(kinds=st.lists(st.sampled_from(sorted(MIX_SIZES)), min_size=1, max_size=40),
           room=st.integers(0, MIX_SLOTS))
    def check(kinds, room):
        if sum(mix_slots(MIX_SIZES[k]) for k in kinds) > MIX_SLOTS:
            kinds = kinds[:8]
        a, b = Loopback(log2=6), Loopback(log2=6, max_frame=MIX_TX_MAX)
        try:
            sender, rxq = a.s2m if rx_role == "master" else a.m2s
            txq, receiver = b.m2s if tx_role == "master" else b.s2m
            fillers = [frame(1000 + i, 64) for i in range(MIX_SLOTS - room)]
            assert txq.tx_frames(fillers) == len(fillers)
            frames = [frame(i, MIX_SIZES[k]) if MIX_SIZES[k] >= 4 else b""
                      for i, k in enumerate(kinds)]
            assert sender.tx_frames(frames) == len(frames)
            slot = 0
            for k, f in zip(kinds, frames):
                if k == "bad":      # the master's slots: outside the region; the slave's: too long
                    ring = 0 if rx_role == "master" else 1
                    if rx_role == "master":
                        a.poke_desc(ring, slot, offset=a.region_size)
                    else:
                        a.poke_desc(ring, slot, length=4096)
                slot += mix_slots(len(f))
            node = XConnect()
            node.poll(rxq, txq, 256, 4)
            # the model: the node sees every frame but the spoiled ones, in order
            left, full = room, False
            sent, long_, behind = [], 0, 0
            for k, f in zip(kinds, frames):
                if k == "bad":
                    continue
                if full:
                    behind += 1
                elif len(f) > MIX_TX_MAX:
                    long_ += 1
                elif mix_slots(len(f)) <= left:
                    left -= mix_slots(len(f))
                    sent.append(f)
                else:
                    full, behind = True, behind + 1
            got = []
            while True:
                more = receiver.rx_frames(MIX_SLOTS)
                if not more:
                    break
                got += more
            assert got == fillers + sent
            c = node.counters()
            assert c["packets"] == len(sent)
            assert c["bytes"] == sum(len(f) for f in sent)
            assert c["drops"]["tx frame too long"] == long_
            assert c["drops"]["tx ring full"] == behind
            assert rxq.counters()["drops"]["bad descriptor"] == kinds.count("bad")
            assert rxq.counters()["packets"] == len(kinds) - kinds.count("bad")
            assert txq.counters()["packets"] == len(fillers) + len(sent)
            assert not rxq.pending()
        finally:
            a.close()
            b.close()

    check()


def test_xconnect_writes_no_more_than_the_slave_posted():
    """A master transmit queue copies into the buffers the slave posted,
    never past the length it posted: a slave that posts 100 bytes at the
    very end of its region gets a 200-byte frame in two pieces (100 bytes
    there, the rest in its next buffer), and nothing is written past the
    region (which would fault)."""
    a, b = Loopback(log2=6), Loopback(log2=6)
    try:
        sender, rxq = a.s2m
        txq, receiver = b.m2s
        end = b.region_size - 100
        b.poke_desc(1, 0, offset=end, length=100)
        f = frame(7, 200)
        assert sender.tx_frames([f, frame(8, 200)]) == 2
        node = XConnect()
        assert node.poll(rxq, txq) == 2
        assert bytes(b.read(end, 100)) == f[:100]
        assert [d.length for d in (b.desc(1, 0), b.desc(1, 1))] == [100, 100]
        assert node.counters()["packets"] == 2 and txq.counters()["packets"] == 2
        assert len(receiver.rx_frames(64)) == 2
    finally:
        a.close()
        b.close()
