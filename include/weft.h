/*
 * weft.h: the whole public API of weft, Go's concurrency model for C.
 * Each area also has a header of its own under weft/.
 */
#ifndef WEFT_H
#define WEFT_H

#include "weft/error.h"
#include "weft/runtime.h"
#include "weft/sync.h"
#include "weft/chan.h"
#include "weft/context.h"
#include "weft/group.h"
#include "weft/atomic.h"
#include "weft/io.h"
#include "weft/debug.h"

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

#endif /* WEFT_H */
