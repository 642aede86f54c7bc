/*
 * redis_proxy.c - a Redis proxy: many clients share a few connections to
 * each backend, with pipelining.
 *
 *     redis_proxy --listen PORT --backend HOST:PORT [--backend ...] [--conns K]
 *                 [--timeout MS] [--client-output-limit BYTES]
 *                 [--client-query-limit BYTES]
 *
 * Coroutines.  client(), one per client, is the only one that works for a
 * client: it reads the client's pipelined requests, up to a batch, answers
 * itself those it refuses (below), queues the others on a connection of
 * their key's backend, waits until every reply of the batch is in, and
 * writes them back in order.  Each backend connection has a reader()
 * that hands every reply to the request at the head of its queue (into
 * that request's client's buffers), a flush() that writes what clients
 * queued (every client woken in one pass of the loop, in one write) and,
 * while it is down, a redial() that brings it back with backoff.  The
 * connection coroutines reach a client only through its queued requests,
 * and a client's memory lives until the last of them is answered
 * (client_end), so ending client() at any of its blocking calls leaves
 * every shared connection in step.
 *
 * A connection is shared safely only while every request gets exactly one
 * reply and leaves the connection as it found it.  So the proxy answers
 * itself, without touching the backend (the table rules[] below):
 *  - with an -ERR, commands that change the connection's state: MULTI,
 *    EXEC, DISCARD, WATCH, UNWATCH, SELECT (but SELECT 0, the proxy's
 *    database, is answered +OK), AUTH, HELLO (but HELLO and HELLO 2,
 *    which change nothing, are forwarded), RESET, READONLY, READWRITE,
 *    ASKING, REPLCONF, and CLIENT CACHING, SETNAME, SETINFO, NO-EVICT,
 *    NO-TOUCH;
 *  - commands that change the shape of the reply stream: SUBSCRIBE,
 *    PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBEs, MONITOR, SYNC, PSYNC,
 *    CLIENT REPLY, CLIENT TRACKING;
 *  - commands that block: BLPOP, BRPOP, BRPOPLPUSH, BLMOVE, BLMPOP,
 *    BZPOPMIN, BZPOPMAX, BZMPOP, WAIT, WAITAOF, XREAD and XREADGROUP with
 *    BLOCK;
 *  - commands that break or stall every connection: CLIENT KILL (it can
 *    name the shared connection) and CLIENT PAUSE;
 *  - QUIT, with +OK, and then it closes that client.
 *
 * A client that hangs up while its replies are out has its client()
 * cancelled (eco_cancel) at once: its replies are dropped as they come.  kill -QUIT prints every coroutine and what it waits on
 * (eco_dump) to stderr.
 * Other CLIENT subcommands (ID, INFO, LIST, GETNAME...) are forwarded and
 * describe the shared connection.
 *
 * Requests are parsed as redis 7.0 parses them (networking.c,
 * processMultibulkBuffer and processInlineBuffer): counts and lengths as
 * string2ll reads them (no sign but '-', no spaces, no leading zero, at
 * most 20 characters), at most 1024*1024 arguments (redis 6's limit; 7.0
 * allows more), bulks of at most 512 MB (proto-max-bulk-len); "*0" and
 * "*-1" and empty inline lines are skipped without a reply, as redis does;
 * inline commands (at most 64 KB, split as sdssplitargs splits them,
 * quotes and escapes included) are forwarded converted to multibulk.
 * Where redis skips the two bytes after a count or a bulk unchecked, the
 * proxy wants "\r\n".  A malformed request gets redis's "-ERR Protocol
 * error: ..." reply after the replies of the requests before it, and only
 * its client is closed.
 *
 * Bounds:
 *  - --timeout MS (default 5000; 0: none) bounds connecting to a backend,
 *    writing to it, and waiting for reply bytes while requests are out.
 *    When it runs out, every request waiting on that connection is answered
 *    "-ERR backend timeout" (it may still have been executed) and the
 *    connection is redialled.
 *  - --client-output-limit BYTES (default 4 MB; 0: none), like redis's
 *    client-output-buffer-limit: the proxy holds at most that many bytes of
 *    replies a client has not read yet.  Past it the client is disconnected
 *    with one log line; its replies still due are read and dropped.  A
 *    single reply larger than the limit is read and dropped, and its client
 *    gets "-ERR reply larger than --client-output-limit" in its place.
 *  - --client-query-limit BYTES (default 4 MB; 0: none), like redis's
 *    client-query-buffer-limit: a larger request gets an -ERR and its
 *    client is closed.
 *  Memory per client is therefore at most the query limit, plus the output
 *  limit, plus about 350 KB (its request table, 20 KB; inline requests
 *  converted, at most 64 KB and one line's worth; a 16 KB read buffer; the
 *  touched part of its stack): with the defaults, 1,000 clients that
 *  pipeline GETs of a 1 MB value and never read hold about 4 GB at most;
 *  1,000 idle ones take about 35 MB (measured).  Replies in a batch whose
 *  keys live on several backends, when they come out of order, count twice
 *  towards the output limit.
 *  - Out of file descriptors, the accept loop waits for a client to close
 *    (or 100 ms), logs at most once a second, and then serves the backlog
 *    (accept_util.h).
 *
 * A command goes to the backend of its first key (its second word), so
 * with several backends, multi-key commands (MGET k1 k2 ...) see only the
 * keys that live there: unlike nutcracker, this sample does not split them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "accept_util.h"
#include "backend_arg.h"
#include "dump_on_quit.h"
#include "eco.h"

#include <event2/event.h>

#define MAX_BACKENDS 16
#define MAX_BATCH 256                   /* requests of one client in flight */
#define MAX_ARGS (1024 * 1024)          /* redis 6's multibulk limit */
#define MAX_BULK (512LL * 1024 * 1024)  /* redis's default proto-max-bulk-len */
#define INLINE_MAX (64 * 1024)          /* redis's PROTO_INLINE_MAX_SIZE */
#define CONV_MAX (64 * 1024)            /* converted inline requests per batch */
#define IO_CHUNK 16384
#define WRITE_EARLY (64 * 1024)         /* whole replies worth writing mid-batch */
#define KEEP_BUF (256 * 1024)           /* larger idle buffers are freed */

static long timeout_ms = 5000;
static size_t output_limit = 4 << 20, query_limit = 4 << 20;

static const char ERR_DOWN[] = "-ERR backend unavailable\r\n";
static const char ERR_TIMEOUT[] = "-ERR backend timeout\r\n";
static const char ERR_TOO_LARGE[] = "-ERR reply larger than --client-output-limit\r\n";
static const char ERR_QUERY[] = "-ERR request larger than --client-query-limit\r\n";

static long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

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
    if (more > SIZE_MAX / 4 - b->end) {
        errno = ENOMEM;
        return -1;
    }
    size_t cap = b->cap ? b->cap : IO_CHUNK;
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

/* Empties b; a big buffer goes back to the allocator. */
static void buf_clear(struct buf *b)
{
    b->start = b->end = 0;
    if (b->cap > KEEP_BUF) {
        free(b->data);
        b->data = NULL;
        b->cap = 0;
    }
}

static void buf_free(struct buf *b)
{
    free(b->data);
    *b = (struct buf){0};
}

/* Reads what fd has, at most max bytes, into b: > 0 bytes, 0 at EOF, -1 on
 * error. */
static ssize_t buf_fill(struct buf *b, int fd, size_t max)
{
    if (buf_reserve(b, IO_CHUNK) != 0)
        return -1;
    size_t room = b->cap - b->end;
    ssize_t n = eco_read(fd, b->data + b->end, room < max ? room : max);
    if (n > 0)
        b->end += (size_t)n;
    return n;
}

/* ---- RESP, as redis reads it ---- */

/* redis's string2ll: an optional '-', then no leading zero (but "0"),
 * digits only, fewer than 21 characters, no overflow. */
static int parse_ll(const char *s, size_t len, long long *out)
{
    if (len == 0 || len >= 21)
        return 0;
    if (len == 1 && s[0] == '0') {
        *out = 0;
        return 1;
    }
    size_t i = s[0] == '-';
    if (i == len || s[i] < '1' || s[i] > '9')
        return 0;
    unsigned long long v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (ULLONG_MAX - d) / 10)
            return 0;
        v = v * 10 + d;
    }
    if (s[0] == '-') {
        if (v > (unsigned long long)LLONG_MAX + 1)
            return 0;
        *out = v == (unsigned long long)LLONG_MAX + 1 ? LLONG_MIN : -(long long)v;
    } else {
        if (v > (unsigned long long)LLONG_MAX)
            return 0;
        *out = (long long)v;
    }
    return 1;
}

/* The number on the line at p (p[0] is its type byte), which must end in
 * "\r\n".  Returns the line's length, 0 while incomplete, -1 if malformed
 * (or too long to hold a number). */
static long resp_num(const char *p, size_t n, long long *val)
{
    size_t len = 0;
    while (1 + len < n && p[1 + len] != '\r') {
        if (len == 20)
            return -1;
        len++;
    }
    if (2 + len >= n)
        return 0;
    if (p[2 + len] != '\n' || !parse_ll(p + 1, len, val))
        return -1;
    return (long)(len + 3);
}

/* Progress in a request not yet whole, so that bytes arriving one by one
 * are not scanned again and again. */
struct progress {
    size_t off;      /* multibulk: where the next argument starts (0: not
                        started); inline: bytes seen without a newline */
    long long left;  /* multibulk: arguments still to come */
    long long argc;
};

enum { P_MORE = 0, P_BAD = -1, P_BIG = -2, P_NOT_BULK = -3 };

/* Parses the multibulk request at p[0..n) (p[0] is '*').  Returns its
 * length, P_MORE, P_BAD (*why says how, as redis would), P_BIG (over the
 * query limit) or P_NOT_BULK (an argument does not start with '$'; st->off
 * is where).  *argc 0: an empty request, which redis skips. */
static long parse_multibulk(const char *p, size_t n, struct progress *st, long long *argc,
                            const char **why)
{
    if (st->off == 0) {
        long long count;
        long hl = resp_num(p, n, &count);
        if (hl == 0)
            return P_MORE;
        if (hl < 0 || count > MAX_ARGS) {
            *why = "invalid multibulk length";
            return P_BAD;
        }
        if (count <= 0) {
            *argc = 0;
            return hl;
        }
        st->off = (size_t)hl;
        st->left = st->argc = count;
    }
    while (st->left > 0) {
        size_t off = st->off;
        if (off >= n)
            return P_MORE;
        if (p[off] != '$')
            return P_NOT_BULK;
        long long blen;
        long hl = resp_num(p + off, n - off, &blen);
        if (hl == 0)
            return P_MORE;
        if (hl < 0 || blen < 0 || blen > MAX_BULK) {
            *why = "invalid bulk length";
            return P_BAD;
        }
        size_t end = off + (size_t)hl + (size_t)blen + 2;
        if (end > query_limit)
            return P_BIG;
        if (end > n)
            return P_MORE;
        if (p[end - 2] != '\r' || p[end - 1] != '\n') {
            *why = "bulk not followed by CRLF";
            return P_BAD;
        }
        st->off = end;
        st->left--;
    }
    *argc = st->argc;
    return (long)st->off;
}

static int is_blank(char c) /* isspace() in the C locale */
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\v' || c == '\f' || c == '\r';
}

static int hex_val(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* One argument of an inline line, from p (not blank) to at most e, decoded
 * as sdssplitargs decodes it: "..." with \xHH and C escapes, '...' with \',
 * quotes also in mid-word.  Writes it to out (NULL: only measures it) and
 * its length to *len; returns where it ended, or NULL (unbalanced quotes,
 * or a closing quote not followed by a blank). */
static const char *inline_arg(const char *p, const char *e, char *out, size_t *len)
{
    size_t n = 0;
    int quote = 0;
    for (;;) {
        char c;
        if (quote == '"') {
            if (p == e)
                return NULL;
            if (*p == '\\' && e - p >= 4 && p[1] == 'x' && hex_val(p[2]) >= 0 &&
                hex_val(p[3]) >= 0) {
                c = (char)(hex_val(p[2]) * 16 + hex_val(p[3]));
                p += 4;
            } else if (*p == '\\' && e - p >= 2) {
                switch (p[1]) {
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'b': c = '\b'; break;
                case 'a': c = '\a'; break;
                default: c = p[1]; break;
                }
                p += 2;
            } else if (*p == '"') {
                p++;
                if (p != e && !is_blank(*p))
                    return NULL;
                break;
            } else {
                c = *p++;
            }
        } else if (quote == '\'') {
            if (p == e)
                return NULL;
            if (*p == '\\' && e - p >= 2 && p[1] == '\'') {
                c = '\'';
                p += 2;
            } else if (*p == '\'') {
                p++;
                if (p != e && !is_blank(*p))
                    return NULL;
                break;
            } else {
                c = *p++;
            }
        } else {
            if (p == e || *p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
                break;
            if (*p == '"' || *p == '\'') {
                quote = *p++;
                continue;
            }
            c = *p++;
        }
        if (out != NULL)
            out[n] = c;
        n++;
    }
    *len = n;
    return p;
}

/* Parses the inline request at p[0..n) as processInlineBuffer does (a line
 * ended by "\n", a '\r' before it dropped) and appends it to conv as a
 * multibulk request.  Returns the line's length, P_MORE or P_BAD. */
static long parse_inline(const char *p, size_t n, struct progress *st, struct buf *conv,
                         long long *argc, const char **why)
{
    const char *nl = memchr(p + st->off, '\n', n - st->off);
    size_t len = nl ? (size_t)(nl - p) : n;
    /* redis looks for the newline with strchr, which stops at a NUL: such
     * a line waits until it is "too big". */
    if (len > INLINE_MAX || memchr(p + st->off, '\0', len - st->off) != NULL) {
        *why = "too big inline request";
        return P_BAD;
    }
    if (nl == NULL) {
        st->off = n;
        return P_MORE;
    }
    const char *e = p + len;
    if (e > p && e[-1] == '\r')
        e--;
    long long count = 0;
    size_t bytes = 0, alen;
    for (const char *q = p;; count++) {
        while (q < e && is_blank(*q))
            q++;
        if (q == e)
            break;
        if ((q = inline_arg(q, e, NULL, &alen)) == NULL) {
            *why = "unbalanced quotes in request";
            return P_BAD;
        }
        bytes += alen + 32;
    }
    *argc = count;
    if (count == 0)
        return (long)len + 1;
    if (buf_reserve(conv, bytes + 32) != 0) {
        *why = "out of memory";
        return P_BAD;
    }
    conv->end += (size_t)sprintf(conv->data + conv->end, "*%lld\r\n", count);
    for (const char *q = p;;) {
        while (q < e && is_blank(*q))
            q++;
        if (q == e)
            break;
        inline_arg(q, e, NULL, &alen);
        conv->end += (size_t)sprintf(conv->data + conv->end, "$%zu\r\n", alen);
        q = inline_arg(q, e, conv->data + conv->end, &alen);
        conv->end += alen;
        memcpy(conv->data + conv->end, "\r\n", 2);
        conv->end += 2;
    }
    return (long)len + 1;
}

/* The next argument of a whole, checked multibulk request; *off is where
 * it starts, and is moved past it. */
static const char *arg_next(const char *req, size_t *off, size_t *len)
{
    const char *s = req + *off + 1;
    size_t v = 0;
    while (*s != '\r')
        v = v * 10 + (size_t)(*s++ - '0');
    s += 2;
    *len = v;
    *off = (size_t)(s - req) + v + 2;
    return s;
}

static int arg_is(const char *s, size_t len, const char *word)
{
    return strlen(word) == len && strncasecmp(s, word, len) == 0;
}

/* ---- what the proxy answers itself ---- */

enum rule_kind {
    ALWAYS,
    SUBCOMMAND, /* CLIENT's */
    UNLESS_DB0, /* SELECT */
    UNLESS_V2,  /* HELLO */
    WITH_BLOCK, /* XREAD, XREADGROUP */
    QUIT,
};

#define WHY_TX "a transaction would take in other clients' commands"
#define WHY_STATE "it would change the state of a connection other clients share"
#define WHY_SHAPE "it would change the replies on a connection other clients share"
#define WHY_BLOCK "it can block a connection other clients share"
#define WHY_BREAK "it can break or stall the connections other clients share"
#define RULE(name, kind, why) \
    {name, sizeof name - 1, NULL, kind, "-ERR redis_proxy refuses " name ": " why "\r\n"}
#define CLIENT_RULE(sub, why) \
    {"CLIENT", 6, sub, SUBCOMMAND, "-ERR redis_proxy refuses CLIENT " sub ": " why "\r\n"}

/* The commands the proxy does not forward.  The header comment and the
 * README list them too: keep the three in step. */
static const struct rule {
    const char *name;
    size_t len;
    const char *sub;
    enum rule_kind kind;
    const char *reply;
} rules[] = {
    RULE("MULTI", ALWAYS, WHY_TX),
    RULE("EXEC", ALWAYS, WHY_TX),
    RULE("DISCARD", ALWAYS, WHY_TX),
    RULE("WATCH", ALWAYS, WHY_TX),
    RULE("UNWATCH", ALWAYS, WHY_TX),
    RULE("SELECT", UNLESS_DB0, WHY_STATE),
    RULE("AUTH", ALWAYS, WHY_STATE),
    RULE("HELLO", UNLESS_V2, WHY_STATE),
    RULE("RESET", ALWAYS, WHY_STATE),
    RULE("READONLY", ALWAYS, WHY_STATE),
    RULE("READWRITE", ALWAYS, WHY_STATE),
    RULE("ASKING", ALWAYS, WHY_STATE),
    RULE("REPLCONF", ALWAYS, WHY_STATE),
    CLIENT_RULE("CACHING", WHY_STATE),
    CLIENT_RULE("SETNAME", WHY_STATE),
    CLIENT_RULE("SETINFO", WHY_STATE),
    CLIENT_RULE("NO-EVICT", WHY_STATE),
    CLIENT_RULE("NO-TOUCH", WHY_STATE),
    RULE("SUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("UNSUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("PSUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("PUNSUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("SSUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("SUNSUBSCRIBE", ALWAYS, WHY_SHAPE),
    RULE("MONITOR", ALWAYS, WHY_SHAPE),
    RULE("SYNC", ALWAYS, WHY_SHAPE),
    RULE("PSYNC", ALWAYS, WHY_SHAPE),
    CLIENT_RULE("REPLY", WHY_SHAPE),
    CLIENT_RULE("TRACKING", WHY_SHAPE),
    RULE("BLPOP", ALWAYS, WHY_BLOCK),
    RULE("BRPOP", ALWAYS, WHY_BLOCK),
    RULE("BRPOPLPUSH", ALWAYS, WHY_BLOCK),
    RULE("BLMOVE", ALWAYS, WHY_BLOCK),
    RULE("BLMPOP", ALWAYS, WHY_BLOCK),
    RULE("BZPOPMIN", ALWAYS, WHY_BLOCK),
    RULE("BZPOPMAX", ALWAYS, WHY_BLOCK),
    RULE("BZMPOP", ALWAYS, WHY_BLOCK),
    RULE("WAIT", ALWAYS, WHY_BLOCK),
    RULE("WAITAOF", ALWAYS, WHY_BLOCK),
    {"XREAD", 5, NULL, WITH_BLOCK, "-ERR redis_proxy refuses XREAD with BLOCK: " WHY_BLOCK "\r\n"},
    {"XREADGROUP", 10, NULL, WITH_BLOCK,
     "-ERR redis_proxy refuses XREADGROUP with BLOCK: " WHY_BLOCK "\r\n"},
    CLIENT_RULE("KILL", WHY_BREAK),
    CLIENT_RULE("PAUSE", WHY_BREAK),
    {"QUIT", 4, NULL, QUIT, "+OK\r\n"},
};

/* Bit n of rule_lens[c - 'A'] is set when a rule's name of n letters
 * starts with c: most commands (GET, SET...) are let through on that. */
static uint32_t rule_lens[26];

static void rules_index(void)
{
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++)
        rule_lens[rules[i].name[0] - 'A'] |= 1u << rules[i].len;
}

/* Whether XREAD or XREADGROUP would block, following xreadCommand's
 * reading of its options (it stops at STREAMS or at anything else). */
static int xread_blocks(const char *req, long long argc, int group)
{
    size_t off = 0, len;
    while (req[off] != '\n')
        off++;
    off++;
    arg_next(req, &off, &len);
    for (long long i = 1; i < argc; i++) {
        long long more = argc - i - 1;
        const char *o = arg_next(req, &off, &len);
        if (arg_is(o, len, "BLOCK") && more > 0)
            return 1;
        if (arg_is(o, len, "COUNT") && more > 0) {
            arg_next(req, &off, &len);
            i++;
        } else if (arg_is(o, len, "GROUP") && more >= 2 && group) {
            arg_next(req, &off, &len);
            arg_next(req, &off, &len);
            i += 2;
        } else if (!(arg_is(o, len, "NOACK") && group)) {
            return 0; /* STREAMS, or an error */
        }
    }
    return 0;
}

/* The reply the proxy gives itself to the whole multibulk request req of
 * argc (> 0) arguments, or NULL to forward it.  Sets *quit for QUIT. */
static const char *answer_of(const char *req, long long argc, int *quit)
{
    size_t off = 0, nlen, alen = 0;
    while (req[off] != '\n')
        off++;
    off++;
    const char *name = arg_next(req, &off, &nlen), *arg = NULL;
    unsigned first = (unsigned)(name[0] & ~0x20) - 'A'; /* upper case */
    if (nlen >= 32 || first >= 26 || !(rule_lens[first] >> nlen & 1))
        return NULL;
    if (argc > 1)
        arg = arg_next(req, &off, &alen);
    for (size_t i = 0; i < sizeof rules / sizeof rules[0]; i++) {
        const struct rule *r = &rules[i];
        if (r->len != nlen || strncasecmp(name, r->name, nlen) != 0)
            continue;
        switch (r->kind) {
        case ALWAYS:
            return r->reply;
        case SUBCOMMAND:
            if (arg != NULL && arg_is(arg, alen, r->sub))
                return r->reply;
            continue;
        case UNLESS_DB0:
            return argc == 2 && alen == 1 && arg[0] == '0' ? "+OK\r\n" : r->reply;
        case UNLESS_V2:
            return argc == 1 || (argc == 2 && alen == 1 && arg[0] == '2') ? NULL : r->reply;
        case WITH_BLOCK:
            return xread_blocks(req, argc, nlen == 10) ? r->reply : NULL;
        case QUIT:
            *quit = 1;
            return r->reply;
        }
    }
    return NULL;
}

/* ---- backend connections ---- */

struct req;

/* Where the reader is in the reply it is reading. */
struct scan {
    long long pending; /* values still to come, this one included */
    long long left;    /* bytes of the bulk being read, with its CRLF */
    int line;          /* inside a +, - or : line */
};

struct conn {
    struct backend *be;
    int fd;             /* -1 while down */
    unsigned gen;       /* counts failures: a coroutine parked on the old
                           fd sees it changed */
    struct req *head, *tail; /* requests waiting for a reply, oldest first */
    struct req *unsent; /* the first one not wholly written, or NULL */
    size_t unsent_off;  /* bytes of it already written */
    long busy_since;    /* when head last went from NULL to a request */
    struct buf in;      /* reply bytes read, not yet handed out */
    struct scan scan;
    int flushing;       /* a flush() is on its way */
    int redialling;     /* a redial() is on its way */
    int dialled;        /* its first dial was tried */
};

struct backend {
    const char *name;
    struct addrinfo *ai;
    struct conn *conns;
};

static struct backend backends[MAX_BACKENDS];
static int nbackends, conns_per_backend = 1;

/* ---- clients ---- */

enum req_state {
    QUEUED,    /* on a connection, no reply byte yet */
    STREAMING, /* its reply is arriving */
    READY,     /* its reply (or answer) is whole, not yet in out */
    DONE,      /* its reply is in out */
};

struct req {
    struct req *next;   /* in its connection's queue */
    struct client *cl;
    const char *data;   /* the request, forwarded as it is */
    size_t off, len;    /* data's place in the client's in (or conv) */
    const char *answer; /* the reply given in place of the backend's */
    size_t reply_off, reply_len; /* the backend's reply in held[backend] */
    size_t got;         /* bytes of the backend's reply seen */
    unsigned char backend, state, inline_conv, to_out;
};

struct client {
    eco_t *co;          /* client(), the one coroutine working for it */
    struct event *hangup; /* the client hung up: cancel co */
    int fd;
    unsigned id;
    eco_chan_t *wake;   /* the last reply of the batch is in */
    struct buf in;      /* bytes read from the client */
    struct buf conv;    /* the batch's inline requests, as multibulk */
    struct buf out;     /* replies in order, not yet written */
    size_t out_partial; /* bytes at the end of out of a reply not yet whole */
    struct buf held[MAX_BACKENDS]; /* replies that came before an earlier one */
    size_t held_bytes;
    struct progress prog; /* in the request at the end of the batch */
    int n, next;        /* requests in the batch; the first not in out */
    int waiting;        /* requests queued on connections */
    int dead;           /* disconnected: replies still due are dropped */
    int gone;           /* client() has ended: the last reply frees it */
    char err[96];       /* a protocol error reply */
    struct req reqs[MAX_BATCH];
};

static struct accept_guard guard; /* the accept loop's, out of fds */

static void client_free(struct client *cl)
{
    buf_free(&cl->in);
    buf_free(&cl->conv);
    buf_free(&cl->out);
    for (int b = 0; b < nbackends; b++)
        buf_free(&cl->held[b]);
    eco_chan_free(cl->wake);
    free(cl);
}

/* The client is disconnected now, but client() closes its fd. */
static void client_drop(struct client *cl)
{
    cl->dead = 1;
    shutdown(cl->fd, SHUT_RDWR);
    buf_free(&cl->out);
    for (int b = 0; b < nbackends; b++)
        buf_free(&cl->held[b]);
    cl->out_partial = cl->held_bytes = 0;
}

/* Writes the whole replies at the front of out that the client's socket
 * takes now; never waits. */
static void write_some(struct client *cl)
{
    size_t whole = cl->out.end - cl->out.start - cl->out_partial;
    while (whole > 0 && !cl->dead) {
        ssize_t w = send(cl->fd, cl->out.data + cl->out.start, whole, MSG_DONTWAIT | MSG_NOSIGNAL);
        if (w > 0) {
            cl->out.start += (size_t)w;
            whole -= (size_t)w;
        } else if (w < 0 && errno == EINTR) {
            continue;
        } else if (w < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        } else {
            client_drop(cl); /* gone: nobody reads its replies */
        }
    }
}

/* Appends n bytes to b (out or a held buffer), within the output limit:
 * 0, or -1 when the client was disconnected instead. */
static int client_give(struct client *cl, struct buf *b, const void *p, size_t n)
{
    size_t held = cl->out.end - cl->out.start + cl->held_bytes;
    if (held + n > output_limit) {
        write_some(cl);
        held = cl->out.end - cl->out.start + cl->held_bytes;
    }
    if (cl->dead)
        return -1;
    if (held + n > output_limit) {
        fprintf(stderr,
                "redis_proxy: client %u: %zu bytes of replies not read, over "
                "--client-output-limit %zu: disconnected\n",
                cl->id, held + n, output_limit);
        client_drop(cl);
        return -1;
    }
    if (buf_append(b, p, n) != 0) {
        fprintf(stderr, "redis_proxy: client %u: no memory for its replies: disconnected\n",
                cl->id);
        client_drop(cl);
        return -1;
    }
    if (b != &cl->out)
        cl->held_bytes += n;
    return 0;
}

/* Moves whole replies, in request order, into out. */
static void advance(struct client *cl)
{
    while (cl->next < cl->n && !cl->dead) {
        struct req *r = &cl->reqs[cl->next];
        if (r->state != READY)
            break;
        const char *p = r->answer;
        size_t len = p ? strlen(p) : r->reply_len;
        if (p == NULL)
            p = cl->held[r->backend].data + r->reply_off;
        if (client_give(cl, &cl->out, p, len) != 0)
            return;
        r->state = DONE;
        cl->next++;
    }
    if (cl->out.end - cl->out.start - cl->out_partial >= WRITE_EARLY)
        write_some(cl);
}

/* Bytes of r's reply, as they arrive. */
static void reply_bytes(struct req *r, const char *p, size_t n)
{
    struct client *cl = r->cl;
    if (r->state == QUEUED) {
        r->state = STREAMING;
        r->to_out = cl->next == r - cl->reqs;
    }
    r->got += n;
    if (cl->dead || r->answer != NULL)
        return; /* dropped */
    struct buf *b = r->to_out ? &cl->out : &cl->held[r->backend];
    if (r->got > output_limit) {
        /* Too large to hold at all: dropped, an error in its place. */
        size_t kept = r->got - n;
        b->end -= kept;
        if (r->to_out)
            cl->out_partial = 0;
        else
            cl->held_bytes -= kept;
        r->answer = ERR_TOO_LARGE;
        return;
    }
    if (client_give(cl, b, p, n) == 0 && r->to_out)
        cl->out_partial += n;
}

/* r's reply is whole, or answer takes its place (the connection failed). */
static void reply_end(struct req *r, const char *answer)
{
    struct client *cl = r->cl;
    if (!cl->dead) {
        if (answer != NULL) {
            if (r->state == STREAMING && r->answer == NULL) { /* drop what came */
                if (r->to_out) {
                    cl->out.end -= r->got;
                    cl->out_partial = 0;
                } else {
                    cl->held[r->backend].end -= r->got;
                    cl->held_bytes -= r->got;
                }
            }
            r->answer = answer;
        }
        if (r->answer == NULL && r->to_out) {
            cl->out_partial = 0;
            r->state = DONE;
            cl->next++;
        } else {
            if (r->answer == NULL) {
                r->reply_len = r->got;
                r->reply_off = cl->held[r->backend].end - r->got;
            }
            r->state = READY;
        }
        advance(cl);
    }
    if (--cl->waiting == 0) {
        if (cl->gone)
            client_free(cl);
        else
            eco_chan_trysend(cl->wake, NULL);
    }
}

/* ---- backend connections: failing, dialling, writing, reading ---- */

static void *redial(void *arg);

/* 0, or -1 if no redial() could be started (the next request retries). */
static int start_redial(struct conn *c)
{
    if (!c->redialling && eco_go(redial, c) == 0)
        c->redialling = 1;
    return c->redialling ? 0 : -1;
}

/* The connection broke: every request on it is answered with answer, and
 * it is redialled.  Coroutines parked on it wake (eco_close) and see gen
 * changed. */
static void conn_fail(struct conn *c, const char *answer, const char *why)
{
    int fd = c->fd;
    if (fd < 0)
        return;
    fprintf(stderr, "redis_proxy: backend %s: %s; reconnecting\n", c->be->name, why);
    c->fd = -1;
    c->gen++;
    struct req *r = c->head;
    c->head = c->tail = c->unsent = NULL;
    c->unsent_off = 0;
    c->in.start = c->in.end = 0; /* not freed: a parked reader points into it */
    c->scan = (struct scan){.pending = 1};
    eco_close(fd);
    while (r != NULL) {
        struct req *next = r->next; /* reply_end may free r's client */
        reply_end(r, answer);
        r = next;
    }
    start_redial(c);
}

static int dial(struct backend *be)
{
    int fd = eco_socket(be->ai->ai_family, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    if (timeout_ms > 0)
        eco_fd_timeout(fd, ECO_RD | ECO_WR, timeout_ms);
    if (eco_connect(fd, be->ai->ai_addr, be->ai->ai_addrlen) != 0) {
        int err = errno;
        eco_close(fd);
        errno = err;
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return fd;
}

/* Writes what clients queued on c, in the order they queued it.  Clients
 * woken in one pass of the loop all queue before it runs, so their
 * requests leave in one write. */
static void *flush(void *arg)
{
    struct conn *c = arg;
    while (c->unsent != NULL && c->fd >= 0) {
        int fd = c->fd;
        unsigned gen = c->gen;
        struct iovec iov[64];
        int cnt = 0;
        size_t skip = c->unsent_off;
        for (struct req *r = c->unsent; r != NULL; r = r->next, skip = 0) {
            const char *p = r->data + skip;
            size_t len = r->len - skip;
            if (cnt > 0 && (const char *)iov[cnt - 1].iov_base + iov[cnt - 1].iov_len == p) {
                iov[cnt - 1].iov_len += len; /* a client's batch is contiguous */
            } else if (cnt < 64) {
                iov[cnt++] = (struct iovec){(void *)p, len};
            } else {
                break;
            }
        }
        ssize_t w = eco_writev(fd, iov, cnt);
        if (c->gen != gen)
            continue; /* failed meanwhile; maybe already back */
        if (w < 0) {
            conn_fail(c, errno == ETIMEDOUT ? ERR_TIMEOUT : ERR_DOWN,
                      errno == ETIMEDOUT ? "write timed out" : strerror(errno));
            continue;
        }
        for (size_t left = (size_t)w; left > 0;) {
            size_t rest = c->unsent->len - c->unsent_off;
            if (left < rest) {
                c->unsent_off += left;
                break;
            }
            left -= rest;
            c->unsent = c->unsent->next;
            c->unsent_off = 0;
        }
    }
    c->flushing = 0;
    return NULL;
}

/* Follows one reply through p[0..n): returns how many of these bytes are
 * its (whole lines, any part of a bulk), or -1 if the backend broke RESP.
 * *done: the reply ended there.  It needs no stack, so no depth limit. */
static long scan_reply(struct scan *s, const char *p, size_t n, int *done)
{
    size_t off = 0;
    *done = 0;
    while (off < n) {
        if (s->left > 0) {
            size_t take = (size_t)s->left < n - off ? (size_t)s->left : n - off;
            off += take;
            s->left -= (long long)take;
            if (s->left > 0)
                break;
        } else if (s->line) {
            const char *lf = memchr(p + off, '\n', n - off);
            if (lf == NULL)
                return (long)n;
            off = (size_t)(lf - p) + 1;
            s->line = 0;
        } else if (p[off] == '+' || p[off] == '-' || p[off] == ':') {
            s->line = 1;
            off++;
            continue;
        } else if (p[off] == '$' || p[off] == '*') {
            long long v;
            long hl = resp_num(p + off, n - off, &v);
            if (hl == 0)
                break; /* the rest of the header comes later */
            if (hl < 0 || v < -1 || v > LLONG_MAX / 4 - s->pending)
                return -1;
            off += (size_t)hl;
            if (v >= 0 && p[off - (size_t)hl] == '$') {
                s->left = v + 2;
                continue;
            }
            if (v > 0) {
                s->pending += v - 1; /* the array is its elements */
                continue;
            }
        } else {
            return -1;
        }
        if (--s->pending == 0) { /* a value ended */
            *done = 1;
            break;
        }
    }
    return (long)off;
}

/* Hands the replies read on c to the requests at the head of its queue.
 * 0, or -1 if the backend broke the protocol. */
static int deliver(struct conn *c)
{
    while (c->in.start < c->in.end) {
        struct req *r = c->head;
        if (r == NULL || r == c->unsent) {
            errno = ENOMSG; /* a reply nobody asked for */
            return -1;
        }
        const char *p = c->in.data + c->in.start;
        int done;
        long used = scan_reply(&c->scan, p, c->in.end - c->in.start, &done);
        if (used < 0) {
            errno = EPROTO;
            return -1;
        }
        if (used > 0)
            reply_bytes(r, p, (size_t)used);
        c->in.start += (size_t)used;
        if (!done)
            break;
        c->head = r->next;
        if (c->head == NULL)
            c->tail = NULL;
        c->scan = (struct scan){.pending = 1};
        reply_end(r, NULL);
    }
    if (c->in.start == c->in.end)
        buf_clear(&c->in);
    return 0;
}

/* Reads c's replies for as long as its connection lives. */
static void *reader(void *arg)
{
    struct conn *c = arg;
    int fd = c->fd;
    unsigned gen = c->gen;
    int cut = 0; /* the fd's read timeout is cut to what a request has left */
    for (;;) {
        if (deliver(c) != 0) {
            conn_fail(c, ERR_DOWN, errno == ENOMSG ? "data that answers no request"
                                                   : "a reply that is not RESP");
            return NULL;
        }
        ssize_t n = buf_fill(&c->in, fd, SIZE_MAX);
        if (c->gen != gen)
            return NULL; /* failed meanwhile: the next connection has its own */
        if (cut) {
            eco_fd_timeout(fd, ECO_RD, timeout_ms);
            cut = 0;
        }
        if (n > 0)
            continue;
        if (n < 0 && errno == ETIMEDOUT) {
            /* The read may have begun before the oldest request was queued. */
            long waited = now_ms() - c->busy_since;
            if (c->head == NULL)
                continue;
            if (waited < timeout_ms) {
                eco_fd_timeout(fd, ECO_RD, timeout_ms - waited);
                cut = 1;
                continue;
            }
            conn_fail(c, ERR_TIMEOUT, "no reply within --timeout");
            return NULL;
        }
        if (n < 0 && errno == ENOMEM) {
            eco_sleep(10);
            continue;
        }
        conn_fail(c, ERR_DOWN, n == 0 ? "closed by the backend" : strerror(errno));
        return NULL;
    }
}

static int first_dials_left;
static eco_chan_t *first_dials_done;

/* Dials c until it is up, waiting longer after each failure, and starts
 * its reader.  The first failure of an outage is logged. */
static void *redial(void *arg)
{
    struct conn *c = arg;
    long wait_ms = c->dialled ? 100 : 0;
    for (int tries = 0;; tries++) {
        if (wait_ms > 0)
            eco_sleep(wait_ms);
        int fd = dial(c->be), err = errno;
        if (fd >= 0) {
            c->fd = fd;
            c->scan = (struct scan){.pending = 1};
            if (eco_go(reader, c) != 0) {
                err = errno;
                c->fd = -1;
                eco_close(fd);
                fd = -1;
            }
        }
        if (fd >= 0 && c->dialled)
            fprintf(stderr, "redis_proxy: backend %s: reconnected\n", c->be->name);
        else if (fd < 0 && tries == 0)
            fprintf(stderr, "redis_proxy: backend %s: %s; retrying\n", c->be->name,
                    err == ETIMEDOUT ? "connect timed out" : strerror(err));
        if (!c->dialled) {
            c->dialled = 1;
            if (--first_dials_left == 0)
                eco_chan_trysend(first_dials_done, NULL);
        }
        if (fd >= 0)
            break;
        wait_ms = wait_ms < 100 ? 100 : wait_ms < 2000 ? wait_ms * 2 : 2000;
    }
    c->redialling = 0;
    return NULL;
}

/* Queues r on c; flush() writes it. */
static void conn_push(struct conn *c, struct req *r)
{
    r->next = NULL;
    if (c->tail != NULL) {
        c->tail->next = r;
    } else {
        c->head = r;
        c->busy_since = now_ms();
    }
    c->tail = r;
    if (c->unsent == NULL) {
        c->unsent = r;
        c->unsent_off = 0;
    }
    if (!c->flushing && eco_go(flush, c) == 0)
        c->flushing = 1; /* else the next push retries, the timeout backs it */
}

/* The connection of backend b for client id: its own, or any that is up. */
static struct conn *pick_conn(int b, unsigned id)
{
    struct backend *be = &backends[b];
    struct conn *c = &be->conns[id % (unsigned)conns_per_backend];
    if (c->fd >= 0)
        return c;
    for (int i = 0; i < conns_per_backend; i++) {
        start_redial(&be->conns[i]); /* if one could not be started */
        if (be->conns[i].fd >= 0)
            return &be->conns[i];
    }
    return NULL;
}

/* ---- serving a client ---- */

static unsigned hash_key(const char *k, size_t n)
{
    unsigned h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)k[i]) * 16777619u;
    return h;
}

/* Parses the requests in cl->in into a batch (cl->reqs, cl->n).  A request
 * the proxy answers itself gets its answer.  One that ends the
 * conversation (QUIT, a malformed or oversized request) ends the batch and
 * sets *closing.  Returns where the batch ends in cl->in. */
static size_t take_batch(struct client *cl, int *closing)
{
    size_t off = cl->in.start;
    int n = 0;
    cl->conv.start = cl->conv.end = 0;
    while (n < MAX_BATCH && cl->conv.end < CONV_MAX && off < cl->in.end) {
        const char *p = cl->in.data + off, *why = NULL;
        size_t avail = cl->in.end - off, mark = cl->conv.end;
        long long argc = 0;
        long len = p[0] == '*' ? parse_multibulk(p, avail, &cl->prog, &argc, &why)
                               : parse_inline(p, avail, &cl->prog, &cl->conv, &argc, &why);
        if (len == P_MORE)
            break;
        size_t at = cl->prog.off;
        cl->prog = (struct progress){0};
        struct req *r = &cl->reqs[n];
        *r = (struct req){.cl = cl};
        if (len < 0) {
            if (len == P_BIG) {
                r->answer = ERR_QUERY;
                fprintf(stderr, "redis_proxy: client %u: request over --client-query-limit %zu\n",
                        cl->id, query_limit);
            } else if (len == P_NOT_BULK) {
                char got = (unsigned char)p[at] < ' ' ? ' ' : p[at]; /* no CR LF in a reply */
                snprintf(cl->err, sizeof cl->err,
                         "-ERR Protocol error: expected '$', got '%c'\r\n", got);
                r->answer = cl->err;
            } else {
                snprintf(cl->err, sizeof cl->err, "-ERR Protocol error: %s\r\n", why);
                r->answer = cl->err;
            }
            n++;
            *closing = 1;
            break;
        }
        off += (size_t)len;
        if (argc == 0)
            continue; /* skipped, as redis does */
        r->inline_conv = p[0] != '*';
        const char *req = r->inline_conv ? cl->conv.data + mark : p;
        r->off = r->inline_conv ? mark : off - (size_t)len;
        r->len = r->inline_conv ? cl->conv.end - mark : (size_t)len;
        int quit = 0;
        r->answer = answer_of(req, argc, &quit);
        if (r->answer == NULL && argc > 1 && nbackends > 1) {
            size_t aoff = 0, klen;
            while (req[aoff] != '\n')
                aoff++;
            aoff++;
            arg_next(req, &aoff, &klen);
            const char *key = arg_next(req, &aoff, &klen);
            r->backend = (unsigned char)(hash_key(key, klen) % (unsigned)nbackends);
        }
        n++;
        if (quit) {
            *closing = 1;
            break;
        }
    }
    cl->n = n;
    return off;
}

/* Sends the batch's requests and waits until every reply is in out.  0,
 * or -1 if the wait failed (client() then ends; the replies still due
 * are dropped as they come). */
static int run_batch(struct client *cl)
{
    struct conn *chosen[MAX_BACKENDS] = {0};
    cl->next = cl->waiting = 0;
    cl->out_partial = 0;
    for (int i = 0; i < cl->n; i++) {
        struct req *r = &cl->reqs[i];
        if (r->answer != NULL) {
            r->state = READY;
            continue;
        }
        struct conn *c = chosen[r->backend];
        if (c == NULL || c->fd < 0)
            c = chosen[r->backend] = pick_conn(r->backend, cl->id);
        if (c == NULL) {
            r->answer = ERR_DOWN;
            r->state = READY;
            continue;
        }
        r->data = (r->inline_conv ? cl->conv.data : cl->in.data) + r->off;
        r->state = QUEUED;
        cl->waiting++;
        conn_push(c, r);
    }
    advance(cl);
    while (cl->waiting > 0) {
        if (eco_chan_recv(cl->wake, NULL) >= 0)
            continue;
        if (errno != EMFILE && errno != ENFILE && errno != ENOMEM)
            return -1;
        eco_sleep(1); /* no wake-up fd for now: poll */
    }
    return 0;
}

/* Ends a conversation after its last reply: closing with unread input
 * would reset the connection and could destroy that reply before the
 * client reads it. */
static void close_gently(int fd)
{
    char sink[4096];
    shutdown(fd, SHUT_WR);
    eco_fd_timeout(fd, ECO_RD, 1000);
    for (int i = 0; i < 64 && eco_read(fd, sink, sizeof sink) > 0; i++)
        ;
}

/* The client hung up while client() works for it, most likely waiting
 * for replies: nobody will read them, so client() is cancelled (its wait
 * fails with ECANCELED and it ends; the replies still due are dropped as
 * they come), as redis drops a client that closes.  EV_CLOSED: epoll
 * reports the hang-up apart from readable data, so an event kept for the
 * client's whole life costs no system call per request.  libevent reports
 * a reset as readable, not as EV_CLOSED: a client that resets is noticed
 * when its replies are written (EPIPE) or by --timeout. */
static void client_gone(evutil_socket_t fd, short what, void *arg)
{
    struct client *cl = arg;
    (void)fd;
    (void)what;
    event_del(cl->hangup);
    eco_cancel(cl->co);
}

/* client()'s end; with requests still queued (when client() is ended
 * early), the last reply frees the client. */
static void client_end(struct client *cl)
{
    if (cl->hangup != NULL)
        event_free(cl->hangup);
    eco_close(cl->fd);
    accept_guard_closed(&guard);
    cl->dead = cl->gone = 1;
    if (cl->waiting == 0)
        client_free(cl);
}

static void *client(void *arg)
{
    struct client *cl = arg;
    int closing = 0; /* after this batch: QUIT, or a bad request */
    cl->co = eco_self();
    if (event_base_get_features(eco_base()) & EV_FEATURE_EARLY_CLOSE) {
        cl->hangup = event_new(eco_base(), cl->fd, EV_CLOSED | EV_PERSIST, client_gone, cl);
        if (cl->hangup != NULL && event_add(cl->hangup, NULL) != 0) {
            event_free(cl->hangup);
            cl->hangup = NULL; /* then a write's EPIPE, or --timeout, ends it */
        }
    }
    for (;;) {
        size_t end = take_batch(cl, &closing);
        if (cl->n == 0) {
            cl->in.start = end; /* empty requests, skipped */
            /* A chunk at a time: what is read beyond one request waits in
             * the buffer, which the query limit so bounds. */
            ssize_t r = buf_fill(&cl->in, cl->fd, IO_CHUNK);
            if (r > 0)
                continue;
            if (r == 0 && cl->in.end > cl->in.start) { /* gone mid-request */
                static const char cut[] = "-ERR Protocol error: unexpected end of request\r\n";
                eco_write_full(cl->fd, cut, sizeof cut - 1);
                close_gently(cl->fd);
            }
            break;
        }
        if (run_batch(cl) != 0 || cl->dead)
            break;
        size_t len = cl->out.end - cl->out.start;
        if (len > 0 && eco_write_full(cl->fd, cl->out.data + cl->out.start, len) != (ssize_t)len)
            break;
        if (closing) {
            close_gently(cl->fd);
            break;
        }
        cl->in.start = end;
        if (cl->in.start == cl->in.end)
            buf_clear(&cl->in);
        buf_clear(&cl->out);
        buf_clear(&cl->conv);
        for (int b = 0; b < nbackends; b++)
            buf_clear(&cl->held[b]);
        cl->held_bytes = 0;
    }
    client_end(cl);
    return NULL;
}

/* ---- accepting ---- */

static int local_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
        return -1;
    return ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                          : ((struct sockaddr_in *)&ss)->sin_port);
}

/* Dials every backend connection, then accepts clients for ever. */
static void *proxy_main(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    accept_guard_init(&guard, "redis_proxy");
    first_dials_left = nbackends * conns_per_backend;
    for (int b = 0; b < nbackends; b++)
        for (int i = 0; i < conns_per_backend; i++)
            if (start_redial(&backends[b].conns[i]) != 0) {
                backends[b].conns[i].dialled = 1;
                first_dials_left--;
            }
    while (first_dials_left > 0) /* tried once each, with the timeout */
        if (eco_chan_recv(first_dials_done, NULL) < 0)
            eco_sleep(10);
    printf("redis_proxy: listening on port %d, %d backend(s), %d connection(s) each\n",
           local_port(lfd), nbackends, conns_per_backend);
    fflush(stdout);
    for (unsigned next_id = 0;; next_id++) {
        int fd = eco_accept(lfd, NULL, NULL);
        if (fd < 0) {
            if (accept_shortage(errno))
                accept_backoff(&guard, "accept", errno);
            else
                eco_sleep(10);
            continue;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct client *cl = calloc(1, sizeof *cl);
        if (cl == NULL || (cl->wake = eco_chan_new(0, 1)) == NULL) {
            free(cl);
            eco_close(fd);
            continue;
        }
        cl->fd = fd;
        cl->id = next_id;
        if (eco_go(client, cl) != 0) {
            client_free(cl);
            eco_close(fd);
        }
    }
    return NULL;
}

/* ---- setup ---- */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: redis_proxy --listen PORT --backend HOST:PORT [--backend ...] [--conns K]\n"
            "                   [--timeout MS] [--client-output-limit BYTES]\n"
            "                   [--client-query-limit BYTES]\n"
            "  Forwards Redis (RESP) requests to the backends, keys spread by hash,\n"
            "  over K shared connections per backend (default 1), with pipelining.\n"
            "  Commands that would change a shared connection's state or replies,\n"
            "  or block it, are refused (see the README).\n"
            "  --listen PORT               port to listen on (0: any free port)\n"
            "  --bind ADDR                 address to listen on (default 127.0.0.1)\n"
            "  --timeout MS                backend connect, write and reply timeout\n"
            "                              (default 5000; 0: none)\n"
            "  --client-output-limit BYTES replies held for a client that does not\n"
            "                              read (default 4mb; 0: no limit)\n"
            "  --client-query-limit BYTES  largest request (default 4mb; 0: no limit)\n"
            "  BYTES may end in k, kb, m, mb, g or gb (powers of 1024).\n");
}

static int bad(const char *what)
{
    fprintf(stderr, "redis_proxy: %s\n", what);
    usage(stderr);
    return 2;
}

static int add_backend(const char *spec)
{
    char host[256];
    const char *port;
    if (nbackends == MAX_BACKENDS || backend_split(spec, host, sizeof host, &port) != NULL)
        return -1;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    struct backend *be = &backends[nbackends];
    if (eco_getaddrinfo(host, port, &hints, &be->ai) != 0)
        return -1;
    be->name = spec;
    nbackends++;
    return 0;
}

/* "4194304", "4mb", "512k"...; 0 means no limit.  -1 if malformed. */
static int parse_bytes(const char *s, size_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (end == s || s[0] == '-' || s[0] == '+' || errno != 0)
        return -1;
    unsigned shift = 0;
    if (strcasecmp(end, "k") == 0 || strcasecmp(end, "kb") == 0)
        shift = 10;
    else if (strcasecmp(end, "m") == 0 || strcasecmp(end, "mb") == 0)
        shift = 20;
    else if (strcasecmp(end, "g") == 0 || strcasecmp(end, "gb") == 0)
        shift = 30;
    else if (*end != '\0')
        return -1;
    if (v > (SIZE_MAX >> 2) >> shift)
        return -1;
    *out = v == 0 ? SIZE_MAX : (size_t)(v << shift);
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"conns", required_argument, NULL, 'k'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"timeout", required_argument, NULL, 't'},
                                         {"client-output-limit", required_argument, NULL, 'o'},
                                         {"client-query-limit", required_argument, NULL, 'q'},
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
    while ((c = getopt_long(argc, argv, "l:B:k:b:t:o:q:h", opts, NULL)) != -1) {
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
        case 't':
            timeout_ms = strtol(optarg, &end, 10);
            if (*end != '\0' || end == optarg || timeout_ms < 0 || timeout_ms > 86400000)
                return bad("--timeout must be a number of milliseconds from 0 to 86400000");
            break;
        case 'o':
            if (parse_bytes(optarg, &output_limit) != 0)
                return bad("--client-output-limit must be a number of bytes");
            break;
        case 'q':
            if (parse_bytes(optarg, &query_limit) != 0)
                return bad("--client-query-limit must be a number of bytes");
            break;
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
    rules_index();
    first_dials_done = eco_chan_new(0, 1);
    if (first_dials_done == NULL) {
        perror("redis_proxy");
        return 1;
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
    struct event *dump = dump_on_quit("redis_proxy");
    eco_go(proxy_main, (void *)(intptr_t)lfd);
    eco_loop();
    if (dump != NULL)
        event_free(dump);
    eco_teardown();
    return 0;
}
