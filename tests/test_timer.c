/*
 * Timers, tickers and weft_after: firing times, durations <= 0, stop and
 * reset with Go 1.23's rules (no stale value after either returns), tick
 * spacing and dropped ticks, release while pending or after the runtime
 * shut down, stop and reset racing the firing, and many timers at once.
 *
 * Some tests call weft_sleep to let a deadline pass and then check that
 * nothing arrived: the sleep is the measured interval, not a way to wait
 * for another party.
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

static void test_timers_need_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    assert_null(weft_timer_make(WEFT_MS(10)));
    assert_null(weft_ticker_make(WEFT_MS(10)));
    assert_null(weft_after(WEFT_MS(10)));

    assert_int_equal(weft_init(NULL), 0);
    weft_timer *t = weft_timer_make(WEFT_MS(10));
    assert_non_null(t);
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);

    assert_null(weft_timer_make(WEFT_MS(10)));
    assert_null(weft_ticker_make(WEFT_MS(10)));
    assert_null(weft_after(0));
}

static void test_ticker_rejects_bad_period(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    assert_null(weft_ticker_make(0));
    assert_null(weft_ticker_make(-1));
    assert_null(weft_ticker_make(INT64_MIN));
    assert_int_equal(weft_shutdown(), 0);
}

static void test_timer_fires_once(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int64_t start = weft_now();
    weft_timer *t = weft_timer_make(WEFT_MS(10));
    assert_non_null(t);
    weft_chan *ch = weft_timer_chan(t);
    assert_non_null(ch);
    assert_ptr_equal(weft_timer_chan(t), ch);
    assert_int_equal(weft_chan_cap(ch), 1);

    int64_t fired = 0;
    assert_int_equal(weft_chan_recv(ch, &fired), 0);
    int64_t end = weft_now();
    print_message("10 ms timer: received after %.3f ms\n", (end - start) / 1e6);
    assert_true(fired >= start + WEFT_MS(10));
    assert_true(fired <= end);
    assert_true(end - start < LATE);

    /* A one-shot timer fires once. */
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);
    assert_int_equal(weft_chan_try_recv(ch, &fired), WEFT_EAGAIN);
    assert_false(weft_timer_stop(t));
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_timer_nonpositive_duration(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int64_t durations[] = { 0, -1, -WEFT_SEC(5), INT64_MIN };
    for (size_t i = 0; i < sizeof durations / sizeof durations[0]; i++) {
        int64_t start = weft_now();
        weft_timer *t = weft_timer_make(durations[i]);
        assert_non_null(t);
        int64_t fired = 0;
        assert_int_equal(weft_chan_recv(weft_timer_chan(t), &fired), 0);
        assert_true(fired >= start);
        assert_true(weft_now() - start < LATE);
        weft_timer_release(t);
    }
    int64_t start = weft_now();
    weft_chan *after = weft_after(-WEFT_MS(1));
    assert_non_null(after);
    int64_t fired = 0;
    assert_int_equal(weft_chan_recv(after, &fired), 0);
    assert_true(fired >= start);
    weft_chan_release(after);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- stop ----------------------------------------------------------- */

static void test_timer_stop_before_fire(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_timer *t = weft_timer_make(WEFT_MS(30));
    assert_non_null(t);
    assert_true(weft_timer_stop(t));
    assert_false(weft_timer_stop(t));
    assert_int_equal(weft_sleep(WEFT_MS(60)), 0);
    int64_t fired = 0;
    assert_int_equal(weft_chan_try_recv(weft_timer_chan(t), &fired), WEFT_EAGAIN);
    assert_false(weft_timer_stop(t));
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_timer_stop_after_fire_discards(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_timer *t = weft_timer_make(WEFT_MS(1));
    assert_non_null(t);
    /* Past the deadline, the value is unreceived: it counts as pending. */
    assert_int_equal(weft_sleep(WEFT_MS(30)), 0);
    assert_true(weft_timer_stop(t));
    int64_t fired = 0;
    assert_int_equal(weft_chan_try_recv(weft_timer_chan(t), &fired), WEFT_EAGAIN);
    assert_false(weft_timer_stop(t));
    assert_int_equal(weft_sleep(WEFT_MS(10)), 0);
    assert_int_equal(weft_chan_try_recv(weft_timer_chan(t), &fired), WEFT_EAGAIN);
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_timer_stop_after_receive(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_timer *t = weft_timer_make(WEFT_MS(1));
    assert_non_null(t);
    int64_t fired = 0;
    assert_int_equal(weft_chan_recv(weft_timer_chan(t), &fired), 0);
    assert_false(weft_timer_stop(t));
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- reset ---------------------------------------------------------- */

/* Receive from the timer and check the value against the earliest
 * allowed firing time. */
static void expect_fire_after(weft_timer *t, int64_t earliest)
{
    int64_t fired = 0;
    assert_int_equal(weft_chan_recv(weft_timer_chan(t), &fired), 0);
    assert_true(fired >= earliest);
    assert_true(weft_now() - earliest < LATE);
}

static void test_timer_reset(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);

    /* Pending, far deadline: reset to a near one. */
    weft_timer *t = weft_timer_make(WEFT_SEC(3600));
    assert_non_null(t);
    int64_t before = weft_now();
    assert_true(weft_timer_reset(t, WEFT_MS(10)));
    expect_fire_after(t, before + WEFT_MS(10));

    /* Fired and received: not pending, and the new deadline applies. */
    before = weft_now();
    assert_false(weft_timer_reset(t, WEFT_MS(5)));
    expect_fire_after(t, before + WEFT_MS(5));

    /* Pending, near deadline: reset to a later one. */
    before = weft_now();
    assert_false(weft_timer_reset(t, WEFT_MS(3)));
    assert_true(weft_timer_reset(t, WEFT_MS(40)));
    expect_fire_after(t, before + WEFT_MS(40));

    /* Fired but unreceived: pending, and the old value is discarded. */
    assert_false(weft_timer_reset(t, WEFT_MS(1)));
    assert_int_equal(weft_sleep(WEFT_MS(30)), 0);
    before = weft_now();
    assert_true(weft_timer_reset(t, WEFT_MS(30)));
    expect_fire_after(t, before + WEFT_MS(30));

    /* Stopped: not pending, and reset arms it again. */
    assert_false(weft_timer_reset(t, WEFT_SEC(3600)));
    assert_true(weft_timer_stop(t));
    before = weft_now();
    assert_false(weft_timer_reset(t, WEFT_MS(5)));
    expect_fire_after(t, before + WEFT_MS(5));

    /* Reset to a duration <= 0 fires at once. */
    before = weft_now();
    assert_false(weft_timer_reset(t, 0));
    expect_fire_after(t, before);
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- tickers -------------------------------------------------------- */

static void test_ticker_spacing(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    enum { TICKS = 10 };
    int64_t period = WEFT_MS(5);
    int64_t start = weft_now();
    weft_timer *t = weft_ticker_make(period);
    assert_non_null(t);
    weft_chan *ch = weft_timer_chan(t);
    assert_int_equal(weft_chan_cap(ch), 1);
    int64_t ticks[TICKS];
    for (int i = 0; i < TICKS; i++)
        assert_int_equal(weft_chan_recv(ch, &ticks[i]), 0);
    int64_t elapsed = weft_now() - start;
    print_message("%d ticks of 5 ms: %.3f ms\n", TICKS, elapsed / 1e6);

    /* Tick k is due at start + k * period at the earliest. A slow receiver
     * may miss ticks, so later ones can be further apart. */
    assert_true(ticks[0] >= start + period);
    for (int i = 1; i < TICKS; i++) {
        assert_true(ticks[i] > ticks[i - 1]);
        assert_true(ticks[i] >= start + (i + 1) * period);
    }
    assert_true(elapsed >= TICKS * period);
    assert_true(elapsed < TICKS * period + LATE);

    /* A stopped ticker ticks no more. */
    assert_true(weft_timer_stop(t));
    assert_int_equal(weft_sleep(4 * period), 0);
    assert_int_equal(weft_chan_try_recv(ch, NULL), WEFT_EAGAIN);
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

/* A receiver slower than the ticker finds one tick waiting, not a queue of
 * every tick it missed. */
static void test_ticker_drops_ticks(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int64_t period = WEFT_MS(10);
    weft_timer *t = weft_ticker_make(period);
    assert_non_null(t);
    weft_chan *ch = weft_timer_chan(t);
    for (int round = 0; round < 3; round++) {
        /* About ten ticks come due during the sleep. */
        assert_int_equal(weft_sleep(10 * period + period / 2), 0);
        int drained = 0;
        int64_t tick;
        while (drained < 100 && weft_chan_try_recv(ch, &tick) == 0)
            drained++;
        /* One waiting tick, and at most one more that came due while this
         * loop ran. */
        assert_true(drained >= 1);
        assert_true(drained <= 2);
    }
    /* The ticker keeps going after the drops. */
    int64_t before = weft_now();
    int64_t tick = 0;
    assert_int_equal(weft_chan_recv(ch, &tick), 0);
    assert_true(weft_now() - before < period + LATE);
    weft_timer_release(t);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- weft_after ----------------------------------------------------- */

static void test_after(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int64_t start = weft_now();
    weft_chan *ch = weft_after(WEFT_MS(10));
    assert_non_null(ch);
    int64_t fired = 0;
    assert_int_equal(weft_chan_recv(ch, &fired), 0);
    assert_true(fired >= start + WEFT_MS(10));
    assert_true(weft_now() - start < LATE);
    /* Once only. */
    assert_int_equal(weft_sleep(WEFT_MS(15)), 0);
    assert_int_equal(weft_chan_try_recv(ch, &fired), WEFT_EAGAIN);
    weft_chan_release(ch);

    /* In a select: the earlier of two fires first, and a channel that
     * never gets a value loses to it. */
    weft_chan *never = weft_chan_make(sizeof(int64_t), 0);
    assert_non_null(never);
    start = weft_now();
    weft_chan *slow = weft_after(WEFT_SEC(3600));
    weft_chan *fast = weft_after(WEFT_MS(5));
    assert_non_null(slow);
    assert_non_null(fast);
    weft_case cases[] = {
        WEFT_RECV_CASE(never, &fired),
        WEFT_RECV_CASE(slow, &fired),
        WEFT_RECV_CASE(fast, &fired),
    };
    assert_int_equal(weft_select(cases, 3), 2);
    assert_true(cases[2].ok);
    assert_true(fired >= start + WEFT_MS(5));

    /* A select deadline earlier than the timer comes first, and the value
     * is still delivered afterwards. */
    weft_chan *later = weft_after(WEFT_MS(30));
    assert_non_null(later);
    weft_case later_case = WEFT_RECV_CASE(later, &fired);
    assert_int_equal(weft_select_until(&later_case, 1, weft_now() + WEFT_MS(5)), WEFT_ETIMEDOUT);
    assert_int_equal(weft_chan_recv(later, &fired), 0);

    /* Releasing an unfired one is fine. */
    weft_chan_release(later);
    weft_chan_release(slow);
    weft_chan_release(fast);
    weft_chan_release(never);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- release -------------------------------------------------------- */

static void test_timer_release_while_pending(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_timer *t = weft_timer_make(WEFT_MS(20));
    weft_timer *ticker = weft_ticker_make(WEFT_MS(5));
    assert_non_null(t);
    assert_non_null(ticker);
    weft_chan *ch = weft_chan_retain(weft_timer_chan(t));
    weft_chan *tick_ch = weft_chan_retain(weft_timer_chan(ticker));
    weft_timer_release(t);
    weft_timer_release(ticker);
    assert_int_equal(weft_sleep(WEFT_MS(50)), 0);
    assert_int_equal(weft_chan_try_recv(ch, NULL), WEFT_EAGAIN);
    assert_int_equal(weft_chan_try_recv(tick_ch, NULL), WEFT_EAGAIN);
    weft_chan_release(ch);
    weft_chan_release(tick_ch);

    /* Released with a value waiting: it is discarded too. */
    t = weft_timer_make(0);
    assert_non_null(t);
    ch = weft_chan_retain(weft_timer_chan(t));
    assert_int_equal(weft_sleep(WEFT_MS(5)), 0);
    weft_timer_release(t);
    assert_int_equal(weft_chan_try_recv(ch, NULL), WEFT_EAGAIN);
    weft_chan_release(ch);

    /* Many released around their firing time, without a retained channel:
     * the sanitizer builds check that no firing touches freed memory. */
    int n = SCALE(2000);
    for (int i = 0; i < n; i++) {
        weft_timer *quick = weft_timer_make(WEFT_US(i % 50));
        assert_non_null(quick);
        if (i % 4 == 0)
            weft_yield();
        weft_timer_release(quick);
    }
    assert_int_equal(weft_sleep(WEFT_MS(5)), 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* Timers that outlive the runtime can still be released, and then free
 * everything (the ASan build checks for leaks). */
static void test_timer_release_after_shutdown(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_timer *pending = weft_timer_make(WEFT_SEC(3600));
    weft_timer *fired = weft_timer_make(0);
    weft_timer *ticker = weft_ticker_make(WEFT_MS(1));
    weft_chan *after = weft_after(WEFT_SEC(3600));
    assert_non_null(pending);
    assert_non_null(fired);
    assert_non_null(ticker);
    assert_non_null(after);
    assert_int_equal(weft_sleep(WEFT_MS(5)), 0);
    assert_int_equal(weft_shutdown(), 0);

    weft_timer_release(pending);
    weft_timer_release(fired);
    weft_timer_release(ticker);
    weft_chan_release(after);
}

/* ---- races with the firing ------------------------------------------ */

/* With no receiver, stop and reset always find the timer pending:
 * either it has not fired, or its value is still in the channel. Either
 * way no value of the old setting may arrive later. */
static void test_stop_and_reset_racing_fire(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    int n = SCALE(20000);
    weft_timer **timers = calloc((size_t)n, sizeof *timers);
    assert_non_null(timers);
    int stop_false = 0, reset_false = 0, early_value = 0;
    for (int i = 0; i < n; i++) {
        timers[i] = weft_timer_make(WEFT_US(i % 50));
        assert_non_null(timers[i]);
        /* Land near the deadline: sometimes before, sometimes after. */
        int64_t until = weft_now() + WEFT_US(i % 47);
        while (weft_now() < until)
            weft_yield();
        if (i % 2 == 0) {
            stop_false += !weft_timer_stop(timers[i]);
        } else {
            reset_false += !weft_timer_reset(timers[i], WEFT_SEC(3600));
        }
        early_value += weft_chan_try_recv(weft_timer_chan(timers[i]), NULL) != WEFT_EAGAIN;
    }
    print_message("%d rounds: stop returned false %d times, reset %d times\n", n,
                  stop_false, reset_false);

    /* Every old deadline has passed by now. Nothing may arrive late. */
    assert_int_equal(weft_sleep(WEFT_MS(5)), 0);
    int late_value = 0;
    for (int i = 0; i < n; i++) {
        late_value += weft_chan_try_recv(weft_timer_chan(timers[i]), NULL) != WEFT_EAGAIN;
        weft_timer_release(timers[i]);
    }
    free(timers);
    assert_int_equal(stop_false, 0);
    assert_int_equal(reset_false, 0);
    assert_int_equal(early_value, 0);
    assert_int_equal(late_value, 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* A fire of an earlier setting may still be on its way when reset
 * returns. It is dropped, so a stop after the new setting's value was
 * received must report nothing pending. */
static void test_stop_after_reset_and_receive(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    int n = SCALE(20000);
    int stop_true = 0, recv_failed = 0;
    for (int i = 0; i < n; i++) {
        int64_t d = WEFT_US(i % 20);
        weft_timer *t = weft_timer_make(d);
        assert_non_null(t);
        int64_t until = weft_now() + d;
        while (weft_now() < until)
            weft_yield();
        weft_timer_reset(t, WEFT_US(i % 7));
        int64_t fired = 0;
        if (weft_chan_recv(weft_timer_chan(t), &fired) != 0)
            recv_failed++;
        stop_true += weft_timer_stop(t);
        weft_timer_release(t);
    }
    assert_int_equal(recv_failed, 0);
    assert_int_equal(stop_true, 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- many timers ---------------------------------------------------- */

static void test_many_pending_timers(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    int n = SCALE(100000);
    weft_timer **timers = calloc((size_t)n, sizeof *timers);
    assert_non_null(timers);
    int64_t start = weft_now();
    /* Deadlines in both orders, so the timer heap has to sort them. */
    for (int i = 0; i < n; i++) {
        int64_t d = WEFT_SEC(3600) + (i % 2 ? i : -i) * WEFT_US(1);
        timers[i] = weft_timer_make(d);
        assert_non_null(timers[i]);
    }
    int64_t made_at = weft_now();
    /* Stop them in an order unrelated to their deadlines: 7919 is a prime
     * that does not divide n, so k * 7919 mod n visits every index once. */
    int not_pending = 0;
    for (int k = 0; k < n; k++) {
        int i = (int)(((int64_t)k * 7919) % n);
        not_pending += !weft_timer_stop(timers[i]);
    }
    int stopped_twice = 0;
    for (int i = 0; i < n; i++)
        stopped_twice += weft_timer_stop(timers[i]);
    for (int i = 0; i < n; i++)
        weft_timer_release(timers[i]);
    print_message("%d timers: made in %.1f ms, stopped and released in %.1f ms\n", n,
                  (made_at - start) / 1e6, (weft_now() - made_at) / 1e6);
    assert_int_equal(not_pending, 0);
    assert_int_equal(stopped_twice, 0);
    free(timers);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct waiter_crowd {
    _Atomic int early;
    _Atomic int failed;
    _Atomic int next;
    weft_wg wg;
} waiter_crowd;

/* Wait on a timer or a weft_after channel of 1..20 ms. */
static void wait_for_own_timer(void *arg)
{
    waiter_crowd *c = arg;
    int i = atomic_fetch_add(&c->next, 1);
    int64_t d = WEFT_MS(1 + i % 20);
    int64_t start = weft_now();
    int64_t fired = 0;
    if (i % 2) {
        weft_timer *t = weft_timer_make(d);
        if (!t || weft_chan_recv(weft_timer_chan(t), &fired) != 0)
            atomic_fetch_add(&c->failed, 1);
        if (t)
            weft_timer_release(t);
    } else {
        weft_chan *ch = weft_after(d);
        if (!ch || weft_chan_recv(ch, &fired) != 0)
            atomic_fetch_add(&c->failed, 1);
        if (ch)
            weft_chan_release(ch);
    }
    if (fired < start + d)
        atomic_fetch_add(&c->early, 1);
    weft_wg_done(&c->wg);
}

static void test_many_timers_fire(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    waiter_crowd c = {0};
    int n = SCALE(5000);
    weft_wg_add(&c.wg, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(wait_for_own_timer, &c), 0);
    weft_wg_wait(&c.wg);
    assert_int_equal(atomic_load(&c.failed), 0);
    assert_int_equal(atomic_load(&c.early), 0);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct sleep_crowd {
    weft_wg wg;
    _Atomic int failed;
    _Atomic int early;
} sleep_crowd;

static void sleep_repeatedly(void *arg)
{
    sleep_crowd *c = arg;
    for (int i = 0; i < 20; i++) {
        int64_t d = WEFT_US(50 + (int64_t)((weft_id() + (uint64_t)i) % 7) * 100);
        int64_t start = weft_now();
        if (weft_sleep(d) != 0)
            atomic_fetch_add(&c->failed, 1);
        else if (weft_now() < start + d)
            atomic_fetch_add(&c->early, 1);
    }
    weft_wg_done(&c->wg);
}

/* Many coroutines sleep again and again on 2 Ps. The Ps fire the timers
 * themselves, between switches and at their idle deadline, while parking
 * coroutines hold the heap's lock: a lock taken twice hangs, and the test
 * timeout turns that into a failure. */
static void test_sleep_crowd_repeats(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    sleep_crowd c = {0};
    int n = SCALE(10000);
    weft_wg_add(&c.wg, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(sleep_repeatedly, &c), 0);
    weft_wg_wait(&c.wg);
    assert_int_equal(atomic_load(&c.failed), 0);
    assert_int_equal(atomic_load(&c.early), 0);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- plain threads -------------------------------------------------- */

static void *thread_waits_for_timer(void *arg)
{
    int *bad = arg;
    for (int i = 0; i < 20; i++) {
        int64_t start = weft_now();
        weft_timer *t = weft_timer_make(WEFT_MS(1 + i % 3));
        if (!t) {
            (*bad)++;
            continue;
        }
        int64_t fired = 0;
        if (weft_chan_recv(weft_timer_chan(t), &fired) != 0 || fired < start + WEFT_MS(1 + i % 3))
            (*bad)++;
        weft_timer_release(t);
    }
    return NULL;
}

static void test_timers_from_plain_threads(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    pthread_t tids[4];
    int bad[4] = {0};
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&tids[i], NULL, thread_waits_for_timer, &bad[i]), 0);
    for (int i = 0; i < 4; i++) {
        pthread_join(tids[i], NULL);
        assert_int_equal(bad[i], 0);
    }
    assert_int_equal(weft_shutdown(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_timers_need_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_ticker_rejects_bad_period, stop_runtime),
        cmocka_unit_test_teardown(test_timer_fires_once, stop_runtime),
        cmocka_unit_test_teardown(test_timer_nonpositive_duration, stop_runtime),
        cmocka_unit_test_teardown(test_timer_stop_before_fire, stop_runtime),
        cmocka_unit_test_teardown(test_timer_stop_after_fire_discards, stop_runtime),
        cmocka_unit_test_teardown(test_timer_stop_after_receive, stop_runtime),
        cmocka_unit_test_teardown(test_timer_reset, stop_runtime),
        cmocka_unit_test_teardown(test_ticker_spacing, stop_runtime),
        cmocka_unit_test_teardown(test_ticker_drops_ticks, stop_runtime),
        cmocka_unit_test_teardown(test_after, stop_runtime),
        cmocka_unit_test_teardown(test_timer_release_while_pending, stop_runtime),
        cmocka_unit_test_teardown(test_timer_release_after_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_stop_and_reset_racing_fire, stop_runtime),
        cmocka_unit_test_teardown(test_stop_after_reset_and_receive, stop_runtime),
        cmocka_unit_test_teardown(test_many_pending_timers, stop_runtime),
        cmocka_unit_test_teardown(test_many_timers_fire, stop_runtime),
        cmocka_unit_test_teardown(test_sleep_crowd_repeats, stop_runtime),
        cmocka_unit_test_teardown(test_timers_from_plain_threads, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
