/* tokenizer.h — Qwen2/Qwen3 byte-level BPE tokenizer (tokenizer.json), public API.
 *
 * Pipeline of tokenizer_encode, as Hugging Face `tokenizers` does it for Qwen:
 *   1. strict UTF-8 check of the input (invalid input is rejected, see below)
 *   2. added tokens (<|im_start|>, <think>, ...) matched whole on the raw text,
 *      leftmost-longest, special or not
 *   3. NFC (utf8proc) of every text segment between added tokens
 *   4. pre-tokenizer regex from tokenizer.json (PCRE2, UTF+UCP, JIT), Isolated
 *   5. byte-level BPE per pre-token, merges applied by rank (lowest first,
 *      leftmost on ties), results cached
 * No BOS/EOS is added. Decoding is the ByteLevel decoder: bytes of the tokens,
 * invalid UTF-8 replaced by U+FFFD (maximal subparts, as Rust's
 * String::from_utf8_lossy and the WHATWG TextDecoder do).
 *
 * Invalid UTF-8 policy: the reference tokenizers (Python, JS) only ever see
 * Unicode strings, so there is no byte-level behaviour to copy. We reject:
 * tokenizer_encode fails with "invalid UTF-8 at byte N" for overlong forms,
 * surrogates (ED A0..BF), code points > U+10FFFF, stray continuation bytes and
 * truncated sequences. U+0000 is valid and tokenized like any other character.
 *
 * Reference semantics are Hugging Face's (Rust): the regex's \s is Unicode
 * White_Space (rewritten to \p{White_Space} for PCRE2, whose UCP \s would also
 * take U+180E). transformers.js, used by the parity test, differs from Rust on
 * U+0085 and U+FEFF (JS \s) and on "'\u017f" (Rust case folding); we follow
 * Rust there, and the parity corpus leaves those out. Unicode tables: PCRE2
 * 10.42 = Unicode 14, so letters/digits assigned later are "other" here.
 *
 * Thread safety: a loaded tokenizer_t is immutable except for an internal,
 * mutex-protected BPE cache; encode/decode may be called from many threads.
 * A tokenizer_stream_t belongs to one thread.
 */
#ifndef KVTIER_TOKENIZER_H
#define KVTIER_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct tokenizer tokenizer_t;
typedef struct tokenizer_stream tokenizer_stream_t;

/* Loads a Hugging Face tokenizer.json (BPE model, ByteLevel pre-tokenizer and
 * decoder, optional NFC normalizer, Split regex pre-tokenizer). Merges may be
 * "a b" strings or ["a","b"] pairs.
 * Returns a new tokenizer (free with tokenizer_free) or NULL with a message in
 * err (if err != NULL) naming the file and the problem. */
tokenizer_t *tokenizer_load(const char *tokenizer_json_path, char *err, size_t errlen);

/* Frees a tokenizer; NULL is a no-op. Streams made from it must be freed first. */
void tokenizer_free(tokenizer_t *tok);

/* Encodes len bytes of UTF-8 text (need not be NUL-terminated; may contain U+0000).
 * On success returns 0, *ids_out = malloc'd array of *n_out token ids (caller
 * frees with free(); may be NULL when *n_out == 0). On error returns -1, leaves
 * *ids_out = NULL, *n_out = 0 and writes a message to err: invalid UTF-8 (with
 * byte offset), regex engine limits, out of memory. */
int tokenizer_encode(const tokenizer_t *tok, const char *text, size_t len, int32_t **ids_out,
                     size_t *n_out, char *err, size_t errlen);

/* Id of a token given its vocabulary spelling: an added token's content
 * ("<|im_end|>") or a byte-level vocab entry ("Ġworld"). Returns -1 if absent. */
int tokenizer_token_id(const tokenizer_t *tok, const char *token_str);

/* Number of token ids: 1 + the highest id of the vocab or the added tokens
 * (151669 for Qwen3; the model's embedding has more rows, 151936). */
size_t tokenizer_vocab_size(const tokenizer_t *tok);

/* 1 if id is an added token marked "special" (<|im_end|>; not <think>), else 0. */
int tokenizer_token_is_special(const tokenizer_t *tok, int32_t id);

/* Decodes n ids to a malloc'd NUL-terminated UTF-8 string (caller frees).
 * Added tokens decode to their content. Returns NULL if an id is out of range
 * (negative or >= tokenizer_vocab_size, or a hole in the id space) or on OOM. */
char *tokenizer_decode(const tokenizer_t *tok, const int32_t *ids, size_t n);

/* Streaming decoder: a new, empty stream over tok (borrowed; must outlive the
 * stream). Returns NULL on OOM. */
tokenizer_stream_t *tokenizer_stream_new(const tokenizer_t *tok);

/* Feeds one id. Returns the text that became complete (possibly empty, *len = 0),
 * never half a code point: an incomplete UTF-8 sequence at the end is held back
 * until a later token completes it; bytes that can never form a character come
 * out as U+FFFD. The returned pointer is owned by the stream and valid until
 * the next call on it. Returns NULL (stream unchanged) if id is out of range or
 * on OOM. Concatenating every output plus tokenizer_stream_flush equals
 * tokenizer_decode of the same ids. */
const char *tokenizer_stream_put(tokenizer_stream_t *st, int32_t id, size_t *len);

/* Ends the stream: returns what is still held back, as U+FFFD if it is an
 * unfinished sequence (possibly empty), and resets the stream. Same ownership
 * as tokenizer_stream_put. */
const char *tokenizer_stream_flush(tokenizer_stream_t *st, size_t *len);

/* Frees a stream; NULL is a no-op. */
void tokenizer_stream_free(tokenizer_stream_t *st);

#endif
