/*
 * Running out: when the kernel refuses memory or mappings, weft_go returns
 * WEFT_ENOMEM and the program goes on. Each case runs in a child process
 * whose limits it may lower without touching the rest of the suite.
 *
 *  - address space: RLIMIT_AS caps the process, so a new stack slab cannot
 *    be mapped;
 *  - mappings: with mprotect guards (WEFT_DEBUG=guard=mprotect) every
 *    stack splits its slab's mapping in two, so vm.max_map_count (65,530
 *    by default) runs out near 32,000 live coroutines.
 */
#define _GNU_SOURCE
#include <sched.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "arch/stack.h"
#include "check.h"
#include "weft.h"

typedef struct crowd {
    weft_wg gate;
    weft_wg done;
} crowd;

static void wait_at_gate(void *arg)
{
    crowd *c = arg;
    weft_wg_wait(&c->gate);
    weft_wg_done(&c->done);
}

/* Spawn parked coroutines until weft_go fails or limit is reached, then
 * release them all and check that each finishes. Returns the exit code for
 * the child: 0 when weft_go failed with WEFT_ENOMEM and everything spawned
 * before still ran. */
static int spawn_until_enomem(long limit)
{
    crowd c = {0};
    weft_wg_add(&c.gate, 1);
    long spawned = 0;
    int err = 0;
    while (spawned < limit) {
        weft_wg_add(&c.done, 1);
        err = weft_go(wait_at_gate, &c);
        if (err) {
            weft_wg_done(&c.done);
            break;
        }
        spawned++;
    }
    fprintf(stderr, "weft_go returned %s after %ld coroutines\n",
            weft_err_name(err), spawned);
    if (err != WEFT_ENOMEM)
        return 10;
    if (spawned == 0)
        return 11;
    /* The program goes on: release everyone and see them finish. */
    weft_wg_done(&c.gate);
    weft_wg_wait(&c.done);
    /* A coroutine that called done may not have returned yet: wait, with
     * a bound, for every one to exit. */
    int64_t deadline = weft_now() + WEFT_SEC(30);
    while (weft_num_coroutines() > 0 && weft_now() < deadline)
        sched_yield();
    if (weft_num_coroutines() > 0)
        return 12;
    /* Memory came back to the caches: spawning works again. */
    weft_wg_add(&c.done, 1);
    if (weft_go(wait_at_gate, &c) != 0)
        return 13;
    weft_wg_wait(&c.done);
    return 0;
}

static int run_child(int (*body)(void))
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(body());
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    if (!WIFEXITED(status))
        fail_msg("child died with signal %d", WTERMSIG(status));
    return WEXITSTATUS(status);
}

static int address_space_child(void)
{
    if (weft_init(NULL) != 0)
        return 20;
    /* The runtime is up; now cap the address space near what it uses. */
    struct rlimit rl = { .rlim_cur = (rlim_t)3 << 30, .rlim_max = (rlim_t)3 << 30 };
    if (setrlimit(RLIMIT_AS, &rl) != 0)
        return 21;
    int rc = spawn_until_enomem(10000000);
    weft_shutdown();
    return rc;
}

static void test_enomem_when_address_space_runs_out(void **state)
{
    (void)state;
#if TEST_SANITIZED
    skip(); /* sanitizers reserve terabytes of shadow address space */
#endif
    assert_int_equal(run_child(address_space_child), 0);
}

static int map_count_child(void)
{
    setenv("WEFT_DEBUG", "guard=mprotect", 1);
    if (weft_init(NULL) != 0)
        return 20;
    if (weft__stack_guard_is_madvise())
        return 22;
    int rc = spawn_until_enomem(200000);
    weft_shutdown();
    return rc;
}

static void test_enomem_when_mappings_run_out(void **state)
{
    (void)state;
#if TEST_SANITIZED
    skip(); /* ThreadSanitizer adds mappings per fiber of its own */
#endif
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    long max_maps = 0;
    if (f) {
        if (fscanf(f, "%ld", &max_maps) != 1)
            max_maps = 0;
        fclose(f);
    }
    if (max_maps <= 0 || max_maps > 200000)
        skip(); /* the limit is too high to reach in a test */
    assert_int_equal(run_child(map_count_child), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_enomem_when_address_space_runs_out),
        cmocka_unit_test(test_enomem_when_mappings_run_out),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
