/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats_kv.c — what the JetStream store keeps in its KV bucket (design notes in
 * store/relay_store_nats_int.h): shop records (JSON, changed only by compare-and-set, so two
 * relays never lose each other's updates), the id -> admin key map, revocations and counters.
 */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_store_nats_int.h"

static int shop_parse(tsync__nx *s, kvEntry *e, tsync__rshop *o)
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
    if (!bad) bad = tsync__nats_unhex(o->admin_pk, TSYNC__PK_BYTES, admin) != 0;
    if (!bad && json_is_string(sidj)) sid = json_string_value(sidj);
    if (!bad && sid) {
        bad = tsync__nats_unhex(o->shop_id, TSYNC__RELAY_SHOP_BYTES, sid) != 0;
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
    tsync__nats_hex(a, o->admin_pk, TSYNC__PK_BYTES);
    tsync__nats_hex(sid, o->shop_id, TSYNC__RELAY_SHOP_BYTES);
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

static void shop_remember(tsync__nx *s, const char *admin, uint64_t rev, const tsync__rshop *o)
{
    snprintf(s->shop_cache.admin, sizeof s->shop_cache.admin, "%s", admin);
    s->shop_cache.rev = rev;
    s->shop_cache.o = *o;
}

int tsync__nats_shop_update(tsync__nx *s, const char *admin, tsync__nats_shop_fn fn, void *ctx)
{
    char key[80];
    snprintf(key, sizeof key, "shop.%s", admin);
    /* First try the record last seen here: the compare-and-set tells whether it is current. */
    int cached = s->shop_cache.rev && !strcmp(s->shop_cache.admin, admin);
    for (int i = 0; i < TSYNC__NATS_CAS; i++) {
        tsync__rshop o;
        uint64_t rev;
        int rc = 0;
        if (cached) {
            o = s->shop_cache.o;
            rev = s->shop_cache.rev;
            cached = 0;
        } else {
            kvEntry *e;
            rc = tsync__nats_kv_get(s, key, &e);
            if (rc)
                return rc == TSYNC_ENOTFOUND
                           ? tsync__err(rc, "relay store: no shop %.16s...", admin)
                           : rc;
            rev = kvEntry_Revision(e);
            rc = shop_parse(s, e, &o);
            kvEntry_Destroy(e);
        }
        if (!rc) rc = fn(&o, ctx);
        if (rc) return rc == 1 ? 0 : rc;
        char *t = shop_json(&o);
        if (!t) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
        s->shop_cache.rev = 0;
        rc = tsync__nats_kv_cas(s, key, t, strlen(t), rev);
        free(t);
        if (!rc) shop_remember(s, admin, s->cas_rev, &o);
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: shop %.16s...: too many concurrent updates",
                      s->url, admin);
}

/* The admin key (hex) of shop id: cached, else from id.<n>. */
int tsync__nats_admin_of(tsync__nx *s, int64_t id, char out[65])
{
    for (uint32_t i = 0; i < s->nids; i++)
        if (s->ids[i].id == id) {
            memcpy(out, s->ids[i].admin, 65);
            return 0;
        }
    char key[40];
    snprintf(key, sizeof key, "id.%" PRId64, id);
    kvEntry *e;
    int rc = tsync__nats_kv_get(s, key, &e);
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
        tsync__nats_idmap *m = realloc(s->ids, nc * sizeof *m);
        if (!m) return 0; /* not cached: read again next time */
        s->ids = m;
        s->capids = nc;
    }
    s->ids[s->nids].id = id;
    memcpy(s->ids[s->nids++].admin, out, 65);
    return 0;
}

int tsync__nats_shop(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], tsync__rshop *out)
{
    tsync__nx *s = (tsync__nx *)b;
    char key[80], a[65];
    tsync__nats_hex(a, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "shop.%s", a);
    kvEntry *e;
    int rc = tsync__nats_kv_get(s, key, &e);
    if (rc) return rc;
    rc = shop_parse(s, e, out);
    if (!rc) shop_remember(s, a, kvEntry_Revision(e), out);
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
static int next_id(tsync__nx *s, int64_t *out)
{
    for (int i = 0; i < TSYNC__NATS_CAS; i++) {
        kvEntry *e;
        int rc = tsync__nats_kv_get(s, "ids", &e);
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
        rc = tsync__nats_kv_cas(s, "ids", t, (size_t)n, rev);
        if (rc == 0) *out = last + 1;
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: too many concurrent admissions", s->url);
}

int tsync__nats_admit(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], uint64_t quota,
                      uint64_t expires, uint64_t now)
{
    tsync__nx *s = (tsync__nx *)b;
    char a[65], key[80];
    tsync__nats_hex(a, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "shop.%s", a);
    admit_ctx c = {quota, expires};
    tsync__rshop o;
    int rc = tsync__nats_shop(b, pk, &o);
    if (rc == 0) {
        rc = tsync__nats_shop_update(s, a, admit_fn, &c);
        return rc ? rc : tsync__nats_stream_ensure(s, o.id);
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
    rc = tsync__nats_kv_cas(s, ik, a, 64, 0);
    if (!rc) rc = tsync__nats_stream_ensure(s, o.id);
    if (rc) return rc == 1 ? tsync__err(TSYNC_EIO, "relay store: %s taken", ik) : rc;
    char *t = shop_json(&o);
    if (!t) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    rc = tsync__nats_kv_cas(s, key, t, strlen(t), 0);
    free(t);
    /* Admitted by another relay at the same moment: theirs stands, with this quota and expiry. */
    if (rc == 1) rc = tsync__nats_shop_update(s, a, admit_fn, &c);
    return rc;
}

static int bind_fn(tsync__rshop *o, void *ctx)
{
    if (o->has_shop_id) return 1;
    o->has_shop_id = 1;
    memcpy(o->shop_id, ctx, TSYNC__RELAY_SHOP_BYTES);
    return 0;
}

int tsync__nats_bind(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__RELAY_SHOP_BYTES])
{
    tsync__nx *s = (tsync__nx *)b;
    char a[65];
    int rc = tsync__nats_admin_of(s, shop, a);
    return rc ? rc : tsync__nats_shop_update(s, a, bind_fn, (void *)id);
}

int tsync__nats_reserve_fn(tsync__rshop *o, void *ctx)
{
    tsync__nats_reserve_ctx *c = ctx;
    if (c->bytes > 0 && o->bytes + (uint64_t)c->bytes > c->quota)
        return tsync__err(TSYNC_EFULL,
                          "quota: %llu bytes stored, %llu more would pass the quota of %llu",
                          (unsigned long long)o->bytes, (unsigned long long)c->bytes,
                          (unsigned long long)c->quota);
    o->bytes = (uint64_t)((int64_t)o->bytes + c->bytes);
    o->envelopes = (uint64_t)((int64_t)o->envelopes + c->envelopes);
    return 0;
}

static int rev_fn(tsync__rshop *o, void *ctx)
{
    (void)ctx;
    o->revocations++;
    return 0;
}

int tsync__nats_revoke(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES],
                       const uint8_t *rec, size_t len)
{
    tsync__nx *s = (tsync__nx *)b;
    char a[65], dh[65], key[100];
    int rc = tsync__nats_admin_of(s, shop, a);
    if (rc) return rc;
    tsync__nats_hex(dh, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "rev.%" PRId64 ".%s", shop, dh);
    rc = tsync__nats_kv_cas(s, key, rec, len, 0);
    if (rc == 1) return 0; /* the first is kept */
    return rc ? rc : tsync__nats_shop_update(s, a, rev_fn, NULL);
}

int tsync__nats_revoked(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES])
{
    tsync__nx *s = (tsync__nx *)b;
    char dh[65], key[100];
    tsync__nats_hex(dh, pk, TSYNC__PK_BYTES);
    snprintf(key, sizeof key, "rev.%" PRId64 ".%s", shop, dh);
    kvEntry *e;
    int rc = tsync__nats_kv_get(s, key, &e);
    kvEntry_Destroy(e);
    return rc == 0 ? 1 : rc == TSYNC_ENOTFOUND ? 0 : rc;
}

/* Counters are shared by every relay process: an add is a compare-and-set; a set (sessions_open,
 * a process's own figure) adds the difference from what this process set last, so the stored
 * value is the sum over the processes (a killed process leaves its last figure in it). */
int tsync__nats_count(tsync__rstore *b, const char *name, int64_t delta, int set)
{
    tsync__nx *s = (tsync__nx *)b;
    if (set) {
        uint32_t i = 0;
        while (i < s->nsets && strcmp(s->sets[i].name, name) != 0) i++;
        if (i == s->nsets) {
            if (i == sizeof s->sets / sizeof s->sets[0] || strlen(name) >= sizeof s->sets[i].name)
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
    for (int t = 0; t < TSYNC__NATS_CAS; t++) {
        kvEntry *e;
        int rc = tsync__nats_kv_get(s, "counters", &e);
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
        rc = tsync__nats_kv_cas(s, "counters", txt, strlen(txt), rev);
        free(txt);
        if (rc != 1) return rc;
    }
    return tsync__err(TSYNC_EIO, "relay store %s: counter %s: too many concurrent updates", s->url,
                      name);
}

/* Every shop (id.1 .. id.<ids>, so no listing of the bucket's keys), then the counters. */
int tsync__nats_stats(tsync__rstore *b, tsync__rstore_shop_fn fn, void *ctx,
                      int (*cfn)(void *ctx, const char *name, int64_t n))
{
    tsync__nx *s = (tsync__nx *)b;
    kvEntry *e;
    int rc = tsync__nats_kv_get(s, "ids", &e);
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
        rc = tsync__nats_admin_of(s, id, a);
        if (rc == TSYNC_ENOTFOUND) { /* an id taken by an admission that did not finish */
            rc = 0;
            continue;
        }
        if (!rc && tsync__nats_unhex(pk, sizeof pk, a) != 0)
            rc = tsync__err(TSYNC_ECORRUPT, "relay store %s: id.%" PRId64 " is malformed", s->url,
                            id);
        if (!rc) rc = tsync__nats_shop(b, pk, &o);
        if (rc == TSYNC_ENOTFOUND) {
            rc = 0;
            continue;
        }
        if (!rc) rc = fn(ctx, &o);
    }
    if (rc) return rc;
    rc = tsync__nats_kv_get(s, "counters", &e);
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
