/*
 * word_count: a word-count pipeline over files: a reader, several
 * counting workers and a reducer, joined by channels.
 *
 * - The reader opens each file with weft_file_open and reads it with
 *   weft_file_read in chunks of 8 KiB, so a slow disk parks only the
 *   reader's coroutine, never its thread. A chunk ends at the last
 *   separator it contains, and the cut word moves to the next chunk. The
 *   reader sends each chunk on a buffered channel and closes the channel
 *   after the last file.
 * - W workers receive chunks until the channel is closed. Each counts
 *   into a map of its own, so they share no memory and need no lock, and
 *   then sends its map to the reducer.
 * - The reducer merges the W maps and hands the result back, and the
 *   program prints the most frequent words.
 *
 * A word is a run of ASCII letters, counted in lower case; a word longer
 * than 63 letters counts as its first 63.
 *
 * Without file arguments, the program makes its own input: a directory
 * from mkdtemp under /tmp with three files, written with
 * weft_file_write_all, whose word counts are known. It checks the counts,
 * then deletes the files and the directory. mkdtemp, unlink and rmdir are
 * blocking system calls, so they run through weft_blocking on weft's
 * blocking pool.
 *
 * Usage: word_count [-w WORKERS] [-k TOP] [FILE...]
 *   -w  counting workers, 1 to 64 (default 4)
 *   -k  how many of the most frequent words to print, 1 to 1000 (default 10)
 */
#define _POSIX_C_SOURCE 200809L
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft.h>

#define CHUNK_SIZE 8192
#define MAX_WORD 64            /* bytes, with the terminating NUL */

/* ---- word map ----------------------------------------------------------- */

typedef struct word_entry {
    char word[MAX_WORD];       /* "" marks a free slot */
    uint64_t count;
} word_entry;

/* An open-addressing hash map from word to count that doubles when it is
 * half full. */
typedef struct word_map {
    word_entry *slots;
    size_t capacity;           /* a power of two */
    size_t size;
} word_map;

static uint64_t hash_word(const char *w)
{
    uint64_t hash = 14695981039346656037u; /* FNV-1a, 64-bit */
    for (; *w != '\0'; w++)
        hash = (hash ^ (uint8_t)*w) * 1099511628211u;
    return hash;
}

static word_entry *map_find_slot(word_entry *slots, size_t capacity, const char *w)
{
    size_t i = (size_t)hash_word(w) & (capacity - 1);
    while (slots[i].word[0] != '\0' && strcmp(slots[i].word, w) != 0)
        i = (i + 1) & (capacity - 1);
    return &slots[i];
}

static int map_grow(word_map *m)
{
    size_t capacity = m->capacity == 0 ? 256 : m->capacity * 2;
    word_entry *slots = calloc(capacity, sizeof *slots);
    if (slots == NULL)
        return WEFT_ENOMEM;
    for (size_t i = 0; i < m->capacity; i++) {
        if (m->slots[i].word[0] != '\0')
            *map_find_slot(slots, capacity, m->slots[i].word) = m->slots[i];
    }
    free(m->slots);
    m->slots = slots;
    m->capacity = capacity;
    return 0;
}

/* Add count to w's count. Returns 0 or WEFT_ENOMEM. */
static int map_add(word_map *m, const char *w, uint64_t count)
{
    if ((m->size + 1) * 2 > m->capacity) {
        int err = map_grow(m);
        if (err != 0)
            return err;
    }
    word_entry *e = map_find_slot(m->slots, m->capacity, w);
    if (e->word[0] == '\0') {
        snprintf(e->word, sizeof e->word, "%s", w);
        m->size++;
    }
    e->count += count;
    return 0;
}

static void map_free(word_map *m)
{
    if (m != NULL)
        free(m->slots);
    free(m);
}

/* Most frequent first; equal counts in alphabetical order. */
static int compare_entries(const void *a, const void *b)
{
    const word_entry *x = a;
    const word_entry *y = b;
    if (x->count != y->count)
        return x->count > y->count ? -1 : 1;
    return strcmp(x->word, y->word);
}

/* ---- the pipeline ------------------------------------------------------- */

typedef struct chunk {
    char *data;                /* malloc'd; the receiver frees it */
    size_t len;
} chunk;

typedef struct pipeline {
    weft_ctx *ctx;
    char **paths;
    int files;
    int workers;
    weft_chan *chunks;         /* chunk, from the reader to the workers */
    weft_chan *partials;       /* word_map *, from the workers to the reducer */
    weft_wg done;              /* the reader, the workers and the reducer */
    int read_err;              /* 0, or why the reader stopped */
    const char *failed_path;
    weft_atomic_i32 count_err; /* the first error outside the reader */
    int64_t chunks_sent;
    word_map *result;          /* the reducer's merged map */
} pipeline;

static void record_error(pipeline *p, int err)
{
    weft_atomic_i32_cas(&p->count_err, 0, err);
}

static bool is_letter(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Return the index just past the last separator in buf[0..len), or 0 if
 * there is none. The letters after it may be a word that the next read
 * continues. */
static size_t complete_words_end(const char *buf, size_t len)
{
    while (len > 0 && is_letter(buf[len - 1]))
        len--;
    return len;
}

static int send_chunk(pipeline *p, const char *data, size_t len)
{
    if (len == 0)
        return 0;
    chunk c = { .data = malloc(len), .len = len };
    if (c.data == NULL)
        return WEFT_ENOMEM;
    memcpy(c.data, data, len);
    int err = weft_chan_send(p->chunks, &c);
    if (err != 0)
        free(c.data);
    else
        p->chunks_sent++;
    return err;
}

/* Read one file and send its chunks. Returns 0 or an error code. */
static int read_file(pipeline *p, const char *path)
{
    int fd = weft_file_open(p->ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    char buf[CHUNK_SIZE];
    size_t carried = 0;        /* the start of a word cut by the last read */
    int64_t offset = 0;
    int err = 0;
    for (;;) {
        ssize_t n = weft_file_read(p->ctx, fd, buf + carried, sizeof buf - carried, offset);
        if (n < 0) {
            err = (int)n;
            break;
        }
        offset += n;
        size_t len = carried + (size_t)n;
        if (n == 0) {
            err = send_chunk(p, buf, len); /* the last word of the file */
            break;
        }
        size_t end = complete_words_end(buf, len);
        if (end == 0)
            end = len; /* one word fills the buffer: cut it */
        err = send_chunk(p, buf, end);
        if (err != 0)
            break;
        carried = len - end;
        memmove(buf, buf + end, carried);
    }
    int close_err = weft_file_close(fd);
    return err != 0 ? err : close_err;
}

static void run_reader(void *arg)
{
    pipeline *p = arg;
    for (int i = 0; i < p->files && p->read_err == 0; i++) {
        p->read_err = read_file(p, p->paths[i]);
        if (p->read_err != 0)
            p->failed_path = p->paths[i];
    }
    /* The workers stop once they have taken the chunks already sent. */
    weft_chan_close(p->chunks);
    weft_wg_done(&p->done);
}


/* Count the words of c into m. Returns 0 or WEFT_ENOMEM. */
static int count_words(word_map *m, const chunk *c)
{
    char word[MAX_WORD];
    size_t len = 0;
    for (size_t i = 0; i <= c->len; i++) {
        char ch = i < c->len ? c->data[i] : ' ';
        if (is_letter(ch)) {
            if (len < MAX_WORD - 1)
                word[len++] = (char)(ch | 0x20); /* ASCII lower case */
            continue;
        }
        if (len > 0) {
            word[len] = '\0';
            len = 0;
            int err = map_add(m, word, 1);
            if (err != 0)
                return err;
        }
    }
    return 0;
}

static void run_worker(void *arg)
{
    pipeline *p = arg;
    word_map *m = calloc(1, sizeof *m);
    chunk c;
    while (weft_chan_recv(p->chunks, &c) == 0) {
        if (m != NULL) {
            int err = count_words(m, &c);
            if (err != 0)
                record_error(p, err);
        }
        free(c.data);
    }
    if (m == NULL)
        record_error(p, WEFT_ENOMEM);
    /* Send even a NULL map: the reducer waits for one from each worker. */
    weft_chan_send(p->partials, &m);
    weft_wg_done(&p->done);
}

static void run_reducer(void *arg)
{
    pipeline *p = arg;
    word_map *total = calloc(1, sizeof *total);
    if (total == NULL)
        record_error(p, WEFT_ENOMEM);
    for (int i = 0; i < p->workers; i++) {
        word_map *m = NULL;
        weft_chan_recv(p->partials, &m);
        for (size_t s = 0; m != NULL && total != NULL && s < m->capacity; s++) {
            const word_entry *e = &m->slots[s];
            if (e->word[0] != '\0' && map_add(total, e->word, e->count) != 0)
                record_error(p, WEFT_ENOMEM);
        }
        map_free(m);
    }
    p->result = total;
    weft_wg_done(&p->done);
}

/* Count the words in the files and return the merged map, or NULL after
 * printing why. */
static word_map *count_files(weft_ctx *ctx, char **paths, int files, int workers,
                             int64_t *chunks_sent)
{
    pipeline p = { .ctx = ctx, .paths = paths, .files = files, .workers = workers };
    p.chunks = weft_chan_make(sizeof(chunk), (size_t)workers * 2);
    p.partials = weft_chan_make(sizeof(word_map *), (size_t)workers);
    if (p.chunks == NULL || p.partials == NULL) {
        fprintf(stderr, "word_count: out of memory\n");
        weft_chan_release(p.chunks);
        weft_chan_release(p.partials);
        return NULL;
    }

    /* Start the workers first: the reducer waits for one map from each
     * worker that started, and the reader needs at least one worker. */
    int started = 0;
    int err = 0;
    for (int i = 0; i < workers && err == 0; i++) {
        weft_wg_add(&p.done, 1);
        err = weft_go(run_worker, &p);
        if (err != 0)
            weft_wg_done(&p.done);
        else
            started++;
    }
    p.workers = started;
    if (started > 0) {
        weft_wg_add(&p.done, 1);
        err = weft_go(run_reducer, &p);
        if (err != 0) {
            weft_wg_done(&p.done);
            record_error(&p, err); /* the partials channel has room for every map */
        }
        weft_wg_add(&p.done, 1);
        err = weft_go(run_reader, &p);
        if (err != 0) {
            weft_wg_done(&p.done);
            record_error(&p, err);
            weft_chan_close(p.chunks); /* lets the workers finish */
        }
    } else {
        record_error(&p, err);
    }
    weft_wg_wait(&p.done);
    weft_chan_release(p.chunks);
    weft_chan_release(p.partials);

    if (p.read_err != 0) {
        fprintf(stderr, "word_count: reading %s failed: %s\n", p.failed_path,
                weft_strerror(p.read_err));
    } else if (weft_atomic_i32_load(&p.count_err) != 0) {
        fprintf(stderr, "word_count: the pipeline failed: %s\n",
                weft_strerror(weft_atomic_i32_load(&p.count_err)));
    } else {
        *chunks_sent = p.chunks_sent;
        return p.result;
    }
    map_free(p.result);
    return NULL;
}

/* Print the top words of m and return them sorted in a malloc'd array of
 * m->size entries (NULL when out of memory). Adds up the words in *total. */
static word_entry *print_top(const word_map *m, int top, uint64_t *total)
{
    word_entry *sorted = malloc((m->size > 0 ? m->size : 1) * sizeof *sorted);
    if (sorted == NULL)
        return NULL;
    size_t n = 0;
    *total = 0;
    for (size_t i = 0; i < m->capacity; i++) {
        if (m->slots[i].word[0] != '\0') {
            sorted[n++] = m->slots[i];
            *total += m->slots[i].count;
        }
    }
    qsort(sorted, n, sizeof *sorted, compare_entries);
    printf("top %d:\n", (int)(n < (size_t)top ? n : (size_t)top));
    for (size_t i = 0; i < n && i < (size_t)top; i++)
        printf("%8" PRIu64 " %s\n", sorted[i].count, sorted[i].word);
    return sorted;
}

/* ---- the generated input ------------------------------------------------ */

/* The generated text's words and how often each occurs. */
static const struct {
    const char *word;
    int count;
} vocabulary[] = {
    { "the", 3000 }, { "fox", 2600 }, { "dog", 2200 }, { "quick", 1800 },
    { "brown", 1500 }, { "lazy", 1200 }, { "jumps", 1000 }, { "over", 800 },
    { "and", 600 }, { "runs", 400 }, { "away", 250 }, { "home", 150 },
};
#define VOCABULARY_SIZE (sizeof vocabulary / sizeof vocabulary[0])
#define GENERATED_FILES 3

static char temp_dir[] = "/tmp/word_count.XXXXXX";
static char generated_paths[GENERATED_FILES][64];

static void *make_temp_dir(void *arg)
{
    (void)arg;
    return mkdtemp(temp_dir) != NULL ? NULL : (void *)(intptr_t)-errno;
}

static void *remove_temp_dir(void *arg)
{
    (void)arg;
    intptr_t err = 0;
    for (int i = 0; i < GENERATED_FILES; i++) {
        if (unlink(generated_paths[i]) != 0 && errno != ENOENT && err == 0)
            err = -errno;
    }
    if (rmdir(temp_dir) != 0 && err == 0)
        err = -errno;
    return (void *)err;
}

/* Run fn on weft's blocking pool; it returns NULL or a negative errno
 * value cast to a pointer. Returns 0 or an error code. */
static int run_blocking(weft_ctx *ctx, void *(*fn)(void *))
{
    void *result = NULL;
    int err = weft_blocking(ctx, fn, NULL, &result);
    return err != 0 ? err : (int)(intptr_t)result;
}

/* Write the vocabulary's words, shuffled, into GENERATED_FILES files with
 * some capitals and punctuation. Returns 0 or an error code. */
static int write_generated_files(weft_ctx *ctx, uint64_t *words)
{
    size_t total = 0;
    for (size_t k = 0; k < VOCABULARY_SIZE; k++)
        total += (size_t)vocabulary[k].count;
    uint8_t *order = malloc(total);
    /* 8 bytes per word: up to 5 letters, a punctuation mark and a separator. */
    char *text = malloc(total * 8);
    if (order == NULL || text == NULL) {
        free(order);
        free(text);
        return WEFT_ENOMEM;
    }
    size_t n = 0;
    for (size_t k = 0; k < VOCABULARY_SIZE; k++) {
        for (int i = 0; i < vocabulary[k].count; i++)
            order[n++] = (uint8_t)k;
    }
    uint64_t state = 0x9e3779b97f4a7c15u; /* a fixed seed: the same files every run */
    for (size_t i = n - 1; i > 0; i--) {
        state ^= state << 13; /* xorshift64 */
        state ^= state >> 7;
        state ^= state << 17;
        size_t j = (size_t)(state % (i + 1));
        uint8_t swap = order[i];
        order[i] = order[j];
        order[j] = swap;
    }

    int err = 0;
    size_t start = 0;
    for (int f = 0; f < GENERATED_FILES && err == 0; f++) {
        size_t end = total * (size_t)(f + 1) / GENERATED_FILES;
        size_t len = 0;
        for (size_t i = start; i < end; i++) {
            const char *w = vocabulary[order[i]].word;
            size_t wlen = strlen(w);
            memcpy(text + len, w, wlen);
            if (i % 17 == 0)
                text[len] = (char)(text[len] - 'a' + 'A');
            len += wlen;
            if (i % 11 == 0)
                text[len++] = i % 2 == 0 ? ',' : '.';
            text[len++] = (i - start) % 12 == 11 ? '\n' : ' ';
        }
        snprintf(generated_paths[f], sizeof generated_paths[f], "%s/part%d.txt", temp_dir, f + 1);
        err = weft_file_write_all(ctx, generated_paths[f], text, len);
        start = end;
    }
    free(order);
    free(text);
    *words = total;
    return err;
}

/* Compare m with the vocabulary. Returns 0 or 1 (with a message). */
static int check_generated_counts(const word_map *m)
{
    if (m->size != VOCABULARY_SIZE) {
        fprintf(stderr, "word_count: found %zu distinct words, expected %zu\n", m->size,
                VOCABULARY_SIZE);
        return 1;
    }
    int failed = 0;
    for (size_t k = 0; k < VOCABULARY_SIZE; k++) {
        word_entry *e = map_find_slot(m->slots, m->capacity, vocabulary[k].word);
        if (e->count != (uint64_t)vocabulary[k].count) {
            fprintf(stderr, "word_count: \"%s\" counted %" PRIu64 " times, expected %d\n",
                    vocabulary[k].word, e->count, vocabulary[k].count);
            failed = 1;
        }
    }
    return failed;
}

/* ---- main --------------------------------------------------------------- */

typedef struct options {
    int workers;
    int top;
    char **paths;              /* NULL: generate the input */
    int files;
} options;

/* Count, print and (for generated input) check. Returns 0 or 1. */
static int count_and_report(weft_ctx *ctx, const options *opt, char **paths, int files,
                            bool generated)
{
    int64_t chunks = 0;
    word_map *m = count_files(ctx, paths, files, opt->workers, &chunks);
    if (m == NULL)
        return 1;
    uint64_t total = 0;
    word_entry *sorted = print_top(m, opt->top, &total);
    int failed = sorted == NULL;
    if (failed)
        fprintf(stderr, "word_count: out of memory\n");
    else
        printf("counted %" PRIu64 " words, %zu distinct, in %d file%s (%" PRId64 " chunks) "
               "with %d workers\n", total, m->size, files, files == 1 ? "" : "s", chunks,
               opt->workers);
    if (generated && !failed)
        failed = check_generated_counts(m);
    free(sorted);
    map_free(m);
    return failed;
}

static int app_main(void *arg)
{
    const options *opt = arg;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(60));
    if (ctx == NULL) {
        fprintf(stderr, "word_count: out of memory\n");
        return 1;
    }
    if (opt->paths != NULL) {
        int failed = count_and_report(ctx, opt, opt->paths, opt->files, false);
        weft_ctx_release(ctx);
        return failed;
    }

    int err = run_blocking(ctx, make_temp_dir);
    if (err != 0) {
        fprintf(stderr, "word_count: cannot make a directory from %s: %s\n", temp_dir,
                weft_strerror(err));
        weft_ctx_release(ctx);
        return 1;
    }
    uint64_t words = 0;
    err = write_generated_files(ctx, &words);
    int failed = 1;
    if (err != 0) {
        fprintf(stderr, "word_count: writing the input into %s failed: %s\n", temp_dir,
                weft_strerror(err));
    } else {
        printf("wrote %" PRIu64 " words of %zu kinds into %d files in %s\n", words,
               VOCABULARY_SIZE, GENERATED_FILES, temp_dir);
        char *paths[GENERATED_FILES];
        for (int i = 0; i < GENERATED_FILES; i++)
            paths[i] = generated_paths[i];
        failed = count_and_report(ctx, opt, paths, GENERATED_FILES, true);
    }

    err = run_blocking(ctx, remove_temp_dir);
    if (err != 0) {
        fprintf(stderr, "word_count: removing %s failed: %s\n", temp_dir, weft_strerror(err));
        failed = 1;
    } else {
        printf("removed %s\n", temp_dir);
    }
    weft_ctx_release(ctx);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

/* Parse text as a decimal number in [min, max] into *out. Returns false
 * when it is not one. */
static bool parse_number(const char *text, long min, long max, long *out)
{
    char *end = NULL;
    errno = 0;
    long value = strtol(text, &end, 10);
    if (errno != 0 || end == text || *end != '\0' || value < min || value > max)
        return false;
    *out = value;
    return true;
}

int main(int argc, char **argv)
{
    options opt = { .workers = 4, .top = 10 };
    int c;
    long value;
    while ((c = getopt(argc, argv, "w:k:")) != -1) {
        if (c == 'w' && parse_number(optarg, 1, 64, &value)) {
            opt.workers = (int)value;
        } else if (c == 'k' && parse_number(optarg, 1, 1000, &value)) {
            opt.top = (int)value;
        } else {
            fprintf(stderr, "usage: word_count [-w WORKERS] [-k TOP] [FILE...]\n"
                            "  -w  counting workers, 1 to 64 (default 4)\n"
                            "  -k  how many of the most frequent words to print, 1 to 1000 "
                            "(default 10)\n"
                            "  without files, the program counts and checks a text it writes "
                            "to a temporary directory\n");
            return 2;
        }
    }
    if (optind < argc) {
        opt.paths = argv + optind;
        opt.files = argc - optind;
    }

    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "word_count: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
