/*
 * eco_dump.c - what a program can see of its coroutines: eco_foreach and
 * eco_dump (every coroutine, what it waits on, since when, how deep its
 * stack went) and the hog watchdog.
 *
 * The watchdog is one thread for the process, running while some runtime
 * has a hog limit.  It samples each watched runtime's running coroutine
 * and resume counter (rt->resumes, which every resume counts anyway): the
 * same coroutine with the same count for longer than the limit has run
 * all that time without parking or yielding.  A thread rather than a timer
 * signal: a signal would have to be taken from the program, and would
 * interrupt system calls of the very loop it watches.  The samples are
 * racy by design (a word that may be stale by one switch); the report
 * reads the coroutine's name and id while it hogs, when they cannot
 * change.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- eco_foreach and eco_dump ---- */

/* The facts of one coroutine. */
static void info_of(const eco_t *co, int64_t now, eco_info_t *in)
{
    memset(in, 0, sizeof *in);
    in->id = co->id;
    in->name = co->name;
    in->state = eco_state(co);
    in->waited_ms = -1;
    in->deadline_ms = (co->stop & ECO_STOP_DEADLINE) ? eco__ms_left(co->deadline) : -1;
    in->cancelled = (co->stop & ECO_STOP_CANCEL) != 0;
    in->stack_size = co->stack_size;
    in->stack_used = eco__stack_used(co);
    if (co->state == ECO_S_PARKED && co->wake == ECO_WAKE_NONE && co->wait != NULL) {
        const struct eco_wait *w = co->wait;
        w->ops->describe(w, in->wait, sizeof in->wait);
        int64_t d = now - w->since;
        in->waited_ms = d > 0 ? (long)(d / 1000000) : 0;
    } else if (co->state == ECO_S_PARKED) {
        snprintf(in->wait, sizeof in->wait, "runnable");
    }
}

int eco_foreach(eco_visit_fn fn, void *arg)
{
    struct eco_rt *rt = eco__rt;
    if (fn == NULL) {
        errno = EINVAL;
        return -1;
    }
    if (rt == NULL)
        return eco__eperm();
    int64_t now = eco__coarse_ns();
    int n = 0;
    for (const eco_t *co = rt->all; co != NULL; co = co->all_next) {
        eco_info_t in;
        info_of(co, now, &in);
        n++;
        if (fn(&in, arg) != 0)
            break;
    }
    return n;
}

static const char *state_word(const eco_info_t *in)
{
    switch (in->state) {
    case ECO_INIT:
        return "init";
    case ECO_ACTIVE:
        return "running";
    case ECO_STACKED:
        return "stacked";
    case ECO_DONE:
        return "done";
    case ECO_PENDING:
        break;
    }
    if (strcmp(in->wait, "runnable") == 0)
        return "runnable";
    return in->wait[0] != '\0' ? "waiting" : "yielded";
}

struct dump {
    int fd;
    int err;
};

/* write(2) all of buf; 0, or -1 with errno. */
static int write_all(int fd, const char *buf, size_t n)
{
    while (n > 0) {
        ssize_t k = write(fd, buf, n);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -1;
        buf += k;
        n -= (size_t)k;
    }
    return 0;
}

static int dump_one(const eco_info_t *in, void *arg)
{
    struct dump *d = arg;
    char line[256];
    int len = snprintf(line, sizeof line,
                       "#%lu name=%s state=%s wait=\"%s\" waited_ms=%ld stack_kib=%zu "
                       "deadline_ms=%ld cancelled=%d\n",
                       in->id, in->name[0] != '\0' ? in->name : "-", state_word(in),
                       strcmp(in->wait, "runnable") == 0 ? "" : in->wait, in->waited_ms,
                       (in->stack_used + 1023) / 1024, in->deadline_ms, in->cancelled);
    if (len < 0 || (size_t)len >= sizeof line)
        len = (int)sizeof line - 1;
    if (write_all(d->fd, line, (size_t)len) != 0) {
        d->err = errno;
        return 1;
    }
    return 0;
}

int eco_dump(int fd)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    char head[96];
    int len = snprintf(head, sizeof head, "eco: %zu coroutines alive\n", rt->alive);
    if (write_all(fd, head, (size_t)len) != 0)
        return -1;
    struct dump d = {.fd = fd, .err = 0};
    int n = eco_foreach(dump_one, &d);
    if (d.err != 0) {
        errno = d.err;
        return -1;
    }
    return n;
}

/* ---- the hog watchdog ---- */

#if defined(ECO_WITH_TSAN)
/* The samples race with the switch by design. */
void AnnotateIgnoreReadsBegin(const char *file, int line);
void AnnotateIgnoreReadsEnd(const char *file, int line);
#define RACY_BEGIN() AnnotateIgnoreReadsBegin(__FILE__, __LINE__)
#define RACY_END() AnnotateIgnoreReadsEnd(__FILE__, __LINE__)
#else
#define RACY_BEGIN() ((void)0)
#define RACY_END() ((void)0)
#endif

static pthread_mutex_t hog_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hog_cond = PTHREAD_COND_INITIALIZER;
static struct eco_rt *hog_list; /* watched runtimes, under hog_lock */
static int hog_running;         /* the thread exists */
static pthread_t hog_thread;

static void hog_report(const eco_t *co, long ms)
{
    char msg[128 + ECO_NAME_MAX];
    int n;
    if (co->name[0] != '\0')
        n = snprintf(msg, sizeof msg, "eco: coroutine %s #%lu has run %ld ms without yielding\n",
                     co->name, co->id, ms);
    else
        n = snprintf(msg, sizeof msg, "eco: coroutine #%lu has run %ld ms without yielding\n",
                     co->id, ms);
    if (n > 0)
        (void)write_all(STDERR_FILENO, msg, (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1);
}

/* One look at rt, now (ns). */
static void hog_sample(struct eco_rt *rt, int64_t now)
{
    RACY_BEGIN();
    eco_t *cur = __atomic_load_n(&rt->current, __ATOMIC_RELAXED);
    unsigned long seq = __atomic_load_n(&rt->resumes, __ATOMIC_RELAXED);
    if (cur == &rt->main || cur != rt->hog_co || seq != rt->hog_seq) {
        /* Back in the loop, or another run began: a new episode. */
        rt->hog_co = cur == &rt->main ? NULL : cur;
        rt->hog_seq = seq;
        rt->hog_since = now;
        rt->hog_told = 0;
    } else if (!rt->hog_told && now - rt->hog_since >= (int64_t)rt->hog_ms * 1000000) {
        hog_report(cur, (long)((now - rt->hog_since) / 1000000));
        rt->hog_told = 1;
    }
    RACY_END();
}

static void *hog_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&hog_lock);
    while (hog_list != NULL) {
        long tick = 1000;
        int64_t now = eco__now_ns();
        for (struct eco_rt *rt = hog_list; rt != NULL; rt = rt->hog_next) {
            hog_sample(rt, now);
            /* A quarter of the limit: reported within 1.25 limits. */
            if (rt->hog_ms / 4 < tick)
                tick = rt->hog_ms / 4 > 0 ? rt->hog_ms / 4 : 1;
        }
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += tick / 1000;
        until.tv_nsec += (tick % 1000) * 1000000;
        if (until.tv_nsec >= 1000000000) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000;
        }
        pthread_cond_timedwait(&hog_cond, &hog_lock, &until);
    }
    hog_running = 0;
    pthread_mutex_unlock(&hog_lock);
    return NULL;
}

/* Takes rt off the list; under hog_lock. */
static void hog_unlink(struct eco_rt *rt)
{
    for (struct eco_rt **p = &hog_list; *p != NULL; p = &(*p)->hog_next) {
        if (*p == rt) {
            *p = rt->hog_next;
            break;
        }
    }
    rt->hog_next = NULL;
    rt->hog_ms = 0;
}

int eco_set_hog_limit(long ms)
{
    struct eco_rt *rt = eco__rt;
    if (rt == NULL)
        return eco__eperm();
    pthread_mutex_lock(&hog_lock);
    int was = rt->hog_ms > 0;
    if (ms <= 0) {
        if (was)
            hog_unlink(rt);
    } else {
        rt->hog_ms = ms;
        rt->hog_co = NULL;
        if (!was) {
            rt->hog_next = hog_list;
            hog_list = rt;
        }
    }
    /* A thread that found the list empty has cleared hog_running under the
     * lock on its way out; one still sleeping is woken below. */
    if (hog_list != NULL && !hog_running) {
        pthread_attr_t a;
        pthread_attr_init(&a);
        pthread_attr_setdetachstate(&a, PTHREAD_CREATE_DETACHED);
        int e = pthread_create(&hog_thread, &a, hog_main, NULL);
        pthread_attr_destroy(&a);
        if (e != 0) {
            hog_unlink(rt);
            pthread_mutex_unlock(&hog_lock);
            errno = e;
            return -1;
        }
        hog_running = 1;
    }
    pthread_cond_signal(&hog_cond);
    pthread_mutex_unlock(&hog_lock);
    return 0;
}

void eco__hog_forget(struct eco_rt *rt)
{
    pthread_mutex_lock(&hog_lock);
    if (rt->hog_ms > 0)
        hog_unlink(rt);
    pthread_cond_signal(&hog_cond);
    pthread_mutex_unlock(&hog_lock);
}
