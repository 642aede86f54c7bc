/*
 * eco_stack.c - coroutine stacks and records: arenas, guard regions, the
 * adaptive pool, and the stack-overflow report.
 *
 * Stacks are mapped many at a time.  An arena is one mapping of N slots of
 * one size (a class), the records of its slots packed at its start:
 *     [record 0 .. record N-1][guard 0][stack 0][guard 1][stack 1]...
 * each stack growing down towards its own guard region.  The kernel commits
 * pages only when touched, so a large stack costs address space, not memory.
 * A class's arenas grow geometrically (16 slots, then as many as the class
 * has, up to 1024 slots or 256 MiB), so a burst of 100,000 coroutines maps
 * about a hundred arenas, not 100,000 stacks.
 *
 * Records live apart from the stacks, a dozen to a page, rather than at the
 * top of each stack: a parked coroutine's deepest frames sit at least a user
 * buffer below its stack's top, so a record there put every wake-up on two
 * pages of its own; packed, a wake-up touches one page of its own (the deep
 * frames), which at a thousand connections is what decides TLB misses.  A
 * slot's record and stack stay together, free or not.
 *
 * Guard regions are installed with MADV_GUARD_INSTALL (Linux 6.13+), which
 * does not split the mapping, so an arena stays one VMA and vm.max_map_count
 * is no limit.  One process_madvise on PIDFD_SELF installs the guards of a
 * whole arena (up to UIO_MAXIOV = 1024 ranges per call); where that is
 * refused (no PIDFD_SELF before 6.15, Valgrind) one madvise per guard;
 * where guard regions are missing (EINVAL) or do nothing (qemu-user answers
 * 0 to madvise), mprotect(PROT_NONE) per guard, one extra VMA per stack:
 * about 32,000 stacks at the default vm.max_map_count.
 *
 * Handing a stack out and taking it back makes no system call.  A free slot
 * is warm (pooled, its pages kept) or cold (its pages given back with
 * MADV_DONTNEED, which leaves guard regions in place, its address space
 * still mapped).  eco__stack_get takes the warm stack freed last in the
 * arena that got a warm one last (its pages are committed and likely
 * cached), then a cold slot of the oldest arena (so that newer arenas empty
 * out), then a new arena, whose records and top pages populate commits in
 * one call.
 *
 * The pool follows demand: while there is something to give back, a timer
 * ticks every TICK_MS; the most stacks in use during each of the last
 * ECO_STK_WINDOWS ticks is the demand, and warm stacks beyond it are given
 * back (one madvise per run of neighbours), arenas left empty unmapped
 * whole.  A stack is so given back 1 to 1.25 s after it was last needed; a
 * tick gives back at most RELEASE_BUDGET stacks and leaves the rest to the
 * next turn of the loop, so a burst's aftermath does not stall it.
 */
#define _GNU_SOURCE
#include "eco_internal.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <ucontext.h>
#include <unistd.h>

#if defined(ECO_WITH_VALGRIND)
#include <valgrind/valgrind.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif
#ifndef PIDFD_SELF
#define PIDFD_SELF (-10000) /* linux/pidfd.h, 6.15+ */
#endif

#define GUARD_BYTES ((size_t)16 * 1024) /* at least one page; see guard_bytes */
#define COLORS 32                         /* stack-top offsets, in cache lines */
#define COLOR_SPAN ((size_t)(COLORS - 1) * 64)
#define ARENA_FIRST 16u                   /* slots of a class's first arena */
#define ARENA_MAX_SLOTS 1024u             /* UIO_MAXIOV: one process_madvise */
#define ARENA_MAX_BYTES ((size_t)256 << 20)
#define TICK_MS 250
#define ASYNC_UNMAP_SLOTS 65536 /* eco_teardown unmaps more in a thread */
#define RELEASE_BUDGET 2048 /* stacks given back per tick: 2-15 ms of kernel time */

_Static_assert(ARENA_MAX_SLOTS % 64 == 0, "release_warm's bitmap");

/* ---- intrusive lists ---- */

struct dl {
    struct dl *prev, *next;
};

static void dl_init(struct dl *h)
{
    h->prev = h->next = h;
}

static int dl_empty(const struct dl *h)
{
    return h->next == h;
}

/* Unlinks n; harmless on an unlinked (self-linked) node. */
static void dl_del(struct dl *n)
{
    n->prev->next = n->next;
    n->next->prev = n->prev;
    n->prev = n->next = n;
}

static void dl_insert(struct dl *n, struct dl *prev, struct dl *next)
{
    n->prev = prev;
    n->next = next;
    prev->next = n;
    next->prev = n;
}

#define ARENA_OF(node, field)                                                                       \
    ((struct eco_stk_arena *)((char *)(node) - offsetof(struct eco_stk_arena, field)))

struct eco_stk_arena {
    /* What eco__stack_get and eco__stack_put touch comes first. */
    eco_t *warm;           /* free slots with their pages: LIFO through ->next */
    unsigned used;         /* slots handed out */
    unsigned nwarm;
    struct eco_stk_class *cls;
    struct dl wl;          /* in cls->warm while nwarm > 0 (or until
                              warm_arena sees it has none); first in it the
                              arena that got a warm slot last */
    struct dl cl;          /* in cls->cold while a cold or fresh slot is left,
                              oldest arena first */
    struct dl al;          /* in cls->arenas, oldest first */
    eco_t *cold;           /* free slots given back, through ->next */
    unsigned cap;          /* slots */
    unsigned fresh;        /* slots [fresh, cap) were never handed out */
    unsigned pop_end;      /* slots [fresh, pop_end) have their top page
                              committed in advance (populate) */
    int recs_populated;    /* the whole record area is committed */
    unsigned keep_w;       /* trim: warm slots it keeps */
    unsigned keep_pop;     /* trim: populated fresh slots it keeps */
    int keep;              /* trim: stays mapped */
    unsigned long seq;     /* creation order within the class */
    char *map;             /* the mapping: records, then slots */
    size_t map_len;
    char *slots;           /* slot 0, guard region first */
};

struct eco_stk_class {
    size_t req;            /* stack size of the latest get of this class */
    struct dl warm;        /* arenas with warm slots */
    struct dl cold;        /* arenas with cold or fresh slots */
    struct dl arenas;
    size_t slot_bytes;     /* guard region + stack, whole pages */
    size_t mapped;         /* slots in its arenas */
    unsigned long seq;
    struct eco_stk_class *next;
};

/* ---- sizes ---- */

/* Computed on first use by any thread; racing threads store the same value. */
static size_t page_size(void)
{
    static atomic_size_t pg;
    size_t v = atomic_load_explicit(&pg, memory_order_relaxed);
    if (v == 0) {
        v = (size_t)sysconf(_SC_PAGESIZE);
        atomic_store_explicit(&pg, v, memory_order_relaxed);
    }
    return v;
}

static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static size_t guard_bytes(void)
{
    size_t pg = page_size();
    return GUARD_BYTES > pg ? round_up(GUARD_BYTES, pg) : pg;
}

/* Bytes of a record, whole cache lines, so the line a wake-up touches is
 * never split. */
static size_t rec_size(void)
{
    return round_up(sizeof(struct eco), 64);
}

static unsigned max_slots(const struct eco_stk_class *c)
{
    size_t n = ARENA_MAX_BYTES / c->slot_bytes;
    return n < 1 ? 1 : n > ARENA_MAX_SLOTS ? ARENA_MAX_SLOTS : (unsigned)n;
}

/* ---- guard regions ---- */

enum { GUARD_UNKNOWN, GUARD_BATCH, GUARD_EACH, GUARD_MPROTECT };
static atomic_int guard_mode;

/* Does the guard just installed at lo really fault?  Emulators (qemu-user)
 * answer 0 to every madvise and do nothing.  The kernel reports a guard
 * region it is asked to copy from as EFAULT, so a one-byte write into a pipe
 * tells.  1 = it guards, 0 = it does not, -1 = cannot tell (no fds). */
static int guard_faults(const char *lo)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) != 0)
        return -1;
    ssize_t n = write(p[1], lo, 1);
    int e = errno;
    close(p[0]);
    close(p[1]);
    return n < 0 && e == EFAULT;
}

/* The guards of n slots from slots in one system call.  1 done, 0 this way
 * is not available here, -1 error (errno). */
static int guards_batch(char *slots, unsigned n, size_t sb, size_t guard)
{
#if defined(SYS_process_madvise)
#if defined(ECO_WITH_VALGRIND)
    if (RUNNING_ON_VALGRIND)
        return 0; /* it does not know the call, and says so on stderr */
#endif
    struct iovec *iov = malloc(n * sizeof *iov);
    if (iov == NULL) {
        errno = ENOMEM;
        return -1;
    }
    for (unsigned i = 0; i < n; i++) {
        iov[i].iov_base = slots + (size_t)i * sb;
        iov[i].iov_len = guard;
    }
    long r = syscall(SYS_process_madvise, PIDFD_SELF, iov, (size_t)n, MADV_GUARD_INSTALL, 0u);
    free(iov);
    if (r == (long)(n * guard))
        return 1;
    if (r >= 0 || errno != ENOMEM)
        return 0; /* a partial answer, or refused: the other ways redo it */
    return -1;
#else
    (void)slots, (void)n, (void)sb, (void)guard;
    return 0;
#endif
}

/* The same, one madvise per guard. */
static int guards_each(char *slots, unsigned n, size_t sb, size_t guard)
{
    for (unsigned i = 0; i < n; i++) {
        if (madvise(slots + (size_t)i * sb, guard, MADV_GUARD_INSTALL) != 0)
            return i == 0 && errno == EINVAL ? 0 : -1;
    }
    return 1;
}

/* How many of the n slots got their guard region: fewer than n only with
 * errno set (ENOMEM from mprotect past vm.max_map_count). */
static unsigned install_guards(char *slots, unsigned n, size_t sb)
{
    size_t guard = guard_bytes();
    /* ECO_NO_GUARD_INSTALL=1 forces the mprotect fallback, so tests reach
     * it; read per arena, which costs system calls anyway. */
    const char *env = getenv("ECO_NO_GUARD_INSTALL");
    int forced = env != NULL && env[0] == '1';
    int mode = atomic_load_explicit(&guard_mode, memory_order_relaxed);
    if (!forced && mode != GUARD_MPROTECT) {
        int saved = errno, tried = GUARD_EACH, r = 0;
        if (mode == GUARD_UNKNOWN || mode == GUARD_BATCH) {
            r = guards_batch(slots, n, sb, guard);
            tried = GUARD_BATCH;
        }
        if (r == 0) {
            r = guards_each(slots, n, sb, guard);
            tried = GUARD_EACH;
        }
        if (r < 0)
            return 0;
        if (r == 1) {
            if (mode == tried)
                return n;
            int ok = guard_faults(slots);
            errno = saved;
            if (ok != 0) {
                if (ok == 1)
                    atomic_store_explicit(&guard_mode, tried, memory_order_relaxed);
                return n;
            }
        }
        errno = saved;
        atomic_store_explicit(&guard_mode, GUARD_MPROTECT, memory_order_relaxed);
    }
    for (unsigned i = 0; i < n; i++) {
        if (mprotect(slots + (size_t)i * sb, guard, PROT_NONE) != 0) {
            errno = ENOMEM;
            return i;
        }
    }
    return n;
}

/* ---- arenas ---- */

static struct eco_stk_class *find_class(struct eco_stacks *s, size_t size)
{
    size_t sb = guard_bytes() + round_up(size + COLOR_SPAN, page_size());
    struct eco_stk_class *c;
    for (c = s->classes; c != NULL; c = c->next) {
        if (c->slot_bytes == sb) {
            c->req = size;
            return c;
        }
    }
    c = calloc(1, sizeof *c);
    if (c == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    c->req = size;
    c->slot_bytes = sb;
    dl_init(&c->warm);
    dl_init(&c->cold);
    dl_init(&c->arenas);
    c->next = s->classes;
    s->classes = c;
    return c;
}

/*
 * Commits the record area and the top page of every slot of a new arena in
 * one system call (process_madvise takes 1024 ranges) rather than one page
 * fault each: a fault costs 10-40 us on this project's virtual machines,
 * MADV_POPULATE_WRITE under 1 us a page.  The top page is what a coroutine
 * touches first (eco_ctx_init writes its first frame there), and mostly the
 * only one.  Slots never used give theirs back with the pool (trim).
 */
static void populate(struct eco_stk_arena *a)
{
#if defined(SYS_process_madvise)
    size_t pg = page_size(), sb = a->cls->slot_bytes;
    unsigned n = a->cap + 1, done = 0;
    struct iovec *iov = malloc(n * sizeof *iov);
    if (iov == NULL)
        return;
    iov[0].iov_base = a->map;
    iov[0].iov_len = (size_t)(a->slots - a->map);
    for (unsigned i = 0; i < a->cap; i++) {
        iov[i + 1].iov_base = a->slots + (size_t)(i + 1) * sb - pg;
        iov[i + 1].iov_len = pg;
    }
    int saved = errno;
    while (done < n) {
        size_t k = n - done < ARENA_MAX_SLOTS ? n - done : ARENA_MAX_SLOTS;
        if (syscall(SYS_process_madvise, PIDFD_SELF, iov + done, k, MADV_POPULATE_WRITE, 0u) < 0)
            break; /* no memory now, or too old a kernel: the pages fault in later */
        done += (unsigned)k;
    }
    errno = saved;
    free(iov);
    /* What went in, in order: the records, then the slots' top pages. */
    a->recs_populated = done > 0;
    a->pop_end = done > 1 ? done - 1 : 0;
#else
    (void)a;
#endif
}

/* Maps an arena for c: as many slots as c has already (geometric growth),
 * fewer when memory or mappings run short.  NULL with errno ENOMEM. */
static struct eco_stk_arena *new_arena(struct eco_stacks *s, struct eco_stk_class *c)
{
    size_t pg = page_size();
    unsigned max = max_slots(c);
    unsigned n = c->mapped < ARENA_FIRST ? ARENA_FIRST : c->mapped > max ? max : (unsigned)c->mapped;
    if (n > max)
        n = max;
    struct eco_stk_arena *a = calloc(1, sizeof *a);
    if (a == NULL) {
        errno = ENOMEM;
        return NULL;
    }
    for (;;) {
        size_t recs = round_up(n * rec_size(), pg);
        size_t len = recs + n * c->slot_bytes;
        char *map = mmap(NULL, len, PROT_READ | PROT_WRITE,
                         MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
        if (map != MAP_FAILED) {
            unsigned g = install_guards(map + recs, n, c->slot_bytes);
            if (g > 0 && g < n) {
                /* The mappings ran out: keep the slots that have guards. */
                munmap(map + recs + g * c->slot_bytes, (n - g) * c->slot_bytes);
                n = g;
                len = recs + n * c->slot_bytes;
            }
            if (g > 0) {
                a->map = map;
                a->map_len = len;
                a->slots = map + recs;
                break;
            }
            munmap(map, len);
        }
        if (n == 1) {
            free(a);
            errno = ENOMEM;
            return NULL;
        }
        n /= 2;
    }
    a->cls = c;
    a->cap = n;
    a->seq = c->seq++;
    if (atomic_load_explicit(&guard_mode, memory_order_relaxed) == GUARD_BATCH)
        populate(a);
    dl_init(&a->wl);
    dl_insert(&a->al, c->arenas.prev, &c->arenas);
    dl_insert(&a->cl, c->cold.prev, &c->cold); /* the newest: last */
    c->mapped += n;
    s->mapped += n;
    return a;
}

/* Slot i's record, with its stack fields set. */
static eco_t *carve(struct eco_stk_arena *a, unsigned i)
{
    eco_t *co = (eco_t *)(a->map + (size_t)i * rec_size());
    size_t guard = guard_bytes();
    /* Stack tops at one offset from a page boundary would put every
     * coroutine's frames in the same few cache sets: shift each top by its
     * own multiple of a cache line, staying in the top page (a parked
     * coroutine with shallow frames keeps to one page). */
    size_t color = (i % COLORS) * 64;
    co->arena = a;
    co->stack_lo = a->slots + (size_t)i * a->cls->slot_bytes + guard;
    co->stack_size = a->cls->slot_bytes - guard - color;
    return co;
}

static unsigned slot_index(const struct eco_stk_arena *a, const eco_t *co)
{
    return (unsigned)(((const char *)co - a->map) / rec_size());
}

static void unmap_arena(struct eco_stacks *s, struct eco_stk_arena *a)
{
    struct eco_stk_class *c = a->cls;
    dl_del(&a->al);
    dl_del(&a->wl);
    dl_del(&a->cl);
    s->pooled -= a->nwarm;
    s->mapped -= a->cap;
    c->mapped -= a->cap;
#if defined(ECO_WITH_ASAN)
    /* The shadow outlives the mapping: whatever is mapped here next must
     * not inherit the redzones of frames that were on these stacks. */
    ASAN_UNPOISON_MEMORY_REGION(a->map, a->map_len);
#endif
    munmap(a->map, a->map_len);
    free(a);
}

/* Puts a into c's cold list, which is kept oldest first. */
static void cold_link(struct eco_stk_arena *a)
{
    struct dl *h = &a->cls->cold, *p = h->prev;
    while (p != h && ARENA_OF(p, cl)->seq > a->seq)
        p = p->prev;
    dl_insert(&a->cl, p, p->next);
}

/* ---- handing out and taking back ---- */

static inline void taken(struct eco_stacks *s, struct eco_stk_arena *a)
{
    a->used++;
    if (++s->in_use > s->peak)
        s->peak = s->in_use;
}

/* The first warm slot of a (which must have one). */
static inline eco_t *take_warm(struct eco_stacks *s, struct eco_stk_arena *a)
{
    eco_t *co = a->warm;
    a->warm = co->next;
    a->nwarm--;
    s->pooled--;
    taken(s, a);
    return co;
}

/* The arena c hands warm slots out from, or NULL.  An arena whose last
 * warm slot went stays in the list until here (or a trim), so that a
 * coroutine started and finished over and over moves no list links. */
static struct eco_stk_arena *warm_arena(struct eco_stk_class *c)
{
    while (!dl_empty(&c->warm)) {
        struct eco_stk_arena *a = ARENA_OF(c->warm.next, wl);
        if (a->warm != NULL)
            return a;
        dl_del(&a->wl);
    }
    return NULL;
}

static eco_t *take_cold(struct eco_stacks *s, struct eco_stk_arena *a)
{
    eco_t *co = a->cold;
    if (co != NULL)
        a->cold = co->next;
    else
        co = carve(a, a->fresh++);
    if (a->cold == NULL && a->fresh == a->cap)
        dl_del(&a->cl);
    taken(s, a);
    return co;
}

static eco_t *get_slow(struct eco_rt *rt, size_t size)
{
    struct eco_stacks *s = &rt->stk;
    struct eco_stk_class *c = find_class(s, size);
    if (c == NULL)
        return NULL;
    s->last = c;
    struct eco_stk_arena *w = warm_arena(c);
    if (w != NULL)
        return take_warm(s, w);
    if (!dl_empty(&c->cold))
        return take_cold(s, ARENA_OF(c->cold.next, cl));
    struct eco_stk_arena *a = new_arena(s, c);
    return a != NULL ? take_cold(s, a) : NULL;
}

eco_t *eco__stack_get(struct eco_rt *rt, size_t stack_size)
{
    struct eco_stacks *s = &rt->stk;
    struct eco_stk_class *c = s->last;
    eco_t *co;
    struct eco_stk_arena *a;
    if (ECO_LIKELY(c != NULL && c->req == stack_size && !dl_empty(&c->warm) &&
                   (a = ARENA_OF(c->warm.next, wl))->warm != NULL))
        co = take_warm(s, a);
    else if ((co = get_slow(rt, stack_size)) == NULL)
        return NULL;
#if defined(ECO_WITH_VALGRIND)
    co->valgrind_id = VALGRIND_STACK_REGISTER(co->stack_lo, co->stack_lo + co->stack_size);
#endif
    return co;
}

/* co's stack leaves its coroutine. */
static inline void forget(struct eco_stacks *s, eco_t *co)
{
#if defined(ECO_WITH_ASAN)
    /* A coroutine that ended by switching away, or was abandoned, leaves
     * its frames' redzones poisoned; the next user of the stack (or of the
     * address, once unmapped) must start clean. */
    ASAN_UNPOISON_MEMORY_REGION(co->stack_lo, co->stack_size);
#endif
#if defined(ECO_WITH_VALGRIND)
    VALGRIND_STACK_DEREGISTER(co->valgrind_id);
#endif
    co->arena->used--;
    s->in_use--;
}

/* a has a warm slot again: its class hands out from it first. */
static void warm_link(struct eco_stk_arena *a)
{
    struct dl *h = &a->cls->warm;
    dl_insert(&a->wl, h, h->next);
}

static inline void pool(struct eco_stacks *s, eco_t *co)
{
    struct eco_stk_arena *a = co->arena;
    co->next = a->warm;
    a->warm = co;
    a->nwarm++;
    s->pooled++;
    if (ECO_UNLIKELY(a->wl.next == &a->wl))
        warm_link(a);
}

static void arm(struct eco_rt *rt, long ms);
static int trim(struct eco_rt *rt, size_t keep_warm, size_t need_free, size_t budget,
                size_t *idle);

static void arm_tick(struct eco_rt *rt)
{
    arm(rt, TICK_MS);
}

/* Beyond the pool limit: co's pages go back now, and with pooling off its
 * arena too once empty. */
static void give_back(struct eco_rt *rt, eco_t *co)
{
    struct eco_stacks *s = &rt->stk;
    struct eco_stk_arena *a = co->arena;
    /* Guard regions survive MADV_DONTNEED, and mprotect's PROT_NONE ones
     * need no pages: the whole slot in one call. */
    madvise(co->stack_lo - guard_bytes(), a->cls->slot_bytes, MADV_DONTNEED);
    co->next = a->cold;
    a->cold = co;
    if (a->cl.next == &a->cl)
        cold_link(a);
    if (a->used == 0 && a->nwarm == 0) {
        if (s->limit == 0)
            unmap_arena(s, a);
        else if (!s->armed)
            arm(rt, TICK_MS); /* the timer unmaps it if demand stays low */
    }
}

void eco__stack_put(struct eco_rt *rt, eco_t *co)
{
    struct eco_stacks *s = &rt->stk;
    forget(s, co);
    if (ECO_UNLIKELY(s->pooled >= s->limit)) {
        give_back(rt, co);
        return;
    }
    pool(s, co);
    if (ECO_UNLIKELY(!s->armed))
        arm_tick(rt);
}

void eco__stack_unmap(struct eco_rt *rt, eco_t *co)
{
    /* Pooled whatever the limit: eco_teardown unmaps whole arenas next,
     * rather than giving each stack back on its own. */
    forget(&rt->stk, co);
    pool(&rt->stk, co);
}

/* ---- giving memory back ---- */

/* Gives back the warm slots of a beyond its first `keep` (the ones freed
 * last stay): one madvise per run of neighbours.  Returns how many. */
static size_t release_warm(struct eco_stacks *s, struct eco_stk_arena *a, unsigned keep)
{
    eco_t **link = &a->warm;
    for (unsigned i = 0; i < keep; i++)
        link = &(*link)->next;
    eco_t *co = *link;
    *link = NULL;
    uint64_t run[ARENA_MAX_SLOTS / 64] = {0};
    size_t n = 0;
    while (co != NULL) {
        eco_t *next = co->next;
        unsigned i = slot_index(a, co);
        run[i / 64] |= (uint64_t)1 << (i % 64);
        co->next = a->cold;
        a->cold = co;
        n++;
        co = next;
    }
    a->nwarm -= (unsigned)n;
    s->pooled -= n;
    if (a->warm == NULL)
        dl_del(&a->wl);
    if (n > 0 && a->cl.next == &a->cl)
        cold_link(a);
    size_t sb = a->cls->slot_bytes;
    for (unsigned i = 0; i < a->cap;) {
        if (run[i / 64] == 0) {
            i = (i / 64 + 1) * 64;
            continue;
        }
        if (!(run[i / 64] >> (i % 64) & 1)) {
            i++;
            continue;
        }
        unsigned j = i + 1;
        while (j < a->cap && (run[j / 64] >> (j % 64) & 1))
            j++;
        /* Guard regions inside the run survive MADV_DONTNEED. */
        madvise(a->slots + i * sb, (j - i) * sb, MADV_DONTNEED);
        i = j;
    }
    return n;
}

/* Slots never used whose top page populate committed. */
static unsigned pop_tail(const struct eco_stk_arena *a)
{
    return a->pop_end > a->fresh ? a->pop_end - a->fresh : 0;
}

/* Gives back the populated pages of never-used slots beyond the first
 * `keep` of them, in one call.  Returns how many slots. */
static size_t release_tail(struct eco_stk_arena *a, unsigned keep)
{
    unsigned from = a->fresh + keep, n = a->pop_end - from;
    size_t sb = a->cls->slot_bytes;
    madvise(a->slots + from * sb, n * sb, MADV_DONTNEED);
    a->pop_end = from;
    return n;
}

/* The classes, the latest first (it is the default size, mostly). */
static struct eco_stk_class *class_first(struct eco_stacks *s)
{
    return s->last != NULL ? s->last : s->classes;
}

static struct eco_stk_class *class_next(struct eco_stacks *s, struct eco_stk_class *c)
{
    c = c == s->last ? s->classes : c->next;
    if (c != NULL && c == s->last)
        c = c->next;
    return c;
}

/*
 * Keeps keep_warm pooled stacks and enough mapped free slots for need_free
 * more coroutines, in the oldest arenas (of the latest class first); gives
 * back the rest, the newest arenas first, stopping after about `budget`
 * stacks.  Returns 1 when it stopped there.  *idle (if not NULL): arenas
 * left mapped with nothing in use or with populated slots never used.
 */
static int trim(struct eco_rt *rt, size_t keep_warm, size_t need_free, size_t budget,
                size_t *idle)
{
    struct eco_stacks *s = &rt->stk;
    struct eco_stk_class *c;
    size_t free_slots = 0, empty = 0;
    int more = 0;
    for (c = class_first(s); c != NULL; c = class_next(s, c)) {
        for (struct dl *p = c->arenas.next; p != &c->arenas; p = p->next) {
            struct eco_stk_arena *a = ARENA_OF(p, al);
            a->keep_w = a->nwarm < keep_warm ? a->nwarm : (unsigned)keep_warm;
            keep_warm -= a->keep_w;
            unsigned tail = pop_tail(a);
            a->keep_pop = tail < keep_warm ? tail : (unsigned)keep_warm;
            keep_warm -= a->keep_pop;
            a->keep = a->used > 0 || a->keep_w > 0 || a->keep_pop > 0 || free_slots < need_free;
            if (a->keep)
                free_slots += a->cap - a->used;
        }
    }
    for (c = class_first(s); c != NULL; c = class_next(s, c)) {
        struct dl *p = c->arenas.prev;
        while (p != &c->arenas) {
            struct eco_stk_arena *a = ARENA_OF(p, al);
            p = p->prev;
            if (budget == 0) {
                more = 1;
            } else if (!a->keep) {
                size_t cost = a->fresh; /* slots that may hold pages */
                unmap_arena(s, a);
                budget -= cost < budget ? cost : budget;
                continue;
            } else {
                size_t n = 0;
                if (a->nwarm > a->keep_w)
                    n += release_warm(s, a, a->keep_w);
                if (pop_tail(a) > a->keep_pop)
                    n += release_tail(a, a->keep_pop);
                budget -= n < budget ? n : budget;
            }
            empty += a->used == 0 || pop_tail(a) > 0;
        }
    }
    /* Classes left without arenas go, but the latest. */
    for (struct eco_stk_class **cp = &s->classes; *cp != NULL;) {
        c = *cp;
        if (c != s->last && dl_empty(&c->arenas)) {
            *cp = c->next;
            free(c);
        } else {
            cp = &c->next;
        }
    }
    if (idle != NULL)
        *idle = empty;
    return more;
}

static void trim_cb(evutil_socket_t fd, short what, void *arg)
{
    struct eco_rt *rt = arg;
    struct eco_stacks *s = &rt->stk;
    (void)fd;
    (void)what;
    eco__ev_fired(rt, &s->armed);
    /* Requests of other threads may name records this tick unmaps: their
     * coroutines were alive when asked, so acting first is safe. */
    eco__remote_drain(rt);
    if (!s->more) {
        /* A window closes: its peak joins the demand. */
        s->peaks[s->tick++ % ECO_STK_WINDOWS] = s->peak;
        s->peak = s->in_use;
    }
    size_t demand = s->in_use, idle = 0;
    for (int i = 0; i < ECO_STK_WINDOWS; i++)
        demand = s->peaks[i] > demand ? s->peaks[i] : demand;
    size_t need = demand - s->in_use;
    s->more = trim(rt, need < s->limit ? need : s->limit, need, RELEASE_BUDGET, &idle);
    if (s->more) {
        arm(rt, 0); /* the rest after the loop has polled */
    } else if (s->pooled > 0 || idle > 0) {
        arm(rt, TICK_MS);
    } else {
        /* Nothing left to give back: the timer stops holding the loop,
         * and the next put starts a fresh history. */
        memset(s->peaks, 0, sizeof s->peaks);
        s->peak = s->in_use;
    }
}

/* Makes the trim timer pending in ms.  Without a timer (no memory for
 * it), nothing is kept that only the timer would give back. */
static void arm(struct eco_rt *rt, long ms)
{
    struct eco_stacks *s = &rt->stk;
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    if (s->trim_ev == NULL)
        s->trim_ev = event_new(rt->base, -1, 0, trim_cb, rt);
    if (s->trim_ev != NULL && eco__ev_add(rt, s->trim_ev, &tv, &s->armed) == 0)
        return;
    s->more = 0;
    trim(rt, 0, 0, SIZE_MAX, NULL);
}

void eco__stack_trim(struct eco_rt *rt, size_t keep)
{
    struct eco_stacks *s = &rt->stk;
    trim(rt, keep < s->pooled ? keep : s->pooled, 0, SIZE_MAX, NULL);
}

void eco__stack_limit(struct eco_rt *rt, size_t n)
{
    rt->stk.limit = n;
    eco__stack_trim(rt, n);
}

void eco__stacks_init(struct eco_rt *rt)
{
    rt->stk.limit = SIZE_MAX;
}

/* Mappings for unmap_thread to unmap. */
struct graveyard {
    size_t n;
    struct {
        void *p;
        size_t len;
    } m[];
};

static void *unmap_thread(void *arg)
{
    struct graveyard *g = arg;
    for (size_t i = 0; i < g->n; i++)
        munmap(g->m[i].p, g->m[i].len);
    free(g);
    return NULL;
}

/*
 * Hands every arena to a detached thread that unmaps them, so that
 * eco_teardown returns at once: freeing the pages and page tables of a
 * million sparse stacks takes the kernel seconds (5 us a stack here, most
 * of it the page-table pages, one per 7 default stacks).  Returns 0 when it
 * did not (a small teardown, Valgrind, no thread), and nothing has changed.
 */
static int unmap_async(struct eco_stacks *s)
{
    size_t arenas = 0, touched = 0;
    for (struct eco_stk_class *c = s->classes; c != NULL; c = c->next) {
        for (struct dl *p = c->arenas.next; p != &c->arenas; p = p->next) {
            arenas++;
            touched += ARENA_OF(p, al)->pop_end > ARENA_OF(p, al)->fresh
                           ? ARENA_OF(p, al)->pop_end
                           : ARENA_OF(p, al)->fresh;
        }
    }
#if defined(ECO_WITH_VALGRIND)
    if (RUNNING_ON_VALGRIND)
        return 0;
#endif
    if (touched < ASYNC_UNMAP_SLOTS)
        return 0;
    struct graveyard *g = malloc(sizeof *g + arenas * sizeof g->m[0]);
    if (g == NULL)
        return 0;
    g->n = 0;
    for (struct eco_stk_class *c = s->classes; c != NULL; c = c->next) {
        for (struct dl *p = c->arenas.next; p != &c->arenas; p = p->next) {
            g->m[g->n].p = ARENA_OF(p, al)->map;
            g->m[g->n].len = ARENA_OF(p, al)->map_len;
            g->n++;
        }
    }
    pthread_attr_t attr;
    pthread_t t;
    sigset_t all, old;
    int ok = pthread_attr_init(&attr) == 0;
    if (ok) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 64 * 1024);
        /* No signal of the program's is delivered to it. */
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, &old);
        ok = pthread_create(&t, &attr, unmap_thread, g) == 0;
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        pthread_attr_destroy(&attr);
    }
    if (!ok) {
        free(g);
        return 0;
    }
    /* The arenas are the thread's now: only their headers are left. */
    for (struct eco_stk_class *c = s->classes; c != NULL; c = c->next) {
        while (!dl_empty(&c->arenas)) {
            struct eco_stk_arena *a = ARENA_OF(c->arenas.next, al);
#if defined(ECO_WITH_ASAN)
            ASAN_UNPOISON_MEMORY_REGION(a->map, a->map_len);
#endif
            dl_del(&a->al);
            free(a);
        }
    }
    return 1;
}

void eco__stacks_fini(struct eco_rt *rt)
{
    struct eco_stacks *s = &rt->stk;
    if (s->trim_ev != NULL) {
        eco__ev_del(rt, s->trim_ev, &s->armed);
        event_free(s->trim_ev);
    }
    unmap_async(s);
    while (s->classes != NULL) {
        struct eco_stk_class *c = s->classes;
        while (!dl_empty(&c->arenas))
            unmap_arena(s, ARENA_OF(c->arenas.next, al));
        s->classes = c->next;
        free(c);
    }
    memset(s, 0, sizeof *s);
}

void eco__stack_stats(struct eco_rt *rt, eco_stats_t *st)
{
    struct eco_stacks *s = &rt->stk;
    size_t pg = page_size(), other = 0;
    for (struct eco_stk_class *c = s->classes; c != NULL; c = c->next) {
        for (struct dl *p = c->arenas.next; p != &c->arenas; p = p->next) {
            struct eco_stk_arena *a = ARENA_OF(p, al);
            other += a->recs_populated ? (size_t)(a->slots - a->map)
                                       : round_up(a->fresh * rec_size(), pg);
            other += pop_tail(a) * pg;
        }
    }
    st->stacks = s->in_use + s->pooled;
    st->pooled = s->pooled;
    st->mapped = s->mapped;
    st->committed = (s->in_use + s->pooled) * pg + other;
}

size_t eco__stack_used(const eco_t *co)
{
    /* The kernel commits a stack's pages as they are first touched, from
     * the top down: the lowest resident page marks the deepest use. */
    size_t pg = page_size();
    char *lo = (char *)((uintptr_t)co->stack_lo & ~(uintptr_t)(pg - 1));
    char *top = co->stack_lo + co->stack_size;
    size_t pages = (size_t)(top - lo + (ptrdiff_t)pg - 1) / pg;
    unsigned char vec_buf[256];
    unsigned char *vec = pages <= sizeof vec_buf ? vec_buf : malloc(pages);
    if (vec == NULL || mincore(lo, pages * pg, vec) != 0) {
        if (vec != vec_buf)
            free(vec);
        return 0;
    }
    size_t used = 0;
    for (size_t i = 0; i < pages; i++) {
        if (vec[i] & 1) {
            char *p = lo + i * pg;
            used = (size_t)(top - (p > co->stack_lo ? p : co->stack_lo));
            break;
        }
    }
    if (vec != vec_buf)
        free(vec);
    return used;
}

/* ---- stack overflow report ---- */

static struct sigaction prev_segv;
static pthread_once_t segv_once = PTHREAD_ONCE_INIT;

static size_t fmt_ulong(char *out, unsigned long v)
{
    char tmp[24];
    size_t n = 0, i;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    for (i = 0; i < n; i++)
        out[i] = tmp[n - 1 - i];
    return n;
}

static size_t fmt_str(char *out, const char *s)
{
    size_t n = strlen(s);
    memcpy(out, s, n);
    return n;
}

/* Async-signal-safe: only write(2) and abort(). */
static void report_overflow(const eco_t *co)
{
    char msg[128 + ECO_NAME_MAX];
    size_t n = fmt_str(msg, "eco: stack overflow in coroutine ");
    if (co->name[0] != '\0') {
        n += fmt_str(msg + n, co->name);
    } else {
        msg[n++] = '#';
        n += fmt_ulong(msg + n, co->id);
    }
    n += fmt_str(msg + n, " (stack size ");
    n += fmt_ulong(msg + n, co->stack_size);
    n += fmt_str(msg + n, " bytes)\n");
    ssize_t w = write(STDERR_FILENO, msg, n);
    (void)w;
    abort();
}

static char *fault_sp(void *uctx)
{
    const ucontext_t *uc = uctx;
#if defined(__x86_64__)
    return (char *)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    return (char *)uc->uc_mcontext.sp;
#else
    (void)uc;
    return NULL;
#endif
}

static void on_segv(int sig, siginfo_t *si, void *uctx)
{
    struct eco_rt *rt = eco__rt;
    if (rt != NULL && rt->current != &rt->main) {
        const eco_t *co = rt->current;
        char *addr = si->si_addr;
        char *sp = fault_sp(uctx);
        /* A fault in the guard region, or with the stack pointer already
         * below the usable stack (a frame larger than the guard), is this
         * coroutine running off its stack. */
        char *guard = co->stack_lo - guard_bytes();
        if ((addr >= guard && addr < co->stack_lo) ||
            (sp != NULL && sp < co->stack_lo && sp >= guard - (64 << 10)))
            report_overflow(co);
    }
    /* Not ours: hand over to whoever handled SIGSEGV before us. */
    if ((prev_segv.sa_flags & SA_SIGINFO) && prev_segv.sa_sigaction != NULL) {
        prev_segv.sa_sigaction(sig, si, uctx);
        return;
    }
    if (prev_segv.sa_handler != SIG_DFL && prev_segv.sa_handler != SIG_IGN) {
        prev_segv.sa_handler(sig);
        return;
    }
    /* Default action: restore it and let the faulting instruction re-run;
     * a SIGSEGV sent by kill() has no instruction to re-run, so re-send. */
    signal(SIGSEGV, SIG_DFL);
    if (si->si_code <= 0)
        raise(SIGSEGV);
}

static void install_segv(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &prev_segv);
}

int eco__overflow_setup(struct eco_rt *rt)
{
    pthread_once(&segv_once, install_segv);
    /* The handler needs a stack of its own: the faulting one is full. */
    stack_t cur;
    if (sigaltstack(NULL, &cur) == 0 && !(cur.ss_flags & SS_DISABLE))
        return 0;
    size_t size = 64 * 1024;
    long min = sysconf(_SC_MINSIGSTKSZ);
    if (min > 0 && (size_t)min * 4 > size)
        size = round_up((size_t)min * 4, page_size());
    void *mem = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (mem == MAP_FAILED) {
        errno = ENOMEM;
        return -1;
    }
    stack_t ss = {.ss_sp = mem, .ss_size = size, .ss_flags = 0};
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(mem, size);
        return -1;
    }
    rt->altstack = mem;
    rt->altstack_size = size;
    return 0;
}

void eco__overflow_teardown(struct eco_rt *rt)
{
    if (rt->altstack == NULL)
        return;
    stack_t ss = {.ss_sp = NULL, .ss_size = 0, .ss_flags = SS_DISABLE};
    sigaltstack(&ss, NULL);
    munmap(rt->altstack, rt->altstack_size);
    rt->altstack = NULL;
}
