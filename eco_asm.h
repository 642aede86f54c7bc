/*
 * eco_asm.h - the facts about struct eco and struct eco_rt that the context
 * switch files rely on.  Plain #defines, so the assembler can include it;
 * eco.c checks every one against the C definitions with _Static_assert.
 */
#ifndef ECO_ASM_H
#define ECO_ASM_H

/* struct eco */
#define ECO_OFF_SP 0      /* saved stack pointer */
#define ECO_OFF_STATE 8   /* unsigned char, ECO_S_* */
#define ECO_OFF_BY_LOOP 9 /* unsigned char */
#define ECO_OFF_MXCSR 16  /* x86-64: saved MXCSR (4 bytes) */
#define ECO_OFF_FPUCW 20  /* x86-64: saved x87 control word (2 bytes) */
#define ECO_OFF_RT 24     /* struct eco_rt * */
#define ECO_OFF_CALLER 32 /* eco_t * */
#define ECO_OFF_REGS 64   /* x86-64: rbp rbx r12 r13 r14 r15, 8 bytes each */

/* struct eco_rt */
#define ECO_RT_OFF_CURRENT 0
#define ECO_RT_OFF_RESUMES 8 /* unsigned long, counted by every resume */

/* Internal states the fast paths test and set (see eco_internal.h). */
#define ECO_ASM_S_PENDING 0
#define ECO_ASM_S_INIT 1
#define ECO_ASM_S_ACTIVE 2
#define ECO_ASM_S_STACKED 3

/* x86-64 without sanitizers: eco_resume and eco_yield are written in
 * eco_ctx_x86_64.S, fused with the switch, and fall back to the C versions
 * (eco__resume_slow, eco__yield_slow) for anything but the common case.
 * The sanitizer builds annotate every switch and keep the C versions. */
#if defined(__x86_64__) && !defined(ECO_WITH_ASAN) && !defined(ECO_WITH_TSAN)
#define ECO_ASM_FAST_PATHS 1
#endif

#endif
