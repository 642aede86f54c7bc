/*
 * accept_util.h - what the sample servers' accept loops do when fds run
 * out, shared by the samples (header only, everything static inline).
 *
 * accept(2) failing with EMFILE (this process is at RLIMIT_NOFILE), ENFILE
 * (the system is), ENOBUFS or ENOMEM leaves the client in the listen
 * backlog.  Retrying at once spins and logs without bound; giving up leaves
 * the backlog unanswered for ever.  So the loop backs off until one of our
 * own connections closes (that fd is then free) or 100 ms pass (fds freed
 * by others, memory), logs at most once a second, and tries again: the
 * backlog is served as fds come back.
 *
 *     static struct accept_guard guard;            one per accept loop
 *     accept_guard_init(&guard, "echo_server");    in the loop's coroutine
 *     fd = eco_accept(lfd, NULL, NULL);
 *     if (fd < 0 && accept_shortage(errno)) {
 *         accept_backoff(&guard, "accept", errno);
 *         continue;
 *     }
 *     ...  and wherever a connection's fds are closed:
 *     eco_close(fd); accept_guard_closed(&guard);
 */
#ifndef ACCEPT_UTIL_H
#define ACCEPT_UTIL_H

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "eco.h"

#define ACCEPT_BACKOFF_MS 100  /* longest wait for a close */
#define ACCEPT_LOG_EVERY_MS 1000

struct accept_guard {
    const char *who;   /* log prefix: the program's name */
    eco_chan_t *freed; /* a token when a close happens while we wait */
    int waiting;       /* the loop is in accept_backoff */
    long long last_log_ms;
    unsigned long unlogged; /* failures since the last log line */
};

static inline long long accept_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Call from the coroutine that will back off.  A first channel wait makes
 * the runtime's wake-up fd (eco.h, channels), so that no later wait needs a
 * new fd just when none is left.  Without a channel (no memory), backing
 * off is a plain 100 ms sleep. */
static inline void accept_guard_init(struct accept_guard *g, const char *who)
{
    memset(g, 0, sizeof *g);
    g->who = who;
    g->last_log_ms = accept_now_ms() - ACCEPT_LOG_EVERY_MS;
    g->freed = eco_chan_new(0, 1);
    if (g->freed != NULL)
        eco_chan_recv_timeout(g->freed, NULL, 1);
}

/* Whether err (from accept, socket, eco_go...) means "out of fds or memory
 * for now": back off and retry, rather than give up. */
static inline int accept_shortage(int err)
{
    return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

/* Logs "who: what: strerror(err)" unless a line went out less than a second
 * ago (the next line counts what was not logged), then waits for
 * accept_guard_closed or ACCEPT_BACKOFF_MS, whichever comes first. */
static inline void accept_backoff(struct accept_guard *g, const char *what, int err)
{
    long long now = accept_now_ms();
    if (now - g->last_log_ms >= ACCEPT_LOG_EVERY_MS) {
        if (g->unlogged > 0)
            fprintf(stderr, "%s: %s: %s (and %lu more like it)\n", g->who, what, strerror(err),
                    g->unlogged);
        else
            fprintf(stderr, "%s: %s: %s\n", g->who, what, strerror(err));
        g->last_log_ms = now;
        g->unlogged = 0;
    } else {
        g->unlogged++;
    }
    g->waiting = 1;
    if (g->freed == NULL || (eco_chan_recv_timeout(g->freed, NULL, ACCEPT_BACKOFF_MS) < 0 &&
                             errno != ETIMEDOUT))
        eco_sleep(ACCEPT_BACKOFF_MS);
    g->waiting = 0;
}

/* Tells a backing-off loop that one of our fds was closed.  Costs nothing
 * while nobody backs off. */
static inline void accept_guard_closed(struct accept_guard *g)
{
    if (g->waiting)
        eco_chan_trysend(g->freed, NULL);
}

#endif
