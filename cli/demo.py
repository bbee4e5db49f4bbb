"""``memifx demo``: a real memif link between two processes, traffic, a rate.

The master is ``memifx echo`` in a child process; this process is the slave.
It sends numbered frames in bursts with the batch API, checks that every frame
comes back whole and in order, and prints the rate once a second.
"""
import os
import struct
import subprocess
import sys
import time
from array import array

import psutil

import memifx

BURST = 256


def _pin(pid, cpu):
    try:
        if len(psutil.Process().cpu_affinity()) > 1:
            psutil.Process(pid).cpu_affinity([cpu])
    except (psutil.Error, AttributeError, OSError):
        pass


def _frames(size, seq0):
    """BURST frames: broadcast Ethernet header, 8-byte sequence number, pattern."""
    head = b"\xff" * 6 + b"\x02\xfe\x00\x00\x00\x01" + b"\x88\xb5"
    body = bytes(range(256)) * (size // 256 + 1)
    out = bytearray()
    for i in range(BURST):
        out += head + struct.pack("<Q", seq0 + i) + body[:size - 22]
    return out


def run_demo(duration, size, say):
    say = say or (lambda *_: None)
    sock = "@memifx-demo-%d" % os.getpid()
    child = subprocess.Popen(
        [sys.executable, "-m", "memifx.cli.main", "echo",
         "socket=%s,role=master,name=demo-echo" % sock],
        stdout=subprocess.DEVNULL, start_new_session=True)
    _pin(child.pid, 1)
    _pin(os.getpid(), 0)
    intf = memifx.Interface(socket=sock, role="slave", name="demo")
    sent = received = corrupt = 0
    rx_buf = bytearray(BURST * (size + 64))
    rx_len = array("I", bytes(4 * BURST))
    lengths = array("I", [size] * BURST)
    template = _frames(size, 0)
    try:
        intf.connect()
        if not intf.wait_connected(10):
            raise SystemExit("demo: the echo master did not come up: %s"
                             % intf.info()["last_disconnect"])
        say("link up: %s (slave) <-> %s (master in pid %d) on %s"
            % (intf.name, intf.info()["peer_name"], child.pid, sock))
        start = last = time.monotonic()
        last_rx = 0
        while True:
            now = time.monotonic()
            if now - start >= duration:
                break
            if sent - received < 4 * BURST:
                sent += intf.tx_from(template, lengths)
            n = intf.rx_into(rx_buf, rx_len)
            for i in range(n):
                off = i * size
                if rx_len[i] != size or \
                        rx_buf[off + 22:off + size] != template[22:size]:
                    corrupt += 1
            received += n
            if now - last >= 1.0:
                say("%6.2f Mpps  %6.2f Gbit/s  (%d frames back)"
                    % ((received - last_rx) / (now - last) / 1e6,
                       (received - last_rx) * size * 8 / (now - last) / 1e9, received))
                last, last_rx = now, received
        deadline = time.monotonic() + 1.0
        while received < sent and time.monotonic() < deadline:
            received += intf.rx_into(rx_buf, rx_len)
        seconds = time.monotonic() - start
    finally:
        intf.close("demo finished")
        child.terminate()
        try:
            child.wait(5)
        except subprocess.TimeoutExpired:
            child.kill()
    result = {"packets": received, "bytes": received * size, "seconds": seconds,
              "mpps": received / seconds / 1e6, "gbps": received * size * 8 / seconds / 1e9,
              "sent": sent, "lost": sent - received, "corrupt": corrupt, "size": size}
    say("%d frames of %d bytes sent, %d back, %d corrupt: %.2f Mpps round trip"
        % (sent, size, received, corrupt, result["mpps"]))
    return result
