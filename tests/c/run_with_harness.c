/*
 * run_with_harness.c - tests/test_integration.py's check of nupes_<name>_run_with (caller buffers).
 *
 * Build with -DMODEL=<name> -DMODEL_UPPER=<NAME> -DMODEL_HEADER='"nupes_model_<name>.h"' -pthread
 * (and -DHARNESS_NO_STATIC together with -DNUPES_<NAME>_NO_STATIC_ARENA).
 * Reads N inputs (NUPES_<NAME>_INPUT_SIZE bytes each) from stdin and writes three blocks of N
 * outputs to stdout:
 *   1. nupes_<name>_run (the static arena; zeros instead under NUPES_<NAME>_NO_STATIC_ARENA),
 *   2. _run_with on buffers refilled with garbage before every call, alternating two buffer sets
 *      at different offsets (no state may leak between calls or depend on the buffer's address),
 *      with `in` and `out` at odd addresses (they need no alignment),
 *   3. _run_with from two threads at once, each with its own buffers (reentrancy; the test builds
 *      this with ThreadSanitizer where it can). Argument "shared": both threads share one set of
 *      buffers, which must be reported as a race (the check's own control).
 * Then checks that a NULL or misaligned buffer is refused (-1) without touching `out`.
 * Exit status 0, or 4 when a return value is wrong.
 */
#define _POSIX_C_SOURCE 200809L
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include MODEL_HEADER

#define CAT3_(a, b, c) a##b##c
#define CAT3(a, b, c) CAT3_(a, b, c)
#define RUN CAT3(nupes_, MODEL, _run)
#define RUN_WITH CAT3(nupes_, MODEL, _run_with)
#define M(suffix) CAT3(NUPES_, MODEL_UPPER, suffix)
#define IN_SIZE M(_INPUT_SIZE)
#define OUT_SIZE M(_OUTPUT_SIZE)
#define ARENA_WORDS M(_ARENA_WORDS)
#define SCRATCH_WORDS M(_SCRATCH_WORDS)
#define ALIGN M(_BUFFER_ALIGN)

typedef struct {
    uint32_t arena[ARENA_WORDS + 4];
    uint32_t scratch[SCRATCH_WORDS + 4];
} buffers_t;

typedef struct {
    const int8_t *in;
    int8_t *out;
    long first, count, step;
    buffers_t *buf;
    int failed;
} job_t;

static void *worker(void *arg)
{
    job_t *j = (job_t *)arg;
    long i;
    for (i = j->first; i < j->count; i += j->step) {
        if (RUN_WITH(j->in + i * IN_SIZE, j->out + i * OUT_SIZE, j->buf->arena, j->buf->scratch) != 0) {
            j->failed = 1;
        }
    }
    return 0;
}

int main(int argc, char **argv)
{
    const int shared = argc > 1 && strcmp(argv[1], "shared") == 0;
    size_t cap = 1 << 16, n = 0, got;
    int8_t *in = (int8_t *)malloc(cap), *outs;
    static buffers_t bufs[2];
    pthread_t th[2];
    job_t jobs[2];
    long i, count;
    int t, bad = 0;

    while (in && (got = fread(in + n, 1, cap - n, stdin)) > 0) {
        n += got;
        if (n == cap) {
            cap *= 2;
            in = (int8_t *)realloc(in, cap);
        }
    }
    if (!in || n % IN_SIZE != 0) {
        fprintf(stderr, "harness: input is not whole samples\n");
        return 2;
    }
    count = (long)(n / IN_SIZE);
    outs = (int8_t *)calloc((size_t)(3 * count) * OUT_SIZE + 1, 1);
    if (!outs) {
        return 2;
    }
    for (i = 0; i < count; ++i) {
#ifndef HARNESS_NO_STATIC
        if (RUN(in + i * IN_SIZE, outs + i * OUT_SIZE) != 0) {
            bad = 1;
        }
#endif
        {
            /* a different, still aligned, buffer address each time; `in` and `out` at odd addresses */
            static int8_t in_odd[IN_SIZE + 1], out_odd[OUT_SIZE + 1];
            buffers_t *b = &bufs[i % 2];
            const int shift = (int)(i % 2) * ALIGN;
            memset(b, (int)(0x5A + i) & 0xFF, sizeof *b);
            memcpy(in_odd + 1, in + i * IN_SIZE, IN_SIZE);
            if (RUN_WITH(in_odd + 1, out_odd + 1, (char *)b->arena + shift, (char *)b->scratch + shift) != 0) {
                bad = 1;
            }
            memcpy(outs + (count + i) * OUT_SIZE, out_odd + 1, OUT_SIZE);
        }
    }
    for (t = 0; t < 2; ++t) {
        jobs[t].in = in;
        jobs[t].out = outs + 2 * count * OUT_SIZE;
        jobs[t].first = t;
        jobs[t].count = count;
        jobs[t].step = 2;
        jobs[t].buf = &bufs[shared ? 0 : t];
        jobs[t].failed = 0;
        if (pthread_create(&th[t], 0, worker, &jobs[t]) != 0) {
            return 2;
        }
    }
    for (t = 0; t < 2; ++t) {
        pthread_join(th[t], 0);
        bad |= jobs[t].failed;
    }
    /* refusals: nothing run, `out` untouched */
    if (count > 0) {
        int8_t one[OUT_SIZE];
        memset(one, 0x11, sizeof one);
        if (RUN_WITH(in, one, (char *)bufs[0].arena + 1, bufs[0].scratch) != -1
            || RUN_WITH(in, one, bufs[0].arena, (char *)bufs[0].scratch + 2) != -1
            || RUN_WITH(in, one, 0, bufs[0].scratch) != -1 || RUN_WITH(0, one, bufs[0].arena, bufs[0].scratch) != -1
            || one[0] != 0x11 || one[OUT_SIZE - 1] != 0x11) {
            fprintf(stderr, "harness: a NULL or misaligned buffer was not refused\n");
            bad = 1;
        }
    }
    if (fwrite(outs, 1, (size_t)(3 * count) * OUT_SIZE, stdout) != (size_t)(3 * count) * OUT_SIZE) {
        return 3;
    }
    free(outs);
    free(in);
    return bad ? 4 : 0;
}
