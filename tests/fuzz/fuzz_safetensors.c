/* fuzz_safetensors.c - libFuzzer target for the safetensors header parser
 * (worker/model/safetensors.c: st_parse) and tensor element access.
 *
 * Any input must give 0 or -1 with a message, never a crash, leak or read
 * outside the input; on success every tensor's bytes lie inside the input and
 * its size equals shape x dtype size. Seed corpus: tests/loader/st_corpus.
 *   cmake -DKVTIER_FUZZ=ON -DCMAKE_C_COMPILER=clang ... && fuzz_safetensors \
 *       -max_total_time=120 tests/loader/st_corpus
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    st_file_t *f = NULL;
    char err[512];
    err[0] = '\0';
    int rc = st_parse(data, size, "fuzz.safetensors", &f, err, sizeof err);
    if (rc != 0) {
        if (f || err[0] == '\0')
            abort(); /* contract: NULL and a message */
        return 0;
    }
    uint64_t total = 0;
    for (int i = 0; i < f->n_tensors; i++) {
        const st_tensor_t *t = &f->tensors[i];
        const uint8_t *p = t->data;
        if (p < data || p + (t->end - t->begin) > data + size)
            abort();
        if (st_find(f, t->name) != t)
            abort();
        total += t->end - t->begin;
        if (t->supported) {
            tensor_t v = {.data = t->data, .dtype = t->dtype, .ndim = t->ndim, .name = t->name};
            memcpy(v.shape, t->shape, sizeof v.shape);
            int64_t n = tensor_numel(&v);
            if ((uint64_t)n * dtype_size(t->dtype) != t->end - t->begin)
                abort();
            volatile float s = 0;
            if (n > 0)
                s += tensor_get_f32(&v, 0) + tensor_get_f32(&v, n - 1);
            (void)s;
        }
    }
    if (total != f->buf_len)
        abort(); /* buffer exactly covered */
    st_close(f);
    return 0;
}
