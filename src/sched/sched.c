/*
 * Scheduler: P slots, run queues, work stealing, idling and wakeups, and
 * the park/ready interface (vocabulary in sched.h).
 *
 * Finding work (find_runnable, run on g0 by each P's thread):
 *  1. Every 61st round, take one G from the global queue first, so a P busy
 *     with local work cannot starve it (GLOBAL_CHECK_ROUNDS).
 *  2. runnext, then the local queue, then a batch from the global queue.
 *     runnext is skipped after RUNNEXT_STREAK picks in a row, because two
 *     coroutines handing off to each other would otherwise starve the
 *     local queue when there is no preemption.
 *  3. Become a spinning P (if fewer than half of the busy Ps already spin)
 *     and steal half of another P's queue, victims in random order, for up
 *     to SPIN_NS. runnext is stolen only after RUNNEXT_STEAL_NS of that.
 *  4. Go idle: see "Spinning" below, then sleep on the P's note, until the
 *     earliest timer's deadline when there is one. While socket operations
 *     wait, one idle P sleeps in the network poller instead.
 *
 * Network poller (io/netpoll.c). A P polls the sockets' epoll set without
 * blocking when it runs out of local work and every GLOBAL_CHECK_ROUNDS
 * rounds, unless another P is blocked in it. The coroutines that readiness
 * woke go to the polling P's local queue, so they run on the CPU that saw
 * the event. One idle P at a time (weft__netpoll_blocked) blocks in
 * epoll_wait until the earliest timer. note_post interrupts it through
 * the poller's eventfd instead of the futex: the P stores in_netpoll and
 * then loads its note, the poster stores the note and then loads
 * in_netpoll, both seq_cst. A plain thread that starts waiting for a
 * socket wakes an idle P when none is blocked in the poller, so some P
 * always watches the set while anything waits on it.
 *
 * Stalled Ps. Every GLOBAL_CHECK_ROUNDS rounds a P also takes half the
 * queue of another P that has not switched since the previous check (see
 * steal_from_stalled), so coroutines queued behind a descheduled thread or
 * a coroutine that never yields do not wait for it.
 *
 * Timers. Ps fire due timers themselves (timer.c): when they run out of
 * local work, every GLOBAL_CHECK_ROUNDS rounds (in post_switch, once the
 * parking G's locks are dropped), and when an idle P's sleep reaches the
 * earliest deadline. A new earliest deadline wakes an idle P
 * (weft__timers_changed), so some sleeping P always sleeps until it. The
 * same seq_cst pairing as below covers it. The inserter stores the heap's
 * head and then loads npidle and nmspinning. A P going idle publishes
 * itself and then loads the head. The loop thread is only a backstop, for
 * when every P runs a coroutine that does not yield.
 *
 * Spinning. The invariant that prevents lost wakeups: whenever work is
 * queued and a P is idle, either some P is spinning (and will look at that
 * work before it stops spinning) or the submitter wakes an idle P. Both
 * sides use sequentially consistent atomics in this order:
 *   submitter: publish the G (runnext exchange, runq tail store or gq_size
 *              update), then load npidle and nmspinning; if npidle > 0 and
 *              nmspinning == 0, wakep().
 *   spinner:   decrement nmspinning, then load every run queue and gq_size;
 *              if any has work, leave the idle list again.
 * A P that registers itself idle increments npidle before the same recheck.
 * wakep() claims the single spinning slot by CAS 0 -> 1 on nmspinning and
 * hands it to the P it wakes, which starts out spinning. A spinner that
 * finds work stops spinning and, if it was the last spinner, calls wakep()
 * so remaining queued work gets a thread too.
 *
 * Locking: sched.lock (a weft__lock) guards the global queue, the idle list,
 * the shared G free list and the chunk list. It is never held while
 * switching or while taking another lock. stack.c's pool lock is a leaf.
 *
 * Callers: weft__park and weft__ready from coroutines or plain threads;
 * the run-queue owner functions only from the P's own thread.
 *
 * Other named explanations below: "The entry gate" (calls from outside the
 * Ps during shutdown) and "Switching" (direct switches between Gs and the
 * post actions that follow them).
 */
#define _GNU_SOURCE
#include "sched.h"

#include <errno.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../debug/overflow.h"
#include "../sanitizer.h"
#include "lock.h"
#include "weft/debug.h"

/* Scheduling rounds between looks at the global queue ahead of local
 * work. 61 is prime, as in Go, so the check does not fall into step with a
 * program's own periodic patterns. */
#define GLOBAL_CHECK_ROUNDS 61u
/* Consecutive runnext picks before the local queue head gets a turn. */
#define RUNNEXT_STREAK 32u
/* How long an idle P keeps looking for work before sleeping. A futex wake
 * on another CPU costs 25-35 us on small virtual machines, so spinning for
 * a comparable time avoids most of them while keeping idle CPU use low. */
#define SPIN_NS 20000
/* How long a spinner leaves other Ps' runnext slots alone. */
#define RUNNEXT_STEAL_NS 10000
/* Local queue length at which a spawning coroutine yields; see the end of
 * weft__sched_spawn. */
#define SPAWN_YIELD_QUEUE (WEFT__RUNQ_SIZE * 3 / 4)
/* G records allocated at once. */
#define GCHUNK_SIZE WEFT__GCHUNK_SIZE
/* Per-P free G records before half move to the shared list. */
#define GFREE_MAX 128u
/* Coroutine ids reserved by a P at once, so spawns on different Ps do not
 * share a cache line. */
#define ID_BATCH 64

weft__sched weft__rt;

/*
 * The entry gate. Calls that reach the scheduler from outside its Ps (a
 * plain thread's weft_go, a plain thread or the poller making a coroutine
 * ready) enter the gate first. weft_shutdown closes it and waits for the
 * calls inside to leave before it stops the Ps and frees them, so no such
 * call can touch freed scheduler state. Calls that find it closed fail
 * (weft_go returns WEFT_EINVAL) or do nothing (a ready for a coroutine that
 * is being abandoned anyway). The word counts the calls inside, with
 * GATE_CLOSED set while the runtime is not accepting them. It starts closed
 * and weft_init opens it once everything is running.
 */
#define GATE_CLOSED ((uint64_t)1 << 63)
static _Atomic uint64_t gate = GATE_CLOSED;

static _Atomic uint32_t generation;

uint32_t weft__generation(void)
{
    return atomic_load_explicit(&generation, memory_order_relaxed);
}

bool weft__gate_enter(void)
{
    if (atomic_fetch_add(&gate, 1) & GATE_CLOSED) {
        atomic_fetch_sub(&gate, 1);
        return false;
    }
    return true;
}

void weft__gate_leave(void)
{
    atomic_fetch_sub(&gate, 1);
}

void weft__gate_open(void)
{
    atomic_fetch_and(&gate, ~GATE_CLOSED);
}

void weft__gate_close(void)
{
    atomic_fetch_or(&gate, GATE_CLOSED);
    /* Calls inside only queue work or take a short lock, so this is brief. */
    while ((atomic_load(&gate) & ~GATE_CLOSED) != 0)
        sched_yield();
}

/* initial-exec: a plain load from the thread pointer, also in the shared
 * library, which is linked at start-up rather than loaded with dlopen. */
static _Thread_local weft__p *tls_p __attribute__((tls_model("initial-exec")));
static _Thread_local weft__thread_parker tls_parker
    __attribute__((tls_model("initial-exec"))) = {
    .base = { .kind = WEFT__PARKER_THREAD } };

#if defined(__GNUC__) && !defined(__clang__)
#define NO_IPA __attribute__((noinline, noipa))
#else
#define NO_IPA __attribute__((noinline))
#endif

NO_IPA weft__p *weft__p_self(void)
{
    /* The barrier keeps the compiler from treating this as a pure function
     * whose result could be reused after a switch. */
    __asm__ volatile("" ::: "memory");
    return tls_p;
}

NO_IPA static void p_self_set(weft__p *p)
{
    __asm__ volatile("" ::: "memory");
    tls_p = p;
}

NO_IPA static weft__thread_parker *thread_parker_self(void)
{
    __asm__ volatile("" ::: "memory");
    return &tls_parker;
}

weft__parker *weft__parker_self(void)
{
    weft__p *p = weft__p_self();
    if (p && p->curg)
        return &p->curg->parker;
    return &thread_parker_self()->base;
}

static const char *const wait_reason_strings[WEFT__WAIT_COUNT] = {
    [WEFT__WAIT_NONE] = "",
    [WEFT__WAIT_SLEEP] = "sleep",
    [WEFT__WAIT_WAITGROUP] = "sync.WaitGroup.Wait",
    [WEFT__WAIT_CHAN_SEND] = "chan send",
    [WEFT__WAIT_CHAN_RECV] = "chan receive",
    [WEFT__WAIT_CHAN_SEND_NIL] = "chan send (nil chan)",
    [WEFT__WAIT_CHAN_RECV_NIL] = "chan receive (nil chan)",
    [WEFT__WAIT_SELECT] = "select",
    [WEFT__WAIT_SELECT_NO_CASES] = "select (no cases)",
    [WEFT__WAIT_MUTEX] = "sync.Mutex.Lock",
    [WEFT__WAIT_RWMUTEX_RLOCK] = "sync.RWMutex.RLock",
    [WEFT__WAIT_RWMUTEX_LOCK] = "sync.RWMutex.Lock",
    [WEFT__WAIT_COND] = "sync.Cond.Wait",
    [WEFT__WAIT_SEMACQUIRE] = "semacquire",
    [WEFT__WAIT_ONCE] = "sync.Once",
    [WEFT__WAIT_IO] = "IO wait",
    [WEFT__WAIT_BLOCKING] = "blocking call",
    [WEFT__WAIT_ERRGROUP] = "errgroup wait",
};

const char *weft__wait_reason_string(int reason)
{
    if (reason < 0 || reason >= WEFT__WAIT_COUNT || !wait_reason_strings[reason])
        return "unknown";
    return wait_reason_strings[reason];
}

void weft__fatal(const char *fmt, ...)
{
    va_list ap;
    fputs("weft: fatal: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    weft__p *p = tls_p;
    weft__g *g = p ? p->curg : NULL;
    if (g) {
        fprintf(stderr, " (in coroutine %llu", (unsigned long long)g->id);
        if (g->name)
            fprintf(stderr, " \"%s\"", g->name);
        if (g->file && g->line == 0)
            fprintf(stderr, ", spawned by %s", g->file);
        else if (g->file)
            fprintf(stderr, ", spawned at %s:%d", g->file, g->line);
        fputc(')', stderr);
    }
    fputc('\n', stderr);
    fflush(stderr);
    abort();
}

static _Thread_local bool tls_internal __attribute__((tls_model("initial-exec")));

void weft__thread_internal(bool on)
{
    tls_internal = on;
}

void weft__note_outside_use(void)
{
    if (!tls_internal && !atomic_load_explicit(&weft__rt.outside_used, memory_order_relaxed))
        atomic_store(&weft__rt.outside_used, true);
}

int weft__wait_reason_set(int reason)
{
    weft__p *p = weft__p_self();
    if (!p || !p->curg)
        return WEFT__WAIT_NONE;
    int outer = p->curg->reason_override;
    p->curg->reason_override = (uint16_t)reason;
    return outer;
}

int64_t weft__coarse_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}


void weft__stack_guard_failed(void *guard)
{
    weft__fatal("cannot install the guard page at %p below a coroutine stack: "
                "out of memory", guard);
}

static inline int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static inline uint32_t p_rand(weft__p *p)
{
    uint64_t x = p->rng;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    p->rng = x;
    return (uint32_t)(x >> 32);
}

/* ---- Global queue (sched.lock held) ---------------------------------- */

static void gq_put_locked(weft__g *head, weft__g *tail, int64_t n)
{
    tail->next = NULL;
    if (weft__rt.gq_tail)
        weft__rt.gq_tail->next = head;
    else
        weft__rt.gq_head = head;
    weft__rt.gq_tail = tail;
    /* Publishes the work for the submitter/spinner protocol. */
    atomic_fetch_add(&weft__rt.gq_size, n);
}

/* Put one G on the global queue. */
static void gq_put_one(weft__g *g)
{
    weft__lock_acquire(&weft__rt.lock);
    gq_put_locked(g, g, 1);
    weft__lock_release(&weft__rt.lock);
    atomic_fetch_add_explicit(&weft__rt.global_pushes, 1, memory_order_relaxed);
}

static weft__g *gq_pop_locked(void)
{
    weft__g *g = weft__rt.gq_head;
    if (!g)
        return NULL;
    weft__rt.gq_head = g->next;
    if (!weft__rt.gq_head)
        weft__rt.gq_tail = NULL;
    g->next = NULL;
    atomic_fetch_sub(&weft__rt.gq_size, 1);
    return g;
}

/* ---- Local run queue ---------------------------------------------------- */

static bool runq_put_slow(weft__p *p, weft__g *g, uint32_t head, uint32_t tail)
    __attribute__((noinline, cold));

/* Put g on p's queue; with next, into runnext (the old occupant moves to
 * the tail). Owner only. */
static void runq_put(weft__p *p, weft__g *g, bool next)
{
    /* The store of tail below is the submitter half of "Spinning" when it
     * is the only publication of new work. A put into runnext publishes
     * with the exchange instead (any_work checks runnext too), so the G it
     * displaces only needs release ordering. */
    bool seq_cst = weft__rt.nprocs > 1;
    if (next) {
        weft__g *old = atomic_exchange(&p->runnext, g);
        if (!old)
            return;
        g = old;
        seq_cst = false;
    }
    for (;;) {
        /* Pairs with the CAS on runq_head by consumers: a slot is reused
         * only after its consumer has moved head past it. */
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        if (t - h < WEFT__RUNQ_SIZE) {
            atomic_store_explicit(&p->runq[t % WEFT__RUNQ_SIZE], g,
                                  memory_order_relaxed);
            /* Release pairs with the thieves' acquire load of tail. When
             * this store publishes new work to other Ps it must also be
             * sequentially consistent, or an idle P's recheck could miss
             * it, and without preemption the work could then wait for as
             * long as the owner's current coroutine computes. */
            if (seq_cst)
                atomic_store(&p->runq_tail, t + 1);
            else
                atomic_store_explicit(&p->runq_tail, t + 1, memory_order_release);
            return;
        }
        if (runq_put_slow(p, g, h, t))
            return;
    }
}

/* Move half of a full local queue, plus g, to the global queue. */
static bool runq_put_slow(weft__p *p, weft__g *g, uint32_t h, uint32_t t)
{
    weft__g *batch[WEFT__RUNQ_SIZE / 2 + 1];
    uint32_t n = (t - h) / 2;
    for (uint32_t i = 0; i < n; i++)
        batch[i] = atomic_load_explicit(&p->runq[(h + i) % WEFT__RUNQ_SIZE],
                                        memory_order_relaxed);
    if (!atomic_compare_exchange_strong_explicit(&p->runq_head, &h, h + n,
                                                 memory_order_release,
                                                 memory_order_relaxed))
        return false;
    batch[n] = g;
    for (uint32_t i = 0; i < n; i++)
        batch[i]->next = batch[i + 1];
    weft__lock_acquire(&weft__rt.lock);
    gq_put_locked(batch[0], batch[n], n + 1);
    weft__lock_release(&weft__rt.lock);
    atomic_fetch_add_explicit(&weft__rt.global_pushes, 1, memory_order_relaxed);
    return true;
}

/* Pop from p's local queue head. Owner only. */
static weft__g *runq_get(weft__p *p)
{
    if (weft__rt.nprocs == 1) {
        /* No other P exists to steal, so the owner is the only consumer
         * and needs no compare-and-swap. */
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_relaxed);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        if (t == h)
            return NULL;
        weft__g *g = atomic_load_explicit(&p->runq[h % WEFT__RUNQ_SIZE],
                                          memory_order_relaxed);
        atomic_store_explicit(&p->runq_head, h + 1, memory_order_relaxed);
        return g;
    }
    for (;;) {
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        if (t == h)
            return NULL;
        weft__g *g = atomic_load_explicit(&p->runq[h % WEFT__RUNQ_SIZE],
                                          memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&p->runq_head, &h, h + 1,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return g;
    }
}

static bool runq_empty(weft__p *p)
{
    uint32_t h = atomic_load(&p->runq_head);
    uint32_t t = atomic_load(&p->runq_tail);
    return h == t && atomic_load(&p->runnext) == NULL;
}

/* Copy up to half of victim's queue into batch. With take_next, also
 * consider the victim's runnext when its queue is empty. Any thread. */
static uint32_t runq_grab(weft__p *victim, weft__g **batch, bool take_next)
{
    for (;;) {
        uint32_t h = atomic_load_explicit(&victim->runq_head, memory_order_acquire);
        uint32_t t = atomic_load_explicit(&victim->runq_tail, memory_order_acquire);
        uint32_t n = t - h;
        n = n - n / 2;
        if (n == 0) {
            if (!take_next)
                return 0;
            weft__g *next = atomic_load(&victim->runnext);
            if (!next)
                return 0;
            /* The victim is probably about to run it; give it a moment so
             * a handoff between two coroutines stays on one P. */
            for (int i = 0; i < 200; i++)
                weft__cpu_relax();
            if (!atomic_compare_exchange_strong(&victim->runnext, &next, NULL))
                continue;
            batch[0] = next;
            return 1;
        }
        if (n > WEFT__RUNQ_SIZE / 2)
            continue;  /* head and tail read at different moments */
        for (uint32_t i = 0; i < n; i++)
            batch[i] = atomic_load_explicit(&victim->runq[(h + i) % WEFT__RUNQ_SIZE],
                                            memory_order_relaxed);
        if (atomic_compare_exchange_weak_explicit(&victim->runq_head, &h, h + n,
                                                  memory_order_release,
                                                  memory_order_relaxed))
            return n;
    }
}

/* Steal half of victim's work into p; return one G to run. Owner of p. */
static weft__g *runq_steal(weft__p *p, weft__p *victim, bool take_next)
{
    weft__g *batch[WEFT__RUNQ_SIZE / 2];
    uint32_t n = runq_grab(victim, batch, take_next);
    if (n == 0)
        return NULL;
    atomic_fetch_add_explicit(&p->st_steals, 1, memory_order_relaxed);
    /* p's own queue is usually empty here, because p steals when it has
     * run out of work. Stealing from a stalled P is the exception: then
     * runq_put moves what does not fit to the global queue. */
    for (uint32_t i = 1; i < n; i++)
        runq_put(p, batch[i], false);
    return batch[0];
}

/* ---- Idle Ps and wakeups ------------------------------------------------ */

static void note_post(weft__p *p)
{
    /* Both seq_cst: a P about to block in the poller stores in_netpoll
     * and then loads note, so one of the two sides sees the other. */
    atomic_store(&p->note, 1);
    if (atomic_load(&p->in_netpoll))
        weft__netpoll_break();
    else
        weft__futex_wake(&p->note, 1);
}

static void note_sleep(weft__p *p)
{
    while (atomic_load_explicit(&p->note, memory_order_acquire) == 0)
        weft__futex_wait(&p->note, 0);
    atomic_store_explicit(&p->note, 0, memory_order_relaxed);
}

/* note_sleep until deadline. Returns false when the deadline passed with
 * no note posted. */
static bool note_sleep_until(weft__p *p, int64_t deadline)
{
    while (atomic_load_explicit(&p->note, memory_order_acquire) == 0) {
        if (!weft__futex_wait_until(&p->note, 0, deadline) &&
            atomic_load_explicit(&p->note, memory_order_acquire) == 0)
            return false;
    }
    atomic_store_explicit(&p->note, 0, memory_order_relaxed);
    return true;
}

/* Take p off the idle list. Returns false when a waker popped it first;
 * that waker is posting p's note and has made p spinning. */
static bool idle_remove(weft__p *p)
{
    bool removed = false;
    weft__lock_acquire(&weft__rt.lock);
    if (p->idle) {
        for (weft__p **pp = &weft__rt.idle; *pp; pp = &(*pp)->idle_next) {
            if (*pp == p) {
                *pp = p->idle_next;
                break;
            }
        }
        p->idle = false;
        atomic_fetch_sub(&weft__rt.npidle, 1);
        removed = true;
    }
    weft__lock_release(&weft__rt.lock);
    return removed;
}

/* Wake one idle P to spin, unless one already spins. Any thread. */
static void wakep(void)
{
    int32_t zero = 0;
    if (atomic_load(&weft__rt.nmspinning) != 0 ||
        !atomic_compare_exchange_strong(&weft__rt.nmspinning, &zero, 1))
        return;
    weft__lock_acquire(&weft__rt.lock);
    weft__p *p = weft__rt.idle;
    if (p) {
        weft__rt.idle = p->idle_next;
        p->idle = false;
        atomic_fetch_sub(&weft__rt.npidle, 1);
    }
    weft__lock_release(&weft__rt.lock);
    if (!p) {
        atomic_fetch_sub(&weft__rt.nmspinning, 1);
        return;
    }
    /* Handed over with the spinning slot we claimed; the woken P reads it
     * after note_sleep's acquire. */
    p->spinning = true;
    atomic_fetch_add_explicit(&weft__rt.idle_wakeups, 1, memory_order_relaxed);
    note_post(p);
}

/* The submitter half of the spinning protocol. */
static inline void wake_if_needed(void)
{
    if (atomic_load(&weft__rt.npidle) > 0 && atomic_load(&weft__rt.nmspinning) == 0)
        wakep();
}

static void stop_spinning(weft__p *p)
{
    p->spinning = false;
    if (atomic_fetch_sub(&weft__rt.nmspinning, 1) == 1)
        wake_if_needed();
}

static bool any_work(weft__p *self)
{
    if (atomic_load(&weft__rt.gq_size) > 0)
        return true;
    for (int i = 0; i < weft__rt.nprocs; i++) {
        weft__p *v = weft__rt.ps[i];
        if (v != self && !runq_empty(v))
            return true;
    }
    return false;
}

static weft__g *gq_take_slow(weft__p *p, bool batch);

/* Take a batch from the global queue: one to return, more to the local
 * queue (at most half of it, so other Ps get their share). */
static inline weft__g *gq_take(weft__p *p, bool batch)
{
    if (atomic_load_explicit(&weft__rt.gq_size, memory_order_relaxed) == 0)
        return NULL;
    return gq_take_slow(p, batch);
}

__attribute__((noinline)) static weft__g *gq_take_slow(weft__p *p, bool batch)
{
    weft__lock_acquire(&weft__rt.lock);
    int64_t size = atomic_load(&weft__rt.gq_size);
    int64_t n = batch ? size / weft__rt.nprocs + 1 : 1;
    if (n > size)
        n = size;
    if (n > (int64_t)WEFT__RUNQ_SIZE / 2)
        n = WEFT__RUNQ_SIZE / 2;
    weft__g *g = gq_pop_locked();
    weft__g *rest = NULL, *rest_tail = NULL;
    for (int64_t i = 1; i < n; i++) {
        weft__g *x = gq_pop_locked();
        if (!x)
            break;
        if (rest_tail)
            rest_tail->next = x;
        else
            rest = x;
        rest_tail = x;
    }
    weft__lock_release(&weft__rt.lock);
    while (rest) {
        weft__g *x = rest;
        rest = x->next;
        x->next = NULL;
        runq_put(p, x, false);
    }
    return g;
}

/* Fire the timers that are due, if any. Returns true when it fired some.
 * Owner of the calling P; the timers it readies go to the local queue. */
static bool run_due_timers(void)
{
    int64_t head = weft__timers_next();
    if (head == 0)
        return false;
    int64_t now = now_ns();
    if (head > now)
        return false;
    weft__timers_run(now);
    return true;
}

/* Every coroutine is parked on something only another coroutine could
 * end: print the dump and abort, as Go does. p is on the idle list and
 * about to sleep with no timer pending. The conditions are checked twice,
 * a few milliseconds apart with the counters unchanged in between,
 * because a wakeup from the loop thread can be between taking a waiter
 * off a list and queueing it. Then the process's threads are counted:
 * one that is not the runtime's own may still wake a coroutine.
 * NOTE: threads that a sanitizer runtime starts (ThreadSanitizer has one)
 * count as foreign, so the detector is off under TSan. */
static void check_deadlock(weft__p *p)
{
    if (!atomic_load_explicit(&weft__rt.detect_deadlock, memory_order_relaxed))
        return;
    int64_t before = 0;
    for (int round = 0; round < 2; round++) {
        if (atomic_load(&weft__rt.outside_used) ||
            atomic_load(&weft__rt.stopping) ||
            atomic_load(&weft__rt.npidle) != weft__rt.nprocs ||
            atomic_load(&weft__rt.gq_size) != 0 || atomic_load(&p->note) != 0 ||
            weft__timers_next() != 0 || weft__io_busy() || weft__sched_live() <= 0)
            return;
        for (int i = 0; i < weft__rt.nprocs; i++)
            if (!runq_empty(weft__rt.ps[i]))
                return;
        int64_t count = atomic_load(&weft__rt.global_pushes) +
                        atomic_load(&weft__rt.idle_wakeups);
        for (int i = 0; i < weft__rt.nprocs; i++)
            count += atomic_load(&weft__rt.ps[i]->st_switches);
        if (round == 1 && count != before)
            return;
        before = count;
        if (round == 0 && note_sleep_until(p, now_ns() + 5000000)) {
            /* Woken meanwhile: give the note back for the caller's sleep. */
            atomic_store(&p->note, 1);
            return;
        }
    }
    /* A plain thread the program started may still send: the runtime
     * cannot see what it will do. Once one is seen, detection stays off. */
    if (weft__foreign_threads()) {
        atomic_store(&weft__rt.outside_used, true);
        return;
    }
    fputs("weft: fatal: all coroutines are asleep - deadlock!\n\n", stderr);
    weft_dump(stderr);
    fflush(stderr);
    abort();
}

/* Poll the sockets without blocking, when operations wait. Unless always
 * is set, not while a P blocks in the poller, because that one gets the
 * events. The woken go to p's local queue. Returns true when some were
 * woken. Owner of p. */
static bool poll_network(bool always)
{
    if (atomic_load_explicit(&weft__netpoll_nwait, memory_order_relaxed) == 0 ||
        (!always && atomic_load_explicit(&weft__netpoll_blocked, memory_order_relaxed) != 0) ||
        atomic_load_explicit(&weft__netpoll_by_loop, memory_order_relaxed))
        return false;
    weft__parker *woken[WEFT__NETPOLL_MAX];
    int n = weft__netpoll(0, woken);
    weft__ready_many(woken, (size_t)n);
    return n > 0;
}

/* Block in the poller instead of the futex, until readiness, the timer
 * deadline head (0: none) or a note. p is on the idle list. Returns false
 * when p was not the one P allowed to block there, and true once it has
 * come back to the top of find_runnable's loop's state: off the idle
 * list, or with its note taken. */
static bool idle_poll_network(weft__p *p, int64_t head)
{
    uint32_t zero = 0;
    if (atomic_load(&weft__netpoll_nwait) == 0 ||
        atomic_load_explicit(&weft__netpoll_by_loop, memory_order_relaxed) ||
        !atomic_compare_exchange_strong(&weft__netpoll_blocked, &zero, 1))
        return false;
    weft__parker *woken[WEFT__NETPOLL_MAX];
    int n = 0;
    atomic_store(&p->in_netpoll, 1);
    if (atomic_load(&p->note) == 0)
        n = weft__netpoll(head ? head : -1, woken);
    atomic_store(&p->in_netpoll, 0);
    atomic_store(&weft__netpoll_blocked, 0);

    /* Leave the idle list before readying, so the wakeups that
     * weft__ready_many may send go to other Ps, not to p itself. */
    if (!idle_remove(p))
        note_sleep(p);
    weft__ready_many(woken, (size_t)n);
    return true;
}

/* Take the next G from p's own queues or the global queue, without
 * stealing or sleeping. NULL when there is none or the runtime stops.
 * Owner only; runs on g0 or on the stack of a G that is switching away. */
static weft__g *pick_local(weft__p *p)
{
    weft__g *g;

    if (atomic_load_explicit(&weft__rt.stopping, memory_order_acquire))
        return NULL;
    if (--p->global_countdown == 0) {
        p->global_countdown = GLOBAL_CHECK_ROUNDS;
        /* Not here: a parking G still holds the locks its unlock step
         * releases. post_switch runs the timers once those are dropped. */
        p->timers_check = true;
        if ((g = gq_take(p, false)))
            return g;
    }

    g = atomic_load_explicit(&p->runnext, memory_order_relaxed);
    if (g && p->runnext_streak < RUNNEXT_STREAK &&
        atomic_compare_exchange_strong(&p->runnext, &g, NULL)) {
        p->runnext_streak++;
        return g;
    }
    p->runnext_streak = 0;
    if ((g = runq_get(p)))
        return g;
    g = atomic_load_explicit(&p->runnext, memory_order_relaxed);
    if (g && atomic_compare_exchange_strong(&p->runnext, &g, NULL))
        return g;
    return gq_take(p, true);
}

/* Find the next G to run; sleeps when there is none. NULL when stopping.
 * Runs on g0. */
static weft__g *find_runnable(weft__p *p)
{
    weft__g *g;

top:
    if (atomic_load_explicit(&weft__rt.stopping, memory_order_acquire))
        return NULL;
    if ((g = pick_local(p)))
        return g;
    /* Out of local work: serve timers that are due here, which saves the
     * loop thread's wakeup and the hand-off through the global queue. */
    if (run_due_timers() && (g = pick_local(p)))
        return g;
    if (poll_network(false) && (g = pick_local(p)))
        return g;

    /* Spin: limit spinners to half the busy Ps, as stealing from a P that
     * has nothing is wasted CPU. */
    int32_t busy = weft__rt.nprocs - atomic_load(&weft__rt.npidle);
    if (weft__rt.nprocs > 1 &&
        (p->spinning || 2 * atomic_load(&weft__rt.nmspinning) < busy)) {
        if (!p->spinning) {
            p->spinning = true;
            atomic_fetch_add(&weft__rt.nmspinning, 1);
        }
        int64_t start = now_ns();
        int64_t now = start;
        do {
            /* A G in runnext was usually just readied by the victim's
             * running G, which will switch to it within a microsecond or
             * so. Taking it sooner than RUNNEXT_STEAL_NS would pull a
             * ping-pong pair apart across CPUs. */
            bool last = now - start >= RUNNEXT_STEAL_NS;
            uint32_t off = p_rand(p);
            for (int i = 0; i < weft__rt.nprocs; i++) {
                weft__p *v = weft__rt.ps[(off + (uint32_t)i) % (uint32_t)weft__rt.nprocs];
                if (v == p)
                    continue;
                if ((g = runq_steal(p, v, last)))
                    return g;
            }
            if ((g = gq_take(p, true)))
                return g;
            if (atomic_load_explicit(&weft__rt.stopping, memory_order_acquire))
                break;
            for (int i = 0; i < 50; i++)
                weft__cpu_relax();
            now = now_ns();
        } while (now - start < SPIN_NS);
    }

    /* Go idle. Once p is on the idle list a waker may pop it and write
     * p->spinning, so the spinning state is taken out before that. */
    bool was_spinning = p->spinning;
    p->spinning = false;
    weft__lock_acquire(&weft__rt.lock);
    if (atomic_load(&weft__rt.gq_size) > 0) {
        weft__lock_release(&weft__rt.lock);
        p->spinning = was_spinning;
        goto top;
    }
    p->idle = true;
    p->idle_next = weft__rt.idle;
    weft__rt.idle = p;
    atomic_fetch_add(&weft__rt.npidle, 1);
    weft__lock_release(&weft__rt.lock);

    if (was_spinning)
        atomic_fetch_sub(&weft__rt.nmspinning, 1);
    /* The spinner half of the protocol: recheck after leaving the count. */
    if (any_work(p) || atomic_load(&weft__rt.stopping)) {
        if (idle_remove(p)) {
            p->spinning = true;
            atomic_fetch_add(&weft__rt.nmspinning, 1);
            goto top;
        }
        /* Someone popped us and is posting our note; take it below. */
        note_sleep(p);
        goto top;
    }
    /* Loaded after npidle was raised: see "Timers". */
    int64_t head = weft__timers_next();
    if (idle_poll_network(p, head))
        goto top;
    if (head == 0) {
        check_deadlock(p);
        note_sleep(p);
        p->clock = weft__coarse_now();
    } else if (!note_sleep_until(p, head)) {
        p->clock = weft__coarse_now();
        /* The earliest deadline came: fire it from top, unless a waker
         * popped p meanwhile, whose note then arrives shortly. */
        if (!idle_remove(p))
            note_sleep(p);
    }
    goto top;
}

void weft__netpoll_wanted(void)
{
    if (atomic_load(&weft__netpoll_blocked) == 0)
        wake_if_needed();
}

void weft__timers_changed(void)
{
    if (atomic_load(&weft__rt.npidle) > 0 && atomic_load(&weft__rt.nmspinning) == 0)
        wakep();
}

/* ---- G records ---------------------------------------------------------- */

static weft__g *g_alloc(weft__p *p)
{
    weft__g *g;
    if (p && p->gfree) {
        g = p->gfree;
        p->gfree = g->next;
        p->ngfree--;
        return g;
    }
    weft__lock_acquire(&weft__rt.lock);
    if (!weft__rt.gfree) {
        weft__gchunk *c = NULL;
        if (posix_memalign((void **)&c, _Alignof(weft__g), sizeof *c) != 0) {
            weft__lock_release(&weft__rt.lock);
            return NULL;
        }
        memset(c, 0, sizeof *c);
        c->next = weft__rt.chunks;
        weft__rt.chunks = c;
        for (int i = GCHUNK_SIZE; i-- > 0;) {
            c->gs[i].next = weft__rt.gfree;
            weft__rt.gfree = &c->gs[i];
        }
        weft__rt.ngfree += GCHUNK_SIZE;
    }
    g = weft__rt.gfree;
    weft__rt.gfree = g->next;
    weft__rt.ngfree--;
    /* Refill p's list while we hold the lock. */
    while (p && p->ngfree < GFREE_MAX / 2 && weft__rt.gfree) {
        weft__g *x = weft__rt.gfree;
        weft__rt.gfree = x->next;
        weft__rt.ngfree--;
        x->next = p->gfree;
        p->gfree = x;
        p->ngfree++;
    }
    weft__lock_release(&weft__rt.lock);
    return g;
}

static void g_free(weft__p *p, weft__g *g)
{
    free(g->name);
    g->name = NULL;
    atomic_store_explicit(&g->state, WEFT__G_FREE, memory_order_relaxed);
    if (p) {
        g->next = p->gfree;
        p->gfree = g;
        if (++p->ngfree <= GFREE_MAX)
            return;
        /* Give half back to the shared list. */
        weft__g *head = p->gfree, *tail = head;
        for (uint32_t i = 1; i < GFREE_MAX / 2; i++)
            tail = tail->next;
        p->gfree = tail->next;
        p->ngfree -= GFREE_MAX / 2;
        weft__lock_acquire(&weft__rt.lock);
        tail->next = weft__rt.gfree;
        weft__rt.gfree = head;
        weft__rt.ngfree += GFREE_MAX / 2;
        weft__lock_release(&weft__rt.lock);
        return;
    }
    weft__lock_acquire(&weft__rt.lock);
    g->next = weft__rt.gfree;
    weft__rt.gfree = g;
    weft__rt.ngfree++;
    weft__lock_release(&weft__rt.lock);
}

static uint64_t id_next(weft__p *p)
{
    if (p) {
        if (p->id_next == p->id_end) {
            p->id_next = atomic_fetch_add(&weft__rt.id_gen, ID_BATCH);
            p->id_end = p->id_next + ID_BATCH;
        }
        return p->id_next++;
    }
    return atomic_fetch_add(&weft__rt.id_gen, 1);
}

/* ---- Switching ---------------------------------------------------------- */

/*
 * A G that stops running switches straight to the next runnable G of its P
 * when there is one (one context switch), and to g0 otherwise. g0 then
 * steals or sleeps. Either way the G leaves p->post and p->post_g behind.
 * The next runner on p calls post_switch before anything else: the next G
 * when it resumes or starts, or g0 when its switch returns. So the post
 * action (unlocking after a park, queueing a yielded G, freeing an exited
 * G's stack) always runs once the old G's context is saved and its stack
 * is no longer in use.
 */

static void g_entry(void *arg);

/* Give g a stack and a context that starts at g_entry. */
__attribute__((noinline)) static void g_start(weft__p *p, weft__g *g)
{
    g->stack = weft__stack_prefer_warm(&p->stacks, g->stack);
    weft__ctx_make(&g->ctx, g->stack->lo, g->stack->size, g_entry, g, &g->fpenv);
#ifdef WEFT_TSAN
    g->tsan_fiber = __tsan_create_fiber(0);
#endif
    g->started = true;
}

/* Make g the running G of p, starting its context on first use. */
static inline void prepare_run(weft__p *p, weft__g *g)
{
    if (__builtin_expect(!g->started, 0))
        g_start(p, g);
    p->curg = g;
    atomic_store_explicit(&p->running, g, memory_order_relaxed);
    atomic_store_explicit(&g->state, WEFT__G_RUNNING, memory_order_relaxed);
    atomic_store_explicit(&p->st_switches,
                          atomic_load_explicit(&p->st_switches, memory_order_relaxed) + 1,
                          memory_order_relaxed);
}

/* Take half the queue of a P that has not switched since p's previous
 * check, GLOBAL_CHECK_ROUNDS rounds ago: its thread is descheduled by the
 * kernel or runs one coroutine that does not yield, and without
 * preemption its queued coroutines would wait for it. Idle Ps steal only
 * when they run out of work, which a busy p never does. Owner of p. */
static void steal_from_stalled(weft__p *p)
{
    for (int i = 0; i < weft__rt.nprocs; i++) {
        weft__p *v = weft__rt.ps[i];
        if (v == p)
            continue;
        int64_t switches = atomic_load_explicit(&v->st_switches, memory_order_relaxed);
        bool stalled = switches == p->seen_switches[i];
        p->seen_switches[i] = switches;
        if (!stalled || runq_empty(v))
            continue;
        weft__g *g = runq_steal(p, v, false);
        if (g)
            runq_put(p, g, false);
    }
}

/* Carry out the post action the previous G left on p. */
static void post_switch(weft__p *p)
{
    int post = p->post;
    weft__g *g = p->post_g;
    p->post = WEFT__POST_NONE;
    p->post_g = NULL;

    switch (post) {
    case WEFT__POST_NONE:
        break;
    case WEFT__POST_PARK:
        atomic_store_explicit(&g->state, WEFT__G_WAITING, memory_order_relaxed);
        atomic_store_explicit(&p->st_parks,
                              atomic_load_explicit(&p->st_parks, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        if (p->post_fn && !p->post_fn(p->post_arg)) {
            /* The park was called off: run g next. */
            atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
            runq_put(p, g, true);
        }
        break;
    case WEFT__POST_YIELD:
    case WEFT__POST_BACKOFF:
        atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
        runq_put(p, g, false);
        /* The "Spinning" invariant: g is new work for an idle P, which may
         * have checked this queue while switch_away had just emptied it. A
         * spawner backing off needs no wake: each of its spawns already
         * woke an idle P if one was needed. */
        if (post == WEFT__POST_YIELD)
            wake_if_needed();
        break;
    case WEFT__POST_EXIT:
#ifdef WEFT_TSAN
        __tsan_destroy_fiber(g->tsan_fiber);
        g->tsan_fiber = NULL;
#endif
        weft__stack_put(&p->stacks, g->stack);
        g->stack = NULL;
        g->started = false;
        g_free(p, g);
        /* Release: a caller that sees the count drop (weft_leakcheck,
         * weft_num_coroutines) also sees what the coroutine wrote. */
        atomic_store_explicit(&p->st_exited,
                              atomic_load_explicit(&p->st_exited, memory_order_relaxed) + 1,
                              memory_order_release);
        break;
    default:
        weft__fatal("coroutine switched away without a reason");
    }
    if (p->timers_check) {
        p->timers_check = false;
        p->clock = weft__coarse_now();
        run_due_timers();
        /* Even while another P blocks in the poller: its thread may wait
         * for a CPU for milliseconds after the kernel woke it. */
        poll_network(true);
        steal_from_stalled(p);
    }
}

/* Run g from g0 until control comes back to g0, then finish the post
 * action of whichever G switched to g0. */
static void execute(weft__p *p, weft__g *g)
{
    prepare_run(p, g);
    *p->errno_ptr = g->saved_errno;
#ifdef WEFT_ASAN
    __sanitizer_start_switch_fiber(&p->g0_fake_stack, g->stack->lo, g->stack->size);
#endif
#ifdef WEFT_TSAN
    __tsan_switch_to_fiber(g->tsan_fiber, 0);
#endif
    weft__ctx_switch(&p->g0_ctx, &g->ctx);
#ifdef WEFT_ASAN
    __sanitizer_finish_switch_fiber(p->g0_fake_stack, NULL, NULL);
#endif
    p->curg = NULL;
    atomic_store_explicit(&p->running, NULL, memory_order_relaxed);
    post_switch(p);
}

/* Stop running g, which is p's current G, leaving post for the next
 * runner. Returns when g is resumed, possibly on another thread; p is stale
 * then. A yield with nothing else to run returns at once. */
static void switch_away(weft__p *p, weft__g *g, int post)
{
    weft__g *next = pick_local(p);
    if (!next && (post == WEFT__POST_YIELD || post == WEFT__POST_BACKOFF) &&
        !atomic_load_explicit(&weft__rt.stopping, memory_order_acquire))
        return;

    p->post = post;
    p->post_g = g;
    g->saved_errno = *p->errno_ptr;

    weft__ctx *to;
    if (next) {
        prepare_run(p, next);
        to = &next->ctx;
    } else {
        p->curg = NULL;
        atomic_store_explicit(&p->running, NULL, memory_order_relaxed);
        to = &p->g0_ctx;
    }
#ifdef WEFT_ASAN
    __sanitizer_start_switch_fiber(post == WEFT__POST_EXIT ? NULL : &g->asan_fake_stack,
                                   next ? (void *)next->stack->lo : p->g0_stack_lo,
                                   next ? next->stack->size : p->g0_stack_size);
#endif
#ifdef WEFT_TSAN
    __tsan_switch_to_fiber(next ? next->tsan_fiber : p->g0_fiber, 0);
#endif
    weft__ctx_switch(&g->ctx, to);

    /* Resumed: possibly another P on another thread. */
#ifdef WEFT_ASAN
    __sanitizer_finish_switch_fiber(g->asan_fake_stack, NULL, NULL);
#endif
    p = weft__p_self();
    post_switch(p);
    *p->errno_ptr = g->saved_errno;
}

static void g_entry(void *arg)
{
    weft__g *g = arg;
#ifdef WEFT_ASAN
    __sanitizer_finish_switch_fiber(NULL, NULL, NULL);
#endif
    weft__p *p = weft__p_self();
    post_switch(p);
    *p->errno_ptr = 0;
    g->fn(g->arg);
    switch_away(weft__p_self(), g, WEFT__POST_EXIT);
    weft__fatal("exited coroutine %llu was resumed", (unsigned long long)g->id);
}

/* ---- Park and ready ----------------------------------------------------- */

void weft__park(weft__unlock_fn unlock, void *arg, int reason)
{
    weft__p *p = weft__p_self();
    if (p && p->curg) {
        weft__g *g = p->curg;
        if (g->reason_override)
            reason = g->reason_override;
        atomic_store_explicit(&g->wait_reason, (uint16_t)reason, memory_order_relaxed);
        atomic_store_explicit(&g->wait_since, p->clock, memory_order_relaxed);
        p->post_fn = unlock;
        p->post_arg = arg;
        switch_away(p, g, WEFT__POST_PARK);
        atomic_store_explicit(&g->wait_reason, WEFT__WAIT_NONE, memory_order_relaxed);
        return;
    }
    weft__note_outside_use();

    weft__thread_parker *tp = thread_parker_self();
    atomic_store_explicit(&tp->woken, 0, memory_order_relaxed);
    if (unlock && !unlock(arg))
        return;
    /* Pairs with the release store in weft__ready. */
    while (atomic_load_explicit(&tp->woken, memory_order_acquire) == 0)
        weft__futex_wait(&tp->woken, 0);
}

void weft__ready(weft__parker *parker)
{
    if (parker->kind == WEFT__PARKER_THREAD) {
        weft__thread_parker *tp = (weft__thread_parker *)parker;
        atomic_store_explicit(&tp->woken, 1, memory_order_release);
        /* The thread may have returned already. Its futex word lives as long
         * as the thread does, and a stray wake of a later park is harmless
         * because that park rechecks woken. */
        weft__futex_wake(&tp->woken, 1);
        return;
    }

    weft__g *g = (weft__g *)parker;
    weft__p *p = weft__p_self();
    if (p) {
        /* On a P (its G or g0): the Ps outlive every such call. */
        atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
        if (p->curg)
            runq_put(p, g, true);
        else
            gq_put_one(g);
        wake_if_needed();
        return;
    }
    /* From outside the Ps. A closed gate means the runtime is stopping and
     * g is abandoned with every other coroutine. */
    weft__note_outside_use();
    if (!weft__gate_enter())
        return;
    atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
    gq_put_one(g);
    wake_if_needed();
    weft__gate_leave();
}

bool weft__park_until(weft__unlock_fn unlock, void *arg, int reason,
                      int64_t deadline, _Atomic uint32_t *claim)
{
    weft__p *p = weft__p_self();
    if (p && p->curg)
        return weft__timer_park_until(unlock, arg, reason, deadline, claim);

    weft__note_outside_use();
    weft__thread_parker *tp = thread_parker_self();
    atomic_store_explicit(&tp->woken, 0, memory_order_relaxed);
    if (unlock && !unlock(arg))
        return false;
    while (atomic_load_explicit(&tp->woken, memory_order_acquire) == 0) {
        if (weft__futex_wait_until(&tp->woken, 0, deadline))
            continue;
        /* The deadline passed. Either the timeout claims the wait, or a
         * waker has claimed it already and is about to ready this thread. */
        uint32_t open = 0;
        if (atomic_compare_exchange_strong(claim, &open, WEFT__CLAIM_TIMEOUT))
            return true;
        while (atomic_load_explicit(&tp->woken, memory_order_acquire) == 0)
            weft__futex_wait(&tp->woken, 0);
    }
    return false;
}

void weft__ready_many(weft__parker **parkers, size_t n)
{
    if (n == 0)
        return;
    weft__p *p = weft__p_self();
    if (p) {
        /* In order at the tail of the local queue, so a batch runs first
         * come, first served, and other Ps may steal half of it. */
        for (size_t i = 0; i < n; i++) {
            if (parkers[i]->kind == WEFT__PARKER_THREAD) {
                weft__ready(parkers[i]);
                continue;
            }
            weft__g *g = (weft__g *)parkers[i];
            atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
            runq_put(p, g, false);
        }
        wake_if_needed();
        return;
    }
    /* From outside the Ps: chain the coroutines and queue them with one
     * lock, then let the spinning protocol start as many Ps as needed. */
    weft__note_outside_use();
    weft__g *head = NULL, *tail = NULL;
    int64_t count = 0;
    for (size_t i = 0; i < n; i++) {
        if (parkers[i]->kind == WEFT__PARKER_THREAD) {
            weft__ready(parkers[i]);
            continue;
        }
        weft__g *g = (weft__g *)parkers[i];
        atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_relaxed);
        g->next = NULL;
        if (tail)
            tail->next = g;
        else
            head = g;
        tail = g;
        count++;
    }
    if (!head || !weft__gate_enter())
        return;
    weft__lock_acquire(&weft__rt.lock);
    gq_put_locked(head, tail, count);
    weft__lock_release(&weft__rt.lock);
    atomic_fetch_add_explicit(&weft__rt.global_pushes, count, memory_order_relaxed);
    wake_if_needed();
    weft__gate_leave();
}

/* ---- Spawn and yield ---------------------------------------------------- */

/* Allocate g and its stack reservation and queue it on p, or on the global
 * queue when p is NULL. */
static int spawn_one(weft__p *p, weft_fn fn, void *arg,
                     const weft_go_opts *opts, const char *file, int line)
{
    size_t want = 0;
    if (opts && opts->stack_size) {
        want = weft__stack_round(opts->stack_size);
        if (!want)
            return -EINVAL;
        if (want == weft__rt.stack_size)
            want = 0;
    }

    weft__g *g = g_alloc(p);
    if (!g)
        return -ENOMEM;
    g->stack = weft__stack_get(p ? &p->stacks : NULL, want);
    if (!g->stack) {
        g_free(p, g);
        return -ENOMEM;
    }
    g->name = NULL;
    if (opts && opts->name) {
        g->name = strdup(opts->name);
        if (!g->name) {
            weft__stack_put(p ? &p->stacks : NULL, g->stack);
            g->stack = NULL;
            g_free(p, g);
            return -ENOMEM;
        }
    }
    g->parker.kind = WEFT__PARKER_G;
    g->fn = fn;
    g->arg = arg;
    g->id = id_next(p);
    g->file = file;
    g->line = line;
    g->started = false;
    g->saved_errno = 0;
    atomic_store_explicit(&g->wait_reason, WEFT__WAIT_NONE, memory_order_relaxed);
    g->reason_override = WEFT__WAIT_NONE;
    g->asan_fake_stack = NULL;
    weft__fpenv_get(&g->fpenv);
    /* Release: weft_dump reads the fields above once it sees the state. */
    atomic_store_explicit(&g->state, WEFT__G_RUNNABLE, memory_order_release);

    if (p) {
        atomic_store_explicit(&p->st_spawned,
                              atomic_load_explicit(&p->st_spawned, memory_order_relaxed) + 1,
                              memory_order_relaxed);
        runq_put(p, g, true);
    } else {
        atomic_fetch_add(&weft__rt.outside_spawned, 1);
        gq_put_one(g);
    }
    wake_if_needed();
    return 0;
}

int weft__sched_spawn(weft_fn fn, void *arg, const weft_go_opts *opts,
                      const char *file, int line)
{
    weft__p *p = weft__p_self();
    /* Mapping a new stack slab can fail a probe on the way (an older
     * kernel's madvise) and still succeed, so errno is kept. It is reached
     * through p before the back-off below, which may resume this coroutine
     * on another thread. */
    int *errno_at = p ? p->errno_ptr : &errno;
    int saved_errno = *errno_at;
    int err = spawn_one(p, fn, arg, opts, file, line);
    *errno_at = saved_errno;
    if (err)
        return err;

    /* A coroutine that spawns in a loop would fill the local queue and
     * then push half of it to the global queue again and again. A burst of
     * a million spawns would then hold a million records and stack
     * reservations, none of them in cache by the time it runs. So once the
     * queue is three-quarters full the spawner yields, and the P runs the
     * queued coroutines while their records are still hot. The spawner is
     * only delayed, as a preempted goroutine would be. */
    if (p && p->curg) {
        uint32_t h = atomic_load_explicit(&p->runq_head, memory_order_relaxed);
        uint32_t t = atomic_load_explicit(&p->runq_tail, memory_order_relaxed);
        if (t - h >= SPAWN_YIELD_QUEUE)
            switch_away(p, p->curg, WEFT__POST_BACKOFF);
    }
    return 0;
}

void weft__sched_yield(void)
{
    weft__p *p = weft__p_self();
    if (!p || !p->curg) {
        sched_yield();
        return;
    }
    switch_away(p, p->curg, WEFT__POST_YIELD);
}

/* ---- P threads, init and shutdown -------------------------------------- */

static void *p_main(void *arg)
{
    weft__p *p = arg;
    weft__overflow_altstack_install();
    p_self_set(p);
    /* Switches save and restore errno through this pointer, taken once
     * per thread. glibc declares __errno_location const, so a compiler may
     * reuse its result from before a switch, and by then a coroutine can
     * be on another thread. */
    p->errno_ptr = &errno;

#ifdef WEFT_ASAN
    pthread_attr_t attr;
    if (pthread_getattr_np(pthread_self(), &attr) == 0) {
        pthread_attr_getstack(&attr, &p->g0_stack_lo, &p->g0_stack_size);
        pthread_attr_destroy(&attr);
    }
#endif
#ifdef WEFT_TSAN
    p->g0_fiber = __tsan_get_current_fiber();
#endif

    weft__g *g;
    while ((g = find_runnable(p))) {
        /* Whichever way a spinning P found work, it stops spinning now. */
        if (p->spinning)
            stop_spinning(p);
        execute(p, g);
    }
    /* p->spinning is not read here: while the runtime stops, a waker may
     * still be handing this P the spinning slot, and the count no longer
     * matters. */
    p_self_set(NULL);
    weft__overflow_altstack_remove();
    return NULL;
}

int weft__sched_init(int nprocs, size_t stack_size, bool force_mprotect)
{
    memset(&weft__rt, 0, sizeof weft__rt);
    weft__rt.nprocs = nprocs;
    weft__rt.stack_size = stack_size;
    atomic_fetch_add(&generation, 1);
    atomic_store(&weft__rt.id_gen, 1);
    int err = weft__stacks_init(stack_size, force_mprotect);
    if (err)
        return err;
    weft__rt.ps = calloc((size_t)nprocs, sizeof *weft__rt.ps);
    if (!weft__rt.ps) {
        weft__stacks_term();
        return -ENOMEM;
    }
    uint64_t seed = (uint64_t)now_ns() | 1;
    for (int i = 0; i < nprocs; i++) {
        weft__p *p = NULL;
        if (posix_memalign((void **)&p, 64, sizeof *p) != 0) {
            weft__sched_term();
            return -ENOMEM;
        }
        memset(p, 0, sizeof *p);
        weft__rt.ps[i] = p;
        p->seen_switches = calloc((size_t)nprocs, sizeof *p->seen_switches);
        if (!p->seen_switches) {
            weft__sched_term();
            return -ENOMEM;
        }
        p->id = i;
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        p->rng = seed | 1;
        p->global_countdown = GLOBAL_CHECK_ROUNDS;
    }
    atomic_store(&weft__rt.running, 1);
    for (int i = 0; i < nprocs; i++) {
        weft__p *p = weft__rt.ps[i];
        if (pthread_create(&p->thread, NULL, p_main, p) != 0) {
            /* Stop the threads already started; the Ps without one are
             * idle records that they may steal from harmlessly. */
            weft__rt.started = i;
            weft__sched_stop();
            weft__sched_term();
            return -ENOMEM;
        }
    }
    weft__rt.started = nprocs;
    return 0;
}

/* Tell every P to leave its loop and wait for their threads.
 * NOTE: without preemption, a P whose coroutine never parks or yields
 * never reaches its loop, and this waits for it. */
void weft__sched_stop(void)
{
    atomic_store(&weft__rt.stopping, 1);
    for (int i = 0; i < weft__rt.started; i++)
        note_post(weft__rt.ps[i]);
    for (int i = 0; i < weft__rt.started; i++)
        pthread_join(weft__rt.ps[i]->thread, NULL);
    atomic_store(&weft__rt.running, 0);
}

/* Free every G record and stack; abandoned coroutines vanish here. */
void weft__sched_term(void)
{
    while (weft__rt.chunks) {
        weft__gchunk *c = weft__rt.chunks;
        weft__rt.chunks = c->next;
        for (int i = 0; i < GCHUNK_SIZE; i++) {
            weft__g *g = &c->gs[i];
            free(g->name);
#ifdef WEFT_TSAN
            if (g->tsan_fiber)
                __tsan_destroy_fiber(g->tsan_fiber);
#endif
        }
        free(c);
    }
    if (weft__rt.ps) {
        for (int i = 0; i < weft__rt.nprocs; i++) {
            if (weft__rt.ps[i])
                free(weft__rt.ps[i]->seen_switches);
            free(weft__rt.ps[i]);
        }
        free(weft__rt.ps);
    }
    weft__rt.ps = NULL;
    weft__stacks_term();
}

int64_t weft__sched_live(void)
{
    int64_t n = atomic_load(&weft__rt.outside_spawned);
    for (int i = 0; i < weft__rt.nprocs; i++) {
        weft__p *p = weft__rt.ps[i];
        n += atomic_load_explicit(&p->st_spawned, memory_order_relaxed);
        n -= atomic_load_explicit(&p->st_exited, memory_order_acquire);
    }
    return n;
}
