/*
 * eco_bev.c - a coroutine reads and writes a libevent bufferevent.
 *
 * A bufferevent already buffers both ways; what a coroutine lacks is a way
 * to wait for its callbacks.  While at least one coroutine waits on a
 * bufferevent, libeco's callbacks are installed on it, with a small record
 * (struct bev_state, the callbacks' argument) that keeps the user's
 * callbacks and the list of waits.  Each callback wakes the waits it
 * concerns and passes everything no wait consumed on to the user's
 * callback; when the last wait leaves, the user's callbacks are put back.
 * So the record lives exactly as long as someone waits, and nothing is
 * kept per bufferevent between calls: a bufferevent the user frees after
 * the calls have returned leaves nothing behind.
 *
 * Waits are records of eco_wait.c in the waiting coroutine's frame; a
 * wake-up unlinks them first, so a callback never finds a frame that has
 * gone.  A wake-up only says "look again": each call checks the buffers
 * itself, so a reader and a writer (or two readers) of one bufferevent can
 * wait at the same time.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/event_struct.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* What a wait is for; which callbacks end it. */
enum { W_READ = 1, W_WRITE = 2, W_CONNECT = 4 };

/* eco_bev_write's bound on the output buffer when the bufferevent has no
 * write high-water mark of its own. */
#define BEV_WRITE_MAX ((size_t)64 * 1024)

struct bev_state;

struct bev_wait {
    struct eco_wait w;
    struct bev_state *st;        /* NULL once unlinked */
    struct bev_wait *prev, *next;
    struct bufferevent *bev;     /* for eco_dump */
    eco_t *co;
    int kind;                    /* W_* */
    const char *verb;            /* eco_dump's word */
    short events;                /* the BEV_EVENT_* that ended it, 0: data */
    int err;                     /* errno for BEV_EVENT_ERROR */
};

struct bev_state {
    struct bufferevent *bev;
    bufferevent_data_cb user_read, user_write;
    bufferevent_event_cb user_event;
    void *user_arg;
    struct bev_wait *head;
};

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

/* The user's callbacks come back once nobody waits.  If the user replaced
 * ours meanwhile (bufferevent_setcb), theirs stay. */
static void state_release(struct bev_state *st)
{
    if (st->bev->readcb == on_read && st->bev->cbarg == st)
        bufferevent_setcb(st->bev, st->user_read, st->user_write, st->user_event, st->user_arg);
    free(st);
}

static void unlink_wait(struct bev_wait *bw)
{
    struct bev_state *st = bw->st;
    if (bw->prev != NULL)
        bw->prev->next = bw->next;
    else
        st->head = bw->next;
    if (bw->next != NULL)
        bw->next->prev = bw->prev;
    bw->st = NULL;
    bw->prev = bw->next = NULL;
}

/* Links bw to bev's record, installing libeco's callbacks if nobody
 * waits yet.  0, or -1 with ENOMEM. */
static int attach(struct bev_wait *bw)
{
    struct bufferevent *bev = bw->bev;
    struct bev_state *st;
    if (bev->readcb == on_read) {
        st = bev->cbarg;
        if ((bw->kind & W_WRITE) && bev->writecb != on_write)
            bufferevent_setcb(bev, on_read, on_write, on_event, st);
    } else {
        st = malloc(sizeof *st);
        if (st == NULL) {
            errno = ENOMEM;
            return -1;
        }
        *st = (struct bev_state){bev, bev->readcb, bev->writecb, bev->errorcb, bev->cbarg, NULL};
        /* The write callback only when someone takes it: a bufferevent
         * calls it each time the output drains.  With the bufferevent's
         * fields read directly here, in watching() and eco_bev_write
         * instead of through its lock: bench/bev_echo co, N = 64, 3894
         * instead of 4148 instructions per round trip (callgrind), CPU
         * per round trip 0.98-0.99 at N = 64 and 1024 (BENCHMARKS.md). */
        bufferevent_setcb(bev, on_read, st->user_write != NULL || (bw->kind & W_WRITE) ? on_write : NULL,
                          on_event, st);
    }
    bw->st = st;
    bw->prev = NULL;
    bw->next = st->head;
    if (st->head != NULL)
        st->head->prev = bw;
    st->head = bw;
    bw->events = 0;
    return 0;
}

/* Takes bw off its record (if still on one); the last one out frees it. */
static void detach(struct bev_wait *bw)
{
    struct bev_state *st = bw->st;
    if (st == NULL)
        return;
    unlink_wait(bw);
    if (st->head == NULL)
        state_release(st);
}

/* Ends every wait of a kind in mask or also with events/err.  Returns how
 * many of mask's kinds it ended (also's are woken only to look again).
 * They are unlinked before any of them runs (a wake may resume one at
 * once, and it may wait again or end its frame), and the record is freed
 * here when none is left. */
static int wake_kinds(struct bev_state *st, int mask, int also, short events, int err, int now)
{
    struct bev_wait *woken = NULL, *bw = st->head;
    int n = 0, any = 0;
    while (bw != NULL) {
        struct bev_wait *next = bw->next;
        if (bw->kind & (mask | also)) {
            unlink_wait(bw);
            bw->events = (bw->kind & mask) ? events : 0;
            bw->err = err;
            bw->next = woken;
            woken = bw;
            n += (bw->kind & mask) != 0;
            any = 1;
        }
        bw = next;
    }
    if (!any)
        return 0;
    if (st->head == NULL)
        state_release(st);
    /* Oldest first: woken is in reverse order of the list, which is
     * newest first. */
    while (woken != NULL) {
        struct bev_wait *next = woken->next;
        woken->next = NULL;
        eco__wake(woken->co, ECO_WAKE_READY, now);
        woken = next;
    }
    return n;
}

static void on_read(struct bufferevent *bev, void *arg)
{
    struct bev_state *st = arg;
    bufferevent_data_cb user = st->user_read;
    void *user_arg = st->user_arg;
    if (wake_kinds(st, W_READ, 0, 0, 0, 1) == 0 && user != NULL)
        user(bev, user_arg);
}

static void on_write(struct bufferevent *bev, void *arg)
{
    struct bev_state *st = arg;
    bufferevent_data_cb user = st->user_write;
    void *user_arg = st->user_arg;
    if (wake_kinds(st, W_WRITE, 0, 0, 0, 1) == 0 && user != NULL)
        user(bev, user_arg);
}

/* The errno of an error event: the socket's, or EPROTO when libevent left
 * none that means anything (a TLS error). */
static int event_errno(void)
{
    int e = EVUTIL_SOCKET_ERROR();
    if (e == 0 || e == EAGAIN || e == EWOULDBLOCK || e == EINPROGRESS || e == EINTR)
        return EPROTO;
    return e;
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
    struct bev_state *st = arg;
    int err = (what & BEV_EVENT_ERROR) ? event_errno() : 0;
    bufferevent_event_cb user = st->user_event;
    void *user_arg = st->user_arg;
    int mask, also = 0;
    if (what & BEV_EVENT_CONNECTED)
        mask = W_CONNECT;
    else if (what & BEV_EVENT_ERROR)
        mask = W_READ | W_WRITE | W_CONNECT;
    else if (what & BEV_EVENT_EOF) {
        /* A half-close: writing goes on.  But a bufferevent_openssl stops
         * watching its fd both ways at the end: writers wake to enable
         * writing again. */
        mask = W_READ | W_CONNECT;
        also = W_WRITE;
    }
    else if ((what & BEV_EVENT_TIMEOUT) && (what & (BEV_EVENT_READING | BEV_EVENT_WRITING)))
        mask = ((what & BEV_EVENT_READING) ? W_READ : 0) |
               ((what & BEV_EVENT_WRITING) ? W_WRITE : 0) | W_CONNECT;
    else if (what & BEV_EVENT_TIMEOUT)
        mask = W_READ | W_WRITE | W_CONNECT; /* a handshake's, say */
    else
        mask = 0;
    /* Through the run queue: a bufferevent_openssl reports the end of the
     * stream from inside its read, before it has committed the data read
     * just before to the input; the reader must find that data first. */
    if ((mask == 0 || wake_kinds(st, mask, also, what, err, 0) == 0) && user != NULL) {
        errno = err != 0 ? err : errno;
        user(bev, what, user_arg);
    }
}

static void bev_describe(const struct eco_wait *w, char *buf, size_t n)
{
    const struct bev_wait *bw = (const struct bev_wait *)w;
    evutil_socket_t fd = bufferevent_getfd(bw->bev);
    if (fd >= 0)
        snprintf(buf, n, "bev %s fd %d", bw->verb, (int)fd);
    else
        snprintf(buf, n, "bev %s %p", bw->verb, (void *)bw->bev);
}

static int bev_cancel(eco_t *co, struct eco_wait *w)
{
    (void)co;
    detach((struct bev_wait *)w);
    return 1;
}

/* Whether the bufferevent's own event for that direction is in the base
 * (bufferevent_struct.h: socket and openssl ones use ev_read/ev_write;
 * others never add them, and are then always enabled anew). */
static int watching(const struct bufferevent *bev, short what)
{
    const struct event *ev = what == EV_READ ? &bev->ev_read : &bev->ev_write;
    return (ev->ev_evcallback.evcb_flags & EVLIST_INSERTED) != 0;
}

static const struct eco_wait_ops bev_ops = {
    .describe = bev_describe, .cancel = bev_cancel, .sourced = 1};

/* Waits once for a callback of kind: enables the direction the
 * bufferevent must watch for it, then parks unless a callback came during
 * the enable.  Returns 0 with bw->events telling what came (0: data moved),
 * or -1 with errno (ECANCELED, ETIMEDOUT, ENOMEM, EPERM). */
static int wait_once(struct bev_wait *bw, short enable)
{
    if (attach(bw) != 0)
        return -1;
    /* Enabled also when the flag is set but the event is not in the base:
     * a bufferevent_openssl that saw the end or an error stops watching
     * its fd but keeps the flag, and must look again to report it again.
     * (Enabling what is already watched costs a round trip a few per cent
     * with a thousand connections.) */
    if (enable != 0 && ((bw->bev->enabled & enable) != enable || !watching(bw->bev, enable)) &&
        bufferevent_enable(bw->bev, enable) != 0) {
        detach(bw);
        errno = ENOMEM;
        return -1;
    }
    if (bw->st == NULL)
        return 0; /* a callback ran inside the enable and ended the wait */
    int why = eco__park(&bw->w);
    if (why != ECO_WAKE_READY)
        return eco__wait_fail(why); /* bev_cancel has detached it */
    return 0;
}

/* What an event that ended a data wait means for the call: 0 to look at
 * the buffers again, 1 end of file, -1 with errno. */
static int event_outcome(const struct bev_wait *bw)
{
    if (bw->events & BEV_EVENT_ERROR) {
        errno = bw->err;
        return -1;
    }
    if (bw->events & BEV_EVENT_TIMEOUT) {
        errno = ETIMEDOUT;
        return -1;
    }
    if (bw->events & BEV_EVENT_EOF)
        return 1;
    return 0;
}

static void wait_init(struct bev_wait *bw, struct bufferevent *bev, eco_t *co, int kind,
                      const char *verb)
{
    memset(bw, 0, sizeof *bw);
    bw->w.ops = &bev_ops;
    bw->w.deadline = ECO_NEVER;
    bw->bev = bev;
    bw->co = co;
    bw->kind = kind;
    bw->verb = verb;
}

/* The coroutine that may block on bev, or NULL with errno. */
static eco_t *blocking_on(const struct bufferevent *bev)
{
    if (bev == NULL) {
        errno = EINVAL;
        return NULL;
    }
    return eco__blocking();
}

ssize_t eco_bev_read(struct bufferevent *bev, void *buf, size_t n)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return -1;
    if (buf == NULL && n > 0) {
        errno = EFAULT;
        return -1;
    }
    if (n == 0)
        return 0;
    struct evbuffer *in = bufferevent_get_input(bev);
    struct bev_wait bw;
    wait_init(&bw, bev, co, W_READ, "read");
    for (;;) {
        if (evbuffer_get_length(in) > 0) {
            int got = evbuffer_remove(in, buf, n);
            if (got >= 0)
                return got;
            errno = ENOMEM;
            return -1;
        }
        if (bw.events != 0) {
            int r = event_outcome(&bw);
            if (r != 0)
                return r > 0 ? 0 : -1;
        }
        if (wait_once(&bw, EV_READ) != 0)
            return -1;
    }
}

ssize_t eco_bev_read_full(struct bufferevent *bev, void *buf, size_t n)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return -1;
    if (buf == NULL && n > 0) {
        errno = EFAULT;
        return -1;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    struct bev_wait bw;
    wait_init(&bw, bev, co, W_READ, "read");
    size_t done = 0;
    for (;;) {
        /* Taken as it comes: n may be beyond the input's high-water mark,
         * where the bufferevent stops reading. */
        if (evbuffer_get_length(in) > 0 && done < n) {
            int got = evbuffer_remove(in, (char *)buf + done, n - done);
            if (got < 0) {
                errno = ENOMEM;
                return done > 0 ? (ssize_t)done : -1;
            }
            done += (size_t)got;
        }
        if (done == n)
            return (ssize_t)n;
        if (bw.events != 0) {
            int r = event_outcome(&bw);
            if (r > 0) {
                errno = 0;
                return (ssize_t)done;
            }
            if (r < 0)
                return done > 0 ? (ssize_t)done : -1;
        }
        if (wait_once(&bw, EV_READ) != 0)
            return done > 0 ? (ssize_t)done : -1;
    }
}

char *eco_bev_readln(struct bufferevent *bev, int eol_style, size_t max, size_t *len)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return NULL;
    if (eol_style < EVBUFFER_EOL_ANY || eol_style > EVBUFFER_EOL_NUL) {
        errno = EINVAL;
        return NULL;
    }
    struct evbuffer *in = bufferevent_get_input(bev);
    struct bev_wait bw;
    wait_init(&bw, bev, co, W_READ, "readln");
    size_t eof = 0;
    for (;;) {
        size_t have = evbuffer_get_length(in);
        size_t got = 0;
        char *line = evbuffer_readln(in, &got, (enum evbuffer_eol_style)eol_style);
        if (line != NULL) {
            if (len != NULL)
                *len = got;
            return line;
        }
        if (eof) {
            if (have == 0) {
                errno = 0;
                return NULL;
            }
            /* The last line has no end of line: it is still a line. */
            line = malloc(have + 1);
            if (line == NULL) {
                errno = ENOMEM;
                return NULL;
            }
            evbuffer_remove(in, line, have);
            line[have] = '\0';
            if (len != NULL)
                *len = have;
            return line;
        }
        size_t high = 0;
        bufferevent_getwatermark(bev, EV_READ, NULL, &high);
        if ((max > 0 && have >= max) || (high > 0 && have >= high)) {
            errno = EMSGSIZE;
            return NULL;
        }
        if (bw.events != 0) {
            int r = event_outcome(&bw);
            if (r < 0)
                return NULL;
            if (r > 0) {
                eof = 1;
                continue;
            }
        }
        if (wait_once(&bw, EV_READ) != 0)
            return NULL;
    }
}

/* Waits until bev's output holds at most `most` bytes.  0, or -1. */
static int wait_output(eco_t *co, struct bufferevent *bev, size_t most, const char *verb)
{
    struct evbuffer *out = bufferevent_get_output(bev);
    struct bev_wait bw;
    wait_init(&bw, bev, co, W_WRITE, verb);
    for (;;) {
        if (evbuffer_get_length(out) <= most)
            return 0;
        if (bw.events != 0 && event_outcome(&bw) < 0)
            return -1;
        if (wait_once(&bw, EV_WRITE) != 0)
            return -1;
    }
}

ssize_t eco_bev_write(struct bufferevent *bev, const void *buf, size_t n)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return -1;
    if (buf == NULL && n > 0) {
        errno = EFAULT;
        return -1;
    }
    size_t low = bev->wm_write.low, high = bev->wm_write.high;
    if (high == 0)
        high = BEV_WRITE_MAX;
    struct evbuffer *out = bufferevent_get_output(bev);
    /* Past the bound, wait down to the low mark (the write callback's
     * point) before adding: back-pressure without a partial write. */
    if (evbuffer_get_length(out) >= high && wait_output(co, bev, low, "write") != 0)
        return -1;
    if (n > 0 && bufferevent_write(bev, buf, n) != 0) {
        errno = ENOMEM;
        return -1;
    }
    return (ssize_t)n;
}

int eco_bev_flush(struct bufferevent *bev)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return -1;
    return wait_output(co, bev, 0, "flush");
}

int eco_bev_wait_connected(struct bufferevent *bev)
{
    eco_t *co = blocking_on(bev);
    if (co == NULL)
        return -1;
    struct bev_wait bw;
    wait_init(&bw, bev, co, W_CONNECT, "connect");
    if (wait_once(&bw, 0) != 0)
        return -1;
    if (bw.events & BEV_EVENT_CONNECTED)
        return 0;
    if (event_outcome(&bw) > 0)
        errno = ECONNRESET; /* closed before it was up */
    return -1;
}
