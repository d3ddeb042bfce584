/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats.c — the relay's store on NATS JetStream (store/relay_store.h), so any
 * number of relay processes serve the same shops: a relay process keeps nothing JetStream does
 * not have, and restarting or losing one loses nothing (docs/RELAY.md, "Storage on NATS
 * JetStream"). This file connects, binds the KV bucket and holds what the others share (KV
 * compare-and-set, the per-shop stream and its subject index); the design notes of the whole
 * engine are in store/relay_store_nats_int.h. The ops live in relay_store_nats_kv.c (shops,
 * revocations, counters), relay_store_nats_env.c (envelopes and the feed) and
 * relay_store_nats_vault.c (backups in chunks).
 *
 * THREAD SAFETY: a store belongs to one thread (the nats.c connection has its own threads).
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_store_nats_int.h"

int tsync__nats_err(tsync__nx *s, const char *what, natsStatus st)
{
    const char *t = nats_GetLastError(NULL);
    return tsync__err(TSYNC_EIO, "relay store %s: %s: %s", s->url, what,
                      t && *t ? t : natsStatus_GetText(st));
}

/* ---------------------------------------------------------------- KV helpers */

/* 0 with *e (the caller destroys it), TSYNC_ENOTFOUND, or TSYNC_EIO. */
int tsync__nats_kv_get(tsync__nx *s, const char *key, kvEntry **e)
{
    *e = NULL;
    natsStatus st = kvStore_Get(e, s->kv, key);
    if (st == NATS_OK) return 0;
    if (st == NATS_NOT_FOUND) return TSYNC_ENOTFOUND;
    return tsync__nats_err(s, key, st);
}

/* Writes value at key if its revision is still rev (0: the key must not exist). 0, 1 when
 * someone else wrote it first (re-read and retry), or TSYNC_EIO. */
int tsync__nats_kv_cas(tsync__nx *s, const char *key, const void *v, size_t len, uint64_t rev)
{
    uint64_t nrev;
    natsStatus st = rev ? kvStore_Update(&nrev, s->kv, key, v, (int)len, rev)
                        : kvStore_Create(&nrev, s->kv, key, v, (int)len);
    if (st == NATS_OK) {
        s->cas_rev = nrev;
        return 0;
    }
    /* A conflict and an unreachable server look alike here: re-read tells them apart. */
    kvEntry *e = NULL;
    natsStatus g = kvStore_Get(&e, s->kv, key);
    uint64_t cur = g == NATS_OK ? kvEntry_Revision(e) : 0;
    kvEntry_Destroy(e);
    if (g != NATS_OK && g != NATS_NOT_FOUND) return tsync__nats_err(s, key, st);
    return cur != rev ? 1 : tsync__nats_err(s, key, st);
}

/* ---------------------------------------------------------------- shop records */

void tsync__nats_hex(char *out, const uint8_t *p, size_t n)
{
    sodium_bin2hex(out, n * 2 + 1, p, n);
}

int tsync__nats_unhex(uint8_t *out, size_t n, const char *h)
{
    size_t got = 0;
    return h && strlen(h) == n * 2 && sodium_hex2bin(out, n, h, n * 2, NULL, &got, NULL) == 0 &&
                   got == n
               ? 0
               : -1;
}

/* ---------------------------------------------------------------- streams */

void tsync__nats_stream_name(char *out, size_t n, int64_t id)
{
    snprintf(out, n, "TSYNC_%" PRId64, id);
}

int tsync__nats_stream_ensure(tsync__nx *s, int64_t id)
{
    char name[40], subj[40];
    tsync__nats_stream_name(name, sizeof name, id);
    snprintf(subj, sizeof subj, "tsync.%" PRId64 ".>", id);
    const char *subj_list[1] = {subj};
    jsStreamConfig c;
    jsStreamConfig_Init(&c);
    c.Name = name;
    c.Subjects = subj_list;
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
    return tsync__nats_err(s, name, st);
}

int tsync__nats_subjects(tsync__nx *s, int64_t id, const char *filter, tsync__nats_subj_fn fn,
                         void *ctx)
{
    char name[40];
    tsync__nats_stream_name(name, sizeof name, id);
    return tsync__nats_stream_subjects(s, name, filter, fn, ctx);
}

int tsync__nats_stream_subjects(tsync__nx *s, const char *name, const char *filter,
                                tsync__nats_subj_fn fn, void *ctx)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Info.SubjectsFilter = filter;
    jsStreamInfo *si = NULL;
    jsErrCode je = 0;
    natsStatus st = js_GetStreamInfo(&si, s->js, name, &o, &je);
    if (st == NATS_NOT_FOUND || je == JSStreamNotFoundErr) return 0;
    if (st != NATS_OK) return tsync__nats_err(s, name, st);
    int rc = 0;
    if (si->State.Subjects)
        for (int i = 0; !rc && i < si->State.Subjects->Count; i++)
            rc = fn(ctx, si->State.Subjects->List[i].Subject);
    jsStreamInfo_Destroy(si);
    return rc;
}

int tsync__nats_purge(tsync__nx *s, const char *name, const char *filter)
{
    jsOptions o;
    jsOptions_Init(&o);
    o.Stream.Purge.Subject = filter;
    jsErrCode je = 0;
    natsStatus st = js_PurgeStream(s->js, name, &o, &je);
    if (st == NATS_OK || st == NATS_NOT_FOUND || je == JSStreamNotFoundErr) return 0;
    return tsync__nats_err(s, filter, st);
}

void *tsync__nats_grow(void *v, size_t *cap, size_t n, size_t size)
{
    if (n < *cap) return v;
    size_t nc = *cap ? *cap * 2 : 64;
    void *g = realloc(v, nc * size);
    if (!g) {
        tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
        return NULL;
    }
    *cap = nc;
    return g;
}

int tsync__nats_count_one(void *ctx, const char *subj)
{
    (void)subj;
    (*(int *)ctx)++;
    return 0;
}

static void op_close(tsync__rstore *b)
{
    tsync__nx *s = (tsync__nx *)b;
    if (!s) return;
    for (uint32_t i = 0; i < s->nsubs; i++) natsSubscription_Destroy(s->subs[i].sub);
    free(s->subs);
    kvStore_Destroy(s->kv);
    jsCtx_Destroy(s->js);
    natsConnection_Destroy(s->nc);
    free(s->ids);
    pthread_mutex_destroy(&s->pub.mu);
    free(s);
}

static const tsync__rstore_ops OPS = {.admit = tsync__nats_admit,
                                      .shop = tsync__nats_shop,
                                      .bind_shop_id = tsync__nats_bind,
                                      .put = tsync__nats_put,
                                      .ranges = tsync__nats_ranges,
                                      .get = tsync__nats_get,
                                      .revoke = tsync__nats_revoke,
                                      .revoked = tsync__nats_revoked,
                                      .count = tsync__nats_count,
                                      .stats = tsync__nats_stats,
                                      .close = op_close,
                                      .vault_have = tsync__nats_vault_have,
                                      .vault_put = tsync__nats_vault_put,
                                      .vault_commit = tsync__nats_vault_commit,
                                      .vault_list = tsync__nats_vault_list,
                                      .vault_get = tsync__nats_vault_get,
                                      .vault_del = tsync__nats_vault_del};

int tsync__rstore_nats_open(tsync__rstore **out, const char *url, int create)
{
    *out = NULL;
    if (!url || strncmp(url, "nats://", 7) != 0 || !url[7])
        return tsync__err(TSYNC_EINVAL, "relay store %s: not nats://HOST:PORT[,HOST:PORT...]",
                          url ? url : "(null)");
    tsync__nx *s = calloc(1, sizeof *s);
    if (!s) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    if (pthread_mutex_init(&s->pub.mu, NULL) != 0) {
        free(s);
        return tsync__err(TSYNC_ENOMEM, "relay store: cannot create a mutex");
    }
    s->base.ops = &OPS;
    s->base.feed = &s->feed;
    s->feed.watch = tsync__nats_feed_watch;
    s->feed.next = tsync__nats_feed_next;
    snprintf(s->url, sizeof s->url, "%s", url);
    uint8_t inst[16];
    randombytes_buf(inst, sizeof inst);
    tsync__nats_hex(s->instance, inst, sizeof inst);
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
        jo.PublishAsync.AckHandler = tsync__nats_on_ack;
        jo.PublishAsync.AckHandlerClosure = s;
        st = natsConnection_JetStream(&s->js, s->nc, &jo);
    }
    int rc = st == NATS_OK ? 0 : tsync__nats_err(s, "connect", st);
    if (!rc) {
        char **known = NULL;
        int nk = 0;
        if (natsConnection_GetServers(s->nc, &known, &nk) != NATS_OK) nk = n;
        for (int i = 0; known && i < nk; i++) free(known[i]);
        free(known);
        s->replicas = nk >= 3 ? 3 : nk < 1 ? 1 : nk;
        /* A vault part and its headers fit one message: max_payload less 4 KiB (1 MiB by
         * default, so a 1 MiB chunk goes as two parts). */
        int64_t mp = natsConnection_GetMaxPayload(s->nc);
        s->part_max = mp > 8192 ? (size_t)(mp - 4096) : 4096;
        if (s->part_max > TSYNC__VAULT_CHUNK) s->part_max = TSYNC__VAULT_CHUNK;
        st = js_KeyValue(&s->kv, s->js, TSYNC__NATS_BUCKET);
        if (st == NATS_NOT_FOUND && create) {
            kvConfig kc;
            kvConfig_Init(&kc);
            kc.Bucket = TSYNC__NATS_BUCKET;
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
            rc = tsync__nats_err(s, "KV bucket " TSYNC__NATS_BUCKET, st);
    }
    if (rc) {
        op_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}
