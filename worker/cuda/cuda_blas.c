/* cuda_blas.c - linear layers on the GPU: own gemv for one row, cuBLAS for
 * more (cuda_blas.h). */
#include "cuda_blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdlib.h>

#include "cuda_kernels.h"
#include "cuda_util.h"

#ifndef KVTIER_CUBLAS_SONAME
#define KVTIER_CUBLAS_SONAME "libcublas.so"
#endif
#ifndef KVTIER_CUBLAS_PATH
#define KVTIER_CUBLAS_PATH KVTIER_CUBLAS_SONAME
#endif

/* ---------------------------------------------------------------- cuBLAS at run time */

static struct {
    cublasStatus_t (*create)(cublasHandle_t *);
    cublasStatus_t (*destroy)(cublasHandle_t);
    cublasStatus_t (*set_stream)(cublasHandle_t, cudaStream_t);
    cublasStatus_t (*set_math)(cublasHandle_t, cublasMath_t);
    cublasStatus_t (*sgemm)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                            const float *, const float *, int, const float *, int, const float *,
                            float *, int);
    cublasStatus_t (*gemm_ex)(cublasHandle_t, cublasOperation_t, cublasOperation_t, int, int, int,
                              const void *, const void *, cudaDataType, int, const void *,
                              cudaDataType, int, const void *, void *, cudaDataType, int,
                              cublasComputeType_t, cublasGemmAlgo_t);
    const char *(*status_string)(cublasStatus_t);
    int ok;
    char why[256];
} cb;
static pthread_once_t cb_once = PTHREAD_ONCE_INIT;

static void cb_load(void) {
    void *h = dlopen(KVTIER_CUBLAS_SONAME, RTLD_NOW | RTLD_LOCAL);
    if (!h)
        h = dlopen(KVTIER_CUBLAS_PATH, RTLD_NOW | RTLD_LOCAL);
    if (!h) {
        const char *e = dlerror();
        snprintf(cb.why, sizeof cb.why, "cannot load cuBLAS (%s)", e ? e : KVTIER_CUBLAS_SONAME);
        return;
    }
    static const char *const names[] = {
        "cublasCreate_v2", "cublasDestroy_v2", "cublasSetStream_v2",   "cublasSetMathMode",
        "cublasSgemm_v2",  "cublasGemmEx",     "cublasGetStatusString"};
    void *fn[7];
    for (int i = 0; i < 7; i++)
        if (!(fn[i] = dlsym(h, names[i]))) {
            snprintf(cb.why, sizeof cb.why, "cuBLAS (%s) lacks %s", KVTIER_CUBLAS_SONAME, names[i]);
            return;
        }
    /* POSIX: function pointers travel through void * (dlsym) */
    *(void **)&cb.create = fn[0];
    *(void **)&cb.destroy = fn[1];
    *(void **)&cb.set_stream = fn[2];
    *(void **)&cb.set_math = fn[3];
    *(void **)&cb.sgemm = fn[4];
    *(void **)&cb.gemm_ex = fn[5];
    *(void **)&cb.status_string = fn[6];
    cb.ok = 1;
}

const char *cuda_blas_status_string(cublasStatus_t st) {
    return cb.ok ? cb.status_string(st) : "cuBLAS not loaded";
}

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
    pthread_once(&cb_once, cb_load);
    if (!cb.ok) {
        snprintf(err, errlen, "cuda: %s", cb.why);
        free(l);
        return NULL;
    }
    CUBLAS_TRY(cb.create(&l->h));
    CUBLAS_TRY(cb.set_stream(l->h, s));
    /* f32 GEMMs stay f32 (no TF32); the bf16 ones accumulate in f32 */
    CUBLAS_TRY(cb.set_math(l->h, CUBLAS_DEFAULT_MATH));
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
        cb.destroy(l->h);
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
        CUBLAS_TRY(cb.sgemm(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one,
                            (const float *)W, l->cols, l->x, l->cols, beta, y, rows));
        return 0;
    }
    CUBLAS_TRY(cb.gemm_ex(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one, W, CUDA_R_16BF,
                          l->cols, l->hi, CUDA_R_16BF, l->cols, beta, y, CUDA_R_32F, rows,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    CUBLAS_TRY(cb.gemm_ex(l->h, CUBLAS_OP_T, CUBLAS_OP_N, rows, l->n, l->cols, &one, W, CUDA_R_16BF,
                          l->cols, l->lo, CUDA_R_16BF, l->cols, &one, y, CUDA_R_32F, rows,
                          CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
    return 0;
fail:
    return -1;
}
