/*
 * Coroutine stacks: slabs, guard pages, per-P caches and a shared pool.
 *
 * Algorithm:
 *  1. A size class exists for each distinct usable size; the default size
 *     has one from the start. A slab of a class is one mmap of about
 *     64 MiB holding slots of (guard page + usable size). A guard page is
 *     installed once and stays for the slab's lifetime (MADV_DONTNEED keeps
 *     guards installed by MADV_GUARD_INSTALL): with mprotect when the slab
 *     is made, with MADV_GUARD_INSTALL when its stack first runs.
 *  2. weft__stack_get takes from the P's cache (cold first: the stack is
 *     only a reservation until the coroutine runs), then refills the cache
 *     from the class's shared pool in batches, then from a new slab.
 *  3. weft__stack_prefer_warm runs just before a coroutine's first switch.
 *     It trades an untouched stack for a warm one from the cache, which is
 *     refilled from the pool's warm stacks when empty. So coroutines that
 *     pile up in run queues do not each fault in a page.
 *  4. weft__stack_put pushes onto the cache's warm list; a full cache
 *     moves half of it to the shared pool. The pool keeps at most
 *     WARM_RETAIN warm stacks; beyond that, stacks are returned to the
 *     kernel with MADV_DONTNEED and kept as cold address space.
 *
 * Invariants: a stack is in exactly one place: a coroutine, one cache list
 * or one pool list. Slabs are unmapped only by weft__stacks_term.
 * In builds with <valgrind/valgrind.h>, a stack is registered with
 * Valgrind when it first runs and stays registered until its slab is
 * unmapped.
 * Locking: one mutex (pool_lock) guards every class, its lists and the slab
 * registry. Caches are owned by their P and need no lock. The MADV_DONTNEED
 * calls that cool stacks are made outside the lock.
 * Callers: any thread; caches only by their owner.
 */
#define _GNU_SOURCE
#include "stack.h"

#include <errno.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../sanitizer.h"

#ifdef WEFT_HAVE_VALGRIND
#include <valgrind/valgrind.h>
#endif

#ifndef MADV_GUARD_INSTALL
#define MADV_GUARD_INSTALL 102 /* Linux 6.13 uapi value */
#endif

/* Slab size target: large enough that a million default stacks need about
 * 4,000 mappings, small enough that a program with few coroutines does not
 * reserve much address space. */
#define SLAB_BYTES ((size_t)64 << 20)
/* Per-P cache bounds; a full list moves half to the pool in one lock. */
#define CACHE_WARM_MAX 128u
#define CACHE_COLD_MAX 64u
/* Batch taken from the pool when a cache runs dry. */
#define REFILL_BATCH 32u
/* Warm stacks the pool keeps resident; more are given back to the kernel.
 * 131,072 stacks with one touched page each is 512 MiB. */
#define WARM_RETAIN ((size_t)131072)

typedef struct slab {
    struct slab *next;
    char *base;            /* mapping start */
    size_t bytes;          /* mapping length */
    weft__stack *descs;    /* one descriptor per slot */
    size_t nstacks;        /* slots, and entries of descs */
} slab;

struct weft__stack_class {
    weft__stack_class *next;
    size_t size;             /* usable bytes */
    weft__stack_list warm;   /* the pool's free stacks of this size */
    weft__stack_list cold;
};

/* Adaptive: holders keep it for a batch move of at most a few dozen list
 * links, so a contender spins briefly instead of sleeping in the kernel. */
static pthread_mutex_t pool_lock = PTHREAD_ADAPTIVE_MUTEX_INITIALIZER_NP;
static weft__stack_class *classes;    /* guarded by pool_lock */
static weft__stack_class *default_class;
static slab *slabs;                   /* guarded by pool_lock */
static size_t page_size;
enum { GUARD_UNKNOWN = 0, GUARD_MADVISE = 1, GUARD_MPROTECT = 2 };
/* Set once, by the first slab (under pool_lock) or by weft__stacks_init;
 * read without the lock by lazy installs, hence atomic. */
static _Atomic int guard_mode;
/* Warm stacks of the default class in the pool: written under pool_lock,
 * read without it as a hint. */
static _Atomic size_t pool_warm;

size_t weft__stacks_pooled(void)
{
    size_t n = 0;
    pthread_mutex_lock(&pool_lock);
    for (weft__stack_class *c = classes; c; c = c->next)
        n += c->warm.n + c->cold.n;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

static void list_push(weft__stack_list *list, weft__stack *s)
{
    s->next = list->head;
    list->head = s;
    list->n++;
}

static weft__stack *list_pop(weft__stack_list *list)
{
    weft__stack *s = list->head;
    if (s) {
        list->head = s->next;
        list->n--;
        s->next = NULL;
    }
    return s;
}

/* Update the hint after c's warm list changed. Called with pool_lock held. */
static void publish_warm(weft__stack_class *c)
{
    if (c == default_class)
        atomic_store_explicit(&pool_warm, c->warm.n, memory_order_relaxed);
}

/* Tell Valgrind that s is a stack, so that it takes a switch to s for a
 * change of stacks. Otherwise memcheck treats a move of the stack pointer
 * by less than 2,000,000 bytes (its --max-stackframe default) as one huge
 * frame, marks the memory in between as unaddressable and reports every
 * access to another coroutine's stack. Outside Valgrind the request costs
 * a few instructions. */
static void valgrind_register(weft__stack *s)
{
#ifdef WEFT_HAVE_VALGRIND
    if (!s->valgrind_registered) {
        s->valgrind_id = VALGRIND_STACK_REGISTER(s->lo, s->lo + s->size - 1);
        s->valgrind_registered = true;
    }
#else
    (void)s;
#endif
}

static void valgrind_deregister(weft__stack *s)
{
#ifdef WEFT_HAVE_VALGRIND
    if (s->valgrind_registered) {
        VALGRIND_STACK_DEREGISTER(s->valgrind_id);
        s->valgrind_registered = false;
    }
#else
    (void)s;
#endif
}

size_t weft__stack_round(size_t size)
{
    size_t page = page_size ? page_size : (size_t)sysconf(_SC_PAGESIZE);
    if (size < WEFT__STACK_MIN || size > WEFT__STACK_MAX)
        return 0;
    return (size + page - 1) & ~(page - 1);
}

static weft__stack_class *class_find(size_t size)
{
    for (weft__stack_class *c = classes; c; c = c->next)
        if (c->size == size)
            return c;
    weft__stack_class *c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->size = size;
    c->next = classes;
    classes = c;
    return c;
}

int weft__stacks_init(size_t default_size, bool force_mprotect)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);
    atomic_store(&guard_mode, force_mprotect ? GUARD_MPROTECT : GUARD_UNKNOWN);
    pthread_mutex_lock(&pool_lock);
    default_class = class_find(default_size);
    pthread_mutex_unlock(&pool_lock);
    return default_class ? 0 : -ENOMEM;
}

void weft__stacks_term(void)
{
    pthread_mutex_lock(&pool_lock);
    while (slabs) {
        slab *s = slabs;
        slabs = s->next;
        for (size_t i = 0; i < s->nstacks; i++)
            valgrind_deregister(&s->descs[i]);
        weft__asan_unpoison(s->base, s->bytes);
        munmap(s->base, s->bytes);
        free(s->descs);
        free(s);
    }
    while (classes) {
        weft__stack_class *c = classes;
        classes = c->next;
        free(c);
    }
    default_class = NULL;
    atomic_store(&pool_warm, 0);
    pthread_mutex_unlock(&pool_lock);
}

static int guard_install(char *page)
{
    int mode = atomic_load_explicit(&guard_mode, memory_order_relaxed);
    if (mode != GUARD_MPROTECT) {
        if (madvise(page, page_size, MADV_GUARD_INSTALL) == 0) {
            if (mode == GUARD_UNKNOWN)
                atomic_store(&guard_mode, GUARD_MADVISE);
            return 0;
        }
        if (mode == GUARD_MADVISE)
            return -1;
        atomic_store(&guard_mode, GUARD_MPROTECT); /* older kernel: EINVAL */
    }
    return mprotect(page, page_size, PROT_NONE);
}

/* Map a new slab for c and put all its slots on c's cold list.
 * Called with pool_lock held. */
static int slab_grow(weft__stack_class *c)
{
    size_t slot = c->size + page_size;
    size_t n = SLAB_BYTES / slot;
    if (n == 0)
        n = 1;
    slab *s = calloc(1, sizeof *s);
    weft__stack *descs = calloc(n, sizeof *descs);
    size_t bytes = n * slot;
    char *base = MAP_FAILED;
    if (!s || !descs)
        goto fail;
    base = mmap(NULL, bytes, PROT_READ | PROT_WRITE,
                MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (base == MAP_FAILED)
        goto fail;
    /* Huge pages would commit 2 MiB where a stack touches 4 KiB. */
    madvise(base, bytes, MADV_NOHUGEPAGE);
    /* With MADV_GUARD_INSTALL (probed on the first slab), a guard is
     * installed when its stack first runs. Most reservations of a burst of
     * spawns are traded for warm stacks and never run, and an install is a
     * system call (about 1.5 us on the development machine). mprotect
     * guards are made now instead, because they use up mappings, and
     * running out must show as WEFT_ENOMEM from weft_go, not later. */
    bool probed = false;
    if (atomic_load(&guard_mode) == GUARD_UNKNOWN) {
        if (guard_install(base) != 0)
            goto fail;
        probed = true;
    }
    bool lazy = atomic_load(&guard_mode) == GUARD_MADVISE;
    for (size_t i = 0; i < n && !lazy; i++) {
        /* Out of mappings or memory: give the slab back. */
        if (guard_install(base + i * slot) != 0)
            goto fail;
    }
    s->base = base;
    s->bytes = bytes;
    s->descs = descs;
    s->nstacks = n;
    s->next = slabs;
    slabs = s;
    for (size_t i = n; i-- > 0;) {
        weft__stack *d = &descs[i];
        d->lo = base + i * slot + page_size;
        d->size = c->size;
        d->cls = c;
        d->touched = false;
        d->guarded = !lazy || (probed && i == 0);
        list_push(&c->cold, d);
    }
    return 0;

fail:
    if (base != MAP_FAILED)
        munmap(base, bytes);
    free(s);
    free(descs);
    return -ENOMEM;
}

/* Pop one stack of class c from the pool, growing it when empty.
 * Called with pool_lock held. */
static weft__stack *pool_pop(weft__stack_class *c)
{
    weft__stack *s = list_pop(&c->cold);
    if (!s)
        s = list_pop(&c->warm);
    if (!s && slab_grow(c) == 0)
        s = list_pop(&c->cold);
    publish_warm(c);
    return s;
}

/* Give a list of stacks to the pool; warm ones beyond WARM_RETAIN are
 * released to the kernel first. */
static void pool_push_list(weft__stack *list)
{
    weft__stack *release = NULL;

    pthread_mutex_lock(&pool_lock);
    while (list) {
        weft__stack *s = list;
        list = s->next;
        weft__stack_class *c = s->cls;
        if (!s->touched) {
            list_push(&c->cold, s);
        } else if (c->warm.n < WARM_RETAIN) {
            list_push(&c->warm, s);
            publish_warm(c);
        } else {
            s->next = release;
            release = s;
        }
    }
    pthread_mutex_unlock(&pool_lock);

    if (!release)
        return;
    for (weft__stack *s = release; s; s = s->next) {
        weft__asan_unpoison(s->lo, s->size);
        madvise(s->lo, s->size, MADV_DONTNEED);
        s->touched = false;
    }
    pool_push_list(release);
}

/* Move up to REFILL_BATCH stacks of the default class from the pool to
 * cache: warm ones when want_warm, else cold ones, or warm ones when the
 * pool has no cold ones, growing the pool when it is empty. Returns false
 * when nothing could be moved. Called with pool_lock held. */
static bool cache_refill(weft__stack_cache *cache, bool want_warm)
{
    weft__stack_class *c = default_class;
    if (!want_warm && !c->cold.head && !c->warm.head && slab_grow(c) != 0)
        return false;
    bool moved = false;
    for (uint32_t i = 0; i < REFILL_BATCH; i++) {
        weft__stack *r = want_warm ? NULL : list_pop(&c->cold);
        if (r) {
            list_push(&cache->cold, r);
        } else if ((r = list_pop(&c->warm))) {
            list_push(&cache->warm, r);
        } else {
            break;
        }
        moved = true;
    }
    publish_warm(c);
    return moved;
}

weft__stack *weft__stack_get(weft__stack_cache *cache, size_t size)
{
    weft__stack *s;
    bool is_default = size == 0 || (default_class && size == default_class->size);
    if (is_default && cache) {
        if (!cache->cold.head && !cache->warm.head) {
            pthread_mutex_lock(&pool_lock);
            bool moved = default_class && cache_refill(cache, false);
            pthread_mutex_unlock(&pool_lock);
            if (!moved)
                return NULL;
        }
        /* Cold first: at spawn the stack is only a reservation, and warm
         * ones are kept for coroutines about to run. */
        s = list_pop(&cache->cold);
        return s ? s : list_pop(&cache->warm);
    }

    pthread_mutex_lock(&pool_lock);
    weft__stack_class *c = is_default ? default_class : class_find(size);
    s = c ? pool_pop(c) : NULL;
    pthread_mutex_unlock(&pool_lock);
    return s;
}

/* Detach the older half of list and return it as a chain. */
static weft__stack *split_half(weft__stack_list *list)
{
    size_t keep = list->n / 2;
    weft__stack *p = list->head;
    for (size_t i = 1; i < keep; i++)
        p = p->next;
    weft__stack *rest = p->next;
    p->next = NULL;
    list->n = keep;
    return rest;
}

void weft__stack_put(weft__stack_cache *cache, weft__stack *s)
{
    if (!cache || s->cls != default_class) {
        s->next = NULL;
        pool_push_list(s);
        return;
    }
    weft__stack_list *list = s->touched ? &cache->warm : &cache->cold;
    size_t max = s->touched ? CACHE_WARM_MAX : CACHE_COLD_MAX;
    list_push(list, s);
    if (list->n > max)
        pool_push_list(split_half(list));
}

weft__stack *weft__stack_prefer_warm(weft__stack_cache *cache, weft__stack *s)
{
    if (!s->touched && cache && s->cls == default_class) {
        if (!cache->warm.head &&
            atomic_load_explicit(&pool_warm, memory_order_relaxed) > 0) {
            /* The pool has warm stacks, so fetch a batch rather than fault
             * in a fresh page. The hint may be stale; the refill checks
             * again under the lock. */
            pthread_mutex_lock(&pool_lock);
            cache_refill(cache, true);
            pthread_mutex_unlock(&pool_lock);
        }
        weft__stack *warm = list_pop(&cache->warm);
        if (warm) {
            weft__stack_put(cache, s);
            s = warm;
        }
    }
    if (!s->guarded) {
        if (guard_install(s->lo - page_size) != 0)
            weft__stack_guard_failed(s->lo - page_size);
        s->guarded = true;
    }
    valgrind_register(s);
    s->touched = true;
    weft__asan_unpoison(s->lo, s->size);
    return s;
}

bool weft__stack_guard_is_madvise(void)
{
    return atomic_load(&guard_mode) == GUARD_MADVISE;
}
