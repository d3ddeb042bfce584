/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/vault.c — the relay's side of the vault (docs/RELAY.md, "The vault"): a served till
 * stores its shop's encrypted backup files in 1 MiB chunks, asks which chunks of a backup the
 * relay holds (so an interrupted upload resumes where it stopped), commits a backup once whole,
 * lists the shop's committed backups, reads them back chunk by chunk and deletes them.
 *
 * The relay checks what it can without the data key: every chunk against the BLAKE2b-256 the
 * till sent with it (a chunk damaged in transit is refused, not stored), and at commit that the
 * chunks it holds are complete and hash, in order, to the file hash the till names. A backup is
 * listed and served only once committed. Chunks count in the shop's quota from the moment they
 * are stored. Everything is keyed by the session's shop: one shop never sees another's backups.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_int.h"
#include "tillsync/node.h"
#include "util/util.h"

static void refusef(const tsync__vault_sess *v, uint64_t req, uint32_t code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void refusef(const tsync__vault_sess *v, uint64_t req, uint32_t code, const char *fmt, ...)
{
    char line[TSYNC__RELAY_LINE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    v->refuse(v->ctx, req, code, line);
}

/* A store error as the till sees it: its reason code, with the store's message. */
static void refuse_rc(const tsync__vault_sess *v, uint64_t req, int rc, const char *what)
{
    const char *msg = tsync_error_last()->message;
    switch (rc) {
    case TSYNC_EFULL:
        refusef(v, req, TSYNC__RERR_QUOTA, "%s", msg);
        break;
    case TSYNC_ENOTFOUND:
        refusef(v, req, TSYNC__RERR_NOT_FOUND, "%s", msg);
        break;
    case TSYNC_ECORRUPT:
    case TSYNC_EEXISTS:
        refusef(v, req, TSYNC__RERR_BAD_HASH, "%s", msg);
        break;
    default: {
        char line[512];
        snprintf(line, sizeof line, "relay: %s: vault %s: %s", v->label, what, msg);
        v->log(v->ctx, TSYNC_LOG_ERROR, line);
        refusef(v, req, TSYNC__RERR_INTERNAL, "the relay's store failed");
    }
    }
}

/* ---------------------------------------------------------------- RVHAVE */

typedef struct {
    uint64_t *v;
    uint32_t n, cap;
} idx_list;

static int have_one(void *ctx, uint64_t index)
{
    idx_list *l = ctx;
    if (l->n == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 64;
        uint64_t *p = realloc(l->v, nc * sizeof *p);
        if (!p) return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
        l->v = p;
        l->cap = nc;
    }
    l->v[l->n++] = index;
    return l->n > TSYNC__VAULT_MAX_CHUNKS ? tsync__err(TSYNC_EIO, "too many chunks") : 0;
}

static void on_have(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    idx_list l = {0};
    int rc = v->st->ops->vault_have(v->st, v->shop, m->backup_id, have_one, &l);
    if (rc) {
        refuse_rc(v, m->req, rc, "have");
    } else {
        tsync__rmsg a = {.type = TSYNC__R_VHELD, .req = m->req, .nheld = l.n, .held = l.v};
        v->send(v->ctx, &a);
    }
    free(l.v);
}

/* ---------------------------------------------------------------- RVPUT, RVCOMMIT, RVDEL */

static void on_put(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    uint8_t h[TSYNC__VAULT_HASH_BYTES];
    crypto_generichash(h, sizeof h, m->chunk, m->chunk_len, NULL, 0);
    if (sodium_memcmp(h, m->hash, sizeof h) != 0) {
        refusef(v, m->req, TSYNC__RERR_BAD_HASH,
                "chunk %" PRIu64 " does not match the hash sent with it (damaged on the way)",
                m->index);
        return;
    }
    tsync__rshop shop;
    int dup = 0;
    int rc = v->st->ops->shop(v->st, v->admin_pk, &shop);
    if (!rc)
        rc = v->st->ops->vault_put(v->st, v->shop, shop.quota_bytes, m->backup_id, m->index,
                                   m->hash, m->chunk, m->chunk_len, &dup);
    if (rc) {
        refuse_rc(v, m->req, rc, "put");
        return;
    }
    tsync__rmsg a = {.type = TSYNC__R_ACK, .req = m->req, .stored = !dup, .dup = dup != 0};
    v->send(v->ctx, &a);
}

static void on_commit(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    int rc = v->st->ops->vault_commit(v->st, v->shop, &m->vb);
    if (rc) {
        refuse_rc(v, m->req, rc, "commit");
        return;
    }
    tsync__rmsg a = {.type = TSYNC__R_ACK, .req = m->req, .stored = m->vb.nchunks};
    v->send(v->ctx, &a);
}

static void on_del(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    uint64_t n = 0;
    int rc = v->st->ops->vault_del(v->st, v->shop, m->backup_id, &n);
    if (rc) {
        refuse_rc(v, m->req, rc, "delete");
        return;
    }
    tsync__rmsg a = {.type = TSYNC__R_ACK, .req = m->req, .stored = n};
    v->send(v->ctx, &a);
}

/* ---------------------------------------------------------------- RVLIST, RVGET */

typedef struct {
    tsync__rvbackup *v;
    uint32_t n, cap;
} vb_list;

static int list_one(void *ctx, const tsync__rvbackup *b)
{
    vb_list *l = ctx;
    if (l->n == TSYNC__VAULT_LIST_MAX) return 0;
    if (l->n == l->cap) {
        uint32_t nc = l->cap ? l->cap * 2 : 16;
        tsync__rvbackup *p = realloc(l->v, nc * sizeof *p);
        if (!p) return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
        l->v = p;
        l->cap = nc;
    }
    l->v[l->n++] = *b;
    return 0;
}

static void on_list(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    vb_list l = {0};
    int rc = v->st->ops->vault_list(v->st, v->shop, list_one, &l);
    if (rc) {
        refuse_rc(v, m->req, rc, "list");
    } else {
        tsync__rmsg a = {.type = TSYNC__R_VLISTED, .req = m->req, .nbackups = l.n, .backups = l.v};
        v->send(v->ctx, &a);
    }
    free(l.v);
}

typedef struct {
    const tsync__vault_sess *v;
    const tsync__rmsg *m;
} get_ctx;

/* Sends the chunk as stored, with the hash it was put with: the till checks one against the
 * other, so a chunk damaged in the relay's store is found there. */
static int get_one(void *ctx, const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes,
                   size_t len)
{
    get_ctx *c = ctx;
    if (len == 0 || len > TSYNC__VAULT_CHUNK)
        return tsync__err(TSYNC_ECORRUPT, "chunk %" PRIu64 " is %zu bytes in the store",
                          c->m->index, len);
    tsync__rmsg a = {.type = TSYNC__R_VCHUNK,
                     .req = c->m->req,
                     .index = c->m->index,
                     .chunk = bytes,
                     .chunk_len = len};
    memcpy(a.backup_id, c->m->backup_id, TSYNC__VAULT_ID_BYTES);
    memcpy(a.hash, hash, TSYNC__VAULT_HASH_BYTES);
    c->v->send(c->v->ctx, &a);
    return 0;
}

static void on_get(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    get_ctx c = {v, m};
    int rc = v->st->ops->vault_get(v->st, v->shop, m->backup_id, m->index, get_one, &c);
    if (rc) refuse_rc(v, m->req, rc, "get");
}

/* ---------------------------------------------------------------- dispatch */

void tsync__relay_vault(const tsync__vault_sess *v, const tsync__rmsg *m)
{
    if (!v->st->ops->vault_have) {
        refusef(v, m->req, TSYNC__RERR_PROTOCOL, "this relay's store keeps no backups");
        return;
    }
    switch (m->type) {
    case TSYNC__R_VHAVE:
        on_have(v, m);
        break;
    case TSYNC__R_VPUT:
        on_put(v, m);
        break;
    case TSYNC__R_VCOMMIT:
        on_commit(v, m);
        break;
    case TSYNC__R_VLIST:
        on_list(v, m);
        break;
    case TSYNC__R_VGET:
        on_get(v, m);
        break;
    case TSYNC__R_VDEL:
        on_del(v, m);
        break;
    default:
        refusef(v, m->req, TSYNC__RERR_PROTOCOL, "a till does not send this message type");
    }
}
