/*
 * server_threads.h - a sample server on every core (--threads N), shared by
 * echo_server and tcp_proxy (header only, everything static).
 *
 * One libeco runtime per thread, on its own event_base, each with its own
 * listening socket on the same address and port (SO_REUSEPORT: the kernel
 * spreads new connections over them).  A connection lives and dies in the
 * thread that accepted it, so the threads share nothing but what the
 * program set up before they started.  The main thread has no runtime: it
 * waits for signals (sigwait) and talks to each thread over a channel of
 * pure events, which plain threads and coroutines may both use:
 *   SIGQUIT          a token: the thread dumps its coroutines to stderr
 *                    (eco_dump) and answers, one thread after the other;
 *   SIGINT, SIGTERM  the channel is closed: the thread cancels its accept
 *                    loop and every connection, its loop ends, it prints
 *                    "WHO: thread I of N served C connections" to stderr
 *                    and tears its runtime down; the process exits 0.
 * With --threads 1 the main thread serves, and takes these signals through
 * its event_base instead: the process stays single-threaded.
 *
 *     static struct server srv = {.who = "echo_server", .accept_loop = loop};
 *     srv.nthreads = n;
 *     if (server_listen(&srv, "127.0.0.1", "0") != 0) return 1;
 *     printf("... port %d\n", srv.port);
 *     return server_run(&srv);
 *
 * The accept loop (a coroutine per thread, given its listening fd) uses
 * server_guard() with accept_util.h, and each connection's coroutine
 * brackets its life with server_conn_begin and server_conn_end.
 */
#ifndef SERVER_THREADS_H
#define SERVER_THREADS_H

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>

#include "accept_util.h"
#include "eco.h"

#define SERVER_MAX_THREADS 64

/* A connection's coroutine, in its thread's list while it lives. */
struct server_conn {
    eco_t *co;
    struct server_conn *prev, *next;
};

struct server_thread {
    struct server *srv;
    int index; /* 1..nthreads */
    int lfd;
    pthread_t tid;
    eco_chan_t *ctl;      /* main -> thread: a token asks for a dump; closed: stop */
    eco_chan_t *answered; /* thread -> main: the dump is out; closed: the thread ended */
    int stopping;
    int failed;
    unsigned long served;
    struct accept_guard guard;
    struct server_conn conns; /* list head */
};

struct server {
    const char *who;                 /* log prefix: the program's name */
    void *(*accept_loop)(void *lfd); /* run in each thread, given (intptr_t) its fd */
    int nthreads;
    int port; /* what server_listen bound */
    struct server_thread t[SERVER_MAX_THREADS];
};

static _Thread_local struct server_thread *server_self_;

/* The calling thread's part of the server. */
static inline struct server_thread *server_self(void)
{
    return server_self_;
}

static inline struct accept_guard *server_guard(void)
{
    return &server_self_->guard;
}

/* Counts the calling coroutine as a connection of its thread, to be
 * cancelled if the server stops while it lives. */
static inline void server_conn_begin(struct server_conn *c)
{
    struct server_thread *t = server_self_;
    c->co = eco_self();
    c->prev = &t->conns;
    c->next = t->conns.next;
    c->next->prev = c;
    t->conns.next = c;
    t->served++;
    if (t->stopping) /* accepted as the stop came: end at the first wait */
        eco_cancel(c->co);
}

/* After the connection's fds are closed: one more is free for accept. */
static inline void server_conn_end(struct server_conn *c)
{
    c->prev->next = c->next;
    c->next->prev = c->prev;
    accept_guard_closed(&server_self_->guard);
}

/* The N of --threads N, or 0 unless it is from 1 to SERVER_MAX_THREADS. */
static inline int server_threads_arg(const char *s)
{
    char *end;
    long n = strtol(s, &end, 10);
    return end != s && *end == '\0' && n >= 1 && n <= SERVER_MAX_THREADS ? (int)n : 0;
}

/* Listening sockets for every thread on addr:port (port "0": one the
 * kernel picks, then shared), with SIGINT, SIGTERM and SIGQUIT blocked
 * from here on, so that they wait for server_run.  0, or -1 said on
 * stderr. */
static inline int server_listen(struct server *srv, const char *addr, const char *port)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* inherited by the threads */
    if (srv->nthreads < 1 || srv->nthreads > SERVER_MAX_THREADS) {
        fprintf(stderr, "%s: --threads must be from 1 to %d\n", srv->who, SERVER_MAX_THREADS);
        return -1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(addr, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "%s: %s: %s\n", srv->who, addr, gai_strerror(rc));
        return -1;
    }
    struct sockaddr_storage ss;
    socklen_t len = (socklen_t)res->ai_addrlen;
    memcpy(&ss, res->ai_addr, res->ai_addrlen);
    freeaddrinfo(res);
    for (int i = 0; i < srv->nthreads; i++) {
        int fd = eco_socket(ss.ss_family, SOCK_STREAM, 0), one = 1;
        /* One thread keeps the port its own, as before threads. */
        if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
            (srv->nthreads > 1 && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one)) ||
            bind(fd, (struct sockaddr *)&ss, len) != 0 || listen(fd, 4096) != 0 ||
            (i == 0 && getsockname(fd, (struct sockaddr *)&ss, &len) != 0)) {
            fprintf(stderr, "%s: %s port %s: %s\n", srv->who, addr, port, strerror(errno));
            if (fd >= 0)
                eco_close(fd);
            while (i-- > 0)
                eco_close(srv->t[i].lfd);
            return -1;
        }
        srv->t[i].lfd = fd; /* the others bind the port the first one got */
    }
    srv->port = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                               : ((struct sockaddr_in *)&ss)->sin_port);
    return 0;
}

/* The thread's first coroutine: starts the accept loop, serves dump
 * requests until its channel is closed, then stops everything. */
static void *server_control(void *arg)
{
    struct server_thread *t = arg;
    eco_t *acceptor = eco_create(t->srv->accept_loop, (void *)(intptr_t)t->lfd, NULL);
    if (acceptor == NULL) {
        fprintf(stderr, "%s: accept loop: %s\n", t->srv->who, strerror(errno));
        t->failed = 1;
        kill(getpid(), SIGTERM); /* the whole server stops */
    } else {
        eco_resume(acceptor);
    }
    while (eco_chan_recv(t->ctl, NULL) == 1) {
        fprintf(stderr, "%s: thread %d of %d:\n", t->srv->who, t->index, t->srv->nthreads);
        eco_dump(STDERR_FILENO);
        eco_chan_send(t->answered, NULL);
    }
    t->stopping = 1;
    if (acceptor != NULL)
        eco_cancel(acceptor);
    for (struct server_conn *c = t->conns.next; c != &t->conns; c = c->next)
        eco_cancel(c->co);
    if (acceptor != NULL)
        eco_join(acceptor, NULL);
    return NULL;
}

/* One thread: its signals come through its own event_base (from a
 * libevent callback, eco_dump and eco_chan_close are fine). */
static void server_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    struct server_thread *t = arg;
    (void)what;
    if (sig == SIGQUIT) {
        fprintf(stderr, "%s: thread 1 of 1:\n", t->srv->who);
        eco_dump(STDERR_FILENO);
    } else {
        eco_chan_close(t->ctl);
    }
}

/* Adds the signal events of a server of one thread, and lets the signals
 * in that server_listen blocked.  -1 with errno. */
static int server_signals(struct server_thread *t, struct event *ev[3])
{
    static const int sigs[3] = {SIGINT, SIGTERM, SIGQUIT};
    sigset_t set;
    sigemptyset(&set);
    for (int i = 0; i < 3; i++) {
        ev[i] = evsignal_new(eco_base(), sigs[i], server_signal_cb, t);
        if (ev[i] == NULL || event_add(ev[i], NULL) != 0)
            return -1;
        sigaddset(&set, sigs[i]);
    }
    return pthread_sigmask(SIG_UNBLOCK, &set, NULL) == 0 ? 0 : -1;
}

/* Serves thread t's part: in a thread of its own, or with --threads 1 on
 * the main thread, which keeps the process single-threaded (then glibc's
 * read and send skip their cancellation bookkeeping: about 60 of some 600
 * instructions per echoed round trip, by callgrind). */
static void *server_thread_main(void *arg)
{
    struct server_thread *t = arg;
    struct event *sig[3] = {NULL, NULL, NULL};
    server_self_ = t;
    t->conns.next = t->conns.prev = &t->conns;
    if (eco_setup(NULL) != 0 || (t->srv->nthreads == 1 && server_signals(t, sig) != 0) ||
        eco_go(server_control, t) != 0) {
        for (int i = 0; i < 3; i++)
            if (sig[i] != NULL)
                event_free(sig[i]);
        fprintf(stderr, "%s: thread %d: %s\n", t->srv->who, t->index, strerror(errno));
        t->failed = 1;
        eco_close(t->lfd);
        if (t->srv->nthreads > 1)
            kill(getpid(), SIGTERM); /* the others stop too */
        eco_teardown();
        eco_chan_close(t->answered);
        return NULL;
    }
    if (eco_loop() != 0) {
        fprintf(stderr, "%s: thread %d: eco_loop: %s\n", t->srv->who, t->index, strerror(errno));
        t->failed = 1;
    }
    fprintf(stderr, "%s: thread %d of %d served %lu connections\n", t->srv->who, t->index,
            t->srv->nthreads, t->served);
    for (int i = 0; i < 3; i++)
        if (sig[i] != NULL)
            event_free(sig[i]);
    eco_teardown();
    eco_chan_close(t->answered);
    return NULL;
}

/* Starts the threads and waits for signals (or, with one thread, serves
 * on this one); returns the exit status once every thread has stopped. */
static inline int server_run(struct server *srv)
{
    int started = 0, failed = 0;
    for (int i = 0; i < srv->nthreads; i++) {
        struct server_thread *t = &srv->t[i];
        t->srv = srv;
        t->index = i + 1;
        /* Room for one token and one answer: a request made before the
         * thread is up waits for it, and the last answer never blocks. */
        t->ctl = eco_chan_new(0, 1);
        t->answered = eco_chan_new(0, 1);
        if (srv->nthreads == 1 && t->ctl != NULL && t->answered != NULL) {
            server_thread_main(t);
            eco_chan_free(t->ctl);
            eco_chan_free(t->answered);
            return t->failed;
        }
        if (t->ctl == NULL || t->answered == NULL ||
            (errno = pthread_create(&t->tid, NULL, server_thread_main, t)) != 0) {
            fprintf(stderr, "%s: thread %d: %s\n", srv->who, i + 1, strerror(errno));
            failed = 1;
            break;
        }
        started++;
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGQUIT);
    int sig = 0;
    while (!failed && sigwait(&set, &sig) == 0 && sig == SIGQUIT)
        for (int i = 0; i < started; i++) /* one dump after the other, not mixed */
            if (eco_chan_trysend(srv->t[i].ctl, NULL) == 0) /* else: a thread gone */
                eco_chan_recv(srv->t[i].answered, NULL);
    for (int i = 0; i < started; i++)
        eco_chan_close(srv->t[i].ctl);
    for (int i = 0; i < srv->nthreads; i++) {
        struct server_thread *t = &srv->t[i];
        if (i < started)
            pthread_join(t->tid, NULL);
        else
            eco_close(t->lfd);
        failed |= t->failed;
        eco_chan_free(t->ctl);
        eco_chan_free(t->answered);
    }
    return failed;
}

#endif
