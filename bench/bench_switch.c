/*
 * bench_switch.c - cost of one context switch: libeco, and ucontext
 * (swapcontext) for reference.
 *
 *     bench_switch eco      [round_trips [reps]]   default 1,000,000 x 11
 *     bench_switch ucontext [round_trips [reps]]   default    50,000 x  7
 *
 * A coroutine yields in a loop and the main stack resumes it: one round
 * trip is two switches.  Each repetition uses a fresh coroutine and is timed
 * alone; the median is reported.  One untimed repetition runs first to warm
 * caches, branch predictors and the stack pool.
 *
 * RESULT switch_<impl>_switches counts every switch of the timed and warm-up
 * loops, so that two runs with different round_trips under callgrind give
 * instructions per switch by difference (bench/run_core.sh).
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <ucontext.h>

#define STACK_SIZE ((size_t)256 * 1024)

/* ---- libeco ---- */

static void *eco_body(void *arg)
{
    long n = *(const long *)arg;
    for (long i = 0; i < n; i++)
        eco_yield();
    return NULL;
}

static double eco_rep(long n)
{
    eco_t *co = eco_create(eco_body, &n, NULL);
    if (co == NULL) {
        perror("eco_create");
        exit(1);
    }
    /* No error check inside the loop: the peers' loops have none either.
     * The state check after it proves every resume landed. */
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        eco_resume(co);
    double t1 = bench_now_ns();
    if (eco_state(co) != ECO_PENDING || eco_resume(co) != 0 || eco_state(co) != ECO_DONE ||
        eco_join(co, NULL) != 0) {
        fprintf(stderr, "bench_switch: coroutine did not run as expected\n");
        exit(1);
    }
    return (t1 - t0) / (2.0 * (double)n);
}

/* ---- ucontext ---- */

static ucontext_t uc_main, uc_co;
static long uc_n;

static void uc_body(void)
{
    for (long i = 0; i < uc_n; i++)
        swapcontext(&uc_co, &uc_main);
    /* Returning follows uc_link back to uc_main. */
}

static double uc_rep(long n, char *stack)
{
    if (getcontext(&uc_co) != 0) {
        perror("getcontext");
        exit(1);
    }
    uc_co.uc_stack.ss_sp = stack;
    uc_co.uc_stack.ss_size = STACK_SIZE;
    uc_co.uc_link = &uc_main;
    makecontext(&uc_co, uc_body, 0);
    uc_n = n;
    double t0 = bench_now_ns();
    for (long i = 0; i < n; i++)
        swapcontext(&uc_main, &uc_co);
    double t1 = bench_now_ns();
    swapcontext(&uc_main, &uc_co); /* lets uc_body return */
    return (t1 - t0) / (2.0 * (double)n);
}

int main(int argc, char **argv)
{
    const char *impl = argc > 1 ? argv[1] : "eco";
    int is_eco = strcmp(impl, "eco") == 0;
    if (!is_eco && strcmp(impl, "ucontext") != 0) {
        fprintf(stderr, "usage: %s eco|ucontext [round_trips [reps]]\n", argv[0]);
        return 2;
    }
    /* swapcontext makes a system call (the signal mask) per switch: fewer
     * round trips give it a similar run time. */
    long n = bench_arg(argc, argv, 2, is_eco ? 1000000 : 50000);
    int reps = (int)bench_arg(argc, argv, 3, is_eco ? 11 : 7);
    double *ns = malloc((size_t)reps * sizeof *ns);
    if (ns == NULL)
        return 1;

    if (is_eco) {
        if (eco_setup(NULL) != 0) {
            perror("eco_setup");
            return 1;
        }
        eco_rep(n); /* warm-up */
        for (int r = 0; r < reps; r++)
            ns[r] = eco_rep(n);
        eco_teardown();
    } else {
        char *stack = mmap(NULL, STACK_SIZE, PROT_READ | PROT_WRITE,
                           MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
        if (stack == MAP_FAILED) {
            perror("mmap");
            return 1;
        }
        uc_rep(n, stack); /* warm-up */
        for (int r = 0; r < reps; r++)
            ns[r] = uc_rep(n, stack);
        munmap(stack, STACK_SIZE);
    }

    double med = bench_median(ns, reps);
    printf("# switch %s: %ld round trips x %d reps, ns/switch min %.2f median %.2f max %.2f\n",
           impl, n, reps, ns[0], med, ns[reps - 1]);
    printf("RESULT switch_%s_ns %.3f\n", impl, med);
    printf("RESULT switch_%s_switches %ld\n", impl, 2 * n * (reps + 1));
    free(ns);
    return 0;
}
