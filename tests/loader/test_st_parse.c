/* test_st_parse.c - the pure safetensors header parser on in-memory images,
 * and a replay of the committed fuzz corpus (tests/loader/st_corpus):
 * ok-* must parse, bad-* must fail with a message, anything else (crashers
 * the fuzzer found, kept as regressions) must return either way, cleanly. */
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "safetensors.h"

/* Builds an image: 8-byte length, header (unpadded), then `data_len` bytes. */
static unsigned char *image(const char *hdr, size_t data_len, size_t *len) {
    size_t n = strlen(hdr);
    *len = 8 + n + data_len;
    unsigned char *b = calloc(1, *len);
    for (int i = 0; i < 8; i++)
        b[i] = (unsigned char)((uint64_t)n >> (8 * i));
    memcpy(b + 8, hdr, n);
    for (size_t i = 0; i < data_len; i++)
        b[8 + n + i] = (unsigned char)i;
    return b;
}

static st_file_t *parse_ok(const char *hdr, size_t data_len, unsigned char **keep) {
    size_t len;
    unsigned char *b = image(hdr, data_len, &len);
    st_file_t *f = NULL;
    char err[512] = "";
    if (st_parse(b, len, "t.safetensors", &f, err, sizeof err) != 0)
        fail_msg("rejected: %s (%s)", hdr, err);
    *keep = b;
    return f;
}

static void parse_bad(const char *hdr, size_t data_len, const char *sub) {
    size_t len;
    unsigned char *b = image(hdr, data_len, &len);
    st_file_t *f = (st_file_t *)1;
    char err[512] = "";
    if (st_parse(b, len, "t.safetensors", &f, err, sizeof err) == 0)
        fail_msg("accepted: %s", hdr);
    assert_null(f);
    if (!strstr(err, sub))
        fail_msg("error '%s' lacks '%s'", err, sub);
    free(b);
}

static void loader_st_good(void **state) {
    (void)state;
    unsigned char *b;
    st_file_t *f = parse_ok("{\"__metadata__\":{\"format\":\"pt\"},"
                            "\"w\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[8,32]},"
                            "\"s\":{\"dtype\":\"BF16\",\"shape\":[],\"data_offsets\":[6,8]},"
                            "\"e\":{\"dtype\":\"F16\",\"shape\":[0,5],\"data_offsets\":[6,6]},"
                            "\"i\":{\"dtype\":\"I16\",\"shape\":[3],\"data_offsets\":[0,6]}}   ",
                            32, &b);
    assert_int_equal(f->n_tensors, 4);
    const st_tensor_t *w = st_find(f, "w");
    assert_non_null(w);
    assert_int_equal(w->ndim, 2);
    assert_int_equal(w->shape[1], 3);
    assert_int_equal(w->dtype, DT_F32);
    assert_true(w->supported);
    assert_ptr_equal(w->data, f->buf + 8);
    assert_int_equal(((const unsigned char *)w->data)[0], 8);
    const st_tensor_t *s = st_find(f, "s");
    assert_int_equal(s->ndim, 0);
    const st_tensor_t *i = st_find(f, "i");
    assert_false(i->supported);
    assert_string_equal(i->dtype_str, "I16");
    assert_null(st_find(f, "__metadata__"));
    assert_null(st_find(f, "nope"));
    st_close(f);
    free(b);
    /* empty header, no data */
    f = parse_ok("{}", 0, &b);
    assert_int_equal(f->n_tensors, 0);
    st_close(f);
    free(b);
}

static void loader_st_bad(void **state) {
    (void)state;
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2,3,4,5],\"data_offsets\":[0,480]}}", 480,
              "5 dimensions");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 4,
              "shape entry 0");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,4]}}", 4,
              "shape entry 0");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_"
              "offsets\":[0,4]}}",
              4, "shape overflows");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,0]}}", 4,
              "end before they begin");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 4,
              "two non-negative integers");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,1e300]}}", 4,
              "two non-negative integers");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}}", 4,
              "t.safetensors: tensor a: shape [2] of F32 needs 8 bytes, header gives 4");
    parse_bad("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 4,
              "needs \"dtype\" (string)");
    parse_bad("{\"a\":[1,2]}", 0, "tensor a: header entry is not a JSON object");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
              "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
              8, "tensor a appears twice");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 2,
              "go beyond the data buffer");
    parse_bad("{}", 3, "no tensors but 3 bytes of data");
    parse_bad("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}x", 4,
              "trailing bytes");
    /* raw short buffers */
    unsigned char tiny[7] = {0};
    st_file_t *f = NULL;
    char err[256];
    assert_int_equal(st_parse(tiny, sizeof tiny, "x", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "too short"));
    unsigned char zero[8] = {0};
    assert_int_equal(st_parse(zero, sizeof zero, "x", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "does not start with a JSON object"));
}

static void loader_st_open_errors(void **state) {
    (void)state;
    st_file_t *f = NULL;
    char err[512];
    assert_int_equal(st_open("/nonexistent/model.safetensors", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "/nonexistent/model.safetensors: cannot open"));
    assert_null(f);
    assert_int_equal(st_open("/tmp", &f, err, sizeof err), -1);
    assert_non_null(strstr(err, "not a regular file"));
}

static int read_file(const char *path, unsigned char **buf, size_t *len) {
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return -1;
    fseek(fp, 0, SEEK_END);
    long n = ftell(fp);
    fseek(fp, 0, SEEK_SET);
    *buf = malloc(n > 0 ? (size_t)n : 1);
    *len = fread(*buf, 1, (size_t)(n > 0 ? n : 0), fp);
    fclose(fp);
    return 0;
}

static void loader_st_corpus_replay(void **state) {
    (void)state;
    const char *dir = KVTIER_SOURCE_DIR "/tests/loader/st_corpus";
    DIR *d = opendir(dir);
    assert_non_null(d);
    int n_ok = 0, n_bad = 0, n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        unsigned char *buf = NULL;
        size_t len = 0;
        assert_int_equal(read_file(path, &buf, &len), 0);
        st_file_t *f = NULL;
        char err[512] = "";
        int rc = st_parse(buf, len, e->d_name, &f, err, sizeof err);
        if (strncmp(e->d_name, "ok-", 3) == 0) {
            if (rc != 0)
                fail_msg("%s rejected: %s", e->d_name, err);
            n_ok++;
        } else if (strncmp(e->d_name, "bad-", 4) == 0) {
            if (rc == 0)
                fail_msg("%s accepted", e->d_name);
            n_bad++;
        }
        if (rc == 0) {
            /* touch every tensor's bytes: offsets must be inside the image */
            unsigned sum = 0;
            for (int i = 0; i < f->n_tensors; i++)
                for (uint64_t j = 0; j < f->tensors[i].end - f->tensors[i].begin; j++)
                    sum += ((const unsigned char *)f->tensors[i].data)[j];
            (void)sum;
            assert_true(f->buf + f->buf_len == buf + len);
        } else {
            assert_null(f);
            assert_true(err[0] != '\0');
        }
        st_close(f);
        free(buf);
        n++;
    }
    closedir(d);
    assert_true(n_ok >= 2);
    assert_true(n_bad >= 5);
    print_message("replayed %d corpus files (%d ok, %d bad)\n", n, n_ok, n_bad);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(loader_st_good),
        cmocka_unit_test(loader_st_bad),
        cmocka_unit_test(loader_st_open_errors),
        cmocka_unit_test(loader_st_corpus_replay),
    };
    return cmocka_run_group_tests_name("loader_st_parse", tests, NULL, NULL);
}
