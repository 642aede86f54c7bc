/*
 * chan_bench.c - channel message costs, to set beside bench/go/chan.go.
 *
 *   chan_bench pingpong N   two coroutines of one thread bounce a value over
 *                           two unbuffered channels N times; ns per one-way
 *                           message
 *   chan_bench buffered N   producer -> consumer coroutines of one thread
 *                           over a channel of capacity 1024; ns per message
 *   chan_bench threads N    the same with producer and consumer coroutines in
 *                           two runtimes on two threads
 *
 * Prints the ns per message on one line (CPU ns with ECO_BENCH_CLOCK=cpu,
 * bench_core.h); exits nonzero if a value got lost.
 */
#define _GNU_SOURCE
#include "bench_core.h"

#include <eco.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static long n_msgs;
static eco_chan_t *ch_a, *ch_b;
static double elapsed;
static int64_t checksum;

static void *ping(void *arg)
{
    (void)arg;
    double t0 = bench_now_ns();
    for (int64_t i = 0; i < n_msgs; i++) {
        int64_t v = i;
        eco_chan_send(ch_a, &v);
        eco_chan_recv(ch_b, &v);
        checksum += v;
    }
    elapsed = bench_now_ns() - t0;
    eco_chan_close(ch_a);
    return NULL;
}

static void *pong(void *arg)
{
    (void)arg;
    int64_t v;
    while (eco_chan_recv(ch_a, &v) == 1)
        eco_chan_send(ch_b, &v);
    return NULL;
}

static void *produce(void *arg)
{
    (void)arg;
    for (int64_t i = 0; i < n_msgs; i++)
        eco_chan_send(ch_a, &i);
    eco_chan_close(ch_a);
    return NULL;
}

static void *consume(void *arg)
{
    (void)arg;
    int64_t v, sum = 0;
    while (eco_chan_recv(ch_a, &v) == 1)
        sum += v;
    checksum = sum;
    return NULL;
}

static pthread_barrier_t start;

static void *runtime_thread(void *arg)
{
    eco_setup(NULL);
    eco_go((eco_fn)arg, NULL);
    /* Both runtimes exist before either coroutine runs. */
    pthread_barrier_wait(&start);
    eco_loop();
    eco_teardown();
    return NULL;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s pingpong|buffered|threads N\n", argv[0]);
        return 2;
    }
    n_msgs = atol(argv[2]);
    int64_t expect = (int64_t)n_msgs * (n_msgs - 1) / 2;
    double per;
    if (strcmp(argv[1], "pingpong") == 0) {
        eco_setup(NULL);
        ch_a = eco_chan_new(sizeof(int64_t), 0);
        ch_b = eco_chan_new(sizeof(int64_t), 0);
        eco_go(pong, NULL);
        eco_go(ping, NULL);
        eco_loop();
        per = elapsed / (2.0 * (double)n_msgs);
    } else if (strcmp(argv[1], "buffered") == 0) {
        eco_setup(NULL);
        ch_a = eco_chan_new(sizeof(int64_t), 1024);
        double t0 = bench_now_ns();
        eco_go(consume, NULL);
        eco_go(produce, NULL);
        eco_loop();
        per = (bench_now_ns() - t0) / (double)n_msgs;
    } else if (strcmp(argv[1], "threads") == 0) {
        ch_a = eco_chan_new(sizeof(int64_t), 1024);
        pthread_t p, c;
        pthread_barrier_init(&start, NULL, 3);
        pthread_create(&c, NULL, runtime_thread, (void *)consume);
        pthread_create(&p, NULL, runtime_thread, (void *)produce);
        pthread_barrier_wait(&start);
        double t0 = bench_now_ns();
        pthread_join(p, NULL);
        pthread_join(c, NULL);
        per = (bench_now_ns() - t0) / (double)n_msgs;
    } else {
        fprintf(stderr, "unknown mode %s\n", argv[1]);
        return 2;
    }
    if (checksum != expect) {
        fprintf(stderr, "checksum %lld, expected %lld\n", (long long)checksum, (long long)expect);
        return 1;
    }
    printf("%.2f\n", per);
    return 0;
}
