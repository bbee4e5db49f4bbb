"""What every long-running command shares: signals, link events, stats lines."""
import json
import signal
import time

import click


class Stop:
    """Set by SIGINT/SIGTERM, or when --duration runs out."""

    def __init__(self, duration=0):
        self.flag = False
        self.start = time.monotonic()
        self.end = self.start + duration if duration else None
        signal.signal(signal.SIGINT, self._handler)
        signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.flag = True

    def __bool__(self):
        return self.flag or (self.end is not None and time.monotonic() >= self.end)

    @property
    def elapsed(self):
        return time.monotonic() - self.start


def print_link(json_out):
    """An on_link callback that tells the operator (unless --json)."""
    def cb(intf, up):
        if json_out:
            return
        if up:
            click.echo("%s: link up (peer %s)" % (intf.name, intf.info()["peer_name"]))
        else:
            click.echo("%s: link down (%s)" % (intf.name, intf.info()["last_disconnect"]))
    return cb


def connect_all(interfaces, json_out):
    import memifx
    for intf in interfaces:
        intf.on_link(print_link(json_out))
        try:
            intf.connect()
        except memifx.MemifError as e:
            for other in interfaces:
                other.close()
            raise click.ClickException("%s: %s" % (intf.name, e.reason))


class Ticker:
    """Prints a rate line every ``interval`` seconds from a packets() callback."""

    def __init__(self, interval, names, packets):
        self.interval, self.names, self.packets = interval, names, packets
        self.last = time.monotonic()
        self.prev = packets()

    def maybe(self):
        if not self.interval:
            return
        now = time.monotonic()
        if now - self.last < self.interval:
            return
        cur = self.packets()
        parts = ["%s %7.3f Mpps" % (n, (c - p) / (now - self.last) / 1e6)
                 for n, c, p in zip(self.names, cur, self.prev)]
        click.echo("  ".join(parts))
        self.last, self.prev = now, cur


def emit_json(obj):
    click.echo(json.dumps(obj, sort_keys=True))
