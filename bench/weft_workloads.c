/*
 * The benchmark workloads on weft, run in a child process of the driver.
 *
 * Each workload starts the runtime with weft_main_config, does its work in
 * the main coroutine and returns its measurement through a job record.
 * Runtime start-up and shutdown are outside the timed region. Completion is
 * signalled with wait groups. The skynet workload collects its sums with one
 * C11 atomic per node, skynet-chan with one channel per node as Go does.
 * The mutex, rwmutex, wg-fanout and context workloads use weft/sync.h and
 * weft/context.h the way a Go program uses sync and context.
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
    int64_t param;     /* the workload's parameter, listed in bench.h */
    bench_result result;
} weft_job;

static void spawn_go_or_fail(weft_fn fn, void *arg)
{
    int err = weft_go(fn, arg);
    if (err != 0)
        bench_fail("weft_go failed after %lld live coroutines: %s",
                   (long long)weft_num_coroutines(), weft_strerror(err));
}

static weft_chan *chan_make_or_fail(size_t elem_size, size_t cap)
{
    weft_chan *ch = weft_chan_make(elem_size, cap);
    if (!ch)
        bench_fail("weft_chan_make(%zu, %zu) returned NULL", elem_size, cap);
    return ch;
}

static void send_or_fail(weft_chan *ch, const int64_t *value)
{
    int err = weft_chan_send(ch, value);
    if (err != 0)
        bench_fail("weft_chan_send of %lld failed: %s", (long long)*value,
                   weft_strerror(err));
}

/* Receive into value. Returns false when the channel is closed and
 * drained. */
static bool recv_or_fail(weft_chan *ch, int64_t *value)
{
    int err = weft_chan_recv(ch, value);
    if (err == WEFT_ECLOSED)
        return false;
    if (err != 0)
        bench_fail("weft_chan_recv failed: %s", weft_strerror(err));
    return true;
}

static void close_or_fail(weft_chan *ch)
{
    int err = weft_chan_close(ch);
    if (err != 0)
        bench_fail("weft_chan_close failed: %s", weft_strerror(err));
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

/* ---- skynet-chan: the tree with a channel per node, Go's original shape - */

typedef struct skynet_chan_node {
    int64_t first_leaf;
    int64_t leaves;
    weft_chan *out;    /* where this node sends its subtree's sum */
} skynet_chan_node;

/* Send this subtree's sum on the parent's channel. An inner node makes an
 * unbuffered channel, spawns SKYNET_FANOUT children that send on it and
 * receives their sums. The record lives on the parent's stack, so it is
 * copied before the send that lets the parent return. */
static void skynet_chan_task(void *arg)
{
    skynet_chan_node node = *(skynet_chan_node *)arg;
    int64_t subtotal = node.first_leaf;

    if (node.leaves > 1) {
        weft_chan *results = chan_make_or_fail(sizeof(int64_t), 0);
        skynet_chan_node children[SKYNET_FANOUT];
        int64_t per_child = node.leaves / SKYNET_FANOUT;

        for (int i = 0; i < SKYNET_FANOUT; i++) {
            children[i] = (skynet_chan_node){
                .first_leaf = node.first_leaf + i * per_child,
                .leaves = per_child,
                .out = results,
            };
            spawn_go_or_fail(skynet_chan_task, &children[i]);
        }
        subtotal = 0;
        for (int i = 0; i < SKYNET_FANOUT; i++) {
            int64_t child_sum;
            if (!recv_or_fail(results, &child_sum))
                bench_fail("a skynet node's channel was closed");
            subtotal += child_sum;
        }
        weft_chan_release(results);
    }
    send_or_fail(node.out, &subtotal);
}

static double run_skynet_chan(int64_t leaves)
{
    weft_chan *out = chan_make_or_fail(sizeof(int64_t), 0);
    skynet_chan_node root = { .first_leaf = 0, .leaves = leaves, .out = out };
    int64_t sum = 0;

    int64_t start = bench_now_ns();
    spawn_go_or_fail(skynet_chan_task, &root);
    if (!recv_or_fail(out, &sum))
        bench_fail("the skynet root's channel was closed");
    int64_t elapsed = bench_now_ns() - start;
    weft_chan_release(out);

    int64_t expected = skynet_expected_sum(leaves);
    if (sum != expected)
        bench_fail("weft skynet-chan with %lld leaves returned sum %lld, "
                   "expected %lld", (long long)leaves, (long long)sum,
                   (long long)expected);
    return (double)elapsed / 1e6;
}

/* ---- pingpong: round trips over two unbuffered channels ---------------- */

typedef struct pingpong_state {
    weft_chan *ping;
    weft_chan *pong;
    weft_wg done;
} pingpong_state;

/* Reply to every value on ping with value + 1 on pong until ping closes. */
static void pong_task(void *arg)
{
    pingpong_state *state = arg;
    int64_t value;
    while (recv_or_fail(state->ping, &value)) {
        value++;
        send_or_fail(state->pong, &value);
    }
    weft_wg_done(&state->done);
}

/* The main coroutine sends 0 .. trips-1 and checks every reply. The
 * processor count comes from weft_workload_run. */
static double run_pingpong(int64_t trips)
{
    pingpong_state state = {
        .ping = chan_make_or_fail(sizeof(int64_t), 0),
        .pong = chan_make_or_fail(sizeof(int64_t), 0),
    };

    int64_t start = bench_now_ns();
    weft_wg_add(&state.done, 1);
    spawn_go_or_fail(pong_task, &state);
    for (int64_t i = 0; i < trips; i++) {
        int64_t reply = -1;
        send_or_fail(state.ping, &i);
        if (!recv_or_fail(state.pong, &reply) || reply != i + 1)
            bench_fail("weft pingpong sent %lld and got %lld back, expected "
                       "%lld", (long long)i, (long long)reply,
                       (long long)(i + 1));
    }
    close_or_fail(state.ping);
    weft_wg_wait(&state.done);
    int64_t elapsed = bench_now_ns() - start;

    weft_chan_release(state.ping);
    weft_chan_release(state.pong);
    return (double)elapsed / (double)trips;
}

/* ---- chan: producers and consumers on one buffered channel -------------- */

typedef struct chan_state {
    weft_chan *ch;
    int64_t items;        /* values 0 .. items-1 go through the channel */
    int64_t producers;    /* producer i sends i, i + producers, ... */
    _Atomic int64_t next_producer;
    _Atomic int64_t sum;
    _Atomic int64_t received;
    weft_wg producers_done;
    weft_wg consumers_done;
} chan_state;

static void chan_producer(void *arg)
{
    chan_state *state = arg;
    int64_t first = atomic_fetch_add(&state->next_producer, 1);
    for (int64_t v = first; v < state->items; v += state->producers)
        send_or_fail(state->ch, &v);
    weft_wg_done(&state->producers_done);
}

static void chan_consumer(void *arg)
{
    chan_state *state = arg;
    int64_t sum = 0, received = 0, value;
    while (recv_or_fail(state->ch, &value)) {
        sum += value;
        received++;
    }
    atomic_fetch_add(&state->sum, sum);
    atomic_fetch_add(&state->received, received);
    weft_wg_done(&state->consumers_done);
}

/* pairs producers and pairs consumers move items values through a channel
 * of CHAN_CAPACITY. The main coroutine closes it once every producer is
 * done, which ends the consumers. */
static double run_chan(int64_t items, int64_t pairs)
{
    if (pairs < 1)
        bench_fail("the chan workload needs at least 1 producer, got %lld",
                   (long long)pairs);
    chan_state state = {
        .ch = chan_make_or_fail(sizeof(int64_t), CHAN_CAPACITY),
        .items = items,
        .producers = pairs,
    };

    int64_t start = bench_now_ns();
    weft_wg_add(&state.producers_done, pairs);
    weft_wg_add(&state.consumers_done, pairs);
    for (int64_t i = 0; i < pairs; i++) {
        spawn_go_or_fail(chan_consumer, &state);
        spawn_go_or_fail(chan_producer, &state);
    }
    weft_wg_wait(&state.producers_done);
    close_or_fail(state.ch);
    weft_wg_wait(&state.consumers_done);
    int64_t elapsed = bench_now_ns() - start;
    weft_chan_release(state.ch);

    int64_t expected = skynet_expected_sum(items);
    if (atomic_load(&state.received) != items ||
        atomic_load(&state.sum) != expected)
        bench_fail("weft chan received %lld items with sum %lld, expected "
                   "%lld with sum %lld", (long long)atomic_load(&state.received),
                   (long long)atomic_load(&state.sum), (long long)items,
                   (long long)expected);
    return (double)elapsed / (double)items;
}

/* ---- select: one receiver over SELECT_CHANNELS channels ----------------- */

typedef struct select_producer {
    weft_chan *ch;
    int64_t first;        /* sends first, first + SELECT_CHANNELS, ... */
    int64_t messages;     /* values stay below messages */
} select_producer;

static void select_producer_task(void *arg)
{
    select_producer *producer = arg;
    for (int64_t v = producer->first; v < producer->messages;
         v += SELECT_CHANNELS)
        send_or_fail(producer->ch, &v);
    close_or_fail(producer->ch);
}

/* Each channel has its own producer, which closes it when done. The main
 * coroutine selects over every channel still open, and a closed channel's
 * case gets a NULL channel, which is never ready, as a nil channel in Go. */
static double run_select(int64_t messages, int64_t capacity)
{
    select_producer producers[SELECT_CHANNELS];
    weft_case cases[SELECT_CHANNELS];
    int64_t value = 0, sum = 0, received = 0;

    if (capacity < 0)
        bench_fail("the select workload needs a capacity of 0 or more, got "
                   "%lld", (long long)capacity);
    for (int i = 0; i < SELECT_CHANNELS; i++) {
        producers[i] = (select_producer){
            .ch = chan_make_or_fail(sizeof(int64_t), (size_t)capacity),
            .first = i,
            .messages = messages,
        };
        cases[i] = WEFT_RECV_CASE(producers[i].ch, &value);
    }

    int64_t start = bench_now_ns();
    for (int i = 0; i < SELECT_CHANNELS; i++)
        spawn_go_or_fail(select_producer_task, &producers[i]);
    int open = SELECT_CHANNELS;
    while (open > 0) {
        int index = weft_select(cases, SELECT_CHANNELS);
        if (index < 0 || index >= SELECT_CHANNELS)
            bench_fail("weft_select returned %d: %s", index,
                       index < 0 ? weft_strerror(index) : "index out of range");
        if (!cases[index].ok) {
            cases[index].chan = NULL;
            open--;
            continue;
        }
        sum += value;
        received++;
    }
    int64_t elapsed = bench_now_ns() - start;
    for (int i = 0; i < SELECT_CHANNELS; i++)
        weft_chan_release(producers[i].ch);

    int64_t expected = skynet_expected_sum(messages);
    if (received != messages || sum != expected)
        bench_fail("weft select received %lld messages with sum %lld, "
                   "expected %lld with sum %lld", (long long)received,
                   (long long)sum, (long long)messages, (long long)expected);
    return (double)elapsed / (double)messages;
}

/* ---- sleep: many coroutines sleeping at once ---------------------------- */

typedef struct sleep_state {
    _Atomic int64_t early;    /* sleeps that returned before SLEEP_NS */
    weft_wg done;
} sleep_state;

static void sleep_task(void *arg)
{
    sleep_state *state = arg;
    for (int round = 0; round < SLEEP_ROUNDS; round++) {
        int64_t before = weft_now();
        int err = weft_sleep(SLEEP_NS);
        if (err != 0)
            bench_fail("weft_sleep failed: %s", weft_strerror(err));
        if (weft_now() - before < SLEEP_NS)
            atomic_fetch_add(&state->early, 1);
    }
    weft_wg_done(&state->done);
}

static double run_sleep(int64_t count)
{
    sleep_state state = {0};
    int64_t start = bench_now_ns();
    weft_wg_add(&state.done, count);
    for (int64_t i = 0; i < count; i++)
        spawn_go_or_fail(sleep_task, &state);
    weft_wg_wait(&state.done);
    int64_t elapsed = bench_now_ns() - start;

    if (atomic_load(&state.early) != 0)
        bench_fail("%lld of %lld weft_sleep calls returned before %d ns",
                   (long long)atomic_load(&state.early),
                   (long long)(count * SLEEP_ROUNDS), SLEEP_NS);
    return (double)elapsed / 1e6;
}

/* ---- mutex: tasks taking turns on one mutex ----------------------------- */

typedef struct mutex_state {
    weft_mutex mu;
    int64_t counter;      /* guarded by mu */
    int64_t per_task;     /* locks each task takes */
    weft_wg done;
} mutex_state;

static void mutex_task(void *arg)
{
    mutex_state *state = arg;
    for (int64_t i = 0; i < state->per_task; i++) {
        weft_mutex_lock(&state->mu);
        state->counter++;
        weft_mutex_unlock(&state->mu);
    }
    weft_wg_done(&state->done);
}

/* count / per_task coroutines each take the mutex per_task times. With one
 * task (per_task equal to count) the mutex is never contended. */
static double run_mutex(int64_t count, int64_t per_task)
{
    int64_t tasks = bench_tasks("mutex", count, per_task);
    mutex_state state = { .per_task = per_task };

    int64_t start = bench_now_ns();
    weft_wg_add(&state.done, tasks);
    for (int64_t i = 0; i < tasks; i++)
        spawn_go_or_fail(mutex_task, &state);
    weft_wg_wait(&state.done);
    int64_t elapsed = bench_now_ns() - start;

    if (state.counter != count)
        bench_fail("weft mutex: %lld tasks counted to %lld under the mutex, "
                   "expected %lld", (long long)tasks, (long long)state.counter,
                   (long long)count);
    return (double)elapsed / (double)count;
}

/* ---- rwmutex: read-mostly tasks on one reader/writer mutex -------------- */

typedef struct rwmutex_state {
    weft_rwmutex rw;
    int64_t first;        /* guarded by rw; writers keep first == second */
    int64_t second;
    int64_t per_task;     /* operations each task performs */
    _Atomic int64_t reads;
    _Atomic int64_t torn; /* reads that saw first != second */
    _Atomic int64_t seen; /* sum of the values read, so no read is dropped */
    weft_wg done;
} rwmutex_state;

static void rwmutex_task(void *arg)
{
    rwmutex_state *state = arg;
    int64_t reads = 0, torn = 0, seen = 0;
    for (int64_t i = 0; i < state->per_task; i++) {
        if (i % RWMUTEX_WRITE_EVERY == 0) {
            weft_rwmutex_lock(&state->rw);
            state->first++;
            state->second++;
            weft_rwmutex_unlock(&state->rw);
            continue;
        }
        weft_rwmutex_rlock(&state->rw);
        int64_t first = state->first;
        torn += first != state->second;
        weft_rwmutex_runlock(&state->rw);
        seen += first;
        reads++;
    }
    atomic_fetch_add(&state->reads, reads);
    atomic_fetch_add(&state->torn, torn);
    atomic_fetch_add(&state->seen, seen);
    weft_wg_done(&state->done);
}

static double run_rwmutex(int64_t count, int64_t per_task)
{
    int64_t tasks = bench_tasks("rwmutex", count, per_task);
    rwmutex_state state = { .per_task = per_task };

    int64_t start = bench_now_ns();
    weft_wg_add(&state.done, tasks);
    for (int64_t i = 0; i < tasks; i++)
        spawn_go_or_fail(rwmutex_task, &state);
    weft_wg_wait(&state.done);
    int64_t elapsed = bench_now_ns() - start;

    int64_t writes = tasks * rwmutex_writes_per_task(per_task);
    if (state.first != writes || state.second != writes ||
        atomic_load(&state.reads) != count - writes ||
        atomic_load(&state.torn) != 0 || atomic_load(&state.seen) < 0)
        bench_fail("weft rwmutex: counters %lld and %lld after %lld reads "
                   "(%lld torn), expected %lld writes and %lld reads",
                   (long long)state.first, (long long)state.second,
                   (long long)atomic_load(&state.reads),
                   (long long)atomic_load(&state.torn), (long long)writes,
                   (long long)(count - writes));
    return (double)elapsed / (double)count;
}

/* ---- wg-fanout: rounds of tasks counted down on a wait group ------------ */

typedef struct fanout_state {
    _Atomic int64_t finished;
    weft_wg done;
} fanout_state;

static void fanout_task(void *arg)
{
    fanout_state *state = arg;
    atomic_fetch_add_explicit(&state->finished, 1, memory_order_relaxed);
    weft_wg_done(&state->done);
}

/* Each of rounds rounds spawns count / rounds coroutines and waits until
 * all of them have called weft_wg_done. Later rounds reuse the stacks and
 * records of earlier ones, unlike the spawn workload's single round. */
static double run_wg_fanout(int64_t count, int64_t rounds)
{
    int64_t per_round = bench_tasks("wg-fanout", count, rounds);
    fanout_state state = {0};

    int64_t start = bench_now_ns();
    for (int64_t round = 0; round < rounds; round++) {
        weft_wg_add(&state.done, per_round);
        for (int64_t i = 0; i < per_round; i++)
            spawn_go_or_fail(fanout_task, &state);
        weft_wg_wait(&state.done);
        int64_t finished = atomic_load(&state.finished);
        if (finished != (round + 1) * per_round)
            bench_fail("weft wg-fanout: %lld tasks had finished when round "
                       "%lld's wait returned, expected %lld",
                       (long long)finished, (long long)round + 1,
                       (long long)((round + 1) * per_round));
    }
    return (double)(bench_now_ns() - start) / (double)count;
}

/* ---- context: make, cancel and release cancelable contexts -------------- */

static double run_context(int64_t count)
{
    int64_t start = bench_now_ns();
    for (int64_t i = 0; i < count; i++) {
        weft_ctx *ctx = weft_ctx_with_cancel(weft_ctx_background());
        if (!ctx)
            bench_fail("weft_ctx_with_cancel returned NULL after %lld "
                       "contexts", (long long)i);
        weft_ctx_cancel(ctx);
        int err = weft_ctx_err(ctx);
        if (err != WEFT_ECANCELED)
            bench_fail("weft_ctx_err after weft_ctx_cancel returned %d (%s), "
                       "expected WEFT_ECANCELED", err, weft_strerror(err));
        weft_ctx_release(ctx);
    }
    return (double)(bench_now_ns() - start) / (double)count;
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
    else if (strcmp(job->workload, "skynet-chan") == 0)
        job->result.value = run_skynet_chan(job->count);
    else if (strcmp(job->workload, "memory") == 0)
        job->result = run_memory(job->count);
    else if (strcmp(job->workload, "pingpong") == 0)
        job->result.value = run_pingpong(job->count);
    else if (strcmp(job->workload, "chan") == 0)
        job->result.value = run_chan(job->count, job->param);
    else if (strcmp(job->workload, "select") == 0)
        job->result.value = run_select(job->count, job->param);
    else if (strcmp(job->workload, "sleep") == 0)
        job->result.value = run_sleep(job->count);
    else if (strcmp(job->workload, "mutex") == 0)
        job->result.value = run_mutex(job->count, job->param);
    else if (strcmp(job->workload, "rwmutex") == 0)
        job->result.value = run_rwmutex(job->count, job->param);
    else if (strcmp(job->workload, "wg-fanout") == 0)
        job->result.value = run_wg_fanout(job->count, job->param);
    else if (strcmp(job->workload, "context") == 0)
        job->result.value = run_context(job->count);
    else
        bench_fail("unknown workload \"%s\"", job->workload);
    return 0;
}

bench_result weft_workload_run(const char *workload, int64_t count,
                               int64_t param)
{
    weft_job job = { .workload = workload, .count = count, .param = param };
    weft_config cfg = {0};
    /* The yield workload measures switches on one P, and pingpong runs on
     * as many Ps as its parameter sets. Every other workload uses
     * WEFT_MAXPROCS or every usable CPU. */
    if (strcmp(workload, "yield") == 0)
        cfg.maxprocs = 1;
    else if (strcmp(workload, "pingpong") == 0 && param > 0)
        cfg.maxprocs = (int)param;
    int err = weft_main_config(&cfg, job_main, &job);
    if (err < 0)
        bench_fail("weft_main_config failed: %s", weft_strerror(err));
    return job.result;
}
