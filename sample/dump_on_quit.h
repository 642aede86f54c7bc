/*
 * dump_on_quit.h - kill -QUIT prints what every coroutine waits on, as a
 * Go program prints its goroutines: a libevent signal event in the
 * runtime's base calls eco_dump (header only, shared by the samples).
 */
#ifndef DUMP_ON_QUIT_H
#define DUMP_ON_QUIT_H

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <unistd.h>

#include "eco.h"

static inline void dump_on_quit_cb(evutil_socket_t sig, short what, void *arg)
{
    (void)sig;
    (void)what;
    (void)arg;
    eco_dump(STDERR_FILENO);
}

/* The event, to event_free before eco_teardown; NULL (said on stderr) if
 * it could not be added. */
static inline struct event *dump_on_quit(const char *who)
{
    struct event *ev = evsignal_new(eco_base(), SIGQUIT, dump_on_quit_cb, NULL);
    if (ev != NULL && event_add(ev, NULL) == 0)
        return ev;
    if (ev != NULL)
        event_free(ev);
    fprintf(stderr, "%s: no dump on SIGQUIT\n", who);
    return NULL;
}

#endif
