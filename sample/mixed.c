/*
 * mixed.c - a libevent HTTP server where some handlers stay plain callbacks
 * and others run as coroutines that talk to a backend in synchronous style,
 * all in one event_base.
 *
 *     mixed --port N --redis HOST:PORT
 *
 *   GET /hello          a plain evhttp callback, answered at once
 *   GET /count/NAME     a coroutine: INCR NAME on redis, answers the value
 *   GET /slow/MS        a coroutine: sleeps MS milliseconds, then answers
 *
 * The coroutines share one redis connection: each holds its write side for
 * a request and its read side for the reply (eco_fd_lock), so replies match
 * requests however many are in flight.  Meanwhile /hello keeps answering.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eco.h"

static int redis_fd = -1;

/* ---- the plain callback ---- */

static void on_hello(struct evhttp_request *req, void *arg)
{
    (void)arg;
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    evbuffer_add_printf(out, "hello\n");
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
}

/* ---- coroutine handlers ---- */

/* Replies read ahead from redis; only the holder of the read side
 * (ECO_RD) touches them. */
static char rbuf[4096];
static size_t rstart, rend;

/* Reads one reply line (up to \n) into line.  0, or -1. */
static int read_line(char *line, size_t cap)
{
    for (;;) {
        char *nl = memchr(rbuf + rstart, '\n', rend - rstart);
        if (nl != NULL) {
            size_t len = (size_t)(nl - (rbuf + rstart)) + 1;
            if (len >= cap)
                return -1;
            memcpy(line, rbuf + rstart, len);
            line[len] = '\0';
            rstart += len;
            return 0;
        }
        if (rend - rstart >= cap)
            return -1; /* no line of ours is that long */
        memmove(rbuf, rbuf + rstart, rend - rstart);
        rend -= rstart;
        rstart = 0;
        ssize_t n = eco_read(redis_fd, rbuf + rend, sizeof rbuf - rend);
        if (n <= 0)
            return -1;
        rend += (size_t)n;
    }
}

/* Sends one RESP command and reads an integer reply, ":<n>\r\n".  Returns
 * 0, or -1 when the backend fails or answers something else. */
static int redis_incr(const char *name, long long *value)
{
    char req[512];
    int n = snprintf(req, sizeof req, "*2\r\n$4\r\nINCR\r\n$%zu\r\n%s\r\n", strlen(name), name);
    if (n < 0 || (size_t)n >= sizeof req)
        return -1;
    /* Write the request whole, then queue for the reply before anyone else
     * can write: replies come back in request order. */
    if (eco_fd_lock(redis_fd, ECO_WR) != 0)
        return -1;
    int ok = eco_write_full(redis_fd, req, (size_t)n) == n;
    eco_fd_unlock(redis_fd, ECO_WR);
    if (!ok || eco_fd_lock(redis_fd, ECO_RD) != 0)
        return -1;
    char line[64];
    ok = read_line(line, sizeof line) == 0 && line[0] == ':' &&
         sscanf(line + 1, "%lld", value) == 1;
    eco_fd_unlock(redis_fd, ECO_RD);
    return ok ? 0 : -1;
}

static void *count_handler(void *arg)
{
    struct evhttp_request *req = arg;
    const char *name = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)) + strlen("/count/");
    struct evbuffer *out = evhttp_request_get_output_buffer(req);
    long long value;
    if (name[0] == '\0' || strlen(name) > 200) {
        evbuffer_add_printf(out, "usage: /count/NAME\n");
        evhttp_send_reply(req, HTTP_BADREQUEST, "Bad Request", NULL);
    } else if (redis_incr(name, &value) != 0) {
        evbuffer_add_printf(out, "backend error\n");
        evhttp_send_reply(req, 502, "Bad Gateway", NULL);
    } else {
        evbuffer_add_printf(out, "%s %lld\n", name, value);
        evhttp_send_reply(req, HTTP_OK, "OK", NULL);
    }
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
    evbuffer_add_printf(evhttp_request_get_output_buffer(req), "slept %ld ms\n", wait);
    evhttp_send_reply(req, HTTP_OK, "OK", NULL);
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

static void *dial_redis(void *arg)
{
    struct addrinfo *ai = arg;
    int fd = eco_socket(ai->ai_family, SOCK_STREAM, 0);
    if (fd >= 0 && eco_connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        redis_fd = fd;
    } else {
        fprintf(stderr, "mixed: redis: %s\n", strerror(errno));
        if (fd >= 0)
            eco_close(fd);
    }
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: mixed --port N --redis HOST:PORT\n"
                 "  An HTTP server on 127.0.0.1:N (0: any free port):\n"
                 "  /hello (plain callback), /count/NAME (coroutine, INCR on redis),\n"
                 "  /slow/MS (coroutine, sleeps).\n");
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"redis", required_argument, NULL, 'r'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *port = NULL, *redis = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "p:r:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'r': redis = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end;
    long p = port ? strtol(port, &end, 10) : -1;
    const char *colon = redis ? strrchr(redis, ':') : NULL;
    if (port == NULL || *end != '\0' || p < 0 || p > 65535 || colon == NULL || colon == redis ||
        optind != argc) {
        fprintf(stderr, "mixed: --port (0 to 65535) and --redis HOST:PORT are needed\n");
        usage(stderr);
        return 2;
    }
    char host[256];
    size_t hl = (size_t)(colon - redis);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV}, *ai;
    if (hl >= sizeof host)
        return 2;
    memcpy(host, redis, hl);
    host[hl] = '\0';
    if (getaddrinfo(host, colon + 1, &hints, &ai) != 0) {
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
    eco_t *dial = eco_create(dial_redis, ai, NULL);
    if (dial == NULL || eco_resume(dial) != 0 || eco_join(dial, NULL) != 0 || redis_fd < 0)
        return 1;
    freeaddrinfo(ai);

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
    eco_close(redis_fd);
    eco_teardown();
    event_base_free(base);
    return 0;
}
