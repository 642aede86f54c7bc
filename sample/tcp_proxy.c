/*
 * tcp_proxy.c - a TCP proxy: one backend connection per client, each
 * direction copied by its own coroutine.
 *
 *     tcp_proxy --listen PORT --backend HOST:PORT [--bind ADDR] [--threads N]
 *
 * When one side finishes sending (EOF), the proxy passes the half-close on
 * (shutdown SHUT_WR) and keeps copying the other way until it ends too.
 * When one side fails (a client that vanished with a reset), the other
 * direction's coroutine is cancelled (eco_cancel) wherever it waits, so a
 * client that goes away leaves nothing behind.  kill -QUIT prints every
 * coroutine and what it waits on (eco_dump) to stderr; SIGINT and SIGTERM
 * cancel them all and exit.  With --threads N, N threads each run a
 * runtime of their own (server_threads.h).
 *
 * Each client needs two fds.  The accept loop makes the backend socket
 * before it accepts, so a client it takes in is never dropped for want of
 * an fd; out of fds it backs off until a connection closes (accept_util.h)
 * and the backlog waits to be served.
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
#include "backend_arg.h"
#include "eco.h"
#include "server_threads.h"

static struct addrinfo *backend; /* read by every thread */

/* One client: its two fds and the two coroutines copying between them. */
struct link {
    int cfd, bfd;          /* the client's, and a fresh socket for the backend */
    eco_t *pump[2];        /* client -> backend (the client coroutine), back */
    int running[2];
    struct server_conn conn;
};

/* Copies one way until EOF or an error, then half-closes the receiving
 * side.  An error (a reset, a broken pipe) leaves the other direction with
 * nobody to copy to or from: it is cancelled, wherever it waits; so is it
 * when this way was cancelled (the server stops) but not by the other. */
static void pump(struct link *l, int dir)
{
    int from = dir == 0 ? l->cfd : l->bfd, to = dir == 0 ? l->bfd : l->cfd;
    char buf[4096]; /* a page: small stacks, small working set */
    ssize_t n;
    while ((n = eco_read(from, buf, sizeof buf)) > 0) {
        if (eco_write_full(to, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    }
    l->running[dir] = 0;
    if (n < 0 && l->running[!dir]) /* it did not cancel us */
        eco_cancel(l->pump[!dir]);
    shutdown(to, SHUT_WR);
}

static void *pump_back(void *arg)
{
    pump(arg, 1);
    return NULL;
}

static void *client(void *arg)
{
    struct link *l = arg;
    server_conn_begin(&l->conn);
    if (eco_connect(l->bfd, backend->ai_addr, backend->ai_addrlen) != 0) {
        fprintf(stderr, "tcp_proxy: backend: %s\n", strerror(errno));
    } else {
        int one = 1;
        setsockopt(l->bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        l->pump[0] = eco_self();
        l->pump[1] = eco_create(pump_back, l, NULL);
        if (l->pump[1] == NULL) {
            perror("eco_create");
        } else {
            l->running[0] = l->running[1] = 1;
            eco_resume(l->pump[1]); /* backend -> client, beside us */
            pump(l, 0);             /* client -> backend, here */
            eco_uncancel();         /* the other way may have cancelled us */
            while (eco_join(l->pump[1], NULL) != 0) { /* the server stops */
                eco_cancel(l->pump[1]);
                eco_uncancel();
            }
        }
    }
    eco_close(l->bfd);
    eco_close(l->cfd);
    server_conn_end(&l->conn);
    free(l);
    return NULL;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    struct accept_guard *guard = server_guard();
    accept_guard_init(guard, "tcp_proxy");
    for (;;) {
        int bfd = eco_socket(backend->ai_family, SOCK_STREAM, 0);
        if (bfd < 0) {
            if (accept_shortage(errno)) {
                accept_backoff(guard, "socket", errno);
                continue;
            }
            if (errno != ECANCELED) /* ECANCELED: the server stops */
                perror("tcp_proxy: socket");
            break;
        }
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            int err = errno;
            eco_close(bfd);
            if (accept_shortage(err)) {
                accept_backoff(guard, "accept", err);
                continue;
            }
            if (err != ECANCELED)
                fprintf(stderr, "tcp_proxy: accept: %s\n", strerror(err));
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct link *c = calloc(1, sizeof *c);
        if (c != NULL) {
            c->cfd = fd;
            c->bfd = bfd;
        }
        if (c == NULL || eco_go(client, c) != 0) {
            int err = c == NULL ? ENOMEM : errno;
            free(c);
            eco_close(fd);
            eco_close(bfd);
            accept_backoff(guard, "eco_go", err);
        }
    }
    eco_close(lfd);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tcp_proxy --listen PORT --backend HOST:PORT [--bind ADDR] [--threads N]\n"
                 "  Accepts TCP connections on PORT and relays each to its own\n"
                 "  connection to HOST:PORT, both ways, passing half-closes on.\n"
                 "  --bind ADDR  address to listen on (default 127.0.0.1)\n"
                 "  --threads N  threads, each with a runtime and a listening\n"
                 "               socket of its own on the port (default 1)\n");
}

static int bad(const char *what)
{
    fprintf(stderr, "tcp_proxy: %s\n", what);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"threads", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    static struct server srv = {.who = "tcp_proxy", .accept_loop = accept_loop, .nthreads = 1};
    const char *lport = NULL, *target = NULL, *bind_addr = "127.0.0.1";
    int c;
    while ((c = getopt_long(argc, argv, "l:B:b:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': lport = optarg; break;
        case 'B': target = optarg; break;
        case 'b': bind_addr = optarg; break;
        case 't': srv.nthreads = server_threads_arg(optarg); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end;
    long lp = lport ? strtol(lport, &end, 10) : 0;
    if (lport == NULL || *end != '\0' || lp < 0 || lp > 65535)
        return bad("--listen must be a port number from 0 (any free port) to 65535");
    if (srv.nthreads < 1)
        return bad("--threads must be from 1 to 64");
    char host[256];
    const char *bport;
    const char *why = optind != argc ? "--backend must be HOST:PORT"
                                     : backend_split(target, host, sizeof host, &bport);
    if (why != NULL)
        return bad(why);
    /* The name is looked up once, by a runtime of the main thread's own
     * that is gone before the server's threads start. */
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = eco_getaddrinfo(host, bport, &hints, &backend);
    eco_teardown();
    if (rc != 0) {
        fprintf(stderr, "tcp_proxy: backend %s: %s\n", target, gai_strerror(rc));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (server_listen(&srv, bind_addr, lport) != 0) {
        eco_freeaddrinfo(backend);
        return 1;
    }
    printf("tcp_proxy: listening on %s port %d, relaying to %s\n", bind_addr, srv.port, target);
    fflush(stdout);
    rc = server_run(&srv);
    eco_freeaddrinfo(backend);
    return rc;
}
