/* test_bev.c - coroutines on bufferevents: each call, end of file, errors,
 * the bufferevent's own timeouts, eco_cancel and deadlines, the user's
 * callbacks kept and handed what no call takes, a reader and a writer on
 * one bufferevent at once, connects, eco_dump's words and teardown.  The
 * bufferevents are socket ones on one end of a Unix socketpair; the test
 * drives the other end directly. */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "test_util.h"

static int slow(void)
{
    const char *s = getenv("ECO_TEST_SLOW");
    return s != NULL && s[0] == '1';
}

/* The pair under test: bev on sv[0], the peer's raw end sv[1]. */
static struct bufferevent *bev;
static int peer = -1;

static void pair_up(void)
{
    rt_up();
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    bev = bufferevent_socket_new(eco_base(), sv[0], BEV_OPT_CLOSE_ON_FREE);
    ck_assert_ptr_nonnull(bev);
    peer = sv[1];
}

static void pair_down(void)
{
    if (bev != NULL)
        bufferevent_free(bev);
    bev = NULL;
    if (peer >= 0)
        eco_close(peer);
    peer = -1;
    rt_down();
}

static TCase *pair_tcase(const char *name)
{
    TCase *tc = tcase_create(name);
    tcase_add_checked_fixture(tc, pair_up, pair_down);
    tcase_set_timeout(tc, 60);
    return tc;
}

static void run(eco_fn fn, void *arg)
{
    eco_t *co = eco_create(fn, arg, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}

/* Writes all of buf to the peer's end from a coroutine. */
static void peer_send(const void *buf, size_t n)
{
    ck_assert_int_eq(eco_write_full(peer, buf, n), (ssize_t)n);
}

/* ---- reading ---- */

static void *read_some_body(void *arg)
{
    (void)arg;
    char buf[64];
    peer_send("hello", 5);
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 5);
    ck_assert_int_eq(memcmp(buf, "hello", 5), 0);
    /* Less than there is: the rest stays for the next call. */
    peer_send("abcdef", 6);
    ck_assert_int_eq(eco_bev_read(bev, buf, 4), 4);
    ck_assert_int_eq(eco_bev_read(bev, buf + 4, 10), 2);
    ck_assert_int_eq(memcmp(buf, "abcdef", 6), 0);
    ck_assert_int_eq(eco_bev_read(bev, buf, 0), 0);
    shutdown(peer, SHUT_WR);
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 0);
    /* End of file again: the call enables reading, the socket says so. */
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 0);
    return NULL;
}

START_TEST(read_what_is_there)
{
    run(read_some_body, NULL);
}
END_TEST

/* The peer sends size bytes of a pattern in pieces, then closes its side. */
struct sender {
    size_t size, piece;
    int close_after;
};

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 7 + (i >> 11));
}

static void *sender_body(void *arg)
{
    struct sender *s = arg;
    unsigned char buf[8192];
    for (size_t off = 0; off < s->size;) {
        size_t n = s->size - off < s->piece ? s->size - off : s->piece;
        if (n > sizeof buf)
            n = sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(off + i);
        peer_send(buf, n);
        off += n;
    }
    if (s->close_after)
        shutdown(peer, SHUT_WR);
    return NULL;
}

static void *read_full_body(void *arg)
{
    size_t size = *(size_t *)arg;
    unsigned char *buf = malloc(size + 100);
    ck_assert_ptr_nonnull(buf);
    struct sender s = {size, 1000, 1};
    ck_assert_int_eq(eco_go(sender_body, &s), 0);
    /* Beyond the input's high-water mark, which stops the reading. */
    bufferevent_setwatermark(bev, EV_READ, 0, 4096);
    ck_assert_int_eq(eco_bev_read_full(bev, buf, size - 10), (ssize_t)(size - 10));
    errno = EINVAL;
    ck_assert_int_eq(eco_bev_read_full(bev, buf + size - 10, 100), 10); /* end of file */
    ck_assert_int_eq(errno, 0);
    size_t bad = 0; /* counted: an assert per byte would cost seconds */
    for (size_t i = 0; i < size; i++)
        bad += buf[i] != pattern(i);
    ck_assert_uint_eq(bad, 0);
    ck_assert_int_eq(eco_bev_read_full(bev, buf, 100), 0);
    free(buf);
    return NULL;
}

START_TEST(read_full_exactly_and_at_eof)
{
    size_t size = slow() ? 100 * 1000 : 1000 * 1000;
    run(read_full_body, &size);
}
END_TEST

static void *send_rest(void *arg)
{
    (void)arg;
    peer_send("ee\n", 3);
    return NULL;
}

static void *readln_body(void *arg)
{
    (void)arg;
    size_t len = 99;
    peer_send("one\ntwo\r\n", 9);
    char *l = eco_bev_readln(bev, EVBUFFER_EOL_LF, 0, &len);
    ck_assert_str_eq(l, "one");
    ck_assert_uint_eq(len, 3);
    free(l);
    l = eco_bev_readln(bev, EVBUFFER_EOL_CRLF_STRICT, 0, &len);
    ck_assert_str_eq(l, "two");
    free(l);
    /* A line that comes in two pieces. */
    peer_send("thr", 3);
    ck_assert_int_eq(eco_go(send_rest, NULL), 0); /* once we are parked */
    l = eco_bev_readln(bev, EVBUFFER_EOL_LF, 0, NULL);
    ck_assert_str_eq(l, "three");
    free(l);
    /* Too long: nothing taken. */
    peer_send("0123456789", 10);
    errno = 0;
    ck_assert_ptr_null(eco_bev_readln(bev, EVBUFFER_EOL_LF, 8, &len));
    ck_assert_int_eq(errno, EMSGSIZE);
    ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_input(bev)), 10);
    errno = 0;
    ck_assert_ptr_null(eco_bev_readln(bev, 99, 0, &len));
    ck_assert_int_eq(errno, EINVAL);
    /* The last line has no end of line; then the end. */
    shutdown(peer, SHUT_WR);
    l = eco_bev_readln(bev, EVBUFFER_EOL_LF, 0, &len);
    ck_assert_str_eq(l, "0123456789");
    ck_assert_uint_eq(len, 10);
    free(l);
    errno = EINVAL;
    ck_assert_ptr_null(eco_bev_readln(bev, EVBUFFER_EOL_LF, 0, &len));
    ck_assert_int_eq(errno, 0);
    return NULL;
}

START_TEST(readln_lines)
{
    run(readln_body, NULL);
}
END_TEST

/* ---- writing ---- */

struct receiver {
    size_t size;
    size_t got;
    int bad;
};

static void *receiver_body(void *arg)
{
    struct receiver *r = arg;
    unsigned char buf[16384];
    while (r->got < r->size) {
        ssize_t n = eco_read(peer, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        for (ssize_t i = 0; i < n; i++)
            r->bad += buf[i] != pattern(r->got + (size_t)i);
        r->got += (size_t)n;
    }
    return NULL;
}

static void *write_body(void *arg)
{
    size_t size = *(size_t *)arg;
    struct receiver r = {size, 0, 0};
    eco_t *rc = eco_create(receiver_body, &r, NULL);
    ck_assert_ptr_nonnull(rc);
    ck_assert_int_eq(eco_resume(rc), 0);
    unsigned char buf[10000];
    struct evbuffer *out = bufferevent_get_output(bev);
    size_t most = 0;
    for (size_t off = 0; off < size;) {
        size_t n = size - off < sizeof buf ? size - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(off + i);
        ck_assert_int_eq(eco_bev_write(bev, buf, n), (ssize_t)n);
        off += n;
        if (evbuffer_get_length(out) > most)
            most = evbuffer_get_length(out);
    }
    /* Back-pressure: the default bound, 64 KiB, plus one write. */
    ck_assert_uint_le(most, 64 * 1024 + sizeof buf);
    ck_assert_int_eq(eco_bev_flush(bev), 0);
    ck_assert_uint_eq(evbuffer_get_length(out), 0);
    ck_assert_int_eq(eco_join(rc, NULL), 0);
    ck_assert_uint_eq(r.got, size);
    ck_assert_int_eq(r.bad, 0);
    ck_assert_int_eq(eco_bev_write(bev, NULL, 0), 0);
    ck_assert_int_eq(eco_bev_flush(bev), 0); /* empty: at once */
    return NULL;
}

START_TEST(write_and_flush)
{
    size_t size = slow() ? 300 * 1000 : 2 * 1000 * 1000;
    run(write_body, &size);
}
END_TEST

/* ---- a reader and a writer at once: an echo through the peer ---- */

static void *echo_peer(void *arg)
{
    (void)arg;
    char buf[8192];
    ssize_t n;
    while ((n = eco_read(peer, buf, sizeof buf)) > 0)
        peer_send(buf, (size_t)n);
    ck_assert_int_eq(n, 0);
    shutdown(peer, SHUT_WR);
    return NULL;
}

struct duplex {
    size_t size;
    size_t got;
    int bad;
};

static void *duplex_reader(void *arg)
{
    struct duplex *d = arg;
    unsigned char buf[5000];
    ssize_t n;
    while ((n = eco_bev_read(bev, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            d->bad += buf[i] != pattern(d->got + (size_t)i);
        d->got += (size_t)n;
    }
    ck_assert_int_eq(n, 0);
    return NULL;
}

static void *duplex_writer(void *arg)
{
    struct duplex *d = arg;
    unsigned char buf[3000];
    for (size_t off = 0; off < d->size;) {
        size_t n = d->size - off < sizeof buf ? d->size - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(off + i);
        ck_assert_int_eq(eco_bev_write(bev, buf, n), (ssize_t)n);
        off += n;
    }
    ck_assert_int_eq(eco_bev_flush(bev), 0);
    shutdown(bufferevent_getfd(bev), SHUT_WR);
    return NULL;
}

START_TEST(reader_and_writer_at_once)
{
    struct duplex d = {slow() ? 200 * 1000 : 2 * 1000 * 1000, 0, 0};
    eco_t *e = eco_create(echo_peer, NULL, NULL);
    eco_t *r = eco_create(duplex_reader, &d, NULL);
    eco_t *w = eco_create(duplex_writer, &d, NULL);
    ck_assert_int_eq(eco_resume(e), 0);
    ck_assert_int_eq(eco_resume(r), 0);
    ck_assert_int_eq(eco_resume(w), 0);
    ck_assert_int_eq(eco_join(w, NULL), 0);
    ck_assert_int_eq(eco_join(r, NULL), 0);
    ck_assert_int_eq(eco_join(e, NULL), 0);
    ck_assert_uint_eq(d.got, d.size);
    ck_assert_int_eq(d.bad, 0);
}
END_TEST

/* ---- bounds: the bufferevent's timeouts, deadlines, cancel ---- */

static void *timeout_body(void *arg)
{
    (void)arg;
    char buf[16];
    struct timeval tv = {0, 50 * 1000};
    bufferevent_set_timeouts(bev, &tv, NULL);
    int64_t t0 = now_ns();
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    /* libevent's: it counts from the loop's cached time, which the slow
     * tools leave further behind. */
    ck_assert_int_ge(now_ns() - t0, (slow() ? 20 : 45) * 1000000LL);
    /* The bufferevent is still usable. */
    peer_send("x", 1);
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 1);
    bufferevent_set_timeouts(bev, NULL, NULL);
    /* The write timeout: the peer reads nothing, the output stays. */
    tv.tv_usec = 100 * 1000;
    bufferevent_set_timeouts(bev, NULL, &tv);
    static char big[1 << 16];
    ssize_t r;
    int rounds = 0;
    while ((r = eco_bev_write(bev, big, sizeof big)) > 0)
        ck_assert_int_lt(++rounds, 1000);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_bev_flush(bev), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    return NULL;
}

START_TEST(bufferevent_timeouts)
{
    run(timeout_body, NULL);
}
END_TEST

static void *deadline_body(void *arg)
{
    (void)arg;
    char buf[16];
    int64_t t0 = now_ns(); /* before: the deadline counts from the call */
    ck_assert_int_eq(eco_set_deadline(eco_self(), 50), 0);
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_ge(now_ns() - t0, 50 * 1000000LL);
    ck_assert_int_eq(eco_bev_flush(bev), -1); /* every call from then on */
    ck_assert_int_eq(errno, ETIMEDOUT);
    ck_assert_int_eq(eco_set_deadline(eco_self(), -1), 0);
    return NULL;
}

START_TEST(deadline)
{
    run(deadline_body, NULL);
}
END_TEST

struct parked {
    int ret, err;
};

static void *park_read_body(void *arg)
{
    struct parked *p = arg;
    char buf[16];
    p->ret = (int)eco_bev_read(bev, buf, sizeof buf);
    p->err = errno;
    return NULL;
}

/* The user's callbacks and what they saw. */
static int user_reads, user_writes, user_events;
static short user_what;
static void *user_arg_seen;

static void user_read(struct bufferevent *b, void *arg)
{
    (void)b;
    user_reads++;
    user_arg_seen = arg;
}

static void user_write(struct bufferevent *b, void *arg)
{
    (void)b;
    user_writes++;
    user_arg_seen = arg;
}

static void user_event(struct bufferevent *b, short what, void *arg)
{
    (void)b;
    user_events++;
    user_what = what;
    user_arg_seen = arg;
}

static void expect_user_callbacks(void *arg)
{
    bufferevent_data_cb r, w;
    bufferevent_event_cb e;
    void *a;
    bufferevent_getcb(bev, &r, &w, &e, &a);
    ck_assert(r == user_read);
    ck_assert(w == user_write);
    ck_assert(e == user_event);
    ck_assert_ptr_eq(a, arg);
}

START_TEST(cancel_restores_callbacks)
{
    int tag;
    bufferevent_setcb(bev, user_read, user_write, user_event, &tag);
    struct parked p = {0, 0};
    eco_t *co = eco_create(park_read_body, &p, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_state(co), ECO_PENDING);
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert_int_eq(p.ret, -1);
    ck_assert_int_eq(p.err, ECANCELED);
    expect_user_callbacks(&tag);
    ck_assert_int_eq(user_reads + user_writes + user_events, 0);
}
END_TEST

/* While a writer waits, what it does not take goes to the user: data to
 * the read callback, end of file to the event callback.  An end of file a
 * reader takes does not. */
static void *flush_body(void *arg)
{
    struct parked *p = arg;
    p->ret = eco_bev_flush(bev);
    p->err = errno;
    return NULL;
}

static void *drain_peer(void *arg)
{
    size_t *left = arg;
    char buf[65536];
    while (*left > 0) {
        ssize_t n = eco_read(peer, buf, sizeof buf);
        ck_assert_int_gt(n, 0);
        *left -= (size_t)n;
    }
    return NULL;
}

static void *user_gets_the_rest_body(void *arg)
{
    int *tag = arg;
    /* A writer parks: more output than the socket takes. */
    size_t size = 4 << 20;
    char *big = calloc(1, size);
    ck_assert_int_eq(bufferevent_write(bev, big, size), 0);
    free(big);
    struct parked p = {1, 0};
    eco_t *fl = eco_create(flush_body, &p, NULL);
    ck_assert_int_eq(eco_resume(fl), 0);
    ck_assert_int_eq(eco_state(fl), ECO_PENDING);
    bufferevent_enable(bev, EV_READ);
    peer_send("data", 4);
    for (int i = 0; i < 200 && user_reads == 0; i++)
        eco_sleep(1);
    ck_assert_int_eq(user_reads, 1);
    ck_assert_ptr_eq(user_arg_seen, tag);
    shutdown(peer, SHUT_WR);
    for (int i = 0; i < 200 && user_events == 0; i++)
        eco_sleep(1);
    ck_assert_int_eq(user_events, 1);
    ck_assert(user_what & BEV_EVENT_EOF);
    ck_assert_int_eq(eco_state(fl), ECO_PENDING);
    /* The peer drains; the flush ends, the user's callbacks are back. */
    eco_t *dr = eco_create(drain_peer, &size, NULL);
    ck_assert_int_eq(eco_resume(dr), 0);
    ck_assert_int_eq(eco_join(fl, NULL), 0);
    ck_assert_int_eq(p.ret, 0);
    ck_assert_int_eq(eco_join(dr, NULL), 0);
    expect_user_callbacks(tag);
    /* The user's write callback ran as the output drained? No: the
     * flush took those.  The data is still in the input for a read. */
    ck_assert_int_eq(user_writes, 0);
    char buf[8];
    user_reads = user_events = 0;
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 4);
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), 0);
    ck_assert_int_eq(user_events, 0); /* the reader took the end of file */
    expect_user_callbacks(tag);
    return NULL;
}

/* Runs body with the user's callbacks installed on bev, counts zeroed;
 * body gets the callbacks' argument. */
static void run_with_user_callbacks(eco_fn body)
{
    int tag;
    user_reads = user_writes = user_events = 0;
    bufferevent_setcb(bev, user_read, user_write, user_event, &tag);
    run(body, &tag);
}

START_TEST(user_callbacks_get_the_rest)
{
    run_with_user_callbacks(user_gets_the_rest_body);
}
END_TEST

/* Dirties the stack a finished coroutine left, which the next one is
 * likely to be given. */
static void *scribble_body(void *arg)
{
    (void)arg;
    volatile char junk[8192];
    memset((char *)junk, 0x5a, sizeof junk);
    return NULL;
}

/* The first of two waits on a bufferevent leaves first (cancelled): the
 * other goes on, what it does not take still reaches the user's
 * callbacks, and they are back when it ends. */
static void *first_leaves_body(void *arg)
{
    int *tag = arg;
    struct parked rd = {0, 0}, fp = {1, 0};
    eco_t *r = eco_create(park_read_body, &rd, NULL);
    ck_assert_int_eq(eco_resume(r), 0);
    ck_assert_int_eq(eco_state(r), ECO_PENDING);
    size_t size = 4 << 20;
    char *big = calloc(1, size);
    ck_assert_int_eq(bufferevent_write(bev, big, size), 0);
    free(big);
    eco_t *fl = eco_create(flush_body, &fp, NULL);
    ck_assert_int_eq(eco_resume(fl), 0);
    ck_assert_int_eq(eco_state(fl), ECO_PENDING);
    ck_assert_int_eq(eco_cancel(r), 0);
    ck_assert_int_eq(eco_join(r, NULL), 0);
    ck_assert_int_eq(rd.err, ECANCELED);
    run(scribble_body, NULL);
    /* The flush alone waits: data goes to the user's read callback. */
    peer_send("data", 4);
    for (int i = 0; i < 200 && user_reads == 0; i++)
        eco_sleep(1);
    ck_assert_int_eq(user_reads, 1);
    ck_assert_ptr_eq(user_arg_seen, tag);
    eco_t *dr = eco_create(drain_peer, &size, NULL);
    ck_assert_int_eq(eco_resume(dr), 0);
    ck_assert_int_eq(eco_join(fl, NULL), 0);
    ck_assert_int_eq(fp.ret, 0);
    ck_assert_int_eq(eco_join(dr, NULL), 0);
    expect_user_callbacks(tag);
    ck_assert_int_eq(user_writes, 0);
    return NULL;
}

START_TEST(first_wait_leaves_first)
{
    run_with_user_callbacks(first_leaves_body);
}
END_TEST

/* A reset while reading is an error with the socket's errno. */
static void *reset_body(void *arg)
{
    (void)arg;
    char buf[16];
    ck_assert_int_eq(eco_bev_write(bev, "unread", 6), 6);
    ck_assert_int_eq(eco_bev_flush(bev), 0);
    /* The peer closes with our data unread: a Unix socket reports a
     * reset to us. */
    eco_close(peer);
    peer = -1;
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), -1);
    ck_assert_int_eq(errno, ECONNRESET);
    return NULL;
}

START_TEST(reset_is_an_error)
{
    run(reset_body, NULL);
}
END_TEST

/* ---- connecting ---- */

static void *connect_body(void *arg)
{
    (void)arg;
    int ls = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(bind(ls, (struct sockaddr *)&sa, sizeof sa), 0);
    socklen_t sl = sizeof sa;
    getsockname(ls, (struct sockaddr *)&sa, &sl);
    ck_assert_int_eq(listen(ls, 4), 0);
    struct bufferevent *c = bufferevent_socket_new(eco_base(), -1, BEV_OPT_CLOSE_ON_FREE);
    ck_assert_int_eq(bufferevent_socket_connect(c, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(eco_bev_wait_connected(c), 0);
    bufferevent_free(c);
    close(ls); /* now nobody listens there */
    c = bufferevent_socket_new(eco_base(), -1, BEV_OPT_CLOSE_ON_FREE);
    if (bufferevent_socket_connect(c, (struct sockaddr *)&sa, sizeof sa) == 0) {
        ck_assert_int_eq(eco_bev_wait_connected(c), -1);
        ck_assert_int_eq(errno, ECONNREFUSED);
    }
    bufferevent_free(c);
    return NULL;
}

START_TEST(wait_connected)
{
    run(connect_body, NULL);
}
END_TEST

/* ---- seeing it, misuse, teardown ---- */

static int find_wait(const eco_info_t *info, void *arg)
{
    char *out = arg;
    if (info->wait[0] != '\0' && strncmp(info->wait, "bev", 3) == 0)
        snprintf(out, 64, "%s", info->wait);
    return 0;
}

START_TEST(dump_words)
{
    struct parked p = {0, 0};
    eco_t *co = eco_create(park_read_body, &p, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    char seen[64] = "", want[64];
    eco_foreach(find_wait, seen);
    snprintf(want, sizeof want, "bev read fd %d", (int)bufferevent_getfd(bev));
    ck_assert_str_eq(seen, want);
    ck_assert_int_eq(eco_cancel(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

static void *misuse_body(void *arg)
{
    (void)arg;
    ck_assert_int_eq(eco_bev_read(NULL, NULL, 0), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_bev_read(bev, NULL, 4), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(eco_bev_write(bev, NULL, 4), -1);
    ck_assert_int_eq(errno, EFAULT);
    ck_assert_int_eq(eco_cancel(eco_self()), 0);
    ck_assert_int_eq(eco_bev_write(bev, "x", 1), -1); /* nothing appended */
    ck_assert_int_eq(errno, ECANCELED);
    ck_assert_uint_eq(evbuffer_get_length(bufferevent_get_output(bev)), 0);
    eco_uncancel();
    return NULL;
}

START_TEST(misuse)
{
    char buf[4];
    ck_assert_int_eq(eco_bev_read(bev, buf, sizeof buf), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_bev_wait_connected(bev), -1);
    ck_assert_int_eq(errno, EPERM);
    run(misuse_body, NULL);
}
END_TEST

START_TEST(teardown_restores_callbacks)
{
    struct event_base *base = event_base_new();
    ck_assert_int_eq(eco_setup(base), 0);
    int sv[2];
    ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    evutil_make_socket_nonblocking(sv[0]);
    bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
    int tag;
    bufferevent_setcb(bev, user_read, user_write, user_event, &tag);
    struct parked p = {0, 0};
    eco_t *co = eco_create(park_read_body, &p, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    eco_teardown();
    expect_user_callbacks(&tag);
    bufferevent_free(bev);
    bev = NULL;
    close(sv[1]);
    event_base_free(base);
}
END_TEST

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    Suite *s = suite_create("bev");
    TCase *tc = pair_tcase("bev");
    tcase_add_test(tc, read_what_is_there);
    tcase_add_test(tc, read_full_exactly_and_at_eof);
    tcase_add_test(tc, readln_lines);
    tcase_add_test(tc, write_and_flush);
    tcase_add_test(tc, reader_and_writer_at_once);
    tcase_add_test(tc, bufferevent_timeouts);
    tcase_add_test(tc, deadline);
    tcase_add_test(tc, cancel_restores_callbacks);
    tcase_add_test(tc, user_callbacks_get_the_rest);
    tcase_add_test(tc, first_wait_leaves_first);
    tcase_add_test(tc, reset_is_an_error);
    tcase_add_test(tc, wait_connected);
    tcase_add_test(tc, dump_words);
    tcase_add_test(tc, misuse);
    suite_add_tcase(s, tc);
    TCase *bare = tcase_create("teardown");
    tcase_set_timeout(bare, 60);
    tcase_add_test(bare, teardown_restores_callbacks);
    suite_add_tcase(s, bare);
    return run_suite(s);
}
