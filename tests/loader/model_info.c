/* model_info.c - kvtier-model-info: loads a Qwen3 checkpoint directory with
 * the worker's loader and prints its configuration, parameter count and load
 * time (cold or warm page cache, whichever it finds). Exit 0 on success, 1
 * with the loader's message on a bad checkpoint, 2 on usage errors. */
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "model.h"

static void usage(FILE *f) {
    fprintf(f, "usage: kvtier-model-info [--quiet] DIR\n"
               "Loads the Qwen3 checkpoint in DIR (config.json + model.safetensors or\n"
               "model.safetensors.index.json), validates every tensor against the config,\n"
               "and prints the configuration, parameter count and load time.\n"
               "  --quiet   no progress line\n");
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int progress = 1;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--quiet") == 0) {
            progress = 0;
        } else if (argv[i][0] == '-' || dir) {
            usage(stderr);
            return 2;
        } else {
            dir = argv[i];
        }
    }
    if (!dir) {
        usage(stderr);
        return 2;
    }
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    qwen3_model_t *m = NULL;
    char err[1024];
    if (qwen3_model_load(dir, progress, &m, err, sizeof err) != 0) {
        fprintf(stderr, "kvtier-model-info: %s\n", err);
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double dt = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    const qwen3_config_t *c = &m->cfg;
    int64_t bytes = qwen3_model_weight_bytes(m);
    printf("dir            %s\n", dir);
    printf("layers         %d\n", c->n_layers);
    printf("hidden         %d\n", c->hidden);
    printf("intermediate   %d\n", c->intermediate);
    printf("heads q/kv     %d/%d (head_dim %d)\n", c->n_heads, c->n_kv_heads, c->head_dim);
    printf("vocab          %d\n", c->vocab_size);
    printf("rope_theta     %g\n", c->rope_theta);
    printf("rms_eps        %g\n", (double)c->rms_eps);
    printf("max_pos        %d\n", c->max_pos);
    printf("tied lm_head   %s\n", c->tie_embeddings ? "yes" : "no");
    printf("bos/eos        %d/%d\n", c->bos_id, c->eos_id);
    printf("weight dtype   %s\n", dtype_name(m->embed.dtype));
    printf("parameters     %lld\n", (long long)qwen3_model_n_params(m));
    printf("weight bytes   %lld\n", (long long)bytes);
    printf("load time      %.3f s (%.0f MB/s)\n", dt, dt > 0 ? (double)bytes / 1e6 / dt : 0.0);
    qwen3_model_free(m);
    return 0;
}
