/*
 * eco_socket.c - POSIX-shaped socket calls that park the calling coroutine,
 * not the thread.
 *
 * Each runtime keeps a table indexed by fd.  An entry holds, per
 * direction, a FIFO of parked waiters, a readiness hint, an owner (the fd
 * lock of eco_fd_lock) and one persistent level-triggered libevent event,
 * added at the first wait.  The read event stays added while someone keeps
 * reading, so a request costs no epoll_ctl; it is taken out only when it
 * fires with nobody waiting (the loop would spin otherwise), and the write
 * event only while a writer waits, as a hand-written callback program does.
 *
 * The hint lets a call park without first paying for a read that would say
 * EAGAIN: on a stream, a short read means the receive queue was drained and
 * a short write that the send buffer is full.  Level-triggered events make
 * that safe: whatever is pending (data, end of file, a reset) is reported
 * again by the next poll of the loop, so no wake-up is lost.
 *
 * One readiness wakes one waiter (the head).  A waiter whose call then
 * succeeds, with the fd still ready, wakes the next one: no thundering herd,
 * and no wake-up lost between waiters that share an fd.
 *
 * Every wait here is a wait record of eco_wait.c: io waits (read, write,
 * accept, connect) and lock waits sit in their fd's queues, poll waits in
 * the pollers list of each fd they watch, so that eco_close reaches them
 * all.  The runtime's part of the table is struct eco_fds (eco_internal.h),
 * and the hooks below release what a returning coroutine still holds, drop
 * idle events when the last coroutine is done, and free it all at
 * teardown.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

/* The hot path, flattened into each call: fewer frames for a parked
 * coroutine to come back through, and constant op kinds folded. */
#define ECO_INLINE static inline __attribute__((always_inline))

enum { RD = 0, WR = 1 };

/* Waiters are linked through their coroutine records (qprev, qnext): a
 * coroutine waits in one queue at a time, and waking it touches its record
 * anyway.  The ring is circular (the tail is head->qprev), so a queue is
 * one pointer. */
struct queue {
    eco_t *head;
};

/* What every call and every wake-up of one direction looks at. */
struct dir {
    struct queue io;     /* parked until the fd is ready this way */
    /* The stack of io.head where it parked (or a stale one): the wake-up
     * prefetches it together with the record, instead of finding it in
     * the record first, so the two cache and TLB misses overlap. */
    void *head_sp;
    unsigned char ready; /* 0: known not ready, park without a syscall */
    unsigned char baton; /* a waiter woken for readiness has yet to run */
    unsigned char armed; /* ev is assigned and added */
    unsigned char timed; /* a timeout is set (timeout_ms >= 0) */
    unsigned char held;  /* someone owns the direction (dir_cold's owner) */
};

/* The rest of a direction: needed only to arm, to time out or to lock. */
struct dir_cold {
    struct event *ev;    /* EV_READ or EV_WRITE, persistent; after the struct */
    eco_t *owner;        /* holder of the direction, or NULL (held == 0) */
    struct queue lock;   /* parked until they own this direction */
    long timeout_ms;     /* bound on each call; -1: none */
};

struct pollnode;

/*
 * The first cache line holds all a call and a wake-up touch when nobody
 * times out or locks.  At a thousand connections every line a round trip
 * touches per connection is a cache miss, so the entry is laid out for
 * that: one line of its own, then the read event's two, which libevent
 * touches before rd_cb runs.  Entries are 128-byte aligned, so the first
 * line and the event's first share the 128-byte pair the CPU's adjacent
 * line prefetcher loads together: echo_server at N = 1024 used 0.988x the
 * CPU per round trip with the event there instead of after the cold part
 * (bench/ab_socket.sh against the build before, median of four runs,
 * 0.980-0.992; proxy and N = 64 even; BENCHMARKS.md, Tricks).
 */
#define RD_EV_SPACE 128 /* libevent 2.1's struct event; a bigger one goes after */

struct fdstate {
    struct dir d[2];
    unsigned gen;          /* bumped when the fd is closed: parked calls see it */
    unsigned char open;    /* checked and made nonblocking since the last close */
    unsigned char stream;  /* short transfers say drained / full */
    unsigned char sock;    /* a socket: writes use MSG_NOSIGNAL */
    _Alignas(64) unsigned char rd_ev[RD_EV_SPACE];
    _Alignas(64) struct eco_rt *rt;
    int fd;
    struct dir_cold c[2];
    struct pollnode *pollers; /* eco_poll calls watching this fd */
};
_Static_assert(offsetof(struct fdstate, rd_ev) == 64, "the hot part is one cache line");

/* One blocking call in progress. */
struct call {
    eco_t *co;
    struct fdstate *f;
    unsigned gen;
    int dir;
    int64_t deadline; /* CLOCK_MONOTONIC ns; UNSET until the first park */
};
#define UNSET (-1)

/* ---- queues ---- */

static void q_push(struct queue *q, eco_t *co, int front)
{
    eco_t *h = q->head;
    co->queued = 1;
    if (h == NULL) {
        co->qprev = co->qnext = co;
        q->head = co;
        return;
    }
    /* In before the head: at the tail of the ring, or the new head. */
    eco_t *t = h->qprev;
    co->qnext = h;
    co->qprev = t;
    t->qnext = co;
    h->qprev = co;
    if (front)
        q->head = co;
}

static void q_unlink(struct queue *q, eco_t *co)
{
    if (co->qnext == co) {
        q->head = NULL;
    } else {
        co->qprev->qnext = co->qnext;
        co->qnext->qprev = co->qprev;
        if (q->head == co)
            q->head = co->qnext;
    }
    co->queued = 0;
}

static eco_t *q_pop(struct queue *q)
{
    eco_t *co = q->head;
    if (co != NULL)
        q_unlink(q, co);
    return co;
}

/* ---- the wait records ---- */

/* An io wait (read, write, accept, connect) or a lock wait: the fd's entry
 * is all its hook needs; the kind says the rest. */
struct fd_wait {
    struct eco_wait w;
    struct fdstate *f;
};

struct fd_ops {
    struct eco_wait_ops ops;
    const char *verb;
    int dir;
    int lock;              /* a lock wait, not an io wait */
};

static void fd_describe(const struct eco_wait *w, char *buf, size_t n)
{
    const struct fd_ops *o = (const struct fd_ops *)w->ops;
    const struct fdstate *f = ((const struct fd_wait *)w)->f;
    if (o->lock)
        snprintf(buf, n, "lock fd %d %s", f->fd, o->dir == RD ? "read" : "write");
    else
        snprintf(buf, n, "%s fd %d", o->verb, f->fd);
}

static int fd_cancel(eco_t *co, struct eco_wait *w)
{
    const struct fd_ops *o = (const struct fd_ops *)w->ops;
    struct fdstate *f = ((struct fd_wait *)w)->f;
    if (co->queued)
        q_unlink(o->lock ? &f->c[o->dir].lock : &f->d[o->dir].io, co);
    return 1;
}

#define FD_OPS(verb, dir, lock)                                                               \
    {{.describe = fd_describe, .cancel = fd_cancel, .sourced = !(lock)}, verb, dir, lock}
static const struct fd_ops read_ops = FD_OPS("read", RD, 0);
static const struct fd_ops write_ops = FD_OPS("write", WR, 0);
static const struct fd_ops accept_ops = FD_OPS("accept", RD, 0);
static const struct fd_ops connect_ops = FD_OPS("connect", WR, 0);
static const struct fd_ops lock_ops[2] = {FD_OPS("lock", RD, 1), FD_OPS("lock", WR, 1)};

/* ---- the fd table ---- */

static void dir_reset(struct fdstate *f, int dir)
{
    struct dir *d = &f->d[dir];
    struct dir_cold *c = &f->c[dir];
    eco__ev_del(f->rt, c->ev, &d->armed);
    memset(d, 0, sizeof *d);
    d->ready = 1;
    c->owner = NULL;
    c->lock.head = NULL;
    c->timeout_ms = -1;
}

/* libeco holds something for the fd: it was checked, an event is in, or
 * an eco_poll watches it. */
static int fd_in_use(const struct fdstate *f)
{
    return f->open || f->d[RD].armed || f->d[WR].armed || f->pollers != NULL;
}

static void pollers_drop(struct fdstate *f);

/* Wakes everything parked on f with ECO_WAKE_CLOSED (pollers see the fd
 * closed when they look again) and forgets the fd: the number may come
 * back as a new file. */
static void fd_drop(struct fdstate *f)
{
    f->gen++;
    for (int i = 0; i < 2; i++) {
        eco_t *w;
        while ((w = q_pop(&f->d[i].io)) != NULL)
            eco__wake(w, ECO_WAKE_CLOSED, 0);
        while ((w = q_pop(&f->c[i].lock)) != NULL)
            eco__wake(w, ECO_WAKE_CLOSED, 0);
        dir_reset(f, i);
    }
    pollers_drop(f);
    f->open = 0;
}

/* fd's entry if its chunk exists (the entry may be unused: rt == NULL). */
ECO_INLINE struct fdstate *fd_at(const struct eco_rt *rt, int fd)
{
    size_t i = (size_t)fd / ECO_FD_CHUNK;
    if (ECO_UNLIKELY(fd < 0 || i >= rt->fds.chunk_n || rt->fds.chunk[i] == NULL))
        return NULL;
    return (struct fdstate *)((char *)rt->fds.chunk[i] + (size_t)fd % ECO_FD_CHUNK * rt->fds.entry);
}

/* fd's entry if libeco has set it up, else NULL. */
static struct fdstate *fd_known(const struct eco_rt *rt, int fd)
{
    struct fdstate *f = fd_at(rt, fd);
    return f != NULL && f->rt != NULL ? f : NULL;
}

/* The next entry libeco has set up, from fd *pos on (skipping chunks
 * never made), or NULL at the end; *pos moves past it. */
static struct fdstate *fd_next(const struct eco_rt *rt, size_t *pos)
{
    while (*pos < rt->fds.chunk_n * ECO_FD_CHUNK) {
        size_t i = *pos / ECO_FD_CHUNK;
        if (rt->fds.chunk[i] == NULL) {
            *pos = (i + 1) * ECO_FD_CHUNK;
            continue;
        }
        struct fdstate *f = fd_at(rt, (int)(*pos)++);
        if (f->rt != NULL)
            return f;
    }
    return NULL;
}

static void unlock_dir(struct fdstate *f, int dir);

/* A coroutine returned holding directions: they go to the next in line. */
static void fd_at_exit(eco_t *co)
{
    size_t pos = 0;
    struct fdstate *f;
    while (co->fd_holds != 0 && (f = fd_next(co->rt, &pos)) != NULL)
        for (int dir = RD; dir <= WR; dir++)
            if (f->c[dir].owner == co)
                unlock_dir(f, dir);
    co->fd_holds = 0;
}

/* The last coroutine is done: read events kept for the next read go, so
 * that the base can run dry. */
static void fd_at_quiet(struct eco_rt *rt)
{
    size_t pos = 0;
    struct fdstate *f;
    while ((f = fd_next(rt, &pos)) != NULL)
        for (int dir = RD; dir <= WR; dir++)
            if (f->d[dir].io.head == NULL && !f->d[dir].baton)
                eco__ev_del(rt, f->c[dir].ev, &f->d[dir].armed);
}

static void fd_at_teardown(struct eco_rt *rt)
{
    size_t pos = 0;
    struct fdstate *f;
    while ((f = fd_next(rt, &pos)) != NULL)
        for (int d = 0; d < 2; d++)
            eco__ev_del(rt, f->c[d].ev, &f->d[d].armed);
    for (size_t i = 0; i < rt->fds.chunk_n; i++)
        free(rt->fds.chunk[i]);
    free(rt->fds.chunk);
    memset(&rt->fds, 0, sizeof rt->fds);
}

static const struct eco_hooks fd_hooks = {fd_at_exit, fd_at_teardown, fd_at_quiet};

/* Room in the chunk table for chunk i, the table set up on first use.  0,
 * or -1 with errno. */
static int chunks_reach(struct eco_rt *rt, size_t i)
{
    struct eco_fds *t = &rt->fds;
    if (!t->hooked) {
        int bit = eco__hooks_add(rt, &fd_hooks);
        if (bit < 0) {
            errno = ENOMEM;
            return -1;
        }
        t->hook_bit = (unsigned char)bit;
        t->hooked = 1;
    }
    if (i < t->chunk_n)
        return 0;
    size_t n = t->chunk_n != 0 ? t->chunk_n : 256;
    while (n <= i)
        n *= 2;
    void **grown = malloc(n * sizeof *grown);
    if (grown == NULL) {
        errno = ENOMEM;
        return -1;
    }
    if (t->chunk_n != 0)
        memcpy(grown, t->chunk, t->chunk_n * sizeof *grown);
    memset(grown + t->chunk_n, 0, (n - t->chunk_n) * sizeof *grown);
    free(t->chunk);
    t->chunk = grown;
    t->chunk_n = n;
    return 0;
}

/* The entry for fd, set up on first use; NULL with errno. */
static struct fdstate *fd_slot(struct eco_rt *rt, int fd)
{
    if (fd < 0) {
        errno = EBADF;
        return NULL;
    }
    /* Each event on lines of its own; entries 128-byte aligned (above). */
    size_t head = (sizeof(struct fdstate) + 63) & ~(size_t)63;
    size_t evsize = (event_get_struct_event_size() + 63) & ~(size_t)63;
    int rd_inside = evsize <= RD_EV_SPACE;
    if (rt->fds.entry == 0)
        rt->fds.entry = (head + (rd_inside ? 1 : 2) * evsize + 127) & ~(size_t)127;
    size_t i = (size_t)fd / ECO_FD_CHUNK;
    if (chunks_reach(rt, i) < 0)
        return NULL;
    if (rt->fds.chunk[i] == NULL) {
        /* A chunk is a page when the entries fit, as with libevent 2.1. */
        size_t bytes = (ECO_FD_CHUNK * rt->fds.entry + 4095) & ~(size_t)4095;
        void *chunk = aligned_alloc(4096, bytes);
        if (chunk == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        memset(chunk, 0, bytes);
        rt->fds.chunk[i] = chunk;
    }
    struct fdstate *f = fd_at(rt, fd);
    if (f->rt == NULL) {
        f->rt = rt;
        f->fd = fd;
        f->c[RD].ev = rd_inside ? (struct event *)f->rd_ev : (struct event *)((char *)f + head);
        f->c[WR].ev = (struct event *)((char *)f + head + (rd_inside ? 0 : evsize));
        dir_reset(f, RD);
        dir_reset(f, WR);
    }
    return f;
}

/* Looks at an fd libeco has not seen open before: it must be open, and it
 * is made nonblocking (the call must never block the thread). */
static ECO_COLD struct fdstate *fd_check(struct eco_rt *rt, int fd)
{
    struct fdstate *f = fd_slot(rt, fd);
    if (f == NULL)
        return NULL;
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return NULL; /* EBADF */
    if (!(fl & O_NONBLOCK) && fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return NULL;
    int type = 0;
    socklen_t len = sizeof type;
    struct stat st;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0) {
        f->sock = 1;
        f->stream = type == SOCK_STREAM;
    } else {
        f->sock = 0;
        f->stream = fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode);
    }
    f->open = 1;
    return f;
}

ECO_INLINE struct fdstate *fd_get(struct eco_rt *rt, int fd)
{
    struct fdstate *f = fd_at(rt, fd);
    if (ECO_LIKELY(f != NULL && f->open))
        return f;
    return fd_check(rt, fd);
}

/* An fd libeco just made (socket, accept): known nonblocking.  Whatever the
 * number carried before belonged to a file closed behind our back. */
static void fd_fresh(struct eco_rt *rt, int fd, int stream)
{
    struct fdstate *f = fd_slot(rt, fd);
    if (f == NULL)
        return; /* fd_check will look at it on first use */
    if (fd_in_use(f))
        fd_drop(f);
    f->sock = 1;
    f->stream = (unsigned char)stream;
    f->open = 1;
}

/* ---- readiness ---- */

static void pass_on(struct dir *d, int now);

/* Hands readiness to the head waiter if the fd is ready and nobody holds
 * the baton.  now: resume it at once (from a callback).  The test is
 * inline: after a successful call there is usually nobody to wake. */
ECO_INLINE void kick(struct fdstate *f, int dir, int now)
{
    struct dir *d = &f->d[dir];
    if (ECO_LIKELY(!d->ready || d->baton || d->io.head == NULL))
        return;
    pass_on(d, now);
}

static __attribute__((noinline)) void pass_on(struct dir *d, int now)
{
    eco_t *w = q_pop(&d->io);
    d->baton = 1;
    eco__wake(w, ECO_WAKE_READY, now);
}

/* The lines a wake-up of d's head is about to need, loaded in parallel:
 * its record's two (state and links, saved registers) and its stack's.
 * Without it echo_server used 1.024x the CPU per round trip at N = 1024 on
 * one machine and tcp_proxy 1.050x on another (bench/ab_socket.sh, 16
 * rounds; BENCHMARKS.md, Tricks). */
ECO_INLINE void prefetch_head(const struct dir *d)
{
    const char *w = (const char *)d->io.head;
    if (w == NULL)
        return;
    __builtin_prefetch(w);
    __builtin_prefetch(w + 64);
    __builtin_prefetch((const char *)d->head_sp - sizeof(void *));
}

static void rd_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fdstate *f = arg;
    struct dir *d = &f->d[RD];
    (void)fd;
    (void)what;
    prefetch_head(d);
    d->ready = 1;
    if (d->io.head == NULL && !d->baton) {
        /* Nobody reads now: stop the level-triggered event from firing on
         * every pass; the next wait adds it back. */
        eco__ev_del(f->rt, f->c[RD].ev, &d->armed);
        return;
    }
    kick(f, RD, 1);
}

static void wr_cb(evutil_socket_t fd, short what, void *arg)
{
    struct fdstate *f = arg;
    struct dir *d = &f->d[WR];
    (void)fd;
    (void)what;
    prefetch_head(d);
    d->ready = 1;
    /* Writers wait only while the send buffer is full: watch only then. */
    eco__ev_del(f->rt, f->c[WR].ev, &d->armed);
    kick(f, WR, 1);
}

/* The deadline of c in its fd's direction, fixed at its first wait so
 * that waiting again does not extend it.  Inline, so that io_wait,
 * flattened into the calls, does not take c's address: that would keep
 * the whole call in memory, on lines a wake-up has to load. */
ECO_INLINE int64_t call_deadline(struct call *c)
{
    if (!c->f->d[c->dir].timed)
        return ECO_NEVER;
    if (c->deadline == UNSET)
        c->deadline = eco__deadline(c->f->c[c->dir].timeout_ms);
    return c->deadline;
}

/* Assigns and adds dir's event, the first time or after rd_cb/wr_cb took
 * it out.  0, or -1 with errno. */
static ECO_COLD int arm(struct fdstate *f, int dir)
{
    struct event *ev = f->c[dir].ev;
    if (dir == RD)
        event_assign(ev, f->rt->base, f->fd, EV_READ | EV_PERSIST, rd_cb, f);
    else
        event_assign(ev, f->rt->base, f->fd, EV_WRITE | EV_PERSIST, wr_cb, f);
    return eco__ev_add(f->rt, ev, NULL, &f->d[dir].armed);
}

/* Parks c's coroutine until its fd is ready in c->dir.  front: it was woken
 * and found nothing, so it keeps its place at the head.  0: try again; -1
 * with errno ETIMEDOUT, ECANCELED, EBADF (closed meanwhile), ENOMEM or what
 * the event add reported.
 *
 * Flattened into the calls, like run_op: a frame of its own would sit
 * between the call's frame and the switch, one or two more cache lines
 * for every wake-up to come back through.  timed: 0 when the caller has
 * seen to it that the fd has no timeout (the fast path). */
ECO_INLINE int io_wait(struct call *c, int front, int timed, const struct fd_ops *ops)
{
    struct fdstate *f = c->f;
    struct dir *d = &f->d[c->dir];
    if (ECO_UNLIKELY(!d->armed) && arm(f, c->dir) < 0)
        return -1;
    struct fd_wait w = {.w = {.ops = &ops->ops, .deadline = ECO_NEVER}, .f = f};
    if (timed && ECO_UNLIKELY(d->timed))
        w.w.deadline = call_deadline(c);
    eco_t *co = c->co;
    if (front || d->io.head == NULL)
        d->head_sp = eco__sp();
    q_push(&d->io, co, front);
    kick(f, c->dir, 0);
    int why = eco__park(&w.w);
    if (ECO_UNLIKELY(f->gen != c->gen)) {
        errno = EBADF;
        return -1;
    }
    if (ECO_LIKELY(why == ECO_WAKE_READY)) {
        f->d[c->dir].baton = 0; /* we were handed readiness */
        return 0;
    }
    /* Timed out, cancelled: out of the queue already; pass the readiness
     * on if it came meanwhile. */
    kick(f, c->dir, 0);
    return eco__wait_fail(why);
}

/* ---- the direction lock ---- */

/* Makes c's coroutine the owner of c->dir, waiting in FIFO order. */
static int lock_dir(struct call *c)
{
    struct fdstate *f = c->f;
    struct dir *d = &f->d[c->dir];
    if (!d->held) {
        d->held = 1;
        f->c[c->dir].owner = c->co;
        return 0;
    }
    struct fd_wait w = {.w = {.ops = &lock_ops[c->dir].ops, .deadline = call_deadline(c)},
                        .f = f};
    q_push(&f->c[c->dir].lock, c->co, 0);
    int why = eco__park(&w.w);
    if (f->gen != c->gen) {
        errno = EBADF;
        return -1;
    }
    return why == ECO_WAKE_READY ? 0 : eco__wait_fail(why); /* READY: unlock_dir made us owner */
}

static void unlock_dir(struct fdstate *f, int dir)
{
    eco_t *w = q_pop(&f->c[dir].lock);
    f->c[dir].owner = w;
    f->d[dir].held = w != NULL;
    if (w != NULL)
        eco__wake(w, ECO_WAKE_READY, 0);
}

/* ---- the calls ---- */

enum op_kind {
    OP_READ, OP_READV, OP_RECV, OP_RECVFROM, OP_RECVMSG, OP_ACCEPT,
    OP_WRITE, OP_WRITEV, OP_SEND, OP_SENDTO, OP_SENDMSG,
};

struct op {
    int fd;
    enum op_kind kind;
    void *buf;
    size_t len;
    int flags;
    const struct iovec *iov;
    int iovcnt;
    struct sockaddr *addr;
    socklen_t *addrlen;
    socklen_t tolen;
    struct msghdr *msg;
};

/* The kind of wait an op parks in. */
ECO_INLINE const struct fd_ops *op_wait(enum op_kind kind)
{
    if (kind == OP_ACCEPT)
        return &accept_ops;
    return kind < OP_ACCEPT ? &read_ops : &write_ops;
}

ECO_INLINE ssize_t do_op(struct fdstate *f, const struct op *o)
{
    int fd = o->fd;
    switch (o->kind) {
    case OP_READ:
        return read(fd, o->buf, o->len);
    case OP_READV:
        return readv(fd, o->iov, o->iovcnt);
    case OP_RECV:
        return recv(fd, o->buf, o->len, o->flags);
    case OP_RECVFROM:
        return recvfrom(fd, o->buf, o->len, o->flags, o->addr, o->addrlen);
    case OP_RECVMSG:
        return recvmsg(fd, o->msg, o->flags);
    case OP_ACCEPT:
        return accept4(fd, o->addr, o->addrlen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    case OP_WRITE:
        /* On a socket, send: a reset peer is EPIPE, not a SIGPIPE. */
        if (f->sock)
            return send(fd, o->buf, o->len, MSG_NOSIGNAL);
        return write(fd, o->buf, o->len);
    case OP_WRITEV:
        if (f->sock) {
            struct msghdr m = {.msg_iov = (struct iovec *)o->iov, .msg_iovlen = (size_t)o->iovcnt};
            return sendmsg(fd, &m, MSG_NOSIGNAL);
        }
        return writev(fd, o->iov, o->iovcnt);
    case OP_SEND:
        return send(fd, o->buf, o->len, o->flags | MSG_NOSIGNAL);
    case OP_SENDTO:
        return sendto(fd, o->buf, o->len, o->flags | MSG_NOSIGNAL, o->addr, o->tolen);
    case OP_SENDMSG:
        return sendmsg(fd, o->msg, o->flags | MSG_NOSIGNAL);
    }
    errno = EINVAL;
    return -1;
}

/* One attempt at o: a count, or -1 with errno.  Keeps the hint: EAGAIN, or
 * a short transfer on a stream, says the fd is not ready any more. */
ECO_INLINE ssize_t try_op(struct fdstate *f, struct dir *d, const struct op *o, size_t want)
{
    ssize_t n;
    do
        n = do_op(f, o);
    while (n < 0 && (errno == EINTR || (o->kind == OP_ACCEPT && errno == ECONNABORTED)));
    if (n > 0) {
        if (want != 0 && f->stream && (size_t)n < want)
            d->ready = 0;
    } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        d->ready = 0;
    }
    return n;
}

static ssize_t io_slow(int fd, enum op_kind kind, void *buf, size_t len, int flags, int woken);

/* Runs o until it does not say EAGAIN.  want: the byte count asked for when
 * a shorter answer means drained/full (streams only), else 0.  woken: the
 * call was already handed readiness once.  fast: o is a plain read, recv,
 * write or send on an fd without a timeout; should a timeout be set while
 * it waits, the call goes on in io_slow. */
ECO_INLINE ssize_t run_op(struct call *c, const struct op *o, size_t want, int woken, int fast)
{
    struct fdstate *f = c->f;
    struct dir *d = &f->d[c->dir];
    /* A zero timeout asks for one nonblocking attempt, hint or not. */
    int force = d->timed && f->c[c->dir].timeout_ms == 0;
    ssize_t n;
    for (;;) {
        /* Newcomers queue behind parked waiters, in order. */
        if ((d->ready && (woken || d->io.head == NULL)) || force) {
            force = 0;
            n = try_op(f, d, o, want);
            if (n >= 0)
                break;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                return -1;
        }
        if (io_wait(c, woken, !fast, op_wait(o->kind)) < 0)
            return -1;
        d = &f->d[c->dir];
        woken = 1;
        if (fast && ECO_UNLIKELY(d->timed))
            return io_slow(o->fd, o->kind, o->buf, o->len, o->flags, 1);
    }
    kick(f, c->dir, 0);
    return n;
}

/* Starts a blocking call on fd in dir: -1 with errno if it cannot (not in
 * a coroutine, stopped, a bad fd). */
ECO_INLINE int call_start(struct call *c, int fd, int dir)
{
    eco_t *co = eco__blocking();
    if (ECO_UNLIKELY(co == NULL))
        return -1;
    struct fdstate *f = fd_get(co->rt, fd);
    if (ECO_UNLIKELY(f == NULL))
        return -1;
    c->co = co;
    c->f = f;
    c->gen = f->gen;
    c->dir = dir;
    c->deadline = UNSET;
    return 0;
}

/* One call: waits its turn if another coroutine holds the direction.
 * fast: as for run_op; a timeout or a held direction goes to io_slow. */
ECO_INLINE ssize_t call_run(struct call *c, const struct op *o, size_t want, int woken, int fast)
{
    struct dir *d = &c->f->d[c->dir];
    if (ECO_LIKELY(!d->held || c->f->c[c->dir].owner == c->co)) {
        if (!fast)
            return run_op(c, o, want, woken, 0);
        if (ECO_LIKELY(!d->timed))
            return run_op(c, o, want, woken, 1);
    }
    if (fast)
        return io_slow(o->fd, o->kind, o->buf, o->len, o->flags, woken);
    /* Through a copy: lock_dir is out of line, and c's address passed to
     * it would keep the whole call in memory (see call_deadline). */
    struct call tmp = *c;
    int r = lock_dir(&tmp);
    c->deadline = tmp.deadline;
    if (r < 0)
        return -1;
    ssize_t n = run_op(c, o, want, woken, 0);
    int err = errno;
    if (c->f->gen == c->gen)
        unlock_dir(c->f, c->dir);
    errno = err;
    return n;
}

ECO_INLINE ssize_t io_call(int fd, int dir, const struct op *o, size_t want, int fast)
{
    struct call c;
    if (call_start(&c, fd, dir) < 0)
        return -1;
    return call_run(&c, o, want, 0, fast);
}

/* Whether a short answer to a recv-like call with these flags means the
 * socket was drained: a peek or a wait-for-all read says nothing about
 * what is left. */
static int recv_drains(int flags)
{
    return !(flags & (MSG_PEEK | MSG_WAITALL | MSG_OOB));
}

/*
 * read, recv, write and send take a fast path (io_call with fast = 1) for
 * the usual case, an fd without a timeout in a direction nobody holds.
 * Everything it keeps across a park then fits in registers, which the
 * switch saves in the coroutine record: the parked stack holds the call's
 * pushed registers, its return address and its wait record, so a wake-up
 * brings back little of it.  The rest (timeouts, locked directions) needs
 * the call in memory and runs here, out of line, entered with plain
 * arguments so that the fast path keeps no frame for it.
 */
static __attribute__((noinline)) ssize_t io_slow(int fd, enum op_kind kind, void *buf, size_t len,
                                                 int flags, int woken)
{
    struct op o = {.fd = fd, .kind = kind, .buf = buf, .len = len, .flags = flags};
    int dir = kind == OP_READ || kind == OP_RECV ? RD : WR;
    struct call c;
    if (call_start(&c, fd, dir) < 0)
        return -1;
    size_t want = kind != OP_RECV || recv_drains(flags) ? len : 0;
    return call_run(&c, &o, want, woken, 0);
}

static size_t iov_total(const struct iovec *iov, int cnt)
{
    size_t t = 0;
    for (int i = 0; i < cnt; i++)
        t += iov[i].iov_len;
    return t;
}

static int bad_buf(const void *buf, size_t len)
{
    if (buf == NULL && len > 0) {
        errno = EFAULT;
        return 1;
    }
    return 0;
}

static int bad_iov(const struct iovec *iov, int cnt)
{
    if (cnt < 0 || cnt > IOV_MAX || (iov == NULL && cnt > 0)) {
        errno = iov == NULL && cnt > 0 ? EFAULT : EINVAL;
        return 1;
    }
    return 0;
}

/* ---- whole buffers ---- */

/* The rest of full_call, out of line (as io_slow is for the fast path):
 * takes dir for the whole call unless the caller holds it already, and
 * moves what is left after the first `done` bytes. */
static ECO_COLD ssize_t full_slow(int fd, int dir, char *buf, size_t n, size_t done)
{
    struct call c;
    if (call_start(&c, fd, dir) < 0)
        return done > 0 ? (ssize_t)done : -1;
    int took = 0;
    if (c.f->c[dir].owner != c.co) {
        if (lock_dir(&c) < 0)
            return done > 0 ? (ssize_t)done : -1;
        took = 1;
    }
    int err = 0;
    while (done < n) {
        struct op o = {.fd = fd, .kind = dir == RD ? OP_READ : OP_WRITE, .buf = buf + done,
                       .len = n - done};
        ssize_t k = run_op(&c, &o, n - done, 0, 0);
        if (k < 0) {
            err = errno;
            break;
        }
        if (k == 0 && dir == RD)
            break; /* EOF */
        done += (size_t)k;
    }
    if (took && c.f->gen == c.gen)
        unlock_dir(c.f, dir);
    if (err != 0 && done == 0) {
        errno = err;
        return -1;
    }
    errno = err; /* 0 at EOF; the error that cut a partial transfer short */
    return (ssize_t)done;
}

/* The usual case inline: a free direction, a ready fd, all in one call.
 * Nothing can cut in between this attempt and full_slow taking the
 * direction, as long as this coroutine does not switch. */
ECO_INLINE ssize_t full_call(int fd, int dir, char *buf, size_t n)
{
    if (bad_buf(buf, n))
        return -1;
    struct call c;
    if (call_start(&c, fd, dir) < 0)
        return -1;
    struct dir *d = &c.f->d[dir];
    size_t done = 0;
    if (!d->held && d->ready && d->io.head == NULL && n > 0) {
        struct op o = {.fd = fd, .kind = dir == RD ? OP_READ : OP_WRITE, .buf = buf, .len = n};
        ssize_t k = try_op(c.f, d, &o, n);
        if (k == (ssize_t)n)
            return k; /* errno as it was: setting it is a call into libc */
        if (k == 0 && dir == RD) {
            errno = 0;
            return 0;
        }
        if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
            return -1;
        if (k > 0)
            done = (size_t)k;
    }
    return full_slow(fd, dir, buf, n, done);
}

ssize_t eco_read_full(int fd, void *buf, size_t n)
{
    return full_call(fd, RD, buf, n);
}

ssize_t eco_write_full(int fd, const void *buf, size_t n)
{
    return full_call(fd, WR, (char *)buf, n);
}

/* ---- the wrappers ---- */

ssize_t eco_read(int fd, void *buf, size_t len)
{
    if (bad_buf(buf, len))
        return -1;
    struct op o = {.fd = fd, .kind = OP_READ, .buf = buf, .len = len};
    return io_call(fd, RD, &o, len, 1);
}

ssize_t eco_readv(int fd, const struct iovec *iov, int iovcnt)
{
    if (bad_iov(iov, iovcnt))
        return -1;
    struct op o = {.fd = fd, .kind = OP_READV, .iov = iov, .iovcnt = iovcnt};
    return io_call(fd, RD, &o, iov_total(iov, iovcnt), 0);
}

ssize_t eco_recv(int fd, void *buf, size_t len, int flags)
{
    if (bad_buf(buf, len))
        return -1;
    struct op o = {.fd = fd, .kind = OP_RECV, .buf = buf, .len = len, .flags = flags};
    return io_call(fd, RD, &o, recv_drains(flags) ? len : 0, 1);
}

ssize_t eco_recvfrom(int fd, void *buf, size_t len, int flags, struct sockaddr *addr,
                     socklen_t *addrlen)
{
    if (bad_buf(buf, len))
        return -1;
    if (addr != NULL && addrlen == NULL) {
        errno = EFAULT;
        return -1;
    }
    struct op o = {.fd = fd, .kind = OP_RECVFROM, .buf = buf, .len = len, .flags = flags,
                   .addr = addr, .addrlen = addrlen};
    return io_call(fd, RD, &o, recv_drains(flags) ? len : 0, 0);
}

ssize_t eco_recvmsg(int fd, struct msghdr *msg, int flags)
{
    if (msg == NULL) {
        errno = EFAULT;
        return -1;
    }
    struct op o = {.fd = fd, .kind = OP_RECVMSG, .msg = msg, .flags = flags};
    size_t want = recv_drains(flags) ? iov_total(msg->msg_iov, (int)msg->msg_iovlen) : 0;
    return io_call(fd, RD, &o, want, 0);
}

ssize_t eco_write(int fd, const void *buf, size_t len)
{
    if (bad_buf(buf, len))
        return -1;
    struct op o = {.fd = fd, .kind = OP_WRITE, .buf = (void *)buf, .len = len};
    return io_call(fd, WR, &o, len, 1);
}

ssize_t eco_writev(int fd, const struct iovec *iov, int iovcnt)
{
    if (bad_iov(iov, iovcnt))
        return -1;
    struct op o = {.fd = fd, .kind = OP_WRITEV, .iov = iov, .iovcnt = iovcnt};
    return io_call(fd, WR, &o, iov_total(iov, iovcnt), 0);
}

ssize_t eco_send(int fd, const void *buf, size_t len, int flags)
{
    if (bad_buf(buf, len))
        return -1;
    struct op o = {.fd = fd, .kind = OP_SEND, .buf = (void *)buf, .len = len, .flags = flags};
    return io_call(fd, WR, &o, len, 1);
}

ssize_t eco_sendto(int fd, const void *buf, size_t len, int flags, const struct sockaddr *addr,
                   socklen_t addrlen)
{
    if (bad_buf(buf, len))
        return -1;
    struct op o = {.fd = fd, .kind = OP_SENDTO, .buf = (void *)buf, .len = len, .flags = flags,
                   .addr = (struct sockaddr *)addr, .tolen = addrlen};
    return io_call(fd, WR, &o, len, 0);
}

ssize_t eco_sendmsg(int fd, const struct msghdr *msg, int flags)
{
    if (msg == NULL) {
        errno = EFAULT;
        return -1;
    }
    struct op o = {.fd = fd, .kind = OP_SENDMSG, .msg = (struct msghdr *)msg, .flags = flags};
    return io_call(fd, WR, &o, iov_total(msg->msg_iov, (int)msg->msg_iovlen), 0);
}

int eco_accept(int fd, struct sockaddr *addr, socklen_t *addrlen)
{
    if (addr != NULL && addrlen == NULL) {
        errno = EFAULT;
        return -1;
    }
    struct op o = {.fd = fd, .kind = OP_ACCEPT, .addr = addr, .addrlen = addrlen};
    struct call c;
    if (call_start(&c, fd, RD) < 0)
        return -1;
    int nfd = (int)call_run(&c, &o, 0, 0, 0);
    if (nfd >= 0)
        fd_fresh(c.co->rt, nfd, c.f->stream);
    return nfd;
}

int eco_socket(int domain, int type, int protocol)
{
    int fd = socket(domain, type | SOCK_NONBLOCK | SOCK_CLOEXEC, protocol);
    struct eco_rt *rt = eco__rt;
    if (fd >= 0 && rt != NULL)
        fd_fresh(rt, fd, (type & 0xf) == SOCK_STREAM);
    return fd;
}

int eco_connect(int fd, const struct sockaddr *addr, socklen_t addrlen)
{
    struct call c;
    if (call_start(&c, fd, WR) < 0)
        return -1;
    if (addr == NULL) {
        errno = EFAULT;
        return -1;
    }
    if (connect(fd, addr, addrlen) == 0)
        return 0;
    /* Interrupted, the connect goes on asynchronously, as in progress. */
    if (errno != EINPROGRESS && errno != EINTR)
        return -1;
    c.f->d[WR].ready = 0;
    int err = 0;
    socklen_t len = sizeof err;
    do {
        if (io_wait(&c, 0, 1, &connect_ops) < 0)
            return -1;
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            return -1;
        /* Writable with no error and no peer would be a stray wake-up. */
        if (err == 0) {
            struct sockaddr_storage ss;
            socklen_t sl = sizeof ss;
            if (getpeername(fd, (struct sockaddr *)&ss, &sl) == 0)
                break;
            if (errno != ENOTCONN)
                return -1;
            c.f->d[WR].ready = 0;
        }
    } while (err == 0);
    kick(c.f, WR, 0);
    if (err != 0) {
        errno = err;
        return -1;
    }
    return 0;
}

int eco_close(int fd)
{
    struct eco_rt *rt = eco__rt;
    struct fdstate *f = rt != NULL ? fd_known(rt, fd) : NULL;
    if (f != NULL && fd_in_use(f))
        fd_drop(f);
    return close(fd);
}

/* ---- per-fd settings ---- */

static int bad_how(int how)
{
    if (how == 0 || (how & ~(ECO_RD | ECO_WR))) {
        errno = EINVAL;
        return 1;
    }
    return 0;
}

int eco_fd_timeout(int fd, int how, long ms)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    if (bad_how(how))
        return -1;
    struct fdstate *f = fd_get(rt, fd);
    if (f == NULL)
        return -1;
    for (int dir = RD; dir <= WR; dir++) {
        if (how & (dir == RD ? ECO_RD : ECO_WR)) {
            f->c[dir].timeout_ms = ms < 0 ? -1 : ms;
            f->d[dir].timed = ms >= 0;
        }
    }
    return 0;
}

/* One direction fewer held by co.  A count that saturated stays put: the
 * scan when co returns (fd_at_exit) finds what is really held. */
static void held_less(eco_t *co)
{
    if (co->fd_holds > 0 && co->fd_holds < UCHAR_MAX)
        co->fd_holds--;
}

static void held_more(eco_t *co)
{
    if (co->fd_holds < UCHAR_MAX)
        co->fd_holds++;
    co->exit_hooks |= (unsigned char)(1u << co->rt->fds.hook_bit);
}

int eco_fd_lock(int fd, int how)
{
    if (bad_how(how))
        return -1;
    struct call c;
    if (call_start(&c, fd, RD) < 0)
        return -1;
    for (int dir = RD; dir <= WR; dir++) {
        if (!(how & (dir == RD ? ECO_RD : ECO_WR)))
            continue;
        if (c.f->c[dir].owner == c.co) {
            errno = EDEADLK;
            return -1;
        }
    }
    for (int dir = RD; dir <= WR; dir++) {
        if (!(how & (dir == RD ? ECO_RD : ECO_WR)))
            continue;
        c.dir = dir;
        c.deadline = UNSET;
        if (lock_dir(&c) < 0) {
            int err = errno;
            if (dir == WR && (how & ECO_RD) && c.f->gen == c.gen) {
                unlock_dir(c.f, RD);
                held_less(c.co);
            }
            errno = err;
            return -1;
        }
        held_more(c.co);
    }
    return 0;
}

int eco_fd_unlock(int fd, int how)
{
    if (bad_how(how))
        return -1;
    eco_t *co = eco__in_coroutine();
    if (co == NULL)
        return eco__eperm();
    struct eco_rt *rt = co->rt;
    struct fdstate *f = fd_known(rt, fd);
    for (int dir = RD; dir <= WR; dir++) {
        if ((how & (dir == RD ? ECO_RD : ECO_WR)) && (f == NULL || f->c[dir].owner != co)) {
            errno = EPERM;
            return -1;
        }
    }
    for (int dir = RD; dir <= WR; dir++) {
        if (how & (dir == RD ? ECO_RD : ECO_WR)) {
            unlock_dir(f, dir);
            held_less(co);
        }
    }
    return 0;
}

/* ---- poll ---- */

/* One fd of an eco_poll call: its event, and its place in the fd's list of
 * pollers, where eco_close finds it. */
struct pollnode {
    struct pollnode *prev, *next;
    struct fdstate *f;     /* NULL: not linked (a negative fd) */
    struct event *ev;
    eco_t *co;
    unsigned char added;
};

struct poll_wait {
    struct eco_wait w;
    struct pollnode *nodes;
    nfds_t n;
};

static void poll_describe(const struct eco_wait *w, char *buf, size_t n)
{
    snprintf(buf, n, "poll %lu fds", (unsigned long)((const struct poll_wait *)w)->n);
}

static void poll_unlink(struct pollnode *p);

static int poll_cancel(eco_t *co, struct eco_wait *w)
{
    const struct poll_wait *pw = (const struct poll_wait *)w;
    (void)co;
    for (nfds_t i = 0; i < pw->n; i++)
        poll_unlink(&pw->nodes[i]);
    return 1;
}

static const struct eco_wait_ops poll_ops = {
    .describe = poll_describe, .cancel = poll_cancel, .sourced = 1};

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    eco__wake(arg, ECO_WAKE_READY, 1);
}

static void poll_unlink(struct pollnode *p)
{
    if (p->f == NULL)
        return;
    if (p->prev != NULL)
        p->prev->next = p->next;
    else
        p->f->pollers = p->next;
    if (p->next != NULL)
        p->next->prev = p->prev;
    eco__ev_del(p->f->rt, p->ev, &p->added);
    p->f = NULL;
}

/* eco_close: every poller of f is woken, its event for f gone before the
 * number can be reused. */
static void pollers_drop(struct fdstate *f)
{
    while (f->pollers != NULL) {
        struct pollnode *p = f->pollers;
        eco_t *co = p->co;
        poll_unlink(p);
        eco__wake(co, ECO_WAKE_READY, 0);
    }
}

#define POLL_MAX_FDS ((nfds_t)1 << 20)
#define POLL_INLINE 8

int eco_poll(struct pollfd *fds, nfds_t nfds, long timeout_ms)
{
    eco_t *co = eco__blocking();
    if (co == NULL)
        return -1;
    if ((fds == NULL && nfds > 0) || nfds > POLL_MAX_FDS) {
        errno = EINVAL;
        return -1;
    }
    struct eco_rt *rt = co->rt;
    int64_t deadline = eco__deadline(timeout_ms);
    /* Ready already (or only asked to look): poll(2) answers exactly. */
    int n = poll(fds, nfds, 0);
    if (n != 0 || timeout_ms == 0)
        return n;

    size_t evsize = (event_get_struct_event_size() + 15) & ~(size_t)15;
    size_t each = sizeof(struct pollnode) + evsize;
    _Alignas(max_align_t) char inline_buf[POLL_INLINE * (sizeof(struct pollnode) + 256)];
    char *buf = inline_buf;
    if (nfds > POLL_INLINE || evsize > 256) {
        buf = malloc(nfds * each);
        if (buf == NULL) {
            errno = ENOMEM;
            return -1;
        }
    }
    struct pollnode *nodes = (struct pollnode *)buf;
    char *events = buf + nfds * sizeof(struct pollnode);
    memset(nodes, 0, nfds * sizeof *nodes);
    nfds_t watched = 0;
    n = 0;
    for (nfds_t i = 0; i < nfds; i++) {
        struct pollnode *p = &nodes[i];
        p->ev = (struct event *)(events + i * evsize);
        p->co = co;
        if (fds[i].fd < 0)
            continue;
        struct fdstate *f = fd_slot(rt, fds[i].fd);
        short what = 0;
        if (fds[i].events & (POLLIN | POLLPRI))
            what |= EV_READ;
        if (fds[i].events & POLLOUT)
            what |= EV_WRITE;
        if (what == 0)
            what = EV_READ; /* hang-ups and errors make an fd readable */
        if (f == NULL || event_assign(p->ev, rt->base, fds[i].fd, what | EV_PERSIST, poll_cb, co) != 0 ||
            eco__ev_add(rt, p->ev, NULL, &p->added) != 0) {
            n = -1; /* ENOMEM, or an fd epoll refuses (EPERM) */
            break;
        }
        p->f = f;
        p->next = f->pollers;
        if (f->pollers != NULL)
            f->pollers->prev = p;
        f->pollers = p;
        watched++;
    }
    if (n == 0 && watched == 0 && deadline == ECO_NEVER) {
        errno = EINVAL; /* would sleep forever with nothing to wait for */
        n = -1;
    }
    int why = ECO_WAKE_READY;
    while (n == 0) {
        struct poll_wait w = {.w = {.ops = &poll_ops, .deadline = deadline}, .nodes = nodes,
                              .n = nfds};
        why = eco__park(&w.w);
        n = poll(fds, nfds, 0);
        if (why != ECO_WAKE_READY)
            break;
        /* Woken but nothing ready (a readiness consumed by someone else):
         * wait on, for what is left of the timeout. */
    }
    int err = errno;
    for (nfds_t i = 0; i < nfds; i++)
        poll_unlink(&nodes[i]);
    if (buf != inline_buf)
        free(buf);
    errno = err;
    if (n == 0 && why != ECO_WAKE_TIMEOUT)
        return eco__wait_fail(why);
    return n;
}
