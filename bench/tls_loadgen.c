/*
 * tls_loadgen.c - TLS load for bench/run_tls.sh: closed-loop clients over
 * TLS 1.3, offering one cipher suite (TLS_AES_128_GCM_SHA256), every byte
 * echoed back checked.  Coroutines of libeco with OpenSSL on nonblocking
 * sockets (eco_poll for the waits), one thread: every server compared is
 * driven the same way.
 *
 *     tls_loadgen PORT CONNS SECONDS rt|conn [SIZE]
 *
 *   rt    CONNS keep-alive connections, each sending SIZE (default 1024)
 *         bytes and waiting for them to come back, again and again;
 *         prints "round_trips_per_s=R trips=T seconds=S errors=E".
 *   conn  CONNS clients, each in a loop: connect, full handshake (no
 *         resumption), one SIZE-byte round trip, close_notify, close;
 *         prints "conns_per_s=R conns=T seconds=S errors=E".
 *   probe exits 0 once a TCP connect to PORT succeeds (within 5 s).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eco.h"

static struct sockaddr_in target;
static SSL_CTX *ctx;
static size_t size = 1024;
static int64_t end_ns;
static unsigned long trips, errors;

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Runs an SSL call until it completes, parking on the fd as OpenSSL asks.
 * Returns its positive result, or 0/-1 at end or on errors. */
static int ssl_do(SSL *ssl, int fd, int (*op)(SSL *, void *, int), void *buf, int n)
{
    for (;;) {
        int r = op(ssl, buf, n);
        if (r > 0)
            return r;
        struct pollfd p = {.fd = fd, .events = 0};
        switch (SSL_get_error(ssl, r)) {
        case SSL_ERROR_WANT_READ: p.events = POLLIN; break;
        case SSL_ERROR_WANT_WRITE: p.events = POLLOUT; break;
        case SSL_ERROR_ZERO_RETURN: return 0;
        default: return -1;
        }
        if (eco_poll(&p, 1, -1) < 0)
            return -1;
    }
}

static int op_read(SSL *s, void *b, int n) { return SSL_read(s, b, n); }
static int op_write(SSL *s, void *b, int n) { return SSL_write(s, b, n); }
static int op_handshake(SSL *s, void *b, int n)
{
    (void)b;
    (void)n;
    return SSL_connect(s);
}

/* A connected, handshaken client, or NULL. */
static SSL *open_one(int *fdp)
{
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return NULL;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    SSL *ssl = NULL;
    if (eco_connect(fd, (struct sockaddr *)&target, sizeof target) == 0 &&
        (ssl = SSL_new(ctx)) != NULL && SSL_set_fd(ssl, fd) == 1 &&
        ssl_do(ssl, fd, op_handshake, NULL, 0) == 1) {
        *fdp = fd;
        return ssl;
    }
    SSL_free(ssl);
    eco_close(fd);
    return NULL;
}

/* One round trip of size bytes, checked.  0, or -1. */
static int round_trip(SSL *ssl, int fd, unsigned char *out, unsigned char *in, uint64_t seq)
{
    for (size_t i = 0; i < size; i++)
        out[i] = (unsigned char)(seq * 31 + i);
    if (ssl_do(ssl, fd, op_write, out, (int)size) != (int)size)
        return -1;
    for (size_t got = 0; got < size;) {
        int r = ssl_do(ssl, fd, op_read, in + got, (int)(size - got));
        if (r <= 0)
            return -1;
        got += (size_t)r;
    }
    return memcmp(in, out, size) == 0 ? 0 : -1;
}

static void *keep_alive(void *arg)
{
    (void)arg;
    unsigned char *out = malloc(size), *in = malloc(size);
    int fd;
    SSL *ssl = open_one(&fd);
    if (ssl == NULL) {
        errors++;
    } else {
        for (uint64_t seq = 0; now_ns() < end_ns; seq++) {
            if (round_trip(ssl, fd, out, in, seq) != 0) {
                errors++;
                break;
            }
            trips++;
        }
        SSL_free(ssl);
        eco_close(fd);
    }
    free(out);
    free(in);
    return NULL;
}

static void *new_conns(void *arg)
{
    (void)arg;
    unsigned char *out = malloc(size), *in = malloc(size);
    for (uint64_t seq = 0; now_ns() < end_ns; seq++) {
        int fd;
        SSL *ssl = open_one(&fd);
        if (ssl == NULL || round_trip(ssl, fd, out, in, seq) != 0) {
            errors++;
        } else {
            SSL_shutdown(ssl); /* our close_notify; not waiting for theirs */
            trips++;
        }
        SSL_free(ssl);
        if (ssl != NULL)
            eco_close(fd);
    }
    free(out);
    free(in);
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: tls_loadgen PORT CONNS SECONDS rt|conn|probe [SIZE]\n");
        return 2;
    }
    target.sin_family = AF_INET;
    target.sin_port = htons((uint16_t)atoi(argv[1]));
    target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int conns = atoi(argv[2]);
    double secs = atof(argv[3]);
    const char *mode = argv[4];
    if (argc > 5)
        size = (size_t)atol(argv[5]);
    signal(SIGPIPE, SIG_IGN);
    if (strcmp(mode, "probe") == 0) {
        for (int i = 0; i < 100; i++) {
            int fd = socket(AF_INET, SOCK_STREAM, 0);
            int ok = connect(fd, (struct sockaddr *)&target, sizeof target) == 0;
            close(fd);
            if (ok)
                return 0;
            usleep(50000);
        }
        return 1;
    }
    ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256");
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL); /* the bench's own certificate */
    if (eco_setup(NULL) != 0)
        return 1;
    eco_set_stack_size(64 * 1024);
    int rt = strcmp(mode, "rt") == 0;
    int64_t t0 = now_ns();
    end_ns = t0 + (int64_t)(secs * 1e9);
    for (int i = 0; i < conns; i++)
        eco_go(rt ? keep_alive : new_conns, NULL);
    eco_loop();
    double took = (double)(now_ns() - t0) / 1e9;
    if (rt)
        printf("round_trips_per_s=%.0f trips=%lu seconds=%.2f errors=%lu\n", (double)trips / took,
               trips, took, errors);
    else
        printf("conns_per_s=%.0f conns=%lu seconds=%.2f errors=%lu\n", (double)trips / took,
               trips, took, errors);
    eco_teardown();
    SSL_CTX_free(ctx);
    return errors == 0 ? 0 : 1;
}
