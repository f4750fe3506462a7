/*
 * Signal contexts (Go's signal.NotifyContext): weft_ctx_with_signals.
 *
 * While at least one live signal context names a signal, weft's handler
 * is installed for it; the action found before the first one is saved and
 * put back when the last one is released. The handler only marks the
 * signal pending and writes to an eventfd, both async-signal-safe. The
 * runtime's libuv loop thread watches the eventfd, and for each pending
 * signal cancels every live context that names it. A context keeps its
 * signals caught after it has been cancelled, until it is released.
 *
 * The eventfd is made once per process and never closed, because the
 * handler may run at any time, also between two runtimes. A signal that
 * arrives while no runtime runs stays pending until the next one's loop
 * starts.
 *
 * WEFT_DEBUG=dump=sigquit uses the same handler for SIGQUIT: the loop
 * thread then prints weft_dump to stderr and exits with status 2, as a Go
 * program does on SIGQUIT.
 *
 * Lock order: sig_lock, then a context's own locks (cancelling under
 * sig_lock). The release hook runs with no lock held.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "../ctx/ctx_internal.h"
#include "io_internal.h"
#include "weft/debug.h"
#include "weft/error.h"
#include "weft/io.h"

typedef struct sig_record {
    struct sig_record *next;
    struct sig_record *prev;
    weft_ctx *ctx;
    bool linked;                      /* in records; under sig_lock */
    size_t n;
    uint64_t *seen;                   /* delivered[signums[i]] at creation */
    int signums[];
} sig_record;

static int sig_fd = -1;
static pthread_once_t sig_fd_once = PTHREAD_ONCE_INIT;
static _Atomic uint8_t pending[NSIG];
/* Deliveries of each signal so far; a context is cancelled only by a
 * delivery that came after it was made. */
static _Atomic uint64_t delivered[NSIG];

static pthread_mutex_t sig_lock = PTHREAD_MUTEX_INITIALIZER;
static int catchers[NSIG];            /* live contexts naming each signal */
static struct sigaction saved[NSIG];  /* action before the first catcher */
static sig_record *records;           /* live signal contexts */
/* Live signal contexts, for the deadlock detector: a signal may still come. */
_Atomic int64_t weft__signal_contexts;

static _Atomic bool quit_dump;        /* WEFT_DEBUG=dump=sigquit */
static struct sigaction quit_saved;   /* SIGQUIT's action before */

static uv_poll_t sig_poll;            /* loop thread only */
static bool sig_poll_live;

static void make_sig_fd(void)
{
    sig_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
}

static void on_signal(int sig)
{
    int saved_errno = errno;
    atomic_fetch_add(&delivered[sig], 1);
    atomic_store(&pending[sig], 1);
    uint64_t one = 1;
    ssize_t r = write(sig_fd, &one, sizeof one);
    (void)r;
    errno = saved_errno;
}

/* True when sig was delivered since r was made. */
static bool record_hit(const sig_record *r, int sig, uint64_t count)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->signums[i] == sig && count > r->seen[i])
            return true;
    return false;
}

static void on_sig_fd(uv_poll_t *h, int status, int events)
{
    (void)h;
    (void)status;
    (void)events;
    uint64_t value;
    while (read(sig_fd, &value, sizeof value) > 0) {
    }
    if (atomic_load(&quit_dump) && atomic_load(&pending[SIGQUIT])) {
        fputs("SIGQUIT: quit\n\n", stderr);
        weft_dump(stderr);
        fflush(stderr);
        _exit(2);
    }
    for (int sig = 1; sig < NSIG; sig++) {
        if (!atomic_exchange(&pending[sig], 0))
            continue;
        uint64_t count = atomic_load(&delivered[sig]);
        pthread_mutex_lock(&sig_lock);
        for (sig_record *r = records; r; r = r->next)
            if (record_hit(r, sig, count))
                weft_ctx_cancel(r->ctx);
        pthread_mutex_unlock(&sig_lock);
    }
}

int weft__signal_loop_init(uv_loop_t *loop)
{
    pthread_once(&sig_fd_once, make_sig_fd);
    if (sig_fd < 0)
        return WEFT_ENOMEM;
    int err = uv_poll_init(loop, &sig_poll, sig_fd);
    if (err)
        return err;
    err = uv_poll_start(&sig_poll, UV_READABLE, on_sig_fd);
    if (err) {
        uv_close((uv_handle_t *)&sig_poll, NULL);
        return err;
    }
    sig_poll_live = true;
    /* Signals that came while no loop ran. */
    uint64_t one = 1;
    ssize_t r = write(sig_fd, &one, sizeof one);
    (void)r;
    return 0;
}

void weft__signal_loop_close(void)
{
    if (!sig_poll_live)
        return;
    sig_poll_live = false;
    uv_close((uv_handle_t *)&sig_poll, NULL);
}

/* Restore the saved action of every signal r names whose last catcher r
 * is. Under sig_lock. */
static void uncatch(const sig_record *r, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        int sig = r->signums[i];
        if (--catchers[sig] == 0)
            sigaction(sig, &saved[sig], NULL);
    }
}

static void release_record(void *arg)
{
    sig_record *r = arg;
    pthread_mutex_lock(&sig_lock);
    if (r->linked) {
        if (r->prev)
            r->prev->next = r->next;
        else
            records = r->next;
        if (r->next)
            r->next->prev = r->prev;
        uncatch(r, r->n);
        atomic_fetch_sub(&weft__signal_contexts, 1);
    }
    pthread_mutex_unlock(&sig_lock);
    free(r);
}

void weft__signal_quit_dump(bool on)
{
    pthread_once(&sig_fd_once, make_sig_fd);
    if (sig_fd < 0 || on == atomic_load(&quit_dump))
        return;
    if (on) {
        struct sigaction sa;
        sa.sa_handler = on_signal;
        sa.sa_flags = SA_RESTART;
        sigemptyset(&sa.sa_mask);
        if (sigaction(SIGQUIT, &sa, &quit_saved) == 0)
            atomic_store(&quit_dump, true);
    } else {
        atomic_store(&quit_dump, false);
        sigaction(SIGQUIT, &quit_saved, NULL);
    }
}

static bool catchable(int sig)
{
    if (sig <= 0 || sig >= NSIG)
        return false;
    switch (sig) {
    case SIGKILL:
    case SIGSTOP:
    case SIGSEGV:
    case SIGBUS:
    case SIGFPE:
    case SIGILL:
        return false;
    default:
        return true;
    }
}

weft_ctx *weft_ctx_with_signals(weft_ctx *parent, const int *signums, size_t n)
{
    if (!signums || n == 0 || n > NSIG || !atomic_load(&weft__rt.running))
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (!catchable(signums[i]))
            return NULL;
    pthread_once(&sig_fd_once, make_sig_fd);
    if (sig_fd < 0)
        return NULL;

    /* One block: the record, its signal numbers, then the counts seen. */
    size_t ints = (n + 1) & ~(size_t)1;
    sig_record *r = calloc(1, sizeof *r + ints * sizeof(int) + n * sizeof(uint64_t));
    if (!r)
        return NULL;
    r->n = n;
    r->seen = (uint64_t *)(void *)&r->signums[ints];
    for (size_t i = 0; i < n; i++)
        r->signums[i] = signums[i];
    weft_ctx *ctx = weft__ctx_with_release_hook(parent, release_record, r);
    if (!ctx) {
        free(r);
        return NULL;
    }
    r->ctx = ctx;

    struct sigaction sa;
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    pthread_mutex_lock(&sig_lock);
    for (size_t i = 0; i < n; i++) {
        int sig = signums[i];
        r->seen[i] = atomic_load(&delivered[sig]);
        if (catchers[sig]++ == 0 && sigaction(sig, &sa, &saved[sig]) != 0) {
            catchers[sig]--;
            uncatch(r, i);
            pthread_mutex_unlock(&sig_lock);
            /* Not linked, so the release hook only frees r. */
            weft_ctx_release(ctx);
            return NULL;
        }
    }
    r->next = records;
    if (records)
        records->prev = r;
    records = r;
    r->linked = true;
    atomic_fetch_add(&weft__signal_contexts, 1);
    pthread_mutex_unlock(&sig_lock);
    return ctx;
}
