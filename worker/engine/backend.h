/* backend.h - which machine runs the forward pass: the CPU kernels
 * (forward.c) or the CUDA backend (worker/cuda/, built when the CUDA toolkit
 * is found; see the README's "GPU workers (CUDA)").
 *
 * The choice is made once, when the forward state is created (fwd_new_backend
 * in forward.h, engine_opts_t.backend): `auto` is CUDA when this build has the
 * CUDA backend and a GPU is visible, else the CPU. Asking for `cuda` where it
 * cannot run is an error with a message that says why, never a silent CPU run.
 */
#ifndef KVTIER_BACKEND_H
#define KVTIER_BACKEND_H

#include <stddef.h>

typedef enum {
    BACKEND_CPU = 0,  /* default of engine_opts_defaults (library users) */
    BACKEND_CUDA = 1, /* worker/cuda: one GPU (device 0, or CUDA_VISIBLE_DEVICES) */
    BACKEND_AUTO = 2, /* CUDA when built and a GPU is visible, else CPU (CLI default) */
} backend_kind_t;

/* Parses "cpu", "cuda" or "auto" into *out. Returns 0, or -1 (unchanged)
 * for anything else. */
int backend_parse(const char *s, backend_kind_t *out);

/* "cpu", "cuda", "auto". */
const char *backend_name(backend_kind_t k);

/* 1 when this build contains the CUDA backend, else 0. */
int backend_cuda_built(void);

/* Number of CUDA devices this process can use (0 when none, when the driver
 * is missing, or without the CUDA backend); why (a person-readable line)
 * goes to why when it is 0 and why is non-NULL. Never fails otherwise. */
int backend_cuda_devices(char *why, size_t whylen);

/* Resolves `want` to the backend that will run: CPU stays CPU, AUTO becomes
 * CUDA or CPU as above, CUDA stays CUDA when it can run. Returns 0 with *got
 * set, or -1 with a message in err when CUDA was asked for and cannot run
 * ("--backend cuda: this build has no CUDA backend (...)" / "--backend cuda:
 * no CUDA device is visible (...)"). */
int backend_resolve(backend_kind_t want, backend_kind_t *got, char *err, size_t errlen);

struct fwd;
struct qwen3_model;
struct threadpool;

/* fwd_new (forward.h) for the backend `want` resolves to (backend_resolve):
 * the CPU forward state, with the CUDA forward attached for CUDA (weights
 * copied to the device here). *got (may be NULL) gets the backend that runs.
 * Returns NULL with a message in err (CUDA asked for and unavailable, device
 * memory short, bad shapes). */
struct fwd *backend_fwd_new(const struct qwen3_model *m, struct threadpool *tp, int max_chunk,
                            backend_kind_t want, backend_kind_t *got, char *err, size_t errlen);

#endif
