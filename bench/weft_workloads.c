/*
 * The benchmark workloads on weft, run in a child process of the driver.
 *
 * Each workload starts the runtime with weft_main_config, does its work in
 * the main coroutine and returns its measurement through a job record.
 * Runtime start-up and shutdown are outside the timed region. weft has no
 * channels yet, so completion is signalled with wait groups and skynet
 * collects its sums with one C11 atomic per node.
 */
#define _GNU_SOURCE
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <weft.h>

#include "bench.h"

typedef struct weft_job {
    const char *workload;
    int64_t count;
    bench_result result;
} weft_job;

static void spawn_go_or_fail(weft_fn fn, void *arg)
{
    int err = weft_go(fn, arg);
    if (err != 0)
        bench_fail("weft_go failed after %lld live coroutines: %s",
                   (long long)weft_num_coroutines(), weft_strerror(err));
}

/* ---- spawn: count coroutines that only signal a wait group ------------ */

static void spawn_task(void *arg)
{
    weft_wg_done(arg);
}

static double run_spawn(int64_t count)
{
    weft_wg done = {0};
    int64_t start = bench_now_ns();
    weft_wg_add(&done, count);
    for (int64_t i = 0; i < count; i++)
        spawn_go_or_fail(spawn_task, &done);
    weft_wg_wait(&done);
    return (double)(bench_now_ns() - start) / (double)count;
}

/* ---- yield: two coroutines take turns on one P ------------------------- */

typedef struct yield_state {
    int64_t yields;   /* weft_yield calls per coroutine */
    weft_wg done;
} yield_state;

static void yield_task(void *arg)
{
    yield_state *state = arg;
    for (int64_t i = 0; i < state->yields; i++)
        weft_yield();
    weft_wg_done(&state->done);
}

/* count is the number of switches, so each coroutine yields count / 2
 * times. With maxprocs 1, every yield hands the P to the other coroutine. */
static double run_yield(int64_t count)
{
    if (weft_maxprocs() != 1)
        bench_fail("the yield workload needs maxprocs 1, the runtime has %d",
                   weft_maxprocs());
    yield_state state = { .yields = count / 2 };
    int64_t start = bench_now_ns();
    weft_wg_add(&state.done, 2);
    spawn_go_or_fail(yield_task, &state);
    spawn_go_or_fail(yield_task, &state);
    weft_wg_wait(&state.done);
    return (double)(bench_now_ns() - start) / (double)(2 * state.yields);
}

/* ---- skynet: a tree of coroutines summing their leaf indexes ----------- */

typedef struct skynet_node {
    int64_t first_leaf;            /* index of the leftmost leaf below */
    int64_t leaves;                /* leaves below this node, 1 for a leaf */
    _Atomic int64_t *parent_sum;   /* the parent's running total */
    weft_wg *parent_done;          /* counts the parent's unfinished children */
} skynet_node;

/* Add this subtree's sum to the parent's total. A leaf's value is its
 * index, and an inner node spawns SKYNET_FANOUT children and waits for them.
 * The children's records live on this node's stack, which stays valid
 * because the node returns only after its wait group reaches zero. */
static void skynet_task(void *arg)
{
    skynet_node *node = arg;
    int64_t subtotal = node->first_leaf;

    if (node->leaves > 1) {
        _Atomic int64_t sum = 0;
        weft_wg done = {0};
        skynet_node children[SKYNET_FANOUT];
        int64_t per_child = node->leaves / SKYNET_FANOUT;

        weft_wg_add(&done, SKYNET_FANOUT);
        for (int i = 0; i < SKYNET_FANOUT; i++) {
            children[i] = (skynet_node){
                .first_leaf = node->first_leaf + i * per_child,
                .leaves = per_child,
                .parent_sum = &sum,
                .parent_done = &done,
            };
            spawn_go_or_fail(skynet_task, &children[i]);
        }
        weft_wg_wait(&done);
        subtotal = atomic_load(&sum);
    }
    atomic_fetch_add(node->parent_sum, subtotal);
    weft_wg_done(node->parent_done);
}

static double run_skynet(int64_t leaves)
{
    _Atomic int64_t sum = 0;
    weft_wg done = {0};
    skynet_node root = { .first_leaf = 0, .leaves = leaves,
                         .parent_sum = &sum, .parent_done = &done };

    int64_t start = bench_now_ns();
    weft_wg_add(&done, 1);
    spawn_go_or_fail(skynet_task, &root);
    weft_wg_wait(&done);
    int64_t elapsed = bench_now_ns() - start;

    int64_t expected = skynet_expected_sum(leaves);
    if (atomic_load(&sum) != expected)
        bench_fail("weft skynet with %lld leaves returned sum %lld, expected %lld",
                   (long long)leaves, (long long)atomic_load(&sum),
                   (long long)expected);
    return (double)elapsed / 1e6;
}

/* ---- memory: resident memory of parked coroutines ---------------------- */

typedef struct memory_state {
    weft_wg parked;    /* reaches zero once every coroutine has run */
    weft_wg release;   /* held at 1 while RSS is read */
    weft_wg exited;
} memory_state;

static void memory_task(void *arg)
{
    memory_state *state = arg;
    weft_wg_done(&state->parked);
    weft_wg_wait(&state->release);
    weft_wg_done(&state->exited);
}

static bench_result run_memory(int64_t count)
{
    memory_state state = {0};
    bench_memory before = bench_memory_read();

    weft_wg_add(&state.parked, count);
    weft_wg_add(&state.release, 1);
    weft_wg_add(&state.exited, count);
    for (int64_t i = 0; i < count; i++)
        spawn_go_or_fail(memory_task, &state);
    weft_wg_wait(&state.parked);
    /* A coroutine may be between its weft_wg_done and its park here. The
     * few that are change the reading by a few pages at most. */
    int64_t live = weft_num_coroutines();
    bench_memory after = bench_memory_read();

    weft_wg_done(&state.release);
    weft_wg_wait(&state.exited);

    /* The main coroutine is live too. */
    if (live < count + 1)
        bench_fail("weft_num_coroutines returned %lld while %lld coroutines "
                   "were parked", (long long)live, (long long)count);
    return bench_memory_per_task(before, after, count);
}

/* ---- entry -------------------------------------------------------------- */

static int job_main(void *arg)
{
    weft_job *job = arg;
    job->result.page_tables_kib = -1;
    if (strcmp(job->workload, "spawn") == 0)
        job->result.value = run_spawn(job->count);
    else if (strcmp(job->workload, "yield") == 0)
        job->result.value = run_yield(job->count);
    else if (strcmp(job->workload, "skynet") == 0)
        job->result.value = run_skynet(job->count);
    else if (strcmp(job->workload, "memory") == 0)
        job->result = run_memory(job->count);
    else
        bench_fail("unknown workload \"%s\"", job->workload);
    return 0;
}

bench_result weft_workload_run(const char *workload, int64_t count)
{
    weft_job job = { .workload = workload, .count = count };
    weft_config cfg = {0};
    /* The yield workload measures switches on one P. Every other workload
     * uses WEFT_MAXPROCS or every usable CPU. */
    if (strcmp(workload, "yield") == 0)
        cfg.maxprocs = 1;
    int err = weft_main_config(&cfg, job_main, &job);
    if (err < 0)
        bench_fail("weft_main_config failed: %s", weft_strerror(err));
    return job.result;
}
