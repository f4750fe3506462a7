/*
 * Internal header: futex wait/wake and a small zero-initialised mutex.
 *
 * weft__lock is the runtime's own short-hold lock (the run-queue overflow
 * list, wait-group waiter lists and the like). It is a 32-bit word: 0 free,
 * 1 held, 2 held with sleepers. Lock spins briefly and then sleeps on the
 * futex. Unlock wakes one sleeper only when the word was 2. Holders never
 * park or call user code, so a coroutine holding it keeps its thread for a
 * few hundred nanoseconds at most.
 */
#ifndef WEFT_SCHED_LOCK_H
#define WEFT_SCHED_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

/* Sleep while *addr == expected (spurious returns allowed). */
void weft__futex_wait(_Atomic uint32_t *addr, uint32_t expected);
/* Sleep while *addr == expected, until the CLOCK_MONOTONIC deadline in
 * nanoseconds. Returns false once the deadline has passed. */
bool weft__futex_wait_until(_Atomic uint32_t *addr, uint32_t expected,
                            int64_t deadline);
/* Wake up to n threads sleeping on addr. */
void weft__futex_wake(_Atomic uint32_t *addr, int n);

void weft__lock_acquire_slow(_Atomic uint32_t *word);
void weft__lock_release_slow(_Atomic uint32_t *word);

static inline void weft__lock_acquire(_Atomic uint32_t *word)
{
    uint32_t expected = 0;
    if (!atomic_compare_exchange_strong_explicit(word, &expected, 1,
                                                 memory_order_acquire,
                                                 memory_order_relaxed))
        weft__lock_acquire_slow(word);
}

static inline void weft__lock_release(_Atomic uint32_t *word)
{
    /* Pairs with the acquire in weft__lock_acquire. */
    if (atomic_exchange_explicit(word, 0, memory_order_release) == 2)
        weft__lock_release_slow(word);
}

static inline void weft__cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ volatile("yield");
#endif
}

#endif /* WEFT_SCHED_LOCK_H */
