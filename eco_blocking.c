/*
 * eco_blocking.c - blocking work off the loop: eco_run_blocking.
 *
 * Each runtime owns a small pool of threads, started one at a time when a
 * call finds no idle thread to take it (up to the limit) and joined at
 * eco_teardown.  A call is a job in a FIFO; the caller parks on a promise
 * that the thread resolves with the job once fn has returned.  A caller
 * that gives up leaves the job to the promise: fn runs anyway and the late
 * resolve hands the job to job_drop (the user's drop, then free).
 *
 * The threads never touch the runtime: eco_promise_resolve wakes the
 * caller through eco__remote, the runtime's one eventfd.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define THREADS_DEFAULT 4
#define THREADS_MAX 1024

struct job {
    struct job *next;
    void *(*fn)(void *arg);
    void *arg;
    void (*drop)(void *arg, void *result);
    void *result;
    eco_promise_t *p;
};

struct pool {
    pthread_mutex_t m;
    pthread_cond_t cv;    /* a job was queued, the limit rose, or stop */
    struct job *head, *tail;
    size_t queued;        /* jobs in the FIFO */
    size_t running;       /* jobs being run */
    size_t idle;          /* threads waiting on cv */
    size_t starting;      /* threads started, not yet looking for work */
    size_t limit;         /* most jobs run at once */
    int stop;             /* eco_teardown: run what is queued, then exit */
    pthread_t *threads;   /* every thread started, joined at teardown */
    size_t nthreads, cap;
};

/* This thread's runtime's pool (NULL until eco_run_blocking or
 * eco_set_blocking_threads first need it). */
static __thread struct pool *pool_cur;

static void job_drop(void *value)
{
    struct job *j = value;
    if (j->drop != NULL)
        j->drop(j->arg, j->result);
    free(j);
}

static void *worker(void *arg)
{
    struct pool *pl = arg;
    pthread_setname_np(pthread_self(), "eco-blocking"); /* for top -H, gdb */
    pthread_mutex_lock(&pl->m);
    pl->starting--;
    for (;;) {
        if (pl->head != NULL && pl->running < pl->limit) {
            struct job *j = pl->head;
            pl->head = j->next;
            if (pl->head == NULL)
                pl->tail = NULL;
            pl->queued--;
            pl->running++;
            pthread_mutex_unlock(&pl->m);
            j->result = j->fn(j->arg);
            eco_promise_resolve(j->p, j); /* j is the promise's now */
            pthread_mutex_lock(&pl->m);
            pl->running--;
            if (pl->stop)
                pthread_cond_broadcast(&pl->cv); /* the others may be done */
            continue;
        }
        if (pl->stop && pl->head == NULL)
            break;
        pl->idle++;
        pthread_cond_wait(&pl->cv, &pl->m);
        pl->idle--;
    }
    pthread_mutex_unlock(&pl->m);
    return NULL;
}

/* Starts threads while queued jobs outnumber the threads that will take
 * them (idle, or started and not yet looking), up to the limit.  Called
 * with the lock held.  0, or an errno value when no thread exists and
 * none could be started. */
static int grow(struct pool *pl)
{
    while (pl->queued > pl->idle + pl->starting && pl->nthreads < pl->limit) {
        if (pl->nthreads == pl->cap) {
            size_t cap = pl->cap ? pl->cap * 2 : 8;
            pthread_t *t = realloc(pl->threads, cap * sizeof *t);
            if (t == NULL)
                return pl->nthreads > 0 ? 0 : ENOMEM;
            pl->threads = t;
            pl->cap = cap;
        }
        /* The threads take no signal: the program's handlers (libevent's
         * included) expect them on its own threads. */
        sigset_t all, old;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        int err = pthread_create(&pl->threads[pl->nthreads], NULL, worker, pl);
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        if (err != 0)
            return pl->nthreads > 0 ? 0 : err;
        pl->nthreads++;
        pl->starting++;
    }
    return 0;
}

static void pool_at_teardown(struct eco_rt *rt)
{
    (void)rt;
    struct pool *pl = pool_cur;
    if (pl == NULL)
        return;
    pthread_mutex_lock(&pl->m);
    pl->stop = 1;
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->m);
    for (size_t i = 0; i < pl->nthreads; i++)
        pthread_join(pl->threads[i], NULL);
    pthread_cond_destroy(&pl->cv);
    pthread_mutex_destroy(&pl->m);
    free(pl->threads);
    free(pl);
    pool_cur = NULL;
}

static const struct eco_hooks pool_hooks = {NULL, pool_at_teardown, NULL};

/* The runtime's pool, made if need be.  NULL with errno. */
static struct pool *pool_get(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL) {
        errno = EPERM;
        return NULL;
    }
    if (pool_cur != NULL)
        return pool_cur;
    struct pool *pl = calloc(1, sizeof *pl);
    if (pl == NULL || eco__hooks_add(rt, &pool_hooks) < 0) {
        free(pl);
        errno = ENOMEM;
        return NULL;
    }
    pthread_mutex_init(&pl->m, NULL);
    pthread_cond_init(&pl->cv, NULL);
    pl->limit = THREADS_DEFAULT;
    pool_cur = pl;
    return pl;
}

int eco_set_blocking_threads(size_t n)
{
    if (n < 1 || n > THREADS_MAX) {
        errno = EINVAL;
        return -1;
    }
    struct pool *pl = pool_get();
    if (pl == NULL)
        return -1;
    pthread_mutex_lock(&pl->m);
    pl->limit = n;
    int err = grow(pl);
    pthread_cond_broadcast(&pl->cv);
    pthread_mutex_unlock(&pl->m);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

int eco_run_blocking(void *(*fn)(void *arg), void *arg, void **result,
                     void (*drop)(void *arg, void *result))
{
    /* A caller already cancelled or past its deadline still queues fn:
     * eco_promise_wait then gives up at once, as it would later, so that
     * ECANCELED and ETIMEDOUT always leave arg and the result to drop. */
    if (eco__in_coroutine() == NULL)
        return eco__eperm();
    if (fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    struct pool *pl = pool_get();
    if (pl == NULL)
        return -1;
    struct job *j = malloc(sizeof *j);
    eco_promise_t *p = j != NULL ? eco_promise_new(job_drop) : NULL;
    if (p == NULL) {
        free(j);
        errno = ENOMEM;
        return -1;
    }
    eco__promise_label(p, "blocking call");
    *j = (struct job){.fn = fn, .arg = arg, .drop = drop, .p = p};
    pthread_mutex_lock(&pl->m);
    if (pl->tail != NULL)
        pl->tail->next = j;
    else
        pl->head = j;
    pl->tail = j;
    pl->queued++;
    int err = grow(pl);
    if (err != 0) {
        /* No thread at all: take the job back, nothing ran.  It is the
         * tail, and the only job: any before it failed the same way. */
        pl->head = pl->tail = NULL;
        pl->queued = 0;
        pthread_mutex_unlock(&pl->m);
        free(j);
        eco_promise_reject(p, err);
        eco_promise_wait(p, 0, NULL);
        errno = err;
        return -1;
    }
    if (pl->idle > 0)
        pthread_cond_signal(&pl->cv);
    pthread_mutex_unlock(&pl->m);
    void *v;
    if (eco_promise_wait(p, -1, &v) != 0)
        return -1; /* ECANCELED, ETIMEDOUT: the job runs on, then job_drop */
    j = v;
    if (result != NULL)
        *result = j->result;
    else if (drop != NULL)
        drop(arg, j->result);
    free(j);
    return 0;
}
