/*
 * bench_blocking.c - the round trip of eco_run_blocking beside a plain
 * thread pool.
 *
 *   bench_blocking eco CALLERS N REPS
 *       CALLERS coroutines of one runtime each call
 *       eco_run_blocking(noop) N / CALLERS times: park, run on a pool
 *       thread, wake through the runtime's eventfd, resume.
 *   bench_blocking cond CALLERS N REPS
 *       CALLERS plain threads each hand a no-op job N / CALLERS times to a
 *       pool of 4 threads (a mutex, a condition variable for the queue)
 *       and wait for it on a condition variable of their own: the usual
 *       hand-rolled pool.
 *
 * Both pools have 4 threads.  Prints "RESULT blocking_<mode>_<callers>_ns
 * <median wall ns per call>" and "..._cpu_ns <median CPU ns per call>" (user
 * + system time of the whole process, every thread: less sensitive than
 * wall time to a busy machine's scheduling) over REPS repetitions, after a
 * warm-up.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>

#define POOL 4

static void *noop(void *arg)
{
    return arg;
}

/* ---- libeco ---- */

static long per_caller;

static void *eco_caller(void *arg)
{
    (void)arg;
    for (long i = 0; i < per_caller; i++) {
        void *r;
        if (eco_run_blocking(noop, (void *)i, &r, NULL) != 0 || r != (void *)i) {
            perror("eco_run_blocking");
            exit(1);
        }
    }
    return NULL;
}

static double run_eco(int callers, long n)
{
    per_caller = n / callers;
    double t0 = bench_now_ns();
    for (int c = 0; c < callers; c++)
        if (eco_go(eco_caller, NULL) != 0)
            exit(1);
    if (eco_loop() != 0)
        exit(1);
    return (bench_now_ns() - t0) / (double)(per_caller * callers);
}

/* ---- a plain pool ---- */

struct job {
    struct job *next;
    void *(*fn)(void *);
    void *arg, *result;
    int done;
    pthread_mutex_t m;
    pthread_cond_t c;
};

static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    struct job *head, *tail;
    int stop;
} q = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, NULL, 0};

static void *pool_thread(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&q.m);
    for (;;) {
        while (q.head == NULL && !q.stop)
            pthread_cond_wait(&q.c, &q.m);
        if (q.head == NULL)
            break;
        struct job *j = q.head;
        q.head = j->next;
        if (q.head == NULL)
            q.tail = NULL;
        pthread_mutex_unlock(&q.m);
        j->result = j->fn(j->arg);
        pthread_mutex_lock(&j->m);
        j->done = 1;
        pthread_cond_signal(&j->c);
        pthread_mutex_unlock(&j->m);
        pthread_mutex_lock(&q.m);
    }
    pthread_mutex_unlock(&q.m);
    return NULL;
}

static void *cond_caller(void *arg)
{
    (void)arg;
    struct job j;
    pthread_mutex_init(&j.m, NULL);
    pthread_cond_init(&j.c, NULL);
    for (long i = 0; i < per_caller; i++) {
        j.next = NULL;
        j.fn = noop;
        j.arg = (void *)i;
        j.done = 0;
        pthread_mutex_lock(&q.m);
        if (q.tail != NULL)
            q.tail->next = &j;
        else
            q.head = &j;
        q.tail = &j;
        pthread_cond_signal(&q.c);
        pthread_mutex_unlock(&q.m);
        pthread_mutex_lock(&j.m);
        while (!j.done)
            pthread_cond_wait(&j.c, &j.m);
        pthread_mutex_unlock(&j.m);
        if (j.result != (void *)i)
            exit(1);
    }
    pthread_cond_destroy(&j.c);
    pthread_mutex_destroy(&j.m);
    return NULL;
}

static double run_cond(int callers, long n)
{
    per_caller = n / callers;
    pthread_t t[64];
    double t0 = bench_now_ns();
    for (int c = 0; c < callers; c++)
        pthread_create(&t[c], NULL, cond_caller, NULL);
    for (int c = 0; c < callers; c++)
        pthread_join(t[c], NULL);
    return (bench_now_ns() - t0) / (double)(per_caller * callers);
}

static double cpu_ns(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ((double)ru.ru_utime.tv_sec + (double)ru.ru_stime.tv_sec) * 1e9 +
           ((double)ru.ru_utime.tv_usec + (double)ru.ru_stime.tv_usec) * 1e3;
}

int main(int argc, char **argv)
{
    if (argc < 2 || (strcmp(argv[1], "eco") != 0 && strcmp(argv[1], "cond") != 0)) {
        fprintf(stderr, "usage: bench_blocking eco|cond [CALLERS [N [REPS]]]\n");
        return 2;
    }
    int eco = strcmp(argv[1], "eco") == 0;
    int callers = (int)bench_arg(argc, argv, 2, 1);
    long n = bench_arg(argc, argv, 3, 100000);
    int reps = (int)bench_arg(argc, argv, 4, 7);
    if (callers > 64) {
        fprintf(stderr, "at most 64 callers\n");
        return 2;
    }
    pthread_t pool[POOL];
    if (eco) {
        if (eco_setup(NULL) != 0 || eco_set_blocking_threads(POOL) != 0)
            return 1;
    } else {
        for (int i = 0; i < POOL; i++)
            pthread_create(&pool[i], NULL, pool_thread, NULL);
    }
    double v[64], cpu[64];
    if (reps > 64)
        reps = 64;
    (void)(eco ? run_eco(callers, n / 10) : run_cond(callers, n / 10)); /* warm-up */
    for (int r = 0; r < reps; r++) {
        double c0 = cpu_ns();
        v[r] = eco ? run_eco(callers, n) : run_cond(callers, n);
        cpu[r] = (cpu_ns() - c0) / (double)(n / callers * callers);
    }
    printf("RESULT blocking_%s_%d_ns %.1f\n", argv[1], callers, bench_median(v, reps));
    printf("RESULT blocking_%s_%d_cpu_ns %.1f\n", argv[1], callers, bench_median(cpu, reps));
    if (eco) {
        eco_teardown();
    } else {
        pthread_mutex_lock(&q.m);
        q.stop = 1;
        pthread_cond_broadcast(&q.c);
        pthread_mutex_unlock(&q.m);
        for (int i = 0; i < POOL; i++)
            pthread_join(pool[i], NULL);
    }
    return 0;
}
