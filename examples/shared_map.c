/*
 * shared_map: one counting job done two ways, with a mutex-protected map
 * and with a map that a single coroutine owns.
 *
 * W workers count the words of a short text that is repeated R times.
 * Worker w takes lines w, w + W, w + 2W and so on.
 *
 * - Shared memory: all workers update one word-count map, and a weft_mutex
 *   makes each update exclusive.
 * - Communication: only an owner coroutine touches its map. Workers send
 *   each word to the owner on a channel. When every worker has finished,
 *   main closes the channel, and the owner hands the finished map back on
 *   a second channel. No lock is needed because no memory is shared while
 *   the map is in use.
 *
 * Both ways must print the same counts.
 *
 * Usage: shared_map [workers] [repeats]   (defaults 4 and 200)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

static const char *const text[] = {
    "the cat sat on the mat",
    "the dog sat on the log",
    "a cat and a dog met on a mat",
    "the log and the mat sat still",
};
#define LINES (sizeof text / sizeof text[0])

#define MAX_WORD 16
#define MAP_SLOTS 64 /* more than the text's distinct words */

/* A fixed-size hash map from word to count, with linear probing. */
typedef struct word_map {
    char words[MAP_SLOTS][MAX_WORD];
    uint64_t counts[MAP_SLOTS];
} word_map;

typedef struct word {
    char text[MAX_WORD];
} word;

static int map_add(word_map *m, const char *w)
{
    uint32_t hash = 2166136261u; /* FNV-1a */
    for (const char *c = w; *c != '\0'; c++)
        hash = (hash ^ (uint8_t)*c) * 16777619u;
    for (uint32_t probe = 0; probe < MAP_SLOTS; probe++) {
        uint32_t slot = (hash + probe) % MAP_SLOTS;
        if (m->words[slot][0] == '\0')
            snprintf(m->words[slot], MAX_WORD, "%s", w);
        if (strcmp(m->words[slot], w) == 0) {
            m->counts[slot]++;
            return 0;
        }
    }
    return WEFT_ENOMEM; /* the map is full */
}

/* Call emit(w, arg) for each word of the lines a worker takes. Stops at
 * the first non-zero result and returns it. */
static int for_each_word(int worker, int workers, int repeats,
                         int (*emit)(const char *w, void *arg), void *arg)
{
    int total_lines = (int)LINES * repeats;
    for (int line = worker; line < total_lines; line += workers) {
        const char *p = text[line % LINES];
        while (*p != '\0') {
            size_t len = strcspn(p, " ");
            word w = {0};
            if (len >= MAX_WORD)
                return WEFT_EINVAL;
            memcpy(w.text, p, len);
            int err = emit(w.text, arg);
            if (err != 0)
                return err;
            p += len;
            p += strspn(p, " ");
        }
    }
    return 0;
}

typedef struct run {
    int workers;
    int repeats;
    word_map map;        /* the mutex way: shared by every worker */
    weft_mutex mu;       /* guards map */
    weft_chan *words;    /* the channel way: struct word, to the owner */
    weft_chan *finished; /* word_map *, from the owner when words closes */
    weft_wg wg;
} run;

typedef struct worker {
    run *r;
    int id;
    int err;
} worker;

static int add_locked(const char *w, void *arg)
{
    run *r = arg;
    weft_mutex_lock(&r->mu);
    int err = map_add(&r->map, w);
    weft_mutex_unlock(&r->mu);
    return err;
}

static void count_with_mutex(void *arg)
{
    worker *k = arg;
    k->err = for_each_word(k->id, k->r->workers, k->r->repeats, add_locked, k->r);
    weft_wg_done(&k->r->wg);
}

static int send_word(const char *w, void *arg)
{
    run *r = arg;
    word message = {0};
    snprintf(message.text, MAX_WORD, "%s", w);
    return weft_chan_send(r->words, &message);
}

static void count_with_channel(void *arg)
{
    worker *k = arg;
    k->err = for_each_word(k->id, k->r->workers, k->r->repeats, send_word, k->r);
    weft_wg_done(&k->r->wg);
}

/* Count the words received on r->words into a map of this coroutine's
 * own, and send the map's address on r->finished once words is closed.
 * Until then, no other coroutine touches the map. */
static void own_map(void *arg)
{
    run *r = arg;
    word_map *m = calloc(1, sizeof *m);
    int err = m != NULL ? 0 : WEFT_ENOMEM;
    word w;
    while (weft_chan_recv(r->words, &w) == 0) {
        if (err == 0)
            err = map_add(m, w.text); /* keep receiving, so no worker blocks */
    }
    if (err != 0) {
        fprintf(stderr, "shared_map: owner: %s\n", weft_strerror(err));
        free(m);
        m = NULL;
    }
    if (weft_chan_send(r->finished, &m) != 0)
        free(m);
}

/* Start the workers, wait for them and return the first error. */
static int run_workers(run *r, weft_fn fn, worker *workers)
{
    int err = 0;
    for (int i = 0; i < r->workers; i++) {
        workers[i] = (worker){ .r = r, .id = i };
        weft_wg_add(&r->wg, 1);
        err = weft_go(fn, &workers[i]);
        if (err != 0) {
            weft_wg_done(&r->wg);
            fprintf(stderr, "shared_map: weft_go failed: %s\n", weft_strerror(err));
            break;
        }
    }
    weft_wg_wait(&r->wg);
    for (int i = 0; i < r->workers && err == 0; i++) {
        err = workers[i].err;
        if (err != 0)
            fprintf(stderr, "shared_map: worker %d failed: %s\n", i, weft_strerror(err));
    }
    return err;
}

/* Write the map's words in alphabetical order as " word=count" pairs
 * into out, and return the total count. Slots depend on the order of
 * insertion, so two maps with equal counts compare equal only this way. */
static uint64_t format_map(const word_map *m, char *out, size_t size)
{
    uint64_t total = 0;
    size_t used = 0;
    const char *previous = "";
    out[0] = '\0';
    for (;;) {
        int next = -1;
        for (int i = 0; i < MAP_SLOTS; i++) {
            if (m->words[i][0] != '\0' && strcmp(m->words[i], previous) > 0 &&
                (next < 0 || strcmp(m->words[i], m->words[next]) < 0))
                next = i;
        }
        if (next < 0)
            break;
        if (used < size)
            used += (size_t)snprintf(out + used, size - used, " %s=%" PRIu64,
                                     m->words[next], m->counts[next]);
        total += m->counts[next];
        previous = m->words[next];
    }
    return total;
}

typedef struct options {
    int workers;
    int repeats;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;
    run *r = calloc(1, sizeof *r);
    worker *workers = calloc((size_t)opt->workers, sizeof *workers);
    if (r == NULL || workers == NULL) {
        fprintf(stderr, "shared_map: out of memory\n");
        free(r);
        free(workers);
        return 1;
    }
    r->workers = opt->workers;
    r->repeats = opt->repeats;

    /* Sharing memory: a map behind a mutex. */
    int err = run_workers(r, count_with_mutex, workers);

    /* Communicating: a map owned by one coroutine. */
    word_map *owned = NULL;
    r->words = weft_chan_make(sizeof(word), 16);
    r->finished = weft_chan_make(sizeof(word_map *), 0);
    if (err == 0 && (r->words == NULL || r->finished == NULL))
        err = WEFT_ENOMEM;
    if (err == 0)
        err = weft_go(own_map, r);
    if (err == 0) {
        err = run_workers(r, count_with_channel, workers);
        /* The owner stops receiving once the channel is closed and empty. */
        int close_err = weft_chan_close(r->words);
        int recv_err = weft_chan_recv(r->finished, &owned);
        if (err == 0)
            err = close_err != 0 ? close_err : recv_err;
        if (err == 0 && owned == NULL)
            err = WEFT_ENOMEM;
    }

    int failed = err != 0;
    if (err != 0) {
        fprintf(stderr, "shared_map: %s\n", weft_strerror(err));
    } else {
        char locked_counts[MAP_SLOTS * (MAX_WORD + 24)];
        char owned_counts[sizeof locked_counts];
        uint64_t locked_total = format_map(&r->map, locked_counts, sizeof locked_counts);
        uint64_t owned_total = format_map(owned, owned_counts, sizeof owned_counts);
        printf("mutex:  %s\n", locked_counts);
        printf("channel:%s\n", owned_counts);
        if (strcmp(locked_counts, owned_counts) != 0 || locked_total != owned_total) {
            fprintf(stderr, "shared_map: the two maps differ\n");
            failed = 1;
        } else {
            printf("both ways counted %" PRIu64 " words with the same counts\n", owned_total);
        }
    }

    free(owned);
    if (r->words != NULL)
        weft_chan_release(r->words);
    if (r->finished != NULL)
        weft_chan_release(r->finished);
    free(r);
    free(workers);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

int main(int argc, char **argv)
{
    long workers = 4;
    long repeats = 200;
    if (argc > 1)
        workers = strtol(argv[1], NULL, 10);
    if (argc > 2)
        repeats = strtol(argv[2], NULL, 10);
    if (workers < 1 || workers > 1000 || repeats < 1 || repeats > 100000) {
        fprintf(stderr, "usage: shared_map [workers from 1 to 1000] [repeats from 1 to 100000]\n");
        return 2;
    }
    options opt = { .workers = (int)workers, .repeats = (int)repeats };
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "shared_map: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
