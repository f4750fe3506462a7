/*
 * weft/io.h: non-blocking I/O for coroutines: TCP, UDP, name resolution,
 * files, blocking work on threads, and a context cancelled by signals.
 *
 * Shape of every call: a context comes first in each call that can wait,
 * the result is 0 (or a count) or a negative error code from weft/error.h,
 * and only the calling coroutine waits, never its processor slot. Calls
 * also work from plain threads, which then block. They need a running
 * runtime (WEFT_EINVAL otherwise). When the context ends first, the call
 * returns the context's error (WEFT_ECANCELED or WEFT_ETIMEDOUT).
 *
 * Sockets. Host names are resolved; IPv6 literals are written without
 * brackets ("::1"). Accepted and dialed connections have TCP_NODELAY set.
 * Concurrent reads on one connection are served one at a time, and so are
 * concurrent writes. A read or write ended by its context leaves the
 * connection open and usable: bytes that arrive later go to the next read.
 * A write ended that way, or by a close, may have sent a prefix of the
 * buffer. A write to
 * a peer that has gone returns the system's error (-EPIPE or
 * -ECONNRESET); a weft program is never killed by SIGPIPE (sockets are
 * written with MSG_NOSIGNAL, and weft_init ignores SIGPIPE when its action
 * is the default one). WEFT_ECLOSED means this side closed the handle.
 *
 * Close. Closing is safe while other coroutines are blocked on the same
 * listener, connection or UDP socket: they return WEFT_ECLOSED, and the
 * descriptor is closed when the last of them has returned. A handle used
 * again after its close returns WEFT_ECLOSED until a new handle reuses its
 * memory, which makes such use a bug the library cannot always catch.
 */
#ifndef WEFT_IO_H
#define WEFT_IO_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_ctx weft_ctx;
typedef struct weft_listener weft_listener;
typedef struct weft_conn weft_conn;
typedef struct weft_udp weft_udp;

/* An IPv4 or IPv6 socket address; len 0 means empty. */
typedef struct weft_addr {
    socklen_t len;
    union {
        struct sockaddr sa;
        struct sockaddr_in in4;
        struct sockaddr_in6 in6;
    } u;
} weft_addr;

/* Buffer size that fits every address weft_addr_format writes. */
#define WEFT_ADDR_STRLEN 64

/* Fill *out from a numeric IPv4 or IPv6 literal and a port (0-65535);
 * WEFT_EINVAL for anything else, host names included. */
int weft_addr_parse(const char *host, int port, weft_addr *out);
/* The port, or WEFT_EINVAL for an empty or NULL address. */
int weft_addr_port(const weft_addr *a);
/* Write "127.0.0.1:80" or "[::1]:80" with a NUL; returns the length, or
 * WEFT_EINVAL (bad address) or -ENOSPC (buffer too small). */
int weft_addr_format(const weft_addr *a, char *buf, size_t size);

/* Resolve host (a name or a numeric literal) with port into up to max
 * addresses, in the resolver's order. Returns how many were stored (at
 * least 1), WEFT_ENONAME for an unknown name, another negative libuv or
 * errno code, or the context's error. The lookup runs on libuv's thread
 * pool; when the context ends first it is abandoned there. */
int weft_resolve(weft_ctx *ctx, const char *host, int port,
                 weft_addr *out, size_t max);

/* ---- TCP ---------------------------------------------------------------- */

/* Listen on host and port (0: a free port). host NULL or "" listens on
 * every address, IPv6 and IPv4 when the system allows it; a name is
 * resolved and its first address used. backlog <= 0 means the system's
 * maximum. SO_REUSEADDR is set. */
int weft_tcp_listen(const char *host, int port, int backlog, weft_listener **out);
/* The port being listened on, or WEFT_EINVAL / WEFT_ECLOSED. */
int weft_listener_port(weft_listener *l);
int weft_listener_addr(weft_listener *l, weft_addr *out);
/* Wait for a connection. Errors of the accept call itself (for example
 * -EMFILE when the process is out of descriptors) are returned and leave
 * the listener working. */
int weft_tcp_accept(weft_ctx *ctx, weft_listener *l, weft_conn **out);
/* Blocked accepts return WEFT_ECLOSED. 0, or WEFT_ECLOSED when already
 * closed, WEFT_EINVAL for NULL. */
int weft_listener_close(weft_listener *l);

/* Connect to host (a name is resolved; each address is tried in turn) and
 * port 1-65535. A refused connection returns -ECONNREFUSED. */
int weft_tcp_dial(weft_ctx *ctx, const char *host, int port, weft_conn **out);
/* Read up to len bytes: the count (> 0), 0 at end of stream (and for
 * len 0), or an error. */
ssize_t weft_conn_read(weft_ctx *ctx, weft_conn *c, void *buf, size_t len);
/* Write all len bytes: 0 once the kernel has taken them all, or an error.
 * Waits while the peer is slow; nothing is buffered in weft. */
int weft_conn_write(weft_ctx *ctx, weft_conn *c, const void *buf, size_t len);
/* Half close: the peer reads end of stream; reading here goes on. */
int weft_conn_close_write(weft_conn *c);
/* Close; blocked readers and writers return WEFT_ECLOSED. NULL and a
 * second close do nothing. */
void weft_conn_close(weft_conn *c);
int weft_conn_peer_addr(weft_conn *c, weft_addr *out);
int weft_conn_local_addr(weft_conn *c, weft_addr *out);

/* ---- UDP ---------------------------------------------------------------- */

/* Bind a UDP socket to host and port (0: a free port); host as for
 * weft_tcp_listen. */
int weft_udp_bind(const char *host, int port, weft_udp **out);
int weft_udp_local_addr(weft_udp *u, weft_addr *out);
/* Send one datagram: 0 once sent, or an error (-EMSGSIZE when too big). */
int weft_udp_send_to(weft_ctx *ctx, weft_udp *u, const void *buf, size_t len,
                     const weft_addr *to);
/* Receive one datagram into buf: the bytes stored (a longer datagram is
 * truncated to len), or an error. from may be NULL. */
ssize_t weft_udp_recv_from(weft_ctx *ctx, weft_udp *u, void *buf, size_t len,
                           weft_addr *from);
/* As weft_conn_close. */
void weft_udp_close(weft_udp *u);

/* ---- Files -------------------------------------------------------------- */

/* Files are plain descriptors, operated on through libuv's thread pool so
 * a slow disk parks only the coroutine. The context is checked before an
 * operation starts; a started operation is waited for, because it writes
 * into the caller's buffer. */
/* open(2) flags and mode; returns the descriptor (>= 0) or an error. */
int weft_file_open(weft_ctx *ctx, const char *path, int flags, int mode);
/* Read up to len bytes at offset (< 0: at the file position): the count,
 * 0 at end of file, or an error. */
ssize_t weft_file_read(weft_ctx *ctx, int fd, void *buf, size_t len, int64_t offset);
/* Write all len bytes at offset (< 0: at the file position): 0 or an error. */
int weft_file_write(weft_ctx *ctx, int fd, const void *buf, size_t len, int64_t offset);
int weft_file_close(int fd);
/* Read a whole file into a malloc'd buffer (free it with free), with a NUL
 * after the last byte that *len does not count. */
int weft_file_read_all(weft_ctx *ctx, const char *path, char **data, size_t *len);
/* Create or truncate path (mode 0644) and write data to it. */
int weft_file_write_all(weft_ctx *ctx, const char *path, const void *data, size_t len);

/* ---- Blocking work and signals ----------------------------------------- */

/* Run fn(arg) on a thread of weft's blocking pool and wait for it; its
 * return value goes to *result when result is not NULL. Returns 0, or the
 * context's error when the context ends first: then fn still runs to
 * completion and its result is dropped, so arg must stay valid until fn
 * returns. The pool is separate from libuv's, so slow functions never
 * delay weft's file and resolver work. It grows on demand up to
 * WEFT_BLOCKING_MAX_THREADS threads, and further calls queue.
 * weft_shutdown does not wait for a running fn. */
int weft_blocking(weft_ctx *ctx, void *(*fn)(void *), void *arg, void **result);
#define WEFT_BLOCKING_MAX_THREADS 64

/* Go's signal.NotifyContext: a child of parent cancelled (WEFT_ECANCELED)
 * by the first of the n signals. The signals stay caught while the context
 * lives, also after the first one, and releasing it restores the handling
 * that was there before. NULL for n == 0, NULL signums, a signal that
 * cannot be caught (SIGKILL, SIGSTOP, SIGSEGV and other fault signals), no
 * runtime, or no memory. */
weft_ctx *weft_ctx_with_signals(weft_ctx *parent, const int *signums, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_IO_H */
