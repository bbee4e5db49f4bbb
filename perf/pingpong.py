"""Round trip of single frames through a memif echo peer, from Python.

Usage: python perf/pingpong.py SOCKET COUNT [polling|interrupt] [SIZE]

Connects as a slave to SOCKET (a `memifx echo` master), then COUNT times: send
one frame, wait for it to come back (interrupt: sleep on the
queue's eventfd (memifx.fdwait); polling: spin on rx_burst), and time it with
perf_counter_ns.  The first 10 % are warm-up.  Prints one JSON line:
{"count", "p50_us", "p90_us", "p99_us", "max_us", "min_us"}.
"""
import json
import sys
import time

import memifx
from memifx.fdwait import wait_readable


def main():
    sock, count = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "interrupt"
    size = int(sys.argv[4]) if len(sys.argv) > 4 else 64
    intf = memifx.Interface(socket=sock, role="slave", name="ping")
    intf.connect()
    if not intf.wait_connected(10):
        sys.exit("pingpong: no link")
    intf.set_rx_mode(mode)
    frame = bytes.fromhex("ffffffffffff02aa00000001" "88b5") + bytes(size - 14)
    clock = time.perf_counter_ns
    rx, tx = intf.rx_burst, intf.tx_burst
    fd = intf.rx_fd()
    warm = count // 10
    lat = []
    for i in range(warm + count):
        t0 = clock()
        tx([frame])
        while True:
            got = rx()
            if got:
                break
            if mode == "interrupt":
                if not wait_readable([fd], 1.0):
                    sys.exit("pingpong: frame %d lost" % i)
                intf.rx_ack()
        t1 = clock()
        if i >= warm:
            lat.append(t1 - t0)
    intf.close()
    lat.sort()

    def pct(p):
        return round(lat[min(len(lat) - 1, int(p / 100.0 * len(lat)))] / 1000.0, 3)
    print(json.dumps({"count": len(lat), "min_us": pct(0), "p50_us": pct(50), "p90_us": pct(90),
                      "p99_us": pct(99), "max_us": round(lat[-1] / 1000.0, 3)}))


if __name__ == "__main__":
    main()
