/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_schema.c — tills whose definitions of a replicated table differ (issue 10,
 * defect 9; store/schema.c): two replicas whose `products` differ (a counter on one only, an
 * extra column, another declared type) exchange bundles; each must then report what differs
 * (which table, which column, which till) through tillsync/schema.h, and list its parked
 * changes with their reasons, instead of diverging silently. Also: the description is canonical
 * (case and column order do not matter), its decoder is strict, a bundle carries it (format 3)
 * and one whose description is damaged is refused whole, and a migration that makes the
 * definitions agree clears the report and applies the parked changes.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"
#include "store/schema.h"
#include "tests/lib/helpers.h"

TestSuite(store_schema, .fini = th_cleanup);

/* What the C API reports, flattened to one string per call: "table|column|site|what\n"... */
typedef struct {
    char buf[8192];
    int n;
} lines;

static int add_mismatch(void *ctx, const tsync_schema_mismatch *m)
{
    lines *l = ctx;
    cr_assert_eq(m->version, TSYNC_SCHEMA_MISMATCH_VERSION);
    cr_assert_not_null(m->till);
    cr_assert_gt(m->seen_ms, 0);
    size_t used = strlen(l->buf);
    snprintf(l->buf + used, sizeof l->buf - used, "%s|%s|%s|%s\n", m->table,
             m->column ? m->column : "-", m->site_hex, m->what);
    l->n++;
    return 0;
}

static int add_parked(void *ctx, const tsync_parked_change *c)
{
    lines *l = ctx;
    cr_assert_eq(c->version, TSYNC_PARKED_CHANGE_VERSION);
    size_t used = strlen(l->buf);
    snprintf(l->buf + used, sizeof l->buf - used, "%s|%s|%s|%llu|%s\n", c->table,
             c->column ? c->column : "-", c->origin_hex, (unsigned long long)c->seq, c->reason);
    l->n++;
    return 0;
}

static lines mismatches(tsync_store *s)
{
    lines l = {{0}, 0};
    cr_assert_eq(tsync_store_schema_mismatches(s, add_mismatch, &l), 0, "%s", th_errmsg());
    return l;
}

static lines parked(tsync_store *s, size_t *total)
{
    lines l = {{0}, 0};
    cr_assert_eq(tsync_store_parked_foreach(s, 0, total, add_parked, &l), 0, "%s", th_errmsg());
    return l;
}

static const char *site_hex(tsync_store *s)
{
    static char ring[4][33];
    static int k;
    char *o = ring[k++ % 4];
    const uint8_t *id = tsync_store_site_id(s);
    for (int i = 0; i < 16; i++) snprintf(o + 2 * i, 3, "%02x", id[i]);
    return o;
}

static void has(const lines *l, const char *want, const char *what)
{
    cr_assert_not_null(strstr(l->buf, want), "%s lacks \"%s\":\n%s", what, want, l->buf);
}

/* Both ways, both merges must succeed: nothing is refused for schema reasons. */
static void exchange(tsync_store *a, tsync_store *b)
{
    cr_assert_eq(th_sync(a, b), 0, "a->b: %s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "b->a: %s", th_errmsg());
}

static void digest(tsync_store *s, uint8_t out[32])
{
    char *js = NULL;
    cr_assert_eq(tsync_store_schema_json(&js, s, out), 0, "%s", th_errmsg());
    free(js);
}

Test(store_schema, counter_on_one_till_only_is_reported_and_parked_with_reasons)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db")); /* stock: a counter */
    tsync_store *b = th_open(th_path(d, "b.db"));
    th_exec(b, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price INTEGER, "
               "stock INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(b, "products", NULL, 0), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 250, 10)");
    th_exec(b, "INSERT INTO products VALUES('p2', 'cake', 390, 5)");
    th_seal(a);
    th_seal(b);
    cr_assert_eq(mismatches(a).n, 0, "nothing known of b yet");
    exchange(a, b);

    /* The divergence itself (what the defect is about): the contents differ for good. */
    cr_assert_str_neq(th_hash(a), th_hash(b));

    char want[256];
    lines mb = mismatches(b), ma = mismatches(a);
    snprintf(want, sizeof want,
             "products|stock|%s|column stock: a plain column here, a counter there", site_hex(a));
    has(&mb, want, "b's mismatches");
    cr_assert_eq(mb.n, 1, "only stock differs:\n%s", mb.buf);
    snprintf(want, sizeof want,
             "products|stock|%s|column stock: a counter here, a plain column there", site_hex(b));
    has(&ma, want, "a's mismatches");

    size_t total = 0;
    lines pb = parked(b, &total);
    snprintf(want, sizeof want, "products|-|%s|1|a counter column there is not one here",
             site_hex(a));
    has(&pb, want, "b's parked changes");
    cr_assert_eq(total, (size_t)pb.n);
    /* a: b's plain stock for what is a counter here is parked and shown, not dropped unseen. */
    lines pa = parked(a, &total);
    snprintf(want, sizeof want, "products|stock|%s|1|a plain column there is a counter here",
             site_hex(b));
    has(&pa, want, "a's parked changes");
    cr_assert_eq(total, 1);
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
}

Test(store_schema, extra_column_and_type_are_reported)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(d, "a.db"));
    tsync_store *b = th_open(th_path(d, "b.db"));
    th_exec(a, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price REAL, note TEXT)");
    th_exec(b, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, price TEXT)");
    cr_assert_eq(tsync_store_replicate(a, "products", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(b, "products", NULL, 0), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 2.5, 'green')");
    th_seal(a);
    exchange(a, b);

    char want[256];
    lines mb = mismatches(b);
    snprintf(want, sizeof want, "products|note|%s|column note: there, missing here", site_hex(a));
    has(&mb, want, "b's mismatches");
    snprintf(want, sizeof want, "products|price|%s|column price: type text here, real there",
             site_hex(a));
    has(&mb, want, "b's mismatches");
    cr_assert_eq(mb.n, 2, "%s", mb.buf);
    lines ma = mismatches(a);
    has(&ma, "column note: here, missing there", "a's mismatches");
    has(&ma, "column price: type real here, text there", "a's mismatches");

    size_t total = 0;
    lines pb = parked(b, &total);
    snprintf(want, sizeof want, "products|note|%s|1|no such column here", site_hex(a));
    has(&pb, want, "b's parked changes");
    cr_assert_eq(total, 1);

    /* The fix: a migration on b adds the column. The report clears at once (b's own definition
     * is read live) for note, the parked value applies; the type difference stays reported. */
    char *mig = th_tmpdir_auto();
    FILE *f = fopen(th_path(mig, "001_note.sql"), "w");
    cr_assert_not_null(f);
    fputs("ALTER TABLE products ADD COLUMN note TEXT;\n", f);
    fclose(f);
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    cr_assert_eq(tsync_store_migrate(b, mig, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.unparked, 1);
    tsync_migrate_report_clear(&r);
    mb = mismatches(b);
    cr_assert_eq(mb.n, 1, "%s", mb.buf);
    has(&mb, "column price: type text here, real there", "b's mismatches after the migration");
    cr_assert_eq(parked(b, &total).n, 0);
    cr_assert_eq(total, 0);
    char *note = th_text(b, "SELECT note FROM products WHERE id = 'p1'");
    cr_assert_str_eq(note, "green");
    free(note);
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
    free(mig);
}

Test(store_schema, description_is_canonical)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(d, "a.db"));
    tsync_store *b = th_open(th_path(d, "b.db"));
    th_exec(a, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, qty INTEGER NOT NULL "
               "DEFAULT 0)");
    th_exec(b, "CREATE TABLE Products(QTY integer not null default 0, ID text PRIMARY KEY, "
               "Name  Text)");
    const char *ca[] = {"qty"}, *cb[] = {"QTY"};
    cr_assert_eq(tsync_store_replicate(a, "products", ca, 1), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(b, "Products", cb, 1), 0, "%s", th_errmsg());
    uint8_t da[32], db[32];
    digest(a, da);
    digest(b, db);
    cr_assert_arr_eq(da, db, 32, "case, blanks and column order must not change the digest");
    char *js = NULL;
    cr_assert_eq(tsync_store_schema_json(&js, b, NULL), 0);
    cr_assert_not_null(strstr(js, "\"name\": \"products\""), "%s", js);
    cr_assert_not_null(strstr(js, "\"type\": \"integer\""), "%s", js);
    free(js);
    /* One more replicated table changes it. */
    th_exec(b, "CREATE TABLE x(id TEXT PRIMARY KEY)");
    cr_assert_eq(tsync_store_replicate(b, "x", NULL, 0), 0, "%s", th_errmsg());
    digest(b, db);
    cr_assert_eq(memcmp(da, db, 32) != 0, 1);
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
}

static int decode(const char *hex, char *err)
{
    uint8_t buf[256];
    size_t n = strlen(hex) / 2;
    for (size_t i = 0; i < n; i++) sscanf(hex + 2 * i, "%2hhx", &buf[i]);
    tsync__arena a = {0};
    tsync__schema s;
    int rc = tsync__schema_decode(buf, n, &s, &a, err);
    tsync__arena_free(&a);
    return rc;
}

Test(store_schema, decoder_is_strict)
{
    char err[TSYNC__ERRLEN];
    /* [1, [["t", [["id", "text", 1, 0]]]]] */
    cr_assert_eq(decode("92019192a1749194a26964a4746578740100", err), 0, "%s", err);
    cr_assert_eq(decode("920190", err), 0, "no table: %s", err);
    static const struct {
        const char *hex, *msg;
    } bad[] = {
        {"920290", "format 2 is not supported"},
        {"93019000", "not an array of 2 items"},
        {"92019000", "trailing bytes"},
        {"92019192a1549194a26964a4746578740100", "upper-case"},
        {"92019192a1749194a26964a4746578740000", "key positions are not 1..n"},
        {"92019192a1749194a26964a4746578740101", "both a key column and a counter"},
        {"92019192a1749194a26964a4746578740102", "counter flag is not 0 or 1"},
        {"92019192a1749294a26964a474657874010094a26964a4746578740000", "listed twice"},
        {"92019292a1749194a26964a474657874010092a1749194a26964a4746578740100", "listed twice"},
        {"92019192a0 9194a26964a4746578740100", "empty"},
        {"92019192a1749194a26964a47465787405 00", "key position"},
        {"92019192a17490", "columns are not an array"},
        {"92019192a1749194a2691fa4746578740100", "control character"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char hex[256];
        size_t k = 0;
        for (const char *p = bad[i].hex; *p; p++)
            if (*p != ' ') hex[k++] = *p;
        hex[k] = '\0';
        int rc = decode(hex, err);
        cr_assert_neq(rc, 0, "case %zu (%s) was accepted", i, bad[i].msg);
        cr_assert_not_null(strstr(err, bad[i].msg), "case %zu: \"%s\" lacks \"%s\"", i, err,
                           bad[i].msg);
    }
}

Test(store_schema, bundles_carry_the_definitions_and_a_damaged_one_is_refused)
{
    char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open(th_path(d, "b.db"));
    th_exec(a, "INSERT INTO products VALUES('p1', 'tea', 250, 10)");
    size_t len;
    uint8_t *bun = th_bundle(a, &len);
    cr_assert_eq(bun[8], TSYNC__BUNDLE_FORMAT_STREAM, "format %u", bun[8]);
    tsync__arena ar = {0};
    tsync__bundle dec;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(bun, len, &dec, &ar, err), 0, "%s", err);
    cr_assert_not_null(dec.schema);
    cr_assert_arr_eq(dec.schema_site, tsync_store_site_id(a), 16);
    tsync__bundle_free(&dec);
    tsync__arena_free(&ar);

    /* A format-3 bundle whose description does not decode: refused whole, nothing merged. */
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    static const uint8_t upper[] = {0x92, 0x01, 0x91, 0x92, 0xa1, 0x54, 0x91, 0x94, 0xa2,
                                    0x69, 0x64, 0xa4, 0x74, 0x65, 0x78, 0x74, 0x01, 0x00};
    cr_assert_eq(tsync__bundle_writer_schema(w, tsync_store_site_id(a), upper, sizeof upper), 0);
    uint8_t *bad;
    size_t blen;
    cr_assert_eq(tsync__bundle_writer_finish(w, false, &bad, &blen), 0);
    tsync__bundle_writer_free(w);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(b, bad, blen, &r), TSYNC_ECORRUPT);
    cr_assert_not_null(strstr(th_errmsg(), "upper-case"), "%s", th_errmsg());
    cr_assert_eq(r.refused, 1);
    tsync_merge_report_clear(&r);
    free(bad);

    /* b, not replicating products at all, is told so by the bundle's merge report. */
    cr_assert_eq(tsync_store_merge(b, bun, len, &r), 0, "%s", th_errmsg());
    int said = 0;
    for (size_t i = 0; i < r.nmessages; i++)
        said |= strstr(r.messages[i], "definition of products differs on till") != NULL &&
                strstr(r.messages[i], "replicated there, not here") != NULL;
    cr_assert(said, "the merge report does not say products differs");
    tsync_merge_report_clear(&r);
    /* The same bundle again: nothing changed, nothing said again. */
    cr_assert_eq(tsync_store_merge(b, bun, len, &r), 0, "%s", th_errmsg());
    for (size_t i = 0; i < r.nmessages; i++)
        cr_assert_null(strstr(r.messages[i], "definition of"), "said again: %s", r.messages[i]);
    tsync_merge_report_clear(&r);
    free(bun);
    tsync_store_free(a);
    tsync_store_free(b);
    free(d);
}
