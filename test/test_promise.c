/* test_promise.c - waiting for a callback: resolve before and after the
 * wait, from a libevent callback, another coroutine and another thread;
 * reject; the waiter giving up first (timeout, deadline, eco_cancel,
 * teardown, no coroutine) with the late value dropped exactly once; the
 * cancel hook; eco_dump's words; no false deadlock. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

/* Values are malloc'd ints; drop frees them and counts. */
static atomic_int drops;
static atomic_int drop_sum;

static void drop_int(void *v)
{
    atomic_fetch_add(&drops, 1);
    atomic_fetch_add(&drop_sum, *(int *)v);
    free(v);
}

static int *boxed(int x)
{
    int *v = malloc(sizeof *v);
    ck_assert_ptr_nonnull(v);
    *v = x;
    return v;
}

static void reset_counts(void)
{
    atomic_store(&drops, 0);
    atomic_store(&drop_sum, 0);
}

/* What a waiting coroutine saw. */
struct waiter {
    eco_promise_t *p;
    long timeout_ms;
    long deadline_ms; /* > 0: set as the coroutine's deadline first */
    int ret, err, got;
    long took_ms;
};

static void *wait_body(void *arg)
{
    struct waiter *w = arg;
    void *v = NULL;
    int64_t t0 = now_ns(); /* before the deadline: the bound starts there */
    if (w->deadline_ms > 0)
        ck_assert_int_eq(eco_set_deadline(eco_self(), w->deadline_ms), 0);
    w->ret = eco_promise_wait(w->p, w->timeout_ms, &v);
    w->err = w->ret < 0 ? errno : 0;
    w->took_ms = ms_since(t0);
    if (w->ret == 0 && v != NULL) {
        w->got = *(int *)v;
        free(v);
    }
    return NULL;
}

/* Starts a waiter coroutine and runs it until it parks. */
static eco_t *start_waiter(struct waiter *w)
{
    eco_t *co = eco_create(wait_body, w, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    return co;
}

/* ---- resolved before, during, from everywhere ---- */

START_TEST(resolved_before_wait)
{
    reset_counts();
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_resolve(w.p, boxed(7)), 0);
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_state(co), ECO_DONE); /* did not park */
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 7);
    ck_assert_int_eq(atomic_load(&drops), 0);
}
END_TEST

static void resolve_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ck_assert_int_eq(eco_promise_resolve(arg, boxed(11)), 0);
}

START_TEST(resolved_from_libevent_callback)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_state(co), ECO_PENDING);
    struct timeval tv = {0, 1000};
    ck_assert_int_eq(event_base_once(eco_base(), -1, EV_TIMEOUT, resolve_cb, w.p, &tv), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 11);
}
END_TEST

static void *resolver_co(void *arg)
{
    struct waiter *w = arg;
    /* The waiter is parked; resolving never switches away from us. */
    eco_t *self = eco_self();
    ck_assert_int_eq(eco_promise_resolve(w->p, boxed(13)), 0);
    ck_assert_ptr_eq(eco_self(), self);
    ck_assert_int_eq(w->ret, -2);
    return NULL;
}

START_TEST(resolved_by_another_coroutine)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1, .ret = -2};
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_go(resolver_co, &w), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 13);
}
END_TEST

/* A thread that resolves once told to (gate), with a value. */
struct remote {
    eco_promise_t *p;
    int value;
    int reject;    /* reject with this errno instead */
    int result;    /* what resolve returned */
    pthread_mutex_t m;
    pthread_cond_t c;
    int go;
};

static void remote_init(struct remote *r, eco_promise_t *p, int value)
{
    memset(r, 0, sizeof *r);
    r->p = p;
    r->value = value;
    pthread_mutex_init(&r->m, NULL);
    pthread_cond_init(&r->c, NULL);
}

static void remote_go(struct remote *r)
{
    pthread_mutex_lock(&r->m);
    r->go = 1;
    pthread_cond_signal(&r->c);
    pthread_mutex_unlock(&r->m);
}

static void *remote_body(void *arg)
{
    struct remote *r = arg;
    pthread_mutex_lock(&r->m);
    while (!r->go)
        pthread_cond_wait(&r->c, &r->m);
    pthread_mutex_unlock(&r->m);
    if (r->reject)
        r->result = eco_promise_reject(r->p, r->reject);
    else
        r->result = eco_promise_resolve(r->p, boxed(r->value));
    return NULL;
}

START_TEST(resolved_from_another_thread)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    struct remote r;
    remote_init(&r, w.p, 17);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_body, &r), 0);
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_state(co), ECO_PENDING);
    remote_go(&r); /* resolves while the waiter is parked */
    ck_assert_int_eq(eco_join(co, NULL), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.result, 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 17);
}
END_TEST

/* Both sides race: the thread resolves while the coroutine is on its way
 * to park, many times over; every value arrives, none is dropped. */
static void *race_body(void *arg)
{
    (void)arg;
    int n = getenv("ECO_TEST_SLOW") ? 200 : 2000;
    for (int i = 0; i < n; i++) {
        struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
        ck_assert_ptr_nonnull(w.p);
        struct remote r;
        remote_init(&r, w.p, i);
        r.go = 1;
        pthread_t t;
        ck_assert_int_eq(pthread_create(&t, NULL, remote_body, &r), 0);
        wait_body(&w);
        pthread_join(t, NULL);
        ck_assert_int_eq(w.ret, 0);
        ck_assert_int_eq(w.got, i);
    }
    return NULL;
}

START_TEST(resolve_races_the_park)
{
    reset_counts();
    eco_t *co = eco_create(race_body, NULL, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(atomic_load(&drops), 0);
}
END_TEST

START_TEST(rejected)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    struct remote r;
    remote_init(&r, w.p, 0);
    r.reject = EIO;
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_body, &r), 0);
    eco_t *co = start_waiter(&w);
    remote_go(&r);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(w.ret, -1);
    ck_assert_int_eq(w.err, EIO);
    /* Rejected before the wait: the same. */
    w = (struct waiter){.p = eco_promise_new(NULL), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_reject(w.p, EPROTO), 0);
    co = start_waiter(&w);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, -1);
    ck_assert_int_eq(w.err, EPROTO);
}
END_TEST

/* ---- the waiter gives up first ---- */

START_TEST(timeout_then_late_resolve_drops_once)
{
    reset_counts();
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = 50};
    eco_t *co = start_waiter(&w);
    eco_promise_t *p = w.p;
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, -1);
    ck_assert_int_eq(w.err, ETIMEDOUT);
    ck_assert_int_ge(w.took_ms, 50);
    ck_assert_int_lt(w.took_ms, slack(2000));
    ck_assert_int_eq(atomic_load(&drops), 0);
    /* The resolver still holds its side: the value goes to drop, once,
     * and the promise is freed (Valgrind and ASan see to that). */
    ck_assert_int_eq(eco_promise_resolve(p, boxed(5)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
    ck_assert_int_eq(atomic_load(&drop_sum), 5);
}
END_TEST

START_TEST(timeout_then_late_resolve_from_thread)
{
    reset_counts();
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = 30};
    struct remote r;
    remote_init(&r, w.p, 9);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_body, &r), 0);
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.err, ETIMEDOUT);
    remote_go(&r);
    pthread_join(t, NULL);
    ck_assert_int_eq(r.result, 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
    ck_assert_int_eq(atomic_load(&drop_sum), 9);
}
END_TEST

static atomic_int cancels;

static void on_cancel(void *arg)
{
    atomic_fetch_add(&cancels, 1);
    *(int *)arg = 1;
}

START_TEST(cancel_while_parked)
{
    reset_counts();
    atomic_store(&cancels, 0);
    int flag = 0;
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_on_cancel(w.p, on_cancel, &flag), 0);
    eco_promise_t *p = w.p;
    eco_t *co = start_waiter(&w);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(flag, 1); /* the operation was told at once */
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_lt(ms_since(t0), slack(1000));
    ck_assert_int_eq(w.ret, -1);
    ck_assert_int_eq(w.err, ECANCELED);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(3)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
    ck_assert_int_eq(atomic_load(&cancels), 1);
}
END_TEST

/* The cancel hook may settle the promise itself, as APIs that call back
 * from their cancel function do. */
static void cancel_resolves(void *arg)
{
    atomic_fetch_add(&cancels, 1);
    ck_assert_int_eq(eco_promise_reject(arg, ECANCELED), 1);
}

START_TEST(cancel_hook_settles)
{
    atomic_store(&cancels, 0);
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = 20};
    ck_assert_int_eq(eco_promise_on_cancel(w.p, cancel_resolves, w.p), 0);
    eco_t *co = start_waiter(&w);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.err, ETIMEDOUT);
    ck_assert_int_eq(atomic_load(&cancels), 1);
}
END_TEST

START_TEST(resolved_then_cancelled_keeps_value)
{
    reset_counts();
    atomic_store(&cancels, 0);
    int flag = 0;
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_on_cancel(w.p, on_cancel, &flag), 0);
    eco_t *co = start_waiter(&w);
    /* Resolved, the wake-up queued; then cancelled before it runs: the
     * value wins, the cancel shows at the next blocking call. */
    ck_assert_int_eq(eco_promise_resolve(w.p, boxed(21)), 0);
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 21);
    ck_assert_int_eq(atomic_load(&cancels), 0);
    ck_assert_int_eq(atomic_load(&drops), 0);
}
END_TEST

START_TEST(deadline)
{
    reset_counts();
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1, .deadline_ms = 60};
    eco_promise_t *p = w.p;
    eco_t *co = eco_create(wait_body, &w, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, -1);
    ck_assert_int_eq(w.err, ETIMEDOUT);
    ck_assert_int_ge(w.took_ms, 60);
    ck_assert_int_lt(w.took_ms, slack(2000));
    ck_assert_int_eq(eco_promise_resolve(p, boxed(1)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
}
END_TEST

static void *cancelled_body(void *arg)
{
    ck_assert_int_eq(eco_cancel(eco_self()), 0);
    return wait_body(arg);
}

START_TEST(cancelled_before_wait)
{
    reset_counts();
    /* Not settled: ECANCELED at once, the late value dropped. */
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    eco_promise_t *p = w.p;
    eco_t *co = eco_create(cancelled_body, &w, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.err, ECANCELED);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(2)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
    /* Settled already: the value is handed over all the same. */
    w = (struct waiter){.p = eco_promise_new(drop_int), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_resolve(w.p, boxed(4)), 0);
    co = eco_create(cancelled_body, &w, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 4);
}
END_TEST

START_TEST(wait_outside_coroutines)
{
    reset_counts();
    /* Would wait on the thread's own stack: EPERM, and the waiter's side
     * is over, so the value is dropped when it comes. */
    eco_promise_t *p = eco_promise_new(drop_int);
    ck_assert_int_eq(eco_promise_wait(p, -1, NULL), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(1)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
    /* timeout 0 works anywhere: not settled yet, then settled. */
    p = eco_promise_new(drop_int);
    ck_assert_int_eq(eco_promise_wait(p, 0, NULL), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(1)), 1);
    ck_assert_int_eq(atomic_load(&drops), 2);
    p = eco_promise_new(drop_int);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(8)), 0);
    void *v = NULL;
    ck_assert_int_eq(eco_promise_wait(p, 0, &v), 0);
    ck_assert_int_eq(*(int *)v, 8);
    free(v);
    /* value NULL: the value goes to drop. */
    p = eco_promise_new(drop_int);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(6)), 0);
    ck_assert_int_eq(eco_promise_wait(p, 0, NULL), 0);
    ck_assert_int_eq(atomic_load(&drops), 3);
}
END_TEST

static void *no_runtime(void *arg)
{
    (void)arg;
    eco_promise_t *p = eco_promise_new(drop_int);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(1)), 0);
    void *v = NULL;
    ck_assert_int_eq(eco_promise_wait(p, 0, &v), 0);
    free(v);
    p = eco_promise_new(NULL);
    ck_assert_int_eq(eco_promise_wait(p, 100, NULL), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_promise_reject(p, EIO), 1);
    return NULL;
}

START_TEST(bad_arguments)
{
    ck_assert_int_eq(eco_promise_wait(NULL, -1, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_promise_resolve(NULL, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_promise_on_cancel(NULL, on_cancel, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    eco_promise_t *p = eco_promise_new(NULL);
    ck_assert_int_eq(eco_promise_reject(p, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_promise_resolve(p, NULL), 0);
    ck_assert_int_eq(eco_promise_resolve(p, NULL), -1); /* twice */
    ck_assert_int_eq(errno, EALREADY);
    ck_assert_int_eq(eco_promise_wait(p, 0, NULL), 0);
    /* A thread without a runtime may resolve and poll. */
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, no_runtime, NULL), 0);
    pthread_join(t, NULL);
}
END_TEST

/* ---- the loop, eco_dump, teardown ---- */

/* A coroutine parked on a promise that another thread will resolve: the
 * loop must wait for it, not report a deadlock. */
START_TEST(no_false_deadlock)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    struct remote r;
    remote_init(&r, w.p, 31);
    r.go = 1;
    ck_assert_int_eq(eco_go(wait_body, &w), 0);
    /* Started after the coroutine is queued, resolving whenever. */
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_body, &r), 0);
    ck_assert_int_eq(eco_loop(), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(w.ret, 0);
    ck_assert_int_eq(w.got, 31);
}
END_TEST

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

START_TEST(dump_says_promise)
{
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    eco_promise_t *p = w.p;
    eco_t *co = start_waiter(&w);
    char buf[4096];
    dump_to(buf, sizeof buf);
    ck_assert_msg(strstr(buf, "wait=\"promise\"") != NULL, "dump: %s", buf);
    ck_assert_msg(strstr(buf, "state=waiting") != NULL, "dump: %s", buf);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(1)), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

/* eco_teardown abandons a parked waiter: its side ends there, and a
 * resolve after the runtime is gone drops the value and frees. */
START_TEST(teardown_abandons_waiter)
{
    reset_counts();
    atomic_store(&cancels, 0);
    int flag = 0;
    ck_assert_int_eq(eco_setup(NULL), 0);
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    ck_assert_int_eq(eco_promise_on_cancel(w.p, on_cancel, &flag), 0);
    eco_promise_t *p = w.p;
    start_waiter(&w);
    eco_teardown();
    ck_assert_int_eq(atomic_load(&cancels), 1);
    ck_assert_int_eq(eco_promise_resolve(p, boxed(12)), 1);
    ck_assert_int_eq(atomic_load(&drops), 1);
}
END_TEST

/* A waiter woken with the value but never run again: eco_teardown drops
 * the value it was handed, once. */
START_TEST(teardown_drops_value_not_taken)
{
    reset_counts();
    ck_assert_int_eq(eco_setup(NULL), 0);
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    start_waiter(&w);
    ck_assert_int_eq(eco_promise_resolve(w.p, boxed(5)), 0); /* queued, not run */
    eco_teardown();
    int dropped = atomic_load(&drops), sum = atomic_load(&drop_sum);
    ck_assert_int_eq(dropped, 1);
    ck_assert_int_eq(sum, 5);
}
END_TEST

static void *resolve_now(void *arg)
{
    ck_assert_int_eq(eco_promise_resolve(arg, boxed(9)), 0);
    return NULL;
}

/* The same when the value came from another thread: its wake-up request
 * is queued for a loop that never runs again. */
START_TEST(teardown_drops_value_from_thread)
{
    reset_counts();
    ck_assert_int_eq(eco_setup(NULL), 0);
    struct waiter w = {.p = eco_promise_new(drop_int), .timeout_ms = -1};
    start_waiter(&w);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, resolve_now, w.p), 0);
    pthread_join(t, NULL);
    eco_teardown();
    int dropped = atomic_load(&drops), sum = atomic_load(&drop_sum);
    ck_assert_int_eq(dropped, 1);
    ck_assert_int_eq(sum, 9);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("promise");
    TCase *tc = rt_tcase("promise");
    tcase_add_test(tc, resolved_before_wait);
    tcase_add_test(tc, resolved_from_libevent_callback);
    tcase_add_test(tc, resolved_by_another_coroutine);
    tcase_add_test(tc, resolved_from_another_thread);
    tcase_add_test(tc, resolve_races_the_park);
    tcase_add_test(tc, rejected);
    tcase_add_test(tc, timeout_then_late_resolve_drops_once);
    tcase_add_test(tc, timeout_then_late_resolve_from_thread);
    tcase_add_test(tc, cancel_while_parked);
    tcase_add_test(tc, cancel_hook_settles);
    tcase_add_test(tc, resolved_then_cancelled_keeps_value);
    tcase_add_test(tc, deadline);
    tcase_add_test(tc, cancelled_before_wait);
    tcase_add_test(tc, wait_outside_coroutines);
    tcase_add_test(tc, bad_arguments);
    tcase_add_test(tc, no_false_deadlock);
    tcase_add_test(tc, dump_says_promise);
    suite_add_tcase(s, tc);
    TCase *bare = tcase_create("teardown");
    tcase_set_timeout(bare, 60);
    tcase_add_test(bare, teardown_abandons_waiter);
    tcase_add_test(bare, teardown_drops_value_not_taken);
    tcase_add_test(bare, teardown_drops_value_from_thread);
    suite_add_tcase(s, bare);
    return run_suite(s);
}
