/*
 * Runtime lifecycle and API contract: start and stop, restart, bad
 * arguments, configuration and environment variables, error names, and
 * calls from plain threads.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "check.h"
#include "helpers.h"
#include "weft.h"

static void noop(void *arg)
{
    (void)arg;
}

static void test_calls_before_init(void **state)
{
    (void)state;
    assert_int_equal(weft_go(noop, NULL), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), WEFT_EINVAL);
    assert_int_equal(weft_maxprocs(), 0);
    assert_int_equal(weft_num_coroutines(), 0);
    assert_int_equal(weft_id(), 0);
    assert_false(weft_in_coroutine());
    /* A plain thread may sleep without a runtime. */
    int64_t start = weft_now();
    assert_int_equal(weft_sleep(WEFT_MS(2)), 0);
    assert_true(weft_now() - start >= WEFT_MS(2));
}

static void test_init_twice_and_restart(void **state)
{
    (void)state;
    for (int round = 0; round < 5; round++) {
        assert_int_equal(weft_init(NULL), 0);
        assert_int_equal(weft_init(NULL), WEFT_EINVAL);
        assert_true(weft_maxprocs() >= 1);
        assert_int_equal(weft_shutdown(), 0);
        assert_int_equal(weft_shutdown(), WEFT_EINVAL);
    }
}

static void test_bad_arguments(void **state)
{
    (void)state;
    weft_config bad = { .maxprocs = -1 };
    assert_int_equal(weft_init(&bad), WEFT_EINVAL);
    weft_config tiny = { .stack_size = 100 };
    assert_int_equal(weft_init(&tiny), WEFT_EINVAL);
    assert_int_equal(weft_main(NULL, NULL), WEFT_EINVAL);

    assert_int_equal(weft_init(NULL), 0);
    assert_int_equal(weft_go(NULL, NULL), WEFT_EINVAL);
    weft_go_opts small = { .stack_size = 1024 };
    assert_int_equal(weft_go_with(noop, NULL, &small), WEFT_EINVAL);
    weft_go_opts huge = { .stack_size = (size_t)1 << 40 };
    assert_int_equal(weft_go_with(noop, NULL, &huge), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_config_maxprocs(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 3 };
    assert_int_equal(weft_init(&cfg), 0);
    assert_int_equal(weft_maxprocs(), 3);
    assert_int_equal(weft_shutdown(), 0);

    /* The default is the CPUs this process may use. */
    cpu_set_t set;
    assert_int_equal(sched_getaffinity(0, sizeof set, &set), 0);
    unsetenv("WEFT_MAXPROCS");
    assert_int_equal(weft_init(NULL), 0);
    assert_true(weft_maxprocs() >= 1);
    assert_true(weft_maxprocs() <= CPU_COUNT(&set));
    assert_int_equal(weft_shutdown(), 0);

    /* A config field wins over the environment. */
    setenv("WEFT_MAXPROCS", "1", 1);
    assert_int_equal(weft_init(NULL), 0);
    assert_int_equal(weft_maxprocs(), 1);
    assert_int_equal(weft_shutdown(), 0);
    assert_int_equal(weft_init(&cfg), 0);
    assert_int_equal(weft_maxprocs(), 3);
    assert_int_equal(weft_shutdown(), 0);
    unsetenv("WEFT_MAXPROCS");
}

/* Run weft_init with WEFT_MAXPROCS=value in a child; return the child's
 * stderr in buf and maxprocs as exit status. */
static int init_with_env(const char *name, const char *value, char *buf, size_t len)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        setenv(name, value, 1);
        if (weft_init(NULL) != 0)
            _exit(100);
        int n = weft_maxprocs();
        weft_shutdown();
        _exit(n);
    }
    close(fds[1]);
    read_all(fds[0], buf, len);
    close(fds[0]);
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    return WEXITSTATUS(status);
}

static void test_bad_env_values(void **state)
{
    (void)state;
    char err[512];
    const char *bad[] = { "zero", "0", "-2", "3x", "99999" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int n = init_with_env("WEFT_MAXPROCS", bad[i], err, sizeof err);
        assert_true(n >= 1 && n < 100);
        assert_non_null(strstr(err, "weft: warning: invalid WEFT_MAXPROCS"));
        assert_non_null(strstr(err, bad[i]));
    }
    int n = init_with_env("WEFT_MAXPROCS", "2", err, sizeof err);
    assert_int_equal(n, 2);
    assert_string_equal(err, "");

    n = init_with_env("WEFT_STACK_SIZE", "12potatoes", err, sizeof err);
    assert_true(n >= 1 && n < 100);
    assert_non_null(strstr(err, "weft: warning: invalid WEFT_STACK_SIZE"));
    const char *good_sizes[] = { "64k", "64kb", "64KiB", "1m", "1MiB", "65536" };
    for (size_t i = 0; i < sizeof good_sizes / sizeof good_sizes[0]; i++) {
        init_with_env("WEFT_STACK_SIZE", good_sizes[i], err, sizeof err);
        assert_string_equal(err, "");
    }
    const char *bad_sizes[] = { "64ki", "64kbb", "1t", "-1k", "4k", "2g" };
    for (size_t i = 0; i < sizeof bad_sizes / sizeof bad_sizes[0]; i++) {
        init_with_env("WEFT_STACK_SIZE", bad_sizes[i], err, sizeof err);
        assert_non_null(strstr(err, "weft: warning: invalid WEFT_STACK_SIZE"));
    }
}

typedef struct spawn_from_thread {
    weft_wg wg;
    _Atomic int ran;
    _Atomic int in_coroutine;
} spawn_from_thread;

static void count_run(void *arg)
{
    spawn_from_thread *s = arg;
    atomic_fetch_add(&s->ran, 1);
    if (weft_in_coroutine() && weft_id() != 0)
        atomic_fetch_add(&s->in_coroutine, 1);
    weft_wg_done(&s->wg);
}

static void *thread_spawner(void *arg)
{
    spawn_from_thread *s = arg;
    for (int i = 0; i < 1000; i++)
        CHECK(weft_go(count_run, s) == 0);
    return NULL;
}

static void test_spawn_from_plain_threads(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    spawn_from_thread s = {0};
    weft_wg_add(&s.wg, 4000);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        assert_int_equal(pthread_create(&t[i], NULL, thread_spawner, &s), 0);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    weft_wg_wait(&s.wg);
    assert_int_equal(atomic_load(&s.ran), 4000);
    assert_int_equal(atomic_load(&s.in_coroutine), 4000);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static int main_result(void *arg)
{
    CHECK(weft_in_coroutine());
    CHECK(weft_num_coroutines() >= 1);
    CHECK(weft_shutdown() == WEFT_EINVAL);
    CHECK(weft_init(NULL) == WEFT_EINVAL);
    return *(int *)arg;
}

static void test_main_returns_result(void **state)
{
    (void)state;
    int v = 42;
    assert_int_equal(weft_main(main_result, &v), 42);
    v = 7;
    weft_config cfg = { .maxprocs = 1 };
    assert_int_equal(weft_main_config(&cfg, main_result, &v), 7);
    assert_int_equal(weft_maxprocs(), 0);
    assert_no_check_failures();
}

static _Atomic int abandoned_started;

static void block_forever(void *arg)
{
    weft_wg *never = arg;
    atomic_fetch_add(&abandoned_started, 1);
    weft_wg_wait(never);
}

static void spin_yield(void *arg)
{
    (void)arg;
    atomic_fetch_add(&abandoned_started, 1);
    for (;;)
        weft_yield();
}

static void sleep_long(void *arg)
{
    (void)arg;
    atomic_fetch_add(&abandoned_started, 1);
    weft_sleep(WEFT_SEC(3600));
}

static void test_shutdown_abandons_coroutines(void **state)
{
    (void)state;
    for (int round = 0; round < 3; round++) {
        assert_int_equal(weft_init(NULL), 0);
        atomic_store(&abandoned_started, 0);
        weft_wg never = {0};
        weft_wg_add(&never, 1);
        for (int i = 0; i < 100; i++) {
            assert_int_equal(weft_go(block_forever, &never), 0);
            assert_int_equal(weft_go(sleep_long, NULL), 0);
        }
        assert_int_equal(weft_go(spin_yield, NULL), 0);
        weft_go_opts named = { .name = "abandoned", .stack_size = 64 * 1024 };
        assert_int_equal(weft_go_with(block_forever, &never, &named), 0);
        /* Wait, bounded, until every one has started (and so parked). */
        int64_t limit = weft_now() + WEFT_SEC(30);
        while (atomic_load(&abandoned_started) < 202 && weft_now() < limit)
            sched_yield();
        assert_int_equal(atomic_load(&abandoned_started), 202);
        assert_int_equal(weft_num_coroutines(), 202);
        assert_int_equal(weft_shutdown(), 0);
        assert_int_equal(weft_num_coroutines(), 0);
    }
}

typedef struct racer {
    _Atomic int stop;
    _Atomic long spawned;
    _Atomic long rejected;
    _Atomic long other;
} racer;

static void *spawn_until_stopped(void *arg)
{
    racer *r = arg;
    while (!atomic_load(&r->stop)) {
        int err = weft_go(noop, NULL);
        if (err == 0)
            atomic_fetch_add(&r->spawned, 1);
        else if (err == WEFT_EINVAL)
            atomic_fetch_add(&r->rejected, 1);
        else
            atomic_fetch_add(&r->other, 1);
        (void)weft_num_coroutines();
        (void)weft_maxprocs();
    }
    return NULL;
}

/* Plain threads that keep spawning while the runtime shuts down get 0 or
 * WEFT_EINVAL, never a crash or a use of freed memory (the sanitizer builds
 * check the latter). */
static void test_spawn_racing_shutdown(void **state)
{
    (void)state;
    racer r = {0};
    pthread_t t[3];
    for (int i = 0; i < 3; i++)
        assert_int_equal(pthread_create(&t[i], NULL, spawn_until_stopped, &r), 0);
    for (int round = 0; round < SCALE(200); round++) {
        assert_int_equal(weft_init(NULL), 0);
        assert_int_equal(weft_go(noop, NULL), 0);
        assert_int_equal(weft_shutdown(), 0);
    }
    atomic_store(&r.stop, 1);
    for (int i = 0; i < 3; i++)
        pthread_join(t[i], NULL);
    print_message("spawned %ld, rejected %ld\n", atomic_load(&r.spawned),
                  atomic_load(&r.rejected));
    assert_int_equal(atomic_load(&r.other), 0);
    assert_true(atomic_load(&r.rejected) > 0);
}

static void wait_on(void *arg)
{
    weft_wg_wait(arg);
}

static void *thread_wait_on(void *arg)
{
    weft_wg_wait(arg);
    return NULL;
}

/* Child: a coroutine and a plain thread wait on one wait group, the runtime
 * shuts down, and the wait group is released. The abandoned coroutine's
 * record is gone with its stack and must not be read (the sanitizer builds
 * check that); the thread must still wake. Exits 0 on success. */
static int wg_after_shutdown_child(void)
{
    static weft_wg wg;
    weft_wg_add(&wg, 1);
    if (weft_init(NULL) != 0 || weft_go(wait_on, &wg) != 0)
        return 20;
    pthread_t t;
    if (pthread_create(&t, NULL, thread_wait_on, &wg) != 0)
        return 21;
    /* Wait, bounded, until both are parked: two registered waiters. */
    int64_t limit = weft_now() + WEFT_SEC(30);
    while ((uint32_t)__atomic_load_n(&wg.state, __ATOMIC_ACQUIRE) < 2 &&
           weft_now() < limit)
        sched_yield();
    weft_shutdown();
    weft_wg_done(&wg);
    pthread_join(t, NULL);

    /* A new runtime's coroutine can use the same wait group again. */
    weft_wg_add(&wg, 1);
    if (weft_init(NULL) != 0 || weft_go(wait_on, &wg) != 0)
        return 22;
    weft_wg_done(&wg);
    weft_shutdown();
    return 0;
}

static void test_wg_after_shutdown(void **state)
{
    (void)state;
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(wg_after_shutdown_child());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_error_names(void **state)
{
    (void)state;
    assert_string_equal(weft_err_name(WEFT_ECLOSED), "ECLOSED");
    assert_string_equal(weft_err_name(WEFT_EAGAIN), "EAGAIN");
    assert_string_equal(weft_err_name(WEFT_ECANCELED), "ECANCELED");
    assert_string_equal(weft_err_name(WEFT_ETIMEDOUT), "ETIMEDOUT");
    assert_string_equal(weft_err_name(WEFT_ENOMEM), "ENOMEM");
    assert_string_equal(weft_err_name(WEFT_EINVAL), "EINVAL");
    assert_string_equal(weft_err_name(-ECONNREFUSED), "ECONNREFUSED");
    assert_string_equal(weft_err_name(-123456), "UNKNOWN");
    assert_int_equal(WEFT_EAGAIN, -EAGAIN);
    assert_int_equal(WEFT_ECANCELED, -ECANCELED);
    assert_int_equal(WEFT_ETIMEDOUT, -ETIMEDOUT);
    assert_int_equal(WEFT_ENOMEM, -ENOMEM);
    assert_int_equal(WEFT_EINVAL, -EINVAL);
    assert_true(WEFT_ECLOSED < 0);
    assert_string_equal(weft_err_name(WEFT_ECLOSED), "ECLOSED");
    assert_non_null(strstr(weft_strerror(WEFT_ECLOSED), "closed"));
    assert_non_null(strstr(weft_strerror(-ECONNREFUSED), "refused"));
    assert_string_equal(weft_strerror(-123456), "unknown error");
    assert_string_equal(weft_err_name(0), "OK");
}

static void test_duration_macros(void **state)
{
    (void)state;
    assert_int_equal(WEFT_NS(5), 5);
    assert_int_equal(WEFT_US(5), 5000);
    assert_int_equal(WEFT_MS(5), 5000000);
    assert_int_equal(WEFT_SEC(5), 5000000000LL);
    int64_t a = weft_now(), b = weft_now();
    assert_true(a > 0 && b >= a);
}

typedef struct sleep_result {
    weft_wg wg;
    int64_t asked[50];
    int64_t slept[50];
} sleep_result;

static void sleeper(void *arg)
{
    sleep_result *r = arg;
    static _Atomic int next;
    int i = atomic_fetch_add(&next, 1) % 50;
    r->asked[i] = WEFT_US(100) * (i % 10 + 1);
    int64_t start = weft_now();
    CHECK(weft_sleep(r->asked[i]) == 0);
    r->slept[i] = weft_now() - start;
    weft_wg_done(&r->wg);
}

static _Atomic int forever_started;

static void sleep_forever(void *arg)
{
    (void)arg;
    atomic_store(&forever_started, 1);
    weft_sleep(INT64_MAX);
    atomic_store(&forever_started, 2); /* must not be reached */
}

/* A duration too long to add to the clock must not wrap around into a
 * deadline in the past. */
static void test_sleep_longest_duration(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    atomic_store(&forever_started, 0);
    assert_int_equal(weft_go(sleep_forever, NULL), 0);
    int64_t limit = weft_now() + WEFT_SEC(10);
    while (atomic_load(&forever_started) == 0 && weft_now() < limit)
        sched_yield();
    assert_int_equal(atomic_load(&forever_started), 1);
    /* A short sleep of this thread lets a wrapped deadline fire. */
    assert_int_equal(weft_sleep(WEFT_MS(50)), 0);
    assert_int_equal(atomic_load(&forever_started), 1);
    assert_int_equal(weft_shutdown(), 0);
}

static void test_sleep_never_early(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    sleep_result r = {0};
    weft_wg_add(&r.wg, 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(weft_go(sleeper, &r), 0);
    weft_wg_wait(&r.wg);
    for (int i = 0; i < 50; i++) {
        assert_true(r.slept[i] >= r.asked[i]);
        /* Generous: the machine is shared, but a sleep must end. */
        assert_true(r.slept[i] < r.asked[i] + WEFT_SEC(2));
    }
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

static int64_t process_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void test_idle_runtime_uses_no_cpu(void **state)
{
    (void)state;
    weft_config cfg = { .maxprocs = 2 };
    assert_int_equal(weft_init(&cfg), 0);
    /* Some work first, so every thread has run and gone idle. */
    spawn_from_thread s = {0};
    weft_wg_add(&s.wg, 100);
    for (int i = 0; i < 100; i++)
        assert_int_equal(weft_go(count_run, &s), 0);
    weft_wg_wait(&s.wg);

    /* This sleep is the measured interval, not a synchronisation. */
    int64_t cpu = process_cpu_ns();
    struct timespec half = { .tv_sec = 0, .tv_nsec = 500000000 };
    nanosleep(&half, NULL);
    cpu = process_cpu_ns() - cpu;
    print_message("CPU used by an idle runtime in 500 ms: %.3f ms\n", cpu / 1e6);
    assert_true(cpu < WEFT_MS(25));
    assert_int_equal(weft_shutdown(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calls_before_init),
        cmocka_unit_test(test_init_twice_and_restart),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_config_maxprocs),
        cmocka_unit_test(test_bad_env_values),
        cmocka_unit_test(test_spawn_from_plain_threads),
        cmocka_unit_test(test_main_returns_result),
        cmocka_unit_test(test_shutdown_abandons_coroutines),
        cmocka_unit_test(test_spawn_racing_shutdown),
        cmocka_unit_test(test_wg_after_shutdown),
        cmocka_unit_test(test_error_names),
        cmocka_unit_test(test_duration_macros),
        cmocka_unit_test(test_sleep_never_early),
        cmocka_unit_test(test_sleep_longest_duration),
        cmocka_unit_test(test_idle_runtime_uses_no_cpu),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
