/*
 * Declarations shared by the benchmark harness: the driver in bench.c, the
 * workload implementations for weft (weft_workloads.c) and for plain POSIX
 * threads (pthread_workloads.c), the libuv echo server (libuv_server.c) and
 * the TCP load generator (loadgen.c).
 *
 * A workload runs once per process and returns one number in its raw unit:
 *   spawn        nanoseconds per task spawned and finished
 *   yield        nanoseconds per switch between two tasks on one CPU
 *   skynet       milliseconds for the whole tree (count is the number of
 *                leaves); weft sums with wait groups and atomics
 *   skynet-chan  the same tree, each node receiving its children's sums on
 *                an unbuffered channel of its own
 *   memory       KiB of resident memory (VmRSS) per parked task, with the
 *                page-table growth per task beside it
 *   pingpong     nanoseconds per round trip between two tasks over two
 *                unbuffered channels
 *   chan         nanoseconds per item through one buffered channel
 *   select       nanoseconds per message taken by one receiver selecting
 *                over SELECT_CHANNELS channels
 *   sleep        milliseconds until every task has slept SLEEP_ROUNDS times
 *   mutex        nanoseconds per lock, increment and unlock of one mutex
 *                shared by every task (count is the number of locks)
 *   rwmutex      nanoseconds per operation on one reader/writer mutex: one
 *                operation in RWMUTEX_WRITE_EVERY takes the write lock, the
 *                others the read lock (count is the number of operations)
 *   wg-fanout    nanoseconds per task spawned and counted down on a wait
 *                group, in rounds (count is the number of tasks)
 *   context      nanoseconds per cancelable context made, canceled and
 *                released (count is the number of contexts)
 *   tcp-echo     messages per second through an echo server, measured by
 *                the load generator, with the median and 99th percentile
 *                round-trip latency in microseconds beside it (count is
 *                the messages per connection)
 * Some workloads take a parameter besides the count, 0 meaning none:
 *   pingpong     processors: weft's maxprocs, Go's GOMAXPROCS, or the CPUs
 *                the pthreads process may run on
 *   chan         producers, and as many consumers
 *   select       capacity of each channel, 0 for unbuffered
 *   mutex        locks per task, so count / param tasks run; param equal
 *                to count is the uncontended case
 *   rwmutex      operations per task, so count / param tasks run
 *   wg-fanout    rounds: each spawns count / param tasks and waits for them
 *   tcp-echo     connections
 * For mutex, rwmutex and wg-fanout, count must be a multiple of the
 * parameter.
 * Every implementation calls bench_fail on a wrong result or a failed call.
 */
#ifndef WEFT_BENCH_H
#define WEFT_BENCH_H

#include <stdint.h>

/* Children per skynet node. The leaf count must be a power of it. */
#define SKYNET_FANOUT 10

/* Capacity of the channel in the chan workload. */
#define CHAN_CAPACITY 1024

/* Channels, each with its own producer, in the select workload. */
#define SELECT_CHANNELS 4

/* Each task of the sleep workload sleeps SLEEP_ROUNDS times SLEEP_NS. */
#define SLEEP_ROUNDS 10
#define SLEEP_NS 1000000

/* In the rwmutex workload, operation i of each task takes the write lock
 * when i is a multiple of RWMUTEX_WRITE_EVERY, and the read lock
 * otherwise. */
#define RWMUTEX_WRITE_EVERY 100

/* In the tcp-echo workload, each connection sends messages of
 * ECHO_MESSAGE_BYTES bytes, one at a time, and waits for the echo of each
 * before sending the next. LOADGEN_THREADS threads share the connections. */
#define ECHO_MESSAGE_BYTES 64
#define LOADGEN_THREADS 2

/* The outcome of one workload run. */
typedef struct bench_result {
    double value;            /* in the workload's unit, listed above */
    double page_tables_kib;  /* memory only: VmPTE growth per task, else -1 */
} bench_result;

/* Run workload with count tasks (or switches, leaves, round trips, items or
 * messages) and its parameter, listed above. Unknown workloads are fatal. */
bench_result weft_workload_run(const char *workload, int64_t count,
                               int64_t param);
bench_result pthread_workload_run(const char *workload, int64_t count,
                                  int64_t param);

/* Echo servers for the tcp-echo workload, one per implementation; the Go
 * one is in bench/go. Each listens on 127.0.0.1 with a port the system
 * picks, prints "port N" on stdout, and echoes every byte it reads on a
 * connection back to that connection until standard input reaches end of
 * file. Then it returns 0 with its connections still open, and the process
 * exits. An error that only ends one connection is printed to stderr. */
int weft_echo_server(void);
int pthread_echo_server(void);
int libuv_echo_server(void);

/* Block the calling thread until standard input reaches end of file or
 * fails. The driver stops an echo server by closing the server's stdin. */
void bench_wait_stdin_eof(void);

/* The tcp-echo load generator: open connections to 127.0.0.1:port, then
 * run messages round trips on each from LOADGEN_THREADS threads, checking
 * every echo byte for byte. Prints "result MSG_PER_S", "p50 US" and
 * "p99 US" on stdout and returns 0; failures call bench_fail. */
int loadgen_run(int port, int64_t connections, int64_t messages);

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

/* Return count / per_task for a workload whose parameter must divide its
 * count: the number of tasks, or for wg-fanout the tasks per round. Fails
 * unless per_task is positive and divides count. */
int64_t bench_tasks(const char *workload, int64_t count, int64_t per_task);

/* Write locks that one task of the rwmutex workload takes in ops
 * operations. */
int64_t rwmutex_writes_per_task(int64_t ops);

/* Sum of the leaf values 0 .. leaves-1 that a correct skynet returns. The
 * chan and select workloads send the values 0 .. count-1, so their sum is
 * the same. */
int64_t skynet_expected_sum(int64_t leaves);

/* Print "weft-bench: error: <message>" to stderr and exit with status 2. */
_Noreturn void bench_fail(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

#endif /* WEFT_BENCH_H */
