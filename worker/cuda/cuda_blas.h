/* cuda_blas.h - the linear layers of the GPU forward pass: Y[n, rows] (+)=
 * X[n, cols] W^T with W [rows, cols] row-major on the device (BF16 or F32),
 * X and Y f32.
 *
 * One row (decode): ck_gemv (own kernel, reads the weights once at full
 * bandwidth, f32 accumulation, f32 activations: the CPU matvec's math).
 * Several rows (prefill): cuBLAS with f32 accumulation. F32 weights:
 * cublasSgemm (no TF32). BF16 weights: X is split into bf16 hi + lo
 * (X ~ hi + lo to about 16 mantissa bits) and two cublasGemmEx calls add
 * up (bf16 x bf16 -> f32, CUBLAS_COMPUTE_32F), so rounding X to bf16 does not
 * cost the ~3 significant digits a single bf16 GEMM would.
 *
 * cuBLAS is loaded with dlopen when the first cuda_lin_t is created, not
 * linked: mapping libcublas / libcublasLt costs every process that starts
 * (each test, `kvtier-worker --help`) about half a second and 200 MB, even
 * on the CPU backend.
 */
#ifndef KVTIER_CUDA_BLAS_H
#define KVTIER_CUDA_BLAS_H

#include <stddef.h>
#include <stdint.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

typedef struct cuda_lin cuda_lin_t;

/* Creates the cuBLAS handle on stream s (borrowed) and bf16 input scratch
 * for up to max_rows x max_cols. Returns NULL with a message in err. */
cuda_lin_t *cuda_lin_new(cudaStream_t s, int max_rows, int max_cols, char *err, size_t errlen);

void cuda_lin_free(cuda_lin_t *l);

/* Sets the input X [n, cols] (device, borrowed until the next call) for the
 * following cuda_lin_run calls; converts it for the bf16 GEMM when n > 1.
 * Returns 0 or -1 with err. */
int cuda_lin_input(cuda_lin_t *l, const float *x, int n, int cols, char *err, size_t errlen);

/* Y[n, rows] = X W^T (accumulate != 0: Y += X W^T) for the current input.
 * wdt is 0 (F32) or 2 (BF16). Returns 0 or -1 with err. */
int cuda_lin_run(cuda_lin_t *l, const void *W, int wdt, int rows, float *y, int accumulate,
                 char *err, size_t errlen);

#endif
