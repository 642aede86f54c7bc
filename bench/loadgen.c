/*
 * loadgen.c - closed-loop ping-pong load: C connections each send an
 * 8-byte message and wait for it to come back (checked byte for byte)
 * before sending the next.  Plain epoll, one thread, so that the servers
 * compared are driven the same way.
 *
 *     loadgen PORT CONNS SECONDS
 *
 * Prints "round_trips_per_s=R trips=T seconds=S errors=E".
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

struct conn {
    int fd;
    uint64_t seq;
    size_t got;
    unsigned char in[MSG];
};

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

int main(int argc, char **argv)
{
    if (argc != 4) {
        fprintf(stderr, "usage: loadgen PORT CONNS SECONDS\n");
        return 2;
    }
    int port = atoi(argv[1]), n = atoi(argv[2]);
    double secs = atof(argv[3]);
    if (port < 1 || port > 65535 || n < 1 || secs <= 0) {
        fprintf(stderr, "loadgen: bad arguments\n");
        return 2;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int ep = epoll_create1(EPOLL_CLOEXEC);
    struct conn *cs = calloc((size_t)n, sizeof *cs);
    for (int i = 0; i < n; i++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
            perror("loadgen: connect");
            return 1;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        cs[i].fd = fd;
        cs[i].seq = (uint64_t)i << 40;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = &cs[i]};
        epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    }
    for (int i = 0; i < n; i++)
        if (send_msg(&cs[i]) != 0) {
            perror("loadgen: send");
            return 1;
        }
    unsigned long trips = 0, errors = 0;
    double t0 = now(), end = t0 + secs;
    struct epoll_event evs[256];
    int checks = 0;
    for (;;) {
        int k = epoll_wait(ep, evs, 256, 100);
        for (int i = 0; i < k; i++) {
            struct conn *c = evs[i].data.ptr;
            ssize_t r = recv(c->fd, c->in + c->got, MSG - c->got, MSG_DONTWAIT);
            if (r <= 0) {
                if (r < 0 && (errno == EAGAIN || errno == EINTR))
                    continue;
                errors++;
                epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
                continue;
            }
            c->got += (size_t)r;
            if (c->got < MSG)
                continue;
            c->got = 0;
            if (memcmp(c->in, &c->seq, MSG) != 0)
                errors++;
            trips++;
            c->seq++;
            if (send_msg(c) != 0)
                errors++;
        }
        if (++checks % 16 == 0 || k <= 0) {
            if (now() >= end)
                break;
        }
    }
    double el = now() - t0;
    printf("round_trips_per_s=%.0f trips=%lu seconds=%.3f errors=%lu\n", (double)trips / el, trips,
           el, errors);
    for (int i = 0; i < n; i++)
        close(cs[i].fd);
    return errors == 0 ? 0 : 1;
}
