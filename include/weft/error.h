/*
 * weft/error.h: error codes shared by every part of the API.
 *
 * Functions that can fail return 0 on success or a negative code. The codes
 * that have an errno counterpart equal its negative value, so I/O calls can
 * pass system and libuv errors through unchanged. WEFT_ECLOSED is weft's own
 * value, chosen far below every errno and libuv code. WEFT_ENONAME equals
 * libuv's UV_EAI_NONAME, which name resolution passes through.
 */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#include <errno.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The one list of weft's own codes: name, value, sentence. */
#define WEFT_ERRNO_MAP(X)                                                     \
    X(ECLOSED, (-30001), "channel, listener or connection is closed")         \
    X(EAGAIN, (-EAGAIN), "operation would block")                             \
    X(ECANCELED, (-ECANCELED), "context canceled")                            \
    X(ETIMEDOUT, (-ETIMEDOUT), "deadline exceeded")                           \
    X(ENOMEM, (-ENOMEM), "out of memory or address space")                    \
    X(EINVAL, (-EINVAL), "invalid argument")                                  \
    X(ENONAME, (-3008), "host name not found")

enum {
#define WEFT__ERR_ENUM(name, value, text) WEFT_##name = value,
    WEFT_ERRNO_MAP(WEFT__ERR_ENUM)
#undef WEFT__ERR_ENUM
};

/* A sentence describing err: weft's codes, negative errno values and libuv
 * codes. Unknown codes get a generic sentence; the result is never NULL. */
const char *weft_strerror(int err);

/* The code's name without prefix, for example "ECLOSED" or "ECONNREFUSED".
 * Unknown codes give "UNKNOWN". */
const char *weft_err_name(int err);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_ERROR_H */
