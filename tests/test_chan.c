/*
 * Channels: the NULL / open / closed semantics table of weft/chan.h, sizes
 * and reference counts, unbuffered rendezvous, FIFO order and Go's prime
 * sieve. Stress: close waking many waiters, and many producers and
 * consumers across Ps, plain threads among them. Ownership: releasing the
 * last reference right after a handoff, or after the runtime shut down.
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

/* ---- the semantics table ------------------------------------------- */

static void test_null_channel_ops(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    long v = 7;
    assert_int_equal(weft_chan_len(NULL), 0);
    assert_int_equal(weft_chan_cap(NULL), 0);
    assert_int_equal(weft_chan_close(NULL), WEFT_EINVAL);
    /* Go's select with a default case on a nil channel takes the default. */
    assert_int_equal(weft_chan_try_send(NULL, &v), WEFT_EAGAIN);
    assert_int_equal(weft_chan_try_recv(NULL, &v), WEFT_EAGAIN);
    assert_int_equal(v, 7);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct null_blocker {
    _Atomic int started;
    _Atomic int returned;
} null_blocker;

static void send_on_null(void *arg)
{
    null_blocker *b = arg;
    long v = 1;
    atomic_fetch_add(&b->started, 1);
    weft_chan_send(NULL, &v);
    atomic_fetch_add(&b->returned, 1);
}

static void recv_on_null(void *arg)
{
    null_blocker *b = arg;
    long v = 0;
    atomic_fetch_add(&b->started, 1);
    weft_chan_recv(NULL, &v);
    atomic_fetch_add(&b->returned, 1);
}

static void recv_null_discard(void *arg)
{
    null_blocker *b = arg;
    atomic_fetch_add(&b->started, 1);
    weft_chan_recv(NULL, NULL);
    atomic_fetch_add(&b->returned, 1);
}

/* Send and recv on a NULL channel never return. The blocked coroutines are
 * still blocked after this thread has waited out a deadline, and
 * weft_shutdown abandons them. */
static void test_null_channel_blocks_forever(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    null_blocker b = {0};
    assert_int_equal(weft_go(send_on_null, &b), 0);
    assert_int_equal(weft_go(recv_on_null, &b), 0);
    assert_int_equal(weft_go(recv_null_discard, &b), 0);
    assert_true(wait_for_count(&b.started, 3, WEFT_SEC(10)));

    weft_case never = WEFT_RECV_CASE(NULL, NULL);
    int64_t start = weft_now();
    assert_int_equal(weft_select_until(&never, 1, start + WEFT_MS(30)),
                     WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(30));
    assert_int_equal(weft_try_select(&never, 1), WEFT_EAGAIN);

    assert_int_equal(atomic_load(&b.returned), 0);
    assert_int_equal(weft_num_coroutines(), 3);
    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&b.returned), 0);
}

static void test_make_rejects_overflow(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    assert_null(weft_chan_make(SIZE_MAX / 2 + 1, 2));
    assert_null(weft_chan_make(SIZE_MAX, SIZE_MAX));
    assert_null(weft_chan_make(2, SIZE_MAX));
    assert_null(weft_chan_make(SIZE_MAX / 16 + 1, 16));
    assert_int_equal(weft_shutdown(), 0);
}

static void test_len_and_cap(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *unbuffered = weft_chan_make(sizeof(long), 0);
    assert_non_null(unbuffered);
    assert_int_equal(weft_chan_cap(unbuffered), 0);
    assert_int_equal(weft_chan_len(unbuffered), 0);

    weft_chan *ch = weft_chan_make(sizeof(long), 5);
    assert_non_null(ch);
    assert_int_equal(weft_chan_cap(ch), 5);
    for (long i = 0; i < 5; i++) {
        assert_int_equal(weft_chan_len(ch), (size_t)i);
        assert_int_equal(weft_chan_send(ch, &i), 0);
    }
    assert_int_equal(weft_chan_len(ch), 5);
    long v;
    assert_int_equal(weft_chan_recv(ch, &v), 0);
    assert_int_equal(v, 0);
    assert_int_equal(weft_chan_len(ch), 4);

    /* Closing keeps the buffered values, and len still counts them. */
    assert_int_equal(weft_chan_close(ch), 0);
    assert_int_equal(weft_chan_len(ch), 4);
    assert_int_equal(weft_chan_cap(ch), 5);
    assert_int_equal(weft_chan_recv(ch, &v), 0);
    assert_int_equal(v, 1);
    assert_int_equal(weft_chan_len(ch), 3);

    weft_chan_release(ch);
    weft_chan_release(unbuffered);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_try_ops_on_open_channel(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    long v = 99;

    weft_chan *ch = weft_chan_make(sizeof(long), 2);
    assert_non_null(ch);
    assert_int_equal(weft_chan_try_recv(ch, &v), WEFT_EAGAIN);
    assert_int_equal(v, 99);
    long a = 10, b = 20, c = 30;
    assert_int_equal(weft_chan_try_send(ch, &a), 0);
    assert_int_equal(weft_chan_try_send(ch, &b), 0);
    assert_int_equal(weft_chan_try_send(ch, &c), WEFT_EAGAIN);
    assert_int_equal(weft_chan_len(ch), 2);
    assert_int_equal(weft_chan_try_recv(ch, &v), 0);
    assert_int_equal(v, 10);
    assert_int_equal(weft_chan_try_send(ch, &c), 0);
    assert_int_equal(weft_chan_try_recv(ch, &v), 0);
    assert_int_equal(v, 20);
    assert_int_equal(weft_chan_try_recv(ch, &v), 0);
    assert_int_equal(v, 30);
    assert_int_equal(weft_chan_try_recv(ch, &v), WEFT_EAGAIN);
    weft_chan_release(ch);

    /* Unbuffered, with no party on the other side: neither is ready. */
    weft_chan *unbuffered = weft_chan_make(sizeof(long), 0);
    assert_non_null(unbuffered);
    assert_int_equal(weft_chan_try_send(unbuffered, &a), WEFT_EAGAIN);
    assert_int_equal(weft_chan_try_recv(unbuffered, &v), WEFT_EAGAIN);
    weft_chan_release(unbuffered);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct elem16 {
    unsigned char bytes[16];
} elem16;

static void test_closed_channel_ops(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(sizeof(elem16), 3);
    assert_non_null(ch);
    elem16 in1, in2, out;
    memset(&in1, 0x11, sizeof in1);
    memset(&in2, 0x22, sizeof in2);
    assert_int_equal(weft_chan_send(ch, &in1), 0);
    assert_int_equal(weft_chan_send(ch, &in2), 0);

    assert_int_equal(weft_chan_close(ch), 0);
    assert_int_equal(weft_chan_close(ch), WEFT_ECLOSED);
    assert_int_equal(weft_chan_send(ch, &in1), WEFT_ECLOSED);
    assert_int_equal(weft_chan_try_send(ch, &in1), WEFT_ECLOSED);
    assert_int_equal(weft_chan_len(ch), 2);

    /* Buffered values come out first, in order. */
    memset(&out, 0xAB, sizeof out);
    assert_int_equal(weft_chan_recv(ch, &out), 0);
    assert_true(all_bytes_equal(&out, sizeof out, 0x11));
    memset(&out, 0xAB, sizeof out);
    assert_int_equal(weft_chan_try_recv(ch, &out), 0);
    assert_true(all_bytes_equal(&out, sizeof out, 0x22));

    /* Then WEFT_ECLOSED with the element zeroed, every time. */
    for (int i = 0; i < 3; i++) {
        memset(&out, 0xAB, sizeof out);
        assert_int_equal(weft_chan_recv(ch, &out), WEFT_ECLOSED);
        assert_true(all_bytes_equal(&out, sizeof out, 0));
        memset(&out, 0xAB, sizeof out);
        assert_int_equal(weft_chan_try_recv(ch, &out), WEFT_ECLOSED);
        assert_true(all_bytes_equal(&out, sizeof out, 0));
    }
    assert_int_equal(weft_chan_recv(ch, NULL), WEFT_ECLOSED);
    assert_int_equal(weft_chan_len(ch), 0);
    weft_chan_release(ch);

    /* An unbuffered channel closed at once. */
    weft_chan *unbuffered = weft_chan_make(sizeof(elem16), 0);
    assert_non_null(unbuffered);
    assert_int_equal(weft_chan_close(unbuffered), 0);
    assert_int_equal(weft_chan_close(unbuffered), WEFT_ECLOSED);
    assert_int_equal(weft_chan_send(unbuffered, &in1), WEFT_ECLOSED);
    memset(&out, 0xAB, sizeof out);
    assert_int_equal(weft_chan_recv(unbuffered, &out), WEFT_ECLOSED);
    assert_true(all_bytes_equal(&out, sizeof out, 0));
    weft_chan_release(unbuffered);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_recv_null_elem_discards(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(sizeof(long), 4);
    assert_non_null(ch);
    for (long i = 1; i <= 3; i++)
        assert_int_equal(weft_chan_send(ch, &i), 0);
    assert_int_equal(weft_chan_recv(ch, NULL), 0);
    assert_int_equal(weft_chan_try_recv(ch, NULL), 0);
    assert_int_equal(weft_chan_len(ch), 1);
    long v = 0;
    assert_int_equal(weft_chan_recv(ch, &v), 0);
    assert_int_equal(v, 3);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct signal_pair {
    weft_chan *ch;
    int count;
    _Atomic int received;
    weft_wg wg;
} signal_pair;

static void receive_signals(void *arg)
{
    signal_pair *s = arg;
    for (int i = 0; i < s->count; i++) {
        CHECK(weft_chan_recv(s->ch, NULL) == 0);
        atomic_fetch_add(&s->received, 1);
    }
    CHECK(weft_chan_recv(s->ch, NULL) == WEFT_ECLOSED);
    weft_wg_done(&s->wg);
}

/* elem_size 0 is Go's chan struct{}: elem pointers are ignored. */
static void test_zero_size_channel(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(0, 3);
    assert_non_null(ch);
    assert_int_equal(weft_chan_cap(ch), 3);
    for (int i = 0; i < 3; i++)
        assert_int_equal(weft_chan_send(ch, NULL), 0);
    assert_int_equal(weft_chan_len(ch), 3);
    assert_int_equal(weft_chan_try_send(ch, NULL), WEFT_EAGAIN);
    assert_int_equal(weft_chan_recv(ch, NULL), 0);
    assert_int_equal(weft_chan_try_recv(ch, NULL), 0);
    assert_int_equal(weft_chan_len(ch), 1);

    /* A non-NULL pointer is accepted and not written to. */
    unsigned char guard[8];
    memset(guard, 0xAB, sizeof guard);
    assert_int_equal(weft_chan_recv(ch, guard), 0);
    assert_true(all_bytes_equal(guard, sizeof guard, 0xAB));
    assert_int_equal(weft_chan_try_recv(ch, NULL), WEFT_EAGAIN);
    assert_int_equal(weft_chan_close(ch), 0);
    assert_int_equal(weft_chan_recv(ch, guard), WEFT_ECLOSED);
    assert_true(all_bytes_equal(guard, sizeof guard, 0xAB));
    assert_int_equal(weft_chan_send(ch, NULL), WEFT_ECLOSED);
    weft_chan_release(ch);

    /* Unbuffered signals between this thread and a coroutine. */
    signal_pair s = { .ch = weft_chan_make(0, 0), .count = 100 };
    assert_non_null(s.ch);
    weft_wg_add(&s.wg, 1);
    assert_int_equal(weft_go(receive_signals, &s), 0);
    for (int i = 0; i < s.count; i++)
        assert_int_equal(weft_chan_send(s.ch, NULL), 0);
    assert_int_equal(weft_chan_close(s.ch), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(atomic_load(&s.received), s.count);
    weft_chan_release(s.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

enum { BIG = 1000 };

typedef struct big_elem {
    uint32_t seq;
    unsigned char fill[BIG];
} big_elem;

typedef struct big_pipe {
    weft_chan *ch;
    int count;
    weft_wg wg;
} big_pipe;

static void send_big(void *arg)
{
    big_pipe *p = arg;
    big_elem e;
    for (int i = 0; i < p->count; i++) {
        e.seq = (uint32_t)i;
        memset(e.fill, i & 0xFF, sizeof e.fill);
        CHECK(weft_chan_send(p->ch, &e) == 0);
    }
    weft_wg_done(&p->wg);
}

/* Elements larger than a cache line cross intact, buffered and not. */
static void test_large_elements(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    size_t caps[] = { 0, 1, 7 };
    for (size_t k = 0; k < sizeof caps / sizeof caps[0]; k++) {
        big_pipe p = { .ch = weft_chan_make(sizeof(big_elem), caps[k]),
                       .count = 500 };
        assert_non_null(p.ch);
        weft_wg_add(&p.wg, 1);
        assert_int_equal(weft_go(send_big, &p), 0);
        int bad = 0;
        for (int i = 0; i < p.count; i++) {
            big_elem e;
            assert_int_equal(weft_chan_recv(p.ch, &e), 0);
            bad += e.seq != (uint32_t)i;
            bad += !all_bytes_equal(e.fill, sizeof e.fill, i & 0xFF);
        }
        assert_int_equal(bad, 0);
        weft_wg_wait(&p.wg);
        weft_chan_release(p.ch);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void test_retain_release(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *ch = weft_chan_make(sizeof(int), 1);
    assert_non_null(ch);
    assert_ptr_equal(weft_chan_retain(ch), ch);
    assert_ptr_equal(weft_chan_retain(ch), ch);
    weft_chan_release(ch);
    weft_chan_release(ch);

    /* One reference is left: the channel still works. */
    int v = 5;
    assert_int_equal(weft_chan_send(ch, &v), 0);
    v = 0;
    assert_int_equal(weft_chan_recv(ch, &v), 0);
    assert_int_equal(v, 5);
    assert_int_equal(weft_chan_close(ch), 0);

    /* A closed channel keeps its references too. */
    assert_ptr_equal(weft_chan_retain(ch), ch);
    weft_chan_release(ch);
    assert_int_equal(weft_chan_recv(ch, &v), WEFT_ECLOSED);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
}

static void *send_and_close(void *arg)
{
    weft_chan *ch = arg;
    for (long i = 0; i < 1000; i++)
        CHECK(weft_chan_send(ch, &i) == 0);
    CHECK(weft_chan_close(ch) == 0);
    return NULL;
}

/* Only timers need a running runtime: channels work between plain
 * threads without one, blocking in the kernel. */
static void test_channels_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    weft_chan *ch = weft_chan_make(sizeof(int), 2);
    assert_non_null(ch);
    int v = 3;
    assert_int_equal(weft_chan_try_send(ch, &v), 0);
    assert_int_equal(weft_chan_send(ch, &v), 0);
    assert_int_equal(weft_chan_try_send(ch, &v), WEFT_EAGAIN);
    assert_int_equal(weft_chan_len(ch), 2);
    assert_int_equal(weft_chan_close(ch), 0);
    v = 0;
    assert_int_equal(weft_chan_recv(ch, &v), 0);
    assert_int_equal(v, 3);
    assert_int_equal(weft_chan_try_recv(ch, &v), 0);
    assert_int_equal(weft_chan_try_recv(ch, &v), WEFT_ECLOSED);
    assert_int_equal(v, 0);
    weft_chan_release(ch);

    weft_chan *unbuffered = weft_chan_make(sizeof(long), 0);
    assert_non_null(unbuffered);
    pthread_t sender;
    assert_int_equal(pthread_create(&sender, NULL, send_and_close, unbuffered), 0);
    long received = 0, sum = 0, value;
    while (received < 2000 && weft_chan_recv(unbuffered, &value) == 0) {
        received++;
        sum += value;
    }
    pthread_join(sender, NULL);
    assert_int_equal(received, 1000);
    assert_int_equal(sum, 999 * 1000 / 2);
    weft_case closed_case = WEFT_RECV_CASE(unbuffered, NULL);
    assert_int_equal(weft_select(&closed_case, 1), 0);
    assert_false(closed_case.ok);
    weft_chan_release(unbuffered);

    /* A deadline needs no runtime either. */
    weft_chan *empty = weft_chan_make(sizeof(long), 0);
    assert_non_null(empty);
    weft_case never = WEFT_RECV_CASE(empty, NULL);
    int64_t start = weft_now();
    assert_int_equal(weft_select_until(&never, 1, start + WEFT_MS(10)), WEFT_ETIMEDOUT);
    int64_t elapsed = weft_now() - start;
    assert_true(elapsed >= WEFT_MS(10));
    assert_true(elapsed < WEFT_SEC(2));
    weft_chan_release(empty);
    assert_no_check_failures();
}

/* ---- unbuffered rendezvous ------------------------------------------ */

typedef struct rendezvous {
    weft_chan *ch;
    long rounds;
    _Atomic long send_returned; /* sends that have returned so far */
    _Atomic int about_to_send;
    weft_wg wg;
} rendezvous;

static void rendezvous_sender(void *arg)
{
    rendezvous *r = arg;
    for (long i = 0; i < r->rounds; i++) {
        atomic_store(&r->about_to_send, 1);
        CHECK(weft_chan_send(r->ch, &i) == 0);
        atomic_store(&r->send_returned, i + 1);
    }
    weft_wg_done(&r->wg);
}

static void rendezvous_receiver(void *arg)
{
    rendezvous *r = arg;
    for (long i = 0; i < r->rounds; i++) {
        /* Give a send that ignores the missing receiver time to return. */
        for (int k = 0; k < (int)(i % 4); k++)
            weft_yield();
        /* Send number i cannot have returned, because no receive has taken
         * value i yet. */
        CHECK(atomic_load(&r->send_returned) <= i);
        long v = -1;
        CHECK(weft_chan_recv(r->ch, &v) == 0);
        CHECK(v == i);
    }
    weft_wg_done(&r->wg);
}

static void test_unbuffered_rendezvous(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);

    /* One send, watched from this thread: it stays blocked until the
     * receive. The sleep measures that nothing happens without a receive. */
    rendezvous single = { .ch = weft_chan_make(sizeof(long), 0), .rounds = 1 };
    assert_non_null(single.ch);
    weft_wg_add(&single.wg, 1);
    assert_int_equal(weft_go(rendezvous_sender, &single), 0);
    assert_true(wait_for_count(&single.about_to_send, 1, WEFT_SEC(10)));
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);
    assert_int_equal(atomic_load(&single.send_returned), 0);
    assert_int_equal(weft_chan_len(single.ch), 0);
    long v = -1;
    assert_int_equal(weft_chan_recv(single.ch, &v), 0);
    assert_int_equal(v, 0);
    weft_wg_wait(&single.wg);
    assert_int_equal(atomic_load(&single.send_returned), 1);
    weft_chan_release(single.ch);

    /* Many rounds between two coroutines on two Ps. */
    rendezvous many = { .ch = weft_chan_make(sizeof(long), 0),
                        .rounds = SCALE(20000) };
    assert_non_null(many.ch);
    weft_wg_add(&many.wg, 2);
    assert_int_equal(weft_go(rendezvous_receiver, &many), 0);
    assert_int_equal(weft_go(rendezvous_sender, &many), 0);
    weft_wg_wait(&many.wg);
    assert_int_equal(atomic_load(&many.send_returned), many.rounds);
    weft_chan_release(many.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- FIFO order ----------------------------------------------------- */

enum { CHAIN_LINKS = 100 };

typedef struct chain_link {
    weft_chan *in;
    weft_chan *out;
    weft_wg *wg;
} chain_link;

/* Forward every value until the input closes, then close the output. */
static void forward_values(void *arg)
{
    chain_link *link = arg;
    long v;
    while (weft_chan_recv(link->in, &v) == 0)
        CHECK(weft_chan_send(link->out, &v) == 0);
    CHECK(weft_chan_close(link->out) == 0);
    weft_wg_done(link->wg);
}

static void test_fifo_through_chain(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_chan *chans[CHAIN_LINKS + 1];
    chain_link links[CHAIN_LINKS];
    weft_wg wg = {0};
    /* Unbuffered, small and larger buffers, mixed along the chain. */
    for (int i = 0; i <= CHAIN_LINKS; i++) {
        chans[i] = weft_chan_make(sizeof(long), (size_t)(i % 3) * (size_t)(i % 5));
        assert_non_null(chans[i]);
    }
    weft_wg_add(&wg, CHAIN_LINKS);
    for (int i = 0; i < CHAIN_LINKS; i++) {
        links[i] = (chain_link){ .in = chans[i], .out = chans[i + 1], .wg = &wg };
        assert_int_equal(weft_go(forward_values, &links[i]), 0);
    }

    long n = SCALE(5000);
    for (long i = 0; i < n; i++) {
        assert_int_equal(weft_chan_send(chans[0], &i), 0);
        /* Read back as we go so the chain never fills up. */
        if (i >= 50) {
            long v = -1;
            assert_int_equal(weft_chan_recv(chans[CHAIN_LINKS], &v), 0);
            assert_int_equal(v, i - 50);
        }
    }
    assert_int_equal(weft_chan_close(chans[0]), 0);
    for (long i = n > 50 ? n - 50 : 0; i < n; i++) {
        long v = -1;
        assert_int_equal(weft_chan_recv(chans[CHAIN_LINKS], &v), 0);
        assert_int_equal(v, i);
    }
    assert_int_equal(weft_chan_recv(chans[CHAIN_LINKS], NULL), WEFT_ECLOSED);
    weft_wg_wait(&wg);
    for (int i = 0; i <= CHAIN_LINKS; i++)
        weft_chan_release(chans[i]);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

enum { FIFO_SENDERS = 6 };

typedef struct fifo_sender {
    weft_chan *ch;
    uint64_t id;
    uint64_t count;
    weft_wg *wg;
} fifo_sender;

static void send_tagged(void *arg)
{
    fifo_sender *s = arg;
    for (uint64_t i = 0; i < s->count; i++) {
        uint64_t v = s->id << 32 | i;
        CHECK(weft_chan_send(s->ch, &v) == 0);
        if (i % 64 == 0)
            weft_yield();
    }
    weft_wg_done(s->wg);
}

static void *send_tagged_thread(void *arg)
{
    send_tagged(arg);
    return NULL;
}

/* Values from one sender arrive in the order it sent them, whatever the
 * interleaving with other senders. Two of the senders are plain threads. */
static void test_fifo_per_sender(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_chan *ch = weft_chan_make(sizeof(uint64_t), 16);
    assert_non_null(ch);
    weft_wg wg = {0};
    fifo_sender senders[FIFO_SENDERS];
    pthread_t threads[2];
    uint64_t count = SCALE(20000);
    weft_wg_add(&wg, FIFO_SENDERS);
    for (int i = 0; i < FIFO_SENDERS; i++) {
        senders[i] = (fifo_sender){ .ch = ch, .id = (uint64_t)i, .count = count, .wg = &wg };
        if (i < 2)
            assert_int_equal(pthread_create(&threads[i], NULL, send_tagged_thread, &senders[i]), 0);
        else
            assert_int_equal(weft_go(send_tagged, &senders[i]), 0);
    }
    uint64_t next[FIFO_SENDERS] = {0};
    long out_of_order = 0, bad_id = 0;
    for (uint64_t k = 0; k < count * FIFO_SENDERS; k++) {
        uint64_t v;
        assert_int_equal(weft_chan_recv(ch, &v), 0);
        uint64_t id = v >> 32;
        if (id >= FIFO_SENDERS) {
            bad_id++;
            continue;
        }
        if ((v & 0xFFFFFFFFu) != next[id])
            out_of_order++;
        next[id] = (v & 0xFFFFFFFFu) + 1;
    }
    assert_int_equal(bad_id, 0);
    assert_int_equal(out_of_order, 0);
    for (int i = 0; i < FIFO_SENDERS; i++)
        assert_int_equal(next[i], count);
    assert_int_equal(weft_chan_try_recv(ch, NULL), WEFT_EAGAIN);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    weft_wg_wait(&wg);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- Go's concurrent prime sieve ------------------------------------ */

enum { SIEVE_PRIMES = 100 };

typedef struct sieve {
    weft_chan *chans[SIEVE_PRIMES + 1];
    int nchans;
    weft_wg wg;
} sieve;

typedef struct sieve_filter {
    sieve *s;
    weft_chan *in;
    weft_chan *out;
    long prime;
} sieve_filter;

/* Send 2, 3, 4, ... until the receiver closes the channel. */
static void sieve_generate(void *arg)
{
    sieve_filter *f = arg;
    for (long i = 2;; i++) {
        if (weft_chan_send(f->out, &i) != 0)
            break;
    }
    weft_wg_done(&f->s->wg);
}

/* Pass on the values not divisible by prime. When the output is closed
 * downstream, close the input, so the shutdown travels upstream. */
static void sieve_filter_run(void *arg)
{
    sieve_filter *f = arg;
    long v;
    for (;;) {
        if (weft_chan_recv(f->in, &v) != 0)
            break;
        if (v % f->prime != 0 && weft_chan_send(f->out, &v) != 0)
            break;
    }
    CHECK(weft_chan_close(f->in) == 0);
    weft_wg_done(&f->s->wg);
}

static int run_sieve(void *arg)
{
    long *primes = arg;
    sieve s = {0};
    sieve_filter filters[SIEVE_PRIMES + 1];

    weft_chan *ch = weft_chan_make(sizeof(long), 0);
    CHECK(ch != NULL);
    s.chans[s.nchans++] = ch;
    weft_wg_add(&s.wg, 1);
    filters[0] = (sieve_filter){ .s = &s, .out = ch };
    CHECK(weft_go(sieve_generate, &filters[0]) == 0);

    for (int i = 0; i < SIEVE_PRIMES; i++) {
        long prime = 0;
        CHECK(weft_chan_recv(ch, &prime) == 0);
        primes[i] = prime;
        if (i == SIEVE_PRIMES - 1)
            break;
        weft_chan *next = weft_chan_make(sizeof(long), 0);
        CHECK(next != NULL);
        s.chans[s.nchans++] = next;
        filters[i + 1] = (sieve_filter){ .s = &s, .in = ch, .out = next, .prime = prime };
        weft_wg_add(&s.wg, 1);
        CHECK(weft_go(sieve_filter_run, &filters[i + 1]) == 0);
        ch = next;
    }

    /* Stop the pipeline from its end and wait until every stage is gone. */
    CHECK(weft_chan_close(ch) == 0);
    weft_wg_wait(&s.wg);
    for (int i = 0; i < s.nchans; i++)
        weft_chan_release(s.chans[i]);
    return 0;
}

static void test_prime_sieve(void **state)
{
    (void)state;
    long primes[SIEVE_PRIMES] = {0};
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_main_config(&cfg, run_sieve, primes), 0);
    assert_no_check_failures();

    /* Check against trial division. */
    long want = 2;
    for (int i = 0; i < SIEVE_PRIMES; i++) {
        assert_int_equal(primes[i], want);
        for (want++;; want++) {
            bool prime = true;
            for (long d = 2; d * d <= want; d++) {
                if (want % d == 0) {
                    prime = false;
                    break;
                }
            }
            if (prime)
                break;
        }
    }
    assert_int_equal(primes[SIEVE_PRIMES - 1], 541);
}

/* ---- close wakes every waiter --------------------------------------- */

enum { CLOSE_WAITERS = 1000 };

typedef struct close_crowd {
    weft_chan *ch;
    _Atomic int blocked;  /* incremented just before the blocking call */
    _Atomic int closed;   /* calls that returned WEFT_ECLOSED */
    _Atomic int other;    /* calls that returned anything else */
    _Atomic int not_zeroed;
    weft_wg wg;
} close_crowd;

static void block_in_recv(void *arg)
{
    close_crowd *c = arg;
    elem16 e;
    memset(&e, 0xAB, sizeof e);
    atomic_fetch_add(&c->blocked, 1);
    int err = weft_chan_recv(c->ch, &e);
    if (err == WEFT_ECLOSED)
        atomic_fetch_add(&c->closed, 1);
    else
        atomic_fetch_add(&c->other, 1);
    if (!all_bytes_equal(&e, sizeof e, 0))
        atomic_fetch_add(&c->not_zeroed, 1);
    weft_wg_done(&c->wg);
}

static void block_in_send(void *arg)
{
    close_crowd *c = arg;
    elem16 e;
    memset(&e, 0x5A, sizeof e);
    atomic_fetch_add(&c->blocked, 1);
    int err = weft_chan_send(c->ch, &e);
    if (err == WEFT_ECLOSED)
        atomic_fetch_add(&c->closed, 1);
    else
        atomic_fetch_add(&c->other, 1);
    weft_wg_done(&c->wg);
}

/* Block in a select with a recv case on c->ch and a send case on a NULL
 * channel. Only the close can end it, through the recv case. */
static void block_in_select(void *arg)
{
    close_crowd *c = arg;
    elem16 e;
    memset(&e, 0xAB, sizeof e);
    weft_case cases[2] = { WEFT_SEND_CASE(NULL, &e), WEFT_RECV_CASE(c->ch, &e) };
    atomic_fetch_add(&c->blocked, 1);
    int idx = weft_select(cases, 2);
    if (idx == 1 && !cases[1].ok)
        atomic_fetch_add(&c->closed, 1);
    else
        atomic_fetch_add(&c->other, 1);
    if (!all_bytes_equal(&e, sizeof e, 0))
        atomic_fetch_add(&c->not_zeroed, 1);
    weft_wg_done(&c->wg);
}

/* Start nwaiters coroutines that block on c->ch, wait until each has
 * counted itself, close the channel and wait until every one returned. */
static void close_on_crowd(close_crowd *c, weft_fn waiter, int nwaiters)
{
    weft_wg_add(&c->wg, nwaiters);
    for (int i = 0; i < nwaiters; i++)
        CHECK(weft_go(waiter, c) == 0);
    CHECK(wait_for_count(&c->blocked, nwaiters, WEFT_SEC(30)));
    /* On one P a coroutine runs until it parks, so after one more yield
     * every waiter that has counted itself is parked. With more Ps most
     * of them are. */
    weft_yield();
    CHECK(weft_num_coroutines() >= nwaiters);
    CHECK(weft_chan_close(c->ch) == 0);
    weft_wg_wait(&c->wg);
}

static void check_crowd_result(close_crowd *c, int nwaiters)
{
    CHECK(atomic_load(&c->closed) == nwaiters);
    CHECK(atomic_load(&c->other) == 0);
    CHECK(atomic_load(&c->not_zeroed) == 0);
}

/* Receivers on an unbuffered channel, then senders on a full buffered
 * one whose buffered values survive the close. */
static void close_receivers_then_senders(void)
{
    close_crowd receivers = { .ch = weft_chan_make(sizeof(elem16), 0) };
    CHECK(receivers.ch != NULL);
    close_on_crowd(&receivers, block_in_recv, CLOSE_WAITERS);
    check_crowd_result(&receivers, CLOSE_WAITERS);
    weft_chan_release(receivers.ch);

    close_crowd senders = { .ch = weft_chan_make(sizeof(elem16), 10) };
    CHECK(senders.ch != NULL);
    elem16 e;
    for (int i = 0; i < 10; i++) {
        memset(&e, i, sizeof e);
        CHECK(weft_chan_send(senders.ch, &e) == 0);
    }
    close_on_crowd(&senders, block_in_send, CLOSE_WAITERS);
    check_crowd_result(&senders, CLOSE_WAITERS);
    for (int i = 0; i < 10; i++) {
        CHECK(weft_chan_recv(senders.ch, &e) == 0);
        CHECK(all_bytes_equal(&e, sizeof e, (unsigned char)i));
    }
    memset(&e, 0xAB, sizeof e);
    CHECK(weft_chan_recv(senders.ch, &e) == WEFT_ECLOSED);
    CHECK(all_bytes_equal(&e, sizeof e, 0));
    weft_chan_release(senders.ch);
}

static int close_crowds_in_coroutine(void *arg)
{
    (void)arg;
    close_receivers_then_senders();
    return 0;
}

static void test_close_wakes_blocked_crowd_one_p(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_main_config(&cfg, close_crowds_in_coroutine, NULL), 0);
    assert_no_check_failures();
}

static void test_close_wakes_blocked_crowd_four_ps(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    close_receivers_then_senders();

    /* Receivers on an empty buffered channel too. */
    close_crowd buffered = { .ch = weft_chan_make(sizeof(elem16), 4) };
    assert_non_null(buffered.ch);
    close_on_crowd(&buffered, block_in_recv, CLOSE_WAITERS);
    check_crowd_result(&buffered, CLOSE_WAITERS);
    weft_chan_release(buffered.ch);

    /* Selects, which close must claim one by one. */
    close_crowd selects = { .ch = weft_chan_make(sizeof(elem16), 0) };
    assert_non_null(selects.ch);
    close_on_crowd(&selects, block_in_select, CLOSE_WAITERS);
    check_crowd_result(&selects, CLOSE_WAITERS);
    weft_chan_release(selects.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- many producers and consumers across Ps ------------------------- */

typedef struct mpmc {
    weft_chan *ch;
    size_t elem_size;  /* 0 or sizeof(long) */
    long per_producer;
    long total;
    _Atomic int next_producer;
    _Atomic uint8_t *seen;  /* per value, how often it was received */
    _Atomic long received;
    _Atomic long sum;
    _Atomic long duplicates;
    _Atomic long out_of_range;
    _Atomic long send_errors;
    weft_wg producers_done;
    weft_wg consumers_done;
} mpmc;

/* Producer k sends k * per_producer + 1 ... (k + 1) * per_producer. */
static void mpmc_produce(void *arg)
{
    mpmc *m = arg;
    long first = atomic_fetch_add(&m->next_producer, 1) * m->per_producer + 1;
    for (long i = 0; i < m->per_producer; i++) {
        long v = first + i;
        if (weft_chan_send(m->ch, m->elem_size ? &v : NULL) != 0)
            atomic_fetch_add(&m->send_errors, 1);
    }
    weft_wg_done(&m->producers_done);
}

static void mpmc_consume(void *arg)
{
    mpmc *m = arg;
    long received = 0, sum = 0;
    for (;;) {
        long v = 0;
        if (weft_chan_recv(m->ch, m->elem_size ? &v : NULL) != 0)
            break;
        received++;
        if (m->elem_size == 0)
            continue;
        if (v < 1 || v > m->total) {
            atomic_fetch_add(&m->out_of_range, 1);
            continue;
        }
        sum += v;
        if (atomic_fetch_add(&m->seen[v - 1], 1) != 0)
            atomic_fetch_add(&m->duplicates, 1);
    }
    atomic_fetch_add(&m->received, received);
    atomic_fetch_add(&m->sum, sum);
    weft_wg_done(&m->consumers_done);
}

static void *mpmc_produce_thread(void *arg)
{
    mpmc_produce(arg);
    return NULL;
}

static void *mpmc_consume_thread(void *arg)
{
    mpmc_consume(arg);
    return NULL;
}

/* Run producers and consumers over one channel and check that every value
 * arrived exactly once. On each side, `threads` of them are plain threads
 * and the rest are coroutines. */
static void run_mpmc(size_t elem_size, size_t cap, int producers, int consumers,
                     int threads, long per_producer)
{
    mpmc m = { .elem_size = elem_size, .per_producer = per_producer,
               .total = per_producer * producers };
    m.ch = weft_chan_make(elem_size, cap);
    assert_non_null(m.ch);
    m.seen = calloc((size_t)m.total, 1);
    assert_non_null(m.seen);
    pthread_t tids[16];
    int ntids = 0;
    assert_true(2 * threads <= 16);

    weft_wg_add(&m.consumers_done, consumers);
    weft_wg_add(&m.producers_done, producers);
    for (int i = 0; i < consumers; i++) {
        if (i < threads)
            assert_int_equal(pthread_create(&tids[ntids++], NULL, mpmc_consume_thread, &m), 0);
        else
            assert_int_equal(weft_go(mpmc_consume, &m), 0);
    }
    for (int i = 0; i < producers; i++) {
        if (i < threads)
            assert_int_equal(pthread_create(&tids[ntids++], NULL, mpmc_produce_thread, &m), 0);
        else
            assert_int_equal(weft_go(mpmc_produce, &m), 0);
    }
    weft_wg_wait(&m.producers_done);
    assert_int_equal(weft_chan_close(m.ch), 0);
    weft_wg_wait(&m.consumers_done);
    for (int i = 0; i < ntids; i++)
        pthread_join(tids[i], NULL);

    assert_int_equal(atomic_load(&m.send_errors), 0);
    assert_int_equal(atomic_load(&m.received), m.total);
    if (elem_size) {
        assert_int_equal(atomic_load(&m.out_of_range), 0);
        assert_int_equal(atomic_load(&m.duplicates), 0);
        assert_int_equal(atomic_load(&m.sum), m.total * (m.total + 1) / 2);
        long missing = 0;
        for (long i = 0; i < m.total; i++)
            missing += atomic_load(&m.seen[i]) != 1;
        assert_int_equal(missing, 0);
    }
    free(m.seen);
    weft_chan_release(m.ch);
}

static void test_mpmc_buffered(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    run_mpmc(sizeof(long), 64, 4, 4, 0, SCALE(50000));
    run_mpmc(sizeof(long), 1, 8, 3, 0, SCALE(10000));
    assert_int_equal(weft_shutdown(), 0);
}

static void test_mpmc_unbuffered(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    run_mpmc(sizeof(long), 0, 4, 4, 0, SCALE(25000));
    assert_int_equal(weft_shutdown(), 0);
}

static void test_mpmc_zero_size(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    run_mpmc(0, 0, 4, 4, 0, SCALE(25000));
    run_mpmc(0, 32, 4, 4, 0, SCALE(50000));
    assert_int_equal(weft_shutdown(), 0);
}

/* Two producers and two consumers are plain threads, which block in the
 * kernel. The others are coroutines. */
static void test_mpmc_threads_and_coroutines(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    run_mpmc(sizeof(long), 0, 4, 4, 2, SCALE(10000));
    run_mpmc(sizeof(long), 8, 4, 4, 2, SCALE(20000));
    run_mpmc(0, 0, 4, 4, 2, SCALE(10000));
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- plain threads and coroutines ----------------------------------- */

typedef struct cross {
    weft_chan *ch;
    long count;
    long proven_parked; /* handoffs that found the other side waiting */
    weft_wg wg;
} cross;

/* Send one value with try_send, retrying until the other side is waiting:
 * on an unbuffered channel try_send only succeeds with a receiver parked
 * (or blocked in the kernel). False on timeout. */
static bool send_to_waiting_receiver(weft_chan *ch, long v)
{
    int64_t deadline = weft_now() + WEFT_SEC(10);
    while (weft_now() < deadline) {
        int err = weft_chan_try_send(ch, &v);
        if (err == 0)
            return true;
        CHECK(err == WEFT_EAGAIN);
        weft_yield();
    }
    return false;
}

static bool recv_from_waiting_sender(weft_chan *ch, long *v)
{
    int64_t deadline = weft_now() + WEFT_SEC(10);
    while (weft_now() < deadline) {
        int err = weft_chan_try_recv(ch, v);
        if (err == 0)
            return true;
        CHECK(err == WEFT_EAGAIN);
        weft_yield();
    }
    return false;
}

enum { PROVEN_ROUNDS = 20 };

/* The first PROVEN_ROUNDS values go to a receiver known to be waiting. */
static void cross_send(cross *c)
{
    for (long i = 0; i < c->count; i++) {
        if (i < PROVEN_ROUNDS) {
            if (send_to_waiting_receiver(c->ch, i))
                c->proven_parked++;
        } else {
            CHECK(weft_chan_send(c->ch, &i) == 0);
        }
    }
    CHECK(weft_chan_close(c->ch) == 0);
}

static void cross_recv(cross *c)
{
    for (long i = 0; i < c->count; i++) {
        long v = -1;
        if (i < PROVEN_ROUNDS) {
            if (recv_from_waiting_sender(c->ch, &v))
                c->proven_parked++;
        } else {
            CHECK(weft_chan_recv(c->ch, &v) == 0);
        }
        CHECK(v == i);
    }
    CHECK(weft_chan_recv(c->ch, NULL) == WEFT_ECLOSED);
}

static void plain_recv_all(cross *c)
{
    for (long i = 0; i < c->count; i++) {
        long v = -1;
        CHECK(weft_chan_recv(c->ch, &v) == 0);
        CHECK(v == i);
    }
    CHECK(weft_chan_recv(c->ch, NULL) == WEFT_ECLOSED);
}

static void plain_send_all(cross *c)
{
    for (long i = 0; i < c->count; i++)
        CHECK(weft_chan_send(c->ch, &i) == 0);
    CHECK(weft_chan_close(c->ch) == 0);
}

static void *thread_cross_send(void *arg)
{
    cross_send(arg);
    return NULL;
}

static void *thread_plain_recv(void *arg)
{
    plain_recv_all(arg);
    return NULL;
}

static void coroutine_plain_recv(void *arg)
{
    cross *c = arg;
    plain_recv_all(c);
    weft_wg_done(&c->wg);
}

static void coroutine_cross_send(void *arg)
{
    cross *c = arg;
    cross_send(c);
    weft_wg_done(&c->wg);
}

static void coroutine_cross_recv(void *arg)
{
    cross *c = arg;
    cross_recv(c);
    weft_wg_done(&c->wg);
}

static void *thread_plain_send(void *arg)
{
    plain_send_all(arg);
    return NULL;
}

static void test_thread_sends_to_coroutine(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    cross c = { .ch = weft_chan_make(sizeof(long), 0), .count = SCALE(20000) };
    assert_non_null(c.ch);
    weft_wg_add(&c.wg, 1);
    assert_int_equal(weft_go(coroutine_plain_recv, &c), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_cross_send, &c), 0);
    pthread_join(t, NULL);
    weft_wg_wait(&c.wg);
    /* Every proven handoff woke a parked coroutine. */
    assert_int_equal(c.proven_parked, PROVEN_ROUNDS);
    weft_chan_release(c.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void test_coroutine_sends_to_blocked_thread(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    cross c = { .ch = weft_chan_make(sizeof(long), 0), .count = SCALE(20000) };
    assert_non_null(c.ch);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_plain_recv, &c), 0);
    weft_wg_add(&c.wg, 1);
    assert_int_equal(weft_go(coroutine_cross_send, &c), 0);
    weft_wg_wait(&c.wg);
    pthread_join(t, NULL);
    /* Every proven handoff woke a plain thread blocked in the kernel. */
    assert_int_equal(c.proven_parked, PROVEN_ROUNDS);
    weft_chan_release(c.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void test_coroutine_receives_from_blocked_thread(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    cross c = { .ch = weft_chan_make(sizeof(long), 0), .count = SCALE(20000) };
    assert_non_null(c.ch);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, thread_plain_send, &c), 0);
    weft_wg_add(&c.wg, 1);
    assert_int_equal(weft_go(coroutine_cross_recv, &c), 0);
    weft_wg_wait(&c.wg);
    pthread_join(t, NULL);
    /* Every proven handoff took a value from a thread blocked in send. */
    assert_int_equal(c.proven_parked, PROVEN_ROUNDS);
    weft_chan_release(c.ch);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void test_thread_to_thread(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    size_t caps[] = { 0, 3 };
    for (size_t k = 0; k < 2; k++) {
        cross c = { .ch = weft_chan_make(sizeof(long), caps[k]), .count = SCALE(20000) };
        assert_non_null(c.ch);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, thread_plain_send, &c), 0);
        plain_recv_all(&c);
        pthread_join(t, NULL);
        weft_chan_release(c.ch);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- releasing the last reference right after a handoff ------------- */

/* Who releases is chosen so that the releasing side's call cannot return
 * before the other side's call has started. That rules out releasing
 * after a send that may only fill the buffer, and releasing after a close
 * that the peer may not have reached yet. */
typedef enum handoff_mode {
    PEER_RECVS_THEN_RELEASES,
    PEER_SENDS_THEN_RELEASES,    /* unbuffered only */
    PEER_SEES_CLOSE_THEN_RELEASES,
    PEER_RECVS_THIS_RELEASES,    /* unbuffered only */
    PEER_SENDS_THIS_RELEASES,
    HANDOFF_MODES
} handoff_mode;

typedef struct handoff {
    weft_chan *ch;
    handoff_mode mode;
    long value;
    weft_wg wg;
} handoff;

static void handoff_peer(void *arg)
{
    handoff *h = arg;
    weft_chan *ch = h->ch;
    long v = -1;
    switch (h->mode) {
    case PEER_RECVS_THEN_RELEASES:
    case PEER_RECVS_THIS_RELEASES:
        CHECK(weft_chan_recv(ch, &v) == 0);
        CHECK(v == h->value);
        break;
    case PEER_SENDS_THEN_RELEASES:
    case PEER_SENDS_THIS_RELEASES:
        CHECK(weft_chan_send(ch, &h->value) == 0);
        break;
    case PEER_SEES_CLOSE_THEN_RELEASES:
        CHECK(weft_chan_recv(ch, &v) == WEFT_ECLOSED);
        CHECK(v == 0);
        break;
    default:
        CHECK(!"unknown mode");
    }
    if (h->mode < PEER_RECVS_THIS_RELEASES)
        weft_chan_release(ch);
    weft_wg_done(&h->wg);
}

/* The side that holds the only reference releases it as soon as its own
 * call returns, while the other side's call may still be returning. The
 * sanitizer builds catch a call that touches the freed channel. */
static void test_release_right_after_handoff(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    int rounds = SCALE(3000);
    for (int round = 0; round < rounds; round++) {
        handoff h = { .mode = (handoff_mode)(round % HANDOFF_MODES), .value = round };
        bool may_buffer = h.mode != PEER_SENDS_THEN_RELEASES &&
                          h.mode != PEER_RECVS_THIS_RELEASES;
        size_t cap = may_buffer ? (size_t)(round / HANDOFF_MODES % 2) : 0;
        h.ch = weft_chan_make(sizeof(long), cap);
        assert_non_null(h.ch);
        weft_chan *ch = h.ch;
        weft_wg_add(&h.wg, 1);
        assert_int_equal(weft_go(handoff_peer, &h), 0);
        /* Now and then let the peer block first. */
        if (round % 3 == 0)
            weft_yield();
        long v = -1;
        switch (h.mode) {
        case PEER_RECVS_THEN_RELEASES:
        case PEER_RECVS_THIS_RELEASES:
            assert_int_equal(weft_chan_send(ch, &h.value), 0);
            break;
        case PEER_SENDS_THEN_RELEASES:
        case PEER_SENDS_THIS_RELEASES:
            assert_int_equal(weft_chan_recv(ch, &v), 0);
            assert_int_equal(v, h.value);
            break;
        default:
            assert_int_equal(weft_chan_close(ch), 0);
            break;
        }
        if (h.mode >= PEER_RECVS_THIS_RELEASES)
            weft_chan_release(ch);
        weft_wg_wait(&h.wg);
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- releasing after the runtime shut down ------------------------- */

typedef struct abandoned_waiter {
    weft_chan *probe;  /* one value from here first, so the waiter has run */
    weft_chan *target; /* then block on this one */
} abandoned_waiter;

static void take_probe_then_recv(void *arg)
{
    abandoned_waiter *w = arg;
    long v;
    weft_chan_recv(w->probe, &v);
    weft_chan_recv(w->target, &v);
}

static void take_probe_then_select(void *arg)
{
    abandoned_waiter *w = arg;
    long v;
    weft_chan_recv(w->probe, &v);
    weft_case cases[2] = { WEFT_RECV_CASE(NULL, &v), WEFT_RECV_CASE(w->target, &v) };
    weft_select(cases, 2);
}

/* Child: coroutines blocked on two channels, in recv and in a select, are
 * abandoned by weft_shutdown. Releasing the channels afterwards is then
 * allowed, and must not report them as released while waited on. Each
 * failing step has its own exit status. */
static int release_after_shutdown(void *arg)
{
    (void)arg;
    weft_chan *probe = weft_chan_make(sizeof(long), 0);
    weft_chan *a = weft_chan_make(sizeof(long), 0);
    weft_chan *b = weft_chan_make(sizeof(long), 2);
    if (!probe || !a || !b || weft_init(NULL) != 0)
        return 10;
    abandoned_waiter on_a = { probe, a }, on_b = { probe, b };
    if (weft_go(take_probe_then_recv, &on_a) != 0 || weft_go(take_probe_then_select, &on_a) != 0 ||
        weft_go(take_probe_then_recv, &on_b) != 0)
        return 11;
    /* Once a coroutine has taken its probe it blocks on its target at once.
     * One that has not parked when weft_shutdown runs is abandoned at its
     * park (weft/runtime.h), so each ends up abandoned on its target. */
    long value = 1;
    for (int i = 0; i < 3; i++) {
        if (weft_chan_send(probe, &value) != 0)
            return 12;
    }
    if (weft_shutdown() != 0)
        return 13;
    weft_chan_release(a);
    weft_chan_release(b);
    weft_chan_release(probe);
    return 0;
}

static void test_release_after_shutdown(void **state)
{
    (void)state;
    int status = run_in_child(release_after_shutdown, NULL, NULL, 0);
    if (status != 0)
        print_message("child exited with status %d (above 128: killed by signal %d)\n",
                      status, status > 128 ? status - 128 : 0);
    assert_int_equal(status, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_null_channel_ops, stop_runtime),
        cmocka_unit_test_teardown(test_null_channel_blocks_forever, stop_runtime),
        cmocka_unit_test_teardown(test_make_rejects_overflow, stop_runtime),
        cmocka_unit_test_teardown(test_len_and_cap, stop_runtime),
        cmocka_unit_test_teardown(test_try_ops_on_open_channel, stop_runtime),
        cmocka_unit_test_teardown(test_closed_channel_ops, stop_runtime),
        cmocka_unit_test_teardown(test_recv_null_elem_discards, stop_runtime),
        cmocka_unit_test_teardown(test_zero_size_channel, stop_runtime),
        cmocka_unit_test_teardown(test_large_elements, stop_runtime),
        cmocka_unit_test_teardown(test_retain_release, stop_runtime),
        cmocka_unit_test_teardown(test_channels_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_unbuffered_rendezvous, stop_runtime),
        cmocka_unit_test_teardown(test_fifo_through_chain, stop_runtime),
        cmocka_unit_test_teardown(test_fifo_per_sender, stop_runtime),
        cmocka_unit_test_teardown(test_prime_sieve, stop_runtime),
        cmocka_unit_test_teardown(test_close_wakes_blocked_crowd_one_p, stop_runtime),
        cmocka_unit_test_teardown(test_close_wakes_blocked_crowd_four_ps, stop_runtime),
        cmocka_unit_test_teardown(test_mpmc_buffered, stop_runtime),
        cmocka_unit_test_teardown(test_mpmc_unbuffered, stop_runtime),
        cmocka_unit_test_teardown(test_mpmc_zero_size, stop_runtime),
        cmocka_unit_test_teardown(test_mpmc_threads_and_coroutines, stop_runtime),
        cmocka_unit_test_teardown(test_thread_sends_to_coroutine, stop_runtime),
        cmocka_unit_test_teardown(test_coroutine_sends_to_blocked_thread, stop_runtime),
        cmocka_unit_test_teardown(test_coroutine_receives_from_blocked_thread, stop_runtime),
        cmocka_unit_test_teardown(test_thread_to_thread, stop_runtime),
        cmocka_unit_test_teardown(test_release_right_after_handoff, stop_runtime),
        cmocka_unit_test_teardown(test_release_after_shutdown, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
