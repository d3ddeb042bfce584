/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_codec_snapshot.c — the snapshot chunk format on its own (codec/snapshot.c): a
 * chunk built by hand encodes to the size the exporter predicts, decodes whole or a row at a time
 * to what was encoded, and the strictness that moved with it from store/ still holds (trailing
 * and truncated bytes, non-canonical integers, names repeated in another case, another format).
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "codec/snapshot.h"

typedef struct {
    tsync__snap_site sites[2];
    const char *cols[3];
    uint32_t col_len[3];
    uint32_t counters[1];
    tsync__btable table;
    tsync__snap_exist exist[3][2];
    tsync__snap_col cols_[3][1];
    tsync__snap_pn pn[3][2];
    tsync__snap_ctr ctrs[3][1];
    tsync__snap_row rows[3];
    tsync__snap_chunk c;
} fixture;

static void build(fixture *f)
{
    memset(f, 0, sizeof *f);
    cr_assert_geq(sodium_init(), 0);
    /* site 0 with its key and incarnation, site 1 by id only */
    randombytes_buf(f->sites[0].pk, TSYNC__PK_BYTES);
    randombytes_buf(f->sites[0].inc, TSYNC__INC_BYTES);
    tsync__site_id(f->sites[0].pk, f->sites[0].inc, f->sites[0].site);
    f->sites[0].has_key = 1;
    memset(f->sites[1].site, 0xab, TSYNC__SITE_BYTES);
    static const char *names[] = {"id", "name", "qty"};
    for (int i = 0; i < 3; i++) {
        f->cols[i] = names[i];
        f->col_len[i] = (uint32_t)strlen(names[i]);
    }
    f->counters[0] = 2;
    f->table = (tsync__btable){.name = "items",
                               .name_len = 5,
                               .ncols = 3,
                               .cols = f->cols,
                               .col_len = f->col_len,
                               .npk = 1,
                               .ncounters = 1,
                               .counters = f->counters};
    static const char *keys[] = {"a", "bb", "ccc"};
    for (uint32_t r = 0; r < 3; r++) {
        tsync__snap_row *row = &f->rows[r];
        row->table = 0;
        row->pk[0] = (tsync__val){.type = TSYNC__V_TEXT, .p = keys[r], .n = r + 1};
        f->exist[r][0] = (tsync__snap_exist){0, 1000 + r, 0};
        f->exist[r][1] = (tsync__snap_exist){1, 2000 + r, 500};
        row->nexist = 2;
        row->exist = f->exist[r];
        f->cols_[r][0] =
            (tsync__snap_col){.col = 1,
                              .hlc = 3000 + r,
                              .site = r % 2,
                              .val = {.type = TSYNC__V_INT, .i = -(int64_t)r * 100000}};
        row->ncols = 1;
        row->cols = f->cols_[r];
        f->pn[r][0] = (tsync__snap_pn){0, 5 + r, 1};
        f->pn[r][1] = (tsync__snap_pn){1, 70000 + r, 0};
        f->ctrs[r][0] = (tsync__snap_ctr){.col = 2, .n = 2, .v = f->pn[r]};
        row->nctrs = 1;
        row->ctrs = f->ctrs[r];
    }
    f->c = (tsync__snap_chunk){.nsites = 2,
                               .sites = f->sites,
                               .ntables = 1,
                               .tables = &f->table,
                               .nrows = 3,
                               .rows = f->rows};
}

static void same_row(const tsync__snap_row *a, const tsync__snap_row *b)
{
    cr_assert_eq(a->table, b->table);
    cr_assert_eq(a->pk[0].n, b->pk[0].n);
    cr_assert(memcmp(a->pk[0].p, b->pk[0].p, a->pk[0].n) == 0);
    cr_assert_eq(a->nexist, b->nexist);
    for (uint32_t k = 0; k < a->nexist; k++) {
        cr_assert_eq(a->exist[k].site, b->exist[k].site);
        cr_assert_eq(a->exist[k].add, b->exist[k].add);
        cr_assert_eq(a->exist[k].rmv, b->exist[k].rmv);
    }
    cr_assert_eq(a->ncols, b->ncols);
    for (uint32_t k = 0; k < a->ncols; k++) {
        cr_assert_eq(a->cols[k].col, b->cols[k].col);
        cr_assert_eq(a->cols[k].hlc, b->cols[k].hlc);
        cr_assert_eq(a->cols[k].site, b->cols[k].site);
        cr_assert_eq(a->cols[k].val.i, b->cols[k].val.i);
    }
    cr_assert_eq(a->nctrs, b->nctrs);
    for (uint32_t k = 0; k < a->nctrs; k++) {
        cr_assert_eq(a->ctrs[k].col, b->ctrs[k].col);
        cr_assert_eq(a->ctrs[k].n, b->ctrs[k].n);
        for (uint32_t j = 0; j < a->ctrs[k].n; j++) {
            cr_assert_eq(a->ctrs[k].v[j].site, b->ctrs[k].v[j].site);
            cr_assert_eq(a->ctrs[k].v[j].p, b->ctrs[k].v[j].p);
            cr_assert_eq(a->ctrs[k].v[j].n, b->ctrs[k].v[j].n);
        }
    }
}

Test(codec_snapshot, encodes_to_the_predicted_size_and_decodes_whole_or_by_row)
{
    fixture f;
    build(&f);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(tsync__snap_encode(&f.c, &buf, &len), 0);
    size_t want = tsync__snap_head_size(2, 1, 3) + tsync__snap_site_size(&f.sites[0]) +
                  tsync__snap_site_size(&f.sites[1]) + tsync__snap_table_size(&f.table);
    for (int r = 0; r < 3; r++) want += tsync__snap_row_size(&f.rows[r], 1);
    cr_assert_eq(len, want, "encoded %zu bytes, the sizes say %zu", len, want);

    tsync__arena a = {0};
    tsync__snap_chunk d;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__snap_decode(buf, len, &d, &a, err), 0, "%s", err);
    cr_assert_eq(d.nsites, 2);
    cr_assert(d.sites[0].has_key && !d.sites[1].has_key);
    cr_assert_eq(d.nrows, 3);
    for (int r = 0; r < 3; r++) same_row(&d.rows[r], &f.rows[r]);
    uint8_t *again;
    size_t alen;
    cr_assert_eq(tsync__snap_encode(&d, &again, &alen), 0);
    cr_assert(alen == len && memcmp(again, buf, len) == 0, "a decoded chunk re-encodes alike");
    free(again);
    tsync__arena_free(&a);

    tsync__snap_reader it;
    tsync__snap_row row;
    cr_assert_eq(tsync__snap_open(&it, buf, len, &a, err), 0, "%s", err);
    cr_assert_eq(it.nrows, 3);
    for (int r = 0; r < 3; r++) {
        cr_assert_eq(tsync__snap_next(&it, &row), 0, "%s", err);
        same_row(&row, &f.rows[r]);
    }
    cr_assert_eq(tsync__snap_close(&it), 0, "%s", err);
    tsync__snap_reader_free(&it);
    tsync__arena_free(&a);

    /* a reader closed before the last row says how many were left */
    cr_assert_eq(tsync__snap_open(&it, buf, len, &a, err), 0, "%s", err);
    cr_assert_eq(tsync__snap_next(&it, &row), 0, "%s", err);
    cr_assert_eq(tsync__snap_close(&it), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "2 not read"), "%s", err);
    tsync__snap_reader_free(&it);
    tsync__arena_free(&a);
    free(buf);
}

static void refused(const uint8_t *buf, size_t len, int code, const char *words)
{
    tsync__arena a = {0};
    tsync__snap_chunk d;
    char err[TSYNC__ERRLEN];
    int rc = tsync__snap_decode(buf, len, &d, &a, err);
    tsync__arena_free(&a);
    cr_assert_eq(rc, code, "expected %d (%s), got %d: %s", code, words, rc, err);
    cr_assert(strstr(err, words), "message \"%s\" lacks \"%s\"", err, words);
    cr_assert(!strchr(err, '\n'));
}

Test(codec_snapshot, stays_strict)
{
    fixture f;
    build(&f);
    uint8_t *buf;
    size_t len;
    cr_assert_eq(tsync__snap_encode(&f.c, &buf, &len), 0);
    uint8_t *b = malloc(len + 2);
    cr_assert(b);

    memcpy(b, buf, len);
    b[len] = 0xc0;
    refused(b, len + 1, TSYNC_ECORRUPT, "trailing");
    for (size_t cut = 0; cut < len; cut += 7) {
        tsync__arena a = {0};
        tsync__snap_chunk d;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__snap_decode(buf, cut, &d, &a, err), TSYNC_ECORRUPT, "cut at %zu", cut);
        tsync__arena_free(&a);
    }
    /* the format as uint8 (0xcc 0x01) instead of the fixint 0x01 */
    cr_assert_eq(buf[0], 0x94);
    cr_assert_eq(buf[1], 0x01);
    b[0] = 0x94;
    b[1] = 0xcc;
    b[2] = 0x01;
    memcpy(b + 3, buf + 2, len - 2);
    refused(b, len + 1, TSYNC_ECORRUPT, "non-canonical");
    memcpy(b, buf, len);
    b[1] = 0x02;
    refused(b, len, TSYNC_EVERSION, "format 2");
    free(buf);

    /* "ID" and "id" are one column to SQLite, so to a chunk too */
    static const char *twice[] = {"id", "name", "ID"};
    f.table.cols = twice;
    f.table.col_len[2] = 2;
    cr_assert_eq(tsync__snap_encode(&f.c, &buf, &len), 0);
    refused(buf, len, TSYNC_ECORRUPT, "named twice");
    free(buf);
    free(b);
}
