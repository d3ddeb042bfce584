/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_signed_migration.c — migrations signed by the shop admin (issue 10, defect 9,
 * the second half; crdt/cert.c kind 5, store/trust.c, store/migrate.c): the record is strict and
 * signed (every byte flip refused); installed on one till it runs there with the checks of a
 * migrations folder, travels to the other till in a bundle with the trust records, runs there,
 * and the changes that till had parked for want of the column apply, so both show the same rows
 * and no difference of definitions is left. Another shop's migration, one on a database not
 * enrolled, and one that cannot run are refused; a refusal stays visible until a fix (signed
 * later under the same number) runs.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cert.h"
#include "store/internal.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

TestSuite(signed_migration, .fini = th_cleanup);

#define DAY (86400000ull)

static tsync__shopkey shop(uint8_t seed_byte, const char *name)
{
    uint8_t seed[32], id[TSYNC__SHOP_ID_BYTES];
    memset(seed, seed_byte, sizeof seed);
    memset(id, seed_byte, sizeof id);
    tsync__shopkey k;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__shopkey_init(&k, seed, id, name, strlen(name), 1700000000000ull, err), 0,
                 "%s", err);
    return k;
}

static void enrol(tsync_store *s, const tsync__shopkey *k, const char *name)
{
    uint64_t now = tsync__now_ms(s);
    tsync__cert c = {.shop_name = k->name,
                     .shop_name_len = k->name_len,
                     .device_name = name,
                     .device_name_len = (uint32_t)strlen(name),
                     .not_before_ms = now - DAY,
                     .expires_ms = now + 365 * DAY};
    memcpy(c.shop_id, k->shop_id, sizeof c.shop_id);
    memcpy(c.device_pk, s->pk, sizeof c.device_pk);
    memcpy(c.admin_pk, k->pk, sizeof c.admin_pk);
    uint8_t *rec;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__cert_sign(&c, k->sk, &rec, &len, err), 0, "%s", err);
    const uint8_t *recs[1] = {rec};
    cr_assert_eq(tsync__trust_enrol(s, recs, &len, 1, NULL), 0, "enrol %s: %s", name, th_errmsg());
    free(rec);
}

static uint8_t *sign(const tsync__shopkey *k, uint64_t number, const char *name, const char *sql,
                     uint64_t issued, size_t *len)
{
    tsync__migration_rec m = {.number = number,
                              .name = name,
                              .name_len = (uint32_t)strlen(name),
                              .sql = (const uint8_t *)sql,
                              .sql_len = (uint32_t)strlen(sql),
                              .issued_ms = issued};
    memcpy(m.shop_id, k->shop_id, sizeof m.shop_id);
    memcpy(m.admin_pk, k->pk, sizeof m.admin_pk);
    uint8_t *rec;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__migration_sign(&m, k->sk, &rec, len, err), 0, "%s", err);
    return rec;
}

static void items(tsync_store *s)
{
    th_exec(s, "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT)");
    cr_assert_eq(tsync_store_replicate(s, "items", NULL, 0), 0, "%s", th_errmsg());
}

static int count_mismatches(void *ctx, const tsync_schema_mismatch *m)
{
    (void)m;
    ++*(int *)ctx;
    return 0;
}

static int mismatches(tsync_store *s)
{
    int n = 0;
    cr_assert_eq(tsync_store_schema_mismatches(s, count_mismatches, &n), 0, "%s", th_errmsg());
    return n;
}

Test(signed_migration, record_round_trip_rules_and_tamper)
{
    tsync__shopkey k = shop(1, "Corner Shop");
    size_t len;
    const char *sql = "ALTER TABLE items ADD COLUMN note TEXT;\n";
    uint8_t *rec = sign(&k, 7, "007_note.sql", sql, 1700000000001ull, &len);
    tsync__arena a = {0};
    tsync__trust_rec r;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_decode(rec, len, &r, &a, err), 0, "%s", err);
    cr_assert_eq(r.kind, TSYNC__T_MIGRATION);
    cr_assert_eq(r.u.mig.number, 7);
    cr_assert_eq(r.u.mig.name_len, strlen("007_note.sql"));
    cr_assert_eq(memcmp(r.u.mig.name, "007_note.sql", r.u.mig.name_len), 0);
    cr_assert_eq(r.u.mig.sql_len, strlen(sql));
    cr_assert_eq(memcmp(r.u.mig.sql, sql, r.u.mig.sql_len), 0);
    cr_assert_eq(memcmp(r.u.mig.admin_pk, k.pk, TSYNC__PK_BYTES), 0);
    cr_assert_str_eq(tsync__trust_label(TSYNC__T_MIGRATION), "SIGNED MIGRATION");
    tsync__arena_free(&a);
    /* Every single-byte change is refused (signature, or the strict decoder). */
    for (size_t i = 0; i < len; i++) {
        rec[i] ^= 0x01;
        cr_assert_neq(tsync__trust_decode(rec, len, &r, &a, err), 0, "flip at byte %zu accepted",
                      i);
        tsync__arena_free(&a);
        rec[i] ^= 0x01;
    }
    free(rec);
    /* The signer refuses what the decoder would. */
    tsync__migration_rec m = {.number = 0,
                              .name = "x.sql",
                              .name_len = 5,
                              .sql = (const uint8_t *)"SELECT 1",
                              .sql_len = 8};
    memcpy(m.admin_pk, k.pk, TSYNC__PK_BYTES);
    cr_assert_eq(tsync__migration_sign(&m, k.sk, &rec, &len, err), TSYNC_EINVAL);
    m.number = 1;
    static char big[TSYNC__TRUST_SQL_MAX + 2];
    memset(big, ' ', sizeof big - 1);
    m.sql = (const uint8_t *)big;
    m.sql_len = TSYNC__TRUST_SQL_MAX + 1;
    cr_assert_eq(tsync__migration_sign(&m, k.sk, &rec, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "split it"), "%s", err);
    m.sql_len = TSYNC__TRUST_SQL_MAX;
    cr_assert_eq(tsync__migration_sign(&m, k.sk, &rec, &len, err), 0, "%s", err);
    cr_assert_leq(len, TSYNC__TRUST_MAX_BYTES);
    free(rec);
    tsync__shopkey other = shop(2, "Other");
    cr_assert_eq(tsync__migration_sign(&m, other.sk, &rec, &len, err), TSYNC_EINVAL);
}

Test(signed_migration, installed_on_one_till_runs_on_the_other_and_unparks)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(d, "a.db")), *b = th_open(th_path(d, "b.db"));
    tsync__shopkey k = shop(1, "Corner Shop");
    enrol(a, &k, "till-a");
    enrol(b, &k, "till-b");
    items(a);
    items(b);
    /* a ran 001 from a folder; b did not: b parks a's note and sees the difference. */
    char *mig = th_tmpdir_auto();
    const char *sql = "ALTER TABLE items ADD COLUMN note TEXT;\n";
    FILE *f = fopen(th_path(mig, "001_note.sql"), "w");
    cr_assert_not_null(f);
    fputs(sql, f);
    fclose(f);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(tsync_store_migrate(a, mig, &r), 0, "%s", th_errmsg());
    tsync_migrate_report_clear(&r);
    th_exec(a, "INSERT INTO items VALUES('i1', 'tea', 'green')");
    th_exec(b, "INSERT INTO items VALUES('i2', 'cake')");
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_parked", -1), 1);
    cr_assert_eq(mismatches(b), 1);
    cr_assert_str_neq(th_hash(a), th_hash(b));

    /* The admin signs the same file; installed on a, where it already ran: nothing runs. */
    size_t len;
    uint8_t *rec = sign(&k, 1, "001_note.sql", sql, tsync__now_ms(a), &len);
    cr_assert_eq(tsync_store_migrate_signed(a, rec, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.napplied, 0);
    tsync_migrate_report_clear(&r);
    free(rec);

    /* It travels to b in a bundle, with the trust records; b runs it and takes the note. */
    tsync_merge_report mr = TSYNC_MERGE_REPORT_INIT;
    size_t blen;
    uint8_t *bun = th_bundle(a, &blen);
    cr_assert_eq(tsync_store_merge(b, bun, blen, &mr), 0, "%s", th_errmsg());
    int said = 0;
    for (size_t i = 0; i < mr.nmessages; i++)
        said |= strstr(mr.messages[i], "applied signed migration 001_note.sql") != NULL;
    cr_assert(said, "the merge report does not say the migration ran");
    tsync_merge_report_clear(&mr);
    free(bun);
    int64_t v = 0;
    cr_assert_eq(tsync_store_schema_version(&v, b), 0);
    cr_assert_eq(v, 1);
    cr_assert_eq(th_int(b, "SELECT count(*) FROM tsync_parked", -1), 0);
    char *note = th_text(b, "SELECT note FROM items WHERE id = 'i1'");
    cr_assert_str_eq(note, "green");
    free(note);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(mismatches(b), 0, "b's definitions now equal a's");
    char *e = NULL;
    cr_assert_eq(tsync_store_signed_migration_error(&e, b), 0);
    cr_assert_null(e);
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
    free(mig);
}

Test(signed_migration, refusals_are_kept_and_a_later_fix_replaces)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(d, "a.db")), *n = th_open(th_path(d, "n.db"));
    tsync__shopkey k = shop(1, "Corner Shop"), other = shop(2, "Other Shop");
    size_t len;
    uint8_t *rec = sign(&k, 1, "001_x.sql", "CREATE TABLE x(id TEXT PRIMARY KEY);", 10, &len);
    /* Not enrolled: no shop's migration runs. */
    cr_assert_eq(tsync_store_migrate_signed(n, rec, len, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "enrolled"), "%s", th_errmsg());
    free(rec);
    enrol(a, &k, "till-a");
    items(a);
    /* Another shop's. */
    rec = sign(&other, 1, "001_x.sql", "CREATE TABLE x(id TEXT PRIMARY KEY);", 10, &len);
    cr_assert_eq(tsync_store_migrate_signed(a, rec, len, NULL), TSYNC_EREFUSED);
    free(rec);
    /* One that cannot run here: refused, rolled back, kept for status. */
    rec = sign(&k, 1, "001_bad.sql", "ALTER TABLE items ADD COLUMN name TEXT;", 10, &len);
    cr_assert_eq(tsync_store_migrate_signed(a, rec, len, NULL), TSYNC_EINVAL);
    free(rec);
    char *e = NULL;
    cr_assert_eq(tsync_store_signed_migration_error(&e, a), 0);
    cr_assert_not_null(e);
    cr_assert(strstr(e, "duplicate column"), "%s", e);
    free(e);
    int64_t v = -1;
    cr_assert_eq(tsync_store_schema_version(&v, a), 0);
    cr_assert_eq(v, 0);
    /* The admin's fix, signed later under the same number, replaces it and runs. */
    rec = sign(&k, 1, "001_fix.sql", "ALTER TABLE items ADD COLUMN note TEXT;", 20, &len);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(tsync_store_migrate_signed(a, rec, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.napplied, 1);
    cr_assert_str_eq(r.applied[0].name, "001_fix.sql");
    tsync_migrate_report_clear(&r);
    free(rec);
    cr_assert_eq(tsync_store_signed_migration_error(&e, a), 0);
    cr_assert_null(e, "the refusal is gone once a run succeeded");
    tsync_store_free(a);
    tsync_store_free(n);
    free(d);
}
