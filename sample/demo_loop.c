/*
 * demo_loop.c - coroutines and plain libevent callbacks sharing one loop.
 *
 * A producer coroutine writes numbered lines into a pipe at its own pace; a
 * consumer coroutine reads them with eco_poll and a timeout; a plain
 * libevent timer callback ticks in between; main joins the consumer and
 * prints what happened, in order.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "eco.h"

static struct timespec t0;

static long elapsed_ms(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (t.tv_sec - t0.tv_sec) * 1000 + (t.tv_nsec - t0.tv_nsec) / 1000000;
}

static int fds[2];

static void *producer(void *arg)
{
    int n = (int)(intptr_t)arg;
    for (int i = 1; i <= n; i++) {
        char line[32];
        int len = snprintf(line, sizeof line, "message %d\n", i);
        eco_sleep(30); /* parks this coroutine only */
        if (write(fds[1], line, (size_t)len) != len)
            return NULL;
        printf("%4ld ms  producer: wrote \"message %d\"\n", elapsed_ms(), i);
    }
    close(fds[1]); /* the consumer sees end-of-file */
    return NULL;
}

static void *consumer(void *arg)
{
    (void)arg;
    long lines = 0;
    char buf[256];
    for (;;) {
        struct pollfd pfd = {.fd = fds[0], .events = POLLIN};
        int r = eco_poll(&pfd, 1, 20); /* one fd, one timeout */
        if (r == 0) {
            printf("%4ld ms  consumer: nothing within 20 ms, polling again\n", elapsed_ms());
            continue;
        }
        ssize_t n = read(fds[0], buf, sizeof buf - 1);
        if (n <= 0)
            break;
        buf[n] = '\0';
        for (char *p = buf; (p = strchr(p, '\n')) != NULL; p++)
            lines++;
        buf[strcspn(buf, "\n")] = '\0';
        printf("%4ld ms  consumer: read \"%s\"\n", elapsed_ms(), buf);
    }
    printf("%4ld ms  consumer: end of file after %ld lines\n", elapsed_ms(), lines);
    return (void *)(intptr_t)lines;
}

static void tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    int *ticks = arg;
    printf("%4ld ms  timer callback: tick %d (plain libevent)\n", elapsed_ms(), ++*ticks);
}

int main(void)
{
    clock_gettime(CLOCK_MONOTONIC, &t0);
    struct event_base *base = event_base_new();
    if (base == NULL || eco_setup(base) != 0 || pipe2(fds, O_NONBLOCK) != 0) {
        perror("setup");
        return 1;
    }
    int ticks = 0;
    struct event *timer = event_new(base, -1, EV_PERSIST, tick, &ticks);
    struct timeval every = {0, 45 * 1000};
    event_add(timer, &every);

    eco_go(producer, (void *)(intptr_t)4);
    eco_t *c = eco_create(consumer, NULL, NULL);
    eco_resume(c); /* runs until its first poll parks it */

    void *lines = NULL;
    if (eco_join(c, &lines) != 0) { /* runs the loop until c is done */
        perror("eco_join");
        return 1;
    }
    printf("%4ld ms  main: consumer returned %ld lines, timer ticked %d times\n", elapsed_ms(),
           (long)(intptr_t)lines, ticks);
    event_free(timer);
    close(fds[0]);
    eco_teardown();
    event_base_free(base);
    return (intptr_t)lines == 4 ? 0 : 1;
}
