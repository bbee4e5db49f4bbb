# cython: language_level=3
"""Internet checksum arithmetic (RFC 1071) that the router (ip4.pyx) and the
tester (traffic.pyx) share."""
from libc.stdint cimport uint64_t


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
