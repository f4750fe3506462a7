/*
 * Internal header: coroutine stacks.
 *
 * Stacks are carved from large anonymous mappings ("slabs") reserved with
 * MAP_NORESERVE, so a stack costs address space until its pages are
 * touched. Each slot is a guard page followed by the usable stack. The
 * guard comes from madvise(MADV_GUARD_INSTALL) where the kernel has it
 * (Linux 6.13 and later), which adds no mapping. Elsewhere it comes from
 * mprotect, which splits the mapping in two for every stack.
 *
 * Free stacks are "warm" (their pages were touched and are still resident)
 * or "cold" (never touched, or given back to the kernel with
 * MADV_DONTNEED). Warm stacks are preferred, because touching a fresh page
 * costs a page fault, several microseconds on virtual machines.
 */
#ifndef WEFT_ARCH_STACK_H
#define WEFT_ARCH_STACK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct weft__stack_class weft__stack_class;

/* One stack slot. The descriptor lives outside the stack, so handing out a
 * cold stack does not touch its memory. */
typedef struct weft__stack {
    struct weft__stack *next;  /* free-list link, used by the list's owner */
    char *lo;                  /* lowest usable byte, just above the guard */
    size_t size;               /* usable bytes, a multiple of the page size */
    weft__stack_class *cls;    /* size class; fixed */
    bool touched;              /* a coroutine has run on it since last DONTNEED */
    bool guarded;              /* its guard page is installed */
    bool valgrind_registered;  /* announced to Valgrind, as valgrind_id */
    unsigned valgrind_id;      /* from VALGRIND_STACK_REGISTER */
} weft__stack;

/* A LIFO list of free stacks, linked through their descriptors. */
typedef struct weft__stack_list {
    weft__stack *head;   /* most recently pushed first */
    size_t n;            /* stacks on the list */
} weft__stack_list;

/* Per-P cache of default-size stacks, touched only by the P's owner. */
typedef struct weft__stack_cache {
    weft__stack_list warm;   /* touched, still resident */
    weft__stack_list cold;   /* reserved address space, not yet touched */
} weft__stack_cache;

#define WEFT__STACK_MIN ((size_t)16 * 1024)
#define WEFT__STACK_MAX ((size_t)1 << 30)

/* Set the default stack size (already validated) and reset all state.
 * force_mprotect makes guards with mprotect even where the kernel offers
 * MADV_GUARD_INSTALL (WEFT_DEBUG=guard=mprotect, for testing). */
int weft__stacks_init(size_t default_size, bool force_mprotect);
/* Unmap every slab. No stack may be in use. */
void weft__stacks_term(void);

/* Round a requested size up to whole pages; 0 if it is outside
 * [WEFT__STACK_MIN, WEFT__STACK_MAX]. */
size_t weft__stack_round(size_t size);

/* Take a stack of size bytes (0: the default), using cache when it is
 * non-NULL and the size is the default. NULL when out of memory or address
 * space. */
weft__stack *weft__stack_get(weft__stack_cache *cache, size_t size);

/* Free stacks in the shared pool, every size class. */
size_t weft__stacks_pooled(void);

/* Return a stack. cache may be NULL. */
void weft__stack_put(weft__stack_cache *cache, weft__stack *s);

/* Prepare s for a coroutine's first run: trade an untouched s for a warm
 * stack of the same size from cache when there is one, and install its
 * guard if needed. Returns the stack to run on, marked touched. */
weft__stack *weft__stack_prefer_warm(weft__stack_cache *cache, weft__stack *s);

/* Report that a guard page could not be installed, and abort. Defined in
 * the scheduler, next to weft__fatal. */
_Noreturn void weft__stack_guard_failed(void *guard);

/* True when guard pages come from MADV_GUARD_INSTALL. */
bool weft__stack_guard_is_madvise(void);

#endif /* WEFT_ARCH_STACK_H */
