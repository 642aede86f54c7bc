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

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define __SANITIZE_THREAD__ 1
#endif
#if __has_feature(address_sanitizer)
#define __SANITIZE_ADDRESS__ 1
#endif
#endif

#ifndef REDIS_PROXY_BIN
#error "REDIS_PROXY_BIN must name the sample binary"
#endif

static pid_t redis_pid = -1, proxy_pid = -1;
static int redis_port, proxy_port;

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* How much longer than native a time bound must be: the proxy runs under
 * qemu in the cross build, this test under Valgrind in that flavour, and
 * both under the sanitizers in theirs. */
static long slow(void)
{
#if defined(__SANITIZE_THREAD__)
    return 4;
#elif defined(__SANITIZE_ADDRESS__)
    return 2;
#else
    return ECO_EMULATOR[0] != '\0' || RUNNING_ON_VALGRIND ? 5 : 1;
#endif
}

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
    eco_fd_timeout(c->fd, ECO_RD | ECO_WR, 10000 * slow()); /* a hang fails the test */
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

/* A request of up to 10 arguments. */
static size_t put_argv(char *p, const char *const *argv)
{
    int argc = 0;
    while (argc < 10 && argv[argc] != NULL)
        argc++;
    size_t n = (size_t)sprintf(p, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++)
        n += (size_t)sprintf(p + n, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    return n;
}

/* Reads n bytes of the stream into dst (NULL: drops them). */
static int rc_bytes(struct rconn *c, char *dst, size_t n)
{
    while (n > 0) {
        if (c->end > c->start) {
            size_t k = c->end - c->start < n ? c->end - c->start : n;
            if (dst != NULL) {
                memcpy(dst, c->buf + c->start, k);
                dst += k;
            }
            c->start += k;
            n -= k;
            continue;
        }
        c->start = c->end = 0;
        ssize_t r = eco_read(c->fd, c->buf, sizeof c->buf);
        if (r <= 0)
            return -1;
        c->end = (size_t)r;
    }
    return 0;
}

/* Reads one whole reply of any shape.  first gets its first line ("+OK",
 * "-ERR ...", ":1", "*3"), or for a bulk string "$" and its content (cut
 * to fit), "$nil" for a null one. */
static int rc_value(struct rconn *c, char *first, size_t cap)
{
    char *line = malloc(sizeof c->buf);
    long pending = 1;
    int top = 1, rc = 0;
    while (pending-- > 0 && rc == 0) {
        if (rc_line(c, line, sizeof c->buf) != 0) {
            rc = -1;
            break;
        }
        long n = atol(line + 1);
        if (top)
            snprintf(first, cap, "%s", line);
        if (line[0] == '*' && n > 0) {
            pending += n;
        } else if (line[0] == '$' && n < 0 && top) {
            snprintf(first, cap, "$nil");
        } else if (line[0] == '$' && n >= 0) {
            size_t keep = top ? ((size_t)n < cap - 2 ? (size_t)n : cap - 2) : 0;
            rc = rc_bytes(c, top ? first + 1 : NULL, keep);
            if (top)
                first[1 + keep] = '\0';
            if (rc == 0)
                rc = rc_bytes(c, NULL, (size_t)n - keep + 2);
        }
        top = 0;
    }
    free(line);
    return rc;
}

static long proc_kb(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        if (strncmp(line, field, strlen(field)) == 0)
            kb = atol(line + strlen(field));
    if (f != NULL)
        fclose(f);
    ck_assert_msg(kb >= 0, "no %s in %s", field, path);
    return kb;
}

static int count_lines(const char *path, const char *what)
{
    char line[512];
    int n = 0;
    FILE *f = fopen(path, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        n += strstr(line, what) != NULL;
    if (f != NULL)
        fclose(f);
    return n;
}

/* A file for a sample's stderr; the caller unlinks it. */
static void temp_file(char *path, size_t cap)
{
    snprintf(path, cap, "/tmp/test_redis_proxy.XXXXXX");
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
}

/* ---- innocent clients, beside a hostile one ---- */

static int stop_innocents, innocents_done, innocent_port;

/* Pipelines SET and GET of keys of its own until stop_innocents (bounded
 * in rounds and time), and checks that every reply is exactly its own. */
static void *innocent(void *arg)
{
    int me = (int)(intptr_t)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open_port(c, innocent_port), 0);
    long t0 = now_ms();
    for (int round = 0; round < 3 || !stop_innocents; round++) {
        ck_assert_msg(round < 1000000 && now_ms() - t0 < 100000, "innocent %d: no end", me);
        char req[4096], key[8][32], val[8][48], rep[256], want[64];
        size_t n = 0;
        for (int i = 0; i < 8; i++) {
            snprintf(key[i], sizeof key[i], "inno:%d:%d", me, i);
            snprintf(val[i], sizeof val[i], "v:%d:%d:%d", me, round, i);
            n += put_cmd(req + n, "SET", key[i], val[i]);
            n += put_cmd(req + n, "GET", key[i], NULL);
        }
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        for (int i = 0; i < 8; i++) {
            ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
            ck_assert_msg(strcmp(rep, "+OK") == 0, "innocent %d: SET %s got %s", me, key[i], rep);
            ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
            snprintf(want, sizeof want, "$%.47s", val[i]);
            ck_assert_msg(strcmp(rep, want) == 0, "innocent %d: GET %s got %s, not %s", me,
                          key[i], rep, want);
        }
    }
    eco_close(c->fd);
    free(c);
    innocents_done++;
    return NULL;
}

static void innocents_start(int port, int n)
{
    stop_innocents = innocents_done = 0;
    innocent_port = port;
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(eco_go(innocent, (void *)(intptr_t)i), 0);
}

/* One request, one reply of any shape. */
static void ask(struct rconn *c, const char *const *argv, char *rep, size_t cap)
{
    char req[1024];
    size_t n = put_argv(req, argv);
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_msg(rc_value(c, rep, cap) == 0, "no reply to %s", argv[0]);
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
    ck_assert_msg(strncmp(rep, "-ERR Protocol error", 19) == 0, "got %s", rep);
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
        "*1\r\n$4\r\nPING\r\n*oops\r\n",       /* garbage after a good one */
        "\"hello world\r\n",                   /* inline, unbalanced quotes */
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

/* ---- commands that would change a shared connection ---- */

static const struct hostile {
    const char *argv[10];
    const char *want; /* the reply's start; NULL: the proxy's refusal */
} hostile_cmds[] = {
    {{"MULTI"}, NULL},
    {{"SET", "hostile", "1"}, "+OK"}, /* not +QUEUED: nothing is queued */
    {{"EXEC"}, NULL},
    {{"DISCARD"}, NULL},
    {{"WATCH", "hostile"}, NULL},
    {{"UNWATCH"}, NULL},
    {{"CLIENT", "REPLY", "SKIP"}, NULL},
    {{"client", "reply", "off"}, NULL},
    {{"SELECT", "5"}, NULL},
    {{"SELECT", "0"}, "+OK"},
    {{"BLPOP", "nolist", "0"}, NULL},
    {{"BRPOP", "nolist", "0"}, NULL},
    {{"BRPOPLPUSH", "nolist", "other", "0"}, NULL},
    {{"BLMOVE", "nolist", "other", "LEFT", "LEFT", "0"}, NULL},
    {{"BLMPOP", "0", "1", "nolist", "LEFT"}, NULL},
    {{"BZPOPMIN", "nozset", "0"}, NULL},
    {{"BZPOPMAX", "nozset", "0"}, NULL},
    {{"BZMPOP", "0", "1", "nozset", "MIN"}, NULL},
    {{"XREAD", "BLOCK", "0", "STREAMS", "nostream", "$"}, NULL},
    {{"XREAD", "COUNT", "1", "block", "0", "STREAMS", "nostream", "$"}, NULL},
    {{"XREADGROUP", "GROUP", "g", "c", "BLOCK", "0", "STREAMS", "nostream", ">"}, NULL},
    {{"XREAD", "COUNT", "1", "STREAMS", "nostream", "0"}, "*-1"},
    {{"XREADGROUP", "GROUP", "block", "c", "STREAMS", "nostream", ">"}, "-NOGROUP"},
    {{"SUBSCRIBE", "ch"}, NULL},
    {{"PSUBSCRIBE", "ch*"}, NULL},
    {{"SSUBSCRIBE", "ch"}, NULL},
    {{"UNSUBSCRIBE", "a", "b"}, NULL},
    {{"PUNSUBSCRIBE"}, NULL},
    {{"SUNSUBSCRIBE"}, NULL},
    {{"MONITOR"}, NULL},
    {{"SYNC"}, NULL},
    {{"PSYNC", "?", "-1"}, NULL},
    {{"WAIT", "1", "0"}, NULL},
    {{"WAITAOF", "1", "1", "0"}, NULL},
    {{"RESET"}, NULL},
    {{"AUTH", "secret"}, NULL},
    {{"HELLO", "3"}, NULL},
    {{"HELLO", "2", "SETNAME", "x"}, NULL},
    {{"HELLO", "2"}, "*"},
    {{"READONLY"}, NULL},
    {{"READWRITE"}, NULL},
    {{"ASKING"}, NULL},
    {{"REPLCONF", "listening-port", "1"}, NULL},
    {{"CLIENT", "TRACKING", "on"}, NULL},
    {{"CLIENT", "CACHING", "yes"}, NULL},
    {{"CLIENT", "SETNAME", "x"}, NULL},
    {{"CLIENT", "NO-EVICT", "on"}, NULL},
    {{"CLIENT", "KILL", "TYPE", "normal"}, NULL},
    {{"CLIENT", "PAUSE", "10000"}, NULL},
    {{"CLIENT", "ID"}, ":"},
    {{"GET", "hostile"}, "$1"},
};

static void *hostile_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    for (size_t i = 0; i < sizeof hostile_cmds / sizeof hostile_cmds[0]; i++) {
        const struct hostile *h = &hostile_cmds[i];
        char rep[512];
        ask(c, h->argv, rep, sizeof rep);
        const char *want = h->want ? h->want : "-ERR redis_proxy refuses ";
        ck_assert_msg(strncmp(rep, want, strlen(want)) == 0, "%s %s: got %s, not %s...",
                      h->argv[0], h->argv[1] ? h->argv[1] : "", rep, want);
        eco_sleep(1); /* let the innocent clients' requests in between */
    }
    /* QUIT is answered by the proxy, after what came before, and ends the
     * conversation: the PING after it is not answered. */
    char req[256], rep[256];
    size_t n = put_cmd(req, "PING", NULL, NULL);
    n += put_cmd(req + n, "QUIT", NULL, NULL);
    n += put_cmd(req + n, "PING", NULL, NULL);
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+PONG");
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+OK");
    ck_assert_int_eq(eco_read(c->fd, rep, sizeof rep), 0);
    eco_close(c->fd);
    free(c);
    stop_innocents = 1;
    return NULL;
}

/* What the innocent clients wrote is in database 0, and database 5 is
 * empty (SELECT 5 did not reach the backend). */
static void *check_databases(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open_port(c, redis_port), 0);
    char rep[256];
    ask(c, (const char *[]){"EXISTS", "inno:0:0", "inno:3:7", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, ":2");
    ask(c, (const char *[]){"SELECT", "5", NULL}, rep, sizeof rep);
    ask(c, (const char *[]){"DBSIZE", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, ":0");
    eco_close(c->fd);
    free(c);
    return NULL;
}

START_TEST(stateful_and_blocking_commands_are_refused)
{
    innocents_start(proxy_port, 4);
    ck_assert_int_eq(eco_go(hostile_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(innocents_done, 4);
    ck_assert_int_eq(eco_go(check_databases, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- requests redis would refuse, and some it takes ---- */

#define BYTES(s) s, sizeof s - 1
static const struct bad_req {
    const char *bytes;
    size_t len;
    const char *want; /* the reply, as redis words it where it refuses */
} bad_reqs[] = {
    {BYTES("*1\r\n$ 4\r\nPING\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*1\r\n$+4\r\nPING\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*1\r\n$04\r\nPING\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*1\r\n$4 \r\nPING\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*1\r\n$-1\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*1\r\n$536870913\r\n"), "-ERR Protocol error: invalid bulk length"},
    {BYTES("*+1\r\n$4\r\nPING\r\n"), "-ERR Protocol error: invalid multibulk length"},
    {BYTES("* 1\r\n$4\r\nPING\r\n"), "-ERR Protocol error: invalid multibulk length"},
    {BYTES("*01\r\n$4\r\nPING\r\n"), "-ERR Protocol error: invalid multibulk length"},
    {BYTES("*-0\r\n"), "-ERR Protocol error: invalid multibulk length"},
    {BYTES("*1048577\r\n"), "-ERR Protocol error: invalid multibulk length"},
    {BYTES("*1\r\nx\r\n"), "-ERR Protocol error: expected '$', got 'x'"},
    {BYTES("*1\r\n$4\r\nPINGxx"), "-ERR Protocol error: bulk not followed by CRLF"},
    {BYTES("\"a b\r\n"), "-ERR Protocol error: unbalanced quotes in request"},
    {BYTES("ECHO \"a\"b\r\n"), "-ERR Protocol error: unbalanced quotes in request"},
    {BYTES("PING\0\r\n"), "-ERR Protocol error: too big inline request"},
    {NULL, 70000, "-ERR Protocol error: too big inline request"}, /* 70,000 'a' */
    /* A 64 MB bulk begun and never finished: over --client-query-limit,
     * refused before it is read (the old proxy held it). */
    {BYTES("*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$67108864\r\nxxxx"),
     "-ERR request larger than --client-query-limit"},
};

static int bad_done;

static void *bad_client(void *arg)
{
    const struct bad_req *b = arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    char *req = malloc(b->len + 64), rep[256];
    size_t n = put_cmd(req, "PING", NULL, NULL);
    if (b->bytes != NULL)
        memcpy(req + n, b->bytes, b->len);
    else
        memset(req + n, 'a', b->len);
    n += b->len;
    ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+PONG"); /* what came before is answered */
    ck_assert_int_eq(rc_reply(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, b->want);
    ssize_t tail = eco_read(c->fd, rep, sizeof rep); /* then closed */
    ck_assert_msg(tail == 0, "read %zd (%s) after the error", tail, strerror(errno));
    eco_close(c->fd);
    free(req);
    free(c);
    bad_done++;
    return NULL;
}

/* Empty requests are skipped without a reply; inline ones are split as
 * redis splits them. */
static void *odd_but_good_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open(c), 0);
    static const char req[] = "*0\r\n*-1\r\n\r\n  \r\nPING\r\n"
                              "SET \"k x\" 'v \\'y\\''\r\nGET \"k\\x20x\"\n"
                              "ECHO \"a\\x41\\n\"\r\n";
    char rep[256];
    ck_assert_int_eq(eco_write_full(c->fd, req, sizeof req - 1), (ssize_t)sizeof req - 1);
    ck_assert_int_eq(rc_value(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+PONG");
    ck_assert_int_eq(rc_value(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "+OK");
    ck_assert_int_eq(rc_value(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "$v 'y'");
    ck_assert_int_eq(rc_value(c, rep, sizeof rep), 0);
    ck_assert_str_eq(rep, "$aA\n");
    eco_close(c->fd);
    free(c);
    bad_done++;
    return NULL;
}

static void *bad_clients(void *arg)
{
    (void)arg;
    for (size_t i = 0; i < sizeof bad_reqs / sizeof bad_reqs[0]; i++) {
        ck_assert_int_eq(eco_go(bad_client, (void *)&bad_reqs[i]), 0);
        eco_sleep(2); /* spread among the innocent clients' requests */
    }
    ck_assert_int_eq(eco_go(odd_but_good_client, NULL), 0);
    while (bad_done < (int)(sizeof bad_reqs / sizeof bad_reqs[0]) + 1)
        eco_sleep(5);
    stop_innocents = 1;
    return NULL;
}

START_TEST(malformed_requests_close_only_their_client)
{
    bad_done = 0;
    innocents_start(proxy_port, 4);
    ck_assert_int_eq(eco_go(bad_clients, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(innocents_done, 4);
}
END_TEST

/* ---- replies the old proxy could not hold ---- */

static void *big_and_deep_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    char rep[256];
    ck_assert_int_eq(rc_open_port(c, redis_port), 0); /* straight to redis */
    ask(c, (const char *[]){"SETRANGE", "big", "67108864", "x", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, ":67108865");
    eco_close(c->fd);

    ck_assert_int_eq(rc_open(c), 0);
    /* 64 MB and a byte: over the old 64 MB limit and the default
     * --client-output-limit: read and dropped, an error in its place. */
    ask(c, (const char *[]){"GET", "big", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, "-ERR reply larger than --client-output-limit");
    ask(c, (const char *[]){"PING", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, "+PONG");

    /* Nested 100 deep (the old limit was 32), compared byte for byte. */
    enum { DEPTH = 100 };
    char want[DEPTH * 12], got[DEPTH * 12], req[512];
    size_t n = 0;
    for (int i = 0; i < DEPTH; i++)
        n += (size_t)sprintf(want + n, "*2\r\n");
    n += (size_t)sprintf(want + n, "*0\r\n");
    for (int i = DEPTH; i >= 1; i--)
        n += (size_t)sprintf(want + n, ":%d\r\n", i);
    size_t rn = put_argv(req, (const char *[]){"EVAL",
                                               "local t = {} local cur = t for i = 1, 100 do "
                                               "local n = {} cur[1] = n cur[2] = i cur = n "
                                               "end return t",
                                               "0", NULL});
    ck_assert_int_eq(eco_write_full(c->fd, req, rn), (ssize_t)rn);
    ck_assert_int_eq(rc_bytes(c, got, n), 0);
    ck_assert_int_eq(memcmp(got, want, n), 0);

    /* A status line of 50,000 bytes, longer than a read. */
    char *line = malloc(60000);
    ask(c, (const char *[]){"EVAL", "return redis.status_reply(string.rep('x', 50000))", "0", NULL},
        line, 60000);
    ck_assert_int_eq(strlen(line), 50001);
    ck_assert_int_eq(line[0], '+');
    ck_assert_int_eq(line[50000], 'x');
    free(line);
    eco_close(c->fd);
    free(c);
    stop_innocents = 1;
    return NULL;
}

START_TEST(replies_too_big_or_deep_do_not_break_the_connection)
{
    innocents_start(proxy_port, 4);
    ck_assert_int_eq(eco_go(big_and_deep_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(innocents_done, 4);
}
END_TEST

/* ---- a stopped backend: the timeout ---- */

static int to_port;
static long to_ms;

static void *stopped_backend_driver(void *arg)
{
    (void)arg;
    enum { N = 3 };
    struct rconn *c[N];
    char req[256], rep[256], key[32], want[40];
    for (int i = 0; i < N; i++) {
        c[i] = malloc(sizeof *c[i]);
        ck_assert_int_eq(rc_open_port(c[i], to_port), 0);
        snprintf(key, sizeof key, "to:%d", i);
        size_t n = put_cmd(req, "SET", key, key);
        ck_assert_int_eq(eco_write_full(c[i]->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c[i], rep, sizeof rep), 0);
        ck_assert_str_eq(rep, "+OK");
    }
    ck_assert_int_eq(kill(redis_pid, SIGSTOP), 0);
    long t0 = now_ms();
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "to:%d", i);
        size_t n = put_cmd(req, "GET", key, NULL);
        ck_assert_int_eq(eco_write_full(c[i]->fd, req, n), (ssize_t)n);
    }
    for (int i = 0; i < N; i++) {
        ck_assert_int_eq(rc_reply(c[i], rep, sizeof rep), 0);
        long ms = now_ms() - t0;
        ck_assert_str_eq(rep, "-ERR backend timeout");
        ck_assert_msg(ms >= to_ms - 5 && ms <= to_ms + 2000 * slow(),
                      "timeout after %ld ms with --timeout %ld", ms, to_ms);
    }
    /* Still stopped: errors, within the bound again, never a value. */
    for (int round = 0; round < 2; round++) {
        size_t n = put_cmd(req, "GET", "to:0", NULL);
        long t1 = now_ms();
        ck_assert_int_eq(eco_write_full(c[0]->fd, req, n), (ssize_t)n);
        ck_assert_int_eq(rc_reply(c[0], rep, sizeof rep), 0);
        ck_assert_msg(strncmp(rep, "-ERR backend", 12) == 0, "got %s", rep);
        ck_assert_int_le(now_ms() - t1, to_ms + 2000 * slow());
    }
    ck_assert_int_eq(kill(redis_pid, SIGCONT), 0);
    for (int i = 0; i < N; i++) {
        snprintf(key, sizeof key, "to:%d", i);
        snprintf(want, sizeof want, "$to:%d", i);
        long t1 = now_ms();
        for (;;) {
            ck_assert_msg(now_ms() - t1 < 10000 * slow(), "service did not come back");
            size_t n = put_cmd(req, "GET", key, NULL);
            ck_assert_int_eq(eco_write_full(c[i]->fd, req, n), (ssize_t)n);
            ck_assert_int_eq(rc_reply(c[i], rep, sizeof rep), 0);
            if (strcmp(rep, want) == 0)
                break;
            ck_assert_msg(strncmp(rep, "-ERR backend", 12) == 0, "got %s", rep);
            eco_sleep(50); /* the proxy redials with a backoff */
        }
    }
    for (int i = 0; i < N; i++) {
        eco_close(c[i]->fd);
        free(c[i]);
    }
    return NULL;
}

START_TEST(stopped_backend_times_out_then_recovers)
{
    char backend[64], ms[16];
    to_ms = 300 * slow();
    snprintf(backend, sizeof backend, "127.0.0.1:%d", redis_port);
    snprintf(ms, sizeof ms, "%ld", to_ms);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, "--timeout", ms, NULL};
    pid_t pid = sample_start(argv, &to_port);
    ck_assert_int_eq(eco_go(stopped_backend_driver, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    stop_pid(&pid, SIGTERM);
}
END_TEST

/* ---- a backend that never answers a connect ---- */

static int bh_port, bh_proxy_port, bh_listener, bh_filler;
static pid_t bh_redis = -1;

static void *black_hole_client(void *arg)
{
    (void)arg;
    struct rconn *c = malloc(sizeof *c);
    char rep[256];
    ck_assert_int_eq(rc_open_port(c, bh_proxy_port), 0);
    long t0 = now_ms();
    ask(c, (const char *[]){"PING", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, "-ERR backend unavailable");
    ck_assert_int_le(now_ms() - t0, 1000 * slow()); /* at once, not after a connect */
    /* The hole becomes a redis: the proxy's next dial gets it. */
    close(bh_filler);
    close(bh_listener);
    bh_redis = redis_start(bh_port);
    for (t0 = now_ms();; eco_sleep(50)) {
        ck_assert_msg(now_ms() - t0 < 10000 * slow(), "never connected");
        ask(c, (const char *[]){"PING", NULL}, rep, sizeof rep);
        if (strcmp(rep, "+PONG") == 0)
            break;
        ck_assert_str_eq(rep, "-ERR backend unavailable");
    }
    eco_close(c->fd);
    free(c);
    return NULL;
}

START_TEST(connect_to_a_black_hole_times_out)
{
    /* A listener with a backlog of 0 and its one slot taken drops SYNs. */
    bh_listener = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* not the proxy's */
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(bind(bh_listener, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(bh_listener, 0), 0);
    ck_assert_int_eq(getsockname(bh_listener, (struct sockaddr *)&sa, &sl), 0);
    bh_port = ntohs(sa.sin_port);
    bh_filler = plain_connect(bh_port);
    ck_assert_int_ge(bh_filler, 0);

    char backend[64], ms[16];
    long t = 300 * slow();
    snprintf(backend, sizeof backend, "127.0.0.1:%d", bh_port);
    snprintf(ms, sizeof ms, "%ld", t);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, "--timeout", ms, NULL};
    long t0 = now_ms();
    pid_t pid = sample_start(argv, &bh_proxy_port); /* after one connect timed out */
    ck_assert_int_le(now_ms() - t0, t + 3000 * slow());
    ck_assert_int_eq(eco_go(black_hole_client, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    stop_pid(&pid, SIGTERM);
    stop_pid(&bh_redis, SIGKILL);
}
END_TEST

/* ---- clients that never read ---- */

enum { STALLED = 6, STALL_GETS = 32, BIG_VALUE = 256 * 1024 };
static int stall_port;
static char stall_errfile[64];

/* Each stalled client asks for 32 x 256 KB and reads nothing until the
 * proxy has given up on it; then what it gets ends early. */
static void *stalled_clients(void *arg)
{
    (void)arg;
    int fds[STALLED];
    char rep[64];
    struct rconn *c = malloc(sizeof *c);
    ck_assert_int_eq(rc_open_port(c, redis_port), 0);
    ask(c, (const char *[]){"SETRANGE", "big", "262143", "x", NULL}, rep, sizeof rep);
    ck_assert_str_eq(rep, ":262144");
    eco_close(c->fd);
    free(c);

    static char req[STALL_GETS * 32];
    size_t n = 0;
    for (int i = 0; i < STALL_GETS; i++)
        n += put_cmd(req + n, "GET", "big", NULL);
    for (int i = 0; i < STALLED; i++) {
        fds[i] = eco_socket(AF_INET, SOCK_STREAM, 0);
        int small = 4096;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)stall_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(eco_connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(eco_write_full(fds[i], req, n), (ssize_t)n);
    }
    /* The proxy disconnects each of them once 1 MB is waiting; its log
     * says when. */
    long t0 = now_ms();
    while (count_lines(stall_errfile, "over --client-output-limit") < STALLED) {
        ck_assert_msg(now_ms() - t0 < 20000 * slow(), "%d stalled clients cut off",
                      count_lines(stall_errfile, "over --client-output-limit"));
        eco_sleep(20);
    }
    for (int i = 0; i < STALLED; i++) {
        static char sink[65536];
        size_t got = 0;
        eco_fd_timeout(fds[i], ECO_RD, 10000 * slow());
        for (;;) {
            ck_assert_msg(now_ms() - t0 < 30000 * slow(), "stalled client %d never cut off", i);
            ssize_t r = eco_read(fds[i], sink, sizeof sink);
            if (r <= 0) {
                ck_assert_msg(r == 0 || errno == ECONNRESET, "stalled client %d: %s", i,
                              strerror(errno));
                break;
            }
            got += (size_t)r;
        }
        ck_assert_msg(got < (size_t)STALL_GETS * BIG_VALUE, "stalled client %d got it all", i);
        eco_close(fds[i]);
    }
    stop_innocents = 1;
    return NULL;
}

START_TEST(stalled_clients_stay_within_the_output_limit)
{
    char *errfile = stall_errfile, backend[64];
    temp_file(errfile, sizeof stall_errfile);
    snprintf(backend, sizeof backend, "127.0.0.1:%d", redis_port);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, "--conns", "2",
                    "--client-output-limit", "1mb", NULL};
    pid_t pid = sample_start_ex(argv, &stall_port, 0, errfile);
    long base = proc_kb(pid, "VmRSS:");
    innocents_start(stall_port, 2);
    ck_assert_int_eq(eco_go(stalled_clients, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(innocents_done, 2);
    long peak = proc_kb(pid, "VmHWM:");
    stop_pid(&pid, SIGTERM);
    int cut = count_lines(errfile, "over --client-output-limit");
    unlink(errfile);
    ck_assert_int_eq(cut, STALLED); /* the innocent clients were not */
    /* 8 MB asked by each: the old proxy held all of it, twice (96 MB). */
    long bound_kb = STALLED * 2 * 1024 + 16 * 1024;
#if defined(__SANITIZE_THREAD__) || defined(__SANITIZE_ADDRESS__)
    bound_kb *= 3; /* shadow memory, quarantine */
#endif
    ck_assert_msg(peak - base < bound_kb, "the proxy grew from %ld to %ld KB", base, peak);
}
END_TEST

/* ---- out of file descriptors ---- */

static int fd_port;
static char fd_errfile[64];

static void *fd_driver(void *arg)
{
    (void)arg;
    enum { MAX = 80, EXTRA = 4, FREED = 6 };
    struct rconn *ok[MAX], *wait[EXTRA + 1];
    int nok = 0, nwait = 0;
    char req[64], rep[64];
    size_t n = put_cmd(req, "PING", NULL, NULL);
    long probe = 300 * slow(), t0 = 0;
    /* Clients until one is left in the backlog: the proxy is out of fds
     * from that client's connect on. */
    while (nwait == 0) {
        ck_assert_msg(nok < MAX, "%d clients and still fds", nok);
        struct rconn *c = malloc(sizeof *c);
        t0 = now_ms();
        ck_assert_int_eq(rc_open_port(c, fd_port), 0);
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        eco_fd_timeout(c->fd, ECO_RD, probe);
        if (rc_reply(c, rep, sizeof rep) == 0) {
            ck_assert_str_eq(rep, "+PONG");
            ok[nok++] = c;
        } else {
            ck_assert_int_eq(errno, ETIMEDOUT);
            wait[nwait++] = c;
        }
    }
    ck_assert_int_ge(nok, FREED);
    for (int i = 0; i < EXTRA; i++) {
        struct rconn *c = malloc(sizeof *c);
        ck_assert_int_eq(rc_open_port(c, fd_port), 0);
        ck_assert_int_eq(eco_write_full(c->fd, req, n), (ssize_t)n);
        wait[nwait++] = c;
    }
    /* A while out of fds: at most a log line a second. */
    eco_sleep(1500);
    long secs = (now_ms() - t0 + 999) / 1000;
    int lines = count_lines(fd_errfile, "accept:");
    ck_assert_msg(lines >= 1 && lines <= secs + 1, "%d accept log lines in %ld s", lines, secs);
    /* Fds come back: the backlog is served. */
    for (int i = 0; i < FREED; i++) {
        eco_close(ok[--nok]->fd);
        free(ok[nok]);
    }
    for (int i = 0; i < nwait; i++) {
        eco_fd_timeout(wait[i]->fd, ECO_RD, 3000 * slow());
        ck_assert_msg(rc_reply(wait[i], rep, sizeof rep) == 0, "backlog client %d not served", i);
        ck_assert_str_eq(rep, "+PONG");
        eco_close(wait[i]->fd);
        free(wait[i]);
    }
    for (int i = 0; i < nok; i++) {
        eco_close(ok[i]->fd);
        free(ok[i]);
    }
    return NULL;
}

START_TEST(out_of_fds_backs_off_and_serves_the_backlog)
{
    char backend[64];
    temp_file(fd_errfile, sizeof fd_errfile);
    snprintf(backend, sizeof backend, "127.0.0.1:%d", redis_port);
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, NULL};
    pid_t pid = sample_start_ex(argv, &fd_port, 48, fd_errfile);
    ck_assert_int_eq(eco_go(fd_driver, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    stop_pid(&pid, SIGTERM);
    unlink(fd_errfile);
}
END_TEST

/* ---- clients that vanish while their replies are out: cancelled ---- */

START_TEST(vanishing_clients_are_cancelled)
{
    int n = slow() > 1 ? 200 : 1000;
    need_fds((rlim_t)n + 200);
    char errfile[64], backend[64];
    temp_file(errfile, sizeof errfile);
    snprintf(backend, sizeof backend, "127.0.0.1:%d", redis_port);
    /* A timeout far longer than the test: only the cancel can end them. */
    char *argv[] = {REDIS_PROXY_BIN, "--listen", "0", "--backend", backend, "--timeout",
                    "3600000", NULL};
    int port;
    pid_t pid = sample_start_ex(argv, &port, 0, errfile);
    long base = sample_alive(pid, errfile, 10000 * slow());
    ck_assert_int_eq(kill(redis_pid, SIGSTOP), 0);
    int *fds = calloc((size_t)n, sizeof *fds);
    char req[64];
    size_t len = put_cmd(req, "GET", "vanish", NULL);
    for (int i = 0; i < n; i++) {
        fds[i] = plain_connect(port);
        ck_assert_int_ge(fds[i], 0);
        ck_assert_int_eq(write(fds[i], req, len), (ssize_t)len);
    }
    /* Every client() is waiting for its reply... */
    long t0 = now_ms(), alive;
    while ((alive = sample_alive(pid, errfile, 10000 * slow())) < base + n)
        ck_assert_msg(now_ms() - t0 < 20000 * slow(), "%ld of %d clients in", alive - base, n);
    /* ...when they all hang up. */
    for (int i = 0; i < n; i++)
        close(fds[i]);
    t0 = now_ms();
    while ((alive = sample_alive(pid, errfile, 10000 * slow())) > base)
        ck_assert_msg(now_ms() - t0 < 10000 * slow(), "%ld still alive (baseline %ld)", alive,
                      base);
    /* The shared connection is in step: the stalled replies are dropped
     * as they come, and a new client gets its own. */
    ck_assert_int_eq(kill(redis_pid, SIGCONT), 0);
    int fd = plain_connect(port);
    struct timeval tv = {.tv_sec = 10 * slow()};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    len = put_cmd(req, "SET", "vanish", "back");
    len += put_cmd(req + len, "GET", "vanish", NULL);
    ck_assert_int_eq(write(fd, req, len), (ssize_t)len);
    char rep[64];
    size_t got = 0;
    while (got < 15) { /* "+OK\r\n$4\r\nback\r\n" */
        ssize_t r = read(fd, rep + got, sizeof rep - 1 - got);
        ck_assert_int_gt(r, 0);
        got += (size_t)r;
    }
    rep[got] = '\0';
    ck_assert_str_eq(rep, "+OK\r\n$4\r\nback\r\n");
    close(fd);
    free(fds);
    stop_pid(&pid, SIGTERM);
    unlink(errfile);
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
    tcase_add_test(tc, stateful_and_blocking_commands_are_refused);
    tcase_add_test(tc, malformed_requests_close_only_their_client);
    tcase_add_test(tc, replies_too_big_or_deep_do_not_break_the_connection);
    tcase_add_test(tc, stopped_backend_times_out_then_recovers);
    tcase_add_test(tc, connect_to_a_black_hole_times_out);
    tcase_add_test(tc, stalled_clients_stay_within_the_output_limit);
    tcase_add_test(tc, out_of_fds_backs_off_and_serves_the_backlog);
    tcase_add_test(tc, vanishing_clients_are_cancelled);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
