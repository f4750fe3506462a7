/*
 * Weighted semaphore (weft/sem.h) and object pool (weft/pool.h).
 *
 * Semaphore:
 * - invalid sizes and weights are rejected;
 * - concurrent acquirers of random weights never hold more than the size;
 * - FIFO order: a large request at the head is not bypassed by small ones,
 *   and try_acquire fails while waiters are queued;
 * - acquire with a context that times out or is already ended fails and
 *   keeps no weight, and a cancelled head waiter lets smaller ones behind it
 *   in;
 * - plain threads wait too, also behind coroutines abandoned by a
 *   shutdown, and releasing more than held is fatal.
 *
 * Pool:
 * - a zero-initialised pool, and new_fn for an empty get;
 * - get and put across Ps and from a plain thread, with every object
 *   cached, held or freed exactly once, also when the pool trims;
 * - every cached object is passed to free_fn when the runtime shuts down
 *   or the pool is initialised again;
 * - without free_fn, objects stay in the pool across a shutdown.
 *
 * Some tests call weft_sleep to let time pass and then check that
 * something has not happened: the sleep is the measured interval, not a
 * way to wait for another party.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Generous upper bound for any wait on this shared, noisy machine. */
#define LATE WEFT_SEC(2)

static uint64_t next_random(uint64_t *state)
{
    /* xorshift64 */
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return x;
}

/* ---- semaphore: arguments ------------------------------------------- */

static void test_sem_invalid_arguments(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, -1), WEFT_EINVAL);
    assert_int_equal(weft_sem_init(&s, INT64_MIN), WEFT_EINVAL);

    assert_int_equal(weft_sem_init(&s, 5), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 6), WEFT_EINVAL);
    assert_int_equal(weft_sem_acquire(NULL, &s, INT64_MAX), WEFT_EINVAL);
    assert_int_equal(weft_sem_acquire(NULL, &s, -1), WEFT_EINVAL);
    assert_int_equal(weft_sem_acquire(NULL, &s, INT64_MIN), WEFT_EINVAL);
    assert_false(weft_sem_try_acquire(&s, 6));

    /* Nothing was taken by the failed calls. */
    assert_true(weft_sem_try_acquire(&s, 5));
    assert_false(weft_sem_try_acquire(&s, 1));
    weft_sem_release(&s, 5);

    /* Weight 0 always fits; the full size fits when free. */
    assert_int_equal(weft_sem_acquire(NULL, &s, 0), 0);
    assert_true(weft_sem_try_acquire(&s, 0));
    assert_int_equal(weft_sem_acquire(NULL, &s, 5), 0);
    assert_true(weft_sem_try_acquire(&s, 0));
    weft_sem_release(&s, 2);
    weft_sem_release(&s, 3);
    assert_true(weft_sem_try_acquire(&s, 5));
    weft_sem_release(&s, 5);

    /* Size 0 admits only weight 0, and a zeroed semaphore has size 0. */
    weft_sem empty;
    assert_int_equal(weft_sem_init(&empty, 0), 0);
    assert_int_equal(weft_sem_acquire(NULL, &empty, 0), 0);
    assert_int_equal(weft_sem_acquire(NULL, &empty, 1), WEFT_EINVAL);
    assert_false(weft_sem_try_acquire(&empty, 1));
    weft_sem zeroed = {0};
    assert_int_equal(weft_sem_acquire(NULL, &zeroed, 0), 0);
    assert_int_equal(weft_sem_acquire(NULL, &zeroed, 1), WEFT_EINVAL);
    assert_false(weft_sem_try_acquire(&zeroed, 1));
    assert_int_equal(weft_sem_acquire(NULL, NULL, 1), WEFT_EINVAL);
    assert_int_equal(weft_sem_init(NULL, 1), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- semaphore: never over-committed -------------------------------- */

enum { SEM_SIZE = 10 };

typedef struct sem_stress {
    weft_sem sem;
    _Atomic int64_t held;
    _Atomic int64_t max_held;
    _Atomic int64_t acquisitions;
    int rounds;
    weft_wg wg;
} sem_stress;

static void hold_random_weights(sem_stress *s, uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < s->rounds; i++) {
        int64_t w = 1 + (int64_t)(next_random(&rng) % SEM_SIZE);
        bool via_try = next_random(&rng) % 4 == 0;
        if (via_try) {
            if (!weft_sem_try_acquire(&s->sem, w)) {
                weft_yield();
                continue;
            }
        } else {
            CHECK(weft_sem_acquire(NULL, &s->sem, w) == 0);
        }
        int64_t now = atomic_fetch_add(&s->held, w) + w;
        CHECK(now <= SEM_SIZE);
        int64_t seen = atomic_load(&s->max_held);
        while (now > seen && !atomic_compare_exchange_weak(&s->max_held, &seen, now)) {
        }
        atomic_fetch_add(&s->acquisitions, 1);
        weft_yield();
        atomic_fetch_sub(&s->held, w);
        weft_sem_release(&s->sem, w);
    }
}

typedef struct stress_worker {
    sem_stress *s;
    uint64_t seed;
} stress_worker;

static void stress_coroutine(void *arg)
{
    stress_worker *w = arg;
    hold_random_weights(w->s, w->seed);
    weft_wg_done(&w->s->wg);
}

static void *stress_thread(void *arg)
{
    stress_worker *w = arg;
    hold_random_weights(w->s, w->seed);
    return NULL;
}

/* Coroutines on 4 Ps and plain threads acquire random weights: the weight
 * held at once never exceeds the size. */
static void test_sem_never_overcommitted(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { COROUTINES = 64, THREADS = 2 };
    sem_stress s = { .rounds = SCALE(10000) };
    assert_int_equal(weft_sem_init(&s.sem, SEM_SIZE), 0);

    stress_worker workers[COROUTINES + THREADS];
    weft_wg_add(&s.wg, COROUTINES);
    for (int i = 0; i < COROUTINES; i++) {
        workers[i] = (stress_worker){ &s, (uint64_t)i + 1 };
        assert_int_equal(weft_go(stress_coroutine, &workers[i]), 0);
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[COROUTINES + i] = (stress_worker){ &s, (uint64_t)(COROUTINES + i) + 1 };
        assert_int_equal(pthread_create(&threads[i], NULL, stress_thread, &workers[COROUTINES + i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    weft_wg_wait(&s.wg);

    print_message("%lld acquisitions, max weight held at once %lld of %d\n",
                  (long long)atomic_load(&s.acquisitions), (long long)atomic_load(&s.max_held), SEM_SIZE);
    assert_true(atomic_load(&s.max_held) <= SEM_SIZE);
    assert_true(atomic_load(&s.acquisitions) > 0);
    assert_true(atomic_load(&s.held) == 0);
    /* Everything was released. */
    assert_true(weft_sem_try_acquire(&s.sem, SEM_SIZE));
    weft_sem_release(&s.sem, SEM_SIZE);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- semaphore: FIFO ------------------------------------------------ */

typedef struct sem_waiter {
    weft_sem *sem;
    weft_ctx *ctx;
    int64_t weight;
    bool release_after;     /* release right after acquiring */
    _Atomic int started;
    _Atomic int acquired;
    int result;
    int64_t waited;
    int64_t ended_at;       /* weft_now() when acquire returned */
    _Atomic int *order;     /* acquisition order counter, shared */
    int rank;               /* 1-based position in that order */
    _Atomic int finished;
    _Atomic int parked;     /* set once the acquire parked; see mark_parked */
} sem_waiter;

static void set_parked(void *arg)
{
    sem_waiter *w = arg;
    atomic_store(&w->parked, 1);
}

/* Spawns a coroutine that sets w->parked. With maxprocs 1 and no
 * preemption, it runs only once the caller has parked or finished, so a
 * set flag means the acquire that follows is queued (or done). */
static void mark_parked(sem_waiter *w)
{
    CHECK(weft_go(set_parked, w) == 0);
}

static void acquire_weight(sem_waiter *w)
{
    atomic_store(&w->started, 1);
    if (weft_in_coroutine())
        mark_parked(w);
    int64_t start = weft_now();
    w->result = weft_sem_acquire(w->ctx, w->sem, w->weight);
    w->ended_at = weft_now();
    w->waited = w->ended_at - start;
    if (w->result == 0) {
        if (w->order)
            w->rank = atomic_fetch_add(w->order, 1) + 1;
        atomic_store(&w->acquired, 1);
        if (w->release_after)
            weft_sem_release(w->sem, w->weight);
    }
    atomic_store(&w->finished, 1);
}

static void acquire_coroutine(void *arg)
{
    acquire_weight(arg);
}

static void *acquire_thread(void *arg)
{
    acquire_weight(arg);
    return NULL;
}

/* Yields until a waiter is queued on s, detected through try_acquire(1)
 * failing while at least 1 is free. Returns false at the deadline. */
static bool wait_until_queued(weft_sem *s)
{
    int64_t deadline = weft_now() + LATE;
    while (weft_now() < deadline) {
        if (!weft_sem_try_acquire(s, 1))
            return true;
        weft_sem_release(s, 1);
        weft_yield();
    }
    return false;
}

/* A request for the full size waits at the head. A later request for 1
 * queues behind it even though 1 is free, and try_acquire fails while
 * they wait. Releasing lets the big one in first. The runtime has one P,
 * so that the parked flags are exact. */
static void test_sem_fifo_big_request_first(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 10), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 9), 0);

    _Atomic int order = 0;
    sem_waiter big = { .sem = &s, .weight = 10, .order = &order };
    sem_waiter small = { .sem = &s, .weight = 1, .order = &order };
    assert_int_equal(weft_go(acquire_coroutine, &big), 0);
    assert_true(wait_for_count(&big.parked, 1, LATE));
    assert_int_equal(atomic_load(&big.acquired), 0);
    /* 1 is free, but a waiter is queued. */
    assert_false(weft_sem_try_acquire(&s, 1));

    assert_int_equal(weft_go(acquire_coroutine, &small), 0);
    assert_true(wait_for_count(&small.parked, 1, LATE));
    assert_int_equal(atomic_load(&small.acquired), 0);
    assert_false(weft_sem_try_acquire(&s, 1));

    /* 9 of 10 free is still not enough for the head. */
    weft_sem_release(&s, 8);
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);
    assert_int_equal(atomic_load(&big.acquired), 0);
    assert_int_equal(atomic_load(&small.acquired), 0);
    assert_false(weft_sem_try_acquire(&s, 1));

    weft_sem_release(&s, 1);
    assert_true(wait_for_count(&big.acquired, 1, LATE));
    assert_int_equal(big.result, 0);
    assert_int_equal(big.rank, 1);
    assert_int_equal(atomic_load(&small.acquired), 0);

    weft_sem_release(&s, 10);
    assert_true(wait_for_count(&small.acquired, 1, LATE));
    assert_int_equal(small.result, 0);
    assert_int_equal(small.rank, 2);
    weft_sem_release(&s, 1);
    assert_true(weft_sem_try_acquire(&s, 10));
    weft_sem_release(&s, 10);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* Waiters of weight 1 are served in the order they queued, each handing
 * the weight on as it releases. */
static void test_sem_fifo_order(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { WAITERS = 20 };
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 1), 0);
    assert_true(weft_sem_try_acquire(&s, 1));

    _Atomic int order = 0;
    sem_waiter waiters[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        waiters[i] = (sem_waiter){ .sem = &s, .weight = 1, .order = &order, .release_after = true };
        assert_int_equal(weft_go(acquire_coroutine, &waiters[i]), 0);
        assert_true(wait_for_count(&waiters[i].parked, 1, LATE));
    }
    weft_sem_release(&s, 1);
    for (int i = 0; i < WAITERS; i++)
        assert_true(wait_for_count(&waiters[i].finished, 1, LATE));
    for (int i = 0; i < WAITERS; i++) {
        assert_int_equal(waiters[i].result, 0);
        assert_int_equal(waiters[i].rank, i + 1);
    }
    assert_true(weft_sem_try_acquire(&s, 1));
    weft_sem_release(&s, 1);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* FIFO order applies across plain threads and coroutines: a big request
 * from a plain thread at the head is not bypassed by a small one from a
 * coroutine, and the other way round. */
static void test_sem_fifo_threads_and_coroutines(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 10), 0);

    for (int thread_first = 0; thread_first < 2; thread_first++) {
        assert_int_equal(weft_sem_acquire(NULL, &s, 9), 0);
        _Atomic int order = 0;
        sem_waiter big = { .sem = &s, .weight = 10, .order = &order, .release_after = true };
        sem_waiter small = { .sem = &s, .weight = 1, .order = &order, .release_after = true };
        pthread_t thread;
        if (thread_first) {
            assert_int_equal(pthread_create(&thread, NULL, acquire_thread, &big), 0);
            assert_true(wait_until_queued(&s));
            assert_int_equal(weft_go(acquire_coroutine, &small), 0);
            assert_true(wait_for_count(&small.parked, 1, LATE));
        } else {
            assert_int_equal(weft_go(acquire_coroutine, &big), 0);
            assert_true(wait_for_count(&big.parked, 1, LATE));
            assert_int_equal(pthread_create(&thread, NULL, acquire_thread, &small), 0);
            assert_true(wait_for_count(&small.started, 1, LATE));
        }
        /* 1 is free, but the small request must wait behind the big one. */
        assert_int_equal(weft_sleep(WEFT_MS(20)), 0);
        assert_int_equal(atomic_load(&small.acquired), 0);
        assert_int_equal(atomic_load(&big.acquired), 0);

        weft_sem_release(&s, 9);
        assert_true(wait_for_count(&big.finished, 1, LATE));
        assert_true(wait_for_count(&small.finished, 1, LATE));
        assert_int_equal(pthread_join(thread, NULL), 0);
        assert_int_equal(big.result, 0);
        assert_int_equal(small.result, 0);
        if (big.rank != 1 || small.rank != 2)
            fail_msg("%s first: big request got rank %d, small one rank %d",
                     thread_first ? "thread" : "coroutine", big.rank, small.rank);
        assert_true(weft_sem_try_acquire(&s, 10));
        weft_sem_release(&s, 10);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- semaphore: contexts -------------------------------------------- */

/* An acquire that times out returns WEFT_ETIMEDOUT near the deadline and
 * keeps no weight: once the holder releases, the full size is free. */
static void test_sem_acquire_timeout(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 4), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 4), 0);

    int64_t created_at = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    assert_non_null(ctx);
    sem_waiter w = { .sem = &s, .weight = 2, .ctx = ctx };
    assert_int_equal(weft_go(acquire_coroutine, &w), 0);
    assert_true(wait_for_count(&w.finished, 1, WEFT_SEC(5)));
    print_message("acquire with a 50 ms timeout returned %.3f ms after the context was made\n",
                  (w.ended_at - created_at) / 1e6);
    assert_int_equal(w.result, WEFT_ETIMEDOUT);
    assert_int_equal(atomic_load(&w.acquired), 0);
    assert_true(w.ended_at - created_at >= WEFT_MS(50));
    assert_true(w.ended_at - created_at < LATE);

    /* The timed-out waiter left the queue: try_acquire is not blocked by
     * it, and it took no weight. */
    assert_false(weft_sem_try_acquire(&s, 1));
    weft_sem_release(&s, 4);
    assert_true(weft_sem_try_acquire(&s, 4));
    weft_sem_release(&s, 4);

    /* The same from a plain thread. */
    assert_int_equal(weft_sem_acquire(NULL, &s, 4), 0);
    created_at = weft_now();
    weft_ctx *thread_ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    assert_non_null(thread_ctx);
    sem_waiter tw = { .sem = &s, .weight = 3, .ctx = thread_ctx };
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, acquire_thread, &tw), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(tw.result, WEFT_ETIMEDOUT);
    assert_true(tw.ended_at - created_at >= WEFT_MS(50));
    assert_true(tw.ended_at - created_at < LATE);
    weft_sem_release(&s, 4);
    assert_true(weft_sem_try_acquire(&s, 4));
    weft_sem_release(&s, 4);

    weft_ctx_release(ctx);
    weft_ctx_release(thread_ctx);
    assert_int_equal(weft_shutdown(), 0);
}

/* An ended context fails the acquire even when the weight is free. */
static void test_sem_acquire_ended_context(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 3), 0);

    weft_ctx *cancelled = weft_ctx_with_cancel(NULL);
    assert_non_null(cancelled);
    weft_ctx_cancel(cancelled);
    assert_int_equal(weft_sem_acquire(cancelled, &s, 1), WEFT_ECANCELED);
    assert_int_equal(weft_sem_acquire(cancelled, &s, 0), WEFT_ECANCELED);

    weft_ctx *expired = weft_ctx_with_deadline(NULL, weft_now() - 1);
    assert_non_null(expired);
    assert_int_equal(weft_sem_acquire(expired, &s, 3), WEFT_ETIMEDOUT);

    /* Nothing is held. */
    assert_true(weft_sem_try_acquire(&s, 3));
    weft_sem_release(&s, 3);
    weft_ctx_release(cancelled);
    weft_ctx_release(expired);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct cancel_later {
    weft_ctx *ctx;
    int64_t delay;
} cancel_later;

static void cancel_after_delay(void *arg)
{
    cancel_later *c = arg;
    weft_sleep(c->delay);
    weft_ctx_cancel(c->ctx);
}

/* A waiter cancelled by another coroutine returns WEFT_ECANCELED. When it
 * was at the head, the smaller waiter behind it, which fits, gets in. */
static void test_sem_cancelled_head_lets_others_in(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 10), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 9), 0);

    weft_ctx *ctx = weft_ctx_with_cancel(NULL);
    assert_non_null(ctx);
    sem_waiter head = { .sem = &s, .weight = 5, .ctx = ctx };
    sem_waiter behind = { .sem = &s, .weight = 1 };
    assert_int_equal(weft_go(acquire_coroutine, &head), 0);
    assert_true(wait_for_count(&head.parked, 1, LATE));
    assert_int_equal(weft_go(acquire_coroutine, &behind), 0);
    assert_true(wait_for_count(&behind.parked, 1, LATE));
    assert_int_equal(atomic_load(&behind.acquired), 0);

    cancel_later c = { ctx, WEFT_MS(10) };
    int64_t start = weft_now();
    assert_int_equal(weft_go(cancel_after_delay, &c), 0);
    assert_true(wait_for_count(&head.finished, 1, LATE));
    assert_int_equal(head.result, WEFT_ECANCELED);
    assert_int_equal(atomic_load(&head.acquired), 0);
    assert_true(head.waited >= WEFT_MS(10));
    assert_true(weft_now() - start < LATE);
    assert_true(wait_for_count(&behind.acquired, 1, LATE));
    assert_int_equal(behind.result, 0);

    weft_sem_release(&s, 1);
    weft_sem_release(&s, 9);
    assert_true(weft_sem_try_acquire(&s, 10));
    weft_sem_release(&s, 10);
    weft_ctx_release(ctx);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* A plain thread blocked in acquire is woken by a coroutine's release. */
static void test_sem_thread_waits(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 2), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 1), 0);

    sem_waiter w = { .sem = &s, .weight = 2, .release_after = true };
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, acquire_thread, &w), 0);
    assert_true(wait_until_queued(&s));
    assert_int_equal(atomic_load(&w.acquired), 0);
    weft_sem_release(&s, 1);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(w.result, 0);
    assert_int_equal(atomic_load(&w.acquired), 1);
    assert_true(weft_sem_try_acquire(&s, 2));
    weft_sem_release(&s, 2);
    assert_int_equal(weft_shutdown(), 0);
}

/* Coroutines waiting at shutdown are abandoned; a release afterwards
 * skips them and serves the plain thread queued behind them. */
static void test_sem_waiters_after_shutdown(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { WAITERS = 4 };
    weft_sem s;
    assert_int_equal(weft_sem_init(&s, 2), 0);
    assert_int_equal(weft_sem_acquire(NULL, &s, 2), 0);

    sem_waiter abandoned[WAITERS];
    for (int i = 0; i < WAITERS; i++) {
        abandoned[i] = (sem_waiter){ .sem = &s, .weight = 1 };
        assert_int_equal(weft_go(acquire_coroutine, &abandoned[i]), 0);
        assert_true(wait_for_count(&abandoned[i].parked, 1, LATE));
    }
    sem_waiter on_thread = { .sem = &s, .weight = 2 };
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, acquire_thread, &on_thread), 0);
    assert_true(wait_for_count(&on_thread.started, 1, LATE));
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&on_thread.finished), 0);
    weft_sem_release(&s, 2);
    assert_true(wait_for_count(&on_thread.finished, 1, LATE));
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(on_thread.result, 0);
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(atomic_load(&abandoned[i].finished), 0);
    weft_sem_release(&s, 2);
    assert_true(weft_sem_try_acquire(&s, 2));
    weft_sem_release(&s, 2);
}

static void release_more_than_held(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_sem s;
    if (weft_sem_init(&s, 5) != 0 || weft_sem_acquire(NULL, &s, 2) != 0)
        _exit(11);
    weft_sem_release(&s, 3);
}

static void release_unheld(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_sem s;
    if (weft_sem_init(&s, 5) != 0)
        _exit(11);
    weft_sem_release(&s, 1);
}

static void release_negative(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_sem s;
    if (weft_sem_init(&s, 5) != 0 || weft_sem_acquire(NULL, &s, 2) != 0)
        _exit(11);
    weft_sem_release(&s, -1);
}

static void release_null(void)
{
    weft_sem_release(NULL, 1);
}

/* Releasing more than held, a negative weight or a NULL semaphore is
 * fatal. */
static void test_sem_release_more_than_held_fatal(void **state)
{
    (void)state;
    void (*bodies[])(void) = { release_more_than_held, release_unheld, release_negative, release_null };
    for (size_t i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        char err[2048];
        int status = run_void_in_child(bodies[i], err, sizeof err);
        print_message("child status %d, stderr: %s", status, err);
        assert_int_equal(status, 128 + SIGABRT);
        assert_non_null(strstr(err, "weft: fatal:"));
    }
}

/* ---- pool ------------------------------------------------------------ */

enum { OBJ_FRESH = 1, OBJ_HELD, OBJ_CACHED, OBJ_FREED };

typedef struct pool_obj {
    int id;
    _Atomic int state;
    long payload;
} pool_obj;

/* Every object new_fn made, so a test can inspect and free them all.
 * new_fn and free_fn take no context argument, so this is global. */
static struct {
    pool_obj **objects;
    int capacity;
    _Atomic int created;
    _Atomic int freed;
    _Atomic int bad_frees;   /* free of an object not cached, or twice */
} registry;

static void registry_reset(int capacity)
{
    registry.objects = calloc((size_t)capacity, sizeof *registry.objects);
    assert_non_null(registry.objects);
    registry.capacity = capacity;
    atomic_store(&registry.created, 0);
    atomic_store(&registry.freed, 0);
    atomic_store(&registry.bad_frees, 0);
}

static void registry_destroy(void)
{
    int created = atomic_load(&registry.created);
    for (int i = 0; i < created && i < registry.capacity; i++)
        free(registry.objects[i]);
    free(registry.objects);
    registry.objects = NULL;
}

static void *make_object(void)
{
    int id = atomic_fetch_add(&registry.created, 1);
    CHECK(id < registry.capacity);
    if (id >= registry.capacity)
        return NULL;
    pool_obj *o = calloc(1, sizeof *o);
    CHECK(o != NULL);
    if (!o)
        return NULL;
    o->id = id;
    atomic_store(&o->state, OBJ_FRESH);
    registry.objects[id] = o;
    return o;
}

/* Marks the object freed; the memory stays until registry_destroy, so a
 * later get of a freed object shows up as a state error. */
static void free_object(void *p)
{
    pool_obj *o = p;
    int expected = OBJ_CACHED;
    if (!atomic_compare_exchange_strong(&o->state, &expected, OBJ_FREED))
        atomic_fetch_add(&registry.bad_frees, 1);
    atomic_fetch_add(&registry.freed, 1);
}

/* Gets an object and checks that it came fresh from new_fn or from the
 * cache, never held by someone else or freed. */
static pool_obj *get_object(weft_pool *pool)
{
    pool_obj *o = weft_pool_get(pool);
    CHECK(o != NULL);
    if (!o)
        return NULL;
    int state = atomic_exchange(&o->state, OBJ_HELD);
    CHECK(state == OBJ_FRESH || state == OBJ_CACHED);
    return o;
}

static void put_object(weft_pool *pool, pool_obj *o)
{
    int expected = OBJ_HELD;
    CHECK(atomic_compare_exchange_strong(&o->state, &expected, OBJ_CACHED));
    weft_pool_put(pool, o);
}

typedef struct zero_pool_use {
    weft_pool *pool;
    long objects[40];
    int returned;       /* gets that returned one of objects */
    int foreign;        /* gets that returned anything else */
    int duplicates;     /* objects returned twice */
    bool empty_after;   /* a final get returned NULL */
    weft_wg wg;
} zero_pool_use;

/* Put every object, then get until NULL, counting what comes back. */
static void put_all_get_all(zero_pool_use *z)
{
    enum { N = sizeof z->objects / sizeof z->objects[0] };
    bool seen[N] = { false };
    for (int i = 0; i < N; i++)
        weft_pool_put(z->pool, &z->objects[i]);
    for (int i = 0; i < N; i++) {
        long *got = weft_pool_get(z->pool);
        if (!got)
            break;
        if (got < z->objects || got >= z->objects + N) {
            z->foreign++;
            continue;
        }
        if (seen[got - z->objects])
            z->duplicates++;
        seen[got - z->objects] = true;
        z->returned++;
    }
    z->empty_after = weft_pool_get(z->pool) == NULL;
}

static void put_all_get_all_coroutine(void *arg)
{
    zero_pool_use *z = arg;
    put_all_get_all(z);
    weft_wg_done(&z->wg);
}

/* A zero-initialised pool has no new_fn: get returns NULL when empty. A
 * put object may come back; the pool may also drop it, as Go's may, but a
 * pool that never returns anything caches nothing. Both a plain thread
 * (the shared list) and a coroutine (its P's cache) use it. */
static void test_pool_zero_initialised(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_pool pool = {0};
    assert_null(weft_pool_get(&pool));

    zero_pool_use on_thread = { .pool = &pool };
    put_all_get_all(&on_thread);
    print_message("plain thread: %d of 40 put objects came back\n", on_thread.returned);
    assert_int_equal(on_thread.foreign, 0);
    assert_int_equal(on_thread.duplicates, 0);
    assert_true(on_thread.returned > 0);
    assert_true(on_thread.empty_after);

    zero_pool_use on_coroutine = { .pool = &pool };
    weft_wg_add(&on_coroutine.wg, 1);
    assert_int_equal(weft_go(put_all_get_all_coroutine, &on_coroutine), 0);
    weft_wg_wait(&on_coroutine.wg);
    print_message("coroutine: %d of 40 put objects came back\n", on_coroutine.returned);
    assert_int_equal(on_coroutine.foreign, 0);
    assert_int_equal(on_coroutine.duplicates, 0);
    assert_true(on_coroutine.returned > 0);
    assert_true(on_coroutine.empty_after);

    assert_null(weft_pool_get(&pool));
    assert_int_equal(weft_shutdown(), 0);
}

/* An empty initialised pool calls new_fn; an object put back is reused
 * before new_fn is called again. */
static void test_pool_new_fn(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    registry_reset(16);
    weft_pool pool = {0};
    weft_pool_init(&pool, make_object, free_object);

    pool_obj *a = get_object(&pool);
    assert_non_null(a);
    assert_int_equal(a->id, 0);
    pool_obj *b = get_object(&pool);
    assert_non_null(b);
    assert_int_equal(b->id, 1);
    assert_int_equal(atomic_load(&registry.created), 2);

    put_object(&pool, a);
    pool_obj *again = get_object(&pool);
    assert_true(again == a || atomic_load(&registry.created) == 3);
    put_object(&pool, again);
    put_object(&pool, b);

    assert_int_equal(weft_shutdown(), 0);
    /* Shutting down freed every cached object exactly once. */
    int created = atomic_load(&registry.created);
    assert_int_equal(atomic_load(&registry.freed), created);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    for (int i = 0; i < created; i++)
        assert_int_equal(atomic_load(&registry.objects[i]->state), OBJ_FREED);
    registry_destroy();
    assert_no_check_failures();
}

typedef struct pool_stress {
    weft_pool *pool;
    int rounds;
    weft_wg wg;
} pool_stress;

static void use_pool(pool_stress *s, uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int i = 0; i < s->rounds; i++) {
        pool_obj *held[3];
        int n = 1 + (int)(next_random(&rng) % 3);
        for (int k = 0; k < n; k++) {
            held[k] = get_object(s->pool);
            if (held[k])
                held[k]->payload++;
        }
        if (i % 8 == 0)
            weft_yield();
        for (int k = 0; k < n; k++) {
            if (held[k])
                put_object(s->pool, held[k]);
        }
    }
}

typedef struct pool_worker {
    pool_stress *s;
    uint64_t seed;
} pool_worker;

static void pool_coroutine(void *arg)
{
    pool_worker *w = arg;
    use_pool(w->s, w->seed);
    weft_wg_done(&w->s->wg);
}

static void *pool_thread(void *arg)
{
    pool_worker *w = arg;
    use_pool(w->s, w->seed);
    return NULL;
}

/* Coroutines on 4 Ps and a plain thread get and put: no object is handed
 * to two holders at once, none is freed while held or twice, and after
 * weft_shutdown every object made has been freed. */
static void test_pool_across_ps(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { COROUTINES = 64, THREADS = 1 };
    pool_stress s = { .rounds = SCALE(10000) };
    /* At most 3 gets per round can reach new_fn. A pool that reuses
     * objects makes far fewer, so the registry stops at 2^20, and more
     * fails a CHECK in make_object. */
    int bound = (COROUTINES + THREADS) * s.rounds * 3;
    registry_reset(bound < (1 << 20) ? bound : (1 << 20));
    weft_pool pool = {0};
    weft_pool_init(&pool, make_object, free_object);
    s.pool = &pool;

    pool_worker workers[COROUTINES + THREADS];
    weft_wg_add(&s.wg, COROUTINES);
    for (int i = 0; i < COROUTINES; i++) {
        workers[i] = (pool_worker){ &s, (uint64_t)i + 1 };
        assert_int_equal(weft_go(pool_coroutine, &workers[i]), 0);
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[COROUTINES + i] = (pool_worker){ &s, 1000 + (uint64_t)i };
        assert_int_equal(pthread_create(&threads[i], NULL, pool_thread, &workers[COROUTINES + i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    weft_wg_wait(&s.wg);

    int created = atomic_load(&registry.created);
    int freed_before = atomic_load(&registry.freed);
    long gets = 0;
    for (int i = 0; i < created; i++)
        gets += registry.objects[i]->payload;
    print_message("%d objects made for %ld gets; %d freed while running\n", created, gets, freed_before);
    assert_true(created > 0);
    /* Reuse happened: far fewer objects than gets. */
    assert_true(created < gets);
    for (int i = 0; i < created; i++) {
        int st = atomic_load(&registry.objects[i]->state);
        assert_true(st == OBJ_CACHED || st == OBJ_FREED);
    }

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&registry.freed), created);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    for (int i = 0; i < created; i++)
        assert_int_equal(atomic_load(&registry.objects[i]->state), OBJ_FREED);
    registry_destroy();
    assert_no_check_failures();
}

typedef struct overflow_use {
    weft_pool *pool;
    pool_obj **held;
    int count;
    int fresh;          /* gets that new_fn served */
    weft_wg wg;
} overflow_use;

/* Get count objects, put them all back, then get count again. */
static void overflow_pool(overflow_use *u)
{
    for (int i = 0; i < u->count; i++)
        u->held[i] = get_object(u->pool);
    for (int i = 0; i < u->count; i++) {
        if (u->held[i])
            put_object(u->pool, u->held[i]);
    }
    for (int i = 0; i < u->count; i++) {
        pool_obj *o = weft_pool_get(u->pool);
        CHECK(o != NULL);
        if (!o)
            continue;
        int state = atomic_exchange(&o->state, OBJ_HELD);
        CHECK(state == OBJ_FRESH || state == OBJ_CACHED);
        u->fresh += state == OBJ_FRESH;
        u->held[i] = o;
    }
    for (int i = 0; i < u->count; i++) {
        if (u->held[i])
            put_object(u->pool, u->held[i]);
    }
}

static void overflow_coroutine(void *arg)
{
    overflow_use *u = arg;
    overflow_pool(u);
    weft_wg_done(&u->wg);
}

/* More objects than the caches keep, from a coroutine and from a plain
 * thread: whatever the pool trims goes to free_fn once, no trimmed object
 * comes back from get, and shutdown frees the rest. */
static void test_pool_trims_overflow(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { COUNT = 3000 };
    registry_reset(4 * COUNT);
    weft_pool pool = {0};
    weft_pool_init(&pool, make_object, free_object);
    pool_obj **held = calloc(COUNT, sizeof *held);
    assert_non_null(held);

    overflow_use on_coroutine = { .pool = &pool, .held = held, .count = COUNT };
    weft_wg_add(&on_coroutine.wg, 1);
    assert_int_equal(weft_go(overflow_coroutine, &on_coroutine), 0);
    weft_wg_wait(&on_coroutine.wg);
    overflow_use on_thread = { .pool = &pool, .held = held, .count = COUNT };
    overflow_pool(&on_thread);

    int created = atomic_load(&registry.created);
    int freed_running = atomic_load(&registry.freed);
    print_message("%d objects made, %d trimmed while running; second pass made %d (coroutine), %d (thread)\n",
                  created, freed_running, on_coroutine.fresh, on_thread.fresh);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    int cached = 0;
    for (int i = 0; i < created; i++) {
        int st = atomic_load(&registry.objects[i]->state);
        assert_true(st == OBJ_CACHED || st == OBJ_FREED);
        cached += st == OBJ_CACHED;
    }
    assert_int_equal(cached + freed_running, created);

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&registry.freed), created);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    for (int i = 0; i < created; i++)
        assert_int_equal(atomic_load(&registry.objects[i]->state), OBJ_FREED);
    free(held);
    registry_destroy();
    assert_no_check_failures();
}

static void put_objects_coroutine(void *arg)
{
    zero_pool_use *z = arg;
    for (int i = 0; i < 20; i++)
        weft_pool_put(z->pool, &z->objects[i]);
    weft_wg_done(&z->wg);
}

/* Without free_fn the pool drops nothing, across weft_shutdown too: the
 * objects put in one runtime come back from get in the next. Putting NULL
 * does nothing. */
static void test_pool_zero_keeps_across_shutdown(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_pool *pool = calloc(1, sizeof *pool);
    assert_non_null(pool);
    weft_pool_put(pool, NULL);
    assert_null(weft_pool_get(pool));

    /* 20 objects from a coroutine, 20 from this thread. */
    zero_pool_use z = { .pool = pool };
    weft_wg_add(&z.wg, 1);
    assert_int_equal(weft_go(put_objects_coroutine, &z), 0);
    weft_wg_wait(&z.wg);
    for (int i = 20; i < 40; i++)
        weft_pool_put(pool, &z.objects[i]);
    assert_int_equal(weft_shutdown(), 0);

    /* The next runtime gets all 40 back, each once. */
    assert_int_equal(weft_init(&cfg), 0);
    int returned = 0;
    bool seen[40] = { false };
    for (int i = 0; i < 40; i++) {
        long *got = weft_pool_get(pool);
        if (!got)
            break;
        assert_true(got >= z.objects && got < z.objects + 40);
        assert_false(seen[got - z.objects]);
        seen[got - z.objects] = true;
        returned++;
    }
    assert_int_equal(returned, 40);
    assert_null(weft_pool_get(pool));
    assert_int_equal(weft_shutdown(), 0);
    free(pool);
}

static void *make_no_object(void)
{
    return NULL;
}

typedef struct put_batch {
    weft_pool *pool;
    pool_obj **objects;
    int n;
    weft_wg wg;
} put_batch;

static void put_batch_coroutine(void *arg)
{
    put_batch *b = arg;
    for (int i = 0; i < b->n; i++)
        put_object(b->pool, b->objects[i]);
    weft_wg_done(&b->wg);
}

/* weft_pool_init on a pool that contains objects gives them to the old
 * free_fn, whether a P's cache or the shared list held them. */
static void test_pool_reinit_frees_objects(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { OBJECTS = 10 };
    registry_reset(OBJECTS + 8);
    weft_pool pool = {0};
    weft_pool_init(&pool, make_object, free_object);

    pool_obj *held[OBJECTS];
    for (int i = 0; i < OBJECTS; i++)
        held[i] = get_object(&pool);
    for (int i = 0; i < OBJECTS; i++)
        assert_non_null(held[i]);
    assert_int_equal(atomic_load(&registry.created), OBJECTS);

    /* Half from this thread (the shared list), half from a coroutine (its
     * P's cache). */
    for (int i = 0; i < OBJECTS / 2; i++)
        put_object(&pool, held[i]);
    put_batch batch = { .pool = &pool, .objects = held + OBJECTS / 2, .n = OBJECTS - OBJECTS / 2 };
    weft_wg_add(&batch.wg, 1);
    assert_int_equal(weft_go(put_batch_coroutine, &batch), 0);
    weft_wg_wait(&batch.wg);

    weft_pool_init(&pool, make_no_object, NULL);
    assert_int_equal(atomic_load(&registry.freed), OBJECTS);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    for (int i = 0; i < OBJECTS; i++)
        assert_int_equal(atomic_load(&held[i]->state), OBJ_FREED);
    /* The new new_fn serves gets now. */
    assert_null(weft_pool_get(&pool));
    assert_int_equal(atomic_load(&registry.created), OBJECTS);

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&registry.freed), OBJECTS);
    registry_destroy();
    assert_no_check_failures();
}

/* Objects still cached at shutdown all go to free_fn, whichever P cached
 * them. An object the caller has not put back is not freed. */
static void test_pool_shutdown_frees_cached(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { OBJECTS = 50 };
    registry_reset(OBJECTS + 8);
    weft_pool pool = {0};
    weft_pool_init(&pool, make_object, free_object);

    pool_obj *held[OBJECTS];
    for (int i = 0; i < OBJECTS; i++)
        held[i] = get_object(&pool);
    for (int i = 0; i < OBJECTS; i++)
        assert_non_null(held[i]);
    assert_int_equal(atomic_load(&registry.created), OBJECTS);
    /* Keep one, cache the rest. */
    for (int i = 1; i < OBJECTS; i++)
        put_object(&pool, held[i]);

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&registry.freed), OBJECTS - 1);
    assert_int_equal(atomic_load(&registry.bad_frees), 0);
    assert_int_equal(atomic_load(&held[0]->state), OBJ_HELD);
    for (int i = 1; i < OBJECTS; i++)
        assert_int_equal(atomic_load(&held[i]->state), OBJ_FREED);
    registry_destroy();
    assert_no_check_failures();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_sem_invalid_arguments, stop_runtime),
        cmocka_unit_test_teardown(test_sem_never_overcommitted, stop_runtime),
        cmocka_unit_test_teardown(test_sem_fifo_big_request_first, stop_runtime),
        cmocka_unit_test_teardown(test_sem_fifo_order, stop_runtime),
        cmocka_unit_test_teardown(test_sem_fifo_threads_and_coroutines, stop_runtime),
        cmocka_unit_test_teardown(test_sem_acquire_timeout, stop_runtime),
        cmocka_unit_test_teardown(test_sem_acquire_ended_context, stop_runtime),
        cmocka_unit_test_teardown(test_sem_cancelled_head_lets_others_in, stop_runtime),
        cmocka_unit_test_teardown(test_sem_thread_waits, stop_runtime),
        cmocka_unit_test_teardown(test_sem_waiters_after_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_sem_release_more_than_held_fatal, stop_runtime),
        cmocka_unit_test_teardown(test_pool_zero_initialised, stop_runtime),
        cmocka_unit_test_teardown(test_pool_new_fn, stop_runtime),
        cmocka_unit_test_teardown(test_pool_across_ps, stop_runtime),
        cmocka_unit_test_teardown(test_pool_trims_overflow, stop_runtime),
        cmocka_unit_test_teardown(test_pool_zero_keeps_across_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_pool_reinit_frees_objects, stop_runtime),
        cmocka_unit_test_teardown(test_pool_shutdown_frees_cached, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
