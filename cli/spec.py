"""Interface specs on the command line, in DPDK devargs style.

    socket=PATH,id=N,role=master|slave,secret=S,mode=ethernet|ip|punt-inject,
    rx-queues=N,tx-queues=N,queues=N,ring-size=N,buffer-size=N,
    rx-mode=polling|interrupt|adaptive,quiet-us=N,name=NAME,mac=XX:XX:XX:XX:XX:XX,ip=A.B.C.D/LEN,
    allow-uid=UID[:UID...],allow-gid=GID[:GID...],owner=UID[:GID],perm=OCTAL,
    max-connections=N,max-handshakes=N,max-regions=N,max-region-bytes=N[K|M|G],
    max-frame=N (bytes; longer frames are counted drops "frame too long")

Lists inside one key are separated by ':' (',' separates keys); ids are
numbers or user/group names.  allow-uid/allow-gid admit only peers whose
uid, or one of whose groups, is listed (both roles); owner/perm apply to a
master's socket file.  An abstract socket (@name) has no file: anyone in the
network namespace can reach it, and the allow lists are the only gate.
"""
import ipaddress
import os
from dataclasses import dataclass, field

import click

from memifx.interface import DEFAULT_SOCKET, LIMITS, ROLES, RX_MODES
from memifx import access, wire
from memifx.ethernet import is_mac



@dataclass
class Spec:
    socket: str = DEFAULT_SOCKET
    id: int = 0
    role: str = "slave"
    secret: str = None
    mode: str = "ethernet"
    rx_queues: int = 1
    tx_queues: int = 1
    ring_size: int = 1024
    buffer_size: int = 2048
    rx_mode: str = "polling"
    quiet: float = 100e-6            # adaptive: seconds of empty polls before sleeping
    name: str = None
    mac: str = None
    ip: object = None
    # access control (memifx/access.py)
    allow_uid: object = None
    allow_gid: object = None
    owner: object = None
    perm: int = None
    limits: dict = field(default_factory=dict)     # max-* keys, as Interface kwargs
    text: str = field(default="", repr=False)

    def interface_args(self):
        return dict(socket=self.socket, id=self.id, role=self.role, secret=self.secret,
                    mode=self.mode, rx_queues=self.rx_queues, tx_queues=self.tx_queues,
                    ring_size=self.ring_size, buffer_size=self.buffer_size,
                    name=self.name or "memifx%d" % self.id,
                    allow_uid=self.allow_uid, allow_gid=self.allow_gid,
                    owner=self.owner, perm=self.perm, **self.limits)

    def interface(self):
        import memifx
        intf = memifx.Interface(**self.interface_args())
        for q in range(self.rx_queues):
            intf.set_rx_mode(self.rx_mode, q)
        return intf

    def mac_bytes(self):
        """Our MAC: the given one, or a locally administered one derived from
        the socket and id (stable across runs)."""
        if self.mac:
            return bytes(int(x, 16) for x in self.mac.split(":"))
        import zlib
        h = zlib.crc32(("%s/%d" % (self.socket, self.id)).encode())
        return bytes([0x02, 0xfe]) + h.to_bytes(4, "big")


def _int(key, value, lo, hi):
    try:
        n = int(value, 0)
    except ValueError:
        raise click.BadParameter("%s=%s: expected an integer %d..%d" % (key, value, lo, hi))
    if not lo <= n <= hi:
        raise click.BadParameter("%s=%s: allowed range is %d..%d" % (key, value, lo, hi))
    return n


def _scaled(value):
    """'64M' -> '67108864' (K, M, G: powers of 1024); anything else unchanged."""
    scale = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}.get(value[-1:].lower())
    if scale and value[:-1].isdigit():
        return str(int(value[:-1]) * scale)
    return value


def _choice(key, value, allowed):
    if value not in allowed:
        raise click.BadParameter("%s=%s: allowed values are %s" % (key, value, "|".join(allowed)))
    return value


def parse_spec(text):
    """Parse one interface spec; raise click.BadParameter naming the key."""
    spec = Spec(text=text)
    seen = set()
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise click.BadParameter("%r: expected key=value" % item)
        if key in seen:
            raise click.BadParameter("%s given twice" % key)
        seen.add(key)
        if key == "socket":
            if not value or value == "@":
                raise click.BadParameter("socket=: empty path")
            if not value.startswith("@"):
                d = os.path.dirname(value) or "."
                if not os.path.isdir(d):
                    raise click.BadParameter("socket=%s: directory %s does not exist" % (value, d))
            spec.socket = value
        elif key == "id":
            spec.id = _int(key, value, 0, 2**32 - 1)
        elif key == "role":
            spec.role = ROLES[_choice(key, value, list(ROLES))]
        elif key == "secret":
            if not 1 <= len(value.encode()) <= wire.MAX_SECRET:
                raise click.BadParameter("secret: 1 to %d bytes" % wire.MAX_SECRET)
            spec.secret = value
        elif key == "mode":
            spec.mode = _choice(key, value, list(wire.MODES))
        elif key in ("rx-queues", "tx-queues", "queues"):
            n = _int(key, value, 1, 255)
            if key != "tx-queues":
                spec.rx_queues = n
            if key != "rx-queues":
                spec.tx_queues = n
        elif key == "ring-size":
            n = _int(key, value, 2, 1 << 14)
            if n & (n - 1):
                raise click.BadParameter("ring-size=%s: must be a power of two" % value)
            spec.ring_size = n
        elif key == "buffer-size":
            spec.buffer_size = _int(key, value, 128, 65535)
        elif key == "rx-mode":
            spec.rx_mode = _choice(key, value, list(RX_MODES))
        elif key == "quiet-us":
            spec.quiet = _int(key, value, 1, 10_000_000) / 1e6
        elif key == "name":
            spec.name = value
        elif key == "mac":
            if not is_mac(value):
                raise click.BadParameter("mac=%s: expected XX:XX:XX:XX:XX:XX" % value)
            spec.mac = value
        elif key == "ip":
            try:
                spec.ip = ipaddress.IPv4Interface(value)
            except ValueError:
                raise click.BadParameter("ip=%s: expected A.B.C.D/LEN" % value)
        elif key in ("allow-uid", "allow-gid", "owner", "perm"):
            _access_key(spec, key, value)
        elif key.replace("-", "_") in LIMITS:
            _, lo, hi = LIMITS[key.replace("-", "_")]
            spec.limits[key.replace("-", "_")] = _int(key, _scaled(value), lo, hi)
        else:
            raise click.BadParameter(
                "unknown key %r; allowed keys are socket, id, role, secret, mode, rx-queues, "
                "tx-queues, queues, ring-size, buffer-size, rx-mode, quiet-us, name, mac, ip, "
                "allow-uid, allow-gid, owner, perm, "
                "max-connections, max-handshakes, max-regions, max-region-bytes, "
                "max-frame" % key)
    if (spec.owner is not None or spec.perm is not None) and \
            (spec.socket.startswith("@") or spec.role != "master"):
        raise click.BadParameter("owner=/perm= apply to a master's filesystem socket (an "
                                 "abstract socket has no file: use allow-uid=/allow-gid=)")
    return spec


def _access_key(spec, key, value):
    """allow-uid=0:1000, allow-gid=GID[:GID...], owner=UID[:GID], perm=0660."""
    try:
        if key == "allow-uid":
            spec.allow_uid = sorted(access.id_list(value, key))
        elif key == "allow-gid":
            spec.allow_gid = sorted(access.id_list(value, key))
        elif key == "owner":
            access.owner(value)
            spec.owner = value
        else:
            spec.perm = access.perm(value)
    except ValueError as e:
        raise click.BadParameter("%s=%s: %s" % (key, value, e))


def spec_from_mapping(keys):
    """A Spec from a mapping of the same keys as the text form (``{"socket":
    "/run/a.sock", "role": "master", "rx-queues": 2}``; ``_`` may stand for
    ``-``; list values for the ``:`` lists), checked by parse_spec: the same
    rules and the same messages (click.BadParameter)."""
    items = []
    for key, value in keys.items():
        if not isinstance(key, str):
            raise click.BadParameter("%r: keys are strings" % (key,))
        if isinstance(value, (list, tuple)):
            value = ":".join(str(v) for v in value)
        value = str(value)
        if "," in value or "," in key or "=" in key:
            raise click.BadParameter("%s=%s: no ',' in a key or value" % (key, value))
        items.append("%s=%s" % (key.replace("_", "-"), value))
    return parse_spec(",".join(items))


class SpecType(click.ParamType):
    name = "SPEC"

    def convert(self, value, param, ctx):
        if isinstance(value, Spec):
            return value
        try:
            return parse_spec(value)
        except click.BadParameter as e:
            self.fail(e.message, param, ctx)


SPEC = SpecType()
