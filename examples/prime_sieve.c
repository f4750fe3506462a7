/*
 * prime_sieve: primes from a chain of filter coroutines.
 *
 * A generator sends 2, 3, 4... down a channel. The first number to come
 * out of a chain of filters is prime: main takes it, then appends a filter
 * coroutine that drops the multiples of that prime. Each filter owns the
 * channel it reads and the channel it writes, so after k primes there are
 * k filters in a row and every number passes them in order.
 *
 * The chain would otherwise run forever, so every send also waits on a
 * done channel. Once main has its N primes it closes done: the stage
 * sending at that moment returns and closes its output, the next stage's
 * receive then returns WEFT_ECLOSED, and so on down the chain. Main waits
 * for every stage on a wait group and checks the primes against trial
 * division.
 *
 * Usage: prime_sieve [N]   (N from 1 to 2000, default 20)
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct sieve {
    weft_chan *done; /* carries no values, closed by main to stop the chain */
    weft_wg stages;  /* the generator and every filter */
} sieve;

/* Arguments of one coroutine of the chain, which frees them when it
 * returns. */
typedef struct stage {
    sieve *sieve;
    weft_chan *in;  /* NULL for the generator */
    weft_chan *out;
    uint64_t prime; /* filters only: the multiples to drop */
} stage;

/* Send *value on out, unless done is closed first. Return true when the
 * value was sent. */
static bool send_unless_done(weft_chan *out, const uint64_t *value, weft_chan *done)
{
    weft_case cases[] = {
        WEFT_SEND_CASE(out, value),
        WEFT_RECV_CASE(done, NULL),
    };
    int chosen = weft_select(cases, 2);
    if (chosen == 0 && cases[0].ok)
        return true;
    if (chosen != 1)
        fprintf(stderr, "prime_sieve: sending %" PRIu64 " failed: %s\n", *value,
                chosen < 0 ? weft_strerror(chosen) : "channel closed");
    return false;
}

/* Close the stage's output so the next stage stops too, drop its
 * references and report it finished. */
static void finish_stage(stage *s)
{
    int err = weft_chan_close(s->out);
    if (err != 0)
        fprintf(stderr, "prime_sieve: closing a stage's output failed: %s\n", weft_strerror(err));
    weft_chan_release(s->out);
    if (s->in != NULL)
        weft_chan_release(s->in);
    weft_wg *stages = &s->sieve->stages;
    free(s);
    weft_wg_done(stages);
}

static void generate(void *arg)
{
    stage *g = arg;
    for (uint64_t n = 2;; n++) {
        if (!send_unless_done(g->out, &n, g->sieve->done))
            break;
    }
    finish_stage(g);
}

static void filter(void *arg)
{
    stage *f = arg;
    uint64_t n;
    /* WEFT_ECLOSED means the previous stage has stopped. */
    while (weft_chan_recv(f->in, &n) == 0) {
        if (n % f->prime == 0)
            continue;
        if (!send_unless_done(f->out, &n, f->sieve->done))
            break;
    }
    finish_stage(f);
}

/* Start fn on a new stage that reads in (NULL for the generator) and
 * writes out. The stage takes references of its own to both. */
static int start_stage(sieve *sv, weft_fn fn, weft_chan *in, weft_chan *out, uint64_t prime)
{
    stage *s = malloc(sizeof *s);
    if (s == NULL) {
        fprintf(stderr, "prime_sieve: out of memory\n");
        return WEFT_ENOMEM;
    }
    *s = (stage){ .sieve = sv, .in = in != NULL ? weft_chan_retain(in) : NULL,
                  .out = weft_chan_retain(out), .prime = prime };
    weft_wg_add(&sv->stages, 1);
    int err = weft_go(fn, s);
    if (err != 0) {
        fprintf(stderr, "prime_sieve: weft_go failed: %s\n", weft_strerror(err));
        if (s->in != NULL)
            weft_chan_release(s->in);
        weft_chan_release(s->out);
        free(s);
        weft_wg_done(&sv->stages);
    }
    return err;
}

static bool is_prime(uint64_t n)
{
    if (n < 2)
        return false;
    for (uint64_t d = 2; d * d <= n; d++) {
        if (n % d == 0)
            return false;
    }
    return true;
}

static int app_main(void *arg)
{
    uint64_t count = *(const uint64_t *)arg;
    uint64_t *primes = calloc(count, sizeof *primes);
    sieve sv = { .done = weft_chan_make(0, 0) };
    weft_chan *ch = weft_chan_make(sizeof(uint64_t), 0);
    if (primes == NULL || sv.done == NULL || ch == NULL) {
        fprintf(stderr, "prime_sieve: out of memory\n");
        return 1;
    }
    if (start_stage(&sv, generate, NULL, ch, 0) != 0)
        return 1;

    for (uint64_t i = 0; i < count; i++) {
        int err = weft_chan_recv(ch, &primes[i]);
        if (err != 0) {
            fprintf(stderr, "prime_sieve: receiving prime %" PRIu64 " failed: %s\n",
                    i + 1, weft_strerror(err));
            return 1;
        }
        if (i + 1 == count)
            break; /* no filter needed after the last prime */

        weft_chan *next = weft_chan_make(sizeof(uint64_t), 0);
        if (next == NULL) {
            fprintf(stderr, "prime_sieve: out of memory\n");
            return 1;
        }
        if (start_stage(&sv, filter, ch, next, primes[i]) != 0)
            return 1;
        /* The new filter reads ch from now on, and main reads its output. */
        weft_chan_release(ch);
        ch = next;
    }

    int err = weft_chan_close(sv.done);
    if (err != 0) {
        fprintf(stderr, "prime_sieve: closing done failed: %s\n", weft_strerror(err));
        return 1;
    }
    weft_wg_wait(&sv.stages);
    weft_chan_release(ch);
    weft_chan_release(sv.done);

    printf("first %" PRIu64 " primes:", count);
    for (uint64_t i = 0; i < count; i++)
        printf(" %" PRIu64, primes[i]);
    printf("\n");

    /* Trial division: each value is prime and no prime was skipped. */
    int failed = 0;
    uint64_t expected = 1;
    for (uint64_t i = 0; i < count; i++) {
        do
            expected++;
        while (!is_prime(expected));
        if (primes[i] != expected) {
            fprintf(stderr, "prime_sieve: prime %" PRIu64 " is %" PRIu64 ", expected %" PRIu64 "\n",
                    i + 1, primes[i], expected);
            failed = 1;
        }
    }
    free(primes);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    uint64_t count = 20;
    if (argc > 1)
        count = strtoull(argv[1], NULL, 10);
    /* Every prime passes through all earlier filters, so the work grows
     * with the square of N: 2000 primes take about two million sends. */
    if (count == 0 || count > 2000) {
        fprintf(stderr, "usage: prime_sieve [N from 1 to 2000]\n");
        return 2;
    }
    int rc = weft_main(app_main, &count);
    if (rc < 0) {
        fprintf(stderr, "prime_sieve: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
