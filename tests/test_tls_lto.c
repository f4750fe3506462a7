/*
 * Thread-local storage and migration under link-time optimisation.
 *
 * This program and the copy of the library it links are compiled with -O2
 * and -flto, so the compiler optimises the runtime's code together with
 * the test's and is free to cache thread-local addresses in a function. The
 * runtime must still find its own per-thread state afresh after every
 * switch: coroutines that yield and migrate thousands of times must keep
 * correct ids, errno values and run-queue state, and every one must finish.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>

#include "check.h"
#include "weft.h"

typedef struct migrate_state {
    weft_wg wg;
    _Atomic int next;
    _Atomic long migrations;
    _Atomic long yields;
} migrate_state;

__attribute__((noinline)) static pthread_t thread_now(void)
{
    __asm__ volatile("" ::: "memory");
    return pthread_self();
}

__attribute__((noinline)) static int errno_now(void)
{
    __asm__ volatile("" ::: "memory");
    return errno;
}

static void wander(void *arg)
{
    migrate_state *s = arg;
    uint64_t id = weft_id();
    int mine = 5000 + atomic_fetch_add(&s->next, 1);
    errno = mine;
    pthread_t last = thread_now();
    long moved = 0;
    for (int i = 0; i < 5000; i++) {
        weft_yield();
        CHECK(weft_id() == id);
        CHECK(weft_in_coroutine());
        CHECK(errno_now() == mine);
        pthread_t t = thread_now();
        moved += !pthread_equal(t, last);
        last = t;
    }
    atomic_fetch_add(&s->migrations, moved);
    atomic_fetch_add(&s->yields, 5000);
    weft_wg_done(&s->wg);
}

static void test_migration_lto(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    migrate_state s = {0};
    int n = 64;
    weft_wg_add(&s.wg, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(wander, &s), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(atomic_load(&s.yields), 5000L * n);
    print_message("migrations observed: %ld\n", atomic_load(&s.migrations));
    assert_true(atomic_load(&s.migrations) > 0);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_migration_lto),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
