/*
 * The tcp-echo workload's server on plain POSIX threads: blocking sockets,
 * one thread accepting and one detached thread per connection that reads
 * and writes back until the peer closes. The main thread waits for end of
 * file on standard input and then returns, which ends the process.
 *
 * Connection threads get 64 KiB stacks, as the pthreads workloads' threads
 * do; a thread uses about 4 KiB of it for its read buffer.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bench.h"

#define THREAD_STACK_BYTES ((size_t)64 * 1024)
#define READ_BUFFER_BYTES 4096

static pthread_attr_t connection_attr;

/* Write all len bytes. Returns false when the connection failed, after
 * printing why unless the peer had simply gone. */
static bool send_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            if (errno != EPIPE && errno != ECONNRESET)
                fprintf(stderr, "pthreads echo server: send failed: %s\n",
                        strerror(errno));
            return false;
        }
        buf += n;
        len -= (size_t)n;
    }
    return true;
}

static void *connection_thread(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char buf[READ_BUFFER_BYTES];
    for (;;) {
        ssize_t n = recv(fd, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno != ECONNRESET)
            fprintf(stderr, "pthreads echo server: recv failed: %s\n",
                    strerror(errno));
        if (n <= 0 || !send_all(fd, buf, (size_t)n))
            break;
    }
    close(fd);
    return NULL;
}

static void *accept_thread(void *arg)
{
    int listen_fd = (int)(intptr_t)arg;
    for (;;) {
        int fd = accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0 && (errno == EINTR || errno == ECONNABORTED))
            continue;
        if (fd < 0)
            bench_fail("pthreads echo server: accept failed: %s",
                       strerror(errno));
        /* weft and Go set TCP_NODELAY on accepted connections too. */
        int one = 1;
        if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0)
            bench_fail("setsockopt(TCP_NODELAY) failed: %s", strerror(errno));
        pthread_t thread;
        int err = pthread_create(&thread, &connection_attr, connection_thread,
                                 (void *)(intptr_t)fd);
        if (err != 0)
            bench_fail("pthreads echo server: pthread_create failed: %s",
                       strerror(err));
    }
    return NULL;
}

int pthread_echo_server(void)
{
    int err = pthread_attr_init(&connection_attr);
    if (err == 0)
        err = pthread_attr_setstacksize(&connection_attr, THREAD_STACK_BYTES);
    if (err == 0)
        err = pthread_attr_setdetachstate(&connection_attr,
                                          PTHREAD_CREATE_DETACHED);
    if (err != 0)
        bench_fail("pthread_attr_init or set failed: %s", strerror(err));

    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        bench_fail("socket failed: %s", strerror(errno));
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0)
        bench_fail("setsockopt(SO_REUSEADDR) failed: %s", strerror(errno));
    struct sockaddr_in addr = {
        .sin_family = AF_INET,
        .sin_port = 0,
        .sin_addr.s_addr = htonl(INADDR_LOOPBACK),
    };
    socklen_t len = sizeof addr;
    if (bind(fd, (struct sockaddr *)&addr, sizeof addr) != 0 ||
        listen(fd, SOMAXCONN) != 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) != 0)
        bench_fail("pthreads echo server: listening on 127.0.0.1 failed: %s",
                   strerror(errno));

    pthread_t thread;
    err = pthread_create(&thread, NULL, accept_thread, (void *)(intptr_t)fd);
    if (err != 0)
        bench_fail("pthread_create failed: %s", strerror(err));

    printf("port %d\n", ntohs(addr.sin_port));
    fflush(stdout);
    bench_wait_stdin_eof();
    return 0;
}
