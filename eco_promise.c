/*
 * eco_promise.c - a coroutine waits for one callback: promises.
 *
 * A promise has two sides, the waiter (one eco_promise_wait) and the
 * resolver (one eco_promise_resolve or eco_promise_reject), and its state
 * word says who is done:
 *
 *   EMPTY ---waiter parks---> PARKED ---resolver---> RESOLVED (waiter frees)
 *     |                         |
 *     +--resolver--> RESOLVED   +--waiter gives up--> GONE (resolver frees)
 *     +--waiter gives up-----------------------------> GONE
 *
 * Every move is one compare-and-swap, so the two sides never both think
 * they are first; the side that finds the other one done frees the
 * promise.  This is the two references of a reference count, without the
 * count: the state already says which reference is left.
 *
 * The resolver may be any thread.  It wakes a parked waiter through
 * eco__remote (at once in the waiter's own thread, through the run queue;
 * from another, through the runtime's eventfd).  The waiter's cancel hook
 * is its side of the race: it moves PARKED to GONE, or finds RESOLVED and
 * lets the wake-up that is on its way end the wait.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum {
    P_EMPTY,    /* nobody done yet, the waiter not parked */
    P_PARKED,   /* the waiter is parked in eco_promise_wait (co set) */
    P_RESOLVED, /* the resolver is done: value or err is there */
    P_GONE,     /* the waiter is done without the value */
};

struct eco_promise {
    _Atomic int state;
    int err;              /* eco_promise_reject's, else 0 */
    eco_t *co;            /* the waiter, while PARKED */
    void *value;
    void (*drop)(void *value);
    void (*cancel)(void *arg);
    void *cancel_arg;
    char what[40];        /* eco_dump's words; "" is "promise" */
};

eco_promise_t *eco_promise_new(void (*drop)(void *value))
{
    eco_promise_t *p = malloc(sizeof *p);
    if (p == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(p, 0, sizeof *p);
    atomic_init(&p->state, P_EMPTY);
    p->drop = drop;
    return p;
}

int eco_promise_on_cancel(eco_promise_t *p, void (*fn)(void *arg), void *arg)
{
    if (p == NULL) {
        errno = EINVAL;
        return -1;
    }
    p->cancel = fn;
    p->cancel_arg = arg;
    return 0;
}

void eco__promise_label(eco_promise_t *p, const char *what)
{
    snprintf(p->what, sizeof p->what, "%s", what);
}

/* ---- the resolver's side ---- */

static int settle(eco_promise_t *p, void *value, int err)
{
    if (p == NULL) {
        errno = EINVAL;
        return -1;
    }
    int s = atomic_load_explicit(&p->state, memory_order_acquire);
    if (s != P_RESOLVED) {
        /* Written before the CAS that publishes them; the waiter reads
         * them only after seeing RESOLVED. */
        p->value = value;
        p->err = err;
    }
    for (;;) {
        if (s == P_GONE) {
            /* The waiter gave up: nobody wants the value. */
            if (err == 0 && p->drop != NULL)
                p->drop(value);
            free(p);
            return 1;
        }
        if (s == P_RESOLVED) {
            errno = EALREADY; /* a second resolve: the caller's bug */
            return -1;
        }
        /* Read before the CAS: after it the waiter may free p, but it
         * cannot leave the wait before our wake-up, so co stays valid. */
        eco_t *co = s == P_PARKED ? p->co : NULL;
        if (atomic_compare_exchange_weak_explicit(&p->state, &s, P_RESOLVED, memory_order_acq_rel,
                                                  memory_order_acquire)) {
            /* ENOMEM here (the waiter's runtime could not queue the
             * request) would leave the waiter parked; as for channels, the
             * process has to be out of memory first. */
            if (co != NULL)
                (void)eco__remote(co, ECO_WAKE_READY);
            return 0;
        }
    }
}

int eco_promise_resolve(eco_promise_t *p, void *value)
{
    return settle(p, value, 0);
}

int eco_promise_reject(eco_promise_t *p, int err)
{
    if (err <= 0) {
        errno = EINVAL;
        return -1;
    }
    return settle(p, NULL, err);
}

/* ---- the waiter's side ---- */

/* The waiter is done with p, which the resolver settled: hands over the
 * value (or drops it) and frees p.  0, or -1 with the rejection's errno. */
static int take(eco_promise_t *p, void **value)
{
    int err = p->err;
    void *v = p->value;
    void (*drop)(void *) = p->drop;
    free(p);
    if (err != 0) {
        errno = err;
        return -1;
    }
    if (value != NULL)
        *value = v;
    else if (drop != NULL)
        drop(v);
    return 0;
}

/* Gives up the waiter's side before it parked.  1 when it did (the
 * resolver frees p), 0 when p had been settled meanwhile. */
static int give_up(eco_promise_t *p, int from)
{
    void (*cancel)(void *) = p->cancel;
    void *arg = p->cancel_arg;
    if (!atomic_compare_exchange_strong_explicit(&p->state, &from, P_GONE, memory_order_acq_rel,
                                                 memory_order_acquire))
        return 0;
    /* From here on p is the resolver's; it may free it any time. */
    if (cancel != NULL)
        cancel(arg);
    return 1;
}

struct promise_wait {
    struct eco_wait w;
    eco_promise_t *p;
};

static void promise_describe(const struct eco_wait *w, char *buf, size_t n)
{
    /* Parked and not woken: the state is PARKED or RESOLVED, and only the
     * waiter frees p in either, so p is there. */
    const eco_promise_t *p = ((const struct promise_wait *)w)->p;
    snprintf(buf, n, "%s", p->what[0] != '\0' ? p->what : "promise");
}

static int promise_cancel(eco_t *co, struct eco_wait *w)
{
    (void)co;
    return give_up(((struct promise_wait *)w)->p, P_PARKED);
}

/* Settled, but the waiter will never take it: the value goes as if
 * nobody had wanted it. */
static void promise_abandon(eco_t *co, struct eco_wait *w)
{
    (void)co;
    take(((struct promise_wait *)w)->p, NULL);
}

static const struct eco_wait_ops promise_ops = {.describe = promise_describe,
                                                .cancel = promise_cancel,
                                                .sourced = 1,
                                                .abandon = promise_abandon};

int eco_promise_wait(eco_promise_t *p, long timeout_ms, void **value)
{
    if (p == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (atomic_load_explicit(&p->state, memory_order_acquire) == P_RESOLVED)
        return take(p, value);
    int err = 0;
    eco_t *co = NULL;
    if (timeout_ms == 0)
        err = ETIMEDOUT;
    else if ((co = eco__in_coroutine()) == NULL)
        err = EPERM;
    else if (eco__check_stop(co) != 0)
        err = errno;
    if (err != 0) {
        if (!give_up(p, P_EMPTY))
            return take(p, value);
        errno = err;
        return -1;
    }
    p->co = co;
    int s = P_EMPTY;
    if (!atomic_compare_exchange_strong_explicit(&p->state, &s, P_PARKED, memory_order_acq_rel,
                                                 memory_order_acquire))
        return take(p, value); /* settled meanwhile, in another thread */
    struct promise_wait pw = {.w = {.ops = &promise_ops, .deadline = eco__deadline(timeout_ms)},
                              .p = p};
    int why = eco__park(&pw.w);
    if (why == ECO_WAKE_READY)
        return take(p, value);
    /* The hook moved p to GONE: it is the resolver's now, maybe freed. */
    return eco__wait_fail(why);
}
