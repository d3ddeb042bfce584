/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_api_conventions.c — the conventions of docs/API.md hold in the store's public
 * headers: tsync_error_last() is never NULL; every options and report struct has its version
 * checked on entry (an older known version works, 0 and a newer one are refused with
 * TSYNC_EVERSION and one line, before anything is done); results come first; and the CLI's hints
 * (tools/hint.c) name the command while the library's messages do not.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/lib/helpers.h"
#include "tillsync/tillsync.h"
/* The hint table is the CLI's (tools/ is not a library): compiled in here to test it alone. */
#include "tools/hint.c"

TestSuite(api_conventions, .fini = th_cleanup);

static const char *errmsg(void)
{
    return tsync_error_last()->message;
}

/* rc is TSYNC_EVERSION and the last error says so in one line naming the struct. */
static void expect_version_refused(int rc, const char *what)
{
    cr_assert_eq(rc, TSYNC_EVERSION, "%s: %d (%s)", what, rc, errmsg());
    const tsync_error *e = tsync_error_last();
    cr_assert_eq(e->code, TSYNC_EVERSION);
    cr_assert(strstr(e->message, what), "the message does not name %s: %s", what, e->message);
    cr_assert_null(strchr(e->message, '\n'), "not one line: %s", e->message);
}

static int exists(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* ---------------------------------------------------------------- errors */

Test(api_conventions, error_last_is_never_null)
{
    tsync_error_clear();
    const tsync_error *e = tsync_error_last();
    cr_assert_not_null(e);
    cr_assert_eq(e->code, 0);
    cr_assert_str_eq(e->message, "no error");

    tsync_store *s = NULL;
    char *dir = th_tmpdir_auto();
    cr_assert_eq(tsync_store_open(&s, th_path(dir, "missing.db"), NULL), TSYNC_ENOTFOUND);
    cr_assert_null(s);
    e = tsync_error_last();
    cr_assert_eq(e->code, TSYNC_ENOTFOUND);
    cr_assert(strstr(e->message, "missing.db does not exist"), "%s", e->message);
    /* The library names no command of the CLI; the CLI adds its own hint. */
    cr_assert_null(strstr(e->message, "tillsync "), "%s", e->message);

    tsync_error_clear();
    cr_assert_eq(tsync_error_last()->code, 0);
    cr_assert_str_eq(tsync_error_last()->message, "no error");
}

/* ---------------------------------------------------------------- versions */

Test(api_conventions, store_options_version)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "a.db");
    tsync_store *s = NULL;

    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    o.version = TSYNC_STORE_OPTIONS_VERSION + 1;
    expect_version_refused(tsync_store_open(&s, db, &o), "tsync_store_options");
    cr_assert_null(s);
    cr_assert(!exists(db), "a refused open created the database");
    o.version = 0;
    expect_version_refused(tsync_store_open(&s, db, &o), "tsync_store_options");

    /* Version 1 (before read_only): works, and read_only, which it lacks, is not read. */
    o.version = 1;
    o.read_only = 1;
    cr_assert_eq(tsync_store_open(&s, db, &o), 0, "%s", errmsg());
    th_exec(s, "CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT)");
    tsync_store_free(s);

    tsync_store_options cur = TSYNC_STORE_OPTIONS_INIT;
    cr_assert_eq(tsync_store_open(&s, db, &cur), 0, "%s", errmsg());
    tsync_store_free(s);
}

Test(api_conventions, merge_report_version)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_exec(a, "INSERT INTO products(id, name, price) VALUES ('p1', 'tea', 250)");
    size_t len;
    uint8_t *bun = th_bundle(a, &len);

    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    r.version = TSYNC_MERGE_REPORT_VERSION + 1;
    expect_version_refused(tsync_store_merge(b, bun, len, &r), "tsync_merge_report");
    cr_assert_eq(r.merged + r.refused + r.nmessages, 0, "a refused report was written to");
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), 0, "merged anyway");
    r.version = 0;
    expect_version_refused(tsync_store_merge(b, bun, len, &r), "tsync_merge_report");

    r.version = 1; /* the oldest, and so far the only, version */
    cr_assert_eq(tsync_store_merge(b, bun, len, &r), 0, "%s", errmsg());
    cr_assert(r.merged >= 1);
    tsync_merge_report_clear(&r);
    /* No report: nothing to check. */
    cr_assert_eq(tsync_store_merge(b, bun, len, NULL), 0, "%s", errmsg());
    cr_assert_eq(th_int(b, "SELECT count(*) FROM products", -1), 1);
    free(bun);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(api_conventions, backup_and_restore_versions)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    th_exec(a, "INSERT INTO products(id, name, price) VALUES ('p1', 'tea', 250)");
    const char *file = th_path(dir, "a.tsb");

    tsync_backup_options bo = TSYNC_BACKUP_OPTIONS_INIT;
    bo.version = TSYNC_BACKUP_OPTIONS_VERSION + 1;
    expect_version_refused(tsync_backup(a, file, &bo, NULL), "tsync_backup_options");
    cr_assert(!exists(file), "a refused backup wrote a file");
    bo.version = 0;
    expect_version_refused(tsync_backup(a, file, &bo, NULL), "tsync_backup_options");
    bo.version = 1;
    cr_assert_eq(tsync_backup(a, file, &bo, NULL), 0, "%s", errmsg());
    tsync_store_free(a);

    const char *db = th_path(dir, "b.db");
    tsync_restore_options ro = TSYNC_RESTORE_OPTIONS_INIT;
    tsync_restore_report rr = TSYNC_RESTORE_REPORT_INIT;
    ro.version = TSYNC_RESTORE_OPTIONS_VERSION + 1;
    expect_version_refused(tsync_restore(db, file, &ro, &rr), "tsync_restore_options");
    ro.version = 0;
    expect_version_refused(tsync_restore(db, file, &ro, &rr), "tsync_restore_options");
    ro.version = 1;
    rr.version = TSYNC_RESTORE_REPORT_VERSION + 1;
    expect_version_refused(tsync_restore(db, file, &ro, &rr), "tsync_restore_report");
    rr.version = 0;
    expect_version_refused(tsync_restore(db, file, &ro, &rr), "tsync_restore_report");
    cr_assert(!exists(db), "a refused restore wrote the database");
    rr.version = 1;
    cr_assert_eq(tsync_restore(db, file, &ro, &rr), 0, "%s", errmsg());
    cr_assert_not_null(rr.manifest_json);
    tsync_restore_report_clear(&rr);
}

Test(api_conventions, migrate_report_version)
{
    char *dir = th_tmpdir_auto();
    tsync_store *s = th_open(th_path(dir, "a.db"));
    const char *mig = th_path(dir, "migrations");
    cr_assert_eq(mkdir(mig, 0700), 0);
    FILE *f = fopen(th_path(mig, "001_init.sql"), "w");
    cr_assert_not_null(f);
    fputs("CREATE TABLE t(id TEXT PRIMARY KEY, v TEXT);\n", f);
    fclose(f);

    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    r.version = TSYNC_MIGRATE_REPORT_VERSION + 1;
    expect_version_refused(tsync_store_migrate(s, mig, &r), "tsync_migrate_report");
    expect_version_refused(tsync_store_migrate_signed(s, NULL, 0, &r), "tsync_migrate_report");
    r.version = 0;
    expect_version_refused(tsync_store_migrate(s, mig, &r), "tsync_migrate_report");
    int64_t v = -1;
    cr_assert_eq(tsync_store_schema_version(&v, s), 0, "%s", errmsg());
    cr_assert_eq(v, 0, "a refused migration ran");

    r.version = 1;
    cr_assert_eq(tsync_store_migrate(s, mig, &r), 0, "%s", errmsg());
    cr_assert_eq(r.napplied, 1);
    cr_assert_eq(r.version, 1, "clearing the report lost its version");
    tsync_migrate_report_clear(&r);
    cr_assert_eq(tsync_store_migrate_signed(s, NULL, 0, &r), 0, "%s", errmsg());
    tsync_migrate_report_clear(&r);
    cr_assert_eq(tsync_store_schema_version(&v, s), 0, "%s", errmsg());
    cr_assert_eq(v, 1);
    tsync_store_free(s);
}

/* ---------------------------------------------------------------- outputs first */

Test(api_conventions, results_come_first)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    th_exec(a, "INSERT INTO products(id, name, price) VALUES ('p1', 'tea', 250)");

    char *state = NULL, *conflicts = NULL, *schema = NULL, *migrations = NULL, *merr = NULL;
    uint8_t *bun = NULL, h[TSYNC_HASH_BYTES], digest[TSYNC_HASH_BYTES];
    size_t len = 0, nb = 0;
    int64_t version = -1;
    cr_assert_eq(tsync_store_state_json(&state, a), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_bundle(&bun, &len, a, NULL, &nb), 0, "%s", errmsg());
    cr_assert(len > 0 && nb >= 1);
    cr_assert_eq(tsync_store_hash(h, a, NULL), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_hash(h, a, "products"), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_conflicts_json(&conflicts, a), 0, "%s", errmsg());
    cr_assert(conflicts && conflicts[0] == '[', "%s", conflicts);
    cr_assert_eq(tsync_store_schema_json(&schema, a, digest), 0, "%s", errmsg());
    cr_assert(strstr(schema, "\"products\""), "%s", schema);
    cr_assert_eq(tsync_store_schema_version(&version, a), 0, "%s", errmsg());
    cr_assert_eq(version, 0);
    cr_assert_eq(tsync_store_migrations_json(&migrations, a), 0, "%s", errmsg());
    cr_assert_eq(tsync_store_signed_migration_error(&merr, a), 0, "%s", errmsg());
    cr_assert_null(merr);

    const char *file = th_path(dir, "a.tsb");
    cr_assert_eq(tsync_backup(a, file, NULL, NULL), 0, "%s", errmsg());
    int enc = -1;
    cr_assert_eq(tsync_backup_encrypted(&enc, file), 0, "%s", errmsg());
    cr_assert_eq(enc, 0);

    free(state), free(conflicts), free(schema), free(migrations), free(bun);
    tsync_store_free(a);
}

/* ---------------------------------------------------------------- the CLI's hints */

Test(api_conventions, cli_hints)
{
    char buf[512];
    const char *h =
        cli_hint(TSYNC_ENOTFOUND, "database /tmp/x/missing.db does not exist", buf, sizeof buf);
    cr_assert(h && strstr(h, "`tillsync init /tmp/x/missing.db`"), "%s", h ? h : "(none)");
    /* Not the database: no hint to create it. */
    cr_assert_null(cli_hint(TSYNC_ENOTFOUND, "folder m does not exist", buf, sizeof buf));
    h = cli_hint(TSYNC_ENOTFOUND, "key file /tmp/a.db.key is missing", buf, sizeof buf);
    cr_assert(h && strstr(h, "`tillsync init /tmp/a.db`"), "%s", h ? h : "(none)");
    h = cli_hint(TSYNC_ECORRUPT, "a.db is an SQLite database, not a tillsync backup", buf,
                 sizeof buf);
    cr_assert(h && strstr(h, "`tillsync backup"), "%s", h ? h : "(none)");
    h = cli_hint(TSYNC_ENOTFOUND,
                 "cannot write a bundle for that state: x; no bundle can give it, so sync that "
                 "till live with an enrolled till of the shop, or restore a newer backup on it",
                 buf, sizeof buf);
    cr_assert(h && strstr(h, "`tillsync run`") && strstr(h, "snapshot"), "%s", h ? h : "(none)");
    h = cli_hint(TSYNC_EINVAL, "peer 'x': KEY must be 64 hex digits", buf, sizeof buf);
    cr_assert(h && strstr(h, "`tillsync state"), "%s", h ? h : "(none)");
    /* A message of an older library that names the command itself gets no second one. */
    cr_assert_null(cli_hint(TSYNC_ECORRUPT,
                            "a.db is an SQLite database, not a tillsync backup (make one with "
                            "'tillsync backup')",
                            buf, sizeof buf));
    /* Another code with the same words: not this situation. */
    cr_assert_null(cli_hint(TSYNC_EIO, "database d does not exist", buf, sizeof buf));
    cr_assert_null(cli_hint(TSYNC_EINVAL, "something else entirely", buf, sizeof buf));
}
