/*
 * parallel_sum: fan work out across every processor slot and join it with
 * a wait group.
 *
 * The program sums the integers 1..N by splitting the range into chunks,
 * one coroutine per chunk. Each coroutine writes its partial sum into its
 * own slot, so no locking is needed. Waiting on the wait group returns once
 * every slot is filled. The result is checked against N(N+1)/2.
 *
 * Usage: parallel_sum [N] [chunks]   (defaults: 100000000 and 64)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct chunk {
    uint64_t first;    /* first integer of the range */
    uint64_t last;     /* last integer, inclusive */
    uint64_t sum;      /* written by the chunk's coroutine */
    weft_wg *wg;
} chunk;

static void sum_chunk(void *arg)
{
    chunk *c = arg;
    uint64_t sum = 0;
    for (uint64_t i = c->first; i <= c->last; i++) {
        sum += i;
        /* No preemption in weft: a long computation lets others run now
         * and then. */
        if ((i & 0xfffff) == 0)
            weft_yield();
    }
    c->sum = sum;
    weft_wg_done(c->wg);
}

typedef struct job {
    uint64_t n;
    uint64_t chunks;
} job;

static int app_main(void *arg)
{
    job *j = arg;
    chunk *parts = calloc(j->chunks, sizeof *parts);
    if (!parts) {
        fprintf(stderr, "parallel_sum: out of memory\n");
        return 1;
    }
    weft_wg wg = {0};
    uint64_t per = j->n / j->chunks;
    int64_t start = weft_now();
    for (uint64_t k = 0; k < j->chunks; k++) {
        parts[k].first = k * per + 1;
        parts[k].last = k + 1 == j->chunks ? j->n : (k + 1) * per;
        parts[k].wg = &wg;
        weft_wg_add(&wg, 1);
        int err = weft_go(sum_chunk, &parts[k]);
        if (err) {
            fprintf(stderr, "parallel_sum: weft_go: %s\n", weft_strerror(err));
            weft_wg_done(&wg);
            parts[k].sum = 0;
        }
    }
    weft_wg_wait(&wg);
    uint64_t total = 0;
    for (uint64_t k = 0; k < j->chunks; k++)
        total += parts[k].sum;
    int64_t elapsed = weft_now() - start;
    free(parts);

    uint64_t expect = j->n * (j->n + 1) / 2;
    printf("sum of 1..%" PRIu64 " = %" PRIu64 " (%" PRIu64 " chunks, %d processor slots, %.1f ms)\n",
           j->n, total, j->chunks, weft_maxprocs(), (double)elapsed / 1e6);
    if (total != expect) {
        fprintf(stderr, "parallel_sum: wrong sum, expected %" PRIu64 "\n", expect);
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    job j = { .n = 100000000, .chunks = 64 };
    if (argc > 1)
        j.n = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        j.chunks = strtoull(argv[2], NULL, 10);
    /* The sum must fit in 64 bits: n(n+1)/2 < 2^64 needs n < 6e9. */
    if (j.n == 0 || j.n > 6000000000ULL || j.chunks == 0 || j.chunks > j.n) {
        fprintf(stderr, "usage: parallel_sum [N from 1 to 6000000000] [chunks from 1 to N]\n");
        return 2;
    }
    int rc = weft_main(app_main, &j);
    if (rc < 0) {
        fprintf(stderr, "parallel_sum: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
