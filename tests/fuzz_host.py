"""A long-lived memifx process serving several interfaces, for the fuzzer
(tests/test_fuzz.py) and the soaks (tests/test_soak.py).

    python tests/fuzz_host.py '{"socket": "@a", "id": 0, "role": "master"}' ...

Each argument is one JSON object of memifx.Interface keyword arguments.
Every interface echoes what it receives (rx queue q -> tx queue q mod n),
in interrupt mode, all from one thread: the process is no busy poller.  A
frame that cannot be sent after a few tries (the peer posts no buffers) is
dropped here and counted in ``echo_dropped``.

``FUZZ_HOST_RECONNECT_MAX`` (seconds) caps a slave's reconnect backoff
(memifx.interface.RECONNECT_MAX): a fuzzer that ends a link every few steps
would otherwise wait up to a second for each reconnection.

Prints "STARTED" once every interface is connecting or listening.  Each
line on stdin is a command answered with one JSON line on stdout:
``info`` (info() and stats() of every interface, echo counters, pid),
anything else gets {"error": ...}.  The answer comes from the echo thread,
so it also proves that thread is not stuck.
"""
import json
import os
import select
import subprocess
import sys
import time

import memifx
import memifx.interface

TX_TRIES = 4


def main():
    cap = os.environ.get("FUZZ_HOST_RECONNECT_MAX")
    if cap:
        memifx.interface.RECONNECT_MAX = float(cap)
    intfs = []
    for arg in sys.argv[1:]:
        kw = json.loads(arg)
        intf = memifx.Interface(**kw)
        for q in range(intf.rx_queues):
            intf.set_rx_mode("interrupt", q)
        intfs.append(intf.connect())
    counters = {"echoed": 0, "echo_dropped": 0}
    print("STARTED", flush=True)
    stdin = sys.stdin.fileno()
    os.set_blocking(stdin, False)
    pending = b""
    while True:
        fds = [stdin]
        for intf in intfs:
            if intf.connected:
                fds += [fd for fd in (intf.rx_fd(q) for q in range(intf.rx_queues))
                        if fd is not None]
        try:
            ready, _, _ = select.select(fds, [], [], 0.05)
        except (OSError, ValueError):
            ready = []                      # a link went down under us
        if stdin in ready:
            data = os.read(stdin, 4096)
            if not data:
                return 0                    # the test went away
            pending += data
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                answer(line.decode().strip(), intfs, counters)
        for intf in intfs:
            echo(intf, counters)


def echo(intf, counters):
    if not intf.connected:
        return
    info = intf.info()
    ntx = info.get("tx_queues") or 1
    for q in range(info.get("rx_queues") or 0):
        intf.rx_ack(q)
        for _ in range(64):                 # bounded: a peer may publish forever
            frames = intf.rx_burst(q)
            if not frames:
                break
            sent = 0
            for _ in range(TX_TRIES):
                sent += intf.tx_burst(frames[sent:], q % ntx)
                if sent == len(frames) or not intf.connected:
                    break
            counters["echoed"] += sent
            counters["echo_dropped"] += len(frames) - sent
    intf.check_faults()


def answer(cmd, intfs, counters):
    if cmd == "info":
        out = {"pid": os.getpid(), "time": time.time(), "echo": dict(counters),
               "interfaces": [dict(i.info(), stats=i.stats()) for i in intfs]}
    else:
        out = {"error": "unknown command %r" % cmd}
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()


class Host:
    """The test's handle on a fuzz_host process (started through the
    conftest ``procs`` fixture, so it dies with the test)."""

    def __init__(self, procs, *interfaces, env=None, prefix=()):
        args = list(prefix) + [sys.executable, "-X", "faulthandler",
                               os.path.abspath(__file__)] + \
            [json.dumps(kw) for kw in interfaces]
        environ = dict(os.environ, PYTHONUNBUFFERED="1")
        environ.update(env or {})
        self.proc = procs.start(args, stdin=subprocess.PIPE, env=environ)
        from conftest import read_until
        self._read_until = read_until
        read_until(self.proc, "STARTED", 20)

    @property
    def pid(self):
        return self.proc.pid

    def alive(self):
        return self.proc.poll() is None

    def info(self, timeout=5.0):
        """info() and stats() of every interface, from the echo thread
        (fails if that thread does not answer within ``timeout``)."""
        self.proc.stdin.write("info\n")
        self.proc.stdin.flush()
        return json.loads(self._read_until(self.proc, '"pid"', timeout))

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def maps(self):
        """(memfd mappings, all mappings) of the process."""
        with open("/proc/%d/maps" % self.pid) as f:
            lines = f.readlines()
        return sum(1 for line in lines if "memfd:" in line), len(lines)

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def output(self):
        """What the process printed (only once it has exited)."""
        if self.alive():
            return ""
        try:
            return self.proc.stdout.read()
        except (OSError, ValueError):
            return ""


if __name__ == "__main__":
    sys.exit(main())
