/*
 * Stack overflow report: a coroutine that runs into the guard page below
 * its stack makes the process print
 *
 *   weft: fatal: stack overflow in coroutine N "name" (spawned at FILE:LINE), stack size S
 *
 * to stderr and abort, where a bare SIGSEGV would otherwise leave no hint
 * of which coroutine overflowed. The name part appears only for coroutines
 * given one in weft_go_opts, and S is the usable stack size in bytes.
 * weft_main's coroutine shows "(spawned by weft_main)" instead of a site.
 *
 * Algorithm:
 *  1. Each P's thread gets an alternate signal stack when it starts
 *     (sigaltstack). A thread whose stack pointer sits in a guard page has
 *     no room to push a signal frame, so without it the kernel could only
 *     kill the process.
 *  2. weft_init installs one handler for SIGSEGV and SIGBUS with
 *     SA_ONSTACK | SA_SIGINFO and saves the actions it replaces.
 *  3. The handler reads the running coroutine of the faulting thread's P
 *     (weft__p_self()->curg). When the fault is a real fault, not a signal
 *     sent with kill or sigqueue, and si_addr lies in the guard page just
 *     below that coroutine's stack, it writes the message with write(2)
 *     and calls abort().
 *  4. Any other fault is not ours: the handler puts the saved action back
 *     and returns. The faulting instruction runs again and faults again,
 *     now under the program's own handler, AddressSanitizer's or the
 *     default core dump, with the original si_addr and registers. A signal
 *     sent with kill, tgkill or sigqueue would not repeat, so the handler
 *     raises it again instead. gcc 12's ThreadSanitizer then prints only the first
 *     lines of its report ("nested bug in the same thread"), as it does
 *     after any program's SA_SIGINFO handler.
 *  5. weft_shutdown puts the saved actions back, and each P's thread puts
 *     back its previous alternate stack before it exits.
 *
 * Invariants:
 *  - The handler takes no lock of its own, allocates nothing and calls
 *    only async-signal-safe functions (write, sigaction, raise, abort). It reads
 *    the P, the G record and the stack descriptor, which the faulting
 *    thread itself wrote before it switched to the coroutine, so it needs
 *    no synchronisation with other threads.
 *  - The saved actions are written before the handler is installed and are
 *    not changed while it is installed. Install and restore run under
 *    weft_init's and weft_shutdown's lock.
 *  - Only a fault inside the current coroutine's own guard page is
 *    reported. A frame that jumps over the guard without stack-clash
 *    probes lands in another stack and is not seen here.
 *  - A thread puts back exactly the alternate stack it found, so a
 *    sanitizer runtime that gave the thread one of its own finds that one
 *    again when it tears the thread down.
 */
#define _GNU_SOURCE
#include "overflow.h"

#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "../sched/sched.h"

/* Alternate stack size. The handler itself uses about 1 KiB (an estimate:
 * its message buffer is 640 bytes). The rest is room for a sanitizer
 * runtime's own signal code, which runs on the same stack when the fault
 * is passed on. */
#define ALTSTACK_BYTES ((size_t)64 * 1024)
/* Maximum bytes of a coroutine name in the message. */
#define NAME_MAX_PRINTED 128

/* Actions the handler replaced, put back for faults that are not an
 * overflow and by weft__overflow_handler_restore. */
static struct sigaction saved_segv;
static struct sigaction saved_bus;
static size_t page_size;

/* The calling P thread's alternate stack: the mapping (a guard page, then
 * the stack) and the alternate stack it replaced. Touched only by the
 * thread itself, on its own stack (g0), at start and at exit. */
typedef struct altstack {
    void *map;
    size_t map_bytes;
    stack_t previous;
} altstack;

static _Thread_local altstack thread_altstack __attribute__((tls_model("initial-exec")));

/* A message under construction, in a fixed buffer on the signal stack. */
typedef struct message {
    char text[512 + NAME_MAX_PRINTED];
    size_t len;
} message;

static void append_bytes(message *m, const char *s, size_t n)
{
    size_t room = sizeof m->text - m->len;
    if (n > room)
        n = room;
    memcpy(m->text + m->len, s, n);
    m->len += n;
}

static void append_string(message *m, const char *s)
{
    append_bytes(m, s, strlen(s));
}

static void append_u64(message *m, uint64_t v)
{
    char digits[20];
    size_t n = 0;
    do {
        digits[sizeof digits - 1 - n] = (char)('0' + v % 10);
        v /= 10;
        n++;
    } while (v);
    append_bytes(m, digits + sizeof digits - n, n);
}

static void write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
}

static _Noreturn void report_overflow(const weft__g *g)
{
    message m = { .len = 0 };
    append_string(&m, "weft: fatal: stack overflow in coroutine ");
    append_u64(&m, g->id);
    if (g->name) {
        append_string(&m, " \"");
        append_bytes(&m, g->name, strnlen(g->name, NAME_MAX_PRINTED));
        append_string(&m, "\"");
    }
    if (g->file && g->line > 0) {
        append_string(&m, " (spawned at ");
        append_string(&m, g->file);
        append_string(&m, ":");
        append_u64(&m, (uint64_t)g->line);
        append_string(&m, ")");
    } else if (g->file) {
        /* Line 0 marks a coroutine the runtime spawned: weft_main's. */
        append_string(&m, " (spawned by ");
        append_string(&m, g->file);
        append_string(&m, ")");
    }
    append_string(&m, ", stack size ");
    append_u64(&m, g->stack->size);
    /* Keep the newline even when a long path filled the buffer. */
    if (m.len == sizeof m.text)
        m.len--;
    append_string(&m, "\n");
    write_all(STDERR_FILENO, m.text, m.len);
    abort();
}

/* True when addr lies in the guard page just below g's stack. */
static bool in_guard_page(const weft__g *g, uintptr_t addr)
{
    if (!g->started || !g->stack)
        return false;
    uintptr_t lo = (uintptr_t)g->stack->lo;
    return addr < lo && addr >= lo - page_size;
}

static void on_fault(int sig, siginfo_t *info, void *ucontext)
{
    (void)ucontext;
    /* si_code > 0: the kernel reports a fault of this thread. Otherwise
     * kill, tgkill or sigqueue sent the signal and si_addr means nothing. */
    bool fault = info->si_code > 0;
    weft__p *p = weft__p_self();
    weft__g *g = p ? p->curg : NULL;
    if (fault && g && in_guard_page(g, (uintptr_t)info->si_addr))
        report_overflow(g);

    /* Not an overflow: hand the signal to whatever handled it before.
     * NOTE: this uninstalls the overflow report until the next weft_init,
     * so after a program's own handler recovers from a fault, a later
     * overflow ends in a plain SIGSEGV. */
    int saved_errno = errno;
    sigaction(sig, sig == SIGBUS ? &saved_bus : &saved_segv, NULL);
    if (!fault)
        raise(sig); /* blocked until this handler returns */
    errno = saved_errno;
}

static bool handler_is_ours(const struct sigaction *act)
{
    return (act->sa_flags & SA_SIGINFO) && act->sa_sigaction == on_fault;
}

void weft__overflow_handler_install(void)
{
    page_size = (size_t)sysconf(_SC_PAGESIZE);

    struct sigaction act;
    memset(&act, 0, sizeof act);
    act.sa_sigaction = on_fault;
    act.sa_flags = SA_SIGINFO | SA_ONSTACK;
    /* A fault inside the handler itself then kills the process at once
     * instead of recursing. */
    sigemptyset(&act.sa_mask);
    sigaddset(&act.sa_mask, SIGSEGV);
    sigaddset(&act.sa_mask, SIGBUS);

    int sigs[2] = { SIGSEGV, SIGBUS };
    struct sigaction *saved[2] = { &saved_segv, &saved_bus };
    for (int i = 0; i < 2; i++) {
        struct sigaction current;
        if (sigaction(sigs[i], NULL, &current) != 0 || handler_is_ours(&current))
            continue;
        *saved[i] = current;
        sigaction(sigs[i], &act, NULL);
    }
}

void weft__overflow_handler_restore(void)
{
    int sigs[2] = { SIGSEGV, SIGBUS };
    const struct sigaction *saved[2] = { &saved_segv, &saved_bus };
    for (int i = 0; i < 2; i++) {
        struct sigaction current;
        /* A handler the program installed after weft_init stays. */
        if (sigaction(sigs[i], NULL, &current) == 0 && handler_is_ours(&current))
            sigaction(sigs[i], saved[i], NULL);
    }
}

void weft__overflow_altstack_install(void)
{
    altstack *alt = &thread_altstack;
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    size_t bytes = ALTSTACK_BYTES;
#ifdef _SC_SIGSTKSZ
    long recommended = sysconf(_SC_SIGSTKSZ);
    if (recommended > 0 && (size_t)recommended > bytes)
        bytes = ((size_t)recommended + page - 1) & ~(page - 1);
#endif

    alt->map = NULL;
    if (sigaltstack(NULL, &alt->previous) != 0)
        return;
    /* A guard page below the stack, so a handler that overflows it faults
     * instead of writing over the neighbouring mapping. */
    void *map = mmap(NULL, bytes + page, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (map == MAP_FAILED)
        return;
    if (mprotect(map, page, PROT_NONE) != 0) {
        munmap(map, bytes + page);
        return;
    }
    stack_t ss = { .ss_sp = (char *)map + page, .ss_size = bytes, .ss_flags = 0 };
    if (sigaltstack(&ss, NULL) != 0) {
        munmap(map, bytes + page);
        return;
    }
    alt->map = map;
    alt->map_bytes = bytes + page;
}

void weft__overflow_altstack_remove(void)
{
    altstack *alt = &thread_altstack;
    if (!alt->map)
        return;
    stack_t previous = alt->previous;
    /* ss_flags as read back carries SS_ONSTACK, which setting rejects. */
    if (previous.ss_flags & SS_DISABLE)
        previous.ss_flags = SS_DISABLE;
    else
        previous.ss_flags = 0;
    sigaltstack(&previous, NULL);
    munmap(alt->map, alt->map_bytes);
    alt->map = NULL;
}
