"""memifx gen and memifx sink: exact counts at every size in both roles, the
full-payload check catching one flipped bit, the sequence window, pcap replay
and capture byte for byte, gen --receive (a tester in one process), the rate
limiter sleeping, gen --capture with an echo peer, and clean shutdown.

CPU budget (2 CPUs shared): at most two busy processes per test.  Sinks and
echo peers run with rx-mode=interrupt, so only gen spins, and only while it
has frames to send.
"""
import json
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from array import array

import pytest
from click.testing import CliRunner

import memifx
from memifx import pcap
from memifx.cli.main import main
from memifx.traffic import Checker, Generator
from conftest import read_until, wait_for

MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def last_json(out):
    return json.loads(out.strip().splitlines()[-1])


def finish(proc, timeout=30):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out
    return last_json(out)


def stop(proc, timeout=15):
    proc.send_signal(signal.SIGTERM)
    return finish(proc, timeout)


def assert_clean(r, count):
    """Exactly ``count`` stamped frames, each once, in order, intact."""
    assert r["packets"] == count
    assert r["received"] == count
    assert (r["lost"], r["reordered"], r["duplicated"], r["corrupt"], r["other"]) == \
        (0, 0, 0, 0, 0)
    assert r["latency_us"]["min"] <= r["latency_us"]["p50"] <= r["latency_us"]["p99"] \
        <= r["latency_us"]["max"]


@pytest.mark.timeout(10)
def test_help():
    for args in (["gen", "-h"], ["sink", "-h"], ["-h"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0, r.output
    assert "copied out of shared memory in full" in CliRunner().invoke(main, ["sink", "-h"]).output
    out = CliRunner().invoke(main, ["-h"]).output
    assert "gen" in out and "sink" in out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gen_role, size, count, extra", [
    ("slave", "64", 300000, ""),
    ("master", "64", 300000, ""),
    ("slave", "1518", 50000, ""),
    ("master", "1518", 50000, ""),
    ("slave", "9000", 10000, ""),                   # 5 chained 2048-byte buffers each
    ("master", "9000", 10000, ""),
    ("slave", "imix", 60000, ",queues=2"),
    ("master", "imix", 60000, ",queues=2"),
])
def test_gen_to_sink_exact(procs, sock, gen_role, size, count, extra):
    sink_role = "master" if gen_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt%s"
                                 % (sock, sink_role, extra), "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s%s" % (sock, gen_role, extra),
                                "--size", size, "--count", str(count), "--flows", "16",
                                "--json"])
    g = finish(gen)
    # gen left only after the sink had taken every frame out of the ring
    s = stop(sink)
    assert g["packets"] == count and g["unsent"] == 0
    assert_clean(s, count)
    assert s["bytes"] == g["bytes"] > 0
    assert g["mpps"] > 0 and g["gbps"] > 0 and g["seconds"] > 0
    if size == "imix":
        assert g["sizes"] == [64, 570, 1518]
        # 7:4:1 by frame count
        assert g["bytes"] == count // 12 * (7 * 64 + 4 * 570 + 1518)
        # flows were spread over both queues
        assert all(q["packets"] > 0 for q in g["interface"]["tx"])
    else:
        assert g["bytes"] == count * int(size)
    assert not os.path.exists(sock)


@pytest.mark.timeout(30)
def test_sink_count_stops_it(procs, abstract_sock):
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt"
                                 % abstract_sock, "--count", "20000", "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s" % abstract_sock, "--count", "20000",
                                "--json"])
    s = finish(sink)
    g = finish(gen)
    assert_clean(s, 20000)
    assert g["packets"] == 20000


@pytest.mark.timeout(30)
def test_sink_survives_gen_restarts(procs, abstract_sock):
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt"
                                 % abstract_sock, "--json"])
    for _ in range(2):      # a new run counts from 0 again: not duplicates
        finish(procs.start(MEMIFX + ["gen", "socket=%s" % abstract_sock, "--count", "300",
                                     "--flows", "3", "--json"]))
    s = stop(sink)
    assert_clean(s, 600)
    assert s["resets"] == 3                   # once per flow


def packed(frames):
    buf = b"".join(frames)
    return bytearray(buf), array("I", [len(f) for f in frames])


def stamped(size, n, flows=1, payload="pattern"):
    g = Generator([size], flows=flows, payload=payload)
    buf = bytearray(n * size)
    lengths = array("I", bytes(4 * n))
    assert g.fill(buf, lengths, n, array("I", range(flows))) == (n, n * size)
    return [bytes(buf[i * size:(i + 1) * size]) for i in range(n)]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size, where", [(64, 63), (1518, 100), (9000, 6001)])
def test_sink_counts_corrupt_frame(procs, sock, size, where):
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt" % sock,
                                 "--json"])
    assert wait_for(lambda: os.path.exists(sock), 10)
    frames = stamped(size, 10)
    bad = bytearray(frames[5])
    bad[where] ^= 0x10                           # one bit of the payload pattern
    frames[5] = bytes(bad)
    arp = b"\xff" * 6 + b"\x02\0\0\0\0\x09" + b"\x08\x06" + bytes(46)
    with memifx.Interface(socket=sock, role="slave", name="inject") as s:
        assert s.wait_connected(5)
        buf, lengths = packed(frames + [arp])
        assert s.tx_from(buf, lengths) == 11
        assert wait_for(lambda: s.active_queues("tx")[0].in_flight() == 0, 5)
    r = stop(sink)
    assert (r["packets"], r["received"], r["corrupt"], r["other"]) == (11, 9, 1, 1)
    # damaged is not lost: the stamp still marked its sequence number
    assert (r["lost"], r["reordered"], r["duplicated"]) == (0, 0, 0)
    assert not os.path.exists(sock)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("ip_mode", [False, True])
def test_generator_headers_scapy_checks(ip_mode):
    """Header templates patched per frame (IP id, checksum, source port) must
    be what an independent decoder calls valid, for any flow and sequence."""
    from scapy.all import IP, UDP, Ether
    flows = array("I", [0, 1, 1000, 64511, 64512, 65535])
    for payload in ("pattern", "zeros"):
        g = Generator([64, 570, 1518], flows=65536, payload=payload, ip_mode=ip_mode)
        buf, lengths = bytearray(40 * 1518), array("I", bytes(4 * 40))
        for _ in range(2000):                 # sequence numbers past 16 bits
            n, _ = g.fill(buf, lengths, 36, flows)
        off = 0
        for i in range(n):
            frame = bytes(buf[off:off + lengths[i]])
            off += lengths[i]
            ip = (IP(frame) if ip_mode else Ether(frame)[IP])
            want = ip.chksum
            del ip.chksum
            assert IP(bytes(ip)).chksum == want
            assert ip.id == (1999 * 6 + i // 6) & 0xFFFF         # the flow's sequence
            assert ip[UDP].sport == 1024 + flows[i % len(flows)] % 64512
            assert ip[UDP].dport == 28024 and ip.len == lengths[i] - (0 if ip_mode else 14)


@pytest.mark.timeout(10)
def test_zeros_payload_headers_only_and_verify_modes():
    size, n = 256, 8
    full = Generator([size], payload="zeros")
    lean = Generator([size], payload="zeros")
    a, b = bytearray(n * size), bytearray(n * size)
    la, lb = array("I", bytes(4 * n)), array("I", bytes(4 * n))
    flows = array("I", [0])
    full.fill(a, la, n, flows)
    lean.fill(b, lb, n, flows, 0, True)       # a zeroed buffer: headers only
    for k in range(n):                        # equal but for the timestamps
        ts = slice(k * size + 54, k * size + 62)
        assert a[k * size:ts.start] == b[k * size:ts.start]
        assert a[ts.stop:(k + 1) * size] == b[ts.stop:(k + 1) * size] == bytes(size - 62)
    # the receiver reads the payload kind from the stamp: zeros verify in full
    c = Checker()
    assert c.check(a, la) == n and c.received == n
    a[3 * size + 100] = 1                     # one payload byte off
    assert Checker().check(a, la) == n - 1
    # headers and stamp only: the payload is not read
    assert Checker(verify="stamp").check(a, la) == n
    a[3 * size + 14 + 10] ^= 1                # but the IP header checksum still is
    assert Checker(verify="stamp").check(a, la) == n - 1


@pytest.mark.timeout(60)
@pytest.mark.parametrize("gen_role", ["slave", "master"])
def test_gen_zeros_to_sink_stamp(procs, sock, gen_role):
    sink_role = "master" if gen_role == "slave" else "slave"
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=%s,rx-mode=interrupt"
                                 % (sock, sink_role), "--verify", "stamp", "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,role=%s" % (sock, gen_role), "--size", "1518",
                                "--count", "50000", "--payload", "zeros", "--json"])
    g = finish(gen)
    s = stop(sink)
    assert g["packets"] == 50000 and g["bytes"] == 50000 * 1518
    assert_clean(s, 50000)


@pytest.mark.timeout(10)
def test_checker_sequence_window():
    frames = stamped(128, 12)
    c = Checker()
    for order in ([0, 1, 3], [2, 2, 4], [6, 9]):   # 2 late, 2 twice, 5, 7 and 8 missing
        buf, lengths = packed([frames[i] for i in order])
        c.check(buf, lengths)
    assert (c.received, c.reordered, c.duplicated, c.lost, c.corrupt) == (8, 1, 1, 3, 0)
    buf, lengths = packed([frames[7], frames[5]])
    c.check(buf, lengths)
    assert (c.reordered, c.lost) == (3, 1)
    # header damage: IP checksum no longer adds up
    bad = bytearray(frames[10])
    bad[22] ^= 1                                  # TTL
    buf, lengths = packed([bytes(bad), b"\0" * 60])
    assert c.check(buf, lengths) == 0
    assert (c.corrupt, c.other) == (1, 1)
    lat = c.latency()
    assert 0 <= lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]


def scapy_frames(mode):
    from scapy.layers.inet import ICMP, IP, TCP, UDP
    from scapy.layers.inet6 import IPv6, ICMPv6EchoRequest
    from scapy.layers.l2 import ARP, Ether
    from scapy.packet import Raw
    ips = [IP(src="10.0.0.1", dst="10.1.%d.1" % i, ttl=i + 1) / UDP(sport=i, dport=53) /
           Raw(bytes([i]) * (i * 37 % 1400)) for i in range(30)]
    ips += [IP(src="10.0.0.2", dst="10.0.0.3") / ICMP(id=7, seq=1) / Raw(b"ping" * 10),
            IP(src="10.0.0.2", dst="10.9.9.9") / TCP(sport=1000, dport=80, flags="S"),
            IPv6(src="2001:db8::1", dst="2001:db8::2") / ICMPv6EchoRequest(data=b"x" * 30),
            IP(src="10.0.0.4", dst="10.0.0.5") / UDP() / Raw(b"\xab" * 8972)]     # jumbo
    if mode == "ip":
        return [bytes(p) for p in ips]
    eth = Ether(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")
    out = [bytes(eth / p) for p in ips]
    out.append(bytes(Ether(src="02:00:00:00:00:01", dst="ff:ff:ff:ff:ff:ff") /
                     ARP(psrc="10.0.0.1", pdst="10.0.0.254")) + bytes(18))
    return out


@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["ethernet", "ip"])
def test_pcap_replay_and_capture(procs, sock, tmp_path, mode):
    from scapy.utils import rdpcap, wrpcap
    frames = scapy_frames(mode)
    src, dst = str(tmp_path / "in.pcap"), str(tmp_path / "out.pcap")
    from scapy.packet import Raw
    wrpcap(src, [Raw(f) for f in frames], linktype=101 if mode == "ip" else 1)
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt,mode=%s"
                                 % (sock, mode), "--pcap", dst, "--count", str(len(frames)),
                                 "--json"])
    gen = procs.start(MEMIFX + ["gen", "socket=%s,mode=%s" % (sock, mode), "--pcap", src,
                                "--json"])
    g = finish(gen)
    s = finish(sink)
    assert g["packets"] == len(frames) and g["bytes"] == sum(map(len, frames))
    assert (s["packets"], s["other"], s["corrupt"], s["captured"]) == (len(frames),) * 2 + \
        (0, len(frames))
    assert pcap.read(dst).frames() == frames                 # our reader
    assert [bytes(p) for p in rdpcap(dst)] == frames         # and scapy's
    assert pcap.read(dst).linktype == (101 if mode == "ip" else 1)


@pytest.mark.timeout(30)
def test_pcap_replay_loops_to_count(procs, abstract_sock, tmp_path):
    frames = scapy_frames("ethernet")[:5]
    src = str(tmp_path / "in.pcap")
    with pcap.Writer(src, pcap.LINKTYPE_ETHERNET) as w:
        for f in frames:
            w.write(f)
    gen = procs.start(MEMIFX + ["gen", "socket=%s" % abstract_sock, "--pcap", src,
                                "--count", "23", "--json",
                                "--receive", "socket=%s,role=master" % abstract_sock])
    g = finish(gen)
    assert g["packets"] == 23 and g["receive"]["packets"] == 23
    assert g["receive"]["other"] == 23


@pytest.mark.timeout(60)
def test_pcap_replay_reads_the_file_once(procs, abstract_sock, tmp_path):
    """--pcap from a pipe (``--pcap <(zcat x.pcap.gz)``): the file can be
    read once only, so gen must check and load it in one read."""
    frames = scapy_frames("ethernet")[:5]
    src = str(tmp_path / "in.pcap")
    with pcap.Writer(src, pcap.LINKTYPE_ETHERNET) as w:
        for f in frames:
            w.write(f)
    blob = open(src, "rb").read()
    fifo = str(tmp_path / "pipe.pcap")
    os.mkfifo(fifo)

    def feed():                     # one writer: a second open would wait forever
        with open(fifo, "wb") as f:
            f.write(blob)
    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    gen = procs.start(MEMIFX + ["gen", "socket=%s" % abstract_sock, "--pcap", fifo, "--json",
                                "--receive", "socket=%s,role=master" % abstract_sock])
    g = finish(gen, 20)
    writer.join(5)
    assert g["packets"] == len(frames) and g["receive"]["packets"] == len(frames)
    assert g["bytes"] == sum(map(len, frames))


@pytest.mark.timeout(30)
def test_pcap_link_type_must_match_mode(tmp_path):
    src = str(tmp_path / "eth.pcap")
    with pcap.Writer(src, pcap.LINKTYPE_ETHERNET) as w:
        w.write(bytes(64))
    r = subprocess.run(MEMIFX + ["gen", "socket=@memifx-never,mode=ip", "--pcap", src],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "link type 1" in r.stderr
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(b"\x0a\x0d\x0d\x0a" + bytes(40))
    r = subprocess.run(MEMIFX + ["gen", "socket=@memifx-never", "--pcap", str(bad)],
                       capture_output=True, text=True, timeout=20)
    assert r.returncode == 2 and "pcapng" in r.stderr


@pytest.mark.timeout(30)
@pytest.mark.parametrize("size", ["64", "imix"])
def test_gen_receive_in_one_process(procs, abstract_sock, size):
    # A (slave) and B (master) are the two ends of one link: what gen sends
    # on A arrives on B, in the same process (one busy CPU).
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % abstract_sock, "--size", size,
                                "--count", "200000", "--flows", "8",
                                "--receive", "socket=%s,role=master,queues=2,name=b"
                                % abstract_sock, "--json"])
    g = finish(gen)
    assert g["packets"] == 200000
    assert_clean(g["receive"], 200000)
    for k in ("received", "lost", "reordered", "duplicated", "corrupt", "latency_us"):
        assert g[k] == g["receive"][k]
    assert g["receive"]["bytes"] == g["bytes"]


@pytest.mark.timeout(30)
@pytest.mark.parametrize("workers", [[], ["--workers", "2"]], ids=["in-process", "workers"])
def test_gen_receive_counts_fixed_frames(procs, abstract_sock, workers):
    """The cheapest tester in one command: fixed frames out, counted back
    (--verify count): it ends once every frame sent has come back, and the
    report says what was counted, no more."""
    gen = procs.start(MEMIFX + ["gen", "socket=%s,queues=2" % abstract_sock, "--count", "100000",
                                "--flows", "8", "--payload", "fixed", "--zero-copy",
                                "--verify", "count", "--receive",
                                "socket=%s,role=master,queues=2,name=b" % abstract_sock,
                                "--json"] + workers)
    g = finish(gen)
    r = g["receive"]
    assert g["packets"] == r["packets"] == 100000 and r["bytes"] == g["bytes"] == 6400000
    assert r["verify"] == "count" and r["received"] == 0 and r["latency_us"] is None


@pytest.mark.timeout(30)
def test_rate_limit_sleeps(abstract_sock):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run(MEMIFX + ["gen", "socket=%s" % abstract_sock, "--rate", "20000",
                                 "--duration", "2", "--flows", "3", "--json", "--receive",
                                 "socket=%s,role=master" % abstract_sock],
                       capture_output=True, text=True, timeout=25)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert r.returncode == 0, r.stdout + r.stderr
    g = last_json(r.stdout)
    assert 36000 <= g["packets"] <= 42000, g["packets"]
    assert 1.9 <= g["seconds"] <= 2.2
    assert_clean(g["receive"], g["packets"])
    # a limited generator sleeps: far less CPU than wall time (startup included)
    assert cpu < 0.5 * wall, (cpu, wall)


@pytest.mark.timeout(30)
def test_gen_capture_with_echo_peer(procs, sock, tmp_path):
    echo = procs.start(MEMIFX + ["echo", "socket=%s,role=master,rx-mode=interrupt" % sock])
    read_until(echo, "echoing")
    cap = str(tmp_path / "replies.pcap")
    gen = procs.start(MEMIFX + ["gen", "socket=%s" % sock, "--size", "1518", "--count", "500",
                                "--flows", "2", "--capture", cap, "--json"])
    g = finish(gen)
    assert g["packets"] == 500 and g["captured"] == 500
    back = pcap.read(cap)
    assert back.linktype == pcap.LINKTYPE_ETHERNET and len(back) == 500
    c = Checker()
    c.check(back.data, back.lengths)
    assert (c.received, c.corrupt, c.lost, c.duplicated) == (500, 0, 0, 0)


@pytest.mark.timeout(30)
def test_sigterm_link_events_and_cleanup(procs, sock):
    sink = procs.start(MEMIFX + ["sink", "socket=%s,role=master,rx-mode=interrupt" % sock])
    read_until(sink, "receiving")
    gen = procs.start(MEMIFX + ["gen", "socket=%s" % sock, "--rate", "50000"])
    read_until(gen, "link up")
    read_until(sink, "link up")
    time.sleep(0.5)
    gen.send_signal(signal.SIGINT)
    line = read_until(gen, "gen: sent")
    sent = int(line.split()[2])
    assert sent > 5000
    assert gen.wait(10) == 0
    read_until(sink, "link down")
    sink.send_signal(signal.SIGTERM)
    line = read_until(sink, "sink:")
    assert "received %d, lost 0, reordered 0, duplicated 0, corrupt 0" % sent in line
    assert sink.wait(10) == 0
    assert not os.path.exists(sock)


@pytest.mark.timeout(30)
def test_rate_limiter_catches_up_short_stalls_only():
    """--rate: frames owed after an oversleep or a preemption of up to
    CATCH_UP seconds are admitted at once, so the rate asked is the rate
    sent on a busy machine; after a longer stall no more than that is owed
    (no flood).  Before, anything above 2 bursts was forgotten: at 1.5
    Mpps every wake-up later than 0.34 ms lost frames."""
    from types import SimpleNamespace
    from memifx.tester import BURST, CATCH_UP, Sender

    rate = 1.5e6
    s = Sender(SimpleNamespace(exhausted=False), BURST, 0, rate)
    owed = int(rate * CATCH_UP)
    assert owed > 2 * BURST
    t = 100.0
    assert s.budget(t) == 0
    # every pass oversleeps by 1 ms and sends what it may: the asked rate
    for _ in range(1000):
        t += 0.001
        s.admitted += s.budget(t)
    assert abs(s.admitted - rate * 1.0) <= 2 * BURST, s.admitted
    # a stall of one second: CATCH_UP's worth now, then the rate again
    t += 1.0
    burst = s.budget(t)
    assert burst == owed
    s.admitted += burst
    t += 0.001
    assert abs(s.budget(t) - rate * 0.001) <= 1
    # a slow rate still owes at least two bursts
    slow = Sender(SimpleNamespace(exhausted=False), BURST, 0, 1000.0)
    slow.budget(t)
    assert slow.budget(t + 5.0) == 2 * BURST


@pytest.mark.timeout(30)
def test_rate_limited_sender_wakes_for_arrivals():
    """A rate-limited gen that also receives sleeps on its receive queues'
    eventfds: a frame that arrives ends the sleep (its latency is then the
    path's, not gen's pacing), and the wakeup is cleared."""
    import threading
    from types import SimpleNamespace
    from memifx.tester import sleep_or_receive

    class Queue:
        def __init__(self):
            self.fd = os.eventfd(0, os.EFD_NONBLOCK)

        def drain(self):
            try:
                os.eventfd_read(self.fd)
            except BlockingIOError:
                pass

    q = Queue()
    receiver = SimpleNamespace(port=SimpleNamespace(active_queues=lambda kind: [q]))
    threading.Timer(0.05, os.eventfd_write, (q.fd, 1)).start()
    t0 = time.monotonic()
    sleep_or_receive([receiver], 10.0)
    assert time.monotonic() - t0 < 5.0
    with pytest.raises(BlockingIOError):
        os.eventfd_read(q.fd)                   # drained
    t0 = time.monotonic()
    sleep_or_receive([receiver], 0.1)           # nothing arrives: the whole wait
    assert time.monotonic() - t0 >= 0.09
    os.close(q.fd)
