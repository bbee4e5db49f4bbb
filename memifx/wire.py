"""memif 2.0 control messages: fixed 128-byte records, little-endian, packed.

``encode(msg)`` and ``decode(data)`` convert between bytes and the message
named tuples below.  ``decode`` checks only the framing (size and type);
what the fields mean is judged by the state machines in control.py.

Every string a peer sends (HELLO and INIT names, CONNECT/CONNECTED if_name,
the DISCONNECT reason) passes through :func:`printable` inside ``decode``, so
nothing the peer chose reaches a log, ``info()`` or a terminal with control
characters in it (an escape sequence in a name could rewrite a terminal).
"""
from __future__ import annotations

import struct
from typing import Any, NamedTuple, Union, cast

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


class Ack(NamedTuple):
    """Acknowledges the message before it."""


class Hello(NamedTuple):
    """Master's first message: its name and limits."""
    name: str
    min_version: int
    max_version: int
    max_region: int
    max_m2s_ring: int
    max_s2m_ring: int
    max_log2_ring_size: int


class Init(NamedTuple):
    """Slave: which interface (id), mode, secret and its name."""
    version: int
    id: int
    mode: int
    secret: bytes
    name: str


class AddRegion(NamedTuple):
    """Slave: a memory region (its fd travels with the message)."""
    index: int  # type: ignore[assignment]  # the wire's name; hides tuple.index
    size: int


class AddRing(NamedTuple):
    """Slave: a ring inside a region (its eventfd travels with the message)."""
    flags: int
    index: int  # type: ignore[assignment]  # the wire's name; hides tuple.index
    region: int
    offset: int
    log2_ring_size: int
    private_hdr_size: int


class Connect(NamedTuple):
    """Slave: the setup is complete."""
    if_name: str


class Connected(NamedTuple):
    """Master: the link is up."""
    if_name: str


class Disconnect(NamedTuple):
    """Either side: the link ends, with a reason."""
    code: int
    reason: str


Message = Union[Ack, Hello, Init, AddRegion, AddRing, Connect, Connected, Disconnect]


# type -> (tuple class, body format, string fields)
_FORMATS: dict[int, tuple[type[Message], str, tuple[str, ...]]] = {
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


def printable(text: str, limit: int = MAX_PRINTABLE) -> str:
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


def cstring(raw: bytes) -> str:
    """A fixed-size name field from the peer: up to the first NUL, at most
    the field size, made printable."""
    return printable(raw.split(b"\0", 1)[0].decode("utf-8", "replace"))


def _field(value: str | bytes | None, size: int) -> bytes:
    data = value.encode() if isinstance(value, str) else bytes(value or b"")
    return data[:size]


def encode(msg: Message) -> bytes:
    """The 128-byte record of ``msg`` (strings cut to leave room for a NUL)."""
    t = _TYPES[type(msg)]
    cls, fmt, strings = _FORMATS[t]
    values: list[object] = []
    for name, value in zip(cls._fields, msg):
        if name in strings:
            size = {"secret": SECRET_SIZE, "reason": REASON_SIZE}.get(name, NAME_SIZE)
            # leave room for a NUL, as every implementation reads up to one
            value = _field(cast("str | bytes | None", value), size - 1)
        values.append(value)
    body = _STRUCTS[t].pack(t, *values)
    return body.ljust(MSG_SIZE, b"\0")


def decode(data: bytes) -> Message:
    """Decode one message; raise MemifError for a bad size or unknown type."""
    if len(data) != MSG_SIZE:
        raise MemifError("invalid message size %d" % len(data))
    (t,) = struct.unpack_from("<H", data)
    if t not in _FORMATS:
        raise MemifError("unknown message type %d" % t)
    cls, _, strings = _FORMATS[t]
    values = _STRUCTS[t].unpack_from(data)[1:]
    fields: dict[str, Any] = {}
    for name, v in zip(cls._fields, values):
        if name == "secret":            # compared as bytes, never decoded
            v = v.split(b"\0", 1)[0]
        elif name in strings:
            v = cstring(v)
        fields[name] = v
    return cls(**fields)
