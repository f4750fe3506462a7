/*
 * Files through libuv's file operations: each call queues one uv_fs_*
 * request for the loop thread (io_internal.h), libuv runs it on its thread
 * pool, and the completion readies the caller. So a slow disk parks only
 * the calling coroutine.
 *
 * The context is checked before each request starts. A started request
 * is always waited for, because the pool thread writes into (or reads
 * from) the caller's buffer until it completes.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "io_internal.h"
#include "weft/error.h"
#include "weft/io.h"

/* First buffer size of weft_file_read_all; it doubles as needed. */
#define READ_ALL_START (64 * 1024)
/* Largest single read or write request; longer ones are split. */
#define IO_CHUNK_MAX ((size_t)1 << 30)

enum fs_op { FS_OPEN, FS_READ, FS_WRITE, FS_CLOSE };

typedef struct fs_req {
    weft__io_req base;          /* first: the request casts to it */
    uv_fs_t fs;
    bool started;               /* fs needs uv_fs_req_cleanup */
    enum fs_op op;
    int fd;
    int flags;
    int mode;
    uv_buf_t buf;
    int64_t offset;
    ssize_t value;              /* the operation's result */
    char path[];
} fs_req;

static void fs_done(uv_fs_t *fs)
{
    fs_req *fr = fs->data;
    fr->value = fs->result;
    fr->base.result = 0;
    weft__io_complete(&fr->base);
}

static void fs_run(weft__io_req *r, uv_loop_t *loop)
{
    fs_req *fr = (fs_req *)r;
    fr->fs.data = fr;
    int err;
    switch (fr->op) {
    case FS_OPEN:
        err = uv_fs_open(loop, &fr->fs, fr->path, fr->flags, fr->mode, fs_done);
        break;
    case FS_READ:
        err = uv_fs_read(loop, &fr->fs, fr->fd, &fr->buf, 1, fr->offset, fs_done);
        break;
    case FS_WRITE:
        err = uv_fs_write(loop, &fr->fs, fr->fd, &fr->buf, 1, fr->offset, fs_done);
        break;
    default:
        err = uv_fs_close(loop, &fr->fs, fr->fd, fs_done);
        break;
    }
    fr->started = true;
    if (err) {
        r->result = err;
        weft__io_complete(r);
    }
}

static void fs_destroy(weft__io_req *r)
{
    fs_req *fr = (fs_req *)r;
    if (fr->started)
        uv_fs_req_cleanup(&fr->fs);
    free(fr);
}

/* Run one request and wait for it; returns its result or an error. */
static ssize_t fs_call(weft_ctx *ctx, enum fs_op op, const char *path, int fd,
                       int flags, int mode, void *buf, size_t len, int64_t offset)
{
    if (!atomic_load(&weft__rt.running))
        return WEFT_EINVAL;
    int err = weft_ctx_err(ctx);
    if (err)
        return err;
    size_t plen = path ? strlen(path) + 1 : 0;
    fs_req *fr = calloc(1, sizeof *fr + plen);
    if (!fr)
        return WEFT_ENOMEM;
    if (path)
        memcpy(fr->path, path, plen);
    fr->op = op;
    fr->fd = fd;
    fr->flags = flags;
    fr->mode = mode;
    fr->buf = uv_buf_init(buf, (unsigned int)len);
    fr->offset = offset < 0 ? -1 : offset;
    weft__io_req_init(&fr->base, fs_run, fs_destroy);

    /* No context: the request must finish before the buffer is let go. */
    weft__io_wait(NULL, &fr->base, WEFT__WAIT_IO);
    ssize_t result = fr->base.result ? fr->base.result : fr->value;
    weft__io_req_unref(&fr->base);
    return result;
}

int weft_file_open(weft_ctx *ctx, const char *path, int flags, int mode)
{
    if (!path)
        return WEFT_EINVAL;
    return (int)fs_call(ctx, FS_OPEN, path, -1, flags | O_CLOEXEC, mode, NULL, 0, -1);
}

ssize_t weft_file_read(weft_ctx *ctx, int fd, void *buf, size_t len, int64_t offset)
{
    if (fd < 0 || (!buf && len > 0))
        return WEFT_EINVAL;
    if (len == 0)
        return 0;
    if (len > IO_CHUNK_MAX)
        len = IO_CHUNK_MAX;
    return fs_call(ctx, FS_READ, NULL, fd, 0, 0, buf, len, offset);
}

int weft_file_write(weft_ctx *ctx, int fd, const void *buf, size_t len, int64_t offset)
{
    if (fd < 0 || (!buf && len > 0))
        return WEFT_EINVAL;
    const char *p = buf;
    size_t off = 0;
    while (off < len) {
        size_t chunk = len - off > IO_CHUNK_MAX ? IO_CHUNK_MAX : len - off;
        int64_t at = offset < 0 ? -1 : offset + (int64_t)off;
        ssize_t n = fs_call(ctx, FS_WRITE, NULL, fd, 0, 0, (void *)(p + off), chunk, at);
        if (n < 0)
            return (int)n;
        if (n == 0)
            return -EIO;
        off += (size_t)n;
    }
    return 0;
}

int weft_file_close(int fd)
{
    if (fd < 0)
        return WEFT_EINVAL;
    return (int)fs_call(NULL, FS_CLOSE, NULL, fd, 0, 0, NULL, 0, -1);
}

int weft_file_read_all(weft_ctx *ctx, const char *path, char **data, size_t *len)
{
    if (!path || !data || !len)
        return WEFT_EINVAL;
    *data = NULL;
    *len = 0;
    int fd = weft_file_open(ctx, path, O_RDONLY, 0);
    if (fd < 0)
        return fd;
    size_t cap = READ_ALL_START, used = 0;
    char *buf = malloc(cap + 1);
    int err = buf ? 0 : WEFT_ENOMEM;
    while (err == 0) {
        if (used == cap) {
            char *bigger = cap > SIZE_MAX / 2 - 1 ? NULL : realloc(buf, cap * 2 + 1);
            if (!bigger) {
                err = WEFT_ENOMEM;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        ssize_t n = weft_file_read(ctx, fd, buf + used, cap - used, -1);
        if (n < 0)
            err = (int)n;
        else if (n == 0)
            break;
        else
            used += (size_t)n;
    }
    weft_file_close(fd);
    if (err) {
        free(buf);
        return err;
    }
    buf[used] = '\0';
    *data = buf;
    *len = used;
    return 0;
}

int weft_file_write_all(weft_ctx *ctx, const char *path, const void *data, size_t len)
{
    if (!path || (!data && len > 0))
        return WEFT_EINVAL;
    int fd = weft_file_open(ctx, path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return fd;
    int err = weft_file_write(ctx, fd, data, len, -1);
    int cerr = weft_file_close(fd);
    return err ? err : cerr;
}
