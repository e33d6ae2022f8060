/* svc_auth.c - the token table's file, its reload and the authorizer (see
 * svc_auth.h). I/O and locking only; the format is svc_tokens.c's, the
 * decisions svc_authz.c's. */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "svc_auth.h"
#include "svc_authz.h"
#include "svc_tokens.h"

struct svc_auth {
    pthread_rwlock_t lock;
    svc_tokens *t; /* owned; swapped under the write lock */
    char *path;    /* the tokens file, NULL for a legacy token */
};

/* Reads the whole file into a new NUL-terminated buffer (caller frees).
 * Returns NULL with err; fills warn when others may read or write it. */
static char *read_tokens_file(const char *path, char *warn, size_t warnlen, char *err,
                              size_t errlen) {
    if (warn && warnlen)
        warn[0] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "%s: not a regular file", path);
        close(fd);
        return NULL;
    }
    if (st.st_size > (off_t)SVC_TOKENS_FILE_MAX) {
        snprintf(err, errlen, "%s: %lld bytes, a tokens file may have at most %u", path,
                 (long long)st.st_size, SVC_TOKENS_FILE_MAX);
        close(fd);
        return NULL;
    }
    if ((st.st_mode & (S_IROTH | S_IWOTH)) && warn)
        snprintf(warn, warnlen,
                 "%s is %s by every user (mode %03o): anyone on this machine can use its "
                 "tokens; chmod 600 it",
                 path, (st.st_mode & S_IROTH) ? "readable" : "writable",
                 (unsigned)(st.st_mode & 0777));
    char *buf = malloc((size_t)st.st_size + 1);
    size_t n = 0;
    while (buf && n < (size_t)st.st_size) {
        ssize_t r = read(fd, buf + n, (size_t)st.st_size - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        n += (size_t)r;
    }
    close(fd);
    if (!buf) {
        snprintf(err, errlen, "%s: out of memory", path);
        return NULL;
    }
    buf[n] = 0;
    if (strlen(buf) != n) {
        snprintf(err, errlen, "%s: holds a NUL byte (not a text file)", path);
        free(buf);
        return NULL;
    }
    return buf;
}

/* Loads path into a new table, or NULL with err ("FILE: line N: ..."). */
static svc_tokens *load(const char *path, char *warn, size_t warnlen, char *err, size_t errlen) {
    char *text = read_tokens_file(path, warn, warnlen, err, errlen);
    if (!text)
        return NULL;
    char why[400];
    svc_tokens *t = svc_tokens_parse(text, why, sizeof why);
    size_t n = strlen(text);
    volatile char *p = text; /* the file's secrets do not linger in freed memory */
    for (size_t i = 0; i < n; i++)
        p[i] = 0;
    free(text);
    if (!t)
        snprintf(err, errlen, "%s: %s", path, why);
    return t;
}

static svc_auth *auth_new(svc_tokens *t, const char *path) {
    svc_auth *a = calloc(1, sizeof *a);
    if (!a || !t || (path && !(a->path = strdup(path)))) {
        svc_tokens_free(t);
        free(a);
        return NULL;
    }
    pthread_rwlock_init(&a->lock, NULL);
    a->t = t;
    return a;
}

svc_auth *svc_auth_open_file(const char *path, char *warn, size_t warnlen, char *err,
                             size_t errlen) {
    svc_tokens *t = load(path, warn, warnlen, err, errlen);
    if (!t)
        return NULL;
    svc_auth *a = auth_new(t, path);
    if (!a)
        snprintf(err, errlen, "%s: out of memory", path);
    return a;
}

svc_auth *svc_auth_open_token(const char *token) {
    return auth_new(svc_tokens_single(token), NULL);
}

static void describe(const svc_tokens *t, char *out, size_t len) {
    size_t op = 0;
    for (size_t i = 0; i < t->n; i++)
        op += t->e[i].role == SVC_ROLE_OPERATOR;
    snprintf(out, len, "%zu token%s (%zu tenant, %zu operator)", t->n, t->n == 1 ? "" : "s",
             t->n - op, op);
}

void svc_auth_describe(svc_auth *a, char *out, size_t len) {
    pthread_rwlock_rdlock(&a->lock);
    describe(a->t, out, len);
    pthread_rwlock_unlock(&a->lock);
}

int svc_auth_reload(svc_auth *a, char *warn, size_t warnlen, char *msg, size_t msglen) {
    if (warn && warnlen)
        warn[0] = 0;
    if (!a->path) {
        snprintf(msg, msglen, "no tokens file to reload (--auth-token is fixed)");
        return -1;
    }
    svc_tokens *t = load(a->path, warn, warnlen, msg, msglen);
    if (!t)
        return -1;
    pthread_rwlock_wrlock(&a->lock);
    svc_tokens *old = a->t;
    a->t = t;
    pthread_rwlock_unlock(&a->lock);
    svc_tokens_free(old);
    describe(t, msg, msglen);
    return 0;
}

grpc_status_code svc_auth_authorize(const char *method, const char *token, size_t len,
                                    rpc_identity *id, char *msg, size_t msglen, void *user) {
    svc_auth *a = user;
    pthread_rwlock_rdlock(&a->lock);
    grpc_status_code c = svc_authz_call(a->t, method, token, len, id, msg, msglen);
    pthread_rwlock_unlock(&a->lock);
    return c;
}

void svc_auth_free(svc_auth *a) {
    if (!a)
        return;
    svc_tokens_free(a->t);
    pthread_rwlock_destroy(&a->lock);
    free(a->path);
    free(a);
}
