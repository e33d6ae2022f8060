/* model_info.c - kvtier-model-info: loads a Qwen3 checkpoint directory with
 * the worker's loader and prints its configuration, parameter count and load
 * time (cold or warm page cache, whichever it finds). Exit 0 on success, 1
 * with the loader's message on a bad checkpoint, 2 on usage errors. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "model.h"

/* mean / std / element 0 of one view, row by row through tensor_row_f32. */
static void print_stats(const tensor_t *t) {
    int64_t rows = t->ndim == 2 ? t->shape[0] : 1, cols = t->ndim == 2 ? t->shape[1] : t->shape[0];
    float *row = malloc((size_t)cols * sizeof *row);
    double sum = 0, sq = 0;
    for (int64_t r = 0; r < rows; r++) {
        tensor_row_f32(t, r, row);
        for (int64_t j = 0; j < cols; j++) {
            sum += row[j];
            sq += (double)row[j] * row[j];
        }
    }
    free(row);
    double n = (double)rows * (double)cols, mean = sum / n;
    printf("  %-48s %-5s mean %+.6f std %.6f [0] %+.6f\n", t->name, dtype_name(t->dtype), mean,
           sqrt(sq / n - mean * mean), (double)tensor_get_f32(t, 0));
}

static void usage(FILE *f) {
    fprintf(f, "usage: kvtier-model-info [--quiet] [--stats] DIR\n"
               "Loads the Qwen3 checkpoint in DIR (config.json + model.safetensors or\n"
               "model.safetensors.index.json), validates every tensor against the config,\n"
               "and prints the configuration, parameter count and load time.\n"
               "  --quiet   no progress line\n"
               "  --stats   mean / std / first value of the embedding, final norm and layer 0\n");
}

int main(int argc, char **argv) {
    const char *dir = NULL;
    int progress = 1, stats = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--stats") == 0) {
            stats = 1;
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
    char rs[160];
    printf("rope_scaling   %s\n", rope_scaling_describe(&c->rope_scaling, rs, sizeof rs));
    printf("rms_eps        %g\n", (double)c->rms_eps);
    printf("max_pos        %d\n", c->max_pos);
    printf("tied lm_head   %s\n", c->tie_embeddings ? "yes" : "no");
    printf("bos/eos        %d/%d\n", c->bos_id, c->eos_id);
    printf("weight dtype   %s\n", dtype_name(m->embed.dtype));
    printf("parameters     %lld\n", (long long)qwen3_model_n_params(m));
    printf("weight bytes   %lld\n", (long long)bytes);
    printf("load time      %.3f s (%.0f MB/s)\n", dt, dt > 0 ? (double)bytes / 1e6 / dt : 0.0);
    if (stats) {
        const qwen3_layer_t *L = &m->layers[0];
        const tensor_t *ts[] = {
            &m->embed,  &m->final_norm, &L->input_norm, &L->wq,     &L->wk,   &L->wv,    &L->wo,
            &L->q_norm, &L->k_norm,     &L->post_norm,  &L->w_gate, &L->w_up, &L->w_down};
        for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++)
            print_stats(ts[i]);
    }
    qwen3_model_free(m);
    return 0;
}
