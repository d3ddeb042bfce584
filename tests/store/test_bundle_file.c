/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_bundle_file.c — bundles written to and merged from files
 * (tsync_store_bundle_file, tsync_store_merge_file; store/bundle_io.c): the same rows as the
 * in-memory calls; a bundle written by main before format 4 (a fixture) and one re-encoded with
 * the format 1-3 writer still merge; truncated and corrupted files are refused with one line and
 * merge nothing; a failed write leaves no file behind and an existing one unchanged.
 *
 * Seeded: TSYNC_SEED replays a failure.
 */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "codec/codec.h"
#include "tests/lib/helpers.h"

TestSuite(bundle_file, .fini = th_cleanup);

static const char *errmsg(void)
{
    return tsync_error_last()->message;
}

/* `tillsync bundle` of main 81ea467 (format 3, zstd): a till that made products p1 (Tea, 250,
 * stock 10 then 9), p2 (Coffee, 320, 5) and p3 (Cake, 400, 2) in 3 batches. */
static const unsigned char old_bundle[] = {
    0x54, 0x53, 0x59, 0x4e, 0x43, 0x42, 0x44, 0x4c, 0x03, 0x01, 0x28, 0xb5, 0x2f, 0xfd, 0x64, 0x9f,
    0x01, 0x9d, 0x0b, 0x00, 0x54, 0x12, 0x94, 0x91, 0x93, 0xc4, 0x10, 0xd4, 0x77, 0x2e, 0x9e, 0x3f,
    0x55, 0x42, 0xa8, 0xb9, 0x4c, 0x2d, 0xe7, 0x65, 0xc7, 0x8f, 0x91, 0xc4, 0x20, 0xfe, 0xa0, 0x3c,
    0x08, 0x2c, 0x99, 0xa5, 0xba, 0x91, 0x11, 0x78, 0x57, 0x88, 0x98, 0xdd, 0xdd, 0x89, 0x19, 0xad,
    0xcb, 0x03, 0x54, 0x99, 0xdf, 0x36, 0x96, 0x61, 0x66, 0x34, 0x41, 0x34, 0xba, 0xc4, 0x10, 0x6f,
    0xaf, 0x99, 0xd6, 0xaa, 0x95, 0x73, 0x4e, 0x9c, 0x70, 0x8d, 0xee, 0x87, 0xfb, 0xc2, 0xfa, 0x91,
    0x95, 0x00, 0x01, 0xc4, 0x20, 0x00, 0x93, 0xc4, 0x9d, 0x99, 0x01, 0x01, 0xcf, 0x01, 0xa2, 0x4f,
    0x5e, 0x6f, 0x76, 0x00, 0x00, 0x01, 0x91, 0x90, 0x91, 0x94, 0xa8, 0x70, 0x72, 0x6f, 0x64, 0x75,
    0x63, 0x74, 0x73, 0x94, 0xa2, 0x69, 0x64, 0xa4, 0x6e, 0x61, 0x6d, 0x65, 0xa5, 0x70, 0x72, 0x69,
    0x63, 0x65, 0xa5, 0x73, 0x74, 0x6f, 0x63, 0x6b, 0x01, 0x91, 0x03, 0x92, 0x97, 0x00, 0x91, 0xa2,
    0x70, 0x31, 0x00, 0x01, 0x90, 0x92, 0x94, 0x01, 0xa3, 0x54, 0x65, 0x61, 0x00, 0x00, 0x94, 0x02,
    0xcc, 0xfa, 0x00, 0x00, 0x91, 0x93, 0x03, 0x0a, 0x00, 0x32, 0x01, 0xa6, 0x43, 0x6f, 0x66, 0x66,
    0x65, 0x65, 0xcd, 0x01, 0x40, 0x05, 0x00, 0xc4, 0x6e, 0x02, 0xdd, 0xdd, 0x00, 0x00, 0x91, 0x90,
    0x01, 0xc4, 0x7e, 0x03, 0x70, 0xb0, 0x33, 0xa4, 0x43, 0x61, 0x6b, 0x90, 0x02, 0x00, 0xc4, 0x40,
    0x5c, 0x5c, 0x1f, 0x27, 0x32, 0xba, 0x2d, 0x75, 0x57, 0xce, 0xcf, 0xe3, 0x67, 0xce, 0xc1, 0xcb,
    0x25, 0x8f, 0x3a, 0x63, 0x46, 0xf6, 0x49, 0x4a, 0x1f, 0xea, 0x2e, 0x99, 0x14, 0x76, 0x1e, 0x0f,
    0x13, 0x95, 0xb0, 0x1d, 0x1c, 0x97, 0xd7, 0x4e, 0x05, 0x29, 0x0c, 0x67, 0xd7, 0x7f, 0x41, 0x29,
    0xd0, 0x67, 0x1b, 0x8f, 0x40, 0xdf, 0x6e, 0xc9, 0xed, 0xff, 0x08, 0xe8, 0xe0, 0x5b, 0x8f, 0x00,
    0x90, 0x92, 0xc4, 0x48, 0x92, 0x01, 0x91, 0x92, 0x74, 0x65, 0x78, 0x74, 0x01, 0x00, 0x94, 0x00,
    0x00, 0x94, 0xa7, 0x69, 0x6e, 0x74, 0x65, 0x67, 0x65, 0x72, 0x01, 0x1f, 0x00, 0x50, 0xb0, 0xbc,
    0x0e, 0xd0, 0x58, 0x0e, 0x4c, 0x67, 0x60, 0x0e, 0xe0, 0x52, 0x33, 0x58, 0x12, 0xe0, 0x95, 0xb6,
    0x32, 0x86, 0xcf, 0x0d, 0x34, 0x31, 0x37, 0x47, 0x12, 0x0b, 0x3b, 0x01, 0x09, 0x16, 0x0b, 0x40,
    0x22, 0xb4, 0x6c, 0x0e, 0x72, 0x14, 0xc3, 0x04, 0x68, 0x97, 0xe0, 0x0c, 0x78, 0x07, 0x18, 0x13,
    0x19, 0x9a, 0x89, 0x92, 0x31, 0x54, 0x18, 0x70, 0x28, 0x00, 0xd5, 0x9e, 0xa4, 0x7c, 0x63, 0x11,
    0x9d, 0x0e, 0x9e, 0x42, 0x0d, 0x38, 0x03, 0x14, 0xe9, 0x8d, 0x9f};
#define OLD_BUNDLE_HASH "d686fbee93af7c21314c08841348e18ba0bb99a5cf001d894656784d703fca2c"

static void write_bytes(const char *path, const void *p, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(p, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

static uint8_t *read_bytes(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "cannot open %s", path);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *p = malloc(*n ? *n : 1);
    cr_assert_eq(fread(p, 1, *n, f), *n);
    fclose(f);
    return p;
}

static const char *table_hash(tsync_store *s, const char *table)
{
    static char out[65];
    uint8_t h[TSYNC_HASH_BYTES];
    cr_assert_eq(tsync_store_hash(h, s, table), 0, "%s", errmsg());
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
    return out;
}

/* Random sales, updates and deletes, sealed in batches of random size; names long enough that
 * the log spans several run pieces of about 1 MiB. */
static void random_shop(tsync_store *s, uint64_t *rng, int rows)
{
    char *name = malloc(1200);
    th_exec(s, "BEGIN");
    for (int i = 0; i < rows; i++) {
        size_t n = 200 + th_rand(rng) % 900;
        for (size_t k = 0; k < n; k++) name[k] = (char)('a' + th_rand(rng) % 26);
        name[n] = 0;
        char sql[1400];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%05d', '%s', %d, %d)", i, name,
                 (int)(th_rand(rng) % 1000), (int)(th_rand(rng) % 50));
        th_exec(s, sql);
        if (th_rand(rng) % 300 == 0) {
            th_exec(s, "COMMIT");
            th_seal(s);
            th_exec(s, "BEGIN");
        }
    }
    th_exec(s, "COMMIT");
    th_seal(s);
    for (int u = 0; u < 40; u++) {
        char sql[200];
        int id = (int)(th_rand(rng) % (uint64_t)rows);
        if (u % 5 == 4)
            snprintf(sql, sizeof sql, "DELETE FROM products WHERE id='p%05d'", id);
        else
            snprintf(sql, sizeof sql,
                     "UPDATE products SET price=%d, stock=stock-1 WHERE id='p%05d'",
                     (int)(th_rand(rng) % 1000), id);
        th_exec(s, sql);
        th_seal(s);
    }
    free(name);
}

Test(bundle_file, file_and_memory_bundles_give_the_same_rows)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("bundle_file.file_and_memory");
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    random_shop(a, &rng, 3000);
    size_t nb = 0, nb_mem = 0;
    const char *path = th_path(d, "a.bun");
    cr_assert_eq(tsync_store_bundle_file(a, path, NULL, &nb), 0, "%s", errmsg());
    size_t len;
    TH_AUTO_FREE uint8_t *img = read_bytes(path, &len);
    cr_assert_eq(img[8], TSYNC__BUNDLE_FORMAT_STREAM);
    TH_AUTO_FREE uint8_t *mem = NULL;
    size_t mlen;
    cr_assert_eq(tsync_store_bundle(&mem, &mlen, a, NULL, &nb_mem), 0, "%s", errmsg());
    cr_assert_eq(nb, nb_mem);
    cr_assert_eq(len, mlen, "file %zu bytes, memory %zu", len, mlen);
    cr_assert_eq(memcmp(img, mem, len), 0, "the file and the memory bundle differ");

    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(b, path, &r), 0, "%s", errmsg());
    cr_assert_eq(r.merged, nb);
    tsync_merge_report_clear(&r);
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    cr_assert_eq(tsync_store_merge(c, mem, mlen, NULL), 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(b), th_hash(a));
    cr_assert_str_eq(th_hash(c), th_hash(a));

    /* A --since bundle from b's state after more sales: only what b lacks. */
    th_exec(a, "UPDATE products SET price=price+1 WHERE rowid % 7 = 0");
    th_seal(a);
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, b), 0);
    cr_assert_eq(tsync_store_bundle_file(a, path, state, &nb), 0, "%s", errmsg());
    free(state);
    cr_assert_eq(nb, 1);
    cr_assert_eq(tsync_store_merge_file(b, path, NULL), 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(b), th_hash(a));
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

Test(bundle_file, a_bundle_of_main_still_merges)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    const char *path = th_path(d, "old.bun");
    write_bytes(path, old_bundle, sizeof old_bundle);
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(b, path, &r), 0, "%s", errmsg());
    cr_assert_eq(r.merged, 3);
    tsync_merge_report_clear(&r);
    cr_assert_str_eq(table_hash(b, "products"), OLD_BUNDLE_HASH);
    cr_assert_eq(th_int(b, "SELECT stock FROM products WHERE id='p1'", -1), 9);
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    cr_assert_eq(tsync_store_merge(c, old_bundle, sizeof old_bundle, NULL), 0, "%s", errmsg());
    cr_assert_str_eq(table_hash(c, "products"), OLD_BUNDLE_HASH);
    tsync_store_free(b);
    tsync_store_free(c);
}

/* Re-encodes a decoded bundle with the format 1-3 writer. */
static uint8_t *to_old_format(const uint8_t *img, size_t len, bool compress, size_t *olen)
{
    tsync__bundle bun;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(img, len, &bun, &a, err), 0, "%s", err);
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    for (uint32_t i = 0; i < bun.ntrust; i++)
        cr_assert_eq(tsync__bundle_writer_trust(w, bun.trust[i], bun.trust_len[i]), 0);
    if (bun.schema)
        cr_assert_eq(tsync__bundle_writer_schema(w, bun.schema_site, bun.schema, bun.schema_len),
                     0);
    for (uint32_t r = 0; r < bun.nruns; r++) {
        uint32_t si;
        cr_assert_eq(tsync__bundle_writer_site(w, &bun.sites[bun.runs[r].site], &si), 0);
        cr_assert_eq(tsync__bundle_writer_run(w, si, bun.runs[r].first_seq, bun.runs[r].prev), 0);
        for (uint32_t k = 0; k < bun.runs[r].nbodies; k++)
            cr_assert_eq(tsync__bundle_writer_body(w, bun.runs[r].body[k], bun.runs[r].body_len[k]),
                         0);
        cr_assert_eq(tsync__bundle_writer_end_run(w, bun.runs[r].sig), 0);
    }
    uint8_t *out;
    cr_assert_eq(tsync__bundle_writer_finish(w, compress, &out, olen), 0);
    tsync__bundle_writer_free(w);
    tsync__bundle_free(&bun);
    tsync__arena_free(&a);
    return out;
}

Test(bundle_file, old_format_bundles_merge_from_files)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("bundle_file.old_format");
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    random_shop(a, &rng, 800);
    TH_AUTO_FREE uint8_t *img = NULL;
    size_t len;
    cr_assert_eq(tsync_store_bundle(&img, &len, a, NULL, NULL), 0, "%s", errmsg());
    for (int z = 0; z < 2; z++) {
        size_t olen;
        TH_AUTO_FREE uint8_t *old = to_old_format(img, len, z == 1, &olen);
        cr_assert_eq(old[8], TSYNC__BUNDLE_FORMAT_SCHEMA);
        const char *path = th_path(d, z ? "oldz.bun" : "old.bun");
        write_bytes(path, old, olen);
        tsync_store *b = th_open_products(th_path(d, z ? "bz.db" : "b.db"));
        cr_assert_eq(tsync_store_merge_file(b, path, NULL), 0, "%s", errmsg());
        cr_assert_str_eq(th_hash(b), th_hash(a));
        tsync_store_free(b);
    }
    tsync_store_free(a);
}

/* A merge of path that must be refused with one line and change nothing. */
static void refused(tsync_store *b, const char *path, const char *what)
{
    const char *before = th_hash(b);
    char *state0 = NULL, *state1 = NULL;
    cr_assert_eq(tsync_store_state_json(&state0, b), 0);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge_file(b, path, &r);
    cr_assert_neq(rc, 0, "%s: merged", what);
    const char *m = errmsg();
    cr_assert(m[0] && !strchr(m, '\n') && strstr(m, "bundle"), "%s: message '%s'", what, m);
    cr_assert_eq(r.merged + r.held + r.duplicates, 0, "%s: something merged", what);
    tsync_merge_report_clear(&r);
    cr_assert_str_eq(th_hash(b), before, "%s: rows changed", what);
    cr_assert_eq(tsync_store_state_json(&state1, b), 0);
    /* The state names the clock too, which a refused merge may not move either. */
    cr_assert_str_eq(state0, state1, "%s: state changed", what);
    free(state0);
    free(state1);
}

Test(bundle_file, truncated_or_corrupt_files_refused_and_nothing_merged)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("bundle_file.truncated_or_corrupt");
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    random_shop(a, &rng, 1500);
    const char *good = th_path(d, "good.bun");
    cr_assert_eq(tsync_store_bundle_file(a, good, NULL, NULL), 0, "%s", errmsg());
    size_t len;
    TH_AUTO_FREE uint8_t *img = read_bytes(good, &len);
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    const char *bad = th_path(d, "bad.bun");
    size_t cuts[] = {0, 5, 10, 11, 16, len / 3, len / 2, len - 40, len - 5, len - 1};
    for (size_t i = 0; i < sizeof cuts / sizeof *cuts; i++) {
        char what[64];
        snprintf(what, sizeof what, "cut to %zu of %zu bytes", cuts[i], len);
        write_bytes(bad, img, cuts[i]);
        refused(b, bad, what);
    }
    for (int i = 0; i < 12; i++) {
        size_t off = 10 + th_rand(&rng) % (len - 10);
        char what[64];
        snprintf(what, sizeof what, "byte %zu of %zu flipped", off, len);
        img[off] ^= 0x20;
        write_bytes(bad, img, len);
        img[off] ^= 0x20;
        refused(b, bad, what);
    }
    cr_assert_eq(tsync_store_merge_file(b, good, NULL), 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(b), th_hash(a));
    tsync_store_free(a);
    tsync_store_free(b);
}

static int count_entries(const char *dir)
{
    DIR *dp = opendir(dir);
    cr_assert_not_null(dp);
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strstr(e->d_name, ".bun")) n++;
    closedir(dp);
    return n;
}

Test(bundle_file, a_failed_write_leaves_no_file)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    th_exec(a, "INSERT INTO products VALUES('p1', 'Tea', 250, 10)");
    th_seal(a);
    const char *path = th_path(d, "a.bun");
    write_bytes(path, "keep me", 7);
    cr_assert_eq(tsync_store_bundle_file(a, path, "{not json", NULL), TSYNC_EINVAL);
    size_t n;
    TH_AUTO_FREE uint8_t *kept = read_bytes(path, &n);
    cr_assert(n == 7 && memcmp(kept, "keep me", 7) == 0, "the existing file changed");
    cr_assert_eq(count_entries(d), 1, "a partial file was left behind");
    cr_assert_eq(tsync_store_bundle_file(a, th_path(d, "no/such/dir/a.bun"), NULL, NULL),
                 TSYNC_EIO);
    cr_assert(strstr(errmsg(), "a.bun"), "%s", errmsg());

    tsync_store *b = th_open_products(th_path(d, "b.db"));
    cr_assert_eq(tsync_store_merge_file(b, th_path(d, "missing.bun"), NULL), TSYNC_EIO);
    cr_assert(strstr(errmsg(), "missing.bun") && !strchr(errmsg(), '\n'), "%s", errmsg());
    tsync_store_free(a);
    tsync_store_free(b);
}

/* A bundle of several origins whose batches depend on each other, larger than one slice: merged
 * from a file slice by slice it gives the rows the one-transaction merge gives, and nothing stays
 * held. */
Test(bundle_file, slices_of_many_origins_converge)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    uint64_t rng = th_seed("bundle_file.slices_of_many_origins");
    tsync_store *t[3];
    t[0] = th_open_products(th_path(d, "t0.db"));
    t[1] = th_open_products(th_path(d, "t1.db"));
    t[2] = th_open_products(th_path(d, "t2.db"));
    char *name = malloc(1100);
    for (int round = 0; round < 6; round++) {
        for (int k = 0; k < 3; k++) {
            th_exec(t[k], "BEGIN");
            for (int i = 0; i < 250; i++) {
                size_t n = 300 + th_rand(&rng) % 700;
                for (size_t j = 0; j < n; j++) name[j] = (char)('a' + th_rand(&rng) % 26);
                name[n] = 0;
                char sql[1300];
                snprintf(sql, sizeof sql,
                         "INSERT INTO products VALUES('p%d', '%s', %d, 1) ON CONFLICT(id) DO "
                         "UPDATE SET name=excluded.name, price=excluded.price, stock=stock+1",
                         (int)(th_rand(&rng) % 600), name, (int)(th_rand(&rng) % 1000));
                th_exec(t[k], sql);
            }
            th_exec(t[k], "COMMIT");
            th_seal(t[k]);
            /* Each till learns from the next, so its later batches depend on the other's. */
            cr_assert_eq(th_sync(t[(k + 1) % 3], t[k]), 0, "%s", errmsg());
        }
    }
    free(name);
    const char *path = th_path(d, "all.bun");
    size_t nb;
    cr_assert_eq(tsync_store_bundle_file(t[0], path, NULL, &nb), 0, "%s", errmsg());
    struct stat st;
    cr_assert_eq(stat(path, &st), 0);
    cr_assert_gt(st.st_size, 1 << 20, "%lld bytes: not several slices", (long long)st.st_size);
    TH_AUTO_FREE uint8_t *mem = NULL;
    size_t mlen;
    cr_assert_eq(tsync_store_bundle(&mem, &mlen, t[0], NULL, NULL), 0, "%s", errmsg());
    tsync_store *f = th_open_products(th_path(d, "fresh_file.db"));
    tsync_store *m = th_open_products(th_path(d, "fresh_mem.db"));
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(f, path, &r), 0, "%s", errmsg());
    tsync_merge_report_clear(&r);
    cr_assert_eq(tsync_store_merge(m, mem, mlen, NULL), 0, "%s", errmsg());
    cr_assert_str_eq(th_hash(f), th_hash(m));
    cr_assert_str_eq(th_hash(f), th_hash(t[0]));
    cr_assert_eq(th_int(f, "SELECT count(*) FROM tsync_held", -1), 0);
    /* Merging it again: all duplicates. */
    tsync_merge_report r2 = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge_file(f, path, &r2), 0, "%s", errmsg());
    cr_assert_eq(r2.merged, 0);
    cr_assert_eq(r2.duplicates, nb);
    tsync_merge_report_clear(&r2);
    for (int k = 0; k < 3; k++) tsync_store_free(t[k]);
    tsync_store_free(f);
    tsync_store_free(m);
}
