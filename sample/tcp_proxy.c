/*
 * tcp_proxy.c - a TCP proxy: one backend connection per client, each
 * direction copied by its own coroutine.
 *
 *     tcp_proxy --listen PORT --backend HOST:PORT [--bind ADDR]
 *
 * When one side finishes sending (EOF), the proxy passes the half-close on
 * (shutdown SHUT_WR) and keeps copying the other way until it ends too.
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
#include "eco.h"

static struct accept_guard guard;

static struct addrinfo *backend;

struct pipe_ends {
    int from, to;
};

/* Copies from -> to until EOF or an error, then half-closes to. */
static void *pump(void *arg)
{
    /* The ends live in the client coroutine's frame, on its stack: read
     * them once, not through p after every wake-up. */
    const struct pipe_ends *p = arg;
    int from = p->from, to = p->to;
    char buf[4096]; /* a page: small stacks, small working set */
    ssize_t n;
    while ((n = eco_read(from, buf, sizeof buf)) > 0)
        if (eco_write_full(to, buf, (size_t)n) != n)
            break;
    if (n < 0) /* an error, not EOF: stop the other side too */
        shutdown(from, SHUT_RDWR);
    shutdown(to, SHUT_WR);
    return NULL;
}

struct conn {
    int cfd, bfd; /* the client's, and a fresh socket for the backend */
};

static void *client(void *arg)
{
    struct conn *c = arg;
    int cfd = c->cfd, bfd = c->bfd;
    free(c);
    if (eco_connect(bfd, backend->ai_addr, backend->ai_addrlen) != 0) {
        fprintf(stderr, "tcp_proxy: backend: %s\n", strerror(errno));
    } else {
        int one = 1;
        setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct pipe_ends up = {cfd, bfd}, down = {bfd, cfd};
        eco_t *back = eco_create(pump, &down, NULL);
        if (back == NULL) {
            perror("eco_create");
        } else {
            eco_resume(back); /* backend -> client, beside us */
            pump(&up);        /* client -> backend, here */
            eco_join(back, NULL);
        }
    }
    eco_close(bfd);
    eco_close(cfd);
    accept_guard_closed(&guard);
    return NULL;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    accept_guard_init(&guard, "tcp_proxy");
    for (;;) {
        int bfd = eco_socket(backend->ai_family, SOCK_STREAM, 0);
        if (bfd < 0) {
            if (accept_shortage(errno)) {
                accept_backoff(&guard, "socket", errno);
                continue;
            }
            perror("tcp_proxy: socket");
            break;
        }
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            int err = errno;
            eco_close(bfd);
            if (accept_shortage(err)) {
                accept_backoff(&guard, "accept", err);
                continue;
            }
            fprintf(stderr, "tcp_proxy: accept: %s\n", strerror(err));
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (c != NULL) {
            c->cfd = fd;
            c->bfd = bfd;
        }
        if (c == NULL || eco_go(client, c) != 0) {
            int err = c == NULL ? ENOMEM : errno;
            free(c);
            eco_close(fd);
            eco_close(bfd);
            accept_backoff(&guard, "eco_go", err);
        }
    }
    eco_close(lfd);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tcp_proxy --listen PORT --backend HOST:PORT [--bind ADDR]\n"
                 "  Accepts TCP connections on PORT and relays each to its own\n"
                 "  connection to HOST:PORT, both ways, passing half-closes on.\n"
                 "  --bind ADDR  address to listen on (default 127.0.0.1)\n");
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
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *lport = NULL, *target = NULL, *bind_addr = "127.0.0.1";
    int c;
    while ((c = getopt_long(argc, argv, "l:B:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': lport = optarg; break;
        case 'B': target = optarg; break;
        case 'b': bind_addr = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end;
    long lp = lport ? strtol(lport, &end, 10) : 0;
    if (lport == NULL || *end != '\0' || lp < 0 || lp > 65535)
        return bad("--listen must be a port number from 0 (any free port) to 65535");
    const char *colon = target ? strrchr(target, ':') : NULL;
    if (colon == NULL || colon == target || colon[1] == '\0' || optind != argc)
        return bad("--backend must be HOST:PORT");
    char host[256];
    size_t hl = (size_t)(colon - target);
    if (hl >= sizeof host)
        return bad("--backend host is too long");
    memcpy(host, target, hl);
    host[hl] = '\0';
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') { /* [::1]:port */
        memmove(host, host + 1, hl - 2);
        host[hl - 2] = '\0';
    }
    if (eco_setup(NULL) != 0) { /* first: eco_getaddrinfo needs it */
        perror("eco_setup");
        return 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = eco_getaddrinfo(host, colon + 1, &hints, &backend);
    if (rc != 0) {
        fprintf(stderr, "tcp_proxy: backend %s: %s\n", target, gai_strerror(rc));
        return 2;
    }
    struct addrinfo lh = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *la;
    rc = getaddrinfo(bind_addr, lport, &lh, &la);
    if (rc != 0) {
        fprintf(stderr, "tcp_proxy: %s: %s\n", bind_addr, gai_strerror(rc));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd = eco_socket(la->ai_family, SOCK_STREAM, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, la->ai_addr, la->ai_addrlen) != 0 || listen(lfd, 4096) != 0) {
        fprintf(stderr, "tcp_proxy: listen on %s port %s: %s\n", bind_addr, lport,
                strerror(errno));
        return 1;
    }
    freeaddrinfo(la);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    int actual = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    printf("tcp_proxy: listening on %s port %d, relaying to %s\n", bind_addr, actual, target);
    fflush(stdout);
    eco_go(accept_loop, (void *)(intptr_t)lfd);
    eco_loop();
    eco_teardown();
    eco_freeaddrinfo(backend);
    return 0;
}
