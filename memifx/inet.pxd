"""Internet checksum arithmetic (RFC 1071, RFC 1624) that the router
(ip4.pyx) and the tester (traffic.pyx) share.

Everything here works on 16-bit words as they load from memory, in the
host's byte order: a ones'-complement sum does not depend on byte order
(RFC 1071), so a checksum computed that way is stored back with memcpy,
and a word given to checksum_add is one loaded the same way."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy


cdef inline uint64_t inet_sum(const uint8_t *p, uint32_t n) noexcept nogil:
    """The plain sum of ``n`` bytes as 16-bit words in memory order (a last
    odd byte as a word with a zero second byte), carries not folded: 32 bits
    at a time, which changes the sum by multiples of 0xFFFF only."""
    cdef uint64_t s = 0
    cdef uint32_t w = 0
    cdef uint16_t h = 0
    while n >= 4:
        memcpy(&w, p, 4)
        s += w
        p += 4
        n -= 4
    if n >= 2:
        memcpy(&h, p, 2)
        s += h
        p += 2
        n -= 2
    if n:
        h = 0
        memcpy(&h, p, 1)
        s += h
    return s


cdef inline uint16_t inet_fold(uint64_t s) noexcept nogil:
    """A plain sum (inet_sum) folded to its 16-bit ones'-complement sum
    (0 only for a sum of 0)."""
    s = (s & 0xffffffffULL) + (s >> 32)
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    s = (s & 0xffff) + (s >> 16)
    return <uint16_t>s


cdef inline uint16_t inet_checksum(const uint8_t *p, uint32_t n) noexcept nogil:
    """The Internet checksum of ``n`` bytes (the checksum field among them
    reading 0), in memory order: store it with memcpy.  Over bytes that
    hold their right checksum it is 0."""
    return <uint16_t>(~inet_fold(inet_sum(p, n)) & 0xffff)


cdef inline uint16_t checksum_add(uint16_t hc, uint32_t v) noexcept nogil:
    """Checksum ``hc`` after ``v`` (at most 0xFFFF) is added to the sum it
    covers: HC' = ~(~HC + v).  RFC 1624 eqn. 3, HC' = ~(~HC + ~m + m'),
    with v = ~m + m' (folded) for a word m that became m'; ~m + m' is a
    constant for a known change (TTL minus one, ICMP type 8 to 0), and m'
    itself where m was 0."""
    cdef uint32_t s = (<uint32_t>hc ^ 0xffff) + v
    s = (s & 0xffff) + (s >> 16)
    return <uint16_t>~s


cdef inline bint sums_to_all_ones(uint64_t s) noexcept nogil:
    """Whether ``s``, a plain sum of a header's 16- or 32-bit words (any byte
    order, carries not folded), folds to 0xFFFF: the header's checksum is
    right.  2**16 is 1 modulo 0xFFFF, so that is a non-zero multiple of
    0xFFFF; 0xFFFF is odd, so it has an inverse modulo 2**64, and the
    multiples of 0xFFFF are exactly the s whose product with that inverse is
    at most (2**64 - 1) / 0xFFFF: one multiply, no division, no folding."""
    return s != 0 and multiple_of_ffff(s)


cdef inline bint multiple_of_ffff(uint64_t s) noexcept nogil:
    """sums_to_all_ones for a sum known not to be 0 (a header with a
    non-zero byte): the multiply alone."""
    return s * 0xfffefffefffeffffULL <= 0x0001000100010001ULL
