/*
 * bev_echo.c - an echo server on bufferevents, written two ways:
 *   co  a coroutine per connection reads and writes its bufferevent with
 *       eco_bev_read / eco_bev_write;
 *   cb  the same server as a libevent user writes it with callbacks (the
 *       read callback moves the input to the output).
 * Both accept with an evconnlistener and make the same socket
 * bufferevents, so only the way of reading and writing differs.
 *
 *     bev_echo co|cb PORT
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eco.h"

static void *serve(void *arg)
{
    struct bufferevent *bev = arg;
    char buf[4096]; /* as in the libeco samples */
    ssize_t n;
    while ((n = eco_bev_read(bev, buf, sizeof buf)) > 0)
        if (eco_bev_write(bev, buf, (size_t)n) != n)
            break;
    bufferevent_free(bev);
    return NULL;
}

static void cb_read(struct bufferevent *bev, void *arg)
{
    (void)arg;
    evbuffer_add_buffer(bufferevent_get_output(bev), bufferevent_get_input(bev));
}

static void cb_event(struct bufferevent *bev, short what, void *arg)
{
    (void)arg;
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR))
        bufferevent_free(bev);
}

static int coroutines;

static void on_accept(struct evconnlistener *l, evutil_socket_t fd, struct sockaddr *sa, int len,
                      void *arg)
{
    (void)l;
    (void)sa;
    (void)len;
    (void)arg;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    struct bufferevent *bev = bufferevent_socket_new(eco_base(), fd, BEV_OPT_CLOSE_ON_FREE);
    if (bev == NULL)
        return;
    if (coroutines) {
        if (eco_go(serve, bev) != 0)
            bufferevent_free(bev);
    } else {
        bufferevent_setcb(bev, cb_read, NULL, cb_event, NULL);
        bufferevent_enable(bev, EV_READ);
    }
}

int main(int argc, char **argv)
{
    if (argc != 3 || (strcmp(argv[1], "co") != 0 && strcmp(argv[1], "cb") != 0)) {
        fprintf(stderr, "usage: bev_echo co|cb PORT\n");
        return 2;
    }
    coroutines = strcmp(argv[1], "co") == 0;
    signal(SIGPIPE, SIG_IGN);
    if (eco_setup(NULL) != 0) {
        perror("eco_setup");
        return 1;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(argv[2])),
                             .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    struct evconnlistener *l =
        evconnlistener_new_bind(eco_base(), on_accept, NULL, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE,
                                4096, (struct sockaddr *)&sa, sizeof sa);
    if (l == NULL) {
        perror("bev_echo: listen");
        return 1;
    }
    printf("bev_echo %s: listening on port %s\n", argv[1], argv[2]);
    fflush(stdout);
    event_base_dispatch(eco_base());
    evconnlistener_free(l);
    eco_teardown();
    return 0;
}
