/*
 * done_channel: cancelling coroutines by closing a channel.
 *
 * A producer sends 1, 2, 3... on a work channel without end. W workers
 * receive numbers, square them and send the squares to the main coroutine.
 * Main needs only R results. Then it closes the done channel, which
 * carries no values: a receive from a closed channel is always ready, so
 * closing it reaches every coroutine that waits on it at once, however
 * many there are.
 *
 * Every operation that could block forever once main stops receiving sits
 * in a weft_select together with a receive on done: the producer's send,
 * each worker's receive of work and each worker's send of a result. So
 * every coroutine returns soon after the close. Main waits for all of them
 * with a wait group and checks that none failed.
 *
 * Usage: done_channel [results] [workers]   (defaults 100 and 4)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <weft.h>

typedef struct shared {
    weft_chan *work;    /* uint64_t numbers from the producer */
    weft_chan *results; /* uint64_t squares for main */
    weft_chan *done;    /* carries no values, closed by main to cancel */
    weft_wg wg;         /* the producer and every worker */
} shared;

typedef struct task {
    shared *s;
    uint64_t handled; /* numbers sent (producer) or received (worker) */
    int err;
} task;

static void produce(void *arg)
{
    task *t = arg;
    for (uint64_t n = 1;; n++) {
        weft_case cases[] = {
            WEFT_SEND_CASE(t->s->work, &n),
            WEFT_RECV_CASE(t->s->done, NULL),
        };
        int chosen = weft_select(cases, 2);
        if (chosen == 1)
            break; /* cancelled */
        if (chosen != 0 || !cases[0].ok) {
            t->err = chosen < 0 ? chosen : WEFT_ECLOSED;
            break;
        }
        t->handled++;
    }
    weft_wg_done(&t->s->wg);
}

static void work(void *arg)
{
    task *t = arg;
    for (;;) {
        uint64_t n;
        weft_case receive[] = {
            WEFT_RECV_CASE(t->s->work, &n),
            WEFT_RECV_CASE(t->s->done, NULL),
        };
        int chosen = weft_select(receive, 2);
        if (chosen == 1)
            break;
        if (chosen != 0 || !receive[0].ok) {
            t->err = chosen < 0 ? chosen : WEFT_ECLOSED;
            break;
        }
        t->handled++;

        uint64_t squared = n * n;
        weft_case send[] = {
            WEFT_SEND_CASE(t->s->results, &squared),
            WEFT_RECV_CASE(t->s->done, NULL),
        };
        chosen = weft_select(send, 2);
        if (chosen == 1)
            break; /* main no longer receives, so the square is dropped */
        if (chosen != 0 || !send[0].ok) {
            t->err = chosen < 0 ? chosen : WEFT_ECLOSED;
            break;
        }
    }
    weft_wg_done(&t->s->wg);
}

typedef struct options {
    uint64_t results;
    uint64_t workers;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;

    /* Main waits on s.wg before it releases the channels, so the
     * coroutines borrow main's references. */
    shared s = { .work = weft_chan_make(sizeof(uint64_t), 0),
                 .results = weft_chan_make(sizeof(uint64_t), 0),
                 .done = weft_chan_make(0, 0) };
    /* tasks[0] is the producer, the rest are workers. */
    task *tasks = calloc(opt->workers + 1, sizeof *tasks);
    if (s.work == NULL || s.results == NULL || s.done == NULL || tasks == NULL) {
        fprintf(stderr, "done_channel: out of memory\n");
        return 1;
    }

    int err = 0;
    for (uint64_t i = 0; i <= opt->workers && err == 0; i++) {
        tasks[i].s = &s;
        weft_wg_add(&s.wg, 1);
        err = weft_go(i == 0 ? produce : work, &tasks[i]);
    }
    if (err != 0) {
        fprintf(stderr, "done_channel: weft_go failed: %s\n", weft_strerror(err));
        return 1;
    }

    uint64_t received = 0;
    for (; received < opt->results; received++) {
        uint64_t square;
        err = weft_chan_recv(s.results, &square);
        if (err != 0) {
            fprintf(stderr, "done_channel: receiving a result failed: %s\n", weft_strerror(err));
            return 1;
        }
    }
    printf("received %" PRIu64 " results, closing done\n", received);

    err = weft_chan_close(s.done);
    if (err != 0) {
        fprintf(stderr, "done_channel: closing done failed: %s\n", weft_strerror(err));
        return 1;
    }
    weft_wg_wait(&s.wg);

    int failed = 0;
    uint64_t handled_by_workers = 0;
    for (uint64_t i = 0; i <= opt->workers; i++) {
        if (tasks[i].err != 0) {
            fprintf(stderr, "done_channel: %s %" PRIu64 " failed: %s\n",
                    i == 0 ? "producer" : "worker", i, weft_strerror(tasks[i].err));
            failed = 1;
        }
        if (i > 0)
            handled_by_workers += tasks[i].handled;
    }
    /* The channels are unbuffered, so every number the producer sent
     * reached a worker. A worker drops at most one square: the one it was
     * offering when done closed, after which it returns. */
    if (handled_by_workers != tasks[0].handled) {
        fprintf(stderr, "done_channel: the producer sent %" PRIu64 " numbers, the workers received %" PRIu64 "\n",
                tasks[0].handled, handled_by_workers);
        failed = 1;
    }
    if (handled_by_workers < received || handled_by_workers > received + opt->workers) {
        fprintf(stderr, "done_channel: workers handled %" PRIu64 " numbers, expected %" PRIu64
                " to %" PRIu64 "\n", handled_by_workers, received, received + opt->workers);
        failed = 1;
    }
    printf("the producer and %" PRIu64 " workers stopped after done was closed\n", opt->workers);

    weft_chan_release(s.work);
    weft_chan_release(s.results);
    weft_chan_release(s.done);
    free(tasks);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    options opt = { .results = 100, .workers = 4 };
    if (argc > 1)
        opt.results = strtoull(argv[1], NULL, 10);
    if (argc > 2)
        opt.workers = strtoull(argv[2], NULL, 10);
    /* Squares of numbers up to about 4e9 fit in 64 bits. */
    if (opt.results > 1000000000 || opt.workers == 0 || opt.workers > 10000) {
        fprintf(stderr, "usage: done_channel [results from 0 to 1000000000] [workers from 1 to 10000]\n");
        return 2;
    }
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "done_channel: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
