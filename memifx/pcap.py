"""Classic pcap files (libpcap format), just enough for test traffic.

Reading: either byte order, microsecond or nanosecond timestamps; pcapng is
refused with a clear message.  Writing: host byte order, microseconds, a
burst of frames at a time (the records are laid out by memifx.traffic, so no
Python object per frame).

Link types: 1 Ethernet, 101 raw IP (v4 or v6 by the version nibble),
228 IPv4 only.  ``memifx`` writes 1 for ethernet-mode interfaces and 101 for
ip-mode ones.
"""
from __future__ import annotations

import struct
import time
from array import array
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, StrPath

from memifx.traffic import pcap_records, span, PCAP_RECORD

LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_IPV4 = 228
RAW_IP = (LINKTYPE_RAW, LINKTYPE_IPV4)
SNAPLEN = 262144

MAGIC_US = 0xA1B2C3D4
MAGIC_NS = 0xA1B23C4D
PCAPNG = 0x0A0D0D0A


class PcapError(ValueError):
    """Not a pcap file we can read (the message says why)."""


class Capture:
    """A whole capture in memory: frames packed back to back in ``data``,
    their lengths in ``lengths`` (uint32), the start of each in ``offsets``
    (uint64): the layout the batch calls (tx_from) take."""

    def __init__(self, linktype: int, data: bytearray, lengths: array[int],
                 offsets: array[int]) -> None:
        self.linktype, self.data, self.lengths, self.offsets = linktype, data, lengths, offsets

    def __len__(self) -> int:
        return len(self.lengths)

    def frames(self) -> list[bytes]:
        """The frames as bytes (for tests and small captures)."""
        v = memoryview(self.data)
        return [bytes(v[o:o + n]) for o, n in zip(self.offsets, self.lengths)]


def read(path: StrPath) -> Capture:
    """Load a pcap file; raise PcapError on anything else."""
    with open(path, "rb") as f:
        blob = f.read()
    if len(blob) < 24:
        raise PcapError("%s: too short for a pcap file" % path)
    magic_le = struct.unpack_from("<I", blob)[0]
    if magic_le == PCAPNG:
        raise PcapError("%s: pcapng is not supported; convert it with "
                        "'editcap -F pcap IN OUT'" % path)
    for order in "<>":
        magic = struct.unpack_from(order + "I", blob)[0]
        if magic in (MAGIC_US, MAGIC_NS):
            break
    else:
        raise PcapError("%s: not a pcap file (magic %08x)" % (path, magic_le))
    _, _, _, _, _, linktype = struct.unpack_from(order + "HHiIII", blob, 4)
    linktype &= 0xFFFF                  # the upper bits carry FCS flags
    rec = struct.Struct(order + "IIII")
    data = bytearray()
    lengths = array("I")
    offsets = array("Q")
    pos = 24
    while pos < len(blob):
        if pos + 16 > len(blob):
            raise PcapError("%s: truncated record header at byte %d" % (path, pos))
        _, _, caplen, _ = rec.unpack_from(blob, pos)
        pos += 16
        if pos + caplen > len(blob):
            raise PcapError("%s: truncated record at byte %d" % (path, pos))
        offsets.append(len(data))
        lengths.append(caplen)
        data += blob[pos:pos + caplen]
        pos += caplen
    return Capture(linktype, data, lengths, offsets)


class Writer:
    """Appends bursts of frames to a new pcap file."""

    def __init__(self, path: StrPath, linktype: int, burst_bytes: int = 1 << 20) -> None:
        self.f: BinaryIO = open(path, "wb")
        self.f.write(struct.pack("=IHHiIII", MAGIC_US, 2, 4, 0, 0, SNAPLEN, linktype))
        self.out = bytearray(burst_bytes)
        self.frames = 0

    def write_batch(self, buf: ReadableBuffer, lengths: ReadableBuffer, n: int) -> None:
        """The first ``n`` frames packed in ``buf`` (lengths: uint32 array)."""
        if n == 0:
            return
        need = n * PCAP_RECORD + span(lengths, 0, n)
        if need > len(self.out):
            self.out = bytearray(need)
        size = pcap_records(buf, lengths, n, self.out, time.time_ns(), SNAPLEN)
        self.f.write(memoryview(self.out)[:size])
        self.frames += n

    def write(self, frame: ReadableBuffer) -> None:
        """One frame (bytes-like)."""
        data = bytes(frame)
        self.write_batch(data, array("I", [len(data)]), 1)

    def close(self) -> None:
        if not self.f.closed:
            self.f.close()

    def __enter__(self) -> Writer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
