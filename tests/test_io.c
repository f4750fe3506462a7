/*
 * Files, blocking work and signal contexts (weft/io.h):
 * - weft_file_write_all and weft_file_read_all of a few MiB, read back also
 *   with weft_file_read at offsets and at the file position, writes at
 *   offsets, holes, O_APPEND, truncation, empty files and /proc files;
 * - errors: missing files and directories (-ENOENT), directories
 *   (-EISDIR), closed descriptors (-EBADF), a context ended before the call
 *   (nothing is opened, created or written), and a context that ends while
 *   a read is running (the read is waited for);
 * - files from many coroutines at once and from a plain thread;
 * - weft_blocking: other coroutines keep running on the only processor
 *   slot while fn blocks, and the result is passed back;
 * - weft_blocking with a context that ends first: its error at once, while
 *   fn finishes later;
 * - weft_blocking with more calls than the pool has threads, file work not
 *   delayed by a busy pool, and weft_shutdown while fn runs;
 * - weft_ctx_with_signals, in child processes: raise and kill cancel the
 *   context, later signals are still caught, release restores the previous
 *   action, several signals and contexts at once, invalid signal numbers;
 * - invalid arguments and calls without a runtime.
 *
 * Every file lives in a fresh directory under /tmp that the test removes.
 * A few tests sleep to make time pass while something is blocked on a pool
 * thread or a pipe. Each sleep is the measured interval, never the only
 * thing that orders two parties.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "body.h"
#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Generous bound for a wait that should end at once, on a shared machine. */
#define LATE WEFT_SEC(2)
/* The sleep that lets a started coroutine reach its blocking call. */
#define SETTLE WEFT_MS(20)

/* ---- temporary directories and file contents ------------------------ */

typedef struct file_test {
    char dir[64];
} file_test;

static void make_temp_dir(file_test *t)
{
    snprintf(t->dir, sizeof t->dir, "/tmp/weft-test-io-XXXXXX");
    assert_non_null(mkdtemp(t->dir));
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)type;
    (void)ftw;
    return remove(path);
}

static void remove_temp_dir(file_test *t)
{
    assert_int_equal(nftw(t->dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS), 0);
}

static void path_in(const file_test *t, const char *name, char *path, size_t size)
{
    snprintf(path, size, "%s/%s", t->dir, name);
}

/* Byte i of test content seed. */
static unsigned char pattern_byte(unsigned seed, size_t i)
{
    return (unsigned char)((i + seed * 7919u + (i / 251) * 13) % 251);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed, size_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(seed, offset + i);
}

/* Index of the first byte of p that differs from content seed at offset,
 * or n when all match. */
static size_t pattern_mismatch(const unsigned char *p, size_t n, unsigned seed,
                               size_t offset)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != pattern_byte(seed, offset + i))
            return i;
    }
    return n;
}

static bool file_contains(const char *path, const void *want, size_t len)
{
    char *data = NULL;
    size_t got = 0;
    if (weft_file_read_all(NULL, path, &data, &got) != 0)
        return false;
    bool same = got == len && memcmp(data, want, len) == 0;
    free(data);
    return same;
}

/* ---- files ----------------------------------------------------------- */

/* A size that is no multiple of the chunk sizes below. */
#define ROUND_TRIP_SIZE ((size_t)(3u << 20) + 123)
enum { CHUNK = 100007 };

static void file_round_trip_body(void *arg)
{
    file_test *t = arg;
    char path[128];
    path_in(t, "data", path, sizeof path);
    unsigned char *content = malloc(ROUND_TRIP_SIZE);
    unsigned char *chunk = malloc(CHUNK);
    if (!CHECK_TRUE(content != NULL && chunk != NULL))
        return;
    fill_pattern(content, ROUND_TRIP_SIZE, 1, 0);

    /* Whole-file write and read. */
    if (!CHECK_EQ(weft_file_write_all(NULL, path, content, ROUND_TRIP_SIZE), 0))
        return;
    struct stat st;
    CHECK_EQ(stat(path, &st), 0);
    CHECK_EQ(st.st_size, ROUND_TRIP_SIZE);
    mode_t mask = umask(022);
    umask(mask);
    CHECK_EQ(st.st_mode & 0777, 0644 & ~mask);
    char *data = NULL;
    size_t len = 0;
    CHECK_EQ(weft_file_read_all(NULL, path, &data, &len), 0);
    if (!CHECK_TRUE(data != NULL))
        return;
    CHECK_EQ(len, ROUND_TRIP_SIZE);
    CHECK_EQ(pattern_mismatch((unsigned char *)data, len, 1, 0), ROUND_TRIP_SIZE);
    CHECK_EQ(data[len], '\0');
    free(data);

    /* Reads at offsets, last chunk first. */
    int fd = weft_file_open(NULL, path, O_RDONLY, 0);
    if (!CHECK_TRUE(fd >= 0))
        return;
    size_t last = (ROUND_TRIP_SIZE - 1) / CHUNK * CHUNK;
    for (size_t off = last + CHUNK; off >= CHUNK;) {
        off -= CHUNK;
        size_t want = ROUND_TRIP_SIZE - off < CHUNK ? ROUND_TRIP_SIZE - off : CHUNK;
        ssize_t r = weft_file_read(NULL, fd, chunk, CHUNK, (int64_t)off);
        if (!CHECK_EQ(r, want))
            break;
        if (!CHECK_EQ(pattern_mismatch(chunk, want, 1, off), want))
            break;
    }
    CHECK_EQ(weft_file_read(NULL, fd, chunk, 10, (int64_t)ROUND_TRIP_SIZE), 0);
    CHECK_EQ(weft_file_read(NULL, fd, chunk, 10, (int64_t)ROUND_TRIP_SIZE + 5000), 0);

    /* Reads at the file position, which the reads above did not move. */
    size_t pos = 0;
    for (int pass = 0; pass <= (int)(ROUND_TRIP_SIZE / CHUNK) + 1; pass++) {
        ssize_t r = weft_file_read(NULL, fd, chunk, CHUNK, -1);
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0))
            break;
        if (!CHECK_EQ(pattern_mismatch(chunk, (size_t)r, 1, pos), r))
            break;
        pos += (size_t)r;
    }
    CHECK_EQ(pos, ROUND_TRIP_SIZE);
    CHECK_EQ(weft_file_read(NULL, fd, chunk, CHUNK, -1), 0);
    CHECK_EQ(weft_file_close(fd), 0);

    /* Writes at an offset and at the file position. */
    fd = weft_file_open(NULL, path, O_RDWR, 0);
    if (!CHECK_TRUE(fd >= 0))
        return;
    memset(chunk, 0xAA, 4096);
    CHECK_EQ(weft_file_write(NULL, fd, chunk, 4096, 1 << 20), 0);
    memset(content + (1 << 20), 0xAA, 4096);
    CHECK_EQ(weft_file_write(NULL, fd, "head", 4, -1), 0);
    memcpy(content, "head", 4);
    CHECK_EQ(weft_file_write(NULL, fd, "next", 4, -1), 0);
    memcpy(content + 4, "next", 4);
    CHECK_TRUE(file_contains(path, content, ROUND_TRIP_SIZE));

    /* A write past the end leaves a hole of zero bytes. */
    CHECK_EQ(weft_file_write(NULL, fd, "tail", 4, (int64_t)ROUND_TRIP_SIZE + 4096), 0);
    CHECK_EQ(weft_file_close(fd), 0);
    CHECK_EQ(weft_file_read_all(NULL, path, &data, &len), 0);
    if (CHECK_EQ(len, ROUND_TRIP_SIZE + 4096 + 4)) {
        CHECK_TRUE(memcmp(data, content, ROUND_TRIP_SIZE) == 0);
        CHECK_TRUE(all_bytes_equal(data + ROUND_TRIP_SIZE, 4096, 0));
        CHECK_TRUE(memcmp(data + ROUND_TRIP_SIZE + 4096, "tail", 4) == 0);
    }
    free(data);

    /* O_APPEND writes at the end whatever the file position. */
    fd = weft_file_open(NULL, path, O_WRONLY | O_APPEND, 0);
    if (CHECK_TRUE(fd >= 0)) {
        CHECK_EQ(weft_file_write(NULL, fd, "more", 4, -1), 0);
        CHECK_EQ(weft_file_close(fd), 0);
        CHECK_EQ(stat(path, &st), 0);
        CHECK_EQ(st.st_size, ROUND_TRIP_SIZE + 4096 + 8);
    }

    /* write_all truncates a longer file. */
    CHECK_EQ(weft_file_write_all(NULL, path, "short", 5), 0);
    CHECK_TRUE(file_contains(path, "short", 5));

    /* An empty file reads as length 0 with its NUL. */
    char empty_path[128];
    path_in(t, "empty", empty_path, sizeof empty_path);
    CHECK_EQ(weft_file_write_all(NULL, empty_path, "", 0), 0);
    data = NULL;
    len = 99;
    CHECK_EQ(weft_file_read_all(NULL, empty_path, &data, &len), 0);
    CHECK_EQ(len, 0);
    if (CHECK_TRUE(data != NULL))
        CHECK_EQ(data[0], '\0');
    free(data);

    /* A file created with weft_file_open and a mode. */
    char created[128];
    path_in(t, "created", created, sizeof created);
    fd = weft_file_open(NULL, created, O_WRONLY | O_CREAT | O_EXCL, 0600);
    if (CHECK_TRUE(fd >= 0)) {
        CHECK_EQ(weft_file_write(NULL, fd, "abc", 3, -1), 0);
        CHECK_EQ(weft_file_close(fd), 0);
        CHECK_EQ(stat(created, &st), 0);
        CHECK_EQ(st.st_mode & 0777, 0600 & ~mask);
        CHECK_TRUE(file_contains(created, "abc", 3));
    }
    free(chunk);
    free(content);
}

static void test_file_round_trip(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    run_body(file_round_trip_body, &t, 0);
    remove_temp_dir(&t);
}

/* Files whose size stat reports as 0 or as a page still read whole. */
static void special_files_body(void *arg)
{
    (void)arg;
    char *data = NULL;
    size_t len = 0;
    CHECK_EQ(weft_file_read_all(NULL, "/proc/self/status", &data, &len), 0);
    if (CHECK_TRUE(data != NULL)) {
        CHECK_TRUE(len > 0);
        CHECK_EQ(strlen(data), len);
        CHECK_TRUE(strncmp(data, "Name:", 5) == 0);
        CHECK_TRUE(strstr(data, "\nPid:") != NULL);
    }
    free(data);

    data = NULL;
    len = 99;
    CHECK_EQ(weft_file_read_all(NULL, "/dev/null", &data, &len), 0);
    CHECK_EQ(len, 0);
    if (CHECK_TRUE(data != NULL))
        CHECK_EQ(data[0], '\0');
    free(data);
}

static void test_file_read_all_special(void **state)
{
    (void)state;
    run_body(special_files_body, NULL, 0);
}

static void file_errors_body(void *arg)
{
    file_test *t = arg;
    char missing[128], in_missing_dir[128], path[128];
    path_in(t, "missing", missing, sizeof missing);
    path_in(t, "no-dir/file", in_missing_dir, sizeof in_missing_dir);
    path_in(t, "file", path, sizeof path);
    char *data = NULL;
    size_t len = 0;

    CHECK_EQ(weft_file_read_all(NULL, missing, &data, &len), -ENOENT);
    CHECK_EQ(weft_file_open(NULL, missing, O_RDONLY, 0), -ENOENT);
    CHECK_EQ(weft_file_open(NULL, in_missing_dir, O_WRONLY | O_CREAT, 0644), -ENOENT);
    CHECK_EQ(weft_file_write_all(NULL, in_missing_dir, "x", 1), -ENOENT);

    CHECK_EQ(weft_file_write_all(NULL, path, "x", 1), 0);
    CHECK_EQ(weft_file_open(NULL, path, O_WRONLY | O_CREAT | O_EXCL, 0644), -EEXIST);
    CHECK_EQ(weft_file_open(NULL, t->dir, O_WRONLY, 0), -EISDIR);
    CHECK_EQ(weft_file_read_all(NULL, t->dir, &data, &len), -EISDIR);
    CHECK_EQ(weft_file_write_all(NULL, t->dir, "x", 1), -EISDIR);

    /* Reading a write-only descriptor and the other way round. */
    char buf[8];
    int fd = weft_file_open(NULL, path, O_WRONLY, 0);
    if (CHECK_TRUE(fd >= 0)) {
        CHECK_EQ(weft_file_read(NULL, fd, buf, sizeof buf, 0), -EBADF);
        CHECK_EQ(weft_file_close(fd), 0);
    }
    fd = weft_file_open(NULL, path, O_RDONLY, 0);
    if (CHECK_TRUE(fd >= 0)) {
        CHECK_EQ(weft_file_write(NULL, fd, "y", 1, 0), -EBADF);
        CHECK_EQ(weft_file_close(fd), 0);
        /* A closed descriptor. Nothing else opens one in this test, so the
         * number is not reused in between. */
        CHECK_EQ(weft_file_read(NULL, fd, buf, sizeof buf, 0), -EBADF);
        CHECK_EQ(weft_file_write(NULL, fd, "y", 1, 0), -EBADF);
        CHECK_EQ(weft_file_close(fd), -EBADF);
    }
    CHECK_TRUE(file_contains(path, "x", 1));
}

static void test_file_errors(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    run_body(file_errors_body, &t, 0);
    remove_temp_dir(&t);
}

/* A context that has ended before the call: nothing is opened, created,
 * truncated or written. */
static void file_ended_ctx_body(void *arg)
{
    file_test *t = arg;
    char fresh[128], kept[128];
    path_in(t, "fresh", fresh, sizeof fresh);
    path_in(t, "kept", kept, sizeof kept);
    CHECK_EQ(weft_file_write_all(NULL, kept, "keep", 4), 0);

    weft_ctx *ctx = weft_ctx_with_cancel(NULL);
    weft_ctx_cancel(ctx);
    CHECK_EQ(weft_file_open(ctx, fresh, O_WRONLY | O_CREAT, 0644), WEFT_ECANCELED);
    CHECK_EQ(access(fresh, F_OK), -1);
    CHECK_EQ(weft_file_write_all(ctx, fresh, "x", 1), WEFT_ECANCELED);
    CHECK_EQ(access(fresh, F_OK), -1);
    CHECK_EQ(weft_file_write_all(ctx, kept, "changed", 7), WEFT_ECANCELED);
    CHECK_TRUE(file_contains(kept, "keep", 4));
    char *data = NULL;
    size_t len = 0;
    CHECK_EQ(weft_file_read_all(ctx, kept, &data, &len), WEFT_ECANCELED);
    CHECK_TRUE(data == NULL);

    int fd = weft_file_open(NULL, kept, O_RDWR, 0);
    if (CHECK_TRUE(fd >= 0)) {
        char buf[8] = { 0 };
        CHECK_EQ(weft_file_read(ctx, fd, buf, sizeof buf, 0), WEFT_ECANCELED);
        CHECK_EQ(weft_file_write(ctx, fd, "lost", 4, 0), WEFT_ECANCELED);
        CHECK_EQ(weft_file_close(fd), 0);
    }
    CHECK_TRUE(file_contains(kept, "keep", 4));
    weft_ctx_release(ctx);

    weft_ctx *expired = weft_ctx_with_deadline(NULL, weft_now() - 1);
    CHECK_EQ(weft_file_open(expired, fresh, O_WRONLY | O_CREAT, 0644), WEFT_ETIMEDOUT);
    CHECK_EQ(access(fresh, F_OK), -1);
    weft_ctx_release(expired);
}

static void test_file_ended_context(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    run_body(file_ended_ctx_body, &t, 0);
    remove_temp_dir(&t);
}

/* A read of a FIFO blocks on a pool thread until data arrives. When its
 * context ends meanwhile, the call still waits for the read, which writes
 * into the caller's buffer. */
typedef struct fifo_test {
    file_test files;
    int write_fd;
    int64_t wrote_at;
    ssize_t read_result;
    int64_t returned_at;
} fifo_test;

static void write_fifo_later(void *arg)
{
    fifo_test *t = arg;
    weft_sleep(WEFT_MS(150));
    t->wrote_at = weft_now();
    CHECK_EQ(write(t->write_fd, "fifo", 4), 4);
}

static void fifo_body(void *arg)
{
    fifo_test *t = arg;
    char path[128];
    path_in(&t->files, "fifo", path, sizeof path);
    if (!CHECK_EQ(mkfifo(path, 0600), 0))
        return;
    /* O_RDWR opens a FIFO without waiting for a writer on Linux. */
    int fd = weft_file_open(NULL, path, O_RDWR, 0);
    if (!CHECK_TRUE(fd >= 0))
        return;
    t->write_fd = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC);
    if (!CHECK_TRUE(t->write_fd >= 0))
        return;

    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, write_fifo_later, t));
    char buf[16] = { 0 };
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    t->read_result = weft_file_read(ctx, fd, buf, 4, -1);
    t->returned_at = weft_now();
    weft_ctx_release(ctx);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    CHECK_TRUE(t->returned_at >= t->wrote_at);
    CHECK_TRUE(t->read_result == 4 || t->read_result == WEFT_ETIMEDOUT);
    if (t->read_result == 4)
        CHECK_TRUE(memcmp(buf, "fifo", 4) == 0);
    CHECK_EQ(weft_file_close(fd), 0);
    close(t->write_fd);
    weft_chan_release(done);
}

static void test_file_read_outlives_context(void **state)
{
    (void)state;
    fifo_test t = { .write_fd = -1 };
    make_temp_dir(&t.files);
    run_body(fifo_body, &t, 0);
    print_message("read with a 50 ms deadline: %zd (%s), returned %.1f ms "
                  "after the data arrived\n", t.read_result,
                  t.read_result < 0 ? weft_err_name((int)t.read_result) : "bytes",
                  (t.returned_at - t.wrote_at) / 1e6);
    remove_temp_dir(&t.files);
}

enum { FILE_WORKERS = 16, WORKER_FILE_SIZE = 256 * 1024 };

typedef struct file_worker {
    file_test *files;
    unsigned id;
} file_worker;

static void write_and_read_back(void *arg)
{
    file_worker *w = arg;
    char name[32], path[128];
    snprintf(name, sizeof name, "worker-%u", w->id);
    path_in(w->files, name, path, sizeof path);
    size_t size = WORKER_FILE_SIZE + w->id * 1000;
    unsigned char *content = malloc(size);
    if (!CHECK_TRUE(content != NULL))
        return;
    fill_pattern(content, size, 100 + w->id, 0);
    for (int round = 0; round < 4; round++) {
        if (!CHECK_EQ(weft_file_write_all(NULL, path, content, size), 0))
            break;
        char *data = NULL;
        size_t len = 0;
        if (!CHECK_EQ(weft_file_read_all(NULL, path, &data, &len), 0))
            break;
        CHECK_EQ(len, size);
        CHECK_EQ(pattern_mismatch((unsigned char *)data, len, 100 + w->id, 0), size);
        free(data);
    }
    free(content);
}

static void many_files_body(void *arg)
{
    file_test *t = arg;
    weft_chan *done = weft_chan_make(0, FILE_WORKERS);
    file_worker workers[FILE_WORKERS];
    for (unsigned i = 0; i < FILE_WORKERS; i++) {
        workers[i] = (file_worker){ t, i };
        CHECK_TRUE(spawn_tracked(done, write_and_read_back, &workers[i]));
    }
    CHECK_EQ(wait_done(done, FILE_WORKERS, WEFT_SEC(30)), FILE_WORKERS);
    weft_chan_release(done);
}

static void test_files_many_coroutines(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    run_body(many_files_body, &t, 0);
    remove_temp_dir(&t);
}

/* The test's own thread is no coroutine: its calls block the thread. */
static void test_files_plain_thread(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    assert_int_equal(weft_init(NULL), 0);
    char path[128];
    path_in(&t, "plain", path, sizeof path);
    unsigned char content[10000];
    fill_pattern(content, sizeof content, 7, 0);
    assert_int_equal(weft_file_write_all(NULL, path, content, sizeof content), 0);
    char *data = NULL;
    size_t len = 0;
    assert_int_equal(weft_file_read_all(NULL, path, &data, &len), 0);
    assert_int_equal(len, sizeof content);
    assert_memory_equal(data, content, sizeof content);
    free(data);
    int fd = weft_file_open(NULL, path, O_RDONLY, 0);
    assert_true(fd >= 0);
    unsigned char buf[100];
    assert_int_equal(weft_file_read(NULL, fd, buf, sizeof buf, 5000), sizeof buf);
    assert_memory_equal(buf, content + 5000, sizeof buf);
    assert_int_equal(weft_file_close(fd), 0);
    assert_int_equal(weft_file_read_all(NULL, "/nonexistent-weft-test", &data, &len), -ENOENT);
    assert_int_equal(weft_shutdown(), 0);
    remove_temp_dir(&t);
}

static void file_invalid_body(void *arg)
{
    file_test *t = arg;
    char path[128];
    path_in(t, "file", path, sizeof path);
    CHECK_EQ(weft_file_write_all(NULL, path, "content", 7), 0);
    char *data = NULL;
    size_t len = 0;
    char buf[8];

    CHECK_EQ(weft_file_open(NULL, NULL, O_RDONLY, 0), WEFT_EINVAL);
    CHECK_EQ(weft_file_read_all(NULL, NULL, &data, &len), WEFT_EINVAL);
    CHECK_EQ(weft_file_read_all(NULL, path, NULL, &len), WEFT_EINVAL);
    CHECK_EQ(weft_file_read_all(NULL, path, &data, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_file_write_all(NULL, NULL, "x", 1), WEFT_EINVAL);
    CHECK_EQ(weft_file_write_all(NULL, path, NULL, 5), WEFT_EINVAL);
    CHECK_TRUE(file_contains(path, "content", 7));

    int fd = weft_file_open(NULL, path, O_RDWR, 0);
    if (CHECK_TRUE(fd >= 0)) {
        CHECK_EQ(weft_file_read(NULL, fd, NULL, 5, 0), WEFT_EINVAL);
        CHECK_EQ(weft_file_write(NULL, fd, NULL, 5, 0), WEFT_EINVAL);
        CHECK_EQ(weft_file_read(NULL, fd, buf, 0, 0), 0);
        CHECK_EQ(weft_file_write(NULL, fd, buf, 0, 0), 0);
        CHECK_EQ(weft_file_close(fd), 0);
    }
    CHECK_TRUE(file_contains(path, "content", 7));

    /* A negative descriptor is never open. */
    int r = weft_file_read(NULL, -1, buf, sizeof buf, 0);
    CHECK_TRUE(r == WEFT_EINVAL || r == -EBADF);
    r = weft_file_write(NULL, -1, "x", 1, 0);
    CHECK_TRUE(r == WEFT_EINVAL || r == -EBADF);
    r = weft_file_close(-1);
    CHECK_TRUE(r == WEFT_EINVAL || r == -EBADF);
}

static void test_file_invalid_arguments(void **state)
{
    (void)state;
    file_test t;
    make_temp_dir(&t);
    run_body(file_invalid_body, &t, 0);
    remove_temp_dir(&t);
}

/* ---- weft_blocking --------------------------------------------------- */

/* A flag that a pool thread waits for with a bounded wait. */
typedef struct handoff {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool set;
    int value;
    _Atomic int waiting;
} handoff;

#define HANDOFF_INIT { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, false, 0, 0 }

/* Wait up to 5 s for the flag. Return twice its value, or -1 on timeout. */
static void *wait_for_flag(void *arg)
{
    handoff *h = arg;
    atomic_store(&h->waiting, 1);
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += 5;
    pthread_mutex_lock(&h->mu);
    int r = 0;
    while (!h->set && r == 0)
        r = pthread_cond_timedwait(&h->cv, &h->mu, &deadline);
    intptr_t result = h->set ? 2 * h->value : -1;
    pthread_mutex_unlock(&h->mu);
    return (void *)result;
}

/* Set the flag once the pool thread waits, so the wait is real. */
static void set_flag(void *arg)
{
    handoff *h = arg;
    _Atomic int *waiting = &h->waiting;
    CHECK_TRUE(wait_for_count(waiting, 1, WEFT_SEC(5)));
    pthread_mutex_lock(&h->mu);
    h->set = true;
    h->value = 21;
    pthread_cond_signal(&h->cv);
    pthread_mutex_unlock(&h->mu);
}

typedef struct blocking_test {
    int64_t elapsed;
} blocking_test;

/* With one processor slot, the coroutine that sets the flag can only run
 * if weft_blocking parks the caller instead of blocking the slot. */
static void blocking_one_slot_body(void *arg)
{
    blocking_test *t = arg;
    CHECK_EQ(weft_maxprocs(), 1);
    handoff h = HANDOFF_INIT;
    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, set_flag, &h));
    void *result = NULL;
    int64_t start = weft_now();
    CHECK_EQ(weft_blocking(NULL, wait_for_flag, &h, &result), 0);
    t->elapsed = weft_now() - start;
    CHECK_EQ((intptr_t)result, 42);
    CHECK_RANGE(t->elapsed, 0, LATE);
    CHECK_EQ(wait_done(done, 1, LATE), 1);

    /* result NULL: the return value is dropped. */
    handoff h2 = HANDOFF_INIT;
    CHECK_TRUE(spawn_tracked(done, set_flag, &h2));
    CHECK_EQ(weft_blocking(NULL, wait_for_flag, &h2, NULL), 0);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    weft_chan_release(done);
}

static void test_blocking_keeps_slot_free(void **state)
{
    (void)state;
    blocking_test t = { 0 };
    run_body(blocking_one_slot_body, &t, 1);
    print_message("fn waited %.2f ms for the other coroutine\n", t.elapsed / 1e6);
}

/* fn waits up to 5 s for a byte on a pipe. */
typedef struct pipe_wait {
    int fds[2];
    _Atomic int started;
    _Atomic int finished;
} pipe_wait;

static void *wait_on_pipe(void *arg)
{
    pipe_wait *p = arg;
    atomic_store(&p->started, 1);
    struct pollfd pfd = { .fd = p->fds[0], .events = POLLIN };
    int ready = poll(&pfd, 1, 5000);
    char c = 0;
    if (ready == 1 && read(p->fds[0], &c, 1) == 1)
        atomic_store(&p->finished, c);
    else
        atomic_store(&p->finished, -1);
    return (void *)(intptr_t)0x5EED;
}

typedef struct ended_first_test {
    int64_t timeout_elapsed;
    int64_t cancel_elapsed;
} ended_first_test;

typedef struct cancel_later {
    weft_ctx *ctx;
    pipe_wait *p;
    int64_t cancelled_at;
} cancel_later;

static void cancel_when_started(void *arg)
{
    cancel_later *c = arg;
    CHECK_TRUE(wait_for_count(&c->p->started, 1, LATE));
    c->cancelled_at = weft_now();
    weft_ctx_cancel(c->ctx);
}

static void blocking_ended_first_body(void *arg)
{
    ended_first_test *t = arg;
    pipe_wait p = { .started = 0, .finished = 0 };
    if (!CHECK_EQ(pipe2(p.fds, O_CLOEXEC), 0))
        return;

    /* A deadline ends the wait, but fn goes on and finishes later. */
    void *sentinel = (void *)(intptr_t)0xDEAD;
    void *result = sentinel;
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    CHECK_EQ(weft_blocking(ctx, wait_on_pipe, &p, &result), WEFT_ETIMEDOUT);
    t->timeout_elapsed = weft_now() - start;
    weft_ctx_release(ctx);
    CHECK_RANGE(t->timeout_elapsed, WEFT_MS(45), LATE);
    CHECK_TRUE(result == sentinel);
    CHECK_EQ(atomic_load(&p.started), 1);
    CHECK_EQ(atomic_load(&p.finished), 0);
    CHECK_EQ(write(p.fds[1], "a", 1), 1);
    CHECK_TRUE(wait_for_count(&p.finished, 'a', WEFT_SEC(5)));
    CHECK_TRUE(result == sentinel);

    /* Cancelled by another coroutine once fn runs. */
    atomic_store(&p.started, 0);
    atomic_store(&p.finished, 0);
    cancel_later c = { .ctx = weft_ctx_with_cancel(NULL), .p = &p };
    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, cancel_when_started, &c));
    CHECK_EQ(weft_blocking(c.ctx, wait_on_pipe, &p, &result), WEFT_ECANCELED);
    t->cancel_elapsed = weft_now() - c.cancelled_at;
    CHECK_RANGE(t->cancel_elapsed, 0, LATE);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    CHECK_EQ(atomic_load(&p.finished), 0);
    CHECK_EQ(write(p.fds[1], "b", 1), 1);
    CHECK_TRUE(wait_for_count(&p.finished, 'b', WEFT_SEC(5)));
    CHECK_TRUE(result == sentinel);
    weft_ctx_release(c.ctx);

    /* A context that has already ended: its error. */
    atomic_store(&p.started, 0);
    atomic_store(&p.finished, 0);
    ctx = weft_ctx_with_cancel(NULL);
    weft_ctx_cancel(ctx);
    CHECK_EQ(weft_blocking(ctx, wait_on_pipe, &p, &result), WEFT_ECANCELED);
    weft_ctx_release(ctx);
    /* In case fn was started anyway, let it end before p goes away. */
    if (atomic_load(&p.started) == 1) {
        CHECK_EQ(write(p.fds[1], "c", 1), 1);
        CHECK_TRUE(wait_for_count(&p.finished, 'c', WEFT_SEC(5)));
    }
    close(p.fds[0]);
    close(p.fds[1]);
    weft_chan_release(done);
}

static void test_blocking_context_ends_first(void **state)
{
    (void)state;
    ended_first_test t = { 0 };
    run_body(blocking_ended_first_body, &t, 0);
    print_message("50 ms deadline returned after %.1f ms; cancel after %.2f ms\n",
                  t.timeout_elapsed / 1e6, t.cancel_elapsed / 1e6);
}

enum { BLOCKING_CALLS = 100 };

typedef struct pool_load {
    _Atomic int running;
    _Atomic int max_running;
} pool_load;

typedef struct pool_call {
    pool_load *load;
    int id;
    int result;
} pool_call;

static void *busy_for_a_while(void *arg)
{
    pool_call *c = arg;
    int now = atomic_fetch_add(&c->load->running, 1) + 1;
    int max = atomic_load(&c->load->max_running);
    while (now > max && !atomic_compare_exchange_weak(&c->load->max_running, &max, now))
        ;
    usleep(20000);
    atomic_fetch_sub(&c->load->running, 1);
    return (void *)(intptr_t)(c->id * 3);
}

static void call_busy(void *arg)
{
    pool_call *c = arg;
    void *result = NULL;
    c->result = weft_blocking(NULL, busy_for_a_while, c, &result);
    if (c->result == 0)
        CHECK_EQ((intptr_t)result, c->id * 3);
}

static void blocking_many_body(void *arg)
{
    pool_load *load = arg;
    weft_chan *done = weft_chan_make(0, BLOCKING_CALLS);
    pool_call calls[BLOCKING_CALLS];
    for (int i = 0; i < BLOCKING_CALLS; i++) {
        calls[i] = (pool_call){ load, i, 1 };
        CHECK_TRUE(spawn_tracked(done, call_busy, &calls[i]));
    }
    CHECK_EQ(wait_done(done, BLOCKING_CALLS, WEFT_SEC(30)), BLOCKING_CALLS);
    for (int i = 0; i < BLOCKING_CALLS; i++)
        CHECK_EQ(calls[i].result, 0);
    weft_chan_release(done);
}

static void test_blocking_more_calls_than_threads(void **state)
{
    (void)state;
    pool_load load = { 0, 0 };
    run_body(blocking_many_body, &load, 0);
    print_message("at most %d functions ran at once\n", atomic_load(&load.max_running));
    assert_true(atomic_load(&load.max_running) >= 2);
    assert_true(atomic_load(&load.max_running) <= WEFT_BLOCKING_MAX_THREADS);
}

/* More slow functions than libuv's pool has threads (4 by default) do not
 * delay file work, because weft_blocking has its own pool. */
enum { SLOW_FNS = 8 };

typedef struct busy_pool_test {
    file_test files;
    pipe_wait waits[SLOW_FNS];
    int results[SLOW_FNS];
    int64_t file_elapsed;
} busy_pool_test;

typedef struct slow_call {
    busy_pool_test *t;
    int i;
} slow_call;

static void call_wait_on_pipe(void *arg)
{
    slow_call *c = arg;
    c->t->results[c->i] = weft_blocking(NULL, wait_on_pipe, &c->t->waits[c->i], NULL);
}

static void busy_pool_body(void *arg)
{
    busy_pool_test *t = arg;
    weft_chan *done = weft_chan_make(0, SLOW_FNS);
    slow_call calls[SLOW_FNS];
    for (int i = 0; i < SLOW_FNS; i++) {
        if (!CHECK_EQ(pipe2(t->waits[i].fds, O_CLOEXEC), 0))
            return;
        calls[i] = (slow_call){ t, i };
        t->results[i] = 1;
        CHECK_TRUE(spawn_tracked(done, call_wait_on_pipe, &calls[i]));
    }
    for (int i = 0; i < SLOW_FNS; i++)
        CHECK_TRUE(wait_for_count(&t->waits[i].started, 1, LATE));

    char path[128];
    path_in(&t->files, "while-busy", path, sizeof path);
    int64_t start = weft_now();
    CHECK_EQ(weft_file_write_all(NULL, path, "busy", 4), 0);
    CHECK_TRUE(file_contains(path, "busy", 4));
    weft_addr addrs[4];
    CHECK_TRUE(weft_resolve(NULL, "localhost", 80, addrs, 4) >= 1);
    t->file_elapsed = weft_now() - start;
    CHECK_RANGE(t->file_elapsed, 0, LATE);

    for (int i = 0; i < SLOW_FNS; i++)
        CHECK_EQ(write(t->waits[i].fds[1], "w", 1), 1);
    CHECK_EQ(wait_done(done, SLOW_FNS, WEFT_SEC(10)), SLOW_FNS);
    for (int i = 0; i < SLOW_FNS; i++) {
        CHECK_EQ(t->results[i], 0);
        CHECK_EQ(atomic_load(&t->waits[i].finished), 'w');
        close(t->waits[i].fds[0]);
        close(t->waits[i].fds[1]);
    }
    weft_chan_release(done);
}

static void test_blocking_pool_separate(void **state)
{
    (void)state;
    busy_pool_test *t = calloc(1, sizeof *t);
    assert_non_null(t);
    make_temp_dir(&t->files);
    run_body(busy_pool_body, t, 0);
    print_message("file and resolver work took %.2f ms with %d functions blocked\n",
                  t->file_elapsed / 1e6, SLOW_FNS);
    remove_temp_dir(&t->files);
    free(t);
}

/* weft_shutdown does not wait for a running fn. fn and its pipe live in
 * static storage, so nothing it touches goes away. */
static pipe_wait shutdown_wait;

static void start_and_abandon(void *arg)
{
    (void)arg;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(20));
    CHECK_EQ(weft_blocking(ctx, wait_on_pipe, &shutdown_wait, NULL), WEFT_ETIMEDOUT);
    weft_ctx_release(ctx);
}

static void test_blocking_shutdown_while_running(void **state)
{
    (void)state;
    assert_int_equal(pipe2(shutdown_wait.fds, O_CLOEXEC), 0);
    assert_int_equal(weft_init(NULL), 0);
    weft_chan *done = weft_chan_make(0, 1);
    assert_true(spawn_tracked(done, start_and_abandon, NULL));
    assert_int_equal(wait_done(done, 1, LATE), 1);
    weft_chan_release(done);
    assert_int_equal(atomic_load(&shutdown_wait.started), 1);

    int64_t start = weft_now();
    assert_int_equal(weft_shutdown(), 0);
    int64_t took = weft_now() - start;
    print_message("weft_shutdown took %.2f ms with fn running\n", took / 1e6);
    assert_true(took < LATE);
    assert_int_equal(atomic_load(&shutdown_wait.finished), 0);

    /* fn ends after the runtime, and a new runtime works. */
    assert_int_equal(write(shutdown_wait.fds[1], "s", 1), 1);
    for (int i = 0; i < 5000 && atomic_load(&shutdown_wait.finished) == 0; i++)
        usleep(1000);
    assert_int_equal(atomic_load(&shutdown_wait.finished), 's');
    assert_int_equal(weft_init(NULL), 0);
    handoff h = HANDOFF_INIT;
    h.set = true;
    h.value = 4;
    void *result = NULL;
    assert_int_equal(weft_blocking(NULL, wait_for_flag, &h, &result), 0);
    assert_int_equal((intptr_t)result, 8);
    assert_int_equal(weft_shutdown(), 0);
    close(shutdown_wait.fds[0]);
    close(shutdown_wait.fds[1]);
    assert_no_check_failures();
}

/* The test's own thread is no coroutine: the call blocks the thread. */
static void test_blocking_plain_thread(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    handoff h = HANDOFF_INIT;
    h.set = true;
    h.value = 50;
    void *result = NULL;
    assert_int_equal(weft_blocking(NULL, wait_for_flag, &h, &result), 0);
    assert_int_equal((intptr_t)result, 100);
    assert_int_equal(weft_blocking(NULL, NULL, &h, &result), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- calls without a runtime ----------------------------------------- */

static void test_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    char *data = NULL;
    size_t len = 0;
    void *result = NULL;
    handoff h = HANDOFF_INIT;
    h.set = true;
    int sig = SIGUSR1;
    assert_int_equal(weft_file_open(NULL, "/dev/null", O_RDONLY, 0), WEFT_EINVAL);
    assert_int_equal(weft_file_read_all(NULL, "/dev/null", &data, &len), WEFT_EINVAL);
    assert_int_equal(weft_file_write_all(NULL, "/dev/null", "x", 1), WEFT_EINVAL);
    assert_int_equal(weft_blocking(NULL, wait_for_flag, &h, &result), WEFT_EINVAL);
    assert_null(weft_ctx_with_signals(NULL, &sig, 1));
    assert_null(data);
    assert_null(result);
}

/* ---- signal contexts --------------------------------------------------- */

/* Each body runs in a child process under weft_main and returns 0 or the
 * number of the step that failed, explained on stderr. */

static _Atomic int usr1_count;

static void count_usr1(int sig)
{
    (void)sig;
    atomic_fetch_add(&usr1_count, 1);
}

static bool install_count_usr1(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_usr1;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGUSR1, &sa, NULL) == 0;
}

static void (*current_handler(int sig))(int)
{
    struct sigaction now;
    if (sigaction(sig, NULL, &now) != 0)
        return NULL;
    return now.sa_handler;
}

/* Wait up to 2 s for ctx's done channel to close. */
static bool ended_soon(weft_ctx *ctx)
{
    weft_chan *done = weft_ctx_done(ctx);
    if (!done)
        return false;
    weft_case c = WEFT_RECV_CASE(done, NULL);
    return weft_select_until(&c, 1, weft_now() + LATE) == 0 && !c.ok;
}

#if !defined(TEST_TSAN)
static void *kill_self(void *arg)
{
    kill(getpid(), *(int *)arg);
    return NULL;
}
#endif

/* Send sig to the whole process from a new thread, so that any thread may
 * take it. NOTE: under ThreadSanitizer the kernel may pick a thread parked
 * in a raw futex wait, such as the one in weft_main, and TSan defers the
 * handler until that thread wakes. There the signal is raised on the
 * calling thread instead. */
static bool send_to_process(int sig)
{
#if defined(TEST_TSAN)
    return raise(sig) == 0;
#else
    pthread_t thread;
    if (pthread_create(&thread, NULL, kill_self, &sig) != 0)
        return false;
    return pthread_join(thread, NULL) == 0;
#endif
}

/* NOTE: a signal caught for one context may still be pending in the signal
 * loop when a newer context on the same signal is made, and then cancels
 * that one too. So every check that a context has not ended uses a signal
 * that was not raised before in the same process. */

static int signal_cancels_main(void *arg)
{
    (void)arg;
    int usr1 = SIGUSR1;
    weft_ctx *ctx = weft_ctx_with_signals(NULL, &usr1, 1);
    if (!ctx)
        return 2;
    if (weft_ctx_err(ctx) != 0)
        return 3;

    /* A signal sent to the process, which any thread may take. */
    int64_t start = weft_now();
    if (!send_to_process(SIGUSR1))
        return 4;
    if (!ended_soon(ctx)) {
        fprintf(stderr, "SIGUSR1 sent to the process did not end the context within 2 s\n");
        return 5;
    }
    fprintf(stderr, "SIGUSR1 sent to the process ended the context after %.2f ms\n",
            (weft_now() - start) / 1e6);
    if (weft_ctx_err(ctx) != WEFT_ECANCELED)
        return 6;

    /* Later signals are still caught: the program's handler does not run
     * and nothing dies. raise runs the handler before it returns. */
    raise(SIGUSR1);
    raise(SIGUSR1);
    if (atomic_load(&usr1_count) != 0) {
        fprintf(stderr, "the program's handler ran %d times while the context lived\n",
                atomic_load(&usr1_count));
        return 7;
    }
    if (weft_ctx_err(ctx) != WEFT_ECANCELED)
        return 8;

    /* Release puts the program's handler back. */
    weft_ctx_release(ctx);
    if (current_handler(SIGUSR1) != count_usr1) {
        fprintf(stderr, "the handler after release is not the program's\n");
        return 9;
    }
    raise(SIGUSR1);
    if (atomic_load(&usr1_count) != 1)
        return 10;

    /* A context on a signal not raised before, ended by raise from this
     * coroutine's thread. SIGUSR2 keeps its default action, which would
     * end the process if weft did not catch it. */
    signal(SIGUSR2, SIG_DFL);
    int usr2 = SIGUSR2;
    ctx = weft_ctx_with_signals(NULL, &usr2, 1);
    if (!ctx)
        return 11;
    if (weft_ctx_err(ctx) != 0)
        return 12;
    start = weft_now();
    raise(SIGUSR2);
    if (!ended_soon(ctx) || weft_ctx_err(ctx) != WEFT_ECANCELED) {
        fprintf(stderr, "raise(SIGUSR2) did not end the context within 2 s\n");
        return 13;
    }
    fprintf(stderr, "raise(SIGUSR2) ended the context after %.2f ms\n",
            (weft_now() - start) / 1e6);
    raise(SIGUSR2);
    weft_ctx_release(ctx);
    if (current_handler(SIGUSR2) != SIG_DFL)
        return 14;
    if (current_handler(SIGUSR1) != count_usr1 || atomic_load(&usr1_count) != 1)
        return 15;
    return 0;
}

static int signal_cancels_child(void *arg)
{
    if (!install_count_usr1())
        return 100;
    return weft_main(signal_cancels_main, arg);
}

static void test_signal_cancels_context(void **state)
{
    (void)state;
    char err[4096];
    int status = run_in_child(signal_cancels_child, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
}

static int signal_contexts_main(void *arg)
{
    (void)arg;
    int usr1 = SIGUSR1;
    int usr2 = SIGUSR2;
    signal(SIGUSR2, SIG_DFL);

    /* Contexts on different signals: each signal ends only its own. This
     * comes first, while neither signal has been raised. */
    weft_ctx *on_usr1 = weft_ctx_with_signals(NULL, &usr1, 1);
    weft_ctx *on_usr2 = weft_ctx_with_signals(NULL, &usr2, 1);
    if (!on_usr1 || !on_usr2)
        return 2;
    raise(SIGUSR2);
    if (!ended_soon(on_usr2))
        return 3;
    if (weft_ctx_err(on_usr1) != 0) {
        fprintf(stderr, "SIGUSR2 ended a context on SIGUSR1\n");
        return 4;
    }
    raise(SIGUSR1);
    if (!ended_soon(on_usr1))
        return 5;
    weft_ctx_release(on_usr1);
    weft_ctx_release(on_usr2);
    if (current_handler(SIGUSR2) != SIG_DFL)
        return 6;
    if (current_handler(SIGUSR1) != count_usr1)
        return 7;

    /* Several signals in one context: any one of them cancels it, and the
     * others stay caught until release. */
    int both[] = { SIGUSR1, SIGUSR2 };
    weft_ctx *ctx = weft_ctx_with_signals(NULL, both, 2);
    if (!ctx)
        return 8;
    raise(SIGUSR2);
    if (!ended_soon(ctx) || weft_ctx_err(ctx) != WEFT_ECANCELED)
        return 9;
    raise(SIGUSR2);
    raise(SIGUSR1);
    weft_ctx_release(ctx);
    if (current_handler(SIGUSR2) != SIG_DFL)
        return 10;
    if (current_handler(SIGUSR1) != count_usr1)
        return 11;
    if (atomic_load(&usr1_count) != 0)
        return 12;

    /* Cancelling the parent ends the context too, and release restores. */
    weft_ctx *parent = weft_ctx_with_cancel(NULL);
    ctx = weft_ctx_with_signals(parent, &usr1, 1);
    if (!ctx)
        return 13;
    weft_ctx_cancel(parent);
    if (!ended_soon(ctx) || weft_ctx_err(ctx) != WEFT_ECANCELED)
        return 14;
    weft_ctx_release(ctx);
    weft_ctx_release(parent);
    if (current_handler(SIGUSR1) != count_usr1)
        return 15;

    /* A child of a signal context ends with it. */
    ctx = weft_ctx_with_signals(NULL, &usr1, 1);
    weft_ctx *child = weft_ctx_with_timeout(ctx, WEFT_SEC(60));
    if (!ctx || !child)
        return 16;
    raise(SIGUSR1);
    if (!ended_soon(child) || weft_ctx_err(child) != WEFT_ECANCELED)
        return 17;
    weft_ctx_release(child);
    weft_ctx_release(ctx);

    /* Two contexts on one signal: one signal ends both, and the program's
     * handler comes back only when both are released, in either order. */
    for (int order = 0; order < 2; order++) {
        weft_ctx *first = weft_ctx_with_signals(NULL, &usr1, 1);
        weft_ctx *second = weft_ctx_with_signals(NULL, &usr1, 1);
        if (!first || !second)
            return 18;
        raise(SIGUSR1);
        if (!ended_soon(first) || !ended_soon(second))
            return 19;
        weft_ctx_release(order == 0 ? second : first);
        if (current_handler(SIGUSR1) == count_usr1) {
            fprintf(stderr, "the handler came back while a context still lived\n");
            return 20;
        }
        raise(SIGUSR1);
        weft_ctx_release(order == 0 ? first : second);
        if (current_handler(SIGUSR1) != count_usr1)
            return 21;
        if (atomic_load(&usr1_count) != 0)
            return 22;
    }

    /* SIGTERM, the usual one, sent to the process, with its default action
     * restored after. */
    int term = SIGTERM;
    signal(SIGTERM, SIG_DFL);
    ctx = weft_ctx_with_signals(NULL, &term, 1);
    if (!ctx)
        return 23;
    if (weft_ctx_err(ctx) != 0)
        return 24;
    if (!send_to_process(SIGTERM))
        return 25;
    if (!ended_soon(ctx))
        return 26;
    weft_ctx_release(ctx);
    if (current_handler(SIGTERM) != SIG_DFL)
        return 27;
    return 0;
}

static int signal_contexts_child(void *arg)
{
    if (!install_count_usr1())
        return 100;
    return weft_main(signal_contexts_main, arg);
}

static void test_signal_several_contexts(void **state)
{
    (void)state;
    char err[4096];
    int status = run_in_child(signal_contexts_child, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
}

static int signal_invalid_main(void *arg)
{
    (void)arg;
    int usr1 = SIGUSR1;
    if (weft_ctx_with_signals(NULL, &usr1, 0) != NULL)
        return 2;
    if (weft_ctx_with_signals(NULL, NULL, 1) != NULL)
        return 3;
    static const int invalid[] = {
        SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, 0, -1, NSIG, 1000,
    };
    for (size_t i = 0; i < sizeof invalid / sizeof invalid[0]; i++) {
        if (weft_ctx_with_signals(NULL, &invalid[i], 1) != NULL) {
            fprintf(stderr, "signal %d was accepted\n", invalid[i]);
            return 4;
        }
    }
    /* One bad number in the list fails the call and changes nothing. */
    int mixed[] = { SIGUSR1, SIGKILL };
    if (weft_ctx_with_signals(NULL, mixed, 2) != NULL)
        return 5;
    if (current_handler(SIGUSR1) != count_usr1)
        return 6;
    raise(SIGUSR1);
    if (atomic_load(&usr1_count) != 1)
        return 7;
    return 0;
}

static int signal_invalid_child(void *arg)
{
    if (!install_count_usr1())
        return 100;
    return weft_main(signal_invalid_main, arg);
}

static void test_signal_invalid_numbers(void **state)
{
    (void)state;
    char err[4096];
    int status = run_in_child(signal_invalid_child, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
}

int main(void)
{
    /* The tests that fork come first. ThreadSanitizer ends a child forked
     * from a process with threads as soon as the child starts a thread.
     * libuv's thread pool, started by the first file operation, keeps its
     * threads after weft_shutdown. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_signal_cancels_context, stop_runtime),
        cmocka_unit_test_teardown(test_signal_several_contexts, stop_runtime),
        cmocka_unit_test_teardown(test_signal_invalid_numbers, stop_runtime),
        cmocka_unit_test_teardown(test_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_file_round_trip, stop_runtime),
        cmocka_unit_test_teardown(test_file_read_all_special, stop_runtime),
        cmocka_unit_test_teardown(test_file_errors, stop_runtime),
        cmocka_unit_test_teardown(test_file_ended_context, stop_runtime),
        cmocka_unit_test_teardown(test_file_read_outlives_context, stop_runtime),
        cmocka_unit_test_teardown(test_files_many_coroutines, stop_runtime),
        cmocka_unit_test_teardown(test_files_plain_thread, stop_runtime),
        cmocka_unit_test_teardown(test_file_invalid_arguments, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_keeps_slot_free, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_context_ends_first, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_more_calls_than_threads, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_pool_separate, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_shutdown_while_running, stop_runtime),
        cmocka_unit_test_teardown(test_blocking_plain_thread, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
