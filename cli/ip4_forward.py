"""``memifx ip4-forward``: an IPv4 router between memif interfaces.

The data path (memifx/ip4.pyx) runs bursts through ethernet-input, arp-input,
ip4-input, ip4-lookup (memifx/fib.pyx), ip4-local, ip4-rewrite and the
interface outputs with the GIL released.  This module is the control plane:
it builds the FIB (connected, static and file routes), keeps the neighbor
table (static entries and ARP replies the data path queues for it), drives
the passes over the receive queues and reports.
"""
import ipaddress
import re
import time

import click

from memifx.fib import Fib, RouteError
from memifx.ip4 import Router, DROP_REASONS
from memifx.cli.common import (Stop, Ticker, connect_all, emit_json, prometheus_option,
                               router_nodes, start_stats)
from memifx.rxmode import Idler
from memifx.cli.spec import SPEC

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


def build_fib(specs, routes, routes_file):
    """Connected routes, then --route, then the routes file, then our own
    addresses again (no static route may shadow them).  Returns (fib, seconds
    spent loading the file)."""
    fib = Fib()
    names = [s.name for s in specs]
    for i, s in enumerate(specs):
        fib.add_route(s.ip.network, "connected", ifindex=i)

    def own_addresses():
        for i, s in enumerate(specs):
            net = s.ip.network
            if net.prefixlen <= 30:
                fib.add_route("%s/32" % net.broadcast_address, "broadcast", ifindex=i)
            fib.add_route("%s/32" % s.ip.ip, "local", ifindex=i)
        fib.add_route("255.255.255.255/32", "broadcast")
    own_addresses()
    for r in routes:
        if "\n" in r:
            raise _bad("--route", "%r: one route per --route" % r)
        if not r.strip():
            raise _bad("--route", "empty route")
        try:
            fib.load_routes(r.encode(), names)
        except RouteError as e:
            raise _bad("--route", "%s: %s" % (r, e.reason))
    seconds = 0.0
    if routes_file:
        start = time.monotonic()
        try:
            with open(routes_file, "rb") as f:
                data = f.read()
        except OSError as e:
            raise _bad("--routes-file", "%s: %s" % (routes_file, e.strerror))
        try:
            fib.load_routes(data, names)
        except RouteError as e:
            raise _bad("--routes-file", "%s line %d: %s: %r" % (routes_file, e.line, e.reason, e.text))
        seconds = time.monotonic() - start
    own_addresses()
    return fib, seconds


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

    def __init__(self, specs, router, static):
        self.specs, self.router, self.static = specs, router, set(static)
        self.learned = self.ignored = 0

    def run(self):
        for ifindex, ip, mac in self.router.take_arp():
            s = self.specs[ifindex]
            addr = ipaddress.IPv4Address(ip)
            if (ifindex, ip) in self.static or addr not in s.ip.network or addr == s.ip.ip \
                    or addr == s.ip.network.broadcast_address or mac[0] & 1:
                self.ignored += 1
                continue
            self.router.add_neighbor(ifindex, ip, mac)
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


def report(specs, ifaces, router, learner, fib, seconds):
    out = {"seconds": seconds, "routes": fib.routes, "interfaces": {},
           "drops": dict({r: 0 for r in DROP_REASONS}, **{"tx ring full": 0, "tx link down": 0}),
           "arp": {"learned": learner.learned, "ignored": learner.ignored},
           "neighbors": [{"dev": specs[i].name, "ip": str(ipaddress.IPv4Address(ip)),
                          "mac": ":".join("%02x" % b for b in mac)}
                         for i, ip, mac in sorted(router.neighbors())]}
    for i, (s, intf) in enumerate(zip(specs, ifaces)):
        c = router.counters(i, s.rx_queues, s.tx_queues)
        c["ring"] = intf.stats()
        out["interfaces"][s.name] = c
        for q in c["rx"]:
            for r, n in q["drops"].items():
                out["drops"][r] += n
        out["drops"]["tx ring full"] += sum(q["drops"]["tx ring full"] for q in c["tx"])
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
@prometheus_option
def ip4_forward(specs, routes, routes_file, neighbors, duration, stats_interval, json_out,
                prometheus_port):
    """Route IPv4 between memif interfaces (longest-prefix match, ARP, ICMP echo)."""
    check_interfaces(specs)
    static = [parse_neighbor(n, specs) for n in neighbors]
    fib, load_seconds = build_fib(specs, routes, routes_file)
    router = Router(fib)
    for i, s in enumerate(specs):
        router.add_interface(i, s.mac_bytes(), int(s.ip.ip), s.mode == "ip")
    for i, ip, mac in static:
        router.add_neighbor(i, ip, mac)
    learner = Learner(specs, router, [(i, ip) for i, ip, _ in static])

    ifaces = [s.interface() for s in specs]
    stop = Stop(duration)
    start_stats(ifaces, prometheus_port, lambda: router_nodes(specs, router))
    connect_all(ifaces, json_out)
    names = ["%s rx" % s.name for s in specs] + ["%s tx" % s.name for s in specs]

    def packets():
        rx, tx = [], []
        for i, s in enumerate(specs):
            c = router.counters(i, s.rx_queues, s.tx_queues)
            rx.append(sum(q["packets"] for q in c["rx"]))
            tx.append(sum(q["packets"] for q in c["tx"]))
        return rx + tx
    ticker = Ticker(stats_interval if not json_out else 0, names, packets)
    if not json_out:
        click.echo("ip4-forward: %d interfaces (%s), %d routes%s"
                   % (len(specs), ", ".join("%s %s %s" % (s.name, s.mode, s.ip) for s in specs),
                      fib.routes, " (file loaded in %.2f s)" % load_seconds if routes_file else ""))
    idle = Idler(ifaces, min(s.quiet for s in specs))
    try:
        while not stop:
            router.set_time(int(time.monotonic() * 1000))
            moved = forward_pass(ifaces, router)
            learner.run()
            idle.after(moved)
            ticker.maybe()
    finally:
        for intf in ifaces:
            intf.close("ip4-forward stopped")
    result = report(specs, ifaces, router, learner, fib, stop.elapsed)
    if json_out:
        emit_json(result)
    else:
        for line in summary_lines(result):
            click.echo(line)
