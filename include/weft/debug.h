/*
 * weft/debug.h: diagnostics: counters, a dump of every coroutine, and a
 * leak check for tests.
 *
 * Wait reasons in dumps use Go's words ("chan receive", "IO wait",
 * "sync.Mutex.Lock", ...). Wait times are measured with a coarse clock
 * and read at scheduling points, so they are approximate: a few
 * milliseconds, or more after a coroutine computed long without yielding.
 *
 * WEFT_DEBUG switches read by weft_init: deadlock=0 turns the deadlock
 * detector off; dump=sigquit makes SIGQUIT print weft_dump to stderr and
 * exit with status 2.
 */
#ifndef WEFT_DEBUG_H
#define WEFT_DEBUG_H

#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Counters of the running runtime (zero without one). */
typedef struct weft_stats {
    int64_t coroutines;     /* live user coroutines */
    int64_t spawned;        /* user coroutines spawned since start */
    int64_t switches;       /* switches into a coroutine since start */
    int64_t steals;         /* steal operations that took work */
    int64_t parks;          /* parks since start */
    int64_t global_pushes;  /* coroutines put on the global run queue */
    int64_t idle_wakeups;   /* idle Ps woken to look for work */
    int64_t stacks_cached;  /* free stacks in the shared pool, per-P caches not counted */
    int64_t timers_pending; /* sleeps, timers and deadlines waiting to fire */
} weft_stats;

void weft_stats_get(weft_stats *out);

/* Print the Ps and then one block per coroutine: id, name, state, wait
 * reason and for how long, spawn site. Nothing without a runtime. A
 * snapshot taken without stopping the Ps, so a busy program's dump may
 * mix moments. */
void weft_dump(FILE *out);

/* The number of coroutines other than the caller still alive once they
 * have all finished or timeout_ns has passed, whichever comes first (in
 * the style of Go's goleak). When it is not 0 the leaked coroutines' dump
 * blocks go to stderr. 0 without a runtime. */
int64_t weft_leakcheck(int64_t timeout_ns);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_DEBUG_H */
