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


# ------------------------------------------------ forward: ring to ring

def linked_pair(sock, ring_size=64, buffer_size=2048, **master_kw):
    """An in-process master and slave on ``sock``, link up."""
    m = memifx.Interface(socket=sock, role="master", name="m", **master_kw).connect()
    s = memifx.Interface(socket=sock, role="slave", name="s", ring_size=ring_size,
                         buffer_size=buffer_size).connect()
    assert wait_for(lambda: m.connected and s.connected, 5)
    return m, s


def drain(intf, want, timeout=5.0):
    got = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        got += intf.rx_burst()
    return got


def test_forward_moves_each_frame_once(abstract_sock):
    """a.forward(b): what a's slave sent arrives at b's slave, in order,
    chained frames (buffer 256) included; a frame longer than b may send
    is dropped and counted there "frame too long"; nothing else is lost."""
    a, sa = linked_pair(abstract_sock + "a", buffer_size=256)
    b, sb = linked_pair(abstract_sock + "b", buffer_size=256, max_frame=1000)
    try:
        sizes = [60, 300, 1500, 64, 2000, 0, 1000, 256, 257]
        frames = [frame(i, n) if n >= 8 else b"" for i, n in enumerate(sizes)]
        assert sa.tx_burst(frames) == len(frames)
        assert a.forward(b) == len(frames) - 2      # 1500 and 2000 > b's max_frame
        assert drain(sb, len(frames) - 2) == [f for f in frames if len(f) <= 1000]
        assert a.forward(b) == 0
        rx, tx = a.stats()["rx"][0], b.stats()["tx"][0]
        assert rx["packets"] == len(frames) and not any(rx["drops"].values())
        assert tx["packets"] == len(frames) - 2 and tx["drops"]["frame too long"] == 2
        assert tx["bytes"] == sum(len(f) for f in frames if len(f) <= 1000)
    finally:
        for i in (sa, sb, a, b):
            i.close()


def test_forward_leaves_what_does_not_fit_in_the_ring(abstract_sock):
    """b's ring full or b's link down: the frames wait in a's receive ring
    (back-pressure, nothing dropped) and go out once b can take them."""
    a, sa = linked_pair(abstract_sock + "a", ring_size=64)
    b, sb = linked_pair(abstract_sock + "b", ring_size=16)
    sb2 = None
    try:
        frames = [frame(i, 64 + i) for i in range(64)]
        assert sa.tx_burst(frames) == 64
        assert a.forward(b) == 16                  # b's ring holds 16
        assert a.forward(b) == 0
        assert a.stats()["rx"][0]["packets"] == 16
        got = drain(sb, 16)
        assert a.forward(b, max=5) == 5
        got += drain(sb, 5)
        # b's slave goes away: forward moves nothing, loses nothing
        sb.close()
        assert wait_for(lambda: not b.connected, 5)
        assert a.forward(b) == 0 and a.stats()["rx"][0]["packets"] == 21
        sb2 = memifx.Interface(socket=abstract_sock + "b", role="slave", name="s2",
                               ring_size=64).connect()
        assert wait_for(lambda: b.connected and sb2.connected, 5)
        assert a.forward(b) == 43
        got += drain(sb2, 43)
        assert got == frames
        rx = a.stats()["rx"][0]
        assert rx["packets"] == 64 and not any(rx["drops"].values())
        assert b.stats()["tx"][0]["packets"] == 64
    finally:
        for i in (sa, sb, sb2, a, b):
            if i is not None:
                i.close()


def test_forward_to_itself_and_queue_checks(abstract_sock):
    """m.forward(m) echoes to the peer; queue numbers are checked whether or
    not the link is up; a link that is down moves nothing."""
    m, s = linked_pair(abstract_sock)
    idle = memifx.Interface(socket=abstract_sock + "idle", role="master")
    try:
        frames = [frame(i, 100) for i in range(200)]
        got = []
        sent = 0
        end = time.monotonic() + 10
        while len(got) < len(frames) and time.monotonic() < end:
            sent += s.tx_burst(frames[sent:sent + 50])
            m.forward(m, 32)
            got += s.rx_burst()
        assert got == frames
        with pytest.raises(IndexError):
            m.forward(m, queue=1)
        with pytest.raises(IndexError):
            m.forward(m, to_queue=1)
        with pytest.raises(IndexError):
            idle.forward(m, queue=1)
        assert idle.forward(m) == 0 and m.forward(idle) == 0
    finally:
        s.close()
        m.close()


def test_queue_forward_peer_faults():
    """Queue.forward against a hostile peer: a bad descriptor on the
    receive ring is dropped and counted, the frames around it go out; a
    buffer the receiving slave posted outside its region faults the
    transmit queue, and every frame not sent stays in the receive ring."""
    from loopback import Loopback
    src = Loopback(log2=4, buffer_size=2048, n_m2s=0)        # slave tx -> master rx
    dst = Loopback(log2=4, buffer_size=2048, n_s2m=0)        # master tx -> slave rx
    try:
        stx, mrx = src.s2m
        mtx, srx = dst.m2s
        frames = [frame(i, 80) for i in range(6)]
        assert stx.tx_frames(frames) == 6
        src.poke_desc(0, 2, offset=src.region_size)            # frame 2: outside the region
        assert mrx.forward(mtx) == 5
        assert srx.rx_frames(16) == frames[:2] + frames[3:]
        assert mrx.counters()["drops"]["bad descriptor"] == 1
        # the slave of dst poisons the buffer it posted in slot 5 (the 6th frame)
        assert stx.tx_frames(frames) == 6
        dst.poke_desc(0, 5 + 5, offset=dst.region_size)
        assert mrx.forward(mtx) == 5 and mtx.fault
        assert mrx.counters()["packets"] == 5 + 5
        assert srx.rx_frames(16) == frames[:5]
        with pytest.raises(ValueError):
            mtx.forward(mrx)                                   # not a receive queue
    finally:
        src.close()
        dst.close()


def test_batch_calls_check_their_buffers():
    """rx_batch/tx_batch (rx_into/tx_from below them) take the lengths only
    as a one-dimensional native uint32 array, the frames from any
    C-contiguous buffer (writable to receive into), and send nothing when a
    check fails."""
    from loopback import Loopback
    lb = Loopback(log2=4, n_m2s=0)
    tx, rx = lb.s2m
    try:
        data = bytes(range(64)) * 2
        for bad in (array("H", [64, 64]), array("i", [64, 64]), array("Q", [64, 64]),
                    bytes(8), memoryview(array("I", [64, 64, 0, 0])).cast("B").cast("I", (2, 2))):
            with pytest.raises(ValueError, match="uint32"):
                tx.tx_batch(data, bad)
            with pytest.raises((ValueError, BufferError)):
                rx.rx_batch(bytearray(256), bad)
        with pytest.raises(BufferError):
            rx.rx_batch(bytearray(256), memoryview(array("I", [0, 0])).toreadonly())
        with pytest.raises(BufferError):
            rx.rx_batch(bytes(256), array("I", [0, 0]))
        with pytest.raises(BufferError):                    # not contiguous
            tx.tx_batch(memoryview(data * 2)[::2], array("I", [64, 64]))
        with pytest.raises(TypeError):
            tx.tx_batch(None, array("I", [64]))
        with pytest.raises(ValueError, match="more than the buffer"):
            tx.tx_batch(data, array("I", [64, 65]))
        assert tx.counters()["packets"] == 0
        # accepted: memoryviews cast to "I" and "@I", frames in any buffer
        lengths = memoryview(bytearray(8)).cast("I")
        lengths[0] = lengths[1] = 64
        assert tx.tx_batch(array("B", data), lengths) == 2
        assert tx.tx_batch(memoryview(data), memoryview(array("I", [64, 64]))) == 2
        out, got = bytearray(512), memoryview(bytearray(16)).cast("@I")
        assert rx.rx_batch(out, got) == 4 and list(got) == [64] * 4
        assert bytes(out[:256]) == data * 2
    finally:
        lb.close()


def test_queue_forward_chained_frames_around_a_dropped_one():
    """Chained frames go out whole (tx_copy_parts from the receive
    segments); a chain with a bad descriptor is dropped and counted, and
    the frames after it still line up with their own segments."""
    from loopback import Loopback
    src = Loopback(log2=5, buffer_size=128, n_m2s=0)
    dst = Loopback(log2=5, buffer_size=2048, n_s2m=0)
    try:
        stx, mrx = src.s2m
        mtx, srx = dst.m2s
        frames = [frame(0, 300), frame(1, 80), frame(2, 300), frame(3, 200), frame(4, 129)]
        assert stx.tx_frames(frames) == 5
        # frame 2 starts at slot 4 (3 + 1 slots before it): break its second buffer
        src.poke_desc(0, 5, offset=src.region_size)
        assert mrx.forward(mtx) == 4
        assert srx.rx_frames(32) == [frames[0], frames[1], frames[3], frames[4]]
        assert mrx.counters()["drops"]["bad descriptor"] == 1
        assert mtx.counters()["packets"] == 4
        assert mtx.counters()["bytes"] == 300 + 80 + 200 + 129
    finally:
        src.close()
        dst.close()


def test_stats_keep_counting_a_link_while_it_goes_down(sock):
    """Link-down callbacks (a worker pool waits there for its workers) run
    before the link's queue counters are folded into the totals: stats()
    read meanwhile, by a callback or by another thread, still counts them
    (a worker pool resumes a restarted sender from these numbers)."""
    m = memifx.Interface(socket=sock, role="master", name="m").connect()
    s = memifx.Interface(socket=sock, role="slave", name="s").connect()
    seen = []
    try:
        assert m.wait_connected(5) and s.wait_connected(5)
        assert s.tx_burst([b"x" * 64] * 5) == 5
        s.on_link(lambda intf, up: seen.append(intf.stats()["tx"][0]["packets"]), first=True)
        m.close()
        assert wait_for(lambda: seen, 5)
        assert seen == [5]
        assert s.stats()["tx"][0]["packets"] == 5
    finally:
        s.close()
        m.close()
