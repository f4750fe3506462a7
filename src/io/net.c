/*
 * Sockets: addresses, name resolution, TCP listeners and connections, UDP.
 *
 * Every operation takes a reference on its record (weft__netfd_acquire)
 * for its whole run, so a concurrent close cannot close the descriptor
 * under it, then takes its direction's lock, so concurrent reads (or
 * writes, or accepts) run one at a time. It then loops: try the system
 * call on the calling thread; on EAGAIN wait for the next readiness edge
 * (netpoll.c) and try again. A closed record ends the loop with
 * WEFT_ECLOSED, an ended context with its error. The context is also
 * checked once at the start, so an ended context fails a call even when
 * data is ready, as in Go.
 *
 * Name resolution runs libuv's uv_getaddrinfo on the loop thread
 * (io_internal.h); numeric addresses are parsed on the calling thread.
 *
 * IPv4 on an IPv6 socket: listeners and UDP sockets bound to every
 * address are dual-stack where the system allows it. Peer addresses that
 * arrive as IPv4-mapped IPv6 addresses are returned as IPv4, and IPv4
 * destinations given to such a UDP socket are mapped before sending.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io_internal.h"
#include "netpoll.h"
#include "weft/error.h"
#include "weft/io.h"

/* Addresses weft_tcp_dial tries, in the resolver's order. */
#define DIAL_MAX_ADDRS 8

static bool runtime_running(void)
{
    return atomic_load(&weft__rt.running) != 0;
}

/* ---- Addresses ------------------------------------------------------------ */

int weft_addr_parse(const char *host, int port, weft_addr *out)
{
    if (!host || !out || port < 0 || port > 65535)
        return WEFT_EINVAL;
    /* IPv4 as a strict dotted quad: inet_pton rejects the shorthand forms
     * ("127.1", "010.0.0.1") that getaddrinfo accepts, as Go does. */
    struct in_addr v4;
    if (inet_pton(AF_INET, host, &v4) == 1) {
        memset(out, 0, sizeof *out);
        out->u.in4.sin_family = AF_INET;
        out->u.in4.sin_addr = v4;
        out->u.in4.sin_port = htons((uint16_t)port);
        out->len = sizeof out->u.in4;
        return 0;
    }
    if (!strchr(host, ':'))
        return WEFT_EINVAL;
    /* IPv6, with an optional zone ("fe80::1%eth0"). */
    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_INET6;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_NUMERICHOST;
    /* With AI_NUMERICHOST getaddrinfo parses only; it never does a lookup. */
    if (getaddrinfo(host, NULL, &hints, &res) != 0 || !res)
        return WEFT_EINVAL;
    int err = WEFT_EINVAL;
    if (res->ai_addrlen <= sizeof out->u) {
        memset(out, 0, sizeof *out);
        memcpy(&out->u, res->ai_addr, res->ai_addrlen);
        out->len = res->ai_addrlen;
        if (out->u.sa.sa_family == AF_INET)
            out->u.in4.sin_port = htons((uint16_t)port);
        else
            out->u.in6.sin6_port = htons((uint16_t)port);
        err = 0;
    }
    freeaddrinfo(res);
    return err;
}

static bool addr_valid(const weft_addr *a)
{
    if (!a)
        return false;
    if (a->u.sa.sa_family == AF_INET)
        return a->len == sizeof(struct sockaddr_in);
    if (a->u.sa.sa_family == AF_INET6)
        return a->len == sizeof(struct sockaddr_in6);
    return false;
}

int weft_addr_port(const weft_addr *a)
{
    if (!addr_valid(a))
        return WEFT_EINVAL;
    return a->u.sa.sa_family == AF_INET ? ntohs(a->u.in4.sin_port)
                                        : ntohs(a->u.in6.sin6_port);
}

int weft_addr_format(const weft_addr *a, char *buf, size_t size)
{
    if (!addr_valid(a) || !buf)
        return WEFT_EINVAL;
    char host[INET6_ADDRSTRLEN];
    int n;
    if (a->u.sa.sa_family == AF_INET) {
        inet_ntop(AF_INET, &a->u.in4.sin_addr, host, sizeof host);
        n = snprintf(buf, size, "%s:%d", host, ntohs(a->u.in4.sin_port));
    } else {
        inet_ntop(AF_INET6, &a->u.in6.sin6_addr, host, sizeof host);
        n = snprintf(buf, size, "[%s]:%d", host, ntohs(a->u.in6.sin6_port));
    }
    if (n < 0 || (size_t)n >= size) {
        if (size > 0)
            buf[0] = '\0';
        return -ENOSPC;
    }
    return n;
}

/* Turn an IPv4-mapped IPv6 address (::ffff:a.b.c.d) into plain IPv4. */
static void addr_unmap(weft_addr *a)
{
    if (a->u.sa.sa_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&a->u.in6.sin6_addr))
        return;
    struct sockaddr_in in4;
    memset(&in4, 0, sizeof in4);
    in4.sin_family = AF_INET;
    in4.sin_port = a->u.in6.sin6_port;
    memcpy(&in4.sin_addr, &a->u.in6.sin6_addr.s6_addr[12], 4);
    memset(&a->u, 0, sizeof a->u);
    a->u.in4 = in4;
    a->len = sizeof in4;
}

/* The IPv4-mapped IPv6 form of an IPv4 address. */
static void addr_map(const weft_addr *a, weft_addr *out)
{
    memset(out, 0, sizeof *out);
    out->u.in6.sin6_family = AF_INET6;
    out->u.in6.sin6_port = a->u.in4.sin_port;
    out->u.in6.sin6_addr.s6_addr[10] = 0xff;
    out->u.in6.sin6_addr.s6_addr[11] = 0xff;
    memcpy(&out->u.in6.sin6_addr.s6_addr[12], &a->u.in4.sin_addr, 4);
    out->len = sizeof out->u.in6;
}

/* ---- Name resolution -------------------------------------------------------- */

typedef struct resolve_req {
    weft__io_req base;          /* first: the request casts to it */
    uv_getaddrinfo_t gai;
    struct addrinfo *res;
    char host[];
} resolve_req;

static void resolve_done(uv_getaddrinfo_t *gai, int status, struct addrinfo *res)
{
    resolve_req *rr = gai->data;
    rr->res = res;
    rr->base.result = status;
    weft__io_complete(&rr->base);
}

static void resolve_run(weft__io_req *r, uv_loop_t *loop)
{
    resolve_req *rr = (resolve_req *)r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_ADDRCONFIG;
    rr->gai.data = rr;
    int err = uv_getaddrinfo(loop, &rr->gai, resolve_done, rr->host, NULL, &hints);
    if (err) {
        r->result = err;
        weft__io_complete(r);
    }
}

static void resolve_destroy(weft__io_req *r)
{
    resolve_req *rr = (resolve_req *)r;
    if (rr->res)
        uv_freeaddrinfo(rr->res);
    free(rr);
}

int weft_resolve(weft_ctx *ctx, const char *host, int port, weft_addr *out, size_t max)
{
    if (!host || !*host || !out || max == 0 || port < 0 || port > 65535 ||
        !runtime_running())
        return WEFT_EINVAL;
    if (weft_addr_parse(host, port, &out[0]) == 0)
        return 1;
    int err = weft_ctx_err(ctx);
    if (err)
        return err;
    size_t hlen = strlen(host);
    resolve_req *rr = calloc(1, sizeof *rr + hlen + 1);
    if (!rr)
        return WEFT_ENOMEM;
    memcpy(rr->host, host, hlen + 1);
    weft__io_req_init(&rr->base, resolve_run, resolve_destroy);

    err = weft__io_wait(ctx, &rr->base, WEFT__WAIT_IO);
    if (err == 0)
        err = rr->base.result;
    int count = 0;
    if (err == 0) {
        for (struct addrinfo *ai = rr->res; ai && (size_t)count < max; ai = ai->ai_next) {
            if ((ai->ai_family != AF_INET && ai->ai_family != AF_INET6) ||
                ai->ai_addrlen > sizeof out[0].u)
                continue;
            weft_addr *a = &out[count];
            memset(a, 0, sizeof *a);
            memcpy(&a->u, ai->ai_addr, ai->ai_addrlen);
            a->len = ai->ai_addrlen;
            if (ai->ai_family == AF_INET)
                a->u.in4.sin_port = htons((uint16_t)port);
            else
                a->u.in6.sin6_port = htons((uint16_t)port);
            count++;
        }
        if (count == 0)
            err = WEFT_ENONAME;
    }
    weft__io_req_unref(&rr->base);
    return err ? err : count;
}

/* ---- Sockets ---------------------------------------------------------------- */

/* The address to bind for host: every address for NULL or "", a literal,
 * or a name's first address. *any is set for the every-address case. */
static int bind_addr(const char *host, int port, weft_addr *a, bool *any)
{
    *any = false;
    if (port < 0 || port > 65535)
        return WEFT_EINVAL;
    if (!host || !*host) {
        *any = true;
        return weft_addr_parse("::", port, a);
    }
    int n = weft_resolve(NULL, host, port, a, 1);
    return n < 0 ? n : 0;
}

/* A non-blocking socket bound to a; for the every-address case, an IPv6
 * dual-stack socket, or IPv4 when the system has no IPv6. */
static int bound_socket(weft_addr *a, bool any, int type)
{
    for (;;) {
        int fd = socket(a->u.sa.sa_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (fd < 0) {
            int err = -errno;
            if (any && a->u.sa.sa_family == AF_INET6 &&
                (err == -EAFNOSUPPORT || err == -EPROTONOSUPPORT)) {
                weft_addr_parse("0.0.0.0", weft_addr_port(a), a);
                continue;
            }
            return err;
        }
        int on = 1, off = 0;
        if (type == SOCK_STREAM)
            setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
        if (any && a->u.sa.sa_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        if (bind(fd, &a->u.sa, a->len) != 0) {
            int err = -errno;
            close(fd);
            return err;
        }
        return fd;
    }
}

static int sock_name(weft__netfd *nd, int kind, weft_addr *out, bool peer)
{
    if (!out)
        return WEFT_EINVAL;
    int err = weft__netfd_acquire(nd, kind);
    if (err)
        return err;
    memset(out, 0, sizeof *out);
    socklen_t len = sizeof out->u;
    int rc = peer ? getpeername(nd->fd, &out->u.sa, &len)
                  : getsockname(nd->fd, &out->u.sa, &len);
    err = rc == 0 ? 0 : -errno;
    weft__netfd_release(nd);
    if (err)
        return err;
    out->len = len;
    addr_unmap(out);
    return 0;
}

/* Start an operation: check arguments, take a reference and the
 * direction's lock. On error nothing is held. */
static int op_begin(weft_ctx *ctx, weft__netfd *nd, int kind, int dir)
{
    int err = weft__netfd_acquire(nd, kind);
    if (err)
        return err;
    if ((err = weft_ctx_err(ctx)) != 0 ||
        (err = weft__netfd_lock(ctx, nd, dir)) != 0) {
        weft__netfd_release(nd);
        return err;
    }
    /* Queued behind the lock while another caller closed the handle. */
    if (weft__netfd_closed(nd)) {
        weft__netfd_unlock(nd, dir);
        weft__netfd_release(nd);
        return WEFT_ECLOSED;
    }
    return 0;
}

static void op_end(weft__netfd *nd, int dir)
{
    weft__netfd_unlock(nd, dir);
    weft__netfd_release(nd);
}

/* ---- TCP listeners ------------------------------------------------------------ */

int weft_tcp_listen(const char *host, int port, int backlog, weft_listener **out)
{
    if (!out)
        return WEFT_EINVAL;
    *out = NULL;
    if (!runtime_running())
        return WEFT_EINVAL;
    weft_addr a;
    bool any;
    int err = bind_addr(host, port, &a, &any);
    if (err)
        return err;
    int fd = bound_socket(&a, any, SOCK_STREAM);
    if (fd < 0)
        return fd;
    if (listen(fd, backlog > 0 ? backlog : SOMAXCONN) != 0) {
        err = -errno;
        close(fd);
        return err;
    }
    weft__netfd *nd;
    if ((err = weft__netfd_open(fd, WEFT__NETFD_LISTENER, a.u.sa.sa_family, &nd)) != 0) {
        close(fd);
        return err;
    }
    *out = (weft_listener *)nd;
    return 0;
}

int weft_listener_addr(weft_listener *l, weft_addr *out)
{
    return sock_name((weft__netfd *)l, WEFT__NETFD_LISTENER, out, false);
}

int weft_listener_port(weft_listener *l)
{
    weft_addr a;
    int err = weft_listener_addr(l, &a);
    return err ? err : weft_addr_port(&a);
}

int weft_listener_close(weft_listener *l)
{
    return weft__netfd_close((weft__netfd *)l, WEFT__NETFD_LISTENER);
}

static void set_nodelay(int fd)
{
    int on = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof on);
}

int weft_tcp_accept(weft_ctx *ctx, weft_listener *l, weft_conn **out)
{
    if (!out)
        return WEFT_EINVAL;
    *out = NULL;
    weft__netfd *nd = (weft__netfd *)l;
    int err = op_begin(ctx, nd, WEFT__NETFD_LISTENER, WEFT__DIR_READ);
    if (err)
        return err;
    int fd;
    for (;;) {
        if (weft__netfd_closed(nd)) {
            err = WEFT_ECLOSED;
            break;
        }
        fd = accept4(nd->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd >= 0)
            break;
        err = -errno;
        /* A connection the peer reset before it was accepted is skipped. */
        if (err == -EINTR || err == -ECONNABORTED)
            continue;
        if (err != -EAGAIN && err != -EWOULDBLOCK)
            break;
        if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_READ)) != 0)
            break;
    }
    int family = nd->family;
    op_end(nd, WEFT__DIR_READ);
    if (err)
        return err;

    set_nodelay(fd);
    weft__netfd *c;
    if ((err = weft__netfd_open(fd, WEFT__NETFD_CONN, family, &c)) != 0) {
        close(fd);
        return err;
    }
    *out = (weft_conn *)c;
    return 0;
}

/* ---- TCP connections ------------------------------------------------------------- */

/* Connect to one address. On success *out is the new connection. */
static int dial_one(weft_ctx *ctx, const weft_addr *a, weft_conn **out)
{
    int fd = socket(a->u.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    set_nodelay(fd);
    weft__netfd *nd;
    int err = weft__netfd_open(fd, WEFT__NETFD_CONN, a->u.sa.sa_family, &nd);
    if (err) {
        close(fd);
        return err;
    }
    if (connect(fd, &a->u.sa, a->len) != 0) {
        err = -errno;
        while (err == -EINPROGRESS || err == -EINTR || err == -EALREADY) {
            if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_WRITE)) != 0)
                break;
            /* Writable after connect: the result is in SO_ERROR. A stale
             * readiness edge of a recycled record can come early, so a
             * missing peer name means the connect is still going. */
            int so_error = 0;
            socklen_t len = sizeof so_error;
            if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len) != 0)
                so_error = errno;
            if (so_error != 0) {
                err = -so_error;
                break;
            }
            struct sockaddr_storage peer;
            socklen_t plen = sizeof peer;
            if (getpeername(fd, (struct sockaddr *)&peer, &plen) == 0)
                err = 0;
            else
                err = errno == ENOTCONN ? -EINPROGRESS : -errno;
        }
    }
    if (err) {
        weft__netfd_close(nd, WEFT__NETFD_CONN);
        return err;
    }
    *out = (weft_conn *)nd;
    return 0;
}

int weft_tcp_dial(weft_ctx *ctx, const char *host, int port, weft_conn **out)
{
    if (!out)
        return WEFT_EINVAL;
    *out = NULL;
    if (!host || !*host || port <= 0 || port > 65535 || !runtime_running())
        return WEFT_EINVAL;
    weft_addr addrs[DIAL_MAX_ADDRS];
    int n = weft_resolve(ctx, host, port, addrs, DIAL_MAX_ADDRS);
    if (n < 0)
        return n;
    int err = WEFT_ENONAME;
    for (int i = 0; i < n; i++) {
        err = dial_one(ctx, &addrs[i], out);
        if (err == 0)
            return 0;
        int ctx_err = weft_ctx_err(ctx);
        if (ctx_err)
            return ctx_err;
    }
    return err;
}

ssize_t weft_conn_read(weft_ctx *ctx, weft_conn *c, void *buf, size_t len)
{
    weft__netfd *nd = (weft__netfd *)c;
    if (!buf && len > 0)
        return WEFT_EINVAL;
    int err = op_begin(ctx, nd, WEFT__NETFD_CONN, WEFT__DIR_READ);
    if (err)
        return err;
    ssize_t result = 0;
    bool waited = false;
    while (len > 0) {
        ssize_t n = read(nd->fd, buf, len);
        if (n >= 0) {
            result = n;
            break;
        }
        err = -errno;
        if (err == -EINTR)
            continue;
        if (err != -EAGAIN && err != -EWOULDBLOCK) {
            result = err;
            break;
        }
        if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_READ)) != 0) {
            result = err;
            break;
        }
        waited = true;
    }
    op_end(nd, WEFT__DIR_READ);
    /* Data that was there without waiting lets a busy connection's
     * coroutine loop without ever parking, and with no preemption it would
     * keep its P from every other connection. Yielding (free when nothing
     * else is queued) sends it to the back of the queue. */
    if (result > 0 && !waited)
        weft_yield();
    return result;
}

int weft_conn_write(weft_ctx *ctx, weft_conn *c, const void *buf, size_t len)
{
    weft__netfd *nd = (weft__netfd *)c;
    if (!buf && len > 0)
        return WEFT_EINVAL;
    int err = op_begin(ctx, nd, WEFT__NETFD_CONN, WEFT__DIR_WRITE);
    if (err)
        return err;
    const char *p = buf;
    size_t off = 0;
    while (off < len) {
        if (weft__netfd_closed(nd)) {
            err = WEFT_ECLOSED;
            break;
        }
        ssize_t n = send(nd->fd, p + off, len - off, MSG_NOSIGNAL);
        if (n >= 0) {
            off += (size_t)n;
            continue;
        }
        err = -errno;
        if (err == -EINTR)
            continue;
        if (err != -EAGAIN && err != -EWOULDBLOCK)
            break;
        if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_WRITE)) != 0)
            break;
    }
    if (off == len)
        err = 0;
    op_end(nd, WEFT__DIR_WRITE);
    return err;
}

int weft_conn_close_write(weft_conn *c)
{
    weft__netfd *nd = (weft__netfd *)c;
    int err = weft__netfd_acquire(nd, WEFT__NETFD_CONN);
    if (err)
        return err;
    err = shutdown(nd->fd, SHUT_WR) == 0 ? 0 : -errno;
    weft__netfd_release(nd);
    return err;
}

void weft_conn_close(weft_conn *c)
{
    if (c)
        weft__netfd_close((weft__netfd *)c, WEFT__NETFD_CONN);
}

int weft_conn_peer_addr(weft_conn *c, weft_addr *out)
{
    return sock_name((weft__netfd *)c, WEFT__NETFD_CONN, out, true);
}

int weft_conn_local_addr(weft_conn *c, weft_addr *out)
{
    return sock_name((weft__netfd *)c, WEFT__NETFD_CONN, out, false);
}

/* ---- UDP ------------------------------------------------------------------------ */

int weft_udp_bind(const char *host, int port, weft_udp **out)
{
    if (!out)
        return WEFT_EINVAL;
    *out = NULL;
    if (!runtime_running())
        return WEFT_EINVAL;
    weft_addr a;
    bool any;
    int err = bind_addr(host, port, &a, &any);
    if (err)
        return err;
    int fd = bound_socket(&a, any, SOCK_DGRAM);
    if (fd < 0)
        return fd;
    weft__netfd *nd;
    if ((err = weft__netfd_open(fd, WEFT__NETFD_UDP, a.u.sa.sa_family, &nd)) != 0) {
        close(fd);
        return err;
    }
    *out = (weft_udp *)nd;
    return 0;
}

int weft_udp_local_addr(weft_udp *u, weft_addr *out)
{
    return sock_name((weft__netfd *)u, WEFT__NETFD_UDP, out, false);
}

int weft_udp_send_to(weft_ctx *ctx, weft_udp *u, const void *buf, size_t len,
                     const weft_addr *to)
{
    weft__netfd *nd = (weft__netfd *)u;
    if ((!buf && len > 0) || !addr_valid(to))
        return WEFT_EINVAL;
    int err = op_begin(ctx, nd, WEFT__NETFD_UDP, WEFT__DIR_WRITE);
    if (err)
        return err;
    weft_addr mapped;
    if (nd->family == AF_INET6 && to->u.sa.sa_family == AF_INET) {
        addr_map(to, &mapped);
        to = &mapped;
    }
    for (;;) {
        if (weft__netfd_closed(nd)) {
            err = WEFT_ECLOSED;
            break;
        }
        ssize_t n = sendto(nd->fd, buf, len, MSG_NOSIGNAL, &to->u.sa, to->len);
        if (n >= 0) {
            err = 0;
            break;
        }
        err = -errno;
        if (err == -EINTR)
            continue;
        if (err != -EAGAIN && err != -EWOULDBLOCK)
            break;
        if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_WRITE)) != 0)
            break;
    }
    op_end(nd, WEFT__DIR_WRITE);
    return err;
}

ssize_t weft_udp_recv_from(weft_ctx *ctx, weft_udp *u, void *buf, size_t len,
                           weft_addr *from)
{
    weft__netfd *nd = (weft__netfd *)u;
    if (!buf && len > 0)
        return WEFT_EINVAL;
    int err = op_begin(ctx, nd, WEFT__NETFD_UDP, WEFT__DIR_READ);
    if (err)
        return err;
    ssize_t result;
    weft_addr a;
    for (;;) {
        if (weft__netfd_closed(nd)) {
            result = WEFT_ECLOSED;
            break;
        }
        memset(&a, 0, sizeof a);
        socklen_t alen = sizeof a.u;
        ssize_t n = recvfrom(nd->fd, buf, len, 0, &a.u.sa, &alen);
        if (n >= 0) {
            a.len = alen;
            result = n;
            break;
        }
        err = -errno;
        if (err == -EINTR)
            continue;
        if (err != -EAGAIN && err != -EWOULDBLOCK) {
            result = err;
            break;
        }
        if ((err = weft__netfd_wait(ctx, nd, WEFT__DIR_READ)) != 0) {
            result = err;
            break;
        }
    }
    op_end(nd, WEFT__DIR_READ);
    if (result >= 0 && from) {
        addr_unmap(&a);
        *from = a;
    }
    return result;
}

void weft_udp_close(weft_udp *u)
{
    if (u)
        weft__netfd_close((weft__netfd *)u, WEFT__NETFD_UDP);
}
