/* test_chan.c - channels: buffering, rendezvous, order, close, timeouts,
 * try, select, plain threads, runtimes in several threads, and a stress. */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

#if defined(__has_include)
#if __has_include(<valgrind/valgrind.h>)
#include <valgrind/valgrind.h>
#endif
#endif
#ifndef RUNNING_ON_VALGRIND
#define RUNNING_ON_VALGRIND 0
#endif

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs body(arg) as a coroutine of this thread's runtime to completion. */
static void run_co(eco_fn body, void *arg)
{
    ck_assert_int_eq(eco_go(body, arg), 0);
    ck_assert_int_eq(eco_loop(), 0);
}

/* ---- creation and argument errors ---- */

START_TEST(new_and_bad_arguments)
{
    ck_assert_ptr_null(eco_chan_new(SIZE_MAX / 2, 4));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_chan_free(NULL), 0);
    long v = 1;
    ck_assert_int_eq(eco_chan_send(NULL, &v), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_chan_recv(NULL, &v), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_chan_close(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    eco_chan_t *ch = eco_chan_new(sizeof v, 1);
    ck_assert_ptr_nonnull(ch);
    ck_assert_int_eq(eco_chan_trysend(ch, NULL), -1); /* no element */
    ck_assert_int_eq(errno, EINVAL);
    /* Elements of size 0: pure events, NULL is fine. */
    eco_chan_t *ev = eco_chan_new(0, 2);
    ck_assert_int_eq(eco_chan_trysend(ev, NULL), 0);
    ck_assert_int_eq(eco_chan_tryrecv(ev, NULL), 1);
    ck_assert_int_eq(eco_chan_free(ev), 0);
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

/* ---- buffered: FIFO, full and empty, try ---- */

START_TEST(buffered_fifo_and_try)
{
    /* Non-waiting calls work on the runtime's own stack. */
    eco_chan_t *ch = eco_chan_new(sizeof(long), 4);
    for (long i = 0; i < 4; i++)
        ck_assert_int_eq(eco_chan_trysend(ch, &i), 0);
    long v = 99;
    ck_assert_int_eq(eco_chan_trysend(ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_send_timeout(ch, &v, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* Wrap the ring: take two, put two, then all six come out in order. */
    for (long i = 0; i < 2; i++) {
        ck_assert_int_eq(eco_chan_recv(ch, &v), 1);
        ck_assert_int_eq(v, i);
    }
    for (long i = 4; i < 6; i++)
        ck_assert_int_eq(eco_chan_send(ch, &i), 0);
    for (long i = 2; i < 6; i++) {
        ck_assert_int_eq(eco_chan_tryrecv(ch, &v), 1);
        ck_assert_int_eq(v, i);
    }
    ck_assert_int_eq(eco_chan_tryrecv(ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_recv_timeout(ch, &v, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    /* recv into NULL drops the element. */
    ck_assert_int_eq(eco_chan_trysend(ch, &v), 0);
    ck_assert_int_eq(eco_chan_recv(ch, NULL), 1);
    ck_assert_int_eq(eco_chan_tryrecv(ch, &v), -1);
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

START_TEST(waiting_on_runtime_stack_is_eperm)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 0);
    long v = 1;
    ck_assert_int_eq(eco_chan_send(ch, &v), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_chan_recv(ch, &v), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_chan_recv_timeout(ch, &v, 10), -1);
    ck_assert_int_eq(errno, EPERM);
    struct eco_chan_case c = {.ch = ch, .op = ECO_CHAN_RECV, .elem = &v};
    ck_assert_int_eq(eco_chan_select(&c, 1, -1), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_chan_select(&c, 1, 0), -1); /* polling is fine */
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_free(ch), 0); /* no waiter was left behind */
    /* A select that completes at once works there too, however long it
     * would have been willing to wait. */
    eco_chan_t *b = eco_chan_new(sizeof(long), 1);
    ck_assert_int_eq(eco_chan_trysend(b, &v), 0);
    struct eco_chan_case cs[2] = {{.ch = ch, .op = ECO_CHAN_RECV, .elem = &v},
                                  {.ch = b, .op = ECO_CHAN_RECV, .elem = &v}};
    ch = eco_chan_new(sizeof(long), 0);
    cs[0].ch = ch;
    ck_assert_int_eq(eco_chan_select(cs, 2, -1), 1);
    ck_assert_int_eq(cs[1].result, 1);
    ck_assert_int_eq(eco_chan_free(ch), 0);
    ck_assert_int_eq(eco_chan_free(b), 0);
}
END_TEST

/* A buffered channel blocks a sender while full: the producer runs ahead by
 * exactly the capacity. */
struct prodcons {
    eco_chan_t *ch;
    int sent;       /* producer's progress */
    int max_ahead;  /* largest sent - received seen by the consumer */
    long sum;
};

static void *producer(void *arg)
{
    struct prodcons *pc = arg;
    for (long i = 0; i < 100; i++) {
        ck_assert_int_eq(eco_chan_send(pc->ch, &i), 0);
        pc->sent++;
    }
    return NULL;
}

static void *consumer(void *arg)
{
    struct prodcons *pc = arg;
    for (long i = 0; i < 100; i++) {
        long v;
        ck_assert_int_eq(eco_chan_recv(pc->ch, &v), 1);
        ck_assert_int_eq(v, i);
        if (pc->sent - (int)i > pc->max_ahead)
            pc->max_ahead = pc->sent - (int)i;
        pc->sum += v;
    }
    return NULL;
}

START_TEST(buffered_blocks_when_full)
{
    struct prodcons pc = {.ch = eco_chan_new(sizeof(long), 5)};
    eco_go(producer, &pc);
    eco_go(consumer, &pc);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pc.sum, 4950);
    /* At most capacity buffered plus the one handed over on refill. */
    ck_assert_int_ge(pc.max_ahead, 5);
    ck_assert_int_le(pc.max_ahead, 6);
    ck_assert_int_eq(eco_chan_free(pc.ch), 0);
}
END_TEST

/* ---- unbuffered rendezvous ---- */

static char log_buf[64];
static int log_n;

static void note(char c)
{
    log_buf[log_n++] = c;
    log_buf[log_n] = '\0';
}

struct rv {
    eco_chan_t *ch;
    long got;
};

static void *rv_sender(void *arg)
{
    struct rv *r = arg;
    long v = 42;
    note('s');                                   /* about to send */
    ck_assert_int_eq(eco_chan_send(r->ch, &v), 0);
    note('S');                                   /* send returned */
    ck_assert_int_eq(r->got, 42);                /* the receiver has it */
    return NULL;
}

static void *rv_receiver(void *arg)
{
    struct rv *r = arg;
    note('r');
    ck_assert_int_eq(eco_chan_recv(r->ch, &r->got), 1);
    note('R');
    return NULL;
}

START_TEST(unbuffered_rendezvous)
{
    struct rv r = {.ch = eco_chan_new(sizeof(long), 0)};
    long v = 7;
    /* Nobody receives: an unbuffered channel buffers nothing. */
    ck_assert_int_eq(eco_chan_trysend(r.ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_tryrecv(r.ch, &v), -1);

    /* Sender first: it waits until the receiver comes and takes the value. */
    log_n = 0;
    eco_go(rv_sender, &r);
    eco_go(rv_receiver, &r);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_str_eq(log_buf, "srRS");

    /* Receiver first: the sender hands over and goes on without waiting. */
    log_n = 0;
    r.got = 0;
    eco_go(rv_receiver, &r);
    eco_go(rv_sender, &r);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_str_eq(log_buf, "rsSR");
    ck_assert_int_eq(eco_chan_free(r.ch), 0);
}
END_TEST

/* try on an unbuffered channel succeeds exactly when a peer waits. */
static void *try_peer(void *arg)
{
    struct rv *r = arg;
    long v;
    ck_assert_int_eq(eco_chan_recv(r->ch, &v), 1);
    ck_assert_int_eq(v, 5);
    v = 6;
    ck_assert_int_eq(eco_chan_send(r->ch, &v), 0);
    return NULL;
}

static void *try_main(void *arg)
{
    struct rv *r = arg;
    long v = 5;
    ck_assert_int_eq(eco_chan_trysend(r->ch, &v), -1); /* peer not there yet */
    ck_assert_int_eq(errno, EAGAIN);
    eco_sleep(0);                                    /* peer now waits */
    ck_assert_int_eq(eco_chan_trysend(r->ch, &v), 0);
    eco_sleep(0);                                    /* peer waits to send */
    ck_assert_int_eq(eco_chan_tryrecv(r->ch, &v), 1);
    ck_assert_int_eq(v, 6);
    return NULL;
}

START_TEST(try_on_unbuffered)
{
    struct rv r = {.ch = eco_chan_new(sizeof(long), 0)};
    eco_go(try_main, &r);
    eco_go(try_peer, &r);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(eco_chan_free(r.ch), 0);
}
END_TEST

/* ---- FIFO waiters ---- */

struct fifo {
    eco_chan_t *ch;
    int order[5];
    int n;
};

struct fifo_arg {
    struct fifo *f;
    long id;
};

static void *fifo_receiver(void *arg)
{
    struct fifo_arg *a = arg;
    long v;
    ck_assert_int_eq(eco_chan_recv(a->f->ch, &v), 1);
    ck_assert_int_eq(v, a->id * 10); /* the i-th waiter gets the i-th value */
    return NULL;
}

static void *fifo_sender(void *arg)
{
    struct fifo_arg *a = arg;
    long v = a->id;
    ck_assert_int_eq(eco_chan_send(a->f->ch, &v), 0);
    return NULL;
}

static void *fifo_feed(void *arg)
{
    struct fifo *f = arg;
    for (long i = 0; i < 5; i++) {
        long v = i * 10;
        ck_assert_int_eq(eco_chan_send(f->ch, &v), 0);
    }
    return NULL;
}

static void *fifo_drain(void *arg)
{
    struct fifo *f = arg;
    for (int i = 0; i < 5; i++) {
        long v;
        ck_assert_int_eq(eco_chan_recv(f->ch, &v), 1);
        f->order[f->n++] = (int)v;
    }
    return NULL;
}

START_TEST(waiters_served_fifo)
{
    struct fifo f = {.ch = eco_chan_new(sizeof(long), 0)};
    struct fifo_arg a[5];
    /* Receivers queue up in start order, then values 0,10,..,40 arrive. */
    for (int i = 0; i < 5; i++) {
        a[i] = (struct fifo_arg){&f, i};
        eco_go(fifo_receiver, &a[i]);
    }
    eco_go(fifo_feed, &f);
    ck_assert_int_eq(eco_loop(), 0);
    /* Senders queue up on a full buffered channel, then are drained. */
    eco_chan_free(f.ch);
    f.ch = eco_chan_new(sizeof(long), 1);
    long first = 100;
    ck_assert_int_eq(eco_chan_trysend(f.ch, &first), 0);
    for (int i = 0; i < 5; i++) {
        a[i] = (struct fifo_arg){&f, i};
        eco_go(fifo_sender, &a[i]);
    }
    f.n = 0;
    eco_go(fifo_drain, &f);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(f.order[0], 100);
    for (int i = 1; i < 5; i++)
        ck_assert_int_eq(f.order[i], i - 1);
    long last;
    ck_assert_int_eq(eco_chan_tryrecv(f.ch, &last), 1);
    ck_assert_int_eq(last, 4);
    ck_assert_int_eq(eco_chan_tryrecv(f.ch, &last), -1); /* drained */
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_free(f.ch), 0);
}
END_TEST

/* Elements moved from waiting senders into the ring, then the ring's quick
 * path again: nothing invented, nothing lost, order kept. */
static void *ring_senders(void *arg)
{
    struct fifo_arg *a = arg;
    long v = a->id;
    ck_assert_int_eq(eco_chan_send(a->f->ch, &v), 0);
    return NULL;
}

static void *ring_drain(void *arg)
{
    struct fifo *f = arg;
    long v;
    for (long i = 0; i < 6; i++) {
        ck_assert_int_eq(eco_chan_tryrecv(f->ch, &v), 1);
        ck_assert_int_eq(v, i);
    }
    ck_assert_int_eq(eco_chan_tryrecv(f->ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    f->n = 6;
    return NULL;
}

START_TEST(ring_after_waiting_senders)
{
    struct fifo f = {.ch = eco_chan_new(sizeof(long), 2)};
    struct fifo_arg a[6];
    for (int i = 0; i < 6; i++) {
        a[i] = (struct fifo_arg){&f, i};
        eco_go(ring_senders, &a[i]); /* 2 buffered, 4 wait */
    }
    eco_go(ring_drain, &f); /* runs once all six have sent or wait */
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(f.n, 6);
    long v;
    for (long i = 10; i < 12; i++)
        ck_assert_int_eq(eco_chan_trysend(f.ch, &i), 0);
    ck_assert_int_eq(eco_chan_trysend(f.ch, &v), -1);
    for (long i = 10; i < 12; i++) {
        ck_assert_int_eq(eco_chan_tryrecv(f.ch, &v), 1);
        ck_assert_int_eq(v, i);
    }
    ck_assert_int_eq(eco_chan_tryrecv(f.ch, &v), -1);
    ck_assert_int_eq(eco_chan_free(f.ch), 0);
}
END_TEST

/* ---- close ---- */

struct closing {
    eco_chan_t *rch, *sch;
    int recv_end, send_epipe;
};

static void *close_receiver(void *arg)
{
    struct closing *c = arg;
    long v;
    if (eco_chan_recv(c->rch, &v) == 0)
        c->recv_end++;
    return NULL;
}

static void *close_sender(void *arg)
{
    struct closing *c = arg;
    long v = 1;
    if (eco_chan_send(c->sch, &v) == -1 && errno == EPIPE)
        c->send_epipe++;
    return NULL;
}

static void *closer(void *arg)
{
    struct closing *c = arg;
    /* Everybody waits by now; free must refuse while they do. */
    ck_assert_int_eq(eco_chan_free(c->rch), -1);
    ck_assert_int_eq(errno, EBUSY);
    ck_assert_int_eq(eco_chan_free(c->sch), -1);
    ck_assert_int_eq(errno, EBUSY);
    ck_assert_int_eq(eco_chan_close(c->rch), 0);
    ck_assert_int_eq(eco_chan_close(c->sch), 0);
    ck_assert_int_eq(eco_chan_close(c->sch), -1);
    ck_assert_int_eq(errno, EPIPE);
    return NULL;
}

START_TEST(close_wakes_every_waiter)
{
    struct closing c = {.rch = eco_chan_new(sizeof(long), 0),
                        .sch = eco_chan_new(sizeof(long), 0)};
    for (int i = 0; i < 3; i++) {
        eco_go(close_receiver, &c);
        eco_go(close_sender, &c);
    }
    eco_go(closer, &c);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(c.recv_end, 3);
    ck_assert_int_eq(c.send_epipe, 3);
    long v = 1;
    ck_assert_int_eq(eco_chan_trysend(c.sch, &v), -1);
    ck_assert_int_eq(errno, EPIPE);
    ck_assert_int_eq(eco_chan_recv(c.rch, &v), 0); /* end, even on this stack */
    ck_assert_int_eq(eco_chan_free(c.rch), 0);
    ck_assert_int_eq(eco_chan_free(c.sch), 0);
}
END_TEST

START_TEST(close_keeps_buffered_elements)
{
    eco_chan_t *ch = eco_chan_new(sizeof(long), 4);
    for (long i = 1; i <= 3; i++)
        ck_assert_int_eq(eco_chan_send(ch, &i), 0);
    ck_assert_int_eq(eco_chan_close(ch), 0);
    long v = 9;
    ck_assert_int_eq(eco_chan_send(ch, &v), -1);
    ck_assert_int_eq(errno, EPIPE);
    for (long i = 1; i <= 3; i++) {
        ck_assert_int_eq(eco_chan_recv(ch, &v), 1);
        ck_assert_int_eq(v, i);
    }
    errno = 0;
    ck_assert_int_eq(eco_chan_recv(ch, &v), 0);
    ck_assert_int_eq(eco_chan_recv(ch, &v), 0); /* and stays at the end */
    ck_assert_int_eq(eco_chan_tryrecv(ch, &v), 0);
    ck_assert_int_eq(errno, 0); /* the end is not an error */
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

/* Freeing a channel somebody waits on is refused (whatever the waiter waits
 * in: receive, send on a full buffer, select); after close it works. */
static void *busy_recv(void *arg)
{
    long v;
    ck_assert_int_eq(eco_chan_recv(arg, &v), 0); /* the end */
    return NULL;
}

static void *busy_send(void *arg)
{
    long v = 5;
    ck_assert_int_eq(eco_chan_send(arg, &v), -1); /* until closed */
    ck_assert_int_eq(errno, EPIPE);
    return NULL;
}

static void *busy_select(void *arg)
{
    long v;
    struct eco_chan_case c = {.ch = arg, .op = ECO_CHAN_RECV, .elem = &v};
    ck_assert_int_eq(eco_chan_select(&c, 1, -1), 0);
    ck_assert_int_eq(c.result, 0);
    return NULL;
}

static void *busy_checker(void *arg)
{
    eco_chan_t **chs = arg;
    for (int i = 0; i < 3; i++) {
        ck_assert_int_eq(eco_chan_free(chs[i]), -1);
        ck_assert_int_eq(errno, EBUSY);
    }
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(eco_chan_close(chs[i]), 0);
    return NULL;
}

START_TEST(free_with_waiters_is_ebusy)
{
    eco_chan_t *chs[3] = {eco_chan_new(sizeof(long), 0), eco_chan_new(sizeof(long), 1),
                          eco_chan_new(sizeof(long), 4)};
    long v = 1;
    ck_assert_int_eq(eco_chan_trysend(chs[1], &v), 0); /* full */
    eco_go(busy_recv, chs[0]);
    eco_go(busy_send, chs[1]);
    eco_go(busy_select, chs[2]);
    eco_go(busy_checker, chs); /* runs after the three wait */
    ck_assert_int_eq(eco_loop(), 0);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(eco_chan_free(chs[i]), 0);
}
END_TEST

/* ---- timeouts ---- */

struct timed {
    eco_chan_t *ch;
    long waited;
    int r, err;
};

static void *timed_recv(void *arg)
{
    struct timed *t = arg;
    long v, t0 = now_ms();
    t->r = eco_chan_recv_timeout(t->ch, &v, 40);
    t->err = errno;
    t->waited = now_ms() - t0;
    return NULL;
}

static void *timed_send_full(void *arg)
{
    struct timed *t = arg;
    long v = 1, t0 = now_ms();
    ck_assert_int_eq(eco_chan_send(t->ch, &v), 0); /* fills capacity 1 */
    t->r = eco_chan_send_timeout(t->ch, &v, 40);
    t->err = errno;
    t->waited = now_ms() - t0;
    return NULL;
}

START_TEST(timeouts_expire)
{
    struct timed t = {.ch = eco_chan_new(sizeof(long), 0)};
    run_co(timed_recv, &t);
    ck_assert_int_eq(t.r, -1);
    ck_assert_int_eq(t.err, ETIMEDOUT);
    ck_assert_int_ge(t.waited, 39);
    /* The timed-out receiver left nothing behind: a send finds nobody. */
    long v = 3;
    ck_assert_int_eq(eco_chan_trysend(t.ch, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_free(t.ch), 0);

    t.ch = eco_chan_new(sizeof(long), 1);
    run_co(timed_send_full, &t);
    ck_assert_int_eq(t.r, -1);
    ck_assert_int_eq(t.err, ETIMEDOUT);
    ck_assert_int_ge(t.waited, 39);
    ck_assert_int_eq(eco_chan_tryrecv(t.ch, &v), 1); /* only the first one */
    ck_assert_int_eq(eco_chan_tryrecv(t.ch, &v), -1);
    ck_assert_int_eq(eco_chan_free(t.ch), 0);
}
END_TEST

static void *late_sender(void *arg)
{
    struct timed *t = arg;
    eco_sleep(10);
    long v = 77;
    ck_assert_int_eq(eco_chan_send(t->ch, &v), 0);
    return NULL;
}

static void *timed_recv_in_time(void *arg)
{
    struct timed *t = arg;
    long v = 0, t0 = now_ms();
    t->r = eco_chan_recv_timeout(t->ch, &v, 5000);
    t->waited = now_ms() - t0;
    ck_assert_int_eq(v, 77);
    return NULL;
}

START_TEST(timeout_not_reached)
{
    struct timed t = {.ch = eco_chan_new(sizeof(long), 0)};
    eco_go(timed_recv_in_time, &t);
    eco_go(late_sender, &t);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(t.r, 1);
    ck_assert_int_lt(t.waited, 4000); /* the send, not the deadline, woke it */
    ck_assert_int_eq(eco_chan_free(t.ch), 0);
}
END_TEST

/* ---- select ---- */

struct sel_env {
    eco_chan_t *a, *b, *c;
    int idx, result;
    long got;
};

static void *select_waits(void *arg)
{
    struct sel_env *e = arg;
    long va = 0, vb = 0;
    struct eco_chan_case cs[3] = {
        {.ch = e->a, .op = ECO_CHAN_RECV, .elem = &va},
        {.ch = NULL, .op = 0},                          /* ignored */
        {.ch = e->b, .op = ECO_CHAN_RECV, .elem = &vb},
    };
    e->idx = eco_chan_select(cs, 3, 5000);
    e->result = cs[e->idx].result;
    e->got = vb;
    ck_assert_int_eq(va, 0);
    return NULL;
}

static void *select_feeder(void *arg)
{
    struct sel_env *e = arg;
    long v = 55;
    ck_assert_int_eq(eco_chan_send(e->b, &v), 0);
    return NULL;
}

START_TEST(select_waits_and_cleans_up)
{
    struct sel_env e = {.a = eco_chan_new(sizeof(long), 0), .b = eco_chan_new(sizeof(long), 0)};
    eco_go(select_waits, &e);
    eco_go(select_feeder, &e);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(e.idx, 2);
    ck_assert_int_eq(e.result, 1);
    ck_assert_int_eq(e.got, 55);
    /* Its record on a was removed: nobody waits there any more. */
    long v = 1;
    ck_assert_int_eq(eco_chan_trysend(e.a, &v), -1);
    ck_assert_int_eq(errno, EAGAIN);
    ck_assert_int_eq(eco_chan_free(e.a), 0);
    ck_assert_int_eq(eco_chan_free(e.b), 0);
}
END_TEST

static void *select_times_out(void *arg)
{
    struct sel_env *e = arg;
    long v = 0;
    struct eco_chan_case cs[2] = {
        {.ch = e->a, .op = ECO_CHAN_RECV, .elem = &v},
        {.ch = e->b, .op = ECO_CHAN_SEND, .elem = &v}, /* unbuffered, no peer */
    };
    long t0 = now_ms();
    e->idx = eco_chan_select(cs, 2, 30);
    e->result = errno;
    e->got = now_ms() - t0;
    /* A select with no channel at all is a plain timed wait. */
    struct eco_chan_case none = {.ch = NULL};
    ck_assert_int_eq(eco_chan_select(&none, 1, 5), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_chan_select(&none, 1, -1), -1);
    ck_assert_int_eq(errno, EINVAL);
    return NULL;
}

START_TEST(select_timeout_and_poll)
{
    struct sel_env e = {.a = eco_chan_new(sizeof(long), 0), .b = eco_chan_new(sizeof(long), 0)};
    run_co(select_times_out, &e);
    ck_assert_int_eq(e.idx, -1);
    ck_assert_int_eq(e.result, ETIMEDOUT);
    ck_assert_int_ge(e.got, 29);
    /* Both records were removed after the timeout. */
    ck_assert_int_eq(eco_chan_free(e.a), 0);
    ck_assert_int_eq(eco_chan_free(e.b), 0);

    /* Poll (the default case): nothing ready, then a buffered send ready. */
    eco_chan_t *ch = eco_chan_new(sizeof(long), 1);
    long v = 4;
    struct eco_chan_case cs[2] = {
        {.ch = ch, .op = ECO_CHAN_RECV, .elem = &v},
        {.ch = NULL},
    };
    ck_assert_int_eq(eco_chan_select(cs, 2, 0), -1);
    ck_assert_int_eq(errno, EAGAIN);
    cs[1] = (struct eco_chan_case){.ch = ch, .op = ECO_CHAN_SEND, .elem = &v};
    ck_assert_int_eq(eco_chan_select(cs, 2, 0), 1);
    ck_assert_int_eq(cs[1].result, 0);
    v = 0;
    ck_assert_int_eq(eco_chan_tryrecv(ch, &v), 1);
    ck_assert_int_eq(v, 4);
    /* Closed: a receive case reports the end, a send case the failure. */
    ck_assert_int_eq(eco_chan_close(ch), 0);
    struct eco_chan_case rc = {.ch = ch, .op = ECO_CHAN_RECV, .elem = &v, .result = 9};
    ck_assert_int_eq(eco_chan_select(&rc, 1, 0), 0);
    ck_assert_int_eq(rc.result, 0);
    struct eco_chan_case sc = {.ch = ch, .op = ECO_CHAN_SEND, .elem = &v, .result = 9};
    ck_assert_int_eq(eco_chan_select(&sc, 1, 0), 0);
    ck_assert_int_eq(sc.result, -1);
    struct eco_chan_case bad = {.ch = ch, .op = 7, .elem = &v};
    ck_assert_int_eq(eco_chan_select(&bad, 1, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_chan_free(ch), 0);
}
END_TEST

/* A select woken by close learns which case and that it was the end. */
static void *select_on_close(void *arg)
{
    struct sel_env *e = arg;
    long v;
    struct eco_chan_case cs[2] = {
        {.ch = e->a, .op = ECO_CHAN_RECV, .elem = &v},
        {.ch = e->b, .op = ECO_CHAN_SEND, .elem = &v},
    };
    e->idx = eco_chan_select(cs, 2, -1);
    e->result = cs[e->idx].result;
    return NULL;
}

static void *close_b(void *arg)
{
    struct sel_env *e = arg;
    ck_assert_int_eq(eco_chan_close(e->b), 0);
    return NULL;
}

START_TEST(select_woken_by_close)
{
    struct sel_env e = {.a = eco_chan_new(sizeof(long), 0), .b = eco_chan_new(sizeof(long), 0)};
    eco_go(select_on_close, &e);
    eco_go(close_b, &e);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(e.idx, 1);
    ck_assert_int_eq(e.result, -1);
    ck_assert_int_eq(eco_chan_free(e.a), 0);
    ck_assert_int_eq(eco_chan_free(e.b), 0);
}
END_TEST

#define FAIR_ROUNDS 3000

START_TEST(select_is_fair)
{
    /* Three receive cases, always ready (each keeps one element buffered),
     * and a fourth case on the same channel as the first as a send that is
     * never ready (the buffer is full). */
    eco_chan_t *ch[3];
    long v[3];
    int hits[4] = {0, 0, 0, 0};
    for (int i = 0; i < 3; i++) {
        ch[i] = eco_chan_new(sizeof(long), 1);
        v[i] = i;
        ck_assert_int_eq(eco_chan_trysend(ch[i], &v[i]), 0);
    }
    long out = 0;
    struct eco_chan_case cs[4];
    for (int i = 0; i < 3; i++)
        cs[i] = (struct eco_chan_case){.ch = ch[i], .op = ECO_CHAN_RECV, .elem = &out};
    cs[3] = (struct eco_chan_case){.ch = ch[0], .op = ECO_CHAN_SEND, .elem = &v[0]};
    for (int r = 0; r < FAIR_ROUNDS; r++) {
        int i = eco_chan_select(cs, 4, 0);
        ck_assert_int_ge(i, 0);
        ck_assert_int_lt(i, 3);
        ck_assert_int_eq(out, i);
        hits[i]++;
        ck_assert_int_eq(eco_chan_trysend(ch[i], &v[i]), 0); /* ready again */
    }
    for (int i = 0; i < 3; i++) {
        ck_assert_msg(hits[i] >= FAIR_ROUNDS / 4 && hits[i] <= FAIR_ROUNDS * 2 / 5,
                      "case %d chosen %d of %d times", i, hits[i], FAIR_ROUNDS);
        ck_assert_int_eq(eco_chan_free(ch[i]), 0);
    }
}
END_TEST

/* ---- plain threads and coroutines, both ways ---- */

#define ECHO_N 2000

struct echo {
    eco_chan_t *to_co, *to_thread;
    long sum;
    int bad;
};

static void *echo_thread(void *arg)
{
    struct echo *e = arg;
    for (long i = 0; i < ECHO_N; i++) {
        long back = -1;
        if (eco_chan_send(e->to_co, &i) != 0)
            e->bad++;
        if (eco_chan_recv(e->to_thread, &back) != 1 || back != i * 2)
            e->bad++;
        e->sum += back;
    }
    if (eco_chan_close(e->to_co) != 0)
        e->bad++;
    return NULL;
}

static void *echo_co(void *arg)
{
    struct echo *e = arg;
    long v;
    int r;
    while ((r = eco_chan_recv(e->to_co, &v)) == 1) {
        v *= 2;
        ck_assert_int_eq(eco_chan_send(e->to_thread, &v), 0);
    }
    ck_assert_int_eq(r, 0);
    return NULL;
}

START_TEST(thread_and_coroutine_talk)
{
    /* Unbuffered both ways: every message is a rendezvous across threads,
     * so each side waits for the other many times. */
    struct echo e = {.to_co = eco_chan_new(sizeof(long), 0),
                     .to_thread = eco_chan_new(sizeof(long), 0)};
    pthread_t t;
    eco_go(echo_co, &e);
    ck_assert_int_eq(pthread_create(&t, NULL, echo_thread, &e), 0);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(e.bad, 0);
    ck_assert_int_eq(e.sum, (long)ECHO_N * (ECHO_N - 1));
    ck_assert_int_eq(eco_chan_free(e.to_co), 0);
    ck_assert_int_eq(eco_chan_free(e.to_thread), 0);
}
END_TEST

/* A plain thread's timed receive and select time out, and a plain thread's
 * select is woken by a coroutine. */
struct thread_sel {
    eco_chan_t *a, *b;
    int timed_out, idx, result;
    long got, waited;
};

static void *thread_selector(void *arg)
{
    struct thread_sel *ts = arg;
    long v = 0, t0 = now_ms();
    if (eco_chan_recv_timeout(ts->a, &v, 30) == -1 && errno == ETIMEDOUT)
        ts->timed_out++;
    ts->waited = now_ms() - t0;
    struct eco_chan_case cs[2] = {
        {.ch = ts->a, .op = ECO_CHAN_RECV, .elem = &v},
        {.ch = ts->b, .op = ECO_CHAN_RECV, .elem = &v},
    };
    if (eco_chan_select(cs, 2, 20) == -1 && errno == ETIMEDOUT)
        ts->timed_out++;
    /* Now tell the coroutine we wait, then wait for its answer on b. */
    long go = 1;
    eco_chan_send(ts->a, &go);
    ts->idx = eco_chan_select(cs, 2, -1);
    ts->result = cs[ts->idx].result;
    ts->got = v;
    return NULL;
}

static void *answer_on_b(void *arg)
{
    struct thread_sel *ts = arg;
    long v;
    ck_assert_int_eq(eco_chan_recv(ts->a, &v), 1);
    /* The thread may not be in its select yet; an unbuffered send waits for
     * it either way. */
    v = 31;
    ck_assert_int_eq(eco_chan_send(ts->b, &v), 0);
    return NULL;
}

START_TEST(thread_timeouts_and_select)
{
    struct thread_sel ts = {.a = eco_chan_new(sizeof(long), 0), .b = eco_chan_new(sizeof(long), 0)};
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, thread_selector, &ts), 0);
    eco_go(answer_on_b, &ts);
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(pthread_join(t, NULL), 0);
    ck_assert_int_eq(ts.timed_out, 2);
    ck_assert_int_ge(ts.waited, 29);
    ck_assert_int_eq(ts.idx, 1);
    ck_assert_int_eq(ts.result, 1);
    ck_assert_int_eq(ts.got, 31);
    ck_assert_int_eq(eco_chan_free(ts.a), 0);
    ck_assert_int_eq(eco_chan_free(ts.b), 0);
}
END_TEST

/* ---- coroutines of two runtimes in two threads ---- */

#define XRT_N 20000

struct xrt {
    eco_chan_t *ch;
    long sum;
    int ok, bad;
};

static void *xrt_send_body(void *arg)
{
    struct xrt *x = arg;
    for (long i = 0; i < XRT_N; i++)
        if (eco_chan_send(x->ch, &i) != 0)
            x->bad++;
    eco_chan_close(x->ch);
    return NULL;
}

static void *xrt_recv_body(void *arg)
{
    struct xrt *x = arg;
    long v, expect = 0;
    int r;
    while ((r = eco_chan_recv(x->ch, &v)) == 1) {
        if (v != expect++) /* one sender: its order holds */
            x->bad++;
        x->sum += v;
    }
    if (r != 0)
        x->bad++;
    return NULL;
}

struct xrt_thread {
    struct xrt *x;
    eco_fn body;
};

static void *xrt_thread_main(void *arg)
{
    struct xrt_thread *t = arg;
    if (eco_setup(NULL) != 0)
        return NULL;
    eco_go(t->body, t->x);
    t->x->ok += eco_loop() == 0;
    eco_teardown();
    return NULL;
}

START_TEST(coroutines_of_two_threads)
{
    size_t caps[2] = {0, 16};
    for (int k = 0; k < 2; k++) {
        struct xrt sx = {.ch = eco_chan_new(sizeof(long), caps[k])};
        struct xrt rx = {.ch = sx.ch};
        struct xrt_thread ts = {&sx, xrt_send_body}, tr = {&rx, xrt_recv_body};
        pthread_t a, b;
        ck_assert_int_eq(pthread_create(&b, NULL, xrt_thread_main, &tr), 0);
        ck_assert_int_eq(pthread_create(&a, NULL, xrt_thread_main, &ts), 0);
        ck_assert_int_eq(pthread_join(a, NULL), 0);
        ck_assert_int_eq(pthread_join(b, NULL), 0);
        ck_assert_int_eq(sx.ok + rx.ok, 2);
        ck_assert_int_eq(sx.bad + rx.bad, 0);
        ck_assert_int_eq(rx.sum, (long)XRT_N * (XRT_N - 1) / 2);
        ck_assert_int_eq(eco_chan_free(sx.ch), 0);
    }
}
END_TEST

/* ---- stress: 4 runtimes x 100 coroutines + 2 plain threads ---- */

#define ST_THREADS 4
#define ST_COS 100 /* per runtime: half send, half receive */
#define ST_SENDERS (ST_THREADS * ST_COS / 2 + 1)
#define ST_RECEIVERS (ST_THREADS * ST_COS / 2 + 1)

struct msg {
    uint32_t sender, seq; /* seq counts per sender and channel */
    uint64_t id;          /* 0 .. total-1, each exactly once */
};

static struct stress {
    eco_chan_t *ch[2];    /* unbuffered and buffered */
    uint64_t total;
    atomic_ullong next_id;
    atomic_int senders_left;
    atomic_ullong received, sum;
    atomic_uchar *seen;
    atomic_int errors;
    atomic_int loops_ok;
} st;

static void st_fail(const char *what)
{
    if (atomic_fetch_add(&st.errors, 1) < 5)
        fprintf(stderr, "stress: %s\n", what);
}

/* Sender kinds: 0 plain send, 1 select over both channels, 2 timed send
 * retried after each short timeout. */
static void st_send_all(uint32_t id, int kind)
{
    uint32_t seq[2] = {0, 0};
    for (;;) {
        uint64_t n = atomic_fetch_add(&st.next_id, 1);
        if (n >= st.total)
            break;
        struct msg m[2];
        int c = (int)(n & 1);
        for (int k = 0; k < 2; k++)
            m[k] = (struct msg){id, seq[k], n};
        if (kind == 1) {
            struct eco_chan_case cs[2] = {
                {.ch = st.ch[0], .op = ECO_CHAN_SEND, .elem = &m[0]},
                {.ch = st.ch[1], .op = ECO_CHAN_SEND, .elem = &m[1]},
            };
            int i = eco_chan_select(cs, 2, -1);
            if (i < 0 || cs[i].result != 0)
                st_fail("select send");
            else
                seq[i]++;
            continue;
        }
        int r;
        if (kind == 2) {
            while ((r = eco_chan_send_timeout(st.ch[c], &m[c], 1)) == -1 && errno == ETIMEDOUT)
                ;
        } else {
            r = eco_chan_send(st.ch[c], &m[c]);
        }
        if (r != 0)
            st_fail("send");
        seq[c]++;
    }
    if (atomic_fetch_sub(&st.senders_left, 1) == 1) {
        eco_chan_close(st.ch[0]);
        eco_chan_close(st.ch[1]);
    }
}

static void st_take(uint32_t *last, int c, const struct msg *m)
{
    if (m->id >= st.total || m->sender >= ST_SENDERS) {
        st_fail("bad message");
        return;
    }
    /* From one sender over one channel, seqs come in order. */
    uint32_t *l = &last[m->sender * 2 + c];
    if (*l != UINT32_MAX && m->seq <= *l)
        st_fail("out of order");
    *l = m->seq;
    if (atomic_fetch_add(&st.seen[m->id], 1) != 0)
        st_fail("duplicate");
    atomic_fetch_add_explicit(&st.received, 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st.sum, m->id, memory_order_relaxed);
}

/* Receiver kinds: 0 plain recv on one channel, 1 select over both, 2 timed
 * recv retried on one channel. */
static void st_recv_all(int kind, int c)
{
    uint32_t *last = malloc(sizeof *last * ST_SENDERS * 2);
    memset(last, 0xff, sizeof *last * ST_SENDERS * 2);
    struct msg m;
    if (kind == 1) {
        struct eco_chan_case cs[2] = {
            {.ch = st.ch[0], .op = ECO_CHAN_RECV, .elem = &m},
            {.ch = st.ch[1], .op = ECO_CHAN_RECV, .elem = &m},
        };
        while (cs[0].ch != NULL || cs[1].ch != NULL) {
            int i = eco_chan_select(cs, 2, -1);
            if (i < 0) {
                st_fail("select recv");
                break;
            }
            if (cs[i].result == 1)
                st_take(last, i, &m);
            else
                cs[i].ch = NULL; /* that one has ended */
        }
    } else {
        int r;
        for (;;) {
            if (kind == 2)
                while ((r = eco_chan_recv_timeout(st.ch[c], &m, 1)) == -1 && errno == ETIMEDOUT)
                    ;
            else
                r = eco_chan_recv(st.ch[c], &m);
            if (r != 1)
                break;
            st_take(last, c, &m);
        }
        if (r != 0)
            st_fail("recv");
    }
    free(last);
}

static void *st_co(void *arg)
{
    int i = (int)(intptr_t)arg; /* global index: thread * ST_COS + k */
    int k = i % ST_COS;
    if (k < ST_COS / 2)
        st_send_all((uint32_t)(i / ST_COS * (ST_COS / 2) + k), k % 3);
    else
        st_recv_all(k % 3, k & 1);
    return NULL;
}

static void *st_runtime_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    if (eco_setup(NULL) != 0) {
        st_fail("setup");
        return NULL;
    }
    eco_set_stack_size(ECO_STACK_MIN * 2); /* 400 coroutines: keep it small */
    for (int k = 0; k < ST_COS; k++)
        eco_go(st_co, (void *)(intptr_t)(t * ST_COS + k));
    if (eco_loop() == 0)
        atomic_fetch_add(&st.loops_ok, 1);
    eco_teardown();
    return NULL;
}

static void *st_plain_sender(void *arg)
{
    (void)arg;
    st_send_all(ST_SENDERS - 1, 1);
    return NULL;
}

static void *st_plain_receiver(void *arg)
{
    (void)arg;
    st_recv_all(1, 0);
    return NULL;
}

/* Full size natively and under qemu (about 5x slower here); ThreadSanitizer
 * and Valgrind (10-50x) run it smaller.  ECO_STRESS_MSGS overrides. */
static uint64_t stress_total(void)
{
    const char *env = getenv("ECO_STRESS_MSGS");
    if (env != NULL && atoll(env) > 0)
        return (uint64_t)atoll(env);
#if defined(__SANITIZE_THREAD__)
    return 300000;
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
    return 300000;
#endif
#endif
    if (RUNNING_ON_VALGRIND)
        return 200000;
    return 1000000;
}

START_TEST(stress_exactly_once)
{
    memset(&st, 0, sizeof st);
    st.total = stress_total();
    st.ch[0] = eco_chan_new(sizeof(struct msg), 0);
    st.ch[1] = eco_chan_new(sizeof(struct msg), 64);
    st.seen = calloc(st.total, 1);
    atomic_init(&st.senders_left, ST_SENDERS);
    pthread_t rt[ST_THREADS], ps, pr;
    long t0 = now_ms();
    for (int t = 0; t < ST_THREADS; t++)
        ck_assert_int_eq(pthread_create(&rt[t], NULL, st_runtime_thread, (void *)(intptr_t)t), 0);
    ck_assert_int_eq(pthread_create(&ps, NULL, st_plain_sender, NULL), 0);
    ck_assert_int_eq(pthread_create(&pr, NULL, st_plain_receiver, NULL), 0);
    for (int t = 0; t < ST_THREADS; t++)
        pthread_join(rt[t], NULL);
    pthread_join(ps, NULL);
    pthread_join(pr, NULL);
    fprintf(stderr, "stress: %llu messages in %ld ms\n", (unsigned long long)st.total,
            now_ms() - t0);
    ck_assert_int_eq(atomic_load(&st.errors), 0);
    ck_assert_int_eq(atomic_load(&st.loops_ok), ST_THREADS);
    ck_assert_uint_eq(atomic_load(&st.received), st.total);
    ck_assert_uint_eq(atomic_load(&st.sum), st.total * (st.total - 1) / 2);
    for (uint64_t i = 0; i < st.total; i++)
        if (atomic_load_explicit(&st.seen[i], memory_order_relaxed) != 1)
            ck_abort_msg("message %llu seen %d times", (unsigned long long)i, st.seen[i]);
    ck_assert_int_eq(eco_chan_free(st.ch[0]), 0);
    ck_assert_int_eq(eco_chan_free(st.ch[1]), 0);
    free(st.seen);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("chan");
    TCase *tc = rt_tcase("chan");
    tcase_add_test(tc, new_and_bad_arguments);
    tcase_add_test(tc, buffered_fifo_and_try);
    tcase_add_test(tc, waiting_on_runtime_stack_is_eperm);
    tcase_add_test(tc, buffered_blocks_when_full);
    tcase_add_test(tc, unbuffered_rendezvous);
    tcase_add_test(tc, try_on_unbuffered);
    tcase_add_test(tc, waiters_served_fifo);
    tcase_add_test(tc, ring_after_waiting_senders);
    tcase_add_test(tc, close_wakes_every_waiter);
    tcase_add_test(tc, close_keeps_buffered_elements);
    tcase_add_test(tc, free_with_waiters_is_ebusy);
    tcase_add_test(tc, timeouts_expire);
    tcase_add_test(tc, timeout_not_reached);
    tcase_add_test(tc, select_waits_and_cleans_up);
    tcase_add_test(tc, select_timeout_and_poll);
    tcase_add_test(tc, select_woken_by_close);
    tcase_add_test(tc, select_is_fair);
    tcase_add_test(tc, thread_and_coroutine_talk);
    tcase_add_test(tc, thread_timeouts_and_select);
    tcase_add_test(tc, coroutines_of_two_threads);
    suite_add_tcase(s, tc);
    TCase *stress = tcase_create("stress");
    tcase_set_timeout(stress, 600);
    tcase_add_test(stress, stress_exactly_once);
    suite_add_tcase(s, stress);
    return run_suite(s);
}
