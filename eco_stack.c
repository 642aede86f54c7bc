/*
 * eco_stack.c - coroutine stacks: mapping, guard regions, the pool, and the
 * stack-overflow report.
 *
 * A stack mapping is laid out, from low addresses up:
 *     [guard region][usable stack, grows down]
 * The kernel commits pages only when touched, so a large default costs
 * address space, not memory.  The guard region is installed with
 * MADV_GUARD_INSTALL (Linux 6.13+), which does not split the mapping, so
 * adjacent stacks merge into few VMAs and vm.max_map_count is no limit;
 * older kernels answer EINVAL and we fall back to mprotect(PROT_NONE),
 * which costs one extra VMA per stack.
 *
 * The coroutine record (and its timer event) lives apart from the stack,
 * in a per-runtime slab of cache-line-aligned slots.  A parked coroutine's
 * deepest frames sit at least a user buffer below the top of its stack, so
 * a record at the top put every wake-up on two pages of its own; with
 * records packed a dozen to a page, a wake-up touches one page of its own
 * (the deep frames), which at a thousand connections is what decides TLB
 * misses.  A pooled record keeps its stack.
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
#include <ucontext.h>
#include <unistd.h>

#if defined(ECO_WITH_VALGRIND)
#include <valgrind/valgrind.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102
#endif

#define GUARD_BYTES ((size_t)16 * 1024) /* at least one page; see guard_size */
#define COLORS 32                         /* stack-top offsets, in cache lines */
#define COLOR_SPAN ((size_t)(COLORS - 1) * 64)
#define SLAB_SLOTS 64                     /* records per slab chunk */

/* 0 = not tried yet, 1 = MADV_GUARD_INSTALL works, 2 = it is missing or
 * has no effect. */
static atomic_int guard_mode;

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

/* Bytes of a slab slot: the coroutine record and its timer event, whole
 * cache lines, so the line a wake-up touches is never split. */
static size_t slot_size(void)
{
    static atomic_size_t ss;
    size_t v = atomic_load_explicit(&ss, memory_order_relaxed);
    if (v == 0) {
        v = round_up(round_up(sizeof(struct eco), 16) + event_get_struct_event_size(), 64);
        atomic_store_explicit(&ss, v, memory_order_relaxed);
    }
    return v;
}

/* One chunk of the slab: this header (a cache line), then SLAB_SLOTS slots. */
struct slab_chunk {
    struct slab_chunk *next;
    char pad[64 - sizeof(void *)];
};

/* A free slot, taken from the runtime's slab; NULL with errno ENOMEM. */
static eco_t *slot_get(struct eco_rt *rt)
{
    eco_t *co = rt->slab_free;
    if (co == NULL) {
        size_t ss = slot_size();
        struct slab_chunk *ch = aligned_alloc(64, sizeof *ch + SLAB_SLOTS * ss);
        if (ch == NULL) {
            errno = ENOMEM;
            return NULL;
        }
        ch->next = rt->slab;
        rt->slab = ch;
        /* Linked so that slots are handed out in address order. */
        char *first = (char *)(ch + 1);
        for (size_t i = SLAB_SLOTS; i-- > 0;) {
            eco_t *s = (eco_t *)(first + i * ss);
            s->next = co;
            co = s;
        }
    }
    rt->slab_free = co->next;
    return co;
}

/* Last in, first out: the slot freed last is the warmest. */
static void slot_put(struct eco_rt *rt, eco_t *co)
{
    co->next = rt->slab_free;
    rt->slab_free = co;
}

void eco__slab_free(struct eco_rt *rt)
{
    struct slab_chunk *ch = rt->slab;
    while (ch != NULL) {
        struct slab_chunk *next = ch->next;
        free(ch);
        ch = next;
    }
    rt->slab = NULL;
    rt->slab_free = NULL;
}

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

static int install_guard(char *lo, size_t len)
{
    /* ECO_NO_GUARD_INSTALL=1 forces the fallback, so tests reach it; read
     * per mapping, which already costs a system call or two. */
    const char *env = getenv("ECO_NO_GUARD_INSTALL");
    int forced = env != NULL && env[0] == '1';
    int mode = atomic_load_explicit(&guard_mode, memory_order_relaxed);
    if (!forced && mode != 2) {
        int saved = errno;
        if (madvise(lo, len, MADV_GUARD_INSTALL) == 0) {
            if (mode == 1)
                return 0;
            int ok = guard_faults(lo);
            errno = saved;
            if (ok != 0) {
                if (ok == 1)
                    atomic_store_explicit(&guard_mode, 1, memory_order_relaxed);
                return 0;
            }
        } else if (errno != EINVAL) {
            return -1;
        }
        errno = saved;
        atomic_store_explicit(&guard_mode, 2, memory_order_relaxed);
    }
    return mprotect(lo, len, PROT_NONE);
}

static eco_t *map_stack(struct eco_rt *rt, size_t stack_size)
{
    size_t pg = page_size();
    size_t guard = GUARD_BYTES > pg ? round_up(GUARD_BYTES, pg) : pg;
    size_t total = guard + round_up(stack_size + COLOR_SPAN, pg);
    eco_t *co = slot_get(rt);
    if (co == NULL)
        return NULL;
    char *map = mmap(NULL, total, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (map == MAP_FAILED) {
        slot_put(rt, co);
        errno = ENOMEM;
        return NULL;
    }
    if (install_guard(map, guard) != 0) {
        munmap(map, total);
        slot_put(rt, co);
        errno = ENOMEM; /* mprotect fails with ENOMEM past vm.max_map_count */
        return NULL;
    }
    /* Mappings are page-aligned, so stack tops at one offset from the end
     * would put every coroutine's frames in the same few cache sets: shift
     * each top by its own multiple of a cache line, staying in the top page
     * (a parked coroutine with shallow frames keeps to one page). */
    size_t color = (rt->color++ % COLORS) * 64;
    co->map = map;
    co->map_size = total;
    co->guard_size = guard;
    co->stack_lo = map + guard;
    co->stack_size = total - guard - color;
    co->timer = (struct event *)((char *)co + round_up(sizeof(struct eco), 16));
#if defined(ECO_WITH_VALGRIND)
    co->valgrind_id = VALGRIND_STACK_REGISTER(co->stack_lo, co->stack_lo + co->stack_size);
#endif
    rt->stacks++;
    return co;
}

eco_t *eco__stack_get(struct eco_rt *rt, size_t stack_size)
{
    eco_t *co = rt->pool;
    if (co != NULL && stack_size == rt->stack_size) {
        rt->pool = co->next;
        rt->pooled--;
        return co;
    }
    return map_stack(rt, stack_size);
}

void eco__stack_unmap(struct eco_rt *rt, eco_t *co)
{
#if defined(ECO_WITH_VALGRIND)
    VALGRIND_STACK_DEREGISTER(co->valgrind_id);
#endif
    rt->stacks--;
    munmap(co->map, co->map_size);
    slot_put(rt, co);
}

void eco__stack_put(struct eco_rt *rt, eco_t *co)
{
#if defined(ECO_WITH_ASAN)
    /* A coroutine that ended by switching away leaves its frames' redzones
     * poisoned; the next user of the stack must start clean. */
    ASAN_UNPOISON_MEMORY_REGION(co->stack_lo, co->stack_size);
#endif
    if (co->stack_req == rt->stack_size && rt->pooled < rt->pool_limit) {
        co->next = rt->pool;
        rt->pool = co;
        rt->pooled++;
        return;
    }
    eco__stack_unmap(rt, co);
}

void eco__stack_trim(struct eco_rt *rt, size_t keep)
{
    while (rt->pooled > keep) {
        eco_t *co = rt->pool;
        rt->pool = co->next;
        rt->pooled--;
        eco__stack_unmap(rt, co);
    }
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
        if ((addr >= co->map && addr < co->stack_lo) ||
            (sp != NULL && sp < co->stack_lo && sp >= co->map - (64 << 10)))
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
