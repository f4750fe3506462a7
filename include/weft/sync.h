/*
 * weft/sync.h: synchronisation between coroutines and plain threads.
 *
 * Every type here is ready to use when zero-initialised ("= {0}"), like
 * Go's zero values. The fields are private to the runtime.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <stdbool.h>
#include <stdint.h>

#include "weft/runtime.h"

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Private: a FIFO queue of parked waiters, shared by the types below. It
 * keeps plain threads and coroutines on separate lists, so that the
 * records of coroutines abandoned by a runtime shutdown are never read
 * again. word belongs to the owning type: a mutex's state, or a count of
 * wakeups granted before their waiters linked themselves.
 */
typedef struct weft__waitq {
    uint32_t word;
    uint32_t lock;
    uint32_t ncoroutines;
    uint32_t generation;
    uint32_t abandoned;
    void *threads;
    void *coroutines;
} weft__waitq;

/*
 * Mutex (Go's sync.Mutex). Not recursive: locking it twice from one
 * coroutine deadlocks, as in Go. try_lock by the holder returns false.
 * Spins briefly, then parks. A woken waiter that loses the mutex again
 * after waiting longer than 1 ms switches it to FIFO hand-off (Go's
 * starvation mode), so no waiter is bypassed forever. Unlocking an unlocked mutex is fatal. Plain threads
 * and coroutines may share a mutex, and it may be unlocked by another
 * party than the one that locked it, as in Go.
 *
 * Shutdown: a mutex that a coroutine holds when the runtime shuts down
 * stays locked for good, as if the coroutine still ran. Coroutines waiting
 * on it are abandoned with the runtime, and other waiters, plain threads
 * or coroutines of a later runtime, are still served.
 */
typedef struct weft_mutex {
    weft__waitq q;      /* private: q.word is the lock state */
} weft_mutex;

void weft_mutex_lock(weft_mutex *mu);
bool weft_mutex_try_lock(weft_mutex *mu);
void weft_mutex_unlock(weft_mutex *mu);

/*
 * Reader/writer mutex (Go's sync.RWMutex): many readers or one writer. A
 * writer that waits blocks new readers, so writers are not starved, and a
 * reader must not lock it again for reading while it holds a read lock
 * (with a writer waiting in between, that deadlocks, as in Go). Unlocking
 * one that is not locked in that mode is fatal. Shutdown: as for the
 * mutex, locks that abandoned coroutines hold, or were granted while
 * waiting, stay held.
 */
typedef struct weft_rwmutex {
    weft_mutex writer;  /* private: serialises writers */
    int32_t readers;    /* private: readers in or queued, minus a bias while a writer is in */
    int32_t departing;  /* private: readers a waiting writer still waits for */
    weft__waitq reader_q; /* private: readers waiting for a writer to finish */
    weft__waitq writer_q; /* private: the writer waiting for readers to leave */
} weft_rwmutex;

void weft_rwmutex_rlock(weft_rwmutex *rw);
void weft_rwmutex_runlock(weft_rwmutex *rw);
void weft_rwmutex_lock(weft_rwmutex *rw);
void weft_rwmutex_unlock(weft_rwmutex *rw);
bool weft_rwmutex_try_rlock(weft_rwmutex *rw);
bool weft_rwmutex_try_lock(weft_rwmutex *rw);

/*
 * Condition variable (Go's sync.Cond) over a weft_mutex. weft_cond_wait
 * must be called with mu locked. It unlocks mu, waits for a signal or
 * broadcast, and locks mu again before returning. Waiters are woken in
 * the order they started waiting. Spurious returns do not happen, but
 * callers should still wait in a loop, as in Go. Coroutines waiting when
 * the runtime shuts down are abandoned, and a later signal skips them.
 */
typedef struct weft_cond {
    weft__waitq q;      /* private */
} weft_cond;

void weft_cond_wait(weft_cond *c, weft_mutex *mu);
void weft_cond_signal(weft_cond *c);
void weft_cond_broadcast(weft_cond *c);

/*
 * Once (Go's sync.Once): weft_once_do runs fn(arg) the first time it is
 * called on once, and every caller returns only after fn has finished.
 * A call on the same once from inside fn, by the coroutine or thread
 * running fn, would deadlock, and is fatal instead. One that fn makes wait
 * for another coroutine that calls weft_once_do on the same once still
 * deadlocks. If the runtime shuts down while a coroutine runs fn, fn never
 * finishes, and later calls on that once block for good.
 */
typedef struct weft_once {
    uint32_t done;      /* private */
    uint32_t spare;     /* private */
    void *runner;       /* private: the parker running fn */
    weft_mutex mu;      /* private */
} weft_once;

void weft_once_do(weft_once *once, weft_fn fn, void *arg);

/*
 * Wait group (Go's sync.WaitGroup): wait until a counter of outstanding
 * tasks drops to zero. weft_wg_add with a positive delta must happen before
 * the matching weft_wg_wait may observe zero. A negative counter is fatal.
 * A wait group may be freed or reused as soon as every weft_wg_wait on it
 * has returned. Coroutines waiting on it when the runtime shuts down are
 * abandoned with the runtime. Plain threads waiting on it are still woken
 * when the counter reaches zero.
 */
typedef struct weft_wg {
    uint64_t state;     /* private: counter in the high half, waiters low */
    uint32_t lock;      /* private: guards the fields below */
    uint32_t wakeups;   /* private: wakeups granted, not yet taken */
    void *thread_waiters;    /* private: parked plain threads */
    void *coroutine_waiters; /* private: parked coroutines */
    uint32_t ncoroutines;    /* private: length of coroutine_waiters */
    uint32_t generation;     /* private: the runtime those coroutines run in */
} weft_wg;

/* A delta outside the 32-bit range is fatal. */
void weft_wg_add(weft_wg *wg, int64_t delta);
void weft_wg_done(weft_wg *wg);
void weft_wg_wait(weft_wg *wg);

#ifdef __cplusplus
}
#endif

#include "weft/sem.h"
#include "weft/pool.h"

#endif /* WEFT_SYNC_H */
