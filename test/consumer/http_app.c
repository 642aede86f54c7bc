/* A libevent program with its own evhttp server that adds one coroutine:
 * it links only if its PkgConfig::LIBEVENT kept libevent_extra. */
#include <eco.h>
#include <event2/event.h>
#include <event2/http.h>
#include <stdio.h>

static int slept;

static void *nap(void *arg)
{
    (void)arg;
    slept = eco_sleep(1) == 0;
    return NULL;
}

int main(void)
{
    struct event_base *base = event_base_new();
    struct evhttp *http = evhttp_new(base);
    if (base == NULL || http == NULL || eco_setup(base) != 0 || eco_go(nap, NULL) != 0)
        return 1;
    event_base_dispatch(base);
    eco_teardown();
    evhttp_free(http);
    event_base_free(base);
    printf("slept %d, libeco %u, eco.h %u\n", slept, eco_version(), ECO_VERSION_NUMBER);
    return slept && eco_version() == ECO_VERSION_NUMBER ? 0 : 1;
}
