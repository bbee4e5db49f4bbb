"""Workload for tests/test_cost.py, meant to run under callgrind.

    python tests/cost_burst.py N [FRAME_SIZE [BURST]]

Pushes N frames (default 64 bytes) through an in-process S2M loopback
(slave tx_batch -> master rx_batch) in bursts of BURST (default 256), then
checks that everything arrived.  Everything else the script does (interpreter
start, imports, building the ring) is the same for every N, so the difference
between two runs with different N is the cost of the frames alone.
"""
import os
import sys
from array import array

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from loopback import Loopback  # noqa: E402


def main():
    n = int(sys.argv[1])
    size = int(sys.argv[2]) if len(sys.argv) > 2 else 64
    burst = int(sys.argv[3]) if len(sys.argv) > 3 else 256
    assert n % burst == 0
    lb = Loopback(log2=10, buffer_size=2048, n_m2s=0)
    tx, rx = lb.s2m
    src = bytes(range(256)) * (burst * size // 256 + 1)
    src = src[:burst * size]
    lens = array("I", [size]) * burst
    dst = bytearray(burst * size)
    out = array("I", [0]) * burst
    for _ in range(n // burst):
        if tx.tx_batch(src, lens) != burst:
            raise SystemExit("short tx")
        if rx.rx_batch(dst, out) != burst:
            raise SystemExit("short rx")
    if dst != src or rx.counters()["packets"] != n:
        raise SystemExit("data mismatch")
    lb.close()


if __name__ == "__main__":
    main()
