"""Reading stats files: what ``memifx show`` and /metrics print.

A reader maps a file read-only and copies it between two equal even values
of the seqlock word (memifx/stats/layout.py), so it never sees a
connection's counters twice or not at all; the process being read does
nothing for its readers.  A file whose process is gone (no such pid, or a
pid reused by a process started at another time) is ignored, and removed by
the first reader that finds it (``scan``).

The description a reader returns: pid, start time, command line, the
interfaces with per-queue counters and their totals (dicts shaped by
memifx/stats/schema.py QUEUE), and the node counters.
"""
from __future__ import annotations

import json
import mmap
import os
import struct
import time
from typing import Any, Dict, List, Optional, Tuple

import psutil

from memifx import slots
from memifx.stats import schema
from memifx.stats.layout import (FILE_NAME, HEADER, MAGIC, PAGE, SEQ, TMP_NAME, VERSION,
                                 stats_dir, unlink)


Process = Dict[str, Any]     # a process's description (see the module docstring)


class FileGrew(Exception):
    """The file grew while it was being read: map it again."""


def alive(pid: int, start_time: float) -> bool:
    """Whether the process that wrote a file (pid, start time) still runs."""
    try:
        p = psutil.Process(pid)
        if abs(p.create_time() - start_time) > 0.05:
            return False
        return p.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def _parse(data: bytes) -> Process:
    """A consistent copy of a stats file -> the process's description."""
    magic, version, _, pid, started, _, moff, _, mlen = HEADER.unpack_from(data, 0)
    if moff + mlen > len(data):
        raise FileGrew()
    meta = json.loads(bytes(data[moff:moff + mlen]))
    # the slot layout as the writer declared it (schema.QUEUE of its memifx)
    names = [name for name, _ in meta["counter_fields"]]
    n = len(names)
    u64s = struct.Struct("=%dQ" % n)

    def slot(off: int) -> List[int]:
        if off + u64s.size > len(data):
            raise FileGrew()
        return list(u64s.unpack_from(data, off))

    interfaces: List[Dict[str, Any]] = []
    for m in meta["interfaces"]:
        intf = {k: v for k, v in m.items() if k != "queues"}
        intf["queues"] = {}
        intf["stats"] = {"link_flaps": m.get("link_flaps")}
        intf["totals"] = {}
        for kind in ("rx", "tx"):
            qs: List[Dict[str, Any]] = []
            per: List[schema.CounterDict] = []
            total = [0] * n
            for q in m["queues"][kind]:
                values = slot(q["base"])
                if q["live"] is not None:
                    values = [a + b for a, b in zip(values, slot(q["live"]))]
                total = [a + b for a, b in zip(total, values)]
                c = schema.nested_by_name(names, values)
                per.append(c)
                qs.append({"queue": q["queue"], "rx_mode": q["rx_mode"], "worker": q["worker"],
                           "cpu": q["cpu"], "connected": q["live"] is not None,
                           "counters": c})
            intf["queues"][kind] = qs
            intf["stats"][kind] = per
            intf["totals"][kind] = schema.nested_by_name(names, total)
        interfaces.append(intf)
    return {"pid": pid, "started": started, "command": meta.get("command"),
            "cmdline": meta.get("cmdline"), "interfaces": interfaces,
            "nodes": meta.get("nodes", [])}


def _header(mm: mmap.mmap) -> Optional[Tuple[Any, ...]]:
    """The header's fields (HEADER), or None if this is no stats file we read."""
    if len(mm) < HEADER.size:
        return None
    h = HEADER.unpack_from(mm, 0)
    if h[0] != MAGIC or h[1] != VERSION:
        return None
    return h


def read_mapping(mm: mmap.mmap, tries: int = 500) -> Optional[Process]:
    """Seqlock read of a mapped stats file: copy it between two equal even
    values of seq.  Returns the parsed description, or None if the writer
    kept it busy (a file that grew meanwhile raises FileGrew)."""
    for _ in range(tries):
        s1 = slots.seq_load(mm, SEQ)
        if s1 & 1:
            time.sleep(0.001)
            continue
        data = mm[:]
        if slots.seq_load(mm, SEQ) != s1:
            continue
        return _parse(data)
    return None


def read_file(path: str) -> Tuple[Optional[Process], str, Optional[int]]:
    """(description or None, status, inode): status is "ok", "stale" (its
    process is gone), "invalid", "busy" or "gone"."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None, "gone", None
    try:
        ino = os.fstat(fd).st_ino
        for _ in range(20):
            size = os.fstat(fd).st_size
            if size < PAGE:
                return None, "invalid", ino
            mm = mmap.mmap(fd, size, prot=mmap.PROT_READ)
            try:
                h = _header(mm)
                if h is None:
                    return None, "invalid", ino
                if not alive(h[3], h[4]):
                    return None, "stale", ino
                try:
                    d = read_mapping(mm)
                except FileGrew:
                    continue            # the file grew: map it again
                except (ValueError, KeyError, TypeError):
                    return None, "invalid", ino
                if d is None:
                    return None, "busy", ino
                d["file"] = path
                return d, "ok", ino
            finally:
                mm.close()
        return None, "busy", ino
    finally:
        os.close(fd)


def scan(directory: Optional[str] = None, clean: bool = True) -> List[Process]:
    """Every running memifx process that has a stats file in ``directory``,
    by pid.  Files of processes that are gone are removed (``clean``)."""
    d = directory or stats_dir()
    try:
        names = sorted(os.listdir(d))
    except OSError:
        return []
    out: List[Process] = []
    for name in names:
        path = os.path.join(d, name)
        tmp = TMP_NAME.match(name)
        if tmp:
            if clean and not psutil.pid_exists(int(tmp.group(1))):
                unlink(path)
            continue
        m = FILE_NAME.match(name)
        if not m:
            continue
        desc, status, ino = read_file(path)
        if desc is not None:
            out.append(desc)
        elif clean and (status == "stale" or
                        (status == "invalid" and not psutil.pid_exists(int(m.group(1))))):
            unlink(path, ino)
    return sorted(out, key=lambda p: p["pid"])
