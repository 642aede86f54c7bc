/* test_coro.c - coroutine lifecycle: resume, yield, states, join, detach, go. */
#define _GNU_SOURCE
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "test_util.h"

/* ---- ping-pong keeps locals and passes values ---- */

struct pingpong {
    long to_co;   /* written by the caller before each resume */
    long from_co; /* written by the coroutine before each yield */
};

static void *pingpong_body(void *arg)
{
    struct pingpong *pp = arg;
    long sum = 0;          /* a local that must survive every switch */
    volatile double f = 0.5;
    for (int i = 0; i < 1000; i++) {
        sum += pp->to_co;
        f *= 1.0;
        pp->from_co = sum + i;
        ck_assert_int_eq(eco_yield(), 0);
    }
    ck_assert(f == 0.5);
    return (void *)(intptr_t)sum;
}

START_TEST(pingpong_keeps_locals)
{
    struct pingpong pp = {0, 0};
    eco_t *co = eco_create(pingpong_body, &pp, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert_int_eq(eco_state(co), ECO_INIT);
    long expect = 0;
    long mine = 12345; /* caller's local across switches */
    for (int i = 0; i < 1000; i++) {
        pp.to_co = i * 3;
        expect += i * 3;
        ck_assert_int_eq(eco_resume(co), 0);
        ck_assert_int_eq(pp.from_co, expect + i);
        ck_assert_int_eq(eco_state(co), ECO_PENDING);
    }
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_state(co), ECO_DONE);
    void *ret = NULL;
    ck_assert_int_eq(eco_join(co, &ret), 0);
    ck_assert_int_eq((long)(intptr_t)ret, expect);
    ck_assert_int_eq(mine, 12345);
}
END_TEST

/* ---- callee-saved registers survive a switch ----
 * Both sides load their own marker values into every callee-saved register
 * and switch (the caller through eco_resume, the coroutine through
 * eco_yield) inside one asm block, so the compiler cannot save them for us,
 * then check the markers once the switch returns.  A switch that forgets
 * any register fails here, whichever side it breaks. */

#if defined(__x86_64__)
#define REG_CHECK_ONE(reg, val, bit)                                           \
    "movabsq $" val ", %%rdx\n\t cmpq %%rdx, %%" reg "\n\t setne %%al\n\t"     \
    "movzbl %%al, %%eax\n\t shll $" bit ", %%eax\n\t orl %%eax, %%ecx\n\t"
/* P is 15 hex digits; the last digit names the register. */
#define REG_SWITCH(P)                                                          \
    __asm__ volatile(                                                          \
        "subq $128, %%rsp\n\t" /* step over our caller's red zone */           \
        "pushq %%rbp\n\t"                                                      \
        "movq %%rsp, %%rax\n\t"                                                \
        "andq $-16, %%rsp\n\t"                                                 \
        "pushq %%rax\n\t"                                                      \
        "pushq %%rax\n\t"                                                      \
        "movabsq $" P "1, %%rbx\n\t"                                           \
        "movabsq $" P "2, %%r12\n\t"                                           \
        "movabsq $" P "3, %%r13\n\t"                                           \
        "movabsq $" P "4, %%r14\n\t"                                           \
        "movabsq $" P "5, %%r15\n\t"                                           \
        "movabsq $" P "6, %%rbp\n\t"                                           \
        "call *%%rsi\n\t"                                                      \
        "xorl %%ecx, %%ecx\n\t"                                                \
        REG_CHECK_ONE("rbx", P "1", "0")                                       \
        REG_CHECK_ONE("r12", P "2", "1")                                       \
        REG_CHECK_ONE("r13", P "3", "2")                                       \
        REG_CHECK_ONE("r14", P "4", "3")                                       \
        REG_CHECK_ONE("r15", P "5", "4")                                       \
        REG_CHECK_ONE("rbp", P "6", "5")                                       \
        "popq %%rax\n\t"                                                       \
        "popq %%rax\n\t"                                                       \
        "movq %%rax, %%rsp\n\t"                                                \
        "popq %%rbp\n\t"                                                       \
        "addq $128, %%rsp\n\t"                                                 \
        "movl %%ecx, %%eax\n\t"                                                \
        : "=&a"(bad), "+D"(co), "+S"(fn)                                       \
        :                                                                      \
        : "rcx", "rdx", "r8", "r9", "r10", "r11", "rbx", "r12", "r13", "r14",  \
          "r15", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6",       \
          "xmm7", "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", \
          "xmm15", "memory", "cc")
#elif defined(__aarch64__)
#define REG_CHECK_X(n, P, bit)                                                 \
    "mov x10, #0x" P #n "\n\t cmp x" #n ", x10\n\t cset x10, ne\n\t"          \
    "orr x9, x9, x10, lsl #" #bit "\n\t"
#define REG_CHECK_D(n, v, bit)                                                 \
    "fmov d0, #" v "\n\t fcmp d" #n ", d0\n\t cset x10, ne\n\t"                \
    "orr x9, x9, x10, lsl #" #bit "\n\t"
/* P is one digit; x19 gets 0xP19, d8 gets P1.0, d15 gets P8.0. */
#define REG_SWITCH(P)                                                          \
    __asm__ volatile(                                                          \
        "stp x29, x30, [sp, #-16]!\n\t"                                        \
        "mov x19, #0x" P "19\n\t mov x20, #0x" P "20\n\t"                     \
        "mov x21, #0x" P "21\n\t mov x22, #0x" P "22\n\t"                     \
        "mov x23, #0x" P "23\n\t mov x24, #0x" P "24\n\t"                     \
        "mov x25, #0x" P "25\n\t mov x26, #0x" P "26\n\t"                     \
        "mov x27, #0x" P "27\n\t mov x28, #0x" P "28\n\t"                     \
        "mov x29, #0x" P "29\n\t"                                              \
        "fmov d8, #" P "1.0\n\t fmov d9, #" P "2.0\n\t"                        \
        "fmov d10, #" P "3.0\n\t fmov d11, #" P "4.0\n\t"                      \
        "fmov d12, #" P "5.0\n\t fmov d13, #" P "6.0\n\t"                      \
        "fmov d14, #" P "7.0\n\t fmov d15, #" P "8.0\n\t"                      \
        "blr x1\n\t"                                                           \
        "mov x9, #0\n\t"                                                       \
        REG_CHECK_X(19, P, 0) REG_CHECK_X(20, P, 1) REG_CHECK_X(21, P, 2)     \
        REG_CHECK_X(22, P, 3) REG_CHECK_X(23, P, 4) REG_CHECK_X(24, P, 5)     \
        REG_CHECK_X(25, P, 6) REG_CHECK_X(26, P, 7) REG_CHECK_X(27, P, 8)     \
        REG_CHECK_X(28, P, 9) REG_CHECK_X(29, P, 10)                          \
        REG_CHECK_D(8, P "1.0", 11) REG_CHECK_D(9, P "2.0", 12)               \
        REG_CHECK_D(10, P "3.0", 13) REG_CHECK_D(11, P "4.0", 14)             \
        REG_CHECK_D(12, P "5.0", 15) REG_CHECK_D(13, P "6.0", 16)             \
        REG_CHECK_D(14, P "7.0", 17) REG_CHECK_D(15, P "8.0", 18)             \
        "ldp x29, x30, [sp], #16\n\t"                                          \
        "mov x0, x9\n\t"                                                       \
        : "+r"(x0), "+r"(x1)                                                   \
        :                                                                      \
        : "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11", "x12", \
          "x13", "x14", "x15", "x16", "x17", "x18", "x19", "x20", "x21",       \
          "x22", "x23", "x24", "x25", "x26", "x27", "x28", "x30", "d0", "d1",  \
          "d2", "d3", "d4", "d5", "d6", "d7", "d8", "d9", "d10", "d11", "d12", \
          "d13", "d14", "d15", "d16", "d17", "d18", "d19", "d20", "d21",       \
          "d22", "d23", "d24", "d25", "d26", "d27", "d28", "d29", "d30", "d31", \
          "memory", "cc")
#endif

/* Calls fn(co) (eco_resume, or eco_yield which ignores co) with the
 * callee-saved registers holding side's markers; returns a bit mask of the
 * registers that did not survive the call. */
static long switch_checking_registers(void *fn, eco_t *co, int side)
{
    long bad = 0;
#if defined(__x86_64__)
    if (side == 0)
        REG_SWITCH("0x111111111111111");
    else
        REG_SWITCH("0x777777777777777");
#elif defined(__aarch64__)
    /* Every other general register is clobbered, so x0 carries co in and
     * the result out. */
    register long x0 __asm__("x0") = (long)co;
    register void *x1 __asm__("x1") = fn;
    if (side == 0)
        REG_SWITCH("1");
    else
        REG_SWITCH("2");
    bad = x0;
#else
    (void)fn;
    (void)side;
    ck_assert_int_eq(co != NULL ? eco_resume(co) : eco_yield(), 0);
#endif
    return bad;
}

static void *register_checking_body(void *arg)
{
    long *co_bad = arg;
    for (int i = 0; i < 3; i++)
        *co_bad |= switch_checking_registers((void *)eco_yield, NULL, 1);
    return NULL;
}

START_TEST(callee_saved_registers_survive)
{
    long co_bad = 0;
    eco_t *co = eco_create(register_checking_body, &co_bad, NULL);
    ck_assert_ptr_nonnull(co);
    for (int i = 0; i < 4; i++)
        ck_assert_int_eq(switch_checking_registers((void *)eco_resume, co, 0), 0);
    ck_assert_int_eq(co_bad, 0);
    ck_assert_int_eq(eco_state(co), ECO_DONE);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

/* ---- floating-point control words are per coroutine ----
 * x86-64 only: the SysV ABI makes MXCSR and the x87 control word
 * callee-saved, so the switch keeps them.  On AArch64, FPCR is thread-wide
 * state (AAPCS64) and is shared by the coroutines of a thread. */
#if defined(__x86_64__)

static void *rounding_body(void *arg)
{
    int *seen = arg;
    seen[0] = fegetround();
    fesetround(FE_DOWNWARD);
    eco_yield();
    seen[1] = fegetround(); /* must still be ours after the caller ran */
    return NULL;
}

START_TEST(fp_control_words_kept)
{
    int seen[2] = {-1, -1};
    ck_assert_int_eq(fesetround(FE_UPWARD), 0);
    eco_t *co = eco_create(rounding_body, seen, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    /* The coroutine switched to FE_DOWNWARD; ours is untouched. */
    ck_assert_int_eq(fegetround(), FE_UPWARD);
    ck_assert_int_eq(fesetround(FE_TOWARDZERO), 0);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(fegetround(), FE_TOWARDZERO);
    ck_assert_int_eq(seen[0], FE_UPWARD); /* inherited from its creator */
    ck_assert_int_eq(seen[1], FE_DOWNWARD);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    fesetround(FE_TONEAREST);
}
END_TEST
#endif

/* ---- nested chains return to the right caller ---- */

struct chain {
    char log[64];
    int n;
    eco_t *b, *c;
};

static void logc(struct chain *ch, char c)
{
    ch->log[ch->n++] = c;
    ch->log[ch->n] = '\0';
}

static void *chain_c(void *arg)
{
    struct chain *ch = arg;
    logc(ch, 'c');
    ck_assert_int_eq(eco_state(ch->b), ECO_STACKED);
    eco_yield(); /* back to B, not to A or main */
    logc(ch, 'C');
    return NULL;
}

static void *chain_b(void *arg)
{
    struct chain *ch = arg;
    logc(ch, 'b');
    ch->c = eco_create(chain_c, ch, NULL);
    ck_assert_int_eq(eco_resume(ch->c), 0);
    logc(ch, 'B');
    eco_yield(); /* back to A */
    ck_assert_int_eq(eco_resume(ch->c), 0);
    ck_assert_int_eq(eco_join(ch->c, NULL), 0);
    logc(ch, 'x');
    return NULL;
}

static void *chain_a(void *arg)
{
    struct chain *ch = arg;
    logc(ch, 'a');
    ch->b = eco_create(chain_b, ch, NULL);
    ck_assert_int_eq(eco_resume(ch->b), 0);
    logc(ch, 'A');
    ck_assert_int_eq(eco_state(ch->b), ECO_PENDING);
    eco_yield(); /* back to main */
    ck_assert_int_eq(eco_resume(ch->b), 0);
    ck_assert_int_eq(eco_join(ch->b, NULL), 0);
    logc(ch, 'y');
    return NULL;
}

START_TEST(nested_chain_returns_to_caller)
{
    struct chain ch = {.n = 0};
    eco_t *a = eco_create(chain_a, &ch, NULL);
    ck_assert_int_eq(eco_resume(a), 0);
    ck_assert_str_eq(ch.log, "abcBA");
    ck_assert_int_eq(eco_resume(a), 0);
    ck_assert_str_eq(ch.log, "abcBACxy");
    ck_assert_int_eq(eco_state(a), ECO_DONE);
    ck_assert_int_eq(eco_join(a, NULL), 0);
}
END_TEST

/* ---- misuse returns errors ---- */

struct misuse {
    eco_t *self_seen;
    eco_t *parent;
    int resume_self_errno, resume_parent_errno, join_self_errno;
};

static void *misuse_child(void *arg)
{
    struct misuse *m = arg;
    ck_assert_int_eq(eco_resume(m->parent), -1);
    m->resume_parent_errno = errno;
    return NULL;
}

static void *misuse_body(void *arg)
{
    struct misuse *m = arg;
    m->self_seen = eco_self();
    ck_assert_int_eq(eco_state(m->self_seen), ECO_ACTIVE);
    ck_assert_int_eq(eco_resume(m->self_seen), -1);
    m->resume_self_errno = errno;
    ck_assert_int_eq(eco_join(m->self_seen, NULL), -1);
    m->join_self_errno = errno;
    m->parent = m->self_seen;
    eco_t *child = eco_create(misuse_child, m, NULL);
    ck_assert_int_eq(eco_resume(child), 0);
    ck_assert_int_eq(eco_join(child, NULL), 0);
    return NULL;
}

START_TEST(misuse_returns_errors)
{
    struct misuse m = {0};
    errno = 0;
    ck_assert_int_eq(eco_yield(), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_resume(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_join(NULL, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_detach(NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_ptr_null(eco_create(NULL, NULL, NULL));
    ck_assert_int_eq(errno, EINVAL);
    eco_attr_t attr;
    ck_assert_int_eq(eco_attr_init(&attr), 0);
    attr.stack_size = 100;
    ck_assert_ptr_null(eco_create(misuse_body, &m, &attr));
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_attr_init(NULL), -1);
    ck_assert_ptr_null(eco_self());

    eco_t *co = eco_create(misuse_body, &m, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(m.resume_self_errno, EBUSY);     /* ACTIVE */
    ck_assert_int_eq(m.resume_parent_errno, EBUSY);   /* STACKED */
    ck_assert_int_eq(m.join_self_errno, EDEADLK);
    ck_assert_int_eq(eco_state(co), ECO_DONE);
    ck_assert_int_eq(eco_resume(co), -1);             /* DONE */
    ck_assert_int_eq(errno, ESRCH);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

START_TEST(no_runtime_is_eperm)
{
    eco_teardown(); /* this test runs without one */
    ck_assert_ptr_null(eco_create(misuse_body, NULL, NULL));
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_yield(), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_go(misuse_body, NULL), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_sleep(1), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_loop(), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_ptr_null(eco_base());
    eco_stats_t st;
    ck_assert_int_eq(eco_stats(&st), -1);
    ck_assert_int_eq(errno, EPERM);
    ck_assert_int_eq(eco_setup(NULL), 0);
    ck_assert_int_eq(eco_setup(NULL), -1);
    ck_assert_int_eq(errno, EEXIST);
}
END_TEST

/* A coroutine handle used from a thread it does not belong to. */
static void *foreign_thread(void *arg)
{
    eco_t *co = arg;
    long r[4];
    r[0] = eco_resume(co) == -1 && errno == EPERM; /* no runtime here */
    eco_setup(NULL);
    r[1] = eco_resume(co) == -1 && errno == EPERM; /* another runtime's */
    r[2] = eco_join(co, NULL) == -1 && errno == EPERM;
    r[3] = eco_detach(co) == -1 && errno == EPERM;
    eco_teardown();
    return (void *)(intptr_t)(r[0] && r[1] && r[2] && r[3]);
}

static void *noop_body(void *arg)
{
    return arg;
}

START_TEST(foreign_thread_is_refused)
{
    eco_t *co = eco_create(noop_body, NULL, NULL);
    pthread_t t;
    void *ok = NULL;
    ck_assert_int_eq(pthread_create(&t, NULL, foreign_thread, co), 0);
    ck_assert_int_eq(pthread_join(t, &ok), 0);
    ck_assert_ptr_eq(ok, (void *)1);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

/* ---- join and detach ---- */

START_TEST(join_returns_value_and_frees)
{
    eco_stats_t st;
    eco_t *co = eco_create(noop_body, (void *)0xfeed, NULL);
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.alive, 1);
    size_t pooled_before = st.pooled;
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.alive, 0);
    void *ret = NULL;
    ck_assert_int_eq(eco_join(co, &ret), 0);
    ck_assert_ptr_eq(ret, (void *)0xfeed);
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.pooled, pooled_before + 1); /* the stack went back */
    /* The next coroutine reuses it: no new mapping. */
    size_t stacks = st.stacks;
    co = eco_create(noop_body, NULL, NULL);
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.stacks, stacks);
    ck_assert_uint_eq(st.pooled, pooled_before);
    ck_assert_int_eq(eco_detach(co), 0);
    ck_assert_int_eq(eco_resume(co), 0); /* runs, returns, freed at once */
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.pooled, pooled_before + 1);
}
END_TEST

struct joiner {
    eco_t *target;
    void *got;
    int order[3];
    int n;
};

static void *slow_target(void *arg)
{
    struct joiner *j = arg;
    j->order[j->n++] = 1;
    eco_sleep(20);
    j->order[j->n++] = 2;
    return (void *)0xabc;
}

static void *join_from_coroutine(void *arg)
{
    struct joiner *j = arg;
    ck_assert_int_eq(eco_join(j->target, &j->got), 0);
    j->order[j->n++] = 3;
    return NULL;
}

START_TEST(join_from_coroutine_waits)
{
    struct joiner j = {0};
    j.target = eco_create(slow_target, &j, NULL);
    ck_assert_int_eq(eco_resume(j.target), 0); /* parks in sleep */
    eco_t *w = eco_create(join_from_coroutine, &j, NULL);
    ck_assert_int_eq(eco_resume(w), 0); /* parks in join */
    ck_assert_int_eq(eco_state(w), ECO_PENDING);
    /* Someone else joining too is refused. */
    ck_assert_int_eq(eco_join(j.target, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_join(w, NULL), 0); /* runs the loop from main */
    ck_assert_ptr_eq(j.got, (void *)0xabc);
    ck_assert_int_eq(j.n, 3);
    ck_assert_int_eq(j.order[0], 1);
    ck_assert_int_eq(j.order[1], 2);
    ck_assert_int_eq(j.order[2], 3);
}
END_TEST

START_TEST(join_from_main_deadlock_is_reported)
{
    eco_t *co = eco_create(noop_body, NULL, NULL); /* never resumed */
    ck_assert_int_eq(eco_join(co, NULL), -1);
    ck_assert_int_eq(errno, EDEADLK);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
}
END_TEST

START_TEST(detach_rules)
{
    eco_t *co = eco_create(noop_body, NULL, NULL);
    ck_assert_int_eq(eco_detach(co), 0);
    ck_assert_int_eq(eco_detach(co), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_join(co, NULL), -1);
    ck_assert_int_eq(errno, EINVAL);
    ck_assert_int_eq(eco_resume(co), 0); /* freed when it returns */
    /* Detaching a DONE coroutine frees it at once. */
    eco_stats_t st;
    co = eco_create(noop_body, NULL, NULL);
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_stats(&st), 0);
    size_t pooled = st.pooled;
    ck_assert_int_eq(eco_detach(co), 0);
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.pooled, pooled + 1);
}
END_TEST

/* ---- go: started by the loop, in creation order ---- */

static int go_log[100];
static int go_n;

static void *go_body(void *arg)
{
    go_log[go_n++] = (int)(intptr_t)arg;
    eco_t *self = eco_self();
    ck_assert_ptr_nonnull(self);
    /* Owned by the runtime: the user may not resume it. */
    return NULL;
}

START_TEST(go_starts_in_order)
{
    go_n = 0;
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(eco_go(go_body, (void *)(intptr_t)i), 0);
    ck_assert_int_eq(go_n, 0); /* nothing runs before the loop */
    ck_assert_int_eq(eco_loop(), 0);
    ck_assert_int_eq(go_n, 100);
    for (int i = 0; i < 100; i++)
        ck_assert_int_eq(go_log[i], i);
    eco_stats_t st;
    ck_assert_int_eq(eco_stats(&st), 0);
    ck_assert_uint_eq(st.alive, 0);
}
END_TEST

/* Yield from a coroutine the loop started: it takes turns with the others. */
static char turn_log[64];
static int turn_n;

static void *turn_body(void *arg)
{
    char c = (char)(intptr_t)arg;
    for (int i = 0; i < 3; i++) {
        turn_log[turn_n++] = c;
        ck_assert_int_eq(eco_yield(), 0);
    }
    return NULL;
}

START_TEST(yield_in_loop_takes_turns)
{
    turn_n = 0;
    eco_go(turn_body, (void *)'a');
    eco_go(turn_body, (void *)'b');
    ck_assert_int_eq(eco_loop(), 0);
    turn_log[turn_n] = '\0';
    ck_assert_str_eq(turn_log, "ababab");
}
END_TEST

/* ---- names and ids ---- */

START_TEST(names_and_ids)
{
    eco_attr_t attr;
    eco_attr_init(&attr);
    attr.name = "a-rather-long-name-that-will-be-truncated-somewhere";
    eco_t *a = eco_create(noop_body, NULL, &attr);
    eco_t *b = eco_create(noop_body, NULL, NULL);
    ck_assert_uint_eq(strlen(eco_name(a)), ECO_NAME_MAX - 1);
    ck_assert(strncmp(eco_name(a), attr.name, ECO_NAME_MAX - 1) == 0);
    ck_assert_str_eq(eco_name(b), "");
    ck_assert_uint_ne(eco_id(a), eco_id(b));
    ck_assert_uint_gt(eco_id(a), 0);
    eco_resume(a);
    eco_resume(b);
    eco_join(a, NULL);
    eco_join(b, NULL);
}
END_TEST

/* ---- signals and switches ---- */

/* A signal that arrives while a coroutine runs is handled by the time the
 * coroutine has switched away, and switches leave the thread's signal mask
 * as it was.  (ThreadSanitizer holds a signal that arrives outside a libc
 * call for the next one of the same coroutine; the TSan build blocks
 * signals across each switch so that none stays with a coroutine that
 * never runs again.) */
static volatile sig_atomic_t usr1_handled;
static atomic_int usr1_stage; /* 1: the coroutine runs; 2: the signal is sent */
static pid_t usr1_tid;

static void on_usr1(int sig)
{
    (void)sig;
    usr1_handled = 1;
}

static void *send_usr1(void *arg)
{
    (void)arg;
    while (atomic_load(&usr1_stage) != 1)
        sched_yield();
    /* As if from another process (SI_QUEUE): ThreadSanitizer handles a
     * pthread_kill from its own process at once. */
    siginfo_t si;
    memset(&si, 0, sizeof si);
    si.si_signo = SIGUSR1;
    si.si_code = SI_QUEUE;
    si.si_pid = getpid();
    si.si_uid = getuid();
    syscall(SYS_rt_tgsigqueueinfo, getpid(), usr1_tid, SIGUSR1, &si);
    atomic_store(&usr1_stage, 2);
    return NULL;
}

/* Whether SIGUSR1 waits for this thread, asked of the kernel directly (a
 * libc call would let ThreadSanitizer deliver it). */
static int usr1_pending(void)
{
    uint64_t set = 0;
    syscall(SYS_rt_sigpending, &set, sizeof set);
    return (int)((set >> (SIGUSR1 - 1)) & 1);
}

static int blocked(int sig)
{
    sigset_t now;
    pthread_sigmask(SIG_BLOCK, NULL, &now);
    return sigismember(&now, sig);
}

static void *signalled_body(void *arg)
{
    (void)arg;
    atomic_store(&usr1_stage, 1);
    while (atomic_load(&usr1_stage) != 2)
        ;
    for (long i = 0; i < 1000000 && usr1_pending(); i++)
        ;
    ck_assert_int_eq(eco_yield(), 0);
    /* A mask the coroutine sets is the thread's, across its switches. */
    sigset_t usr2;
    sigemptyset(&usr2);
    sigaddset(&usr2, SIGUSR2);
    pthread_sigmask(SIG_BLOCK, &usr2, NULL);
    ck_assert_int_eq(eco_yield(), 0);
    ck_assert(blocked(SIGUSR2));
    pthread_sigmask(SIG_UNBLOCK, &usr2, NULL);
    return NULL;
}

START_TEST(signals_across_switches)
{
    struct sigaction sa = {.sa_handler = on_usr1};
    sigemptyset(&sa.sa_mask);
    ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
    usr1_handled = 0;
    atomic_store(&usr1_stage, 0);
    usr1_tid = (pid_t)syscall(SYS_gettid);
    pthread_t t;
    ck_assert_int_eq(pthread_create(&t, NULL, send_usr1, NULL), 0);
    eco_t *co = eco_create(signalled_body, NULL, NULL);
    ck_assert_ptr_nonnull(co);
    ck_assert(!blocked(SIGUSR1) && !blocked(SIGUSR2));
    ck_assert_int_eq(eco_resume(co), 0); /* back from its first yield */
    ck_assert_int_eq(usr1_handled, 1);
    ck_assert(!blocked(SIGUSR1) && !blocked(SIGUSR2));
    ck_assert_int_eq(eco_resume(co), 0); /* it blocked SIGUSR2 */
    ck_assert(blocked(SIGUSR2));
    ck_assert(!blocked(SIGUSR1));
    ck_assert_int_eq(eco_resume(co), 0);
    ck_assert_int_eq(eco_join(co, NULL), 0);
    ck_assert(!blocked(SIGUSR1) && !blocked(SIGUSR2));
    ck_assert_int_eq(pthread_join(t, NULL), 0);
}
END_TEST

int main(void)
{
    Suite *s = suite_create("coro");
    TCase *tc = rt_tcase("lifecycle");
    tcase_add_test(tc, pingpong_keeps_locals);
    tcase_add_test(tc, callee_saved_registers_survive);
#if defined(__x86_64__)
    tcase_add_test(tc, fp_control_words_kept);
#endif
    tcase_add_test(tc, nested_chain_returns_to_caller);
    tcase_add_test(tc, misuse_returns_errors);
    tcase_add_test(tc, no_runtime_is_eperm);
    tcase_add_test(tc, foreign_thread_is_refused);
    tcase_add_test(tc, join_returns_value_and_frees);
    tcase_add_test(tc, join_from_coroutine_waits);
    tcase_add_test(tc, join_from_main_deadlock_is_reported);
    tcase_add_test(tc, detach_rules);
    tcase_add_test(tc, go_starts_in_order);
    tcase_add_test(tc, yield_in_loop_takes_turns);
    tcase_add_test(tc, names_and_ids);
    tcase_add_test(tc, signals_across_switches);
    suite_add_tcase(s, tc);
    return run_suite(s);
}
