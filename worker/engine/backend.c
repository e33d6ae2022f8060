/* backend.c - backend names and the cpu / cuda / auto decision (backend.h). */
#include "backend.h"

#include <stdio.h>
#include <string.h>

#include "forward.h"

#ifdef KVTIER_HAVE_CUDA
#include "cuda_forward.h"
#include "cuda_probe.h"
#endif

int backend_parse(const char *s, backend_kind_t *out) {
    if (!s)
        return -1;
    if (!strcmp(s, "cpu"))
        *out = BACKEND_CPU;
    else if (!strcmp(s, "cuda"))
        *out = BACKEND_CUDA;
    else if (!strcmp(s, "auto"))
        *out = BACKEND_AUTO;
    else
        return -1;
    return 0;
}

const char *backend_name(backend_kind_t k) {
    switch (k) {
    case BACKEND_CPU:
        return "cpu";
    case BACKEND_CUDA:
        return "cuda";
    case BACKEND_AUTO:
        return "auto";
    }
    return "?";
}

int backend_cuda_built(void) {
#ifdef KVTIER_HAVE_CUDA
    return 1;
#else
    return 0;
#endif
}

int backend_cuda_devices(char *why, size_t whylen) {
#ifdef KVTIER_HAVE_CUDA
    return cuda_probe_devices(why, whylen);
#else
    if (why && whylen)
        snprintf(why, whylen,
                 "this build has no CUDA backend (configure with nvcc and the CUDA toolkit "
                 "installed, -DKVTIER_CUDA=ON)");
    return 0;
#endif
}

int backend_resolve(backend_kind_t want, backend_kind_t *got, char *err, size_t errlen) {
    if (want == BACKEND_CPU) {
        *got = BACKEND_CPU;
        return 0;
    }
    if (want != BACKEND_CUDA && want != BACKEND_AUTO) {
        if (err && errlen)
            snprintf(err, errlen, "--backend: unknown backend %d (cpu, cuda or auto)", (int)want);
        return -1;
    }
    char why[256] = "";
    int n = backend_cuda_devices(why, sizeof why);
    if (n > 0) {
        *got = BACKEND_CUDA;
        return 0;
    }
    if (want == BACKEND_AUTO) {
        *got = BACKEND_CPU;
        return 0;
    }
    if (err && errlen)
        snprintf(err, errlen, "--backend cuda: %s; use --backend cpu (or auto)", why);
    return -1;
}

/* ---------------------------------------------------------------- forward */

struct fwd *backend_fwd_new(const struct qwen3_model *m, struct threadpool *tp, int max_chunk,
                            backend_kind_t want, backend_kind_t *got, char *err, size_t errlen) {
    backend_kind_t k;
    if (backend_resolve(want, &k, err, errlen) != 0)
        return NULL;
    fwd_t *f = fwd_new(m, tp, max_chunk, err, errlen);
    if (!f)
        return NULL;
#ifdef KVTIER_HAVE_CUDA
    if (k == BACKEND_CUDA) {
        cuda_fwd_t *d = cuda_fwd_new(m, fwd_max_chunk(f), err, errlen);
        if (!d) {
            fwd_free(f);
            return NULL;
        }
        fwd_attach_device(f, &cuda_fwd_ops, d);
    }
#endif
    if (got)
        *got = k;
    return f;
}
