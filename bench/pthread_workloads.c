/*
 * The benchmark workloads on plain POSIX threads, the baseline for weft.
 *
 * Every thread gets a 64 KiB stack (THREAD_STACK_BYTES) so that thousands
 * of them fit in memory and in vm.max_map_count. The workloads use each
 * primitive the way a pthreads program would: pthread_join to wait for
 * threads, a mutex and condition variable to park and hand off, and a
 * bounded queue built from those (pqueue) where weft and Go use channels.
 * The mutex and rwmutex workloads use pthread_mutex_t and pthread_rwlock_t.
 * wg-fanout counts detached threads down under a mutex, and context uses a
 * malloc'd flag with a mutex and a condition variable, as pthreads has no
 * wait group and no context.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

#define THREAD_STACK_BYTES ((size_t)64 * 1024)

static pthread_attr_t small_stack_attr;

static void attr_init_or_fail(void)
{
    int err = pthread_attr_init(&small_stack_attr);
    if (err == 0)
        err = pthread_attr_setstacksize(&small_stack_attr, THREAD_STACK_BYTES);
    if (err != 0)
        bench_fail("pthread_attr_setstacksize(%zu) failed: %s",
                   THREAD_STACK_BYTES, strerror(err));
}

static void create_or_fail(pthread_t *thread, void *(*fn)(void *), void *arg)
{
    int err = pthread_create(thread, &small_stack_attr, fn, arg);
    if (err == EAGAIN)
        bench_fail("pthread_create failed: %s (check ulimit -u, "
                   "kernel.threads-max and vm.max_map_count)", strerror(err));
    if (err != 0)
        bench_fail("pthread_create failed: %s", strerror(err));
}

static void join_or_fail(pthread_t thread)
{
    int err = pthread_join(thread, NULL);
    if (err != 0)
        bench_fail("pthread_join failed: %s", strerror(err));
}

static pthread_t *thread_array(int64_t count)
{
    pthread_t *threads = calloc((size_t)count, sizeof *threads);
    if (!threads)
        bench_fail("out of memory for %lld thread handles", (long long)count);
    return threads;
}

/* ---- spawn: create count threads, then join them all ------------------- */

static void *empty_thread(void *arg)
{
    return arg;
}

static double run_spawn(int64_t count)
{
    pthread_t *threads = thread_array(count);
    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < count; i++)
        create_or_fail(&threads[i], empty_thread, NULL);
    for (int64_t i = 0; i < count; i++)
        join_or_fail(threads[i]);
    int64_t elapsed = bench_now_ns() - start;
    free(threads);
    return (double)elapsed / (double)count;
}

/* ---- yield: condition-variable ping-pong on one CPU -------------------- */

/* Two threads pinned to the same CPU pass a turn back and forth, so every
 * handoff is one context switch between them. sched_yield would not do,
 * because the kernel may return to the caller without switching. */
typedef struct pingpong {
    pthread_mutex_t lock;
    pthread_cond_t turn_changed;
    int turn;             /* 0 or 1: the thread allowed to go */
    int64_t handoffs;     /* turns each thread passes on */
    int cpu;
} pingpong;

typedef struct pingpong_player {
    pingpong *game;
    int id;               /* 0 or 1, compared with pingpong.turn */
} pingpong_player;

static void *pingpong_thread(void *arg)
{
    pingpong_player *player = arg;
    pingpong *game = player->game;

    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(game->cpu, &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof set, &set);
    if (err != 0)
        bench_fail("pthread_setaffinity_np(CPU %d) failed: %s", game->cpu,
                   strerror(err));

    pthread_mutex_lock(&game->lock);
    for (int64_t i = 0; i < game->handoffs; i++) {
        while (game->turn != player->id)
            pthread_cond_wait(&game->turn_changed, &game->lock);
        game->turn = 1 - player->id;
        pthread_cond_signal(&game->turn_changed);
    }
    pthread_mutex_unlock(&game->lock);
    return NULL;
}

/* The first CPU in this process's affinity mask. */
static int first_usable_cpu(void)
{
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) != 0)
        bench_fail("sched_getaffinity failed: %s", strerror(errno));
    for (int cpu = 0; cpu < CPU_SETSIZE; cpu++)
        if (CPU_ISSET(cpu, &set))
            return cpu;
    bench_fail("the affinity mask of this process is empty");
}

/* count is the number of switches, so each thread hands off count / 2
 * times. */
static double run_yield(int64_t count)
{
    pingpong game = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .turn_changed = PTHREAD_COND_INITIALIZER,
        .turn = 0,
        .handoffs = count / 2,
        .cpu = first_usable_cpu(),
    };
    pingpong_player players[2] = { { &game, 0 }, { &game, 1 } };
    pthread_t threads[2];

    int64_t start = bench_now_ns();
    create_or_fail(&threads[0], pingpong_thread, &players[0]);
    create_or_fail(&threads[1], pingpong_thread, &players[1]);
    join_or_fail(threads[0]);
    join_or_fail(threads[1]);
    return (double)(bench_now_ns() - start) / (double)(2 * game.handoffs);
}

/* ---- skynet: a tree of threads --------------------------------------- */

typedef struct pskynet_node {
    int64_t first_leaf;
    int64_t leaves;
    int64_t sum;          /* written by the node's own thread */
} pskynet_node;

/* Compute the subtree's sum into node->sum. An inner node creates
 * SKYNET_FANOUT child threads and joins them, as a pthreads program would,
 * where weft uses a wait group. */
static void *pskynet_thread(void *arg)
{
    pskynet_node *node = arg;
    if (node->leaves == 1) {
        node->sum = node->first_leaf;
        return NULL;
    }

    pskynet_node children[SKYNET_FANOUT];
    pthread_t threads[SKYNET_FANOUT];
    int64_t per_child = node->leaves / SKYNET_FANOUT;
    for (int i = 0; i < SKYNET_FANOUT; i++) {
        children[i] = (pskynet_node){
            .first_leaf = node->first_leaf + i * per_child,
            .leaves = per_child,
        };
        create_or_fail(&threads[i], pskynet_thread, &children[i]);
    }
    node->sum = 0;
    for (int i = 0; i < SKYNET_FANOUT; i++) {
        join_or_fail(threads[i]);
        node->sum += children[i].sum;
    }
    return NULL;
}

static double run_skynet(int64_t leaves)
{
    pskynet_node root = { .first_leaf = 0, .leaves = leaves };
    pthread_t thread;

    int64_t start = bench_now_ns();
    create_or_fail(&thread, pskynet_thread, &root);
    join_or_fail(thread);
    int64_t elapsed = bench_now_ns() - start;

    int64_t expected = skynet_expected_sum(leaves);
    if (root.sum != expected)
        bench_fail("pthreads skynet with %lld leaves returned sum %lld, "
                   "expected %lld", (long long)leaves, (long long)root.sum,
                   (long long)expected);
    return (double)elapsed / 1e6;
}

/* ---- memory: resident memory of threads parked on a condition variable - */

typedef struct park_state {
    pthread_mutex_t lock;
    pthread_cond_t changed;
    int64_t parked;       /* threads that have reached the wait */
    bool released;
} park_state;

static void *parked_thread(void *arg)
{
    park_state *state = arg;
    pthread_mutex_lock(&state->lock);
    state->parked++;
    pthread_cond_broadcast(&state->changed);
    while (!state->released)
        pthread_cond_wait(&state->changed, &state->lock);
    pthread_mutex_unlock(&state->lock);
    return NULL;
}

static bench_result run_memory(int64_t count)
{
    park_state state = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .changed = PTHREAD_COND_INITIALIZER,
    };
    pthread_t *threads = thread_array(count);
    bench_memory before = bench_memory_read();

    for (int64_t i = 0; i < count; i++)
        create_or_fail(&threads[i], parked_thread, &state);
    pthread_mutex_lock(&state.lock);
    while (state.parked < count)
        pthread_cond_wait(&state.changed, &state.lock);
    pthread_mutex_unlock(&state.lock);
    bench_memory after = bench_memory_read();

    pthread_mutex_lock(&state.lock);
    state.released = true;
    pthread_cond_broadcast(&state.changed);
    pthread_mutex_unlock(&state.lock);
    for (int64_t i = 0; i < count; i++)
        join_or_fail(threads[i]);
    free(threads);
    return bench_memory_per_task(before, after, count);
}

/* ---- a bounded queue: the thread equivalent of a channel --------------- */

/* A FIFO of int64_t values guarded by a mutex, with condition variables to
 * wait for an item or for room. Capacity 0 is a rendezvous, like an
 * unbuffered channel: the queue keeps one slot, and pqueue_put returns only
 * after a receiver has taken the value (a handshake on the writable
 * condition). Several queues may share one mutex and one readable
 * condition, so that one thread can wait for an item on any of them. */
typedef struct pqueue {
    pthread_mutex_t *lock;       /* the queue's own or a shared one */
    pthread_cond_t *readable;    /* an item arrived or the queue closed */
    pthread_cond_t writable;     /* an item left: room, or a handshake done */
    int64_t *slots;
    size_t nslots;               /* capacity, or 1 for a rendezvous */
    bool rendezvous;
    size_t head;                 /* index of the oldest item */
    size_t len;
    uint64_t received;           /* items taken since creation */
    bool closed;
    int64_t one_slot;            /* storage when nslots is 1 */
    pthread_mutex_t own_lock;
    pthread_cond_t own_readable;
} pqueue;

static void check_pthread(int err, const char *call)
{
    if (err != 0)
        bench_fail("%s failed: %s", call, strerror(err));
}

/* Initialise q with capacity cap. shared_lock and shared_readable are both
 * NULL for a queue of its own, or both set for a queue in a group that one
 * receiver waits on. */
static void pqueue_init(pqueue *q, size_t cap, pthread_mutex_t *shared_lock,
                        pthread_cond_t *shared_readable)
{
    memset(q, 0, sizeof *q);
    q->rendezvous = cap == 0;
    q->nslots = cap == 0 ? 1 : cap;
    if (q->nslots == 1) {
        q->slots = &q->one_slot;
    } else {
        q->slots = calloc(q->nslots, sizeof *q->slots);
        if (!q->slots)
            bench_fail("out of memory for a queue of %zu items", q->nslots);
    }
    if (shared_lock) {
        q->lock = shared_lock;
        q->readable = shared_readable;
    } else {
        check_pthread(pthread_mutex_init(&q->own_lock, NULL),
                      "pthread_mutex_init");
        check_pthread(pthread_cond_init(&q->own_readable, NULL),
                      "pthread_cond_init");
        q->lock = &q->own_lock;
        q->readable = &q->own_readable;
    }
    check_pthread(pthread_cond_init(&q->writable, NULL), "pthread_cond_init");
}

static void pqueue_destroy(pqueue *q)
{
    pthread_cond_destroy(&q->writable);
    if (q->lock == &q->own_lock) {
        pthread_cond_destroy(&q->own_readable);
        pthread_mutex_destroy(&q->own_lock);
    }
    if (q->slots != &q->one_slot)
        free(q->slots);
}

/* Append value, waiting for room, and on a rendezvous queue also until a
 * receiver has taken it. Putting to a closed queue is a bug in the
 * workload. The caller holds q->lock. */
static void pqueue_put_locked(pqueue *q, int64_t value)
{
    while (q->len == q->nslots && !q->closed)
        pthread_cond_wait(&q->writable, q->lock);
    if (q->closed)
        bench_fail("put of %lld to a closed queue", (long long)value);
    q->slots[(q->head + q->len) % q->nslots] = value;
    q->len++;
    uint64_t ticket = q->received + q->len;
    pthread_cond_signal(q->readable);
    while (q->rendezvous && q->received < ticket)
        pthread_cond_wait(&q->writable, q->lock);
}

static void pqueue_put(pqueue *q, int64_t value)
{
    pthread_mutex_lock(q->lock);
    pqueue_put_locked(q, value);
    pthread_mutex_unlock(q->lock);
}

/* Take the oldest item. The caller holds q->lock and has checked that
 * q->len is not 0. */
static int64_t pqueue_take_locked(pqueue *q)
{
    int64_t value = q->slots[q->head];
    q->head = (q->head + 1) % q->nslots;
    q->len--;
    q->received++;
    /* On a rendezvous queue, the waiting sender and any sender waiting for
     * the slot share the condition, so every one of them must check. */
    if (q->rendezvous)
        pthread_cond_broadcast(&q->writable);
    else
        pthread_cond_signal(&q->writable);
    return value;
}

/* Receive into value. Returns false when the queue is closed and drained. */
static bool pqueue_get(pqueue *q, int64_t *value)
{
    pthread_mutex_lock(q->lock);
    while (q->len == 0 && !q->closed)
        pthread_cond_wait(q->readable, q->lock);
    bool got = q->len > 0;
    if (got)
        *value = pqueue_take_locked(q);
    pthread_mutex_unlock(q->lock);
    return got;
}

static void pqueue_close(pqueue *q)
{
    pthread_mutex_lock(q->lock);
    q->closed = true;
    pthread_cond_broadcast(q->readable);
    pthread_cond_broadcast(&q->writable);
    pthread_mutex_unlock(q->lock);
}

/* Receive from whichever of the n queues, which share one lock and one
 * readable condition, has an item, scanning from *start so that no queue
 * starves. Returns the queue's index, or -1 once every queue is closed and
 * drained. */
static int pqueue_select_get(pqueue *const *queues, int n, int *start,
                             int64_t *value)
{
    pthread_mutex_lock(queues[0]->lock);
    for (;;) {
        bool all_closed = true;
        for (int k = 0; k < n; k++) {
            int i = (*start + k) % n;
            if (queues[i]->len > 0) {
                *value = pqueue_take_locked(queues[i]);
                *start = (i + 1) % n;
                pthread_mutex_unlock(queues[0]->lock);
                return i;
            }
            all_closed &= queues[i]->closed;
        }
        if (all_closed) {
            pthread_mutex_unlock(queues[0]->lock);
            return -1;
        }
        pthread_cond_wait(queues[0]->readable, queues[0]->lock);
    }
}

/* Restrict this process, and the threads it creates afterwards, to its
 * first cpus usable CPUs, or to all of them when it has fewer. */
static void limit_cpus(int cpus)
{
    cpu_set_t usable, chosen;
    if (sched_getaffinity(0, sizeof usable, &usable) != 0)
        bench_fail("sched_getaffinity failed: %s", strerror(errno));
    CPU_ZERO(&chosen);
    int nchosen = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE && nchosen < cpus; cpu++) {
        if (CPU_ISSET(cpu, &usable)) {
            CPU_SET(cpu, &chosen);
            nchosen++;
        }
    }
    if (nchosen == 0)
        bench_fail("the affinity mask of this process is empty");
    if (sched_setaffinity(0, sizeof chosen, &chosen) != 0)
        bench_fail("sched_setaffinity to %d CPUs failed: %s", nchosen,
                   strerror(errno));
}

/* ---- skynet-chan: a tree of threads reporting on queues ---------------- */

typedef struct pskynet_chan_node {
    int64_t first_leaf;
    int64_t leaves;
    pqueue *out;
} pskynet_chan_node;

/* Put this subtree's sum on the parent's rendezvous queue. An inner node
 * creates a queue and SKYNET_FANOUT child threads that put on it, receives
 * their sums and then joins them. The join frees each thread's resources.
 * Detached threads would not do, because a child may still be inside
 * pqueue_put when the queue is destroyed. */
static void *pskynet_chan_thread(void *arg)
{
    pskynet_chan_node *node = arg;
    int64_t subtotal = node->first_leaf;

    if (node->leaves > 1) {
        pqueue results;
        pskynet_chan_node children[SKYNET_FANOUT];
        pthread_t threads[SKYNET_FANOUT];
        int64_t per_child = node->leaves / SKYNET_FANOUT;

        pqueue_init(&results, 0, NULL, NULL);
        for (int i = 0; i < SKYNET_FANOUT; i++) {
            children[i] = (pskynet_chan_node){
                .first_leaf = node->first_leaf + i * per_child,
                .leaves = per_child,
                .out = &results,
            };
            create_or_fail(&threads[i], pskynet_chan_thread, &children[i]);
        }
        subtotal = 0;
        for (int i = 0; i < SKYNET_FANOUT; i++) {
            int64_t child_sum;
            if (!pqueue_get(&results, &child_sum))
                bench_fail("a skynet node's queue was closed");
            subtotal += child_sum;
        }
        for (int i = 0; i < SKYNET_FANOUT; i++)
            join_or_fail(threads[i]);
        pqueue_destroy(&results);
    }
    pqueue_put(node->out, subtotal);
    return NULL;
}

static double run_skynet_chan(int64_t leaves)
{
    pqueue out;
    pqueue_init(&out, 0, NULL, NULL);
    pskynet_chan_node root = { .first_leaf = 0, .leaves = leaves, .out = &out };
    pthread_t thread;
    int64_t sum = 0;

    int64_t start = bench_now_ns();
    create_or_fail(&thread, pskynet_chan_thread, &root);
    if (!pqueue_get(&out, &sum))
        bench_fail("the skynet root's queue was closed");
    join_or_fail(thread);
    int64_t elapsed = bench_now_ns() - start;
    pqueue_destroy(&out);

    int64_t expected = skynet_expected_sum(leaves);
    if (sum != expected)
        bench_fail("pthreads skynet-chan with %lld leaves returned sum %lld, "
                   "expected %lld", (long long)leaves, (long long)sum,
                   (long long)expected);
    return (double)elapsed / 1e6;
}

/* ---- pingpong: round trips over two rendezvous queues ------------------ */

typedef struct ppingpong {
    pqueue ping;
    pqueue pong;
} ppingpong;

static void *pong_thread(void *arg)
{
    ppingpong *state = arg;
    int64_t value;
    while (pqueue_get(&state->ping, &value))
        pqueue_put(&state->pong, value + 1);
    return NULL;
}

/* The main thread sends 0 .. trips-1 and checks every reply. With cpus
 * above 0, both threads run on that many CPUs. */
static double run_pingpong(int64_t trips, int64_t cpus)
{
    ppingpong state;
    pthread_t thread;
    if (cpus > 0)
        limit_cpus((int)cpus);
    pqueue_init(&state.ping, 0, NULL, NULL);
    pqueue_init(&state.pong, 0, NULL, NULL);

    int64_t start = bench_now_ns();
    create_or_fail(&thread, pong_thread, &state);
    for (int64_t i = 0; i < trips; i++) {
        int64_t reply = -1;
        pqueue_put(&state.ping, i);
        if (!pqueue_get(&state.pong, &reply) || reply != i + 1)
            bench_fail("pthreads pingpong sent %lld and got %lld back, "
                       "expected %lld", (long long)i, (long long)reply,
                       (long long)(i + 1));
    }
    pqueue_close(&state.ping);
    join_or_fail(thread);
    int64_t elapsed = bench_now_ns() - start;

    pqueue_destroy(&state.ping);
    pqueue_destroy(&state.pong);
    return (double)elapsed / (double)trips;
}

/* ---- chan: producer and consumer threads on one bounded queue ---------- */

typedef struct pchan_state {
    pqueue queue;
    int64_t items;
    int64_t producers;
    pthread_mutex_t totals_lock;
    int64_t sum;              /* guarded by totals_lock */
    int64_t received;         /* guarded by totals_lock */
} pchan_state;

typedef struct pchan_producer {
    pchan_state *state;
    int64_t first;            /* sends first, first + producers, ... */
} pchan_producer;

static void *pchan_producer_thread(void *arg)
{
    pchan_producer *producer = arg;
    pchan_state *state = producer->state;
    for (int64_t v = producer->first; v < state->items; v += state->producers)
        pqueue_put(&state->queue, v);
    return NULL;
}

static void *pchan_consumer_thread(void *arg)
{
    pchan_state *state = arg;
    int64_t sum = 0, received = 0, value;
    while (pqueue_get(&state->queue, &value)) {
        sum += value;
        received++;
    }
    pthread_mutex_lock(&state->totals_lock);
    state->sum += sum;
    state->received += received;
    pthread_mutex_unlock(&state->totals_lock);
    return NULL;
}

/* pairs producer and pairs consumer threads move the values 0 .. items-1
 * through a queue of CHAN_CAPACITY. The main thread closes it once every
 * producer is joined. */
static double run_chan(int64_t items, int64_t pairs)
{
    if (pairs < 1)
        bench_fail("the chan workload needs at least 1 producer, got %lld",
                   (long long)pairs);
    pchan_state state = {
        .items = items,
        .producers = pairs,
        .totals_lock = PTHREAD_MUTEX_INITIALIZER,
    };
    pqueue_init(&state.queue, CHAN_CAPACITY, NULL, NULL);
    pchan_producer *producers = calloc((size_t)pairs, sizeof *producers);
    pthread_t *producer_threads = thread_array(pairs);
    pthread_t *consumer_threads = thread_array(pairs);
    if (!producers)
        bench_fail("out of memory for %lld producers", (long long)pairs);

    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < pairs; i++) {
        producers[i] = (pchan_producer){ .state = &state, .first = i };
        create_or_fail(&consumer_threads[i], pchan_consumer_thread, &state);
        create_or_fail(&producer_threads[i], pchan_producer_thread,
                       &producers[i]);
    }
    for (int64_t i = 0; i < pairs; i++)
        join_or_fail(producer_threads[i]);
    pqueue_close(&state.queue);
    for (int64_t i = 0; i < pairs; i++)
        join_or_fail(consumer_threads[i]);
    int64_t elapsed = bench_now_ns() - start;

    pqueue_destroy(&state.queue);
    free(producers);
    free(producer_threads);
    free(consumer_threads);
    int64_t expected = skynet_expected_sum(items);
    if (state.received != items || state.sum != expected)
        bench_fail("pthreads chan received %lld items with sum %lld, expected "
                   "%lld with sum %lld", (long long)state.received,
                   (long long)state.sum, (long long)items, (long long)expected);
    return (double)elapsed / (double)items;
}

/* ---- select: one receiver over SELECT_CHANNELS queues ------------------- */

typedef struct pselect_producer {
    pqueue *queue;
    int64_t first;            /* sends first, first + SELECT_CHANNELS, ... */
    int64_t messages;
} pselect_producer;

static void *pselect_producer_thread(void *arg)
{
    pselect_producer *producer = arg;
    for (int64_t v = producer->first; v < producer->messages;
         v += SELECT_CHANNELS)
        pqueue_put(producer->queue, v);
    pqueue_close(producer->queue);
    return NULL;
}

/* The queues share one mutex and one readable condition, the usual way to
 * wait for several sources with pthreads, and the main thread takes from
 * whichever has an item. */
static double run_select(int64_t messages, int64_t capacity)
{
    if (capacity < 0)
        bench_fail("the select workload needs a capacity of 0 or more, got "
                   "%lld", (long long)capacity);
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    pthread_cond_t readable = PTHREAD_COND_INITIALIZER;
    pqueue queues[SELECT_CHANNELS];
    pqueue *queue_list[SELECT_CHANNELS];
    pselect_producer producers[SELECT_CHANNELS];
    pthread_t threads[SELECT_CHANNELS];
    for (int i = 0; i < SELECT_CHANNELS; i++) {
        pqueue_init(&queues[i], (size_t)capacity, &lock, &readable);
        queue_list[i] = &queues[i];
        producers[i] = (pselect_producer){
            .queue = &queues[i],
            .first = i,
            .messages = messages,
        };
    }

    int64_t sum = 0, received = 0, value;
    int start_index = 0;
    int64_t start = bench_now_ns();
    for (int i = 0; i < SELECT_CHANNELS; i++)
        create_or_fail(&threads[i], pselect_producer_thread, &producers[i]);
    while (pqueue_select_get(queue_list, SELECT_CHANNELS, &start_index,
                             &value) >= 0) {
        sum += value;
        received++;
    }
    for (int i = 0; i < SELECT_CHANNELS; i++)
        join_or_fail(threads[i]);
    int64_t elapsed = bench_now_ns() - start;

    for (int i = 0; i < SELECT_CHANNELS; i++)
        pqueue_destroy(&queues[i]);
    int64_t expected = skynet_expected_sum(messages);
    if (received != messages || sum != expected)
        bench_fail("pthreads select received %lld messages with sum %lld, "
                   "expected %lld with sum %lld", (long long)received,
                   (long long)sum, (long long)messages, (long long)expected);
    return (double)elapsed / (double)messages;
}

/* ---- sleep: threads sleeping at once ----------------------------------- */

typedef struct psleep_state {
    pthread_mutex_t lock;
    int64_t early;            /* sleeps that returned before SLEEP_NS */
} psleep_state;

static void *sleep_thread(void *arg)
{
    psleep_state *state = arg;
    struct timespec nap = { .tv_sec = 0, .tv_nsec = SLEEP_NS };
    int64_t early = 0;
    for (int round = 0; round < SLEEP_ROUNDS; round++) {
        int64_t before = bench_now_ns();
        int err = clock_nanosleep(CLOCK_MONOTONIC, 0, &nap, NULL);
        if (err != 0)
            bench_fail("clock_nanosleep failed: %s", strerror(err));
        if (bench_now_ns() - before < SLEEP_NS)
            early++;
    }
    pthread_mutex_lock(&state->lock);
    state->early += early;
    pthread_mutex_unlock(&state->lock);
    return NULL;
}

static double run_sleep(int64_t count)
{
    psleep_state state = { .lock = PTHREAD_MUTEX_INITIALIZER };
    pthread_t *threads = thread_array(count);

    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < count; i++)
        create_or_fail(&threads[i], sleep_thread, &state);
    for (int64_t i = 0; i < count; i++)
        join_or_fail(threads[i]);
    int64_t elapsed = bench_now_ns() - start;
    free(threads);

    if (state.early != 0)
        bench_fail("%lld of %lld clock_nanosleep calls returned before %d ns",
                   (long long)state.early, (long long)(count * SLEEP_ROUNDS),
                   SLEEP_NS);
    return (double)elapsed / 1e6;
}

/* ---- mutex: threads taking turns on one pthread mutex ------------------- */

typedef struct pmutex_state {
    pthread_mutex_t lock;
    int64_t counter;          /* guarded by lock */
    int64_t per_thread;       /* locks each thread takes */
} pmutex_state;

static void *mutex_thread(void *arg)
{
    pmutex_state *state = arg;
    for (int64_t i = 0; i < state->per_thread; i++) {
        pthread_mutex_lock(&state->lock);
        state->counter++;
        pthread_mutex_unlock(&state->lock);
    }
    return NULL;
}

/* count / per_thread threads each take the mutex per_thread times. The
 * timed region includes creating and joining them. */
static double run_mutex(int64_t count, int64_t per_thread)
{
    int64_t nthreads = bench_tasks("mutex", count, per_thread);
    pmutex_state state = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .per_thread = per_thread,
    };
    pthread_t *threads = thread_array(nthreads);

    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < nthreads; i++)
        create_or_fail(&threads[i], mutex_thread, &state);
    for (int64_t i = 0; i < nthreads; i++)
        join_or_fail(threads[i]);
    int64_t elapsed = bench_now_ns() - start;
    free(threads);

    if (state.counter != count)
        bench_fail("pthreads mutex: %lld threads counted to %lld under the "
                   "mutex, expected %lld", (long long)nthreads,
                   (long long)state.counter, (long long)count);
    return (double)elapsed / (double)count;
}

/* ---- rwmutex: read-mostly threads on one pthread_rwlock ----------------- */

typedef struct prwmutex_state {
    pthread_rwlock_t rw;
    int64_t first;            /* guarded by rw; writers keep first == second */
    int64_t second;
    int64_t per_thread;       /* operations each thread performs */
    pthread_mutex_t totals_lock;
    int64_t reads;            /* guarded by totals_lock, as are torn and seen */
    int64_t torn;             /* reads that saw first != second */
    int64_t seen;             /* sum of the values read */
} prwmutex_state;

static void *rwmutex_thread(void *arg)
{
    prwmutex_state *state = arg;
    int64_t reads = 0, torn = 0, seen = 0;
    for (int64_t i = 0; i < state->per_thread; i++) {
        if (i % RWMUTEX_WRITE_EVERY == 0) {
            pthread_rwlock_wrlock(&state->rw);
            state->first++;
            state->second++;
            pthread_rwlock_unlock(&state->rw);
            continue;
        }
        pthread_rwlock_rdlock(&state->rw);
        int64_t first = state->first;
        torn += first != state->second;
        pthread_rwlock_unlock(&state->rw);
        seen += first;
        reads++;
    }
    pthread_mutex_lock(&state->totals_lock);
    state->reads += reads;
    state->torn += torn;
    state->seen += seen;
    pthread_mutex_unlock(&state->totals_lock);
    return NULL;
}

/* The lock prefers writers, as Go's sync.RWMutex and weft_rwmutex do. glibc's
 * default prefers readers, which can keep a writer waiting indefinitely. */
static double run_rwmutex(int64_t count, int64_t per_thread)
{
    int64_t nthreads = bench_tasks("rwmutex", count, per_thread);
    prwmutex_state state = {
        .per_thread = per_thread,
        .totals_lock = PTHREAD_MUTEX_INITIALIZER,
    };
    pthread_rwlockattr_t attr;
    check_pthread(pthread_rwlockattr_init(&attr), "pthread_rwlockattr_init");
    check_pthread(pthread_rwlockattr_setkind_np(
                      &attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP),
                  "pthread_rwlockattr_setkind_np");
    check_pthread(pthread_rwlock_init(&state.rw, &attr), "pthread_rwlock_init");
    pthread_rwlockattr_destroy(&attr);
    pthread_t *threads = thread_array(nthreads);

    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < nthreads; i++)
        create_or_fail(&threads[i], rwmutex_thread, &state);
    for (int64_t i = 0; i < nthreads; i++)
        join_or_fail(threads[i]);
    int64_t elapsed = bench_now_ns() - start;
    free(threads);
    pthread_rwlock_destroy(&state.rw);

    int64_t writes = nthreads * rwmutex_writes_per_task(per_thread);
    if (state.first != writes || state.second != writes ||
        state.reads != count - writes || state.torn != 0 || state.seen < 0)
        bench_fail("pthreads rwmutex: counters %lld and %lld after %lld reads "
                   "(%lld torn), expected %lld writes and %lld reads",
                   (long long)state.first, (long long)state.second,
                   (long long)state.reads, (long long)state.torn,
                   (long long)writes, (long long)(count - writes));
    return (double)elapsed / (double)count;
}

/* ---- wg-fanout: rounds of detached threads counted down ----------------- */

/* A wait group for threads: a counter under a mutex, and a condition
 * variable that the last thread of a round signals. */
typedef struct pfanout_state {
    pthread_mutex_t lock;
    pthread_cond_t round_done;
    int64_t outstanding;      /* threads of this round not yet finished */
    int64_t finished;         /* threads finished in all rounds */
} pfanout_state;

static void *fanout_thread(void *arg)
{
    pfanout_state *state = arg;
    pthread_mutex_lock(&state->lock);
    state->finished++;
    if (--state->outstanding == 0)
        pthread_cond_signal(&state->round_done);
    pthread_mutex_unlock(&state->lock);
    return NULL;
}

/* Each of rounds rounds creates count / rounds detached threads and waits
 * until all of them have counted down. The state is static, because a
 * detached thread may still be returning from pthread_mutex_unlock after
 * the main thread has moved on. */
static double run_wg_fanout(int64_t count, int64_t rounds)
{
    int64_t per_round = bench_tasks("wg-fanout", count, rounds);
    static pfanout_state state = {
        .lock = PTHREAD_MUTEX_INITIALIZER,
        .round_done = PTHREAD_COND_INITIALIZER,
    };
    pthread_attr_t attr;
    check_pthread(pthread_attr_init(&attr), "pthread_attr_init");
    check_pthread(pthread_attr_setstacksize(&attr, THREAD_STACK_BYTES),
                  "pthread_attr_setstacksize");
    check_pthread(pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED),
                  "pthread_attr_setdetachstate");

    int64_t start = bench_now_ns();
    for (int64_t round = 0; round < rounds; round++) {
        pthread_mutex_lock(&state.lock);
        state.outstanding = per_round;
        pthread_mutex_unlock(&state.lock);
        for (int64_t i = 0; i < per_round; i++) {
            pthread_t thread;
            int err = pthread_create(&thread, &attr, fanout_thread, &state);
            if (err != 0)
                bench_fail("pthread_create of a detached thread failed: %s",
                           strerror(err));
        }
        pthread_mutex_lock(&state.lock);
        while (state.outstanding > 0)
            pthread_cond_wait(&state.round_done, &state.lock);
        int64_t finished = state.finished;
        pthread_mutex_unlock(&state.lock);
        if (finished != (round + 1) * per_round)
            bench_fail("pthreads wg-fanout: %lld threads had finished after "
                       "round %lld, expected %lld", (long long)finished,
                       (long long)round + 1,
                       (long long)((round + 1) * per_round));
    }
    int64_t elapsed = bench_now_ns() - start;
    pthread_attr_destroy(&attr);
    return (double)elapsed / (double)count;
}

/* ---- context: the nearest thread counterpart of a cancelable context ---- */

/* What a threaded program uses to tell workers to stop: a flag that a
 * worker can poll, and a condition variable it can wait on. Unlike a
 * context it has no parent or children. */
typedef struct pcancel {
    pthread_mutex_t lock;
    pthread_cond_t canceled_changed;
    bool canceled;            /* guarded by lock */
} pcancel;

/* Allocate, cancel and free count pcancel records, as the weft and Go
 * workloads allocate, cancel and release contexts. */
static double run_context(int64_t count)
{
    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < count; i++) {
        pcancel *c = malloc(sizeof *c);
        if (!c)
            bench_fail("out of memory after %lld cancel records", (long long)i);
        check_pthread(pthread_mutex_init(&c->lock, NULL), "pthread_mutex_init");
        check_pthread(pthread_cond_init(&c->canceled_changed, NULL),
                      "pthread_cond_init");
        c->canceled = false;

        pthread_mutex_lock(&c->lock);
        c->canceled = true;
        pthread_cond_broadcast(&c->canceled_changed);
        pthread_mutex_unlock(&c->lock);

        pthread_mutex_lock(&c->lock);
        bool canceled = c->canceled;
        pthread_mutex_unlock(&c->lock);
        if (!canceled)
            bench_fail("a pthreads cancel record read back as not canceled");
        pthread_cond_destroy(&c->canceled_changed);
        pthread_mutex_destroy(&c->lock);
        free(c);
    }
    return (double)(bench_now_ns() - start) / (double)count;
}

/* ---- entry -------------------------------------------------------------- */

bench_result pthread_workload_run(const char *workload, int64_t count,
                                  int64_t param)
{
    bench_result result = { .page_tables_kib = -1 };
    attr_init_or_fail();
    if (strcmp(workload, "spawn") == 0)
        result.value = run_spawn(count);
    else if (strcmp(workload, "yield") == 0)
        result.value = run_yield(count);
    else if (strcmp(workload, "skynet") == 0)
        result.value = run_skynet(count);
    else if (strcmp(workload, "skynet-chan") == 0)
        result.value = run_skynet_chan(count);
    else if (strcmp(workload, "memory") == 0)
        result = run_memory(count);
    else if (strcmp(workload, "pingpong") == 0)
        result.value = run_pingpong(count, param);
    else if (strcmp(workload, "chan") == 0)
        result.value = run_chan(count, param);
    else if (strcmp(workload, "select") == 0)
        result.value = run_select(count, param);
    else if (strcmp(workload, "sleep") == 0)
        result.value = run_sleep(count);
    else if (strcmp(workload, "mutex") == 0)
        result.value = run_mutex(count, param);
    else if (strcmp(workload, "rwmutex") == 0)
        result.value = run_rwmutex(count, param);
    else if (strcmp(workload, "wg-fanout") == 0)
        result.value = run_wg_fanout(count, param);
    else if (strcmp(workload, "context") == 0)
        result.value = run_context(count);
    else
        bench_fail("unknown workload \"%s\"", workload);
    return result;
}
