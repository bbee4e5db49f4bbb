/*
 * Bounded reads and writes on a ring's interrupt eventfd.
 *
 * The eventfd's open file description is shared with the peer, which can
 * clear O_NONBLOCK and preset the counter to 2^64-2 at any moment: an
 * eventfd write then waits until someone reads, and has no per-call "don't
 * wait" flag (pwritev2's RWF_NOWAIT is refused for it).  Looking at the
 * flags first only narrows the window, since the peer can toggle them
 * between the look and the write.  So every such syscall runs under a
 * per-thread POSIX timer (SIGEV_THREAD_ID) armed for IRQ_GUARD_BOUND_NS just
 * around it: its real-time signal has a handler that does nothing and no
 * SA_RESTART, so a write or read still blocked when it fires returns EINTR,
 * and the caller treats that as a peer fault.  A syscall that would not
 * block is never interrupted (the signal is only taken on its way out), so
 * a well-behaved peer never sees a false fault.
 *
 * The timer repeats every bound until disarmed: a signal taken between the
 * arming and the syscall (the thread was preempted) is followed by another
 * one, so the wait is bounded by one period whatever the timing.  The cost
 * is two timer_settime calls per signalled interrupt, which happens only
 * when the peer sleeps in interrupt mode, where its wakeup costs far more.
 *
 * Each thread gets its timer lazily on first use and frees it at thread exit
 * (a pthread key destructor); a fork child forgets the parent's (timers are
 * not inherited) and makes its own.  The signal is the highest real-time
 * signal whose disposition is still the default, taken once per process.
 */
#ifndef MEMIFX_IRQ_GUARD_H
#define MEMIFX_IRQ_GUARD_H

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* The longest a guarded syscall may wait on the peer (one timer period). */
#define IRQ_GUARD_BOUND_NS 500000L

/* What a guarded call returns when this thread could get no timer. */
#define IRQ_GUARD_UNAVAILABLE ENOTSUP

#ifndef sigev_notify_thread_id
#define sigev_notify_thread_id _sigev_un._tid
#endif

typedef struct {
    timer_t timer;
} irq_guard_t;

static pthread_once_t irq_guard_once = PTHREAD_ONCE_INIT;
static pthread_key_t irq_guard_key;
static int irq_guard_signo;              /* 0: no signal could be taken */
static __thread irq_guard_t *irq_guard_mine;

static void irq_guard_interrupt(int signo)
{
    (void)signo;                         /* its only job: make the syscall return EINTR */
}

static void irq_guard_free(void *p)
{
    irq_guard_t *g = (irq_guard_t *)p;
    timer_delete(g->timer);
    free(g);
}

static void irq_guard_forget_after_fork(void)
{
    /* The child has no timers; the copied record must neither be used nor deleted. */
    free(irq_guard_mine);
    irq_guard_mine = NULL;
    if (irq_guard_signo)
        pthread_setspecific(irq_guard_key, NULL);
}

static void irq_guard_setup_process(void)
{
    struct sigaction sa, old;
    int s;

    if (pthread_key_create(&irq_guard_key, irq_guard_free) != 0)
        return;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = irq_guard_interrupt;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;                     /* no SA_RESTART: that is the point */
    for (s = SIGRTMAX; s >= SIGRTMIN; s--) {
        if (sigaction(s, NULL, &old) != 0 || old.sa_handler != SIG_DFL ||
            (old.sa_flags & SA_SIGINFO))
            continue;
        if (sigaction(s, &sa, NULL) == 0) {
            irq_guard_signo = s;
            break;
        }
    }
    if (irq_guard_signo)
        pthread_atfork(NULL, NULL, irq_guard_forget_after_fork);
}

/* This thread's guard, made on first use; NULL if none can be had. */
static irq_guard_t *irq_guard_get(void)
{
    irq_guard_t *g = irq_guard_mine;
    struct sigevent ev;
    sigset_t set;

    if (g)
        return g;
    pthread_once(&irq_guard_once, irq_guard_setup_process);
    if (!irq_guard_signo)
        return NULL;
    g = (irq_guard_t *)malloc(sizeof *g);
    if (!g)
        return NULL;
    memset(&ev, 0, sizeof ev);
    ev.sigev_notify = SIGEV_THREAD_ID;
    ev.sigev_signo = irq_guard_signo;
    ev.sigev_notify_thread_id = (pid_t)syscall(SYS_gettid);
    if (timer_create(CLOCK_MONOTONIC, &ev, &g->timer) != 0) {
        free(g);
        return NULL;
    }
    sigemptyset(&set);                   /* a thread that blocks it could not be interrupted */
    sigaddset(&set, irq_guard_signo);
    pthread_sigmask(SIG_UNBLOCK, &set, NULL);
    pthread_setspecific(irq_guard_key, g);
    irq_guard_mine = g;
    return g;
}

static inline void irq_guard_arm(irq_guard_t *g, long ns)
{
    struct itimerspec t;
    t.it_value.tv_sec = t.it_interval.tv_sec = ns / 1000000000L;
    t.it_value.tv_nsec = t.it_interval.tv_nsec = ns % 1000000000L;
    timer_settime(g->timer, 0, &t, NULL);
}

/*
 * Write ``v`` to eventfd ``fd``, waiting at most IRQ_GUARD_BOUND_NS.
 * Returns 0 when written, else an errno: EINTR (it blocked: the peer made
 * the fd blocking and filled the counter), EAGAIN (counter full), IRQ_GUARD_UNAVAILABLE
 * (no guard could be set up for this thread: nothing was written), others.
 */
static inline int irq_guard_write(int fd, uint64_t v)
{
    irq_guard_t *g = irq_guard_get();
    ssize_t r;
    int err;

    if (!g)
        return IRQ_GUARD_UNAVAILABLE;
    irq_guard_arm(g, IRQ_GUARD_BOUND_NS);
    r = write(fd, &v, sizeof v);
    err = errno;
    irq_guard_arm(g, 0);
    return r == (ssize_t)sizeof v ? 0 : (r < 0 ? err : EIO);
}

/*
 * Read eventfd ``fd`` into ``*v``, waiting at most IRQ_GUARD_BOUND_NS.
 * Returns 0 when read, else an errno: EAGAIN (nothing to read), EINTR (it
 * blocked: the peer made the fd blocking), IRQ_GUARD_UNAVAILABLE, others.
 */
static inline int irq_guard_read(int fd, uint64_t *v)
{
    irq_guard_t *g = irq_guard_get();
    ssize_t r;
    int err;

    if (!g)
        return IRQ_GUARD_UNAVAILABLE;
    irq_guard_arm(g, IRQ_GUARD_BOUND_NS);
    r = read(fd, v, sizeof *v);
    err = errno;
    irq_guard_arm(g, 0);
    return r == (ssize_t)sizeof *v ? 0 : (r < 0 ? err : EIO);
}

/* The signal the guards use (0 until the first guard was made, or if none could be). */
static inline int irq_guard_signal(void)
{
    return irq_guard_signo;
}

#endif
