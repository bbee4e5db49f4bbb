/* What the guard around a kick costs (csrc/irq_guard.h).
 *
 * Times, on one eventfd nobody reads, a plain 8-byte write() against
 * irq_guard_write() (the same write between arming and disarming this
 * thread's timer), best of ROUNDS rounds of COUNT calls each, alternating.
 * Prints one JSON line: ns per call for each and the difference, which is
 * what a kick pays on top of its write when the peer sleeps in interrupt
 * mode (a polling peer is never kicked).
 *
 * Build: cc -O2 -pthread -Icsrc perf/kick_cost.c -o kick_cost -lrt
 * Run:   ./kick_cost [COUNT [ROUNDS]]
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "irq_guard.h"

static double now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e9 + t.tv_nsec;
}

int main(int argc, char **argv)
{
    long count = argc > 1 ? atol(argv[1]) : 200000;
    int rounds = argc > 2 ? atoi(argv[2]) : 5;
    int fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    uint64_t one = 1;
    double plain = 1e18, guarded = 1e18, t;
    long i;
    int r;

    if (fd < 0 || irq_guard_write(fd, 1) != 0) {
        perror("eventfd / guard");
        return 1;
    }
    for (r = 0; r < rounds; r++) {
        t = now_ns();
        for (i = 0; i < count; i++)
            if (write(fd, &one, 8) != 8)
                return 2;
        t = (now_ns() - t) / count;
        if (t < plain)
            plain = t;
        t = now_ns();
        for (i = 0; i < count; i++)
            if (irq_guard_write(fd, 1) != 0)
                return 3;
        t = (now_ns() - t) / count;
        if (t < guarded)
            guarded = t;
    }
    printf("{\"write_ns\": %.0f, \"guarded_write_ns\": %.0f, \"guard_ns\": %.0f}\n",
           plain, guarded, guarded - plain);
    return 0;
}
