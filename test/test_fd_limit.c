/* test_fd_limit.c - the sample servers out of fds (issue 12, item 7):
 * echo_server and tcp_proxy run with RLIMIT_NOFILE 64 and get more clients
 * than they have fds for.  They must log "Too many open files" at most
 * about once a second, and serve every client of the backlog once earlier
 * ones close, none refused. */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "test_procs.h"

#if !defined(ECHO_SERVER_BIN) || !defined(TCP_PROXY_BIN)
#error "ECHO_SERVER_BIN and TCP_PROXY_BIN must name the sample binaries"
#endif

#define NOFILE 64
#define CLIENTS 150
#define WINDOW_MS 2000 /* measured while the server is out of fds */

static pid_t echo_pid = -1, proxy_pid = -1;
static int err_fd = -1;
static char err_path[64];

/* Copies the server's stderr (the file err_fd) to ours. */
static void show_server_log(void)
{
    char buf[4096];
    ssize_t n;
    for (off_t off = 0; (n = pread(err_fd, buf, sizeof buf, off)) > 0; off += n)
        if (write(STDERR_FILENO, buf, (size_t)n) < 0)
            break;
}

/* About to time out: the servers dump their coroutines, and their logs. */
static void hang_hook(void)
{
    static const char msg[] = "*** the servers' coroutines and log:\n";
    if (write(STDERR_FILENO, msg, sizeof msg - 1) < 0)
        return;
    if (proxy_pid > 0)
        kill(proxy_pid, SIGQUIT);
    if (echo_pid > 0)
        kill(echo_pid, SIGQUIT);
    usleep(500000); /* time to write: the process is about to be killed anyway */
    show_server_log();
}

static void up(void)
{
    signal(SIGPIPE, SIG_IGN);
    need_fds(CLIENTS + 64);
    snprintf(err_path, sizeof err_path, "/tmp/eco_fd_limit_XXXXXX");
    err_fd = mkstemp(err_path);
    ck_assert_int_ge(err_fd, 0);
    ck_assert_int_eq(eco_setup(NULL), 0);
    hang_report_after(110, hang_hook); /* the tcase's timeout is 120 s */
}

static void down(void)
{
    alarm(0);
    eco_teardown();
    pid_t proxy = proxy_pid, echo = echo_pid;
    int stopped = stop_pid_within(&proxy_pid, SIGTERM) == 0;
    stopped &= stop_pid_within(&echo_pid, SIGTERM) == 0;
    if (!stopped)
        show_server_log();
    if (err_fd >= 0) {
        close(err_fd);
        unlink(err_path);
        err_fd = -1;
    }
    ck_assert_msg(stopped, "a server did not stop on SIGTERM (proxy %d, echo %d)", (int)proxy,
                  (int)echo);
}

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Lines of the server's stderr that report running out of fds; fails the
 * test on any other line. */
static int emfile_lines(void)
{
    char buf[65536];
    ssize_t n = pread(err_fd, buf, sizeof buf - 1, 0);
    ck_assert_int_ge(n, 0);
    buf[n] = '\0';
    int lines = 0;
    for (char *line = buf, *nl; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
        *nl = '\0';
        ck_assert_msg(strstr(line, "Too many open files") != NULL, "server logged: %s", line);
        lines++;
    }
    return lines;
}

static int port;
static int served;
static eco_chan_t *release; /* closed: the clients that hold may close */

/* One client: connects (the kernel completes it into the backlog), sends
 * its own line, waits for it to come back, holds the connection until
 * released, closes. */
static void *client(void *arg)
{
    int i = (int)(intptr_t)arg;
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    eco_fd_timeout(fd, ECO_RD, 60000); /* a client never served fails the test */
    char msg[16], got[16];
    int n = snprintf(msg, sizeof msg, "client %05d\n", i);
    ck_assert_int_eq(eco_write_full(fd, msg, (size_t)n), n);
    ssize_t r = eco_read_full(fd, got, (size_t)n);
    ck_assert_msg(r == n, "client %d: read %zd (%s)", i, r, strerror(errno));
    ck_assert(memcmp(got, msg, (size_t)n) == 0);
    served++;
    ck_assert_int_eq(eco_chan_recv(release, NULL), 0); /* returns once closed */
    eco_close(fd);
    return NULL;
}

static void *drive(void *arg)
{
    (void)arg;
    for (int i = 0; i < CLIENTS; i++)
        ck_assert_int_eq(eco_go(client, (void *)(intptr_t)i), 0);
    /* Wait (bounded) for the server to run out of fds, having served some
     * (slow under sanitizers on a loaded machine). */
    for (int i = 0; emfile_lines() == 0 || served == 0; i++) {
        ck_assert_msg(i < 3000, "after 30 s: %d served, %s", served,
                      emfile_lines() ? "out of fds" : "never out of fds");
        eco_sleep(10);
    }
    long long t1 = now_ms();
    eco_sleep(WINDOW_MS); /* the window over which the log rate is measured */
    int lines = emfile_lines();
    /* The old loops logged 10 lines a second. */
    ck_assert_msg(lines <= (now_ms() - t1) / 1000 + 2, "%d log lines in %lld ms", lines,
                  now_ms() - t1);
    int held = served;
    ck_assert_msg(held < CLIENTS, "all %d served within a limit of %d fds", CLIENTS, NOFILE);
    /* Earlier clients close: those still in the backlog must be served
     * (eco_loop waits for every client; a refused one fails its read). */
    ck_assert_int_eq(eco_chan_close(release), 0);
    return NULL;
}

static void run(void)
{
    served = 0;
    release = eco_chan_new(0, 0);
    ck_assert_ptr_nonnull(release);
    ck_assert_int_eq(eco_go(drive, NULL), 0);
    long long t0 = now_ms();
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(served, CLIENTS);
    ck_assert_int_eq(eco_chan_free(release), 0);
    /* Rate over the whole run, backlog drain included. */
    int lines = emfile_lines();
    ck_assert_msg(lines <= (now_ms() - t0) / 1000 + 2, "%d log lines in %lld ms", lines,
                  now_ms() - t0);
}

START_TEST(echo_server_out_of_fds)
{
    char *argv[] = {ECHO_SERVER_BIN, "--port", "0", NULL};
    echo_pid = sample_start_ex(argv, &port, NOFILE, err_path);
    run();
}
END_TEST

START_TEST(tcp_proxy_out_of_fds)
{
    int echo_port;
    char *eargv[] = {ECHO_SERVER_BIN, "--port", "0", NULL};
    echo_pid = sample_start(eargv, &echo_port);
    char backend[64];
    snprintf(backend, sizeof backend, "127.0.0.1:%d", echo_port);
    char *argv[] = {TCP_PROXY_BIN, "--listen", "0", "--backend", backend, NULL};
    proxy_pid = sample_start_ex(argv, &port, NOFILE, err_path);
    run();
}
END_TEST

int main(void)
{
    Suite *s = suite_create("fd_limit");
    TCase *tc = tcase_create("fd_limit");
    tcase_add_checked_fixture(tc, up, down);
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, echo_server_out_of_fds);
    tcase_add_test(tc, tcp_proxy_out_of_fds);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
