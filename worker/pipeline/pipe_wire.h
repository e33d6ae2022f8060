/* pipe_wire.h - the messages of a layer-range pipeline (pure: no I/O).
 *
 * The ranks of a pipeline form a ring: rank r sends to rank (r+1) % N and
 * receives from rank (r-1+N) % N. Rank 0 (the driver) runs the generation
 * loop and its own layers; every message it sends travels the ring and comes
 * back to it:
 *
 *   HELLO   rank 0 -> ... -> rank 0   shapes, chunk size, KV dtype and the next
 *                                     layer expected: each rank checks its range
 *                                     starts there and advances it
 *   FWD     hidden states [n][width] f32 of positions pos0..pos0+n-1 of
 *           sequence seq; pos0 == 0 opens the sequence on every stage; each
 *           stage runs its layers and forwards; the last one sends RESULT
 *   RESULT  last rank -> rank 0: the final hidden states of the last `want`
 *           rows (n == want; 0 rows for a prompt chunk nobody reads)
 *   CLOSE   ends sequence seq on every stage (each frees its KV, closes its
 *           tier sequence); comes back to rank 0 as the acknowledgement
 *   BYE     every stage forwards it and exits 0
 *   ERROR   a stage failed: payload = text; `rank` = the stage that failed;
 *           forwarded unchanged to rank 0, which fails the generation with it
 *
 * A message is a 48-byte header (little-endian, below) and payload_bytes of
 * payload. A header with a wrong magic or version, an unknown op, or sizes
 * that do not add up is refused with a message saying what was wrong.
 *
 *   off  size  field
 *     0     4  magic        "KVPL" (0x4c50564b)
 *     4     2  version      PIPE_WIRE_VERSION
 *     6     2  op           pipe_op
 *     8     4  rank         sender (ERROR: the rank that failed)
 *    12     4  seq          sequence handle of the driver
 *    16     4  pos0         first position (signed)
 *    20     4  n            rows in the payload (FWD, RESULT)
 *    24     4  want         rows the driver needs back (FWD)
 *    28     4  flags        PIPE_F_*
 *    32     4  width        floats per row (the model's hidden size)
 *    36     4  reserved     0
 *    40     8  payload_bytes
 */
#ifndef KVTIER_PIPE_WIRE_H
#define KVTIER_PIPE_WIRE_H

#include <stddef.h>
#include <stdint.h>

#define PIPE_WIRE_MAGIC 0x4c50564bu
#define PIPE_WIRE_VERSION 1
#define PIPE_HDR_BYTES 48
#define PIPE_ERRTEXT_MAX 1024         /* ERROR payload bytes at most */
#define PIPE_HELLO_BYTES (12 * 4)     /* HELLO payload: 12 u32 */
#define PIPE_MAX_PAYLOAD (1ull << 31) /* no message is larger (2 GiB) */

typedef enum {
    PIPE_OP_HELLO = 1,
    PIPE_OP_FWD = 2,
    PIPE_OP_RESULT = 3,
    PIPE_OP_CLOSE = 4,
    PIPE_OP_BYE = 5,
    PIPE_OP_ERROR = 6,
} pipe_op;

/* FWD flags: where the chunk is in the generation (the stages' tiering runs
 * the same hooks as one process: after the prompt, after each decode step). */
#define PIPE_F_PROMPT 1u     /* a prompt chunk */
#define PIPE_F_PROMPT_END 2u /* ... its last one: the prompt is in the cache after it */
#define PIPE_F_DECODE 4u     /* one decode step */

typedef struct {
    uint16_t version;
    uint16_t op;
    uint32_t rank;
    uint32_t seq;
    int32_t pos0;
    uint32_t n, want, flags, width;
    uint64_t payload_bytes;
} pipe_hdr_t;

/* What rank 0 announces and every stage checks (HELLO payload). */
typedef struct {
    uint32_t world;    /* ranks in the ring */
    uint32_t hidden;   /* hidden size (row width) */
    uint32_t n_layers; /* layers of the whole model */
    uint32_t vocab;    /* vocabulary size */
    uint32_t n_heads, n_kv_heads, head_dim;
    uint32_t max_chunk;   /* rows per FWD at most (the driver's prefill chunk) */
    uint32_t kv_dtype;    /* dtype_t of the KV cache */
    uint32_t next_layer;  /* first layer the receiving rank must own */
    uint32_t hops;        /* ranks the HELLO went through so far */
    uint32_t fingerprint; /* pipe_model_fingerprint of the whole checkpoint */
} pipe_hello_t;

/* Static name of an op ("FWD", ...; "?" for unknown values). */
const char *pipe_op_name(uint32_t op);

/* Fills h with version, op, rank and zeros. */
void pipe_hdr_init(pipe_hdr_t *h, pipe_op op, uint32_t rank);

/* Encodes h into out[PIPE_HDR_BYTES] (little-endian, magic first). */
void pipe_hdr_encode(const pipe_hdr_t *h, unsigned char *out);

/* Decodes and checks in[PIPE_HDR_BYTES]: magic, version, known op, reserved
 * 0, payload_bytes <= max_payload, and per op: FWD/RESULT payload ==
 * n * width * 4 with n >= 1 and want <= n (FWD), HELLO payload ==
 * PIPE_HELLO_BYTES, RESULT may have 0 rows, CLOSE/BYE no payload, ERROR payload <=
 * PIPE_ERRTEXT_MAX. Returns 0, or -1 with a message in err naming the field (nothing else is read
 * from the stream: the caller drops the connection). */
int pipe_hdr_decode(const unsigned char *in, uint64_t max_payload, pipe_hdr_t *h, char *err,
                    size_t errlen);

/* Index of the first value of x[n] that is not finite (NaN, inf), or -1:
 * hidden states from another rank are checked before they are used, so a
 * peer sending garbage in well-formed messages is an error, not text. */
long pipe_first_nonfinite(const float *x, size_t n);

/* HELLO payload <-> struct (PIPE_HELLO_BYTES bytes, little-endian u32s). */
void pipe_hello_encode(const pipe_hello_t *hl, unsigned char *out);
void pipe_hello_decode(const unsigned char *in, pipe_hello_t *hl);

#endif
