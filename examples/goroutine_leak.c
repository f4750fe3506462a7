/*
 * goroutine_leak: a coroutine leak next to its fix.
 *
 * Both lookup functions start a sender coroutine that computes a value
 * and sends it on an unbuffered channel, and both return early, without
 * receiving, when the key is invalid.
 *
 * - lookup_leaky: an unbuffered send completes only when someone
 *   receives, so after the early return the sender waits forever. Nothing
 *   reports this. The coroutine and its stack just stay, which
 *   weft_num_coroutines() shows.
 * - lookup_fixed: the sender waits in weft_select on its send and on a
 *   done channel, and the function closes done on every return path, as
 *   Go code does with `defer close(done)`. The sender then returns, and
 *   the count falls back to the baseline.
 *
 * The program prints the live count after each early return and checks
 * it. Counts are polled for up to 1 s, because a coroutine that has been
 * released still needs to be scheduled before it exits.
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

/* Arguments of one sender coroutine, which frees them when it returns. */
typedef struct sender {
    weft_chan *result; /* int, unbuffered */
    weft_chan *done;   /* lookup_fixed only: closed when the caller returns */
    int key;
} sender;

/* Send key * key on result, waiting forever for a receiver. */
static void send_blocking(void *arg)
{
    sender *s = arg;
    int value = s->key * s->key;
    int err = weft_chan_send(s->result, &value);
    if (err != 0)
        fprintf(stderr, "goroutine_leak: leaky sender: send failed: %s\n", weft_strerror(err));
    weft_chan_release(s->result);
    free(s);
}

/* Send key * key on result, or give up as soon as done is closed. */
static void send_unless_done(void *arg)
{
    sender *s = arg;
    int value = s->key * s->key;
    weft_case cases[] = {
        WEFT_SEND_CASE(s->result, &value),
        WEFT_RECV_CASE(s->done, NULL),
    };
    int chosen = weft_select(cases, 2);
    if (chosen < 0 || (chosen == 0 && !cases[0].ok))
        fprintf(stderr, "goroutine_leak: fixed sender: select failed: %s\n",
                chosen < 0 ? weft_strerror(chosen) : "result channel closed");
    weft_chan_release(s->result);
    weft_chan_release(s->done);
    free(s);
}

/* Start fn as a sender of key * key on result. The sender takes
 * references of its own to result and to done (which may be NULL). */
static int start_sender(weft_fn fn, weft_chan *result, weft_chan *done, int key)
{
    sender *s = malloc(sizeof *s);
    if (s == NULL)
        return WEFT_ENOMEM;
    *s = (sender){ .result = weft_chan_retain(result),
                   .done = done != NULL ? weft_chan_retain(done) : NULL,
                   .key = key };
    int err = weft_go(fn, s);
    if (err != 0) {
        fprintf(stderr, "goroutine_leak: weft_go failed: %s\n", weft_strerror(err));
        weft_chan_release(s->result);
        if (s->done != NULL)
            weft_chan_release(s->done);
        free(s);
    }
    return err;
}

/*
 * Store key * key in *value, or return WEFT_EINVAL for a negative key.
 * BUG (on purpose): the early return leaves the sender blocked forever.
 * Only so that the demonstration can free the sender at the end, the
 * channel of a leaked sender goes to *leaked. A real leak leaves no
 * reference to it anywhere.
 */
static int lookup_leaky(int key, int *value, weft_chan **leaked)
{
    weft_chan *result = weft_chan_make(sizeof(int), 0);
    if (result == NULL)
        return WEFT_ENOMEM;
    int err = start_sender(send_blocking, result, NULL, key);
    if (err == 0 && key < 0) {
        *leaked = result;
        return WEFT_EINVAL;
    }
    if (err == 0)
        err = weft_chan_recv(result, value);
    weft_chan_release(result);
    return err;
}

/* Store key * key in *value, or return WEFT_EINVAL for a negative key.
 * The sender always returns, because done is closed on every path. */
static int lookup_fixed(int key, int *value)
{
    weft_chan *result = weft_chan_make(sizeof(int), 0);
    weft_chan *done = weft_chan_make(0, 0);
    if (result == NULL || done == NULL) {
        if (result != NULL)
            weft_chan_release(result);
        if (done != NULL)
            weft_chan_release(done);
        return WEFT_ENOMEM;
    }
    int err = start_sender(send_unless_done, result, done, key);
    if (err == 0 && key < 0)
        err = WEFT_EINVAL;
    else if (err == 0)
        err = weft_chan_recv(result, value);

    /* Every path above reaches this close, as with Go's `defer close(done)`. */
    int close_err = weft_chan_close(done);
    if (close_err != 0)
        fprintf(stderr, "goroutine_leak: closing done failed: %s\n", weft_strerror(close_err));
    weft_chan_release(done);
    weft_chan_release(result);
    return err;
}

/* Poll until weft_num_coroutines() equals target or timeout_ns has passed,
 * and return the last count. */
static int64_t wait_for_count(int64_t target, int64_t timeout_ns)
{
    int64_t deadline = weft_now() + timeout_ns;
    int64_t count = weft_num_coroutines();
    while (count != target && weft_now() < deadline) {
        if (weft_sleep(WEFT_MS(1)) != 0)
            weft_yield();
        count = weft_num_coroutines();
    }
    return count;
}

static int app_main(void *arg)
{
    (void)arg;
    int64_t baseline = weft_num_coroutines();
    printf("baseline: %" PRId64 " live coroutines\n", baseline);

    /* With a valid key both versions work and leave nothing behind. */
    int leaky_value = 0;
    int fixed_value = 0;
    weft_chan *leaked = NULL;
    int err = lookup_leaky(6, &leaky_value, &leaked);
    if (err == 0)
        err = lookup_fixed(6, &fixed_value);
    if (err != 0 || leaky_value != 36 || fixed_value != 36) {
        fprintf(stderr, "goroutine_leak: lookup of 6 failed: %s, values %d and %d\n",
                weft_strerror(err), leaky_value, fixed_value);
        return 1;
    }
    int64_t live = wait_for_count(baseline, WEFT_SEC(1));
    printf("lookup(6) = %d with both versions, then %" PRId64 " live coroutines\n",
           leaky_value, live);
    if (live != baseline)
        return 1;

    /* The leak: the count stays one above the baseline. Waiting longer
     * would not change it, so 100 ms is enough to make the point. */
    err = lookup_leaky(-1, &leaky_value, &leaked);
    if (err != WEFT_EINVAL || leaked == NULL) {
        fprintf(stderr, "goroutine_leak: lookup_leaky(-1) returned %s, expected EINVAL\n",
                weft_err_name(err));
        return 1;
    }
    live = wait_for_count(baseline, WEFT_MS(100));
    printf("leaky: after the early return, %" PRId64 " live coroutines (%+" PRId64
           ": the sender is blocked forever)\n", live, live - baseline);
    if (live != baseline + 1)
        return 1;

    /* Receiving the value that the leaked sender is stuck on lets it
     * return. A real program has no such handle. */
    int stuck_value = 0;
    err = weft_chan_recv(leaked, &stuck_value);
    weft_chan_release(leaked);
    live = wait_for_count(baseline, WEFT_SEC(1));
    if (err != 0 || stuck_value != 1 || live != baseline) {
        fprintf(stderr, "goroutine_leak: freeing the leaked sender failed: %s, value %d, %" PRId64
                " live coroutines\n", weft_strerror(err), stuck_value, live);
        return 1;
    }

    /* The fix: once done is closed the sender returns by itself. */
    err = lookup_fixed(-1, &fixed_value);
    if (err != WEFT_EINVAL) {
        fprintf(stderr, "goroutine_leak: lookup_fixed(-1) returned %s, expected EINVAL\n",
                weft_err_name(err));
        return 1;
    }
    live = wait_for_count(baseline, WEFT_SEC(1));
    printf("fixed: after the early return, %" PRId64 " live coroutines (%+" PRId64
           ": the sender saw done closed and returned)\n", live, live - baseline);
    if (live != baseline)
        return 1;

    printf("ok\n");
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "goroutine_leak: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
