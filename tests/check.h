/*
 * Test helpers shared by the suite.
 *
 * cmocka reports a failed assertion with longjmp, which must never cross a
 * coroutine stack or another thread. Code running inside coroutines or
 * helper threads therefore uses CHECK, which only records the failure. The
 * test's own thread calls assert_no_check_failures() at the end, where a
 * cmocka assertion is safe.
 */
#ifndef WEFT_TEST_CHECK_H
#define WEFT_TEST_CHECK_H

#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

static _Atomic int check_failures;
static char check_first[512];

static inline void check_fail(const char *file, int line, const char *expr)
{
    if (atomic_fetch_add(&check_failures, 1) == 0)
        snprintf(check_first, sizeof check_first, "%s:%d: CHECK(%s) failed",
                 file, line, expr);
}

#define CHECK(cond)                                                           \
    do {                                                                      \
        if (!(cond))                                                          \
            check_fail(__FILE__, __LINE__, #cond);                            \
    } while (0)

/* Assert on the test's thread that no CHECK failed, then reset. */
#define assert_no_check_failures()                                            \
    do {                                                                      \
        int failures_ = atomic_exchange(&check_failures, 0);                  \
        if (failures_)                                                        \
            fail_msg("%d check(s) failed; first: %s", failures_, check_first); \
    } while (0)

/* Sanitizer builds scale their largest counts down: gcc 12's ThreadSanitizer
 * tracks about 8,000 live threads and fibers and runs these tests about 20
 * times slower; AddressSanitizer about 10 times. */
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define TEST_TSAN 1
#endif
#if __has_feature(address_sanitizer)
#define TEST_ASAN 1
#endif
#endif
#if defined(__SANITIZE_THREAD__) && !defined(TEST_TSAN)
#define TEST_TSAN 1
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(TEST_ASAN)
#define TEST_ASAN 1
#endif

#if defined(TEST_TSAN)
#define TEST_SANITIZED 1
#define SCALE(n) ((n) / 20 > 0 ? (n) / 20 : 1)
#elif defined(TEST_ASAN)
#define TEST_SANITIZED 1
#define SCALE(n) ((n) / 10 > 0 ? (n) / 10 : 1)
#else
#define TEST_SANITIZED 0
#define SCALE(n) (n)
#endif

#endif /* WEFT_TEST_CHECK_H */
