/*
 * Poller: the runtime's libuv loop thread, which serves the timer heap's
 * backstop, the requests of io/loop.c (name resolution, file operations)
 * and the signal watcher of io/signal.c.
 *
 * The loop runs on a thread of its own from weft_init to weft_shutdown.
 * Other threads reach it only through uv_async_send (libuv's one
 * thread-safe call), wrapped by weft__poller_backstop. Coroutines never
 * call libuv themselves.
 *
 * Timer backstop: the heap is in timer.c, and the Ps fire it (see
 * "Timers" in sched.c). In case every P runs a coroutine that does not
 * yield, the loop arms one timerfd (CLOCK_MONOTONIC, absolute) at the
 * heap's earliest deadline plus BACKSTOP_NS and watches it with uv_poll.
 * When it expires the loop fires what is due and re-arms for the new head.
 * The armed time is published in backstop_at. An insert whose deadline
 * needs an earlier backstop kicks the loop, which re-arms. While the Ps
 * keep up, the loop thread wakes about once per BACKSTOP_NS at most, so it
 * rarely takes a CPU from them.
 *
 * Requests: the kick async also drains io/loop.c's request queue. When
 * the loop stops it drains the queue once more, failing what is left, and
 * uv_run returns once libuv has finished every request already started.
 *
 * Callers: weft__poller_backstop and weft__poller_kick from any thread;
 * the rest from the loop thread or from weft_init/weft_shutdown.
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

#include "../io/io_internal.h"
#include "../io/netpoll.h"
#include "lock.h"
#include "sched.h"

static uv_loop_t loop;
static uv_async_t kick;
static uv_poll_t timer_poll;
static int timer_fd = -1;
static uv_poll_t net_poll;   /* WEFT_DEBUG=netpoll=loop only */
static bool net_poll_live;
static pthread_t loop_thread;
static _Atomic int loop_stop;
static int64_t armed_deadline; /* loop thread only: what timer_fd is set to */
static _Atomic int64_t backstop_at; /* armed_deadline for other threads */

/* Lateness of the loop thread's backstop behind the earliest deadline. */
#define BACKSTOP_NS 4000000

static int64_t backstop_for(int64_t head)
{
    if (head <= 0)
        return 0;
    return head > INT64_MAX - BACKSTOP_NS ? INT64_MAX : head + BACKSTOP_NS;
}

/* Arm timer_fd for the heap head (0: disarm). Loop thread only. */
static void rearm(int64_t head)
{
    /* Publish, then read the head again (both seq_cst). An inserter loads
     * backstop_at after storing its head, so either it saw this value and
     * kicks if it is too late, or the second read here finds its entry. */
    atomic_store(&backstop_at, backstop_for(head));
    int64_t again = weft__timers_next();
    if (again > 0 && (head == 0 || again < head)) {
        head = again;
        atomic_store(&backstop_at, backstop_for(head));
    }
    int64_t next = backstop_for(head);
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
    rearm(weft__timers_run(weft_now()));
}

static void on_kick(uv_async_t *h)
{
    (void)h;
    if (atomic_load(&loop_stop)) {
        weft__loop_run_requests(&loop, true);
        weft__signal_loop_close();
        if (net_poll_live)
            uv_close((uv_handle_t *)&net_poll, NULL);
        net_poll_live = false;
        uv_close((uv_handle_t *)&kick, NULL);
        uv_close((uv_handle_t *)&timer_poll, NULL);
        return;
    }
    weft__loop_run_requests(&loop, false);
    rearm(weft__timers_next());
}

static void on_net(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    weft__parker *woken[WEFT__NETPOLL_MAX];
    int n = weft__netpoll(0, woken);
    weft__ready_many(woken, (size_t)n);
}

static void *loop_main(void *arg)
{
    (void)arg;
    weft__thread_internal(true);
    uv_run(&loop, UV_RUN_DEFAULT);
    return NULL;
}

static void close_unless_closing(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

/* WEFT_DEBUG=netpoll=loop: watch the sockets' epoll set from the loop. */
static int start_net_poll(void)
{
    int fd = weft__netpoll_loop_fd();
    net_poll_live = false;
    if (fd < 0)
        return 0;
    int err = uv_poll_init(&loop, &net_poll, fd);
    if (err)
        return err;
    net_poll_live = true;
    return uv_poll_start(&net_poll, UV_READABLE, on_net);
}

int weft__poller_init(void)
{
    atomic_store(&loop_stop, 0);
    armed_deadline = 0;
    atomic_store(&backstop_at, 0);
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
        (err = uv_poll_start(&timer_poll, UV_READABLE, on_timer)) != 0 ||
        (err = weft__signal_loop_init(&loop)) != 0 ||
        (err = start_net_poll()) != 0) {
        /* Handles that were initialised must be closed before the loop. */
        weft__signal_loop_close();
        if (net_poll_live)
            uv_close((uv_handle_t *)&net_poll, NULL);
        net_poll_live = false;
        uv_walk(&loop, close_unless_closing, NULL);
        uv_run(&loop, UV_RUN_DEFAULT);
        uv_loop_close(&loop);
        close(timer_fd);
        timer_fd = -1;
        return err;
    }
    if (pthread_create(&loop_thread, NULL, loop_main, NULL) != 0) {
        weft__signal_loop_close();
        if (net_poll_live)
            uv_close((uv_handle_t *)&net_poll, NULL);
        net_poll_live = false;
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

void weft__poller_backstop(int64_t deadline)
{
    int64_t at = atomic_load(&backstop_at);
    if (at != 0 && at - BACKSTOP_NS <= deadline)
        return;
    /* The loop's handles exist only between init and term, which the
     * entry gate brackets. */
    if (!weft__gate_enter())
        return;
    uv_async_send(&kick);
    weft__gate_leave();
}

uv_loop_t *weft__poller_loop(void)
{
    return &loop;
}

bool weft__poller_kick(void)
{
    if (!weft__gate_enter())
        return false;
    uv_async_send(&kick);
    weft__gate_leave();
    return true;
}

void weft__poller_term(void)
{
    atomic_store(&loop_stop, 1);
    uv_async_send(&kick);
    pthread_join(loop_thread, NULL);
    uv_loop_close(&loop);
    close(timer_fd);
    timer_fd = -1;
    weft__timers_term();
}
