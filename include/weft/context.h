/*
 * weft/context.h: contexts, after Go's context package: cancellation,
 * deadlines and request-scoped values passed down a chain of calls.
 *
 * Rules (Go's): cancellation flows to every descendant and never up. A
 * child's deadline is the earlier of its own and its parent's. A child
 * ended by its parent reports the parent's error. A deadline already past,
 * or a parent already ended, ends the new context at once. Keys compare by
 * address, so `static const char my_key;` gives a private key. A child
 * holds a reference to its parent, so contexts may be released in any
 * order. Everywhere a weft_ctx * is taken, NULL means background;
 * cancelling or releasing background, todo or NULL does nothing. Every
 * blocking call that takes a context returns weft_ctx_err(ctx) early when
 * the context ends. Contexts are safe to use from many coroutines and
 * threads at once. Deadlines need a running runtime.
 */
#ifndef WEFT_CONTEXT_H
#define WEFT_CONTEXT_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/chan.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_ctx weft_ctx;

weft_ctx *weft_ctx_background(void);
weft_ctx *weft_ctx_todo(void);
/* Constructors return NULL when out of memory, for a NULL key, and for a
 * deadline when the runtime is not running. To hand a context to a
 * coroutine that may outlive the caller, give it a child of its own
 * (weft_ctx_with_cancel) and let it release that: release cancels. */
weft_ctx *weft_ctx_with_cancel(weft_ctx *parent);
weft_ctx *weft_ctx_with_timeout(weft_ctx *parent, int64_t timeout);
weft_ctx *weft_ctx_with_deadline(weft_ctx *parent, int64_t deadline);
weft_ctx *weft_ctx_with_value(weft_ctx *parent, const void *key, void *value);
/* Idempotent; cancels every descendant. */
void weft_ctx_cancel(weft_ctx *ctx);
/* Cancels (if cancelable) and drops the caller's reference: Go's
 * `defer cancel()`. */
void weft_ctx_release(weft_ctx *ctx);
/* Closed when the context ends; NULL (never ready) for background and
 * todo. elem_size 0, borrowed: valid while the caller has a reference to ctx. Made on
 * first use; running out of memory then is fatal. */
weft_chan *weft_ctx_done(weft_ctx *ctx);
int weft_ctx_err(weft_ctx *ctx);   /* 0, WEFT_ECANCELED or WEFT_ETIMEDOUT */
bool weft_ctx_deadline(weft_ctx *ctx, int64_t *deadline);
void *weft_ctx_value(weft_ctx *ctx, const void *key); /* nearest ancestor's, or NULL */
/* Sleep ns; 0, or the context's error if it ends first. */
int weft_sleep_ctx(weft_ctx *ctx, int64_t ns);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_CONTEXT_H */
