# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""The IPv4 router's nodes, one vector of packets at a time.

A receive burst goes through the nodes below in this order; each node is one
method that walks its own vector of packet indices and appends each packet to
the vector of the node it goes to next (VPP style):

=================  ============================  ===============================
node               job                           next
=================  ============================  ===============================
memif-input        copy the headers off the ring ip4-fast (the same walk)
ip4-fast           the usual frame in one pass:  interface-output |
                   all of ethernet-input to      ethernet-input | ip-mode-input
                   ip4-rewrite below, or none
ethernet-input     dst MAC ours/broadcast, type  arp-input | ip4-input
ip-mode-input      version nibble                ip4-input
arp-input          answer requests for us,       interface-output
                   queue replies for Python
ip4-input          version, IHL, length, csum    ip4-lookup
ip4-lookup         longest-prefix match (FIB)    ip4-local | ip4-rewrite
ip4-local          ICMP echo reply, count rest   interface-output
ip4-rewrite        TTL, checksum, MACs           interface-output | ip4-icmp-error
                                                 | arp-request
ip4-icmp-error     time exceeded to the sender   interface-output
arp-request        ask for an unresolved hop     interface-output
interface-output   sort by output interface,     (the transmit rings)
                   copy into its ring
=================  ============================  ===============================

memif-input and ip4-fast are one loop (take_frames): each frame's headers
are copied into the arena and, while they are at hand, the usual frame
(IPv4 without options, to our MAC, checksum and TTL good, routed to a known
neighbor: ip4_fast) is forwarded there and then; everything else comes out
of it untouched and goes the long way, through nodes that each decide one
thing.  Before that walk, each burst first goes ring to ring in one pass
(forward_fast): while frames are ip4-fast's, leave by one of the interfaces
ip4-fast sent the last burst from the same input to (up to MAX_FAST of
them), and fit one slot on either ring,
each frame's headers are read once from the receive buffer into registers,
decided there and written from there straight into the transmit ring (a
copy staged in memory and read back wider than it was written stalls the
core on every frame), the rest of the packet copied from the receive buffer;
at the first other frame the walk and the graph take the rest of the
burst, in order.
When a burst took both ways, the transmit vector is put back in arrival
order, so a flow never overtakes itself; when ip4-fast took the whole burst
out of one interface, interface-output and transmit take it as it lies.

memif-input copies the first HDR_COPY (128) bytes of every frame out of the
shared ring into a private arena: all the nodes read (Ethernet 14 + IPv4 with
options up to 60 + the 8 bytes after it that an ICMP error quotes = 82; an
ARP frame is 42) fits.  (Of a first buffer that long it copies FAST_COPY, 64,
first: all ip4-fast reads; the rest only for a frame ip4-fast leaves.)  Every
check and rewrite works on that copy (or, in forward_fast, on the registers
a header was read into, each byte once), so a peer writing into shared
memory while we work cannot change a header between check and use.  The
rest of a longer frame stays in the receive ring, whose slots are held
until interface-output has copied the frames out: a forwarded frame
leaves as its rewritten headers from the arena followed by the rest straight
from the receive buffers (Queue.tx_copy_parts), one copy of the payload.  The
payload is never looked at, so a peer changing it under us only changes its
own bytes.  The one node that must read a whole packet, ip4-local (the ICMP
checksum of an echo request, and the reply that carries its data), first
copies the packet whole into a second private area.  Each arena slot has
headroom in front (to prepend an Ethernet header to a bare IP packet) and
room for the largest reply we generate in place (ICMP time exceeded, ARP).

Everything runs with the GIL released; the GIL comes back only between
bursts, once per output interface, to pick that interface's transmit Queue.
The control plane (Python) writes the FIB (memifx/fib.pyx) and the neighbor
table (memifx/neighbor.pyx), both in shared memory that worker processes map
read-only, and reads the ARP replies the data path queued for it once per
pass.  The lookups here are safe while it changes them (csrc/fib.h,
csrc/neighbor.h).
"""
from cpython.bytes cimport PyBytes_FromStringAndSize, PyBytes_AS_STRING
from cpython.ref cimport PyObject, Py_INCREF, Py_XDECREF
from libc.stdint cimport uint8_t, uint16_t, uint32_t, uint64_t, int64_t
from libc.stdlib cimport calloc, realloc, free
from libc.string cimport memcpy, memset, memcmp

from memifx.counted cimport CountedNode
from memifx.inet cimport (inet_sum, inet_fold, inet_checksum, checksum_add,
                          sums_to_all_ones, multiple_of_ffff, ttl_down)
from memifx.memif cimport memif_desc_t, memif_peer_load16, memif_peer_load32, memif_peer_load64
from memifx.ring cimport (Queue, frame_t, seg_t, run_t, run_from, side_t, side_of, usual_rx_in,
                          usual_tx, usual_tx_in, tx_written)
from memifx.fib cimport (Fib, nexthop_t, fib_lookup,
                         NH_CONNECTED, NH_GATEWAY, NH_LOCAL, NH_BROADCAST)
from memifx.neighbor cimport NeighborTable, nbr_entry_t, nbr_find, nbr_key

cdef enum:
    MAX_IF = 64
    MAX_QUEUES = 256
    MAX_BURST = 256
    HEADROOM = 64           # room to prepend an Ethernet header
    MIN_ROOM = 128          # every slot holds a generated reply this long
    HDR_COPY = MIN_ROOM     # bytes of a frame memif-input copies (the rest stays in the ring)
    FAST_COPY = 64          # ... of which ip4-fast reads these (Ethernet 14 + IPv4 20)
    WAYS = 8                # ip4-fast's ways out kept during a burst, by route (a power of 2)
    MAX_FAST = 4            # outputs the ring-to-ring pass (forward_fast) writes to at once
    ETH_HLEN = 14
    MAX_ROUTED = 65535 + ETH_HLEN   # longer is no IPv4 packet: never copied
    ARP_LEN = 28
    LEARN_MAX = 256         # ARP replies queued for the control plane per pass
    PENDING_SIZE = 1024     # unresolved next hops we sent a request for (direct mapped)
    ARP_RETRY_MS = 1000     # at most one ARP request per next hop per second
    TOKENS_MAX = 100        # budget for generated packets (ARP requests, ICMP
                            # errors), each kind: refills at one per millisecond

# Why a received packet was dropped (index into DROP_REASONS).
cdef enum:
    D_SHORT = 0
    D_WRONG_MAC = 1
    D_NOT_IPV4 = 2
    D_BAD_VERSION = 3
    D_BAD_HEADER_LEN = 4
    D_BAD_LENGTH = 5
    D_BAD_CHECKSUM = 6
    D_TTL = 7
    D_NO_ROUTE = 8
    D_ARP_UNRESOLVED = 9
    D_BAD_ARP = 10
    D_ARP_NOT_OURS = 11
    D_ARP_QUEUE_FULL = 12
    D_BAD_ICMP = 13
    D_NO_MEMORY = 14
    D_TOO_LONG = 15
    N_DROPS = 16

DROP_REASONS = ("short", "wrong dst mac", "not ipv4", "bad version", "bad header length",
                "bad length", "bad checksum", "ttl expired", "no route", "arp unresolved",
                "bad arp", "arp not for us", "arp queue full", "bad icmp checksum",
                "no memory", "too long")
# Frames the router routed but could not transmit, by reason (per
# interface; "tx link down" when it has no transmit queue).
TX_DROPS = ("tx ring full", "tx frame too long", "tx fault", "tx link down")

# Node vectors
cdef enum:
    V_INPUT = 0             # what ip4-fast left for the general graph
    V_ARP = 1
    V_IP4_INPUT = 2
    V_IP4_LOOKUP = 3
    V_IP4_LOCAL = 4
    V_IP4_REWRITE = 5
    V_ICMP_ERROR = 6
    V_ARP_REQUEST = 7
    V_TX = 8
    N_VECTORS = 9

# What happened to the packets one receive queue delivered.  Every packet
# ends in exactly one of: forwarded, echo_replies, arp_replies,
# arp_to_control, local, drops[*].
cdef struct rx_counters_t:
    uint64_t packets
    uint64_t bytes
    uint64_t forwarded
    uint64_t echo_replies       # ICMP echo requests to us, answered
    uint64_t arp_replies        # ARP requests for our address, answered
    uint64_t arp_to_control     # ARP replies queued for the control plane
    uint64_t local              # other traffic to us (no local stack: counted only)
    uint64_t arp_requests_sent  # side effects of drops, not packet outcomes
    uint64_t icmp_errors_sent
    uint64_t drops[N_DROPS]

cdef struct tx_counters_t:
    uint64_t packets
    uint64_t bytes
    uint64_t ring_full          # dropped: no room in the transmit ring
    uint64_t too_long           # dropped: longer than the queue's max_frame or its peer's ring
    uint64_t fault              # dropped: the queue faulted (its link is being dropped)

# An interface's counters are one block of u64s (memifx/counted.pyx), in the
# router's own memory or in a stats file slot: this, then rx_counters_t[nrx],
# then tx_counters_t[ntx].
cdef struct if_counters_t:
    uint64_t link_down          # dropped: no transmit queue (link down)

cdef struct iface_t:
    uint8_t mac[6]
    uint64_t mac8               # mac's bytes then two zeros, as loaded from memory
                                # (ip4-fast compares a frame's first 8 bytes, masked)
    uint32_t ip
    bint ip_mode                # bare IP packets, no Ethernet header
    bint present
    uint32_t nrx                # receive queues counted (queue index mod nrx)
    uint32_t ntx                # transmit queues counted
    uint64_t *own               # the block in our memory (calloc)
    if_counters_t *hdr          # the block now: own, or a stats file slot
    rx_counters_t *rx           # [nrx], inside the block
    tx_counters_t *tx           # [ntx], inside the block

cdef struct learned_t:
    uint32_t ifindex
    uint32_t ip
    uint8_t mac[6]

# One frame of the burst (64 bytes: pointers, then counts).  A frame
# ip4-fast forwarded has only what transmit reads: data, len, tail_*, out
# (and segs, nsegs when tail_len is not 0).
cdef struct pkt_t:
    uint8_t *buf                # arena slot; the frame as received starts at buf + HEADROOM
    const seg_t *segs           # the whole frame where it was received (ring buffers)
    uint8_t *l3                 # IPv4 header or ARP message
    uint8_t *data               # what leaves: these bytes (private) ...
    uint32_t len
    uint32_t tail_off           # ... then bytes [tail_off, tail_off + tail_len) of the
    uint32_t tail_len           # received frame, straight from segs (0: nothing)
    uint32_t rx_len             # the whole frame's length
    uint32_t copied             # how much of it is in the slot (HDR_COPY, or all)
    uint32_t l3_len             # bytes from l3 on (the IPv4 total length after ip4-input)
    uint32_t nh_ip              # neighbor to resolve
    uint16_t nsegs              # (at most a ring's slots, 2**MEMIF_MAX_LOG2_RING_SIZE)
    uint16_t out                # output interface

# ip4-fast's way out for a route: what a frame's route resolved to, kept
# for the next frames of the burst that take the same route.  A burst keeps
# WAYS of them, direct-mapped by route, so that traffic spread over a few
# routes resolves each once a burst, not once a frame; forward_fast for one
# output, where a run of frames takes one route, keeps one.
cdef struct way_t:
    int64_t route               # FIB result (-1: none yet)
    uint32_t dst                # the destination it was resolved for ...
    bint any_dst                # ... or any (a gateway, or an IP mode output)
    uint16_t out                # output interface
    uint16_t txi                # forward_fast: its index among the pass's outputs
    bint ip_mode                # the output takes bare IP packets
    uint64_t key                # neighbor key of l2hdr (0: none)
    uint8_t l2hdr[16]           # the Ethernet header towards that neighbor


cdef inline void ways_clear(way_t *ways, uint32_t n) noexcept nogil:
    cdef uint32_t i
    for i in range(n):
        ways[i].route = -1
        ways[i].key = 0             # (nbr_key is never 0)


# ------------------------------------------------------------------ helpers

cdef extern from *:
    int __builtin_ctzll(unsigned long long) nogil


cdef inline bint any_is(void **a, uint32_t n, void *x) noexcept:
    cdef uint32_t i
    for i in range(n):
        if a[i] == x:
            return True
    return False


cdef inline uint16_t rd16(const uint8_t *p) noexcept nogil:
    return <uint16_t>((p[0] << 8) | p[1])

cdef inline uint32_t rd32(const uint8_t *p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]

cdef inline void wr16(uint8_t *p, uint16_t v) noexcept nogil:
    p[0] = v >> 8
    p[1] = v & 0xFF

cdef inline void wr32(uint8_t *p, uint32_t v) noexcept nogil:
    p[0] = v >> 24
    p[1] = (v >> 16) & 0xFF
    p[2] = (v >> 8) & 0xFF
    p[3] = v & 0xFF

cdef inline uint64_t header20_sum(const uint8_t *h) noexcept nogil:
    """The plain sum of an IPv4 header without options as five native-order
    32-bit words (for sums_to_all_ones)."""
    cdef uint32_t w0, w1, w2, w3, w4
    memcpy(&w0, h, 4)
    memcpy(&w1, h + 4, 4)
    memcpy(&w2, h + 8, 4)
    memcpy(&w3, h + 12, 4)
    memcpy(&w4, h + 16, 4)
    return <uint64_t>w0 + w1 + w2 + w3 + w4


cdef inline bint header_sum_ok(const uint8_t *h, uint32_t hl) noexcept nogil:
    """The IPv4 header (``hl`` a multiple of 4) sums to 0xFFFF.  Summed as
    native-order 32-bit words: a ones'-complement sum does not depend on
    byte order, and all ones reads the same either way (RFC 1071)."""
    cdef uint64_t s = 0
    cdef uint32_t w, i
    if hl == 20:                # no options: the usual header, unrolled
        return sums_to_all_ones(header20_sum(h))
    for i in range(0, hl, 4):
        memcpy(&w, h + i, 4)
        s += w
    return sums_to_all_ones(s)


cdef inline uint32_t mix(uint64_t k) noexcept nogil:
    return <uint32_t>((k * 0x9E3779B97F4A7C15ULL) >> 32)

cdef inline bint grow(uint8_t **buf, uint64_t *size, uint64_t need) noexcept nogil:
    """Make ``*buf`` hold at least ``need`` bytes (it never shrinks);
    False, and ``*buf`` as it was, when memory runs out."""
    cdef uint8_t *a
    if need <= size[0]:
        return True
    a = <uint8_t *>realloc(buf[0], need)
    if a == NULL:
        return False
    buf[0] = a
    size[0] = need
    return True


cdef inline void stage_out(pkt_t *p, uint8_t *h, uint32_t n, bint ip_mode,
                           const uint8_t *l2hdr) noexcept nogil:
    """What leaves of ``p`` from the arena: ``n`` bytes of IPv4 at ``h``,
    behind the output's Ethernet header ``l2hdr`` unless it is IP mode."""
    if ip_mode:
        p.data = h
        p.len = n
    else:
        p.data = h - ETH_HLEN
        memcpy(p.data, l2hdr, ETH_HLEN)
        p.len = ETH_HLEN + n


cdef inline bint is_broadcast_mac(const uint8_t *m) noexcept nogil:
    return (m[0] & m[1] & m[2] & m[3] & m[4] & m[5]) == 0xFF

cdef uint32_t frame_parts(seg_t *out, const seg_t *segs, uint32_t nsegs,
                          uint64_t off, uint64_t length) noexcept nogil:
    """Bytes [off, off + length) of a frame held in ``segs``, as pieces into
    ``out`` (at most nsegs of them); returns how many."""
    cdef uint32_t s = 0, k = 0
    cdef uint64_t c
    while length and s < nsegs:
        if off >= segs[s].len:
            off -= segs[s].len
        else:
            c = segs[s].len - off
            if c > length:
                c = length
            out[k].ptr = segs[s].ptr + off
            out[k].len = <uint32_t>c
            k += 1
            length -= c
            off = 0
        s += 1
    return k


cdef void frame_copy(uint8_t *dst, const seg_t *segs, uint32_t nsegs,
                     uint64_t off, uint64_t length) noexcept nogil:
    """Copy bytes [off, off + length) of a frame held in ``segs`` to dst."""
    cdef uint32_t s = 0
    cdef uint64_t c
    while length and s < nsegs:
        if off >= segs[s].len:
            off -= segs[s].len
        else:
            c = segs[s].len - off
            if c > length:
                c = length
            memcpy(dst, segs[s].ptr + off, c)
            dst += c
            length -= c
            off = 0
        s += 1


cdef uint8_t BROADCAST[6]
memset(BROADCAST, 0xFF, 6)

# ip4-fast's word compares, as loaded from memory whatever the byte order:
# a frame's first 8 bytes masked to the destination MAC, and the EtherType
# of IPv4.
cdef uint64_t MAC8_MASK = 0
memset(&MAC8_MASK, 0xFF, 6)
cdef uint16_t ETHERTYPE_IP4
memcpy(&ETHERTYPE_IP4, b"\x08\x00", 2)
# The checksum update (checksum_add, in memory byte order) for an echo
# request made a reply: ~m + m' of RFC 1624 eqn. 3 as two bytes loaded from
# memory; the word (type, code) goes from 0x0800 to 0x0000, ~m + m' is
# 0xF7FF.  (The TTL's goes with it: inet.pxd's ttl_down.)
cdef uint16_t _word
memcpy(&_word, b"\xf7\xff", 2)
cdef uint32_t ECHO_TO_REPLY = _word


cdef inline void set_checksum(uint8_t *field, uint16_t c) noexcept nogil:
    """Store a checksum computed in memory order (inet.pxd)."""
    memcpy(field, &c, 2)


cdef inline uint32_t copy_headers(uint8_t *d, const seg_t *segs, uint32_t nsegs,
                                  uint64_t length) noexcept nogil:
    """Copy the first HDR_COPY bytes of a frame held in ``segs`` (all of it
    when shorter) to d; returns how many.  The usual cases are fixed-size
    copies the compiler inlines: a frame of 64 to 127 bytes as two 64-byte
    copies that overlap; of a longer first buffer only FAST_COPY bytes,
    what ip4-fast reads (copy_rest completes it for the general graph)."""
    cdef uint32_t s, c, copied = 0
    cdef uint64_t left
    if segs[0].len >= HDR_COPY:
        memcpy(d, segs[0].ptr, FAST_COPY)
        return FAST_COPY
    if nsegs == 1:
        c = segs[0].len         # the whole frame
        if c >= 64:
            memcpy(d, segs[0].ptr, 64)
            if c > 64:
                memcpy(d + c - 64, segs[0].ptr + c - 64, 64)
        elif c:
            memcpy(d, segs[0].ptr, c)
        return c
    left = HDR_COPY if length > HDR_COPY else length
    for s in range(nsegs):
        c = segs[s].len if segs[s].len < left else <uint32_t>left
        memcpy(d, segs[s].ptr, c)
        d += c
        copied += c
        left -= c
        if left == 0:
            break
    return copied



cdef inline uint32_t copy_rest(uint8_t *d, const seg_t *segs, uint32_t copied,
                               uint64_t length) noexcept nogil:
    """After copy_headers: the rest of the first HDR_COPY bytes when it
    copied only FAST_COPY of them; returns how many the slot holds now."""
    if copied < length and copied < HDR_COPY:      # (only a first buffer of HDR_COPY or more)
        memcpy(d + FAST_COPY, segs[0].ptr + FAST_COPY, HDR_COPY - FAST_COPY)
        return HDR_COPY
    return copied

cdef inline Py_ssize_t block_bytes(uint32_t nrx, uint32_t ntx) noexcept nogil:
    return sizeof(if_counters_t) + nrx * sizeof(rx_counters_t) + ntx * sizeof(tx_counters_t)


cdef rx_counters_t _rx_layout
RX_DROPS_OFFSET = <char *>&_rx_layout.drops[0] - <char *>&_rx_layout  # tests check schema.IP4_RX


def counter_block_size(uint32_t rx_queues, uint32_t tx_queues):
    """Bytes of an interface's counter block (Router.add_interface with
    these queue counts): the size of its stats file slot."""
    return block_bytes(rx_queues, tx_queues)


def counters_from_block(values, uint32_t nrx, uint32_t ntx, rx_queues=None, tx_queues=None):
    """Router.counters() of an interface from its counter block's u64s (as
    StatsFile.read_slot gives them): ``nrx``/``ntx`` the queue counts the
    block was made for, ``rx_queues``/``tx_queues`` how many to report."""
    from memifx.stats.schema import IP4_LINK_DOWN, IP4_RX, IP4_TX   # imports this module
    nr, nt = sizeof(rx_counters_t) // 8, sizeof(tx_counters_t) // 8
    rx, tx = [], []
    for q in range(min(nrx if rx_queues is None else rx_queues, nrx)):
        rx.append(IP4_RX.nested(values[1 + q * nr:1 + (q + 1) * nr]))
    base = 1 + nrx * nr
    for q in range(min(ntx if tx_queues is None else tx_queues, ntx)):
        tx.append(IP4_TX.nested(values[base + q * nt:base + (q + 1) * nt]))
    return {"rx": rx, "tx": tx, IP4_LINK_DOWN: values[0]}


cdef class Router(CountedNode):
    """Interfaces, neighbors and the node graph of one IPv4 router.

    ``Router(fib, neighbors=None)``: the FIB and the NeighborTable to read
    (a new private table if None); in a worker both are read-only views.
    Counter block i (memifx/counted.pyx) is interface i's counters."""
    cdef Fib fib
    cdef iface_t ifs[MAX_IF]
    cdef readonly uint32_t nif
    # neighbor table (shared memory; read-only in a worker)
    cdef readonly NeighborTable neighbor_table
    cdef const nbr_entry_t *nbr
    cdef uint32_t nbr_mask
    # ARP replies for the control plane
    cdef learned_t learned[LEARN_MAX]
    cdef uint32_t nlearned
    # rate limits
    cdef uint64_t pend_key[PENDING_SIZE]
    cdef uint64_t pend_ms[PENDING_SIZE]
    cdef uint64_t now_ms
    cdef uint64_t last_ms
    cdef uint32_t arp_tokens
    cdef uint32_t icmp_tokens
    # the burst in flight
    cdef uint8_t *arena
    cdef uint64_t arena_size
    cdef uint8_t *whole             # packets ip4-local needs whole (echo requests)
    cdef uint64_t whole_size
    cdef seg_t *parts               # interface-output's pieces (Queue.tx_copy_parts)
    cdef uint32_t parts_size
    cdef uint32_t nparts[MAX_BURST]
    cdef bint tails                 # some frame of the burst leaves with part of it from the ring
    cdef int one_out                # every frame of V_TX leaves by this interface (-1: not known)
    # forward_fast's outputs per input interface: where ip4-fast sent the
    # frames of the last burst that came in there that it forwarded (bit
    # o for interface o; 0: none yet)
    cdef uint64_t fast_outs[MAX_IF]
    cdef uint64_t walk_outs         # where take_frames' ip4-fast sent frames, this burst
    cdef frame_t bytes_frames[MAX_BURST]    # process(): the frames given, as gather lays them out
    cdef seg_t bytes_segs[MAX_BURST]    # process(): the frames given
    cdef pkt_t pkts[MAX_BURST]
    cdef uint32_t npkts
    cdef uint16_t vec[N_VECTORS][MAX_BURST]
    cdef uint32_t nvec[N_VECTORS]
    cdef uint16_t out_idx[MAX_IF][MAX_BURST]
    cdef uint32_t out_n[MAX_IF]

    def __cinit__(self, Fib fib not None, NeighborTable neighbors=None):
        self.fib = fib
        self.neighbor_table = neighbors if neighbors is not None else NeighborTable()
        self.nbr = self.neighbor_table.entries
        self.nbr_mask = self.neighbor_table.mask
        cdef uint32_t i
        self.arp_tokens = self.icmp_tokens = TOKENS_MAX

    def __dealloc__(self):
        cdef uint32_t i
        for i in range(MAX_IF):
            free(self.ifs[i].own)
        free(self.arena)
        free(self.whole)
        free(self.parts)

    # ------------------------------------------------------ control plane

    def add_interface(self, uint32_t ifindex, mac, uint32_t ip, bint ip_mode=False,
                      uint32_t rx_queues=MAX_QUEUES, uint32_t tx_queues=MAX_QUEUES):
        """Interface ``ifindex`` (0..63, dense from 0) with our MAC and address;
        counters for ``rx_queues`` receive and ``tx_queues`` transmit queues
        (queue index modulo the count; 1..256).  Adding it again changes the
        addresses and keeps the counters."""
        if ifindex >= MAX_IF:
            raise ValueError("at most %d interfaces" % MAX_IF)
        if len(mac) != 6:
            raise ValueError("a MAC is 6 bytes")
        if not 1 <= rx_queues <= MAX_QUEUES or not 1 <= tx_queues <= MAX_QUEUES:
            raise ValueError("1 to %d queues" % MAX_QUEUES)
        cdef iface_t *f = &self.ifs[ifindex]
        if not f.present:
            f.own = <uint64_t *>calloc(1, block_bytes(rx_queues, tx_queues))
            if f.own == NULL:
                raise MemoryError()
            f.nrx, f.ntx = rx_queues, tx_queues
            self.block_moved(ifindex, f.own)
        for i in range(6):
            f.mac[i] = mac[i]
        f.mac8 = 0
        memcpy(&f.mac8, f.mac, 6)
        f.ip = ip
        f.ip_mode = ip_mode
        f.present = True
        if ifindex >= self.nif:
            self.nif = ifindex + 1

    def add_neighbor(self, uint32_t ifindex, uint32_t ip, const uint8_t[:] mac):
        """Set the MAC of neighbor ``ip`` on interface ``ifindex`` (in the
        neighbor table, which workers sharing it see at once)."""
        self.neighbor_table.add(ifindex, ip, mac)

    def remove_neighbor(self, uint32_t ifindex, uint32_t ip):
        """Forget a neighbor; returns whether it was there."""
        return self.neighbor_table.discard(ifindex, ip)

    def neighbor(self, uint32_t ifindex, uint32_t ip):
        """The MAC of a neighbor as bytes, or None."""
        return self.neighbor_table.get(ifindex, ip)

    def neighbors(self):
        """[(ifindex, ip, mac bytes)] in no particular order."""
        return self.neighbor_table.items()

    @property
    def nbr_count(self):
        return len(self.neighbor_table)

    def take_arp(self):
        """ARP replies received since the last call: [(ifindex, sender ip, sender mac)].
        Whether to learn them is the control plane's decision."""
        out = [(self.learned[i].ifindex, self.learned[i].ip,
                PyBytes_FromStringAndSize(<const char *>self.learned[i].mac, 6)) for i in range(self.nlearned)]
        self.nlearned = 0
        return out

    def set_time(self, uint64_t now_ms):
        """The clock for rate limits, set once per pass (monotonic milliseconds)."""
        cdef uint64_t add
        if now_ms > self.last_ms:
            add = now_ms - self.last_ms
            self.arp_tokens = <uint32_t>min(TOKENS_MAX, self.arp_tokens + add)
            self.icmp_tokens = <uint32_t>min(TOKENS_MAX, self.icmp_tokens + add)
            self.last_ms = now_ms
        self.now_ms = now_ms

    # ------------------------------------------------------------ nodes

    cdef inline void drop(self, rx_counters_t *rc, int reason) noexcept nogil:
        rc.drops[reason] += 1

    cdef inline void push(self, int v, uint32_t k) noexcept nogil:
        self.vec[v][self.nvec[v]] = <uint16_t>k
        self.nvec[v] += 1

    cdef bint reserve(self, uint64_t need) noexcept nogil:
        """The header arena: room for ``need`` bytes."""
        return grow(&self.arena, &self.arena_size, need)

    cdef bint reserve_whole(self, uint64_t need) noexcept nogil:
        """The area for whole echo requests: room for ``need`` bytes."""
        return grow(&self.whole, &self.whole_size, need)

    cdef inline uint64_t slot_size(self, uint64_t length) noexcept nogil:
        if length < MIN_ROOM:
            length = MIN_ROOM
        return (HEADROOM + length + 63) & ~(<uint64_t>63)

    cdef void reset_vectors(self) noexcept nogil:
        """An empty burst: every vector empty, nothing staged."""
        cdef uint32_t v
        for v in range(N_VECTORS):
            self.nvec[v] = 0
        self.tails = False
        self.one_out = -1
        self.npkts = 0

    cdef uint32_t memif_input(self, Queue rxq, uint32_t max_frames, uint32_t ifindex,
                              rx_counters_t *rc) noexcept nogil:
        """Gather a burst from the receive ring and take it in (frames_input);
        returns the frames gathered (ring-level drops included).  The caller
        commits them (rxq.commit) once interface-output has copied them out."""
        cdef uint32_t n, i
        self.reset_vectors()
        n = rxq.gather(max_frames)
        if not self.reserve(<uint64_t>n * self.slot_size(HDR_COPY)):
            for i in range(n):
                if rxq.frames[i].drop < 0:
                    rc.packets += 1
                    rc.drops[D_NO_MEMORY] += 1
            return n
        self.frames_input(rxq.frames, rxq.segs, n, ifindex, rc)
        return n

    cdef uint32_t fast_forward(self, Queue rxq, void **txqs, const uint16_t *outs,
                               uint32_t nout, uint32_t ifindex, rx_counters_t *rc,
                               uint32_t max_frames, uint64_t *used) noexcept nogil:
        """forward_fast, made for the receiving interface's kind (Ethernet
        or IP mode) and for one output or several."""
        if self.ifs[ifindex].ip_mode:
            if nout == 1:
                return forward_fast(self, rxq, txqs, outs, 1, ifindex, rc, max_frames, used,
                                    <ip_input_t *>NULL, <one_output_t *>NULL)
            return forward_fast(self, rxq, txqs, outs, nout, ifindex, rc, max_frames, used,
                                <ip_input_t *>NULL, <outputs_t *>NULL)
        if nout == 1:
            return forward_fast(self, rxq, txqs, outs, 1, ifindex, rc, max_frames, used,
                                <ethernet_input_t *>NULL, <one_output_t *>NULL)
        return forward_fast(self, rxq, txqs, outs, nout, ifindex, rc, max_frames, used,
                            <ethernet_input_t *>NULL, <outputs_t *>NULL)

    cdef void frames_input(self, const frame_t *frames, const seg_t *segs, uint32_t n,
                           uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """memif-input and ip4-fast in one walk over a gathered burst (the
        arena reserved for it): take_frames, made for the receiving
        interface's kind (Ethernet or IP mode)."""
        if n == 0:
            return
        if self.ifs[ifindex].ip_mode:
            take_frames(self, frames, segs, n, ifindex, rc, <ip_input_t *>NULL)
        else:
            take_frames(self, frames, segs, n, ifindex, rc, <ethernet_input_t *>NULL)

    cdef void ethernet_input(self, uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """Frames for our MAC (or broadcast): IPv4 to ip4-input, ARP to arp-input."""
        cdef iface_t *rif = &self.ifs[ifindex]
        cdef uint32_t j, k
        cdef uint16_t et
        cdef pkt_t *p
        cdef uint8_t *d
        for j in range(self.nvec[V_INPUT]):
            k = self.vec[V_INPUT][j]
            p = &self.pkts[k]
            d = p.buf + HEADROOM
            if p.rx_len < ETH_HLEN:
                self.drop(rc, D_SHORT)
                continue
            if memcmp(d, rif.mac, 6) != 0 and not is_broadcast_mac(d):
                self.drop(rc, D_WRONG_MAC)
                continue
            p.l3 = d + ETH_HLEN
            p.l3_len = p.rx_len - ETH_HLEN
            et = rd16(d + 12)
            if et == 0x0800:
                self.push(V_IP4_INPUT, k)
            elif et == 0x0806:
                self.push(V_ARP, k)
            else:
                self.drop(rc, D_NOT_IPV4)

    cdef void ip_mode_input(self, rx_counters_t *rc) noexcept nogil:
        """Bare IP packets: the version nibble says IPv4 or not."""
        cdef uint32_t j, k, v
        cdef pkt_t *p
        for j in range(self.nvec[V_INPUT]):
            k = self.vec[V_INPUT][j]
            p = &self.pkts[k]
            p.l3 = p.buf + HEADROOM
            p.l3_len = p.rx_len
            if p.rx_len == 0:
                self.drop(rc, D_SHORT)
                continue
            v = p.l3[0] >> 4
            if v == 4:
                self.push(V_IP4_INPUT, k)
            elif v == 6:
                self.drop(rc, D_NOT_IPV4)
            else:
                self.drop(rc, D_BAD_VERSION)

    cdef void arp_input(self, uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """Answer requests for our address in place; queue replies for the control plane."""
        cdef iface_t *rif = &self.ifs[ifindex]
        cdef uint32_t j, k, spa
        cdef uint16_t op
        cdef pkt_t *p
        cdef uint8_t *a
        cdef uint8_t *e
        cdef learned_t *l
        for j in range(self.nvec[V_ARP]):
            k = self.vec[V_ARP][j]
            p = &self.pkts[k]
            a = p.l3
            if p.l3_len < ARP_LEN or rd16(a) != 1 or rd16(a + 2) != 0x0800 \
                    or a[4] != 6 or a[5] != 4:
                self.drop(rc, D_BAD_ARP)
                continue
            op = rd16(a + 6)
            spa = rd32(a + 14)
            if op == 1:
                if rif.ip == 0 or rd32(a + 24) != rif.ip:
                    self.drop(rc, D_ARP_NOT_OURS)
                    continue
                memcpy(a + 18, a + 8, 6)            # target hw = the asker
                wr32(a + 24, spa)                   # target ip = the asker
                memcpy(a + 8, rif.mac, 6)           # sender = us
                wr32(a + 14, rif.ip)
                wr16(a + 6, 2)
                e = a - ETH_HLEN
                memcpy(e, a + 18, 6)
                memcpy(e + 6, rif.mac, 6)
                p.data = e
                p.len = ETH_HLEN + ARP_LEN
                p.out = <uint16_t>ifindex
                rc.arp_replies += 1
                self.push(V_TX, k)
            elif op == 2:
                if self.nlearned == LEARN_MAX:
                    self.drop(rc, D_ARP_QUEUE_FULL)
                    continue
                l = &self.learned[self.nlearned]
                l.ifindex = ifindex
                l.ip = spa
                memcpy(l.mac, a + 8, 6)
                self.nlearned += 1
                rc.arp_to_control += 1
            else:
                self.drop(rc, D_BAD_ARP)

    cdef void ip4_input(self, rx_counters_t *rc) noexcept nogil:
        """Header sanity: version, header length, total length, checksum."""
        cdef uint32_t j, k, hl, tot
        cdef pkt_t *p
        cdef uint8_t *h
        for j in range(self.nvec[V_IP4_INPUT]):
            k = self.vec[V_IP4_INPUT][j]
            p = &self.pkts[k]
            h = p.l3
            if p.l3_len < 20:
                self.drop(rc, D_SHORT)
                continue
            if h[0] >> 4 != 4:
                self.drop(rc, D_BAD_VERSION)
                continue
            hl = (h[0] & 0xF) * 4
            if hl < 20 or hl > p.l3_len:
                self.drop(rc, D_BAD_HEADER_LEN)
                continue
            tot = rd16(h + 2)
            if tot < hl or tot > p.l3_len:
                self.drop(rc, D_BAD_LENGTH)
                continue
            if not header_sum_ok(h, hl):
                self.drop(rc, D_BAD_CHECKSUM)
                continue
            p.l3_len = tot                          # Ethernet padding stays behind
            self.push(V_IP4_LOOKUP, k)

    cdef void ip4_lookup(self, rx_counters_t *rc) noexcept nogil:
        """Longest-prefix match on the destination: local, or rewrite towards a next hop."""
        cdef const uint32_t *t24 = self.fib.tbl24
        cdef const uint32_t *t8 = self.fib.tbl8
        cdef const nexthop_t *nhs = self.fib.nh
        cdef const nexthop_t *nh
        cdef uint32_t j, k, dst
        cdef int64_t r
        cdef pkt_t *p
        for j in range(self.nvec[V_IP4_LOOKUP]):
            k = self.vec[V_IP4_LOOKUP][j]
            p = &self.pkts[k]
            dst = rd32(p.l3 + 16)
            r = fib_lookup(t24, t8, dst)
            if r < 0:
                self.drop(rc, D_NO_ROUTE)
                continue
            nh = &nhs[r]
            if nh.kind == NH_LOCAL:
                self.push(V_IP4_LOCAL, k)
            elif nh.kind == NH_BROADCAST:
                rc.local += 1
            elif nh.ifindex >= self.nif or not self.ifs[nh.ifindex].present:
                self.drop(rc, D_NO_ROUTE)
            else:
                p.out = nh.ifindex
                p.nh_ip = nh.gw if nh.kind == NH_GATEWAY else dst
                self.push(V_IP4_REWRITE, k)

    cdef inline bint is_echo_request(self, pkt_t *p) noexcept nogil:
        """ICMP echo request (reads the IPv4 header and the ICMP type and code,
        all in the arena)."""
        cdef uint8_t *h = p.l3
        cdef uint32_t hl = (h[0] & 0xF) * 4
        return h[9] == 1 and p.l3_len - hl >= 8 and h[hl] == 8 and h[hl + 1] == 0

    cdef bint make_whole(self, rx_counters_t *rc) noexcept nogil:
        """Copy the echo requests in ip4-local's vector whole into private
        memory (their ICMP checksum covers the data, and the reply carries it);
        False (all counted dropped) if there is no memory for it."""
        cdef uint32_t j, k, l3off, n
        cdef uint64_t need = 0, off = 0
        cdef pkt_t *p
        cdef uint8_t *d
        for j in range(self.nvec[V_IP4_LOCAL]):
            p = &self.pkts[self.vec[V_IP4_LOCAL][j]]
            if p.l3 - (p.buf + HEADROOM) + p.l3_len > p.copied and self.is_echo_request(p):
                need += self.slot_size(p.l3 - (p.buf + HEADROOM) + p.l3_len)
        if need == 0:
            return True
        if not self.reserve_whole(need):
            for j in range(self.nvec[V_IP4_LOCAL]):
                self.drop(rc, D_NO_MEMORY)
            return False
        for j in range(self.nvec[V_IP4_LOCAL]):
            p = &self.pkts[self.vec[V_IP4_LOCAL][j]]
            l3off = <uint32_t>(p.l3 - (p.buf + HEADROOM))
            n = l3off + p.l3_len
            if n <= p.copied or not self.is_echo_request(p):
                continue
            d = self.whole + off
            memcpy(d + HEADROOM, p.buf + HEADROOM, p.copied)
            frame_copy(d + HEADROOM + p.copied, p.segs, p.nsegs, p.copied, n - p.copied)
            p.buf = d
            p.l3 = d + HEADROOM + l3off
            p.copied = n
            off += self.slot_size(n)
        return True

    cdef void ip4_local(self, uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """To one of our addresses: answer ICMP echo, count the rest."""
        cdef iface_t *rif = &self.ifs[ifindex]
        cdef uint32_t j, k, hl, tot, a
        cdef uint16_t c
        cdef pkt_t *p
        cdef uint8_t *h
        cdef uint8_t *icmp
        cdef uint8_t *e
        if self.nvec[V_IP4_LOCAL] == 0 or not self.make_whole(rc):
            return
        for j in range(self.nvec[V_IP4_LOCAL]):
            k = self.vec[V_IP4_LOCAL][j]
            p = &self.pkts[k]
            h = p.l3
            hl = (h[0] & 0xF) * 4
            tot = p.l3_len
            icmp = h + hl
            if not self.is_echo_request(p):
                rc.local += 1
                continue
            if inet_fold(inet_sum(icmp, tot - hl)) != 0xFFFF:
                self.drop(rc, D_BAD_ICMP)
                continue
            # Echo reply: addresses swapped, a fresh TTL, type 8 -> 0.
            a = rd32(h + 12)
            memcpy(h + 12, h + 16, 4)
            wr32(h + 16, a)
            h[8] = 64
            wr16(h + 10, 0)
            set_checksum(h + 10, inet_checksum(h, hl))
            icmp[0] = 0
            memcpy(&c, icmp + 2, 2)
            set_checksum(icmp + 2, checksum_add(c, ECHO_TO_REPLY))
            p.out = <uint16_t>ifindex
            if rif.ip_mode:
                p.data = h
                p.len = tot
            else:
                e = h - ETH_HLEN
                memcpy(e, e + 6, 6)
                memcpy(e + 6, rif.mac, 6)
                p.data = e
                p.len = ETH_HLEN + tot
            rc.echo_replies += 1
            self.push(V_TX, k)

    cdef void ip4_rewrite(self, rx_counters_t *rc) noexcept nogil:
        """TTL, checksum (incremental) and the Ethernet header of the output interface."""
        cdef uint32_t j, k
        cdef pkt_t *p
        cdef iface_t *o
        cdef uint64_t key, last_key = 0         # 0 is no key (nbr_key)
        cdef uint8_t l2hdr[16]                  # the Ethernet header towards last_key
        for j in range(self.nvec[V_IP4_REWRITE]):
            k = self.vec[V_IP4_REWRITE][j]
            p = &self.pkts[k]
            if p.l3[8] <= 1:
                self.drop(rc, D_TTL)
                self.push(V_ICMP_ERROR, k)
                continue
            o = &self.ifs[p.out]
            if not o.ip_mode:
                # One lookup per run of frames to the same next hop in the
                # burst (the burst sees the table as it was at that lookup).
                key = nbr_key(p.out, p.nh_ip)
                if key != last_key:
                    if not self.neighbor_header(key, o, l2hdr):
                        last_key = 0
                        self.drop(rc, D_ARP_UNRESOLVED)
                        self.push(V_ARP_REQUEST, k)
                        continue
                    last_key = key
            self.rewrite(p, o, l2hdr)
            rc.forwarded += 1
            self.push(V_TX, k)

    cdef bint find_way(self, way_t *w, int64_t route, uint32_t dst) noexcept nogil:
        """ip4-fast's way out for route ``route`` (a FIB result) to ``dst``
        into w: a connected or gateway route out of a present interface
        whose neighbor is known (or that is in IP mode); False (w.route -1)
        if it is not one."""
        cdef const nexthop_t *nh = &self.fib.nh[route]
        cdef const iface_t *o
        cdef uint64_t key
        w.route = -1
        if (nh.kind != NH_CONNECTED and nh.kind != NH_GATEWAY) or nh.ifindex >= self.nif \
                or not self.ifs[nh.ifindex].present:
            return False
        o = &self.ifs[nh.ifindex]
        if not o.ip_mode:
            key = nbr_key(nh.ifindex, nh.gw if nh.kind == NH_GATEWAY else dst)
            if key != w.key:
                if not self.neighbor_header(key, o, w.l2hdr):
                    w.key = 0
                    return False
                w.key = key
        w.route = route
        w.dst = dst
        w.out = nh.ifindex
        w.ip_mode = o.ip_mode
        w.any_dst = nh.kind == NH_GATEWAY or o.ip_mode   # the same for any dst
        return True

    cdef inline bint neighbor_header(self, uint64_t key, const iface_t *o,
                                     uint8_t *l2hdr) noexcept nogil:
        """The Ethernet header from o to neighbor ``key`` into l2hdr (14
        bytes); False if the neighbor is unknown."""
        cdef uint64_t mac
        if not nbr_find(self.nbr, self.nbr_mask, key, &mac):
            return False
        memcpy(l2hdr, &mac, 6)
        memcpy(l2hdr + 6, o.mac, 6)
        l2hdr[12] = 0x08
        l2hdr[13] = 0x00
        return True

    cdef inline void rewrite(self, pkt_t *p, const iface_t *o, const uint8_t *l2hdr) noexcept nogil:
        """Forward p out of o: TTL (above 1) minus one, the checksum updated,
        the Ethernet header ``l2hdr`` in front (unless o is in IP mode), and
        what leaves from where."""
        cdef uint8_t *h = p.l3
        cdef uint32_t l3off, n, w
        memcpy(&w, h + 8, 4)
        w = ttl_down(w)
        memcpy(h + 8, &w, 4)
        # What the arena holds leaves from there (the whole packet when
        # it is short); of a longer one, the IPv4 header, and the rest
        # comes straight from the receive ring.
        l3off = <uint32_t>(h - (p.buf + HEADROOM))
        if l3off + p.l3_len <= p.copied:
            n = p.l3_len
        else:
            n = (h[0] & 0xF) * 4
            p.tail_off = l3off + n
            p.tail_len = p.l3_len - n
            self.tails = True
        stage_out(p, h, n, o.ip_mode, l2hdr)

    cdef void ip4_icmp_error(self, uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """ICMP time exceeded back to the sender, out the interface it came in on
        (rate limited; never about an ICMP error, a fragment or a group/broadcast source)."""
        cdef iface_t *rif = &self.ifs[ifindex]
        cdef uint32_t j, k, hl, tot, q, src
        cdef uint8_t orig[68]
        cdef pkt_t *p
        cdef uint8_t *h
        cdef uint8_t *icmp
        cdef uint8_t *e
        for j in range(self.nvec[V_ICMP_ERROR]):
            k = self.vec[V_ICMP_ERROR][j]
            p = &self.pkts[k]
            h = p.l3
            hl = (h[0] & 0xF) * 4
            tot = p.l3_len
            src = rd32(h + 12)
            if rif.ip == 0 or src == 0 or src >= 0xE0000000u or rd16(h + 6) & 0x1FFF:
                continue
            if h[9] == 1 and (tot <= hl or (h[hl] != 0 and h[hl] != 8)):
                continue                # only about echo, never about an ICMP error
            if self.icmp_tokens == 0:
                continue
            self.icmp_tokens -= 1
            q = tot if tot < hl + 8 else hl + 8
            memcpy(orig, h, q)
            h[0] = 0x45
            h[1] = 0
            wr16(h + 2, 28 + q)
            wr32(h + 4, 0)              # identification, flags, fragment offset
            h[8] = 64
            h[9] = 1
            wr16(h + 10, 0)
            wr32(h + 12, rif.ip)
            wr32(h + 16, src)
            set_checksum(h + 10, inet_checksum(h, 20))
            icmp = h + 20
            icmp[0] = 11                # time exceeded
            icmp[1] = 0                 # in transit
            wr16(icmp + 2, 0)
            wr32(icmp + 4, 0)
            memcpy(icmp + 8, orig, q)
            set_checksum(icmp + 2, inet_checksum(icmp, 8 + q))
            p.out = <uint16_t>ifindex
            if rif.ip_mode:
                p.data = h
                p.len = 28 + q
            else:
                e = h - ETH_HLEN        # back to whoever sent it
                memcpy(e, e + 6, 6)
                memcpy(e + 6, rif.mac, 6)
                e[12] = 0x08
                e[13] = 0x00
                p.data = e
                p.len = ETH_HLEN + 28 + q
            rc.icmp_errors_sent += 1
            self.push(V_TX, k)

    cdef void arp_request(self, rx_counters_t *rc) noexcept nogil:
        """Ask for an unresolved next hop, in the dropped packet's slot
        (one request per next hop per ARP_RETRY_MS, and a global budget)."""
        cdef uint32_t j, k, s
        cdef uint64_t key
        cdef pkt_t *p
        cdef iface_t *o
        cdef uint8_t *d
        for j in range(self.nvec[V_ARP_REQUEST]):
            k = self.vec[V_ARP_REQUEST][j]
            p = &self.pkts[k]
            o = &self.ifs[p.out]
            key = nbr_key(p.out, p.nh_ip)
            s = mix(key) & (PENDING_SIZE - 1)
            if self.pend_key[s] == key and self.now_ms - self.pend_ms[s] < ARP_RETRY_MS:
                continue
            if self.arp_tokens == 0:
                continue
            self.arp_tokens -= 1
            self.pend_key[s] = key
            self.pend_ms[s] = self.now_ms
            d = p.buf + HEADROOM
            memcpy(d, BROADCAST, 6)
            memcpy(d + 6, o.mac, 6)
            wr16(d + 12, 0x0806)
            wr16(d + 14, 1)             # Ethernet
            wr16(d + 16, 0x0800)        # IPv4
            d[18] = 6
            d[19] = 4
            wr16(d + 20, 1)             # request
            memcpy(d + 22, o.mac, 6)
            wr32(d + 28, o.ip)
            memset(d + 32, 0, 6)
            wr32(d + 38, p.nh_ip)
            p.data = d
            p.len = ETH_HLEN + ARP_LEN
            rc.arp_requests_sent += 1
            self.push(V_TX, k)

    cdef void tx_in_arrival_order(self) noexcept nogil:
        """Put the transmit vector back in the order the frames came in
        (ip4-fast and the general graph each push in their own order): a
        flow's packets leave in order whichever nodes they took."""
        cdef uint8_t sent[MAX_BURST]
        cdef uint32_t j, k, n = 0
        memset(sent, 0, self.npkts)
        for j in range(self.nvec[V_TX]):
            sent[self.vec[V_TX][j]] = 1
        for k in range(self.npkts):
            if sent[k]:
                self.vec[V_TX][n] = <uint16_t>k
                n += 1

    cdef void interface_output(self) noexcept nogil:
        """Sort the transmit vector by output interface (order kept within
        each); when ip4-fast saw every frame leave by one interface
        (one_out), that interface's share is the vector as it is."""
        cdef uint32_t j, k, o, n = self.nvec[V_TX]
        for o in range(self.nif):
            self.out_n[o] = 0
        if self.one_out >= 0:
            memcpy(self.out_idx[self.one_out], self.vec[V_TX], n * sizeof(uint16_t))
            self.out_n[self.one_out] = n
            return
        for j in range(n):
            k = self.vec[V_TX][j]
            o = self.pkts[k].out
            self.out_idx[o][self.out_n[o]] = <uint16_t>k
            self.out_n[o] += 1

    cdef void run(self, uint32_t ifindex, rx_counters_t *rc) noexcept nogil:
        """The general graph on what frames_input left it (V_INPUT), then
        interface-output."""
        if self.nvec[V_INPUT]:
            if self.ifs[ifindex].ip_mode:
                self.ip_mode_input(rc)
            else:
                self.ethernet_input(ifindex, rc)
                self.arp_input(ifindex, rc)
            self.ip4_input(rc)
            self.ip4_lookup(rc)
            self.ip4_local(ifindex, rc)
            self.ip4_rewrite(rc)
            self.ip4_icmp_error(ifindex, rc)
            self.arp_request(rc)
            self.tx_in_arrival_order()
            self.one_out = -1
        self.interface_output()

    cdef void transmit(self, uint32_t o, Queue txq) noexcept nogil:
        """Interface o's share of the burst into one of its transmit rings."""
        cdef tx_counters_t *tc = &self.ifs[o].tx[<uint32_t>txq.index % self.ifs[o].ntx]
        cdef uint32_t k
        cdef uint32_t n = self.out_n[o], sent = 0, m, j, taken
        cdef const pkt_t *p
        cdef seg_t *q
        # in locals: a store into the tables could, for all the compiler
        # knows, change self or txq
        cdef const pkt_t *pkts = self.pkts
        cdef const uint16_t *idx
        cdef seg_t *parts = self.parts
        cdef uint32_t *nparts = self.nparts
        cdef const uint8_t **src = txq.src
        cdef uint32_t *lens = txq.lens
        # o's share is every frame of the burst, in order (frame j is pkts[j])
        cdef bint in_order = <int>o == self.one_out and n == self.npkts
        while sent < n:
            m = n - sent
            if m > txq.size:
                m = txq.size
            idx = &self.out_idx[o][sent]
            if self.tails:
                # what the arena holds, then the rest of the frame from the receive ring
                q = parts
                for j in range(m):
                    p = &pkts[sent + j] if in_order else &pkts[idx[j]]
                    lens[j] = p.len + p.tail_len
                    q.ptr = <char *>p.data
                    q.len = p.len
                    q += 1
                    if p.tail_len == 0:
                        nparts[j] = 1
                    elif p.nsegs == 1:
                        q.ptr = p.segs[0].ptr + p.tail_off
                        q.len = p.tail_len
                        q += 1
                        nparts[j] = 2
                    else:
                        k = frame_parts(q, p.segs, p.nsegs, p.tail_off, p.tail_len)
                        q += k
                        nparts[j] = 1 + k
                taken = txq.tx_copy_parts(m, parts, nparts)
            elif in_order:
                p = &pkts[sent]
                for j in range(m):
                    src[j] = p[j].data
                    lens[j] = p[j].len
                taken = txq.tx_copy(m)
            else:
                for j in range(m):
                    p = &pkts[idx[j]]
                    src[j] = p.data
                    lens[j] = p.len
                taken = txq.tx_copy(m)
            tc.bytes += txq.tx_bytes
            tc.packets += taken - txq.tx_dropped
            tc.too_long += txq.tx_dropped
            sent += taken
            if taken < m:
                break
        if txq.fault or txq.closed:
            tc.fault += n - sent
        else:
            tc.ring_full += n - sent

    # ------------------------------------------------------- front ends

    def poll(self, uint32_t ifindex, Queue rxq not None, list txqs not None,
             uint32_t max_frames=256, uint32_t rounds=1):
        """Up to ``rounds`` bursts from receive queue ``rxq`` of interface
        ``ifindex``; ``txqs[o]`` is the transmit Queue to use for interface o
        (None while it is down).  Returns frames received."""
        cdef rx_counters_t *rc
        cdef uint32_t n = 0, r, o, total = 0, u, nq, j
        cdef Queue txq
        # the pass's outputs: their Queues (a reference held for the pass)
        cdef void *fast_q[MAX_FAST]
        cdef uint16_t fast_o[MAX_FAST]
        cdef uint64_t outs, used
        if ifindex >= self.nif or not self.ifs[ifindex].present:
            raise ValueError("no interface %d" % ifindex)
        rc = &self.ifs[ifindex].rx[<uint32_t>rxq.index % self.ifs[ifindex].nrx]
        if max_frames > MAX_BURST:
            max_frames = MAX_BURST
        if max_frames > rxq.size:
            max_frames = rxq.size
        self.reserve_parts(MAX_BURST + rxq.size)    # a piece per frame + one per segment
        for r in range(rounds):
            # First the ring-to-ring pass, out of the interfaces ip4-fast
            # sent the last burst from this one to (forward_fast, at most
            # MAX_FAST of them); memif_input and the graph take what it
            # leaves.  Where ip4-fast's frames went this time, in the pass or
            # in take_frames, is where the next burst's pass goes.
            outs = self.fast_outs[ifindex]
            nq = 0
            u = n = 0
            used = 0
            self.walk_outs = 0
            try:
                while outs and nq < MAX_FAST:
                    o = <uint32_t>__builtin_ctzll(outs)
                    outs &= outs - 1
                    txq = txqs[o] if o < len(txqs) else None
                    if txq is None or any_is(fast_q, nq, <void *>txq):
                        continue        # (down; or a Queue two interfaces share)
                    Py_INCREF(txq)
                    fast_q[nq] = <void *>txq
                    fast_o[nq] = <uint16_t>o
                    nq += 1
                with nogil:
                    if nq:
                        u = self.fast_forward(rxq, fast_q, fast_o, nq, ifindex, rc, max_frames,
                                              &used)
                    if u < max_frames:
                        n = self.memif_input(rxq, max_frames - u, ifindex, rc)
                        self.run(ifindex, rc)
            finally:
                for j in range(nq):
                    Py_XDECREF(<PyObject *>fast_q[j])
            if used | self.walk_outs:
                self.fast_outs[ifindex] = used | self.walk_outs
            total += u
            if n == 0:
                if u == 0:
                    break
                continue
            total += n
            try:
                for o in range(self.nif):
                    if self.out_n[o] == 0:
                        continue
                    txq = txqs[o] if o < len(txqs) else None
                    if txq is None:
                        self.ifs[o].hdr.link_down += self.out_n[o]
                        continue
                    with nogil:
                        self.transmit(o, txq)
            finally:
                # Only now: the frames forwarded were copied out of these slots.
                rxq.commit(n, False)
        return total

    cdef reserve_parts(self, uint32_t need):
        cdef seg_t *a
        if need > self.parts_size:
            a = <seg_t *>realloc(self.parts, need * sizeof(seg_t))
            if a == NULL:
                raise MemoryError()
            self.parts = a
            self.parts_size = need

    def process(self, uint32_t ifindex, frames):
        """Run the graph on frames given as bytes (tests and tools; no rings):
        returns [(output ifindex, frame bytes)] in transmit order."""
        cdef rx_counters_t *rc
        cdef uint32_t n = len(frames), k, o, j
        cdef bytes b
        cdef const uint8_t[:] view
        cdef pkt_t *p
        if ifindex >= self.nif or not self.ifs[ifindex].present:
            raise ValueError("no interface %d" % ifindex)
        if n > MAX_BURST:
            raise ValueError("at most %d frames at once" % MAX_BURST)
        rc = &self.ifs[ifindex].rx[0]
        for f in frames:
            if len(f) > MAX_ROUTED:
                raise ValueError("frame longer than %d bytes" % MAX_ROUTED)
        if not self.reserve(n * self.slot_size(HDR_COPY)):
            raise MemoryError()
        views = [memoryview(f) for f in frames]     # held (no resize) while the graph runs
        for k in range(n):
            view = views[k]
            self.bytes_segs[k].ptr = <char *>&view[0] if view.shape[0] else NULL
            self.bytes_segs[k].len = <uint32_t>view.shape[0]
            self.bytes_frames[k].first_seg = k
            self.bytes_frames[k].nsegs = 1
            self.bytes_frames[k].length = <uint32_t>view.shape[0]
            self.bytes_frames[k].end = k + 1
            self.bytes_frames[k].drop = -1
        with nogil:
            self.reset_vectors()
            self.frames_input(self.bytes_frames, self.bytes_segs, n, ifindex, rc)
            self.run(ifindex, rc)
        out = []
        for j in range(self.nvec[V_TX]):
            p = &self.pkts[self.vec[V_TX][j]]
            b = PyBytes_FromStringAndSize(NULL, p.len + p.tail_len)
            memcpy(PyBytes_AS_STRING(b), p.data, p.len)
            frame_copy(<uint8_t *>PyBytes_AS_STRING(b) + p.len, p.segs, p.nsegs,
                       p.tail_off, p.tail_len)
            out.append((p.out, b))
        return out

    def counters(self, uint32_t ifindex, uint32_t rx_queues=1, uint32_t tx_queues=1):
        """{"rx": [per receive queue], "tx": [per transmit queue], "tx link down": n}."""
        if ifindex >= self.nif or not self.ifs[ifindex].present:
            raise ValueError("no interface %d" % ifindex)
        cdef iface_t *f = &self.ifs[ifindex]
        cdef uint64_t[::1] block = <uint64_t[:block_bytes(f.nrx, f.ntx) // 8]><uint64_t *>f.hdr
        return counters_from_block(list(block), f.nrx, f.ntx, rx_queues, tx_queues)

    # ------------------------------------- counter blocks (counted.pyx)

    cdef Py_ssize_t block_size(self, Py_ssize_t block) except -1:
        if not 0 <= block < self.nif or not self.ifs[block].present:
            raise ValueError("no interface %d" % block)
        return block_bytes(self.ifs[block].nrx, self.ifs[block].ntx)

    cdef uint64_t *block_at(self, Py_ssize_t block) noexcept:
        if not 0 <= block < self.nif or not self.ifs[block].present:
            return NULL
        return <uint64_t *>self.ifs[block].hdr

    cdef void block_moved(self, Py_ssize_t block, uint64_t *at) noexcept:
        cdef iface_t *f = &self.ifs[block]
        f.hdr = <if_counters_t *>at
        f.rx = <rx_counters_t *>(<char *>at + sizeof(if_counters_t))
        f.tx = <tx_counters_t *>(<char *>f.rx + f.nrx * sizeof(rx_counters_t))


cdef extern from "<arpa/inet.h>" nogil:
    uint32_t ntohl(uint32_t)


cdef struct ip4h_t:
    # An IPv4 header without options as five 32-bit words, each as it lies
    # in memory (network order): ip4-fast reads a header once into one,
    # decides on it and writes the frame's header out of it.
    uint32_t w0, w1, w2, w3, w4


cdef inline void store_header(char *p, const ip4h_t *h) noexcept nogil:
    """Write h at p a word at a time: h stays in registers (copied whole,
    it would be stored to the stack and loaded back wider, a stalled
    forward)."""
    memcpy(p, &h.w0, 4)
    memcpy(p + 4, &h.w1, 4)
    memcpy(p + 8, &h.w2, 4)
    memcpy(p + 12, &h.w3, 4)
    memcpy(p + 16, &h.w4, 4)


cdef inline way_t *ip4_fast(Router r, const uint8_t *d, uint64_t length, uint32_t l2,
                           uint64_t mac8, const uint32_t *t24, const uint32_t *t8,
                           way_t *ways, uint32_t mask, ip4h_t *h,
                           uint32_t *tot, bint *fresh) noexcept nogil:
    """ip4-fast's decision on a frame of ``length`` bytes whose first
    ``l2`` + 20 (all it reads, when the frame is that long) are at ``d``,
    each byte read once (the peer's buffer, or a private copy):
    what ethernet-input, ip4-input, ip4-lookup and ip4-rewrite would do to
    it without the vectors between them.  It is ip4-fast's if it is an IPv4
    packet without options (in an Ethernet frame to our MAC, ``mac8``, when
    ``l2`` is ETH_HLEN; bare when 0), its lengths and checksum right, TTL
    above 1, routed (``t24``/``t8``, the FIB's tables) to a connected
    destination or a gateway out of a present interface whose neighbor is
    known or that is in IP mode: then it returns its way out (find_way,
    kept in ``ways``, mask + 1 of them by route, for the burst's next
    frames), ``h`` holds its IPv4 header as it leaves (TTL and checksum
    rewritten) and ``tot`` is its IPv4 total length; ``fresh`` is set
    when the way was resolved for this frame (not kept from one before).
    Otherwise NULL: the general graph decides it from the start.

    Nothing is stored at d, and the header is decided on and written out
    from registers: a store followed by a wider load of the same bytes
    costs a stalled store-to-load forward, several a frame when the header
    was staged in memory."""
    cdef uint32_t v0, v2, t, dst
    cdef int64_t rt
    cdef way_t *way
    if length < l2 + 20:
        return NULL
    if l2:
        if (memif_peer_load64(d) & MAC8_MASK) != mac8 \
                or memif_peer_load16(d + 12) != ETHERTYPE_IP4:
            return NULL
    d += l2
    h.w0 = memif_peer_load32(d)
    h.w1 = memif_peer_load32(d + 4)
    h.w2 = memif_peer_load32(d + 8)
    h.w3 = memif_peer_load32(d + 12)
    h.w4 = memif_peer_load32(d + 16)
    v0 = ntohl(h.w0)                # version and IHL, TOS, total length
    v2 = ntohl(h.w2)                # TTL, protocol, checksum
    t = v0 & 0xFFFF
    # (length is at least l2 + 20: one compare for 20 <= t <= length - l2)
    # (the header's sum is not 0: its first byte is 0x45)
    if v0 >> 24 != 0x45 or t - 20 > <uint32_t>length - l2 - 20 or v2 >> 24 <= 1 \
            or not multiple_of_ffff(<uint64_t>h.w0 + h.w1 + h.w2 + h.w3 + h.w4):
        return NULL
    dst = ntohl(h.w4)
    rt = fib_lookup(t24, t8, dst)
    if rt < 0:
        return NULL
    way = &ways[rt & mask]
    if rt != way.route or (dst != way.dst and not way.any_dst):
        if not r.find_way(way, rt, dst):
            return NULL
        fresh[0] = True
    h.w2 = ttl_down(h.w2)               # ip4-rewrite
    tot[0] = t
    return way


# take_frames comes in two versions, for frames received on an Ethernet
# interface and for bare IP packets: the type of its last argument (never
# read) says which, so that the Ethernet header's length is a constant in
# each.
cdef struct ethernet_input_t:
    char unused
cdef struct ip_input_t:
    char unused
ctypedef fused input_kind:
    ethernet_input_t
    ip_input_t


cdef void take_frames(Router r, const frame_t *frames, const seg_t *segs, uint32_t n,
                      uint32_t ifindex, rx_counters_t *rc, input_kind *kind) noexcept nogil:
    """memif-input and ip4-fast in one walk over a gathered burst: each
    frame's headers are copied into its arena slot and, while they are at
    hand, ip4-fast's frame (ip4_fast) is forwarded at once.  Every field
    decided on is read from the arena; every other frame goes to the
    general graph (V_INPUT) as it was received, to be decided there from
    the start.  Frames are staged in arrival order
    (frame k is the k-th taken in, whichever vector it went to); a frame
    forwarded here keeps only what transmit reads in its pkt_t."""
    cdef const uint32_t *t24 = r.fib.tbl24
    cdef const uint32_t *t8 = r.fib.tbl8
    cdef const frame_t *f
    cdef uint32_t i, j, k = 0, n_in = 0, tot, copied
    cdef uint64_t mac8 = r.ifs[ifindex].mac8
    cdef uint64_t length, nbytes = 0
    cdef way_t ways[WAYS]
    cdef const way_t *w
    cdef int one_out = -1                   # every frame forwarded left by this one (-1: several)
    cdef uint64_t outs = 0                  # every interface a frame forwarded left by
    cdef ip4h_t h
    cdef bint fresh                         # (not read here)
    # in locals: a store into the arena could, for all the compiler knows,
    # change r
    cdef pkt_t *p = r.pkts
    cdef uint8_t *d = r.arena + HEADROOM    # slot k's frame
    cdef uint16_t *v_in = r.vec[V_INPUT]
    cdef uint16_t *v_tx = r.vec[V_TX]
    cdef uint32_t hdr
    cdef uint32_t l2
    ways_clear(ways, WAYS)
    if input_kind is ethernet_input_t:
        l2 = ETH_HLEN
    else:
        l2 = 0
    for i in range(n):
        f = &frames[i]
        if f.drop >= 0:
            continue
        length = f.length
        nbytes += length
        if length > MAX_ROUTED:
            rc.packets += 1
            rc.drops[D_TOO_LONG] += 1
            continue
        # memif-input: the headers into the arena
        copied = copy_headers(d, &segs[f.first_seg], f.nsegs, length)
        w = ip4_fast(r, d, length, l2, mac8, t24, t8, ways, WAYS - 1, &h, &tot, &fresh)
        if w != NULL:
            memcpy(d + l2 + 8, &h.w2, 4)        # TTL and checksum as they leave
            if k == n_in:                       # (the first frame forwarded)
                one_out = w.out
            elif one_out != w.out:
                one_out = -1
            outs |= (<uint64_t>1) << w.out
            if l2 + tot <= copied:
                hdr = tot                       # all of it leaves from the arena
                p.tail_len = 0
            else:
                hdr = 20                        # the header; the rest from the ring
                p.tail_off = l2 + 20
                p.tail_len = tot - 20
                p.segs = &segs[f.first_seg]
                p.nsegs = <uint16_t>f.nsegs
                r.tails = True
            stage_out(p, d + l2, hdr, w.ip_mode, w.l2hdr)
            p.out = w.out
        else:
            # not ip4-fast's: staged whole for the general graph
            p.buf = d - HEADROOM
            p.rx_len = <uint32_t>f.length
            p.copied = copy_rest(d, &segs[f.first_seg], copied, f.length)
            p.segs = &segs[f.first_seg]
            p.nsegs = <uint16_t>f.nsegs
            p.tail_len = 0
            v_in[n_in] = <uint16_t>k
            n_in += 1
        k += 1
        p += 1
        d += r.slot_size(HDR_COPY)
    # The transmit vector: the frames staged and not left to the graph,
    # in order (all of them, usually).
    if n_in == 0:
        for i in range(k):
            v_tx[i] = <uint16_t>i
    else:
        j = 0
        for i in range(k):
            if j < n_in and v_in[j] == i:
                j += 1
            else:
                v_tx[i - j] = <uint16_t>i
    rc.packets += k
    rc.bytes += nbytes
    rc.forwarded += k - n_in
    r.npkts = k
    r.nvec[V_INPUT] = n_in
    r.nvec[V_TX] = k - n_in
    r.one_out = one_out
    r.walk_outs = outs


cdef struct fast_tx_t:
    # forward_fast's side of one output's transmit queue
    side_t s
    tx_counters_t *tc
    uint32_t l2o                # the Ethernet header's length there (0: IP mode)
    uint32_t room               # its free slots
    uint32_t k                  # frames written
    uint64_t nbytes             # ... and their bytes
    bint slave


# forward_fast comes in two versions too, for one output (the usual case:
# its state a constant place the compiler keeps in registers, one way out)
# and for several: the type of its last argument (never read) says which.
cdef struct one_output_t:
    char unused
cdef struct outputs_t:
    char unused
ctypedef fused outputs_kind:
    one_output_t
    outputs_t


cdef uint32_t forward_fast(Router r, Queue rxq, void **txqs, const uint16_t *outs,
                           uint32_t nout, uint32_t ifindex, rx_counters_t *rc,
                           uint32_t max_frames, uint64_t *used, input_kind *kind,
                           outputs_kind *how) noexcept nogil:
    """memif-input, ip4-fast and interface-output in one pass over the
    rings, for the frames at the front of ``rxq`` that ip4-fast takes out
    of one of the interfaces ``outs`` (``nout`` of them, transmit Queue
    ``txqs[i]`` for ``outs[i]``) and that are usual on both rings: one
    receive slot, and one transmit slot that holds the frame as it
    leaves.  Each frame's headers (Ethernet unless the input is IP mode,
    IPv4 without options: all ip4_fast reads) are read once from the
    receive buffer into registers and decided there; what leaves is the
    output's Ethernet header, the IPv4 header from those registers and the
    rest of the packet straight from the receive buffer (never read: a
    peer changing it changes only its own bytes).  It stops at the first
    other frame (one that would leave longer than its output's max_frame,
    too), which the caller takes through memif_input and the graph with
    the rest of the burst, in order.  What it moves is consumed,
    published and counted (router, every queue) here; ``used`` gets the
    interfaces it sent frames out of (bit o for interface o).  Returns the
    frames moved."""
    cdef side_t rs = side_of(rxq)
    cdef const uint32_t *t24 = r.fib.tbl24
    cdef const uint32_t *t8 = r.fib.tbl8
    cdef uint64_t mac8 = r.ifs[ifindex].mac8
    cdef uint32_t most = rxq.max_frame if rxq.max_frame < MAX_ROUTED else MAX_ROUTED
    cdef uint32_t n, k = 0, i, j, m, length, tot, l2, out_len, lim
    cdef uint64_t rx_bytes = 0
    cdef fast_tx_t tx[MAX_FAST]
    cdef fast_tx_t *t
    cdef ip4h_t h
    cdef way_t ways[WAYS]
    cdef way_t *way
    cdef uint32_t mask
    cdef run_t ru, tu
    cdef char *src
    cdef char *dst
    cdef memif_desc_t *w
    cdef bint rslave = rxq.slave
    cdef bint fresh = False
    # one way when there is one output, as a run of frames takes one
    # route; several, by route, when frames go several ways
    if outputs_kind is one_output_t:
        nout = 1
        mask = 0
    else:
        mask = WAYS - 1
    if input_kind is ethernet_input_t:
        l2 = ETH_HLEN
    else:
        l2 = 0
    used[0] = 0
    n = rxq.rx_ready()
    if n == 0:
        return 0
    if max_frames < n:
        n = max_frames
    for i in range(nout):
        t = &tx[i]
        t.k = 0
        t.nbytes = 0
        t.room = 0
        if not (<Queue>txqs[i]).tx or (<Queue>txqs[i]).closed or (<Queue>txqs[i]).fault \
                or (<Queue>txqs[i]).reserved:
            continue                        # (room 0: no frame goes there)
        t.room = (<Queue>txqs[i]).tx_room()
        t.s = side_of(<Queue>txqs[i])
        t.slave = (<Queue>txqs[i]).slave
        t.tc = &r.ifs[outs[i]].tx[<uint32_t>(<Queue>txqs[i]).index % r.ifs[outs[i]].ntx]
        t.l2o = 0 if r.ifs[outs[i]].ip_mode else ETH_HLEN
        # a frame of ``length`` leaves as at most t.l2o + length - l2 bytes:
        # no longer than the output takes when length is at most lim
        lim = (<Queue>txqs[i]).max_frame + l2
        lim = lim - t.l2o if lim >= t.l2o else 0
        if lim < most:
            most = lim
    if outputs_kind is one_output_t:
        if tx[0].room < n:
            n = tx[0].room                  # (every frame moved goes there)
        if n == 0:
            return 0                        # (its queue takes none: tx[0] is not set)
    ways_clear(ways, mask + 1)
    while k < n:
        # as far as the receive ring's end (and, with one output, its
        # ring's): the slots there in a row
        m = min(n - k, run_from(&rs, k, &ru))
        if outputs_kind is one_output_t:
            m = min(m, run_from(&tx[0].s, k, &tu))
        j = 0
        while j < m:
            src = usual_rx_in(&rs, &ru, j, most, rslave, &length)
            if src == NULL:
                break
            way = ip4_fast(r, <const uint8_t *>src, length, l2, mac8, t24, t8, ways, mask, &h,
                           &tot, &fresh)
            if way == NULL:
                break
            if fresh:
                # a way resolved for this frame: which of the outputs it
                # takes (kept with it for the frames after that take it too)
                fresh = False
                i = 0
                while i < nout and outs[i] != way.out:
                    i += 1
                if i == nout:
                    break
                way.txi = <uint16_t>i
            if outputs_kind is one_output_t:
                t = &tx[0]
                out_len = t.l2o + tot
                dst = usual_tx_in(&t.s, &tu, j, out_len, t.slave, &w)
            else:
                t = &tx[way.txi]
                if t.k >= t.room:
                    break
                out_len = t.l2o + tot
                dst = usual_tx(&t.s, t.k, out_len, t.slave, &w)
            if dst == NULL:
                break
            if t.l2o:
                memcpy(dst, way.l2hdr, ETH_HLEN)
            store_header(dst + t.l2o, &h)
            memcpy(dst + t.l2o + 20, src + l2 + 20, tot - 20)
            tx_written(w, out_len)
            rx_bytes += length
            t.nbytes += out_len
            if outputs_kind is outputs_t:
                t.k += 1
            j += 1
        k += j
        if j < m:
            break
    if k == 0:
        return 0
    if outputs_kind is one_output_t:
        tx[0].k = k
    rc.packets += k
    rc.bytes += rx_bytes
    rc.forwarded += k
    rxq.rx_consumed(k, rx_bytes)
    for i in range(nout):
        t = &tx[i]
        if t.k:
            t.tc.packets += t.k
            t.tc.bytes += t.nbytes
            (<Queue>txqs[i]).tx_published(<uint16_t>t.k, t.k, t.nbytes)
            used[0] |= (<uint64_t>1) << outs[i]
    return k
