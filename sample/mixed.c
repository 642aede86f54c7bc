/*
 * mixed.c - a libevent HTTP server where some handlers stay plain callbacks
 * and others run as coroutines that talk to redis in synchronous style,
 * all in one event_base.
 *
 *     mixed --port N --redis HOST:PORT [--timeout MS]
 *
 *   GET /hello          a plain evhttp callback, answered at once
 *   GET /count/NAME     a coroutine: INCR NAME on redis, answers the value
 *   GET /get/NAME       a coroutine: GET NAME on redis, answers the value
 *   GET /slow/MS        a coroutine: sleeps MS milliseconds, then answers
 *
 * The coroutines share one redis connection: each holds its write side for
 * a request and its read side for the reply (eco_fd_lock), so replies match
 * requests however many are in flight.  Meanwhile /hello keeps answering.
 *
 * hiredis does the protocol: redisFormatCommand builds each command and
 * one redisReader per connection parses what libeco's eco_read brings, so
 * every reply is consumed whole, whatever its size or type.  An error reply
 * (e.g. WRONGTYPE) answers its own request with 502 and nothing else.
 *
 * When the connection fails (redis gone, a reply later than --timeout, a
 * protocol error), the requests then in flight get 502, the connection is
 * closed and redialled in the background: at once, then after 50 ms,
 * doubling up to every 2 s.  Meanwhile requests get 503 at once.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <getopt.h>
#include <hiredis.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eco.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000
#define NAME_MAX_LEN 200

/* ---- the shared redis connection ---- */

struct link {
    int fd;
    redisReader *reader; /* bytes read ahead; only the ECO_RD holder uses it */
    int dead;            /* closed: a woken handler must not touch fd again,
                            since a new connection may have its number */
    int refs;            /* handlers using it, plus one while it is current */
};

static struct link *current; /* NULL while redis is away */
static struct addrinfo *redis_ai;
static long timeout_ms = 3000;
static long backoff_ms;  /* wait before the next dial; 0 after a good reply */
static int redialling;   /* a redial coroutine runs */
static int outage_told;  /* the outage has been logged */

static void link_put(struct link *l)
{
    if (--l->refs == 0) {
        redisReaderFree(l->reader);
        free(l);
    }
}

static int dial(void)
{
    int err = EADDRNOTAVAIL;
    for (const struct addrinfo *ai = redis_ai; ai != NULL; ai = ai->ai_next) {
        int fd = eco_socket(ai->ai_family, SOCK_STREAM, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        eco_fd_timeout(fd, ECO_RD | ECO_WR, timeout_ms);
        struct link *l = malloc(sizeof *l);
        redisReader *r = redisReaderCreate();
        if (l == NULL || r == NULL || eco_connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            err = l == NULL || r == NULL ? ENOMEM : errno;
            free(l);
            if (r != NULL)
                redisReaderFree(r);
            eco_close(fd);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        *l = (struct link){.fd = fd, .reader = r, .refs = 1};
        current = l;
        if (outage_told)
            fprintf(stderr, "mixed: redis: connected again\n");
        outage_told = 0;
        return 0;
    }
    if (!outage_told)
        fprintf(stderr, "mixed: redis: connect: %s; retrying, at most %d ms apart\n",
                strerror(err), BACKOFF_MAX_MS);
    outage_told = 1;
    return -1;
}

static void *redial(void *arg)
{
    (void)arg;
    for (;;) {
        if (backoff_ms > 0)
            eco_sleep(backoff_ms);
        backoff_ms = backoff_ms == 0 ? BACKOFF_FIRST_MS
                                     : (backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
                                                                        : backoff_ms * 2);
        if (dial() == 0)
            break;
    }
    redialling = 0;
    return NULL;
}

static void start_redial(void)
{
    if (!redialling && eco_go(redial, NULL) == 0)
        redialling = 1; /* else the next request tries again */
}

/* Takes l out of service: closing its fd wakes every handler parked on it
 * (their calls fail with EBADF and they see l->dead). */
static void link_fail(struct link *l, const char *why)
{
    if (l->dead)
        return;
    l->dead = 1;
    fprintf(stderr, "mixed: redis: %s; reconnecting\n", why);
    eco_close(l->fd);
    if (current == l) {
        current = NULL;
        link_put(l);
    }
    start_redial();
}

/* Sends cmd (len bytes of RESP) over the shared connection and reads its
 * reply.  Returns the reply (freeReplyObject it), or NULL with *status 503
 * (redis is away) or 502 (the connection failed under the request). */
static redisReply *redis_call(const char *cmd, size_t len, int *status)
{
    struct link *l = current;
    if (l == NULL) {
        start_redial();
        *status = 503;
        return NULL;
    }
    *status = 502;
    l->refs++;
    /* Write the request whole, then queue for the reply before anyone else
     * can write (unlocking never switches): replies come in request order.
     * After every call that may park, l->dead says whether fd is still ours. */
    void *reply = NULL;
    if (eco_fd_lock(l->fd, ECO_WR) != 0) {
        link_fail(l, strerror(errno));
        goto out;
    }
    if (l->dead)
        goto out;
    if (eco_write_full(l->fd, cmd, len) != (ssize_t)len) {
        link_fail(l, strerror(errno));
        goto out;
    }
    if (l->dead)
        goto out;
    eco_fd_unlock(l->fd, ECO_WR);
    if (eco_fd_lock(l->fd, ECO_RD) != 0) {
        link_fail(l, strerror(errno));
        goto out;
    }
    while (!l->dead) {
        if (redisReaderGetReply(l->reader, &reply) != REDIS_OK) {
            link_fail(l, l->reader->errstr);
            break;
        }
        if (reply != NULL) {
            eco_fd_unlock(l->fd, ECO_RD);
            backoff_ms = 0; /* redis answers: the next outage redials at once */
            break;
        }
        char buf[16384];
        ssize_t n = eco_read(l->fd, buf, sizeof buf);
        if (l->dead)
            break;
        if (n <= 0) {
            link_fail(l, n == 0 ? "connection closed" : strerror(errno));
            break;
        }
        if (redisReaderFeed(l->reader, buf, (size_t)n) != REDIS_OK) {
            link_fail(l, l->reader->errstr);
            break;
        }
    }
out:
    link_put(l);
    return reply;
}

/* ---- the plain callback ---- */

static void on_hello(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add_printf(out, "hello\n");
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* ---- coroutine handlers ---- */

static void reply_text(struct evhttp_request *req, int status, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void reply_text(struct evhttp_request *req, int status, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    evbuffer_add_vprintf(evhttp_request_get_output_buffer(req), fmt, ap);
    va_end(ap);
    const char *reason = status == 200   ? "OK"
                         : status == 400 ? "Bad Request"
                         : status == 404 ? "Not Found"
                         : status == 502 ? "Bad Gateway"
                         : status == 503 ? "Service Unavailable"
                                         : "Internal Server Error";
    evhttp_send_reply(req, status, reason, NULL);
}

/* Runs "VERB NAME" for the request whose path is prefix + NAME (NAME
 * %-decoded).  Returns redis's reply, or NULL once req has been answered
 * with an error. */
static redisReply *name_command(struct evhttp_request *req, const char *verb, const char *prefix)
{
    const char *raw = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)) + strlen(prefix);
    size_t len;
    char *name = evhttp_uridecode(raw, 0, &len);
    if (name == NULL) {
        reply_text(req, 500, "out of memory\n");
        return NULL;
    }
    redisReply *reply = NULL;
    char *cmd = NULL;
    int n, status;
    if (len == 0 || len > NAME_MAX_LEN) {
        reply_text(req, 400, "usage: %sNAME (1 to %d bytes)\n", prefix, NAME_MAX_LEN);
    } else if ((n = redisFormatCommand(&cmd, "%s %b", verb, name, len)) < 0) {
        reply_text(req, 500, "out of memory\n");
    } else if ((reply = redis_call(cmd, (size_t)n, &status)) == NULL) {
        reply_text(req, status, status == 503 ? "redis unavailable\n" : "redis failed\n");
    } else if (reply->type == REDIS_REPLY_ERROR) {
        reply_text(req, 502, "redis: %.*s\n", (int)reply->len, reply->str);
        freeReplyObject(reply);
        reply = NULL;
    }
    redisFreeCommand(cmd);
    free(name);
    return reply;
}

static void *count_handler(void *arg)
{
    struct evhttp_request *req = arg;
    redisReply *reply = name_command(req, "INCR", "/count/");
    if (reply == NULL)
        return NULL;
    const char *name = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)) + 7;
    if (reply->type == REDIS_REPLY_INTEGER)
        reply_text(req, 200, "%s %lld\n", name, reply->integer);
    else
        reply_text(req, 502, "redis: unexpected reply type %d\n", reply->type);
    freeReplyObject(reply);
    return NULL;
}

static void *get_handler(void *arg)
{
    struct evhttp_request *req = arg;
    redisReply *reply = name_command(req, "GET", "/get/");
    if (reply == NULL)
        return NULL;
    if (reply->type == REDIS_REPLY_STRING) {
        evbuffer_add(evhttp_request_get_output_buffer(req), reply->str, reply->len);
        evhttp_send_reply(req, HTTP_OK, "OK", NULL);
    } else if (reply->type == REDIS_REPLY_NIL) {
        reply_text(req, 404, "no such key\n");
    } else {
        reply_text(req, 502, "redis: unexpected reply type %d\n", reply->type);
    }
    freeReplyObject(reply);
    return NULL;
}

static void *slow_handler(void *arg)
{
    struct evhttp_request *req = arg;
    const char *ms = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)) + strlen("/slow/");
    long wait = strtol(ms, NULL, 10);
    if (wait < 0 || wait > 10000)
        wait = 0;
    eco_sleep(wait); /* parks this handler only */
    reply_text(req, 200, "slept %ld ms\n", wait);
    return NULL;
}

/* The generic callback: hands the request to a coroutine.  evhttp keeps a
 * request alive until it is answered, so the coroutine may take its time. */
static void on_other(struct evhttp_request *req, void *arg)
{
    (void)arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    eco_fn fn = NULL;
    if (path != NULL && strncmp(path, "/count/", 7) == 0)
        fn = count_handler;
    else if (path != NULL && strncmp(path, "/get/", 5) == 0)
        fn = get_handler;
    else if (path != NULL && strncmp(path, "/slow/", 6) == 0)
        fn = slow_handler;
    if (fn == NULL) {
        evhttp_send_error(req, HTTP_NOTFOUND, NULL);
        return;
    }
    if (eco_go(fn, req) != 0)
        evhttp_send_error(req, HTTP_SERVUNAVAIL, NULL);
}

/* ---- setup ---- */

static void *first_dial(void *arg)
{
    (void)arg;
    if (dial() != 0)
        start_redial(); /* serve anyway: 503 until redis comes */
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mixed --port N --redis HOST:PORT [--timeout MS]\n"
                 "  An HTTP server on 127.0.0.1:N (0: any free port):\n"
                 "  /hello (plain callback), /count/NAME (coroutine, INCR on redis),\n"
                 "  /get/NAME (coroutine, GET on redis), /slow/MS (coroutine, sleeps).\n"
                 "  --timeout MS  longest wait for redis before the connection is\n"
                 "                dropped and redialled (default 3000)\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"redis", required_argument, NULL, 'r'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *port = NULL, *redis = NULL, *timeout = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "p:r:t:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'r': redis = optarg; break;
        case 't': timeout = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end = NULL;
    long p = port ? strtol(port, &end, 10) : -1;
    const char *colon = redis ? strrchr(redis, ':') : NULL;
    if (port == NULL || *end != '\0' || p < 0 || p > 65535 || colon == NULL || colon == redis ||
        optind != argc) {
        fprintf(stderr, "mixed: --port (0 to 65535) and --redis HOST:PORT are needed\n");
        usage(stderr);
        return 2;
    }
    if (timeout != NULL) {
        timeout_ms = strtol(timeout, &end, 10);
        if (*end != '\0' || timeout_ms < 1 || timeout_ms > 3600000) {
            fprintf(stderr, "mixed: --timeout must be 1 to 3600000 ms\n");
            usage(stderr);
            return 2;
        }
    }
    char host[256];
    size_t hl = (size_t)(colon - redis);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    if (hl >= sizeof host)
        return 2;
    memcpy(host, redis, hl);
    host[hl] = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &redis_ai) != 0) {
        fprintf(stderr, "mixed: cannot resolve %s\n", redis);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    /* The program's own base, as a libevent program has; libeco joins it. */
    struct event_base *base = event_base_new();
    if (base == NULL || eco_setup(base) != 0) {
        perror("mixed: setup");
        return 1;
    }
    /* Connect to redis before serving (from a coroutine: connect parks). */
    eco_t *dial_co = eco_create(first_dial, NULL, NULL);
    if (dial_co == NULL || eco_resume(dial_co) != 0 || eco_join(dial_co, NULL) != 0)
        return 1;

    struct evhttp *http = evhttp_new(base);
    struct evhttp_bound_socket *bound =
        http ? evhttp_bind_socket_with_handle(http, "127.0.0.1", (uint16_t)p) : NULL;
    if (bound == NULL) {
        fprintf(stderr, "mixed: cannot listen on 127.0.0.1 port %ld\n", p);
        return 1;
    }
    evhttp_set_cb(http, "/hello", on_hello, NULL);
    evhttp_set_gencb(http, on_other, NULL);

    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(evhttp_bound_socket_get_fd(bound), (struct sockaddr *)&ss, &sl);
    printf("mixed: listening on 127.0.0.1 port %d\n",
           ntohs(((struct sockaddr_in *)&ss)->sin_port));
    fflush(stdout);
    event_base_dispatch(base); /* the program's loop, as before */
    evhttp_free(http);
    if (current != NULL) {
        eco_close(current->fd);
        link_put(current);
    }
    eco_teardown();
    event_base_free(base);
    freeaddrinfo(redis_ai);
    return 0;
}
