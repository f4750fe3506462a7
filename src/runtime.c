/*
 * Runtime entry points: configuration, weft_init / weft_shutdown,
 * weft_main, and the small public calls over the scheduler.
 *
 * Configuration precedence, per setting: a non-zero weft_config field, then
 * the environment variable (WEFT_MAXPROCS, WEFT_STACK_SIZE), then the
 * default. A malformed environment value gets a one-line warning on stderr
 * and the default. A malformed config field makes weft_init fail with
 * WEFT_EINVAL, because the program itself passed it.
 *
 * WEFT_DEBUG=guard=mprotect makes stack guards with mprotect even on
 * kernels with MADV_GUARD_INSTALL, so the fallback stays tested.
 * WEFT_DEBUG=deadlock=0 turns the deadlock detector off, and
 * WEFT_DEBUG=dump=sigquit makes SIGQUIT print a dump and exit with status 2.
 * WEFT_DEBUG=netpoll=loop makes the libuv loop thread poll the sockets
 * instead of the Ps, the design the benchmarks compare against.
 *
 * Default maxprocs: the CPUs in this thread's affinity mask, lowered to the
 * cgroup v2 quota (cpu.max, rounded up) when one is set.
 *
 * SIGPIPE: weft_init sets it to be ignored when its action is the default
 * one (which would kill the process), so a write to a closed pipe or
 * socket returns EPIPE. Sockets are also written with MSG_NOSIGNAL. A
 * handler the program installed is left alone.
 *
 * Start and stop are serialised by life_lock; the runtime is either fully
 * running or fully stopped whenever life_lock is free.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "debug/overflow.h"
#include "io/io_internal.h"
#include "io/netpoll.h"
#include "sched/sched.h"
#include "sync/pool_internal.h"
#include "weft.h"

#define DEFAULT_STACK_SIZE ((size_t)256 * 1024)
/* An upper bound for maxprocs, well past any machine weft runs on. */
#define MAXPROCS_LIMIT 1024

static pthread_mutex_t life_lock = PTHREAD_MUTEX_INITIALIZER;

int64_t weft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Read the cgroup v2 CPU quota of this process, rounded up to whole CPUs;
 * 0 when there is none. */
static int cgroup_cpu_limit(void)
{
    char path[1100] = "/sys/fs/cgroup";
    FILE *f = fopen("/proc/self/cgroup", "r");
    if (f) {
        char line[512];
        while (fgets(line, sizeof line, f)) {
            /* cgroup v2 lines read "0::/path". */
            if (strncmp(line, "0::", 3) == 0) {
                line[strcspn(line, "\n")] = '\0';
                if (strcmp(line + 3, "/") != 0)
                    snprintf(path, sizeof path, "/sys/fs/cgroup%s", line + 3);
                break;
            }
        }
        fclose(f);
    }
    strncat(path, "/cpu.max", sizeof path - strlen(path) - 1);
    f = fopen(path, "r");
    if (!f)
        return 0;
    char quota[32];
    long long period = 0;
    int limit = 0;
    if (fscanf(f, "%31s %lld", quota, &period) == 2 && strcmp(quota, "max") != 0 &&
        period > 0) {
        long long q = atoll(quota);
        if (q > 0)
            limit = (int)((q + period - 1) / period);
    }
    fclose(f);
    return limit;
}

static int default_maxprocs(void)
{
    int n = 0;
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = 1;
    int limit = cgroup_cpu_limit();
    if (limit > 0 && limit < n)
        n = limit;
    return n;
}

/* Parse a positive integer with an optional suffix (when allow_suffix):
 * k, m or g for powers of 1024, optionally followed by "b" or "ib" in any
 * case ("64k", "64kb", "64KiB"). Returns false on anything else. */
static bool parse_size(const char *s, bool allow_suffix, unsigned long long *out)
{
    if (!s || !isdigit((unsigned char)*s))
        return false;
    errno = 0;
    char *end;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s)
        return false;
    unsigned long long mult = 1;
    if (allow_suffix && *end) {
        switch (tolower((unsigned char)*end)) {
        case 'k': mult = 1ULL << 10; break;
        case 'm': mult = 1ULL << 20; break;
        case 'g': mult = 1ULL << 30; break;
        default: return false;
        }
        end++;
        if (tolower((unsigned char)*end) == 'i')
            end++;
        if (tolower((unsigned char)*end) == 'b')
            end++;
        else if (tolower((unsigned char)end[-1]) == 'i')
            return false; /* "ki" without the b */
    }
    if (*end)
        return false;
    if (v > ULLONG_MAX / mult)
        return false;
    *out = v * mult;
    return true;
}

static int env_maxprocs(int fallback)
{
    const char *s = getenv("WEFT_MAXPROCS");
    if (!s || !*s)
        return fallback;
    unsigned long long v;
    if (!parse_size(s, false, &v) || v < 1 || v > MAXPROCS_LIMIT) {
        fprintf(stderr,
                "weft: warning: invalid WEFT_MAXPROCS=\"%s\" (expected 1 to %d); "
                "using %d\n", s, MAXPROCS_LIMIT, fallback);
        return fallback;
    }
    return (int)v;
}

static size_t env_stack_size(size_t fallback)
{
    const char *s = getenv("WEFT_STACK_SIZE");
    if (!s || !*s)
        return fallback;
    unsigned long long v;
    size_t rounded = 0;
    if (parse_size(s, true, &v) && v <= (unsigned long long)SIZE_MAX)
        rounded = weft__stack_round((size_t)v);
    if (!rounded) {
        fprintf(stderr,
                "weft: warning: invalid WEFT_STACK_SIZE=\"%s\" (expected bytes "
                "from 16k to 1g, with an optional suffix k, m or g, or kb, KiB "
                "and the like); using %zu\n",
                s, fallback);
        return fallback;
    }
    return rounded;
}

/* Read the WEFT_DEBUG switches this file acts on. The variable is a
 * comma-separated list of name=value pairs, like Go's GODEBUG; names it
 * does not know are ignored, as GODEBUG ignores them. */
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && !(old.sa_flags & SA_SIGINFO) &&
        old.sa_handler == SIG_DFL) {
        struct sigaction ign;
        memset(&ign, 0, sizeof ign);
        ign.sa_handler = SIG_IGN;
        sigemptyset(&ign.sa_mask);
        sigaction(SIGPIPE, &ign, NULL);
    }
}

/* True when WEFT_DEBUG lists the switch key (for example "guard=mprotect"). */
static bool debug_switch(const char *key)
{
    const char *s = getenv("WEFT_DEBUG");
    if (!s)
        return false;
    size_t len = strlen(key);
    while (*s) {
        size_t item = strcspn(s, ",");
        if (item == len && strncmp(s, key, len) == 0)
            return true;
        s += item;
        if (*s == ',')
            s++;
    }
    return false;
}

int weft_init(const weft_config *cfg)
{
    /* A coroutine would block its P on life_lock while weft_shutdown holds
     * it waiting for that very P. */
    if (weft_in_coroutine())
        return WEFT_EINVAL;
    int maxprocs = 0;
    size_t stack_size = 0;
    if (cfg) {
        if (cfg->maxprocs < 0 || cfg->maxprocs > MAXPROCS_LIMIT)
            return WEFT_EINVAL;
        maxprocs = cfg->maxprocs;
        if (cfg->stack_size) {
            stack_size = weft__stack_round(cfg->stack_size);
            if (!stack_size)
                return WEFT_EINVAL;
        }
    }
    if (!maxprocs)
        maxprocs = env_maxprocs(default_maxprocs());
    if (!stack_size)
        stack_size = env_stack_size(weft__stack_round(DEFAULT_STACK_SIZE));

    pthread_mutex_lock(&life_lock);
    if (atomic_load(&weft__rt.running)) {
        pthread_mutex_unlock(&life_lock);
        return WEFT_EINVAL;
    }
    ignore_sigpipe();
    /* The network poller first: the Ps poll it as soon as they start. */
    int err = weft__netpoll_init(debug_switch("netpoll=loop"));
    if (err) {
        pthread_mutex_unlock(&life_lock);
        return err == WEFT_ENOMEM || err == -EMFILE || err == -ENFILE ? WEFT_ENOMEM : err;
    }
    err = weft__sched_init(maxprocs, stack_size, debug_switch("guard=mprotect"));
    if (err) {
        weft__netpoll_term();
        pthread_mutex_unlock(&life_lock);
        return err;
    }
    atomic_store(&weft__rt.outside_used, false);
    atomic_store(&weft__rt.detect_deadlock, !debug_switch("deadlock=0"));
    err = weft__poller_init();
    if (err) {
        weft__sched_stop();
        weft__sched_term();
        weft__netpoll_term();
        pthread_mutex_unlock(&life_lock);
        return err < 0 && err != WEFT_ENOMEM ? WEFT_ENOMEM : err;
    }
    weft__signal_quit_dump(debug_switch("dump=sigquit"));
    weft__overflow_handler_install();
    weft__gate_open();
    pthread_mutex_unlock(&life_lock);
    return 0;
}

int weft_shutdown(void)
{
    if (weft_in_coroutine())
        return WEFT_EINVAL;
    pthread_mutex_lock(&life_lock);
    if (!atomic_load(&weft__rt.running)) {
        pthread_mutex_unlock(&life_lock);
        return WEFT_EINVAL;
    }
    /* Close the gate first: from then on weft_go from plain threads fails
     * and the poller's wakeups are dropped. Then the Ps, so nothing runs
     * while the poller goes. */
    weft__gate_close();
    weft__sched_stop();
    weft__poller_term();
    weft__netpoll_term();
    weft__signal_quit_dump(false);
    weft__overflow_handler_restore();
    /* No P or loop thread runs now, so the pools' per-P caches can be
     * emptied; free_fn runs on this thread. */
    weft__pool_shutdown();
    weft__sched_term();
    pthread_mutex_unlock(&life_lock);
    return 0;
}

typedef struct main_call {
    int (*fn)(void *);
    void *arg;
    int result;
    weft_wg done;
} main_call;

static void main_coroutine(void *arg)
{
    main_call *mc = arg;
    mc->result = mc->fn(mc->arg);
    /* Coroutines left parked now are abandoned by the shutdown that
     * follows, not deadlocked. */
    atomic_store(&weft__rt.detect_deadlock, false);
    weft_wg_done(&mc->done);
}

int weft_main_config(const weft_config *cfg, int (*main_fn)(void *), void *arg)
{
    if (!main_fn)
        return WEFT_EINVAL;
    if (weft_in_coroutine())
        return WEFT_EINVAL;
    int err = weft_init(cfg);
    if (err)
        return err;
    /* This thread only starts main_fn and waits for it, so its calls do
     * not turn the deadlock detector off. */
    weft__thread_internal(true);
    main_call mc = { .fn = main_fn, .arg = arg, .result = 0 };
    weft_wg_add(&mc.done, 1);
    weft_go_opts opts = { .stack_size = 0, .name = "main" };
    /* Line 0: weft_dump prints "spawned by weft_main". */
    err = weft__go_at(main_coroutine, &mc, &opts, "weft_main", 0);
    if (err) {
        weft__thread_internal(false);
        weft_shutdown();
        return err;
    }
    weft_wg_wait(&mc.done);
    weft__thread_internal(false);
    weft_shutdown();
    return mc.result;
}

int weft_main(int (*main_fn)(void *), void *arg)
{
    return weft_main_config(NULL, main_fn, arg);
}

int weft__go_at(weft_fn fn, void *arg, const weft_go_opts *opts,
                const char *file, int line)
{
    if (!fn)
        return WEFT_EINVAL;
    /* A coroutine's P outlives the call, so only plain threads need the
     * gate. */
    if (weft_in_coroutine())
        return weft__sched_spawn(fn, arg, opts, file, line);
    weft__note_outside_use();
    if (!weft__gate_enter())
        return WEFT_EINVAL;
    int err = weft__sched_spawn(fn, arg, opts, file, line);
    weft__gate_leave();
    return err;
}

/* Function forms of the macros, for callers that take their address. */
#undef weft_go
#undef weft_go_with
int weft_go(weft_fn fn, void *arg)
{
    return weft__go_at(fn, arg, NULL, NULL, 0);
}

int weft_go_with(weft_fn fn, void *arg, const weft_go_opts *opts)
{
    return weft__go_at(fn, arg, opts, NULL, 0);
}

void weft_yield(void)
{
    weft__sched_yield();
}

int weft_sleep(int64_t ns)
{
    if (ns <= 0) {
        weft_yield();
        return 0;
    }
    int64_t now = weft_now();
    /* A duration too long to add saturates: the sleep never ends. */
    int64_t deadline = ns > INT64_MAX - now ? INT64_MAX : now + ns;
    if (weft_in_coroutine())
        return weft__timer_sleep(deadline);

    /* A plain thread sleeps in the kernel; it needs no runtime. */
    struct timespec ts = { .tv_sec = deadline / 1000000000,
                           .tv_nsec = deadline % 1000000000 };
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
    return 0;
}

uint64_t weft_id(void)
{
    weft__p *p = weft__p_self();
    return p && p->curg ? p->curg->id : 0;
}

bool weft_in_coroutine(void)
{
    weft__p *p = weft__p_self();
    return p && p->curg;
}

int weft_maxprocs(void)
{
    if (!weft__gate_enter())
        return 0;
    int n = weft__rt.nprocs;
    weft__gate_leave();
    return n;
}

int64_t weft_num_coroutines(void)
{
    if (!weft__gate_enter())
        return 0;
    int64_t n = weft__sched_live();
    weft__gate_leave();
    return n;
}
