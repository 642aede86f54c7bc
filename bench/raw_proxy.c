/*
 * raw_proxy.c - the TCP proxy as a libevent user writes it by hand: one
 * backend connection per client, per direction a persistent read event on
 * the source and a write event on the destination only while output is
 * pending.  The peer of sample/tcp_proxy.
 *
 *     raw_proxy LISTEN_PORT BACKEND_PORT      (both on 127.0.0.1)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct session;

struct flow {
    struct session *s;
    int src, dst;
    struct event *rd, *wr; /* rd on src, wr on dst */
    size_t off, len;
    int done;
    char buf[4096]; /* as in the libeco samples */
};

struct session {
    int cfd, bfd;
    struct event *connecting;
    struct flow up, down; /* client -> backend, backend -> client */
};

static struct event_base *base;
static struct sockaddr_in backend;

static void session_free(struct session *s)
{
    if (s->connecting)
        event_free(s->connecting);
    struct flow *fl[2] = {&s->up, &s->down};
    for (int i = 0; i < 2; i++) {
        if (fl[i]->rd)
            event_free(fl[i]->rd);
        if (fl[i]->wr)
            event_free(fl[i]->wr);
    }
    close(s->cfd);
    close(s->bfd);
    free(s);
}

/* 1: all sent, 0: must wait for room, -1: error. */
static int flush(struct flow *f)
{
    while (f->off < f->len) {
        ssize_t n = send(f->dst, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);
        if (n > 0)
            f->off += (size_t)n;
        else if (n < 0 && errno == EINTR)
            continue;
        else if (n < 0 && errno == EAGAIN)
            return 0;
        else
            return -1;
    }
    f->off = f->len = 0;
    return 1;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    (void)fd;
    (void)what;
    int r = flush(f);
    if (r < 0) {
        session_free(f->s);
    } else if (r == 1) {
        event_del(f->wr);
        event_add(f->rd, NULL);
    }
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    struct flow *f = arg;
    (void)what;
    ssize_t n = read(fd, f->buf, sizeof f->buf);
    if (n > 0) {
        f->off = 0;
        f->len = (size_t)n;
        int r = flush(f);
        if (r < 0) {
            session_free(f->s);
        } else if (r == 0) {
            event_del(f->rd);
            event_add(f->wr, NULL);
        }
    } else if (n == 0) { /* pass the half-close on */
        shutdown(f->dst, SHUT_WR);
        event_del(f->rd);
        f->done = 1;
        if (f->s->up.done && f->s->down.done)
            session_free(f->s);
    } else if (errno != EAGAIN && errno != EINTR) {
        session_free(f->s);
    }
}

static void flow_init(struct session *s, struct flow *f, int src, int dst)
{
    f->s = s;
    f->src = src;
    f->dst = dst;
    f->rd = event_new(base, src, EV_READ | EV_PERSIST, on_readable, f);
    f->wr = event_new(base, dst, EV_WRITE | EV_PERSIST, on_writable, f);
    event_add(f->rd, NULL);
}

static void on_connected(evutil_socket_t fd, short what, void *arg)
{
    struct session *s = arg;
    int err = 0;
    socklen_t len = sizeof err;
    (void)what;
    event_free(s->connecting);
    s->connecting = NULL;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0) {
        session_free(s);
        return;
    }
    flow_init(s, &s->up, s->cfd, s->bfd);
    flow_init(s, &s->down, s->bfd, s->cfd);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    (void)what;
    (void)arg;
    for (;;) {
        int cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0)
            return;
        int bfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        struct session *s = calloc(1, sizeof *s);
        if (bfd < 0 || s == NULL) {
            close(cfd);
            if (bfd >= 0)
                close(bfd);
            free(s);
            continue;
        }
        int one = 1;
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        setsockopt(bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        s->cfd = cfd;
        s->bfd = bfd;
        if (connect(bfd, (struct sockaddr *)&backend, sizeof backend) != 0 &&
            errno != EINPROGRESS) {
            session_free(s);
            continue;
        }
        s->connecting = event_new(base, bfd, EV_WRITE, on_connected, s);
        event_add(s->connecting, NULL);
    }
}

int main(int argc, char **argv)
{
    int lport = argc == 3 ? atoi(argv[1]) : 0, bport = argc == 3 ? atoi(argv[2]) : 0;
    if (lport < 1 || lport > 65535 || bport < 1 || bport > 65535) {
        fprintf(stderr, "usage: raw_proxy LISTEN_PORT BACKEND_PORT\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    backend = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)bport),
                                   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)lport),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    if (bind(lfd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(lfd, 4096) != 0) {
        perror("raw_proxy: listen");
        return 1;
    }
    base = event_base_new();
    struct event *lev = event_new(base, lfd, EV_READ | EV_PERSIST, on_accept, NULL);
    event_add(lev, NULL);
    printf("raw_proxy: listening on 127.0.0.1 port %d, relaying to port %d\n", lport, bport);
    fflush(stdout);
    event_base_dispatch(base);
    return 0;
}
