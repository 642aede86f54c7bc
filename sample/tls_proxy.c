/*
 * tls_proxy.c - terminates TLS and relays the plain bytes to a backend over
 * TCP: one bufferevent_openssl per client, read and written by coroutines
 * (eco_bev_*), one coroutine per direction.
 *
 *     tls_proxy --listen PORT --cert FILE --key FILE --backend HOST:PORT
 *               [--bind ADDR]
 *
 * The handshake runs first (bounded by 10 s); a client whose handshake
 * fails - plain text on the TLS port, a client that rejects our
 * certificate - gets one log line and is closed, and the proxy goes on
 * serving.  Then the backend is connected; one that refuses closes that
 * client.  When the client finishes sending (close_notify, or a TCP FIN
 * without one) the backend's socket is shut for writing, and when the
 * backend finishes, the proxy sends close_notify and shuts the client's
 * socket for writing: half-closes pass both ways (TLS 1.3 keeps reading
 * after close_notify was sent).  An error on one side cancels the other
 * direction.  kill -QUIT prints every coroutine and what it waits on.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <getopt.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "accept_util.h"
#include "backend_arg.h"
#include "dump_on_quit.h"
#include "eco.h"

static struct accept_guard guard;
static struct addrinfo *backend;
static SSL_CTX *ctx;

/* One client: its TLS bufferevent, the backend's fd, the two pumps. */
struct link {
    int cfd, bfd;
    SSL *ssl;
    struct bufferevent *bev;
    char peer[64];         /* the client's address, for the log */
    eco_t *pump[2];        /* client -> backend (the client coroutine), back */
    int running[2];
};

/* Client -> backend: TLS plaintext into the backend's socket. */
static int pump_up(struct link *l)
{
    char buf[16384]; /* a whole TLS record */
    ssize_t n;
    while ((n = eco_bev_read(l->bev, buf, sizeof buf)) > 0)
        if (eco_write_full(l->bfd, buf, (size_t)n) != n)
            return -1;
    if (n == 0)
        shutdown(l->bfd, SHUT_WR);
    return n == 0 ? 0 : -1;
}

/* Backend -> client; at the backend's end, close_notify and a FIN. */
static int pump_down(struct link *l)
{
    char buf[16384];
    ssize_t n;
    while ((n = eco_read(l->bfd, buf, sizeof buf)) > 0)
        if (eco_bev_write(l->bev, buf, (size_t)n) != n)
            return -1;
    if (n < 0 || eco_bev_flush(l->bev) != 0)
        return -1;
    /* The output is empty, so close_notify goes straight to the socket,
     * after everything else. */
    SSL_shutdown(l->ssl);
    shutdown(l->cfd, SHUT_WR);
    return 0;
}

static void pump(struct link *l, int dir)
{
    int r = dir == 0 ? pump_up(l) : pump_down(l);
    l->running[dir] = 0;
    if (r < 0 && errno != ECANCELED && l->running[!dir])
        eco_cancel(l->pump[!dir]);
}

static void *pump_back(void *arg)
{
    pump(arg, 1);
    return NULL;
}

/* The handshake's failure in words: OpenSSL's first error, else errno's. */
static void log_handshake_failure(struct link *l, int err)
{
    unsigned long e, first = 0;
    while ((e = bufferevent_get_openssl_error(l->bev)) != 0)
        if (first == 0)
            first = e;
    char why[256];
    if (first != 0)
        ERR_error_string_n(first, why, sizeof why);
    else
        snprintf(why, sizeof why, "%s", strerror(err));
    fprintf(stderr, "tls_proxy: client %s: TLS handshake failed: %s\n", l->peer, why);
}

/* The handshake, then the backend.  0, or -1 said in the log. */
static int link_up(struct link *l)
{
    struct timeval limit = {10, 0};
    bufferevent_set_timeouts(l->bev, &limit, &limit);
    if (eco_bev_wait_connected(l->bev) != 0) {
        log_handshake_failure(l, errno);
        return -1;
    }
    bufferevent_set_timeouts(l->bev, NULL, NULL);
    if (eco_connect(l->bfd, backend->ai_addr, backend->ai_addrlen) != 0) {
        fprintf(stderr, "tls_proxy: client %s: backend: %s\n", l->peer, strerror(errno));
        return -1;
    }
    int one = 1;
    setsockopt(l->bfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

static void *client(void *arg)
{
    struct link *l = arg;
    if (link_up(l) == 0) {
        l->pump[0] = eco_self();
        l->pump[1] = eco_create(pump_back, l, NULL);
        if (l->pump[1] == NULL) {
            perror("eco_create");
        } else {
            l->running[0] = l->running[1] = 1;
            eco_resume(l->pump[1]); /* backend -> client, beside us */
            pump(l, 0);             /* client -> backend, here */
            eco_uncancel();         /* the other way may have cancelled us */
            eco_join(l->pump[1], NULL);
        }
    }
    bufferevent_free(l->bev); /* without BEV_OPT_CLOSE_ON_FREE: ours to close */
    SSL_free(l->ssl);
    eco_close(l->bfd);
    eco_close(l->cfd);
    free(l);
    accept_guard_closed(&guard);
    return NULL;
}

static void describe(const struct sockaddr_storage *ss, char *out, size_t n)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        port = ntohs(a->sin6_port);
    }
    snprintf(out, n, "%s:%d", host, port);
}

/* A new client's link, its bufferevent starting the server handshake. */
static struct link *link_new(int fd, int bfd, const struct sockaddr_storage *ss)
{
    struct link *l = calloc(1, sizeof *l);
    if (l == NULL)
        return NULL;
    l->cfd = fd;
    l->bfd = bfd;
    describe(ss, l->peer, sizeof l->peer);
    l->ssl = SSL_new(ctx);
    if (l->ssl != NULL)
        l->bev = bufferevent_openssl_socket_new(eco_base(), fd, l->ssl,
                                                BUFFEREVENT_SSL_ACCEPTING, 0);
    if (l->bev == NULL) {
        SSL_free(l->ssl);
        free(l);
        return NULL;
    }
    /* A client that ends with a FIN and no close_notify has still ended:
     * its data is all there, TLS 1.3 truncation is the client's to mind. */
    bufferevent_openssl_set_allow_dirty_shutdown(l->bev, 1);
    return l;
}

static void *accept_loop(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    accept_guard_init(&guard, "tls_proxy");
    for (;;) {
        int bfd = eco_socket(backend->ai_family, SOCK_STREAM, 0);
        if (bfd < 0) {
            if (accept_shortage(errno)) {
                accept_backoff(&guard, "socket", errno);
                continue;
            }
            perror("tls_proxy: socket");
            break;
        }
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        int fd = eco_accept(lfd, (struct sockaddr *)&ss, &sl);
        if (fd < 0) {
            int err = errno;
            eco_close(bfd);
            if (accept_shortage(err)) {
                accept_backoff(&guard, "accept", err);
                continue;
            }
            fprintf(stderr, "tls_proxy: accept: %s\n", strerror(err));
            break;
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct link *c = link_new(fd, bfd, &ss);
        if (c == NULL || eco_go(client, c) != 0) {
            int err = c == NULL ? ENOMEM : errno;
            if (c != NULL) {
                bufferevent_free(c->bev);
                SSL_free(c->ssl);
                free(c);
            }
            eco_close(fd);
            eco_close(bfd);
            accept_backoff(&guard, "eco_go", err);
        }
    }
    eco_close(lfd);
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out, "usage: tls_proxy --listen PORT --cert FILE --key FILE --backend HOST:PORT\n"
                 "                 [--bind ADDR]\n"
                 "  Accepts TLS connections on PORT (certificate chain and key in PEM\n"
                 "  files) and relays the plain bytes of each to its own TCP\n"
                 "  connection to HOST:PORT, both ways, passing half-closes on.\n"
                 "  --bind ADDR  address to listen on (default 127.0.0.1)\n");
}

static int bad(const char *what)
{
    fprintf(stderr, "tls_proxy: %s\n", what);
    usage(stderr);
    return 2;
}

static SSL_CTX *make_ctx(const char *cert, const char *key)
{
    SSL_CTX *c = SSL_CTX_new(TLS_server_method());
    if (c == NULL || SSL_CTX_use_certificate_chain_file(c, cert) != 1 ||
        SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(c) != 1) {
        char why[256];
        ERR_error_string_n(ERR_get_error(), why, sizeof why);
        fprintf(stderr, "tls_proxy: certificate %s, key %s: %s\n", cert, key, why);
        SSL_CTX_free(c);
        return NULL;
    }
    SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
    return c;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {{"listen", required_argument, NULL, 'l'},
                                         {"backend", required_argument, NULL, 'B'},
                                         {"cert", required_argument, NULL, 'c'},
                                         {"key", required_argument, NULL, 'k'},
                                         {"bind", required_argument, NULL, 'b'},
                                         {"help", no_argument, NULL, 'h'},
                                         {NULL, 0, NULL, 0}};
    const char *lport = NULL, *target = NULL, *bind_addr = "127.0.0.1";
    const char *cert = NULL, *key = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "l:B:c:k:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'l': lport = optarg; break;
        case 'B': target = optarg; break;
        case 'c': cert = optarg; break;
        case 'k': key = optarg; break;
        case 'b': bind_addr = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char *end;
    long lp = lport ? strtol(lport, &end, 10) : 0;
    if (lport == NULL || *end != '\0' || lp < 0 || lp > 65535)
        return bad("--listen must be a port number from 0 (any free port) to 65535");
    if (cert == NULL || key == NULL)
        return bad("--cert and --key are required");
    char host[256];
    const char *bport;
    const char *why = optind != argc ? "--backend must be HOST:PORT"
                                     : backend_split(target, host, sizeof host, &bport);
    if (why != NULL)
        return bad(why);
    ctx = make_ctx(cert, key);
    if (ctx == NULL)
        return 1;
    if (eco_setup(NULL) != 0) { /* first: eco_getaddrinfo needs it */
        perror("eco_setup");
        return 1;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = eco_getaddrinfo(host, bport, &hints, &backend);
    if (rc != 0) {
        fprintf(stderr, "tls_proxy: backend %s: %s\n", target, gai_strerror(rc));
        return 2;
    }
    struct addrinfo lh = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                          .ai_flags = AI_PASSIVE | AI_NUMERICSERV};
    struct addrinfo *la;
    rc = getaddrinfo(bind_addr, lport, &lh, &la);
    if (rc != 0) {
        fprintf(stderr, "tls_proxy: %s: %s\n", bind_addr, gai_strerror(rc));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN); /* SSL_write on a reset socket */
    int lfd = eco_socket(la->ai_family, SOCK_STREAM, 0);
    int one = 1;
    if (lfd < 0 || setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
        bind(lfd, la->ai_addr, la->ai_addrlen) != 0 || listen(lfd, 4096) != 0) {
        fprintf(stderr, "tls_proxy: listen on %s port %s: %s\n", bind_addr, lport,
                strerror(errno));
        return 1;
    }
    freeaddrinfo(la);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(lfd, (struct sockaddr *)&ss, &sl);
    int actual = ntohs(ss.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&ss)->sin6_port
                                                : ((struct sockaddr_in *)&ss)->sin_port);
    struct event *dump = dump_on_quit("tls_proxy"); /* before anyone can send SIGQUIT */
    printf("tls_proxy: listening on %s port %d, relaying to %s\n", bind_addr, actual, target);
    fflush(stdout);
    eco_go(accept_loop, (void *)(intptr_t)lfd);
    eco_loop();
    if (dump != NULL)
        event_free(dump);
    eco_teardown();
    eco_freeaddrinfo(backend);
    SSL_CTX_free(ctx);
    return 0;
}
