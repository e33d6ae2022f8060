/* rpc_tls.c - TLS and mutual TLS credentials for the RPC layer: PEM files
 * read once, turned into gRPC SSL server or channel credentials. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <grpc/grpc_security.h>

#include "rpc.h"
#include "rpc_internal.h"

char *rpc_tls_read_pem(const char *path, const char *what, char *err, size_t errlen) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "TLS %s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    char *buf = malloc((1u << 20) + 1);
    size_t n = buf ? fread(buf, 1, 1u << 20, f) : 0;
    int big = buf && n == (1u << 20) && fgetc(f) != EOF;
    fclose(f);
    if (!buf || big || n == 0 || !strstr(buf, "-----BEGIN")) {
        if (buf)
            buf[n] = 0;
        snprintf(err, errlen, "TLS %s %s: %s", what, path,
                 !buf  ? "out of memory"
                 : big ? "larger than 1 MiB"
                       : "not a PEM file (no -----BEGIN line)");
        free(buf);
        return NULL;
    }
    buf[n] = 0;
    return buf;
}

int rpcb_server_creds(const rpc_tls *tls, grpc_server_credentials **out, char *err, size_t errlen) {
    *out = NULL;
    if (!tls || !tls->cert_file) {
        *out = grpc_insecure_server_credentials_create();
        return 0;
    }
    if (!tls->key_file) {
        snprintf(err, errlen, "TLS: a server certificate needs its key file");
        return -1;
    }
    if (tls->require_client_cert && !tls->ca_file) {
        snprintf(err, errlen, "TLS: requiring client certificates needs the CA that signs them");
        return -1;
    }
    char *cert = rpc_tls_read_pem(tls->cert_file, "certificate", err, errlen);
    char *key = cert ? rpc_tls_read_pem(tls->key_file, "key", err, errlen) : NULL;
    char *ca = key && tls->ca_file ? rpc_tls_read_pem(tls->ca_file, "CA", err, errlen) : NULL;
    if (!cert || !key || (tls->ca_file && !ca)) {
        free(cert);
        free(key);
        free(ca);
        return -1;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    *out = grpc_ssl_server_credentials_create_ex(
        ca, &pair, 1,
        tls->require_client_cert ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
        : ca                     ? GRPC_SSL_REQUEST_CLIENT_CERTIFICATE_AND_VERIFY
                                 : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        NULL);
    free(cert);
    free(key);
    free(ca);
    if (!*out) {
        snprintf(err, errlen, "TLS: gRPC refused the certificate/key pair");
        return -1;
    }
    return 0;
}

int rpcb_channel_creds(const rpc_tls *tls, grpc_channel_credentials **out, char *err,
                       size_t errlen) {
    *out = NULL;
    if (!tls || (!tls->ca_file && !tls->cert_file)) {
        *out = grpc_insecure_credentials_create();
        return 0;
    }
    if (!tls->ca_file) {
        snprintf(err, errlen, "TLS: a client needs the CA that signs the server's certificate");
        return -1;
    }
    if (!tls->cert_file != !tls->key_file) {
        snprintf(err, errlen, "TLS: a client certificate needs its key and the other way round");
        return -1;
    }
    char *ca = rpc_tls_read_pem(tls->ca_file, "CA", err, errlen);
    char *cert =
        ca && tls->cert_file ? rpc_tls_read_pem(tls->cert_file, "certificate", err, errlen) : NULL;
    char *key = cert ? rpc_tls_read_pem(tls->key_file, "key", err, errlen) : NULL;
    if (!ca || (tls->cert_file && (!cert || !key))) {
        free(ca);
        free(cert);
        free(key);
        return -1;
    }
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    *out = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    free(ca);
    free(cert);
    free(key);
    if (!*out) {
        snprintf(err, errlen, "TLS: gRPC refused the client credentials");
        return -1;
    }
    return 0;
}

int rpc_tls_from_env(rpc_tls *tls, const char *prefix) {
    char k[96];
    memset(tls, 0, sizeof *tls);
    snprintf(k, sizeof k, "%s_TLS_CA", prefix);
    tls->ca_file = getenv(k);
    snprintf(k, sizeof k, "%s_TLS_CERT", prefix);
    tls->cert_file = getenv(k);
    snprintf(k, sizeof k, "%s_TLS_KEY", prefix);
    tls->key_file = getenv(k);
    return tls->ca_file || tls->cert_file || tls->key_file;
}
