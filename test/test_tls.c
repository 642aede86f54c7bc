/* test_tls.c - sample/tls_proxy end to end: the test makes its
 * certificates with the openssl command line, runs a backend of its own
 * (coroutines in this process) and drives the proxy with `openssl
 * s_client` and with its own TLS client (bufferevent_openssl read and
 * written with eco_bev_*).  Every byte of 16 MiB each way, half-closes both
 * ways, handshake failures (a client that rejects the certificate, plain
 * text on the TLS port: one log line each, and the proxy keeps serving),
 * and a backend that refuses. */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_procs.h"
#include "test_util.h"

static int slow(void)
{
    const char *s = getenv("ECO_TEST_SLOW");
    return s != NULL && s[0] == '1';
}

static unsigned char pattern(size_t i)
{
    return (unsigned char)(i * 13 + (i >> 12));
}

/* ---- certificates, made once per run ---- */

static char dir[] = "/tmp/test_tls.XXXXXX";
static char cert[128], key[128], other_cert[128], other_key[128];

static void make_cert(const char *c, const char *k)
{
    char cmd[1024];
    snprintf(cmd, sizeof cmd,
             "openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
             "-keyout %s -out %s -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1 "
             ">/dev/null 2>&1",
             k, c);
    if (system(cmd) != 0) {
        fprintf(stderr, "test_tls: openssl could not make a certificate\n");
        exit(1);
    }
}

static void make_certs(void)
{
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        exit(1);
    }
    snprintf(cert, sizeof cert, "%s/cert.pem", dir);
    snprintf(key, sizeof key, "%s/key.pem", dir);
    snprintf(other_cert, sizeof other_cert, "%s/other.pem", dir);
    snprintf(other_key, sizeof other_key, "%s/other-key.pem", dir);
    make_cert(cert, key);
    make_cert(other_cert, other_key);
}

static void remove_certs(void)
{
    unlink(cert);
    unlink(key);
    unlink(other_cert);
    unlink(other_key);
    rmdir(dir);
}

/* ---- the backend: coroutines of this process ---- */

enum { ECHO, ECHO_THEN_CLOSE, GREET };
static int mode;
static size_t echo_limit;     /* ECHO_THEN_CLOSE: bytes echoed, then close */
static eco_chan_t *greet_got; /* GREET: what the backend read after its FIN */
static const char greeting[] = "hello from the backend\n";

static void *backend_conn(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[16384];
    ssize_t n;
    if (mode == GREET) {
        ck_assert_int_eq(eco_write_full(fd, greeting, strlen(greeting)),
                         (ssize_t)strlen(greeting));
        shutdown(fd, SHUT_WR);
        size_t got = 0;
        while ((n = eco_read(fd, buf, sizeof buf)) > 0)
            got += (size_t)n;
        eco_chan_send(greet_got, &got);
    } else {
        size_t done = 0;
        while ((mode == ECHO || done < echo_limit) &&
               (n = eco_read(fd, buf, sizeof buf)) > 0) {
            if (eco_write_full(fd, buf, (size_t)n) != n)
                break;
            done += (size_t)n;
        }
        shutdown(fd, SHUT_WR);
    }
    eco_close(fd);
    return NULL;
}

static void *backend_accept(void *arg)
{
    int lfd = (int)(intptr_t)arg;
    int fd;
    while ((fd = eco_accept(lfd, NULL, NULL)) >= 0)
        ck_assert_int_eq(eco_go(backend_conn, (void *)(intptr_t)fd), 0);
    return NULL;
}

/* ---- the proxy, started per test ---- */

static pid_t proxy = -1;
static int proxy_port, backend_lfd = -1;
static char errfile[] = "/tmp/test_tls_log.XXXXXX";
static char errpath[64];

static void start_proxy(int backend_port)
{
    char backend[64];
    snprintf(backend, sizeof backend, "127.0.0.1:%d", backend_port);
    snprintf(errpath, sizeof errpath, "%s", errfile);
    int efd = mkstemp(errpath);
    ck_assert_int_ge(efd, 0);
    close(efd);
    char *argv[] = {TLS_PROXY_BIN, "--listen", "0", "--cert", cert, "--key", key,
                    "--backend", backend, NULL};
    proxy = sample_start_ex(argv, &proxy_port, 0, errpath);
}

static void up(void)
{
    rt_up();
    signal(SIGPIPE, SIG_IGN);
    mode = ECHO;
    backend_lfd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof sa;
    ck_assert_int_eq(bind(backend_lfd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(backend_lfd, 64), 0);
    ck_assert_int_eq(getsockname(backend_lfd, (struct sockaddr *)&sa, &len), 0);
    ck_assert_int_eq(eco_go(backend_accept, (void *)(intptr_t)backend_lfd), 0);
    start_proxy(ntohs(sa.sin_port));
}

static void down(void)
{
    stop_pid(&proxy, SIGTERM);
    unlink(errpath);
    if (backend_lfd >= 0)
        eco_close(backend_lfd);
    backend_lfd = -1;
    rt_down();
}

/* Lines of the proxy's log that contain what, waiting up to 10 s for at
 * least `want` of them: the proxy is another process. */
static int log_lines(const char *what, int want)
{
    int n = 0;
    for (int tries = 0; tries < 1000; tries++) {
        char line[512];
        n = 0;
        FILE *f = fopen(errpath, "r");
        while (f != NULL && fgets(line, sizeof line, f) != NULL)
            n += strstr(line, what) != NULL;
        if (f != NULL)
            fclose(f);
        if (n >= want)
            break;
        eco_sleep(10);
    }
    return n;
}

/* ---- the test's own TLS client ---- */

struct client {
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    struct bufferevent *bev;
};

/* Connects and shakes hands, trusting ca.  0, or -1 with errno. */
static int client_open(struct client *c, const char *ca)
{
    memset(c, 0, sizeof *c);
    c->ctx = SSL_CTX_new(TLS_client_method());
    ck_assert_ptr_nonnull(c->ctx);
    ck_assert_int_eq(SSL_CTX_load_verify_locations(c->ctx, ca, NULL), 1);
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    c->fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(c->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    c->ssl = SSL_new(c->ctx);
    SSL_set_tlsext_host_name(c->ssl, "localhost");
    c->bev = bufferevent_openssl_socket_new(eco_base(), c->fd, c->ssl,
                                            BUFFEREVENT_SSL_CONNECTING, 0);
    ck_assert_ptr_nonnull(c->bev);
    bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
    return eco_bev_wait_connected(c->bev);
}

/* close_notify and a FIN: we send no more, and still read. */
static void client_half_close(struct client *c)
{
    ck_assert_int_eq(eco_bev_flush(c->bev), 0);
    SSL_shutdown(c->ssl);
    shutdown(c->fd, SHUT_WR);
}

static void client_close(struct client *c)
{
    bufferevent_free(c->bev);
    SSL_free(c->ssl);
    SSL_CTX_free(c->ctx);
    eco_close(c->fd);
}

struct stream {
    struct client *c;
    size_t size;
    size_t got;
    size_t bad;
};

static void *send_all(void *arg)
{
    struct stream *s = arg;
    unsigned char buf[16384];
    for (size_t off = 0; off < s->size;) {
        size_t n = s->size - off < sizeof buf ? s->size - off : sizeof buf;
        for (size_t i = 0; i < n; i++)
            buf[i] = pattern(off + i);
        ck_assert_int_eq(eco_bev_write(s->c->bev, buf, n), (ssize_t)n);
        off += n;
    }
    client_half_close(s->c);
    return NULL;
}

static void receive_all(struct stream *s)
{
    unsigned char buf[16384];
    ssize_t n;
    while ((n = eco_bev_read(s->c->bev, buf, sizeof buf)) > 0) {
        for (ssize_t i = 0; i < n; i++)
            s->bad += buf[i] != pattern(s->got + (size_t)i);
        s->got += (size_t)n;
    }
    ck_assert_int_eq(n, 0);
}

/* ---- tests ---- */

/* Each test runs in a coroutine: the calls park, the backend runs. */
static void in_coroutine(eco_fn fn)
{
    eco_t *co = eco_create(fn, NULL, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}

static void *own_client_every_byte_both_ways_body(void *arg)
{
    (void)arg;
    struct client c;
    ck_assert_int_eq(client_open(&c, cert), 0);
    struct stream s = {&c, slow() ? 1u << 20 : 16u << 20, 0, 0};
    /* One coroutine writes while this one reads the echo: both at once on
     * one bufferevent, and the client's half-close reaches the backend,
     * whose end comes back as close_notify. */
    eco_t *w = eco_create(send_all, &s, NULL);
    ck_assert_int_eq(eco_resume(w), 0);
    receive_all(&s);
    ck_assert_int_eq(eco_join(w, NULL), 0);
    ck_assert_uint_eq(s.got, s.size);
    ck_assert_uint_eq(s.bad, 0);
    client_close(&c);
    return NULL;
}

START_TEST(own_client_every_byte_both_ways)
{
    in_coroutine(own_client_every_byte_both_ways_body);
}
END_TEST

static void *half_close_from_the_backend_first_body(void *arg)
{
    (void)arg;
    mode = GREET;
    greet_got = eco_chan_new(sizeof(size_t), 1);
    struct client c;
    ck_assert_int_eq(client_open(&c, cert), 0);
    /* The backend's greeting, then its end... */
    char buf[64];
    ck_assert_int_eq(eco_bev_read_full(c.bev, buf, sizeof buf), (ssize_t)strlen(greeting));
    ck_assert_int_eq(memcmp(buf, greeting, strlen(greeting)), 0);
    ck_assert_int_eq(eco_bev_read(c.bev, buf, sizeof buf), 0);
    /* ...and we still send, and all of it arrives. */
    struct stream s = {&c, slow() ? 256u << 10 : 4u << 20, 0, 0};
    send_all(&s);
    size_t got = 0;
    ck_assert_int_eq(eco_chan_recv(greet_got, &got), 1);
    ck_assert_uint_eq(got, s.size);
    client_close(&c);
    eco_chan_free(greet_got);
    return NULL;
}

START_TEST(half_close_from_the_backend_first)
{
    in_coroutine(half_close_from_the_backend_first_body);
}
END_TEST

/* Runs argv with stdin from in and stdout to out (NULL: /dev/null);
 * returns its exit status.  The wait is in a pool thread: the backend
 * keeps running here. */
static void *wait_child(void *arg)
{
    int st = -1;
    waitpid((pid_t)(intptr_t)arg, &st, 0);
    return (void *)(intptr_t)st;
}

static int run_program(char *const argv[], const char *in, const char *out)
{
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
        int i = open(in != NULL ? in : "/dev/null", O_RDONLY);
        int o = open(out != NULL ? out : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0600);
        int e = open("/dev/null", O_WRONLY);
        dup2(i, 0);
        dup2(o, 1);
        dup2(e, 2);
        execvp(argv[0], argv);
        _exit(127);
    }
    void *st = NULL;
    ck_assert_int_eq(eco_run_blocking(wait_child, (void *)(intptr_t)pid, &st, NULL), 0);
    return (int)(intptr_t)st;
}

static char *s_client_argv(char *target, size_t n, const char *ca, char **argv)
{
    snprintf(target, n, "127.0.0.1:%d", proxy_port);
    char *a[] = {"openssl", "s_client", "-connect", target, "-quiet", "-verify_return_error",
                 "-servername", "localhost", "-CAfile", (char *)ca, NULL};
    memcpy(argv, a, sizeof a);
    return target;
}

static void *s_client_every_byte_body(void *arg)
{
    (void)arg;
    size_t size = slow() ? 256u << 10 : 4u << 20;
    mode = ECHO_THEN_CLOSE; /* s_client -quiet never ends by itself */
    echo_limit = size;
    char in[128], out[128], target[64], *argv[12];
    snprintf(in, sizeof in, "%s/in", dir);
    snprintf(out, sizeof out, "%s/out", dir);
    FILE *f = fopen(in, "w");
    for (size_t i = 0; i < size; i++)
        fputc(pattern(i), f);
    fclose(f);
    s_client_argv(target, sizeof target, cert, argv);
    int st = run_program(argv, in, out);
    ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "s_client status %d", st);
    f = fopen(out, "r");
    ck_assert_ptr_nonnull(f);
    size_t got = 0, bad = 0;
    int ch;
    while ((ch = fgetc(f)) != EOF)
        bad += (unsigned char)ch != pattern(got++);
    fclose(f);
    unlink(in);
    unlink(out);
    ck_assert_uint_eq(got, size);
    ck_assert_uint_eq(bad, 0);
    return NULL;
}

START_TEST(s_client_every_byte)
{
    in_coroutine(s_client_every_byte_body);
}
END_TEST

/* A short exchange that must work: the proxy is still serving. */
static void still_serving(void)
{
    struct client c;
    ck_assert_int_eq(client_open(&c, cert), 0);
    struct stream s = {&c, 1000, 0, 0};
    eco_t *w = eco_create(send_all, &s, NULL);
    ck_assert_int_eq(eco_resume(w), 0);
    receive_all(&s);
    ck_assert_int_eq(eco_join(w, NULL), 0);
    ck_assert_uint_eq(s.got, s.size);
    ck_assert_uint_eq(s.bad, 0);
    client_close(&c);
}

static void *client_rejects_the_certificate_body(void *arg)
{
    (void)arg;
    /* s_client trusting another CA aborts the handshake. */
    char target[64], *argv[12];
    s_client_argv(target, sizeof target, other_cert, argv);
    int st = run_program(argv, NULL, NULL);
    ck_assert(!(WIFEXITED(st) && WEXITSTATUS(st) == 0));
    ck_assert_int_eq(log_lines("TLS handshake failed", 1), 1);
    /* So does our own client. */
    struct client c;
    ck_assert_int_eq(client_open(&c, other_cert), -1);
    ck_assert_int_eq(errno, EPROTO);
    client_close(&c);
    ck_assert_int_eq(log_lines("TLS handshake failed", 2), 2);
    still_serving();
    ck_assert_int_eq(log_lines("TLS handshake failed", 2), 2);
    return NULL;
}

START_TEST(client_rejects_the_certificate)
{
    in_coroutine(client_rejects_the_certificate_body);
}
END_TEST

static void *plain_text_on_the_tls_port_body(void *arg)
{
    (void)arg;
    int fd = eco_socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)proxy_port),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    ck_assert_int_eq(eco_connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    static const char req[] = "GET / HTTP/1.0\r\nHost: localhost\r\n\r\n";
    ck_assert_int_eq(eco_write_full(fd, req, sizeof req - 1), (ssize_t)(sizeof req - 1));
    /* The proxy closes it (after an alert, perhaps). */
    char buf[512];
    ssize_t n;
    eco_fd_timeout(fd, ECO_RD, 10000);
    while ((n = eco_read(fd, buf, sizeof buf)) > 0)
        ;
    ck_assert(n == 0 || errno == ECONNRESET);
    eco_close(fd);
    ck_assert_int_eq(log_lines("TLS handshake failed", 1), 1);
    still_serving();
    ck_assert_int_eq(log_lines("TLS handshake failed", 1), 1);
    return NULL;
}

START_TEST(plain_text_on_the_tls_port)
{
    in_coroutine(plain_text_on_the_tls_port_body);
}
END_TEST

static void *refused_backend_closes_the_client_body(void *arg)
{
    (void)arg;
    stop_pid(&proxy, SIGTERM);
    unlink(errpath);
    start_proxy(free_port()); /* nobody listens there */
    for (int i = 0; i < 2; i++) {
        struct client c;
        ck_assert_int_eq(client_open(&c, cert), 0);
        char buf[16];
        eco_set_deadline(eco_self(), 10000);
        ssize_t n = eco_bev_read(c.bev, buf, sizeof buf);
        ck_assert_msg(n == 0 || (n < 0 && errno != ETIMEDOUT && errno != ECANCELED),
                      "read %zd errno %d", n, errno);
        eco_set_deadline(eco_self(), -1);
        client_close(&c);
        ck_assert_int_eq(log_lines("backend: Connection refused", i + 1), i + 1);
    }
    return NULL;
}

START_TEST(refused_backend_closes_the_client)
{
    in_coroutine(refused_backend_closes_the_client_body);
}
END_TEST

int main(void)
{
    need_program("openssl", "openssl");
    make_certs();
    Suite *s = suite_create("tls");
    TCase *tc = tcase_create("tls");
    tcase_add_checked_fixture(tc, up, down);
    tcase_set_timeout(tc, 300);
    tcase_add_test(tc, own_client_every_byte_both_ways);
    tcase_add_test(tc, half_close_from_the_backend_first);
    tcase_add_test(tc, s_client_every_byte);
    tcase_add_test(tc, client_rejects_the_certificate);
    tcase_add_test(tc, plain_text_on_the_tls_port);
    tcase_add_test(tc, refused_backend_closes_the_client);
    suite_add_tcase(s, tc);
    int rc = run_suite(s);
    remove_certs();
    return rc;
}
