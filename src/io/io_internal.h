/*
 * Internal header: requests that the runtime's libuv loop thread carries
 * out for coroutines and plain threads (name resolution, file operations,
 * signal watching).
 *
 * A weft__io_req is heap-allocated by the caller with two references, the
 * waiter's and the loop's. weft__io_wait parks the caller and, in the
 * park's unlock step, queues the request for the loop thread; queuing
 * there means the completion cannot ready the caller before it has
 * parked. On the loop thread, run starts the libuv operation, and the
 * operation's callback ends with weft__io_complete, which readies the
 * waiter (if it wins the claim word against the context) and drops the
 * loop's reference. A waiter whose context ended first drops its own
 * reference and returns; the request then lives on until libuv is done
 * with it. The last reference calls destroy, which frees the request.
 *
 * Requests queued when the runtime stops are completed with WEFT_EINVAL
 * without running (fail is then called instead of run).
 */
#ifndef WEFT_IO_INTERNAL_H
#define WEFT_IO_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <uv.h>

#include "../sched/sched.h"
#include "weft/context.h"

typedef struct weft__io_req {
    struct weft__io_req *next;          /* loop queue link */
    void (*run)(struct weft__io_req *r, uv_loop_t *loop);  /* loop thread */
    void (*destroy)(struct weft__io_req *r);               /* last reference */
    weft__parker *parker;
    _Atomic uint32_t claim;
    _Atomic uint32_t refs;
    int result;                         /* set before weft__io_complete */
} weft__io_req;

/* Initialise the common part: two references, claim open. */
void weft__io_req_init(weft__io_req *r, void (*run)(weft__io_req *, uv_loop_t *),
                       void (*destroy)(weft__io_req *));
/* Queue r for the loop thread and wait for its completion or for ctx
 * (NULL: no context, the wait ends only with the completion). Returns 0
 * when completed (see r->result) or ctx's error; either way the caller's
 * reference is still held and must be dropped with weft__io_req_unref. */
int weft__io_wait(weft_ctx *ctx, weft__io_req *r, int reason);
/* Loop thread: r->result is set; ready the waiter and drop the loop's
 * reference. */
void weft__io_complete(weft__io_req *r);
void weft__io_req_unref(weft__io_req *r);

/* For the deadlock detector: requests queued and not yet completed, jobs
 * of weft_blocking queued or running, live signal contexts. */
extern _Atomic int64_t weft__io_pending;
extern _Atomic int64_t weft__blocking_pending;
extern _Atomic int64_t weft__signal_contexts;

/* Threads of weft_blocking's pool alive now. */
int weft__blocking_threads(void);
/* In a child after fork: forget the parent's pool threads. */
void weft__blocking_after_fork(void);
/* Register the fork handler that resets the thread counts above; once. */
void weft__io_fork_setup(void);
/* Set by the loop thread once it has handed work to libuv's thread pool,
 * which starts the pool's threads. */
extern _Atomic bool weft__uv_pool_started;
/* poller.c: the loop, for code running on the loop thread. */
uv_loop_t *weft__poller_loop(void);
/* poller.c: wake the loop thread; false when the runtime is stopping. */
bool weft__poller_kick(void);
/* loop.c: called by the loop thread when kicked; with stopping set, every
 * queued request is completed with WEFT_EINVAL instead of run. */
void weft__loop_run_requests(uv_loop_t *loop, bool stopping);

/* signal.c: set-up on the loop thread at weft_init, tear-down when the
 * loop stops. */
int weft__signal_loop_init(uv_loop_t *loop);
void weft__signal_loop_close(void);
/* signal.c: WEFT_DEBUG=dump=sigquit, on at weft_init, off at shutdown. */
void weft__signal_quit_dump(bool on);

#endif /* WEFT_IO_INTERNAL_H */
