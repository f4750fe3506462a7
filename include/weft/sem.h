/*
 * weft/sem.h: weighted semaphore (golang.org/x/sync/semaphore), FIFO: a
 * large request at the head of the queue is not bypassed by small ones.
 * Unlike the other sync types it needs weft_sem_init before use.
 */
#ifndef WEFT_SEM_H
#define WEFT_SEM_H

#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_ctx weft_ctx;

typedef struct weft_sem {
    int64_t size;            /* private */
    int64_t cur;             /* private: weight held */
    uint32_t lock;           /* private: guards cur and the fields below */
    uint32_t generation;     /* private: the runtime the queued coroutines run in */
    uint64_t arrivals;       /* private: arrival counter, orders the two queues */
    void *thread_head;       /* private: parked plain threads, FIFO */
    void *thread_tail;       /* private */
    void *coroutine_head;    /* private: parked coroutines, FIFO */
    void *coroutine_tail;    /* private */
} weft_sem;

int weft_sem_init(weft_sem *s, int64_t n);                    /* 0, WEFT_EINVAL if n < 0 */
/* 0, or the context's error (checked first: an ended context fails even
 * when the weight is free); WEFT_EINVAL if s is NULL, w < 0 or w > n (a
 * zeroed weft_sem acts as size 0). When a grant and a cancellation race,
 * a 0 result keeps the weight, an error keeps none. */
int weft_sem_acquire(weft_ctx *ctx, weft_sem *s, int64_t w);
bool weft_sem_try_acquire(weft_sem *s, int64_t w);             /* false while waiters are queued */
/* Releasing more than is held, a negative weight or a NULL semaphore is
 * fatal. */
void weft_sem_release(weft_sem *s, int64_t w);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_SEM_H */
