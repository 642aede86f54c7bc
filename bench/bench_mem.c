/*
 * bench_mem.c - resident memory per parked coroutine.
 *
 *     bench_mem [coroutines [sleep_ms]]   default 100,000, 60,000 ms
 *
 * Starts the coroutines with eco_go; each parks in eco_sleep.  A libevent
 * timer on the main stack sees when all of them have parked, reads VmRSS
 * (and VmPTE, the page tables, which VmRSS leaves out) from
 * /proc/self/status, counts the lines of /proc/self/maps, and breaks the
 * loop; eco_teardown then abandons the sleepers, so the program ends at
 * once, whatever the sleep.
 *
 * Each stack has its guard region (eco_create never makes one without), so
 * "maps" staying far below vm.max_map_count shows the guards did not split
 * the mappings.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>
#include <event2/event.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n_co, parked, sleep_ms;
static long rss_kb, pte_kb, maps_lines;
static double t_start, t_parked;

static long read_long(const char *path)
{
    FILE *f = fopen(path, "r");
    long v = -1;
    if (f == NULL)
        return -1;
    if (fscanf(f, "%ld", &v) != 1)
        v = -1;
    fclose(f);
    return v;
}

static void *sleeper(void *arg)
{
    (void)arg;
    parked++; /* cooperative: nothing else runs before the sleep parks us */
    eco_sleep(sleep_ms);
    return NULL;
}

static void check_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    struct event_base *base = arg;
    if (parked < n_co)
        return;
    t_parked = bench_now_ns();
    rss_kb = bench_status_kb("VmRSS");
    pte_kb = bench_status_kb("VmPTE");
    maps_lines = bench_maps_lines();
    event_base_loopbreak(base);
}

int main(int argc, char **argv)
{
    n_co = bench_arg(argc, argv, 1, 100000);
    sleep_ms = bench_arg(argc, argv, 2, 60000);
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    struct event_base *base = eco_base();
    struct event *check = event_new(base, -1, EV_PERSIST, check_cb, base);
    struct timeval every = {0, 10 * 1000};
    if (check == NULL || event_add(check, &every) != 0) {
        fprintf(stderr, "bench_mem: cannot add the check timer\n");
        return 1;
    }

    long rss0 = bench_status_kb("VmRSS"), pte0 = bench_status_kb("VmPTE");
    long maps0 = bench_maps_lines();
    t_start = bench_now_ns();
    for (long i = 0; i < n_co; i++) {
        if (eco_go(sleeper, NULL) != 0) {
            int e = errno;
            printf("# eco_go failed after %ld coroutines: %s\n", i, strerror(e));
            printf("RESULT mem_failed_at %ld\n", i);
            return 1;
        }
    }
    if (eco_loop() != 0 || parked != n_co) {
        perror("bench_mem: eco_loop");
        return 1;
    }
    event_free(check);
    eco_teardown(); /* abandons the sleepers and unmaps their stacks */

    double per_co = (double)(rss_kb - rss0) * 1024.0 / (double)n_co;
    double pte_per_co = (double)(pte_kb - pte0) * 1024.0 / (double)n_co;
    long max_maps = read_long("/proc/sys/vm/max_map_count");
    printf("# mem: %ld parked coroutines, VmRSS +%ld kB, VmPTE +%ld kB, maps %ld -> %ld lines "
           "(vm.max_map_count %ld), started and parked in %.0f ms\n",
           n_co, rss_kb - rss0, pte_kb - pte0, maps0, maps_lines, max_maps,
           (t_parked - t_start) / 1e6);
    printf("RESULT mem_rss_bytes_per_co %.1f\n", per_co);
    printf("RESULT mem_pte_bytes_per_co %.1f\n", pte_per_co);
    printf("RESULT mem_maps_lines %ld\n", maps_lines);
    printf("RESULT mem_max_map_count %ld\n", max_maps);
    printf("RESULT mem_coroutines %ld\n", n_co);
    return 0;
}
