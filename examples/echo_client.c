/*
 * echo_client: a TCP client that sends messages to an echo server and
 * checks each echo byte for byte, under a timeout.
 *
 * One connection is used by two coroutines at once: a writer sends the
 * messages and then closes its side with weft_conn_close_write, while a
 * reader reads each message back and compares it with what was sent.
 * The reader takes the echoes as they come. A client that wrote
 * everything before reading could fill both sides' socket buffers and
 * then wait forever with a server that echoes as it reads. After the last
 * message the reader expects end of stream, which the server sends once
 * it has read the writer's end of stream.
 *
 * Every call runs under one context with a timeout (-t), so the program
 * ends even when the server never responds. When the reader finds a wrong
 * byte, it cancels the context, which stops the writer too.
 *
 * Message i is 1 to 4096 bytes long, and its bytes depend on i and their
 * offset, so a byte lost, repeated or swapped between messages shows.
 *
 * Without HOST and PORT, the program starts an echo server of its own on a
 * free port of 127.0.0.1, in coroutines of the same process, and talks to
 * that.
 *
 * Usage: echo_client [-n MESSAGES] [-t TIMEOUT_MS] [HOST PORT]
 *   HOST PORT  the echo server, for example 127.0.0.1 and the port that
 *              echo_server printed
 *   -n         messages to send, 1 to 1000000 (default 100)
 *   -t         timeout for the whole run in ms, 1 to 3600000 (default 10000)
 */
#define _POSIX_C_SOURCE 200809L
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <weft.h>

#define MAX_MESSAGE 4096

/* Fill buf with message i and return its length. */
static size_t make_message(int i, unsigned char *buf)
{
    size_t len = 1 + (size_t)((uint64_t)i * 7919 % MAX_MESSAGE);
    for (size_t j = 0; j < len; j++)
        buf[j] = (unsigned char)((uint32_t)i * 131 + j * 7 + (j >> 8));
    return len;
}

typedef struct session {
    weft_ctx *ctx;             /* canceled when either side fails */
    weft_conn *conn;
    int messages;
    int write_err;
    weft_wg writer_done;
} session;

static void write_messages(void *arg)
{
    session *s = arg;
    unsigned char buf[MAX_MESSAGE];
    int err = 0;
    for (int i = 0; i < s->messages && err == 0; i++) {
        size_t len = make_message(i, buf);
        err = weft_conn_write(s->ctx, s->conn, buf, len);
    }
    /* The server reads end of stream and closes its side in turn. */
    if (err == 0)
        err = weft_conn_close_write(s->conn);
    s->write_err = err;
    if (err != 0)
        weft_ctx_cancel(s->ctx);
    weft_wg_done(&s->writer_done);
}

/* Read exactly len bytes. Returns 0, an error, or WEFT_ECLOSED when the
 * stream ended first. */
static int read_full(weft_ctx *ctx, weft_conn *conn, unsigned char *buf, size_t len)
{
    for (size_t got = 0; got < len;) {
        ssize_t n = weft_conn_read(ctx, conn, buf + got, len - got);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return WEFT_ECLOSED;
        got += (size_t)n;
    }
    return 0;
}

/* Read every echo back and compare it. Returns 0 or 1 (failed, with a
 * message printed), and adds the bytes checked to *bytes. */
static int check_echoes(session *s, uint64_t *bytes)
{
    unsigned char expected[MAX_MESSAGE];
    unsigned char got[MAX_MESSAGE];
    for (int i = 0; i < s->messages; i++) {
        size_t len = make_message(i, expected);
        int err = read_full(s->ctx, s->conn, got, len);
        if (err == WEFT_ECLOSED) {
            fprintf(stderr, "echo_client: the server ended the stream in message %d of %d\n",
                    i + 1, s->messages);
            return 1;
        }
        if (err != 0) {
            fprintf(stderr, "echo_client: reading message %d of %d failed: %s\n", i + 1,
                    s->messages, weft_strerror(err));
            return 1;
        }
        for (size_t j = 0; j < len; j++) {
            if (got[j] != expected[j]) {
                fprintf(stderr, "echo_client: message %d differs at byte %zu of %zu: "
                        "sent 0x%02x, received 0x%02x\n", i + 1, j, len, expected[j], got[j]);
                return 1;
            }
        }
        *bytes += len;
    }

    /* After the last echo the server closes its side: nothing else may come. */
    ssize_t n = weft_conn_read(s->ctx, s->conn, got, sizeof got);
    if (n != 0) {
        if (n > 0)
            fprintf(stderr, "echo_client: the server sent %zd bytes more than it was sent\n", n);
        else
            fprintf(stderr, "echo_client: waiting for the end of the stream failed: %s\n",
                    weft_strerror((int)n));
        return 1;
    }
    return 0;
}

/* Send the messages over a new connection to host:port and check the
 * echoes. Returns 0 or 1 (failed, with a message printed). */
static int run_client(weft_ctx *ctx, const char *host, int port, int messages)
{
    session s = { .messages = messages };
    s.ctx = weft_ctx_with_cancel(ctx);
    if (s.ctx == NULL) {
        fprintf(stderr, "echo_client: out of memory\n");
        return 1;
    }
    int err = weft_tcp_dial(s.ctx, host, port, &s.conn);
    if (err != 0) {
        fprintf(stderr, "echo_client: cannot connect to %s port %d: %s\n", host, port,
                weft_strerror(err));
        weft_ctx_release(s.ctx);
        return 1;
    }
    char peer[WEFT_ADDR_STRLEN] = "?";
    weft_addr addr;
    if (weft_conn_peer_addr(s.conn, &addr) == 0)
        weft_addr_format(&addr, peer, sizeof peer);

    int64_t start = weft_now();
    weft_wg_add(&s.writer_done, 1);
    err = weft_go(write_messages, &s);
    if (err != 0) {
        fprintf(stderr, "echo_client: weft_go failed: %s\n", weft_strerror(err));
        weft_conn_close(s.conn);
        weft_ctx_release(s.ctx);
        return 1;
    }

    uint64_t bytes = 0;
    int failed = check_echoes(&s, &bytes);
    if (failed)
        weft_ctx_cancel(s.ctx);
    weft_wg_wait(&s.writer_done);
    int64_t elapsed = weft_now() - start;

    /* A failed write ends the reader through the canceled context, so
     * report the write error instead of the reader's ECANCELED. */
    if (s.write_err != 0 && s.write_err != WEFT_ECANCELED) {
        fprintf(stderr, "echo_client: writing failed: %s\n", weft_strerror(s.write_err));
        failed = 1;
    }
    if (failed && weft_ctx_err(ctx) == WEFT_ETIMEDOUT)
        fprintf(stderr, "echo_client: the run timed out\n");
    weft_conn_close(s.conn);
    weft_ctx_release(s.ctx);
    if (failed)
        return 1;
    printf("echoed %d messages (%" PRIu64 " bytes) through %s byte for byte in %.1f ms\n",
           messages, bytes, peer, (double)elapsed / 1e6);
    return 0;
}

/* ---- the built-in echo server ------------------------------------------- */

typedef struct local_server {
    weft_listener *listener;
    weft_ctx *ctx;
    weft_wg running;           /* the accept loop and each connection */
} local_server;

typedef struct echo_task {
    local_server *srv;
    weft_conn *conn;
} echo_task;

static void echo_connection(void *arg)
{
    echo_task *t = arg;
    char buf[8192];
    for (;;) {
        ssize_t n = weft_conn_read(t->srv->ctx, t->conn, buf, sizeof buf);
        if (n <= 0 || weft_conn_write(t->srv->ctx, t->conn, buf, (size_t)n) != 0)
            break;
    }
    weft_conn_close(t->conn);
    weft_wg_done(&t->srv->running);
    free(t);
}

/* Accept until the listener is closed. */
static void accept_connections(void *arg)
{
    local_server *srv = arg;
    for (;;) {
        weft_conn *conn = NULL;
        int err = weft_tcp_accept(srv->ctx, srv->listener, &conn);
        if (err != 0) {
            if (err != WEFT_ECLOSED)
                fprintf(stderr, "echo_client: the built-in server stopped: %s\n",
                        weft_strerror(err));
            break;
        }
        echo_task *t = malloc(sizeof *t);
        if (t == NULL) {
            weft_conn_close(conn);
            continue;
        }
        *t = (echo_task){ .srv = srv, .conn = conn };
        weft_wg_add(&srv->running, 1);
        if (weft_go(echo_connection, t) != 0) {
            weft_wg_done(&srv->running);
            weft_conn_close(conn);
            free(t);
        }
    }
    weft_wg_done(&srv->running);
}

/* ---- main --------------------------------------------------------------- */

typedef struct options {
    const char *host;          /* NULL: start the built-in server */
    int port;
    int messages;
    int64_t timeout;
} options;

static int app_main(void *arg)
{
    const options *opt = arg;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, opt->timeout);
    if (ctx == NULL) {
        fprintf(stderr, "echo_client: out of memory\n");
        return 1;
    }
    if (opt->host != NULL) {
        int failed = run_client(ctx, opt->host, opt->port, opt->messages);
        weft_ctx_release(ctx);
        if (failed)
            return 1;
        printf("ok\n");
        return 0;
    }

    local_server srv = { .ctx = ctx };
    int err = weft_tcp_listen("127.0.0.1", 0, 0, &srv.listener);
    if (err != 0) {
        fprintf(stderr, "echo_client: the built-in server cannot listen: %s\n",
                weft_strerror(err));
        weft_ctx_release(ctx);
        return 1;
    }
    int port = weft_listener_port(srv.listener);
    printf("started an echo server on 127.0.0.1:%d in this process\n", port);
    weft_wg_add(&srv.running, 1);
    err = weft_go(accept_connections, &srv);
    if (err != 0) {
        fprintf(stderr, "echo_client: weft_go failed: %s\n", weft_strerror(err));
        weft_wg_done(&srv.running);
        weft_listener_close(srv.listener);
        weft_ctx_release(ctx);
        return 1;
    }

    int failed = run_client(ctx, "127.0.0.1", port, opt->messages);

    /* The accept loop returns WEFT_ECLOSED, and each connection ends when
     * its client has closed it, or at the timeout. */
    weft_listener_close(srv.listener);
    weft_wg_wait(&srv.running);
    weft_ctx_release(ctx);
    if (failed)
        return 1;
    printf("ok\n");
    return 0;
}

static void usage(void)
{
    fprintf(stderr, "usage: echo_client [-n MESSAGES] [-t TIMEOUT_MS] [HOST PORT]\n"
                    "  HOST PORT  the echo server; without them, one is started in this process\n"
                    "  -n         messages to send, 1 to 1000000 (default 100)\n"
                    "  -t         timeout for the whole run in ms, 1 to 3600000 (default 10000)\n");
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
    options opt = { .messages = 100, .timeout = WEFT_MS(10000) };
    int c;
    long value;
    while ((c = getopt(argc, argv, "n:t:")) != -1) {
        if (c == 'n' && parse_number(optarg, 1, 1000000, &value)) {
            opt.messages = (int)value;
        } else if (c == 't' && parse_number(optarg, 1, 3600000, &value)) {
            opt.timeout = WEFT_MS(value);
        } else {
            usage();
            return 2;
        }
    }
    int rest = argc - optind;
    if (rest == 2 && parse_number(argv[optind + 1], 1, 65535, &value)) {
        opt.host = argv[optind];
        opt.port = (int)value;
    } else if (rest != 0) {
        usage();
        return 2;
    }

    int rc = weft_main(app_main, &opt);
    if (rc < 0) {
        fprintf(stderr, "echo_client: cannot start the runtime: %s\n", weft_strerror(rc));
        return 1;
    }
    return rc;
}
