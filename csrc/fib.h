/*
 * The ip4 FIB as it lies in its shared memory file, and the atomics every
 * access to a table entry goes through.
 *
 * One file holds: a header page, the first-level table (one u32 per /24),
 * the second-level blocks (256 u32 each) and the next-hop records.  Only the
 * main process maps it writable; workers map it read-only and look up
 * without locks while the main process changes routes.  That works because:
 *
 *   - every entry is one aligned u32, stored whole (release) and loaded whole
 *     (relaxed): a reader sees the old or the new value, never a mix;
 *   - a block or next-hop record is written completely before the entry that
 *     leads to it is published, and the reader's second load depends on the
 *     value of its first (the address is computed from it), which orders the
 *     two loads on every CPU Linux runs on, as RCU pointer reads rely on;
 *   - a block or record that no entry leads to any more is not written again
 *     until every worker has passed a quiescent point (see memifx/fib.pyx).
 */
#ifndef MEMIFX_FIB_H
#define MEMIFX_FIB_H

#include <stddef.h>
#include <stdint.h>

#include "table.h"

#define FIB_MAGIC   0x31424946584d454dULL   /* "MEMXFIB1" read little-endian */
#define FIB_PAGE    4096u

typedef struct {            /* 8 bytes; constant while any entry leads to it */
    uint32_t gw;            /* host byte order; 0 unless a gateway */
    uint16_t ifindex;
    uint8_t  kind;
    uint8_t  pad;
} fib_nexthop_t;

typedef struct {            /* the first page of the file */
    uint64_t magic;
    uint64_t size;          /* bytes of the whole file */
    uint64_t tbl24_offset;
    uint64_t tbl8_offset;
    uint64_t nh_offset;
    uint32_t groups_cap;    /* second-level blocks the file has room for */
    uint32_t nh_cap;        /* next-hop records the file has room for */
    uint32_t nh_count;      /* records handed out so far (high-water mark) */
    uint32_t groups_used;   /* blocks in use (statistics) */
    uint64_t routes;        /* routes in the table (statistics) */
} fib_header_t;

_Static_assert(sizeof(fib_nexthop_t) == 8, "a next hop is 8 bytes");
_Static_assert(sizeof(fib_header_t) <= FIB_PAGE, "the header fits its page");
_Static_assert(offsetof(fib_header_t, magic) == offsetof(table_header_t, magic)
               && offsetof(fib_header_t, size) == offsetof(table_header_t, size),
               "a FIB header starts as every table header");

/* Table entries: every load in a lookup, every store by the writer. */
static inline uint32_t fib_entry_load(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void fib_entry_publish(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

/* Header counters that readers consult (bounds of nexthop()). */
static inline uint32_t fib_u32_load_acquire(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static inline void fib_u32_store_release(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static inline uint64_t fib_u64_load_relaxed(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void fib_u64_store_relaxed(uint64_t *p, uint64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

#endif
