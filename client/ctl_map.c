/* ctl_map.c — kvtierctl: the tier map as a terminal heatmap (ANSI colors) or
 * as plain characters.
 *
 * Layout (plain, width 40):
 *   sequence 7: 2 layers x 24 blocks
 *   legend: # HOT  h HOST  s SSD  . DROPPED  (blank) absent
 *
 *   block 0         10        20
 *         |         |         |
 *   L0    ####hhhhssss....####
 *   L1    ##hhhhssss
 *
 *   totals: HOT 12  HOST 8  SSD 8  DROPPED 4  absent 4
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "ctl_map.h"

/* Background colors per tier: {256-color index, r, g, b}. */
static const struct {
    int c256;
    int r, g, b;
} k_colors[KVTIER_NTIERS] = {
    [KVTIER_TIER_ABSENT] = {236, 48, 48, 48},    /* near-black: nothing */
    [KVTIER_TIER_HOT] = {196, 230, 57, 70},      /* red: on the worker */
    [KVTIER_TIER_HOST] = {214, 244, 162, 97},    /* orange: service RAM */
    [KVTIER_TIER_SSD] = {33, 69, 123, 200},      /* blue: RocksDB */
    [KVTIER_TIER_DROPPED] = {244, 140, 140, 140} /* gray: gone */
};

char ctl_map_char(int tier) {
    switch (tier) {
    case KVTIER_TIER_HOT:
        return '#';
    case KVTIER_TIER_HOST:
        return 'h';
    case KVTIER_TIER_SSD:
        return 's';
    case KVTIER_TIER_DROPPED:
        return '.';
    default:
        return ' ';
    }
}

/* Background of the tier, and a foreground that reads on it: the cell keeps
 * its glyph (ctl_map_char), so HOT and HOST differ without color too and a
 * capture with the escapes stripped is the --plain map. */
static void bg(FILE *out, ctl_color c, int tier) {
    if (tier < 0 || tier >= KVTIER_NTIERS)
        tier = KVTIER_TIER_ABSENT;
    const int dark_text = tier == KVTIER_TIER_HOST || tier == KVTIER_TIER_DROPPED;
    if (c == CTL_COLOR_TRUE)
        fprintf(out, "\x1b[48;2;%d;%d;%dm", k_colors[tier].r, k_colors[tier].g, k_colors[tier].b);
    else
        fprintf(out, "\x1b[48;5;%dm", k_colors[tier].c256);
    fputs(dark_text ? "\x1b[30m" : "\x1b[97m", out);
}

static void reset(FILE *out) {
    fputs("\x1b[0m", out);
}

int ctl_map_band_blocks(int width, int label_width) {
    int avail = width - label_width;
    if (avail >= 10)
        return avail / 10 * 10;
    return avail > 0 ? avail : 1;
}

static void legend(FILE *out, ctl_color c) {
    static const int order[] = {KVTIER_TIER_HOT, KVTIER_TIER_HOST, KVTIER_TIER_SSD,
                                KVTIER_TIER_DROPPED, KVTIER_TIER_ABSENT};
    fputs("legend:", out);
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++) {
        int t = order[i];
        const char *name = t == KVTIER_TIER_ABSENT ? "absent" : kvtier_tier_name(t);
        if (c == CTL_COLOR_NONE) {
            if (t == KVTIER_TIER_ABSENT)
                fprintf(out, "  (blank) %s", name);
            else
                fprintf(out, "  %c %s", ctl_map_char(t), name);
        } else {
            fputs("  ", out);
            bg(out, c, t);
            fputs("  ", out);
            reset(out);
            fprintf(out, " %s", name);
        }
    }
    fputc('\n', out);
}

/* Ruler for blocks [b0, b1): the block number above every tenth block
 * (and the first of the band), then a line of '|' ticks under them. Numbers
 * are 10 columns apart, so up to 9 digits never collide. */
static void ruler(FILE *out, int label_w, uint32_t b0, uint32_t b1) {
    char num[1040], tick[1040];
    size_t w = b1 - b0;
    if (w > 1000)
        w = 1000;
    memset(num, ' ', sizeof num);
    memset(tick, ' ', sizeof tick);
    size_t nl = 0;
    for (size_t i = 0; i < w; i++) {
        uint32_t b = b0 + (uint32_t)i;
        if (i != 0 && b % 10 != 0)
            continue;
        tick[i] = '|';
        char d[16];
        int n = snprintf(d, sizeof d, "%" PRIu32, b);
        memcpy(num + i, d, (size_t)n);
        nl = i + (size_t)n;
    }
    num[nl] = 0;
    size_t tl = w;
    while (tl > 0 && tick[tl - 1] == ' ')
        tl--;
    tick[tl] = 0;
    fprintf(out, "%-*s%s\n", label_w, "block", num);
    fprintf(out, "%-*s%s\n", label_w, "", tick);
}

int ctl_map_render(FILE *out, const kvtier_tier_map *m, const ctl_map_style *st) {
    ctl_color c = st->color;
    uint64_t totals[KVTIER_NTIERS] = {0};
    uint32_t max_layer = 0;
    for (uint32_t i = 0; i < m->n_layers; i++)
        if (m->layer_ids[i] > max_layer)
            max_layer = m->layer_ids[i];
    char tmp[16];
    int label_w = snprintf(tmp, sizeof tmp, "L%" PRIu32, max_layer) + 1;
    if (label_w < 6)
        label_w = 6; /* room for "block " */
    int width = st->width < 20 ? 20 : st->width;
    uint32_t band = (uint32_t)ctl_map_band_blocks(width, label_w);
    if (band > 1000)
        band = 1000;

    fprintf(out, "sequence %" PRIu64, m->sequence_id);
    if (st->tenant && *st->tenant)
        fprintf(out, " (tenant %s)", st->tenant);
    fprintf(out, ": %" PRIu32 " layer%s x %" PRIu32 " block%s\n", m->n_layers,
            m->n_layers == 1 ? "" : "s", m->n_blocks, m->n_blocks == 1 ? "" : "s");
    legend(out, c);
    if (m->n_layers == 0 || m->n_blocks == 0) {
        fputs("\n(no blocks)\n", out);
        return ferror(out) ? -1 : 0;
    }
    for (uint32_t b0 = 0; b0 < m->n_blocks; b0 += band) {
        uint32_t b1 = b0 + band < m->n_blocks ? b0 + band : m->n_blocks;
        fputc('\n', out);
        ruler(out, label_w, b0, b1);
        for (uint32_t i = 0; i < m->n_layers; i++) {
            snprintf(tmp, sizeof tmp, "L%" PRIu32, m->layer_ids[i]);
            fprintf(out, "%-*s", label_w, tmp);
            const uint8_t *row = m->tiers + (size_t)i * m->n_blocks;
            /* Trailing absent cells of a short layer are left empty. */
            uint32_t end = b1;
            while (end > b0 && row[end - 1] == KVTIER_TIER_ABSENT)
                end--;
            int cur = -1;
            for (uint32_t b = b0; b < end; b++) {
                int t = row[b] < KVTIER_NTIERS ? row[b] : KVTIER_TIER_ABSENT;
                if (c == CTL_COLOR_NONE) {
                    fputc(ctl_map_char(t), out);
                } else {
                    if (t != cur)
                        bg(out, c, t);
                    cur = t;
                    fputc(ctl_map_char(t), out);
                }
            }
            if (c != CTL_COLOR_NONE && cur >= 0)
                reset(out);
            fputc('\n', out);
        }
    }
    size_t cells = (size_t)m->n_layers * m->n_blocks;
    for (size_t i = 0; i < cells; i++)
        totals[m->tiers[i] < KVTIER_NTIERS ? m->tiers[i] : KVTIER_TIER_ABSENT]++;
    fprintf(out,
            "\ntotals: HOT %" PRIu64 "  HOST %" PRIu64 "  SSD %" PRIu64 "  DROPPED %" PRIu64
            "  absent %" PRIu64 "\n",
            totals[KVTIER_TIER_HOT], totals[KVTIER_TIER_HOST], totals[KVTIER_TIER_SSD],
            totals[KVTIER_TIER_DROPPED], totals[KVTIER_TIER_ABSENT]);
    return ferror(out) ? -1 : 0;
}
