/*
 * weft/atomic.h: typed atomic values after Go's atomic.Int64 and friends,
 * header-only wrappers over <stdatomic.h>. Every operation is sequentially
 * consistent, as Go's are. Zero-initialised means 0, false or NULL.
 *
 *   T    weft_atomic_X_load(const weft_atomic_X *a)
 *   void weft_atomic_X_store(weft_atomic_X *a, T v)
 *   T    weft_atomic_X_swap(weft_atomic_X *a, T v)        returns the old value
 *   bool weft_atomic_X_cas(weft_atomic_X *a, T old, T new) true if it swapped
 *   T    weft_atomic_X_add(weft_atomic_X *a, T delta)     integers; returns the new value
 *
 * for X in i32, i64, u64 (integers), bool and ptr (void *).
 */
#ifndef WEFT_ATOMIC_H
#define WEFT_ATOMIC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT__ATOMIC_COMMON(name, T)                                         \
    typedef struct weft_atomic_##name {                                      \
        _Atomic(T) v;                                                        \
    } weft_atomic_##name;                                                    \
    static inline T weft_atomic_##name##_load(const weft_atomic_##name *a)  \
    {                                                                        \
        return atomic_load((_Atomic(T) *)&a->v);                             \
    }                                                                        \
    static inline void weft_atomic_##name##_store(weft_atomic_##name *a,     \
                                                  T v)                       \
    {                                                                        \
        atomic_store(&a->v, v);                                              \
    }                                                                        \
    static inline T weft_atomic_##name##_swap(weft_atomic_##name *a, T v)    \
    {                                                                        \
        return atomic_exchange(&a->v, v);                                    \
    }                                                                        \
    static inline bool weft_atomic_##name##_cas(weft_atomic_##name *a,       \
                                                T old_value, T new_value)    \
    {                                                                        \
        return atomic_compare_exchange_strong(&a->v, &old_value, new_value); \
    }

#define WEFT__ATOMIC_INTEGER(name, T)                                        \
    WEFT__ATOMIC_COMMON(name, T)                                             \
    static inline T weft_atomic_##name##_add(weft_atomic_##name *a, T delta) \
    {                                                                        \
        /* Wraps around like Go's: unsigned arithmetic has no overflow. */   \
        return (T)((uint64_t)atomic_fetch_add(&a->v, delta) +                \
                   (uint64_t)delta);                                         \
    }

WEFT__ATOMIC_INTEGER(i32, int32_t)
WEFT__ATOMIC_INTEGER(i64, int64_t)
WEFT__ATOMIC_INTEGER(u64, uint64_t)
WEFT__ATOMIC_COMMON(bool, bool)
WEFT__ATOMIC_COMMON(ptr, void *)

#ifdef __cplusplus
}
#endif

#endif /* WEFT_ATOMIC_H */
