/*
 * Reader/writer mutex (Go's sync.RWMutex) on two semaphores.
 *
 * readers counts the readers inside plus the readers queued behind a
 * writer. A writer first takes the writer mutex, which serialises writers,
 * then subtracts MAX_READERS from readers. From then on readers is
 * negative, so every new reader finds that a writer is in or waiting and
 * queues on reader_q. The readers that were inside when the writer
 * arrived are moved to departing. Each of them, leaving, decrements
 * departing, and the last one wakes the writer through writer_q. Writer
 * unlock adds MAX_READERS back: the result is the number of readers that
 * queued meanwhile, and it wakes exactly that many before releasing the
 * writer mutex.
 *
 * The semaphores (waitq.h) grant a wakeup even when its waiter has counted
 * itself but not linked its record yet. That waiter then takes the wakeup
 * without parking, so a reader or writer may be woken before it parks
 * without losing anything.
 *
 * Invariants: readers >= 0 while no writer is in, and readers is in
 * [-MAX_READERS, 0) while one is. At most one waiter is ever on writer_q.
 * Lock order: writer mutex, then the semaphore queue locks (leaves).
 */
#include <stdatomic.h>
#include <stdint.h>

#include "../sched/sched.h"
#include "waitq.h"
#include "weft/sync.h"

/* Readers beyond this many at once are not supported (as in Go). */
#define MAX_READERS (1 << 30)

#define READERS(rw) ((_Atomic int32_t *)&(rw)->readers)
#define DEPARTING(rw) ((_Atomic int32_t *)&(rw)->departing)

void weft_rwmutex_rlock(weft_rwmutex *rw)
{
    if (atomic_fetch_add_explicit(READERS(rw), 1, memory_order_acquire) + 1 < 0) {
        /* A writer is in or waiting: wait until its unlock wakes us. */
        weft__sema_acquire(&rw->reader_q, WEFT__WAIT_RWMUTEX_RLOCK);
    }
}

bool weft_rwmutex_try_rlock(weft_rwmutex *rw)
{
    int32_t r = atomic_load_explicit(READERS(rw), memory_order_relaxed);
    for (;;) {
        if (r < 0)
            return false;
        if (atomic_compare_exchange_weak_explicit(READERS(rw), &r, r + 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return true;
    }
}

void weft_rwmutex_runlock(weft_rwmutex *rw)
{
    int32_t r = atomic_fetch_sub_explicit(READERS(rw), 1, memory_order_release) - 1;
    if (r >= 0)
        return;
    if (r + 1 == 0 || r + 1 == -MAX_READERS)
        weft__fatal("runlock of unlocked rwmutex %p", (void *)rw);
    /* A writer waits: the last reader to leave wakes it. */
    if (atomic_fetch_sub_explicit(DEPARTING(rw), 1, memory_order_acq_rel) - 1 == 0)
        weft__sema_release(&rw->writer_q, 1);
}

void weft_rwmutex_lock(weft_rwmutex *rw)
{
    weft__mutex_lock_reason(&rw->writer, WEFT__WAIT_RWMUTEX_LOCK);
    /* Announce the writer. r is the number of readers inside. */
    int32_t r = atomic_fetch_sub_explicit(READERS(rw), MAX_READERS,
                                          memory_order_acq_rel);
    if (r != 0 &&
        atomic_fetch_add_explicit(DEPARTING(rw), r, memory_order_acq_rel) + r != 0)
        weft__sema_acquire(&rw->writer_q, WEFT__WAIT_RWMUTEX_LOCK);
}

bool weft_rwmutex_try_lock(weft_rwmutex *rw)
{
    if (!weft_mutex_try_lock(&rw->writer))
        return false;
    int32_t none = 0;
    if (!atomic_compare_exchange_strong_explicit(READERS(rw), &none, -MAX_READERS,
                                                 memory_order_acquire,
                                                 memory_order_relaxed)) {
        weft_mutex_unlock(&rw->writer);
        return false;
    }
    return true;
}

void weft_rwmutex_unlock(weft_rwmutex *rw)
{
    /* Let readers in again. r is the number that queued meanwhile. */
    int32_t r = atomic_fetch_add_explicit(READERS(rw), MAX_READERS,
                                          memory_order_release) + MAX_READERS;
    if (r >= MAX_READERS)
        weft__fatal("unlock of unlocked rwmutex %p", (void *)rw);
    if (r > 0)
        weft__sema_release(&rw->reader_q, (uint32_t)r);
    weft_mutex_unlock(&rw->writer);
}
