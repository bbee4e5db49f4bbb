"""Internet checksum arithmetic (RFC 1071, RFC 1624) that the router
(ip4.pyx) and the tester (traffic.pyx) share.

Everything here works on 16-bit words as they load from memory, in the
host's byte order: a ones'-complement sum does not depend on byte order
(RFC 1071), so a checksum computed that way is stored back with memcpy,
and a word given to checksum_add is one loaded the same way."""
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t
from libc.string cimport memcpy

cdef extern from *:
    """
    #define INET_LITTLE_ENDIAN (__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__)
    """
    const bint INET_LITTLE_ENDIAN


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


cdef inline uint32_t ones_add(uint32_t a, uint32_t b) noexcept nogil:
    """a + b, each at most 0xFFFF, folded back into 16 bits (the carry
    added back): two changes to a sum made one argument for checksum_add."""
    cdef uint32_t s = a + b
    return (s & 0xffff) + (s >> 16)


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


cdef inline uint32_t ttl_down(uint32_t w) noexcept nogil:
    """An IPv4 header's third 32-bit word (TTL, protocol, checksum) as
    loaded from memory, with the TTL (above 1: no borrow) one less and the
    checksum updated to match, to be stored back the same way: what
    checksum_add with ~m + m' of that change gives, for every checksum, in
    fewer steps.

    Little-endian, the word holds the (TTL, protocol) word of memory order
    in its low half and the checksum of memory order in its high half; the
    TTL going down by one is that low word going down by 1, so the
    checksum goes up by 1, ones'-complement: one add of 0xFFFF does both,
    then a checksum that became 0xFFFF (the sum carried, or all ones) gets
    one more, which makes 0xFFFF 0 and adds the carry back.  Big-endian the
    word is in network order, the checksum its low half, up by 0x0100."""
    cdef uint64_t x
    cdef uint32_t c
    if INET_LITTLE_ENDIAN:
        x = <uint64_t>w + 0xFFFF
        return <uint32_t>(x + (<uint64_t>(x >= 0xFFFF0000ULL) << 16))
    c = (w & 0xFFFF) + 0x0100
    return ((w - 0x01000000u) & 0xFFFF0000u) | ((c + (c >= 0xFFFF)) & 0xFFFF)
