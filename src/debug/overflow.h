/*
 * Internal header: the stack overflow report (overflow.c).
 *
 * A coroutine that runs into the guard page below its stack makes the
 * process print "weft: fatal: stack overflow in coroutine N ..." and abort,
 * instead of dying of a bare SIGSEGV. Every other fault keeps the action it
 * had before weft_init.
 */
#ifndef WEFT_DEBUG_OVERFLOW_H
#define WEFT_DEBUG_OVERFLOW_H

/* Install the SIGSEGV and SIGBUS handler and save the previous actions.
 * Called by weft_init once the Ps run, before any coroutine can. */
void weft__overflow_handler_install(void);

/* Put back the actions saved by weft__overflow_handler_install, unless the
 * program has replaced the handler since. Called by weft_shutdown after the
 * Ps' threads have exited. */
void weft__overflow_handler_restore(void);

/* Give the calling thread an alternate signal stack, so the handler can run
 * when the thread's coroutine has used up its own stack. Called by each P's
 * thread when it starts. Without memory for it, the thread goes on without
 * one and an overflow ends in a plain SIGSEGV. */
void weft__overflow_altstack_install(void);

/* Put back the calling thread's previous alternate signal stack and unmap
 * the one weft__overflow_altstack_install made. Called by each P's thread
 * just before it exits. */
void weft__overflow_altstack_remove(void);

#endif /* WEFT_DEBUG_OVERFLOW_H */
