/* test_loop.c - the runtime on libevent: sleep, poll, loop, callbacks, threads. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- sleep ---- */

static int wake_order[8];
static int wake_n;
static int asleep_n, asleep_at_wake[8]; /* how many had started sleeping */

static void *sleeper(void *arg)
{
    long ms = (long)(intptr_t)arg;
    long t0 = now_ms();
    asleep_n++;
    ck_assert_int_eq(eco_sleep(ms), 0);
    long slept = now_ms() - t0;
    ck_assert_int_ge(slept, ms); /* never early */
    asleep_at_wake[wake_n] = asleep_n;
    wake_order[wake_n++] = (int)ms;
    return NULL;
}

START_TEST(sleep_wakes_in_deadline_order)
{
    static const long ms[] = {300, 100, 200, 0, 50};
    wake_n = 0;
    asleep_n = 0;
    long t0 = now_ms();
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(eco_go(sleeper, (void *)(intptr_t)ms[i]), 0);
    ck_assert_int_eq(eco_loop(), 0);
    long took = now_ms() - t0;
    ck_assert_int_eq(wake_n, 5);
    ck_assert_int_eq(wake_order[0], 0);
    ck_assert_int_eq(wake_order[1], 50);
    ck_assert_int_eq(wake_order[2], 100);
    ck_assert_int_eq(wake_order[3], 200);
    ck_assert_int_eq(wake_order[4], 300);
    /* Sleeps overlap: all five were asleep before the first woke (a
     * wall-clock bound between 300 and 650 ms failed on loaded machines). */
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(asleep_at_wake[i], 5);
    ck_assert_int_ge(took, 300);
}
END_TEST

/* Many timers at once, taken out of the middle of the runtime's heap by
 * cancels and moved earlier by deadlines: every sleeper wakes once its
 * bound has passed, never before, and those a timer wakes wake in the
 * order of their bounds.  The test knows each bound to within the time
 * between two clock reads around the library's own (lo..hi), so a thread
 * preempted in between widens the interval instead of failing the test. */
#define MANY 2000

struct many {
    eco_t *co[MANY];
    int64_t lo[MANY], hi[MANY]; /* when its wait ends lies in lo..hi, ns */
    int meddled[MANY];   /* while asleep: 1 cancelled, 2 given a deadline
                            surely before its sleep ends, 3 one near it
                            (or after it: then eco_set_deadline ends the
                            wait at once, through the run queue) */
    int err[MANY], done[MANY];
    int64_t woke[MANY];
    int order[MANY], n_woke;
};
static struct many *mt;

static long many_ms(int i)
{
    return 20 + (long)((i * 7919u) % 60);
}

static void *many_sleeper(void *arg)
{
    int i = (int)(intptr_t)arg;
    mt->lo[i] = now_ns() + many_ms(i) * 1000000;
    mt->err[i] = eco_sleep(many_ms(i)) == 0 ? 0 : errno;
    mt->woke[i] = now_ns();
    mt->done[i] = 1;
    mt->order[mt->n_woke++] = i;
    return NULL;
}

static void *many_meddler(void *arg)
{
    (void)arg;
    for (int i = 0; i < MANY; i++) {
        if (mt->done[i])
            continue;
        if (i % 3 == 0) {
            mt->meddled[i] = 1;
            ck_assert_int_eq(eco_cancel(mt->co[i]), 0);
        } else if (i % 7 == 0) {
            int64_t lo = now_ns() + 1000000;
            ck_assert_int_eq(eco_set_deadline(mt->co[i], 1), 0);
            int64_t hi = now_ns() + 1000000;
            mt->meddled[i] = hi < mt->lo[i] ? 2 : 3;
            if (lo < mt->lo[i])
                mt->lo[i] = lo;
            if (hi < mt->hi[i])
                mt->hi[i] = hi;
        }
    }
    return NULL;
}

START_TEST(many_timers_wake_in_order_never_early)
{
    mt = calloc(1, sizeof *mt);
    ck_assert_ptr_nonnull(mt);
    for (int i = 0; i < MANY; i++) {
        mt->co[i] = eco_create(many_sleeper, (void *)(intptr_t)i, 0);
        ck_assert_ptr_nonnull(mt->co[i]);
        ck_assert_int_eq(eco_resume(mt->co[i]), 0); /* asleep now */
        mt->hi[i] = now_ns() + many_ms(i) * 1000000;
    }
    ck_assert_int_eq(eco_go(many_meddler, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(mt->n_woke, MANY);
    int64_t last_lo = 0;
    int timed = 0;
    for (int k = 0; k < MANY; k++) {
        int i = mt->order[k];
        if (mt->meddled[i] == 1) {
            ck_assert_int_eq(mt->err[i], ECANCELED);
            continue;
        }
        if (mt->meddled[i] == 2)
            ck_assert_int_eq(mt->err[i], ETIMEDOUT);
        else if (mt->meddled[i] == 0)
            ck_assert_int_eq(mt->err[i], 0);
        ck_assert_msg(mt->woke[i] >= mt->lo[i], "sleeper %d woke %lld ns early", i,
                      (long long)(mt->lo[i] - mt->woke[i]));
        if (mt->meddled[i] == 3) {
            ck_assert(mt->err[i] == 0 || mt->err[i] == ETIMEDOUT);
            continue;
        }
        /* Woken after one whose bound was surely later: out of order. */
        ck_assert_msg(mt->hi[i] >= last_lo, "sleeper %d woke %lld ns out of order", i,
                      (long long)(last_lo - mt->hi[i]));
        if (mt->lo[i] > last_lo)
            last_lo = mt->lo[i];
        timed++;
    }
    ck_assert_int_gt(timed, MANY / 2);
    for (int i = 0; i < MANY; i++)
        ck_assert_int_eq(eco_join(mt->co[i], NULL), 0);
    free(mt);
}
END_TEST

/* A crowd of timers comes and goes (the runtime's heap grows, then lets its
 * arrays go once empty); timers after it still work, in order. */
static int crowd_done;

static void *crowd_sleeper(void *arg)
{
    ck_assert_int_eq(eco_sleep((long)(intptr_t)arg), 0);
    crowd_done++;
    return NULL;
}

START_TEST(timers_after_a_crowd)
{
    enum { CROWD = 6000 };
    crowd_done = 0;
    for (int i = 0; i < CROWD; i++)
        ck_assert_int_eq(eco_go(crowd_sleeper, (void *)(intptr_t)(1 + i % 5)), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(crowd_done, CROWD);
    wake_n = 0;
    asleep_n = 0;
    ck_assert_int_eq(eco_go(sleeper, (void *)(intptr_t)30), 0);
    ck_assert_int_eq(eco_go(sleeper, (void *)(intptr_t)10), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(wake_n, 2);
    ck_assert_int_eq(wake_order[0], 10);
    ck_assert_int_eq(wake_order[1], 30);
}
END_TEST

START_TEST(sleep_errors)
{
    ck_assert_int_eq(eco_sleep(1), -1); /* main stack */
    ck_assert_int_eq(errno, EPERM);
}
END_TEST

static void *negative_sleep(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_sleep(-5), -1);
    ck_assert_int_eq(errno, EINVAL);
    return (void *)1;
}

START_TEST(sleep_negative_is_einval)
{
    eco_t *co = eco_create(negative_sleep, NULL, NULL);
    void *r = NULL;
    eco_resume(co);
    ck_assert_int_eq(eco_join(co, &r), 0);
    ck_assert_ptr_eq(r, (void *)1);
}
END_TEST

/* ---- poll ---- */

struct pipe_pair {
    int p[2];   /* p[0] read end, p[1] write end */
    int result;
    short revents;
    long waited;
};

static void *poll_reader(void *arg)
{
    struct pipe_pair *pp = arg;
    struct pollfd pfd = {.fd = pp->p[0], .events = POLLIN};
    long t0 = now_ms();
    pp->result = eco_poll(&pfd, 1, 5000);
    pp->waited = now_ms() - t0;
    pp->revents = pfd.revents;
    return NULL;
}

static void *pipe_writer(void *arg)
{
    struct pipe_pair *pp = arg;
    eco_sleep(30);
    ck_assert_int_eq(write(pp->p[1], "x", 1), 1);
    return NULL;
}

START_TEST(poll_wakes_on_data)
{
    struct pipe_pair pp = {.result = -2};
    ck_assert_int_eq(pipe2(pp.p, O_NONBLOCK), 0);
    eco_go(poll_reader, &pp);
    eco_go(pipe_writer, &pp);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pp.result, 1);
    ck_assert(pp.revents & POLLIN);
    ck_assert_int_ge(pp.waited, 25);
    ck_assert_int_lt(pp.waited, 4000); /* the data, not the timeout, woke it */
    close(pp.p[0]);
    close(pp.p[1]);
}
END_TEST

static void *poll_timeout(void *arg)
{
    struct pipe_pair *pp = arg;
    struct pollfd pfd[2] = {{.fd = pp->p[0], .events = POLLIN}, {.fd = -1, .events = POLLIN}};
    long t0 = now_ms();
    pp->result = eco_poll(pfd, 2, 40);
    pp->waited = now_ms() - t0;
    pp->revents = pfd[0].revents | pfd[1].revents;
    return NULL;
}

START_TEST(poll_times_out)
{
    struct pipe_pair pp = {.result = -2};
    ck_assert_int_eq(pipe2(pp.p, O_NONBLOCK), 0);
    eco_go(poll_timeout, &pp);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pp.result, 0);
    ck_assert_int_eq(pp.revents, 0);
    ck_assert_int_ge(pp.waited, 39);
    close(pp.p[0]);
    close(pp.p[1]);
}
END_TEST

static void *poll_many(void *arg)
{
    struct pipe_pair *pp = arg; /* two pipes: pp[0], pp[1] */
    struct pollfd pfd[3] = {
        {.fd = pp[0].p[0], .events = POLLIN},
        {.fd = pp[1].p[0], .events = POLLIN},
        {.fd = pp[1].p[1], .events = POLLOUT},
    };
    /* The write end of pipe 1 is writable at once. */
    pp[0].result = eco_poll(pfd, 3, -1);
    ck_assert_int_eq(pp[0].result, 1);
    ck_assert_int_eq(pfd[2].revents, POLLOUT);
    /* Now only the read ends: the second one gets data. */
    pp[0].result = eco_poll(pfd, 2, -1);
    pp[0].revents = pfd[0].revents;
    pp[1].revents = pfd[1].revents;
    /* A closed write end shows up as a hang-up on the read end. */
    close(pp[0].p[1]);
    pp[0].p[1] = -1;
    pfd[0].revents = 0;
    pp[1].result = eco_poll(pfd, 1, 1000);
    ck_assert_int_eq(pp[1].result, 1);
    ck_assert(pfd[0].revents & POLLHUP);
    return NULL;
}

static void *write_second(void *arg)
{
    struct pipe_pair *pp = arg;
    eco_sleep(10);
    ck_assert_int_eq(write(pp[1].p[1], "y", 1), 1);
    return NULL;
}

START_TEST(poll_several_fds)
{
    struct pipe_pair pp[2];
    memset(pp, 0, sizeof pp);
    ck_assert_int_eq(pipe2(pp[0].p, O_NONBLOCK), 0);
    ck_assert_int_eq(pipe2(pp[1].p, O_NONBLOCK), 0);
    eco_go(poll_many, pp);
    eco_go(write_second, pp);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pp[0].result, 1);
    ck_assert_int_eq(pp[0].revents, 0);
    ck_assert_int_eq(pp[1].revents, POLLIN);
    close(pp[0].p[0]);
    close(pp[1].p[0]);
    close(pp[1].p[1]);
}
END_TEST

static void *poll_bad_args(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_poll(NULL, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    struct pollfd pfd = {.fd = 1000, .events = POLLIN}; /* not open */
    ck_assert_int_eq(eco_poll(&pfd, 1, -1), 1);
    ck_assert_int_eq(pfd.revents, POLLNVAL);
    return NULL;
}

START_TEST(poll_errors)
{
    struct pollfd pfd = {.fd = 0, .events = POLLIN};
    ck_assert_int_eq(eco_poll(&pfd, 1, 0), -1); /* main stack */
    ck_assert_int_eq(errno, EPERM);
    eco_go(poll_bad_args, NULL);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- plain libevent callbacks and coroutines share the base ---- */

static char mix_log[64];
static int mix_n;
static struct event *tick_ev;
static int ticks;

/* Ticks at 20, 60, 100 ms; the coroutine wakes at 40, 80, 120 ms. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    mix_log[mix_n++] = 'T';
    if (++ticks == 3)
        return;
    struct timeval tv = {0, 40 * 1000};
    evtimer_add(tick_ev, &tv);
}

static void *mix_body(void *arg)
{
    (void)arg;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(eco_sleep(40), 0);
        mix_log[mix_n++] = 'c';
    }
    return NULL;
}

START_TEST(callbacks_and_coroutines_interleave)
{
    struct event_base *base = event_base_new();
    eco_teardown();
    ck_assert_int_eq(eco_setup(base), 0); /* the user's own base */
    ck_assert_ptr_eq(eco_base(), base);
    mix_n = 0;
    ticks = 0;
    tick_ev = evtimer_new(base, tick_cb, NULL);
    struct timeval tv = {0, 20 * 1000};
    evtimer_add(tick_ev, &tv);
    eco_go(mix_body, NULL);
    /* The user's own dispatch runs both, and returns when both are done. */
    ck_assert_int_eq(event_base_dispatch(base), 1);
    mix_log[mix_n] = '\0';
    ck_assert_str_eq(mix_log, "TcTcTc");
    event_free(tick_ev);
    eco_teardown();
    event_base_free(base);
    ck_assert_int_eq(eco_setup(NULL), 0); /* for the fixture's teardown */
}
END_TEST

START_TEST(loop_without_events_is_edeadlk)
{
    ck_assert_int_eq(eco_loop(), 0); /* nothing alive: returns at once */
    eco_t *co = eco_create(negative_sleep, NULL, NULL);
    ck_assert_int_eq(eco_loop(), -1); /* alive, but nothing will run it */
    ck_assert_int_eq(errno, EDEADLK);
    eco_resume(co);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

/* ---- one runtime per thread ---- */

struct thread_run {
    int id;
    long sum;
    int ok;
};

static void *count_body(void *arg)
{
    struct thread_run *tr = arg;
    for (int i = 1; i <= 100; i++) {
        tr->sum += i;
        if (i % 10 == 0)
            eco_sleep(1);
        else
            eco_yield();
    }
    return NULL;
}

static void *thread_main(void *arg)
{
    struct thread_run *tr = arg;
    if (eco_setup(NULL) != 0)
        return NULL;
    for (int i = 0; i < 20; i++)
        eco_go(count_body, tr);
    tr->ok = eco_loop() == 0;
    eco_teardown();
    return NULL;
}

START_TEST(threads_each_run_their_own)
{
    struct thread_run tr[2] = {{.id = 0}, {.id = 1}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_create(&t[i], NULL, thread_main, &tr[i]), 0);
    for (int i = 0; i < 2; i++)
        ck_assert_int_eq(pthread_join(t[i], NULL), 0);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(tr[i].ok, 1);
        ck_assert_int_eq(tr[i].sum, 20 * 5050);
    }
}
END_TEST

int main(void)
{
    Suite *s = suite_create("loop");
    TCase *tc = rt_tcase("runtime");
    tcase_add_test(tc, sleep_wakes_in_deadline_order);
    tcase_add_test(tc, many_timers_wake_in_order_never_early);
    tcase_add_test(tc, timers_after_a_crowd);
    tcase_add_test(tc, sleep_errors);
    tcase_add_test(tc, sleep_negative_is_einval);
    tcase_add_test(tc, poll_wakes_on_data);
    tcase_add_test(tc, poll_times_out);
    tcase_add_test(tc, poll_several_fds);
    tcase_add_test(tc, poll_errors);
    tcase_add_test(tc, callbacks_and_coroutines_interleave);
    tcase_add_test(tc, loop_without_events_is_edeadlk);
    tcase_add_test(tc, threads_each_run_their_own);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
