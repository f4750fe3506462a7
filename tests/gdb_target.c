/*
 * Program for the gdb helper test (gdb_helper_check.cmake): it parks two
 * named coroutines, one in a channel receive and one in a sleep, and then
 * calls gdb_target_stop, where the test's breakpoint stops it. gdb then
 * runs `weft coroutines` and `weft bt` on the parked coroutines.
 *
 * One P makes the order fixed: a spawned coroutine runs when the main
 * coroutine waits, and runs without interruption until it parks. So when
 * the wait group lets main go on, both coroutines are parked. Their ids
 * are in receiver_id and sleeper_id, for `weft bt receiver_id`.
 *
 * Run alone, it prints the two ids and exits with status 0; the parked
 * coroutines are abandoned when main returns.
 */
#include <inttypes.h>
#include <stdio.h>

#include "weft.h"

volatile uint64_t receiver_id;
volatile uint64_t sleeper_id;

typedef struct parked {
    weft_chan *never_sent;  /* no coroutine sends on it */
    weft_wg started;        /* done by each coroutine just before it parks */
} parked;

__attribute__((noinline)) static void receive_forever(void *arg)
{
    parked *p = arg;
    receiver_id = weft_id();
    weft_wg_done(&p->started);
    int value = 0;
    weft_chan_recv(p->never_sent, &value);
    printf("not reached: received %d\n", value);
}

__attribute__((noinline)) static void sleep_long(void *arg)
{
    parked *p = arg;
    sleeper_id = weft_id();
    weft_wg_done(&p->started);
    weft_sleep(WEFT_SEC(600));
    printf("not reached: the sleep ended\n");
}

/* The test's breakpoint. Not inlined, and the asm keeps the call. */
__attribute__((noinline)) void gdb_target_stop(void)
{
    __asm__ volatile("" ::: "memory");
}

static int app_main(void *arg)
{
    (void)arg;
    parked p = { .never_sent = weft_chan_make(sizeof(int), 0) };
    if (!p.never_sent)
        return 1;
    weft_wg_add(&p.started, 2);
    weft_go_opts receiver = { .name = "receiver" };
    weft_go_opts sleeper = { .name = "sleeper" };
    if (weft_go_with(receive_forever, &p, &receiver) != 0 ||
        weft_go_with(sleep_long, &p, &sleeper) != 0)
        return 2;
    weft_wg_wait(&p.started);
    printf("receiver %" PRIu64 ", sleeper %" PRIu64 "\n", receiver_id, sleeper_id);
    fflush(stdout);
    gdb_target_stop();
    return 0;
}

int main(void)
{
    weft_config cfg = { .maxprocs = 1 };
    return weft_main_config(&cfg, app_main, NULL);
}
