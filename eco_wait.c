/*
 * eco_wait.c - the one way to wait.
 *
 * Every blocking call of libeco - sleep, poll, the socket calls, direction
 * locks, channel operations, join - waits the same way:
 *
 *   1. it fills a wait record in its own frame (struct eco_wait: its kind's
 *      ops, its own deadline; eco_sleep's, which has nothing else, in the
 *      coroutine's record) and makes itself findable by whoever will
 *      complete it (an fd's queue, a channel's queue, a joined coroutine);
 *   2. eco__park switches away; the record is reachable as co->wait;
 *   3. it is woken exactly once, by eco__wake with a reason:
 *        READY / CLOSED  by its waker, which took it out of the queue;
 *        TIMEOUT / DEADLINE / CANCEL / NOMEM  by eco__end_wait, which first
 *        lets the kind's cancel hook take it out of the queue;
 *   4. it returns 0 for READY, else -1 with the errno the reason maps to
 *      (eco__wait_fail).
 *
 * Bounds: the call's own deadline and the coroutine's (eco_set_deadline)
 * share one timer per parked coroutine (eco_timer.c), set for the earlier.
 * Deadlines are CLOCK_MONOTONIC nanoseconds and a wait ends only once its
 * deadline has passed, never before.
 *
 * Cancellation (eco_cancel) sets co->stop, which every blocking call checks
 * first, and ends the wait co is parked in, if any: sticky until the
 * coroutine returns or calls eco_uncancel.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <stdio.h>

long eco__ms_left(int64_t deadline)
{
    if (deadline == ECO_NEVER)
        return -1;
    int64_t left = deadline - eco__now_ns();
    return left <= 0 ? 0 : (long)((left + 999999) / 1000000);
}

int eco__wait_fail(int why)
{
    switch (why) {
    case ECO_WAKE_TIMEOUT:
    case ECO_WAKE_DEADLINE:
        errno = ETIMEDOUT;
        break;
    case ECO_WAKE_CANCEL:
        errno = ECANCELED;
        break;
    case ECO_WAKE_CLOSED:
        errno = EBADF;
        break;
    default:
        errno = ENOMEM;
        break;
    }
    return -1;
}

int eco__stopped(eco_t *co)
{
    if (co->stop & ECO_STOP_CANCEL) {
        errno = ECANCELED;
        return -1;
    }
    if ((co->stop & ECO_STOP_DEADLINE) && eco__now_ns() >= co->deadline) {
        errno = ETIMEDOUT;
        return -1;
    }
    return 0;
}

int64_t eco__coarse_ns_call(void)
{
    return eco__coarse_ns();
}

/* ---- the timer of a parked coroutine ---- */

/* When co's wait must end, and why: the earlier of its own deadline and
 * the coroutine's. */
static int64_t bound(const eco_t *co, const struct eco_wait *w, int *reason)
{
    *reason = ECO_WAKE_TIMEOUT;
    if ((co->stop & ECO_STOP_DEADLINE) && co->deadline <= w->deadline) {
        *reason = ECO_WAKE_DEADLINE;
        return co->deadline;
    }
    return w->deadline;
}

void eco__timer_fired(eco_t *co, int64_t when)
{
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE || co->wait == NULL)
        return; /* woken meanwhile, its wake-up queued */
    /* The timer was set for bound(): the coroutine's deadline when that
     * came first (read here from the record, not the parked frame). */
    int reason = (co->stop & ECO_STOP_DEADLINE) && co->deadline <= when ? ECO_WAKE_DEADLINE
                                                                         : ECO_WAKE_TIMEOUT;
    eco__end_wait(co, reason, 1);
}

/* ---- parking and waking ---- */

void eco__wake(eco_t *co, int reason, int now)
{
    struct eco_rt *rt = co->rt;
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE)
        return;
    co->wake = (unsigned char)reason;
    if (now && rt->current == &rt->main)
        eco__run(rt, co);
    else
        eco__runq_push(rt, co);
}

int eco__end_wait(eco_t *co, int reason, int now)
{
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE || co->wait == NULL)
        return 0;
    if (!co->wait->ops->cancel(co, co->wait))
        return 0; /* completed already; its own wake-up is on its way */
    eco__wake(co, reason, now);
    return 1;
}

/* A wait that ends before it parks: it has not switched, so it is running
 * again.  The hook takes it out of its queue unless it completed meanwhile
 * (0), in which case it must park after all, for the wake-up on its way. */
static int end_early(eco_t *co, struct eco_wait *w, int reason)
{
    if (!w->ops->cancel(co, w))
        return 0;
    co->state = ECO_S_ACTIVE;
    co->wait = NULL;
    co->wake = (unsigned char)reason;
    return 1;
}

static const struct eco_wait_ops sleep_ops;

int eco__park_slow(struct eco_wait *w)
{
    struct eco_rt *rt = eco__rt;
    eco_t *co = rt->current;
    int reason = ECO_WAKE_NONE;
    if (co->stop & ECO_STOP_CANCEL) {
        reason = ECO_WAKE_CANCEL;
    } else if (!rt->notify_added && eco__notify_add(rt) != 0) {
        reason = ECO_WAKE_NOMEM;
    } else {
        int why;
        int64_t when = bound(co, w, &why);
        /* A bound that has passed ends the wait here, but a sleep whose
         * time went by before it parked (the thread was preempted) still
         * parks, for one pass of the loop: eco_sleep always lets others
         * run. */
        if (when != ECO_NEVER && when <= eco__now_ns() && w->ops != &sleep_ops)
            reason = why;
        else if (when != ECO_NEVER && eco__timer_set(rt, co, when) != 0)
            reason = ECO_WAKE_NOMEM;
    }
    if (reason != ECO_WAKE_NONE && end_early(co, w, reason))
        return reason;
    rt->sourced += w->ops->sourced;
    eco__park_switch(rt, co);
    rt->sourced -= w->ops->sourced;
    eco__timer_clear(rt, co);
    co->wait = NULL;
    return co->wake;
}

/* eco_teardown: co is abandoned; its wait lets go of its queue and timer
 * while both still exist, and of what it was handed if it completed. */
void eco__abandon(eco_t *co)
{
    if (co->state == ECO_S_PARKED && co->wait != NULL) {
        int done = co->wake == ECO_WAKE_READY || co->wake == ECO_WAKE_CLOSED;
        if (co->wake == ECO_WAKE_NONE && !co->wait->ops->cancel(co, co->wait)) {
            eco__remote_await(co); /* a peer completed it: let its wake-up land */
            done = 1;
        }
        if (done && co->wait->ops->abandon != NULL)
            co->wait->ops->abandon(co, co->wait);
    }
    eco__timer_clear(co->rt, co);
    co->wait = NULL;
}

/* ---- cancellation and deadlines ---- */

int eco_cancel(eco_t *co)
{
    if (co == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (co->rt != eco__rt)
        return eco__remote(co, ECO_WAKE_CANCEL);
    if (co->state == ECO_S_DONE)
        return 0;
    co->stop |= ECO_STOP_CANCEL;
    eco__end_wait(co, ECO_WAKE_CANCEL, 0);
    return 0;
}

int eco_uncancel(void)
{
    eco_t *co = eco__in_coroutine();
    if (co == NULL)
        return eco__eperm();
    co->stop &= (unsigned char)~ECO_STOP_CANCEL;
    return 0;
}

int eco_set_deadline(eco_t *co, long ms)
{
    struct eco_rt *rt = eco__rt;
    if (co == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (rt == NULL || co->rt != rt)
        return eco__eperm();
    if (ms < 0) {
        co->stop &= (unsigned char)~ECO_STOP_DEADLINE;
        co->deadline = ECO_NEVER;
    } else {
        co->deadline = eco__deadline(ms);
        co->stop |= ECO_STOP_DEADLINE;
    }
    /* A wait in progress takes the new bound at once. */
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE || co->wait == NULL)
        return 0;
    int reason;
    int64_t when = bound(co, co->wait, &reason);
    if (when == ECO_NEVER)
        eco__timer_clear(rt, co);
    else if (when <= eco__now_ns())
        eco__end_wait(co, reason, 0);
    else if (eco__timer_set(rt, co, when) != 0)
        eco__end_wait(co, ECO_WAKE_NOMEM, 0);
    return 0;
}

/* ---- sleep ---- */

static void sleep_describe(const struct eco_wait *w, char *buf, size_t n)
{
    snprintf(buf, n, "sleep %ld ms left", eco__ms_left(w->deadline));
}

static int sleep_cancel(eco_t *co, struct eco_wait *w)
{
    (void)co; /* in no queue: only the timer knows it */
    (void)w;
    return 1;
}

static const struct eco_wait_ops sleep_ops = {
    .describe = sleep_describe, .cancel = sleep_cancel, .sourced = 0};

int eco_sleep(long ms)
{
    eco_t *co = eco__blocking();
    if (co == NULL)
        return -1;
    if (ms < 0) {
        errno = EINVAL;
        return -1;
    }
    if (ms == 0)
        return eco__yield_to_loop(co->rt, co);
    struct eco_wait *w = &co->sleep_wait;
    w->ops = &sleep_ops;
    w->deadline = eco__deadline(ms);
    int why = eco__park(w);
    return why == ECO_WAKE_TIMEOUT ? 0 : eco__wait_fail(why);
}
