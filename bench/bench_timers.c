/*
 * bench_timers.c - the cost of bounded waits at scale.
 *
 *   bench_timers run N K [STACK_KB]
 *       N coroutines started with eco_go, each sleeping K times for a
 *       random 1-100 ms, then returning (a server with N clients and
 *       timeouts), with stacks of STACK_KB KiB (default: the runtime's).
 *       Reports wall, user, sys and CPU seconds and the worst overshoot of
 *       a sleep past its time.  bench/go/timers.go is the same program in
 *       Go.
 *
 *   bench_timers pending P
 *       P coroutines parked in long sleeps, then 1,000 coroutines each
 *       sleeping 20 times for a random 1-10 ms: the CPU per sleep of the
 *       active ones, which is what a timer costs with P others pending.
 *
 * Output lines "RESULT key value", as the other benchmarks.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>
#include <event2/event.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static int64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void cpu_s(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* xorshift, per coroutine (seeded by its index) */
static uint32_t next(uint32_t *s)
{
    uint32_t x = *s;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return *s = x;
}

static long k_sleeps, lo_ms, span_ms;
static int64_t worst_ns;
static long failed;

static void *body(void *arg)
{
    uint32_t seed = (uint32_t)(uintptr_t)arg * 2654435761u + 1;
    for (long i = 0; i < k_sleeps; i++) {
        long ms = lo_ms + (long)(next(&seed) % (uint32_t)span_ms);
        int64_t t0 = mono_ns();
        if (eco_sleep(ms) != 0)
            failed++;
        int64_t over = mono_ns() - t0 - ms * 1000000;
        if (over > worst_ns)
            worst_ns = over;
    }
    return NULL;
}

static long started;

static void *long_sleeper(void *arg)
{
    (void)arg;
    started++;
    eco_sleep(3600 * 1000);
    return NULL;
}

static void run(long n, long k)
{
    k_sleeps = k;
    lo_ms = 1;
    span_ms = 100;
    double u0, s0, u1, s1;
    cpu_s(&u0, &s0);
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        if (eco_go(body, (void *)(uintptr_t)i) != 0) {
            perror("eco_go");
            exit(1);
        }
    }
    if (eco_loop() != 0) {
        perror("eco_loop");
        exit(1);
    }
    double wall = (bench_now_ns() - t0) / 1e9;
    cpu_s(&u1, &s1);
    printf("# run: %ld coroutines x %ld sleeps of 1-100 ms\n", n, k);
    printf("RESULT wall_s %.3f\nRESULT user_s %.3f\nRESULT sys_s %.3f\nRESULT cpu_s %.3f\n", wall,
           u1 - u0, s1 - s0, (u1 - u0) + (s1 - s0));
    printf("RESULT worst_overshoot_ms %.3f\n", worst_ns / 1e6);
    printf("RESULT failed %ld\n", failed);
}

static void pending(long p)
{
    /* Stacks come from the pool: the timers are measured, not mmap. */
    eco_set_pool_limit((size_t)p + 2000);
    /* Parked first, with no time counted. */
    for (long i = 0; i < p; i++) {
        if (eco_go(long_sleeper, NULL) != 0) {
            perror("eco_go");
            exit(1);
        }
    }
    while (started < p)
        event_base_loop(eco_base(), EVLOOP_ONCE);
    long q = 1000;
    lo_ms = 1;
    span_ms = 10;
    double u0 = 0, s0 = 0, u1, s1;
    /* Round 0 warms the stacks of the active ones (first touches), round 1
     * is measured. */
    for (int round = 0; round < 2; round++) {
        k_sleeps = round == 0 ? 1 : 20;
        if (round == 1)
            cpu_s(&u0, &s0);
        for (long i = 0; i < q; i++)
            eco_go(body, (void *)(uintptr_t)(i + 7));
        /* Until only the long sleepers are left. */
        for (;;) {
            eco_stats_t st;
            eco_stats(&st);
            if (st.alive <= (size_t)p)
                break;
            event_base_loop(eco_base(), EVLOOP_ONCE);
        }
    }
    cpu_s(&u1, &s1);
    double per = ((u1 - u0) + (s1 - s0)) * 1e9 / (double)(q * k_sleeps);
    printf("# pending: %ld parked, %ld x %ld sleeps of 1-10 ms measured\n", p, q, k_sleeps);
    printf("RESULT pending %ld\nRESULT cpu_ns_per_sleep %.1f\n", p, per);
    printf("RESULT worst_overshoot_ms %.3f\n", worst_ns / 1e6);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_timers run N K | pending P\n");
        return 2;
    }
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    if (strcmp(argv[1], "run") == 0) {
        if (argc > 4 && eco_set_stack_size((size_t)bench_arg(argc, argv, 4, 256) * 1024) != 0) {
            perror("eco_set_stack_size");
            return 2;
        }
        run(bench_arg(argc, argv, 2, 100000), bench_arg(argc, argv, 3, 10));
    }
    else if (strcmp(argv[1], "pending") == 0)
        pending(bench_arg(argc, argv, 2, 1000));
    else
        return 2;
    eco_teardown();
    return 0;
}
