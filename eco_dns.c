/*
 * eco_dns.c - names: eco_getaddrinfo on libevent's evdns, through a promise.
 *
 * A lookup is a struct lookup handed to evdns_getaddrinfo; its callback
 * fills it and resolves the waiter's promise with it, so the lookup belongs
 * to the promise from then on (the waiter takes it, or drop frees it with
 * its addrinfo).  A waiter that gives up cancels the evdns request; evdns
 * then calls back with EVUTIL_EAI_CANCEL in a later pass of the loop,
 * which settles the promise and frees everything.
 *
 * The runtime's resolver (struct dns) is created on first use from
 * /etc/resolv.conf and the hosts file, with EVDNS_BASE_DISABLE_WHEN_INACTIVE
 * so that an idle resolver keeps no event in the base (event_base_dispatch
 * can return), or wraps the user's own evdns_base.  It is retired at
 * eco_teardown or when replaced, and freed once no lookup is in flight:
 * evdns's cancelled requests still call back (and look at their
 * evdns_base) in a later pass, so an evdns_base with lookups in flight is
 * freed by the last of those callbacks, never before.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct dns {
    struct evdns_base *evdns;
    struct event_base *base;
    int own;          /* made here: freed here */
    int retired;      /* no longer the runtime's: freed when idle */
    int asked;        /* a question went out since the last quiet */
    size_t inflight;  /* lookups whose evdns callback has not come */
};

/* This thread's runtime's resolver (NULL: made on first use), and the
 * runtime its teardown hook is registered with. */
static __thread struct dns *dns_cur;
static __thread struct eco_rt *dns_hooked;

static void dns_free(struct dns *d)
{
    if (d->own)
        evdns_base_free(d->evdns, 0);
    free(d);
}

static void dns_free_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    dns_free(arg);
}

/* d stops being the runtime's; freed now if no lookup is in flight. */
static void dns_retire(struct dns *d)
{
    if (d == NULL)
        return;
    d->retired = 1;
    if (d->inflight == 0)
        dns_free(d);
}

static void dns_at_teardown(struct eco_rt *rt)
{
    (void)rt;
    dns_retire(dns_cur);
    dns_cur = NULL;
    dns_hooked = NULL;
}

/* The last coroutine is done.  evdns marks a name server that did not
 * answer as failed and probes it on a timer (10 s, backing off to an
 * hour) that stays in the base even with EVDNS_BASE_DISABLE_WHEN_INACTIVE,
 * so event_base_dispatch would not return.  Our own resolver, if it asked
 * anything, gets its name servers afresh (options, hosts and search list
 * stay), which drops those timers. */
static void dns_at_quiet(struct eco_rt *rt)
{
    (void)rt;
    struct dns *d = dns_cur;
    if (d == NULL || !d->own || !d->asked || d->inflight != 0)
        return;
    d->asked = 0;
    int n = evdns_base_count_nameservers(d->evdns);
    struct sockaddr_storage *ss = n > 0 ? calloc((size_t)n, sizeof *ss) : NULL;
    int *len = n > 0 ? calloc((size_t)n, sizeof *len) : NULL;
    if (ss == NULL || len == NULL) {
        free(ss);
        free(len);
        return;
    }
    for (int i = 0; i < n; i++)
        len[i] = evdns_base_get_nameserver_addr(d->evdns, i, (struct sockaddr *)&ss[i], sizeof ss[i]);
    evdns_base_clear_nameservers_and_suspend(d->evdns);
    for (int i = 0; i < n; i++)
        if (len[i] > 0 && (size_t)len[i] <= sizeof ss[i])
            evdns_base_nameserver_sockaddr_add(d->evdns, (struct sockaddr *)&ss[i],
                                               (ev_socklen_t)len[i], 0);
    evdns_base_resume(d->evdns);
    free(ss);
    free(len);
}

static const struct eco_hooks dns_hooks = {NULL, dns_at_teardown, dns_at_quiet};

static int dns_hook(struct eco_rt *rt)
{
    if (dns_hooked == rt)
        return 0;
    if (eco__hooks_add(rt, &dns_hooks) < 0) {
        errno = ENOMEM;
        return -1;
    }
    dns_hooked = rt;
    return 0;
}

/* The runtime's own resolver, as the C library would configure itself:
 * /etc/resolv.conf and the hosts file; a missing or unreadable
 * resolv.conf, or one naming no server, means a server on 127.0.0.1. */
static struct evdns_base *own_evdns(struct event_base *base)
{
    struct evdns_base *e = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    if (e == NULL)
        return NULL;
    int r = evdns_base_resolv_conf_parse(e, DNS_OPTIONS_ALL, "/etc/resolv.conf");
    if (r == 4) { /* out of memory */
        evdns_base_free(e, 0);
        return NULL;
    }
    if (evdns_base_count_nameservers(e) == 0 && evdns_base_nameserver_ip_add(e, "127.0.0.1") != 0) {
        evdns_base_free(e, 0);
        return NULL;
    }
    return e;
}

/* The runtime's resolver, made if need be.  NULL with errno. */
static struct dns *dns_get(void)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL) {
        errno = EPERM;
        return NULL;
    }
    if (dns_cur != NULL)
        return dns_cur;
    if (dns_hook(rt) != 0)
        return NULL;
    struct dns *d = calloc(1, sizeof *d);
    if (d == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    d->evdns = own_evdns(rt->base);
    if (d->evdns == NULL) {
        free(d);
        errno = ENOMEM;
        return NULL;
    }
    d->own = 1;
    d->base = rt->base;
    dns_cur = d;
    return d;
}

struct evdns_base *eco_evdns_base(void)
{
    struct dns *d = dns_get();
    return d != NULL ? d->evdns : NULL;
}

int eco_set_evdns_base(struct evdns_base *evdns)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    struct dns *d = NULL;
    if (evdns != NULL) {
        if (dns_hook(rt) != 0)
            return -1;
        d = calloc(1, sizeof *d);
        if (d == NULL) {
            errno = ENOMEM;
            return -1;
        }
        d->evdns = evdns;
        d->base = rt->base;
    }
    dns_retire(dns_cur);
    dns_cur = d;
    return 0;
}

/* ---- lookups ---- */

struct lookup {
    eco_promise_t *p;
    struct dns *dns;
    struct evdns_getaddrinfo_request *req; /* until the callback */
    int err;                               /* its EVUTIL_EAI_* */
    struct evutil_addrinfo *res;
};

/* The promise's drop: nobody took the answer. */
static void lookup_drop(void *arg)
{
    struct lookup *l = arg;
    if (l->res != NULL)
        evutil_freeaddrinfo(l->res);
    free(l);
}

/* The waiter gave up before the answer: stop asking.  evdns calls back
 * later (EVUTIL_EAI_CANCEL) and that settles the promise. */
static void lookup_cancel(void *arg)
{
    struct lookup *l = arg;
    if (l->req != NULL)
        evdns_getaddrinfo_cancel(l->req);
}

static void on_lookup(int err, struct evutil_addrinfo *res, void *arg)
{
    struct lookup *l = arg;
    struct dns *d = l->dns;
    l->err = err;
    l->res = res;
    l->req = NULL;
    d->inflight--;
    eco_promise_resolve(l->p, l); /* l is the promise's now */
    if (d->retired && d->inflight == 0) {
        /* Not now: when evdns answers one of the two questions of a
         * lookup and gives up on the other, the other's cancel calls back
         * after us, in this pass, and looks at the evdns_base.  A zero
         * timeout runs after this pass.  Should libevent be out of memory,
         * d is left alone: better than freed under evdns's feet. */
        static const struct timeval zero = {0, 0};
        (void)event_base_once(d->base, -1, EV_TIMEOUT, dns_free_cb, d, &zero);
    }
}

/* getaddrinfo's code for evdns's. */
static int eai_of(int err)
{
    switch (err) {
    case 0:
        return 0;
    case EVUTIL_EAI_CANCEL:
        errno = ECANCELED;
        return EAI_SYSTEM;
    /* libevent's own numbers, should it have been built without the
     * system's (event2/util.h) */
    case -901:
        return EAI_ADDRFAMILY;
    case -908:
        return EAI_NONAME;
    case -902:
        return EAI_AGAIN;
    case -903:
        return EAI_BADFLAGS;
    case -905:
        return EAI_FAMILY;
    case -906:
        return EAI_MEMORY;
    case -907:
        return EAI_NODATA;
    case -909:
        return EAI_SERVICE;
    case -910:
        return EAI_SOCKTYPE;
    case -904:
    case -911:
        return EAI_FAIL;
    default:
        return err < -900 ? EAI_FAIL : err;
    }
}

/* ---- on the thread's own stack: a coroutine does it, joined ---- */

struct own_stack {
    const char *node, *service;
    const struct addrinfo *hints;
    struct addrinfo *res;
    int ret, err;
    int orphan; /* the caller has gone: free everything */
};

static void *own_stack_body(void *arg)
{
    struct own_stack *o = arg;
    o->ret = eco_getaddrinfo(o->node, o->service, o->hints, &o->res);
    o->err = errno;
    if (o->orphan) {
        eco_freeaddrinfo(o->res);
        free(o);
    }
    return NULL;
}

/* A lookup from the thread's own stack, as eco_join: the loop runs until
 * it is done.  Where the loop cannot run (inside a libevent callback of
 * the base: loops do not nest), the lookup is cancelled and left to end
 * by itself when the loop runs; the caller gets EAI_SYSTEM with EIO.  The
 * strings are the caller's, hence the cancel before they can go. */
static int from_own_stack(const char *node, const char *service, const struct addrinfo *hints,
                          struct addrinfo **res)
{
    struct own_stack *o = calloc(1, sizeof *o);
    if (o == NULL)
        return EAI_MEMORY;
    *o = (struct own_stack){.node = node, .service = service, .hints = hints};
    eco_t *co = eco_create(own_stack_body, o, NULL);
    if (co == NULL) {
        free(o);
        return EAI_SYSTEM;
    }
    eco_resume(co); /* runs until it parks in the lookup, or is done */
    if (eco_join(co, NULL) != 0) {
        int err = errno;
        o->orphan = 1;
        eco_cancel(co);
        eco_detach(co);
        errno = err;
        return EAI_SYSTEM;
    }
    int ret = o->ret;
    *res = o->res;
    errno = o->err;
    free(o);
    return ret;
}

int eco_getaddrinfo(const char *node, const char *service, const struct addrinfo *hints,
                    struct addrinfo **res)
{
    if (res == NULL) {
        errno = EINVAL;
        return EAI_SYSTEM;
    }
    *res = NULL;
    if (node == NULL && service == NULL)
        return EAI_NONAME;
    /* A numeric host (or none) needs no resolver and never waits: it is
     * answered here, anywhere. */
    struct evutil_addrinfo num;
    if (hints != NULL)
        num = *hints;
    else {
        memset(&num, 0, sizeof num);
        num.ai_family = AF_UNSPEC;
    }
    int numeric_asked = (num.ai_flags & AI_NUMERICHOST) != 0;
    num.ai_flags |= AI_NUMERICHOST;
    int err = evutil_getaddrinfo(node, service, &num, res);
    if (err != EVUTIL_EAI_NONAME || node == NULL || numeric_asked)
        return eai_of(err);
    *res = NULL;

    if (eco__rt != NULL && eco__in_coroutine() == NULL)
        return from_own_stack(node, service, hints, res);
    eco_t *co = eco__blocking();
    if (co == NULL)
        return EAI_SYSTEM;
    struct dns *d = dns_get();
    if (d == NULL)
        return EAI_SYSTEM;
    struct lookup *l = calloc(1, sizeof *l);
    eco_promise_t *p = l != NULL ? eco_promise_new(lookup_drop) : NULL;
    if (p == NULL) {
        free(l);
        return EAI_MEMORY;
    }
    char what[64];
    snprintf(what, sizeof what, "getaddrinfo %s", node);
    eco__promise_label(p, what);
    eco_promise_on_cancel(p, lookup_cancel, l);
    l->p = p;
    l->dns = d;
    d->inflight++;
    /* It may call on_lookup before it returns (a name in the hosts file,
     * a failure): then it returns NULL and l is the promise's already. */
    struct evdns_getaddrinfo_request *req = evdns_getaddrinfo(d->evdns, node, service, hints,
                                                              on_lookup, l);
    if (req != NULL) {
        l->req = req;
        d->asked = 1;
    }
    void *v;
    if (eco_promise_wait(p, -1, &v) != 0)
        return EAI_SYSTEM;
    l = v;
    err = eai_of(l->err);
    *res = l->res;
    free(l);
    return err;
}

void eco_freeaddrinfo(struct addrinfo *res)
{
    if (res != NULL)
        evutil_freeaddrinfo(res);
}
