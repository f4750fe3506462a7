/*
 * select_timeout: waiting for a reply with a time limit.
 *
 * Two requests go to a server coroutine that replies after a delay:
 *
 * - The fast request (reply after 10 ms) races the reply against
 *   weft_after(1 s), Go's time.After: a channel that receives once when
 *   the time is up. The reply wins.
 * - The slow request (reply after 300 ms) uses weft_select_until with a
 *   deadline 50 ms ahead, which returns WEFT_ETIMEDOUT when no case is
 *   ready by then. The deadline wins.
 *
 * The reply channel has room for one value, so a server whose caller has
 * given up still completes its send and returns instead of blocking
 * forever. The program shows this by waiting for the slow server and then
 * finding its late reply in the buffer.
 */
#include <inttypes.h>
#include <stdio.h>
#include <weft.h>

typedef struct request {
    weft_chan *reply; /* int, capacity 1 */
    int64_t delay;    /* nanoseconds before the reply */
    int value;        /* what the server replies */
    int err;
    weft_wg *wg;
} request;

static void serve(void *arg)
{
    request *r = arg;
    r->err = weft_sleep(r->delay);
    if (r->err == 0)
        r->err = weft_chan_send(r->reply, &r->value);
    weft_chan_release(r->reply);
    weft_wg_done(r->wg);
}

/* Start serve() on r, which gets its own reference to reply. */
static int start_server(request *r, weft_chan *reply)
{
    r->reply = weft_chan_retain(reply);
    weft_wg_add(r->wg, 1);
    int err = weft_go(serve, r);
    if (err != 0) {
        weft_chan_release(r->reply);
        weft_wg_done(r->wg);
        fprintf(stderr, "select_timeout: weft_go failed: %s\n", weft_strerror(err));
    }
    return err;
}

static int ask_fast(weft_wg *wg)
{
    weft_chan *reply = weft_chan_make(sizeof(int), 1);
    weft_chan *timeout = weft_after(WEFT_SEC(1));
    if (reply == NULL || timeout == NULL) {
        fprintf(stderr, "select_timeout: fast request: out of memory\n");
        if (reply != NULL)
            weft_chan_release(reply);
        if (timeout != NULL)
            weft_chan_release(timeout);
        return 1;
    }
    request r = { .delay = WEFT_MS(10), .value = 42, .wg = wg };
    if (start_server(&r, reply) != 0)
        return 1;

    int value = 0;
    weft_case cases[] = {
        WEFT_RECV_CASE(reply, &value),
        WEFT_RECV_CASE(timeout, NULL),
    };
    int chosen = weft_select(cases, 2);
    weft_wg_wait(wg);
    /* The timer may still be pending, but releasing its channel is all the
     * cleanup that weft_after needs. */
    weft_chan_release(timeout);
    weft_chan_release(reply);

    if (r.err != 0) {
        fprintf(stderr, "select_timeout: fast server failed: %s\n", weft_strerror(r.err));
        return 1;
    }
    if (chosen != 0 || !cases[0].ok) {
        fprintf(stderr, "select_timeout: fast request: expected the reply, select returned %d\n",
                chosen);
        return 1;
    }
    printf("fast request: reply %d arrived before the 1 s timeout\n", value);
    return value == 42 ? 0 : 1;
}

static int ask_slow(weft_wg *wg)
{
    weft_chan *reply = weft_chan_make(sizeof(int), 1);
    if (reply == NULL) {
        fprintf(stderr, "select_timeout: slow request: out of memory\n");
        return 1;
    }
    request r = { .delay = WEFT_MS(300), .value = 7, .wg = wg };
    if (start_server(&r, reply) != 0)
        return 1;

    int value = 0;
    weft_case cases[] = { WEFT_RECV_CASE(reply, &value) };
    int64_t start = weft_now();
    int chosen = weft_select_until(cases, 1, start + WEFT_MS(50));
    int64_t waited = weft_now() - start;
    if (chosen != WEFT_ETIMEDOUT) {
        fprintf(stderr, "select_timeout: slow request: expected WEFT_ETIMEDOUT, got %d (%s)\n",
                chosen, chosen < 0 ? weft_err_name(chosen) : "a case");
        return 1;
    }
    if (waited < WEFT_MS(50)) {
        fprintf(stderr, "select_timeout: slow request: timed out after %.1f ms, before the deadline\n",
                (double)waited / 1e6);
        return 1;
    }
    printf("slow request: timed out after 50 ms without a reply\n");

    /* The caller has given up, but the server can still finish. */
    weft_wg_wait(wg);
    int err = r.err;
    if (err == 0)
        err = weft_chan_try_recv(reply, &value);
    weft_chan_release(reply);
    if (err != 0) {
        fprintf(stderr, "select_timeout: slow request: no late reply in the buffer: %s\n",
                weft_strerror(err));
        return 1;
    }
    printf("slow request: the late reply %d went into the buffer, so the server did not block\n",
           value);
    return value == 7 ? 0 : 1;
}

static int app_main(void *arg)
{
    (void)arg;
    weft_wg wg = {0};
    if (ask_fast(&wg) != 0 || ask_slow(&wg) != 0)
        return 1;
    printf("ok\n");
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "select_timeout: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
