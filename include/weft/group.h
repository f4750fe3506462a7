/*
 * weft/group.h: error group (golang.org/x/sync/errgroup): run tasks that
 * may fail, cancel the rest on the first error, wait for all of them.
 * Each task receives the group's context. A group is used once: after
 * weft_group_wait, make a new one.
 */
#ifndef WEFT_GROUP_H
#define WEFT_GROUP_H

#include "weft/context.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct weft_group weft_group;
typedef int (*weft_task)(weft_ctx *ctx, void *arg);

weft_group *weft_group_make(weft_ctx *parent);     /* NULL when out of memory */
/* Canceled on the first error or when wait returns. Owned by the group:
 * do not release it. */
weft_ctx *weft_group_ctx(weft_group *g);
/* n <= 0: no limit. WEFT_EINVAL while tasks run, WEFT_ENOMEM. */
int weft_group_set_limit(weft_group *g, int n);
/* 0; WEFT_ENOMEM; WEFT_EINVAL when fn is NULL or the runtime is not
 * running. Blocks while the limit is reached. */
int weft_group_go(weft_group *g, weft_task fn, void *arg);
/* As weft_group_go, but WEFT_EAGAIN at the limit. */
int weft_group_try_go(weft_group *g, weft_task fn, void *arg);
int weft_group_wait(weft_group *g);                /* first non-zero result, or 0 */
/* Waits for running tasks (without canceling them: call wait first, or
 * cancel through the context), then frees the group. */
void weft_group_release(weft_group *g);

#ifdef __cplusplus
}
#endif

#endif /* WEFT_GROUP_H */
