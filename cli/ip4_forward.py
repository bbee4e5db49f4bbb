"""``memifx ip4-forward``: an IPv4 router between memif interfaces.

The data path (memifx/ip4.pyx) runs bursts through ethernet-input, arp-input,
ip4-input, ip4-lookup (memifx/fib.pyx), ip4-local, ip4-rewrite and the
interface outputs with the GIL released.  This module is the control plane:
it builds the FIB (connected, static and file routes), keeps the neighbor
table (static entries and ARP replies the data path queues for it), drives
the passes over the receive queues and reports.

The FIB and the neighbor table each live in one shared memory file that
this process writes.  With --workers N (N > 0) the passes run in worker
processes (memifx/worker.py, RouterPool) that map both read-only: one copy of
the tables in all, and every change made here (a learned neighbor, a route
reload) is seen by every worker at once.  The ARP replies their data paths
queue come back here to be judged by the same Learner.  The counters of the
report are the workers' summed, in the same shape as in-process.

SIGHUP re-reads --routes-file and applies only the difference to the live
FIB (new routes, changed next hops, removed routes; addresses a removed
route covered fall back to the next shorter route), with no restart and no
pause in forwarding.  A file with a bad line is rejected whole and the FIB
stays as it was.  Each reload prints one line (to stderr with --json) and is
listed under "route reloads" in the --json report.
"""
import ipaddress
import logging
import re
import signal
import time

import click

from memifx.fib import Fib, FibFull, RouteError, pack_route
from memifx.ip4 import Router, DROP_REASONS, TX_DROPS
from memifx.neighbor import NeighborTable, NeighborTableFull
from memifx.routes import parse_routes
from memifx.cli.common import (CPUS, Stop, Ticker, connect_all, emit_json, prometheus_option,
                               router_nodes, start_stats, start_workers)
from memifx.rxmode import Idler
from memifx.cli.spec import SPEC

log = logging.getLogger("memifx")

ROUNDS = 64             # bursts per receive queue per pass, with the GIL released
MAX_INTERFACES = 64
_MAC = re.compile(r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")
LIMITED_BROADCAST = 0xFFFFFFFF


def _bad(hint, message):
    return click.BadParameter(message, param_hint=hint)


def check_interfaces(specs):
    if not specs:
        raise click.UsageError("at least one --interface is required")
    if len(specs) > MAX_INTERFACES:
        raise _bad("--interface", "at most %d interfaces" % MAX_INTERFACES)
    names = set()
    for s in specs:
        if not s.name:
            raise _bad("--interface", "%s: name= is required" % s.text)
        if s.ip is None:
            raise _bad("--interface", "%s: ip=A.B.C.D/LEN is required" % s.text)
        if s.mode not in ("ethernet", "ip"):
            raise _bad("--interface", "%s: mode=%s: allowed values are ethernet|ip"
                       % (s.text, s.mode))
        if s.name in names:
            raise _bad("--interface", "name=%s given to two interfaces" % s.name)
        names.add(s.name)


def own_records(specs):
    """Our addresses and the broadcast ones, as route records."""
    out = []
    for i, s in enumerate(specs):
        net = s.ip.network
        if net.prefixlen <= 30:
            out.append(pack_route(int(net.broadcast_address), 32, "broadcast", ifindex=i))
        out.append(pack_route(int(s.ip.ip), 32, "local", ifindex=i))
    out.append(pack_route(LIMITED_BROADCAST, 32, "broadcast"))
    return b"".join(out)


def connected_records(specs):
    return b"".join(pack_route(int(s.ip.network.network_address), s.ip.network.prefixlen,
                               "connected", ifindex=i) for i, s in enumerate(specs))


def read_routes_file(fib, names, routes_file):
    """The routes of the file as records (RouteError, OSError)."""
    with open(routes_file, "rb") as f:
        data = f.read()
    return parse_routes(fib, data, names)


class Routes:
    """What the FIB should hold, in order (a later route for the same prefix
    wins): connected routes, our addresses, --route, the routes file, our
    addresses again (no static route may shadow them).  Building the FIB at
    start and a reload are the same operation: apply_routes of that list."""

    def __init__(self, fib, specs, routes, routes_file):
        self.fib, self.routes_file = fib, routes_file
        self.names = [s.name for s in specs]
        self.own = own_records(specs)
        self.base = connected_records(specs) + self.own
        fib.apply_routes(self.base)         # gateways resolve against connected routes
        static = []
        for r in routes:
            if "\n" in r:
                raise _bad("--route", "%r: one route per --route" % r)
            if not r.strip():
                raise _bad("--route", "empty route")
            try:
                static.append(parse_routes(fib, r.encode(), self.names))
            except RouteError as e:
                raise _bad("--route", "%s: %s" % (r, e.reason))
        self.static = b"".join(static)

    def target(self, file_records):
        return self.base + self.static + file_records + self.own

    def read_file(self):
        """Records of the routes file (b"" without one)."""
        if not self.routes_file:
            return b""
        return read_routes_file(self.fib, self.names, self.routes_file)


def build_fib(specs, routes, routes_file):
    """The FIB of the command.  Returns (fib, seconds spent on the file, Routes)."""
    fib = Fib()
    wanted = Routes(fib, specs, routes, routes_file)
    start = time.monotonic()
    try:
        records = wanted.read_file()
    except OSError as e:
        raise _bad("--routes-file", "%s: %s" % (routes_file, e.strerror))
    except RouteError as e:
        raise _bad("--routes-file", "%s line %d: %s: %r" % (routes_file, e.line, e.reason, e.text))
    try:
        fib.apply_routes(wanted.target(records))
    except FibFull as e:
        raise click.ClickException(str(e))
    return fib, time.monotonic() - start if routes_file else 0.0, wanted


class Reloader:
    """SIGHUP: re-read the routes file and apply the difference to the live
    FIB (see the module docstring)."""

    def __init__(self, wanted, json_out):
        self.wanted, self.json_out = wanted, json_out
        self.requested = False
        self.events = []            # one dict per reload, for the --json report
        signal.signal(signal.SIGHUP, self._handler)

    def _handler(self, signum, frame):
        self.requested = True

    def say(self, line):
        click.echo(line, err=self.json_out)

    def maybe(self):
        """Reload if SIGHUP came since the last call."""
        if not self.requested:
            return
        self.requested = False
        w = self.wanted
        start = time.monotonic()
        if not w.routes_file:
            self.say("routes reload: no --routes-file to read")
            return
        try:
            records = w.read_file()
        except (OSError, RouteError) as e:
            why = ("%s: %s" % (w.routes_file, e.strerror) if isinstance(e, OSError) else
                   "%s line %d: %s: %r" % (w.routes_file, e.line, e.reason, e.text))
            self.say("routes reload rejected: %s (routes unchanged)" % why)
            self.events.append({"ok": False, "error": why})
            return
        try:
            added, removed, changed = w.fib.apply_routes(w.target(records))
        except FibFull as e:
            self.say("routes reload failed: %s" % e)
            self.events.append({"ok": False, "error": str(e)})
            return
        seconds = time.monotonic() - start
        self.say("routes reloaded: +%d -%d ~%d (%.2f s)" % (added, removed, changed, seconds))
        self.events.append({"ok": True, "added": added, "removed": removed,
                            "changed": changed, "seconds": seconds, "routes": w.fib.routes})


def parse_neighbor(text, specs):
    """IP,MAC[,dev=NAME] -> (ifindex, ip int, mac bytes)."""
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise _bad("--neighbor", "%s: expected IP,MAC,dev=NAME" % text)
    try:
        ip = ipaddress.IPv4Address(parts[0])
    except ValueError:
        raise _bad("--neighbor", "%s: bad IPv4 address %r" % (text, parts[0]))
    if not _MAC.match(parts[1]):
        raise _bad("--neighbor", "%s: bad MAC %r (expected XX:XX:XX:XX:XX:XX)" % (text, parts[1]))
    mac = bytes(int(x, 16) for x in parts[1].split(":"))
    if len(parts) == 3:
        key, _, dev = parts[2].partition("=")
        if key != "dev" or not dev:
            raise _bad("--neighbor", "%s: expected dev=NAME, got %r" % (text, parts[2]))
        for i, s in enumerate(specs):
            if s.name == dev:
                break
        else:
            raise _bad("--neighbor", "%s: no interface named %r" % (text, dev))
    else:
        for i, s in enumerate(specs):
            if ip in s.ip.network:
                break
        else:
            raise _bad("--neighbor", "%s: %s is in no interface's subnet (give dev=NAME)"
                       % (text, ip))
    if specs[i].mode != "ethernet":
        raise _bad("--neighbor", "%s: %s is an ip-mode interface (no MACs)" % (text, specs[i].name))
    return i, int(ip), mac


class Learner:
    """Control-plane policy for the ARP replies the data path queued: learn a
    sender inside the receiving interface's subnet (not our own address);
    static --neighbor entries are never overwritten."""

    def __init__(self, specs, router, static, source=None):
        self.specs, self.router, self.static = specs, router, set(static)
        self.learned = self.ignored = 0
        self.source = source or router      # what .take_arp() comes from (a RouterPool)

    def run(self):
        for ifindex, ip, mac in self.source.take_arp():
            s = self.specs[ifindex]
            addr = ipaddress.IPv4Address(ip)
            if (ifindex, ip) in self.static or addr not in s.ip.network or addr == s.ip.ip \
                    or addr == s.ip.network.broadcast_address or mac[0] & 1:
                self.ignored += 1
                continue
            try:
                self.router.add_neighbor(ifindex, ip, mac)     # the shared table: workers see it
            except NeighborTableFull as e:
                log.warning("not learned: %s", e)
                self.ignored += 1
                continue
            self.learned += 1


def forward_pass(ifaces, router):
    """Every receive queue of every interface once; returns frames received."""
    tx_all = [intf.active_queues("tx") for intf in ifaces]
    per_queue = {}
    moved = 0
    for i, intf in enumerate(ifaces):
        for q, rxq in enumerate(intf.active_queues("rx")):
            txqs = per_queue.get(q)
            if txqs is None:
                txqs = per_queue[q] = [t[q % len(t)] if t else None for t in tx_all]
            moved += router.poll(i, rxq, txqs, 256, ROUNDS)
    for intf in ifaces:
        intf.check_faults()
    return moved


class SummedCounters:
    """Router.counters() as the sum of what the workers of a RouterPool report."""

    def __init__(self, pool, router):
        self.pool, self.router = pool, router

    def counters(self, ifindex, rx_queues=1, tx_queues=1):
        return self.pool.router_counters(ifindex, self.router.counters(ifindex, rx_queues,
                                                                       tx_queues))


def report(specs, ifaces, router, learner, fib, seconds, counters=None):
    out = {"seconds": seconds, "routes": fib.routes, "interfaces": {},
           "drops": dict({r: 0 for r in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0)),
           "arp": {"learned": learner.learned, "ignored": learner.ignored},
           "neighbors": [{"dev": specs[i].name, "ip": str(ipaddress.IPv4Address(ip)),
                          "mac": ":".join("%02x" % b for b in mac)}
                         for i, ip, mac in sorted(router.neighbors())]}
    for i, (s, intf) in enumerate(zip(specs, ifaces)):
        c = (counters or router).counters(i, s.rx_queues, s.tx_queues)
        c["ring"] = intf.stats()
        out["interfaces"][s.name] = c
        for q in c["rx"]:
            for r, n in q["drops"].items():
                out["drops"][r] += n
        for r in ("tx ring full", "tx frame too long", "tx fault"):
            out["drops"][r] += sum(q["drops"][r] for q in c["tx"])
        out["drops"]["tx link down"] += c["tx link down"]
    return out


def summary_lines(result):
    for name, c in result["interfaces"].items():
        rx = {k: sum(q[k] for q in c["rx"]) for k in
              ("packets", "forwarded", "echo replies", "arp replies", "local")}
        drops = {}
        for q in c["rx"]:
            for r, n in q["drops"].items():
                if n:
                    drops[r] = drops.get(r, 0) + n
        tx = sum(q["packets"] for q in c["tx"])
        full = sum(q["drops"]["tx ring full"] for q in c["tx"])
        yield ("%s: rx %d, forwarded %d, echo replies %d, arp replies %d, local %d, "
               "tx %d (ring full %d, link down %d), drops %s"
               % (name, rx["packets"], rx["forwarded"], rx["echo replies"], rx["arp replies"],
                  rx["local"], tx, full, c["tx link down"], drops or "none"))


@click.command("ip4-forward")
@click.option("--interface", "specs", type=SPEC, multiple=True, metavar="SPEC",
              help="An interface (repeatable); needs name= and ip=A.B.C.D/LEN.")
@click.option("--route", "routes", multiple=True, metavar="PREFIX,via=GW,dev=NAME",
              help="A static route (repeatable); via or dev may be left out, not both.")
@click.option("--routes-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Routes, one a line as for --route ('#' comments; spaces work as commas).")
@click.option("--neighbor", "neighbors", multiple=True, metavar="IP,MAC,dev=NAME",
              help="A static neighbor (repeatable).")
@click.option("--duration", type=float, default=0, help="Seconds to run (0: until SIGINT/SIGTERM).")
@click.option("--stats-interval", type=float, default=0,
              help="Print per-interface rates every S seconds.")
@click.option("--json", "json_out", is_flag=True, help="Print one JSON object with all counters at exit.")
@click.option("--workers", type=click.IntRange(0, 64), default=None,
              help="Worker processes running the data path (default: min(receive queues, "
                   "allowed CPUs), at most the smallest transmit queue count); 0: run it "
                   "in this process.")
@click.option("--cpus", type=CPUS, default=None,
              help="CPUs for the workers, e.g. 2-5,8 (default: those this process may use).")
@prometheus_option
def ip4_forward(specs, routes, routes_file, neighbors, duration, stats_interval, json_out,
                workers, cpus, prometheus_port):
    """Route IPv4 between memif interfaces (longest-prefix match, ARP, ICMP echo)."""
    check_interfaces(specs)
    static = [parse_neighbor(n, specs) for n in neighbors]
    fib, load_seconds, wanted = build_fib(specs, routes, routes_file)
    router = Router(fib, NeighborTable())
    for i, s in enumerate(specs):
        router.add_interface(i, s.mac_bytes(), int(s.ip.ip), s.mode == "ip")
    for i, ip, mac in static:
        router.add_neighbor(i, ip, mac)
    ifaces = [s.interface() for s in specs]
    stop = Stop(duration)
    pool = None
    counters = router                   # what .counters() is read from: the pool's sums
    quiet = min(s.quiet for s in specs)
    sf = start_stats(ifaces, prometheus_port, lambda: router_nodes(specs, counters))

    def make_pool(n, allowed):
        from memifx.nodes.router import RouterPool
        most = min(s.tx_queues for s in specs)
        if n > most:
            click.echo("note: %d workers reduced to %d: every worker needs its own transmit "
                       "queue on each interface (the smallest has %d)" % (n, most, most),
                       err=True)
            n = most
        info = [{"mac": s.mac_bytes().hex(), "ip": int(s.ip.ip), "ip_mode": s.mode == "ip"}
                for s in specs]
        return RouterPool(ifaces, n, allowed, info, fib, router.neighbor_table, quiet, sf)
    pool = start_workers(ifaces, [], workers, cpus, quiet, max(s.rx_queues for s in specs),
                         specs, json_out, sf, make_pool)
    if pool is not None:
        counters = SummedCounters(pool, router)
        learner = Learner(specs, router, [(i, ip) for i, ip, _ in static], source=pool)
    else:
        learner = Learner(specs, router, [(i, ip) for i, ip, _ in static])
    connect_all(ifaces, json_out)
    names = ["%s rx" % s.name for s in specs] + ["%s tx" % s.name for s in specs]

    def packets():
        rx, tx = [], []
        for i, s in enumerate(specs):
            c = counters.counters(i, s.rx_queues, s.tx_queues)
            rx.append(sum(q["packets"] for q in c["rx"]))
            tx.append(sum(q["packets"] for q in c["tx"]))
        return rx + tx
    ticker = Ticker(stats_interval if not json_out else 0, names, packets)
    if not json_out:
        click.echo("ip4-forward: %d interfaces (%s), %d routes%s"
                   % (len(specs), ", ".join("%s %s %s" % (s.name, s.mode, s.ip) for s in specs),
                      fib.routes, " (file loaded in %.2f s)" % load_seconds if routes_file else ""))
    idle = Idler(ifaces, quiet)
    reloader = Reloader(wanted, json_out)
    try:
        while not stop:
            if pool is not None:
                pool.poll(0.1)
                learner.run()
            else:
                router.set_time(int(time.monotonic() * 1000))
                moved = forward_pass(ifaces, router)
                learner.run()
                idle.after(moved)
            reloader.maybe()
            ticker.maybe()
    finally:
        for intf in ifaces:
            intf.close("ip4-forward stopped")
        if pool is not None:
            pool.stop()
    result = report(specs, ifaces, router, learner, fib, stop.elapsed, counters)
    result["route reloads"] = reloader.events
    if pool is not None:
        result["workers"] = {"count": pool.nworkers, "restarts": pool.restarts}
    if json_out:
        emit_json(result)
    else:
        for line in summary_lines(result):
            click.echo(line)
        if pool is not None:
            click.echo("workers: %d, restarts: %d" % (pool.nworkers, pool.restarts))
