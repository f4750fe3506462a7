/*
 * weft-bench: runs the same concurrency workloads on weft, on plain POSIX
 * threads and, when the go tool is on PATH, on Go, then prints a table of
 * medians and writes it as CSV.
 *
 * The driver never starts a runtime itself. Every measurement is a fresh
 * child process: this executable run again as
 * "weft-bench --child IMPL WORKLOAD COUNT [PARAM]", or the Go program in
 * bench/go, built once per harness run with `go build`. A child runs one workload
 * once and prints "result VALUE" on stdout. The driver kills a child that
 * outlives --timeout and marks its cell FAIL. Separate processes keep one
 * runtime's memory out of another's RSS reading, and every run starts
 * cold: no warm-up, no cached stacks from an earlier run.
 *
 * The tcp-echo workload runs two processes per measurement. The echo
 * server ("weft-bench --server IMPL tcp-echo", or the Go program with
 * -workload tcp-echo) prints "port N". The driver then runs the load
 * generator ("weft-bench --loadgen PORT CONNECTIONS MESSAGES") against
 * that port, and stops the server by closing its standard input. A server
 * that does not print its port, or does not exit after its stdin closes,
 * is killed within a timeout and its cell marked FAIL, as is a generator
 * that outlives --timeout.
 *
 * Runs are interleaved (workload, then repetition, then implementation),
 * so a burst of load from other users of the machine spreads over all
 * implementations instead of landing on one.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"

/* Set by bench/CMakeLists.txt. */
#ifndef WEFT_BENCH_GO_SOURCE_DIR
#error "WEFT_BENCH_GO_SOURCE_DIR must name the directory of the Go workloads"
#endif
#ifndef WEFT_BENCH_OUTPUT_DIR
#error "WEFT_BENCH_OUTPUT_DIR must name the build directory of the harness"
#endif
#ifndef WEFT_BENCH_SOURCE_ROOT
#error "WEFT_BENCH_SOURCE_ROOT must name the repository root"
#endif

#define MAX_REPS 50
#define MAX_ROWS 24
#define DEFAULT_TIMEOUT_S 120
#define GO_BUILD_TIMEOUT_S 300
/* Time an echo server gets to print its port, and to exit once its
 * standard input has closed. */
#define SERVER_START_TIMEOUT_S 10
#define SERVER_STOP_TIMEOUT_S 10

/* libuv runs only the tcp-echo workload. */
enum impl { IMPL_WEFT, IMPL_PTHREADS, IMPL_GO, IMPL_LIBUV, IMPL_COUNT };
static const char *const impl_names[IMPL_COUNT] = { "weft", "pthreads", "go",
                                                    "libuv" };

/* One line of the result table and the measurements behind it. */
typedef struct row {
    const char *label;              /* shown in the table and the CSV */
    const char *workload;           /* passed to the child */
    const char *unit;
    int reps;
    int64_t count[IMPL_COUNT];      /* passed to the child, 0 when not run */
    int64_t param;                  /* passed to the child when not 0; its
                                     * meaning per workload is in bench.h */
    double scale[IMPL_COUNT];       /* multiplies each child result */
    const char *note;               /* what differs between the columns */
    const char *key;                /* the child's output line to read:
                                     * "result", or "p50" and "p99" */
    bool server;                    /* runs an echo server and the load
                                     * generator; shown in the I/O table */
    bool shares_runs;               /* takes its values from the runs of
                                     * the row above instead of its own */
    bool higher_is_better;          /* a rate: the ratios are inverted */

    double values[IMPL_COUNT][MAX_REPS];
    int nvalues[IMPL_COUNT];
    double page_tables[IMPL_COUNT][MAX_REPS];  /* memory rows only */
    int npage_tables[IMPL_COUNT];
    bool failed[IMPL_COUNT];
} row;

typedef struct options {
    bool quick;
    int reps;                 /* 0: the mode's default */
    int timeout_s;
    const char *csv_path;
    const char *only;         /* comma-separated workloads, or NULL */
    bool use_go;
} options;

/* ---- helpers shared with the workloads (bench.h) ------------------------ */

int64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

bench_memory bench_memory_read(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    if (!f)
        bench_fail("cannot open /proc/self/status: %s", strerror(errno));
    char line[256];
    long long kib;
    bench_memory m = { .rss_kib = -1, .page_tables_kib = -1 };
    while (fgets(line, sizeof line, f)) {
        if (sscanf(line, "VmRSS: %lld kB", &kib) == 1)
            m.rss_kib = kib;
        else if (sscanf(line, "VmPTE: %lld kB", &kib) == 1)
            m.page_tables_kib = kib;
    }
    fclose(f);
    if (m.rss_kib < 0 || m.page_tables_kib < 0)
        bench_fail("VmRSS or VmPTE not found in /proc/self/status");
    return m;
}

bench_result bench_memory_per_task(bench_memory before, bench_memory after,
                                   int64_t count)
{
    return (bench_result){
        .value = (double)(after.rss_kib - before.rss_kib) / (double)count,
        .page_tables_kib = (double)(after.page_tables_kib - before.page_tables_kib) /
                           (double)count,
    };
}

int64_t skynet_expected_sum(int64_t leaves)
{
    return leaves * (leaves - 1) / 2;
}

int64_t bench_tasks(const char *workload, int64_t count, int64_t per_task)
{
    if (per_task <= 0 || count % per_task != 0)
        bench_fail("the %s workload needs a parameter that divides its count "
                   "%lld, got %lld", workload, (long long)count,
                   (long long)per_task);
    return count / per_task;
}

int64_t rwmutex_writes_per_task(int64_t ops)
{
    return (ops + RWMUTEX_WRITE_EVERY - 1) / RWMUTEX_WRITE_EVERY;
}

void bench_wait_stdin_eof(void)
{
    char buf[256];
    for (;;) {
        ssize_t n = read(STDIN_FILENO, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
    }
}

void bench_fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fputs("weft-bench: error: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    exit(2);
}

/* ---- child mode ---------------------------------------------------------- */

static bool parse_count(const char *s, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v <= 0)
        return false;
    *out = v;
    return true;
}

/* Run one workload in this process and print its result for the driver. */
static int child_main(int argc, char **argv)
{
    int64_t count, param = 0;
    if (argc < 5 || argc > 6 || !parse_count(argv[4], &count) ||
        (argc == 6 && !parse_count(argv[5], &param)))
        bench_fail("usage: weft-bench --child weft|pthreads WORKLOAD COUNT "
                   "[PARAM]");

    bench_result result;
    if (strcmp(argv[2], "weft") == 0)
        result = weft_workload_run(argv[3], count, param);
    else if (strcmp(argv[2], "pthreads") == 0)
        result = pthread_workload_run(argv[3], count, param);
    else
        bench_fail("unknown implementation \"%s\" (expected weft or pthreads)",
                   argv[2]);
    printf("result %.6f\n", result.value);
    if (result.page_tables_kib >= 0)
        printf("page_tables %.6f\n", result.page_tables_kib);
    return 0;
}

/* Run an echo server until standard input closes:
 * "weft-bench --server IMPL tcp-echo". */
static int server_main(int argc, char **argv)
{
    if (argc != 4 || strcmp(argv[3], "tcp-echo") != 0)
        bench_fail("usage: weft-bench --server weft|pthreads|libuv tcp-echo");
    if (strcmp(argv[2], "weft") == 0)
        return weft_echo_server();
    if (strcmp(argv[2], "pthreads") == 0)
        return pthread_echo_server();
    if (strcmp(argv[2], "libuv") == 0)
        return libuv_echo_server();
    bench_fail("unknown server implementation \"%s\" (expected weft, "
               "pthreads or libuv)", argv[2]);
}

/* Drive an echo server: "weft-bench --loadgen PORT CONNECTIONS MESSAGES". */
static int loadgen_main(int argc, char **argv)
{
    int64_t port, connections, messages;
    if (argc != 5 || !parse_count(argv[2], &port) || port > 65535 ||
        !parse_count(argv[3], &connections) ||
        !parse_count(argv[4], &messages))
        bench_fail("usage: weft-bench --loadgen PORT CONNECTIONS MESSAGES "
                   "(positive integers, PORT at most 65535)");
    return loadgen_run((int)port, connections, messages);
}

/* ---- running child processes -------------------------------------------- */

/* Return true for a child that exited with status 0, else false with the
 * reason in why. */
static bool exit_status_ok(int status, char *why, size_t why_size)
{
    if (WIFSIGNALED(status)) {
        snprintf(why, why_size, "killed by signal %d (%s)", WTERMSIG(status),
                 strsignal(WTERMSIG(status)));
        return false;
    }
    if (WEXITSTATUS(status) != 0) {
        snprintf(why, why_size, "exited with status %d", WEXITSTATUS(status));
        return false;
    }
    return true;
}

/* Run argv (in dir, when not NULL) with stdout captured into out, killing
 * it after timeout_s seconds. stderr passes through. Returns true when the
 * process exited with status 0, else false with the reason in why. */
static bool run_process(char *const argv[], const char *dir, int timeout_s,
                        char *out, size_t out_size, char *why, size_t why_size)
{
    int fds[2];
    out[0] = '\0';
    why[0] = '\0';
    if (pipe2(fds, O_CLOEXEC) != 0) {
        snprintf(why, why_size, "pipe failed: %s", strerror(errno));
        return false;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_size, "fork failed: %s", strerror(errno));
        close(fds[0]);
        close(fds[1]);
        return false;
    }
    if (pid == 0) {
        dup2(fds[1], STDOUT_FILENO);
        if (dir && chdir(dir) != 0) {
            fprintf(stderr, "weft-bench: error: cannot enter %s: %s\n", dir,
                    strerror(errno));
            _exit(127);
        }
        execv(argv[0], argv);
        fprintf(stderr, "weft-bench: error: cannot run %s: %s\n", argv[0],
                strerror(errno));
        _exit(127);
    }
    close(fds[1]);

    /* Read until the child closes stdout or the deadline passes. */
    int64_t deadline = bench_now_ns() + (int64_t)timeout_s * 1000000000;
    size_t used = 0;
    bool timed_out = false;
    for (;;) {
        int64_t left_ms = (deadline - bench_now_ns()) / 1000000;
        if (left_ms <= 0) {
            timed_out = true;
            break;
        }
        struct pollfd pfd = { .fd = fds[0], .events = POLLIN };
        int ready = poll(&pfd, 1, left_ms > INT_MAX ? INT_MAX : (int)left_ms);
        if (ready < 0 && errno == EINTR)
            continue;
        if (ready <= 0)
            continue;
        char chunk[512];
        ssize_t n = read(fds[0], chunk, sizeof chunk);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t keep = (size_t)n;
        if (keep > out_size - 1 - used)
            keep = out_size - 1 - used;
        memcpy(out + used, chunk, keep);
        used += keep;
        out[used] = '\0';
    }
    close(fds[0]);

    /* A child may close stdout and keep running, so the deadline applies
     * here too. A child past the deadline is killed before the blocking
     * wait, which would otherwise wait for a hung child forever. */
    int status = 0;
    for (;;) {
        if (timed_out)
            kill(pid, SIGKILL);
        pid_t r = waitpid(pid, &status, timed_out ? 0 : WNOHANG);
        if (r == pid)
            break;
        if (r < 0 && errno != EINTR) {
            snprintf(why, why_size, "waitpid failed: %s", strerror(errno));
            return false;
        }
        if (r == 0 && bench_now_ns() >= deadline)
            timed_out = true;
        else if (r == 0)
            usleep(10000);
    }

    if (timed_out) {
        snprintf(why, why_size, "timed out after %d s and was killed", timeout_s);
        return false;
    }
    return exit_status_ok(status, why, why_size);
}

/* ---- echo server processes ---------------------------------------------- */

/* A running echo server: its process, the write end of the pipe on its
 * standard input and the read end of the pipe on its standard output. */
typedef struct server_process {
    pid_t pid;
    int stdin_fd;
    int stdout_fd;
} server_process;

/* Start argv with pipes on its stdin and stdout; stderr passes through. */
static bool server_start(char *const argv[], server_process *server,
                         char *why, size_t why_size)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) != 0) {
        snprintf(why, why_size, "pipe failed: %s", strerror(errno));
        return false;
    }
    if (pipe2(out, O_CLOEXEC) != 0) {
        snprintf(why, why_size, "pipe failed: %s", strerror(errno));
        close(in[0]);
        close(in[1]);
        return false;
    }
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(why, why_size, "fork failed: %s", strerror(errno));
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return false;
    }
    if (pid == 0) {
        /* dup2 clears O_CLOEXEC on the copies the server keeps. */
        dup2(in[0], STDIN_FILENO);
        dup2(out[1], STDOUT_FILENO);
        execv(argv[0], argv);
        fprintf(stderr, "weft-bench: error: cannot run %s: %s\n", argv[0],
                strerror(errno));
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    *server = (server_process){ .pid = pid, .stdin_fd = in[1],
                                .stdout_fd = out[0] };
    return true;
}

/* Read the server's first line, "port N". Returns the port, or -1 with the
 * reason in why when the server prints something else, closes its stdout
 * or takes longer than SERVER_START_TIMEOUT_S. */
static int server_read_port(const server_process *server, char *why,
                            size_t why_size)
{
    char line[256];
    size_t used = 0;
    int64_t deadline = bench_now_ns() + (int64_t)SERVER_START_TIMEOUT_S *
                                            1000000000;
    for (;;) {
        char *newline = memchr(line, '\n', used);
        if (newline) {
            int port;
            char extra;
            *newline = '\0';
            if (sscanf(line, "port %d%c", &port, &extra) == 1 && port > 0 &&
                port <= 65535)
                return port;
            snprintf(why, why_size, "the server printed \"%.64s\" where "
                     "\"port N\" was expected", line);
            return -1;
        }
        if (used == sizeof line - 1) {
            snprintf(why, why_size, "the server's first line is longer than "
                     "%zu bytes", sizeof line - 1);
            return -1;
        }
        int64_t left_ms = (deadline - bench_now_ns()) / 1000000;
        if (left_ms <= 0) {
            snprintf(why, why_size, "the server did not print its port "
                     "within %d s", SERVER_START_TIMEOUT_S);
            return -1;
        }
        struct pollfd pfd = { .fd = server->stdout_fd, .events = POLLIN };
        int ready = poll(&pfd, 1, (int)left_ms);
        if (ready <= 0)
            continue;
        ssize_t n = read(server->stdout_fd, line + used,
                         sizeof line - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(why, why_size, "the server closed its stdout before "
                     "printing its port");
            return -1;
        }
        used += (size_t)n;
    }
}

/* Close the server's stdin, at whose end of file the server exits, and
 * wait for it. A server still running after SERVER_STOP_TIMEOUT_S is
 * killed. With kill_now, the run has already failed and the server is
 * killed at once. Returns true when the server exited with status 0. */
static bool server_stop(server_process *server, bool kill_now, char *why,
                        size_t why_size)
{
    close(server->stdin_fd);
    if (kill_now)
        kill(server->pid, SIGKILL);
    int64_t deadline = bench_now_ns() + (int64_t)SERVER_STOP_TIMEOUT_S *
                                            1000000000;
    bool timed_out = false;
    int status = 0;
    for (;;) {
        pid_t r = waitpid(server->pid, &status, WNOHANG);
        if (r == server->pid)
            break;
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            snprintf(why, why_size, "waitpid failed: %s", strerror(errno));
            close(server->stdout_fd);
            return false;
        }
        if (!timed_out && bench_now_ns() >= deadline) {
            timed_out = true;
            kill(server->pid, SIGKILL);
        }
        usleep(1000);
    }
    close(server->stdout_fd);
    if (kill_now)
        return false;
    if (timed_out) {
        snprintf(why, why_size, "the server did not exit within %d s of its "
                 "stdin closing and was killed", SERVER_STOP_TIMEOUT_S);
        return false;
    }
    char status_why[128];
    if (!exit_status_ok(status, status_why, sizeof status_why)) {
        snprintf(why, why_size, "the server %s", status_why);
        return false;
    }
    return true;
}

/* Return the path of name in a PATH directory in buf, or NULL. */
static const char *find_in_path(const char *name, char *buf, size_t size)
{
    const char *path = getenv("PATH");
    if (!path)
        return NULL;
    while (*path) {
        size_t len = strcspn(path, ":");
        snprintf(buf, size, "%.*s/%s", (int)len, len ? path : ".", name);
        struct stat st;
        if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
            return buf;
        path += len;
        if (*path == ':')
            path++;
    }
    return NULL;
}

/* ---- the Go side -------------------------------------------------------- */

static char go_tool[PATH_MAX];
static char go_binary[PATH_MAX];
static char go_version[128];

/* Build bench/go into the build directory. Returns false, with the reason
 * printed, when Go runs are to be skipped. */
static bool go_prepare(void)
{
    if (!find_in_path("go", go_tool, sizeof go_tool)) {
        printf("go: go not found on PATH; skipping the Go runs\n");
        return false;
    }

    char out[256], why[256];
    char *version_argv[] = { go_tool, "version", NULL };
    if (run_process(version_argv, NULL, 30, out, sizeof out, why, sizeof why))
        snprintf(go_version, sizeof go_version, "%.*s",
                 (int)strcspn(out, "\n"), out);

    /* go build needs a cache directory. Give it one in the build tree when
     * the environment names none, as in minimal containers. */
    if (!getenv("GOCACHE") && !getenv("XDG_CACHE_HOME") && !getenv("HOME"))
        setenv("GOCACHE", WEFT_BENCH_OUTPUT_DIR "/go-cache", 1);

    snprintf(go_binary, sizeof go_binary, "%s/weft-bench-go",
             WEFT_BENCH_OUTPUT_DIR);
    char *build_argv[] = { go_tool, "build", "-o", go_binary, ".", NULL };
    printf("go: building %s with %s (%s)\n", go_binary, go_tool,
           go_version[0] ? go_version : "unknown version");
    if (!run_process(build_argv, WEFT_BENCH_GO_SOURCE_DIR, GO_BUILD_TIMEOUT_S,
                     out, sizeof out, why, sizeof why)) {
        printf("go: go build in %s %s; skipping the Go runs\n",
               WEFT_BENCH_GO_SOURCE_DIR, why);
        return false;
    }
    return true;
}

/* ---- the table ------------------------------------------------------------ */

static void row_set(row *r, const char *label, const char *workload,
                    const char *unit, int reps, int64_t weft_count,
                    int64_t pthread_count, int64_t go_count, const char *note)
{
    memset(r, 0, sizeof *r);
    r->label = label;
    r->workload = workload;
    r->unit = unit;
    r->reps = reps;
    r->count[IMPL_WEFT] = weft_count;
    r->count[IMPL_PTHREADS] = pthread_count;
    r->count[IMPL_GO] = go_count;
    for (int i = 0; i < IMPL_COUNT; i++)
        r->scale[i] = 1.0;
    r->note = note;
    r->key = "result";
}

/* Append the rows of the sync and context workloads after rows[n - 1] and
 * return the new row count. Quick mode runs a tenth of every count. Where
 * a row's parameter is a per-task count, it shrinks instead of the number
 * of tasks. */
static int rows_init_sync(row *rows, int n, const options *opt, int timing_reps)
{
    int64_t tenth = opt->quick ? 10 : 1;
    int64_t locks_per_task = 10000 / tenth;
    int64_t locks = 1000 * locks_per_task;
    int64_t pthread_locks = 100 * locks_per_task;
    int64_t uncontended = 10000000 / tenth;
    int64_t rw_ops_per_task = 1000000 / tenth;
    int64_t rw_ops = 8 * rw_ops_per_task;
    int64_t fanout_rounds = 10;
    int64_t fanout_tasks = 1000000 / tenth;
    int64_t pthread_fanout_tasks = 10000 / tenth;
    int64_t contexts = 1000000 / tenth;

    row_set(&rows[n], "mutex contended", "mutex", "ns/lock", timing_reps,
            locks, pthread_locks, locks,
            opt->quick
                ? "mutex contended: 1,000 tasks lock one mutex, increment a "
                  "counter and unlock, 1,000 times each; pthreads runs 100 "
                  "threads on a pthread_mutex_t. Time per lock, including "
                  "spawning and joining the tasks."
                : "mutex contended: 1,000 tasks lock one mutex, increment a "
                  "counter and unlock, 10,000 times each; pthreads runs 100 "
                  "threads on a pthread_mutex_t. Time per lock, including "
                  "spawning and joining the tasks.");
    rows[n++].param = locks_per_task;
    row_set(&rows[n], "mutex uncontended", "mutex", "ns/lock", timing_reps,
            uncontended, uncontended, uncontended,
            "mutex uncontended: the same loop in a single task, so every "
            "lock is free.");
    rows[n++].param = uncontended;
    row_set(&rows[n], "rwmutex 1% write", "rwmutex", "ns/op", timing_reps,
            rw_ops, rw_ops, rw_ops,
            opt->quick
                ? "rwmutex: 8 tasks do 100,000 operations each on one "
                  "reader/writer mutex, every 100th under the write lock, "
                  "the rest under the read lock; pthreads uses a "
                  "pthread_rwlock_t that prefers writers, as Go does."
                : "rwmutex: 8 tasks do 1,000,000 operations each on one "
                  "reader/writer mutex, every 100th under the write lock, "
                  "the rest under the read lock; pthreads uses a "
                  "pthread_rwlock_t that prefers writers, as Go does.");
    rows[n++].param = rw_ops_per_task;
    row_set(&rows[n], "wg fan-out", "wg-fanout", "ns/task", timing_reps,
            fanout_tasks, pthread_fanout_tasks, fanout_tasks,
            opt->quick
                ? "wg fan-out: 10 rounds, each spawning 10,000 tasks that "
                  "call done on a wait group the spawner waits on; pthreads "
                  "creates 100 detached threads per round and counts them "
                  "down under a mutex and a condition variable."
                : "wg fan-out: 10 rounds, each spawning 100,000 tasks that "
                  "call done on a wait group the spawner waits on; pthreads "
                  "creates 1,000 detached threads per round and counts them "
                  "down under a mutex and a condition variable.");
    rows[n++].param = fanout_rounds;
    row_set(&rows[n++], "context cancel", "context", "ns/ctx", timing_reps,
            contexts, contexts, contexts,
            "context cancel: make a cancelable child of background, cancel "
            "it, check its error and release it. pthreads has no context, "
            "so it allocates, cancels and frees a flag with a mutex and a "
            "condition variable, which has no parent or children.");
    return n;
}

/* Append the tcp-echo rows after rows[n - 1] and return the new row count.
 * One set of runs fills all three: messages per second, then the median
 * and 99th percentile round trip. Quick mode sends 500 messages per
 * connection instead of 10,000. */
static int rows_init_io(row *rows, int n, const options *opt, int timing_reps)
{
    int64_t connections = 100;
    int64_t messages = opt->quick ? 500 : 10000;
    static const struct {
        const char *label, *key, *unit;
    } metrics[] = {
        { "tcp echo", "result", "msg/s" },
        { "tcp echo p50", "p50", "us" },
        { "tcp echo p99", "p99", "us" },
    };
    for (size_t i = 0; i < sizeof metrics / sizeof metrics[0]; i++) {
        row *r = &rows[n++];
        row_set(r, metrics[i].label, "tcp-echo", metrics[i].unit, timing_reps,
                messages, messages, messages, NULL);
        r->count[IMPL_LIBUV] = messages;
        r->param = connections;
        r->key = metrics[i].key;
        r->server = true;
        r->shares_runs = i > 0;
    }
    rows[n - 3].higher_is_better = true;
    rows[n - 3].note =
        opt->quick
            ? "tcp echo: one load generator (2 threads, epoll) keeps 100 "
              "connections to an echo server on 127.0.0.1, each sending 500 "
              "messages of 64 bytes one at a time, waiting for each echo. "
              "weft runs a coroutine per connection, pthreads a thread per "
              "connection, libuv one thread with one loop, Go a goroutine "
              "per connection. Round-trip latency p50 and p99 in "
              "microseconds."
            : "tcp echo: one load generator (2 threads, epoll) keeps 100 "
              "connections to an echo server on 127.0.0.1, each sending "
              "10,000 messages of 64 bytes one at a time, waiting for each "
              "echo. weft runs a coroutine per connection, pthreads a thread "
              "per connection, libuv one thread with one loop, Go a "
              "goroutine per connection. Round-trip latency p50 and p99 in "
              "microseconds.";
    return n;
}

/* Counts per mode. For the first rows, quick mode keeps the full counts
 * where a run takes well under a second and cuts repetitions, the yield
 * loop and the 1,000,000 coroutine memory row instead. */
static int rows_init(row *rows, const options *opt)
{
    int timing_reps = opt->quick ? 3 : 5;
    int memory_reps = 3;
    if (opt->reps)
        timing_reps = memory_reps = opt->reps;
    int64_t switches = opt->quick ? 2000000 : 10000000;
    int64_t handoffs = opt->quick ? 50000 : 200000;
    /* The channel rows run a tenth of their full counts in quick mode.
     * pthreads runs fewer round trips and unbuffered messages, because a
     * handoff between threads took 10 to 40 microseconds on the machine in
     * docs/benchmarks.md. */
    int64_t tenth = opt->quick ? 10 : 1;
    int64_t trips = 1000000 / tenth;
    int64_t pthread_trips = 50000 / tenth;
    int64_t items = 10000000 / tenth;
    int64_t messages = 4000000 / tenth;
    int64_t pthread_unbuffered = 400000 / tenth;
    int64_t sleepers = 100000 / tenth;
    int64_t pthread_sleepers = 1000 / tenth;
    int64_t leaves = 1000000 / tenth;
    int64_t pthread_leaves = 10000 / tenth;
    int n = 0;

    row_set(&rows[n++], "spawn", "spawn", "ns/op", timing_reps,
            1000000, 20000, 1000000,
            "spawn: weft and Go run 1,000,000 tasks, pthreads creates and "
            "joins 20,000 threads (64 KiB stacks); time per task.");
    row_set(&rows[n++], "yield", "yield", "ns/switch", timing_reps,
            switches, handoffs, switches,
            "yield: weft_yield with maxprocs 1 and runtime.Gosched with "
            "GOMAXPROCS=1; pthreads is a condition-variable ping-pong of two "
            "threads pinned to one CPU.");
    row_set(&rows[n], "skynet", "skynet", "ms", timing_reps,
            1000000, 10000, 1000000,
            "skynet: 1,000,000 leaves for weft and Go; pthreads runs 10,000 "
            "leaves (11,111 threads) and its time is multiplied by 100. weft "
            "uses a wait group and an atomic sum per node, Go uses channels, "
            "pthreads uses pthread_join.");
    rows[n++].scale[IMPL_PTHREADS] = 100.0;
    row_set(&rows[n++], "memory 100k", "memory", "KiB/task", memory_reps,
            100000, 10000, 100000,
            "memory: VmRSS growth per parked task; weft parks on a wait "
            "group, Go on a channel receive, pthreads runs 10,000 threads "
            "with 64 KiB stacks on a condition variable. Kernel memory per "
            "thread (kernel stack, task struct) is not in VmRSS.");
    if (!opt->quick)
        row_set(&rows[n++], "memory 1M", "memory", "KiB/task", memory_reps,
                1000000, 10000, 1000000, NULL);

    row_set(&rows[n], "pingpong 1P", "pingpong", "ns/trip", timing_reps,
            trips, pthread_trips, trips,
            "pingpong: round trips over two unbuffered channels, on 1 and on "
            "2 processors (weft maxprocs, GOMAXPROCS, or the CPUs the "
            "pthreads process may use). pthreads uses two rendezvous queues "
            "(a mutex, condition variables, a one-slot buffer and a "
            "handshake) and runs a twentieth of the round trips.");
    rows[n++].param = 1;
    row_set(&rows[n], "pingpong 2P", "pingpong", "ns/trip", timing_reps,
            trips, pthread_trips, trips, NULL);
    rows[n++].param = 2;
    row_set(&rows[n], "chan 1:1", "chan", "ns/item", timing_reps,
            items, items, items,
            "chan: a channel of capacity 1,024 carries 64-bit ints from 1 "
            "producer to 1 consumer, or from 4 to 4; pthreads uses a bounded "
            "queue under one mutex.");
    rows[n++].param = 1;
    row_set(&rows[n], "chan 4:4", "chan", "ns/item", timing_reps,
            items, items, items, NULL);
    rows[n++].param = 4;
    row_set(&rows[n], "select buf", "select", "ns/msg", timing_reps,
            messages, messages, messages,
            "select: one receiver selects over 4 channels of capacity 128 "
            "(buf) or 0 (unbuf), each fed by its own producer; pthreads "
            "waits on one condition variable shared by 4 queues and runs a "
            "tenth of the unbuffered messages.");
    rows[n++].param = 128;
    row_set(&rows[n++], "select unbuf", "select", "ns/msg", timing_reps,
            messages, pthread_unbuffered, messages, NULL);
    row_set(&rows[n++], "sleep", "sleep", "ms", timing_reps,
            sleepers, pthread_sleepers, sleepers,
            opt->quick
                ? "sleep: 10,000 tasks sleep 1 ms ten times each; total time. "
                  "pthreads runs 100 threads, unscaled."
                : "sleep: 100,000 tasks sleep 1 ms ten times each; total "
                  "time. pthreads runs 1,000 threads, unscaled.");
    row_set(&rows[n], "skynet chan", "skynet-chan", "ms", timing_reps,
            leaves, pthread_leaves, leaves,
            opt->quick
                ? "skynet chan: the skynet tree with an unbuffered channel per "
                  "node (Go runs its skynet again), 100,000 leaves; pthreads "
                  "runs 1,000 leaves with a rendezvous queue per node and "
                  "its time is multiplied by 100."
                : "skynet chan: the skynet tree with an unbuffered channel per "
                  "node (Go runs its skynet again), 1,000,000 leaves; "
                  "pthreads runs 10,000 leaves with a rendezvous queue per "
                  "node and its time is multiplied by 100.");
    rows[n++].scale[IMPL_PTHREADS] = (double)leaves / (double)pthread_leaves;
    n = rows_init_sync(rows, n, opt, timing_reps);
    n = rows_init_io(rows, n, opt, timing_reps);

    if (opt->only) {
        int selected = 0;
        for (int i = 0; i < n; i++) {
            const char *p = strstr(opt->only, rows[i].workload);
            size_t len = strlen(rows[i].workload);
            bool listed = false;
            while (p) {
                bool starts = p == opt->only || p[-1] == ',';
                bool ends = p[len] == '\0' || p[len] == ',';
                if (starts && ends) {
                    listed = true;
                    break;
                }
                p = strstr(p + 1, rows[i].workload);
            }
            if (listed)
                rows[selected++] = rows[i];
        }
        n = selected;
    }
    return n;
}

static int compare_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(const double *values, int n)
{
    double sorted[MAX_REPS];
    memcpy(sorted, values, (size_t)n * sizeof sorted[0]);
    qsort(sorted, (size_t)n, sizeof sorted[0], compare_double);
    return n % 2 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0;
}

/* Median of the row's values for impl, or a negative value when there is
 * none (not run, or failed). */
static double row_median(const row *r, int impl)
{
    if (r->failed[impl] || r->nvalues[impl] == 0)
        return -1.0;
    return median(r->values[impl], r->nvalues[impl]);
}

/* Median page-table growth per task, or a negative value when there is none. */
static double row_page_tables(const row *r, int impl)
{
    if (r->failed[impl] || r->npage_tables[impl] == 0)
        return -1.0;
    return median(r->page_tables[impl], r->npage_tables[impl]);
}

/* Format a cell: the value, FAIL, or n/a when the column was not run. */
static const char *cell_text(const row *r, int impl, char *buf, size_t size)
{
    if (r->failed[impl])
        return "FAIL";
    double m = row_median(r, impl);
    if (m < 0)
        return "n/a";
    int decimals = 2;
    if (m >= 100)
        decimals = 0;
    else if (m >= 10)
        decimals = 1;
    snprintf(buf, size, "%.*f", decimals, m);
    return buf;
}

static const char *ratio_text(const row *r, int other, char *buf, size_t size)
{
    double weft = row_median(r, IMPL_WEFT);
    double base = row_median(r, other);
    if (weft < 0 || base <= 0)
        return "n/a";
    /* Two significant digits for small ratios, so 0.0027 does not print
     * as 0.00. A rate's ratio is inverted, so that below 1 still means
     * that weft is faster: the other's rate over weft's is weft's time per
     * message over the other's. */
    if (r->higher_is_better && weft <= 0)
        return "n/a";
    double ratio = r->higher_is_better ? base / weft : weft / base;
    snprintf(buf, size, ratio >= 0.1 ? "%.2f" : "%.2g", ratio);
    return buf;
}

/* The columns of the main table; libuv is in the I/O table only. */
static const int main_impls[] = { IMPL_WEFT, IMPL_PTHREADS, IMPL_GO };
#define MAIN_IMPLS (sizeof main_impls / sizeof main_impls[0])

/* Print the server rows: every implementation and a ratio for each. */
static void print_io_table(const row *rows, int n)
{
    static const int impls[] = { IMPL_WEFT, IMPL_PTHREADS, IMPL_LIBUV, IMPL_GO };
    char cell[32];
    printf("\nI/O medians (ratio below 1: weft is faster; for msg/s the "
           "ratio is the other's msg/s over weft's)\n");
    printf("%-17s %-10s %10s %10s %10s %10s %14s %11s %8s\n", "workload",
           "unit", "weft", "pthreads", "libuv", "go", "weft/pthreads",
           "weft/libuv", "weft/go");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        if (!r->server)
            continue;
        printf("%-17s %-10s", r->label, r->unit);
        for (size_t k = 0; k < sizeof impls / sizeof impls[0]; k++)
            printf(" %10s", cell_text(r, impls[k], cell, sizeof cell));
        printf(" %14s", ratio_text(r, IMPL_PTHREADS, cell, sizeof cell));
        printf(" %11s", ratio_text(r, IMPL_LIBUV, cell, sizeof cell));
        printf(" %8s\n", ratio_text(r, IMPL_GO, cell, sizeof cell));
    }
}

static void print_table(const row *rows, int n)
{
    char a[32], b[32], c[32], d[32], e[32];
    bool any_server = false, any_other = false;
    for (int i = 0; i < n; i++) {
        any_server |= rows[i].server;
        any_other |= !rows[i].server;
    }
    if (any_other) {
        printf("\nMedians (ratio below 1: weft is faster or smaller)\n");
        printf("%-17s %-10s %10s %10s %10s %14s %8s\n", "workload", "unit",
               "weft", "pthreads", "go", "weft/pthreads", "weft/go");
    }
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        if (r->server)
            continue;
        printf("%-17s %-10s %10s %10s %10s %14s %8s\n", r->label, r->unit,
               cell_text(r, IMPL_WEFT, a, sizeof a),
               cell_text(r, IMPL_PTHREADS, b, sizeof b),
               cell_text(r, IMPL_GO, c, sizeof c),
               ratio_text(r, IMPL_PTHREADS, d, sizeof d),
               ratio_text(r, IMPL_GO, e, sizeof e));
    }
    if (any_server)
        print_io_table(rows, n);

    bool any_page_tables = false;
    for (int i = 0; i < n; i++)
        for (size_t k = 0; k < MAIN_IMPLS; k++)
            any_page_tables |= row_page_tables(&rows[i], main_impls[k]) >= 0;
    if (any_page_tables) {
        printf("\nPage tables per task (VmPTE growth, not part of VmRSS above)\n");
        for (int i = 0; i < n; i++) {
            if (strcmp(rows[i].workload, "memory") != 0)
                continue;
            printf("%-17s %-10s", rows[i].label, "KiB/task");
            for (size_t k = 0; k < MAIN_IMPLS; k++) {
                double v = row_page_tables(&rows[i], main_impls[k]);
                if (v >= 0)
                    printf(" %10.2f", v);
                else
                    printf(" %10s", "n/a");
            }
            printf("\n");
        }
    }

    printf("\nNotes:\n");
    for (int i = 0; i < n; i++)
        if (rows[i].note)
            printf("  %s\n", rows[i].note);
}

/* The libuv columns come last, after the columns that older versions of
 * the harness wrote. */
static bool write_csv(const char *path, const row *rows, int n)
{
    FILE *f = fopen(path, "w");
    if (!f) {
        fprintf(stderr, "weft-bench: error: cannot write %s: %s\n", path,
                strerror(errno));
        return false;
    }
    fprintf(f, "workload,unit,weft,pthreads,go,weft_over_pthreads,weft_over_go,"
               "runs,weft_count,pthreads_count,go_count,weft_page_tables,"
               "pthreads_page_tables,go_page_tables,libuv,weft_over_libuv,"
               "libuv_count\n");
    for (int i = 0; i < n; i++) {
        const row *r = &rows[i];
        char a[32], b[32], c[32], d[32], e[32];
        const char *cells[5] = {
            cell_text(r, IMPL_WEFT, a, sizeof a),
            cell_text(r, IMPL_PTHREADS, b, sizeof b),
            cell_text(r, IMPL_GO, c, sizeof c),
            ratio_text(r, IMPL_PTHREADS, d, sizeof d),
            ratio_text(r, IMPL_GO, e, sizeof e),
        };
        fprintf(f, "%s,%s", r->label, r->unit);
        for (int k = 0; k < 5; k++)
            fprintf(f, ",%s", strcmp(cells[k], "n/a") == 0 ? "" : cells[k]);
        fprintf(f, ",%d", r->reps);
        for (size_t k = 0; k < MAIN_IMPLS; k++) {
            if (r->count[main_impls[k]] > 0)
                fprintf(f, ",%lld", (long long)r->count[main_impls[k]]);
            else
                fprintf(f, ",");
        }
        for (size_t k = 0; k < MAIN_IMPLS; k++) {
            double v = row_page_tables(r, main_impls[k]);
            if (v >= 0)
                fprintf(f, ",%.2f", v);
            else
                fprintf(f, ",");
        }
        const char *libuv_cells[2] = {
            cell_text(r, IMPL_LIBUV, a, sizeof a),
            ratio_text(r, IMPL_LIBUV, b, sizeof b),
        };
        for (int k = 0; k < 2; k++)
            fprintf(f, ",%s",
                    strcmp(libuv_cells[k], "n/a") == 0 ? "" : libuv_cells[k]);
        if (r->count[IMPL_LIBUV] > 0)
            fprintf(f, ",%lld", (long long)r->count[IMPL_LIBUV]);
        else
            fprintf(f, ",");
        fprintf(f, "\n");
    }
    bool ok = fclose(f) == 0;
    if (!ok)
        fprintf(stderr, "weft-bench: error: cannot write %s: %s\n", path,
                strerror(errno));
    return ok;
}

/* ---- targets -------------------------------------------------------------- */

static const row *row_find(const row *rows, int n, const char *label)
{
    for (int i = 0; i < n; i++)
        if (strcmp(rows[i].label, label) == 0)
            return &rows[i];
    return NULL;
}

/* Print whether weft's median is at most limit. A negative limit means
 * that the reference was not measured. */
static void print_target(const char *goal, const row *r, double limit,
                         const char *limit_source)
{
    printf("  %-46s ", goal);
    double weft = r ? row_median(r, IMPL_WEFT) : -1.0;
    if (weft < 0 || limit < 0) {
        printf("not measured in this run\n");
        return;
    }
    printf("%s: weft %.2f %s, limit %.2f (%s)\n", weft <= limit ? "met" : "MISSED",
           weft, r->unit, limit, limit_source);
}

/* Print whether the row's weft median is at most factor times Go's median
 * of the same run. */
static void print_go_target(const char *goal, const row *r, double factor,
                            const char *limit_source)
{
    double go = r ? row_median(r, IMPL_GO) : -1.0;
    print_target(goal, r, go < 0 ? -1.0 : go * factor, limit_source);
}

static void print_at_most_go(const row *rows, int n, const char *label)
{
    char goal[64];
    snprintf(goal, sizeof goal, "%s at most Go's time", label);
    print_go_target(goal, row_find(rows, n, label), 1.0, "Go's median");
}

/* Print whether the rate row's weft median is at least the median of
 * impl in the same run; source names that median. */
static void print_rate_target(const char *goal, const row *r, int impl,
                              const char *source)
{
    printf("  %-46s ", goal);
    double weft = r ? row_median(r, IMPL_WEFT) : -1.0;
    double other = r ? row_median(r, impl) : -1.0;
    if (weft < 0 || other < 0) {
        printf("not measured in this run\n");
        return;
    }
    printf("%s: weft %.0f %s, at least %.0f (%s)\n",
           weft >= other ? "met" : "MISSED", weft, r->unit, other, source);
}

/* The project's goals, checked against this run's medians. Limits taken
 * from Go use the Go median of the same run. */
static void print_targets(const row *rows, int n)
{
    const row *spawn = row_find(rows, n, "spawn");
    const row *yield = row_find(rows, n, "yield");
    const row *skynet = row_find(rows, n, "skynet");
    const row *memory = row_find(rows, n, "memory 1M");
    double go_spawn = spawn ? row_median(spawn, IMPL_GO) : -1.0;
    double go_skynet = skynet ? row_median(skynet, IMPL_GO) : -1.0;

    printf("\nTargets:\n");
    print_target("spawn+finish at most half of Go's time", spawn,
                 go_spawn < 0 ? -1.0 : go_spawn / 2, "half of Go's median");
    print_target("yield at most 20 ns per switch", yield, 20.0, "fixed");
    print_target("skynet at most half of Go's time", skynet,
                 go_skynet < 0 ? -1.0 : go_skynet / 2, "half of Go's median");
    print_target("at most 4.5 KiB per idle coroutine at 1M live", memory, 4.5,
                 "fixed");
    print_go_target("pingpong 1P at most 0.6 of Go's time",
                    row_find(rows, n, "pingpong 1P"), 0.6,
                    "0.6 of Go's median");
    static const char *const at_most_go[] = {
        "chan 1:1", "chan 4:4", "select buf", "select unbuf", "sleep",
        "mutex contended", "mutex uncontended", "rwmutex 1% write",
    };
    for (size_t i = 0; i < sizeof at_most_go / sizeof at_most_go[0]; i++)
        print_at_most_go(rows, n, at_most_go[i]);
    print_go_target("wg fan-out at most 0.6 of Go's time",
                    row_find(rows, n, "wg fan-out"), 0.6, "0.6 of Go's median");
    print_at_most_go(rows, n, "context cancel");
    const row *echo = row_find(rows, n, "tcp echo");
    print_rate_target("tcp echo msg/s at least Go's", echo, IMPL_GO,
                      "Go's median");
    print_rate_target("tcp echo msg/s at least libuv's", echo, IMPL_LIBUV,
                      "libuv's median");
    print_go_target("tcp echo p99 at most Go's", row_find(rows, n, "tcp echo p99"),
                    1.0, "Go's median");
}

/* ---- driver ---------------------------------------------------------------- */

/* CPU time, in seconds, that the whole machine spent busy (including time
 * stolen by the hypervisor) and that this process's waited-for children
 * used. The difference over the runs is what other processes took. */
typedef struct cpu_usage {
    double machine_busy_s;
    double children_s;
} cpu_usage;

static cpu_usage cpu_usage_read(void)
{
    cpu_usage u = { -1.0, 0.0 };
    unsigned long long user, nice, system, idle, iowait, irq, softirq, steal;
    FILE *f = fopen("/proc/stat", "r");
    if (f && fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &user,
                    &nice, &system, &idle, &iowait, &irq, &softirq, &steal) == 8)
        u.machine_busy_s = (double)(user + nice + system + irq + softirq + steal) /
                           (double)sysconf(_SC_CLK_TCK);
    if (f)
        fclose(f);
    struct rusage ru;
    if (getrusage(RUSAGE_CHILDREN, &ru) == 0)
        u.children_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
                       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    return u;
}

/* Print how much CPU other processes took while the runs went on, the
 * noise that medians have to absorb on a shared machine. */
static void print_other_cpu(cpu_usage before, cpu_usage after, double wall_s)
{
    if (before.machine_busy_s < 0 || after.machine_busy_s < 0 || wall_s <= 0)
        return;
    double others = (after.machine_busy_s - before.machine_busy_s) -
                    (after.children_s - before.children_s);
    if (others < 0)
        others = 0;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("other processes used %.1f CPU-seconds during the runs, %.0f%% of "
           "%ld CPUs\n", others, 100.0 * others / (wall_s * (double)cpus), cpus);
}

static void print_machine(const options *opt)
{
    struct utsname uts;
    char model[128] = "unknown CPU";
    FILE *f = fopen("/proc/cpuinfo", "r");
    if (f) {
        char line[256];
        while (fgets(line, sizeof line, f)) {
            char *colon = strchr(line, ':');
            if (strncmp(line, "model name", 10) == 0 && colon) {
                snprintf(model, sizeof model, "%.*s",
                         (int)strcspn(colon + 2, "\n"), colon + 2);
                break;
            }
        }
        fclose(f);
    }
    uname(&uts);
    const char *maxprocs = getenv("WEFT_MAXPROCS");
    printf("weft-bench: %s mode\n", opt->quick ? "quick" : "full");
    printf("machine: %ld CPUs online, %s, %s %s, compiled by gcc %s\n",
           sysconf(_SC_NPROCESSORS_ONLN), model, uts.sysname, uts.release,
           __VERSION__);
    /* Benchmark records need the code they measured. The binary is only as
     * new as its last build, which `make run` and `make bench` refresh. */
    char git[PATH_MAX], version[128], why[256];
    char *git_argv[] = { git, "-C", WEFT_BENCH_SOURCE_ROOT, "describe",
                         "--always", "--dirty", NULL };
    if (find_in_path("git", git, sizeof git) &&
        run_process(git_argv, NULL, 30, version, sizeof version, why, sizeof why))
        printf("source tree: %s at git %.*s\n", WEFT_BENCH_SOURCE_ROOT,
               (int)strcspn(version, "\n"), version);
    printf("weft maxprocs: %s%s (yield and pingpong 1P always use 1, "
           "pingpong 2P uses 2)\n",
           maxprocs ? "WEFT_MAXPROCS=" : "default, every usable CPU",
           maxprocs ? maxprocs : "");
}

/* Find "key VALUE" at the start of a line of a child's output. */
static bool output_value(const char *out, const char *key, double *value)
{
    size_t len = strlen(key);
    const char *line = out;
    while (*line) {
        if (strncmp(line, key, len) == 0 && line[len] == ' ')
            return sscanf(line + len + 1, "%lf", value) == 1;
        const char *newline = strchr(line, '\n');
        if (!newline)
            break;
        line = newline + 1;
    }
    return false;
}

/* The row after r's last row that shares r's runs. */
static row *runs_end(row *r, const row *end)
{
    row *q = r + 1;
    while (q < end && q->shares_runs)
        q++;
    return q;
}

/* Store the values that a run's output gives r and the rows that share
 * its runs, and print them. Returns false, with the reason in why and
 * nothing stored, when a value is missing. */
static bool record_values(row *r, const row *end, int impl, const char *out,
                          char *why, size_t why_size)
{
    row *last = runs_end(r, end);
    double values[MAX_ROWS];
    for (row *q = r; q < last; q++) {
        if (!output_value(out, q->key, &values[q - r])) {
            snprintf(why, why_size, "printed no %s line", q->key);
            return false;
        }
    }
    for (row *q = r; q < last; q++) {
        double value = values[q - r] * q->scale[impl];
        q->values[impl][q->nvalues[impl]++] = value;
        if (q == r)
            printf("%10.2f %s", value, q->unit);
        else
            printf(", %s %.2f %s", q->key, value, q->unit);
    }
    double page_tables;
    if (output_value(out, "page_tables", &page_tables)) {
        r->page_tables[impl][r->npage_tables[impl]++] = page_tables;
        printf(" (page tables %.2f KiB/task)", page_tables);
    }
    printf("\n");
    return true;
}

/* Join argv into one command line. */
static void command_text(char *const argv[], char *buf, size_t size)
{
    buf[0] = '\0';
    for (int i = 0; argv[i]; i++)
        snprintf(buf + strlen(buf), size - strlen(buf), "%s%s", i ? " " : "",
                 argv[i]);
}

/* Report a failed run of r and impl and mark its cells, and those of the
 * rows that share its runs, FAIL. */
static void record_failure(row *r, const row *end, int impl, int rep,
                           const char *why, const char *command)
{
    const char *maxprocs = getenv("WEFT_MAXPROCS");
    printf("FAILED: %s\n", why);
    fflush(stdout);
    fprintf(stderr, "weft-bench: error: %s %s run %d %s; reproduce with: "
                    "%s%s%s%s\n",
            impl_names[impl], r->label, rep + 1, why,
            maxprocs ? "WEFT_MAXPROCS=" : "", maxprocs ? maxprocs : "",
            maxprocs ? " " : "", command);
    for (row *q = r; q < runs_end(r, end); q++)
        q->failed[impl] = true;
}

/* Run one child for row r and implementation impl, and record its value or
 * the failure. */
static void run_one(row *r, const row *end, int impl, int rep,
                    const char *self, int timeout_s)
{
    char count[32], param[32], out[512], why[256];
    snprintf(count, sizeof count, "%lld", (long long)r->count[impl]);
    snprintf(param, sizeof param, "%lld", (long long)r->param);
    char *child_argv[8];
    int argc = 0;
    if (impl == IMPL_GO) {
        child_argv[argc++] = go_binary;
        child_argv[argc++] = "-workload";
        child_argv[argc++] = (char *)r->workload;
        child_argv[argc++] = "-n";
        child_argv[argc++] = count;
        if (r->param != 0) {
            child_argv[argc++] = "-param";
            child_argv[argc++] = param;
        }
    } else {
        child_argv[argc++] = (char *)self;
        child_argv[argc++] = "--child";
        child_argv[argc++] = (char *)impl_names[impl];
        child_argv[argc++] = (char *)r->workload;
        child_argv[argc++] = count;
        if (r->param != 0)
            child_argv[argc++] = param;
    }
    child_argv[argc] = NULL;

    printf("%-17s %-9s run %d/%d  n=%-8s ", r->label, impl_names[impl], rep + 1,
           r->reps, count);
    fflush(stdout);
    bool ok = run_process(child_argv, NULL, timeout_s, out, sizeof out, why,
                          sizeof why);
    if (ok && record_values(r, end, impl, out, why, sizeof why))
        return;
    char command[PATH_MAX + 128];
    command_text(child_argv, command, sizeof command);
    record_failure(r, end, impl, rep, why, command);
}

/* Run one measurement of a server row: start impl's echo server, run the
 * load generator against the port it prints, stop the server, and record
 * the generator's values or the failure. r->count is the messages per
 * connection and r->param the connections. */
static void run_server_one(row *r, const row *end, int impl, int rep,
                           const char *self, int timeout_s)
{
    char messages[32], connections[32], port_text[16], out[512];
    char why[256] = "", stop_why[256] = "", run_why[256] = "";
    snprintf(messages, sizeof messages, "%lld", (long long)r->count[impl]);
    snprintf(connections, sizeof connections, "%lld", (long long)r->param);
    char *server_argv[6];
    if (impl == IMPL_GO) {
        server_argv[0] = go_binary;
        server_argv[1] = "-workload";
        server_argv[2] = (char *)r->workload;
        server_argv[3] = NULL;
    } else {
        server_argv[0] = (char *)self;
        server_argv[1] = "--server";
        server_argv[2] = (char *)impl_names[impl];
        server_argv[3] = (char *)r->workload;
        server_argv[4] = NULL;
    }

    printf("%-17s %-9s run %d/%d  n=%-8s ", r->label, impl_names[impl], rep + 1,
           r->reps, messages);
    fflush(stdout);
    server_process server;
    int port = -1;
    bool started = server_start(server_argv, &server, why, sizeof why);
    if (started)
        port = server_read_port(&server, why, sizeof why);
    snprintf(port_text, sizeof port_text, "%d", port > 0 ? port : 0);
    char *loadgen_argv[] = { (char *)self, "--loadgen", port_text, connections,
                             messages, NULL };

    bool ok = port > 0;
    if (ok) {
        ok = run_process(loadgen_argv, NULL, timeout_s, out, sizeof out,
                         run_why, sizeof run_why);
        if (!ok)
            snprintf(why, sizeof why, "the load generator %s", run_why);
    }
    if (started && !server_stop(&server, !ok, stop_why, sizeof stop_why) && ok) {
        ok = false;
        snprintf(why, sizeof why, "%s", stop_why);
    }
    if (ok && record_values(r, end, impl, out, run_why, sizeof run_why))
        return;
    if (ok)
        snprintf(why, sizeof why, "the load generator %s", run_why);

    char server_command[PATH_MAX + 64], loadgen_command[PATH_MAX + 128];
    char command[2 * PATH_MAX + 256];
    snprintf(port_text, sizeof port_text, "PORT");
    command_text(server_argv, server_command, sizeof server_command);
    command_text(loadgen_argv, loadgen_command, sizeof loadgen_command);
    snprintf(command, sizeof command, "%s, then %s with the port it prints",
             server_command, loadgen_command);
    record_failure(r, end, impl, rep, why, command);
}

static void usage(FILE *out)
{
    fprintf(out,
        "usage: weft-bench [--quick] [--reps N] [--only LIST] [--csv PATH]\n"
        "                  [--timeout SECONDS] [--no-go]\n"
        "\n"
        "Runs the spawn, yield, skynet, memory, pingpong, chan, select, sleep,\n"
        "skynet-chan, mutex, rwmutex, wg-fanout, context and tcp-echo\n"
        "workloads on weft, POSIX threads and Go (when go is on PATH), and\n"
        "tcp-echo on a libuv server too, each run in a fresh process, and\n"
        "prints the medians.\n"
        "\n"
        "  --quick          fewer repetitions, a shorter yield loop, no\n"
        "                   1,000,000-coroutine memory row, a tenth of the\n"
        "                   counts of the pingpong, chan, select, sleep,\n"
        "                   skynet-chan, mutex, rwmutex, wg-fanout and context\n"
        "                   rows, and 500 instead of 10,000 messages per\n"
        "                   connection in tcp-echo (under a minute)\n"
        "  --reps N         runs per workload and implementation (1 to %d)\n"
        "  --only LIST      comma-separated workloads: spawn,yield,skynet,\n"
        "                   memory,pingpong,chan,select,sleep,skynet-chan,\n"
        "                   mutex,rwmutex,wg-fanout,context,tcp-echo\n"
        "  --csv PATH       CSV output (default %s/results-quick.csv\n"
        "                   or results-full.csv)\n"
        "  --timeout S      kill a run after S seconds (default %d)\n"
        "  --no-go          skip the Go runs even when go is on PATH\n",
        MAX_REPS, WEFT_BENCH_OUTPUT_DIR, DEFAULT_TIMEOUT_S);
}

static bool parse_options(int argc, char **argv, options *opt)
{
    *opt = (options){ .timeout_s = DEFAULT_TIMEOUT_S, .use_go = true };
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        const char *value = i + 1 < argc ? argv[i + 1] : NULL;
        int64_t n;
        if (strcmp(arg, "--quick") == 0) {
            opt->quick = true;
        } else if (strcmp(arg, "--no-go") == 0) {
            opt->use_go = false;
        } else if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            exit(0);
        } else if (!value) {
            fprintf(stderr, "weft-bench: error: unknown option or missing "
                            "value: %s\n", arg);
            return false;
        } else if (strcmp(arg, "--reps") == 0) {
            if (!parse_count(value, &n) || n > MAX_REPS) {
                fprintf(stderr, "weft-bench: error: invalid --reps %s "
                                "(expected 1 to %d)\n", value, MAX_REPS);
                return false;
            }
            opt->reps = (int)n;
            i++;
        } else if (strcmp(arg, "--timeout") == 0) {
            if (!parse_count(value, &n) || n > 3600) {
                fprintf(stderr, "weft-bench: error: invalid --timeout %s "
                                "(expected 1 to 3600 seconds)\n", value);
                return false;
            }
            opt->timeout_s = (int)n;
            i++;
        } else if (strcmp(arg, "--csv") == 0) {
            opt->csv_path = value;
            i++;
        } else if (strcmp(arg, "--only") == 0) {
            opt->only = value;
            i++;
        } else {
            fprintf(stderr, "weft-bench: error: unknown option %s\n", arg);
            return false;
        }
    }
    return true;
}

int main(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "--child") == 0)
        return child_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--server") == 0)
        return server_main(argc, argv);
    if (argc >= 2 && strcmp(argv[1], "--loadgen") == 0)
        return loadgen_main(argc, argv);

    options opt;
    if (!parse_options(argc, argv, &opt)) {
        usage(stderr);
        return 2;
    }
    char self[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", self, sizeof self - 1);
    if (len <= 0)
        bench_fail("cannot resolve /proc/self/exe: %s", strerror(errno));
    self[len] = '\0';

    static row rows[MAX_ROWS];
    int nrows = rows_init(rows, &opt);
    if (nrows == 0)
        bench_fail("--only %s selects no workload (expected a comma-separated "
                   "list of spawn, yield, skynet, memory, pingpong, chan, "
                   "select, sleep, skynet-chan, mutex, rwmutex, wg-fanout, "
                   "context, tcp-echo)", opt.only);

    print_machine(&opt);
    bool go_ready = opt.use_go ? go_prepare() : false;
    if (!opt.use_go)
        printf("go: skipped (--no-go)\n");
    printf("\n");

    int64_t start = bench_now_ns();
    cpu_usage usage_before = cpu_usage_read();
    const row *end = rows + nrows;
    for (int i = 0; i < nrows; i++) {
        row *r = &rows[i];
        if (!go_ready)
            r->count[IMPL_GO] = 0;
        if (r->shares_runs)
            continue;
        for (int rep = 0; rep < r->reps; rep++) {
            for (int impl = 0; impl < IMPL_COUNT; impl++) {
                /* One failure is enough: later runs of the same cell would
                 * only repeat it, or its timeout. */
                if (r->count[impl] <= 0 || r->failed[impl])
                    continue;
                if (r->server)
                    run_server_one(r, end, impl, rep, self, opt.timeout_s);
                else
                    run_one(r, end, impl, rep, self, opt.timeout_s);
            }
        }
    }
    double wall_s = (double)(bench_now_ns() - start) / 1e9;
    printf("\nall runs took %.1f s\n", wall_s);
    print_other_cpu(usage_before, cpu_usage_read(), wall_s);

    print_table(rows, nrows);
    print_targets(rows, nrows);

    char default_csv[PATH_MAX];
    snprintf(default_csv, sizeof default_csv, "%s/results-%s.csv",
             WEFT_BENCH_OUTPUT_DIR, opt.quick ? "quick" : "full");
    const char *csv = opt.csv_path ? opt.csv_path : default_csv;
    bool csv_ok = write_csv(csv, rows, nrows);
    if (csv_ok)
        printf("\nCSV written to %s\n", csv);

    bool any_failed = false;
    for (int i = 0; i < nrows; i++)
        for (int impl = 0; impl < IMPL_COUNT; impl++)
            any_failed |= rows[i].failed[impl];
    if (any_failed)
        fprintf(stderr, "\nweft-bench: error: some runs FAILED; see the "
                        "messages above\n");
    return any_failed || !csv_ok ? 1 : 0;
}
