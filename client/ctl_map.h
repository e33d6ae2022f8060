/* ctl_map.h — kvtierctl: drawing a sequence's layer x block tier map.
 * Pure formatting: writes to a FILE*, no RPC. */
#ifndef KVTIER_CTL_MAP_H
#define KVTIER_CTL_MAP_H

#include <stdio.h>

#include "kvtier.h"

typedef enum ctl_color {
    CTL_COLOR_NONE = 0, /* plain characters: # hot, h host, s ssd, . dropped, ' ' absent */
    CTL_COLOR_256 = 1,  /* ANSI 256-color backgrounds */
    CTL_COLOR_TRUE = 2  /* 24-bit backgrounds */
} ctl_color;

typedef struct ctl_map_style {
    ctl_color color;
    int width;          /* terminal columns available (>= 20) */
    const char *tenant; /* shown in the title; NULL/"" = default */
} ctl_map_style;

/* ctl_map_char: plain character of a tier ('#', 'h', 's', '.', ' '). */
char ctl_map_char(int tier);

/* ctl_map_render: draws title, legend, then the map in bands of at most
 * (width - label) blocks, each band headed by a block-index ruler (a number
 * every 10 blocks) and holding one row per layer ("L<n> "), then per-tier
 * totals. Returns 0, -1 on a write error. */
int ctl_map_render(FILE *out, const kvtier_tier_map *m, const ctl_map_style *st);

/* ctl_map_band_blocks: blocks per band for a width and label width: a
 * multiple of 10 when at least 10 fit, at least 1. */
int ctl_map_band_blocks(int width, int label_width);

#endif
