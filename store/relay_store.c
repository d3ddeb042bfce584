/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store.c — the SQLite implementation of the relay's store (store/relay_store.h): one
 * database DIR/relay.db in WAL mode, so `tillsync relay status` reads it while the relay runs.
 * Envelope bytes are stored as given (a BLOB each); the shop's byte and envelope counts are kept
 * in its row, updated in put's transaction, so the quota check never sums the envelopes.
 */
#include "store/relay_store.h"

#include <sodium.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/util.h"

typedef struct {
    tsync__rstore base;
    sqlite3 *db;
    char path[4096];
} sq;

static int dberr(sq *s, const char *what)
{
    return tsync__err(TSYNC_EIO, "relay store %s: %s: %s", s->path, what, sqlite3_errmsg(s->db));
}

static int exec(sq *s, const char *sql)
{
    return sqlite3_exec(s->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : dberr(s, sql);
}

static int prep(sq *s, const char *sql, sqlite3_stmt **st)
{
    return sqlite3_prepare_v2(s->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : dberr(s, "prepare");
}

/* Runs sql once with its parameters bound in order by types: 'I' an sqlite3_int64, 'B' a blob
 * (pointer, then int length), 'T' a text; 0, or the error naming what. */
static int run(sq *s, const char *what, const char *sql, const char *types, ...)
{
    sqlite3_stmt *st;
    int rc = prep(s, sql, &st);
    if (rc) return rc;
    va_list ap;
    va_start(ap, types);
    for (int i = 1; types[i - 1]; i++) {
        if (types[i - 1] == 'I') {
            sqlite3_bind_int64(st, i, va_arg(ap, sqlite3_int64));
        } else if (types[i - 1] == 'B') {
            const void *p = va_arg(ap, const void *);
            sqlite3_bind_blob(st, i, p, va_arg(ap, int), SQLITE_STATIC);
        } else {
            sqlite3_bind_text(st, i, va_arg(ap, const char *), -1, SQLITE_STATIC);
        }
    }
    va_end(ap);
    rc = sqlite3_step(st) == SQLITE_DONE ? 0 : dberr(s, what);
    sqlite3_finalize(st);
    return rc;
}

static const char SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS shops(id INTEGER PRIMARY KEY, admin_pk BLOB NOT NULL UNIQUE,"
    " shop_id BLOB, quota_bytes INTEGER NOT NULL, expires_ms INTEGER NOT NULL,"
    " admitted_ms INTEGER NOT NULL, bytes INTEGER NOT NULL DEFAULT 0,"
    " envelopes INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS envelopes(shop INTEGER NOT NULL, origin BLOB NOT NULL,"
    " first_seq INTEGER NOT NULL, last_seq INTEGER NOT NULL, bytes BLOB NOT NULL,"
    " UNIQUE(shop, origin, first_seq));"
    "CREATE TABLE IF NOT EXISTS revocations(shop INTEGER NOT NULL, device_pk BLOB NOT NULL,"
    " rec BLOB NOT NULL, PRIMARY KEY(shop, device_pk));"
    "CREATE TABLE IF NOT EXISTS counters(name TEXT PRIMARY KEY, n INTEGER NOT NULL);"
    "PRAGMA user_version = 1;";

static void row_shop(sqlite3_stmt *st, tsync__rshop *o)
{
    memset(o, 0, sizeof *o);
    o->id = sqlite3_column_int64(st, 0);
    if (sqlite3_column_bytes(st, 1) == TSYNC__PK_BYTES)
        memcpy(o->admin_pk, sqlite3_column_blob(st, 1), TSYNC__PK_BYTES);
    if (sqlite3_column_bytes(st, 2) == TSYNC__RELAY_SHOP_BYTES) {
        o->has_shop_id = 1;
        memcpy(o->shop_id, sqlite3_column_blob(st, 2), TSYNC__RELAY_SHOP_BYTES);
    }
    o->quota_bytes = (uint64_t)sqlite3_column_int64(st, 3);
    o->expires_ms = (uint64_t)sqlite3_column_int64(st, 4);
    o->admitted_ms = (uint64_t)sqlite3_column_int64(st, 5);
    o->bytes = (uint64_t)sqlite3_column_int64(st, 6);
    o->envelopes = (uint64_t)sqlite3_column_int64(st, 7);
    o->revocations = (uint64_t)sqlite3_column_int64(st, 8);
}

#define SHOP_COLS                                                                                  \
    "id, admin_pk, shop_id, quota_bytes, expires_ms, admitted_ms, bytes, envelopes,"               \
    " (SELECT count(*) FROM revocations r WHERE r.shop = shops.id)"

static int op_admit(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], uint64_t quota,
                    uint64_t expires, uint64_t now)
{
    return run((sq *)b, "admit",
               "INSERT INTO shops(admin_pk, quota_bytes, expires_ms, admitted_ms) VALUES"
               " (?1, ?2, ?3, ?4) ON CONFLICT(admin_pk) DO UPDATE SET quota_bytes = ?2,"
               " expires_ms = ?3",
               "BIII", pk, (int)TSYNC__PK_BYTES, (sqlite3_int64)quota, (sqlite3_int64)expires,
               (sqlite3_int64)now);
}

static int op_shop(tsync__rstore *b, const uint8_t pk[TSYNC__PK_BYTES], tsync__rshop *out)
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT " SHOP_COLS " FROM shops WHERE admin_pk = ?", &st);
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW)
        row_shop(st, out);
    else
        rc = r == SQLITE_DONE ? TSYNC_ENOTFOUND : dberr(s, "shop");
    sqlite3_finalize(st);
    return rc;
}

static int op_bind(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__RELAY_SHOP_BYTES])
{
    return run((sq *)b, "bind shop id",
               "UPDATE shops SET shop_id = ? WHERE id = ? AND shop_id IS NULL", "BI", id,
               (int)TSYNC__RELAY_SHOP_BYTES, (sqlite3_int64)shop);
}

static int op_put(tsync__rstore *b, int64_t shop, uint64_t quota, const tsync__renv *envs,
                  uint32_t n, uint64_t *stored, uint64_t *dup)
{
    sq *s = (sq *)b;
    *stored = *dup = 0;
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) return rc;
    sqlite3_stmt *ins = NULL, *cur = NULL, *upd = NULL;
    uint64_t added = 0;
    rc = prep(s,
              "INSERT INTO envelopes(shop, origin, first_seq, last_seq, bytes) VALUES"
              " (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
              &ins);
    if (!rc) rc = prep(s, "SELECT bytes FROM shops WHERE id = ?", &cur);
    if (!rc)
        rc = prep(s, "UPDATE shops SET bytes = bytes + ?, envelopes = envelopes + ? WHERE id = ?",
                  &upd);
    for (uint32_t i = 0; !rc && i < n; i++) {
        const tsync__renv *e = &envs[i];
        sqlite3_reset(ins);
        sqlite3_bind_int64(ins, 1, shop);
        sqlite3_bind_blob(ins, 2, e->origin, TSYNC__SITE_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(ins, 3, (sqlite3_int64)e->first_seq);
        sqlite3_bind_int64(ins, 4, (sqlite3_int64)e->last_seq);
        sqlite3_bind_blob(ins, 5, e->bytes, (int)e->len, SQLITE_STATIC);
        if (sqlite3_step(ins) != SQLITE_DONE) {
            rc = dberr(s, "put");
            break;
        }
        if (sqlite3_changes(s->db) == 1) {
            (*stored)++;
            added += e->len;
        } else {
            (*dup)++;
        }
    }
    if (!rc) {
        sqlite3_bind_int64(cur, 1, shop);
        uint64_t have =
            sqlite3_step(cur) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(cur, 0) : 0;
        if (added > 0 && have + added > quota) {
            rc = tsync__err(
                TSYNC_EFULL, "quota: %llu bytes stored, %llu more would pass the quota of %llu",
                (unsigned long long)have, (unsigned long long)added, (unsigned long long)quota);
        } else {
            sqlite3_bind_int64(upd, 1, (sqlite3_int64)added);
            sqlite3_bind_int64(upd, 2, (sqlite3_int64)*stored);
            sqlite3_bind_int64(upd, 3, shop);
            if (sqlite3_step(upd) != SQLITE_DONE) rc = dberr(s, "put");
        }
    }
    sqlite3_finalize(ins);
    sqlite3_finalize(cur);
    sqlite3_finalize(upd);
    if (rc) {
        exec(s, "ROLLBACK");
        *stored = 0;
        return rc;
    }
    return exec(s, "COMMIT");
}

static int op_ranges(tsync__rstore *b, int64_t shop, tsync__rstore_ranges_fn fn, void *ctx)
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT origin, first_seq, last_seq FROM envelopes WHERE shop = ?"
                  " ORDER BY origin, first_seq",
                  &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    uint8_t origin[TSYNC__SITE_BYTES];
    tsync__rrange *rg = NULL;
    uint32_t n = 0, cap = 0;
    int r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        const void *o = sqlite3_column_blob(st, 0);
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        uint64_t f = (uint64_t)sqlite3_column_int64(st, 1),
                 l = (uint64_t)sqlite3_column_int64(st, 2);
        if (n > 0 && memcmp(o, origin, TSYNC__SITE_BYTES) != 0) {
            rc = fn(ctx, origin, rg, n);
            n = 0;
        }
        if (rc) break;
        memcpy(origin, o, TSYNC__SITE_BYTES);
        if (n > 0 && f <= rg[n - 1].last + 1) {
            if (l > rg[n - 1].last) rg[n - 1].last = l;
            continue;
        }
        if (n == cap) {
            uint32_t nc = cap ? cap * 2 : 16;
            tsync__rrange *g = realloc(rg, nc * sizeof *g);
            if (!g) {
                rc = tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
                break;
            }
            rg = g;
            cap = nc;
        }
        rg[n++] = (tsync__rrange){f, l};
    }
    if (!rc && r != SQLITE_DONE) rc = dberr(s, "ranges");
    if (!rc && n > 0) rc = fn(ctx, origin, rg, n);
    free(rg);
    sqlite3_finalize(st);
    return rc;
}

static int op_get(tsync__rstore *b, int64_t shop, const uint8_t origin[TSYNC__SITE_BYTES],
                  uint64_t from, tsync__rstore_env_fn fn, void *ctx)
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT first_seq, last_seq, bytes FROM envelopes WHERE shop = ? AND origin = ?"
                  " AND last_seq >= ? ORDER BY first_seq",
                  &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, origin, TSYNC__SITE_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)from);
    int r;
    while ((r = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__renv e;
        memcpy(e.origin, origin, TSYNC__SITE_BYTES);
        e.first_seq = (uint64_t)sqlite3_column_int64(st, 0);
        e.last_seq = (uint64_t)sqlite3_column_int64(st, 1);
        e.bytes = sqlite3_column_blob(st, 2);
        e.len = (size_t)sqlite3_column_bytes(st, 2);
        rc = fn(ctx, &e);
        if (rc) break;
    }
    if (rc == 1)
        rc = 0;
    else if (!rc && r != SQLITE_DONE)
        rc = dberr(s, "get");
    sqlite3_finalize(st);
    return rc;
}

static int op_revoke(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES],
                     const uint8_t *rec, size_t len)
{
    return run((sq *)b, "revoke",
               "INSERT OR IGNORE INTO revocations(shop, device_pk, rec) VALUES (?, ?, ?)", "IBB",
               (sqlite3_int64)shop, pk, (int)TSYNC__PK_BYTES, rec, (int)len);
}

static int op_revoked(tsync__rstore *b, int64_t shop, const uint8_t pk[TSYNC__PK_BYTES])
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT 1 FROM revocations WHERE shop = ? AND device_pk = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    int r = sqlite3_step(st);
    rc = r == SQLITE_ROW ? 1 : r == SQLITE_DONE ? 0 : dberr(s, "revoked");
    sqlite3_finalize(st);
    return rc;
}

static int op_count(tsync__rstore *b, const char *name, int64_t delta, int set)
{
    return run((sq *)b, "count",
               set ? "INSERT INTO counters(name, n) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE"
                     " SET n = ?2"
                   : "INSERT INTO counters(name, n) VALUES (?1, ?2) ON CONFLICT(name) DO UPDATE"
                     " SET n = n + ?2",
               "TI", name, (sqlite3_int64)delta);
}

static int op_stats(tsync__rstore *b, tsync__rstore_shop_fn fn, void *ctx,
                    int (*cfn)(void *ctx, const char *name, int64_t n))
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT " SHOP_COLS " FROM shops ORDER BY id", &st);
    if (rc) return rc;
    int r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__rshop o;
        row_shop(st, &o);
        rc = fn(ctx, &o);
    }
    sqlite3_finalize(st);
    if (rc) return rc;
    rc = prep(s, "SELECT name, n FROM counters ORDER BY name", &st);
    if (rc) return rc;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW)
        rc = cfn(ctx, (const char *)sqlite3_column_text(st, 0), sqlite3_column_int64(st, 1));
    sqlite3_finalize(st);
    return rc;
}

static void op_close(tsync__rstore *b)
{
    sq *s = (sq *)b;
    if (!s) return;
    sqlite3_close(s->db);
    free(s);
}

/* ---------------------------------------------------------------- the vault
 * Backups in chunks (docs/RELAY.md, "The vault"). A chunk's bytes count in its shop's `bytes`
 * from the moment it is put, committed or not, so the quota covers uploads left unfinished. */

static const char VAULT_SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS vault_backups(shop INTEGER NOT NULL, id BLOB NOT NULL,"
    " nchunks INTEGER NOT NULL, size INTEGER NOT NULL, hash BLOB NOT NULL,"
    " created_ms INTEGER NOT NULL, origin BLOB NOT NULL, epoch INTEGER NOT NULL,"
    " committed_ms INTEGER NOT NULL, PRIMARY KEY(shop, id));"
    "CREATE TABLE IF NOT EXISTS vault_chunks(shop INTEGER NOT NULL, id BLOB NOT NULL,"
    " idx INTEGER NOT NULL, hash BLOB NOT NULL, bytes BLOB NOT NULL, PRIMARY KEY(shop, id, idx));";

static int op_vault_have(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                         tsync__rstore_idx_fn fn, void *ctx)
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    int rc = prep(s, "SELECT idx FROM vault_chunks WHERE shop = ? AND id = ? ORDER BY idx", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, id, TSYNC__VAULT_ID_BYTES, SQLITE_STATIC);
    int r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW)
        rc = fn(ctx, (uint64_t)sqlite3_column_int64(st, 0));
    if (!rc && r != SQLITE_DONE) rc = dberr(s, "vault have");
    sqlite3_finalize(st);
    return rc;
}

/* 1 when backup id of shop is committed, 0 when not, or an error. */
static int committed(sq *s, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                     tsync__rvbackup *out)
{
    sqlite3_stmt *st;
    int rc = prep(s,
                  "SELECT nchunks, size, hash, created_ms, origin, epoch FROM vault_backups"
                  " WHERE shop = ? AND id = ?",
                  &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, id, TSYNC__VAULT_ID_BYTES, SQLITE_STATIC);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW) {
        rc = 1;
        if (out) {
            memset(out, 0, sizeof *out);
            memcpy(out->id, id, TSYNC__VAULT_ID_BYTES);
            out->nchunks = (uint64_t)sqlite3_column_int64(st, 0);
            out->size = (uint64_t)sqlite3_column_int64(st, 1);
            if (sqlite3_column_bytes(st, 2) == TSYNC__VAULT_HASH_BYTES)
                memcpy(out->hash, sqlite3_column_blob(st, 2), TSYNC__VAULT_HASH_BYTES);
            out->created_ms = (uint64_t)sqlite3_column_int64(st, 3);
            if (sqlite3_column_bytes(st, 4) == TSYNC__SITE_BYTES)
                memcpy(out->origin, sqlite3_column_blob(st, 4), TSYNC__SITE_BYTES);
            out->epoch = (uint64_t)sqlite3_column_int64(st, 5);
        }
    } else if (r != SQLITE_DONE) {
        rc = dberr(s, "vault backup");
    }
    sqlite3_finalize(st);
    return rc;
}

static int op_vault_put(tsync__rstore *b, int64_t shop, uint64_t quota,
                        const uint8_t id[TSYNC__VAULT_ID_BYTES], uint64_t index,
                        const uint8_t hash[TSYNC__VAULT_HASH_BYTES], const uint8_t *bytes,
                        size_t len, int *dup)
{
    sq *s = (sq *)b;
    *dup = 0;
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) return rc;
    sqlite3_stmt *old = NULL, *cur = NULL;
    rc = prep(s, "SELECT hash FROM vault_chunks WHERE shop = ? AND id = ? AND idx = ?", &old);
    if (!rc) {
        sqlite3_bind_int64(old, 1, shop);
        sqlite3_bind_blob(old, 2, id, TSYNC__VAULT_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(old, 3, (sqlite3_int64)index);
        int r = sqlite3_step(old);
        if (r == SQLITE_ROW) {
            int same = sqlite3_column_bytes(old, 0) == TSYNC__VAULT_HASH_BYTES &&
                       !memcmp(sqlite3_column_blob(old, 0), hash, TSYNC__VAULT_HASH_BYTES);
            int c = committed(s, shop, id, NULL);
            if (c < 0)
                rc = c;
            else if (same || !c)
                *dup = same;
            else
                rc = tsync__err(TSYNC_EEXISTS,
                                "vault: chunk %llu of a committed backup is another chunk",
                                (unsigned long long)index);
            /* An uncommitted chunk put again with other bytes replaces the old one. */
            if (!rc && !same && !c)
                rc = run(s, "vault put",
                         "UPDATE shops SET bytes = bytes - (SELECT length(bytes) FROM"
                         " vault_chunks WHERE shop = ?1 AND id = ?2 AND idx = ?3) WHERE id = ?1",
                         "IBI", (sqlite3_int64)shop, id, (int)TSYNC__VAULT_ID_BYTES,
                         (sqlite3_int64)index);
            if (!rc && !same && !c)
                rc = run(s, "vault put",
                         "DELETE FROM vault_chunks WHERE shop = ? AND id = ? AND idx = ?", "IBI",
                         (sqlite3_int64)shop, id, (int)TSYNC__VAULT_ID_BYTES, (sqlite3_int64)index);
        } else if (r != SQLITE_DONE) {
            rc = dberr(s, "vault put");
        }
    }
    if (!rc && !*dup) {
        rc = prep(s, "SELECT bytes FROM shops WHERE id = ?", &cur);
        uint64_t have = 0;
        if (!rc) {
            sqlite3_bind_int64(cur, 1, shop);
            have = sqlite3_step(cur) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(cur, 0) : 0;
        }
        if (!rc && have + len > quota)
            rc = tsync__err(
                TSYNC_EFULL, "quota: %llu bytes stored, %llu more would pass the quota of %llu",
                (unsigned long long)have, (unsigned long long)len, (unsigned long long)quota);
        if (!rc)
            rc = run(s, "vault put",
                     "INSERT INTO vault_chunks(shop, id, idx, hash, bytes) VALUES (?,?,?,?,?)",
                     "IBIBB", (sqlite3_int64)shop, id, (int)TSYNC__VAULT_ID_BYTES,
                     (sqlite3_int64)index, hash, (int)TSYNC__VAULT_HASH_BYTES, bytes, (int)len);
        if (!rc)
            rc = run(s, "vault put", "UPDATE shops SET bytes = bytes + ? WHERE id = ?", "II",
                     (sqlite3_int64)len, (sqlite3_int64)shop);
    }
    sqlite3_finalize(old);
    sqlite3_finalize(cur);
    if (rc) {
        exec(s, "ROLLBACK");
        return rc;
    }
    return exec(s, "COMMIT");
}

void tsync__rvcheck_init(tsync__rvcheck *c, const tsync__rvbackup *v)
{
    memset(c, 0, sizeof *c);
    c->v = v;
    tsync__hex(v->id, TSYNC__VAULT_ID_BYTES, c->idh);
    crypto_generichash_init(&c->h, NULL, 0, TSYNC__VAULT_HASH_BYTES);
}

int tsync__rvcheck_chunk(tsync__rvcheck *c, uint64_t index, uint64_t len)
{
    if (index != c->next)
        return tsync__err(TSYNC_ENOTFOUND, "backup %s: chunk %llu is missing", c->idh,
                          (unsigned long long)c->next);
    if (index >= c->v->nchunks)
        return tsync__err(TSYNC_ECORRUPT, "backup %s: chunk %llu is beyond its %llu chunks", c->idh,
                          (unsigned long long)index, (unsigned long long)c->v->nchunks);
    if (index + 1 < c->v->nchunks && len != TSYNC__VAULT_CHUNK)
        return tsync__err(TSYNC_ECORRUPT, "backup %s: chunk %llu is %llu bytes, not 1 MiB", c->idh,
                          (unsigned long long)index, (unsigned long long)len);
    c->next++;
    return 0;
}

void tsync__rvcheck_bytes(tsync__rvcheck *c, const uint8_t *p, size_t n)
{
    crypto_generichash_update(&c->h, p, n);
    c->size += n;
}

int tsync__rvcheck_end(tsync__rvcheck *c)
{
    if (c->next < c->v->nchunks)
        return tsync__err(TSYNC_ENOTFOUND, "backup %s: chunk %llu is missing", c->idh,
                          (unsigned long long)c->next);
    uint8_t got[TSYNC__VAULT_HASH_BYTES];
    crypto_generichash_final(&c->h, got, sizeof got);
    if (c->size != c->v->size || sodium_memcmp(got, c->v->hash, sizeof got) != 0)
        return tsync__err(TSYNC_ECORRUPT,
                          "backup %s: the %llu bytes held do not hash to the file hash given",
                          c->idh, (unsigned long long)c->size);
    return 0;
}

int tsync__rvcheck_again(const tsync__rvbackup *had, const tsync__rvbackup *v)
{
    if (had->nchunks == v->nchunks && had->size == v->size &&
        !memcmp(had->hash, v->hash, TSYNC__VAULT_HASH_BYTES))
        return 0;
    char idh[2 * TSYNC__VAULT_ID_BYTES + 1];
    tsync__hex(v->id, TSYNC__VAULT_ID_BYTES, idh);
    return tsync__err(TSYNC_EEXISTS, "backup %s is committed already, with another hash", idh);
}

static int op_vault_commit(tsync__rstore *b, int64_t shop, const tsync__rvbackup *v)
{
    sq *s = (sq *)b;
    tsync__rvbackup had;
    int rc = committed(s, shop, v->id, &had);
    if (rc < 0) return rc;
    if (rc == 1) return tsync__rvcheck_again(&had, v);
    /* Read the chunks in order, one at a time: memory stays at one chunk whatever the size. */
    sqlite3_stmt *st;
    rc = prep(s, "SELECT idx, bytes FROM vault_chunks WHERE shop = ? AND id = ? ORDER BY idx", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, v->id, TSYNC__VAULT_ID_BYTES, SQLITE_STATIC);
    tsync__rvcheck c;
    tsync__rvcheck_init(&c, v);
    int r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        size_t n = (size_t)sqlite3_column_bytes(st, 1);
        rc = tsync__rvcheck_chunk(&c, (uint64_t)sqlite3_column_int64(st, 0), n);
        if (!rc) tsync__rvcheck_bytes(&c, sqlite3_column_blob(st, 1), n);
    }
    if (!rc && r != SQLITE_DONE) rc = dberr(s, "vault commit");
    sqlite3_finalize(st);
    if (!rc) rc = tsync__rvcheck_end(&c);
    if (rc) return rc;
    return run(s, "vault commit",
               "INSERT INTO vault_backups(shop, id, nchunks, size, hash, created_ms, origin, epoch,"
               " committed_ms) VALUES (?,?,?,?,?,?,?,?,?)",
               "IBIIBIBII", (sqlite3_int64)shop, v->id, (int)TSYNC__VAULT_ID_BYTES,
               (sqlite3_int64)v->nchunks, (sqlite3_int64)v->size, v->hash,
               (int)TSYNC__VAULT_HASH_BYTES, (sqlite3_int64)v->created_ms, v->origin,
               (int)TSYNC__SITE_BYTES, (sqlite3_int64)v->epoch, (sqlite3_int64)tsync__wall_ms());
}

static int op_vault_list(tsync__rstore *b, int64_t shop, tsync__rstore_vb_fn fn, void *ctx)
{
    sq *s = (sq *)b;
    sqlite3_stmt *st;
    char sql[256];
    snprintf(sql, sizeof sql,
             "SELECT id FROM (SELECT id, created_ms FROM vault_backups WHERE shop = ?"
             " ORDER BY created_ms DESC, id DESC LIMIT %u) ORDER BY created_ms, id",
             TSYNC__VAULT_LIST_MAX);
    int rc = prep(s, sql, &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    int r;
    while (!rc && (r = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__rvbackup v;
        if (sqlite3_column_bytes(st, 0) != TSYNC__VAULT_ID_BYTES) continue;
        rc = committed(s, shop, sqlite3_column_blob(st, 0), &v);
        if (rc == 1) rc = fn(ctx, &v);
    }
    if (!rc && r != SQLITE_DONE) rc = dberr(s, "vault list");
    sqlite3_finalize(st);
    return rc;
}

static int op_vault_get(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                        uint64_t index, tsync__rstore_chunk_fn fn, void *ctx)
{
    sq *s = (sq *)b;
    int rc = committed(s, shop, id, NULL);
    if (rc < 0) return rc;
    char idh[2 * TSYNC__VAULT_ID_BYTES + 1];
    tsync__hex(id, TSYNC__VAULT_ID_BYTES, idh);
    if (rc == 0) return tsync__err(TSYNC_ENOTFOUND, "no committed backup %s here", idh);
    sqlite3_stmt *st;
    rc = prep(s, "SELECT hash, bytes FROM vault_chunks WHERE shop = ? AND id = ? AND idx = ?", &st);
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, shop);
    sqlite3_bind_blob(st, 2, id, TSYNC__VAULT_ID_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)index);
    int r = sqlite3_step(st);
    if (r == SQLITE_ROW && sqlite3_column_bytes(st, 0) == TSYNC__VAULT_HASH_BYTES)
        rc = fn(ctx, sqlite3_column_blob(st, 0), sqlite3_column_blob(st, 1),
                (size_t)sqlite3_column_bytes(st, 1));
    else if (r == SQLITE_ROW || r == SQLITE_DONE)
        rc = tsync__err(TSYNC_ENOTFOUND, "backup %s has no chunk %llu here", idh,
                        (unsigned long long)index);
    else
        rc = dberr(s, "vault get");
    sqlite3_finalize(st);
    return rc;
}

static int op_vault_del(tsync__rstore *b, int64_t shop, const uint8_t id[TSYNC__VAULT_ID_BYTES],
                        uint64_t *chunks)
{
    sq *s = (sq *)b;
    *chunks = 0;
    int rc = exec(s, "BEGIN IMMEDIATE");
    if (rc) return rc;
    static const char *const sql[] = {
        "UPDATE shops SET bytes = bytes - (SELECT coalesce(sum(length(bytes)), 0) FROM"
        " vault_chunks WHERE shop = ?1 AND id = ?2) WHERE id = ?1",
        "DELETE FROM vault_chunks WHERE shop = ?1 AND id = ?2",
        "DELETE FROM vault_backups WHERE shop = ?1 AND id = ?2"};
    int gone = 0;
    for (int i = 0; !rc && i < 3; i++) {
        rc = run(s, "vault delete", sql[i], "IB", (sqlite3_int64)shop, id,
                 (int)TSYNC__VAULT_ID_BYTES);
        if (!rc && i == 1) *chunks = (uint64_t)sqlite3_changes(s->db);
        if (!rc && i > 0) gone += sqlite3_changes(s->db);
    }
    if (!rc && !gone) {
        char idh[2 * TSYNC__VAULT_ID_BYTES + 1];
        tsync__hex(id, TSYNC__VAULT_ID_BYTES, idh);
        rc = tsync__err(TSYNC_ENOTFOUND, "no backup %s here", idh);
    }
    if (rc) {
        exec(s, "ROLLBACK");
        *chunks = 0;
        return rc;
    }
    return exec(s, "COMMIT");
}

static const tsync__rstore_ops OPS = {op_admit, op_shop, op_bind, op_put, op_ranges, op_get,
                                      op_revoke, op_revoked, op_count, op_stats, op_close,
                                      /* the vault */
                                      op_vault_have, op_vault_put, op_vault_commit, op_vault_list,
                                      op_vault_get, op_vault_del};

int tsync__rstore_sqlite_open(tsync__rstore **out, const char *dir, int create, int readonly)
{
    *out = NULL;
    sq *s = calloc(1, sizeof *s);
    if (!s) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    s->base.ops = &OPS;
    snprintf(s->path, sizeof s->path, "%s/relay.db", dir);
    int flags =
        readonly ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0);
    int r = sqlite3_open_v2(s->path, &s->db, flags | SQLITE_OPEN_NOMUTEX, NULL);
    if (r != SQLITE_OK) {
        int rc = r == SQLITE_CANTOPEN && !create
                     ? tsync__err(TSYNC_ENOTFOUND, "%s: no relay here (tillsync relay init %s)",
                                  s->path, dir)
                     : dberr(s, "open");
        op_close(&s->base);
        return rc;
    }
    sqlite3_busy_timeout(s->db, 5000);
    int rc = 0;
    if (!readonly) {
        rc = exec(s, "PRAGMA journal_mode = WAL");
        if (!rc) rc = exec(s, "PRAGMA synchronous = NORMAL");
        if (!rc) rc = exec(s, SCHEMA);
        if (!rc) rc = exec(s, VAULT_SCHEMA);
    }
    if (rc) {
        op_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return 0;
}

/* ---------------------------------------------------------------- choosing the store */

int tsync__rstore_open(tsync__rstore **out, const char *dir, const char *url, int create,
                       int readonly)
{
    if (url && *url) return tsync__rstore_nats_open(out, url, create || !readonly);
    return tsync__rstore_sqlite_open(out, dir, create, readonly);
}
