/*
 * Futex wrappers and the slow paths of weft__lock (see lock.h for the
 * word's states). Private futexes: every waiter is in this process.
 */
#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

/* Spin iterations before sleeping: a holder keeps the lock for well under a
 * microsecond, and a futex sleep and wake costs tens of microseconds when
 * the other thread runs on another CPU. */
#define LOCK_SPINS 40
/* Maximum pause between two looks at a held lock word. */
#define LOCK_MAX_PAUSES 32u

/* Both wrappers keep errno: they run inside API calls that succeed, and a
 * futex wait that finds the word already changed fails with EAGAIN, which
 * must not leak into the caller's errno. */
void weft__futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL,
            NULL, 0);
    errno = saved;
}

bool weft__futex_wait_until(_Atomic uint32_t *addr, uint32_t expected,
                            int64_t deadline)
{
    int saved = errno;
    /* FUTEX_WAIT_BITSET takes an absolute time on CLOCK_MONOTONIC. */
    struct timespec ts = { .tv_sec = deadline / 1000000000,
                           .tv_nsec = deadline % 1000000000 };
    long r = syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_BITSET_PRIVATE,
                     expected, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
    bool timed_out = r < 0 && errno == ETIMEDOUT;
    errno = saved;
    return !timed_out;
}

void weft__futex_wake(_Atomic uint32_t *addr, int n)
{
    int saved = errno;
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
    errno = saved;
}

void weft__lock_acquire_slow(_Atomic uint32_t *word)
{
    /* Back off exponentially between looks: a waiter that reads the word
     * in a tight loop keeps pulling its cache line away from the holder,
     * whose critical section usually writes the same line. */
    unsigned pauses = 1;
    for (int i = 0; i < LOCK_SPINS; i++) {
        uint32_t expected = 0;
        if (atomic_load_explicit(word, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(word, &expected, 1,
                                                  memory_order_acquire,
                                                  memory_order_relaxed))
            return;
        for (unsigned k = 0; k < pauses; k++)
            weft__cpu_relax();
        if (pauses < LOCK_MAX_PAUSES)
            pauses *= 2;
    }
    /* Mark the word contended. A waker that finds 2 wakes one sleeper,
     * which marks the word again when it takes the lock. */
    while (atomic_exchange_explicit(word, 2, memory_order_acquire) != 0)
        weft__futex_wait(word, 2);
}

void weft__lock_release_slow(_Atomic uint32_t *word)
{
    weft__futex_wake(word, 1);
}
