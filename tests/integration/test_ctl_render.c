/* test_ctl_render.c — kvtierctl's map drawing and JSON, on a synthetic map
 * (pure formatting, no server): golden plain output, ANSI color cells,
 * banding/rulers, JSON counts. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "ctl_map.h"
#include "ctl_print.h"

/* 3 layers (ids 0, 1, 12) x 25 blocks; layer 1 has only 12 blocks. */
static void make_map(kvtier_tier_map *m) {
    memset(m, 0, sizeof *m);
    m->sequence_id = 77;
    m->n_layers = 3;
    m->n_blocks = 25;
    m->layer_ids = calloc(3, sizeof *m->layer_ids);
    m->tiers = calloc(75, 1);
    m->layer_ids[0] = 0;
    m->layer_ids[1] = 1;
    m->layer_ids[2] = 12;
    for (int b = 0; b < 25; b++) {
        m->tiers[b] = (uint8_t)(b < 5    ? KVTIER_TIER_HOT
                                : b < 10 ? KVTIER_TIER_HOST
                                : b < 20 ? KVTIER_TIER_SSD
                                         : KVTIER_TIER_DROPPED);
        m->tiers[25 + b] = (uint8_t)(b < 12 ? KVTIER_TIER_SSD : KVTIER_TIER_ABSENT);
        m->tiers[50 + b] = (uint8_t)(b % 2 ? KVTIER_TIER_HOT : KVTIER_TIER_HOST);
    }
}

/* The rendered text, malloc'd. The stream writes through a heap cell: with a
 * local `buf` whose address the stream keeps, gcc -O3 inlines this and then
 * calls the returned text a dangling pointer (-Wdangling-pointer). */
static char *render(const kvtier_tier_map *m, ctl_color c, int width) {
    char **cell = calloc(1, sizeof *cell);
    size_t len = 0;
    assert_non_null(cell);
    FILE *f = open_memstream(cell, &len);
    ctl_map_style st = {c, width, NULL};
    assert_int_equal(ctl_map_render(f, m, &st), 0);
    fclose(f);
    char *buf = *cell;
    free(cell);
    return buf;
}

static void test_plain_golden(void **state) {
    (void)state;
    kvtier_tier_map m;
    make_map(&m);
    char *out = render(&m, CTL_COLOR_NONE, 26); /* label 6 + 20 blocks per band */
    const char *want = "sequence 77: 3 layers x 25 blocks\n"
                       "legend:  # HOT  h HOST  s SSD  . DROPPED  (blank) absent\n"
                       "\n"
                       "block 0         10\n"
                       "      |         |\n"
                       "L0    #####hhhhhssssssssss\n"
                       "L1    ssssssssssss\n"
                       "L12   h#h#h#h#h#h#h#h#h#h#\n"
                       "\n"
                       "block 20\n"
                       "      |\n"
                       "L0    .....\n"
                       "L1    \n"
                       "L12   h#h#h\n"
                       "\n"
                       "totals: HOT 17  HOST 18  SSD 22  DROPPED 5  absent 13\n";
    if (strcmp(out, want))
        fprintf(stderr, "got:\n%s\nwant:\n%s\n", out, want);
    assert_string_equal(out, want);
    free(out);
    kvtier_tier_map_free(&m);
}

static size_t count(const char *hay, const char *needle) {
    size_t n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
        n++;
    return n;
}

static void test_color_cells(void **state) {
    (void)state;
    kvtier_tier_map m;
    make_map(&m);
    char *out = render(&m, CTL_COLOR_256, 200); /* one band */
    /* Layer 12 alternates: every cell changes color -> 25 background codes. */
    const char *l12 = strstr(out, "\nL12");
    assert_non_null(l12);
    char line[4096];
    const char *eol = strchr(l12 + 1, '\n');
    size_t n = (size_t)(eol - l12 - 1);
    memcpy(line, l12 + 1, n);
    line[n] = 0;
    assert_int_equal(count(line, "\x1b[48;5;196m"), 12); /* HOT */
    assert_int_equal(count(line, "\x1b[48;5;214m"), 13); /* HOST */
    assert_int_equal(count(line, "\x1b[0m"), 1);         /* reset at the end of row */
    /* the cells keep their glyphs: without the escapes the row reads as --plain */
    char plain[4096];
    size_t k = 0;
    for (const char *p = line; *p; p++) {
        if (*p == '\x1b') {
            while (*p && *p != 'm')
                p++;
            if (!*p)
                break;
            continue;
        }
        plain[k++] = *p;
    }
    plain[k] = 0;
    assert_string_equal(plain, "L12   h#h#h#h#h#h#h#h#h#h#h#h#h");
    assert_non_null(strstr(out, "legend:"));
    assert_null(strstr(out, "block 20")); /* wide: no second band */
    free(out);
    out = render(&m, CTL_COLOR_TRUE, 200);
    assert_non_null(strstr(out, "\x1b[48;2;69;123;200m")); /* SSD in truecolor */
    assert_null(strstr(out, "\x1b[48;5;"));
    free(out);
    kvtier_tier_map_free(&m);
}

static void test_band_blocks(void **state) {
    (void)state;
    assert_int_equal(ctl_map_band_blocks(80, 6), 70);
    assert_int_equal(ctl_map_band_blocks(26, 6), 20);
    assert_int_equal(ctl_map_band_blocks(12, 6), 6);
    assert_int_equal(ctl_map_band_blocks(6, 6), 1);
}

static void test_json_counts(void **state) {
    (void)state;
    kvtier_tier_map m;
    make_map(&m);
    m.sequence_id = UINT64_MAX; /* ids are 64-bit: printed exactly, not as a double */
    cJSON *raw = ctl_json_map(&m);
    assert_non_null(raw);
    char *text = cJSON_Print(raw);
    cJSON_Delete(raw);
    assert_non_null(strstr(text, "\"sequence_id\":\t18446744073709551615"));
    cJSON *j = cJSON_Parse(text); /* what a script sees */
    cJSON_free(text);
    assert_non_null(j);
    cJSON *c = cJSON_GetObjectItem(j, "counts");
    assert_int_equal(cJSON_GetObjectItem(c, "HOT")->valuedouble, 17);
    assert_int_equal(cJSON_GetObjectItem(c, "HOST")->valuedouble, 18);
    assert_int_equal(cJSON_GetObjectItem(c, "SSD")->valuedouble, 22);
    assert_int_equal(cJSON_GetObjectItem(c, "DROPPED")->valuedouble, 5);
    assert_int_equal(cJSON_GetObjectItem(c, "ABSENT")->valuedouble, 13);
    cJSON *rows = cJSON_GetObjectItem(j, "rows");
    assert_int_equal(cJSON_GetArraySize(rows), 3);
    cJSON *r2 = cJSON_GetArrayItem(rows, 2);
    assert_int_equal(cJSON_GetObjectItem(r2, "layer")->valuedouble, 12);
    assert_string_equal(cJSON_GetObjectItem(r2, "cells")->valuestring, "h#h#h#h#h#h#h#h#h#h#h#h#h");
    cJSON_Delete(j);
    kvtier_tier_map_free(&m);
}

static void test_bytes(void **state) {
    (void)state;
    char b[32];
    assert_string_equal(ctl_bytes(0, b, sizeof b), "0 B");
    assert_string_equal(ctl_bytes(1023, b, sizeof b), "1023 B");
    assert_string_equal(ctl_bytes(65536, b, sizeof b), "64.0 KiB");
    assert_string_equal(ctl_bytes(1536ull << 20, b, sizeof b), "1.50 GiB");
    assert_string_equal(ctl_bytes((1ull << 20) - 1, b, sizeof b), "1.00 MiB");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_golden), cmocka_unit_test(test_color_cells),
        cmocka_unit_test(test_band_blocks),  cmocka_unit_test(test_json_counts),
        cmocka_unit_test(test_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
