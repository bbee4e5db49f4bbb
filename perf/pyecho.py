"""A DUT written against memifx's public Python API: every frame received on
interface A is sent on interface B (the perf suite's tester sends on A and
receives on B).  Three variants of the same loop:

  burst    rx_burst() -> tx_burst()        bytes objects, one per frame
  zc       rx_zero_copy() -> tx_burst()    Buffer views of shared memory (slave side)
  batch    rx_into() -> tx_from()          one bytearray + uint32 array per burst
  forward  a.forward(b)                    ring to ring in C, one copy, no buffer

Usage: python perf/pyecho.py VARIANT SOCKET_A SOCKET_B [ROLE]
Runs until SIGTERM/SIGINT; prints "pyecho: VARIANT listening" once both
interfaces listen (or connect) and "pyecho: N frames, M dropped" at exit.
Frames that find B's ring full are dropped (counted), as a forwarder under
MRR load does, except with ``forward``: it leaves them in A's ring until B
has room (back-pressure), so it never drops.
"""
import signal
import sys
from array import array

import memifx


def main():
    variant, sa, sb = sys.argv[1:4]
    role = sys.argv[4] if len(sys.argv) > 4 else ("slave" if variant == "zc" else "master")
    a = memifx.Interface(socket=sa, role=role, name="pyecho-a", ring_size=1024, buffer_size=2048)
    b = memifx.Interface(socket=sb, role=role, name="pyecho-b", ring_size=1024, buffer_size=2048)
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    a.connect()
    b.connect()
    print("pyecho: %s listening" % variant, flush=True)
    moved = dropped = 0
    if variant == "burst":
        rx_burst, tx_burst = a.rx_burst, b.tx_burst
        while not stop:
            frames = rx_burst(0, 256)
            if frames:
                n = tx_burst(frames)
                moved += n
                dropped += len(frames) - n
    elif variant == "zc":
        rx_zc, tx_burst = a.rx_zero_copy, b.tx_burst
        while not stop:
            with rx_zc(0, 256) as bufs:
                if bufs:
                    n = tx_burst(bufs)
                    moved += n
                    dropped += len(bufs) - n
    elif variant == "batch":
        buf = bytearray(256 * 2048)
        lengths = array("I", bytes(4 * 256))
        lv = memoryview(lengths)
        rx_into, tx_from = a.rx_into, b.tx_from
        while not stop:
            n = rx_into(buf, lengths)
            if n:
                k = tx_from(buf, lv[:n])
                moved += k
                dropped += n - k
    elif variant == "forward":
        forward = a.forward
        while not stop:
            moved += forward(b, 256)
    else:
        sys.exit("unknown variant %r" % variant)
    a.close()
    b.close()
    print("pyecho: %d frames, %d dropped" % (moved, dropped), flush=True)


if __name__ == "__main__":
    main()
