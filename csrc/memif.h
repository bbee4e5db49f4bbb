/*
 * memif 2.0 shared-memory layout and the few atomics memifx needs.
 *
 * This is the only place the layout of rings, descriptors and a memifx
 * slave's region is declared: memifx/memif.pxd exposes it to Cython, and
 * memifx/layout.pyx to Python (the control plane and the tests).  Control
 * messages are encoded in memifx/wire.py (they are not on the hot path).
 */
#ifndef MEMIFX_MEMIF_H
#define MEMIFX_MEMIF_H

#include <stdint.h>
#include <stddef.h>

#define MEMIF_COOKIE          0x3E31F20u
#define MEMIF_VERSION         0x0200u
#define MEMIF_CACHELINE       64u
#define MEMIF_RING_HDR_SIZE   128u   /* two cache lines: head side, tail side */
#define MEMIF_DESC_SIZE       16u

#define MEMIF_RING_FLAG_MASK_INT  1u  /* ring->flags: consumer asks not to be woken */
#define MEMIF_DESC_FLAG_NEXT      1u  /* desc->flags: frame continues in next slot */

/* Ring sizes we accept and advertise: DPDK's cap (VPP's is 15), so that a
 * ring any of them builds for us, or we build for them, is one both accept. */
#define MEMIF_MAX_LOG2_RING_SIZE  14u
/* A region index is a u16, but HELLO's max_region is a count minus one in a
 * u16 and every peer advertises at most 256: we accept and advertise 256. */
#define MEMIF_MAX_REGIONS         256u

/* Where head and tail sit in a ring header (checked against the struct below):
 * for code that reads rings through plain byte offsets (tests, tools). */
#define MEMIF_RING_COOKIE_OFFSET  0u
#define MEMIF_RING_FLAGS_OFFSET   4u
#define MEMIF_RING_HEAD_OFFSET    6u
#define MEMIF_RING_TAIL_OFFSET    64u

/* A memifx slave starts its buffers on a page after the rings, so that
 * buffers never share a page (nor a cache line) with ring headers. */
#define MEMIF_PAGE_SIZE           4096u

typedef struct {            /* naturally aligned: 16 bytes, no padding */
    uint16_t flags;
    uint16_t region;
    uint32_t length;
    uint32_t offset;
    uint32_t metadata;
} memif_desc_t;

typedef struct __attribute__((packed, aligned(64))) {
    uint32_t cookie;
    uint16_t flags;
    uint16_t head;                    /* written only by the slave  */
    uint8_t  pad0[MEMIF_CACHELINE - 8];
    uint16_t tail;                    /* written only by the master */
    uint8_t  pad1[MEMIF_CACHELINE - 2];
    memif_desc_t desc[];
} memif_ring_t;

_Static_assert(sizeof(memif_desc_t) == MEMIF_DESC_SIZE, "descriptor is 16 bytes");
_Static_assert(offsetof(memif_ring_t, tail) == 64, "tail on cache line 1");
_Static_assert(offsetof(memif_ring_t, desc) == MEMIF_RING_HDR_SIZE, "descriptors at 128");
_Static_assert(offsetof(memif_ring_t, cookie) == MEMIF_RING_COOKIE_OFFSET, "cookie at 0");
_Static_assert(offsetof(memif_ring_t, flags) == MEMIF_RING_FLAGS_OFFSET, "flags at 4");
_Static_assert(offsetof(memif_ring_t, head) == MEMIF_RING_HEAD_OFFSET, "head at 6");
_Static_assert(offsetof(memif_ring_t, tail) == MEMIF_RING_TAIL_OFFSET, "tail at 64");

static inline uint64_t memif_ring_bytes(uint32_t log2_size)
{
    return MEMIF_RING_HDR_SIZE + ((uint64_t)MEMIF_DESC_SIZE << log2_size);
}

/* Where a slave lays rings back to back: each starts on a cache line (a
 * master checks that alignment, and a 2-slot ring is 160 bytes). */
static inline uint64_t memif_ring_stride(uint32_t log2_size)
{
    return (memif_ring_bytes(log2_size) + MEMIF_CACHELINE - 1) & ~(uint64_t)(MEMIF_CACHELINE - 1);
}

/* Offset of descriptor ``slot`` from the start of its ring. */
static inline uint64_t memif_desc_offset(uint32_t slot)
{
    return MEMIF_RING_HDR_SIZE + (uint64_t)MEMIF_DESC_SIZE * slot;
}

/* A memifx slave's region 0: ``n_rings`` rings (S2M then M2S) at
 * ``i * memif_ring_stride``, then the buffers from this page-aligned offset,
 * each ring's buffers in one run, in ring order. */
static inline uint64_t memif_slave_ring_offset(uint32_t i, uint32_t log2_size)
{
    return (uint64_t)i * memif_ring_stride(log2_size);
}

static inline uint64_t memif_slave_buffers_at(uint32_t n_rings, uint32_t log2_size)
{
    uint64_t rings = (uint64_t)n_rings * memif_ring_stride(log2_size);
    return (rings + MEMIF_PAGE_SIZE - 1) & ~(uint64_t)(MEMIF_PAGE_SIZE - 1);
}

/* head/tail are the only words both sides race on: every access to them
 * goes through these, never a plain load or store. */
static inline uint16_t memif_load_acquire(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void memif_store_release(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint16_t memif_load_relaxed(const uint16_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void memif_store_relaxed(uint16_t *p, uint16_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

/* Full barrier: used after clearing MASK_INT and before re-checking the ring
 * (lost-wakeup rule), and by producers between publishing and reading flags. */
static inline void memif_fence(void)
{
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* Read one descriptor from shared memory exactly once.  The peer may rewrite
 * it at any moment; callers validate and use only the returned copy. */
static inline memif_desc_t memif_desc_read(const memif_desc_t *d)
{
    const volatile uint64_t *w = (const volatile uint64_t *)d;
    uint64_t lo = w[0], hi = w[1];        /* two loads, never repeated */
    memif_desc_t c;
    __builtin_memcpy(&c, &lo, 8);
    __builtin_memcpy((char *)&c + 8, &hi, 8);
    return c;
}

/* Bytes of a frame in the peer's buffers, read exactly once each: a
 * decision taken on the value returned holds for what is written from it,
 * whatever the peer does to the buffer meanwhile.  Any alignment; the value
 * is as it lies in memory (network order for a header field). */
typedef uint16_t __attribute__((aligned(1), may_alias)) memif_u16_unaligned;
typedef uint32_t __attribute__((aligned(1), may_alias)) memif_u32_unaligned;
typedef uint64_t __attribute__((aligned(1), may_alias)) memif_u64_unaligned;

static inline uint16_t memif_peer_load16(const void *p)
{
    return *(const volatile memif_u16_unaligned *)p;
}

static inline uint32_t memif_peer_load32(const void *p)
{
    return *(const volatile memif_u32_unaligned *)p;
}

static inline uint64_t memif_peer_load64(const void *p)
{
    return *(const volatile memif_u64_unaligned *)p;
}

/* The consumer's MASK_INT word; written by the consumer, read by the producer. */
static inline uint16_t memif_ring_flags(const memif_ring_t *r)
{
    return __atomic_load_n(&r->flags, __ATOMIC_RELAXED);
}

static inline void memif_set_ring_flags(memif_ring_t *r, uint16_t v)
{
    __atomic_store_n(&r->flags, v, __ATOMIC_RELAXED);
}

#endif
