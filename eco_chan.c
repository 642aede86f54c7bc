/*
 * eco_chan.c - Go-like channels, safe across threads and runtimes.
 *
 * A channel is a ring buffer and two FIFO wait queues (senders, receivers)
 * under two locks (see struct eco_chan).  A blocked operation is a
 * selection (struct sel): one wait record per case, each in the queue of its
 * channel.  Whoever completes the selection first - a peer's send or
 * receive, close, or the waiter's own timeout - claims it; only the claimer
 * moves the element (straight between the peer's buffer and the waiter's:
 * no intermediate copy) and it wakes the waiter after dropping the locks.
 *
 * Only two parties ever unlink a record: the claimer (the one record it
 * fired through) and the waiter itself.  Peers step over records of
 * selections they cannot claim.  So a waiter knows without looking which of
 * its records are still queued, and a channel holding one cannot be freed
 * (EBUSY): the waiter may lock it to clean up.
 *
 * Waking: a coroutine through eco__wake in its own thread or eco__remote
 * (the runtime's coalesced eventfd) from any other, a plain thread through
 * a condition variable in its wait record.  A coroutine's selection is a
 * wait record of eco_wait.c (struct chan_wait): its cancel hook is the
 * waiter's side of the claim race, so a timeout, eco_cancel or eco_teardown
 * either takes every record out of its queue or finds the selection
 * completed, its wake-up on the way.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <limits.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/*
 * The channel lock: a word, 0 free, 1 held, 2 held with sleepers (Drepper's
 * "Futexes Are Tricky", mutex 2).  Inline, with one atomic each way, it
 * saves the two library calls of a pthread_mutex on every operation; it
 * spins briefly (critical sections are a few dozen instructions) before
 * sleeping in the kernel.
 */
typedef struct {
    _Atomic int v;
} chan_lock_t;

static inline void cpu_relax(void)
{
#if defined(__x86_64__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield" ::: "memory");
#endif
}

#define LOCK_SPINS 100

static __attribute__((noinline)) void lk_lock_slow(chan_lock_t *l)
{
    for (int i = 0; i < LOCK_SPINS; i++) {
        int c = atomic_load_explicit(&l->v, memory_order_relaxed);
        if (c == 0 && atomic_compare_exchange_weak_explicit(&l->v, &c, 1, memory_order_acquire,
                                                            memory_order_relaxed))
            return;
        cpu_relax();
    }
    while (atomic_exchange_explicit(&l->v, 2, memory_order_acquire) != 0)
        syscall(SYS_futex, &l->v, FUTEX_WAIT_PRIVATE, 2, NULL, NULL, 0);
}

/* Whether the process has one thread (glibc 2.32+).  It turns false at the
 * first pthread_create and stays so; no thread is created while a channel
 * lock is held, so a lock taken while it was true is released by either
 * path below. */
#if defined(__has_include)
#if __has_include(<sys/single_threaded.h>)
#include <sys/single_threaded.h>
#define ECO_ONE_THREAD() (__libc_single_threaded != 0)
#endif
#endif
#ifndef ECO_ONE_THREAD
#define ECO_ONE_THREAD() 0
#endif

/* With one thread nobody else can hold or want the lock: plain stores
 * instead of a locked instruction each way (chan_bench pingpong: 0.68x the
 * time, BENCHMARKS.md, Tricks). */
static inline void lk_lock(chan_lock_t *l)
{
    if (ECO_LIKELY(ECO_ONE_THREAD())) {
        atomic_store_explicit(&l->v, 1, memory_order_relaxed);
        return;
    }
    int c = 0;
    if (ECO_UNLIKELY(!atomic_compare_exchange_strong_explicit(&l->v, &c, 1, memory_order_acquire,
                                                              memory_order_relaxed)))
        lk_lock_slow(l);
}

static inline void lk_unlock(chan_lock_t *l)
{
    if (ECO_LIKELY(ECO_ONE_THREAD())) {
        atomic_store_explicit(&l->v, 0, memory_order_relaxed);
        return;
    }
    if (ECO_UNLIKELY(atomic_exchange_explicit(&l->v, 0, memory_order_release) == 2))
        syscall(SYS_futex, &l->v, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
}

enum { SEL_WAITING = 0, SEL_CLAIMED, SEL_CANCELLED };

#define OP_SEND 0
#define OP_RECV 1

/* A plain thread's wait: done under m. */
struct thread_wait {
    pthread_mutex_t m;
    pthread_cond_t c;
    int done;
};

/* One blocked operation (a send, a receive, or a whole select). */
struct sel {
    _Atomic int state;     /* SEL_*; the winning transition claims it */
    int single;            /* one record only (not a select) */
    int fired;             /* set by the claimer: index of the case */
    int closed;            /* set by the claimer: completed by close */
    eco_t *co;             /* the waiting coroutine, or NULL: a plain thread */
    struct thread_wait *tw;
    struct sel *wake_next; /* the claimer's list of selections to wake */
};

/* One case of a selection, in its channel's queue. */
struct waiter {
    struct waiter *prev, *next;
    struct sel *sel;
    void *elem;            /* send: the element; recv: its destination or NULL */
    eco_chan_t *ch;
    int op;                /* OP_SEND or OP_RECV: which queue of ch */
    int index;
};

struct wq {
    struct waiter *head, *tail;
};

/*
 * Two locks, so that a producer and a consumer on two cores do not fight
 * over one cache line for every element: the send lock guards the ring's
 * tail, the receive lock its head; everything else (the wait queues,
 * closed) changes only under both, so either one suffices to read it.
 * The ring's counters are published with release stores and read with
 * acquire loads by the other side, as in a single-producer single-consumer
 * ring.  An unbuffered channel has no ring and uses one lock for both.
 * Lock order: send before receive; channels by address (select).
 */
struct eco_chan {
    /* Read-mostly: set at creation, or changed only under both locks. */
    size_t elem_size;
    size_t cap;
    unsigned char *buf;    /* cap slots, in the same allocation */
    chan_lock_t *rlock;    /* &rlk, or &slk when unbuffered */
    int closed;
    struct wq sendq, recvq;

    /* The senders' side. */
    _Alignas(64) chan_lock_t slk;
    _Atomic size_t tail;   /* elements ever put into the ring */
    size_t tail_slot;      /* tail % cap */
    size_t head_seen;      /* a recent head: room is known without a miss */

    /* The receivers' side. */
    _Alignas(64) chan_lock_t rlk;
    _Atomic size_t head;   /* elements ever taken from the ring */
    size_t head_slot;      /* head % cap */
    size_t tail_seen;
};

static inline void lock_both(eco_chan_t *ch)
{
    lk_lock(&ch->slk);
    if (ch->rlock != &ch->slk)
        lk_lock(ch->rlock);
}

static inline void unlock_both(eco_chan_t *ch)
{
    if (ch->rlock != &ch->slk)
        lk_unlock(ch->rlock);
    lk_unlock(&ch->slk);
}

/* ---- small helpers ---- */

static inline void copy_elem(void *dst, const void *src, size_t size)
{
    /* The common sizes inline to one move; memcpy's call costs more than
     * the rest of a hand-off. */
    switch (size) {
    case 8: memcpy(dst, src, 8); break;
    case 4: memcpy(dst, src, 4); break;
    case 16: memcpy(dst, src, 16); break;
    case 0: break; /* elem may be NULL then */
    default: memcpy(dst, src, size); break;
    }
}

static inline void wq_push(struct wq *q, struct waiter *w)
{
    w->next = NULL;
    w->prev = q->tail;
    if (q->tail != NULL)
        q->tail->next = w;
    else
        q->head = w;
    q->tail = w;
}

static inline void wq_unlink(struct wq *q, struct waiter *w)
{
    if (w->prev != NULL)
        w->prev->next = w->next;
    else
        q->head = w->next;
    if (w->next != NULL)
        w->next->prev = w->prev;
    else
        q->tail = w->prev;
}

/* Claims w's selection for the caller, who holds both locks of w's
 * channel. */
static inline int claim(const struct waiter *w)
{
    struct sel *s = w->sel;
    if (s->single && s->co != NULL && s->co->rt == eco__rt) {
        /* Its owner is a coroutine parked in this very thread (so it cannot
         * be cancelling now) and any other claimer needs the locks we hold:
         * nobody can race us, and a plain store saves the locked CAS. */
        if (atomic_load_explicit(&s->state, memory_order_relaxed) != SEL_WAITING)
            return 0;
        atomic_store_explicit(&s->state, SEL_CLAIMED, memory_order_relaxed);
        return 1;
    }
    int expect = SEL_WAITING;
    return atomic_compare_exchange_strong_explicit(&s->state, &expect, SEL_CLAIMED,
                                                   memory_order_acq_rel, memory_order_relaxed);
}

/* The waiter's side: 1 when it cancelled its selection, 0 when someone had
 * claimed it first (and will wake it). */
static inline int cancel(struct sel *s)
{
    int expect = SEL_WAITING;
    return atomic_compare_exchange_strong_explicit(&s->state, &expect, SEL_CANCELLED,
                                                   memory_order_acq_rel, memory_order_acquire);
}

/* The first record of q the caller could claim, claimed and unlinked. */
static inline struct waiter *take(struct wq *q)
{
    for (struct waiter *w = q->head; w != NULL; w = w->next) {
        if (claim(w)) {
            wq_unlink(q, w);
            return w;
        }
    }
    return NULL;
}

/* Wakes a claimed selection.  Called with no channel lock held; s may be
 * gone as soon as its owner sees the wake, so nothing touches it after. */
static void wake_thread(struct sel *s)
{
    struct thread_wait *tw = s->tw;
    pthread_mutex_lock(&tw->m);
    tw->done = 1;
    pthread_cond_signal(&tw->c);
    pthread_mutex_unlock(&tw->m);
}

static inline void wake(struct sel *s)
{
    eco_t *co = s->co;
    if (ECO_LIKELY(co != NULL && co->rt == eco__rt)) {
        eco__wake(co, ECO_WAKE_READY, 0);
    } else if (co != NULL) {
        /* ENOMEM here (the remote queue could not grow) cannot be undone:
         * the element has moved.  The waiter would hang; that needs the
         * process to be out of memory first. */
        (void)eco__remote(co, ECO_WAKE_READY);
    } else {
        wake_thread(s);
    }
}

static inline unsigned char *slot(const eco_chan_t *ch, size_t i)
{
    return ch->buf + i * ch->elem_size;
}

static inline size_t next_slot(const eco_chan_t *ch, size_t i)
{
    return i + 1 == ch->cap ? 0 : i + 1;
}

/* Ring operations; the caller holds the lock of that end and has checked
 * that there is room (push) or an element (pop). */
static inline void ring_push(eco_chan_t *ch, const void *elem)
{
    size_t t = atomic_load_explicit(&ch->tail, memory_order_relaxed);
    copy_elem(slot(ch, ch->tail_slot), elem, ch->elem_size);
    ch->tail_slot = next_slot(ch, ch->tail_slot);
    atomic_store_explicit(&ch->tail, t + 1, memory_order_release);
}

static inline void ring_pop(eco_chan_t *ch, void *out)
{
    size_t h = atomic_load_explicit(&ch->head, memory_order_relaxed);
    if (out != NULL)
        copy_elem(out, slot(ch, ch->head_slot), ch->elem_size);
    ch->head_slot = next_slot(ch, ch->head_slot);
    atomic_store_explicit(&ch->head, h + 1, memory_order_release);
}

/* Elements in the ring, exact when both locks are held. */
static inline size_t ring_count(const eco_chan_t *ch)
{
    return atomic_load_explicit(&ch->tail, memory_order_acquire) -
           atomic_load_explicit(&ch->head, memory_order_acquire);
}

/* ---- the operations, under both locks, never blocking ---- */

/* 1: sent (to a waiting receiver, *woken set, or into the buffer);
 * 0: would block; -1: closed. */
static inline int send_locked(eco_chan_t *ch, const void *elem, struct sel **woken)
{
    if (ECO_UNLIKELY(ch->closed))
        return -1;
    struct waiter *w = take(&ch->recvq);
    if (w != NULL) {
        if (w->elem != NULL)
            copy_elem(w->elem, elem, ch->elem_size);
        w->sel->fired = w->index;
        w->sel->closed = 0;
        *woken = w->sel;
        return 1;
    }
    if (ring_count(ch) < ch->cap) {
        ring_push(ch, elem);
        return 1;
    }
    return 0;
}

/* 1: received into out (NULL: dropped); 0: would block; -1: closed and
 * drained. */
static inline int recv_locked(eco_chan_t *ch, void *out, struct sel **woken)
{
    if (ring_count(ch) > 0) {
        ring_pop(ch, out);
        /* A full buffer may have a sender waiting: its element takes the
         * slot just freed, in order behind the buffered ones. */
        struct waiter *w = take(&ch->sendq);
        if (w != NULL) {
            ring_push(ch, w->elem);
            w->sel->fired = w->index;
            w->sel->closed = 0;
            *woken = w->sel;
        }
        return 1;
    }
    struct waiter *w = take(&ch->sendq); /* unbuffered: from the sender */
    if (w != NULL) {
        if (out != NULL)
            copy_elem(out, w->elem, ch->elem_size);
        w->sel->fired = w->index;
        w->sel->closed = 0;
        *woken = w->sel;
        return 1;
    }
    return ch->closed ? -1 : 0;
}

/* ---- waiting ---- */

/* Who would block: 1 a coroutine (*co set), 0 a plain thread without a
 * runtime; -1 (EPERM) the thread's own stack of a thread with a runtime,
 * whose blocking would freeze its own loop. */
static inline int waiter_kind(eco_t **co)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL) {
        *co = NULL;
        return 0;
    }
    if (rt->current == &rt->main) {
        errno = EPERM;
        return -1;
    }
    *co = rt->current;
    return 1;
}

/* A coroutine that may not block any more (eco_cancel, its deadline) fails
 * every call that could wait, at once: -1 with errno, else 0. */
static inline int chan_stopped(long timeout_ms)
{
    struct eco_rt *rt = eco__rt;
    if (timeout_ms == 0 || rt == NULL || rt->current == &rt->main)
        return 0;
    return eco__check_stop(rt->current);
}

static void thread_wait_init(struct thread_wait *tw)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&tw->c, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&tw->m, NULL);
    tw->done = 0;
}

/* A selection about to wait: for coroutine co, or (co NULL) for this plain
 * thread through tw. */
static void sel_init(struct sel *s, int single, eco_t *co, struct thread_wait *tw)
{
    atomic_init(&s->state, SEL_WAITING);
    s->single = single;
    s->fired = -1;
    s->closed = 0;
    s->co = co;
    s->tw = NULL;
    if (co == NULL) {
        thread_wait_init(tw);
        s->tw = tw;
    }
}

static void thread_wait_destroy(struct thread_wait *tw)
{
    pthread_cond_destroy(&tw->c);
    pthread_mutex_destroy(&tw->m);
}

/* Takes records [0, n) of a finished selection out of their queues, all
 * but `keep` (which the claimer took), one channel lock at a time (those
 * channels cannot be freed while the records are in them). */
static void unlink_records(struct waiter *recs, size_t n, int keep)
{
    for (size_t k = 0; k < n; k++) {
        struct waiter *w = &recs[k];
        if (w->index == keep)
            continue;
        lock_both(w->ch);
        wq_unlink(w->op == OP_SEND ? &w->ch->sendq : &w->ch->recvq, w);
        unlock_both(w->ch);
    }
}

/* A coroutine waiting on a selection: its wait record. */
struct chan_wait {
    struct eco_wait w;
    struct sel *s;
    struct waiter *recs;
    size_t n;
};

static void chan_describe(const struct eco_wait *w, char *buf, size_t n)
{
    const struct chan_wait *cw = (const struct chan_wait *)w;
    if (cw->s->single)
        snprintf(buf, n, "chan %p %s", (void *)cw->recs[0].ch,
                 cw->recs[0].op == OP_SEND ? "send" : "recv");
    else
        snprintf(buf, n, "select %zu cases", cw->n);
}

static int chan_cancel(eco_t *co, struct eco_wait *w)
{
    struct chan_wait *cw = (struct chan_wait *)w;
    (void)co;
    if (!cancel(cw->s))
        return 0;
    unlink_records(cw->recs, cw->n, -1);
    return 1;
}

static const struct eco_wait_ops chan_ops = {
    .describe = chan_describe, .cancel = chan_cancel, .sourced = 1};

/*
 * Waits until s is claimed (returns ECO_WAKE_READY) or its wait ends
 * otherwise: the timeout at deadline (ns), or for a coroutine eco_cancel or
 * its own deadline; then every record of s is out of its queue again and
 * the reason is returned.  A claim that races the end wins; its wake is
 * then awaited.
 */
static int wait_sel(struct sel *s, struct waiter *recs, size_t n, int64_t deadline)
{
    if (s->co != NULL) {
        struct chan_wait cw = {.w = {.ops = &chan_ops, .deadline = deadline}, .s = s,
                               .recs = recs, .n = n};
        return eco__park(&cw.w);
    }
    struct thread_wait *tw = s->tw;
    struct timespec abs = {0, 0};
    if (deadline != ECO_NEVER) {
        abs.tv_sec = (time_t)(deadline / 1000000000);
        abs.tv_nsec = (long)(deadline % 1000000000);
    }
    pthread_mutex_lock(&tw->m);
    while (!tw->done) {
        if (deadline == ECO_NEVER) {
            pthread_cond_wait(&tw->c, &tw->m);
        } else if (pthread_cond_timedwait(&tw->c, &tw->m, &abs) == ETIMEDOUT && !tw->done &&
                   eco__now_ns() >= deadline) {
            if (cancel(s)) {
                pthread_mutex_unlock(&tw->m);
                unlink_records(recs, n, -1);
                return ECO_WAKE_TIMEOUT;
            }
            deadline = ECO_NEVER; /* claimed meanwhile: its wake is on the way */
        }
    }
    pthread_mutex_unlock(&tw->m);
    return ECO_WAKE_READY;
}

/* ---- public: make, free, close ---- */

eco_chan_t *eco_chan_new(size_t elem_size, size_t capacity)
{
    size_t bytes;
    if (capacity != 0 && elem_size > (SIZE_MAX - sizeof(eco_chan_t) - 64) / capacity) {
        errno = EINVAL;
        return NULL;
    }
    bytes = elem_size * capacity;
    /* One allocation, cache-line aligned (the two sides' fields are on
     * lines of their own); the ring follows the channel. */
    size_t head = (sizeof(eco_chan_t) + 63) & ~(size_t)63;
    eco_chan_t *ch = aligned_alloc(64, (head + bytes + 63) & ~(size_t)63);
    if (ch == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    memset(ch, 0, sizeof *ch);
    atomic_init(&ch->slk.v, 0);
    atomic_init(&ch->rlk.v, 0);
    atomic_init(&ch->tail, 0);
    atomic_init(&ch->head, 0);
    ch->rlock = capacity > 0 ? &ch->rlk : &ch->slk;
    ch->elem_size = elem_size;
    ch->cap = capacity;
    ch->buf = (unsigned char *)ch + head;
    return ch;
}

int eco_chan_close(eco_chan_t *ch)
{
    if (ch == NULL) {
        errno = EINVAL;
        return -1;
    }
    struct sel *list = NULL;
    lock_both(ch);
    if (ch->closed) {
        unlock_both(ch);
        errno = EPIPE;
        return -1;
    }
    ch->closed = 1;
    /* Every claimable waiter ends: receivers see the end (a receiver waits
     * only on an empty buffer), senders fail.  Queue order is kept. */
    struct wq *qs[2] = {&ch->recvq, &ch->sendq};
    struct sel **tail = &list;
    for (int k = 0; k < 2; k++) {
        struct waiter *w = qs[k]->head;
        while (w != NULL) {
            struct waiter *next = w->next;
            if (claim(w)) {
                wq_unlink(qs[k], w);
                w->sel->fired = w->index;
                w->sel->closed = 1;
                w->sel->wake_next = NULL;
                *tail = w->sel;
                tail = &w->sel->wake_next;
            }
            w = next;
        }
    }
    unlock_both(ch);
    while (list != NULL) {
        struct sel *next = list->wake_next; /* before the wake frees it */
        wake(list);
        list = next;
    }
    return 0;
}

int eco_chan_free(eco_chan_t *ch)
{
    if (ch == NULL)
        return 0;
    lock_both(ch);
    int busy = ch->sendq.head != NULL || ch->recvq.head != NULL;
    unlock_both(ch);
    if (busy) {
        errno = EBUSY;
        return -1;
    }
    free(ch);
    return 0;
}

/* ---- public: send and receive ---- */

/* The end of an operation that completed: send 0 / -1 EPIPE; recv 1 / 0. */
static inline int op_result(int op, int closed)
{
    if (!closed)
        return op == OP_SEND ? 0 : 1;
    if (op == OP_RECV)
        return 0;
    errno = EPIPE;
    return -1;
}

/* The part of chan_op that waits; entered with both locks held, and the
 * operation could not complete at once. */
static __attribute__((noinline)) int chan_wait(eco_chan_t *ch, int op, void *elem, long timeout_ms)
{
    if (timeout_ms == 0) {
        unlock_both(ch);
        errno = EAGAIN;
        return -1;
    }
    int64_t deadline = eco__deadline(timeout_ms);
    eco_t *co;
    if (waiter_kind(&co) < 0) {
        unlock_both(ch);
        return -1;
    }
    struct thread_wait tw;
    struct sel s;
    sel_init(&s, 1, co, &tw);
    struct waiter w = {.sel = &s, .elem = elem, .ch = ch, .op = op, .index = 0};
    wq_push(op == OP_SEND ? &ch->sendq : &ch->recvq, &w);
    unlock_both(ch);

    int why = wait_sel(&s, &w, 1, deadline);
    if (co == NULL)
        thread_wait_destroy(&tw);
    if (why != ECO_WAKE_READY)
        return eco__wait_fail(why);
    return op_result(op, s.closed);
}

/*
 * One send or receive, waiting up to timeout_ms (-1: no limit, 0: not at
 * all).  Returns send: 0 / -1; recv: 1 element, 0 end / -1.
 */
static inline __attribute__((always_inline)) int chan_op(eco_chan_t *ch, int op, void *elem,
                                                         long timeout_ms)
{
    if (ECO_UNLIKELY(ch == NULL || (op == OP_SEND && elem == NULL && ch->elem_size != 0))) {
        errno = EINVAL;
        return -1;
    }
    if (ECO_UNLIKELY(chan_stopped(timeout_ms) != 0))
        return -1;
    /* Buffered, nobody waiting on the other side, and room (an element):
     * one end's lock is enough. */
    if (op == OP_SEND && ch->cap > 0) {
        lk_lock(&ch->slk);
        if (ECO_LIKELY(!ch->closed && ch->recvq.head == NULL)) {
            size_t t = atomic_load_explicit(&ch->tail, memory_order_relaxed);
            if (t - ch->head_seen >= ch->cap)
                ch->head_seen = atomic_load_explicit(&ch->head, memory_order_acquire);
            if (t - ch->head_seen < ch->cap) {
                ring_push(ch, elem);
                lk_unlock(&ch->slk);
                return 0;
            }
        }
        lk_lock(&ch->rlk); /* both, in order */
    } else if (op == OP_RECV && ch->cap > 0) {
        lk_lock(&ch->rlk);
        if (ECO_LIKELY(ch->sendq.head == NULL)) {
            size_t h = atomic_load_explicit(&ch->head, memory_order_relaxed);
            /* tail_seen may lag behind head too: elements taken under
             * both locks do not move it. */
            if ((ptrdiff_t)(ch->tail_seen - h) <= 0)
                ch->tail_seen = atomic_load_explicit(&ch->tail, memory_order_acquire);
            if ((ptrdiff_t)(ch->tail_seen - h) > 0) {
                ring_pop(ch, elem);
                lk_unlock(&ch->rlk);
                return 1;
            }
        }
        lk_unlock(&ch->rlk); /* and take both, in order */
        lock_both(ch);
    } else {
        lk_lock(&ch->slk); /* unbuffered: the one lock */
    }
    struct sel *woken = NULL;
    int r = op == OP_SEND ? send_locked(ch, elem, &woken) : recv_locked(ch, elem, &woken);
    if (ECO_UNLIKELY(r == 0))
        return chan_wait(ch, op, elem, timeout_ms);
    unlock_both(ch);
    if (woken != NULL)
        wake(woken);
    return op_result(op, r < 0);
}

int eco_chan_send(eco_chan_t *ch, const void *elem)
{
    return chan_op(ch, OP_SEND, (void *)(uintptr_t)elem, -1);
}

int eco_chan_recv(eco_chan_t *ch, void *elem)
{
    return chan_op(ch, OP_RECV, elem, -1);
}

int eco_chan_send_timeout(eco_chan_t *ch, const void *elem, long timeout_ms)
{
    return chan_op(ch, OP_SEND, (void *)(uintptr_t)elem, timeout_ms < 0 ? -1 : timeout_ms);
}

int eco_chan_recv_timeout(eco_chan_t *ch, void *elem, long timeout_ms)
{
    return chan_op(ch, OP_RECV, elem, timeout_ms < 0 ? -1 : timeout_ms);
}

int eco_chan_trysend(eco_chan_t *ch, const void *elem)
{
    return chan_op(ch, OP_SEND, (void *)(uintptr_t)elem, 0);
}

int eco_chan_tryrecv(eco_chan_t *ch, void *elem)
{
    return chan_op(ch, OP_RECV, elem, 0);
}

/* ---- public: select ---- */

/* A per-thread xorshift for the poll order: cheap, and no shared state. */
static __thread uint32_t rand_state;

static uint32_t next_rand(void)
{
    uint32_t x = rand_state;
    if (ECO_UNLIKELY(x == 0)) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = (uint32_t)ts.tv_nsec ^ (uint32_t)(uintptr_t)&rand_state ^ 0x9e3779b9u;
        if (x == 0)
            x = 1;
    }
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    rand_state = x;
    return x;
}

#define SELECT_INLINE 8
#define SELECT_MAX 65536

int eco_chan_select(struct eco_chan_case *cases, size_t n, long timeout_ms)
{
    if ((cases == NULL && n > 0) || n > SELECT_MAX) {
        errno = EINVAL;
        return -1;
    }
    if (timeout_ms < 0)
        timeout_ms = -1;
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct eco_chan_case *c = &cases[i];
        if (c->ch == NULL)
            continue;
        if ((c->op != ECO_CHAN_SEND && c->op != ECO_CHAN_RECV) ||
            (c->op == ECO_CHAN_SEND && c->elem == NULL && c->ch->elem_size != 0)) {
            errno = EINVAL;
            return -1;
        }
        m++;
    }
    if (m == 0 && timeout_ms < 0) {
        errno = EINVAL; /* nothing could ever end the wait */
        return -1;
    }
    if (chan_stopped(timeout_ms) != 0)
        return -1;
    int64_t deadline = eco__deadline(timeout_ms);

    /* active: the cases with a channel, shuffled (the poll order, so that
     * every ready case is as likely to win); lock: their channels sorted by
     * address, the global order every multi-lock follows. */
    int active_buf[SELECT_INLINE];
    eco_chan_t *lock_buf[SELECT_INLINE];
    struct waiter rec_buf[SELECT_INLINE];
    int *active = active_buf;
    eco_chan_t **lock = lock_buf;
    struct waiter *recs = rec_buf;
    void *heap = NULL;
    if (m > SELECT_INLINE) {
        heap = malloc(m * (sizeof *active + sizeof *lock + sizeof *recs));
        if (heap == NULL) {
            errno = ENOMEM;
            return -1;
        }
        recs = heap;
        lock = (eco_chan_t **)(recs + m);
        active = (int *)(lock + m);
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (cases[i].ch == NULL)
            continue;
        size_t j = (size_t)(next_rand() % (uint32_t)(k + 1));
        active[k] = active[j];
        active[j] = (int)i;
        k++;
    }
    size_t nlock = 0;
    for (size_t a = 0; a < m; a++) {
        eco_chan_t *ch = cases[active[a]].ch;
        size_t b = nlock;
        while (b > 0 && (uintptr_t)lock[b - 1] > (uintptr_t)ch)
            b--;
        if (b > 0 && lock[b - 1] == ch)
            continue; /* a channel in two cases is locked once */
        memmove(&lock[b + 1], &lock[b], (nlock - b) * sizeof *lock);
        lock[b] = ch;
        nlock++;
    }

    int ret = -1;
    struct sel *woken = NULL;
    for (size_t a = 0; a < nlock; a++)
        lock_both(lock[a]);
    for (size_t a = 0; a < m; a++) {
        struct eco_chan_case *c = &cases[active[a]];
        int r = c->op == ECO_CHAN_SEND ? send_locked(c->ch, c->elem, &woken)
                                       : recv_locked(c->ch, c->elem, &woken);
        if (r != 0) {
            c->result = r > 0 ? (c->op == ECO_CHAN_SEND ? 0 : 1) : (c->op == ECO_CHAN_SEND ? -1 : 0);
            ret = active[a];
            break;
        }
    }
    struct thread_wait tw;
    struct sel s;
    eco_t *co = NULL;
    int kind = 1, err = EAGAIN;
    if (ret < 0 && timeout_ms != 0) {
        /* Nothing ready: wait, where waiting is allowed. */
        kind = waiter_kind(&co);
        err = EPERM;
    }
    if (ret < 0 && timeout_ms != 0 && kind >= 0) {
        sel_init(&s, 0, co, &tw);
        for (size_t a = 0; a < m; a++) {
            struct eco_chan_case *c = &cases[active[a]];
            recs[a].sel = &s;
            recs[a].elem = c->elem;
            recs[a].ch = c->ch;
            recs[a].op = c->op == ECO_CHAN_SEND ? OP_SEND : OP_RECV;
            recs[a].index = active[a];
            wq_push(c->op == ECO_CHAN_SEND ? &c->ch->sendq : &c->ch->recvq, &recs[a]);
        }
    }
    for (size_t a = nlock; a > 0; a--)
        unlock_both(lock[a - 1]);
    if (woken != NULL)
        wake(woken);
    if (ret >= 0 || timeout_ms == 0 || kind < 0) {
        free(heap);
        if (ret < 0)
            errno = err;
        return ret;
    }

    int why = wait_sel(&s, recs, m, deadline);
    if (co == NULL)
        thread_wait_destroy(&tw);
    if (why != ECO_WAKE_READY) {
        free(heap);
        return eco__wait_fail(why);
    }
    unlink_records(recs, m, s.fired);
    free(heap);
    struct eco_chan_case *c = &cases[s.fired];
    if (c->op == ECO_CHAN_SEND)
        c->result = s.closed ? -1 : 0;
    else
        c->result = s.closed ? 0 : 1;
    return s.fired;
}
