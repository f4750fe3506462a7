/*
 * Machine contexts: building the first frame of a new context, and the
 * ucontext backend.
 *
 * The assembly backends (switch_x86_64.S, switch_aarch64.S) restore a fixed
 * frame from the saved stack pointer. weft__ctx_make writes that frame at
 * the top of a fresh stack, so the first switch "returns" into
 * weft__ctx_start, which calls entry(arg). The layouts here and in the .S
 * files must match; each .S file draws its frame in its opening comment.
 */
#include "context.h"

#include <fenv.h>
#include <stdlib.h>
#include <string.h>

#ifndef WEFT_USE_UCONTEXT
void weft__ctx_start(void);
#endif

void weft__fpenv_get(weft__fpenv *env)
{
#if defined(__x86_64__)
    uint32_t mxcsr;
    uint16_t cw;
    __asm__ volatile("stmxcsr %0" : "=m"(mxcsr));
    __asm__ volatile("fnstcw %0" : "=m"(cw));
    env->control = mxcsr;
    env->x87 = cw;
#elif defined(__aarch64__)
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    env->control = (uint32_t)fpcr;
    env->x87 = 0;
#else
    env->control = (uint32_t)fegetround();
    env->x87 = 0;
#endif
}

#ifdef WEFT_USE_UCONTEXT

/* makecontext passes only int arguments, so the entry and its argument
 * travel through the context's own record. */
typedef struct start_record {
    weft__ctx_entry entry;
    void *arg;
    weft__fpenv env;
} start_record;

static void ucontext_start(unsigned hi, unsigned lo)
{
    start_record *rec = (start_record *)(((uintptr_t)hi << 32) | lo);
#if defined(__x86_64__)
    uint16_t cw = (uint16_t)rec->env.x87;
    __asm__ volatile("ldmxcsr %0" : : "m"(rec->env.control));
    __asm__ volatile("fldcw %0" : : "m"(cw));
#elif defined(__aarch64__)
    uint64_t fpcr = rec->env.control;
    __asm__ volatile("msr fpcr, %0" : : "r"(fpcr));
#else
    fesetround((int)rec->env.control);
#endif
    rec->entry(rec->arg);
    abort();
}

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size,
                    weft__ctx_entry entry, void *arg, const weft__fpenv *env)
{
    /* The start record lives at the top of the new stack itself. */
    uintptr_t top = ((uintptr_t)lo + size - sizeof(start_record)) & ~(uintptr_t)15;
    start_record *rec = (start_record *)top;
    rec->entry = entry;
    rec->arg = arg;
    rec->env = *env;
    getcontext(&ctx->uc);
    ctx->uc.uc_stack.ss_sp = lo;
    ctx->uc.uc_stack.ss_size = top - (uintptr_t)lo;
    ctx->uc.uc_link = NULL;
    uintptr_t p = (uintptr_t)rec;
    makecontext(&ctx->uc, (void (*)(void))ucontext_start, 2,
                (unsigned)(p >> 32), (unsigned)(p & 0xffffffffu));
}

void weft__ctx_switch(weft__ctx *from, weft__ctx *to)
{
    swapcontext(&from->uc, &to->uc);
}

#elif defined(__x86_64__)

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size,
                    weft__ctx_entry entry, void *arg, const weft__fpenv *env)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 80);

    /* See the frame drawing in switch_x86_64.S. After the final ret the
     * stack pointer is top - 16, 16-byte aligned, as a call expects. */
    memset(frame, 0, 80);
    frame[0] = (uint64_t)env->control | ((uint64_t)(env->x87 & 0xffff) << 32);
    frame[3] = (uint64_t)(uintptr_t)arg;             /* r13 */
    frame[4] = (uint64_t)(uintptr_t)entry;           /* r12 */
    frame[7] = (uint64_t)(uintptr_t)weft__ctx_start; /* return address */
    ctx->sp = frame;
}

#elif defined(__aarch64__)

void weft__ctx_make(weft__ctx *ctx, void *lo, size_t size,
                    weft__ctx_entry entry, void *arg, const weft__fpenv *env)
{
    uintptr_t top = ((uintptr_t)lo + size) & ~(uintptr_t)15;
    uint64_t *frame = (uint64_t *)(top - 176);

    /* See the frame drawing in switch_aarch64.S. */
    memset(frame, 0, 176);
    frame[0] = (uint64_t)(uintptr_t)entry;           /* x19 */
    frame[1] = (uint64_t)(uintptr_t)arg;             /* x20 */
    frame[11] = (uint64_t)(uintptr_t)weft__ctx_start; /* x30 */
    frame[20] = env->control;                         /* FPCR */
    ctx->sp = frame;
}

#endif
