/*
 * weft/runtime.h: starting and stopping the runtime, spawning coroutines,
 * yielding, sleeping and the clock.
 *
 * Any thread may call these functions while the runtime runs. A call that
 * waits parks the calling coroutine, or blocks the calling thread when it is
 * not a coroutine. A coroutine may resume on another OS thread after any
 * call that can park, so never keep the address of a thread-local variable
 * (errno included) across such a call.
 */
#ifndef WEFT_RUNTIME_H
#define WEFT_RUNTIME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef void (*weft_fn)(void *arg);

/* Runtime settings. Zero-initialised means every default; a non-zero field
 * wins over the environment variable, which wins over the default. Part of
 * the ABI: a new field bumps the shared library's major version. */
typedef struct weft_config {
    int maxprocs;      /* P slots; 0: WEFT_MAXPROCS, else usable CPUs */
    size_t stack_size; /* bytes per stack; 0: WEFT_STACK_SIZE, else 256 KiB */
} weft_config;

/* Per-spawn options for weft_go_with. */
typedef struct weft_go_opts {
    size_t stack_size; /* 0: the runtime's default */
    const char *name;  /* kept for diagnostics; copied, may be NULL */
} weft_go_opts;

/* Start the runtime, run main_fn as the first coroutine, shut down when it
 * returns and return its result. Returns a negative WEFT_E* code without
 * running main_fn when the runtime cannot start. */
int weft_main(int (*main_fn)(void *arg), void *arg);
int weft_main_config(const weft_config *cfg, int (*main_fn)(void *arg),
                     void *arg);

/* Start the runtime for a program that keeps its own main thread. cfg may be
 * NULL. Returns WEFT_EINVAL when the runtime already runs, cfg is invalid or
 * the caller is a coroutine, WEFT_ENOMEM when threads or memory cannot be
 * had. */
int weft_init(const weft_config *cfg);

/* Stop the runtime. Every coroutine still alive, blocked or runnable, is
 * abandoned and its stack freed. A coroutine that is running at the time
 * is abandoned at its next park or yield, so one that computes without
 * yielding delays the return. Must be called from a plain thread, not a
 * coroutine (WEFT_EINVAL). Returns WEFT_EINVAL when the runtime is not
 * running. A later weft_init starts a fresh runtime. */
int weft_shutdown(void);

/* Spawn fn(arg) as a new coroutine. Returns 0, WEFT_EINVAL (fn is NULL, the
 * runtime is not running, or a bad stack size) or WEFT_ENOMEM. */
int weft_go(weft_fn fn, void *arg);
int weft_go_with(weft_fn fn, void *arg, const weft_go_opts *opts);

/* Record the spawn site for diagnostics; used exactly like the functions. */
int weft__go_at(weft_fn fn, void *arg, const weft_go_opts *opts,
                const char *file, int line);
#define weft_go(fn, arg) weft__go_at((fn), (arg), NULL, __FILE__, __LINE__)
#define weft_go_with(fn, arg, opts)                                           \
    weft__go_at((fn), (arg), (opts), __FILE__, __LINE__)

/* Let other coroutines run. Outside a coroutine, yields the thread. */
void weft_yield(void);

/* Wait at least ns nanoseconds. A coroutine parks; a plain thread sleeps in
 * the kernel, with or without a running runtime. ns <= 0 yields. Returns 0,
 * or WEFT_ENOMEM when the timer heap cannot grow. */
int weft_sleep(int64_t ns);

int64_t weft_now(void);        /* monotonic clock, nanoseconds */
uint64_t weft_id(void);        /* current coroutine's id, 0 outside one */
bool weft_in_coroutine(void);  /* true inside a weft coroutine */
int weft_maxprocs(void);       /* P slots of the running runtime, else 0 */
int64_t weft_num_coroutines(void); /* live user coroutines */

#define WEFT_NS(n) ((int64_t)(n))
#define WEFT_US(n) ((int64_t)(n) * 1000)
#define WEFT_MS(n) ((int64_t)(n) * 1000000)
#define WEFT_SEC(n) ((int64_t)(n) * 1000000000)

#ifdef __cplusplus
}
#endif

#endif /* WEFT_RUNTIME_H */
