/*
 * Condition variable (Go's sync.Cond) on a FIFO wait queue (waitq.h).
 *
 * wait links the caller's record under the queue lock while it still
 * holds mu, and parks. The unlock step of the park, which runs once the
 * caller's context is saved, drops the queue lock and only then unlocks
 * mu. So a signaller that locks mu after the waiter released it always
 * finds the waiter queued, and one that pops it cannot ready it before it
 * has parked. After waking, wait locks mu again.
 *
 * signal pops the oldest waiter and readies it. broadcast pops them all
 * and readies them in order. Both return at once, without the lock, when
 * the queue looks empty: a waiter that the caller must see is ordered
 * before the call through mu, and then its link is visible.
 *
 * Coroutines abandoned by a runtime shutdown are forgotten (their count in
 * q.abandoned is reset), so a signal never goes to one of them.
 * Locking: no lock is taken inside another. The park's unlock step drops
 * the queue lock before it unlocks mu.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "../sched/sched.h"
#include "waitq.h"
#include "weft/sync.h"

static bool cond_park_unlock(void *arg)
{
    /* Copy first: once the queue lock drops, the waiter may be woken and
     * return, ending the lifetime of *arg. */
    weft__waitq_park park = *(weft__waitq_park *)arg;
    weft__waitq_unlock(park.q);
    weft__waitq_leave_gate(park.gated);
    weft_mutex_unlock(park.mu);
    return true;
}

void weft_cond_wait(weft_cond *c, weft_mutex *mu)
{
    /* Checked here rather than in the unlock step, so the report comes
     * from the caller's own stack. */
    if (!(atomic_load_explicit((_Atomic uint32_t *)&mu->q.word,
                               memory_order_relaxed) & 1u))
        weft__fatal("weft_cond_wait called with an unlocked mutex");

    bool gated = weft__waitq_lock(&c->q);
    c->q.abandoned = 0;
    weft__waiter self = { .parker = weft__parker_self() };
    weft__waitq_push(&c->q, &self, false);
    weft__waitq_park park = { .q = &c->q, .gated = gated, .mu = mu };
    weft__park(cond_park_unlock, &park, WEFT__WAIT_COND);
    weft_mutex_lock(mu);
}

void weft_cond_signal(weft_cond *c)
{
    if (weft__waitq_empty(&c->q))
        return;
    bool gated = weft__waitq_lock(&c->q);
    c->q.abandoned = 0;
    weft__waiter *w = weft__waitq_pop(&c->q);
    weft__waitq_unlock(&c->q);
    if (w)
        weft__ready(w->parker);
    weft__waitq_leave_gate(gated);
}

void weft_cond_broadcast(weft_cond *c)
{
    if (weft__waitq_empty(&c->q))
        return;
    bool gated = weft__waitq_lock(&c->q);
    c->q.abandoned = 0;
    weft__waiter *chain = NULL, *last = NULL;
    for (weft__waiter *w; (w = weft__waitq_pop(&c->q)) != NULL; last = w) {
        if (last)
            last->next = w;
        else
            chain = w;
    }
    weft__waitq_unlock(&c->q);
    weft__waitq_ready_chain(chain);
    weft__waitq_leave_gate(gated);
}
