/*
 * echo_server.c - a TCP echo server, one coroutine per connection.
 *
 *     echo_server --port N [--bind ADDR]
 *
 * Each connection is served by a plain loop: read what came, write it all
 * back, until the client closes.  The coroutine parks whenever the socket
 * has nothing to give or no room to take.
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

static void *serve(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[4096]; /* a page: small stacks, small working set */
    ssize_t n;
    while ((n = eco_read(fd, buf, sizeof buf)) > 0)
        if (eco_write_full(fd, buf, (size_t)n) != n)
            break;
    eco_close(fd);
    accept_guard_closed(&guard);
    return NULL;
}

/* Out of fds or memory, the loop waits for a close (accept_util.h): the
 * clients in the backlog are served as fds come back. */
static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    accept_guard_init(&guard, "echo_server");
    for (;;) {
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (accept_shortage(errno)) {
                accept_backoff(&guard, "accept", errno);
                continue;
            }
            perror("echo_server: accept");
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (eco_go(serve, (void *)(intptr_t)fd) != 0) {
            int err = errno;
            eco_close(fd);
            accept_backoff(&guard, "eco_go", err);
        }
    }
    eco_close(lfd);
    return NULL;
}

/* A listening socket on addr:port (IPv4 or IPv6 literal or name). */
static int listen_on(const char *addr, const char *port)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(addr, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "echo_server: %s: %s\n", addr, gai_strerror(rc));
        return -1;
    }
    int fd = eco_socket(res->ai_family, res->ai_socktype, res->ai_protocol);
    int one = 1;
    if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 4096) != 0) {
        fprintf(stderr, "echo_server: %s port %s: %s\n", addr, port, strerror(errno));
        if (fd >= 0)
            eco_close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    return fd;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return -1;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

static void usage(FILE *out)
{
    fprintf(out, "usage: echo_server --port N [--bind ADDR]\n"
                 "  Echoes every byte back on each TCP connection.\n"
                 "  --port N     port to listen on (0: any free port)\n"
                 "  --bind ADDR  address to listen on (default 127.0.0.1)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *port = NULL, *bind_addr = "127.0.0.1";
    int c;
    while ((c = getopt_long(argc, argv, "p:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'b': bind_addr = optarg; break;
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
    signal(SIGPIPE, SIG_IGN);
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    int lfd = listen_on(bind_addr, port);
    if (lfd < 0)
        return 1;
    printf("echo_server: listening on %s port %d\n", bind_addr, local_port(lfd));
    fflush(stdout);
    eco_go(accept_loop, (void *)(intptr_t)lfd);
    eco_loop();
    eco_teardown();
    return 0;
}
