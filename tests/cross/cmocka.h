/*
 * A minimal stand-in for the parts of cmocka that tests/test_switch.c uses,
 * so that test can be cross-compiled for a target that has no cmocka
 * package (scripts/check-aarch64.sh builds it for AArch64 and runs it under
 * qemu-user). Each failed assertion prints its place and exits non-zero.
 */
#ifndef WEFT_CROSS_CMOCKA_H
#define WEFT_CROSS_CMOCKA_H

#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>

#define assert_true(cond)                                                     \
    do {                                                                      \
        if (!(cond)) {                                                        \
            printf("%s:%d: assertion failed: %s\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                          \
        }                                                                     \
    } while (0)
#define assert_false(cond) assert_true(!(cond))
#define assert_int_equal(a, b) assert_true((long long)(a) == (long long)(b))
#define assert_non_null(p) assert_true((p) != NULL)
#define fail_msg(...)                                                         \
    do {                                                                      \
        printf(__VA_ARGS__);                                                  \
        printf("\n");                                                         \
        exit(1);                                                              \
    } while (0)
#define skip() return
#define print_message printf

struct CMUnitTest {
    const char *name;
    void (*fn)(void **state);
};

#define cmocka_unit_test(f) { #f, f }
#define cmocka_run_group_tests(tests, setup, teardown)                        \
    cross_run_tests(tests, sizeof(tests) / sizeof((tests)[0]))

static inline int cross_run_tests(const struct CMUnitTest *tests, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        tests[i].fn(NULL);
        printf("ok %s\n", tests[i].name);
    }
    printf("%zu passed, 0 failed\n", n);
    return 0;
}

#endif /* WEFT_CROSS_CMOCKA_H */
