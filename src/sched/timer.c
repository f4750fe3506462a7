/*
 * Timers: the deadline heap that the poller's loop thread serves, the
 * sleeps and timed parks built on it, and the public timers and tickers.
 *
 * The heap is a 4-ary min-heap of nodes (deadline, ref) guarded by
 * heap_lock. The deadline is copied into the node, so sifting reads only
 * the array. Three kinds of node:
 *
 *   sleep  ref is the sleeping coroutine's parker, tagged. Only its firing
 *          removes it, so sifting and firing never touch the sleeper's
 *          stack, which is cold by then.
 *   wait   ref is an entry on a parked coroutine's stack: the deadline of
 *          a timed park (select with a deadline). The entry keeps its heap
 *          index so it can be removed early. When it is due, the firing
 *          thread pops it and, under heap_lock, moves the park's claim word
 *          from OPEN to TIMEOUT; only if that succeeds is the coroutine
 *          readied, after the lock is dropped. The coroutine removes its
 *          entry after waking, under heap_lock, so no firing thread touches
 *          an entry whose owner may have returned.
 *   timer  ref is a heap-allocated weft_timer, which also keeps its index.
 *          Popping it takes a reference for the delivery and notes the
 *          timer's sequence number; a ticker is put back at once with its
 *          next deadline. After heap_lock is dropped, the delivery locks the
 *          timer and sends weft_now() into the timer's channel (never
 *          blocking: a full channel drops the value) only if the sequence
 *          number is unchanged. stop and reset bump it, so a fire already
 *          popped when they return is dropped.
 *
 * Who fires: the Ps, when they run out of local work, every few dozen
 * scheduling rounds, and when an idle P's sleep reaches the head's
 * deadline ("Timers" in sched.c). Readied coroutines go to the firing P's
 * local queue. The loop thread fires only as a backstop, a few
 * milliseconds late, for when every P runs a coroutine that does not
 * yield (poller.c). Firing pops at most BATCH nodes per hold of heap_lock,
 * to keep inserts waiting briefly.
 *
 * A new entry that becomes the earliest kicks the loop thread, which arms
 * its timerfd for the new head (poller.c).
 *
 * Timer references: one for the owner (dropped by weft_timer_release, or
 * at once by weft_after), one while the timer is in the heap, one per
 * delivery in flight. The last one frees the timer and releases its
 * channel.
 *
 * Lock order: timer lock, then channel lock or heap_lock. heap_lock is
 * also taken under channel locks (a timed select inserts its entry while
 * it holds its channels), so nothing that holds heap_lock takes any other
 * lock. Fields written under both the timer lock and heap_lock (seq,
 * period, the entry's index and deadline) may be read under either.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "lock.h"
#include "sched.h"
#include "weft/chan.h"
#include "weft/error.h"

#define NOT_IN_HEAP SIZE_MAX
#define ARITY 4
/* Entries popped per hold of heap_lock. */
#define BATCH 32

enum { ENTRY_WAIT = 1, ENTRY_TIMER = 2 };

typedef struct entry {
    size_t index;   /* in the heap, or NOT_IN_HEAP */
    int64_t deadline;
    int kind;
} entry;

typedef struct wait_entry {
    entry e;
    weft__parker *parker;
    _Atomic uint32_t *claim;
} wait_entry;

struct weft_timer {
    entry e;
    _Atomic uint32_t lock;
    uint64_t seq;      /* bumped by stop, reset and release */
    _Atomic int inflight; /* fires of the current setting popped, not delivered */
    bool dropped;      /* taken out of the heap by shutdown, unfired */
    int64_t period;    /* 0 for a one-shot timer */
    _Atomic int refs;
    weft_chan *ch;          /* NULL for a function timer */
    void (*fn)(void *arg);  /* a function timer's call, run once */
    void *fn_arg;
};

/* A heap node. ref is either a sleeping coroutine's parker with tag
 * NODE_SLEEP, or an entry whose index the heap keeps up to date. A sleep
 * needs no entry: nothing removes it but its own firing, so sifting and
 * firing it never touch the sleeper's stack. */
typedef struct node {
    int64_t deadline;
    uintptr_t ref;
} node;

#define NODE_SLEEP ((uintptr_t)1)

static inline entry *node_entry(node n)
{
    return (n.ref & NODE_SLEEP) ? NULL : (entry *)n.ref;
}

/* NOTE: one lock for every timer and sleep in the process. Under heavy
 * sleep traffic it is the main source of futex calls; per-P heaps would
 * remove that. */
static _Atomic uint32_t heap_lock;
static node *heap;             /* guarded by heap_lock */
static size_t heap_len;
static size_t heap_cap;
static _Atomic int64_t heap_head; /* deadline of heap[0], or 0 */
static _Atomic int64_t npending;

/* ---- The heap (heap_lock held) ------------------------------------------ */

static inline void heap_set(size_t i, node n)
{
    heap[i] = n;
    entry *e = node_entry(n);
    if (e)
        e->index = i;
}

static void heap_up(size_t i)
{
    node n = heap[i];
    while (i > 0) {
        size_t parent = (i - 1) / ARITY;
        if (heap[parent].deadline <= n.deadline)
            break;
        heap_set(i, heap[parent]);
        i = parent;
    }
    heap_set(i, n);
}

static void heap_down(size_t i)
{
    node n = heap[i];
    for (;;) {
        size_t first = i * ARITY + 1;
        if (first >= heap_len)
            break;
        size_t last = first + ARITY < heap_len ? first + ARITY : heap_len;
        size_t m = first;
        for (size_t c = first + 1; c < last; c++)
            if (heap[c].deadline < heap[m].deadline)
                m = c;
        if (heap[m].deadline >= n.deadline)
            break;
        heap_set(i, heap[m]);
        i = m;
    }
    heap_set(i, n);
}

static void heap_publish_head(void)
{
    /* seq_cst: the inserter's half of "Timers" in sched.c. */
    atomic_store(&heap_head, heap_len ? heap[0].deadline : 0);
    atomic_store_explicit(&npending, (int64_t)heap_len, memory_order_relaxed);
}

/* Insert n. Returns true when it became the earliest, false also when
 * memory ran out (then ok is false). */
static bool heap_insert_node(node n, bool *ok)
{
    if (heap_len == heap_cap) {
        size_t cap = heap_cap ? heap_cap * 2 : 1024;
        node *h = realloc(heap, cap * sizeof *h);
        if (!h) {
            *ok = false;
            return false;
        }
        heap = h;
        heap_cap = cap;
    }
    *ok = true;
    heap[heap_len] = n;
    heap_up(heap_len++);
    heap_publish_head();
    return heap[0].ref == n.ref;
}

static bool heap_insert(entry *e, bool *ok)
{
    return heap_insert_node((node){ e->deadline, (uintptr_t)e }, ok);
}

/* Remove the node at i. */
static void heap_remove_at(size_t i)
{
    heap_len--;
    if (i != heap_len) {
        heap_set(i, heap[heap_len]);
        if (i > 0 && heap[(i - 1) / ARITY].deadline > heap[i].deadline)
            heap_up(i);
        else
            heap_down(i);
    }
    heap_publish_head();
}

static void heap_remove(entry *e)
{
    size_t i = e->index;
    e->index = NOT_IN_HEAP;
    heap_remove_at(i);
}

/* Put e back at a new deadline; it is in the heap. */
static void heap_move(entry *e, int64_t deadline)
{
    size_t i = e->index;
    e->deadline = deadline;
    heap[i].deadline = deadline;
    heap_down(i);
    heap_publish_head();
}

/* After an insert: when the entry became the earliest, make sure a P
 * sleeps until it and that the loop thread's backstop is armed for it. */
static void kick_if(bool earliest)
{
    if (!earliest)
        return;
    weft__timers_changed();
    weft__poller_backstop(weft__timers_next());
}

/* ---- The loop thread's side --------------------------------------------- */

typedef struct delivery {
    weft_timer *t;
    uint64_t seq;
} delivery;

static void timer_unref(weft_timer *t)
{
    if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
        weft_chan_release(t->ch);
        free(t);
    }
}

/* Deliver one fire: the value is dropped when the channel is full, which is
 * how a slow ticker receiver loses ticks instead of queueing them. */
static void deliver(weft_timer *t, uint64_t seq)
{
    weft__lock_acquire(&t->lock);
    bool current = t->seq == seq;
    /* inflight counts the current setting's fires only: stop and reset
     * zero it when they bump seq, so a stale fire does not lower it. */
    if (current)
        atomic_fetch_sub_explicit(&t->inflight, 1, memory_order_relaxed);
    void (*fn)(void *) = t->fn;
    void *fn_arg = t->fn_arg;
    if (current && fn) {
        /* Consumed: a stop from now on finds nothing pending. */
        t->seq++;
    } else if (current) {
        int64_t now = weft_now();
        weft_chan_try_send(t->ch, &now);
    }
    weft__lock_release(&t->lock);
    /* Without the timer's lock, so fn may stop or release the timer. */
    if (current && fn)
        fn(fn_arg);
    timer_unref(t);
}

/* The next tick after deadline that is still in the future, on the grid
 * deadline + k * period, so a late loop never makes a ticker drift. */
static int64_t next_tick(int64_t deadline, int64_t period, int64_t now)
{
    if (deadline > INT64_MAX - period)
        return INT64_MAX;
    int64_t next = deadline + period;
    if (next <= now) {
        int64_t skip = (now - deadline) / period;
        if (skip > (INT64_MAX - deadline) / period - 1)
            return INT64_MAX;
        next = deadline + (skip + 1) * period;
    }
    return next;
}

int64_t weft__timers_run(int64_t now)
{
    weft__parker *ready[BATCH];
    delivery fires[BATCH];
    for (;;) {
        size_t nready = 0, nfires = 0;
        weft__lock_acquire(&heap_lock);
        while (heap_len && heap[0].deadline <= now &&
               nready < BATCH && nfires < BATCH) {
            node head = heap[0];
            entry *e = node_entry(head);
            if (!e) {
                heap_remove_at(0);
                ready[nready++] = (weft__parker *)(head.ref & ~NODE_SLEEP);
                continue;
            }
            if (e->kind == ENTRY_WAIT) {
                wait_entry *w = (wait_entry *)e;
                heap_remove(e);
                uint32_t open = WEFT__CLAIM_OPEN;
                if (atomic_compare_exchange_strong(w->claim, &open,
                                                   WEFT__CLAIM_TIMEOUT))
                    ready[nready++] = w->parker;
                continue;
            }
            weft_timer *t = (weft_timer *)e;
            if (t->period > 0) {
                atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
                heap_move(e, next_tick(e->deadline, t->period, now));
            } else {
                /* The heap's reference passes to the delivery. */
                heap_remove(e);
            }
            atomic_fetch_add_explicit(&t->inflight, 1, memory_order_relaxed);
            fires[nfires++] = (delivery){ t, t->seq };
        }
        bool more = heap_len && heap[0].deadline <= now;
        weft__lock_release(&heap_lock);

        weft__ready_many(ready, nready);
        for (size_t i = 0; i < nfires; i++)
            deliver(fires[i].t, fires[i].seq);
        if (!more)
            break;
    }
    return weft__timers_next();
}

int64_t weft__timers_next(void)
{
    return atomic_load(&heap_head);
}

int64_t weft__timers_pending(void)
{
    return atomic_load_explicit(&npending, memory_order_relaxed);
}

void weft__timers_term(void)
{
    weft__lock_acquire(&heap_lock);
    size_t n = heap_len;
    node *nodes = heap;
    heap = NULL;
    heap_len = heap_cap = 0;
    heap_publish_head();
    /* Wait entries belong to coroutines abandoned with the runtime; their
     * stacks are still mapped here. Timers lose the heap's reference. */
    for (size_t i = 0; i < n; i++) {
        entry *e = node_entry(nodes[i]);
        if (!e)
            continue;
        e->index = NOT_IN_HEAP;
        /* A later stop then returns true, and the owner of a function
         * timer can rely on fn never running. */
        if (e->kind == ENTRY_TIMER)
            ((weft_timer *)e)->dropped = true;
    }
    weft__lock_release(&heap_lock);
    for (size_t i = 0; i < n; i++) {
        entry *e = node_entry(nodes[i]);
        if (e && e->kind == ENTRY_TIMER)
            timer_unref((weft_timer *)e);
    }
    free(nodes);
}

/* ---- Sleeps and timed parks --------------------------------------------- */

typedef struct sleep_park {
    bool earliest;
} sleep_park;

static bool sleep_unlock(void *arg)
{
    sleep_park *sp = arg;
    bool earliest = sp->earliest;
    weft__lock_release(&heap_lock);
    kick_if(earliest);
    return true;
}

int weft__timer_sleep(int64_t deadline)
{
    weft__parker *self = weft__parker_self();
    sleep_park sp;
    bool ok;
    weft__lock_acquire(&heap_lock);
    sp.earliest = heap_insert_node(
        (node){ deadline, (uintptr_t)self | NODE_SLEEP }, &ok);
    if (!ok) {
        weft__lock_release(&heap_lock);
        return WEFT_ENOMEM;
    }
    weft__park(sleep_unlock, &sp, WEFT__WAIT_SLEEP);
    return 0;
}

typedef struct timed_park {
    weft__unlock_fn inner;
    void *arg;
    wait_entry *w;
} timed_park;

/* Insert the deadline entry, then run the caller's unlock step. This runs
 * after the coroutine has switched away, while the caller's locks still
 * hide it from wakers, so the entry is in the heap before anyone can ready
 * the coroutine. The coroutine removes the entry itself after it wakes.
 * Once the entry is in, the deadline may fire and resume the coroutine on
 * another P, which reuses the stack that contains *tp. So everything
 * needed afterwards is copied out first. The caller's locks, and the data
 * they guard, stay valid until inner has released them. */
static bool timed_unlock(void *arg)
{
    timed_park *tp = arg;
    weft__unlock_fn inner = tp->inner;
    void *inner_arg = tp->arg;
    wait_entry *w = tp->w;
    _Atomic uint32_t *claim = w->claim;
    bool ok;
    weft__lock_acquire(&heap_lock);
    bool earliest = heap_insert(&w->e, &ok);
    weft__lock_release(&heap_lock);
    if (!ok) {
        /* No room for the deadline (nothing was published): end the wait
         * now, as if it had passed. */
        atomic_store(claim, WEFT__CLAIM_TIMEOUT);
        if (inner)
            inner(inner_arg);
        return false;
    }
    kick_if(earliest);
    if (inner && !inner(inner_arg))
        weft__fatal("a timed park's unlock step must not cancel the park");
    return true;
}

bool weft__timer_park_until(weft__unlock_fn unlock, void *arg, int reason,
                            int64_t deadline, _Atomic uint32_t *claim)
{
    wait_entry w = { .e = { .index = NOT_IN_HEAP, .deadline = deadline,
                            .kind = ENTRY_WAIT },
                     .parker = weft__parker_self(), .claim = claim };
    timed_park tp = { .inner = unlock, .arg = arg, .w = &w };
    weft__park(timed_unlock, &tp, reason);
    weft__lock_acquire(&heap_lock);
    if (w.e.index != NOT_IN_HEAP)
        heap_remove(&w.e);
    weft__lock_release(&heap_lock);
    return atomic_load(claim) == WEFT__CLAIM_TIMEOUT;
}

/* ---- Public timers ------------------------------------------------------- */

static int64_t deadline_after(int64_t d)
{
    int64_t now = weft_now();
    return d > INT64_MAX - now ? INT64_MAX : now + d;
}

/* Stop t: take it out of the heap and discard an unreceived value. Returns
 * true if either was there. t->lock held. */
static bool stop_locked(weft_timer *t)
{
    bool pending = false, in_heap = false;
    weft__lock_acquire(&heap_lock);
    if (t->e.index != NOT_IN_HEAP) {
        heap_remove(&t->e);
        in_heap = true;
    }
    /* A fire popped but not delivered is discarded by the seq bump, so it
     * was still pending. Pops raise inflight under heap_lock, deliveries
     * lower it under t->lock: both are held here. */
    pending = in_heap || t->dropped ||
              atomic_load_explicit(&t->inflight, memory_order_relaxed) > 0;
    t->dropped = false;
    atomic_store_explicit(&t->inflight, 0, memory_order_relaxed);
    t->seq++;
    weft__lock_release(&heap_lock);
    if (in_heap) /* the heap's reference; the owner still holds one */
        atomic_fetch_sub_explicit(&t->refs, 1, memory_order_relaxed);
    if (weft_chan_try_recv(t->ch, NULL) == 0)
        pending = true;
    return pending;
}

/* Arm t to fire after d (and every period after). t->lock held, t stopped. */
static void start_locked(weft_timer *t, int64_t d, int64_t period)
{
    if (d <= 0 && period == 0 && !t->fn) {
        /* Fires at once; the channel was just emptied, so the value fits. */
        weft__lock_acquire(&heap_lock);
        t->period = 0;
        weft__lock_release(&heap_lock);
        int64_t now = weft_now();
        weft_chan_try_send(t->ch, &now);
        return;
    }
    atomic_fetch_add_explicit(&t->refs, 1, memory_order_relaxed);
    bool ok;
    weft__lock_acquire(&heap_lock);
    t->period = period;
    int64_t wait = d;
    if (wait <= 0)
        wait = period > 0 ? period : 0;
    t->e.deadline = deadline_after(wait);
    bool earliest = heap_insert(&t->e, &ok);
    weft__lock_release(&heap_lock);
    if (!ok) {
        /* Out of memory for the heap: fire now rather than never. */
        atomic_fetch_sub_explicit(&t->refs, 1, memory_order_relaxed);
        int64_t now = weft_now();
        weft_chan_try_send(t->ch, &now);
        return;
    }
    kick_if(earliest);
}

static weft_timer *timer_new(int64_t d, int64_t period, void (*fn)(void *),
                             void *fn_arg)
{
    if (!atomic_load(&weft__rt.running))
        return NULL;
    weft_timer *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->fn = fn;
    t->fn_arg = fn_arg;
    if (!fn) {
        t->ch = weft_chan_make(sizeof(int64_t), 1);
        if (!t->ch) {
            free(t);
            return NULL;
        }
    }
    t->e = (entry){ .index = NOT_IN_HEAP, .kind = ENTRY_TIMER };
    atomic_init(&t->refs, 1);
    weft__lock_acquire(&t->lock);
    start_locked(t, d, period);
    weft__lock_release(&t->lock);
    return t;
}

weft_timer *weft_timer_make(int64_t d)
{
    return timer_new(d, 0, NULL, NULL);
}

weft_timer *weft_ticker_make(int64_t period)
{
    if (period <= 0)
        return NULL;
    return timer_new(period, period, NULL, NULL);
}

weft_timer *weft__timer_func_make(int64_t d, void (*fn)(void *arg), void *arg)
{
    if (!fn)
        return NULL;
    return timer_new(d, 0, fn, arg);
}

weft_chan *weft_timer_chan(weft_timer *t)
{
    return t ? t->ch : NULL;
}

bool weft_timer_stop(weft_timer *t)
{
    if (!t)
        return false;
    weft__lock_acquire(&t->lock);
    bool pending = stop_locked(t);
    weft__lock_release(&t->lock);
    return pending;
}

bool weft_timer_reset(weft_timer *t, int64_t d)
{
    if (!t)
        return false;
    weft__lock_acquire(&t->lock);
    bool ticker = t->period > 0;
    if (ticker && d <= 0)
        weft__fatal("weft_timer_reset: a ticker's period must be positive, "
                    "not %lld", (long long)d);
    bool pending = stop_locked(t);
    start_locked(t, d, ticker ? d : 0);
    weft__lock_release(&t->lock);
    return pending;
}

void weft_timer_release(weft_timer *t)
{
    if (!t)
        return;
    weft__lock_acquire(&t->lock);
    stop_locked(t);
    weft__lock_release(&t->lock);
    timer_unref(t);
}

weft_chan *weft_after(int64_t d)
{
    weft_timer *t = weft_timer_make(d);
    if (!t)
        return NULL;
    weft_chan *ch = weft_chan_retain(t->ch);
    /* Without stopping it: the heap's reference keeps the timer until it
     * fires, and the caller's channel reference outlives it. */
    timer_unref(t);
    return ch;
}
