/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/conflicts.c — the conflict journal a person works through (tillsync/conflicts.h): the
 * identity of a collision, listing with till names, resolving, dismissing, and dropping old
 * resolved entries.
 *
 * Design notes
 * - The journal (tsync_conflicts) is local: each till records the collisions it meets while
 *   merging, under its own ids. What makes two tills' entries one conflict is its identity (cid,
 *   tsync__conflict_id): the table, key and column and the two competing writes, each named by
 *   its (clock, site), in ascending order. Both sides of a collision see the same two writes, so
 *   they compute the same cid whichever of them won locally.
 * - Resolutions are rows of tsync_resolved (cid, how, value, site, device, at_ms), a replicated
 *   table like the app's, made by the library: it is captured, sealed, sent and merged by the
 *   usual path (rows by LWW, so two tills resolving one conflict concurrently end with the same
 *   resolution everywhere; no batch or wire format changed). An entry is resolved when a row of
 *   tsync_resolved has its cid: a join, not a copy, so a till that records the collision after
 *   the resolution arrived shows it resolved too.
 * - The table is made on first use: by the first resolution here, or by a merge that meets
 *   changes of it (parked as for any table not replicated here, then applied at once: see
 *   tsync__resolved_adopt) or a snapshot that carries it. A database that never saw a resolution
 *   has no such table. It is kept out of the content hash and of the table definitions tills
 *   compare, so an app's tables hash as before.
 * - Taking or entering a value is an UPDATE of the app's row on this connection, so the capture
 *   triggers record it as a local write: it is sealed with a clock above both competing writes
 *   and wins on every till by the normal rules.
 * - Entries recorded before identities existed (cid NULL) resolve under an identity of this till
 *   and entry (BLAKE2b-128 of "tsync-conflict-local", site id, entry id): their resolution
 *   replicates, but no other till's entry matches it.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "prep_int.h"
#include "tillsync/conflicts.h"

#define KEEP_MS ((int64_t)TSYNC_CONFLICTS_KEEP_DAYS * 24 * 3600 * 1000)

/* ---------------------------------------------------------------- identity */

static void hash_folded(crypto_generichash_state *h, const char *name)
{
    for (const char *p = name;; p++) {
        uint8_t c = (uint8_t)*p;
        if (c >= 'A' && c <= 'Z') c = (uint8_t)(c + ('a' - 'A'));
        crypto_generichash_update(h, &c, 1);
        if (!*p) break;
    }
}

static void hash_write(crypto_generichash_state *h, tsync__hlc hlc, const uint8_t *site)
{
    static const uint8_t zero[TSYNC__SITE_BYTES];
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlc >> (56 - 8 * i));
    crypto_generichash_update(h, b, sizeof b);
    crypto_generichash_update(h, site ? site : zero, TSYNC__SITE_BYTES);
}

void tsync__conflict_id(uint8_t out[TSYNC__CID_BYTES], const char *tbl, const uint8_t *key,
                        size_t klen, const char *col, tsync__hlc h1, const uint8_t *site1,
                        tsync__hlc h2, const uint8_t *site2)
{
    static const uint8_t zero[TSYNC__SITE_BYTES];
    const uint8_t *s1 = site1 ? site1 : zero, *s2 = site2 ? site2 : zero;
    int swap = h1 > h2 || (h1 == h2 && memcmp(s1, s2, TSYNC__SITE_BYTES) > 0);
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, TSYNC__CID_BYTES);
    crypto_generichash_update(&h, (const uint8_t *)"tsync-conflict", 14);
    hash_folded(&h, tbl);
    uint8_t kl[4] = {(uint8_t)(klen >> 24), (uint8_t)(klen >> 16), (uint8_t)(klen >> 8),
                     (uint8_t)klen};
    crypto_generichash_update(&h, kl, sizeof kl);
    crypto_generichash_update(&h, key, klen);
    hash_folded(&h, col);
    hash_write(&h, swap ? h2 : h1, swap ? s2 : s1);
    hash_write(&h, swap ? h1 : h2, swap ? s1 : s2);
    crypto_generichash_final(&h, out, TSYNC__CID_BYTES);
}

static void local_cid(tsync_store *s, int64_t id, uint8_t out[TSYNC__CID_BYTES])
{
    crypto_generichash_state h;
    uint8_t b[8];
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)id >> (56 - 8 * i));
    crypto_generichash_init(&h, NULL, 0, TSYNC__CID_BYTES);
    crypto_generichash_update(&h, (const uint8_t *)"tsync-conflict-local", 20);
    crypto_generichash_update(&h, s->site, TSYNC__SITE_BYTES);
    crypto_generichash_update(&h, b, sizeof b);
    crypto_generichash_final(&h, out, TSYNC__CID_BYTES);
}

/* ---------------------------------------------------------------- schema */

/* 1 when table tbl has column col, 0 when not, <0 on error. */
static int has_column(tsync_store *s, const char *tbl, const char *col)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "SELECT 1 FROM pragma_table_info(?1) WHERE name=?2", -1, &st,
                                NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read schema");
    sqlite3_bind_text(st, 1, tbl, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, col, -1, SQLITE_STATIC);
    rc = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return rc;
}

int tsync__conflicts_upgrade(tsync_store *s)
{
    int has = has_column(s, "tsync_conflicts", "cid");
    if (has) return has < 0 ? has : 0; /* the usual case: nothing to write */
    int rc = tsync__exec(s, "BEGIN IMMEDIATE");
    if (rc) return rc;
    /* Under the write lock: another handle may have just done it. */
    if ((has = has_column(s, "tsync_conflicts", "cid")) != 0) {
        tsync__exec(s, "COMMIT");
        return has < 0 ? has : 0;
    }
    rc = tsync__exec(s, "ALTER TABLE tsync_conflicts ADD COLUMN cid BLOB;"
                        "ALTER TABLE tsync_conflicts ADD COLUMN key BLOB;"
                        "CREATE INDEX IF NOT EXISTS tsync_conflicts_cid ON tsync_conflicts(cid);");
    /* Entries recorded before: an identity of this till and entry (see the design notes). */
    sqlite3_stmt *sel = NULL, *upd = NULL;
    if (rc == 0 &&
        (sqlite3_prepare_v2(s->db, "SELECT id FROM tsync_conflicts", -1, &sel, NULL) != SQLITE_OK ||
         sqlite3_prepare_v2(s->db, "UPDATE tsync_conflicts SET cid=?2 WHERE id=?1", -1, &upd,
                            NULL) != SQLITE_OK))
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "upgrade conflicts");
    while (rc == 0 && sqlite3_step(sel) == SQLITE_ROW) {
        int64_t id = sqlite3_column_int64(sel, 0);
        uint8_t cid[TSYNC__CID_BYTES];
        local_cid(s, id, cid);
        sqlite3_reset(upd);
        sqlite3_bind_int64(upd, 1, id);
        sqlite3_bind_blob(upd, 2, cid, sizeof cid, SQLITE_TRANSIENT);
        int x = sqlite3_step(upd);
        if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "upgrade conflicts");
    }
    sqlite3_finalize(sel);
    sqlite3_finalize(upd);
    if (rc == 0) return tsync__exec(s, "COMMIT");
    tsync__rollback(s);
    return rc;
}

int tsync__table_internal(const char *name)
{
    return tsync__name_eqz(name, TSYNC__RESOLVED);
}

int tsync__resolved_ensure(tsync_store *s)
{
    if (tsync__table_by_name(s, TSYNC__RESOLVED, strlen(TSYNC__RESOLVED))) return 0;
    /* NOT NULL columns have defaults (a row can be built from partial changes). */
    int rc = tsync__exec(s, "CREATE TABLE IF NOT EXISTS " TSYNC__RESOLVED "(cid BLOB PRIMARY KEY,"
                            " how TEXT NOT NULL DEFAULT '', value, site BLOB, device TEXT,"
                            " at_ms INTEGER NOT NULL DEFAULT 0)");
    if (rc == 0) rc = tsync__replicate_internal_locked(s, TSYNC__RESOLVED);
    /* Changes of it a merge parked before (capture comes back on after). */
    return rc ? rc : tsync__unpark(s, TSYNC__RESOLVED);
}

int tsync__resolved_adopt(tsync_store *s)
{
    if (tsync__table_by_name(s, TSYNC__RESOLVED, strlen(TSYNC__RESOLVED))) return 0;
    sqlite3_stmt *st = tsync__prep(s, "SELECT 1 FROM tsync_parked WHERE tbl = '" TSYNC__RESOLVED
                                      "' COLLATE NOCASE LIMIT 1");
    if (!st) return TSYNC_EIO;
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    if (x == SQLITE_DONE) return 0;
    if (x != SQLITE_ROW) return tsync__err_sqlite(s->db, x, "read parked changes");
    return tsync__resolved_ensure(s);
}

/* ---------------------------------------------------------------- listing */

/* The till that wrote with site id site: the device name of its key's latest certificate, else
 * the site id in hex. certs: a statement over the trust set, or NULL when there is none. */
static json_t *till_json(sqlite3_stmt *certs, const void *site, int n)
{
    if (!site || n != TSYNC__SITE_BYTES) return json_null();
    if (certs) {
        sqlite3_reset(certs);
        sqlite3_bind_blob(certs, 1, site, n, SQLITE_STATIC);
        if (sqlite3_step(certs) == SQLITE_ROW && sqlite3_column_text(certs, 0)) {
            json_t *j = json_string((const char *)sqlite3_column_text(certs, 0));
            sqlite3_reset(certs);
            if (j) return j;
        }
        sqlite3_reset(certs);
    }
    char hex[2 * TSYNC__SITE_BYTES + 1];
    tsync__hex(site, TSYNC__SITE_BYTES, hex);
    return json_string(hex);
}

static json_t *col_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer(sqlite3_column_int64(st, i));
    case SQLITE_FLOAT:
        return json_real(sqlite3_column_double(st, i));
    case SQLITE_TEXT:
        return json_stringn_nocheck((const char *)sqlite3_column_text(st, i),
                                    (size_t)sqlite3_column_bytes(st, i));
    case SQLITE_BLOB: {
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        char *h = malloc(n * 2 + 1);
        if (!h) return json_null();
        tsync__hex(sqlite3_column_blob(st, i), n, h);
        json_t *j = json_string(h);
        free(h);
        return j;
    }
    default:
        return json_null();
    }
}

static int table_exists(tsync_store *s, const char *name)
{
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM sqlite_schema WHERE type='table' AND name=?1", -1,
                           &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int yes = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return yes;
}

static json_t *side_json(sqlite3_stmt *st, int i, sqlite3_stmt *certs)
{
    json_t *o = json_object();
    int64_t hlc = sqlite3_column_int64(st, i + 1);
    json_object_set_new(o, "value", col_json(st, i));
    json_object_set_new(o, "hlc", json_integer(hlc));
    json_object_set_new(o, "time_ms", json_integer((json_int_t)((uint64_t)hlc >> 16)));
    json_object_set_new(o, "site", col_json(st, i + 2));
    json_object_set_new(
        o, "till",
        till_json(certs, sqlite3_column_blob(st, i + 2), sqlite3_column_bytes(st, i + 2)));
    return o;
}

/* The journal's query: the entry, then its resolution (NULLs when open). The parts a database an
 * older build made, or one that never saw a resolution, lacks are NULL. */
static char *list_sql(tsync_store *s, int open_only, int limited)
{
    int cid = has_column(s, "tsync_conflicts", "cid") > 0;
    int res = cid && table_exists(s, TSYNC__RESOLVED);
    /* Per-column policies record review conflicts with kind 1 (0: LWW). */
    int kind = has_column(s, "tsync_conflicts", "kind") > 0;
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(
        q,
        "SELECT c.id, c.at_ms, c.tbl, c.pk, c.col, c.win_val, c.win_hlc, "
        "c.win_site, c.lose_val, c.lose_hlc, c.lose_site, %s, %s, %s FROM "
        "tsync_conflicts c %s WHERE c.id > ?1 %s ORDER BY c.id %s",
        cid ? "c.cid" : "NULL", res ? "r.how, r.value, r.site, r.at_ms" : "NULL, NULL, NULL, NULL",
        kind ? "c.kind" : "0", res ? "LEFT JOIN " TSYNC__RESOLVED " r ON r.cid = c.cid" : "",
        !open_only ? ""
        : res      ? "AND r.cid IS NULL"
                   : "",
        limited ? "LIMIT ?2" : "");
    return sqlite3_str_finish(q);
}

int tsync__conflicts_prepare(tsync_store *s, sqlite3_stmt **out)
{
    char *sql = list_sql(s, 0, 0);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = sqlite3_prepare_v2(s->db, sql, -1, out, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read conflicts");
    sqlite3_bind_int64(*out, 1, 0);
    return 0;
}

int tsync_store_conflicts_list_json(char **out, tsync_store *s, int64_t since_id, size_t limit,
                                    int open_only)
{
    *out = NULL;
    char *sql = list_sql(s, open_only, limit > 0);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st = NULL, *certs = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read conflicts");
    if (table_exists(s, "tsync_certs") &&
        sqlite3_prepare_v2(s->db,
                           "SELECT c.device_name FROM tsync_sites si JOIN tsync_certs c ON "
                           "c.device_pk = si.pk WHERE si.site = ?1 ORDER BY c.expires DESC "
                           "LIMIT 1",
                           -1, &certs, NULL) != SQLITE_OK)
        certs = NULL;
    sqlite3_bind_int64(st, 1, since_id);
    if (limit > 0) sqlite3_bind_int64(st, 2, limit > INT64_MAX ? INT64_MAX : (int64_t)limit);
    json_t *a = json_array();
    int x;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        json_t *o = json_object();
        json_error_t je;
        json_object_set_new(o, "id", json_integer(sqlite3_column_int64(st, 0)));
        json_object_set_new(o, "cid", col_json(st, 11));
        json_object_set_new(o, "at_ms", json_integer(sqlite3_column_int64(st, 1)));
        json_object_set_new(o, "table", col_json(st, 2));
        json_t *key = json_loads((const char *)sqlite3_column_text(st, 3), JSON_DECODE_ANY, &je);
        json_object_set_new(o, "key", key ? key : json_null());
        json_object_set_new(o, "column", col_json(st, 4));
        json_object_set_new(o, "kind",
                            json_string(sqlite3_column_int(st, 16) == 1 ? "review" : "lww"));
        json_object_set_new(o, "winner", side_json(st, 5, certs));
        json_object_set_new(o, "loser", side_json(st, 8, certs));
        int open = sqlite3_column_type(st, 12) == SQLITE_NULL;
        json_object_set_new(o, "open", json_boolean(open));
        json_t *r = json_null();
        if (!open) {
            r = json_object();
            json_object_set_new(r, "how", col_json(st, 12));
            json_object_set_new(r, "value", col_json(st, 13));
            json_object_set_new(r, "site", col_json(st, 14));
            json_object_set_new(
                r, "till",
                till_json(certs, sqlite3_column_blob(st, 14), sqlite3_column_bytes(st, 14)));
            json_object_set_new(r, "at_ms", json_integer(sqlite3_column_int64(st, 15)));
        }
        json_object_set_new(o, "resolved", r);
        json_array_append_new(a, o);
    }
    if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "read conflicts");
    sqlite3_finalize(st);
    sqlite3_finalize(certs);
    if (rc == 0) {
        *out = json_dumps(a, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        if (!*out) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    json_decref(a);
    return rc;
}

int tsync_store_conflicts_json(char **out, tsync_store *s)
{
    return tsync_store_conflicts_list_json(out, s, 0, 0, 0);
}

int tsync_store_conflicts_count(int64_t *open, int64_t *total, tsync_store *s)
{
    int res = has_column(s, "tsync_conflicts", "cid") > 0 && table_exists(s, TSYNC__RESOLVED);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        s->db,
        res ? "SELECT count(*), count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM " TSYNC__RESOLVED
              " r WHERE r.cid = c.cid)) FROM tsync_conflicts c"
            : "SELECT count(*), count(*) FROM tsync_conflicts",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "count conflicts");
    int x = sqlite3_step(st);
    if (x == SQLITE_ROW) {
        if (total) *total = sqlite3_column_int64(st, 0);
        if (open) *open = sqlite3_column_int64(st, 1);
    }
    sqlite3_finalize(st);
    return x == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, x, "count conflicts");
}

/* ---------------------------------------------------------------- resolving */

typedef struct {
    int64_t id;
    uint8_t cid[TSYNC__CID_BYTES];
    char *tbl, *col, *how; /* how: of its resolution, NULL when open */
    uint8_t *key;
    size_t klen;
    sqlite3_value *lose; /* the overwritten value (sqlite3_value_dup) */
} entry;

static void entry_free(entry *e)
{
    free(e->tbl), free(e->col), free(e->how), free(e->key);
    sqlite3_value_free(e->lose);
    memset(e, 0, sizeof *e);
}

static char *dup_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return strdup(t ? (const char *)t : "");
}

/* Loads entry id (inside the write transaction: tsync_resolved exists). */
static int entry_load(tsync_store *s, int64_t id, entry *e)
{
    memset(e, 0, sizeof *e);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "SELECT c.tbl, c.col, c.cid, c.key, c.lose_val, r.how FROM "
                                "tsync_conflicts c LEFT JOIN " TSYNC__RESOLVED
                                " r ON r.cid = c.cid WHERE c.id = ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read conflicts");
    sqlite3_bind_int64(st, 1, id);
    int x = sqlite3_step(st);
    if (x != SQLITE_ROW) {
        sqlite3_finalize(st);
        return x == SQLITE_DONE
                   ? tsync__err(TSYNC_ENOTFOUND, "conflict %lld does not exist", (long long)id)
                   : tsync__err_sqlite(s->db, x, "read conflicts");
    }
    e->id = id;
    e->tbl = dup_text(st, 0);
    e->col = dup_text(st, 1);
    if (sqlite3_column_bytes(st, 2) == TSYNC__CID_BYTES)
        memcpy(e->cid, sqlite3_column_blob(st, 2), TSYNC__CID_BYTES);
    else
        local_cid(s, id, e->cid);
    if (sqlite3_column_type(st, 3) == SQLITE_BLOB) {
        e->klen = (size_t)sqlite3_column_bytes(st, 3);
        if ((e->key = malloc(e->klen + 1))) memcpy(e->key, sqlite3_column_blob(st, 3), e->klen);
    }
    e->lose = sqlite3_value_dup(sqlite3_column_value(st, 4));
    if (sqlite3_column_type(st, 5) != SQLITE_NULL) e->how = dup_text(st, 5);
    sqlite3_finalize(st);
    if (!e->tbl || !e->col || !e->lose || (e->klen && !e->key)) {
        entry_free(e);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    return 0;
}

/* Writes v (or lose) into e's column of e's row, as a local write (captured); *stored receives
 * the value as the column keeps it (after its affinity), sqlite3_value_dup'd. */
static int write_value(tsync_store *s, const entry *e, sqlite3_value *lose, const tsync_value *v,
                       sqlite3_value **stored)
{
    tsync__table *t = tsync__table_by_name(s, e->tbl, strlen(e->tbl));
    if (!t)
        return tsync__err(TSYNC_ENOTFOUND, "conflict %lld: table %s is not replicated here",
                          (long long)e->id, e->tbl);
    int col = tsync__col_by_name(t, e->col, strlen(e->col));
    if (col < 0)
        return tsync__err(TSYNC_ENOTFOUND, "conflict %lld: table %s has no column %s here",
                          (long long)e->id, e->tbl, e->col);
    if (t->is_pk[col])
        return tsync__err(TSYNC_EINVAL, "conflict %lld: column %s.%s is part of the key",
                          (long long)e->id, e->tbl, e->col);
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (!e->key || tsync__key_decode(e->key, e->klen, kv, t->npk) != 0)
        return tsync__err(TSYNC_EINVAL,
                          "conflict %lld was recorded without its row's key; keep or dismiss it",
                          (long long)e->id);
    sqlite3_str *q = sqlite3_str_new(NULL);
    sqlite3_str_appendf(q, "UPDATE %s SET ", t->qname);
    tsync__sql_ident(q, "", t->cols[col]);
    sqlite3_str_appendf(q, " = ?%d WHERE %s RETURNING ", t->npk + 1, t->pk_where);
    tsync__sql_ident(q, "", t->cols[col]);
    char *sql = sqlite3_str_finish(q);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "resolve conflict");
    for (int i = 0; i < t->npk; i++) tsync__bind_val(st, i + 1, &kv[i]);
    int vi = t->npk + 1;
    if (lose) {
        sqlite3_bind_value(st, vi, lose);
    } else {
        switch (v->type) {
        case TSYNC_VALUE_INTEGER:
            sqlite3_bind_int64(st, vi, v->i);
            break;
        case TSYNC_VALUE_REAL:
            sqlite3_bind_double(st, vi, v->r);
            break;
        case TSYNC_VALUE_TEXT:
            sqlite3_bind_text64(st, vi, v->data ? v->data : "", v->len, SQLITE_STATIC, SQLITE_UTF8);
            break;
        case TSYNC_VALUE_BLOB:
            sqlite3_bind_blob64(st, vi, v->data ? v->data : "", v->len, SQLITE_STATIC);
            break;
        default:
            sqlite3_bind_null(st, vi);
        }
    }
    int x = sqlite3_step(st), found = x == SQLITE_ROW;
    if (found) {
        *stored = sqlite3_value_dup(sqlite3_column_value(st, 0));
        x = sqlite3_step(st);
    }
    if (x != SQLITE_DONE) {
        rc = tsync__err(TSYNC_EINVAL, "conflict %lld: writing %s.%s failed: %s", (long long)e->id,
                        e->tbl, e->col, sqlite3_errmsg(s->db));
        sqlite3_finalize(st);
        return rc;
    }
    sqlite3_finalize(st);
    if (!found)
        return tsync__err(TSYNC_ENOTFOUND,
                          "conflict %lld: the row of %s was deleted; nothing to write",
                          (long long)e->id, e->tbl);
    return *stored ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* This device's name from its latest certificate, or NULL (malloc'd). */
static char *own_name(tsync_store *s)
{
    if (!table_exists(s, "tsync_certs")) return NULL;
    sqlite3_stmt *st = NULL;
    char *name = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT device_name FROM tsync_certs WHERE device_pk=?1 ORDER BY "
                           "expires DESC LIMIT 1",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, s->pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
            name = strdup((const char *)sqlite3_column_text(st, 0));
    }
    sqlite3_finalize(st);
    return name;
}

/* Records the resolution of e (the value written: for take and value). */
static int put_resolution(tsync_store *s, const entry *e, const char *how, int with_value,
                          const char *name, uint64_t now)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db,
                                "INSERT OR REPLACE INTO " TSYNC__RESOLVED
                                "(cid, how, value, site, device, at_ms) "
                                "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "record resolution");
    sqlite3_bind_blob(st, 1, e->cid, TSYNC__CID_BYTES, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, how, -1, SQLITE_STATIC);
    if (with_value) sqlite3_bind_value(st, 3, e->lose);
    sqlite3_bind_blob(st, 4, s->site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    if (name) sqlite3_bind_text(st, 5, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (int64_t)now);
    int x = sqlite3_step(st);
    sqlite3_finalize(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "record resolution");
}

static int refuse_resolved(const entry *e)
{
    return tsync__err(TSYNC_EINVAL, "conflict %lld is already resolved (%s)", (long long)e->id,
                      e->how);
}

static int check_writable(tsync_store *s)
{
    return s->read_only ? tsync__err(TSYNC_EINVAL, "the database is open read-only") : 0;
}

int tsync_store_conflict_resolve(tsync_store *s, int64_t id, int32_t how, const tsync_value *value)
{
    int rc = check_writable(s);
    if (rc) return rc;
    if (how != TSYNC_RESOLVE_KEEP && how != TSYNC_RESOLVE_TAKE_OTHER && how != TSYNC_RESOLVE_VALUE)
        return tsync__err(TSYNC_EINVAL, "conflict %lld: unknown way to resolve (%d)", (long long)id,
                          (int)how);
    if (how == TSYNC_RESOLVE_VALUE && !value)
        return tsync__err(TSYNC_EINVAL, "conflict %lld: no value given", (long long)id);
    if (how == TSYNC_RESOLVE_VALUE &&
        (value->type < TSYNC_VALUE_NULL || value->type > TSYNC_VALUE_BLOB))
        return tsync__err(TSYNC_EINVAL, "conflict %lld: unknown value type %d", (long long)id,
                          (int)value->type);
    if ((rc = tsync__begin(s))) return rc;
    entry e = {0};
    char *name = NULL;
    if ((rc = tsync__resolved_ensure(s)) == 0 && (rc = entry_load(s, id, &e)) == 0 && e.how)
        rc = refuse_resolved(&e);
    sqlite3_value *stored = NULL;
    if (rc == 0 && how != TSYNC_RESOLVE_KEEP)
        rc = write_value(s, &e, how == TSYNC_RESOLVE_TAKE_OTHER ? e.lose : NULL, value, &stored);
    if (stored) {
        /* The record keeps the value as the column stored it. */
        sqlite3_value_free(e.lose);
        e.lose = stored;
    }
    if (rc == 0) name = own_name(s);
    static const char *const HOW[] = {"", "keep", "take", "value"};
    if (rc == 0)
        rc = put_resolution(s, &e, HOW[how], how != TSYNC_RESOLVE_KEEP, name, tsync__now_ms(s));
    free(name);
    entry_free(&e);
    if (rc == 0) rc = tsync__seal_locked(s, NULL);
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    return tsync__commit(s);
}

int tsync_store_conflicts_dismiss(tsync_store *s, const int64_t *ids, size_t n, size_t *dismissed)
{
    if (dismissed) *dismissed = 0;
    int rc = check_writable(s);
    if (rc) return rc;
    if ((rc = tsync__begin(s))) return rc;
    int64_t *all = NULL;
    size_t nall = 0;
    if ((rc = tsync__resolved_ensure(s)) == 0 && !ids) {
        /* Every open entry, ids taken first: the inserts below change what is open. */
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(s->db,
                                "SELECT c.id FROM tsync_conflicts c LEFT JOIN " TSYNC__RESOLVED
                                " r ON r.cid = c.cid WHERE r.cid IS NULL ORDER BY c.id",
                                -1, &st, NULL);
        if (rc != SQLITE_OK) rc = tsync__err_sqlite(s->db, rc, "read conflicts");
        size_t cap = 0;
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            if (nall == cap) {
                cap = cap ? cap * 2 : 64;
                int64_t *na = realloc(all, cap * sizeof *na);
                if (!na) {
                    rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                    break;
                }
                all = na;
            }
            all[nall++] = sqlite3_column_int64(st, 0);
        }
        sqlite3_finalize(st);
        ids = all;
        n = nall;
    }
    char *name = rc ? NULL : own_name(s);
    uint64_t now = tsync__now_ms(s);
    size_t done = 0;
    /* Every id checked before anything is written: all or nothing, and an id given twice (or two
     * entries of one collision) is dismissed once, not refused as resolved by this very call. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; rc == 0 && i < n; i++) {
            entry e;
            if ((rc = entry_load(s, ids[i], &e))) break;
            if (pass == 0 && e.how) rc = refuse_resolved(&e);
            /* In pass 1 an entry this call has resolved already (its id given twice, or its
             * collision's other entry) is neither written again nor counted again. */
            if (pass == 1 && !e.how && (rc = put_resolution(s, &e, "dismissed", 0, name, now)) == 0)
                done++;
            entry_free(&e);
        }
    free(name);
    free(all);
    if (rc == 0) rc = tsync__seal_locked(s, NULL);
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    rc = tsync__commit(s);
    if (rc == 0 && dismissed) *dismissed = done;
    return rc;
}

/* ---------------------------------------------------------------- the bound */

int tsync__conflicts_trim(tsync_store *s, size_t *dropped)
{
    if (dropped) *dropped = 0;
    if (!table_exists(s, TSYNC__RESOLVED) || has_column(s, "tsync_conflicts", "cid") <= 0) return 0;
    int64_t before = (int64_t)tsync__now_ms(s) - KEEP_MS;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        s->db,
        "DELETE FROM tsync_conflicts WHERE cid IN (SELECT cid FROM " TSYNC__RESOLVED
        " WHERE at_ms < ?1)",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "trim conflicts");
    sqlite3_bind_int64(st, 1, before);
    int x = sqlite3_step(st);
    sqlite3_finalize(st);
    if (x != SQLITE_DONE) return tsync__err_sqlite(s->db, x, "trim conflicts");
    if (dropped) *dropped = (size_t)sqlite3_changes(s->db);
    return 0;
}
