/*
 * The benchmark workloads on plain POSIX threads, the baseline for weft.
 *
 * Every thread gets a 64 KiB stack (THREAD_STACK_BYTES) so that thousands
 * of them fit in memory and in vm.max_map_count. The workloads use each
 * primitive the way a pthreads program would: pthread_join to wait for
 * threads, a mutex and condition variable to park and hand off.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- entry -------------------------------------------------------------- */

bench_result pthread_workload_run(const char *workload, int64_t count)
{
    bench_result result = { .page_tables_kib = -1 };
    attr_init_or_fail();
    if (strcmp(workload, "spawn") == 0)
        result.value = run_spawn(count);
    else if (strcmp(workload, "yield") == 0)
        result.value = run_yield(count);
    else if (strcmp(workload, "skynet") == 0)
        result.value = run_skynet(count);
    else if (strcmp(workload, "memory") == 0)
        result = run_memory(count);
    else
        bench_fail("unknown workload \"%s\"", workload);
    return result;
}
