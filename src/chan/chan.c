/*
 * Channels and select, with Go's semantics, on the park/ready interface.
 *
 * A channel is a lock, a ring buffer of cap slots (none when unbuffered),
 * and two wait queues: parked senders and parked receivers. A waiter is a
 * "waiter" record on its own stack holding its parker and the address of
 * its value (the value to send, or where to store the one received).
 *
 * Channel invariants (under the channel's lock):
 *  - sendq is non-empty only when the buffer is full (or cap is 0), and
 *    recvq only when it is empty.
 *  - So a sender first hands its value to a waiting receiver, else fills
 *    the buffer, else waits. A receiver first takes from the buffer and
 *    refills the freed slot from the first waiting sender, else takes from
 *    a waiting sender, else waits.
 *  - A value passes straight between the two parties' own memory: the
 *    active party copies into (or out of) the parked one's value while the
 *    parked one cannot run, then unlinks it, drops the lock and readies
 *    it. The readied party is placed in the waker's runnext slot when the
 *    waker is a coroutine, so a ping-pong stays on one P.
 *  - closed is set under the lock. close takes every waiter off both
 *    queues, zeroes the receivers' values, marks them unsuccessful and
 *    readies them all after dropping the lock.
 *  - No operation touches the channel after it has readied another party,
 *    so the holder of the last reference may release it at once.
 *  - Waiters are served in queue order, which is arrival order.
 *
 * Select (Go's selectgo):
 *  1. Choose a random poll order (Fisher-Yates) and a lock order (by
 *     channel address, each channel once).
 *  2. In poll order look for a case that can proceed at once. A recv
 *     proceeds with a waiting sender, buffered data or a closed channel.
 *     A send proceeds with a closed channel, a waiting receiver or buffer
 *     room. Run the first found and return its index. This pass locks one
 *     channel at a time. If it finds nothing, the same pass is repeated
 *     with every channel locked, so no case can become ready unseen before
 *     step 3.
 *  3. Otherwise (when blocking) enqueue one waiter per case on its channel,
 *     all pointing at one select record with a claim word, and park; the
 *     channels are unlocked only after the switch.
 *  4. A waker that dequeues a waiter belonging to a select must first move
 *     the claim word from OPEN to WAKER by CAS. If the CAS fails, another
 *     waker (or the deadline) has won; the waiter is dropped from the queue
 *     and the waker goes on to the next one. The winner records which
 *     waiter fired, transfers the value and readies the select.
 *  5. Woken, the select locks every channel again, unlinks its waiters
 *     that are still queued, unlocks and returns the case that fired. It
 *     holds a reference to each channel from step 3 to here, because the
 *     party that woke it may release the caller's last reference at once.
 * So exactly one case of a select fires (the claim is a single CAS), a
 * value is never delivered to a select that no longer waits (the waker
 * holds the channel lock while it claims and transfers), and no wakeup is
 * lost (a waiter is visible on every channel from the moment its locks
 * drop until it is claimed). A select racing close is the same race: close
 * also claims before it readies. A deadline is one more contender for the
 * claim (weft__park_until).
 *
 * Lock order: channel locks in address order; a channel lock may be held
 * while the timer heap's lock is taken (a timed select arms its deadline
 * while it holds its channels). Ready is always called without any lock.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/chan.h"
#include "weft/error.h"

typedef struct select_rec {
    _Atomic uint32_t claim;     /* WEFT__CLAIM_* */
    struct waiter *fired;       /* the waiter whose case ran; by the claimer */
} select_rec;

typedef struct waiter {
    struct waiter *next;
    struct waiter *prev;
    weft__parker *parker;
    void *elem;                 /* value to send, or where to receive */
    select_rec *sel;            /* NULL for a plain send or recv */
    weft_chan *chan;
    uint32_t case_index;
    bool is_send;
    bool queued;
    bool success;               /* false: woken by close */
} waiter;

typedef struct waitq {
    waiter *first;
    waiter *last;
    _Atomic uint32_t len;       /* written under the lock, read without */
    uint32_t nthreads;          /* plain threads among the waiters */
    uint32_t generation;        /* runtime of the last coroutine queued */
} waitq;

struct weft_chan {
    _Atomic uint32_t lock;
    _Atomic uint32_t closed;    /* written under lock, read without it too */
    _Atomic size_t qcount;      /* values in the buffer; likewise */
    size_t cap;
    size_t elem_size;
    size_t sendx;               /* next slot to fill */
    size_t recvx;               /* next slot to take */
    waitq recvq;
    waitq sendq;
    _Atomic size_t refs;
    unsigned char *buf;         /* cap * elem_size bytes, after the struct */
};

/* ---- Wait queues (channel lock held) ------------------------------------ */

static void waitq_push(waitq *q, waiter *w)
{
    w->next = NULL;
    w->prev = q->last;
    if (q->last)
        q->last->next = w;
    else
        q->first = w;
    q->last = w;
    w->queued = true;
    atomic_store_explicit(&q->len, atomic_load_explicit(&q->len, memory_order_relaxed) + 1,
                          memory_order_relaxed);
    if (w->parker->kind == WEFT__PARKER_THREAD)
        q->nthreads++;
    else
        q->generation = weft__generation();
}

static void waitq_unlink(waitq *q, waiter *w)
{
    if (w->prev)
        w->prev->next = w->next;
    else
        q->first = w->next;
    if (w->next)
        w->next->prev = w->prev;
    else
        q->last = w->prev;
    w->next = w->prev = NULL;
    w->queued = false;
    atomic_store_explicit(&q->len, atomic_load_explicit(&q->len, memory_order_relaxed) - 1,
                          memory_order_relaxed);
    if (w->parker->kind == WEFT__PARKER_THREAD)
        q->nthreads--;
}

/* True when q contains a waiter that may still be woken: a plain thread,
 * or a coroutine of the runtime that is running now.
 * NOTE: waiters abandoned by a runtime that shut down stay linked, with
 * their records gone, so such a channel can only be released afterwards. */
static bool waitq_live(const waitq *q)
{
    if (!q->first)
        return false;
    return q->nthreads > 0 ||
           (q->generation == weft__generation() &&
            atomic_load(&weft__rt.running));
}

/* Take the first waiter that may still be woken: a select's waiter counts
 * only if this caller wins its claim. */
static waiter *waitq_take(waitq *q)
{
    for (;;) {
        waiter *w = q->first;
        if (!w)
            return NULL;
        waitq_unlink(q, w);
        if (w->sel) {
            uint32_t open = WEFT__CLAIM_OPEN;
            if (!atomic_compare_exchange_strong(&w->sel->claim, &open,
                                                WEFT__CLAIM_WAKER))
                continue;
            w->sel->fired = w;
        }
        return w;
    }
}

/* ---- Making and releasing ----------------------------------------------- */

weft_chan *weft_chan_make(size_t elem_size, size_t cap)
{
    size_t bytes;
    if (__builtin_mul_overflow(elem_size, cap, &bytes) ||
        bytes > SIZE_MAX - sizeof(weft_chan))
        return NULL;
    weft_chan *ch = calloc(1, sizeof *ch + bytes);
    if (!ch)
        return NULL;
    ch->cap = cap;
    ch->elem_size = elem_size;
    ch->buf = (unsigned char *)(ch + 1);
    atomic_init(&ch->refs, 1);
    return ch;
}

weft_chan *weft_chan_retain(weft_chan *ch)
{
    if (ch)
        atomic_fetch_add_explicit(&ch->refs, 1, memory_order_relaxed);
    return ch;
}

void weft_chan_release(weft_chan *ch)
{
    if (!ch)
        return;
    size_t old = atomic_fetch_sub_explicit(&ch->refs, 1, memory_order_acq_rel);
    if (old == 0)
        weft__fatal("weft_chan_release: channel %p released more times than "
                    "it was retained", (void *)ch);
    if (old > 1)
        return;
    /* Coroutines abandoned by a runtime that has shut down do not count:
     * their records vanished with their stacks and are never read again. */
    weft__lock_acquire(&ch->lock);
    bool waiting = waitq_live(&ch->recvq) || waitq_live(&ch->sendq);
    weft__lock_release(&ch->lock);
    if (waiting)
        weft__fatal("weft_chan_release: the last reference to channel %p was "
                    "released while a sender or receiver waits on it",
                    (void *)ch);
    free(ch);
}

size_t weft_chan_len(weft_chan *ch)
{
    return ch ? atomic_load_explicit(&ch->qcount, memory_order_relaxed) : 0;
}

size_t weft_chan_cap(weft_chan *ch)
{
    return ch ? ch->cap : 0;
}

/* ---- Value movement (channel lock held) --------------------------------- */

static inline unsigned char *slot(weft_chan *ch, size_t i)
{
    return ch->buf + i * ch->elem_size;
}

static inline void copy_value(weft_chan *ch, void *dst, const void *src)
{
    if (dst && ch->elem_size)
        memcpy(dst, src, ch->elem_size);
}

static inline void zero_value(weft_chan *ch, void *dst)
{
    if (dst && ch->elem_size)
        memset(dst, 0, ch->elem_size);
}

static inline void buf_push(weft_chan *ch, const void *elem)
{
    if (ch->elem_size)
        memcpy(slot(ch, ch->sendx), elem, ch->elem_size);
    if (++ch->sendx == ch->cap)
        ch->sendx = 0;
    atomic_store_explicit(&ch->qcount, atomic_load_explicit(&ch->qcount,
                          memory_order_relaxed) + 1, memory_order_relaxed);
}

static inline void buf_pop(weft_chan *ch, void *elem)
{
    if (ch->elem_size) {
        if (elem)
            memcpy(elem, slot(ch, ch->recvx), ch->elem_size);
        memset(slot(ch, ch->recvx), 0, ch->elem_size);
    }
    if (++ch->recvx == ch->cap)
        ch->recvx = 0;
    atomic_store_explicit(&ch->qcount, atomic_load_explicit(&ch->qcount,
                          memory_order_relaxed) - 1, memory_order_relaxed);
}

/* Receive from the parked sender s into elem. With a buffer (which is
 * full) take its head, and move s's value into the freed slot. */
static void recv_from(weft_chan *ch, waiter *s, void *elem)
{
    if (ch->cap == 0) {
        copy_value(ch, elem, s->elem);
    } else {
        if (ch->elem_size) {
            if (elem)
                memcpy(elem, slot(ch, ch->recvx), ch->elem_size);
            memcpy(slot(ch, ch->recvx), s->elem, ch->elem_size);
        }
        if (++ch->recvx == ch->cap)
            ch->recvx = 0;
        ch->sendx = ch->recvx;
    }
    s->success = true;
}

/* Send elem to the parked receiver r. */
static void send_to(weft_chan *ch, waiter *r, const void *elem)
{
    copy_value(ch, r->elem, elem);
    r->success = true;
}

/* ---- Send and receive --------------------------------------------------- */

static bool chan_unlock(void *arg)
{
    weft_chan *ch = arg;
    weft__lock_release(&ch->lock);
    return true;
}

static bool no_unlock(void *arg)
{
    (void)arg;
    return true;
}

/* Block the caller for good: an operation on a NULL channel. */
_Noreturn static void park_forever(int reason)
{
    for (;;)
        weft__park(no_unlock, NULL, reason);
}

/* Lock-free views for the try operations and select's first pass: the
 * buffer count, or for an unbuffered channel the other side's queue
 * length. A stale view only sends the caller to the locked path. */
static inline bool is_full(weft_chan *ch)
{
    if (ch->cap == 0)
        return atomic_load_explicit(&ch->recvq.len, memory_order_relaxed) == 0;
    return atomic_load_explicit(&ch->qcount, memory_order_relaxed) == ch->cap;
}

static inline bool is_empty(weft_chan *ch)
{
    if (ch->cap == 0)
        return atomic_load_explicit(&ch->sendq.len, memory_order_relaxed) == 0;
    return atomic_load_explicit(&ch->qcount, memory_order_relaxed) == 0;
}

/* Whether case c looks ready without its lock. */
static inline bool case_looks_ready(const weft_case *c)
{
    weft_chan *ch = c->chan;
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed))
        return true;
    return c->dir == WEFT_RECV ? !is_empty(ch) : !is_full(ch);
}

static int chan_send(weft_chan *ch, const void *elem, bool block)
{
    if (!ch) {
        if (!block)
            return WEFT_EAGAIN;
        park_forever(WEFT__WAIT_CHAN_SEND_NIL);
    }
    if (!elem && ch->elem_size)
        return WEFT_EINVAL;
    /* Without the lock, as Go does: an open channel that is full cannot
     * take a value now. The closed check comes first, so the result
     * matches the channel's state at one instant. */
    if (!block && !atomic_load_explicit(&ch->closed, memory_order_relaxed) &&
        is_full(ch))
        return WEFT_EAGAIN;

    weft__lock_acquire(&ch->lock);
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        weft__lock_release(&ch->lock);
        return WEFT_ECLOSED;
    }
    waiter *r = waitq_take(&ch->recvq);
    if (r) {
        weft__parker *parker = r->parker;
        send_to(ch, r, elem);
        weft__lock_release(&ch->lock);
        weft__ready(parker);
        return 0;
    }
    if (atomic_load_explicit(&ch->qcount, memory_order_relaxed) < ch->cap) {
        buf_push(ch, elem);
        weft__lock_release(&ch->lock);
        return 0;
    }
    if (!block) {
        weft__lock_release(&ch->lock);
        return WEFT_EAGAIN;
    }
    waiter self = { .parker = weft__parker_self(), .elem = (void *)elem,
                    .chan = ch };
    waitq_push(&ch->sendq, &self);
    weft__park(chan_unlock, ch, WEFT__WAIT_CHAN_SEND);
    return self.success ? 0 : WEFT_ECLOSED;
}

static int chan_recv(weft_chan *ch, void *elem, bool block)
{
    if (!ch) {
        if (!block)
            return WEFT_EAGAIN;
        park_forever(WEFT__WAIT_CHAN_RECV_NIL);
    }
    if (!block && is_empty(ch)) {
        if (!atomic_load_explicit(&ch->closed, memory_order_acquire))
            return WEFT_EAGAIN;
        /* Closed: it stays closed, so if it is still empty it is drained. */
        if (is_empty(ch)) {
            zero_value(ch, elem);
            return WEFT_ECLOSED;
        }
    }

    weft__lock_acquire(&ch->lock);
    waiter *s = waitq_take(&ch->sendq);
    if (s) {
        weft__parker *parker = s->parker;
        recv_from(ch, s, elem);
        weft__lock_release(&ch->lock);
        weft__ready(parker);
        return 0;
    }
    if (atomic_load_explicit(&ch->qcount, memory_order_relaxed) > 0) {
        buf_pop(ch, elem);
        weft__lock_release(&ch->lock);
        return 0;
    }
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        weft__lock_release(&ch->lock);
        zero_value(ch, elem);
        return WEFT_ECLOSED;
    }
    if (!block) {
        weft__lock_release(&ch->lock);
        return WEFT_EAGAIN;
    }
    waiter self = { .parker = weft__parker_self(), .elem = elem, .chan = ch };
    waitq_push(&ch->recvq, &self);
    weft__park(chan_unlock, ch, WEFT__WAIT_CHAN_RECV);
    return self.success ? 0 : WEFT_ECLOSED;
}

int weft_chan_send(weft_chan *ch, const void *elem)
{
    return chan_send(ch, elem, true);
}

int weft_chan_recv(weft_chan *ch, void *elem)
{
    return chan_recv(ch, elem, true);
}

int weft_chan_try_send(weft_chan *ch, const void *elem)
{
    return chan_send(ch, elem, false);
}

int weft_chan_try_recv(weft_chan *ch, void *elem)
{
    return chan_recv(ch, elem, false);
}

/* Ready a list of woken waiters linked through next. Each waiter is read
 * before its parker is readied: it lives on that parker's stack. */
static void ready_chain(waiter *list)
{
    enum { BATCH = 64 };
    weft__parker *batch[BATCH];
    size_t n = 0;
    while (list) {
        waiter *w = list;
        list = w->next;
        batch[n++] = w->parker;
        if (n == BATCH) {
            weft__ready_many(batch, n);
            n = 0;
        }
    }
    weft__ready_many(batch, n);
}

int weft_chan_close(weft_chan *ch)
{
    if (!ch)
        return WEFT_EINVAL;
    weft__lock_acquire(&ch->lock);
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        weft__lock_release(&ch->lock);
        return WEFT_ECLOSED;
    }
    atomic_store_explicit(&ch->closed, 1, memory_order_release);
    waiter *list = NULL, **tail = &list;
    waiter *w;
    while ((w = waitq_take(&ch->recvq)) != NULL) {
        zero_value(ch, w->elem);
        w->success = false;
        *tail = w;
        tail = &w->next;
    }
    while ((w = waitq_take(&ch->sendq)) != NULL) {
        w->success = false;
        *tail = w;
        tail = &w->next;
    }
    *tail = NULL;
    weft__lock_release(&ch->lock);
    ready_chain(list);
    return 0;
}

/* ---- Select ------------------------------------------------------------- */

#if defined(__GNUC__) && !defined(__clang__)
#define NO_IPA __attribute__((noinline, noipa))
#else
#define NO_IPA __attribute__((noinline))
#endif

/* A per-thread xorshift generator for the poll order. Only called before a
 * select parks, never kept across a switch. */
NO_IPA static uint32_t fast_rand(void)
{
    static _Thread_local uint64_t state;
    uint64_t x = state;
    if (x == 0) {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        x = ((uint64_t)ts.tv_nsec << 20) ^ (uint64_t)(uintptr_t)&state ^
            (uint64_t)ts.tv_sec;
        if (x == 0)
            x = 0x9e3779b97f4a7c15ull;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    state = x;
    return (uint32_t)(x >> 32);
}

/* Cases up to this many keep their records on the caller's stack (about
 * 5 KiB at most). */
#define SELECT_SMALL 64

typedef struct select_locks {
    weft_chan **chans;          /* distinct channels in address order */
    size_t n;
} select_locks;

static void lock_all(const select_locks *l)
{
    for (size_t i = 0; i < l->n; i++)
        weft__lock_acquire(&l->chans[i]->lock);
}

static void unlock_all(const select_locks *l)
{
    for (size_t i = l->n; i-- > 0;)
        weft__lock_release(&l->chans[i]->lock);
}

static bool select_unlock(void *arg)
{
    unlock_all(arg);
    return true;
}

static int compare_chan(const void *a, const void *b)
{
    uintptr_t x = (uintptr_t)*(weft_chan *const *)a;
    uintptr_t y = (uintptr_t)*(weft_chan *const *)b;
    return x < y ? -1 : x > y;
}

/* Try case c at once (its channel locked). On success set c->ok and, when
 * a parked party was served, *woken. */
static bool case_try(weft_case *c, weft__parker **woken)
{
    weft_chan *ch = c->chan;
    if (c->dir == WEFT_RECV) {
        waiter *s = waitq_take(&ch->sendq);
        if (s) {
            *woken = s->parker;
            recv_from(ch, s, c->elem);
            c->ok = true;
            return true;
        }
        if (atomic_load_explicit(&ch->qcount, memory_order_relaxed) > 0) {
            buf_pop(ch, c->elem);
            c->ok = true;
            return true;
        }
        if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
            zero_value(ch, c->elem);
            c->ok = false;
            return true;
        }
        return false;
    }
    if (atomic_load_explicit(&ch->closed, memory_order_relaxed)) {
        c->ok = false;
        return true;
    }
    waiter *r = waitq_take(&ch->recvq);
    if (r) {
        *woken = r->parker;
        send_to(ch, r, c->elem);
        c->ok = true;
        return true;
    }
    if (atomic_load_explicit(&ch->qcount, memory_order_relaxed) < ch->cap) {
        buf_push(ch, c->elem);
        c->ok = true;
        return true;
    }
    return false;
}

/* mode: 0 try, 1 block, 2 block until deadline. */
static int select_run(weft_case *cases, size_t n, int mode, int64_t deadline)
{
    if (n > 0 && !cases)
        return WEFT_EINVAL;
    if (n > UINT32_MAX)
        return WEFT_EINVAL;
    for (size_t i = 0; i < n; i++) {
        const weft_case *c = &cases[i];
        if (c->dir != WEFT_SEND && c->dir != WEFT_RECV)
            return WEFT_EINVAL;
        if (c->dir == WEFT_SEND && c->chan && !c->elem && c->chan->elem_size)
            return WEFT_EINVAL;
    }

    uint32_t order_small[SELECT_SMALL];
    weft_chan *chans_small[SELECT_SMALL];
    waiter waiters_small[SELECT_SMALL];
    uint32_t *order = order_small;
    weft_chan **chans = chans_small;
    waiter *waiters = waiters_small;
    void *heap_block = NULL;
    if (n > SELECT_SMALL) {
        size_t bytes = n * (sizeof *order + sizeof *chans + sizeof *waiters);
        heap_block = malloc(bytes);
        if (!heap_block)
            return WEFT_ENOMEM;
        waiters = heap_block;
        chans = (weft_chan **)(waiters + n);
        order = (uint32_t *)(chans + n);
    }

    /* Poll order: a uniform random permutation of the cases that have a
     * channel. Lock order: their distinct channels by address. */
    size_t live = 0;
    for (size_t i = 0; i < n; i++) {
        if (!cases[i].chan)
            continue;
        size_t j = fast_rand() % (live + 1);
        order[live] = order[j];
        order[j] = (uint32_t)i;
        chans[live] = cases[i].chan;
        live++;
    }
    /* Fast pass: try each case in poll order with only its own channel
     * locked. When producers keep a channel busy, this takes one lock per
     * select instead of all of them, and the first ready case in poll
     * order is still the one that runs. Only when none is ready are all
     * channels locked together, for the pass that may enqueue. */
    int result;
    for (size_t k = 0; k < live; k++) {
        weft_case *c = &cases[order[k]];
        weft__parker *woken = NULL;
        if (!case_looks_ready(c))
            continue;
        weft__lock_acquire(&c->chan->lock);
        bool fired = case_try(c, &woken);
        weft__lock_release(&c->chan->lock);
        if (fired) {
            if (woken)
                weft__ready(woken);
            result = (int)order[k];
            goto done;
        }
    }

    if (live > 1) {
        if (live <= 16) {
            for (size_t i = 1; i < live; i++) {
                weft_chan *c = chans[i];
                size_t j = i;
                while (j > 0 && (uintptr_t)chans[j - 1] > (uintptr_t)c) {
                    chans[j] = chans[j - 1];
                    j--;
                }
                chans[j] = c;
            }
        } else {
            qsort(chans, live, sizeof *chans, compare_chan);
        }
    }
    size_t distinct = 0;
    for (size_t i = 0; i < live; i++)
        if (distinct == 0 || chans[distinct - 1] != chans[i])
            chans[distinct++] = chans[i];
    select_locks locks = { chans, distinct };

    lock_all(&locks);
    for (size_t k = 0; k < live; k++) {
        weft_case *c = &cases[order[k]];
        weft__parker *woken = NULL;
        if (case_try(c, &woken)) {
            unlock_all(&locks);
            if (woken)
                weft__ready(woken);
            result = (int)order[k];
            goto done;
        }
    }
    if (mode == 0) {
        unlock_all(&locks);
        result = WEFT_EAGAIN;
        goto done;
    }
    if (mode == 2 && weft_now() >= deadline) {
        unlock_all(&locks);
        result = WEFT_ETIMEDOUT;
        goto done;
    }

    select_rec sel = { .fired = NULL };
    atomic_init(&sel.claim, WEFT__CLAIM_OPEN);
    weft__parker *self = weft__parker_self();
    for (size_t i = 0; i < n; i++) {
        weft_case *c = &cases[i];
        waiter *w = &waiters[i];
        *w = (waiter){ .parker = self, .elem = c->elem, .sel = &sel,
                       .chan = c->chan, .case_index = (uint32_t)i,
                       .is_send = c->dir == WEFT_SEND };
        if (c->chan)
            waitq_push(c->dir == WEFT_SEND ? &c->chan->sendq : &c->chan->recvq, w);
    }
    /* Once woken, this select still unlinks its other waiters, while the
     * waker may already have dropped the last reference of the caller's.
     * So it holds a reference of its own to each channel until then. */
    for (size_t i = 0; i < distinct; i++)
        atomic_fetch_add_explicit(&chans[i]->refs, 1, memory_order_relaxed);
    int reason = n ? WEFT__WAIT_SELECT : WEFT__WAIT_SELECT_NO_CASES;
    bool timed_out;
    if (mode == 2) {
        timed_out = weft__park_until(select_unlock, &locks, reason, deadline,
                                     &sel.claim);
    } else {
        /* Parked for good when no case has a channel: nothing can claim. */
        weft__park(select_unlock, &locks, reason);
        timed_out = false;
    }

    lock_all(&locks);
    for (size_t i = 0; i < n; i++) {
        waiter *w = &waiters[i];
        if (w->queued)
            waitq_unlink(w->is_send ? &w->chan->sendq : &w->chan->recvq, w);
    }
    unlock_all(&locks);
    for (size_t i = 0; i < distinct; i++)
        weft_chan_release(chans[i]);
    if (timed_out) {
        result = WEFT_ETIMEDOUT;
    } else {
        waiter *w = sel.fired;
        weft_case *c = &cases[w->case_index];
        c->ok = w->success;
        result = (int)w->case_index;
    }
done:
    free(heap_block);
    return result;
}

int weft_select(weft_case *cases, size_t n)
{
    if (n == 0)
        park_forever(WEFT__WAIT_SELECT_NO_CASES);
    return select_run(cases, n, 1, 0);
}

int weft_try_select(weft_case *cases, size_t n)
{
    return select_run(cases, n, 0, 0);
}

int weft_select_until(weft_case *cases, size_t n, int64_t deadline)
{
    return select_run(cases, n, 2, deadline);
}
