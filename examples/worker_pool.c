/*
 * worker_pool: a fixed number of workers that receive from a jobs channel
 * and send to a results channel.
 *
 * A feeder coroutine sends the jobs 1..J and closes the jobs channel. Each
 * of W workers receives jobs until that channel is closed, computes the
 * job's Collatz step count (how many steps of n -> n/2 or 3n+1 reach 1),
 * and sends a result that names the job and the worker. The main coroutine
 * collects exactly J results, checks each one against its own sequential
 * computation, and waits for the workers to stop.
 *
 * The feeder is a coroutine of its own so that main can collect results
 * while jobs are still being sent: with both channels full, a main that
 * sent every job first would wait on the workers while they wait on it.
 *
 * Usage: worker_pool [jobs] [workers]   (defaults 1000 and 4)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct result {
    uint32_t job;
    uint32_t steps;
    uint32_t worker;
} result;

typedef struct pool {
    weft_chan *jobs;    /* uint32_t job numbers, buffered */
    weft_chan *results; /* struct result, buffered */
    uint32_t njobs;
    weft_wg wg;         /* the feeder and every worker */
} pool;

typedef struct worker {
    pool *pool;
    uint32_t id;
    int err;
} worker;

static uint32_t collatz_steps(uint64_t n)
{
    uint32_t steps = 0;
    while (n != 1) {
        n = n % 2 == 0 ? n / 2 : 3 * n + 1;
        steps++;
    }
    return steps;
}

static void feed(void *arg)
{
    pool *p = arg;
    for (uint32_t job = 1; job <= p->njobs; job++) {
        int err = weft_chan_send(p->jobs, &job);
        if (err != 0) {
            /* Only this coroutine closes jobs, so a failed send is a bug here. */
            fprintf(stderr, "worker_pool: sending job %" PRIu32 " failed: %s\n",
                    job, weft_strerror(err));
            break;
        }
    }
    int err = weft_chan_close(p->jobs);
    if (err != 0)
        fprintf(stderr, "worker_pool: closing the jobs channel failed: %s\n", weft_strerror(err));
    weft_wg_done(&p->wg);
}

static void work(void *arg)
{
    worker *w = arg;
    uint32_t job;
    while (weft_chan_recv(w->pool->jobs, &job) == 0) {
        result r = { .job = job, .steps = collatz_steps(job), .worker = w->id };
        w->err = weft_chan_send(w->pool->results, &r);
        if (w->err != 0)
            break;
    }
    weft_wg_done(&w->pool->wg);
}

typedef struct options {
    uint32_t jobs;
    uint32_t workers;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;

    /* Main outlives every coroutine here (it waits on p.wg before it
     * releases anything), so they borrow main's references. */
    pool p = { .jobs = weft_chan_make(sizeof(uint32_t), opt->workers),
               .results = weft_chan_make(sizeof(result), opt->workers),
               .njobs = opt->jobs };
    worker *workers = calloc(opt->workers, sizeof *workers);
    uint32_t *per_worker = calloc(opt->workers, sizeof *per_worker);
    uint8_t *seen = calloc(opt->jobs + 1, 1);
    if (p.jobs == NULL || p.results == NULL || workers == NULL || per_worker == NULL ||
        seen == NULL) {
        fprintf(stderr, "worker_pool: out of memory\n");
        return 1;
    }

    weft_wg_add(&p.wg, 1);
    int err = weft_go(feed, &p);
    for (uint32_t i = 0; i < opt->workers && err == 0; i++) {
        workers[i] = (worker){ .pool = &p, .id = i };
        weft_wg_add(&p.wg, 1);
        err = weft_go(work, &workers[i]);
    }
    if (err != 0) {
        fprintf(stderr, "worker_pool: weft_go failed: %s\n", weft_strerror(err));
        return 1;
    }

    uint64_t total_steps = 0;
    uint32_t longest_job = 0;
    uint32_t longest_steps = 0;
    int failed = 0;
    for (uint32_t i = 0; i < opt->jobs; i++) {
        result r;
        err = weft_chan_recv(p.results, &r);
        if (err != 0) {
            fprintf(stderr, "worker_pool: receiving result %" PRIu32 " failed: %s\n",
                    i, weft_strerror(err));
            return 1;
        }
        if (r.job == 0 || r.job > opt->jobs || seen[r.job] || r.worker >= opt->workers ||
            r.steps != collatz_steps(r.job)) {
            fprintf(stderr, "worker_pool: wrong result: job %" PRIu32 ", %" PRIu32
                    " steps, worker %" PRIu32 "\n", r.job, r.steps, r.worker);
            failed = 1;
            continue;
        }
        seen[r.job] = 1;
        per_worker[r.worker]++;
        total_steps += r.steps;
        /* Results arrive in any order, so a tie goes to the smaller job
         * to print the same line on every run. */
        if (r.steps > longest_steps || (r.steps == longest_steps && r.job < longest_job)) {
            longest_steps = r.steps;
            longest_job = r.job;
        }
    }
    weft_wg_wait(&p.wg);

    for (uint32_t i = 0; i < opt->workers; i++) {
        printf("worker %" PRIu32 " did %" PRIu32 " jobs\n", i, per_worker[i]);
        if (workers[i].err != 0) {
            fprintf(stderr, "worker_pool: worker %" PRIu32 " failed: %s\n", i,
                    weft_strerror(workers[i].err));
            failed = 1;
        }
    }
    printf("%" PRIu32 " jobs done by %" PRIu32 " workers: %" PRIu64
           " Collatz steps in total, the most for job %" PRIu32 " (%" PRIu32 " steps)\n",
           opt->jobs, opt->workers, total_steps, longest_job, longest_steps);

    weft_chan_release(p.jobs);
    weft_chan_release(p.results);
    free(workers);
    free(per_worker);
    free(seen);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    unsigned long long jobs = 1000;
    unsigned long long workers = 4;
    if (argc > 1)
        jobs = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        workers = strtoull(argv[2], NULL, 10);
    if (jobs == 0 || jobs > 10000000 || workers == 0 || workers > 10000) {
        fprintf(stderr, "usage: worker_pool [jobs from 1 to 10000000] [workers from 1 to 10000]\n");
        return 2;
    }
    options opt = { .jobs = (uint32_t)jobs, .workers = (uint32_t)workers };
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "worker_pool: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
