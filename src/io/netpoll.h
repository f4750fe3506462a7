/*
 * Internal header: the network poller and the socket records it serves.
 *
 * A weft__netfd is one non-blocking socket: a listener, a TCP connection
 * or a UDP socket. Every operation first tries its system call on the
 * calling thread, and waits for readiness only when the call would block
 * (weft__netfd_wait). Readiness comes from one epoll set with each socket
 * registered once, edge-triggered, for both directions. The Ps poll that
 * set themselves (see "Network poller" in sched.c), so a coroutine woken
 * by readiness runs on the P that saw the event.
 *
 * Records are type-stable: they are never returned to malloc, only to a
 * free list, so a stale epoll event or a handle used after its close reads
 * a valid record. See netpoll.c for the wait protocol.
 */
#ifndef WEFT_IO_NETPOLL_H
#define WEFT_IO_NETPOLL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../sched/sched.h"
#include "weft/context.h"
#include "weft/sem.h"

enum weft__netfd_kind { WEFT__NETFD_LISTENER = 1, WEFT__NETFD_CONN, WEFT__NETFD_UDP };

/* Directions of readiness; the index of a netfd's wait slot. */
enum { WEFT__DIR_READ = 0, WEFT__DIR_WRITE = 1 };

typedef struct weft__netfd {
    int fd;                      /* fixed while open */
    uint8_t kind;                /* enum weft__netfd_kind; fixed while open */
    int family;                  /* AF_INET or AF_INET6; fixed while open */
    uint32_t generation;         /* runtime whose epoll set holds fd */
    /* References of running operations plus the owner's, with
     * WEFT__NETFD_CLOSED set by the close call. The last reference to go
     * after the close closes fd and frees the record. */
    _Atomic uint64_t state;
    /* Per direction: 0, WEFT__NETFD_READY (readiness not consumed yet) or
     * the address of the waiting operation's record. */
    _Atomic uintptr_t slot[2];
    /* Wakers that have taken a record from a slot and may still touch it. */
    _Atomic uint32_t busy;
    /* One operation per direction at a time. */
    weft_sem sem[2];
    struct weft__netfd *free_next;
} weft__netfd;

#define WEFT__NETFD_CLOSED ((uint64_t)1 << 63)
#define WEFT__NETFD_READY ((uintptr_t)1)

/* Make a record for the non-blocking descriptor fd and register it with
 * the epoll set. On error fd is left open for the caller to close. */
int weft__netfd_open(int fd, int kind, int family, weft__netfd **out);
/* Take a reference for one operation: 0, WEFT_ECLOSED or WEFT_EINVAL
 * (NULL or a kind other than kind). */
int weft__netfd_acquire(weft__netfd *nd, int kind);
void weft__netfd_release(weft__netfd *nd);
/* The owner's close: wake every waiter with WEFT_ECLOSED and drop the
 * owner's reference. WEFT_ECLOSED when it was closed already. */
int weft__netfd_close(weft__netfd *nd, int kind);
static inline bool weft__netfd_closed(weft__netfd *nd)
{
    return (atomic_load(&nd->state) & WEFT__NETFD_CLOSED) != 0;
}
/* Wait until dir may be ready again (then retry the system call), the
 * record is closed (WEFT_ECLOSED) or ctx ends (its error). WEFT_EINVAL
 * when the socket was opened under an earlier runtime. */
int weft__netfd_wait(weft_ctx *ctx, weft__netfd *nd, int dir);
/* Serialise operations of one direction: 0 or ctx's error. */
int weft__netfd_lock(weft_ctx *ctx, weft__netfd *nd, int dir);
void weft__netfd_unlock(weft__netfd *nd, int dir);

/* Set-up and tear-down with the runtime. With by_loop the libuv loop
 * thread polls the set and the Ps never do. */
int weft__netpoll_init(bool by_loop);
/* The epoll set's descriptor, for the loop thread in by_loop mode; -1 in
 * the default mode. */
int weft__netpoll_loop_fd(void);
void weft__netpoll_term(void);

#endif /* WEFT_IO_NETPOLL_H */
