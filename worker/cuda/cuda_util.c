/* cuda_util.c - error reporting and buffer growth (cuda_util.h). */
#include "cuda_util.h"

#include <string.h>

void cu_report(char *err, size_t errlen, const char *file, int line, const char *what,
               const char *why) {
    if (!err || !errlen)
        return;
    const char *base = strrchr(file, '/');
    snprintf(err, errlen, "cuda: %s:%d: %s: %s", base ? base + 1 : file, line, what,
             why ? why : "?");
}

/* cu_grow / cu_grow_host: device or pinned host memory, the same growth. */
static int grow(void **p, size_t *cap, size_t need, cudaStream_t s, int host) {
    if (need <= *cap && *p)
        return 0;
    size_t c = *cap ? *cap : 4096;
    while (c < need)
        c *= 2;
    cudaError_t e = cudaStreamSynchronize(s);
    if (e != cudaSuccess)
        return (int)e;
    if (*p)
        host ? cudaFreeHost(*p) : cudaFree(*p);
    *p = NULL;
    *cap = 0;
    e = host ? cudaMallocHost(p, c) : cudaMalloc(p, c);
    if (e != cudaSuccess) {
        *p = NULL;
        return (int)e;
    }
    *cap = c;
    return 0;
}

int cu_grow(void **p, size_t *cap, size_t need, cudaStream_t s) {
    return grow(p, cap, need, s, 0);
}

int cu_grow_host(void **p, size_t *cap, size_t need, cudaStream_t s) {
    return grow(p, cap, need, s, 1);
}
