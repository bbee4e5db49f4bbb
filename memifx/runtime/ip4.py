"""The ``ip4`` pipeline: an IPv4 router between memif interfaces.

The data path (memifx/ip4.pyx, hosted by the RouterNode class in this
process or on workers) runs bursts through ethernet-input, arp-input,
ip4-input, ip4-lookup (memifx/fib.pyx), ip4-local, ip4-rewrite and the
interface outputs.  This module is its control plane: the FIB (connected
routes, our own addresses, static routes and a routes file), the neighbor
table (static entries and the ARP replies the data path queues, judged by
the Learner), route changes applied live, and the counters.

The FIB and the neighbor table each live in one shared memory file that
this process writes; the router node maps both read-only, in this process
or in every worker, so a change made here (a route set, a neighbor learned)
is seen by every reader at once.  A route change applies only the
difference (Fib.apply_routes): new routes, changed next hops, removed
routes, with no pause in forwarding.
"""
import ipaddress
import logging
import time
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

from memifx.ethernet import is_mac
from memifx.fib import Fib, FibFull, RouteError, pack_route
from memifx.interface import Interface
from memifx.ip4 import DROP_REASONS, TX_DROPS, Router
from memifx.neighbor import NeighborTable, NeighborTableFull
from memifx.routes import parse_routes
from memifx.runtime.errors import DataplaneError
from memifx.runtime.local import LocalHost, Message
from memifx.runtime.pipeline import Counters, Kind, Pipeline

log = logging.getLogger("memifx")

MAX_INTERFACES = 64
LIMITED_BROADCAST = 0xFFFFFFFF
Neighbor = Tuple[int, int, bytes]           # (ifindex, ip, mac)


def check_specs(specs: Sequence[Any]) -> None:
    """Interfaces a router can use: named, addressed, ethernet or ip mode."""
    if not specs:
        raise DataplaneError("at least one interface is required", "--interface")
    if len(specs) > MAX_INTERFACES:
        raise DataplaneError("at most %d interfaces" % MAX_INTERFACES, "--interface")
    names = set()
    for s in specs:
        if not s.name:
            raise DataplaneError("%s: name= is required" % s.text, "--interface")
        if s.ip is None:
            raise DataplaneError("%s: ip=A.B.C.D/LEN is required" % (s.text or s.name),
                                 "--interface")
        if s.mode not in ("ethernet", "ip"):
            raise DataplaneError("%s: mode=%s: allowed values are ethernet|ip"
                                 % (s.text or s.name, s.mode), "--interface")
        if s.name in names:
            raise DataplaneError("name=%s given to two interfaces" % s.name, "--interface")
        names.add(s.name)


def own_records(specs: Sequence[Any]) -> bytes:
    """Our addresses and the broadcast ones, as route records."""
    out = []
    for i, s in enumerate(specs):
        net = s.ip.network
        if net.prefixlen <= 30:
            out.append(pack_route(int(net.broadcast_address), 32, "broadcast", ifindex=i))
        out.append(pack_route(int(s.ip.ip), 32, "local", ifindex=i))
    out.append(pack_route(LIMITED_BROADCAST, 32, "broadcast"))
    return b"".join(out)


def connected_records(specs: Sequence[Any]) -> bytes:
    return b"".join(pack_route(int(s.ip.network.network_address), s.ip.network.prefixlen,
                               "connected", ifindex=i) for i, s in enumerate(specs))


def read_routes_file(fib: Fib, names: Sequence[str], routes_file: str) -> bytes:
    """The routes of the file as records (RouteError, OSError)."""
    with open(routes_file, "rb") as f:
        data = f.read()
    records: bytes = parse_routes(fib, data, names)
    return records


class Routes:
    """What the FIB should hold, in order (a later route for the same prefix
    wins): connected routes, our addresses, the static routes, the routes
    file, our addresses again (no static route may shadow them).  Building
    the FIB and every later change are the same operation: apply_routes of
    that list."""

    def __init__(self, fib: Fib, specs: Sequence[Any], routes: Iterable[str],
                 routes_file: Optional[str]) -> None:
        self.fib, self.routes_file = fib, routes_file
        self.names = [s.name for s in specs]
        self.own = own_records(specs)
        self.base = connected_records(specs) + self.own
        fib.apply_routes(self.base)         # gateways resolve against connected routes
        self.static = self.parse_static(routes)
        self.file_records = b""

    def parse_static(self, routes: Iterable[str]) -> bytes:
        """Route texts (as --route) as records; DataplaneError naming the bad one."""
        static = []
        for r in routes:
            if "\n" in r:
                raise DataplaneError("%r: one route per --route" % r, "--route")
            if not r.strip():
                raise DataplaneError("empty route", "--route")
            try:
                static.append(parse_routes(self.fib, r.encode(), self.names))
            except RouteError as e:
                raise DataplaneError("%s: %s" % (r, e.reason), "--route")
        return b"".join(static)

    def target(self, file_records: Optional[bytes] = None) -> bytes:
        if file_records is None:
            file_records = self.file_records
        return self.base + self.static + file_records + self.own

    def read_file(self) -> bytes:
        """Records of the routes file (b"" without one)."""
        if not self.routes_file:
            return b""
        return read_routes_file(self.fib, self.names, self.routes_file)


def build_fib(specs: Sequence[Any], routes: Iterable[str],
              routes_file: Optional[str]) -> Tuple[Fib, float, Routes]:
    """A FIB holding the routes of ``specs``, ``routes`` (texts as --route)
    and ``routes_file``.  Returns (fib, seconds spent on the file, Routes)."""
    fib = Fib()
    wanted = Routes(fib, specs, routes, routes_file)
    start = time.monotonic()
    try:
        wanted.file_records = wanted.read_file()
    except OSError as e:
        raise DataplaneError("%s: %s" % (routes_file, e.strerror), "--routes-file")
    except RouteError as e:
        raise DataplaneError("%s line %d: %s: %r" % (routes_file, e.line, e.reason, e.text),
                             "--routes-file")
    try:
        fib.apply_routes(wanted.target())
    except FibFull as e:
        raise DataplaneError(str(e))
    return fib, time.monotonic() - start if routes_file else 0.0, wanted


def parse_neighbor(text: str, specs: Sequence[Any]) -> Neighbor:
    """IP,MAC[,dev=NAME] -> (ifindex, ip int, mac bytes)."""
    def bad(message: str) -> DataplaneError:
        return DataplaneError(message, "--neighbor")
    parts = [p.strip() for p in text.split(",")]
    if len(parts) not in (2, 3):
        raise bad("%s: expected IP,MAC,dev=NAME" % text)
    try:
        ip = ipaddress.IPv4Address(parts[0])
    except ValueError:
        raise bad("%s: bad IPv4 address %r" % (text, parts[0]))
    if not is_mac(parts[1]):
        raise bad("%s: bad MAC %r (expected XX:XX:XX:XX:XX:XX)" % (text, parts[1]))
    mac = bytes(int(x, 16) for x in parts[1].split(":"))
    if len(parts) == 3:
        key, _, dev = parts[2].partition("=")
        if key != "dev" or not dev:
            raise bad("%s: expected dev=NAME, got %r" % (text, parts[2]))
        for i, s in enumerate(specs):
            if s.name == dev:
                break
        else:
            raise bad("%s: no interface named %r" % (text, dev))
    else:
        for i, s in enumerate(specs):
            if ip in s.ip.network:
                break
        else:
            raise bad("%s: %s is in no interface's subnet (give dev=NAME)" % (text, ip))
    if specs[i].mode != "ethernet":
        raise bad("%s: %s is an ip-mode interface (no MACs)" % (text, specs[i].name))
    return i, int(ip), mac


class Learner:
    """Control-plane policy for the ARP replies the data path queued: learn a
    sender inside the receiving interface's subnet (not our own address);
    static neighbors are never overwritten."""

    def __init__(self, specs: Sequence[Any], router: Router, static: Iterable[Tuple[int, int]],
                 source: Any) -> None:
        self.specs, self.router, self.static = specs, router, set(static)
        self.learned = self.ignored = 0
        self.source = source                # what .take_arp() comes from

    def run(self) -> None:
        for ifindex, ip, mac in self.source.take_arp():
            s = self.specs[ifindex]
            addr = ipaddress.IPv4Address(ip)
            if (ifindex, ip) in self.static or addr not in s.ip.network or addr == s.ip.ip \
                    or addr == s.ip.network.broadcast_address or mac[0] & 1:
                self.ignored += 1
                continue
            try:
                self.router.add_neighbor(ifindex, ip, mac)     # the shared table
            except NeighborTableFull as e:
                log.warning("not learned: %s", e)
                self.ignored += 1
                continue
            self.learned += 1


class ArpInbox:
    """The ARP replies an in-process router node told us about (take_arp as
    Router.take_arp)."""

    def __init__(self) -> None:
        self.pending: List[Neighbor] = []

    def message(self, msg: Message) -> None:
        if msg.get("op") == "arp":
            self.pending.extend((i, ip, bytes.fromhex(mac)) for i, ip, mac in msg["entries"])

    def take_arp(self) -> List[Neighbor]:
        out, self.pending = self.pending, []
        return out


class Ip4Pipeline(Pipeline):
    """``ip4``: route between ``interfaces`` (router order = ifindex order)."""

    def __init__(self, name: str, kind: Kind, interfaces: Mapping[str, Interface],
                 workers: int = 0, cpus: Optional[Sequence[int]] = None,
                 quiet: float = 100e-6, stats: Any = None, *, specs: Sequence[Any],
                 routes: Iterable[str] = (), neighbors: Iterable[str] = (),
                 routes_file: Optional[str] = None) -> None:
        super().__init__(name, kind, interfaces, workers, cpus, quiet, stats)
        check_specs(specs)
        self.specs = list(specs)
        static = [parse_neighbor(n, self.specs) for n in neighbors]
        self.fib, self.load_seconds, self.wanted = build_fib(self.specs, routes, routes_file)
        # This router never runs: it writes the shared neighbor table and
        # gives the counters' shape when the workers count.
        self.router = Router(self.fib, NeighborTable())
        info = []
        for i, s in enumerate(self.specs):
            self.router.add_interface(i, s.mac_bytes(), int(s.ip.ip), s.mode == "ip")
            info.append({"mac": s.mac_bytes().hex(), "ip": int(s.ip.ip),
                         "ip_mode": s.mode == "ip"})
        for i, ip, mac in static:
            self.router.add_neighbor(i, ip, mac)
        table = self.router.neighbor_table
        ifs = [self.interfaces[s.name] for s in self.specs]
        source: Any
        if workers:
            most = min(s.tx_queues for s in self.specs)
            if workers > most:
                raise DataplaneError("%d workers: every worker needs its own transmit queue "
                                     "on each interface (the smallest has %d)"
                                     % (workers, most), "--workers")
            from memifx.nodes.router import RouterPool
            self.pool = source = RouterPool(ifs, workers, self.cpus, info, self.fib, table,
                                            quiet, stats)
            self.hook_restarts()
        else:
            inbox = ArpInbox()
            source = inbox
            plan = {"ip4": {"names": [s.name for s in self.specs], "info": info,
                            "rx_queues": [s.rx_queues for s in self.specs]},
                    "tx_queues": {s.name: s.tx_queues for s in self.specs}}
            self.host = LocalHost(kind.node_class(), plan, [self.fib.fd, table.fd],
                                  self.interfaces, lanes=max(s.rx_queues for s in self.specs),
                                  on_message=inbox.message)
        self.learner = Learner(self.specs, self.router, [(i, ip) for i, ip, _ in static],
                               source)

    def after_pass(self) -> None:
        self.learner.run()

    def interface_counters(self, ifindex: int) -> Counters:
        """Router.counters of interface ``ifindex``, wherever the node runs."""
        s = self.specs[ifindex]
        if self.final is not None:
            return dict(self.final["interfaces"][s.name])
        if self.pool is not None:
            c: Counters = self.pool.router_counters(
                ifindex, self.router.counters(ifindex, s.rx_queues, s.tx_queues))
            return c
        assert self.host is not None
        c = self.host.node.router.counters(ifindex, s.rx_queues, s.tx_queues)
        return c

    def counters(self) -> Counters:
        if self.final is not None:
            return self.final
        return {"interfaces": {s.name: self.interface_counters(i)
                               for i, s in enumerate(self.specs)},
                "arp": {"learned": self.learner.learned, "ignored": self.learner.ignored},
                "routes": self.fib.routes}

    def node_entries(self) -> List[Counters]:
        """The counters per interface and queue as node entries."""
        out: List[Counters] = []
        for i, s in enumerate(self.specs):
            c = self.interface_counters(i)
            for kind in ("rx", "tx"):
                for q, qc in enumerate(c[kind]):
                    out.append(dict(qc, node="ip4", interface=s.name, queue=q, direction=kind))
            out.append({"node": "ip4", "interface": s.name, "direction": "tx",
                        "drops": {"tx link down": c["tx link down"]}})
        return out

    def set_routes(self, routes: Iterable[str]) -> Tuple[int, int, int]:
        """Make the static routes these (as --route); apply the difference.
        Returns (added, removed, changed)."""
        static = self.wanted.parse_static(list(routes))
        old = self.wanted.static
        self.wanted.static = static
        try:
            added, removed, changed = self.fib.apply_routes(self.wanted.target())
        except FibFull as e:
            self.wanted.static = old
            raise DataplaneError(str(e))
        return added, removed, changed

    def reload_file(self) -> Tuple[int, int, int]:
        """Re-read the routes file and apply the difference; DataplaneError
        (routes unchanged) if it cannot be read or has a bad line."""
        w = self.wanted
        if not w.routes_file:
            raise DataplaneError("no --routes-file to read")
        try:
            records = w.read_file()
        except OSError as e:
            raise DataplaneError("%s: %s" % (w.routes_file, e.strerror))
        except RouteError as e:
            raise DataplaneError("%s line %d: %s: %r" % (w.routes_file, e.line, e.reason,
                                                         e.text))
        try:
            added, removed, changed = self.fib.apply_routes(w.target(records))
        except FibFull as e:
            raise DataplaneError(str(e)) from e
        w.file_records = records
        return added, removed, changed

    def report(self, seconds: float, ring_stats: Mapping[str, Any]) -> Dict[str, Any]:
        """ip4-forward's --json report: routes, counters per interface (with
        ``ring_stats``, Interface.stats() by name), drops summed, ARP, neighbors."""
        out: Dict[str, Any] = {
            "seconds": seconds, "routes": self.fib.routes, "interfaces": {},
            "drops": dict({r: 0 for r in DROP_REASONS}, **dict.fromkeys(TX_DROPS, 0)),
            "arp": {"learned": self.learner.learned, "ignored": self.learner.ignored},
            "neighbors": [{"dev": self.specs[i].name, "ip": str(ipaddress.IPv4Address(ip)),
                           "mac": ":".join("%02x" % b for b in mac)}
                          for i, ip, mac in sorted(self.router.neighbors())]}
        for i, s in enumerate(self.specs):
            c = self.interface_counters(i)
            c["ring"] = ring_stats[s.name]
            out["interfaces"][s.name] = c
            for q in c["rx"]:
                for r, n in q["drops"].items():
                    out["drops"][r] += n
            for r in ("tx ring full", "tx frame too long", "tx fault"):
                out["drops"][r] += sum(q["drops"][r] for q in c["tx"])
            out["drops"]["tx link down"] += c["tx link down"]
        return out

    def state(self) -> Dict[str, Any]:
        d = super().state()
        d["routes"] = self.fib.routes
        return d


class Reloader:
    """A routes-file reload requested from a signal handler (``request``),
    done by the thread that polls (``maybe``); each reload is one event
    and one line to ``say``."""

    def __init__(self, pipeline: Ip4Pipeline, say: Callable[[str], None]) -> None:
        self.pipeline, self.say = pipeline, say
        self.requested = False
        self.events: List[Dict[str, Any]] = []

    def request(self, *_: Any) -> None:
        self.requested = True

    def maybe(self, lock: Any = None) -> None:
        if not self.requested:
            return
        self.requested = False
        p = self.pipeline
        if not p.wanted.routes_file:
            self.say("routes reload: no --routes-file to read")
            return
        start = time.monotonic()
        try:
            if lock is not None:
                with lock:
                    added, removed, changed = p.reload_file()
            else:
                added, removed, changed = p.reload_file()
        except DataplaneError as e:
            bad_file = not isinstance(e.__cause__, FibFull)
            self.say("routes reload rejected: %s (routes unchanged)" % e.reason
                     if bad_file else "routes reload failed: %s" % e.reason)
            self.events.append({"ok": False, "error": e.reason})
            return
        seconds = time.monotonic() - start
        self.say("routes reloaded: +%d -%d ~%d (%.2f s)" % (added, removed, changed, seconds))
        self.events.append({"ok": True, "added": added, "removed": removed,
                            "changed": changed, "seconds": seconds, "routes": p.fib.routes})
