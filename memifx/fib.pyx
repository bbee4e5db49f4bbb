# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""ip4-fib: IPv4 longest-prefix match in a two-level (DIR-24-8 style) table.

The first level has one u32 entry for each /24 (2^24 entries, 64 MiB, mapped
lazily by the kernel until touched).  A route of length 24 or less writes
every first-level entry it covers; a longer route turns its /24's entry into
a pointer to a 256-entry second-level block and writes the block entries it
covers.  A lookup is therefore one memory read, two when the /24 holds longer
prefixes.

Every entry remembers the prefix length of the route that wrote it, and an
insertion only writes entries whose current length is not longer than its
own.  So a /16 added after a /24 inside it leaves the /24's entries alone,
and the table ends the same whatever order the routes arrive in (a second
insertion of the same prefix replaces the first).  There is no delete: a
router that needs one rebuilds the table.

Next hops live in a separate array (index -> kind, gateway, output
interface), deduplicated, so a million routes via a handful of gateways
cost a handful of next-hop records.

The routes-file loader parses the whole file in C with the GIL released:
one route a line, ``PREFIX[,/ ]via[= ]GW[,/ ]dev[= ]NAME``, '#' comments.

Sharing with worker processes: ``export()`` copies the finished tables into
one sealed memfd and ``Fib.from_shared(fd, layout)`` maps it read-only in
another process, a Fib whose lookups (and the Router over it) work as usual
but which refuses every change.  The routes of ip4-forward are static after
start, so one export at start is all the workers need; a command that changed
routes at run time would have to export a new table and swap it in.
"""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memset, memcmp, memchr, memcpy
from posix.mman cimport mmap, munmap, PROT_READ, PROT_WRITE, MAP_SHARED, MAP_FAILED

import fcntl
import ipaddress
import os

cdef enum:
    PAGE = 4096

KINDS = ("connected", "gateway", "local", "broadcast")


class RouteError(ValueError):
    """A bad line of routes text: .line (from 1), .reason, .text."""

    def __init__(self, line, reason, text):
        super().__init__("line %d: %s: %r" % (line, reason, text))
        self.line, self.reason, self.text = line, reason, text

# Routes-file parse errors
cdef enum:
    PE_NONE = 0
    PE_PREFIX = 1
    PE_HOST_BITS = 2
    PE_GATEWAY = 3
    PE_DEV = 4
    PE_WORD = 5
    PE_NO_TARGET = 6
    PE_UNREACHABLE = 7
    PE_NOMEM = 8
    PE_TWICE = 9

PARSE_ERRORS = {
    PE_PREFIX: "expected a prefix A.B.C.D/LEN first",
    PE_HOST_BITS: "prefix has host bits set",
    PE_GATEWAY: "bad gateway address after via",
    PE_DEV: "unknown interface after dev",
    PE_WORD: "unexpected word (expected via GW and/or dev NAME)",
    PE_NO_TARGET: "a route needs via=GW or dev=NAME",
    PE_UNREACHABLE: "gateway is in no connected subnet (give dev=NAME)",
    PE_NOMEM: "out of memory",
    PE_TWICE: "via or dev given twice",
}

cdef enum:
    MAX_NAMES = 64
    NAME_LEN = 64

cdef struct names_t:
    uint32_t count
    uint32_t length[MAX_NAMES]
    char name[MAX_NAMES][NAME_LEN]


cdef inline bint replaces(uint32_t e, uint32_t length) noexcept nogil:
    """May a route of ``length`` overwrite entry ``e``?"""
    return not (e & E_VALID) or ((e >> E_DEPTH_SHIFT) & E_DEPTH_MASK) <= length


cdef inline uint32_t nh_slot(uint8_t kind, uint32_t gw, uint16_t ifindex, uint32_t mask) noexcept nogil:
    cdef uint64_t k = (<uint64_t>gw << 32) | (<uint64_t>ifindex << 8) | kind
    k *= 0x9E3779B97F4A7C15ULL
    return <uint32_t>(k >> 40) & mask


cdef inline bint is_sep(char c) noexcept nogil:
    return c == c' ' or c == c'\t' or c == c',' or c == c'\r'


cdef bint parse_addr(const char *s, size_t n, uint32_t *out) noexcept nogil:
    """Dotted quad, exactly four decimal parts 0..255, nothing else."""
    cdef uint32_t addr = 0, part = 0, parts = 0, digits = 0
    cdef size_t i
    cdef char c
    for i in range(n):
        c = s[i]
        if c'0' <= c <= c'9':
            part = part * 10 + <uint32_t>(c - c'0')
            digits += 1
            if digits > 3 or part > 255:
                return False
        elif c == c'.':
            if digits == 0 or parts == 3:
                return False
            addr = (addr << 8) | part
            parts += 1
            part = digits = 0
        else:
            return False
    if digits == 0 or parts != 3:
        return False
    out[0] = (addr << 8) | part
    return True


cdef bint parse_prefix(const char *s, size_t n, uint32_t *addr, uint32_t *length) noexcept nogil:
    """A.B.C.D/LEN (LEN 0..32); a bare address is a /32."""
    cdef size_t i, slash = n
    cdef uint32_t v = 0
    for i in range(n):
        if s[i] == c'/':
            slash = i
            break
    if not parse_addr(s, slash, addr):
        return False
    if slash == n:
        length[0] = 32
        return True
    if slash + 1 == n or n - slash - 1 > 2:
        return False
    for i in range(slash + 1, n):
        if not c'0' <= s[i] <= c'9':
            return False
        v = v * 10 + <uint32_t>(s[i] - c'0')
    if v > 32:
        return False
    length[0] = v
    return True


cdef inline uint32_t netmask(uint32_t length) noexcept nogil:
    return 0 if length == 0 else (<uint32_t>0xFFFFFFFFu) << (32 - length)


cdef int parse_line(Fib fib, const char *s, size_t n, names_t *names) noexcept nogil:
    """Parse and insert one line; 0 or a PE_ code.  Blank and comment lines are fine."""
    cdef size_t i = 0, start, tl
    cdef const char *tok
    cdef uint32_t prefix = 0, length = 0, gw = 0, k
    cdef int field = 0          # 0: expect prefix, 1: any, 2: value of via, 3: value of dev
    cdef int dev = -1
    cdef bint have_gw = False, have_prefix = False
    cdef int64_t nh
    cdef uint8_t kind
    while True:
        while i < n and is_sep(s[i]):
            i += 1
        if i == n or s[i] == c'#':
            break
        start = i
        while i < n and not is_sep(s[i]) and s[i] != c'#':
            i += 1
        tok = s + start
        tl = i - start
        if field == 0:
            if not parse_prefix(tok, tl, &prefix, &length):
                return PE_PREFIX
            if prefix & ~netmask(length):
                return PE_HOST_BITS
            have_prefix = True
            field = 1
            continue
        if field == 1:
            if tl >= 3 and memcmp(tok, b"via", 3) == 0 and (tl == 3 or tok[3] == c'='):
                if have_gw:
                    return PE_TWICE
                if tl == 3:
                    field = 2
                    continue
                tok += 4
                tl -= 4
                field = 2
            elif tl >= 3 and memcmp(tok, b"dev", 3) == 0 and (tl == 3 or tok[3] == c'='):
                if dev >= 0:
                    return PE_TWICE
                if tl == 3:
                    field = 3
                    continue
                tok += 4
                tl -= 4
                field = 3
            else:
                return PE_WORD
        if field == 2:
            if not parse_addr(tok, tl, &gw):
                return PE_GATEWAY
            have_gw = True
        elif field == 3:
            for k in range(names.count):
                if names.length[k] == tl and memcmp(names.name[k], tok, tl) == 0:
                    dev = <int>k
                    break
            if dev < 0:
                return PE_DEV
        field = 1
    if not have_prefix:
        return PE_NONE
    if field == 2:
        return PE_GATEWAY
    if field == 3:
        return PE_DEV
    if have_gw:
        kind = NH_GATEWAY
        if dev < 0:
            # The output interface is the one whose subnet holds the gateway.
            nh = fib_lookup(fib.tbl24, fib.tbl8, gw)
            if nh < 0 or fib.nh[nh].kind != NH_CONNECTED:
                return PE_UNREACHABLE
            dev = fib.nh[nh].ifindex
    elif dev >= 0:
        kind = NH_CONNECTED
    else:
        return PE_NO_TARGET
    nh = fib.nexthop_c(kind, gw, <uint16_t>dev)
    if nh < 0 or fib.insert_c(prefix, length, <uint32_t>nh) < 0:
        return PE_NOMEM
    return -1                   # a route was added


cdef class Fib:
    """IPv4 routes: prefix -> next-hop index; next-hop index -> (kind, gateway, interface)."""

    def __cinit__(self, *, bint _view=False):
        if _view:
            return                  # from_shared points the tables into its mapping
        # calloc of this size is an anonymous mapping: zero pages until written.
        self.tbl24 = <uint32_t *>calloc(TBL24_SIZE, sizeof(uint32_t))
        if self.tbl24 == NULL:
            raise MemoryError()

    def __dealloc__(self):
        if self.view_map != NULL:
            munmap(self.view_map, self.view_size)
            return
        free(self.tbl24)
        free(self.tbl8)
        free(self.nh)
        free(self.nh_hash)

    def check_writable(self):
        """Raises ValueError on a read-only view (from_shared)."""
        if self.view_map != NULL:
            raise ValueError("a shared FIB view is read-only")

    # ------------------------------------------------------ shared memory

    def export(self):
        """Copy the tables into a new sealed memfd: returns (fd, layout), the
        layout a JSON-able dict for ``Fib.from_shared``.  The caller owns the
        fd.  First-level pages that hold only zeros are not copied, so they
        stay holes in the file (a small FIB costs little memory)."""
        cdef size_t off24 = 0
        cdef size_t off8 = <size_t>TBL24_SIZE * 4
        cdef size_t size8 = <size_t>self.ngroups * 256 * 4
        cdef size_t offnh = (off8 + size8 + PAGE - 1) & ~(<size_t>PAGE - 1)
        cdef size_t sizenh = <size_t>self.nnh * sizeof(nexthop_t)
        cdef size_t total = (offnh + sizenh + PAGE - 1) & ~(<size_t>PAGE - 1)
        cdef size_t p, k
        cdef uint8_t *base
        cdef const uint64_t *w
        cdef bint zero
        if total == 0:
            total = PAGE
        fd = os.memfd_create("memifx-fib", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(fd, total)
            base = <uint8_t *>mmap(NULL, total, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0)
            if <void *>base == MAP_FAILED:
                raise OSError("cannot map the shared FIB")
            with nogil:
                p = 0
                while p < <size_t>TBL24_SIZE * 4:
                    w = <const uint64_t *>(<uint8_t *>self.tbl24 + p)
                    zero = True
                    for k in range(PAGE // 8):
                        if w[k]:
                            zero = False
                            break
                    if not zero:
                        memcpy(base + off24 + p, w, PAGE)
                    p += PAGE
                if size8:
                    memcpy(base + off8, self.tbl8, size8)
                if sizenh:
                    memcpy(base + offnh, self.nh, sizenh)
            munmap(base, total)
            # No one may change or resize it from now on (writers included).
            fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK
                        | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
        except BaseException:
            os.close(fd)
            raise
        return fd, {"size": total, "tbl24": off24, "tbl8": off8, "ngroups": self.ngroups,
                    "nh": offnh, "nnh": self.nnh, "routes": self.routes}

    @staticmethod
    def from_shared(fd, layout):
        """A read-only Fib over a table ``export`` wrote (mapped PROT_READ,
        MAP_SHARED; the fd may be closed afterwards)."""
        cdef Fib f = Fib.__new__(Fib, _view=True)
        cdef size_t size = layout["size"]
        cdef uint8_t *base
        st = os.fstat(fd)
        if st.st_size < size or layout["nh"] + layout["nnh"] * sizeof(nexthop_t) > size:
            raise ValueError("shared FIB: the file is smaller than its layout")
        if not fcntl.fcntl(fd, fcntl.F_GET_SEALS) & fcntl.F_SEAL_WRITE:
            raise ValueError("shared FIB: the file is not sealed against writes")
        base = <uint8_t *>mmap(NULL, size, PROT_READ, MAP_SHARED, fd, 0)
        if <void *>base == MAP_FAILED:
            raise OSError("cannot map the shared FIB")
        f.view_map = base
        f.view_size = size
        f.tbl24 = <uint32_t *>(base + <size_t>layout["tbl24"])
        f.tbl8 = <uint32_t *>(base + <size_t>layout["tbl8"])
        f.ngroups = f.groups_cap = layout["ngroups"]
        f.nh = <nexthop_t *>(base + <size_t>layout["nh"])
        f.nnh = f.nh_cap = layout["nnh"]
        f.routes = layout["routes"]
        return f

    @property
    def shared(self):
        """Whether this is a read-only view from ``from_shared``."""
        return self.view_map != NULL

    # ------------------------------------------------------------ next hops

    cdef int64_t nexthop_c(self, uint8_t kind, uint32_t gw, uint16_t ifindex) noexcept nogil:
        """The index of this next hop, added if new; -1 if out of memory or indices."""
        cdef uint32_t mask, s, i, cap
        cdef uint32_t *h
        cdef nexthop_t *a
        cdef nexthop_t *x
        if kind != NH_GATEWAY:
            gw = 0
        if self.nh_hash_cap:
            mask = self.nh_hash_cap - 1
            s = nh_slot(kind, gw, ifindex, mask)
            while self.nh_hash[s]:
                x = &self.nh[self.nh_hash[s] - 1]
                if x.kind == kind and x.gw == gw and x.ifindex == ifindex:
                    return self.nh_hash[s] - 1
                s = (s + 1) & mask
        if self.nnh >= MAX_INDEX:
            return -1
        if self.nnh == self.nh_cap:
            cap = self.nh_cap * 2 if self.nh_cap else 16
            a = <nexthop_t *>realloc(self.nh, cap * sizeof(nexthop_t))
            if a == NULL:
                return -1
            self.nh = a
            self.nh_cap = cap
        if (self.nnh + 1) * 2 > self.nh_hash_cap:
            # Rebuild the index at twice the size (at most half full).
            cap = self.nh_hash_cap * 2 if self.nh_hash_cap else 64
            h = <uint32_t *>calloc(cap, sizeof(uint32_t))
            if h == NULL:
                return -1
            for i in range(self.nnh):
                x = &self.nh[i]
                s = nh_slot(x.kind, x.gw, x.ifindex, cap - 1)
                while h[s]:
                    s = (s + 1) & (cap - 1)
                h[s] = i + 1
            free(self.nh_hash)
            self.nh_hash = h
            self.nh_hash_cap = cap
        i = self.nnh
        self.nh[i].kind = kind
        self.nh[i].gw = gw
        self.nh[i].ifindex = ifindex
        mask = self.nh_hash_cap - 1
        s = nh_slot(kind, gw, ifindex, mask)
        while self.nh_hash[s]:
            s = (s + 1) & mask
        self.nh_hash[s] = i + 1
        self.nnh += 1
        return i

    def add_nexthop(self, kind, uint32_t gw=0, uint16_t ifindex=0):
        """Index of the next hop (kind: a name from KINDS or its number)."""
        cdef int64_t r
        self.check_writable()
        if isinstance(kind, str):
            kind = KINDS.index(kind)
        if not 0 <= kind < N_NH_KINDS:
            raise ValueError("next-hop kind out of range")
        r = self.nexthop_c(<uint8_t>kind, gw, ifindex)
        if r < 0:
            raise MemoryError()
        return r

    def nexthop(self, uint32_t index):
        """(kind name, gateway as int, interface index)."""
        if index >= self.nnh:
            raise IndexError("no next hop %d" % index)
        return KINDS[self.nh[index].kind], self.nh[index].gw, self.nh[index].ifindex

    # --------------------------------------------------------------- routes

    cdef int insert_c(self, uint32_t prefix, uint32_t length, uint32_t index) noexcept nogil:
        """Route prefix/length (host bits clear) to next hop ``index``; -1: no memory."""
        cdef uint32_t word = E_VALID | (length << E_DEPTH_SHIFT) | (index << E_INDEX_SHIFT)
        cdef uint32_t i, j, first, count, e, grp
        cdef uint32_t *g
        cdef uint32_t *t
        if length <= 24:
            first = prefix >> 8
            count = 1u << (24 - length)
            for i in range(first, first + count):
                e = self.tbl24[i]
                if e & E_GROUP:
                    g = self.tbl8 + (<uint64_t>(e >> E_INDEX_SHIFT) << 8)
                    for j in range(256):
                        if replaces(g[j], length):
                            g[j] = word
                elif replaces(e, length):
                    self.tbl24[i] = word
        else:
            i = prefix >> 8
            e = self.tbl24[i]
            if not (e & E_GROUP):
                # Split the /24: the new block starts as copies of the entry.
                if self.ngroups == self.groups_cap:
                    if self.groups_cap >= MAX_INDEX:
                        return -1
                    count = self.groups_cap * 2 if self.groups_cap else 256
                    if count > MAX_INDEX:
                        count = MAX_INDEX
                    t = <uint32_t *>realloc(self.tbl8, <uint64_t>count * 256 * sizeof(uint32_t))
                    if t == NULL:
                        return -1
                    self.tbl8 = t
                    self.groups_cap = count
                grp = self.ngroups
                self.ngroups += 1
                g = self.tbl8 + (<uint64_t>grp << 8)
                for j in range(256):
                    g[j] = e
                self.tbl24[i] = (grp << E_INDEX_SHIFT) | E_GROUP
            else:
                g = self.tbl8 + (<uint64_t>(e >> E_INDEX_SHIFT) << 8)
            first = prefix & 0xFF
            count = 1u << (32 - length)
            for j in range(first, first + count):
                if replaces(g[j], length):
                    g[j] = word
        self.routes += 1
        return 0

    def insert(self, uint32_t prefix, uint32_t length, uint32_t index):
        """Route prefix/length (ints; host bits must be clear) to next hop ``index``."""
        self.check_writable()
        if length > 32:
            raise ValueError("prefix length %d out of range 0..32" % length)
        if prefix & ~netmask(length):
            raise ValueError("%s/%d has host bits set" % (ipaddress.IPv4Address(prefix), length))
        if index >= self.nnh:
            raise ValueError("no next hop %d" % index)
        cdef int r
        with nogil:
            r = self.insert_c(prefix, length, index)
        if r < 0:
            raise MemoryError()

    def add_route(self, network, kind, gw=0, uint16_t ifindex=0):
        """Convenience: network as "A.B.C.D/LEN" or an IPv4Network."""
        net = ipaddress.IPv4Network(network)
        nh = self.add_nexthop(kind, int(gw), ifindex)
        self.insert(int(net.network_address), net.prefixlen, nh)
        return nh

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
    def memory(self):
        """Bytes of table allocated (the first level is touched lazily)."""
        return TBL24_SIZE * 4 + <uint64_t>self.groups_cap * 1024 + self.nh_cap * sizeof(nexthop_t)

    @property
    def blocks(self):
        """Second-level blocks in use (/24s holding longer prefixes)."""
        return self.ngroups

    # ---------------------------------------------------------- routes file

    def load_routes(self, const unsigned char[::1] data, names=()):
        """Add every route of a routes file's contents; ``names[i]`` is the
        name of interface index i.  Returns the number of routes added.
        Raises RouteError (a ValueError) at the first bad line (routes of the
        lines before it stay in)."""
        cdef names_t nm
        cdef size_t n = data.shape[0], pos = 0, end
        cdef const char *p = <const char *>&data[0] if n else NULL
        cdef const char *eol
        cdef uint64_t line = 0, added = 0
        cdef int r = 0
        self.check_writable()
        if len(names) > MAX_NAMES:
            raise ValueError("at most %d interfaces" % MAX_NAMES)
        nm.count = 0
        for name in names:
            b = name.encode() if isinstance(name, str) else bytes(name)
            if len(b) >= NAME_LEN:
                raise ValueError("interface name longer than %d bytes" % (NAME_LEN - 1))
            memset(nm.name[nm.count], 0, NAME_LEN)
            for i, c in enumerate(b):
                nm.name[nm.count][i] = c
            nm.length[nm.count] = len(b)
            nm.count += 1
        with nogil:
            while pos < n:
                line += 1
                eol = <const char *>memchr(p + pos, c'\n', n - pos)
                end = <size_t>(eol - p) if eol != NULL else n
                r = parse_line(self, p + pos, end - pos, &nm)
                if r > 0:
                    break
                if r < 0:
                    added += 1
                    r = 0
                pos = end + 1
        if r > 0:
            text = bytes(data[pos:end]).decode(errors="replace").strip()
            raise RouteError(line, PARSE_ERRORS[r], text[:80])
        return added
