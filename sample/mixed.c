/*
 * mixed.c - a libevent HTTP server where some handlers stay plain callbacks
 * and others run as coroutines that talk to redis in synchronous style,
 * all in one event_base.
 *
 *     mixed --port N --redis HOST:PORT [--timeout MS] [--files DIR]
 *           [--max-file BYTES] [--dns IP[:PORT]] [--hosts FILE]
 *
 *   GET /hello          a plain evhttp callback, answered at once
 *   GET /count/NAME     a coroutine: INCR NAME on redis, answers the value
 *   GET /get/NAME       a coroutine: GET NAME on redis, answers the value
 *   GET /slow/MS        a coroutine: sleeps MS milliseconds, then answers
 *   GET /resolve/NAME   a coroutine: eco_getaddrinfo, the addresses one a line
 *   GET /file/NAME      a coroutine: reads DIR/NAME with eco_run_blocking
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
 *
 * /resolve parks its coroutine in eco_getaddrinfo (evdns on the same base;
 * numeric hosts never reach it) and /file parks its coroutine while a pool
 * thread opens and reads the file: neither holds up the loop, so a slow
 * name server or disk (or a FIFO nobody writes) delays only its request.
 * Both give up after --timeout with 504.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/http.h>
#include <fcntl.h>
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
#include <sys/stat.h>
#include <unistd.h>

#include "eco.h"

#define BACKOFF_FIRST_MS 50
#define BACKOFF_MAX_MS 2000
#define NAME_MAX_LEN 200
#define HOST_MAX_LEN 253   /* the longest DNS name */
#define READ_CHUNK 65536   /* what one read(2) of /file asks for at most */

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
                         : status == 403 ? "Forbidden"
                         : status == 404 ? "Not Found"
                         : status == 502 ? "Bad Gateway"
                         : status == 503 ? "Service Unavailable"
                         : status == 504 ? "Gateway Timeout"
                                         : "Internal Server Error";
    /* Bodies may echo the request's name: never let a browser take them
     * for HTML. */
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "text/plain; charset=utf-8");
    evhttp_send_reply(req, status, reason, NULL);
}

/* The %-decoded rest of req's path after prefix (free it), or NULL once req
 * has been answered with 400 (empty, longer than max, a NUL inside) or 500. */
static char *path_name(struct evhttp_request *req, const char *prefix, size_t max)
{
    const char *raw = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req)) + strlen(prefix);
    size_t len;
    char *name = evhttp_uridecode(raw, 0, &len);
    if (name == NULL) {
        reply_text(req, 500, "out of memory\n");
    } else if (len == 0 || len > max || strlen(name) != len) {
        reply_text(req, 400, "usage: %sNAME (1 to %zu bytes)\n", prefix, max);
        free(name);
        name = NULL;
    }
    return name;
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

/* ---- /resolve/NAME: names through evdns, parking the coroutine ---- */

/* The status for a failed lookup: 404 when the name has no address, 5xx
 * when the resolver could not say. */
static int gai_status(int rc, int err)
{
    switch (rc) {
    case EAI_NONAME:
#ifdef EAI_NODATA
    case EAI_NODATA:
#endif
#ifdef EAI_ADDRFAMILY
    case EAI_ADDRFAMILY:
#endif
        return 404;
    case EAI_AGAIN: return 503;
    case EAI_FAIL: return 502;
    case EAI_SYSTEM: return err == ETIMEDOUT ? 504 : 500;
    default: return 500;
    }
}

static void *resolve_handler(void *arg)
{
    struct evhttp_request *req = arg;
    char *name = path_name(req, "/resolve/", HOST_MAX_LEN);
    if (name == NULL)
        return NULL;
    /* A name server that never answers costs this request --timeout, not
     * evdns's 3 tries of 5 s; the lookup is then cancelled in evdns. */
    eco_set_deadline(eco_self(), timeout_ms);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    errno = 0;
    int rc = eco_getaddrinfo(name, NULL, &hints, &res);
    if (rc != 0) {
        int err = errno;
        reply_text(req, gai_status(rc, err), "resolve %s: %s%s%s\n", name, gai_strerror(rc),
                   rc == EAI_SYSTEM ? ": " : "", rc == EAI_SYSTEM ? strerror(err) : "");
    } else {
        struct evbuffer *out = evhttp_request_get_output_buffer(req);
        for (const struct addrinfo *ai = res; ai != NULL; ai = ai->ai_next) {
            char text[INET6_ADDRSTRLEN];
            const void *a = ai->ai_family == AF_INET6
                                ? (const void *)&((struct sockaddr_in6 *)ai->ai_addr)->sin6_addr
                                : (const void *)&((struct sockaddr_in *)ai->ai_addr)->sin_addr;
            if (inet_ntop(ai->ai_family, a, text, sizeof text) != NULL)
                evbuffer_add_printf(out, "%s\n", text);
        }
        reply_text(req, 200, "%s", "");
    }
    eco_freeaddrinfo(res);
    free(name);
    return NULL;
}

/* ---- /file/NAME: disk reads on the pool, parking the coroutine ---- */

static int files_dir = -1;               /* --files, opened once */
static size_t max_file = 16 * 1024 * 1024; /* --max-file */

/* One read, handed to a pool thread; whoever ends up with it frees it. */
struct file_job {
    size_t max;
    char *data;
    size_t len;
    int err;  /* 0, an errno of open/read, EFBIG (over max), EPERM (not a
                 regular file nor a FIFO) */
    char name[];
};

/* In a pool thread: may block as long as the file takes (a FIFO until its
 * writer closes).  Touches nothing but the job. */
static void *read_file(void *arg)
{
    struct file_job *j = arg;
    /* No '/' in the name, and no symlink at its end: nothing outside DIR. */
    int fd = openat(files_dir, j->name, O_RDONLY | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC);
    struct stat st;
    if (fd < 0) {
        j->err = errno;
        return j;
    }
    if (fstat(fd, &st) != 0)
        j->err = errno;
    else if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode))
        j->err = EPERM;
    else if (S_ISREG(st.st_mode) && (uintmax_t)st.st_size > j->max)
        j->err = EFBIG;
    size_t cap = 0;
    while (j->err == 0) {
        if (j->len == cap) {
            /* A file may grow while it is read: the bound holds anyway. */
            size_t want = cap + READ_CHUNK;
            char *d = realloc(j->data, want);
            if (d == NULL) {
                j->err = ENOMEM;
                break;
            }
            j->data = d;
            cap = want;
        }
        ssize_t n = read(fd, j->data + j->len, cap - j->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            j->err = errno;
        else if (n == 0)
            break;
        else if ((j->len += (size_t)n) > j->max)
            j->err = EFBIG;
    }
    close(fd);
    return j;
}

static void file_job_free(void *arg, void *result)
{
    (void)result;
    struct file_job *j = arg;
    free(j->data);
    free(j);
}

static void free_data(const void *data, size_t len, void *arg)
{
    (void)len;
    (void)arg;
    free((void *)data);
}

static void *file_handler(void *arg)
{
    struct evhttp_request *req = arg;
    if (files_dir < 0) {
        reply_text(req, 404, "no files served (mixed --files DIR)\n");
        return NULL;
    }
    char *name = path_name(req, "/file/", NAME_MAX_LEN);
    if (name == NULL)
        return NULL;
    /* One component of DIR, by its name: no way up or across. */
    if (strchr(name, '/') != NULL || name[0] == '.') {
        reply_text(req, 400, "/file/NAME: NAME must not contain '/' nor start with '.'\n");
        free(name);
        return NULL;
    }
    size_t len = strlen(name);
    struct file_job *j = calloc(1, sizeof *j + len + 1);
    if (j == NULL) {
        reply_text(req, 500, "out of memory\n");
        free(name);
        return NULL;
    }
    j->max = max_file;
    memcpy(j->name, name, len + 1);
    eco_set_deadline(eco_self(), timeout_ms);
    void *done;
    if (eco_run_blocking(read_file, j, &done, file_job_free) != 0) {
        int err = errno;
        /* ETIMEDOUT, ECANCELED: the read goes on in the pool and
         * file_job_free frees j after it, maybe now: j is not ours to
         * touch.  Otherwise read_file never ran and j is still ours. */
        if (err != ETIMEDOUT && err != ECANCELED)
            file_job_free(j, NULL);
        reply_text(req, err == ETIMEDOUT ? 504 : 500, "%s: %s\n", name, strerror(err));
        free(name);
        return NULL;
    }
    free(name);
    switch (j->err) {
    case 0:
        evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                          "application/octet-stream");
        if (j->len > 0 && evbuffer_add_reference(evhttp_request_get_output_buffer(req), j->data,
                                                 j->len, free_data, NULL) != 0) {
            reply_text(req, 500, "out of memory\n");
            break;
        }
        if (j->len > 0)
            j->data = NULL; /* the reply's now */
        evhttp_send_reply(req, HTTP_OK, "OK", NULL);
        break;
    case ENOENT: reply_text(req, 404, "%s: no such file\n", j->name); break;
    case EFBIG: reply_text(req, 403, "%s: larger than %zu bytes\n", j->name, j->max); break;
    case ELOOP: reply_text(req, 403, "%s: a symbolic link, not served\n", j->name); break;
    case EPERM: reply_text(req, 403, "%s: not a regular file nor a FIFO\n", j->name); break;
    case EACCES: reply_text(req, 403, "%s: %s\n", j->name, strerror(j->err)); break;
    default: reply_text(req, 500, "%s: %s\n", j->name, strerror(j->err)); break;
    }
    file_job_free(j, NULL);
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
    else if (path != NULL && strncmp(path, "/resolve/", 9) == 0)
        fn = resolve_handler;
    else if (path != NULL && strncmp(path, "/file/", 6) == 0)
        fn = file_handler;
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
    fprintf(out,
            "usage: mixed --port N --redis HOST:PORT [--timeout MS] [--files DIR]\n"
            "             [--max-file BYTES] [--dns IP[:PORT]] [--hosts FILE]\n"
            "  An HTTP server on 127.0.0.1:N (0: any free port):\n"
            "  /hello (plain callback), /count/NAME (coroutine, INCR on redis),\n"
            "  /get/NAME (coroutine, GET on redis), /slow/MS (coroutine, sleeps),\n"
            "  /resolve/NAME (coroutine, eco_getaddrinfo), /file/NAME (coroutine,\n"
            "  reads DIR/NAME on a pool thread with eco_run_blocking).\n"
            "  --timeout MS      longest wait for redis (then the connection is\n"
            "                    dropped and redialled), a lookup or a file read\n"
            "                    (then 504); default 3000\n"
            "  --files DIR       serve the regular files and FIFOs right in DIR\n"
            "  --max-file BYTES  larger files get 403 (default 16777216)\n"
            "  --dns IP[:PORT]   ask only this name server (default: resolv.conf's)\n"
            "                    and read no hosts file but --hosts'\n"
            "  --hosts FILE      names to answer before asking any server\n");
}

static int bad_usage(const char *why)
{
    fprintf(stderr, "mixed: %s\n", why);
    usage(stderr);
    return 2;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"port", required_argument, NULL, 'p'},
                                         {"redis", required_argument, NULL, 'r'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"files", required_argument, NULL, 'f'},
                                         {"max-file", required_argument, NULL, 'm'},
                                         {"dns", required_argument, NULL, 'd'},
                                         {"hosts", required_argument, NULL, 'H'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *port = NULL, *redis = NULL, *timeout = NULL, *files = NULL, *maxf = NULL;
    const char *dns = NULL, *hosts = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "p:r:t:f:m:d:H:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'r': redis = optarg; break;
        case 't': timeout = optarg; break;
        case 'f': files = optarg; break;
        case 'm': maxf = optarg; break;
        case 'd': dns = optarg; break;
        case 'H': hosts = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end = NULL;
    long p = port ? strtol(port, &end, 10) : -1;
    const char *colon = redis ? strrchr(redis, ':') : NULL;
    if (port == NULL || *end != '\0' || p < 0 || p > 65535 || colon == NULL || colon == redis ||
        optind != argc)
        return bad_usage("--port (0 to 65535) and --redis HOST:PORT are needed");
    if (timeout != NULL) {
        timeout_ms = strtol(timeout, &end, 10);
        if (*end != '\0' || timeout_ms < 1 || timeout_ms > 3600000)
            return bad_usage("--timeout must be 1 to 3600000 ms");
    }
    if (maxf != NULL) {
        errno = 0;
        unsigned long long m = strtoull(maxf, &end, 10);
        if (*end != '\0' || errno != 0 || maxf[0] == '-' || m > SIZE_MAX / 2)
            return bad_usage("--max-file must be a byte count");
        max_file = (size_t)m;
    }
    if (files != NULL && (files_dir = open(files, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
        fprintf(stderr, "mixed: --files %s: %s\n", files, strerror(errno));
        return 2;
    }
    char host[256];
    size_t hl = (size_t)(colon - redis);
    if (hl >= sizeof host)
        return bad_usage("--redis: host too long");
    memcpy(host, redis, hl);
    host[hl] = '\0';
    signal(SIGPIPE, SIG_IGN);

    /* The program's own base, as a libevent program has; libeco joins it. */
    struct event_base *base = event_base_new();
    if (base == NULL || eco_setup(base) != 0) {
        perror("mixed: setup");
        return 1;
    }
    /* Names go to evdns on this base: the system's resolver, or one of our
     * own that knows only --dns and --hosts. */
    struct evdns_base *own_dns = NULL;
    if (dns != NULL) {
        own_dns = evdns_base_new(base, EVDNS_BASE_DISABLE_WHEN_INACTIVE);
        if (own_dns == NULL || evdns_base_nameserver_ip_add(own_dns, dns) != 0 ||
            eco_set_evdns_base(own_dns) != 0) {
            fprintf(stderr, "mixed: --dns %s: not a name server address\n", dns);
            return 2;
        }
    }
    if (hosts != NULL) {
        struct evdns_base *e = eco_evdns_base();
        if (e == NULL || evdns_base_load_hosts(e, hosts) != 0) {
            fprintf(stderr, "mixed: --hosts %s: cannot read it\n", hosts);
            return 2;
        }
    }
    /* On this stack eco_getaddrinfo runs the loop until the answer is in. */
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = eco_getaddrinfo(host, colon + 1, &hints, &redis_ai);
    if (rc != 0) {
        fprintf(stderr, "mixed: cannot resolve %s: %s\n", redis, gai_strerror(rc));
        return 2;
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
    eco_freeaddrinfo(redis_ai);
    eco_teardown();
    if (own_dns != NULL)
        evdns_base_free(own_dns, 0);
    event_base_free(base);
    if (files_dir >= 0)
        close(files_dir);
    return 0;
}
