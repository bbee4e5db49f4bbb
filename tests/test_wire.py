"""Control message codec: round trips, framing rejects, and tolerance of the
padding and string habits of other implementations."""
import struct

import pytest
from hypothesis import given, strategies as st

from memifx import wire
from memifx.errors import MemifError

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFFFFFF)
name = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7e), max_size=31)


@given(st.one_of(
    st.builds(wire.Ack),
    st.builds(wire.Hello, name, u16, u16, u16, u16, u16, st.integers(0, 255)),
    st.builds(wire.Init, u16, u32, st.integers(0, 255),
              st.binary(max_size=23).map(lambda b: b.replace(b"\0", b"x")), name),
    st.builds(wire.AddRegion, u16, st.integers(0, 2**64 - 1)),
    st.builds(wire.AddRing, u16, u16, u16, u32, st.integers(0, 255), u16),
    st.builds(wire.Connect, name),
    st.builds(wire.Connected, name),
    st.builds(wire.Disconnect, u32, st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7e),
                                            max_size=95)),
))
def test_round_trip(msg):
    data = wire.encode(msg)
    assert len(data) == wire.MSG_SIZE
    assert wire.decode(data) == msg


def test_layout_matches_the_wire():
    # type, then the packed body, little-endian
    data = wire.encode(wire.AddRing(flags=1, index=2, region=3, offset=0x1000,
                                    log2_ring_size=10, private_hdr_size=0))
    assert data[:15] == struct.pack("<HHHHIBH", 5, 1, 2, 3, 0x1000, 10, 0)
    hello = wire.encode(wire.Hello("vpp", 0x200, 0x200, 255, 255, 255, 14))
    assert hello[:2] == b"\x02\x00" and hello[2:5] == b"vpp" and hello[34:36] == b"\x00\x02"
    assert len(wire.encode(wire.Disconnect(1, "x" * 200))) == 128   # reason truncated


@pytest.mark.parametrize("size", [0, 1, 127, 129, 256])
def test_wrong_size_rejected(size):
    with pytest.raises(MemifError, match="invalid message size"):
        wire.decode(b"\x01\x00" + b"\0" * (size - 2) if size >= 2 else b"\x01" * size)


@pytest.mark.parametrize("t", [0, 9, 0xFFFF])
def test_unknown_type_rejected(t):
    with pytest.raises(MemifError, match="unknown message type"):
        wire.decode(struct.pack("<H", t).ljust(128, b"\0"))


def test_garbage_padding_accepted():
    """libmemif sends heap leftovers after the body: they must not matter."""
    body = wire.encode(wire.Connected("peer"))[:34]
    msg = wire.decode(body + bytes(range(94)))
    assert msg == wire.Connected("peer")
    ack = wire.decode(b"\x01\x00" + b"\xaa" * 126)
    assert ack == wire.Ack()


def test_names_without_nul_and_with_leftovers():
    raw = struct.pack("<H", wire.CONNECT) + b"A" * 32
    assert wire.decode(raw.ljust(128, b"\xee")).if_name == "A" * 32
    raw = struct.pack("<H", wire.CONNECT) + b"eth0\0junk".ljust(32, b"\x01")
    assert wire.decode(raw.ljust(128, b"\0")).if_name == "eth0"


def test_unset_secret_with_garbage_after_nul():
    raw = struct.pack("<HHIB", wire.INIT, 0x200, 1, 0) + b"\0garbage".ljust(24, b"\x7f")
    msg = wire.decode(raw.ljust(128, b"\0"))
    assert msg.secret == b""
