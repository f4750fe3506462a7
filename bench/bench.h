/*
 * Declarations shared by the benchmark harness: the driver in bench.c and
 * the workload implementations for weft (weft_workloads.c) and for plain
 * POSIX threads (pthread_workloads.c).
 *
 * A workload runs once per process and returns one number in its raw unit:
 *   spawn   nanoseconds per task spawned and finished
 *   yield   nanoseconds per switch between two tasks on one CPU
 *   skynet  milliseconds for the whole tree (count is the number of leaves)
 *   memory  KiB of resident memory (VmRSS) per parked task, with the
 *           page-table growth per task beside it
 * Every implementation calls bench_fail on a wrong result or a failed call.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

/* Children per skynet node. The leaf count must be a power of it. */
#define SKYNET_FANOUT 10

/* The outcome of one workload run. */
typedef struct bench_result {
    double value;            /* in the workload's unit, listed above */
    double page_tables_kib;  /* memory only: VmPTE growth per task, else -1 */
} bench_result;

/* Run workload with count tasks (or switches, or leaves). Unknown
 * workloads are fatal. */
bench_result weft_workload_run(const char *workload, int64_t count);
bench_result pthread_workload_run(const char *workload, int64_t count);

/* Monotonic clock in nanoseconds. */
int64_t bench_now_ns(void);

/* Memory of the calling process in KiB, read from /proc/self/status.
 * Page tables (VmPTE) are not part of the resident set (VmRSS). */
typedef struct bench_memory {
    int64_t rss_kib;
    int64_t page_tables_kib;
} bench_memory;
bench_memory bench_memory_read(void);

/* Growth per task between two readings. */
bench_result bench_memory_per_task(bench_memory before, bench_memory after,
                                   int64_t count);

/* Sum of the leaf values 0 .. leaves-1 that a correct skynet returns. */
int64_t skynet_expected_sum(int64_t leaves);

/* Print "weft-bench: error: <message>" to stderr and exit with status 2. */
_Noreturn void bench_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* WEFT_BENCH_H */
