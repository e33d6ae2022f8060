/* cuda_blas.c - linear layers on the GPU: own gemv for one row, cuBLAS for
 * more (cuda_blas.h). */
#include "cuda_blas.h"

#include <stdlib.h>

#include "cuda_kernels.h"
#include "cuda_util.h"

struct cuda_lin {
    cudaStream_t s;
    cublasHandle_t h;
    uint16_t *hi, *lo; /* [max_rows * max_cols] bf16 split of the input */
    size_t cap;        /* elements of hi and lo */
    const float *x;    /* current input (borrowed) */
    int n, cols;
};

cuda_lin_t *cuda_lin_new(cudaStream_t s, int max_rows, int max_cols, char *err, size_t errlen) {
    cuda_lin_t *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "cuda: out of host memory");
        return NULL;
    }
    l->s = s;
    l->cap = (size_t)max_rows * (size_t)max_cols;
    CUBLAS_TRY(cublasCreate(&l->h));
    CUBLAS_TRY(cublasSetStream(l->h, s));
    /* f32 GEMMs stay f32 (no TF32); the bf16 ones accumulate in f32 */
    CUBLAS_TRY(cublasSetMathMode(l->h, CUBLAS_DEFAULT_MATH));
    CU_TRY(cudaMalloc((void **)&l->hi, l->cap * sizeof(uint16_t)));
    CU_TRY(cudaMalloc((void **)&l->lo, l->cap * sizeof(uint16_t)));
    return l;
fail:
    cuda_lin_free(l);
    return NULL;
}

void cuda_lin_free(cuda_lin_t *l) {
    if (!l)
        return;
    if (l->h)
        cublasDestroy(l->h);
    cudaFree(l->hi);
    cudaFree(l->lo);
    free(l);
}

int cuda_lin_input(cuda_lin_t *l, const float *x, int n, int cols, char *err, size_t errlen) {
    l->x = x;
    l->n = n;
    l->cols = cols;
    if (n > 1) {
        if ((size_t)n * (size_t)cols > l->cap) {
            snprintf(err, errlen, "cuda: linear input %d x %d exceeds the scratch of %zu", n, cols,
                     l->cap);
            return -1;
        }
        CU_TRY(ck_split_bf16(l->s, x, l->hi, l->lo, (int64_t)n * cols));
    }
    return 0;
fail:
    return -1;
}

int cuda_lin_run(cuda_lin_t *l, const void *W, int wdt, int rows, float *y, int accumulate,
                 char *err, size_t errlen) {
    if (l->n == 1) {
        CU_TRY(ck_gemv(l->s, W, wdt, l->x, y, rows, l->cols, accumulate));
        return 0;
    }
    /* column-major view: Y^T [rows, n] = W^T' [rows, cols] * X^T [cols, n]:
     * W row-major [rows, cols] is column-major [cols, rows] (lda = cols), op T;
     * X row-major [n, cols] is column-major [cols, n] (ldb = cols), op N;
     * Y row-major [n, rows] is column-major [rows, n] (ldc = rows). */
    const float one = 1.0f, zero = 0.0f;
    const float *beta = accumulate ? &one : &zero;
    if (wdt == CK_F32) {
        CUBLAS_TRY(cublasSgemm(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one,
                               (const float *)W, l->cols, l->x, l->cols, beta, y, rows));
        return 0;
    }
    CUBLAS_TRY(cublasGemmEx(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one, W,
                            CUDA_R_16BF, l->cols, l->hi, CUDA_R_16BF, l->cols, beta, y, CUDA_R_32F,
                            rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CUBLAS_TRY(cublasGemmEx(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one, W,
                            CUDA_R_16BF, l->cols, l->lo, CUDA_R_16BF, l->cols, &one, y, CUDA_R_32F,
                            rows, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
fail:
    return -1;
}
