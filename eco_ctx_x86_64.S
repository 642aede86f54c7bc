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
 * Frame saved on the stack being left, from the saved stack pointer up:
 *     +0   r15   +8  r14   +16 r13   +24 r12   +32 rbx   +40 rbp
 *     +48  return address (pushed by the caller's `call`)
 * The two control words go to the record instead (eco_asm.h), whose first
 * cache line the switch writes anyway for the stack pointer: no stack
 * adjustment for them.
 *
 * No red zone is at risk: everything is pushed below rsp, and the 128 bytes
 * below a leaf's rsp are the leaf's own, which we are not.
 *
 * The switch ends with `pop; jmp *` rather than `ret`.  The CPU predicts a
 * `ret` from its return stack, which holds the return address of *this*
 * side's call, never the other side's: every `ret` across a switch would be
 * mispredicted (measured here: 12 ns per switch with `ret`, 5 ns without).
 * An indirect jump is predicted from its own history instead.  eco_resume
 * and eco_yield end in the switch itself, so no `ret` crosses a switch.
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
 * The body every switch shares: save this side's callee-saved state on its
 * stack and in its record `from`, publish the stack pointer in from->sp,
 * adopt to->sp and restore what the other side saved there and in `to`.
 * Only the return differs.  Clobbers nothing but the two stacks, the two
 * records' switch fields and the callee-saved registers it restores.
 */
.macro ECO_SWAP_STACKS from, to
        /* Callee-saved integer registers: the code we return into after
         * the switch back expects them intact. */
        pushq   %rbp
        pushq   %rbx
        pushq   %r12
        pushq   %r13
        pushq   %r14
        pushq   %r15
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
        /* Restore the target in the reverse order of the saves above.
         * (Skipping the loads when the words are unchanged was measured
         * slower: reading back the fresh stmxcsr/fnstcw stores stalls
         * store forwarding.) */
        ldmxcsr ECO_OFF_MXCSR(\to)
        fldcw   ECO_OFF_FPUCW(\to)
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
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
 * site (eco__park passing the turn from one to the next) the return stack
 * then predicts the `ret` and every return after it, since both sides share
 * their call chain up to the user's code; eco_ctx_switch's `jmp` would leave
 * it one entry off, and each of those returns mispredicted.
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
 * same transitions; these must stay in step with them.
 *
 * The runtime pointer is eco__rt, an initial-exec TLS variable: its offset
 * from %fs comes from the GOT (the linker turns that into a constant in an
 * executable).
 */
        .globl  eco_resume
        .type   eco_resume, @function
        .p2align 4
eco_resume:                             /* rdi = co */
        .cfi_startproc
        ECO_ENDBR
        movq    eco__rt@gottpoff(%rip), %rax
        movq    %fs:(%rax), %rax        /* rax = rt, or NULL */
        testq   %rdi, %rdi
        jz      1f
        /* co->rt is never NULL, so this also catches "no runtime". */
        cmpq    %rax, ECO_OFF_RT(%rdi)
        jne     1f
        /* PENDING and INIT are the two lowest states: one compare. */
        cmpb    $ECO_ASM_S_INIT, ECO_OFF_STATE(%rdi)
        ja      1f
        /* enter(): co runs, resumed by the user (by_loop = 0, stored with
         * state as one 16-bit word); the current one is stacked under it. */
        movq    ECO_RT_OFF_CURRENT(%rax), %rsi
        movw    $ECO_ASM_S_ACTIVE, ECO_OFF_STATE(%rdi)
        movq    %rsi, ECO_OFF_CALLER(%rdi)
        movb    $ECO_ASM_S_STACKED, ECO_OFF_STATE(%rsi)
        movq    %rdi, ECO_RT_OFF_CURRENT(%rax)
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
        movq    eco__rt@gottpoff(%rip), %rax
        movq    %fs:(%rax), %rax        /* rax = rt, or NULL */
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
 * Writes below top a frame in eco_ctx_switch's layout and returns its
 * address, the stack pointer to switch to.  The frame's return address is
 * eco_ctx_start; after the 56-byte frame is popped rsp = top - 16, aligned,
 * and the 16 bytes above it stay zero (a null return address for unwinders).
 * The control words are copied from the creating thread into co, as clone()
 * copies them for a new thread, so a program that runs with, say, FTZ/DAZ
 * set keeps them in its coroutines.
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
        leaq    -72(%rdi), %rax         /* the saved stack pointer */
        movq    $0, 0(%rax)             /* r15 */
        movq    $0, 8(%rax)             /* r14 */
        movq    %rsi, 16(%rax)          /* r13: entry */
        movq    %rdx, 24(%rax)          /* r12: co */
        movq    $0, 32(%rax)            /* rbx */
        movq    $0, 40(%rax)            /* rbp: ends frame-pointer chains */
        leaq    eco_ctx_start(%rip), %rcx
        movq    %rcx, 48(%rax)
        movq    $0, 56(%rax)
        movq    $0, 64(%rax)
        ret
        .cfi_endproc
        .size   eco_ctx_init, .-eco_ctx_init

#endif /* __x86_64__ */

        .section .note.GNU-stack,"",@progbits
