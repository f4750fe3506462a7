/*
 * Network poller: the epoll set of weft's sockets, the records that wait
 * on it, and the poll function the Ps call.
 *
 * Registration. Each socket is added once, when its record is made, for
 * EPOLLIN | EPOLLOUT | EPOLLRDHUP with EPOLLET. Edge triggering means no
 * call is needed when a coroutine starts or stops waiting: an operation
 * tries its system call first, and only an EAGAIN makes it wait for the
 * next edge. One eventfd, registered level-triggered with a NULL data
 * pointer, interrupts a P blocked in epoll_wait (weft__netpoll_break).
 *
 * Who polls. The Ps (sched.c): without blocking when they run out of local
 * work and every 61 scheduling rounds, and one idle P at a time blocks in
 * epoll_wait instead of its futex while any operation waits. The libuv
 * loop thread does not poll this set, except with WEFT_DEBUG=netpoll=loop,
 * which hands all polling to it (through uv_poll on the epoll descriptor)
 * for comparison: every wakeup then crosses from the loop thread to a P.
 *
 * Wait protocol. A direction's slot holds 0, READY or the address of the
 * waiting operation's record (io_wait, on the waiter's stack). The waiter
 * parks with weft__park_ctx; its unlock step, which runs after the
 * switch, stores the record in the slot by CAS from 0. If it finds READY
 * instead, readiness came between the failed system call and the park,
 * and the waiter readies itself. A waker (the poller on an event, or
 * close) swaps the slot: 0 becomes READY, a record becomes 0, and the
 * waker readies the record's parker if it wins the record's claim word.
 * The context is the other contender for that claim, and it can resume
 * the waiter before the unlock step has run, so every waiter first waits
 * for the step's "armed" mark before its frame goes. A waiter whose
 * context won takes its record back out of the slot by CAS; when the CAS
 * fails a waker holds the record, and the waiter spins until busy drops
 * to zero, because each waker counts itself in busy from before it reads
 * the slot until its last touch of the record. Readiness taken by a waker
 * that lost the claim is dropped, which is harmless, because the next
 * operation tries its system call before it waits.
 *
 * Records are never freed, only recycled through a free list in FIFO
 * order, so an event for a socket closed meanwhile (epoll_wait on another
 * thread may return it after the close) only marks a recycled record
 * READY: its next operation tries the system call, gets EAGAIN and waits.
 *
 * Lock order: free_lock is a leaf. A waiter's unlock step takes no lock.
 */
#define _GNU_SOURCE
#include "netpoll.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include "../ctx/ctx_internal.h"
#include "../sanitizer.h"
#include "io_internal.h"
#include "../sched/lock.h"
#include "weft/error.h"

/* Events taken per epoll_wait call; each can wake two parkers. */
#define POLL_BATCH (WEFT__NETPOLL_MAX / 2)

static int epfd = -1;
static int break_fd = -1;
static _Atomic uint32_t break_pending;

/* Operations waiting for readiness; the Ps poll only while it is above 0. */
_Atomic int64_t weft__netpoll_nwait;
/* 1 while a P blocks in epoll_wait. */
_Atomic uint32_t weft__netpoll_blocked;
/* WEFT_DEBUG=netpoll=loop: the loop thread polls, the Ps never do. */
_Atomic bool weft__netpoll_by_loop;

static _Atomic uint32_t free_lock;
static weft__netfd *free_head;
static weft__netfd *free_tail;

/* ---- Records ------------------------------------------------------------- */

static weft__netfd *netfd_alloc(void)
{
    weft__lock_acquire(&free_lock);
    weft__netfd *nd = free_head;
    if (nd) {
        free_head = nd->free_next;
        if (!free_head)
            free_tail = NULL;
    }
    weft__lock_release(&free_lock);
    if (nd)
        return nd;
    nd = calloc(1, sizeof *nd);
    return nd;
}

static void netfd_free(weft__netfd *nd)
{
    nd->free_next = NULL;
    weft__lock_acquire(&free_lock);
    if (free_tail)
        free_tail->free_next = nd;
    else
        free_head = nd;
    free_tail = nd;
    weft__lock_release(&free_lock);
}

int weft__netfd_open(int fd, int kind, int family, weft__netfd **out)
{
    if (epfd < 0)
        return WEFT_EINVAL;
    weft__netfd *nd = netfd_alloc();
    if (!nd)
        return WEFT_ENOMEM;
    nd->fd = fd;
    nd->kind = (uint8_t)kind;
    nd->family = family;
    nd->generation = weft__generation();
    atomic_store(&nd->slot[0], 0);
    atomic_store(&nd->slot[1], 0);
    /* busy is not reset: a waker for the record's previous socket may
     * still be inside netfd_notify, and its decrement must balance. */
    weft_sem_init(&nd->sem[0], 1);
    weft_sem_init(&nd->sem[1], 1);
    /* Published last: a stale handle sees the record closed until here. */
    atomic_store(&nd->state, 1);

    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET,
                              .data.ptr = nd };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int err = -errno;
        atomic_store(&nd->state, WEFT__NETFD_CLOSED);
        netfd_free(nd);
        return err;
    }
    *out = nd;
    return 0;
}

int weft__netfd_acquire(weft__netfd *nd, int kind)
{
    if (!nd)
        return WEFT_EINVAL;
    /* A closed record is never counted up again: a reference taken after
     * the close bit would race with the release that finishes it. */
    uint64_t s = atomic_load(&nd->state);
    do {
        if (s & WEFT__NETFD_CLOSED)
            return WEFT_ECLOSED;
    } while (!atomic_compare_exchange_weak(&nd->state, &s, s + 1));
    if (nd->kind != kind) {
        weft__netfd_release(nd);
        return WEFT_EINVAL;
    }
    return 0;
}

static void netfd_finish(weft__netfd *nd)
{
    if (epfd >= 0)
        epoll_ctl(epfd, EPOLL_CTL_DEL, nd->fd, NULL);
    close(nd->fd);
    nd->fd = -1;
    netfd_free(nd);
}

void weft__netfd_release(weft__netfd *nd)
{
    /* The count reaching zero after the close bit was set ends the record.
     * No acquire can revive it: acquire backs off on the close bit. */
    if (atomic_fetch_sub(&nd->state, 1) == (WEFT__NETFD_CLOSED | 1))
        netfd_finish(nd);
}

/* Swap a slot as a waker: 0 becomes READY, a record becomes 0. Returns
 * the record's parker when this waker won its claim. */
static weft__parker *netfd_notify(weft__netfd *nd, int dir);

int weft__netfd_close(weft__netfd *nd, int kind)
{
    if (!nd)
        return WEFT_EINVAL;
    int err = weft__netfd_acquire(nd, kind);
    if (err)
        return err;
    uint64_t s = atomic_fetch_or(&nd->state, WEFT__NETFD_CLOSED);
    if (s & WEFT__NETFD_CLOSED) {
        weft__netfd_release(nd);
        return WEFT_ECLOSED;
    }
    weft__parker *woken[2];
    size_t n = 0;
    for (int dir = 0; dir < 2; dir++) {
        weft__parker *p = netfd_notify(nd, dir);
        if (p)
            woken[n++] = p;
    }
    weft__ready_many(woken, n);
    /* Our operation reference, then the owner's. */
    weft__netfd_release(nd);
    weft__netfd_release(nd);
    return 0;
}

/* ---- Waiting -------------------------------------------------------------- */

typedef struct io_wait {
    weft__parker *parker;
    _Atomic uint32_t claim;
    _Atomic uint32_t armed;     /* 1 once the unlock step is done with the record */
} io_wait;

typedef struct io_arm {
    weft__netfd *nd;
    _Atomic uintptr_t *slot;
    io_wait *w;
} io_arm;

static weft__parker *netfd_notify(weft__netfd *nd, int dir)
{
    _Atomic uintptr_t *slot = &nd->slot[dir];
    weft__parker *won = NULL;
    atomic_fetch_add(&nd->busy, 1);
    uintptr_t v = atomic_load(slot);
    for (;;) {
        if (v == WEFT__NETFD_READY)
            break;
        uintptr_t next = v == 0 ? WEFT__NETFD_READY : 0;
        if (!atomic_compare_exchange_weak(slot, &v, next))
            continue;
        if (v != 0) {
            io_wait *w = (io_wait *)v;
            uint32_t open = WEFT__CLAIM_OPEN;
            if (atomic_compare_exchange_strong(&w->claim, &open, WEFT__CLAIM_WAKER))
                won = w->parker;
        }
        break;
    }
    atomic_fetch_sub(&nd->busy, 1);
    return won;
}

/* The unlock step: runs after the switch (on g0 for a coroutine). The
 * context's watcher may already be linked, so the waiter can resume as
 * soon as the record is in the slot; nothing of *a is read after that. */
static bool io_arm_unlock(void *arg)
{
    io_arm *a = arg;
    weft__netfd *nd = a->nd;
    _Atomic uintptr_t *slot = a->slot;
    io_wait *w = a->w;

    atomic_fetch_add(&nd->busy, 1);
    uintptr_t expected = 0;
    if (!atomic_compare_exchange_strong(slot, &expected, (uintptr_t)w)) {
        /* READY arrived since the system call failed, or another record
         * is in the slot, which the direction's lock rules out. */
        uint32_t open = WEFT__CLAIM_OPEN;
        if (atomic_compare_exchange_strong(&w->claim, &open, WEFT__CLAIM_WAKER))
            weft__ready(w->parker);
    }
    atomic_fetch_sub(&nd->busy, 1);
    /* The last touch of the waiter's stack. */
    atomic_store(&w->armed, 1);
    return true;
}

/* Wait until the unlock step has finished with w. The context can end and
 * resume the waiter between linking its watcher and calling the unlock
 * step, and the step's last writes may come after a wakeup; the waiter's
 * frame must outlive both. */
static void await_armed(io_wait *w)
{
    for (unsigned spins = 0; atomic_load(&w->armed) == 0; spins++) {
        if (spins < 100)
            weft__cpu_relax();
        else
            sched_yield();
    }
}

int weft__netfd_wait(weft_ctx *ctx, weft__netfd *nd, int dir)
{
    _Atomic uintptr_t *slot = &nd->slot[dir];
    uintptr_t ready = WEFT__NETFD_READY;
    if (atomic_compare_exchange_strong(slot, &ready, 0))
        return weft__netfd_closed(nd) ? WEFT_ECLOSED : 0;
    if (weft__netfd_closed(nd))
        return WEFT_ECLOSED;
    if (nd->generation != weft__generation() || epfd < 0)
        return WEFT_EINVAL;

    io_wait w = { .parker = weft__parker_self() };
    atomic_init(&w.claim, WEFT__CLAIM_OPEN);
    atomic_init(&w.armed, 0);
    io_arm a = { .nd = nd, .slot = slot, .w = &w };
    atomic_fetch_add(&weft__netpoll_nwait, 1);
    if (w.parker->kind == WEFT__PARKER_THREAD)
        weft__netpoll_wanted();
    int err = weft__park_ctx(io_arm_unlock, &a, WEFT__WAIT_IO, ctx, &w.claim);
    atomic_fetch_sub(&weft__netpoll_nwait, 1);
    await_armed(&w);

    if (atomic_load(&w.claim) == WEFT__CLAIM_TIMEOUT) {
        uintptr_t mine = (uintptr_t)&w;
        if (!atomic_compare_exchange_strong(slot, &mine, 0)) {
            /* A waker or our own unlock step holds the record; both finish
             * within a few instructions unless their thread is preempted. */
            for (unsigned spins = 0; atomic_load(&nd->busy) != 0; spins++) {
                if (spins < 100)
                    weft__cpu_relax();
                else
                    sched_yield();
            }
        }
        return err;
    }
    return weft__netfd_closed(nd) ? WEFT_ECLOSED : 0;
}

int weft__netfd_lock(weft_ctx *ctx, weft__netfd *nd, int dir)
{
    if (weft_sem_try_acquire(&nd->sem[dir], 1))
        return 0;
    return weft_sem_acquire(ctx, &nd->sem[dir], 1);
}

void weft__netfd_unlock(weft__netfd *nd, int dir)
{
    weft_sem_release(&nd->sem[dir], 1);
}

/* ---- Polling -------------------------------------------------------------- */

int weft__netpoll(int64_t deadline, weft__parker **woken)
{
    if (epfd < 0)
        return 0;
    struct epoll_event events[POLL_BATCH];
    int n;
    if (deadline == 0) {
        n = epoll_wait(epfd, events, POLL_BATCH, 0);
    } else if (deadline < 0) {
        n = epoll_wait(epfd, events, POLL_BATCH, -1);
    } else {
        int64_t left = deadline - weft_now();
        if (left < 0)
            left = 0;
#ifdef WEFT_TSAN
        /* ThreadSanitizer (gcc 12) intercepts epoll_wait but not
         * epoll_pwait2, and would miss the ordering that epoll provides. */
        n = -1;
        errno = ENOSYS;
#else
        struct timespec ts = { .tv_sec = left / 1000000000, .tv_nsec = left % 1000000000 };
        n = epoll_pwait2(epfd, events, POLL_BATCH, &ts, NULL);
#endif
        if (n < 0 && errno == ENOSYS) {
            /* Kernels before 5.11: milliseconds, rounded up. */
            int64_t ms = (left + 999999) / 1000000;
            n = epoll_wait(epfd, events, POLL_BATCH, ms > 1000000 ? 1000000 : (int)ms);
        }
    }
    if (n <= 0)
        return 0;

    int count = 0;
    for (int i = 0; i < n; i++) {
        weft__netfd *nd = events[i].data.ptr;
        uint32_t e = events[i].events;
        if (!nd) {
            uint64_t value;
            ssize_t r = read(break_fd, &value, sizeof value);
            (void)r;
            atomic_store(&break_pending, 0);
            continue;
        }
        weft__parker *p;
        if ((e & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) &&
            (p = netfd_notify(nd, WEFT__DIR_READ)))
            woken[count++] = p;
        if ((e & (EPOLLOUT | EPOLLHUP | EPOLLERR)) &&
            (p = netfd_notify(nd, WEFT__DIR_WRITE)))
            woken[count++] = p;
    }
    return count;
}

void weft__netpoll_break(void)
{
    uint32_t zero = 0;
    if (break_fd < 0 || !atomic_compare_exchange_strong(&break_pending, &zero, 1))
        return;
    uint64_t one = 1;
    ssize_t r = write(break_fd, &one, sizeof one);
    (void)r;
}

/* ---- Set-up --------------------------------------------------------------- */

int weft__netpoll_loop_fd(void)
{
    return atomic_load(&weft__netpoll_by_loop) ? epfd : -1;
}

int weft__netpoll_init(bool by_loop)
{
    weft__io_fork_setup();
    atomic_store(&weft__netpoll_by_loop, by_loop);
    epfd = epoll_create1(EPOLL_CLOEXEC);
    if (epfd < 0)
        return -errno;
    break_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (break_fd < 0) {
        int err = -errno;
        close(epfd);
        epfd = -1;
        return err;
    }
    struct epoll_event ev = { .events = EPOLLIN, .data.ptr = NULL };
    if (epoll_ctl(epfd, EPOLL_CTL_ADD, break_fd, &ev) != 0) {
        int err = -errno;
        weft__netpoll_term();
        return err;
    }
    atomic_store(&break_pending, 0);
    atomic_store(&weft__netpoll_nwait, 0);
    atomic_store(&weft__netpoll_blocked, 0);
    return 0;
}

/* After the Ps have stopped. Sockets still open keep their descriptors
 * and records; a later runtime cannot wait on them, because they are not
 * in its epoll set. */
void weft__netpoll_term(void)
{
    if (break_fd >= 0)
        close(break_fd);
    if (epfd >= 0)
        close(epfd);
    break_fd = -1;
    epfd = -1;
}
