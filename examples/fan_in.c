/*
 * fan_in: several producers merged into one channel.
 *
 * Each of P producers sends K numbered values on a channel of its own and
 * closes it. merge() starts one forwarding coroutine per input channel,
 * each copying its input to a single output channel, and a closer
 * coroutine that waits on a wait group until every forwarder has finished
 * and then closes the output. The main coroutine simply receives from the
 * merged channel until it is closed.
 *
 * The values of different producers interleave in any order, but each
 * forwarder keeps the order of its own input. Main checks that it got P*K
 * values and that every producer's sequence numbers arrived in order.
 *
 * Usage: fan_in [producers] [values per producer]   (defaults 4 and 250)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct message {
    uint32_t producer;
    uint32_t seq; /* 0, 1, 2... within one producer */
} message;

typedef struct producer {
    weft_chan *out;
    uint32_t id;
    uint32_t count;
    int err;
    weft_wg *wg;
} producer;

static void produce(void *arg)
{
    producer *p = arg;
    for (uint32_t seq = 0; seq < p->count && p->err == 0; seq++) {
        message m = { .producer = p->id, .seq = seq };
        p->err = weft_chan_send(p->out, &m);
    }
    int err = weft_chan_close(p->out);
    if (p->err == 0)
        p->err = err;
    weft_chan_release(p->out);
    weft_wg_done(p->wg);
}

/* State shared by the forwarders and the closer of one merge(). The closer
 * frees it once every forwarder has called weft_wg_done. */
typedef struct merger {
    weft_chan *out;
    weft_wg forwarders;
    struct forwarder {
        weft_chan *in;
        struct merger *m;
    } inputs[];
} merger;

static void forward(void *arg)
{
    struct forwarder *f = arg;
    message m;
    while (weft_chan_recv(f->in, &m) == 0) {
        int err = weft_chan_send(f->m->out, &m);
        if (err != 0) {
            /* Only the closer closes out, after every forwarder has
             * finished sending, so a failed send is a bug here. Main would
             * also notice the missing values. */
            fprintf(stderr, "fan_in: forwarding failed: %s\n", weft_strerror(err));
            break;
        }
    }
    weft_chan_release(f->in);
    weft_wg_done(&f->m->forwarders);
}

static void close_when_done(void *arg)
{
    merger *m = arg;
    weft_wg_wait(&m->forwarders);
    int err = weft_chan_close(m->out);
    if (err != 0)
        fprintf(stderr, "fan_in: closing the merged channel failed: %s\n", weft_strerror(err));
    weft_chan_release(m->out);
    free(m);
}

/* Return a new channel that receives every value sent on in[0..n-1] and is
 * closed once all of them are closed, or NULL when a coroutine cannot be
 * started or memory is short. The caller owns one reference to the result,
 * and merge() takes references of its own to the inputs. */
static weft_chan *merge(weft_chan **in, size_t n)
{
    merger *m = calloc(1, sizeof *m + n * sizeof m->inputs[0]);
    weft_chan *out = weft_chan_make(sizeof(message), 0);
    if (m == NULL || out == NULL) {
        fprintf(stderr, "fan_in: merge: out of memory\n");
        free(m);
        if (out != NULL)
            weft_chan_release(out);
        return NULL;
    }
    m->out = weft_chan_retain(out);

    for (size_t i = 0; i < n; i++) {
        m->inputs[i].in = weft_chan_retain(in[i]);
        m->inputs[i].m = m;
        weft_wg_add(&m->forwarders, 1);
        int err = weft_go(forward, &m->inputs[i]);
        if (err != 0) {
            /* The forwarders already running use m, so it cannot be freed
             * here. It leaks, but the program is about to exit. */
            fprintf(stderr, "fan_in: merge: weft_go failed: %s\n", weft_strerror(err));
            return NULL;
        }
    }
    int err = weft_go(close_when_done, m);
    if (err != 0) {
        fprintf(stderr, "fan_in: merge: weft_go failed: %s\n", weft_strerror(err));
        return NULL;
    }
    return out;
}

typedef struct options {
    uint32_t producers;
    uint32_t values;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;

    producer *producers = calloc(opt->producers, sizeof *producers);
    weft_chan **outputs = calloc(opt->producers, sizeof *outputs);
    uint32_t *next_seq = calloc(opt->producers, sizeof *next_seq);
    if (producers == NULL || outputs == NULL || next_seq == NULL) {
        fprintf(stderr, "fan_in: out of memory\n");
        return 1;
    }

    weft_wg wg = {0};
    for (uint32_t i = 0; i < opt->producers; i++) {
        outputs[i] = weft_chan_make(sizeof(message), 0);
        if (outputs[i] == NULL) {
            fprintf(stderr, "fan_in: weft_chan_make failed: out of memory\n");
            return 1;
        }
        producers[i] = (producer){ .out = weft_chan_retain(outputs[i]), .id = i,
                                   .count = opt->values, .wg = &wg };
        weft_wg_add(&wg, 1);
        int err = weft_go(produce, &producers[i]);
        if (err != 0) {
            fprintf(stderr, "fan_in: weft_go failed: %s\n", weft_strerror(err));
            return 1;
        }
    }

    weft_chan *merged = merge(outputs, opt->producers);
    if (merged == NULL)
        return 1;
    /* merge() holds its own references to the inputs. */
    for (uint32_t i = 0; i < opt->producers; i++)
        weft_chan_release(outputs[i]);

    uint64_t received = 0;
    uint64_t out_of_order = 0;
    message m;
    while (weft_chan_recv(merged, &m) == 0) {
        received++;
        if (m.producer >= opt->producers || m.seq != next_seq[m.producer]) {
            fprintf(stderr, "fan_in: unexpected value %" PRIu32 " from producer %" PRIu32 "\n",
                    m.seq, m.producer);
            out_of_order++;
            continue;
        }
        next_seq[m.producer]++;
    }
    weft_chan_release(merged);
    weft_wg_wait(&wg);

    int failed = 0;
    for (uint32_t i = 0; i < opt->producers; i++) {
        if (producers[i].err != 0) {
            fprintf(stderr, "fan_in: producer %" PRIu32 " failed: %s\n", i,
                    weft_strerror(producers[i].err));
            failed = 1;
        }
        if (next_seq[i] != opt->values) {
            fprintf(stderr, "fan_in: producer %" PRIu32 ": %" PRIu32 " of %" PRIu32 " values arrived\n",
                    i, next_seq[i], opt->values);
            failed = 1;
        }
    }
    free(producers);
    free(outputs);
    free(next_seq);

    uint64_t expected = (uint64_t)opt->producers * opt->values;
    printf("merged %" PRIu32 " producers x %" PRIu32 " values: received %" PRIu64
           ", %" PRIu64 " out of order\n",
           opt->producers, opt->values, received, out_of_order);
    if (failed || received != expected || out_of_order != 0)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    options opt = { .producers = 4, .values = 250 };
    unsigned long long producers = opt.producers;
    unsigned long long values = opt.values;
    if (argc > 1)
        producers = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        values = strtoull(argv[2], NULL, 10);
    if (producers == 0 || producers > 10000 || values == 0 || values > 100000000) {
        fprintf(stderr, "usage: fan_in [producers from 1 to 10000] [values per producer from 1 to 100000000]\n");
        return 2;
    }
    opt.producers = (uint32_t)producers;
    opt.values = (uint32_t)values;
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "fan_in: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
