"""A memifx master in its own process, for tests/test_limits.py: its fds, CPU
time and log can be watched from outside while a test floods it.

    python tests/limits_master.py --socket S --ids 0,1 --log FILE
        [--nofile N] [--init-timeout S] [--handshake-timeout S] [--kw key=value ...]

One master interface per id (limits from ``--kw``, e.g. max_handshakes=1000),
each echoing what it receives (interrupt mode: it sleeps in poll()).
Prints "STARTED", "LINK UP <id>", "LINK DOWN <id> <reason>"; a line "stats"
on stdin prints "STATS <json of info()['listener']>".  memifx's log goes to
FILE (warnings and up).
"""
import argparse
import json
import logging
import resource
import select
import sys
import threading
import time

import memifx
from memifx import control


_out = threading.Lock()


def say(line):
    """One whole line per write: the link callback and the stats thread print."""
    with _out:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--ids", default="0")
    ap.add_argument("--log", required=True)
    ap.add_argument("--nofile", type=int)
    ap.add_argument("--init-timeout", type=float)
    ap.add_argument("--handshake-timeout", type=float)
    ap.add_argument("--kw", action="append", default=[])
    a = ap.parse_args()

    logging.basicConfig(filename=a.log, level=logging.WARNING,
                        format="%(levelname)s %(message)s")
    if a.init_timeout is not None:
        control.INIT_TIMEOUT = a.init_timeout
    if a.handshake_timeout is not None:
        control.HANDSHAKE_TIMEOUT = a.handshake_timeout
    kw = {k: int(v) for k, _, v in (item.partition("=") for item in a.kw)}

    intfs = []
    for id in (int(x) for x in a.ids.split(",")):
        intf = memifx.Interface(socket=a.socket, id=id, role="master", name="lm%d" % id,
                                ring_size=64, **kw)

        def on_link(i, up):
            if up:
                say("LINK UP %d" % i.id)
            else:
                say("LINK DOWN %d %s" % (i.id, i.info()["last_disconnect"]))
        intf.on_link(on_link)
        intf.set_rx_mode("interrupt")
        intf.connect()
        intfs.append(intf)

    def commands():
        for line in sys.stdin:
            if line.strip() == "stats":
                say("STATS %s" % json.dumps(intfs[0].info()["listener"]))
    threading.Thread(target=commands, daemon=True).start()

    # Lowered last: the interpreter, the listener and the log file are open.
    if a.nofile:
        resource.setrlimit(resource.RLIMIT_NOFILE, (a.nofile, a.nofile))
    say("STARTED")
    poller = select.poll()
    watched = set()
    while True:
        fds = {}
        for intf in intfs:
            fd = intf.rx_fd() if intf.connected else None
            if fd is not None:
                fds[fd] = intf
        for fd in watched - set(fds):
            poller.unregister(fd)
        for fd in set(fds) - watched:
            poller.register(fd, select.POLLIN)
        watched = set(fds)
        if not fds:
            time.sleep(0.01)
            continue
        poller.poll(50)
        for intf in fds.values():
            intf.rx_ack()
            frames = intf.rx_burst()
            if frames:
                intf.tx_burst(frames)


if __name__ == "__main__":
    sys.exit(main())
