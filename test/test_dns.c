/* test_dns.c - eco_getaddrinfo against a DNS server of the test's own on
 * 127.0.0.1 (evdns's server API) and a silent one (a UDP socket nobody
 * reads): names, several addresses, EAI_NONAME, the hosts file, numeric
 * hosts that never reach a server, the coroutine's deadline and eco_cancel
 * on a lookup nobody answers (and evdns's events gone after it), evdns's
 * own time-out, eco_dump's words, the runtime's own resolver keeping no
 * event in the base, and eco_teardown with lookups in flight. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/dns.h>
#include <event2/dns_struct.h>
#include <event2/event.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

/* A UDP socket on 127.0.0.1, port in *port. */
static int udp_bound(int *port)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ck_assert_int_ge(fd, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t len = sizeof sa;
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
    *port = ntohs(sa.sin_port);
    return fd;
}

/* ---- the test's DNS server ---- */

static struct {
    int fd, port;
    struct evdns_server_port *sp;
    int queries;
} srv;

static void answer(struct evdns_server_request *req, void *arg)
{
    (void)arg;
    srv.queries++;
    int err = 0;
    for (int i = 0; i < req->nquestions; i++) {
        const struct evdns_server_question *q = req->questions[i];
        /* evdns randomises the case of the names it asks (0x20). */
        if (strcasecmp(q->name, "silent.test") == 0) {
            evdns_server_request_drop(req);
            return;
        }
        uint32_t a[2];
        int n = 0;
        if (strcasecmp(q->name, "alpha.test") == 0) {
            a[n++] = htonl(0x7f000002);
        } else if (strcasecmp(q->name, "beta.test") == 0) {
            a[n++] = htonl(0x7f000003);
            a[n++] = htonl(0x7f000004);
        } else {
            err = DNS_ERR_NOTEXIST;
            continue;
        }
        /* AAAA: the name exists, with no such address (an empty reply). */
        if (q->type == EVDNS_TYPE_A)
            evdns_server_request_add_a_reply(req, q->name, n, a, 60);
    }
    evdns_server_request_respond(req, err);
}

static void server_start(void)
{
    srv.queries = 0;
    srv.fd = udp_bound(&srv.port);
    srv.sp = evdns_add_server_port_with_base(eco_base(), srv.fd, 0, answer, NULL);
    ck_assert_ptr_nonnull(srv.sp);
}

static void server_stop(void)
{
    evdns_close_server_port(srv.sp);
    close(srv.fd);
}

/* A resolver of the test's on the runtime's base, asking 127.0.0.1:port
 * only, made the runtime's. */
static struct evdns_base *client_new(int port)
{
    struct evdns_base *e = evdns_base_new(eco_base(), EVDNS_BASE_DISABLE_WHEN_INACTIVE);
    ck_assert_ptr_nonnull(e);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    ck_assert_int_eq(evdns_base_nameserver_ip_add(e, addr), 0);
    ck_assert_int_eq(eco_set_evdns_base(e), 0);
    return e;
}

/* The runtime's own resolver, asking 127.0.0.1:port only. */
static struct evdns_base *own_pointed_at(int port)
{
    struct evdns_base *e = eco_evdns_base();
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(evdns_base_clear_nameservers_and_suspend(e), 0);
    char addr[32];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", port);
    ck_assert_int_eq(evdns_base_nameserver_ip_add(e, addr), 0);
    ck_assert_int_eq(evdns_base_resume(e), 0);
    return e;
}

/* Nothing arrived at the silent server's socket. */
static void assert_no_query(int fd)
{
    char b[512];
    ck_assert_int_eq(recv(fd, b, sizeof b, MSG_DONTWAIT), -1);
    ck_assert_int_eq(errno, EAGAIN);
}

/* The base holds no event any more (evdns's included): the loop returns
 * with "no events" once the stack pool's trim timer, pending for about a
 * second after the last coroutine, has given the stacks back (a probe
 * timer evdns left behind would hold it for ten seconds and more). */
static void assert_base_idle(void)
{
    int64_t t0 = now_ns();
    ck_assert_int_eq(event_base_dispatch(eco_base()), 1);
    ck_assert_int_lt(ms_since(t0), slack(3000));
}

/* ---- one lookup in a coroutine ---- */

struct look {
    const char *node, *service;
    struct addrinfo hints;
    int use_hints;
    long deadline_ms;
    int ret, err;
    long took_ms;
    char addrs[4][INET6_ADDRSTRLEN];
    int port, n;
};

static void *look_body(void *arg)
{
    struct look *l = arg;
    struct addrinfo *res = NULL;
    int64_t t0 = now_ns(); /* before the deadline: the bound starts there */
    if (l->deadline_ms > 0)
        ck_assert_int_eq(eco_set_deadline(eco_self(), l->deadline_ms), 0);
    errno = 0;
    l->ret = eco_getaddrinfo(l->node, l->service, l->use_hints ? &l->hints : NULL, &res);
    l->err = errno;
    l->took_ms = ms_since(t0);
    for (struct addrinfo *ai = res; ai != NULL && l->n < 4; ai = ai->ai_next) {
        const void *a;
        if (ai->ai_family == AF_INET) {
            a = &((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            l->port = ntohs(((struct sockaddr_in *)ai->ai_addr)->sin_port);
        } else {
            a = &((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
            l->port = ntohs(((struct sockaddr_in6 *)ai->ai_addr)->sin6_port);
        }
        inet_ntop(ai->ai_family, a, l->addrs[l->n++], INET6_ADDRSTRLEN);
    }
    eco_freeaddrinfo(res);
    return NULL;
}

static void look_in_co(struct look *l)
{
    l->ret = -12345;
    eco_t *co = eco_create(look_body, l, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}

static struct look stream4(const char *node, const char *service)
{
    struct look l = {.node = node, .service = service, .use_hints = 1};
    l.hints.ai_family = AF_INET;
    l.hints.ai_socktype = SOCK_STREAM;
    return l;
}

/* ---- names from a server ---- */

START_TEST(names_from_server)
{
    server_start();
    struct evdns_base *e = client_new(srv.port);
    struct look l = stream4("alpha.test", "6379");
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_int_eq(l.n, 1);
    ck_assert_str_eq(l.addrs[0], "127.0.0.2");
    ck_assert_int_eq(l.port, 6379);
    /* Two addresses; no hints: both families asked, the A answers come. */
    l = (struct look){.node = "beta.test", .service = "80"};
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_int_ge(l.n, 2);
    int seen3 = 0, seen4 = 0;
    for (int i = 0; i < l.n; i++) {
        seen3 |= strcmp(l.addrs[i], "127.0.0.3") == 0;
        seen4 |= strcmp(l.addrs[i], "127.0.0.4") == 0;
    }
    ck_assert(seen3 && seen4);
    ck_assert_int_gt(srv.queries, 0);
    server_stop();
    evdns_base_free(e, 0);
}
END_TEST

START_TEST(noname)
{
    server_start();
    struct evdns_base *e = client_new(srv.port);
    struct look l = stream4("nosuch.test", "80");
    look_in_co(&l);
    ck_assert_int_eq(l.ret, EAI_NONAME);
    l = (struct look){.node = "nosuch.test"};
    look_in_co(&l);
    ck_assert_int_eq(l.ret, EAI_NONAME);
    server_stop();
    evdns_base_free(e, 0);
}
END_TEST

/* Many lookups at once, each coroutine its own. */
static void *many_body(void *arg)
{
    long i = (long)(intptr_t)arg;
    struct look l = stream4(i % 2 ? "alpha.test" : "beta.test", "1");
    look_body(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], i % 2 ? "127.0.0.2" : "127.0.0.3");
    return NULL;
}

START_TEST(many_at_once)
{
    server_start();
    struct evdns_base *e = client_new(srv.port);
    for (long i = 0; i < 40; i++)
        ck_assert_int_eq(eco_go(many_body, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(eco_loop(), 0);
    server_stop();
    evdns_base_free(e, 0);
}
END_TEST

/* ---- answered without a server ---- */

START_TEST(numeric_never_asks)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = client_new(port);
    struct look l = stream4("127.0.0.1", "80");
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], "127.0.0.1");
    ck_assert_int_eq(l.port, 80);
    ck_assert_int_lt(l.took_ms, slack(1000));
    l = (struct look){.node = "::1", .service = "443"};
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], "::1");
    ck_assert_int_eq(l.port, 443);
    /* No node: the wildcard or loopback address, as getaddrinfo. */
    l = stream4(NULL, "8080");
    l.hints.ai_flags = AI_PASSIVE;
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], "0.0.0.0");
    /* Outside any coroutine too: it never waits. */
    struct addrinfo *res = NULL;
    struct addrinfo h = {.ai_family = AF_INET};
    ck_assert_int_eq(eco_getaddrinfo("10.1.2.3", NULL, &h, &res), 0);
    ck_assert_ptr_nonnull(res);
    eco_freeaddrinfo(res);
    /* Numeric asked for, and not numeric: EAI_NONAME, no question. */
    h.ai_flags = AI_NUMERICHOST;
    ck_assert_int_eq(eco_getaddrinfo("alpha.test", NULL, &h, &res), EAI_NONAME);
    ck_assert_ptr_null(res);
    assert_no_query(silent);
    close(silent);
    evdns_base_free(e, 0);
}
END_TEST

START_TEST(hosts_file_never_asks)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = client_new(port);
    char path[] = "/tmp/eco_hosts_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    const char text[] = "# the test's\n127.0.0.9 gamma.test gamma\n::9 delta.test\n";
    ck_assert_int_eq(write(fd, text, sizeof text - 1), (ssize_t)sizeof text - 1);
    close(fd);
    ck_assert_int_eq(evdns_base_load_hosts(e, path), 0);
    unlink(path);
    struct look l = stream4("gamma.test", "25");
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], "127.0.0.9");
    ck_assert_int_eq(l.port, 25);
    l = (struct look){.node = "delta.test", .use_hints = 1};
    l.hints.ai_family = AF_INET6;
    look_in_co(&l);
    ck_assert_int_eq(l.ret, 0);
    ck_assert_str_eq(l.addrs[0], "::9");
    assert_no_query(silent);
    close(silent);
    evdns_base_free(e, 0);
}
END_TEST

/* ---- giving up on a server that never answers ---- */

START_TEST(deadline_on_silent_server)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = client_new(port);
    struct look l = stream4("silent.test", "80");
    l.deadline_ms = 200;
    look_in_co(&l);
    ck_assert_int_eq(l.ret, EAI_SYSTEM);
    ck_assert_int_eq(l.err, ETIMEDOUT);
    ck_assert_int_ge(l.took_ms, 200);
    ck_assert_int_lt(l.took_ms, slack(2000));
    /* The question was asked, and the lookup cancelled: evdns keeps
     * nothing in the base (its own time-out is 5 s). */
    char b[512];
    ck_assert_int_gt(recv(silent, b, sizeof b, MSG_DONTWAIT), 0);
    assert_base_idle();
    close(silent);
    evdns_base_free(e, 0);
}
END_TEST

static void dump_to(char *buf, size_t n)
{
    FILE *f = tmpfile();
    ck_assert_ptr_nonnull(f);
    ck_assert_int_ge(eco_dump(fileno(f)), 1);
    rewind(f);
    size_t got = fread(buf, 1, n - 1, f);
    buf[got] = '\0';
    fclose(f);
}

START_TEST(cancel_on_silent_server)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = client_new(port);
    struct look l = stream4("silent.test", "80");
    l.ret = -12345;
    eco_t *co = eco_create(look_body, &l, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(l.ret, -12345); /* parked */
    char buf[4096];
    dump_to(buf, sizeof buf);
    ck_assert_msg(strstr(buf, "wait=\"getaddrinfo silent.test\"") != NULL, "dump: %s", buf);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_lt(ms_since(t0), slack(1000));
    ck_assert_int_eq(l.ret, EAI_SYSTEM);
    ck_assert_int_eq(l.err, ECANCELED);
    assert_base_idle();
    close(silent);
    evdns_base_free(e, 0);
}
END_TEST

/* evdns's own bound, made short: EAI_FAIL (or EAI_AGAIN).  evdns then
 * marks the server failed and probes it on a timer; the runtime's own
 * resolver drops that timer once the coroutines are done, so the base
 * still runs dry. */
START_TEST(resolver_times_out)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = own_pointed_at(port);
    ck_assert_int_eq(evdns_base_set_option(e, "timeout:", "0.2"), 0);
    ck_assert_int_eq(evdns_base_set_option(e, "attempts:", "1"), 0);
    struct look l = stream4("silent.test", "80");
    look_in_co(&l);
    ck_assert_msg(l.ret == EAI_FAIL || l.ret == EAI_AGAIN, "ret %d", l.ret);
    ck_assert_int_ge(l.took_ms, 150); /* libevent's clock may be a coarse one */
    ck_assert_int_lt(l.took_ms, slack(3000));
    assert_base_idle();
    close(silent);
}
END_TEST

static void *cancelled_look(void *arg)
{
    ck_assert_int_eq(eco_cancel(eco_self()), 0);
    look_body(arg);
    return NULL;
}

START_TEST(errors)
{
    struct addrinfo *res = (struct addrinfo *)&res;
    ck_assert_int_eq(eco_getaddrinfo(NULL, NULL, NULL, &res), EAI_NONAME);
    ck_assert_ptr_null(res);
    ck_assert_int_eq(eco_getaddrinfo("127.0.0.1", "80", NULL, NULL), EAI_SYSTEM);
    ck_assert_int_eq(errno, EINVAL);
    struct addrinfo h = {.ai_family = 12345};
    ck_assert_int_eq(eco_getaddrinfo("127.0.0.1", NULL, &h, &res), EAI_FAMILY);
    eco_freeaddrinfo(NULL);
    /* A cancelled coroutine: the name is not looked up. */
    struct look l = stream4("alpha.test", "80");
    eco_t *co = eco_create(cancelled_look, &l, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(l.ret, EAI_SYSTEM);
    ck_assert_int_eq(l.err, ECANCELED);
}
END_TEST

/* ---- on the thread's own stack ---- */

START_TEST(from_own_stack)
{
    server_start();
    struct evdns_base *e = client_new(srv.port);
    struct addrinfo *res = NULL;
    struct addrinfo h = {.ai_family = AF_INET, .ai_socktype = SOCK_STREAM};
    ck_assert_int_eq(eco_getaddrinfo("alpha.test", "80", &h, &res), 0);
    ck_assert_ptr_nonnull(res);
    ck_assert_int_eq(((struct sockaddr_in *)res->ai_addr)->sin_addr.s_addr, htonl(0x7f000002));
    eco_freeaddrinfo(res);
    ck_assert_int_eq(eco_getaddrinfo("nosuch.test", "80", &h, &res), EAI_NONAME);
    server_stop();
    evdns_base_free(e, 0);
}
END_TEST

/* Inside a libevent callback the loop cannot run again: EIO at once, the
 * lookup cancelled and cleaned up when the loop runs on. */
static int cb_ret, cb_err;

static void lookup_in_callback(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
    struct addrinfo *res = NULL;
    cb_ret = eco_getaddrinfo("silent.test", "80", NULL, &res);
    cb_err = errno;
    ck_assert_ptr_null(res);
}

START_TEST(not_inside_a_callback)
{
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e = client_new(port);
    struct timeval tv = {0, 0};
    ck_assert_int_eq(event_base_once(eco_base(), -1, EV_TIMEOUT, lookup_in_callback, NULL, &tv),
                     0);
    assert_base_idle(); /* runs the callback, then the cancelled lookup */
    ck_assert_int_eq(cb_ret, EAI_SYSTEM);
    ck_assert_int_eq(cb_err, EIO);
    close(silent);
    evdns_base_free(e, 0);
}
END_TEST

/* ---- the runtime's own resolver ---- */

START_TEST(own_resolver)
{
    struct evdns_base *own = eco_evdns_base();
    ck_assert_ptr_nonnull(own);
    ck_assert_ptr_eq(eco_evdns_base(), own);
    /* Idle, it keeps no event in the base. */
    assert_base_idle();
    /* localhost from /etc/hosts, if the system lists it there: nothing
     * goes to the system's name servers. */
    FILE *hf = fopen("/etc/hosts", "r");
    int listed = 0;
    char line[256];
    while (hf != NULL && fgets(line, sizeof line, hf) != NULL)
        listed |= strncmp(line, "127.0.0.1", 9) == 0 && strstr(line, "localhost") != NULL;
    if (hf != NULL)
        fclose(hf);
    if (listed) {
        struct look l = stream4("localhost", "80");
        look_in_co(&l);
        ck_assert_int_eq(l.ret, 0);
        ck_assert_str_eq(l.addrs[0], "127.0.0.1");
        assert_base_idle();
    }
    /* Replaced by the user's, then back to a new own one. */
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *mine = client_new(port);
    ck_assert_ptr_eq(eco_evdns_base(), mine);
    ck_assert_int_eq(eco_set_evdns_base(NULL), 0);
    ck_assert_ptr_nonnull(eco_evdns_base());
    ck_assert_ptr_ne(eco_evdns_base(), mine);
    evdns_base_free(mine, 0);
    close(silent);
}
END_TEST

static void *no_runtime(void *arg)
{
    (void)arg;
    ck_assert_ptr_null(eco_evdns_base());
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_set_evdns_base(NULL), -1);
    ck_assert_int_eq(errno, EPERM);
    struct addrinfo *res = NULL;
    ck_assert_int_eq(eco_getaddrinfo("::1", "1", NULL, &res), 0);
    eco_freeaddrinfo(res);
    ck_assert_int_eq(eco_getaddrinfo("alpha.test", "1", NULL, &res), EAI_SYSTEM);
    ck_assert_int_eq(errno, EPERM);
    return NULL;
}

START_TEST(without_runtime)
{
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, no_runtime, NULL), 0);
    pthread_join(t, NULL);
}
END_TEST

/* ---- eco_teardown with lookups in flight ---- */

/* The runtime on a base of the test's; a coroutine parks in a lookup to a
 * silent server, on the test's resolver (own 0) or on the runtime's own,
 * pointed there (own 1); eco_teardown abandons it.  Running the base
 * afterwards lets evdns finish the cancel: Valgrind and ASan then find
 * nothing leaked or used after free. */
static void teardown_in_flight(int own)
{
    struct event_base *base = event_base_new();
    ck_assert_ptr_nonnull(base);
    ck_assert_int_eq(eco_setup(base), 0);
    int port;
    int silent = udp_bound(&port);
    struct evdns_base *e;
    if (own)
        e = own_pointed_at(port);
    else
        e = client_new(port);
    struct look l = stream4("silent.test", "80");
    l.ret = -12345;
    eco_t *co = eco_create(look_body, &l, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    eco_teardown();
    ck_assert_int_eq(l.ret, -12345);
    int64_t t0 = now_ns();
    ck_assert_int_eq(event_base_dispatch(base), 1); /* all done, quickly */
    ck_assert_int_lt(ms_since(t0), slack(1000));
    if (!own)
        evdns_base_free(e, 0);
    close(silent);
    event_base_free(base);
}

START_TEST(teardown_user_resolver)
{
    teardown_in_flight(0);
}
END_TEST

START_TEST(teardown_own_resolver)
{
    teardown_in_flight(1);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("dns");
    TCase *tc = rt_tcase("dns");
    tcase_add_test(tc, names_from_server);
    tcase_add_test(tc, noname);
    tcase_add_test(tc, many_at_once);
    tcase_add_test(tc, numeric_never_asks);
    tcase_add_test(tc, hosts_file_never_asks);
    tcase_add_test(tc, deadline_on_silent_server);
    tcase_add_test(tc, cancel_on_silent_server);
    tcase_add_test(tc, resolver_times_out);
    tcase_add_test(tc, errors);
    tcase_add_test(tc, from_own_stack);
    tcase_add_test(tc, not_inside_a_callback);
    tcase_add_test(tc, own_resolver);
    tcase_add_test(tc, without_runtime);
    suite_add_tcase(s, tc);
    TCase *bare = tcase_create("teardown");
    tcase_set_timeout(bare, 60);
    tcase_add_test(bare, teardown_user_resolver);
    tcase_add_test(bare, teardown_own_resolver);
    suite_add_tcase(s, bare);
    return run_suite(s);
}
