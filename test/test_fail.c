/* test_fail.c - libevent refusing to add an event (out of memory) strands
 * no coroutine: this program interposes event_add, makes the n-th call
 * fail for every n a mixed workload reaches, and checks that every
 * coroutine either finishes or gets ENOMEM, that eco_loop returns, and that
 * coroutines created afterwards still run. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <event2/event.h>
#include <poll.h>
#include <stdint.h>
#include <unistd.h>

#include "test_util.h"

static long calls;        /* event_add calls so far */
static long fail_at = -1; /* the call to refuse, or -1 */
static int fail_zero;     /* refuse every add with a zero timeout */

/* Overrides libevent's for libeco, which calls it through the dynamic
 * linker. */
int event_add(struct event *ev, const struct timeval *tv)
{
    static int (*real)(struct event *, const struct timeval *);
    if (real == NULL)
        real = (int (*)(struct event *, const struct timeval *))dlsym(RTLD_NEXT, "event_add");
    if (calls++ == fail_at || (fail_zero && tv != NULL && tv->tv_sec == 0 && tv->tv_usec == 0))
        return -1;
    return real(ev, tv);
}

static int returned, failed, other_errors;

static void outcome(int r)
{
    if (r < 0 && errno == ENOMEM)
        failed++;
    else if (r < 0)
        other_errors++;
}

static void *sleeper(void *arg)
{
    outcome(eco_sleep((long)(intptr_t)arg));
    returned++;
    return NULL;
}

static int pfd[2];
static eco_chan_t *ch;

static void *reader(void *arg)
{
    (void)arg;
    char b;
    ssize_t n = eco_read(pfd[0], &b, 1);
    outcome(n < 0 ? -1 : 0);
    returned++;
    return NULL;
}

static void *writer(void *arg)
{
    (void)arg;
    outcome(eco_sleep(1));
    outcome(eco_write(pfd[1], "x", 1) == 1 ? 0 : -1);
    long v = 1;
    outcome(eco_chan_send(ch, &v)); /* buffered: never waits */
    returned++;
    return NULL;
}

static void *receiver(void *arg)
{
    (void)arg;
    long v;
    int r = eco_chan_recv_timeout(ch, &v, 200);
    outcome(r < 0 && errno == ETIMEDOUT ? 0 : r < 0 ? -1 : 0);
    returned++;
    return NULL;
}

static void *poller(void *arg)
{
    (void)arg;
    struct pollfd p = {.fd = pfd[0], .events = POLLPRI};
    int r = eco_poll(&p, 1, 3);
    outcome(r < 0 ? -1 : 0);
    returned++;
    return NULL;
}

static void *yielder(void *arg)
{
    (void)arg;
    outcome(eco_yield());
    outcome(eco_sleep(0));
    returned++;
    return NULL;
}

/* The workload: sleeps (timers), an fd read, a channel receive with a
 * timeout, a poll, and more ready coroutines than one pass of the run
 * queue takes (its zero-timeout re-add).  Returns how many coroutines. */
static int workload(int yielders)
{
    int n = 0;
    ck_assert_int_eq(pipe2(pfd, O_NONBLOCK), 0);
    ch = eco_chan_new(sizeof(long), 4);
    for (int i = 1; i <= 3; i++, n++)
        ck_assert_int_eq(eco_go(sleeper, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_go(receiver, NULL), 0);
    ck_assert_int_eq(eco_go(reader, NULL), 0);
    ck_assert_int_eq(eco_go(poller, NULL), 0);
    ck_assert_int_eq(eco_go(writer, NULL), 0);
    n += 4;
    for (int i = 0; i < yielders; i++, n++)
        ck_assert_int_eq(eco_go(yielder, NULL), 0);
    return n;
}

static void workload_end(void)
{
    eco_close(pfd[0]);
    eco_close(pfd[1]);
    eco_chan_free(ch);
}

static void run_failing(long at, int yielders)
{
    returned = failed = other_errors = 0;
    ck_assert_int_eq(eco_setup(NULL), 0);
    int n = workload(yielders);
    calls = 0;
    fail_at = at;
    int r = eco_loop();
    fail_at = -1;
    ck_assert_msg(r == 0, "failing add %ld: eco_loop %d errno %d", at, r, errno);
    ck_assert_msg(returned == n, "failing add %ld: %d of %d returned", at, returned, n);
    ck_assert_int_eq(other_errors, 0);
    workload_end();
    /* Afterwards all is as before. */
    returned = 0;
    ck_assert_int_eq(eco_go(sleeper, (void *)(intptr_t)1), 0);
    ck_assert_int_eq(eco_go(yielder, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(returned, 2);
    eco_teardown();
}

START_TEST(every_failing_add_is_survived)
{
    /* How many adds the workload makes when none fails. */
    ck_assert_int_eq(eco_setup(NULL), 0);
    workload(4);
    calls = 0;
    ck_assert_int_eq(eco_loop(), 0);
    long total = calls;
    workload_end();
    eco_teardown();
    ck_assert_int_gt(total, 5);
    int hit = 0;
    for (long at = 0; at < total + 2; at++) {
        run_failing(at, 4);
        hit += failed > 0;
    }
    /* A refused add surfaces as ENOMEM in the call that needed it.  Not
     * every run makes the same adds (a timer that fires a little early is
     * added again), so the n-th add is not always one that counts. */
    ck_assert_int_ge(hit, total / 2);
}
END_TEST

/* More ready coroutines than one pass of the run queue takes: the rest
 * wait for a zero timeout, and when that add fails the queue still runs. */
START_TEST(run_queue_survives_a_failing_add)
{
    fail_zero = 1;
    run_failing(-1, 1100);
    fail_zero = 0;
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fail");
    TCase *tc = tcase_create("event_add");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, every_failing_add_is_survived);
    tcase_add_test(tc, run_queue_survives_a_failing_add);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
