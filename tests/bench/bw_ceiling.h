/* bw_ceiling.h - the read-bandwidth ceiling of engine_bench's decode
 * roofline, one function per backend.
 *
 * A roofline's denominator must be a ceiling: no run of the engine may read
 * faster than it. One read loop is not one: the engine's matvec (several
 * rows in flight, software prefetch, AVX-512) read ~30 GB/s where a
 * prefetching AVX2 loop measured 24.5. So the ceiling is the best of several
 * read kernels, each run on the engine's own thread pool (same thread count)
 * over a buffer as large as what one decode step reads (weight bytes + KV
 * bytes): a footprint that fits in the cache is measured in the cache too.
 * One of the kernels is the engine's own matvec (kn_matvec) over a synthetic
 * matrix of the weights' dtype, counted in bytes read per second.
 *
 * If the engine still reads faster than every kernel, part of its footprint
 * sat in the cache while the kernels' did not (or the machine changed
 * speed): the caller reports that, it does not clamp. */
#ifndef KVTIER_BW_CEILING_H
#define KVTIER_BW_CEILING_H

#include <stddef.h>

#include "model.h"
#include "threadpool.h"

enum {
    BW_K_SUM = 0,      /* plain C: one 64-bit integer sum per task (the compiler vectorizes it) */
    BW_K_AVX2X4_PF,    /* AVX2, 4 accumulators, 128 B a turn, software prefetch 4 KiB ahead */
    BW_K_AVX2X8,       /* AVX2, 8 accumulators, 256 B a turn, hardware prefetch only */
    BW_K_AVX512X8,     /* AVX-512, 8 accumulators, 512 B a turn */
    BW_K_AVX2_4STREAM, /* AVX2, each task reads 4 sub-ranges in lockstep (4 streams, as
                          a matvec over 4 rows) */
    BW_K_MATVEC,       /* the engine's kn_matvec on a [rows, hidden] matrix of the weights'
                          dtype */
    BW_NKERNELS
};

typedef struct bw_ceiling {
    double gbs;                     /* the ceiling: best of every kernel, 1e9 bytes/s */
    int best;                       /* the kernel that gave it (BW_K_*) */
    double kernel_gbs[BW_NKERNELS]; /* each kernel's best; 0 = not run (CPU lacks it) */
    size_t bytes;                   /* footprint each pass reads */
} bw_ceiling;

/* "sum", "avx2x4-pf", "avx2x8", "avx512x8", "avx2-4stream", "matvec". */
const char *bw_kernel_name(int k);

/* CPU backend: every kernel on tp's threads over one buffer of `bytes`
 * (rounded to whole matrix rows of `cols` elements of dtype wdt for the
 * matvec); each kernel's figure is the best of `reps` timings, a timing
 * covering at least ~64 MiB of reads (small footprints are passed over
 * several times). Fills *out. Returns 0, or -1 with a message in err (out
 * of memory). */
int bw_ceiling_cpu(threadpool_t *tp, size_t bytes, dtype_t wdt, int cols, int reps, bw_ceiling *out,
                   char *err, size_t errlen);

/* CUDA backend (seam for the CUDA developer, not implemented here): the
 * device-memory ceiling of the GPU decode roofline, measured the same way:
 * the best of several device read kernels (e.g. vectorized 16-byte loads
 * with several loads in flight per thread, a grid-stride sum, and the
 * engine's own GEMV on a synthetic matrix), all over a device buffer of
 * `bytes` (the weights + KV footprint), best of `reps`. Until it is filled
 * it returns -1 with "not measured" in err and engine_bench reports no
 * device roofline. */
int bw_ceiling_cuda(int device, size_t bytes, int reps, bw_ceiling *out, char *err, size_t errlen);

/* Keeps, per kernel, the better of *acc and *b, and the best overall. */
void bw_ceiling_merge(bw_ceiling *acc, const bw_ceiling *b);

/* Size of the last-level cache in bytes (sysfs, else sysconf); 0 = unknown. */
size_t bw_llc_bytes(void);

#endif
