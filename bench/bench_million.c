/*
 * bench_million.c - a million parked coroutines, the C twin of
 * bench/go/million.go.
 *
 *     bench_million [N [sleep|chan]]   default 1,000,000 sleep
 *
 * Starts N coroutines with eco_go (default stack size, each with its guard
 * region); each parks, in eco_sleep (one libevent timer each) or on a
 * channel nobody sends to (no timer): the difference is what the timers
 * cost.  The last one to park notes the time and breaks the loop.
 * Reports the seconds from the first eco_go until all are parked, VmRSS
 * and VmPTE (page tables, not part of VmRSS) per coroutine over the
 * process before, the lines of /proc/self/maps, and then the seconds
 * eco_teardown takes to abandon them all (sleep) or eco_chan_close takes to
 * wake them and the loop to finish them (chan; teardown follows).
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>
#include <event2/event.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static long n_co, parked;
static int use_chan;
static eco_chan_t *gate;
static double t_parked;

static void *parker(void *arg)
{
    (void)arg;
    if (++parked == n_co) {
        t_parked = bench_now_ns();
        event_base_loopbreak(eco_base());
    }
    if (use_chan) {
        int v;
        eco_chan_recv(gate, &v); /* fails with EPIPE once closed */
    } else {
        eco_sleep(3600 * 1000L);
    }
    return NULL;
}

int main(int argc, char **argv)
{
    n_co = bench_arg(argc, argv, 1, 1000000);
    use_chan = argc > 2 && strcmp(argv[2], "chan") == 0;
    const char *mode = use_chan ? "chan" : "sleep";
    long stack_kb = bench_arg(argc, argv, 3, 0);
    if (eco_setup(NULL) != 0 || (stack_kb > 0 && eco_set_stack_size((size_t)stack_kb * 1024) != 0)) {
        perror("eco_setup");
        return 1;
    }
    if (use_chan && (gate = eco_chan_new(sizeof(int), 0)) == NULL) {
        perror("eco_chan_new");
        return 1;
    }
    long rss0 = bench_status_kb("VmRSS"), pte0 = bench_status_kb("VmPTE");
    double t0 = bench_now_ns();
    for (long i = 0; i < n_co; i++) {
        if (eco_go(parker, NULL) != 0) {
            printf("# eco_go failed after %ld coroutines: %s\n", i, strerror(errno));
            return 1;
        }
    }
    /* Breaks out (not EDEADLK: the loop is broken by the last one). */
    if (eco_loop() != 0 || parked != n_co) {
        fprintf(stderr, "bench_million: %ld of %ld parked\n", parked, n_co);
        return 1;
    }
    double start_s = (t_parked - t0) / 1e9;
    long rss = bench_status_kb("VmRSS") - rss0, pte = bench_status_kb("VmPTE") - pte0;
    long maps = bench_maps_lines();
    eco_stats_t st;
    eco_stats(&st);
    printf("# %ld coroutines parked (%s) in %.2f s; %.0f B resident each, %.0f B of page "
           "tables each; %ld maps lines\n",
           n_co, mode, start_s, rss * 1024.0 / (double)n_co, pte * 1024.0 / (double)n_co, maps);
    printf("RESULT million_%s_start_s %.3f\n", mode, start_s);
    printf("RESULT million_%s_rss_bytes_per_co %.1f\n", mode, rss * 1024.0 / (double)n_co);
    printf("RESULT million_%s_pte_bytes_per_co %.1f\n", mode, pte * 1024.0 / (double)n_co);
    printf("RESULT million_%s_maps %ld\n", mode, maps);
    printf("RESULT million_%s_committed_bytes_per_co %.1f\n", mode,
           (double)st.committed / (double)n_co);
    if (use_chan) {
        double t1 = bench_now_ns();
        eco_chan_close(gate);
        if (eco_loop() != 0) {
            perror("eco_loop");
            return 1;
        }
        printf("RESULT million_chan_finish_s %.3f\n", (bench_now_ns() - t1) / 1e9);
        eco_chan_free(gate);
    }
    double t2 = bench_now_ns();
    eco_teardown();
    double td = (bench_now_ns() - t2) / 1e9;
    printf("# eco_teardown: %.3f s\n", td);
    printf("RESULT million_%s_teardown_s %.3f\n", mode, td);
    return 0;
}
