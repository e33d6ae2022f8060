/* cli.h - helpers shared by the kvtier-worker subcommands (`run`, `trace`):
 * strict flag parsing, prompt checks and prompt tokenization. Every function
 * that rejects input prints one line "PROG: message" on stderr. */
#ifndef KVTIER_CLI_H
#define KVTIER_CLI_H

#include <stddef.h>

#ifdef KVTIER_HAVE_TOKENIZER
#include "tokenizer.h"
#endif

/* Parses a decimal integer in [lo, hi] into *out. 0, or -1 (message printed). */
int cli_parse_int(const char *prog, const char *flag, const char *s, long lo, long hi, int *out);

/* Parses a finite number in [lo, hi] into *out. 0, or -1 (message printed). */
int cli_parse_float(const char *prog, const char *flag, const char *s, double lo, double hi,
                    float *out);

/* Strict UTF-8 check (no overlongs, surrogates, > U+10FFFF). Returns the
 * offset of the first bad byte, or -1 when valid. */
long cli_utf8_invalid_at(const unsigned char *s, size_t n);

/* Parses "1,2,3" (ids in [0, vocab)) into a malloc'd array. 0, or -1
 * (message printed, nothing allocated). */
int cli_parse_ids(const char *prog, const char *s, int vocab, int **ids, int *n);

/* "dir/name", malloc'd (NULL on allocation failure). */
char *cli_path(const char *dir, const char *name);

/* 1 when p names a regular file. */
int cli_file_exists(const char *p);

/* Reads a whole file into a NUL-terminated malloc'd buffer (*len bytes).
 * NULL on failure (message printed). */
char *cli_read_file(const char *prog, const char *path, size_t *len);

#ifdef KVTIER_HAVE_TOKENIZER
/* Tokenizes text, wrapped as one user turn of the model's chat template when
 * chat (model_dir/tokenizer_config.json picks the template; thinking sets
 * enable_thinking). *ids is malloc'd. Returns 0, 1 (runtime failure) or 2
 * (the text cannot be tokenized), with a message printed. */
int cli_encode_prompt(const char *prog, const char *model_dir, tokenizer_t *tok, const char *text,
                      int chat, int thinking, int **ids, int *n);
#endif

#endif
