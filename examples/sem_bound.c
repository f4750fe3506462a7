/*
 * sem_bound: a weighted semaphore that bounds how much work runs at once.
 *
 * All jobs start at once as coroutines, but each must acquire its weight
 * from a semaphore whose size is the limit before it runs, and releases
 * it after. Most jobs weigh 1, so up to limit of them run together. One
 * job in the middle weighs the whole limit, so it runs alone. The semaphore is FIFO: once that
 * heavy job waits at the head of the queue, the light jobs behind it wait
 * too instead of taking the free weight before it.
 *
 * Each job adds its weight to an atomic counter of the weight in use, and
 * records the maximum it saw with a compare-and-swap loop. The program
 * checks that the maximum never went above the limit, that the heavy job
 * ran with no other job, and that every job finished.
 *
 * Usage: sem_bound [jobs] [limit]   (defaults 12 and 3)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct shared {
    weft_sem sem;
    int64_t limit;
    weft_atomic_i64 weight_in_use;
    weft_atomic_i64 max_weight;
    weft_atomic_i32 running;   /* jobs between acquire and release */
    weft_atomic_i64 events;    /* job starts plus job ends so far */
    weft_atomic_i32 done;      /* jobs that finished their work */
    weft_atomic_bool heavy_ran_alone;
    weft_wg wg;
} shared;

typedef struct job {
    shared *s;
    int64_t weight;
    int err;
} job;

/* Raise max to at least value. */
static void store_max(weft_atomic_i64 *max, int64_t value)
{
    int64_t seen = weft_atomic_i64_load(max);
    while (value > seen && !weft_atomic_i64_cas(max, seen, value))
        seen = weft_atomic_i64_load(max);
}

static void run_job(void *arg)
{
    job *j = arg;
    shared *s = j->s;

    /* NULL is the background context: wait as long as it takes. */
    j->err = weft_sem_acquire(NULL, &s->sem, j->weight);
    if (j->err != 0) {
        weft_wg_done(&s->wg);
        return;
    }

    int32_t running = weft_atomic_i32_add(&s->running, 1);
    int64_t events = weft_atomic_i64_add(&s->events, 1);
    store_max(&s->max_weight, weft_atomic_i64_add(&s->weight_in_use, j->weight));

    j->err = weft_sleep(WEFT_MS(5)); /* the work */

    /* A job ran alone if none was running when it started and none
     * started or ended before it ended. */
    if (j->weight == s->limit && running == 1 && weft_atomic_i64_load(&s->events) == events)
        weft_atomic_bool_store(&s->heavy_ran_alone, true);
    weft_atomic_i64_add(&s->weight_in_use, -j->weight);
    weft_atomic_i64_add(&s->events, 1);
    weft_atomic_i32_add(&s->running, -1);
    weft_sem_release(&s->sem, j->weight);

    if (j->err == 0)
        weft_atomic_i32_add(&s->done, 1);
    weft_wg_done(&s->wg);
}

typedef struct options {
    int jobs;
    int limit;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;
    shared s = { .limit = opt->limit };
    int err = weft_sem_init(&s.sem, opt->limit);
    job *jobs = calloc((size_t)opt->jobs, sizeof *jobs);
    if (err != 0 || jobs == NULL) {
        fprintf(stderr, "sem_bound: setup failed: %s\n",
                err != 0 ? weft_strerror(err) : "out of memory");
        free(jobs);
        return 1;
    }

    int heavy = opt->jobs / 2;
    for (int i = 0; i < opt->jobs; i++) {
        jobs[i] = (job){ .s = &s, .weight = i == heavy ? opt->limit : 1 };
        weft_wg_add(&s.wg, 1);
        err = weft_go(run_job, &jobs[i]);
        if (err != 0) {
            weft_wg_done(&s.wg);
            fprintf(stderr, "sem_bound: weft_go for job %d failed: %s\n", i, weft_strerror(err));
            weft_wg_wait(&s.wg);
            free(jobs);
            return 1;
        }
    }
    weft_wg_wait(&s.wg);

    int failed = 0;
    for (int i = 0; i < opt->jobs; i++) {
        if (jobs[i].err != 0) {
            fprintf(stderr, "sem_bound: job %d failed: %s\n", i, weft_strerror(jobs[i].err));
            failed = 1;
        }
    }
    free(jobs);

    int64_t max_weight = weft_atomic_i64_load(&s.max_weight);
    int32_t done = weft_atomic_i32_load(&s.done);
    bool alone = weft_atomic_bool_load(&s.heavy_ran_alone);
    printf("%d jobs (%d of weight 1, 1 of weight %d), semaphore size %d\n", opt->jobs,
           opt->jobs - 1, opt->limit, opt->limit);
    printf("max weight in use at once: %" PRId64 " of %d\n", max_weight, opt->limit);
    printf("the weight-%d job ran %s\n", opt->limit, alone ? "alone" : "next to other jobs");
    printf("%" PRId32 " of %d jobs done\n", done, opt->jobs);

    /* With every job finished, the whole weight is free again. */
    if (!weft_sem_try_acquire(&s.sem, opt->limit)) {
        fprintf(stderr, "sem_bound: the semaphore's weight was not all released\n");
        failed = 1;
    } else {
        weft_sem_release(&s.sem, opt->limit);
    }
    if (max_weight != opt->limit || !alone || done != opt->jobs) {
        fprintf(stderr, "sem_bound: expected a max weight of %d, the heavy job alone "
                "and %d jobs done\n", opt->limit, opt->jobs);
        failed = 1;
    }
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    long jobs = 12;
    long limit = 3;
    if (argc > 1)
        jobs = strtol(argv[1], NULL, 10);
    if (argc > 2)
        limit = strtol(argv[2], NULL, 10);
    if (jobs < 2 || jobs > 100000 || limit < 1 || limit > 1000) {
        fprintf(stderr, "usage: sem_bound [jobs from 2 to 100000] [limit from 1 to 1000]\n");
        return 2;
    }
    options opt = { .jobs = (int)jobs, .limit = (int)limit };
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "sem_bound: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
