/* test_util.h - shared by the Check suites. */
#ifndef TEST_UTIL_H
#define TEST_UTIL_H

#include <check.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "eco.h"

/* Fixtures: a fresh runtime (own base) around every test. */
static inline void rt_up(void)
{
    ck_assert_int_eq(eco_setup(NULL), 0);
}

static inline void rt_down(void)
{
    eco_teardown();
}

/* Runs a suite; the exit status is what ctest reads. */
static inline int run_suite(Suite *s)
{
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}

/* A test case with the runtime fixture and a timeout that survives qemu
 * and sanitizers. */
static inline TCase *rt_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, rt_up, rt_down);
    tcase_set_timeout(tc, 60);
    return tc;
}

/* CLOCK_MONOTONIC now, in ns; and ms since t0 of it. */
static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline long ms_since(int64_t t0)
{
    return (long)((now_ns() - t0) / 1000000);
}

/* A time bound of ms, ten times looser under the slow tools (Valgrind,
 * TSan, qemu: ECO_TEST_SLOW). */
static inline long slack(long ms)
{
    const char *s = getenv("ECO_TEST_SLOW");
    return s != NULL && s[0] == '1' ? ms * 10 : ms;
}

/* Raises the soft limit on open fds to n if the hard one allows; fails
 * the test if the process cannot have n fds. */
static inline void need_fds(rlim_t n)
{
    struct rlimit rl;
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur < n && rl.rlim_max >= n) {
        rl.rlim_cur = n;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    ck_assert_msg(rl.rlim_cur >= n, "need %lu fds, have %lu", (unsigned long)n,
                  (unsigned long)rl.rlim_cur);
}

/* Check kills a test that overruns its timeout without a word about where
 * it stood.  hang_report_after(secs, hook) arms an alarm for secs seconds
 * (scaled by CK_TIMEOUT_MULTIPLIER, as Check scales its timeouts) that
 * writes what every coroutine of the thread waits on (eco_dump) to stderr,
 * then calls hook (may be NULL), e.g. to ask a server for its own dump.
 * Best effort from a signal handler: eco_dump is not async-signal-safe,
 * but the loop it interrupts is stuck, and the process is about to die. */
static void (*hang_hook_)(void) __attribute__((unused)); /* per suite */

static inline void hang_report_(int sig)
{
    static const char msg[] = "\n*** the test is about to time out; its coroutines:\n";
    (void)sig;
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        return;
    eco_dump(STDERR_FILENO);
    if (hang_hook_ != NULL)
        hang_hook_();
}

static inline void hang_report_after(unsigned secs, void (*hook)(void))
{
    const char *m = getenv("CK_TIMEOUT_MULTIPLIER");
    unsigned mult = m != NULL && atoi(m) > 0 ? (unsigned)atoi(m) : 1;
    hang_hook_ = hook;
    signal(SIGALRM, hang_report_);
    alarm(secs * mult);
}

#endif
