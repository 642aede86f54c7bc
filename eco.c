/*
 * eco.c - coroutines and the per-thread runtime that runs them on libevent.
 *
 * Control flow in one paragraph: eco_resume switches from the caller to a
 * coroutine; the coroutine comes back by yielding, parking in a blocking call
 * or returning, always to the one that resumed it (asymmetric).  A parked
 * coroutine is woken by eco__wake (eco_wait.c): at once from the libevent
 * callback of what it waited for, or through the run queue, a FIFO drained
 * by one libevent event; either way the loop on the thread's own stack
 * becomes its caller.  Other threads reach a runtime through eco__remote.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <sched.h>
#include <event2/event.h>
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

__thread struct eco_rt *eco__rt __attribute__((tls_model("initial-exec")));

/* Coroutine ids come from a process-wide counter in blocks, so creating a
 * coroutine costs no atomic operation most of the time. */
#define ID_BLOCK 1024
static atomic_ulong id_source = 1;

/* Coroutines the run queue resumes in one go before letting the loop poll
 * for I/O again: bounds the latency a chatty set of coroutines adds. */
#define RUNQ_BUDGET 1024

int eco__eperm(void)
{
    errno = EPERM;
    return -1;
}

/* ---- switching (the inline part is in eco_internal.h) ---- */

#if defined(ECO_WITH_ASAN)
/* Completes ASan's view of a switch on the side that was switched to, and
 * learns the bounds of the thread's own stack the first time we leave it. */
void eco__asan_arrived(struct eco_rt *rt, void *fake)
{
    const void *bottom;
    size_t size;
    __sanitizer_finish_switch_fiber(fake, &bottom, &size);
    eco_t *from = rt->switch_from;
    if (from == &rt->main) {
        from->asan_bottom = bottom;
        from->asan_size = size;
    }
}
#endif

static void free_co(struct eco_rt *rt, eco_t *co)
{
    if (co->all_prev != NULL)
        co->all_prev->all_next = co->all_next;
    else
        rt->all = co->all_next;
    if (co->all_next != NULL)
        co->all_next->all_prev = co->all_prev;
    co->id = 0;
#if defined(ECO_WITH_TSAN)
    eco__tsan_fiber_free(co->tsan_fiber);
#endif
    eco__stack_put(rt, co);
}

/* Makes co (INIT, PENDING or PARKED) the running coroutine, resumed by the
 * current one; the caller then switches.  by_loop: the runtime, not the
 * user, is resuming it. */
static inline eco_t *enter(struct eco_rt *rt, eco_t *co, int by_loop)
{
    eco_t *cur = rt->current;
    co->state = ECO_S_ACTIVE;
    co->by_loop = (unsigned char)by_loop;
    co->caller = cur;
    cur->state = ECO_S_STACKED;
    eco__set_current(rt, co);
    __atomic_store_n(&rt->resumes, rt->resumes + 1, __ATOMIC_RELAXED);
    return cur;
}

/* Frees the finished detached coroutine left by co_main, if any.  Never
 * called on that coroutine's own stack. */
static inline void reap(struct eco_rt *rt)
{
    if (ECO_UNLIKELY(rt->zombie != NULL)) {
        free_co(rt, rt->zombie);
        rt->zombie = NULL;
    }
}

void eco__run(struct eco_rt *rt, eco_t *co)
{
    rt->resumed_ns = eco__coarse_ns();
    eco_t *cur = enter(rt, co, 1);
    eco__switch(rt, cur, co);
    reap(rt);
}

/* No coroutine is left: let go of what only kept the loop watching for
 * them, so that event_base_dispatch returns once the user's own events
 * are done. */
static void quiet(struct eco_rt *rt)
{
    if (rt->own_events == 0)
        return;
    eco__ev_del(rt, rt->notify_ev, &rt->notify_added);
    for (int i = 0; i < rt->nhooks; i++)
        if (rt->hooks[i]->at_quiet != NULL)
            rt->hooks[i]->at_quiet(rt);
}

/* First and last frame of every coroutine (called by eco_ctx_start). */
static void co_main(eco_t *co)
{
    struct eco_rt *rt = co->rt;
#if defined(ECO_WITH_ASAN)
    eco__asan_arrived(rt, NULL);
#endif
#if defined(ECO_WITH_TSAN)
    eco__tsan_arrived(rt);
#endif
    co->retval = co->fn(co->arg);
    if (ECO_UNLIKELY(co->exit_hooks != 0)) {
        for (int i = 0; i < rt->nhooks; i++)
            if (co->exit_hooks & (1u << i))
                rt->hooks[i]->at_exit(co);
        co->exit_hooks = 0;
    }
    co->state = ECO_S_DONE;
    rt->alive--;
    /* A detached coroutine cannot free the stack it runs on: it is left for
     * the next reap (when the loop or a join comes back, the next create,
     * eco_stats, or teardown). */
    if (co->detached) {
        reap(rt);
        rt->zombie = co;
    }
    if (co->joiner != NULL)
        eco__wake(co->joiner, ECO_WAKE_READY, 0);
    if (rt->alive == 0)
        quiet(rt);
    eco__switch_back(rt, co);
    __builtin_unreachable();
}

int eco__hooks_add(struct eco_rt *rt, const struct eco_hooks *h)
{
    if (rt->nhooks == ECO_HOOKS_MAX)
        return -1;
    rt->hooks[rt->nhooks] = h;
    return rt->nhooks++;
}

/* ---- libeco's own events ---- */

int eco__ev_add(struct eco_rt *rt, struct event *ev, const struct timeval *tv,
                unsigned char *added)
{
    errno = 0;
    if (event_add(ev, tv) != 0) {
        if (errno == 0)
            errno = ENOMEM;
        return -1;
    }
    if (!*added) {
        *added = 1;
        rt->own_events++;
    }
    return 0;
}

void eco__ev_del(struct eco_rt *rt, struct event *ev, unsigned char *added)
{
    if (*added) {
        event_del(ev);
        *added = 0;
        rt->own_events--;
    }
}

/* ---- the run queue ---- */

void eco__runq_push(struct eco_rt *rt, eco_t *co)
{
    co->next = NULL;
    if (rt->runq_tail != NULL)
        rt->runq_tail->next = co;
    else
        rt->runq_head = co;
    rt->runq_tail = co;
    if (!rt->runq_armed) {
        rt->runq_armed = 1;
        event_active(rt->runq_ev, EV_TIMEOUT, 0);
    }
}

static void runq_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    (void)fd;
    (void)what;
    eco__ev_fired(rt, &rt->runq_added); /* a zero timeout that fired */
    /* runq_armed stays set while draining: coroutines queued meanwhile are
     * picked up by this loop, with no event_active each.  The budget is
     * shared with eco__park_switch's hand-overs. */
    rt->runq_budget = RUNQ_BUDGET;
    while (rt->runq_head != NULL && rt->runq_budget-- > 0) {
        eco_t *co = rt->runq_head;
        rt->runq_head = co->next;
        if (rt->runq_head == NULL)
            rt->runq_tail = NULL;
        eco__run(rt, co);
    }
    /* Outside this loop the loop's next job is I/O: no hand-overs (they
     * would run queued coroutines ahead of this pass's callbacks). */
    rt->runq_budget = 0;
    if (rt->runq_head == NULL) {
        rt->runq_armed = 0;
        return;
    }
    /* Out of budget: a zero timeout (not event_active, which libevent
     * would run in this same pass) lets the loop poll for I/O first.
     * Should it fail for want of memory, event_active still runs the
     * queue, only without the poll in between. */
    static const struct timeval zero = {0, 0};
    if (eco__ev_add(rt, rt->runq_ev, &zero, &rt->runq_added) != 0)
        event_active(rt->runq_ev, EV_TIMEOUT, 0);
}

/*
 * A coroutine the run queue's pass resumed and that parks hands the turn
 * straight to the next ready one: one switch instead of two, and none of
 * the loop's own returns, which are all mispredicted after a switch.  The
 * switch ends in `ret`: both sides usually parked at this very call, so the
 * return stack predicts it and the returns after it.  Measured: chan_bench
 * pingpong 0.82x the time without it (BENCHMARKS.md, Tricks).
 */
void eco__park_switch(struct eco_rt *rt, eco_t *co)
{
    eco_t *next = rt->runq_head;
    if (next == NULL || rt->runq_budget <= 0 || !co->by_loop || co->caller != &rt->main) {
        eco__switch_back(rt, co);
        return;
    }
    rt->runq_budget--;
    rt->runq_head = next->next;
    if (rt->runq_head == NULL)
        rt->runq_tail = NULL;
    /* next takes co's place under the loop, as enter() would set it up. */
    next->state = ECO_S_ACTIVE;
    next->by_loop = 1;
    next->caller = co->caller;
    eco__set_current(rt, next);
    __atomic_store_n(&rt->resumes, rt->resumes + 1, __ATOMIC_RELAXED);
    eco__switch_via(rt, co, next, eco_ctx_switch_ret);
}

/* ---- requests from other threads ---- */

static void act(eco_t *co, int what)
{
    if (what == ECO_WAKE_CANCEL)
        eco_cancel(co);
    else
        eco__wake(co, what, 0);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    uint64_t count;
    (void)what;
    /* Read first: a request queued after the read but before we clear
     * notify_pending is in the list we take; one after that writes anew. */
    if (read(fd, &count, sizeof count) < 0 && errno != EAGAIN)
        return;
    eco__remote_drain(rt);
}

void eco__remote_drain(struct eco_rt *rt)
{
    pthread_mutex_lock(&rt->remote_lock);
    struct eco_remote *list = rt->remote;
    size_t n = rt->remote_n, cap = rt->remote_cap;
    rt->remote = rt->spare;
    rt->remote_cap = rt->spare_cap;
    rt->remote_n = 0;
    rt->notify_pending = 0;
    pthread_mutex_unlock(&rt->remote_lock);
    for (size_t i = 0; i < n; i++)
        if (list[i].co->id == list[i].id)
            act(list[i].co, list[i].what);
    rt->spare = list;
    rt->spare_cap = cap;
}

int eco__remote(eco_t *co, int what)
{
    struct eco_rt *rt = co->rt;
    if (rt == eco__rt) {
        act(co, what);
        return 0;
    }
    pthread_mutex_lock(&rt->remote_lock);
    if (rt->remote_n == rt->remote_cap) {
        size_t cap = rt->remote_cap ? rt->remote_cap * 2 : 64;
        struct eco_remote *grown = realloc(rt->remote, cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&rt->remote_lock);
            errno = ENOMEM;
            return -1;
        }
        rt->remote = grown;
        rt->remote_cap = cap;
    }
    rt->remote[rt->remote_n++] = (struct eco_remote){.co = co, .id = co->id, .what = what};
    if (!rt->notify_pending) {
        /* Under the lock: once eco_teardown has seen this request queued
         * (eco__remote_await), the fd is ours no more. */
        uint64_t one = 1;
        ssize_t w = write(rt->notify_fd, &one, sizeof one);
        (void)w; /* EAGAIN only if the counter is huge: still readable */
        rt->notify_pending = 1;
    }
    pthread_mutex_unlock(&rt->remote_lock);
    return 0;
}

void eco__remote_await(eco_t *co)
{
    struct eco_rt *rt = co->rt;
    for (;;) {
        int found = 0;
        pthread_mutex_lock(&rt->remote_lock);
        for (size_t i = 0; i < rt->remote_n && !found; i++)
            found = rt->remote[i].co == co;
        pthread_mutex_unlock(&rt->remote_lock);
        if (found)
            return;
        sched_yield();
    }
}

int eco__notify_add(struct eco_rt *rt)
{
    if (rt->notify_added)
        return 0;
    return eco__ev_add(rt, rt->notify_ev, NULL, &rt->notify_added);
}

/* ---- coroutines ---- */

int eco_attr_init(eco_attr_t *attr)
{
    if (attr == NULL) {
        errno = EINVAL;
        return -1;
    }
    attr->stack_size = 0;
    attr->name = NULL;
    return 0;
}

eco_t *eco_create(eco_fn fn, void *arg, const eco_attr_t *attr)
{
    struct eco_rt *rt = eco__rt;
    if (ECO_UNLIKELY(rt == NULL)) {
        errno = EPERM;
        return NULL;
    }
    reap(rt); /* its stack is the warmest one to reuse */
    size_t size = rt->stack_size;
    const char *name = NULL;
    if (attr != NULL) {
        if (attr->stack_size != 0)
            size = attr->stack_size;
        name = attr->name;
    }
    if (ECO_UNLIKELY(fn == NULL || size < ECO_STACK_MIN || size > ECO_STACK_MAX)) {
        errno = EINVAL;
        return NULL;
    }
    eco_t *co = eco__stack_get(rt, size);
    if (ECO_UNLIKELY(co == NULL))
        return NULL;
    co->stack_req = size;
    co->state = ECO_S_INIT;
    co->by_loop = 0;
    co->detached = 0;
    co->wake = ECO_WAKE_NONE;
    co->queued = 0;
    co->stop = 0;
    co->tslot = 0;
    co->exit_hooks = 0;
    co->fd_holds = 0;
    co->rt = rt;
    co->caller = NULL;
    co->next = NULL;
    co->wait = NULL;
    co->deadline = ECO_NEVER;
    co->joiner = NULL;
    co->joined = 0;
    co->fn = fn;
    co->arg = arg;
    co->retval = NULL;
    if (ECO_UNLIKELY(rt->next_id == rt->id_limit)) {
        rt->next_id = atomic_fetch_add_explicit(&id_source, ID_BLOCK, memory_order_relaxed);
        rt->id_limit = rt->next_id + ID_BLOCK;
    }
    co->id = rt->next_id++;
    if (name != NULL) {
        strncpy(co->name, name, ECO_NAME_MAX - 1);
        co->name[ECO_NAME_MAX - 1] = '\0';
    } else {
        co->name[0] = '\0';
    }
#if defined(ECO_WITH_ASAN)
    co->asan_bottom = co->stack_lo;
    co->asan_size = co->stack_size;
#endif
#if defined(ECO_WITH_TSAN)
    co->tsan_fiber = eco__tsan_fiber_new();
    if (name != NULL)
        __tsan_set_fiber_name(co->tsan_fiber, co->name);
#endif
    co->sp = eco_ctx_init(co->stack_lo + co->stack_size, co_main, co);
    co->all_prev = NULL;
    co->all_next = rt->all;
    if (rt->all != NULL)
        rt->all->all_prev = co;
    rt->all = co;
    rt->alive++;
    return co;
}

/* Out of line, so the fast path of eco_resume needs no stack frame. */
static __attribute__((noinline, cold)) int resume_error(const eco_t *co, const struct eco_rt *rt)
{
    if (co == NULL)
        errno = EINVAL;
    else if (rt == NULL || co->rt != rt)
        errno = EPERM;
    else if (co->state == ECO_S_DONE)
        errno = ESRCH;
    else
        errno = EBUSY;
    return -1;
}

/* Layout the context switch files rely on (eco_asm.h). */
_Static_assert(offsetof(struct eco, sp) == ECO_OFF_SP, "eco_asm.h");
_Static_assert(offsetof(struct eco, state) == ECO_OFF_STATE, "eco_asm.h");
_Static_assert(offsetof(struct eco, by_loop) == ECO_OFF_BY_LOOP, "eco_asm.h");
_Static_assert(offsetof(struct eco, mxcsr) == ECO_OFF_MXCSR, "eco_asm.h");
_Static_assert(offsetof(struct eco, fpucw) == ECO_OFF_FPUCW, "eco_asm.h");
_Static_assert(offsetof(struct eco, rt) == ECO_OFF_RT, "eco_asm.h");
_Static_assert(offsetof(struct eco, caller) == ECO_OFF_CALLER, "eco_asm.h");
_Static_assert(offsetof(struct eco_rt, current) == ECO_RT_OFF_CURRENT, "eco_asm.h");
_Static_assert(offsetof(struct eco_rt, resumes) == ECO_RT_OFF_RESUMES, "eco_asm.h");
#if defined(__x86_64__)
_Static_assert(offsetof(struct eco, regs) == ECO_OFF_REGS, "eco_asm.h");
#endif

/* Where the common case is in assembly (eco_asm.h), these are what it
 * falls back to; the logic is the same. */
#if defined(ECO_ASM_FAST_PATHS)
int eco__resume_slow(eco_t *co)
#else
int eco_resume(eco_t *co)
#endif
{
    struct eco_rt *rt = eco__rt;
    /* co->rt is never NULL, so the third test also catches rt == NULL. */
    if (ECO_UNLIKELY(co == NULL || co->rt != rt || co->state > ECO_S_INIT))
        return resume_error(co, rt);
    eco_t *cur = enter(rt, co, 0);
    eco__switch(rt, cur, co);
    return 0;
}

/* Takes a turn at the back of the run queue: eco_yield in a coroutine the
 * runtime resumed (nobody to return to), and eco_sleep(0). */
int eco__yield_to_loop(struct eco_rt *rt, eco_t *co)
{
    co->state = ECO_S_PARKED;
    co->wake = ECO_WAKE_RUN;
    eco__runq_push(rt, co);
    eco__switch_back(rt, co);
    return 0;
}

#if defined(ECO_ASM_FAST_PATHS)
int eco__yield_slow(void)
#else
int eco_yield(void)
#endif
{
    struct eco_rt *rt = eco__rt;
    if (ECO_UNLIKELY(rt == NULL))
        return eco__eperm();
    eco_t *co = rt->current;
    if (ECO_UNLIKELY(co->by_loop)) /* also true on the main stack */
        return co == &rt->main ? eco__eperm() : eco__yield_to_loop(rt, co);
    co->state = ECO_S_PENDING;
    eco_t *to = co->caller;
    eco__set_current(rt, to);
    to->state = ECO_S_ACTIVE;
    eco__switch(rt, co, to);
    return 0;
}

/* Checks shared by join and detach.  0 or an errno value. */
static int check_handle(const struct eco_rt *rt, const eco_t *co)
{
    if (co == NULL)
        return EINVAL;
    if (rt == NULL || co->rt != rt)
        return EPERM;
    if (co->detached || co->joiner != NULL || co->joined)
        return EINVAL;
    return 0;
}

/* A coroutine parked in eco_join. */
struct join_wait {
    struct eco_wait w;
    eco_t *target;
};

static void join_describe(const struct eco_wait *w, char *buf, size_t n)
{
    const struct join_wait *jw = (const struct join_wait *)w;
    snprintf(buf, n, "join #%lu", jw->target->id);
}

static int join_cancel(eco_t *co, struct eco_wait *w)
{
    (void)co;
    ((struct join_wait *)w)->target->joiner = NULL; /* joinable again */
    return 1;
}

static const struct eco_wait_ops join_ops = {
    .describe = join_describe, .cancel = join_cancel, .sourced = 0};

/* The loop has nothing left that could ever wake a coroutine: none is
 * ready, no wait can be ended from outside, and the base holds no event
 * but libeco's own idle ones. */
static int deadlocked(const struct eco_rt *rt)
{
    if (rt->alive == 0 || rt->runq_head != NULL || rt->sourced != 0 ||
        eco__timers_pending(rt) != 0)
        return 0;
    int n = event_base_get_num_events(rt->base, EVENT_BASE_COUNT_ADDED | EVENT_BASE_COUNT_ACTIVE |
                                                    EVENT_BASE_COUNT_VIRTUAL);
    return n >= 0 && (size_t)n <= rt->own_events;
}

/* One pass of the loop from the thread's own stack: 0, or -1 with EDEADLK
 * (nothing could ever happen) or EIO (event_base_loop failed). */
static int loop_once(struct eco_rt *rt)
{
    if (deadlocked(rt)) {
        errno = EDEADLK;
        return -1;
    }
    int r = event_base_loop(rt->base, EVLOOP_ONCE);
    reap(rt);
    if (r != 0) {
        errno = r == 1 ? EDEADLK : EIO;
        return -1;
    }
    return 0;
}

int eco_join(eco_t *co, void **retval)
{
    struct eco_rt *rt = eco__rt;
    int err = check_handle(rt, co);
    if (err != 0) {
        errno = err;
        return -1;
    }
    eco_t *self = rt->current;
    if (co == self) {
        errno = EDEADLK;
        return -1;
    }
    if (co->state != ECO_S_DONE) {
        if (self != &rt->main) {
            if (eco__check_stop(self) != 0)
                return -1;
            struct join_wait jw = {.w = {.ops = &join_ops, .deadline = ECO_NEVER}, .target = co};
            co->joiner = self;
            int why = eco__park(&jw.w);
            if (why != ECO_WAKE_READY)
                return eco__wait_fail(why);
            co->joiner = NULL;
        } else {
            co->joined = 1;
            while (co->state != ECO_S_DONE) {
                if (loop_once(rt) != 0) {
                    co->joined = 0;
                    return -1;
                }
            }
            co->joined = 0;
        }
    }
    if (retval != NULL)
        *retval = co->retval;
    free_co(rt, co);
    return 0;
}

int eco_detach(eco_t *co)
{
    struct eco_rt *rt = eco__rt;
    int err = check_handle(rt, co);
    if (err != 0) {
        errno = err;
        return -1;
    }
    if (co->state == ECO_S_DONE)
        free_co(rt, co);
    else
        co->detached = 1;
    return 0;
}

int eco_go_attr(eco_fn fn, void *arg, const eco_attr_t *attr)
{
    eco_t *co = eco_create(fn, arg, attr);
    if (co == NULL)
        return -1;
    co->detached = 1;
    /* Owned by the runtime from now on: eco_resume refuses it. */
    co->state = ECO_S_PARKED;
    co->wake = ECO_WAKE_RUN;
    eco__runq_push(co->rt, co);
    return 0;
}

int eco_go(eco_fn fn, void *arg)
{
    return eco_go_attr(fn, arg, NULL);
}

eco_t *eco_self(void)
{
    return eco__in_coroutine();
}

eco_state_t eco_state(const eco_t *co)
{
    static const eco_state_t public_state[] = {
        [ECO_S_PENDING] = ECO_PENDING, [ECO_S_INIT] = ECO_INIT,   [ECO_S_ACTIVE] = ECO_ACTIVE,
        [ECO_S_STACKED] = ECO_STACKED, [ECO_S_DONE] = ECO_DONE,   [ECO_S_PARKED] = ECO_PENDING,
    };
    return public_state[co->state];
}

const char *eco_name(const eco_t *co)
{
    return co->name;
}

unsigned long eco_id(const eco_t *co)
{
    return co->id;
}

/* ---- the runtime ---- */

int eco_setup(struct event_base *base)
{
    if (eco__rt != NULL) {
        errno = EEXIST;
        return -1;
    }
    /* Page-aligned: the fields a call touches and the thread's own record
     * then share one page. */
    _Static_assert(sizeof(struct eco_rt) <= 4096, "the runtime fits in a page");
    struct eco_rt *rt = aligned_alloc(4096, 4096);
    if (rt == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memset(rt, 0, sizeof *rt);
    int err = ENOMEM;
    if (base == NULL) {
        /* Default flags, as event_base_new: libevent's precise timers
         * would cost a timerfd_settime call on every loop iteration;
         * eco_wait.c makes up for the coarse clock itself. */
        base = event_base_new();
        if (base == NULL)
            goto fail;
        rt->own_base = 1;
    }
    rt->base = base;
    rt->stack_size = ECO_STACK_DEFAULT;
    eco__stacks_init(rt);
    rt->current = &rt->main;
    rt->main.state = ECO_S_ACTIVE;
    rt->main.by_loop = 1;
    rt->main.rt = rt;
    rt->main.deadline = ECO_NEVER;
    pthread_mutex_init(&rt->remote_lock, NULL);
    rt->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (rt->notify_fd < 0) {
        err = errno;
        goto fail;
    }
    rt->notify_ev = event_new(base, rt->notify_fd, EV_READ | EV_PERSIST, notify_cb, rt);
    rt->runq_ev = event_new(base, -1, 0, runq_cb, rt);
    if (rt->notify_ev == NULL || rt->runq_ev == NULL)
        goto fail;
    if (eco__overflow_setup(rt) != 0) {
        err = errno;
        goto fail;
    }
#if defined(ECO_WITH_TSAN)
    rt->main.tsan_fiber = __tsan_get_current_fiber();
#endif
    eco__rt = rt;
    return 0;
fail:
    if (rt->runq_ev != NULL)
        event_free(rt->runq_ev);
    if (rt->notify_ev != NULL)
        event_free(rt->notify_ev);
    if (rt->notify_fd > 0)
        close(rt->notify_fd);
    pthread_mutex_destroy(&rt->remote_lock);
    if (rt->own_base)
        event_base_free(base);
    free(rt);
    errno = err;
    return -1;
}

void eco_teardown(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL || rt->current != &rt->main)
        return;
    reap(rt);
    eco__hog_forget(rt);
    /* Abandon what never finished: first every wait lets go of its queue
     * (fds, channels, locks, joins) and its timer, while all of those
     * still exist; then the stacks go. */
    for (eco_t *co = rt->all; co != NULL; co = co->all_next)
        eco__abandon(co);
    while (rt->all != NULL) {
        eco_t *co = rt->all;
        rt->all = co->all_next;
#if defined(ECO_WITH_TSAN)
        eco__tsan_fiber_free(co->tsan_fiber);
#endif
        eco__stack_unmap(rt, co);
    }
    eco__stacks_fini(rt);
    eco__timers_fini(rt);
    for (int i = rt->nhooks; i-- > 0;)
        if (rt->hooks[i]->at_teardown != NULL)
            rt->hooks[i]->at_teardown(rt);
    event_free(rt->runq_ev);
    event_free(rt->notify_ev);
    close(rt->notify_fd);
    pthread_mutex_destroy(&rt->remote_lock);
    free(rt->remote);
    free(rt->spare);
    eco__overflow_teardown(rt);
    if (rt->own_base)
        event_base_free(rt->base);
    eco__rt = NULL;
    free(rt);
}

struct event_base *eco_base(void)
{
    struct eco_rt *rt = eco__rt;
    return rt != NULL ? rt->base : NULL;
}

int eco_loop(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL || rt->current != &rt->main)
        return eco__eperm();
    /* A pass at a time, so that the deadlock check sees the state between
     * passes, the moment before the loop would block. */
    while (rt->alive > 0) {
        if (loop_once(rt) != 0)
            return -1;
        if (event_base_got_break(rt->base) || event_base_got_exit(rt->base))
            return 0; /* the user broke the loop */
    }
    return 0;
}

int eco_set_stack_size(size_t size)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    if (size < ECO_STACK_MIN || size > ECO_STACK_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (size != rt->stack_size) {
        reap(rt);
        eco__stack_trim(rt, 0); /* pooled stacks have the old size */
        rt->stack_size = size;
    }
    return 0;
}

int eco_set_pool_limit(size_t n)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    reap(rt);
    eco__stack_limit(rt, n);
    return 0;
}

int eco_stats(eco_stats_t *st)
{
    struct eco_rt *rt = eco__rt;
    if (st == NULL || rt == NULL) {
        errno = st == NULL ? EINVAL : EPERM;
        return -1;
    }
    reap(rt);
    st->alive = rt->alive;
    eco__stack_stats(rt, st);
    return 0;
}

/* ---- version ---- */

unsigned eco_version(void)
{
    return ECO_VERSION_NUMBER;
}
