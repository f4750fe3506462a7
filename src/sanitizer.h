/*
 * Internal header: hooks that tell AddressSanitizer and ThreadSanitizer
 * about stack switches and about memory the runtime recycles.
 *
 * In builds without a sanitizer every hook is an empty inline function, so
 * callers need no #ifdef. The compilers announce the sanitizers with
 * __SANITIZE_ADDRESS__ / __SANITIZE_THREAD__ (gcc) or __has_feature (clang).
 */
#ifndef WEFT_SANITIZER_H
#define WEFT_SANITIZER_H

#include <stddef.h>

#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#define WEFT_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define WEFT_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__)
#define WEFT_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__)
#define WEFT_TSAN 1
#endif

#ifdef WEFT_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom,
                                    size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save,
                                     const void **bottom_old, size_t *size_old);
void __asan_unpoison_memory_region(void const volatile *addr, size_t size);
static inline void weft__asan_unpoison(void *p, size_t n)
{
    __asan_unpoison_memory_region(p, n);
}
#else
static inline void weft__asan_unpoison(void *p, size_t n)
{
    (void)p;
    (void)n;
}
#endif

#ifdef WEFT_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_destroy_fiber(void *fiber);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_acquire(void *addr);
void __tsan_release(void *addr);
#endif

#endif /* WEFT_SANITIZER_H */
