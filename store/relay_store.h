/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store.h — what a blind relay keeps (docs/RELAY.md, "What the relay stores"), behind
 * an interface so that another engine (JetStream) can stand in for the SQLite one: admitted shops
 * (admin key, quota, expiry), envelopes (shop, origin, seq range, opaque bytes), the shops' public
 * revocation records, and counters (sessions, refusals by reason).
 *
 * The relay server (net/relay/) calls it through the vtable only. tsync__rstore_sqlite_open is the
 * embedded default: one database DIR/relay.db in WAL mode (this is store/ because store/ is the
 * only layer that opens SQLite databases).
 *
 * Rules every implementation keeps:
 * - put is all or nothing: either every new envelope is stored and the shop's byte count grows
 *   by their sizes, or nothing is stored (quota, error). An envelope whose (origin, first_seq)
 *   the shop already holds is a duplicate: counted, not stored again.
 * - ranges are merged per origin (1..5 and 6..9 are 1..9), origins in byte order.
 * - get streams: the callback sees one envelope at a time (its bytes valid during the call) and
 *   stops the walk by returning 1; memory does not grow with what the shop holds.
 *
 * THREAD SAFETY: a store belongs to one thread.
 */
#ifndef TSYNC_STORE_RELAY_STORE_H
#define TSYNC_STORE_RELAY_STORE_H

#include <sodium.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/relay.h"

typedef struct {
    int64_t id; /* the store's handle of the shop */
    uint8_t admin_pk[TSYNC__PK_BYTES];
    int has_shop_id; /* bound by the first till admitted */
    uint8_t shop_id[TSYNC__RELAY_SHOP_BYTES];
    uint64_t quota_bytes;
    uint64_t expires_ms; /* 0: never */
    uint64_t admitted_ms;
    uint64_t bytes, envelopes, revocations;
} tsync__rshop;

/* Called per origin by ranges (ranges borrowed for the call). Non-zero stops with that code. */
typedef int (*tsync__rstore_ranges_fn)(void *ctx, const uint8_t origin[TSYNC__SITE_BYTES],
                                       const tsync__rrange *ranges, uint32_t n);
/* Called per envelope by get, in seq order. 1 stops the walk (not an error), other non-zero
 * stops with that code. */
typedef int (*tsync__rstore_env_fn)(void *ctx, const tsync__renv *e);
/* Called per chunk index by vault_have, ascending. Non-zero stops with that code. */
typedef int (*tsync__rstore_idx_fn)(void *ctx, uint64_t index);
/* Called per committed backup by vault_list, by created_ms then id. Non-zero stops. */
typedef int (*tsync__rstore_vb_fn)(void *ctx, const tsync__rvbackup *b);
/* Called once by vault_get with the chunk (bytes valid during the call) and the hash it was put
 * with. */
typedef int (*tsync__rstore_chunk_fn)(void *ctx, const uint8_t hash[TSYNC__VAULT_HASH_BYTES],
                                      const uint8_t *bytes, size_t len);

/* Called per shop by stats. */
typedef int (*tsync__rstore_shop_fn)(void *ctx, const tsync__rshop *s);

typedef struct tsync__rstore tsync__rstore;
typedef struct {
    /* Admits (or re-admits, replacing quota and expiry) the shop of admin_pk. */
    int (*admit)(tsync__rstore *st, const uint8_t admin_pk[TSYNC__PK_BYTES], uint64_t quota_bytes,
                 uint64_t expires_ms, uint64_t now_ms);
    /* The shop of admin_pk: 0, or TSYNC_ENOTFOUND. */
    int (*shop)(tsync__rstore *st, const uint8_t admin_pk[TSYNC__PK_BYTES], tsync__rshop *out);
    /* Binds the shop id of shop (once; the first till's certificate names it). */
    int (*bind_shop_id)(tsync__rstore *st, int64_t shop, const uint8_t id[TSYNC__RELAY_SHOP_BYTES]);
    /* Stores envelopes (all or nothing). TSYNC_EFULL when the new bytes would pass
     * quota_bytes (nothing stored); *stored and *dup count the envelopes. */
    int (*put)(tsync__rstore *st, int64_t shop, uint64_t quota_bytes, const tsync__renv *envs,
               uint32_t n, uint64_t *stored, uint64_t *dup);
    int (*ranges)(tsync__rstore *st, int64_t shop, tsync__rstore_ranges_fn fn, void *ctx);
    /* Envelopes of origin whose last_seq >= from_seq, by first_seq. */
    int (*get)(tsync__rstore *st, int64_t shop, const uint8_t origin[TSYNC__SITE_BYTES],
               uint64_t from_seq, tsync__rstore_env_fn fn, void *ctx);
    /* A revocation record of device_pk (kept once per device: the first). */
    int (*revoke)(tsync__rstore *st, int64_t shop, const uint8_t device_pk[TSYNC__PK_BYTES],
                  const uint8_t *rec, size_t len);
    /* 1 when a revocation of device_pk is stored for shop, 0 when not, or a negative error. */
    int (*revoked)(tsync__rstore *st, int64_t shop, const uint8_t device_pk[TSYNC__PK_BYTES]);
    /* Adds delta to the counter name ("sessions", "refused.quota"); set: sets it instead. */
    int (*count)(tsync__rstore *st, const char *name, int64_t delta, int set);
    /* Every shop, then every counter as (name, value) through cfn. */
    int (*stats)(tsync__rstore *st, tsync__rstore_shop_fn fn, void *ctx,
                 int (*cfn)(void *ctx, const char *name, int64_t n));
    void (*close)(tsync__rstore *st);

    /* ---- The vault (docs/RELAY.md, "The vault"): backups in chunks, kept apart per shop and
     * counted in the shop's bytes (so in its quota). An engine without a vault leaves these NULL
     * and the relay refuses vault messages. */
    /* The chunk indexes of backup id the shop holds (committed or not). */
    int (*vault_have)(tsync__rstore *st, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                      tsync__rstore_idx_fn fn, void *ctx);
    /* Stores chunk index of backup id (the caller checked hash against bytes). *dup: 1 when it
     * was held already (nothing written). TSYNC_EFULL past quota_bytes (nothing stored);
     * TSYNC_EEXISTS when the backup is committed and the chunk is not the one held. */
    int (*vault_put)(tsync__rstore *st, int64_t shop, uint64_t quota_bytes,
                     const uint8_t id[TSYNC__VAULT_ID_BYTES], uint64_t index,
                     const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes, size_t len,
                     int *dup);
    /* Commits b: the chunks 0..nchunks-1 must be held (TSYNC_ENOTFOUND naming the first
     * missing), no chunk beyond, every chunk but the last 1 MiB, sizes adding up to b->size and
     * the bytes in order hashing to b->hash (TSYNC_ECORRUPT otherwise; nothing changes).
     * Committing the same backup again is a no-op; another description of it is TSYNC_EEXISTS. */
    int (*vault_commit)(tsync__rstore *st, int64_t shop, const tsync__rvbackup *b);
    /* The shop's committed backups (at most TSYNC__VAULT_LIST_MAX, the newest). */
    int (*vault_list)(tsync__rstore *st, int64_t shop, tsync__rstore_vb_fn fn, void *ctx);
    /* Chunk index of committed backup id through fn. TSYNC_ENOTFOUND. */
    int (*vault_get)(tsync__rstore *st, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                     uint64_t index, tsync__rstore_chunk_fn fn, void *ctx);
    /* Deletes backup id (committed or not) and its chunks; the shop's bytes shrink. *chunks
     * receives how many chunks went. TSYNC_ENOTFOUND when the shop holds nothing of it. */
    int (*vault_del)(tsync__rstore *st, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                     uint64_t *chunks);
} tsync__rstore_ops;

/* Envelopes that other relay processes stored (a store shared by several processes: JetStream),
 * so a relay pushes them to its own sessions too. watch (on 1/0) starts or stops following
 * shop's envelopes; next calls fn per envelope that arrived since (bytes valid during the call;
 * not those this process stored itself) without waiting, and returns how many it gave. */
typedef int (*tsync__rstore_feed_fn)(void *ctx, int64_t shop, const tsync__renv *e);
typedef struct {
    int (*watch)(tsync__rstore *st, int64_t shop, int on);
    int (*next)(tsync__rstore *st, tsync__rstore_feed_fn fn, void *ctx);
} tsync__rstore_feed;

struct tsync__rstore {
    const tsync__rstore_ops *ops;
    const tsync__rstore_feed *feed; /* NULL: the store is one process's (SQLite) */
};

/* ---- vault_commit's checks, the same on every engine (store/relay_store.c): the engine reads
 * the backup's chunks in index order and calls chunk before the bytes of each, bytes with them,
 * and end after the last; each returns 0 or the error vault_commit returns (TSYNC_ENOTFOUND
 * naming the first missing chunk, TSYNC_ECORRUPT). */
typedef struct {
    const tsync__rvbackup *v;
    char idh[2 * TSYNC__VAULT_ID_BYTES + 1];
    crypto_generichash_state h;
    uint64_t next, size;
} tsync__rvcheck;

void tsync__rvcheck_init(tsync__rvcheck *c, const tsync__rvbackup *v);
int tsync__rvcheck_chunk(tsync__rvcheck *c, uint64_t index, uint64_t len);
void tsync__rvcheck_bytes(tsync__rvcheck *c, const uint8_t *p, size_t n);
int tsync__rvcheck_end(tsync__rvcheck *c);
/* When backup v is committed already as had: 0 when had describes it, else TSYNC_EEXISTS. */
int tsync__rvcheck_again(const tsync__rvbackup *had, const tsync__rvbackup *v);

/* Opens (creating when create) DIR/relay.db. readonly: for status (nothing written).
 * Errors (message set): TSYNC_ENOTFOUND (no relay.db and not create), TSYNC_EIO, TSYNC_ENOMEM. */
int tsync__rstore_sqlite_open(tsync__rstore **out, const char *dir, int create, int readonly);

/* ---------------------------------------------------------------- NATS JetStream */

/* Connects to url ("nats://HOST:PORT[,HOST:PORT...]": the servers of one JetStream cluster) and
 * binds the relay's KV bucket, creating it when create (store/relay_store_nats.c). Errors (message
 * set): TSYNC_EINVAL (not a nats:// URL), TSYNC_ENOTFOUND (no relay data there and not create),
 * TSYNC_EIO (no server reachable, JetStream off), TSYNC_ENOMEM. */
int tsync__rstore_nats_open(tsync__rstore **out, const char *url, int create);

/* The store of a relay: on JetStream when url is set (create: make the bucket when missing), else
 * DIR/relay.db (tsync__rstore_sqlite_open). */
int tsync__rstore_open(tsync__rstore **out, const char *dir, const char *url, int create,
                       int readonly);

#endif
