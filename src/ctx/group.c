/*
 * Error group (golang.org/x/sync/errgroup with WithContext and SetLimit).
 *
 * A group is a cancelable child context, a wait group counting the tasks,
 * the first non-zero result, and an optional limit. The limit is a
 * buffered signal channel with one slot per allowed task. A task sends
 * into it before it is spawned and receives from it when it finishes, so
 * at most cap tasks run at once. While the channel is full, go blocks and
 * try_go fails. Channels and the wait group already block coroutines and plain
 * threads alike, so weft_group_go does too.
 *
 * A task runs fn(group context, arg). The first task to return non-zero
 * stores its result by CAS and cancels the group's context; later results
 * are dropped. A finishing task touches the group for the last time in
 * weft_wg_done, so wait (and release, which waits) may return and free the
 * group right after it.
 *
 * g->lock guards the limit channel and the count of tasks started and not
 * finished, so set_limit can refuse while any run and never swaps a
 * channel someone is using. It is a leaf lock: nothing else is taken, and
 * no caller blocks, while it is held.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/chan.h"
#include "weft/context.h"
#include "weft/error.h"
#include "weft/group.h"
#include "weft/sync.h"

struct weft_group {
    weft_ctx *ctx;
    weft_wg wg;
    _Atomic int err;            /* first non-zero result */
    _Atomic uint32_t lock;
    weft_chan *tokens;          /* NULL: no limit; guarded by lock */
    int64_t running;            /* tasks started, not finished; guarded by lock */
};

typedef struct group_task {
    weft_group *g;
    weft_task fn;
    void *arg;
    weft_chan *tokens;          /* the limit channel it took a slot in */
} group_task;

weft_group *weft_group_make(weft_ctx *parent)
{
    weft_group *g = calloc(1, sizeof *g);
    if (!g)
        return NULL;
    g->ctx = weft_ctx_with_cancel(parent);
    if (!g->ctx) {
        free(g);
        return NULL;
    }
    return g;
}

weft_ctx *weft_group_ctx(weft_group *g)
{
    if (!g)
        weft__fatal("weft_group_ctx called with a NULL group");
    return g->ctx;
}

int weft_group_set_limit(weft_group *g, int n)
{
    if (!g)
        weft__fatal("weft_group_set_limit called with a NULL group");
    weft_chan *tokens = NULL;
    if (n > 0) {
        tokens = weft_chan_make(0, (size_t)n);
        if (!tokens)
            return WEFT_ENOMEM;
    }
    weft__lock_acquire(&g->lock);
    if (g->running > 0) {
        weft__lock_release(&g->lock);
        weft_chan_release(tokens);
        return WEFT_EINVAL;
    }
    weft_chan *old = g->tokens;
    g->tokens = tokens;
    weft__lock_release(&g->lock);
    weft_chan_release(old);
    return 0;
}

static void task_finish(weft_group *g, weft_chan *tokens)
{
    if (tokens)
        weft_chan_recv(tokens, NULL);
    weft__lock_acquire(&g->lock);
    g->running--;
    weft__lock_release(&g->lock);
}

static void task_main(void *arg)
{
    group_task *t = arg;
    weft_group *g = t->g;
    weft_chan *tokens = t->tokens;
    int result = t->fn(g->ctx, t->arg);
    free(t);
    if (result != 0) {
        int none = 0;
        if (atomic_compare_exchange_strong(&g->err, &none, result))
            weft_ctx_cancel(g->ctx);
    }
    task_finish(g, tokens);
    weft_wg_done(&g->wg);
}

static int group_spawn(weft_group *g, weft_task fn, void *arg, bool block)
{
    if (!g)
        weft__fatal("%s called with a NULL group",
                    block ? "weft_group_go" : "weft_group_try_go");
    if (!fn)
        return WEFT_EINVAL;
    group_task *t = malloc(sizeof *t);
    if (!t)
        return WEFT_ENOMEM;

    /* Counted as running from here, so set_limit keeps the channel. */
    weft__lock_acquire(&g->lock);
    g->running++;
    weft_chan *tokens = g->tokens;
    weft__lock_release(&g->lock);

    if (tokens) {
        int rc;
        if (block) {
            int outer = weft__wait_reason_set(WEFT__WAIT_ERRGROUP);
            rc = weft_chan_send(tokens, NULL);
            weft__wait_reason_set(outer);
        } else {
            rc = weft_chan_try_send(tokens, NULL);
        }
        if (rc != 0) {
            task_finish(g, NULL);
            free(t);
            return WEFT_EAGAIN;
        }
    }

    *t = (group_task){ .g = g, .fn = fn, .arg = arg, .tokens = tokens };
    weft_wg_add(&g->wg, 1);
    int rc = weft_go(task_main, t);
    if (rc != 0) {
        free(t);
        task_finish(g, tokens);
        weft_wg_done(&g->wg);
        /* WEFT_ENOMEM, or WEFT_EINVAL when the runtime is not running. */
        return rc;
    }
    return 0;
}

int weft_group_go(weft_group *g, weft_task fn, void *arg)
{
    return group_spawn(g, fn, arg, true);
}

int weft_group_try_go(weft_group *g, weft_task fn, void *arg)
{
    return group_spawn(g, fn, arg, false);
}

int weft_group_wait(weft_group *g)
{
    if (!g)
        weft__fatal("weft_group_wait called with a NULL group");
    int outer = weft__wait_reason_set(WEFT__WAIT_ERRGROUP);
    weft_wg_wait(&g->wg);
    weft__wait_reason_set(outer);
    weft_ctx_cancel(g->ctx);
    return atomic_load(&g->err);
}

void weft_group_release(weft_group *g)
{
    if (!g)
        return;
    int outer = weft__wait_reason_set(WEFT__WAIT_ERRGROUP);
    weft_wg_wait(&g->wg);
    weft__wait_reason_set(outer);
    weft_ctx_release(g->ctx);
    weft_chan_release(g->tokens);
    free(g);
}
