/*
 * Helpers shared by the test programs: a teardown that stops the runtime,
 * a bounded wait on a counter, a byte-pattern check, and a runner for code
 * in a child process. The test then checks the child's exit status and
 * stderr, which is how fatal misuse and crashes fail one test rather than
 * the whole program.
 *
 * Everything here is static inline, so a program that uses only part of it
 * gets no unused-function warnings.
 */
#ifndef WEFT_TEST_HELPERS_H
#define WEFT_TEST_HELPERS_H

#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "weft.h"

/* Shut the runtime down after each test, so that a test which failed with
 * the runtime running does not make the next weft_init fail. */
static inline int stop_runtime(void **state)
{
    (void)state;
    weft_shutdown();
    return 0;
}

/* Yield until *counter reaches want. Returns false when timeout ns pass
 * first. */
static inline bool wait_for_count(_Atomic int *counter, int want, int64_t timeout)
{
    int64_t deadline = weft_now() + timeout;
    while (atomic_load(counter) < want) {
        if (weft_now() > deadline)
            return false;
        weft_yield();
    }
    return true;
}

/* Return true when all n bytes at p equal value. */
static inline bool all_bytes_equal(const void *p, size_t n, unsigned char value)
{
    const unsigned char *bytes = p;
    for (size_t i = 0; i < n; i++) {
        if (bytes[i] != value)
            return false;
    }
    return true;
}

/* Read fd to its end, keeping the first len - 1 bytes in buf as a string.
 * Reading on past a full buffer keeps a chatty child (a sanitizer report)
 * from dying of SIGPIPE. */
static inline void read_all(int fd, char *buf, size_t len)
{
    size_t got = 0;
    char sink[512];
    for (;;) {
        ssize_t r;
        if (got + 1 < len)
            r = read(fd, buf + got, len - 1 - got);
        else
            r = read(fd, sink, sizeof sink);
        if (r <= 0)
            break;
        if (got + 1 < len)
            got += (size_t)r;
    }
    buf[got] = '\0';
}

/* Run body(arg) in a child process and return the child's exit status,
 * which is body's result, or 128 plus the signal that ended it. With err
 * non-NULL, the child's stderr is captured there as a string. The child
 * gets 20 s before an alarm ends it, so a hang fails too. */
static inline int run_in_child(int (*body)(void *arg), void *arg, char *err,
                               size_t err_len)
{
    int fds[2] = { -1, -1 };
    if (err)
        assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* cmocka's handlers would report a crash here as a failure of this
         * test and run the remaining tests in the child too. */
        int crash_signals[] = { SIGSEGV, SIGBUS, SIGILL, SIGFPE, SIGABRT, SIGSYS };
        for (size_t i = 0; i < sizeof crash_signals / sizeof crash_signals[0]; i++)
            signal(crash_signals[i], SIG_DFL);
        if (err) {
            dup2(fds[1], 2);
            close(fds[0]);
            close(fds[1]);
        }
        alarm(20);
        _exit(body(arg));
    }
    if (err) {
        close(fds[1]);
        read_all(fds[0], err, err_len);
        close(fds[0]);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (WIFSIGNALED(status))
        return 128 + WTERMSIG(status);
    return WEXITSTATUS(status);
}

static inline int call_void_body(void *arg)
{
    void (**body)(void) = arg;
    (*body)();
    return 0;
}

/* run_in_child for a body that reports failure by aborting or by _exit. */
static inline int run_void_in_child(void (*body)(void), char *err, size_t err_len)
{
    return run_in_child(call_void_body, &body, err, err_len);
}

#endif /* WEFT_TEST_HELPERS_H */
