/* test_stack.c - stacks: alignment, FP and varargs, many coroutines,
 * sizes, arenas and the pool, and the overflow report in every slot. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#if defined(__SANITIZE_ADDRESS__)
#define TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(TEST_ASAN)
#include <sanitizer/asan_interface.h>
#endif

/* ---- the ABI's alignment, FP and varargs on a coroutine stack ---- */

/* The compiler assumes the ABI's 16-byte alignment at entry and does not
 * realign for this local: a misaligned coroutine stack shows here. */
static __attribute__((noinline)) void aligned_local_addr(uintptr_t *addr)
{
    _Alignas(16) volatile char local[16];
    local[0] = 1;
    *addr = (uintptr_t)local;
}

struct fp_result {
    char text[128];
    uintptr_t addr_body, addr_callee;
    double sum;
};

static void *fp_body(void *arg)
{
    struct fp_result *r = arg;
    _Alignas(16) volatile char mine[16];
    mine[0] = 0;
    r->addr_body = (uintptr_t)mine;
    aligned_local_addr(&r->addr_callee);
    volatile long double ld = 1.5L;
    volatile double d = 3.25;
    snprintf(r->text, sizeof r->text, "%f %.2Lf %g %s %d", d, ld, d * 2, "ok", 42);
    double s = 0;
    for (int i = 1; i <= 100; i++)
        s += 1.0 / i;
    r->sum = s;
    return NULL;
}

START_TEST(fp_varargs_and_alignment)
{
    struct fp_result r;
    memset(&r, 0, sizeof r);
    eco_t *co = eco_create(fp_body, &r, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_str_eq(r.text, "3.250000 1.50 6.5 ok 42");
    ck_assert_uint_eq(r.addr_body % 16, 0);
    ck_assert_uint_eq(r.addr_callee % 16, 0);
    ck_assert(r.sum > 5.18 && r.sum < 5.19);
}
END_TEST

/* ---- many coroutines alive at once ---- */

/* ThreadSanitizer counts each fiber as a thread and stops at 8128, and
 * each costs it about 7 ms here (5000 took 35-60 s against the 60 s limit
 * on a busy 2-core machine); the full 10,000 run in the other builds. */
#if defined(__SANITIZE_THREAD__)
#define MANY 2000
#else
#define MANY 10000
#endif

static int started, finished;
static int gate[2]; /* a pipe: all coroutines wait until it is readable */

static void *many_body(void *arg)
{
    (void)arg;
    started++;
    struct pollfd pfd = {.fd = gate[0], .events = POLLIN};
    ck_assert_int_eq(eco_poll(&pfd, 1, -1), 1); /* all parked here at once */
    finished++;
    return NULL;
}

/* Started last (eco_go keeps order): every other coroutine is parked. */
static void *open_gate(void *arg)
{
    size_t *peak = arg;
    eco_stats_t st;
    eco_stats(&st);
    *peak = st.alive;
    ck_assert_int_eq(started, MANY);
    ck_assert_int_eq(finished, 0);
    ck_assert_int_eq(write(gate[1], "go", 2), 2);
    return NULL;
}

START_TEST(ten_thousand_alive)
{
    size_t peak = 0;
    started = finished = 0;
    ck_assert_int_eq(pipe(gate), 0);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(eco_go(many_body, NULL), 0);
    eco_go(open_gate, &peak);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(started, MANY);
    ck_assert_int_eq(finished, MANY);
    ck_assert_uint_eq(peak, MANY + 1);
    eco_stats_t st;
    eco_stats(&st);
    ck_assert_uint_eq(st.alive, 0);
    /* Just finished: every stack is pooled, in arenas of many. */
    ck_assert_uint_eq(st.stacks, st.pooled);
    ck_assert_uint_ge(st.pooled, MANY);
    ck_assert_uint_ge(st.mapped, st.pooled);
    close(gate[0]);
    close(gate[1]);
}
END_TEST

/* ---- sizes ---- */

static __attribute__((noinline)) int use_stack(int depth)
{
    volatile char pad[1024];
    pad[0] = (char)depth;
    if (depth == 0)
        return pad[0];
    return use_stack(depth - 1) + pad[0];
}

static void *use_stack_body(void *arg)
{
    int depth = (int)(intptr_t)arg;
    return (void *)(intptr_t)use_stack(depth);
}

START_TEST(stack_sizes)
{
    eco_attr_t attr;
    eco_attr_init(&attr);
    attr.stack_size = ECO_STACK_MIN - 1;
    ck_assert_ptr_null(eco_create(use_stack_body, NULL, &attr));
    ck_assert_int_eq(errno, EINVAL);
    attr.stack_size = ECO_STACK_MAX + 1;
    ck_assert_ptr_null(eco_create(use_stack_body, NULL, &attr));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_set_stack_size(1), -1);
    ck_assert_int_eq(errno, EINVAL);

    /* 1 MiB asked, about 900 KiB used: fits. */
    attr.stack_size = 1 << 20;
    eco_t *co = eco_create(use_stack_body, (void *)(intptr_t)800, &attr);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);

    /* Every size is pooled, apart from the others. */
    eco_stats_t st;
    eco_stats(&st);
    ck_assert_uint_eq(st.stacks, 1);
    ck_assert_uint_eq(st.pooled, 1);
    co = eco_create(use_stack_body, (void *)(intptr_t)40, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 2);
    /* A new default size gives the pool back (its stacks have the old size). */
    ck_assert_int_eq(eco_set_stack_size(64 * 1024), 0);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 0);
    ck_assert_uint_eq(st.mapped, 0);
    co = eco_create(use_stack_body, (void *)(intptr_t)40, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(eco_set_pool_limit(0), 0);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 0);
    ck_assert_uint_eq(st.stacks, 0);
    ck_assert_uint_eq(st.mapped, 0);
    ck_assert_uint_eq(st.committed, 0);
}
END_TEST

/* ---- arenas and the pool ---- */

/* Lines of /proc/self/maps: the process's mappings. */
static long maps_lines(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    long n = 0;
    int c;
    ck_assert_ptr_nonnull(f);
    while ((c = getc(f)) != EOF)
        n += c == '\n';
    fclose(f);
    return n;
}

/* Records where its stack is (a local near the top) and parks until
 * resumed: started with eco_resume, it yields back. */
static void *where_body(void *arg)
{
    volatile char here = 0;
    *(uintptr_t *)arg = (uintptr_t)&here;
    eco_yield();
    return NULL;
}

static eco_t *start_where(uintptr_t *where)
{
    eco_t *co = eco_create(where_body, where, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    return co;
}

static void finish(eco_t *co)
{
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}

#define ARENA_PROBE 200

START_TEST(arena_allocation_and_reuse)
{
    static eco_t *co[ARENA_PROBE];
    static uintptr_t at[ARENA_PROBE];
    eco_stats_t st;
    long maps0 = maps_lines();
    co[0] = start_where(&at[0]);
    eco_stats(&st);
    size_t first = st.mapped; /* the first arena */
    ck_assert_uint_ge(first, 8);
    ck_assert_uint_eq(st.stacks, 1);
    for (size_t i = 1; i < first; i++)
        co[i] = start_where(&at[i]);
    eco_stats(&st);
    ck_assert_uint_eq(st.mapped, first); /* all in the first mapping */
    /* Neighbours, one slot apart (give or take the stack-top offsets of
     * less than a page). */
    intptr_t stride = (intptr_t)at[1] - (intptr_t)at[0];
    ck_assert_int_ge(stride < 0 ? -stride : stride, (intptr_t)ECO_STACK_DEFAULT);
    for (size_t i = 2; i < first; i++) {
        intptr_t d = (intptr_t)at[i] - (intptr_t)at[i - 1] - stride;
        ck_assert_int_le(d < 0 ? -d : d, 4096);
    }
    /* The next arena is larger: growth is geometric. */
    for (size_t i = first; i < ARENA_PROBE; i++)
        co[i] = start_where(&at[i]);
    eco_stats(&st);
    ck_assert_uint_ge(st.mapped, 2 * first);
    ck_assert_uint_eq(st.stacks, ARENA_PROBE);
    /* Guard regions split no mapping, unless in the mprotect fallback. */
    long grown = maps_lines() - maps0;
    ck_assert_msg(grown <= ARENA_PROBE / 4 || grown >= 2 * ARENA_PROBE, "%ld more mappings",
                  grown);
    /* The stack finished last is the next one handed out, with its record,
     * and no mapping changes. */
    size_t mapped = st.mapped;
    uintptr_t was = at[57];
    eco_t *rec = co[57];
    finish(co[57]);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 1);
    co[57] = start_where(&at[57]);
    ck_assert_ptr_eq(co[57], rec);
    ck_assert_uint_eq(at[57], was);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 0);
    ck_assert_uint_eq(st.mapped, mapped);
    for (size_t i = 0; i < ARENA_PROBE; i++)
        finish(co[i]);
    eco_stats(&st);
    ck_assert_uint_eq(st.stacks, ARENA_PROBE);
    ck_assert_uint_eq(st.pooled, ARENA_PROBE);
    ck_assert_uint_ge(st.committed, ARENA_PROBE * 4096);
    /* Trimmed at once: everything goes, arenas and all. */
    eco_set_pool_limit(0);
    eco_stats(&st);
    ck_assert_uint_eq(st.stacks, 0);
    ck_assert_uint_eq(st.mapped, 0);
    /* The first stack's page is no longer mapped. */
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    unsigned char vec;
    ck_assert_int_eq(mincore((void *)(at[0] & ~(uintptr_t)(pg - 1)), pg, &vec), -1);
    ck_assert_int_eq(errno, ENOMEM);
}
END_TEST

START_TEST(pool_limit_zero)
{
    static eco_t *co[40];
    static uintptr_t at[40];
    eco_stats_t st;
    ck_assert_int_eq(eco_set_pool_limit(0), 0);
    /* One at a time: its arena goes when it finishes. */
    for (int round = 0; round < 3; round++) {
        finish(start_where(&at[0]));
        eco_stats(&st);
        ck_assert_uint_eq(st.pooled, 0);
        ck_assert_uint_eq(st.stacks, 0);
        ck_assert_uint_eq(st.mapped, 0);
        ck_assert_uint_eq(st.committed, 0);
    }
    /* Many: each finished stack gives its memory back; an arena stays
     * mapped while one of its stacks is in use, and goes with the last. */
    for (int i = 0; i < 40; i++)
        co[i] = start_where(&at[i]);
    eco_stats(&st);
    size_t mapped = st.mapped;
    for (int i = 0; i < 39; i++) {
        finish(co[i]);
        eco_stats(&st);
        ck_assert_uint_eq(st.pooled, 0);
        ck_assert_uint_eq(st.stacks, (size_t)(39 - i));
        ck_assert_uint_le(st.mapped, mapped);
        ck_assert_uint_gt(st.mapped, 0);
    }
    /* A stack given back is reused (its guard region intact). */
    eco_t *again = start_where(&at[0]);
    eco_stats(&st);
    ck_assert_uint_eq(st.stacks, 2);
    finish(again);
    finish(co[39]);
    eco_stats(&st);
    ck_assert_uint_eq(st.stacks, 0);
    ck_assert_uint_eq(st.mapped, 0);
    /* A nonzero limit bounds the pool. */
    ck_assert_int_eq(eco_set_pool_limit(5), 0);
    for (int i = 0; i < 40; i++)
        co[i] = start_where(&at[i]);
    for (int i = 0; i < 40; i++)
        finish(co[i]);
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 5);
    ck_assert_uint_eq(st.stacks, 5);
}
END_TEST

/* How many coroutines a burst starts: 100,000, fewer where that would take
 * minutes (sanitizers, Valgrind) or cannot be (the mprotect fallback, two
 * mappings per stack: qemu, or ECO_NO_GUARD_INSTALL=1). */
static int burst_size(void)
{
#if defined(__SANITIZE_THREAD__)
    return 2000; /* ThreadSanitizer stops at 8128 fibers */
#endif
    if (RUNNING_ON_VALGRIND)
        return 5000;
#if defined(TEST_ASAN)
    return 20000; /* each finished stack's 32 KiB of shadow is cleared */
#endif
    /* The first arena's worth shows whether guards split mappings. */
    long maps0 = maps_lines();
    eco_t *co[64];
    uintptr_t at;
    for (int i = 0; i < 64; i++)
        co[i] = start_where(&at);
    long grown = maps_lines() - maps0;
    for (int i = 0; i < 64; i++)
        finish(co[i]);
    eco_set_pool_limit(0);
    eco_set_pool_limit(SIZE_MAX);
    return grown > 32 ? 10000 : 100000;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long burst_parked, burst_n;
static eco_stats_t burst_peak; /* when the last one started */
static double burst_peak_at;    /* then, in seconds */

static void *park_once(void *arg)
{
    (void)arg;
    if (++burst_parked == burst_n) {
        eco_stats(&burst_peak);
        burst_peak_at = now_s();
    }
    eco_sleep(0); /* to the back of the run queue: all are alive at once */
    return NULL;
}

static void burst(int n)
{
    burst_parked = 0;
    burst_n = n;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(eco_go(park_once, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(burst_parked, n);
}

/* Runs the loop until nothing is pending: the trim timer is the only event
 * left, and it stops once the pool has given everything back.  Returns the
 * seconds that took. */
static double dispatch_until_idle(void)
{
    double t0 = now_s();
    ck_assert_int_eq(event_base_dispatch(eco_base()), 1); /* 1: no events left */
    return now_s() - t0;
}

START_TEST(trim_after_burst)
{
    int n = burst_size() / 5; /* hundred_thousand_twice has the full size */
    eco_stats_t st;
    eco_stats(&st);
    size_t base_mapped = st.mapped;
    burst(n);
    ck_assert_uint_eq(burst_peak.alive, (size_t)n);
    ck_assert_uint_ge(burst_peak.mapped, (size_t)n);
    eco_stats(&st);
    ck_assert_uint_eq(st.alive, 0);
    ck_assert_uint_eq(st.stacks, st.pooled);
    ck_assert_uint_ge(st.pooled, 1);
    /* A burst again at once reuses the pooled stacks: no new arena.  (Where
     * a burst takes longer than a second, as under sanitizers, the first
     * stacks to finish have been given back by the time the last do.) */
    if (st.pooled == (size_t)n) {
        size_t mapped = st.mapped;
        burst(n);
        eco_stats(&st);
        ck_assert_uint_eq(st.mapped, mapped);
        ck_assert_uint_eq(burst_peak.mapped, mapped);
    }
    /* Then the timer gives it all back and stops: the loop returns by
     * itself.  Not before a second has passed since the most were in use
     * (not since the loop returned: on a loaded machine the burst's end
     * can come long after its peak). */
    double took = dispatch_until_idle();
    double since_peak = now_s() - burst_peak_at;
    eco_stats(&st);
    ck_assert_uint_eq(st.pooled, 0);
    ck_assert_uint_eq(st.stacks, 0);
    ck_assert_uint_eq(st.mapped, base_mapped);
    ck_assert_uint_eq(st.committed, 0);
    ck_assert_msg(since_peak >= 0.95, "given back %.3f s after the peak, before a second",
                  since_peak);
    ck_assert_msg(took < 30, "the trim timer kept the loop for %.3f s", took);
}
END_TEST

START_TEST(hundred_thousand_twice)
{
    int n = burst_size();
    eco_stats_t st;
    eco_stats(&st);
    size_t base_mapped = st.mapped;
    for (int round = 0; round < 2; round++) {
        burst(n);
        ck_assert_uint_eq(burst_peak.alive, (size_t)n);
        ck_assert_uint_ge(burst_peak.mapped, (size_t)n);
        ck_assert_uint_eq(burst_peak.stacks, (size_t)n);
        eco_stats(&st);
        ck_assert_uint_eq(st.alive, 0);
        dispatch_until_idle();
        eco_stats(&st);
        ck_assert_uint_eq(st.stacks, 0);
        ck_assert_uint_eq(st.mapped, base_mapped);
    }
}
END_TEST

/* A steady trickle keeps what it needs, and the loop still ends about a
 * second after the last coroutine. */
static void *trickle(void *arg)
{
    int left = (int)(intptr_t)arg;
    eco_sleep(20);
    if (left > 0)
        ck_assert_int_eq(eco_go(trickle, (void *)(intptr_t)(left - 1)), 0);
    return NULL;
}

START_TEST(trickle_keeps_its_stack)
{
    ck_assert_int_eq(eco_go(trickle, (void *)(intptr_t)60), 0);
    ck_assert_int_eq(eco_loop(), 0); /* 1.2 s of one coroutine at a time */
    eco_stats_t st;
    eco_stats(&st);
    /* One stack served all 61, pooled between them. */
    ck_assert_uint_le(st.stacks, 2);
    ck_assert_uint_ge(st.pooled, 1);
    double took = dispatch_until_idle();
    ck_assert_msg(took < 5, "the trim timer kept the loop for %.3f s", took);
    eco_stats(&st);
    ck_assert_uint_eq(st.mapped, 0);
}
END_TEST

/* ---- ASan: an abandoned stack's poisoning goes with it ---- */

static void *poisoned_body(void *arg)
{
    /* An array whose address escapes gets redzones on the stack. */
    volatile char buf[64];
    buf[0] = 1;
    *(uintptr_t *)arg = (uintptr_t)buf;
    eco_yield();
    return (void *)(intptr_t)buf[0];
}

START_TEST(teardown_unpoisons_abandoned_stacks)
{
    uintptr_t at = 0;
    eco_t *co = eco_create(poisoned_body, &at, NULL);
    ck_assert_int_eq(eco_resume(co), 0); /* parked, frames and redzones live */
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    char *page = (char *)(at & ~(uintptr_t)(pg - 1));
#if defined(TEST_ASAN)
    ck_assert_ptr_nonnull(__asan_region_is_poisoned(page, pg)); /* the redzones */
#endif
    eco_teardown(); /* abandons it: the stack is unmapped */
    char *again = mmap(page, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    ck_assert_ptr_eq(again, page); /* the address is free again */
#if defined(TEST_ASAN)
    ck_assert_ptr_null(__asan_region_is_poisoned(page, pg));
#endif
    memset(again, 0x5a, pg); /* ASan would report a stack-buffer-overflow */
    ck_assert_int_eq(again[pg - 1], 0x5a);
    munmap(again, pg);
    ck_assert_int_eq(eco_setup(NULL), 0); /* for the fixture's teardown */
}
END_TEST

/* ---- teardown: sleepers are abandoned from their records alone ---- */

static void *sleeper_body(void *arg)
{
    /* Its frame (on the stack itself, where a local might be on ASan's
     * fake stack), near the top and above eco_sleep's frame. */
    *(uintptr_t *)arg = (uintptr_t)__builtin_frame_address(0);
    eco_sleep(60 * 1000);
    return NULL;
}

/* A million sleepers' stacks may be cold (or dear to fault in, on a VM),
 * so eco_teardown must let them go without reading their frames: made
 * unreadable, they would fault it.  (Under ASan with
 * detect_stack_use_after_return=1, not the default with gcc, a wait record
 * in eco_sleep's frame would sit on ASan's fake stack and escape this.) */
START_TEST(teardown_leaves_sleepers_stacks_alone)
{
    enum { N = 3 };
    size_t pg = (size_t)sysconf(_SC_PAGESIZE);
    for (int i = 0; i < N; i++) {
        uintptr_t at = 0;
        eco_t *co = eco_create(sleeper_body, &at, NULL);
        ck_assert_ptr_nonnull(co);
        ck_assert_int_eq(eco_resume(co), 0); /* runs to its sleep and parks */
        ck_assert_int_eq(eco_state(co), ECO_PENDING);
        ck_assert(at != 0);
        /* Its frame's page and the three below it: the frames of the body,
         * eco_sleep and the switch, all well inside the stack. */
        char *page = (char *)(at & ~(uintptr_t)(pg - 1));
        ck_assert_int_eq(mprotect(page - 3 * pg, 4 * pg, PROT_NONE), 0);
    }
    eco_teardown(); /* faults here if it reads a sleeper's frame */
    ck_assert_int_eq(eco_setup(NULL), 0); /* for the fixture's teardown */
}
END_TEST

/* ---- overflow: reported and aborted, in a child process ---- */

static volatile int overflow_limit = 1 << 30; /* far beyond any stack */

static __attribute__((noinline)) int recurse_deep(int n)
{
    volatile char pad[512];
    pad[0] = (char)n;
    if (n >= overflow_limit)
        return 0;
    return recurse_deep(n + 1) + pad[0];
}

static void *overflow_body(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)recurse_deep(0);
}

static void *nop_body(void *arg)
{
    return arg;
}

/* Child: overflows a coroutine with a 64 KiB stack, named or not, in slot
 * `slot` of its class's arenas (coroutines created before it take the
 * slots before it, in order).  With `released`, that slot first served a
 * coroutine that finished with pooling off, so its pages went back with
 * MADV_DONTNEED before the overflowing one got it. */
static int overflow_child(const char *name, int slot, int released)
{
    if (eco_setup(NULL) != 0)
        return 3;
    eco_attr_t attr;
    eco_attr_init(&attr);
    attr.stack_size = 64 * 1024;
    eco_t *fill[2 * 64 + 2];
    int n = released ? slot + 2 : slot; /* released: one more keeps the arena */
    if ((size_t)n > sizeof fill / sizeof fill[0])
        return 6;
    if (released)
        eco_set_pool_limit(0);
    for (int i = 0; i < n; i++) {
        fill[i] = eco_create(nop_body, NULL, &attr);
        if (fill[i] == NULL)
            return 4;
    }
    if (released && (eco_resume(fill[slot]) != 0 || eco_join(fill[slot], NULL) != 0))
        return 7;
    attr.name = name[0] != '\0' ? name : NULL;
    eco_t *co = eco_create(overflow_body, NULL, &attr);
    if (co == NULL)
        return 4;
    printf("id=%lu\n", eco_id(co));
    fflush(stdout);
    eco_resume(co);
    return 5; /* not reached if the overflow is caught */
}

/* Forks a child that overflows with ECO_NO_GUARD_INSTALL=fallback (no exec:
 * qemu user-mode cannot exec a foreign binary here); returns its wait
 * status and collects its stdout+stderr in out. */
static int run_overflow_child(const char *name, const char *fallback, int slot, int released,
                              char *out, size_t outsz)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[1], 1);
        dup2(p[1], 2);
        close(p[0]);
        eco_teardown(); /* the child sets up its own runtime */
        setenv("ECO_NO_GUARD_INSTALL", fallback, 1);
        _exit(overflow_child(name, slot, released));
    }
    close(p[1]);
    size_t n = 0;
    ssize_t r;
    while (n + 1 < outsz && (r = read(p[0], out + n, outsz - 1 - n)) > 0)
        n += (size_t)r;
    out[n] = '\0';
    close(p[0]);
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    return status;
}

static void check_overflow(const char *name, const char *fallback, int slot, int released)
{
    char out[4096];
    int status = run_overflow_child(name, fallback, slot, released, out, sizeof out);
    ck_assert_msg(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
                  "slot %d (fallback %s, released %d): child did not abort: status %#x, "
                  "output: %s", slot, fallback, released, status, out);
    char expect[128];
    if (name[0] != '\0') {
        snprintf(expect, sizeof expect, "eco: stack overflow in coroutine %s (stack size ", name);
    } else {
        unsigned long id = 0;
        ck_assert_int_eq(sscanf(out, "id=%lu", &id), 1);
        snprintf(expect, sizeof expect, "eco: stack overflow in coroutine #%lu (stack size ", id);
    }
    ck_assert_msg(strstr(out, expect) != NULL, "slot %d: expected \"%s\" in: %s", slot, expect,
                  out);
}

START_TEST(overflow_named)
{
    check_overflow("deep-diver", "0", 0, 0);
}
END_TEST

START_TEST(overflow_anonymous)
{
    check_overflow("", "0", 3, 0);
}
END_TEST

START_TEST(overflow_with_mprotect_guard)
{
    check_overflow("fallback", "1", 0, 0);
}
END_TEST

/* Slots in the first arena of the 64 KiB class (the second has as many). */
static int first_arena_slots(void)
{
    eco_attr_t attr;
    eco_attr_init(&attr);
    attr.stack_size = 64 * 1024;
    eco_t *co = eco_create(nop_body, NULL, &attr);
    ck_assert_ptr_nonnull(co);
    eco_stats_t st;
    eco_stats(&st);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_uint_le(st.mapped, 64);
    return (int)st.mapped;
}

/* Every slot of an arena, and the first and last of the next one, in both
 * guard modes: each slot's guard region is where its overflow lands. */
START_TEST(overflow_every_slot)
{
    int first = first_arena_slots();
    static const char *const modes[] = {"0", "1"};
    for (int m = 0; m < 2; m++) {
        for (int slot = 0; slot < first + 1; slot++) {
            char name[32];
            snprintf(name, sizeof name, "slot-%d", slot);
            check_overflow(name, modes[m], slot, 0);
        }
        check_overflow("second-arena-last", modes[m], 2 * first - 1, 0);
    }
}
END_TEST

/* A slot whose pages were given back keeps its guard region. */
START_TEST(overflow_in_released_slot)
{
    int first = first_arena_slots();
    static const char *const modes[] = {"0", "1"};
    for (int m = 0; m < 2; m++) {
        check_overflow("released-0", modes[m], 0, 1);
        check_overflow("released-1", modes[m], 1, 1);
        check_overflow("released-last", modes[m], first - 1, 1);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("stack");
    TCase *tc = rt_tcase("stacks");
    tcase_set_timeout(tc, 180); /* ThreadSanitizer: about 7 ms a fiber */
    tcase_add_test(tc, fp_varargs_and_alignment);
    tcase_add_test(tc, ten_thousand_alive);
    tcase_add_test(tc, stack_sizes);
    tcase_add_test(tc, arena_allocation_and_reuse);
    tcase_add_test(tc, pool_limit_zero);
    tcase_add_test(tc, teardown_unpoisons_abandoned_stacks);
    tcase_add_test(tc, teardown_leaves_sleepers_stacks_alone);
    suite_add_tcase(s, tc);
    /* The burst tests wait for the trim timer, a second or two each. */
    TCase *pool = rt_tcase("pool");
    tcase_set_timeout(pool, 240);
    tcase_add_test(pool, trim_after_burst);
    tcase_add_test(pool, hundred_thousand_twice);
    tcase_add_test(pool, trickle_keeps_its_stack);
    suite_add_tcase(s, pool);
    TCase *of = rt_tcase("overflow");
    tcase_set_timeout(of, 240);
    tcase_add_test(of, overflow_named);
    tcase_add_test(of, overflow_anonymous);
    tcase_add_test(of, overflow_with_mprotect_guard);
    tcase_add_test(of, overflow_every_slot);
    tcase_add_test(of, overflow_in_released_slot);
    suite_add_tcase(s, of);
    return run_suite(s);
}
