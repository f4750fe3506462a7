/* A program built only against an installed weft (headers, library and
 * pkg-config or CMake package files), used by tests/install/run.sh. It
 * starts the runtime, runs one coroutine and joins it with a wait group.
 * Exits 0 when every check passes. */
#include <stdint.h>
#include <stdio.h>
#include <weft.h>

enum { SUM_LIMIT = 1000 };

struct job {
    weft_wg wg;
    int64_t sum;          /* 1 + 2 + ... + SUM_LIMIT, written by the coroutine */
    uint64_t worker_id;   /* weft_id() inside the coroutine */
    int worker_in_coroutine;
};

static void add_numbers(void *arg)
{
    struct job *job = arg;

    job->worker_in_coroutine = weft_in_coroutine();
    job->worker_id = weft_id();
    for (int64_t i = 1; i <= SUM_LIMIT; i++)
        job->sum += i;
    weft_wg_done(&job->wg);
}

static int app_main(void *arg)
{
    (void)arg;
    struct job job = {0};
    const int64_t expected = (int64_t)SUM_LIMIT * (SUM_LIMIT + 1) / 2;

    weft_wg_add(&job.wg, 1);
    int rc = weft_go(add_numbers, &job);
    if (rc != 0) {
        fprintf(stderr, "consumer: weft_go failed: %s\n", weft_strerror(rc));
        return 1;
    }
    weft_wg_wait(&job.wg);

    if (job.sum != expected) {
        fprintf(stderr, "consumer: sum is %lld, expected %lld\n",
                (long long)job.sum, (long long)expected);
        return 1;
    }
    if (!job.worker_in_coroutine) {
        fprintf(stderr, "consumer: weft_in_coroutine() was false in the coroutine\n");
        return 1;
    }
    if (job.worker_id == 0 || job.worker_id == weft_id()) {
        fprintf(stderr, "consumer: coroutine id %llu is 0 or equals main's id %llu\n",
                (unsigned long long)job.worker_id, (unsigned long long)weft_id());
        return 1;
    }
    return 0;
}

int main(void)
{
    int rc = weft_main(app_main, NULL);
    if (rc < 0) {
        fprintf(stderr, "consumer: weft_main failed to start the runtime: %s\n",
                weft_strerror(rc));
        return 1;
    }
    if (rc != 0)
        return 1;
    printf("consumer: weft %d.%d.%d ok\n", WEFT_VERSION_MAJOR, WEFT_VERSION_MINOR,
           WEFT_VERSION_PATCH);
    return 0;
}
