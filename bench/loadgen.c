/*
 * The load generator of the tcp-echo workload, run by the driver as
 * "weft-bench --loadgen PORT CONNECTIONS MESSAGES" against an echo server
 * on 127.0.0.1:PORT. The same generator drives every server.
 *
 * LOADGEN_THREADS threads share the connections, each driving its own
 * with non-blocking sockets and one epoll instance. A connection sends a
 * message of ECHO_MESSAGE_BYTES bytes, waits until the whole echo has come
 * back and checks it, then sends the next, so every connection has one
 * message in flight. Each message is timed from just before its send to
 * the read that completes its echo (CLOCK_MONOTONIC), and the times go
 * into an array that is sorted at the end for the percentiles.
 *
 * Before the clock starts, every connection completes one untimed round
 * trip, so connection set-up and the server's accept are not measured.
 * The threads then start together behind a barrier. Throughput is every
 * timed message divided by the time from the earliest thread's start to
 * the latest thread's end.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

/* A thread fails the run when no echo arrives on any of its connections
 * for this long. */
#define STALL_TIMEOUT_MS 10000

#define EPOLL_BATCH 64

typedef struct echo_conn {
    int fd;
    uint32_t id;
    int64_t seq;          /* sequence number of the message in flight */
    int64_t left;         /* round trips still to run in this phase */
    size_t tx_done;       /* bytes of the message written so far */
    size_t rx_done;       /* bytes of its echo read so far */
    bool watch_out;       /* EPOLLOUT is registered: the send was cut short */
    int64_t sent_ns;      /* when the first byte of the message was sent */
    unsigned char tx[ECHO_MESSAGE_BYTES];
    unsigned char rx[ECHO_MESSAGE_BYTES];
} echo_conn;

typedef struct loadgen_thread {
    pthread_t thread;
    int index;
    echo_conn *conns;
    size_t nconns;
    int64_t messages;            /* timed round trips per connection */
    int epfd;
    pthread_barrier_t *start;
    int64_t *latencies_ns;       /* nconns * messages entries */
    size_t nlatencies;
    int64_t started_ns;
    int64_t finished_ns;
} loadgen_thread;

/* Fill the message for the connection's current sequence number: its id,
 * the sequence number, then a pattern derived from both, so an echo that
 * belongs to another connection or message does not compare equal. */
static void message_fill(echo_conn *c)
{
    uint32_t seq = (uint32_t)c->seq;
    memcpy(c->tx, &c->id, sizeof c->id);
    memcpy(c->tx + sizeof c->id, &seq, sizeof seq);
    for (size_t i = 8; i < ECHO_MESSAGE_BYTES; i++)
        c->tx[i] = (unsigned char)(c->id * 31 + seq * 7 + i);
}

static void epoll_watch(loadgen_thread *t, echo_conn *c, bool out)
{
    struct epoll_event ev = {
        .events = EPOLLIN | (out ? EPOLLOUT : 0),
        .data.ptr = c,
    };
    if (epoll_ctl(t->epfd, EPOLL_CTL_MOD, c->fd, &ev) != 0)
        bench_fail("epoll_ctl on connection %u failed: %s", c->id,
                   strerror(errno));
    c->watch_out = out;
}

/* Write what is left of the message. A full socket buffer leaves the rest
 * for EPOLLOUT. */
static void message_flush(loadgen_thread *t, echo_conn *c)
{
    while (c->tx_done < ECHO_MESSAGE_BYTES) {
        ssize_t n = send(c->fd, c->tx + c->tx_done,
                         ECHO_MESSAGE_BYTES - c->tx_done, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            if (!c->watch_out)
                epoll_watch(t, c, true);
            return;
        }
        if (n < 0)
            bench_fail("send on connection %u failed after %lld messages: %s",
                       c->id, (long long)c->seq, strerror(errno));
        c->tx_done += (size_t)n;
    }
    if (c->watch_out)
        epoll_watch(t, c, false);
}

static void message_send(loadgen_thread *t, echo_conn *c)
{
    message_fill(c);
    c->tx_done = 0;
    c->rx_done = 0;
    c->sent_ns = bench_now_ns();
    message_flush(t, c);
}

/* Read what has arrived of the echo. Returns true once the whole echo is
 * in and matches the message. */
static bool echo_receive(echo_conn *c)
{
    for (;;) {
        if (c->left == 0) {
            /* Nothing is in flight, so any byte is one the server made up. */
            unsigned char extra;
            ssize_t n = recv(c->fd, &extra, 1, 0);
            if (n > 0)
                bench_fail("connection %u received a byte after its last echo",
                           c->id);
            return false;
        }
        ssize_t n = recv(c->fd, c->rx + c->rx_done,
                         ECHO_MESSAGE_BYTES - c->rx_done, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return false;
        if (n < 0)
            bench_fail("recv on connection %u failed after %lld messages: %s",
                       c->id, (long long)c->seq, strerror(errno));
        if (n == 0)
            bench_fail("the server closed connection %u after %lld messages",
                       c->id, (long long)c->seq);
        c->rx_done += (size_t)n;
        if (c->rx_done < ECHO_MESSAGE_BYTES)
            continue;
        if (c->tx_done < ECHO_MESSAGE_BYTES ||
            memcmp(c->rx, c->tx, ECHO_MESSAGE_BYTES) != 0)
            bench_fail("connection %u: the echo of message %lld differs from "
                       "the message", c->id, (long long)c->seq);
        return true;
    }
}

/* Run per_conn round trips on every connection of the thread, recording
 * each latency when record is set. */
static void round_trips(loadgen_thread *t, int64_t per_conn, bool record)
{
    size_t active = t->nconns;
    for (size_t i = 0; i < t->nconns; i++) {
        t->conns[i].left = per_conn;
        message_send(t, &t->conns[i]);
    }

    struct epoll_event events[EPOLL_BATCH];
    while (active > 0) {
        int n = epoll_wait(t->epfd, events, EPOLL_BATCH, STALL_TIMEOUT_MS);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            bench_fail("epoll_wait failed: %s", strerror(errno));
        if (n == 0)
            bench_fail("load generator thread %d: no echo for %d ms; %zu of "
                       "its %zu connections are still waiting", t->index,
                       STALL_TIMEOUT_MS, active, t->nconns);
        for (int i = 0; i < n; i++) {
            echo_conn *c = events[i].data.ptr;
            if ((events[i].events & EPOLLOUT) &&
                c->tx_done < ECHO_MESSAGE_BYTES)
                message_flush(t, c);
            if (!(events[i].events & (EPOLLIN | EPOLLERR | EPOLLHUP)))
                continue;
            if (!echo_receive(c))
                continue;
            int64_t now = bench_now_ns();
            if (record)
                t->latencies_ns[t->nlatencies++] = now - c->sent_ns;
            c->seq++;
            if (--c->left == 0)
                active--;
            else
                message_send(t, c);
        }
    }
}

static void *loadgen_thread_main(void *arg)
{
    loadgen_thread *t = arg;
    round_trips(t, 1, false);

    int err = pthread_barrier_wait(t->start);
    if (err != 0 && err != PTHREAD_BARRIER_SERIAL_THREAD)
        bench_fail("pthread_barrier_wait failed: %s", strerror(err));
    t->started_ns = bench_now_ns();
    round_trips(t, t->messages, true);
    t->finished_ns = bench_now_ns();
    return NULL;
}

static int compare_int64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile (pct of 100) of n sorted values, in
 * microseconds. */
static double percentile_us(const int64_t *sorted, size_t n, unsigned pct)
{
    size_t rank = (n * pct + 99) / 100;
    if (rank < 1)
        rank = 1;
    return (double)sorted[rank - 1] / 1000.0;
}

/* Open a blocking connection to 127.0.0.1:port, then make it non-blocking
 * with TCP_NODELAY set. */
static int connect_nonblocking(int port, int64_t index)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        bench_fail("socket failed: %s", strerror(errno));
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
        bench_fail("setsockopt(TCP_NODELAY) failed: %s", strerror(errno));
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = htons((uint16_t)port),
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    while (connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) {
        if (errno != EINTR)
            bench_fail("connection %lld to 127.0.0.1:%d failed: %s",
                       (long long)index, port, strerror(errno));
    }
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) != 0)
        bench_fail("fcntl(O_NONBLOCK) failed: %s", strerror(errno));
    return fd;
}

int loadgen_run(int port, int64_t connections, int64_t messages)
{
    if (port < 1 || port > 65535 || connections < LOADGEN_THREADS ||
        messages < 1)
        bench_fail("invalid load generator arguments: port %d, %lld "
                   "connections, %lld messages (expected a port 1-65535, at "
                   "least %d connections and 1 message)", port,
                   (long long)connections, (long long)messages,
                   LOADGEN_THREADS);

    echo_conn *conns = calloc((size_t)connections, sizeof *conns);
    int64_t *latencies = malloc((size_t)(connections * messages) *
                                sizeof *latencies);
    if (!conns || !latencies)
        bench_fail("out of memory for %lld connections of %lld messages",
                   (long long)connections, (long long)messages);

    loadgen_thread threads[LOADGEN_THREADS];
    pthread_barrier_t start;
    int err = pthread_barrier_init(&start, NULL, LOADGEN_THREADS);
    if (err != 0)
        bench_fail("pthread_barrier_init failed: %s", strerror(err));

    /* Connection i belongs to thread i % LOADGEN_THREADS, and each thread's
     * connections are contiguous in conns. */
    size_t first = 0;
    for (int k = 0; k < LOADGEN_THREADS; k++) {
        size_t count = (size_t)(connections / LOADGEN_THREADS) +
                       ((int64_t)k < connections % LOADGEN_THREADS ? 1 : 0);
        threads[k] = (loadgen_thread){
            .index = k,
            .conns = conns + first,
            .nconns = count,
            .messages = messages,
            .start = &start,
            .latencies_ns = latencies + (int64_t)first * messages,
        };
        threads[k].epfd = epoll_create1(EPOLL_CLOEXEC);
        if (threads[k].epfd < 0)
            bench_fail("epoll_create1 failed: %s", strerror(errno));
        for (size_t i = 0; i < count; i++) {
            echo_conn *c = &threads[k].conns[i];
            c->id = (uint32_t)(first + i);
            c->fd = connect_nonblocking(port, (int64_t)c->id);
            struct epoll_event ev = { .events = EPOLLIN, .data.ptr = c };
            if (epoll_ctl(threads[k].epfd, EPOLL_CTL_ADD, c->fd, &ev) != 0)
                bench_fail("epoll_ctl failed: %s", strerror(errno));
        }
        first += count;
    }

    for (int k = 0; k < LOADGEN_THREADS; k++) {
        err = pthread_create(&threads[k].thread, NULL, loadgen_thread_main,
                             &threads[k]);
        if (err != 0)
            bench_fail("pthread_create failed: %s", strerror(err));
    }
    int64_t started = INT64_MAX, finished = 0;
    for (int k = 0; k < LOADGEN_THREADS; k++) {
        err = pthread_join(threads[k].thread, NULL);
        if (err != 0)
            bench_fail("pthread_join failed: %s", strerror(err));
        if (threads[k].started_ns < started)
            started = threads[k].started_ns;
        if (threads[k].finished_ns > finished)
            finished = threads[k].finished_ns;
    }

    for (int64_t i = 0; i < connections; i++)
        close(conns[i].fd);
    for (int k = 0; k < LOADGEN_THREADS; k++)
        close(threads[k].epfd);

    /* Every thread recorded all its round trips into its own contiguous
     * part of latencies, so the whole array is filled. */
    size_t total = (size_t)(connections * messages);
    qsort(latencies, total, sizeof *latencies, compare_int64);
    double seconds = (double)(finished - started) / 1e9;
    printf("result %.1f\n", (double)total / seconds);
    printf("p50 %.3f\n", percentile_us(latencies, total, 50));
    printf("p99 %.3f\n", percentile_us(latencies, total, 99));

    pthread_barrier_destroy(&start);
    free(latencies);
    free(conns);
    return 0;
}
