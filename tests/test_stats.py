"""Live statistics: the per-process stats file, ``memifx show`` and /metrics.

An xconnect DUT (interrupt mode, the test process is the only poller) runs
with its stats file in a private directory; the test pushes known traffic
through it from two slave Interfaces and compares what ``memifx show`` reads
from the file, what /metrics serves, and what the DUT prints at exit."""
import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

import memifx
from memifx import slots, stats
from conftest import read_until, wait_for
from test_link import frame, pump

pytestmark = pytest.mark.timeout(60)
MEMIFX = [sys.executable, "-m", "memifx.cli.main"]
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"(?:,|$)')


@pytest.fixture
def statsdir(sockdir, monkeypatch):
    d = os.path.join(sockdir, "stats")
    monkeypatch.setenv("MEMIFX_STATS_DIR", d)
    return d


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def show_json():
    out = subprocess.run(MEMIFX + ["show", "--json"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    return json.loads(out)


def process(procs_list, pid):
    for p in procs_list:
        if p["pid"] == pid:
            return p
    return None


def scan_pid(pid):
    return process(stats.scan(), pid)


def interface(proc, name):
    return next(i for i in proc["interfaces"] if i["name"] == name)


def node(proc, direction):
    return next(n for n in proc["nodes"] if n.get("direction") == direction)


def metrics(port):
    text = urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=5).read()
    samples = {}
    for line in text.decode().splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = dict(LABEL.findall(m.group(2) or ""))
        assert ",".join('%s="%s"' % kv for kv in labels.items()) == (m.group(2) or "")
        samples[(m.group(1), tuple(sorted(labels.items())))] = float(m.group(3))
    return samples


def sample(samples, name, **labels):
    return samples[(name, tuple(sorted((k, str(v)) for k, v in labels.items())))]


def xconnect_args(a, b, port):
    args = ["xconnect", "socket=%s,role=master,rx-mode=interrupt,name=A" % a,
            "socket=%s,role=master,rx-mode=interrupt,name=B" % b,
            "--json", "--prometheus-port", str(port)]
    if "--workers" in subprocess.run(MEMIFX + ["xconnect", "-h"], capture_output=True,
                                     text=True).stdout:
        args += ["--workers", "0"]      # queue counters counted in this process
    return args


def test_show_metrics_and_exit_json_agree(procs, sockdir, statsdir):
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    port = free_port()
    p = procs.start(MEMIFX + xconnect_args(a, b, port))
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    assert wait_for(lambda: scan_pid(p.pid) is not None, 10)
    assert os.path.exists(os.path.join(statsdir, "%d.stats" % p.pid))

    sa = memifx.Interface(socket=a, name="sa").connect()
    sb = memifx.Interface(socket=b, name="sb").connect()
    try:
        assert sa.wait_connected(5) and sb.wait_connected(5)
        fwd = [frame(i, 64 + i % 200) for i in range(300)]
        back = [frame(5000 + i, 100) for i in range(200)]
        assert pump(sa, sb, fwd) == fwd
        assert pump(sb, sa, back) == back
        fwd_bytes, back_bytes = sum(map(len, fwd)), sum(map(len, back))

        assert wait_for(lambda: node(scan_pid(p.pid), "A->B")["packets"] == 300, 5)
        proc = process(show_json()["processes"], p.pid)
        assert "xconnect" in proc["command"]
        ia, ib = interface(proc, "A"), interface(proc, "B")
        assert (ia["state"], ia["peer_name"], ia["role"]) == ("up", "sa", "master")
        assert (ib["state"], ib["peer_name"]) == ("up", "sb")
        assert ia["queues"]["rx"][0]["rx_mode"] == "interrupt"
        assert ia["stats"]["rx"][0]["packets"] == 300
        assert ia["stats"]["rx"][0]["bytes"] == fwd_bytes
        assert ib["stats"]["tx"][0]["packets"] == 300
        assert ib["stats"]["rx"][0]["packets"] == 200
        assert ia["totals"]["tx"]["packets"] == 200
        assert ia["totals"]["tx"]["bytes"] == back_bytes
        assert ia["stats"]["rx"][0]["irq_received"] > 0       # interrupt mode
        assert sum(ia["stats"]["rx"][0]["drops"].values()) == 0
        assert node(proc, "B->A")["packets"] == 200
        assert set(node(proc, "A->B")["drops"]) == {"tx ring full", "tx link down",
                                                    "tx frame too long", "tx fault"}

        text = subprocess.run(MEMIFX + ["show"], capture_output=True, text=True,
                              timeout=30).stdout
        assert "pid %d" % p.pid in text and "xconnect A->B: packets 300" in text

        m = metrics(port)
        assert sample(m, "memifx_packets_total", interface="A", queue=0, direction="rx") == 300
        assert sample(m, "memifx_bytes_total", interface="B", queue=0, direction="tx") == fwd_bytes
        assert sample(m, "memifx_drops_total", interface="A", queue=0, direction="rx",
                      reason="bad descriptor") == 0
        assert sample(m, "memifx_link_up", interface="A") == 1
        assert sample(m, "memifx_node_packets_total", node="xconnect", direction="A->B") == 300
        assert sample(m, "memifx_node_drops_total", node="xconnect", direction="B->A",
                      reason="tx ring full") == 0

        # the slave goes away and comes back: the totals keep adding up
        sa.close()
        assert wait_for(lambda: interface(scan_pid(p.pid), "A")["state"] != "up", 5)
        proc = scan_pid(p.pid)
        assert interface(proc, "A")["stats"]["rx"][0]["packets"] == 300
        assert interface(proc, "A")["link_flaps"] == 1
        sa = memifx.Interface(socket=a, name="sa2").connect()
        assert sa.wait_connected(5)
        more = [frame(9000 + i, 80) for i in range(100)]
        assert pump(sa, sb, more) == more
        assert wait_for(lambda: node(scan_pid(p.pid), "A->B")["packets"] == 400, 5)
        ia = interface(scan_pid(p.pid), "A")
        assert (ia["state"], ia["peer_name"]) == ("up", "sa2")
        assert ia["stats"]["rx"][0]["packets"] == 400
        assert ia["stats"]["rx"][0]["bytes"] == fwd_bytes + 8000
        assert sample(metrics(port), "memifx_packets_total", interface="A", queue=0,
                      direction="rx") == 400
        assert sample(metrics(port), "memifx_link_flaps_total", interface="A") == 1
    finally:
        sa.close()
        sb.close()

    # links down on both sides: the last reading, then the DUT's own report
    assert wait_for(lambda: all(i["state"] != "up" for i in scan_pid(p.pid)["interfaces"]), 5)
    last = process(show_json()["processes"], p.pid)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    result = json.loads(out.strip().splitlines()[-1])
    for name in ("A", "B"):
        mine = interface(last, name)["stats"]
        assert result["interfaces"][name]["rx"] == mine["rx"]
        assert result["interfaces"][name]["tx"] == mine["tx"]
        assert result["interfaces"][name]["link_flaps"] == interface(last, name)["link_flaps"]
    for direction, c in result["directions"].items():
        n = node(last, direction)
        assert (n["packets"], n["bytes"], n["drops"]) == (c["packets"], c["bytes"], c["drops"])
    assert result["interfaces"]["A"]["rx"][0]["packets"] == 400
    assert not os.path.exists(os.path.join(statsdir, "%d.stats" % p.pid))
    assert os.listdir(statsdir) == []
    assert process(show_json()["processes"], p.pid) is None


def _dead_pid():
    pid = 4_000_000
    while psutil.pid_exists(pid):
        pid -= 1
    return pid


def test_stale_files_ignored_and_removed(procs, statsdir):
    # a process that dies without cleaning up (SIGKILL): a real dead pid
    code = ("from memifx import stats; stats.process_stats(); print('ready', flush=True); "
            "import time; time.sleep(60)")
    child = procs.start([sys.executable, "-c", code])
    read_until(child, "ready")
    leftover = os.path.join(statsdir, "%d.stats" % child.pid)
    assert stats.scan(clean=False)[0]["pid"] == child.pid
    child.kill()
    child.wait(5)
    assert os.path.exists(leftover)
    data = bytearray(open(leftover, "rb").read())

    # a pid that does not exist, and our own pid with another start time (reuse)
    fake = _dead_pid()
    struct.pack_into("=Q", data, 16, fake)
    with open(os.path.join(statsdir, "%d.stats" % fake), "wb") as f:
        f.write(data)
    struct.pack_into("=Qd", data, 16, os.getpid(), psutil.Process().create_time() - 100)
    with open(os.path.join(statsdir, "%d.stats" % os.getpid()), "wb") as f:
        f.write(data)
    with open(os.path.join(statsdir, ".%d.tmp" % fake), "wb") as f:
        f.write(b"half written")
    with open(os.path.join(statsdir, "notes.txt"), "w") as f:
        f.write("not ours")

    assert show_json()["processes"] == []
    assert sorted(os.listdir(statsdir)) == ["notes.txt"]
    out = subprocess.run(MEMIFX + ["show"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0 and "no running memifx processes" in out.stdout


def test_unwritable_dir_warns_and_metrics_still_work(procs, sockdir, monkeypatch):
    monkeypatch.setenv("MEMIFX_STATS_DIR", "/dev/null/memifx")
    port = free_port()
    sock = os.path.join(sockdir, "e.sock")
    p = procs.start(MEMIFX + ["echo", "socket=%s,role=master,rx-mode=interrupt,name=E" % sock,
                              "--prometheus-port", str(port)], stderr=subprocess.PIPE)
    read_until(p, "echoing")
    with memifx.Interface(socket=sock, name="peer") as peer:
        assert peer.wait_connected(5)
        frames = [frame(i, 70) for i in range(50)]
        assert pump(peer, peer, frames) == frames
        assert wait_for(lambda: sample(metrics(port), "memifx_node_packets_total",
                                       node="echo", interface="E") == 50, 5)
        m = metrics(port)
        assert sample(m, "memifx_packets_total", interface="E", queue=0, direction="rx") == 50
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=10)
    assert err.count("no stats file") == 1 and p.returncode == 0


def test_in_process_file_follows_reconnects(sock, statsdir):
    """StatsFile directly: base + live equals Interface.stats() through a
    reconnect; every u64 of counters_t has a name."""
    assert not [n for n, _ in slots.COUNTER_FIELDS if n.startswith("extra")]
    sf = stats.StatsFile()
    master = memifx.Interface(socket=sock, role="master", name="m").connect()
    try:
        sf.track(master)
        for round_ in range(3):
            with memifx.Interface(socket=sock, name="s%d" % round_) as slave:
                assert slave.wait_connected(5) and master.wait_connected(5)
                frames = [frame(i, 60 + round_) for i in range(40)]
                got, sent, end = [], 0, time.monotonic() + 5
                while len(got) < len(frames) and time.monotonic() < end:
                    sent += slave.tx_burst(frames[sent:])
                    got += master.rx_burst()
                assert got == frames
                assert master.stats()["rx"][0]["packets"] == 40 * (round_ + 1)
                mine = stats.read_file(sf.path)[0]
                assert interface_stats(mine, "m") == strip(master.stats())
            assert wait_for(lambda: not master.connected)
        assert wait_for(lambda: stats.read_file(sf.path)[0]["interfaces"][0]["state"] != "up")
        mine = stats.read_file(sf.path)[0]
        assert interface_stats(mine, "m") == strip(master.stats())
        assert mine["interfaces"][0]["stats"]["rx"][0]["packets"] == 120
        assert mine["interfaces"][0]["link_flaps"] == 3
    finally:
        master.close()
        sf.close()
    assert not os.path.exists(sf.path)


@pytest.mark.timeout(60)
def test_untracked_interface_leaves_the_file_and_its_slots_are_reused(sock, statsdir):
    """An interface removed for good (Dataplane.remove_interface) leaves the
    description; churn of many interfaces does not grow the file once the
    slots' grace has passed (8 x 128 queue slots: more than a chunk); the
    one that stays keeps its counters."""
    sf = stats.StatsFile()
    keep = memifx.Interface(socket=sock, role="master", id=0, name="keep").connect()
    try:
        sf.track(keep)
        with memifx.Interface(socket=sock, id=0, name="peer") as slave:
            assert slave.wait_connected(5) and keep.wait_connected(5)
            for rnd in range(2):
                names = ["gone%d-%d" % (rnd, i) for i in range(8)]
                for i, name in enumerate(names):
                    intf = memifx.Interface(socket=sock, role="master", id=1 + i, name=name,
                                            rx_queues=64, tx_queues=64).connect()
                    sf.track(intf)
                    intf.close()
                    sf.untrack(intf)
                    sf.untrack(intf)            # twice: nothing more happens
                listed = [t["name"] for t in stats.read_file(sf.path)[0]["interfaces"]]
                assert listed == ["keep"]
                if rnd == 0:
                    size = os.fstat(sf.fileno()).st_size
                    time.sleep(stats.writer.SLOT_GRACE + 0.2)
            assert os.fstat(sf.fileno()).st_size == size     # the slots came back
            assert slave.tx_burst([frame(i, 60) for i in range(5)]) == 5
            got = []
            assert wait_for(lambda: got.extend(keep.rx_burst()) or len(got) == 5)
            mine = stats.read_file(sf.path)[0]
            assert interface_stats(mine, "keep") == strip(keep.stats())
    finally:
        keep.close()
        sf.close()


def interface_stats(proc, name):
    s = interface(proc, name)["stats"]
    return {"rx": s["rx"], "tx": s["tx"]}


def strip(s):
    return {"rx": s["rx"], "tx": s["tx"]}


def test_stats_dir_choice(monkeypatch):
    monkeypatch.delenv("MEMIFX_STATS_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    assert stats.stats_dir() == "/run/memifx"
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("XDG_RUNTIME_DIR", "/run/user/1000")
    assert stats.stats_dir() == "/run/user/1000/memifx"
    monkeypatch.delenv("XDG_RUNTIME_DIR")
    assert stats.stats_dir() == "/tmp/memifx-1000"


def test_node_counter_blocks_live_in_stats_file_slots(statsdir):
    """A node's counter blocks (memifx/counted.pyx) move into stats file
    slots: what it counted before moves along, it keeps counting there, and a
    node attached later to the same slot (a restarted worker's) adds to it.
    A router interface's block (2 rx and 3 tx queues) spans several slots."""
    from memifx.fib import Fib
    from memifx.ip4 import Router, counter_block_size, counters_from_block
    from memifx.xconnect import COUNTER_SIZE, XConnect, counters_from_slot
    short = [b"\x00" * 5]                    # counted rx, dropped "short"
    sf = stats.StatsFile()
    try:
        def router():
            r = Router(Fib())
            r.add_interface(0, b"\x02\x00\x00\x00\x00\x01", 0x0a000101, False, 2, 3)
            return r
        size = counter_block_size(2, 3)
        first = router()
        assert first.counter_block_size(0) == size > stats.SLOT
        first.process(0, short * 3)
        off = sf.node_slot(size)
        assert sf.node_slot(size) >= off + size          # the next one does not overlap
        stats.attach_node_fd(first, sf.fileno(), off, 0)
        first.process(0, short * 2)
        got = counters_from_block(sf.read_slot(off, size), 2, 3)
        assert got == first.counters(0, 2, 3)
        assert got["rx"][0]["packets"] == 5 == got["rx"][0]["drops"]["short"]
        assert len(got["rx"]) == 2 and len(got["tx"]) == 3
        with pytest.raises(ValueError):
            stats.attach_node_fd(first, sf.fileno(), off, 1)       # no interface 1
        second = router()
        second.process(0, short)
        stats.attach_node_fd(second, sf.fileno(), off, 0)
        second.process(0, short)
        assert counters_from_block(sf.read_slot(off, size), 2, 3)["rx"][0]["packets"] == 7
        assert second.counters(0)["rx"][0]["drops"]["short"] == 7
        x = XConnect()
        xoff = sf.node_slot(COUNTER_SIZE)
        stats.attach_node_fd(x, sf.fileno(), xoff)
        assert x.counter_block_size() == COUNTER_SIZE
        assert counters_from_slot(sf.read_slot(xoff, COUNTER_SIZE)) == x.counters()
    finally:
        sf.close()


def test_no_two_counter_slots_share_a_cache_line(sock, statsdir):
    """Workers on different CPUs count into neighbouring slots at every
    burst: each slot, queue (base and live) or node block, must start on a
    block of stats.writer.SLOT_ALIGN bytes (two cache lines) and no two
    may touch the same block."""
    import mmap
    from memifx.ip4 import counter_block_size
    from memifx.stats.layout import HEADER, META, META_AT
    from memifx.xconnect import COUNTER_SIZE
    align = stats.writer.SLOT_ALIGN
    assert align % 64 == 0
    sf = stats.StatsFile()
    master = memifx.Interface(socket=sock, role="master", name="m", rx_queues=3,
                              tx_queues=3).connect()
    try:
        sf.track(master)
        spans = [(sf.node_slot(COUNTER_SIZE), COUNTER_SIZE),
                 (sf.node_slot(counter_block_size(2, 3)), counter_block_size(2, 3))]
        with memifx.Interface(socket=sock, name="s", rx_queues=3, tx_queues=3) as slave:
            assert slave.wait_connected(5) and master.wait_connected(5)
            spans.append((sf.node_slot(stats.SLOT), stats.SLOT))
            with open(sf.path, "rb") as f:
                mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
                moff, _, mlen = META.unpack_from(mm, META_AT)
                assert HEADER.unpack_from(mm, 0)[0] == b"MEMIFXST"
                meta = json.loads(mm[moff:moff + mlen])
                mm.close()
            for kind in ("rx", "tx"):
                for q in meta["interfaces"][0]["queues"][kind]:
                    assert q["live"] == sf.live_slot(master, kind, q["queue"]) is not None
                    spans += [(q["base"], stats.SLOT), (q["live"], stats.SLOT)]
    finally:
        master.close()
        sf.close()
    assert len(spans) == 15
    blocks = set()
    for off, size in spans:
        assert off % align == 0, (off, size)
        mine = set(range(off // align, (off + size - 1) // align + 1))
        assert not mine & blocks, (off, size)
        blocks |= mine


def layout_mismatches(block, c_fields, c_size):
    """Where a schema Block and its C struct disagree: [(what, schema, C)].
    ``c_fields`` is [(name, byte offset)] as the compiler laid them out."""
    out = []
    if block.size != c_size:
        out.append(("sizeof " + block.struct, block.size, c_size))
    for (name, off), (c_name, c_off) in zip(block.fields(), c_fields):
        if (name, off) != (c_name, c_off):
            out.append(("field", (name, off), (c_name, c_off)))
    return out


def test_counter_schema_matches_the_c_structs():
    """memifx/stats/schema.py names every u64 of each counter struct, in the
    compiler's order: a counter added to a struct and not to the schema, or
    the reverse, fails here (and the doctored blocks show this check can)."""
    from memifx import ip4, xconnect
    from memifx.stats import schema
    assert not layout_mismatches(schema.QUEUE, slots.COUNTER_FIELDS, slots.COUNTER_SIZE)
    assert not [n for n, _ in slots.COUNTER_FIELDS if n.startswith("extra")]

    more = schema.Block("counters_t", schema.QUEUE.entries + (schema.Counter("new"),))
    assert layout_mismatches(more, slots.COUNTER_FIELDS, slots.COUNTER_SIZE)
    fewer = schema.Block("counters_t", schema.QUEUE.entries[:-1])
    assert layout_mismatches(fewer, slots.COUNTER_FIELDS, slots.COUNTER_SIZE)
    swapped = list(schema.QUEUE.entries)
    swapped[3], swapped[4] = swapped[4], swapped[3]
    assert layout_mismatches(schema.Block("counters_t", swapped), slots.COUNTER_FIELDS,
                             slots.COUNTER_SIZE)
    # a C struct with a u64 more than the schema names
    c_more = slots.COUNTER_FIELDS + [("extra%d" % slots.COUNTER_SIZE, slots.COUNTER_SIZE)]
    assert layout_mismatches(schema.QUEUE, c_more, slots.COUNTER_SIZE + 8)

    def drops_at(block):
        return 8 * block.names.index(schema.DROP_PREFIX + block.drops.reasons[0])

    assert schema.XCONNECT.size == xconnect.COUNTER_SIZE
    assert drops_at(schema.XCONNECT) == xconnect.DROPS_OFFSET
    assert schema.XCONNECT.drops.reasons == xconnect.DROP_REASONS
    rx = ip4.counter_block_size(1, 0) - ip4.counter_block_size(0, 0)
    tx = ip4.counter_block_size(0, 1) - ip4.counter_block_size(0, 0)
    assert (schema.IP4_RX.size, schema.IP4_TX.size) == (rx, tx)
    assert ip4.counter_block_size(0, 0) == 8            # the "tx link down" u64
    assert drops_at(schema.IP4_RX) == ip4.RX_DROPS_OFFSET
    assert schema.IP4_RX.drops.reasons == ip4.DROP_REASONS
    assert set(schema.IP4_TX.drops.reasons) | {schema.IP4_LINK_DOWN} == set(ip4.TX_DROPS)


def test_every_consumer_names_queue_counters_from_the_schema(sock):
    """Queue.counters(), Interface.stats(), the stats file reader, Prometheus
    and ``memifx show`` all shape queue counters as schema.QUEUE says."""
    from memifx.cli import show
    from memifx.stats import schema
    block = schema.QUEUE
    values = [1000 + i for i in range(len(block.names))]
    c = block.nested(values)
    assert block.flat(c) == values
    assert block.add(c, None, c) == block.nested([2 * v for v in values])
    assert schema.nested_by_name(block.names, values) == c

    master = memifx.Interface(socket=sock, role="master", name="m").connect()
    try:
        with memifx.Interface(socket=sock, name="s") as slave:
            assert slave.wait_connected(5) and master.wait_connected(5)
            q = slave.active_queues("tx")[0]
            assert list(q.counters()) == list(block.zero())
            assert q.counters()[schema.DROPS].keys() == block.zero()[schema.DROPS].keys()
            assert master.stats()["rx"][0] == block.zero()

    finally:
        master.close()

    proc = {"interfaces": [{"name": "m", "state": "up", "link_flaps": 0, "role": "master",
                            "mode": "ethernet", "socket": "@x", "id": 0, "peer_name": "s",
                            "queues": {"rx": [{"queue": 0, "counters": c}], "tx": []}}]}
    text = stats.prometheus_text(proc)
    for counter in block.counters:
        assert re.search(r"^%s\{[^}]*\} %d$" % (counter.metric, c[counter.key]), text, re.M), \
            counter
        assert "# HELP %s %s" % (counter.metric, counter.help) in text
    for reason, n in c[schema.DROPS].items():
        assert '%s{interface="m",queue="0",direction="rx",reason="%s"} %d' % (
            block.drops.metric, reason, n) in text
    row = show._queue_row("m", 0, "rx", c)
    cells = dict(zip(show.QUEUE_COLUMNS, row))
    assert cells["PACKETS"] == c["packets"] and cells["MODE-SW"] == c["mode_switches"]
    assert cells["DROPS"] == sum(c[schema.DROPS].values())
    assert [k for k in show.QUEUE_COLUMNS if k not in ("INTERFACE", "QUEUE", "DIR", "RX-MODE",
                                                        "WORKER", "CPU")] == \
        [e.column for e in block.entries if e.column]
