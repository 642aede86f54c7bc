/*
 * loadgen.c - closed-loop ping-pong load: C connections each send an
 * 8-byte message and wait for it to come back (checked byte for byte)
 * before sending the next.  Plain epoll, one thread, so that the servers
 * compared are driven the same way.
 *
 *     loadgen PORT CONNS SECONDS
 *     loadgen PORT CONNS SECONDS short
 *
 * Prints "round_trips_per_s=R trips=T seconds=S errors=E".
 *
 * With "short", each of the C slots opens a connection, does one round
 * trip, closes, and opens the next: C connections in flight at all times.
 * Prints "conns_per_s=R conns=T seconds=S errors=E".  The client closes
 * first, so each connection leaves a TIME_WAIT on the client side: the
 * slots take their source address in turn from 127.0.0.2 ... 127.0.0.65
 * (IP_BIND_ADDRESS_NO_PORT, so connect picks the port per destination),
 * 64 times the ephemeral ports of one address.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define MSG 8
#define SOURCES 64

struct conn {
    int fd;
    uint64_t seq;
    size_t got;
    unsigned char in[MSG];
};

static int ep;                /* the epoll set of every connection */
static struct sockaddr_in to; /* the server */
static unsigned long done, errors; /* round trips (or connections) checked, failures */

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int send_msg(struct conn *c)
{
    unsigned char out[MSG];
    memcpy(out, &c->seq, MSG);
    return send(c->fd, out, MSG, MSG_NOSIGNAL) == MSG ? 0 : -1;
}

/* Reads what came of c's message: 1 once it is all in and checked (an
 * error counted if it differs), 0 while some is missing, -1 on EOF or an
 * error. */
static int recv_msg(struct conn *c)
{
    ssize_t r = recv(c->fd, c->in + c->got, MSG - c->got, MSG_DONTWAIT);
    if (r <= 0)
        return r < 0 && (errno == EAGAIN || errno == EINTR) ? 0 : -1;
    if ((c->got += (size_t)r) < MSG)
        return 0;
    c->got = 0;
    if (memcmp(c->in, &c->seq, MSG) != 0)
        errors++;
    return 1;
}

/* Hands every ready connection to fn for secs seconds; the seconds taken. */
static double drive(double secs, void (*fn)(struct conn *c, uint32_t events))
{
    double t0 = now(), end = t0 + secs;
    struct epoll_event evs[256];
    for (int checks = 0;;) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++)
            fn(evs[i].data.ptr, evs[i].events);
        if ((++checks % 16 == 0 || k <= 0) && now() >= end)
            return now() - t0;
    }
}

/* Ping-pong: each message back starts the next. */
static void ping_pong(struct conn *c, uint32_t events)
{
    (void)events;
    int r = recv_msg(c);
    if (r < 0) {
        errors++;
        epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    } else if (r > 0) {
        done++;
        c->seq++;
        if (send_msg(c) != 0)
            errors++;
    }
}

/* One connection of a short-connection slot, from the source address
 * after the last: nonblocking, its connect under way. */
static int short_open(struct conn *c)
{
    static unsigned next;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in from = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(0x7f000002u + next++ % SOURCES)};
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&from, sizeof from) != 0 ||
        (connect(fd, (struct sockaddr *)&to, sizeof to) != 0 && errno != EINPROGRESS)) {
        close(fd);
        return -1;
    }
    c->fd = fd;
    c->got = 0;
    c->seq++;
    /* Writable: connected, send; readable: the echo (or an error). */
    struct epoll_event ev = {.events = EPOLLOUT | EPOLLIN, .data.ptr = c};
    return epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Short connections: connect, one message there and back, close, again. */
static void short_conn(struct conn *c, uint32_t events)
{
    int r;
    if ((events & (EPOLLERR | EPOLLHUP)) && !(events & EPOLLIN)) {
        r = -1;
    } else if (events & EPOLLOUT) { /* connected: send, then wait to read */
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
        r = send_msg(c) == 0 ? 0 : -1;
    } else {
        r = recv_msg(c);
    }
    if (r == 0)
        return;
    if (r > 0)
        done++;
    else
        errors++;
    close(c->fd); /* also leaves the epoll set */
    if (short_open(c) != 0)
        errors++;
}

int main(int argc, char **argv)
{
    int is_short = argc == 5 && strcmp(argv[4], "short") == 0;
    if (argc != 4 && !is_short) {
        fprintf(stderr, "usage: loadgen PORT CONNS SECONDS [short]\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double secs = atof(argv[3]);
    if (port < 1 || port > 65535 || n < 1 || secs <= 0) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    to = (struct sockaddr_in){.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                              .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    for (int i = 0; i < n; i++) {
        cs[i].seq = (uint64_t)i << 40;
        if (is_short) {
            if (short_open(&cs[i]) != 0) {
                perror("loadgen: connect");
                return 1;
            }
            continue;
        }
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
        if (fd < 0 || connect(fd, (struct sockaddr *)&to, sizeof to) != 0) {
            perror("loadgen: connect");
            return 1;
        }
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < n && !is_short; i++)
        if (send_msg(&cs[i]) != 0) {
            perror("loadgen: send");
            return 1;
        }
    double el = drive(secs, is_short ? short_conn : ping_pong);
    if (is_short)
        printf("conns_per_s=%.0f conns=%lu seconds=%.3f errors=%lu\n", (double)done / el, done,
               el, errors);
    else
        printf("round_trips_per_s=%.0f trips=%lu seconds=%.3f errors=%lu\n", (double)done / el,
               done, el, errors);
    for (int i = 0; i < n; i++)
        close(cs[i].fd);
    return errors == 0 ? 0 : 1;
}
