/*
 * Wait group (Go's sync.WaitGroup) on the park/ready interface.
 *
 * state packs the counter (signed, high 32 bits) and the number of
 * registered waiters (low 32 bits) into one 64-bit word, so that the adder
 * that brings the counter to zero sees in the same atomic operation whether
 * anyone waits. If no one does, it never touches the wait group again, so
 * a waiter that saw zero may free it at once.
 *
 * Algorithm:
 *  wait: if the counter is zero, return. Otherwise register as a waiter by
 *        CAS (waiters + 1), then under lock either take a wakeup already
 *        granted or link onto the waiter list and park.
 *  add:  add delta to the counter. Counter < 0 is fatal. If it reached zero
 *        with w waiters: reset state to 0, then under lock grant w wakeups,
 *        unlinking up to w parked waiters, and ready them after unlocking.
 *        A waiter that registered but has not linked yet takes its granted
 *        wakeup when it gets the lock, without parking.
 * Misuse is fatal, as in Go, in three cases. The counter goes negative.
 * An add runs concurrently with a wait: the counter rises from zero while
 * waiters of the ending round are still registered, or it changes between
 * reaching zero and the reset. The wait group is reused early: a released
 * waiter finds the state non-zero before it returns. The last two checks
 * are best-effort, because they catch only races that overlap.
 * Invariants: wakeups + waiters on the list never exceed the registered
 * waiters of the round being released. Plain threads and coroutines wait
 * on separate lists. The coroutines all belong to the runtime numbered
 * generation, and their records vanish when it shuts down. So a list from
 * an earlier runtime is dropped without being read, and the threads on the
 * other list are still woken.
 * Locking: wg->lock is a leaf, never held across ready.
 * Callers: coroutines and plain threads.
 */
#include <stdatomic.h>
#include <stddef.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/sync.h"

typedef struct wg_waiter {
    struct wg_waiter *next;
    weft__parker *parker;
} wg_waiter;

#define WG_STATE(wg) ((_Atomic uint64_t *)&(wg)->state)
#define WG_LOCK(wg) ((_Atomic uint32_t *)&(wg)->lock)

static void ready_list(wg_waiter *list)
{
    while (list) {
        wg_waiter *w = list;
        list = w->next;
        /* w lives on the parked waiter's stack; read it before ready. */
        weft__ready(w->parker);
    }
}

void weft_wg_add(weft_wg *wg, int64_t delta)
{
    if (!wg)
        weft__fatal("weft_wg_add called with a NULL wait group");
    if (delta > INT32_MAX || delta < INT32_MIN)
        weft__fatal("weft_wg_add delta %lld is out of range", (long long)delta);
    uint64_t s = atomic_fetch_add(WG_STATE(wg), (uint64_t)delta << 32) +
                 ((uint64_t)delta << 32);
    int32_t count = (int32_t)(s >> 32);
    uint32_t waiters = (uint32_t)s;
    if (count < 0)
        weft__fatal("negative wait group counter (%d): weft_wg_done or a "
                    "negative weft_wg_add took away more than was added",
                    count);
    /* Waiters register only while the counter is positive, so a counter
     * that rises from zero while some are still registered means this add
     * raced with the end of a wait. */
    if (waiters != 0 && delta > 0 && count == delta)
        weft__fatal("wait group misuse: add called concurrently with wait");
    if (count > 0 || waiters == 0)
        return;

    /* Coroutine waiters' records live on their stacks, which shutdown
     * unmaps. From outside the Ps, hold the runtime's entry gate until the
     * last ready, so shutdown cannot free them meanwhile. */
    bool outside = weft__p_self() == NULL;
    bool gated = outside && weft__gate_enter();

    /* Counter is zero with waiters: this round is over. A waiter that reads
     * zero does not register, so the word can only have changed if another
     * add started a new round concurrently, which Go also rejects. The
     * reset happens under the lock, so a waiter of a new round links itself
     * only after this round's waiters are taken. */
    weft__lock_acquire(WG_LOCK(wg));
    if (!atomic_compare_exchange_strong(WG_STATE(wg), &s, 0))
        weft__fatal("wait group misuse: add called concurrently with wait");
    wg_waiter *threads = wg->thread_waiters;
    wg_waiter *coroutines = wg->coroutine_waiters;
    uint32_t linked = wg->ncoroutines;
    /* Coroutines of a runtime that has shut down, or is shutting down
     * while this thread is outside the gate, were abandoned with it: their
     * records may be unmapped, so they are dropped unread. */
    if (coroutines && ((outside && !gated) || wg->generation != weft__generation()))
        coroutines = NULL;
    wg->thread_waiters = NULL;
    wg->coroutine_waiters = NULL;
    wg->ncoroutines = 0;
    for (wg_waiter *w = threads; w; w = w->next)
        linked++;
    wg->wakeups += waiters - linked;
    weft__lock_release(WG_LOCK(wg));

    ready_list(threads);
    ready_list(coroutines);
    if (gated)
        weft__gate_leave();
}

void weft_wg_done(weft_wg *wg)
{
    weft_wg_add(wg, -1);
}

static bool wg_unlock(void *arg)
{
    weft_wg *wg = arg;
    weft__lock_release(WG_LOCK(wg));
    return true;
}

/* A released waiter finds the state reset to zero until every waiter of
 * its round has returned, unless the caller already started a new round. */
static void check_not_reused(weft_wg *wg)
{
    if (atomic_load(WG_STATE(wg)) != 0)
        weft__fatal("wait group is reused before a previous wait has returned");
}

void weft_wg_wait(weft_wg *wg)
{
    if (!wg)
        weft__fatal("weft_wg_wait called with a NULL wait group");
    uint64_t s = atomic_load(WG_STATE(wg));
    for (;;) {
        if ((int32_t)(s >> 32) == 0)
            return;
        if (atomic_compare_exchange_weak(WG_STATE(wg), &s, s + 1))
            break;
    }
    weft__lock_acquire(WG_LOCK(wg));
    if (wg->wakeups > 0) {
        wg->wakeups--;
        weft__lock_release(WG_LOCK(wg));
        check_not_reused(wg);
        return;
    }
    wg_waiter self = { .next = NULL, .parker = weft__parker_self() };
    if (self.parker->kind == WEFT__PARKER_G) {
        uint32_t generation = weft__generation();
        if (wg->ncoroutines > 0 && wg->generation != generation) {
            /* Left over from a runtime that shut down: drop the records
             * unread, but keep counting them as linked, so the round's end
             * grants no wakeups for them. */
            wg->coroutine_waiters = NULL;
        }
        self.next = wg->coroutine_waiters;
        wg->coroutine_waiters = &self;
        wg->ncoroutines++;
        wg->generation = generation;
    } else {
        self.next = wg->thread_waiters;
        wg->thread_waiters = &self;
    }
    weft__park(wg_unlock, wg, WEFT__WAIT_WAITGROUP);
    check_not_reused(wg);
}
