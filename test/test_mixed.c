/* test_mixed.c - sample/mixed: plain evhttp callbacks and coroutine
 * handlers in one event_base, against a real redis-server. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "test_procs.h"

#ifndef MIXED_BIN
#error "MIXED_BIN must name the sample binary"
#endif

static pid_t redis_pid = -1, mixed_pid = -1;
static int redis_port, http_port;

static void up(void)
{
    signal(SIGPIPE, SIG_IGN);
    redis_port = free_port();
    redis_pid = redis_start(redis_port);
    char redis[64];
    snprintf(redis, sizeof redis, "127.0.0.1:%d", redis_port);
    char *argv[] = {MIXED_BIN, "--port", "0", "--redis", redis, NULL};
    mixed_pid = sample_start(argv, &http_port);
    ck_assert_int_eq(eco_setup(NULL), 0);
}

static void down(void)
{
    eco_teardown();
    stop_pid(&mixed_pid, SIGTERM);
    stop_pid(&redis_pid, SIGKILL);
}

/* GET path over a fresh connection; fills status and body.  0, or -1. */
static int http_get(const char *path, int *status, char *body, size_t cap)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (eco_connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    eco_fd_timeout(fd, ECO_RD, 10000); /* a hang fails the test */
    char req[256], resp[4096];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                     path);
    ssize_t got = 0, r;
    if (eco_write_full(fd, req, (size_t)n) != n)
        return -1;
    while ((r = eco_read(fd, resp + got, sizeof resp - 1 - (size_t)got)) > 0)
        got += r;
    eco_close(fd);
    resp[got] = '\0';
    const char *b = strstr(resp, "\r\n\r\n");
    if (r < 0 || b == NULL || sscanf(resp, "HTTP/1.1 %d", status) != 1)
        return -1;
    snprintf(body, cap, "%s", b + 4);
    return 0;
}

static int done_order[2], done_n;

static void *slow_client(void *arg)
{
    (void)arg;
    int st;
    char body[128];
    ck_assert_int_eq(http_get("/slow/300", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "slept 300 ms\n");
    done_order[done_n++] = 's';
    return NULL;
}

static void *hello_client(void *arg)
{
    (void)arg;
    int st;
    char body[128];
    ck_assert_int_eq(http_get("/hello", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "hello\n");
    done_order[done_n++] = 'h';
    return NULL;
}

START_TEST(callback_answers_while_a_coroutine_sleeps)
{
    done_n = 0;
    ck_assert_int_eq(eco_go(slow_client, NULL), 0);
    ck_assert_int_eq(eco_go(hello_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(done_n, 2);
    ck_assert_int_eq(done_order[0], 'h'); /* the plain callback did not wait */
    ck_assert_int_eq(done_order[1], 's');
}
END_TEST

#define COUNTERS 50

static char seen[COUNTERS + 1];

static void *count_client(void *arg)
{
    (void)arg;
    int st;
    char body[128];
    long long v;
    ck_assert_int_eq(http_get("/count/shared", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_int_eq(sscanf(body, "shared %lld", &v), 1);
    ck_assert(v >= 1 && v <= COUNTERS);
    ck_assert_int_eq(seen[v], 0); /* each reply is its own request's */
    seen[v] = 1;
    return NULL;
}

START_TEST(coroutine_handlers_share_one_backend_connection)
{
    memset(seen, 0, sizeof seen);
    for (int i = 0; i < COUNTERS; i++)
        ck_assert_int_eq(eco_go(count_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    for (int v = 1; v <= COUNTERS; v++)
        ck_assert_int_eq(seen[v], 1);
}
END_TEST

static void *errors_client(void *arg)
{
    (void)arg;
    int st;
    char body[256];
    ck_assert_int_eq(http_get("/nowhere", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 404);
    stop_pid(&redis_pid, SIGKILL); /* the backend goes away */
    ck_assert_int_eq(http_get("/count/x", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 502);
    ck_assert_int_eq(http_get("/hello", &st, body, sizeof body), 0); /* still serving */
    ck_assert_int_eq(st, 200);
    return NULL;
}

START_TEST(not_found_and_backend_errors)
{
    ck_assert_int_eq(eco_go(errors_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

int main(void)
{
    need_program("redis-server", "redis-server");
    Suite *s = suite_create("mixed");
    TCase *tc = tcase_create("mixed");
    tcase_add_checked_fixture(tc, up, down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, callback_answers_while_a_coroutine_sleeps);
    tcase_add_test(tc, coroutine_handlers_share_one_backend_connection);
    tcase_add_test(tc, not_found_and_backend_errors);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
