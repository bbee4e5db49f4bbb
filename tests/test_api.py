"""The Python API: who drives the control loop, asyncio, zero-copy lifetimes,
callbacks, and link loss in the middle of data-path calls."""
import asyncio
import os
import signal
import threading
import time
from array import array

import pytest

import memifx
import memifx.aio
from conftest import wait_for
from test_link import exchange, frame, start_echo

pytestmark = pytest.mark.timeout(60)


def test_application_driven_loop(sock):
    """No background thread: the application polls loop.fileno()."""
    import select
    loop = memifx.ControlLoop()
    m = memifx.Interface(socket=sock, role="master", name="m", loop=loop).connect()
    s = memifx.Interface(socket=sock, role="slave", name="s", loop=loop).connect()
    assert not loop.threaded
    end = time.monotonic() + 5
    while not (m.connected and s.connected) and time.monotonic() < end:
        t = loop.next_timeout()
        select.select([loop.fileno()], [], [], 0.1 if t is None else min(t, 0.1))
        loop.run_once(0)
    assert m.connected and s.connected
    assert s.tx_burst([b"x" * 64]) == 1
    assert m.rx_burst() == [b"x" * 64]
    s.close()
    m.close()
    assert not os.path.exists(sock)


def test_link_callbacks(procs, sock):
    events = []
    s = memifx.Interface(socket=sock, role="slave", name="s")
    s.on_link(lambda intf, up: events.append((up, intf.info()["last_disconnect"])))
    s.connect()
    p = start_echo(procs, sock)
    try:
        assert s.wait_connected(5)
        os.killpg(p.pid, signal.SIGKILL)
        assert wait_for(lambda: len(events) == 2, 5)
        assert events == [(True, None), (False, "peer closed the connection")]
    finally:
        s.close()


def test_asyncio_recv(procs, sock):
    start_echo(procs, sock)
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    try:
        assert s.wait_connected(5)

        async def main():
            with pytest.raises(TimeoutError):
                await memifx.aio.recv(s, timeout=0.05)
            s.tx_burst([frame(1, 100)])
            return await memifx.aio.recv(s, timeout=5)

        assert asyncio.run(main()) == [frame(1, 100)]
        assert s.info()["rx_modes"] == ["interrupt"]
    finally:
        s.close()


def test_interrupt_mode_wakes_the_fd(sock):
    import select
    m = memifx.Interface(socket=sock, role="master", name="m").connect()
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    try:
        assert s.wait_connected(5) and m.wait_connected(5)
        m.set_rx_mode("interrupt")
        fd = m.rx_fd()
        assert select.select([fd], [], [], 0)[0] == []
        s.tx_burst([b"a" * 60])
        assert select.select([fd], [], [], 2)[0] == [fd]
        assert m.rx_ack() and m.rx_burst() == [b"a" * 60]
        m.set_rx_mode("polling")            # MASK_INT: the peer stops signalling
        s.tx_burst([b"b" * 60])
        assert select.select([fd], [], [], 0.1)[0] == []
        assert m.rx_burst() == [b"b" * 60]
        assert s.stats()["tx"][0]["irq_sent"] == 1
    finally:
        s.close()
        m.close()


def test_zero_copy_receive_and_transmit(sock):
    m = memifx.Interface(socket=sock, role="master", name="m").connect()
    s = memifx.Interface(socket=sock, role="slave", name="s", buffer_size=1024).connect()
    try:
        assert s.wait_connected(5) and m.wait_connected(5)
        bufs = s.tx_alloc(4)
        assert len(bufs) == 4 and all(b.capacity == 1024 for b in bufs)
        for i, b in enumerate(bufs[:3]):
            mv = memoryview(b)
            mv[:100] = bytes([i]) * 100
            mv.release()
        assert s.tx_commit(bufs[:3], [100, 100, 100]) == 3
        assert not bufs[3].valid                       # the rest of the allocation is void
        assert m.rx_burst() == [bytes([i]) * 100 for i in range(3)]
        big = os.urandom(2500)                         # 3 buffers of 1024
        assert m.tx_burst([big, b"z" * 70]) == 2
        with s.rx_zero_copy() as got:
            assert [len(b) for b in got] == [1024, 1024, 452, 70]
            assert [b.chained for b in got] == [True, True, False, False]
            assert b"".join(bytes(b) for b in got[:3]) == big
            keep = got[0]
        assert not keep.valid and len(keep) == 0
        with pytest.raises(BufferError):
            memoryview(keep)
        # buffers went back to the ring: the link keeps working
        for i in range(3000):
            assert m.tx_burst([b"q" * 64]) == 1
            with s.rx_zero_copy() as got:
                assert len(got) == 1
    finally:
        s.close()
        m.close()


def test_link_down_while_buffers_held(procs, sock):
    """The mapping stays until the application lets the buffers go; they
    refuse use from the moment the link is gone."""
    start = start_echo(procs, sock)
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    try:
        assert s.wait_connected(5)
        s.tx_burst([frame(i, 500) for i in range(8)])
        assert wait_for(lambda: s.rx_pending(), 5)
        time.sleep(0.05)
        with s.rx_zero_copy() as held:
            assert held and bytes(held[0]) == frame(0, 500)
            os.killpg(start.pid, signal.SIGKILL)
            assert wait_for(lambda: not s.connected, 5)
            assert not held[0].valid
            with pytest.raises(BufferError):
                held[0].bytes
        # a new master: the slave comes back with fresh memory
        start_echo(procs, sock)
        assert s.wait_connected(5)
        assert exchange(s, [frame(99, 64)]) == [frame(99, 64)]
    finally:
        s.close()


def test_link_down_while_another_thread_bursts(procs, sock):
    """A peer killed while this process transmits and receives in another
    thread: bursts return 0 afterwards, nothing crashes."""
    p = start_echo(procs, sock)
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    assert s.wait_connected(5)
    stop = threading.Event()
    counts = {"tx": 0, "rx": 0, "after": 0}
    buf = bytes(64 * 256)
    lengths = array("I", [64] * 256)
    rxbuf = bytearray(256 * 2048)
    rxlen = array("I", [0] * 256)

    def worker():
        while not stop.is_set():
            counts["tx"] += s.tx_from(buf, lengths)
            counts["rx"] += s.rx_into(rxbuf, rxlen)
            if not s.connected:
                counts["after"] += 1
            time.sleep(0.0002)

    t = threading.Thread(target=worker)
    t.start()
    try:
        assert wait_for(lambda: counts["rx"] > 10000, 10)
        os.killpg(p.pid, signal.SIGKILL)
        assert wait_for(lambda: counts["after"] > 100, 10)
    finally:
        stop.set()
        t.join(5)
        s.close()
    assert not t.is_alive()


def test_errors_carry_reasons():
    e = memifx.MemifError("incorrect secret")
    assert e.reason == "incorrect secret" and str(e) == "incorrect secret"
    for bad in (dict(role="boss"), dict(mode="atm"), dict(ring_size=1000),
                dict(buffer_size=64), dict(rx_queues=0), dict(tx_queues=256), dict(secret="")):
        with pytest.raises(ValueError):
            memifx.Interface(socket="@x", **bad)
    assert memifx.Interface(socket="@x", role="server").role == "master"
    assert memifx.Interface(socket="@x", role="client").role == "slave"


def test_master_is_up_before_it_sends_connected(sock, monkeypatch):
    """Regression: the master used to mark its link up only after sending
    CONNECTED, so a peer that saw its own link up could send into a master
    that still counted it as down."""
    from memifx import control, wire
    seen = []
    real_send = control.MasterChannel.send

    def send(self, msg, fd=None):
        if isinstance(msg, wire.Connected):
            seen.append(self.intf.connected)
        return real_send(self, msg, fd)

    monkeypatch.setattr(control.MasterChannel, "send", send)
    m = memifx.Interface(socket=sock, role="master", name="m").connect()
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    try:
        assert s.wait_connected(5)
        assert seen == [True]
    finally:
        s.close()
        m.close()
