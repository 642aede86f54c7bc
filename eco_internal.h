/*
 * eco_internal.h - what the library's files share and users never see.
 *
 * Who owns what:
 *   eco.c         coroutines, the runtime, the run queue, wake-ups from
 *                 other threads, the subsystem hooks
 *   eco_wait.c    the one way to wait: park, wake, deadlines,
 *                 cancellation, sleep
 *   eco_timer.c   the timers of parked coroutines
 *   eco_dump.c    what a program sees of its coroutines: eco_foreach,
 *                 eco_dump, the hog watchdog
 *   eco_stack.c   stacks, the record slab, the overflow report
 *   eco_socket.c  fds: the socket calls, direction locks, eco_poll
 *   eco_chan.c    channels
 *   eco_bev.c     bufferevents from coroutines (no state of its own in
 *                 the runtime: it lives on the bufferevent while in use)
 * Each subsystem's per-runtime state is a struct of its own below, and only
 * its file touches it.
 */
#ifndef ECO_INTERNAL_H
#define ECO_INTERNAL_H

#include "eco.h"
#include "eco_asm.h"

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct event;
struct event_base;

#define ECO_HIDDEN __attribute__((visibility("hidden")))
#define ECO_LIKELY(x) __builtin_expect(!!(x), 1)
#define ECO_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define ECO_COLD __attribute__((noinline, cold))

/* Sanitizer and Valgrind support, chosen by CMake options. */
#if defined(ECO_WITH_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(ECO_WITH_TSAN)
#include <sanitizer/tsan_interface.h>
#include <signal.h>
#endif

/*
 * Internal states.  The public ones keep their eco_state_t values; PARKED is
 * a PENDING coroutine owned by the runtime (waiting in a blocking call or in
 * the run queue), which eco_resume must refuse.
 */
enum {
    /* The two resumable states come first: eco_resume's check is then
     * one compare.  eco_state maps these to the public values. */
    ECO_S_PENDING = ECO_ASM_S_PENDING,
    ECO_S_INIT = ECO_ASM_S_INIT,
    ECO_S_ACTIVE = ECO_ASM_S_ACTIVE,
    ECO_S_STACKED = ECO_ASM_S_STACKED,
    ECO_S_DONE = 4,
    ECO_S_PARKED = 5,
};

/* How a wait ended (eco__park's return value).  The first wake wins; later
 * ones are ignored. */
enum {
    ECO_WAKE_NONE = 0,
    ECO_WAKE_READY,    /* what it waited for happened */
    ECO_WAKE_TIMEOUT,  /* the call's own bound passed */
    ECO_WAKE_DEADLINE, /* the coroutine's deadline passed (eco_set_deadline) */
    ECO_WAKE_CANCEL,   /* eco_cancel */
    ECO_WAKE_CLOSED,   /* the fd it waited on was closed */
    ECO_WAKE_NOMEM,    /* its timer or wake-up event could not be added */
    ECO_WAKE_RUN,      /* in the run queue, not waiting (eco_go, yield) */
};

/* co->stop: why a coroutine's blocking calls fail at once. */
#define ECO_STOP_CANCEL 1   /* eco_cancel: ECANCELED */
#define ECO_STOP_DEADLINE 2 /* a deadline is set: ETIMEDOUT once passed */

/* No deadline: later than any time. */
#define ECO_NEVER INT64_MAX

struct eco_rt;
struct eco_wait;

/*
 * What a kind of wait tells the core.  One constant object per kind, so
 * the compiler folds `sourced` where the kind is known.
 */
struct eco_wait_ops {
    /* For eco_dump: writes what the wait is for ("read fd 7") into buf,
     * NUL-terminated, at most n bytes. */
    void (*describe)(const struct eco_wait *w, char *buf, size_t n);
    /* Takes the waiter out of whatever queue it is in, so that nothing
     * can complete its wait any more.  Returns 0 when it is too late: the
     * wait has completed and its wake-up is on its way (a channel peer in
     * another thread).  Called on the runtime's thread, with the coroutine
     * parked and not yet woken: by a timer, eco_cancel, eco_teardown. */
    int (*cancel)(eco_t *co, struct eco_wait *w);
    /* Something outside the coroutines can end this wait (an fd, another
     * thread): eco_loop's deadlock check (eco.c). */
    unsigned char sourced;
    /* Optional.  The wait completed (its waker handed it something) but
     * the coroutine will never run to take it: eco_teardown.  Releases
     * what was handed over. */
    void (*abandon)(eco_t *co, struct eco_wait *w);
};

/*
 * The wait record: one per blocking call in progress, in the parked
 * coroutine's own frame (eco_sleep's in its record, co->sleep_wait);
 * co->wait points to it while it is parked.  The kind's fields (an fd, a
 * channel) live around it, in a struct of the kind's own that starts with
 * this one.
 */
struct eco_wait {
    const struct eco_wait_ops *ops;
    int64_t deadline; /* CLOCK_MONOTONIC ns when the call's own bound
                         passes, or ECO_NEVER */
    int64_t since;    /* coarse CLOCK_MONOTONIC ns when it parked */
};

/* A coroutine record.  The first cache line is what a switch and a wake-up
 * touch; the context switch files rely on the offsets in eco_asm.h. */
struct eco {
    void *sp;              /* saved stack pointer while not running */
    unsigned char state;   /* ECO_S_* */
    unsigned char by_loop; /* last resumed by the runtime, not by eco_resume;
                              always 1 in rt->main, so eco_yield's one test
                              also sends the main stack to its slow path */
    unsigned char detached;
    unsigned char wake;    /* ECO_WAKE_* once woken, 0 while still parked */
    unsigned char queued;  /* linked by qprev/qnext (eco_socket.c) */
    unsigned char stop;    /* ECO_STOP_* */
    /* x86-64: the floating-point control words, saved by the switch next
     * to the line it writes anyway (eco_ctx_x86_64.S). */
    uint32_t mxcsr;
    uint16_t fpucw;
    unsigned char exit_hooks; /* subsystems to call when it returns (bits) */
    unsigned char fd_holds;   /* eco_socket.c's: directions it holds */
    struct eco_rt *rt;
    eco_t *caller;         /* whom yield/park/return switches back to */
    eco_t *next;           /* run queue link */
    eco_t *qprev, *qnext;  /* fd wait queue links (eco_socket.c) */
#if defined(__x86_64__)
    /* rbp, rbx, r12-r15 while switched out (eco_ctx_x86_64.S). */
    uint64_t regs[6];
#endif
    struct eco_wait *wait; /* while parked in a blocking call */
    int64_t deadline;      /* eco_set_deadline, ns; ECO_NEVER: none */
    uint32_t tslot;        /* its timer's slot + 1 (eco_timer.c); 0: none */
    /* eco_sleep's wait record, on the line the timer's slot is on, rather
     * than in its frame: a sleeper is all in its record, so eco_teardown
     * reaches a million of them without touching their stacks, whose pages
     * may be cold or dear to fault back in (1,000,000 asleep on a VM with
     * shadow page tables: 2.0-9.6 s, now 0.5; BENCHMARKS.md). */
    struct eco_wait sleep_wait;

    eco_t *joiner;         /* coroutine parked in eco_join on this one */
    eco_fn fn;
    void *arg;
    void *retval;
    unsigned long id;      /* 0 once freed: stale cancel requests see it */
    eco_t *all_prev, *all_next; /* every record of the runtime not freed */
    int joined;            /* a joiner from the main stack waits on it */

    /* The stack (eco_stack.c); these stay with the record's slot. */
    struct eco_stk_arena *arena; /* the mapping holding record and stack */
    char *stack_lo;        /* lowest usable byte, just above the guard */
    size_t stack_size;     /* usable bytes from stack_lo to the stack's top */
    size_t stack_req;      /* size asked for */
    unsigned valgrind_id;

#if defined(ECO_WITH_ASAN)
    const void *asan_bottom; /* stack bounds reported to ASan */
    size_t asan_size;
#endif
#if defined(ECO_WITH_TSAN)
    void *tsan_fiber;
#endif
    char name[ECO_NAME_MAX];
};

/*
 * A subsystem's hooks, registered once per runtime with eco__hooks_add.
 * at_exit runs when a coroutine whose exit_hooks has the subsystem's bit
 * returns; at_teardown in eco_teardown, after every parked wait has been
 * cancelled and before the base goes.
 */
struct eco_hooks {
    void (*at_exit)(eco_t *co);
    void (*at_teardown)(struct eco_rt *rt);
    /* The last coroutine has finished: drop events kept only for speed,
     * so that event_base_dispatch can return (may be NULL). */
    void (*at_quiet)(struct eco_rt *rt);
};
#define ECO_HOOKS_MAX 8


/* Recent ticks of the trim timer whose peak demand the pool remembers. */
#define ECO_STK_WINDOWS 4

struct eco_stk_class;

/*
 * A runtime's stacks (eco_stack.c): records and stacks live in arenas of
 * many slots per mapping, one list of arenas per slot size (class).  A free
 * slot is warm (pooled: its memory kept for reuse) or cold (its memory given
 * back, its address space still mapped).  A timer trims the warm ones that
 * recent demand did not need.
 */
struct eco_stacks {
    /* What creating and freeing a coroutine touch comes first. */
    struct eco_stk_class *last; /* class of the latest eco__stack_get */
    size_t in_use;         /* slots handed out */
    size_t pooled;         /* warm free slots */
    size_t peak;           /* most in use since the last tick */
    size_t limit;          /* upper bound of pooled (eco_set_pool_limit) */
    unsigned char armed;   /* trim_ev is pending (eco__ev_add's flag) */
    int more;              /* the last tick ran out of budget */
    size_t mapped;         /* slots in mapped arenas */
    size_t peaks[ECO_STK_WINDOWS]; /* peak of each recent window, a ring */
    unsigned tick;         /* windows closed so far */
    struct eco_stk_class *classes;
    struct event *trim_ev; /* created on first use */
};

/* ---- the timers of parked coroutines (eco_timer.c) ---- */

/* A pending time in the heap, and the slot that names its coroutine. */
struct eco_tm_ent {
    int64_t when;          /* CLOCK_MONOTONIC ns */
    uint32_t slot;
};
struct eco_tm_slot {
    eco_t *co;
    uint32_t pos;          /* its entry's index in the heap; while the slot
                              is free, the next free slot + 1 */
};
struct eco_timers {
    struct eco_tm_ent *heap; /* 4-ary min-heap on when */
    uint32_t n, cap;
    struct eco_tm_slot *slots;
    uint32_t nslots, slots_cap;
    uint32_t free;         /* first free slot + 1; 0: none */
    unsigned char ev_added; /* ev is in the base */
    int64_t ev_when;       /* what ev is armed for */
    struct event *ev;      /* the runtime's one timer, created on first use */
};

/* ---- eco_socket.c's state ---- */

/* Fds per chunk of the fd table. */
#define ECO_FD_CHUNK 8

struct eco_fds {
    void **chunk;          /* chunk_n chunk pointers (malloc) */
    size_t chunk_n;
    size_t entry;          /* bytes per entry (with libevent's events) */
    unsigned char hooked;  /* hooks registered */
    unsigned char hook_bit;
};

/* ---- one runtime per thread, in a page of its own (eco_setup) ---- */

/* A request from another thread (eco__signal, eco_cancel). */
struct eco_remote {
    eco_t *co;
    unsigned long id;      /* co's id when asked: a stale request is dropped */
    int what;              /* ECO_WAKE_READY or ECO_WAKE_CANCEL */
};

struct eco_rt {
    eco_t *current;        /* running coroutine, or &main */
    unsigned long resumes; /* resumes so far (the hog watchdog reads it) */
    struct event_base *base;
    int own_base;
    size_t alive;          /* created and not DONE */
    size_t stack_size;     /* default for new coroutines */

    /* Ready queue, FIFO: coroutines the runtime will resume from runq_ev. */
    eco_t *runq_head;
    eco_t *runq_tail;
    struct event *runq_ev;
    int runq_armed;        /* runq_ev is active or scheduled */
    int runq_budget;       /* hand-overs left in this pass (eco__park_switch);
                              0 outside runq_cb */
    int64_t resumed_ns;    /* coarse clock at the loop's latest resume */
    unsigned char runq_added; /* runq_ev is in the base with a timeout */

    /* For eco_loop's deadlock check (eco.c): parked waits that something
     * outside the coroutines can end, and all of libeco's own events in
     * the base (pending coroutine timers: tm.n). */
    size_t sourced;
    size_t own_events;
    struct eco_timers tm;  /* eco_timer.c */

    struct eco_stacks stk; /* stacks, records and their pool (eco_stack.c) */
    eco_t *all;            /* coroutines not yet freed, for teardown */
    eco_t *zombie;         /* a finished detached coroutine, freed later:
                              not while its own stack is running */

    unsigned long next_id, id_limit;
#if defined(ECO_WITH_ASAN)
    eco_t *switch_from;    /* who switched last, for ASan's bookkeeping */
#endif
#if defined(ECO_WITH_TSAN)
    sigset_t switch_mask;  /* the thread's signal mask across a switch */
#endif
    /* Requests from other threads: a locked list and an eventfd watched by
     * notify_ev, written once per burst. */
    pthread_mutex_t remote_lock;
    struct eco_remote *remote; /* pending, under remote_lock */
    size_t remote_n, remote_cap;
    struct eco_remote *spare;  /* the other buffer, owned by the loop */
    size_t spare_cap;
    int notify_fd;
    int notify_pending;    /* under remote_lock: the fd has been written */
    unsigned char notify_added; /* notify_ev is in the base */
    struct event *notify_ev;

    const struct eco_hooks *hooks[ECO_HOOKS_MAX];
    int nhooks;

    /* The hog watchdog's view (eco_dump.c), under its lock. */
    struct eco_rt *hog_next;
    long hog_ms;           /* the limit; 0: not watched */
    eco_t *hog_co;         /* running at the last sample */
    unsigned long hog_seq; /* resumes at the last sample */
    int64_t hog_since;     /* when that run was first seen */
    int hog_told;          /* reported */

    void *altstack;        /* sigaltstack we installed, or NULL */
    size_t altstack_size;
    eco_t main;            /* the thread's own stack */
    struct eco_fds fds;    /* eco_socket.c */
};

/* This thread's runtime.  initial-exec: a plain %fs/tpidr load, no call. */
extern __thread struct eco_rt *eco__rt __attribute__((tls_model("initial-exec")));

/* ---- context switch (eco_ctx_*.S) ---- */

/* Saves the callee-saved state of the running side in from (its stack and
 * record), switches to the stack to->sp and restores the state saved there.
 * Returns 0 when from is switched back to. */
ECO_HIDDEN int eco_ctx_switch(eco_t *from, eco_t *to);
/* The same switch, ending in a `ret` the CPU's return stack predicts when
 * both sides stopped at the same call site (eco__park_switch). */
ECO_HIDDEN int eco_ctx_switch_ret(eco_t *from, eco_t *to);
/* Prepares a fresh stack whose top is `top` (16-byte aligned) so that the
 * first eco_ctx_switch to co, with co->sp set to the returned pointer,
 * calls entry(co) with the alignment the ABI requires at a function's
 * entry. */
ECO_HIDDEN void *eco_ctx_init(void *top, void (*entry)(eco_t *), eco_t *co);
#if defined(ECO_ASM_FAST_PATHS)
/* eco_resume and eco_yield in full, for the assembly fast paths to fall
 * back to (eco_asm.h). */
ECO_HIDDEN int eco__resume_slow(eco_t *co);
ECO_HIDDEN int eco__yield_slow(void);
#endif

#if defined(ECO_WITH_ASAN)
/* Completes ASan's view of a switch on the side that was switched to. */
ECO_HIDDEN void eco__asan_arrived(struct eco_rt *rt, void *fake);
#endif

#if defined(ECO_WITH_TSAN)
/*
 * ThreadSanitizer keeps a signal that arrives outside a libc call for the
 * next intercepted call of the fiber that was running, and drops one that
 * arrives while a fiber is being destroyed.  A signal that came in the
 * middle of a switch would stay with a coroutine that may never run again
 * (finished, or parked for good: a server deaf to its SIGTERM).  So fibers
 * are switched, made and destroyed with signals blocked; the unblocking
 * call, made by the fiber that goes on, delivers what came meanwhile, and
 * the blocking call what the fiber left already held.
 */
static inline void eco__tsan_block(sigset_t *old)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, old);
}

static inline void eco__tsan_unblock(const sigset_t *old)
{
    pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* The side switched to lets signals in again: the mask the side that
 * left had, kept in the runtime. */
static inline void eco__tsan_arrived(struct eco_rt *rt)
{
    eco__tsan_unblock(&rt->switch_mask);
}

static inline void *eco__tsan_fiber_new(void)
{
    sigset_t mask;
    eco__tsan_block(&mask);
    void *fiber = __tsan_create_fiber(0);
    eco__tsan_unblock(&mask);
    return fiber;
}

static inline void eco__tsan_fiber_free(void *fiber)
{
    sigset_t mask;
    eco__tsan_block(&mask);
    __tsan_destroy_fiber(fiber);
    eco__tsan_unblock(&mask);
}
#endif

/* A switch through sw (eco_ctx_switch or eco_ctx_switch_ret) with the
 * sanitizers told. */
static inline __attribute__((always_inline)) void
eco__switch_via(struct eco_rt *rt, eco_t *from, eco_t *to, int (*sw)(eco_t *, eco_t *))
{
    (void)rt;
#if defined(ECO_WITH_ASAN)
    void *fake = NULL;
    rt->switch_from = from;
    /* A finished coroutine passes NULL so ASan frees its fake stack. */
    __sanitizer_start_switch_fiber(from->state == ECO_S_DONE ? NULL : &fake, to->asan_bottom,
                                   to->asan_size);
#endif
#if defined(ECO_WITH_TSAN)
    eco__tsan_block(&rt->switch_mask);
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    sw(from, to);
#if defined(ECO_WITH_ASAN)
    eco__asan_arrived(rt, fake);
#endif
#if defined(ECO_WITH_TSAN)
    eco__tsan_arrived(rt);
#endif
}

static inline __attribute__((always_inline)) void eco__switch(struct eco_rt *rt, eco_t *from,
                                                              eco_t *to)
{
    eco__switch_via(rt, from, to, eco_ctx_switch);
}

/* rt->current changes only in its own thread; the hog watchdog reads it
 * from another (eco_dump.c), hence the relaxed store: a plain move. */
static inline void eco__set_current(struct eco_rt *rt, eco_t *co)
{
    __atomic_store_n(&rt->current, co, __ATOMIC_RELAXED);
}

/* Switches from the running coroutine co back to its caller. */
static inline void eco__switch_back(struct eco_rt *rt, eco_t *co)
{
    eco_t *to = co->caller;
    eco__set_current(rt, to);
    to->state = ECO_S_ACTIVE;
    eco__switch(rt, co, to);
}

/* ---- stacks (eco_stack.c) ---- */

/* Sets up rt->stk (eco_setup; the runtime is zeroed and has its base). */
ECO_HIDDEN void eco__stacks_init(struct eco_rt *rt);
/* A coroutine record on a stack of at least stack_size usable bytes, warm
 * from the pool when one of that size is there.  Only the stack fields are
 * set; NULL with errno ENOMEM on failure. */
ECO_HIDDEN eco_t *eco__stack_get(struct eco_rt *rt, size_t stack_size);
/* Returns co's record and stack to the pool (or gives the memory back at
 * once beyond the pool limit). */
ECO_HIDDEN void eco__stack_put(struct eco_rt *rt, eco_t *co);
/* Gives back at once the memory of pooled stacks beyond `keep`, and unmaps
 * arenas left with nothing in use or pooled. */
ECO_HIDDEN void eco__stack_trim(struct eco_rt *rt, size_t keep);
/* Takes back the record and stack of co, abandoned (eco_teardown): not kept
 * for reuse; the next trim or eco__stacks_fini gives the memory back. */
ECO_HIDDEN void eco__stack_unmap(struct eco_rt *rt, eco_t *co);
/* Bytes of co's stack in use at its deepest so far, from the pages the
 * kernel has committed (a pooled stack remembers earlier users'). */
ECO_HIDDEN size_t eco__stack_used(const eco_t *co);
/* Sets the pool's upper bound and trims to it (eco_set_pool_limit). */
ECO_HIDDEN void eco__stack_limit(struct eco_rt *rt, size_t n);
/* The stack counters of eco_stats. */
ECO_HIDDEN void eco__stack_stats(struct eco_rt *rt, eco_stats_t *st);
/* Unmaps every arena and frees the trim timer (eco_teardown, before the
 * base is freed); every record must have been put or unmapped. */
ECO_HIDDEN void eco__stacks_fini(struct eco_rt *rt);
/* Installs the overflow reporter (once per process) and an alternate signal
 * stack for this thread if it has none.  0, or -1 with errno. */
ECO_HIDDEN int eco__overflow_setup(struct eco_rt *rt);
ECO_HIDDEN void eco__overflow_teardown(struct eco_rt *rt);

/* ---- the runtime (eco.c) ---- */

/* Registers a subsystem's hooks with rt; returns the bit to set in a
 * coroutine's exit_hooks for at_exit, or -1 when the table is full. */
ECO_HIDDEN int eco__hooks_add(struct eco_rt *rt, const struct eco_hooks *h);
/* Appends co (woken, state PARKED) to the run queue. */
ECO_HIDDEN void eco__runq_push(struct eco_rt *rt, eco_t *co);
/* Resumes co (PARKED and woken) from the thread's own stack, the loop
 * becoming its caller. */
ECO_HIDDEN void eco__run(struct eco_rt *rt, eco_t *co);
/* Switches away from co, the running coroutine, which has just parked:
 * to the next ready coroutine when the run queue's pass resumed co, else
 * back to its caller.  Returns when co is resumed. */
ECO_HIDDEN void eco__park_switch(struct eco_rt *rt, eco_t *co);
/* Parks co, the running coroutine, at the back of the run queue: a yield
 * to the loop.  Returns 0 when it runs again. */
ECO_HIDDEN int eco__yield_to_loop(struct eco_rt *rt, eco_t *co);

/*
 * Asks co's runtime, from any thread, to wake co with `what`
 * (ECO_WAKE_READY: the completion of a channel wait; ECO_WAKE_CANCEL:
 * eco_cancel).  In co's own thread it acts at once.  From another thread
 * it travels through a locked list and one eventfd write per burst; the
 * request names co's id, so one that arrives after co has finished is
 * dropped.  Returns 0, or -1 with ENOMEM (the request could not be queued).
 */
ECO_HIDDEN int eco__remote(eco_t *co, int what);
/* Makes sure this runtime listens for requests from other threads.  0, or
 * -1 with errno. */
ECO_HIDDEN int eco__notify_add(struct eco_rt *rt);
/* Acts on the requests other threads have queued (notify_cb, and the stack
 * trimmer before it unmaps records a request may name). */
ECO_HIDDEN void eco__remote_drain(struct eco_rt *rt);
/* Waits until a request from another thread to wake co has been queued
 * (eco_teardown, for a wait a peer has completed). */
ECO_HIDDEN void eco__remote_await(eco_t *co);

/* libeco's own events in the base, counted for eco_loop's deadlock check:
 * every event_add and event_del of the library goes through these, with
 * the flag that says whether ev is in the base.  0, or -1 with errno. */
ECO_HIDDEN int eco__ev_add(struct eco_rt *rt, struct event *ev, const struct timeval *tv,
                           unsigned char *added);
ECO_HIDDEN void eco__ev_del(struct eco_rt *rt, struct event *ev, unsigned char *added);
/* A timeout of libeco's own (no fd, not persistent) has fired: libevent
 * took it out of the base.  Called first thing in its callback. */
static inline void eco__ev_fired(struct eco_rt *rt, unsigned char *added)
{
    if (*added) {
        *added = 0;
        rt->own_events--;
    }
}

/* ---- waiting (eco_wait.c) ---- */

/* CLOCK_MONOTONIC in nanoseconds: deadlines and timeouts. */
static inline int64_t eco__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same clock at the kernel's tick (a few ms), for a few ns: when a wait
 * began, for eco_dump. */
static inline int64_t eco__coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The same, out of line: the clock's timespec stays out of the frames of
 * the blocking calls, which their coroutine touches again when resumed. */
ECO_HIDDEN int64_t eco__coarse_ns_call(void);

/* The deadline of a call bounded by ms milliseconds from now (ms < 0: no
 * bound).  It passes once ms milliseconds have fully gone by. */
static inline int64_t eco__deadline(long ms)
{
    return ms < 0 ? ECO_NEVER : eco__now_ns() + (int64_t)ms * 1000000;
}

/* ---- timers (eco_timer.c) ---- */

/* Sets co's timer to end its wait at `when` (ns), moving it if set.  0, or
 * -1 with errno (then co has no timer). */
ECO_HIDDEN int eco__timer_set(struct eco_rt *rt, eco_t *co, int64_t when);
ECO_HIDDEN void eco__timer_clear_slow(struct eco_rt *rt, eco_t *co);
/* Takes co's timer out, if it has one. */
static inline void eco__timer_clear(struct eco_rt *rt, eco_t *co)
{
    if (co->tslot != 0)
        eco__timer_clear_slow(rt, co);
}
/* Coroutines whose timer is pending (eco_loop's deadlock check). */
static inline size_t eco__timers_pending(const struct eco_rt *rt)
{
    return rt->tm.n;
}
/* Frees the heap and the timer (eco_teardown, before the base goes). */
ECO_HIDDEN void eco__timers_fini(struct eco_rt *rt);
/* eco_wait.c: co's timer, set for `when`, has passed (co's timer is
 * cleared already). */
ECO_HIDDEN void eco__timer_fired(eco_t *co, int64_t when);

/* Milliseconds left until deadline, rounded up (-1: never). */
ECO_HIDDEN long eco__ms_left(int64_t deadline);

/*
 * Whether co's blocking calls must fail at once: 0 if not, else -1 with
 * errno ECANCELED (eco_cancel) or ETIMEDOUT (its deadline has passed).
 * Every blocking call checks it first.
 */
ECO_HIDDEN int eco__stopped(eco_t *co);
static inline __attribute__((always_inline)) int eco__check_stop(eco_t *co)
{
    return ECO_UNLIKELY(co->stop != 0) ? eco__stopped(co) : 0;
}

/* The rest of eco__park, out of line: deadlines, the wake-up event, the
 * hand-over to the next ready coroutine. */
ECO_HIDDEN int eco__park_slow(struct eco_wait *w);

/*
 * Parks the running coroutine in wait w (w->ops, w->deadline set) until a
 * wake-up; returns how the wait ended (ECO_WAKE_*).  The caller has made
 * itself findable by its waker (queued on an fd, a channel...).  When the
 * wait ends by TIMEOUT, DEADLINE, CANCEL or ERROR, w->ops->cancel has taken
 * it out of its queue already; READY and CLOSED come from the waker, which
 * unlinked it.  Without a bound, and with nothing else to see to, parking
 * is a switch back to the caller, inlined: no frame of its own on the
 * parked stack.
 */
static inline __attribute__((always_inline)) int eco__park(struct eco_wait *w)
{
    struct eco_rt *rt = eco__rt;
    eco_t *co = rt->current;
    co->state = ECO_S_PARKED;
    co->wake = ECO_WAKE_NONE;
    co->wait = w;
    /* A coroutine the loop resumed parks at about the time the loop resumed
     * it: one clock read per resume by the loop, not one per park, which
     * saves one per hand-over (chan_bench pingpong: 0.90x the time, see
     * BENCHMARKS.md, Tricks).  eco_dump may count a long run before the
     * park as waiting. */
    w->since = co->by_loop ? rt->resumed_ns : eco__coarse_ns_call();
    if (ECO_UNLIKELY(w->deadline != ECO_NEVER || co->stop != 0 || rt->runq_head != NULL ||
                     !rt->notify_added))
        return eco__park_slow(w);
    rt->sourced += w->ops->sourced;
    eco__switch_back(rt, co);
    rt->sourced -= w->ops->sourced;
    co->wait = NULL;
    return co->wake;
}

/*
 * Ends co's wait with reason (the first reason wins; later ones, and wakes
 * of a coroutine not parked in a wait, are ignored).  now: resume co at
 * once when called on the thread's own stack (from a libevent callback);
 * otherwise, and always when now is 0, co goes to the back of the run
 * queue.  The caller has taken co out of its queue.
 */
ECO_HIDDEN void eco__wake(eco_t *co, int reason, int now);

/* Ends co's wait if it is parked in one and not yet woken: the kind's
 * cancel hook unlinks it, then it wakes with reason (now: as eco__wake).
 * Returns 1 when it did. */
ECO_HIDDEN int eco__end_wait(eco_t *co, int reason, int now);
/* -1 with the errno for a wait that ended with why (not READY). */
ECO_HIDDEN int eco__wait_fail(int why);
/* eco_teardown: co's wait, if any, lets go of its queue and its timer. */
ECO_HIDDEN void eco__abandon(eco_t *co);

/* ---- observing (eco_dump.c) ---- */

/* Stops watching rt for hogs (eco_teardown). */
ECO_HIDDEN void eco__hog_forget(struct eco_rt *rt);

/* Sets errno to EPERM and returns -1, out of line. */
ECO_HIDDEN int eco__eperm(void);

/* The running coroutine, or NULL outside any coroutine. */
static inline eco_t *eco__in_coroutine(void)
{
    struct eco_rt *rt = eco__rt;
    if (ECO_LIKELY(rt != NULL && rt->current != &rt->main))
        return rt->current;
    return NULL;
}

/* The running coroutine if it may block: NULL with errno EPERM outside a
 * coroutine, or ECANCELED / ETIMEDOUT when it has been stopped. */
static inline __attribute__((always_inline)) eco_t *eco__blocking(void)
{
    eco_t *co = eco__in_coroutine();
    if (ECO_UNLIKELY(co == NULL)) {
        eco__eperm();
        return NULL;
    }
    if (ECO_UNLIKELY(eco__check_stop(co) != 0))
        return NULL;
    return co;
}

/* The stack pointer here, to prefetch later: near the line the switch
 * will resume from if the caller parks now. */
static inline __attribute__((always_inline)) void *eco__sp(void)
{
    void *sp;
#if defined(__x86_64__)
    __asm__("movq %%rsp, %0" : "=r"(sp));
#elif defined(__aarch64__)
    __asm__("mov %0, sp" : "=r"(sp));
#else
    sp = __builtin_frame_address(0);
#endif
    return sp;
}

/* ---- promises (eco_promise.c), for the subsystems built on them ---- */

/* What eco_dump says a waiter of p waits for ("getaddrinfo example.com"),
 * copied and truncated; set before the wait.  Default: "promise". */
ECO_HIDDEN void eco__promise_label(eco_promise_t *p, const char *what);

#endif /* ECO_INTERNAL_H */
