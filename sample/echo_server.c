/*
 * echo_server.c - a TCP echo server, one coroutine per connection.
 *
 *     echo_server --port N [--bind ADDR] [--threads N]
 *
 * Each connection is served by a plain loop: read what came, write it all
 * back, until the client closes.  The coroutine parks whenever the socket
 * has nothing to give or no room to take.  With --threads N, N threads
 * each run a runtime of their own (server_threads.h); kill -QUIT prints
 * every thread's coroutines, SIGINT and SIGTERM stop them all.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "accept_util.h"
#include "eco.h"
#include "server_threads.h"

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096]; /* a page: small stacks, small working set */
    ssize_t n;
    struct server_conn conn;
    server_conn_begin(&conn);
    while ((n = eco_read(fd, buf, sizeof buf)) > 0)
        if (eco_write_full(fd, buf, (size_t)n) != n)
            break;
    eco_close(fd);
    server_conn_end(&conn);
    return NULL;
}

/* Out of fds or memory, the loop waits for a close (accept_util.h): the
 * clients in the backlog are served as fds come back. */
static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    struct accept_guard *guard = server_guard();
    accept_guard_init(guard, "echo_server");
    for (;;) {
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (accept_shortage(errno)) {
                accept_backoff(guard, "accept", errno);
                continue;
            }
            if (errno != ECANCELED) /* ECANCELED: the server stops */
                perror("echo_server: accept");
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (eco_go(serve, (void *)(intptr_t)fd) != 0) {
            int err = errno;
            eco_close(fd);
            accept_backoff(guard, "eco_go", err);
        }
    }
    eco_close(lfd);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: echo_server --port N [--bind ADDR] [--threads N]\n"
                 "  Echoes every byte back on each TCP connection.\n"
                 "  --port N     port to listen on (0: any free port)\n"
                 "  --bind ADDR  address to listen on (default 127.0.0.1)\n"
                 "  --threads N  threads, each with a runtime and a listening\n"
                 "               socket of its own on the port (default 1)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static struct server srv = {.who = "echo_server", .accept_loop = accept_loop, .nthreads = 1};
    const char *port = NULL, *bind_addr = "127.0.0.1";
    int c;
    while ((c = getopt_long(argc, argv, "p:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'b': bind_addr = optarg; break;
        case 't': srv.nthreads = server_threads_arg(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end;
    long p = port ? strtol(port, &end, 10) : 0;
    if (port == NULL || *end != '\0' || p < 0 || p > 65535 || optind != argc) {
        fprintf(stderr, "echo_server: --port must be a number from 0 to 65535\n");
        usage(stderr);
        return 2;
    }
    if (srv.nthreads < 1) {
        fprintf(stderr, "echo_server: --threads must be from 1 to %d\n", SERVER_MAX_THREADS);
        usage(stderr);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (server_listen(&srv, bind_addr, port) != 0)
        return 1;
    printf("echo_server: listening on %s port %d\n", bind_addr, srv.port);
    fflush(stdout);
    return server_run(&srv);
}
