"""memif 2.0 control messages: fixed 128-byte records, little-endian, packed.

``encode(msg)`` and ``decode(data)`` convert between bytes and the message
named tuples below.  ``decode`` checks only the framing (size and type);
what the fields mean is judged by the state machines in control.py.

Every string a peer sends (HELLO and INIT names, CONNECT/CONNECTED if_name,
the DISCONNECT reason) passes through :func:`printable` inside ``decode``, so
nothing the peer chose reaches a log, ``info()`` or a terminal with control
characters in it (an escape sequence in a name could rewrite a terminal).
"""
import struct
from collections import namedtuple

from memifx.errors import MemifError

MSG_SIZE = 128
VERSION = 0x0200
NAME_SIZE = 32
SECRET_SIZE = 24
REASON_SIZE = 96
MAX_SECRET = SECRET_SIZE - 1       # the field keeps a NUL

MODES = {"ethernet": 0, "ip": 1, "punt-inject": 2}
MODE_NAMES = {v: k for k, v in MODES.items()}

ACK, HELLO, INIT, ADD_REGION, ADD_RING, CONNECT, CONNECTED, DISCONNECT = range(1, 9)
RING_S2M = 1                       # ADD_RING flags bit 0

Ack = namedtuple("Ack", "")
Hello = namedtuple("Hello", "name min_version max_version max_region max_m2s_ring "
                            "max_s2m_ring max_log2_ring_size")
Init = namedtuple("Init", "version id mode secret name")
AddRegion = namedtuple("AddRegion", "index size")
AddRing = namedtuple("AddRing", "flags index region offset log2_ring_size private_hdr_size")
Connect = namedtuple("Connect", "if_name")
Connected = namedtuple("Connected", "if_name")
Disconnect = namedtuple("Disconnect", "code reason")

# type -> (tuple class, body format, string fields)
_FORMATS = {
    ACK: (Ack, "", ()),
    HELLO: (Hello, "32sHHHHHB", ("name",)),
    INIT: (Init, "HIB24s32s", ("secret", "name")),
    ADD_REGION: (AddRegion, "HQ", ()),
    ADD_RING: (AddRing, "HHHIBH", ()),
    CONNECT: (Connect, "32s", ("if_name",)),
    CONNECTED: (Connected, "32s", ("if_name",)),
    DISCONNECT: (Disconnect, "I96s", ("reason",)),
}
_TYPES = {cls: t for t, (cls, _, _) in _FORMATS.items()}
_STRUCTS = {t: struct.Struct("<H" + fmt) for t, (_, fmt, _) in _FORMATS.items()}


MAX_PRINTABLE = 4 * REASON_SIZE  # longest text printable() returns


def printable(text, limit=MAX_PRINTABLE):
    """``text`` safe to log, store and print: each character that is not
    printable (control characters, format characters such as bidi
    overrides) becomes a ``\\xNN`` / ``\\uNNNN`` escape, and the result is
    cut to ``limit`` characters.  A peer's fixed-size field never needs the
    cut: at most four characters per byte."""
    if text.isprintable() and len(text) <= limit:
        return text
    out = []
    for ch in text:
        if not ch.isprintable():
            n = ord(ch)
            ch = "\\x%02x" % n if n < 0x100 else \
                "\\u%04x" % n if n < 0x10000 else "\\U%08x" % n
        out.append(ch)
    return "".join(out)[:limit]


def cstring(raw):
    """A fixed-size name field from the peer: up to the first NUL, at most
    the field size, made printable."""
    return printable(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))


def _field(value, size):
    data = value.encode() if isinstance(value, str) else bytes(value or b"")
    return data[:size]


def encode(msg):
    t = _TYPES[type(msg)]
    cls, fmt, strings = _FORMATS[t]
    values = []
    for name, value in zip(cls._fields, msg):
        if name in strings:
            size = {"secret": SECRET_SIZE, "reason": REASON_SIZE}.get(name, NAME_SIZE)
            # leave room for a NUL, as every implementation reads up to one
            value = _field(value, size - 1)
        values.append(value)
    body = _STRUCTS[t].pack(t, *values)
    return body.ljust(MSG_SIZE, b"\0")


def decode(data):
    """Decode one message; raise MemifError for a bad size or unknown type."""
    if len(data) != MSG_SIZE:
        raise MemifError("invalid message size %d" % len(data))
    (t,) = struct.unpack_from("<H", data)
    if t not in _FORMATS:
        raise MemifError("unknown message type %d" % t)
    cls, _, strings = _FORMATS[t]
    values = _STRUCTS[t].unpack_from(data)[1:]
    fields = {}
    for name, v in zip(cls._fields, values):
        if name == "secret":            # compared as bytes, never decoded
            v = v.split(b"\0", 1)[0]
        elif name in strings:
            v = cstring(v)
        fields[name] = v
    return cls(**fields)
