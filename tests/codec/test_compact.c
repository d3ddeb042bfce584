/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_compact.c — compact runs (codec/compact.c, bundle format 5): random runs of
 * random valid batches (every field kind: several tables, keys of every type, deletes with rmv,
 * counters, deps on other sites, overwritten clocks) mixed with bodies that must travel whole
 * (random bytes, a batch of another seq or origin) rebuild byte for byte; every flipped byte of a
 * compact run is either refused by the reader or rebuilds other bodies (which the hash chain then
 * refuses), never the same bodies through another path unnoticed; every truncation is refused;
 * a format-5 bundle reads back through tsync__bstream and tsync__bundle_decode, and a format-4
 * one still does; a body appended by tsync__batch_encode_append is tsync__batch_encode's, and a
 * taken decoder buffer keeps its bodies.
 *
 * Seeded: TSYNC_SEED replays a failure.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/codec.h"
#include "codec/compact.h"
#include "tests/lib/helpers.h"

#define NPOOL 5

typedef struct {
    uint8_t origin[16];
    uint8_t pool[NPOOL][16]; /* other sites */
    uint32_t n;
    uint8_t **body;
    size_t *len;
    uint64_t first;
    uint64_t hlc;
} run;

static tsync__val rand_val(uint64_t *rng, tsync__arena *a, bool key)
{
    tsync__val v = {0};
    switch (th_rand(rng) % (key ? 4 : 5)) {
    case 0:
        v.type = TSYNC__V_INT;
        v.i = (int64_t)th_rand(rng) >> (th_rand(rng) % 64);
        break;
    case 1: {
        v.type = TSYNC__V_TEXT;
        v.n = (uint32_t)(th_rand(rng) % 40);
        char *p = tsync__arena_alloc(a, v.n + 1);
        for (uint32_t i = 0; i < v.n; i++) p[i] = (char)('a' + th_rand(rng) % 26);
        v.p = p;
        break;
    }
    case 2: {
        v.type = TSYNC__V_BLOB;
        v.n = (uint32_t)(th_rand(rng) % 300);
        uint8_t *p = tsync__arena_alloc(a, v.n + 1);
        for (uint32_t i = 0; i < v.n; i++) p[i] = (uint8_t)th_rand(rng);
        v.p = p;
        break;
    }
    case 3:
        v.type = TSYNC__V_REAL;
        v.r = (double)(int64_t)th_rand(rng) / 1024.0;
        break;
    default:
        v.type = TSYNC__V_NULL;
        break;
    }
    return v;
}

static const tsync__btable *tables_of(uint32_t *n)
{
    static const char *c1[] = {"id", "name", "price", "stock"};
    static uint32_t l1[] = {2, 4, 5, 5};
    static uint32_t k1[] = {3};
    static const char *c2[] = {"shop", "line", "qty", "note", "n2"};
    static uint32_t l2[] = {4, 4, 3, 4, 2};
    static uint32_t k2[] = {2, 4};
    static const tsync__btable t[2] = {
        {"products", 8, 4, c1, l1, 1, 1, k1, 0, NULL, NULL},
        {"lines", 5, 5, c2, l2, 2, 2, k2, 0, NULL, NULL},
    };
    *n = 2;
    return t;
}

/* A valid batch of r's origin at seq, encoded. */
static void make_batch(run *r, uint64_t *rng, uint64_t seq, uint8_t **out, size_t *len)
{
    tsync__arena a = {0};
    tsync__batch b = {0};
    b.format = TSYNC__BATCH_FORMAT;
    memcpy(b.origin, r->origin, 16);
    b.seq = seq;
    r->hlc += th_rand(rng) % 4 == 0 ? (th_rand(rng) % 100000) << 16 : 1 + th_rand(rng) % 3;
    b.hlc_lo = r->hlc;
    uint64_t span = th_rand(rng) % 3 == 0 ? th_rand(rng) % 50 : 0;
    b.hlc_hi = b.hlc_lo + span;
    r->hlc = b.hlc_hi;
    uint32_t nt;
    const tsync__btable *tabs = tables_of(&nt);
    b.ntables = th_rand(rng) % 5 == 0 ? 2 : 1;
    b.tables = (tsync__btable *)tabs;
    b.nsites = 1 + (uint32_t)(th_rand(rng) % 3);
    uint8_t(*sites)[16] = tsync__arena_array(&a, b.nsites, 16);
    memcpy(sites[0], r->origin, 16);
    /* Distinct sites from the pool (a site once in a batch). */
    uint32_t first = (uint32_t)(th_rand(rng) % NPOOL);
    for (uint32_t i = 1; i < b.nsites; i++) memcpy(sites[i], r->pool[(first + i) % NPOOL], 16);
    b.sites = (const uint8_t(*)[16])sites;
    b.ndeps = b.nsites > 1 ? (uint32_t)(th_rand(rng) % b.nsites) : 0;
    b.deps = tsync__arena_array(&a, b.ndeps + 1, sizeof *b.deps);
    for (uint32_t i = 0; i < b.ndeps; i++) {
        b.deps[i].site = 1 + i;
        b.deps[i].seq = 1 + th_rand(rng) % 100000;
    }
    b.nrows = (uint32_t)(th_rand(rng) % 4);
    b.rows = tsync__arena_array(&a, b.nrows + 1, sizeof *b.rows);
    for (uint32_t i = 0; i < b.nrows; i++) {
        tsync__brow *row = &b.rows[i];
        memset(row, 0, sizeof *row);
        row->table = (uint32_t)(th_rand(rng) % b.ntables);
        const tsync__btable *t = &tabs[row->table];
        for (uint32_t k = 0; k < t->npk; k++) row->pk[k] = rand_val(rng, &a, true);
        row->hlc = b.hlc_lo + (span ? th_rand(rng) % (span + 1) : 0);
        row->flags = th_rand(rng) % 4 == 0 ? TSYNC__ROW_DEL : TSYNC__ROW_ADD;
        if (row->flags == TSYNC__ROW_DEL) {
            row->nrmv = (uint32_t)(th_rand(rng) % 3);
            row->rmv = tsync__arena_array(&a, row->nrmv + 1, sizeof *row->rmv);
            for (uint32_t k = 0; k < row->nrmv; k++) {
                row->rmv[k].site = (uint32_t)(th_rand(rng) % b.nsites);
                row->rmv[k].hlc = row->hlc - (th_rand(rng) % 1000000);
            }
            continue;
        }
        row->cols = tsync__arena_array(&a, t->ncols, sizeof *row->cols);
        for (uint32_t c = t->npk; c < t->ncols; c++) {
            bool ctr = false;
            for (uint32_t k = 0; k < t->ncounters; k++) ctr |= t->counters[k] == c;
            if (ctr || th_rand(rng) % 2) continue;
            tsync__bcol *col = &row->cols[row->ncols++];
            col->col = c;
            col->val = rand_val(rng, &a, false);
            if (th_rand(rng) % 3) {
                col->old_hlc = th_rand(rng) % 5 == 0 ? 1 + th_rand(rng) % 70000
                                                     : row->hlc - (th_rand(rng) % (1ull << 40));
                col->old_site = (uint32_t)(th_rand(rng) % b.nsites);
            }
        }
        row->ctrs = tsync__arena_array(&a, t->ncounters + 1, sizeof *row->ctrs);
        for (uint32_t k = 0; k < t->ncounters; k++) {
            if (th_rand(rng) % 2) continue;
            tsync__bctr *c = &row->ctrs[row->nctrs++];
            c->col = t->counters[k];
            c->p = th_rand(rng) >> (th_rand(rng) % 64);
            c->n = th_rand(rng) % 1000;
        }
    }
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_encode(&b, out, len, err), 0, "%s", err);
    /* Appended after other bytes (the run decoder's way), the same body follows them; a batch the
     * encoder refuses adds nothing. */
    size_t pre = th_rand(rng) % 3 == 0 ? 0 : 1 + th_rand(rng) % 9000, used = pre, cap = pre;
    uint8_t *buf = pre ? malloc(pre) : NULL;
    if (pre) memset(buf, 0xa5, pre);
    cr_assert_eq(tsync__batch_encode_append(&b, &buf, &used, &cap, err), 0, "%s", err);
    cr_assert_eq(used, pre + *len);
    cr_assert_eq(memcmp(buf + pre, *out, *len), 0, "an appended body differs");
    for (size_t i = 0; i < pre; i++) cr_assert_eq(buf[i], 0xa5, "the bytes before it changed");
    b.hlc_hi = b.hlc_lo - 1; /* below hlc_lo: refused */
    cr_assert_eq(tsync__batch_encode_append(&b, &buf, &used, &cap, err), TSYNC_EINVAL);
    cr_assert_eq(used, pre + *len, "a refused batch grew the buffer's length");
    free(buf);
    tsync__arena_free(&a);
}

static void make_run(run *r, uint64_t *rng, uint32_t n, bool odd_bodies, const uint8_t *origin)
{
    memset(r, 0, sizeof *r);
    for (int i = 0; i < 16; i++) r->origin[i] = (uint8_t)th_rand(rng);
    if (origin) memcpy(r->origin, origin, 16);
    for (int p = 0; p < NPOOL; p++)
        for (int i = 0; i < 16; i++) r->pool[p][i] = (uint8_t)th_rand(rng);
    r->hlc = (uint64_t)1700000000000 << 16;
    r->first = 1 + th_rand(rng) % 1000;
    r->n = n;
    r->body = calloc(n, sizeof *r->body);
    r->len = calloc(n, sizeof *r->len);
    for (uint32_t k = 0; k < n; k++) {
        uint64_t dice = odd_bodies ? th_rand(rng) % 20 : 19;
        if (dice == 0) { /* random bytes */
            r->len[k] = 1 + th_rand(rng) % 200;
            r->body[k] = malloc(r->len[k]);
            for (size_t i = 0; i < r->len[k]; i++) r->body[k][i] = (uint8_t)th_rand(rng);
        } else if (dice == 1) { /* a valid batch of another seq */
            make_batch(r, rng, r->first + k + 1, &r->body[k], &r->len[k]);
        } else {
            make_batch(r, rng, r->first + k, &r->body[k], &r->len[k]);
        }
    }
}

static void free_run(run *r)
{
    for (uint32_t k = 0; k < r->n; k++) free(r->body[k]);
    free(r->body);
    free(r->len);
}

static bool same_bodies(const run *r, const uint8_t *const *body, const size_t *len)
{
    for (uint32_t k = 0; k < r->n; k++)
        if (len[k] != r->len[k] || memcmp(body[k], r->body[k], len[k]) != 0) return false;
    return true;
}

Test(compact, random_runs_rebuild_byte_for_byte)
{
    uint64_t rng = th_seed("compact.random_runs");
    tsync__crun_dec *d = tsync__crun_dec_new();
    size_t raw = 0, packed = 0;
    for (int round = 0; round < 60; round++) {
        run r;
        make_run(&r, &rng, 1 + (uint32_t)(th_rand(&rng) % 400), round % 2 == 1, NULL);
        uint8_t *blob;
        size_t blen;
        cr_assert_eq(tsync__crun_encode(r.origin, r.first, r.n, (const uint8_t *const *)r.body,
                                        r.len, &blob, &blen),
                     0);
        const uint8_t *const *body;
        const size_t *len;
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__crun_decode(d, r.origin, r.first, r.n, blob, blen, &body, &len, err), 0,
                     "round %d: %s", round, err);
        cr_assert(same_bodies(&r, body, len), "round %d: bodies differ", round);
        for (uint32_t k = 0; k < r.n; k++) raw += r.len[k];
        packed += blen;
        /* The same blob read as another origin or seq rebuilds other bodies (or is refused):
         * neither is taken from the blob. */
        uint8_t other[16];
        memcpy(other, r.origin, 16);
        other[0] ^= 1;
        if (tsync__crun_decode(d, other, r.first, r.n, blob, blen, &body, &len, err) == 0)
            cr_assert(!same_bodies(&r, body, len) || round % 2 == 1);
        free(blob);
        free_run(&r);
    }
    cr_log_info("compact: %zu bytes of bodies in %zu bytes", raw, packed);
    cr_assert_lt(packed, raw);
    tsync__crun_dec_free(d);
}

/* The bundle reader keeps a run's rebuilt bodies by taking the decoder's buffer into its arena
 * (codec/bundle_stream.c, keep_run): the bodies stay intact while the decoder rebuilds the next
 * runs, and only the array of the last decode takes it. */
Test(compact, taken_buffers_keep_their_bodies)
{
    uint64_t rng = th_seed("compact.taken_buffers");
    tsync__crun_dec *d = tsync__crun_dec_new();
    tsync__arena a = {0};
    run r[4];
    const uint8_t **kept[4];
    char err[TSYNC__ERRLEN];
    for (int i = 0; i < 4; i++) {
        make_run(&r[i], &rng, 1 + (uint32_t)(th_rand(&rng) % 300), i % 2 == 1, NULL);
        uint8_t *blob;
        size_t blen;
        cr_assert_eq(tsync__crun_encode(r[i].origin, r[i].first, r[i].n,
                                        (const uint8_t *const *)r[i].body, r[i].len, &blob, &blen),
                     0);
        const uint8_t *const *body;
        const size_t *len;
        cr_assert_eq(
            tsync__crun_decode(d, r[i].origin, r[i].first, r[i].n, blob, blen, &body, &len, err), 0,
            "run %d: %s", i, err);
        free(blob);
        const uint8_t *other[1] = {body[0]};
        cr_assert_null(tsync__crun_dec_take(d, other), "took the buffer for another array");
        kept[i] = malloc(r[i].n * sizeof *kept[i]);
        memcpy(kept[i], body, r[i].n * sizeof *kept[i]);
        if (i == 2) continue; /* left with the decoder: rebuilt over by the next run */
        uint8_t *own = tsync__crun_dec_take(d, body);
        cr_assert_not_null(own);
        cr_assert_null(tsync__crun_dec_take(d, body), "took the same buffer twice");
        cr_assert(tsync__arena_adopt(&a, own));
        cr_assert_not_null(tsync__arena_alloc(&a, 100)); /* the arena still allocates */
    }
    for (int i = 0; i < 4; i++) {
        if (i != 2) cr_assert(same_bodies(&r[i], kept[i], r[i].len), "run %d: bodies changed", i);
        free(kept[i]);
        free_run(&r[i]);
    }
    tsync__arena_free(&a); /* frees the adopted buffers (ASan: no leak) */
    tsync__crun_dec_free(d);
}

/* Every single-byte change of a compact run: refused, or other bodies (the chain refuses them). */
Test(compact, every_corrupted_byte_is_refused_or_changes_the_bodies)
{
    uint64_t rng = th_seed("compact.corrupt");
    tsync__crun_dec *d = tsync__crun_dec_new();
    for (int round = 0; round < 4; round++) {
        run r;
        make_run(&r, &rng, 12, round >= 2, NULL);
        uint8_t *blob;
        size_t blen;
        cr_assert_eq(tsync__crun_encode(r.origin, r.first, r.n, (const uint8_t *const *)r.body,
                                        r.len, &blob, &blen),
                     0);
        static const uint8_t masks[] = {0x01, 0x02, 0x40, 0x80, 0xff};
        size_t refused = 0, changed = 0;
        for (size_t i = 0; i < blen; i++) {
            for (size_t m = 0; m < sizeof masks; m++) {
                blob[i] ^= masks[m];
                const uint8_t *const *body;
                const size_t *len;
                char err[TSYNC__ERRLEN];
                int rc =
                    tsync__crun_decode(d, r.origin, r.first, r.n, blob, blen, &body, &len, err);
                if (rc) {
                    cr_assert_eq(rc, TSYNC_ECORRUPT);
                    cr_assert(err[0] && !strchr(err, '\n'), "%s", err);
                    refused++;
                } else {
                    cr_assert(!same_bodies(&r, body, len),
                              "round %d: byte %zu ^ 0x%02x rebuilt the same bodies", round, i,
                              masks[m]);
                    changed++;
                }
                blob[i] ^= masks[m];
            }
        }
        for (size_t cut = 0; cut < blen; cut++) {
            const uint8_t *const *body;
            const size_t *len;
            char err[TSYNC__ERRLEN];
            cr_assert_eq(tsync__crun_decode(d, r.origin, r.first, r.n, blob, cut, &body, &len, err),
                         TSYNC_ECORRUPT, "cut at %zu of %zu", cut, blen);
        }
        /* More or fewer batches than were written. */
        {
            const uint8_t *const *body;
            const size_t *len;
            char err[TSYNC__ERRLEN];
            cr_assert_eq(
                tsync__crun_decode(d, r.origin, r.first, r.n + 1, blob, blen, &body, &len, err),
                TSYNC_ECORRUPT);
            cr_assert_eq(
                tsync__crun_decode(d, r.origin, r.first, r.n - 1, blob, blen, &body, &len, err),
                TSYNC_ECORRUPT);
        }
        cr_log_info("round %d: %zu refused, %zu rebuilt other bodies", round, refused, changed);
        free(blob);
        free_run(&r);
    }
    tsync__crun_dec_free(d);
}

static th_buf write_bundle(const run *r, const tsync__bsite *s, unsigned format, bool z)
{
    th_buf b = {0};
    tsync__bstream_writer *w;
    uint32_t si;
    uint8_t prev[32] = {0}, sig[64];
    memset(prev, 7, sizeof prev);
    memset(sig, 9, sizeof sig);
    cr_assert_eq(tsync__bstream_writer_open_format(&w, z, format, th_buf_write, &b), 0);
    cr_assert_eq(tsync__bstream_writer_site(w, s, &si), 0);
    /* two runs: the first half and the rest */
    uint32_t h = r->n / 2;
    cr_assert_eq(tsync__bstream_writer_run(w, si, r->first, prev, h,
                                           (const uint8_t *const *)r->body, r->len, sig),
                 0);
    cr_assert_eq(tsync__bstream_writer_run(w, si, r->first + h, prev, r->n - h,
                                           (const uint8_t *const *)r->body + h, r->len + h, sig),
                 0);
    cr_assert_eq(tsync__bstream_writer_finish(w), 0);
    tsync__bstream_writer_free(w);
    return b;
}

Test(compact, format_5_and_format_4_bundles_read_the_same)
{
    uint64_t rng = th_seed("compact.bundles");
    for (int round = 0; round < 6; round++) {
        run r;
        tsync__bsite s;
        for (int i = 0; i < 32; i++) s.pk[i] = (uint8_t)th_rand(&rng);
        for (int i = 0; i < 16; i++) s.inc[i] = (uint8_t)th_rand(&rng);
        tsync__site_id(s.pk, s.inc, s.site);
        make_run(&r, &rng, 2 + (uint32_t)(th_rand(&rng) % 300), round % 2 == 0, s.site);
        for (unsigned f = TSYNC__BUNDLE_FORMAT_STREAM4; f <= TSYNC__BUNDLE_FORMAT_STREAM; f++) {
            for (int z = 0; z < 2; z++) {
                th_buf b = write_bundle(&r, &s, f, z == 1);
                cr_assert_eq(b.p[8], f);
                tsync__bundle dec;
                tsync__arena a = {0};
                char err[TSYNC__ERRLEN];
                cr_assert_eq(tsync__bundle_decode(b.p, b.len, &dec, &a, err), 0, "%s", err);
                cr_assert_eq(dec.nruns, 2);
                uint32_t k = 0;
                for (uint32_t ri = 0; ri < dec.nruns; ri++)
                    for (uint32_t j = 0; j < dec.runs[ri].nbodies; j++, k++) {
                        cr_assert_eq(dec.runs[ri].body_len[j], r.len[k]);
                        cr_assert_eq(memcmp(dec.runs[ri].body[j], r.body[k], r.len[k]), 0);
                    }
                cr_assert_eq(k, r.n);
                tsync__bundle_free(&dec);
                tsync__arena_free(&a);
                /* A format-4 reader's rule: a compact run record is an unknown kind there. */
                if (f == TSYNC__BUNDLE_FORMAT_STREAM && !z) {
                    b.p[8] = TSYNC__BUNDLE_FORMAT_STREAM4;
                    cr_assert_eq(tsync__bundle_decode(b.p, b.len, &dec, &a, err), TSYNC_ECORRUPT);
                    cr_assert(strstr(err, "unknown kind 5"), "%s", err);
                    tsync__arena_free(&a);
                }
                free(b.p);
            }
        }
        free_run(&r);
    }
}
