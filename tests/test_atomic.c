/*
 * Typed atomics (weft/atomic.h): load, store, swap, cas and add for every
 * type, zero initialisation, wrap-around of the integer types, and exact
 * totals when many coroutines on several Ps and plain threads add and
 * compare-and-swap at once.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

static void test_zero_values(void **state)
{
    (void)state;
    weft_atomic_i32 i32 = {0};
    weft_atomic_i64 i64 = {0};
    weft_atomic_u64 u64 = {0};
    weft_atomic_bool flag = {0};
    weft_atomic_ptr ptr = {0};
    assert_int_equal(weft_atomic_i32_load(&i32), 0);
    assert_int_equal(weft_atomic_i64_load(&i64), 0);
    assert_int_equal(weft_atomic_u64_load(&u64), 0);
    assert_false(weft_atomic_bool_load(&flag));
    assert_null(weft_atomic_ptr_load(&ptr));
}

static void test_i32_operations(void **state)
{
    (void)state;
    weft_atomic_i32 a = {0};
    weft_atomic_i32_store(&a, 41);
    assert_int_equal(weft_atomic_i32_load(&a), 41);

    /* add returns the new value. */
    assert_int_equal(weft_atomic_i32_add(&a, 1), 42);
    assert_int_equal(weft_atomic_i32_add(&a, -50), -8);
    assert_int_equal(weft_atomic_i32_add(&a, 0), -8);
    assert_int_equal(weft_atomic_i32_load(&a), -8);

    /* swap returns the old value. */
    assert_int_equal(weft_atomic_i32_swap(&a, 7), -8);
    assert_int_equal(weft_atomic_i32_load(&a), 7);

    /* cas swaps only when the current value matches. */
    assert_false(weft_atomic_i32_cas(&a, 8, 100));
    assert_int_equal(weft_atomic_i32_load(&a), 7);
    assert_true(weft_atomic_i32_cas(&a, 7, 100));
    assert_int_equal(weft_atomic_i32_load(&a), 100);

    weft_atomic_i32_store(&a, INT32_MIN);
    assert_int_equal(weft_atomic_i32_load(&a), INT32_MIN);
}

static void test_i32_wraps_around(void **state)
{
    (void)state;
    weft_atomic_i32 a = {0};
    weft_atomic_i32_store(&a, INT32_MAX);
    assert_int_equal(weft_atomic_i32_add(&a, 1), INT32_MIN);
    assert_int_equal(weft_atomic_i32_load(&a), INT32_MIN);
    assert_int_equal(weft_atomic_i32_add(&a, -1), INT32_MAX);
    assert_int_equal(weft_atomic_i32_load(&a), INT32_MAX);
    assert_int_equal(weft_atomic_i32_add(&a, INT32_MAX), -2);
    assert_int_equal(weft_atomic_i32_add(&a, INT32_MIN), INT32_MAX - 1);
}

static void test_i64_operations(void **state)
{
    (void)state;
    weft_atomic_i64 a = {0};
    int64_t big = INT64_C(1) << 40;
    weft_atomic_i64_store(&a, big);
    assert_true(weft_atomic_i64_load(&a) == big);

    assert_true(weft_atomic_i64_add(&a, 5) == big + 5);
    assert_true(weft_atomic_i64_add(&a, -(big + 10)) == -5);
    assert_true(weft_atomic_i64_load(&a) == -5);

    assert_true(weft_atomic_i64_swap(&a, INT64_MIN) == -5);
    assert_true(weft_atomic_i64_load(&a) == INT64_MIN);

    assert_false(weft_atomic_i64_cas(&a, 0, 1));
    assert_true(weft_atomic_i64_load(&a) == INT64_MIN);
    assert_true(weft_atomic_i64_cas(&a, INT64_MIN, big));
    assert_true(weft_atomic_i64_load(&a) == big);
}

static void test_i64_wraps_around(void **state)
{
    (void)state;
    weft_atomic_i64 a = {0};
    weft_atomic_i64_store(&a, INT64_MAX);
    assert_true(weft_atomic_i64_add(&a, 1) == INT64_MIN);
    assert_true(weft_atomic_i64_add(&a, -1) == INT64_MAX);
    assert_true(weft_atomic_i64_load(&a) == INT64_MAX);
}

static void test_u64_operations(void **state)
{
    (void)state;
    weft_atomic_u64 a = {0};
    uint64_t big = UINT64_C(1) << 63;
    weft_atomic_u64_store(&a, big);
    assert_true(weft_atomic_u64_load(&a) == big);

    assert_true(weft_atomic_u64_add(&a, 3) == big + 3);
    assert_true(weft_atomic_u64_swap(&a, 9) == big + 3);
    assert_true(weft_atomic_u64_load(&a) == 9);

    assert_false(weft_atomic_u64_cas(&a, 10, 11));
    assert_true(weft_atomic_u64_load(&a) == 9);
    assert_true(weft_atomic_u64_cas(&a, 9, UINT64_MAX));
    assert_true(weft_atomic_u64_load(&a) == UINT64_MAX);

    /* Unsigned wrap-around both ways; adding UINT64_MAX subtracts 1. */
    assert_true(weft_atomic_u64_add(&a, 1) == 0);
    assert_true(weft_atomic_u64_add(&a, UINT64_MAX) == UINT64_MAX);
    assert_true(weft_atomic_u64_add(&a, UINT64_MAX) == UINT64_MAX - 1);
    assert_true(weft_atomic_u64_load(&a) == UINT64_MAX - 1);
}

static void test_bool_operations(void **state)
{
    (void)state;
    weft_atomic_bool b = {0};
    weft_atomic_bool_store(&b, true);
    assert_true(weft_atomic_bool_load(&b));

    assert_true(weft_atomic_bool_swap(&b, false));
    assert_false(weft_atomic_bool_load(&b));
    assert_false(weft_atomic_bool_swap(&b, false));
    assert_false(weft_atomic_bool_load(&b));

    assert_false(weft_atomic_bool_cas(&b, true, false));
    assert_false(weft_atomic_bool_load(&b));
    assert_true(weft_atomic_bool_cas(&b, false, true));
    assert_true(weft_atomic_bool_load(&b));
    assert_false(weft_atomic_bool_cas(&b, false, true));
    assert_true(weft_atomic_bool_cas(&b, true, true));
    assert_true(weft_atomic_bool_load(&b));
}

static void test_ptr_operations(void **state)
{
    (void)state;
    int x = 1, y = 2;
    weft_atomic_ptr p = {0};
    weft_atomic_ptr_store(&p, &x);
    assert_ptr_equal(weft_atomic_ptr_load(&p), &x);

    assert_ptr_equal(weft_atomic_ptr_swap(&p, &y), &x);
    assert_ptr_equal(weft_atomic_ptr_load(&p), &y);

    assert_false(weft_atomic_ptr_cas(&p, &x, NULL));
    assert_ptr_equal(weft_atomic_ptr_load(&p), &y);
    assert_true(weft_atomic_ptr_cas(&p, &y, NULL));
    assert_null(weft_atomic_ptr_load(&p));
    assert_false(weft_atomic_ptr_cas(&p, &y, &x));
    assert_true(weft_atomic_ptr_cas(&p, NULL, &x));
    assert_ptr_equal(weft_atomic_ptr_load(&p), &x);
}

/* ---- many writers at once ------------------------------------------- */

typedef struct shared_counters {
    weft_atomic_i32 i32;
    weft_atomic_i64 i64;
    weft_atomic_u64 u64;
    weft_atomic_i64 by_cas;     /* incremented with a cas loop */
    weft_atomic_bool flag;      /* set with swap by every iteration */
    weft_atomic_i64 swaps_seen_true;
    int iterations;
    weft_wg wg;
} shared_counters;

static void add_many(shared_counters *s)
{
    for (int i = 0; i < s->iterations; i++) {
        weft_atomic_i32_add(&s->i32, 1);
        weft_atomic_i64_add(&s->i64, 3);
        weft_atomic_u64_add(&s->u64, UINT64_MAX); /* subtracts 1 */

        int64_t old_value = weft_atomic_i64_load(&s->by_cas);
        for (int tries = 0; !weft_atomic_i64_cas(&s->by_cas, old_value, old_value + 1); tries++) {
            old_value = weft_atomic_i64_load(&s->by_cas);
            if (tries % 64 == 63)
                weft_yield();
        }

        /* The flag starts false and every swap stores true, so exactly
         * one swap in the whole test returns false. */
        if (weft_atomic_bool_swap(&s->flag, true))
            weft_atomic_i64_add(&s->swaps_seen_true, 1);
        if (i % 16 == 0)
            weft_yield();
    }
}

static void add_many_coroutine(void *arg)
{
    shared_counters *s = arg;
    add_many(s);
    weft_wg_done(&s->wg);
}

static void *add_many_thread(void *arg)
{
    shared_counters *s = arg;
    add_many(s);
    return NULL;
}

/* Every add by every writer is counted: the totals are exact. */
static void test_concurrent_adds_exact(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);

    enum { THREADS = 2 };
    const int coroutines = SCALE(200);
    shared_counters s = { .iterations = 2000 };
    const int64_t writers = coroutines + THREADS;
    const int64_t total = writers * s.iterations;

    weft_wg_add(&s.wg, coroutines);
    for (int i = 0; i < coroutines; i++)
        assert_int_equal(weft_go(add_many_coroutine, &s), 0);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, add_many_thread, &s), 0);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    weft_wg_wait(&s.wg);

    assert_int_equal(weft_atomic_i32_load(&s.i32), (int32_t)total);
    assert_true(weft_atomic_i64_load(&s.i64) == 3 * total);
    assert_true(weft_atomic_u64_load(&s.u64) == (uint64_t)0 - (uint64_t)total);
    assert_true(weft_atomic_i64_load(&s.by_cas) == total);
    /* Every swap but the first from false found true. */
    assert_true(weft_atomic_bool_load(&s.flag));
    assert_true(weft_atomic_i64_load(&s.swaps_seen_true) == total - 1);

    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

typedef struct add_ticket {
    weft_atomic_i64 next;
    unsigned char *seen; /* one byte per value add can return */
    int64_t count;
    int per_writer;
    weft_wg wg;
} add_ticket;

static void take_tickets(void *arg)
{
    add_ticket *t = arg;
    for (int i = 0; i < t->per_writer; i++) {
        int64_t v = weft_atomic_i64_add(&t->next, 1);
        CHECK(v >= 1);
        CHECK(v <= t->count);
        if (v >= 1 && v <= t->count) {
            /* Each value is returned to exactly one caller. */
            CHECK(__atomic_exchange_n(&t->seen[v - 1], 1, __ATOMIC_RELAXED) == 0);
        }
        if (i % 32 == 0)
            weft_yield();
    }
    weft_wg_done(&t->wg);
}

/* add returns the new value atomically: concurrent callers each get a
 * distinct value, and together they get 1..total. */
static void test_concurrent_add_results_unique(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);

    const int writers = SCALE(100);
    add_ticket t = { .per_writer = 1000 };
    t.count = (int64_t)writers * t.per_writer;
    t.seen = calloc((size_t)t.count, 1);
    assert_non_null(t.seen);

    weft_wg_add(&t.wg, writers);
    for (int i = 0; i < writers; i++)
        assert_int_equal(weft_go(take_tickets, &t), 0);
    weft_wg_wait(&t.wg);

    assert_true(weft_atomic_i64_load(&t.next) == t.count);
    int64_t missing = 0;
    for (int64_t i = 0; i < t.count; i++)
        missing += t.seen[i] == 0;
    assert_true(missing == 0);
    free(t.seen);

    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_zero_values),
        cmocka_unit_test(test_i32_operations),
        cmocka_unit_test(test_i32_wraps_around),
        cmocka_unit_test(test_i64_operations),
        cmocka_unit_test(test_i64_wraps_around),
        cmocka_unit_test(test_u64_operations),
        cmocka_unit_test(test_bool_operations),
        cmocka_unit_test(test_ptr_operations),
        cmocka_unit_test_teardown(test_concurrent_adds_exact, stop_runtime),
        cmocka_unit_test_teardown(test_concurrent_add_results_unique, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
