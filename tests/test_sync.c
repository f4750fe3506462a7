/*
 * Mutex, reader/writer mutex, condition variable and once (weft/sync.h),
 * with coroutines on several Ps and plain threads sharing them.
 *
 * - Mutex: exact counts under contention, try_lock, unlock by another
 *   party, and starvation mode bounding a waiter's wait.
 * - RWMutex: readers inside together, writers alone, a writer not starved
 *   by a stream of readers, try_rlock and try_lock.
 * - Cond: producer/consumer with signal, one signal waking one waiter in
 *   FIFO order, broadcast waking all.
 * - Once: fn runs once and every caller returns after it finished.
 * - Shutdown: locks held by abandoned coroutines stay held, and waiters
 *   queued behind abandoned coroutines are still served.
 * - Misuse that Go throws on (unlocking an unlocked mutex or rwmutex, a
 *   negative wait group counter, once_do from inside its own fn) aborts a
 *   child process with a "weft: fatal:" message.
 *
 * Some tests call weft_sleep to let time pass and then check that
 * something has not happened: the sleep is the measured interval, not a
 * way to wait for another party.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Generous upper bound for any wait on this shared, noisy machine. */
#define LATE WEFT_SEC(2)

/* Busy-wait for about ns nanoseconds without yielding. */
static void spin_for(int64_t ns)
{
    int64_t end = weft_now() + ns;
    while (weft_now() < end) {
    }
}

/* ---- mutex: exact counts -------------------------------------------- */

typedef struct counter_state {
    weft_mutex mu;
    long value;           /* guarded by mu */
    _Atomic int inside;   /* holders right now; more than 1 is a bug */
    int increments;
    weft_wg wg;
} counter_state;

static void increment_locked(counter_state *s, int i)
{
    weft_mutex_lock(&s->mu);
    CHECK(atomic_fetch_add(&s->inside, 1) == 0);
    s->value++;
    /* Now and then hold the lock across a yield, so waiters park. */
    if (i % 128 == 0)
        weft_yield();
    atomic_fetch_sub(&s->inside, 1);
    weft_mutex_unlock(&s->mu);
}

static void increment_coroutine(void *arg)
{
    counter_state *s = arg;
    for (int i = 0; i < s->increments; i++)
        increment_locked(s, i);
    weft_wg_done(&s->wg);
}

static void *increment_thread(void *arg)
{
    counter_state *s = arg;
    for (int i = 0; i < s->increments; i++)
        increment_locked(s, i);
    return NULL;
}

/* 1,000 coroutines x 1,000 increments on 4 Ps: no increment is lost. */
static void test_mutex_counter_exact(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    counter_state s = { .increments = 1000 };
    const int coroutines = SCALE(1000);

    int64_t start = weft_now();
    weft_wg_add(&s.wg, coroutines);
    for (int i = 0; i < coroutines; i++)
        assert_int_equal(weft_go(increment_coroutine, &s), 0);
    weft_wg_wait(&s.wg);
    print_message("%d coroutines x %d increments: %.1f ms\n", coroutines,
                  s.increments, (weft_now() - start) / 1e6);

    assert_int_equal(s.value, (long)coroutines * s.increments);
    assert_int_equal(atomic_load(&s.inside), 0);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* Plain threads and coroutines lock the same mutex: a blocked thread waits
 * in the kernel, a blocked coroutine parks, and each wakes the other. */
static void test_mutex_threads_and_coroutines(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { THREADS = 2, COROUTINES = 8 };
    counter_state s = { .increments = SCALE(20000) };

    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, increment_thread, &s), 0);
    weft_wg_add(&s.wg, COROUTINES);
    for (int i = 0; i < COROUTINES; i++)
        assert_int_equal(weft_go(increment_coroutine, &s), 0);
    /* This thread joins in too. */
    for (int i = 0; i < s.increments; i++)
        increment_locked(&s, i);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);
    weft_wg_wait(&s.wg);

    assert_int_equal(s.value, (long)(THREADS + COROUTINES + 1) * s.increments);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- mutex: try_lock ------------------------------------------------- */

typedef struct try_lock_probe {
    weft_mutex *mu;
    _Atomic int result; /* -1 until the probe ran, then 0 or 1 */
} try_lock_probe;

static void try_lock_once(void *arg)
{
    try_lock_probe *p = arg;
    bool got = weft_mutex_try_lock(p->mu);
    if (got)
        weft_mutex_unlock(p->mu);
    atomic_store(&p->result, got ? 1 : 0);
}

static void test_mutex_try_lock(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_mutex mu = {0};

    /* Free: try_lock takes it. Held: false, for the holder too. */
    assert_true(weft_mutex_try_lock(&mu));
    assert_false(weft_mutex_try_lock(&mu));
    weft_mutex_unlock(&mu);

    weft_mutex_lock(&mu);
    assert_false(weft_mutex_try_lock(&mu));

    /* Another coroutine fails too while this thread has it locked. */
    try_lock_probe p = { .mu = &mu, .result = -1 };
    assert_int_equal(weft_go(try_lock_once, &p), 0);
    for (int64_t deadline = weft_now() + LATE; atomic_load(&p.result) < 0 && weft_now() < deadline;)
        weft_yield();
    assert_int_equal(atomic_load(&p.result), 0);
    weft_mutex_unlock(&mu);

    /* Once released, the other coroutine gets it. */
    atomic_store(&p.result, -1);
    assert_int_equal(weft_go(try_lock_once, &p), 0);
    for (int64_t deadline = weft_now() + LATE; atomic_load(&p.result) < 0 && weft_now() < deadline;)
        weft_yield();
    assert_int_equal(atomic_load(&p.result), 1);

    assert_true(weft_mutex_try_lock(&mu));
    weft_mutex_unlock(&mu);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct handoff {
    weft_mutex mu;
    _Atomic int waiter_started;
    _Atomic int waiter_locked;
    weft_wg wg;
} handoff;

static void lock_then_unlock(void *arg)
{
    handoff *h = arg;
    atomic_store(&h->waiter_started, 1);
    weft_mutex_lock(&h->mu);
    atomic_store(&h->waiter_locked, 1);
    weft_mutex_unlock(&h->mu);
    weft_wg_done(&h->wg);
}

static void unlock_for_another(void *arg)
{
    handoff *h = arg;
    weft_mutex_unlock(&h->mu);
    weft_wg_done(&h->wg);
}

/* As in Go, a mutex is not tied to the coroutine that locked it: this
 * thread locks it and another coroutine unlocks it, waking the waiter. */
static void test_mutex_unlock_by_another(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    handoff h = {0};
    weft_mutex_lock(&h.mu);
    weft_wg_add(&h.wg, 2);
    assert_int_equal(weft_go(lock_then_unlock, &h), 0);
    assert_true(wait_for_count(&h.waiter_started, 1, LATE));
    assert_int_equal(weft_sleep(WEFT_MS(10)), 0);
    assert_int_equal(atomic_load(&h.waiter_locked), 0);
    assert_int_equal(weft_go(unlock_for_another, &h), 0);
    weft_wg_wait(&h.wg);
    assert_int_equal(atomic_load(&h.waiter_locked), 1);
    assert_true(weft_mutex_try_lock(&h.mu));
    weft_mutex_unlock(&h.mu);
    assert_int_equal(weft_shutdown(), 0);
}

/* The mutex works on a plain thread without a runtime. */
static void test_mutex_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    weft_mutex mu = {0};
    weft_mutex_lock(&mu);
    assert_false(weft_mutex_try_lock(&mu));
    weft_mutex_unlock(&mu);
    assert_true(weft_mutex_try_lock(&mu));
    weft_mutex_unlock(&mu);
}

/* ---- mutex: starvation mode ----------------------------------------- */

typedef struct starvation {
    weft_mutex mu;
    int64_t hold;           /* how long a hammer holds the lock */
    bool yield_between;     /* whether a hammer yields between two locks */
    _Atomic int stop;
    _Atomic int hammers_started;
    long acquisitions;      /* guarded by mu */
    int64_t max_wait;       /* written by the waiter only */
    int64_t total_wait;
    int waits;
    weft_wg wg;
} starvation;

static void hammer_mutex(starvation *s)
{
    atomic_fetch_add(&s->hammers_started, 1);
    /* Bounded in time even if the waiter never finishes. */
    int64_t deadline = weft_now() + WEFT_SEC(20);
    while (!atomic_load(&s->stop) && weft_now() < deadline) {
        weft_mutex_lock(&s->mu);
        s->acquisitions++;
        spin_for(s->hold);
        weft_mutex_unlock(&s->mu);
        if (s->yield_between)
            weft_yield();
    }
}

static void hammer_coroutine(void *arg)
{
    starvation *s = arg;
    hammer_mutex(s);
    weft_wg_done(&s->wg);
}

static void *hammer_thread(void *arg)
{
    hammer_mutex(arg);
    return NULL;
}

static void measure_waits(void *arg)
{
    starvation *s = arg;
    for (int i = 0; i < s->waits; i++) {
        int64_t start = weft_now();
        weft_mutex_lock(&s->mu);
        int64_t waited = weft_now() - start;
        s->acquisitions++;
        weft_mutex_unlock(&s->mu);
        s->total_wait += waited;
        if (waited > s->max_wait)
            s->max_wait = waited;
        weft_yield();
    }
    atomic_store(&s->stop, 1);
    weft_wg_done(&s->wg);
}

/* A waiter that waited longer than 1 ms gets the mutex handed over in FIFO
 * order, so its wait stays bounded while others lock and unlock in tight
 * loops. The bound is generous: 500 ms, or 2 s under sanitizers. */
static void test_mutex_starvation_bounded(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { HAMMERS = 8 };
    starvation s = { .waits = 200, .hold = WEFT_US(5), .yield_between = true };

    weft_wg_add(&s.wg, HAMMERS + 1);
    for (int i = 0; i < HAMMERS; i++)
        assert_int_equal(weft_go(hammer_coroutine, &s), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, hammer_thread, &s), 0);
    assert_true(wait_for_count(&s.hammers_started, HAMMERS + 1, LATE));
    assert_int_equal(weft_go(measure_waits, &s), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(pthread_join(thread, NULL), 0);

    print_message("waiter: %d locks, mean wait %.3f ms, max %.3f ms; %ld acquisitions in all\n",
                  s.waits, s.total_wait / 1e6 / s.waits, s.max_wait / 1e6, s.acquisitions);
    assert_true(s.max_wait < (TEST_SANITIZED ? LATE : WEFT_MS(500)));
    assert_int_equal(weft_shutdown(), 0);
}

/* Go's mutex fairness test: a coroutine and a plain thread hold the lock
 * for 100 us at a time and lock again at once, without yielding. A third
 * party still gets the lock 10 times, each wait bounded as above. */
static void test_mutex_fairness_tight_loop(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    starvation s = { .waits = 10, .hold = WEFT_US(100), .yield_between = false };

    weft_wg_add(&s.wg, 2);
    assert_int_equal(weft_go(hammer_coroutine, &s), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, hammer_thread, &s), 0);
    assert_true(wait_for_count(&s.hammers_started, 2, LATE));
    assert_int_equal(weft_go(measure_waits, &s), 0);
    weft_wg_wait(&s.wg);
    assert_int_equal(pthread_join(thread, NULL), 0);

    print_message("waiter: %d locks, mean wait %.3f ms, max %.3f ms; %ld acquisitions in all\n",
                  s.waits, s.total_wait / 1e6 / s.waits, s.max_wait / 1e6, s.acquisitions);
    assert_true(s.max_wait < (TEST_SANITIZED ? LATE : WEFT_MS(500)));
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- rwmutex --------------------------------------------------------- */

typedef struct rw_probe {
    weft_rwmutex *rw;
    _Atomic int done;
    _Atomic int got;
} rw_probe;

static void rlock_and_release(void *arg)
{
    rw_probe *p = arg;
    weft_rwmutex_rlock(p->rw);
    atomic_store(&p->got, 1);
    weft_rwmutex_runlock(p->rw);
    atomic_store(&p->done, 1);
}

/* A second reader gets in while the first one holds the read lock. */
static void test_rwmutex_readers_share(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_rwmutex rw = {0};

    weft_rwmutex_rlock(&rw);
    rw_probe p = { .rw = &rw };
    assert_int_equal(weft_go(rlock_and_release, &p), 0);
    assert_true(wait_for_count(&p.done, 1, LATE));
    assert_int_equal(atomic_load(&p.got), 1);
    weft_rwmutex_runlock(&rw);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct rw_stress {
    weft_rwmutex rw;
    _Atomic int readers_inside;
    _Atomic int writers_inside;
    _Atomic int max_readers;
    long data;               /* written under the write lock */
    long writes;             /* guarded by the write lock */
    int reader_rounds;
    int writer_rounds;
    weft_wg wg;
} rw_stress;

static void read_rounds(rw_stress *s)
{
    for (int i = 0; i < s->reader_rounds; i++) {
        weft_rwmutex_rlock(&s->rw);
        int now = atomic_fetch_add(&s->readers_inside, 1) + 1;
        int seen = atomic_load(&s->max_readers);
        while (now > seen && !atomic_compare_exchange_weak(&s->max_readers, &seen, now)) {
        }
        CHECK(atomic_load(&s->writers_inside) == 0);
        long before = s->data;
        weft_yield();
        CHECK(atomic_load(&s->writers_inside) == 0);
        CHECK(s->data == before);
        atomic_fetch_sub(&s->readers_inside, 1);
        weft_rwmutex_runlock(&s->rw);
    }
}

static void write_rounds(rw_stress *s)
{
    for (int i = 0; i < s->writer_rounds; i++) {
        weft_rwmutex_lock(&s->rw);
        CHECK(atomic_fetch_add(&s->writers_inside, 1) == 0);
        CHECK(atomic_load(&s->readers_inside) == 0);
        s->data++;
        if (i % 4 == 0)
            weft_yield();
        CHECK(atomic_load(&s->readers_inside) == 0);
        s->writes++;
        atomic_fetch_sub(&s->writers_inside, 1);
        weft_rwmutex_unlock(&s->rw);
        weft_yield();
    }
}

static void reader_coroutine(void *arg)
{
    rw_stress *s = arg;
    read_rounds(s);
    weft_wg_done(&s->wg);
}

static void writer_coroutine(void *arg)
{
    rw_stress *s = arg;
    write_rounds(s);
    weft_wg_done(&s->wg);
}

static void *reader_thread(void *arg)
{
    read_rounds(arg);
    return NULL;
}

static void *writer_thread(void *arg)
{
    write_rounds(arg);
    return NULL;
}

/* Readers overlap with each other, never with a writer; writers are
 * alone. Coroutines on 4 Ps and plain threads mix. */
static void test_rwmutex_exclusion(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { READERS = 32, WRITERS = 4 };
    rw_stress s = { .reader_rounds = SCALE(10000), .writer_rounds = SCALE(5000) };

    weft_wg_add(&s.wg, READERS + WRITERS);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(weft_go(reader_coroutine, &s), 0);
    for (int i = 0; i < WRITERS; i++)
        assert_int_equal(weft_go(writer_coroutine, &s), 0);
    pthread_t reader, writer;
    assert_int_equal(pthread_create(&reader, NULL, reader_thread, &s), 0);
    assert_int_equal(pthread_create(&writer, NULL, writer_thread, &s), 0);
    assert_int_equal(pthread_join(reader, NULL), 0);
    assert_int_equal(pthread_join(writer, NULL), 0);
    weft_wg_wait(&s.wg);

    print_message("max concurrent readers: %d\n", atomic_load(&s.max_readers));
    assert_true(atomic_load(&s.max_readers) > 1);
    assert_int_equal(s.writes, (long)(WRITERS + 1) * s.writer_rounds);
    assert_int_equal(s.data, s.writes);
    assert_int_equal(atomic_load(&s.readers_inside), 0);
    assert_int_equal(atomic_load(&s.writers_inside), 0);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

typedef struct reader_stream {
    weft_rwmutex rw;
    _Atomic int stop;
    _Atomic int readers_started;
    _Atomic int readers_inside;
    _Atomic int next_reader;
    int readers_inside_at_start;  /* seen by the writer before it locked */
    int64_t writer_wait;
    _Atomic int writer_done;
    weft_wg wg;
} reader_stream;

static void stream_reader(void *arg)
{
    reader_stream *s = arg;
    /* Readers hold the lock for different times, so they do not leave
     * together and some reader is nearly always inside. */
    int64_t hold = WEFT_US(250) * (1 + atomic_fetch_add(&s->next_reader, 1) % 4);
    atomic_fetch_add(&s->readers_started, 1);
    int64_t deadline = weft_now() + WEFT_SEC(20);
    while (!atomic_load(&s->stop) && weft_now() < deadline) {
        weft_rwmutex_rlock(&s->rw);
        atomic_fetch_add(&s->readers_inside, 1);
        weft_sleep(hold);
        atomic_fetch_sub(&s->readers_inside, 1);
        weft_rwmutex_runlock(&s->rw);
    }
    weft_wg_done(&s->wg);
}

static void stream_writer(void *arg)
{
    reader_stream *s = arg;
    /* Start while readers hold the lock, so the writer has to wait. */
    for (int64_t deadline = weft_now() + LATE;
         atomic_load(&s->readers_inside) == 0 && weft_now() < deadline;)
        weft_yield();
    s->readers_inside_at_start = atomic_load(&s->readers_inside);
    int64_t start = weft_now();
    weft_rwmutex_lock(&s->rw);
    s->writer_wait = weft_now() - start;
    CHECK(atomic_load(&s->readers_inside) == 0);
    weft_rwmutex_unlock(&s->rw);
    atomic_store(&s->writer_done, 1);
    atomic_store(&s->stop, 1);
    weft_wg_done(&s->wg);
}

/* A writer that waits blocks new readers, so a continuous stream of
 * overlapping readers does not keep it out. Without that rule the writer
 * would wait until the readers stop after 20 s. */
static void test_rwmutex_writer_not_starved(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { READERS = 16 };
    reader_stream s = {0};

    weft_wg_add(&s.wg, READERS + 1);
    for (int i = 0; i < READERS; i++)
        assert_int_equal(weft_go(stream_reader, &s), 0);
    assert_true(wait_for_count(&s.readers_started, READERS, LATE));
    assert_int_equal(weft_go(stream_writer, &s), 0);
    weft_wg_wait(&s.wg);

    print_message("writer waited %.3f ms behind %d readers (%d inside when it started)\n",
                  s.writer_wait / 1e6, READERS, s.readers_inside_at_start);
    assert_int_equal(atomic_load(&s.writer_done), 1);
    assert_true(s.readers_inside_at_start > 0);
    assert_true(s.writer_wait < (TEST_SANITIZED ? LATE : WEFT_MS(500)));
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void lock_and_release(void *arg)
{
    rw_probe *p = arg;
    weft_rwmutex_lock(p->rw);
    atomic_store(&p->got, 1);
    weft_rwmutex_unlock(p->rw);
    atomic_store(&p->done, 1);
}

static void test_rwmutex_try_locks(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_rwmutex rw = {0};

    /* Write-locked: every try fails. */
    assert_true(weft_rwmutex_try_lock(&rw));
    assert_false(weft_rwmutex_try_lock(&rw));
    assert_false(weft_rwmutex_try_rlock(&rw));
    weft_rwmutex_unlock(&rw);

    /* Read-locked: more readers get in, a writer does not. */
    assert_true(weft_rwmutex_try_rlock(&rw));
    assert_true(weft_rwmutex_try_rlock(&rw));
    assert_false(weft_rwmutex_try_lock(&rw));
    weft_rwmutex_runlock(&rw);
    assert_false(weft_rwmutex_try_lock(&rw));
    weft_rwmutex_runlock(&rw);
    assert_true(weft_rwmutex_try_lock(&rw));
    weft_rwmutex_unlock(&rw);

    /* A writer waiting behind a reader makes try_rlock fail. */
    weft_rwmutex_rlock(&rw);
    rw_probe p = { .rw = &rw };
    assert_int_equal(weft_go(lock_and_release, &p), 0);
    bool writer_waiting = false;
    for (int64_t deadline = weft_now() + LATE; weft_now() < deadline;) {
        if (!weft_rwmutex_try_rlock(&rw)) {
            writer_waiting = true;
            break;
        }
        weft_rwmutex_runlock(&rw);
        weft_yield();
    }
    assert_true(writer_waiting);
    assert_int_equal(atomic_load(&p.got), 0);
    assert_false(weft_rwmutex_try_lock(&rw));
    weft_rwmutex_runlock(&rw);
    assert_true(wait_for_count(&p.done, 1, LATE));
    assert_int_equal(atomic_load(&p.got), 1);

    assert_true(weft_rwmutex_try_rlock(&rw));
    weft_rwmutex_runlock(&rw);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- cond ------------------------------------------------------------ */

enum { QUEUE_CAP = 8 };

typedef struct bounded_queue {
    weft_mutex mu;
    weft_cond not_empty;
    weft_cond not_full;
    long items[QUEUE_CAP];   /* guarded by mu */
    int head, len;           /* guarded by mu */
    int items_per_producer;
    long consumed_sum;       /* guarded by mu */
    long consumed_count;     /* guarded by mu */
    long total;
    weft_wg wg;
} bounded_queue;

static void queue_put(bounded_queue *q, long v)
{
    weft_mutex_lock(&q->mu);
    while (q->len == QUEUE_CAP)
        weft_cond_wait(&q->not_full, &q->mu);
    q->items[(q->head + q->len) % QUEUE_CAP] = v;
    q->len++;
    weft_cond_signal(&q->not_empty);
    weft_mutex_unlock(&q->mu);
}

/* Takes one item; returns false once every item has been taken. */
static bool queue_take(bounded_queue *q)
{
    weft_mutex_lock(&q->mu);
    while (q->len == 0 && q->consumed_count < q->total)
        weft_cond_wait(&q->not_empty, &q->mu);
    if (q->len == 0) {
        weft_mutex_unlock(&q->mu);
        return false;
    }
    long v = q->items[q->head];
    q->head = (q->head + 1) % QUEUE_CAP;
    q->len--;
    q->consumed_sum += v;
    q->consumed_count++;
    if (q->consumed_count == q->total)
        weft_cond_broadcast(&q->not_empty); /* release the other consumers */
    weft_cond_signal(&q->not_full);
    weft_mutex_unlock(&q->mu);
    return true;
}

static void produce(void *arg)
{
    bounded_queue *q = arg;
    for (int i = 1; i <= q->items_per_producer; i++)
        queue_put(q, i);
    weft_wg_done(&q->wg);
}

static void consume(void *arg)
{
    bounded_queue *q = arg;
    while (queue_take(q)) {
    }
    weft_wg_done(&q->wg);
}

static void *consume_thread(void *arg)
{
    bounded_queue *q = arg;
    while (queue_take(q)) {
    }
    return NULL;
}

/* A bounded queue built from one mutex and two conds, with signal only on
 * the hot path: every item arrives once. */
static void test_cond_producer_consumer(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { PRODUCERS = 6, CONSUMERS = 5 };
    bounded_queue q = { .items_per_producer = SCALE(20000) };
    q.total = (long)PRODUCERS * q.items_per_producer;

    weft_wg_add(&q.wg, PRODUCERS + CONSUMERS);
    for (int i = 0; i < CONSUMERS; i++)
        assert_int_equal(weft_go(consume, &q), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, consume_thread, &q), 0);
    for (int i = 0; i < PRODUCERS; i++)
        assert_int_equal(weft_go(produce, &q), 0);
    weft_wg_wait(&q.wg);
    assert_int_equal(pthread_join(thread, NULL), 0);

    long per_producer = (long)q.items_per_producer * (q.items_per_producer + 1) / 2;
    assert_int_equal(q.consumed_count, q.total);
    assert_int_equal(q.consumed_sum, PRODUCERS * per_producer);
    assert_int_equal(q.len, 0);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct cond_crowd {
    weft_mutex mu;
    weft_cond cond;
    int waiting;        /* guarded by mu */
    int tokens;         /* guarded by mu */
    bool open;          /* guarded by mu */
    _Atomic int wait_returns;
    _Atomic int finished;
    weft_wg wg;
} cond_crowd;

/* Wait for a token or for the crowd to open; count every return from
 * weft_cond_wait. */
static void crowd_member(cond_crowd *c)
{
    weft_mutex_lock(&c->mu);
    c->waiting++;
    while (c->tokens == 0 && !c->open) {
        weft_cond_wait(&c->cond, &c->mu);
        atomic_fetch_add(&c->wait_returns, 1);
    }
    if (c->tokens > 0)
        c->tokens--;
    c->waiting--;
    weft_mutex_unlock(&c->mu);
    atomic_fetch_add(&c->finished, 1);
}

static void crowd_coroutine(void *arg)
{
    cond_crowd *c = arg;
    crowd_member(c);
    weft_wg_done(&c->wg);
}

static void *crowd_thread(void *arg)
{
    crowd_member(arg);
    return NULL;
}

/* Waits until n members sit in weft_cond_wait. A member counts itself
 * under mu and weft_cond_wait releases mu only once it waits, so holding
 * mu with the count at n means all n wait. */
static bool wait_for_waiting(cond_crowd *c, int n)
{
    int64_t deadline = weft_now() + LATE;
    for (;;) {
        weft_mutex_lock(&c->mu);
        int waiting = c->waiting;
        weft_mutex_unlock(&c->mu);
        if (waiting == n)
            return true;
        if (weft_now() > deadline)
            return false;
        weft_yield();
    }
}

/* One signal wakes exactly one waiter; broadcast wakes all the rest,
 * coroutines and a plain thread alike. */
static void test_cond_signal_and_broadcast(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    const int coroutines = SCALE(200);
    const int members = coroutines + 1;
    cond_crowd c = {0};

    weft_wg_add(&c.wg, coroutines);
    for (int i = 0; i < coroutines; i++)
        assert_int_equal(weft_go(crowd_coroutine, &c), 0);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, crowd_thread, &c), 0);
    assert_true(wait_for_waiting(&c, members));
    assert_int_equal(atomic_load(&c.wait_returns), 0);

    weft_mutex_lock(&c.mu);
    c.tokens = 1;
    weft_cond_signal(&c.cond);
    weft_mutex_unlock(&c.mu);
    assert_true(wait_for_count(&c.finished, 1, LATE));
    assert_true(wait_for_waiting(&c, members - 1));
    /* Spurious returns do not happen, so no other waiter woke up. */
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);
    assert_int_equal(atomic_load(&c.wait_returns), 1);
    assert_int_equal(atomic_load(&c.finished), 1);

    /* A signal or broadcast with no waiter does nothing, as in Go. */
    weft_cond c2 = {0};
    weft_cond_signal(&c2);
    weft_cond_broadcast(&c2);

    weft_mutex_lock(&c.mu);
    c.open = true;
    weft_cond_broadcast(&c.cond);
    weft_mutex_unlock(&c.mu);
    assert_true(wait_for_count(&c.finished, members, LATE));
    weft_wg_wait(&c.wg);
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(atomic_load(&c.wait_returns), members);
    assert_int_equal(c.waiting, 0);
    assert_int_equal(weft_shutdown(), 0);
}

typedef struct cond_queue {
    weft_mutex mu;
    weft_cond cond;
    int arrivals;       /* guarded by mu */
    int waiting;        /* guarded by mu */
    int tokens;         /* guarded by mu */
    int wakes;          /* guarded by mu */
    int woken_order[64];/* guarded by mu: arrival numbers in wake order */
    weft_wg wg;
} cond_queue;

static void wait_in_line(void *arg)
{
    cond_queue *q = arg;
    weft_mutex_lock(&q->mu);
    int ticket = q->arrivals++;
    q->waiting++;
    while (q->tokens == 0)
        weft_cond_wait(&q->cond, &q->mu);
    q->tokens--;
    q->woken_order[q->wakes++] = ticket;
    q->waiting--;
    weft_mutex_unlock(&q->mu);
    weft_wg_done(&q->wg);
}

/* Each signal wakes the waiter that has waited longest. A waiter takes
 * its ticket under mu and weft_cond_wait queues it before releasing mu,
 * so ticket order is wait order. */
static void test_cond_signal_fifo(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { WAITERS = 40 };
    cond_queue q = {0};
    weft_wg_add(&q.wg, WAITERS);
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(weft_go(wait_in_line, &q), 0);

    for (int64_t deadline = weft_now() + LATE;;) {
        weft_mutex_lock(&q.mu);
        int waiting = q.waiting;
        weft_mutex_unlock(&q.mu);
        if (waiting == WAITERS)
            break;
        assert_true(weft_now() < deadline);
        weft_yield();
    }

    for (int k = 0; k < WAITERS; k++) {
        weft_mutex_lock(&q.mu);
        q.tokens = 1;
        weft_cond_signal(&q.cond);
        weft_mutex_unlock(&q.mu);
        for (int64_t deadline = weft_now() + LATE;;) {
            weft_mutex_lock(&q.mu);
            int wakes = q.wakes;
            weft_mutex_unlock(&q.mu);
            if (wakes == k + 1)
                break;
            assert_true(weft_now() < deadline);
            weft_yield();
        }
    }
    weft_wg_wait(&q.wg);
    for (int k = 0; k < WAITERS; k++) {
        if (q.woken_order[k] != k)
            fail_msg("wake %d went to the waiter that arrived %d-th", k, q.woken_order[k]);
    }
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- once ------------------------------------------------------------ */

typedef struct once_state {
    weft_once once;
    _Atomic int calls;
    _Atomic int finished;   /* set by fn as its last step */
    _Atomic int callers_done;
    weft_wg wg;
} once_state;

static void slow_init(void *arg)
{
    once_state *s = arg;
    atomic_fetch_add(&s->calls, 1);
    /* Take long enough that other callers arrive while fn runs. */
    for (int i = 0; i < 100; i++)
        weft_yield();
    atomic_store(&s->finished, 1);
}

static void call_once(once_state *s)
{
    weft_once_do(&s->once, slow_init, s);
    CHECK(atomic_load(&s->finished) == 1);
    atomic_fetch_add(&s->callers_done, 1);
}

static void once_coroutine(void *arg)
{
    once_state *s = arg;
    call_once(s);
    weft_wg_done(&s->wg);
}

static void *once_thread(void *arg)
{
    call_once(arg);
    return NULL;
}

/* 1,000 concurrent callers, coroutines on 4 Ps and plain threads: fn runs
 * once, and no caller returns before it finished. */
static void test_once_runs_once(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 4 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { THREADS = 4 };
    const int coroutines = SCALE(1000);
    once_state s = {0};

    weft_wg_add(&s.wg, coroutines);
    for (int i = 0; i < coroutines; i++)
        assert_int_equal(weft_go(once_coroutine, &s), 0);
    pthread_t threads[THREADS];
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_create(&threads[i], NULL, once_thread, &s), 0);
    weft_wg_wait(&s.wg);
    for (int i = 0; i < THREADS; i++)
        assert_int_equal(pthread_join(threads[i], NULL), 0);

    assert_int_equal(atomic_load(&s.calls), 1);
    assert_int_equal(atomic_load(&s.callers_done), coroutines + THREADS);

    /* Later calls return at once without running fn. */
    call_once(&s);
    assert_int_equal(atomic_load(&s.calls), 1);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static void count_call(void *arg)
{
    (*(int *)arg)++;
}

/* Once works on a plain thread without a runtime too. */
static void test_once_without_runtime(void **state)
{
    (void)state;
    weft_once once = {0};
    int calls = 0;
    weft_once_do(&once, count_call, &calls);
    weft_once_do(&once, count_call, &calls);
    assert_int_equal(calls, 1);
}

/* ---- runtime shutdown with waiters --------------------------------- */

typedef struct abandoned {
    weft_mutex mu;
    weft_rwmutex rw;
    weft_cond cond;
    bool signalled;           /* guarded by mu */
    _Atomic int holder_ready;
    _Atomic int waiters_started;
    _Atomic int waiters_returned;
    _Atomic int thread_started;
    _Atomic int thread_done;
} abandoned;

static void lock_and_block_forever(void *arg)
{
    abandoned *a = arg;
    weft_mutex_lock(&a->mu);
    atomic_store(&a->holder_ready, 1);
    weft_chan_recv(NULL, NULL);
}

static void lock_after_holder(void *arg)
{
    abandoned *a = arg;
    atomic_fetch_add(&a->waiters_started, 1);
    weft_mutex_lock(&a->mu);
    atomic_fetch_add(&a->waiters_returned, 1);
    weft_mutex_unlock(&a->mu);
}

static void *lock_on_thread(void *arg)
{
    abandoned *a = arg;
    atomic_store(&a->thread_started, 1);
    weft_mutex_lock(&a->mu);
    weft_mutex_unlock(&a->mu);
    atomic_store(&a->thread_done, 1);
    return NULL;
}

/* A mutex held by a coroutine at shutdown stays locked. Its coroutine
 * waiters are abandoned, and an unlock afterwards (by another party, as
 * Go allows) serves the plain thread queued behind them without reading
 * their freed records. A later runtime can use the mutex again. */
static void test_mutex_survives_shutdown(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { WAITERS = 5 };
    abandoned a = {0};
    assert_int_equal(weft_go(lock_and_block_forever, &a), 0);
    assert_true(wait_for_count(&a.holder_ready, 1, LATE));
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(weft_go(lock_after_holder, &a), 0);
    assert_true(wait_for_count(&a.waiters_started, WAITERS, LATE));
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, lock_on_thread, &a), 0);
    assert_true(wait_for_count(&a.thread_started, 1, LATE));
    /* Let the waiters park; they are abandoned at their park either way. */
    assert_int_equal(weft_sleep(WEFT_MS(20)), 0);

    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(atomic_load(&a.waiters_returned), 0);
    assert_int_equal(atomic_load(&a.thread_done), 0);
    assert_false(weft_mutex_try_lock(&a.mu));

    weft_mutex_unlock(&a.mu);
    assert_true(wait_for_count(&a.thread_done, 1, LATE));
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(atomic_load(&a.waiters_returned), 0);
    assert_true(weft_mutex_try_lock(&a.mu));
    weft_mutex_unlock(&a.mu);

    assert_int_equal(weft_init(&cfg), 0);
    try_lock_probe p = { .mu = &a.mu, .result = -1 };
    assert_int_equal(weft_go(try_lock_once, &p), 0);
    for (int64_t deadline = weft_now() + LATE; atomic_load(&p.result) < 0 && weft_now() < deadline;)
        weft_yield();
    assert_int_equal(atomic_load(&p.result), 1);
    assert_int_equal(weft_shutdown(), 0);
}

static void rlock_and_block_forever(void *arg)
{
    abandoned *a = arg;
    weft_rwmutex_rlock(&a->rw);
    atomic_store(&a->holder_ready, 1);
    weft_chan_recv(NULL, NULL);
}

/* A read lock held by an abandoned coroutine stays held: writers stay
 * out, readers still get in, and a runlock by another party frees it. */
static void test_rwmutex_survives_shutdown(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    abandoned a = {0};
    assert_int_equal(weft_go(rlock_and_block_forever, &a), 0);
    assert_true(wait_for_count(&a.holder_ready, 1, LATE));
    assert_int_equal(weft_shutdown(), 0);

    assert_false(weft_rwmutex_try_lock(&a.rw));
    assert_true(weft_rwmutex_try_rlock(&a.rw));
    weft_rwmutex_runlock(&a.rw);
    weft_rwmutex_runlock(&a.rw);
    assert_true(weft_rwmutex_try_lock(&a.rw));
    weft_rwmutex_unlock(&a.rw);
}

static void cond_wait_coroutine(void *arg)
{
    abandoned *a = arg;
    weft_mutex_lock(&a->mu);
    atomic_fetch_add(&a->waiters_started, 1);
    while (!a->signalled)
        weft_cond_wait(&a->cond, &a->mu);
    atomic_fetch_add(&a->waiters_returned, 1);
    weft_mutex_unlock(&a->mu);
}

static void *cond_wait_thread(void *arg)
{
    abandoned *a = arg;
    weft_mutex_lock(&a->mu);
    atomic_store(&a->thread_started, 1);
    while (!a->signalled)
        weft_cond_wait(&a->cond, &a->mu);
    weft_mutex_unlock(&a->mu);
    atomic_store(&a->thread_done, 1);
    return NULL;
}

/* Coroutines waiting on a cond at shutdown are abandoned, and a later
 * signal skips them and wakes the plain thread queued behind them. */
static void test_cond_survives_shutdown(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    enum { WAITERS = 5 };
    abandoned a = {0};
    for (int i = 0; i < WAITERS; i++)
        assert_int_equal(weft_go(cond_wait_coroutine, &a), 0);
    /* A waiter counts itself under mu, and weft_cond_wait queues it before
     * it releases mu, so once this thread gets mu with the count at
     * WAITERS, all of them are queued. */
    assert_true(wait_for_count(&a.waiters_started, WAITERS, LATE));
    weft_mutex_lock(&a.mu);
    weft_mutex_unlock(&a.mu);
    pthread_t thread;
    assert_int_equal(pthread_create(&thread, NULL, cond_wait_thread, &a), 0);
    assert_true(wait_for_count(&a.thread_started, 1, LATE));
    weft_mutex_lock(&a.mu);
    weft_mutex_unlock(&a.mu);

    assert_int_equal(weft_shutdown(), 0);
    weft_mutex_lock(&a.mu);
    a.signalled = true;
    weft_cond_signal(&a.cond);
    weft_mutex_unlock(&a.mu);
    assert_true(wait_for_count(&a.thread_done, 1, LATE));
    assert_int_equal(pthread_join(thread, NULL), 0);
    assert_int_equal(atomic_load(&a.waiters_returned), 0);
}

/* Run body in a child and assert that it aborted with a message on stderr
 * that contains every string in expected (NULL-terminated). */
static void assert_child_aborts(void (*body)(void), const char *const *expected)
{
    char err[2048];
    int status = run_void_in_child(body, err, sizeof err);
    print_message("child status %d, stderr: %s", status, err);
    assert_int_equal(status, 128 + SIGABRT);
    for (size_t i = 0; expected[i]; i++) {
        if (!strstr(err, expected[i]))
            fail_msg("stderr lacks \"%s\": %s", expected[i], err);
    }
}

static void unlock_unlocked_mutex(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_mutex mu = {0};
    weft_mutex_unlock(&mu);
}

static int unlock_twice_main(void *arg)
{
    (void)arg;
    weft_mutex mu = {0};
    weft_mutex_lock(&mu);
    weft_mutex_unlock(&mu);
    weft_mutex_unlock(&mu);
    return 0;
}

static void unlock_mutex_twice_in_coroutine(void)
{
    weft_main(unlock_twice_main, NULL);
}

static void test_mutex_unlock_unlocked_fatal(void **state)
{
    (void)state;
    const char *expected[] = { "weft: fatal: unlock of unlocked mutex", NULL };
    assert_child_aborts(unlock_unlocked_mutex, expected);
    assert_child_aborts(unlock_mutex_twice_in_coroutine, expected);
}

static void runlock_without_rlock(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_rwmutex rw = {0};
    weft_rwmutex_runlock(&rw);
}

static void runlock_after_write_lock(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_rwmutex rw = {0};
    weft_rwmutex_lock(&rw);
    weft_rwmutex_runlock(&rw);
}

static int unlock_rwmutex_twice_main(void *arg)
{
    (void)arg;
    weft_rwmutex rw = {0};
    weft_rwmutex_lock(&rw);
    weft_rwmutex_unlock(&rw);
    weft_rwmutex_unlock(&rw);
    return 0;
}

static void unlock_rwmutex_twice(void)
{
    weft_main(unlock_rwmutex_twice_main, NULL);
}

static void unlock_unlocked_rwmutex(void)
{
    if (weft_init(NULL) != 0)
        _exit(10);
    weft_rwmutex rw = {0};
    weft_rwmutex_unlock(&rw);
}

static void test_rwmutex_misuse_fatal(void **state)
{
    (void)state;
    const char *expected[] = { "weft: fatal:", "unlock", NULL };
    assert_child_aborts(runlock_without_rlock, expected);
    assert_child_aborts(runlock_after_write_lock, expected);
    assert_child_aborts(unlock_unlocked_rwmutex, expected);
    assert_child_aborts(unlock_rwmutex_twice, expected);
}

static void wg_add_negative(void)
{
    weft_wg wg = {0};
    weft_wg_add(&wg, -1);
}

static int wg_done_too_often_main(void *arg)
{
    (void)arg;
    weft_wg wg = {0};
    weft_wg_add(&wg, 2);
    weft_wg_done(&wg);
    weft_wg_done(&wg);
    weft_wg_done(&wg);
    return 0;
}

static void wg_done_too_often(void)
{
    weft_main(wg_done_too_often_main, NULL);
}

static void test_wg_negative_fatal(void **state)
{
    (void)state;
    const char *expected[] = { "weft: fatal:", "negative", NULL };
    assert_child_aborts(wg_add_negative, expected);
    assert_child_aborts(wg_done_too_often, expected);
}

static void once_again(void *arg)
{
    weft_once *once = arg;
    weft_once_do(once, once_again, once);
}

static void once_recursive_on_thread(void)
{
    weft_once once = {0};
    weft_once_do(&once, once_again, &once);
}

static int once_recursive_main(void *arg)
{
    (void)arg;
    weft_once once = {0};
    weft_once_do(&once, once_again, &once);
    return 0;
}

static void once_recursive_in_coroutine(void)
{
    weft_main(once_recursive_main, NULL);
}

/* weft_once_do on the same once from inside fn would deadlock; it is
 * fatal instead, on a plain thread and in a coroutine. */
static void test_once_recursive_fatal(void **state)
{
    (void)state;
    const char *expected[] = { "weft: fatal:", NULL };
    assert_child_aborts(once_recursive_on_thread, expected);
    assert_child_aborts(once_recursive_in_coroutine, expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_mutex_counter_exact, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_threads_and_coroutines, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_try_lock, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_unlock_by_another, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_starvation_bounded, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_fairness_tight_loop, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_readers_share, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_exclusion, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_writer_not_starved, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_try_locks, stop_runtime),
        cmocka_unit_test_teardown(test_cond_producer_consumer, stop_runtime),
        cmocka_unit_test_teardown(test_cond_signal_and_broadcast, stop_runtime),
        cmocka_unit_test_teardown(test_cond_signal_fifo, stop_runtime),
        cmocka_unit_test_teardown(test_once_runs_once, stop_runtime),
        cmocka_unit_test_teardown(test_once_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_survives_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_survives_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_cond_survives_shutdown, stop_runtime),
        cmocka_unit_test_teardown(test_mutex_unlock_unlocked_fatal, stop_runtime),
        cmocka_unit_test_teardown(test_rwmutex_misuse_fatal, stop_runtime),
        cmocka_unit_test_teardown(test_wg_negative_fatal, stop_runtime),
        cmocka_unit_test_teardown(test_once_recursive_fatal, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
