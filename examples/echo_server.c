/*
 * echo_server: a TCP echo server with one coroutine per connection and a
 * graceful shutdown on SIGINT or SIGTERM.
 *
 * The accept loop waits under a context from weft_ctx_with_signals, so
 * the first SIGINT or SIGTERM ends the wait. The server then shuts down
 * in three steps:
 *
 * 1. It closes the listener, so new connections are refused.
 * 2. It gives the open connections until a drain deadline (-g) to finish,
 *    which an echo connection does when its client closes it. A weft_wg
 *    counts them, and a second signal ends the drain at once.
 * 3. It cancels the connections still open at the deadline. Their
 *    coroutines return from the read or write they wait in, close their
 *    connection and leave the wait group.
 *
 * The process then exits with status 0. With -t the server also shuts
 * down by itself after the given time, as if it had received a signal.
 *
 * Without a port, the program tests itself. It serves on a free port,
 * runs 4 clients of its own that each echo 50 messages, then opens one
 * more connection and sends SIGTERM to its own process. While the server
 * drains, the program checks that a new connection is refused and that
 * the open one is still served. When that client closes, the server exits.
 *
 * Usage: echo_server [-g GRACE_MS] [-t RUN_MS] [PORT]
 *   PORT       serve on 127.0.0.1:PORT until SIGINT or SIGTERM (0: a free port)
 *   no PORT    test itself as described above (takes well under a second)
 *   -g MS      drain deadline after the first signal (default 5000)
 *   -t MS      shut down after MS milliseconds even without a signal
 * Try: echo_server 0, then `echo_client 127.0.0.1 PORT` and Ctrl-C.
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft.h>

static const int shutdown_signals[] = { SIGINT, SIGTERM };
#define N_SHUTDOWN_SIGNALS (sizeof shutdown_signals / sizeof shutdown_signals[0])

typedef struct server {
    weft_listener *listener;
    int port;
    /* Parent of every connection's reads and writes, canceled at the
     * drain deadline. */
    weft_ctx *conns_ctx;
    weft_wg conns;             /* one count per connection coroutine */
    weft_chan *draining;       /* closed when the shutdown starts */
    weft_atomic_i32 open;      /* connections being served */
    weft_atomic_i64 accepted;
    weft_atomic_i64 bytes;     /* bytes echoed over all connections */
    weft_atomic_i32 cut;       /* connections canceled when the drain ended */
    weft_atomic_i32 failed;    /* connections ended by an I/O error */
} server;

typedef struct connection {
    server *srv;
    weft_conn *conn;
    int64_t id;
} connection;

/* Echo everything the peer sends until it closes its side, an error
 * occurs or srv->conns_ctx ends. */
static void serve_connection(void *arg)
{
    connection *c = arg;
    server *srv = c->srv;
    char buf[16384];

    for (;;) {
        ssize_t n = weft_conn_read(srv->conns_ctx, c->conn, buf, sizeof buf);
        int err = 0;
        if (n > 0)
            err = weft_conn_write(srv->conns_ctx, c->conn, buf, (size_t)n);
        else
            err = (int)n;
        if (err == 0 && n > 0) {
            weft_atomic_i64_add(&srv->bytes, n);
            continue;
        }
        if (err == WEFT_ECANCELED || err == WEFT_ETIMEDOUT) {
            weft_atomic_i32_add(&srv->cut, 1);
        } else if (err != 0) {
            char peer[WEFT_ADDR_STRLEN] = "unknown peer";
            weft_addr addr;
            if (weft_conn_peer_addr(c->conn, &addr) == 0)
                weft_addr_format(&addr, peer, sizeof peer);
            fprintf(stderr, "echo_server: connection %" PRId64 " from %s failed: %s\n", c->id,
                    peer, weft_strerror(err));
            weft_atomic_i32_add(&srv->failed, 1);
        }
        break;
    }

    weft_conn_close(c->conn);
    weft_atomic_i32_add(&srv->open, -1);
    weft_wg_done(&srv->conns);
    free(c);
}

/* Accept connections until stop ends or the listener fails, and start a
 * coroutine for each. Returns 0 when stop ended, else the error. */
static int accept_loop(server *srv, weft_ctx *stop)
{
    for (;;) {
        weft_conn *conn = NULL;
        int err = weft_tcp_accept(stop, srv->listener, &conn);
        if (err != 0) {
            if (weft_ctx_err(stop) != 0)
                return 0;
            if (err == WEFT_ECLOSED)
                return err;
            /* For example EMFILE: the listener keeps working, so wait a
             * little for descriptors to be freed instead of spinning. */
            fprintf(stderr, "echo_server: accept failed: %s, retrying in 10 ms\n",
                    weft_strerror(err));
            weft_sleep_ctx(stop, WEFT_MS(10));
            continue;
        }

        connection *c = malloc(sizeof *c);
        if (c == NULL) {
            fprintf(stderr, "echo_server: out of memory, so a new connection was closed\n");
            weft_conn_close(conn);
            continue;
        }
        *c = (connection){ .srv = srv, .conn = conn,
                           .id = weft_atomic_i64_add(&srv->accepted, 1) };
        weft_atomic_i32_add(&srv->open, 1);
        weft_wg_add(&srv->conns, 1);
        err = weft_go(serve_connection, c);
        if (err != 0) {
            fprintf(stderr, "echo_server: weft_go failed: %s, so connection %" PRId64 " was closed\n",
                    weft_strerror(err), c->id);
            weft_conn_close(conn);
            weft_atomic_i32_add(&srv->open, -1);
            weft_wg_done(&srv->conns);
            free(c);
        }
    }
}

typedef struct drain_waiter {
    weft_wg *conns;
    weft_chan *finished;       /* closed when every connection is done */
} drain_waiter;

static void wait_for_connections(void *arg)
{
    drain_waiter *w = arg;
    weft_wg_wait(w->conns);
    weft_chan_close(w->finished);
}

/* Stop accepting, give open connections until grace ns to finish, then
 * cancel the rest and wait for them. Returns 0 or an error code. */
static int shut_down(server *srv, int64_t grace)
{
    weft_listener_close(srv->listener);
    srv->listener = NULL;
    int open = weft_atomic_i32_load(&srv->open);
    printf("shutting down: stopped accepting, waiting up to %" PRId64 " ms for %d open "
           "connection%s\n", grace / WEFT_MS(1), open, open == 1 ? "" : "s");
    weft_chan_close(srv->draining);

    /* The drain ends at the deadline or at a second signal. */
    weft_ctx *deadline = weft_ctx_with_timeout(NULL, grace);
    weft_ctx *drain = deadline != NULL
        ? weft_ctx_with_signals(deadline, shutdown_signals, N_SHUTDOWN_SIGNALS) : NULL;
    weft_chan *finished = weft_chan_make(0, 0);
    if (drain == NULL || finished == NULL) {
        fprintf(stderr, "echo_server: cannot set up the drain (out of memory), so the open "
                "connections are canceled now\n");
        weft_ctx_cancel(srv->conns_ctx);
        weft_wg_wait(&srv->conns);
        weft_ctx_release(drain);
        weft_ctx_release(deadline);
        weft_chan_release(finished);
        return WEFT_ENOMEM;
    }

    drain_waiter waiter = { .conns = &srv->conns, .finished = finished };
    int err = weft_go(wait_for_connections, &waiter);
    if (err != 0) {
        weft_ctx_cancel(srv->conns_ctx);
        weft_wg_wait(&srv->conns);
    } else {
        weft_case cases[] = {
            WEFT_RECV_CASE(finished, NULL),
            WEFT_RECV_CASE(weft_ctx_done(drain), NULL),
        };
        if (weft_select(cases, 2) == 0) {
            printf("all open connections finished\n");
        } else {
            const char *reason = weft_ctx_err(deadline) != 0 ? "drain deadline passed"
                                                              : "second signal";
            open = weft_atomic_i32_load(&srv->open);
            printf("%s: canceling %d open connection%s\n", reason, open, open == 1 ? "" : "s");
            weft_ctx_cancel(srv->conns_ctx);
            weft_chan_recv(finished, NULL);
        }
    }
    weft_ctx_release(drain);
    weft_ctx_release(deadline);
    weft_chan_release(finished);
    return err;
}

/* ---- the self-test's clients -------------------------------------------- */

#define SELF_TEST_CLIENTS 4
#define SELF_TEST_MESSAGES 50

/* Send msg and read the same bytes back. Returns 0, an I/O error, or
 * WEFT_EINVAL when the echo differs. */
static int echo_once(weft_ctx *ctx, weft_conn *conn, const char *msg)
{
    size_t len = strlen(msg);
    char reply[256];
    if (len > sizeof reply)
        return WEFT_EINVAL;
    int err = weft_conn_write(ctx, conn, msg, len);
    if (err != 0)
        return err;
    for (size_t got = 0; got < len;) {
        ssize_t n = weft_conn_read(ctx, conn, reply + got, len - got);
        if (n == 0)
            return -ECONNRESET; /* the server closed too early */
        if (n < 0)
            return (int)n;
        got += (size_t)n;
    }
    return memcmp(reply, msg, len) == 0 ? 0 : WEFT_EINVAL;
}

typedef struct client {
    weft_ctx *ctx;
    int port;
    int id;
    int err;
    const char *step;          /* what failed, for the message */
    weft_wg *wg;
} client;

static void run_client(void *arg)
{
    client *cl = arg;
    weft_conn *conn = NULL;
    cl->step = "dial";
    cl->err = weft_tcp_dial(cl->ctx, "127.0.0.1", cl->port, &conn);
    for (int i = 0; cl->err == 0 && i < SELF_TEST_MESSAGES; i++) {
        char msg[64];
        snprintf(msg, sizeof msg, "client %d, message %d\n", cl->id, i);
        cl->step = "echo";
        cl->err = echo_once(cl->ctx, conn, msg);
    }
    weft_conn_close(conn);
    weft_wg_done(cl->wg);
}

typedef struct self_test {
    server *srv;
    weft_ctx *ctx;             /* bounds the whole test; canceled on failure */
    int failed;
    weft_wg done;
} self_test;

/* Print what failed and return 1, or return 0 when err is 0. */
static int report(const char *what, int err)
{
    if (err == 0)
        return 0;
    fprintf(stderr, "echo_server: self-test: %s failed: %s\n", what, weft_strerror(err));
    return 1;
}

/* Run the clients at once and wait for them. Returns 0 or 1 (failed). */
static int run_clients(self_test *t)
{
    weft_wg wg = {0};
    client clients[SELF_TEST_CLIENTS];
    int started = 0;
    int failed = 0;
    for (int i = 0; i < SELF_TEST_CLIENTS; i++) {
        clients[i] = (client){ .ctx = t->ctx, .port = t->srv->port, .id = i, .wg = &wg };
        weft_wg_add(&wg, 1);
        int err = weft_go(run_client, &clients[i]);
        if (err != 0) {
            weft_wg_done(&wg);
            failed |= report("weft_go", err);
            break;
        }
        started++;
    }
    weft_wg_wait(&wg);
    for (int i = 0; i < started; i++)
        failed |= report(clients[i].step, clients[i].err);
    if (!failed)
        printf("%d clients echoed %d messages each\n", SELF_TEST_CLIENTS, SELF_TEST_MESSAGES);
    return failed;
}

/* With conn open, send SIGTERM to this process, wait for the shutdown to
 * start, and check that a new connection is refused while conn is still
 * served. Returns 0 or 1 (failed). */
static int check_shutdown(self_test *t, weft_conn *conn)
{
    server *srv = t->srv;
    printf("sending SIGTERM with 1 connection open\n");
    if (kill(getpid(), SIGTERM) != 0)
        return report("kill", -errno);

    weft_case cases[] = {
        WEFT_RECV_CASE(srv->draining, NULL),
        WEFT_RECV_CASE(weft_ctx_done(t->ctx), NULL),
    };
    if (weft_select(cases, 2) != 0)
        return report("waiting for the shutdown", weft_ctx_err(t->ctx));

    int failed = 0;
    weft_conn *late = NULL;
    int err = weft_tcp_dial(t->ctx, "127.0.0.1", srv->port, &late);
    weft_conn_close(late);
    if (err == -ECONNREFUSED) {
        printf("a new connection was refused during the shutdown\n");
    } else {
        fprintf(stderr, "echo_server: self-test: a dial during the shutdown returned %s, "
                "expected ECONNREFUSED\n", weft_err_name(err));
        failed = 1;
    }

    err = echo_once(t->ctx, conn, "after the signal\n");
    if (err == 0)
        printf("the open connection still echoed after SIGTERM\n");
    return failed | report("the open connection after the signal", err);
}

static void drive_self_test(void *arg)
{
    self_test *t = arg;

    t->failed = run_clients(t);
    if (!t->failed) {
        /* One connection stays open across the signal. Closing it at the
         * end lets the drain finish. */
        weft_conn *conn = NULL;
        int err = weft_tcp_dial(t->ctx, "127.0.0.1", t->srv->port, &conn);
        if (err == 0)
            err = echo_once(t->ctx, conn, "before the signal\n");
        t->failed = report("the connection opened before the signal", err);
        if (!t->failed)
            t->failed = check_shutdown(t, conn);
        weft_conn_close(conn);
    }

    /* Stop the server without waiting for a signal or the drain deadline. */
    if (t->failed) {
        weft_ctx_cancel(t->ctx);
        weft_ctx_cancel(t->srv->conns_ctx);
    }
    weft_wg_done(&t->done);
}

/* ---- main --------------------------------------------------------------- */

typedef struct options {
    int port;                  /* -1: self-test */
    int64_t grace;
    int64_t run_for;           /* 0: until a signal */
} options;

/* Serve until a signal, the -t time or the end of the self-test, then shut
 * down. Returns 0 or an error code. */
static int run_server(server *srv, const options *opt, self_test *test)
{
    /* Cancellation flows down: the self-test's context, then the run
     * time, then the signals, and the accept loop waits on the last. */
    weft_ctx *parent = test != NULL ? test->ctx : NULL;
    weft_ctx *run_ctx = NULL;
    if (opt->run_for > 0) {
        run_ctx = weft_ctx_with_timeout(parent, opt->run_for);
        if (run_ctx == NULL)
            return WEFT_ENOMEM;
    }
    weft_ctx *stop = weft_ctx_with_signals(run_ctx != NULL ? run_ctx : parent, shutdown_signals,
                                           N_SHUTDOWN_SIGNALS);
    if (stop == NULL) {
        fprintf(stderr, "echo_server: cannot catch SIGINT and SIGTERM: "
                "weft_ctx_with_signals failed\n");
        weft_ctx_release(run_ctx);
        return WEFT_ENOMEM;
    }

    printf("listening on 127.0.0.1:%d\n", srv->port);
    fflush(stdout);

    if (test != NULL) {
        weft_wg_add(&test->done, 1);
        int err = weft_go(drive_self_test, test);
        if (err != 0) {
            weft_wg_done(&test->done);
            test->failed |= report("weft_go", err);
            weft_ctx_cancel(stop);
        }
    }

    int err = accept_loop(srv, stop);
    if (err != 0)
        fprintf(stderr, "echo_server: the listener failed: %s\n", weft_strerror(err));
    else if (weft_ctx_err(parent) != 0)
        printf("the self-test stopped the server\n");
    else if (weft_ctx_err(run_ctx) != 0)
        printf("run time of %" PRId64 " ms is over\n", opt->run_for / WEFT_MS(1));
    else
        printf("received SIGINT or SIGTERM\n");

    /* The first signal context lives until the drain is over, so a second
     * signal never meets the default action, which would kill the
     * process. */
    int shutdown_err = shut_down(srv, opt->grace);
    weft_ctx_release(stop);
    weft_ctx_release(run_ctx);
    if (test != NULL)
        weft_wg_wait(&test->done);
    return err != 0 ? err : shutdown_err;
}

static int app_main(void *arg)
{
    const options *opt = arg;
    server srv = {0};
    self_test test = {0};

    int err = weft_tcp_listen("127.0.0.1", opt->port < 0 ? 0 : opt->port, 0, &srv.listener);
    if (err != 0) {
        fprintf(stderr, "echo_server: cannot listen on 127.0.0.1:%d: %s\n",
                opt->port < 0 ? 0 : opt->port, weft_strerror(err));
        return 1;
    }
    srv.port = weft_listener_port(srv.listener);
    srv.conns_ctx = weft_ctx_with_cancel(NULL);
    srv.draining = weft_chan_make(0, 0);
    if (opt->port < 0) {
        test.srv = &srv;
        test.ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(20));
    }
    if (srv.conns_ctx == NULL || srv.draining == NULL || (opt->port < 0 && test.ctx == NULL)) {
        fprintf(stderr, "echo_server: out of memory\n");
        err = WEFT_ENOMEM;
    } else {
        err = run_server(&srv, opt, opt->port < 0 ? &test : NULL);
    }

    int64_t accepted = weft_atomic_i64_load(&srv.accepted);
    printf("served %" PRId64 " connection%s, echoed %" PRId64 " bytes, canceled %d, failed %d\n",
           accepted, accepted == 1 ? "" : "s", weft_atomic_i64_load(&srv.bytes),
           weft_atomic_i32_load(&srv.cut), weft_atomic_i32_load(&srv.failed));
    if (srv.listener != NULL)
        weft_listener_close(srv.listener);
    weft_ctx_release(srv.conns_ctx);
    weft_chan_release(srv.draining);
    weft_ctx_release(test.ctx);

    if (err != 0) {
        fprintf(stderr, "echo_server: %s\n", weft_strerror(err));
        return 1;
    }
    if (opt->port < 0) {
        if (test.failed || weft_atomic_i32_load(&srv.cut) != 0 ||
            weft_atomic_i32_load(&srv.failed) != 0)
            return 1;
        printf("ok\n");
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_server [-g GRACE_MS] [-t RUN_MS] [PORT]\n"
                    "  PORT     TCP port on 127.0.0.1 from 0 to 65535 (0: a free port);\n"
                    "           without it the program tests itself\n"
                    "  -g MS    drain deadline after the first signal, 1 to 3600000 (default 5000)\n"
                    "  -t MS    shut down after MS milliseconds, 1 to 86400000 (default: never)\n");
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
    options opt = { .port = -1, .grace = WEFT_MS(5000) };
    int c;
    long value;
    while ((c = getopt(argc, argv, "g:t:")) != -1) {
        if (c == 'g' && parse_number(optarg, 1, 3600000, &value)) {
            opt.grace = WEFT_MS(value);
        } else if (c == 't' && parse_number(optarg, 1, 86400000, &value)) {
            opt.run_for = WEFT_MS(value);
        } else {
            usage();
            return 2;
        }
    }
    if (argc - optind > 1 || (argc - optind == 1 && !parse_number(argv[optind], 0, 65535, &value))) {
        usage();
        return 2;
    }
    if (argc - optind == 1)
        opt.port = (int)value;

    /* Lines reach a pipe or a file at once, so a script can read the port. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "echo_server: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
