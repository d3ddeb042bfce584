/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats_int.h — what the files of the JetStream store share
 * (store/relay_store_nats.c, _kv.c, _env.c, _vault.c). Private to store/.
 *
 * Design notes
 * - Envelopes: one stream per shop, TSYNC_<id>, subjects tsync.<id>.e.<origin hex>.<first>.<last>
 *   (one message per envelope, its bytes as the payload, as given). The index fields are in the
 *   subject, so the stream's subject list (stream info with a subjects filter) is the index:
 *   ranges read it, get lists one origin's subjects and fetches each by subject, and the
 *   duplicate check asks whether tsync.<id>.e.<origin>.<first>.* holds a message (one lookup per
 *   origin of a put: that subject when the put has one envelope of the origin, else the
 *   origin's list tsync.<id>.e.<origin>.*.*). Two relays
 *   storing the same envelope at the same moment both pass that check: the publish carries
 *   Nats-Msg-Id <origin>.<first>, and JetStream's duplicate window keeps one.
 * - Everything else lives in one KV bucket, tsync_relay: shop.<admin hex> (a JSON record: id,
 *   shop id, quota, expiry, bytes, envelopes, revocations), id.<n> (the admin key of shop n),
 *   ids (the last id given), rev.<n>.<device hex> (a revocation record, the first kept),
 *   counters, and vb.<n>.<backup hex> (a committed backup). Every change of a shared value is a
 *   compare-and-set on the entry's revision, retried on a conflict, so two relays never lose
 *   each other's updates. The record last read or written is kept with its revision, so the
 *   reservation of a put (which follows the relay's read of the record) is one compare-and-set
 *   when no one else wrote the record in between.
 * - Quota: put reserves the new bytes in the shop record (CAS, refused past the quota) before
 *   publishing, and gives back what turned out to be a duplicate or was not published. The
 *   envelopes of a put are published together (js_PublishMsgAsync) and put waits once for
 *   all their acks (js_PublishAsyncComplete) before it returns, so the relay acknowledges only
 *   what JetStream acknowledged; one without an answer is looked up by its subject. Unlike
 *   SQLite, a put that fails half way (JetStream unreachable) may leave some envelopes stored and
 *   counted; the till's retry finds them as duplicates.
 * - The vault: a chunk is stored in the shop's stream as 1..n parts, subjects
 *   tsync.<id>.v.<backup hex>.<index>.<len>.<chunk hash hex>.<part>.<nparts>. Parts, because a
 *   NATS message (headers and payload) must fit the server's max_payload, 1 MiB by default: a
 *   1 MiB chunk does not fit one message there, so each part is max_payload less 4 KiB of
 *   room for headers (two parts per chunk by default, one on a server with a bigger
 *   max_payload). A chunk is held when all its parts are; its length and hash are in the
 *   subject, so have, the duplicate check and the byte count of a delete read the subject list
 *   only. The bytes count in the shop record (reserved before the first part is published,
 *   given back when the chunk is replaced or deleted), so the quota covers unfinished uploads as
 *   in the SQLite store. Commit reads every part in order and re-hashes the whole file, then
 *   creates vb.<n>.<backup hex> (KV create: a second commit of another description sees the
 *   first); list reads the KV stream's subjects under $KV.tsync_relay.vb.<n>.*; delete purges
 *   the record's subject (no delete marker left) and the backup's chunk subjects.
 * - Replicas: 3 when the client knows of 3 or more servers (the URL list and what the cluster
 *   announces), else as many as it knows.
 * - Pushes across relays (tsync__rstore_feed): each relay subscribes to the envelope subjects of
 *   the shops it serves; every published envelope carries Tsync-Relay (this process's random
 *   instance id) so a relay skips what it published itself (it pushed that already).
 * - The process keeps only caches of immutable facts (the admin key of shop n).
 */
#ifndef TSYNC_STORE_RELAY_STORE_NATS_INT_H
#define TSYNC_STORE_RELAY_STORE_NATS_INT_H

#include <nats/nats.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "store/relay_store.h"
#include "util/util.h"

#define TSYNC__NATS_BUCKET "tsync_relay"
#define TSYNC__NATS_CAS    200 /* compare-and-set tries before giving up */
#define TSYNC__NATS_SUBJ   160
#define TSYNC__NATS_OHEX   (TSYNC__SITE_BYTES * 2)

typedef struct {
    int64_t id;
    char admin[65];
} tsync__nats_idmap;

typedef struct {
    int64_t shop;
    natsSubscription *sub;
} tsync__nats_feed_sub;

typedef struct {
    tsync__rstore base;
    tsync__rstore_feed feed;
    natsConnection *nc;
    jsCtx *js;
    kvStore *kv;
    int replicas;
    size_t part_max; /* the largest vault part one message carries */
    char url[512];
    char instance[33];
    tsync__nats_idmap *ids;
    uint32_t nids, capids;
    tsync__nats_feed_sub *subs;
    uint32_t nsubs, capsubs;
    struct {
        char name[64];
        int64_t last;
    } sets[64];
    uint32_t nsets;
    uint64_t cas_rev; /* the revision the last successful tsync__nats_kv_cas wrote */
    /* The shop record last read or written (shop, shop_update): shop_update's first
     * compare-and-set tries it without reading the record again; a conflict re-reads. */
    struct {
        char admin[65];
        uint64_t rev;
        tsync__rshop o;
    } shop_cache;
    /* The envelopes of the put in progress (relay_store_nats_env.c): js_PublishMsgAsync's ack
     * handler runs on a nats.c thread and marks msgs[i] (cleared) in state[i] under mu. */
    struct {
        pthread_mutex_t mu;
        natsMsg **msgs;
        int *state;
        uint32_t n;
    } pub;
} tsync__nx;

/* ---- relay_store_nats.c: errors, KV, streams */

/* TSYNC_EIO naming what failed and nats.c's last error. */
int tsync__nats_err(tsync__nx *s, const char *what, natsStatus st);
/* 0 with *e (the caller destroys it), TSYNC_ENOTFOUND, or TSYNC_EIO. */
int tsync__nats_kv_get(tsync__nx *s, const char *key, kvEntry **e);
/* Writes value at key if its revision is still rev (0: the key must not exist). 0, 1 when
 * someone else wrote it first (re-read and retry), or TSYNC_EIO. */
int tsync__nats_kv_cas(tsync__nx *s, const char *key, const void *v, size_t len, uint64_t rev);
void tsync__nats_hex(char *out, const uint8_t *p, size_t n);
/* 0 when h is exactly n bytes in hex, else -1. */
int tsync__nats_unhex(uint8_t *out, size_t n, const char *h);
void tsync__nats_stream_name(char *out, size_t n, int64_t id);
/* Creates shop id's stream when missing. */
int tsync__nats_stream_ensure(tsync__nx *s, int64_t id);
typedef int (*tsync__nats_subj_fn)(void *ctx, const char *subject);
/* The subjects of stream name (of shop id) matching filter, through fn; a missing stream has
 * none. */
int tsync__nats_stream_subjects(tsync__nx *s, const char *name, const char *filter,
                                tsync__nats_subj_fn fn, void *ctx);
int tsync__nats_subjects(tsync__nx *s, int64_t id, const char *filter, tsync__nats_subj_fn fn,
                         void *ctx);
/* Removes every message of stream name on subject filter. */
int tsync__nats_purge(tsync__nx *s, const char *name, const char *filter);
/* Array v of *cap elements of size bytes, n used, with room for one more (doubling from 64):
 * v itself, or the array moved, or NULL (TSYNC_ENOMEM set; v is still the caller's). */
void *tsync__nats_grow(void *v, size_t *cap, size_t n, size_t size);
/* A tsync__nats_subj_fn counting into *(int *)ctx. */
int tsync__nats_count_one(void *ctx, const char *subj);

/* ---- relay_store_nats_kv.c: shop records, ids, revocations, counters */

/* Changes the record of admin hex by fn under compare-and-set: fn returns 0 (write), 1 (leave
 * it as it is: done) or an error, which update returns. */
typedef int (*tsync__nats_shop_fn)(tsync__rshop *o, void *ctx);
int tsync__nats_shop_update(tsync__nx *s, const char *admin, tsync__nats_shop_fn fn, void *ctx);
/* The admin key (hex) of shop id: cached, else from id.<n>. */
int tsync__nats_admin_of(tsync__nx *s, int64_t id, char out[65]);

/* Adds bytes and envelopes (negative: gives back) to a shop record; TSYNC_EFULL when positive
 * bytes would pass quota (a tsync__nats_shop_fn). */
typedef struct {
    uint64_t quota;
    int64_t bytes, envelopes;
} tsync__nats_reserve_ctx;
int tsync__nats_reserve_fn(tsync__rshop *o, void *ctx);

int tsync__nats_admit(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], uint64_t quota,
                      uint64_t expires, uint64_t now);
int tsync__nats_shop(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], tsync__rshop *out);
int tsync__nats_bind(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__RELAY_SHOP_BYTES]);
int tsync__nats_revoke(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES],
                       const uint8_t *rec, size_t len);
int tsync__nats_revoked(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES]);
int tsync__nats_count(tsync__rstore *b, const char *name, int64_t delta, int set);
int tsync__nats_stats(tsync__rstore *b, tsync__rstore_shop_fn fn, void *ctx,
                      int (*cfn)(void *ctx, const char *name, int64_t n));

/* ---- relay_store_nats_env.c: envelopes and the feed */

/* The jsCtx's async publish ack handler (closure: the tsync__nx). */
void tsync__nats_on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure);

int tsync__nats_put(tsync__rstore *b, int64_t shop, uint64_t quota, const tsync__renv *envs,
                    uint32_t n, uint64_t *stored, uint64_t *dup);
int tsync__nats_ranges(tsync__rstore *b, int64_t shop, tsync__rstore_ranges_fn fn, void *ctx);
int tsync__nats_get(tsync__rstore *b, int64_t shop, const uint8_t origin[TSYNC__SITE_BYTES],
                    uint64_t from, tsync__rstore_env_fn fn, void *ctx);
int tsync__nats_feed_watch(tsync__rstore *b, int64_t shop, int on);
int tsync__nats_feed_next(tsync__rstore *b, tsync__rstore_feed_fn fn, void *ctx);

/* ---- relay_store_nats_vault.c: backups in chunks */

int tsync__nats_vault_have(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                           tsync__rstore_idx_fn fn, void *ctx);
int tsync__nats_vault_put(tsync__rstore *b, int64_t shop, uint64_t quota,
                          const uint8_t id[TSYNC__VAULT_ID_BYTES], uint64_t index,
                          const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes,
                          size_t len, int *dup);
int tsync__nats_vault_commit(tsync__rstore *b, int64_t shop, const tsync__rvbackup *v);
int tsync__nats_vault_list(tsync__rstore *b, int64_t shop, tsync__rstore_vb_fn fn, void *ctx);
int tsync__nats_vault_get(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                          uint64_t index, tsync__rstore_chunk_fn fn, void *ctx);
int tsync__nats_vault_del(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                          uint64_t *chunks);

#endif
