/*
 * Internal header: how blocking primitives wait on a context.
 *
 * weft__park_ctx(unlock, arg, reason, ctx, claim) parks like weft__park,
 * but the wait also ends when ctx ends (cancel or deadline). Protocol, as
 * with weft__park_until: every waker of such a parker must move *claim
 * from WEFT__CLAIM_OPEN to WEFT__CLAIM_WAKER by CAS and ready it only if
 * that succeeded. When ctx ends first, the context moves *claim to
 * WEFT__CLAIM_TIMEOUT and readies the parker itself. The registration with
 * ctx happens inside the unlock step (after the switch, while the caller's
 * locks still hide the parker from wakers), so no waker can ready the parker
 * before it has parked. unlock must return true. Returns 0 when a waker
 * won, or weft_ctx_err(ctx) when the context won; then the caller removes
 * its own waiter record from its wait list (it was not woken by a waker).
 * When ctx is already ended at the call, the unlock step still runs and
 * the call returns the error without waiting. ctx NULL, background or todo
 * never end: this is weft__park.
 */
#ifndef WEFT_CTX_INTERNAL_H
#define WEFT_CTX_INTERNAL_H

#include <stdatomic.h>
#include <stdint.h>

#include "../sched/sched.h"
#include "weft/context.h"

/* weft_ctx_with_cancel whose weft_ctx_release first calls fn(arg), with
 * no lock held, before it cancels. fn may still cancel the context. */
weft_ctx *weft__ctx_with_release_hook(weft_ctx *parent, void (*fn)(void *), void *arg);

int weft__park_ctx(weft__unlock_fn unlock, void *arg, int reason,
                   weft_ctx *ctx, _Atomic uint32_t *claim);

#endif /* WEFT_CTX_INTERNAL_H */
