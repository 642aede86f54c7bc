/* test_mixed.c - sample/mixed: plain evhttp callbacks and coroutine
 * handlers in one event_base, against a real redis-server. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* GET path over a fresh connection; fills status and body (cut to cap - 1
 * bytes).  0, or -1. */
static int http_get(const char *path, int *status, char *body, size_t cap)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)http_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (eco_connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    eco_fd_timeout(fd, ECO_RD, 10000); /* a hang fails the test */
    char req[256];
    size_t rcap = cap + 1024;
    char *resp = malloc(rcap);
    ck_assert_ptr_nonnull(resp);
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                     path);
    ssize_t got = 0, r;
    if (eco_write_full(fd, req, (size_t)n) != n)
        return -1;
    while ((r = eco_read(fd, resp + got, rcap - 1 - (size_t)got)) > 0)
        got += r;
    eco_close(fd);
    resp[got] = '\0';
    const char *b = strstr(resp, "\r\n\r\n");
    int rc = -1;
    if (r == 0 && b != NULL && sscanf(resp, "HTTP/1.1 %d", status) == 1) {
        snprintf(body, cap, "%s", b + 4);
        rc = 0;
    }
    free(resp);
    return rc;
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Sends one RESP command to redis directly (not through mixed) and checks
 * that the reply's first line is expect. */
static void redis_do(const char *cmd, size_t len, const char *expect)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)redis_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    eco_fd_timeout(fd, ECO_RD, 10000);
    ck_assert_int_eq(eco_write_full(fd, cmd, len), (ssize_t)len);
    char line[128];
    size_t got = 0;
    while (got < sizeof line - 1 && (got < 2 || memcmp(line + got - 2, "\r\n", 2) != 0)) {
        ssize_t r = eco_read(fd, line + got, 1);
        ck_assert_int_eq(r, 1);
        got++;
    }
    line[got] = '\0';
    ck_assert_str_eq(line, expect);
    eco_close(fd);
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
    ck_assert_int_eq(http_get("/get/nothing", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 404); /* a nil reply */
    stop_pid(&redis_pid, SIGKILL); /* the backend goes away */
    ck_assert_int_eq(http_get("/count/x", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 502); /* in flight when the connection broke */
    ck_assert_int_eq(http_get("/count/x", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 503); /* redis away */
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

/* Error replies (WRONGTYPE: a line of 64+ bytes) answer only their own
 * request: requests in flight beside them get their own values. */
#define MIXED_CLIENTS 40

static char ok_seen[MIXED_CLIENTS + 1];

static void *wrongtype_client(void *arg)
{
    int i = (int)(intptr_t)arg, st;
    char body[256];
    long long v;
    if (i % 2 == 0) {
        ck_assert_int_eq(http_get("/count/alist", &st, body, sizeof body), 0);
        ck_assert_int_eq(st, 502);
        ck_assert_msg(strstr(body, "WRONGTYPE") != NULL, "body: %s", body);
    } else {
        ck_assert_int_eq(http_get("/count/ok", &st, body, sizeof body), 0);
        ck_assert_int_eq(st, 200);
        ck_assert_int_eq(sscanf(body, "ok %lld", &v), 1);
        ck_assert(v >= 1 && v <= MIXED_CLIENTS / 2);
        ck_assert_int_eq(ok_seen[v], 0);
        ok_seen[v] = 1;
    }
    return NULL;
}

static void *wrongtype_main(void *arg)
{
    (void)arg;
    static const char rpush[] = "*3\r\n$5\r\nRPUSH\r\n$5\r\nalist\r\n$1\r\nx\r\n";
    redis_do(rpush, sizeof rpush - 1, ":1\r\n");
    eco_t *co[MIXED_CLIENTS];
    for (int i = 0; i < MIXED_CLIENTS; i++) {
        co[i] = eco_create(wrongtype_client, (void *)(intptr_t)i, NULL);
        ck_assert_ptr_nonnull(co[i]);
        ck_assert_int_eq(eco_resume(co[i]), 0);
    }
    for (int i = 0; i < MIXED_CLIENTS; i++)
        ck_assert_int_eq(eco_join(co[i], NULL), 0);
    int st;
    char body[128];
    ck_assert_int_eq(http_get("/count/ok", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "ok 21\n");
    return NULL;
}

START_TEST(error_reply_fails_only_its_request)
{
    memset(ok_seen, 0, sizeof ok_seen);
    ck_assert_int_eq(eco_go(wrongtype_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* A 100,000-byte value comes back whole, between small replies. */
#define BIG 100000

static char big[BIG];

static void *big_client(void *arg)
{
    int i = (int)(intptr_t)arg, st;
    char small[128];
    if (i % 2 == 0) {
        char *b = malloc(BIG + 1);
        ck_assert_ptr_nonnull(b);
        ck_assert_int_eq(http_get("/get/big", &st, b, BIG + 1), 0);
        ck_assert_int_eq(st, 200);
        ck_assert_uint_eq(strlen(b), BIG);
        ck_assert(memcmp(b, big, BIG) == 0);
        free(b);
    } else {
        ck_assert_int_eq(http_get("/count/small", &st, small, sizeof small), 0);
        ck_assert_int_eq(st, 200);
        ck_assert(strncmp(small, "small ", 6) == 0);
    }
    return NULL;
}

static void *big_main(void *arg)
{
    (void)arg;
    for (int i = 0; i < BIG; i++)
        big[i] = (char)('a' + i % 26);
    char *cmd = malloc(BIG + 64);
    ck_assert_ptr_nonnull(cmd);
    int n = snprintf(cmd, 64, "*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n$%d\r\n", BIG);
    memcpy(cmd + n, big, BIG);
    memcpy(cmd + n + BIG, "\r\n", 2);
    redis_do(cmd, (size_t)n + BIG + 2, "+OK\r\n");
    free(cmd);
    eco_t *co[20];
    for (int i = 0; i < 20; i++) {
        co[i] = eco_create(big_client, (void *)(intptr_t)i, NULL);
        ck_assert_ptr_nonnull(co[i]);
        ck_assert_int_eq(eco_resume(co[i]), 0);
    }
    for (int i = 0; i < 20; i++)
        ck_assert_int_eq(eco_join(co[i], NULL), 0);
    int st;
    char body[128];
    ck_assert_int_eq(http_get("/count/small", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "small 11\n");
    return NULL;
}

START_TEST(long_replies)
{
    ck_assert_int_eq(eco_go(big_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* redis restarts on the same port: 503 at once while it is away, and
 * /count works again within a bounded time once it is back. */
static void *restart_main(void *arg)
{
    (void)arg;
    int st;
    char body[128];
    ck_assert_int_eq(http_get("/count/r", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "r 1\n");
    stop_pid(&redis_pid, SIGTERM);
    ck_assert_int_eq(http_get("/count/r", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 502);
    for (int i = 0; i < 5; i++) {
        long long t = now_ms();
        ck_assert_int_eq(http_get("/count/r", &st, body, sizeof body), 0);
        ck_assert_int_eq(st, 503);
        ck_assert_msg(now_ms() - t < 2000, "503 took %lld ms", now_ms() - t);
        eco_sleep(100);
    }
    redis_pid = redis_start(redis_port);
    long long back = now_ms();
    for (;;) {
        ck_assert_int_eq(http_get("/count/r", &st, body, sizeof body), 0);
        if (st == 200)
            break;
        ck_assert_int_eq(st, 503);
        /* Redials back off to at most 2 s apart. */
        ck_assert_msg(now_ms() - back < 6000, "no reconnect after %lld ms", now_ms() - back);
        eco_sleep(20);
    }
    ck_assert_str_eq(body, "r 1\n"); /* a fresh redis: the reply is its own */
    ck_assert_int_eq(http_get("/count/r", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "r 2\n");
    return NULL;
}

START_TEST(reconnects_after_redis_restarts)
{
    ck_assert_int_eq(eco_go(restart_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* redis stops answering (SIGSTOP): with --timeout 500 every request gets
 * 502 or 503 within a bound instead of hanging, and /count works again
 * once redis goes on. */
static void *stalled_client(void *arg)
{
    int *done = arg, st;
    char body[128];
    long long t = now_ms();
    ck_assert_int_eq(http_get("/count/t", &st, body, sizeof body), 0);
    ck_assert_msg(st == 502 || st == 503, "status %d", st);
    ck_assert_msg(now_ms() - t < 3000, "answered after %lld ms", now_ms() - t);
    (*done)++;
    return NULL;
}

static void *stall_main(void *arg)
{
    (void)arg;
    int st, done = 0;
    char body[128];
    ck_assert_int_eq(http_get("/count/t", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    ck_assert_str_eq(body, "t 1\n");
    ck_assert_int_eq(kill(redis_pid, SIGSTOP), 0);
    eco_t *co[5];
    for (int i = 0; i < 5; i++) {
        co[i] = eco_create(stalled_client, &done, NULL);
        ck_assert_ptr_nonnull(co[i]);
        ck_assert_int_eq(eco_resume(co[i]), 0);
    }
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(eco_join(co[i], NULL), 0);
    ck_assert_int_eq(done, 5);
    ck_assert_int_eq(kill(redis_pid, SIGCONT), 0);
    long long back = now_ms();
    for (;;) {
        ck_assert_int_eq(http_get("/count/t", &st, body, sizeof body), 0);
        if (st == 200)
            break;
        ck_assert_msg(now_ms() - back < 6000, "no recovery after %lld ms", now_ms() - back);
        eco_sleep(20);
    }
    long long v;
    ck_assert_int_eq(sscanf(body, "t %lld", &v), 1);
    ck_assert_int_eq(http_get("/count/t", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 200);
    long long w;
    ck_assert_int_eq(sscanf(body, "t %lld", &w), 1);
    ck_assert_int_eq(w, v + 1); /* replies are in step again */
    return NULL;
}

START_TEST(stalled_redis_times_out)
{
    stop_pid(&mixed_pid, SIGTERM);
    char redis[64];
    snprintf(redis, sizeof redis, "127.0.0.1:%d", redis_port);
    char *argv[] = {MIXED_BIN, "--port", "0", "--redis", redis, "--timeout", "500", NULL};
    mixed_pid = sample_start(argv, &http_port);
    ck_assert_int_eq(eco_go(stall_main, NULL), 0);
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
    tcase_add_test(tc, error_reply_fails_only_its_request);
    tcase_add_test(tc, long_replies);
    tcase_add_test(tc, reconnects_after_redis_restarts);
    tcase_add_test(tc, stalled_redis_times_out);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
