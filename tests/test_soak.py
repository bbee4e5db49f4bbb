"""Soaks (``pytest -m soak tests/test_soak.py``): a long-lived memifx process
survives its peers dying mid-traffic, and overload loses nothing silently.

Kill cycles: one memifx process (tests/fuzz_host.py, echoing) serves a
master (socket A, id 0) and a slave (towards socket B).  Each cycle forks a
peer (tests/rogue.py: a correct handshake, then frames both ways as fast as
it can), waits until frames have come back, and SIGKILLs it.
``MEMIFX_SOAK_CYCLES`` (default 1000) cycles per role.  After them the
process is alive, a good peer passes traffic, and, against a baseline
taken after the first ``WARMUP`` cycles (link down both times): open fds and
memfd mappings are equal, the mapping count is within ``MAPS_SLACK`` and
RSS within ``RSS_SLACK_KIB`` (the allocator's arenas; a leak of one region
or one fd per cycle is far above both).

Overload: gen (slave, socket A) -> memifx xconnect (masters A and B) ->
sink (slave, socket B).  The sink's rate is measured first (gen unpaced,
``CALIBRATE_S``), then gen sends at twice that for ``MEMIFX_SOAK_OVERLOAD_S``
(default 30) seconds.  Every frame gen put on the wire is received by the
sink or counted as a drop, by reason, in xconnect's or the sink's counters:
sent == received + drops, exactly.
"""
import json
import os
import select
import signal
import struct
import subprocess
import sys
import time
import traceback

import pytest

from conftest import wait_for
from fuzz_host import Host
from rogue import RogueMaster, RogueSlave
from test_fuzz import good_peer_passes, interfaces

pytestmark = pytest.mark.soak

CYCLES = int(os.environ.get("MEMIFX_SOAK_CYCLES", "1000"))
OVERLOAD_S = float(os.environ.get("MEMIFX_SOAK_OVERLOAD_S", "30"))
CALIBRATE_S = 5.0
WARMUP = 20
MAPS_SLACK = 4
RSS_SLACK_KIB = 4096
ECHOED = 16                     # frames back before the kill: traffic was flowing


def _rogue_slave_peer(path, report):
    r = RogueSlave.connect(path)
    r.handshake(n_s2m=1, n_m2s=1, log2=6)
    s2m, m2s = r.s2m[0], r.m2s[0]
    start, told, seq = m2s.tail, False, 0
    while True:
        free = m2s.size - ((m2s.head - m2s.tail) & 0xFFFF)
        if free:
            r.post(free)
        if (s2m.head - s2m.tail) & 0xFFFF < s2m.size:
            r.send_frame(struct.pack("<I", seq) + b"s" * 56)
            seq += 1
            os.write(r.efds[0], struct.pack("<Q", 1))
        if not told and (m2s.tail - start) & 0xFFFF >= ECHOED:
            os.write(report, b"T")
            told = True
        time.sleep(0.0002)


def _rogue_master_peer(path, report):
    m = RogueMaster.listen(path)
    m.accept()
    m.handshake()
    s2m, m2s = m.s2m[0], m.m2s[0]
    back, told, seq = 0, False, 0
    while True:
        back += len(m.take(s2m))
        if (m2s.head - m2s.tail) & 0xFFFF:
            m.give(struct.pack("<I", seq) + b"m" * 56, m2s)
            seq += 1
            os.write(m.efds[1], struct.pack("<Q", 1))
        if not told and back >= ECHOED:
            os.write(report, b"T")
            told = True
        time.sleep(0.0002)


def peer_cycle(peer, path):
    """Fork a peer, wait for traffic both ways, SIGKILL it."""
    rd, wr = os.pipe()
    pid = os.fork()
    if pid == 0:                        # the peer: never returns
        try:
            os.close(rd)
            peer(path, wr)
        except BaseException:
            os.write(wr, b"E" + traceback.format_exc().encode()[-2000:])
        finally:
            os._exit(1)
    os.close(wr)
    try:
        ready, _, _ = select.select([rd], [], [], 10)
        said = os.read(rd, 4096) if ready else b""
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(rd)
    assert said == b"T", "no traffic before the kill: %r" % said


def sample(host):
    memfd, maps = host.maps()
    return {"fds": host.fds(), "memfd_maps": memfd, "maps": maps, "rss_kib": host.rss_kib()}


def link_down(host, index):
    return wait_for(lambda: host.info()["interfaces"][index]["state"] != "up", 5, 0.01)


@pytest.mark.timeout(4 * 3600)
@pytest.mark.parametrize("role", ["master", "slave"])
def test_peer_sigkill_cycles(procs, unique, role):
    socket_a, socket_b = "@%s-a" % unique, "@%s-b" % unique
    host = Host(procs, *interfaces(socket_a, socket_b))
    peer, path, index = (_rogue_slave_peer, socket_a, 0) if role == "master" else \
        (_rogue_master_peer, socket_b, 2)
    samples = []
    start = time.monotonic()
    for cycle in range(1, CYCLES + 1):
        peer_cycle(peer, path)
        assert host.alive(), "memifx died at cycle %d:\n%s" % (cycle, host.output())
        if cycle == WARMUP or cycle % 100 == 0 or cycle == CYCLES:
            assert link_down(host, index)
            time.sleep(0.2)
            samples.append(dict(sample(host), cycle=cycle))
    took = time.monotonic() - start
    flaps = host.info()["interfaces"][index]["link_flaps"]
    good_peer_passes(host, socket_a)
    time.sleep(0.2)
    base = samples[0]
    end = dict(sample(host), cycle=CYCLES)
    print("\n%s role: %d cycles in %.0f s (%.1f/s), link flaps %d" % (
        role, CYCLES, took, CYCLES / took, flaps))
    for s in samples + [end]:
        print("  cycle %(cycle)5d: fds %(fds)d, memfd maps %(memfd_maps)d, maps %(maps)d, "
              "rss %(rss_kib)d KiB" % s)
    assert flaps >= CYCLES
    assert end["fds"] == base["fds"], (base, end)
    assert end["memfd_maps"] == base["memfd_maps"], (base, end)
    assert end["maps"] <= base["maps"] + MAPS_SLACK, (base, end)
    assert end["rss_kib"] <= base["rss_kib"] + RSS_SLACK_KIB, (base, end)


# ------------------------------------------------------------------ overload

def memifx_cli(procs, *args):
    return procs.start([sys.executable, "-m", "memifx.cli.main"] + list(args),
                       stderr=subprocess.PIPE)


def stop_json(proc, timeout=30):
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=timeout)
    assert out.strip(), err
    return json.loads(out)


def chain(procs, unique, seconds, rate):
    """gen -> xconnect -> sink for ``seconds``; the three JSON reports."""
    a, b = "@%s-ovl-a" % unique, "@%s-ovl-b" % unique
    irq = ",rx-mode=interrupt"
    xc = memifx_cli(procs, "xconnect", "socket=%s,id=0,role=master,name=in%s" % (a, irq),
                    "socket=%s,id=0,role=master,name=out%s" % (b, irq), "--workers", "0",
                    "--json")
    sink = memifx_cli(procs, "sink", "socket=%s,id=0,role=slave%s" % (b, irq), "--json",
                      "--verify", "stamp")
    time.sleep(1.0)                     # sink linked to xconnect before traffic starts
    gen_args = ["gen", "socket=%s,id=0,role=slave" % a, "--duration", str(seconds),
                "--json", "--payload", "zeros"]
    if rate:
        gen_args += ["--rate", str(int(rate))]
    gen = memifx_cli(procs, *gen_args)
    out, err = gen.communicate(timeout=seconds + 60)
    assert gen.returncode == 0, err
    sent = json.loads(out)
    time.sleep(1.0)                     # what is still in the rings arrives
    received = stop_json(sink)
    forwarded = stop_json(xc)
    return sent, received, forwarded


def drops(counters):
    return sum(counters.get("drops", {}).values())


def queue_drops(stats, kind):
    return sum(sum(q["drops"].values()) for q in stats[kind])


@pytest.mark.timeout(600)
def test_overload_accounted(procs, unique):
    _, calib, _ = chain(procs, unique + "c", CALIBRATE_S, 0)
    sink_rate = calib["received"] / calib["seconds"]
    assert sink_rate > 0, calib
    sent, received, forwarded = chain(procs, unique, OVERLOAD_S, 2 * sink_rate)
    d = forwarded["directions"]
    (into, _), = [(c, n) for n, c in d.items() if n.startswith("in->")]
    counted = drops(into) + queue_drops(forwarded["interfaces"]["in"], "rx") + \
        queue_drops(received["interface"], "rx")
    print("\noverload: sink rate %.0f fps, gen asked for %.0f fps for %.0f s and sent "
          "%.0f fps: sent %d, received %d, drops %d (xconnect %s, sink rx %d), xconnect "
          "forwarded %d" % (
              sink_rate, 2 * sink_rate, OVERLOAD_S, sent["packets"] / sent["seconds"],
              sent["packets"], received["received"],
              counted, into.get("drops"), queue_drops(received["interface"], "rx"),
              into["packets"]))
    assert counted > 0, "no overload happened: the sink kept up"
    assert sent["packets"] == received["received"] + counted
