"""The ring data path (memifx/ring.pyx) on in-process loopback pairs.

No sockets and no control channel: tests/loopback.py lays out the slave's
region and builds both sides' queues on it.  "s2m" is slave tx -> master rx,
"m2s" is master tx -> slave rx (the master copies into the buffers the slave
posted).
"""
import contextlib
import gc
import os
import random
import struct
from array import array

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from memifx.errors import MemifError
from memifx.memory import Memory
from memifx.ring import MAX_FRAME_SIZE, Queue

from loopback import Loopback, push

DIRECTIONS = ("s2m", "m2s")
NEXT = 1                                    # descriptor flag: chain continues

# Frame contents: slices of one random block, so every frame differs.
BLOCK = random.Random(20).randbytes(64 * 1024)


def frame(size, tag=0):
    start = (tag * 131 + size * 7) % (len(BLOCK) - 9216)
    return BLOCK[start:start + size]


def slots(size, bs):
    """Descriptors a frame of ``size`` takes over ``bs``-byte buffers."""
    return max(1, -(-size // bs))


def pair(lb, direction):
    return lb.s2m if direction == "s2m" else lb.m2s


def ring_no(lb, direction):
    return 0 if direction == "s2m" else len(lb.s2m_pairs)


def no_drops(q):
    return all(v == 0 for v in q.counters()["drops"].values())


def pack(frames):
    return b"".join(frames), array("I", [len(f) for f in frames])


def unpack(buf, lengths, k):
    out, off = [], 0
    for n in lengths[:k]:
        out.append(bytes(buf[off:off + n]))
        off += n
    return out


# --------------------------------------------------------------- copy paths

@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize("bs,log2", [(128, 8), (2048, 6)])
def test_every_size_crosses_intact(direction, bs, log2):
    """1..9216 bytes, chained over small buffers, arrive byte-identical and in order."""
    lb = Loopback(log2=log2, buffer_size=bs)
    frames = [frame(n) for n in range(1, 9217)]
    got = push(pair(lb, direction), frames)
    assert len(got) == len(frames)
    assert got == frames
    tx, rx = pair(lb, direction)
    total = sum(len(f) for f in frames)
    for q in (tx, rx):
        c = q.counters()
        assert (c["packets"], c["bytes"]) == (len(frames), total)
        assert no_drops(q)
    # Every descriptor went through: the counters in the header agree.
    used = sum(slots(len(f), bs) for f in frames) & 0xFFFF
    head, tail = lb.counters(ring_no(lb, direction))
    assert tail == used
    assert head == (used if direction == "s2m" else (used + lb.size) & 0xFFFF)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_empty_frame_takes_one_slot(direction):
    lb = Loopback(log2=3, buffer_size=128)
    tx, rx = pair(lb, direction)
    assert tx.tx_frames([b"", b"a", b""]) == 3
    assert rx.rx_frames(8) == [b"", b"a", b""]
    assert lb.counters(ring_no(lb, direction))[1] == 3
    assert rx.counters()["bytes"] == 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_counters_wrap_at_u16(direction):
    """More than 65536 slots through a 16-slot ring: content and order hold,
    and head/tail in the shared header wrap around."""
    lb = Loopback(log2=4, buffer_size=128)
    tx, rx = pair(lb, direction)
    ring = ring_no(lb, direction)
    sizes = [4, 60, 128, 129, 255, 300, 383]            # 1 to 3 slots each
    frames = [struct.pack("<I", i) + frame(sizes[i % 7] - 4, i) for i in range(72000)]
    need = sum(slots(len(f), 128) for f in frames)
    assert need > 2 * 65536
    out, i, wraps, last_tail = [], 0, 0, 0
    while i < len(frames):
        i += tx.tx_frames(frames[i:i + 16])
        out.extend(rx.rx_frames(16))
        head, tail = lb.counters(ring)
        if tail < last_tail:
            wraps += 1
        last_tail = tail
    out.extend(rx.rx_frames(16))
    assert out == frames
    assert wraps == need // 65536
    head, tail = lb.counters(ring)
    assert tail == need & 0xFFFF
    assert (head - tail) & 0xFFFF == (0 if direction == "s2m" else 16)
    total = sum(len(f) for f in frames)
    for q in (tx, rx):
        assert (q.counters()["packets"], q.counters()["bytes"]) == (len(frames), total)
    # Still working after the wrap, with a chain as long as the ring.
    big = frame(16 * 128, 5)
    assert tx.tx_frames([big]) == 1
    assert rx.rx_frames(4) == [big]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_chain_straddles_ring_end(direction):
    lb = Loopback(log2=4, buffer_size=128)
    tx, rx = pair(lb, direction)
    ring = ring_no(lb, direction)
    a = frame(10 * 128, 1)                 # slots 0..9
    assert tx.tx_frames([a]) == 1
    assert rx.rx_frames(4) == [a]
    b = frame(12 * 128 - 5, 2)             # slots 10..15 then 0..5
    assert tx.tx_frames([b]) == 1
    order = list(range(10, 16)) + list(range(0, 6))
    descs = [lb.desc(ring, s) for s in order]
    assert [d.flags & NEXT for d in descs] == [NEXT] * 11 + [0]
    assert [d.length for d in descs] == [128] * 11 + [123]
    # The data sits in the buffers the descriptors name, in chain order.
    assert b"".join(lb.read(d.offset, d.length) for d in descs) == b
    assert rx.rx_frames(4) == [b]
    assert no_drops(rx)


# ------------------------------------------------------------- back-pressure

@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_full_ring_takes_fewer(direction):
    lb = Loopback(log2=4, buffer_size=2048)
    tx, rx = pair(lb, direction)
    frames = [frame(64, i) for i in range(20)]
    assert tx.tx_frames(frames) == 16
    assert tx.counters()["ring_full"] == 1
    assert tx.tx_frames(frames[16:]) == 0
    assert tx.counters()["ring_full"] == 2
    assert tx.counters()["packets"] == 16
    assert rx.rx_frames(64) == frames[:16]
    assert tx.tx_frames(frames[16:]) == 4
    assert rx.rx_frames(64) == frames[16:]
    assert tx.counters()["packets"] == rx.counters()["packets"] == 20


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_empty_frame_waits_for_a_slot(direction):
    """Regression: an empty frame offered to a full ring was counted as sent
    and silently lost (it had nothing left to copy, so it looked complete)."""
    lb = Loopback(log2=2, buffer_size=64)
    tx, rx = pair(lb, direction)
    assert tx.tx_frames([frame(193)]) == 1       # 4 slots: the ring is full
    assert tx.tx_frames([b"", b""]) == 0
    assert tx.counters()["packets"] == 1 and tx.counters()["ring_full"] == 1
    assert rx.rx_frames(4) == [frame(193)]
    assert tx.tx_frames([b"", b"", b"", b"", b""]) == 4
    assert rx.rx_frames(8) == [b""] * 4
    assert tx.counters()["packets"] == rx.counters()["packets"] == 5


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_chain_is_never_published_in_part(direction):
    lb = Loopback(log2=4, buffer_size=128)
    tx, rx = pair(lb, direction)
    ring = ring_no(lb, direction)
    a, b = frame(10 * 128, 1), frame(10 * 128, 2)
    assert tx.tx_frames([a]) == 1
    before = lb.counters(ring)
    assert tx.tx_frames([b]) == 0          # 6 slots free, 10 needed
    assert lb.counters(ring) == before
    assert tx.counters()["ring_full"] == 1
    assert rx.rx_frames(4) == [a]
    assert tx.tx_frames([b]) == 1
    assert rx.rx_frames(4) == [b]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_frame_larger_than_ring_is_dropped_not_stalled(direction):
    lb = Loopback(log2=4, buffer_size=128)
    tx, rx = pair(lb, direction)
    small = frame(100)
    offered = [frame(16 * 128 + 1), small, b"\0" * (MAX_FRAME_SIZE + 1), small]
    assert tx.tx_frames(offered) == 4
    c = tx.counters()
    assert c["drops"]["frame too long"] == 2
    assert (c["packets"], c["bytes"]) == (2, 200)
    assert rx.rx_frames(8) == [small, small]


# ------------------------------------------------------- tx_batch / rx_batch

@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_batch_round_trip(direction):
    lb = Loopback(log2=6, buffer_size=256)
    tx, rx = pair(lb, direction)
    frames = [frame(n, n) for n in (1, 64, 255, 256, 257, 1500, 0, 9000, 3)]
    buf, lengths = pack(frames)
    assert tx.tx_batch(buf, lengths) == len(frames)
    out, olen = bytearray(20000), array("I", [0]) * 32
    k = rx.rx_batch(out, olen)
    assert k == len(frames)
    assert list(olen[:k]) == [len(f) for f in frames]
    assert unpack(out, olen, k) == frames
    assert tx.counters()["bytes"] == rx.counters()["bytes"] == len(buf)
    assert tx.counters()["packets"] == rx.counters()["packets"] == len(frames)
    # Any writable / readable buffer and uint32 arrays work.
    assert tx.tx_batch(memoryview(buf), memoryview(lengths)) == len(frames)
    out2 = array("B", bytes(20000))
    assert rx.rx_batch(out2, olen) == len(frames)
    assert unpack(out2, olen, len(frames)) == frames


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_rx_batch_stops_when_full(direction):
    lb = Loopback(log2=5, buffer_size=2048)
    tx, rx = pair(lb, direction)
    frames = [frame(100, i) for i in range(10)]
    assert tx.tx_frames(frames) == 10
    # Room for 3.5 frames: takes 3, leaves the rest on the ring.
    out, olen = bytearray(350), array("I", [0]) * 16
    assert rx.rx_batch(out, olen) == 3
    assert unpack(out, olen, 3) == frames[:3]
    # Lengths array of 2: takes 2.
    out = bytearray(4096)
    olen2 = array("I", [0, 0])
    assert rx.rx_batch(out, olen2) == 2
    assert unpack(out, olen2, 2) == frames[3:5]
    assert rx.rx_frames(16) == frames[5:]
    assert rx.counters()["packets"] == 10 and no_drops(rx)
    # A frame longer than the whole buffer can never be taken: dropped, not stuck.
    assert tx.tx_frames([frame(500), frame(50)]) == 2
    small = bytearray(100)
    assert rx.rx_batch(small, olen) == 1
    assert rx.counters()["drops"]["frame too long"] == 1
    assert bytes(small[:50]) == frame(50) and olen[0] == 50


RX_MIX = {"usual": 200, "small": 60, "empty": 0, "chained": 3000, "bad": 200}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", DIRECTIONS)
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(RX_MIX)), min_size=1, max_size=30),
       room=st.integers(1, 4000), maxf=st.integers(1, 40))
def test_rx_batch_any_burst_matches_a_frame_by_frame_model(direction, kinds, room, maxf):
    """rx_batch (Queue.rx_copy: the usual one-slot frames in one pass, gather
    and commit for the rest) over any mix of usual, small, empty, chained
    and spoiled frames, into ``room`` bytes and ``maxf`` lengths: it takes
    exactly what a frame-by-frame walk takes, in order.  Each frame counts
    toward ``maxf``; a spoiled descriptor is dropped "bad descriptor"; a
    frame that does not fit what is left stops the call, unless it is the
    first and can never fit ("frame too long").  A second call with room
    for everything takes the rest."""
    lb = Loopback(log2=6, buffer_size=2048)
    try:
        tx, rx = pair(lb, direction)
        frames = [frame(RX_MIX[k], i) for i, k in enumerate(kinds)]
        assert tx.tx_frames(frames) == len(frames)
        ring = 0 if direction == "s2m" else 1
        slot = 0
        for k, f in zip(kinds, frames):
            if k == "bad":      # the master reads a region offset; the slave, the length
                if direction == "s2m":
                    lb.poke_desc(ring, slot, offset=lb.region_size)
                else:
                    lb.poke_desc(ring, slot, length=4096)
            slot += slots(len(f), 2048)
        first, rest, bad, too_long, seen, off = [], [], 0, 0, 0, 0
        for k, f in zip(kinds, frames):
            if rest or seen == maxf or (k != "bad" and off + len(f) > room and first):
                rest.append((k, f))         # this one and all after it stay
                continue
            seen += 1
            if k == "bad":
                bad += 1
            elif off + len(f) > room:
                too_long += 1
            else:
                first.append(f)
                off += len(f)
        out, olen = bytearray(room), array("I", [0]) * maxf
        n = rx.rx_batch(out, olen)
        assert unpack(out, olen, n) == first
        big, blen = bytearray(100000), array("I", [0]) * 64
        m = rx.rx_batch(big, blen)
        assert unpack(big, blen, m) == [f for k, f in rest if k != "bad"]
        c = rx.counters()
        assert c["drops"]["bad descriptor"] == kinds.count("bad")
        assert c["drops"]["frame too long"] == too_long
        assert c["packets"] == n + m == len(frames) - kinds.count("bad") - too_long
        assert not rx.pending()
    finally:
        lb.close()


TX_MIX = {"usual": 200, "small": 60, "empty": 0, "chained": 3000, "too long": 5000}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("direction", DIRECTIONS)
@settings(max_examples=80, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(kinds=st.lists(st.sampled_from(sorted(TX_MIX)), min_size=1, max_size=40),
       busy=st.integers(0, 63), short=st.sets(st.integers(0, 63), max_size=8))
def test_tx_batch_any_burst_matches_a_frame_by_frame_model(direction, kinds, busy, short):
    """tx_batch (Queue.tx_packed: the usual frames in one pass, tx_copy for
    the rest) over any mix of usual, small, empty, chained and too long
    frames, into a ring with ``busy`` of its 64 slots still unconsumed: it
    takes exactly what a frame-by-frame walk takes, in order.  A frame
    longer than max_frame (4000) is dropped "frame too long" and taken; a
    frame needs the slots its bytes fill (an empty one, one slot); the
    first that does not fit stops the call (ring_full).  M2S: the slots in
    ``short`` hold a posted buffer of 100 bytes, which the master fills
    and chains on from (the one-pass loop leaves such a slot to tx_copy)."""
    lb = Loopback(log2=6, buffer_size=2048, max_frame=4000)
    try:
        tx, rx = pair(lb, direction)
        fill = [frame(10, 1000 + i) for i in range(busy)]
        buf, lengths = pack(fill)
        assert tx.tx_batch(buf, lengths) == busy
        caps = [2048] * 64
        if direction == "m2s":
            for s in short:
                if s >= busy:
                    lb.poke_desc(ring_no(lb, direction), s, length=100)
                    caps[s] = 100
        frames = [frame(TX_MIX[k], i) for i, k in enumerate(kinds)]
        taken, sent, too_long, slot = 0, [], 0, busy
        for f in frames:
            if len(f) > 4000:
                too_long += 1
                taken += 1
                continue
            end, got = slot, 0
            while end < 64 and (got < len(f) or end == slot):
                got += caps[end]
                end += 1
            if got < len(f) or end == slot:
                break                       # ring full: this one and the rest stay
            slot = end
            sent.append(f)
            taken += 1
        buf, lengths = pack(frames)
        assert tx.tx_batch(buf, lengths) == taken
        c = tx.counters()
        assert c["packets"] == busy + len(sent)
        assert c["bytes"] == 10 * busy + sum(map(len, sent))
        assert c["drops"]["frame too long"] == too_long
        assert c["ring_full"] == (1 if taken < len(frames) else 0)
        out, olen = bytearray(400000), array("I", [0]) * 64
        got = unpack(out, olen, rx.rx_batch(out, olen))
        assert got == fill + sent
        assert no_drops(rx)
    finally:
        lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_tx_batch_limits(direction):
    lb = Loopback(log2=4, buffer_size=2048)
    tx, rx = pair(lb, direction)
    frames = [frame(60, i) for i in range(40)]
    buf, lengths = pack(frames)
    with pytest.raises(ValueError):
        tx.tx_batch(buf[:-1], lengths)          # lengths add up to more
    assert tx.counters()["packets"] == 0
    assert tx.tx_batch(buf, lengths) == 16       # ring size
    assert tx.counters()["ring_full"] == 1
    out, olen = bytearray(4096), array("I", [0]) * 64
    assert unpack(out, olen, rx.rx_batch(out, olen)) == frames[:16]
    assert tx.tx_batch(b"", array("I")) == 0
    with pytest.raises(ValueError):
        rx.tx_batch(buf, lengths)                # not a transmit queue
    with pytest.raises(ValueError):
        tx.rx_batch(out, olen)


# ------------------------------------------------------ zero-copy receive

def held_slot_offsets(lb, slots):
    """Region offsets of the buffers the slave posted in these M2S slots (as
    its descriptors say: the slave scatters its buffers, see ring.scatter)."""
    return [lb.desc(len(lb.s2m_pairs), s).offset for s in slots]


@pytest.mark.timeout(30)
def test_rx_buffers_view_shared_memory():
    lb = Loopback(log2=4, buffer_size=128)
    mtx, srx = lb.m2s
    frames = [frame(100, 1), frame(300, 2), frame(128, 3)]
    assert mtx.tx_frames(frames) == 3
    bufs = srx.rx_buffers(8)
    assert [len(b) for b in bufs] == [100, 128, 128, 44, 128]
    assert [b.chained for b in bufs] == [False, True, True, False, False]
    assert all(b.valid and b.capacity == 128 for b in bufs)
    assert bufs[0].bytes == frames[0]
    assert b"".join(bytes(b) for b in bufs[1:4]) == frames[1]
    assert bytes(bufs[4]) == frames[2]
    assert srx.zc_held == 5
    assert srx.counters()["packets"] == 3
    assert srx.counters()["bytes"] == 528

    # The views are the shared buffers themselves, writable in place.
    offs = held_slot_offsets(lb, range(5))
    with memoryview(bufs[1]) as m:
        assert (m.format, m.itemsize, m.nbytes, m.readonly) == ("B", 1, 128, False)
        m[:4] = b"ZCZC"
        assert lb.read(offs[1], 4) == b"ZCZC"
        assert m.tobytes() == lb.read(offs[1], 128)

    # Held buffers are not handed back to the master: only 11 slots free.
    assert mtx.tx_frames([frame(64, i) for i in range(16)]) == 11
    assert bytes(bufs[0]) == frames[0]           # untouched

    # A live view blocks the release, and nothing is released.
    m = memoryview(bufs[2])
    with pytest.raises(BufferError):
        srx.release_buffers(bufs)
    assert all(b.valid for b in bufs) and srx.zc_held == 5
    m.release()
    srx.release_buffers(bufs)
    assert srx.zc_held == 0
    for b in bufs:
        assert not b.valid and len(b) == 0
        with pytest.raises(BufferError):
            memoryview(b)
        with pytest.raises(BufferError):
            b.bytes
        assert "released" in repr(b)
    srx.release_buffers(bufs)                    # twice: no-op
    assert len(srx.rx_frames(16)) == 11
    # The five slots came back: the master fills the whole ring again.
    assert mtx.tx_frames([frame(64, i) for i in range(16)]) == 16


@pytest.mark.timeout(30)
def test_rx_buffers_released_piecewise():
    """Regression: releasing part of a batch used to count as the whole batch,
    reposting buffers the application still held (the master overwrote them)."""
    lb = Loopback(log2=3, buffer_size=128)
    mtx, srx = lb.m2s
    frames = [frame(128, i) for i in range(4)]
    assert mtx.tx_frames(frames) == 4
    bufs = srx.rx_buffers(8)
    assert len(bufs) == 4
    srx.release_buffers(bufs[:1])
    assert srx.zc_held == 3
    assert not bufs[0].valid and bufs[1].valid
    # Only the released buffer is reposted: the master gets it and the 4
    # never used, and the three still held are not touched.
    assert mtx.tx_frames([b"\xff" * 128] * 8) == 5
    assert [bytes(b) for b in bufs[1:]] == frames[1:]
    srx.release_buffers(bufs[1:3])
    srx.release_buffers(bufs)                    # the last live one, and some dead
    assert srx.zc_held == 0
    assert srx.rx_frames(8) == [b"\xff" * 128] * 5
    assert mtx.tx_frames([b"\xee" * 128] * 8) == 8


@pytest.mark.timeout(30)
def test_release_buffers_refuses_foreign_buffers():
    """Regression: a buffer of another queue used to be accepted and to
    release this queue's batch."""
    lb = Loopback(log2=3, buffer_size=128, n_m2s=2)
    (t0, r0), (t1, r1) = lb.m2s_pairs
    assert t0.tx_frames([b"a"]) == 1 and t1.tx_frames([b"b"]) == 1
    b0, b1 = r0.rx_buffers(4), r1.rx_buffers(4)
    with pytest.raises(ValueError):
        r0.release_buffers(b1)
    assert b1[0].valid and r0.zc_held == 1 and r1.zc_held == 1
    r0.release_buffers(b0)
    r1.release_buffers(b1)
    assert r0.zc_held == r1.zc_held == 0


@pytest.mark.timeout(30)
def test_rx_buffers_mixed_with_copy_receive():
    lb = Loopback(log2=3, buffer_size=128)
    mtx, srx = lb.m2s
    assert mtx.tx_frames([b"1", b"2"]) == 2
    bufs = srx.rx_buffers(1)
    assert [bytes(b) for b in bufs] == [b"1"]
    assert srx.rx_frames(4) == [b"2"]            # copied: its buffer is free again
    assert mtx.tx_frames([b"x"] * 8) == 7        # all but the one held
    srx.release_buffers(bufs)
    assert srx.rx_frames(8) == [b"x"] * 7
    assert mtx.tx_frames([b"y"] * 8) == 8


@pytest.mark.timeout(30)
def test_rx_pool_keeps_the_ring_full_while_buffers_are_held():
    """With a pool of two buffers per slot, a whole ring's worth of held
    zero-copy buffers leaves the ring fully posted: the master can fill it
    again, the held buffers are never overwritten, and they come back in any
    order."""
    lb = Loopback(log2=3, buffer_size=128, rx_pool=2)
    mtx, srx = lb.m2s
    first = [frame(128, i) for i in range(8)]
    assert mtx.tx_frames(first) == 8
    held = srx.rx_buffers(8)
    assert [bytes(b) for b in held] == first and srx.zc_held == 8
    second = [frame(100, 100 + i) for i in range(8)]
    assert mtx.tx_frames(second) == 8                # the ring was posted again at once
    assert [bytes(b) for b in held] == first         # held buffers untouched
    assert srx.rx_frames(8) == second
    # back in a scrambled order, a few at a time
    for group in (held[5:], held[:2], held[2:5]):
        srx.release_buffers(list(reversed(group)))
    assert srx.zc_held == 0
    for round in range(40):                          # every buffer cycles through
        batch = [frame(64 + round % 60, 1000 + round * 8 + i) for i in range(8)]
        assert mtx.tx_frames(batch) == 8
        with_views = srx.rx_buffers(8)
        assert [bytes(b) for b in with_views] == batch
        srx.release_buffers(with_views[::-1])


@pytest.mark.timeout(30)
@pytest.mark.parametrize("burst", [16, 11], ids=["whole-ring", "wrapping"])
def test_slave_rx_posts_each_slot_its_own_buffer_again(burst):
    """A slave whose ring is fully posted gives each slot it consumes its
    own buffer back (no round trip through the pool, which reversed them),
    every descriptor rewritten whole from its own record: a master that
    scribbled on one has it put right, and nothing it wrote there is used.
    Bursts of 11 on the 16-slot ring run past its end (slots to the end,
    then from its start) at most bursts."""
    lb = Loopback(log2=4, buffer_size=256, n_s2m=0, rx_pool=2)
    try:
        mtx, srx = lb.m2s
        posted = [lb.desc(0, slot) for slot in range(16)]
        sent = 0
        for lap in range(80 // burst):
            batch = [frame(60 + lap, lap * burst + i) for i in range(burst)]
            assert mtx.tx_frames(batch) == burst
            if lap == 2:        # after the master's publish, before the slave reads
                lb.poke_desc(0, (sent + 3) % 16, offset=0xFFFFFF00, region=9, metadata=7)
            sent += burst
            buf, lens = bytearray(16 * 256), array("I", [0]) * 16
            assert srx.rx_batch(buf, lens) == burst
            ends = [sum(lens[:i + 1]) for i in range(burst)]         # packed
            got = [bytes(buf[e - n:e]) for e, n in zip(ends, lens)]
            assert srx.rx_batch(buf, lens) == 0
            assert got == batch
            assert [lb.desc(0, slot) for slot in range(16)] == posted
        assert srx.counters()["packets"] == sent
    finally:
        lb.close()


@pytest.mark.timeout(30)
def test_rx_pool_exhausted_is_back_pressure_not_loss():
    """Hold more than the pool can spare: the ring runs dry (the master sees
    a full ring), nothing is overwritten, and releasing refills it."""
    lb = Loopback(log2=2, buffer_size=128, rx_pool=2)
    mtx, srx = lb.m2s
    held = []
    for i in range(2):
        assert mtx.tx_frames([frame(64, 10 * i + k) for k in range(4)]) == 4
        held += srx.rx_buffers(4)
    assert srx.zc_held == 8
    assert mtx.tx_frames([b"z" * 64]) == 0          # all 8 pool buffers are lent out
    assert [bytes(b) for b in held] == [frame(64, 10 * i + k) for i in range(2) for k in range(4)]
    srx.release_buffers(held[:3])
    assert mtx.tx_frames([b"z" * 64] * 8) == 3
    srx.release_buffers(held)
    assert srx.rx_frames(8) == [b"z" * 64] * 3
    assert mtx.tx_frames([b"y" * 64] * 8) == 4


@pytest.mark.timeout(30)
def test_rx_buffers_is_slave_only():
    lb = Loopback(log2=3, buffer_size=128)
    with pytest.raises(MemifError):
        lb.s2m.rx.rx_buffers(4)
    with pytest.raises(ValueError):
        lb.s2m.tx.rx_buffers(4)


# ----------------------------------------------------- zero-copy transmit

@pytest.mark.timeout(30)
def test_tx_alloc_commit():
    lb = Loopback(log2=4, buffer_size=256)
    stx, mrx = lb.s2m
    bufs = stx.tx_alloc(4)
    assert len(bufs) == 4
    assert all(len(b) == 256 and b.capacity == 256 and not b.chained for b in bufs)
    data = [frame(n, n) for n in (10, 256, 77, 5)]
    for b, d in zip(bufs, data):
        with memoryview(b) as m:
            m[:len(d)] = d
    with pytest.raises(MemifError):
        stx.tx_frames([b"x"])                    # allocation outstanding
    with pytest.raises(ValueError):
        stx.tx_commit([bufs[1]], [10])           # out of order
    with pytest.raises(ValueError):
        stx.tx_commit(bufs[:1], [257])           # longer than the buffer
    with pytest.raises(ValueError):
        stx.tx_commit(bufs[:2], [1])
    m = memoryview(bufs[0])
    with pytest.raises(BufferError):
        stx.tx_commit(bufs[:1], [10])            # still exported
    m.release()
    assert stx.tx_commit(bufs[:2], [10, 256]) == 2
    assert mrx.rx_frames(8) == data[:2]
    # Committed and voided buffers are all dead now.
    for b in bufs:
        assert not b.valid and len(b) == 0
        with pytest.raises(BufferError):
            memoryview(b)
    with pytest.raises(MemifError):
        stx.tx_commit(bufs[2:3], [77])           # voided by the commit
    c = stx.counters()
    assert (c["packets"], c["bytes"]) == (2, 266)
    assert mrx.counters()["bytes"] == 266
    # The voided slots are free again: copy transmit works, in order.
    assert stx.tx_frames([b"after"]) == 1
    assert mrx.rx_frames(8) == [b"after"]


@pytest.mark.timeout(30)
def test_tx_alloc_limits():
    lb = Loopback(log2=4, buffer_size=256)
    stx, mrx = lb.s2m
    assert stx.tx_frames([b"q"] * 14) == 14
    bufs = stx.tx_alloc(8)
    assert len(bufs) == 2                        # only two slots free
    assert stx.tx_alloc(8) == []
    assert stx.tx_commit([], []) == 0            # void everything
    assert not bufs[0].valid
    assert len(mrx.rx_frames(16)) == 14
    # Two allocations in a row, committed as one sequence across the ring end.
    first, second = stx.tx_alloc(3), stx.tx_alloc(3)
    both = first + second
    for i, b in enumerate(both):
        memoryview(b)[:1] = bytes([65 + i])
    assert stx.tx_commit(both, [1] * 6) == 6
    assert mrx.rx_frames(16) == [b"A", b"B", b"C", b"D", b"E", b"F"]
    with pytest.raises(MemifError):
        lb.m2s.tx.tx_alloc(1)                    # master side


# ------------------------------------------------------------- link down

@pytest.mark.timeout(30)
def test_close_while_buffers_held():
    lb = Loopback(log2=3, buffer_size=128)
    mtx, srx = lb.m2s
    stx, mrx = lb.s2m
    data = frame(128, 9)
    assert mtx.tx_frames([data]) == 1
    bufs = srx.rx_buffers(4)
    view = memoryview(bufs[0])                   # exported across the close
    lent = stx.tx_alloc(2)
    lb.close()
    assert not bufs[0].valid and len(bufs[0]) == 0
    with pytest.raises(BufferError):
        memoryview(bufs[0])
    assert not lent[0].valid
    assert stx.tx_commit(lent[:1], [10]) == 0    # link down: nothing sent
    srx.release_buffers(bufs)                    # a no-op now, even with the view alive
    assert srx.rx_frames(4) == [] and srx.rx_buffers(4) == []
    assert stx.tx_frames([b"x"]) == 0 and stx.tx_alloc(1) == []
    out, olen = bytearray(100), array("I", [0]) * 4
    assert mrx.rx_batch(out, olen) == 0 and mtx.tx_batch(b"x", array("I", [1])) == 0
    # Drop every other reference: the memory stays mapped under the view.
    del lb, mtx, srx, stx, mrx, bufs, lent
    gc.collect()
    assert view.tobytes() == data
    view[:3] = b"abc"
    assert bytes(view[:3]) == b"abc"
    view.release()


# ------------------------------------------------------------ interrupts

@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", DIRECTIONS)
def test_interrupt_only_when_unmasked(direction):
    lb = Loopback(log2=3, buffer_size=128)
    tx, rx = pair(lb, direction)
    assert tx.tx_frames([b"a"]) == 1             # receive ring masked: polling
    assert tx.counters()["irq_sent"] == 0 and not rx.drain()
    rx.set_interrupt(True)
    assert rx.pending()
    assert tx.tx_frames([b"b"]) == 1
    assert tx.counters()["irq_sent"] == 1
    assert rx.drain() and rx.counters()["irq_received"] == 1
    assert not rx.drain()
    assert rx.rx_frames(4) == [b"a", b"b"] and not rx.pending()


# --------------------------------------------------- constructor checks

def test_failed_queue_leaves_fd_to_caller():
    """Regression: a Queue whose constructor raised closed the eventfd it was
    given, and the caller (control.py) closed it a second time."""
    mem = Memory()
    os.close(mem.create_region(8192))
    efd = os.eventfd(0)
    try:
        with pytest.raises(MemifError):
            Queue(mem, 0, 0, 4, slave=True, tx=True, index=0, fd=efd,
                  buffer_size=4096, buf_offset=4096)
        gc.collect()
        os.fstat(efd)                            # still ours
    finally:
        os.close(efd)


@contextlib.contextmanager
def fd0_kept():
    """Fails if the body closed or replaced fd 0, and puts fd 0 back either
    way, so later tests (and pytest) still have their stdin."""
    saved = os.dup(0)
    before = os.fstat(saved)
    try:
        yield
        try:
            now = os.fstat(0)
        except OSError:
            now = None
        assert now is not None and (now.st_dev, now.st_ino) == (before.st_dev, before.st_ino), \
            "fd 0 was closed or replaced"
    finally:
        os.dup2(saved, 0)
        os.close(saved)


def test_unconverted_arguments_close_no_fd():
    """Regression: a Queue whose arguments failed to convert (None for the
    Memory, a region number out of range) never ran its constructor, and its
    destructor closed fd 0, the zero its fd field started as: the process's
    stdin, or whatever had that number."""
    mem = Memory()
    os.close(mem.create_region(8192))
    with fd0_kept():
        for bad in ((None, 0), (mem, -1), (mem, 1 << 16)):
            with pytest.raises((TypeError, OverflowError)):
                Queue(bad[0], bad[1], 0, 4, True, True, 0, -1, 128, 4096)
        gc.collect()


def test_queue_argument_checks():
    mem = Memory()
    os.close(mem.create_region(8192))
    with fd0_kept():
        with pytest.raises(TypeError):
            Queue(None, 0, 0, 4, True, True, 0, -1, 128, 4096)   # used to read Py_None as Memory
        gc.collect()
    with pytest.raises(MemifError):
        Queue(mem, 0, 0, 4, True, True, 0, -1, 0, 4096)      # slave without buffers: SIGFPE
    with pytest.raises(MemifError):
        Queue(mem, 1, 0, 4, False, True, 0, -1)              # no such region
    with pytest.raises(MemifError):
        Queue(mem, 0, 32, 4, False, True, 0, -1)             # misaligned ring
    with pytest.raises(MemifError):
        Queue(mem, 0, 0, 16, False, True, 0, -1)             # ring size
    with pytest.raises(MemifError):
        Queue(mem, 0, 8192 - 128, 4, False, True, 0, -1)     # ring past the end


# --------------------------------------------------------------- property

@st.composite
def scenario(draw):
    log2 = draw(st.integers(2, 6))
    bs = draw(st.sampled_from([64, 128, 256, 2048]))
    biggest = min((1 << log2) * bs, 9216)
    sizes = draw(st.lists(st.integers(0, biggest), min_size=1, max_size=120))
    # Each step transmits up to k frames (copy or zero-copy) or receives up
    # to k (copy, batch or zero-copy).  Zero-copy steps fall back to copying
    # where a side cannot do them (master, or a frame longer than a buffer).
    kinds = ["tx", "tx_zc", "rx", "rx_batch", "rx_zc"]
    steps = draw(st.lists(st.tuples(st.sampled_from(kinds), st.integers(1, 40)),
                          min_size=1, max_size=60))
    direction = draw(st.sampled_from(DIRECTIONS))
    return log2, bs, sizes, steps, direction


@pytest.mark.timeout(60)
@settings(max_examples=1000, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_any_burst_pattern_preserves_order_and_content(sc):
    log2, bs, sizes, steps, direction = sc
    lb = Loopback(log2=log2, buffer_size=bs)
    tx, rx = pair(lb, direction)
    frames = [frame(n, i) for i, n in enumerate(sizes)]
    out = []
    sent = [0]
    scratch, olen = bytearray(64 * 1024), array("I", [0]) * 64

    def transmit(kind, k):
        todo = frames[sent[0]:sent[0] + k]
        if kind == "tx_zc" and tx.slave:
            fit = []
            for f in todo:
                if len(f) > bs:
                    break
                fit.append(f)
            if fit:
                bufs = tx.tx_alloc(len(fit))
                for b, f in zip(bufs, fit):
                    memoryview(b)[:len(f)] = f
                n = tx.tx_commit(bufs, [len(f) for f in fit[:len(bufs)]])
                assert n == len(bufs)
                sent[0] += n
                return n
        n = tx.tx_frames(todo)
        sent[0] += n
        return n

    def receive(kind, k):
        if kind == "rx_batch":
            with memoryview(olen)[:k] as lengths:
                got = unpack(scratch, olen, rx.rx_batch(scratch, lengths))
        elif kind == "rx_zc" and rx.slave:
            bufs = rx.rx_buffers(k)
            got, cur = [], b""
            for b in bufs:
                cur += bytes(b)
                if not b.chained:
                    got.append(cur)
                    cur = b""
            assert cur == b""                    # frames never split across calls
            rx.release_buffers(bufs)
        else:
            got = rx.rx_frames(k)
        out.extend(got)
        return len(got)

    for kind, k in steps:
        (transmit if kind.startswith("tx") else receive)(kind, k)
    # Drain: everything offered gets through, nothing is lost or reordered.
    while sent[0] < len(frames) or receive("rx", 64):
        moved = transmit("tx", 64)
        if not receive("rx_batch", 64) and not moved and sent[0] < len(frames):
            pytest.fail("no progress")
    assert out == frames
    total = sum(sizes)
    for q in (tx, rx):
        c = q.counters()
        assert (c["packets"], c["bytes"]) == (len(frames), total)
        assert no_drops(q)
    assert rx.zc_held == 0


@pytest.mark.timeout(30)
@pytest.mark.parametrize("log2, rx_pool", [(4, 1), (10, 2), (4, 3)])
def test_slave_buffers_are_scattered(log2, rx_pool):
    """Every buffer of the slave's area is used exactly once per ring, but
    neighbouring slots do not sit at a fixed stride (a receiver's stride
    prefetcher would pull the sender's next buffers across CPUs), for
    transmit rings, receive pools of any size, and frames still arrive."""
    lb = Loopback(log2=log2, buffer_size=256, rx_pool=rx_pool)
    size = 1 << log2
    for ring, nbufs in ((0, size), (1, size * rx_pool)):
        base = lb.buf_offsets[ring]
        offs = [lb.desc(ring, s).offset for s in range(size)]
        idx = [(o - base) // 256 for o in offs]
        assert all((o - base) % 256 == 0 and 0 <= i < nbufs for o, i in zip(offs, idx))
        assert len(set(idx)) == size
        steps = {b - a for a, b in zip(idx, idx[1:])}
        assert len(steps) > 1, steps
    tx, rx = lb.s2m
    mtx, srx = lb.m2s
    for q_tx, q_rx in ((tx, rx), (mtx, srx)):
        for burst in range(3):
            frames = [frame(60 + i % 100, burst * size + i) for i in range(size)]
            assert q_tx.tx_frames(frames) == size
            assert q_rx.rx_frames(size) == frames
    lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("direction", ["s2m", "m2s"])
def test_checker_drain_loops_bursts_in_one_call(direction):
    """Checker.drain() receives and checks several bursts per call, stops at
    its burst limit or at an empty ring, counts exactly what rx_batch +
    check would, and refuses a transmit queue."""
    from memifx.traffic import Checker, Generator
    lb = Loopback(log2=6, buffer_size=2048)
    tx, rx = getattr(lb, direction)
    gen, size, per = Generator([128]), 128, 16
    stage, slens = bytearray(64 * size), array("I", bytes(4 * 64))
    buf, lengths = bytearray(per * 2048), array("I", bytes(4 * per))   # 16 frames a burst
    c = Checker()
    gen.fill(stage, slens, 64, array("I", [0]))
    assert tx.tx_batch(stage, slens) == 64
    assert c.drain(rx, buf, lengths, 2) == 2 * per          # the burst limit
    assert c.drain(rx, buf, lengths, 100) == 64 - 2 * per   # stops at the empty ring
    assert c.drain(rx, buf, lengths, 100) == 0
    assert (c.packets, c.received, c.lost, c.corrupt) == (64, 64, 0, 0)
    gen.fill(stage, slens, 64, array("I", [0]))
    stage[5 * size + 70] ^= 1                               # a payload byte of frame 5
    assert tx.tx_batch(stage, slens) == 64
    assert c.drain(rx, buf, lengths, 100) == 64
    assert (c.packets, c.received, c.corrupt) == (128, 127, 1)
    with pytest.raises(ValueError):
        c.drain(tx, buf, lengths, 1)
    lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", [60, 1500])
def test_one_pass_loops_across_both_rings_ends(size):
    """Bursts of 11 on 16-slot rings, the M2S ring 5 slots ahead of the
    S2M one: the slave's packed transmit (tx_packed) and receive (rx_copy),
    and the master's ring to ring forward (forward_usual), each take their
    slots as runs up to a ring's end and then from its start, and the two
    rings' ends fall at different frames of a burst.  Every frame arrives
    whole and in order, and each M2S slot's descriptor is posted again
    as it was."""
    lb = Loopback(log2=4, buffer_size=2048)
    try:
        (stx, mrx), (mtx, srx) = lb.s2m, lb.m2s
        assert mtx.tx_frames([frame(size, 999)] * 5) == 5
        assert len(srx.rx_frames(16)) == 5
        posted = [lb.desc(1, slot) for slot in range(16)]
        buf, lens = bytearray(16 * 2048), array("I", [0]) * 16
        for burst in range(9):
            batch = [frame(size - i, burst * 11 + i) for i in range(11)]
            assert stx.tx_batch(b"".join(batch), array("I", map(len, batch))) == 11
            assert mrx.forward(mtx, 256) == 11
            assert srx.rx_batch(buf, lens) == 11
            ends = [sum(lens[:i + 1]) for i in range(11)]
            assert [bytes(buf[e - n:e]) for e, n in zip(ends, lens)] == batch
        assert [lb.desc(1, slot) for slot in range(16)] == posted
        assert stx.counters()["packets"] == mrx.counters()["packets"] == 99
        assert mtx.counters()["packets"] == srx.counters()["packets"] == 104
    finally:
        lb.close()
