/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_oversize.c — writes too large for one batch (issue 10, defect 1). A
 * transaction is not a unit of sync: one whose changes exceed a batch is sealed as several signed,
 * chained batches (by bytes and by row count) that merge on a peer to the same content, and the
 * sales after it seal and sync. A single row over TSYNC_MAX_ROW_BYTES is refused by the capture
 * trigger at write time, with nothing committed; a row at the limit is sealed and travels;
 * `replicate` refuses a table holding such a row. Databases of older builds: their capture triggers
 * are replaced at open, and an oversize change they already captured is set aside, reported,
 * without holding back the sales around it (or backups), until the row is made smaller or deleted.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"
#include "tillsync/backup.h"

TestSuite(store_oversize, .fini = th_cleanup);

static const char *FILES_DDL = "CREATE TABLE files(id TEXT PRIMARY KEY, data BLOB, note TEXT)";

/* A replica with files(id, data, note) replicated. */
static tsync_store *open_files(const char *path)
{
    tsync_store *s = th_open(path);
    th_exec(s, FILES_DDL);
    cr_assert_eq(tsync_store_replicate(s, "files", NULL, 0), 0, "replicate: %s", th_errmsg());
    return s;
}

/* Runs SQL through the public API (which seals); returns its result code. */
static int run(tsync_store *s, const char *sql)
{
    return tsync_store_exec(s, sql, NULL, NULL);
}

static int64_t own_batches(tsync_store *s)
{
    return th_int(s,
                  "SELECT count(*) FROM tsync_log l JOIN tsync_meta m ON m.k='local_site' "
                  "AND l.site = m.v",
                  -1);
}

typedef struct {
    size_t pieces, batches, max_bytes;
} pieces;

static int on_piece(void *ctx, const tsync__run_piece *p)
{
    pieces *c = ctx;
    c->pieces++;
    c->batches += p->n;
    if (p->bytes > c->max_bytes) c->max_bytes = p->bytes;
    return 0;
}

/* (a) One transaction of 80 MiB (over the 64 MiB hard limit of one batch) is sealed as several
 * batches, each well under the limit; they chain, their clocks rise, they travel as run pieces and
 * merge on a peer to the same content; a sale after them seals and syncs. */
Test(store_oversize, large_transaction_seals_as_several_batches, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_files(th_path(d, "a.db"));
    tsync_store *b = open_files(th_path(d, "b.db"));
    th_exec(a, "BEGIN");
    for (int i = 0; i < 80; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO files VALUES('f%02d', zeroblob(%d), 'file %d')", i,
                 1 << 20, i);
        th_exec(a, sql);
    }
    th_exec(a, "COMMIT");
    size_t n = 0;
    int rc = tsync_store_seal(a, &n);
    cr_assert_eq(rc, 0, "sealing an 80 MiB transaction failed: %s", th_errmsg());
    cr_assert_geq(n, 80 / 5, "80 MiB sealed as %zu batches", n);
    cr_assert_eq(own_batches(a), (int64_t)n);
    int64_t biggest = th_int(a, "SELECT max(length(body)) FROM tsync_log", -1);
    cr_assert_leq(biggest, (int64_t)TSYNC__SEAL_BATCH_BYTES + (1 << 20) + 4096,
                  "a batch of %lld bytes", (long long)biggest);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    /* Chained, signed, clocks strictly rising across the batches of the one transaction. */
    th_check_log(a, tsync_store_site_id(a), "a", 1, NULL, NULL);

    /* The batches travel as run pieces of about 1 MiB, never one oversize piece. */
    pieces c = {0};
    cr_assert_eq(tsync__sync_runs(a, NULL, SIZE_MAX, on_piece, &c, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(c.batches, n);
    cr_assert_leq(c.max_bytes, (size_t)TSYNC__SEAL_BATCH_BYTES + (2u << 20), "piece of %zu",
                  c.max_bytes);

    /* A later sale seals as the next batch and everything syncs. */
    cr_assert_eq(run(a, "INSERT INTO files VALUES('sale', x'01', 'after')"), 0, "%s", th_errmsg());
    cr_assert_eq(own_batches(a), (int64_t)n + 1);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM files", -1), 81);
    cr_assert_eq(th_int(b, "SELECT length(data) FROM files WHERE id='f79'", -1), 1 << 20);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_check_log(b, tsync_store_site_id(a), "b holding a's log", 0, NULL, NULL);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* (a) Many small rows in one statement (INSERT ... SELECT) are cut by the row-count budget. */
Test(store_oversize, insert_select_of_many_rows_seals_as_several_batches, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    int rows = 3 * (int)TSYNC__SEAL_BATCH_ROWS + 17;
    char sql[400];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i < %d) "
             "INSERT INTO products(id, name, price, stock) SELECT printf('p%%07d', i), "
             "'item ' || i, i, 1 FROM c",
             rows);
    th_exec(a, sql);
    size_t n = 0;
    cr_assert_eq(tsync_store_seal(a, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 4, "%d rows sealed as %zu batches", rows, n);
    th_check_log(a, tsync_store_site_id(a), "a", 1, NULL, NULL);
    cr_assert_eq(run(a, "UPDATE products SET stock = stock + 4 WHERE id='p0000001'"), 0);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), rows);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p0000001'", -1), 5);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

/* (b) A 70 MB blob is refused at write time with a clear message; nothing of it commits, nothing
 * is left pending, and the sales after it seal and sync. */
Test(store_oversize, oversize_row_is_refused_at_write_time, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_files(th_path(d, "a.db"));
    tsync_store *b = open_files(th_path(d, "b.db"));
    cr_assert_eq(run(a, "INSERT INTO files VALUES('s1', x'01', 'first sale')"), 0);
    int64_t before = own_batches(a);

    int rc = run(a, "INSERT INTO files VALUES('big', zeroblob(70000000), 'movie')");
    cr_assert_neq(rc, 0, "a 70 MB row was accepted");
    cr_assert(strstr(th_errmsg(), "row of table files") && strstr(th_errmsg(), "per-row limit"),
              "unclear refusal: %s", th_errmsg());
    cr_assert(strstr(th_errmsg(), "33554432"), "the limit is not named: %s", th_errmsg());
    cr_assert_null(strchr(th_errmsg(), '\n'), "not one line: %s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM files WHERE id='big'", -1), 0,
                 "the refused row committed");
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);

    /* In a transaction: the failing statement is undone, the app decides about the rest. */
    th_exec(a, "BEGIN");
    th_exec(a, "INSERT INTO files VALUES('s2', x'02', 'in txn')");
    cr_assert_neq(sqlite3_exec(tsync_store_sqlite(a),
                               "INSERT INTO files VALUES('big2', zeroblob(40000000), NULL)", NULL,
                               NULL, NULL),
                  SQLITE_OK);
    th_exec(a, "COMMIT");
    cr_assert_eq(th_int(a, "SELECT count(*) FROM files WHERE id='big2'", -1), 0);

    /* Text counts in bytes, and an UPDATE that grows a row past the limit is refused too. */
    cr_assert_neq(run(a, "INSERT INTO files VALUES('t', NULL, printf('%.*c', 34000000, 'x'))"), 0);
    cr_assert_eq(run(a, "INSERT INTO files VALUES('half', zeroblob(20000000), 'ok')"), 0, "%s",
                 th_errmsg());
    cr_assert_neq(run(a, "UPDATE files SET note = printf('%.*c', 14000000, 'y') WHERE id='half'"),
                  0);
    char *note = th_text(a, "SELECT note FROM files WHERE id='half'");
    cr_assert_str_eq(note, "ok");
    free(note);
    /* Multi-byte characters: 7,000,000 'é' are 14,000,000 bytes (plus the 20 MB blob). */
    cr_assert_neq(run(a, "UPDATE files SET note = replace(printf('%.*c', 7000000, 'x'), 'x', "
                         "char(233)) WHERE id='half'"),
                  0, "text was counted in characters, not bytes");

    /* A row right at the limit is accepted, sealed and sent. */
    char sql[200];
    snprintf(sql, sizeof sql, "INSERT INTO files VALUES('edge', zeroblob(%u), 'e')",
             (unsigned)TSYNC_MAX_ROW_BYTES - 8);
    cr_assert_eq(run(a, sql), 0, "a row at the limit: %s", th_errmsg());

    /* Later sales seal and sync. */
    cr_assert_eq(run(a, "INSERT INTO files VALUES('s3', x'03', 'later sale')"), 0, "%s",
                 th_errmsg());
    cr_assert_gt(own_batches(a), before);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM files", -1), 5);
    cr_assert_eq(th_int(b, "SELECT length(data) FROM files WHERE id='edge'", -1),
                 (int64_t)TSYNC_MAX_ROW_BYTES - 8);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

/* (c) After a refusal, updates and deletes of the table work and replicate. */
Test(store_oversize, writes_after_a_refusal_work, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_files(th_path(d, "a.db"));
    tsync_store *b = open_files(th_path(d, "b.db"));
    cr_assert_eq(run(a, "INSERT INTO files VALUES('k', x'01', 'keep'), ('g', x'02', 'go')"), 0);
    cr_assert_neq(run(a, "UPDATE files SET data = zeroblob(70000000) WHERE id='k'"), 0);
    cr_assert_eq(th_int(a, "SELECT length(data) FROM files WHERE id='k'", -1), 1);
    cr_assert_eq(run(a, "UPDATE files SET note = 'kept' WHERE id='k'"), 0, "%s", th_errmsg());
    cr_assert_eq(run(a, "DELETE FROM files WHERE id='g'"), 0, "%s", th_errmsg());
    cr_assert_eq(run(a, "INSERT INTO files VALUES('n', x'03', 'new')"), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    char *rows = th_text(b, "SELECT group_concat(id || '=' || note, ',') FROM "
                            "(SELECT * FROM files ORDER BY id)");
    cr_assert_str_eq(rows, "k=kept,n=new");
    free(rows);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

/* replicate refuses a table that already holds a row it could never seal. */
Test(store_oversize, replicate_refuses_a_table_with_an_oversize_row, .timeout = 60)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(d, "a.db"));
    th_exec(a, FILES_DDL);
    th_exec(a, "INSERT INTO files VALUES('ok', x'01', 'small'), ('big', zeroblob(34000000), 'b')");
    int rc = tsync_store_replicate(a, "files", NULL, 0);
    cr_assert_eq(rc, TSYNC_EUNSUPPORTED, "got %d: %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), "files") && strstr(th_errmsg(), "per-row limit"), "%s",
              th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_tables", -1), 0);
    th_exec(a, "DELETE FROM files WHERE id='big'");
    cr_assert_eq(tsync_store_replicate(a, "files", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(own_batches(a), 1);
    tsync_store_free(a);
}

/* A database of an older build: its capture triggers lack the size check. Opening it with this
 * build replaces them, so the oversize write is refused from then on. */
Test(store_oversize, older_capture_triggers_are_replaced_at_open, .timeout = 60)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    const char *path = th_path(d, "a.db");
    tsync_store *a = open_files(path);
    int64_t tid = th_int(a, "SELECT id FROM tsync_tables WHERE name='files'", -1);
    char sql[600];
    snprintf(sql, sizeof sql,
             "DROP TRIGGER tsync_ai_files; CREATE TRIGGER tsync_ai_files AFTER INSERT ON files "
             "BEGIN INSERT INTO tsync_pending(tbl,op,mask,wall,k0) VALUES(%lld,1,-1,0,NEW.id); "
             "END; DELETE FROM tsync_meta WHERE k='capture';",
             (long long)tid);
    th_exec(a, sql);
    tsync_store_free(a);
    a = th_open(path);
    cr_assert_neq(run(a, "INSERT INTO files VALUES('big', zeroblob(40000000), NULL)"), 0,
                  "the trigger of the older build is still in place");
    cr_assert(strstr(th_errmsg(), "per-row limit"), "%s", th_errmsg());
    cr_assert_eq(run(a, "INSERT INTO files VALUES('s', x'01', 'sale')"), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    /* Opening again writes nothing more. */
    int64_t v = th_int(a, "SELECT v FROM tsync_meta WHERE k='capture'", -1);
    cr_assert_geq(v, 2);
    tsync_store_free(a);
}

/* An oversize change captured by an older build (the state that wedged sealing for good) no longer
 * blocks anything: the sales around it seal and sync, it is set aside and reported in the state,
 * backup works, and once the row is deleted the delete is sealed and the report goes. */
Test(store_oversize, oversize_change_of_an_older_build_does_not_block_sales, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_files(th_path(d, "a.db"));
    tsync_store *b = open_files(th_path(d, "b.db"));
    cr_assert_eq(run(a, "INSERT INTO files VALUES('s1', x'01', 'before')"), 0);
    /* What an older build captured: the row and its pending change, sealed by nobody yet. */
    sqlite3 *db = tsync_store_sqlite(a);
    int64_t tid = th_int(a, "SELECT id FROM tsync_tables WHERE name='files'", -1);
    cr_assert_eq(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL), SQLITE_OK);
    char sql[400];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO files VALUES('big', zeroblob(70000000), 'movie'); "
             "INSERT INTO tsync_pending(tbl,op,mask,wall,k0) VALUES(%lld,1,-1,1,'big'); COMMIT;",
             (long long)tid);
    th_exec(a, sql);
    cr_assert_eq(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 1, NULL), SQLITE_OK);
    th_exec(a, "INSERT INTO files VALUES('s2', x'02', 'behind it')");

    size_t n = 0;
    cr_assert_eq(tsync_store_seal(a, &n), 0, "sealing is wedged: %s", th_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_unsealable", -1), 1, "set aside");
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, a), 0);
    cr_assert(strstr(state, "\"unsealable\"") && strstr(state, "per-row limit") &&
                  strstr(state, "table files") && strstr(state, "70000"),
              "the state does not report the unsealable row: %s", state);
    free(state);
    /* Sealing again finds nothing to do. */
    cr_assert_eq(tsync_store_seal(a, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 0);
    /* More sales keep going out; backup works. */
    cr_assert_eq(run(a, "INSERT INTO files VALUES('s3', x'03', 'later')"), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_unsealable", -1), 1, "still set aside");
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM files", -1), 3);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM files WHERE id='big'", -1), 0);
    tsync_backup_options bo = TSYNC_BACKUP_OPTIONS_INIT;
    char *manifest = NULL;
    cr_assert_eq(tsync_backup(a, th_path(d, "a.backup"), &bo, &manifest), 0, "backup: %s",
                 th_errmsg());
    free(manifest);

    /* Updates that keep the row too large are refused; deleting it lets its change go as a plain
     * delete, and the report goes. */
    cr_assert_neq(run(a, "UPDATE files SET note = 'x' WHERE id='big'"), 0);
    cr_assert_eq(run(a, "DELETE FROM files WHERE id='big'"), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_pending", -1), 0);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_unsealable", -1), 0);
    cr_assert_eq(tsync_store_state_json(&state, a), 0);
    cr_assert_null(strstr(state, "unsealable"), "%s", state);
    free(state);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    th_check_log(a, tsync_store_site_id(a), "a", 1, NULL, NULL);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* The same for a row made smaller instead: its change, folded with the one set aside, is sealed
 * as an insert with the values it has now. */
Test(store_oversize, set_aside_change_goes_once_the_row_is_smaller, .timeout = 120)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = open_files(th_path(d, "a.db"));
    tsync_store *b = open_files(th_path(d, "b.db"));
    sqlite3 *db = tsync_store_sqlite(a);
    int64_t tid = th_int(a, "SELECT id FROM tsync_tables WHERE name='files'", -1);
    cr_assert_eq(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 0, NULL), SQLITE_OK);
    char sql[400];
    snprintf(sql, sizeof sql,
             "BEGIN; INSERT INTO files VALUES('big', zeroblob(40000000), 'movie'); "
             "INSERT INTO tsync_pending(tbl,op,mask,wall,k0) VALUES(%lld,1,-1,1,'big'); COMMIT;",
             (long long)tid);
    th_exec(a, sql);
    cr_assert_eq(sqlite3_db_config(db, SQLITE_DBCONFIG_ENABLE_TRIGGER, 1, NULL), SQLITE_OK);
    cr_assert_eq(tsync_store_seal(a, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(own_batches(a), 0);
    cr_assert_eq(run(a, "UPDATE files SET data = x'0102' WHERE id='big'"), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_unsealable", -1), 0);
    cr_assert_eq(th_sync(a, b), 0, "sync: %s", th_errmsg());
    char *note = th_text(b, "SELECT note FROM files WHERE id='big'");
    cr_assert_str_eq(note, "movie", "the insert's other values did not travel");
    free(note);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}
