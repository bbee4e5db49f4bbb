"""sink --zero-copy: every frame checked where it lies in the ring's buffers
(Checker.drain_in_place), in both roles, with the same counters as the
copying path; as a command (exact counts, chained jumbo frames, --verify
full over the pattern), as a runtime pipeline (in this process and on a
worker), and against a hostile slave (descriptors outside its region, a
region truncated under the sink).

CPU budget (2 CPUs shared): the sinks run with rx-mode=interrupt, so at
most gen spins, and only while it has frames to send.
"""
import os
import random
import signal
import sys
import threading
import time
from array import array

import pytest

from memifx.traffic import VERIFY_LEVELS, Checker, Generator
from conftest import wait_for
from loopback import Loopback
from rogue import RogueSlave, Scribbler
from test_checker_fast_path import stream
from test_gen_sink import finish, stop
from test_hostile import master, rogue_slave  # noqa: F401  (master: the fixture)
from test_runtime import master as runtime_master, running  # noqa: F401  (running: the fixture)

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
REASON = "memory region truncated"


def assert_clean(r, count):
    assert r["packets"] == r["received"] == count
    assert (r["lost"], r["reordered"], r["duplicated"], r["corrupt"], r["other"]) == \
        (0, 0, 0, 0, 0), r


# ------------------------------------------------------- in-process rings

def through_ring(frames, pair, checker, burst, in_place, scratch=1 << 20):
    """Send ``frames`` over one loopback ring ``burst`` at a time and check
    what arrives with ``checker``, in place or copied out (Checker.drain)."""
    buf = bytearray(scratch)
    lengths = array("I", bytes(4 * burst))
    got = 0
    for i in range(0, len(frames), burst):
        part = frames[i:i + burst]
        assert pair.tx.tx_frames(part) == len(part)
        if in_place:
            got += checker.drain_in_place(pair.rx, buf, burst, 4)
        else:
            got += checker.drain(pair.rx, buf, lengths, 4)
    return got


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", ["s2m", "m2s"], ids=["master-reads", "slave-reads"])
@pytest.mark.parametrize("buffer_size", [2048, 64], ids=["one-buffer", "chained"])
@pytest.mark.parametrize("ip_mode", [False, True], ids=["eth", "ip"])
@pytest.mark.parametrize("verify", VERIFY_LEVELS)
def test_in_place_counts_as_copying(direction, buffer_size, ip_mode, verify):
    """A stream with every case in it (lost, late, repeated, damaged
    headers, stamp and payload, foreign frames, a sender restart): checked
    in place it gives exactly the counters Checker.check gives on the same
    frames, at every level, and the ring consumed every frame (packets, no
    drops)."""
    for seed in range(3):
        frames = stream(ip_mode, random.Random(seed))
        reference = Checker(ip_mode=ip_mode, verify=verify)
        for i in range(0, len(frames), 16):
            part = frames[i:i + 16]
            reference.check(bytearray(b"".join(part)), array("I", map(len, part)))
        for in_place in (True, False):
            lb = Loopback(log2=8, buffer_size=buffer_size)
            pair = getattr(lb, direction)
            c = Checker(ip_mode=ip_mode, verify=verify)
            assert through_ring(frames, pair, c, 16, in_place) == len(frames)
            assert c.counters() == reference.counters(), (seed, in_place)
            assert (c.latency() is None) == (verify == "count")
            rc = pair.rx.counters()
            assert rc["packets"] == len(frames) and not any(rc["drops"].values())
            lb.close()
        got = reference.counters()
        assert got["packets"] == len(frames)
        assert got["bytes"] == sum(map(len, frames))
        if verify == "count":
            assert not any(v for k, v in got.items() if k not in ("packets", "bytes")), got
            continue
        assert got["lost"] and got["reordered"] and got["duplicated"]
        assert got["other"] and got["resets"]
        # at "seq" a damaged header goes unseen, and a frame is ours by its magic
        assert bool(got["corrupt"]) == (verify != "seq")


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", ["s2m", "m2s"])
def test_in_place_ring_keeps_flowing(direction):
    """Many more frames than the ring has slots, in place: the slave's
    buffers go back to its pool and the master's tail moves, so nothing
    stalls; every frame good."""
    gen = Generator([1518], flows=4)
    lb = Loopback(log2=6, buffer_size=2048)
    pair = getattr(lb, direction)
    c = Checker()
    buf = bytearray(1518 * 64)
    lengths = array("I", bytes(4 * 64))
    total = 0
    for _ in range(50):
        n, _ = gen.fill(buf, lengths, 64, array("I", range(4)))
        assert pair.tx.tx_batch(buf, lengths) == 64
        total += c.drain_in_place(pair.rx, bytearray(4096), 64, 2)
    assert total == 3200
    assert c.counters()["received"] == 3200 and c.counters()["bytes"] == 3200 * 1518
    lb.close()


@pytest.mark.timeout(30)
def test_frame_that_needs_more_scratch_is_a_counted_drop():
    """A frame that has to be copied to be checked (here: chained) but is
    longer than the scratch room is dropped "frame too long" by the ring,
    as the copying path drops a frame longer than its buffer; the frames
    around it are checked."""
    gen = Generator([300], flows=1)
    buf = bytearray(300 * 3)
    lengths = array("I", bytes(12))
    gen.fill(buf, lengths, 3, array("I", [0]))
    frames = [bytes(buf[i * 300:(i + 1) * 300]) for i in range(3)]
    lb = Loopback(log2=4, buffer_size=128)          # 300 bytes: three buffers
    c = Checker()
    assert lb.s2m.tx.tx_frames(frames) == 3
    assert c.drain_in_place(lb.s2m.rx, bytearray(200), 8, 1) == 0
    assert lb.s2m.rx.counters()["drops"]["frame too long"] == 3
    assert c.counters()["packets"] == 0
    assert lb.s2m.tx.tx_frames(frames) == 3
    assert c.drain_in_place(lb.s2m.rx, bytearray(300), 8, 1) == 3
    assert c.counters()["packets"] == 3 and c.counters()["lost"] == 0
    lb.close()


@pytest.mark.timeout(10)
def test_drain_in_place_refuses_a_transmit_queue():
    lb = Loopback(log2=4)
    with pytest.raises(ValueError):
        Checker().drain_in_place(lb.s2m.tx, bytearray(64), 8, 1)
    with pytest.raises(ValueError):
        Checker().drain_in_place(lb.s2m.rx, bytearray(0), 8, 1)
    lb.close()


# ------------------------------------------------------------ the command

@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink_role, size, count, extra", [
    ("slave", "64", 200000, []),
    ("master", "64", 200000, []),
    ("slave", "1518", 40000, []),
    ("master", "1518", 40000, []),
    ("slave", "9000", 8000, []),                # 5 chained 2048-byte buffers each
    ("master", "9000", 8000, []),
    ("slave", "1518", 40000, ["--workers", "1"]),
])
def test_gen_to_sink_zero_copy_exact(procs, sock, sink_role, size, count, extra):
    """--verify full (the default) over the pattern: every byte of every
    frame checked in place."""
    gen_role = "master" if sink_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt"
                                 % (sock, sink_role), "--zero-copy", "--json"] + extra)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s" % (sock, gen_role),
                                "--size", size, "--count", str(count), "--flows", "16",
                                "--json"])
    g = finish(gen)
    s = stop(sink)
    assert g["packets"] == count and g["unsent"] == 0
    assert_clean(s, count)
    assert s["bytes"] == g["bytes"] == count * int(size)
    assert not any(v for q in s["interface"]["rx"] for v in q["drops"].values())


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sink_role", ["slave", "master"])
@pytest.mark.parametrize("verify,extra", [("stamp", []), ("seq", []), ("seq", ["--workers", "1"]),
                                          ("count", []), ("count", ["--workers", "1"])])
def test_gen_zeros_to_sink_zero_copy_cheaper_levels(procs, sock, sink_role, verify, extra):
    """The load-test levels as commands, in the sink process and on a
    worker: stamp and seq still account for every frame by its stamp;
    count counts frames and bytes, and says so."""
    gen_role = "master" if sink_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt"
                                 % (sock, sink_role), "--zero-copy", "--verify", verify,
                                 "--json"] + extra)
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s" % (sock, gen_role), "--size",
                                "1518", "--count", "50000", "--payload", "zeros", "--json"])
    g = finish(gen)
    s = stop(sink)
    assert g["packets"] == 50000
    assert s["verify"] == verify
    assert s["bytes"] == g["bytes"] == 50000 * 1518
    if verify == "count":
        assert s["packets"] == 50000 and s["received"] == 0 and s["latency_us"] is None
    else:
        assert_clean(s, 50000)


@pytest.mark.timeout(60)
def test_sink_count_says_what_it_did_not_check(procs, sock):
    """An operator reading sink's last line at --verify count sees frames
    and rates, and that nothing was checked, not "received 0, lost 0"."""
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt" % sock,
                                 "--verify", "count"])
    finish(procs.start(MEMIFX + ["gen", "socket=%s,role=slave" % sock, "--count", "3000",
                                 "--json"]))
    sink.send_signal(signal.SIGTERM)
    out, _ = sink.communicate(timeout=15)
    assert sink.returncode == 0, out
    last = out.strip().splitlines()[-1]
    assert last.startswith("sink: 3000 frames, 192000 bytes"), out
    assert last.endswith("; counted, not checked (--verify count)") and "lost" not in last


@pytest.mark.timeout(60)
def test_zero_copy_with_pcap_copies(procs, sock, tmp_path):
    """--pcap keeps the copying path (a capture copies every frame anyway):
    the run is exact and the file holds every frame."""
    out = str(tmp_path / "cap.pcap")
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt" % sock,
                                 "--zero-copy", "--pcap", out, "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=slave" % sock, "--count", "5000",
                                "--json"])
    finish(gen)
    s = stop(sink)
    assert_clean(s, 5000)
    assert s["captured"] == 5000
    assert os.path.getsize(out) == 24 + 5000 * (16 + 64)


# ------------------------------------------------------------ the runtime

@pytest.mark.timeout(60)
@pytest.mark.parametrize("workers", [0, 1], ids=["in-process", "sink-on-worker"])
def test_sink_pipeline_zero_copy(running, tmp_path, workers):  # noqa: F811
    dp = running.dp
    path = str(tmp_path / "z.sock")
    dp.add_interface("g", runtime_master(path), connect=False)
    dp.add_interface("s", {"socket": path, "role": "slave", "rx-mode": "interrupt"},
                     connect=False)
    sink = dp.add_pipeline("s1", "sink", interface="s", workers=workers, zero_copy=True)
    gen = dp.add_pipeline("g1", "gen", interface="g", count=3000, rate=20000, flows=4,
                          size=64)
    dp.connect("g")
    dp.connect("s")
    assert wait_for(gen.sending_done, 20)

    def received():
        sink.refresh(0.2)
        return dp.state()["pipelines"]["s1"]["counters"]["receive"]["s"]
    assert wait_for(lambda: received()["received"] == 3000, 10), received()
    c = received()
    assert (c["lost"], c["corrupt"], c["reordered"], c["duplicated"]) == (0, 0, 0, 0), c
    if workers == 0:
        assert sink.node.receiver.zero_copy
    else:
        assert sink.pool.tester["zero_copy"] is True
    running.stop()


@pytest.mark.timeout(30)
def test_zero_copy_option_is_checked(running, tmp_path):  # noqa: F811
    from memifx.runtime import DataplaneError
    dp = running.dp
    dp.add_interface("a", runtime_master(str(tmp_path / "a.sock")))
    with pytest.raises(DataplaneError, match="zero_copy"):
        dp.add_pipeline("s1", "sink", interface="a", zero_copy="yes")


# ------------------------------------------------------- a hostile slave

def stamped(n, size=128):
    gen = Generator([size], flows=1)
    buf = bytearray(n * size)
    lengths = array("I", bytes(4 * n))
    gen.fill(buf, lengths, n, array("I", [0]))
    return [bytes(buf[i * size:(i + 1) * size]) for i in range(n)]


def rogue_for(path):
    """A RogueSlave connected to the sink at ``path`` once it listens."""
    got = []

    def connect():
        try:
            got.append(RogueSlave.connect(path))
        except OSError:
            return False
        return True
    assert wait_for(connect, 10, 0.05)
    return got[0]


@pytest.mark.timeout(60)
def test_hostile_descriptors_are_counted_drops(procs, abstract_sock):
    """Descriptors outside the region, among good frames: each one a
    counted "bad descriptor" drop, never read; the good frames checked in
    place; the link stays up."""
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt"
                                 % abstract_sock, "--zero-copy", "--json"])
    r = rogue_for(abstract_sock)
    r.handshake()
    ring = r.s2m[0]
    frames = stamped(6)
    size = r.region_size
    bad = [dict(region=1, offset=r.buf(ring, 0), length=60),
           dict(offset=size - 32, length=64),
           dict(offset=0xFFFFFF00, length=0x200),
           dict(offset=0, length=0xFFFFFFFF)]
    for f, b in zip(frames, bad + [None, None]):
        r.send_frame(f)
        if b is not None:
            ring.put(ring.head, **b)
            ring.head = ring.head + 1
    os.eventfd_write(r.efds[0], 1)
    assert wait_for(lambda: ring.tail == ring.head, 10)
    s = stop(sink)
    assert_clean(s, 6)
    assert s["interface"]["rx"][0]["drops"]["bad descriptor"] == len(bad)
    r.close()


@pytest.mark.timeout(60)
def test_truncated_region_ends_the_link_not_the_sink(procs, abstract_sock):
    """The slave shrinks its (unsealable) region and publishes a frame in
    the lost pages: the in-place check reads zeros (counted "other"), the
    link ends with the reason, the sink carries on and reports."""
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt"
                                 % abstract_sock, "--zero-copy", "--json"])
    r = rogue_for(abstract_sock)
    r.handshake(sealable=False)
    ring = r.s2m[0]
    for f in stamped(3):
        r.send_frame(f)
    os.eventfd_write(r.efds[0], 1)
    assert wait_for(lambda: ring.tail == ring.head, 10)
    r.cut_region("buffers")
    assert r.outcome() == REASON
    r.close()
    assert sink.poll() is None                  # alive
    s = stop(sink)
    assert s["received"] == 3 and s["other"] == 1 and s["packets"] == 4
    assert s["interface"]["memory_faults"] == 1


@pytest.mark.timeout(30)
def test_in_place_check_survives_a_peer_rewriting_everything(master):  # noqa: F811
    """While stamped frames flow, one thread rewrites the ring's descriptors
    at random and another flips random bytes of its buffers (headers, stamps,
    payload) under the in-place check.  No crash, the link stays up, and
    every frame the ring delivered is counted exactly once: received,
    corrupt or other."""
    r = rogue_slave(master, init=False)
    r.handshake()
    assert master.wait_connected(5)
    ring = r.s2m[0]
    frames = stamped(64)
    sc = Scribbler([ring], r.region_size, seed=11)
    halt = threading.Event()

    def flip():
        rng = random.Random(5)
        lo = r.buf(ring, 0)
        hi = lo + ring.size * r.buffer_size
        while not halt.is_set():
            for _ in range(200):
                r.mem[rng.randrange(lo, hi)] = rng.getrandbits(8)
            time.sleep(0)
    flipper = threading.Thread(target=flip, daemon=True)
    c = Checker()
    scratch = bytearray(1 << 20)
    (q,) = master.active_queues("rx")
    delivered = k = 0
    sc.start()
    flipper.start()
    def seen_every_kind(queue):
        # what the assertions below need to have happened at least once:
        # on a loaded machine the scribblers may take longer than a second
        got = c.counters()
        return (sc.writes > 1000 and delivered > 100 and got["corrupt"] and got["received"]
                and queue.counters()["drops"]["bad descriptor"] > 0)

    try:
        start = time.monotonic()
        while True:
            waited = time.monotonic() - start
            if waited >= 1.0 and (waited >= 20.0 or seen_every_kind(q)):
                break
            free = ring.size - ((ring.head - ring.tail) & 0xFFFF)
            for _ in range(min(free, 16)):
                r.send_frame(frames[k % len(frames)])
                k += 1
            delivered += c.drain_in_place(q, scratch, 64, 4)
            time.sleep(0.0005)
    finally:
        halt.set()
        sc.stop()
        flipper.join(5)
    st = q.counters()
    del q
    assert master.connected
    assert sc.writes > 1000 and delivered > 100
    got = c.counters()
    assert got["packets"] == delivered == st["packets"]
    assert got["received"] + got["corrupt"] + got["other"] == delivered
    assert got["corrupt"] and got["received"]
    assert st["drops"]["bad descriptor"] > 0
    r.close()


@pytest.mark.timeout(60)
def test_hostile_master_lengths_are_counted_drops(procs, abstract_sock):
    """sink --zero-copy as slave: its own buffers, read in place; a master
    that publishes lengths longer than the buffers gets counted "bad
    descriptor" drops, nothing read past a buffer, the good frames checked."""
    from rogue import RogueMaster
    m = RogueMaster.listen(abstract_sock)
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=slave,rx-mode=interrupt"
                                 % abstract_sock, "--zero-copy", "--json"])
    try:
        m.accept()
        m.handshake()
        ring = m.m2s[0]
        assert wait_for(lambda: ring.head == ring.size, 10)       # posted
        frames = stamped(4)
        m.give(frames[0])
        m.give(b"x" * 60, length=2049)
        m.give(frames[1])
        m.give(b"y" * 60, length=0xFFFFFFFF)
        m.give(frames[2])
        m.give(frames[3])
        for fd in m.efds:
            os.eventfd_write(fd, 1)
        assert wait_for(lambda: ring.head == ring.size + 6, 10)   # consumed, reposted
        s = stop(sink)
    finally:
        m.close()
    assert_clean(s, 4)
    assert s["interface"]["rx"][0]["drops"]["bad descriptor"] == 2
