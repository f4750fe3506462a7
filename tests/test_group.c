/*
 * Error groups (weft/group.h):
 * - wait with no tasks, and with tasks that all succeed;
 * - the first error wins and cancels the group's context, so the siblings
 *   return, and wait returns only after every task finished;
 * - the limit on running tasks: go blocks at it, try_go returns
 *   WEFT_EAGAIN, and set_limit while tasks run returns WEFT_EINVAL;
 * - the group's context carries its parent's values and ends when the
 *   parent ends or when wait returns;
 * - release waits for running tasks;
 * - groups used from a plain thread and nested inside tasks.
 *
 * Some tests call weft_sleep to let time pass and then check that a
 * blocked call has not returned: the sleep is the measured interval, not a
 * way to wait for another party.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Generous upper bound for any wait on this shared, noisy machine. */
#define LATE WEFT_SEC(2)

/* Errors of the tasks below: any value that no weft call returns. */
#define FIRST_ERROR (-1001)
#define LATER_ERROR (-2000)

/* Blocks on ctx's done channel for at most LATE; returns false when it
 * did not close in time. */
static bool wait_done(weft_ctx *ctx)
{
    weft_case cases[1] = { WEFT_RECV_CASE(weft_ctx_done(ctx), NULL) };
    return weft_select_until(cases, 1, weft_now() + LATE) == 0;
}

/* ---- basics -------------------------------------------------------- */

static void test_wait_without_tasks(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_group *g = weft_group_make(NULL);
    assert_non_null(g);
    weft_ctx *ctx = weft_group_ctx(g);
    assert_non_null(ctx);
    assert_int_equal(weft_ctx_err(ctx), 0);
    assert_int_equal(weft_group_wait(g), 0);
    /* The group's context is cancelled once wait returns. */
    assert_int_equal(weft_ctx_err(ctx), WEFT_ECANCELED);
    weft_group_release(g);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct counting {
    weft_group *g;
    _Atomic int ran;
    _Atomic int finished;
    _Atomic int saw_group_ctx;
} counting;

static int count_and_succeed(weft_ctx *ctx, void *arg)
{
    counting *c = arg;
    atomic_fetch_add(&c->ran, 1);
    if (ctx == weft_group_ctx(c->g))
        atomic_fetch_add(&c->saw_group_ctx, 1);
    CHECK(weft_ctx_err(ctx) == 0);
    weft_yield();
    atomic_fetch_add(&c->finished, 1);
    return 0;
}

static void test_all_tasks_succeed(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { TASKS = 500 };
    counting c = {0};
    c.g = weft_group_make(NULL);
    assert_non_null(c.g);
    for (int i = 0; i < TASKS; i++)
        assert_int_equal(weft_group_go(c.g, count_and_succeed, &c), 0);
    /* try_go without a limit always starts the task. */
    assert_int_equal(weft_group_try_go(c.g, count_and_succeed, &c), 0);

    assert_int_equal(weft_group_wait(c.g), 0);
    assert_int_equal(atomic_load(&c.finished), TASKS + 1);
    assert_int_equal(atomic_load(&c.saw_group_ctx), TASKS + 1);
    assert_int_equal(weft_ctx_err(weft_group_ctx(c.g)), WEFT_ECANCELED);
    weft_group_release(c.g);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- first error --------------------------------------------------- */

typedef struct failing {
    _Atomic int finished;
    _Atomic int saw_cancel;
    _Atomic int timed_out;
} failing;

static int fail_at_once(weft_ctx *ctx, void *arg)
{
    failing *f = arg;
    (void)ctx;
    atomic_fetch_add(&f->finished, 1);
    return FIRST_ERROR;
}

/* Blocks until the group's context ends, then takes a little longer and
 * fails with a later error that must not win. */
static int fail_after_cancel(weft_ctx *ctx, void *arg)
{
    failing *f = arg;
    if (!wait_done(ctx)) {
        atomic_fetch_add(&f->timed_out, 1);
    } else if (weft_ctx_err(ctx) == WEFT_ECANCELED) {
        atomic_fetch_add(&f->saw_cancel, 1);
    }
    for (int i = 0; i < 20; i++)
        weft_yield();
    weft_sleep(WEFT_MS(5));
    atomic_fetch_add(&f->finished, 1);
    return LATER_ERROR;
}

/* The first error wins, cancels the group's context so the siblings see
 * it and return, and wait returns it only after all of them finished. */
static void test_first_error_wins(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { SIBLINGS = 50 };
    failing f = {0};
    weft_group *g = weft_group_make(NULL);
    assert_non_null(g);
    for (int i = 0; i < SIBLINGS / 2; i++)
        assert_int_equal(weft_group_go(g, fail_after_cancel, &f), 0);
    assert_int_equal(weft_group_go(g, fail_at_once, &f), 0);
    for (int i = SIBLINGS / 2; i < SIBLINGS; i++)
        assert_int_equal(weft_group_go(g, fail_after_cancel, &f), 0);

    assert_int_equal(weft_group_wait(g), FIRST_ERROR);
    assert_int_equal(atomic_load(&f.finished), SIBLINGS + 1);
    assert_int_equal(atomic_load(&f.timed_out), 0);
    assert_int_equal(atomic_load(&f.saw_cancel), SIBLINGS);
    assert_int_equal(weft_ctx_err(weft_group_ctx(g)), WEFT_ECANCELED);
    weft_group_release(g);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct staggered {
    _Atomic int index;
    _Atomic int finished;
    _Atomic int timed_out;
} staggered;

/* Task 3 fails at once. Every other task i first sleeps i ms and ignores
 * the context while it sleeps. The tasks after 3 then wait for the
 * context to end and fail with a later error, which must lose. */
static int fail_staggered(weft_ctx *ctx, void *arg)
{
    staggered *s = arg;
    int i = atomic_fetch_add(&s->index, 1);
    if (i == 3) {
        atomic_fetch_add(&s->finished, 1);
        return FIRST_ERROR;
    }
    weft_sleep(WEFT_MS(i));
    if (i > 3 && !wait_done(ctx))
        atomic_fetch_add(&s->timed_out, 1);
    atomic_fetch_add(&s->finished, 1);
    return i < 3 ? 0 : LATER_ERROR - i;
}

/* Tasks that keep running after the first error are still waited for. */
static void test_wait_waits_for_every_task(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { TASKS = 30 };
    staggered s = {0};
    weft_group *g = weft_group_make(NULL);
    assert_non_null(g);
    for (int i = 0; i < TASKS; i++)
        assert_int_equal(weft_group_go(g, fail_staggered, &s), 0);
    assert_int_equal(weft_group_wait(g), FIRST_ERROR);
    assert_int_equal(atomic_load(&s.finished), TASKS);
    assert_int_equal(atomic_load(&s.timed_out), 0);
    weft_group_release(g);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- limit --------------------------------------------------------- */

typedef struct limited {
    weft_group *g;
    int limit;
    weft_chan *gate;        /* tasks block until it closes; may be NULL */
    _Atomic int running;
    _Atomic int max_running;
    _Atomic int started;
    _Atomic int finished;
    /* The coroutine that calls go past the limit. */
    int extra;
    _Atomic int extra_started;
    _Atomic int extra_returned;
} limited;

static int run_limited(weft_ctx *ctx, void *arg)
{
    limited *l = arg;
    (void)ctx;
    int now = atomic_fetch_add(&l->running, 1) + 1;
    CHECK(now <= l->limit);
    int seen = atomic_load(&l->max_running);
    while (now > seen && !atomic_compare_exchange_weak(&l->max_running, &seen, now)) {
    }
    atomic_fetch_add(&l->started, 1);
    if (l->gate)
        CHECK(weft_chan_recv(l->gate, NULL) == WEFT_ECLOSED);
    else
        weft_yield();
    atomic_fetch_sub(&l->running, 1);
    atomic_fetch_add(&l->finished, 1);
    return 0;
}

static void go_past_limit(void *arg)
{
    limited *l = arg;
    for (int i = 0; i < l->extra; i++) {
        atomic_fetch_add(&l->extra_started, 1);
        CHECK(weft_group_go(l->g, run_limited, l) == 0);
        atomic_fetch_add(&l->extra_returned, 1);
    }
}

/* At the limit, try_go returns WEFT_EAGAIN and go blocks until a task
 * finishes; the number running never exceeds the limit. */
static void test_limit_blocks_go(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    limited l = { .limit = 3, .extra = 5 };
    l.gate = weft_chan_make(0, 0);
    assert_non_null(l.gate);
    l.g = weft_group_make(NULL);
    assert_non_null(l.g);
    assert_int_equal(weft_group_set_limit(l.g, l.limit), 0);

    for (int i = 0; i < l.limit; i++)
        assert_int_equal(weft_group_go(l.g, run_limited, &l), 0);
    assert_true(wait_for_count(&l.started, l.limit, LATE));
    assert_int_equal(weft_group_try_go(l.g, run_limited, &l), WEFT_EAGAIN);

    assert_int_equal(weft_go(go_past_limit, &l), 0);
    assert_true(wait_for_count(&l.extra_started, 1, LATE));
    assert_int_equal(weft_sleep(WEFT_MS(30)), 0);
    assert_int_equal(atomic_load(&l.extra_returned), 0);
    assert_int_equal(atomic_load(&l.started), l.limit);
    assert_int_equal(weft_group_try_go(l.g, run_limited, &l), WEFT_EAGAIN);

    /* Let everything run. */
    assert_int_equal(weft_chan_close(l.gate), 0);
    assert_true(wait_for_count(&l.extra_returned, l.extra, LATE));
    assert_int_equal(weft_group_wait(l.g), 0);
    assert_int_equal(atomic_load(&l.finished), l.limit + l.extra);
    assert_int_equal(atomic_load(&l.max_running), l.limit);
    weft_group_release(l.g);
    weft_chan_release(l.gate);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* Many short tasks on 4 Ps through go and try_go: never more than the
 * limit at once. */
static void test_limit_never_exceeded(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { TASKS = 2000 };
    limited l = { .limit = 4 };
    l.g = weft_group_make(NULL);
    assert_non_null(l.g);
    assert_int_equal(weft_group_set_limit(l.g, l.limit), 0);
    int tried = 0, rejected = 0;
    for (int i = 0; i < TASKS; i++) {
        if (i % 2) {
            tried++;
            int rc = weft_group_try_go(l.g, run_limited, &l);
            assert_true(rc == 0 || rc == WEFT_EAGAIN);
            if (rc == WEFT_EAGAIN) {
                rejected++;
                assert_int_equal(weft_group_go(l.g, run_limited, &l), 0);
            }
        } else {
            assert_int_equal(weft_group_go(l.g, run_limited, &l), 0);
        }
    }
    assert_int_equal(weft_group_wait(l.g), 0);
    print_message("max running %d of limit %d; try_go rejected %d of %d\n",
                  atomic_load(&l.max_running), l.limit, rejected, tried);
    assert_int_equal(atomic_load(&l.finished), TASKS);
    assert_true(atomic_load(&l.max_running) <= l.limit);
    assert_true(atomic_load(&l.max_running) >= 1);
    weft_group_release(l.g);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void test_set_limit_while_running(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    limited l = { .limit = 1000 };
    l.gate = weft_chan_make(0, 0);
    assert_non_null(l.gate);
    l.g = weft_group_make(NULL);
    assert_non_null(l.g);

    /* Before any task: accepted, any number of times; <= 0 removes it. */
    assert_int_equal(weft_group_set_limit(l.g, 2), 0);
    assert_int_equal(weft_group_set_limit(l.g, 0), 0);
    assert_int_equal(weft_group_set_limit(l.g, -1), 0);
    assert_int_equal(weft_group_set_limit(l.g, 5), 0);

    assert_int_equal(weft_group_go(l.g, run_limited, &l), 0);
    assert_true(wait_for_count(&l.started, 1, LATE));
    assert_int_equal(weft_group_set_limit(l.g, 10), WEFT_EINVAL);
    assert_int_equal(weft_group_set_limit(l.g, 0), WEFT_EINVAL);
    assert_int_equal(weft_group_set_limit(l.g, 5), WEFT_EINVAL);

    assert_int_equal(weft_chan_close(l.gate), 0);
    assert_int_equal(weft_group_wait(l.g), 0);
    assert_int_equal(atomic_load(&l.finished), 1);
    weft_group_release(l.g);
    weft_chan_release(l.gate);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- the group's context ------------------------------------------- */

static const char request_key = 'r';

typedef struct parent_probe {
    _Atomic int saw_cancel;
    _Atomic int saw_value;
} parent_probe;

static int wait_for_parent(weft_ctx *ctx, void *arg)
{
    parent_probe *p = arg;
    if (weft_ctx_value(ctx, &request_key) == (void *)&request_key)
        atomic_fetch_add(&p->saw_value, 1);
    if (wait_done(ctx) && weft_ctx_err(ctx) == WEFT_ECANCELED)
        atomic_fetch_add(&p->saw_cancel, 1);
    return 0;
}

/* The group's context derives from its parent: it carries the parent's
 * values and ends when the parent is cancelled. Tasks that return 0 after
 * that make wait return 0. */
static void test_parent_cancel_reaches_tasks(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { TASKS = 20 };
    weft_ctx *parent = weft_ctx_with_cancel(NULL);
    assert_non_null(parent);
    weft_ctx *with_value = weft_ctx_with_value(parent, &request_key, (void *)&request_key);
    assert_non_null(with_value);
    weft_group *g = weft_group_make(with_value);
    assert_non_null(g);
    parent_probe p = {0};
    for (int i = 0; i < TASKS; i++)
        assert_int_equal(weft_group_go(g, wait_for_parent, &p), 0);
    assert_int_equal(weft_ctx_err(weft_group_ctx(g)), 0);

    weft_ctx_cancel(parent);
    assert_int_equal(weft_group_wait(g), 0);
    assert_int_equal(atomic_load(&p.saw_value), TASKS);
    assert_int_equal(atomic_load(&p.saw_cancel), TASKS);
    assert_int_equal(weft_ctx_err(weft_group_ctx(g)), WEFT_ECANCELED);
    weft_group_release(g);
    weft_ctx_release(with_value);
    weft_ctx_release(parent);

    /* A group made from an ended parent starts with its context ended. */
    weft_ctx *ended = weft_ctx_with_deadline(NULL, weft_now() - 1);
    assert_non_null(ended);
    g = weft_group_make(ended);
    assert_non_null(g);
    assert_int_equal(weft_ctx_err(weft_group_ctx(g)), WEFT_ETIMEDOUT);
    assert_int_equal(weft_group_wait(g), 0);
    weft_group_release(g);
    weft_ctx_release(ended);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- release ------------------------------------------------------- */

typedef struct slow_tasks {
    _Atomic int finished;
} slow_tasks;

static int finish_slowly(weft_ctx *ctx, void *arg)
{
    slow_tasks *s = arg;
    (void)ctx;
    for (int i = 0; i < 50; i++)
        weft_yield();
    weft_sleep(WEFT_MS(10));
    atomic_fetch_add(&s->finished, 1);
    return 0;
}

/* Release without wait waits for the running tasks before freeing. */
static void test_release_waits_for_tasks(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { TASKS = 40 };
    slow_tasks s = {0};
    weft_group *g = weft_group_make(NULL);
    assert_non_null(g);
    for (int i = 0; i < TASKS; i++)
        assert_int_equal(weft_group_go(g, finish_slowly, &s), 0);
    weft_group_release(g);
    assert_int_equal(atomic_load(&s.finished), TASKS);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- plain threads and nesting ------------------------------------- */

typedef struct thread_group_result {
    int wait_result;
    int go_results;
    int ctx_err_after;
    _Atomic int ran;
} thread_group_result;

static int count_then_fail_on_seventh(weft_ctx *ctx, void *arg)
{
    thread_group_result *r = arg;
    (void)ctx;
    int n = atomic_fetch_add(&r->ran, 1) + 1;
    return n == 7 ? FIRST_ERROR : 0;
}

static void *use_group_from_thread(void *arg)
{
    thread_group_result *r = arg;
    weft_group *g = weft_group_make(NULL);
    if (!g) {
        r->go_results = -1;
        return NULL;
    }
    weft_group_set_limit(g, 2);
    for (int i = 0; i < 20; i++)
        r->go_results |= weft_group_go(g, count_then_fail_on_seventh, r);
    r->wait_result = weft_group_wait(g);
    r->ctx_err_after = weft_ctx_err(weft_group_ctx(g));
    weft_group_release(g);
    return NULL;
}

/* A plain thread makes a group, starts tasks (blocking at the limit),
 * waits and releases. */
static void test_group_from_plain_thread(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    thread_group_result r = {0};
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, use_group_from_thread, &r), 0);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(r.go_results, 0);
    assert_int_equal(atomic_load(&r.ran), 20);
    assert_int_equal(r.wait_result, FIRST_ERROR);
    assert_int_equal(r.ctx_err_after, WEFT_ECANCELED);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct nested {
    _Atomic int leaves_cancelled;
    _Atomic int leaves_timed_out;
} nested;

static int leaf_waits_for_cancel(weft_ctx *ctx, void *arg)
{
    nested *n = arg;
    if (!wait_done(ctx))
        atomic_fetch_add(&n->leaves_timed_out, 1);
    else if (weft_ctx_err(ctx) == WEFT_ECANCELED)
        atomic_fetch_add(&n->leaves_cancelled, 1);
    return 0;
}

static int leaf_fails(weft_ctx *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return FIRST_ERROR;
}

/* A task runs a group of its own below the outer group's context. */
static int run_inner_group(weft_ctx *ctx, void *arg)
{
    weft_group *inner = weft_group_make(ctx);
    if (!inner)
        return WEFT_ENOMEM;
    for (int i = 0; i < 5; i++)
        CHECK(weft_group_go(inner, leaf_waits_for_cancel, arg) == 0);
    int rc = weft_group_wait(inner);
    weft_group_release(inner);
    return rc;
}

/* An error in one inner group cancels the outer group's context, which
 * cancels the other inner groups' contexts. */
static void test_nested_groups(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { INNER_GROUPS = 4 };
    nested n = {0};
    weft_group *outer = weft_group_make(NULL);
    assert_non_null(outer);
    for (int i = 0; i < INNER_GROUPS; i++)
        assert_int_equal(weft_group_go(outer, run_inner_group, &n), 0);
    assert_int_equal(weft_group_go(outer, leaf_fails, NULL), 0);
    assert_int_equal(weft_group_wait(outer), FIRST_ERROR);
    assert_int_equal(atomic_load(&n.leaves_timed_out), 0);
    assert_int_equal(atomic_load(&n.leaves_cancelled), INNER_GROUPS * 5);
    weft_group_release(outer);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static int never_called(weft_ctx *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return FIRST_ERROR;
}

/* go and try_go return WEFT_EINVAL for a NULL task, and without a running
 * runtime, which a group itself does not need. */
static void test_go_invalid(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    weft_group *g = weft_group_make(NULL);
    assert_non_null(g);
    assert_int_equal(weft_group_go(g, never_called, NULL), WEFT_EINVAL);
    assert_int_equal(weft_group_try_go(g, never_called, NULL), WEFT_EINVAL);
    assert_int_equal(weft_group_set_limit(g, 1), 0);
    assert_int_equal(weft_group_go(g, never_called, NULL), WEFT_EINVAL);
    /* The failed calls left no task running and no slot taken. */
    assert_int_equal(weft_group_set_limit(g, 2), 0);
    assert_int_equal(weft_group_wait(g), 0);
    weft_group_release(g);

    assert_int_equal(weft_init(NULL), 0);
    g = weft_group_make(NULL);
    assert_non_null(g);
    assert_int_equal(weft_group_go(g, NULL, NULL), WEFT_EINVAL);
    assert_int_equal(weft_group_try_go(g, NULL, NULL), WEFT_EINVAL);
    assert_int_equal(weft_group_wait(g), 0);
    weft_group_release(g);
    assert_int_equal(weft_shutdown(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_wait_without_tasks, stop_runtime),
        cmocka_unit_test_teardown(test_go_invalid, stop_runtime),
        cmocka_unit_test_teardown(test_all_tasks_succeed, stop_runtime),
        cmocka_unit_test_teardown(test_first_error_wins, stop_runtime),
        cmocka_unit_test_teardown(test_wait_waits_for_every_task, stop_runtime),
        cmocka_unit_test_teardown(test_limit_blocks_go, stop_runtime),
        cmocka_unit_test_teardown(test_limit_never_exceeded, stop_runtime),
        cmocka_unit_test_teardown(test_set_limit_while_running, stop_runtime),
        cmocka_unit_test_teardown(test_parent_cancel_reaches_tasks, stop_runtime),
        cmocka_unit_test_teardown(test_release_waits_for_tasks, stop_runtime),
        cmocka_unit_test_teardown(test_group_from_plain_thread, stop_runtime),
        cmocka_unit_test_teardown(test_nested_groups, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
