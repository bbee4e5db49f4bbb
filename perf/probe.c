/* What this machine allows, without memif: two reference probes that
 * perf/run.py runs in every round beside the memif cells (see perf/README.md
 * for what they showed: the wake floor is steady, the ring's rate is not).
 *
 *   probe ring SIZE SECONDS   a bare single-producer/single-consumer copy
 *                             ring between two threads pinned to CPUs 0
 *                             and 1: 1024 buffers of 2048 B laid out as
 *                             memifx's slave lays them (ring.scatter), the
 *                             producer copies each SIZE-byte frame in, the
 *                             consumer copies it out.  Prints Mpps.
 *                             memif's copies without descriptors, counters
 *                             kept per burst, or Python; its rate shows how
 *                             much the machine moves from trial to trial.
 *   probe wake COUNT          eventfd ping-pong between the two threads,
 *                             both asleep in epoll_wait between frames.
 *                             Prints round-trip percentiles in us: the
 *                             floor for interrupt mode's round trip.
 *
 * Output: one JSON line.  Build: cc -O2 -pthread probe.c -o probe
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#define SLOTS 1024u
#define BUF 2048u
#define MAX_BURST 256u

static void pin(int cpu)
{
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0) {
        perror("sched_setaffinity");
        exit(1);
    }
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- ring ---- */

static uint8_t *area;
static uint32_t frame_len, step;
static uint32_t head __attribute__((aligned(64)));
static uint32_t tail __attribute__((aligned(64)));
static uint64_t consumed __attribute__((aligned(64)));
static int stop;

static uint32_t gcd(uint32_t a, uint32_t b)
{
    while (b) {
        uint32_t t = a % b;
        a = b;
        b = t;
    }
    return a;
}

static uint8_t *slot_buf(uint32_t i)
{
    return area + (size_t)((uint64_t)(i % SLOTS) * step % SLOTS) * BUF;
}

static void *consumer(void *arg)
{
    uint8_t out[BUF];
    uint32_t t = 0;
    (void)arg;
    pin(1);
    while (!__atomic_load_n(&stop, __ATOMIC_RELAXED)) {
        uint32_t h = __atomic_load_n(&head, __ATOMIC_ACQUIRE);
        if (h == t)
            continue;
        for (; t != h; t++) {
            memcpy(out, slot_buf(t), frame_len);
            __asm__ volatile("" : : "r"(out) : "memory");
        }
        __atomic_store_n(&tail, t, __ATOMIC_RELEASE);
        __atomic_store_n(&consumed, t, __ATOMIC_RELAXED);
    }
    return NULL;
}

static int ring(uint32_t size, double seconds)
{
    static uint8_t src[BUF];
    pthread_t th;
    uint32_t h = 0, t, n, j;
    double t0, t1;
    uint64_t c0, c1, total;

    if (size < 14 || size > BUF) {
        fprintf(stderr, "probe ring: size %u not in 14..%u\n", size, BUF);
        return 2;
    }
    frame_len = size;
    step = (uint32_t)(SLOTS * 0.618) | 1;
    while (gcd(step, SLOTS) != 1)
        step += 2;
    area = aligned_alloc(4096, (size_t)SLOTS * BUF);
    if (!area) {
        perror("aligned_alloc");
        return 1;
    }
    memset(area, 0, (size_t)SLOTS * BUF);
    memset(src, 0x5a, sizeof src);
    pthread_create(&th, NULL, consumer, NULL);
    pin(0);
    t0 = 0;
    c0 = 0;
    /* 0.2 s of warm-up, then count */
    for (int phase = 0; phase < 2; phase++) {
        double end = now_s() + (phase ? seconds : 0.2);
        if (phase) {
            t0 = now_s();
            c0 = __atomic_load_n(&consumed, __ATOMIC_RELAXED);
        }
        while (now_s() < end) {
            for (int k = 0; k < 64; k++) {
                t = __atomic_load_n(&tail, __ATOMIC_ACQUIRE);
                n = SLOTS - (h - t);
                if (n > MAX_BURST)
                    n = MAX_BURST;
                for (j = 0; j < n; j++, h++)
                    memcpy(slot_buf(h), src, size);
                __atomic_store_n(&head, h, __ATOMIC_RELEASE);
            }
        }
    }
    t1 = now_s();
    c1 = __atomic_load_n(&consumed, __ATOMIC_RELAXED);
    total = (uint32_t)(c1 - c0);
    __atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
    pthread_join(th, NULL);
    printf("{\"probe\": \"ring\", \"size\": %u, \"frames\": %llu, \"seconds\": %.6f, "
           "\"mpps\": %.4f}\n", size, (unsigned long long)total, t1 - t0,
           total / (t1 - t0) / 1e6);
    free(area);
    return 0;
}

/* ---- wake ---- */

static int ping_fd, pong_fd;

static int epoll_on(int fd)
{
    struct epoll_event ev = {.events = EPOLLIN};
    int ep = epoll_create1(0);
    if (ep < 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        perror("epoll");
        exit(1);
    }
    return ep;
}

static void sleep_read(int ep, int fd)
{
    struct epoll_event ev;
    uint64_t v;
    for (;;) {
        if (epoll_wait(ep, &ev, 1, -1) == 1 && read(fd, &v, 8) == 8)
            return;
    }
}

static void *echo(void *arg)
{
    int ep = epoll_on(ping_fd);
    uint64_t one = 1;
    (void)arg;
    pin(1);
    for (;;) {
        sleep_read(ep, ping_fd);
        if (write(pong_fd, &one, 8) != 8)
            return NULL;
    }
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static int wake(uint32_t count)
{
    pthread_t th;
    uint64_t one = 1;
    uint32_t warm = count / 10, i;
    double *us = malloc(sizeof(double) * count);
    int ep;

    if (!us || count < 10) {
        fprintf(stderr, "probe wake: count %u too small\n", count);
        return 2;
    }
    ping_fd = eventfd(0, EFD_NONBLOCK);
    pong_fd = eventfd(0, EFD_NONBLOCK);
    pthread_create(&th, NULL, echo, NULL);
    pin(0);
    ep = epoll_on(pong_fd);
    for (i = 0; i < warm + count; i++) {
        double t0 = now_s();
        if (write(ping_fd, &one, 8) != 8) {
            perror("write");
            return 1;
        }
        sleep_read(ep, pong_fd);
        if (i >= warm)
            us[i - warm] = (now_s() - t0) * 1e6;
    }
    qsort(us, count, sizeof(double), cmp_double);
    printf("{\"probe\": \"wake\", \"count\": %u, \"p50_us\": %.3f, \"p90_us\": %.3f, "
           "\"p99_us\": %.3f, \"max_us\": %.3f}\n", count, us[count / 2],
           us[count * 9 / 10], us[count * 99 / 100], us[count - 1]);
    free(us);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && strcmp(argv[1], "ring") == 0)
        return ring((uint32_t)atoi(argv[2]), atof(argv[3]));
    if (argc == 3 && strcmp(argv[1], "wake") == 0)
        return wake((uint32_t)atoi(argv[2]));
    fprintf(stderr, "usage: probe ring SIZE SECONDS | probe wake COUNT\n");
    return 2;
}
