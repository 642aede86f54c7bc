/*
 * redis_proxy.c - a Redis proxy: many clients share a few connections to
 * each backend, with pipelining.
 *
 *     redis_proxy --listen PORT --backend HOST:PORT [--backend ...] --conns K
 *
 * One coroutine per client reads the client's pipelined requests, sends
 * each to the backend its key hashes to, over one of that backend's K shared
 * connections, and writes the replies back in order.  The path of a batch of
 * requests reads top to bottom in forward():
 *
 *     queue the requests on the connection (a flusher coroutine writes
 *     what every client queued in one write);
 *     hold its read side, queued in the order the requests were, read
 *     exactly that many replies, let go.
 *
 * A backend that goes away gets its clients an error reply, not a hang; a
 * reconnecting coroutine brings the connection back with backoff.
 *
 * A command goes to the backend of its first key (its second word), so
 * with several backends, multi-key commands (MGET k1 k2 ...) see only the
 * keys that live there: unlike nutcracker, this sample does not split them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "eco.h"

#define MAX_BACKENDS 16
#define MAX_BATCH 256            /* requests forwarded together */
#define MAX_MSG (64 << 20)       /* largest request or reply we accept */

static const char ERR_BACKEND[] = "-ERR backend unavailable\r\n";
static const char ERR_PROTOCOL[] = "-ERR Protocol error\r\n";

/* ---- a growable byte buffer ---- */

struct buf {
    char *data;
    size_t start, end, cap; /* unread bytes are data[start..end) */
};

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->start > 0 && b->end + more > b->cap) { /* compact first */
        memmove(b->data, b->data + b->start, b->end - b->start);
        b->end -= b->start;
        b->start = 0;
    }
    if (b->end + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 16384;
    while (cap < b->end + more)
        cap *= 2;
    char *d = realloc(b->data, cap);
    if (d == NULL)
        return -1;
    b->data = d;
    b->cap = cap;
    return 0;
}

static int buf_append(struct buf *b, const void *p, size_t n)
{
    if (buf_reserve(b, n) != 0)
        return -1;
    memcpy(b->data + b->end, p, n);
    b->end += n;
    return 0;
}

/* Reads what fd has into b: > 0 bytes, 0 at EOF, -1 on error. */
static ssize_t buf_fill(struct buf *b, int fd)
{
    if (buf_reserve(b, 16384) != 0)
        return -1;
    ssize_t n = eco_read(fd, b->data + b->end, b->cap - b->end);
    if (n > 0)
        b->end += (size_t)n;
    return n;
}

/* ---- RESP ---- */

/* Parses the integer of a "<c><digits>\r\n" line at p (at most n bytes).
 * Returns the line's length, 0 if incomplete, -1 if malformed. */
static long resp_line_int(const char *p, size_t n, long *val)
{
    const char *cr = memchr(p, '\r', n);
    if (cr == NULL)
        return n > 32 ? -1 : 0;
    if ((size_t)(cr - p) + 1 >= n)
        return 0;
    if (cr[1] != '\n')
        return -1;
    char *end;
    errno = 0;
    long v = strtol(p + 1, &end, 10);
    if (end != cr || end == p + 1 || errno != 0)
        return -1;
    *val = v;
    return cr - p + 2;
}

/* Length of the complete RESP value at p: 0 if incomplete, -1 if
 * malformed.  Used for replies, which may nest. */
static long resp_value(const char *p, size_t n, int depth)
{
    if (n == 0)
        return 0;
    if (depth > 32)
        return -1;
    long v, len;
    switch (p[0]) {
    case '+': case '-': case ':': {
        const char *lf = memchr(p, '\n', n);
        return lf ? lf - p + 1 : 0;
    }
    case '$':
        len = resp_line_int(p, n, &v);
        if (len <= 0)
            return len;
        if (v < 0)
            return v == -1 ? len : -1;
        if (v > MAX_MSG)
            return -1;
        if ((size_t)len + (size_t)v + 2 > n)
            return 0;
        return len + v + 2;
    case '*': {
        len = resp_line_int(p, n, &v);
        if (len <= 0)
            return len;
        if (v < 0)
            return v == -1 ? len : -1;
        long off = len;
        for (long i = 0; i < v; i++) {
            long e = resp_value(p + off, n - (size_t)off, depth + 1);
            if (e <= 0)
                return e;
            off += e;
        }
        return off;
    }
    default:
        return -1;
    }
}

/* A client request: an array of bulk strings.  Returns its length (0:
 * incomplete, -1: malformed) and the key (second element) if any. */
static long resp_request(const char *p, size_t n, const char **key, size_t *keylen)
{
    if (n == 0)
        return 0;
    long argc, len = p[0] == '*' ? resp_line_int(p, n, &argc) : -1;
    if (len <= 0)
        return len;
    if (argc < 1 || argc > 1024 * 1024)
        return -1;
    *key = NULL;
    *keylen = 0;
    long off = len;
    for (long i = 0; i < argc; i++) {
        long blen;
        if ((size_t)off >= n)
            return 0;
        if (p[off] != '$')
            return -1;
        long hl = resp_line_int(p + off, n - (size_t)off, &blen);
        if (hl <= 0)
            return hl;
        if (blen < 0 || blen > MAX_MSG)
            return -1;
        if ((size_t)off + (size_t)hl + (size_t)blen + 2 > n)
            return 0;
        if (p[off + hl + blen] != '\r' || p[off + hl + blen + 1] != '\n')
            return -1;
        if (i == 1) {
            *key = p + off + hl;
            *keylen = (size_t)blen;
        }
        off += hl + blen + 2;
    }
    return off;
}

/* ---- backends ---- */

struct conn {
    struct backend *be;
    int fd;           /* -1 while down */
    struct buf in;    /* replies read ahead; touched only under ECO_RD */
    struct buf out;   /* requests waiting for the flusher */
    struct buf spare; /* the flusher's buffer, swapped with out */
    int flushing;     /* a flusher coroutine is on its way */
};

struct backend {
    const char *name;
    struct addrinfo *ai;
    struct conn *conns;
};

static struct backend backends[MAX_BACKENDS];
static int nbackends, conns_per_backend = 1;

static int dial(struct backend *be)
{
    int fd = eco_socket(be->ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (eco_connect(fd, be->ai->ai_addr, be->ai->ai_addrlen) != 0) {
        eco_close(fd);
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Brings a connection back, waiting longer after each failure. */
static void *reconnect(void *arg)
{
    struct conn *c = arg;
    for (long wait_ms = 100;; wait_ms = wait_ms < 2000 ? wait_ms * 2 : wait_ms) {
        eco_sleep(wait_ms);
        int fd = dial(c->be);
        if (fd >= 0) {
            c->fd = fd;
            fprintf(stderr, "redis_proxy: backend %s: reconnected\n", c->be->name);
            return NULL;
        }
    }
}

/* The connection broke: every coroutine parked on it wakes with an error
 * (eco_close does that), and it is redialled in the background. */
static void conn_fail(struct conn *c, int fd)
{
    if (c->fd != fd)
        return; /* someone else noticed first */
    fprintf(stderr, "redis_proxy: backend %s: connection lost\n", c->be->name);
    c->fd = -1;
    c->in.start = c->in.end = 0;
    c->out.start = c->out.end = 0;
    eco_close(fd);
    eco_go(reconnect, c);
}

/* Reads one whole reply from c into out.  The caller holds c's read side. */
static int read_reply(struct conn *c, int fd, struct buf *out)
{
    for (;;) {
        long len = resp_value(c->in.data + c->in.start, c->in.end - c->in.start, 0);
        if (len > 0) {
            if (buf_append(out, c->in.data + c->in.start, (size_t)len) != 0)
                return -1;
            c->in.start += (size_t)len;
            return 0;
        }
        if (len < 0 || buf_fill(&c->in, fd) <= 0)
            return -1;
    }
}

static int local_port(int fd);

/* ---- clients ---- */

struct request {
    size_t off, len;   /* in the client's input buffer */
    int backend;
    size_t reply_off, reply_len;
};

static unsigned hash_key(const char *k, size_t n)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* Writes what clients queued on c, in the order they queued it.  Clients
 * woken in one pass of the loop all queue before it runs, so their
 * requests leave in one write. */
static void *flush(void *arg)
{
    struct conn *c = arg;
    while (c->out.end > c->out.start && c->fd >= 0) {
        struct buf b = c->out; /* new requests go to the other buffer */
        c->out = c->spare;
        c->out.start = c->out.end = 0;
        int fd = c->fd;
        ssize_t len = (ssize_t)(b.end - b.start);
        if (eco_write_full(fd, b.data + b.start, (size_t)len) != len)
            conn_fail(c, fd); /* its readers wake with an error */
        c->spare = b;
    }
    c->flushing = 0;
    return NULL;
}

/* Sends the requests of reqs[] that go to backend b over connection c and
 * stores their replies (or error replies) in replies. */
static void forward(struct conn *c, const char *in, struct request *reqs, int n, int b,
                    struct buf *replies)
{
    int fd = c->fd, ok = fd >= 0;
    size_t mark = c->out.end;
    for (int i = 0; i < n && ok; i++)
        if (reqs[i].backend == b && buf_append(&c->out, in + reqs[i].off, reqs[i].len) != 0) {
            c->out.end = mark; /* all or none: a reply must follow each */
            ok = 0;
        }
    if (ok && !c->flushing) {
        c->flushing = 1;
        if (eco_go(flush, c) != 0) {
            c->flushing = 0;
            ok = 0;
        }
    }
    /* Queue for the read side now, before any other client can queue a
     * request: our replies are the next ones for us on this connection. */
    int locked = ok && eco_fd_lock(fd, ECO_RD) == 0;
    for (int i = 0; i < n; i++) {
        if (reqs[i].backend != b)
            continue;
        reqs[i].reply_off = replies->end;
        if (!locked || read_reply(c, fd, replies) != 0) {
            if (locked) {
                eco_fd_unlock(fd, ECO_RD);
                locked = 0;
            }
            if (fd >= 0)
                conn_fail(c, fd);
            fd = -1;
            buf_append(replies, ERR_BACKEND, sizeof ERR_BACKEND - 1);
        }
        reqs[i].reply_len = replies->end - reqs[i].reply_off;
    }
    if (locked)
        eco_fd_unlock(fd, ECO_RD);
}

struct client {
    int fd;
    unsigned id;
    struct buf in, out, replies;
    struct request reqs[MAX_BATCH];
};

/* Forwards n parsed requests and writes their replies in order. */
static int serve_batch(struct client *cl, int n)
{
    cl->replies.start = cl->replies.end = 0;
    int seen[MAX_BACKENDS] = {0};
    for (int i = 0; i < n; i++) {
        int b = cl->reqs[i].backend;
        if (seen[b]++)
            continue;
        struct conn *c = &backends[b].conns[cl->id % (unsigned)conns_per_backend];
        forward(c, cl->in.data, cl->reqs, n, b, &cl->replies);
    }
    cl->out.start = cl->out.end = 0;
    for (int i = 0; i < n; i++)
        if (buf_append(&cl->out, cl->replies.data + cl->reqs[i].reply_off,
                       cl->reqs[i].reply_len) != 0)
            return -1;
    return eco_write_full(cl->fd, cl->out.data, cl->out.end) == (ssize_t)cl->out.end ? 0 : -1;
}

/* Answers a protocol error and ends the conversation gently: closing with
 * unread input would reset the connection and could destroy the answer
 * before the client reads it. */
static void refuse(int fd)
{
    char sink[4096];
    eco_write_full(fd, ERR_PROTOCOL, sizeof ERR_PROTOCOL - 1);
    shutdown(fd, SHUT_WR);
    eco_fd_timeout(fd, ECO_RD, 1000);
    for (int i = 0; i < 64 && eco_read(fd, sink, sizeof sink) > 0; i++)
        ;
}

static void *client(void *arg)
{
    struct client *cl = arg;
    if (buf_reserve(&cl->in, 16384) != 0)
        goto done;
    for (;;) {
        /* Take every complete request already here, up to a batch. */
        int n = 0;
        size_t off = cl->in.start;
        while (n < MAX_BATCH) {
            const char *key = NULL;
            size_t keylen = 0;
            long len = resp_request(cl->in.data + off, cl->in.end - off, &key, &keylen);
            if (len < 0) {
                if (n > 0)
                    break; /* answer what came before it first */
                refuse(cl->fd);
                goto done;
            }
            if (len == 0)
                break;
            cl->reqs[n].off = off;
            cl->reqs[n].len = (size_t)len;
            cl->reqs[n].backend = key ? (int)(hash_key(key, keylen) % (unsigned)nbackends) : 0;
            n++;
            off += (size_t)len;
        }
        if (n > 0) {
            if (serve_batch(cl, n) != 0)
                goto done;
            cl->in.start = off;
            continue;
        }
        ssize_t r = buf_fill(&cl->in, cl->fd);
        if (r <= 0) {
            if (r == 0 && cl->in.end > cl->in.start) /* gone mid-request */
                refuse(cl->fd);
            goto done;
        }
    }
done:
    eco_close(cl->fd);
    free(cl->in.data);
    free(cl->out.data);
    free(cl->replies.data);
    free(cl);
    return NULL;
}

/* Dials every backend connection, then accepts clients for ever. */
static void *proxy_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    for (int b = 0; b < nbackends; b++)
        for (int i = 0; i < conns_per_backend; i++) {
            struct conn *cn = &backends[b].conns[i];
            if ((cn->fd = dial(cn->be)) < 0) {
                fprintf(stderr, "redis_proxy: backend %s: %s; retrying\n", cn->be->name,
                        strerror(errno));
                eco_go(reconnect, cn);
            }
        }
    printf("redis_proxy: listening on port %d, %d backend(s), %d connection(s) each\n",
           local_port(lfd), nbackends, conns_per_backend);
    fflush(stdout);
    for (unsigned next_id = 0;; next_id++) {
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            perror("redis_proxy: accept");
            eco_sleep(100); /* out of fds or memory: back off, keep serving */
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct client *cl = calloc(1, sizeof *cl);
        if (cl == NULL) {
            eco_close(fd);
            continue;
        }
        cl->fd = fd;
        cl->id = next_id;
        if (eco_go(client, cl) != 0) {
            free(cl);
            eco_close(fd);
        }
    }
    return NULL;
}

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* ---- setup ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: redis_proxy --listen PORT --backend HOST:PORT [--backend ...] --conns K\n"
            "  Forwards Redis (RESP) requests to the backends, keys spread by hash,\n"
            "  over K shared connections per backend, with pipelining.\n"
            "  --listen PORT  port to listen on (0: any free port)\n"
            "  --bind ADDR    address to listen on (default 127.0.0.1)\n");
}

static int bad(const char *what)
{
    fprintf(stderr, "redis_proxy: %s\n", what);
    usage(stderr);
    return 2;
}

static int add_backend(const char *spec)
{
    const char *colon = strrchr(spec, ':');
    if (colon == NULL || colon == spec || colon[1] == '\0' || nbackends == MAX_BACKENDS)
        return -1;
    char host[256];
    size_t hl = (size_t)(colon - spec);
    if (hl >= sizeof host)
        return -1;
    memcpy(host, spec, hl);
    host[hl] = '\0';
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct backend *be = &backends[nbackends];
    if (eco_getaddrinfo(host, colon + 1, &hints, &be->ai) != 0)
        return -1;
    be->name = spec;
    nbackends++;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"conns", required_argument, NULL, 'k'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *lport = NULL, *bind_addr = "127.0.0.1";
    long k = 1;
    int c;
    char *end;
    if (eco_setup(NULL) != 0) { /* first: add_backend's eco_getaddrinfo needs it */
        perror("eco_setup");
        return 1;
    }
    while ((c = getopt_long(argc, argv, "l:B:k:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': lport = optarg; break;
        case 'B':
            if (add_backend(optarg) != 0)
                return bad("--backend must be HOST:PORT (at most 16 of them)");
            break;
        case 'k':
            k = strtol(optarg, &end, 10);
            if (*end != '\0' || k < 1 || k > 1024)
                return bad("--conns must be a number from 1 to 1024");
            break;
        case 'b': bind_addr = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    long lp = lport ? strtol(lport, &end, 10) : -1;
    if (lport == NULL || *end != '\0' || lp < 0 || lp > 65535 || optind != argc)
        return bad("--listen must be a port number from 0 to 65535");
    if (nbackends == 0)
        return bad("at least one --backend is needed");
    conns_per_backend = (int)k;

    signal(SIGPIPE, SIG_IGN);
    /* A proxy holds two fds per client at most: take all the fds we may. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    for (int b = 0; b < nbackends; b++) {
        backends[b].conns = calloc((size_t)k, sizeof *backends[b].conns);
        if (backends[b].conns == NULL) {
            perror("redis_proxy");
            return 1;
        }
        for (long i = 0; i < k; i++)
            backends[b].conns[i] = (struct conn){.be = &backends[b], .fd = -1};
    }
    struct addrinfo lh = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV}, *la;
    int one = 1, lfd = -1;
    if (getaddrinfo(bind_addr, lport, &lh, &la) == 0) {
        lfd = eco_socket(la->ai_family, SOCK_STREAM, 0);
        if (lfd >= 0 && (setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
                         bind(lfd, la->ai_addr, la->ai_addrlen) != 0 || listen(lfd, 4096) != 0)) {
            eco_close(lfd);
            lfd = -1;
        }
        freeaddrinfo(la);
    }
    if (lfd < 0) {
        fprintf(stderr, "redis_proxy: listen on %s port %s: %s\n", bind_addr, lport,
                strerror(errno));
        return 1;
    }
    eco_go(proxy_main, (void *)(intptr_t)lfd);
    eco_loop();
    eco_teardown();
    return 0;
}
