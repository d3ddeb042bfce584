/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_api_io.c — export and import through the public API only (tillsync/io.h), as
 * an app embedding the library calls them: formats by name and file name, an export read back by
 * import, progress callbacks, bad values reported and refused or skipped into the rejects, and the
 * versions of the options and the report checked on entry (an old and a future one).
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tillsync/tillsync.h"

static char g_dir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%.40s/apiioXXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert(mkdtemp(g_dir));
}

static void teardown(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(api_io, .init = setup, .fini = teardown);

static tsync_store *open_db(const char *name)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s = NULL;
    cr_assert_eq(tsync_store_open(&s, path, &o), 0, "open: %s", tsync_error_last()->message);
    cr_assert_eq(tsync_store_exec(s,
                                  "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER)",
                                  NULL, NULL),
                 0);
    cr_assert_eq(tsync_store_replicate(s, "items", NULL, 0), 0);
    return s;
}

static int count_cb(void *ctx, int n, const char *const *names, const char *const *vals)
{
    (void)n, (void)names;
    *(long *)ctx = atol(vals[0]);
    return 0;
}

static long count(tsync_store *s, const char *sql)
{
    long v = -1;
    cr_assert_eq(tsync_store_exec(s, sql, count_cb, &v), 0);
    return v;
}

typedef struct {
    uint64_t calls, last;
    int bad;
    char first_bad[256];
} seen;

static void on_progress(void *ctx, uint64_t rows)
{
    seen *w = ctx;
    w->calls++;
    cr_assert_gt(rows, w->last, "progress goes forward");
    w->last = rows;
}

static void on_bad(void *ctx, const char *msg)
{
    seen *w = ctx;
    if (!w->bad++) snprintf(w->first_bad, sizeof w->first_bad, "%s", msg);
}

static char *export_str(tsync_store *s, const char *table, const char *query,
                        const tsync_export_options *o, size_t *rows, int *rc)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    *rc = tsync_store_export(rows, s, table, query, f, o);
    fclose(f);
    return buf;
}

Test(api_io, formats_by_name_and_file_name)
{
    cr_assert_eq(tsync_io_format_parse("csv"), TSYNC_IO_CSV);
    cr_assert_eq(tsync_io_format_parse("json"), TSYNC_IO_JSON);
    cr_assert_eq(tsync_io_format_parse("ndjson"), TSYNC_IO_NDJSON);
    cr_assert_eq(tsync_io_format_parse("xml"), 0);
    cr_assert_eq(tsync_io_format_parse(NULL), 0);
    cr_assert_eq(tsync_io_format_guess("a/b.CSV"), TSYNC_IO_CSV);
    cr_assert_eq(tsync_io_format_guess("x.jsonl"), TSYNC_IO_NDJSON);
    cr_assert_eq(tsync_io_format_guess("x.json"), TSYNC_IO_JSON);
    cr_assert_eq(tsync_io_format_guess("noext"), 0);
}

Test(api_io, export_then_import_with_progress)
{
    tsync_store *a = open_db("a.db"), *b = open_db("b.db");
    cr_assert_eq(tsync_store_exec(a,
                                  "INSERT INTO items VALUES ('p1', 'tea', 3), ('p2', 'a, b', 5),"
                                  "('p3', NULL, 7)",
                                  NULL, NULL),
                 0);
    /* Defaults (NULL options): CSV with a header line. */
    size_t rows = 0;
    int rc;
    char *csv = export_str(a, "items", NULL, NULL, &rows, &rc);
    cr_assert_eq(rc, 0, "%s", tsync_error_last()->message);
    cr_assert_eq(rows, 3);
    cr_assert(strncmp(csv, "\"id\",\"name\",\"qty\"\r\n", 19) == 0 || strncmp(csv, "id,", 3) == 0,
              "header: %s", csv);
    cr_assert(strstr(csv, "\"a, b\""), "%s", csv);

    /* Progress every row, on an export and on the import of what it wrote. */
    seen w = {0};
    tsync_export_options eo = TSYNC_EXPORT_OPTIONS_INIT;
    eo.format = TSYNC_IO_NDJSON;
    eo.progress = on_progress;
    eo.progress_ctx = &w;
    eo.progress_every = 1;
    char *nd = export_str(a, NULL, "SELECT * FROM items ORDER BY id", &eo, &rows, &rc);
    cr_assert_eq(rc, 0);
    cr_assert_eq(rows, 3);
    cr_assert_eq(w.calls, 3);
    cr_assert_eq(w.last, 3);

    seen r = {0};
    tsync_import_options io = TSYNC_IMPORT_OPTIONS_INIT;
    io.format = TSYNC_IO_NDJSON;
    io.name = "items.ndjson";
    io.progress = on_progress;
    io.bad = on_bad;
    io.ctx = &r;
    io.progress_every = 1;
    tsync_import_report rep = TSYNC_IMPORT_REPORT_INIT;
    FILE *in = fmemopen(nd, strlen(nd), "rb");
    rc = tsync_store_import(&rep, b, "items", in, &io);
    fclose(in);
    cr_assert_eq(rc, 0, "%s", tsync_error_last()->message);
    cr_assert_eq(rep.rows, 3);
    cr_assert_eq(rep.imported, 3);
    cr_assert_eq(rep.rejected, 0);
    cr_assert_eq(r.calls, 3);
    cr_assert_eq(r.bad, 0);
    cr_assert_eq(count(b, "SELECT count(*) FROM items WHERE name IS NULL AND qty = 7"), 1);

    /* And the CSV with default options (report may be NULL). */
    cr_assert_eq(tsync_store_exec(b, "DELETE FROM items", NULL, NULL), 0);
    in = fmemopen(csv, strlen(csv), "rb");
    cr_assert_eq(tsync_store_import(NULL, b, "items", in, NULL), 0);
    fclose(in);
    cr_assert_eq(count(b, "SELECT count(*) FROM items"), 3);
    uint8_t ha[TSYNC_HASH_BYTES], hb[TSYNC_HASH_BYTES];
    cr_assert_eq(tsync_store_hash(ha, a, NULL), 0);
    cr_assert_eq(tsync_store_hash(hb, b, NULL), 0);
    cr_assert_eq(memcmp(ha, hb, sizeof ha), 0, "imported rows show as exported");
    free(csv);
    free(nd);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(api_io, bad_values_refused_or_skipped)
{
    tsync_store *s = open_db("s.db");
    static const char text[] = "id,name,qty\np1,tea,3\np2,milk,lots\np3,jam,4\n";
    seen w = {0};
    tsync_import_options io = TSYNC_IMPORT_OPTIONS_INIT;
    io.name = "in.csv";
    io.bad = on_bad;
    io.ctx = &w;
    tsync_import_report rep = TSYNC_IMPORT_REPORT_INIT;
    FILE *in = fmemopen((void *)text, strlen(text), "rb");
    int rc = tsync_store_import(&rep, s, "items", in, &io);
    fclose(in);
    cr_assert_eq(rc, TSYNC_EREFUSED);
    cr_assert_eq(rep.imported, 0);
    cr_assert_eq(rep.rows, 3);
    cr_assert_eq(rep.rejected, 1);
    cr_assert_eq(w.bad, 1);
    cr_assert(strstr(w.first_bad, "in.csv:3:"), "names file and line: %s", w.first_bad);
    cr_assert_eq(count(s, "SELECT count(*) FROM items"), 0, "nothing imported");

    char *rej = NULL;
    size_t rlen = 0;
    FILE *rf = open_memstream(&rej, &rlen);
    io.skip_bad = 1;
    io.rejects = rf;
    in = fmemopen((void *)text, strlen(text), "rb");
    rc = tsync_store_import(&rep, s, "items", in, &io);
    fclose(in);
    fclose(rf);
    cr_assert_eq(rc, 0, "%s", tsync_error_last()->message);
    cr_assert_eq(rep.imported, 2);
    cr_assert_eq(rep.rejected, 1);
    cr_assert(strstr(rej, "p2"), "the bad row is in the rejects: %s", rej);
    cr_assert_eq(count(s, "SELECT count(*) FROM items"), 2);
    free(rej);

    in = fmemopen((void *)text, strlen(text), "rb");
    cr_assert_eq(tsync_store_import(NULL, s, "nope", in, NULL), TSYNC_ENOTFOUND);
    fclose(in);
    size_t rows = 7;
    cr_assert_eq(tsync_store_export(&rows, s, "nope", NULL, stdout, NULL), TSYNC_ENOTFOUND);
    cr_assert_eq(rows, 0);
    tsync_store_free(s);
}

/* An old (0: before any version) and a future version are refused on entry, with one line. */
Test(api_io, versions_checked_on_entry)
{
    tsync_store *s = open_db("v.db");
    static const char text[] = "id,name,qty\np1,tea,3\n";
    unsigned int bad[] = {0, TSYNC_IMPORT_OPTIONS_VERSION + 1};
    for (size_t i = 0; i < 2; i++) {
        tsync_import_options io = TSYNC_IMPORT_OPTIONS_INIT;
        io.version = bad[i];
        FILE *in = fmemopen((void *)text, strlen(text), "rb");
        cr_assert_eq(tsync_store_import(NULL, s, "items", in, &io), TSYNC_EVERSION);
        const tsync_error *e = tsync_error_last();
        cr_assert(e && strstr(e->message, "version") && !strchr(e->message, '\n'), "%s",
                  e ? e->message : "");
        tsync_import_report rep = TSYNC_IMPORT_REPORT_INIT;
        rep.version = i ? TSYNC_IMPORT_REPORT_VERSION + 1 : 0;
        rewind(in);
        cr_assert_eq(tsync_store_import(&rep, s, "items", in, NULL), TSYNC_EVERSION);
        fclose(in);
        tsync_export_options eo = TSYNC_EXPORT_OPTIONS_INIT;
        eo.version = i ? TSYNC_EXPORT_OPTIONS_VERSION + 1 : 0;
        size_t rows = 9;
        cr_assert_eq(tsync_store_export(&rows, s, "items", NULL, stdout, &eo), TSYNC_EVERSION);
        cr_assert_eq(rows, 0);
    }
    cr_assert_eq(count(s, "SELECT count(*) FROM items"), 0, "a refused call changes nothing");
    tsync_store_free(s);
}

typedef struct {
    int rows, bad;
    char first[256];
} preview_ctx;

static void on_preview_row(void *ctx, const char *json)
{
    preview_ctx *p = ctx;
    if (p->rows++ == 0) snprintf(p->first, sizeof p->first, "%s", json);
}

static void on_preview_bad(void *ctx, const char *msg)
{
    (void)msg;
    ((preview_ctx *)ctx)->bad++;
}

/* dry_run (version 2) checks and counts as the import would, calls row with the first row_max
 * good rows, and writes nothing; a version 1 caller (without those fields) imports as before. */
Test(api_io, dry_run_previews_and_writes_nothing)
{
    tsync_store *s = open_db("d.db");
    static const char text[] = "id,name,qty\np1,tea,3\np2,cake,x\np3,bun,2\np4,jam,1\n";
    preview_ctx pc = {0, 0, ""};
    tsync_import_options io = TSYNC_IMPORT_OPTIONS_INIT;
    io.dry_run = 1;
    io.row = on_preview_row;
    io.bad = on_preview_bad;
    io.ctx = &pc;
    io.row_max = 2;
    tsync_import_report rep = TSYNC_IMPORT_REPORT_INIT;
    FILE *in = fmemopen((void *)text, strlen(text), "rb");
    cr_assert_eq(tsync_store_import(&rep, s, "items", in, &io), TSYNC_EREFUSED);
    cr_assert_eq(rep.rows, 4);
    cr_assert_eq(rep.rejected, 1);
    cr_assert_eq(pc.bad, 1);
    cr_assert_eq(pc.rows, 1, "rows 1..row_max, the bad one left out: %d", pc.rows);
    cr_assert_str_eq(pc.first, "{\"id\":\"p1\",\"name\":\"tea\",\"qty\":3}");
    /* Without the bad row: ok, counted as imported, still nothing written. */
    static const char good[] = "id,name,qty\np1,tea,3\np3,bun,2\n";
    FILE *g = fmemopen((void *)good, strlen(good), "rb");
    memset(&pc, 0, sizeof pc);
    io.row_max = 0; /* 10 */
    cr_assert_eq(tsync_store_import(&rep, s, "items", g, &io), 0);
    cr_assert_eq(rep.imported, 2);
    cr_assert_eq(pc.rows, 2);
    long n = -1;
    cr_assert_eq(tsync_store_exec(s, "SELECT count(*) FROM items", count_cb, &n), 0);
    cr_assert_eq(n, 0, "a dry run wrote %ld rows", n);
    /* A version 1 caller: the fields after progress_every are not read (here: garbage). */
    tsync_import_options v1;
    memset(&v1, 0xff, sizeof v1);
    cr_assert_eq(tsync_import_options_init(&v1, 1), 0);
    rewind(g);
    cr_assert_eq(tsync_store_import(&rep, s, "items", g, &v1), 0, "%s",
                 tsync_error_last()->message);
    cr_assert_eq(tsync_store_exec(s, "SELECT count(*) FROM items", count_cb, &n), 0);
    cr_assert_eq(n, 2);
    fclose(g);
    fclose(in);
    tsync_store_free(s);
}
