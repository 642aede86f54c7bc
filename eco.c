/*
 * eco.c - coroutines and the per-thread runtime that runs them on libevent.
 *
 * Control flow in one paragraph: eco_resume switches from the caller to a
 * coroutine; the coroutine comes back by yielding, parking in a blocking call
 * or returning, always to the one that resumed it (asymmetric).  A parked
 * coroutine is woken either directly from the libevent callback of what it
 * waited for (eco__wake_now) or through the run queue (eco__wake), a FIFO
 * drained by one libevent event; either way the loop on the thread's own
 * stack becomes its caller.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <limits.h>
#include <stdatomic.h>
#include <stddef.h>
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
    /* Unlink from the list of all records of this runtime. */
    if (co->all_prev != NULL)
        co->all_prev->all_next = co->all_next;
    else
        rt->all = co->all_next;
    if (co->all_next != NULL)
        co->all_next->all_prev = co->all_prev;
#if defined(ECO_WITH_TSAN)
    __tsan_destroy_fiber(co->tsan_fiber);
#endif
    eco__stack_put(rt, co);
}

/* Makes co (INIT, PENDING or PARKED) the running coroutine, resumed by the
 * current one; the caller then switches.  by_loop: the runtime, not the
 * user, is resuming it. */
_Static_assert(offsetof(struct eco, by_loop) == offsetof(struct eco, state) + 1,
               "enter stores state and by_loop together");

static inline eco_t *enter(struct eco_rt *rt, eco_t *co, int by_loop)
{
    eco_t *cur = rt->current;
    /* state and by_loop are adjacent bytes: one 16-bit store (gcc's own
     * merging loads the constant from memory instead). */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    uint16_t both = (uint16_t)(ECO_S_ACTIVE | (by_loop << 8));
    memcpy(&co->state, &both, sizeof both);
#else
    co->state = ECO_S_ACTIVE;
    co->by_loop = (unsigned char)by_loop;
#endif
    co->caller = cur;
    cur->state = ECO_S_STACKED;
    rt->current = co;
    return cur;
}

/* Runs co until it comes back. */
static inline void run(struct eco_rt *rt, eco_t *co, int by_loop)
{
    eco_t *cur = enter(rt, co, by_loop);
    eco__switch(rt, cur, co);
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

/* First and last frame of every coroutine (called by eco_ctx_start). */
static void co_main(eco_t *co)
{
    struct eco_rt *rt = co->rt;
#if defined(ECO_WITH_ASAN)
    eco__asan_arrived(rt, NULL);
#endif
    co->retval = co->fn(co->arg);
    if (ECO_UNLIKELY(co->fd_holds != 0))
        eco__fd_release(co);
    co->state = ECO_S_DONE;
    rt->alive--;
    /* A detached coroutine cannot free the stack it runs on: it is left for
     * the next reap (the next finish, create, or teardown). */
    if (co->detached) {
        reap(rt);
        rt->zombie = co;
    }
    if (co->joiner != NULL)
        eco__wake(co->joiner, ECO_WAKE_READY);
    if (rt->alive == 0) {
        /* Nobody can be waiting for a signal: stop holding the loop open. */
        if (rt->notify_added) {
            event_del(rt->notify_ev);
            rt->notify_added = 0;
        }
        if (rt->looping)
            event_base_loopbreak(rt->base);
    }
    eco__switch_back(rt, co);
    __builtin_unreachable();
}

/* ---- the run queue ---- */

static void runq_push(struct eco_rt *rt, eco_t *co)
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

static ECO_HOT(1) void runq_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    (void)fd;
    (void)what;
    /* runq_armed stays set while draining: coroutines queued meanwhile are
     * picked up by this loop, with no event_active each.  The budget is
     * shared with eco__park, which may pass the turn on directly. */
    rt->runq_budget = RUNQ_BUDGET;
    while (rt->runq_head != NULL && rt->runq_budget-- > 0) {
        eco_t *co = rt->runq_head;
        rt->runq_head = co->next;
        if (rt->runq_head == NULL)
            rt->runq_tail = NULL;
        run(rt, co, 1);
    }
    /* Outside this loop the loop's next job is I/O, not the run queue: no
     * hand-overs (they would run queued coroutines ahead of the callbacks
     * of this pass, and break up work those batch). */
    rt->runq_budget = 0;
    if (rt->runq_head != NULL) {
        /* Out of budget: a zero timeout (not event_active, which libevent
         * would run in this same pass) lets the loop poll for I/O first. */
        static const struct timeval zero = {0, 0};
        event_add(rt->runq_ev, &zero);
    } else {
        rt->runq_armed = 0;
    }
}

/* ---- parking ---- */

ECO_HOT(1) void eco__wake(eco_t *co, int reason)
{
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE)
        return;
    co->wake = reason;
    runq_push(co->rt, co);
}

ECO_HOT(1) void eco__wake_now(eco_t *co, int reason)
{
    struct eco_rt *rt = co->rt;
    if (co->state != ECO_S_PARKED || co->wake != ECO_WAKE_NONE)
        return;
    if (rt->current != &rt->main) {
        eco__wake(co, reason);
        return;
    }
    co->wake = reason;
    run(rt, co, 1);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    eco_t *co = arg;
    (void)fd;
    (void)what;
    /* libevent's clock may be a coarse one (a tick of a few ms) and fire a
     * little early: wait out the rest, so no deadline ends early. */
    long left = co->deadline - eco__now_ms();
    if (left > 0) {
        struct timeval tv = {.tv_sec = left / 1000, .tv_usec = (left % 1000) * 1000};
        event_add(co->timer, &tv);
        return;
    }
    eco__wake_now(co, ECO_WAKE_TIMEOUT);
}

ECO_HOT(1) int eco__park_slow(long timeout_ms)
{
    struct eco_rt *rt = eco__rt;
    eco_t *co = rt->current;
    if (timeout_ms >= 0) {
        if (!co->timer_set) {
            event_assign(co->timer, rt->base, -1, 0, timer_cb, co);
            co->timer_set = 1;
        }
        struct timeval tv = {.tv_sec = timeout_ms / 1000, .tv_usec = (timeout_ms % 1000) * 1000};
        /* The loop's cached time may be stale after a long callback; the
         * deadline counts from now. */
        event_base_update_cache_time(rt->base);
        co->deadline = eco__now_ms() + timeout_ms;
        event_add(co->timer, &tv);
    }
    eco_t *next = rt->runq_head;
    if (next != NULL && rt->runq_budget > 0 && co->by_loop && co->caller == &rt->main) {
        rt->runq_budget--;
        /* The loop resumed us and would only resume the next ready
         * coroutine: hand it the turn directly, one switch instead of two
         * (and none of the loop's returns, all mispredicted after a
         * switch).  It comes back to the loop in our place. */
        rt->runq_head = next->next;
        if (rt->runq_head == NULL)
            rt->runq_tail = NULL;
        next->state = ECO_S_ACTIVE;
        next->by_loop = 1;
        next->caller = co->caller;
        rt->current = next;
        eco__switch_ret(rt, co, next);
    } else {
        eco__switch_back(rt, co);
    }
    if (timeout_ms >= 0 && co->wake != ECO_WAKE_TIMEOUT)
        event_del(co->timer);
    return co->wake;
}

/* ---- signals from other threads ---- */

static void deliver(eco_t *co)
{
    co->signaled = 1;
    eco__wake(co, ECO_WAKE_READY);
}

static void notify_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    uint64_t count;
    (void)what;
    /* Read first: a signal queued after the read but before we clear
     * notify_pending is in the list we take; one after that writes anew. */
    if (read(fd, &count, sizeof count) < 0 && errno != EAGAIN)
        return;
    pthread_mutex_lock(&rt->remote_lock);
    eco_t **list = rt->remote;
    size_t n = rt->remote_n, cap = rt->remote_cap;
    rt->remote = rt->spare;
    rt->remote_cap = rt->spare_cap;
    rt->remote_n = 0;
    rt->notify_pending = 0;
    pthread_mutex_unlock(&rt->remote_lock);
    for (size_t i = 0; i < n; i++)
        deliver(list[i]);
    rt->spare = list;
    rt->spare_cap = cap;
}

int eco__signal(eco_t *co)
{
    struct eco_rt *rt = co->rt;
    if (rt == eco__rt) {
        deliver(co);
        return 0;
    }
    pthread_mutex_lock(&rt->remote_lock);
    if (rt->remote_n == rt->remote_cap) {
        size_t cap = rt->remote_cap ? rt->remote_cap * 2 : 64;
        eco_t **grown = realloc(rt->remote, cap * sizeof *grown);
        if (grown == NULL) {
            pthread_mutex_unlock(&rt->remote_lock);
            errno = ENOMEM;
            return -1;
        }
        rt->remote = grown;
        rt->remote_cap = cap;
    }
    rt->remote[rt->remote_n++] = co;
    int notify = !rt->notify_pending;
    rt->notify_pending = 1;
    pthread_mutex_unlock(&rt->remote_lock);
    if (notify) {
        uint64_t one = 1;
        ssize_t w = write(rt->notify_fd, &one, sizeof one);
        (void)w; /* EAGAIN only if the counter is huge: still readable */
    }
    return 0;
}

int eco__signal_prepare(void)
{
    struct eco_rt *rt = eco__rt;
    if (ECO_LIKELY(rt->notify_added))
        return 0;
    if (rt->notify_ev == NULL) {
        rt->notify_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
        if (rt->notify_fd < 0)
            return -1;
        rt->notify_ev = event_new(rt->base, rt->notify_fd, EV_READ | EV_PERSIST, notify_cb, rt);
        if (rt->notify_ev == NULL) {
            close(rt->notify_fd);
            rt->notify_fd = -1;
            errno = ENOMEM;
            return -1;
        }
    }
    if (event_add(rt->notify_ev, NULL) != 0) {
        errno = ENOMEM;
        return -1;
    }
    rt->notify_added = 1;
    return 0;
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
    co->timer_set = 0;
    co->fd_holds = 0;
    co->wake = ECO_WAKE_NONE;
    co->rt = rt;
    co->caller = NULL;
    co->next = NULL;
    co->joiner = NULL;
    co->joined = 0;
    co->fn = fn;
    co->arg = arg;
    co->retval = NULL;
    co->wait_data = NULL;
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
    co->tsan_fiber = __tsan_create_fiber(0);
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
#if defined(__x86_64__)
_Static_assert(offsetof(struct eco, regs) == ECO_OFF_REGS, "eco_asm.h");
#endif

#if defined(ECO_ASM_FAST_PATHS)
#define RESUME_C eco__resume_slow
#define YIELD_C eco__yield_slow
#else
#define RESUME_C eco_resume
#define YIELD_C eco_yield
#endif

/* Where the fast path is in assembly, it handles the common case and this
 * is what it falls back to; the logic is the same. */
int RESUME_C(eco_t *co)
{
    struct eco_rt *rt = eco__rt;
    /* co->rt is never NULL, so the third test also catches rt == NULL. */
    if (ECO_UNLIKELY(co == NULL || co->rt != rt || co->state > ECO_S_INIT))
        return resume_error(co, rt);
    eco_t *cur = enter(rt, co, 0);
#if defined(ECO_WITH_ASAN) || defined(ECO_WITH_TSAN)
    eco__switch(rt, cur, co);
    return 0;
#else
    /* A tail call: the switch back lands straight in our caller. */
    return eco_ctx_switch(cur, co);
#endif
}

static __attribute__((noinline, cold)) int fail_eperm(void)
{
    errno = EPERM;
    return -1;
}

/* Takes a turn at the back of the run queue: eco_yield in a coroutine the
 * runtime resumed (nobody to return to), and eco_sleep(0). */
static __attribute__((noinline)) int yield_to_loop(struct eco_rt *rt, eco_t *co)
{
    co->state = ECO_S_PARKED;
    co->wake = ECO_WAKE_RUN;
    runq_push(rt, co);
    eco__switch_back(rt, co);
    return 0;
}

int YIELD_C(void)
{
    struct eco_rt *rt = eco__rt;
    eco_t *co;
    if (ECO_UNLIKELY(rt == NULL))
        return fail_eperm();
    co = rt->current;
    if (ECO_UNLIKELY(co->by_loop)) /* also true on the main stack */
        return co == &rt->main ? fail_eperm() : yield_to_loop(rt, co);
    co->state = ECO_S_PENDING;
    eco_t *to = co->caller;
    rt->current = to;
    to->state = ECO_S_ACTIVE;
#if defined(ECO_WITH_ASAN) || defined(ECO_WITH_TSAN)
    eco__switch(rt, co, to);
    return 0;
#else
    return eco_ctx_switch(co, to);
#endif
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
            co->joiner = self;
            while (co->state != ECO_S_DONE)
                eco__park(-1);
            co->joiner = NULL;
        } else {
            co->joined = 1;
            while (co->state != ECO_S_DONE) {
                int r = event_base_loop(rt->base, EVLOOP_ONCE);
                if (r != 0) {
                    co->joined = 0;
                    errno = r == 1 ? EDEADLK : EIO;
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
    runq_push(co->rt, co);
    return 0;
}

int eco_go(eco_fn fn, void *arg)
{
    return eco_go_attr(fn, arg, NULL);
}

eco_t *eco_self(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL || rt->current == &rt->main)
        return NULL;
    return rt->current;
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
    /* Page-aligned: the fields a call touches, the thread's own record and
     * the fd chunk pointers then share one page. */
    _Static_assert(sizeof(struct eco_rt) <= 4096, "the runtime fits in a page");
    struct eco_rt *rt = aligned_alloc(4096, 4096);
    if (rt == NULL) {
        errno = ENOMEM;
        return -1;
    }
    memset(rt, 0, sizeof *rt);
    if (base == NULL) {
        /* Default flags, as event_base_new: libevent's precise timers
         * would cost a timerfd_settime call on every loop iteration;
         * eco_sleep makes up for the coarse clock itself. */
        base = event_base_new();
        if (base == NULL) {
            free(rt);
            errno = ENOMEM;
            return -1;
        }
        rt->own_base = 1;
    }
    rt->base = base;
    rt->stack_size = ECO_STACK_DEFAULT;
    eco__stacks_init(rt);
    rt->fdchunk = rt->fdchunk_inline;
    rt->fdchunk_n = ECO_FD_CHUNKS_INLINE;
    rt->current = &rt->main;
    rt->main.state = ECO_S_ACTIVE;
    rt->main.by_loop = 1;
    rt->main.rt = rt;
    rt->notify_fd = -1;
    pthread_mutex_init(&rt->remote_lock, NULL);
    rt->runq_ev = event_new(base, -1, 0, runq_cb, rt);
    if (rt->runq_ev == NULL || eco__overflow_setup(rt) != 0) {
        int err = rt->runq_ev == NULL ? ENOMEM : errno;
        if (rt->runq_ev != NULL)
            event_free(rt->runq_ev);
        if (rt->own_base)
            event_base_free(base);
        free(rt);
        errno = err;
        return -1;
    }
#if defined(ECO_WITH_TSAN)
    rt->main.tsan_fiber = __tsan_get_current_fiber();
#endif
    eco__rt = rt;
    return 0;
}

void eco_teardown(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL || rt->current != &rt->main)
        return;
    reap(rt);
    /* Abandon what never finished; their timers must leave the base. */
    while (rt->all != NULL) {
        eco_t *co = rt->all;
        rt->all = co->all_next;
        if (co->timer_set)
            event_del(co->timer);
#if defined(ECO_WITH_TSAN)
        __tsan_destroy_fiber(co->tsan_fiber);
#endif
        eco__stack_unmap(rt, co);
    }
    eco__stacks_fini(rt);
    eco__fd_teardown(rt);
    event_free(rt->runq_ev);
    if (rt->notify_ev != NULL) {
        event_free(rt->notify_ev);
        close(rt->notify_fd);
    }
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
    if (rt == NULL || rt->current != &rt->main) {
        errno = EPERM;
        return -1;
    }
    while (rt->alive > 0) {
        rt->looping = 1;
        int r = event_base_loop(rt->base, 0);
        rt->looping = 0;
        if (r < 0) {
            errno = EIO;
            return -1;
        }
        if (r == 1 && rt->alive > 0) {
            errno = EDEADLK;
            return -1;
        }
        /* r == 0 with coroutines alive: the user broke the loop. */
        if (r == 0 && rt->alive > 0)
            return 0;
    }
    return 0;
}

int eco_set_stack_size(size_t size)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL) {
        errno = EPERM;
        return -1;
    }
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
    if (rt == NULL) {
        errno = EPERM;
        return -1;
    }
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

/* ---- sleep and poll ---- */

int eco_sleep(long ms)
{
    eco_t *co = eco__in_coroutine();
    if (co == NULL) {
        errno = EPERM;
        return -1;
    }
    if (ms < 0) {
        errno = EINVAL;
        return -1;
    }
    if (ms == 0)
        return yield_to_loop(co->rt, co);
    eco__park(ms);
    return 0;
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    eco__wake_now(arg, ECO_WAKE_READY);
}

#define POLL_MAX_FDS ((nfds_t)1 << 20)
#define POLL_INLINE 8

int eco_poll(struct pollfd *fds, nfds_t nfds, long timeout_ms)
{
    eco_t *co = eco__in_coroutine();
    if (co == NULL) {
        errno = EPERM;
        return -1;
    }
    if ((fds == NULL && nfds > 0) || nfds > POLL_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    /* Ready already (or only asked to look): poll(2) answers exactly. */
    int n = poll(fds, nfds, 0);
    if (n != 0 || timeout_ms == 0)
        return n;

    size_t evsize = event_get_struct_event_size();
    _Alignas(max_align_t) char inline_buf[POLL_INLINE * 256];
    char *buf = inline_buf;
    if (nfds > POLL_INLINE || evsize > 256) {
        buf = malloc(nfds * evsize);
        if (buf == NULL) {
            errno = ENOMEM;
            return -1;
        }
    }
    long deadline = timeout_ms > 0 ? eco__now_ms() + timeout_ms : -1;
    struct event_base *base = co->rt->base;
    for (;;) {
        nfds_t added = 0;
        for (nfds_t i = 0; i < nfds; i++) {
            if (fds[i].fd < 0)
                continue;
            short what = 0;
            if (fds[i].events & (POLLIN | POLLPRI))
                what |= EV_READ;
            if (fds[i].events & POLLOUT)
                what |= EV_WRITE;
            if (what == 0)
                what = EV_READ; /* hang-ups and errors make an fd readable */
            struct event *ev = (struct event *)(buf + added * evsize);
            if (event_assign(ev, base, fds[i].fd, what, poll_cb, co) == 0 &&
                event_add(ev, NULL) == 0)
                added++;
        }
        long wait = -1;
        if (deadline >= 0) {
            wait = deadline - eco__now_ms();
            if (wait < 0)
                wait = 0;
        }
        /* Nothing could be registered (all fds negative): only the timeout
         * can end the wait, as with poll(2). */
        int why = (added == 0 && wait < 0) ? ECO_WAKE_NONE : eco__park(wait);
        for (nfds_t i = 0; i < added; i++)
            event_del((struct event *)(buf + i * evsize));
        if (added == 0 && wait < 0) {
            errno = EINVAL; /* would sleep forever with nothing to wait for */
            n = -1;
            break;
        }
        n = poll(fds, nfds, 0);
        if (n != 0 || why == ECO_WAKE_TIMEOUT)
            break;
        /* Woken but nothing ready (a readiness consumed by someone else):
         * wait again for what is left of the timeout. */
    }
    if (buf != inline_buf)
        free(buf);
    return n;
}
