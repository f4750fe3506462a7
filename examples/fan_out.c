/*
 * fan_out: one producer, several workers receiving from the same channel.
 *
 * The main coroutine sends the jobs 1..N on one unbuffered channel, then
 * closes it. Each of W worker coroutines receives until the channel is
 * closed and empty. Every value goes to exactly one worker, whichever
 * receives it first, so the jobs spread over the workers that are free
 * without any bookkeeping. Each worker adds up its share in a slot of its
 * own. Main checks that the shares make N jobs summing to N(N+1)/2.
 *
 * How many jobs each worker received depends on scheduling, so those lines
 * differ from run to run, but the totals do not.
 *
 * Usage: fan_out [jobs] [workers]   (defaults 1000 and 4)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct worker {
    weft_chan *jobs;
    uint64_t received; /* jobs this worker received */
    uint64_t sum;      /* sum of those jobs */
    weft_wg *wg;
} worker;

static void work(void *arg)
{
    worker *w = arg;
    uint64_t job;
    while (weft_chan_recv(w->jobs, &job) == 0) {
        w->received++;
        w->sum += job;
        /* Stands in for real work: the coroutine gives up its thread,
         * so another worker takes the next job. */
        weft_yield();
    }
    weft_chan_release(w->jobs);
    weft_wg_done(w->wg);
}

typedef struct options {
    uint64_t jobs;
    uint64_t workers;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;

    weft_chan *jobs = weft_chan_make(sizeof(uint64_t), 0);
    worker *workers = calloc(opt->workers, sizeof *workers);
    if (jobs == NULL || workers == NULL) {
        fprintf(stderr, "fan_out: out of memory\n");
        return 1;
    }

    weft_wg wg = {0};
    for (uint64_t i = 0; i < opt->workers; i++) {
        workers[i].jobs = weft_chan_retain(jobs);
        workers[i].wg = &wg;
        weft_wg_add(&wg, 1);
        int err = weft_go(work, &workers[i]);
        if (err != 0) {
            fprintf(stderr, "fan_out: weft_go failed for worker %" PRIu64 ": %s\n",
                    i, weft_strerror(err));
            return 1;
        }
    }

    for (uint64_t job = 1; job <= opt->jobs; job++) {
        int err = weft_chan_send(jobs, &job);
        if (err != 0) {
            fprintf(stderr, "fan_out: sending job %" PRIu64 " failed: %s\n",
                    job, weft_strerror(err));
            return 1;
        }
    }
    /* The workers drain what is left, then their receives return
     * WEFT_ECLOSED and they stop. */
    int err = weft_chan_close(jobs);
    if (err != 0) {
        fprintf(stderr, "fan_out: weft_chan_close failed: %s\n", weft_strerror(err));
        return 1;
    }
    weft_wg_wait(&wg);
    weft_chan_release(jobs);

    uint64_t received = 0;
    uint64_t sum = 0;
    for (uint64_t i = 0; i < opt->workers; i++) {
        printf("worker %" PRIu64 " took %" PRIu64 " jobs\n", i, workers[i].received);
        received += workers[i].received;
        sum += workers[i].sum;
    }
    free(workers);

    uint64_t expected = opt->jobs * (opt->jobs + 1) / 2;
    printf("%" PRIu64 " workers took %" PRIu64 " jobs summing to %" PRIu64 "\n",
           opt->workers, received, sum);
    if (received != opt->jobs || sum != expected) {
        fprintf(stderr, "fan_out: expected %" PRIu64 " jobs summing to %" PRIu64 "\n",
                opt->jobs, expected);
        return 1;
    }
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    options opt = { .jobs = 1000, .workers = 4 };
    if (argc > 1)
        opt.jobs = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        opt.workers = strtoull(argv[2], NULL, 10);
    if (opt.jobs == 0 || opt.jobs > 1000000000 || opt.workers == 0 || opt.workers > 10000) {
        fprintf(stderr, "usage: fan_out [jobs from 1 to 1000000000] [workers from 1 to 10000]\n");
        return 2;
    }
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "fan_out: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
