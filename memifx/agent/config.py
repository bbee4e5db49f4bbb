"""The agent's configuration document: its format, and its validation into a
``Config`` the planner compares.

A document is YAML or JSON (JSON is YAML), one mapping with these sections,
every one optional::

    agent:
      http-port: 9110          # the HTTP API and probes (0: none); default 9110
      http-bind: 0.0.0.0       # default 127.0.0.1; a pod's probes need 0.0.0.0
      required: [a, b]         # interfaces /readyz waits for (default: all of them)
      retry-seconds: 5         # how often items that failed to apply are retried
    interfaces:
      a:                       # the name; values: every key of a CLI interface spec
        socket: /run/memif/a.sock    #   (cli/spec.py) except name=, as YAML scalars
        id: 0                        #   (lists for allow-uid/allow-gid are joined by ':')
        role: master
        rx-mode: interrupt
      b: {socket: /run/memif/b.sock, role: master, rx-mode: interrupt}
      c: {socket: /run/memif/c.sock, role: master, ip: 192.168.1.1/24}
      d: {socket: /run/memif/d.sock, role: master, ip: 192.168.2.1/24, mac: "02:00:00:00:02:01"}
      e: {socket: /run/memif/e.sock, role: master}
      g: {socket: /run/memif/g.sock, role: master}
      s: {socket: /run/memif/s.sock, role: master}
    xconnects:
      x1: {interfaces: [a, b], workers: 0, cpus: [2, 3]}
    routers:
      r1:
        interfaces: [c, d]           # each with ip=, mode ethernet or ip
        routes:                      # text as --route takes it, or a mapping
          - 10.0.0.0/8 via 192.168.2.2 dev d
          - {prefix: 10.1.0.0/16, via: 192.168.2.3, dev: d}
        neighbors:                   # text as --neighbor takes it, or a mapping
          - {ip: 192.168.2.2, mac: "02:00:00:00:00:02", dev: d}
        workers: 2
    endpoints:
      e1: {kind: echo, interface: e}
      g1: {kind: gen, interface: g, rate: 1000, size: 64, flows: 4}
      s1: {kind: sink, interface: s, verify: stamp, zero-copy: true}

Interfaces, xconnects, routers and endpoints are the items the agent applies
one by one; pipelines (xconnects, routers, endpoints) share one namespace, and
an interface belongs to at most one pipeline (its receive queues are read by
one loop).  Validation is all or nothing: ``load`` raises ``ConfigError``
naming the first bad field by its path (``routers.r1.routes[3].via: not an
IPv4 address``), and the caller keeps running what it had.
"""
import ipaddress
import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import click
import yaml  # type: ignore[import-untyped]  # PyYAML ships no types; safe_load gives Any

from memifx.ethernet import is_mac
from memifx.traffic import VERIFY_LEVELS

# cli/ is installed as memifx.cli (setup.py's package_dir), which mypy, reading
# the source tree, does not see; parse_spec is then Any.
from memifx.cli.spec import parse_spec  # type: ignore[import-not-found]

SECTIONS = ("agent", "interfaces", "xconnects", "routers", "endpoints")
PIPELINE_SECTIONS = ("xconnects", "routers", "endpoints")
DEFAULT_HTTP_PORT = 9110
DEFAULT_RETRY_SECONDS = 5.0
MAX_WORKERS = 64
ENDPOINT_KINDS = ("echo", "gen", "sink")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

Spec = Dict[str, str]        # an interface: spec key -> text value (cli/spec.py)


class ConfigError(ValueError):
    """A document the agent refuses; ``path`` names the bad field ('' for the
    document itself) and ``reason`` says what is wrong with it."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__("%s: %s" % (path, reason) if path else reason)


@dataclass(frozen=True)
class Settings:
    http_port: int = DEFAULT_HTTP_PORT
    http_bind: str = "127.0.0.1"
    required: Optional[Tuple[str, ...]] = None     # None: every interface
    retry_seconds: float = DEFAULT_RETRY_SECONDS


@dataclass(frozen=True)
class Pipeline:
    """One pipeline as the Dataplane builds it: ``kind`` (xconnect, ip4, echo,
    gen, sink), the interfaces it uses, and the rest of its parameters
    (``routes`` and ``neighbors`` as the text --route/--neighbor take)."""
    section: str
    kind: str
    interfaces: Tuple[str, ...]
    params: Dict[str, Any] = field(default_factory=dict)
    routes: Tuple[str, ...] = ()

    def without_routes(self) -> Tuple[str, str, Tuple[str, ...], Dict[str, Any]]:
        return (self.section, self.kind, self.interfaces, self.params)


@dataclass
class Config:
    """A validated document: interface specs (spec key -> text value, as
    cli/spec.py reads them) and pipelines, by name."""
    settings: Settings = field(default_factory=Settings)
    interfaces: Dict[str, Spec] = field(default_factory=dict)
    pipelines: Dict[str, Pipeline] = field(default_factory=dict)
    document: Dict[str, Any] = field(default_factory=dict)  # as given (for GET /config)

    def required_interfaces(self) -> List[str]:
        if self.settings.required is None:
            return sorted(self.interfaces)
        return list(self.settings.required)


def parse_text(text: Union[str, bytes], origin: str = "document") -> Any:
    """YAML or JSON text -> the plain data (ConfigError if it does not parse)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = " line %d column %d" % (mark.line + 1, mark.column + 1) if mark else ""
        raise ConfigError("", "%s%s: not valid YAML/JSON: %s"
                          % (origin, where, getattr(e, "problem", None) or e))
    return {} if data is None else data


def load(data: Any) -> Config:
    """Validate plain data (a parsed document) into a Config, or raise
    ConfigError for the first bad field."""
    if isinstance(data, (str, bytes)):
        data = parse_text(data)
    _mapping("", data)
    for key in data:
        if key not in SECTIONS:
            raise ConfigError(str(key), "unknown section; allowed: %s" % ", ".join(SECTIONS))
    cfg = Config(document=json.loads(json.dumps(data, default=str)))
    for name, item in _section(data, "interfaces"):
        cfg.interfaces[name] = _interface("interfaces." + name, item)
    _unique_endpoints(cfg)
    users: Dict[str, str] = {}       # interface -> path of the pipeline using it
    for section in PIPELINE_SECTIONS:
        for name, item in _section(data, section):
            path = "%s.%s" % (section, name)
            if name in cfg.pipelines:
                raise ConfigError(path, "name already used by %s.%s"
                                  % (cfg.pipelines[name].section, name))
            build = {"xconnects": _xconnect, "routers": _router, "endpoints": _endpoint}
            pipe = build[section](path, item, cfg.interfaces)
            for i, intf in enumerate(pipe.interfaces):
                where = path + (".interface" if section == "endpoints" else ".interfaces[%d]" % i)
                if intf in users:
                    raise ConfigError(where, "interface %s is already used by %s"
                                      % (intf, users[intf]))
                users[intf] = path
            cfg.pipelines[name] = pipe
    cfg.settings = _settings(data.get("agent"), cfg.interfaces)
    return cfg


# ------------------------------------------------------------------ helpers

def _mapping(path: str, value: Any) -> Dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(path, "expected a mapping, got %s" % _what(value))
    for k in value:
        if not isinstance(k, str):
            raise ConfigError(path, "keys must be text, got %r" % (k,))
    return value


def _list(path: str, value: Any) -> List[Any]:
    if not isinstance(value, list):
        raise ConfigError(path, "expected a list, got %s" % _what(value))
    return value


def _what(value: object) -> str:
    return {dict: "a mapping", list: "a list", str: "text", bool: "a boolean",
            int: "a number", float: "a number", type(None): "nothing"}.get(type(value),
                                                                            type(value).__name__)


def _section(data: Mapping[str, Any], section: str) -> Iterable[Tuple[str, Any]]:
    items = data.get(section)
    if items is None:
        return []
    checked = _mapping(section, items)
    for name in checked:
        if not _NAME.match(name):
            raise ConfigError("%s.%s" % (section, name),
                              "bad name (letters, digits, '_', '.', '-'; at most 64)")
    return checked.items()


def _int(path: str, value: Any, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(path, "expected an integer, got %s" % _what(value))
    if not lo <= value <= hi:
        raise ConfigError(path, "%d is outside %d..%d" % (value, lo, hi))
    return value


def _number(path: str, value: Any, lo: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(path, "expected a number, got %s" % _what(value))
    if value < lo:
        raise ConfigError(path, "must be at least %s" % lo)
    return value


def _text(path: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(path, "expected text, got %s" % _what(value))
    return value


def _ip4(path: str, value: Any) -> str:
    try:
        return str(ipaddress.IPv4Address(_text(path, value)))
    except ValueError:
        raise ConfigError(path, "not an IPv4 address")


def _keys(path: str, item: Mapping[str, Any], allowed: Sequence[str]) -> None:
    for k in item:
        if k not in allowed:
            raise ConfigError("%s.%s" % (path, k), "unknown key; allowed: %s"
                              % ", ".join(allowed))


# --------------------------------------------------------------- interfaces

def _interface(path: str, item: Any) -> Spec:
    """An interface's mapping -> {spec key: text}, checked key by key with
    the CLI's own spec parser, then as a whole (keys that go together)."""
    _mapping(path, item)
    spec: Spec = {}
    for key, value in item.items():
        where = "%s.%s" % (path, key)
        if key == "name":
            raise ConfigError(where, "the interface's name is its key in interfaces")
        if isinstance(value, list) and key in ("allow-uid", "allow-gid"):
            value = ":".join(str(v) for v in value)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(where, "expected text or a number, got %s" % _what(value))
        if key == "perm" and not isinstance(value, str):
            raise ConfigError(where, 'write it as text, e.g. "0660" (YAML reads 0660 as '
                                     'a number)')
        text = str(value)
        if "," in text or not text:
            raise ConfigError(where, "empty, or holds a ','")
        # alone, except owner=/perm=, which only a master's socket file takes
        context = "role=master,socket=/tmp/x," if key in ("owner", "perm") else ""
        try:
            parse_spec("%s%s=%s" % (context, key, text))
        except click.BadParameter as e:
            raise ConfigError(where, e.message)
        spec[key] = text
    if "socket" not in spec:
        raise ConfigError(path + ".socket", "required")
    try:
        parse_spec(spec_text(path.rpartition(".")[2], spec))
    except click.BadParameter as e:
        raise ConfigError(path, e.message)
    return spec


def spec_text(name: str, spec: Mapping[str, str]) -> str:
    """The CLI spec text of an interface (name= from the config's key)."""
    return ",".join(["name=" + name] + ["%s=%s" % kv for kv in spec.items()])


def _unique_endpoints(cfg: Config) -> None:
    seen: Dict[Tuple[Any, ...], str] = {}
    for name, spec in cfg.interfaces.items():
        s = parse_spec(spec_text(name, spec))
        key = (s.socket, s.id, s.role)
        if key in seen:
            raise ConfigError("interfaces.%s.id" % name, "%s id %d as %s is already "
                              "interfaces.%s" % (s.socket, s.id, s.role, seen[key]))
        seen[key] = name


def _uses(path: str, names: Sequence[Any], interfaces: Mapping[str, Spec]) -> Tuple[str, ...]:
    for i, n in enumerate(names):
        _text("%s[%d]" % (path, i), n)
        if n not in interfaces:
            raise ConfigError("%s[%d]" % (path, i), "no interface named %s" % n)
    if len(set(names)) != len(names):
        raise ConfigError(path, "an interface is listed twice")
    return tuple(names)


def _workers(path: str, item: Mapping[str, Any], params: Dict[str, Any]) -> None:
    if "workers" in item:
        params["workers"] = _int(path + ".workers", item["workers"], 0, MAX_WORKERS)
    if "cpus" in item:
        cpus = _list(path + ".cpus", item["cpus"])
        params["cpus"] = [_int("%s.cpus[%d]" % (path, i), c, 0, 4095)
                          for i, c in enumerate(cpus)]


# ---------------------------------------------------------------- pipelines

def _xconnect(path: str, item: Any, interfaces: Mapping[str, Spec]) -> Pipeline:
    _mapping(path, item)
    _keys(path, item, ("interfaces", "workers", "cpus"))
    if "interfaces" not in item:
        raise ConfigError(path + ".interfaces", "required")
    names = _list(path + ".interfaces", item["interfaces"])
    if len(names) != 2:
        raise ConfigError(path + ".interfaces", "an xconnect joins exactly two interfaces")
    params: Dict[str, Any] = {}
    _workers(path, item, params)
    return Pipeline("xconnects", "xconnect", _uses(path + ".interfaces", names, interfaces),
                    params)


def _router(path: str, item: Any, interfaces: Mapping[str, Spec]) -> Pipeline:
    _mapping(path, item)
    _keys(path, item, ("interfaces", "routes", "neighbors", "workers", "cpus"))
    if "interfaces" not in item:
        raise ConfigError(path + ".interfaces", "required")
    listed = _list(path + ".interfaces", item["interfaces"])
    if not listed:
        raise ConfigError(path + ".interfaces", "at least one interface")
    names = _uses(path + ".interfaces", listed, interfaces)
    for i, n in enumerate(names):
        spec = interfaces[n]
        if "ip" not in spec:
            raise ConfigError("%s.interfaces[%d]" % (path, i),
                              "interface %s has no ip (A.B.C.D/LEN)" % n)
        if spec.get("mode", "ethernet") not in ("ethernet", "ip"):
            raise ConfigError("%s.interfaces[%d]" % (path, i),
                              "interface %s: a router needs mode ethernet or ip" % n)
    routes = tuple(_route("%s.routes[%d]" % (path, i), r, names)
                   for i, r in enumerate(_list(path + ".routes", item.get("routes", []))))
    neighbors = [_neighbor("%s.neighbors[%d]" % (path, i), r, names, interfaces)
                 for i, r in enumerate(_list(path + ".neighbors", item.get("neighbors", [])))]
    params: Dict[str, Any] = {"neighbors": neighbors}
    _workers(path, item, params)
    return Pipeline("routers", "ip4", names, params, routes)


def _route(path: str, value: Any, names: Sequence[str]) -> str:
    """A route as text (PREFIX via GW dev NAME, ',' or ' ' between) or a
    mapping {prefix, via, dev} -> canonical text."""
    if isinstance(value, str):
        words = value.replace(",", " ").replace("=", " ").split()
        if not words:
            raise ConfigError(path, "empty route")
        route: Dict[str, Any] = {"prefix": words[0]}
        rest = words[1:]
        while rest:
            if rest[0] not in ("via", "dev") or len(rest) < 2:
                raise ConfigError(path, "expected PREFIX via GW dev NAME, got %r" % value)
            route[rest[0]] = rest[1]
            rest = rest[2:]
    else:
        route = _mapping(path, value)
        _keys(path, route, ("prefix", "via", "dev"))
    if "prefix" not in route:
        raise ConfigError(path + ".prefix", "required")
    try:
        prefix = ipaddress.IPv4Network(_text(path + ".prefix", route["prefix"]))
    except ValueError as e:
        raise ConfigError(path + ".prefix", "not an IPv4 prefix A.B.C.D/LEN (%s)" % e)
    if "via" not in route and "dev" not in route:
        raise ConfigError(path, "a route needs via= or dev=")
    text = str(prefix)
    if "via" in route:
        text += " via " + _ip4(path + ".via", route["via"])
    if "dev" in route:
        dev = _text(path + ".dev", route["dev"])
        if dev not in names:
            raise ConfigError(path + ".dev", "%s is not one of this router's interfaces" % dev)
        text += " dev " + dev
    return text


def _neighbor(path: str, value: Any, names: Sequence[str],
              interfaces: Mapping[str, Spec]) -> str:
    """IP,MAC[,dev=NAME] text or a mapping {ip, mac, dev} -> canonical text."""
    if isinstance(value, str):
        parts = [p.strip() for p in value.split(",")]
        if len(parts) not in (2, 3):
            raise ConfigError(path, "expected IP,MAC[,dev=NAME]")
        n: Dict[str, Any] = {"ip": parts[0], "mac": parts[1]}
        if len(parts) == 3:
            key, _, dev = parts[2].partition("=")
            if key != "dev":
                raise ConfigError(path, "expected dev=NAME, got %r" % parts[2])
            n["dev"] = dev
    else:
        n = _mapping(path, value)
        _keys(path, n, ("ip", "mac", "dev"))
    for k in ("ip", "mac"):
        if k not in n:
            raise ConfigError("%s.%s" % (path, k), "required")
    ip = _ip4(path + ".ip", n["ip"])
    mac = _text(path + ".mac", n["mac"])
    if not is_mac(mac):
        raise ConfigError(path + ".mac", "not a MAC address XX:XX:XX:XX:XX:XX")
    text = "%s,%s" % (ip, mac.lower())
    if "dev" in n:
        dev = _text(path + ".dev", n["dev"])
        if dev not in names:
            raise ConfigError(path + ".dev", "%s is not one of this router's interfaces" % dev)
        if interfaces[dev].get("mode", "ethernet") != "ethernet":
            raise ConfigError(path + ".dev", "%s is an ip-mode interface (no MACs)" % dev)
        text += ",dev=" + dev
    return text


# gen/sink options the agent passes on, as the CLI spells them, and their checks
Check = Callable[[str, Any], Any]     # (path, value) -> the value passed on, or ConfigError
_GEN: Dict[str, Check] = {
    "size": lambda p, v: v if v in ("imix",) else _int(p, v, 60, 9000),
    "count": lambda p, v: _int(p, v, 0, 2**63 - 1),
    "rate": lambda p, v: _number(p, v, 0),
    "flows": lambda p, v: _int(p, v, 1, 65536),
    "payload": lambda p, v: _choice(p, v, ("pattern", "zeros", "fixed")),
    "src-mac": lambda p, v: _mac(p, v),
    "dst-mac": lambda p, v: _mac(p, v),
    "src-ip": _ip4,
    "dst-ip": _ip4,
    "dst-step": lambda p, v: _int(p, v, 0, 2**32 - 1),
    "verify": lambda p, v: _choice(p, v, VERIFY_LEVELS),
    "zero-copy": lambda p, v: _flag(p, v),
}
_SINK = {"verify": _GEN["verify"], "zero-copy": _GEN["zero-copy"]}


def _flag(path: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(path, "expected true or false, got %s" % _what(value))
    return value


def _choice(path: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ConfigError(path, "allowed values are %s" % "|".join(allowed))
    return str(value)           # one of allowed


def _mac(path: str, value: Any) -> str:
    if not is_mac(value):
        raise ConfigError(path, "not a MAC address XX:XX:XX:XX:XX:XX")
    return value.lower()


def _endpoint(path: str, item: Any, interfaces: Mapping[str, Spec]) -> Pipeline:
    _mapping(path, item)
    kind = _choice(path + ".kind", item.get("kind"), ENDPOINT_KINDS)
    options: Dict[str, Check] = {"echo": {}, "gen": _GEN, "sink": _SINK}[kind]
    _keys(path, item, ("kind", "interface", "workers", "cpus") + tuple(options))
    if "interface" not in item:
        raise ConfigError(path + ".interface", "required")
    intf = _text(path + ".interface", item["interface"])
    if intf not in interfaces:
        raise ConfigError(path + ".interface", "no interface named %s" % intf)
    params: Dict[str, Any] = {}
    for key, check in options.items():
        if key in item:
            params[key.replace("-", "_")] = check("%s.%s" % (path, key), item[key])
    _workers(path, item, params)
    if kind == "echo" and params.get("workers"):
        raise ConfigError(path + ".workers", "echo runs in the agent's process")
    return Pipeline("endpoints", kind, (intf,), params)


def _settings(item: Any, interfaces: Mapping[str, Spec]) -> Settings:
    if item is None:
        return Settings()
    _mapping("agent", item)
    _keys("agent", item, ("http-port", "http-bind", "required", "retry-seconds"))
    s: Dict[str, Any] = {}
    if "http-port" in item:
        s["http_port"] = _int("agent.http-port", item["http-port"], 0, 65535)
    if "http-bind" in item:
        s["http_bind"] = _ip4("agent.http-bind", item["http-bind"])
    if "required" in item:
        names = _list("agent.required", item["required"])
        s["required"] = _uses("agent.required", names, interfaces)
    if "retry-seconds" in item:
        s["retry_seconds"] = _number("agent.retry-seconds", item["retry-seconds"], 0.1)
    return Settings(**s)
