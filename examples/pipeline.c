/*
 * pipeline: three stages connected by channels, each stage a coroutine.
 *
 *   generate --naturals--> square --squares--> sum (the main coroutine)
 *
 * The generator sends 1..N and closes its channel. The square stage
 * receives until weft_chan_recv returns WEFT_ECLOSED, sends each square on,
 * then closes its own channel. So the end of the input travels down the
 * pipeline, and the last stage stops when its own receive returns
 * WEFT_ECLOSED. As in Go, only the sending side closes a channel. The sum is checked against N(N+1)(2N+1)/6.
 *
 * C has no garbage collector, so each stage holds its own reference to
 * every channel it uses and releases it when it returns.
 *
 * Usage: pipeline [N]   (N from 1 to 1000000, default 1000)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct stage {
    weft_chan *in;  /* NULL for the generator */
    weft_chan *out;
    uint64_t count; /* generator only: send 1..count */
    int err;        /* first failure, read by main after the wait group */
    weft_wg *wg;
} stage;

static void generate(void *arg)
{
    stage *s = arg;
    for (uint64_t i = 1; i <= s->count && s->err == 0; i++)
        s->err = weft_chan_send(s->out, &i);

    /* Closing marks the end of the input for the next stage. */
    int err = weft_chan_close(s->out);
    if (s->err == 0)
        s->err = err;
    weft_chan_release(s->out);
    weft_wg_done(s->wg);
}

static void square(void *arg)
{
    stage *s = arg;
    uint64_t x;
    /* weft_chan_recv returns WEFT_ECLOSED once the generator has closed
     * its channel and every value has been received. */
    while (weft_chan_recv(s->in, &x) == 0) {
        uint64_t squared = x * x;
        s->err = weft_chan_send(s->out, &squared);
        if (s->err != 0)
            break;
    }

    int err = weft_chan_close(s->out);
    if (s->err == 0)
        s->err = err;
    weft_chan_release(s->in);
    weft_chan_release(s->out);
    weft_wg_done(s->wg);
}

static int app_main(void *arg)
{
    uint64_t n = *(const uint64_t *)arg;

    weft_chan *naturals = weft_chan_make(sizeof(uint64_t), 0);
    weft_chan *squares = weft_chan_make(sizeof(uint64_t), 0);
    if (naturals == NULL || squares == NULL) {
        fprintf(stderr, "pipeline: weft_chan_make failed: out of memory\n");
        return 1;
    }

    weft_wg wg = {0};
    stage gen = { .out = weft_chan_retain(naturals), .count = n, .wg = &wg };
    stage sq = { .in = weft_chan_retain(naturals),
                 .out = weft_chan_retain(squares), .wg = &wg };
    /* Main does not use naturals, so it drops its own reference. The two
     * stages keep theirs. */
    weft_chan_release(naturals);

    weft_wg_add(&wg, 2);
    int err = weft_go(generate, &gen);
    if (err == 0)
        err = weft_go(square, &sq);
    if (err != 0) {
        fprintf(stderr, "pipeline: weft_go failed: %s\n", weft_strerror(err));
        return 1;
    }

    uint64_t sum = 0;
    uint64_t received = 0;
    uint64_t value;
    while (weft_chan_recv(squares, &value) == 0) {
        sum += value;
        received++;
    }
    weft_wg_wait(&wg);
    weft_chan_release(squares);

    if (gen.err != 0 || sq.err != 0) {
        fprintf(stderr, "pipeline: a stage failed: generate: %s, square: %s\n",
                weft_strerror(gen.err), weft_strerror(sq.err));
        return 1;
    }
    uint64_t expected = n * (n + 1) * (2 * n + 1) / 6;
    printf("sum of squares of 1..%" PRIu64 " = %" PRIu64 " (%" PRIu64 " values received)\n",
           n, sum, received);
    if (received != n || sum != expected) {
        fprintf(stderr, "pipeline: expected %" PRIu64 " values summing to %" PRIu64 "\n",
                n, expected);
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t n = 1000;
    if (argc > 1)
        n = strtoull(argv[1], NULL, 10);
    /* 1000000 keeps N(N+1)(2N+1) below 2^64. */
    if (n == 0 || n > 1000000) {
        fprintf(stderr, "usage: pipeline [N from 1 to 1000000]\n");
        return 2;
    }
    int rc = weft_main(app_main, &n);
    if (rc < 0) {
        fprintf(stderr, "pipeline: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
