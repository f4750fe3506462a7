/*
 * Poller: the runtime's libuv loop thread, and the sleep timers it serves.
 *
 * The loop runs on a thread of its own from weft_init to weft_shutdown.
 * Other threads reach it only through uv_async_send (libuv's one
 * thread-safe call); coroutines never call libuv themselves.
 *
 * Sleep timers: a binary min-heap of (deadline, parker) ordered by deadline,
 * guarded by heap_lock. A sleeper inserts its entry, which lives on its own
 * stack, and parks. The unlock step releases heap_lock. When the entry is
 * the new earliest, the unlock step also wakes the loop so it re-arms. The
 * loop arms one timerfd (CLOCK_MONOTONIC, absolute, nanosecond resolution)
 * at the earliest deadline and watches it with uv_poll. On expiry it pops
 * every entry whose deadline has passed on the weft_now clock, and makes
 * each ready after dropping the lock. A deadline is compared with weft_now,
 * never with libuv's cached millisecond clock, so a sleep never ends early.
 *
 * Invariants: an entry is in the heap exactly while its sleeper is parked
 * or about to park. Locking: heap_lock is a leaf; ready is called without
 * it. Callers: weft__poller_sleep from coroutines; the rest from the loop
 * thread or from weft_init/weft_shutdown.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "lock.h"
#include "sched.h"

typedef struct sleeper {
    int64_t deadline;
    weft__parker *parker;
} sleeper;

static uv_loop_t loop;
static uv_async_t kick;
static uv_poll_t timer_poll;
static int timer_fd = -1;
static pthread_t loop_thread;
static _Atomic int loop_stop;

static _Atomic uint32_t heap_lock;
static sleeper **heap;         /* guarded by heap_lock */
static size_t heap_len;
static size_t heap_cap;
static int64_t armed_deadline; /* loop thread only: what timer_fd is set to */

static void heap_swap(size_t a, size_t b)
{
    sleeper *t = heap[a];
    heap[a] = heap[b];
    heap[b] = t;
}

static void heap_up(size_t i)
{
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (heap[parent]->deadline <= heap[i]->deadline)
            break;
        heap_swap(i, parent);
        i = parent;
    }
}

static void heap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < heap_len && heap[l]->deadline < heap[m]->deadline)
            m = l;
        if (r < heap_len && heap[r]->deadline < heap[m]->deadline)
            m = r;
        if (m == i)
            return;
        heap_swap(i, m);
        i = m;
    }
}

/* Arm timer_fd for the earliest deadline. Loop thread only. */
static void rearm(void)
{
    weft__lock_acquire(&heap_lock);
    int64_t next = heap_len ? heap[0]->deadline : 0;
    weft__lock_release(&heap_lock);
    if (next == armed_deadline)
        return;
    struct itimerspec its;
    memset(&its, 0, sizeof its);
    if (next > 0) {
        its.it_value.tv_sec = next / 1000000000;
        its.it_value.tv_nsec = next % 1000000000;
    }
    /* A zero it_value disarms the timer. */
    timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL);
    armed_deadline = next;
}

static void on_timer(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    uint64_t ticks;
    while (read(timer_fd, &ticks, sizeof ticks) > 0) {
    }
    armed_deadline = 0;

    int64_t now = weft_now();
    sleeper *due[64];
    for (;;) {
        size_t n = 0;
        weft__lock_acquire(&heap_lock);
        while (heap_len && heap[0]->deadline <= now && n < 64) {
            due[n++] = heap[0];
            heap[0] = heap[--heap_len];
            heap_down(0);
        }
        weft__lock_release(&heap_lock);
        for (size_t i = 0; i < n; i++)
            weft__ready(due[i]->parker);
        if (n < 64)
            break;
    }
    rearm();
}

static void on_kick(uv_async_t *h)
{
    (void)h;
    if (atomic_load(&loop_stop)) {
        uv_close((uv_handle_t *)&kick, NULL);
        uv_close((uv_handle_t *)&timer_poll, NULL);
        return;
    }
    rearm();
}

static void *loop_main(void *arg)
{
    (void)arg;
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

int weft__poller_init(void)
{
    atomic_store(&loop_stop, 0);
    heap_len = 0;
    armed_deadline = 0;
    int err = uv_loop_init(&loop);
    if (err)
        return err == UV_ENOMEM ? -ENOMEM : err;
    timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (timer_fd < 0) {
        err = -errno;
        uv_loop_close(&loop);
        return err;
    }
    if ((err = uv_async_init(&loop, &kick, on_kick)) != 0 ||
        (err = uv_poll_init(&loop, &timer_poll, timer_fd)) != 0 ||
        (err = uv_poll_start(&timer_poll, UV_READABLE, on_timer)) != 0) {
        /* Handles that were initialised must be closed before the loop. */
        uv_walk(&loop, (uv_walk_cb)(void (*)(void))uv_close, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        close(timer_fd);
        timer_fd = -1;
        return err;
    }
    if (pthread_create(&loop_thread, NULL, loop_main, NULL) != 0) {
        uv_close((uv_handle_t *)&kick, NULL);
        uv_close((uv_handle_t *)&timer_poll, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        close(timer_fd);
        timer_fd = -1;
        return -ENOMEM;
    }
    return 0;
}

void weft__poller_term(void)
{
    atomic_store(&loop_stop, 1);
    uv_async_send(&kick);
    pthread_join(loop_thread, NULL);
    uv_loop_close(&loop);
    close(timer_fd);
    timer_fd = -1;
    /* Sleepers still in the heap were abandoned with their coroutines. */
    free(heap);
    heap = NULL;
    heap_len = heap_cap = 0;
}

typedef struct sleep_park {
    bool kick;
} sleep_park;

static bool sleep_unlock(void *arg)
{
    sleep_park *sp = arg;
    bool need_kick = sp->kick;
    weft__lock_release(&heap_lock);
    if (need_kick)
        uv_async_send(&kick);
    return true;
}

int weft__poller_sleep(int64_t deadline)
{
    sleeper s = { .deadline = deadline, .parker = weft__parker_self() };
    sleep_park sp = { .kick = false };

    weft__lock_acquire(&heap_lock);
    if (heap_len == heap_cap) {
        size_t cap = heap_cap ? heap_cap * 2 : 1024;
        sleeper **h = realloc(heap, cap * sizeof *h);
        if (!h) {
            weft__lock_release(&heap_lock);
            return -ENOMEM;
        }
        heap = h;
        heap_cap = cap;
    }
    heap[heap_len] = &s;
    heap_up(heap_len++);
    sp.kick = heap[0] == &s;
    weft__park(sleep_unlock, &sp, WEFT__WAIT_SLEEP);
    return 0;
}
