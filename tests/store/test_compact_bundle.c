/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_compact_bundle.c — bundle format 5 (compact runs) at the store: a seeded
 * property test that a live-shaped shop (one batch per transaction, two tills, deletes, counters)
 * merges to the same tsync_store_hash from a format-5 bundle as from the same batches in format
 * 4; a format-4 bundle still merges; a format-5 bundle with a field altered (uncompressed, so no
 * zstd checksum helps) is refused and changes nothing.
 *
 * Seeded: TSYNC_SEED replays a failure.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "tests/lib/helpers.h"

/* The same bundle re-written in another format, every record as it was. */
static th_buf rewrite(const uint8_t *img, size_t len, unsigned format, bool z)
{
    th_buf b = {0};
    char err[TSYNC__ERRLEN];
    tsync__bstream *r;
    tsync__bstream_writer *w;
    cr_assert_eq(tsync__bstream_open_mem(&r, img, len, err), 0, "%s", err);
    cr_assert_eq(tsync__bstream_writer_open_format(&w, z, format, th_buf_write, &b), 0);
    tsync__bs_item it;
    int rc;
    while ((rc = tsync__bstream_next(r, &it, err)) == 0 && it.kind != TSYNC__BS_END) {
        uint32_t si;
        switch (it.kind) {
        case TSYNC__BS_TRUST:
            cr_assert_eq(tsync__bstream_writer_trust(w, it.data, it.len), 0);
            break;
        case TSYNC__BS_SCHEMA:
            cr_assert_eq(tsync__bstream_writer_schema(w, it.schema_site, it.data, it.len), 0);
            break;
        case TSYNC__BS_SITE:
            cr_assert_eq(tsync__bstream_writer_site(w, it.site, &si), 0);
            break;
        case TSYNC__BS_RUN:
            cr_assert_eq(tsync__bstream_writer_site(w, it.site, &si), 0);
            cr_assert_eq(tsync__bstream_writer_run(
                             w, si, it.run.first_seq, it.run.prev, it.run.nbodies,
                             (const uint8_t *const *)it.run.body, it.run.body_len, it.run.sig),
                         0);
            break;
        default:
            break;
        }
    }
    cr_assert_eq(rc, 0, "%s", err);
    cr_assert_eq(tsync__bstream_writer_finish(w), 0);
    tsync__bstream_writer_free(w);
    tsync__bstream_free(r);
    return b;
}

TestSuite(compact_bundle, .fini = th_cleanup);

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e ? e->message : "?";
}

/* A live-shaped history: every statement its own transaction, sealed at once, on two tills that
 * sync now and then (so batches carry deps on the other till and overwrite its clocks). */
static void live_shop(tsync_store *a, tsync_store *c, uint64_t *rng, int n)
{
    char sql[256];
    for (int i = 0; i < n; i++) {
        tsync_store *s = th_rand(rng) % 4 == 0 ? c : a;
        int p = (int)(th_rand(rng) % 60);
        switch (th_rand(rng) % 6) {
        case 0:
            snprintf(sql, sizeof sql, "DELETE FROM products WHERE id='p%03d'", p);
            break;
        case 1:
            snprintf(sql, sizeof sql, "UPDATE products SET stock=stock-%d WHERE id='p%03d'",
                     (int)(th_rand(rng) % 5), p);
            break;
        case 2:
            snprintf(sql, sizeof sql, "UPDATE products SET name='n%llu' WHERE id='p%03d'",
                     (unsigned long long)th_rand(rng), p);
            break;
        default:
            snprintf(sql, sizeof sql,
                     "INSERT INTO products VALUES('p%03d', 'item %d', %d, %d) ON CONFLICT(id) DO "
                     "UPDATE SET price=excluded.price",
                     p, p, (int)(th_rand(rng) % 100000), (int)(th_rand(rng) % 50));
            break;
        }
        th_exec(s, sql);
        th_seal(s);
        if (th_rand(rng) % 40 == 0) {
            cr_assert_eq(th_sync(a, c), 0, "%s", errmsg());
            cr_assert_eq(th_sync(c, a), 0, "%s", errmsg());
        }
    }
    cr_assert_eq(th_sync(c, a), 0, "%s", errmsg());
}

static void merge_ok(tsync_store *s, const uint8_t *img, size_t len)
{
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(s, img, len, &rep), 0, "%s", errmsg());
    cr_assert_eq(rep.held, 0);
    cr_assert_eq(rep.refused, 0);
    tsync_merge_report_clear(&rep);
}

Test(compact_bundle, format_5_merges_to_the_same_state_as_format_4)
{
    uint64_t rng = th_seed("compact_bundle.property");
    for (int round = 0; round < 3; round++) {
        char *d = th_tmpdir_auto();
        tsync_store *a = th_open_products(th_path(d, "a.db"));
        tsync_store *c = th_open_products(th_path(d, "c.db"));
        live_shop(a, c, &rng, 150 + (int)(th_rand(&rng) % 150));
        size_t len;
        TH_AUTO_FREE uint8_t *img = th_bundle(a, &len);
        cr_assert_eq(img[8], TSYNC__BUNDLE_FORMAT_STREAM);
        th_buf f4 = rewrite(img, len, TSYNC__BUNDLE_FORMAT_STREAM4, true);
        th_buf f5raw = rewrite(img, len, TSYNC__BUNDLE_FORMAT_STREAM, false);
        tsync_store *b5 = th_open_products(th_path(d, "b5.db"));
        tsync_store *b4 = th_open_products(th_path(d, "b4.db"));
        tsync_store *b5r = th_open_products(th_path(d, "b5r.db"));
        merge_ok(b5, img, len);
        merge_ok(b4, f4.p, f4.len);
        merge_ok(b5r, f5raw.p, f5raw.len);
        char want[65];
        snprintf(want, sizeof want, "%s", th_hash(a));
        cr_assert_str_eq(th_hash(b5), want, "round %d", round);
        cr_assert_str_eq(th_hash(b4), want, "round %d", round);
        cr_assert_str_eq(th_hash(b5r), want, "round %d", round);
        cr_log_info("round %d: format 5 %zu bytes, format 4 %zu bytes", round, len, f4.len);
        cr_assert_leq(len, f4.len);
        free(f4.p);
        free(f5raw.p);
        tsync_store_free(a);
        tsync_store_free(c);
        tsync_store_free(b5);
        tsync_store_free(b4);
        tsync_store_free(b5r);
    }
}

Test(compact_bundle, a_format_4_bundle_still_merges_from_a_file)
{
    char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("compact_bundle.format4");
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    live_shop(a, c, &rng, 120);
    size_t len;
    TH_AUTO_FREE uint8_t *img = th_bundle(a, &len);
    th_buf f4 = rewrite(img, len, TSYNC__BUNDLE_FORMAT_STREAM4, true);
    cr_assert_eq(f4.p[8], 4);
    const char *path = th_path(d, "old.bun");
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(f4.p, 1, f4.len, f), f4.len);
    fclose(f);
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(b, path, &rep), 0, "%s", errmsg());
    tsync_merge_report_clear(&rep);
    char want[65];
    snprintf(want, sizeof want, "%s", th_hash(a));
    cr_assert_str_eq(th_hash(b), want);
    free(f4.p);
    tsync_store_free(a);
    tsync_store_free(c);
    tsync_store_free(b);
}

/* Finds the blob of the first compact run record of an uncompressed format-5 bundle: a bin
 * header right after the batch count. Returns its offset and length through *off, *n. */
static bool find_blob(const uint8_t *p, size_t len, size_t *off, size_t *n)
{
    /* record: bin header, then 0x97 (array of 7), 0x05 (kind) */
    for (size_t i = 10; i + 8 < len; i++) {
        if (p[i] != 0x97 || p[i + 1] != 0x05) continue;
        size_t j = i + 2;
        j += p[j] < 0x80 ? 1 : p[j] == 0xcc ? 2 : p[j] == 0xcd ? 3 : 5; /* site index */
        j += p[j] < 0x80 ? 1 : p[j] == 0xcc ? 2 : p[j] == 0xcd ? 3 : p[j] == 0xce ? 5 : 9;
        j += 2 + 32;                                                    /* prev hash */
        j += p[j] < 0x80 ? 1 : p[j] == 0xcc ? 2 : p[j] == 0xcd ? 3 : 5; /* count */
        if (p[j] == 0xc4) {
            *n = p[j + 1], *off = j + 2;
        } else if (p[j] == 0xc5) {
            *n = (size_t)p[j + 1] << 8 | p[j + 2], *off = j + 3;
        } else if (p[j] == 0xc6) {
            *n = (size_t)p[j + 1] << 24 | (size_t)p[j + 2] << 16 | (size_t)p[j + 3] << 8 | p[j + 4];
            *off = j + 5;
        } else {
            continue;
        }
        return *off + *n <= len;
    }
    return false;
}

Test(compact_bundle, an_altered_compact_field_is_refused_and_changes_nothing)
{
    char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("compact_bundle.altered");
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    live_shop(a, c, &rng, 60);
    size_t len;
    TH_AUTO_FREE uint8_t *img = th_bundle(a, &len);
    th_buf raw = rewrite(img, len, TSYNC__BUNDLE_FORMAT_STREAM, false);
    size_t off, n;
    cr_assert(find_blob(raw.p, raw.len, &off, &n), "no compact run record found");
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    th_exec(b, "INSERT INTO products VALUES('mine', 'x', 1, 1)");
    th_seal(b);
    char before[65];
    snprintf(before, sizeof before, "%s", th_hash(b));
    /* A sample of positions over the whole blob (every stream), each flipped alone. */
    int tried = 0;
    for (size_t i = 0; i < n; i += 1 + n / 97) {
        raw.p[off + i] ^= 0x01;
        tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
        int rc = tsync_store_merge(b, raw.p, raw.len, &rep);
        tsync_merge_report_clear(&rep);
        cr_assert_neq(rc, 0, "blob byte %zu of %zu flipped: merged", i, n);
        cr_assert_str_eq(th_hash(b), before, "blob byte %zu: a refused bundle changed B", i);
        raw.p[off + i] ^= 0x01;
        tried++;
    }
    cr_assert_gt(tried, 20);
    merge_ok(b, raw.p, raw.len); /* the unaltered one merges */
    free(raw.p);
    tsync_store_free(a);
    tsync_store_free(c);
    tsync_store_free(b);
}
