/* test_redis_proxy.c - sample/redis_proxy against a real redis-server that
 * each test starts on a free loopback port and stops by PID. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_procs.h"

#ifndef REDIS_PROXY_BIN
#error "REDIS_PROXY_BIN must name the sample binary"
#endif

static pid_t redis_pid = -1, proxy_pid = -1;
static int redis_port, proxy_port;

static void redis_kill(void)
{
    stop_pid(&redis_pid, SIGKILL);
}

static void up(void)
{
    signal(SIGPIPE, SIG_IGN);
    redis_port = free_port();
    redis_pid = redis_start(redis_port);
    char backend[64];
    snprintf(backend, sizeof backend, "127.0.0.1:%d", redis_port);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, "--conns", "2", NULL};
    proxy_pid = sample_start(argv, &proxy_port);
    ck_assert_int_eq(eco_setup(NULL), 0);
}

static void down(void)
{
    eco_teardown();
    stop_pid(&proxy_pid, SIGTERM);
    redis_kill();
}

/* ---- a tiny RESP client on libeco ---- */

struct rconn {
    int fd;
    char buf[65536];
    size_t start, end;
};

static int rc_open_port(struct rconn *c, int port)
{
    c->start = c->end = 0;
    c->fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (eco_connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0)
        return -1;
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    eco_fd_timeout(c->fd, ECO_RD | ECO_WR, 10000); /* a hang fails the test */
    return 0;
}

static int rc_open(struct rconn *c)
{
    return rc_open_port(c, proxy_port);
}

/* Reads one line ending in \r\n into out (without it): 0, or -1. */
static int rc_line(struct rconn *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memchr(c->buf + c->start, '\n', c->end - c->start);
        if (nl != NULL) {
            size_t len = (size_t)(nl - (c->buf + c->start));
            if (len == 0 || len > cap || nl[-1] != '\r')
                return -1;
            memcpy(out, c->buf + c->start, len - 1);
            out[len - 1] = '\0';
            c->start += len + 1;
            return 0;
        }
        if (c->start > 0) {
            memmove(c->buf, c->buf + c->start, c->end - c->start);
            c->end -= c->start;
            c->start = 0;
        }
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        ssize_t n = eco_read(c->fd, c->buf + c->end, sizeof c->buf - c->end);
        if (n <= 0) {
            /* Says why, for the assertion that fails next. */
            clock_gettime(CLOCK_MONOTONIC, &t1);
            long ms = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
            fprintf(stderr, "rc_line: read on fd %d gave %zd (%s) after %ld ms, %zu bytes pending\n",
                    c->fd, n, n < 0 ? strerror(errno) : "end of file", ms, c->end - c->start);
            return -1;
        }
        c->end += (size_t)n;
    }
}

/* One reply as text: "+OK", "-ERR ...", "$value" (bulk), "$nil". */
static int rc_reply(struct rconn *c, char *out, size_t cap)
{
    if (rc_line(c, out, cap) != 0)
        return -1;
    if (out[0] != '$')
        return 0;
    long len = atol(out + 1);
    if (len < 0) {
        snprintf(out, cap, "$nil");
        return 0;
    }
    if ((size_t)len + 2 > cap || rc_line(c, out + 1, cap - 1) != 0 ||
        strlen(out + 1) != (size_t)len)
        return -1;
    out[0] = '$';
    return 0;
}

static size_t put_cmd(char *p, const char *a, const char *b, const char *c)
{
    const char *argv[3] = {a, b, c};
    int argc = c ? 3 : b ? 2 : 1;
    size_t n = (size_t)sprintf(p, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += (size_t)sprintf(p + n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    return n;
}

/* ---- many pipelining clients ---- */

static int pc_ok;

static void *pipelining_client(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    for (int round = 0; round < 10; round++) {
        char req[8192], key[10][64], val[10][64];
        size_t n = 0;
        for (int i = 0; i < 10; i++) {
            snprintf(key[i], sizeof key[i], "k:%d:%d:%d", me, round, i);
            snprintf(val[i], sizeof val[i], "v:%d:%d:%d:%ld", me, round, i, random());
            n += put_cmd(req + n, "SET", key[i], val[i]);
            n += put_cmd(req + n, "GET", key[i], NULL);
        }
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        for (int i = 0; i < 10; i++) {
            char rep[256], want[sizeof val[i] + 1];
            ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
            ck_assert_str_eq(rep, "+OK");
            ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
            snprintf(want, sizeof want, "$%.63s", val[i]);
            ck_assert_str_eq(rep, want);
        }
    }
    eco_close(c->fd);
    free(c);
    pc_ok++;
    return NULL;
}

START_TEST(hundred_pipelining_clients)
{
    pc_ok = 0;
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(eco_go(pipelining_client, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pc_ok, 100);
}
END_TEST

/* ---- the backend goes away and comes back ---- */

static int bk_step;

static void *backend_victim(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    char req[256], rep[256];
    size_t n = put_cmd(req, "SET", "bk", "1");
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+OK");

    redis_kill(); /* from inside the run: the proxy's connections break */
    int errors = 0;
    for (int i = 0; i < 5; i++) {
        n = put_cmd(req, "GET", "bk", NULL);
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0); /* an answer, not a hang */
        ck_assert_msg(rep[0] == '-', "got %s with the backend down", rep);
        errors++;
    }
    ck_assert_int_eq(errors, 5);

    redis_pid = redis_start(redis_port); /* same port: the proxy reconnects */
    int recovered = 0;
    for (int i = 0; i < 200 && !recovered; i++) { /* bounded: about 10 s */
        n = put_cmd(req, "SET", "bk", "2");
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        if (strcmp(rep, "+OK") == 0)
            recovered = 1;
        else
            eco_sleep(50); /* the proxy's backoff is time-based */
    }
    ck_assert_msg(recovered, "service did not come back");
    n = put_cmd(req, "GET", "bk", NULL);
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "$2");
    eco_close(c->fd);
    free(c);
    bk_step = 1;
    return NULL;
}

START_TEST(backend_killed_then_restarted)
{
    bk_step = 0;
    ck_assert_int_eq(eco_go(backend_victim, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(bk_step, 1);
}
END_TEST

/* ---- malformed input and clients that vanish ---- */

static int mf_done;

static void *malformed_client(void *arg)
{
    const char *bad = arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    ck_assert_int_eq(eco_write_full(c->fd, bad, strlen(bad)), (ssize_t)strlen(bad));
    if (strstr(bad, "PARTIAL") != NULL)
        shutdown(c->fd, SHUT_WR); /* gone in the middle of a request */
    char rep[256];
    if (strncmp(bad, "*1\r\n$4\r\nPING", 12) == 0) { /* the good one is answered */
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        ck_assert_str_eq(rep, "+PONG");
    }
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "-ERR Protocol error");
    ssize_t tail = eco_read(c->fd, rep, sizeof rep); /* then closed */
    ck_assert_msg(tail == 0, "read %zd (%s) after the error", tail, strerror(errno));
    eco_close(c->fd);
    free(c);
    mf_done++;
    return NULL;
}

static void *healthy_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    for (int i = 0; i < 50; i++) {
        char req[128], rep[256];
        size_t n = put_cmd(req, "PING", NULL, NULL);
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        ck_assert_str_eq(rep, "+PONG");
        eco_sleep(0); /* interleave with the bad clients */
    }
    eco_close(c->fd);
    free(c);
    mf_done++;
    return NULL;
}

START_TEST(malformed_and_vanishing_clients)
{
    static const char *bad[] = {
        "*2\r\n$3\r\nGET\r\nxx\r\n",          /* bulk without its $ */
        "*1\r\n$4\r\nPING\r\n$oops\r\n",       /* garbage after a good one */
        "hello world\r\n",                     /* not RESP at all */
        "*2\r\n$3\r\nGET\r\n$5\r\nPARTIAL",    /* cut short, then EOF */
    };
    mf_done = 0;
    ck_assert_int_eq(eco_go(healthy_client, NULL), 0);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(eco_go(malformed_client, (void *)bad[i]), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(mf_done, 5);
}
END_TEST

/* ---- 1,000 idle clients (200 under TSan) beside 10 busy ones ---- */

/* ThreadSanitizer spends about 7 ms on each coroutine (fiber) the proxy
 * creates: with 1000 idle clients, on a loaded 2-core machine, the first
 * busy request could wait out the client's 10 s timeout before the proxy
 * had even accepted it.  200 still outnumber the busy clients 20 to 1. */
#if defined(__SANITIZE_THREAD__)
#define IDLE 200
#else
#define IDLE 1000
#endif

static int idle_fds[IDLE], idle_n, busy_done;

static void *busy_client(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    for (int i = 0; i < 200; i++) {
        char req[256], rep[256], key[64], val[64];
        snprintf(key, sizeof key, "busy:%d:%d", me, i);
        snprintf(val, sizeof val, "%d", i * me);
        size_t n = put_cmd(req, "SET", key, val);
        n += put_cmd(req + n, "GET", key, NULL);
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        ck_assert_str_eq(rep, "+OK");
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        ck_assert_str_eq(rep + 1, val);
    }
    eco_close(c->fd);
    free(c);
    busy_done++;
    return NULL;
}

static void *idle_opener(void *arg)
{
    (void)arg;
    struct rconn c;
    for (idle_n = 0; idle_n < IDLE; idle_n++) {
        ck_assert_int_eq(rc_open(&c), 0);
        idle_fds[idle_n] = c.fd;
    }
    for (int i = 0; i < 10; i++)
        ck_assert_int_eq(eco_go(busy_client, (void *)(intptr_t)(i + 1)), 0);
    return NULL;
}

START_TEST(idle_clients_do_not_hold_up_busy_ones)
{
    need_fds(1100);
    busy_done = 0;
    ck_assert_int_eq(eco_go(idle_opener, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(busy_done, 10);
    ck_assert_int_eq(idle_n, IDLE);
    for (int i = 0; i < idle_n; i++)
        eco_close(idle_fds[i]);
}
END_TEST

/* ---- keys spread over two backends ---- */

static int two_port, red2_port;

/* DBSIZE of the redis on port, over a plain connection. */
static long dbsize(int port)
{
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open_port(c, port), 0);
    char req[64], rep[64];
    size_t n = put_cmd(req, "DBSIZE", NULL, NULL);
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_int_eq(rep[0], ':');
    eco_close(c->fd);
    free(c);
    return atol(rep + 1);
}

static void *spread_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open_port(c, two_port), 0);
    char req[64 * 200], rep[128], key[32], want[40];
    size_t n = 0;
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof key, "spread:%d", i);
        n += put_cmd(req + n, "SET", key, key);
        n += put_cmd(req + n, "GET", key, NULL);
    }
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    for (int i = 0; i < 100; i++) { /* in order, from whichever backend */
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        ck_assert_str_eq(rep, "+OK");
        ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
        snprintf(want, sizeof want, "$spread:%d", i);
        ck_assert_str_eq(rep, want);
    }
    eco_close(c->fd);
    free(c);
    long a = dbsize(redis_port), b = dbsize(red2_port);
    ck_assert_int_eq(a + b, 100);
    ck_assert_int_gt(a, 20); /* a hash spreads 100 keys, not all to one side */
    ck_assert_int_gt(b, 20);
    return NULL;
}

START_TEST(keys_spread_over_two_backends)
{
    red2_port = free_port();
    pid_t red2 = redis_start(red2_port);
    char b1[64], b2[64];
    snprintf(b1, sizeof b1, "127.0.0.1:%d", redis_port);
    snprintf(b2, sizeof b2, "127.0.0.1:%d", red2_port);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", b1, "--backend", b2,
                    "--conns", "2", NULL};
    pid_t two = sample_start(argv, &two_port);
    ck_assert_int_eq(eco_go(spread_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    stop_pid(&two, SIGTERM);
    stop_pid(&red2, SIGKILL);
}
END_TEST

int main(void)
{
    need_program("redis-server", "redis-server");
    Suite *s = suite_create("redis_proxy");
    TCase *tc = tcase_create("redis_proxy");
    tcase_add_checked_fixture(tc, up, down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, hundred_pipelining_clients);
    tcase_add_test(tc, backend_killed_then_restarted);
    tcase_add_test(tc, malformed_and_vanishing_clients);
    tcase_add_test(tc, idle_clients_do_not_hold_up_busy_ones);
    tcase_add_test(tc, keys_spread_over_two_backends);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
