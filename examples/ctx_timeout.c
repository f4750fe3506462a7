/*
 * ctx_timeout: a context with a timeout passed down a chain of calls.
 *
 * handle() gives each request a context that ends 200 ms after the request
 * starts and carries the request's id as a value. It passes that context
 * to service(), which runs two steps through slow_step(). slow_step()
 * waits with weft_sleep_ctx, so it returns early with the context's error
 * when the context ends. Only handle() sets the timeout. The functions
 * below it take the context as their first parameter and return its
 * error.
 *
 * - Request 1 has two steps of 10 ms and finishes in time.
 * - Request 2 has two steps of 2 s. Its first step returns ETIMEDOUT
 *   when the 200 ms are up, and the second step never starts.
 * - Request 3 has the same slow steps and runs under a context of its
 *   caller, which another coroutine cancels after 20 ms. The request's
 *   context is a child of that one, so it ends too and reports ECANCELED,
 *   its parent's error.
 *
 * Usage: ctx_timeout   (no arguments; takes about 250 ms)
 */
#include <inttypes.h>
#include <stdio.h>
#include <weft.h>

#define TIMEOUT WEFT_MS(200)

/* Keys compare by address, so this byte is a key no other code can use. */
static const char request_id_key;

static int request_id(weft_ctx *ctx)
{
    const int *id = weft_ctx_value(ctx, &request_id_key);
    return id != NULL ? *id : -1;
}

/* Simulate a step of work that takes duration ns, or less when ctx ends. */
static int slow_step(weft_ctx *ctx, int step, int64_t duration)
{
    int err = weft_sleep_ctx(ctx, duration);
    if (err != 0)
        printf("request %d: step %d stopped early: %s\n", request_id(ctx), step,
               weft_err_name(err));
    return err;
}

static int service(weft_ctx *ctx, int64_t step_duration)
{
    for (int step = 1; step <= 2; step++) {
        int err = slow_step(ctx, step, step_duration);
        if (err != 0)
            return err;
    }
    return 0;
}

/* Run one request under parent with a TIMEOUT deadline. Returns 0 or the
 * context's error, and stores the time the request took in *elapsed. */
static int handle(weft_ctx *parent, int id, int64_t step_duration, int64_t *elapsed)
{
    int64_t start = weft_now();
    weft_ctx *timed = weft_ctx_with_timeout(parent, TIMEOUT);
    if (timed == NULL)
        return WEFT_ENOMEM;
    weft_ctx *ctx = weft_ctx_with_value(timed, &request_id_key, &id);
    if (ctx == NULL) {
        weft_ctx_release(timed);
        return WEFT_ENOMEM;
    }

    int err = service(ctx, step_duration);
    *elapsed = weft_now() - start;

    /* Releasing is Go's `defer cancel()`: it ends the timer early when the
     * request finished in time. The child holds a reference to its parent,
     * so the order of these two calls does not matter. */
    weft_ctx_release(ctx);
    weft_ctx_release(timed);
    return err;
}

typedef struct canceller {
    weft_ctx *ctx;
    weft_wg wg;
    int err;
} canceller;

static void cancel_later(void *arg)
{
    canceller *c = arg;
    c->err = weft_sleep(WEFT_MS(20));
    weft_ctx_cancel(c->ctx);
    weft_wg_done(&c->wg);
}

/* Check one request's result and time, and print its line. */
static int report(int id, const char *what, int err, int expected, int64_t elapsed,
                  int64_t min, int64_t max)
{
    if (err != expected) {
        fprintf(stderr, "ctx_timeout: request %d returned %s, expected %s\n", id,
                weft_err_name(err), weft_err_name(expected));
        return 1;
    }
    if (elapsed < min || elapsed > max) {
        fprintf(stderr, "ctx_timeout: request %d took %.1f ms, expected %.1f to %.1f ms\n", id,
                (double)elapsed / 1e6, (double)min / 1e6, (double)max / 1e6);
        return 1;
    }
    printf("request %d (%s): %s (%s)\n", id, what, weft_err_name(err), weft_strerror(err));
    return 0;
}

static int app_main(void *arg)
{
    (void)arg;
    int failed = 0;
    int64_t elapsed = 0;

    /* NULL is the background context, which never ends. */
    int err = handle(NULL, 1, WEFT_MS(10), &elapsed);
    failed |= report(1, "2 steps of 10 ms", err, 0, elapsed, WEFT_MS(20), TIMEOUT);

    err = handle(NULL, 2, WEFT_SEC(2), &elapsed);
    failed |= report(2, "2 steps of 2 s", err, WEFT_ETIMEDOUT, elapsed, TIMEOUT, WEFT_SEC(1));

    /* The caller's own context, canceled by another coroutine after 20 ms,
     * as when the client of a request goes away. */
    canceller c = { .ctx = weft_ctx_with_cancel(NULL) };
    if (c.ctx == NULL) {
        fprintf(stderr, "ctx_timeout: weft_ctx_with_cancel: out of memory\n");
        return 1;
    }
    weft_wg_add(&c.wg, 1);
    err = weft_go(cancel_later, &c);
    if (err != 0) {
        fprintf(stderr, "ctx_timeout: weft_go failed: %s\n", weft_strerror(err));
        weft_ctx_release(c.ctx);
        return 1;
    }
    err = handle(c.ctx, 3, WEFT_SEC(2), &elapsed);
    weft_wg_wait(&c.wg);
    weft_ctx_release(c.ctx);
    if (c.err != 0) {
        fprintf(stderr, "ctx_timeout: weft_sleep failed: %s\n", weft_strerror(c.err));
        return 1;
    }
    failed |= report(3, "2 steps of 2 s, canceled after 20 ms", err, WEFT_ECANCELED, elapsed, WEFT_MS(20), TIMEOUT);

    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "ctx_timeout: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
