/*
 * Test helpers for bodies that run as coroutines: checks that report the
 * values they saw, coroutines the test waits for, and run_body, which runs
 * one test body in a fresh runtime. Checks only record failures (see
 * check.h), so they are safe inside coroutines and helper threads.
 *
 * A test file may define BODY_LIMIT (ns) before including this header to
 * change how long run_body waits for its body.
 */
#ifndef WEFT_TEST_BODY_H
#define WEFT_TEST_BODY_H

#include <stdbool.h>
#include <stdlib.h>

#include "check.h"
#include "weft.h"

#ifndef BODY_LIMIT
/* Bound for a whole test body running in its coroutine. */
#define BODY_LIMIT WEFT_SEC(50)
#endif

/* ---- checks that report values ------------------------------------- */

static bool check_eq_at(const char *file, int line, const char *expr,
                        long long got, long long want)
{
    if (got == want)
        return true;
    char text[320];
    snprintf(text, sizeof text, "%s is %lld (%s), expected %lld (%s)", expr,
             got, got < 0 ? weft_err_name((int)got) : "-", want,
             want < 0 ? weft_err_name((int)want) : "-");
    check_fail(file, line, text);
    return false;
}

static bool check_true_at(const char *file, int line, const char *expr, bool ok)
{
    if (!ok)
        check_fail(file, line, expr);
    return ok;
}

/* Record a failure unless actual == expected. The result is true when the
 * check held, so a body can stop: if (!CHECK_EQ(r, 0)) return; */
#define CHECK_EQ(actual, expected)                                            \
    check_eq_at(__FILE__, __LINE__, #actual, (long long)(actual),             \
                (long long)(expected))
#define CHECK_TRUE(cond) check_true_at(__FILE__, __LINE__, #cond, (cond))

static bool check_range_at(const char *file, int line, const char *expr,
                           long long got, long long min, long long max)
{
    if (got >= min && got < max)
        return true;
    char text[320];
    snprintf(text, sizeof text, "%s is %lld, expected at least %lld and below %lld",
             expr, got, min, max);
    check_fail(file, line, text);
    return false;
}

/* Record a failure unless min <= value < max, with the value. */
#define CHECK_RANGE(value, min, max)                                          \
    check_range_at(__FILE__, __LINE__, #value, (long long)(value),            \
                   (long long)(min), (long long)(max))

/* ---- coroutines the test waits for --------------------------------- */

typedef struct tracked {
    weft_fn fn;
    void *arg;
    weft_chan *done;
} tracked;

static void run_tracked(void *p)
{
    tracked t = *(tracked *)p;
    free(p);
    t.fn(t.arg);
    CHECK_EQ(weft_chan_send(t.done, NULL), 0);
}

/* Spawn fn(arg) as a coroutine that sends on done (elem_size 0, with room
 * for every coroutine tracked on it) when fn returns. */
static bool spawn_tracked(weft_chan *done, weft_fn fn, void *arg)
{
    tracked *t = malloc(sizeof *t);
    if (!t)
        return false;
    *t = (tracked){ fn, arg, done };
    if (weft_go(run_tracked, t) != 0) {
        free(t);
        return false;
    }
    return true;
}

/* Receive n completions from done before timeout ns pass, and return how
 * many arrived. Works on a plain thread and in a coroutine. */
static int wait_done(weft_chan *done, int n, int64_t timeout)
{
    int64_t deadline = weft_now() + timeout;
    for (int i = 0; i < n; i++) {
        weft_case c = WEFT_RECV_CASE(done, NULL);
        if (weft_select_until(&c, 1, deadline) != 0)
            return i;
    }
    return n;
}

/* Start a runtime with maxprocs slots (0: the default), run body(arg) as a
 * coroutine, wait for it, stop the runtime and assert that no CHECK in the
 * body failed. */
static void run_body(weft_fn body, void *arg, int maxprocs)
{
    weft_config cfg = { .maxprocs = maxprocs };
    assert_int_equal(weft_init(&cfg), 0);
    weft_chan *done = weft_chan_make(0, 1);
    assert_non_null(done);
    assert_true(spawn_tracked(done, body, arg));
    if (wait_done(done, 1, BODY_LIMIT) != 1)
        fail_msg("the test body did not return within %lld s (%d check(s) "
                 "failed before; first: %s)",
                 (long long)(BODY_LIMIT / WEFT_SEC(1)),
                 atomic_load(&check_failures), check_first);
    weft_chan_release(done);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

#endif /* WEFT_TEST_BODY_H */
