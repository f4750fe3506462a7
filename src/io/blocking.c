/*
 * weft_blocking: run a function on a thread of weft's own pool and park
 * the caller until it returns.
 *
 * The pool is separate from libuv's thread pool, so slow user functions
 * never hold up weft's file and name-resolution work. Threads start on
 * demand, while more jobs are queued than threads are idle, up to
 * WEFT_BLOCKING_MAX_THREADS; further jobs wait in the FIFO queue. A thread
 * idle for IDLE_EXIT_S seconds exits. Threads are detached, so neither
 * weft_shutdown nor process exit waits for a running function.
 *
 * A job has two references, the caller's and the worker's. The caller
 * queues it in the unlock step of its park, so the worker cannot ready it
 * before it has parked. The worker and the caller's context race for the
 * job's claim word; the loser's side only drops its reference.
 *
 * Lock order: pool_lock is a leaf; nothing is readied under it.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

#include "../ctx/ctx_internal.h"
#include "io_internal.h"
#include "weft/error.h"
#include "weft/io.h"

/* Seconds an idle pool thread waits for a job before it exits. */
#define IDLE_EXIT_S 10

typedef struct job {
    struct job *next;
    void *(*fn)(void *);
    void *arg;
    void *result;
    int err;
    weft__parker *parker;
    _Atomic uint32_t claim;
    _Atomic uint32_t refs;
} job;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pool_cond = PTHREAD_COND_INITIALIZER;
static job *queue_head;
static job *queue_tail;
static int queued;
static int nthreads;
static int nidle;

_Atomic int64_t weft__blocking_pending;

void weft__blocking_after_fork(void)
{
    /* The child has none of the pool's threads; the jobs and the lock's
     * state belong to the parent. */
    pthread_mutex_t fresh_lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t fresh_cond = PTHREAD_COND_INITIALIZER;
    pool_lock = fresh_lock;
    pool_cond = fresh_cond;
    queue_head = queue_tail = NULL;
    queued = nthreads = nidle = 0;
    atomic_store(&weft__blocking_pending, 0);
}

int weft__blocking_threads(void)
{
    pthread_mutex_lock(&pool_lock);
    int n = nthreads;
    pthread_mutex_unlock(&pool_lock);
    return n;
}

static void job_unref(job *j)
{
    if (atomic_fetch_sub(&j->refs, 1) == 1)
        free(j);
}

static void job_complete(job *j)
{
    /* The runtime's own wakeup, and counted as pending until the waiter
     * is queued, for the deadlock detector. */
    weft__thread_internal(true);
    uint32_t open = WEFT__CLAIM_OPEN;
    if (atomic_compare_exchange_strong(&j->claim, &open, WEFT__CLAIM_WAKER))
        weft__ready(j->parker);
    weft__thread_internal(false);
    atomic_fetch_sub(&weft__blocking_pending, 1);
    job_unref(j);
}

static void *worker_main(void *arg)
{
    (void)arg;
    pthread_mutex_lock(&pool_lock);
    for (;;) {
        while (!queue_head) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_sec += IDLE_EXIT_S;
            nidle++;
            int rc = pthread_cond_timedwait(&pool_cond, &pool_lock, &until);
            nidle--;
            if (rc == ETIMEDOUT && !queue_head) {
                nthreads--;
                pthread_mutex_unlock(&pool_lock);
                return NULL;
            }
        }
        job *j = queue_head;
        queue_head = j->next;
        if (!queue_head)
            queue_tail = NULL;
        queued--;
        pthread_mutex_unlock(&pool_lock);

        j->result = j->fn(j->arg);
        job_complete(j);

        pthread_mutex_lock(&pool_lock);
    }
}

/* The park's unlock step: queue the job, starting a thread if no idle one
 * will take it. Without any thread the job fails with WEFT_ENOMEM. */
static bool submit_unlock(void *arg)
{
    job *j = arg;
    atomic_fetch_add(&weft__blocking_pending, 1);
    pthread_mutex_lock(&pool_lock);
    j->next = NULL;
    if (queue_tail)
        queue_tail->next = j;
    else
        queue_head = j;
    queue_tail = j;
    queued++;
    if (queued > nidle && nthreads < WEFT_BLOCKING_MAX_THREADS) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        if (pthread_create(&t, &attr, worker_main, NULL) == 0)
            nthreads++;
        pthread_attr_destroy(&attr);
    }
    if (nthreads == 0) {
        /* No thread could start and none exists: take the job back. */
        queue_head = queue_tail = NULL;
        queued = 0;
        pthread_mutex_unlock(&pool_lock);
        j->err = WEFT_ENOMEM;
        job_complete(j);
        return true;
    }
    pthread_cond_signal(&pool_cond);
    pthread_mutex_unlock(&pool_lock);
    return true;
}

int weft_blocking(weft_ctx *ctx, void *(*fn)(void *), void *arg, void **result)
{
    if (!fn || !atomic_load(&weft__rt.running))
        return WEFT_EINVAL;
    int err = weft_ctx_err(ctx);
    if (err)
        return err;
    job *j = calloc(1, sizeof *j);
    if (!j)
        return WEFT_ENOMEM;
    j->fn = fn;
    j->arg = arg;
    j->parker = weft__parker_self();
    atomic_init(&j->claim, WEFT__CLAIM_OPEN);
    atomic_init(&j->refs, 2);

    err = weft__park_ctx(submit_unlock, j, WEFT__WAIT_BLOCKING, ctx, &j->claim);
    if (err == 0) {
        err = j->err;
        if (result && err == 0)
            *result = j->result;
    }
    job_unref(j);
    return err;
}
