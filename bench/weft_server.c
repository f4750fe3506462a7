/*
 * The tcp-echo workload's server on weft: the way a Go program would write
 * it, with one coroutine accepting and one coroutine per connection that
 * reads with weft_conn_read and writes the bytes back with
 * weft_conn_write until the peer closes.
 *
 * The main coroutine waits for end of file on standard input through
 * weft_blocking, then closes the listener and returns, and the runtime
 * abandons the connection coroutines as it shuts down. The runtime uses
 * WEFT_MAXPROCS or every usable CPU.
 */
#define _GNU_SOURCE
#include <stdbool.h>
#include <stdio.h>
#include <weft.h>

#include "bench.h"

#define READ_BUFFER_BYTES 4096

/* An error that only means the peer has gone, or that the runtime is
 * closing the connection. */
static bool peer_gone(int err)
{
    return err == -ECONNRESET || err == -EPIPE || err == WEFT_ECLOSED;
}

static void connection_task(void *arg)
{
    weft_conn *conn = arg;
    char buf[READ_BUFFER_BYTES];
    for (;;) {
        ssize_t n = weft_conn_read(NULL, conn, buf, sizeof buf);
        if (n < 0 && !peer_gone((int)n))
            fprintf(stderr, "weft echo server: weft_conn_read failed: %s\n",
                    weft_strerror((int)n));
        if (n <= 0)
            break;
        int err = weft_conn_write(NULL, conn, buf, (size_t)n);
        if (err != 0 && !peer_gone(err))
            fprintf(stderr, "weft echo server: weft_conn_write failed: %s\n",
                    weft_strerror(err));
        if (err != 0)
            break;
    }
    weft_conn_close(conn);
}

static void accept_task(void *arg)
{
    weft_listener *listener = arg;
    for (;;) {
        weft_conn *conn;
        int err = weft_tcp_accept(NULL, listener, &conn);
        if (err == WEFT_ECLOSED)
            return;
        if (err != 0)
            bench_fail("weft echo server: weft_tcp_accept failed: %s",
                       weft_strerror(err));
        err = weft_go(connection_task, conn);
        if (err != 0)
            bench_fail("weft echo server: weft_go failed: %s",
                       weft_strerror(err));
    }
}

static void *wait_stdin_eof(void *arg)
{
    (void)arg;
    bench_wait_stdin_eof();
    return NULL;
}

static int server_main(void *arg)
{
    (void)arg;
    weft_listener *listener;
    int err = weft_tcp_listen("127.0.0.1", 0, 0, &listener);
    if (err != 0)
        bench_fail("weft echo server: weft_tcp_listen on 127.0.0.1 failed: %s",
                   weft_strerror(err));
    int port = weft_listener_port(listener);
    if (port <= 0)
        bench_fail("weft_listener_port failed: %s", weft_strerror(port));
    err = weft_go(accept_task, listener);
    if (err != 0)
        bench_fail("weft_go failed: %s", weft_strerror(err));

    printf("port %d\n", port);
    fflush(stdout);
    err = weft_blocking(NULL, wait_stdin_eof, NULL, NULL);
    if (err != 0)
        bench_fail("weft_blocking failed: %s", weft_strerror(err));
    weft_listener_close(listener);
    return 0;
}

int weft_echo_server(void)
{
    weft_config cfg = {0};
    int err = weft_main_config(&cfg, server_main, NULL);
    if (err < 0)
        bench_fail("weft_main_config failed: %s", weft_strerror(err));
    return err;
}
