/*
 * The tcp-echo workload's server on plain libuv: one thread, one loop,
 * every connection a uv_tcp_t read with uv_read_start and echoed with
 * uv_write. It is the event-loop baseline for weft's coroutine server.
 *
 * Each connection reads into a buffer of its own. A read copies its bytes
 * into a write request, which is freed when the write completes, so the
 * buffer is free again for the next read even while an echo is still
 * being written. Standard input is a pipe handle on the same loop; its end
 * of file stops the loop.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <uv.h>

#include "bench.h"

#define READ_BUFFER_BYTES 4096

typedef struct echo_client {
    uv_tcp_t tcp;      /* first, so a handle pointer converts to the client */
    char buffer[READ_BUFFER_BYTES];
} echo_client;

typedef struct echo_write {
    uv_write_t req;    /* first, so a request pointer converts to this record */
    char data[];
} echo_write;

static uv_loop_t *loop;
static uv_tcp_t listener;
static uv_pipe_t control;           /* standard input */

static void client_alloc(uv_handle_t *handle, size_t suggested_size,
                         uv_buf_t *buf)
{
    (void)suggested_size;
    echo_client *client = (echo_client *)handle;
    *buf = uv_buf_init(client->buffer, sizeof client->buffer);
}

static void client_closed(uv_handle_t *handle)
{
    free(handle);
}

static void echo_written(uv_write_t *req, int status)
{
    if (status < 0 && status != UV_EPIPE && status != UV_ECONNRESET &&
        status != UV_ECANCELED)
        fprintf(stderr, "libuv echo server: uv_write failed: %s\n",
                uv_strerror(status));
    free(req);
}

static void client_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    if (nread == 0)
        return;
    if (nread < 0) {
        if (nread != UV_EOF && nread != UV_ECONNRESET)
            fprintf(stderr, "libuv echo server: read failed: %s\n",
                    uv_strerror((int)nread));
        uv_close((uv_handle_t *)stream, client_closed);
        return;
    }

    echo_write *write = malloc(sizeof *write + (size_t)nread);
    if (!write)
        bench_fail("out of memory for a write of %zd bytes", nread);
    memcpy(write->data, buf->base, (size_t)nread);
    uv_buf_t out = uv_buf_init(write->data, (unsigned)nread);
    int err = uv_write(&write->req, stream, &out, 1, echo_written);
    if (err < 0) {
        fprintf(stderr, "libuv echo server: uv_write failed: %s\n",
                uv_strerror(err));
        free(write);
        uv_close((uv_handle_t *)stream, client_closed);
    }
}

static void client_accept(uv_stream_t *server, int status)
{
    if (status < 0)
        bench_fail("libuv echo server: listen callback failed: %s",
                   uv_strerror(status));
    echo_client *client = malloc(sizeof *client);
    if (!client)
        bench_fail("out of memory for a connection");
    int err = uv_tcp_init(loop, &client->tcp);
    if (err < 0)
        bench_fail("uv_tcp_init failed: %s", uv_strerror(err));
    err = uv_accept(server, (uv_stream_t *)&client->tcp);
    if (err < 0) {
        fprintf(stderr, "libuv echo server: uv_accept failed: %s\n",
                uv_strerror(err));
        uv_close((uv_handle_t *)&client->tcp, client_closed);
        return;
    }
    /* weft and Go set TCP_NODELAY on accepted connections too. */
    err = uv_tcp_nodelay(&client->tcp, 1);
    if (err == 0)
        err = uv_read_start((uv_stream_t *)&client->tcp, client_alloc,
                            client_read);
    if (err < 0) {
        fprintf(stderr, "libuv echo server: setting up a connection failed: "
                        "%s\n", uv_strerror(err));
        uv_close((uv_handle_t *)&client->tcp, client_closed);
    }
}

static void control_alloc(uv_handle_t *handle, size_t suggested_size,
                          uv_buf_t *buf)
{
    (void)handle;
    (void)suggested_size;
    static char discard[256];
    *buf = uv_buf_init(discard, sizeof discard);
}

/* Stop the loop at end of file (or an error) on standard input. */
static void control_read(uv_stream_t *stream, ssize_t nread,
                         const uv_buf_t *buf)
{
    (void)stream;
    (void)buf;
    if (nread < 0)
        uv_stop(loop);
}

int libuv_echo_server(void)
{
    loop = uv_default_loop();
    struct sockaddr_in addr;
    int err = uv_ip4_addr("127.0.0.1", 0, &addr);
    if (err == 0)
        err = uv_tcp_init(loop, &listener);
    if (err == 0)
        err = uv_tcp_bind(&listener, (const struct sockaddr *)&addr, 0);
    if (err == 0)
        err = uv_listen((uv_stream_t *)&listener, SOMAXCONN, client_accept);
    if (err < 0)
        bench_fail("libuv echo server: listening on 127.0.0.1 failed: %s",
                   uv_strerror(err));

    struct sockaddr_in bound;
    int len = sizeof bound;
    err = uv_tcp_getsockname(&listener, (struct sockaddr *)&bound, &len);
    if (err < 0)
        bench_fail("uv_tcp_getsockname failed: %s", uv_strerror(err));

    err = uv_pipe_init(loop, &control, 0);
    if (err == 0)
        err = uv_pipe_open(&control, 0);
    if (err == 0)
        err = uv_read_start((uv_stream_t *)&control, control_alloc,
                            control_read);
    if (err < 0)
        bench_fail("libuv echo server: watching standard input failed: %s",
                   uv_strerror(err));

    printf("port %d\n", ntohs(bound.sin_port));
    fflush(stdout);
    uv_run(loop, UV_RUN_DEFAULT);
    return 0;
}
