/*
 * Object pool (Go's sync.Pool) with a cache per P that takes no lock.
 *
 * Layout: pool->state points at one cache per P of the running runtime,
 * allocated on the first put from a coroutine. A P's cache is a stack: a
 * private slot holding the object put last, and up to LOCAL_CAP older
 * objects. Only the thread of its P touches it, and only between two
 * switches: get and put never park while they use it, so the coroutine
 * cannot move to another P meanwhile. Everything else goes through the
 * shared list, a stack of objects under pool->lock: the overflow of the
 * per-P caches, and every object that plain threads put.
 *
 * Algorithm:
 *  put from a P:  push onto its cache. When the cache is full, move its
 *                 oldest LOCAL_BATCH objects to the shared list with one
 *                 lock.
 *  get from a P:  pop from its cache. When that is empty, take one object
 *                 and up to LOCAL_BATCH more from the shared list with one
 *                 lock. When that is empty too, call new_fn.
 *  plain threads: push to and pop from the shared list.
 * Objects in another P's cache are not taken: each P keeps at most
 * LOCAL_CAP + 1 objects out of the others' reach.
 *
 * Trimming: with a free_fn, the shared list keeps at most SHARED_MAX
 * objects and the pool gives the excess to free_fn. Without one it keeps
 * them all: the list grows to the largest number of objects the program
 * has put and not taken back.
 *
 * Runtime life: the per-P caches belong to one runtime (state->generation,
 * its size to that runtime's P count). Every pool that has caches, or a
 * free_fn and shared objects, is on a global registry, linked through
 * pool->next (NULL when not registered, REGISTRY_END on the last one).
 * weft_shutdown calls weft__pool_shutdown once the Ps have stopped. It
 * takes each pool off the registry, frees its caches and hands their
 * objects and the shared ones to free_fn. A pool without free_fn moves
 * the cached objects to its shared list instead and leaves the registry,
 * because shutdown has nothing more to do for it. A cache left by an
 * earlier runtime is retired the same way when a put finds it.
 *
 * Registration races with shutdown are closed by order: a put registers
 * the pool after it has pushed to the shared list, and shutdown
 * unregisters a pool before it drains the list. So every object pushed is
 * either drained or finds the pool unregistered and registers it again.
 *
 * Locking: registry_lock and pool->lock are never held together, never
 * across a call to new_fn or free_fn, and never across a park.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "../sched/lock.h"
#include "../sched/sched.h"
#include "pool_internal.h"
#include "weft/pool.h"

/* Objects a P's cache stores besides its private slot, and how many move
 * to or from the shared list at a time. */
#define LOCAL_CAP 32
#define LOCAL_BATCH (LOCAL_CAP / 2)
/* Shared objects kept when the pool has a free_fn.
 * NOTE: a fixed guess, not tuned on any workload. */
#define SHARED_MAX 1024
#define SHARED_MIN_CAP 16

typedef struct pool_local {
    _Alignas(64) void *top;     /* private slot: the object put last */
    uint32_t count;             /* objects in items */
    void *items[LOCAL_CAP];     /* oldest first */
} pool_local;

typedef struct pool_state {
    uint32_t generation;        /* the runtime these caches belong to */
    int nprocs;
    pool_local locals[];        /* indexed by P id */
} pool_state;

typedef struct pool_shared {
    size_t cap;
    void *items[];              /* a stack, oldest first */
} pool_shared;

#define POOL_LOCK(p) ((_Atomic uint32_t *)&(p)->lock)
#define POOL_NSHARED(p) ((_Atomic uint32_t *)&(p)->nshared)
#define POOL_STATE(p) ((_Atomic(void *) *)&(p)->state)
#define POOL_NEXT(p) ((_Atomic(void *) *)&(p)->next)

static _Atomic uint32_t registry_lock;
static void *registry_head;     /* first registered pool, NULL when none */
static const char registry_end_mark;
#define REGISTRY_END ((void *)&registry_end_mark)

/* ---- Registry ----------------------------------------------------------- */

static void ensure_registered(weft_pool *pool)
{
    /* Relaxed is enough: see "Registration races" in the file comment. */
    if (atomic_load_explicit(POOL_NEXT(pool), memory_order_relaxed))
        return;
    weft__lock_acquire(&registry_lock);
    if (!atomic_load_explicit(POOL_NEXT(pool), memory_order_relaxed)) {
        atomic_store_explicit(POOL_NEXT(pool),
                              registry_head ? registry_head : REGISTRY_END,
                              memory_order_relaxed);
        registry_head = pool;
    }
    weft__lock_release(&registry_lock);
}

/* Take pool off the registry; false when it was not on it. Compares
 * addresses only, so pool may be uninitialised memory. */
static bool registry_remove(weft_pool *pool)
{
    bool found = false;
    weft__lock_acquire(&registry_lock);
    weft_pool *prev = NULL;
    void *cur = registry_head;
    while (cur && cur != REGISTRY_END) {
        weft_pool *q = cur;
        void *next = atomic_load_explicit(POOL_NEXT(q), memory_order_relaxed);
        if (q == pool) {
            if (prev)
                atomic_store_explicit(POOL_NEXT(prev), next, memory_order_relaxed);
            else
                registry_head = next == REGISTRY_END ? NULL : next;
            atomic_store_explicit(POOL_NEXT(q), NULL, memory_order_relaxed);
            found = true;
            break;
        }
        prev = q;
        cur = next;
    }
    weft__lock_release(&registry_lock);
    return found;
}

/* ---- Shared list (pool->lock held unless stated) ----------------------- */

/* Make room for up to n more shared objects within the bound; returns how
 * many fit. Allocates under the lock, which is rare because the capacity
 * doubles. */
static size_t shared_reserve(weft_pool *pool, size_t n)
{
    pool_shared *sh = pool->shared;
    size_t len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
    size_t cap = sh ? sh->cap : 0;
    size_t want = len + n;
    if (pool->free_fn && want > SHARED_MAX)
        want = SHARED_MAX;
    if (want > UINT32_MAX)
        want = UINT32_MAX;
    if (want > cap) {
        size_t grown = cap ? cap : SHARED_MIN_CAP;
        while (grown < want)
            grown *= 2;
        if (pool->free_fn && grown > SHARED_MAX)
            grown = SHARED_MAX;
        pool_shared *bigger = realloc(sh, sizeof *bigger + grown * sizeof bigger->items[0]);
        if (bigger) {
            bigger->cap = grown;
            pool->shared = bigger;
            cap = grown;
        }
    }
    size_t room = cap > len ? cap - len : 0;
    return room < n ? room : n;
}

/* Lock not held. Push up to n objects onto the shared list; returns how
 * many it took, fewer only at the bound or when memory runs out. The
 * caller registers the pool when it has a free_fn. */
static size_t shared_push(weft_pool *pool, void *const *objs, size_t n)
{
    weft__lock_acquire(POOL_LOCK(pool));
    size_t k = shared_reserve(pool, n);
    if (k) {
        pool_shared *sh = pool->shared;
        uint32_t len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
        memcpy(&sh->items[len], objs, k * sizeof objs[0]);
        atomic_store_explicit(POOL_NSHARED(pool), len + (uint32_t)k, memory_order_relaxed);
    }
    weft__lock_release(POOL_LOCK(pool));
    return k;
}

/* Lock held. Detach the shared list's array when the list is empty and
 * the pool is not registered, because no shutdown would free it then. The
 * caller frees the result after unlocking. So an unregistered pool that
 * goes out of scope empty leaves nothing allocated. */
static pool_shared *shared_detach_if_unused(weft_pool *pool)
{
    if (atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed) != 0 ||
        atomic_load_explicit(POOL_NEXT(pool), memory_order_relaxed) != NULL)
        return NULL;
    pool_shared *sh = pool->shared;
    pool->shared = NULL;
    return sh;
}

/* Lock not held. Pop the newest shared object, or NULL. */
static void *shared_pop(weft_pool *pool)
{
    if (atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed) == 0)
        return NULL;
    void *obj = NULL;
    pool_shared *unused = NULL;
    weft__lock_acquire(POOL_LOCK(pool));
    uint32_t len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
    if (len) {
        pool_shared *sh = pool->shared;
        obj = sh->items[--len];
        atomic_store_explicit(POOL_NSHARED(pool), len, memory_order_relaxed);
        unused = shared_detach_if_unused(pool);
    }
    weft__lock_release(POOL_LOCK(pool));
    free(unused);
    return obj;
}

/* Lock not held. A plain thread's put, or a P's when it has no cache. */
static void shared_put(weft_pool *pool, void *obj)
{
    if (shared_push(pool, &obj, 1)) {
        if (pool->free_fn)
            ensure_registered(pool);
        return;
    }
    /* At the bound (or out of memory) with a free_fn: trim obj itself.
     * Without a free_fn, only running out of memory gets here, and obj is
     * lost. */
    if (pool->free_fn)
        pool->free_fn(obj);
}

/* ---- Per-P caches ------------------------------------------------------- */

/* The running runtime's caches, or NULL when there are none yet. */
static pool_state *current_state(weft_pool *pool)
{
    /* Pairs with the release store in state_attach. */
    pool_state *st = atomic_load_explicit(POOL_STATE(pool), memory_order_acquire);
    if (st && st->generation != weft__generation())
        return NULL;
    return st;
}

/* Give the objects to free_fn, or, without one, keep them on the shared
 * list unless drop_all is set. */
static void dispose(weft_pool *pool, void *const *objs, size_t n, bool drop_all)
{
    if (pool->free_fn) {
        for (size_t i = 0; i < n; i++)
            pool->free_fn(objs[i]);
        return;
    }
    /* When memory runs out, the objects the list cannot take are lost. */
    if (!drop_all)
        shared_push(pool, objs, n);
}

/* Empty and free caches no P uses any more. */
static void state_release(weft_pool *pool, pool_state *st, bool drop_all)
{
    for (int i = 0; i < st->nprocs; i++) {
        pool_local *l = &st->locals[i];
        if (l->top)
            dispose(pool, &l->top, 1, drop_all);
        dispose(pool, l->items, l->count, drop_all);
    }
    free(st);
}

/* Called on a P: give the pool caches for the running runtime. Returns
 * false when memory runs out. May call free_fn, which may park, so the
 * caller looks up its P again afterwards. */
static bool state_attach(weft_pool *pool)
{
    uint32_t generation = weft__generation();
    int nprocs = weft__rt.nprocs;
    size_t bytes = sizeof(pool_state) + (size_t)nprocs * sizeof(pool_local);
    pool_state *fresh = aligned_alloc(_Alignof(pool_local), bytes);
    if (!fresh)
        return false;
    memset(fresh, 0, bytes);
    fresh->generation = generation;
    fresh->nprocs = nprocs;

    /* Registered first, so shutdown finds the caches. */
    ensure_registered(pool);
    weft__lock_acquire(POOL_LOCK(pool));
    pool_state *old = atomic_load_explicit(POOL_STATE(pool), memory_order_relaxed);
    bool installed = !old || old->generation != generation;
    if (installed)
        atomic_store_explicit(POOL_STATE(pool), fresh, memory_order_release);
    weft__lock_release(POOL_LOCK(pool));

    if (!installed) {
        /* Another coroutine attached caches first. */
        free(fresh);
        return true;
    }
    /* Caches of a runtime that stopped without weft__pool_shutdown
     * seeing them: their Ps are gone, so retire them here. */
    if (old)
        state_release(pool, old, false);
    return true;
}

/* The cache is empty: take one object and a batch for the cache from the
 * shared list, or return NULL. */
static void *local_refill(weft_pool *pool, pool_local *l)
{
    if (atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed) == 0)
        return NULL;
    void *obj = NULL;
    weft__lock_acquire(POOL_LOCK(pool));
    uint32_t len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
    if (len) {
        pool_shared *sh = pool->shared;
        obj = sh->items[--len];
        uint32_t k = len < LOCAL_BATCH ? len : LOCAL_BATCH;
        len -= k;
        memcpy(l->items, &sh->items[len], k * sizeof l->items[0]);
        l->count = k;
        atomic_store_explicit(POOL_NSHARED(pool), len, memory_order_relaxed);
    }
    weft__lock_release(POOL_LOCK(pool));
    return obj;
}

/* The cache is full: move its oldest batch to the shared list. With a
 * free_fn, objects over the shared bound go to victims for the caller to
 * free; returns their number. Without one, the cache may stay full when
 * memory runs out. */
static uint32_t local_spill(weft_pool *pool, pool_local *l, void **victims)
{
    uint32_t moved = (uint32_t)shared_push(pool, l->items, LOCAL_BATCH);
    uint32_t removed = moved;
    uint32_t nvictims = 0;
    if (pool->free_fn) {
        nvictims = LOCAL_BATCH - moved;
        memcpy(victims, &l->items[moved], nvictims * sizeof victims[0]);
        removed = LOCAL_BATCH;
    }
    memmove(l->items, &l->items[removed], (l->count - removed) * sizeof l->items[0]);
    l->count -= removed;
    return nvictims;
}

/* ---- Public API --------------------------------------------------------- */

void weft_pool_init(weft_pool *pool, void *(*new_fn)(void), void (*free_fn)(void *))
{
    if (!pool)
        return;
    if (registry_remove(pool)) {
        /* Initialised before and holding objects or caches: drop them. */
        pool_state *st = atomic_exchange(POOL_STATE(pool), NULL);
        if (st)
            state_release(pool, st, true);
        uint32_t len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
        pool_shared *sh = pool->shared;
        if (sh) {
            dispose(pool, sh->items, len, true);
            free(sh);
        }
    }
    /* NOTE: an unregistered pool without free_fn that still has shared
     * objects is not found above, so its array leaks here with them. */
    memset(pool, 0, sizeof *pool);
    pool->new_fn = new_fn;
    pool->free_fn = free_fn;
}

void *weft_pool_get(weft_pool *pool)
{
    if (!pool)
        return NULL;
    void *obj = NULL;
    weft__p *p = weft__p_self();
    pool_state *st = p ? current_state(pool) : NULL;
    if (st) {
        pool_local *l = &st->locals[p->id];
        obj = l->top;
        if (obj) {
            l->top = NULL;
            return obj;
        }
        if (l->count)
            return l->items[--l->count];
        obj = local_refill(pool, l);
    } else {
        obj = shared_pop(pool);
    }
    if (obj)
        return obj;
    return pool->new_fn ? pool->new_fn() : NULL;
}

void weft_pool_put(weft_pool *pool, void *obj)
{
    if (!pool || !obj)
        return;
    weft__p *p = weft__p_self();
    pool_state *st = NULL;
    if (p) {
        st = current_state(pool);
        if (!st && state_attach(pool)) {
            p = weft__p_self();
            st = current_state(pool);
        }
    }
    if (!st) {
        shared_put(pool, obj);
        return;
    }

    pool_local *l = &st->locals[p->id];
    if (!l->top) {
        l->top = obj;
        return;
    }
    if (l->count < LOCAL_CAP) {
        l->items[l->count++] = l->top;
        l->top = obj;
        return;
    }

    void *victims[LOCAL_BATCH];
    uint32_t nvictims = local_spill(pool, l, victims);
    if (l->count < LOCAL_CAP) {
        l->items[l->count++] = l->top;
        l->top = obj;
    }
    /* NOTE: otherwise the pool has no free_fn and memory ran out, so obj
     * is lost. */

    /* The cache is consistent again. free_fn may park and move this
     * coroutine to another P. */
    for (uint32_t i = 0; i < nvictims; i++)
        pool->free_fn(victims[i]);
}

/* ---- Shutdown ----------------------------------------------------------- */

/* Take a pool's caches and, when it has a free_fn, its shared list, then
 * give their objects to free_fn or keep them on the shared list. The pool
 * is off the registry. */
static void pool_drain(weft_pool *pool)
{
    pool_shared *sh = NULL;
    uint32_t len = 0;
    weft__lock_acquire(POOL_LOCK(pool));
    pool_state *st = atomic_exchange(POOL_STATE(pool), NULL);
    if (pool->free_fn) {
        sh = pool->shared;
        len = atomic_load_explicit(POOL_NSHARED(pool), memory_order_relaxed);
        pool->shared = NULL;
        atomic_store_explicit(POOL_NSHARED(pool), 0, memory_order_relaxed);
    }
    weft__lock_release(POOL_LOCK(pool));

    if (st)
        state_release(pool, st, false);
    if (sh) {
        dispose(pool, sh->items, len, false);
        free(sh);
    }

    /* Without free_fn, the shared list may have ended up empty. */
    weft__lock_acquire(POOL_LOCK(pool));
    sh = shared_detach_if_unused(pool);
    weft__lock_release(POOL_LOCK(pool));
    free(sh);
}

void weft__pool_shutdown(void)
{
    for (;;) {
        weft__lock_acquire(&registry_lock);
        weft_pool *pool = registry_head;
        if (pool) {
            void *next = atomic_load_explicit(POOL_NEXT(pool), memory_order_relaxed);
            registry_head = next == REGISTRY_END ? NULL : next;
            atomic_store_explicit(POOL_NEXT(pool), NULL, memory_order_relaxed);
        }
        weft__lock_release(&registry_lock);
        if (!pool)
            return;
        pool_drain(pool);
    }
}
