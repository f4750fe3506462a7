/*
 * Internal header: the coroutine (G), the processor slot (P) and the
 * scheduler's global state, kept together as one picture of the runtime.
 *
 * Vocabulary:
 *   G  a coroutine: a function with its own stack and saved context.
 *   P  a processor slot: a local run queue, caches, and the one worker
 *      thread (Go's M) bound to it for the runtime's whole life. The
 *      runtime's own blocking work goes to libuv's thread pool, so Ps never
 *      change threads. NOTE: a coroutine that makes a blocking system call
 *      itself blocks its P's thread until the call returns.
 *   g0 the worker thread's own stack, where the scheduling loop runs. A
 *      coroutine that stops running switches to the P's next runnable G,
 *      or to g0 when there is none. It leaves a "post action" (park,
 *      yield, exit) that the next runner carries out once the coroutine's
 *      stack is no longer in use (see "Switching" in sched.c).
 *   parker  what blocking primitives wait with: a G, or a plain thread that
 *      calls the API from outside the runtime and blocks on a futex.
 *
 * The park/ready interface (every primitive above the scheduler uses only
 * this):
 *   weft__park(unlock, arg, reason) suspends the calling parker. For a G,
 *     unlock(arg) runs on g0 after the switch, so a waker that needs the
 *     lock the caller held can only make the G ready once its context is
 *     saved. If unlock returns false the G resumes at once.
 *   weft__ready(parker) makes a parked parker runnable; it is called
 *     exactly once per park, by the caller that removed it from a wait
 *     list.
 *
 * Thread-local state: the current P is reached only through weft__p_self(),
 * a non-inlined accessor, never cached across a call that can switch: a G
 * may resume on another thread after any park or yield.
 */
#ifndef WEFT_SCHED_SCHED_H
#define WEFT_SCHED_SCHED_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "../arch/context.h"
#include "../arch/stack.h"
#include "weft/runtime.h"

/* Why a parker waits, in the words Go's runtime uses. */
typedef enum weft__wait_reason {
    WEFT__WAIT_NONE = 0,
    WEFT__WAIT_SLEEP,
    WEFT__WAIT_WAITGROUP,
    WEFT__WAIT_CHAN_SEND,
    WEFT__WAIT_CHAN_RECV,
    WEFT__WAIT_CHAN_SEND_NIL,
    WEFT__WAIT_CHAN_RECV_NIL,
    WEFT__WAIT_SELECT,
    WEFT__WAIT_SELECT_NO_CASES,
    WEFT__WAIT_MUTEX,
    WEFT__WAIT_RWMUTEX_RLOCK,
    WEFT__WAIT_RWMUTEX_LOCK,
    WEFT__WAIT_COND,
    WEFT__WAIT_SEMACQUIRE,
    WEFT__WAIT_ONCE,
    WEFT__WAIT_IO,
    WEFT__WAIT_BLOCKING,
    WEFT__WAIT_ERRGROUP,
    WEFT__WAIT_COUNT
} weft__wait_reason;

const char *weft__wait_reason_string(int reason);

enum { WEFT__PARKER_G = 0, WEFT__PARKER_THREAD = 1 };

typedef struct weft__parker {
    uint8_t kind;  /* WEFT__PARKER_G or WEFT__PARKER_THREAD; fixed */
} weft__parker;

/* A plain thread's parker: one per thread, in thread-local storage. */
typedef struct weft__thread_parker {
    weft__parker base;
    _Atomic uint32_t woken;  /* 0 while parked; 1 once ready */
} weft__thread_parker;

typedef bool (*weft__unlock_fn)(void *arg);

enum weft__g_state {
    WEFT__G_FREE = 0,   /* on a free list */
    WEFT__G_RUNNABLE,   /* in a run queue, runnext or about to be */
    WEFT__G_RUNNING,    /* on a P */
    WEFT__G_WAITING,    /* parked */
};

/* 128 bytes, aligned to cache lines so a record spans exactly two: a
 * record usually moves between CPUs when a thief takes its G. */
typedef struct weft__g {
    _Alignas(64) weft__parker parker; /* first, so a parker casts to its G */
    /* Fixed while the G lives. */
    weft_fn fn;
    void *arg;
    uint64_t id;
    const char *file;           /* spawn site */
    int line;
    char *name;                 /* from weft_go_opts, malloc'd, may be NULL */
    weft__fpenv fpenv;          /* spawner's floating-point state */
    /* Owned by whichever P runs or queues the G. */
    _Atomic uint32_t state;     /* enum weft__g_state */
    bool started;               /* ctx contains a real context */
    struct weft__g *next;       /* global queue or free-list link */
    weft__stack *stack;         /* reserved at spawn; swapped at first run */
    weft__ctx ctx;
    int saved_errno;            /* errno while not running */
    _Atomic uint16_t wait_reason; /* while parked; read by weft_dump */
    uint16_t reason_override;   /* see weft__wait_reason_set */
    _Atomic int64_t wait_since;  /* coarse clock at the park, see weft__p.clock */
    void *asan_fake_stack;      /* AddressSanitizer's per-fiber state */
    void *tsan_fiber;           /* ThreadSanitizer's fiber */
} weft__g;

/* Post actions g0 carries out after a G switches away. */
enum weft__post { WEFT__POST_NONE = 0, WEFT__POST_PARK, WEFT__POST_YIELD,
                  WEFT__POST_BACKOFF, WEFT__POST_EXIT };

#define WEFT__RUNQ_SIZE 256u

typedef struct weft__p {
    /* Run queue: a ring the owner pushes at the tail and pops at the head;
     * thieves take half from the head with one CAS. head is advanced by
     * CAS by anyone; tail is stored only by the owner. */
    _Atomic uint32_t runq_head;
    char pad0[60];
    _Atomic uint32_t runq_tail;
    _Atomic(weft__g *) runnext;  /* G made ready by this P's current G */
    _Atomic(weft__g *) runq[WEFT__RUNQ_SIZE];
    char pad1[64];

    /* Owner only. */
    int id;
    uint32_t global_countdown;   /* rounds left before the global queue goes first */
    uint32_t runnext_streak;     /* consecutive runnext picks */
    uint64_t rng;                /* xorshift state for victim order */
    weft__g *curg;               /* running G, NULL on g0 */
    int post;                    /* enum weft__post, left by post_g */
    struct weft__g *post_g;      /* G that switched away last */
    weft__unlock_fn post_fn;
    void *post_arg;
    weft__ctx g0_ctx;
    int *errno_ptr;              /* this P's thread's errno; fixed */
    weft__g *gfree;              /* free G records */
    uint32_t ngfree;
    uint64_t id_next;            /* batch of coroutine ids */
    uint64_t id_end;
    weft__stack_cache stacks;
    bool spinning;               /* counted in nmspinning; see "Spinning" */
    bool timers_check;           /* post_switch fires due timers */
    /* CLOCK_MONOTONIC_COARSE, refreshed every GLOBAL_CHECK_ROUNDS rounds
     * and after an idle sleep; parks stamp it into wait_since. */
    int64_t clock;
    _Atomic(struct weft__g *) running; /* curg, for weft_dump */
    /* Per other P: its switch count at this P's last stall check. */
    int64_t *seen_switches;
    void *g0_stack_lo;           /* AddressSanitizer: thread stack bounds */
    size_t g0_stack_size;
    void *g0_fake_stack;
    void *g0_fiber;              /* ThreadSanitizer: the thread's fiber */

    /* Idle list link and wakeup word; guarded by sched.lock / futex. */
    struct weft__p *idle_next;
    bool idle;                   /* on the idle list; guarded by sched.lock */
    _Atomic uint32_t note;       /* 1 once woken */
    _Atomic uint32_t in_netpoll; /* 1 while blocked in epoll_wait, not the futex */

    /* Statistics, written by the owner, read by anyone. */
    _Atomic int64_t st_spawned;
    _Atomic int64_t st_exited;
    _Atomic int64_t st_switches;
    _Atomic int64_t st_steals;
    _Atomic int64_t st_parks;

    pthread_t thread;
} weft__p;

typedef struct weft__sched {
    _Atomic int running;         /* 1 between init and shutdown */
    _Atomic int stopping;        /* set by shutdown: Ps leave their loops */
    int nprocs;                  /* Ps allocated; fixed while running */
    int started;                 /* Ps whose thread was started */
    weft__p **ps;
    size_t stack_size;           /* default usable stack bytes */

    _Atomic uint32_t lock;       /* guards the fields down to chunks */
    weft__g *gq_head;            /* global run queue */
    weft__g *gq_tail;
    _Atomic int64_t gq_size;     /* readable without the lock */
    weft__p *idle;               /* idle Ps, a stack */
    weft__g *gfree;              /* free G records shared by all Ps */
    uint32_t ngfree;
    struct weft__gchunk *chunks; /* every G record ever allocated */

    _Atomic int32_t npidle;      /* Ps on the idle list */
    _Atomic int32_t nmspinning;  /* Ps spinning for work; see "Spinning" */
    _Atomic uint64_t id_gen;     /* coroutine id batches */
    _Atomic int64_t outside_spawned; /* spawned from plain threads */
    _Atomic int64_t global_pushes;
    _Atomic int64_t idle_wakeups;
    /* A thread outside the runtime has used the API, so a coroutine may
     * be waiting for it: the deadlock detector stays off. */
    _Atomic bool outside_used;
    _Atomic bool detect_deadlock; /* set by weft_init; WEFT_DEBUG=deadlock=0 */
} weft__sched;

/* G records are allocated in chunks that are never freed while the
 * runtime runs; weft_dump and the gdb helper walk them. */
#define WEFT__GCHUNK_SIZE 256
typedef struct weft__gchunk {
    struct weft__gchunk *next;
    weft__g gs[WEFT__GCHUNK_SIZE];
} weft__gchunk;

extern weft__sched weft__rt;

/* The calling thread's P, or NULL on a plain thread. Not inlined, so no
 * caller can keep the thread-local address across a switch. */
weft__p *weft__p_self(void);

/* The current parker: the running G, or the calling thread's parker. */
weft__parker *weft__parker_self(void);

void weft__park(weft__unlock_fn unlock, void *arg, int reason);
void weft__ready(weft__parker *parker);

/* Values of a claim word: wakers and the timeout race to move it from
 * OPEN, and only the winner readies the parker. */
enum { WEFT__CLAIM_OPEN = 0, WEFT__CLAIM_WAKER = 1, WEFT__CLAIM_TIMEOUT = 2 };

/* Park like weft__park, but also end the wait at deadline (weft_now clock)
 * unless a waker has claimed it first. Every waker of such a parker must
 * move *claim from OPEN to WAKER by CAS and ready it only if that
 * succeeded. Returns true when the timeout won (then no waker readies it). */
bool weft__park_until(weft__unlock_fn unlock, void *arg, int reason,
                      int64_t deadline, _Atomic uint32_t *claim);

/* Ready n parkers; from outside the Ps they are queued with one lock. */
void weft__ready_many(weft__parker **parkers, size_t n);

/* Scheduler set-up and tear-down, used by runtime.c. */
int weft__sched_init(int nprocs, size_t stack_size, bool force_mprotect);
void weft__sched_stop(void);
void weft__sched_term(void);
/* Spawn a coroutine. A coroutine caller may yield before returning (when
 * its local queue is getting full); a plain-thread caller never does. */
int weft__sched_spawn(weft_fn fn, void *arg, const weft_go_opts *opts,
                      const char *file, int line);

/* Number of the running (or last) runtime; weft_init increments it. */
uint32_t weft__generation(void);

/* The entry gate for calls from outside the Ps; see sched.c. */
bool weft__gate_enter(void);
void weft__gate_leave(void);
void weft__gate_open(void);
void weft__gate_close(void);
void weft__sched_yield(void);
int64_t weft__sched_live(void);

/* Poller: the libuv loop thread, which runs the timers. */
int weft__poller_init(void);
void weft__poller_term(void);
/* Make sure the loop thread's backstop fires no later than a few
 * milliseconds after deadline. Any thread. */
void weft__poller_backstop(int64_t deadline);

/* Timers (timer.c): the heap the loop thread serves. */
/* Sleep the calling coroutine until deadline. */
int weft__timer_sleep(int64_t deadline);
/* weft__park_until for a coroutine. */
bool weft__timer_park_until(weft__unlock_fn unlock, void *arg, int reason,
                            int64_t deadline, _Atomic uint32_t *claim);
/* A new earliest deadline was inserted: make sure a P sleeps until it.
 * Any thread (sched.c). */
void weft__timers_changed(void);
/* Fire what is due at now; return the earliest deadline left, or 0 when
 * the heap is empty. Loop thread or a P's owner. */
int64_t weft__timers_run(int64_t now);
/* The earliest deadline, or 0. Any thread. */
int64_t weft__timers_next(void);
/* Loop thread: forget every entry (runtime shutdown). */
void weft__timers_term(void);
int64_t weft__timers_pending(void);

/* A function timer (Go's time.AfterFunc): after d (at once when d <= 0),
 * fn(arg) runs once on the firing thread, a P or the loop thread, with no
 * runtime lock held; it must not block. weft_timer_stop on it returns true
 * when it kept fn from running (then fn never runs), false when fn has run
 * or is about to. weft_timer_release stops it and drops the reference;
 * weft_timer_chan returns NULL. Returns NULL without a running runtime or
 * memory. */
struct weft_timer *weft__timer_func_make(int64_t d, void (*fn)(void *arg),
                                         void *arg);

/* Make the calling coroutine's parks report reason (WEFT__WAIT_NONE: their
 * own) until the next call, for a primitive built on others (the error
 * group waits on a wait group). Returns the previous setting; no effect on
 * a plain thread. */
int weft__wait_reason_set(int reason);

/* Network poller (io/netpoll.c). */
/* Operations waiting for socket readiness. */
extern _Atomic int64_t weft__netpoll_nwait;
/* 1 while a P blocks in the poller. */
extern _Atomic uint32_t weft__netpoll_blocked;
/* The loop thread polls instead of the Ps (WEFT_DEBUG=netpoll=loop). */
extern _Atomic bool weft__netpoll_by_loop;
/* Most parkers one weft__netpoll call returns. */
#define WEFT__NETPOLL_MAX 128
/* Poll the sockets: without blocking when deadline is 0, without limit
 * when it is negative, else until the deadline (weft_now clock) or until
 * weft__netpoll_break. Stores the parkers that readiness woke in woken
 * (room for WEFT__NETPOLL_MAX) for the caller to ready; returns how many. */
int weft__netpoll(int64_t deadline, weft__parker **woken);
/* Interrupt a P blocked in weft__netpoll. Any thread. */
void weft__netpoll_break(void);
/* A plain thread starts waiting for readiness: make sure some P polls.
 * (sched.c) */
void weft__netpoll_wanted(void);

/* Print "weft: fatal: <message>" to stderr and abort. Called from a
 * coroutine, the message names it and its spawn site. */
_Noreturn void weft__fatal(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Mark the calling thread as the runtime's own (the loop thread, weft_main's
 * thread, a blocking-pool thread completing a job) while on is true: its
 * parks and wakeups do not count as use from outside the runtime. */
void weft__thread_internal(bool on);
/* Note a call from a plain thread that is not the runtime's own. */
void weft__note_outside_use(void);

/* Debugging (debug/dump.c). */
/* Write the dump of one coroutine record; g must not be free. */
void weft__dump_g(FILE *out, weft__g *g, int64_t now);
/* Coarse monotonic clock, nanoseconds. */
int64_t weft__coarse_now(void);
/* Waits the deadlock detector must treat as progress still possible:
 * sockets, loop requests, blocking jobs, signal contexts. */
bool weft__io_busy(void);
/* True when a thread exists that is not the runtime's own (io/loop.c). */
bool weft__foreign_threads(void);

#endif /* WEFT_SCHED_SCHED_H */
