/*
 * Select: argument checks, n == 0, NULL and closed channels, the same
 * channel in several cases, uniform choice among ready cases, deadlines
 * (also racing a handoff, and firing while the select parks), selects
 * racing each other and racing close across Ps, selects from plain
 * threads, and releasing a channel right after waking a select.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

static weft_chan *make_closed(size_t elem_size)
{
    weft_chan *ch = weft_chan_make(elem_size, 0);
    assert_non_null(ch);
    assert_int_equal(weft_chan_close(ch), 0);
    return ch;
}

/* ---- arguments and empty selects ------------------------------------ */

static void test_select_null_cases_array(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    assert_int_equal(weft_select(NULL, 1), WEFT_EINVAL);
    assert_int_equal(weft_try_select(NULL, 2), WEFT_EINVAL);
    assert_int_equal(weft_select_until(NULL, 3, weft_now() + WEFT_SEC(10)), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct blocker {
    _Atomic int started;
    _Atomic int returned;
} blocker;

static void select_nothing(void *arg)
{
    blocker *b = arg;
    atomic_fetch_add(&b->started, 1);
    weft_select(NULL, 0);
    atomic_fetch_add(&b->returned, 1);
}

static void select_only_null_channels(void *arg)
{
    blocker *b = arg;
    long v = 0;
    weft_case cases[2] = { WEFT_RECV_CASE(NULL, &v), WEFT_SEND_CASE(NULL, &v) };
    atomic_fetch_add(&b->started, 1);
    weft_select(cases, 2);
    atomic_fetch_add(&b->returned, 1);
}

static void test_select_zero_cases(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_case unused = WEFT_RECV_CASE(NULL, NULL);
    assert_int_equal(weft_try_select(NULL, 0), WEFT_EAGAIN);
    assert_int_equal(weft_try_select(&unused, 0), WEFT_EAGAIN);
    assert_int_equal(weft_select_until(NULL, 0, weft_now() - WEFT_SEC(1)), WEFT_ETIMEDOUT);

    int64_t start = weft_now();
    assert_int_equal(weft_select_until(NULL, 0, start + WEFT_MS(20)), WEFT_ETIMEDOUT);
    int64_t elapsed = weft_now() - start;
    assert_true(elapsed >= WEFT_MS(20));
    assert_true(elapsed < WEFT_SEC(2));

    /* weft_select with no cases, or only NULL channels, never returns, and
     * weft_shutdown abandons the blocked coroutines. */
    blocker b = {0};
    assert_int_equal(weft_go(select_nothing, &b), 0);
    assert_int_equal(weft_go(select_only_null_channels, &b), 0);
    assert_true(wait_for_count(&b.started, 2, WEFT_SEC(10)));
    start = weft_now();
    assert_int_equal(weft_select_until(&unused, 1, start + WEFT_MS(30)), WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(30));
    assert_int_equal(atomic_load(&b.returned), 0);
    assert_int_equal(weft_num_coroutines(), 2);
    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&b.returned), 0);
}

/* ---- readiness ------------------------------------------------------ */

static void test_try_select_nothing_ready(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *empty = weft_chan_make(sizeof(long), 2);
    weft_chan *full = weft_chan_make(sizeof(long), 1);
    weft_chan *unbuffered = weft_chan_make(sizeof(long), 0);
    assert_non_null(empty);
    assert_non_null(full);
    assert_non_null(unbuffered);
    long one = 1;
    assert_int_equal(weft_chan_send(full, &one), 0);

    long in = 5, out = 77;
    weft_case cases[] = {
        WEFT_RECV_CASE(empty, &out),
        WEFT_SEND_CASE(full, &in),
        WEFT_SEND_CASE(unbuffered, &in),
        WEFT_RECV_CASE(unbuffered, &out),
        WEFT_RECV_CASE(NULL, &out),
        WEFT_SEND_CASE(NULL, &in),
    };
    size_t n = sizeof cases / sizeof cases[0];
    assert_int_equal(weft_try_select(cases, n), WEFT_EAGAIN);
    assert_int_equal(out, 77);
    assert_int_equal(weft_chan_len(full), 1);
    assert_int_equal(weft_chan_len(empty), 0);
    int64_t start = weft_now();
    assert_int_equal(weft_select_until(cases, n, start + WEFT_MS(10)), WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(10));
    assert_int_equal(out, 77);

    /* One case becomes ready: exactly that one fires. */
    long two = 2;
    assert_int_equal(weft_chan_send(empty, &two), 0);
    assert_int_equal(weft_try_select(cases, n), 0);
    assert_true(cases[0].ok);
    assert_int_equal(out, 2);
    assert_int_equal(weft_try_select(cases, n), WEFT_EAGAIN);

    weft_chan_release(empty);
    weft_chan_release(full);
    weft_chan_release(unbuffered);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_select_null_channel_never_ready(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(sizeof(long), 1);
    assert_non_null(ch);
    long in = 0, out = 0;
    weft_case cases[] = {
        WEFT_RECV_CASE(NULL, &out),
        WEFT_SEND_CASE(ch, &in),
        WEFT_SEND_CASE(NULL, &in),
    };
    int wrong = 0;
    for (long i = 0; i < 200; i++) {
        in = i;
        int idx = i % 2 ? weft_select(cases, 3) : weft_try_select(cases, 3);
        wrong += idx != 1 || !cases[1].ok;
        assert_int_equal(weft_chan_recv(ch, &out), 0);
        wrong += out != i;
    }
    assert_int_equal(wrong, 0);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct elem24 {
    unsigned char bytes[24];
} elem24;

static void test_select_closed_recv_case(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *open_empty = weft_chan_make(sizeof(elem24), 0);
    assert_non_null(open_empty);
    weft_chan *closed = weft_chan_make(sizeof(elem24), 2);
    assert_non_null(closed);
    elem24 value, out;
    memset(&value, 0x33, sizeof value);
    assert_int_equal(weft_chan_send(closed, &value), 0);
    assert_int_equal(weft_chan_close(closed), 0);

    weft_case cases[] = {
        WEFT_RECV_CASE(open_empty, &out),
        WEFT_RECV_CASE(closed, &out),
    };
    /* The buffered value first, with ok true. */
    memset(&out, 0xAB, sizeof out);
    cases[1].ok = false;
    assert_int_equal(weft_select(cases, 2), 1);
    assert_true(cases[1].ok);
    assert_true(all_bytes_equal(&out, sizeof out, 0x33));

    /* Then ready for ever, with ok false and the element zeroed, from
     * every form of select. */
    for (int i = 0; i < 3; i++) {
        memset(&out, 0xAB, sizeof out);
        cases[1].ok = true;
        int idx;
        if (i == 0)
            idx = weft_select(cases, 2);
        else if (i == 1)
            idx = weft_try_select(cases, 2);
        else
            idx = weft_select_until(cases, 2, weft_now() + WEFT_SEC(10));
        assert_int_equal(idx, 1);
        assert_false(cases[1].ok);
        assert_true(all_bytes_equal(&out, sizeof out, 0));
    }

    /* A NULL elem and a zero-size channel work the same. */
    cases[1].elem = NULL;
    assert_int_equal(weft_select(cases, 2), 1);
    assert_false(cases[1].ok);
    weft_chan *signal = make_closed(0);
    weft_case signal_case = WEFT_RECV_CASE(signal, NULL);
    signal_case.ok = true;
    assert_int_equal(weft_select(&signal_case, 1), 0);
    assert_false(signal_case.ok);

    weft_chan_release(signal);
    weft_chan_release(closed);
    weft_chan_release(open_empty);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_select_send_on_closed(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *closed = weft_chan_make(sizeof(long), 4);
    assert_non_null(closed);
    assert_int_equal(weft_chan_close(closed), 0);
    weft_chan *blocked = weft_chan_make(sizeof(long), 0);
    assert_non_null(blocked);

    long in = 42, out = 0;
    weft_case cases[] = {
        WEFT_RECV_CASE(blocked, &out),
        WEFT_SEND_CASE(closed, &in),
    };
    for (int i = 0; i < 3; i++) {
        cases[1].ok = true;
        int idx;
        if (i == 0)
            idx = weft_select(cases, 2);
        else if (i == 1)
            idx = weft_try_select(cases, 2);
        else
            idx = weft_select_until(cases, 2, weft_now() + WEFT_SEC(10));
        assert_int_equal(idx, 1);
        assert_false(cases[1].ok);
    }
    /* Nothing reached the buffer. */
    assert_int_equal(weft_chan_len(closed), 0);
    assert_int_equal(weft_chan_recv(closed, &out), WEFT_ECLOSED);
    assert_int_equal(out, 0);

    weft_chan_release(closed);
    weft_chan_release(blocked);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- the same channel in several cases ------------------------------ */

typedef struct self_select {
    weft_chan *ch;
    long in;
    long out;
    int index;
    bool ok;
    weft_wg wg;
} self_select;

static void select_send_and_recv_same(void *arg)
{
    self_select *s = arg;
    weft_case cases[] = {
        WEFT_SEND_CASE(s->ch, &s->in),
        WEFT_RECV_CASE(s->ch, &s->out),
    };
    s->index = weft_select(cases, 2);
    s->ok = cases[s->index < 0 ? 0 : s->index].ok;
    weft_wg_done(&s->wg);
}

static void test_select_same_channel_twice(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);

    /* Two recv cases on one buffered value: one fires, uniformly. */
    weft_chan *ch = weft_chan_make(sizeof(long), 1);
    assert_non_null(ch);
    long a = -1, b = -1;
    weft_case two_recv[] = { WEFT_RECV_CASE(ch, &a), WEFT_RECV_CASE(ch, &b) };
    int chosen[2] = {0};
    for (long i = 0; i < 200; i++) {
        assert_int_equal(weft_chan_send(ch, &i), 0);
        a = b = -1;
        int idx = weft_try_select(two_recv, 2);
        assert_true(idx == 0 || idx == 1);
        chosen[idx]++;
        assert_int_equal(idx == 0 ? a : b, i);
        assert_int_equal(idx == 0 ? b : a, -1);
        assert_int_equal(weft_try_select(two_recv, 2), WEFT_EAGAIN);
    }
    assert_true(chosen[0] > 0);
    assert_true(chosen[1] > 0);

    /* Send and recv on one buffered channel: room makes only the send
     * ready, a value only the recv. */
    long in = 9, out = 0;
    weft_case both[] = { WEFT_SEND_CASE(ch, &in), WEFT_RECV_CASE(ch, &out) };
    assert_int_equal(weft_try_select(both, 2), 0);
    assert_int_equal(weft_chan_len(ch), 1);
    assert_int_equal(weft_try_select(both, 2), 1);
    assert_int_equal(out, 9);
    weft_chan_release(ch);

    /* On an unbuffered channel a select cannot pair with itself. */
    weft_chan *unbuffered = weft_chan_make(sizeof(long), 0);
    assert_non_null(unbuffered);
    weft_case self[] = { WEFT_SEND_CASE(unbuffered, &in), WEFT_RECV_CASE(unbuffered, &out) };
    assert_int_equal(weft_try_select(self, 2), WEFT_EAGAIN);
    int64_t start = weft_now();
    assert_int_equal(weft_select_until(self, 2, start + WEFT_MS(20)), WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(20));

    /* A blocked select with both directions pairs with a sender, then
     * with a receiver. */
    self_select s = { .ch = unbuffered, .in = 100 };
    weft_wg_add(&s.wg, 1);
    assert_int_equal(weft_go(select_send_and_recv_same, &s), 0);
    long v = 55;
    assert_int_equal(weft_chan_send(unbuffered, &v), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(s.index, 1);
    assert_true(s.ok);
    assert_int_equal(s.out, 55);

    s.out = 0;
    weft_wg_add(&s.wg, 1);
    assert_int_equal(weft_go(select_send_and_recv_same, &s), 0);
    v = 0;
    assert_int_equal(weft_chan_recv(unbuffered, &v), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(s.index, 0);
    assert_true(s.ok);
    assert_int_equal(v, 100);
    assert_int_equal(s.out, 0);

    weft_chan_release(unbuffered);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- uniform choice ------------------------------------------------- */

static void test_select_fairness(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    enum { ROUNDS = 20000 };

    /* Two closed channels: both cases always ready. */
    weft_chan *c0 = make_closed(sizeof(long));
    weft_chan *c1 = make_closed(sizeof(long));
    weft_case closed_cases[] = { WEFT_RECV_CASE(c0, NULL), WEFT_RECV_CASE(c1, NULL) };
    int count[3] = {0};
    for (int i = 0; i < ROUNDS; i++) {
        int idx = weft_select(closed_cases, 2);
        assert_true(idx == 0 || idx == 1);
        count[idx]++;
    }
    print_message("closed channels: %d / %d\n", count[0], count[1]);
    assert_true(count[0] >= ROUNDS * 45 / 100 && count[0] <= ROUNDS * 55 / 100);
    assert_true(count[1] >= ROUNDS * 45 / 100 && count[1] <= ROUNDS * 55 / 100);

    /* Two buffered channels, each refilled after it fires, and a NULL
     * case that must never be chosen. */
    weft_chan *b0 = weft_chan_make(sizeof(long), 1);
    weft_chan *b1 = weft_chan_make(sizeof(long), 1);
    assert_non_null(b0);
    assert_non_null(b1);
    long zero = 0, one = 1, out = -1;
    assert_int_equal(weft_chan_send(b0, &zero), 0);
    assert_int_equal(weft_chan_send(b1, &one), 0);
    weft_case value_cases[] = {
        WEFT_RECV_CASE(b0, &out),
        WEFT_RECV_CASE(NULL, &out),
        WEFT_RECV_CASE(b1, &out),
    };
    memset(count, 0, sizeof count);
    int wrong = 0;
    for (int i = 0; i < ROUNDS; i++) {
        int idx = i % 2 ? weft_select(value_cases, 3) : weft_try_select(value_cases, 3);
        assert_true(idx >= 0 && idx < 3);
        count[idx]++;
        wrong += out != (idx == 0 ? 0 : 1);
        assert_int_equal(weft_chan_send(idx == 0 ? b0 : b1, idx == 0 ? &zero : &one), 0);
    }
    print_message("buffered channels: %d / %d / %d\n", count[0], count[1], count[2]);
    assert_int_equal(wrong, 0);
    assert_int_equal(count[1], 0);
    assert_true(count[0] >= ROUNDS * 45 / 100 && count[0] <= ROUNDS * 55 / 100);
    assert_true(count[2] >= ROUNDS * 45 / 100 && count[2] <= ROUNDS * 55 / 100);

    /* Three ready cases, one of them a send: about a third each. */
    weft_chan *room = weft_chan_make(sizeof(long), 1);
    assert_non_null(room);
    weft_case three[] = {
        WEFT_RECV_CASE(c0, NULL),
        WEFT_SEND_CASE(room, &one),
        WEFT_RECV_CASE(c1, NULL),
    };
    memset(count, 0, sizeof count);
    for (int i = 0; i < 3 * ROUNDS / 2; i++) {
        int idx = weft_select_until(three, 3, weft_now() + WEFT_SEC(10));
        assert_true(idx >= 0 && idx < 3);
        count[idx]++;
        if (idx == 1)
            assert_int_equal(weft_chan_recv(room, NULL), 0);
    }
    print_message("three cases: %d / %d / %d\n", count[0], count[1], count[2]);
    for (int i = 0; i < 3; i++)
        assert_true(count[i] >= ROUNDS * 15 * 31 / 100 / 10 && count[i] <= ROUNDS * 15 * 36 / 100 / 10);

    weft_chan_release(room);
    weft_chan_release(b0);
    weft_chan_release(b1);
    weft_chan_release(c0);
    weft_chan_release(c1);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- deadlines ------------------------------------------------------ */

static void test_select_ready_beats_passed_deadline(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(sizeof(long), 1);
    assert_non_null(ch);
    weft_chan *closed = make_closed(sizeof(long));
    long v = 3, out = 0;
    int64_t deadlines[] = { weft_now() - WEFT_SEC(1), 0, INT64_MIN, weft_now() };
    int wrong = 0;
    for (int i = 0; i < 1000; i++) {
        int64_t deadline = deadlines[i % 4];
        assert_int_equal(weft_chan_send(ch, &v), 0);
        weft_case ready = WEFT_RECV_CASE(ch, &out);
        wrong += weft_select_until(&ready, 1, deadline) != 0;
        weft_case send = WEFT_SEND_CASE(ch, &v);
        wrong += weft_select_until(&send, 1, deadline) != 0;
        assert_int_equal(weft_chan_recv(ch, NULL), 0);
        weft_case closed_case = WEFT_RECV_CASE(closed, &out);
        wrong += weft_select_until(&closed_case, 1, deadline) != 0;
    }
    assert_int_equal(wrong, 0);
    weft_case empty = WEFT_RECV_CASE(ch, &out);
    assert_int_equal(weft_select_until(&empty, 1, weft_now() - WEFT_SEC(1)), WEFT_ETIMEDOUT);
    weft_chan_release(closed);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct timeout_probe {
    weft_chan *ch;
    int64_t timeout;
    int result;
    int64_t elapsed;
    weft_wg wg;
} timeout_probe;

static void probe_select_until(timeout_probe *p)
{
    long out;
    weft_case c = WEFT_RECV_CASE(p->ch, &out);
    int64_t start = weft_now();
    p->result = weft_select_until(&c, 1, start + p->timeout);
    p->elapsed = weft_now() - start;
}

static void probe_in_coroutine(void *arg)
{
    timeout_probe *p = arg;
    probe_select_until(p);
    weft_wg_done(&p->wg);
}

static void test_select_until_times_out(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_chan *ch = weft_chan_make(sizeof(long), 0);
    assert_non_null(ch);

    /* From this plain thread. */
    timeout_probe p = { .ch = ch, .timeout = WEFT_MS(20) };
    probe_select_until(&p);
    print_message("plain thread: 20 ms deadline returned after %.3f ms\n", p.elapsed / 1e6);
    assert_int_equal(p.result, WEFT_ETIMEDOUT);
    assert_true(p.elapsed >= WEFT_MS(20));
    assert_true(p.elapsed < WEFT_SEC(2));

    /* From coroutines, several at once with different deadlines. */
    timeout_probe probes[8];
    for (int i = 0; i < 8; i++) {
        probes[i] = (timeout_probe){ .ch = ch, .timeout = WEFT_MS(5) * (i + 1) };
        weft_wg_add(&probes[i].wg, 1);
        assert_int_equal(weft_go(probe_in_coroutine, &probes[i]), 0);
    }
    for (int i = 0; i < 8; i++) {
        weft_wg_wait(&probes[i].wg);
        assert_int_equal(probes[i].result, WEFT_ETIMEDOUT);
        assert_true(probes[i].elapsed >= probes[i].timeout);
        assert_true(probes[i].elapsed < probes[i].timeout + WEFT_SEC(2));
    }
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- blocking selects woken by the other side ----------------------- */

typedef struct waker {
    weft_chan *a;
    weft_chan *b;
    int64_t deadline; /* 0: weft_select */
    long in;
    long out;
    int index;
    bool ok;
    weft_wg wg;
} waker;

static void select_recv_a_or_b(void *arg)
{
    waker *w = arg;
    weft_case cases[] = { WEFT_RECV_CASE(w->a, &w->out), WEFT_RECV_CASE(w->b, &w->out) };
    if (w->deadline)
        w->index = weft_select_until(cases, 2, w->deadline);
    else
        w->index = weft_select(cases, 2);
    w->ok = w->index >= 0 && cases[w->index].ok;
    weft_wg_done(&w->wg);
}

static void select_send_a_or_b(void *arg)
{
    waker *w = arg;
    weft_case cases[] = { WEFT_SEND_CASE(w->a, &w->in), WEFT_SEND_CASE(w->b, &w->in) };
    if (w->deadline)
        w->index = weft_select_until(cases, 2, w->deadline);
    else
        w->index = weft_select(cases, 2);
    w->ok = w->index >= 0 && cases[w->index].ok;
    weft_wg_done(&w->wg);
}

static void test_blocked_select_is_woken(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    for (int timed = 0; timed < 2; timed++) {
        weft_chan *a = weft_chan_make(sizeof(long), 0);
        weft_chan *b = weft_chan_make(sizeof(long), 0);
        assert_non_null(a);
        assert_non_null(b);
        int64_t deadline = timed ? weft_now() + WEFT_SEC(60) : 0;

        /* By a send. */
        waker w = { .a = a, .b = b, .deadline = deadline };
        weft_wg_add(&w.wg, 1);
        assert_int_equal(weft_go(select_recv_a_or_b, &w), 0);
        long v = 17;
        assert_int_equal(weft_chan_send(b, &v), 0);
        weft_wg_wait(&w.wg);
        assert_int_equal(w.index, 1);
        assert_true(w.ok);
        assert_int_equal(w.out, 17);

        /* By a receive. */
        w = (waker){ .a = a, .b = b, .deadline = deadline, .in = 23 };
        weft_wg_add(&w.wg, 1);
        assert_int_equal(weft_go(select_send_a_or_b, &w), 0);
        v = 0;
        assert_int_equal(weft_chan_recv(a, &v), 0);
        weft_wg_wait(&w.wg);
        assert_int_equal(w.index, 0);
        assert_true(w.ok);
        assert_int_equal(v, 23);

        /* By a close, for both directions. */
        w = (waker){ .a = a, .b = b, .deadline = deadline, .out = 99 };
        waker s = { .a = a, .b = b, .deadline = deadline, .in = 5 };
        weft_wg_add(&w.wg, 1);
        weft_wg_add(&s.wg, 1);
        assert_int_equal(weft_go(select_recv_a_or_b, &w), 0);
        assert_int_equal(weft_go(select_send_a_or_b, &s), 0);
        /* Each could pair with the other on a or b first: at most one
         * value crosses before the close. */
        assert_int_equal(weft_chan_close(b), 0);
        weft_wg_wait(&w.wg);
        weft_wg_wait(&s.wg);
        if (w.ok) {
            assert_true(s.ok);
            assert_int_equal(w.index, s.index);
            assert_int_equal(w.out, 5);
        } else {
            assert_int_equal(w.index, 1);
            assert_int_equal(w.out, 0);
            assert_false(s.ok);
            assert_int_equal(s.index, 1);
        }
        weft_chan_release(a);
        weft_chan_release(b);
    }
    assert_int_equal(weft_shutdown(), 0);
}

/* Many channels in one select: the case that fires is the one whose
 * channel got the value. Run with a few cases and with a few hundred. */
enum { MAX_WIDTH = 300 };

typedef struct wide_select {
    weft_chan *chans[MAX_WIDTH];
    int width;
    weft_chan *ack; /* one signal per select, so one channel is ready at a time */
    long rounds;
    long wrong;
    weft_wg wg;
} wide_select;

static void select_wide(void *arg)
{
    wide_select *w = arg;
    long out;
    weft_case cases[MAX_WIDTH];
    for (int i = 0; i < w->width; i++)
        cases[i] = WEFT_RECV_CASE(w->chans[i], &out);
    for (long r = 0; r < w->rounds; r++) {
        out = -1;
        int idx = weft_select(cases, (size_t)w->width);
        if (idx < 0 || out != r || idx != (int)((r * 7) % w->width) || !cases[idx].ok)
            w->wrong++;
        CHECK(weft_chan_send(w->ack, NULL) == 0);
    }
    weft_wg_done(&w->wg);
}

static void run_wide_select(int width, long rounds)
{
    wide_select w = { .width = width, .rounds = rounds };
    for (int i = 0; i < width; i++) {
        w.chans[i] = weft_chan_make(sizeof(long), (size_t)(i % 2));
        assert_non_null(w.chans[i]);
    }
    w.ack = weft_chan_make(0, 0);
    assert_non_null(w.ack);
    weft_wg_add(&w.wg, 1);
    assert_int_equal(weft_go(select_wide, &w), 0);
    for (long r = 0; r < rounds; r++) {
        assert_int_equal(weft_chan_send(w.chans[(r * 7) % width], &r), 0);
        assert_int_equal(weft_chan_recv(w.ack, NULL), 0);
    }
    weft_wg_wait(&w.wg);
    assert_int_equal(w.wrong, 0);
    weft_chan_release(w.ack);
    for (int i = 0; i < width; i++)
        weft_chan_release(w.chans[i]);
}

static void test_select_many_channels(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    run_wide_select(10, SCALE(5000));
    run_wide_select(MAX_WIDTH, SCALE(2000));
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- races ---------------------------------------------------------- */

enum { RACERS = 3 };

typedef enum outcome_kind { SENT, NOT_SENT, RECEIVED, SAW_CLOSE, BROKEN } outcome_kind;

typedef struct outcome {
    outcome_kind kind;
    long value;
} outcome;

typedef struct racer {
    weft_chan *ch;
    weft_chan *quit;    /* may be NULL */
    weft_chan *results; /* gets one outcome per racer */
    long value;         /* what a sending racer offers */
    bool timed;
} racer;

/* Select on ch (and quit when there is one) and report what happened. The
 * outcome is sent last: the round's owner frees everything after taking
 * every outcome. */
static void race_select(racer *r, weft_dir dir)
{
    long v = dir == WEFT_SEND ? r->value : -1;
    weft_case cases[2] = {
        { .chan = r->ch, .dir = dir, .elem = &v },
        WEFT_RECV_CASE(r->quit, NULL),
    };
    int idx = r->timed ? weft_select_until(cases, 2, weft_now() + WEFT_SEC(60))
                       : weft_select(cases, 2);
    outcome o = { .kind = BROKEN, .value = v };
    if (idx == 0 && dir == WEFT_SEND)
        o.kind = cases[0].ok ? SENT : NOT_SENT;
    else if (idx == 0)
        o.kind = cases[0].ok ? RECEIVED : SAW_CLOSE;
    else if (idx == 1 && !cases[1].ok)
        o.kind = dir == WEFT_SEND ? NOT_SENT : SAW_CLOSE;
    if (o.kind == SAW_CLOSE && idx == 0 && v != 0)
        o.kind = BROKEN; /* a closed channel's recv zeroes the element */
    CHECK(weft_chan_send(r->results, &o) == 0);
}

static void race_sender(void *arg)
{
    race_select(arg, WEFT_SEND);
}

static void race_receiver(void *arg)
{
    race_select(arg, WEFT_RECV);
}

/* Take n outcomes from results into out. */
static void collect(weft_chan *results, outcome *out, int n)
{
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_chan_recv(results, &out[i]), 0);
}

/* RACERS selects wait for one value, and exactly one gets it. */
static void test_selects_race_for_one_value(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    int rounds = SCALE(2000);
    for (int round = 0; round < rounds; round++) {
        weft_chan *ch = weft_chan_make(sizeof(long), 0);
        weft_chan *quit = weft_chan_make(0, 0);
        weft_chan *results = weft_chan_make(sizeof(outcome), RACERS);
        assert_non_null(ch);
        assert_non_null(quit);
        assert_non_null(results);
        racer racers[RACERS];
        for (int i = 0; i < RACERS; i++) {
            racers[i] = (racer){ .ch = ch, .quit = quit, .results = results,
                                 .timed = (round + i) % 2 };
            assert_int_equal(weft_go(race_receiver, &racers[i]), 0);
        }
        if (round % 3 == 0)
            weft_yield();
        long v = round + 1;
        assert_int_equal(weft_chan_send(ch, &v), 0);
        assert_int_equal(weft_chan_close(quit), 0);

        outcome got[RACERS];
        collect(results, got, RACERS);
        int winners = 0;
        for (int i = 0; i < RACERS; i++) {
            if (got[i].kind == RECEIVED) {
                winners++;
                assert_int_equal(got[i].value, round + 1);
            } else {
                assert_int_equal(got[i].kind, SAW_CLOSE);
            }
        }
        assert_int_equal(winners, 1);
        weft_chan_release(results);
        weft_chan_release(quit);
        weft_chan_release(ch);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* RACERS selects offer a value and one receive takes it: exactly one
 * select reports it sent, and it is the value received. */
static void test_selects_race_to_send(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    int rounds = SCALE(2000);
    for (int round = 0; round < rounds; round++) {
        weft_chan *ch = weft_chan_make(sizeof(long), 0);
        weft_chan *quit = weft_chan_make(0, 0);
        weft_chan *results = weft_chan_make(sizeof(outcome), RACERS);
        assert_non_null(ch);
        assert_non_null(quit);
        assert_non_null(results);
        racer racers[RACERS];
        for (int i = 0; i < RACERS; i++) {
            racers[i] = (racer){ .ch = ch, .quit = quit, .results = results,
                                 .value = round * 10 + i + 1, .timed = (round + i) % 2 };
            assert_int_equal(weft_go(race_sender, &racers[i]), 0);
        }
        if (round % 3 == 0)
            weft_yield();
        long v = -1;
        assert_int_equal(weft_chan_recv(ch, &v), 0);
        assert_int_equal(weft_chan_close(quit), 0);

        outcome got[RACERS];
        collect(results, got, RACERS);
        int senders = 0;
        for (int i = 0; i < RACERS; i++) {
            if (got[i].kind == SENT) {
                senders++;
                assert_int_equal(got[i].value, v);
            } else {
                assert_int_equal(got[i].kind, NOT_SENT);
            }
        }
        assert_int_equal(senders, 1);
        assert_true(v > round * 10 && v <= round * 10 + RACERS);
        weft_chan_release(results);
        weft_chan_release(quit);
        weft_chan_release(ch);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* Two sending and two receiving selects on one channel while it closes:
 * every value that a send reports as sent is received exactly once, by a
 * select or from the buffer after the close, and nothing else is. */
static void test_selects_race_close(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    int rounds = SCALE(2000);
    long total_sent = 0, total_closed = 0;
    for (int round = 0; round < rounds; round++) {
        weft_chan *ch = weft_chan_make(sizeof(long), (size_t)(round % 2));
        weft_chan *results = weft_chan_make(sizeof(outcome), 4);
        assert_non_null(ch);
        assert_non_null(results);
        racer racers[4];
        for (int i = 0; i < 4; i++) {
            racers[i] = (racer){ .ch = ch, .results = results,
                                 .value = round * 10 + i + 1, .timed = (round / 2 + i) % 2 };
            assert_int_equal(weft_go(i < 2 ? race_sender : race_receiver, &racers[i]), 0);
        }
        for (int k = 0; k < round % 4; k++)
            weft_yield();
        assert_int_equal(weft_chan_close(ch), 0);

        outcome got[4];
        collect(results, got, 4);
        long sent[2], received[3];
        int nsent = 0, nreceived = 0;
        for (int i = 0; i < 4; i++) {
            assert_true(got[i].kind != BROKEN);
            if (got[i].kind == SENT)
                sent[nsent++] = got[i].value;
            else if (got[i].kind == RECEIVED)
                received[nreceived++] = got[i].value;
            else if (got[i].kind == SAW_CLOSE || got[i].kind == NOT_SENT)
                total_closed++;
        }
        /* A value the close caught in the buffer is still there. */
        long left;
        while (weft_chan_try_recv(ch, &left) == 0) {
            assert_true(nreceived < 3);
            received[nreceived++] = left;
        }
        assert_int_equal(nsent, nreceived);
        for (int i = 0; i < nsent; i++) {
            int matches = 0;
            for (int j = 0; j < nreceived; j++)
                matches += received[j] == sent[i];
            assert_int_equal(matches, 1);
        }
        total_sent += nsent;
        weft_chan_release(results);
        weft_chan_release(ch);
    }
    print_message("values crossed before close: %ld, outcomes of close: %ld\n",
                  total_sent, total_closed);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

typedef struct deadline_race {
    weft_chan *ch;
    weft_dir dir;
    int64_t deadline;
    long value;       /* sent by a send select, or stored by a recv select */
    int result;
    _Atomic int done;
    weft_wg wg;
} deadline_race;

static void select_until_deadline(void *arg)
{
    deadline_race *r = arg;
    weft_case c = { .chan = r->ch, .dir = r->dir, .elem = &r->value };
    r->result = weft_select_until(&c, 1, r->deadline);
    atomic_store(&r->done, 1);
    weft_wg_done(&r->wg);
}

/* A timed select and a try operation meet near the deadline: either the
 * select returns its case and the value crossed, or it times out and the
 * try operation found no waiting select, never both or neither. */
static void test_select_deadline_racing_handoff(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_chan *ch = weft_chan_make(sizeof(long), 0);
    assert_non_null(ch);
    int rounds = SCALE(4000);
    int crossed = 0, timed_out = 0, mismatched = 0;
    for (int round = 0; round < rounds; round++) {
        deadline_race r = { .ch = ch, .dir = round % 2 ? WEFT_SEND : WEFT_RECV,
                            .deadline = weft_now() + WEFT_US(round % 60),
                            .value = round % 2 ? round : -1 };
        weft_wg_add(&r.wg, 1);
        assert_int_equal(weft_go(select_until_deadline, &r), 0);

        /* Keep trying the other side until it succeeds or the select is
         * done. */
        long mine = round % 2 ? -1 : round;
        int err = WEFT_EAGAIN;
        while (err == WEFT_EAGAIN && !atomic_load(&r.done)) {
            err = r.dir == WEFT_SEND ? weft_chan_try_recv(ch, &mine)
                                     : weft_chan_try_send(ch, &mine);
            if (err == WEFT_EAGAIN)
                weft_yield();
        }
        weft_wg_wait(&r.wg);
        assert_true(err == 0 || err == WEFT_EAGAIN);
        if (err == 0) {
            crossed++;
            mismatched += r.result != 0 || r.value != round || mine != round;
        } else {
            timed_out++;
            mismatched += r.result != WEFT_ETIMEDOUT;
        }
    }
    print_message("%d values crossed, %d selects timed out\n", crossed, timed_out);
    assert_int_equal(mismatched, 0);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct parking_race {
    weft_chan *ch;
    int rounds;
    _Atomic long wrong;
    weft_wg wg;
} parking_race;

static void select_until_tiny_deadlines(void *arg)
{
    parking_race *r = arg;
    for (int i = 0; i < r->rounds; i++) {
        weft_case c = WEFT_RECV_CASE(r->ch, NULL);
        if (weft_select_until(&c, 1, weft_now() + WEFT_US(i % 50)) != WEFT_ETIMEDOUT)
            atomic_fetch_add(&r->wrong, 1);
    }
    weft_wg_done(&r->wg);
}

/* Deadlines 0..49 us away often fire on another P while the select is
 * still parking. The parking step must not read the coroutine's stack
 * once the deadline can wake it; the sanitizer builds catch that. */
static void test_deadline_fires_while_parking(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    parking_race r = { .ch = weft_chan_make(sizeof(long), 0), .rounds = SCALE(20000) };
    assert_non_null(r.ch);
    weft_wg_add(&r.wg, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(weft_go(select_until_tiny_deadlines, &r), 0);
    weft_wg_wait(&r.wg);
    assert_int_equal(atomic_load(&r.wrong), 0);
    weft_chan_release(r.ch);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct timed_crowd {
    weft_chan *ch;
    _Atomic int next;
    _Atomic int finished;
    _Atomic int received;
    _Atomic int timed_out;
    _Atomic int early;
    _Atomic long sum;
    weft_wg wg;
} timed_crowd;

/* Wait 1..10 ms for one value. */
static void select_until_some_value(void *arg)
{
    timed_crowd *c = arg;
    int i = atomic_fetch_add(&c->next, 1);
    int64_t start = weft_now();
    int64_t deadline = start + WEFT_MS(1 + i % 10);
    long v = 0;
    weft_case cases[1] = { WEFT_RECV_CASE(c->ch, &v) };
    int idx = weft_select_until(cases, 1, deadline);
    if (idx == 0) {
        atomic_fetch_add(&c->received, 1);
        atomic_fetch_add(&c->sum, v);
    } else if (idx == WEFT_ETIMEDOUT) {
        atomic_fetch_add(&c->timed_out, 1);
        if (weft_now() < deadline)
            atomic_fetch_add(&c->early, 1);
    }
    atomic_fetch_add(&c->finished, 1);
    weft_wg_done(&c->wg);
}

/* Many timed selects, some served and the rest timing out: each value
 * sent reaches exactly one select, and no deadline fires early. */
static void test_many_timed_selects(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    timed_crowd c = { .ch = weft_chan_make(sizeof(long), 0) };
    assert_non_null(c.ch);
    int n = SCALE(2000);
    weft_wg_add(&c.wg, n);
    for (int i = 0; i < n; i++)
        assert_int_equal(weft_go(select_until_some_value, &c), 0);

    /* Offer values to whichever select waits, until half are served or
     * every select has finished. */
    long sent = 0, sent_sum = 0;
    while (sent < n / 2 && atomic_load(&c.finished) < n) {
        long v = sent + 1;
        int err = weft_chan_try_send(c.ch, &v);
        if (err == 0) {
            sent++;
            sent_sum += v;
        } else {
            assert_int_equal(err, WEFT_EAGAIN);
            weft_yield();
        }
    }
    weft_wg_wait(&c.wg);
    print_message("%d selects: %ld values sent, %d timed out\n", n, sent,
                  atomic_load(&c.timed_out));
    assert_int_equal(atomic_load(&c.received), sent);
    assert_int_equal(atomic_load(&c.sum), sent_sum);
    assert_int_equal(atomic_load(&c.received) + atomic_load(&c.timed_out), n);
    assert_int_equal(atomic_load(&c.early), 0);
    weft_chan_release(c.ch);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- plain threads -------------------------------------------------- */

typedef struct thread_select {
    weft_chan *a;
    weft_chan *b;
    long rounds;
    long wrong;
    long proven_waiting; /* values that found the select already waiting */
    weft_wg wg;
} thread_select;

/* Receive rounds values from a or b through select: even values come
 * on a, odd ones on b. */
static void select_loop(thread_select *t)
{
    long out;
    weft_case cases[] = { WEFT_RECV_CASE(t->a, &out), WEFT_RECV_CASE(t->b, &out) };
    for (long i = 0; i < t->rounds; i++) {
        out = -1;
        int idx = weft_select(cases, 2);
        if (idx != (int)(i % 2) || out != i || !cases[idx].ok)
            t->wrong++;
    }
}

/* Send the values select_loop expects. The first 20 go by try_send, which
 * on an unbuffered channel only succeeds while the select waits. */
static void feed_loop(thread_select *t)
{
    for (long i = 0; i < t->rounds; i++) {
        weft_chan *ch = i % 2 ? t->b : t->a;
        if (i >= 20) {
            CHECK(weft_chan_send(ch, &i) == 0);
            continue;
        }
        int64_t deadline = weft_now() + WEFT_SEC(10);
        int err;
        while ((err = weft_chan_try_send(ch, &i)) == WEFT_EAGAIN && weft_now() < deadline)
            weft_yield();
        CHECK(err == 0);
        if (err == 0)
            t->proven_waiting++;
    }
}

static void *thread_select_loop(void *arg)
{
    select_loop(arg);
    return NULL;
}

static void *thread_feed_loop(void *arg)
{
    feed_loop(arg);
    return NULL;
}

static void coroutine_select_loop(void *arg)
{
    thread_select *t = arg;
    select_loop(t);
    weft_wg_done(&t->wg);
}

static void coroutine_feed_loop(void *arg)
{
    thread_select *t = arg;
    feed_loop(t);
    weft_wg_done(&t->wg);
}

static void test_select_from_plain_thread(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);

    /* A plain thread blocks in select, and a coroutine feeds it. */
    thread_select t = { .a = weft_chan_make(sizeof(long), 0),
                        .b = weft_chan_make(sizeof(long), 0), .rounds = SCALE(5000) };
    assert_non_null(t.a);
    assert_non_null(t.b);
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, thread_select_loop, &t), 0);
    weft_wg_add(&t.wg, 1);
    assert_int_equal(weft_go(coroutine_feed_loop, &t), 0);
    weft_wg_wait(&t.wg);
    pthread_join(tid, NULL);
    assert_int_equal(t.wrong, 0);
    assert_int_equal(t.proven_waiting, 20);

    /* A coroutine blocks in select, and a plain thread feeds it. */
    t.wrong = t.proven_waiting = 0;
    weft_wg_add(&t.wg, 1);
    assert_int_equal(weft_go(coroutine_select_loop, &t), 0);
    assert_int_equal(pthread_create(&tid, NULL, thread_feed_loop, &t), 0);
    pthread_join(tid, NULL);
    weft_wg_wait(&t.wg);
    assert_int_equal(t.wrong, 0);
    assert_int_equal(t.proven_waiting, 20);

    /* Two plain threads. */
    t.wrong = t.proven_waiting = 0;
    assert_int_equal(pthread_create(&tid, NULL, thread_select_loop, &t), 0);
    feed_loop(&t);
    pthread_join(tid, NULL);
    assert_int_equal(t.wrong, 0);
    assert_int_equal(t.proven_waiting, 20);

    /* try_select and select_until from this thread. */
    long v = 8, out = 0;
    assert_int_equal(weft_chan_close(t.b), 0);
    weft_case cases[] = { WEFT_RECV_CASE(t.a, &out), WEFT_SEND_CASE(t.a, &v) };
    assert_int_equal(weft_try_select(cases, 2), WEFT_EAGAIN);
    int64_t start = weft_now();
    assert_int_equal(weft_select_until(cases, 2, start + WEFT_MS(15)), WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(15));
    weft_case closed_case = WEFT_RECV_CASE(t.b, &out);
    out = 4;
    assert_int_equal(weft_try_select(&closed_case, 1), 0);
    assert_false(closed_case.ok);
    assert_int_equal(out, 0);

    weft_chan_release(t.a);
    weft_chan_release(t.b);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- releasing a channel right after waking a select ---------------- */

typedef enum wake_mode {
    WAKE_ONE_CASE_BY_SEND,
    WAKE_TWO_CASES_BY_SEND, /* both cases on the released channel */
    WAKE_ONE_CASE_BY_CLOSE,
    WAKE_MODES
} wake_mode;

typedef struct woken_select {
    weft_chan *ch;   /* borrowed: the round's owner holds the only reference */
    wake_mode mode;
    _Atomic int started;
    weft_wg wg;
} woken_select;

static void select_until_woken(void *arg)
{
    woken_select *w = arg;
    long a = 0, b = 0;
    weft_case cases[2] = { WEFT_RECV_CASE(w->ch, &a), WEFT_RECV_CASE(w->ch, &b) };
    atomic_store(&w->started, 1);
    int idx = weft_select(cases, w->mode == WAKE_TWO_CASES_BY_SEND ? 2 : 1);
    CHECK(idx == 0 || idx == 1);
    weft_wg_done(&w->wg);
}

/* Per round, a coroutine blocks in a select on ch. This coroutine holds
 * the only reference. It sends on ch or closes it, then releases ch as
 * soon as its own call returns, which weft/chan.h allows. With one P the
 * select has parked by the time `started` is seen, because a coroutine
 * runs until it parks. */
static int wake_selects_and_release(void *arg)
{
    wake_mode mode = *(wake_mode *)arg;
    for (int round = 0; round < SCALE(500); round++) {
        woken_select w = { .ch = weft_chan_make(sizeof(long), 0), .mode = mode };
        if (!w.ch)
            return 11;
        weft_wg_add(&w.wg, 1);
        if (weft_go(select_until_woken, &w) != 0)
            return 12;
        int64_t deadline = weft_now() + WEFT_SEC(10);
        while (!atomic_load(&w.started) && weft_now() < deadline)
            weft_yield();
        long v = round;
        int err = mode == WAKE_ONE_CASE_BY_CLOSE ? weft_chan_close(w.ch)
                                                 : weft_chan_send(w.ch, &v);
        if (err != 0)
            return 13;
        weft_chan_release(w.ch);
        weft_wg_wait(&w.wg);
    }
    return 0;
}

/* Child: run the rounds above. Exits 0 on success. */
static int release_after_waking_select(void *arg)
{
    int mode = (int)(intptr_t)arg;
    weft_config cfg = { .maxprocs = 1 };
    wake_mode m = (wake_mode)mode;
    int result = weft_main_config(&cfg, wake_selects_and_release, &m);
    if (result != 0)
        return result < 0 ? 10 : result;
    return atomic_load(&check_failures) ? 15 : 0;
}

static void test_release_right_after_waking_select(void **state)
{
    (void)state;
    static const char *names[WAKE_MODES] = {
        "one case, woken by send",
        "two cases on the channel, woken by send",
        "one case, woken by close",
    };
    int failed = 0;
    for (int mode = 0; mode < WAKE_MODES; mode++) {
        int status = run_in_child(release_after_waking_select, (void *)(intptr_t)mode, NULL, 0);
        if (status != 0) {
            print_message("select %s: child exited with status %d\n", names[mode], status);
            failed++;
        }
    }
    assert_int_equal(failed, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_select_null_cases_array, stop_runtime),
        cmocka_unit_test_teardown(test_select_zero_cases, stop_runtime),
        cmocka_unit_test_teardown(test_try_select_nothing_ready, stop_runtime),
        cmocka_unit_test_teardown(test_select_null_channel_never_ready, stop_runtime),
        cmocka_unit_test_teardown(test_select_closed_recv_case, stop_runtime),
        cmocka_unit_test_teardown(test_select_send_on_closed, stop_runtime),
        cmocka_unit_test_teardown(test_select_same_channel_twice, stop_runtime),
        cmocka_unit_test_teardown(test_select_fairness, stop_runtime),
        cmocka_unit_test_teardown(test_select_ready_beats_passed_deadline, stop_runtime),
        cmocka_unit_test_teardown(test_select_until_times_out, stop_runtime),
        cmocka_unit_test_teardown(test_blocked_select_is_woken, stop_runtime),
        cmocka_unit_test_teardown(test_select_many_channels, stop_runtime),
        cmocka_unit_test_teardown(test_selects_race_for_one_value, stop_runtime),
        cmocka_unit_test_teardown(test_selects_race_to_send, stop_runtime),
        cmocka_unit_test_teardown(test_selects_race_close, stop_runtime),
        cmocka_unit_test_teardown(test_select_deadline_racing_handoff, stop_runtime),
        cmocka_unit_test_teardown(test_many_timed_selects, stop_runtime),
        cmocka_unit_test_teardown(test_deadline_fires_while_parking, stop_runtime),
        cmocka_unit_test_teardown(test_select_from_plain_thread, stop_runtime),
        cmocka_unit_test_teardown(test_release_right_after_waking_select, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
