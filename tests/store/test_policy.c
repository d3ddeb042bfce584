/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_policy.c — column policies (docs/DATA_MODEL.md, "Column policies"): max and min
 * registers and review columns chosen at replicate. Three tills write the same row concurrently
 * and merge in different orders: the same rows everywhere, with the largest / smallest values.
 * A local write that would lower a max column (raise a min column) is undone where it happens,
 * also across a delete and re-insert and an INSERT OR REPLACE. Concurrent writes to a review
 * column are conflicts of kind 1 on both tills and show in the status. The policy travels with
 * the table's definition: batches (format 2) and snapshots (format 4) carry it, a fresh till
 * that replicates the table alike converges through either, and one whose definition differs
 * parks (batch) or refuses (snapshot) instead of merging by the wrong rule. Old databases get
 * the new columns at open.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/snapshot.h"
#include "crdt/crdt.h"
#include "store/snapshot.h"
#include "tests/lib/helpers.h"

TestSuite(policy, .fini = th_cleanup);

#define TABLE_SQL                                                                                  \
    "CREATE TABLE t(id TEXT PRIMARY KEY, hi, lo REAL, note TEXT, plain TEXT, qty INTEGER NOT "     \
    "NULL DEFAULT 0)"

static const tsync_column_policy POLICIES[] = {
    {"hi", TSYNC_POLICY_MAX}, {"lo", TSYNC_POLICY_MIN}, {"note", TSYNC_POLICY_REVIEW}};

/* A till with t replicated: hi max, lo min, note review, qty a counter (policies 0: none). */
static tsync_store *open_till(const char *dir, const char *name, int policies)
{
    tsync_store *s = th_open(th_path(dir, name));
    th_exec(s, TABLE_SQL);
    static const char *const ctr[] = {"qty"};
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.counters = ctr;
    o.ncounters = 1;
    o.policies = policies ? POLICIES : NULL;
    o.npolicies = policies ? 3 : 0;
    cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), 0, "replicate: %s", th_errmsg());
    return s;
}

static void sql_seal(tsync_store *s, const char *sql)
{
    th_exec(s, sql);
    th_seal(s);
}

static char *val(tsync_store *s, const char *col)
{
    char q[128];
    snprintf(q, sizeof q, "SELECT quote(%s) FROM t WHERE id='r'", col);
    return th_text(s, q);
}

static void expect(tsync_store *s, const char *col, const char *want, const char *who)
{
    TH_AUTO_FREE char *got = val(s, col);
    cr_assert(got && strcmp(got, want) == 0, "%s: %s is %s, expected %s", who, col,
              got ? got : "(no row)", want);
}

static void sync_ok(tsync_store *from, tsync_store *to)
{
    cr_assert_eq(th_sync(from, to), 0, "sync: %s", th_errmsg());
}

Test(policy, concurrent_writes_converge_in_every_order)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 1), *b = open_till(dir, "b.db", 1),
                *c = open_till(dir, "c.db", 1);
    sql_seal(a, "INSERT INTO t VALUES('r', 5, 2.5, 'a', 'a', 1)");
    sql_seal(b, "INSERT INTO t VALUES('r', 9, 3, 'b', 'b', 2)");
    sql_seal(c, "INSERT INTO t VALUES('r', 7, 0.5, 'c', 'c', 3)");
    /* each takes the other two in another order */
    sync_ok(b, a), sync_ok(c, a);
    sync_ok(c, b), sync_ok(a, b);
    sync_ok(a, c), sync_ok(b, c);
    tsync_store *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        const char *who = (const char *[]){"a", "b", "c"}[i];
        expect(all[i], "hi", "9", who);
        expect(all[i], "lo", "0.5", who);
        expect(all[i], "qty", "6", who);
        cr_assert_str_eq(th_hash(all[i]), th_hash(a), "%s differs from a", who);
    }
    /* LWW and review columns agree on one winner */
    TH_AUTO_FREE char *n = val(a, "note"), *p = val(a, "plain");
    cr_assert_str_eq(n, p, "note (review) and plain (LWW) pick the same last writer");
    for (int i = 0; i < 3; i++) tsync_store_free(all[i]);
}

Test(policy, a_local_write_below_a_max_is_undone)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 1), *b = open_till(dir, "b.db", 1);
    sql_seal(a, "INSERT INTO t(id, hi, lo) VALUES('r', 10, 1)");
    /* lower the max, raise the min, NULL both: nothing moves; raise max, lower min: taken */
    sql_seal(a, "UPDATE t SET hi=3, lo=4 WHERE id='r'");
    expect(a, "hi", "10", "a after lowering");
    expect(a, "lo", "1.0", "a after raising");
    sql_seal(a, "UPDATE t SET hi=NULL, lo=NULL WHERE id='r'");
    expect(a, "hi", "10", "a after NULL");
    expect(a, "lo", "1.0", "a after NULL");
    sql_seal(a, "UPDATE t SET hi=11, lo=-2 WHERE id='r'");
    expect(a, "hi", "11", "a");
    expect(a, "lo", "-2.0", "a");
    /* delete and re-insert lower: the tombstone's values stay */
    sql_seal(a, "DELETE FROM t WHERE id='r'");
    sql_seal(a, "INSERT INTO t(id, hi, lo) VALUES('r', 1, 100)");
    expect(a, "hi", "11", "a after re-insert");
    expect(a, "lo", "-2.0", "a after re-insert");
    /* INSERT OR REPLACE of the live row: the same */
    sql_seal(a, "INSERT OR REPLACE INTO t(id, hi, lo) VALUES('r', 2, 50)");
    expect(a, "hi", "11", "a after replace");
    expect(a, "lo", "-2.0", "a after replace");
    /* a till that saw only the later writes agrees */
    sync_ok(a, b);
    expect(b, "hi", "11", "b");
    expect(b, "lo", "-2.0", "b");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* and b's lower write, concurrent or not, changes nothing anywhere */
    sql_seal(b, "UPDATE t SET hi=0 WHERE id='r'");
    sync_ok(b, a);
    expect(a, "hi", "11", "a after b's lower write");
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a), tsync_store_free(b);
}

Test(policy, sqlite_type_order_and_null_as_no_value)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 1), *b = open_till(dir, "b.db", 1),
                *c = open_till(dir, "c.db", 1);
    sql_seal(a, "INSERT INTO t(id, hi, lo) VALUES('r', 500, NULL)");
    sql_seal(b, "INSERT INTO t(id, hi, lo) VALUES('r', 'abc', 3)");
    sql_seal(c, "INSERT INTO t(id, hi, lo) VALUES('r', X'00', 2.5)");
    sync_ok(b, a), sync_ok(c, a), sync_ok(a, b), sync_ok(a, c);
    tsync_store *all[] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        expect(all[i], "hi", "X'00'", "a blob is above text and numbers");
        expect(all[i], "lo", "2.5", "NULL is no value for a min register");
        cr_assert_str_eq(th_hash(all[i]), th_hash(a));
    }
    for (int i = 0; i < 3; i++) tsync_store_free(all[i]);
}

static int64_t conflicts_of_kind(tsync_store *s, int kind)
{
    char q[96];
    snprintf(q, sizeof q, "SELECT count(*) FROM tsync_conflicts WHERE kind=%d", kind);
    return th_int(s, q, -1);
}

Test(policy, review_conflicts_are_kind_1_on_both_tills_and_in_status)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 1), *b = open_till(dir, "b.db", 1);
    sql_seal(a, "INSERT INTO t(id, note, plain) VALUES('r', 'base', 'base')");
    sync_ok(a, b);
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, a), 0);
    cr_assert_eq(st.review_open, 0);
    cr_assert_not(tsync_store_status_attention(&st));
    tsync_store_status_clear(&st);
    char *js0 = NULL;
    cr_assert_eq(tsync_store_status_json(&js0, a, 0), 0);
    cr_assert_null(strstr(js0, "review_open"), "only when there are: %s", js0);
    tsync_free(js0);
    sql_seal(a, "UPDATE t SET note='from a', plain='from a', hi=1 WHERE id='r'");
    sql_seal(b, "UPDATE t SET note='from b', plain='from b', hi=2 WHERE id='r'");
    sync_ok(a, b), sync_ok(b, a);
    tsync_store *both[] = {a, b};
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(conflicts_of_kind(both[i], 1), 1, "till %d: one review conflict", i);
        cr_assert_eq(conflicts_of_kind(both[i], 0), 1, "till %d: one LWW conflict (plain)", i);
        cr_assert_eq(th_int(both[i], "SELECT count(*) FROM tsync_conflicts WHERE col='hi'", -1), 0,
                     "a max register has no conflict");
        cr_assert_eq(tsync_store_status_get(&st, both[i]), 0);
        cr_assert_eq(st.review_open, 1);
        cr_assert(tsync_store_status_attention(&st));
        tsync_store_status_clear(&st);
        char *js = NULL;
        cr_assert_eq(tsync_store_status_json(&js, both[i], 0), 0);
        cr_assert(strstr(js, "\"review_open\": 1") && strstr(js, "\"state\": \"attention\""), "%s",
                  js);
        tsync_free(js);
    }
    /* the winner shows on both */
    TH_AUTO_FREE char *na = val(a, "note"), *nb = val(b, "note");
    cr_assert_str_eq(na, nb);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    /* a caller built for status version 2 gets no review count and no attention from it */
    tsync_store_status v2 = TSYNC_STORE_STATUS_INIT;
    v2.version = 2;
    v2.review_open = 77;
    cr_assert_eq(tsync_store_status_get(&v2, a), 0);
    cr_assert_eq(v2.review_open, 77, "version 2's struct is written only up to its own fields");
    tsync_store_status_clear(&v2);
    tsync_store_free(a), tsync_store_free(b);
}

/* ---- the definition travels: batches and snapshots */

/* Decodes a copy of a chunk with its format byte set to fmt; the chunk itself stays as it was. */
static int chunk_decode_as(const uint8_t *chunk, size_t len, uint8_t fmt)
{
    uint8_t *c = malloc(len);
    memcpy(c, chunk, len);
    c[1] = fmt;
    tsync__arena a = {0};
    tsync__snap_chunk d;
    char err[TSYNC__ERRLEN];
    int rc = tsync__snap_decode(c, len, &d, &a, err);
    tsync__arena_free(&a);
    free(c);
    return rc;
}

/* The format of the newest batch body in s's log and the policies its table carries. */
static uint32_t last_batch(tsync_store *s, uint32_t *npolicies)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(tsync_store_sqlite(s),
                                    "SELECT body FROM tsync_log ORDER BY id DESC LIMIT 1", -1, &st,
                                    NULL),
                 SQLITE_OK);
    cr_assert_eq(sqlite3_step(st), SQLITE_ROW);
    tsync__arena a = {0};
    tsync__batch b;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_decode(sqlite3_column_blob(st, 0),
                                     (size_t)sqlite3_column_bytes(st, 0), &b, &a, err),
                 0, "%s", err);
    uint32_t f = b.format;
    *npolicies = b.ntables ? b.tables[0].npolicies : 0;
    tsync__arena_free(&a);
    sqlite3_finalize(st);
    return f;
}

Test(policy, policy_travels_by_bundle_and_snapshot_to_a_fresh_till)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 1), *b = open_till(dir, "b.db", 1);
    sql_seal(a, "INSERT INTO t VALUES('r', 5, 2.5, 'a', 'a', 1), ('s', 1, 1, 'x', 'x', 0)");
    uint32_t np = 0;
    cr_assert_eq(last_batch(a, &np), TSYNC__BATCH_FORMAT_POLICIES, "a batch with policies");
    cr_assert_eq(np, 3);
    sql_seal(b, "INSERT INTO t VALUES('r', 9, 3.5, 'b', 'b', 2)");
    sync_ok(b, a);
    sql_seal(a, "UPDATE t SET hi=4 WHERE id='s'"); /* above 1: taken */
    expect(a, "hi", "9", "a");
    /* a fresh till that replicates t alike, by bundle */
    tsync_store *d = open_till(dir, "d.db", 1);
    sync_ok(a, d);
    cr_assert_str_eq(th_hash(d), th_hash(a), "fresh till by bundle");
    /* and by snapshot (format 4: with policies) */
    tsync_store *e = open_till(dir, "e.db", 1);
    th_chunks sn;
    memset(&sn, 0, sizeof sn);
    cr_assert_eq(tsync__snap_export(a, 1u << 16, th_chunks_collect, &sn, &sn.vv), 0, "%s",
                 th_errmsg());
    cr_assert_eq(sn.c[0][1], TSYNC__SNAP_FORMAT_POLICIES, "chunk format byte");
    /* the same chunk called format 1 (what an older build reads) does not decode */
    cr_assert_eq(chunk_decode_as(sn.c[0], sn.len[0], TSYNC__SNAP_FORMAT), TSYNC_ECORRUPT);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync__snap_import(e, (const uint8_t *const *)sn.c, sn.len, sn.n, &sn.vv, &rep), 0,
                 "%s", th_errmsg());
    tsync_merge_report_clear(&rep);
    cr_assert_str_eq(th_hash(e), th_hash(a), "fresh till by snapshot");
    /* later writes still merge by the register on e */
    sql_seal(e, "UPDATE t SET lo=0.25 WHERE id='r'");
    sql_seal(a, "UPDATE t SET lo=1.5 WHERE id='r'");
    sync_ok(e, a), sync_ok(a, e);
    expect(a, "lo", "0.25", "a"), expect(e, "lo", "0.25", "e");

    /* a till whose t has no policies parks those columns, and refuses the snapshot */
    tsync_store *f = open_till(dir, "f.db", 0);
    rep = (tsync_merge_report)TSYNC_MERGE_REPORT_INIT;
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, f), 0);
    uint8_t *bun = NULL;
    size_t blen = 0;
    cr_assert_eq(tsync_store_bundle(&bun, &blen, a, state, NULL), 0);
    cr_assert_eq(tsync_store_merge(f, bun, blen, &rep), 0, "%s", th_errmsg());
    cr_assert_gt(rep.parked, 0, "policy columns parked");
    tsync_merge_report_clear(&rep);
    free(bun), free(state);
    cr_assert_gt(th_int(f, "SELECT count(*) FROM tsync_parked WHERE reason LIKE '%policy%'", 0), 0);
    cr_assert_eq(th_int(f, "SELECT count(*) FROM tsync_parked WHERE col='plain'", 0), 0,
                 "an LWW column applies");
    tsync_store *g = open_till(dir, "g.db", 0);
    int rc = tsync__snap_import(g, (const uint8_t *const *)sn.c, sn.len, sn.n, &sn.vv, NULL);
    cr_assert_eq(rc, TSYNC_EREFUSED, "snapshot with other policies: %d %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), "policy"), "%s", th_errmsg());
    th_chunks_free(&sn);
    tsync_store *all[] = {a, b, d, e, f, g};
    for (int i = 0; i < 6; i++) tsync_store_free(all[i]);
}

Test(policy, tables_without_policies_keep_the_old_formats)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = open_till(dir, "a.db", 0);
    sql_seal(a, "INSERT INTO t(id, hi) VALUES('r', 5)");
    uint32_t np = 9;
    cr_assert_eq(last_batch(a, &np), TSYNC__BATCH_FORMAT, "what older tills read");
    cr_assert_eq(np, 0);
    th_chunks sn;
    memset(&sn, 0, sizeof sn);
    cr_assert_eq(tsync__snap_export(a, 1u << 16, th_chunks_collect, &sn, &sn.vv), 0);
    cr_assert_eq(sn.c[0][1], TSYNC__SNAP_FORMAT);
    cr_assert_eq(chunk_decode_as(sn.c[0], sn.len[0], TSYNC__SNAP_FORMAT_POLICIES), TSYNC_ECORRUPT,
                 "format 4 without a policy");
    th_chunks_free(&sn);
    char *js = NULL;
    cr_assert_eq(tsync_store_schema_json(&js, a, NULL), 0);
    cr_assert_null(strstr(js, "policy"), "%s", js);
    tsync_free(js);
    tsync_store *b = open_till(dir, "b.db", 1);
    cr_assert_eq(tsync_store_schema_json(&js, b, NULL), 0);
    cr_assert(strstr(js, "\"policy\": \"max\"") && strstr(js, "\"policy\": \"review\""), "%s", js);
    tsync_free(js);
    tsync_store_free(a), tsync_store_free(b);
}

Test(policy, replicate_refuses_bad_policies)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    th_exec(s, TABLE_SQL);
    static const char *const ctr[] = {"qty"};
    struct {
        tsync_column_policy p;
        int rc;
        const char *msg;
    } bad[] = {
        {{"id", TSYNC_POLICY_MAX}, TSYNC_EUNSUPPORTED, "key"},
        {{"qty", TSYNC_POLICY_MIN}, TSYNC_EINVAL, "two merge rules"},
        {{"nope", TSYNC_POLICY_MAX}, TSYNC_ENOTFOUND, "no column nope"},
        {{"hi", 7}, TSYNC_EINVAL, "unknown merge policy"},
        {{"hi", TSYNC_POLICY_LWW}, TSYNC_EINVAL, "unknown merge policy"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
        o.counters = ctr;
        o.ncounters = 1;
        o.policies = &bad[i].p;
        o.npolicies = 1;
        cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), bad[i].rc, "case %zu: %s", i,
                     th_errmsg());
        cr_assert(strstr(th_errmsg(), bad[i].msg), "case %zu: %s", i, th_errmsg());
    }
    tsync_column_policy twice[] = {{"hi", TSYNC_POLICY_MAX}, {"HI", TSYNC_POLICY_MIN}};
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.policies = twice;
    o.npolicies = 2;
    cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), TSYNC_EINVAL);
    o.version = 2;
    cr_assert_eq(tsync_store_replicate_ext(s, "t", &o), TSYNC_EVERSION);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_tables", -1), 0, "nothing recorded");
    tsync_replicate_options x;
    cr_assert_eq(tsync_replicate_options_init(&x, 1), 0);
    cr_assert_eq(x.version, 1);
    cr_assert_null(x.policies);
    cr_assert_eq(tsync_replicate_options_init(&x, 2), TSYNC_EVERSION);
    tsync_store_free(s);
}

Test(policy, an_older_database_gets_the_new_columns_at_open)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "old.db");
    tsync_store *s = open_till(dir, "old.db", 0);
    sql_seal(s, "INSERT INTO t(id, note) VALUES('r', 'x')");
    /* what an older build left: no policies, no conflict kind */
    th_exec(s, "ALTER TABLE tsync_tables DROP COLUMN policies;"
               "ALTER TABLE tsync_conflicts DROP COLUMN kind");
    tsync_store_free(s);
    s = th_open(path);
    cr_assert_eq(th_int(s,
                        "SELECT count(*) FROM pragma_table_info('tsync_tables') WHERE "
                        "name='policies'",
                        -1),
                 1);
    cr_assert_eq(th_int(s,
                        "SELECT count(*) FROM pragma_table_info('tsync_conflicts') WHERE "
                        "name='kind'",
                        -1),
                 1);
    TH_AUTO_FREE char *pol = th_text(s, "SELECT policies FROM tsync_tables WHERE name='t'");
    cr_assert_str_eq(pol, "{}");
    sql_seal(s, "UPDATE t SET hi=1 WHERE id='r'");
    expect(s, "hi", "1", "old");
    tsync_store_free(s);
}
