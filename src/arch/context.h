/*
 * Internal header: machine contexts, the lowest layer of the runtime.
 *
 * A context is what a suspended coroutine (or a worker thread's own
 * scheduling loop) leaves behind when it switches away: its stack pointer,
 * with the callee-saved registers and the floating-point control state
 * pushed on its own stack. weft__ctx_switch saves the running context into
 * one struct and resumes another. Nothing else is preserved, because the C
 * calling convention lets a call clobber every other register.
 *
 * Backends: hand-written assembly for x86-64 (System V) and AArch64, and a
 * ucontext fallback for other targets (selectable on any target with
 * WEFT_CONTEXT=ucontext, so it stays tested). The floating-point control
 * state saved per context is MXCSR and the x87 control word on x86-64, FPCR
 * on AArch64; the ucontext backend relies on swapcontext for the same.
 */
#ifndef WEFT_ARCH_CONTEXT_H
#define WEFT_ARCH_CONTEXT_H

#include <stddef.h>
#include <stdint.h>

#if defined(WEFT_USE_UCONTEXT)
#include <ucontext.h>
#elif !defined(__x86_64__) && !defined(__aarch64__)
#define WEFT_USE_UCONTEXT 1
#include <ucontext.h>
#endif

/* Floating-point control state a new coroutine inherits from its spawner. */
typedef struct weft__fpenv {
    uint32_t control;  /* MXCSR on x86-64, FPCR on AArch64, rounding mode else */
    uint32_t x87;      /* x87 control word on x86-64, unused elsewhere */
} weft__fpenv;

typedef struct weft__ctx {
#ifdef WEFT_USE_UCONTEXT
    ucontext_t uc;     /* the whole saved machine state */
#else
    void *sp;          /* saved stack pointer; registers sit above it */
#endif
} weft__ctx;

typedef void (*weft__ctx_entry)(void *arg);

/* Prepare ctx so that switching to it calls entry(arg) on the stack
 * [lo, lo + size) with floating-point state env. entry must never return. */
void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size,
                    weft__ctx_entry entry, void *arg, const weft__fpenv *env);

/* Save the running context into from and resume to. Returns when something
 * switches back to from. */
void weft__ctx_switch(weft__ctx *from, weft__ctx *to);

/* Read the calling thread's floating-point control state. */
void weft__fpenv_get(weft__fpenv *env);

#endif /* WEFT_ARCH_CONTEXT_H */
