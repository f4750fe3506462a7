/*
 * weft/sync.h: synchronisation between coroutines and plain threads.
 *
 * Every type here is ready to use when zero-initialised ("= {0}"), like
 * Go's zero values. The fields are private to the runtime.
 */
#ifndef WEFT_SYNC_H
#define WEFT_SYNC_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

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

void weft_wg_add(weft_wg *wg, int64_t delta);
void weft_wg_done(weft_wg *wg);
void weft_wg_wait(weft_wg *wg);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_SYNC_H */
