/*
 * errgroup_fetch: fetching several resources in parallel with an error
 * group, where the first failure cancels the others.
 *
 * The "resources" are simulated locally: each fetch is a task that waits
 * for its resource's latency with weft_sleep_ctx and then returns 0 or
 * the error that the resource table in app_main() gives it. All five
 * tasks run in one weft_group, so each receives the group's context:
 *
 * - "config" and "users" finish within 20 ms.
 * - "avatars" fails after 40 ms with ENOENT. The group cancels its
 *   context on this first error.
 * - "orders" and "reports" would take 2 s and 3 s. Their weft_sleep_ctx
 *   returns ECANCELED as soon as the group's context ends, so they stop
 *   early instead of finishing their work.
 *
 * weft_group_wait returns when every task has returned, with the first
 * error. The program prints what each task saw and that error.
 *
 * Usage: errgroup_fetch   (no arguments; takes about 40 ms)
 */
#include <stdio.h>
#include <weft.h>

typedef struct resource {
    const char *name;
    int64_t latency;   /* nanoseconds before the simulated reply */
    int fail_with;     /* 0, or the error the fetch returns */
    int result;        /* what the task returned */
} resource;

static int fetch(weft_ctx *ctx, void *arg)
{
    resource *r = arg;
    int err = weft_sleep_ctx(ctx, r->latency);
    if (err == 0)
        err = r->fail_with;
    r->result = err;
    return err;
}

static int app_main(void *arg)
{
    (void)arg;
    resource resources[] = {
        { .name = "config", .latency = WEFT_MS(5) },
        { .name = "users", .latency = WEFT_MS(20) },
        { .name = "avatars", .latency = WEFT_MS(40), .fail_with = -ENOENT },
        { .name = "orders", .latency = WEFT_SEC(2) },
        { .name = "reports", .latency = WEFT_SEC(3) },
    };
    const int expected[] = { 0, 0, -ENOENT, WEFT_ECANCELED, WEFT_ECANCELED };
    const size_t n = sizeof resources / sizeof resources[0];

    weft_group *g = weft_group_make(NULL);
    if (g == NULL) {
        fprintf(stderr, "errgroup_fetch: weft_group_make: out of memory\n");
        return 1;
    }
    int64_t start = weft_now();
    for (size_t i = 0; i < n; i++) {
        int err = weft_group_go(g, fetch, &resources[i]);
        if (err != 0) {
            fprintf(stderr, "errgroup_fetch: weft_group_go for %s failed: %s\n",
                    resources[i].name, weft_strerror(err));
            /* Stop the tasks already started instead of waiting out their
             * latency, then wait for them and free the group. */
            weft_ctx_cancel(weft_group_ctx(g));
            weft_group_wait(g);
            weft_group_release(g);
            return 1;
        }
    }
    int first_err = weft_group_wait(g);
    int64_t elapsed = weft_now() - start;
    int ctx_err = weft_ctx_err(weft_group_ctx(g));
    weft_group_release(g);

    int failed = 0;
    for (size_t i = 0; i < n; i++) {
        const resource *r = &resources[i];
        if (r->result == 0)
            printf("%-8s fetched after %lld ms\n", r->name, (long long)(r->latency / WEFT_MS(1)));
        else if (r->result == WEFT_ECANCELED)
            printf("%-8s stopped early: %s\n", r->name, weft_err_name(r->result));
        else
            printf("%-8s failed: %s\n", r->name, weft_err_name(r->result));
        if (r->result != expected[i]) {
            fprintf(stderr, "errgroup_fetch: %s returned %s, expected %s\n", r->name,
                    weft_err_name(r->result), weft_err_name(expected[i]));
            failed = 1;
        }
    }
    printf("weft_group_wait returned %s (%s)\n", weft_err_name(first_err),
           weft_strerror(first_err));

    if (first_err != -ENOENT) {
        fprintf(stderr, "errgroup_fetch: expected ENOENT from weft_group_wait\n");
        failed = 1;
    }
    if (ctx_err != WEFT_ECANCELED) {
        fprintf(stderr, "errgroup_fetch: the group's context has error %s, expected ECANCELED\n",
                weft_err_name(ctx_err));
        failed = 1;
    }
    /* The slow fetches would have kept wait busy for 3 s. */
    if (elapsed >= WEFT_SEC(1)) {
        fprintf(stderr, "errgroup_fetch: wait took %.1f ms, so the cancellation came late\n",
                (double)elapsed / 1e6);
        failed = 1;
    }
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "errgroup_fetch: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
