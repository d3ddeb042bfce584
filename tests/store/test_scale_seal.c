/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_scale_seal.c — sealing in chunks never changes what a replica shows.
 *
 * Sealing streams the pending changes table by table in key order and appends each batch to the
 * log as soon as it is full (store/seal.c, store/seal_scan.c). A seeded property: random
 * workloads (inserts, INSERT OR REPLACE, updates of many rows, the same rows updated again and
 * again, counter changes, key changes, deletes and re-inserts) on three tables (a text key with a
 * counter, a two-column key WITHOUT ROWID, an INT key) run on two stores alike, one sealing
 * with tiny batch budgets and one with the defaults, sealing at the same points. Each seal must
 * cut exactly as many batches as the row budget asks for the rows that changed; both stores must
 * show the same rows; replicas that merge each one's log must show them too, and the chunked log
 * must verify (hash chain, signatures, clocks rising).
 *
 * TSYNC_SEED=<n> runs one workload with seed n; TSYNC_SCALE_SEAL_RUNS=<n> runs n (default 12).
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "tests/lib/helpers.h"

TestSuite(scale_seal, .fini = th_cleanup);

/* One random statement of the workload, written into sql. */
static void random_write(uint64_t *rng, char *sql, size_t n)
{
    uint64_t r = th_rand(rng);
    int a = (int)(th_rand(rng) % 300), b = a + 1 + (int)(th_rand(rng) % 120);
    int v = (int)(th_rand(rng) % 1000) - 300;
    switch (r % 12) {
    case 0: /* a run of new products */
        snprintf(sql, n,
                 "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
                 "INSERT OR IGNORE INTO products SELECT printf('p%%05d',x), 'product '||x, "
                 "x*%d %% 997, x %% 7 FROM c",
                 a, b, v);
        break;
    case 1: /* the same rows again and again */
        snprintf(sql, n,
                 "UPDATE products SET price=price+1 WHERE id BETWEEN 'p%05d' AND 'p%05d'; "
                 "UPDATE products SET price=price+2, name=name||'x' WHERE id BETWEEN 'p%05d' AND "
                 "'p%05d'; UPDATE products SET price=price+3 WHERE id BETWEEN 'p%05d' AND 'p%05d'",
                 a, b, a, b, a, b);
        break;
    case 2: /* counters */
        snprintf(sql, n, "UPDATE products SET stock=stock+%d WHERE id BETWEEN 'p%05d' AND 'p%05d'",
                 v, a, b);
        break;
    case 3:
        snprintf(sql, n, "DELETE FROM products WHERE id BETWEEN 'p%05d' AND 'p%05d'", a, a + 40);
        break;
    case 4: /* replace: a delete and an insert to SQLite, an insert to the capture */
        snprintf(sql, n,
                 "INSERT OR REPLACE INTO products VALUES('p%05d', NULL, %d, 3), "
                 "('p%05d', 'replaced', NULL, 4)",
                 a, v, b);
        break;
    case 5:
        snprintf(
            sql, n,
            "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
            "INSERT OR REPLACE INTO lines SELECT 's'||(x %% 3), x, 'item '||x, x %% 5, "
            "CASE WHEN x %% 4 = 0 THEN NULL ELSE CAST(printf('%%x', x * 7919) AS BLOB) END FROM c",
            a, b);
        break;
    case 6:
        snprintf(sql, n, "UPDATE lines SET qty=qty+%d, note=NULL WHERE n BETWEEN %d AND %d", v, a,
                 b);
        break;
    case 7: /* a key change: a delete of the old key and an insert of the new one */
        snprintf(sql, n,
                 "UPDATE OR IGNORE lines SET n=n+1000 WHERE n BETWEEN %d AND %d AND shop='s1'", a,
                 a + 10);
        break;
    case 8:
        snprintf(sql, n, "DELETE FROM lines WHERE n BETWEEN %d AND %d", a, b);
        break;
    case 9:
        snprintf(sql, n,
                 "WITH RECURSIVE c(x) AS (SELECT %d UNION ALL SELECT x+1 FROM c WHERE x<%d) "
                 "INSERT OR REPLACE INTO moves SELECT x, 'move '||x, x*0.25 FROM c",
                 a, b);
        break;
    case 10:
        snprintf(sql, n,
                 "UPDATE moves SET amount=amount*2 WHERE id %% 3 = %d; DELETE FROM moves WHERE "
                 "id BETWEEN %d AND %d",
                 a % 3, a, a + 20);
        break;
    default: /* everything at once, then some of it back */
        snprintf(sql, n,
                 "UPDATE products SET price=%d; DELETE FROM moves WHERE id %% 2 = 0; "
                 "INSERT OR IGNORE INTO moves VALUES(%d, 'back', 1.5)",
                 v, a);
        break;
    }
}

static int64_t changed_rows(tsync_store *s)
{
    return th_int(
        s, "SELECT count(*) FROM (SELECT DISTINCT tbl, k0, k1, k2, k3 FROM tsync_pending)", -1);
}

static void one_workload(uint64_t seed, const char *dir)
{
    char name[64];
    snprintf(name, sizeof name, "chunked-%llu.db", (unsigned long long)seed);
    tsync_store *a = th_open_shop(th_path(dir, name));
    snprintf(name, sizeof name, "whole-%llu.db", (unsigned long long)seed);
    tsync_store *w = th_open_shop(th_path(dir, name));
    snprintf(name, sizeof name, "ra-%llu.db", (unsigned long long)seed);
    tsync_store *ra = th_open_shop(th_path(dir, name));
    snprintf(name, sizeof name, "rw-%llu.db", (unsigned long long)seed);
    tsync_store *rw = th_open_shop(th_path(dir, name));
    uint64_t rng = seed;
    size_t rows = 1 + th_rand(&rng) % 37;
    a->seal_batch_rows = rows;
    int tiny_bytes = th_rand(&rng) % 3 == 0;
    if (tiny_bytes) a->seal_batch_bytes = 600 + th_rand(&rng) % 2000;
    int steps = 8 + (int)(th_rand(&rng) % 25);
    char sql[1024];
    for (int i = 0; i < steps; i++) {
        random_write(&rng, sql, sizeof sql);
        th_exec(a, sql);
        th_exec(w, sql);
        if (th_rand(&rng) % 3 && i + 1 < steps) continue;
        int64_t n = changed_rows(a);
        cr_assert_eq(n, changed_rows(w), "seed %llu: both stores captured the same rows",
                     (unsigned long long)seed);
        size_t got = th_seal(a), whole = th_seal(w);
        size_t want = (size_t)((n + (int64_t)rows - 1) / (int64_t)rows);
        if (tiny_bytes)
            cr_assert_geq(got, want, "seed %llu: %lld rows, budget %zu rows: %zu batches",
                          (unsigned long long)seed, (long long)n, rows, got);
        else
            cr_assert_eq(got, want, "seed %llu: %lld rows, budget %zu rows: %zu batches",
                         (unsigned long long)seed, (long long)n, rows, got);
        cr_assert_eq(whole, n ? 1u : 0u, "seed %llu: %lld rows sealed whole in %zu batches",
                     (unsigned long long)seed, (long long)n, whole);
        cr_assert_str_eq(th_hash(a), th_hash(w), "seed %llu, step %d: %s", (unsigned long long)seed,
                         i, sql);
        if (th_rand(&rng) % 2) {
            cr_assert_eq(th_sync(a, ra), 0, "seed %llu: merge the chunked log",
                         (unsigned long long)seed);
            cr_assert_str_eq(th_hash(ra), th_hash(a), "seed %llu, step %d",
                             (unsigned long long)seed, i);
        }
    }
    cr_assert_eq(th_sync(a, ra), 0, "seed %llu", (unsigned long long)seed);
    cr_assert_eq(th_sync(w, rw), 0, "seed %llu", (unsigned long long)seed);
    const char *h = th_hash(a);
    cr_assert_str_eq(th_hash(w), h, "seed %llu", (unsigned long long)seed);
    cr_assert_str_eq(th_hash(ra), h, "seed %llu", (unsigned long long)seed);
    cr_assert_str_eq(th_hash(rw), h, "seed %llu", (unsigned long long)seed);
    /* The rows themselves, not only their hash: what the chunked replica shows. */
    const char *q = "SELECT group_concat(x, '|') FROM (SELECT quote(id)||quote(name)||quote(price)"
                    "||quote(stock) AS x FROM products UNION ALL SELECT quote(shop)||quote(n)||"
                    "quote(item)||quote(qty)||quote(note) FROM lines UNION ALL SELECT quote(id)||"
                    "quote(what)||quote(amount) FROM moves ORDER BY 1)";
    char *ta = th_text(a, q), *tr = th_text(ra, q);
    cr_assert((!ta && !tr) || (ta && tr && strcmp(ta, tr) == 0), "seed %llu: rows differ",
              (unsigned long long)seed);
    free(ta);
    free(tr);
    th_check_log(a, tsync_store_site_id(a), "the chunked store", 1, NULL, NULL);
    th_check_log(ra, tsync_store_site_id(a), "the chunked log merged", 0, NULL, NULL);
    tsync_store_free(a);
    tsync_store_free(w);
    tsync_store_free(ra);
    tsync_store_free(rw);
}

Test(scale_seal, chunked_seals_show_what_one_batch_shows, .timeout = 600)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    const char *one = getenv("TSYNC_SEED");
    const char *runs_env = getenv("TSYNC_SCALE_SEAL_RUNS");
    int runs = one ? 1 : runs_env ? atoi(runs_env) : 12;
    uint64_t seed = th_seed("scale_seal");
    for (int i = 0; i < runs; i++) one_workload(seed + (uint64_t)i * 0x9e3779b97f4a7c15ULL, d);
}

/* A big seal with the default budgets: batches of TSYNC__SEAL_BATCH_ROWS row changes, every row
 * in exactly one, and a merging replica shows the same rows. */
Test(scale_seal, a_big_transaction_seals_in_row_budget_batches, .timeout = 300)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_shop(th_path(d, "a.db")), *b = th_open_shop(th_path(d, "b.db"));
    int n = 2 * (int)TSYNC__SEAL_BATCH_ROWS + 123;
    char sql[400];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<%d) "
             "INSERT INTO products SELECT printf('p%%08d',x), 'product '||x, x %% 1000, 10 FROM c",
             n);
    th_exec(a, sql);
    cr_assert_eq(th_seal(a), 3u);
    th_exec(a, "UPDATE products SET price=price+1");
    cr_assert_eq(th_seal(a), 3u);
    th_exec(a, "DELETE FROM products WHERE price % 2 = 0");
    int64_t left = th_int(a, "SELECT count(*) FROM products", -1);
    size_t want = (size_t)((n - left + TSYNC__SEAL_BATCH_ROWS - 1) / TSYNC__SEAL_BATCH_ROWS);
    cr_assert_eq(th_seal(a), want);
    cr_assert_eq(th_sync(a, b), 0);
    cr_assert_str_eq(th_hash(b), th_hash(a));
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), left);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_tomb_products", -1), n - left);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* The delete trigger keeps the tombstone with one statement (capture version 3), and a database
 * whose triggers an older build wrote (capture version 2: a DELETE and an INSERT into the
 * tombstone, a separate NULL key check) gets the new ones when it is opened. */
Test(scale_seal, older_delete_trigger_is_replaced_at_open, .timeout = 60)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    const char *path = th_path(d, "a.db");
    tsync_store *a = th_open_shop(path);
    const char *trig = "SELECT sql FROM sqlite_schema WHERE name='tsync_ad_products'";
    char *sql = th_text(a, trig);
    cr_assert(sql && strstr(sql, "INSERT OR REPLACE INTO") && !strstr(sql, "DELETE FROM"), "%s",
              sql ? sql : "(none)");
    free(sql);
    cr_assert_geq(th_int(a, "SELECT v FROM tsync_meta WHERE k='capture'", -1), 3);
    int64_t tid = th_int(a, "SELECT id FROM tsync_tables WHERE name='products'", -1);
    char old[900];
    snprintf(old, sizeof old,
             "DROP TRIGGER tsync_ad_products; CREATE TRIGGER tsync_ad_products AFTER DELETE ON "
             "products BEGIN DELETE FROM tsync_tomb_products WHERE (id) IS (OLD.id); INSERT INTO "
             "tsync_tomb_products(id,name,price,stock) VALUES(OLD.id,OLD.name,OLD.price,"
             "OLD.stock); INSERT INTO tsync_pending(tbl,op,mask,wall,k0) VALUES(%lld,3,0,0,"
             "OLD.id); END; UPDATE tsync_meta SET v=2 WHERE k='capture';",
             (long long)tid);
    th_exec(a, old);
    tsync_store_free(a);
    a = th_open_shop(path);
    sql = th_text(a, trig);
    cr_assert(sql && strstr(sql, "INSERT OR REPLACE INTO") && !strstr(sql, "DELETE FROM"),
              "the trigger of the older build is still in place: %s", sql ? sql : "(none)");
    free(sql);
    cr_assert_geq(th_int(a, "SELECT v FROM tsync_meta WHERE k='capture'", -1), 3);
    /* Deleted, re-inserted and deleted again: the tombstone keeps the latest values. */
    th_exec(a, "INSERT INTO products VALUES('x', 'first', 1, 0); DELETE FROM products; "
               "INSERT INTO products VALUES('x', 'second', 2, 0); DELETE FROM products");
    th_seal(a);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_tomb_products", -1), 1);
    char *name = th_text(a, "SELECT name FROM tsync_tomb_products WHERE id='x'");
    cr_assert(name && strcmp(name, "second") == 0, "%s", name ? name : "(none)");
    free(name);
    /* The NULL key check still refuses the write. */
    sqlite3 *db = tsync_store_sqlite(a);
    cr_assert_neq(
        sqlite3_exec(db, "INSERT INTO products VALUES(NULL, 'x', 1, 0)", NULL, NULL, NULL),
        SQLITE_OK);
    cr_assert(strstr(sqlite3_errmsg(db), "may not be NULL"), "%s", sqlite3_errmsg(db));
    tsync_store_free(a);
}
