"""memifx's public API used as an application would, for the type checker.

tests/test_typing.py runs ``mypy --strict`` on this file: a stub or an
annotation that disagrees with how the API is meant to be used (a wrong
return type, a missing method, a parameter that does not take what the docs
say) fails that test.  ``assert_type`` pins the exact types an application
relies on.  test_typing also runs most of these functions over a real
link, so what type-checks here also works.  Nothing runs at import.
"""
from __future__ import annotations

import asyncio
import os
import selectors
import time
from array import array
from ipaddress import IPv4Address
from typing import Any, Optional

from typing_extensions import assert_type

import memifx
import memifx.aio
from memifx import (DEFAULT_MAX_FRAME, MAX_FRAME_SIZE, Buffer, ControlLoop, Interface,
                    LinkDown, MemifError, default_loop)
from memifx import pcap, wire
from memifx.fib import Fib, RouteError
from memifx.routes import load_routes
from memifx.ip4 import Router
from memifx.neighbor import NeighborTable
from memifx.ring import Queue
from memifx.rxmode import Idler
from memifx.traffic import Checker, Generator
from memifx.xconnect import XConnect


def open_pair(name: str) -> tuple[Interface, Interface]:
    """A master and a slave on an abstract socket, with every kind of option."""
    master = Interface(socket="@" + name, role="master", id=1, secret="s3cret",
                       allow_uid=[os.getuid(), 0], allow_gid=str(os.getgid()),
                       max_frame=DEFAULT_MAX_FRAME, max_regions=4, max_region_bytes=1 << 24,
                       rx_queues=2, tx_queues=2)
    slave = Interface(socket="@" + name, role="slave", id=1, secret=b"s3cret",
                      rx_queues=2, tx_queues=2, ring_size=512, buffer_size=2048)
    assert_type(master.connect(), Interface)
    slave.connect()
    assert_type(slave.wait_connected(5.0), bool)
    assert master.wait_connected(5.0)
    assert MAX_FRAME_SIZE >= DEFAULT_MAX_FRAME
    return master, slave


def copying(intf: Interface) -> int:
    """The copying calls: bytes-like frames in, bytes out, packed bursts."""
    sent = intf.tx_burst([b"\0" * 60, bytearray(64), memoryview(b"x" * 1500)], queue=1)
    assert_type(sent, int)
    frames = intf.rx_burst(0, max=32)
    assert_type(frames, list[bytes])
    buf = bytearray(1 << 16)
    lengths = array("I", [0] * 64)
    n = intf.rx_into(buf, lengths)
    assert_type(n, int)
    assert_type(intf.forward(intf, max=0, queue=0, to_queue=0), int)   # moves nothing
    return sent + len(frames) + intf.tx_from(buf, lengths[:n])


def zero_copy(intf: Interface) -> int:
    """Zero-copy receive and transmit: Buffer objects under the buffer protocol."""
    total = 0
    with intf.rx_zero_copy(queue=0, max=64) as bufs:
        assert_type(bufs, list[Buffer])
        for b in bufs:
            with memoryview(b) as view:
                total += view.nbytes + len(b)
            assert_type(b.chained, bool)
            assert_type(b.bytes, bytes)
            assert_type(b.valid, bool)
    out = intf.tx_alloc(8)
    for b in out:
        with memoryview(b) as view:
            view[:4] = b"abcd"
        assert_type(b.capacity, int)
    return total + intf.tx_commit(out, [4] * len(out))


def reasons(intf: Interface) -> str:
    """Errors carry the memif reason string; info() and stats() are dicts."""
    try:
        intf.tx_alloc(1)
    except LinkDown as e:
        return e.reason
    except MemifError as e:
        assert_type(e.reason, str)
        return e.reason
    info: dict[str, Any] = intf.info()
    stats: dict[str, Any] = intf.stats()
    last: str | None = info["last_disconnect"]
    return "%s %s" % (last, stats["link_flaps"])


def own_loop(name: str) -> bool:
    """An application that drives the control loop from its own selector;
    whether the link came up."""
    loop = ControlLoop()
    intf = Interface(socket="@" + name, role="slave", loop=loop)
    intf.connect()
    seen: list[bool] = []
    intf.on_link(lambda i, up: seen.append(up and i.connected))
    sel = selectors.DefaultSelector()
    sel.register(loop.fileno(), selectors.EVENT_READ)
    end = time.monotonic() + 5.0
    while not intf.connected and time.monotonic() < end:
        sel.select(min(loop.next_timeout() or 0.05, 0.05))
        loop.run_once(0)
    up = intf.connected and seen == [True]
    intf.set_rx_mode("interrupt")
    fd = intf.rx_fd()
    assert_type(fd, Optional[int])
    if fd is not None and intf.rx_pending():
        assert_type(intf.rx_ack(), bool)
    intf.close("bye")
    loop.stop()
    assert_type(default_loop(), ControlLoop)
    assert_type(loop.run_sync(lambda: 42), int)
    return up


async def interrupt_receive(intf: Interface) -> int:
    """asyncio: await the next burst."""
    frames = await memifx.aio.recv(intf, queue=0, max=64, timeout=1.0)
    assert_type(frames, list[bytes])
    return len(frames)


def run_interrupt_receive(intf: Interface) -> int:
    return asyncio.run(interrupt_receive(intf))


def nodes(a: Interface, b: Interface) -> int:
    """Pipeline nodes over the negotiated queues (as the CLI runs them)."""
    rxq: list[Queue] = a.active_queues("rx")
    txq: list[Queue] = b.active_queues("tx")
    xc = XConnect()
    moved = xc.poll(rxq[0], txq[0], max_frames=256, rounds=4)
    counters: dict[str, Any] = xc.counters()
    a.check_faults()
    idler = Idler([a, b])
    idler.after(moved)
    gen = Generator([64, 1500], flows=4)
    buf = bytearray(1 << 20)
    lengths = array("I", [0] * 256)
    frames, nbytes = gen.fill(buf, lengths, 256, array("I", [0, 1, 2, 3]))
    checker = Checker(verify="full")
    good = checker.check(buf, lengths, frames)
    latency = checker.latency()
    if latency is not None:
        assert_type(latency["p99"], int)
    return moved + good + nbytes + int(counters["packets"]) + len(checker.export())


def routing() -> int:
    """The FIB, the neighbor table and the router node."""
    fib = Fib()
    fib.add_route("10.0.0.0/24", "connected", ifindex=0)
    fib.add_route("0.0.0.0/0", "gateway", gw=IPv4Address("10.0.0.1"), ifindex=0)
    try:
        load_routes(fib, b"10.1.0.0/16 via 10.0.0.2\n", names=["eth0"])
    except RouteError as e:
        assert_type(e.line, int)
    nh = fib.lookup("10.1.2.3")
    kind, gw, ifindex = fib.nexthop(nh)
    assert_type(kind, str)
    view = Fib.from_shared(fib.fd)
    table = NeighborTable()
    router = Router(view, table)
    router.add_interface(0, b"\x02\0\0\0\0\x01", 0x0A000001)
    router.add_neighbor(0, 0x0A000002, b"\x02\0\0\0\0\x02")
    out = router.process(0, [b"\0" * 60])
    assert_type(out, list[tuple[int, bytes]])
    assert_type(table.get(0, 0x0A000002), Optional[bytes])
    return gw + ifindex + len(out)


def captures(path: str) -> int:
    """pcap files in and out."""
    cap = pcap.read(path)
    with pcap.Writer(path + ".out", cap.linktype) as w:
        w.write(b"\0" * 60)
        w.write_batch(cap.data, cap.lengths, len(cap))
    return len(cap.frames())


def messages() -> bytes:
    """The control message codec."""
    msg = wire.decode(wire.encode(wire.Disconnect(code=0, reason="bye")))
    if isinstance(msg, wire.Disconnect):
        assert_type(msg.reason, str)
    return wire.encode(wire.Hello(name="x", min_version=wire.VERSION, max_version=wire.VERSION,
                                  max_region=16, max_m2s_ring=1, max_s2m_ring=1,
                                  max_log2_ring_size=14))
