"""memifx <-> memifx across processes: roles, queues, sockets, secrets, modes,
frame sizes, and reconnects after SIGKILL.  The far side is tests/endpoint.py
echoing in interrupt mode (no busy poller); this process polls with sleeps."""
import os
import signal
import struct
import time

import pytest

import memifx
from conftest import read_until, wait_for

pytestmark = pytest.mark.timeout(60)

PATTERN = bytes(range(256)) * 40


def frame(seq, size):
    """8-byte sequence number, then a pattern that depends on it, over the whole frame."""
    k = seq % 251
    return struct.pack("<Q", seq) + PATTERN[k:k + size - 8]


def pump(tx, rx, frames, tx_queue=0, rx_queues=(0,), timeout=10, pace=64, window=256):
    """Send ``frames`` on ``tx`` (retrying on a full ring, at most ``window``
    in flight) and return everything that arrives on ``rx``'s queues meanwhile.
    Through a forwarder that drops on a full transmit ring (xconnect), keep
    ``window`` below that ring's size, or a slow poll here loses frames."""
    got, sent = [], 0
    end = time.monotonic() + timeout
    while (sent < len(frames) or len(got) < len(frames)) and time.monotonic() < end:
        if sent < len(frames) and sent - len(got) < window:
            sent += tx.tx_burst(frames[sent:sent + pace], tx_queue)
        moved = 0
        for q in rx_queues:
            b = rx.rx_burst(q)
            got += b
            moved += len(b)
        if not moved:
            time.sleep(0.0002)
    return got


def exchange(intf, frames, tx_queue=0, rx_queues=(0,), timeout=10.0):
    """Send ``frames`` on ``intf`` and return what an echo peer sends back."""
    return pump(intf, intf, frames, tx_queue, rx_queues, timeout)


def start_echo(procs, sock, *extra, role="master"):
    p = procs.endpoint("--socket", sock, "--role", role, *extra)
    read_until(p, "STARTED")
    return p


@pytest.fixture
def slave_of(procs):
    made = []

    def make(sock, **kw):
        intf = memifx.Interface(socket=sock, role="slave", name="test", **kw).connect()
        made.append(intf)
        return intf
    yield make
    for i in made:
        i.close()


@pytest.fixture
def master_at():
    made = []

    def make(sock, **kw):
        intf = memifx.Interface(socket=sock, role="master", name="test", **kw).connect()
        made.append(intf)
        return intf
    yield make
    for i in made:
        i.close()


@pytest.mark.parametrize("where", ["filesystem", "abstract"])
def test_slave_here_master_there(procs, sock, abstract_sock, slave_of, where):
    path = sock if where == "filesystem" else abstract_sock
    p = start_echo(procs, path)
    intf = slave_of(path)
    assert intf.wait_connected(5)
    read_until(p, "LINK UP test")
    frames = [frame(i, 64 + i) for i in range(500)]
    assert exchange(intf, frames) == frames
    assert intf.info()["peer_name"] == "endpoint"
    if where == "filesystem":
        assert os.path.exists(sock)


def test_master_here_slave_there(procs, sock, master_at):
    intf = master_at(sock)
    p = start_echo(procs, sock, role="slave")
    assert intf.wait_connected(5)
    read_until(p, "LINK UP test")
    frames = [frame(i, 60 + (i * 37) % 1459) for i in range(1000)]
    assert exchange(intf, frames) == frames
    st = intf.stats()
    assert st["tx"][0]["packets"] == 1000 and st["rx"][0]["packets"] == 1000
    intf.close()
    assert not os.path.exists(sock)         # our socket file is removed


@pytest.mark.parametrize("role_here", ["slave", "master"])
def test_every_size_byte_identical(procs, sock, slave_of, master_at, role_here):
    """64..9216 bytes, chained over 2048-byte buffers, full-payload check."""
    sizes = list(range(64, 9217, 97)) + [2047, 2048, 2049, 4096, 6144, 9216]
    frames = [frame(i, s) for i, s in enumerate(sizes)]
    if role_here == "slave":
        start_echo(procs, sock)
        intf = slave_of(sock)
    else:
        intf = master_at(sock)
        start_echo(procs, sock, role="slave")
    assert intf.wait_connected(5)
    assert exchange(intf, frames) == frames


def test_four_queue_pairs(procs, sock, slave_of):
    start_echo(procs, sock, "--rx-queues", 4, "--tx-queues", 4)
    intf = slave_of(sock, rx_queues=4, tx_queues=4)
    assert intf.wait_connected(5)
    info = intf.info()
    assert info["rx_queues"] == 4 and info["tx_queues"] == 4
    for q in range(4):
        frames = [frame(q * 1000 + i, 100 + q) for i in range(200)]
        # the echo sends rx queue i back on tx queue i
        assert exchange(intf, frames, tx_queue=q, rx_queues=(q,)) == frames


def test_asymmetric_queues_negotiated_down(procs, sock, slave_of):
    # master offers 4 s2m (its rx) and 1 m2s (its tx) rings
    p = start_echo(procs, sock, "--rx-queues", 4, "--tx-queues", 1)
    intf = slave_of(sock, rx_queues=3, tx_queues=2)
    assert intf.wait_connected(5)
    info = intf.info()
    assert (info["tx_queues"], info["rx_queues"]) == (2, 1)
    frames = [frame(i, 200) for i in range(300)]
    assert exchange(intf, frames[:150], tx_queue=0) == frames[:150]
    assert exchange(intf, frames[150:], tx_queue=1) == frames[150:]
    # queues configured but not negotiated are empty, not errors
    assert intf.rx_burst(2) == [] and intf.rx_fd(2) is None
    with pytest.raises(IndexError):
        intf.rx_burst(3)
    p.send_signal(signal.SIGTERM)


def test_ring_size_negotiated(procs, sock, slave_of):
    start_echo(procs, sock)
    intf = slave_of(sock, ring_size=1 << 14, buffer_size=128)
    assert intf.wait_connected(5)
    assert intf.info()["tx_ring_sizes"] == [1 << 14]
    frames = [frame(i, 1500) for i in range(100)]      # 12 buffers each
    assert exchange(intf, frames) == frames


@pytest.mark.parametrize("secret_there, secret_here, reason", [
    ("s3cret", "s3cret", None),
    ("s3cret", "wrong", "peer not allowed"),      # the master's cause: incorrect secret
    ("s3cret", None, "peer not allowed"),         # ... secret required
    ("x" * 23, "x" * 23, None),
])
def test_secret(procs, sock, slave_of, secret_there, secret_here, reason):
    start_echo(procs, sock, "--secret", secret_there)
    intf = slave_of(sock, secret=secret_here)
    if reason is None:
        assert intf.wait_connected(5)
        assert exchange(intf, [frame(1, 64)]) == [frame(1, 64)]
    else:
        assert not intf.wait_connected(1.0)
        assert wait_for(lambda: intf.info()["last_disconnect"] == reason, 5)


def test_secret_too_long_is_refused_here():
    with pytest.raises(ValueError, match="secret"):
        memifx.Interface(socket="@x", secret="y" * 24)


def test_mode_mismatch(procs, sock, slave_of):
    start_echo(procs, sock, "--mode", "ip")
    intf = slave_of(sock, mode="ethernet")
    assert not intf.wait_connected(1.0)
    assert wait_for(lambda: intf.info()["last_disconnect"] == "mode mismatch", 5)


@pytest.mark.parametrize("mode", ["ip", "punt-inject"])
def test_other_modes_carry_payload(procs, sock, slave_of, mode):
    start_echo(procs, sock, "--mode", mode)
    intf = slave_of(sock, mode=mode)
    assert intf.wait_connected(5)
    frames = [frame(i, 40 + i) for i in range(50)]
    assert exchange(intf, frames) == frames


def test_unmatched_id(procs, sock, slave_of):
    start_echo(procs, sock, "--id", 7)
    intf = slave_of(sock, id=8)
    assert wait_for(lambda: intf.info()["last_disconnect"] == "peer not allowed", 5)


def test_one_socket_many_ids(sock, master_at, slave_of):
    masters = [master_at(sock, id=i) for i in range(3)]
    slaves = [slave_of(sock, id=i) for i in range(3)]
    assert all(s.wait_connected(5) for s in slaves)
    for i, (m, s) in enumerate(zip(masters, slaves)):
        f = [frame(i, 64 + i)]
        assert s.tx_burst(f) == 1
        assert wait_for(lambda: m.rx_pending(), 2)
        assert m.rx_burst() == f
    # a second master with a taken id on the same socket is refused
    with pytest.raises(memifx.MemifError, match="already in use"):
        memifx.Interface(socket=sock, role="master", id=1).connect()


def test_reconnect_after_master_sigkill(procs, sock, slave_of):
    p = start_echo(procs, sock)
    intf = slave_of(sock)
    assert intf.wait_connected(5)
    assert exchange(intf, [frame(1, 64)]) == [frame(1, 64)]
    os.killpg(p.pid, signal.SIGKILL)
    assert wait_for(lambda: not intf.connected, 5)
    assert intf.info()["last_disconnect"] == "peer closed the connection"
    assert intf.tx_burst([frame(2, 64)]) == 0 and intf.rx_burst() == []
    start_echo(procs, sock)                 # stale socket file is replaced
    assert intf.wait_connected(5)
    assert exchange(intf, [frame(3, 64)]) == [frame(3, 64)]
    assert intf.info()["link_flaps"] == 1


def test_reconnect_after_slave_sigkill(procs, sock, master_at):
    intf = master_at(sock)
    p = start_echo(procs, sock, role="slave")
    assert intf.wait_connected(5)
    assert exchange(intf, [frame(1, 64)]) == [frame(1, 64)]
    os.killpg(p.pid, signal.SIGKILL)
    assert wait_for(lambda: not intf.connected, 5)
    start_echo(procs, sock, role="slave")
    assert intf.wait_connected(5)
    assert exchange(intf, [frame(2, 64)]) == [frame(2, 64)]
    assert intf.stats()["tx"][0]["packets"] == 2      # counters survive the flap


def test_leftover_socket_in_use_is_not_stolen(procs, sock):
    start_echo(procs, sock)
    with pytest.raises(memifx.MemifError, match="in use"):
        memifx.Interface(socket=sock, role="master", id=0).connect()


def test_missing_socket_directory():
    with pytest.raises(memifx.MemifError, match="does not exist"):
        memifx.Interface(socket="/nonexistent-dir/x.sock", role="master").connect()
