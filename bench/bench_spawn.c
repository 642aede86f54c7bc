/*
 * bench_spawn.c - cost of a short-lived coroutine with a warm stack pool:
 * eco_create + first eco_resume + the body returning + eco_join.
 *
 *     bench_spawn [ops [reps]]   default 1,000,000 x 11
 *
 * The untimed warm-up repetition leaves a stack in the pool, so the timed
 * ones make no system call: each join hands the stack back and the next
 * create takes it.  The median of the repetitions is reported.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>

#include <stdio.h>
#include <stdlib.h>

static void *trivial(void *arg)
{
    return arg;
}

static double rep(long n)
{
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++) {
        eco_t *co = eco_create(trivial, NULL, NULL);
        if (co == NULL) {
            perror("eco_create");
            exit(1);
        }
        eco_resume(co);
        eco_join(co, NULL);
    }
    double t1 = bench_now_ns();
    return (t1 - t0) / (double)n;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, 1, 1000000);
    int reps = (int)bench_arg(argc, argv, 2, 11);
    double *ns = malloc((size_t)reps * sizeof *ns);
    if (ns == NULL || eco_setup(NULL) != 0) {
        perror("bench_spawn");
        return 1;
    }
    rep(n); /* warm-up: fills the pool */
    for (int r = 0; r < reps; r++)
        ns[r] = rep(n);
    eco_stats_t st;
    eco_stats(&st);
    /* One stack, reused: the pool really was warm, nothing leaked. */
    if (st.alive != 0 || st.stacks != 1) {
        fprintf(stderr, "bench_spawn: %zu alive, %zu stacks\n", st.alive, st.stacks);
        return 1;
    }
    eco_teardown();
    double med = bench_median(ns, reps);
    printf("# spawn eco (create+resume+finish+join, warm pool): %ld ops x %d reps, ns/op min %.2f "
           "median %.2f max %.2f\n", n, reps, ns[0], med, ns[reps - 1]);
    printf("RESULT spawn_eco_ns %.3f\n", med);
    printf("RESULT spawn_eco_ops %ld\n", n * (reps + 1));
    free(ns);
    return 0;
}
