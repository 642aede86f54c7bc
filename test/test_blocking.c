/* test_blocking.c - eco_run_blocking: the result comes back from another
 * thread while other coroutines run; the pool's size limit (n + 1 calls on
 * n threads: the last waits); a caller cancelled while its call runs or
 * waits, or past its deadline, returns at once and the function still runs
 * exactly once, its result going to drop; threads start on use and stop at
 * eco_teardown, which waits for the calls in flight; eco_dump's words. */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

/* Pool threads alive now (they are named "eco-blocking"; sanitizers
 * start threads of their own). */
static int threads_now(void)
{
    DIR *d = opendir("/proc/self/task");
    ck_assert_ptr_nonnull(d);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char path[300], comm[32] = "";
        snprintf(path, sizeof path, "/proc/self/task/%s/comm", e->d_name);
        FILE *f = fopen(path, "r");
        if (f == NULL)
            continue; /* gone meanwhile */
        if (fgets(comm, sizeof comm, f) != NULL)
            n += strncmp(comm, "eco-blocking", 12) == 0;
        fclose(f);
    }
    closedir(d);
    return n;
}

/* Waits until n pool threads are listed: a joined thread can linger in
 * /proc for a moment after pthread_join (under qemu, for one). */
static void await_threads(int n)
{
    for (int i = 0; threads_now() != n; i++) {
        ck_assert_msg(i < slack(2000), "%d pool threads, not %d", threads_now(), n);
        usleep(1000);
    }
}

/* A gate the blocking functions wait at: each pass takes a token. */
static struct {
    pthread_mutex_t m;
    pthread_cond_t c;
    int tokens;
    int started, running, most;
    int drops;
    long drop_sum;
} g = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, 0, 0, 0, 0, 0, 0};

static void gate_reset(void)
{
    pthread_mutex_lock(&g.m);
    g.tokens = g.started = g.running = g.most = g.drops = 0;
    g.drop_sum = 0;
    pthread_mutex_unlock(&g.m);
}

static void gate_open(int n)
{
    pthread_mutex_lock(&g.m);
    g.tokens += n;
    pthread_cond_broadcast(&g.c);
    pthread_mutex_unlock(&g.m);
}

static int gate_get(int *field)
{
    pthread_mutex_lock(&g.m);
    int v = *field;
    pthread_mutex_unlock(&g.m);
    return v;
}

/* Waits on the thread's own stack (no runtime use) until *field >= n;
 * fails the test after a generous bound. */
static void gate_await(int *field, int n)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += slack(10);
    pthread_mutex_lock(&g.m);
    while (*field < n)
        ck_assert_int_ne(pthread_cond_timedwait(&g.c, &g.m, &until), ETIMEDOUT);
    pthread_mutex_unlock(&g.m);
}

/* Blocks until a token comes; returns arg + 1000 (arg is a long). */
static void *gated(void *arg)
{
    pthread_mutex_lock(&g.m);
    g.started++;
    g.running++;
    if (g.running > g.most)
        g.most = g.running;
    pthread_cond_broadcast(&g.c);
    while (g.tokens == 0)
        pthread_cond_wait(&g.c, &g.m);
    g.tokens--;
    g.running--;
    pthread_mutex_unlock(&g.m);
    return (void *)((intptr_t)arg + 1000);
}

/* drop for a caller that gave up: arg is a malloc'd long. */
static void drop_boxed(void *arg, void *result)
{
    pthread_mutex_lock(&g.m);
    g.drops++;
    g.drop_sum += (long)(intptr_t)result;
    pthread_cond_broadcast(&g.c);
    pthread_mutex_unlock(&g.m);
    free(arg);
}

static void *boxed_gated(void *arg)
{
    return gated((void *)(intptr_t)*(long *)arg);
}

/* ---- the basic call ---- */

static void *whoami(void *arg)
{
    *(pthread_t *)arg = pthread_self();
    return (void *)42;
}

static void *caller_basic(void *arg)
{
    (void)arg;
    pthread_t tid;
    void *res = NULL;
    ck_assert_int_eq(eco_run_blocking(whoami, &tid, &res, NULL), 0);
    ck_assert_ptr_eq(res, (void *)42);
    ck_assert(!pthread_equal(tid, pthread_self()));
    return NULL;
}

START_TEST(result_from_another_thread)
{
    ck_assert_int_eq(eco_go(caller_basic, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* While a call blocks its pool thread, the loop runs other coroutines. */
static int ticks;

static void *ticker(void *arg)
{
    (void)arg;
    for (int i = 0; i < 5; i++) {
        eco_sleep(1);
        ticks++;
    }
    gate_open(1);
    return NULL;
}

static void *caller_gated(void *arg)
{
    void *res = NULL;
    ck_assert_int_eq(eco_run_blocking(gated, arg, &res, NULL), 0);
    ck_assert_ptr_eq(res, (void *)((intptr_t)arg + 1000));
    return NULL;
}

START_TEST(loop_runs_meanwhile)
{
    gate_reset();
    ticks = 0;
    ck_assert_int_eq(eco_go(caller_gated, (void *)7), 0);
    ck_assert_int_eq(eco_go(ticker, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(ticks, 5);
}
END_TEST

static void *caller_many(void *arg)
{
    long i = (long)(intptr_t)arg;
    for (int k = 0; k < 20; k++) {
        void *res = NULL;
        ck_assert_int_eq(eco_run_blocking(whoami, &(pthread_t){0}, &res, NULL), 0);
        ck_assert_ptr_eq(res, (void *)42);
    }
    (void)i;
    return NULL;
}

START_TEST(many_callers)
{
    for (long i = 0; i < 16; i++)
        ck_assert_int_eq(eco_go(caller_many, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- the limit ---- */

static void dump_to(char *buf, size_t n)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(eco_dump(fileno(f)), 1);
    rewind(f);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
}

static int count(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)) != NULL; p++)
        n++;
    return n;
}

/* Watches the callers from a coroutine: two run, the third waits. */
static void *limit_watch(void *arg)
{
    (void)arg;
    int64_t t0 = now_ns();
    while (gate_get(&g.started) < 2) {
        ck_assert_int_lt(ms_since(t0), slack(10000));
        eco_sleep(1);
    }
    /* Nothing to wait for when all goes well: give a third thread the
     * time to start wrongly. */
    eco_sleep(50);
    ck_assert_int_eq(gate_get(&g.started), 2);
    char buf[4096];
    dump_to(buf, sizeof buf);
    ck_assert_msg(count(buf, "wait=\"blocking call\"") == 3, "dump: %s", buf);
    gate_open(1);
    while (gate_get(&g.started) < 3) {
        ck_assert_int_lt(ms_since(t0), slack(10000));
        eco_sleep(1);
    }
    gate_open(2);
    return NULL;
}

START_TEST(limit_honoured)
{
    gate_reset();
    int before = threads_now();
    ck_assert_int_eq(eco_set_blocking_threads(2), 0);
    for (long i = 0; i < 3; i++)
        ck_assert_int_eq(eco_go(caller_gated, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_go(limit_watch, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(gate_get(&g.most), 2);
    ck_assert_int_eq(threads_now(), before + 2);
}
END_TEST

/* ---- giving up ---- */

struct gaveup {
    long *arg;
    long deadline_ms; /* > 0: set as the coroutine's deadline first */
    int ret, err;
    long took_ms;
};

static void *caller_boxed(void *a)
{
    struct gaveup *gu = a;
    void *res = NULL;
    int64_t t0 = now_ns(); /* before the deadline: the bound starts there */
    if (gu->deadline_ms > 0)
        ck_assert_int_eq(eco_set_deadline(eco_self(), gu->deadline_ms), 0);
    gu->ret = eco_run_blocking(boxed_gated, gu->arg, &res, drop_boxed);
    gu->err = gu->ret < 0 ? errno : 0;
    gu->took_ms = ms_since(t0);
    if (gu->ret == 0)
        free(gu->arg);
    return NULL;
}

static long *box(long v)
{
    long *p = malloc(sizeof *p);
    ck_assert_ptr_nonnull(p);
    *p = v;
    return p;
}

START_TEST(cancel_while_running)
{
    gate_reset();
    struct gaveup gu = {.arg = box(5), .ret = -2};
    eco_t *co = eco_create(caller_boxed, &gu, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    gate_await(&g.started, 1); /* it runs on its thread */
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_lt(ms_since(t0), slack(1000));
    ck_assert_int_eq(gu.ret, -1);
    ck_assert_int_eq(gu.err, ECANCELED);
    ck_assert_int_eq(gate_get(&g.drops), 0); /* still running */
    gate_open(1);
    gate_await(&g.drops, 1); /* ran to its end; the result went to drop */
    ck_assert_int_eq(g.drop_sum, 1005);
    ck_assert_int_eq(gate_get(&g.started), 1);
}
END_TEST

START_TEST(cancel_while_queued)
{
    gate_reset();
    ck_assert_int_eq(eco_set_blocking_threads(1), 0);
    struct gaveup a = {.arg = box(1), .ret = -2};
    struct gaveup b = {.arg = box(2), .ret = -2};
    eco_t *ca = eco_create(caller_boxed, &a, NULL);
    eco_t *cb = eco_create(caller_boxed, &b, NULL);
    ck_assert_int_eq(eco_resume(ca), 0);
    gate_await(&g.started, 1);
    ck_assert_int_eq(eco_resume(cb), 0); /* queued behind a */
    ck_assert_int_eq(eco_cancel(cb), 0);
    ck_assert_int_eq(eco_join(cb, NULL), 0);
    ck_assert_int_eq(b.err, ECANCELED);
    ck_assert_int_eq(gate_get(&g.started), 1);
    gate_open(2);
    ck_assert_int_eq(eco_join(ca, NULL), 0);
    ck_assert_int_eq(a.ret, 0);
    /* b's function still ran, once, after a's, and its result was
     * dropped; a's was not. */
    gate_await(&g.drops, 1);
    ck_assert_int_eq(gate_get(&g.started), 2);
    ck_assert_int_eq(g.drop_sum, 1002);
}
END_TEST

START_TEST(deadline)
{
    gate_reset();
    struct gaveup gu = {.arg = box(3), .ret = -2, .deadline_ms = 60};
    eco_t *co = eco_create(caller_boxed, &gu, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(gu.err, ETIMEDOUT);
    ck_assert_int_ge(gu.took_ms, 60);
    ck_assert_int_lt(gu.took_ms, slack(2000));
    gate_open(1);
    gate_await(&g.drops, 1);
    ck_assert_int_eq(g.drop_sum, 1003);
}
END_TEST

/* No result pointer: the result goes to drop, the caller has it done. */
static void *caller_no_result(void *a)
{
    long *arg = a;
    ck_assert_int_eq(eco_run_blocking(boxed_gated, arg, NULL, drop_boxed), 0);
    return NULL;
}

START_TEST(result_null_goes_to_drop)
{
    gate_reset();
    gate_open(1);
    ck_assert_int_eq(eco_go(caller_no_result, box(4)), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(gate_get(&g.drops), 1);
    ck_assert_int_eq(g.drop_sum, 1004);
}
END_TEST

/* Cancelled before the call: it returns ECANCELED at once and fn still
 * runs, its result going to drop, as for a caller cancelled later, so
 * that ECANCELED always means "arg is drop's". */
static void *caller_cancelled(void *a)
{
    (void)a;
    void *res = NULL;
    ck_assert_int_eq(eco_cancel(eco_self()), 0);
    ck_assert_int_eq(eco_run_blocking(NULL, NULL, NULL, NULL), -1);
    ck_assert_int_eq(errno, EINVAL); /* nothing to run: checked first */
    ck_assert_int_eq(eco_run_blocking(boxed_gated, box(6), &res, drop_boxed), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(eco_uncancel(), 0);
    return NULL;
}

START_TEST(errors)
{
    gate_reset();
    ck_assert_int_eq(eco_run_blocking(whoami, NULL, NULL, NULL), -1);
    ck_assert_int_eq(errno, EPERM); /* not in a coroutine */
    ck_assert_int_eq(eco_set_blocking_threads(0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_set_blocking_threads(1025), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_go(caller_cancelled, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    gate_open(1);
    gate_await(&g.drops, 1);
    ck_assert_int_eq(g.drop_sum, 1006);
    ck_assert_int_eq(gate_get(&g.started), 1);
}
END_TEST

/* ---- teardown ---- */

static void *no_runtime_set(void *a)
{
    (void)a;
    ck_assert_int_eq(eco_set_blocking_threads(2), -1);
    ck_assert_int_eq(errno, EPERM);
    return NULL;
}

/* Opens the gate once a function runs, a little later, from a thread of
 * its own: eco_teardown is waiting for it by then, most likely. */
static void *opener(void *a)
{
    (void)a;
    gate_await(&g.started, 1);
    usleep(50 * 1000);
    gate_open(1);
    return NULL;
}

START_TEST(threads_stop_at_teardown)
{
    gate_reset();
    int before = threads_now();
    ck_assert_int_eq(eco_setup(NULL), 0);
    for (long i = 0; i < 4; i++)
        ck_assert_int_eq(eco_go(caller_many, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_loop(), 0);
    int during = threads_now();
    ck_assert_int_gt(during, before);
    ck_assert_int_le(during, before + 4); /* the default limit */
    eco_teardown();
    await_threads(before);

    /* A call still running when eco_teardown abandons its caller: the
     * teardown waits for it, and its result goes to drop. */
    ck_assert_int_eq(eco_setup(NULL), 0);
    struct gaveup gu = {.arg = box(6), .ret = -2};
    eco_t *co = eco_create(caller_boxed, &gu, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, opener, NULL), 0);
    eco_teardown();
    ck_assert_int_eq(gate_get(&g.drops), 1);
    ck_assert_int_eq(g.drop_sum, 1006);
    ck_assert_int_eq(gu.ret, -2); /* its coroutine never ran again */
    pthread_join(t, NULL);
    await_threads(before);

    pthread_create(&t, NULL, no_runtime_set, NULL);
    pthread_join(t, NULL);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("blocking");
    TCase *tc = rt_tcase("blocking");
    tcase_add_test(tc, result_from_another_thread);
    tcase_add_test(tc, loop_runs_meanwhile);
    tcase_add_test(tc, many_callers);
    tcase_add_test(tc, limit_honoured);
    tcase_add_test(tc, cancel_while_running);
    tcase_add_test(tc, cancel_while_queued);
    tcase_add_test(tc, deadline);
    tcase_add_test(tc, result_null_goes_to_drop);
    tcase_add_test(tc, errors);
    suite_add_tcase(s, tc);
    TCase *bare = tcase_create("teardown");
    tcase_set_timeout(bare, 120);
    tcase_add_test(bare, threads_stop_at_teardown);
    suite_add_tcase(s, bare);
    return run_suite(s);
}
