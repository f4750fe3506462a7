/*
 * The context switch on its own, without the scheduler. A new context
 * starts at its entry with its argument. Values the compiler keeps in
 * callee-saved integer and floating-point registers survive switches in
 * both directions. Each context keeps its own rounding mode, and a context
 * can use most of its stack.
 *
 * This file needs only src/arch, so it also builds for other targets (for
 * example AArch64 under qemu-user) to check their assembly.
 */
#define _GNU_SOURCE
#include <fenv.h>
#include <stdint.h>
#include <stdlib.h>

#include "arch/context.h"
#include "check.h"

static weft__ctx main_ctx;
static weft__ctx co_ctx;
static int64_t co_rounds;

/* Many values live across each switch: at -O2 they sit in callee-saved
 * registers (rbx, r12-r15 on x86-64; x19-x28 and d8-d15 on AArch64). */
__attribute__((noinline)) static void churn(void *arg)
{
    uint64_t seed = (uint64_t)(uintptr_t)arg;
    uint64_t a = seed * 3, b = seed * 5, c = seed * 7, d = seed * 11;
    uint64_t e = seed * 13, f = seed * 17, g = seed * 19, h = seed * 23;
    double x = (double)seed * 0.5, y = (double)seed * 0.25, z = (double)seed * 0.125;
    double w = (double)seed * 2.0, v = (double)seed * 4.0, u = (double)seed * 8.0;
    CHECK(fesetround(FE_DOWNWARD) == 0);
    for (int i = 0; i < 100000; i++) {
        weft__ctx_switch(&co_ctx, &main_ctx);
        CHECK(a == seed * 3 + (uint64_t)i);
        CHECK(b == seed * 5 + (uint64_t)i);
        CHECK(c == seed * 7);
        CHECK(d == seed * 11);
        CHECK(e == seed * 13);
        CHECK(f == seed * 17);
        CHECK(g == seed * 19);
        CHECK(h == seed * 23);
        CHECK(x == (double)seed * 0.5 + i);
        CHECK(y == (double)seed * 0.25);
        CHECK(z == (double)seed * 0.125);
        CHECK(w == (double)seed * 2.0);
        CHECK(v == (double)seed * 4.0);
        CHECK(u == (double)seed * 8.0);
        CHECK(fegetround() == FE_DOWNWARD);
        a++;
        b++;
        x += 1.0;
        co_rounds++;
    }
    /* Hand control back for good. */
    weft__ctx_switch(&co_ctx, &main_ctx);
    abort();
}

static void test_switch_preserves_registers(void **state)
{
    (void)state;
#if TEST_SANITIZED
    skip(); /* raw switches here are not announced to the sanitizers */
#endif
    size_t size = 256 * 1024;
    void *stack = malloc(size);
    assert_non_null(stack);
    weft__fpenv env;
    weft__fpenv_get(&env);
    weft__ctx_make(&co_ctx, stack, size, churn, (void *)(uintptr_t)1234567, &env);

    uint64_t a = 42, b = 43, c = 44, d = 45, e = 46, f = 47;
    double x = 1.5, y = 2.5, z = 3.5;
    fesetround(FE_UPWARD);
    for (int i = 0; i <= 100000; i++) {
        weft__ctx_switch(&main_ctx, &co_ctx);
        assert_true(a == 42 + (uint64_t)i);
        assert_true(b == 43);
        assert_true(c == 44);
        assert_true(d == 45);
        assert_true(e == 46);
        assert_true(f == 47);
        assert_true(x == 1.5 + i);
        assert_true(y == 2.5);
        assert_true(z == 3.5);
        assert_int_equal(fegetround(), FE_UPWARD);
        a++;
        x += 1.0;
    }
    fesetround(FE_TONEAREST);
    assert_int_equal(co_rounds, 100000);
    assert_no_check_failures();
    free(stack);
}

__attribute__((noinline)) static long fill_stack(long depth)
{
    volatile char block[512];
    block[0] = (char)depth;
    block[511] = (char)(depth >> 8);
    if (depth == 0)
        return block[0] + block[511];
    return fill_stack(depth - 1) + block[0];
}

static long deep_result;

static void go_deep(void *arg)
{
    deep_result = fill_stack((long)(uintptr_t)arg);
    weft__ctx_switch(&co_ctx, &main_ctx);
    abort();
}

static void test_context_uses_its_stack(void **state)
{
    (void)state;
#if TEST_SANITIZED
    skip(); /* raw switches here are not announced to the sanitizers */
#endif
    size_t size = 1024 * 1024;
    void *stack = malloc(size);
    assert_non_null(stack);
    weft__fpenv env;
    weft__fpenv_get(&env);
    /* About 1,500 frames of 512+ bytes: most of the 1 MiB. */
    weft__ctx_make(&co_ctx, stack, size, go_deep, (void *)(uintptr_t)1500, &env);
    weft__ctx_switch(&main_ctx, &co_ctx);
    assert_true(deep_result != 0);
    free(stack);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_switch_preserves_registers),
        cmocka_unit_test(test_context_uses_its_stack),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
