/* test_socket.c - the socket calls: wrappers, wait queues, shared fds,
 * timeouts, close, bad input.  Loopback TCP, Unix socketpairs and pipes. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Slow under Valgrind and qemu: scale the big loops down there. */
static int scale(int n)
{
    const char *s = getenv("ECO_TEST_SLOW");
    return s != NULL && s[0] == '1' ? n / 10 : n;
}

static unsigned char pattern(size_t i, unsigned seed)
{
    return (unsigned char)((i * 131 + seed * 7 + (i >> 8)) & 0xff);
}

/* A listening TCP socket on 127.0.0.1 with a kernel-chosen port. */
static int tcp_listener(int *port)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 1024), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static int tcp_connect(int port)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int one = 1; /* no Nagle stalls between request chunks */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Echoes until EOF or error, then closes. */
static void *echo_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;
    while ((n = eco_read(fd, buf, sizeof buf)) > 0)
        ck_assert_int_eq(eco_write_full(fd, buf, (size_t)n), n);
    eco_close(fd);
    return NULL;
}

struct acceptor {
    int fd;
    int conns; /* how many to accept before closing the listener */
};

static void *accept_loop(void *arg)
{
    struct acceptor *a = arg;
    for (int i = 0; i < a->conns; i++) {
        int c = eco_accept(a->fd, NULL, NULL);
        ck_assert_int_ge(c, 0);
        ck_assert_int_ne(fcntl(c, F_GETFL) & O_NONBLOCK, 0);
        ck_assert_int_ne(fcntl(c, F_GETFD) & FD_CLOEXEC, 0);
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ck_assert_int_eq(eco_go(echo_conn, (void *)(intptr_t)c), 0);
    }
    eco_close(a->fd);
    return NULL;
}

/* Largest message echo_check sends. */
static size_t echo_cap = 70000;

/* Sends messages of growing size through an echo server, checks each. */
static void echo_check(int fd, int rounds, unsigned seed)
{
    /* Per call: coroutines of one thread interleave here. */
    size_t cap = echo_cap;
    unsigned char *out = malloc(cap), *in = malloc(cap);
    ck_assert(out != NULL && in != NULL);
    for (int r = 0; r < rounds; r++) {
        size_t len = 1 + ((size_t)r * 7919 + seed * 104729) % cap;
        for (size_t i = 0; i < len; i++)
            out[i] = pattern(i, seed + (unsigned)r);
        ck_assert_int_eq(eco_write_full(fd, out, len), (ssize_t)len);
        ck_assert_int_eq(eco_read_full(fd, in, len), (ssize_t)len);
        ck_assert(memcmp(in, out, len) == 0);
    }
    free(out);
    free(in);
}

/* ---- TCP echo, EOF ---- */

struct client {
    int port;
    int rounds;
    unsigned seed;
    int done;
};

static void *echo_client(void *arg)
{
    struct client *c = arg;
    int fd = tcp_connect(c->port);
    echo_check(fd, c->rounds, c->seed);
    /* Half-close: the server sees EOF, closes, and we see EOF too. */
    ck_assert_int_eq(shutdown(fd, SHUT_WR), 0);
    char b;
    ck_assert_int_eq(eco_read(fd, &b, 1), 0);
    ck_assert_int_eq(eco_read(fd, &b, 1), 0); /* EOF stays readable */
    ck_assert_int_eq(eco_close(fd), 0);
    c->done = 1;
    return NULL;
}

START_TEST(tcp_echo_round_trips)
{
    struct acceptor a = {.conns = 1};
    struct client c = {.rounds = 60, .seed = 1};
    a.fd = tcp_listener(&c.port);
    ck_assert_int_eq(eco_go(accept_loop, &a), 0);
    ck_assert_int_eq(eco_go(echo_client, &c), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(c.done, 1);
}
END_TEST

/* ---- bulk transfer both ways over one fd: socketpair and pipe ---- */

#define BULK (1 << 21)

struct bulk {
    int fd;
    unsigned seed;
    size_t moved;
};

static void *bulk_writer(void *arg)
{
    struct bulk *b = arg;
    size_t cap = 65536;
    unsigned char *chunk = malloc(cap);
    ck_assert_ptr_nonnull(chunk);
    size_t off = 0;
    while (off < BULK) {
        size_t n = 1 + (off * 31) % cap;
        if (n > BULK - off)
            n = BULK - off;
        for (size_t i = 0; i < n; i++)
            chunk[i] = pattern(off + i, b->seed);
        ssize_t w = eco_write(b->fd, chunk, n); /* may be short: parks when full */
        ck_assert_int_gt(w, 0);
        off += (size_t)w;
    }
    free(chunk);
    b->moved = off;
    return NULL;
}

static void *bulk_reader(void *arg)
{
    struct bulk *b = arg;
    unsigned char buf[40000];
    size_t off = 0;
    while (off < BULK) {
        ssize_t n = eco_read(b->fd, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        ssize_t bad = -1; /* one assertion per chunk: Check's are slow */
        for (ssize_t i = 0; i < n && bad < 0; i++)
            if (buf[i] != pattern(off + (size_t)i, b->seed))
                bad = i;
        ck_assert_int_eq(bad, -1);
        off += (size_t)n;
    }
    b->moved = off;
    return NULL;
}

START_TEST(full_duplex_socketpair)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    /* Each end has a reader and a writer parked at the same time. */
    struct bulk w0 = {sv[0], 1, 0}, r1 = {sv[1], 1, 0}, w1 = {sv[1], 2, 0}, r0 = {sv[0], 2, 0};
    ck_assert_int_eq(eco_go(bulk_writer, &w0), 0);
    ck_assert_int_eq(eco_go(bulk_writer, &w1), 0);
    ck_assert_int_eq(eco_go(bulk_reader, &r0), 0);
    ck_assert_int_eq(eco_go(bulk_reader, &r1), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_uint_eq(w0.moved, BULK);
    ck_assert_uint_eq(r1.moved, BULK);
    ck_assert_uint_eq(w1.moved, BULK);
    ck_assert_uint_eq(r0.moved, BULK);
    eco_close(sv[0]);
    eco_close(sv[1]);
}
END_TEST

START_TEST(pipe_bulk)
{
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    struct bulk w = {p[1], 3, 0}, r = {p[0], 3, 0};
    ck_assert_int_eq(eco_go(bulk_reader, &r), 0);
    ck_assert_int_eq(eco_go(bulk_writer, &w), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_uint_eq(r.moved, BULK);
    eco_close(p[0]);
    eco_close(p[1]);
}
END_TEST

/* ---- half-close and EOF while parked ---- */

static int hc_fd[2];
static int hc_state;

static void *hc_reader(void *arg)
{
    (void)arg;
    char b[8];
    hc_state = 1;
    ck_assert_int_eq(eco_read(hc_fd[1], b, sizeof b), 0); /* parks, then EOF */
    ck_assert_int_eq(eco_read(hc_fd[1], b, sizeof b), 0);
    /* Our direction still works after the peer's half-close. */
    ck_assert_int_eq(eco_write_full(hc_fd[1], "back", 4), 4);
    ck_assert_int_eq(shutdown(hc_fd[1], SHUT_WR), 0);
    hc_state = 2;
    return NULL;
}

static void *hc_closer(void *arg)
{
    (void)arg;
    while (hc_state != 1)
        eco_sleep(0);
    ck_assert_int_eq(shutdown(hc_fd[0], SHUT_WR), 0);
    char b[8];
    ck_assert_int_eq(eco_read_full(hc_fd[0], b, 4), 4);
    ck_assert(memcmp(b, "back", 4) == 0);
    ck_assert_int_eq(eco_read(hc_fd[0], b, 4), 0);
    return NULL;
}

/* Makes fds a fresh socketpair, runs first, second and third (if not
 * NULL; eco_go keeps their order) until all are done, and closes the pair. */
static void run_on_pair(int fds[2], eco_fn first, eco_fn second, eco_fn third)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fds), 0);
    ck_assert_int_eq(eco_go(first, NULL), 0);
    ck_assert_int_eq(eco_go(second, NULL), 0);
    if (third != NULL)
        ck_assert_int_eq(eco_go(third, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    eco_close(fds[0]);
    eco_close(fds[1]);
}

START_TEST(half_close_wakes_reader_with_eof)
{
    hc_state = 0;
    run_on_pair(hc_fd, hc_reader, hc_closer, NULL);
    ck_assert_int_eq(hc_state, 2);
}
END_TEST

/* ---- a short read must not hide what came with the data ----
 * The reader is parked when data and the end of the stream (or a reset)
 * arrive together: after the short read that takes the data, the next read
 * must see the end, not park for ever. */

static int sr_fd[2], sr_parked;

static void *sr_reader(void *arg)
{
    (void)arg;
    char b[100];
    sr_parked = 1;
    ck_assert_int_eq(eco_read(sr_fd[0], b, sizeof b), 3);
    ck_assert_int_eq(eco_read(sr_fd[0], b, sizeof b), 0);
    return NULL;
}

static void *sr_writer(void *arg)
{
    (void)arg;
    while (!sr_parked)
        eco_sleep(0);
    ck_assert_int_eq(write(sr_fd[1], "abc", 3), 3);
    ck_assert_int_eq(shutdown(sr_fd[1], SHUT_WR), 0);
    return NULL;
}

START_TEST(data_and_eof_together_after_a_wait)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sr_fd), 0);
    sr_parked = 0;
    ck_assert_int_eq(eco_go(sr_reader, NULL), 0);
    ck_assert_int_eq(eco_go(sr_writer, NULL), 0);
    ck_assert_int_eq(eco_fd_timeout(sr_fd[0], ECO_RD, 5000), 0); /* a hang fails */
    ck_assert_int_eq(eco_loop(), 0);
    eco_close(sr_fd[0]);
    eco_close(sr_fd[1]);
}
END_TEST

/* ---- datagrams and vectors ---- */

static int dg_rx, dg_tx, dg_port;

static void *dg_receiver(void *arg)
{
    (void)arg;
    char buf[64];
    struct sockaddr_in from;
    socklen_t flen = sizeof from;
    /* Parks until the datagram comes; a datagram's size is not a hint. */
    ck_assert_int_eq(eco_recvfrom(dg_rx, buf, sizeof buf, 0, (struct sockaddr *)&from, &flen), 5);
    ck_assert(memcmp(buf, "first", 5) == 0);
    ck_assert_int_eq(from.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    ck_assert_int_eq(eco_recv(dg_rx, buf, sizeof buf, 0), 6);
    ck_assert(memcmp(buf, "second", 6) == 0);

    char a[3], b[4];
    struct iovec iov[2] = {{a, sizeof a}, {b, sizeof b}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ck_assert_int_eq(eco_recvmsg(dg_rx, &m, 0), 7);
    ck_assert(memcmp(a, "abc", 3) == 0 && memcmp(b, "defg", 4) == 0);
    return NULL;
}

static void *dg_sender(void *arg)
{
    (void)arg;
    struct sockaddr_in to = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dg_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    eco_sleep(0); /* let the receiver park first */
    ck_assert_int_eq(eco_sendto(dg_tx, "first", 5, 0, (struct sockaddr *)&to, sizeof to), 5);
    ck_assert_int_eq(eco_connect(dg_tx, (struct sockaddr *)&to, sizeof to), 0);
    ck_assert_int_eq(eco_send(dg_tx, "second", 6, 0), 6);
    struct iovec iov[2] = {{"abc", 3}, {"defg", 4}};
    struct msghdr m = {.msg_iov = iov, .msg_iovlen = 2};
    ck_assert_int_eq(eco_sendmsg(dg_tx, &m, 0), 7);
    return NULL;
}

static void *vec_pipe(void *arg)
{
    (void)arg;
    int p[2];
    ck_assert_int_eq(pipe2(p, O_NONBLOCK), 0);
    struct iovec out[3] = {{"one", 3}, {"-", 1}, {"two", 3}};
    ck_assert_int_eq(eco_writev(p[1], out, 3), 7);
    char x[4] = {0}, y[5] = {0};
    struct iovec in[2] = {{x, 3}, {y, 4}};
    ck_assert_int_eq(eco_readv(p[0], in, 2), 7);
    ck_assert_str_eq(x, "one");
    ck_assert_str_eq(y, "-two");
    eco_close(p[0]);
    eco_close(p[1]);
    return NULL;
}

START_TEST(datagrams_and_vectors)
{
    dg_rx = eco_socket(AF_INET, SOCK_DGRAM, 0);
    dg_tx = eco_socket(AF_INET, SOCK_DGRAM, 0);
    ck_assert_int_ge(dg_rx, 0);
    ck_assert_int_ge(dg_tx, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(dg_rx, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(getsockname(dg_rx, (struct sockaddr *)&sa, &len), 0);
    dg_port = ntohs(sa.sin_port);
    ck_assert_int_eq(eco_go(dg_receiver, NULL), 0);
    ck_assert_int_eq(eco_go(dg_sender, NULL), 0);
    ck_assert_int_eq(eco_go(vec_pipe, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    eco_close(dg_rx);
    eco_close(dg_tx);
}
END_TEST

/* ---- peer reset ---- */

static int rs_port, rs_step;

static void reset_now(int fd)
{
    struct linger lg = {1, 0};
    ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg), 0);
    ck_assert_int_eq(eco_close(fd), 0);
}

static void *rs_reader_side(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int c = eco_accept(lfd, NULL, NULL);
    ck_assert_int_ge(c, 0);
    char b[64];
    rs_step = 1;
    ck_assert_int_eq(eco_read(c, b, sizeof b), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    eco_close(c);
    eco_close(lfd);
    rs_step = 2;
    return NULL;
}

static void *rs_resetter(void *arg)
{
    (void)arg;
    int fd = tcp_connect(rs_port);
    while (rs_step != 1)
        eco_sleep(0);
    reset_now(fd);
    return NULL;
}

START_TEST(peer_reset_during_read)
{
    int lfd = tcp_listener(&rs_port);
    rs_step = 0;
    ck_assert_int_eq(eco_go(rs_reader_side, (void *)(intptr_t)lfd), 0);
    ck_assert_int_eq(eco_go(rs_resetter, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(rs_step, 2);
}
END_TEST

static void *rs_writer_side(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int c = eco_accept(lfd, NULL, NULL);
    ck_assert_int_ge(c, 0);
    size_t n = 32 << 20; /* far more than the socket buffers hold */
    char *big = calloc(1, n);
    ck_assert_ptr_nonnull(big);
    rs_step = 1;
    ssize_t w = eco_write_full(c, big, n);
    int err = errno;
    ck_assert_int_lt(w, (ssize_t)n);
    ck_assert(err == ECONNRESET || err == EPIPE);
    /* And no SIGPIPE killed us on the way. */
    free(big);
    eco_close(c);
    eco_close(lfd);
    rs_step = 2;
    return NULL;
}

static void *rs_slow_resetter(void *arg)
{
    (void)arg;
    int fd = tcp_connect(rs_port);
    while (rs_step != 1)
        eco_sleep(0);
    char b[1000];
    ck_assert_int_gt(eco_read(fd, b, sizeof b), 0); /* the writer is mid-buffer */
    reset_now(fd);
    return NULL;
}

static void *rs_data_then_reset(void *arg)
{
    (void)arg;
    int fd = tcp_connect(rs_port);
    while (rs_step != 1)
        eco_sleep(0);
    ck_assert_int_eq(write(fd, "abc", 3), 3);
    reset_now(fd);
    return NULL;
}

static void *rs_short_reader(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int c = eco_accept(lfd, NULL, NULL);
    ck_assert_int_ge(c, 0);
    ck_assert_int_eq(eco_fd_timeout(c, ECO_RD, 5000), 0); /* a hang fails */
    char b[64];
    rs_step = 1;
    ssize_t n = eco_read(c, b, sizeof b);
    if (n == 3) /* the data, then the reset; or the reset destroyed both */
        n = eco_read(c, b, sizeof b);
    ck_assert_int_eq(n, -1);
    ck_assert_int_eq(errno, ECONNRESET);
    eco_close(c);
    eco_close(lfd);
    rs_step = 2;
    return NULL;
}

START_TEST(data_then_reset_after_a_wait)
{
    int lfd = tcp_listener(&rs_port);
    rs_step = 0;
    ck_assert_int_eq(eco_go(rs_short_reader, (void *)(intptr_t)lfd), 0);
    ck_assert_int_eq(eco_go(rs_data_then_reset, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(rs_step, 2);
}
END_TEST

START_TEST(peer_reset_during_write)
{
    int lfd = tcp_listener(&rs_port);
    rs_step = 0;
    ck_assert_int_eq(eco_go(rs_writer_side, (void *)(intptr_t)lfd), 0);
    ck_assert_int_eq(eco_go(rs_slow_resetter, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(rs_step, 2);
}
END_TEST

/* ---- connect ---- */

static void *refused(void *arg)
{
    int port = (int)(intptr_t)arg;
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), -1);
    ck_assert_int_eq(errno, ECONNREFUSED);
    eco_close(fd);
    return NULL;
}

START_TEST(connect_to_closed_port_is_refused)
{
    int port;
    int lfd = tcp_listener(&port);
    eco_close(lfd); /* the port is now closed */
    ck_assert_int_eq(eco_go(refused, (void *)(intptr_t)port), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* ---- several acceptors on one listener, FIFO ---- */

static int acc_lfd, acc_port, acc_got[4], acc_parked;

static void *fifo_acceptor(void *arg)
{
    int me = (int)(intptr_t)arg;
    acc_parked++;
    int c = eco_accept(acc_lfd, NULL, NULL);
    ck_assert_int_ge(c, 0);
    char idx;
    ck_assert_int_eq(eco_read_full(c, &idx, 1), 1);
    acc_got[me] = idx;
    eco_close(c);
    return NULL;
}

static void *fifo_connector(void *arg)
{
    (void)arg;
    while (acc_parked != 4)
        eco_sleep(0);
    int fds[4];
    for (int i = 0; i < 4; i++) {
        fds[i] = tcp_connect(acc_port);
        char idx = (char)i;
        ck_assert_int_eq(eco_write_full(fds[i], &idx, 1), 1);
    }
    for (int i = 0; i < 4; i++)
        eco_close(fds[i]);
    return NULL;
}

START_TEST(acceptors_share_a_listener_in_order)
{
    acc_lfd = tcp_listener(&acc_port);
    acc_parked = 0;
    for (int i = 0; i < 4; i++) {
        acc_got[i] = -1;
        ck_assert_int_eq(eco_go(fifo_acceptor, (void *)(intptr_t)i), 0);
    }
    ck_assert_int_eq(eco_go(fifo_connector, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    /* Connections are accepted in the order they were made, by the
     * acceptors in the order they started waiting. */
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(acc_got[i], i);
    eco_close(acc_lfd);
}
END_TEST

/* ---- many readers on one fd: one wake each, FIFO, none lost ---- */

static int fr_fd[2];
static char fr_got[5];
static int fr_parked;

static void *fifo_reader(void *arg)
{
    int me = (int)(intptr_t)arg;
    fr_parked++;
    ck_assert_int_eq(eco_read(fr_fd[0], &fr_got[me], 1), 1);
    return NULL;
}

static void *fifo_writer(void *arg)
{
    (void)arg;
    while (fr_parked != 5)
        eco_sleep(0);
    /* One readiness for five bytes: each reader must get its turn. */
    ck_assert_int_eq(eco_write(fr_fd[1], "abcde", 5), 5);
    return NULL;
}

static void fifo_readers_body(void)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, fr_fd), 0);
    fr_parked = 0;
    memset(fr_got, 0, sizeof fr_got);
    for (int i = 0; i < 5; i++)
        ck_assert_int_eq(eco_go(fifo_reader, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_go(fifo_writer, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert(memcmp(fr_got, "abcde", 5) == 0);
    eco_close(fr_fd[0]);
    eco_close(fr_fd[1]);
}

START_TEST(readers_of_one_fd_are_served_in_order)
{
    fifo_readers_body();
}
END_TEST

/* ---- 1,000 concurrent connections ---- */

static void *many_client(void *arg)
{
    struct client *c = arg;
    int fd = tcp_connect(c->port);
    echo_check(fd, c->rounds, c->seed);
    eco_close(fd);
    c->done = 1;
    return NULL;
}

START_TEST(thousand_connections_echo)
{
    int n = 1000;
    need_fds(2100);
    /* The thousand connections are the point, not the bytes: under the
     * slow tools, smaller messages (70 MB through TSan took a minute). */
    if (scale(10) < 10)
        echo_cap = 4096;
    struct acceptor a = {.conns = n};
    struct client *cs = calloc((size_t)n, sizeof *cs);
    int port;
    a.fd = tcp_listener(&port);
    ck_assert_int_eq(eco_go(accept_loop, &a), 0);
    for (int i = 0; i < n; i++) {
        cs[i] = (struct client){.port = port, .rounds = 3, .seed = (unsigned)i};
        ck_assert_int_eq(eco_go(many_client, &cs[i]), 0);
    }
    ck_assert_int_eq(eco_loop(), 0);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(cs[i].done, 1);
    free(cs);
}
END_TEST

/* ---- timeouts ---- */

static void *timeouts_body(void *arg)
{
    (void)arg;
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    ck_assert_int_eq(eco_fd_timeout(sv[0], ECO_RD | ECO_WR, 50), 0);
    char b[8];
    long t0 = now_ms();
    ck_assert_int_eq(eco_read(sv[0], b, sizeof b), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    long took = now_ms() - t0;
    ck_assert_int_ge(took, 45);
    ck_assert_int_lt(took, 5000);
    /* The fd is still fine: the next read gets what arrives. */
    ck_assert_int_eq(eco_write(sv[1], "hi", 2), 2);
    ck_assert_int_eq(eco_read(sv[0], b, sizeof b), 2);
    ck_assert(memcmp(b, "hi", 2) == 0);

    /* Writes: fill the buffer until a write times out, drain, write again. */
    static char chunk[65536];
    ssize_t w;
    size_t queued = 0;
    while ((w = eco_write(sv[0], chunk, sizeof chunk)) > 0)
        queued += (size_t)w;
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_uint_gt(queued, 0);
    static char sink[65536];
    while (queued > 0) {
        ssize_t r = eco_read(sv[1], sink, sizeof sink);
        ck_assert_int_gt(r, 0);
        queued -= (size_t)r;
    }
    ck_assert_int_eq(eco_write(sv[0], "ok", 2), 2);

    /* 0: fail at once instead of waiting. */
    ck_assert_int_eq(eco_fd_timeout(sv[1], ECO_RD, 0), 0);
    ck_assert_int_eq(eco_read_full(sv[1], b, 2), 2);
    ck_assert_int_eq(eco_read(sv[1], b, 1), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_fd_timeout(sv[1], 4, 10), -1);
    ck_assert_int_eq(errno, EINVAL);
    eco_close(sv[0]);
    eco_close(sv[1]);
    return NULL;
}

START_TEST(timed_out_read_then_successful_read)
{
    ck_assert_int_eq(eco_go(timeouts_body, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

/* A read already waiting when its fd gets a timeout is bounded from its
 * next wait on.  tw_second is handed readiness after tw_first's read, but
 * tw_first takes the rest of the data before it runs: instead of waiting
 * for ever, its read times out. */
static int tw_fd[2], tw_second_done;

static void *tw_first(void *arg)
{
    (void)arg;
    char c;
    ck_assert_int_eq(eco_read(tw_fd[0], &c, 1), 1); /* hands readiness on */
    ck_assert_int_eq(c, 'x');
    ck_assert_int_eq(eco_fd_timeout(tw_fd[0], ECO_RD, 50), 0);
    ck_assert_int_eq(eco_read(tw_fd[0], &c, 1), 1); /* before tw_second runs */
    ck_assert_int_eq(c, 'y');
    return NULL;
}

static void *tw_second(void *arg)
{
    (void)arg;
    char c;
    long t0 = now_ms();
    ck_assert_int_eq(eco_read(tw_fd[0], &c, 1), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(now_ms() - t0, 49);
    tw_second_done = 1;
    return NULL;
}

static void *tw_writer(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_write(tw_fd[1], "xy", 2), 2);
    return NULL;
}

START_TEST(timeout_set_while_waiting_bounds_the_next_wait)
{
    tw_second_done = 0;
    run_on_pair(tw_fd, tw_first, tw_second, tw_writer);
    ck_assert_int_eq(tw_second_done, 1);
}
END_TEST

/* ---- accept and the fd lock are bounded too ---- */

static int tb_fd[2], tb_done[2];

static void *tb_holder(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_lock(tb_fd[0], ECO_WR), 0);
    char b;
    ck_assert_int_eq(eco_read(tb_done[0], &b, 1), 1); /* until the waiter is done */
    ck_assert_int_eq(eco_fd_unlock(tb_fd[0], ECO_WR), 0);
    return NULL;
}

static void *tb_waiter(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    ck_assert_int_eq(eco_fd_timeout(lfd, ECO_RD, 30), 0);
    long t0 = now_ms();
    ck_assert_int_eq(eco_accept(lfd, NULL, NULL), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(now_ms() - t0, 25);

    ck_assert_int_eq(eco_fd_timeout(tb_fd[0], ECO_WR, 30), 0);
    ck_assert_int_eq(eco_fd_lock(tb_fd[0], ECO_WR), -1); /* held by tb_holder */
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_write(tb_fd[0], "x", 1), -1); /* waits for the holder too */
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_write(tb_done[1], "!", 1), 1);
    return NULL;
}

START_TEST(accept_and_lock_time_out)
{
    int port;
    int lfd = tcp_listener(&port);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, tb_fd), 0);
    ck_assert_int_eq(pipe2(tb_done, O_NONBLOCK), 0);
    ck_assert_int_eq(eco_go(tb_holder, NULL), 0);
    ck_assert_int_eq(eco_go(tb_waiter, (void *)(intptr_t)lfd), 0);
    ck_assert_int_eq(eco_loop(), 0);
    eco_close(lfd);
    eco_close(tb_fd[0]);
    eco_close(tb_fd[1]);
    eco_close(tb_done[0]);
    eco_close(tb_done[1]);
}
END_TEST

/* ---- close wakes every waiter; a reused number starts clean ---- */

static int cl_fd[2], cl_woken, cl_parked;

static void *cl_waiter(void *arg)
{
    char b;
    if (arg == NULL) {
        cl_parked++;
        ck_assert_int_eq(eco_read(cl_fd[0], &b, 1), -1);
    } else {
        /* Waits for the read lock a reader holds. */
        cl_parked++;
        ck_assert_int_eq(eco_fd_lock(cl_fd[0], ECO_RD), -1);
    }
    ck_assert_int_eq(errno, EBADF);
    cl_woken++;
    return NULL;
}

static void *cl_holder(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_lock(cl_fd[0], ECO_RD), 0);
    cl_parked++;
    char b;
    ck_assert_int_eq(eco_read(cl_fd[0], &b, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(eco_fd_unlock(cl_fd[0], ECO_RD), -1); /* close released it */
    ck_assert_int_eq(errno, EPERM);
    cl_woken++;
    return NULL;
}

static void *cl_closer(void *arg)
{
    (void)arg;
    while (cl_parked != 4)
        eco_sleep(0);
    int old = cl_fd[0];
    ck_assert_int_eq(eco_fd_timeout(old, ECO_RD, 10), 0);
    ck_assert_int_eq(eco_close(old), 0);
    char b;
    ck_assert_int_eq(eco_read(old, &b, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    /* The lowest free number comes back: a new fd, no timeout, no waiters. */
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    ck_assert_int_eq(sv[0], old);
    cl_fd[0] = sv[0];
    cl_fd[1] = sv[1];
    return NULL;
}

static void *cl_late_writer(void *arg)
{
    (void)arg;
    eco_sleep(40); /* longer than the old fd's timeout */
    ck_assert_int_eq(eco_write(cl_fd[1], "z", 1), 1);
    return NULL;
}

static void *cl_new_reader(void *arg)
{
    (void)arg;
    while (cl_woken != 4)
        eco_sleep(0);
    ck_assert_int_eq(eco_go(cl_late_writer, NULL), 0);
    char b = 0;
    ck_assert_int_eq(eco_read(cl_fd[0], &b, 1), 1);
    ck_assert_int_eq(b, 'z');
    return NULL;
}

START_TEST(close_wakes_waiters_and_number_starts_clean)
{
    int keep[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, keep), 0);
    cl_fd[0] = keep[0];
    cl_fd[1] = keep[1];
    cl_woken = cl_parked = 0;
    ck_assert_int_eq(eco_go(cl_holder, NULL), 0);
    ck_assert_int_eq(eco_go(cl_waiter, NULL), 0);
    ck_assert_int_eq(eco_go(cl_waiter, NULL), 0);
    ck_assert_int_eq(eco_go(cl_waiter, (void *)1), 0);
    ck_assert_int_eq(eco_go(cl_closer, NULL), 0);
    ck_assert_int_eq(eco_go(cl_new_reader, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(cl_woken, 4);
    eco_close(cl_fd[0]);
    eco_close(cl_fd[1]);
    eco_close(keep[1]);
}
END_TEST

/* ---- bad input ---- */

static int bi_pipe[2];

static void *bi_body(void *arg)
{
    (void)arg;
    char b[4];
    ck_assert_int_eq(eco_read(-1, b, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(eco_write(12345, b, 1), -1);
    ck_assert_int_eq(errno, EBADF);
    ck_assert_int_eq(eco_read(bi_pipe[0], NULL, 1), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(eco_readv(bi_pipe[0], NULL, 1), -1);
    ck_assert_int_eq(errno, EFAULT);
    struct iovec iv = {b, 1};
    ck_assert_int_eq(eco_writev(bi_pipe[1], &iv, -1), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_accept(bi_pipe[0], (struct sockaddr *)b, NULL), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(eco_accept(bi_pipe[0], NULL, NULL), -1);
    ck_assert_int_eq(errno, ENOTSOCK);
    ck_assert_int_eq(eco_fd_lock(bi_pipe[0], 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_fd_unlock(bi_pipe[0], ECO_RD), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_fd_lock(bi_pipe[0], ECO_RD), 0);
    ck_assert_int_eq(eco_fd_lock(bi_pipe[0], ECO_RD), -1);
    ck_assert_int_eq(errno, EDEADLK);
    ck_assert_int_eq(eco_fd_unlock(bi_pipe[0], ECO_RD), 0);
    /* A blocking pipe: the read parks instead of blocking the thread (the
     * writer below could not run otherwise) and the fd is nonblocking now. */
    ck_assert_int_eq(eco_read(bi_pipe[0], b, sizeof b), 3);
    ck_assert(memcmp(b, "abc", 3) == 0);
    ck_assert_int_ne(fcntl(bi_pipe[0], F_GETFL) & O_NONBLOCK, 0);
    return NULL;
}

static void *bi_writer(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_write(bi_pipe[1], "abc", 3), 3);
    return NULL;
}

START_TEST(bad_input_is_refused)
{
    char b[4];
    ck_assert_int_eq(eco_read(0, b, 1), -1); /* main stack */
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_connect(0, NULL, 0), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(pipe(bi_pipe), 0); /* blocking on purpose */
    ck_assert_int_eq(fcntl(bi_pipe[0], F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_eq(eco_go(bi_body, NULL), 0);
    ck_assert_int_eq(eco_go(bi_writer, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    eco_close(bi_pipe[0]);
    eco_close(bi_pipe[1]);
}
END_TEST

START_TEST(no_runtime_is_eperm)
{
    char b[1];
    ck_assert_int_eq(eco_read(0, b, 1), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_fd_timeout(0, ECO_RD, 1), -1);
    ck_assert_int_eq(errno, EPERM);
    /* socket and close need no runtime. */
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_ne(fcntl(fd, F_GETFL) & O_NONBLOCK, 0);
    ck_assert_int_eq(eco_close(fd), 0);
}
END_TEST

/* ---- holding a direction ---- */

static int lk_fd[2], lk_step;

static void *lk_holder(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_lock(lk_fd[0], ECO_WR), 0);
    ck_assert_int_eq(eco_write(lk_fd[0], "AAA", 3), 3);
    lk_step = 1;
    eco_sleep(0); /* let the other writer try to cut in */
    eco_sleep(0);
    ck_assert_int_eq(eco_write(lk_fd[0], "aaa", 3), 3);
    ck_assert_int_eq(eco_fd_unlock(lk_fd[0], ECO_WR), 0);
    return NULL;
}

static void *lk_other(void *arg)
{
    (void)arg;
    while (lk_step != 1)
        eco_sleep(0);
    ck_assert_int_eq(eco_write(lk_fd[0], "BBB", 3), 3); /* waits for the unlock */
    char got[10] = {0};
    ck_assert_int_eq(eco_read_full(lk_fd[1], got, 9), 9);
    ck_assert_str_eq(got, "AAAaaaBBB");
    return NULL;
}

START_TEST(held_direction_keeps_others_out)
{
    lk_step = 0;
    run_on_pair(lk_fd, lk_holder, lk_other, NULL);
}
END_TEST

/* A coroutine that returns still holding both directions hands them to
 * the next in line: the waiter gets them, well before its timeout. */
static int rl_fd[2];

static void *rl_forgetful(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_lock(rl_fd[0], ECO_RD | ECO_WR), 0);
    eco_sleep(0); /* rl_waiter queues behind us meanwhile */
    return NULL;  /* without eco_fd_unlock */
}

static void *rl_waiter(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_timeout(rl_fd[0], ECO_RD | ECO_WR, 5000), 0);
    long t0 = now_ms();
    ck_assert_int_eq(eco_fd_lock(rl_fd[0], ECO_RD | ECO_WR), 0);
    ck_assert_int_lt(now_ms() - t0, 4000);
    ck_assert_int_eq(eco_write(rl_fd[0], "ok", 2), 2);
    ck_assert_int_eq(eco_fd_unlock(rl_fd[0], ECO_RD | ECO_WR), 0);
    /* Nobody holds it now: another lock is immediate. */
    ck_assert_int_eq(eco_fd_lock(rl_fd[0], ECO_WR), 0);
    ck_assert_int_eq(eco_fd_unlock(rl_fd[0], ECO_WR), 0);
    char got[3] = {0};
    ck_assert_int_eq(eco_read_full(rl_fd[1], got, 2), 2);
    ck_assert_str_eq(got, "ok");
    return NULL;
}

START_TEST(returning_releases_held_directions)
{
    run_on_pair(rl_fd, rl_forgetful, rl_waiter, NULL);
}
END_TEST

/* ---- fds past the runtime's inline chunk table ----
 * Fds from 2048 on have their chunk pointers in a table of their own, which
 * the first such fd creates by moving the runtime's inline ones: a call
 * parked on a low fd meanwhile must still be woken, a low fd keep its
 * timeout, and a direction held on a high fd still be released when its
 * holder returns. */

static int hf_lo[2], hf_hi[2], hf_low_done, hf_high_done, hf_locked;

/* A copy of fd at a number of at least min; the original is closed. */
static int move_up(int fd, int min)
{
    int high = fcntl(fd, F_DUPFD_CLOEXEC, min);
    ck_assert_int_ge(high, min);
    ck_assert_int_eq(close(fd), 0);
    return high;
}

static void *hf_low_reader(void *arg)
{
    (void)arg;
    char b[4];
    ck_assert_int_eq(eco_read(hf_lo[0], b, sizeof b), 2); /* parks first */
    ck_assert_int_eq(memcmp(b, "ok", 2), 0);
    hf_low_done = 1;
    return NULL;
}

static void *hf_high_user(void *arg)
{
    (void)arg;
    char b[4];
    ck_assert_int_eq(eco_write(hf_hi[1], "hi", 2), 2);
    ck_assert_int_eq(eco_read(hf_hi[0], b, sizeof b), 2);
    ck_assert_int_eq(memcmp(b, "hi", 2), 0);
    ck_assert_int_eq(eco_fd_lock(hf_hi[0], ECO_RD), 0);
    eco_sleep(0); /* hf_locker queues for the direction */
    ck_assert_int_eq(eco_write(hf_lo[1], "ok", 2), 2);
    /* A low fd's settings from before the move are still there. */
    ck_assert_int_eq(eco_read(hf_lo[1], b, sizeof b), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    hf_high_done = 1;
    return NULL; /* still holding hf_hi[0] for reading */
}

static void *hf_locker(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_fd_lock(hf_hi[0], ECO_RD), 0);
    ck_assert_int_eq(hf_high_done, 1);
    hf_locked = 1;
    ck_assert_int_eq(eco_fd_unlock(hf_hi[0], ECO_RD), 0);
    return NULL;
}

START_TEST(fds_past_the_inline_table)
{
    need_fds(3100);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, hf_lo), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, hf_hi), 0);
    hf_hi[0] = move_up(hf_hi[0], 3000);
    hf_hi[1] = move_up(hf_hi[1], 3050);
    hf_low_done = hf_high_done = hf_locked = 0;
    ck_assert_int_eq(eco_fd_timeout(hf_lo[1], ECO_RD, 50), 0);
    ck_assert_int_eq(eco_go(hf_low_reader, NULL), 0);
    ck_assert_int_eq(eco_go(hf_high_user, NULL), 0);
    ck_assert_int_eq(eco_go(hf_locker, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(hf_low_done, 1);
    ck_assert_int_eq(hf_locked, 1);
    for (int i = 0; i < 2; i++) {
        ck_assert_int_eq(eco_close(hf_lo[i]), 0);
        ck_assert_int_eq(eco_close(hf_hi[i]), 0);
    }
}
END_TEST

/* ---- shared backend connections with pipelining ----
 * A plain-thread server answers frames [len u32][co u32][seq u32][fill]
 * with a reply of another, variable length.  200 coroutines share 2
 * connections; each sends 100 requests in pipelined batches and checks that
 * every reply is its own. */

#define SB_COROS 200
#define SB_REQS 100
#define SB_BATCH 10

static size_t reply_len(uint32_t co, uint32_t seq)
{
    return 12 + (co * 7 + seq * 13) % 300;
}

static int blocking_read_full(int fd, void *buf, size_t n)
{
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(fd, (char *)buf + got, n - got);
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return 0;
}

static void *sb_server(void *arg)
{
    int fd = (int)(intptr_t)arg;
    unsigned char in[2048], out[2048];
    for (;;) {
        uint32_t len;
        if (blocking_read_full(fd, &len, 4) < 0 || len < 12 || len > sizeof in)
            break;
        memcpy(in, &len, 4);
        if (blocking_read_full(fd, in + 4, len - 4) < 0)
            break;
        uint32_t co, seq;
        memcpy(&co, in + 4, 4);
        memcpy(&seq, in + 8, 4);
        uint32_t rl = (uint32_t)reply_len(co, seq);
        memcpy(out, &rl, 4);
        memcpy(out + 4, &co, 4);
        memcpy(out + 8, &seq, 4);
        for (uint32_t i = 12; i < rl; i++)
            out[i] = pattern(i, co ^ seq);
        size_t off = 0;
        while (off < rl) {
            ssize_t w = write(fd, out + off, rl - off);
            if (w <= 0)
                return NULL;
            off += (size_t)w;
        }
    }
    close(fd);
    return NULL;
}

static int sb_conn[2];
static int sb_ok;

static void *sb_client(void *arg)
{
    uint32_t me = (uint32_t)(intptr_t)arg;
    int fd = sb_conn[me % 2];
    unsigned char req[SB_BATCH * 64], rep[400];
    for (uint32_t base = 0; base < SB_REQS; base += SB_BATCH) {
        size_t off = 0;
        for (uint32_t k = 0; k < SB_BATCH; k++) {
            uint32_t seq = base + k;
            uint32_t len = 12 + (me + seq) % 40;
            memcpy(req + off, &len, 4);
            memcpy(req + off + 4, &me, 4);
            memcpy(req + off + 8, &seq, 4);
            memset(req + off + 12, 'r', len - 12);
            off += len;
        }
        ck_assert_int_eq(eco_fd_lock(fd, ECO_WR), 0);
        ck_assert_int_eq(eco_write_full(fd, req, off), (ssize_t)off);
        ck_assert_int_eq(eco_fd_unlock(fd, ECO_WR), 0);
        /* Join the read side in write order, then take our replies. */
        ck_assert_int_eq(eco_fd_lock(fd, ECO_RD), 0);
        for (uint32_t k = 0; k < SB_BATCH; k++) {
            uint32_t rl, co, seq;
            ck_assert_int_eq(eco_read_full(fd, rep, 12), 12);
            memcpy(&rl, rep, 4);
            memcpy(&co, rep + 4, 4);
            memcpy(&seq, rep + 8, 4);
            ck_assert_uint_eq(co, me);
            ck_assert_uint_eq(seq, base + k);
            ck_assert_uint_eq(rl, reply_len(me, base + k));
            ck_assert_int_eq(eco_read_full(fd, rep + 12, rl - 12), (ssize_t)(rl - 12));
            uint32_t bad = 0;
            for (uint32_t i = 12; i < rl; i++)
                bad += rep[i] != pattern(i, co ^ seq);
            ck_assert_uint_eq(bad, 0);
        }
        ck_assert_int_eq(eco_fd_unlock(fd, ECO_RD), 0);
    }
    sb_ok++;
    return NULL;
}

START_TEST(shared_backend_pipelining)
{
    pthread_t th[2];
    int peer[2];
    for (int i = 0; i < 2; i++) {
        int sv[2];
        ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
        sb_conn[i] = sv[0]; /* blocking: libeco makes its end nonblocking */
        peer[i] = sv[1];
        ck_assert_int_eq(pthread_create(&th[i], NULL, sb_server, (void *)(intptr_t)sv[1]), 0);
    }
    sb_ok = 0;
    int n = scale(SB_COROS);
    for (int i = 0; i < n; i++)
        ck_assert_int_eq(eco_go(sb_client, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(sb_ok, n);
    for (int i = 0; i < 2; i++) {
        shutdown(sb_conn[i], SHUT_WR); /* the server thread sees EOF */
        pthread_join(th[i], NULL);
        eco_close(sb_conn[i]);
    }
    (void)peer;
}
END_TEST

/* ---- a level-triggered backend (poll) works the same ---- */

static void lt_up(void)
{
    struct event_config *cfg = event_config_new();
    event_config_avoid_method(cfg, "epoll");
    struct event_base *base = event_base_new_with_config(cfg);
    event_config_free(cfg);
    ck_assert_ptr_nonnull(base);
    ck_assert_int_eq(event_base_get_features(base) & EV_FEATURE_ET, 0);
    ck_assert_int_eq(eco_setup(base), 0);
}

static void lt_down(void)
{
    struct event_base *base = eco_base();
    eco_teardown();
    event_base_free(base);
}

START_TEST(level_triggered_backend)
{
    fifo_readers_body();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
    struct bulk w0 = {sv[0], 5, 0}, r1 = {sv[1], 5, 0}, w1 = {sv[1], 6, 0}, r0 = {sv[0], 6, 0};
    ck_assert_int_eq(eco_go(bulk_writer, &w0), 0);
    ck_assert_int_eq(eco_go(bulk_writer, &w1), 0);
    ck_assert_int_eq(eco_go(bulk_reader, &r0), 0);
    ck_assert_int_eq(eco_go(bulk_reader, &r1), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_uint_eq(r0.moved, BULK);
    ck_assert_uint_eq(r1.moved, BULK);
    eco_close(sv[0]);
    eco_close(sv[1]);
    ck_assert_int_eq(eco_go(timeouts_body, NULL), 0);
    ck_assert_int_eq(eco_loop(), 0);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* only the pipe test could raise it */
    Suite *s = suite_create("socket");
    TCase *tc = rt_tcase("socket");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, tcp_echo_round_trips);
    tcase_add_test(tc, full_duplex_socketpair);
    tcase_add_test(tc, pipe_bulk);
    tcase_add_test(tc, half_close_wakes_reader_with_eof);
    tcase_add_test(tc, datagrams_and_vectors);
    tcase_add_test(tc, data_and_eof_together_after_a_wait);
    tcase_add_test(tc, data_then_reset_after_a_wait);
    tcase_add_test(tc, peer_reset_during_read);
    tcase_add_test(tc, peer_reset_during_write);
    tcase_add_test(tc, connect_to_closed_port_is_refused);
    tcase_add_test(tc, acceptors_share_a_listener_in_order);
    tcase_add_test(tc, readers_of_one_fd_are_served_in_order);
    tcase_add_test(tc, thousand_connections_echo);
    tcase_add_test(tc, timed_out_read_then_successful_read);
    tcase_add_test(tc, timeout_set_while_waiting_bounds_the_next_wait);
    tcase_add_test(tc, accept_and_lock_time_out);
    tcase_add_test(tc, close_wakes_waiters_and_number_starts_clean);
    tcase_add_test(tc, bad_input_is_refused);
    tcase_add_test(tc, held_direction_keeps_others_out);
    tcase_add_test(tc, returning_releases_held_directions);
    tcase_add_test(tc, fds_past_the_inline_table);
    tcase_add_test(tc, shared_backend_pipelining);
    suite_add_tcase(s, tc);

    TCase *bare = tcase_create("no runtime");
    tcase_add_test(bare, no_runtime_is_eperm);
    suite_add_tcase(s, bare);

    TCase *lt = tcase_create("level-triggered");
    tcase_add_checked_fixture(lt, lt_up, lt_down);
    tcase_set_timeout(lt, 120);
    tcase_add_test(lt, level_triggered_backend);
    suite_add_tcase(s, lt);
    return run_suite(s);
}
