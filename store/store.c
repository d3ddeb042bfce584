/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/store.c — opening a replicated database: the connection and its PRAGMAs, the metadata
 * schema, the device key, the cache of replicated tables, and small SQL helpers.
 *
 * Design notes
 * - Metadata lives in tables prefixed tsync_ inside the database, so it commits atomically with
 *   the app's rows. The device key does not: it is a 0600 file beside the database.
 * - Merge applies remote changes with triggers switched off on its own connection only
 *   (SQLITE_DBCONFIG_ENABLE_TRIGGER), so capture stays on for every other connection and costs
 *   nothing extra on the app's writes.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "internal.h"
#include "conflicts_int.h"
#include "logrun_int.h"
#include "prep_int.h"
#include "store/sync.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS tsync_meta(k TEXT PRIMARY KEY, v) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tsync_sites(idx INTEGER PRIMARY KEY, site BLOB NOT NULL UNIQUE,"
    "  pk BLOB, inc BLOB, seq INTEGER NOT NULL DEFAULT 0, hash BLOB, sealed_seq INTEGER NOT NULL"
    "  DEFAULT 0, frozen_seq INTEGER);"
    "CREATE TABLE IF NOT EXISTS tsync_tables(id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  cols TEXT NOT NULL, npk INTEGER NOT NULL, pk TEXT NOT NULL, counters TEXT NOT NULL);"
    /* No NOT NULL and no declared types here: each constraint costs on every captured write,
     * and only the triggers write this table. */
    "CREATE TABLE IF NOT EXISTS tsync_pending(id INTEGER PRIMARY KEY, tbl, op, mask, wall,"
    "  k0, k1, k2, k3);"
    /* Captured changes over TSYNC_MAX_ROW_BYTES that sealing set aside (store/seal.c). */
    "CREATE TABLE IF NOT EXISTS tsync_unsealable(id INTEGER PRIMARY KEY, tbl, op, mask, wall,"
    "  k0, k1, k2, k3, bytes);"
    "CREATE TABLE IF NOT EXISTS tsync_log(id INTEGER PRIMARY KEY, site INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL, sig BLOB,"
    "  UNIQUE(site, seq));"
    /* Received runs stored whole (store/log_run.c): the tsync_log rows of their batches have
     * the body X'c1'. Added in log_format 2; a database of an older build gets it at its first
     * open by this one. */
    "CREATE TABLE IF NOT EXISTS tsync_log_runs(site INTEGER NOT NULL, first_seq INTEGER NOT NULL,"
    "  n INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY(site, first_seq));"
    "CREATE TABLE IF NOT EXISTS tsync_held(site INTEGER NOT NULL, seq INTEGER NOT NULL,"
    "  prev BLOB NOT NULL, hash BLOB NOT NULL, body BLOB NOT NULL, sig BLOB, reason TEXT NOT NULL,"
    "  PRIMARY KEY(site, seq)) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tsync_parked(id INTEGER PRIMARY KEY, site INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, row INTEGER NOT NULL, tbl TEXT NOT NULL, col TEXT,"
    "  reason TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tsync_forks(id INTEGER PRIMARY KEY, site INTEGER NOT NULL,"
    "  seq INTEGER NOT NULL, at_ms INTEGER NOT NULL, proof BLOB NOT NULL, reason TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tsync_conflicts(id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL,"
    "  tbl TEXT NOT NULL, pk TEXT NOT NULL, col TEXT NOT NULL, win_val, win_hlc INTEGER,"
    "  win_site BLOB, lose_val, lose_hlc INTEGER, lose_site BLOB);"
    "INSERT OR IGNORE INTO tsync_meta VALUES('format', 1);"
    "INSERT OR IGNORE INTO tsync_meta VALUES('hlc', 0);"
    "INSERT OR IGNORE INTO tsync_meta VALUES('log_format', 2);";

/* Columns added after the tables above were first created, each with the DEFAULT every existing
 * row takes: databases of an older build get them at their first open by this one (the same path
 * a new database takes, so there is one). tsync_tables.policies: the column policies
 * (store/replicate.c); tsync_conflicts.kind: 0 LWW, 1 review (an open conflict a person settles).
 */
static const struct {
    const char *table, *column, *decl;
} ADDED_COLUMNS[] = {
    {"tsync_tables", "policies", "TEXT NOT NULL DEFAULT '{}'"},
    {"tsync_conflicts", "kind", "INTEGER NOT NULL DEFAULT 0"},
};

/* tsync_meta 'log_format' (store/logrun_int.h): a database whose log a newer build wrote in a form
 * this one does not read is refused rather than served wrong. A database of a build before runs has
 * none: SCHEMA gave it tsync_log_runs and log_format 2 (nothing in its log changes). */
static int log_format_check(tsync_store *s)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT v FROM tsync_meta WHERE k='log_format'", -1, &st, NULL) !=
        SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "read schema");
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    if (v > TSYNC__LOG_FORMAT)
        return tsync__err(TSYNC_EVERSION,
                          "the database's log is of format %lld, written by a newer tillsync (this "
                          "one reads up to %d)",
                          (long long)v, TSYNC__LOG_FORMAT);
    return 0;
}

static int added_columns(tsync_store *s)
{
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < sizeof ADDED_COLUMNS / sizeof *ADDED_COLUMNS; i++) {
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM pragma_table_info(?1) WHERE name=?2", -1, &st,
                               NULL) != SQLITE_OK)
            return tsync__err_sqlite(s->db, SQLITE_ERROR, "read schema");
        sqlite3_bind_text(st, 1, ADDED_COLUMNS[i].table, -1, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, ADDED_COLUMNS[i].column, -1, SQLITE_STATIC);
        int x = sqlite3_step(st);
        sqlite3_finalize(st);
        if (x == SQLITE_ROW) continue;
        if (x != SQLITE_DONE) return tsync__err_sqlite(s->db, x, "read schema");
        char *sql = sqlite3_mprintf("ALTER TABLE %s ADD COLUMN %s %s", ADDED_COLUMNS[i].table,
                                    ADDED_COLUMNS[i].column, ADDED_COLUMNS[i].decl);
        rc = sql ? tsync__exec(s, sql) : tsync__err(TSYNC_ENOMEM, "out of memory");
        sqlite3_free(sql);
    }
    return rc;
}

uint64_t tsync__now_ms(tsync_store *s)
{
    return (uint64_t)((int64_t)tsync__wall_ms() + s->clock_offset_ms);
}

sqlite3_stmt *tsync__prep(tsync_store *s, const char *sql)
{
    for (int i = 0; i < s->nstmts; i++)
        if (s->stmts[i].sql == sql) {
            sqlite3_stmt *st = s->stmts[i].st;
            sqlite3_reset(st);
            sqlite3_clear_bindings(st);
            return st;
        }
    if (s->nstmts == (int)(sizeof s->stmts / sizeof s->stmts[0])) {
        /* Sized for every statement the library has; callers never finalize these, so one that
         * does not fit must not be handed out. */
        tsync__err(TSYNC_ERROR, "internal: the prepared-statement cache is full");
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
    if (rc != SQLITE_OK) {
        tsync__err_sqlite(s->db, rc, "prepare");
        return NULL;
    }
    s->stmts[s->nstmts].sql = sql;
    s->stmts[s->nstmts].st = st;
    s->nstmts++;
    return st;
}

int tsync__exec(tsync_store *s, const char *sql)
{
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, sql, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        int code = tsync__err(TSYNC_EIO, "SQL failed: %s", msg ? msg : sqlite3_errstr(rc));
        if ((rc & 0xff) == SQLITE_BUSY)
            code = tsync__err(TSYNC_EBUSY, "database is busy: %s", msg ? msg : "locked");
        if ((rc & 0xff) == SQLITE_FULL)
            code = tsync__err(TSYNC_EFULL, "disk full: %s", msg ? msg : "database or disk is full");
        sqlite3_free(msg);
        return code;
    }
    return 0;
}

int tsync__begin(tsync_store *s)
{
    sqlite3_stmt *st = tsync__prep(s, "BEGIN IMMEDIATE");
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "cannot begin a write transaction");
    s->in_txn = 1;
    /* One point read per write transaction: another handle may have taken a new incarnation
     * (store/identity.c); this one must not seal under the old site id. */
    int irc = tsync__identity_refresh_locked(s);
    if (irc) return irc;
    return tsync__tables_refresh(s);
}

int tsync__commit(tsync_store *s)
{
    sqlite3_stmt *st = tsync__prep(s, "COMMIT");
    int rc = st ? sqlite3_step(st) : SQLITE_ERROR;
    if (st) sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        int code = tsync__err_sqlite(s->db, rc, "commit failed");
        tsync__rollback(s);
        return code;
    }
    s->in_txn = 0;
    return 0;
}

void tsync__rollback(tsync_store *s)
{
    if (!sqlite3_get_autocommit(s->db)) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->in_txn = 0;
}

static int meta_get_int(tsync_store *s, const char *k, int64_t *v)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st, "SELECT v FROM tsync_meta WHERE k=?1", "read metadata");
    if (rc) return rc;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    *v = 0;
    if (sqlite3_step(st) == SQLITE_ROW) *v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    return 0;
}

static int meta_set_int(tsync_store *s, const char *k, int64_t v)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st, "INSERT OR REPLACE INTO tsync_meta VALUES(?1, ?2)",
                                 "write metadata");
    if (rc) return rc;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 2, v);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "write metadata");
}

int tsync__shop_offset(tsync_store *s, int64_t *offset_ms)
{
    int64_t off = 0, at = 0;
    *offset_ms = 0;
    if (meta_get_int(s, "shop_clock_at", &at) || at <= 0) return 0;
    uint64_t now = tsync__now_ms(s);
    /* Stale, or recorded "in the future" (our clock was set back since): not a measurement of
     * this clock any more. */
    if ((uint64_t)at > now + 5000 || now - (uint64_t)at > TSYNC__CLOCK_FRESH_MS) return 0;
    if (meta_get_int(s, "shop_clock", &off)) return 0;
    *offset_ms = off;
    return 1;
}

uint64_t tsync__ref_now_ms(tsync_store *s)
{
    uint64_t now = tsync__now_ms(s);
    int64_t off;
    if (tsync__shop_offset(s, &off) && off > 0) now += (uint64_t)off;
    return now;
}

int tsync__meta_int(tsync_store *s, const char *k, int64_t *get, int64_t set)
{
    return get ? meta_get_int(s, k, get) : meta_set_int(s, k, set);
}

int tsync__shop_clock_record(tsync_store *s, int known, int64_t offset_ms)
{
    if (!known) return meta_set_int(s, "shop_clock_at", 0);
    int rc = meta_set_int(s, "shop_clock", offset_ms);
    return rc ? rc : meta_set_int(s, "shop_clock_at", (int64_t)tsync__now_ms(s));
}

int tsync__hlc_load(tsync_store *s, tsync__hlc *h)
{
    int64_t v = 0;
    int rc = meta_get_int(s, "hlc", &v);
    *h = (tsync__hlc)v;
    return rc;
}

int tsync__hlc_store(tsync_store *s, tsync__hlc h)
{
    return meta_set_int(s, "hlc", (int64_t)h);
}

int tsync__site_index(tsync_store *s, const uint8_t site[TSYNC__SITE_BYTES], const uint8_t *pk,
                      const uint8_t *inc, uint32_t *idx)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st, "SELECT idx, pk IS NULL FROM tsync_sites WHERE site=?1",
                                 "read sites");
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *idx = (uint32_t)sqlite3_column_int64(st, 0);
        int nopk = sqlite3_column_int(st, 1);
        sqlite3_reset(st);
        if (nopk && pk) {
            rc = tsync__prep_or_fail(s, &st, "UPDATE tsync_sites SET pk=?2, inc=?3 WHERE idx=?1",
                                     "write sites");
            if (rc) return rc;
            sqlite3_bind_int64(st, 1, *idx);
            sqlite3_bind_blob(st, 2, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
            sqlite3_bind_blob(st, 3, inc, TSYNC__INC_BYTES, SQLITE_STATIC);
            rc = sqlite3_step(st);
            sqlite3_reset(st);
            if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "write sites");
        }
        return 0;
    }
    sqlite3_reset(st);
    rc = tsync__prep_or_fail(s, &st, "INSERT INTO tsync_sites(site, pk, inc) VALUES(?1, ?2, ?3)",
                             "write sites");
    if (rc) return rc;
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    if (pk) sqlite3_bind_blob(st, 2, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    if (inc) sqlite3_bind_blob(st, 3, inc, TSYNC__INC_BYTES, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "write sites");
    *idx = (uint32_t)sqlite3_last_insert_rowid(s->db);
    return 0;
}

int tsync__site_of(tsync_store *s, uint32_t idx, uint8_t site[TSYNC__SITE_BYTES])
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st, "SELECT site FROM tsync_sites WHERE idx=?1", "read sites");
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, idx);
    rc = TSYNC_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == TSYNC__SITE_BYTES) {
        memcpy(site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        rc = 0;
    }
    sqlite3_reset(st);
    return rc ? tsync__err(rc, "site index %u is unknown", idx) : 0;
}

/* uuid7(): a time-ordered UUID (RFC 9562) as text, for key defaults. Registered on every
 * connection a store opens and, by tsync_sqlite_register, on an app's own (store/sqlite_fn.c). */
void tsync__sql_uuid7(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    uint8_t u[16];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
    for (int i = 0; i < 6; i++) u[i] = (uint8_t)(ms >> (40 - 8 * i));
    randombytes_buf(u + 6, 10);
    u[6] = (uint8_t)(0x70 | (u[6] & 0x0f));
    u[8] = (uint8_t)(0x80 | (u[8] & 0x3f));
    char out[37];
    static const char d[] = "0123456789abcdef";
    int o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
        out[o++] = d[u[i] >> 4];
        out[o++] = d[u[i] & 15];
    }
    out[o] = 0;
    sqlite3_result_text(ctx, out, 36, SQLITE_TRANSIENT);
}

/* A read-only handle that cannot read because the -shm cannot be set up (a full disk), while no
 * -wal content exists: then the file alone is the database and can be read as immutable. */
static int ro_needs_immutable(tsync_store *s)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, "PRAGMA schema_version", -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    sqlite3_finalize(st);
    int prim = rc & 0xff;
    if (rc == SQLITE_ROW || (prim != SQLITE_IOERR && prim != SQLITE_FULL &&
                             prim != SQLITE_CANTOPEN && prim != SQLITE_READONLY))
        return 0;
    size_t n = strlen(s->path) + 5;
    char *wal = malloc(n);
    if (!wal) return 0;
    snprintf(wal, n, "%s-wal", s->path);
    struct stat sb;
    int empty = stat(wal, &sb) != 0 || sb.st_size == 0;
    free(wal);
    return empty;
}

char *tsync__immutable_uri(const char *path)
{
    size_t n = strlen(path);
    char *u = malloc(n * 3 + 32);
    if (!u) return NULL;
    char *o = u + sprintf(u, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
            strchr("/._-~", *p))
            *o++ = (char)*p;
        else
            o += sprintf(o, "%%%02X", *p);
    }
    strcpy(o, "?immutable=1");
    return u;
}

/* A read-only open: this key's site row, without registering it (0 when it has none yet). */
static int local_site_lookup(tsync_store *s)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT idx FROM tsync_sites WHERE site=?1");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_blob(st, 1, s->site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    s->local_idx = sqlite3_step(st) == SQLITE_ROW ? (uint32_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}

int tsync_store_open(tsync_store **out, const char *path, const tsync_store_options *opts)
{
    tsync_store_options def = TSYNC_STORE_OPTIONS_INIT;
    if (!opts) opts = &def;
    *out = NULL;
    int vrc =
        tsync__check_version("tsync_store_options", opts->version, TSYNC_STORE_OPTIONS_VERSION);
    if (vrc) return vrc;
    if (!path || !*path) return tsync__err(TSYNC_EINVAL, "no database path given");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");

    struct stat sb;
    int exists = stat(path, &sb) == 0;
    if (!exists && !opts->create)
        return tsync__err(TSYNC_ENOTFOUND, "database %s does not exist", path);

    tsync_store *s = calloc(1, sizeof *s);
    if (!s) return tsync__err(TSYNC_ENOMEM, "out of memory");
    s->skew_bound_ms = TSYNC__HLC_DEFAULT_SKEW_MS;
    s->path = strdup(path);
    if (opts->key_path) {
        s->key_path = strdup(opts->key_path);
    } else {
        size_t n = strlen(path) + 5;
        s->key_path = malloc(n);
        if (s->key_path) snprintf(s->key_path, n, "%s.key", path);
    }
    if (!s->path || !s->key_path) {
        tsync_store_free(s);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    /* Read-only (options version 2): nothing is written at open (no schema, no pragma that
     * writes, no key renewal, no site registration), so status, hash, export, backup and bundle
     * work on a full disk. */
    s->read_only = opts->version >= 2 && opts->read_only && !opts->create;
    int flags = (s->read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) |
                SQLITE_OPEN_NOMUTEX | (opts->create ? SQLITE_OPEN_CREATE : 0);
    int rc = sqlite3_open_v2(path, &s->db, flags, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot open database %s: %s", path,
                        s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        tsync_store_free(s);
        return rc;
    }
    if (s->read_only && ro_needs_immutable(s)) {
        /* A full disk: the -shm cannot grow, so even reading fails. With no WAL content the
         * database file holds everything, and nothing can write it while the disk is full. */
        sqlite3_close(s->db);
        s->db = NULL;
        char *uri = tsync__immutable_uri(path);
        s->immutable = 1;
        rc = uri ? sqlite3_open_v2(uri, &s->db,
                                   SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX | SQLITE_OPEN_URI,
                                   NULL)
                 : SQLITE_NOMEM;
        free(uri);
        if (rc != SQLITE_OK) {
            rc = tsync__err(TSYNC_EIO, "cannot open database %s: %s", path,
                            s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
            tsync_store_free(s);
            return rc;
        }
    }
    sqlite3_busy_timeout(s->db, opts->busy_timeout_ms ? (int)opts->busy_timeout_ms : 10000);
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_create_function(s->db, "uuid7", 0, SQLITE_UTF8, NULL, tsync__sql_uuid7, NULL, NULL);
    tsync__seal_fold_register(s->db);
    if (!(s->logrun = tsync__logrun_attach(s->db))) {
        tsync_store_free(s);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }

    char pragmas[200];
    snprintf(pragmas, sizeof pragmas,
             "PRAGMA journal_mode=WAL; PRAGMA synchronous=%s; PRAGMA foreign_keys=OFF;",
             opts->synchronous == TSYNC_SYNC_FULL ? "FULL" : "NORMAL");
    rc = tsync__exec(s, s->read_only ? "PRAGMA foreign_keys=OFF;" : pragmas);
    if (rc == 0 && !s->read_only) rc = tsync__exec(s, "BEGIN IMMEDIATE");
    if (rc == 0 && !s->read_only) {
        rc = tsync__exec(s, SCHEMA);
        if (rc == 0) rc = added_columns(s);
        if (rc == 0) rc = log_format_check(s);
        if (rc == 0)
            rc = tsync__exec(s, "COMMIT");
        else
            tsync__rollback(s);
    }
    if (rc == 0 && s->read_only) rc = log_format_check(s);
    if (rc == 0) rc = tsync__key_load_or_create(s, opts->create || !exists);
    if (rc == 0 && s->read_only) {
        tsync__site_id(s->pk, s->inc, s->site);
        rc = local_site_lookup(s);
        if (rc == 0) rc = tsync__identity_open_locked(s); /* reads the marker only */
    } else if (rc == 0) {
        if ((rc = tsync__exec(s, "BEGIN IMMEDIATE")) == 0) {
            /* Under the write lock: another process may have just renewed the incarnation. */
            rc = tsync__key_load_or_create(s, 0);
            if (rc == 0) tsync__site_id(s->pk, s->inc, s->site);
            if (rc == 0) rc = tsync__site_index(s, s->site, s->pk, s->inc, &s->local_idx);
            if (rc == 0) rc = tsync__identity_open_locked(s);
            if (rc == 0) rc = meta_set_int(s, "local_site", s->local_idx);
            if (rc == 0)
                rc = tsync__exec(s, "COMMIT");
            else
                tsync__rollback(s);
        }
    }
    if (rc == 0) rc = tsync__tables_refresh(s);
    if (rc == 0) rc = tsync__capture_upgrade(s);
    if (rc == 0 && !s->read_only) rc = tsync__conflicts_upgrade(s);
    if (rc != 0) {
        tsync_store_free(s);
        return rc;
    }
    *out = s;
    return 0;
}

void tsync_store_free(tsync_store *s)
{
    if (!s) return;
    tsync__tables_free(s);
    tsync__sync_merged_tables_free(s->merged_tables, s->nmerged_tables);
    for (int i = 0; i < s->nstmts; i++) sqlite3_finalize(s->stmts[i].st);
    s->nstmts = 0;
    tsync__logrun_detach(s->logrun);
    if (s->db) sqlite3_close_v2(s->db);
    sodium_memzero(s->sk, sizeof s->sk);
    free(s->path);
    free(s->key_path);
    free(s);
}

struct sqlite3 *tsync_store_sqlite(tsync_store *s)
{
    return s->db;
}

const uint8_t *tsync_store_site_id(tsync_store *s)
{
    return s->site;
}

int tsync__bind_val(sqlite3_stmt *st, int i, const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_INT:
        return sqlite3_bind_int64(st, i, v->i);
    case TSYNC__V_REAL:
        return sqlite3_bind_double(st, i, v->r);
    case TSYNC__V_TEXT:
        return sqlite3_bind_text(st, i, v->p ? v->p : "", (int)v->n, SQLITE_STATIC);
    case TSYNC__V_BLOB:
        return sqlite3_bind_blob(st, i, v->p ? v->p : "", (int)v->n, SQLITE_STATIC);
    default:
        return sqlite3_bind_null(st, i);
    }
}

void tsync__col_val(sqlite3_stmt *st, int i, tsync__val *v)
{
    memset(v, 0, sizeof *v);
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        v->type = TSYNC__V_INT;
        v->i = sqlite3_column_int64(st, i);
        break;
    case SQLITE_FLOAT:
        v->type = TSYNC__V_REAL;
        v->r = sqlite3_column_double(st, i);
        break;
    case SQLITE_TEXT:
        v->type = TSYNC__V_TEXT;
        v->p = sqlite3_column_text(st, i);
        v->n = (uint32_t)sqlite3_column_bytes(st, i);
        break;
    case SQLITE_BLOB:
        v->type = TSYNC__V_BLOB;
        v->p = sqlite3_column_blob(st, i);
        v->n = (uint32_t)sqlite3_column_bytes(st, i);
        break;
    default:
        v->type = TSYNC__V_NULL;
    }
}

/* Values as text for tsync_store_exec callbacks (blobs as x'hex'). */
int tsync_store_exec(tsync_store *s, const char *sql, tsync_row_cb row, void *ctx)
{
    const char *tail = sql;
    int rc = 0;
    while (tail && *tail) {
        sqlite3_stmt *st = NULL;
        int src = sqlite3_prepare_v2(s->db, tail, -1, &st, &tail);
        if (src != SQLITE_OK) {
            rc = tsync__err(TSYNC_EINVAL, "SQL error: %s", sqlite3_errmsg(s->db));
            break;
        }
        if (!st) continue; /* whitespace or comment */
        int n = sqlite3_column_count(st);
        const char **names = calloc((size_t)n + 1, sizeof *names);
        const char **vals = calloc((size_t)n + 1, sizeof *vals);
        char **owned = calloc((size_t)n + 1, sizeof *owned);
        if (!names || !vals || !owned) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        for (int i = 0; rc == 0 && i < n; i++) names[i] = sqlite3_column_name(st, i);
        while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
            for (int i = 0; i < n; i++) {
                free(owned[i]);
                owned[i] = NULL;
                int t = sqlite3_column_type(st, i);
                if (t == SQLITE_NULL) {
                    vals[i] = NULL;
                } else if (t == SQLITE_BLOB) {
                    int bn = sqlite3_column_bytes(st, i);
                    owned[i] = malloc((size_t)bn * 2 + 4);
                    if (!owned[i]) {
                        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                        break;
                    }
                    owned[i][0] = 'x', owned[i][1] = '\'';
                    tsync__hex(sqlite3_column_blob(st, i), (size_t)bn, owned[i] + 2);
                    strcat(owned[i], "'");
                    vals[i] = owned[i];
                } else {
                    vals[i] = (const char *)sqlite3_column_text(st, i);
                }
            }
            if (rc == 0 && row && row(ctx, n, names, vals) != 0)
                rc = tsync__err(TSYNC_ERROR, "stopped by the row callback");
        }
        if (rc == 0 && src != SQLITE_DONE)
            rc = tsync__err(TSYNC_EINVAL, "SQL error: %s", sqlite3_errmsg(s->db));
        for (int i = 0; owned && i < n; i++) free(owned[i]);
        free(owned);
        free(names);
        free(vals);
        sqlite3_finalize(st);
        if (rc) break;
    }
    if (rc == 0 && !sqlite3_get_autocommit(s->db)) return 0; /* the caller's open transaction */
    if (rc == 0) rc = tsync_store_seal(s, NULL);
    return rc;
}
