/*
 * eco_ctx_x86_64.S - coroutine context switch for x86-64, System V ABI, and
 * the fast paths of eco_resume and eco_yield fused with it.
 *
 * A switch is an ordinary function call as far as the compiler can tell, so
 * only what the ABI makes callee-saved has to survive it (SysV ABI 3.2.1,
 * 3.2.3): rbx, rbp, r12-r15, rsp, the control bits of MXCSR and the x87
 * control word.  Everything else (rax, rcx, rdx, rsi, rdi, r8-r11, xmm0-15,
 * the status flags, the x87 stack) the caller has already given up.
 *
 * Where a switched-out side keeps its state:
 *     the record (eco_asm.h): rbp, rbx, r12-r15 in ECO_OFF_REGS, MXCSR and
 *         the x87 control word next to the saved stack pointer;
 *     its stack: only the return address its `call` pushed, at the saved
 *         stack pointer.
 * Registers go to the record rather than being pushed: the record's lines
 * are written anyway, and a parked coroutine's stack then holds one line
 * fewer that a wake-up has to bring back (at a thousand connections that
 * line is a cache miss).  The instruction count is the same as with pushes,
 * but a build that pushed them (and the control words) ran bench_switch at
 * 1.085x and chan_bench pingpong at 1.04x the CPU time of this one
 * (bench/ab_core.sh, 9 rounds, BENCHMARKS.md "Tricks").
 *
 * No red zone is at risk: the stack is only read (the return address), and
 * nothing is written below rsp.  Each entry point is 16-byte aligned
 * (.p2align 4) for the decoder.

 * The switch ends with `pop; jmp *` rather than `ret`.  The CPU predicts a
 * `ret` from its return stack, which holds the return address of *this*
 * side's call, never the other side's: every `ret` across a switch would be
 * mispredicted (measured here: 12 ns per switch with `ret`, 5 ns without).
 * An indirect jump is predicted from its own history instead.  eco_resume
 * and eco_yield end in the switch itself, so no `ret` crosses a switch;
 * the one exception is eco_ctx_switch_ret, for the case where the `ret` is
 * the right prediction.
 */

#include "eco_asm.h"

#if defined(__x86_64__)

#if defined(__CET__)
#define ECO_ENDBR endbr64
#else
#define ECO_ENDBR
#endif

        .text

/*
 * The body every switch shares: save this side's callee-saved state in its
 * record `from`, publish the stack pointer in from->sp, adopt to->sp and
 * restore what the other side saved in `to`.  Only the return differs.
 * `from` and `to` must not be rbp, rbx or r12-r15 (they are reloaded).
 */
.macro ECO_SWAP_STACKS from, to
        /* Callee-saved integer registers: the code we return into after
         * the switch back expects them intact. */
        movq    %rbp, ECO_OFF_REGS+0(\from)
        movq    %rbx, ECO_OFF_REGS+8(\from)
        movq    %r12, ECO_OFF_REGS+16(\from)
        movq    %r13, ECO_OFF_REGS+24(\from)
        movq    %r14, ECO_OFF_REGS+32(\from)
        movq    %r15, ECO_OFF_REGS+40(\from)
        /* Floating-point control words (rounding, exception masks, FTZ/DAZ,
         * x87 precision) are callee-saved too; a coroutine that changes its
         * rounding mode must not change its resumer's.  The status bits
         * (exception flags) are caller-saved and go along unchanged. */
        stmxcsr ECO_OFF_MXCSR(\from)
        fnstcw  ECO_OFF_FPUCW(\from)
        /* The switch proper: publish where we stopped, adopt the other
         * stack.  After the second mov we run on the target's stack. */
        movq    %rsp, ECO_OFF_SP(\from)
        movq    ECO_OFF_SP(\to), %rsp
        /* Restore the target.  (Skipping the control-word loads when the
         * words are unchanged was measured slower: reading back the fresh
         * stmxcsr/fnstcw stores stalls store forwarding.) */
        ldmxcsr ECO_OFF_MXCSR(\to)
        fldcw   ECO_OFF_FPUCW(\to)
        movq    ECO_OFF_REGS+0(\to), %rbp
        movq    ECO_OFF_REGS+8(\to), %rbx
        movq    ECO_OFF_REGS+16(\to), %r12
        movq    ECO_OFF_REGS+24(\to), %r13
        movq    ECO_OFF_REGS+32(\to), %r14
        movq    ECO_OFF_REGS+40(\to), %r15
.endm

/* The end of a switch that returns to a call of eco_ctx_switch, eco_resume
 * or eco_yield (or, on a fresh stack, enters eco_ctx_start), returning 0. */
.macro ECO_SWITCH_RETURN
        popq    %rcx
        xorl    %eax, %eax
        jmp     *%rcx
.endm

/* int eco_ctx_switch(eco_t *from, eco_t *to)   rdi = from, rsi = to
 * Returns 0 to whoever is switched back to later. */
        .globl  eco_ctx_switch
        .hidden eco_ctx_switch
        .type   eco_ctx_switch, @function
        .p2align 4
eco_ctx_switch:
        .cfi_startproc
        ECO_ENDBR
        ECO_SWAP_STACKS %rdi, %rsi
        ECO_SWITCH_RETURN
        .cfi_endproc
        .size   eco_ctx_switch, .-eco_ctx_switch

/*
 * int eco_ctx_switch_ret(eco_t *from, eco_t *to): eco_ctx_switch ending in
 * a `ret`.  For a switch between two coroutines parked at the same call
 * (eco__park_switch passing the turn from one to the next) the return
 * stack's top entry is then the right address, and so are those of the
 * returns after it, as far as both sides' call chains agree;
 * eco_ctx_switch's `jmp` would leave the return stack one entry off, and
 * each of those returns mispredicted.
 */
        .globl  eco_ctx_switch_ret
        .hidden eco_ctx_switch_ret
        .type   eco_ctx_switch_ret, @function
        .p2align 4
eco_ctx_switch_ret:
        .cfi_startproc
        ECO_ENDBR
        ECO_SWAP_STACKS %rdi, %rsi
        xorl    %eax, %eax
        ret
        .cfi_endproc
        .size   eco_ctx_switch_ret, .-eco_ctx_switch_ret

#if defined(ECO_ASM_FAST_PATHS)
/*
 * int eco_resume(eco_t *co) and int eco_yield(void): the common case of
 * eco.c's eco__resume_slow and eco__yield_slow, with the bookkeeping done
 * in registers and the switch inline, so a round trip is two of these and
 * nothing else.  Anything unusual (a NULL or foreign coroutine, a state
 * that cannot be resumed, no runtime, a yield from the main stack or from a
 * coroutine the loop resumed) jumps to the C version, which repeats the
 * checks, sets errno or takes the slow road.  The C versions implement the
 * same transitions; these must stay in step with them.  Measured when they
 * came in (BENCHMARKS.md, Core): 42.5 -> 37.5 instructions per switch, and
 * the switch from 1.00-1.11x Boost fcontext's time to 0.98x.
 */

/* reg = this thread's eco__rt, or NULL.  An initial-exec TLS variable: its
 * offset from %fs comes from the GOT (the linker turns that into a constant
 * in an executable). */
.macro ECO_LOAD_RT reg
        movq    eco__rt@gottpoff(%rip), \reg
        movq    %fs:(\reg), \reg
.endm

        .globl  eco_resume
        .type   eco_resume, @function
        .p2align 4
eco_resume:                             /* rdi = co */
        .cfi_startproc
        ECO_ENDBR
        ECO_LOAD_RT %rax
        testq   %rdi, %rdi
        jz      1f
        /* co->rt is never NULL, so this also catches "no runtime". */
        cmpq    %rax, ECO_OFF_RT(%rdi)
        jne     1f
        /* PENDING and INIT are the two lowest states: one compare. */
        cmpb    $ECO_ASM_S_INIT, ECO_OFF_STATE(%rdi)
        ja      1f
        /* enter(): co runs, resumed by the user (by_loop = 0); the
         * current one is stacked under it; one more resume counted. */
        movq    ECO_RT_OFF_CURRENT(%rax), %rsi
        movb    $ECO_ASM_S_ACTIVE, ECO_OFF_STATE(%rdi)
        movb    $0, ECO_OFF_BY_LOOP(%rdi)
        movq    %rsi, ECO_OFF_CALLER(%rdi)
        movb    $ECO_ASM_S_STACKED, ECO_OFF_STATE(%rsi)
        movq    %rdi, ECO_RT_OFF_CURRENT(%rax)
        incq    ECO_RT_OFF_RESUMES(%rax)
        ECO_SWAP_STACKS %rsi, %rdi
        ECO_SWITCH_RETURN
1:      jmp     eco__resume_slow
        .cfi_endproc
        .size   eco_resume, .-eco_resume

        .globl  eco_yield
        .type   eco_yield, @function
        .p2align 4
eco_yield:
        .cfi_startproc
        ECO_ENDBR
        ECO_LOAD_RT %rax
        testq   %rax, %rax
        jz      1f
        movq    ECO_RT_OFF_CURRENT(%rax), %rdi
        /* by_loop is 1 on the main stack too: one test sends both a
         * coroutine the loop resumed and the main stack to the C code. */
        cmpb    $0, ECO_OFF_BY_LOOP(%rdi)
        jne     1f
        /* co goes back to PENDING; its caller runs again. */
        movq    ECO_OFF_CALLER(%rdi), %rsi
        movb    $ECO_ASM_S_PENDING, ECO_OFF_STATE(%rdi)
        movq    %rsi, ECO_RT_OFF_CURRENT(%rax)
        movb    $ECO_ASM_S_ACTIVE, ECO_OFF_STATE(%rsi)
        ECO_SWAP_STACKS %rdi, %rsi
        ECO_SWITCH_RETURN
1:      jmp     eco__yield_slow
        .cfi_endproc
        .size   eco_yield, .-eco_yield
#endif /* ECO_ASM_FAST_PATHS */

/*
 * First code on a fresh stack, reached by a switch's return with
 * r12 = the coroutine and r13 = its entry function (both set by
 * eco_ctx_init).  rsp is 16-aligned here, so the `call` leaves it 8 mod 16
 * at the entry function's first instruction, exactly as after any call.
 * The entry function never returns: a coroutine ends by switching away.
 */
        .type   eco_ctx_start, @function
        .p2align 4
eco_ctx_start:
        .cfi_startproc
        /* Outermost frame: tell unwinders (gdb, backtrace) to stop here. */
        .cfi_undefined rip
        movq    %r12, %rdi
        callq   *%r13
        ud2
        .cfi_endproc
        .size   eco_ctx_start, .-eco_ctx_start

/*
 * void *eco_ctx_init(void *top, void (*entry)(eco_t *), eco_t *co)
 *     rdi = top (16-aligned), rsi = entry, rdx = co
 * Sets co's saved registers (r12 = co, r13 = entry, the rest 0: rbp = 0
 * ends frame-pointer chains) and writes below top the return address
 * eco_ctx_start; returns that slot's address, the stack pointer to switch
 * to.  After the switch pops it rsp = top - 16, aligned, and the 16 bytes
 * above stay zero (a null return address for unwinders).  The control words
 * are copied from the creating thread into co, as clone() copies them for
 * a new thread, so a program that runs with, say, FTZ/DAZ set keeps them
 * in its coroutines.
 */
        .globl  eco_ctx_init
        .hidden eco_ctx_init
        .type   eco_ctx_init, @function
        .p2align 4
eco_ctx_init:
        .cfi_startproc
        ECO_ENDBR
        stmxcsr ECO_OFF_MXCSR(%rdx)
        fnstcw  ECO_OFF_FPUCW(%rdx)
        movq    $0, ECO_OFF_REGS+0(%rdx)        /* rbp */
        movq    $0, ECO_OFF_REGS+8(%rdx)        /* rbx */
        movq    %rdx, ECO_OFF_REGS+16(%rdx)     /* r12: co */
        movq    %rsi, ECO_OFF_REGS+24(%rdx)     /* r13: entry */
        movq    $0, ECO_OFF_REGS+32(%rdx)       /* r14 */
        movq    $0, ECO_OFF_REGS+40(%rdx)       /* r15 */
        leaq    -24(%rdi), %rax         /* the saved stack pointer */
        leaq    eco_ctx_start(%rip), %rcx
        movq    %rcx, 0(%rax)
        movq    $0, 8(%rax)
        movq    $0, 16(%rax)
        ret
        .cfi_endproc
        .size   eco_ctx_init, .-eco_ctx_init

#endif /* __x86_64__ */

        .section .note.GNU-stack,"",@progbits
