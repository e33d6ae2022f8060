/* serve_grpc.h - the gRPC front end of `serve`. */
#ifndef KVTIER_SERVE_GRPC_H
#define KVTIER_SERVE_GRPC_H

#include "rpc.h"

/* rpc_handler of /kvtier.v1.Inference/Generate (user = serve_ctx): one
 * serve_run, its deltas as GenerateResponse messages, the last one with
 * done, finish_reason, stop, usage and tier statistics; errors as the gRPC
 * status of the outcome (INVALID_ARGUMENT, RESOURCE_EXHAUSTED when the queue
 * is full, ALREADY_EXISTS for a sequence id in use, DEADLINE_EXCEEDED,
 * CANCELLED, UNAVAILABLE while shutting down, INTERNAL). */
void serve_grpc_generate(rpc_call *call, const ProtobufCMessage *req, void *user);

#endif
