/*
 * Once (Go's sync.Once).
 *
 * done turns 1, with release order, only after fn has returned, so the
 * fast path is one acquire load that also makes fn's effects visible.
 * Callers that find done still 0 serialise on the internal mutex: the
 * first runs fn, the others wait on the mutex and then find done set.
 * runner is the parker running fn, while it runs. A caller whose own
 * parker is there is calling from inside fn and would wait for itself
 * forever, so that is fatal instead.
 */
#include <stdatomic.h>
#include <stdint.h>

#include "../sched/sched.h"
#include "waitq.h"
#include "weft/sync.h"

#define DONE(o) ((_Atomic uint32_t *)&(o)->done)
#define RUNNER(o) ((void *_Atomic *)&(o)->runner)

static void once_slow(weft_once *once, weft_fn fn, void *arg)
{
    weft__parker *self = weft__parker_self();
    if (atomic_load_explicit(RUNNER(once), memory_order_relaxed) == self)
        weft__fatal("weft_once_do called on once %p from inside its own "
                    "function, which would deadlock", (void *)once);

    weft__mutex_lock_reason(&once->mu, WEFT__WAIT_ONCE);
    if (atomic_load_explicit(DONE(once), memory_order_relaxed) == 0) {
        atomic_store_explicit(RUNNER(once), self, memory_order_relaxed);
        fn(arg);
        atomic_store_explicit(RUNNER(once), NULL, memory_order_relaxed);
        atomic_store_explicit(DONE(once), 1, memory_order_release);
    }
    weft_mutex_unlock(&once->mu);
}

void weft_once_do(weft_once *once, weft_fn fn, void *arg)
{
    if (atomic_load_explicit(DONE(once), memory_order_acquire) != 0)
        return;
    once_slow(once, fn, arg);
}
