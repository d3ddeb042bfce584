/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_io.c — export and import (store/io.c): an export read back by import gives the
 * same rows (every SQLite type, the awkward values of each) in CSV, JSON and NDJSON; bad input is
 * reported value by value with file:line:column and changes nothing; --skip-bad imports the good
 * rows and writes the rest to the rejects file; imported rows replicate to a peer.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/io.h"
#include "tests/lib/helpers.h"

TestSuite(io, .fini = th_cleanup);

static void free_ptr(char **p)
{
    free(*p);
}
#define AUTO_FREE __attribute__((cleanup(free_ptr)))

#define ITEMS_SQL "CREATE TABLE items(id TEXT PRIMARY KEY, t TEXT, i INTEGER, r REAL, b BLOB, u)"

static tsync_store *open_items(const char *path)
{
    tsync_store *s = th_open(path);
    th_exec(s, ITEMS_SQL);
    cr_assert_eq(tsync_store_replicate(s, "items", NULL, 0), 0);
    th_seal(s);
    return s;
}

/* Every awkward value, one row each (column u is untyped: it keeps whatever type it is given). */
static void fill_items(tsync_store *s)
{
    th_exec(s, "INSERT INTO items(id, t, i, r, b, u) VALUES"
               "('comma', 'a, b', 1, 0.1, NULL, 'x'),"
               "('quote', 'say \"hi\"', 2, 1e308, NULL, 7),"
               "('newline', 'line1' || char(10) || 'line2' || char(13, 10) || 'line3', 3,"
               "  -1e-308, NULL, 2.5),"
               "('utf8', 'café ☕ 日本 𝄞', 4, 5e-324, NULL, NULL),"
               "('null', NULL, NULL, NULL, NULL, NULL),"
               "('empty', '', 0, 0.0, x'', ''),"
               "('max', 'm', 9223372036854775807, 1.7976931348623157e308, x'00', x'00ff'),"
               "('min', 'n', -9223372036854775808, -2.2250738585072014e-308, x'0000', x''),"
               "('blob', 'base64:not a blob', -1, 3.141592653589793, x'00ff0001fe00', x'00'),"
               "('inf', 'tab	end', 5, 9e999, x'ff', -9e999),"
               "('negzero', 'z', 6, -0.0, NULL, -0.0),"
               "(' spaced ', '  lead and trail  ', 7, 123456789.123456789, NULL, '0x1F')");
    th_seal(s);
}

static char *export_str(tsync_store *s, const char *table, const char *query, int format)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert(f);
    size_t n = 0;
    int rc = tsync__export(s, table, query, format, f, &n);
    fclose(f);
    cr_assert_eq(rc, 0, "export: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    return buf;
}

typedef struct {
    char *msgs[64];
    size_t n;
} msgs;

static void collect(void *ctx, const char *m)
{
    msgs *ms = ctx;
    if (ms->n < 64) ms->msgs[ms->n++] = strdup(m);
}

static int has_msg(const msgs *ms, const char *m)
{
    for (size_t i = 0; i < ms->n; i++)
        if (!strcmp(ms->msgs[i], m)) return 1;
    return 0;
}

static void msgs_free(msgs *ms)
{
    for (size_t i = 0; i < ms->n; i++) free(ms->msgs[i]);
    ms->n = 0;
}

/* Imports text (as file "in") with the given options; returns tsync__import's result. */
static int import_str(tsync_store *s, const char *table, const char *text, size_t len, int format,
                      int skip_bad, msgs *ms, char **rejects, tsync__import_opts *res)
{
    FILE *in = fmemopen((void *)text, len, "r");
    cr_assert(in);
    char *rbuf = NULL;
    size_t rlen = 0;
    FILE *rf = rejects ? open_memstream(&rbuf, &rlen) : NULL;
    tsync__import_opts o = {0};
    o.name = "in";
    o.format = format;
    o.skip_bad = skip_bad;
    o.rejects = rf;
    o.bad = collect;
    o.ctx = ms;
    int rc = tsync__import(s, table, in, &o);
    fclose(in);
    if (rf) {
        fclose(rf);
        *rejects = rbuf;
    }
    if (res) *res = o;
    return rc;
}

static void roundtrip(int format)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(dir, "a.db"));
    tsync_store *b = open_items(th_path(dir, "b.db"));
    fill_items(a);
    char *out = export_str(a, "items", NULL, format);
    msgs ms = {0};
    tsync__import_opts res;
    int rc = import_str(b, "items", out, strlen(out), format, 0, &ms, NULL, &res);
    cr_assert_eq(rc, 0, "import: %s; first: %s",
                 tsync_error_last() ? tsync_error_last()->message : "?", ms.n ? ms.msgs[0] : "-");
    cr_assert_eq(res.imported, 12);
    /* Same bytes out again; the typed columns equal as JSON; and, where the format carries the
     * untyped column's types (JSON), the same visible content by the replication hash. */
    char *again = export_str(b, "items", NULL, format);
    if (format != TSYNC__IO_CSV) {
        cr_assert_str_eq(again, out);
        cr_assert_str_eq(th_hash(a), th_hash(b));
    }
    const char *typed = "SELECT id, t, i, r, b FROM items ORDER BY id";
    char *ja = export_str(a, NULL, typed, TSYNC__IO_JSON),
         *jb = export_str(b, NULL, typed, TSYNC__IO_JSON);
    cr_assert_str_eq(jb, ja);
    free(ja), free(jb);
    /* Types and values checked directly, not only through our own export. */
    const char *checks[][2] = {
        {"SELECT t FROM items WHERE id='newline'", "line1\nline2\r\nline3"},
        {"SELECT t FROM items WHERE id='utf8'", "café ☕ 日本 𝄞"},
        {"SELECT quote(t) || typeof(t) FROM items WHERE id='null'", "NULLnull"},
        {"SELECT quote(t) || typeof(t) FROM items WHERE id='empty'", "''text"},
        {"SELECT i FROM items WHERE id='max'", "9223372036854775807"},
        {"SELECT i FROM items WHERE id='min'", "-9223372036854775808"},
        {"SELECT quote(b) FROM items WHERE id='blob'", "X'00FF0001FE00'"},
        {"SELECT quote(b) || typeof(b) FROM items WHERE id='empty'", "X''blob"},
        {"SELECT t FROM items WHERE id='blob'", "base64:not a blob"},
        {"SELECT r = 0.1 FROM items WHERE id='comma'", "1"},
        {"SELECT r = 5e-324 FROM items WHERE id='utf8'", "1"},
        {"SELECT r = 123456789.123456789 FROM items WHERE id=' spaced '", "1"},
        {"SELECT r > 1e308 FROM items WHERE id='inf'", "1"},
        {"SELECT t FROM items WHERE id=' spaced '", "  lead and trail  "},
    };
    for (size_t i = 0; i < sizeof checks / sizeof checks[0]; i++) {
        char *v = th_text(b, checks[i][0]);
        cr_assert(v && !strcmp(v, checks[i][1]), "%s: got %s, want %s", checks[i][0],
                  v ? v : "(null)", checks[i][1]);
        free(v);
    }
    /* SQLite keeps -0.0 as 0.0; what matters is that it comes back as a real. */
    char *nz = th_text(b, "SELECT typeof(r) || r FROM items WHERE id='negzero'");
    cr_assert_str_eq(nz, "real0.0");
    free(nz);
    if (format != TSYNC__IO_CSV) { /* CSV has no types for an untyped column: all text */
        char *v = th_text(b, "SELECT group_concat(typeof(u), ',') FROM (SELECT u FROM items "
                             "ORDER BY id)");
        char *w = th_text(a, "SELECT group_concat(typeof(u), ',') FROM (SELECT u FROM items "
                             "ORDER BY id)");
        cr_assert_str_eq(v, w);
        free(v), free(w);
    }
    free(out), free(again);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(io, roundtrip_csv)
{
    roundtrip(TSYNC__IO_CSV);
}
Test(io, roundtrip_json)
{
    roundtrip(TSYNC__IO_JSON);
}
Test(io, roundtrip_ndjson)
{
    roundtrip(TSYNC__IO_NDJSON);
}

Test(io, export_query_and_errors)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = open_items(th_path(dir, "a.db"));
    fill_items(a);
    char *out = export_str(a, NULL, "SELECT id, i FROM items WHERE i BETWEEN 5 AND 7 ORDER BY i",
                           TSYNC__IO_CSV);
    cr_assert_str_eq(out, "\"id\",\"i\"\r\n\"inf\",5\r\n\"negzero\",6\r\n\" spaced \",7\r\n");
    free(out);
    out = export_str(a, NULL, "SELECT 1 AS x WHERE 0", TSYNC__IO_JSON);
    cr_assert_str_eq(out, "[]\n");
    free(out);
    FILE *f = fopen("/dev/null", "w");
    cr_assert_eq(tsync__export(a, "nope", NULL, TSYNC__IO_CSV, f, NULL), TSYNC_ENOTFOUND);
    cr_assert_eq(tsync__export(a, NULL, "DELETE FROM items", TSYNC__IO_CSV, f, NULL), TSYNC_EINVAL);
    cr_assert_eq(tsync__export(a, NULL, "SELECT 1; SELECT 2", TSYNC__IO_CSV, f, NULL),
                 TSYNC_EINVAL);
    th_exec(a, "INSERT INTO items(id, t) VALUES('bad', CAST(x'ff' AS TEXT))");
    cr_assert_eq(tsync__export(a, "items", NULL, TSYNC__IO_JSON, f, NULL), TSYNC_EINVAL);
    cr_assert(strstr(tsync_error_last()->message, "not valid UTF-8"));
    fclose(f);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM items", -1), 13);
    tsync_store_free(a);
}

static const char BAD_CSV[] = "id,name,price\r\n"
                              "p1,Tea,250\r\n"
                              "p2,Coffee,abc\r\n"
                              ",NoKey,3\r\n"
                              "p4,\"two\r\nlines\",1.5\r\n"
                              "p5,\xff\xfe,7\r\n"
                              "p6,a,1,extra\r\n"
                              "p7,Good,9\r\n";

Test(io, bad_csv_reports_every_value_and_changes_nothing)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    th_exec(a, "INSERT INTO products(id, name, price) VALUES('p1', 'Old', 1)");
    th_seal(a);
    char before[65];
    strcpy(before, th_hash(a));
    msgs ms = {0};
    tsync__import_opts res;
    int rc =
        import_str(a, "products", BAD_CSV, sizeof BAD_CSV - 1, TSYNC__IO_CSV, 0, &ms, NULL, &res);
    cr_assert_eq(rc, TSYNC_EREFUSED);
    cr_assert_eq(ms.n, 5);
    cr_assert(has_msg(&ms, "in:3:price: \"abc\" is not an integer (64-bit)"));
    cr_assert(has_msg(&ms, "in:4:id: primary key is NULL"));
    cr_assert(has_msg(&ms, "in:5:price: \"1.5\" is not an integer (64-bit)"));
    cr_assert(has_msg(&ms, "in:7:name: text is not valid UTF-8 (byte 1)"));
    cr_assert(has_msg(&ms, "in:8: 4 fields, the header has 3"));
    cr_assert_eq(res.rejected, 5);
    cr_assert_str_eq(th_hash(a), before);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 1);
    cr_assert_eq(th_seal(a), 0, "a refused import left changes to seal");
    msgs_free(&ms);
    tsync_store_free(a);
}

Test(io, bad_csv_structure)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    msgs ms = {0};
    static const char *cases[][2] = {
        {"id,bogus\np1,1\n", "in:1:bogus: unknown column \"bogus\" (table products)"},
        {"name\nx\n", "in:1: no column for the primary key \"id\""},
        {"id,name\np1,x\np2,\"ab\"c\np3,y\n",
         "in:3: broken CSV quoting: a quote inside an unquoted field, or text after a closing "
         "quote"},
        {"id,name\np1,x\np2,\"abc\n\n", "in:3: quoted field not closed before the end of the file"},
        {"id,name\np1,a\"b\n", "in:2: broken CSV quoting: a quote inside an unquoted field, or "
                               "text after a closing quote"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        int rc = import_str(a, "products", cases[i][0], strlen(cases[i][0]), TSYNC__IO_CSV, 1, &ms,
                            NULL, NULL);
        cr_assert_neq(rc, 0, "case %zu", i);
        cr_assert_str_eq(tsync_error_last()->message, cases[i][1]);
    }
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 0);
    cr_assert_eq(import_str(a, "nope", "id\n1\n", 5, TSYNC__IO_CSV, 0, &ms, NULL, NULL),
                 TSYNC_ENOTFOUND);
    msgs_free(&ms);
    tsync_store_free(a);
}

Test(io, bad_json_and_ndjson)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    msgs ms = {0};
    static const char js[] = "[\n"
                             "{\"id\":\"j1\",\"price\":5},\n"
                             "{\"id\":\"j2\",\"price\":\"x\",\"bogus\":1},\n"
                             "{\"name\":\"nokey\"},\n"
                             "{\"id\":\"j4\",\n \"price\":1.5},\n"
                             " 7\n"
                             "]\n";
    int rc = import_str(a, "products", js, sizeof js - 1, TSYNC__IO_JSON, 0, &ms, NULL, NULL);
    cr_assert_eq(rc, TSYNC_EREFUSED);
    cr_assert_eq(ms.n, 5);
    cr_assert(has_msg(&ms, "in:3:price: \"x\" is a string, expected an integer"));
    cr_assert(has_msg(&ms, "in:3:bogus: unknown column \"bogus\" (table products)"));
    cr_assert(has_msg(&ms, "in:4:id: primary key column missing"));
    cr_assert(has_msg(&ms, "in:5:price: 1.5 is not an integer"));
    cr_assert(has_msg(&ms, "in:7: an integer, expected an object"));
    msgs_free(&ms);

    static const char nd[] = "{\"id\":\"n1\"}\n"
                             "{\"id\":\"n2\",\n"
                             "\n"
                             "{\"id\":\"n3\",\"name\":\"\xff\"}\n"
                             "{\"id\":\"n4\",\"name\":\"ok\"}\n";
    rc = import_str(a, "products", nd, sizeof nd - 1, TSYNC__IO_NDJSON, 0, &ms, NULL, NULL);
    cr_assert_eq(rc, TSYNC_EREFUSED);
    cr_assert_eq(ms.n, 2);
    cr_assert(!strncmp(ms.msgs[0], "in:2: invalid JSON", 18), "%s", ms.msgs[0]);
    cr_assert(!strncmp(ms.msgs[1], "in:4: invalid JSON at column", 28), "%s", ms.msgs[1]);
    cr_assert(strstr(ms.msgs[1], "0xff"));
    msgs_free(&ms);

    static const char broken[] = "[{\"id\":\"a\"},\n{\"id\": }]";
    rc = import_str(a, "products", broken, sizeof broken - 1, TSYNC__IO_JSON, 1, &ms, NULL, NULL);
    cr_assert_eq(rc, TSYNC_ECORRUPT);
    cr_assert(!strncmp(tsync_error_last()->message, "in:2: invalid JSON", 18));
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 0);
    msgs_free(&ms);
    tsync_store_free(a);
}

Test(io, skip_bad_imports_good_rows_and_writes_rejects)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    msgs ms = {0};
    char *rej = NULL;
    tsync__import_opts res;
    int rc =
        import_str(a, "products", BAD_CSV, sizeof BAD_CSV - 1, TSYNC__IO_CSV, 1, &ms, &rej, &res);
    cr_assert_eq(rc, 0);
    cr_assert_eq(res.imported, 2);
    cr_assert_eq(res.rejected, 5);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products", -1), 2);
    cr_assert_eq(th_int(a, "SELECT price FROM products WHERE id='p7'", -1), 9);
    cr_assert(!strncmp(rej, "\"tillsync_reject\",\"id\",\"name\",\"price\"\r\n", 39), "%s", rej);
    cr_assert(
        strstr(rej, "\"price: \"\"abc\"\" is not an integer (64-bit)\",\"p2\",\"Coffee\",\"abc\""));
    cr_assert(strstr(rej, "\"p4\",\"two\r\nlines\",\"1.5\""));
    msgs_free(&ms);

    /* The rejects file, fixed, imports: its reason column is ignored. */
    const char *fixed = "\"tillsync_reject\",\"id\",\"name\",\"price\"\r\n"
                        "\"price: bad\",\"p2\",\"Coffee\",\"300\"\r\n";
    rc = import_str(a, "products", fixed, strlen(fixed), TSYNC__IO_CSV, 0, &ms, NULL, &res);
    cr_assert_eq(rc, 0);
    cr_assert_eq(th_int(a, "SELECT price FROM products WHERE id='p2'", -1), 300);
    free(rej);

    static const char nd[] = "{\"id\":\"n1\",\"price\":1}\n{\"id\":\"n2\",\"price\":\"x\"}\n";
    rc = import_str(a, "products", nd, sizeof nd - 1, TSYNC__IO_NDJSON, 1, &ms, &rej, &res);
    cr_assert_eq(rc, 0);
    cr_assert_str_eq(rej, "{\"tillsync_reject\":\"price: \\\"x\\\" is a string, expected an "
                          "integer\",\"id\":\"n2\",\"price\":\"x\"}\n");
    free(rej);
    msgs_free(&ms);
    tsync_store_free(a);
}

Test(io, upsert_updates_only_given_columns_and_replicates)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    th_exec(a, "INSERT INTO products(id, name, price, stock) VALUES('p1', 'Tea', 100, 5)");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0);
    const char *csv = "id,price\np1,120\np2,300\n";
    msgs ms = {0};
    cr_assert_eq(import_str(a, "products", csv, strlen(csv), TSYNC__IO_CSV, 0, &ms, NULL, NULL), 0);
    char *name = th_text(a, "SELECT name FROM products WHERE id='p1'");
    cr_assert_str_eq(name, "Tea");
    free(name);
    cr_assert_eq(th_int(a, "SELECT stock FROM products WHERE id='p1'", -1), 5);
    cr_assert_eq(th_seal(a), 0, "import must seal");
    cr_assert_eq(th_sync(a, b), 0);
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='p1'", -1), 120);
    cr_assert_eq(th_int(b, "SELECT price FROM products WHERE id='p2'", -1), 300);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

static void count_progress(void *ctx, size_t rows)
{
    ++*(size_t *)ctx;
}

Test(io, large_import_reports_progress)
{
    AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    fputs("id,name,price,stock\n", f);
    for (int i = 0; i < 25000; i++) fprintf(f, "p%d,\"Item %d\",%d,%d\n", i, i, i * 10, i % 7);
    fclose(f);
    FILE *in = fmemopen(buf, len, "r");
    tsync__import_opts o = {0};
    o.name = "big";
    o.format = TSYNC__IO_CSV;
    o.progress_every = 10000;
    size_t calls = 0;
    o.ctx = &calls;
    o.progress = count_progress;
    int rc = tsync__import(a, "products", in, &o);
    fclose(in);
    cr_assert_eq(rc, 0);
    cr_assert_eq(o.imported, 25000);
    cr_assert_eq(calls, 2);
    cr_assert_eq(th_int(a, "SELECT sum(price) FROM products", -1), 10LL * 25000 * 24999 / 2);
    free(buf);
    tsync_store_free(a);
}
