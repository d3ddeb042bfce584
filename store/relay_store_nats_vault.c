/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats_vault.c — the vault on JetStream (docs/RELAY.md, "The vault"; design
 * notes in store/relay_store_nats_int.h): a backup's chunks as parts in the shop's stream, each
 * part's index, length, chunk hash and place in its subject, and committed backups as KV records.
 * The rules are store/relay_store.h's, as the SQLite store keeps them (store/relay_store.c).
 */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_store_nats_int.h"

#define ID_HEX    (TSYNC__VAULT_ID_BYTES * 2)
#define HASH_HEX  (TSYNC__VAULT_HASH_BYTES * 2)
#define VSUBJ     256
#define VPREFIX   80
#define KV_STREAM "KV_" TSYNC__NATS_BUCKET
#define MAX_PARTS 1024u

/* The parts held of one chunk (index, len, hash): complete when have == nparts. */
typedef struct {
    uint64_t index, len;
    uint8_t hash[TSYNC__VAULT_HASH_BYTES];
    uint32_t part, nparts, have;
} vset;

typedef struct {
    vset *v;
    size_t n, cap;
} vset_list;

/* tsync.<shop>.v.<backup hex> */
static void backup_prefix(char *out, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES])
{
    char h[ID_HEX + 1];
    tsync__nats_hex(h, id, TSYNC__VAULT_ID_BYTES);
    snprintf(out, VPREFIX, "tsync.%" PRId64 ".v.%s", shop, h);
}

static void part_subject(char *out, const char *prefix, const vset *c, uint32_t part)
{
    char h[HASH_HEX + 1];
    tsync__nats_hex(h, c->hash, TSYNC__VAULT_HASH_BYTES);
    snprintf(out, VSUBJ, "%s.%" PRIu64 ".%" PRIu64 ".%s.%" PRIu32 ".%" PRIu32, prefix, c->index,
             c->len, h, part, c->nparts);
}

static int num(const char *p, char stop, uint64_t *v, const char **rest)
{
    char *end;
    *v = strtoull(p, &end, 10);
    if (end == p || *end != stop) return -1;
    *rest = stop ? end + 1 : end;
    return 0;
}

/* <prefix>.<index>.<len>.<hash hex>.<part>.<nparts> into x (have 1); -1 when it is not one. */
static int parse_part(const char *subj, vset *x)
{
    const char *p = strstr(subj, ".v.");
    if (!p || strlen(p) < 3 + ID_HEX + 1 || p[3 + ID_HEX] != '.') return -1;
    p += 4 + ID_HEX;
    uint64_t part, np;
    char hh[HASH_HEX + 1];
    if (num(p, '.', &x->index, &p) || num(p, '.', &x->len, &p) || strlen(p) < HASH_HEX + 1 ||
        p[HASH_HEX] != '.')
        return -1;
    memcpy(hh, p, HASH_HEX);
    hh[HASH_HEX] = 0;
    p += HASH_HEX + 1;
    if (tsync__nats_unhex(x->hash, TSYNC__VAULT_HASH_BYTES, hh) || num(p, '.', &part, &p) ||
        num(p, 0, &np, &p) || np == 0 || np > MAX_PARTS || part >= np ||
        x->len > TSYNC__VAULT_CHUNK)
        return -1;
    x->part = (uint32_t)part;
    x->nparts = (uint32_t)np;
    x->have = 1;
    return 0;
}

static int vset_add(void *ctx, const char *subj)
{
    vset_list *l = ctx;
    vset x;
    if (parse_part(subj, &x) != 0) return 0;
    void *g = tsync__nats_grow(l->v, &l->cap, l->n, sizeof *l->v);
    if (!g) return TSYNC_ENOMEM;
    l->v = g;
    l->v[l->n++] = x;
    return 0;
}

static int vset_cmp(const void *a, const void *b)
{
    const vset *x = a, *y = b;
    if (x->index != y->index) return x->index < y->index ? -1 : 1;
    if (x->len != y->len) return x->len < y->len ? -1 : 1;
    int c = memcmp(x->hash, y->hash, TSYNC__VAULT_HASH_BYTES);
    if (c) return c;
    if (x->nparts != y->nparts) return x->nparts < y->nparts ? -1 : 1;
    return x->part < y->part ? -1 : x->part > y->part;
}

static int same_chunk(const vset *x, const vset *y)
{
    return x->index == y->index && x->len == y->len && x->nparts == y->nparts &&
           !memcmp(x->hash, y->hash, TSYNC__VAULT_HASH_BYTES);
}

/* The chunks held of the backup under prefix (index < 0: every index), one entry per (index,
 * len, hash, nparts) with the parts counted, by index. The caller frees l->v. */
static int chunks_of(tsync__nx *s, int64_t shop, const char *prefix, int64_t index, vset_list *l)
{
    char filter[VPREFIX + 32];
    if (index < 0)
        snprintf(filter, sizeof filter, "%s.>", prefix);
    else
        snprintf(filter, sizeof filter, "%s.%" PRId64 ".>", prefix, index);
    memset(l, 0, sizeof *l);
    int rc = tsync__nats_subjects(s, shop, filter, vset_add, l);
    if (rc || !l->n) return rc;
    qsort(l->v, l->n, sizeof *l->v, vset_cmp);
    size_t k = 0;
    for (size_t i = 0; i < l->n; i++) {
        if (k > 0 && same_chunk(&l->v[i], &l->v[k - 1])) {
            l->v[k - 1].have++;
            continue;
        }
        l->v[k++] = l->v[i];
    }
    l->n = k;
    return 0;
}

static int complete(const vset *c)
{
    return c->have == c->nparts;
}

typedef int (*part_fn)(void *ctx, const uint8_t *p, size_t n);

/* Reads chunk c's parts in order through fn; TSYNC_ECORRUPT when they do not add up to c->len. */
static int read_chunk(tsync__nx *s, int64_t shop, const char *prefix, const vset *c, part_fn fn,
                      void *ctx)
{
    char name[40], subj[VSUBJ];
    tsync__nats_stream_name(name, sizeof name, shop);
    uint64_t got = 0;
    int rc = 0;
    for (uint32_t p = 0; !rc && p < c->nparts; p++) {
        part_subject(subj, prefix, c, p);
        natsMsg *m = NULL;
        jsErrCode je = 0;
        natsStatus st = js_GetLastMsg(&m, s->js, name, subj, NULL, &je);
        if (st != NATS_OK) return tsync__nats_err(s, subj, st);
        size_t n = (size_t)natsMsg_GetDataLength(m);
        got += n;
        rc = got <= c->len ? fn(ctx, (const uint8_t *)natsMsg_GetData(m), n) : 0;
        natsMsg_Destroy(m);
    }
    if (!rc && got != c->len)
        rc = tsync__err(TSYNC_ECORRUPT,
                        "relay store: %s.%" PRIu64 ": %" PRIu64 " bytes, not %" PRIu64, prefix,
                        c->index, got, c->len);
    return rc;
}

/* ---------------------------------------------------------------- committed backups (KV) */

static void record_key(char *out, size_t n, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES])
{
    char h[ID_HEX + 1];
    tsync__nats_hex(h, id, TSYNC__VAULT_ID_BYTES);
    snprintf(out, n, "vb.%" PRId64 ".%s", shop, h);
}

static char *record_json(const tsync__rvbackup *v)
{
    char h[HASH_HEX + 1], o[TSYNC__NATS_OHEX + 1];
    tsync__nats_hex(h, v->hash, TSYNC__VAULT_HASH_BYTES);
    tsync__nats_hex(o, v->origin, TSYNC__SITE_BYTES);
    json_t *j =
        json_pack("{s:I, s:I, s:s, s:I, s:s, s:I, s:I}", "nchunks", (json_int_t)v->nchunks, "size",
                  (json_int_t)v->size, "hash", h, "created", (json_int_t)v->created_ms, "origin", o,
                  "epoch", (json_int_t)v->epoch, "committed", (json_int_t)tsync__wall_ms());
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

static int record_parse(tsync__nx *s, kvEntry *e, tsync__rvbackup *v)
{
    json_t *j = json_loadb(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), 0, NULL);
    json_int_t nc = 0, sz = 0, cr = 0, ep = 0;
    const char *h = NULL, *o = NULL;
    int bad = !j || json_unpack(j, "{s:I, s:I, s:s, s:I, s:s, s:I}", "nchunks", &nc, "size", &sz,
                                "hash", &h, "created", &cr, "origin", &o, "epoch", &ep) != 0;
    if (!bad)
        bad = tsync__nats_unhex(v->hash, TSYNC__VAULT_HASH_BYTES, h) != 0 ||
              tsync__nats_unhex(v->origin, TSYNC__SITE_BYTES, o) != 0 || nc < 1 || sz < 0 ||
              cr < 0 || ep < 0;
    json_decref(j);
    if (bad)
        return tsync__err(TSYNC_ECORRUPT, "relay store %s: %s is malformed", s->url,
                          kvEntry_Key(e));
    v->nchunks = (uint64_t)nc;
    v->size = (uint64_t)sz;
    v->created_ms = (uint64_t)cr;
    v->epoch = (uint64_t)ep;
    return 0;
}

/* 1 when backup id of shop is committed (its record into *out when out), 0 when not, or an
 * error. */
static int committed(tsync__nx *s, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                     tsync__rvbackup *out)
{
    char key[80];
    record_key(key, sizeof key, shop, id);
    kvEntry *e;
    int rc = tsync__nats_kv_get(s, key, &e);
    if (rc) return rc == TSYNC_ENOTFOUND ? 0 : rc;
    if (out) {
        memset(out, 0, sizeof *out);
        memcpy(out->id, id, TSYNC__VAULT_ID_BYTES);
        rc = record_parse(s, e, out);
    }
    kvEntry_Destroy(e);
    return rc ? rc : 1;
}

/* ---------------------------------------------------------------- the ops */

int tsync__nats_vault_have(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                           tsync__rstore_idx_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    char prefix[VPREFIX];
    backup_prefix(prefix, shop, id);
    vset_list l;
    int rc = chunks_of(s, shop, prefix, -1, &l);
    uint64_t last = UINT64_MAX;
    for (size_t i = 0; !rc && i < l.n; i++)
        if (complete(&l.v[i]) && l.v[i].index != last) {
            last = l.v[i].index;
            rc = fn(ctx, last);
        }
    free(l.v);
    return rc;
}

/* Shop's bytes grow by delta (shrink when negative); TSYNC_EFULL past quota. */
static int reserve(tsync__nx *s, int64_t shop, uint64_t quota, int64_t delta)
{
    if (!delta) return 0;
    char a[65];
    int rc = tsync__nats_admin_of(s, shop, a);
    tsync__nats_reserve_ctx r = {quota, delta, 0};
    return rc ? rc : tsync__nats_shop_update(s, a, tsync__nats_reserve_fn, &r);
}

int tsync__nats_vault_put(tsync__rstore *b, int64_t shop, uint64_t quota,
                          const uint8_t id[TSYNC__VAULT_ID_BYTES], uint64_t index,
                          const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes,
                          size_t len, int *dup)
{
    tsync__nx *s = (tsync__nx *)b;
    *dup = 0;
    char prefix[VPREFIX], filter[VPREFIX + 32], name[40];
    backup_prefix(prefix, shop, id);
    tsync__nats_stream_name(name, sizeof name, shop);
    vset_list l;
    int rc = chunks_of(s, shop, prefix, (int64_t)index, &l);
    int64_t old = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (complete(&l.v[i]) && l.v[i].len == len &&
            !memcmp(l.v[i].hash, hash, TSYNC__VAULT_HASH_BYTES))
            *dup = 1;
        old += (int64_t)l.v[i].len; /* every part set present was reserved when put */
    }
    size_t nsets = l.n;
    free(l.v);
    if (rc || *dup) return rc;
    int c = committed(s, shop, id, NULL);
    if (c < 0) return c;
    if (c && nsets)
        return tsync__err(TSYNC_EEXISTS, "vault: chunk %llu of a committed backup is another chunk",
                          (unsigned long long)index);
    rc = reserve(s, shop, quota, (int64_t)len - old);
    if (rc) return rc;
    /* An uncommitted chunk put again with other bytes replaces the old one (and a part set left
     * by a put that died half way goes too). */
    snprintf(filter, sizeof filter, "%s.%" PRIu64 ".>", prefix, index);
    if (nsets) rc = tsync__nats_purge(s, name, filter);
    vset cs = {.index = index, .len = len};
    memcpy(cs.hash, hash, TSYNC__VAULT_HASH_BYTES);
    cs.nparts = len ? (uint32_t)((len + s->part_max - 1) / s->part_max) : 1;
    for (uint32_t p = 0; !rc && p < cs.nparts; p++) {
        char subj[VSUBJ];
        part_subject(subj, prefix, &cs, p);
        size_t off = (size_t)p * s->part_max, n = len - off < s->part_max ? len - off : s->part_max;
        jsPubAck *ack = NULL;
        jsErrCode je = 0;
        natsStatus st = js_Publish(&ack, s->js, subj, len ? bytes + off : NULL, (int)n, NULL, &je);
        jsPubAck_Destroy(ack);
        if (st != NATS_OK) rc = tsync__nats_err(s, subj, st);
    }
    if (rc) {
        /* Nothing of it stays: the parts published go, the bytes are given back. */
        tsync__nats_purge(s, name, filter);
        reserve(s, shop, quota, -(int64_t)len);
    }
    return rc;
}

static int hash_part(void *ctx, const uint8_t *p, size_t n)
{
    tsync__rvcheck_bytes(ctx, p, n);
    return 0;
}

int tsync__nats_vault_commit(tsync__rstore *b, int64_t shop, const tsync__rvbackup *v)
{
    tsync__nx *s = (tsync__nx *)b;
    char prefix[VPREFIX];
    backup_prefix(prefix, shop, v->id);
    tsync__rvbackup had;
    int rc = committed(s, shop, v->id, &had);
    if (rc < 0) return rc;
    if (rc == 1) return tsync__rvcheck_again(&had, v);
    /* Read the chunks in order, one part at a time: memory stays at one part whatever the size. */
    vset_list l;
    rc = chunks_of(s, shop, prefix, -1, &l);
    tsync__rvcheck c;
    tsync__rvcheck_init(&c, v);
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (!complete(&l.v[i]) || l.v[i].index < c.next) continue; /* half put; or held twice */
        rc = tsync__rvcheck_chunk(&c, l.v[i].index, l.v[i].len);
        if (!rc) rc = read_chunk(s, shop, prefix, &l.v[i], hash_part, &c);
    }
    free(l.v);
    if (!rc) rc = tsync__rvcheck_end(&c);
    if (rc) return rc;
    char key[80];
    record_key(key, sizeof key, shop, v->id);
    char *t = record_json(v);
    if (!t) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    rc = tsync__nats_kv_cas(s, key, t, strlen(t), 0);
    free(t);
    if (rc != 1) return rc;
    /* Committed by another relay a moment ago: the same backup is a no-op, another is refused. */
    rc = committed(s, shop, v->id, &had);
    if (rc < 0) return rc;
    return rc == 1 ? tsync__rvcheck_again(&had, v) : tsync__nats_err(s, key, NATS_ERR);
}

typedef struct {
    tsync__nx *s;
    int64_t shop;
    tsync__rvbackup *v;
    size_t n, cap;
} list_ctx;

/* $KV.tsync_relay.vb.<shop>.<backup hex>: that backup's record, when it is there. */
static int list_add(void *ctx, const char *subj)
{
    list_ctx *l = ctx;
    const char *dot = strrchr(subj, '.');
    uint8_t id[TSYNC__VAULT_ID_BYTES];
    if (!dot || tsync__nats_unhex(id, sizeof id, dot + 1) != 0) return 0;
    void *g = tsync__nats_grow(l->v, &l->cap, l->n, sizeof *l->v);
    if (!g) return TSYNC_ENOMEM;
    l->v = g;
    int rc = committed(l->s, l->shop, id, &l->v[l->n]);
    if (rc == 1) l->n++;
    return rc < 0 ? rc : 0;
}

static int backup_cmp(const void *a, const void *b)
{
    const tsync__rvbackup *x = a, *y = b;
    if (x->created_ms != y->created_ms) return x->created_ms < y->created_ms ? -1 : 1;
    return memcmp(x->id, y->id, TSYNC__VAULT_ID_BYTES);
}

int tsync__nats_vault_list(tsync__rstore *b, int64_t shop, tsync__rstore_vb_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    char filter[80];
    snprintf(filter, sizeof filter, "$KV.%s.vb.%" PRId64 ".*", TSYNC__NATS_BUCKET, shop);
    list_ctx l = {.s = s, .shop = shop};
    int rc = tsync__nats_stream_subjects(s, KV_STREAM, filter, list_add, &l);
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, backup_cmp);
    size_t from = l.n > TSYNC__VAULT_LIST_MAX ? l.n - TSYNC__VAULT_LIST_MAX : 0;
    for (size_t i = from; !rc && i < l.n; i++) rc = fn(ctx, &l.v[i]);
    free(l.v);
    return rc;
}

typedef struct {
    uint8_t *buf;
    size_t n;
} copy_ctx;

static int copy_part(void *ctx, const uint8_t *p, size_t n)
{
    copy_ctx *c = ctx;
    memcpy(c->buf + c->n, p, n);
    c->n += n;
    return 0;
}

int tsync__nats_vault_get(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                          uint64_t index, tsync__rstore_chunk_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    char idh[ID_HEX + 1], prefix[VPREFIX];
    tsync__nats_hex(idh, id, TSYNC__VAULT_ID_BYTES);
    int rc = committed(s, shop, id, NULL);
    if (rc < 0) return rc;
    if (rc == 0) return tsync__err(TSYNC_ENOTFOUND, "no committed backup %s here", idh);
    backup_prefix(prefix, shop, id);
    vset_list l;
    rc = chunks_of(s, shop, prefix, (int64_t)index, &l);
    const vset *c = NULL;
    for (size_t i = 0; !rc && !c && i < l.n; i++)
        if (complete(&l.v[i])) c = &l.v[i];
    if (!rc && !c)
        rc = tsync__err(TSYNC_ENOTFOUND, "backup %s has no chunk %llu here", idh,
                        (unsigned long long)index);
    copy_ctx cp = {NULL, 0};
    if (!rc && !(cp.buf = malloc(c->len ? c->len : 1)))
        rc = tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    if (!rc) rc = read_chunk(s, shop, prefix, c, copy_part, &cp);
    if (!rc) rc = fn(ctx, c->hash, cp.buf, cp.n);
    free(cp.buf);
    free(l.v);
    return rc;
}

int tsync__nats_vault_del(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                          uint64_t *chunks)
{
    tsync__nx *s = (tsync__nx *)b;
    *chunks = 0;
    char prefix[VPREFIX], filter[VPREFIX + 8], name[40], key[80], subj[120];
    backup_prefix(prefix, shop, id);
    vset_list l;
    int rc = chunks_of(s, shop, prefix, -1, &l);
    int64_t bytes = 0;
    uint64_t n = 0, last = UINT64_MAX;
    for (size_t i = 0; !rc && i < l.n; i++) {
        bytes += (int64_t)l.v[i].len;
        if (l.v[i].index != last) n++;
        last = l.v[i].index;
    }
    free(l.v);
    int c = rc ? 0 : committed(s, shop, id, NULL);
    if (c < 0) rc = c;
    if (!rc && !c && !n) {
        char idh[ID_HEX + 1];
        tsync__nats_hex(idh, id, TSYNC__VAULT_ID_BYTES);
        return tsync__err(TSYNC_ENOTFOUND, "no backup %s here", idh);
    }
    /* The record first (no longer listed nor restorable), then the chunks, then the bytes. */
    record_key(key, sizeof key, shop, id);
    snprintf(subj, sizeof subj, "$KV.%s.%s", TSYNC__NATS_BUCKET, key);
    if (!rc && c) rc = tsync__nats_purge(s, KV_STREAM, subj);
    tsync__nats_stream_name(name, sizeof name, shop);
    snprintf(filter, sizeof filter, "%s.>", prefix);
    if (!rc && n) rc = tsync__nats_purge(s, name, filter);
    if (!rc) rc = reserve(s, shop, 0, -bytes);
    if (!rc) *chunks = n;
    return rc;
}
