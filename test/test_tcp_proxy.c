/* test_tcp_proxy.c - sample/tcp_proxy as a user runs it: clients that
 * vanish mid-request leave no coroutine behind, whatever the backend does. */
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

#ifndef TCP_PROXY_BIN
#error "TCP_PROXY_BIN must name the sample binary"
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
    while (!stop_backend) {
        int fd = eco_accept(lfd, NULL, NULL);
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
    suite_add_tcase(s, tc);
    return run_suite(s);
}
