/*
 * Diagnostics over the scheduler's state: weft_stats_get, weft_dump and
 * weft_leakcheck.
 *
 * The dump reads the Ps and the G records without stopping anything.
 * G records live in chunks that are never freed while the runtime runs,
 * and new chunks go at the head of the list, so the list is walked from a
 * head taken under sched.lock and then without it. A record's fixed
 * fields (id, name, spawn site) are read only after an acquire load of
 * its state has shown it in use; they pair with the release store of the
 * spawn. A record that is freed and reused during the walk can still
 * print a mix of two coroutines: the dump is a snapshot for a person, not
 * a consistent cut.
 */
#define _GNU_SOURCE
#include <stdio.h>

#include "../arch/stack.h"
#include "../sched/lock.h"
#include "../sched/sched.h"
#include "weft/debug.h"
#include "weft/runtime.h"

static bool running(void)
{
    return atomic_load(&weft__rt.running) != 0 && weft__rt.ps != NULL;
}

void weft_stats_get(weft_stats *out)
{
    if (!out)
        return;
    *out = (weft_stats){ 0 };
    if (!running())
        return;
    out->spawned = atomic_load(&weft__rt.outside_spawned);
    for (int i = 0; i < weft__rt.nprocs; i++) {
        weft__p *p = weft__rt.ps[i];
        out->spawned += atomic_load_explicit(&p->st_spawned, memory_order_relaxed);
        out->switches += atomic_load_explicit(&p->st_switches, memory_order_relaxed);
        out->steals += atomic_load_explicit(&p->st_steals, memory_order_relaxed);
        out->parks += atomic_load_explicit(&p->st_parks, memory_order_relaxed);
    }
    out->coroutines = weft__sched_live();
    out->global_pushes = atomic_load(&weft__rt.global_pushes);
    out->idle_wakeups = atomic_load(&weft__rt.idle_wakeups);
    out->stacks_cached = (int64_t)weft__stacks_pooled();
    out->timers_pending = weft__timers_pending();
}

void weft__dump_g(FILE *out, weft__g *g, int64_t now)
{
    fprintf(out, "coroutine %llu", (unsigned long long)g->id);
    if (g->name)
        fprintf(out, " \"%s\"", g->name);
    switch (atomic_load_explicit(&g->state, memory_order_relaxed)) {
    case WEFT__G_RUNNABLE:
        fputs(" [runnable]:\n", out);
        break;
    case WEFT__G_RUNNING:
        fputs(" [running]:\n", out);
        break;
    default: {
        int reason = atomic_load_explicit(&g->wait_reason, memory_order_relaxed);
        int64_t since = atomic_load_explicit(&g->wait_since, memory_order_relaxed);
        int64_t ms = since > 0 && now > since ? (now - since) / 1000000 : 0;
        fprintf(out, " [%s, %lld ms]:\n", weft__wait_reason_string(reason), (long long)ms);
        break;
    }
    }
    if (g->file && g->line == 0)
        fprintf(out, "\tspawned by %s\n", g->file);
    else if (g->file)
        fprintf(out, "\tspawned at %s:%d\n", g->file, g->line);
    else
        fputs("\tspawned at an unknown site\n", out);
}

/* Call fn on every G record in use, except the one with id skip (0: none). */
static int64_t each_g(FILE *out, uint64_t skip, int64_t now)
{
    weft__lock_acquire(&weft__rt.lock);
    weft__gchunk *head = weft__rt.chunks;
    weft__lock_release(&weft__rt.lock);
    int64_t n = 0;
    for (weft__gchunk *c = head; c; c = c->next) {
        for (int i = 0; i < WEFT__GCHUNK_SIZE; i++) {
            weft__g *g = &c->gs[i];
            if (atomic_load_explicit(&g->state, memory_order_acquire) == WEFT__G_FREE)
                continue;
            if (skip && g->id == skip)
                continue;
            weft__dump_g(out, g, now);
            n++;
        }
    }
    return n;
}

static const char *p_activity(weft__p *p, weft__g *g)
{
    if (g)
        return "running";
    if (atomic_load_explicit(&p->in_netpoll, memory_order_relaxed))
        return "idle, blocked in the network poller";
    return "in the scheduler or idle";
}

void weft_dump(FILE *out)
{
    if (!out || !running())
        return;
    int64_t now = weft__coarse_now();
    fprintf(out, "weft: live coroutines %lld, Ps %d, global queue %lld, idle Ps %d, spinning Ps %d\n",
            (long long)weft__sched_live(), weft__rt.nprocs,
            (long long)atomic_load(&weft__rt.gq_size), (int)atomic_load(&weft__rt.npidle),
            (int)atomic_load(&weft__rt.nmspinning));
    for (int i = 0; i < weft__rt.nprocs; i++) {
        weft__p *p = weft__rt.ps[i];
        weft__g *g = atomic_load_explicit(&p->running, memory_order_relaxed);
        uint32_t queued = atomic_load(&p->runq_tail) - atomic_load(&p->runq_head);
        fprintf(out, "P%d: %s", i, p_activity(p, g));
        if (g)
            fprintf(out, " coroutine %llu", (unsigned long long)g->id);
        fprintf(out, ", local queue %u%s\n", queued,
                atomic_load(&p->runnext) ? " + runnext" : "");
    }
    fputc('\n', out);
    each_g(out, 0, now);
    fflush(out);
}

int64_t weft_leakcheck(int64_t timeout_ns)
{
    if (!running())
        return 0;
    uint64_t self = weft_id();
    int64_t start = weft_now();
    int64_t deadline = timeout_ns > INT64_MAX - start ? INT64_MAX
                                                      : start + (timeout_ns > 0 ? timeout_ns : 0);
    int64_t left;
    for (;;) {
        left = weft__sched_live() - (self ? 1 : 0);
        int64_t now = weft_now();
        if (left <= 0)
            return 0;
        if (now >= deadline)
            break;
        /* Polled: coroutines exiting have no event to wait on. */
        int64_t step = deadline - now < 1000000 ? deadline - now : 1000000;
        weft_sleep(step);
    }
    fprintf(stderr, "weft: leaked coroutines: %lld\n", (long long)left);
    each_g(stderr, self, weft__coarse_now());
    fflush(stderr);
    return left;
}
