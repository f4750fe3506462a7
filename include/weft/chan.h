/*
 * weft/chan.h: channels, select and timers, with Go's semantics.
 *
 * A channel carries fixed-size values, copied in and out. Unbuffered
 * channels (cap 0) are a rendezvous; buffered ones are a FIFO ring.
 * elem_size 0 makes a signal-only channel (Go's chan struct{}), whose elem
 * pointers are ignored. Every call works from coroutines and from plain
 * threads alike; a blocked plain thread waits in the kernel.
 *
 *   operation  NULL channel     open                          closed
 *   send       blocks forever   blocks for a receiver / room  WEFT_ECLOSED
 *   recv       blocks forever   blocks for a value            buffered values
 *                                                             first, then
 *                                                             WEFT_ECLOSED,
 *                                                             *elem zeroed
 *   close      WEFT_EINVAL      wakes every waiter            WEFT_ECLOSED
 *
 * try_send and try_recv on a NULL channel return WEFT_EAGAIN, as a Go
 * select with a default case does.
 *
 * Waiting senders and receivers are served first come, first served, and
 * values leave a channel in the order they entered it. A sender blocked
 * when the channel is closed returns WEFT_ECLOSED and its value is not
 * delivered. A send with a NULL elem on a channel whose elem_size is not 0
 * returns WEFT_EINVAL.
 *
 * Ownership: weft_chan_make returns one reference; weft_chan_retain adds
 * one, weft_chan_release drops one and frees the channel with the last.
 * Releasing the last reference while someone waits on the channel is a
 * caller bug, reported as fatal. An operation never touches the channel
 * after it has made another party ready, so the holder of the last
 * reference may release it as soon as its own call returns. Coroutines
 * blocked on a channel when the runtime shuts down are abandoned with it.
 * Such a channel may then only be released, not used again.
 */
#ifndef WEFT_CHAN_H
#define WEFT_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_chan weft_chan;

/* NULL when out of memory or when elem_size * cap overflows. */
weft_chan *weft_chan_make(size_t elem_size, size_t cap);
weft_chan *weft_chan_retain(weft_chan *ch);
void weft_chan_release(weft_chan *ch);

int weft_chan_send(weft_chan *ch, const void *elem);     /* 0, WEFT_ECLOSED */
int weft_chan_recv(weft_chan *ch, void *elem);           /* 0, WEFT_ECLOSED; elem may be NULL */
int weft_chan_try_send(weft_chan *ch, const void *elem); /* 0, WEFT_EAGAIN, WEFT_ECLOSED */
int weft_chan_try_recv(weft_chan *ch, void *elem);       /* 0, WEFT_EAGAIN, WEFT_ECLOSED */
int weft_chan_close(weft_chan *ch);                      /* 0, WEFT_ECLOSED, WEFT_EINVAL */
size_t weft_chan_len(weft_chan *ch);                     /* 0 for NULL */
size_t weft_chan_cap(weft_chan *ch);                     /* 0 for NULL */

typedef enum { WEFT_SEND = 1, WEFT_RECV = 2 } weft_dir;

typedef struct weft_case {
    weft_chan *chan;  /* NULL: this case is never ready */
    weft_dir dir;
    void *elem;       /* value to send, or where to store the received one
                       * (may be NULL for recv) */
    bool ok;          /* set by select: false when the case fired because
                       * the channel is closed */
} weft_case;

#define WEFT_SEND_CASE(ch, ptr) \
    ((weft_case){ .chan = (ch), .dir = WEFT_SEND, .elem = (void *)(ptr) })
#define WEFT_RECV_CASE(ch, ptr) \
    ((weft_case){ .chan = (ch), .dir = WEFT_RECV, .elem = (ptr) })

/*
 * Run one ready case, chosen uniformly at random among the ready ones, and
 * return its index. Only that case's ok is set: true when a value moved,
 * false when the case fired because its channel is closed. A closed
 * channel's recv case is always ready (elem zeroed); a send case on a
 * closed channel fires with ok false. A send case's elem is only read. The
 * same channel may appear in several cases. With n == 0, weft_select
 * blocks forever, weft_try_select returns WEFT_EAGAIN and weft_select_until
 * returns WEFT_ETIMEDOUT at the deadline. WEFT_EINVAL: cases NULL with
 * n > 0, a dir other than WEFT_SEND or WEFT_RECV, or a send case with a
 * NULL elem on a channel with values. WEFT_ENOMEM: more than 64 cases and
 * no memory for their records. A ready case always wins over a deadline
 * that has already passed. The deadline is on the weft_now clock.
 */
int weft_select(weft_case *cases, size_t n);
int weft_try_select(weft_case *cases, size_t n);   /* index or WEFT_EAGAIN */
int weft_select_until(weft_case *cases, size_t n, int64_t deadline);

/*
 * Timers and tickers (Go 1.23 rules). The channel has cap 1 and delivers
 * the int64_t weft_now() of each firing. Once weft_timer_stop or
 * weft_timer_reset returns, no value from the earlier setting is received:
 * a value still unreceived in the channel is discarded and counts as
 * pending. A duration <= 0 fires at once. weft_timer_reset on a ticker
 * sets its new period, which must be positive (else the call is fatal). A
 * ticker drops ticks its receiver is too slow for, keeping the older
 * unreceived one, and schedules each tick from the previous deadline. The channel is borrowed: valid until weft_timer_release, or
 * longer when retained; after release it never delivers again.
 * Timers need a running runtime: weft_timer_make, weft_ticker_make and
 * weft_after return NULL without one, or when out of memory, or (tickers)
 * for a period <= 0.
 */
typedef struct weft_timer weft_timer;

weft_timer *weft_timer_make(int64_t d);
weft_timer *weft_ticker_make(int64_t period);
weft_chan *weft_timer_chan(weft_timer *t);
bool weft_timer_stop(weft_timer *t);              /* true if it stopped a pending fire */
bool weft_timer_reset(weft_timer *t, int64_t d);  /* true if the timer was still pending */
void weft_timer_release(weft_timer *t);           /* stops it, drops the caller's reference */
/* Go's time.After: a channel that receives weft_now() once after d; the
 * caller owns one reference and releases it when done. */
weft_chan *weft_after(int64_t d);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_CHAN_H */
