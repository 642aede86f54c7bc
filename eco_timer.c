/*
 * eco_timer.c - the timers of parked coroutines: one heap per runtime,
 * one libevent timer.
 *
 * A bounded wait (eco_wait.c) puts its coroutine here with the time its
 * wait must end.  The pending times sit in a 4-ary min-heap of
 * (time, slot) pairs in one array; a slot names the coroutine and where
 * its pair is in the heap, so that a wait that ends early can take its
 * pair out.  Ordering the heap reads and writes only these two dense
 * arrays, never a coroutine's record: with 100,000 coroutines asleep each
 * record is a cache and TLB miss of its own, and a heap of libevent
 * events, one in each record, paid about 17 of those per timer (issue 15;
 * BENCHMARKS.md, Timers at scale).  Four children per node halve the
 * depth of a binary heap and fit one cache line.
 *
 * The runtime's one libevent timer is armed for the earliest time; its
 * callback ends every wait whose time has passed by the clock read on
 * entry (a wait armed during the callback ends in a later one) and arms
 * it again.  It is in the base only while the heap is not empty.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>

#define ARITY 4

static size_t parent(size_t i)
{
    return (i - 1) / ARITY;
}

/* Puts e at heap position i and tells its slot. */
static void place(struct eco_timers *t, size_t i, struct eco_tm_ent e)
{
    t->heap[i] = e;
    t->slots[e.slot].pos = (uint32_t)i;
}

static void sift_up(struct eco_timers *t, size_t i, struct eco_tm_ent e)
{
    while (i > 0 && e.when < t->heap[parent(i)].when) {
        place(t, i, t->heap[parent(i)]);
        i = parent(i);
    }
    place(t, i, e);
}

static void sift_down(struct eco_timers *t, size_t i, struct eco_tm_ent e)
{
    for (;;) {
        size_t c = ARITY * i + 1;
        if (c >= t->n)
            break;
        size_t end = c + ARITY < t->n ? c + ARITY : t->n, m = c;
        for (size_t k = c + 1; k < end; k++)
            if (t->heap[k].when < t->heap[m].when)
                m = k;
        if (e.when <= t->heap[m].when)
            break;
        place(t, i, t->heap[m]);
        i = m;
    }
    place(t, i, e);
}

/* Puts e at position i, where an entry was: up or down as its time says. */
static void settle(struct eco_timers *t, size_t i, struct eco_tm_ent e)
{
    if (i > 0 && e.when < t->heap[parent(i)].when)
        sift_up(t, i, e);
    else
        sift_down(t, i, e);
}

/* Takes co's entry out of the heap and frees its slot. */
static void remove_entry(struct eco_timers *t, eco_t *co)
{
    uint32_t s = co->tslot - 1;
    size_t i = t->slots[s].pos;
    co->tslot = 0;
    t->slots[s].co = NULL;
    t->slots[s].pos = t->free; /* the free list runs through pos */
    t->free = s + 1;
    struct eco_tm_ent last = t->heap[--t->n];
    if (i < t->n)
        settle(t, i, last);
}

static int grow(void **p, uint32_t *cap, size_t each)
{
    uint32_t n = *cap ? *cap * 2 : 64;
    if (n <= *cap) {
        errno = ENOMEM;
        return -1;
    }
    void *q = realloc(*p, (size_t)n * each);
    if (q == NULL) {
        errno = ENOMEM;
        return -1;
    }
    *p = q;
    *cap = n;
    return 0;
}

/* The heap has emptied: every slot is free again, and what a crowd of
 * timers made the arrays grow to goes back (a handful stays allocated). */
static void emptied(struct eco_timers *t)
{
    t->nslots = 0;
    t->free = 0;
    if (t->cap > 4096) {
        free(t->heap);
        free(t->slots);
        t->heap = NULL;
        t->slots = NULL;
        t->cap = t->slots_cap = 0;
    }
}

static void fire_cb(evutil_socket_t fd, short what, void *arg);

/* Makes the libevent timer fire by the heap's earliest time.  0, or -1
 * with errno. */
static int arm(struct eco_rt *rt, struct eco_timers *t)
{
    int64_t when = t->heap[0].when;
    if (t->ev_added && t->ev_when <= when)
        return 0; /* it fires first; its callback arms it again */
    if (t->ev == NULL) {
        t->ev = event_new(rt->base, -1, 0, fire_cb, rt);
        if (t->ev == NULL) {
            errno = ENOMEM;
            return -1;
        }
    }
    int64_t left = when - eco__now_ns();
    if (left < 0)
        left = 0;
    /* Rounded up to the microsecond, never early by our rounding (libevent's
     * own clock may be coarse: fire_cb checks). */
    int64_t us = (left + 999) / 1000;
    struct timeval tv = {.tv_sec = (time_t)(us / 1000000), .tv_usec = (suseconds_t)(us % 1000000)};
    if (eco__ev_add(rt, t->ev, &tv, &t->ev_added) != 0)
        return -1;
    t->ev_when = when;
    return 0;
}

static void fire_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    struct eco_timers *t = &rt->tm;
    (void)fd;
    (void)what;
    eco__ev_fired(rt, &t->ev_added);
    int64_t now = eco__now_ns();
    while (t->n > 0 && t->heap[0].when <= now) {
        struct eco_tm_ent e = t->heap[0];
        eco_t *co = t->slots[e.slot].co;
        remove_entry(t, co);
        eco__timer_fired(co, e.when);
    }
    /* Should libevent refuse the timer, the waits it would end end now
     * rather than never. */
    while (t->n > 0 && arm(rt, t) != 0) {
        eco_t *co = t->slots[t->heap[0].slot].co;
        remove_entry(t, co);
        eco__end_wait(co, ECO_WAKE_NOMEM, 1);
    }
    if (t->n == 0)
        emptied(t);
}

int eco__timer_set(struct eco_rt *rt, eco_t *co, int64_t when)
{
    struct eco_timers *t = &rt->tm;
    if (co->tslot != 0) {
        uint32_t s = co->tslot - 1;
        settle(t, t->slots[s].pos, (struct eco_tm_ent){.when = when, .slot = s});
    } else {
        if (t->n == t->cap && grow((void **)&t->heap, &t->cap, sizeof *t->heap) != 0)
            return -1;
        uint32_t s;
        if (t->free != 0) {
            s = t->free - 1;
            t->free = t->slots[s].pos;
        } else {
            if (t->nslots == t->slots_cap &&
                grow((void **)&t->slots, &t->slots_cap, sizeof *t->slots) != 0)
                return -1;
            s = t->nslots++;
        }
        t->slots[s].co = co;
        co->tslot = s + 1;
        sift_up(t, t->n++, (struct eco_tm_ent){.when = when, .slot = s});
    }
    if (arm(rt, t) != 0) {
        int err = errno;
        eco__timer_clear(rt, co);
        errno = err;
        return -1;
    }
    return 0;
}

void eco__timer_clear_slow(struct eco_rt *rt, eco_t *co)
{
    struct eco_timers *t = &rt->tm;
    remove_entry(t, co);
    /* An empty heap leaves the base: event_base_dispatch must be able to
     * return once nothing is pending. */
    if (t->n == 0) {
        eco__ev_del(rt, t->ev, &t->ev_added);
        emptied(t);
    }
}

void eco__timers_fini(struct eco_rt *rt)
{
    struct eco_timers *t = &rt->tm;
    if (t->ev != NULL) {
        eco__ev_del(rt, t->ev, &t->ev_added);
        event_free(t->ev);
    }
    free(t->heap);
    free(t->slots);
    *t = (struct eco_timers){0};
}
