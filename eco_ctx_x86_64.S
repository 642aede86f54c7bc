/*
 * eco_ctx_x86_64.S - coroutine context switch for x86-64, System V ABI.
 *
 * A switch is an ordinary function call as far as the compiler can tell, so
 * only what the ABI makes callee-saved has to survive it (SysV ABI 3.2.1,
 * 3.2.3): rbx, rbp, r12-r15, rsp, the control bits of MXCSR and the x87
 * control word.  Everything else (rax, rcx, rdx, rsi, rdi, r8-r11, xmm0-15,
 * the status flags, the x87 stack) the caller has already given up.
 *
 * Frame saved on the stack being left, from the saved stack pointer up:
 *     +0   MXCSR (4 bytes)  +4  x87 control word (2 bytes), 2 bytes pad
 *     +8   r15   +16 r14   +24 r13   +32 r12   +40 rbx   +48 rbp
 *     +56  return address (pushed by the caller's `call`)
 * 64 bytes in all, so a stack that was 16-aligned before the `call` is
 * 16-aligned again at +0: nothing here needs alignment, but it keeps the
 * first-entry arithmetic in eco_ctx_init simple.
 *
 * No red zone is at risk: everything is pushed below rsp, and the 128 bytes
 * below a leaf's rsp are the leaf's own, which we are not.
 *
 * The switch ends with `pop; jmp *` rather than `ret`.  The CPU predicts a
 * `ret` from its return stack, which holds the return address of *this*
 * side's call, never the other side's: every `ret` across a switch would be
 * mispredicted (measured here: 12 ns per switch with `ret`, 5 ns without).
 * An indirect jump is predicted from its own history instead.  eco_resume
 * and eco_yield tail-call eco_ctx_switch, so no `ret` crosses a switch.
 */

#if defined(__x86_64__)

#if defined(__CET__)
#define ECO_ENDBR endbr64
#else
#define ECO_ENDBR
#endif

        .text

/*
 * The body both switches share: save this side's callee-saved state on its
 * stack, publish the stack pointer in *rdi, adopt rsi as the stack pointer
 * and restore what the other side saved there.  Only the return differs.
 */
.macro ECO_SWAP_STACKS
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
        subq    $8, %rsp
        stmxcsr (%rsp)
        fnstcw  4(%rsp)
        /* The switch proper: publish where we stopped, adopt the other
         * stack.  After the second mov we run on the target's stack. */
        movq    %rsp, (%rdi)
        movq    %rsi, %rsp
        /* Restore the target in the reverse order of the saves above.
         * (Skipping the loads when the words are unchanged was measured
         * slower: reading back the fresh stmxcsr/fnstcw stores stalls
         * store forwarding.) */
        ldmxcsr (%rsp)
        fldcw   4(%rsp)
        addq    $8, %rsp
        popq    %r15
        popq    %r14
        popq    %r13
        popq    %r12
        popq    %rbx
        popq    %rbp
.endm

/* int eco_ctx_switch(void **save, void *load)   rdi = save, rsi = load
 * Returns 0 to whoever is switched back to later. */
        .globl  eco_ctx_switch
        .hidden eco_ctx_switch
        .type   eco_ctx_switch, @function
        .p2align 4
eco_ctx_switch:
        .cfi_startproc
        ECO_ENDBR
        ECO_SWAP_STACKS
        /* Return into the target's own call of eco_ctx_switch (or of the
         * function that tail-called it), or, on a fresh stack, into
         * eco_ctx_start, returning 0. */
        popq    %rcx
        xorl    %eax, %eax
        jmp     *%rcx
        .cfi_endproc
        .size   eco_ctx_switch, .-eco_ctx_switch

/*
 * int eco_ctx_switch_ret(void **save, void *load): eco_ctx_switch ending in
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
        ECO_SWAP_STACKS
        xorl    %eax, %eax
        ret
        .cfi_endproc
        .size   eco_ctx_switch_ret, .-eco_ctx_switch_ret

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
 * eco_ctx_start; after the 64-byte frame is popped rsp = top - 16, aligned,
 * and the 16 bytes above it stay zero (a null return address for unwinders).
 * The control words are copied from the creating thread, as clone() copies
 * them for a new thread, so a program that runs with, say, FTZ/DAZ set
 * keeps them in its coroutines.
 */
        .globl  eco_ctx_init
        .hidden eco_ctx_init
        .type   eco_ctx_init, @function
        .p2align 4
eco_ctx_init:
        .cfi_startproc
        ECO_ENDBR
        leaq    -80(%rdi), %rax         /* the saved stack pointer */
        stmxcsr (%rax)
        fnstcw  4(%rax)
        movw    $0, 6(%rax)
        movq    $0, 8(%rax)             /* r15 */
        movq    $0, 16(%rax)            /* r14 */
        movq    %rsi, 24(%rax)          /* r13: entry */
        movq    %rdx, 32(%rax)          /* r12: co */
        movq    $0, 40(%rax)            /* rbx */
        movq    $0, 48(%rax)            /* rbp: ends frame-pointer chains */
        leaq    eco_ctx_start(%rip), %rcx
        movq    %rcx, 56(%rax)
        movq    $0, 64(%rax)
        movq    $0, 72(%rax)
        ret
        .cfi_endproc
        .size   eco_ctx_init, .-eco_ctx_init

#endif /* __x86_64__ */

        .section .note.GNU-stack,"",@progbits
