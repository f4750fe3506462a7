/*
 * Context switch for AArch64 (AAPCS64).
 *
 * weft__ctx_switch(from, to): store the callee-saved registers x19-x28,
 * the frame pointer x29, the link register x30, the low halves d8-d15 and
 * FPCR in a 176-byte frame on the current stack, save sp in *from, load sp
 * from *to, restore the same frame and return through x30.
 *
 * Frame, from the saved stack pointer upwards:
 *   +0 x19,x20  +16 x21,x22  +32 x23,x24  +48 x25,x26  +64 x27,x28
 *   +80 x29,x30  +96 d8,d9  +112 d10,d11  +128 d12,d13  +144 d14,d15
 *   +160 FPCR  +168 padding
 * weft__ctx_make in context.c builds the same frame for a new context, with
 * x19 = entry, x20 = arg and x30 pointing at weft__ctx_start.
 */
#if defined(__aarch64__) && !defined(WEFT_USE_UCONTEXT)

    .text
    .p2align 4
    .globl weft__ctx_switch
    .hidden weft__ctx_switch
    .type weft__ctx_switch, %function
weft__ctx_switch:
    sub sp, sp, #176
    stp x19, x20, [sp, #0]
    stp x21, x22, [sp, #16]
    stp x23, x24, [sp, #32]
    stp x25, x26, [sp, #48]
    stp x27, x28, [sp, #64]
    stp x29, x30, [sp, #80]
    stp d8, d9, [sp, #96]
    stp d10, d11, [sp, #112]
    stp d12, d13, [sp, #128]
    stp d14, d15, [sp, #144]
    mrs x9, fpcr
    str x9, [sp, #160]
    mov x9, sp
    str x9, [x0]
    ldr x9, [x1]
    mov sp, x9
    ldp x19, x20, [sp, #0]
    ldp x21, x22, [sp, #16]
    ldp x23, x24, [sp, #32]
    ldp x25, x26, [sp, #48]
    ldp x27, x28, [sp, #64]
    ldp x29, x30, [sp, #80]
    ldp d8, d9, [sp, #96]
    ldp d10, d11, [sp, #112]
    ldp d12, d13, [sp, #128]
    ldp d14, d15, [sp, #144]
    ldr x9, [sp, #160]
    msr fpcr, x9
    add sp, sp, #176
    ret
    .size weft__ctx_switch, .-weft__ctx_switch

/* First code a new context runs: entry(arg). entry never returns. */
    .p2align 4
    .globl weft__ctx_start
    .hidden weft__ctx_start
    .type weft__ctx_start, %function
weft__ctx_start:
    mov x0, x20
    blr x19
    brk #0
    .size weft__ctx_start, .-weft__ctx_start

#endif

    .section .note.GNU-stack, "", %progbits
