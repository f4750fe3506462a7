/*
 * A million live coroutines with the default settings: default stack size
 * (256 KiB), guard pages on, the kernel's default vm.max_map_count. Each
 * coroutine parks on a wait group; all must fit, and all must then finish.
 * Prints the resident memory per coroutine as information; the benchmark
 * measures it properly.
 */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>

#include "check.h"
#include "weft.h"

typedef struct crowd {
    weft_wg gate;
    weft_wg started;
    weft_wg done;
} crowd;

static void wait_at_gate(void *arg)
{
    crowd *c = arg;
    weft_wg_done(&c->started);
    weft_wg_wait(&c->gate);
    weft_wg_done(&c->done);
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    if (f)
        fclose(f);
    return kib;
}

static void test_million_live_coroutines(void **state)
{
    (void)state;
#if TEST_SANITIZED
    skip(); /* sanitizers track far fewer fibers and multiply memory */
#endif
    const long n = 1000000;
    assert_int_equal(weft_init(NULL), 0);
    crowd c = {0};
    weft_wg_add(&c.gate, 1);
    weft_wg_add(&c.started, n);
    weft_wg_add(&c.done, n);
    long before = rss_kib();
    for (long i = 0; i < n; i++) {
        int err = weft_go(wait_at_gate, &c);
        if (err) {
            fail_msg("weft_go failed at coroutine %ld: %s", i, weft_strerror(err));
        }
    }
    weft_wg_wait(&c.started);
    assert_int_equal(weft_num_coroutines(), n);
    long after = rss_kib();
    print_message("%ld live coroutines, %.2f KiB resident each\n", n,
                  (double)(after - before) / (double)n);
    weft_wg_done(&c.gate);
    weft_wg_wait(&c.done);
    assert_int_equal(weft_shutdown(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_million_live_coroutines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
