/*
 * The neighbor table as it lies in its shared memory file: open addressing
 * with linear probing, one writer (the main process), any number of readers
 * (the rewrite node of every worker), no locks.
 *
 * Each entry carries a sequence number: the writer makes it odd, changes
 * key and MAC, and makes it even again.  A reader that sees the same even
 * number before and after reading key and MAC has a consistent copy; one
 * that keeps finding the entry in the middle of a change treats the lookup
 * as a miss (the packet waits for ARP like any unresolved one).
 *
 * A deleted entry becomes a tombstone, so the probe chains through it stay
 * whole; the writer turns tombstones back into empty slots only where a
 * chain ends right after them, which no reader's search can notice.
 */
#ifndef MEMIFX_NEIGHBOR_H
#define MEMIFX_NEIGHBOR_H

#include <stddef.h>
#include <stdint.h>

#include "table.h"

#define NBR_MAGIC       0x3142524e584d454dULL   /* "MEMXNBR1" read little-endian */
#define NBR_PAGE        4096u
#define NBR_EMPTY       0ULL                     /* never used: a search stops here */
#define NBR_TOMBSTONE   (~0ULL)                  /* deleted: a search goes on */
#define NBR_READ_TRIES  64

typedef struct {            /* 32 bytes, two to a cache line */
    uint32_t seq;           /* odd while the writer changes this entry */
    uint32_t pad;
    uint64_t key;           /* NBR_EMPTY, NBR_TOMBSTONE or nbr_key(ifindex, ip) */
    uint64_t mac;           /* the six MAC bytes in memory order, then zeros */
    uint64_t pad2;
} nbr_entry_t;

typedef struct {            /* the first page of the file */
    uint64_t magic;
    uint64_t size;          /* bytes of the whole file */
    uint64_t entries_offset;
    uint32_t capacity;      /* entries, a power of two */
    uint32_t count;         /* live entries (statistics) */
    uint32_t tombstones;    /* (statistics) */
} nbr_header_t;

_Static_assert(sizeof(nbr_entry_t) == 32, "a neighbor entry is 32 bytes");
_Static_assert(offsetof(nbr_header_t, magic) == offsetof(table_header_t, magic)
               && offsetof(nbr_header_t, size) == offsetof(table_header_t, size),
               "a neighbor table header starts as every table header");

static inline uint64_t nbr_key(uint32_t ifindex, uint32_t ip)
{
    return (((uint64_t)ifindex << 32) | ip) + 1;    /* never EMPTY or TOMBSTONE */
}

static inline uint32_t nbr_home(uint64_t key, uint32_t mask)
{
    return (uint32_t)((key * 0x9E3779B97F4A7C15ULL) >> 32) & mask;
}

/* Reader: one consistent (key, mac) copy of entry e; 0 if it stayed in the
 * middle of a change for NBR_READ_TRIES attempts. */
static inline int nbr_read(const nbr_entry_t *e, uint64_t *key, uint64_t *mac)
{
    int tries;
    for (tries = 0; tries < NBR_READ_TRIES; tries++) {
        uint32_t s1 = __atomic_load_n(&e->seq, __ATOMIC_ACQUIRE);
        uint64_t k = __atomic_load_n(&e->key, __ATOMIC_RELAXED);
        uint64_t m = __atomic_load_n(&e->mac, __ATOMIC_RELAXED);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        uint32_t s2 = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
        if (s1 == s2 && !(s1 & 1)) {
            *key = k;
            *mac = m;
            return 1;
        }
    }
    return 0;
}

/* Reader: 1 and the MAC of key in *mac, or 0 (absent, or being changed). */
static inline int nbr_find(const nbr_entry_t *t, uint32_t mask, uint64_t key, uint64_t *mac)
{
    uint32_t s = nbr_home(key, mask), n;
    uint64_t k, m;
    for (n = 0; n <= mask; n++) {
        if (!nbr_read(&t[s], &k, &m))
            return 0;
        if (k == key) {
            *mac = m;
            return 1;
        }
        if (k == NBR_EMPTY)
            return 0;
        s = (s + 1) & mask;
    }
    return 0;
}

/* Writer (the only one): change an entry so that no reader sees half of it. */
static inline void nbr_write(nbr_entry_t *e, uint64_t key, uint64_t mac)
{
    uint32_t s = __atomic_load_n(&e->seq, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, s + 1, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&e->key, key, __ATOMIC_RELAXED);
    __atomic_store_n(&e->mac, mac, __ATOMIC_RELAXED);
    __atomic_store_n(&e->seq, s + 2, __ATOMIC_RELEASE);
}

static inline uint32_t nbr_u32_load(const uint32_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static inline void nbr_u32_store(uint32_t *p, uint32_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
}

#endif
