/*
 * eco_ctx_aarch64.S - coroutine context switch for AArch64, AAPCS64.
 *
 * A switch is an ordinary call as far as the compiler can tell, so only
 * what AAPCS64 makes callee-saved has to survive it (AAPCS64 6.1.1, 6.1.2):
 * x19-x28, the frame pointer x29, the link register x30 (our return
 * address), sp, and the low 64 bits of v8-v15 (d8-d15).  x0-x18, the upper
 * halves of v8-v15, v0-v7, v16-v31 and the flags the caller has given up.
 *
 * FPCR (rounding mode, flush-to-zero) is not switched: AAPCS64 treats it as
 * thread-global state that only functions documented to do so change, and a
 * write to it can stall the pipeline.  FPSR holds only cumulative flags.
 *
 * Frame saved on the stack being left, from the saved stack pointer up:
 *     +0   x19 x20   +16  x21 x22   +32  x23 x24   +48  x25 x26
 *     +64  x27 x28   +80  x29 x30   +96  d8 d9     +112 d10 d11
 *     +128 d12 d13   +144 d14 d15
 * 160 bytes, a multiple of 16, so sp stays 16-aligned as AAPCS64 requires
 * at every instruction that uses it as a base.  AArch64 Linux has no red
 * zone, so nothing below sp is in use.
 */

#if defined(__aarch64__)

        .text

/* int eco_ctx_switch(eco_t *from, eco_t *to)   x0 = from, x1 = to
 * (the saved stack pointer is the first word of a record, eco_asm.h) */
        .globl  eco_ctx_switch
        .hidden eco_ctx_switch
        .type   eco_ctx_switch, %function
        .p2align 4
eco_ctx_switch:
        .cfi_startproc
        sub     sp, sp, #160
        /* Callee-saved general registers, with x29/x30 as a pair so the
         * return address travels with the frame. */
        stp     x19, x20, [sp, #0]
        stp     x21, x22, [sp, #16]
        stp     x23, x24, [sp, #32]
        stp     x25, x26, [sp, #48]
        stp     x27, x28, [sp, #64]
        stp     x29, x30, [sp, #80]
        /* Callee-saved FP registers: only their low 64 bits are. */
        stp     d8,  d9,  [sp, #96]
        stp     d10, d11, [sp, #112]
        stp     d12, d13, [sp, #128]
        stp     d14, d15, [sp, #144]
        /* The switch proper: publish where we stopped (sp cannot be the
         * source of str, hence x9), adopt the other stack. */
        mov     x9, sp
        str     x9, [x0]
        ldr     x9, [x1]
        mov     sp, x9
        /* Restore the target in the layout above. */
        ldp     x19, x20, [sp, #0]
        ldp     x21, x22, [sp, #16]
        ldp     x23, x24, [sp, #32]
        ldp     x25, x26, [sp, #48]
        ldp     x27, x28, [sp, #64]
        ldp     x29, x30, [sp, #80]
        ldp     d8,  d9,  [sp, #96]
        ldp     d10, d11, [sp, #112]
        ldp     d12, d13, [sp, #128]
        ldp     d14, d15, [sp, #144]
        add     sp, sp, #160
        /* To the target's own call of eco_ctx_switch (or of the function
         * that tail-called it), or, on a fresh stack, to eco_ctx_start (x30
         * as set by eco_ctx_init), returning 0: eco_resume and eco_yield
         * return our value.  `br` rather than `ret`: a `ret` is predicted
         * from the return stack, which holds this side's return address,
         * never the other side's. */
        mov     w0, #0
        br      x30
        .cfi_endproc
        .size   eco_ctx_switch, .-eco_ctx_switch

/* eco_ctx_switch_ret: the x86-64 file has a variant ending in `ret` for
 * eco__park_switch's hand-overs (measured there); here, unmeasured, one
 * switch serves both. */
        .globl  eco_ctx_switch_ret
        .hidden eco_ctx_switch_ret
        .type   eco_ctx_switch_ret, %function
        .set    eco_ctx_switch_ret, eco_ctx_switch

/*
 * First code on a fresh stack, reached by eco_ctx_switch's `br x30` with
 * x19 = the coroutine and x20 = its entry function.  sp = top, 16-aligned.
 * The entry function never returns: a coroutine ends by switching away.
 */
        .type   eco_ctx_start, %function
        .p2align 4
eco_ctx_start:
        .cfi_startproc
        /* Outermost frame: tell unwinders to stop here. */
        .cfi_undefined x30
        mov     x0, x19
        blr     x20
        brk     #0x3c
        .cfi_endproc
        .size   eco_ctx_start, .-eco_ctx_start

/*
 * void *eco_ctx_init(void *top, void (*entry)(eco_t *), eco_t *co)
 *     x0 = top (16-aligned), x1 = entry, x2 = co
 * Writes below top a frame in eco_ctx_switch's layout and returns its
 * address.  All saved registers start at zero (x29 = 0 ends frame-record
 * chains) except x19 = co, x20 = entry, x30 = eco_ctx_start.
 */
        .globl  eco_ctx_init
        .hidden eco_ctx_init
        .type   eco_ctx_init, %function
        .p2align 4
eco_ctx_init:
        .cfi_startproc
        sub     x0, x0, #160
        stp     x2, x1, [x0, #0]        /* x19 = co, x20 = entry */
        stp     xzr, xzr, [x0, #16]
        stp     xzr, xzr, [x0, #32]
        stp     xzr, xzr, [x0, #48]
        stp     xzr, xzr, [x0, #64]
        adr     x3, eco_ctx_start
        stp     xzr, x3, [x0, #80]      /* x29 = 0, x30 = eco_ctx_start */
        stp     xzr, xzr, [x0, #96]
        stp     xzr, xzr, [x0, #112]
        stp     xzr, xzr, [x0, #128]
        stp     xzr, xzr, [x0, #144]
        ret
        .cfi_endproc
        .size   eco_ctx_init, .-eco_ctx_init

#endif /* __aarch64__ */

        .section .note.GNU-stack,"",%progbits
