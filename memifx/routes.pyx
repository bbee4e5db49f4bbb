# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The routes file: one route a line, parsed in C with the GIL released.

    PREFIX[,/ ]via[= ]GW[,/ ]dev[= ]NAME     # comment

PREFIX is A.B.C.D/LEN (a bare address is a /32, host bits must be clear);
``via GW`` routes to a gateway, ``dev NAME`` to a connected link; a gateway
without ``dev`` goes out of the interface whose connected route in the Fib
holds it.  ``load_routes`` adds routes to a Fib as it parses;
``parse_routes`` only checks and collects (a whole file or nothing) the
records that ``Fib.apply_routes`` then makes the table hold.  A bad line
raises RouteError with its number and text.
"""
from cpython.bytes cimport PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport realloc, free
from libc.string cimport memset, memcmp, memchr

from memifx.fib cimport Fib, route_t, fib_lookup, netmask, NH_CONNECTED, NH_GATEWAY

from memifx.fib import FibFull, RouteError


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
    PE_NOMEM = 8            # not a line's fault: raised as MemoryError
    PE_TWICE = 9

PARSE_ERRORS = {
    PE_PREFIX: "expected a prefix A.B.C.D/LEN first",
    PE_HOST_BITS: "prefix has host bits set",
    PE_GATEWAY: "bad gateway address after via",
    PE_DEV: "unknown interface after dev",
    PE_WORD: "unexpected word (expected via GW and/or dev NAME)",
    PE_NO_TARGET: "a route needs via=GW or dev=NAME",
    PE_UNREACHABLE: "gateway is in no connected subnet (give dev=NAME)",
    PE_TWICE: "via or dev given twice",
}


cdef enum:
    MAX_NAMES = 64
    NAME_LEN = 64

cdef struct names_t:
    uint32_t count
    uint32_t length[MAX_NAMES]
    char name[MAX_NAMES][NAME_LEN]


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


cdef int parse_line(Fib fib, const char *s, size_t n, names_t *names, route_t *out) noexcept nogil:
    """Parse one line into ``out``: -1 if it holds a route, 0 if blank or a
    comment, else a PE_ code.  Gateways resolve against fib's routes."""
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
    out.prefix = prefix
    out.length = <uint8_t>length
    out.kind = kind
    out.ifindex = <uint16_t>dev
    out.gw = gw
    return -1


cdef int fill_names(names_t *nm, names) except -1:
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
    return 0


def load_routes(Fib fib not None, const unsigned char[::1] data, names=()):
    """Add every route of a routes file's contents to ``fib``; ``names[i]``
    is the name of interface index i.  Returns the number of routes added.
    Raises RouteError (a ValueError) at the first bad line (routes of the
    lines before it stay in); when the table has no room, the Fib's own
    FibFull with the line and its text."""
    cdef names_t nm
    cdef size_t n = data.shape[0], pos = 0, end = 0
    cdef const char *p = <const char *>&data[0] if n else NULL
    cdef const char *eol
    cdef uint64_t line = 0, added = 0
    cdef int r = 0, rc = 0
    cdef int64_t nh
    cdef route_t rt
    fib.check_writable()
    fill_names(&nm, names)
    with nogil:
        while pos < n:
            line += 1
            eol = <const char *>memchr(p + pos, c'\n', n - pos)
            end = <size_t>(eol - p) if eol != NULL else n
            r = parse_line(fib, p + pos, end - pos, &nm, &rt)
            if r > 0:
                break
            if r < 0:
                nh = fib.nexthop_c(rt.kind, rt.gw, rt.ifindex)
                rc = <int>nh if nh < 0 else fib.route_set_c(rt.prefix, rt.length, <uint32_t>nh)
                if rc < 0:
                    break
                added += 1
            pos = end + 1
    if rc < 0 or r > 0:
        text = bytes(data[pos:end]).decode(errors="replace").strip()[:80]
        try:
            fib.raise_for(rc)
        except FibFull as e:
            raise FibFull(e.reason, line, text) from None
        raise RouteError(PARSE_ERRORS[r], line, text)
    return added


def parse_routes(Fib fib not None, const unsigned char[::1] data, names=()):
    """Check a routes file's contents and return its routes as records
    for Fib.apply_routes (bytes, 16 per route), changing nothing.  Raises
    RouteError at the first bad line.  Gateways without dev= resolve
    against the connected routes ``fib`` holds now."""
    cdef names_t nm
    cdef size_t n = data.shape[0], pos = 0, end = 0
    cdef const char *p = <const char *>&data[0] if n else NULL
    cdef const char *eol
    cdef uint64_t line = 0, count = 0, cap = 0
    cdef int r = 0
    cdef route_t *out = NULL
    cdef route_t *t
    fill_names(&nm, names)
    try:
        with nogil:
            while pos < n:
                line += 1
                eol = <const char *>memchr(p + pos, c'\n', n - pos)
                end = <size_t>(eol - p) if eol != NULL else n
                if count == cap:
                    cap = cap * 2 if cap else 1024
                    t = <route_t *>realloc(out, cap * sizeof(route_t))
                    if t == NULL:
                        r = PE_NOMEM
                        break
                    out = t
                r = parse_line(fib, p + pos, end - pos, &nm, &out[count])
                if r > 0:
                    break
                if r < 0:
                    out[count].line = <uint32_t>line
                    count += 1
                    r = 0
                pos = end + 1
        if r == PE_NOMEM:
            raise MemoryError()
        if r > 0:
            text = bytes(data[pos:end]).decode(errors="replace").strip()
            raise RouteError(PARSE_ERRORS[r], line, text[:80])
        return PyBytes_FromStringAndSize(<const char *>out, count * sizeof(route_t))
    finally:
        free(out)
