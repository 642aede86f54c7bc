/* test_mixed.c - sample/mixed: plain evhttp callbacks and coroutine
 * handlers in one event_base, against a real redis-server, a DNS server of
 * the test's own on 127.0.0.1 (evdns's server API, in the test's loop) and
 * a directory of files the test writes. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/dns.h>
#include <event2/dns_struct.h>
#include <netdb.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <time.h>

#include "test_procs.h"

#ifndef MIXED_BIN
#error "MIXED_BIN must name the sample binary"
#endif

#define MAX_FILE 300000 /* mixed's --max-file here */

static pid_t redis_pid = -1, mixed_pid = -1;
static int redis_port, http_port;
static char dir[32], hosts[64]; /* --files, --hosts */

/* ---- the test's DNS server: alpha.test is 127.0.0.2, silent.test never
 * answers, every other name does not exist ---- */

static struct {
    int fd, port, queries;
    struct evdns_server_port *sp;
} dns;

static void dns_answer(struct evdns_server_request *req, void *arg)
{
    (void)arg;
    dns.queries++;
    int err = 0;
    for (int i = 0; i < req->nquestions; i++) {
        const struct evdns_server_question *q = req->questions[i];
        /* evdns randomises the case of the names it asks (0x20). */
        if (strcasecmp(q->name, "silent.test") == 0) {
            evdns_server_request_drop(req);
            return;
        }
        if (strcasecmp(q->name, "alpha.test") != 0) {
            err = DNS_ERR_NOTEXIST;
        } else if (q->type == EVDNS_TYPE_A) { /* AAAA: none, an empty reply */
            uint32_t a = htonl(0x7f000002);
            evdns_server_request_add_a_reply(req, q->name, 1, &a, 60);
        }
    }
    evdns_server_request_respond(req, err);
}

static void dns_start(void)
{
    dns.queries = 0;
    dns.fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(dns.fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(dns.fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(dns.fd, (struct sockaddr *)&sa, &len), 0);
    dns.port = ntohs(sa.sin_port);
    dns.sp = evdns_add_server_port_with_base(eco_base(), dns.fd, 0, dns_answer, NULL);
    ck_assert_ptr_nonnull(dns.sp);
}

/* Starts mixed against the test's redis, name server, hosts file and
 * directory, with --timeout timeout. */
static void mixed_start(const char *timeout)
{
    char redis[64], ns[64], maxf[32];
    snprintf(redis, sizeof redis, "127.0.0.1:%d", redis_port);
    snprintf(ns, sizeof ns, "127.0.0.1:%d", dns.port);
    snprintf(maxf, sizeof maxf, "%d", MAX_FILE);
    char *argv[] = {MIXED_BIN, "--port", "0",    "--redis",   redis, "--timeout",
                    (char *)timeout, "--dns", ns, "--hosts", hosts, "--files",
                    dir, "--max-file", maxf, NULL};
    mixed_pid = sample_start(argv, &http_port);
}

/* Writes len bytes of data to dir/name. */
static void put_file(const char *name, const char *data, size_t len)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    ck_assert_uint_eq(fwrite(data, 1, len, f), len);
    ck_assert_int_eq(fclose(f), 0);
}

static void up(void)
{
    signal(SIGPIPE, SIG_IGN);
    ck_assert_int_eq(eco_setup(NULL), 0);
    dns_start();
    snprintf(dir, sizeof dir, "/tmp/eco_mixed_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(dir));
    snprintf(hosts, sizeof hosts, "%s.hosts", dir);
    FILE *f = fopen(hosts, "w");
    ck_assert_ptr_nonnull(f);
    fputs("127.0.0.1 localhost\n", f);
    ck_assert_int_eq(fclose(f), 0);
    redis_port = free_port();
    redis_pid = redis_start(redis_port);
    mixed_start("3000");
}

static void down(void)
{
    evdns_close_server_port(dns.sp);
    close(dns.fd);
    eco_teardown();
    stop_pid(&mixed_pid, SIGTERM);
    stop_pid(&redis_pid, SIGKILL);
    unlink(hosts);
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' '%s.outside'", dir, dir);
    ck_assert_int_eq(system(cmd), 0);
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
    mixed_start("500");
    ck_assert_int_eq(eco_go(stall_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- /resolve/NAME ---- */

/* GET path, expecting status and (unless NULL) exactly body. */
static void expect(const char *path, int status, const char *body)
{
    int st;
    char got[512];
    ck_assert_msg(http_get(path, &st, got, sizeof got) == 0, "GET %s failed", path);
    ck_assert_msg(st == status, "GET %s: %d, not %d (%s)", path, st, status, got);
    if (body != NULL)
        ck_assert_msg(strcmp(got, body) == 0, "GET %s: \"%s\", not \"%s\"", path, got, body);
}

static void *resolve_main(void *arg)
{
    (void)arg;
    /* The hosts file and numeric hosts: no query reaches the server. */
    expect("/resolve/localhost", 200, "127.0.0.1\n");
    expect("/resolve/127.0.0.1", 200, "127.0.0.1\n");
    expect("/resolve/::1", 200, "::1\n");
    ck_assert_int_eq(dns.queries, 0);
    /* A name the server knows, and one it does not. */
    expect("/resolve/alpha.test", 200, "127.0.0.2\n");
    ck_assert_int_gt(dns.queries, 0);
    int st;
    char body[512], want[256];
    ck_assert_int_eq(http_get("/resolve/nosuch.test", &st, body, sizeof body), 0);
    ck_assert_int_eq(st, 404);
    snprintf(want, sizeof want, "resolve nosuch.test: %s\n", gai_strerror(EAI_NONAME));
    ck_assert_str_eq(body, want);
    expect("/resolve/", 400, NULL);
    expect("/resolve/a%00b", 400, NULL);
    expect("/hello", 200, "hello\n");
    return NULL;
}

START_TEST(resolve_names)
{
    ck_assert_int_eq(eco_go(resolve_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- /file/NAME ---- */

static char *pattern(size_t n, unsigned seed)
{
    char *p = malloc(n + 1);
    ck_assert_ptr_nonnull(p);
    for (size_t i = 0; i < n; i++)
        p[i] = (char)('!' + (i * 7 + i / 1000 + seed) % 90);
    p[n] = '\0';
    return p;
}

/* GET /file/name, expecting 200 and exactly want (n bytes). */
static void expect_file(const char *name, const char *want, size_t n)
{
    char path[128];
    snprintf(path, sizeof path, "/file/%s", name);
    char *got = malloc(n + 2);
    ck_assert_ptr_nonnull(got);
    int st;
    ck_assert_int_eq(http_get(path, &st, got, n + 2), 0);
    ck_assert_msg(st == 200, "GET %s: %d (%s)", path, st, got);
    ck_assert_uint_eq(strlen(got), n);
    ck_assert(memcmp(got, want, n) == 0);
    free(got);
}

static void *files_main(void *arg)
{
    (void)arg;
    put_file("small", "some bytes\n", 11);
    expect_file("small", "some bytes\n", 11);
    put_file("empty", "", 0);
    expect_file("empty", "", 0);
    /* Several read(2)s of the sample's, and the bound: MAX_FILE bytes are
     * served, one more is refused. */
    char *big = pattern(MAX_FILE + 1, 1);
    put_file("big", big, MAX_FILE);
    expect_file("big", big, MAX_FILE);
    put_file("too_big", big, MAX_FILE + 1);
    expect("/file/too_big", 403, NULL);
    free(big);
    expect("/file/missing", 404, NULL);
    return NULL;
}

START_TEST(file_bytes)
{
    ck_assert_int_eq(eco_go(files_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

static void *refused_main(void *arg)
{
    (void)arg;
    /* A file beside the directory, and ways to name it from inside. */
    char outside[128], path[160];
    snprintf(outside, sizeof outside, "%s.outside", dir);
    ck_assert_int_eq(mkdir(outside, 0700), 0);
    snprintf(path, sizeof path, "%s/secret", outside);
    FILE *f = fopen(path, "w");
    ck_assert_ptr_nonnull(f);
    fputs("secret\n", f);
    ck_assert_int_eq(fclose(f), 0);
    const char *base = strrchr(dir, '/') + 1;
    char up_path[160], link[160];
    snprintf(link, sizeof link, "%s/link", dir);
    ck_assert_int_eq(symlink(path, link), 0);
    snprintf(path, sizeof path, "%s/sub", dir);
    ck_assert_int_eq(mkdir(path, 0700), 0);
    put_file("sub/inner", "inner\n", 6);
    put_file(".hidden", "hidden\n", 7);

    snprintf(up_path, sizeof up_path, "/file/..%%2F%s.outside%%2Fsecret", base);
    expect(up_path, 400, NULL);
    expect("/file/%2e%2e", 400, NULL);
    expect("/file/..", 400, NULL);
    expect("/file/.", 400, NULL);
    expect("/file/.hidden", 400, NULL);
    expect("/file/sub%2Finner", 400, NULL);
    expect("/file/sub/inner", 400, NULL);
    expect("/file/", 400, NULL);
    expect("/file/small%00x", 400, NULL);
    expect("/file/link", 403, NULL); /* a symbolic link out of the directory */
    expect("/file/sub", 403, NULL);  /* a directory */
    expect("/file/missing", 404, NULL);
    return NULL;
}

START_TEST(file_names_refused)
{
    ck_assert_int_eq(eco_go(refused_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* A FIFO stands for a slow disk: the sample's read of it blocks until the
 * test writes, and the test sees (by its own open returning) when the
 * sample's pool thread has it open. */
#define FIFO_BYTES 150000
#define FIFO_FIRST 30000 /* less than a pipe holds: written without a reader */

static char fifo_path[96];
static char *fifo_data;
static int fifo_done;

static void *open_writer(void *arg)
{
    (void)arg;
    return (void *)(intptr_t)open(fifo_path, O_WRONLY | O_CLOEXEC);
}

static void *write_part(void *arg)
{
    intptr_t fd = (intptr_t)arg;
    size_t from = fifo_done == -1 ? FIFO_FIRST : 0, to = fifo_done == -1 ? FIFO_BYTES : FIFO_FIRST;
    while (from < to) {
        ssize_t n = write((int)fd, fifo_data + from, to - from);
        if (n <= 0)
            return (void *)(intptr_t)-1;
        from += (size_t)n;
    }
    return NULL;
}

/* The pool thread of the test still blocked in open_writer is let go. */
static void fifo_release(void)
{
    int fd = open(fifo_path, O_RDONLY | O_NONBLOCK | O_CLOEXEC);
    if (fd >= 0)
        close(fd);
}

static void *fifo_client(void *arg)
{
    (void)arg;
    expect_file("pipe", fifo_data, FIFO_BYTES);
    fifo_done = 1;
    return NULL;
}

static void *fifo_main(void *arg)
{
    (void)arg;
    snprintf(fifo_path, sizeof fifo_path, "%s/pipe", dir);
    ck_assert_int_eq(mkfifo(fifo_path, 0600), 0);
    fifo_data = pattern(FIFO_BYTES, 2);
    fifo_done = 0;
    eco_t *client = eco_create(fifo_client, NULL, NULL);
    ck_assert_ptr_nonnull(client);
    ck_assert_int_eq(eco_resume(client), 0);
    void *r;
    ck_assert_int_eq(eco_set_deadline(eco_self(), 20000), 0);
    if (eco_run_blocking(open_writer, NULL, &r, NULL) != 0) {
        fifo_release();
        ck_abort_msg("mixed never opened the FIFO: %s", strerror(errno));
    }
    ck_assert_int_eq(eco_set_deadline(eco_self(), -1), 0);
    intptr_t fd = (intptr_t)r;
    ck_assert_int_ge(fd, 0);
    /* mixed's read waits for us; its loop serves on meanwhile. */
    expect("/count/f", 200, "f 1\n");
    expect("/hello", 200, "hello\n");
    expect("/resolve/127.0.0.1", 200, "127.0.0.1\n");
    ck_assert_int_eq(eco_run_blocking(write_part, (void *)fd, &r, NULL), 0);
    ck_assert_ptr_null(r);
    expect("/count/f", 200, "f 2\n");
    ck_assert_int_eq(fifo_done, 0); /* the file is not over yet */
    fifo_done = -1;
    ck_assert_int_eq(eco_run_blocking(write_part, (void *)fd, &r, NULL), 0);
    ck_assert_ptr_null(r);
    close((int)fd);
    ck_assert_int_eq(eco_join(client, NULL), 0);
    ck_assert_int_eq(fifo_done, 1);
    free(fifo_data);
    return NULL;
}

START_TEST(file_read_leaves_the_loop_serving)
{
    ck_assert_int_eq(eco_go(fifo_main, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* With --timeout 300, a name server that never answers and a file that
 * never ends get 504 in bounded time; the blocked read, let go later,
 * leaves mixed serving files. */
static void *timeouts_main(void *arg)
{
    (void)arg;
    int st;
    char body[512];
    long long t = now_ms();
    ck_assert_int_eq(http_get("/resolve/silent.test", &st, body, sizeof body), 0);
    ck_assert_msg(st == 504, "status %d (%s)", st, body);
    ck_assert_msg(strstr(body, strerror(ETIMEDOUT)) != NULL, "body: %s", body);
    ck_assert_msg(now_ms() - t < 3000, "504 after %lld ms", now_ms() - t);

    snprintf(fifo_path, sizeof fifo_path, "%s/never", dir);
    ck_assert_int_eq(mkfifo(fifo_path, 0600), 0);
    t = now_ms();
    ck_assert_int_eq(http_get("/file/never", &st, body, sizeof body), 0);
    ck_assert_msg(st == 504, "status %d (%s)", st, body);
    ck_assert_msg(now_ms() - t < 3000, "504 after %lld ms", now_ms() - t);
    /* The sample's pool thread still waits in open: a writer that comes
     * and goes ends its read, whose result mixed drops. */
    void *r;
    ck_assert_int_eq(eco_set_deadline(eco_self(), 20000), 0);
    if (eco_run_blocking(open_writer, NULL, &r, NULL) != 0) {
        fifo_release();
        ck_abort_msg("mixed's read of the FIFO is gone: %s", strerror(errno));
    }
    ck_assert_int_eq(eco_set_deadline(eco_self(), -1), 0);
    ck_assert_int_ge((intptr_t)r, 0);
    close((int)(intptr_t)r);
    put_file("after", "after\n", 6);
    expect_file("after", "after\n", 6);
    return NULL;
}

START_TEST(resolve_and_file_time_out)
{
    stop_pid(&mixed_pid, SIGTERM);
    mixed_start("300");
    ck_assert_int_eq(eco_go(timeouts_main, NULL), 0);
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
    tcase_add_test(tc, resolve_names);
    tcase_add_test(tc, file_bytes);
    tcase_add_test(tc, file_names_refused);
    tcase_add_test(tc, file_read_leaves_the_loop_serving);
    tcase_add_test(tc, resolve_and_file_time_out);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
