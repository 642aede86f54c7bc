/*
 * bench_burst.c - a burst of coroutines: N started with eco_go, each parks
 * once (eco_sleep(0): to the back of the run queue, so all N are alive at
 * once) and returns.
 *
 *     bench_burst [N [phases]]   default 100,000, "cold,warm,idle,trimmed"
 *
 * Phases, in the order given:
 *   cold     the first burst of the runtime: every stack is new
 *   warm     the same at once again: the pool holds the stacks of the last
 *   idle     runs the loop until nothing is pending (the pool's trim timer
 *            gives memory back, then stops) and reports how long that took
 *   trimmed  a burst after "idle"
 * Each burst reports wall ns per coroutine and CPU (user + system) ns per
 * coroutine from getrusage; every phase reports VmRSS and /proc/self/maps
 * lines at its end.  Lines "RESULT burst_<phase>_<what> <value>".
 *
 * Counting system calls is left to strace (bench/run_stacks.sh runs one
 * phase at a time under it).  Uses only what every libeco version has, so
 * the same file builds against an older libeco.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>
#include <event2/event.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static long parked;

static void *park_once(void *arg)
{
    (void)arg;
    parked++;
    eco_sleep(0);
    return NULL;
}

static double cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec) * 1e9 +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e3;
}

static void report_mem(const char *phase)
{
    eco_stats_t st;
    eco_stats(&st);
    printf("RESULT burst_%s_rss_kb %ld\n", phase, bench_status_kb("VmRSS"));
    printf("RESULT burst_%s_maps %ld\n", phase, bench_maps_lines());
    printf("RESULT burst_%s_stacks %zu\n", phase, st.stacks);
}

static void run_burst(const char *phase, long n)
{
    parked = 0;
    double t0 = bench_now_ns(), c0 = cpu_ns();
    for (long i = 0; i < n; i++) {
        if (eco_go(park_once, NULL) != 0) {
            perror("eco_go");
            exit(1);
        }
    }
    if (eco_loop() != 0 || parked != n) {
        perror("eco_loop");
        exit(1);
    }
    double wall = bench_now_ns() - t0, cpu = cpu_ns() - c0;
    printf("# %s burst of %ld: %.0f ns wall, %.0f ns CPU per coroutine\n", phase, n,
           wall / (double)n, cpu / (double)n);
    printf("RESULT burst_%s_wall_ns %.1f\n", phase, wall / (double)n);
    printf("RESULT burst_%s_cpu_ns %.1f\n", phase, cpu / (double)n);
    report_mem(phase);
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, 1, 100000);
    char phases[256];
    snprintf(phases, sizeof phases, "%s", argc > 2 ? argv[2] : "cold,warm,idle,trimmed");
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    for (char *save = NULL, *p = strtok_r(phases, ",", &save); p != NULL;
         p = strtok_r(NULL, ",", &save)) {
        if (strcmp(p, "idle") == 0) {
            double t0 = bench_now_ns();
            event_base_dispatch(eco_base());
            double s = (bench_now_ns() - t0) / 1e9;
            printf("# idle: the loop returned after %.3f s\n", s);
            printf("RESULT burst_idle_s %.3f\n", s);
            report_mem("idle");
        } else if (strcmp(p, "cold") == 0 || strcmp(p, "warm") == 0 ||
                   strcmp(p, "trimmed") == 0) {
            run_burst(p, n);
        } else {
            fprintf(stderr, "unknown phase %s\n", p);
            return 2;
        }
    }
    double t0 = bench_now_ns();
    eco_teardown();
    printf("RESULT burst_teardown_ms %.2f\n", (bench_now_ns() - t0) / 1e6);
    return 0;
}
