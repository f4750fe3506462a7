/*
 * Diagnostics (weft/debug.h and the WEFT_DEBUG switches):
 * - weft_dump shows the wait reason, name, id and spawn site of
 *   coroutines parked on every kind of primitive;
 * - weft_stats_get counts spawns, live coroutines, parks and pending
 *   timers;
 * - weft_leakcheck returns 0 as soon as the coroutines have finished, and
 *   otherwise returns how many are left and prints their dump blocks;
 * - the deadlock detector aborts a weft_main program whose coroutines all
 *   wait on each other, and stays quiet while a timer, a socket, a
 *   weft_blocking call, a plain thread or a context deadline may still
 *   wake one, and under WEFT_DEBUG=deadlock=0;
 * - WEFT_DEBUG=dump=sigquit prints the dump on SIGQUIT and exits with
 *   status 2;
 * - a fatal misuse message names the coroutine and its spawn site.
 *
 * The detector and the SIGQUIT dump are checked in child processes: the
 * test program runs itself again with "--child SCENARIO", so each child
 * is a fresh weft_main program with no thread left over from earlier
 * tests. The parent reads the child's stdout and stderr and checks how it
 * ended. A child writes lines to stdout to tell the parent what it is
 * about to do (its coroutine ids and spawn lines, "parked").
 *
 * A coroutine is known to be parked once weft_stats_get has counted its
 * park. The tests poll that count with a deadline and never sleep to wait
 * for another party. The sleeps inside scenarios are the delays under
 * test.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <semaphore.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Upper bound for a wait that takes milliseconds when the machine is idle. */
#define LATE WEFT_SEC(2)
/* The delay after which a false-positive scenario's waiter is woken. */
#define DELAY_MS 200

#define DEADLOCK_MESSAGE "weft: fatal: all coroutines are asleep - deadlock!"

extern char **environ;

/* Sleep the calling plain thread for ms milliseconds. */
static void nap_ms(int ms)
{
    struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000 };
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static weft_stats stats_now(void)
{
    weft_stats s;
    weft_stats_get(&s);
    return s;
}

/* Wait a moment between polls. A coroutine yields, because a sleep would
 * add parks of its own to the count being polled. */
static void poll_pause(void)
{
    if (weft_in_coroutine())
        weft_yield();
    else
        nap_ms(1);
}

/* Poll weft_stats_get until at least want parks have been counted since
 * the runtime started. Returns false when LATE passes first. */
static bool wait_for_parks(int64_t want)
{
    int64_t deadline = weft_now() + LATE;
    while (stats_now().parks < want) {
        if (weft_now() > deadline)
            return false;
        poll_pause();
    }
    return true;
}

/* Poll weft_stats_get until exactly want coroutines are live. */
static bool wait_for_live(int64_t want)
{
    int64_t deadline = weft_now() + LATE;
    while (stats_now().coroutines != want) {
        if (weft_now() > deadline)
            return false;
        poll_pause();
    }
    return true;
}

/* Run weft_dump into a malloc'd string; the caller frees it. Not inlined:
 * gcc 12 then takes the returned buffer for the address of the local
 * pointer that open_memstream filled (-Wdangling-pointer). */
__attribute__((noinline)) static char *dump_to_string(void)
{
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    weft_dump(f);
    assert_int_equal(fclose(f), 0);
    assert_non_null(text);
    return text;
}

/* Copy the line of text that contains needle, and the line after it, into
 * out as "line\nnext". Returns false when no line contains needle. */
static bool block_with(const char *text, const char *needle, char *out, size_t size)
{
    const char *hit = strstr(text, needle);
    if (!hit)
        return false;
    const char *start = hit;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(hit, '\n');
    if (end)
        end = strchr(end + 1, '\n');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    if (n >= size)
        n = size - 1;
    memcpy(out, start, n);
    out[n] = '\0';
    return true;
}

/* Assert that text has the dump block of coroutine id, named name, parked
 * for reason, spawned at this file's line:
 *   coroutine ID "NAME" [REASON, N ms]:
 *   \tspawned at FILE:LINE
 */
static void assert_block(const char *text, uint64_t id, const char *name,
                         const char *reason, int line)
{
    char needle[128];
    snprintf(needle, sizeof needle, "\"%s\" [", name);
    char block[512];
    if (!block_with(text, needle, block, sizeof block))
        fail_msg("no dump block for \"%s\" in:\n%s", name, text);

    char head[256];
    snprintf(head, sizeof head, "coroutine %" PRIu64 " \"%s\" [%s, ", id, name, reason);
    if (strncmp(block, head, strlen(head)) != 0)
        fail_msg("block of \"%s\" does not start with '%s':\n%s", name, head, block);

    /* The wait time: digits, then " ms]:". */
    const char *p = block + strlen(head);
    if (*p < '0' || *p > '9')
        fail_msg("no wait time in the block of \"%s\":\n%s", name, block);
    while (*p >= '0' && *p <= '9')
        p++;
    if (strncmp(p, " ms]:\n", 6) != 0)
        fail_msg("wait time of \"%s\" is not followed by ' ms]:':\n%s", name, block);

    char site[PATH_MAX + 32];
    snprintf(site, sizeof site, "\tspawned at %s:%d", __FILE__, line);
    if (strcmp(p + 6, site) != 0)
        fail_msg("block of \"%s\" lacks '%s':\n%s", name, site + 1, block);
}

/* ---- wait reasons in the dump -------------------------------------- */

typedef struct reasons {
    weft_chan *unread;      /* int, unbuffered: a send waits for a receiver */
    weft_chan *empty;       /* int, unbuffered: a receive waits for a sender */
    weft_chan *select_a;    /* int, unbuffered */
    weft_chan *select_b;    /* int, unbuffered */
    weft_chan *gate;        /* closed to release the once runner and group tasks */
    weft_conn *client;
    weft_conn *server;
    sem_t blocking_gate;    /* posted to end the weft_blocking function */
    weft_sem sem;
    weft_mutex mu;
    weft_rwmutex write_held; /* write-locked by the test: an rlock waits */
    weft_rwmutex read_held;  /* read-locked by the test: a lock waits */
    weft_mutex cond_mu;
    weft_cond cond;
    bool cond_ready;        /* under cond_mu */
    weft_wg target;
    weft_once once;
    weft_group *group_waited;  /* a task runs: weft_group_wait waits */
    weft_group *group_limited; /* limit 1 reached: weft_group_go waits */
    _Atomic int finished;   /* waiters released at the end that returned */
} reasons;

typedef struct waiter {
    reasons *r;
    const char *name;
    const char *reason;     /* expected in the dump */
    int line;               /* the spawn line */
    _Atomic uint64_t id;
} waiter;

static void finish(waiter *w)
{
    atomic_fetch_add(&w->r->finished, 1);
}

static void wait_chan_send(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    int v = 1;
    CHECK(weft_chan_send(w->r->unread, &v) == 0);
    finish(w);
}

static void wait_chan_recv(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    int v = 0;
    CHECK(weft_chan_recv(w->r->empty, &v) == 0);
    CHECK(v == 2);
    finish(w);
}

/* Never returns: abandoned by weft_shutdown. */
static void wait_nil_send(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    int v = 3;
    weft_chan_send(NULL, &v);
    CHECK(!"a send on a NULL channel returned");
}

static void wait_nil_recv(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_chan_recv(NULL, NULL);
    CHECK(!"a receive on a NULL channel returned");
}

static void wait_select(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    int a = 0, b = 0;
    weft_case cases[] = { WEFT_RECV_CASE(w->r->select_a, &a), WEFT_RECV_CASE(w->r->select_b, &b) };
    CHECK(weft_select(cases, 2) == 0);
    CHECK(a == 4);
    finish(w);
}

static void wait_select_no_cases(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_select(NULL, 0);
    CHECK(!"a select with no cases returned");
}

/* Sleeps for an hour: abandoned by weft_shutdown. */
static void wait_sleep(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_sleep(WEFT_SEC(3600));
}

static void wait_socket_read(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    char c = 0;
    CHECK(weft_conn_read(NULL, w->r->server, &c, 1) == 1);
    CHECK(c == 'x');
    finish(w);
}

static void *wait_for_blocking_gate(void *arg)
{
    reasons *r = arg;
    while (sem_wait(&r->blocking_gate) != 0 && errno == EINTR) {
    }
    return r;
}

static void wait_blocking(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    void *result = NULL;
    CHECK(weft_blocking(NULL, wait_for_blocking_gate, w->r, &result) == 0);
    CHECK(result == w->r);
    finish(w);
}

static void wait_semacquire(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    CHECK(weft_sem_acquire(NULL, &w->r->sem, 1) == 0);
    weft_sem_release(&w->r->sem, 1);
    finish(w);
}

static void wait_mutex(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_mutex_lock(&w->r->mu);
    weft_mutex_unlock(&w->r->mu);
    finish(w);
}

static void wait_rwmutex_rlock(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_rwmutex_rlock(&w->r->write_held);
    weft_rwmutex_runlock(&w->r->write_held);
    finish(w);
}

static void wait_rwmutex_lock(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_rwmutex_lock(&w->r->read_held);
    weft_rwmutex_unlock(&w->r->read_held);
    finish(w);
}

static void wait_cond(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_mutex_lock(&w->r->cond_mu);
    while (!w->r->cond_ready)
        weft_cond_wait(&w->r->cond, &w->r->cond_mu);
    weft_mutex_unlock(&w->r->cond_mu);
    finish(w);
}

static void wait_waitgroup(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_wg_wait(&w->r->target);
    finish(w);
}

/* The once's function: waits for the gate to close. */
static void once_blocks(void *arg)
{
    reasons *r = arg;
    CHECK(weft_chan_recv(r->gate, NULL) == WEFT_ECLOSED);
}

/* Runs the once's function; the dump shows it in "chan receive". */
static void run_once(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_once_do(&w->r->once, once_blocks, w->r);
    finish(w);
}

static void no_op(void *arg)
{
    (void)arg;
    CHECK(!"the once's function ran twice");
}

static void wait_once(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    weft_once_do(&w->r->once, no_op, NULL);
    finish(w);
}

static int task_waits_for_gate(weft_ctx *ctx, void *arg)
{
    (void)ctx;
    reasons *r = arg;
    CHECK(weft_chan_recv(r->gate, NULL) == WEFT_ECLOSED);
    return 0;
}

static int task_returns(weft_ctx *ctx, void *arg)
{
    (void)ctx;
    (void)arg;
    return 0;
}

static void wait_group_wait(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    CHECK(weft_group_wait(w->r->group_waited) == 0);
    finish(w);
}

static void wait_group_go(void *arg)
{
    waiter *w = arg;
    atomic_store(&w->id, weft_id());
    CHECK(weft_group_go(w->r->group_limited, task_returns, NULL) == 0);
    finish(w);
}

/* Spawn fn(w) with w's name from the line of the call, record that line,
 * and wait until the runtime has counted *parks more parks. */
#define SPAWN_PARKED(w, fn, parks)                                            \
    do {                                                                      \
        weft_go_opts opts_ = { .name = (w)->name };                           \
        (w)->line = __LINE__;                                                 \
        assert_int_equal(weft_go_with((fn), (w), &opts_), 0);                 \
        *(parks) += 1;                                                        \
        if (!wait_for_parks(*(parks)))                                        \
            fail_msg("coroutine \"%s\" did not park within 2 s", (w)->name);  \
    } while (0)

/* Connect a pair of sockets on 127.0.0.1 from this plain thread. */
static void connect_pair(weft_conn **client, weft_conn **server)
{
    weft_listener *l = NULL;
    assert_int_equal(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0);
    assert_int_equal(weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(l), client), 0);
    assert_int_equal(weft_tcp_accept(NULL, l, server), 0);
    assert_int_equal(weft_listener_close(l), 0);
}

static void test_dump_wait_reasons(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);

    static reasons r;
    memset(&r, 0, sizeof r);
    r.unread = weft_chan_make(sizeof(int), 0);
    r.empty = weft_chan_make(sizeof(int), 0);
    r.select_a = weft_chan_make(sizeof(int), 0);
    r.select_b = weft_chan_make(sizeof(int), 0);
    r.gate = weft_chan_make(0, 0);
    assert_non_null(r.unread);
    assert_non_null(r.empty);
    assert_non_null(r.select_a);
    assert_non_null(r.select_b);
    assert_non_null(r.gate);
    connect_pair(&r.client, &r.server);
    assert_int_equal(sem_init(&r.blocking_gate, 0, 0), 0);
    assert_int_equal(weft_sem_init(&r.sem, 1), 0);
    assert_true(weft_sem_try_acquire(&r.sem, 1));
    weft_mutex_lock(&r.mu);
    weft_rwmutex_lock(&r.write_held);
    weft_rwmutex_rlock(&r.read_held);
    weft_wg_add(&r.target, 1);
    r.group_waited = weft_group_make(NULL);
    r.group_limited = weft_group_make(NULL);
    assert_non_null(r.group_waited);
    assert_non_null(r.group_limited);
    assert_int_equal(weft_group_set_limit(r.group_limited, 1), 0);

    waiter ws[] = {
        { .name = "chan-sender", .reason = "chan send" },
        { .name = "chan-receiver", .reason = "chan receive" },
        { .name = "nil-sender", .reason = "chan send (nil chan)" },
        { .name = "nil-receiver", .reason = "chan receive (nil chan)" },
        { .name = "selector", .reason = "select" },
        { .name = "empty-selector", .reason = "select (no cases)" },
        { .name = "sleeper", .reason = "sleep" },
        { .name = "socket-reader", .reason = "IO wait" },
        { .name = "blocking-caller", .reason = "blocking call" },
        { .name = "sem-acquirer", .reason = "semacquire" },
        { .name = "mutex-locker", .reason = "sync.Mutex.Lock" },
        { .name = "rw-reader", .reason = "sync.RWMutex.RLock" },
        { .name = "rw-writer", .reason = "sync.RWMutex.Lock" },
        { .name = "cond-waiter", .reason = "sync.Cond.Wait" },
        { .name = "wg-waiter", .reason = "sync.WaitGroup.Wait" },
        { .name = "once-runner", .reason = "chan receive" },
        { .name = "once-waiter", .reason = "sync.Once" },
        { .name = "group-waiter", .reason = "errgroup wait" },
        { .name = "group-spawner", .reason = "errgroup wait" },
    };
    enum { WAITERS = sizeof ws / sizeof ws[0] };
    for (int i = 0; i < WAITERS; i++)
        ws[i].r = &r;
    /* Waiters that never return: both NULL channels, the empty select
     * and the hour-long sleep. */
    enum { ABANDONED = 4 };

    int64_t parks = stats_now().parks;
    SPAWN_PARKED(&ws[0], wait_chan_send, &parks);
    SPAWN_PARKED(&ws[1], wait_chan_recv, &parks);
    SPAWN_PARKED(&ws[2], wait_nil_send, &parks);
    SPAWN_PARKED(&ws[3], wait_nil_recv, &parks);
    SPAWN_PARKED(&ws[4], wait_select, &parks);
    SPAWN_PARKED(&ws[5], wait_select_no_cases, &parks);
    SPAWN_PARKED(&ws[6], wait_sleep, &parks);
    SPAWN_PARKED(&ws[7], wait_socket_read, &parks);
    SPAWN_PARKED(&ws[8], wait_blocking, &parks);
    SPAWN_PARKED(&ws[9], wait_semacquire, &parks);
    SPAWN_PARKED(&ws[10], wait_mutex, &parks);
    SPAWN_PARKED(&ws[11], wait_rwmutex_rlock, &parks);
    SPAWN_PARKED(&ws[12], wait_rwmutex_lock, &parks);
    SPAWN_PARKED(&ws[13], wait_cond, &parks);
    SPAWN_PARKED(&ws[14], wait_waitgroup, &parks);
    SPAWN_PARKED(&ws[15], run_once, &parks);
    SPAWN_PARKED(&ws[16], wait_once, &parks);
    /* Each group's task parks on the gate before the waiter comes. */
    assert_int_equal(weft_group_go(r.group_waited, task_waits_for_gate, &r), 0);
    parks++;
    assert_true(wait_for_parks(parks));
    SPAWN_PARKED(&ws[17], wait_group_wait, &parks);
    assert_int_equal(weft_group_go(r.group_limited, task_waits_for_gate, &r), 0);
    parks++;
    assert_true(wait_for_parks(parks));
    SPAWN_PARKED(&ws[18], wait_group_go, &parks);

    char *text = dump_to_string();
    fputs(text, stdout);
    char header[64];
    snprintf(header, sizeof header, "weft: live coroutines %d, Ps 2,", WAITERS + 2);
    assert_true(strncmp(text, header, strlen(header)) == 0);
    assert_non_null(strstr(text, "\nP0: "));
    assert_non_null(strstr(text, "\nP1: "));
    for (int i = 0; i < WAITERS; i++)
        assert_block(text, atomic_load(&ws[i].id), ws[i].name, ws[i].reason, ws[i].line);
    /* The group tasks have no name and were spawned inside the library. */
    assert_non_null(strstr(text, "group.c:"));
    free(text);

    /* Release every waiter that can return, from this plain thread. */
    int v = 0;
    assert_int_equal(weft_chan_recv(r.unread, &v), 0);
    assert_int_equal(v, 1);
    v = 2;
    assert_int_equal(weft_chan_send(r.empty, &v), 0);
    v = 4;
    assert_int_equal(weft_chan_send(r.select_a, &v), 0);
    assert_int_equal(weft_conn_write(NULL, r.client, "x", 1), 0);
    assert_int_equal(sem_post(&r.blocking_gate), 0);
    weft_sem_release(&r.sem, 1);
    weft_mutex_unlock(&r.mu);
    weft_rwmutex_unlock(&r.write_held);
    weft_rwmutex_runlock(&r.read_held);
    weft_mutex_lock(&r.cond_mu);
    r.cond_ready = true;
    weft_cond_signal(&r.cond);
    weft_mutex_unlock(&r.cond_mu);
    weft_wg_done(&r.target);
    assert_int_equal(weft_chan_close(r.gate), 0);

    assert_true(wait_for_count(&r.finished, WAITERS - ABANDONED, LATE));
    assert_int_equal(weft_group_wait(r.group_limited), 0);
    weft_group_release(r.group_waited);
    weft_group_release(r.group_limited);
    assert_true(wait_for_live(ABANDONED));

    assert_int_equal(weft_shutdown(), 0);
    weft_conn_close(r.client);
    weft_conn_close(r.server);
    sem_destroy(&r.blocking_gate);
    weft_chan_release(r.unread);
    weft_chan_release(r.empty);
    weft_chan_release(r.select_a);
    weft_chan_release(r.select_b);
    weft_chan_release(r.gate);
    assert_no_check_failures();
}

typedef struct self_dump {
    char *text;
    weft_wg done;
} self_dump;

/* A running coroutine shows as running; weft_dump without a runtime, or
 * with a NULL stream, writes nothing. */
static void dump_self(void *arg)
{
    self_dump *d = arg;
    size_t len = 0;
    FILE *f = open_memstream(&d->text, &len);
    if (f) {
        weft_dump(f);
        fclose(f);
    }
    weft_wg_done(&d->done);
}

static void test_dump_running_and_no_runtime(void **state)
{
    (void)state;
    char *text = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&text, &len);
    assert_non_null(f);
    weft_dump(f);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(len, 0);
    free(text);

    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_init(&cfg), 0);
    weft_dump(NULL);
    static self_dump d;
    weft_wg_add(&d.done, 1);
    weft_go_opts opts = { .name = "self-dumper" };
    int line = __LINE__ + 1;
    assert_int_equal(weft_go_with(dump_self, &d, &opts), 0);
    weft_wg_wait(&d.done);
    char *own = d.text;
    assert_non_null(own);
    fputs(own, stdout);
    assert_non_null(strstr(own, "weft: live coroutines 1, Ps 1,"));
    assert_non_null(strstr(own, "P0: running coroutine "));
    char site[PATH_MAX + 32];
    snprintf(site, sizeof site, "\"self-dumper\" [running]:\n\tspawned at %s:%d\n", __FILE__, line);
    assert_non_null(strstr(own, site));
    free(own);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- stats ---------------------------------------------------------- */

static void recv_until_closed(void *arg)
{
    CHECK(weft_chan_recv(arg, NULL) == WEFT_ECLOSED);
}

/* Sleeps on a context of its own, which it releases. */
static void sleep_until_canceled(void *arg)
{
    weft_ctx *ctx = arg;
    CHECK(weft_sleep_ctx(ctx, WEFT_SEC(3600)) == WEFT_ECANCELED);
    weft_ctx_release(ctx);
}

static void test_stats_values(void **state)
{
    (void)state;
    weft_stats s = stats_now();
    assert_int_equal(s.coroutines, 0);
    assert_int_equal(s.spawned, 0);
    assert_int_equal(s.parks, 0);
    assert_int_equal(s.timers_pending, 0);
    weft_stats_get(NULL);

    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    s = stats_now();
    assert_int_equal(s.coroutines, 0);
    assert_int_equal(s.spawned, 0);
    assert_int_equal(s.timers_pending, 0);

    enum { RECEIVERS = 8 };
    weft_chan *ch = weft_chan_make(0, 0);
    assert_non_null(ch);
    int64_t parks = s.parks;
    for (int i = 0; i < RECEIVERS; i++)
        assert_int_equal(weft_go(recv_until_closed, ch), 0);
    assert_true(wait_for_parks(parks + RECEIVERS));
    s = stats_now();
    assert_true(s.parks >= parks + RECEIVERS);
    assert_int_equal(s.spawned, RECEIVERS);
    assert_int_equal(s.coroutines, RECEIVERS);
    assert_true(s.switches >= RECEIVERS);
    assert_int_equal(s.timers_pending, 0);

    /* A pending sleep is a pending timer. */
    weft_ctx *ctx = weft_ctx_with_cancel(NULL);
    assert_non_null(ctx);
    weft_ctx *sleeper_ctx = weft_ctx_with_cancel(ctx);
    assert_non_null(sleeper_ctx);
    parks = s.parks;
    assert_int_equal(weft_go(sleep_until_canceled, sleeper_ctx), 0);
    assert_true(wait_for_parks(parks + 1));
    s = stats_now();
    assert_int_equal(s.spawned, RECEIVERS + 1);
    assert_int_equal(s.coroutines, RECEIVERS + 1);
    assert_int_equal(s.timers_pending, 1);

    assert_int_equal(weft_chan_close(ch), 0);
    assert_true(wait_for_live(1));
    weft_stats after = stats_now();
    assert_true(after.parks >= s.parks);
    assert_true(after.switches > s.switches);
    assert_int_equal(after.timers_pending, 1);

    /* Cancelling the sleep takes its timer off the heap. */
    weft_ctx_cancel(ctx);
    assert_true(wait_for_live(0));
    after = stats_now();
    assert_int_equal(after.timers_pending, 0);
    assert_int_equal(after.spawned, RECEIVERS + 1);
    assert_true(after.stacks_cached >= 0);

    weft_ctx_release(ctx);
    weft_chan_release(ch);
    assert_int_equal(weft_shutdown(), 0);
    s = stats_now();
    assert_int_equal(s.spawned, 0);
    assert_int_equal(s.coroutines, 0);
    assert_no_check_failures();
}

/* ---- leak check ---------------------------------------------------- */

typedef struct leak_case {
    _Atomic int64_t leaked;
    _Atomic int64_t elapsed;
} leak_case;

static void sleep_50ms(void *arg)
{
    (void)arg;
    weft_sleep(WEFT_MS(50));
}

/* A coroutine's own leak check does not count the caller. */
static void check_siblings(void *arg)
{
    leak_case *lc = arg;
    CHECK(weft_go(sleep_50ms, NULL) == 0);
    CHECK(weft_go(sleep_50ms, NULL) == 0);
    int64_t start = weft_now();
    atomic_store(&lc->leaked, weft_leakcheck(WEFT_SEC(10)));
    atomic_store(&lc->elapsed, weft_now() - start);
}

static void test_leakcheck_returns_early(void **state)
{
    (void)state;
    assert_int_equal(weft_leakcheck(WEFT_SEC(10)), 0);

    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    int64_t start = weft_now();
    assert_int_equal(weft_leakcheck(WEFT_SEC(10)), 0);
    assert_int_equal(weft_leakcheck(0), 0);
    assert_true(weft_now() - start < LATE);

    /* From a plain thread: every coroutine counts. */
    for (int i = 0; i < 4; i++)
        assert_int_equal(weft_go(sleep_50ms, NULL), 0);
    start = weft_now();
    assert_int_equal(weft_leakcheck(WEFT_SEC(10)), 0);
    int64_t elapsed = weft_now() - start;
    print_message("4 sleepers of 50 ms: leak check returned 0 after %lld ms\n",
                  (long long)(elapsed / 1000000));
    assert_true(elapsed < LATE);
    assert_int_equal(stats_now().coroutines, 0);

    /* From a coroutine: the caller itself does not count. */
    static leak_case lc;
    atomic_store(&lc.leaked, -1);
    assert_int_equal(weft_go(check_siblings, &lc), 0);
    assert_true(wait_for_live(0));
    assert_int_equal(atomic_load(&lc.leaked), 0);
    assert_true(atomic_load(&lc.elapsed) < LATE);

    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- child processes ------------------------------------------------ */

/* A run of this program as "--child SCENARIO [ARG]", with its stdout and
 * stderr read through pipes. */
typedef struct child {
    pid_t pid;
    int fds[2];          /* read ends of stdout and stderr; -1 once at EOF */
    size_t lens[2];
    char out[4096];
    char err[32768];
    int status;          /* exit status, or 128 + the signal; -1 while running */
} child;

/* Start scenario in a fresh process. weft_debug, when not NULL, replaces
 * WEFT_DEBUG in its environment. The child has 20 s before an alarm ends
 * it, so a failed test never leaves one behind for long. */
static void child_start(child *c, const char *scenario, const char *weft_debug, const char *arg)
{
    memset(c, 0, sizeof *c);
    c->status = -1;
    int out[2], err[2];
    assert_int_equal(pipe2(out, O_CLOEXEC), 0);
    assert_int_equal(pipe2(err, O_CLOEXEC), 0);

    /* Built before fork: the child only calls async-signal-safe functions. */
    size_t n = 0;
    while (environ[n])
        n++;
    char **env = calloc(n + 2, sizeof *env);
    assert_non_null(env);
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (weft_debug && strncmp(environ[i], "WEFT_DEBUG=", 11) == 0)
            continue;
        env[k++] = environ[i];
    }
    char debug_var[128];
    if (weft_debug) {
        snprintf(debug_var, sizeof debug_var, "WEFT_DEBUG=%s", weft_debug);
        env[k++] = debug_var;
    }
    env[k] = NULL;
    char *argv[] = { "test_debug", "--child", (char *)scenario, (char *)arg, NULL };

    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(out[1], 1);
        dup2(err[1], 2);
        alarm(20);
        execve("/proc/self/exe", argv, env);
        _exit(127);
    }
    free(env);
    close(out[1]);
    close(err[1]);
    c->pid = pid;
    c->fds[0] = out[0];
    c->fds[1] = err[0];
}

/* Read what the child has written within timeout_ms. Returns false once
 * both streams are at their end. */
static bool child_read(child *c, int timeout_ms)
{
    struct pollfd p[2];
    for (int i = 0; i < 2; i++)
        p[i] = (struct pollfd){ .fd = c->fds[i], .events = POLLIN };
    if (c->fds[0] < 0 && c->fds[1] < 0)
        return false;
    if (poll(p, 2, timeout_ms) <= 0)
        return true;
    for (int i = 0; i < 2; i++) {
        if (c->fds[i] < 0 || !(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        char *buf = i == 0 ? c->out : c->err;
        size_t size = i == 0 ? sizeof c->out : sizeof c->err;
        char sink[512];
        ssize_t r;
        if (c->lens[i] + 1 < size)
            r = read(c->fds[i], buf + c->lens[i], size - 1 - c->lens[i]);
        else
            r = read(c->fds[i], sink, sizeof sink);
        if (r > 0 && c->lens[i] + 1 < size) {
            c->lens[i] += (size_t)r;
            buf[c->lens[i]] = '\0';
        } else if (r == 0 || (r < 0 && errno != EINTR)) {
            close(c->fds[i]);
            c->fds[i] = -1;
        }
    }
    return true;
}

/* Wait up to timeout ns for the child's stdout to contain marker. */
static bool child_wait_output(child *c, const char *marker, int64_t timeout)
{
    int64_t deadline = weft_now() + timeout;
    while (!strstr(c->out, marker)) {
        if (weft_now() > deadline || !child_read(c, 10))
            return strstr(c->out, marker) != NULL;
    }
    return true;
}

static void child_reap(child *c, int flags)
{
    int status;
    pid_t r = waitpid(c->pid, &status, flags);
    assert_true(r == c->pid || (r == 0 && (flags & WNOHANG)));
    if (r == c->pid)
        c->status = WIFSIGNALED(status) ? 128 + WTERMSIG(status) : WEXITSTATUS(status);
}

/* Wait up to timeout ns for the child to exit, reading its output.
 * Returns false, with the child still running, when it does not. */
static bool child_wait_exit(child *c, int64_t timeout)
{
    int64_t deadline = weft_now() + timeout;
    while (c->status < 0) {
        child_reap(c, WNOHANG);
        if (c->status >= 0)
            break;
        if (weft_now() > deadline)
            return false;
        if (!child_read(c, 10))
            nap_ms(1);
    }
    /* The pipes reach their end now that the child has gone. */
    while (child_read(c, 1000)) {
    }
    return true;
}

static void child_kill(child *c)
{
    kill(c->pid, SIGKILL);
    child_reap(c, 0);
    while (child_read(c, 1000)) {
    }
}

/* Run scenario to its end (at most 10 s) and print what it wrote. */
static void child_run(child *c, const char *scenario, const char *weft_debug, const char *arg)
{
    child_start(c, scenario, weft_debug, arg);
    if (!child_wait_exit(c, WEFT_SEC(10))) {
        child_kill(c);
        fail_msg("scenario %s did not exit within 10 s; stdout:\n%s\nstderr:\n%s",
                 scenario, c->out, c->err);
    }
    print_message("scenario %s: status %d\nstdout:\n%sstderr:\n%s", scenario, c->status,
                  c->out, c->err);
}

static void assert_output_has(const char *text, const char *want)
{
    if (!strstr(text, want))
        fail_msg("output lacks \"%s\":\n%s", want, text);
}

static void assert_no_deadlock_report(const child *c)
{
    if (strstr(c->err, "deadlock"))
        fail_msg("false deadlock report:\n%s", c->err);
}

/* Skip a test that needs the deadlock detector. */
#if defined(TEST_TSAN)
#define SKIP_WITHOUT_DETECTOR()                                               \
    do {                                                                      \
        print_message("skipped: the deadlock detector is off under ThreadSanitizer, whose own thread counts as foreign\n"); \
        skip();                                                               \
    } while (0)
#else
#define SKIP_WITHOUT_DETECTOR() ((void)0)
#endif

/* ---- scenarios run in the child --------------------------------------- */

/* Announce on stdout, for the parent. */
static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    fflush(stdout);
}

/* main waits on a channel that no one else holds. */
static int main_recv_nobody(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_make(sizeof(int), 0);
    if (!ch)
        return 3;
    say("parked\n");
    weft_chan_recv(ch, NULL);
    return 4;
}

typedef struct pair {
    weft_chan *to_left;
    weft_chan *to_right;
    weft_wg wg;
} pair;

static void left_side(void *arg)
{
    pair *p = arg;
    int v = 0;
    weft_chan_recv(p->to_left, &v);
    weft_chan_send(p->to_right, &v);
    weft_wg_done(&p->wg);
}

static void right_side(void *arg)
{
    pair *p = arg;
    int v = 0;
    weft_chan_recv(p->to_right, &v);
    weft_chan_send(p->to_left, &v);
    weft_wg_done(&p->wg);
}

/* Two coroutines each wait for the other while main waits for both. */
static int main_pair_deadlock(void *arg)
{
    (void)arg;
    static pair p;
    p.to_left = weft_chan_make(sizeof(int), 0);
    p.to_right = weft_chan_make(sizeof(int), 0);
    if (!p.to_left || !p.to_right)
        return 3;
    weft_wg_add(&p.wg, 2);
    weft_go_opts left = { .name = "left" };
    weft_go_opts right = { .name = "right" };
    say("left at %d\n", __LINE__ + 1);
    if (weft_go_with(left_side, &p, &left) != 0)
        return 3;
    say("right at %d\n", __LINE__ + 1);
    if (weft_go_with(right_side, &p, &right) != 0)
        return 3;
    weft_wg_wait(&p.wg);
    return 4;
}

static void sleep_then_done(void *arg)
{
    weft_sleep(WEFT_MS(DELAY_MS));
    weft_wg_done(arg);
}

/* The only other coroutine waits on a timer. */
static int main_wait_for_sleeper(void *arg)
{
    (void)arg;
    weft_wg wg = {0};
    weft_wg_add(&wg, 1);
    if (weft_go(sleep_then_done, &wg) != 0)
        return 3;
    weft_wg_wait(&wg);
    return 0;
}

/* Read one byte from a peer in another process, which writes it after
 * DELAY_MS: nothing in this process can wake the reader. */
static int main_read_remote_peer(void *arg)
{
    int port = atoi(arg);
    weft_conn *c = NULL;
    if (weft_tcp_dial(NULL, "127.0.0.1", port, &c) != 0)
        return 3;
    char byte = 0;
    ssize_t n = weft_conn_read(NULL, c, &byte, 1);
    weft_conn_close(c);
    return n == 1 && byte == 'x' ? 0 : 5;
}

static void write_after_delay(void *arg)
{
    weft_sleep(WEFT_MS(DELAY_MS));
    weft_conn_write(NULL, arg, "x", 1);
}

/* Read from a loopback connection whose other end a coroutine writes to
 * after a sleep. */
static int main_read_local_peer(void *arg)
{
    (void)arg;
    weft_listener *l = NULL;
    weft_conn *client = NULL, *server = NULL;
    if (weft_tcp_listen("127.0.0.1", 0, 4, &l) != 0)
        return 3;
    if (weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(l), &client) != 0 ||
        weft_tcp_accept(NULL, l, &server) != 0)
        return 3;
    weft_listener_close(l);
    if (weft_go(write_after_delay, client) != 0)
        return 3;
    char byte = 0;
    ssize_t n = weft_conn_read(NULL, server, &byte, 1);
    weft_conn_close(client);
    weft_conn_close(server);
    return n == 1 && byte == 'x' ? 0 : 5;
}

static void *nap_and_return(void *arg)
{
    nap_ms(DELAY_MS);
    return arg;
}

/* Every coroutine waits for weft_blocking's function, which sleeps. */
static int main_wait_blocking(void *arg)
{
    (void)arg;
    static int token;
    void *result = NULL;
    if (weft_blocking(NULL, nap_and_return, &token, &result) != 0)
        return 3;
    return result == &token ? 0 : 5;
}

/* A plain thread that has not called weft yet sends after a delay. */
static void *send_after_delay(void *arg)
{
    nap_ms(DELAY_MS);
    int v = 42;
    weft_chan_send(arg, &v);
    return NULL;
}

static int main_wait_plain_thread(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_make(sizeof(int), 0);
    if (!ch)
        return 3;
    pthread_t thread;
    if (pthread_create(&thread, NULL, send_after_delay, ch) != 0)
        return 3;
    int v = 0;
    int rc = weft_chan_recv(ch, &v);
    pthread_join(thread, NULL);
    weft_chan_release(ch);
    return rc == 0 && v == 42 ? 0 : 5;
}

/* main waits for a context's deadline. */
static int main_wait_ctx_timeout(void *arg)
{
    (void)arg;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(DELAY_MS));
    if (!ctx)
        return 3;
    int rc = weft_chan_recv(weft_ctx_done(ctx), NULL);
    int err = weft_ctx_err(ctx);
    weft_ctx_release(ctx);
    return rc == WEFT_ECLOSED && err == WEFT_ETIMEDOUT ? 0 : 5;
}

static void recv_forever(void *arg)
{
    weft_chan_recv(arg, NULL);
}

/* A program that keeps its own main thread: that thread waits on a wait
 * group that a coroutine blocked forever would end. */
static int init_thread_waits(void)
{
    if (weft_init(NULL) != 0)
        return 3;
    weft_chan *ch = weft_chan_make(0, 0);
    weft_wg wg = {0};
    weft_wg_add(&wg, 1);
    if (!ch || weft_go(recv_forever, ch) != 0)
        return 3;
    say("parked\n");
    weft_wg_wait(&wg);
    return 4;
}

static void sleep_long(void *arg)
{
    (void)arg;
    weft_sleep(WEFT_SEC(60));
}

/* Parks named coroutines, writes "parked" so that the parent sends
 * SIGQUIT, and waits in nanosleep. NOTE: not a weft_main program, whose first thread waits in a
 * raw futex call: ThreadSanitizer defers a signal the kernel hands to a
 * thread there until the thread wakes, which would be never. */
static int init_wait_for_sigquit(void)
{
    if (weft_init(NULL) != 0)
        return 3;
    weft_chan *ch = weft_chan_make(0, 0);
    if (!ch)
        return 3;
    int64_t parks = stats_now().parks;
    weft_go_opts reader = { .name = "quit-reader" };
    weft_go_opts sleeper = { .name = "quit-sleeper" };
    say("reader at %d\n", __LINE__ + 1);
    if (weft_go_with(recv_forever, ch, &reader) != 0)
        return 3;
    say("sleeper at %d\n", __LINE__ + 1);
    if (weft_go_with(sleep_long, NULL, &sleeper) != 0)
        return 3;
    if (!wait_for_parks(parks + 2))
        return 5;
    say("parked\n");
    for (;;)
        nap_ms(1000);
}

static void unlock_unlocked(void *arg)
{
    (void)arg;
    say("id %" PRIu64 "\n", weft_id());
    weft_mutex mu = {0};
    weft_mutex_unlock(&mu);
}

static int main_misuse_in_named(void *arg)
{
    (void)arg;
    weft_wg wg = {0};
    weft_wg_add(&wg, 1);
    weft_go_opts opts = { .name = "unlocker" };
    say("line %d\n", __LINE__ + 1);
    if (weft_go_with(unlock_unlocked, NULL, &opts) != 0)
        return 3;
    weft_wg_wait(&wg);
    return 4;
}

/* Two named coroutines stay blocked past a leak check; closing their
 * channel ends them, and a second check finds none. */
static int main_leak_report(void *arg)
{
    (void)arg;
    weft_chan *ch = weft_chan_make(0, 0);
    if (!ch)
        return 3;
    weft_go_opts first = { .name = "leaker-1" };
    weft_go_opts second = { .name = "leaker-2" };
    say("leaker-1 at %d\n", __LINE__ + 1);
    if (weft_go_with(recv_forever, ch, &first) != 0)
        return 3;
    say("leaker-2 at %d\n", __LINE__ + 1);
    if (weft_go_with(recv_forever, ch, &second) != 0)
        return 3;
    int64_t start = weft_now();
    int64_t leaked = weft_leakcheck(WEFT_MS(100));
    say("leaked %lld after %lld ms\n", (long long)leaked,
        (long long)((weft_now() - start) / 1000000));
    weft_chan_close(ch);
    say("after close %lld\n", (long long)weft_leakcheck(WEFT_SEC(10)));
    weft_chan_release(ch);
    return 0;
}

typedef struct scenario {
    const char *name;
    int (*main_fn)(void *arg);
} scenario;

static const scenario scenarios[] = {
    { "recv-nobody", main_recv_nobody },
    { "pair-deadlock", main_pair_deadlock },
    { "sleeper", main_wait_for_sleeper },
    { "remote-peer", main_read_remote_peer },
    { "local-peer", main_read_local_peer },
    { "blocking", main_wait_blocking },
    { "plain-thread", main_wait_plain_thread },
    { "ctx-timeout", main_wait_ctx_timeout },
    { "misuse", main_misuse_in_named },
    { "leak-report", main_leak_report },
};

static int run_scenario(const char *name, char *arg)
{
    if (strcmp(name, "init-thread") == 0)
        return init_thread_waits();
    if (strcmp(name, "sigquit") == 0)
        return init_wait_for_sigquit();
    for (size_t i = 0; i < sizeof scenarios / sizeof scenarios[0]; i++) {
        if (strcmp(scenarios[i].name, name) == 0)
            return weft_main(scenarios[i].main_fn, arg);
    }
    fprintf(stderr, "test_debug: unknown scenario \"%s\"\n", name);
    return 2;
}

/* ---- leak report ----------------------------------------------------- */

static void test_leakcheck_reports_blocked(void **state)
{
    (void)state;
    child c;
    child_run(&c, "leak-report", NULL, NULL);
    assert_int_equal(c.status, 0);
    int line1 = 0, line2 = 0;
    const char *p1 = strstr(c.out, "leaker-1 at ");
    const char *p2 = strstr(c.out, "leaker-2 at ");
    assert_non_null(p1);
    assert_non_null(p2);
    line1 = atoi(p1 + strlen("leaker-1 at "));
    line2 = atoi(p2 + strlen("leaker-2 at "));

    long long leaked = -1, ms = -1;
    const char *p = strstr(c.out, "leaked ");
    assert_non_null(p);
    assert_int_equal(sscanf(p, "leaked %lld after %lld ms", &leaked, &ms), 2);
    assert_int_equal(leaked, 2);
    /* It waited for the whole timeout before reporting. */
    assert_true(ms >= 100);
    assert_output_has(c.out, "after close 0\n");

    assert_output_has(c.err, "weft: leaked coroutines: 2\n");
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "\"leaker-1\" [chan receive, ");
    assert_output_has(c.err, want);
    snprintf(want, sizeof want, "\"leaker-2\" [chan receive, ");
    assert_output_has(c.err, want);
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, line1);
    assert_output_has(c.err, want);
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, line2);
    assert_output_has(c.err, want);
    /* The caller, main, is not reported. */
    assert_null(strstr(c.err, "\"main\""));
}

/* ---- deadlock detector: true deadlocks -------------------------------- */

static void test_deadlock_main_blocked(void **state)
{
    (void)state;
    SKIP_WITHOUT_DETECTOR();
    child c;
    child_run(&c, "recv-nobody", NULL, NULL);
    assert_int_equal(c.status, 128 + SIGABRT);
    assert_output_has(c.err, DEADLOCK_MESSAGE "\n");
    assert_output_has(c.err, "weft: live coroutines 1, ");
    assert_output_has(c.err, "coroutine 1 \"main\" [chan receive, ");
    assert_output_has(c.err, "\tspawned by weft_main\n");
}

static void test_deadlock_pair_waiting(void **state)
{
    (void)state;
    SKIP_WITHOUT_DETECTOR();
    child c;
    child_run(&c, "pair-deadlock", NULL, NULL);
    assert_int_equal(c.status, 128 + SIGABRT);
    assert_output_has(c.err, DEADLOCK_MESSAGE "\n");
    assert_output_has(c.err, "weft: live coroutines 3, ");
    assert_output_has(c.err, "coroutine 1 \"main\" [sync.WaitGroup.Wait, ");
    assert_output_has(c.err, "\"left\" [chan receive, ");
    assert_output_has(c.err, "\"right\" [chan receive, ");
    const char *left = strstr(c.out, "left at ");
    const char *right = strstr(c.out, "right at ");
    assert_non_null(left);
    assert_non_null(right);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, atoi(left + 8));
    assert_output_has(c.err, want);
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, atoi(right + 9));
    assert_output_has(c.err, want);
}

/* ---- deadlock detector: waits that something can still end ------------ */

/* The scenario ends on its own, with status 0 and no report. */
static void assert_scenario_completes(const char *scenario, const char *arg)
{
    child c;
    int64_t start = weft_now();
    child_run(&c, scenario, NULL, arg);
    int64_t ms = (weft_now() - start) / 1000000;
    assert_no_deadlock_report(&c);
    assert_int_equal(c.status, 0);
    /* It really waited for the delayed wakeup. */
    assert_true(ms >= DELAY_MS);
}

static void test_no_deadlock_timer(void **state)
{
    (void)state;
    assert_scenario_completes("sleeper", NULL);
}

/* The peer is this test process: it accepts the child's connection and
 * writes one byte after DELAY_MS. */
static void test_no_deadlock_socket_remote(void **state)
{
    (void)state;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&addr, sizeof addr), 0);
    assert_int_equal(listen(fd, 1), 0);
    socklen_t len = sizeof addr;
    assert_int_equal(getsockname(fd, (struct sockaddr *)&addr, &len), 0);
    char port[16];
    snprintf(port, sizeof port, "%d", ntohs(addr.sin_port));

    child c;
    int64_t start = weft_now();
    child_start(&c, "remote-peer", NULL, port);
    struct pollfd p = { .fd = fd, .events = POLLIN };
    assert_int_equal(poll(&p, 1, 10000), 1);
    int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC);
    assert_true(conn >= 0);
    nap_ms(DELAY_MS);
    assert_int_equal(write(conn, "x", 1), 1);
    bool exited = child_wait_exit(&c, WEFT_SEC(10));
    if (!exited)
        child_kill(&c);
    close(conn);
    close(fd);
    print_message("scenario remote-peer: status %d\nstderr:\n%s", c.status, c.err);
    assert_true(exited);
    assert_no_deadlock_report(&c);
    assert_int_equal(c.status, 0);
    assert_true(weft_now() - start >= WEFT_MS(DELAY_MS));
}

static void test_no_deadlock_socket_local(void **state)
{
    (void)state;
    assert_scenario_completes("local-peer", NULL);
}

static void test_no_deadlock_blocking(void **state)
{
    (void)state;
    assert_scenario_completes("blocking", NULL);
}

static void test_no_deadlock_plain_thread(void **state)
{
    (void)state;
    assert_scenario_completes("plain-thread", NULL);
}

static void test_no_deadlock_ctx_timeout(void **state)
{
    (void)state;
    assert_scenario_completes("ctx-timeout", NULL);
}

/* A true deadlock stays unreported: the child lives until killed. */
static void assert_child_stays_blocked(const char *scenario, const char *weft_debug)
{
    child c;
    child_start(&c, scenario, weft_debug, NULL);
    bool parked = child_wait_output(&c, "parked\n", WEFT_SEC(10));
    /* The detector reports within about 10 ms; give it fifty times that. */
    bool exited = parked && child_wait_exit(&c, WEFT_MS(500));
    if (!exited)
        child_kill(&c);
    print_message("scenario %s with WEFT_DEBUG=%s: status %d\nstderr:\n%s", scenario,
                  weft_debug ? weft_debug : "(inherited)", c.status, c.err);
    assert_true(parked);
    assert_false(exited);
    assert_int_equal(c.status, 128 + SIGKILL);
    assert_no_deadlock_report(&c);
}

static void test_deadlock_switch_off(void **state)
{
    (void)state;
    assert_child_stays_blocked("recv-nobody", "deadlock=0");
}

/* A plain thread that uses the API turns the detector off. */
static void test_deadlock_off_with_plain_thread(void **state)
{
    (void)state;
    assert_child_stays_blocked("init-thread", NULL);
}

/* ---- SIGQUIT dump ----------------------------------------------------- */

static void test_sigquit_dump(void **state)
{
    (void)state;
    child c;
    child_start(&c, "sigquit", "dump=sigquit", NULL);
    bool parked = child_wait_output(&c, "parked\n", WEFT_SEC(10));
    if (parked)
        kill(c.pid, SIGQUIT);
    bool exited = parked && child_wait_exit(&c, WEFT_SEC(5));
    if (!exited)
        child_kill(&c);
    print_message("scenario sigquit: status %d\nstdout:\n%sstderr:\n%s", c.status, c.out, c.err);
    assert_true(parked);
    assert_true(exited);
    assert_int_equal(c.status, 2);
    assert_true(strncmp(c.err, "SIGQUIT: quit\n\n", 15) == 0);
    assert_output_has(c.err, "weft: live coroutines 2, ");
    assert_output_has(c.err, "\"quit-reader\" [chan receive, ");
    assert_output_has(c.err, "\"quit-sleeper\" [sleep, ");
    const char *reader = strstr(c.out, "reader at ");
    const char *sleeper = strstr(c.out, "sleeper at ");
    assert_non_null(reader);
    assert_non_null(sleeper);
    char want[PATH_MAX + 64];
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, atoi(reader + 10));
    assert_output_has(c.err, want);
    snprintf(want, sizeof want, "\tspawned at %s:%d\n", __FILE__, atoi(sleeper + 11));
    assert_output_has(c.err, want);
}

/* ---- fatal misuse ----------------------------------------------------- */

static void test_fatal_names_coroutine(void **state)
{
    (void)state;
    child c;
    child_run(&c, "misuse", NULL, NULL);
    assert_int_equal(c.status, 128 + SIGABRT);
    const char *id = strstr(c.out, "id ");
    const char *line = strstr(c.out, "line ");
    assert_non_null(id);
    assert_non_null(line);
    char want[PATH_MAX + 128];
    snprintf(want, sizeof want,
             "weft: fatal: unlock of unlocked mutex (in coroutine %lld \"unlocker\", "
             "spawned at %s:%d)\n",
             atoll(id + 3), __FILE__, atoi(line + 5));
    assert_output_has(c.err, want);
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "--child") == 0)
        return run_scenario(argv[2], argc > 3 ? argv[3] : NULL);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_dump_wait_reasons, stop_runtime),
        cmocka_unit_test_teardown(test_dump_running_and_no_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_stats_values, stop_runtime),
        cmocka_unit_test_teardown(test_leakcheck_returns_early, stop_runtime),
        cmocka_unit_test(test_leakcheck_reports_blocked),
        cmocka_unit_test(test_deadlock_main_blocked),
        cmocka_unit_test(test_deadlock_pair_waiting),
        cmocka_unit_test(test_no_deadlock_timer),
        cmocka_unit_test(test_no_deadlock_socket_remote),
        cmocka_unit_test(test_no_deadlock_socket_local),
        cmocka_unit_test(test_no_deadlock_blocking),
        cmocka_unit_test(test_no_deadlock_plain_thread),
        cmocka_unit_test(test_no_deadlock_ctx_timeout),
        cmocka_unit_test(test_deadlock_switch_off),
        cmocka_unit_test(test_deadlock_off_with_plain_thread),
        cmocka_unit_test(test_sigquit_dump),
        cmocka_unit_test(test_fatal_names_coroutine),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
