"""A memifx endpoint in its own process, for tests.

    python tests/endpoint.py --socket S --role master|slave [--id N] [--mode M]
        [--secret X] [--rx-queues N] [--tx-queues N] [--ring-size N]
        [--buffer-size N] [--name NAME] [--action echo|idle]

Prints "LINK UP <peer>" / "LINK DOWN <reason>" as the link changes.  ``echo``
sends every received frame back on tx queue (rx queue mod tx queues); it
sleeps on the queues' eventfds (interrupt mode), so it is no busy poller.
"""
import argparse
import sys
import time

import memifx
from memifx.fdwait import wait_readable


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--role", default="slave")
    ap.add_argument("--id", type=int, default=0)
    ap.add_argument("--mode", default="ethernet")
    ap.add_argument("--secret")
    ap.add_argument("--rx-queues", type=int, default=1)
    ap.add_argument("--tx-queues", type=int, default=1)
    ap.add_argument("--ring-size", type=int, default=1024)
    ap.add_argument("--buffer-size", type=int, default=2048)
    ap.add_argument("--name", default="endpoint")
    ap.add_argument("--action", default="echo")
    a = ap.parse_args()

    intf = memifx.Interface(socket=a.socket, id=a.id, role=a.role, secret=a.secret,
                            mode=a.mode, rx_queues=a.rx_queues, tx_queues=a.tx_queues,
                            ring_size=a.ring_size, buffer_size=a.buffer_size, name=a.name)

    def on_link(i, up):
        if up:
            print("LINK UP %s" % i.info()["peer_name"], flush=True)
        else:
            print("LINK DOWN %s" % i.info()["last_disconnect"], flush=True)

    intf.on_link(on_link)
    for q in range(a.rx_queues):
        intf.set_rx_mode("interrupt", q)
    intf.connect()
    print("STARTED", flush=True)
    while True:
        if a.action != "echo" or not intf.connected:
            time.sleep(0.01)
            continue
        fds = [fd for fd in (intf.rx_fd(q) for q in range(a.rx_queues)) if fd is not None]
        wait_readable(fds, 0.05)                # a link going down ends it too
        info = intf.info()
        ntx = info.get("tx_queues") or 1
        for q in range(info.get("rx_queues") or 0):
            intf.rx_ack(q)
            while True:
                frames = intf.rx_burst(q)
                if not frames:
                    break
                sent, tries = 0, 0
                while sent < len(frames) and intf.connected and tries < 100000:
                    sent += intf.tx_burst(frames[sent:], q % ntx)
                    tries += 1


if __name__ == "__main__":
    sys.exit(main())
