"""Receive modes of the run loops: an idle interrupt-mode DUT sleeps, an
adaptive one switches to interrupts when quiet and back on traffic."""
import json
import os
import signal
import sys
import time

import psutil
import pytest

import memifx
from conftest import wait_for
from test_link import frame, pump
from test_xconnect import slaves

pytestmark = pytest.mark.timeout(60)
MEMIFX = [sys.executable, "-m", "memifx.cli.main"]


def start(procs, a, b, mode, *extra):
    p = procs.start(MEMIFX + ["xconnect", "socket=%s,role=master,name=A,rx-mode=%s" % (a, mode),
                              "socket=%s,role=master,name=B,rx-mode=%s" % (b, mode),
                              "--json"] + list(extra))
    assert wait_for(lambda: os.path.exists(a) and os.path.exists(b), 10)
    return p


def cpu_seconds(pid):
    """CPU time of the process and its workers (children)."""
    procs = [psutil.Process(pid)] + psutil.Process(pid).children(recursive=True)
    return sum(p.cpu_times().user + p.cpu_times().system for p in procs)


def cpu_share(pid, seconds):
    """The share of one CPU the process and its workers use over ``seconds``."""
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


def finish(p):
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=10)
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.parametrize("mode", ["interrupt", "adaptive"])
def test_idle_dut_sleeps_and_a_single_frame_crosses(procs, sockdir, mode):
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start(procs, a, b, mode)
    sa, sb = slaves(a, b)
    try:
        assert wait_for(lambda: psutil.Process(p.pid).children(), 5), "expected a worker"
        # start-up (the worker's imports, attaches) is over once half a
        # second is quiet; a spinning forwarder never gets there
        wait_for(lambda: cpu_share(p.pid, 0.5) < 0.02, 5, 0)
        share = cpu_share(p.pid, 3)            # 3 s: the 2 % bound is 6 clock ticks
        print("\nidle %s xconnect: %.2f %% CPU" % (mode, share * 100))
        assert share < 0.02
        f = frame(1, 64)
        assert sa.tx_burst([f]) == 1
        assert wait_for(lambda: sb.rx_pending(), 2)
        assert sb.rx_burst() == [f]
    finally:
        sa.close()
        sb.close()
    finish(p)


def test_adaptive_switches_both_ways(procs, sockdir):
    a, b = os.path.join(sockdir, "a"), os.path.join(sockdir, "b")
    p = start(procs, a, b, "adaptive,quiet-us=2000")
    sa, sb = slaves(a, b)
    try:
        for burst in range(3):                  # traffic, then quiet, three times
            frames = [frame(burst * 1000 + i, 64) for i in range(2000)]
            assert pump(sa, sb, frames) == frames
            time.sleep(0.2)
    finally:
        sa.close()
        sb.close()
    stats = finish(p)["interfaces"]["A"]["rx"][0]
    # each quiet spell arms (polling -> interrupt) and the next traffic disarms
    assert stats["mode_switches"] >= 5, stats
    assert stats["packets"] == 6000


def test_spec_accepts_adaptive_and_quiet():
    from memifx.cli.spec import parse_spec
    s = parse_spec("rx-mode=adaptive,quiet-us=250")
    assert s.rx_mode == "adaptive" and s.quiet == 250e-6
    i = memifx.Interface(socket="@x")
    i.set_rx_mode("adaptive")
    with pytest.raises(ValueError):
        i.set_rx_mode("sometimes")
