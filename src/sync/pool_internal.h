/*
 * Internal header: the object pools' part in weft_shutdown.
 */
#ifndef WEFT_SYNC_POOL_INTERNAL_H
#define WEFT_SYNC_POOL_INTERNAL_H

/* Empty the per-P caches of every registered pool: give their objects,
 * and those of the shared lists, to the pools' free_fn, or move them to
 * the shared list of a pool without one. Called by weft_shutdown after the
 * Ps have stopped, so no coroutine touches a per-P cache meanwhile. */
void weft__pool_shutdown(void);

#endif /* WEFT_SYNC_POOL_INTERNAL_H */
