/* pipe_ncclid.h - the NCCL unique id of a pipeline, exchanged over kvtier's
 * gRPC (kvtier.v1.Pipeline/GetNcclId, proto/kvtier.proto): rank 0 serves the
 * id it made, every other rank fetches it once. Pure gRPC: built and tested
 * without NCCL or a GPU (the id is 128 opaque bytes here). */
#ifndef KVTIER_PIPE_NCCLID_H
#define KVTIER_PIPE_NCCLID_H

#include <stddef.h>

#define PIPE_NCCLID_BYTES 128 /* sizeof(ncclUniqueId) */

/* Rank 0: serves id[PIPE_NCCLID_BYTES] at addr ("HOST:PORT") until each of
 * the world - 1 other ranks fetched it once, then stops serving. A request
 * with another world size or a rank outside [1, world) is refused
 * (FAILED_PRECONDITION / INVALID_ARGUMENT, with a message). Returns 0, or -1
 * with a message in err when the address cannot be bound or not every rank
 * came within timeout_ms. */
int pipe_ncclid_serve(const char *addr, const unsigned char *id, int world, int timeout_ms,
                      char *err, size_t errlen);

/* Ranks > 0: fetches the id from rank 0 at addr into id[PIPE_NCCLID_BYTES],
 * retrying while rank 0 is not up yet, for up to timeout_ms. Returns 0, or
 * -1 with a message in err (rank 0 unreachable, refused, or a malformed id). */
int pipe_ncclid_fetch(const char *addr, int rank, int world, unsigned char *id, int timeout_ms,
                      char *err, size_t errlen);

#endif
