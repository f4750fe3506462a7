/*
 * Contexts (weft/context.h):
 * - background, todo and NULL never end and carry nothing;
 * - cancellation flows to every descendant and never up;
 * - a child's deadline is the earlier of its own and its parent's, a past
 *   deadline ends the context at once, and a timeout ends it on time and
 *   closes its done channel;
 * - a child of an ended parent is ended at once with the parent's error;
 * - values are looked up by key address through the chain;
 * - cancel is idempotent, and contexts may be released in any order;
 * - weft_sleep_ctx, and cancel waking every waiter on a done channel;
 * - cancelling a parent with very many children;
 * - creating, cancelling and releasing from many coroutines and plain
 *   threads at once.
 *
 * Some tests call weft_sleep to let time pass before a cancel or to let a
 * released deadline pass: the sleep is the measured interval, not a way to
 * wait for another party.
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
#define HOUR WEFT_SEC(3600)

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

/* True when ctx's done channel is closed; false while it is open. */
static bool done_closed(weft_ctx *ctx)
{
    weft_chan *done = weft_ctx_done(ctx);
    if (!done)
        return false;
    return weft_chan_try_recv(done, NULL) == WEFT_ECLOSED;
}

/* Asserts that ctx has not ended. */
static void assert_live(weft_ctx *ctx)
{
    assert_int_equal(weft_ctx_err(ctx), 0);
    assert_non_null(weft_ctx_done(ctx));
    assert_int_equal(weft_chan_try_recv(weft_ctx_done(ctx), NULL), WEFT_EAGAIN);
}

/* Asserts that ctx has ended with err and its done channel is closed. */
static void assert_ended(weft_ctx *ctx, int err)
{
    assert_int_equal(weft_ctx_err(ctx), err);
    assert_true(done_closed(ctx));
}

static const char key_a = 'k';
static const char key_b = 'k'; /* same value, different address */
static const char unused_key = 'u';

/* ---- background, todo, NULL ---------------------------------------- */

static void assert_never_ends(weft_ctx *ctx)
{
    assert_null(weft_ctx_done(ctx));
    assert_int_equal(weft_ctx_err(ctx), 0);
    assert_null(weft_ctx_value(ctx, &key_a));
    int64_t deadline = 12345;
    assert_false(weft_ctx_deadline(ctx, &deadline));
    /* Cancelling or releasing them does nothing. */
    weft_ctx_cancel(ctx);
    weft_ctx_release(ctx);
    assert_int_equal(weft_ctx_err(ctx), 0);
    assert_null(weft_ctx_done(ctx));
}

static void test_background_todo_null(void **state)
{
    (void)state;
    assert_never_ends(weft_ctx_background());
    assert_never_ends(weft_ctx_todo());
    assert_never_ends(NULL);

    assert_int_equal(weft_init(NULL), 0);
    assert_never_ends(weft_ctx_background());
    assert_never_ends(weft_ctx_todo());
    assert_never_ends(NULL);
    assert_int_equal(weft_shutdown(), 0);
}

/* NULL is background as a parent too. */
static void test_null_parent(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_ctx *parents[] = { NULL, weft_ctx_background(), weft_ctx_todo() };
    for (size_t i = 0; i < sizeof parents / sizeof parents[0]; i++) {
        weft_ctx *c = weft_ctx_with_cancel(parents[i]);
        assert_non_null(c);
        assert_live(c);
        int64_t d;
        assert_false(weft_ctx_deadline(c, &d));

        weft_ctx *v = weft_ctx_with_value(parents[i], &key_a, (void *)&key_b);
        assert_non_null(v);
        assert_ptr_equal(weft_ctx_value(v, &key_a), &key_b);
        assert_null(weft_ctx_done(v));
        assert_int_equal(weft_ctx_err(v), 0);
        assert_false(weft_ctx_deadline(v, &d));

        int64_t before = weft_now();
        weft_ctx *t = weft_ctx_with_timeout(parents[i], HOUR);
        assert_non_null(t);
        assert_live(t);
        assert_true(weft_ctx_deadline(t, &d));
        assert_true(d >= before + HOUR);
        assert_true(d <= weft_now() + HOUR);

        weft_ctx *dl = weft_ctx_with_deadline(parents[i], before + HOUR);
        assert_non_null(dl);
        assert_live(dl);
        assert_true(weft_ctx_deadline(dl, &d));
        assert_true(d == before + HOUR);

        weft_ctx_cancel(c);
        assert_ended(c, WEFT_ECANCELED);
        weft_ctx_release(c);
        weft_ctx_release(v);
        weft_ctx_release(t);
        weft_ctx_release(dl);
    }

    int64_t start = weft_now();
    assert_int_equal(weft_sleep_ctx(NULL, WEFT_MS(5)), 0);
    assert_true(weft_now() - start >= WEFT_MS(5));
    assert_int_equal(weft_shutdown(), 0);
}

/* Cancel contexts work without a runtime; deadlines need one. */
static void test_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    assert_null(weft_ctx_with_timeout(NULL, WEFT_SEC(1)));
    assert_null(weft_ctx_with_deadline(NULL, weft_now() + WEFT_SEC(1)));

    weft_ctx *c = weft_ctx_with_cancel(NULL);
    assert_non_null(c);
    weft_ctx *child = weft_ctx_with_cancel(c);
    assert_non_null(child);
    weft_ctx *v = weft_ctx_with_value(child, &key_a, (void *)&key_a);
    assert_non_null(v);
    assert_live(child);
    weft_ctx_cancel(c);
    assert_ended(c, WEFT_ECANCELED);
    assert_ended(child, WEFT_ECANCELED);
    assert_ended(v, WEFT_ECANCELED);
    assert_ptr_equal(weft_ctx_value(v, &key_a), &key_a);
    weft_ctx_release(c);
    weft_ctx_release(v);
    weft_ctx_release(child);
}

/* ---- cancellation -------------------------------------------------- */

/* root -> a -> {a1, a2 (deadline), av (value)}, root -> b -> b1.
 * Cancel flows to every descendant and never up or sideways. */
static void test_cancel_tree(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_ctx *root = weft_ctx_with_cancel(NULL);
    assert_non_null(root);
    weft_ctx *a = weft_ctx_with_cancel(root);
    weft_ctx *b = weft_ctx_with_cancel(root);
    assert_non_null(a);
    assert_non_null(b);
    weft_ctx *a1 = weft_ctx_with_cancel(a);
    weft_ctx *a2 = weft_ctx_with_timeout(a, HOUR);
    weft_ctx *av = weft_ctx_with_value(a, &key_a, (void *)&key_a);
    weft_ctx *b1 = weft_ctx_with_cancel(b);
    assert_non_null(a1);
    assert_non_null(a2);
    assert_non_null(av);
    assert_non_null(b1);
    weft_ctx *all[] = { root, a, b, a1, a2, av, b1 };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_int_equal(weft_ctx_err(all[i]), 0);

    /* A leaf: only itself. */
    weft_ctx_cancel(a1);
    assert_ended(a1, WEFT_ECANCELED);
    assert_live(root);
    assert_live(a);
    assert_live(a2);
    assert_live(av);
    assert_live(b);
    assert_live(b1);

    /* A middle node: itself and its subtree. */
    weft_ctx_cancel(a);
    assert_ended(a, WEFT_ECANCELED);
    assert_ended(a1, WEFT_ECANCELED);
    assert_ended(a2, WEFT_ECANCELED);
    assert_ended(av, WEFT_ECANCELED);
    assert_live(root);
    assert_live(b);
    assert_live(b1);

    /* The root: everything. */
    weft_ctx_cancel(root);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_ended(all[i], WEFT_ECANCELED);

    weft_ctx_release(a1);
    weft_ctx_release(root);
    weft_ctx_release(b1);
    weft_ctx_release(av);
    weft_ctx_release(a);
    weft_ctx_release(a2);
    weft_ctx_release(b);
    assert_int_equal(weft_shutdown(), 0);
}

/* Cancel twice changes nothing; the first error wins, so cancelling a
 * timed-out context keeps WEFT_ETIMEDOUT. */
static void test_cancel_idempotent(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_ctx *c = weft_ctx_with_cancel(NULL);
    assert_non_null(c);
    weft_chan *done = weft_ctx_done(c);
    weft_ctx_cancel(c);
    weft_ctx_cancel(c);
    assert_ended(c, WEFT_ECANCELED);
    assert_ptr_equal(weft_ctx_done(c), done);
    weft_ctx_cancel(c);
    assert_ended(c, WEFT_ECANCELED);
    weft_ctx_release(c);

    weft_ctx *expired = weft_ctx_with_deadline(NULL, weft_now() - 1);
    assert_non_null(expired);
    assert_ended(expired, WEFT_ETIMEDOUT);
    weft_ctx_cancel(expired);
    assert_ended(expired, WEFT_ETIMEDOUT);
    weft_ctx_release(expired);

    weft_ctx *timeout = weft_ctx_with_timeout(NULL, WEFT_MS(10));
    assert_non_null(timeout);
    assert_int_equal(weft_chan_recv(weft_ctx_done(timeout), NULL), WEFT_ECLOSED);
    weft_ctx_cancel(timeout);
    assert_ended(timeout, WEFT_ETIMEDOUT);
    weft_ctx_release(timeout);

    /* And the other way round: a cancelled context never times out. */
    weft_ctx *soon = weft_ctx_with_timeout(NULL, WEFT_MS(10));
    assert_non_null(soon);
    weft_ctx_cancel(soon);
    assert_int_equal(weft_sleep(WEFT_MS(30)), 0);
    assert_ended(soon, WEFT_ECANCELED);
    weft_ctx_release(soon);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- deadlines ----------------------------------------------------- */

static void test_child_deadline_is_earlier(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int64_t now = weft_now();
    int64_t parent_deadline = now + WEFT_SEC(100);
    weft_ctx *parent = weft_ctx_with_deadline(NULL, parent_deadline);
    assert_non_null(parent);
    int64_t d = 0;
    assert_true(weft_ctx_deadline(parent, &d));
    assert_true(d == parent_deadline);

    /* A later deadline of its own: the parent's wins. */
    weft_ctx *later = weft_ctx_with_deadline(parent, now + WEFT_SEC(1000));
    assert_non_null(later);
    assert_true(weft_ctx_deadline(later, &d));
    assert_true(d == parent_deadline);
    weft_ctx *later_timeout = weft_ctx_with_timeout(parent, WEFT_SEC(1000));
    assert_non_null(later_timeout);
    assert_true(weft_ctx_deadline(later_timeout, &d));
    assert_true(d == parent_deadline);

    /* An earlier one: its own. */
    int64_t earlier_deadline = now + WEFT_SEC(10);
    weft_ctx *earlier = weft_ctx_with_deadline(parent, earlier_deadline);
    assert_non_null(earlier);
    assert_true(weft_ctx_deadline(earlier, &d));
    assert_true(d == earlier_deadline);

    /* Cancel and value children report their ancestor's deadline. */
    weft_ctx *cancel_child = weft_ctx_with_cancel(earlier);
    weft_ctx *value_child = weft_ctx_with_value(cancel_child, &key_a, NULL);
    assert_non_null(cancel_child);
    assert_non_null(value_child);
    assert_true(weft_ctx_deadline(cancel_child, &d));
    assert_true(d == earlier_deadline);
    d = 0;
    assert_true(weft_ctx_deadline(value_child, &d));
    assert_true(d == earlier_deadline);

    /* A timeout below a deadline: the earlier of the two. */
    int64_t before = weft_now();
    weft_ctx *short_timeout = weft_ctx_with_timeout(value_child, WEFT_SEC(1));
    assert_non_null(short_timeout);
    assert_true(weft_ctx_deadline(short_timeout, &d));
    assert_true(d >= before + WEFT_SEC(1));
    assert_true(d <= weft_now() + WEFT_SEC(1));

    weft_ctx *all[] = { parent, later, later_timeout, earlier, cancel_child, value_child, short_timeout };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        assert_int_equal(weft_ctx_err(all[i]), 0);
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        weft_ctx_release(all[i]);
    assert_int_equal(weft_shutdown(), 0);
}

/* A deadline already past, or a timeout <= 0, ends the context at once. */
static void test_past_deadline_ends_at_once(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_ctx *past = weft_ctx_with_deadline(NULL, weft_now() - WEFT_MS(1));
    weft_ctx *now = weft_ctx_with_deadline(NULL, weft_now());
    weft_ctx *zero = weft_ctx_with_timeout(NULL, 0);
    weft_ctx *negative = weft_ctx_with_timeout(NULL, -WEFT_SEC(1));
    weft_ctx *minimum = weft_ctx_with_deadline(NULL, INT64_MIN);
    weft_ctx *all[] = { past, now, zero, negative, minimum };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        assert_non_null(all[i]);
        assert_ended(all[i], WEFT_ETIMEDOUT);
        int64_t d;
        assert_true(weft_ctx_deadline(all[i], &d));
        /* A child of it is ended at once with the same error. */
        weft_ctx *child = weft_ctx_with_cancel(all[i]);
        assert_non_null(child);
        assert_ended(child, WEFT_ETIMEDOUT);
        weft_ctx_release(child);
    }
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        weft_ctx_release(all[i]);
    assert_int_equal(weft_shutdown(), 0);
}

/* with_timeout(50 ms) ends between 50 ms and 2 s with WEFT_ETIMEDOUT and
 * closes its done channel; its children end with the same error. */
static void test_timeout_ends_on_time(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    assert_non_null(ctx);
    weft_ctx *child = weft_ctx_with_timeout(ctx, HOUR);
    weft_ctx *value_child = weft_ctx_with_value(ctx, &key_a, NULL);
    assert_non_null(child);
    assert_non_null(value_child);
    assert_live(ctx);

    /* This plain thread blocks on the done channel until it closes. */
    assert_int_equal(weft_chan_recv(weft_ctx_done(ctx), NULL), WEFT_ECLOSED);
    int64_t elapsed = weft_now() - start;
    print_message("50 ms timeout ended after %.3f ms\n", elapsed / 1e6);
    assert_true(elapsed >= WEFT_MS(50));
    assert_true(elapsed < LATE);
    assert_ended(ctx, WEFT_ETIMEDOUT);
    assert_ended(value_child, WEFT_ETIMEDOUT);
    /* The child hears of it from its parent; allow it a moment. */
    assert_int_equal(weft_chan_recv(weft_ctx_done(child), NULL), WEFT_ECLOSED);
    assert_ended(child, WEFT_ETIMEDOUT);
    assert_true(weft_now() - start < LATE);

    weft_ctx_release(child);
    weft_ctx_release(ctx);
    weft_ctx_release(value_child);
    assert_int_equal(weft_shutdown(), 0);
}

/* A context made from an ended parent is ended at once with the parent's
 * error, whatever its own kind. */
static void test_child_of_ended_parent(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_ctx *cancelled = weft_ctx_with_cancel(NULL);
    weft_ctx *timed_out = weft_ctx_with_deadline(NULL, weft_now() - 1);
    assert_non_null(cancelled);
    assert_non_null(timed_out);
    weft_ctx_cancel(cancelled);

    struct {
        weft_ctx *parent;
        int err;
    } cases[] = { { cancelled, WEFT_ECANCELED }, { timed_out, WEFT_ETIMEDOUT } };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        weft_ctx *c = weft_ctx_with_cancel(cases[i].parent);
        weft_ctx *t = weft_ctx_with_timeout(cases[i].parent, HOUR);
        weft_ctx *d = weft_ctx_with_deadline(cases[i].parent, weft_now() + HOUR);
        weft_ctx *v = weft_ctx_with_value(cases[i].parent, &key_a, NULL);
        assert_non_null(c);
        assert_non_null(t);
        assert_non_null(d);
        assert_non_null(v);
        assert_ended(c, cases[i].err);
        assert_ended(t, cases[i].err);
        assert_ended(d, cases[i].err);
        assert_ended(v, cases[i].err);
        weft_ctx *grandchild = weft_ctx_with_cancel(c);
        assert_non_null(grandchild);
        assert_ended(grandchild, cases[i].err);
        weft_ctx_release(grandchild);
        weft_ctx_release(c);
        weft_ctx_release(t);
        weft_ctx_release(d);
        weft_ctx_release(v);
    }

    /* A child with a long deadline of its own, ended later by its parent's
     * timeout, reports WEFT_ETIMEDOUT from the parent. A child with a
     * deadline, ended by its parent's cancel, reports WEFT_ECANCELED. */
    weft_ctx *parent = weft_ctx_with_timeout(NULL, WEFT_MS(20));
    weft_ctx *child = weft_ctx_with_deadline(parent, weft_now() + HOUR);
    assert_non_null(parent);
    assert_non_null(child);
    assert_int_equal(weft_chan_recv(weft_ctx_done(child), NULL), WEFT_ECLOSED);
    assert_ended(child, WEFT_ETIMEDOUT);
    weft_ctx *cancel_parent = weft_ctx_with_cancel(NULL);
    weft_ctx *deadline_child = weft_ctx_with_timeout(cancel_parent, HOUR);
    assert_non_null(cancel_parent);
    assert_non_null(deadline_child);
    weft_ctx_cancel(cancel_parent);
    assert_ended(deadline_child, WEFT_ECANCELED);

    weft_ctx_release(deadline_child);
    weft_ctx_release(cancel_parent);
    weft_ctx_release(child);
    weft_ctx_release(parent);
    weft_ctx_release(cancelled);
    weft_ctx_release(timed_out);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- values -------------------------------------------------------- */

static void test_values(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int first = 1, second = 2, third = 3;
    weft_ctx *root = weft_ctx_with_value(NULL, &key_a, &first);
    weft_ctx *b = weft_ctx_with_value(root, &key_b, &second);
    weft_ctx *c = weft_ctx_with_cancel(b);
    weft_ctx *shadow = weft_ctx_with_value(c, &key_a, &third);
    assert_non_null(root);
    assert_non_null(b);
    assert_non_null(c);
    assert_non_null(shadow);

    /* Keys compare by address: key_a and key_b hold the same value. */
    assert_ptr_equal(weft_ctx_value(root, &key_a), &first);
    assert_null(weft_ctx_value(root, &key_b));
    assert_ptr_equal(weft_ctx_value(b, &key_a), &first);
    assert_ptr_equal(weft_ctx_value(b, &key_b), &second);
    /* Through a cancel context. */
    assert_ptr_equal(weft_ctx_value(c, &key_a), &first);
    assert_ptr_equal(weft_ctx_value(c, &key_b), &second);
    /* The nearest ancestor wins. */
    assert_ptr_equal(weft_ctx_value(shadow, &key_a), &third);
    assert_ptr_equal(weft_ctx_value(shadow, &key_b), &second);
    assert_null(weft_ctx_value(shadow, &unused_key));
    assert_null(weft_ctx_value(shadow, NULL));

    /* A value context shares its parent's done channel and error. */
    assert_null(weft_ctx_done(root));
    assert_null(weft_ctx_done(b));
    assert_non_null(weft_ctx_done(c));
    assert_ptr_equal(weft_ctx_done(shadow), weft_ctx_done(c));
    weft_ctx_cancel(c);
    assert_ended(shadow, WEFT_ECANCELED);
    assert_int_equal(weft_ctx_err(b), 0);
    /* Values stay readable after the cancel. */
    assert_ptr_equal(weft_ctx_value(shadow, &key_a), &third);

    /* A NULL key is rejected. */
    assert_null(weft_ctx_with_value(shadow, NULL, &first));
    assert_null(weft_ctx_with_value(NULL, NULL, &first));

    /* A NULL value is stored and found as NULL, hiding the outer one. */
    weft_ctx *nulled = weft_ctx_with_value(shadow, &key_b, NULL);
    assert_non_null(nulled);
    assert_null(weft_ctx_value(nulled, &key_b));
    assert_ptr_equal(weft_ctx_value(nulled, &key_a), &third);

    weft_ctx_release(root);
    weft_ctx_release(nulled);
    weft_ctx_release(c);
    weft_ctx_release(shadow);
    weft_ctx_release(b);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- release order ------------------------------------------------- */

static void test_release_any_order(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int payload = 5;

    /* Parent first: releasing cancels it, so the child ends, and the
     * child stays usable until its own release. */
    weft_ctx *p = weft_ctx_with_cancel(NULL);
    weft_ctx *c = weft_ctx_with_cancel(p);
    weft_ctx *v = weft_ctx_with_value(c, &key_a, &payload);
    assert_non_null(p);
    assert_non_null(c);
    assert_non_null(v);
    weft_ctx_release(p);
    assert_ended(c, WEFT_ECANCELED);
    assert_ended(v, WEFT_ECANCELED);
    assert_ptr_equal(weft_ctx_value(v, &key_a), &payload);
    weft_ctx_release(c);
    assert_ptr_equal(weft_ctx_value(v, &key_a), &payload);
    weft_ctx_release(v);

    /* Child first: the parent is not affected. */
    p = weft_ctx_with_cancel(NULL);
    c = weft_ctx_with_cancel(p);
    v = weft_ctx_with_value(p, &key_a, &payload);
    assert_non_null(p);
    assert_non_null(c);
    assert_non_null(v);
    weft_ctx_release(c);
    weft_ctx_release(v);
    assert_live(p);
    weft_ctx_cancel(p);
    assert_ended(p, WEFT_ECANCELED);
    weft_ctx_release(p);

    /* Timeouts released before they fire: the timer must not touch them
     * afterwards (AddressSanitizer reports it if it does). */
    weft_ctx *t = weft_ctx_with_timeout(NULL, WEFT_MS(10));
    weft_ctx *t_child = weft_ctx_with_timeout(t, WEFT_MS(5));
    assert_non_null(t);
    assert_non_null(t_child);
    weft_ctx_release(t);
    weft_ctx_release(t_child);
    assert_int_equal(weft_sleep(WEFT_MS(30)), 0);

    /* A deep chain, released root first and leaf first. */
    enum { DEPTH = 1000 };
    weft_ctx *chain[DEPTH];
    for (int order = 0; order < 2; order++) {
        weft_ctx *parent = NULL;
        for (int i = 0; i < DEPTH; i++) {
            chain[i] = i % 3 == 2 ? weft_ctx_with_value(parent, &key_a, &chain[i])
                                  : weft_ctx_with_cancel(parent);
            assert_non_null(chain[i]);
            parent = chain[i];
        }
        assert_ptr_equal(weft_ctx_value(chain[DEPTH - 1], &key_a), &chain[DEPTH - 2]);
        if (order == 0) {
            for (int i = 0; i < DEPTH - 1; i++)
                weft_ctx_release(chain[i]);
            assert_ended(chain[DEPTH - 1], WEFT_ECANCELED);
            weft_ctx_release(chain[DEPTH - 1]);
        } else {
            for (int i = DEPTH - 1; i > 0; i--)
                weft_ctx_release(chain[i]);
            assert_live(chain[0]);
            weft_ctx_release(chain[0]);
        }
    }
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- sleep_ctx ------------------------------------------------------ */

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

typedef struct sleeper {
    weft_ctx *ctx;
    int64_t ns;
    int result;
    int64_t slept;
    int64_t ended_at;     /* weft_now() when the sleep returned */
    _Atomic int finished;
} sleeper;

static void sleep_with_ctx(sleeper *s)
{
    int64_t start = weft_now();
    s->result = weft_sleep_ctx(s->ctx, s->ns);
    s->ended_at = weft_now();
    s->slept = s->ended_at - start;
    atomic_store(&s->finished, 1);
}

static void sleep_coroutine(void *arg)
{
    sleep_with_ctx(arg);
}

static void test_sleep_ctx(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);

    /* A live context: the full time, then 0. */
    weft_ctx *live = weft_ctx_with_cancel(NULL);
    assert_non_null(live);
    sleeper s = { .ctx = live, .ns = WEFT_MS(20) };
    assert_int_equal(weft_go(sleep_coroutine, &s), 0);
    assert_true(wait_for_count(&s.finished, 1, WEFT_SEC(5)));
    assert_int_equal(s.result, 0);
    assert_true(s.slept >= WEFT_MS(20));
    assert_true(s.slept < LATE);
    sleeper on_thread = { .ctx = live, .ns = WEFT_MS(20) };
    sleep_with_ctx(&on_thread);
    assert_int_equal(on_thread.result, 0);
    assert_true(on_thread.slept >= WEFT_MS(20));

    /* Cancelled midway by another coroutine: a coroutine sleeper and this
     * plain thread both return WEFT_ECANCELED early. */
    sleeper co = { .ctx = live, .ns = HOUR };
    assert_int_equal(weft_go(sleep_coroutine, &co), 0);
    cancel_later c = { live, WEFT_MS(30) };
    int64_t cancel_spawned = weft_now();
    assert_int_equal(weft_go(cancel_after_delay, &c), 0);
    sleeper th = { .ctx = live, .ns = HOUR };
    sleep_with_ctx(&th);
    assert_true(wait_for_count(&co.finished, 1, WEFT_SEC(5)));
    print_message("sleepers cancelled after %.3f ms (coroutine), %.3f ms (thread)\n",
                  co.slept / 1e6, th.slept / 1e6);
    assert_int_equal(co.result, WEFT_ECANCELED);
    assert_int_equal(th.result, WEFT_ECANCELED);
    assert_true(co.slept < LATE);
    assert_true(th.ended_at - cancel_spawned >= WEFT_MS(30));
    assert_true(th.slept < LATE);

    /* Already ended: returns the error at once. */
    sleeper ended = { .ctx = live, .ns = HOUR };
    sleep_with_ctx(&ended);
    assert_int_equal(ended.result, WEFT_ECANCELED);
    assert_true(ended.slept < LATE);
    weft_ctx_release(live);

    /* A deadline before the end of the sleep: WEFT_ETIMEDOUT. */
    int64_t created_at = weft_now();
    weft_ctx *soon = weft_ctx_with_timeout(NULL, WEFT_MS(30));
    assert_non_null(soon);
    sleeper timed = { .ctx = soon, .ns = HOUR };
    assert_int_equal(weft_go(sleep_coroutine, &timed), 0);
    assert_true(wait_for_count(&timed.finished, 1, WEFT_SEC(5)));
    assert_int_equal(timed.result, WEFT_ETIMEDOUT);
    assert_true(timed.ended_at - created_at >= WEFT_MS(30));
    assert_true(timed.slept < LATE);
    weft_ctx_release(soon);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- waiters on done ----------------------------------------------- */

typedef struct done_waiters {
    weft_ctx *ctx;
    weft_chan *never;   /* no value is ever sent on it */
    _Atomic int started;
    _Atomic int woken;
    _Atomic int closed_results;
    weft_wg wg;
} done_waiters;

static void recv_done(void *arg)
{
    done_waiters *d = arg;
    atomic_fetch_add(&d->started, 1);
    if (weft_chan_recv(weft_ctx_done(d->ctx), NULL) == WEFT_ECLOSED)
        atomic_fetch_add(&d->closed_results, 1);
    CHECK(weft_ctx_err(d->ctx) == WEFT_ECANCELED);
    atomic_fetch_add(&d->woken, 1);
    weft_wg_done(&d->wg);
}

static void select_done(void *arg)
{
    done_waiters *d = arg;
    atomic_fetch_add(&d->started, 1);
    long v;
    weft_case cases[2] = { WEFT_RECV_CASE(d->never, &v), WEFT_RECV_CASE(weft_ctx_done(d->ctx), NULL) };
    int chosen = weft_select(cases, 2);
    if (chosen == 1 && !cases[1].ok)
        atomic_fetch_add(&d->closed_results, 1);
    CHECK(weft_ctx_err(d->ctx) == WEFT_ECANCELED);
    atomic_fetch_add(&d->woken, 1);
    weft_wg_done(&d->wg);
}

static void *recv_done_thread(void *arg)
{
    done_waiters *d = arg;
    atomic_fetch_add(&d->started, 1);
    if (weft_chan_recv(weft_ctx_done(d->ctx), NULL) == WEFT_ECLOSED)
        atomic_fetch_add(&d->closed_results, 1);
    atomic_fetch_add(&d->woken, 1);
    return NULL;
}

/* Cancel wakes every coroutine and thread waiting on the done channel,
 * in recv or in select. */
static void test_cancel_wakes_all_waiters(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    const int receivers = SCALE(500), selectors = SCALE(100);
    enum { THREADS = 2 };
    const int total = receivers + selectors + THREADS;
    done_waiters d = { .ctx = weft_ctx_with_cancel(NULL), .never = weft_chan_make(sizeof(long), 0) };
    assert_non_null(d.ctx);
    assert_non_null(d.never);

    weft_wg_add(&d.wg, receivers + selectors);
    for (int i = 0; i < receivers; i++)
        assert_int_equal(weft_go(recv_done, &d), 0);
    for (int i = 0; i < selectors; i++)
        assert_int_equal(weft_go(select_done, &d), 0);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, recv_done_thread, &d), 0);
    assert_true(wait_for_count(&d.started, total, LATE));
    assert_int_equal(atomic_load(&d.woken), 0);

    weft_ctx_cancel(d.ctx);
    weft_wg_wait(&d.wg);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    assert_int_equal(atomic_load(&d.woken), total);
    assert_int_equal(atomic_load(&d.closed_results), total);
    weft_ctx_release(d.ctx);
    weft_chan_release(d.never);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- err and done agree -------------------------------------------- */

typedef struct err_observer {
    weft_ctx *_Atomic current;   /* the round's context */
    _Atomic int round;           /* published by the canceller */
    _Atomic int rounds_seen;     /* acknowledged by the observer */
    _Atomic int open_after_err;  /* rounds where err was set, done still open */
    _Atomic int gave_up;         /* the observer timed out */
    int rounds;
} err_observer;

static void *observe_err_then_done(void *arg)
{
    err_observer *o = arg;
    int64_t deadline = weft_now() + WEFT_SEC(30);
    for (int r = 1; r <= o->rounds; r++) {
        while (atomic_load(&o->round) < r) {
            if (weft_now() > deadline) {
                atomic_store(&o->gave_up, 1);
                return NULL;
            }
        }
        weft_ctx *ctx = atomic_load(&o->current);
        while (weft_ctx_err(ctx) == 0) {
            if (weft_now() > deadline) {
                atomic_store(&o->gave_up, 1);
                return NULL;
            }
        }
        if (weft_chan_try_recv(weft_ctx_done(ctx), NULL) != WEFT_ECLOSED)
            atomic_fetch_add(&o->open_after_err, 1);
        atomic_store(&o->rounds_seen, r);
    }
    return NULL;
}

/* As in Go ("If Done is not yet closed, Err returns nil"), an observer
 * that reads a non-zero error finds the done channel closed. The observer
 * spins on another thread and checks the channel the moment the error
 * appears, so a window between setting the error and closing the channel
 * shows up in some rounds. */
static void test_err_implies_done_closed(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    err_observer o = { .rounds = TEST_SANITIZED ? 5000 : 20000 };
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, observe_err_then_done, &o), 0);
    for (int r = 1; r <= o.rounds && !atomic_load(&o.gave_up); r++) {
        weft_ctx *ctx = weft_ctx_with_cancel(NULL);
        assert_non_null(ctx);
        assert_non_null(weft_ctx_done(ctx));
        atomic_store(&o.current, ctx);
        atomic_store(&o.round, r);
        weft_ctx_cancel(ctx);
        int64_t deadline = weft_now() + LATE;
        while (atomic_load(&o.rounds_seen) < r && !atomic_load(&o.gave_up) && weft_now() < deadline) {
        }
        weft_ctx_release(ctx);
    }
    assert_int_equal(pthread_join(thread, NULL), 0);
    print_message("%d of %d rounds saw the error while done was still open\n",
                  atomic_load(&o.open_after_err), o.rounds);
    assert_int_equal(atomic_load(&o.gave_up), 0);
    assert_int_equal(atomic_load(&o.rounds_seen), o.rounds);
    assert_int_equal(atomic_load(&o.open_after_err), 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- many children ------------------------------------------------- */

/* Cancelling a parent with 100,000 children ends them all, quickly.
 * Releasing children one by one, in random order, before the parent ends
 * is quick too. */
static void test_many_children(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    const int n = SCALE(100000);
    weft_ctx **children = calloc((size_t)n, sizeof *children);
    assert_non_null(children);
    int *order = calloc((size_t)n, sizeof *order);
    assert_non_null(order);

    weft_ctx *parent = weft_ctx_with_cancel(NULL);
    assert_non_null(parent);
    int64_t start = weft_now();
    for (int i = 0; i < n; i++) {
        if (i % 10 == 0)
            children[i] = weft_ctx_with_timeout(parent, HOUR);
        else if (i % 10 == 1)
            children[i] = weft_ctx_with_value(parent, &key_a, NULL);
        else
            children[i] = weft_ctx_with_cancel(parent);
        assert_non_null(children[i]);
    }
    int64_t children_made = weft_now();
    weft_ctx_cancel(parent);
    int64_t cancelled = weft_now();
    for (int i = 0; i < n; i++) {
        if (weft_ctx_err(children[i]) != WEFT_ECANCELED)
            fail_msg("child %d: err %d after the parent's cancel", i, weft_ctx_err(children[i]));
    }
    for (int i = 0; i < n; i++)
        weft_ctx_release(children[i]);
    int64_t released = weft_now();
    weft_ctx_release(parent);
    print_message("%d children: made in %.1f ms, cancelled in %.1f ms, released in %.1f ms\n", n,
                  (children_made - start) / 1e6, (cancelled - children_made) / 1e6, (released - cancelled) / 1e6);
    assert_true(cancelled - children_made < LATE);
    assert_true(released - cancelled < LATE);

    /* Release before any cancel, in random order: each child leaves its
     * parent's list. */
    parent = weft_ctx_with_cancel(NULL);
    assert_non_null(parent);
    for (int i = 0; i < n; i++) {
        children[i] = i % 10 == 0 ? weft_ctx_with_timeout(parent, HOUR) : weft_ctx_with_cancel(parent);
        assert_non_null(children[i]);
        order[i] = i;
    }
    uint64_t rng = 12345;
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(next_random(&rng) % (uint64_t)(i + 1));
        int tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
    int64_t release_start = weft_now();
    /* Release all but the last few; those must still end with the parent. */
    for (int i = 0; i < n - 3; i++)
        weft_ctx_release(children[order[i]]);
    int64_t release_end = weft_now();
    print_message("%d children released one by one before the parent's cancel in %.1f ms\n", n - 3,
                  (release_end - release_start) / 1e6);
    assert_true(release_end - release_start < LATE);
    weft_ctx_cancel(parent);
    for (int i = n - 3; i < n; i++) {
        assert_ended(children[order[i]], WEFT_ECANCELED);
        weft_ctx_release(children[order[i]]);
    }
    weft_ctx_release(parent);
    free(order);
    free(children);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- concurrent use ------------------------------------------------ */

typedef struct ctx_stress {
    weft_ctx *root;
    int iterations;
    int workers;
    _Atomic int halfway;      /* workers past half their iterations */
    _Atomic int root_cancelled;
    _Atomic int64_t created;
    weft_wg wg;
} ctx_stress;

typedef struct ctx_worker {
    ctx_stress *s;
    uint64_t seed;
} ctx_worker;

static void stress_contexts(ctx_stress *s, uint64_t seed)
{
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    /* Lives through the root's cancel. */
    weft_ctx *long_lived = weft_ctx_with_cancel(s->root);
    weft_ctx *long_lived_value = weft_ctx_with_value(long_lived, &key_b, &rng);
    CHECK(long_lived != NULL);
    CHECK(long_lived_value != NULL);

    for (int i = 0; i < s->iterations; i++) {
        if (i == s->iterations / 2)
            atomic_fetch_add(&s->halfway, 1);
        bool root_ended = weft_ctx_err(s->root) != 0;

        weft_ctx *c = weft_ctx_with_cancel(s->root);
        weft_ctx *d = weft_ctx_with_timeout(c, (int64_t)(next_random(&rng) % WEFT_US(500)));
        weft_ctx *v = weft_ctx_with_value(d, &key_a, (void *)(intptr_t)(i + 1));
        CHECK(c != NULL);
        CHECK(d != NULL);
        CHECK(v != NULL);
        if (!c || !d || !v)
            return;
        atomic_fetch_add(&s->created, 3);
        if (root_ended) {
            /* A child of an ended parent is ended at once. d's own
             * timeout may be past too, so either error is allowed. */
            CHECK(weft_ctx_err(c) == WEFT_ECANCELED);
            CHECK(weft_ctx_err(d) == WEFT_ECANCELED || weft_ctx_err(d) == WEFT_ETIMEDOUT);
        }
        CHECK(weft_ctx_value(v, &key_a) == (void *)(intptr_t)(i + 1));
        CHECK(weft_ctx_value(v, &key_b) == NULL);

        switch (next_random(&rng) % 3) {
        case 0:
            weft_ctx_cancel(c);
            CHECK(weft_ctx_err(c) == WEFT_ECANCELED);
            /* d may have timed out first. */
            CHECK(weft_ctx_err(d) == WEFT_ECANCELED || weft_ctx_err(d) == WEFT_ETIMEDOUT);
            CHECK(weft_ctx_err(v) == weft_ctx_err(d));
            CHECK(done_closed(v));
            break;
        case 1:
            weft_ctx_cancel(d);
            CHECK(weft_ctx_err(d) != 0);
            break;
        default:
            if (i % 16 == 0)
                weft_yield();
            break;
        }

        /* Release in a random one of the six orders. */
        weft_ctx *set[3] = { c, d, v };
        for (int k = 2; k > 0; k--) {
            int j = (int)(next_random(&rng) % (uint64_t)(k + 1));
            weft_ctx *tmp = set[k];
            set[k] = set[j];
            set[j] = tmp;
        }
        for (int k = 0; k < 3; k++)
            weft_ctx_release(set[k]);
    }

    /* The canceller ends the root once every worker is halfway; wait for
     * it, then the long-lived contexts must have ended with it. */
    int64_t deadline = weft_now() + WEFT_SEC(20);
    while (!atomic_load(&s->root_cancelled) && weft_now() < deadline)
        weft_yield();
    CHECK(atomic_load(&s->root_cancelled));
    CHECK(weft_ctx_err(long_lived) == WEFT_ECANCELED);
    CHECK(weft_ctx_err(long_lived_value) == WEFT_ECANCELED);
    CHECK(done_closed(long_lived_value));
    CHECK(weft_ctx_value(long_lived_value, &key_b) == &rng);
    if (seed % 2) {
        weft_ctx_release(long_lived);
        weft_ctx_release(long_lived_value);
    } else {
        weft_ctx_release(long_lived_value);
        weft_ctx_release(long_lived);
    }
}

static void stress_coroutine(void *arg)
{
    ctx_worker *w = arg;
    stress_contexts(w->s, w->seed);
    weft_wg_done(&w->s->wg);
}

static void *stress_thread(void *arg)
{
    ctx_worker *w = arg;
    stress_contexts(w->s, w->seed);
    return NULL;
}

static void cancel_root_halfway(void *arg)
{
    ctx_stress *s = arg;
    int64_t deadline = weft_now() + WEFT_SEC(20);
    while (atomic_load(&s->halfway) < s->workers && weft_now() < deadline)
        weft_yield();
    CHECK(atomic_load(&s->halfway) == s->workers);
    weft_ctx_cancel(s->root);
    atomic_store(&s->root_cancelled, 1);
    weft_wg_done(&s->wg);
}

/* Coroutines on 4 Ps and plain threads create, cancel and release trees
 * below one shared root while another coroutine cancels the root. */
static void test_concurrent_create_cancel_release(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { COROUTINES = 16, THREADS = 2 };
    ctx_stress s = { .iterations = SCALE(20000), .workers = COROUTINES + THREADS };
    s.root = weft_ctx_with_cancel(NULL);
    assert_non_null(s.root);

    ctx_worker workers[COROUTINES + THREADS];
    weft_wg_add(&s.wg, COROUTINES + 1);
    assert_int_equal(weft_go(cancel_root_halfway, &s), 0);
    for (int i = 0; i < COROUTINES; i++) {
        workers[i] = (ctx_worker){ &s, (uint64_t)i + 1 };
        assert_int_equal(weft_go(stress_coroutine, &workers[i]), 0);
    }
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++) {
        workers[COROUTINES + i] = (ctx_worker){ &s, (uint64_t)(COROUTINES + i) + 1 };
        assert_int_equal(pthread_create(&threads[i], NULL, stress_thread, &workers[COROUTINES + i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    weft_wg_wait(&s.wg);

    print_message("%lld contexts made\n", (long long)atomic_load(&s.created));
    assert_true(atomic_load(&s.created) == (int64_t)3 * s.workers * s.iterations);
    assert_ended(s.root, WEFT_ECANCELED);
    weft_ctx_release(s.root);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_background_todo_null, stop_runtime),
        cmocka_unit_test_teardown(test_null_parent, stop_runtime),
        cmocka_unit_test_teardown(test_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_cancel_tree, stop_runtime),
        cmocka_unit_test_teardown(test_cancel_idempotent, stop_runtime),
        cmocka_unit_test_teardown(test_child_deadline_is_earlier, stop_runtime),
        cmocka_unit_test_teardown(test_past_deadline_ends_at_once, stop_runtime),
        cmocka_unit_test_teardown(test_timeout_ends_on_time, stop_runtime),
        cmocka_unit_test_teardown(test_child_of_ended_parent, stop_runtime),
        cmocka_unit_test_teardown(test_values, stop_runtime),
        cmocka_unit_test_teardown(test_release_any_order, stop_runtime),
        cmocka_unit_test_teardown(test_sleep_ctx, stop_runtime),
        cmocka_unit_test_teardown(test_cancel_wakes_all_waiters, stop_runtime),
        cmocka_unit_test_teardown(test_err_implies_done_closed, stop_runtime),
        cmocka_unit_test_teardown(test_many_children, stop_runtime),
        cmocka_unit_test_teardown(test_concurrent_create_cancel_release, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
