/*
 * port_check: a concurrent TCP port check of a range of ports on
 * 127.0.0.1, bounded by an error group's limit and a semaphore.
 *
 * The program first listens on three ports of the range itself, spread
 * over it, so the result is known: those three must show as open. A
 * coroutine per listener accepts the probes' connections and closes them.
 *
 * Then every port of the range gets a probe, a task in a weft_group:
 *
 * - weft_group_set_limit caps how many probe coroutines exist at once
 *   (16), and weft_group_go waits while the cap is reached. That bounds
 *   memory however long the range is.
 * - A weft_sem of size 4 caps how many dials are in flight at once, which
 *   is the number of sockets the check holds. A probe acquires it before
 *   its dial and releases it after.
 * - Each dial runs under a child of the group's context with a 500 ms
 *   timeout. A port that accepts is open, one that refuses is closed, and
 *   one that does not respond in time is reported as timed out. On
 *   loopback a closed port refuses at once.
 * - Any other error (for example EMFILE) fails the probe's task. The
 *   group then cancels its context, and the probes still waiting stop
 *   early.
 *
 * Closing the listeners at the end makes their accept loops return
 * WEFT_ECLOSED. The program checks that its own ports were found open and
 * that no more than 4 dials ever ran at once. Another program listening
 * in the range shows as an extra open port, so for a known output pick a
 * quiet range below the ephemeral ports (32768 and up on Linux).
 *
 * Usage: port_check [FIRST LAST]   (default 23450 23513; 5 to 1024 ports)
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <weft.h>

#define OWN_LISTENERS 3
#define MAX_PROBES 16          /* the group's limit */
#define MAX_DIALS 4            /* the semaphore's size */
#define DIAL_TIMEOUT WEFT_MS(500)

typedef enum port_state { PORT_UNCHECKED, PORT_OPEN, PORT_CLOSED, PORT_TIMED_OUT } port_state;

typedef struct scan {
    weft_sem dials;
    weft_atomic_i32 in_flight;
    weft_atomic_i32 max_in_flight;
} scan;

typedef struct probe {
    scan *scan;
    int port;
    port_state state;
} probe;

static void store_max(weft_atomic_i32 *max, int32_t value)
{
    int32_t seen = weft_atomic_i32_load(max);
    while (value > seen && !weft_atomic_i32_cas(max, seen, value))
        seen = weft_atomic_i32_load(max);
}

/* A weft_task: dial one port and record its state. Returns 0, or an error
 * that is neither a refusal nor a timeout, which cancels the group. */
static int probe_port(weft_ctx *ctx, void *arg)
{
    probe *p = arg;
    scan *s = p->scan;

    int err = weft_sem_acquire(ctx, &s->dials, 1);
    if (err != 0)
        return err;
    store_max(&s->max_in_flight, weft_atomic_i32_add(&s->in_flight, 1));

    weft_ctx *dial_ctx = weft_ctx_with_timeout(ctx, DIAL_TIMEOUT);
    weft_conn *conn = NULL;
    err = dial_ctx != NULL ? weft_tcp_dial(dial_ctx, "127.0.0.1", p->port, &conn) : WEFT_ENOMEM;
    weft_conn_close(conn);
    weft_ctx_release(dial_ctx);

    weft_atomic_i32_add(&s->in_flight, -1);
    weft_sem_release(&s->dials, 1);

    if (err == 0) {
        p->state = PORT_OPEN;
    } else if (err == -ECONNREFUSED) {
        p->state = PORT_CLOSED;
    } else if (err == WEFT_ETIMEDOUT && weft_ctx_err(ctx) == 0) {
        p->state = PORT_TIMED_OUT; /* the dial's own timeout, not the group's end */
    } else {
        if (err != WEFT_ECANCELED)
            fprintf(stderr, "port_check: probe of port %d failed: %s\n", p->port,
                    weft_strerror(err));
        return err;
    }
    return 0;
}

/* ---- the program's own listeners ---------------------------------------- */

typedef struct own_listener {
    weft_listener *listener;
    int port;
    weft_wg *running;
} own_listener;

/* Accept the probes' connections and close them, until the listener is
 * closed. */
static void accept_probes(void *arg)
{
    own_listener *o = arg;
    for (;;) {
        weft_conn *conn = NULL;
        int err = weft_tcp_accept(NULL, o->listener, &conn);
        if (err == WEFT_ECLOSED)
            break;
        if (err != 0) {
            fprintf(stderr, "port_check: accept on port %d failed: %s\n", o->port,
                    weft_strerror(err));
            break;
        }
        weft_conn_close(conn);
    }
    weft_wg_done(o->running);
}

/* Listen on each o[i].port and start its accept loop. Returns 0, or 1
 * after closing what was opened. */
static int open_listeners(own_listener *own, int n, weft_wg *running)
{
    for (int i = 0; i < n; i++) {
        int err = weft_tcp_listen("127.0.0.1", own[i].port, 0, &own[i].listener);
        if (err == 0) {
            own[i].running = running;
            weft_wg_add(running, 1);
            err = weft_go(accept_probes, &own[i]);
            if (err != 0)
                weft_wg_done(running);
        }
        if (err != 0) {
            fprintf(stderr, "port_check: cannot listen on 127.0.0.1:%d: %s%s\n", own[i].port,
                    weft_strerror(err),
                    err == -EADDRINUSE ? "; choose a range no other program uses" : "");
            for (int j = 0; j <= i; j++) {
                if (own[j].listener != NULL)
                    weft_listener_close(own[j].listener);
            }
            weft_wg_wait(running);
            return 1;
        }
    }
    return 0;
}

/* ---- main --------------------------------------------------------------- */

typedef struct options {
    int first;
    int last;
} options;

/* Run a probe task for each of probes[0..count) in an error group. Returns
 * the group's first error, or 0. */
static int check_ports(weft_ctx *ctx, probe *probes, int count)
{
    weft_group *g = weft_group_make(ctx);
    if (g == NULL)
        return WEFT_ENOMEM;
    int err = weft_group_set_limit(g, MAX_PROBES);
    for (int i = 0; i < count && err == 0; i++)
        err = weft_group_go(g, probe_port, &probes[i]);
    if (err != 0)
        weft_ctx_cancel(weft_group_ctx(g)); /* stop the probes already started */
    int first_err = weft_group_wait(g);
    weft_group_release(g);
    return err != 0 ? err : first_err;
}

static int app_main(void *arg)
{
    const options *opt = arg;
    int count = opt->last - opt->first + 1;
    int span = opt->last - opt->first;

    own_listener own[OWN_LISTENERS];
    for (int i = 0; i < OWN_LISTENERS; i++)
        own[i] = (own_listener){ .port = opt->first + span * (i + 1) / (OWN_LISTENERS + 1) };
    weft_wg running = {0};
    if (open_listeners(own, OWN_LISTENERS, &running) != 0)
        return 1;
    printf("listening on 127.0.0.1 ports");
    for (int i = 0; i < OWN_LISTENERS; i++)
        printf(" %d", own[i].port);
    printf("\n");

    scan s = {0};
    probe *probes = calloc((size_t)count, sizeof *probes);
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(30));
    int err = weft_sem_init(&s.dials, MAX_DIALS);
    if (probes == NULL || ctx == NULL)
        err = WEFT_ENOMEM;
    if (err == 0) {
        for (int i = 0; i < count; i++)
            probes[i] = (probe){ .scan = &s, .port = opt->first + i };
        err = check_ports(ctx, probes, count);
    }
    weft_ctx_release(ctx);

    for (int i = 0; i < OWN_LISTENERS; i++)
        weft_listener_close(own[i].listener);
    weft_wg_wait(&running);

    if (err != 0) {
        fprintf(stderr, "port_check: the check failed: %s\n", weft_strerror(err));
        free(probes);
        return 1;
    }

    int open = 0;
    int closed = 0;
    int timed_out = 0;
    for (int i = 0; i < count; i++) {
        open += probes[i].state == PORT_OPEN;
        closed += probes[i].state == PORT_CLOSED;
        timed_out += probes[i].state == PORT_TIMED_OUT;
    }
    printf("checked ports %d-%d on 127.0.0.1 with at most %d probes and %d dials at once\n",
           opt->first, opt->last, MAX_PROBES, MAX_DIALS);
    printf("open: %d of %d:", open, count);
    for (int i = 0; i < count; i++) {
        if (probes[i].state == PORT_OPEN)
            printf(" %d", probes[i].port);
    }
    printf("\nclosed: %d, timed out: %d\n", closed, timed_out);

    int failed = 0;
    for (int i = 0; i < OWN_LISTENERS; i++) {
        if (probes[own[i].port - opt->first].state != PORT_OPEN) {
            fprintf(stderr, "port_check: own listener on port %d was not found open\n",
                    own[i].port);
            failed = 1;
        }
    }
    if (open > OWN_LISTENERS)
        printf("%d of the open ports belong to other programs\n", open - OWN_LISTENERS);
    int32_t max_in_flight = weft_atomic_i32_load(&s.max_in_flight);
    if (max_in_flight > MAX_DIALS) {
        fprintf(stderr, "port_check: %" PRId32 " dials ran at once, above the limit of %d\n",
                max_in_flight, MAX_DIALS);
        failed = 1;
    }
    free(probes);
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
    long first = 23450;
    long last = 23513;
    if (argc != 1 && (argc != 3 || !parse_number(argv[1], 1, 65535, &first) ||
                      !parse_number(argv[2], 1, 65535, &last) || last - first < 4 ||
                      last - first >= 1024)) {
        fprintf(stderr, "usage: port_check [FIRST LAST]\n"
                        "  FIRST, LAST  the range of TCP ports on 127.0.0.1 to check, 5 to 1024\n"
                        "               ports between 1 and 65535 (default 23450 23513)\n");
        return 2;
    }
    options opt = { .first = (int)first, .last = (int)last };
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "port_check: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
