/* test_wait.c - the one way to wait: cancellation of every kind of wait,
 * deadlines, bounds that never end early, eco_dump and eco_foreach, the
 * hog watchdog, teardown with parked coroutines, and deadlock detection. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

/* What a waiter saw. */
struct probe {
    int fd;
    eco_chan_t *ch;
    eco_t *other;
    long arg;
    long ret;
    int err;
    long took_ms;
};

#define PROBE_DONE(p, r)                                                                          \
    do {                                                                                          \
        (p)->ret = (long)(r);                                                                     \
        (p)->err = (p)->ret < 0 ? errno : 0;                                                      \
    } while (0)

/* Runs fn(p) until it parks, cancels it from the thread's own stack, and
 * joins it: the call it was parked in must fail with ECANCELED at once. */
static void cancel_parked(eco_fn fn, struct probe *p)
{
    p->ret = -2;
    eco_t *co = eco_create(fn, p, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_state(co), ECO_PENDING); /* parked */
    ck_assert_int_eq(p->ret, -2);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(p->ret, -1);
    ck_assert_int_eq(p->err, ECANCELED);
    ck_assert_int_lt(ms_since(t0), slack(1000));
}

/* ---- cancel each kind of wait ---- */

static void *sleeper(void *arg)
{
    struct probe *p = arg;
    PROBE_DONE(p, eco_sleep(p->arg > 0 ? p->arg : 100000));
    return NULL;
}

START_TEST(cancel_sleep)
{
    struct probe p = {0};
    cancel_parked(sleeper, &p);
}
END_TEST

static void *poller(void *arg)
{
    struct probe *p = arg;
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    PROBE_DONE(p, eco_poll(&pfd, 1, -1));
    return NULL;
}

START_TEST(cancel_poll)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    eco_set_pool_limit(0); /* no stack pool, so no trim timer in the base */
    struct probe p = {.fd = fds[0]};
    cancel_parked(poller, &p);
    /* Its event left the base: data now wakes nobody, and the loop has
     * nothing left to run. */
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ck_assert_int_eq(event_base_loop(eco_base(), EVLOOP_NONBLOCK), 1);
    close(fds[0]);
    close(fds[1]);
}
END_TEST

static void *reader(void *arg)
{
    struct probe *p = arg;
    char b[16];
    ssize_t n = eco_read(p->fd, b, sizeof b);
    PROBE_DONE(p, n);
    if (n > 0)
        p->arg = b[0];
    return NULL;
}

START_TEST(cancel_read_serves_next_reader)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct probe second = {.fd = sv[0], .ret = -2};
    struct probe first = {.fd = sv[0]};
    eco_t *b = eco_create(reader, &second, NULL);
    cancel_parked(reader, &first); /* first queued, cancelled */
    ck_assert_int_eq(eco_resume(b), 0); /* second parks: now alone */
    ck_assert_int_eq(write(sv[1], "z", 1), 1);
    ck_assert_int_eq(eco_join(b, NULL), 0);
    ck_assert_int_eq(second.ret, 1);
    ck_assert_int_eq(second.arg, 'z');
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

/* Two readers queued, the head cancelled while parked: the other one gets
 * the data, the cancelled one none. */
START_TEST(cancel_head_reader_keeps_order)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct probe p1 = {.fd = sv[0], .ret = -2}, p2 = {.fd = sv[0], .ret = -2};
    eco_t *a = eco_create(reader, &p1, NULL);
    eco_t *b = eco_create(reader, &p2, NULL);
    eco_resume(a);
    eco_resume(b);
    ck_assert_int_eq(eco_cancel(a), 0);
    ck_assert_int_eq(write(sv[1], "q", 1), 1);
    ck_assert_int_eq(eco_join(a, NULL), 0);
    ck_assert_int_eq(eco_join(b, NULL), 0);
    ck_assert_int_eq(p1.ret, -1);
    ck_assert_int_eq(p1.err, ECANCELED);
    ck_assert_int_eq(p2.ret, 1);
    ck_assert_int_eq(p2.arg, 'q');
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

static void *filler(void *arg)
{
    struct probe *p = arg;
    static char chunk[65536];
    ssize_t n;
    long total = 0;
    while ((n = eco_write(p->fd, chunk, sizeof chunk)) > 0)
        total += n;
    p->arg = total;
    PROBE_DONE(p, n);
    return NULL;
}

static void *one_byte(void *arg)
{
    struct probe *p = arg;
    PROBE_DONE(p, eco_write(p->fd, "x", 1));
    return NULL;
}

START_TEST(cancel_write)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct probe p = {.fd = sv[0]};
    cancel_parked(filler, &p);
    ck_assert_int_gt(p.arg, 0);
    /* The fd still works for the next writer once there is room. */
    char drain[65536];
    ck_assert_int_eq(fcntl(sv[1], F_SETFL, O_NONBLOCK), 0);
    while (read(sv[1], drain, sizeof drain) > 0)
        ;
    struct probe q = {.fd = sv[0], .ret = -2};
    eco_t *w = eco_create(one_byte, &q, NULL);
    ck_assert_int_eq(eco_join(w, NULL), -1); /* never started: nothing runs it */
    ck_assert_int_eq(errno, EDEADLK);
    ck_assert_int_eq(eco_resume(w), 0);
    ck_assert_int_eq(eco_join(w, NULL), 0);
    ck_assert_int_eq(q.ret, 1);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

static int tcp_listener(int *port, int backlog)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, backlog), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

static void *acceptor(void *arg)
{
    struct probe *p = arg;
    int c = eco_accept(p->fd, NULL, NULL);
    PROBE_DONE(p, c);
    if (c >= 0)
        eco_close(c);
    return NULL;
}

static int plain_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    return fd;
}

START_TEST(cancel_accept_serves_next_acceptor)
{
    int port;
    int lfd = tcp_listener(&port, 16);
    struct probe first = {.fd = lfd};
    cancel_parked(acceptor, &first);
    struct probe second = {.fd = lfd, .ret = -2};
    eco_t *b = eco_create(acceptor, &second, NULL);
    eco_resume(b);
    int c = plain_connect(port);
    ck_assert_int_eq(eco_join(b, NULL), 0);
    ck_assert_int_ge(second.ret, 0);
    close(c);
    eco_close(lfd);
}
END_TEST

static void *connector(void *arg)
{
    struct probe *p = arg;
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)p->arg),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    p->fd = fd;
    PROBE_DONE(p, eco_connect(fd, (struct sockaddr *)&sa, sizeof sa));
    return NULL;
}

/* A listener whose accept queue is full drops new SYNs: a connect to it
 * stays in progress. */
static int full_listener(int *port, int *held)
{
    int lfd = tcp_listener(port, 0);
    held[0] = plain_connect(*port);
    held[1] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)*port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    connect(held[1], (struct sockaddr *)&sa, sizeof sa);
    return lfd;
}

START_TEST(cancel_connect)
{
    int port, held[2];
    int lfd = full_listener(&port, held);
    struct probe p = {.arg = port};
    cancel_parked(connector, &p);
    eco_close(p.fd);
    close(held[0]);
    close(held[1]);
    eco_close(lfd);
}
END_TEST

static void *locker(void *arg)
{
    struct probe *p = arg;
    int r = eco_fd_lock(p->fd, ECO_WR);
    PROBE_DONE(p, r);
    if (r == 0) {
        p->arg = 1;
        eco_sleep(1);
        eco_fd_unlock(p->fd, ECO_WR);
    }
    return NULL;
}

static void *holder(void *arg)
{
    struct probe *p = arg;
    ck_assert_int_eq(eco_fd_lock(p->fd, ECO_WR), 0);
    eco_sleep(30);
    ck_assert_int_eq(eco_fd_unlock(p->fd, ECO_WR), 0);
    return NULL;
}

START_TEST(cancel_lock_passes_to_next)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    struct probe h = {.fd = sv[0]}, b = {.fd = sv[0], .ret = -2}, c = {.fd = sv[0], .ret = -2};
    eco_t *hc = eco_create(holder, &h, NULL);
    eco_t *bc = eco_create(locker, &b, NULL);
    eco_t *cc = eco_create(locker, &c, NULL);
    eco_resume(hc);
    eco_resume(bc);
    eco_resume(cc);
    ck_assert_int_eq(eco_cancel(bc), 0);
    ck_assert_int_eq(eco_join(hc, NULL), 0);
    ck_assert_int_eq(eco_join(bc, NULL), 0);
    ck_assert_int_eq(eco_join(cc, NULL), 0);
    ck_assert_int_eq(b.ret, -1);
    ck_assert_int_eq(b.err, ECANCELED);
    ck_assert_int_eq(b.arg, 0);
    ck_assert_int_eq(c.ret, 0);
    ck_assert_int_eq(c.arg, 1);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

static void *chan_sender(void *arg)
{
    struct probe *p = arg;
    long v = 42;
    PROBE_DONE(p, eco_chan_send(p->ch, &v));
    return NULL;
}

static void *chan_receiver(void *arg)
{
    struct probe *p = arg;
    long v = 0;
    int r = eco_chan_recv(p->ch, &v);
    PROBE_DONE(p, r);
    p->arg = v;
    return NULL;
}

START_TEST(cancel_chan_send_delivers_nothing)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 0);
    struct probe p = {.ch = ch};
    cancel_parked(chan_sender, &p);
    long v;
    ck_assert_int_eq(eco_chan_tryrecv(ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

START_TEST(cancel_chan_recv_takes_nothing)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 1);
    struct probe p = {.ch = ch};
    cancel_parked(chan_receiver, &p);
    long v = 7, w = 0;
    ck_assert_int_eq(eco_chan_trysend(ch, &v), 0);
    ck_assert_int_eq(eco_chan_tryrecv(ch, &w), 1);
    ck_assert_int_eq(w, 7);
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

static void *selector(void *arg)
{
    struct probe *p = arg;
    eco_chan_t **chs = (eco_chan_t **)p->other;
    long v = 5, in = 0;
    struct eco_chan_case cases[3] = {
        {.ch = chs[0], .op = ECO_CHAN_RECV, .elem = &in},
        {.ch = chs[1], .op = ECO_CHAN_SEND, .elem = &v},
        {.ch = chs[0], .op = ECO_CHAN_RECV, .elem = &in},
    };
    PROBE_DONE(p, eco_chan_select(cases, 3, -1));
    return NULL;
}

START_TEST(cancel_select_leaves_channels_free)
{
    eco_chan_t *chs[2] = {eco_chan_new(sizeof(long), 0), eco_chan_new(sizeof(long), 0)};
    struct probe p = {.other = (eco_t *)chs};
    cancel_parked(selector, &p);
    ck_assert_int_eq(eco_chan_free(chs[0]), 0); /* no record left behind */
    ck_assert_int_eq(eco_chan_free(chs[1]), 0);
}
END_TEST

static void *joiner(void *arg)
{
    struct probe *p = arg;
    PROBE_DONE(p, eco_join(p->other, NULL));
    return NULL;
}

START_TEST(cancel_join_leaves_target_joinable)
{
    struct probe s = {.ch = eco_chan_new(sizeof(long), 0)};
    eco_t *target = eco_create(chan_receiver, &s, NULL);
    eco_resume(target); /* parked until we send */
    struct probe p = {.other = target};
    cancel_parked(joiner, &p);
    long v = 8;
    ck_assert_int_eq(eco_chan_trysend(s.ch, &v), 0);
    ck_assert_int_eq(eco_join(target, NULL), 0); /* still joinable */
    ck_assert_int_eq(s.ret, 1);
    ck_assert_int_eq(s.arg, 8);
    eco_chan_free(s.ch);
}
END_TEST

/* ---- where a cancel may come from ---- */

static void *canceller(void *arg)
{
    ck_assert_int_eq(eco_cancel(arg), 0);
    return NULL;
}

static void cancel_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    ck_assert_int_eq(eco_cancel(arg), 0);
}

START_TEST(cancel_from_coroutine_and_callback)
{
    struct probe a = {0}, b = {0};
    eco_t *ca = eco_create(sleeper, &a, NULL);
    eco_t *cb = eco_create(sleeper, &b, NULL);
    eco_resume(ca);
    eco_resume(cb);
    ck_assert_int_eq(eco_go(canceller, ca), 0);
    struct event *ev = evtimer_new(eco_base(), cancel_cb, cb);
    struct timeval tv = {0, 10000};
    evtimer_add(ev, &tv);
    ck_assert_int_eq(eco_join(ca, NULL), 0);
    ck_assert_int_eq(eco_join(cb, NULL), 0);
    event_free(ev);
    ck_assert_int_eq(a.err, ECANCELED);
    ck_assert_int_eq(b.err, ECANCELED);
}
END_TEST

struct remote_cancel {
    eco_t *target;
    int go;
    pthread_mutex_t m;
    pthread_cond_t c;
};

static void *remote_thread(void *arg)
{
    struct remote_cancel *rc = arg;
    pthread_mutex_lock(&rc->m);
    while (!rc->go)
        pthread_cond_wait(&rc->c, &rc->m);
    pthread_mutex_unlock(&rc->m);
    ck_assert_int_eq(eco_cancel(rc->target), 0);
    return NULL;
}

static int busy_stop;

static void *busy(void *arg)
{
    (void)arg;
    while (!busy_stop)
        eco_yield(); /* keeps the loop busy with the run queue */
    return NULL;
}

START_TEST(cancel_from_another_thread_while_busy)
{
    struct probe p = {0};
    eco_t *co = eco_create(sleeper, &p, NULL);
    eco_resume(co);
    busy_stop = 0;
    eco_go(busy, NULL);
    eco_go(busy, NULL);
    struct remote_cancel rc = {.target = co};
    pthread_mutex_init(&rc.m, NULL);
    pthread_cond_init(&rc.c, NULL);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, remote_thread, &rc), 0);
    pthread_mutex_lock(&rc.m);
    rc.go = 1;
    pthread_cond_signal(&rc.c);
    pthread_mutex_unlock(&rc.m);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_join(co, NULL), 0);
    busy_stop = 1;
    ck_assert_int_eq(eco_loop(), 0);
    pthread_join(t, NULL);
    ck_assert_int_eq(p.err, ECANCELED);
    ck_assert_int_lt(ms_since(t0), slack(2000));
}
END_TEST

/* ---- states: before the first park, after DONE, sticky ---- */

START_TEST(cancel_before_first_park_and_after_done)
{
    struct probe p = {.ret = -2};
    eco_t *co = eco_create(sleeper, &p, NULL);
    ck_assert_int_eq(eco_cancel(co), 0); /* INIT */
    ck_assert_int_eq(eco_resume(co), 0); /* fails at once, returns */
    ck_assert_int_eq(eco_state(co), ECO_DONE);
    ck_assert_int_eq(p.err, ECANCELED);
    ck_assert_int_eq(eco_cancel(co), 0); /* DONE: not an error */
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(eco_cancel(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

static int sticky_fd[2];
static eco_chan_t *sticky_ch;

static void *sticky_body(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_cancel(eco_self()), 0); /* self: running, not an error */
    char b;
    /* Data is there, an element is buffered: blocking calls still fail. */
    ck_assert_int_eq(eco_read(sticky_fd[0], &b, 1), -1);
    ck_assert_int_eq(errno, ECANCELED);
    long v;
    ck_assert_int_eq(eco_chan_recv(sticky_ch, &v), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(eco_sleep(0), -1);
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_int_eq(eco_fd_lock(sticky_fd[0], ECO_RD), -1);
    ck_assert_int_eq(errno, ECANCELED);
    /* Calls that never wait still work. */
    ck_assert_int_eq(eco_chan_tryrecv(sticky_ch, &v), 1);
    ck_assert_int_eq(eco_uncancel(), 0);
    ck_assert_int_eq(eco_read(sticky_fd[0], &b, 1), 1);
    ck_assert_int_eq(eco_sleep(1), 0);
    return NULL;
}

START_TEST(cancel_is_sticky_until_uncancel)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sticky_fd), 0);
    sticky_ch = eco_chan_new(sizeof(long), 4);
    long v = 1;
    eco_chan_trysend(sticky_ch, &v);
    ck_assert_int_eq(write(sticky_fd[1], "x", 1), 1);
    eco_go(sticky_body, NULL);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(eco_uncancel(), -1); /* not in a coroutine */
    ck_assert_int_eq(errno, EPERM);
    eco_chan_free(sticky_ch);
    eco_close(sticky_fd[0]);
    close(sticky_fd[1]);
}
END_TEST

/* A wait that completed before the cancel keeps its result: the receiver
 * has been handed the element (and woken) when its sender cancels it. */
static void *send_then_cancel(void *arg)
{
    struct probe *p = arg;
    long v = 99;
    ck_assert_int_eq(eco_chan_send(p->ch, &v), 0);
    ck_assert_int_eq(eco_cancel(p->other), 0);
    return NULL;
}

static void *recv_twice(void *arg)
{
    struct probe *p = arg;
    long v = 0;
    ck_assert_int_eq(eco_chan_recv(p->ch, &v), 1);
    p->arg = v;
    PROBE_DONE(p, eco_chan_recv(p->ch, &v));
    return NULL;
}

START_TEST(cancel_after_completion_loses_nothing)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 0);
    struct probe r = {.ch = ch};
    eco_t *rc = eco_create(recv_twice, &r, NULL);
    eco_resume(rc);
    struct probe s = {.ch = ch, .other = rc};
    eco_go(send_then_cancel, &s);
    ck_assert_int_eq(eco_join(rc, NULL), 0);
    ck_assert_int_eq(r.arg, 99);         /* the element arrived */
    ck_assert_int_eq(r.err, ECANCELED);  /* the next call saw the cancel */
    eco_chan_free(ch);
}
END_TEST

/* ---- deadlines ---- */

static void *deadline_sleeper(void *arg)
{
    struct probe *p = arg;
    int64_t t0 = now_ns(); /* before the deadline is set: it counts from then on */
    ck_assert_int_eq(eco_set_deadline(eco_self(), p->arg), 0);
    PROBE_DONE(p, eco_sleep(100000));
    p->took_ms = (long)(now_ns() - t0); /* ns */
    /* Past it, every blocking call fails at once. */
    ck_assert_int_eq(eco_sleep(1), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_set_deadline(eco_self(), -1), 0);
    ck_assert_int_eq(eco_sleep(1), 0);
    return NULL;
}

START_TEST(deadline_alone)
{
    struct probe p = {.arg = 50};
    eco_go(deadline_sleeper, &p);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(p.ret, -1);
    ck_assert_int_eq(p.err, ETIMEDOUT);
    ck_assert_int_ge(p.took_ms, 50L * 1000000);
    ck_assert_int_lt(p.took_ms, slack(1000) * 1000000);
}
END_TEST

static void *deadline_reader(void *arg)
{
    struct probe *p = arg; /* arg: the deadline */
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_set_deadline(eco_self(), p->arg), 0);
    char b;
    PROBE_DONE(p, eco_read(p->fd, &b, 1));
    p->took_ms = ms_since(t0);
    return NULL;
}

START_TEST(deadline_with_fd_timeouts)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    /* A shorter fd timeout wins. */
    ck_assert_int_eq(eco_fd_timeout(sv[0], ECO_RD, 30), 0);
    struct probe a = {.fd = sv[0], .arg = 5000};
    eco_go(deadline_reader, &a);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(a.err, ETIMEDOUT);
    ck_assert_int_ge(a.took_ms, 30);
    ck_assert_int_lt(a.took_ms, slack(2000));
    /* A longer one loses to the deadline. */
    ck_assert_int_eq(eco_fd_timeout(sv[0], ECO_RD, 5000), 0);
    struct probe b = {.fd = sv[0], .arg = 40};
    eco_go(deadline_reader, &b);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(b.err, ETIMEDOUT);
    ck_assert_int_ge(b.took_ms, 40);
    ck_assert_int_lt(b.took_ms, slack(2000));
    /* The fd still works. */
    ck_assert_int_eq(write(sv[1], "k", 1), 1);
    struct probe c = {.fd = sv[0], .arg = 5000};
    eco_go(deadline_reader, &c);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(c.ret, 1);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

static void *spinner(void *arg)
{
    struct probe *p = arg;
    ck_assert_int_eq(eco_set_deadline(eco_self(), 5), 0);
    int64_t t0 = now_ns();
    while (ms_since(t0) < 20)
        ; /* never blocks: the deadline does nothing */
    char b[4];
    ck_assert_int_eq(eco_chan_tryrecv(p->ch, b), -1); /* never waits: EAGAIN */
    ck_assert_int_eq(errno, EAGAIN);
    p->ret = 1;
    return NULL;
}

START_TEST(deadline_without_parking_has_no_effect)
{
    struct probe p = {.ch = eco_chan_new(4, 1)};
    eco_go(spinner, &p);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(p.ret, 1);
    eco_chan_free(p.ch);
}
END_TEST

START_TEST(deadline_set_while_parked)
{
    struct probe p = {.arg = 100000};
    eco_t *co = eco_create(sleeper, &p, NULL);
    eco_resume(co);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_set_deadline(co, 30), 0); /* from t0 or later */
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(p.err, ETIMEDOUT);
    ck_assert_int_ge(ms_since(t0), 30);
    /* Cleared while parked: the sleep's own bound decides again. */
    struct probe q = {.arg = 60};
    co = eco_create(sleeper, &q, NULL);
    eco_resume(co);
    ck_assert_int_eq(eco_set_deadline(co, 10), 0);
    ck_assert_int_eq(eco_set_deadline(co, -1), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(q.ret, 0);
    /* Sleeping less than the deadline is not cut short. */
    struct probe r = {.arg = 10};
    co = eco_create(sleeper, &r, NULL);
    ck_assert_int_eq(eco_set_deadline(co, 5000), 0);
    eco_resume(co);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(r.ret, 0);
    ck_assert_int_eq(eco_set_deadline(NULL, 1), -1);
    ck_assert_int_eq(errno, EINVAL);
}
END_TEST

/* ---- bounds never end early ---- */

static void *early_checks(void *arg)
{
    struct probe *p = arg;
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    eco_chan_t *ch = eco_chan_new(1, 0);
    long worst = 1L << 40; /* smallest margin seen, ns */
    /* Many phases of the millisecond: each bound of 1 or 2 ms must have
     * fully passed when its call returns. */
    for (int i = 0; i < p->arg; i++) {
        long ms = 1 + i % 2;
        int64_t t0 = now_ns();
        ck_assert_int_eq(eco_sleep(ms), 0);
        int64_t d = now_ns() - t0 - ms * 1000000;
        worst = d < worst ? d : worst;
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        t0 = now_ns();
        ck_assert_int_eq(eco_poll(&pfd, 1, ms), 0);
        d = now_ns() - t0 - ms * 1000000;
        worst = d < worst ? d : worst;
        char c;
        t0 = now_ns();
        ck_assert_int_eq(eco_chan_recv_timeout(ch, &c, ms), -1);
        ck_assert_int_eq(errno, ETIMEDOUT);
        d = now_ns() - t0 - ms * 1000000;
        worst = d < worst ? d : worst;
        /* A spin of a fraction of a millisecond shifts the phase. */
        int64_t s = now_ns();
        while (now_ns() - s < 137000)
            ;
    }
    p->took_ms = worst;
    close(fds[0]);
    close(fds[1]);
    eco_chan_free(ch);
    return NULL;
}

START_TEST(bounds_never_end_early)
{
    struct probe p = {.arg = getenv("ECO_TEST_SLOW") ? 20 : 150};
    eco_go(early_checks, &p);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_msg(p.took_ms >= 0, "a bound ended %ld ns early", -p.took_ms);
}
END_TEST

static void *thread_recv_timeout(void *arg)
{
    eco_chan_t *ch = arg;
    long worst = 1L << 40;
    for (int i = 0; i < 60; i++) {
        char c;
        int64_t t0 = now_ns();
        ck_assert_int_eq(eco_chan_recv_timeout(ch, &c, 1 + i % 3), -1);
        int64_t d = now_ns() - t0 - (1 + i % 3) * 1000000;
        worst = d < worst ? d : worst;
    }
    return (void *)(intptr_t)(worst >= 0);
}

START_TEST(plain_thread_bounds_never_end_early)
{
    eco_chan_t *ch = eco_chan_new(1, 0);
    pthread_t t;
    void *ok;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_recv_timeout, ch), 0);
    pthread_join(t, &ok);
    ck_assert_ptr_eq(ok, (void *)1);
    eco_chan_free(ch);
}
END_TEST

/* A whole-buffer read that waits several times: its fd timeout bounds the
 * whole call, and it fails only once that time has fully passed. */
static void *trickle(void *arg)
{
    struct probe *p = arg;
    for (int i = 0; i < 3; i++) {
        eco_sleep(5);
        ck_assert_int_eq(write(p->fd, "ab", 2), 2);
    }
    return NULL;
}

static void *full_reader(void *arg)
{
    struct probe *p = arg;
    char buf[64];
    int64_t t0 = now_ns();
    p->ret = eco_read_full(p->fd, buf, sizeof buf);
    p->err = errno;
    p->took_ms = (long)(now_ns() - t0); /* ns */
    return NULL;
}

START_TEST(whole_buffer_timeout_not_early)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    ck_assert_int_eq(eco_fd_timeout(sv[0], ECO_RD, 60), 0);
    struct probe r = {.fd = sv[0]}, w = {.fd = sv[1]};
    /* Two bytes there at once, so a machine that stalls the writer past
     * the bound still leaves the reader something to return. */
    ck_assert_int_eq(write(sv[1], "ab", 2), 2);
    eco_go(full_reader, &r);
    eco_go(trickle, &w);
    ck_assert_int_eq(eco_loop(), 0);
    /* What came before the bound, after waiting more than once. */
    ck_assert(r.ret >= 2 && r.ret <= 8 && r.ret % 2 == 0);
    ck_assert_int_eq(r.err, ETIMEDOUT);
    ck_assert_int_ge(r.took_ms, 60L * 1000000);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

/* ---- eco_dump and eco_foreach ---- */

struct dump_world {
    int sv[2];       /* sv[0]: a reader parks, and a lock is held */
    int wv[2];       /* wv[0] filled: a writer parks */
    int pp[2];       /* a pipe eco_poll watches */
    int lfd, port, held[2];
    eco_chan_t *ch, *ch2;
    eco_t *target;
};

static struct dump_world dw;

static void *d_read(void *a)
{
    (void)a;
    char b;
    eco_read(dw.sv[0], &b, 1);
    return NULL;
}

static void *d_write(void *a)
{
    (void)a;
    static char chunk[65536];
    while (eco_write(dw.wv[0], chunk, sizeof chunk) > 0)
        ;
    return NULL;
}

static void *d_accept(void *a)
{
    (void)a;
    eco_accept(dw.lfd, NULL, NULL);
    return NULL;
}

static void *d_lock(void *a)
{
    (void)a;
    eco_fd_lock(dw.sv[0], ECO_WR); /* held by d_holder */
    return NULL;
}

static void *d_holder(void *a)
{
    (void)a;
    eco_fd_lock(dw.sv[0], ECO_WR);
    eco_sleep(100000);
    return NULL;
}

static void *d_recv(void *a)
{
    (void)a;
    long v;
    eco_chan_recv(dw.ch, &v);
    return NULL;
}

static void *d_send(void *a)
{
    (void)a;
    long v = 1;
    eco_chan_send(dw.ch2, &v);
    return NULL;
}

static void *d_select(void *a)
{
    (void)a;
    long v;
    struct eco_chan_case cs[3] = {{dw.ch, ECO_CHAN_RECV, &v, 0},
                                  {dw.ch, ECO_CHAN_RECV, &v, 0},
                                  {dw.ch, ECO_CHAN_RECV, &v, 0}};
    eco_chan_select(cs, 3, -1);
    return NULL;
}

static void *d_join(void *a)
{
    (void)a;
    eco_join(dw.target, NULL);
    return NULL;
}

static void *d_poll(void *a)
{
    (void)a;
    struct pollfd p[2] = {{dw.pp[0], POLLIN, 0}, {dw.pp[0], POLLPRI, 0}};
    eco_poll(p, 2, -1);
    return NULL;
}

static void *d_connect(void *a)
{
    (void)a;
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)dw.port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    eco_connect(fd, (struct sockaddr *)&sa, sizeof sa);
    eco_close(fd);
    return NULL;
}

static void *d_sleep(void *a)
{
    (void)a;
    eco_sleep(250000);
    return NULL;
}

static void *d_nothing(void *a)
{
    return a;
}

/* Lines read back from a dump. */
struct parsed {
    unsigned long id;
    char name[40], state[16], wait[64];
    long waited, kib, deadline;
    int cancelled;
};

static int parse_line(const char *line, struct parsed *p)
{
    memset(p, 0, sizeof *p);
    const char *q = strstr(line, "wait=\"");
    const char *e = q != NULL ? strchr(q + 6, '"') : NULL;
    if (q == NULL || e == NULL || (size_t)(e - q - 6) >= sizeof p->wait)
        return -1;
    memcpy(p->wait, q + 6, (size_t)(e - q - 6));
    if (sscanf(line, "#%lu name=%39s state=%15s", &p->id, p->name, p->state) != 3)
        return -1;
    if (sscanf(e + 1, " waited_ms=%ld stack_kib=%ld deadline_ms=%ld cancelled=%d", &p->waited,
               &p->kib, &p->deadline, &p->cancelled) != 4)
        return -1;
    return 0;
}

static eco_t *named(eco_fn fn, const char *name)
{
    eco_attr_t a;
    eco_attr_init(&a);
    a.name = name;
    eco_t *co = eco_create(fn, NULL, &a);
    ck_assert_ptr_nonnull(co);
    return co;
}

static int count_visit(const eco_info_t *in, void *arg)
{
    int *seen = arg;
    if (strcmp(in->name, "sleep") == 0) {
        ck_assert_int_gt(in->stack_used, 0);
        ck_assert_int_le(in->stack_used, in->stack_size);
        ck_assert_int_ge(in->waited_ms, 0);
        ck_assert(in->deadline_ms > 50000 && in->deadline_ms <= 60000);
        long left = 0;
        ck_assert_int_eq(sscanf(in->wait, "sleep %ld ms left", &left), 1);
        ck_assert(left > 240000 && left <= 250000);
    }
    (*seen)++;
    return 0;
}

START_TEST(dump_names_every_wait)
{
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, dw.sv), 0);
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, dw.wv), 0);
    ck_assert_int_eq(pipe(dw.pp), 0);
    dw.lfd = tcp_listener(&dw.port, 16);
    int cport;
    int clfd = full_listener(&cport, dw.held);
    dw.ch = eco_chan_new(sizeof(long), 0);
    dw.ch2 = eco_chan_new(sizeof(long), 0);
    struct {
        const char *name;
        eco_fn fn;
        char want[64];
    } kinds[] = {
        {"holder", d_holder, "sleep "},
        {"read", d_read, ""},
        {"write", d_write, ""},
        {"accept", d_accept, ""},
        {"lock", d_lock, ""},
        {"recv", d_recv, ""},
        {"send", d_send, ""},
        {"select", d_select, "select 3 cases"},
        {"sleep", d_sleep, "sleep "},
        {"poll", d_poll, "poll 2 fds"},
        {"connect", d_connect, ""},
        {"join", d_join, ""},
    };
    size_t nk = sizeof kinds / sizeof kinds[0];
    snprintf(kinds[1].want, 64, "read fd %d", dw.sv[0]);
    snprintf(kinds[2].want, 64, "write fd %d", dw.wv[0]);
    snprintf(kinds[3].want, 64, "accept fd %d", dw.lfd);
    snprintf(kinds[4].want, 64, "lock fd %d write", dw.sv[0]);
    snprintf(kinds[5].want, 64, "chan %p recv", (void *)dw.ch);
    snprintf(kinds[6].want, 64, "chan %p send", (void *)dw.ch2);
    dw.port = cport;
    eco_t *cos[16];
    for (size_t i = 0; i < nk; i++) {
        if (strcmp(kinds[i].name, "join") == 0) {
            dw.target = cos[8]; /* the sleeper */
            snprintf(kinds[i].want, 64, "join #%lu", eco_id(dw.target));
        }
        cos[i] = named(kinds[i].fn, kinds[i].name);
        ck_assert_int_eq(eco_resume(cos[i]), 0);
    }
    eco_t *fresh = named(d_nothing, "fresh");
    ck_assert_int_eq(eco_set_deadline(cos[8], 60000), 0);
    ck_assert_int_eq(eco_cancel(fresh), 0);

    FILE *tmp = tmpfile();
    ck_assert_ptr_nonnull(tmp);
    ck_assert_int_eq(eco_dump(fileno(tmp)), (int)nk + 1);
    rewind(tmp);
    char line[512];
    ck_assert_ptr_nonnull(fgets(line, sizeof line, tmp));
    ck_assert_msg(strncmp(line, "eco: ", 5) == 0 && strstr(line, "coroutines alive"), "%s", line);
    size_t found = 0;
    while (fgets(line, sizeof line, tmp) != NULL) {
        struct parsed p;
        ck_assert_msg(parse_line(line, &p) == 0, "unparsable: %s", line);
        if (strcmp(p.name, "fresh") == 0) {
            ck_assert_str_eq(p.state, "init");
            ck_assert_int_eq(p.cancelled, 1);
            ck_assert_int_eq(p.waited, -1);
            found++;
            continue;
        }
        for (size_t i = 0; i < nk; i++) {
            if (strcmp(p.name, kinds[i].name) != 0)
                continue;
            ck_assert_str_eq(p.state, "waiting");
            ck_assert_msg(strncmp(p.wait, kinds[i].want, strlen(kinds[i].want)) == 0,
                          "%s: wait \"%s\", want \"%s\"", p.name, p.wait, kinds[i].want);
            ck_assert_int_ge(p.waited, 0);
            ck_assert_int_ge(p.kib, 1);
            ck_assert_int_eq(p.id, eco_id(cos[i]));
            if (i == 8)
                ck_assert(p.deadline > 50000 && p.deadline <= 60000);
            else
                ck_assert_int_eq(p.deadline, -1);
            found++;
        }
    }
    fclose(tmp);
    ck_assert_int_eq(found, nk + 1);
    int seen = 0;
    ck_assert_int_eq(eco_foreach(count_visit, &seen), (int)nk + 1);
    ck_assert_int_eq(seen, (int)nk + 1);
    ck_assert_int_eq(eco_foreach(NULL, NULL), -1);
    /* Teardown withdraws every wait: the channels are free again. */
    eco_teardown();
    ck_assert_int_eq(eco_chan_free(dw.ch), 0);
    ck_assert_int_eq(eco_chan_free(dw.ch2), 0);
    int all[] = {dw.sv[0], dw.sv[1], dw.wv[0], dw.wv[1], dw.pp[0], dw.pp[1], dw.lfd,
                 dw.held[0], dw.held[1], clfd};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        close(all[i]);
    ck_assert_int_eq(eco_setup(NULL), 0); /* for the fixture */
}
END_TEST

/* ---- hogs ---- */

static void *hog(void *arg)
{
    long ms = (long)(intptr_t)arg;
    int64_t t0 = now_ns();
    while (ms_since(t0) < ms)
        ;
    return NULL;
}

static void *polite(void *arg)
{
    (void)arg;
    int64_t t0 = now_ns();
    while (ms_since(t0) < 200)
        eco_yield();
    return NULL;
}

/* Runs body in a child with stderr into a pipe; returns what it wrote. */
static void child_stderr(void (*body)(void), char *out, size_t cap)
{
    int p[2];
    ck_assert_int_eq(pipe(p), 0);
    fflush(NULL);
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        dup2(p[1], 2);
        close(p[0]);
        body();
        _exit(0);
    }
    close(p[1]);
    size_t n = 0;
    ssize_t k;
    while (n + 1 < cap && (k = read(p[0], out + n, cap - 1 - n)) > 0)
        n += (size_t)k;
    out[n] = '\0';
    close(p[0]);
    int st;
    ck_assert_int_eq(waitpid(pid, &st, 0), pid);
    ck_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void hog_body(void)
{
    eco_teardown(); /* the fixture's runtime came across the fork */
    if (eco_setup(NULL) != 0 || eco_set_hog_limit(50) != 0)
        _exit(1);
    eco_attr_t a;
    eco_attr_init(&a);
    a.name = "hogger";
    eco_go_attr(polite, NULL, NULL);
    /* Under Valgrind the watchdog thread runs only when the tool's
     * scheduler lets it: a longer hog gives it its chance. */
    eco_go_attr(hog, (void *)(intptr_t)slack(300), &a);
    eco_loop();
    eco_set_hog_limit(0);
    eco_teardown();
}

START_TEST(hog_is_reported_once)
{
    char out[4096];
    child_stderr(hog_body, out, sizeof out);
    const char *l = strstr(out, "eco: coroutine hogger #");
    ck_assert_msg(l != NULL, "stderr: %s", out);
    long ms = 0;
    ck_assert_int_eq(sscanf(strstr(l, " has run ") + 9, "%ld ms without yielding", &ms), 1);
    ck_assert_int_ge(ms, 50);
    ck_assert_msg(strstr(l + 1, "eco: coroutine") == NULL, "more than one report: %s", out);
}
END_TEST

/* ---- teardown with parked coroutines ---- */

static void *poll_forever(void *arg)
{
    struct pollfd p = {.fd = (int)(intptr_t)arg, .events = POLLIN};
    eco_poll(&p, 1, -1);
    return NULL;
}

START_TEST(teardown_with_poll_and_channels)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct event_base *base = event_base_new();
    eco_teardown();
    ck_assert_int_eq(eco_setup(base), 0);
    eco_chan_t *ch = eco_chan_new(sizeof(long), 0);
    eco_chan_t *chs[2] = {eco_chan_new(sizeof(long), 0), eco_chan_new(sizeof(long), 0)};
    struct probe s = {.ch = ch}, r = {.ch = ch}, sel = {.other = (eco_t *)chs};
    eco_resume(eco_create(poll_forever, (void *)(intptr_t)fds[0], NULL));
    eco_resume(eco_create(chan_sender, &s, NULL));
    eco_resume(eco_create(chan_receiver, &r, NULL));
    eco_resume(eco_create(selector, &sel, NULL));
    eco_teardown();
    /* The poll's event left the user's base with the stack: it runs dry. */
    ck_assert_int_eq(write(fds[1], "x", 1), 1);
    ck_assert_int_eq(event_base_loop(base, EVLOOP_NONBLOCK), 1);
    event_base_free(base);
    /* The channels no longer hold records of the abandoned waiters. */
    ck_assert_int_eq(eco_chan_close(ch), 0);
    ck_assert_int_eq(eco_chan_free(ch), 0);
    ck_assert_int_eq(eco_chan_free(chs[0]), 0);
    ck_assert_int_eq(eco_chan_free(chs[1]), 0);
    close(fds[0]);
    close(fds[1]);
    ck_assert_int_eq(eco_setup(NULL), 0); /* for the fixture */
}
END_TEST

/* ---- deadlock detection ---- */

static void *read_once_then_stuck(void *arg)
{
    struct probe *p = arg;
    char b;
    ck_assert_int_eq(eco_read(p->fd, &b, 1), 1); /* parks once: its event stays */
    eco_join(p->other, NULL); /* a coroutine nobody will ever start */
    return NULL;
}

static void *write_later(void *arg)
{
    struct probe *p = arg;
    eco_sleep(5);
    ck_assert_int_eq(write(p->fd, "w", 1), 1);
    return NULL;
}

START_TEST(loop_deadlock_after_idle_fd)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    eco_t *never = eco_create(d_nothing, NULL, NULL);
    struct probe r = {.fd = sv[0], .other = never}, w = {.fd = sv[1]};
    eco_t *stuck = eco_create(read_once_then_stuck, &r, NULL);
    eco_resume(stuck);
    eco_go(write_later, &w);
    ck_assert_int_eq(eco_loop(), -1);
    ck_assert_int_eq(errno, EDEADLK);
    /* The main-stack join says the same. */
    ck_assert_int_eq(eco_join(stuck, NULL), -1);
    ck_assert_int_eq(errno, EDEADLK);
    /* Starting the one it joins unties it. */
    ck_assert_int_eq(eco_resume(never), 0);
    ck_assert_int_eq(eco_join(stuck, NULL), 0);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

static void *thread_send(void *arg)
{
    long v = 3;
    ck_assert_int_eq(eco_chan_send(arg, &v), 0);
    return NULL;
}

static void *recv_then_stuck(void *arg)
{
    struct probe *p = arg;
    long v;
    ck_assert_int_eq(eco_chan_recv(p->ch, &v), 1); /* woken from another thread */
    eco_join(p->other, NULL);
    return NULL;
}

START_TEST(loop_deadlock_after_remote_wake)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 0);
    eco_t *never = eco_create(d_nothing, NULL, NULL);
    struct probe r = {.ch = ch, .other = never};
    eco_go(recv_then_stuck, &r);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_send, ch), 0);
    ck_assert_int_eq(eco_loop(), -1);
    ck_assert_int_eq(errno, EDEADLK);
    pthread_join(t, NULL);
    eco_resume(never);
    ck_assert_int_eq(eco_loop(), 0);
    eco_chan_free(ch);
}
END_TEST

/* ---- close wakes a poller ---- */

static void *close_later(void *arg)
{
    eco_sleep(5);
    ck_assert_int_eq(eco_close((int)(intptr_t)arg), 0);
    return NULL;
}

static void *poll_nval(void *arg)
{
    struct probe *p = arg;
    struct pollfd pfd = {.fd = p->fd, .events = POLLIN};
    PROBE_DONE(p, eco_poll(&pfd, 1, -1));
    p->arg = pfd.revents;
    return NULL;
}

START_TEST(close_wakes_poller)
{
    int fds[2];
    ck_assert_int_eq(pipe(fds), 0);
    struct probe p = {.fd = fds[0]};
    eco_go(poll_nval, &p);
    eco_go(close_later, (void *)(intptr_t)fds[0]);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(p.ret, 1);
    ck_assert_int_eq(p.arg, POLLNVAL);
    close(fds[1]);
}
END_TEST

/* ---- the loop's dispatch returns once coroutines are done ---- */

static void *read_one(void *arg)
{
    char b;
    ck_assert_int_eq(eco_read((int)(intptr_t)arg, &b, 1), 1);
    return NULL;
}

START_TEST(dispatch_returns_after_last_coroutine)
{
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    eco_go(read_one, (void *)(intptr_t)sv[0]);
    struct probe w = {.fd = sv[1]};
    eco_go(write_later, &w);
    /* The read event kept for the next read must not hold the loop. */
    ck_assert_int_eq(event_base_dispatch(eco_base()), 1);
    eco_close(sv[0]);
    close(sv[1]);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("wait");
    TCase *tc = rt_tcase("cancel");
    tcase_add_test(tc, cancel_sleep);
    tcase_add_test(tc, cancel_poll);
    tcase_add_test(tc, cancel_read_serves_next_reader);
    tcase_add_test(tc, cancel_head_reader_keeps_order);
    tcase_add_test(tc, cancel_write);
    tcase_add_test(tc, cancel_accept_serves_next_acceptor);
    tcase_add_test(tc, cancel_connect);
    tcase_add_test(tc, cancel_lock_passes_to_next);
    tcase_add_test(tc, cancel_chan_send_delivers_nothing);
    tcase_add_test(tc, cancel_chan_recv_takes_nothing);
    tcase_add_test(tc, cancel_select_leaves_channels_free);
    tcase_add_test(tc, cancel_join_leaves_target_joinable);
    tcase_add_test(tc, cancel_from_coroutine_and_callback);
    tcase_add_test(tc, cancel_from_another_thread_while_busy);
    tcase_add_test(tc, cancel_before_first_park_and_after_done);
    tcase_add_test(tc, cancel_is_sticky_until_uncancel);
    tcase_add_test(tc, cancel_after_completion_loses_nothing);
    suite_add_tcase(s, tc);
    tc = rt_tcase("deadline");
    tcase_add_test(tc, deadline_alone);
    tcase_add_test(tc, deadline_with_fd_timeouts);
    tcase_add_test(tc, deadline_without_parking_has_no_effect);
    tcase_add_test(tc, deadline_set_while_parked);
    tcase_add_test(tc, bounds_never_end_early);
    tcase_add_test(tc, plain_thread_bounds_never_end_early);
    tcase_add_test(tc, whole_buffer_timeout_not_early);
    suite_add_tcase(s, tc);
    tc = rt_tcase("observe");
    tcase_add_test(tc, dump_names_every_wait);
    tcase_add_test(tc, hog_is_reported_once);
    suite_add_tcase(s, tc);
    tc = rt_tcase("contract");
    tcase_add_test(tc, teardown_with_poll_and_channels);
    tcase_add_test(tc, loop_deadlock_after_idle_fd);
    tcase_add_test(tc, loop_deadlock_after_remote_wake);
    tcase_add_test(tc, close_wakes_poller);
    tcase_add_test(tc, dispatch_returns_after_last_coroutine);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
