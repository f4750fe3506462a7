/*
 * Weighted semaphore (golang.org/x/sync/semaphore) on the park/ready
 * interface.
 *
 * State, all under s->lock: the weight held (cur, never above size) and
 * the waiters, each a record on the waiting party's own stack with its
 * parker, its weight, its arrival number and a claim word. Plain threads
 * and coroutines wait on two separate FIFO lists, and the arrival numbers
 * merge them into one queue: its head is whichever list head arrived
 * first.
 *
 * Algorithm:
 *  acquire: an ended context fails at once, even when the weight is free.
 *           Weight 0 succeeds at once. With no waiter queued and room for
 *           the weight, take it. Otherwise queue a waiter and park with
 *           weft__park_ctx, so the context can end the wait.
 *  release: give the weight back (more than held is fatal), then grant.
 *  grant:   while the queue's head fits in the free weight, move its
 *           claim from OPEN to WAKER by CAS, add its weight to cur, unlink
 *           it and ready it once the lock is dropped. A head that does not
 *           fit stops the loop, so a large request is never bypassed by
 *           smaller ones behind it.
 *  cancel:  when the context ends first it moves the claim to TIMEOUT, so
 *           no granter adds the waiter's weight. The waiter unlinks itself
 *           (unless a granter already dropped it as cancelled) and runs the
 *           grant loop, because a cancelled head may have been blocking
 *           smaller requests behind it.
 * So a grant racing a cancellation is decided by the one CAS on the claim:
 * an acquire that returns 0 has taken the weight, and one that returns an
 * error has taken none.
 *
 * Coroutine records live on their stacks, which weft_shutdown unmaps, so
 * the coroutine list may only be read while its runtime cannot finish
 * stopping: by a caller on a P of that runtime, or by a plain thread inside
 * the runtime's entry gate. A list left by an earlier runtime is dropped
 * unread. A plain thread that finds the gate closed leaves the list alone
 * and serves only the threads.
 *
 * Invariants: 0 <= cur <= size. Every queued waiter's claim is OPEN or
 * TIMEOUT. A waker reads a record only before readying its owner and never
 * touches the semaphore after readying anyone.
 * Locking: s->lock is a leaf, never held while readying a parker.
 * Callers: coroutines and plain threads.
 */
#include <stdatomic.h>
#include <stddef.h>
#include <string.h>

#include "../ctx/ctx_internal.h"
#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/error.h"
#include "weft/sem.h"

typedef struct sem_waiter {
    struct sem_waiter *next;    /* queue link, then the granted list link */
    struct sem_waiter *prev;
    weft__parker *parker;
    int64_t weight;
    uint64_t arrival;
    _Atomic uint32_t claim;     /* WEFT__CLAIM_* */
    bool queued;
} sem_waiter;

/* One of the two FIFO lists, as the addresses of its head and tail. */
typedef struct sem_queue {
    void **head;
    void **tail;
} sem_queue;

/* What one locked section decided and owes: whether it may read the
 * coroutine records, whether it entered the gate to do so, and the
 * waiters it granted, to ready after unlocking. */
typedef struct sem_pass {
    bool coroutines_visible;
    bool gated;
    sem_waiter *granted;
    sem_waiter *granted_tail;
} sem_pass;

#define SEM_LOCK(s) ((_Atomic uint32_t *)&(s)->lock)

static sem_queue thread_queue(weft_sem *s)
{
    return (sem_queue){ &s->thread_head, &s->thread_tail };
}

static sem_queue coroutine_queue(weft_sem *s)
{
    return (sem_queue){ &s->coroutine_head, &s->coroutine_tail };
}

static void queue_push(sem_queue q, sem_waiter *w)
{
    sem_waiter *tail = *q.tail;
    w->next = NULL;
    w->prev = tail;
    if (tail)
        tail->next = w;
    else
        *q.head = w;
    *q.tail = w;
    w->queued = true;
}

static void queue_unlink(sem_queue q, sem_waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        *q.head = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        *q.tail = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
}

/* Lock held. Decide whether this caller may read the coroutine records
 * (see the file comment). A plain thread enters the gate to do so. */
static void pass_begin(weft_sem *s, sem_pass *pass)
{
    pass->coroutines_visible = true;
    if (!s->coroutine_head)
        return;
    if (s->generation != weft__generation()) {
        /* Their runtime has shut down: the records are gone. */
        s->coroutine_head = NULL;
        s->coroutine_tail = NULL;
        return;
    }
    if (weft__p_self())
        return;
    if (!pass->gated)
        pass->gated = weft__gate_enter();
    pass->coroutines_visible = pass->gated;
}

/* Lock held. The first waiter to arrive among those this caller may see,
 * and the list it is on. */
static sem_waiter *queue_front(weft_sem *s, const sem_pass *pass, sem_queue *which)
{
    sem_waiter *thread = s->thread_head;
    sem_waiter *coroutine = pass->coroutines_visible ? s->coroutine_head : NULL;
    if (coroutine && (!thread || coroutine->arrival < thread->arrival)) {
        *which = coroutine_queue(s);
        return coroutine;
    }
    *which = thread_queue(s);
    return thread;
}

static bool has_waiters(weft_sem *s, const sem_pass *pass)
{
    return s->thread_head || (pass->coroutines_visible && s->coroutine_head);
}

/* Lock held. Grant the weight to waiters from the front of the queue for
 * as long as the front one fits. */
static void grant(weft_sem *s, sem_pass *pass)
{
    for (;;) {
        sem_queue q;
        sem_waiter *w = queue_front(s, pass, &q);
        if (!w)
            return;
        if (atomic_load_explicit(&w->claim, memory_order_acquire) != WEFT__CLAIM_OPEN) {
            /* Its context ended; it takes nothing and must not block the
             * waiters behind it until it gets the lock to leave. */
            queue_unlink(q, w);
            continue;
        }
        if (s->size - s->cur < w->weight)
            return;
        uint32_t open = WEFT__CLAIM_OPEN;
        if (!atomic_compare_exchange_strong(&w->claim, &open, WEFT__CLAIM_WAKER)) {
            queue_unlink(q, w);
            continue;
        }
        queue_unlink(q, w);
        s->cur += w->weight;
        if (pass->granted_tail)
            pass->granted_tail->next = w;
        else
            pass->granted = w;
        pass->granted_tail = w;
    }
}

/* Lock released. Ready the granted waiters in queue order and leave the
 * gate. */
static void pass_end(sem_pass *pass)
{
    sem_waiter *w = pass->granted;
    while (w) {
        /* w lives on its owner's stack: read it before the owner runs. */
        sem_waiter *next = w->next;
        weft__parker *parker = w->parker;
        weft__ready(parker);
        w = next;
    }
    if (pass->gated)
        weft__gate_leave();
}

int weft_sem_init(weft_sem *s, int64_t n)
{
    if (!s || n < 0)
        return WEFT_EINVAL;
    memset(s, 0, sizeof *s);
    s->size = n;
    return 0;
}

static bool sem_unlock(void *arg)
{
    weft_sem *s = arg;
    weft__lock_release(SEM_LOCK(s));
    return true;
}

int weft_sem_acquire(weft_ctx *ctx, weft_sem *s, int64_t w)
{
    if (!s)
        return WEFT_EINVAL;
    int err = weft_ctx_err(ctx);
    if (err)
        return err;
    if (w < 0 || w > s->size)
        return WEFT_EINVAL;
    if (w == 0)
        return 0;

    sem_pass pass = { 0 };
    weft__lock_acquire(SEM_LOCK(s));
    pass_begin(s, &pass);
    if (!has_waiters(s, &pass) && s->size - s->cur >= w) {
        s->cur += w;
        weft__lock_release(SEM_LOCK(s));
        pass_end(&pass);
        return 0;
    }

    sem_waiter self = { .parker = weft__parker_self(), .weight = w,
                        .arrival = s->arrivals++ };
    atomic_init(&self.claim, WEFT__CLAIM_OPEN);
    if (self.parker->kind == WEFT__PARKER_G) {
        /* pass_begin dropped any list of an earlier runtime, so the list
         * contains only coroutines of this one. */
        s->generation = weft__generation();
        queue_push(coroutine_queue(s), &self);
    } else {
        queue_push(thread_queue(s), &self);
    }
    /* This caller reads no more records, and a thread must not hold the
     * gate while it waits: shutdown waits for the gate to empty. */
    if (pass.gated) {
        weft__gate_leave();
        pass.gated = false;
    }
    err = weft__park_ctx(sem_unlock, s, WEFT__WAIT_SEMACQUIRE, ctx, &self.claim);
    if (err == 0)
        return 0;

    /* The context won the claim, so no granter added this waiter's weight.
     * Leave the queue. If this waiter was at the front, the ones behind it
     * may fit now. */
    weft__lock_acquire(SEM_LOCK(s));
    pass_begin(s, &pass);
    if (self.queued) {
        sem_queue q = self.parker->kind == WEFT__PARKER_G ? coroutine_queue(s)
                                                         : thread_queue(s);
        queue_unlink(q, &self);
    }
    grant(s, &pass);
    weft__lock_release(SEM_LOCK(s));
    pass_end(&pass);
    return err;
}

bool weft_sem_try_acquire(weft_sem *s, int64_t w)
{
    if (!s || w < 0 || w > s->size)
        return false;
    sem_pass pass = { 0 };
    weft__lock_acquire(SEM_LOCK(s));
    pass_begin(s, &pass);
    bool ok = !has_waiters(s, &pass) && s->size - s->cur >= w;
    if (ok)
        s->cur += w;
    weft__lock_release(SEM_LOCK(s));
    pass_end(&pass);
    return ok;
}

void weft_sem_release(weft_sem *s, int64_t w)
{
    if (!s)
        weft__fatal("weft_sem_release called with a NULL semaphore");
    if (w < 0)
        weft__fatal("semaphore released a negative weight (%lld)", (long long)w);

    sem_pass pass = { 0 };
    weft__lock_acquire(SEM_LOCK(s));
    if (w > s->cur) {
        int64_t held = s->cur;
        weft__lock_release(SEM_LOCK(s));
        weft__fatal("semaphore released more than held (released %lld, held %lld)",
                    (long long)w, (long long)held);
    }
    s->cur -= w;
    pass_begin(s, &pass);
    grant(s, &pass);
    weft__lock_release(SEM_LOCK(s));
    pass_end(&pass);
}
