/* test_tcp_proxy.c - sample/tcp_proxy as a user runs it: clients that
 * vanish mid-request leave no coroutine behind, whatever the backend does;
 * tcp_proxy and echo_server with --threads 2 serve on both threads, every
 * byte intact, and stop cleanly on SIGTERM with clients still connected. */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_procs.h"

#if !defined(TCP_PROXY_BIN) || !defined(ECHO_SERVER_BIN)
#error "TCP_PROXY_BIN and ECHO_SERVER_BIN must name the sample binaries"
#endif

static long slow(void)
{
    const char *s = getenv("ECO_TEST_SLOW");
    return s != NULL && s[0] == '1' ? 5 : 1;
}

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* A backend that takes every connection and then neither reads, answers
 * nor closes: only the proxy can end what waits on it. */
static int held[1100], nheld, stop_backend;

static void *silent_backend(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    eco_fd_timeout(lfd, ECO_RD, 100);
    /* Until stopped and the backlog is empty: a connection the proxy made
     * counts even when this loop had not taken it yet (a loaded machine). */
    for (;;) {
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0 && stop_backend)
            break;
        if (fd >= 0 && nheld < (int)(sizeof held / sizeof held[0]))
            held[nheld++] = fd;
        else if (fd >= 0)
            eco_close(fd);
    }
    return NULL;
}

struct vanish {
    int proxy_port, n;
    pid_t pid;
    const char *errfile;
    long base;
};

/* Connects the clients, sends half a request each, waits until every one
 * has both its coroutines up in the proxy, then resets them all. */
static void *vanishing_clients(void *arg)
{
    struct vanish *v = arg;
    int *fds = calloc((size_t)v->n, sizeof *fds);
    for (int i = 0; i < v->n; i++) {
        fds[i] = eco_socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in sa = {.sin_family = AF_INET,
                                 .sin_port = htons((uint16_t)v->proxy_port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        ck_assert_int_eq(eco_connect(fds[i], (struct sockaddr *)&sa, sizeof sa), 0);
        ck_assert_int_eq(eco_write(fds[i], "GET /half", 9), 9);
    }
    long t0 = now_ms(), alive;
    while ((alive = sample_alive(v->pid, v->errfile, 10000 * slow())) < v->base + 2L * v->n) {
        ck_assert_msg(now_ms() - t0 < 30000 * slow(), "%ld coroutines for %d clients",
                      alive - v->base, v->n);
        eco_sleep(20);
    }
    struct linger lg = {.l_onoff = 1, .l_linger = 0};
    for (int i = 0; i < v->n; i++) {
        setsockopt(fds[i], SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
        eco_close(fds[i]);
    }
    t0 = now_ms();
    while ((alive = sample_alive(v->pid, v->errfile, 10000 * slow())) > v->base) {
        ck_assert_msg(now_ms() - t0 < 10000 * slow(), "%ld alive, baseline %ld", alive, v->base);
        eco_sleep(20);
    }
    free(fds);
    stop_backend = 1;
    return NULL;
}

START_TEST(vanishing_clients_leave_nothing_behind)
{
    signal(SIGPIPE, SIG_IGN);
    struct vanish v = {.n = slow() > 1 ? 200 : 1000};
    need_fds((rlim_t)v.n * 2 + 200);
    int blfd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(blfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(blfd, 4096), 0);
    ck_assert_int_eq(getsockname(blfd, (struct sockaddr *)&sa, &len), 0);
    char backend[64], errfile[] = "/tmp/test_tcp_proxy.XXXXXX";
    snprintf(backend, sizeof backend, "127.0.0.1:%d", ntohs(sa.sin_port));
    int efd = mkstemp(errfile);
    ck_assert_int_ge(efd, 0);
    close(efd);
    char *argv[] = {TCP_PROXY_BIN, "--listen", "0", "--backend", backend, NULL};
    v.pid = sample_start_ex(argv, &v.proxy_port, 0, errfile);
    v.errfile = errfile;
    v.base = sample_alive(v.pid, errfile, 10000 * slow()); /* the accept loop */
    nheld = stop_backend = 0;
    eco_go(silent_backend, (void *)(intptr_t)blfd);
    eco_go(vanishing_clients, &v);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(nheld, v.n);
    for (int i = 0; i < nheld; i++)
        eco_close(held[i]);
    eco_close(blfd);
    stop_pid(&v.pid, SIGTERM);
    unlink(errfile);
}
END_TEST

/* --threads 2: clients through tcp_proxy to echo_server, both on two
 * threads.  Each client checks every byte of three messages of its own
 * length and pattern, then holds its connection open until released. */
struct threaded {
    int port, n;
    eco_chan_t *echoed;  /* a token per client whose bytes all came back */
    eco_chan_t *release; /* closed: the clients check for EOF and close */
    int eofs;
};

static void *echo_client(void *arg)
{
    struct threaded *t = arg;
    static int next;
    int id = next++;
    size_t most = slow() > 1 ? 8192 : 65536;
    char *out = malloc(most), *in = malloc(most);
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)t->port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    eco_fd_timeout(fd, ECO_RD | ECO_WR, 30000 * slow());
    for (int round = 0; round < 3; round++) {
        size_t len = 1 + ((size_t)id * 7919 + (size_t)round * 104729) % most;
        for (size_t j = 0; j < len; j++)
            out[j] = (char)(id * 31 + round * 17 + (int)(j * 7 + j / 251));
        ck_assert_int_eq(eco_write_full(fd, out, len), (ssize_t)len);
        ck_assert_int_eq(eco_read_full(fd, in, len), (ssize_t)len);
        ck_assert_msg(memcmp(in, out, len) == 0, "client %d round %d: bytes differ", id, round);
    }
    ck_assert_int_eq(eco_chan_send(t->echoed, NULL), 0);
    ck_assert_int_eq(eco_chan_recv(t->release, NULL), 0);
    /* The proxy has stopped: it closed our connection as it went. */
    char c;
    ck_assert_int_eq(eco_read(fd, &c, 1), 0);
    t->eofs++;
    eco_close(fd);
    free(out);
    free(in);
    return NULL;
}

/* The "served C connections" of each thread, from a stopped sample's
 * stderr; fails unless every one of the n threads served some, and
 * returns their sum. */
static long served(const char *errfile, const char *who, int n)
{
    long per[8] = {0}, sum = 0;
    char line[512], fmt[64];
    snprintf(fmt, sizeof fmt, "%s: thread %%d of %%*d served %%ld connections", who);
    FILE *f = fopen(errfile, "r");
    ck_assert_ptr_nonnull(f);
    while (fgets(line, sizeof line, f) != NULL) {
        int i;
        long c;
        if (sscanf(line, fmt, &i, &c) == 2 && i >= 1 && i <= n)
            per[i - 1] = c;
    }
    fclose(f);
    for (int i = 0; i < n; i++) {
        ck_assert_msg(per[i] > 0, "%s thread %d served no connection", who, i + 1);
        sum += per[i];
    }
    return sum;
}

struct threaded_run {
    struct threaded t;
    pid_t echo_pid, proxy_pid;
    const char *echo_err, *proxy_err;
};

static void *drive_threaded(void *arg)
{
    struct threaded_run *r = arg;
    for (int i = 0; i < r->t.n; i++)
        ck_assert_int_eq(eco_go(echo_client, &r->t), 0);
    for (int i = 0; i < r->t.n; i++)
        ck_assert_int_eq(eco_chan_recv(r->t.echoed, NULL), 1);
    /* Every client is connected and idle: each thread's dump shows its
     * control and accept coroutines and its share of the connections
     * (two coroutines a client in the proxy, one in the echo server). */
    long alive[2];
    sample_dumps(r->proxy_pid, r->proxy_err, 10000 * slow(), 2, alive);
    ck_assert_msg(alive[0] > 2 && alive[1] > 2, "proxy threads: %ld and %ld alive", alive[0],
                  alive[1]);
    ck_assert_int_eq(alive[0] + alive[1], 4 + 2L * r->t.n);
    sample_dumps(r->echo_pid, r->echo_err, 10000 * slow(), 2, alive);
    ck_assert_msg(alive[0] > 2 && alive[1] > 2, "echo threads: %ld and %ld alive", alive[0],
                  alive[1]);
    ck_assert_int_eq(alive[0] + alive[1], 4 + (long)r->t.n);
    /* Stopped with every client still connected, the proxy cancels them
     * all, closes their connections and exits 0. */
    int st = sample_stop(&r->proxy_pid, SIGTERM, 10000 * slow());
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "tcp_proxy: wait status %#x", st);
    ck_assert_int_eq(eco_chan_close(r->t.release), 0);
    return NULL;
}

START_TEST(two_threads_serve_every_byte_and_stop)
{
    signal(SIGPIPE, SIG_IGN);
    struct threaded_run r = {.t.n = slow() > 1 ? 40 : 200};
    need_fds((rlim_t)r.t.n * 2 + 100);
    char echo_err[] = "/tmp/test_threads_echo.XXXXXX", proxy_err[] = "/tmp/test_threads_proxy.XXXXXX";
    int efd = mkstemp(echo_err), pfd = mkstemp(proxy_err);
    ck_assert(efd >= 0 && pfd >= 0);
    close(efd);
    close(pfd);
    r.echo_err = echo_err;
    r.proxy_err = proxy_err;
    int echo_port;
    char *eargv[] = {ECHO_SERVER_BIN, "--port", "0", "--threads", "2", NULL};
    r.echo_pid = sample_start_ex(eargv, &echo_port, 0, echo_err);
    char backend[64];
    snprintf(backend, sizeof backend, "127.0.0.1:%d", echo_port);
    char *pargv[] = {TCP_PROXY_BIN, "--listen", "0", "--backend", backend, "--threads", "2", NULL};
    r.proxy_pid = sample_start_ex(pargv, &r.t.port, 0, proxy_err);
    r.t.echoed = eco_chan_new(0, (size_t)r.t.n);
    r.t.release = eco_chan_new(0, 0);
    ck_assert_int_eq(eco_go(drive_threaded, &r), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(r.t.eofs, r.t.n);
    int st = sample_stop(&r.echo_pid, SIGTERM, 10000 * slow());
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "echo_server: wait status %#x", st);
    /* Both threads of each took connections, and none was lost. */
    ck_assert_int_eq(served(proxy_err, "tcp_proxy", 2), r.t.n);
    ck_assert_int_eq(served(echo_err, "echo_server", 2), r.t.n);
    eco_chan_free(r.t.echoed);
    eco_chan_free(r.t.release);
    unlink(echo_err);
    unlink(proxy_err);
}
END_TEST

static void up(void)
{
    ck_assert_int_eq(eco_setup(NULL), 0);
}

static void down(void)
{
    eco_teardown();
}

int main(void)
{
    Suite *s = suite_create("tcp_proxy");
    TCase *tc = tcase_create("tcp_proxy");
    tcase_add_checked_fixture(tc, up, down);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, vanishing_clients_leave_nothing_behind);
    tcase_add_test(tc, two_threads_serve_every_byte_and_stop);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
