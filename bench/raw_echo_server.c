/*
 * raw_echo_server.c - the echo server as a libevent user writes it by hand:
 * nonblocking fds, one persistent read event per connection, a write event
 * only while output is pending.  The peer of sample/echo_server.
 *
 *     raw_echo_server PORT [THREADS]
 *
 * With THREADS (default 1), each thread runs its own event_base with its
 * own listening socket on PORT (SO_REUSEPORT), as echo_server --threads.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct conn {
    int fd;
    struct event *rd, *wr;
    size_t off, len; /* unsent bytes of buf */
    char buf[4096]; /* as in the libeco samples */
};

static void conn_free(struct conn *c)
{
    event_free(c->rd);
    event_free(c->wr);
    close(c->fd);
    free(c);
}

/* Sends what is pending; 1 when all is out, 0 when it must wait, -1 on error. */
static int flush(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->fd, c->buf + c->off, c->len - c->off, MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && errno == EAGAIN) {
            return 0;
        } else {
            return -1;
        }
    }
    c->off = c->len = 0;
    return 1;
}

static void on_write(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)fd;
    (void)what;
    int r = flush(c);
    if (r < 0) {
        conn_free(c);
    } else if (r == 1) {
        event_del(c->wr);
        event_add(c->rd, NULL);
    }
}

static void on_read(evutil_socket_t fd, short what, void *arg)
{
    struct conn *c = arg;
    (void)what;
    ssize_t n = read(fd, c->buf, sizeof c->buf);
    if (n > 0) {
        c->off = 0;
        c->len = (size_t)n;
        int r = flush(c);
        if (r < 0) {
            conn_free(c);
        } else if (r == 0) { /* wait for room before reading more */
            event_del(c->rd);
            event_add(c->wr, NULL);
        }
    } else if (n == 0 || (errno != EAGAIN && errno != EINTR)) {
        conn_free(c);
    }
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    struct event_base *base = arg;
    (void)what;
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return; /* EAGAIN, or an error the next event retries */
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = calloc(1, sizeof *c);
        if (c == NULL) {
            close(fd);
            continue;
        }
        c->fd = fd;
        c->rd = event_new(base, fd, EV_READ | EV_PERSIST, on_read, c);
        c->wr = event_new(base, fd, EV_WRITE | EV_PERSIST, on_write, c);
        event_add(c->rd, NULL);
    }
}

static void *run(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    struct event_base *base = event_base_new();
    struct event *lev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, base);
    event_add(lev, NULL);
    event_base_dispatch(base);
    return NULL;
}

int main(int argc, char **argv)
{
    int port = argc >= 2 && argc <= 3 ? atoi(argv[1]) : 0;
    int threads = argc == 3 ? atoi(argv[2]) : 1;
    if (port < 1 || port > 65535 || threads < 1 || threads > 64) {
        fprintf(stderr, "usage: raw_echo_server PORT [THREADS]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    int lfd[64];
    for (int i = 0; i < threads; i++) {
        lfd[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd[i], SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        if (threads > 1)
            setsockopt(lfd[i], SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                                 .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
        if (bind(lfd[i], (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd[i], 4096) != 0) {
            perror("raw_echo_server: listen");
            return 1;
        }
    }
    printf("raw_echo_server: listening on 127.0.0.1 port %d, %d thread%s\n", port, threads,
           threads > 1 ? "s" : "");
    fflush(stdout);
    for (int i = 1; i < threads; i++) {
        pthread_t tid;
        pthread_create(&tid, NULL, run, (void *)(intptr_t)lfd[i]);
    }
    run((void *)(intptr_t)lfd[0]); /* the first on the main thread; none returns */
    return 0;
}
