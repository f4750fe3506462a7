/*
 * Error names and sentences: weft's own codes from WEFT_ERRNO_MAP, then
 * libuv's table, which covers the negative errno values and UV_EAI_* codes
 * that I/O calls pass through.
 */
#define _GNU_SOURCE
#include <string.h>
#include <uv.h>

#include "weft/error.h"

/* True when libuv has a name of its own for err; uv_strerror and uv_err_name
 * return static strings only then. */
static int uv_knows(int err)
{
    char buf[64];
    if (err >= 0)
        return 0;
    uv_err_name_r(err, buf, sizeof buf);
    return strncmp(buf, "Unknown system error", 20) != 0;
}

const char *weft_strerror(int err)
{
    switch (err) {
#define WEFT__ERR_TEXT(name, value, text) case value: return text;
        WEFT_ERRNO_MAP(WEFT__ERR_TEXT)
#undef WEFT__ERR_TEXT
    case 0:
        return "success";
    default:
        break;
    }
    if (uv_knows(err))
        return uv_strerror(err);
    return "unknown error";
}

const char *weft_err_name(int err)
{
    switch (err) {
#define WEFT__ERR_NAME(name, value, text) case value: return #name;
        WEFT_ERRNO_MAP(WEFT__ERR_NAME)
#undef WEFT__ERR_NAME
    case 0:
        return "OK";
    default:
        break;
    }
    if (uv_knows(err))
        return uv_err_name(err);
    return "UNKNOWN";
}
