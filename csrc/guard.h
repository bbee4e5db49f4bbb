/*
 * Fault containment for memory a peer shared with us.
 *
 * A region the peer sent may be a memfd it can still truncate (DPDK's
 * zero-copy memory cannot be sealed).  Touching a page past the new end of
 * the file raises SIGBUS, which would kill the process and every link in it.
 *
 * Every peer mapping is recorded in a fixed, lock-free table of slots.  A
 * process-wide SIGBUS handler looks the faulting address up there; inside a
 * recorded mapping it maps anonymous zero pages over the whole mapping
 * (MAP_FIXED: the address range stays valid, the file is gone from it),
 * marks the slot faulted, counts the fault and writes one byte to a wake fd,
 * then returns: the access that faulted runs again and reads zeros, which
 * the data path's descriptor checks drop like any other bad descriptor, and
 * the control plane, woken by the fd, ends the link.  Any other SIGBUS goes
 * to the handler that was installed before ours, or takes the default
 * action (death with a core), so real bugs stay loud.
 *
 * The handler only loads and stores atomics and calls mmap, write and
 * sigaction (raw system calls), so it may run in any thread at any moment.
 * The data path pays nothing: no check, no setjmp, on any access.
 *
 * Lifetime: a slot is recorded after mmap and before first use, and
 * released before munmap.  Releasing waits until no handler is inside the
 * table, so a handler never maps zeros over an address range that has
 * been unmapped (and maybe reused for something else) meanwhile.
 */
#ifndef MEMIFX_GUARD_H
#define MEMIFX_GUARD_H

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define GUARD_SLOTS 8192            /* peer mappings one process can hold */

enum { GUARD_FREE = 0, GUARD_CLAIMED, GUARD_LIVE, GUARD_FAULTED, GUARD_RELEASING };

typedef struct {
    int state;                      /* GUARD_*, atomic */
    int reported;                   /* the control plane took this fault (0/1), atomic */
    uintptr_t base;
    uintptr_t size;                 /* rounded up to whole pages */
} guard_slot_t;

static guard_slot_t guard_slots[GUARD_SLOTS];
static int guard_high;              /* slots [0, guard_high) were ever used */
static int guard_inside;            /* handlers looking at the table now */
static int guard_chaining;          /* handlers calling the previous handler now */
static uint64_t guard_faults;       /* peer mappings replaced by zeros, ever */
static int guard_wake_fd = -1;      /* written once per fault (non-blocking) */
static struct sigaction guard_previous;

/* A SIGBUS that is not ours to repair.  One the hardware raised goes to
 * the handler that was there before ours, if any.  One that was sent
 * (kill, or raise() by a handler that has printed its report and now wants
 * the process to die of it, as faulthandler does) takes the default action:
 * handing it on could bounce it between us and that handler forever. */
static void guard_chain(int sig, siginfo_t *info, void *ctx)
{
    struct sigaction *p = &guard_previous;
    int sent = info->si_code <= 0;
    if (sent && p->sa_handler == SIG_IGN && !(p->sa_flags & SA_SIGINFO))
        return;                     /* ignored before we came: still ignored */
    if (__atomic_fetch_add(&guard_chaining, 1, __ATOMIC_SEQ_CST) == 0 && !sent) {
        if (p->sa_flags & SA_SIGINFO) {
            p->sa_sigaction(sig, info, ctx);
            __atomic_fetch_sub(&guard_chaining, 1, __ATOMIC_SEQ_CST);
            return;
        }
        if (p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
            p->sa_handler(sig);
            __atomic_fetch_sub(&guard_chaining, 1, __ATOMIC_SEQ_CST);
            return;
        }
    }
    /* The default action, as if we had never been here (also when the
     * previous handler led straight back to us).  A fault the hardware
     * raised happens again when we return; a sent signal is sent again, and
     * delivered once this handler returns. */
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    sigemptyset(&dfl.sa_mask);
    sigaction(sig, &dfl, NULL);
    if (sent)
        raise(sig);
    __atomic_fetch_sub(&guard_chaining, 1, __ATOMIC_SEQ_CST);
}

static void guard_on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    int saved_errno = errno;
    int hit = 0;
    __atomic_fetch_add(&guard_inside, 1, __ATOMIC_SEQ_CST);
    if (info->si_code > 0) {        /* raised by the kernel for an access */
        uintptr_t addr = (uintptr_t)info->si_addr;
        int n = __atomic_load_n(&guard_high, __ATOMIC_ACQUIRE);
        for (int i = 0; i < n && !hit; i++) {
            guard_slot_t *s = &guard_slots[i];
            int st = __atomic_load_n(&s->state, __ATOMIC_SEQ_CST);
            if (st != GUARD_LIVE && st != GUARD_FAULTED)
                continue;
            if (addr - s->base >= s->size)
                continue;
            if (mmap((void *)s->base, s->size, PROT_READ | PROT_WRITE,
                     MAP_FIXED | MAP_PRIVATE | MAP_ANONYMOUS, -1, 0) == MAP_FAILED)
                break;              /* cannot repair it: let it be fatal */
            hit = 1;
            int live = GUARD_LIVE;
            if (__atomic_compare_exchange_n(&s->state, &live, GUARD_FAULTED, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST)) {
                __atomic_fetch_add(&guard_faults, 1, __ATOMIC_SEQ_CST);
                int fd = __atomic_load_n(&guard_wake_fd, __ATOMIC_ACQUIRE);
                if (fd >= 0) {
                    ssize_t r = write(fd, "!", 1);   /* full pipe: already awake */
                    (void)r;
                }
            }
        }
    }
    __atomic_fetch_sub(&guard_inside, 1, __ATOMIC_SEQ_CST);
    if (!hit)
        guard_chain(sig, info, ctx);
    errno = saved_errno;
}

/* Make guard_on_sigbus the SIGBUS handler, in front again if someone put
 * theirs there since (faulthandler.enable(), say): theirs becomes the one
 * we chain to.  Until then theirs sees a peer's fault first, and
 * faulthandler would end the process.  0, or -1 (errno).  Called with the
 * GIL held (one caller at a time). */
static int guard_install(int wake_fd)
{
    struct sigaction cur, sa;
    __atomic_store_n(&guard_wake_fd, wake_fd, __ATOMIC_RELEASE);
    if (sigaction(SIGBUS, NULL, &cur) != 0)
        return -1;
    if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == guard_on_sigbus)
        return 0;
    guard_previous = cur;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = guard_on_sigbus;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGBUS, &sa, NULL);
}

/* Record a peer mapping; its slot, or -1 when the table is full. */
static int guard_register(void *base, uint64_t size)
{
    uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < GUARD_SLOTS; i++) {
        guard_slot_t *s = &guard_slots[i];
        int free_ = GUARD_FREE;
        if (!__atomic_compare_exchange_n(&s->state, &free_, GUARD_CLAIMED, 0,
                                         __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            continue;
        s->base = (uintptr_t)base;
        s->size = ((uintptr_t)size + page - 1) & ~(page - 1);
        __atomic_store_n(&s->reported, 0, __ATOMIC_RELAXED);
        int high = __atomic_load_n(&guard_high, __ATOMIC_SEQ_CST);
        while (high < i + 1 &&
               !__atomic_compare_exchange_n(&guard_high, &high, i + 1, 0,
                                            __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
            ;
        __atomic_store_n(&s->state, GUARD_LIVE, __ATOMIC_SEQ_CST);
        return i;
    }
    return -1;
}

/* Forget a slot; afterwards its mapping may be unmapped. */
static void guard_release(int i)
{
    guard_slot_t *s = &guard_slots[i];
    __atomic_store_n(&s->state, GUARD_RELEASING, __ATOMIC_SEQ_CST);
    /* A handler that saw the slot live has counted itself inside first. */
    while (__atomic_load_n(&guard_inside, __ATOMIC_SEQ_CST))
        sched_yield();
    s->base = 0;
    s->size = 0;
    __atomic_store_n(&s->state, GUARD_FREE, __ATOMIC_SEQ_CST);
}

static inline int guard_faulted(int i)
{
    return __atomic_load_n(&guard_slots[i].state, __ATOMIC_ACQUIRE) == GUARD_FAULTED;
}

/* 1 the first time it is called for a faulted slot, else 0. */
static int guard_take_report(int i)
{
    int zero = 0;
    return guard_faulted(i) &&
        __atomic_compare_exchange_n(&guard_slots[i].reported, &zero, 1, 0,
                                    __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
}

static inline uint64_t guard_fault_count(void)
{
    return __atomic_load_n(&guard_faults, __ATOMIC_ACQUIRE);
}

#endif
