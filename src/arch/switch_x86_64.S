/*
 * Context switch for x86-64, System V ABI.
 *
 * weft__ctx_switch(from, to): push the callee-saved registers (rbp, rbx,
 * r12-r15), then MXCSR and the x87 control word in one 8-byte slot, store
 * rsp in *from, load rsp from *to and undo the same steps in reverse,
 * skipping the floating-point loads when the values are unchanged. The
 * final ret returns into whatever called weft__ctx_switch on the other
 * side, or into weft__ctx_start for a context that has never run.
 *
 * Frame, from the saved stack pointer upwards:
 *   +0 MXCSR  +4 x87 CW  +8 r15  +16 r14  +24 r13  +32 r12  +40 rbx
 *   +48 rbp  +56 return address
 * weft__ctx_make in context.c builds the same frame for a new context, with
 * r12 = entry, r13 = arg and the return address pointing at weft__ctx_start.
 */
#if defined(__x86_64__) && !defined(WEFT_USE_UCONTEXT)

    .text
    .p2align 4
    .globl weft__ctx_switch
    .hidden weft__ctx_switch
    .type weft__ctx_switch, @function
weft__ctx_switch:
    .cfi_startproc
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movl (%rsp), %eax
    movzwl 4(%rsp), %ecx
    movq %rsp, (%rdi)
    movq (%rsi), %rsp
    /* Loading MXCSR or the x87 control word stalls the pipeline, and the
     * two sides almost always agree, so load only what differs. */
    cmpl (%rsp), %eax
    je 1f
    ldmxcsr (%rsp)
1:  cmpw 4(%rsp), %cx
    je 2f
    fldcw 4(%rsp)
2:  addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .cfi_endproc
    .size weft__ctx_switch, .-weft__ctx_switch

/* First code a new context runs: entry(arg) with a 16-byte aligned stack.
 * entry never returns; ud2 traps if it does. */
    .p2align 4
    .globl weft__ctx_start
    .hidden weft__ctx_start
    .type weft__ctx_start, @function
weft__ctx_start:
    .cfi_startproc
    .cfi_undefined rip
    movq %r13, %rdi
    callq *%r12
    ud2
    .cfi_endproc
    .size weft__ctx_start, .-weft__ctx_start

#endif

    .section .note.GNU-stack, "", @progbits
