/* tokenizer_internal.h — pieces of the tokenizer shared between its files and
 * its unit tests: UTF-8 helpers, the GPT-2 byte<->unicode table, hash maps and
 * the BPE merge core. Pure logic, no I/O. Not part of the public API. */
#ifndef KVTIER_TOKENIZER_INTERNAL_H
#define KVTIER_TOKENIZER_INTERNAL_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- UTF-8 */

/* Returns the byte offset of the first invalid UTF-8 sequence in s[0..n), or n
 * if all of it is valid (strict: no overlongs, surrogates, > U+10FFFF). */
size_t tok_utf8_check(const uint8_t *s, size_t n);

/* Length of the complete, valid sequence starting at s[0..n): 1-4; 0 if s
 * starts an invalid sequence; -k (k = 1..3) if s[0..n) is a valid but
 * unfinished prefix of k bytes (more input could complete it). n >= 1. */
int tok_utf8_seq(const uint8_t *s, size_t n);

/* Appends the lossy conversion of s[0..n) to out (capacity >= 3*n): valid
 * sequences copied, each maximal invalid subpart replaced by U+FFFD (EF BF BD).
 * If hold_tail, a valid-but-unfinished sequence at the very end is not
 * converted; *consumed tells how many input bytes were used. Returns bytes
 * written. */
size_t tok_utf8_lossy(const uint8_t *s, size_t n, int hold_tail, uint8_t *out, size_t *consumed);

/* ---------------------------------------------------------------- byte level */

/* GPT-2 bytes_to_unicode: the code point that stands for byte b in vocab strings. */
uint32_t tok_byte_to_cp(uint8_t b);

/* Inverse: the byte for code point cp, or -1 if cp is not in the table. */
int tok_cp_to_byte(uint32_t cp);

/* Converts a byte-level vocab spelling (UTF-8 of table code points) to raw
 * bytes in out (capacity >= n). Returns the raw length, or -1 if a character
 * is not in the table or s is not valid UTF-8. */
long tok_bytelevel_to_raw(const char *s, size_t n, uint8_t *out);

/* ---------------------------------------------------------------- hash maps */

/* Byte string -> int32 map (open addressing). Keys are borrowed: the caller
 * keeps them alive as long as the map. */
typedef struct {
    const uint8_t **keys; /* (cap) key pointers, NULL = empty slot */
    uint32_t *lens;       /* (cap) key lengths */
    int32_t *vals;        /* (cap) values */
    size_t cap;           /* power of two */
    size_t count;
} tok_strmap;

int tok_strmap_init(tok_strmap *m, size_t expected);
void tok_strmap_free(tok_strmap *m);
/* Inserts or overwrites. Returns 0, or -1 on OOM. */
int tok_strmap_put(tok_strmap *m, const uint8_t *key, size_t len, int32_t val);
/* Returns the value or -1 if absent. */
int32_t tok_strmap_get(const tok_strmap *m, const uint8_t *key, size_t len);

/* Merge table: (left id, right id) -> (rank, merged id). */
typedef struct {
    uint64_t *keys;  /* (cap) left<<32 | right; UINT64_MAX = empty */
    int32_t *rank;   /* (cap) position in the merges list */
    int32_t *merged; /* (cap) id of left+right */
    size_t cap;
    size_t count;
} tok_pairmap;

int tok_pairmap_init(tok_pairmap *m, size_t expected);
void tok_pairmap_free(tok_pairmap *m);
/* Inserts (a,b) unless present (the first rank wins, as in HF). Returns 0, -1 on OOM. */
int tok_pairmap_put(tok_pairmap *m, int32_t a, int32_t b, int32_t rank, int32_t merged);
/* Returns the rank of (a,b) and sets *merged, or -1 if (a,b) is no merge. */
int32_t tok_pairmap_get(const tok_pairmap *m, int32_t a, int32_t b, int32_t *merged);

/* ---------------------------------------------------------------- BPE */

/* Scratch space for one BPE run; reuse across calls, free with tok_bpe_scratch_free. */
typedef struct {
    int32_t *id, *prev, *next, *rank; /* (cap) symbol arrays */
    uint64_t *heap;                   /* (cap * 2) (rank << 32 | pos) min-heap */
    size_t cap;
} tok_bpe_scratch;

void tok_bpe_scratch_free(tok_bpe_scratch *s);

/* Byte-level BPE of one pre-token: starts from byte_ids[byte] per input byte and
 * applies merges lowest rank first (leftmost on ties) until none applies.
 * Appends the resulting ids to out (capacity >= n). Returns the count, or -1 on
 * OOM. force: 0 = choose by length, 1 = quadratic scan, 2 = heap (tests use
 * both and compare). */
long tok_bpe(const tok_pairmap *merges, const int32_t byte_ids[256], const uint8_t *s, size_t n,
             tok_bpe_scratch *scratch, int32_t *out, int force);

/* Bounded cache pre-token bytes -> ids, shared by threads (internal mutex). */
typedef struct tok_cache tok_cache;
tok_cache *tok_cache_new(size_t max_entries);
void tok_cache_free(tok_cache *c);
/* Copies up to cap ids of key into out; returns the count, or -1 on a miss. */
long tok_cache_get(tok_cache *c, const uint8_t *key, size_t len, int32_t *out, size_t cap);
/* Stores a copy (best effort: silently skipped on OOM). */
void tok_cache_put(tok_cache *c, const uint8_t *key, size_t len, const int32_t *ids, size_t n);

/* ---------------------------------------------------------------- the tokenizer */

typedef struct {
    const uint8_t *s; /* content bytes (points into tokenizer.id_bytes) */
    size_t len;
    int32_t id;
    int special;    /* "special": true */
    int normalized; /* matched after NFC instead of on the raw text */
} tok_added;

struct tokenizer {
    size_t n_ids;          /* 1 + highest id */
    uint8_t **id_bytes;    /* (n_ids) raw bytes each id decodes to; NULL = no such id */
    uint32_t *id_len;      /* (n_ids) */
    uint8_t *id_special;   /* (n_ids) 1 = special added token */
    uint8_t *arena;        /* storage for the raw vocab bytes */
    tok_strmap vocab;      /* raw bytes -> id (BPE vocab, not added tokens) */
    tok_pairmap merges;    /* (left id, right id) -> rank, merged id */
    int32_t byte_ids[256]; /* id of each single byte */
    tok_added *added;      /* (n_added) */
    size_t n_added;
    uint8_t added_first[2][256]; /* [normalized][byte]: some added token starts with it */
    int has_normalized_added;
    int nfc; /* normalizer is NFC */
    int ignore_merges;
    void *re; /* pcre2_code_8 *: pre-tokenizer regex */
    int jit;  /* JIT compiled */
    tok_cache *cache;
};

#endif
