/* gen_config.h - a checkpoint's generation_config.json (Hugging Face): the
 * end-of-sequence ids and the default sampling the model was released with.
 *
 * Read once per model directory; pure data, no I/O after the load. What a
 * frontend does with it: stop on every eos id; sample with temperature /
 * top_p / top_k when do_sample is true and the request did not say otherwise,
 * greedy when do_sample is false (transformers' rule). */
#ifndef KVTIER_GEN_CONFIG_H
#define KVTIER_GEN_CONFIG_H

#include <stddef.h>

#define GEN_CONFIG_MAX_EOS 8

typedef struct {
    int present; /* the file exists */
    int n_eos;   /* eos_token_id: one id or a list */
    int eos[GEN_CONFIG_MAX_EOS];
    int do_sample;     /* absent: 0 (transformers' default) */
    float temperature; /* absent: 1.0 */
    float top_p;       /* absent: 1.0 */
    int top_k;         /* absent: 50 (transformers' default), used only with do_sample */
} gen_config_t;

/* Reads dir/generation_config.json into *g. A missing file is not an error
 * (g->present = 0, defaults). Returns 0, or -1 with a message naming the file
 * and the field for malformed JSON, a wrong type, an out-of-range value
 * (temperature < 0, top_p outside (0, 1], top_k < 0, an id outside
 * [0, vocab_size)) or more than GEN_CONFIG_MAX_EOS eos ids. */
int gen_config_load(const char *dir, int vocab_size, gen_config_t *g, char *err, size_t errlen);

#endif
