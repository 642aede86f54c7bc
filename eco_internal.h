/*
 * eco_internal.h - what the library's files share and users never see.
 *
 * The coroutine record lives in a per-runtime slab, apart from its stack
 * (eco_stack.c says why); a pooled record keeps its stack.
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
/* The code of a round trip (wake-up, read, write, park) sits together in
 * one page, and the rare paths (ECO_COLD) elsewhere: where every system
 * call flushes the TLB, as on this project's machine, each page a round
 * trip touches costs a page walk (BENCHMARKS.md, "Pages per round trip").
 * The linker sorts .text.sorted.* sections by name, whatever the order of
 * the objects (shared library or static archive): group 0 is the switch
 * (eco_ctx_*.S, which starts the page), 1 the wake-ups and parking, 2 the
 * socket calls of a request-response server, 3 the other socket calls.
 * Not the hot attribute: its .text.hot keeps the objects' order, which a
 * static link changes. */
#define ECO_HOT(group) __attribute__((section(".text.sorted.eco" #group)))
#define ECO_COLD __attribute__((noinline, cold))

/* Sanitizer and Valgrind support, chosen by CMake options. */
#if defined(ECO_WITH_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#endif
#if defined(ECO_WITH_TSAN)
#include <sanitizer/tsan_interface.h>
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

/* Why a parked coroutine was woken (eco__park's return value). */
enum {
    ECO_WAKE_NONE = 0,
    ECO_WAKE_READY,    /* the awaited thing happened */
    ECO_WAKE_TIMEOUT,  /* its deadline passed */
    ECO_WAKE_CLOSED,   /* the fd or channel it waited on was closed */
    ECO_WAKE_RUN,      /* plain reschedule (eco_go start, yield, sleep 0) */
};

struct eco_rt;

struct eco {
    void *sp;              /* saved stack pointer while not running */
    unsigned char state;   /* ECO_S_* */
    unsigned char by_loop; /* last resumed by the runtime, not by eco_resume;
                              always 1 in rt->main, so eco_yield's one test
                              also sends the main stack to its slow path */
    unsigned char detached;
    unsigned char timer_set; /* timer has been event_assign'ed */
    /* What a wake-up touches sits in this first cache line. */
    unsigned char wake;    /* ECO_WAKE_* once woken, 0 while still parked */
    unsigned char queued;  /* linked by qprev/qnext */
    unsigned char signaled; /* set in co's thread when eco__signal reaches it */
    unsigned char fd_holds; /* directions taken with eco_fd_lock and not yet
                               given back, saturating at 255: if nonzero when
                               the coroutine returns, they are released */
    /* x86-64: the floating-point control words, saved by the switch next
     * to the line it writes anyway (eco_ctx_x86_64.S). */
    uint32_t mxcsr;
    uint16_t fpucw;
    struct eco_rt *rt;
    eco_t *caller;         /* whom yield/park/return switches back to */
    eco_t *next;           /* run queue link */
    eco_t *qprev, *qnext;  /* fd wait queue links (eco_socket.c) */
#if defined(__x86_64__)
    /* rbp, rbx, r12-r15 while switched out: the switch keeps them here,
     * beside the line it writes anyway, rather than on the stack, so a
     * wake-up touches one stack line fewer (eco_ctx_x86_64.S). */
    uint64_t regs[6];
#endif
    eco_t *joiner;         /* coroutine parked in eco_join on this one */
    eco_fn fn;
    void *arg;
    void *retval;
    void *wait_data;       /* free for the blocking primitive parking it */
    unsigned long id;
    eco_t *all_prev, *all_next; /* every record of the runtime not pooled */

    /* The stack (eco_stack.c); these stay with the record's slot. */
    struct eco_stk_arena *arena; /* the mapping holding record and stack */
    char *stack_lo;        /* lowest usable byte, just above the guard */
    size_t stack_size;     /* usable bytes from stack_lo to the stack's top */
    size_t stack_req;      /* size asked for */
    unsigned valgrind_id;
    int joined;            /* a joiner from the main stack waits on it */

#if defined(ECO_WITH_ASAN)
    const void *asan_bottom; /* stack bounds reported to ASan */
    size_t asan_size;
#endif
#if defined(ECO_WITH_TSAN)
    void *tsan_fiber;
#endif
    char name[ECO_NAME_MAX];
    long deadline;         /* eco__now_ms() when the parked timer is due */
    struct event *timer;   /* storage right after this record, in its slot */
};

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
    int armed;             /* trim_ev is pending */
    int more;              /* the last tick ran out of budget */
    size_t mapped;         /* slots in mapped arenas */
    size_t peaks[ECO_STK_WINDOWS]; /* peak of each recent window, a ring */
    unsigned tick;         /* windows closed so far */
    struct eco_stk_class *classes;
    struct event *trim_ev; /* created on first use */
};

/* Fds per chunk of the fd table, and chunk pointers kept inline in the
 * runtime: fds below 8 * 256 = 2048 are found without another page. */
#define ECO_FD_CHUNK 8
#define ECO_FD_CHUNKS_INLINE 256

/* One runtime per thread, in a page of its own (eco_setup). */
struct eco_rt {
    eco_t *current;        /* running coroutine, or &main */
    struct event_base *base;
    int own_base;
    int looping;           /* eco_loop is running the base */
    size_t alive;          /* created and not DONE */
    size_t stack_size;     /* default for new coroutines */

    /* Ready queue, FIFO: coroutines the runtime will resume from runq_ev. */
    eco_t *runq_head;
    eco_t *runq_tail;
    struct event *runq_ev;
    int runq_armed;        /* runq_ev is active or scheduled */
    int runq_budget;       /* resumes left before the loop polls for I/O */
    void *last_write;      /* fd entry of this thread's latest write-side
                              call: a reader parking next notes it as its
                              entry's peer (eco_socket.c) */

    struct eco_stacks stk; /* stacks, records and their pool (eco_stack.c) */
    eco_t *all;            /* coroutines not yet freed, for teardown */
    eco_t *zombie;         /* a finished detached coroutine, freed later:
                              not while its own stack is running */

    unsigned long next_id, id_limit;
#if defined(ECO_WITH_ASAN)
    eco_t *switch_from;    /* who switched last, for ASan's bookkeeping */
#endif
    /* Wake-ups from other threads (eco__signal): a locked list and an
     * eventfd watched by notify_ev, written once per burst. */
    pthread_mutex_t remote_lock;
    eco_t **remote;        /* pending coroutines, under remote_lock */
    size_t remote_n, remote_cap;
    eco_t **spare;         /* the other buffer, owned by the loop */
    size_t spare_cap;
    int notify_fd;
    int notify_pending;    /* under remote_lock: the fd has been written */
    int notify_added;      /* notify_ev is in the base (owner thread only) */
    struct event *notify_ev;

    /* Per-fd wait state of eco_socket.c: fd's entry sits in a page of
     * ECO_FD_CHUNK entries, fdchunk[fd / ECO_FD_CHUNK].  The first
     * ECO_FD_CHUNKS_INLINE chunk pointers live here, in the runtime's own
     * page, which a call touches anyway: one page fewer per call than a
     * table of its own (BENCHMARKS.md, "Pages per round trip"). */
    void **fdchunk;        /* fdchunk_inline, or a larger copy */
    size_t fdchunk_n;
    size_t fd_entry;       /* bytes per entry (with libevent's events) */

    void *altstack;        /* sigaltstack we installed, or NULL */
    size_t altstack_size;
    eco_t main;            /* the thread's own stack */
    void *fdchunk_inline[ECO_FD_CHUNKS_INLINE];
};

/* This thread's runtime.  initial-exec: a plain %fs/tpidr load, no call. */
extern __thread struct eco_rt *eco__rt __attribute__((tls_model("initial-exec")));

/* ---- context switch (eco_ctx_*.S) ---- */

/* Saves the callee-saved state of the running side in from (its stack and
 * record), switches to the stack to->sp and restores the state saved there.
 * Returns 0 when from is switched back to. */
ECO_HIDDEN int eco_ctx_switch(eco_t *from, eco_t *to);
/* The same switch, ending in a return the CPU's return stack can predict
 * when both sides stopped at the same call site (see the x86-64 file). */
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

/* A switch through sw, eco_ctx_switch or eco_ctx_switch_ret. */
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
    __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
    sw(from, to);
#if defined(ECO_WITH_ASAN)
    eco__asan_arrived(rt, fake);
#endif
}

static inline void eco__switch(struct eco_rt *rt, eco_t *from, eco_t *to)
{
    eco__switch_via(rt, from, to, eco_ctx_switch);
}

/* For eco__park's hand-over from one parked coroutine to the next. */
static inline void eco__switch_ret(struct eco_rt *rt, eco_t *from, eco_t *to)
{
    eco__switch_via(rt, from, to, eco_ctx_switch_ret);
}

/* Switches from the running coroutine co back to its caller. */
static inline void eco__switch_back(struct eco_rt *rt, eco_t *co)
{
    eco_t *to = co->caller;
    rt->current = to;
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

/* ---- parking and waking, for the blocking primitives (eco.c) ---- */

/* eco__park's deadline and run-queue hand-over, out of line; the running
 * coroutine is already marked parked. */
ECO_HIDDEN int eco__park_slow(long timeout_ms);

/*
 * Parks the running coroutine until eco__wake (or, with a deadline, its
 * timer).  timeout_ms < 0: no deadline.  Returns the ECO_WAKE_* reason.
 * The caller must be a coroutine (check with eco__in_coroutine) and must
 * have put itself where a waker will find it.  Without a deadline, and with
 * no coroutine in the run queue to hand the turn to, parking is a plain
 * switch back to the caller, inlined: it leaves no frame of its own on the
 * parked stack, one cache line fewer for every wake-up to bring back.
 */
static inline __attribute__((always_inline)) int eco__park(long timeout_ms)
{
    struct eco_rt *rt = eco__rt;
    eco_t *co = rt->current;
    co->state = ECO_S_PARKED;
    co->wake = ECO_WAKE_NONE;
    if (ECO_UNLIKELY(timeout_ms >= 0 || rt->runq_head != NULL))
        return eco__park_slow(timeout_ms);
    eco__switch_back(rt, co);
    return co->wake;
}
/* Wakes a parked coroutine of this thread with a reason; later wakes of the
 * same parking are ignored.  It runs from the ready queue, in FIFO order. */
ECO_HIDDEN void eco__wake(eco_t *co, int reason);
/* Like eco__wake but resumes co at once when called on the thread's own
 * stack (from a libevent callback); falls back to eco__wake otherwise. */
ECO_HIDDEN void eco__wake_now(eco_t *co, int reason);

/*
 * Signals co from any thread: in co's own thread, sets co->signaled and wakes
 * co if it is parked.  From another thread the signal travels through co's
 * runtime (a locked list and one eventfd write per burst), so the waiter
 * must keep co alive and parked until it sees co->signaled:
 *     co->signaled = 0; <make co findable by signalers>;
 *     eco__signal_prepare();
 *     while (!co->signaled) eco__park(...);   (re-check after a timeout)
 * Returns 0, or -1 with ENOMEM (the signal could not be queued).
 */
ECO_HIDDEN int eco__signal(eco_t *co);
/* Makes sure this runtime listens for signals from other threads.  Called by
 * a coroutine before it parks waiting for eco__signal.  0, or -1 with errno. */
ECO_HIDDEN int eco__signal_prepare(void);

/* CLOCK_MONOTONIC in milliseconds: deadlines of sleeps and timeouts. */
static inline long eco__now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Frees the per-fd state of eco_socket.c (eco_teardown). */
ECO_HIDDEN void eco__fd_teardown(struct eco_rt *rt);
/* Releases every fd direction co still holds (co has returned). */
ECO_HIDDEN void eco__fd_release(eco_t *co);

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

/* The running coroutine, or NULL (errno EPERM) outside any coroutine. */
static inline eco_t *eco__in_coroutine(void)
{
    struct eco_rt *rt = eco__rt;
    if (ECO_LIKELY(rt != NULL && rt->current != &rt->main))
        return rt->current;
    return NULL;
}

#endif /* ECO_INTERNAL_H */
