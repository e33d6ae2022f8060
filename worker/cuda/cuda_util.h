/* cuda_util.h - the one error convention of worker/cuda: every CUDA runtime,
 * cuBLAS and kernel-launch call goes through CU_TRY / CUBLAS_TRY, which on
 * failure writes "FILE:LINE: CALL: ERROR STRING" to (err, errlen) -- the two
 * names every function using them has in scope -- and jumps to its `fail`
 * label. Nothing aborts. */
#ifndef KVTIER_CUDA_UTIL_H
#define KVTIER_CUDA_UTIL_H

#include <stddef.h>
#include <stdio.h>

#include <cublas_v2.h>
#include <cuda_runtime_api.h>

/* cuBLAS's text for a status (cuda_blas.c: cuBLAS is loaded at run time). */
const char *cuda_blas_status_string(cublasStatus_t st);

/* Writes "file:line: what: why" into err (errlen bytes). */
void cu_report(char *err, size_t errlen, const char *file, int line, const char *what,
               const char *why);

#define CU_TRY(call)                                                                               \
    do {                                                                                           \
        cudaError_t cu_e_ = (cudaError_t)(call);                                                   \
        if (cu_e_ != cudaSuccess) {                                                                \
            cu_report(err, errlen, __FILE__, __LINE__, #call, cudaGetErrorString(cu_e_));          \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t cb_e_ = (call);                                                             \
        if (cb_e_ != CUBLAS_STATUS_SUCCESS) {                                                      \
            cu_report(err, errlen, __FILE__, __LINE__, #call, cuda_blas_status_string(cb_e_));     \
            goto fail;                                                                             \
        }                                                                                          \
    } while (0)

/* Grows a device buffer *p of *cap bytes to at least need bytes (contents
 * not kept; the old one freed after a device sync of `s`). Returns 0 or the
 * CUDA error. */
int cu_grow(void **p, size_t *cap, size_t need, cudaStream_t s);

/* Same for pinned host memory (cudaMallocHost). */
int cu_grow_host(void **p, size_t *cap, size_t need, cudaStream_t s);

#endif
