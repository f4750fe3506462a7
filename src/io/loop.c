/*
 * Requests to the libuv loop thread: the queue, the wait and the
 * completion (the protocol is in io_internal.h).
 *
 * The queue is a lock-free stack: any thread pushes with one CAS, and the
 * loop thread takes the whole stack with one exchange and reverses it, so
 * requests start in the order they were queued. The push happens between
 * weft__gate_enter and weft__gate_leave, and weft_shutdown closes the gate
 * before it stops the loop, so the loop's last drain (with stopping set)
 * sees every request that was pushed.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <pthread.h>
#include <stdlib.h>

#include "../ctx/ctx_internal.h"
#include "io_internal.h"
#include "weft/error.h"

static _Atomic(weft__io_req *) queue;

_Atomic int64_t weft__io_pending;

_Atomic bool weft__uv_pool_started;

/* libuv's pool size rule (src/threadpool.c of libuv 1.x): UV_THREADPOOL_SIZE,
 * at least 1 and at most 1024, default 4. */
static long uv_pool_size(void)
{
    const char *s = getenv("UV_THREADPOOL_SIZE");
    long n = s ? atol(s) : 4;
    if (n <= 0)
        n = 1;
    if (n > 1024)
        n = 1024;
    return n;
}

/* libuv resets its own pool in a forked child (pthread_atfork); weft's
 * counts of pool threads must follow, or the deadlock detector would
 * count threads the child does not have. */
static void after_fork_child(void)
{
    atomic_store(&weft__uv_pool_started, false);
    weft__blocking_after_fork();
}

static void fork_register(void)
{
    pthread_atfork(NULL, NULL, after_fork_child);
}

void weft__io_fork_setup(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, fork_register);
}

bool weft__foreign_threads(void)
{
    DIR *d = opendir("/proc/self/task");
    if (!d)
        return true;
    long count = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.')
            count++;
    closedir(d);
    /* The process's first thread, the Ps, the loop thread and the pools. */
    long own = 1 + weft__rt.nprocs + 1 + weft__blocking_threads() +
               (atomic_load(&weft__uv_pool_started) ? uv_pool_size() : 0);
    return count > own;
}

bool weft__io_busy(void)
{
    return atomic_load(&weft__netpoll_nwait) > 0 || atomic_load(&weft__io_pending) > 0 ||
           atomic_load(&weft__blocking_pending) > 0 ||
           atomic_load(&weft__signal_contexts) > 0;
}

void weft__io_req_init(weft__io_req *r, void (*run)(weft__io_req *, uv_loop_t *),
                       void (*destroy)(weft__io_req *))
{
    r->next = NULL;
    r->run = run;
    r->destroy = destroy;
    r->parker = weft__parker_self();
    atomic_init(&r->claim, WEFT__CLAIM_OPEN);
    atomic_init(&r->refs, 2);
    r->result = 0;
}

void weft__io_req_unref(weft__io_req *r)
{
    if (atomic_fetch_sub(&r->refs, 1) == 1)
        r->destroy(r);
}

void weft__io_complete(weft__io_req *r)
{
    uint32_t open = WEFT__CLAIM_OPEN;
    if (atomic_compare_exchange_strong(&r->claim, &open, WEFT__CLAIM_WAKER))
        weft__ready(r->parker);
    /* After the wakeup: the deadlock detector counts the request as
     * pending until its waiter is queued. */
    atomic_fetch_sub(&weft__io_pending, 1);
    weft__io_req_unref(r);
}

/* The park's unlock step: queue r and kick the loop. When the runtime is
 * stopping the request completes here with WEFT_EINVAL. */
static bool submit_unlock(void *arg)
{
    weft__io_req *r = arg;
    atomic_fetch_add(&weft__io_pending, 1);
    if (!weft__gate_enter()) {
        r->result = WEFT_EINVAL;
        weft__io_complete(r);
        return true;
    }
    weft__io_req *head = atomic_load(&queue);
    do {
        r->next = head;
    } while (!atomic_compare_exchange_weak(&queue, &head, r));
    weft__poller_kick();
    weft__gate_leave();
    return true;
}

int weft__io_wait(weft_ctx *ctx, weft__io_req *r, int reason)
{
    return weft__park_ctx(submit_unlock, r, reason, ctx, &r->claim);
}

void weft__loop_run_requests(uv_loop_t *loop, bool stopping)
{
    weft__io_req *r = atomic_exchange(&queue, NULL);
    weft__io_req *ordered = NULL;
    while (r) {
        weft__io_req *next = r->next;
        r->next = ordered;
        ordered = r;
        r = next;
    }
    while (ordered) {
        r = ordered;
        ordered = r->next;
        r->next = NULL;
        if (stopping) {
            r->result = WEFT_EINVAL;
            weft__io_complete(r);
        } else {
            atomic_store(&weft__uv_pool_started, true);
            r->run(r, loop);
        }
    }
}
