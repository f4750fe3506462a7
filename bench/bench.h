/*
 * Declarations shared by the benchmark harness: the driver in bench.c and
 * the workload implementations for weft (weft_workloads.c) and for plain
 * POSIX threads (pthread_workloads.c).
 *
 * A workload runs once per process and returns one number in its raw unit:
 *   spawn   nanoseconds per task spawned and finished
 *   yield   nanoseconds per switch between two tasks on one CPU
 *   skynet  milliseconds for the whole tree (count is the number of leaves)
 *   memory  KiB of resident memory per parked task
 * Every implementation calls bench_fail on a wrong result or a failed call.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

/* Children per skynet node; the leaf count must be a power of it. */
#define SKYNET_FANOUT 10

/* Run workload with count tasks (or switches, or leaves) and return the
 * measurement in the unit listed above. Unknown workloads are fatal. */
double weft_workload_run(const char *workload, int64_t count);
double pthread_workload_run(const char *workload, int64_t count);

/* Monotonic clock in nanoseconds. */
int64_t bench_now_ns(void);

/* VmRSS of the calling process in KiB, read from /proc/self/status. */
int64_t bench_rss_kib(void);

/* Sum of the leaf values 0 .. leaves-1 that a correct skynet returns. */
int64_t skynet_expected_sum(int64_t leaves);

/* Print "weft_bench: error: <message>" to stderr and exit with status 2. */
_Noreturn void bench_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* WEFT_BENCH_H */
