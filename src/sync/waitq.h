/*
 * Internal header: the wait queue that the mutex, the reader/writer mutex
 * and the condition variable park on (weft__waitq in weft/sync.h).
 *
 * A waiter is a weft__waiter record on the waiting party's own stack. The
 * queue keeps plain threads and coroutines on two lists, each circular and
 * singly linked, pointing at its tail (the tail's next is the head). A
 * ticket in every record keeps arrival order across the two lists. A
 * waiter pushed at the back gets one more than the newest ticket, and a
 * waiter pushed at the front one less than the oldest. A pop takes the
 * head with the older ticket. Tickets are compared by signed 32-bit
 * difference. That stays valid because the live tickets span at most the
 * number of queued waiters plus the gaps left by dropped records.
 *
 * Shutdown. Coroutine records live on coroutine stacks, which a runtime
 * shutdown unmaps. All coroutines on the list belong to the runtime
 * numbered q->generation. weft__waitq_lock drops that list unread when its
 * runtime has shut down, or is shutting down as seen from outside the Ps,
 * and adds its length to q->abandoned. The owning type decides what an
 * abandoned waiter means. A mutex keeps counting it as a waiter that can
 * no longer run, and a condition variable drops it. A caller outside the Ps holds the
 * runtime's entry gate from weft__waitq_lock until its last weft__ready,
 * so that shutdown cannot unmap the records it reads meanwhile.
 *
 * Locking: q->lock is a weft__lock and a leaf. A waiter holds it across
 * its own switch, and the park's unlock step drops it. Nothing calls
 * weft__ready with it held.
 */
#ifndef WEFT_SYNC_WAITQ_H
#define WEFT_SYNC_WAITQ_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/sync.h"

typedef struct weft__waiter {
    struct weft__waiter *next;
    weft__parker *parker;
    uint32_t ticket;
} weft__waiter;

/* The park's unlock step for a waiter that pushed itself. */
typedef struct weft__waitq_park {
    weft__waitq *q;
    bool gated;
    weft_mutex *mu;     /* unlocked after q by the condition variable */
} weft__waitq_park;

#define WEFT__WAITQ_LOCK(q) ((_Atomic uint32_t *)&(q)->lock)

static inline bool weft__ticket_before(uint32_t a, uint32_t b)
{
    return (int32_t)(a - b) < 0;
}

static inline weft__waiter *weft__waitq_head(void *list)
{
    return list ? ((weft__waiter *)list)->next : NULL;
}

/* Store a list pointer, atomically so that weft__waitq_empty may read it
 * without the lock. Every store happens under the lock. */
static inline void weft__waitq_set(void **list, weft__waiter *w)
{
    __atomic_store_n(list, (void *)w, __ATOMIC_RELAXED);
}

/* Lock q, first entering the entry gate when the caller is outside the Ps.
 * Drops the coroutine list when its runtime is gone (see the header
 * comment). Returns whether the gate was entered, which the caller passes
 * to weft__waitq_leave_gate after its last weft__ready. */
static inline bool weft__waitq_lock(weft__waitq *q)
{
    bool outside = weft__p_self() == NULL;
    bool gated = outside && weft__gate_enter();
    weft__lock_acquire(WEFT__WAITQ_LOCK(q));
    if (q->coroutines &&
        ((outside && !gated) || q->generation != weft__generation())) {
        q->abandoned += q->ncoroutines;
        q->ncoroutines = 0;
        weft__waitq_set(&q->coroutines, NULL);
    }
    return gated;
}

static inline void weft__waitq_unlock(weft__waitq *q)
{
    weft__lock_release(WEFT__WAITQ_LOCK(q));
}

static inline void weft__waitq_leave_gate(bool gated)
{
    if (gated)
        weft__gate_leave();
}

/* True when no waiter is linked. Without the lock this is only a hint,
 * exact for a caller ordered after the push by other means (a mutex). */
static inline bool weft__waitq_empty(weft__waitq *q)
{
    return __atomic_load_n(&q->threads, __ATOMIC_RELAXED) == NULL &&
           __atomic_load_n(&q->coroutines, __ATOMIC_RELAXED) == NULL;
}

/* Link w (its parker set) at the back, or at the front with front. */
static inline void weft__waitq_push(weft__waitq *q, weft__waiter *w, bool front)
{
    weft__waiter *thread_tail = q->threads;
    weft__waiter *coroutine_tail = q->coroutines;
    uint32_t ticket = 0;
    if (front) {
        weft__waiter *a = weft__waitq_head(thread_tail);
        weft__waiter *b = weft__waitq_head(coroutine_tail);
        if (a && b)
            ticket = (weft__ticket_before(a->ticket, b->ticket) ? a->ticket : b->ticket) - 1;
        else if (a || b)
            ticket = (a ? a->ticket : b->ticket) - 1;
    } else {
        weft__waiter *a = thread_tail;
        weft__waiter *b = coroutine_tail;
        if (a && b)
            ticket = (weft__ticket_before(a->ticket, b->ticket) ? b->ticket : a->ticket) + 1;
        else if (a || b)
            ticket = (a ? a->ticket : b->ticket) + 1;
    }
    w->ticket = ticket;

    bool thread = w->parker->kind == WEFT__PARKER_THREAD;
    void **list = thread ? &q->threads : &q->coroutines;
    weft__waiter *tail = *list;
    if (!tail) {
        w->next = w;
        weft__waitq_set(list, w);
    } else {
        w->next = tail->next;
        tail->next = w;
        if (!front)
            weft__waitq_set(list, w);
    }
    if (!thread) {
        q->ncoroutines++;
        q->generation = weft__generation();
    }
}

/* Unlink and return the oldest waiter, or NULL. The caller owns the record
 * until it readies the parker, so it must read what it needs first. */
static inline weft__waiter *weft__waitq_pop(weft__waitq *q)
{
    weft__waiter *a = weft__waitq_head(q->threads);
    weft__waiter *b = weft__waitq_head(q->coroutines);
    void **list;
    weft__waiter *w;
    if (a && (!b || weft__ticket_before(a->ticket, b->ticket))) {
        list = &q->threads;
        w = a;
    } else if (b) {
        list = &q->coroutines;
        w = b;
        q->ncoroutines--;
    } else {
        return NULL;
    }
    weft__waiter *tail = *list;
    if (tail == w)
        weft__waitq_set(list, NULL);
    else
        tail->next = w->next;
    w->next = NULL;
    return w;
}

/* Unlock step of weft__park for a waiter that pushed itself under the
 * lock: drop the lock (after the switch, for a coroutine), then the gate. */
static inline bool weft__waitq_park_unlock(void *arg)
{
    /* Copy first: once the lock drops, a waker may ready the waiter, which
     * then returns and ends the lifetime of *arg. */
    weft__waitq_park park = *(weft__waitq_park *)arg;
    weft__waitq_unlock(park.q);
    weft__waitq_leave_gate(park.gated);
    return true;
}

/* Push the caller at the back (or the front) of q, whose lock it holds,
 * and park until a waker pops and readies it. Drops the lock and the gate. */
static inline void weft__waitq_wait(weft__waitq *q, bool gated, bool front,
                                    int reason)
{
    weft__waiter self = { .parker = weft__parker_self() };
    weft__waitq_push(q, &self, front);
    weft__waitq_park park = { .q = q, .gated = gated, .mu = NULL };
    weft__park(weft__waitq_park_unlock, &park, reason);
}

/* Ready every waiter of a chain built from popped records (linked through
 * next), in chain order, in batches. */
static inline void weft__waitq_ready_chain(weft__waiter *chain)
{
    weft__parker *batch[64];
    size_t n = 0;
    while (chain) {
        weft__waiter *w = chain;
        chain = w->next;
        batch[n++] = w->parker;
        if (n == sizeof batch / sizeof batch[0]) {
            weft__ready_many(batch, n);
            n = 0;
        }
    }
    weft__ready_many(batch, n);
}

/* A semaphore on q, q->word counting wakeups granted to waiters that had
 * not linked themselves yet (Go's runtime semaphore). */
static inline void weft__sema_acquire(weft__waitq *q, int reason)
{
    bool gated = weft__waitq_lock(q);
    if (q->word > 0) {
        q->word--;
        weft__waitq_unlock(q);
        weft__waitq_leave_gate(gated);
        return;
    }
    weft__waitq_wait(q, gated, false, reason);
}

/* Grant n wakeups: to linked waiters in order, then to abandoned ones,
 * which take theirs without running, then to waiters still on their way. */
static inline void weft__sema_release(weft__waitq *q, uint32_t n)
{
    bool gated = weft__waitq_lock(q);
    weft__waiter *chain = NULL, *last = NULL;
    while (n > 0) {
        weft__waiter *w = weft__waitq_pop(q);
        if (w) {
            if (last)
                last->next = w;
            else
                chain = w;
            last = w;
        } else if (q->abandoned > 0) {
            q->abandoned--;
        } else {
            break;
        }
        n--;
    }
    q->word += n;
    weft__waitq_unlock(q);
    weft__waitq_ready_chain(chain);
    weft__waitq_leave_gate(gated);
}

/* Lock a mutex, naming reason as the wait reason when it parks. */
void weft__mutex_lock_slow(weft_mutex *mu, int reason);

/* The fast path takes a free lock in normal mode even when waiters are
 * counted: they are parked, and one of them may have been woken, which is
 * the barging that normal mode allows. Loading first avoids a CAS that is
 * bound to fail whenever waiters are queued. */
static inline void weft__mutex_lock_reason(weft_mutex *mu, int reason)
{
    _Atomic uint32_t *state = (_Atomic uint32_t *)&mu->q.word;
    uint32_t old = atomic_load_explicit(state, memory_order_relaxed);
    /* 5 is LOCKED | STARVING and 1 is LOCKED (mutex.c). */
    if ((old & 5u) != 0 ||
        !atomic_compare_exchange_weak_explicit(state, &old, old | 1u,
                                               memory_order_acquire,
                                               memory_order_relaxed))
        weft__mutex_lock_slow(mu, reason);
}

#endif /* WEFT_SYNC_WAITQ_H */
