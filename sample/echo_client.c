/*
 * echo_client.c - drives an echo server and checks every byte.
 *
 *     echo_client --port N [--host ADDR] --conns C --seconds S --size B
 *
 * C coroutines each open a connection and, until S seconds have passed,
 * send B bytes and read the B bytes back, comparing them with what was
 * sent.  Prints round trips per second; exits 1 on any mismatch or error.
 */
#define _GNU_SOURCE
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
#include <time.h>

#include "eco.h"

static struct addrinfo *server;
static size_t msg_size;
static volatile int stopping;
static unsigned long round_trips, failures;

static void *conn_loop(void *arg)
{
    unsigned seed = (unsigned)(uintptr_t)arg;
    unsigned char *out = malloc(msg_size), *in = malloc(msg_size);
    int fd = eco_socket(server->ai_family, SOCK_STREAM, 0);
    if (out == NULL || in == NULL || fd < 0 ||
        eco_connect(fd, server->ai_addr, server->ai_addrlen) != 0) {
        fprintf(stderr, "echo_client: connect: %s\n", strerror(errno));
        failures++;
        goto done;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (unsigned long r = 0; !stopping; r++) {
        for (size_t i = 0; i < msg_size; i++)
            out[i] = (unsigned char)(seed * 31 + r * 7 + i);
        if (eco_write_full(fd, out, msg_size) != (ssize_t)msg_size ||
            eco_read_full(fd, in, msg_size) != (ssize_t)msg_size) {
            fprintf(stderr, "echo_client: connection %u: %s\n", seed,
                    errno ? strerror(errno) : "closed by the server");
            failures++;
            break;
        }
        if (memcmp(in, out, msg_size) != 0) {
            fprintf(stderr, "echo_client: connection %u: reply differs from request\n", seed);
            failures++;
            break;
        }
        round_trips++;
    }
done:
    if (fd >= 0)
        eco_close(fd);
    free(out);
    free(in);
    return NULL;
}

static void *timer(void *arg)
{
    eco_sleep((long)(intptr_t)arg);
    stopping = 1;
    return NULL;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: echo_client --port N [--host ADDR] --conns C --seconds S --size B\n"
            "  Ping-pongs B-byte messages on C connections for S seconds, verifying\n"
            "  every byte; prints round trips per second.\n"
            "  --host ADDR  server address (default 127.0.0.1)\n");
}

static long number(const char *name, const char *s, long lo, long hi)
{
    char *end;
    errno = 0;
    long v = s ? strtol(s, &end, 10) : 0;
    if (s == NULL || *end != '\0' || errno != 0 || v < lo || v > hi) {
        fprintf(stderr, "echo_client: --%s must be a number from %ld to %ld\n", name, lo, hi);
        usage(stderr);
        exit(2);
    }
    return v;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"port", required_argument, NULL, 'p'},    {"host", required_argument, NULL, 'H'},
        {"conns", required_argument, NULL, 'c'},   {"seconds", required_argument, NULL, 's'},
        {"size", required_argument, NULL, 'b'},    {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *port = NULL, *host = "127.0.0.1", *conns = NULL, *secs = NULL, *size = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "p:H:c:s:b:h", opts, NULL)) != -1) {
        switch (c) {
        case 'p': port = optarg; break;
        case 'H': host = optarg; break;
        case 'c': conns = optarg; break;
        case 's': secs = optarg; break;
        case 'b': size = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc) {
        usage(stderr);
        return 2;
    }
    number("port", port, 1, 65535);
    long nconns = number("conns", conns, 1, 100000);
    long seconds = number("seconds", secs, 1, 86400);
    msg_size = (size_t)number("size", size, 1, 1 << 24);

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_NUMERICSERV};
    int rc = getaddrinfo(host, port, &hints, &server);
    if (rc != 0) {
        fprintf(stderr, "echo_client: %s: %s\n", host, gai_strerror(rc));
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    eco_go(timer, (void *)(intptr_t)(seconds * 1000));
    for (long i = 0; i < nconns; i++)
        if (eco_go(conn_loop, (void *)(uintptr_t)i) != 0) {
            perror("eco_go");
            return 1;
        }
    eco_loop();
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double el = (double)(t1.tv_sec - t0.tv_sec) + (double)(t1.tv_nsec - t0.tv_nsec) / 1e9;
    printf("echo_client: %lu round trips of %zu bytes on %ld connections in %.2f s: "
           "%.0f round trips/s, %lu failures\n",
           round_trips, msg_size, nconns, el, (double)round_trips / el, failures);
    eco_teardown();
    freeaddrinfo(server);
    return failures == 0 && round_trips > 0 ? 0 : 1;
}
