"""Workload for tests/test_cost.py's batch-echo cost, meant to run under callgrind.

    python tests/cost_echo.py N [FRAME_SIZE [BURST [VARIANT]]]

perf/pyecho.py's ``batch`` loop on real Interfaces: a master and a slave
connected over an abstract socket, their control loop driven from this
thread (no background thread to count).  Each round the slave's transmit
queue puts BURST frames (default 64 bytes, burst 256) into the S2M ring, the
master echoes them with its public batch API, and the slave's receive queue
takes them off the M2S ring.  VARIANT is the echo:

- ``into`` (default): ``n = m.rx_into(buf, lengths)`` then
  ``m.tx_from(buf, lv[:n])``, as pyecho's batch loop does;
- ``forward``: ``m.forward(m)``, the batch forward with no Python between
  receive and transmit.

The slave's side calls the Queue methods directly, so what the echo adds
over cost_burst.py's ``ring`` mode (a second rx + tx of every frame) is the
Interface front ends.  The N frames go round twice, the first time to warm
up (tests/cost_phases.py): the profile of the second holds them alone,
without start-up, the handshake or building the buffers.
"""
import os
import sys
import time
from array import array

import memifx
from cost_phases import PHASES, bursts


def connect(loop, name):
    sock = "@memifx-cost-echo-%d-%s" % (os.getpid(), name)
    m = memifx.Interface(socket=sock, role="master", name="echo", loop=loop,
                         ring_size=1024, buffer_size=2048).connect()
    s = memifx.Interface(socket=sock, role="slave", name="feed", loop=loop,
                         ring_size=1024, buffer_size=2048).connect()
    end = time.monotonic() + 30
    while not (m.connected and s.connected):
        if time.monotonic() > end:
            raise SystemExit("link did not come up")
        loop.run_once(0.05)
    return m, s


def main():
    n = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    burst = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    variant = sys.argv[4] if len(sys.argv) > 4 else "into"
    assert n % burst == 0 and variant in ("into", "forward"), sys.argv
    loop = memifx.ControlLoop()
    m, s = connect(loop, variant)
    feed, drain = s.connection.tx[0], s.connection.rx[0]
    src = bytes(range(256)) * (burst * size // 256 + 1)
    src = src[:burst * size]
    lens = array("I", [size]) * burst
    got = bytearray(burst * size)
    got_lens = array("I", [0]) * burst
    # the echo's own buffers, as perf/pyecho.py sets them up
    buf = bytearray(burst * 2048)
    lengths = array("I", bytes(4 * burst))
    lv = memoryview(lengths)
    rx_into, tx_from = m.rx_into, m.tx_from
    for _ in bursts(n // burst):
        if feed.tx_batch(src, lens) != burst:
            raise SystemExit("short feed")
        if variant == "into":
            k = rx_into(buf, lengths)
            if tx_from(buf, lv[:k]) != burst:
                raise SystemExit("short echo")
        elif m.forward(m) != burst:
            raise SystemExit("short forward")
        if drain.rx_batch(got, got_lens) != burst:
            raise SystemExit("short drain")
    if got != src or m.stats()["tx"][0]["packets"] != PHASES * n:
        raise SystemExit("data mismatch: %r" % m.stats())
    s.close()
    m.close()
    loop.run_once(0)


if __name__ == "__main__":
    main()
