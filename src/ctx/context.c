/*
 * Contexts (Go's context package): cancellation, deadlines and values
 * passed down a tree of contexts.
 *
 * Kinds. Background and todo are static and never end. A value context
 * stores one key/value pair and ends when its parent ends. A cancelable
 * context (with_cancel, with_deadline, with_timeout) has a lock, an error
 * word, a list of cancelable children, a list of watchers (parkers waiting
 * in weft__park_ctx or weft_sleep_ctx), a done channel made on first
 * request, and possibly a deadline timer. Every context records its
 * "cancel scope": itself when cancelable, else its nearest cancelable
 * ancestor (NULL under background). Err, done and deadline of a value
 * context are those of its cancel scope.
 *
 * The cancel tree. A cancelable context links itself into the children
 * list of its parent's cancel scope when it is made. If that scope has
 * already ended, the new context copies its error instead and stays
 * unlinked. Cancelling a context (cancel_tree) ends it and then every
 * descendant, with an explicit worklist instead of recursion, so deep or
 * wide trees need no C stack. Ending one context (end_one) sets the error under its lock, takes
 * the whole children list, its watchers, its timer and its done channel,
 * and drops the lock. Only then does it close the channel, wake the
 * watchers and stop the timer. The taken children go onto the worklist
 * with the same error, because a child ended by its parent reports the
 * parent's error. A context found already ended is skipped, because the
 * canceller that ended it also took its children.
 *
 * References. Each heap context starts with one reference for its owner,
 * and holds one on its parent for its whole life. A deadline timer holds
 * one until its function has run or the timer was stopped before running.
 * A canceller holds one on each child it took from a list, until it has
 * ended that child. A context is linked in a children list only while its
 * owner reference is alive, because release ends (and so unlinks) the
 * context before dropping that reference. So a canceller may take a
 * reference on each child it finds in the list. Dropping the last
 * reference frees the context and then drops its reference on its parent,
 * in a loop rather than by recursion.
 *
 * Watchers. A watcher is a record on the parker's stack. It is linked in
 * the unlock step of the park, after the parker has switched away and
 * while the caller's locks still hide it from other wakers. When the
 * context ends, end_one takes the lists under the lock and marks every
 * record TAKEN. After unlocking it moves each record's claim word from OPEN
 * to the record's winning value by CAS, marks the record DONE (the last
 * time it touches the record) and readies the parker if the CAS won. A
 * woken parker unregisters: it unlinks a LINKED record under the lock, or
 * waits for a TAKEN one to become DONE, so no canceller reads a record
 * whose stack has moved on. Coroutine records are kept apart from thread
 * records with the number of the runtime they belong to, because a
 * runtime shutdown abandons coroutines and frees their stacks: a
 * coroutine list left from an earlier runtime is dropped unread. A
 * canceller outside the Ps holds the runtime's entry gate while it touches
 * coroutine records, so shutdown cannot free their stacks meanwhile.
 *
 * Lock order. A context's lock is never held while another context's lock
 * is taken: creating a child locks only the parent's scope, ending locks
 * one context at a time, and unlinking locks only the parent's scope. A
 * primitive's own lock may be held when a context lock is taken, because
 * weft__park_ctx registers inside the primitive's unlock step. Under a
 * context lock the code takes at most the done channel's lock (closing it,
 * or making it already closed) or the timer heap's lock (weft_sleep_ctx
 * arms its deadline while it holds the lock). Closing the done channel
 * readies its receivers under the context lock, which takes only
 * run-queue locks; watchers are readied after the lock is dropped.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "ctx_internal.h"
#include "weft/chan.h"
#include "weft/context.h"
#include "weft/error.h"

enum ctx_kind { KIND_EMPTY = 0, KIND_CANCEL, KIND_VALUE };

typedef struct cancel_ctx cancel_ctx;

struct weft_ctx {
    uint8_t kind;               /* enum ctx_kind; fixed */
    _Atomic uint32_t refs;      /* heap contexts only */
    weft_ctx *parent;           /* holds a reference; NULL for the empty ones */
    cancel_ctx *scope;          /* self, nearest cancelable ancestor, or NULL */
};

typedef struct value_ctx {
    weft_ctx base;
    const void *key;
    void *value;
} value_ctx;

/* Watcher states, in the order they happen. */
enum { W_UNLINKED = 0, W_LINKED, W_TAKEN, W_DONE };

typedef struct watcher {
    struct watcher *next;
    struct watcher *prev;
    weft__parker *parker;
    _Atomic uint32_t *claim;
    uint32_t win;               /* claim value stored when the context wins */
    _Atomic uint32_t state;     /* W_*; LINKED and TAKEN are set under the lock */
} watcher;

struct cancel_ctx {
    weft_ctx base;
    _Atomic uint32_t lock;
    _Atomic int err;            /* 0 until ended; written under lock */
    bool linked;                /* in the parent scope's children; guarded by its lock */
    bool has_deadline;          /* fixed */
    int64_t deadline;           /* effective: the earlier of own and parent's */
    cancel_ctx *children;       /* guarded by lock */
    /* Links in the parent scope's children list, guarded by its lock.
     * Once a canceller has taken the list, next links its worklist. */
    cancel_ctx *next;
    cancel_ctx *prev;
    watcher *thread_watchers;   /* guarded by lock */
    watcher *coroutine_watchers;
    uint32_t watch_generation;  /* runtime of the coroutine watchers */
    weft_timer *timer;          /* guarded by lock */
    _Atomic(weft_chan *) done;  /* made on first request, under lock */
    void (*on_release)(void *); /* fixed; see weft__ctx_with_release_hook */
    void *release_arg;
};

static weft_ctx background_ctx = { .kind = KIND_EMPTY };
static weft_ctx todo_ctx = { .kind = KIND_EMPTY };

weft_ctx *weft_ctx_background(void)
{
    return &background_ctx;
}

weft_ctx *weft_ctx_todo(void)
{
    return &todo_ctx;
}

static inline weft_ctx *or_background(weft_ctx *ctx)
{
    return ctx ? ctx : &background_ctx;
}

static inline cancel_ctx *scope_of(weft_ctx *ctx)
{
    return ctx ? ctx->scope : NULL;
}

/* ---- References ----------------------------------------------------------- */

static inline void ctx_ref(weft_ctx *ctx)
{
    if (ctx->kind != KIND_EMPTY)
        atomic_fetch_add_explicit(&ctx->refs, 1, memory_order_relaxed);
}

/* Drop one reference; free every context that this leaves unreferenced,
 * walking up the parent chain. */
static void ctx_unref(weft_ctx *ctx)
{
    while (ctx && ctx->kind != KIND_EMPTY) {
        if (atomic_fetch_sub_explicit(&ctx->refs, 1, memory_order_acq_rel) != 1)
            return;
        weft_ctx *parent = ctx->parent;
        if (ctx->kind == KIND_CANCEL) {
            cancel_ctx *c = (cancel_ctx *)ctx;
            if (c->linked || c->children || c->timer)
                weft__fatal("context %p lost its last reference while still "
                            "linked to its parent, with children or with a "
                            "timer: was it released twice?", (void *)c);
            weft_chan *done = atomic_load_explicit(&c->done, memory_order_relaxed);
            if (done)
                weft_chan_release(done);
        }
        free(ctx);
        ctx = parent;
    }
}

/* ---- Ending a tree -------------------------------------------------------- */

#define READY_BATCH 64

typedef struct ready_batch {
    weft__parker *parkers[READY_BATCH];
    size_t n;
} ready_batch;

static void batch_flush(ready_batch *b)
{
    weft__ready_many(b->parkers, b->n);
    b->n = 0;
}

static void mark_taken(watcher *list)
{
    for (watcher *w = list; w; w = w->next)
        atomic_store_explicit(&w->state, W_TAKEN, memory_order_relaxed);
}

/* Settle each taken watcher: claim it, release the record, ready the
 * parker if the claim won. The record may be gone right after the DONE
 * store, so everything is read from it first. */
static void wake_watchers(watcher *list, ready_batch *b)
{
    while (list) {
        watcher *w = list;
        list = w->next;
        weft__parker *parker = w->parker;
        uint32_t open = WEFT__CLAIM_OPEN;
        bool won = atomic_compare_exchange_strong(w->claim, &open, w->win);
        atomic_store_explicit(&w->state, W_DONE, memory_order_release);
        if (!won)
            continue;
        if (b->n == READY_BATCH)
            batch_flush(b);
        b->parkers[b->n++] = parker;
    }
}

/* End c with err unless it has ended already. Its children are pushed on
 * *work, each with a reference the caller drops after ending it.
 * may_touch_coroutines: the caller runs on a P or is inside the runtime's
 * entry gate, so coroutine stacks stay mapped. */
static void end_one(cancel_ctx *c, int err, cancel_ctx **work, bool may_touch_coroutines)
{
    weft__lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0) {
        weft__lock_release(&c->lock);
        return;
    }
    /* err is published first, so a receiver woken by the done channel
     * reads it. The channel closes under the same lock, and weft_ctx_err
     * takes the lock once it sees an error, so a caller that reads an error
     * finds done already closed, as in Go. Closing readies the channel's
     * receivers under this lock; readying takes only run-queue locks. */
    atomic_store_explicit(&c->err, err, memory_order_release);
    weft_chan *done = atomic_load_explicit(&c->done, memory_order_relaxed);
    if (done)
        weft_chan_close(done);

    cancel_ctx *children = c->children;
    c->children = NULL;
    if (children) {
        cancel_ctx *last = children;
        for (cancel_ctx *k = children; k; k = k->next) {
            k->linked = false;
            ctx_ref(&k->base);
            last = k;
        }
        last->next = *work;
        *work = children;
    }

    watcher *threads = c->thread_watchers;
    watcher *coroutines = c->coroutine_watchers;
    c->thread_watchers = NULL;
    c->coroutine_watchers = NULL;
    /* Coroutines of a runtime that has shut down, or is shutting down
     * while this thread is outside the gate, were abandoned with their
     * stacks: their records are dropped unread. */
    if (coroutines && (!may_touch_coroutines ||
                       c->watch_generation != weft__generation()))
        coroutines = NULL;
    mark_taken(threads);
    mark_taken(coroutines);

    weft_timer *timer = c->timer;
    c->timer = NULL;
    weft__lock_release(&c->lock);

    ready_batch b;
    b.n = 0;
    wake_watchers(threads, &b);
    wake_watchers(coroutines, &b);
    batch_flush(&b);
    if (timer) {
        /* A stopped timer never runs its function, so its reference is
         * dropped here. Another reference exists too, so c stays. A timer
         * that shutdown dropped unfired also stops with true. */
        if (weft_timer_stop(timer))
            ctx_unref(&c->base);
        weft_timer_release(timer);
    }
}

/* Take c out of its parent scope's children list, unless a canceller of
 * that scope has taken it already. */
static void unlink_from_parent(cancel_ctx *c)
{
    cancel_ctx *up = scope_of(c->base.parent);
    if (!up)
        return;
    weft__lock_acquire(&up->lock);
    if (c->linked) {
        if (c->prev)
            c->prev->next = c->next;
        else
            up->children = c->next;
        if (c->next)
            c->next->prev = c->prev;
        c->next = c->prev = NULL;
        c->linked = false;
    }
    weft__lock_release(&up->lock);
}

/* End root and every descendant with err. The caller holds a reference to
 * root. */
static void cancel_tree(cancel_ctx *root, int err)
{
    bool outside = weft__p_self() == NULL;
    bool gated = outside && weft__gate_enter();
    bool may_touch_coroutines = !outside || gated;

    cancel_ctx *work = NULL;
    end_one(root, err, &work, may_touch_coroutines);
    unlink_from_parent(root);
    while (work) {
        cancel_ctx *c = work;
        work = c->next;
        c->next = c->prev = NULL;
        end_one(c, err, &work, may_touch_coroutines);
        ctx_unref(&c->base);
    }

    if (gated)
        weft__gate_leave();
}

/* ---- Constructors --------------------------------------------------------- */

/* A new cancelable child of parent, with its own deadline when
 * has_deadline; linked into the parent's scope, or ended at once with the
 * scope's error. NULL when out of memory. */
static cancel_ctx *cancel_new(weft_ctx *parent, bool has_deadline, int64_t deadline)
{
    parent = or_background(parent);
    cancel_ctx *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->base.kind = KIND_CANCEL;
    atomic_init(&c->base.refs, 1);
    c->base.parent = parent;
    c->base.scope = c;
    ctx_ref(parent);

    cancel_ctx *up = scope_of(parent);
    c->has_deadline = has_deadline;
    c->deadline = deadline;
    if (up && up->has_deadline && (!has_deadline || up->deadline <= deadline)) {
        c->has_deadline = true;
        c->deadline = up->deadline;
    }

    if (up) {
        weft__lock_acquire(&up->lock);
        int err = atomic_load_explicit(&up->err, memory_order_relaxed);
        if (err != 0) {
            atomic_store_explicit(&c->err, err, memory_order_relaxed);
        } else {
            c->next = up->children;
            if (up->children)
                up->children->prev = c;
            up->children = c;
            c->linked = true;
        }
        weft__lock_release(&up->lock);
    }
    return c;
}

weft_ctx *weft_ctx_with_cancel(weft_ctx *parent)
{
    cancel_ctx *c = cancel_new(parent, false, 0);
    return c ? &c->base : NULL;
}

weft_ctx *weft__ctx_with_release_hook(weft_ctx *parent, void (*fn)(void *), void *arg)
{
    cancel_ctx *c = cancel_new(parent, false, 0);
    if (!c)
        return NULL;
    c->on_release = fn;
    c->release_arg = arg;
    return &c->base;
}

/* The deadline timer's function; it owns one reference to the context. */
static void deadline_fire(void *arg)
{
    cancel_ctx *c = arg;
    cancel_tree(c, WEFT_ETIMEDOUT);
    ctx_unref(&c->base);
}

weft_ctx *weft_ctx_with_deadline(weft_ctx *parent, int64_t deadline)
{
    if (!atomic_load(&weft__rt.running))
        return NULL;
    cancel_ctx *c = cancel_new(parent, true, deadline);
    if (!c)
        return NULL;
    /* Ended by the parent, or the parent's deadline comes first. In the
     * second case the parent's end reaches this context, which needs no
     * timer of its own. */
    if (atomic_load(&c->err) != 0 || c->deadline < deadline)
        return &c->base;

    int64_t now = weft_now();
    if (deadline <= now) {
        cancel_tree(c, WEFT_ETIMEDOUT);
        return &c->base;
    }

    ctx_ref(&c->base); /* the timer's */
    weft_timer *timer = weft__timer_func_make(deadline - now, deadline_fire, c);
    if (!timer) {
        ctx_unref(&c->base);
        weft_ctx_release(&c->base);
        return NULL;
    }
    weft__lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) == 0) {
        c->timer = timer;
        timer = NULL;
    }
    weft__lock_release(&c->lock);
    if (timer) {
        /* Ended while the timer was being made, maybe by the timer. */
        if (weft_timer_stop(timer))
            ctx_unref(&c->base);
        weft_timer_release(timer);
    }
    return &c->base;
}

weft_ctx *weft_ctx_with_timeout(weft_ctx *parent, int64_t timeout)
{
    int64_t now = weft_now();
    int64_t deadline;
    if (timeout > 0 && now > INT64_MAX - timeout)
        deadline = INT64_MAX;
    else
        deadline = now + timeout;
    return weft_ctx_with_deadline(parent, deadline);
}

weft_ctx *weft_ctx_with_value(weft_ctx *parent, const void *key, void *value)
{
    /* Go panics on a nil key; here the constructor fails instead. */
    if (!key)
        return NULL;
    parent = or_background(parent);
    value_ctx *v = malloc(sizeof *v);
    if (!v)
        return NULL;
    v->base.kind = KIND_VALUE;
    atomic_init(&v->base.refs, 1);
    v->base.parent = parent;
    v->base.scope = parent->scope;
    v->key = key;
    v->value = value;
    ctx_ref(parent);
    return &v->base;
}

/* ---- Cancel, release and queries ------------------------------------------ */

void weft_ctx_cancel(weft_ctx *ctx)
{
    if (ctx && ctx->kind == KIND_CANCEL)
        cancel_tree((cancel_ctx *)ctx, WEFT_ECANCELED);
}

void weft_ctx_release(weft_ctx *ctx)
{
    if (!ctx || ctx->kind == KIND_EMPTY)
        return;
    if (ctx->kind == KIND_CANCEL) {
        cancel_ctx *c = (cancel_ctx *)ctx;
        if (c->on_release)
            c->on_release(c->release_arg);
    }
    weft_ctx_cancel(ctx);
    ctx_unref(ctx);
}

weft_chan *weft_ctx_done(weft_ctx *ctx)
{
    cancel_ctx *c = scope_of(ctx);
    if (!c)
        return NULL;
    weft_chan *done = atomic_load_explicit(&c->done, memory_order_acquire);
    if (done)
        return done;
    weft__lock_acquire(&c->lock);
    done = atomic_load_explicit(&c->done, memory_order_relaxed);
    if (!done) {
        done = weft_chan_make(0, 0);
        if (!done)
            weft__fatal("out of memory making a context's done channel");
        /* New, so no receiver waits on it yet and closing readies none. */
        if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0)
            weft_chan_close(done);
        atomic_store_explicit(&c->done, done, memory_order_release);
    }
    weft__lock_release(&c->lock);
    return done;
}

int weft_ctx_err(weft_ctx *ctx)
{
    cancel_ctx *c = scope_of(ctx);
    if (!c)
        return 0;
    int err = atomic_load_explicit(&c->err, memory_order_acquire);
    if (err != 0) {
        /* Wait for the canceller, which holds the lock until done is
         * closed. */
        weft__lock_acquire(&c->lock);
        weft__lock_release(&c->lock);
    }
    return err;
}

bool weft_ctx_deadline(weft_ctx *ctx, int64_t *deadline)
{
    cancel_ctx *c = scope_of(ctx);
    if (!c || !c->has_deadline)
        return false;
    if (deadline)
        *deadline = c->deadline;
    return true;
}

void *weft_ctx_value(weft_ctx *ctx, const void *key)
{
    for (weft_ctx *c = ctx; c; c = c->parent) {
        if (c->kind == KIND_VALUE && ((value_ctx *)c)->key == key)
            return ((value_ctx *)c)->value;
    }
    return NULL;
}

/* ---- Watchers ------------------------------------------------------------- */

/* Link w on c. c->lock held; c has not ended. */
static void watcher_link(cancel_ctx *c, watcher *w)
{
    watcher **list;
    if (w->parker->kind == WEFT__PARKER_G) {
        uint32_t generation = weft__generation();
        if (c->watch_generation != generation) {
            /* Left from a runtime that shut down: drop the records unread. */
            c->coroutine_watchers = NULL;
            c->watch_generation = generation;
        }
        list = &c->coroutine_watchers;
    } else {
        list = &c->thread_watchers;
    }
    w->prev = NULL;
    w->next = *list;
    if (*list)
        (*list)->prev = w;
    *list = w;
    atomic_store_explicit(&w->state, W_LINKED, memory_order_relaxed);
}

/* Remove w from c after its parker woke: unlink it if it is still linked,
 * else wait until the canceller that took it is done with it. */
static void watcher_unregister(cancel_ctx *c, watcher *w)
{
    /* Always under the lock: weft_sleep_ctx's record is linked by an
     * unlock step that may still hold the lock when the sleeper resumes. */
    weft__lock_acquire(&c->lock);
    /* Acquire: DONE was stored outside the lock, and the canceller's reads
     * of the record must happen before the stack is reused. */
    uint32_t state = atomic_load_explicit(&w->state, memory_order_acquire);
    if (state == W_LINKED) {
        watcher **list = w->parker->kind == WEFT__PARKER_G
                             ? &c->coroutine_watchers : &c->thread_watchers;
        if (w->prev)
            w->prev->next = w->next;
        else
            *list = w->next;
        if (w->next)
            w->next->prev = w->prev;
    }
    weft__lock_release(&c->lock);
    if (state != W_TAKEN)
        return;
    /* The canceller is between its CAS and its DONE store, a few
     * instructions, unless its thread was preempted. */
    for (unsigned spins = 0;
         atomic_load_explicit(&w->state, memory_order_acquire) != W_DONE;
         spins++) {
        if (spins < 100)
            weft__cpu_relax();
        else
            weft_yield();
    }
}

typedef struct ctx_park {
    weft__unlock_fn inner;
    void *arg;
    cancel_ctx *c;
    watcher *w;
} ctx_park;

/* weft__park_ctx's unlock step. Once the watcher is linked, the context
 * may end and resume the parker on another thread, which reuses the stack
 * holding *cp, so the arguments are copied out first. inner's argument and
 * what it guards stay valid until inner has released the caller's locks,
 * because the woken parker takes those locks to remove its waiter. */
static bool ctx_unlock(void *arg)
{
    ctx_park *cp = arg;
    weft__unlock_fn inner = cp->inner;
    void *inner_arg = cp->arg;
    cancel_ctx *c = cp->c;
    watcher *w = cp->w;
    _Atomic uint32_t *claim = w->claim;

    weft__lock_acquire(&c->lock);
    if (atomic_load_explicit(&c->err, memory_order_relaxed) != 0) {
        weft__lock_release(&c->lock);
        /* No waker can see the parker before inner runs, so this wins. */
        uint32_t open = WEFT__CLAIM_OPEN;
        atomic_compare_exchange_strong(claim, &open, WEFT__CLAIM_TIMEOUT);
        if (inner)
            inner(inner_arg);
        return false;
    }
    watcher_link(c, w);
    weft__lock_release(&c->lock);
    if (inner && !inner(inner_arg))
        weft__fatal("the unlock step of a park with a context must not "
                    "cancel the park");
    return true;
}

int weft__park_ctx(weft__unlock_fn unlock, void *arg, int reason,
                   weft_ctx *ctx, _Atomic uint32_t *claim)
{
    cancel_ctx *c = scope_of(ctx);
    if (!c) {
        weft__park(unlock, arg, reason);
        return 0;
    }
    watcher w = { .parker = weft__parker_self(), .claim = claim,
                  .win = WEFT__CLAIM_TIMEOUT };
    atomic_init(&w.state, W_UNLINKED);
    ctx_park cp = { .inner = unlock, .arg = arg, .c = c, .w = &w };
    weft__park(ctx_unlock, &cp, reason);
    watcher_unregister(c, &w);
    if (atomic_load(claim) == WEFT__CLAIM_TIMEOUT)
        return atomic_load_explicit(&c->err, memory_order_acquire);
    return 0;
}

/* ---- Sleep ---------------------------------------------------------------- */

typedef struct sleep_watch {
    cancel_ctx *c;
    watcher *w;
} sleep_watch;

/* weft_sleep_ctx's unlock step, called with c->lock held: the sleeper
 * takes the lock before it parks, so the record stays valid until this
 * releases it, even if the deadline resumes the sleeper earlier. */
static bool sleep_unlock(void *arg)
{
    sleep_watch *sw = arg;
    cancel_ctx *c = sw->c;
    watcher_link(c, sw->w);
    weft__lock_release(&c->lock);
    return true;
}

int weft_sleep_ctx(weft_ctx *ctx, int64_t ns)
{
    cancel_ctx *c = scope_of(ctx);
    if (!c)
        return weft_sleep(ns);
    /* Through weft_ctx_err, which waits for the canceller to close done. */
    int err = weft_ctx_err(ctx);
    if (err != 0)
        return err;
    if (ns <= 0) {
        weft_yield();
        return 0;
    }
    int64_t now = weft_now();
    int64_t deadline = ns > INT64_MAX - now ? INT64_MAX : now + ns;

    /* The context is one more contender for the claim: it takes the
     * waker's side, the deadline the timeout's. */
    _Atomic uint32_t claim = WEFT__CLAIM_OPEN;
    watcher w = { .parker = weft__parker_self(), .claim = &claim,
                  .win = WEFT__CLAIM_WAKER };
    atomic_init(&w.state, W_UNLINKED);
    sleep_watch sw = { .c = c, .w = &w };

    weft__lock_acquire(&c->lock);
    err = atomic_load_explicit(&c->err, memory_order_relaxed);
    if (err != 0) {
        weft__lock_release(&c->lock);
        return err;
    }
    bool timed_out = weft__park_until(sleep_unlock, &sw, WEFT__WAIT_SLEEP,
                                      deadline, &claim);
    watcher_unregister(c, &w);
    if (timed_out)
        return 0;
    return atomic_load_explicit(&c->err, memory_order_acquire);
}
