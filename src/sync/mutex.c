/*
 * Mutex (Go's sync.Mutex) on the park/ready interface.
 *
 * The state word (mu->q.word) packs LOCKED, WOKEN, STARVING and, from bit
 * WAITER_SHIFT up, the number of registered waiters. With no waiter
 * registered, lock is one load and one CAS, and unlock one atomic
 * subtraction of LOCKED. Everything else is in the slow paths.
 *
 * Normal mode. A locker that finds the mutex held spins for a short while
 * (only when the holder can be running on another CPU), then registers as
 * a waiter and parks at the back of the queue. Unlock wakes the first
 * waiter, which then competes with newcomers for the lock (barging). A
 * woken waiter that loses is queued again at the front.
 *
 * WOKEN. A spinner sets it to ask unlockers not to wake anyone, since it
 * is about to take the lock itself. An unlocker sets it when it wakes a
 * waiter. While it is set, unlock wakes no one, so a stream of unlocks
 * does not wake a crowd that would only queue again. The party that set it
 * clears it with its next successful CAS on the state.
 *
 * Starvation mode. A waiter that has waited more than STARVATION_NS in
 * total sets STARVING when it registers again. Then unlock hands the lock
 * straight to the first waiter (LOCKED stays clear until that waiter sets
 * it), and newcomers neither spin nor barge but queue at the back. The
 * waiter that receives the lock clears STARVING when it was the last
 * waiter or had waited less than STARVATION_NS.
 *
 * Registration. A waiter registers (adds one to the waiter count) under
 * the queue lock, and links its record before dropping that lock. An
 * unlocker first takes one waiter off the count (normal mode) or leaves it
 * for the receiver to take off (starvation mode), then pops a record under
 * the queue lock. So, with the queue lock free, the count plus the pops
 * still to come equals the number of records queued, and every pop finds
 * a record.
 *
 * Abandoned waiters. Coroutines parked here when their runtime shut down
 * stay counted, and q.abandoned tracks how many (see waitq.h). Live
 * waiters are popped first. A waker that finds only abandoned ones does
 * what such a waiter would have done, and goes on. In normal mode it
 * clears WOKEN again and wakes the next waiter if the mutex is still free.
 * In starvation mode it takes the abandoned waiter off the count and
 * hands the lock on.
 *
 * Lock order: the queue lock is a leaf. The state word is changed both
 * with and without it, always by atomic operations.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <unistd.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "waitq.h"
#include "weft/sync.h"

#define LOCKED 1u
#define WOKEN 2u
#define STARVING 4u
#define WAITER_SHIFT 3
#define ONE_WAITER (1u << WAITER_SHIFT)

/* Total wait after which a waiter switches the mutex to starvation mode.
 * Go uses the same 1 ms. */
#define STARVATION_NS 1000000
/* Spin rounds before parking, and the pause cap of the exponential
 * back-off between them. That makes at most 255 pauses in all. By
 * estimate, with pause latencies of 10 to 140 cycles, that is one to
 * twelve microseconds. */
#define SPIN_ROUNDS 12u
#define SPIN_MAX_PAUSES 32u

#define STATE(mu) ((_Atomic uint32_t *)&(mu)->q.word)

static uint32_t waiters_of(uint32_t state)
{
    return state >> WAITER_SHIFT;
}

static int online_cpus(void)
{
    static _Atomic int cached;
    int n = atomic_load_explicit(&cached, memory_order_relaxed);
    if (n == 0) {
        long r = sysconf(_SC_NPROCESSORS_ONLN);
        n = r > 0 ? (int)r : 1;
        atomic_store_explicit(&cached, n, memory_order_relaxed);
    }
    return n;
}

/* Whether spinning can pay off: the holder must be able to run at the
 * same time as the caller. For a coroutine that means another P is busy
 * running something (a spinning P only looks for work), and the caller's
 * own P has nothing else to run. The second condition matters because
 * nothing preempts a coroutine: a waiter woken by this P's unlock sits in
 * its runnext slot until the running coroutine parks, so spinning there
 * would keep the woken waiter from running. */
static bool spin_allowed(void)
{
    if (online_cpus() < 2)
        return false;
    weft__p *p = weft__p_self();
    if (!p)
        return true;
    int busy = weft__rt.nprocs -
               atomic_load_explicit(&weft__rt.npidle, memory_order_relaxed) -
               atomic_load_explicit(&weft__rt.nmspinning, memory_order_relaxed);
    if (busy < 2)
        return false;
    return atomic_load_explicit(&p->runnext, memory_order_relaxed) == NULL &&
           atomic_load_explicit(&p->runq_head, memory_order_relaxed) ==
               atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
}

bool weft_mutex_try_lock(weft_mutex *mu)
{
    uint32_t old = atomic_load_explicit(STATE(mu), memory_order_relaxed);
    for (;;) {
        if (old & (LOCKED | STARVING))
            return false;
        if (atomic_compare_exchange_weak_explicit(STATE(mu), &old, old | LOCKED,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
}

void weft_mutex_lock(weft_mutex *mu)
{
    weft__mutex_lock_reason(mu, WEFT__WAIT_MUTEX);
}

/* Register as a waiter and park. Returns false without parking when the
 * mutex is free and in normal mode once the queue lock is held, so that
 * the caller tries to take it. A waiter that has waited before
 * (*wait_start set) goes back to the front of the queue, and a first-time
 * waiter sets *wait_start. On true, *old is the state seen after waking. */
static bool register_and_park(weft_mutex *mu, bool starving, bool awoke,
                              int64_t *wait_start, int reason, uint32_t *old)
{
    _Atomic uint32_t *state = STATE(mu);
    bool gated = weft__waitq_lock(&mu->q);
    uint32_t cur = atomic_load_explicit(state, memory_order_relaxed);
    for (;;) {
        if (!(cur & (LOCKED | STARVING))) {
            weft__waitq_unlock(&mu->q);
            weft__waitq_leave_gate(gated);
            *old = cur;
            return false;
        }
        uint32_t next = cur + ONE_WAITER;
        /* Switch to starvation mode only while someone holds the lock: an
         * unlock that finds STARVING must have a waiter to hand it to. */
        if (starving && (cur & LOCKED))
            next |= STARVING;
        if (awoke) {
            if (!(cur & WOKEN))
                weft__fatal("weft_mutex %p has the inconsistent state %#x: "
                            "it was overwritten or copied while in use",
                            (void *)mu, cur);
            next &= ~WOKEN;
        }
        if (atomic_compare_exchange_weak_explicit(state, &cur, next,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed))
            break;
    }
    bool front = *wait_start != 0;
    if (!front)
        *wait_start = weft_now();
    weft__waitq_wait(&mu->q, gated, front, reason);
    *old = atomic_load_explicit(state, memory_order_acquire);
    return true;
}

void weft__mutex_lock_slow(weft_mutex *mu, int reason)
{
    _Atomic uint32_t *state = STATE(mu);
    uint32_t old = atomic_load_explicit(state, memory_order_relaxed);

    /* Most calls get here only because waiters are queued while the lock
     * is free: take it before setting up anything else. */
    while (!(old & (LOCKED | STARVING))) {
        if (atomic_compare_exchange_weak_explicit(state, &old, old | LOCKED,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
    }

    int64_t wait_start = 0;
    bool starving = false;  /* waited longer than STARVATION_NS in total */
    bool awoke = false;     /* this caller set WOKEN, or was woken with it */
    int spin_ok = -1;       /* spin_allowed(), asked when first needed */
    unsigned rounds = 0;
    unsigned pauses = 1;

    for (;;) {
        /* Spin while the lock is held in normal mode. */
        if ((old & (LOCKED | STARVING)) == LOCKED && rounds < SPIN_ROUNDS &&
            (spin_ok >= 0 ? spin_ok : (spin_ok = spin_allowed()))) {
            if (!awoke && !(old & WOKEN) && waiters_of(old) != 0 &&
                atomic_compare_exchange_weak_explicit(state, &old, old | WOKEN,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed))
                awoke = true;
            for (unsigned k = 0; k < pauses; k++)
                weft__cpu_relax();
            if (pauses < SPIN_MAX_PAUSES)
                pauses *= 2;
            rounds++;
            old = atomic_load_explicit(state, memory_order_relaxed);
            continue;
        }

        /* Free and in normal mode: try to take it. */
        if (!(old & (LOCKED | STARVING))) {
            uint32_t next = old | LOCKED;
            if (awoke)
                next &= ~WOKEN;
            if (atomic_compare_exchange_weak_explicit(state, &old, next,
                                                      memory_order_acquire,
                                                      memory_order_relaxed))
                return;
            continue;
        }

        if (!register_and_park(mu, starving, awoke, &wait_start, reason, &old))
            continue;
        starving = starving || weft_now() - wait_start > STARVATION_NS;
        if (old & STARVING) {
            /* Handed off: the lock is ours, but LOCKED is still clear and
             * the count still includes this waiter. */
            uint32_t delta = LOCKED - ONE_WAITER;
            if (!starving || waiters_of(old) == 1)
                delta -= STARVING;
            atomic_fetch_add_explicit(state, delta, memory_order_acquire);
            return;
        }
        awoke = true;
        spin_ok = -1;
        rounds = 0;
        pauses = 1;
    }
}

/* Pop the next waiter and ready it. In normal mode the caller has taken
 * one waiter off the count and set WOKEN. With handoff the lock passes to
 * the waiter. */
static void wake_waiter(weft_mutex *mu, bool handoff)
{
    _Atomic uint32_t *state = STATE(mu);
    bool gated = weft__waitq_lock(&mu->q);
    weft__waiter *w;
    for (;;) {
        w = weft__waitq_pop(&mu->q);
        if (w)
            break;
        if (mu->q.abandoned == 0)
            weft__fatal("weft_mutex %p counts a waiter but none is queued: "
                        "it was overwritten or copied while in use",
                        (void *)mu);
        mu->q.abandoned--;

        if (handoff) {
            /* The abandoned waiter received the lock: take it off the
             * count and hand the lock on, leaving starvation mode if no
             * waiter is left. */
            uint32_t old = atomic_load_explicit(state, memory_order_relaxed);
            if (waiters_of(old) == 1) {
                atomic_fetch_sub_explicit(state, ONE_WAITER + STARVING,
                                          memory_order_release);
                break;
            }
            atomic_fetch_sub_explicit(state, ONE_WAITER, memory_order_relaxed);
            continue;
        }

        /* The abandoned waiter was woken: clear the WOKEN it would have
         * cleared, and wake the next waiter if unlock would now. */
        uint32_t old = atomic_fetch_and_explicit(state, ~WOKEN,
                                                 memory_order_relaxed) & ~WOKEN;
        bool again = false;
        while (waiters_of(old) != 0 && !(old & (LOCKED | WOKEN | STARVING))) {
            if (atomic_compare_exchange_weak_explicit(state, &old,
                                                      (old - ONE_WAITER) | WOKEN,
                                                      memory_order_relaxed,
                                                      memory_order_relaxed)) {
                again = true;
                break;
            }
        }
        if (!again)
            break;
    }
    weft__waitq_unlock(&mu->q);
    if (w)
        weft__ready(w->parker);
    weft__waitq_leave_gate(gated);
}

static void unlock_slow(weft_mutex *mu, uint32_t state_after)
{
    if (!((state_after + LOCKED) & LOCKED))
        weft__fatal("unlock of unlocked mutex");
    if (state_after & STARVING) {
        wake_waiter(mu, true);
        return;
    }
    uint32_t old = state_after;
    for (;;) {
        /* Return when there is no waiter to wake, or another party will
         * see to it. A new holder wakes a waiter when it unlocks, a woken
         * waiter or spinner is about to take the lock, and in starvation
         * mode the holder's unlock hands the lock on. */
        if (waiters_of(old) == 0 || (old & (LOCKED | WOKEN | STARVING)))
            return;
        if (atomic_compare_exchange_weak_explicit(STATE(mu), &old,
                                                  (old - ONE_WAITER) | WOKEN,
                                                  memory_order_relaxed,
                                                  memory_order_relaxed)) {
            wake_waiter(mu, false);
            return;
        }
    }
}

void weft_mutex_unlock(weft_mutex *mu)
{
    uint32_t state_after = atomic_fetch_sub_explicit(STATE(mu), LOCKED,
                                                     memory_order_release) - LOCKED;
    if (state_after != 0)
        unlock_slow(mu, state_after);
}
