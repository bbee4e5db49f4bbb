# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""ip4-fib: IPv4 longest-prefix match in a two-level (DIR-24-8 style) table
that lives in shared memory and changes while workers read it.

The first level has one u32 entry for each /24 (2^24 entries, 64 MiB).  A
route of length 24 or less writes every first-level entry it covers; a longer
route turns its /24's entry into a pointer to a 256-entry second-level block
and writes the block entries it covers.  A lookup is therefore one memory
read, two when the /24 holds longer prefixes.

Every entry remembers the prefix length of the route that wrote it, and a
route only writes entries whose current length is not longer than its own,
so the table ends the same whatever order routes arrive in.  Deleting a route
gives the entries it owned (those with its length, in its range) to the
longest shorter route that covers it, found in the rule store: every route
(prefix, length -> next hop) in a private hash of the main process.  A block
whose last route longer than /24 goes is folded back into its first-level
entry.

The tables are one sealed memfd (a SealedTable, memifx/table.pyx; csrc/fib.h
has the layout), sparse, with fixed room for ``groups`` second-level blocks
and ``nexthops`` next-hop records set at creation: unused room costs no
memory, running out raises FibFull.  The process that creates a Fib is its
only writer.  ``Fib.from_shared(fd)`` maps it read-only in a worker: a Fib
whose lookups (and the Router over it) follow every change the writer makes,
and which refuses changes itself.

Changes are safe against those lock-free readers: entries are stored whole
with release order, a new block is filled before it is linked, and a block or
next-hop record that was unlinked is retired, not reused, until every reader
has passed a quiescent point (a Limbo, memifx/reclaim.pyx).  Without readers
elsewhere (``defer_reuse`` false, the default) retired items are free again
at once; a RouterPool sets it and runs the handshake: ``sync_begin()`` names
the retired items so far, the workers acknowledge between bursts,
``sync_done()`` frees them.  Changes come from one thread at a time.

Next hops live in a separate array (index -> kind, gateway, output
interface), deduplicated and counted, so a million routes via a handful of
gateways cost a handful of next-hop records, and a record no route uses any
more is retired like a block.

``apply_routes`` makes the table hold exactly a set of routes (records from
``pack_route`` or the routes-file parser, memifx/routes.pyx), changing only
what differs.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, malloc, free
from libc.string cimport memset

import ipaddress
import struct

from memifx.table import TableFull

cdef enum:
    NH_FREE = 0xFFFFFFFF            # nh_refs of a record not in use
    RETIRED_NEXTHOP = 0x80000000    # a retired item that is a next-hop record, not a block
    MIN_RULES = 1024

DEFAULT_GROUPS = 1 << 18        # 256 MiB of room, used as needed: ~100K blocks for a
                                # million routes with 10% longer than /24
DEFAULT_NEXTHOPS = 1 << 16      # 512 KiB of room

KINDS = ("connected", "gateway", "local", "broadcast")
ROUTE_RECORD = struct.Struct("=IBBHII")     # route_t


class RouteError(ValueError):
    """A route that cannot go in: .reason, and for routes text .line (from 1)
    and .text (0 and "" otherwise)."""

    def __init__(self, reason, line=0, text=""):
        super().__init__("line %d: %s: %r" % (line, reason, text) if line else reason)
        self.line, self.reason, self.text = line, reason, text


class FibFull(RouteError, TableFull):
    """The FIB has no room left for a second-level block or a next-hop
    record (the capacities are fixed when it is created)."""


def pack_route(uint32_t prefix, uint32_t length, kind, uint32_t gw=0, uint32_t ifindex=0):
    """One route record for apply_routes (kind: a name from KINDS or its number)."""
    if isinstance(kind, str):
        kind = KINDS.index(kind)
    return ROUTE_RECORD.pack(prefix, length, kind, ifindex, gw if kind == NH_GATEWAY else 0, 0)


cdef inline bint replaces(uint32_t e, uint32_t length) noexcept nogil:
    """May a route of ``length`` overwrite entry ``e``?"""
    return not (e & E_VALID) or ((e >> E_DEPTH_SHIFT) & E_DEPTH_MASK) <= length


cdef inline uint32_t depth_of(uint32_t e) noexcept nogil:
    return (e >> E_DEPTH_SHIFT) & E_DEPTH_MASK


cdef inline bint takes(uint32_t e, uint32_t length, bint deleting) noexcept nogil:
    """Does a change of the route of ``length`` rewrite entry ``e``?  Adding
    it: where nothing longer owns the entry (replaces); deleting it: the
    entries it owns."""
    if deleting:
        return (e & E_VALID) != 0 and depth_of(e) == length
    return replaces(e, length)


cdef inline uint64_t mix64(uint64_t k) noexcept nogil:
    return k * 0x9E3779B97F4A7C15ULL


cdef inline uint64_t route_key(uint32_t prefix, uint32_t length) noexcept nogil:
    return (<uint64_t>prefix << 6) | length


# A rule-store slot: bit 63 used, bits 30..61 prefix, 24..29 length, 0..23 next hop.
cdef inline uint64_t rule_word(uint32_t prefix, uint32_t length, uint32_t index) noexcept nogil:
    return (1ULL << 63) | (<uint64_t>prefix << 30) | (<uint64_t>length << 24) | index


cdef inline uint64_t rule_key(uint64_t w) noexcept nogil:
    return route_key(<uint32_t>(w >> 30), <uint32_t>((w >> 24) & 0x3F))


cdef uint32_t pow2_at_least(uint64_t n) noexcept nogil:
    cdef uint64_t c = 16
    while c < n:
        c <<= 1
    return <uint32_t>c


cdef class Fib(SealedTable):
    """IPv4 routes in shared memory: prefix -> next-hop index; next-hop index
    -> (kind, gateway, interface).  ``Fib()`` creates the tables (this process
    is their only writer); ``Fib.from_shared(fd)`` maps them read-only."""

    def __cinit__(self, uint32_t groups=DEFAULT_GROUPS, uint32_t nexthops=DEFAULT_NEXTHOPS,
                  *, bint _view=False):
        cdef size_t off8, offnh, total
        self.what = "FIB"
        self.limbo = Limbo()
        if _view:
            return                  # from_shared maps the file
        if not 1 <= groups <= MAX_INDEX + 1:
            raise ValueError("groups must be 1..%d" % (MAX_INDEX + 1))
        if not 1 <= nexthops <= MAX_INDEX + 1:
            raise ValueError("nexthops must be 1..%d" % (MAX_INDEX + 1))
        off8 = FIB_PAGE + <size_t>TBL24_SIZE * 4
        offnh = off8 + <size_t>groups * 1024
        total = (offnh + <size_t>nexthops * sizeof(nexthop_t) + FIB_PAGE - 1) & ~(<size_t>FIB_PAGE - 1)
        self.create_file("memifx-fib", total, FIB_MAGIC)
        self.hdr = <fib_header_t *>self.base
        self.hdr.tbl24_offset = FIB_PAGE
        self.hdr.tbl8_offset = off8
        self.hdr.nh_offset = offnh
        self.hdr.groups_cap = groups
        self.hdr.nh_cap = nexthops
        self.point()
        self.free_groups = <uint32_t *>malloc(<size_t>groups * 4)
        self.free_nh = <uint32_t *>malloc(<size_t>nexthops * 4)
        self.nh_refs = <uint32_t *>malloc(<size_t>nexthops * 4)
        self.nh_hash_cap = pow2_at_least(<uint64_t>nexthops * 2)
        self.nh_hash = <uint32_t *>calloc(self.nh_hash_cap, 4)
        self.rules_cap = MIN_RULES
        self.rules = <uint64_t *>calloc(self.rules_cap, 8)
        if (self.free_groups == NULL or self.free_nh == NULL or self.nh_refs == NULL
                or self.nh_hash == NULL or self.rules == NULL):
            raise MemoryError()
        memset(self.nh_refs, 0xFF, <size_t>nexthops * 4)

    cdef void point(self):
        self.tbl24 = <uint32_t *>(self.base + self.hdr.tbl24_offset)
        self.tbl8 = <uint32_t *>(self.base + self.hdr.tbl8_offset)
        self.nh = <nexthop_t *>(self.base + self.hdr.nh_offset)
        self.groups_cap = self.hdr.groups_cap
        self.nh_cap = self.hdr.nh_cap

    def __dealloc__(self):
        free(self.free_groups)
        free(self.free_nh)
        free(self.nh_refs)
        free(self.nh_hash)
        free(self.rules)

    # ------------------------------------------------------ shared memory

    @staticmethod
    def from_shared(int fd):
        """A read-only Fib over the tables of the Fib whose ``fd`` this is:
        seals and size checked before mapping (PROT_READ, MAP_SHARED), the
        header checked after.  The fd may be closed afterwards."""
        cdef Fib f = Fib.__new__(Fib, _view=True)
        cdef size_t size = f.map_shared(fd, FIB_PAGE, FIB_MAGIC)
        cdef fib_header_t *h
        h = f.hdr = <fib_header_t *>f.base
        if (h.tbl24_offset % FIB_PAGE or h.tbl8_offset % FIB_PAGE or h.nh_offset % 8
                or h.groups_cap > MAX_INDEX + 1 or h.nh_cap > MAX_INDEX + 1
                or h.tbl24_offset + <uint64_t>TBL24_SIZE * 4 > size
                or h.tbl8_offset + <uint64_t>h.groups_cap * 1024 > size
                or h.nh_offset + <uint64_t>h.nh_cap * sizeof(nexthop_t) > size):
            raise f.bad_header()
        f.point()
        return f

    # ------------------------------------------------------ retired items

    cdef void retire(self, uint32_t what) noexcept nogil:
        """``what`` is unlinked: free now, or once every reader moved on."""
        if self.defer_reuse:
            self.limbo.add(what)
        else:
            self.release(what)

    cdef void release(self, uint32_t what) noexcept nogil:
        if what & RETIRED_NEXTHOP:
            self.free_nh[self.nfree_nh] = what & ~(<uint32_t>RETIRED_NEXTHOP)
            self.nfree_nh += 1
        else:
            self.free_groups[self.nfree_groups] = what
            self.nfree_groups += 1

    def sync_begin(self):
        """A token for everything retired so far; what is retired later gets
        the next one.  Once every reader has passed a quiescent point after
        this call, hand the token to sync_done."""
        return self.limbo.begin()

    def sync_done(self, uint64_t token):
        """Every reader has passed a quiescent point since sync_begin returned
        ``token``: what was retired up to then may be reused.  Returns how
        many items became free."""
        cdef uint64_t i, n = self.limbo.ready(token)
        for i in range(n):
            self.release(self.limbo.items[i].what)
        self.limbo.drop(n)
        return n

    @property
    def retired(self):
        """Blocks and next-hop records unlinked but not yet free to reuse."""
        return self.limbo.count

    # ------------------------------------------------------------ next hops

    cdef uint32_t nh_home(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil:
        cdef uint64_t k = (<uint64_t>gw << 32) | (<uint64_t>ifindex << 8) | kind
        return <uint32_t>(mix64(k) >> 40) & (self.nh_hash_cap - 1)

    cdef int64_t nexthop_c(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil:
        """The index of this next hop, added if new (with no routes yet);
        FIB_NO_NEXTHOPS when every record is in use."""
        cdef uint32_t mask = self.nh_hash_cap - 1, s, i
        cdef nexthop_t *x
        if kind != NH_GATEWAY:
            gw = 0
        s = self.nh_home(kind, gw, ifindex)
        while self.nh_hash[s]:
            x = &self.nh[self.nh_hash[s] - 1]
            if x.kind == kind and x.gw == gw and x.ifindex == ifindex:
                return self.nh_hash[s] - 1
            s = (s + 1) & mask
        if self.nfree_nh:
            self.nfree_nh -= 1
            i = self.free_nh[self.nfree_nh]
        elif self.hdr.nh_count < self.nh_cap:
            i = self.hdr.nh_count
        else:
            return FIB_NO_NEXTHOPS
        # No reader reaches record i until a route leading to it is published.
        self.nh[i].kind = kind
        self.nh[i].gw = gw
        self.nh[i].ifindex = ifindex
        if i == self.hdr.nh_count:
            fib_u32_store_release(&self.hdr.nh_count, i + 1)
        self.nh_refs[i] = 0
        self.nh_hash[s] = i + 1
        return i

    cdef void nh_unref(self, uint32_t i) noexcept nogil:
        """One route less leads to next hop i; the last one retires it."""
        cdef uint32_t mask = self.nh_hash_cap - 1, s, j, home
        cdef nexthop_t *x
        self.nh_refs[i] -= 1
        if self.nh_refs[i]:
            return
        s = self.nh_home(self.nh[i].kind, self.nh[i].gw, self.nh[i].ifindex)
        while self.nh_hash[s] != i + 1:
            s = (s + 1) & mask
        # Backward-shift delete (the index is ours alone: no reader to mind).
        j = s
        while True:
            j = (j + 1) & mask
            if not self.nh_hash[j]:
                break
            x = &self.nh[self.nh_hash[j] - 1]
            home = self.nh_home(x.kind, x.gw, x.ifindex)
            if (s <= j and s < home <= j) or (s > j and (home > s or home <= j)):
                continue
            self.nh_hash[s] = self.nh_hash[j]
            s = j
        self.nh_hash[s] = 0
        self.nh_refs[i] = NH_FREE
        self.retire(i | RETIRED_NEXTHOP)

    def add_nexthop(self, kind, uint32_t gw=0, uint16_t ifindex=0):
        """Index of the next hop (kind: a name from KINDS or its number)."""
        cdef int64_t r
        self.check_writable()
        if isinstance(kind, str):
            kind = KINDS.index(kind)
        if not 0 <= kind < N_NH_KINDS:
            raise ValueError("next-hop kind out of range")
        r = self.nexthop_c(<uint8_t>kind, gw, ifindex)
        self.raise_for(<int>r if r < 0 else FIB_OK)
        return r

    def nexthop(self, uint32_t index):
        """(kind name, gateway as int, interface index)."""
        if index >= fib_u32_load_acquire(&self.hdr.nh_count) or (
                not self.shared and self.nh_refs[index] == NH_FREE):
            raise IndexError("no next hop %d" % index)
        return KINDS[self.nh[index].kind], self.nh[index].gw, self.nh[index].ifindex

    @property
    def nnh(self):
        """Next-hop records handed out so far (the high-water mark)."""
        return fib_u32_load_acquire(&self.hdr.nh_count)

    # ---------------------------------------------------------- rule store

    cdef uint64_t rule_slot(self, uint32_t prefix, uint32_t length) noexcept nogil:
        """The slot of the route, or of the empty slot where it would go."""
        cdef uint64_t mask = self.rules_cap - 1, key = route_key(prefix, length)
        cdef uint64_t s = (mix64(key) >> 32) & mask
        while self.rules[s] and rule_key(self.rules[s]) != key:
            s = (s + 1) & mask
        return s

    cdef int64_t rule_find(self, uint32_t prefix, uint32_t length) noexcept nogil:
        """The next hop of route prefix/length, or -1."""
        cdef uint64_t w = self.rules[self.rule_slot(prefix, length)]
        return <int64_t>(w & MAX_INDEX) if w else -1

    cdef int rules_reserve(self) noexcept nogil:
        """Room for one more route (at most 3/4 full)."""
        cdef uint64_t cap, i, s, w
        cdef uint64_t *t
        if (self.rules_count + 1) * 4 <= self.rules_cap * 3:
            return FIB_OK
        cap = self.rules_cap * 2
        t = <uint64_t *>calloc(cap, 8)
        if t == NULL:
            return FIB_NOMEM
        for i in range(self.rules_cap):
            w = self.rules[i]
            if w:
                s = (mix64(rule_key(w)) >> 32) & (cap - 1)
                while t[s]:
                    s = (s + 1) & (cap - 1)
                t[s] = w
        free(self.rules)
        self.rules = t
        self.rules_cap = cap
        return FIB_OK

    cdef void rule_remove(self, uint64_t s) noexcept nogil:
        """Backward-shift delete of slot s."""
        cdef uint64_t mask = self.rules_cap - 1, j = s, home
        while True:
            j = (j + 1) & mask
            if not self.rules[j]:
                break
            home = (mix64(rule_key(self.rules[j])) >> 32) & mask
            if (s <= j and s < home <= j) or (s > j and (home > s or home <= j)):
                continue
            self.rules[s] = self.rules[j]
            s = j
        self.rules[s] = 0
        self.rules_count -= 1

    # --------------------------------------------------------------- routes

    cdef int64_t group_alloc(self) noexcept nogil:
        if self.nfree_groups:
            self.nfree_groups -= 1
            return self.free_groups[self.nfree_groups]
        if self.ngroups < self.groups_cap:
            self.ngroups += 1
            return self.ngroups - 1
        return FIB_NO_GROUPS

    cdef void rewrite(self, uint32_t prefix, uint32_t length, uint32_t word,
                      bint deleting) noexcept nogil:
        """Publish ``word`` in every entry of prefix/length that the change
        ``takes`` (a route longer than /24 only where its block exists)."""
        cdef uint32_t i, j, first, count, e
        cdef uint32_t *g
        if length <= 24:
            first = prefix >> 8
            count = 1u << (24 - length)
            for i in range(first, first + count):
                e = self.tbl24[i]
                if e & E_GROUP:
                    g = self.tbl8 + (<uint64_t>(e >> E_INDEX_SHIFT) << 8)
                    for j in range(256):
                        if takes(g[j], length, deleting):
                            fib_entry_publish(&g[j], word)
                elif takes(e, length, deleting):
                    fib_entry_publish(&self.tbl24[i], word)
            return
        e = self.tbl24[prefix >> 8]
        if not (e & E_GROUP):
            return
        g = self.tbl8 + (<uint64_t>(e >> E_INDEX_SHIFT) << 8)
        first = prefix & 0xFF
        count = 1u << (32 - length)
        for j in range(first, first + count):
            if takes(g[j], length, deleting):
                fib_entry_publish(&g[j], word)

    cdef int route_set_c(self, uint32_t prefix, uint32_t length, uint32_t index) noexcept nogil:
        """Add route prefix/length (host bits clear) via next hop ``index`` (in
        use), or move it there: FIB_OK or an error, the table unchanged then."""
        cdef uint32_t word = E_VALID | (length << E_DEPTH_SHIFT) | (index << E_INDEX_SHIFT)
        cdef uint32_t i, j, first, count, e
        cdef uint32_t *g
        cdef int64_t grp
        cdef int64_t old = self.rule_find(prefix, length)
        cdef uint64_t s
        if old == index:
            return FIB_OK
        if old < 0 and self.rules_reserve() < 0:
            return FIB_NOMEM
        i = prefix >> 8
        e = self.tbl24[i]
        if length <= 24 or e & E_GROUP:
            self.rewrite(prefix, length, word, False)
        else:
            # Split the /24: a fresh block, complete before anyone can see it.
            first = prefix & 0xFF
            count = 1u << (32 - length)
            grp = self.group_alloc()
            if grp < 0:
                return <int>grp
            g = self.tbl8 + (<uint64_t>grp << 8)
            for j in range(256):
                g[j] = word if first <= j < first + count else e
            fib_entry_publish(&self.tbl24[i], (<uint32_t>grp << E_INDEX_SHIFT) | E_GROUP)
            self.hdr.groups_used += 1
        s = self.rule_slot(prefix, length)
        if not self.rules[s]:
            self.rules_count += 1
            fib_u64_store_relaxed(&self.hdr.routes, self.rules_count)
        self.rules[s] = rule_word(prefix, length, index)
        self.nh_refs[index] += 1
        if old >= 0:
            self.nh_unref(<uint32_t>old)
        return FIB_OK

    cdef int route_delete_c(self, uint32_t prefix, uint32_t length) noexcept nogil:
        """Remove route prefix/length: its entries go to the covering route."""
        cdef uint64_t s = self.rule_slot(prefix, length)
        cdef uint32_t old, word = 0, i, j, e, l
        cdef uint32_t *g
        cdef int64_t c
        cdef bint fold
        if not self.rules[s]:
            return FIB_NOT_FOUND
        old = <uint32_t>(self.rules[s] & MAX_INDEX)
        self.rule_remove(s)
        fib_u64_store_relaxed(&self.hdr.routes, self.rules_count)
        l = length
        while l > 0:
            l -= 1
            c = self.rule_find(prefix & netmask(l), l)
            if c >= 0:
                word = E_VALID | (l << E_DEPTH_SHIFT) | (<uint32_t>c << E_INDEX_SHIFT)
                break
        self.rewrite(prefix, length, word, True)
        if length > 24:
            i = prefix >> 8
            e = self.tbl24[i]
            g = self.tbl8 + (<uint64_t>(e >> E_INDEX_SHIFT) << 8)
            # No route longer than /24 left in the block: fold it back.
            # (Then every entry is the one covering route, or none.)
            fold = True
            for j in range(256):
                if g[j] & E_VALID and depth_of(g[j]) > 24:
                    fold = False
                    break
            if fold:
                fib_entry_publish(&self.tbl24[i], g[0])
                self.hdr.groups_used -= 1
                self.retire(e >> E_INDEX_SHIFT)
        self.nh_unref(old)
        return FIB_OK

    cdef int check_route(self, uint32_t prefix, uint32_t length) except -1:
        self.check_writable()
        if length > 32:
            raise ValueError("prefix length %d out of range 0..32" % length)
        if prefix & ~netmask(length):
            raise ValueError("%s/%d has host bits set" % (ipaddress.IPv4Address(prefix), length))
        return 0

    cdef object full_error(self, int rc):
        if rc == FIB_NO_GROUPS:
            return FibFull("FIB full: all %d second-level blocks in use (%d waiting for "
                           "readers to move on)" % (self.groups_cap, self.limbo.count))
        if rc == FIB_NO_NEXTHOPS:
            return FibFull("FIB full: all %d next-hop records in use" % self.nh_cap)
        return SealedTable.full_error(self, rc)

    def insert(self, uint32_t prefix, uint32_t length, uint32_t index):
        """Route prefix/length (ints; host bits must be clear) to next hop
        ``index``, replacing the route's next hop if it is there already."""
        cdef int r
        self.check_route(prefix, length)
        if index >= self.hdr.nh_count or self.nh_refs[index] == NH_FREE:
            raise ValueError("no next hop %d" % index)
        r = self.route_set_c(prefix, length, index)
        self.raise_for(r)

    def add_route(self, network, kind, gw=0, uint16_t ifindex=0):
        """Add or replace a route: network as "A.B.C.D/LEN" or an IPv4Network,
        kind a name from KINDS.  Takes effect in every reader at once (safe
        while workers run).  Returns the next-hop index."""
        net = ipaddress.IPv4Network(network)
        nh = self.add_nexthop(kind, int(gw), ifindex)
        self.insert(int(net.network_address), net.prefixlen, nh)
        return nh

    def delete(self, uint32_t prefix, uint32_t length):
        """Remove route prefix/length (ints); addresses it covered fall back to
        the longest shorter route that covers them.  Returns whether it was there."""
        self.check_route(prefix, length)
        return self.route_delete_c(prefix, length) == FIB_OK

    def delete_route(self, network):
        """Remove a route (network as for add_route); safe while workers run.
        Returns whether it was there."""
        net = ipaddress.IPv4Network(network)
        return self.delete(int(net.network_address), net.prefixlen)

    def route(self, network):
        """The next-hop index of exactly this route, or None."""
        net = ipaddress.IPv4Network(network)
        self.check_writable()
        r = self.rule_find(int(net.network_address), net.prefixlen)
        return None if r < 0 else r

    def route_list(self):
        """[(prefix int, length, next-hop index)] of every route, in no order."""
        self.check_writable()
        out = []
        cdef uint64_t i, w
        for i in range(self.rules_cap):
            w = self.rules[i]
            if w:
                out.append((<uint32_t>(w >> 30), <uint32_t>((w >> 24) & 0x3F),
                            <uint32_t>(w & MAX_INDEX)))
        return out

    def lookup(self, addr):
        """Next-hop index for an address (int or str), or -1."""
        cdef uint32_t a = int(ipaddress.IPv4Address(addr))
        return fib_lookup(self.tbl24, self.tbl8, a)

    def lookup_many(self, const uint32_t[::1] addrs, int64_t[::1] out):
        """Look up a vector of addresses (host order) into ``out`` (-1: miss)."""
        cdef Py_ssize_t i, n = addrs.shape[0]
        if out.shape[0] < n:
            raise ValueError("out is shorter than addrs")
        with nogil:
            for i in range(n):
                out[i] = fib_lookup(self.tbl24, self.tbl8, addrs[i])

    @property
    def routes(self):
        """Routes in the table."""
        return fib_u64_load_relaxed(&self.hdr.routes)

    @property
    def blocks(self):
        """Second-level blocks in use (/24s holding longer prefixes)."""
        return self.hdr.groups_used

    def apply_routes(self, const unsigned char[::1] records):
        """Make the table hold exactly these routes (records from
        parse_routes or pack_route, concatenated; for a prefix given twice
        the later one counts), touching only what differs: new routes are
        added, routes whose next hop differs are moved, routes not among
        them are deleted (in that order, so traffic covered before and after
        never misses).  Safe while workers run.  Returns (added, removed,
        changed).  A bad record raises ValueError before anything changes;
        FibFull can leave the change half done."""
        cdef const route_t *rec = <const route_t *>&records[0] if records.shape[0] else NULL
        cdef uint64_t n = records.shape[0] // sizeof(route_t), k, i, ndel = 0
        cdef uint64_t added = 0, removed = 0, changed = 0
        cdef uint32_t cap, mask, s, prefix, length
        cdef uint32_t *th = NULL
        cdef uint64_t *dels = NULL
        cdef const route_t *r
        cdef int64_t nh, old
        cdef int rc = FIB_OK
        self.check_writable()
        if records.shape[0] % sizeof(route_t):
            raise ValueError("route records are %d bytes each" % sizeof(route_t))
        for k in range(n):
            r = &rec[k]
            if r.length > 32 or r.prefix & ~netmask(r.length) or r.kind >= N_NH_KINDS:
                raise ValueError("route record %d is not a route (%s/%d kind %d)"
                                 % (k, ipaddress.IPv4Address(r.prefix), r.length, r.kind))
        cap = pow2_at_least(n * 2)
        mask = cap - 1
        th = <uint32_t *>calloc(cap, 4)
        dels = <uint64_t *>malloc(max(self.rules_count, 1) * 8)
        if th == NULL or dels == NULL:
            free(th)
            free(dels)
            raise MemoryError()
        try:
            with nogil:
                # The wanted set, by prefix: slot -> record index + 1.
                for k in range(n):
                    s = <uint32_t>(mix64(route_key(rec[k].prefix, rec[k].length)) >> 32) & mask
                    while th[s] and not (rec[th[s] - 1].prefix == rec[k].prefix
                                         and rec[th[s] - 1].length == rec[k].length):
                        s = (s + 1) & mask
                    th[s] = <uint32_t>k + 1
                # Adds and moves.
                for s in range(cap):
                    if not th[s]:
                        continue
                    r = &rec[th[s] - 1]
                    nh = self.nexthop_c(r.kind, r.gw, r.ifindex)
                    if nh < 0:
                        rc = <int>nh
                        break
                    old = self.rule_find(r.prefix, r.length)
                    if old == nh:
                        continue
                    rc = self.route_set_c(r.prefix, r.length, <uint32_t>nh)
                    if rc < 0:
                        break
                    if old < 0:
                        added += 1
                    else:
                        changed += 1
                # Deletes: what is not wanted (collected first: deleting reorders the store).
                if rc == FIB_OK:
                    for i in range(self.rules_cap):
                        if not self.rules[i]:
                            continue
                        prefix = <uint32_t>(self.rules[i] >> 30)
                        length = <uint32_t>((self.rules[i] >> 24) & 0x3F)
                        s = <uint32_t>(mix64(route_key(prefix, length)) >> 32) & mask
                        while th[s] and not (rec[th[s] - 1].prefix == prefix
                                             and rec[th[s] - 1].length == length):
                            s = (s + 1) & mask
                        if not th[s]:
                            dels[ndel] = route_key(prefix, length)
                            ndel += 1
                    for i in range(ndel):
                        self.route_delete_c(<uint32_t>(dels[i] >> 6), <uint32_t>(dels[i] & 0x3F))
                        removed += 1
        finally:
            free(th)
            free(dels)
        if rc < 0:
            try:
                self.raise_for(rc)
            except FibFull as e:
                raise FibFull("%s; applied +%d ~%d before that, deleted nothing"
                              % (e, added, changed)) from None
        return added, removed, changed
