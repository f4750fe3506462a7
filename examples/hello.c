/* The smallest weft program: start the runtime, spawn one coroutine, wait
 * for it with a wait group, and exit with main's result. */
#include <stdio.h>
#include <weft.h>

static void greet(void *arg)
{
    weft_wg *wg = arg;
    printf("hello from coroutine %llu\n", (unsigned long long)weft_id());
    weft_wg_done(wg);
}

static int app_main(void *arg)
{
    (void)arg;
    weft_wg wg = {0};
    weft_wg_add(&wg, 1);
    if (weft_go(greet, &wg) != 0)
        return 1;
    weft_wg_wait(&wg);
    printf("hello from main, on %d processor slots\n", weft_maxprocs());
    return 0;
}

int main(void)
{
    return weft_main(app_main, NULL);
}
