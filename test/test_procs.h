/* test_procs.h - for suites that drive sample binaries against a real
 * redis-server: both are started on loopback ports by the test itself and
 * stopped by PID; without redis-server the suite is skipped. */
#ifndef TEST_PROCS_H
#define TEST_PROCS_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_util.h"

#ifndef ECO_EMULATOR
#define ECO_EMULATOR "" /* qemu, for a cross build's sample binaries */
#endif

/* ctest's SKIP_RETURN_CODE for every suite (test/CMakeLists.txt). */
#define TEST_SKIP 77

/* Exits with TEST_SKIP, saying why, unless program is on PATH: a suite
 * that needs an outside program is skipped, not failed, without it.
 * Called first in main, before anything is started. */
static inline void need_program(const char *program, const char *package)
{
    /* The search execlp makes: an empty entry is the current directory. */
    const char *path = getenv("PATH");
    if (path == NULL)
        path = "/bin:/usr/bin";
    for (;;) {
        size_t len = strcspn(path, ":");
        char file[4096];
        if (len + strlen(program) + 3 <= sizeof file) {
            snprintf(file, sizeof file, "%.*s/%s", (int)(len ? len : 1), len ? path : ".",
                     program);
            if (access(file, X_OK) == 0)
                return;
        }
        if (path[len] == '\0')
            break;
        path += len + 1;
    }
    printf("SKIP: %s not found on PATH (Debian: apt-get install %s)\n", program, package);
    fflush(stdout);
    exit(TEST_SKIP);
}

/* A loopback port nobody listens on now. */
static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    close(fd);
    return ntohs(sa.sin_port);
}

/* Blocking connect from the main stack, for readiness checks. */
static inline int plain_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0)
        return fd;
    close(fd);
    return -1;
}

/* Starts redis-server on port and waits (at most 10 s) until it accepts. */
static inline pid_t redis_start(int port)
{
    char p[16];
    snprintf(p, sizeof p, "%d", port);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(null, 1);
        execlp("redis-server", "redis-server", "--port", p, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", (char *)NULL);
        _exit(127);
    }
    for (int i = 0; i < 1000; i++) {
        int fd = plain_connect(port);
        if (fd >= 0) {
            close(fd);
            return pid;
        }
        int st;
        ck_assert_msg(waitpid(pid, &st, WNOHANG) == 0, "redis-server exited (installed?)");
        usleep(10000);
    }
    ck_abort_msg("redis-server did not start");
    return -1;
}

/* Waits at most ms for child pid to exit and reaps it: 1 if it did, 0 if
 * not.  Waits on a pidfd where the kernel (or qemu) has one. */
static inline int reap_within(pid_t pid, long ms)
{
    int pfd = -1;
#ifdef SYS_pidfd_open
    pfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
    if (pfd >= 0) {
        int64_t end = now_ns() + (int64_t)ms * 1000000;
        struct pollfd p = {.fd = pfd, .events = POLLIN};
        int64_t left;
        while ((left = end - now_ns()) > 0 && poll(&p, 1, (int)(left / 1000000) + 1) < 0 &&
               errno == EINTR)
            ;
        close(pfd);
        return waitpid(pid, NULL, WNOHANG) == pid;
    }
    for (long i = 0; i <= ms / 10; i++) {
        if (waitpid(pid, NULL, WNOHANG) == pid)
            return 1;
        usleep(10000);
    }
    return 0;
}

/* Sends sig to a child and reaps it: 0 if it exited within 10 s (40 under
 * the slow tools: well inside the suites' timeouts).  Otherwise a server
 * that ignores its stop would hang the suite until Check kills it without
 * a word, so it is asked for its coroutines (SIGQUIT: the samples dump
 * them to their stderr), killed, and -1 is returned. */
static inline int stop_pid_within(pid_t *pid, int sig)
{
    int ok = 1;
    if (*pid > 0) {
        long ms = slack(1000) > 1000 ? 40000 : 10000;
        kill(*pid, sig);
        if (!reap_within(*pid, ms)) {
            fprintf(stderr, "pid %d still runs %ld s after signal %d: SIGQUIT, SIGKILL\n",
                    (int)*pid, ms / 1000, sig);
            kill(*pid, SIGQUIT);
            if (!reap_within(*pid, 2000)) {
                kill(*pid, SIGKILL);
                waitpid(*pid, NULL, 0);
            }
            ok = 0;
        }
        *pid = -1;
    }
    return ok ? 0 : -1;
}

/* The same, failing the test when the child had to be killed. */
static inline void stop_pid(pid_t *pid, int sig)
{
    pid_t was = *pid;
    ck_assert_msg(stop_pid_within(pid, sig) == 0, "pid %d did not stop on signal %d", (int)was,
                  sig);
}

/* Runs a sample binary with argv (argv[0] its path) and returns once its
 * first line, "... listening on ... port N ...", has named the port.  In
 * the child, a nofile other than 0 sets the limit on open fds (soft and
 * hard) and an errfile other than NULL receives stderr. */
static inline pid_t sample_start_ex(char *const argv[], int *port, rlim_t nofile,
                                    const char *errfile)
{
    int out[2];
    ck_assert_int_eq(pipe(out), 0);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(out[1], 1);
        close(out[0]);
        if (errfile != NULL) {
            int err = open(errfile, O_WRONLY | O_CREAT | O_APPEND, 0600);
            dup2(err, 2);
        }
        /* Only stdio goes to the sample: an fd limit counts its own. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        /* The limit is set by a shell: Valgrind, which this child may
         * still be running under, keeps its own fd limit. */
        char *args[40], script[64];
        int n = 0;
        if (nofile != 0) {
            snprintf(script, sizeof script, "ulimit -n %lu && exec \"$@\"", (unsigned long)nofile);
            args[n++] = "/bin/sh";
            args[n++] = "-c";
            args[n++] = script;
            args[n++] = "sh";
        }
        if (ECO_EMULATOR[0] != '\0')
            args[n++] = ECO_EMULATOR;
        for (int i = 0; argv[i] != NULL && n < 39; i++)
            args[n++] = argv[i];
        args[n] = NULL;
        execv(args[0], args);
        _exit(127);
    }
    close(out[1]);
    /* read blocks only until the sample prints; it is another process. */
    char line[256];
    size_t n = 0;
    while (n < sizeof line - 1) {
        ssize_t r = read(out[0], line + n, 1);
        ck_assert_msg(r == 1, "%s printed no port", argv[0]);
        if (line[n++] == '\n')
            break;
    }
    line[n] = '\0';
    close(out[0]);
    const char *p = strstr(line, " port ");
    ck_assert_msg(p != NULL && sscanf(p, " port %d", port) == 1, "no port in: %s", line);
    return pid;
}

static inline pid_t sample_start(char *const argv[], int *port)
{
    return sample_start_ex(argv, port, 0, NULL);
}

/* Asks a sample for its coroutine dump (SIGQUIT: sample/dump_on_quit.h,
 * sample/server_threads.h) and stores in alive[0..n-1] the N of each of
 * the next n lines "eco: N coroutines alive" (one per thread of a sample
 * with --threads n), read back from the file its stderr goes to; fails
 * the test unless all come within bound_ms. */
static inline void sample_dumps(pid_t pid, const char *errfile, long bound_ms, int n, long *alive)
{
    char line[512];
    int before = 0;
    FILE *f = fopen(errfile, "r");
    while (f != NULL && fgets(line, sizeof line, f) != NULL)
        before += strstr(line, "coroutines alive") != NULL;
    if (f != NULL)
        fclose(f);
    ck_assert_int_eq(kill(pid, SIGQUIT), 0);
    for (long waited = 0;; waited += 10) {
        int seen = 0;
        f = fopen(errfile, "r");
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            if (strstr(line, "coroutines alive") != NULL && ++seen > before && seen <= before + n)
                ck_assert_int_eq(sscanf(line, "eco: %ld coroutines alive", &alive[seen - before - 1]), 1);
        if (f != NULL)
            fclose(f);
        if (seen >= before + n)
            return;
        ck_assert_msg(waited < bound_ms, "%d of %d dumps after SIGQUIT", seen - before, n);
        usleep(10000);
    }
}

/* The coroutines alive in a sample with one thread, from its dump. */
static inline long sample_alive(pid_t pid, const char *errfile, long bound_ms)
{
    long n;
    sample_dumps(pid, errfile, bound_ms, 1, &n);
    return n;
}

/* Sends sig to a sample and returns its wait status once it has exited;
 * fails the test if it is still running after bound_ms. */
static inline int sample_stop(pid_t *pid, int sig, long bound_ms)
{
    int st;
    ck_assert_int_eq(kill(*pid, sig), 0);
    for (long waited = 0; waitpid(*pid, &st, WNOHANG) == 0; waited += 10) {
        ck_assert_msg(waited < bound_ms, "still running %ld ms after signal %d", bound_ms, sig);
        usleep(10000);
    }
    *pid = -1;
    return st;
}

#endif
