/*
 * Stack overflow report. A coroutine that runs into the guard page below
 * its stack makes the process print "weft: fatal: stack overflow in
 * coroutine N (spawned at FILE:LINE), stack size S" and abort. Every other
 * fault keeps the behaviour it has without weft.
 *
 * Each crash runs in a child process (run_in_child), and the test checks
 * how the child ended and what it wrote to stderr. Before it overflows,
 * the coroutine writes its id and spawn line to stderr, so the test can
 * build the exact line the runtime must print.
 *
 * Overflows come from deep recursion and from one frame larger than the
 * guard page, whose stack-clash probes hit the guard. They are checked
 * with guards from MADV_GUARD_INSTALL and from mprotect, for a named
 * coroutine, for weft_main's own coroutine and after a restart of the
 * runtime. Other faults: a bad pointer read in a coroutine
 * still dies of SIGSEGV, and a SIGSEGV handler the program installed
 * before weft_init still receives it with the original fault address.
 * weft_shutdown puts the previous handler back, but keeps one the program
 * installed while weft ran.
 *
 * Sanitizers: both let a program replace their SIGSEGV handler
 * (AddressSanitizer's allow_user_segv_handler is on by default), so
 * overflows are reported in every build. In a fresh process, a fault that
 * is not an overflow goes back to the sanitizer's own handler, which
 * prints its report instead of dying of SIGSEGV.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "arch/stack.h"
#include "helpers.h"

#define STDERR_CAPTURE 8192

typedef struct overflow_case {
    size_t stack_size;     /* weft_go_opts.stack_size */
    const char *name;      /* weft_go_opts.name, may be NULL */
    bool big_frame;        /* one 100 KiB frame instead of deep recursion */
    bool mprotect_guards;  /* WEFT_DEBUG=guard=mprotect */
    bool restart_first;    /* start and stop the runtime once before */
} overflow_case;

/* Read by the recursion, so the compiler cannot bound its depth. */
static volatile size_t recursion_bytes = (size_t)64 << 20;

/* Use about `bytes` of stack, 1 KiB per call. */
__attribute__((noinline)) static int use_stack(size_t bytes)
{
    volatile char frame[1024];
    frame[0] = (char)bytes;
    frame[sizeof frame - 1] = 1;
    if (bytes <= sizeof frame)
        return frame[0] + frame[sizeof frame - 1];
    return use_stack(bytes - sizeof frame) + frame[sizeof frame - 1];
}

/* A frame much larger than the guard page. The library's interface adds
 * -fstack-clash-protection, so the frame is probed page by page and the
 * probe hits the guard instead of jumping over it. */
__attribute__((noinline)) static int big_frame(int seed)
{
    volatile char block[100 * 1024];
    block[0] = (char)seed;
    block[sizeof block - 1] = (char)seed;
    return block[0] + block[sizeof block - 1];
}

/* The line of the weft_go_with call in spawn_overflowing. */
static int overflow_spawn_line;

static void overflowing(void *arg)
{
    const overflow_case *c = arg;
    fprintf(stderr, "overflowing: coroutine %" PRIu64 " spawned at line %d\n",
            weft_id(), overflow_spawn_line);
    fflush(stderr);
    int r = c->big_frame ? big_frame(7) : use_stack(recursion_bytes);
    fprintf(stderr, "not reached: the stack held %d\n", r);
}

static int spawn_overflowing(void *arg)
{
    const overflow_case *c = arg;
    weft_go_opts opts = { .stack_size = c->stack_size, .name = c->name };
    weft_wg never = {0};
    weft_wg_add(&never, 1);
    overflow_spawn_line = __LINE__ + 1;
    if (weft_go_with(overflowing, (void *)c, &opts) != 0)
        return 30;
    weft_wg_wait(&never); /* the overflow ends the process first */
    return 31;
}

static void no_core_file(void)
{
    struct rlimit none = { 0, 0 };
    setrlimit(RLIMIT_CORE, &none);
}

static int overflow_child(void *arg)
{
    const overflow_case *c = arg;
    no_core_file();
    if (c->mprotect_guards)
        setenv("WEFT_DEBUG", "guard=mprotect", 1);
    if (c->restart_first) {
        if (weft_init(NULL) != 0)
            return 20;
        if (weft_shutdown() != 0)
            return 21;
    }
    return weft_main(spawn_overflowing, (void *)c);
}

/* Check that a child running c printed the exact overflow line and died
 * of SIGABRT. */
static void check_overflow_report(const overflow_case *c, int status, const char *err)
{
    print_message("child stderr:\n%s", err);

    uint64_t id = 0;
    int line = 0;
    const char *marker = strstr(err, "overflowing: coroutine ");
    assert_non_null(marker);
    assert_int_equal(sscanf(marker, "overflowing: coroutine %" SCNu64 " spawned at line %d",
                            &id, &line), 2);
    assert_true(id > 0);
    assert_true(line > 0);

    char name_part[160] = "";
    if (c->name)
        snprintf(name_part, sizeof name_part, " \"%s\"", c->name);
    char want[PATH_MAX + 256];
    snprintf(want, sizeof want,
             "weft: fatal: stack overflow in coroutine %" PRIu64 "%s (spawned at %s:%d), "
             "stack size %zu\n",
             id, name_part, __FILE__, line, c->stack_size);
    assert_non_null(strstr(err, want));
    assert_null(strstr(err, "not reached"));
    assert_int_equal(status, 128 + SIGABRT);
}

static void assert_overflow_reported(const overflow_case *c)
{
    static char err[STDERR_CAPTURE];
    int status = run_in_child(overflow_child, (void *)c, err, sizeof err);
    check_overflow_report(c, status, err);
}

static void test_recursion_overflow_reported(void **state)
{
    (void)state;
    overflow_case c = { .stack_size = 64 * 1024 };
    assert_overflow_reported(&c);
}

static void test_big_frame_overflow_reported(void **state)
{
    (void)state;
    overflow_case c = { .stack_size = 32 * 1024, .big_frame = true };
    assert_overflow_reported(&c);
}

static void test_overflow_reported_with_mprotect_guards(void **state)
{
    (void)state;
    overflow_case c = { .stack_size = 64 * 1024, .mprotect_guards = true };
    assert_overflow_reported(&c);
    overflow_case big = { .stack_size = 32 * 1024, .big_frame = true,
                          .mprotect_guards = true };
    assert_overflow_reported(&big);
}

static void test_overflow_names_coroutine(void **state)
{
    (void)state;
    overflow_case c = { .stack_size = 128 * 1024, .name = "deep recursion" };
    assert_overflow_reported(&c);
}

static void test_overflow_after_restart(void **state)
{
    (void)state;
    overflow_case c = { .stack_size = 64 * 1024, .restart_first = true };
    assert_overflow_reported(&c);
}

static int overflow_in_main(void *arg)
{
    (void)arg;
    fprintf(stderr, "overflowing: coroutine %" PRIu64 "\n", weft_id());
    fflush(stderr);
    int r = use_stack(recursion_bytes);
    fprintf(stderr, "not reached: the stack held %d\n", r);
    return 0;
}

static int main_overflow_child(void *arg)
{
    (void)arg;
    no_core_file();
    weft_config cfg = { .stack_size = 64 * 1024 };
    return weft_main_config(&cfg, overflow_in_main, NULL);
}

/* weft_main's own coroutine is named "main" and has no spawn site. */
static void test_overflow_in_main_coroutine(void **state)
{
    (void)state;
    static char err[STDERR_CAPTURE];
    int status = run_in_child(main_overflow_child, NULL, err, sizeof err);
    print_message("child stderr:\n%s", err);

    uint64_t id = 0;
    const char *marker = strstr(err, "overflowing: coroutine ");
    assert_non_null(marker);
    assert_int_equal(sscanf(marker, "overflowing: coroutine %" SCNu64, &id), 1);
    char want[256];
    snprintf(want, sizeof want,
             "weft: fatal: stack overflow in coroutine %" PRIu64
             " \"main\" (spawned by weft_main), stack size 65536\n", id);
    assert_non_null(strstr(err, want));
    assert_null(strstr(err, "not reached"));
    assert_int_equal(status, 128 + SIGABRT);
}

/* The guard mode the children use really differs: mprotect when asked. */
static void test_mprotect_guards_selected(void **state)
{
    (void)state;
    setenv("WEFT_DEBUG", "guard=mprotect", 1);
    int err = weft_init(NULL);
    unsetenv("WEFT_DEBUG");
    assert_int_equal(err, 0);
    assert_false(weft__stack_guard_is_madvise());
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- faults that are not overflows -------------------------------------- */

/* Read through the pointer, so the compiler cannot drop the fault. */
static int *volatile bad_pointer = (int *)16;

static void dereference_bad_pointer(void *arg)
{
    (void)arg;
    fprintf(stderr, "not reached: read %d\n", *bad_pointer);
}

static int dereference_main(void *arg)
{
    (void)arg;
    weft_wg never = {0};
    weft_wg_add(&never, 1);
    if (weft_go(dereference_bad_pointer, NULL) != 0)
        return 30;
    weft_wg_wait(&never);
    return 31;
}

static int dereference_child(void *arg)
{
    (void)arg;
    no_core_file();
    return weft_main(dereference_main, NULL);
}

static void test_bad_pointer_still_segfaults(void **state)
{
    (void)state;
    static char err[STDERR_CAPTURE];
    int status = run_in_child(dereference_child, NULL, err, sizeof err);
    print_message("child stderr:\n%s", err);
    assert_null(strstr(err, "stack overflow"));
    assert_null(strstr(err, "not reached"));
    assert_int_equal(status, 128 + SIGSEGV);
}

/* A handler the program installs before weft_init, with SA_SIGINFO. It
 * exits with 42 when si_addr is the address the coroutine read. */
static void program_segv_handler(int sig, siginfo_t *info, void *ucontext)
{
    (void)sig;
    (void)ucontext;
    static const char msg[] = "program handler ran\n";
    ssize_t written = write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)written;
    _exit(info->si_addr == (void *)bad_pointer ? 42 : 43);
}

static int program_handler_child(void *arg)
{
    (void)arg;
    no_core_file();
    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = program_segv_handler;
    act.sa_flags = SA_SIGINFO;
    sigemptyset(&act.sa_mask);
    if (sigaction(SIGSEGV, &act, NULL) != 0)
        return 20;
    return weft_main(dereference_main, NULL);
}

static void test_program_handler_gets_fault(void **state)
{
    (void)state;
    static char err[STDERR_CAPTURE];
    int status = run_in_child(program_handler_child, NULL, err, sizeof err);
    print_message("child stderr:\n%s", err);
    assert_non_null(strstr(err, "program handler ran"));
    assert_null(strstr(err, "stack overflow"));
    assert_int_equal(status, 42);
}

static void program_handler_unused(int sig)
{
    (void)sig;
}

static bool same_action(const struct sigaction *a, const struct sigaction *b)
{
    if ((a->sa_flags & SA_SIGINFO) != (b->sa_flags & SA_SIGINFO))
        return false;
    if (a->sa_flags & SA_SIGINFO)
        return a->sa_sigaction == b->sa_sigaction;
    return a->sa_handler == b->sa_handler;
}

static void test_shutdown_restores_previous_handler(void **state)
{
    (void)state;
    struct sigaction before_segv, before_bus, during, after;
    assert_int_equal(sigaction(SIGSEGV, NULL, &before_segv), 0);
    assert_int_equal(sigaction(SIGBUS, NULL, &before_bus), 0);

    assert_int_equal(weft_init(NULL), 0);
    assert_int_equal(sigaction(SIGSEGV, NULL, &during), 0);
    assert_false(same_action(&during, &before_segv));
    assert_true(during.sa_flags & SA_ONSTACK);
    assert_true(during.sa_flags & SA_SIGINFO);
    assert_int_equal(sigaction(SIGBUS, NULL, &during), 0);
    assert_false(same_action(&during, &before_bus));
    assert_int_equal(weft_shutdown(), 0);

    assert_int_equal(sigaction(SIGSEGV, NULL, &after), 0);
    assert_true(same_action(&after, &before_segv));
    assert_int_equal(sigaction(SIGBUS, NULL, &after), 0);
    assert_true(same_action(&after, &before_bus));
}

static void test_shutdown_keeps_later_handler(void **state)
{
    (void)state;
    struct sigaction before, program, after;
    assert_int_equal(sigaction(SIGSEGV, NULL, &before), 0);

    assert_int_equal(weft_init(NULL), 0);
    memset(&program, 0, sizeof program);
    program.sa_handler = program_handler_unused;
    sigemptyset(&program.sa_mask);
    assert_int_equal(sigaction(SIGSEGV, &program, NULL), 0);
    assert_int_equal(weft_shutdown(), 0);

    assert_int_equal(sigaction(SIGSEGV, &before, &after), 0);
    assert_true(same_action(&after, &program));
}

/* ---- a fresh copy of this program --------------------------------------
 *
 * cmocka replaces the crash signals' handlers while a test runs, and
 * run_in_child sets them to the default, so in those children weft
 * replaces the default action. A fresh copy of this program (exec of
 * /proc/self/exe) starts with the handlers a program really has: none, or
 * the sanitizer's own in sanitizer builds. */

static const overflow_case fresh_overflow = { .stack_size = 64 * 1024 };

static int exec_fresh_copy(void *arg)
{
    const char *mode = arg;
    execl("/proc/self/exe", "test_overflow", mode, (char *)NULL);
    return 40;
}

static void test_overflow_reported_in_fresh_process(void **state)
{
    (void)state;
    static char err[STDERR_CAPTURE];
    int status = run_in_child(exec_fresh_copy, "overflow", err, sizeof err);
    check_overflow_report(&fresh_overflow, status, err);
}

static void test_bad_pointer_in_fresh_process(void **state)
{
    (void)state;
    static char err[STDERR_CAPTURE];
    int status = run_in_child(exec_fresh_copy, "bad-pointer", err, sizeof err);
    print_message("child stderr:\n%s", err);
    assert_null(strstr(err, "stack overflow"));
    assert_null(strstr(err, "not reached"));
#if defined(TEST_ASAN)
    /* The fault went back to AddressSanitizer's handler, which reports it
     * with a stack trace and exits with status 1. */
    assert_non_null(strstr(err, "AddressSanitizer: SEGV on unknown address"));
    assert_non_null(strstr(err, "in dereference_bad_pointer"));
    assert_int_equal(status, 1);
#elif defined(TEST_TSAN)
    /* The fault went back to ThreadSanitizer's handler, which starts its
     * report and exits with status 66. gcc 12's ThreadSanitizer then stops
     * with "nested bug in the same thread" instead of printing the stack
     * trace whenever any SA_SIGINFO handler has run for the fault before
     * it, with or without weft, so the trace is not checked here. */
    assert_non_null(strstr(err, "ThreadSanitizer: SEGV on unknown address"));
    assert_int_equal(status, 66);
#else
    assert_int_equal(status, 128 + SIGSEGV);
#endif
}

int main(int argc, char **argv)
{
    /* The entry points of a fresh copy (exec_fresh_copy). */
    if (argc == 2 && strcmp(argv[1], "overflow") == 0)
        return overflow_child((void *)&fresh_overflow);
    if (argc == 2 && strcmp(argv[1], "bad-pointer") == 0)
        return dereference_child(NULL);

    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_recursion_overflow_reported),
        cmocka_unit_test(test_big_frame_overflow_reported),
        cmocka_unit_test(test_overflow_reported_with_mprotect_guards),
        cmocka_unit_test(test_overflow_names_coroutine),
        cmocka_unit_test(test_overflow_after_restart),
        cmocka_unit_test(test_overflow_in_main_coroutine),
        cmocka_unit_test_teardown(test_mprotect_guards_selected, stop_runtime),
        cmocka_unit_test(test_bad_pointer_still_segfaults),
        cmocka_unit_test(test_program_handler_gets_fault),
        cmocka_unit_test(test_overflow_reported_in_fresh_process),
        cmocka_unit_test(test_bad_pointer_in_fresh_process),
        cmocka_unit_test_teardown(test_shutdown_restores_previous_handler, stop_runtime),
        cmocka_unit_test_teardown(test_shutdown_keeps_later_handler, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
