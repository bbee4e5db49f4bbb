"""Checker.check takes the usual frame (IPv4 without options, sound, next in
its flow) on a fast path and every other frame the general way; both must
count alike.  A frame with IP options never takes the fast path, so the same
stream sent once plain and once with a 4-byte option in every IP header must
give the same counters (bytes aside)."""
import random
import struct
from array import array

import pytest

from memifx.traffic import Checker, Generator


def ip_checksum(header):
    s = sum(struct.unpack("!%dH" % (len(header) // 2), header))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def with_option(frame, l2):
    """The frame with four NOP option bytes in its IPv4 header."""
    ip = bytearray(frame[l2:l2 + 20])
    ip[0] = 0x46
    struct.pack_into("!H", ip, 2, struct.unpack_from("!H", ip, 2)[0] + 4)
    good = ip_checksum(bytes(frame[l2:l2 + 20])) == 0       # keep damage as it was
    ip += b"\x01" * 4
    ip[10:12] = b"\0\0"
    csum = ip_checksum(bytes(ip))
    struct.pack_into("!H", ip, 10, csum if good else csum ^ 1)
    return bytes(frame[:l2]) + bytes(ip) + bytes(frame[l2 + 20:])


def frames_of(gen, n, size, nflows):
    buf = bytearray(n * size)
    lengths = array("I", bytes(4 * n))
    got, _ = gen.fill(buf, lengths, n, array("I", range(nflows)))
    assert got == n
    return [bytes(buf[i * size:(i + 1) * size]) for i in range(n)]


def stream(ip_mode, rng):
    """Stamped frames of three flows in a shuffled, damaged order, with
    foreign frames between them and a sender restart at the end."""
    l2 = 0 if ip_mode else 14
    gen = Generator([128], ip_mode=ip_mode, flows=3)
    frames = frames_of(gen, 90, 128, 3)
    order = list(range(90))
    for _ in range(25):                             # reordering within a flow
        i = rng.randrange(84)
        j = i + 3 * rng.randrange(1, 3)
        order[i], order[j] = order[j], order[i]
    out = []
    for k, i in enumerate(order):
        f = bytearray(frames[i])
        if k % 17 == 5:
            continue                                 # lost
        if k % 13 == 7:
            out.append(bytes(f))                     # duplicated
        if k % 11 == 3:
            f[l2 + 8] ^= 1                           # TTL: IP checksum off
        elif k % 19 == 4:
            f[-1] ^= 0x40                            # a payload byte: damaged, not lost
        elif k % 23 == 6:
            f[l2 + 28] ^= 1                          # the magic
        elif k % 29 == 8:
            f[l2 + 20] ^= 1                          # source port vs flow
        out.append(bytes(f))
        if k % 31 == 9:                              # not ours
            out.append(bytes(f[:l2 + 9]) + b"\x06" + bytes(f[l2 + 10:]))
    gen2 = Generator([128], ip_mode=ip_mode, flows=3)   # a new sender run: from 0
    out += frames_of(gen2, 9, 128, 3)
    return out


def counters(frames, ip_mode, verify, burst):
    c = Checker(ip_mode=ip_mode, verify=verify)
    for i in range(0, len(frames), burst):
        part = frames[i:i + burst]
        c.check(bytearray(b"".join(part)), array("I", [len(f) for f in part]))
    got = c.counters()
    del got["bytes"]
    return got


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
@pytest.mark.parametrize("verify", ["stamp", "full"])
def test_fast_and_general_paths_count_alike(ip_mode, verify):
    l2 = 0 if ip_mode else 14
    for seed in range(5):
        frames = stream(ip_mode, random.Random(seed))
        optioned = [with_option(f, l2) if f[l2 + 9] == 17 else f for f in frames]
        for burst in (1, 7, 256):
            fast = counters(frames, ip_mode, verify, burst)
            general = counters(optioned, ip_mode, verify, burst)
            assert fast == general, (seed, burst)
            # the stream has every case in it
            assert fast["lost"] and fast["reordered"] and fast["duplicated"]
            assert fast["corrupt"] and fast["other"] and fast["resets"]
            assert fast["packets"] == len(frames)


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
@pytest.mark.parametrize("verify", ["stamp", "full"])
def test_every_header_bit_flip_decided_alike(ip_mode, verify):
    """One frame per bit of the IPv4 header (but its first byte, which the
    option changes), UDP header and stamp, that bit flipped, each after a
    sound frame (so that it is next in its flow, as the fast path needs):
    the fast path and the general one count the stream alike."""
    l2 = 0 if ip_mode else 14
    bits = [(i, b) for i in range(l2 + 1, l2 + 48) for b in range(8)]
    frames = frames_of(Generator([128], ip_mode=ip_mode), 2 * len(bits), 128, 1)
    flipped = []
    for k, (i, b) in enumerate(bits):
        f = bytearray(frames[2 * k + 1])
        f[i] ^= 1 << b
        flipped += [frames[2 * k], bytes(f)]
    optioned = [with_option(f, l2) if f[l2 + 9] == 17 else f for f in flipped]
    fast = counters(flipped, ip_mode, verify, 256)
    assert fast == counters(optioned, ip_mode, verify, 256)
    assert fast["corrupt"] and fast["other"] and fast["received"]


# ------------------------------------------- the cheaper levels: seq, count

WINDOW = 1024       # the checker's per-flow sequence window


def reference_seq(frames, ip_mode):
    """What Checker(verify="seq") counts, worked out here from the stamps
    alone: a frame with gen's magic where gen puts the stamp is ours, and
    its flow's sequence window decides the rest (as Checker.track keeps it:
    the window as a set of the sequences that arrived)."""
    at = (0 if ip_mode else 14) + 28
    c = dict.fromkeys(("packets", "received", "lost", "reordered", "duplicated", "corrupt",
                       "other", "resets"), 0)
    flows = {}
    for f in frames:
        c["packets"] += 1
        if len(f) < at + 20 or f[at:at + 2] not in (b"MX", b"MZ"):
            c["other"] += 1
            continue
        flow, seq, ts = struct.unpack_from("=HQQ", f, at + 2)
        c["received"] += 1
        st = flows.setdefault(flow, {"next": 0, "newest": 0, "seen": set()})
        if seq < st["next"] and ts > st["newest"]:          # a new sender run
            c["resets"] += 1
            st["next"], st["seen"] = 0, set()
        st["newest"] = max(st["newest"], ts)
        if seq >= st["next"]:
            c["lost"] += seq - st["next"]
            st["next"] = seq + 1
            st["seen"].add(seq)
        elif st["next"] - seq <= WINDOW and seq in st["seen"]:
            c["duplicated"] += 1
        else:
            c["reordered"] += 1
            c["lost"] = max(c["lost"] - 1, 0)
            if st["next"] - seq <= WINDOW:
                st["seen"].add(seq)
    return c


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_seq_level_reads_the_stamp_alone(ip_mode):
    """At verify="seq" damaged headers and payloads go unseen, a frame is
    ours by its magic, and loss, order, duplicates and restarts count as
    the stamps say, on the fast path and the general one alike (every
    burst size).  Short frames and frames with IP options (whose stamp
    is not where gen puts it) are other."""
    l2 = 0 if ip_mode else 14
    for seed in range(5):
        frames = stream(ip_mode, random.Random(seed))
        frames[10:10] = [frames[3][:l2 + 47], with_option(frames[4], l2), b"\x45"]
        want = reference_seq(frames, ip_mode)
        assert want["lost"] and want["reordered"] and want["duplicated"]
        assert want["other"] >= 3 and want["resets"] and not want["corrupt"]
        for burst in (1, 7, 256):
            assert counters(frames, ip_mode, "seq", burst) == want, (seed, burst)


@pytest.mark.timeout(30)
def test_count_level_reads_nothing():
    """At verify="count" every frame is counted with its bytes, whatever it
    holds, and nothing else: none is good, lost or late, no latency."""
    frames = stream(False, random.Random(1)) + [b"\0" * 3]
    c = Checker(verify="count")
    assert c.verify == "count"
    assert c.check(bytearray(b"".join(frames)), array("I", map(len, frames))) == 0
    got = c.counters()
    assert got.pop("packets") == len(frames)
    assert got.pop("bytes") == sum(map(len, frames))
    assert not any(got.values()) and c.latency() is None


def test_unknown_level_is_a_clear_error():
    with pytest.raises(ValueError, match="verify 'most': one of full, stamp, seq, count"):
        Checker(verify="most")


# ------------------------------------------------- the latency histogram

def reference_bucket(v):
    """The histogram's bucket of a latency of ``v`` ns: ``v`` below 64, then
    64 buckets per power of two."""
    if v < 64:
        return v
    shift = v.bit_length() - 1 - 6
    return 64 + shift * 64 + ((v >> shift) - 64)


def expected_latency(latencies):
    """(min, max, sum mod 2**64, {bucket: count}) a checker must report for
    frames with these latencies (a stamp after now counts as latency 0)."""
    lat = [max(v, 0) for v in latencies]
    hist = {}
    for v in lat:
        hist[reference_bucket(v)] = hist.get(reference_bucket(v), 0) + 1
    return (min(lat), max(lat), sum(lat) % (1 << 64), hist)


def latency_state(checker):
    """(min, max, sum, {bucket: count}) out of Checker.export()."""
    state = checker.export()
    head = struct.unpack_from("=12Q", state, 0)
    off = 12 * 8
    n = struct.unpack_from("=Q", state, off)[0]
    pairs = struct.unpack_from("=%dQ" % (2 * n), state, off + 8)
    return head[9], head[10], head[11], dict(zip(pairs[::2], pairs[1::2]))


def stamped(ip_mode, latencies, now, nflows=3):
    """Frames whose stamps say they were sent ``latencies[i]`` ns before
    ``now`` (a negative latency: after it), each flow's in sequence."""
    l2 = 0 if ip_mode else 14
    gen = Generator([96], ip_mode=ip_mode, flows=nflows)
    frames = frames_of(gen, len(latencies), 96, nflows)
    out = []
    for f, lat in zip(frames, latencies):
        f = bytearray(f)
        struct.pack_into("=Q", f, l2 + 20 + 8 + 12, now - lat)
        out.append(bytes(f))
    return out


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_latency_histogram_is_exact(ip_mode):
    """Each good frame's latency (now - stamp, 0 for a stamp after now) in
    its bucket, and min, max and sum, exactly: on the fast path, and on the
    general one (the same frames with an IP option).  The latencies cover
    every bucket edge up to 2**64 - 8 ns; within each flow the stamps rise
    (latencies fall), as a sender's do."""
    l2 = 0 if ip_mode else 14
    now = (1 << 64) - 8
    edges = {0, 1, 2, 62, 63, 64, 65, 126, 127, 128, 129, now}
    for k in range(7, 64):
        edges |= {(1 << k) - 1, 1 << k, (1 << k) + 1, (1 << k) + (1 << (k - 6)) - 1}
    rng = random.Random(13)
    values = sorted(v for v in edges | {rng.getrandbits(rng.randrange(1, 64))
                                         for _ in range(400)} if v <= now)
    latencies = values[::-1] + [-5, -1]         # (stamps after now: latency 0)
    frames = stamped(ip_mode, latencies, now)
    optioned = [with_option(f, l2) for f in frames]
    expect = expected_latency(latencies)
    for burst in (1, 5, 256):
        for sent in (frames, optioned):
            c = Checker(ip_mode=ip_mode)
            for i in range(0, len(sent), burst):
                part = sent[i:i + burst]
                c.check(bytearray(b"".join(part)), array("I", [len(f) for f in part]), now=now)
            assert c.received == len(sent) and not (c.lost or c.reordered or c.corrupt)
            assert latency_state(c) == expect, (burst, sent is optioned)
    assert max(expect[3]) == 57 * 64 + 127             # the last bucket: 2**63 .. 2**64 - 1


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_latency_counts_from_the_clock_by_default(ip_mode):
    """Without ``now``, a frame stamped just before the check has a small,
    real latency."""
    gen = Generator([96], ip_mode=ip_mode)
    buf = bytearray(2 * 96)
    lengths = array("I", [0, 0])
    assert gen.fill(buf, lengths, 2, array("I", [0])) == (2, 192)
    c = Checker(ip_mode=ip_mode)
    assert c.check(buf, lengths) == 2
    lat_min, lat_max, _, hist = latency_state(c)
    assert 0 < lat_min <= lat_max < 10 ** 10 and sum(hist.values()) == 2


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_latency_of_frames_sharing_a_stamp(ip_mode):
    """A sender stamps a whole burst with one time, and the checker works
    out such a run's latency once: the histogram, min, max and sum must
    still count every frame, for runs of one stamp of any length, split
    across calls or not, a stamp of 0 (latency ``now``) first, runs that
    alternate between flows, and stamps after ``now`` (latency 0); on the
    fast path and on the general one."""
    l2 = 0 if ip_mode else 14
    now = (1 << 64) - 8
    latencies = ([now] * 4 + [500] * 7 + [1 << 40] * 1 + [70] * 3
                 + [100, 50] * 6 + [40] * 9 + [-5] * 3 + [-7] * 2 + [3])
    frames = stamped(ip_mode, latencies, now, nflows=2)
    optioned = [with_option(f, l2) for f in frames]
    expect = expected_latency(latencies)
    for burst in (1, 2, 5, 256):
        for sent in (frames, optioned):
            c = Checker(ip_mode=ip_mode)
            for i in range(0, len(sent), burst):
                part = sent[i:i + burst]
                c.check(bytearray(b"".join(part)), array("I", [len(f) for f in part]), now=now)
            assert c.received == len(sent) and not c.corrupt, (burst, c.counters())
            assert latency_state(c) == expect, (burst, sent is optioned)


@pytest.mark.timeout(30)
def test_bad_arguments_are_clear_errors():
    """The buffer arguments of the batch calls: a wrong type or format is a
    clear exception that names the argument, never a crash."""
    from loopback import Loopback
    gen = Generator([64])
    c = Checker()
    buf, lengths, flows = bytearray(64 * 4), array("I", [0] * 4), array("I", [0])
    with pytest.raises(ValueError, match="flows must be a one-dimensional uint32"):
        gen.fill(buf, lengths, 4, array("H", [0]))
    with pytest.raises(ValueError, match="lengths must be a one-dimensional uint32"):
        gen.fill(buf, array("Q", [0] * 4), 4, flows)
    with pytest.raises(BufferError):
        gen.fill(bytes(buf), lengths, 4, flows)          # read-only
    with pytest.raises(ValueError, match="flow 3 out of range"):
        gen.fill(buf, lengths, 4, array("I", [0, 3]))
    assert gen.fill(buf, lengths, 4, flows) == (4, 256)
    with pytest.raises(ValueError, match="lengths add up to more than the buffer"):
        c.check(buf[:200], lengths)
    with pytest.raises(TypeError):
        c.check(None, lengths)
    assert c.check(bytes(buf), lengths) == 4             # read-only is fine to check
    lb = Loopback(log2=4)
    try:
        for call in (lambda q: c.drain(q, bytearray(2048), array("I", [0] * 4), 1),
                     lambda q: c.drain_in_place(q, bytearray(2048), 4, 1)):
            with pytest.raises(TypeError):
                call(None)
            with pytest.raises(ValueError, match="not a receive queue"):
                call(lb.s2m.tx)
            assert call(lb.s2m.rx) == 0
        with pytest.raises(ValueError, match="lengths must be a one-dimensional uint32"):
            c.drain(lb.s2m.rx, bytearray(2048), array("i", [0] * 4), 1)
    finally:
        lb.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_pattern_tail_every_length(ip_mode):
    """Payloads of every length mod 8: each sound frame is good, and a flip
    of any one byte of the last (partial) word makes it corrupt."""
    l2 = 0 if ip_mode else 14
    head = l2 + 20 + 8 + 20
    for size in range(head, head + 24):
        gen = Generator([size], ip_mode=ip_mode, flows=1)
        frames = frames_of(gen, 1 + (size - head) % 8, size, 1)
        good = Checker(ip_mode=ip_mode)
        good.check(bytearray(b"".join(frames)), array("I", [size] * len(frames)))
        assert good.received == len(frames) and not good.corrupt, size
        for k in range(len(frames) - 1):         # one byte of the tail each
            f = bytearray(frames[k + 1])
            f[size - 1 - k] ^= 0x40
            c = Checker(ip_mode=ip_mode)
            c.check(bytearray(frames[0] + bytes(f)), array("I", [size, size]))
            assert (c.received, c.corrupt) == (1, 1), (size, k)


@pytest.mark.parametrize("ip_mode", [False, True])
def test_restamp_rewrites_only_the_stamps_of_frames_the_buffer_holds(ip_mode):
    """Generator.restamp puts a newer time into the stamp of each frame the
    buffer holds whole (frames pending on a full ring) and touches no other
    byte; lengths past the buffer's end are left alone."""
    from memifx.traffic import monotonic_ns
    at = (0 if ip_mode else 14) + 20 + 8 + 12      # the stamp's time field
    gen = Generator([96], ip_mode=ip_mode, flows=2)
    buf = bytearray(4 * 96)
    lengths = array("I", bytes(4 * 4))
    assert gen.fill(buf, lengths, 4, array("I", range(2)))[0] == 4
    before = bytes(buf)
    t0 = monotonic_ns()
    gen.restamp(memoryview(buf)[:3 * 96 + 50], lengths)     # the fourth does not fit
    t1 = monotonic_ns()
    for i in range(4):
        old, new = before[i * 96:(i + 1) * 96], buf[i * 96:(i + 1) * 96]
        assert new[:at] == old[:at] and new[at + 8:] == old[at + 8:]
        ts = struct.unpack_from("=Q", new, at)[0]
        if i < 3:
            assert t0 <= ts <= t1
        else:
            assert new == old
    assert Checker(ip_mode=ip_mode, verify="full").check(bytes(buf), lengths) == 4
