"""The sealed-table base (memifx/table.pyx) that Fib and NeighborTable share,
checked once for both: a view in another process maps the writer's file
read-only and sees every later write; a view owns no fd and refuses
changes; a table frees its fd and mapping when it goes; a file too small or
unsealed is refused before it is mapped; a full table raises TableFull
(each table's own subclass, still the exception type it was before).
The reclamation Limbo (memifx/reclaim.pyx) is checked through the Fib."""
import fcntl
import os
import subprocess
import sys

import pytest

from memifx import sealed
from memifx.fib import Fib, FibFull, RouteError
from memifx.neighbor import NeighborTable, NeighborTableFull
from memifx.routes import load_routes
from memifx.table import SealedTable, TableFull

MAC = b"\x02\x00\x00\x00\x00\x07"
ADDR = 0x0A010203                       # 10.1.2.3


def make(kind):
    return Fib(groups=4, nexthops=4) if kind == "fib" else NeighborTable(16)


def write(t, kind):
    """One change a reader can see: a route / a neighbor for ADDR."""
    if kind == "fib":
        t.add_route("10.1.0.0/16", "gateway", 0x0A000001)
    else:
        t.add(1, ADDR, MAC)


# The reader: maps the table, says what it sees before and after the writer's
# change (it reads a line from stdin in between).
READER = r"""
import sys
from memifx.fib import Fib
from memifx.neighbor import NeighborTable
kind, fd = sys.argv[1], int(sys.argv[2])
view = (Fib if kind == "fib" else NeighborTable).from_shared(fd)
def seen():
    if kind == "fib":
        nh = view.lookup("10.1.2.3")
        return "miss" if nh < 0 else "gw=%d" % view.nexthop(nh)[1]
    mac = view.get(1, 0x0A010203)
    return "miss" if mac is None else mac.hex()
try:
    view.check_writable()
    ro = "writable"
except ValueError as e:
    ro = str(e)
print(view.shared, view.fd, ro, seen(), flush=True)
sys.stdin.readline()
print(seen(), flush=True)
"""


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fib", "neighbors"])
def test_a_view_in_another_process_sees_later_writes(kind):
    t = make(kind)
    assert isinstance(t, SealedTable) and not t.shared and t.fd >= 0
    # The table's fd may be 0-2 (an earlier test in this process may have
    # closed one), which the child's stdin/stdout would replace: pass a copy.
    fd = fcntl.fcntl(t.fd, fcntl.F_DUPFD_CLOEXEC, 10)
    p = subprocess.Popen([sys.executable, "-c", READER, kind, str(fd)], pass_fds=[fd],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    os.close(fd)
    try:
        first = p.stdout.readline().split(" ", 3)
        what = "FIB" if kind == "fib" else "neighbor table"
        assert first[:3] == ["True", "-1", "a"]                  # a view owns no fd
        assert first[3].strip() == "shared %s view is read-only miss" % what
        write(t, kind)
        p.stdin.write("go\n")
        p.stdin.flush()
        after = p.stdout.readline().strip()
        assert after == ("gw=%d" % 0x0A000001 if kind == "fib" else MAC.hex())
        assert p.wait(timeout=30) == 0
    finally:
        p.kill()
        p.wait()


def mappings(fd):
    """Mappings in this process of the file open as ``fd`` (by inode: other
    tables alive in this process have the same memfd name)."""
    ino = str(os.fstat(fd).st_ino)
    with open("/proc/self/maps") as f:
        return sum(1 for line in f if line.split()[4:5] == [ino])


@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", ["fib", "neighbors"])
def test_fd_and_mappings_go_with_the_table(kind):
    t = make(kind)
    fd = t.fd
    probe = os.dup(fd)                                  # to find the file after t is gone
    try:
        view = type(t).from_shared(fd)
        assert view.memory == t.memory == os.fstat(fd).st_size
        assert mappings(probe) == 2
        del view
        assert mappings(probe) == 1
        del t
        assert mappings(probe) == 0
        try:
            same = os.fstat(fd).st_ino == os.fstat(probe).st_ino
        except OSError:
            same = False
        assert not same                                 # t's fd was closed with it
    finally:
        os.close(probe)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("cls", [Fib, NeighborTable])
def test_a_file_unsealed_too_small_or_of_another_kind_is_refused(cls):
    fd = sealed.create("tiny", 100)
    try:
        with pytest.raises(sealed.SharedTableError, match="not sealed"):
            cls.from_shared(fd)
        sealed.seal(fd)
        with pytest.raises(sealed.SharedTableError, match="too small"):
            cls.from_shared(fd)
    finally:
        os.close(fd)
    other = NeighborTable(1 << 16) if cls is Fib else Fib(groups=1, nexthops=1)
    with pytest.raises(sealed.SharedTableError, match="header does not describe the file"):
        cls.from_shared(other.fd)       # sealed, big enough, the other table's magic
    assert mappings(other.fd) == 1      # the refused view left no mapping behind


@pytest.mark.timeout(60)
def test_a_full_table_raises_table_full():
    fib = Fib(groups=1, nexthops=2)
    fib.add_route("10.0.0.0/25", "gateway", 1)
    with pytest.raises(TableFull, match="second-level blocks") as e:
        fib.add_route("10.0.1.0/25", "gateway", 1)
    assert isinstance(e.value, FibFull) and isinstance(e.value, RouteError)
    fib.add_route("10.0.0.128/25", "gateway", 2)
    with pytest.raises(TableFull, match="next-hop records") as e:
        fib.add_nexthop("gateway", 3)
    assert isinstance(e.value, FibFull)
    fib = Fib(groups=1, nexthops=4)             # from routes text: the same error, and the line
    with pytest.raises(FibFull, match=r"line 2: FIB full: all 1 second-level blocks in use") as e:
        load_routes(fib, b"10.0.0.0/25 dev a\n10.0.1.0/25 dev a\n", ["a"])
    assert e.value.text == "10.0.1.0/25 dev a" and fib.routes == 1
    nbr = NeighborTable(16)
    for k in range(12):
        nbr.add(0, k, MAC)
    with pytest.raises(TableFull, match="neighbor table full") as e:
        nbr.add(0, 99, MAC)
    assert isinstance(e.value, NeighborTableFull) and isinstance(e.value, MemoryError)


@pytest.mark.timeout(60)
def test_retired_items_wait_for_their_epoch_only():
    """Items retired in one epoch are freed by that epoch's token; those of
    a later epoch stay until theirs (the Limbo keeps them in order)."""
    fib = Fib(groups=8, nexthops=8)
    fib.defer_reuse = True
    fib.add_route("10.0.0.0/25", "gateway", 1)
    fib.add_route("10.0.1.0/25", "gateway", 2)
    fib.delete_route("10.0.0.0/25")             # its block and gateway 1's record
    first = fib.sync_begin()
    fib.delete_route("10.0.1.0/25")             # its block and gateway 2's record
    second = fib.sync_begin()
    assert fib.retired == 4
    assert fib.sync_done(first) == 2 and fib.retired == 2
    assert fib.sync_done(first) == 0            # nothing of a later epoch
    assert fib.sync_done(second) == 2 and fib.retired == 0
    view = Fib.from_shared(fib.fd)              # a view has nothing to reclaim
    assert view.retired == 0 and view.sync_done(view.sync_begin()) == 0
