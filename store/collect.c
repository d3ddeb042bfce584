/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/collect.c — collecting deleted rows (their tombstone in tsync_tomb_<t> and clock entry in
 * tsync_clk_<t>) once their delete is causally stable, and the collection frontier that snapshots
 * carry (docs/DATA_MODEL.md, "Collecting tombstones and clock entries", has the proof). Over 800
 * lines: the frontier's sweep and collection share the clock-table scans and key handling here.
 *
 * Design notes
 * - Rows clocks do not say which batch deleted a row, so stability is established in two rounds.
 *   A round *marks* the deleted rows that may be collected as candidates of an epoch: the vector
 *   this replica holds then (every batch whose effect the row's clocks show is in it), with a
 *   hash of the row's clock entry. A later round collects a candidate when every certified till's
 *   acknowledgement, stored after the mark, covers the epoch, this replica holds every batch
 *   those acknowledgements name, and the row's clock entry is still the one marked (a batch that
 *   touched it since is not covered: the row is marked again, in a later epoch).
 * - Candidates: rows whose every existence entry is removed, whose counters are all zero (a
 *   re-insert after collection starts them at zero: no replica may keep an old count), of tables
 *   every certified till describes with all our columns (its last SCHEMA message; a re-insert by
 *   an older schema would leave a column to the tombstone) and with no parked change.
 * - An acknowledgement counts for a device only when it names every incarnation of that device
 *   this replica knows of: a till restored from a backup acknowledges under its new site id.
 * - A round scans or collects at most COLLECT_SLICE rows, so it holds the write lock (a node's
 *   thread) briefly: marking goes on from a cursor, one epoch per slice (the vector then covers
 *   what that slice marks). A new scan starts only once no epoch is outstanding, so a million
 *   tombstones are scanned once per collection cycle, not at every prune.
 * - The frontier (per site, the highest add clock of any row collected) goes into snapshots: an
 *   importer deletes the rows it holds that the snapshot lacks and the frontier covers.
 */
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collect_int.h"
#include "store/schema.h"
#include "store/sync.h"

#define MH_BYTES 16 /* hash of a marked clock entry */
/* Rows a round scans (mark) or collects at most: a round holds the write lock (and a node's thread)
 * for a fraction of a second, whatever the number of deleted rows. */
#define COLLECT_SLICE 20000

static int64_t one_int(tsync_store *s, const char *sql)
{
    sqlite3_stmt *st = tsync__prep(s, sql);
    if (!st) return 0;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return v;
}

static const char *COLLECT_SCHEMA =
    "CREATE TABLE IF NOT EXISTS tsync_collect_front(site BLOB PRIMARY KEY, hlc INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tsync_collect_epoch(id INTEGER PRIMARY KEY, vv BLOB NOT NULL,"
    "  gen INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tsync_collect_cand(tbl INTEGER, k BLOB, mh BLOB NOT NULL,"
    "  epoch INTEGER NOT NULL, PRIMARY KEY(tbl, k)) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tsync_collect_cand_epoch ON tsync_collect_cand(epoch);"
    "CREATE TABLE IF NOT EXISTS tsync_collect_ackgen(pk BLOB PRIMARY KEY, gen INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tsync_collect_cursor(id INTEGER PRIMARY KEY CHECK(id = 1),"
    "  tbl INTEGER NOT NULL, k BLOB NOT NULL);";

static int tables(tsync_store *s)
{
    return tsync__exec(s, COLLECT_SCHEMA);
}

/* ---------------------------------------------------------------- the frontier */

int tsync__front_load(tsync_store *s, tsync__front **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st;
    /* No table: nothing was ever collected here. */
    if (sqlite3_prepare_v2(s->db, "SELECT site, hlc FROM tsync_collect_front ORDER BY site", -1,
                           &st, NULL) != SQLITE_OK)
        return 0;
    size_t cap = 0;
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            tsync__front *nf = realloc(*out, cap * sizeof *nf);
            if (!nf) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            *out = nf;
        }
        memcpy((*out)[*n].site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        (*out)[(*n)++].hlc = (tsync__hlc)sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    if (rc) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int tsync__front_raise(tsync_store *s, const tsync__front *f, size_t n)
{
    if (n == 0) return 0;
    int rc = tables(s);
    if (rc) return rc;
    sqlite3_stmt *st = tsync__prep(s, "INSERT INTO tsync_collect_front VALUES(?1, ?2) ON CONFLICT "
                                      "(site) DO UPDATE SET hlc = max(hlc, excluded.hlc)");
    if (!st) return TSYNC_EIO;
    for (size_t i = 0; i < n && rc == 0; i++) {
        sqlite3_bind_blob(st, 1, f[i].site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)f[i].hlc);
        int x = sqlite3_step(st);
        sqlite3_reset(st);
        if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "record the collection frontier");
    }
    return rc;
}

int tsync__front_local(tsync_store *s, uint32_t nls, tsync__hlc **out)
{
    *out = NULL;
    tsync__front *f;
    size_t n;
    int rc = tsync__front_load(s, &f, &n);
    if (rc || n == 0) return rc;
    tsync__hlc *v = calloc(nls + 1, sizeof *v);
    sqlite3_stmt *st = tsync__prep(s, "SELECT idx FROM tsync_sites WHERE site = ?1");
    if (!v || !st) {
        free(f);
        free(v);
        return v ? TSYNC_EIO : tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_blob(st, 1, f[i].site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW) {
            int64_t idx = sqlite3_column_int64(st, 0);
            if (idx >= 0 && idx < (int64_t)nls) v[idx] = f[i].hlc;
        }
        sqlite3_reset(st);
    }
    free(f);
    *out = v;
    return 0;
}

/* ---------------------------------------------------------------- import's sweep */

int tsync__front_seen_open(tsync_store *s)
{
    return tsync__exec(s,
                       "DROP TABLE IF EXISTS temp.tsync_snap_seen; CREATE TEMP TABLE "
                       "tsync_snap_seen(tbl INTEGER, k BLOB, PRIMARY KEY(tbl, k)) WITHOUT ROWID");
}

void tsync__front_seen_drop(tsync_store *s)
{
    if (sqlite3_get_autocommit(s->db))
        sqlite3_exec(s->db, "DROP TABLE IF EXISTS temp.tsync_snap_seen", NULL, NULL, NULL);
}

int tsync__front_seen_add(tsync_store *s, int tbl, const uint8_t *key, uint32_t klen)
{
    sqlite3_stmt *st = tsync__prep(s, "INSERT OR IGNORE INTO temp.tsync_snap_seen VALUES(?1, ?2)");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_int(st, 1, tbl);
    sqlite3_bind_blob(st, 2, key, (int)klen, SQLITE_STATIC);
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "note a snapshot row");
}

/* Whether the row exists: some site's add above its remove. */
static int row_live(const tsync__rowmeta *m)
{
    for (size_t i = 0; i < m->nexist; i++)
        if (m->exist[i].add > m->exist[i].rmv) return 1;
    return 0;
}

/* SELECT of a table's clock entries: key columns ?.. then tsync_m; with deleted_only, only rows
 * not in the table. */
static char *clk_scan_sql(tsync_store *s, const tsync__table *t, int deleted_only)
{
    sqlite3_str *q = sqlite3_str_new(s->db);
    sqlite3_str_appendall(q, "SELECT ");
    for (int i = 0; i < t->npk; i++) {
        sqlite3_str_appendall(q, "c.");
        tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
        sqlite3_str_appendall(q, ",");
    }
    sqlite3_str_appendf(q, "c.tsync_m FROM %s c", t->qclk);
    if (deleted_only) {
        sqlite3_str_appendf(q, " WHERE NOT EXISTS (SELECT 1 FROM %s r WHERE ", t->qname);
        for (int i = 0; i < t->npk; i++) {
            if (i) sqlite3_str_appendall(q, " AND ");
            sqlite3_str_appendall(q, "r.");
            tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
            sqlite3_str_appendall(q, "=c.");
            tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
        }
        sqlite3_str_appendall(q, ")");
    }
    return tsync__sql_finish(q);
}

/* The encoded key of the current row of a clk_scan_sql statement (*buf grown as needed). */
static int scan_key(sqlite3_stmt *st, const tsync__table *t, uint8_t **buf, size_t *cap,
                    uint32_t *klen)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    for (int i = 0; i < t->npk; i++) tsync__col_val(st, i, &kv[i]);
    size_t n = tsync__key_size(kv, t->npk);
    if (n > *cap) {
        uint8_t *nb = realloc(*buf, n);
        if (!nb) return tsync__err(TSYNC_ENOMEM, "out of memory");
        *buf = nb;
        *cap = n;
    }
    tsync__key_encode(kv, t->npk, *buf);
    *klen = (uint32_t)n;
    return 0;
}

/* Encoded keys, kept while a scan runs (a row is not rewritten under its own scan). */
typedef struct {
    uint8_t **k;
    uint32_t *len;
    size_t n, cap;
} keylist;

static int keylist_add(keylist *l, const uint8_t *k, uint32_t len)
{
    if (l->n == l->cap) {
        size_t nc = l->cap ? l->cap * 2 : 64;
        uint8_t **nk = realloc(l->k, nc * sizeof *nk);
        if (nk) l->k = nk;
        uint32_t *nl = realloc(l->len, nc * sizeof *nl);
        if (nl) l->len = nl;
        if (!nk || !nl) return tsync__err(TSYNC_ENOMEM, "out of memory");
        l->cap = nc;
    }
    if (!(l->k[l->n] = malloc(len ? len : 1))) return tsync__err(TSYNC_ENOMEM, "out of memory");
    memcpy(l->k[l->n], k, len);
    l->len[l->n++] = len;
    return 0;
}

static void keylist_free(keylist *l)
{
    for (size_t i = 0; i < l->n; i++) free(l->k[i]);
    free(l->k);
    free(l->len);
    memset(l, 0, sizeof *l);
}

/* Every existence entry at or below the frontier (fl: by local index, nfl entries). */
static int covered(const tsync__rowmeta *m, const tsync__hlc *fl, uint32_t nfl)
{
    if (m->nexist == 0) return 0;
    for (size_t i = 0; i < m->nexist; i++) {
        const tsync__exist *e = &m->exist[i];
        tsync__hlc top = e->add > e->rmv ? e->add : e->rmv;
        if (e->site >= nfl || fl[e->site] == 0 || top > fl[e->site]) return 0;
    }
    return 1;
}

int tsync__front_sweep(tsync__rowwriter *w, const tsync__front *f, size_t n, size_t *deleted)
{
    tsync_store *s = w->s;
    *deleted = 0;
    uint32_t nls = (uint32_t)one_int(s, "SELECT max(idx) + 1 FROM tsync_sites");
    tsync__hlc *fl = calloc(nls + 1, sizeof *fl);
    sqlite3_stmt *idx = tsync__prep(s, "SELECT idx FROM tsync_sites WHERE site = ?1");
    if (!fl || !idx) {
        free(fl);
        return fl ? TSYNC_EIO : tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        sqlite3_bind_blob(idx, 1, f[i].site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        if (sqlite3_step(idx) == SQLITE_ROW) {
            int64_t l = sqlite3_column_int64(idx, 0);
            if (l >= 0 && l < (int64_t)nls) fl[l] = f[i].hlc;
        }
        sqlite3_reset(idx);
    }
    sqlite3_stmt *seen = tsync__prep(s, "SELECT 1 FROM temp.tsync_snap_seen WHERE tbl=?1 AND k=?2");
    int rc = seen ? 0 : TSYNC_EIO;
    uint8_t *kb = NULL;
    size_t kcap = 0;
    for (int ti = 0; rc == 0 && ti < s->ntables; ti++) {
        tsync__table *t = &s->tables[ti];
        keylist del = {0};
        char *sql = clk_scan_sql(s, t, 0);
        sqlite3_stmt *st = NULL;
        if (!sql || sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
            rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "sweep a snapshot's frontier");
        sqlite3_free(sql);
        tsync__rowmeta m;
        if (rc == 0 && (rc = tsync__rowmeta_init(&m, t->ncols)) == 0) {
            while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
                tsync__rowmeta_clear(&m);
                if ((rc = tsync__rowmeta_init(&m, t->ncols)) ||
                    (rc = tsync__rowmeta_decode(&m, sqlite3_column_blob(st, t->npk),
                                                (size_t)sqlite3_column_bytes(st, t->npk))))
                    break;
                if (!row_live(&m) || !covered(&m, fl, nls)) continue;
                uint32_t klen = 0;
                if ((rc = scan_key(st, t, &kb, &kcap, &klen))) break;
                sqlite3_bind_int(seen, 1, t->id);
                sqlite3_bind_blob(seen, 2, kb, (int)klen, SQLITE_STATIC);
                int was = sqlite3_step(seen) == SQLITE_ROW;
                sqlite3_reset(seen);
                if (!was) rc = keylist_add(&del, kb, klen);
            }
            tsync__rowmeta_clear(&m);
        }
        sqlite3_finalize(st);
        /* Each such row was deleted and collected by the exporter (or one it took a snapshot
         * from): a remove that observed every add, as the delete did there. */
        for (size_t i = 0; rc == 0 && i < del.n; i++) {
            tsync__wrow r;
            tsync__val vals[TSYNC__MAX_COLS];
            memset(&r, 0, sizeof r);
            memset(vals, 0, sizeof vals);
            r.t = t;
            r.key = del.k[i];
            r.klen = del.len[i];
            r.vals = vals;
            if ((rc = tsync__rw_load(s, &r)) == 0) {
                size_t ne = r.meta.nexist;
                for (size_t j = 0; rc == 0 && j < ne; j++)
                    rc = tsync__rowmeta_exist_merge(&r.meta, r.meta.exist[j].site, 0,
                                                    r.meta.exist[j].add);
                if (rc == 0 && (rc = tsync__rw_write(w, &r)) == 0) (*deleted)++;
            }
            tsync__rowmeta_clear(&r.meta);
        }
        keylist_free(&del);
    }
    free(kb);
    free(fl);
    return rc;
}

/* ---------------------------------------------------------------- acknowledgements */

static int64_t meta_get(tsync_store *s, const char *k)
{
    int64_t v = 0;
    if (tsync__meta_int(s, k, &v, 0) != 0) v = 0;
    return v;
}

int tsync__collect_ack_gen(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES])
{
    int rc = tables(s);
    if (rc) return rc;
    int64_t g = meta_get(s, "collect_ack_gen") + 1;
    if ((rc = tsync__meta_int(s, "collect_ack_gen", NULL, g))) return rc;
    sqlite3_stmt *st = tsync__prep(s, "INSERT OR REPLACE INTO tsync_collect_ackgen VALUES(?1, ?2)");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, g);
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "record an acknowledgement");
}

/* A vector blob: (site 16, seq 8 big-endian) entries, as tsync_acks stores them. */
static uint64_t blob_seq(const uint8_t *b, int len, const uint8_t *site)
{
    for (int i = 0; i + 24 <= len; i += 24)
        if (memcmp(b + i, site, TSYNC__SITE_BYTES) == 0) {
            uint64_t v = 0;
            for (int k = 0; k < 8; k++) v = v << 8 | b[i + 16 + k];
            return v;
        }
    return 0;
}

static int vv_blob(const tsync__vv *vv, uint8_t **out, size_t *len)
{
    *len = vv->n * 24;
    *out = malloc(*len ? *len : 1);
    if (!*out) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (size_t i = 0; i < vv->n; i++) {
        memcpy(*out + i * 24, vv->e[i].site, TSYNC__SITE_BYTES);
        for (int b = 0; b < 8; b++)
            (*out)[i * 24 + 16 + b] = (uint8_t)(vv->e[i].seq >> (56 - 8 * b));
    }
    return 0;
}

/* One certified till, as collection sees it. */
typedef struct {
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t *vv; /* its stored acknowledgement (NULL: none that counts) */
    int len;
    int64_t gen; /* when it was stored (tsync__collect_ack_gen) */
} member;

/* Loads the members' acknowledgements. One that does not name every incarnation of its device
 * known here (a restored till's new site id) counts as none. */
static int load_members(tsync_store *s, member **out, size_t *n)
{
    uint8_t *keys = NULL;
    size_t nk = 0;
    *out = NULL;
    *n = 0;
    int rc = tsync__sync_device_keys(s, &keys, &nk);
    if (rc || nk == 0) {
        free(keys);
        return rc;
    }
    member *m = calloc(nk, sizeof *m);
    sqlite3_stmt *ack = NULL, *inc = NULL;
    if (!m) {
        free(keys);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    for (size_t i = 0; i < nk; i++) memcpy(m[i].pk, keys + i * TSYNC__PK_BYTES, TSYNC__PK_BYTES);
    if (sqlite3_prepare_v2(s->db,
                           "SELECT a.vv, g.gen FROM tsync_acks a JOIN tsync_collect_ackgen g ON "
                           "g.pk = a.pk WHERE a.pk = ?1",
                           -1, &ack, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "SELECT site FROM tsync_sites WHERE pk = ?1 AND seq > 0", -1,
                           &inc, NULL) != SQLITE_OK)
        goto done; /* no acknowledgement was ever stored: none counts */
    for (size_t i = 0; rc == 0 && i < nk; i++) {
        sqlite3_bind_blob(ack, 1, m[i].pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        if (sqlite3_step(ack) == SQLITE_ROW) {
            m[i].len = sqlite3_column_bytes(ack, 0);
            m[i].gen = sqlite3_column_int64(ack, 1);
            m[i].vv = malloc((size_t)m[i].len + 1);
            if (!m[i].vv)
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            else if (m[i].len)
                memcpy(m[i].vv, sqlite3_column_blob(ack, 0), (size_t)m[i].len);
        }
        sqlite3_reset(ack);
        sqlite3_bind_blob(inc, 1, m[i].pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        while (rc == 0 && m[i].vv && sqlite3_step(inc) == SQLITE_ROW)
            if (sqlite3_column_bytes(inc, 0) == TSYNC__SITE_BYTES &&
                blob_seq(m[i].vv, m[i].len, sqlite3_column_blob(inc, 0)) == 0) {
                free(m[i].vv);
                m[i].vv = NULL;
                m[i].len = 0;
            }
        sqlite3_reset(inc);
    }
done:
    sqlite3_finalize(ack);
    sqlite3_finalize(inc);
    free(keys);
    if (rc) {
        for (size_t i = 0; i < nk; i++) free(m[i].vv);
        free(m);
        return rc;
    }
    *out = m;
    *n = nk;
    return 0;
}

static void members_free(member *m, size_t n)
{
    for (size_t i = 0; m && i < n; i++) free(m[i].vv);
    free(m);
}

/* This replica holds every batch the members' acknowledgements name. */
static int holds_all(tsync_store *s, const member *m, size_t n)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT seq FROM tsync_sites WHERE site = ?1");
    if (!st) return 0;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k + 24 <= m[i].len; k += 24) {
            uint64_t a = blob_seq(m[i].vv + k, 24, m[i].vv + k);
            sqlite3_bind_blob(st, 1, m[i].vv + k, TSYNC__SITE_BYTES, SQLITE_STATIC);
            uint64_t have =
                sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
            sqlite3_reset(st);
            if (have < a) return 0;
        }
    return 1;
}

/* Every member acknowledged, after the epoch was marked (gen), a vector covering it. */
static int epoch_stable(const uint8_t *evv, int elen, int64_t egen, const member *m, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (!m[i].vv || m[i].gen <= egen) return 0;
        for (int k = 0; k + 24 <= elen; k += 24) {
            uint64_t w = blob_seq(evv + k, 24, evv + k);
            if (blob_seq(m[i].vv, m[i].len, evv + k) < w) return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- candidates */

static void meta_hash(const void *p, size_t n, uint8_t out[MH_BYTES])
{
    crypto_generichash(out, MH_BYTES, p, n, NULL, 0);
}

/* A deleted row that may go: nothing exists, every counter is zero for every site. */
static int collectable(const tsync__rowmeta *m)
{
    if (row_live(m)) return 0;
    for (size_t i = 0; i < m->nctrs; i++)
        for (size_t k = 0; k < m->ctrs[i].n; k++)
            if (m->ctrs[i].v[k].p || m->ctrs[i].v[k].n) return 0;
    return 1;
}

/* Every member's last description of its tables has table t with all our columns. */
static int schema_ok(tsync_store *s, const tsync__table *t, const member *m, size_t n)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT defs FROM tsync_peer_schemas WHERE pk = ?1 ORDER BY seen_ms "
                           "DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    int ok = 1;
    for (size_t i = 0; ok && i < n; i++) {
        sqlite3_bind_blob(st, 1, m[i].pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        ok = 0;
        int row = sqlite3_step(st);
        if (row == SQLITE_ROW) {
            tsync__schema sch;
            tsync__arena a = {0};
            char err[TSYNC__ERRLEN];
            if (tsync__schema_decode(sqlite3_column_blob(st, 0),
                                     (size_t)sqlite3_column_bytes(st, 0), &sch, &a, err) == 0)
                for (uint32_t k = 0; k < sch.ntables; k++) {
                    const tsync__stable *x = &sch.tables[k];
                    if (strlen(t->name) != x->name_len ||
                        sqlite3_strnicmp(t->name, x->name, (int)x->name_len))
                        continue;
                    int all = 1;
                    for (int c = 0; all && c < t->ncols; c++) {
                        int found = 0;
                        for (uint32_t j = 0; !found && j < x->ncols; j++)
                            found = strlen(t->cols[c]) == x->cols[j].name_len &&
                                    !sqlite3_strnicmp(t->cols[c], x->cols[j].name,
                                                      (int)x->cols[j].name_len);
                        all = found;
                    }
                    ok = all;
                }
            tsync__arena_free(&a);
        }
        sqlite3_reset(st);
    }
    sqlite3_finalize(st);
    return ok;
}

static tsync__table *table_by_id(tsync_store *s, int id)
{
    for (int i = 0; i < s->ntables; i++)
        if (s->tables[i].id == id) return &s->tables[i];
    return NULL;
}

/* Collects the candidates of epoch id whose clock entry is still the one marked; the others are
 * dropped (marked again later). Raises the frontier. */
static int take_epoch(tsync_store *s, int64_t epoch, size_t *collected, int64_t *budget)
{
    sqlite3_stmt *c;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT tbl, k, mh FROM tsync_collect_cand WHERE epoch = ?1 ORDER BY "
                           "tbl, k LIMIT ?2",
                           -1, &c, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "collect deleted rows");
    sqlite3_bind_int64(c, 1, epoch);
    const int64_t want = *budget;
    sqlite3_bind_int64(c, 2, want);
    uint32_t nls = (uint32_t)one_int(s, "SELECT max(idx) + 1 FROM tsync_sites");
    tsync__hlc *top = calloc(nls + 1, sizeof *top);
    int rc = top ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt **dels = calloc((size_t)s->ntables + 1, sizeof *dels);
    if (!dels && rc == 0) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__rowmeta m;
    memset(&m, 0, sizeof m);
    /* The deletes below touch tsync_clk_ and tsync_tomb_ tables, never the candidates read. */
    while (rc == 0 && sqlite3_step(c) == SQLITE_ROW) {
        (*budget)--;
        tsync__table *t = table_by_id(s, sqlite3_column_int(c, 0));
        if (!t || sqlite3_column_bytes(c, 2) != MH_BYTES) continue;
        const uint8_t *key = sqlite3_column_blob(c, 1);
        uint32_t klen = (uint32_t)sqlite3_column_bytes(c, 1);
        tsync__val kv[TSYNC__MAX_PK_COLS];
        if (tsync__key_decode(key, klen, kv, t->npk) != 0) continue;
        sqlite3_reset(t->get_clk);
        for (int i = 0; i < t->npk; i++) tsync__bind_val(t->get_clk, i + 1, &kv[i]);
        if (sqlite3_step(t->get_clk) != SQLITE_ROW) {
            sqlite3_reset(t->get_clk);
            continue;
        }
        uint8_t h[MH_BYTES];
        meta_hash(sqlite3_column_blob(t->get_clk, 0), (size_t)sqlite3_column_bytes(t->get_clk, 0),
                  h);
        int same = memcmp(h, sqlite3_column_blob(c, 2), MH_BYTES) == 0;
        if (same && (rc = tsync__rowmeta_init(&m, t->ncols)) == 0)
            rc = tsync__rowmeta_decode(&m, sqlite3_column_blob(t->get_clk, 0),
                                       (size_t)sqlite3_column_bytes(t->get_clk, 0));
        sqlite3_reset(t->get_clk);
        if (rc || !same) {
            tsync__rowmeta_clear(&m);
            continue;
        }
        if (collectable(&m)) {
            for (size_t i = 0; i < m.nexist; i++) {
                const tsync__exist *e = &m.exist[i];
                tsync__hlc x = e->add > e->rmv ? e->add : e->rmv;
                if (e->site < nls && x > top[e->site]) top[e->site] = x;
            }
            int ti = (int)(t - s->tables);
            if (!dels[ti]) {
                sqlite3_str *q = sqlite3_str_new(s->db);
                sqlite3_str_appendf(q, "DELETE FROM %s WHERE %s", t->qclk, t->pk_where);
                char *sql = tsync__sql_finish(q);
                if (!sql || sqlite3_prepare_v2(s->db, sql, -1, &dels[ti], NULL) != SQLITE_OK)
                    rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "collect a deleted row");
                sqlite3_free(sql);
            }
            sqlite3_stmt *d = dels[ti];
            for (int pass = 0; rc == 0 && pass < 2; pass++) {
                sqlite3_stmt *x = pass ? t->del_tomb : d;
                sqlite3_reset(x);
                for (int i = 0; i < t->npk; i++) tsync__bind_val(x, i + 1, &kv[i]);
                int r = sqlite3_step(x);
                sqlite3_reset(x);
                if (r != SQLITE_DONE) rc = tsync__err_sqlite(s->db, r, "collect a deleted row");
            }
            if (rc == 0) (*collected)++;
        }
        tsync__rowmeta_clear(&m);
    }
    sqlite3_finalize(c);
    for (int i = 0; dels && i < s->ntables; i++) sqlite3_finalize(dels[i]);
    free(dels);
    /* The frontier: per site, the highest clock of the rows collected. */
    for (uint32_t l = 0; rc == 0 && l < nls; l++) {
        if (!top[l]) continue;
        tsync__front f = {.hlc = top[l]};
        if ((rc = tsync__site_of(s, l, f.site)) == 0) rc = tsync__front_raise(s, &f, 1);
    }
    free(top);
    /* The slice just read goes (collected or changed since the mark); the epoch once empty. */
    if (rc == 0) {
        sqlite3_stmt *d = tsync__prep(s, "DELETE FROM tsync_collect_cand WHERE (tbl, k) IN (SELECT "
                                         "tbl, k FROM tsync_collect_cand WHERE epoch = ?1 ORDER BY "
                                         "tbl, k LIMIT ?2)");
        sqlite3_stmt *e =
            tsync__prep(s, "DELETE FROM tsync_collect_epoch WHERE id = ?1 AND NOT "
                           "EXISTS (SELECT 1 FROM tsync_collect_cand WHERE epoch = ?1)");
        if (!d || !e) return TSYNC_EIO;
        sqlite3_bind_int64(d, 1, epoch);
        sqlite3_bind_int64(d, 2, want);
        sqlite3_bind_int64(e, 1, epoch);
        for (int i = 0; i < 2 && rc == 0; i++) {
            sqlite3_stmt *x = i ? e : d;
            int r = sqlite3_step(x);
            sqlite3_reset(x);
            if (r != SQLITE_DONE) rc = tsync__err_sqlite(s->db, r, "collect deleted rows");
        }
    }
    return rc;
}

/* What the last scan that found nothing saw: a hash of our vector (blob) and every till's
 * description. */
static int mark_key(tsync_store *s, const uint8_t *blob, size_t blen, int64_t *vkey)
{
    uint8_t vh[16];
    crypto_generichash_state hs;
    crypto_generichash_init(&hs, NULL, 0, sizeof vh);
    crypto_generichash_update(&hs, blob, blen);
    sqlite3_stmt *dg;
    if (sqlite3_prepare_v2(s->db, "SELECT digest FROM tsync_peer_schemas ORDER BY site", -1, &dg,
                           NULL) == SQLITE_OK) {
        while (sqlite3_step(dg) == SQLITE_ROW)
            crypto_generichash_update(&hs, sqlite3_column_blob(dg, 0),
                                      (size_t)sqlite3_column_bytes(dg, 0));
        sqlite3_finalize(dg);
    }
    crypto_generichash_final(&hs, vh, sizeof vh);
    *vkey = 0;
    for (int i = 0; i < 8; i++) *vkey = (int64_t)((uint64_t)*vkey << 8 | vh[i]);
    return 0;
}

/* Whether a round would do anything, read without the write lock: most prune rounds of a shop
 * find nothing stable and nothing new to mark, and the app's writes should not wait for them. */
static int has_work(tsync_store *s)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM tsync_collect_cursor", -1, &st, NULL) != SQLITE_OK)
        return 1; /* the tables are made on the first round */
    int scanning = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    if (scanning) return 1;
    member *m = NULL;
    size_t n = 0;
    if (load_members(s, &m, &n) != 0) return 1;
    int work = 0, pending = 0, holds = holds_all(s, m, n);
    if (sqlite3_prepare_v2(s->db, "SELECT vv, gen FROM tsync_collect_epoch", -1, &st, NULL) ==
        SQLITE_OK) {
        while (!work && sqlite3_step(st) == SQLITE_ROW) {
            pending = 1;
            work = holds && epoch_stable(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0),
                                         sqlite3_column_int64(st, 1), m, n);
        }
        sqlite3_finalize(st);
    }
    members_free(m, n);
    if (work || pending || one_int(s, "SELECT count(*) FROM (SELECT 1 FROM tsync_pending LIMIT 1)"))
        return work;
    tsync__vv vv = {0};
    uint8_t *blob = NULL;
    size_t blen = 0;
    int64_t vkey = 0;
    if (tsync__sync_vv(s, &vv) || vv_blob(&vv, &blob, &blen) || mark_key(s, blob, blen, &vkey))
        work = 1;
    else
        work = vkey == 0 || meta_get(s, "collect_mark_vv") != vkey;
    tsync__vv_free(&vv);
    free(blob);
    return work;
}

/* Marks collectable deleted rows as candidates of a new epoch (our vector now): at most
 * COLLECT_SLICE rows scanned, from where the last slice stopped (tsync_collect_cursor). Each slice
 * has its own epoch, so what it marks is covered by the vector it records. */
static int mark(tsync_store *s, const member *m, size_t n)
{
    int cur_ti = -1;
    uint8_t *cur_k = NULL;
    uint32_t cur_klen = 0;
    {
        sqlite3_stmt *cs = tsync__prep(s, "SELECT tbl, k FROM tsync_collect_cursor WHERE id = 1");
        if (!cs) return TSYNC_EIO;
        if (sqlite3_step(cs) == SQLITE_ROW) {
            cur_ti = sqlite3_column_int(cs, 0);
            cur_klen = (uint32_t)sqlite3_column_bytes(cs, 1);
            cur_k = malloc(cur_klen + 1);
            if (cur_k) memcpy(cur_k, sqlite3_column_blob(cs, 1), cur_klen);
        }
        sqlite3_reset(cs);
        if (cur_ti >= 0 && !cur_k) return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    tsync__vv vv = {0};
    uint8_t *blob = NULL, *kb = NULL;
    size_t blen = 0, kcap = 0;
    int rc = tsync__sync_vv(s, &vv);
    if (rc == 0) rc = vv_blob(&vv, &blob, &blen);
    tsync__vv_free(&vv);
    /* Nothing merged or sealed, and no till's definitions changed, since the last mark found
     * nothing: nothing new to find. */
    int64_t vkey = 0;
    if (rc == 0) rc = mark_key(s, blob, blen, &vkey);
    if (rc == 0 && cur_ti < 0 && meta_get(s, "collect_mark_vv") == vkey && vkey != 0) {
        free(blob);
        return 0;
    }
    sqlite3_stmt *ep = NULL, *ins = NULL;
    if (rc == 0 &&
        (!(ep = tsync__prep(s, "INSERT INTO tsync_collect_epoch(vv, gen) VALUES(?1, ?2)")) ||
         !(ins = tsync__prep(s, "INSERT OR REPLACE INTO tsync_collect_cand "
                                "VALUES(?1, ?2, ?3, ?4)"))))
        rc = TSYNC_EIO;
    if (rc == 0) {
        sqlite3_bind_blob(ep, 1, blob, (int)blen, SQLITE_STATIC);
        sqlite3_bind_int64(ep, 2, meta_get(s, "collect_ack_gen"));
        int r = sqlite3_step(ep);
        sqlite3_reset(ep);
        if (r != SQLITE_DONE) rc = tsync__err_sqlite(s->db, r, "mark deleted rows");
    }
    int64_t epoch = sqlite3_last_insert_rowid(s->db);
    int64_t marked = 0, scanned = 0;
    int stop_ti = -1; /* where this slice stopped (kb, klen: the last key) */
    uint32_t klen = 0;
    tsync__rowmeta meta;
    memset(&meta, 0, sizeof meta);
    for (int ti = cur_ti < 0 ? 0 : cur_ti; rc == 0 && stop_ti < 0 && ti < s->ntables; ti++) {
        tsync__table *t = &s->tables[ti];
        sqlite3_stmt *pk = tsync__prep(s, "SELECT 1 FROM tsync_parked WHERE tbl = ?1 COLLATE "
                                          "NOCASE LIMIT 1");
        if (!pk) {
            rc = TSYNC_EIO;
            break;
        }
        sqlite3_bind_text(pk, 1, t->name, -1, SQLITE_STATIC);
        int parked = sqlite3_step(pk) == SQLITE_ROW;
        sqlite3_reset(pk);
        /* A max or min column's tombstone is what a later re-insert is joined with (store/
         * replicate.c): collected here and kept elsewhere, the two would show different values. */
        int reg = 0;
        for (int c = 0; c < t->ncols; c++)
            reg |= t->policy[c] == TSYNC__POLICY_MAX || t->policy[c] == TSYNC__POLICY_MIN;
        if (parked || reg || !schema_ok(s, t, m, n)) continue;
        int from_key = ti == cur_ti;
        char *sql = clk_scan_sql(s, t, 1);
        sqlite3_str *q = sqlite3_str_new(s->db);
        sqlite3_str_appendall(q, sql ? sql : "");
        sqlite3_free(sql);
        if (from_key) {
            /* after the cursor's key, in key order */
            sqlite3_str_appendall(q, " AND (");
            for (int i = 0; i < t->npk; i++) {
                sqlite3_str_appendall(q, i ? ",c." : "c.");
                tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
            }
            sqlite3_str_appendall(q, ") > (");
            for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "%s?%d", i ? "," : "", i + 1);
            sqlite3_str_appendall(q, ")");
        }
        sqlite3_str_appendall(q, " ORDER BY ");
        for (int i = 0; i < t->npk; i++) {
            sqlite3_str_appendall(q, i ? ",c." : "c.");
            tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
        }
        sql = tsync__sql_finish(q);
        sqlite3_stmt *st = NULL;
        if (!sql || sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK)
            rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "mark deleted rows");
        sqlite3_free(sql);
        if (rc == 0 && from_key) {
            tsync__val kv[TSYNC__MAX_PK_COLS];
            if (tsync__key_decode(cur_k, cur_klen, kv, t->npk) == 0)
                for (int i = 0; i < t->npk; i++) tsync__bind_val(st, i + 1, &kv[i]);
        }
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            if (++scanned > COLLECT_SLICE) {
                stop_ti = ti; /* kb holds the last key scanned */
                break;
            }
            if ((rc = scan_key(st, t, &kb, &kcap, &klen))) break;
            const void *p = sqlite3_column_blob(st, t->npk);
            size_t plen = (size_t)sqlite3_column_bytes(st, t->npk);
            if ((rc = tsync__rowmeta_init(&meta, t->ncols)) ||
                (rc = tsync__rowmeta_decode(&meta, p, plen)))
                break;
            int ok = collectable(&meta);
            tsync__rowmeta_clear(&meta);
            if (!ok) continue;
            uint8_t h[MH_BYTES];
            meta_hash(p, plen, h);
            sqlite3_bind_int(ins, 1, t->id);
            sqlite3_bind_blob(ins, 2, kb, (int)klen, SQLITE_STATIC);
            sqlite3_bind_blob(ins, 3, h, MH_BYTES, SQLITE_STATIC);
            sqlite3_bind_int64(ins, 4, epoch);
            int r = sqlite3_step(ins);
            sqlite3_reset(ins);
            if (r != SQLITE_DONE) rc = tsync__err_sqlite(s->db, r, "mark deleted rows");
            marked++;
        }
        tsync__rowmeta_clear(&meta);
        sqlite3_finalize(st);
    }
    /* Where the next slice goes on from; a scan done in one slice that found nothing is not
     * repeated until something changes (collect_mark_vv). */
    sqlite3_stmt *cw = rc ? NULL
                          : tsync__prep(s, stop_ti >= 0 ? "INSERT OR REPLACE INTO "
                                                          "tsync_collect_cursor VALUES(1, ?1, ?2)"
                                                        : "DELETE FROM tsync_collect_cursor");
    if (rc == 0 && !cw) rc = TSYNC_EIO;
    if (rc == 0) {
        if (stop_ti >= 0) {
            sqlite3_bind_int(cw, 1, stop_ti);
            sqlite3_bind_blob(cw, 2, kb, (int)klen, SQLITE_STATIC);
        }
        int r = sqlite3_step(cw);
        sqlite3_reset(cw);
        if (r != SQLITE_DONE) rc = tsync__err_sqlite(s->db, r, "mark deleted rows");
    }
    if (rc == 0)
        rc = tsync__meta_int(s, "collect_mark_vv", NULL,
                             marked || stop_ti >= 0 || cur_ti >= 0 ? 0 : vkey);
    if (rc == 0 && marked == 0) {
        /* nothing to wait for */
        sqlite3_stmt *d = tsync__prep(s, "DELETE FROM tsync_collect_epoch WHERE id = ?1");
        if (!d) rc = TSYNC_EIO;
        if (rc == 0) {
            sqlite3_bind_int64(d, 1, epoch);
            sqlite3_step(d);
            sqlite3_reset(d);
        }
    }
    free(blob);
    free(kb);
    free(cur_k);
    return rc;
}

int tsync__collect(tsync_store *s, size_t *collected)
{
    size_t got = 0;
    if (collected) *collected = 0;
    if (s->read_only) return 0;
    member *m = NULL;
    size_t n = 0;
    /* Not enrolled: nobody certifies that a delete was seen everywhere. Found out without the
     * write lock, as most prune rounds of a lone till. */
    uint8_t *keys = NULL;
    int rc = tsync__sync_device_keys(s, &keys, &n);
    free(keys);
    if (rc || n == 0) return rc;
    n = 0;
    if (sqlite3_get_autocommit(s->db)) {
        if ((rc = tsync__exec(s, "BEGIN"))) return rc;
        int work = has_work(s);
        tsync__exec(s, "COMMIT");
        if (!work) return 0;
    }
    if ((rc = tsync__begin(s))) return rc;
    if ((rc = tables(s)) || (rc = tsync__tables_refresh(s)) || (rc = load_members(s, &m, &n)))
        goto out;
    if (n == 0) goto out;
    int holds = holds_all(s, m, n);
    sqlite3_stmt *ep;
    if (sqlite3_prepare_v2(s->db, "SELECT id, vv, gen FROM tsync_collect_epoch ORDER BY id", -1,
                           &ep, NULL) != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "collect deleted rows");
        goto out;
    }
    int64_t stable[64];
    size_t ns = 0, pending = 0;
    while (sqlite3_step(ep) == SQLITE_ROW) {
        if (holds && ns < 64 &&
            epoch_stable(sqlite3_column_blob(ep, 1), sqlite3_column_bytes(ep, 1),
                         sqlite3_column_int64(ep, 2), m, n))
            stable[ns++] = sqlite3_column_int64(ep, 0);
        else
            pending++;
    }
    sqlite3_finalize(ep);
    int64_t budget = COLLECT_SLICE;
    for (size_t i = 0; rc == 0 && budget > 0 && i < ns; i++)
        rc = take_epoch(s, stable[i], &got, &budget);
    pending += (size_t)one_int(s, "SELECT count(*) FROM tsync_collect_epoch") > 0;
    int scanning = one_int(s, "SELECT count(*) FROM tsync_collect_cursor") > 0;
    /* Local changes not sealed yet are not in the vector a mark records: mark once they are. */
    if (rc == 0 && (scanning || pending == 0) &&
        one_int(s, "SELECT count(*) FROM (SELECT 1 FROM tsync_pending LIMIT 1)") == 0)
        rc = mark(s, m, n);
    if (rc == 0 && got)
        rc = tsync__meta_int(s, "collected_rows", NULL,
                             meta_get(s, "collected_rows") + (int64_t)got);
out:
    members_free(m, n);
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    rc = tsync__commit(s);
    if (rc == 0 && collected) *collected = got;
    return rc;
}

void tsync__collect_counts(tsync_store *s, int64_t *collected, int64_t *pending)
{
    *collected = meta_get(s, "collected_rows");
    *pending = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM tsync_collect_cand", -1, &st, NULL) ==
        SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) *pending = sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
}
