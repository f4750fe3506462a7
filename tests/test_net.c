/*
 * Sockets (weft/io.h): TCP, UDP, addresses and name resolution.
 * - weft_addr_parse, weft_addr_format and weft_addr_port for IPv4 and IPv6;
 * - weft_resolve of localhost, of numeric literals and of a name that does
 *   not exist;
 * - echo: a handler coroutine per accepted connection, 50 clients each
 *   sending many messages of varying sizes, every byte compared;
 * - half close, connection and listener addresses, dial by name, IPv6;
 * - faults: connection refused, reset by peer, end of stream in the middle
 *   of a message, writes to a peer that closed (no SIGPIPE), an
 *   unresolvable name, a port already in use;
 * - accept out of descriptors: -EMFILE, then the pending connection is
 *   accepted, and nothing spins meanwhile;
 * - handles used after close, and close while other coroutines are blocked
 *   on the handle or racing with it;
 * - contexts: a read or write ended by its deadline leaves the connection
 *   usable with no byte lost, accept and dial ended by cancel;
 * - deadlines of a few microseconds racing with arriving bytes,
 *   connections and datagrams, none of which may be lost;
 * - concurrent readers and concurrent writers on one connection;
 * - 500 connections, each with a blocked reader, all woken;
 * - a write of several MiB to a slow reader;
 * - UDP round trip, truncation, empty datagrams, deadlines and close;
 * - invalid arguments for every function, and calls without a runtime;
 * - no descriptor left open after close.
 *
 * Every socket is bound to and aimed at 127.0.0.1 or ::1. Tests that need a
 * coroutine to be blocked before they close or cancel wait until it has
 * started and then sleep 20 ms: the sleep only makes the blocked case
 * likely, because both orders must give the same result.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/time.h>

#include "body.h"
#include "check.h"
#include "helpers.h"
#include "weft.h"

/* Generous bound for a wait that should end at once, on a shared machine. */
#define LATE WEFT_SEC(2)
/* The sleep that lets a started coroutine reach its blocking call. */
#define SETTLE WEFT_MS(20)

/* ---- streams --------------------------------------------------------- */

/* Byte i of test stream seed. The value is never 0xFF, which the write
 * deadline test uses as its end marker. */
static unsigned char pattern_byte(unsigned seed, size_t i)
{
    return (unsigned char)((i + seed * 7919u + (i / 251) * 13) % 251);
}

static void fill_pattern(unsigned char *p, size_t n, unsigned seed, size_t offset)
{
    for (size_t i = 0; i < n; i++)
        p[i] = pattern_byte(seed, offset + i);
}

/* Index of the first byte of p that differs from stream seed at offset,
 * or n when all match. */
static size_t pattern_mismatch(const unsigned char *p, size_t n, unsigned seed,
                               size_t offset)
{
    for (size_t i = 0; i < n; i++) {
        if (p[i] != pattern_byte(seed, offset + i))
            return i;
    }
    return n;
}

/* Read until len bytes arrived or the stream ended: the count, or the
 * first error. */
static ssize_t read_full(weft_ctx *ctx, weft_conn *c, void *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        ssize_t r = weft_conn_read(ctx, c, (char *)buf + got, len - got);
        if (r < 0)
            return r;
        if (r == 0)
            break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Listen on 127.0.0.1, dial the listener and accept: a connected pair.
 * The listener is closed again. Returns 0 or the first error. */
static int connect_pair(weft_conn **client, weft_conn **server)
{
    weft_listener *l = NULL;
    int r = weft_tcp_listen("127.0.0.1", 0, 16, &l);
    if (r != 0)
        return r;
    r = weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(l), client);
    if (r == 0) {
        r = weft_tcp_accept(NULL, l, server);
        if (r != 0)
            weft_conn_close(*client);
    }
    weft_listener_close(l);
    return r;
}

static bool format_equals(const weft_addr *a, const char *want)
{
    char text[WEFT_ADDR_STRLEN];
    int n = weft_addr_format(a, text, sizeof text);
    if (n < 0)
        return false;
    return strcmp(text, want) == 0;
}

static bool addr_equal(const weft_addr *a, const weft_addr *b)
{
    char ta[WEFT_ADDR_STRLEN], tb[WEFT_ADDR_STRLEN];
    if (weft_addr_format(a, ta, sizeof ta) < 0)
        return false;
    if (weft_addr_format(b, tb, sizeof tb) < 0)
        return false;
    return strcmp(ta, tb) == 0;
}

static int count_open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.')
            n++;
    }
    closedir(d);
    return n - 1; /* the directory's own descriptor */
}

typedef struct fd_test {
    int before;
    int after;
    int64_t settle_ns;
} fd_test;

static bool is_ipv6_unavailable(int err)
{
    return err == -EADDRNOTAVAIL || err == -EAFNOSUPPORT || err == -EPROTONOSUPPORT;
}

/* ---- addresses ------------------------------------------------------- */

static void test_addr_parse_format(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    static const struct {
        const char *host;
        int port;
        int family;
        const char *text;
    } cases[] = {
        { "127.0.0.1", 80, AF_INET, "127.0.0.1:80" },
        { "0.0.0.0", 0, AF_INET, "0.0.0.0:0" },
        { "255.255.255.255", 65535, AF_INET, "255.255.255.255:65535" },
        { "::1", 443, AF_INET6, "[::1]:443" },
        { "::", 0, AF_INET6, "[::]:0" },
        { "::ffff:127.0.0.1", 1, AF_INET6, "[::ffff:127.0.0.1]:1" },
        { "fe80::1", 8080, AF_INET6, "[fe80::1]:8080" },
        { "1111:2222:3333:4444:5555:6666:7777:8888", 65535, AF_INET6,
          "[1111:2222:3333:4444:5555:6666:7777:8888]:65535" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        print_message("%s port %d\n", cases[i].host, cases[i].port);
        weft_addr a;
        memset(&a, 0xAB, sizeof a);
        assert_int_equal(weft_addr_parse(cases[i].host, cases[i].port, &a), 0);
        assert_int_equal(a.u.sa.sa_family, cases[i].family);
        if (cases[i].family == AF_INET) {
            assert_int_equal(a.len, sizeof(struct sockaddr_in));
            struct in_addr want;
            assert_int_equal(inet_pton(AF_INET, cases[i].host, &want), 1);
            assert_memory_equal(&a.u.in4.sin_addr, &want, sizeof want);
            assert_int_equal(ntohs(a.u.in4.sin_port), cases[i].port);
        } else {
            assert_int_equal(a.len, sizeof(struct sockaddr_in6));
            struct in6_addr want;
            assert_int_equal(inet_pton(AF_INET6, cases[i].host, &want), 1);
            assert_memory_equal(&a.u.in6.sin6_addr, &want, sizeof want);
            assert_int_equal(ntohs(a.u.in6.sin6_port), cases[i].port);
        }
        assert_int_equal(weft_addr_port(&a), cases[i].port);

        char text[WEFT_ADDR_STRLEN];
        int n = weft_addr_format(&a, text, sizeof text);
        assert_int_equal(n, (int)strlen(cases[i].text));
        assert_string_equal(text, cases[i].text);

        /* Exactly the length plus the NUL fits, but one byte less does not. */
        char exact[WEFT_ADDR_STRLEN];
        assert_int_equal(weft_addr_format(&a, exact, (size_t)n + 1), n);
        assert_string_equal(exact, cases[i].text);
        assert_int_equal(weft_addr_format(&a, exact, (size_t)n), -ENOSPC);
        assert_int_equal(weft_addr_format(&a, exact, 1), -ENOSPC);
    }
    assert_int_equal(weft_shutdown(), 0);
}

static void test_addr_invalid(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    static const char *bad_hosts[] = {
        "", "localhost", "256.0.0.1", "1.2.3.4.5", "127.0.0.1:80", "[::1]",
        "::1::2", "::g", " 127.0.0.1", "127.0.0.1 ", "example.invalid",
    };
    weft_addr a;
    for (size_t i = 0; i < sizeof bad_hosts / sizeof bad_hosts[0]; i++) {
        print_message("host \"%s\"\n", bad_hosts[i]);
        assert_int_equal(weft_addr_parse(bad_hosts[i], 80, &a), WEFT_EINVAL);
    }
    assert_int_equal(weft_addr_parse(NULL, 80, &a), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("127.0.0.1", -1, &a), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("127.0.0.1", 65536, &a), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("127.0.0.1", 70000, &a), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("::1", -1, &a), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("127.0.0.1", 80, NULL), WEFT_EINVAL);

    weft_addr empty;
    memset(&empty, 0, sizeof empty);
    char text[WEFT_ADDR_STRLEN];
    assert_int_equal(weft_addr_port(NULL), WEFT_EINVAL);
    assert_int_equal(weft_addr_port(&empty), WEFT_EINVAL);
    assert_int_equal(weft_addr_format(NULL, text, sizeof text), WEFT_EINVAL);
    assert_int_equal(weft_addr_format(&empty, text, sizeof text), WEFT_EINVAL);
    assert_int_equal(weft_addr_parse("127.0.0.1", 80, &a), 0);
    assert_int_equal(weft_addr_format(&a, NULL, sizeof text), WEFT_EINVAL);
    assert_int_equal(weft_shutdown(), 0);
}

/* inet_aton's shorthand forms are no dotted quads: "1.2.3" is 1.2.0.3 and
 * "010.0.0.1" is octal for 8.0.0.1. Go's net.ParseIP rejects them too. */
static void test_addr_legacy_ipv4_forms(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    static const char *forms[] = {
        "1.2.3", "127.1", "2130706433", "0x7f.0.0.1", "010.0.0.1",
    };
    weft_addr a;
    for (size_t i = 0; i < sizeof forms / sizeof forms[0]; i++) {
        print_message("host \"%s\"\n", forms[i]);
        assert_int_equal(weft_addr_parse(forms[i], 80, &a), WEFT_EINVAL);
    }
    assert_int_equal(weft_shutdown(), 0);
}

/* ---- resolve --------------------------------------------------------- */

/* Bound for looking up a name that does not exist. */
#define UNKNOWN_NAME_LIMIT WEFT_SEC(3)

typedef struct resolve_test {
    int unknown_result;
    int64_t unknown_elapsed;
} resolve_test;

static void resolve_body(void *arg)
{
    resolve_test *t = arg;
    weft_addr out[8];

    /* localhost: at least one loopback address, each with the port. */
    int n = weft_resolve(NULL, "localhost", 8080, out, 8);
    if (!CHECK_TRUE(n >= 1 && n <= 8))
        return;
    bool loopback = false;
    for (int i = 0; i < n; i++) {
        CHECK_EQ(weft_addr_port(&out[i]), 8080);
        if (format_equals(&out[i], "127.0.0.1:8080") || format_equals(&out[i], "[::1]:8080"))
            loopback = true;
    }
    CHECK_TRUE(loopback);

    /* max 1 stores one address. */
    memset(out, 0, sizeof out);
    CHECK_EQ(weft_resolve(NULL, "localhost", 1, out, 1), 1);
    CHECK_EQ(weft_addr_port(&out[0]), 1);
    CHECK_EQ(out[1].len, 0);

    /* Numeric literals resolve to themselves. */
    n = weft_resolve(NULL, "127.0.0.1", 5, out, 8);
    CHECK_TRUE(n >= 1);
    for (int i = 0; i < n; i++)
        CHECK_TRUE(format_equals(&out[i], "127.0.0.1:5"));
    n = weft_resolve(NULL, "::1", 65535, out, 8);
    CHECK_TRUE(n >= 1);
    for (int i = 0; i < n; i++)
        CHECK_TRUE(format_equals(&out[i], "[::1]:65535"));

    /* No name under .invalid exists, because that top-level domain is
     * reserved. The context bounds the wait if no DNS server answers. */
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, UNKNOWN_NAME_LIMIT);
    t->unknown_result = weft_resolve(ctx, "no-such-host.weft-test.invalid", 80, out, 8);
    t->unknown_elapsed = weft_now() - start;
    weft_ctx_release(ctx);

    /* A context already cancelled: its error. */
    weft_ctx *cancelled = weft_ctx_with_cancel(NULL);
    weft_ctx_cancel(cancelled);
    CHECK_EQ(weft_resolve(cancelled, "localhost", 80, out, 8), WEFT_ECANCELED);
    weft_ctx_release(cancelled);
}

static void test_resolve(void **state)
{
    (void)state;
    resolve_test t = { 0, 0 };
    run_body(resolve_body, &t, 0);
    print_message("unknown name: %d (%s) after %.1f ms\n", t.unknown_result,
                  weft_err_name(t.unknown_result), t.unknown_elapsed / 1e6);
    /* WEFT_ENONAME where DNS works; another lookup error, or the context's
     * WEFT_ETIMEDOUT, where no server answers. */
    assert_true(t.unknown_result < 0);
    assert_true(t.unknown_elapsed < UNKNOWN_NAME_LIMIT + LATE);
}

/* ---- echo ------------------------------------------------------------ */

enum { ECHO_CLIENTS = 50, ECHO_MAX_MESSAGE = 700 };
#define ECHO_MESSAGES 1000

typedef struct echo_test {
    weft_listener *listener;
    int port;
    weft_chan *done;
    _Atomic int64_t echoed;   /* bytes the handlers sent back */
    _Atomic int64_t verified; /* bytes the clients got back and compared */
    _Atomic int clients_ok;
} echo_test;

typedef struct echo_conn {
    echo_test *t;
    weft_conn *conn;
} echo_conn;

typedef struct echo_client_arg {
    echo_test *t;
    unsigned id;
} echo_client_arg;

static void echo_handler(void *arg)
{
    echo_conn *h = arg;
    unsigned char buf[4096];
    /* Every pass moves at least one byte, so the bound is never reached. */
    for (long pass = 0; pass <= (long)ECHO_MESSAGES * ECHO_MAX_MESSAGE; pass++) {
        ssize_t r = weft_conn_read(NULL, h->conn, buf, sizeof buf);
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0))
            break;
        if (!CHECK_EQ(weft_conn_write(NULL, h->conn, buf, (size_t)r), 0))
            break;
        atomic_fetch_add(&h->t->echoed, r);
    }
    weft_conn_close(h->conn);
    free(h);
}

static void echo_accept_loop(void *arg)
{
    echo_test *t = arg;
    for (int i = 0; i < ECHO_CLIENTS; i++) {
        weft_conn *c = NULL;
        if (!CHECK_EQ(weft_tcp_accept(NULL, t->listener, &c), 0))
            return;
        echo_conn *h = malloc(sizeof *h);
        if (!CHECK_TRUE(h != NULL))
            return;
        *h = (echo_conn){ t, c };
        CHECK_TRUE(spawn_tracked(t->done, echo_handler, h));
    }
}

static void echo_client(void *arg)
{
    echo_client_arg *a = arg;
    weft_conn *c = NULL;
    if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", a->t->port, &c), 0))
        return;
    unsigned char out[ECHO_MAX_MESSAGE], in[ECHO_MAX_MESSAGE];
    bool ok = true;
    for (unsigned m = 0; m < ECHO_MESSAGES && ok; m++) {
        size_t size = 1 + (m * 37 + a->id * 101) % ECHO_MAX_MESSAGE;
        unsigned seed = a->id * 100000 + m;
        fill_pattern(out, size, seed, 0);
        ok = CHECK_EQ(weft_conn_write(NULL, c, out, size), 0);
        if (!ok)
            break;
        memset(in, 0, size);
        ok = CHECK_EQ(read_full(NULL, c, in, size), (ssize_t)size);
        if (!ok)
            break;
        ok = CHECK_EQ(pattern_mismatch(in, size, seed, 0), size);
        if (ok)
            atomic_fetch_add(&a->t->verified, (int64_t)size);
    }
    if (ok)
        atomic_fetch_add(&a->t->clients_ok, 1);
    weft_conn_close(c);
}

static void echo_body(void *arg)
{
    echo_test *t = arg;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 0, &t->listener), 0))
        return;
    t->port = weft_listener_port(t->listener);
    CHECK_TRUE(t->port > 0 && t->port <= 65535);
    t->done = weft_chan_make(0, 2 * ECHO_CLIENTS + 1);
    if (!CHECK_TRUE(t->done != NULL))
        return;

    int64_t start = weft_now();
    CHECK_TRUE(spawn_tracked(t->done, echo_accept_loop, t));
    echo_client_arg clients[ECHO_CLIENTS];
    for (unsigned i = 0; i < ECHO_CLIENTS; i++) {
        clients[i] = (echo_client_arg){ t, i };
        CHECK_TRUE(spawn_tracked(t->done, echo_client, &clients[i]));
    }
    /* The accept loop, every client and every handler. */
    CHECK_EQ(wait_done(t->done, 2 * ECHO_CLIENTS + 1, BODY_LIMIT - WEFT_SEC(5)),
             2 * ECHO_CLIENTS + 1);
    print_message("%d clients x %d messages echoed in %.0f ms\n", ECHO_CLIENTS,
                  ECHO_MESSAGES, (weft_now() - start) / 1e6);
    CHECK_EQ(weft_listener_close(t->listener), 0);
}

static void test_echo(void **state)
{
    (void)state;
    echo_test t = { 0 };
    run_body(echo_body, &t, 0);
    int64_t want = 0;
    for (unsigned id = 0; id < ECHO_CLIENTS; id++) {
        for (unsigned m = 0; m < ECHO_MESSAGES; m++)
            want += 1 + (m * 37 + id * 101) % ECHO_MAX_MESSAGE;
    }
    assert_int_equal(atomic_load(&t.clients_ok), ECHO_CLIENTS);
    assert_int_equal(atomic_load(&t.verified), want);
    assert_int_equal(atomic_load(&t.echoed), want);
    if (t.done)
        weft_chan_release(t.done);
}

/* ---- half close, addresses, dial by name ---------------------------- */

static void half_close_body(void *arg)
{
    (void)arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;

    static const char request[] = "request body";
    CHECK_EQ(weft_conn_write(NULL, client, request, sizeof request - 1), 0);
    CHECK_EQ(weft_conn_close_write(client), 0);
    /* Writing after the half close fails, but reading goes on. */
    CHECK_TRUE(weft_conn_write(NULL, client, "x", 1) < 0);

    char buf[64] = { 0 };
    CHECK_EQ(read_full(NULL, server, buf, sizeof buf), (ssize_t)(sizeof request - 1));
    CHECK_TRUE(memcmp(buf, request, sizeof request - 1) == 0);
    CHECK_EQ(weft_conn_read(NULL, server, buf, sizeof buf), 0);

    static const char reply[] = "reply after end of request";
    CHECK_EQ(weft_conn_write(NULL, server, reply, sizeof reply - 1), 0);
    weft_conn_close(server);

    memset(buf, 0, sizeof buf);
    CHECK_EQ(read_full(NULL, client, buf, sizeof buf), (ssize_t)(sizeof reply - 1));
    CHECK_TRUE(memcmp(buf, reply, sizeof reply - 1) == 0);
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), 0);
    weft_conn_close(client);
}

static void test_half_close(void **state)
{
    (void)state;
    run_body(half_close_body, NULL, 0);
}

static void addresses_body(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    int port = weft_listener_port(l);
    weft_addr la;
    CHECK_EQ(weft_listener_addr(l, &la), 0);
    CHECK_EQ(weft_addr_port(&la), port);
    char want[WEFT_ADDR_STRLEN];
    snprintf(want, sizeof want, "127.0.0.1:%d", port);
    CHECK_TRUE(format_equals(&la, want));

    weft_conn *client, *server;
    if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &client), 0))
        return;
    if (!CHECK_EQ(weft_tcp_accept(NULL, l, &server), 0))
        return;
    weft_addr client_local, client_peer, server_local, server_peer;
    CHECK_EQ(weft_conn_local_addr(client, &client_local), 0);
    CHECK_EQ(weft_conn_peer_addr(client, &client_peer), 0);
    CHECK_EQ(weft_conn_local_addr(server, &server_local), 0);
    CHECK_EQ(weft_conn_peer_addr(server, &server_peer), 0);
    CHECK_TRUE(format_equals(&client_peer, want));
    CHECK_TRUE(format_equals(&server_local, want));
    CHECK_TRUE(addr_equal(&client_local, &server_peer));
    CHECK_EQ(client_local.u.sa.sa_family, AF_INET);
    CHECK_TRUE(weft_addr_port(&client_local) > 0);
    CHECK_TRUE(weft_addr_port(&client_local) != port);
    weft_conn_close(client);
    weft_conn_close(server);

    /* A name is resolved: localhost reaches the listener on 127.0.0.1 even
     * when the resolver lists ::1 first, because each address is tried. */
    if (!CHECK_EQ(weft_tcp_dial(NULL, "localhost", port, &client), 0))
        return;
    if (!CHECK_EQ(weft_tcp_accept(NULL, l, &server), 0))
        return;
    CHECK_EQ(weft_conn_write(NULL, client, "by name", 7), 0);
    char buf[8] = { 0 };
    CHECK_EQ(read_full(NULL, server, buf, 7), 7);
    CHECK_TRUE(strcmp(buf, "by name") == 0);
    weft_conn_close(client);
    weft_conn_close(server);
    CHECK_EQ(weft_listener_close(l), 0);

    /* Listening on a name uses its first address, a loopback one here. */
    if (!CHECK_EQ(weft_tcp_listen("localhost", 0, 4, &l), 0))
        return;
    CHECK_EQ(weft_listener_addr(l, &la), 0);
    port = weft_listener_port(l);
    char v4[WEFT_ADDR_STRLEN], v6[WEFT_ADDR_STRLEN];
    snprintf(v4, sizeof v4, "127.0.0.1:%d", port);
    snprintf(v6, sizeof v6, "[::1]:%d", port);
    CHECK_TRUE(format_equals(&la, v4) || format_equals(&la, v6));
    CHECK_EQ(weft_listener_close(l), 0);
}

static void test_addresses(void **state)
{
    (void)state;
    run_body(addresses_body, NULL, 0);
}

typedef struct ipv6_test {
    bool unavailable;
    int listen_result;
} ipv6_test;

static void ipv6_body(void *arg)
{
    ipv6_test *t = arg;
    weft_listener *l;
    t->listen_result = weft_tcp_listen("::1", 0, 4, &l);
    if (is_ipv6_unavailable(t->listen_result)) {
        t->unavailable = true;
        return;
    }
    if (!CHECK_EQ(t->listen_result, 0))
        return;
    int port = weft_listener_port(l);
    char want[WEFT_ADDR_STRLEN];
    snprintf(want, sizeof want, "[::1]:%d", port);
    weft_addr la;
    CHECK_EQ(weft_listener_addr(l, &la), 0);
    CHECK_TRUE(format_equals(&la, want));

    weft_conn *client, *server;
    if (!CHECK_EQ(weft_tcp_dial(NULL, "::1", port, &client), 0))
        return;
    if (!CHECK_EQ(weft_tcp_accept(NULL, l, &server), 0))
        return;
    weft_addr peer, local;
    CHECK_EQ(weft_conn_peer_addr(client, &peer), 0);
    CHECK_TRUE(format_equals(&peer, want));
    CHECK_EQ(weft_conn_local_addr(client, &local), 0);
    CHECK_EQ(local.u.sa.sa_family, AF_INET6);
    unsigned char out[3000], in[3000];
    fill_pattern(out, sizeof out, 6, 0);
    CHECK_EQ(weft_conn_write(NULL, client, out, sizeof out), 0);
    CHECK_EQ(read_full(NULL, server, in, sizeof in), (ssize_t)sizeof in);
    CHECK_EQ(pattern_mismatch(in, sizeof in, 6, 0), sizeof in);
    weft_conn_close(client);
    weft_conn_close(server);
    CHECK_EQ(weft_listener_close(l), 0);

    /* UDP over ::1 too. */
    weft_udp *a, *b;
    if (!CHECK_EQ(weft_udp_bind("::1", 0, &a), 0))
        return;
    if (!CHECK_EQ(weft_udp_bind("::1", 0, &b), 0))
        return;
    weft_addr a_addr, b_addr, from;
    CHECK_EQ(weft_udp_local_addr(a, &a_addr), 0);
    CHECK_EQ(weft_udp_local_addr(b, &b_addr), 0);
    CHECK_EQ(weft_udp_send_to(NULL, a, "six", 3, &b_addr), 0);
    char buf[16] = { 0 };
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 3);
    CHECK_TRUE(memcmp(buf, "six", 3) == 0);
    CHECK_TRUE(addr_equal(&from, &a_addr));
    weft_udp_close(a);
    weft_udp_close(b);
}

static void test_ipv6_loopback(void **state)
{
    (void)state;
    ipv6_test t = { false, 0 };
    run_body(ipv6_body, &t, 0);
    if (t.unavailable) {
        print_message("no IPv6 loopback: listen on ::1 returned %s\n",
                      weft_err_name(t.listen_result));
        skip();
    }
}

/* ---- faults ---------------------------------------------------------- */

static void refused_body(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    int port = weft_listener_port(l);
    CHECK_EQ(weft_listener_close(l), 0);
    weft_conn *c = NULL;
    int64_t start = weft_now();
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &c), -ECONNREFUSED);
    CHECK_TRUE(weft_now() - start < LATE);
    /* Again through a name. */
    CHECK_EQ(weft_tcp_dial(NULL, "localhost", port, &c), -ECONNREFUSED);
}

static void test_dial_refused(void **state)
{
    (void)state;
    run_body(refused_body, NULL, 0);
}

/* The server reads one of the two bytes sent and closes: the unread byte
 * makes its kernel reset the connection. */
static void reset_body(void *arg)
{
    (void)arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    CHECK_EQ(weft_conn_write(NULL, client, "xy", 2), 0);
    char buf[16];
    CHECK_EQ(weft_conn_read(NULL, server, buf, 1), 1);
    CHECK_EQ(buf[0], 'x');
    weft_conn_close(server);

    ssize_t r = weft_conn_read(NULL, client, buf, sizeof buf);
    CHECK_TRUE(r == -ECONNRESET || r == -EPIPE);
    if (r != -ECONNRESET && r != -EPIPE)
        CHECK_EQ(r, -ECONNRESET);
    int w = weft_conn_write(NULL, client, "z", 1);
    CHECK_TRUE(w == -ECONNRESET || w == -EPIPE);
    if (w != -ECONNRESET && w != -EPIPE)
        CHECK_EQ(w, -EPIPE);
    weft_conn_close(client);
}

static void test_reset_by_peer(void **state)
{
    (void)state;
    run_body(reset_body, NULL, 0);
}

/* The peer sends half of a 10-byte message and closes. */
static void partial_body(void *arg)
{
    (void)arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    CHECK_EQ(weft_conn_write(NULL, server, "01234", 5), 0);
    weft_conn_close(server);
    char buf[10] = { 0 };
    CHECK_EQ(read_full(NULL, client, buf, sizeof buf), 5);
    CHECK_TRUE(memcmp(buf, "01234", 5) == 0);
    /* End of stream stays: every later read returns 0. */
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), 0);
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), 0);
    weft_conn_close(client);
}

static void test_eof_mid_message(void **state)
{
    (void)state;
    run_body(partial_body, NULL, 0);
}


/* Bodies run in a child process return 0 or the number of the step that
 * failed, and explain on stderr. */

static _Atomic int sigpipe_count;

static void count_sigpipe(int sig)
{
    (void)sig;
    atomic_fetch_add(&sigpipe_count, 1);
}

/* Write to a peer that has closed until a write fails. arg points to the
 * SIGPIPE handler that weft_init must have left in place. */
static int write_to_closed_main(void *arg)
{
    void (*expected)(int) = *(void (**)(int))arg;
    struct sigaction now;
    if (sigaction(SIGPIPE, NULL, &now) != 0 || now.sa_handler != expected) {
        fprintf(stderr, "SIGPIPE handler after weft_init is not the expected one\n");
        return 2;
    }
    weft_conn *client, *server;
    int r = connect_pair(&client, &server);
    if (r != 0) {
        fprintf(stderr, "connect_pair: %s\n", weft_err_name(r));
        return 3;
    }
    weft_conn_close(server);
    static unsigned char chunk[65536];
    /* The first writes may land in the kernel's buffer. The reset that the
     * peer sends back makes a later one fail. */
    int writes = 0;
    for (r = 0; writes < 1000 && r == 0; writes++)
        r = weft_conn_write(NULL, client, chunk, sizeof chunk);
    fprintf(stderr, "write %d to a closed peer: %d (%s)\n", writes, r, weft_err_name(r));
    if (r != -EPIPE && r != -ECONNRESET)
        return 4;
    r = weft_conn_write(NULL, client, chunk, sizeof chunk);
    fprintf(stderr, "the next write: %d (%s)\n", r, weft_err_name(r));
    if (r != -EPIPE && r != -ECONNRESET)
        return 5;
    weft_conn_close(client);
    return 0;
}

/* SIGPIPE at its default action: weft_init ignores it. */
static int write_to_closed_default(void *arg)
{
    (void)arg;
    signal(SIGPIPE, SIG_DFL);
    void (*expected)(int) = SIG_IGN;
    return weft_main(write_to_closed_main, &expected);
}

/* SIGPIPE caught by the program: weft_init keeps the handler, and the
 * handler never runs because sockets are written with MSG_NOSIGNAL. */
static int write_to_closed_handler(void *arg)
{
    (void)arg;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = count_sigpipe;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGPIPE, &sa, NULL) != 0)
        return 10;
    void (*expected)(int) = count_sigpipe;
    int r = weft_main(write_to_closed_main, &expected);
    if (r != 0)
        return r;
    if (atomic_load(&sigpipe_count) != 0) {
        fprintf(stderr, "SIGPIPE was raised %d times\n", atomic_load(&sigpipe_count));
        return 11;
    }
    return 0;
}

static void test_write_to_closed_peer(void **state)
{
    (void)state;
    char err[4096];
    int status = run_in_child(write_to_closed_default, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
    status = run_in_child(write_to_closed_handler, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
}

static int64_t cpu_time_ns(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (int64_t)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) * 1000000000 +
           (int64_t)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) * 1000;
}

enum { MAX_FILLERS = 4096 };
static int fillers[MAX_FILLERS];

/* One connection waits in the listener's queue while the process is out
 * of descriptors. */
static int accept_emfile_main(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (weft_tcp_listen("127.0.0.1", 0, 16, &l) != 0)
        return 2;
    int port = weft_listener_port(l);
    weft_conn *client;
    if (weft_tcp_dial(NULL, "127.0.0.1", port, &client) != 0)
        return 3;

    /* Lower the limit and open /dev/null until the table is full. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 4;
    rl.rlim_cur = 256;
    if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < rl.rlim_cur)
        rl.rlim_cur = rl.rlim_max;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
        return 5;
    int filled = 0;
    while (filled < MAX_FILLERS) {
        int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
        if (fd < 0) {
            if (errno != EMFILE)
                return 6;
            break;
        }
        fillers[filled++] = fd;
    }
    if (filled == MAX_FILLERS)
        return 7;

    weft_conn *server = NULL;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(5));
    int64_t start = weft_now();
    int r = weft_tcp_accept(ctx, l, &server);
    int64_t took = weft_now() - start;
    weft_ctx_release(ctx);
    fprintf(stderr, "accept out of descriptors: %d (%s) after %.1f ms\n", r,
            weft_err_name(r), took / 1e6);
    if (r != -EMFILE)
        return 8;
    if (took > LATE)
        return 9;

    /* Still out of descriptors, the listener stays readable. Neither an
     * accept waiting on it nor the idle runtime may spin. */
    int64_t cpu_start = cpu_time_ns();
    int64_t wall_start = weft_now();
    ctx = weft_ctx_with_timeout(NULL, WEFT_MS(300));
    r = weft_tcp_accept(ctx, l, &server);
    weft_ctx_release(ctx);
    int slept = weft_sleep(WEFT_MS(300));
    int64_t cpu = cpu_time_ns() - cpu_start;
    int64_t wall = weft_now() - wall_start;
    fprintf(stderr, "still out of descriptors: accept %d (%s); %.1f ms CPU in %.1f ms\n",
            r, weft_err_name(r), cpu / 1e6, wall / 1e6);
    if (r != -EMFILE && r != WEFT_ETIMEDOUT)
        return 10;
    if (slept != 0)
        return 11;
    if (cpu > wall / 4)
        return 12;

    /* With descriptors free again, the connection that waited is accepted. */
    for (int i = 0; i < 8 && filled > 0; i++)
        close(fillers[--filled]);
    ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(5));
    r = weft_tcp_accept(ctx, l, &server);
    weft_ctx_release(ctx);
    fprintf(stderr, "accept with descriptors free: %d (%s)\n", r, weft_err_name(r));
    if (r != 0)
        return 13;
    char buf[4] = { 0 };
    if (weft_conn_write(NULL, client, "abc", 3) != 0)
        return 14;
    if (read_full(NULL, server, buf, 3) != 3 || memcmp(buf, "abc", 3) != 0)
        return 15;
    weft_conn_close(client);
    weft_conn_close(server);

    /* And the listener goes on accepting. */
    if (weft_tcp_dial(NULL, "127.0.0.1", port, &client) != 0)
        return 16;
    ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(5));
    r = weft_tcp_accept(ctx, l, &server);
    weft_ctx_release(ctx);
    if (r != 0)
        return 17;
    weft_conn_close(client);
    weft_conn_close(server);
    while (filled > 0)
        close(fillers[--filled]);
    weft_listener_close(l);
    return 0;
}

static int accept_emfile_child(void *arg)
{
    return weft_main(accept_emfile_main, arg);
}

static void test_accept_out_of_descriptors(void **state)
{
    (void)state;
    char err[4096];
    int status = run_in_child(accept_emfile_child, NULL, err, sizeof err);
    print_message("%s", err);
    assert_int_equal(status, 0);
}

typedef struct unresolvable_test {
    int result;
    int64_t elapsed;
} unresolvable_test;

static void unresolvable_body(void *arg)
{
    unresolvable_test *t = arg;
    weft_conn *c = NULL;
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, UNKNOWN_NAME_LIMIT);
    t->result = weft_tcp_dial(ctx, "no-such-host.weft-test.invalid", 80, &c);
    t->elapsed = weft_now() - start;
    weft_ctx_release(ctx);
    CHECK_TRUE(c == NULL);
}

static void test_dial_unresolvable(void **state)
{
    (void)state;
    unresolvable_test t = { 0, 0 };
    run_body(unresolvable_body, &t, 0);
    print_message("dial to an unknown name: %d (%s) after %.1f ms\n", t.result,
                  weft_err_name(t.result), t.elapsed / 1e6);
    /* As for weft_resolve: any error, and never a hang. */
    assert_true(t.result < 0);
    assert_true(t.elapsed < UNKNOWN_NAME_LIMIT + LATE);
}

/* Handles used after their close return WEFT_ECLOSED, and nothing crashes. */
static void closed_handles_body(void *arg)
{
    (void)arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    weft_conn_close(client);
    char buf[8];
    weft_addr a;
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), WEFT_ECLOSED);
    CHECK_EQ(weft_conn_write(NULL, client, "a", 1), WEFT_ECLOSED);
    CHECK_EQ(weft_conn_close_write(client), WEFT_ECLOSED);
    CHECK_EQ(weft_conn_peer_addr(client, &a), WEFT_ECLOSED);
    CHECK_EQ(weft_conn_local_addr(client, &a), WEFT_ECLOSED);
    weft_conn_close(client);
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), WEFT_ECLOSED);
    /* The peer reads end of stream: the descriptor was closed. */
    CHECK_EQ(weft_conn_read(NULL, server, buf, sizeof buf), 0);
    weft_conn_close(server);

    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    int port = weft_listener_port(l);
    CHECK_EQ(weft_listener_close(l), 0);
    CHECK_EQ(weft_listener_close(l), WEFT_ECLOSED);
    weft_conn *c = NULL;
    CHECK_EQ(weft_tcp_accept(NULL, l, &c), WEFT_ECLOSED);
    CHECK_TRUE(c == NULL);
    CHECK_EQ(weft_listener_port(l), WEFT_ECLOSED);
    CHECK_EQ(weft_listener_addr(l, &a), WEFT_ECLOSED);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &c), -ECONNREFUSED);

    weft_udp *u;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &u), 0))
        return;
    weft_addr to;
    CHECK_EQ(weft_udp_local_addr(u, &to), 0);
    weft_udp_close(u);
    CHECK_EQ(weft_udp_send_to(NULL, u, "a", 1, &to), WEFT_ECLOSED);
    CHECK_EQ(weft_udp_recv_from(NULL, u, buf, sizeof buf, NULL), WEFT_ECLOSED);
    CHECK_EQ(weft_udp_local_addr(u, &a), WEFT_ECLOSED);
    weft_udp_close(u);
}

static void test_closed_handles(void **state)
{
    (void)state;
    run_body(closed_handles_body, NULL, 0);
}

/* ---- close while others are blocked --------------------------------- */

enum { BLOCKED_WRITE_SIZE = 32 << 20 };

typedef struct blocked_op {
    weft_ctx *ctx;
    weft_conn *conn;
    weft_listener *listener;
    weft_udp *udp;
    void *buf;
    _Atomic int *started;
    long long result;
    int64_t returned_at;
} blocked_op;

static void blocked_read(void *arg)
{
    blocked_op *op = arg;
    char buf[64];
    atomic_fetch_add(op->started, 1);
    op->result = weft_conn_read(op->ctx, op->conn, buf, sizeof buf);
    op->returned_at = weft_now();
}

static void blocked_write(void *arg)
{
    blocked_op *op = arg;
    atomic_fetch_add(op->started, 1);
    op->result = weft_conn_write(op->ctx, op->conn, op->buf, BLOCKED_WRITE_SIZE);
    op->returned_at = weft_now();
}

static void blocked_accept(void *arg)
{
    blocked_op *op = arg;
    weft_conn *c = NULL;
    atomic_fetch_add(op->started, 1);
    op->result = weft_tcp_accept(op->ctx, op->listener, &c);
    op->returned_at = weft_now();
    if (c)
        weft_conn_close(c);
}

static void blocked_recv(void *arg)
{
    blocked_op *op = arg;
    char buf[64];
    atomic_fetch_add(op->started, 1);
    op->result = weft_udp_recv_from(op->ctx, op->udp, buf, sizeof buf, NULL);
    op->returned_at = weft_now();
}

static void blocked_dial(void *arg)
{
    blocked_op *op = arg;
    weft_conn *c = NULL;
    atomic_fetch_add(op->started, 1);
    op->result = weft_tcp_dial(op->ctx, "127.0.0.1", (int)(intptr_t)op->buf, &c);
    op->returned_at = weft_now();
    if (c)
        weft_conn_close(c);
}

/* Two readers and a writer blocked on one connection. */
static void close_conn_body(void *arg)
{
    (void)arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    weft_chan *done = weft_chan_make(0, 4);
    _Atomic int started = 0;
    void *big = calloc(1, BLOCKED_WRITE_SIZE);
    if (!CHECK_TRUE(big != NULL))
        return;
    blocked_op ops[3];
    for (int i = 0; i < 3; i++)
        ops[i] = (blocked_op){ .conn = client, .started = &started, .buf = big, .result = 1 };
    CHECK_TRUE(spawn_tracked(done, blocked_read, &ops[0]));
    CHECK_TRUE(spawn_tracked(done, blocked_read, &ops[1]));
    CHECK_TRUE(spawn_tracked(done, blocked_write, &ops[2]));
    CHECK_TRUE(wait_for_count(&started, 3, LATE));
    weft_sleep(SETTLE);
    CHECK_EQ(weft_chan_try_recv(done, NULL), WEFT_EAGAIN);

    int64_t closed_at = weft_now();
    weft_conn_close(client);
    CHECK_EQ(wait_done(done, 3, LATE), 3);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ(ops[i].result, WEFT_ECLOSED);
        CHECK_RANGE(ops[i].returned_at - closed_at, 0, LATE);
    }

    /* Once they have returned the descriptor is closed: the peer reads
     * what the writer got out, then end of stream. */
    char *sink = malloc(65536);
    ssize_t r = 1;
    int64_t total = 0;
    while (r > 0 && total <= BLOCKED_WRITE_SIZE) {
        r = weft_conn_read(NULL, server, sink, 65536);
        if (r > 0)
            total += r;
    }
    CHECK_EQ(r, 0);
    CHECK_TRUE(total > 0 && total < BLOCKED_WRITE_SIZE);
    weft_conn_close(server);
    free(sink);
    free(big);
    weft_chan_release(done);
}

static void test_close_wakes_conn_waiters(void **state)
{
    (void)state;
    run_body(close_conn_body, NULL, 0);
}

static void close_listener_body(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    int port = weft_listener_port(l);
    weft_chan *done = weft_chan_make(0, 2);
    _Atomic int started = 0;
    blocked_op ops[2];
    for (int i = 0; i < 2; i++) {
        ops[i] = (blocked_op){ .listener = l, .started = &started, .result = 1 };
        CHECK_TRUE(spawn_tracked(done, blocked_accept, &ops[i]));
    }
    CHECK_TRUE(wait_for_count(&started, 2, LATE));
    weft_sleep(SETTLE);
    CHECK_EQ(weft_chan_try_recv(done, NULL), WEFT_EAGAIN);
    CHECK_EQ(weft_listener_close(l), 0);
    CHECK_EQ(wait_done(done, 2, LATE), 2);
    CHECK_EQ(ops[0].result, WEFT_ECLOSED);
    CHECK_EQ(ops[1].result, WEFT_ECLOSED);
    /* The descriptor is closed once they have returned. */
    weft_conn *c = NULL;
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &c), -ECONNREFUSED);
    weft_chan_release(done);
}

static void test_close_wakes_accept(void **state)
{
    (void)state;
    run_body(close_listener_body, NULL, 0);
}

static void close_udp_body(void *arg)
{
    (void)arg;
    weft_udp *u;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &u), 0))
        return;
    weft_chan *done = weft_chan_make(0, 2);
    _Atomic int started = 0;
    blocked_op ops[2];
    for (int i = 0; i < 2; i++) {
        ops[i] = (blocked_op){ .udp = u, .started = &started, .result = 1 };
        CHECK_TRUE(spawn_tracked(done, blocked_recv, &ops[i]));
    }
    CHECK_TRUE(wait_for_count(&started, 2, LATE));
    weft_sleep(SETTLE);
    CHECK_EQ(weft_chan_try_recv(done, NULL), WEFT_EAGAIN);
    weft_udp_close(u);
    CHECK_EQ(wait_done(done, 2, LATE), 2);
    CHECK_EQ(ops[0].result, WEFT_ECLOSED);
    CHECK_EQ(ops[1].result, WEFT_ECLOSED);
    weft_chan_release(done);
}

static void test_close_wakes_udp_recv(void **state)
{
    (void)state;
    run_body(close_udp_body, NULL, 0);
}

/* ---- contexts -------------------------------------------------------- */

typedef struct deadline_test {
    int64_t read_elapsed;
    int64_t write_elapsed;
    int64_t write_prefix;
} deadline_test;

static void read_deadline_body(void *arg)
{
    deadline_test *t = arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    char buf[64] = { 0 };

    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    CHECK_EQ(weft_conn_read(ctx, client, buf, sizeof buf), WEFT_ETIMEDOUT);
    t->read_elapsed = weft_now() - start;
    CHECK_RANGE(t->read_elapsed, WEFT_MS(45), LATE);
    /* The context stays ended: another read with it returns at once. */
    CHECK_EQ(weft_conn_read(ctx, client, buf, sizeof buf), WEFT_ETIMEDOUT);
    weft_ctx_release(ctx);

    /* A few more short deadlines in a row, then data: nothing is lost. */
    for (int i = 0; i < 3; i++) {
        ctx = weft_ctx_with_timeout(NULL, WEFT_MS(10));
        CHECK_EQ(weft_conn_read(ctx, client, buf, sizeof buf), WEFT_ETIMEDOUT);
        weft_ctx_release(ctx);
    }
    static const char later[] = "written after the deadline";
    CHECK_EQ(weft_conn_write(NULL, server, later, sizeof later - 1), 0);
    memset(buf, 0, sizeof buf);
    CHECK_EQ(read_full(NULL, client, buf, sizeof later - 1), (ssize_t)(sizeof later - 1));
    CHECK_TRUE(memcmp(buf, later, sizeof later - 1) == 0);

    /* A deadline that does not pass: the data. */
    ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(10));
    CHECK_EQ(weft_conn_write(NULL, server, "more", 4), 0);
    CHECK_EQ(read_full(ctx, client, buf, 4), 4);
    CHECK_TRUE(memcmp(buf, "more", 4) == 0);
    weft_ctx_release(ctx);

    /* Cancelled by another coroutine while blocked. */
    weft_chan *done = weft_chan_make(0, 1);
    _Atomic int started = 0;
    blocked_op op = { .ctx = weft_ctx_with_cancel(NULL), .conn = client,
                      .started = &started, .result = 1 };
    CHECK_TRUE(spawn_tracked(done, blocked_read, &op));
    CHECK_TRUE(wait_for_count(&started, 1, LATE));
    weft_sleep(SETTLE);
    int64_t cancelled_at = weft_now();
    weft_ctx_cancel(op.ctx);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    CHECK_EQ(op.result, WEFT_ECANCELED);
    CHECK_RANGE(op.returned_at - cancelled_at, 0, LATE);
    weft_ctx_release(op.ctx);
    CHECK_EQ(weft_conn_write(NULL, server, "z", 1), 0);
    CHECK_EQ(weft_conn_read(NULL, client, buf, sizeof buf), 1);
    CHECK_EQ(buf[0], 'z');

    weft_chan_release(done);
    weft_conn_close(client);
    weft_conn_close(server);
}

static void test_read_deadline(void **state)
{
    (void)state;
    deadline_test t = { 0 };
    run_body(read_deadline_body, &t, 0);
    print_message("50 ms read deadline returned after %.1f ms\n", t.read_elapsed / 1e6);
}

enum { DEADLINE_WRITE_SIZE = 32 << 20, MARKER_SIZE = 16 };

typedef struct stream_reader {
    weft_conn *conn;
    int64_t prefix;  /* pattern bytes before the first marker byte */
    int64_t markers; /* 0xFF bytes after them */
    bool ok;
} stream_reader;

/* Read to end of stream, checking that it is a prefix of pattern 9
 * followed by marker bytes only. */
static void read_prefix_then_markers(void *arg)
{
    stream_reader *s = arg;
    unsigned char *buf = malloc(65536);
    if (!CHECK_TRUE(buf != NULL))
        return;
    s->ok = true;
    for (int64_t pass = 0; pass <= DEADLINE_WRITE_SIZE + MARKER_SIZE; pass++) {
        ssize_t r = weft_conn_read(NULL, s->conn, buf, 65536);
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0)) {
            s->ok = false;
            break;
        }
        for (ssize_t i = 0; i < r && s->ok; i++) {
            if (s->markers == 0 && buf[i] != 0xFF) {
                s->ok = CHECK_EQ(buf[i], pattern_byte(9, (size_t)s->prefix));
                s->prefix++;
            } else {
                s->ok = CHECK_EQ(buf[i], 0xFF);
                s->markers++;
            }
        }
        if (!s->ok)
            break;
    }
    free(buf);
}

/* A write ended by its deadline may have sent a prefix. What follows that
 * prefix on the stream is the next write, with no byte lost or repeated. */
static void write_deadline_body(void *arg)
{
    deadline_test *t = arg;
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    unsigned char *big = malloc(DEADLINE_WRITE_SIZE);
    if (!CHECK_TRUE(big != NULL))
        return;
    fill_pattern(big, DEADLINE_WRITE_SIZE, 9, 0);

    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(100));
    CHECK_EQ(weft_conn_write(ctx, client, big, DEADLINE_WRITE_SIZE), WEFT_ETIMEDOUT);
    t->write_elapsed = weft_now() - start;
    weft_ctx_release(ctx);
    CHECK_RANGE(t->write_elapsed, WEFT_MS(95), LATE);

    weft_chan *done = weft_chan_make(0, 1);
    stream_reader s = { .conn = server };
    CHECK_TRUE(spawn_tracked(done, read_prefix_then_markers, &s));
    unsigned char marker[MARKER_SIZE];
    memset(marker, 0xFF, sizeof marker);
    CHECK_EQ(weft_conn_write(NULL, client, marker, sizeof marker), 0);
    CHECK_EQ(weft_conn_close_write(client), 0);
    CHECK_EQ(wait_done(done, 1, WEFT_SEC(20)), 1);
    t->write_prefix = s.prefix;
    CHECK_TRUE(s.ok);
    CHECK_TRUE(s.prefix > 0);
    CHECK_TRUE(s.prefix < DEADLINE_WRITE_SIZE);
    CHECK_EQ(s.markers, MARKER_SIZE);

    weft_chan_release(done);
    weft_conn_close(client);
    weft_conn_close(server);
    free(big);
}

static void test_write_deadline(void **state)
{
    (void)state;
    deadline_test t = { 0 };
    run_body(write_deadline_body, &t, 0);
    print_message("100 ms write deadline returned after %.1f ms with %lld bytes sent\n",
                  t.write_elapsed / 1e6, (long long)t.write_prefix);
}

static void accept_cancel_body(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    weft_chan *done = weft_chan_make(0, 1);
    _Atomic int started = 0;
    blocked_op op = { .ctx = weft_ctx_with_cancel(NULL), .listener = l,
                      .started = &started, .result = 1 };
    CHECK_TRUE(spawn_tracked(done, blocked_accept, &op));
    CHECK_TRUE(wait_for_count(&started, 1, LATE));
    weft_sleep(SETTLE);
    int64_t cancelled_at = weft_now();
    weft_ctx_cancel(op.ctx);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    CHECK_EQ(op.result, WEFT_ECANCELED);
    CHECK_RANGE(op.returned_at - cancelled_at, 0, LATE);

    /* A context that has already ended: its error at once. */
    weft_conn *c = NULL;
    CHECK_EQ(weft_tcp_accept(op.ctx, l, &c), WEFT_ECANCELED);
    weft_ctx_release(op.ctx);

    /* A deadline. */
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    CHECK_EQ(weft_tcp_accept(ctx, l, &c), WEFT_ETIMEDOUT);
    CHECK_RANGE(weft_now() - start, WEFT_MS(45), LATE);
    weft_ctx_release(ctx);

    /* The listener still works. */
    weft_conn *client, *server;
    if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(l), &client), 0))
        return;
    if (!CHECK_EQ(weft_tcp_accept(NULL, l, &server), 0))
        return;
    CHECK_EQ(weft_conn_write(NULL, client, "k", 1), 0);
    char b = 0;
    CHECK_EQ(weft_conn_read(NULL, server, &b, 1), 1);
    CHECK_EQ(b, 'k');
    weft_conn_close(client);
    weft_conn_close(server);
    CHECK_EQ(weft_listener_close(l), 0);
    weft_chan_release(done);
}

static void test_accept_cancel(void **state)
{
    (void)state;
    run_body(accept_cancel_body, NULL, 0);
}

typedef struct dial_cancel_test {
    bool no_blocked_dial;
    int queued;
} dial_cancel_test;

/* A dial blocks when the listener's accept queue is full, because the
 * kernel then drops the SYN. */
static void dial_cancel_body(void *arg)
{
    dial_cancel_test *t = arg;
    weft_ctx *cancelled = weft_ctx_with_cancel(NULL);
    weft_ctx_cancel(cancelled);
    weft_conn *c = NULL;
    CHECK_EQ(weft_tcp_dial(cancelled, "127.0.0.1", 9, &c), WEFT_ECANCELED);
    CHECK_EQ(weft_tcp_dial(cancelled, "localhost", 9, &c), WEFT_ECANCELED);
    weft_ctx_release(cancelled);

    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 1, &l), 0))
        return;
    int port = weft_listener_port(l);
    enum { MAX_QUEUED = 8 };
    weft_conn *queued[MAX_QUEUED];
    bool blocked = false;
    while (t->queued < MAX_QUEUED && !blocked) {
        weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(200));
        int r = weft_tcp_dial(ctx, "127.0.0.1", port, &queued[t->queued]);
        weft_ctx_release(ctx);
        if (r == WEFT_ETIMEDOUT)
            blocked = true;
        else if (CHECK_EQ(r, 0))
            t->queued++;
        else
            break;
    }
    if (!blocked) {
        t->no_blocked_dial = true;
    } else {
        weft_chan *done = weft_chan_make(0, 1);
        _Atomic int started = 0;
        blocked_op op = { .ctx = weft_ctx_with_cancel(NULL), .buf = (void *)(intptr_t)port,
                          .started = &started, .result = 1 };
        CHECK_TRUE(spawn_tracked(done, blocked_dial, &op));
        CHECK_TRUE(wait_for_count(&started, 1, LATE));
        weft_sleep(SETTLE);
        int64_t cancelled_at = weft_now();
        weft_ctx_cancel(op.ctx);
        CHECK_EQ(wait_done(done, 1, LATE), 1);
        CHECK_EQ(op.result, WEFT_ECANCELED);
        CHECK_RANGE(op.returned_at - cancelled_at, 0, LATE);
        weft_ctx_release(op.ctx);
        weft_chan_release(done);

        int64_t start = weft_now();
        weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
        CHECK_EQ(weft_tcp_dial(ctx, "127.0.0.1", port, &c), WEFT_ETIMEDOUT);
        int64_t elapsed = weft_now() - start;
        CHECK_RANGE(elapsed, WEFT_MS(45), LATE);
        weft_ctx_release(ctx);
    }
    for (int i = 0; i < t->queued; i++)
        weft_conn_close(queued[i]);
    CHECK_EQ(weft_listener_close(l), 0);
}

static void test_dial_cancel(void **state)
{
    (void)state;
    dial_cancel_test t = { false, 0 };
    run_body(dial_cancel_body, &t, 0);
    if (t.no_blocked_dial) {
        print_message("no dial blocked after %d queued connections\n", t.queued);
        skip();
    }
}

/* ---- concurrent readers and writers --------------------------------- */

enum { READERS = 8, READERS_TOTAL = 4 << 20 };

typedef struct readers_test {
    weft_conn *conn;
    _Atomic int64_t total;
    _Atomic int64_t histogram[256];
} readers_test;

typedef struct reader_arg {
    readers_test *t;
    unsigned id;
} reader_arg;

static void count_reader(void *arg)
{
    reader_arg *a = arg;
    size_t size = 1 + (a->id * 977) % 8192;
    unsigned char *buf = malloc(size);
    int64_t *histogram = calloc(256, sizeof *histogram);
    if (!CHECK_TRUE(buf != NULL && histogram != NULL))
        return;
    int64_t total = 0;
    for (int64_t pass = 0; pass <= READERS_TOTAL; pass++) {
        ssize_t r = weft_conn_read(NULL, a->t->conn, buf, size);
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0))
            break;
        total += r;
        for (ssize_t i = 0; i < r; i++)
            histogram[buf[i]]++;
    }
    atomic_fetch_add(&a->t->total, total);
    for (int v = 0; v < 256; v++)
        atomic_fetch_add(&a->t->histogram[v], histogram[v]);
    free(histogram);
    free(buf);
}

static void concurrent_readers_body(void *arg)
{
    readers_test *t = arg;
    weft_conn *server;
    if (!CHECK_EQ(connect_pair(&t->conn, &server), 0))
        return;
    weft_chan *done = weft_chan_make(0, READERS);
    reader_arg args[READERS];
    for (unsigned i = 0; i < READERS; i++) {
        args[i] = (reader_arg){ t, i };
        CHECK_TRUE(spawn_tracked(done, count_reader, &args[i]));
    }
    unsigned char *chunk = malloc(65536);
    if (!CHECK_TRUE(chunk != NULL))
        return;
    for (size_t off = 0; off < READERS_TOTAL; off += 65536) {
        fill_pattern(chunk, 65536, 3, off);
        if (!CHECK_EQ(weft_conn_write(NULL, server, chunk, 65536), 0))
            break;
    }
    weft_conn_close(server);
    CHECK_EQ(wait_done(done, READERS, WEFT_SEC(20)), READERS);
    weft_conn_close(t->conn);
    weft_chan_release(done);
    free(chunk);
}

static void test_concurrent_readers(void **state)
{
    (void)state;
    readers_test *t = calloc(1, sizeof *t);
    assert_non_null(t);
    run_body(concurrent_readers_body, t, 0);
    assert_int_equal(atomic_load(&t->total), READERS_TOTAL);
    int64_t want[256] = { 0 };
    for (size_t i = 0; i < READERS_TOTAL; i++)
        want[pattern_byte(3, i)]++;
    for (int v = 0; v < 256; v++)
        assert_int_equal(atomic_load(&t->histogram[v]), want[v]);
    free(t);
}

enum { WRITERS = 8, RECORD_HEADER = 12, RECORD_MAX = 96 * 1024 };
#define RECORDS_PER_WRITER SCALE(40)

typedef struct writers_test {
    weft_conn *conn;
    int records_read;
} writers_test;

typedef struct writer_arg {
    writers_test *t;
    uint32_t id;
} writer_arg;

static uint32_t record_length(uint32_t id, uint32_t seq)
{
    return 1 + (seq * 7919u + id * 104729u) % RECORD_MAX;
}

/* Each write is one record: id, sequence number, length, payload. */
static void record_writer(void *arg)
{
    writer_arg *a = arg;
    unsigned char *buf = malloc(RECORD_HEADER + RECORD_MAX);
    if (!CHECK_TRUE(buf != NULL))
        return;
    for (uint32_t seq = 0; seq < RECORDS_PER_WRITER; seq++) {
        uint32_t len = record_length(a->id, seq);
        uint32_t header[3] = { a->id, seq, len };
        memcpy(buf, header, sizeof header);
        fill_pattern(buf + RECORD_HEADER, len, a->id * 1000 + seq, 0);
        if (!CHECK_EQ(weft_conn_write(NULL, a->t->conn, buf, RECORD_HEADER + len), 0))
            break;
    }
    free(buf);
}

static void concurrent_writers_body(void *arg)
{
    writers_test *t = arg;
    weft_conn *server;
    if (!CHECK_EQ(connect_pair(&t->conn, &server), 0))
        return;
    weft_chan *done = weft_chan_make(0, WRITERS);
    writer_arg args[WRITERS];
    for (uint32_t i = 0; i < WRITERS; i++) {
        args[i] = (writer_arg){ t, i };
        CHECK_TRUE(spawn_tracked(done, record_writer, &args[i]));
    }

    /* Records arrive whole, each writer's in its own order. */
    unsigned char *payload = malloc(RECORD_MAX);
    if (!CHECK_TRUE(payload != NULL))
        return;
    uint32_t next_seq[WRITERS] = { 0 };
    for (int k = 0; k < WRITERS * RECORDS_PER_WRITER; k++) {
        uint32_t header[3];
        if (!CHECK_EQ(read_full(NULL, server, header, sizeof header), (ssize_t)sizeof header))
            break;
        uint32_t id = header[0], seq = header[1], len = header[2];
        if (!CHECK_TRUE(id < WRITERS))
            break;
        if (!CHECK_EQ(seq, next_seq[id]))
            break;
        if (!CHECK_EQ(len, record_length(id, seq)))
            break;
        if (!CHECK_EQ(read_full(NULL, server, payload, len), (ssize_t)len))
            break;
        if (!CHECK_EQ(pattern_mismatch(payload, len, id * 1000 + seq, 0), len))
            break;
        next_seq[id]++;
        t->records_read++;
    }
    CHECK_EQ(wait_done(done, WRITERS, WEFT_SEC(20)), WRITERS);
    weft_conn_close(t->conn);
    /* Nothing follows the last record. */
    char extra;
    CHECK_EQ(weft_conn_read(NULL, server, &extra, 1), 0);
    weft_conn_close(server);
    weft_chan_release(done);
    free(payload);
}

static void test_concurrent_writers(void **state)
{
    (void)state;
    writers_test t = { 0 };
    run_body(concurrent_writers_body, &t, 0);
    assert_int_equal(t.records_read, WRITERS * RECORDS_PER_WRITER);
}

/* ---- a large write to a slow reader --------------------------------- */

#if TEST_SANITIZED
#define LARGE_WRITE_SIZE (8u << 20)
#else
#define LARGE_WRITE_SIZE (16u << 20)
#endif

typedef struct large_write_test {
    weft_conn *client;
    int write_result;
    int64_t received;
    int64_t write_returned_at;
    int64_t read_finished_at;
} large_write_test;

static void large_writer(void *arg)
{
    large_write_test *t = arg;
    unsigned char *buf = malloc(LARGE_WRITE_SIZE);
    if (!CHECK_TRUE(buf != NULL))
        return;
    fill_pattern(buf, LARGE_WRITE_SIZE, 4, 0);
    t->write_result = weft_conn_write(NULL, t->client, buf, LARGE_WRITE_SIZE);
    t->write_returned_at = weft_now();
    free(buf);
    weft_conn_close(t->client);
}

static void large_write_body(void *arg)
{
    large_write_test *t = arg;
    weft_conn *server;
    if (!CHECK_EQ(connect_pair(&t->client, &server), 0))
        return;
    weft_chan *done = weft_chan_make(0, 1);
    t->write_result = 1;
    CHECK_TRUE(spawn_tracked(done, large_writer, t));

    /* Small reads with a pause every 64 of them. */
    unsigned char buf[4096];
    bool ok = true;
    for (int64_t pass = 0; pass <= LARGE_WRITE_SIZE && ok; pass++) {
        ssize_t r = weft_conn_read(NULL, server, buf, sizeof buf);
        if (r == 0)
            break;
        ok = CHECK_TRUE(r > 0);
        if (!ok)
            break;
        ok = CHECK_EQ(pattern_mismatch(buf, (size_t)r, 4, (size_t)t->received), r);
        t->received += r;
        if (pass % 64 == 63)
            weft_sleep(WEFT_MS(1));
    }
    t->read_finished_at = weft_now();
    CHECK_EQ(wait_done(done, 1, WEFT_SEC(20)), 1);
    weft_conn_close(server);
    weft_chan_release(done);
}

static void test_large_write_slow_reader(void **state)
{
    (void)state;
    large_write_test t = { 0 };
    run_body(large_write_body, &t, 0);
    assert_int_equal(t.write_result, 0);
    assert_int_equal(t.received, LARGE_WRITE_SIZE);
}

/* ---- UDP ------------------------------------------------------------- */

typedef struct udp_test {
    int64_t recv_elapsed;
} udp_test;

static void udp_body(void *arg)
{
    udp_test *t = arg;
    weft_udp *a, *b;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &a), 0))
        return;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &b), 0))
        return;
    weft_addr a_addr, b_addr, from;
    CHECK_EQ(weft_udp_local_addr(a, &a_addr), 0);
    CHECK_EQ(weft_udp_local_addr(b, &b_addr), 0);
    char want[WEFT_ADDR_STRLEN];
    snprintf(want, sizeof want, "127.0.0.1:%d", weft_addr_port(&b_addr));
    CHECK_TRUE(format_equals(&b_addr, want));
    CHECK_TRUE(weft_addr_port(&a_addr) > 0);
    CHECK_TRUE(weft_addr_port(&a_addr) != weft_addr_port(&b_addr));

    /* Round trip, the reply going to the address the request came from. */
    static unsigned char buf[65536];
    CHECK_EQ(weft_udp_send_to(NULL, a, "ping", 4, &b_addr), 0);
    memset(&from, 0, sizeof from);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 4);
    CHECK_TRUE(memcmp(buf, "ping", 4) == 0);
    CHECK_TRUE(addr_equal(&from, &a_addr));
    CHECK_EQ(weft_udp_send_to(NULL, b, "pong", 4, &from), 0);
    CHECK_EQ(weft_udp_recv_from(NULL, a, buf, sizeof buf, NULL), 4);
    CHECK_TRUE(memcmp(buf, "pong", 4) == 0);

    /* A long datagram is truncated to the buffer, and its rest is dropped. */
    static unsigned char long_datagram[1000];
    fill_pattern(long_datagram, sizeof long_datagram, 5, 0);
    CHECK_EQ(weft_udp_send_to(NULL, a, long_datagram, sizeof long_datagram, &b_addr), 0);
    memset(buf, 0, 200);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, 100, &from), 100);
    CHECK_EQ(pattern_mismatch(buf, 100, 5, 0), 100);
    CHECK_EQ(buf[100], 0);
    CHECK_EQ(weft_udp_send_to(NULL, a, "next", 4, &b_addr), 0);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 4);
    CHECK_TRUE(memcmp(buf, "next", 4) == 0);

    /* An empty datagram is received as 0 bytes from its sender. */
    CHECK_EQ(weft_udp_send_to(NULL, a, buf, 0, &b_addr), 0);
    memset(&from, 0, sizeof from);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 0);
    CHECK_TRUE(addr_equal(&from, &a_addr));
    CHECK_EQ(weft_udp_send_to(NULL, a, "after", 5, &b_addr), 0);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 5);
    CHECK_TRUE(memcmp(buf, "after", 5) == 0);

    /* The largest UDP payload over IPv4 arrives whole. */
    static unsigned char largest[65507];
    fill_pattern(largest, sizeof largest, 8, 0);
    CHECK_EQ(weft_udp_send_to(NULL, a, largest, sizeof largest, &b_addr), 0);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), (ssize_t)sizeof largest);
    CHECK_EQ(pattern_mismatch(buf, sizeof largest, 8, 0), sizeof largest);
    /* One byte more does not fit in a datagram. */
    static unsigned char too_big[65508];
    CHECK_EQ(weft_udp_send_to(NULL, a, too_big, sizeof too_big, &b_addr), -EMSGSIZE);

    /* A deadline, after which the socket still receives. */
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(50));
    CHECK_EQ(weft_udp_recv_from(ctx, b, buf, sizeof buf, &from), WEFT_ETIMEDOUT);
    t->recv_elapsed = weft_now() - start;
    CHECK_RANGE(t->recv_elapsed, WEFT_MS(45), LATE);
    weft_ctx_release(ctx);
    CHECK_EQ(weft_udp_send_to(NULL, a, "late", 4, &b_addr), 0);
    CHECK_EQ(weft_udp_recv_from(NULL, b, buf, sizeof buf, &from), 4);
    CHECK_TRUE(memcmp(buf, "late", 4) == 0);

    /* A burst small enough for the default receive buffer: every datagram
     * arrives once. */
    enum { BURST = 50 };
    bool seen[BURST] = { false };
    for (int i = 0; i < BURST; i++) {
        char msg[32];
        int n = snprintf(msg, sizeof msg, "datagram %d", i);
        CHECK_EQ(weft_udp_send_to(NULL, a, msg, (size_t)n, &b_addr), 0);
    }
    for (int i = 0; i < BURST; i++) {
        ctx = weft_ctx_with_timeout(NULL, LATE);
        ssize_t r = weft_udp_recv_from(ctx, b, buf, sizeof buf - 1, &from);
        weft_ctx_release(ctx);
        if (!CHECK_TRUE(r > 0))
            break;
        buf[r] = '\0';
        int seq = -1;
        CHECK_EQ(sscanf((char *)buf, "datagram %d", &seq), 1);
        if (CHECK_TRUE(seq >= 0 && seq < BURST)) {
            CHECK_TRUE(!seen[seq]);
            seen[seq] = true;
        }
    }
    weft_udp_close(a);
    weft_udp_close(b);
}

static void test_udp(void **state)
{
    (void)state;
    udp_test t = { 0 };
    run_body(udp_body, &t, 0);
    print_message("50 ms receive deadline returned after %.1f ms\n", t.recv_elapsed / 1e6);
}

/* ---- deadlines racing with arrivals ---------------------------------- */

/* Short deadlines, 0 to 175 us, that often end just as data arrives. A
 * call that took something from the kernel must return it, never drop it
 * and report the deadline. */
static weft_ctx *short_deadline(long iteration)
{
    return weft_ctx_with_timeout(NULL, WEFT_US(iteration % 8 * 25));
}

enum { RACE_BYTES = 20000, RACE_CONNS = 200, RACE_DATAGRAMS = 500 };

typedef struct race_test {
    weft_conn *writer_conn;
    weft_listener *listener;
    weft_udp *sender;
    weft_addr receiver_addr;
    weft_chan *next;  /* the receiver's go-ahead for each datagram */
    int64_t done_count;
    long deadlines;   /* calls ended by their deadline */
} race_test;

static void trickle_writer(void *arg)
{
    race_test *t = arg;
    unsigned char chunk[8];
    size_t off = 0;
    for (unsigned i = 0; off < RACE_BYTES; i++) {
        size_t n = 1 + i % 7;
        if (n > RACE_BYTES - off)
            n = RACE_BYTES - off;
        fill_pattern(chunk, n, 11, off);
        if (!CHECK_EQ(weft_conn_write(NULL, t->writer_conn, chunk, n), 0))
            break;
        off += n;
        if (i % 16 == 15)
            weft_sleep(WEFT_US(50));
        else
            weft_yield();
    }
    weft_conn_close(t->writer_conn);
}

static void read_race_body(void *arg)
{
    race_test *t = arg;
    weft_conn *reader;
    if (!CHECK_EQ(connect_pair(&reader, &t->writer_conn), 0))
        return;
    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, trickle_writer, t));
    unsigned char buf[64];
    int64_t off = 0;
    int64_t give_up = weft_now() + WEFT_SEC(20);
    for (long i = 0; i < 50L * RACE_BYTES && weft_now() < give_up; i++) {
        weft_ctx *ctx = short_deadline(i);
        ssize_t r = weft_conn_read(ctx, reader, buf, sizeof buf);
        weft_ctx_release(ctx);
        if (r == WEFT_ETIMEDOUT) {
            t->deadlines++;
            continue;
        }
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0))
            break;
        if (!CHECK_EQ(pattern_mismatch(buf, (size_t)r, 11, (size_t)off), r))
            break;
        off += r;
    }
    t->done_count = off;
    CHECK_EQ(off, RACE_BYTES);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    weft_conn_close(reader);
    weft_chan_release(done);
}

static void test_read_deadline_race(void **state)
{
    (void)state;
    race_test t = { 0 };
    run_body(read_race_body, &t, 0);
    print_message("%lld bytes read whole; %ld reads ended by their deadline\n",
                  (long long)t.done_count, t.deadlines);
    assert_int_equal(t.done_count, RACE_BYTES);
}

static void trickle_dialer(void *arg)
{
    race_test *t = arg;
    int port = weft_listener_port(t->listener);
    for (uint32_t id = 0; id < RACE_CONNS; id++) {
        weft_conn *c;
        if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &c), 0))
            break;
        CHECK_EQ(weft_conn_write(NULL, c, &id, sizeof id), 0);
        weft_conn_close(c);
        if (id % 8 == 7)
            weft_sleep(WEFT_US(100));
        else
            weft_yield();
    }
}

static void accept_race_body(void *arg)
{
    race_test *t = arg;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 0, &t->listener), 0))
        return;
    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, trickle_dialer, t));
    bool seen[RACE_CONNS] = { false };
    int64_t give_up = weft_now() + WEFT_SEC(20);
    for (long i = 0; i < 1000L * RACE_CONNS && t->done_count < RACE_CONNS &&
                     weft_now() < give_up; i++) {
        weft_ctx *ctx = short_deadline(i);
        weft_conn *c = NULL;
        int r = weft_tcp_accept(ctx, t->listener, &c);
        weft_ctx_release(ctx);
        if (r == WEFT_ETIMEDOUT) {
            t->deadlines++;
            continue;
        }
        if (!CHECK_EQ(r, 0))
            break;
        uint32_t id = UINT32_MAX;
        CHECK_EQ(read_full(NULL, c, &id, sizeof id), (ssize_t)sizeof id);
        weft_conn_close(c);
        if (!CHECK_TRUE(id < RACE_CONNS))
            break;
        CHECK_TRUE(!seen[id]);
        seen[id] = true;
        t->done_count++;
    }
    CHECK_EQ(t->done_count, RACE_CONNS);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    CHECK_EQ(weft_listener_close(t->listener), 0);
    weft_chan_release(done);
}

static void test_accept_deadline_race(void **state)
{
    (void)state;
    race_test t = { 0 };
    run_body(accept_race_body, &t, 0);
    print_message("%lld connections accepted; %ld accepts ended by their deadline\n",
                  (long long)t.done_count, t.deadlines);
    assert_int_equal(t.done_count, RACE_CONNS);
}

/* Each datagram is sent only after the receiver's go-ahead, so none is
 * dropped for want of buffer space. */
static void paced_sender(void *arg)
{
    race_test *t = arg;
    for (uint32_t id = 0; id < RACE_DATAGRAMS; id++) {
        if (!CHECK_EQ(weft_chan_recv(t->next, NULL), 0))
            break;
        if (id % 3 == 0)
            weft_sleep(WEFT_US(id % 200));
        CHECK_EQ(weft_udp_send_to(NULL, t->sender, &id, sizeof id, &t->receiver_addr), 0);
    }
}

static void udp_race_body(void *arg)
{
    race_test *t = arg;
    weft_udp *receiver;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &receiver), 0))
        return;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &t->sender), 0))
        return;
    CHECK_EQ(weft_udp_local_addr(receiver, &t->receiver_addr), 0);
    t->next = weft_chan_make(0, 1);
    weft_chan *done = weft_chan_make(0, 1);
    CHECK_TRUE(spawn_tracked(done, paced_sender, t));
    int64_t give_up = weft_now() + WEFT_SEC(20);
    long i = 0;
    for (uint32_t want = 0; want < RACE_DATAGRAMS; want++) {
        if (!CHECK_EQ(weft_chan_send(t->next, NULL), 0))
            break;
        ssize_t r = WEFT_ETIMEDOUT;
        while (r == WEFT_ETIMEDOUT && weft_now() < give_up) {
            weft_ctx *ctx = short_deadline(i++);
            uint32_t id = UINT32_MAX;
            r = weft_udp_recv_from(ctx, receiver, &id, sizeof id, NULL);
            weft_ctx_release(ctx);
            if (r == WEFT_ETIMEDOUT)
                t->deadlines++;
            else if (CHECK_EQ(r, sizeof id) && CHECK_EQ(id, want))
                t->done_count++;
        }
        if (!CHECK_EQ(r, sizeof(uint32_t)))
            break;
    }
    CHECK_EQ(t->done_count, RACE_DATAGRAMS);
    CHECK_EQ(wait_done(done, 1, LATE), 1);
    weft_udp_close(receiver);
    weft_udp_close(t->sender);
    weft_chan_release(t->next);
    weft_chan_release(done);
}

static void test_udp_deadline_race(void **state)
{
    (void)state;
    race_test t = { 0 };
    run_body(udp_race_body, &t, 0);
    print_message("%lld datagrams received in order; %ld receives ended by their deadline\n",
                  (long long)t.done_count, t.deadlines);
    assert_int_equal(t.done_count, RACE_DATAGRAMS);
}

/* ---- close racing with reads and writes ------------------------------ */

#if defined(TEST_TSAN)
enum { CLOSE_ROUNDS = 400 };
#else
enum { CLOSE_ROUNDS = 1000 };
#endif

typedef struct close_race {
    weft_conn *conn;
    long long result;
    int64_t moved;
} close_race;

static void read_until_error(void *arg)
{
    close_race *c = arg;
    char buf[512];
    c->result = 0;
    for (long i = 0; i < 1000000; i++) {
        ssize_t r = weft_conn_read(NULL, c->conn, buf, sizeof buf);
        if (r <= 0) {
            c->result = r;
            break;
        }
        c->moved += r;
    }
}

static void write_until_error(void *arg)
{
    close_race *c = arg;
    static const char buf[4096];
    c->result = 0;
    for (long i = 0; i < 1000000; i++) {
        int r = weft_conn_write(NULL, c->conn, buf, sizeof buf);
        if (r != 0) {
            c->result = r;
            break;
        }
        c->moved += (int64_t)sizeof buf;
    }
}

static void *close_conn_on_thread(void *arg)
{
    weft_conn_close(arg);
    return NULL;
}

/* Close a connection while a reader and a writer use it, after a varying
 * head start. Every third close comes from a plain thread of the blocking
 * pool. The peer drains what was written and reads end of stream, and no
 * descriptor stays open. */
/* Wait up to LATE for the number of open descriptors to reach want, and
 * return the last count. A close may finish on another thread just after
 * the call that caused it returned. */
static int settle_open_fds(int want)
{
    int64_t start = weft_now();
    int n = count_open_fds();
    while (n != want && weft_now() - start < LATE) {
        weft_sleep(WEFT_MS(1));
        n = count_open_fds();
    }
    return n;
}

static void close_race_body(void *arg)
{
    fd_test *counts = arg;
    weft_conn *warm_client, *warm_server;
    if (!CHECK_EQ(connect_pair(&warm_client, &warm_server), 0))
        return;
    weft_conn_close(warm_client);
    weft_conn_close(warm_server);
    counts->before = count_open_fds();

    weft_chan *users_done = weft_chan_make(0, 2);
    weft_chan *peer_done = weft_chan_make(0, 1);
    for (int round = 0; round < CLOSE_ROUNDS; round++) {
        weft_conn *client, *server;
        if (!CHECK_EQ(connect_pair(&client, &server), 0))
            break;
        close_race reader = { .conn = client, .result = 1 };
        close_race writer = { .conn = client, .result = 1 };
        close_race sink = { .conn = server, .result = 1 };
        CHECK_TRUE(spawn_tracked(users_done, read_until_error, &reader));
        CHECK_TRUE(spawn_tracked(users_done, write_until_error, &writer));
        CHECK_TRUE(spawn_tracked(peer_done, read_until_error, &sink));
        for (int y = 0; y < round % 7; y++)
            weft_yield();
        if (round % 5 == 4)
            weft_sleep(WEFT_US(round % 300));
        if (round % 3 == 2)
            CHECK_EQ(weft_blocking(NULL, close_conn_on_thread, client, NULL), 0);
        else
            weft_conn_close(client);

        /* Each user either finished its call before the close or was woken
         * by it, at once. */
        int finished = wait_done(users_done, 2, LATE);
        CHECK_EQ(finished, 2);
        CHECK_EQ(reader.result, WEFT_ECLOSED);
        CHECK_EQ(writer.result, WEFT_ECLOSED);

        /* Once both have returned, the client's descriptor is closed, and
         * only the server's is left of this round. */
        int open_fds = settle_open_fds(counts->before + 1);
        if (!CHECK_EQ(open_fds, counts->before + 1)) {
            /* The peer would wait for end of stream forever. Closing the
             * server side wakes it, so that no coroutine uses this round's
             * records after the loop. */
            print_message("round %d: the closed connection's descriptor stayed open\n", round);
            weft_conn_close(server);
            wait_done(peer_done, 1, LATE);
            wait_done(users_done, 2 - finished, LATE);
            break;
        }

        /* The peer reads what the writer got out, then end of stream. The
         * kernel may take seconds to deliver megabytes that a closed socket
         * still had queued when the machine is loaded, so the bound is
         * generous. The write that the close ended may have sent a prefix
         * of its buffer, so the peer got every completed write and less
         * than one buffer more. */
        if (!CHECK_EQ(wait_done(peer_done, 1, WEFT_SEC(30)), 1) || finished != 2) {
            weft_conn_close(server);
            wait_done(peer_done, 1, LATE);
            wait_done(users_done, 2 - finished, LATE);
            break;
        }
        CHECK_TRUE(sink.result == 0 || sink.result == -ECONNRESET);
        if (sink.result == 0)
            CHECK_RANGE(sink.moved - writer.moved, 0, 4096);
        weft_conn_close(server);
    }
    weft_chan_release(users_done);
    weft_chan_release(peer_done);
    counts->after = settle_open_fds(counts->before);
}

static void test_close_race(void **state)
{
    (void)state;
    fd_test counts = { 0 };
    run_body(close_race_body, &counts, 0);
    print_message("descriptors: %d before, %d after %d rounds\n", counts.before,
                  counts.after, CLOSE_ROUNDS);
    assert_int_equal(counts.after, counts.before);
}

/* ---- many connections at once ---------------------------------------- */

enum { IDLE_CONNS = 500 };

typedef struct idle_reader {
    weft_conn *conn;
    _Atomic int *started;
    ssize_t result;
    unsigned char byte;
} idle_reader;

static void read_one_byte(void *arg)
{
    idle_reader *r = arg;
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_SEC(20));
    atomic_fetch_add(r->started, 1);
    r->result = weft_conn_read(ctx, r->conn, &r->byte, 1);
    weft_ctx_release(ctx);
}

/* Hundreds of coroutines wait on their own connections, and one byte to
 * each wakes every one of them. */
static void many_connections_body(void *arg)
{
    (void)arg;
    weft_listener *l;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 0, &l), 0))
        return;
    int port = weft_listener_port(l);
    idle_reader *readers = calloc(IDLE_CONNS, sizeof *readers);
    weft_conn **servers = calloc(IDLE_CONNS, sizeof *servers);
    if (!CHECK_TRUE(readers != NULL && servers != NULL))
        return;
    _Atomic int started = 0;
    int opened = 0;
    for (; opened < IDLE_CONNS; opened++) {
        if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &readers[opened].conn), 0))
            break;
        if (!CHECK_EQ(weft_tcp_accept(NULL, l, &servers[opened]), 0)) {
            weft_conn_close(readers[opened].conn);
            break;
        }
        readers[opened].started = &started;
        readers[opened].result = 1;
    }
    weft_chan *done = weft_chan_make(0, IDLE_CONNS);
    for (int i = 0; i < opened; i++)
        CHECK_TRUE(spawn_tracked(done, read_one_byte, &readers[i]));
    CHECK_TRUE(wait_for_count(&started, opened, WEFT_SEC(5)));
    weft_sleep(SETTLE);
    for (int i = opened - 1; i >= 0; i--) {
        unsigned char b = (unsigned char)(i % 251);
        CHECK_EQ(weft_conn_write(NULL, servers[i], &b, 1), 0);
    }
    CHECK_EQ(wait_done(done, opened, WEFT_SEC(20)), opened);
    for (int i = 0; i < opened; i++) {
        if (!CHECK_EQ(readers[i].result, 1))
            break;
        if (!CHECK_EQ(readers[i].byte, i % 251))
            break;
    }
    for (int i = 0; i < opened; i++) {
        weft_conn_close(readers[i].conn);
        weft_conn_close(servers[i]);
    }
    CHECK_EQ(opened, IDLE_CONNS);
    CHECK_EQ(weft_listener_close(l), 0);
    weft_chan_release(done);
    free(readers);
    free(servers);
}

static void test_many_connections(void **state)
{
    (void)state;
    run_body(many_connections_body, NULL, 0);
}

static void port_in_use_body(void *arg)
{
    (void)arg;
    weft_listener *l, *again = NULL;
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    int port = weft_listener_port(l);
    CHECK_EQ(weft_tcp_listen("127.0.0.1", port, 4, &again), -EADDRINUSE);
    CHECK_TRUE(again == NULL);
    CHECK_EQ(weft_listener_close(l), 0);

    weft_udp *u, *u_again = NULL;
    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &u), 0))
        return;
    weft_addr a;
    CHECK_EQ(weft_udp_local_addr(u, &a), 0);
    CHECK_EQ(weft_udp_bind("127.0.0.1", weft_addr_port(&a), &u_again), -EADDRINUSE);
    CHECK_TRUE(u_again == NULL);
    weft_udp_close(u);
}

static void test_port_in_use(void **state)
{
    (void)state;
    run_body(port_in_use_body, NULL, 0);
}

/* ---- invalid arguments ---------------------------------------------- */

static void invalid_arguments_body(void *arg)
{
    (void)arg;
    weft_listener *l = NULL;
    weft_conn *c = NULL;
    weft_udp *u = NULL;
    weft_addr a, out[2];
    char buf[8];

    CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_listen("127.0.0.1", -1, 4, &l), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_listen("127.0.0.1", 65536, 4, &l), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_listen("127.0.0.1", 70000, 4, &l), WEFT_EINVAL);
    CHECK_EQ(weft_listener_port(NULL), WEFT_EINVAL);
    CHECK_EQ(weft_listener_addr(NULL, &a), WEFT_EINVAL);
    CHECK_EQ(weft_listener_close(NULL), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_accept(NULL, NULL, &c), WEFT_EINVAL);

    CHECK_EQ(weft_tcp_dial(NULL, NULL, 80, &c), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", 0, &c), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", -1, &c), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", 65536, &c), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", 70000, &c), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", 80, NULL), WEFT_EINVAL);

    CHECK_EQ(weft_conn_read(NULL, NULL, buf, sizeof buf), WEFT_EINVAL);
    CHECK_EQ(weft_conn_write(NULL, NULL, buf, sizeof buf), WEFT_EINVAL);
    CHECK_EQ(weft_conn_close_write(NULL), WEFT_EINVAL);
    CHECK_EQ(weft_conn_peer_addr(NULL, &a), WEFT_EINVAL);
    CHECK_EQ(weft_conn_local_addr(NULL, &a), WEFT_EINVAL);
    weft_conn_close(NULL);

    CHECK_EQ(weft_udp_bind("127.0.0.1", 0, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_udp_bind("127.0.0.1", -1, &u), WEFT_EINVAL);
    CHECK_EQ(weft_udp_bind("127.0.0.1", 70000, &u), WEFT_EINVAL);
    CHECK_EQ(weft_udp_local_addr(NULL, &a), WEFT_EINVAL);
    CHECK_EQ(weft_addr_parse("127.0.0.1", 9, &a), 0);
    CHECK_EQ(weft_udp_send_to(NULL, NULL, buf, 1, &a), WEFT_EINVAL);
    CHECK_EQ(weft_udp_recv_from(NULL, NULL, buf, sizeof buf, NULL), WEFT_EINVAL);
    weft_udp_close(NULL);

    CHECK_EQ(weft_resolve(NULL, NULL, 80, out, 2), WEFT_EINVAL);
    CHECK_EQ(weft_resolve(NULL, "127.0.0.1", 80, NULL, 2), WEFT_EINVAL);
    CHECK_EQ(weft_resolve(NULL, "127.0.0.1", 80, out, 0), WEFT_EINVAL);
    CHECK_EQ(weft_resolve(NULL, "127.0.0.1", -1, out, 2), WEFT_EINVAL);
    CHECK_EQ(weft_resolve(NULL, "127.0.0.1", 70000, out, 2), WEFT_EINVAL);

    /* With valid handles: NULL out pointers and NULL buffers. */
    if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
        return;
    CHECK_EQ(weft_listener_addr(l, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_tcp_accept(NULL, l, NULL), WEFT_EINVAL);
    weft_conn *client, *server;
    if (!CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(l), &client), 0))
        return;
    if (!CHECK_EQ(weft_tcp_accept(NULL, l, &server), 0))
        return;
    CHECK_EQ(weft_conn_read(NULL, client, NULL, 5), WEFT_EINVAL);
    CHECK_EQ(weft_conn_write(NULL, client, NULL, 5), WEFT_EINVAL);
    CHECK_EQ(weft_conn_peer_addr(client, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_conn_local_addr(client, NULL), WEFT_EINVAL);
    /* Length 0 reads and writes do nothing. */
    CHECK_EQ(weft_conn_read(NULL, client, buf, 0), 0);
    CHECK_EQ(weft_conn_write(NULL, client, buf, 0), 0);
    /* The connection is unharmed by all of it. */
    CHECK_EQ(weft_conn_write(NULL, client, "ok", 2), 0);
    CHECK_EQ(read_full(NULL, server, buf, 2), 2);
    CHECK_TRUE(memcmp(buf, "ok", 2) == 0);
    weft_conn_close(client);
    weft_conn_close(server);
    CHECK_EQ(weft_listener_close(l), 0);

    if (!CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &u), 0))
        return;
    weft_addr self, empty;
    memset(&empty, 0, sizeof empty);
    CHECK_EQ(weft_udp_local_addr(u, &self), 0);
    CHECK_EQ(weft_udp_local_addr(u, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_udp_send_to(NULL, u, NULL, 5, &self), WEFT_EINVAL);
    CHECK_EQ(weft_udp_send_to(NULL, u, buf, 1, NULL), WEFT_EINVAL);
    CHECK_EQ(weft_udp_send_to(NULL, u, buf, 1, &empty), WEFT_EINVAL);
    CHECK_EQ(weft_udp_recv_from(NULL, u, NULL, 5, NULL), WEFT_EINVAL);
    weft_udp_close(u);
}

static void test_invalid_arguments(void **state)
{
    (void)state;
    run_body(invalid_arguments_body, NULL, 0);
}

static void test_without_runtime(void **state)
{
    (void)state;
    assert_int_equal(weft_maxprocs(), 0);
    weft_listener *l = NULL;
    weft_conn *c = NULL;
    weft_udp *u = NULL;
    weft_addr out[2];
    assert_int_equal(weft_tcp_listen("127.0.0.1", 0, 4, &l), WEFT_EINVAL);
    assert_int_equal(weft_tcp_dial(NULL, "127.0.0.1", 80, &c), WEFT_EINVAL);
    assert_int_equal(weft_udp_bind("127.0.0.1", 0, &u), WEFT_EINVAL);
    assert_int_equal(weft_resolve(NULL, "localhost", 80, out, 2), WEFT_EINVAL);
    assert_null(l);
    assert_null(c);
    assert_null(u);
    /* A numeric literal needs no lookup, but the rule is the same. */
    assert_int_equal(weft_resolve(NULL, "127.0.0.1", 80, out, 2), WEFT_EINVAL);
}

/* ---- calls from a plain thread -------------------------------------- */

typedef struct plain_server {
    weft_listener *listener;
    int64_t echoed;
} plain_server;

static void echo_one_connection(void *arg)
{
    plain_server *s = arg;
    weft_conn *c;
    if (!CHECK_EQ(weft_tcp_accept(NULL, s->listener, &c), 0))
        return;
    char buf[1024];
    for (int pass = 0; pass < 100000; pass++) {
        ssize_t r = weft_conn_read(NULL, c, buf, sizeof buf);
        if (r == 0)
            break;
        if (!CHECK_TRUE(r > 0))
            break;
        if (!CHECK_EQ(weft_conn_write(NULL, c, buf, (size_t)r), 0))
            break;
        s->echoed += r;
    }
    weft_conn_close(c);
}

/* The test's own thread is no coroutine: its calls block the thread. */
static void test_plain_thread_client(void **state)
{
    (void)state;
    assert_int_equal(weft_init(NULL), 0);
    plain_server s = { 0 };
    assert_int_equal(weft_tcp_listen("127.0.0.1", 0, 4, &s.listener), 0);
    weft_chan *done = weft_chan_make(0, 1);
    assert_true(spawn_tracked(done, echo_one_connection, &s));

    weft_conn *c;
    assert_int_equal(weft_tcp_dial(NULL, "127.0.0.1", weft_listener_port(s.listener), &c), 0);
    unsigned char out[512], in[512];
    int64_t sent = 0;
    for (unsigned m = 0; m < 200; m++) {
        size_t size = 1 + (m * 13) % sizeof out;
        fill_pattern(out, size, m, 0);
        assert_int_equal(weft_conn_write(NULL, c, out, size), 0);
        assert_int_equal(read_full(NULL, c, in, size), (ssize_t)size);
        assert_int_equal(pattern_mismatch(in, size, m, 0), size);
        sent += (int64_t)size;
    }
    int64_t start = weft_now();
    weft_ctx *ctx = weft_ctx_with_timeout(NULL, WEFT_MS(30));
    assert_int_equal(weft_conn_read(ctx, c, in, sizeof in), WEFT_ETIMEDOUT);
    assert_true(weft_now() - start >= WEFT_MS(25));
    weft_ctx_release(ctx);
    weft_conn_close(c);
    assert_int_equal(wait_done(done, 1, LATE), 1);
    assert_int_equal(s.echoed, sent);
    assert_int_equal(weft_listener_close(s.listener), 0);
    weft_chan_release(done);
    assert_int_equal(weft_shutdown(), 0);
    assert_no_check_failures();
}

/* ---- no descriptor left open ---------------------------------------- */

static void one_round_of_handles(void)
{
    weft_conn *client, *server;
    if (!CHECK_EQ(connect_pair(&client, &server), 0))
        return;
    CHECK_EQ(weft_conn_write(NULL, client, "a", 1), 0);
    char b;
    CHECK_EQ(weft_conn_read(NULL, server, &b, 1), 1);
    weft_conn_close(client);
    weft_conn_close(server);
    weft_udp *u;
    if (CHECK_EQ(weft_udp_bind("127.0.0.1", 0, &u), 0))
        weft_udp_close(u);
}

static void fd_leak_body(void *arg)
{
    fd_test *t = arg;
    /* Whatever the runtime opens on first use is there before counting. */
    one_round_of_handles();
    t->before = count_open_fds();

    for (int i = 0; i < 50; i++)
        one_round_of_handles();
    for (int i = 0; i < 10; i++) {
        weft_listener *l;
        if (!CHECK_EQ(weft_tcp_listen("127.0.0.1", 0, 4, &l), 0))
            return;
        int port = weft_listener_port(l);
        weft_listener_close(l);
        weft_conn *c;
        CHECK_EQ(weft_tcp_dial(NULL, "127.0.0.1", port, &c), -ECONNREFUSED);
    }
    weft_chan *done = weft_chan_make(0, 1);
    for (int i = 0; i < 10; i++) {
        weft_conn *client, *server;
        if (!CHECK_EQ(connect_pair(&client, &server), 0))
            return;
        _Atomic int started = 0;
        blocked_op op = { .conn = client, .started = &started, .result = 1 };
        CHECK_TRUE(spawn_tracked(done, blocked_read, &op));
        CHECK_TRUE(wait_for_count(&started, 1, LATE));
        weft_yield();
        weft_conn_close(client);
        CHECK_EQ(wait_done(done, 1, LATE), 1);
        CHECK_EQ(op.result, WEFT_ECLOSED);
        weft_conn_close(server);
    }
    weft_chan_release(done);

    int64_t start = weft_now();
    t->after = settle_open_fds(t->before);
    t->settle_ns = weft_now() - start;
}

static void test_no_descriptor_leak(void **state)
{
    (void)state;
    fd_test t = { 0 };
    run_body(fd_leak_body, &t, 0);
    print_message("descriptors: %d before, %d after (settled in %.1f ms)\n",
                  t.before, t.after, t.settle_ns / 1e6);
    assert_true(t.before > 0);
    assert_int_equal(t.after, t.before);
}

int main(void)
{
    /* The tests that fork come first. ThreadSanitizer ends a child forked
     * from a process with threads as soon as the child starts a thread.
     * libuv's thread pool, started by the first name lookup, keeps its
     * threads after weft_shutdown. */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_write_to_closed_peer, stop_runtime),
        cmocka_unit_test_teardown(test_accept_out_of_descriptors, stop_runtime),
        cmocka_unit_test_teardown(test_without_runtime, stop_runtime),
        cmocka_unit_test_teardown(test_addr_parse_format, stop_runtime),
        cmocka_unit_test_teardown(test_addr_invalid, stop_runtime),
        cmocka_unit_test_teardown(test_addr_legacy_ipv4_forms, stop_runtime),
        cmocka_unit_test_teardown(test_resolve, stop_runtime),
        cmocka_unit_test_teardown(test_invalid_arguments, stop_runtime),
        cmocka_unit_test_teardown(test_echo, stop_runtime),
        cmocka_unit_test_teardown(test_half_close, stop_runtime),
        cmocka_unit_test_teardown(test_addresses, stop_runtime),
        cmocka_unit_test_teardown(test_ipv6_loopback, stop_runtime),
        cmocka_unit_test_teardown(test_dial_refused, stop_runtime),
        cmocka_unit_test_teardown(test_reset_by_peer, stop_runtime),
        cmocka_unit_test_teardown(test_eof_mid_message, stop_runtime),
        cmocka_unit_test_teardown(test_dial_unresolvable, stop_runtime),
        cmocka_unit_test_teardown(test_closed_handles, stop_runtime),
        cmocka_unit_test_teardown(test_close_wakes_conn_waiters, stop_runtime),
        cmocka_unit_test_teardown(test_close_wakes_accept, stop_runtime),
        cmocka_unit_test_teardown(test_close_wakes_udp_recv, stop_runtime),
        cmocka_unit_test_teardown(test_read_deadline, stop_runtime),
        cmocka_unit_test_teardown(test_write_deadline, stop_runtime),
        cmocka_unit_test_teardown(test_accept_cancel, stop_runtime),
        cmocka_unit_test_teardown(test_dial_cancel, stop_runtime),
        cmocka_unit_test_teardown(test_concurrent_readers, stop_runtime),
        cmocka_unit_test_teardown(test_concurrent_writers, stop_runtime),
        cmocka_unit_test_teardown(test_large_write_slow_reader, stop_runtime),
        cmocka_unit_test_teardown(test_udp, stop_runtime),
        cmocka_unit_test_teardown(test_read_deadline_race, stop_runtime),
        cmocka_unit_test_teardown(test_accept_deadline_race, stop_runtime),
        cmocka_unit_test_teardown(test_udp_deadline_race, stop_runtime),
        cmocka_unit_test_teardown(test_close_race, stop_runtime),
        cmocka_unit_test_teardown(test_many_connections, stop_runtime),
        cmocka_unit_test_teardown(test_port_in_use, stop_runtime),
        cmocka_unit_test_teardown(test_plain_thread_client, stop_runtime),
        cmocka_unit_test_teardown(test_no_descriptor_leak, stop_runtime),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
