/*
 * Context switches and stacks. Floating-point control state and errno
 * belong to each coroutine across switches and migrations. A new coroutine
 * inherits its spawner's floating-point state. Stacks are reused, stack
 * sizes are honoured, and guarded stacks do not use up the kernel's
 * mapping limit. test_overflow.c covers what happens when a coroutine
 * overflows its stack.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fenv.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/stack.h"
#include "check.h"
#include "weft.h"

static const int rounding_modes[4] = { FE_TONEAREST, FE_DOWNWARD, FE_UPWARD,
                                       FE_TOWARDZERO };

typedef struct fp_state {
    weft_wg wg;
    _Atomic int next;
} fp_state;

/* volatile keeps the compiler from folding the division at compile time. */
static double divide(volatile double a, volatile double b)
{
    return a / b;
}

static void keep_rounding(void *arg)
{
    fp_state *s = arg;
    int mode = rounding_modes[atomic_fetch_add(&s->next, 1) % 4];
    CHECK(fesetround(mode) == 0);
    double expect = divide(1.0, 3.0);
    for (int i = 0; i < 2000; i++) {
        weft_yield();
        CHECK(fegetround() == mode);
        CHECK(divide(1.0, 3.0) == expect);
    }
    weft_wg_done(&s->wg);
}

static void test_fp_state_survives_switches(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    fp_state s = {0};
    weft_wg_add(&s.wg, 64);
    for (int i = 0; i < 64; i++)
        assert_int_equal(weft_go(keep_rounding, &s), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
    /* The test thread's own state is untouched. */
    assert_int_equal(fegetround(), FE_TONEAREST);
}

typedef struct rounding_seen {
    int mode;
    weft_wg wg;
} rounding_seen;

static void report_rounding(void *arg)
{
    rounding_seen *r = arg;
    r->mode = fegetround();
    weft_wg_done(&r->wg);
}

static int spawn_with_rounding(void *arg)
{
    (void)arg;
    /* main_fn starts with the calling thread's state (FE_UPWARD). */
    CHECK(fegetround() == FE_UPWARD);
    for (int i = 0; i < 4; i++) {
        fesetround(rounding_modes[i]);
        rounding_seen seen = { .mode = -1 };
        weft_wg_add(&seen.wg, 1);
        CHECK(weft_go(report_rounding, &seen) == 0);
        weft_wg_wait(&seen.wg);
        CHECK(seen.mode == rounding_modes[i]);
    }
    return 0;
}

static void test_fp_state_inherited(void **state)
{
    (void)state;
    fesetround(FE_UPWARD);
    assert_int_equal(weft_main(spawn_with_rounding, NULL), 0);
    assert_int_equal(fegetround(), FE_UPWARD);
    fesetround(FE_TONEAREST);
    assert_no_check_failures();
}

/* errno is reached through functions the compiler cannot inline: within
 * one function, a compiler may keep the address of the thread's errno from
 * before a switch, and a migrated coroutine would then read another
 * thread's errno. The runtime's promise covers errno as read afresh. */
__attribute__((noinline)) static int errno_get(void)
{
    __asm__ volatile("" ::: "memory");
    return errno;
}

__attribute__((noinline)) static void errno_set(int v)
{
    __asm__ volatile("" ::: "memory");
    errno = v;
}

static void keep_errno(void *arg)
{
    fp_state *s = arg;
    int mine = 1000 + atomic_fetch_add(&s->next, 1);
    errno_set(mine);
    for (int i = 0; i < 2000; i++) {
        weft_yield();
        CHECK(errno_get() == mine);
        errno_set(mine);
    }
    weft_wg_done(&s->wg);
}

typedef struct errno_kept {
    weft_wg wg;
    _Atomic int changed;
} errno_kept;

static void errno_across_calls(void *arg)
{
    errno_kept *k = arg;
    for (int i = 0; i < 200; i++) {
        errno_set(4242);
        weft_sleep(WEFT_US(10));
        if (errno_get() != 4242)
            atomic_fetch_add(&k->changed, 1);
        errno_set(4343);
        weft_yield();
        if (errno_get() != 4343)
            atomic_fetch_add(&k->changed, 1);
    }
    weft_wg_done(&k->wg);
}

/* Successful calls leave errno alone, even when the runtime's own futex
 * waits fail with EAGAIN on the way. */
static void test_errno_kept_by_successful_calls(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    errno_kept k = {0};
    int n = 64;
    weft_wg_add(&k.wg, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(errno_across_calls, &k), 0);
    weft_wg_wait(&k.wg);
    assert_int_equal(atomic_load(&k.changed), 0);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_errno_per_coroutine(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    fp_state s = {0};
    weft_wg_add(&s.wg, 32);
    for (int i = 0; i < 32; i++)
        assert_int_equal(weft_go(keep_errno, &s), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- stacks ---------------------------------------------------------- */

typedef struct stack_seen {
    uintptr_t addr[1000];
    int n;
    weft_wg wg;
} stack_seen;

static void record_stack(void *arg)
{
    stack_seen *s = arg;
    char local;
    s->addr[s->n++] = (uintptr_t)&local;
    weft_wg_done(&s->wg);
}

static int compare_uintptr(const void *a, const void *b)
{
    uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
    return x < y ? -1 : x > y;
}

static void test_stacks_are_reused(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    stack_seen *s = calloc(1, sizeof *s);
    assert_non_null(s);
    /* One at a time: each finishes before the next starts. */
    for (int i = 0; i < 1000; i++) {
        weft_wg_add(&s->wg, 1);
        assert_int_equal(weft_go(record_stack, s), 0);
        weft_wg_wait(&s->wg);
    }
    qsort(s->addr, 1000, sizeof s->addr[0], compare_uintptr);
    int distinct = 1;
    for (int i = 1; i < 1000; i++)
        distinct += s->addr[i] != s->addr[i - 1];
    assert_true(distinct <= 4);
    free(s);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct deep {
    size_t bytes;
    int ok;
    weft_wg wg;
} deep;

/* Use about `bytes` of stack through recursion. */
__attribute__((noinline)) static int use_stack(size_t bytes)
{
    volatile char frame[1024];
    frame[0] = (char)bytes;
    frame[1023] = 1;
    if (bytes <= sizeof frame)
        return frame[0] + frame[1023];
    return use_stack(bytes - sizeof frame) + frame[1023];
}

static void go_deep(void *arg)
{
    deep *d = arg;
    d->ok = use_stack(d->bytes) > 0;
    weft_wg_done(&d->wg);
}

static void test_stack_sizes_honoured(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    struct { size_t stack; size_t use; } cases[] = {
        { 0, 160 * 1024 },               /* default 256 KiB */
        { 64 * 1024, 40 * 1024 },
        { 4 * 1024 * 1024, 3 * 1024 * 1024 },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        deep d = { .bytes = cases[i].use };
        weft_go_opts opts = { .stack_size = cases[i].stack };
        weft_wg_add(&d.wg, 1);
        assert_int_equal(weft_go_with(go_deep, &d, &opts), 0);
        weft_wg_wait(&d.wg);
        assert_true(d.ok);
    }
    assert_int_equal(weft_shutdown(), 0);
}

static int count_maps(void)
{
    FILE *f = fopen("/proc/self/maps", "r");
    if (!f)
        return -1;
    int lines = 0, c;
    while ((c = fgetc(f)) != EOF)
        lines += c == '\n';
    fclose(f);
    return lines;
}

typedef struct parked {
    weft_wg gate;
    weft_wg started;
    weft_wg done;
} parked;

static void park_on_gate(void *arg)
{
    parked *p = arg;
    weft_wg_done(&p->started);
    weft_wg_wait(&p->gate);
    weft_wg_done(&p->done);
}

static void test_maps_per_coroutine(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int n = SCALE(20000);
    parked p = {0};
    weft_wg_add(&p.gate, 1);
    weft_wg_add(&p.started, n);
    weft_wg_add(&p.done, n);
    int before = count_maps();
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(park_on_gate, &p), 0);
    weft_wg_wait(&p.started);
    int after = count_maps();
    assert_int_equal(weft_num_coroutines(), n);
    double per = (double)(after - before) / n;
    print_message("maps lines per live coroutine: %.4f (%s guards)\n", per,
                  weft__stack_guard_is_madvise() ? "madvise" : "mprotect");
    /* ThreadSanitizer maps memory of its own for every fiber, so only the
     * builds without sanitizers can count the runtime's own mappings. */
    if (!TEST_SANITIZED && weft__stack_guard_is_madvise())
        assert_true(per < 0.01);
    else if (!TEST_SANITIZED)
        assert_true(per <= 2.05);
    weft_wg_done(&p.gate);
    weft_wg_wait(&p.done);
    assert_int_equal(weft_shutdown(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fp_state_survives_switches),
        cmocka_unit_test(test_fp_state_inherited),
        cmocka_unit_test(test_errno_per_coroutine),
        cmocka_unit_test(test_errno_kept_by_successful_calls),
        cmocka_unit_test(test_stacks_are_reused),
        cmocka_unit_test(test_stack_sizes_honoured),
        cmocka_unit_test(test_maps_per_coroutine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
