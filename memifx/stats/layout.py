"""The stats file: where it lives and how it is laid out.

Every long-running memifx command keeps ``<dir>/<pid>.stats`` while it runs:
``<dir>`` is $MEMIFX_STATS_DIR if set, else /run/memifx for root, else
$XDG_RUNTIME_DIR/memifx (/tmp/memifx-<uid> without it).  It is written at
``<dir>/.<pid>.tmp`` and renamed into place once complete.

Layout (native byte order: the file never leaves the host)
    Page 0, the header:
        0   magic "MEMIFXST"
        8   u32 layout version, 12 u32 header bytes
        16  u64 pid
        24  f64 start time of the process (psutil create_time)
        32  u64 seq: a seqlock, odd while metadata or counters are being moved
        40  u64 metadata offset, 48 u64 its capacity, 56 u64 its length
    Then page-aligned regions, appended as needed:
        - the metadata: JSON with the command line, the interfaces (name,
          role, socket, id, mode, state, peer, link flaps, queues with rx
          mode, worker and CPU, and the file offsets of each queue's counter
          slots), the node counters, and the names and offsets of the u64s in
          one counter slot (memifx/stats/schema.py QUEUE).  When it outgrows
          its region a larger one is appended and the header points there.
        - counter chunks: slots, each one ``counters_t`` (memifx/ring.pxd).
"""
import mmap
import os
import re
import struct
from typing import Optional

MAGIC = b"MEMIFXST"
VERSION = 1
HEADER = struct.Struct("=8sIIQdQQQQ")   # magic, version, header bytes, pid, started, seq, meta
SEQ = 32                    # offset of the seqlock word
META_AT = 40                # offset of (metadata offset, capacity, length)
META = struct.Struct("=QQQ")
PAGE = mmap.ALLOCATIONGRANULARITY
FILE_NAME = re.compile(r"^(\d+)\.stats$")       # a complete file: <pid>.stats
TMP_NAME = re.compile(r"^\.(\d+)\.tmp$")        # one being created: .<pid>.tmp


def stats_dir() -> str:
    """Where this user's memifx processes keep their stats files."""
    d = os.environ.get("MEMIFX_STATS_DIR")
    if d:
        return d
    if os.geteuid() == 0:
        return "/run/memifx"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "memifx")
    return "/tmp/memifx-%d" % os.geteuid()


def page_round(n: int) -> int:
    """``n`` bytes rounded up to whole pages."""
    return (n + PAGE - 1) // PAGE * PAGE


def unlink(path: str, ino: Optional[int] = None) -> bool:
    """Remove ``path`` (only if it is still the file ``ino``); True if gone."""
    try:
        if ino is not None and os.lstat(path).st_ino != ino:
            return False
        os.unlink(path)
        return True
    except OSError:
        return False
