/*
 * weft/pool.h: a cache of reusable objects (Go's sync.Pool), with a cache
 * per P so get and put take no lock on the fast path. Ready to use when
 * zero-initialised, and then get returns NULL when empty. weft_pool_init
 * sets new_fn, which makes an object for an empty get, and free_fn, which
 * frees the objects the pool drops when it trims its caches and all of
 * them when the runtime shuts down.
 *
 * Rules:
 *  - The pool may hand any object it holds to free_fn at any time: when
 *    its shared list grows past its bound, at weft_shutdown, and when
 *    weft_pool_init is called again on it. Never keep a pointer to an
 *    object after putting it.
 *  - Without free_fn the pool drops nothing: it keeps every object put,
 *    across weft_shutdown as well, so get can return them later.
 *  - From the first put by a coroutine, or the first put to a pool with a
 *    free_fn, until weft_shutdown, the pool is registered with the runtime,
 *    so its memory must stay valid until then. Give pools static storage
 *    duration, or keep them until weft_shutdown has returned.
 *  - An object put from a plain thread while weft_shutdown runs may stay
 *    in the pool until the next shutdown.
 *  - Any coroutine or thread may call get and put at once, and new_fn and
 *    free_fn may block or park.
 */
#ifndef WEFT_POOL_H
#define WEFT_POOL_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_pool {
    void *(*new_fn)(void);   /* private */
    void (*free_fn)(void *); /* private */
    void *state;             /* private: per-P caches of the running runtime */
    uint32_t lock;           /* private: guards shared and nshared */
    uint32_t nshared;        /* private: objects in shared */
    void *shared;            /* private: objects any thread may take */
    void *next;              /* private: registry link */
} weft_pool;

/* Set up p with new_fn (may be NULL) and free_fn (may be NULL). Called on
 * a pool that contains objects, it first drops them, giving them to the old
 * free_fn if there was one. Not to be called while others use the pool. */
void weft_pool_init(weft_pool *p, void *(*new_fn)(void), void (*free_fn)(void *));
void *weft_pool_get(weft_pool *p);           /* a cached object, or new_fn(), or NULL */
void weft_pool_put(weft_pool *p, void *obj); /* obj NULL does nothing */

#ifdef __cplusplus
}
#endif

#endif /* WEFT_POOL_H */
