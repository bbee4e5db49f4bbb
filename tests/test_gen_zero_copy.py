"""Zero-copy transmit (memifx.stream.Stream, Queue.tx_reserve/tx_publish,
``memifx gen --zero-copy``): frames written straight into the ring's buffers.

In process, on loopback rings: every frame arrives intact in both roles and
at every size (a frame longer than the buffer the slave posted goes out
copied, chained); the slave's slots are never assumed zero, and once a slot
holds a zeros frame only its headers and stamp are written again (shown by
a peer that scribbles on a held payload: the next frame in that slot carries
the scribble); a slave posting a bad descriptor to a master that sends zero
copy is a fault, with the frames before it published and counted.

Real processes: gen --zero-copy -> sink, exact counts, in both roles, zeros
and pattern payloads checked by sink --verify full, with workers too.  The
runtime's gen with zero_copy also checks what comes back (``receive``) in
place, counting as the copying path does.  CPU budget: sinks run in
interrupt mode, so only gen spins.
"""
import struct
import subprocess
import sys
import time
from array import array

import pytest

from conftest import wait_for
from loopback import Loopback
from memifx.stream import Stream
from memifx.traffic import STAMP_PORT, Checker, Generator
from test_gen_sink import finish
from test_runtime import master, running  # noqa: F401  (running: the fixture)

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
FLOWS = 4


def stream(sizes, payload, zero_copy=True, burst=32):
    gen = Generator(sizes, flows=FLOWS, payload=payload)
    return Stream(gen, range(FLOWS), burst, headers_only=payload == "zeros" and len(sizes) == 1,
                  zero_copy=zero_copy)


def pump(st, tx, rx, count, checker):
    """Send ``count`` frames of ``st`` through (tx, rx), checking each burst."""
    buf = bytearray(64 * 9300)
    lens = array("I", [0]) * 64
    sent = 0
    for _ in range(10 * count):
        sent += st.send(tx, count - st.admitted, 4)
        checker.drain(rx, buf, lens, 16)
        if sent == count and not st.unsent:
            break
    return sent


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", ["zeros", "pattern"])
@pytest.mark.parametrize("sizes", [[64], [1518], [9000], [64, 570, 1518, 64]])
def test_loopback_every_frame_intact_both_roles(sizes, payload):
    lb = Loopback(log2=6, buffer_size=2048)
    try:
        for tx, rx in (lb.s2m, lb.m2s):
            st = stream(sizes, payload)
            c = Checker(verify="full")
            assert pump(st, tx, rx, 1000, c) == 1000
            assert (st.admitted, st.sent, st.unsent) == (1000, 1000, 0)
            assert (c.received, c.lost, c.corrupt, c.reordered) == (1000, 0, 0, 0)
            assert tx.counters()["packets"] == 1000
            assert tx.counters()["bytes"] == st.bytes == c.bytes
            assert st.ring_full > 0         # a 64-slot ring, bursts of 4 x 32
            assert tx.fault_reason() is None
    finally:
        lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("payload", ["zeros", "pattern"])
@pytest.mark.parametrize("sizes", [[64], [48, 700, 1500]])
def test_loopback_ip_mode_every_frame_intact_both_roles(sizes, payload):
    """IP-mode frames (no Ethernet header) written in place: each header
    length, payload kind and size mix has a loop of its own."""
    lb = Loopback(log2=6, buffer_size=2048)
    try:
        for tx, rx in (lb.s2m, lb.m2s):
            gen = Generator(sizes, ip_mode=True, flows=FLOWS, payload=payload)
            st = Stream(gen, range(FLOWS), 32, zero_copy=True,
                        headers_only=payload == "zeros" and len(sizes) == 1)
            c = Checker(ip_mode=True, verify="full")
            assert pump(st, tx, rx, 1000, c) == 1000
            assert (c.received, c.lost, c.corrupt, c.reordered, c.other) == (1000, 0, 0, 0, 0)
            assert tx.counters()["bytes"] == st.bytes == c.bytes
            assert tx.fault_reason() is None
    finally:
        lb.close()


@pytest.mark.timeout(30)
def test_slave_slots_never_assumed_zero_then_headers_only():
    lb = Loopback(log2=4, buffer_size=2048, n_m2s=0)
    try:
        tx, rx = lb.s2m
        slots = [lb.desc(0, i).offset for i in range(16)]
        for off in slots:                   # what an earlier user left there
            lb.write(off, b"\xa5" * 2048)
        st = stream([256], "zeros", burst=16)
        c = Checker(verify="full")
        assert pump(st, tx, rx, 16, c) == 16
        assert (c.received, c.corrupt) == (16, 0)     # payload written in full
        # Each slot now holds a zeros frame of 256 bytes: the next frame in
        # slot 3 writes headers and stamp only, so a scribble on its payload
        # (which only a peer could make) shows.  A copying stream rewrites it.
        lb.write(slots[3] + 200, b"\xff")
        assert pump(st, tx, rx, 32, c) == 16
        assert (c.received, c.corrupt) == (31, 1)
        copying = stream([256], "zeros", zero_copy=False, burst=16)
        lb.write(slots[5] + 200, b"\xff")
        c2 = Checker(verify="full")
        assert pump(copying, tx, rx, 16, c2) == 16
        assert (c2.received, c2.corrupt) == (16, 0)
        assert lb.read(slots[5] + 200, 1) == b"\0"
    finally:
        lb.close()


@pytest.mark.timeout(30)
def test_slave_slots_tracked_across_ring_wrap():
    """Bursts of 5 on a 16-slot ring: some bursts run past the ring's end
    and wrap.  What each slot holds is tracked alike either way: every
    payload written in full first (the slots start dirty), then headers and
    stamp only, so a scribble on every slot's payload shows in every frame
    after it."""
    lb = Loopback(log2=4, buffer_size=2048, n_m2s=0)
    try:
        tx, rx = lb.s2m
        slots = [lb.desc(0, i).offset for i in range(16)]
        for off in slots:
            lb.write(off, b"\xa5" * 2048)
        st = stream([256], "zeros", burst=5)
        c = Checker(verify="full")
        buf = bytearray(16 * 2048)
        lens = array("I", [0]) * 16

        def bursts(count):          # one burst a call: 5 slots on from the last
            for _ in range(count):
                assert st.send(tx, 5, 1) == 5
                assert c.drain(rx, buf, lens, 1) == 5

        bursts(9)                   # the bursts at slots 15 and 14 wrap
        assert (c.received, c.corrupt) == (45, 0)
        for off in slots:
            lb.write(off + 200, b"\xff")
        bursts(4)                   # every slot, from 13 on (wrapping at 13 and 8)
        assert (c.received, c.corrupt, c.lost) == (45, 20, 0)
    finally:
        lb.close()


# ------------------------------------------- payload "fixed": no stamps

def assert_fixed(frame, sizes, ip_mode=False):
    """``frame`` is a fixed frame: one of ``sizes``, its headers sound (IPv4
    checksum, id 0, UDP to gen's port from a flow's port), and zeros from
    where a stamp would be to its end."""
    l2 = 0 if ip_mode else 14
    assert len(frame) in sizes
    if not ip_mode:
        assert frame[12:14] == b"\x08\x00"
    ip = frame[l2:l2 + 20]
    assert sum(struct.unpack("!10H", ip)) % 0xFFFF == 0         # checksum
    assert struct.unpack_from("!HH", ip, 2) == (len(frame) - l2, 0)   # length, id
    sport, dport = struct.unpack_from("!HH", frame, l2 + 20)
    assert dport == STAMP_PORT and 1024 <= sport < 1024 + FLOWS
    assert not any(frame[l2 + 28:]), frame[l2 + 28:l2 + 48].hex()


def send_and_take(st, tx, rx, count):
    """Send ``count`` frames of ``st`` through (tx, rx); the frames received."""
    got = []
    for _ in range(10 * count):
        st.send(tx, count - st.admitted, 1)
        got += rx.rx_frames(256)
        if len(got) >= count and not st.unsent:
            break
    return got


@pytest.mark.timeout(30)
@pytest.mark.parametrize("zero_copy", [True, False], ids=["zero-copy", "copying"])
@pytest.mark.parametrize("ip_mode", [False, True], ids=["eth", "ip"])
@pytest.mark.parametrize("sizes", [[64], [1518], [64, 570, 1518, 64]])
def test_fixed_frames_both_roles(sizes, ip_mode, zero_copy):
    """Every frame arrives as a fixed frame, in both roles, from dirty slots
    on, a size mix included (a slot that held a longer one); a counting
    Checker takes each, and one that reads stamps finds none: corrupt (at
    "stamp": ours by the UDP port) or other (at "seq")."""
    sizes = [z - 14 for z in sizes] if ip_mode else sizes
    lb = Loopback(log2=6, buffer_size=2048)
    try:
        for off in [lb.desc(0, i).offset for i in range(64)]:
            lb.write(off, b"\xa5" * 2048)
        for tx, rx in (lb.s2m, lb.m2s):
            gen = Generator(sizes, ip_mode=ip_mode, flows=FLOWS, payload="fixed")
            st = Stream(gen, range(FLOWS), 32, headers_only=len(sizes) == 1,
                        zero_copy=zero_copy)
            frames = send_and_take(st, tx, rx, 500)
            assert len(frames) == st.sent == 500 and tx.fault_reason() is None
            for f in frames:
                assert_fixed(bytes(f), sizes, ip_mode)
            assert [gen.sequence(f) for f in range(FLOWS)] == [0] * FLOWS
            packed = b"".join(bytes(f) for f in frames)
            lens = array("I", [len(f) for f in frames])
            checkers = {v: Checker(ip_mode=ip_mode, verify=v) for v in ("count", "stamp", "seq")}
            for c in checkers.values():
                c.check(packed, lens)
            assert checkers["count"].counters()["packets"] == 500
            assert checkers["stamp"].counters()["corrupt"] == 500
            assert checkers["seq"].counters()["other"] == 500
    finally:
        lb.close()


@pytest.mark.timeout(30)
def test_fixed_frames_sent_as_they_lie():
    """A zero-copy slave writes a fixed frame into a slot once: after that
    only the descriptor, so a scribble on a slot's header or payload (which
    only a peer could make) goes out in every frame from that slot.  A
    copying stream rewrites the slot."""
    lb = Loopback(log2=4, buffer_size=2048, n_m2s=0)
    try:
        tx, rx = lb.s2m
        slots = [lb.desc(0, i).offset for i in range(16)]
        st = Stream(Generator([256], flows=FLOWS, payload="fixed"), range(FLOWS), 16,
                    headers_only=True, zero_copy=True)
        assert all(f[22] == 64 for f in send_and_take(st, tx, rx, 16))     # TTL
        lb.write(slots[3] + 22, b"\x07")
        lb.write(slots[3] + 200, b"\xff")
        again = send_and_take(st, tx, rx, 32)[-16:]
        assert [i for i, f in enumerate(again) if f[22] == 7 and f[200] == 0xFF] == [3]
        copying = Stream(Generator([256], flows=FLOWS, payload="fixed"), range(FLOWS), 16,
                         headers_only=True, zero_copy=False)
        for f in send_and_take(copying, tx, rx, 16):
            assert_fixed(bytes(f), [256])
    finally:
        lb.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gen_role, zero_copy, extra", [
    ("slave", True, []), ("master", True, []), ("slave", False, []), ("master", False, []),
    ("slave", True, ["--workers", "1"]),
])
def test_gen_fixed_to_counting_sink_exact(procs, sock, gen_role, zero_copy, extra):
    """gen --payload fixed -> sink --verify count, as processes (gen's
    frames made on a worker too): every frame and byte counted at both
    ends."""
    sink_role = "master" if gen_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt"
                                 % (sock, sink_role), "--verify", "count", "--zero-copy",
                                 "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s" % (sock, gen_role),
                                "--size", "1518", "--payload", "fixed", "--count", "50000",
                                "--flows", "16", "--json"] + extra
                       + (["--zero-copy"] if zero_copy else []))
    g = finish(gen, 40)
    sink.terminate()
    s = finish(sink, 40)
    assert g["packets"] == s["packets"] == 50000 and g["unsent"] == 0
    assert g["bytes"] == s["bytes"] == 50000 * 1518


@pytest.mark.timeout(30)
@pytest.mark.parametrize("posted, delivered", [
    (dict(length=512), 64),                 # short: its frame goes out copied, chained
    (dict(region=7), 5),                    # bad: a fault after the frames before it
    (dict(offset=0xFFFFFF00), 5),
    (dict(length=0), 5),
    (dict(length=0xFFFFFFFF), 5),
], ids=["short", "bad-region", "bad-offset", "empty", "huge"])
def test_master_writes_into_what_the_slave_posted(posted, delivered):
    """A zero-copy master writes each frame into the buffer the slave
    posted in that slot; the one in slot 5 is changed.  A short buffer gets
    its frame copied, chained, and every frame arrives intact.  A bad one
    (another region, outside the region, empty, endless) is a fault: the
    frames before it are published and counted, then the ring stays
    stopped."""
    lb = Loopback(log2=4, buffer_size=2048, n_s2m=0)
    try:
        tx, rx = lb.m2s
        lb.poke_desc(0, 5, **posted)
        st = stream([1518], "pattern", burst=8)
        c = Checker(verify="full")
        assert pump(st, tx, rx, 64, c) == delivered
        assert st.admitted == st.sent == delivered and st.unsent == 0
        assert (c.received, c.lost, c.corrupt, c.reordered) == (delivered, 0, 0, 0)
        assert tx.counters()["packets"] == delivered
        if delivered == 64:
            assert tx.fault_reason() is None and not any(tx.counters()["drops"].values())
        else:
            assert tx.fault_reason() is not None and "posted" in tx.fault_reason()
            assert st.send(tx, 16, 1) == 0         # the ring stays stopped
    finally:
        lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("bad_slot, delivered", [(None, 18), (14, 14), (1, 17)],
                         ids=["sound", "before-the-end", "past-the-end"])
def test_master_reads_what_was_posted_across_the_ring_end(bad_slot, delivered):
    """Bursts of 6 on a 16-slot ring: the third runs past the ring's end
    (slots 12 to 15, then 0 and 1), the part before the end and the part
    after it read separately.  Every frame of a sound ring arrives intact;
    a bad buffer posted in either part (slot 14 or 1, once the first two
    bursts were taken) stops the ring there, the frames before it
    published and counted."""
    lb = Loopback(log2=4, buffer_size=2048, n_s2m=0)
    try:
        tx, rx = lb.m2s
        st = stream([64], "pattern", burst=6)
        c = Checker(verify="full")
        buf = bytearray(16 * 2048)
        lens = array("I", [0]) * 16
        for _ in range(2):
            assert st.send(tx, 6, 1) == 6
            assert c.drain(rx, buf, lens, 1) == 6
        if bad_slot is not None:
            lb.poke_desc(0, bad_slot, region=7)
        st.send(tx, 6, 1)
        c.drain(rx, buf, lens, 1)
        assert st.sent == tx.counters()["packets"] == delivered
        assert (c.received, c.lost, c.corrupt, c.reordered) == (delivered, 0, 0, 0)
        assert (tx.fault_reason() is None) == (bad_slot is None)
    finally:
        lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True], ids=["ethernet", "ip"])
def test_zeros_payload_written_to_the_byte(ip_mode):
    """A zeros frame written whole (its buffer's bytes unknown) gets every
    byte after its stamp zeroed and none past its end: each tail length from
    0 to 24 bytes (the short ones as overlapping stores, the rest by
    memset), packed and into the buffers a slave posted to a zero-copy
    master, both over garbage."""
    first = (14 if not ip_mode else 0) + 20 + 8 + 20       # headers and stamp
    for size in range(first, first + 25):
        gen = Generator([size], ip_mode=ip_mode, payload="zeros")
        buf = bytearray(b"\xaa" * (size + 16))
        lens = array("I", [0])
        assert gen.fill(buf, lens, 1, array("I", [0]), 0, False) == (1, size)
        assert buf[first:size] == bytes(size - first), size
        assert buf[size:] == b"\xaa" * 16, size
    lb = Loopback(log2=4, buffer_size=2048, n_s2m=0)
    try:
        tx, rx = lb.m2s
        sizes = list(range(first, first + 25))
        for slot in range(16):
            lb.write(lb.desc(0, slot).offset, b"\xaa" * 2048)
        st = Stream(Generator(sizes, ip_mode=ip_mode, payload="zeros"), [0], 16,
                    zero_copy=True)
        assert st.send(tx, 16, 1) == 16
        for slot in range(16):
            d = lb.desc(0, slot)
            frame = lb.read(d.offset, d.length + 16)
            assert d.length == sizes[slot]
            assert frame[first:d.length] == bytes(d.length - first), d.length
            assert frame[d.length:] == b"\xaa" * 16, d.length
    finally:
        lb.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gen_role, size, payload, count, extra", [
    ("slave", "64", "zeros", 200000, ""),
    ("master", "64", "zeros", 200000, ""),
    ("slave", "1518", "pattern", 40000, ""),
    ("master", "1518", "pattern", 40000, ""),
    ("slave", "imix", "zeros", 40000, ",queues=2"),
    ("master", "9000", "pattern", 5000, ""),
])
def test_gen_zero_copy_to_sink_exact(procs, sock, gen_role, size, payload, count, extra):
    sink_role = "master" if gen_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt%s"
                                 % (sock, sink_role, extra), "--verify", "full", "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s%s" % (sock, gen_role, extra),
                                "--size", size, "--payload", payload, "--count", str(count),
                                "--flows", "16", "--zero-copy", "--json"])
    g = finish(gen, 40)
    sink.terminate()
    s = finish(sink, 40)
    assert g["packets"] == count and g["unsent"] == 0
    assert s["packets"] == s["received"] == count
    assert (s["lost"], s["reordered"], s["duplicated"], s["corrupt"], s["other"]) == \
        (0, 0, 0, 0, 0)
    assert s["bytes"] == g["bytes"]


@pytest.mark.timeout(60)
def test_gen_zero_copy_workers_rate_limited(procs, sock):
    """--zero-copy reaches the worker processes; --count exact under --rate."""
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=slave,rx-mode=interrupt,queues=2"
                                 % sock, "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=master,queues=2" % sock,
                                "--count", "30001", "--rate", "40000", "--flows", "8",
                                "--payload", "pattern", "--zero-copy", "--workers", "2",
                                "--json"])
    g = finish(gen, 40)
    sink.terminate()
    s = finish(sink, 40)
    assert g["packets"] == 30001 and g["unsent"] == 0
    assert s["received"] == 30001 and (s["lost"], s["corrupt"]) == (0, 0)


@pytest.mark.timeout(30)
def test_zero_copy_reaches_the_stream():
    from memifx.nodes.tester import TesterNode
    args = {"sizes": [64], "ip_mode": False, "flows": 4, "src_mac": "020000000001",
            "dst_mac": "ffffffffffff", "src_ip": "c6120001", "dst_ip": "c6130001",
            "payload": "zeros", "queues": 2, "burst": 32, "zero_copy": True}
    tester = {"send": "a", "receive": None, "receive_ip": False, "verify": "full", "gen": args,
              "count": 0, "duration": 0, "shares": [[0, 0.0]], "finished": False,
              "tx_queues": 2}
    node = TesterNode({"workers": 1, "worker": 0, "tester": tester}, [], lambda *a: None)
    assert all(st.zero_copy for st in node.sender.source.streams.values())
    r = subprocess.run(MEMIFX + ["gen", "-h"], capture_output=True, text=True, timeout=20)
    assert "--zero-copy" in r.stdout


@pytest.mark.timeout(30)
def test_pipeline_option_zero_copy(running, tmp_path):  # noqa: F811
    """The runtime's gen takes ``zero_copy`` (default off) down to its Streams."""
    dp = running.dp
    dp.add_interface("a", master(str(tmp_path / "a.sock")))
    for name, params, want in (("g0", {}, False), ("g1", {"zero_copy": True}, True)):
        p = dp.add_pipeline(name, "gen", interface="a", rate=10, **params)
        assert [st.zero_copy for st in p.node.sender.source.streams.values()] == [want]
        dp.remove_pipeline(name)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
@pytest.mark.parametrize("receiver_role", ["master", "slave"])
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "on-a-worker"])
def test_gen_receive_side_zero_copy(running, tmp_path, workers, receiver_role,  # noqa: F811
                                    zero_copy):
    """gen's ``zero_copy`` reaches its receive side too: what comes back is
    checked in place (Checker.drain_in_place, as sink --zero-copy), reading
    its own buffers (slave) or the peer's (master), in this process and on
    a worker; every frame counted exactly as the copying path counts it."""
    dp = running.dp
    path = str(tmp_path / "r.sock")
    sender_role = "slave" if receiver_role == "master" else "master"
    dp.add_interface("g", {"socket": path, "role": sender_role, "rx-mode": "interrupt"},
                     connect=False)
    dp.add_interface("r", {"socket": path, "role": receiver_role, "rx-mode": "interrupt"},
                     connect=False)
    p = dp.add_pipeline("g1", "gen", interface="g", receive="r", workers=workers,
                        zero_copy=zero_copy, count=3000, rate=20000, flows=4, size=1518)
    if workers:
        assert p.pool.tester["zero_copy"] is zero_copy
    else:
        assert p.node.receiver.zero_copy is zero_copy
    dp.connect("g")
    dp.connect("r")
    assert wait_for(p.sending_done, 20)

    def result():
        p.refresh(0.2)              # workers: a report now
        return p.receive_result()
    assert wait_for(lambda: result()[1] == 3000, 10), result()
    r, arrived = result()
    assert (r["packets"], r["received"], r["bytes"]) == (3000, 3000, 3000 * 1518)
    assert (r["lost"], r["reordered"], r["duplicated"], r["corrupt"], r["other"]) == \
        (0, 0, 0, 0, 0), r
    running.stop()


@pytest.mark.timeout(40)
def test_hostile_slave_bad_posted_buffer_to_zero_copy_master_gen(procs, abstract_sock):
    """A slave (tests/rogue.py) posts three good buffers and one outside its
    region to a master gen --zero-copy: the three carry intact frames, the
    link ends with the posted-buffer reason, gen counts exactly three."""
    import signal
    from rogue import RogueSlave
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=master" % abstract_sock,
                                "--rate", "20000", "--zero-copy", "--json"])
    r = None
    for _ in range(200):                    # until gen listens
        try:
            r = RogueSlave.connect(abstract_sock)
            break
        except OSError:
            time.sleep(0.05)
    assert r is not None
    with r:
        r.handshake()
        ring = r.m2s[0]
        for k in range(3):
            ring.put(k, length=2048, offset=r.buf(ring, k))
        ring.put(3, length=2048, offset=r.region_size)
        ring.head = 4
        assert r.outcome() == "posted buffer outside memory region"
        assert ring.tail == 3
        frames = r.take()
    c = Checker(verify="full")
    data = b"".join(frames)
    c.check(data, array("I", [len(f) for f in frames]))
    assert (c.received, c.corrupt, c.lost) == (3, 0, 0)
    gen.send_signal(signal.SIGTERM)
    g = finish(gen, 40)
    assert g["packets"] == 3 and g["interface"]["tx"][0]["packets"] == 3


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zero_copy", [False, True], ids=["copying", "zero-copy"])
def test_send_releases_the_gil(zero_copy):
    """Stream.send runs its bursts with the GIL released (the method of
    tests/test_cost.py::test_bursts_release_the_gil: with the switch
    interval at 100 s another thread moves only while this one lets go)."""
    from test_cost import Counter, steps_during
    lb = Loopback(log2=13, buffer_size=9216, n_m2s=0)
    tx, rx = lb.s2m
    st = stream([9000], "pattern", zero_copy=zero_copy, burst=256)
    buf = bytearray(lb.size * 9000)
    lens = array("I", [0]) * lb.size

    def bursts():
        assert st.send(tx, lb.size, 32) == lb.size
        assert rx.rx_batch(buf, lens) == lb.size

    old = sys.getswitchinterval()
    counter = Counter()
    sys.setswitchinterval(100)
    try:
        counter.start()
        counter.started.wait(5)
        held = steps_during(counter, lambda: sum(range(3_000_000)), times=5)
        released = steps_during(counter, bursts, times=5)
    finally:
        counter.done = True
        sys.setswitchinterval(old)
        counter.join(5)
        lb.close()
    assert held == 0
    assert released > 0
