/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats.c — the relay's store on NATS JetStream (store/relay_store.h), so any
 * number of relay processes serve the same shops: a relay process keeps nothing JetStream does
 * not have, and restarting or losing one loses nothing (docs/RELAY.md, "Storage on NATS
 * JetStream").
 *
 * Design notes
 * - Envelopes: one stream per shop, TSYNC_<id>, subjects tsync.<id>.e.<origin hex>.<first>.<last>
 *   (one message per envelope, its bytes as the payload, as given). The index fields are in the
 *   subject, so the stream's subject list (stream info with a subjects filter) is the index:
 *   ranges read it, get lists one origin's subjects and fetches each by subject, and the
 *   duplicate check asks whether tsync.<id>.e.<origin>.<first>.* holds a message. Two relays
 *   storing the same envelope at the same moment both pass that check: the publish carries
 *   Nats-Msg-Id <origin>.<first>, and JetStream's duplicate window keeps one.
 * - Everything else lives in one KV bucket, tsync_relay: shop.<admin hex> (a JSON record: id,
 *   shop id, quota, expiry, bytes, envelopes, revocations), id.<n> (the admin key of shop n),
 *   ids (the last id given), rev.<n>.<device hex> (a revocation record, the first kept) and
 *   ctr.<name> (counters). Every change of a shared value is a compare-and-set on the entry's
 *   revision, retried on a conflict, so two relays never lose each other's updates.
 * - Quota: put reserves the new bytes in the shop record (CAS, refused past the quota) before
 *   publishing, and gives back what turned out to be a duplicate or was not published. Unlike
 *   SQLite, a put that fails half way (JetStream unreachable) may leave some envelopes stored and
 *   counted; the till's retry finds them as duplicates.
 * - Replicas: 3 when the client knows of 3 or more servers (the URL list and what the cluster
 *   announces), else as many as it knows.
 * - Pushes across relays (tsync__rstore_feed): each relay subscribes to the envelope subjects of
 *   the shops it serves; every published envelope carries Tsync-Relay (this process's random
 *   instance id) so a relay skips what it published itself (it pushed that already).
 * - The process keeps only caches of immutable facts (the admin key of shop n).
 *
 * THREAD SAFETY: a store belongs to one thread (the nats.c connection has its own threads).
 */
#include <inttypes.h>
#include <jansson.h>
#include <nats/nats.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/relay_store.h"
#include "util/util.h"

#define BUCKET     "tsync_relay"
#define CAS_TRIES  200
#define MAX_FEEDS  4096
#define MAX_NAMES  64
#define SUBJ_LEN   160
#define ORIGIN_HEX (TSYNC__SITE_BYTES * 2)

typedef struct {
    int64_t id;
    char admin[65];
} idmap;

typedef struct {
    int64_t shop;
    natsSubscription *sub;
} feed_sub;

typedef struct {
    tsync__rstore base;
    tsync__rstore_feed feed;
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
    int replicas;
    char url[512];
    char instance[33];
    idmap *ids;
    uint32_t nids, capids;
    feed_sub *subs;
    uint32_t nsubs, capsubs;
    struct {
        char name[64];
        int64_t last;
    } sets[MAX_NAMES];
    uint32_t nsets;
} nx;

static int nerr(nx *s, const char *what, natsStatus st)
{
    const char *t = nats_GetLastError(NULL);
    return tsync__err(TSYNC_EIO, "relay store %s: %s: %s", s->url, what,
                      t && *t ? t : natsStatus_GetText(st));
}

/* ---------------------------------------------------------------- KV helpers */

/* 0 with *e (the caller destroys it), TSYNC_ENOTFOUND, or TSYNC_EIO. */
static int kv_get(nx *s, const char *key, kvEntry **e)
{
    *e = NULL;
    natsStatus st = kvStore_Get(e, s->kv, key);
    if (st == NATS_OK) return 0;
    if (st == NATS_NOT_FOUND) return TSYNC_ENOTFOUND;
    return nerr(s, key, st);
}

/* Writes value at key if its revision is still rev (0: the key must not exist). 0, 1 when
 * someone else wrote it first (re-read and retry), or TSYNC_EIO. */
static int kv_cas(nx *s, const char *key, const void *v, size_t len, uint64_t rev)
{
    uint64_t nrev;
    natsStatus st = rev ? kvStore_Update(&nrev, s->kv, key, v, (int)len, rev)
                        : kvStore_Create(&nrev, s->kv, key, v, (int)len);
    if (st == NATS_OK) return 0;
    /* A conflict and an unreachable server look alike here: re-read tells them apart. */
    kvEntry *e = NULL;
    natsStatus g = kvStore_Get(&e, s->kv, key);
    uint64_t cur = g == NATS_OK ? kvEntry_Revision(e) : 0;
    kvEntry_Destroy(e);
    if (g != NATS_OK && g != NATS_NOT_FOUND) return nerr(s, key, st);
    return cur != rev ? 1 : nerr(s, key, st);
}

/* ---------------------------------------------------------------- shop records */

static void hexs(char *out, const uint8_t *p, size_t n)
{
    sodium_bin2hex(out, n * 2 + 1, p, n);
}

static int unhex(uint8_t *out, size_t n, const char *h)
{
    size_t got = 0;
    return h && strlen(h) == n * 2 && sodium_hex2bin(out, n, h, n * 2, NULL, &got, NULL) == 0 &&
                   got == n
               ? 0
               : -1;
}

static int shop_parse(nx *s, kvEntry *e, tsync__rshop *o)
{
    memset(o, 0, sizeof *o);
    json_error_t je;
    json_t *j = json_loadb(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), 0, &je);
    const char *admin = NULL, *sid = NULL;
    json_t *sidj = NULL;
    json_int_t id = 0, q = 0, ex = 0, ad = 0, by = 0, en = 0, rv = 0;
    int bad =
        !j || json_unpack(j, "{s:I, s:s, s?o, s:I, s:I, s:I, s:I, s:I, s:I}", "id", &id, "admin",
                          &admin, "shop_id", &sidj, "quota", &q, "expires", &ex, "admitted", &ad,
                          "bytes", &by, "envelopes", &en, "revocations", &rv) != 0;
    if (!bad) bad = unhex(o->admin_pk, TSYNC__PK_BYTES, admin) != 0;
    if (!bad && json_is_string(sidj)) sid = json_string_value(sidj);
    if (!bad && sid) {
        bad = unhex(o->shop_id, TSYNC__RELAY_SHOP_BYTES, sid) != 0;
        o->has_shop_id = 1;
    }
    json_decref(j);
    if (bad) return tsync__err(TSYNC_ECORRUPT, "relay store %s: a malformed shop record", s->url);
    o->id = id;
    o->quota_bytes = (uint64_t)q;
    o->expires_ms = (uint64_t)ex;
    o->admitted_ms = (uint64_t)ad;
    o->bytes = (uint64_t)by;
    o->envelopes = (uint64_t)en;
    o->revocations = (uint64_t)rv;
    return 0;
}

static char *shop_json(const tsync__rshop *o)
{
    char a[65], sid[33];
    hexs(a, o->admin_pk, TSYNC__PK_BYTES);
    hexs(sid, o->shop_id, TSYNC__RELAY_SHOP_BYTES);
    json_t *j =
        json_pack("{s:I, s:s, s:s?, s:I, s:I, s:I, s:I, s:I, s:I}", "id", (json_int_t)o->id,
                  "admin", a, "shop_id", o->has_shop_id ? sid : NULL, "quota",
                  (json_int_t)o->quota_bytes, "expires", (json_int_t)o->expires_ms, "admitted",
                  (json_int_t)o->admitted_ms, "bytes", (json_int_t)o->bytes, "envelopes",
                  (json_int_t)o->envelopes, "revocations", (json_int_t)o->revocations);
    char *t = j ? json_dumps(j, JSON_COMPACT) : NULL;
    json_decref(j);
    return t;
}

/* Changes the record of admin hex by fn under compare-and-set: fn returns 0 (write), 1 (leave
 * it as it is: done) or an error, which update returns. */
typedef int (*shop_fn)(tsync__rshop *o, void *ctx);

static int shop_update(nx *s, const char *admin, shop_fn fn, void *ctx)
{
    char key[80];
    snprintf(key, sizeof key, "shop.%s", admin);
    for (int i = 0; i < CAS_TRIES; i++) {
        kvEntry *e;
        int rc = kv_get(s, key, &e);
        if (rc)
            return rc == TSYNC_ENOTFOUND ? tsync__err(rc, "relay store: no shop %.16s...", admin)
                                         : rc;
        tsync__rshop o;
        uint64_t rev = kvEntry_Revision(e);
        rc = shop_parse(s, e, &o);
        kvEntry_Destroy(e);
        if (!rc) rc = fn(&o, ctx);
        if (rc) return rc == 1 ? 0 : rc;
        char *t = shop_json(&o);
        if (!t) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
        rc = kv_cas(s, key, t, strlen(t), rev);
        free(t);
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: shop %.16s...: too many concurrent updates",
                      s->url, admin);
}

/* The admin key (hex) of shop id: cached, else from id.<n>. */
static int admin_of(nx *s, int64_t id, char out[65])
{
    for (uint32_t i = 0; i < s->nids; i++)
        if (s->ids[i].id == id) {
            memcpy(out, s->ids[i].admin, 65);
            return 0;
        }
    char key[40];
    snprintf(key, sizeof key, "id.%" PRId64, id);
    kvEntry *e;
    int rc = kv_get(s, key, &e);
    if (rc) return rc == TSYNC_ENOTFOUND ? tsync__err(rc, "relay store: no shop %" PRId64, id) : rc;
    int ok = kvEntry_ValueLen(e) == 64;
    if (ok) {
        memcpy(out, kvEntry_Value(e), 64);
        out[64] = 0;
    }
    kvEntry_Destroy(e);
    if (!ok) return tsync__err(TSYNC_ECORRUPT, "relay store %s: %s is malformed", s->url, key);
    if (s->nids == s->capids) {
        uint32_t nc = s->capids ? s->capids * 2 : 16;
        idmap *m = realloc(s->ids, nc * sizeof *m);
        if (!m) return 0; /* not cached: read again next time */
        s->ids = m;
        s->capids = nc;
    }
    s->ids[s->nids].id = id;
    memcpy(s->ids[s->nids++].admin, out, 65);
    return 0;
}

/* ---------------------------------------------------------------- streams */

static void stream_name(char *out, size_t n, int64_t id)
{
    snprintf(out, n, "TSYNC_%" PRId64, id);
}

static int stream_ensure(nx *s, int64_t id)
{
    char name[40], subj[40];
    stream_name(name, sizeof name, id);
    snprintf(subj, sizeof subj, "tsync.%" PRId64 ".>", id);
    const char *subjects[1] = {subj};
    jsStreamConfig c;
    jsStreamConfig_Init(&c);
    c.Name = name;
    c.Subjects = subjects;
    c.SubjectsLen = 1;
    c.Storage = js_FileStorage;
    c.Replicas = s->replicas;
    c.Duplicates = (int64_t)120 * 1000 * 1000 * 1000; /* 2 min, in ns */
    c.AllowDirect = true;
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsStatus st = js_AddStream(&si, s->js, &c, NULL, &je);
    jsStreamInfo_Destroy(si);
    if (st == NATS_OK || je == JSStreamNameExistErr) return 0;
    return nerr(s, name, st);
}

/* The subjects of shop id matching filter, through fn(ctx, subject); a missing stream has none. */
static int subjects(nx *s, int64_t id, const char *filter, int (*fn)(void *, const char *),
                    void *ctx)
{
    char name[40];
    stream_name(name, sizeof name, id);
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter;
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsStatus st = js_GetStreamInfo(&si, s->js, name, &o, &je);
    if (st == NATS_NOT_FOUND || je == JSStreamNotFoundErr) return 0;
    if (st != NATS_OK) return nerr(s, name, st);
    int rc = 0;
    if (si->State.Subjects)
        for (int i = 0; !rc && i < si->State.Subjects->Count; i++)
            rc = fn(ctx, si->State.Subjects->List[i].Subject);
    jsStreamInfo_Destroy(si);
    return rc;
}

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t first, last;
} idx;

/* tsync.<id>.e.<origin>.<first>.<last> into x; -1 when it is not an envelope subject. */
static int parse_subject(const char *subj, idx *x)
{
    const char *p = strstr(subj, ".e.");
    if (!p || strlen(p + 3) < ORIGIN_HEX + 4) return -1;
    char oh[ORIGIN_HEX + 1];
    memcpy(oh, p + 3, ORIGIN_HEX);
    oh[ORIGIN_HEX] = 0;
    if (unhex(x->origin, TSYNC__SITE_BYTES, oh) != 0 || p[3 + ORIGIN_HEX] != '.') return -1;
    char *end;
    x->first = strtoull(p + 4 + ORIGIN_HEX, &end, 10);
    if (*end != '.') return -1;
    x->last = strtoull(end + 1, &end, 10);
    return *end || x->first == 0 || x->last < x->first ? -1 : 0;
}

typedef struct {
    idx *v;
    size_t n, cap;
} idx_list;

static int idx_add(void *ctx, const char *subj)
{
    idx_list *l = ctx;
    idx x;
    if (parse_subject(subj, &x) != 0) return 0;
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        idx *v = realloc(l->v, nc * sizeof *v);
        if (!v) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
        l->v = v;
        l->cap = nc;
    }
    l->v[l->n++] = x;
    return 0;
}

static int idx_cmp(const void *a, const void *b)
{
    const idx *x = a, *y = b;
    int c = memcmp(x->origin, y->origin, TSYNC__SITE_BYTES);
    if (c) return c;
    return x->first < y->first ? -1 : x->first > y->first;
}

static int count_one(void *ctx, const char *subj)
{
    (void)subj;
    (*(int *)ctx)++;
    return 0;
}

/* ---------------------------------------------------------------- the ops */

static int op_shop(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], tsync__rshop *out)
{
    nx *s = (nx *)b;
    char key[80], a[65];
    hexs(a, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "shop.%s", a);
    kvEntry *e;
    int rc = kv_get(s, key, &e);
    if (rc) return rc;
    rc = shop_parse(s, e, out);
    kvEntry_Destroy(e);
    return rc;
}

typedef struct {
    uint64_t quota, expires;
} admit_ctx;

static int admit_fn(tsync__rshop *o, void *ctx)
{
    admit_ctx *c = ctx;
    o->quota_bytes = c->quota;
    o->expires_ms = c->expires;
    return 0;
}

/* The next shop id (ids, compare-and-set). */
static int next_id(nx *s, int64_t *out)
{
    for (int i = 0; i < CAS_TRIES; i++) {
        kvEntry *e;
        int rc = kv_get(s, "ids", &e);
        if (rc && rc != TSYNC_ENOTFOUND) return rc;
        int64_t last = 0;
        uint64_t rev = 0;
        if (!rc) {
            char t[32] = {0};
            int n = kvEntry_ValueLen(e);
            memcpy(t, kvEntry_Value(e), n > 0 && n < 31 ? (size_t)n : 0);
            last = strtoll(t, NULL, 10);
            rev = kvEntry_Revision(e);
            kvEntry_Destroy(e);
        }
        char t[32];
        int n = snprintf(t, sizeof t, "%" PRId64, last + 1);
        rc = kv_cas(s, "ids", t, (size_t)n, rev);
        if (rc == 0) *out = last + 1;
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: too many concurrent admissions", s->url);
}

static int op_admit(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], uint64_t quota,
                    uint64_t expires, uint64_t now)
{
    nx *s = (nx *)b;
    char a[65], key[80];
    hexs(a, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "shop.%s", a);
    admit_ctx c = {quota, expires};
    tsync__rshop o;
    int rc = op_shop(b, pk, &o);
    if (rc == 0) {
        rc = shop_update(s, a, admit_fn, &c);
        return rc ? rc : stream_ensure(s, o.id);
    }
    if (rc != TSYNC_ENOTFOUND) return rc;
    memset(&o, 0, sizeof o);
    memcpy(o.admin_pk, pk, TSYNC__PK_BYTES);
    o.quota_bytes = quota;
    o.expires_ms = expires;
    o.admitted_ms = now;
    rc = next_id(s, &o.id);
    if (rc) return rc;
    char ik[40];
    snprintf(ik, sizeof ik, "id.%" PRId64, o.id);
    rc = kv_cas(s, ik, a, 64, 0);
    if (!rc) rc = stream_ensure(s, o.id);
    if (rc) return rc == 1 ? tsync__err(TSYNC_EIO, "relay store: %s taken", ik) : rc;
    char *t = shop_json(&o);
    if (!t) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    rc = kv_cas(s, key, t, strlen(t), 0);
    free(t);
    /* Admitted by another relay at the same moment: theirs stands, with this quota and expiry. */
    if (rc == 1) rc = shop_update(s, a, admit_fn, &c);
    return rc;
}

static int bind_fn(tsync__rshop *o, void *ctx)
{
    if (o->has_shop_id) return 1;
    o->has_shop_id = 1;
    memcpy(o->shop_id, ctx, TSYNC__RELAY_SHOP_BYTES);
    return 0;
}

static int op_bind(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__RELAY_SHOP_BYTES])
{
    nx *s = (nx *)b;
    char a[65];
    int rc = admin_of(s, shop, a);
    return rc ? rc : shop_update(s, a, bind_fn, (void *)id);
}

typedef struct {
    uint64_t quota;
    int64_t bytes, envelopes; /* may be negative: giving back */
} reserve_ctx;

static int reserve_fn(tsync__rshop *o, void *ctx)
{
    reserve_ctx *c = ctx;
    if (c->bytes > 0 && o->bytes + (uint64_t)c->bytes > c->quota)
        return tsync__err(TSYNC_EFULL,
                          "quota: %llu bytes stored, %llu more would pass the quota of %llu",
                          (unsigned long long)o->bytes, (unsigned long long)c->bytes,
                          (unsigned long long)c->quota);
    o->bytes = (uint64_t)((int64_t)o->bytes + c->bytes);
    o->envelopes = (uint64_t)((int64_t)o->envelopes + c->envelopes);
    return 0;
}

static void env_subject(char *out, int64_t id, const tsync__renv *e)
{
    char oh[ORIGIN_HEX + 1];
    hexs(oh, e->origin, TSYNC__SITE_BYTES);
    snprintf(out, SUBJ_LEN, "tsync.%" PRId64 ".e.%s.%" PRIu64 ".%" PRIu64, id, oh, e->first_seq,
             e->last_seq);
}

static int op_put(tsync__rstore *b, int64_t shop, uint64_t quota, const tsync__renv *envs,
                  uint32_t n, uint64_t *stored, uint64_t *dup)
{
    nx *s = (nx *)b;
    *stored = *dup = 0;
    char a[65];
    int rc = admin_of(s, shop, a);
    if (rc) return rc;
    uint8_t *isnew = calloc(n ? n : 1, 1);
    if (!isnew) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    reserve_ctx res = {quota, 0, 0};
    for (uint32_t i = 0; !rc && i < n; i++) {
        const tsync__renv *e = &envs[i];
        int seen = 0;
        for (uint32_t k = 0; k < i && !seen; k++)
            seen = isnew[k] && envs[k].first_seq == e->first_seq &&
                   !memcmp(envs[k].origin, e->origin, TSYNC__SITE_BYTES);
        if (!seen) {
            char oh[ORIGIN_HEX + 1], filter[SUBJ_LEN];
            hexs(oh, e->origin, TSYNC__SITE_BYTES);
            snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.%" PRIu64 ".*", shop, oh,
                     e->first_seq);
            int have = 0;
            rc = subjects(s, shop, filter, count_one, &have);
            seen = have > 0;
        }
        if (!rc && !seen) {
            isnew[i] = 1;
            res.bytes += (int64_t)e->len;
            res.envelopes++;
        }
    }
    if (!rc && res.bytes > 0) rc = shop_update(s, a, reserve_fn, &res);
    if (rc) {
        free(isnew);
        return rc;
    }
    /* Publish; what JetStream says is a duplicate (another relay stored it a moment ago) and what
     * could not be published is given back. */
    reserve_ctx back = {quota, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        const tsync__renv *e = &envs[i];
        if (!isnew[i]) {
            (*dup)++;
            continue;
        }
        if (rc) {
            back.bytes -= (int64_t)e->len;
            back.envelopes--;
            continue;
        }
        char subj[SUBJ_LEN], msgid[ORIGIN_HEX + 24];
        env_subject(subj, shop, e);
        hexs(msgid, e->origin, TSYNC__SITE_BYTES);
        snprintf(msgid + ORIGIN_HEX, sizeof msgid - ORIGIN_HEX, ".%" PRIu64, e->first_seq);
        natsMsg *m = NULL;
        jsPubAck *ack = NULL;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msgid;
        jsErrCode je = 0;
        natsStatus st = natsMsg_Create(&m, subj, NULL, (const char *)e->bytes, (int)e->len);
        if (st == NATS_OK) st = natsMsgHeader_Set(m, "Tsync-Relay", s->instance);
        if (st == NATS_OK) st = js_PublishMsg(&ack, s->js, m, &po, &je);
        if (st == NATS_OK && ack->Duplicate) {
            (*dup)++;
            back.bytes -= (int64_t)e->len;
            back.envelopes--;
        } else if (st == NATS_OK) {
            (*stored)++;
        } else {
            /* No answer is not "not stored" (the ack may be what was lost): ask. */
            rc = nerr(s, subj, st);
            int have = 0;
            if (subjects(s, shop, subj, count_one, &have) == 0 && have > 0) {
                rc = 0;
                (*stored)++;
            } else {
                back.bytes -= (int64_t)e->len;
                back.envelopes--;
            }
        }
        jsPubAck_Destroy(ack);
        natsMsg_Destroy(m);
    }
    free(isnew);
    if (back.envelopes) {
        int r2 = shop_update(s, a, reserve_fn, &back);
        if (!rc) rc = r2;
    }
    if (rc) *stored = 0;
    return rc;
}

static int op_ranges(tsync__rstore *b, int64_t shop, tsync__rstore_ranges_fn fn, void *ctx)
{
    nx *s = (nx *)b;
    char filter[64];
    snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.>", shop);
    idx_list l = {0};
    int rc = subjects(s, shop, filter, idx_add, &l);
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, idx_cmp);
    tsync__rrange *rg = l.n ? malloc(l.n * sizeof *rg) : NULL;
    if (!rc && l.n && !rg) rc = tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    uint32_t nr = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (nr > 0 && memcmp(l.v[i].origin, l.v[i - 1].origin, TSYNC__SITE_BYTES) != 0) {
            rc = fn(ctx, l.v[i - 1].origin, rg, nr);
            nr = 0;
            if (rc) break;
        }
        if (nr > 0 && l.v[i].first <= rg[nr - 1].last + 1) {
            if (l.v[i].last > rg[nr - 1].last) rg[nr - 1].last = l.v[i].last;
            continue;
        }
        rg[nr++] = (tsync__rrange){l.v[i].first, l.v[i].last};
    }
    if (!rc && nr > 0) rc = fn(ctx, l.v[l.n - 1].origin, rg, nr);
    free(rg);
    free(l.v);
    return rc;
}

static int op_get(tsync__rstore *b, int64_t shop, const uint8_t origin[TSYNC__SITE_BYTES],
                  uint64_t from, tsync__rstore_env_fn fn, void *ctx)
{
    nx *s = (nx *)b;
    char oh[ORIGIN_HEX + 1], filter[SUBJ_LEN], name[40];
    hexs(oh, origin, TSYNC__SITE_BYTES);
    snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.*.*", shop, oh);
    stream_name(name, sizeof name, shop);
    idx_list l = {0};
    int rc = subjects(s, shop, filter, idx_add, &l);
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, idx_cmp);
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (l.v[i].last < from) continue;
        tsync__renv e = {.first_seq = l.v[i].first, .last_seq = l.v[i].last};
        memcpy(e.origin, origin, TSYNC__SITE_BYTES);
        char subj[SUBJ_LEN];
        env_subject(subj, shop, &e);
        natsMsg *m = NULL;
        jsErrCode je = 0;
        natsStatus st = js_GetLastMsg(&m, s->js, name, subj, NULL, &je);
        if (st != NATS_OK) {
            rc = nerr(s, subj, st);
            break;
        }
        e.bytes = (const uint8_t *)natsMsg_GetData(m);
        e.len = (size_t)natsMsg_GetDataLength(m);
        rc = fn(ctx, &e);
        natsMsg_Destroy(m);
    }
    free(l.v);
    return rc == 1 ? 0 : rc;
}

static int rev_fn(tsync__rshop *o, void *ctx)
{
    (void)ctx;
    o->revocations++;
    return 0;
}

static int op_revoke(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES],
                     const uint8_t *rec, size_t len)
{
    nx *s = (nx *)b;
    char a[65], dh[65], key[100];
    int rc = admin_of(s, shop, a);
    if (rc) return rc;
    hexs(dh, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "rev.%" PRId64 ".%s", shop, dh);
    rc = kv_cas(s, key, rec, len, 0);
    if (rc == 1) return 0; /* the first is kept */
    return rc ? rc : shop_update(s, a, rev_fn, NULL);
}

static int op_revoked(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES])
{
    nx *s = (nx *)b;
    char dh[65], key[100];
    hexs(dh, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "rev.%" PRId64 ".%s", shop, dh);
    kvEntry *e;
    int rc = kv_get(s, key, &e);
    kvEntry_Destroy(e);
    return rc == 0 ? 1 : rc == TSYNC_ENOTFOUND ? 0 : rc;
}

/* Counters are shared by every relay process: an add is a compare-and-set; a set (sessions_open,
 * a process's own figure) adds the difference from what this process set last, so the stored
 * value is the sum over the processes (a killed process leaves its last figure in it). */
static int op_count(tsync__rstore *b, const char *name, int64_t delta, int set)
{
    nx *s = (nx *)b;
    if (set) {
        uint32_t i = 0;
        while (i < s->nsets && strcmp(s->sets[i].name, name) != 0) i++;
        if (i == s->nsets) {
            if (i == MAX_NAMES || strlen(name) >= sizeof s->sets[i].name)
                return tsync__err(TSYNC_EINVAL, "relay store: counter %s: too many set", name);
            snprintf(s->sets[i].name, sizeof s->sets[i].name, "%s", name);
            s->sets[i].last = 0;
            s->nsets++;
        }
        int64_t d = delta - s->sets[i].last;
        s->sets[i].last = delta;
        delta = d;
        if (!delta) return 0;
    }
    for (int t = 0; t < CAS_TRIES; t++) {
        kvEntry *e;
        int rc = kv_get(s, "counters", &e);
        if (rc && rc != TSYNC_ENOTFOUND) return rc;
        uint64_t rev = 0;
        json_t *j = NULL;
        if (!rc) {
            rev = kvEntry_Revision(e);
            j = json_loadb(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), 0, NULL);
            kvEntry_Destroy(e);
            if (!json_is_object(j)) {
                json_decref(j);
                return tsync__err(TSYNC_ECORRUPT, "relay store %s: malformed counters", s->url);
            }
        } else {
            j = json_object();
        }
        json_int_t v = json_integer_value(json_object_get(j, name));
        json_object_set_new(j, name, json_integer(v + delta));
        char *txt = json_dumps(j, JSON_COMPACT | JSON_SORT_KEYS);
        json_decref(j);
        if (!txt) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
        rc = kv_cas(s, "counters", txt, strlen(txt), rev);
        free(txt);
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: counter %s: too many concurrent updates", s->url,
                      name);
}

/* Every shop (id.1 .. id.<ids>, so no listing of the bucket's keys), then the counters. */
static int op_stats(tsync__rstore *b, tsync__rstore_shop_fn fn, void *ctx,
                    int (*cfn)(void *ctx, const char *name, int64_t n))
{
    nx *s = (nx *)b;
    kvEntry *e;
    int rc = kv_get(s, "ids", &e);
    int64_t last = 0;
    if (rc && rc != TSYNC_ENOTFOUND) return rc;
    if (!rc) {
        char t[32] = {0};
        int n = kvEntry_ValueLen(e);
        memcpy(t, kvEntry_Value(e), n > 0 && n < 31 ? (size_t)n : 0);
        last = strtoll(t, NULL, 10);
        kvEntry_Destroy(e);
    }
    rc = 0;
    for (int64_t id = 1; !rc && id <= last; id++) {
        char a[65];
        uint8_t pk[TSYNC__PK_BYTES];
        tsync__rshop o;
        rc = admin_of(s, id, a);
        if (rc == TSYNC_ENOTFOUND) { /* an id taken by an admission that did not finish */
            rc = 0;
            continue;
        }
        if (!rc && unhex(pk, sizeof pk, a) != 0)
            rc = tsync__err(TSYNC_ECORRUPT, "relay store %s: id.%" PRId64 " is malformed", s->url,
                            id);
        if (!rc) rc = op_shop(b, pk, &o);
        if (rc == TSYNC_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (!rc) rc = fn(ctx, &o);
    }
    if (rc) return rc;
    rc = kv_get(s, "counters", &e);
    if (rc) return rc == TSYNC_ENOTFOUND ? 0 : rc;
    json_t *j = json_loadb(kvEntry_Value(e), (size_t)kvEntry_ValueLen(e), 0, NULL);
    kvEntry_Destroy(e);
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v)
    {
        if (!rc) rc = cfn(ctx, k, (int64_t)json_integer_value(v));
    }
    json_decref(j);
    return rc;
}

/* ---------------------------------------------------------------- the feed */

static int feed_watch(tsync__rstore *b, int64_t shop, int on)
{
    nx *s = (nx *)b;
    uint32_t i = 0;
    while (i < s->nsubs && s->subs[i].shop != shop) i++;
    if (!on) {
        if (i < s->nsubs) {
            natsSubscription_Unsubscribe(s->subs[i].sub);
            natsSubscription_Destroy(s->subs[i].sub);
            s->subs[i] = s->subs[--s->nsubs];
        }
        return 0;
    }
    if (i < s->nsubs) return 0;
    if (s->nsubs == s->capsubs) {
        uint32_t nc = s->capsubs ? s->capsubs * 2 : 16;
        feed_sub *v = nc <= MAX_FEEDS ? realloc(s->subs, nc * sizeof *v) : NULL;
        if (!v) return tsync__err(TSYNC_ENOMEM, "relay store: too many shops watched");
        s->subs = v;
        s->capsubs = nc;
    }
    char subj[64];
    snprintf(subj, sizeof subj, "tsync.%" PRId64 ".e.>", shop);
    natsSubscription *sub = NULL;
    natsStatus st = natsConnection_SubscribeSync(&sub, s->nc, subj);
    if (st != NATS_OK) return nerr(s, subj, st);
    s->subs[s->nsubs++] = (feed_sub){shop, sub};
    return 0;
}

static int feed_next(tsync__rstore *b, tsync__rstore_feed_fn fn, void *ctx)
{
    nx *s = (nx *)b;
    int got = 0;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        natsMsg *m;
        /* At most 64 per shop and call, so one busy shop does not hold up the relay's loop. */
        for (int k = 0; k < 64 && natsSubscription_NextMsg(&m, s->subs[i].sub, 0) == NATS_OK; k++) {
            const char *who = NULL;
            idx x;
            if (!(natsMsgHeader_Get(m, "Tsync-Relay", &who) == NATS_OK && who &&
                  !strcmp(who, s->instance)) &&
                parse_subject(natsMsg_GetSubject(m), &x) == 0) {
                tsync__renv e = {.first_seq = x.first, .last_seq = x.last};
                memcpy(e.origin, x.origin, TSYNC__SITE_BYTES);
                e.bytes = (const uint8_t *)natsMsg_GetData(m);
                e.len = (size_t)natsMsg_GetDataLength(m);
                if (e.len > 0) {
                    fn(ctx, s->subs[i].shop, &e);
                    got++;
                }
            }
            natsMsg_Destroy(m);
        }
    }
    return got;
}

static void op_close(tsync__rstore *b)
{
    nx *s = (nx *)b;
    if (!s) return;
    for (uint32_t i = 0; i < s->nsubs; i++) natsSubscription_Destroy(s->subs[i].sub);
    free(s->subs);
    kvStore_Destroy(s->kv);
    jsCtx_Destroy(s->js);
    natsConnection_Destroy(s->nc);
    free(s->ids);
    free(s);
}

/* Designated: ops this engine does not have (the vault's, when the vtable gains them) stay NULL,
 * which the relay answers with a refusal. */
static const tsync__rstore_ops OPS = {.admit = op_admit,
                                      .shop = op_shop,
                                      .bind_shop_id = op_bind,
                                      .put = op_put,
                                      .ranges = op_ranges,
                                      .get = op_get,
                                      .revoke = op_revoke,
                                      .revoked = op_revoked,
                                      .count = op_count,
                                      .stats = op_stats,
                                      .close = op_close};

int tsync__rstore_nats_open(tsync__rstore **out, const char *url, int create)
{
    *out = NULL;
    if (!url || strncmp(url, "nats://", 7) != 0 || !url[7])
        return tsync__err(TSYNC_EINVAL, "relay store %s: not nats://HOST:PORT[,HOST:PORT...]",
                          url ? url : "(null)");
    nx *s = calloc(1, sizeof *s);
    if (!s) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    s->base.ops = &OPS;
    s->base.feed = &s->feed;
    s->feed.watch = feed_watch;
    s->feed.next = feed_next;
    snprintf(s->url, sizeof s->url, "%s", url);
    uint8_t inst[16];
    randombytes_buf(inst, sizeof inst);
    hexs(s->instance, inst, sizeof inst);
    /* nats://a:1,b:2 -> "nats://a:1", "nats://b:2" */
    char list[512], *save = NULL, urls[16][128];
    const char *servers[16];
    int n = 0;
    snprintf(list, sizeof list, "%s", url + 7);
    for (char *t = strtok_r(list, ",", &save); t && n < 16; t = strtok_r(NULL, ",", &save)) {
        if (!strncmp(t, "nats://", 7)) t += 7;
        snprintf(urls[n], sizeof urls[n], "nats://%s", t);
        servers[n] = urls[n];
        n++;
    }
    natsOptions *o = NULL;
    natsStatus st = natsOptions_Create(&o);
    if (st == NATS_OK) st = natsOptions_SetServers(o, servers, n);
    if (st == NATS_OK) st = natsOptions_SetMaxReconnect(o, -1);
    if (st == NATS_OK) st = natsOptions_SetReconnectWait(o, 100);
    if (st == NATS_OK) st = natsOptions_SetTimeout(o, 2000);
    if (st == NATS_OK) st = natsOptions_SetName(o, "tillsync relay");
    if (st == NATS_OK) st = natsConnection_Connect(&s->nc, o);
    natsOptions_Destroy(o);
    if (st == NATS_OK) {
        jsOptions jo;
        jsOptions_Init(&jo);
        jo.Wait = 10000; /* a leader election after a node is lost takes a few seconds */
        st = natsConnection_JetStream(&s->js, s->nc, &jo);
    }
    int rc = st == NATS_OK ? 0 : nerr(s, "connect", st);
    if (!rc) {
        char **known = NULL;
        int nk = 0;
        if (natsConnection_GetServers(s->nc, &known, &nk) != NATS_OK) nk = n;
        for (int i = 0; known && i < nk; i++) free(known[i]);
        free(known);
        s->replicas = nk >= 3 ? 3 : nk < 1 ? 1 : nk;
        st = js_KeyValue(&s->kv, s->js, BUCKET);
        if (st == NATS_NOT_FOUND && create) {
            kvConfig kc;
            kvConfig_Init(&kc);
            kc.Bucket = BUCKET;
            kc.History = 1;
            kc.Replicas = s->replicas;
            kc.StorageType = js_FileStorage;
            st = js_CreateKeyValue(&s->kv, s->js, &kc);
        }
        if (st == NATS_NOT_FOUND)
            rc = tsync__err(TSYNC_ENOTFOUND,
                            "relay store %s: no relay data here yet (relay admit --store %s)", url,
                            url);
        else if (st != NATS_OK)
            rc = nerr(s, "KV bucket " BUCKET, st);
    }
    if (rc) {
        op_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
