/*
 * Scheduler behaviour: every spawned coroutine runs exactly once, work
 * moves between threads, no wakeup is lost when all but one thread sleep,
 * wait groups with many coroutines, and fairness without preemption.
 *
 * The handoff tests use the internal park/ready interface directly
 * (sched/sched.h), as every blocking primitive of the library does.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <stdlib.h>

#include "check.h"
#include "sched/lock.h"
#include "sched/sched.h"
#include "weft.h"

/* ---- every coroutine runs exactly once ------------------------------ */

typedef struct once_run {
    _Atomic uint8_t *ran;
    weft_wg wg;
} once_run;

static once_run g_once;

static void mark_ran(void *arg)
{
    size_t i = (size_t)(uintptr_t)arg;
    atomic_fetch_add(&g_once.ran[i], 1);
    weft_wg_done(&g_once.wg);
}

static int spawn_million(void *arg)
{
    size_t n = *(size_t *)arg;
    weft_wg_add(&g_once.wg, (int64_t)n);
    for (size_t i = 0; i < n; i++) {
        int err = weft_go(mark_ran, (void *)(uintptr_t)i);
        CHECK(err == 0);
        if (err)
            weft_wg_done(&g_once.wg);
    }
    weft_wg_wait(&g_once.wg);
    return 0;
}

static void test_million_spawns_run_once(void **state)
{
    (void)state;
    size_t n = SCALE(1000000);
    g_once.ran = calloc(n, 1);
    assert_non_null(g_once.ran);
    assert_int_equal(weft_main(spawn_million, &n), 0);
    size_t wrong = 0;
    for (size_t i = 0; i < n; i++)
        wrong += g_once.ran[i] != 1;
    assert_int_equal(wrong, 0);
    free(g_once.ran);
    assert_no_check_failures();
}

/* ---- coroutines migrate between threads ------------------------------ */

__attribute__((noinline)) static pthread_t current_thread(void)
{
    __asm__ volatile("" ::: "memory");
    return pthread_self();
}

typedef struct migrate {
    weft_wg wg;
    _Atomic int moved;
} migrate;

static void yield_and_watch(void *arg)
{
    migrate *m = arg;
    pthread_t first = current_thread();
    int moved = 0;
    for (int i = 0; i < 20000 && !moved; i++) {
        /* The poller thread makes a sleeper ready through the global queue,
         * and whichever P looks first takes it. Yields alone might leave
         * both Ps with equal local work and nothing to steal. */
        if (i % 50 == 49)
            weft_sleep(WEFT_US(20));
        else
            weft_yield();
        moved = !pthread_equal(first, current_thread());
    }
    if (moved)
        atomic_fetch_add(&m->moved, 1);
    weft_wg_done(&m->wg);
}

static void test_work_moves_between_threads(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    migrate m = {0};
    weft_wg_add(&m.wg, 16);
    for (int i = 0; i < 16; i++)
        assert_int_equal(weft_go(yield_and_watch, &m), 0);
    weft_wg_wait(&m.wg);
    assert_true(atomic_load(&m.moved) > 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- handoffs between a plain thread and a coroutine ---------------- */

/* A one-slot token: give never blocks, take parks until a token is there. */
typedef struct baton {
    _Atomic uint32_t lock;
    weft__parker *waiter;
    int tokens;
} baton;

static bool baton_unlock(void *arg)
{
    weft__lock_release(&((baton *)arg)->lock);
    return true;
}

static void baton_give(baton *b)
{
    weft__lock_acquire(&b->lock);
    weft__parker *w = b->waiter;
    b->waiter = NULL;
    if (!w)
        b->tokens++;
    weft__lock_release(&b->lock);
    if (w)
        weft__ready(w);
}

static void baton_take(baton *b)
{
    weft__lock_acquire(&b->lock);
    if (b->tokens > 0) {
        b->tokens--;
        weft__lock_release(&b->lock);
        return;
    }
    b->waiter = weft__parker_self();
    weft__park(baton_unlock, b, WEFT__WAIT_NONE);
}

typedef struct pingpong {
    baton ping;
    baton pong;
    long rounds;
    long done;
    weft_wg wg;
} pingpong;

static void ponger(void *arg)
{
    pingpong *pp = arg;
    for (long i = 0; i < pp->rounds; i++) {
        baton_take(&pp->ping);
        pp->done++;
        baton_give(&pp->pong);
    }
    weft_wg_done(&pp->wg);
}

static void test_no_lost_wakeup_thread_to_coroutine(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    pingpong pp = { .rounds = SCALE(1000000) };
    weft_wg_add(&pp.wg, 1);
    assert_int_equal(weft_go(ponger, &pp), 0);
    for (long i = 0; i < pp.rounds; i++) {
        baton_give(&pp.ping);
        baton_take(&pp.pong);
    }
    weft_wg_wait(&pp.wg);
    assert_int_equal(pp.done, pp.rounds);
    assert_int_equal(weft_shutdown(), 0);
}

static void pinger(void *arg)
{
    pingpong *pp = arg;
    for (long i = 0; i < pp->rounds; i++) {
        baton_give(&pp->ping);
        baton_take(&pp->pong);
    }
    weft_wg_done(&pp->wg);
}

/* A million handoffs between coroutines while the other P idles: every
 * ready must reach a P, whether or not one is spinning. */
static void test_no_lost_wakeup_million_handoffs(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    pingpong pp = { .rounds = SCALE(1000000) };
    weft_wg_add(&pp.wg, 2);
    assert_int_equal(weft_go(ponger, &pp), 0);
    assert_int_equal(weft_go(pinger, &pp), 0);
    weft_wg_wait(&pp.wg);
    assert_int_equal(pp.done, pp.rounds);
    assert_int_equal(weft_shutdown(), 0);
}

/* Many independent pairs, woken from plain threads: exercises the global
 * queue and idle-P wakeups from outside the workers. */
typedef struct relay {
    baton in;
    baton out;
    long rounds;
    long done;
} relay;

static void relay_coroutine(void *arg)
{
    relay *r = arg;
    for (long i = 0; i < r->rounds; i++) {
        baton_take(&r->in);
        r->done++;
        baton_give(&r->out);
    }
}

static void *relay_thread(void *arg)
{
    relay *r = arg;
    for (long i = 0; i < r->rounds; i++) {
        baton_give(&r->in);
        baton_take(&r->out);
    }
    return NULL;
}

static void test_no_lost_wakeup_many_threads(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { PAIRS = 4 };
    relay r[PAIRS];
    pthread_t t[PAIRS];
    memset(r, 0, sizeof r);
    for (int i = 0; i < PAIRS; i++) {
        r[i].rounds = SCALE(20000);
        assert_int_equal(weft_go(relay_coroutine, &r[i]), 0);
        assert_int_equal(pthread_create(&t[i], NULL, relay_thread, &r[i]), 0);
    }
    for (int i = 0; i < PAIRS; i++) {
        pthread_join(t[i], NULL);
        assert_int_equal(r[i].done, r[i].rounds);
    }
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- wait groups -------------------------------------------------- */

typedef struct wg_load {
    weft_wg wg;
    weft_wg gate;
    _Atomic long sum;
    _Atomic int woken;
} wg_load;

static void add_one(void *arg)
{
    wg_load *w = arg;
    atomic_fetch_add(&w->sum, 1);
    weft_wg_done(&w->wg);
}

static void wait_gate(void *arg)
{
    wg_load *w = arg;
    weft_wg_wait(&w->gate);
    atomic_fetch_add(&w->woken, 1);
    weft_wg_done(&w->wg);
}

static void test_waitgroup_100k(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    wg_load w = {0};
    long n = SCALE(100000);
    weft_wg_add(&w.wg, n);
    for (long i = 0; i < n; i++)
        assert_int_equal(weft_go(add_one, &w), 0);
    weft_wg_wait(&w.wg);
    assert_int_equal(atomic_load(&w.sum), n);

    /* Many waiters released by one done, and a reused wait group. */
    for (int round = 0; round < 3; round++) {
        atomic_store(&w.woken, 0);
        weft_wg_add(&w.gate, 1);
        weft_wg_add(&w.wg, 500);
        for (int i = 0; i < 500; i++)
            assert_int_equal(weft_go(wait_gate, &w), 0);
        weft_wg_done(&w.gate);
        weft_wg_wait(&w.wg);
        assert_int_equal(atomic_load(&w.woken), 500);
    }
    /* Waiting on a zero counter returns at once. */
    weft_wg_wait(&w.wg);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- fairness ------------------------------------------------------ */

typedef struct fair {
    _Atomic long counter;
    _Atomic int stop;
    baton a;
    baton b;
    weft_wg wg;
} fair;

static void fair_ping(void *arg)
{
    fair *f = arg;
    while (!atomic_load(&f->stop)) {
        baton_give(&f->a);
        baton_take(&f->b);
    }
    baton_give(&f->a);
    weft_wg_done(&f->wg);
}

static void fair_pong(void *arg)
{
    fair *f = arg;
    while (!atomic_load(&f->stop)) {
        baton_take(&f->a);
        baton_give(&f->b);
    }
    baton_give(&f->b);
    weft_wg_done(&f->wg);
}

static void fair_worker(void *arg)
{
    fair *f = arg;
    for (int i = 0; i < 1000; i++) {
        atomic_fetch_add(&f->counter, 1);
        weft_yield();
    }
    atomic_store(&f->stop, 1);
    weft_wg_done(&f->wg);
}

/* Two coroutines handing off through runnext must not starve a third one
 * on the same P: there is no preemption, only the runnext streak limit. */
static void test_handoff_pair_does_not_starve(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    fair f = {0};
    weft_wg_add(&f.wg, 3);
    assert_int_equal(weft_go(fair_ping, &f), 0);
    assert_int_equal(weft_go(fair_pong, &f), 0);
    assert_int_equal(weft_go(fair_worker, &f), 0);
    weft_wg_wait(&f.wg);
    assert_int_equal(atomic_load(&f.counter), 1000);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct alternate {
    int log[200];
    int len;
    weft_wg wg;
} alternate;

static void alternate_a(void *arg)
{
    alternate *a = arg;
    for (int i = 0; i < 100; i++) {
        a->log[a->len++] = 0;
        weft_yield();
    }
    weft_wg_done(&a->wg);
}

static void alternate_b(void *arg)
{
    alternate *a = arg;
    for (int i = 0; i < 100; i++) {
        a->log[a->len++] = 1;
        weft_yield();
    }
    weft_wg_done(&a->wg);
}

static int spawn_alternating(void *arg)
{
    alternate *a = arg;
    weft_wg_add(&a->wg, 2);
    /* Both are queued before either runs: this coroutine keeps the only P
     * until it parks in weft_wg_wait. */
    CHECK(weft_go(alternate_a, a) == 0);
    CHECK(weft_go(alternate_b, a) == 0);
    weft_wg_wait(&a->wg);
    return 0;
}

/* On one P, two yielding coroutines take turns. */
static void test_yield_alternates_on_one_p(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    alternate a = {0};
    assert_int_equal(weft_main_config(&cfg, spawn_alternating, &a), 0);
    assert_int_equal(a.len, 200);
    int switches = 0;
    for (int i = 1; i < 200; i++)
        switches += a.log[i] != a.log[i - 1];
    assert_int_equal(switches, 199);
    assert_no_check_failures();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_million_spawns_run_once),
        cmocka_unit_test(test_work_moves_between_threads),
        cmocka_unit_test(test_no_lost_wakeup_thread_to_coroutine),
        cmocka_unit_test(test_no_lost_wakeup_million_handoffs),
        cmocka_unit_test(test_no_lost_wakeup_many_threads),
        cmocka_unit_test(test_waitgroup_100k),
        cmocka_unit_test(test_handoff_pair_does_not_starve),
        cmocka_unit_test(test_yield_alternates_on_one_p),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
