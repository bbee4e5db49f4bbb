"""Control-plane limits against a hostile local peer (issue 10, attacks 3 and 7).

Connections and half-open handshakes per listener (the oldest connection that
has not sent INIT is evicted at the cap), the INIT deadline, accept() out of
file descriptors (backoff, one log line, existing links served), received fds
lost to EMFILE (MSG_CTRUNC), and regions and region bytes per link.

The flood tests run the master in its own process (tests/limits_master.py) so
that its CPU time and fds can be measured from /proc.  Every test ends with a
good slave served.  Nothing busy-polls: the masters sleep in poll().
"""
import json
import os
import re
import resource
import socket
import subprocess
import sys
import time

import pytest

import memifx
from memifx import wire
from conftest import cross, frames, read_until, receive, serves_good_slave, wait_for
from rogue import RogueSlave, memfd, memfd_maps, open_fds

pytestmark = pytest.mark.timeout(60)

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.join(HERE, "limits_master.py")
TICK = os.sysconf("SC_CLK_TCK")


def echoes(slave, n=8, tag=1):
    """Frames the slave sends come back (the helper master echoes)."""
    sent = frames(n, 60, tag)
    assert slave.tx_burst(sent) == n
    return receive(slave, n) == sent


def good_slave(path, id=0, name="good-slave"):
    return memifx.Interface(socket=path, id=id, role="slave", name=name,
                            ring_size=64).connect()


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK       # utime + stime


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def start_master(procs, path, logfile, ids="0", *args):
    p = procs.start([sys.executable, HELPER, "--socket", path, "--ids", ids,
                     "--log", logfile] + list(args),
                    stdin=subprocess.PIPE,
                    env=dict(os.environ, PYTHONUNBUFFERED="1"))
    read_until(p, "STARTED")
    return p


def master_stats(p):
    p.stdin.write("stats\n")
    p.stdin.flush()
    line = read_until(p, "STATS")
    return json.JSONDecoder().raw_decode(line[line.index("STATS ") + 6:])[0]


def connect_nowait(path, wait=5.0):
    """A connection that is accepted (or at least queued) and then says
    nothing; None if the listener's backlog stayed full for ``wait`` s."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET | socket.SOCK_NONBLOCK)
    addr = "\0" + path[1:] if path.startswith("@") else path
    end = time.monotonic() + wait
    while True:
        try:
            s.connect(addr)
            return s
        except (BlockingIOError, InterruptedError):
            if time.monotonic() > end:      # backlog full all along: give up on it
                s.close()
                return None
            time.sleep(0.0005)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n:
        if hard != resource.RLIM_INFINITY and hard < n:
            pytest.skip("RLIMIT_NOFILE hard limit %d < %d" % (hard, n))
        resource.setrlimit(resource.RLIMIT_NOFILE, (n, hard))


def log_lines(path, text):
    with open(path) as f:
        return [line for line in f if text in line]


# ------------------------------------------------------- connection floods

def closed_by_peer(s):
    """Read what a non-blocking socket has; True once it is at end of file."""
    try:
        while True:
            if not s.recv(wire.MSG_SIZE):
                return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError:
        return True


def up_time(slave):
    """Record when the slave's link comes up (monotonic), in slave.up_at."""
    slave.up_at = None

    def on_link(intf, up):
        if up and intf.up_at is None:
            intf.up_at = time.monotonic()
    slave.on_link(on_link)
    return slave


def test_flood_of_idle_connections(procs, abstract_sock, tmp_path):
    """1000 idle connections: a good slave arriving mid-flood connects within
    2 s, the master stays nearly idle, and the flood is evicted and counted."""
    raise_nofile(1200)
    logfile = str(tmp_path / "master.log")
    p = start_master(procs, abstract_sock, logfile)
    time.sleep(0.2)
    base_fds = fd_count(p.pid)
    cpu0, t0 = cpu_seconds(p.pid), time.monotonic()
    flood = []
    slave = None
    try:
        for i in range(1000):
            s = connect_nowait(abstract_sock)
            if s is not None:
                flood.append(s)
            if i == 500:        # the good slave arrives in the middle of the flood
                slave = up_time(memifx.Interface(socket=abstract_sock, role="slave",
                                                 name="good-slave", ring_size=64))
                t_slave = time.monotonic()
                slave.connect()
        t_flood = time.monotonic() - t0
        assert slave.wait_connected(5), slave.info()
        took = slave.up_at - t_slave
        assert echoes(slave)
        # the flood idles on; the master has evicted most of it and times out
        # the rest (INIT_TIMEOUT, 1 s)
        assert wait_for(lambda: master_stats(p)["connections"] == 1, 5, 0.2)
        time.sleep(max(0.0, t0 + 3.0 - time.monotonic()))
        window = time.monotonic() - t0
        cpu = (cpu_seconds(p.pid) - cpu0) / window
        stats = master_stats(p)
        print("flood: %d connections in %.2f s, good slave up in %.3f s, master CPU "
              "%.1f %% over %.1f s, %s" % (len(flood), t_flood, took, 100 * cpu, window,
                                          stats))
        assert len(flood) >= 900
        assert took < 2.0, took
        assert cpu < 0.10, cpu
        assert stats["evicted"] >= len(flood) - 32 - 1, stats
        assert stats["evicted"] + stats["init_timeouts"] >= len(flood), stats
        assert stats["handshakes"] == 0, stats
        assert fd_count(p.pid) <= base_fds + 8, (fd_count(p.pid), base_fds)
        # the oldest flood connection got HELLO, then why it was closed
        msgs = []
        while True:
            data = flood[0].recv(wire.MSG_SIZE)
            if not data:
                break
            msgs.append(wire.decode(data))
        assert isinstance(msgs[0], wire.Hello)
        assert msgs[-1].reason == "too many connections"
        assert all(closed_by_peer(s) for s in flood)
        assert echoes(slave, tag=2)
    finally:
        for s in flood:
            s.close()
        if slave is not None:
            slave.close()


def test_flood_that_keeps_reconnecting(procs, abstract_sock, tmp_path):
    """A flooder that reopens every connection the master closes, as fast as
    it can: a good slave still gets its link up within 2 s."""
    raise_nofile(1200)
    logfile = str(tmp_path / "master.log")
    p = start_master(procs, abstract_sock, logfile)
    flood = [connect_nowait(abstract_sock) for _ in range(200)]
    slave = None
    end = time.monotonic() + 3.0
    try:
        while time.monotonic() < end:
            for k, s in enumerate(flood):
                if s is None or closed_by_peer(s):
                    if s is not None:
                        s.close()
                    flood[k] = connect_nowait(abstract_sock, wait=0.01)
            if slave is None and time.monotonic() > end - 2.5:
                slave = up_time(memifx.Interface(socket=abstract_sock, role="slave",
                                                 name="good-slave", ring_size=64))
                t_slave = time.monotonic()
                slave.connect()
            time.sleep(0.001)
        assert slave.connected, slave.info()
        took = slave.up_at - t_slave
        stats = master_stats(p)
        print("reconnecting flood: good slave up in %.3f s, %s" % (took, stats))
        assert took < 2.0, took
        assert stats["evicted"] > 200, stats
        assert echoes(slave)
    finally:
        for s in flood:
            if s is not None:
                s.close()
        if slave is not None:
            slave.close()


def test_eviction_and_refusal_at_the_caps(abstract_sock):
    """At the handshake cap the oldest connection without INIT goes; when
    every one has sent INIT the newcomer is refused; both counted."""
    m0 = memifx.Interface(socket=abstract_sock, id=0, role="master", name="cap0",
                          max_handshakes=2, max_connections=3).connect()
    m1 = memifx.Interface(socket=abstract_sock, id=1, role="master", name="cap1",
                          max_handshakes=2, max_connections=3).connect()
    m2 = memifx.Interface(socket=abstract_sock, id=2, role="master", name="cap2",
                          max_handshakes=2, max_connections=3).connect()
    try:
        old = RogueSlave.connect(abstract_sock)
        young = RogueSlave.connect(abstract_sock)
        new = RogueSlave.connect(abstract_sock)          # evicts `old`
        assert old.outcome() == "too many connections"
        assert old.is_closed()
        young.init(id=0)
        young.ack()
        new.init(id=1)
        new.ack()
        late = RogueSlave.connect(abstract_sock, hello=False)  # nobody to evict
        assert late.outcome() == "too many connections"
        stats = m0.info()["listener"]
        assert stats["evicted"] == 1 and stats["refused"] == 1, stats
        assert stats["handshakes"] == 2
        for r in (old, young, new, late):
            r.close()
        assert wait_for(lambda: m0.info()["listener"]["connections"] == 0, 5)
        # connections cap: three links up, a fourth connection is refused
        slaves = []
        try:
            for id in range(3):         # one at a time: two handshakes at once are the cap
                slaves.append(good_slave(abstract_sock, id))
                assert slaves[-1].wait_connected(5)
            extra = RogueSlave.connect(abstract_sock, hello=False)
            assert extra.outcome() == "too many connections"
            extra.close()
            assert m0.info()["listener"]["refused"] == 2
            cross(slaves[2], m2, tag=3)
        finally:
            for s in slaves:
                s.close()
        serves_good_slave(m0)
    finally:
        for m in (m0, m1, m2):
            m.close()


def test_init_deadline(abstract_sock):
    """A connection that never sends INIT is cut off after INIT_TIMEOUT (1 s),
    not the whole handshake timeout."""
    m = memifx.Interface(socket=abstract_sock, role="master", name="init-dl").connect()
    try:
        t0 = time.monotonic()
        with RogueSlave.connect(abstract_sock) as silent:
            assert silent.outcome() == "handshake timeout"
            took = time.monotonic() - t0
        assert 0.8 < took < 2.0, took
        assert m.info()["listener"]["init_timeouts"] == 1
        serves_good_slave(m)
    finally:
        m.close()


def test_flooding_peer_does_not_starve_others(abstract_sock):
    """A peer that pipelines ADD_REGIONs without reading an ACK gets one
    message handled per loop round, like every other channel: stepping the
    control loop by hand, each round serves the flooder once and the
    newcomer once, and the newcomer's handshake completes meanwhile."""
    loop = memifx.ControlLoop()
    m0 = memifx.Interface(socket=abstract_sock, id=0, role="master", name="busy",
                          loop=loop).connect()
    m1 = memifx.Interface(socket=abstract_sock, id=1, role="master", name="calm",
                          loop=loop).connect()
    flooder = RogueSlave.connect(abstract_sock, hello=False)
    other = None
    try:
        loop.run_once(0.5)
        flooder.expect(wire.Hello)
        flooder.init(id=0)
        loop.run_once(0.5)
        flooder.ack()
        fd = memfd(1 << 16)
        try:
            for i in range(12):
                flooder.send(wire.AddRegion(index=i, size=1 << 16), [fd])
        finally:
            os.close(fd)
        regions = lambda: m0._channel.memory.count      # noqa: E731
        loop.run_once(0.5)
        assert regions() == 1
        other = RogueSlave.connect(abstract_sock, hello=False)
        loop.run_once(0.5)                  # accept + one flooder message
        assert regions() == 2
        other.expect(wire.Hello)
        other.init(id=1)
        loop.run_once(0.5)
        assert regions() == 3
        other.ack()                         # INIT answered beside the flood
        for _ in range(9):
            loop.run_once(0.5)
        assert regions() == 12
        flooder.close()
        other.close()
        slave = good_slave(abstract_sock, 1)
        try:
            assert m1.wait_connected(5)     # drives the loop while it waits
            assert slave.wait_connected(5)
            cross(slave, m1, tag=5)
        finally:
            slave.close()
    finally:
        flooder.close()
        if other is not None:
            other.close()
        m0.close()
        m1.close()


# ---------------------------------------------------------- fd exhaustion

def test_accept_out_of_fds(procs, abstract_sock, tmp_path):
    """The master at RLIMIT_NOFILE: it stops reading the listener (no spin,
    one log line), keeps serving the link it has, refuses a region whose fd
    it could not receive with a clear reason, and accepts again once fds
    come back."""
    logfile = str(tmp_path / "master.log")
    p = start_master(procs, abstract_sock, logfile, "0,1", "--nofile", "64",
                     "--init-timeout", "30", "--handshake-timeout", "30",
                     "--kw", "max_handshakes=1000", "--kw", "max_connections=1000")
    a = good_slave(abstract_sock, 0, "slave-a")
    flood = []
    try:
        assert a.wait_connected(5)
        assert echoes(a)
        half = RogueSlave.connect(abstract_sock)
        half.init(id=1)
        half.ack()
        for _ in range(120):
            s = connect_nowait(abstract_sock, wait=0.2)
            if s is None:
                break
            flood.append(s)
        assert wait_for(lambda: log_lines(logfile, "cannot accept"), 5), open(logfile).read()
        assert fd_count(p.pid) >= 63
        # a region fd that cannot be installed: MSG_CTRUNC, said plainly
        half.add_region(0, 1 << 16)
        assert half.outcome() == "out of file descriptors"
        half.close()
        # no spin while out of fds
        time.sleep(0.3)
        cpu0, t0 = cpu_seconds(p.pid), time.monotonic()
        time.sleep(2.0)
        cpu = (cpu_seconds(p.pid) - cpu0) / (time.monotonic() - t0)
        print("out of fds: master CPU %.1f %%" % (100 * cpu))
        assert cpu < 0.05, cpu
        assert echoes(a, tag=2)                  # the link it had is served
        assert len(log_lines(logfile, "cannot accept")) == 1
        for s in flood:
            s.close()
        flood = []
        b = good_slave(abstract_sock, 1, "slave-b")
        try:
            assert b.wait_connected(5), b.info()
            assert echoes(b, tag=3)
        finally:
            b.close()
        assert len(log_lines(logfile, "cannot accept")) == 1
        stats = master_stats(p)
        assert stats["accept_backoffs"] >= 1 and stats["accepting"], stats
        assert echoes(a, tag=4)
    finally:
        for s in flood:
            s.close()
        a.close()


# ------------------------------------------------------------ regions

@pytest.fixture
def small_master(abstract_sock):
    m = memifx.Interface(socket=abstract_sock, role="master", name="small",
                         max_regions=4, max_region_bytes=1 << 20).connect()
    yield m
    m.close()


def test_hello_advertises_region_cap(small_master, abstract_sock):
    with RogueSlave.connect(abstract_sock) as r:
        assert r.hello.max_region == 3
    other = memifx.Interface(socket="@" + abstract_sock[1:] + "-d", role="master",
                             name="dflt").connect()
    try:
        with RogueSlave.connect(other.socket) as r:
            assert r.hello.max_region == 15
    finally:
        other.close()
    serves_good_slave(small_master)


def test_too_many_regions(small_master):
    before_fds, before_maps = open_fds(), memfd_maps()
    with RogueSlave.connect(small_master.socket) as r:
        r.init()
        r.ack()
        for i in range(4):
            r.add_region(i, 1 << 16)
            r.ack()
        r.add_region(4, 1 << 16)
        assert r.outcome() == "too many regions"
    assert wait_for(lambda: small_master.info()["last_disconnect"] == "too many regions")
    assert small_master.info()["listener"]["regions_refused"] == 1
    assert wait_for(lambda: open_fds() <= before_fds and memfd_maps() <= before_maps, 3)
    serves_good_slave(small_master)


def test_region_bytes_over_limit(small_master):
    before_fds, before_maps = open_fds(), memfd_maps()
    with RogueSlave.connect(small_master.socket) as r:
        r.init()
        r.ack()
        r.add_region(0, 512 << 10)
        r.ack()
        r.add_region(1, (512 << 10) + 4096)
        assert r.outcome() == "memory regions too large"
    assert small_master.info()["listener"]["regions_refused"] == 1
    assert wait_for(lambda: open_fds() <= before_fds and memfd_maps() <= before_maps, 3)
    serves_good_slave(small_master)


def test_default_region_bytes(abstract_sock):
    """The default cap (1 GiB): a sparse 1 GiB + 4 KiB region is refused
    before it is mapped."""
    m = memifx.Interface(socket=abstract_sock, role="master", name="dflt").connect()
    try:
        maps = memfd_maps()
        with RogueSlave.connect(abstract_sock) as r:
            r.init()
            r.ack()
            r.add_region(0, (1 << 30) + 4096)
            assert r.outcome() == "memory regions too large"
        assert memfd_maps() <= maps
        serves_good_slave(m)
    finally:
        m.close()


def test_limit_arguments_checked():
    for kw in ({"max_regions": 0}, {"max_regions": 257}, {"max_handshakes": 0},
               {"max_connections": 0}, {"max_region_bytes": 100}):
        with pytest.raises(ValueError):
            memifx.Interface(socket="@x", role="master", **kw)


def test_spec_keys():
    from cli.spec import parse_spec
    spec = parse_spec("role=master,max-connections=64,max-handshakes=8,max-regions=4,"
                      "max-region-bytes=64M")
    args = spec.interface_args()
    assert (args["max_connections"], args["max_handshakes"], args["max_regions"],
            args["max_region_bytes"]) == (64, 8, 4, 64 << 20)
    import click
    with pytest.raises(click.BadParameter, match="max-regions=300"):
        parse_spec("max-regions=300")
    with pytest.raises(click.BadParameter, match="max-region-bytes"):
        parse_spec("oops=1")


def test_show_reports_listener_counters(procs, sockdir, monkeypatch):
    """``memifx show`` (text and JSON) carries each listener's counters."""
    statsdir = os.path.join(sockdir, "stats")
    monkeypatch.setenv("MEMIFX_STATS_DIR", statsdir)
    a, b = os.path.join(sockdir, "a.sock"), os.path.join(sockdir, "b.sock")
    memifx_cli = [sys.executable, "-m", "memifx.cli.main"]
    procs.start(memifx_cli + [
        "xconnect", "socket=%s,role=master,rx-mode=interrupt,name=A,max-handshakes=2" % a,
        "socket=%s,role=master,rx-mode=interrupt,name=B" % b])
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    flood = [connect_nowait(a) for _ in range(5)]
    try:
        def shown():
            out = subprocess.run(memifx_cli + ["show"], capture_output=True, text=True,
                                 timeout=30).stdout
            # the two left are cut off after INIT_TIMEOUT: match the counters only
            return re.search(r"listener %s: \d+ connections \(\d+ in handshake\); "
                             r"evicted 3, refused 0" % re.escape(a), out)
        assert wait_for(shown, 10, 0.2)
        out = subprocess.run(memifx_cli + ["show", "--json"], capture_output=True,
                             text=True, timeout=30, check=True).stdout
        intf = [i for p in json.loads(out)["processes"] for i in p["interfaces"]
                if i["name"] == "A"][0]
        assert intf["listener"]["evicted"] == 3
    finally:
        for s in flood:
            s.close()
    slave = good_slave(a)
    try:
        assert slave.wait_connected(5)
    finally:
        slave.close()
