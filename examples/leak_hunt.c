/*
 * leak_hunt: a leaked coroutine found by weft_leakcheck, and its fix.
 *
 * fetch() starts a worker coroutine that computes a result (a 200 ms
 * sleep simulates a slow call) and sends it on a channel, and gives up
 * when no result has come within 10 ms.
 *
 * - Leaky version: the channel is unbuffered, so a send completes only
 *   when someone receives. After the timeout no one does, and the worker
 *   waits in its send forever. weft_leakcheck runs next, as a test runs
 *   it after the code under test. It waits up to 1 s for the worker to
 *   finish, then returns 1 and prints the worker's dump block to stderr:
 *   its name, the wait reason "chan send" and the line that spawned it.
 * - Fixed version: the channel has room for one value, so the worker's
 *   send completes whether or not anyone receives, and the worker
 *   returns. weft_leakcheck returns 0 as soon as it has, long before its
 *   timeout. (A select on the send and on a done channel that the caller
 *   closes works too; examples/goroutine_leak.c shows that fix.)
 *
 * The program checks both results and prints "ok" at the end.
 */
#include <stdio.h>
#include <weft.h>

/* Far apart, so the timeout wins even on a loaded machine: a select with
 * both cases ready would pick one at random. */
#define WORK_TIME WEFT_MS(200)
#define FETCH_TIMEOUT WEFT_MS(10)

/* Send 42 on the channel after WORK_TIME, then drop the reference. */
static void worker(void *arg)
{
    weft_chan *result = arg;
    weft_sleep(WORK_TIME);
    int value = 42;
    int err = weft_chan_send(result, &value);
    if (err != 0)
        fprintf(stderr, "leak_hunt: worker: send failed: %s\n", weft_strerror(err));
    weft_chan_release(result);
}

/*
 * Start a worker that sends its result on a new channel of capacity cap,
 * and wait up to FETCH_TIMEOUT for the result. Returns 0 with *value set,
 * WEFT_ETIMEDOUT when the worker is too slow, or another error. Only so
 * that the demonstration can free a leaked worker at the end, the channel
 * goes to *result_channel with a reference of its own. A real leak leaves
 * no reference anywhere.
 */
static int fetch(size_t cap, int *value, weft_chan **result_channel)
{
    weft_chan *result = weft_chan_make(sizeof(int), cap);
    weft_chan *timeout = weft_after(FETCH_TIMEOUT);
    if (result == NULL || timeout == NULL) {
        if (result != NULL)
            weft_chan_release(result);
        if (timeout != NULL)
            weft_chan_release(timeout);
        return WEFT_ENOMEM;
    }
    weft_go_opts opts = { .name = "fetch worker" };
    int err = weft_go_with(worker, weft_chan_retain(result), &opts);
    if (err != 0) {
        weft_chan_release(result); /* the worker's reference */
    } else {
        weft_case cases[] = {
            WEFT_RECV_CASE(result, value),
            WEFT_RECV_CASE(timeout, NULL),
        };
        int chosen = weft_select(cases, 2);
        if (chosen == 0)
            err = 0;
        else if (chosen == 1)
            err = WEFT_ETIMEDOUT;
        else
            err = chosen;
    }
    *result_channel = weft_chan_retain(result);
    weft_chan_release(timeout);
    weft_chan_release(result);
    return err;
}

static int app_main(void *arg)
{
    (void)arg;
    int value = 0;
    weft_chan *result_channel = NULL;

    /* The leak. */
    int err = fetch(0, &value, &result_channel);
    if (err != WEFT_ETIMEDOUT) {
        fprintf(stderr, "leak_hunt: leaky fetch returned %s, expected ETIMEDOUT\n",
                weft_err_name(err));
        return 1;
    }
    printf("leaky fetch: no result within 10 ms, gave up\n");
    /* The leak report goes to stderr; print what came before it first. */
    fflush(stdout);
    int64_t leaked = weft_leakcheck(WEFT_SEC(1));
    printf("leaky fetch: weft_leakcheck found %lld leaked coroutine\n", (long long)leaked);
    if (leaked != 1)
        return 1;

    /* Receiving the value that the worker is stuck on lets it return. */
    err = weft_chan_recv(result_channel, &value);
    weft_chan_release(result_channel);
    if (err != 0 || value != 42 || weft_leakcheck(WEFT_SEC(1)) != 0) {
        fprintf(stderr, "leak_hunt: freeing the leaked worker failed: %s, value %d\n",
                weft_strerror(err), value);
        return 1;
    }
    printf("leaky fetch: receiving its value let the worker return\n");

    /* The fix. */
    err = fetch(1, &value, &result_channel);
    if (err != WEFT_ETIMEDOUT) {
        fprintf(stderr, "leak_hunt: fixed fetch returned %s, expected ETIMEDOUT\n",
                weft_err_name(err));
        return 1;
    }
    printf("fixed fetch: no result within 10 ms, gave up\n");
    fflush(stdout);
    int64_t start = weft_now();
    leaked = weft_leakcheck(WEFT_SEC(5));
    int64_t waited = weft_now() - start;
    if (leaked != 0 || waited >= WEFT_SEC(5)) {
        fprintf(stderr, "leak_hunt: fixed fetch: weft_leakcheck found %lld after %lld ms\n",
                (long long)leaked, (long long)(waited / 1000000));
        return 1;
    }
    printf("fixed fetch: weft_leakcheck found 0 leaked coroutines, without waiting for its 5 s timeout\n");

    /* The worker's value is still in the buffer: it did its work. */
    err = weft_chan_try_recv(result_channel, &value);
    weft_chan_release(result_channel);
    if (err != 0 || value != 42) {
        fprintf(stderr, "leak_hunt: fixed fetch: no value in the buffer: %s\n",
                weft_strerror(err));
        return 1;
    }
    printf("fixed fetch: the late result %d was left in the channel's buffer\n", value);
    printf("ok\n");
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "leak_hunt: the runtime did not start: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
