/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_bundle_stream.c — bundle format 4 (codec/bundle_stream*.c): random bundles
 * round-trip through the streaming writer and reader (from memory, and from a source handing out
 * a few bytes at a time) and through tsync__bundle_decode; every truncation is refused with one
 * line, and so is every flipped bit of a compressed bundle that changes what it decodes to;
 * records out of order, miscounted, of an unknown kind or declared too long are refused; formats
 * 1 to 3 read through the same reader.
 *
 * Seeded: TSYNC_SEED replays a failure.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "codec/codec.h"
#include "tests/lib/helpers.h"

/* ---------------------------------------------------------------- a random bundle */

#define MAXS 4
#define MAXT 5
#define MAXR 12

typedef struct {
    uint32_t site; /* index in sites */
    uint64_t first;
    uint8_t prev[32];
    uint32_t n;
    uint8_t **body;
    size_t *len;
    uint8_t sig[64];
} mrun;

typedef struct {
    uint32_t nsites;
    tsync__bsite sites[MAXS];
    uint32_t ntrust;
    uint8_t *trust[MAXT];
    size_t tlen[MAXT];
    uint8_t *schema;
    size_t slen;
    uint8_t schema_site[16];
    uint32_t nruns;
    mrun runs[MAXR];
} model;

static void fill(uint64_t *rng, uint8_t *p, size_t n)
{
    for (size_t i = 0; i < n; i++) p[i] = (uint8_t)th_rand(rng);
}

static uint8_t *rand_bytes(uint64_t *rng, size_t n)
{
    uint8_t *p = malloc(n);
    cr_assert_not_null(p);
    fill(rng, p, n);
    return p;
}

static void make_model(model *m, uint64_t *rng)
{
    memset(m, 0, sizeof *m);
    m->nsites = 1 + th_rand(rng) % MAXS;
    for (uint32_t i = 0; i < m->nsites; i++) {
        fill(rng, m->sites[i].pk, 32);
        fill(rng, m->sites[i].inc, 16);
        tsync__site_id(m->sites[i].pk, m->sites[i].inc, m->sites[i].site);
    }
    m->ntrust = th_rand(rng) % (MAXT + 1);
    for (uint32_t i = 0; i < m->ntrust; i++) {
        m->tlen[i] = 1 + th_rand(rng) % 4096;
        m->trust[i] = rand_bytes(rng, m->tlen[i]);
    }
    if (th_rand(rng) % 2) {
        m->slen = 1 + th_rand(rng) % 2000;
        m->schema = rand_bytes(rng, m->slen);
        fill(rng, m->schema_site, 16);
    }
    m->nruns = th_rand(rng) % (MAXR + 1);
    for (uint32_t r = 0; r < m->nruns; r++) {
        mrun *run = &m->runs[r];
        run->site = th_rand(rng) % m->nsites;
        run->first = 1 + th_rand(rng) % 1000;
        if (run->first > 1) fill(rng, run->prev, 32);
        run->n = 1 + th_rand(rng) % 40;
        run->body = calloc(run->n, sizeof *run->body);
        run->len = calloc(run->n, sizeof *run->len);
        for (uint32_t k = 0; k < run->n; k++) {
            /* Mostly small, now and then one larger than the reader's buffers. */
            run->len[k] =
                th_rand(rng) % 50 == 0 ? 70000 + th_rand(rng) % 200000 : 1 + th_rand(rng) % 600;
            run->body[k] = rand_bytes(rng, run->len[k]);
        }
        fill(rng, run->sig, 64);
    }
}

static void free_model(model *m)
{
    for (uint32_t i = 0; i < m->ntrust; i++) free(m->trust[i]);
    free(m->schema);
    for (uint32_t r = 0; r < m->nruns; r++) {
        for (uint32_t k = 0; k < m->runs[r].n; k++) free(m->runs[r].body[k]);
        free(m->runs[r].body);
        free(m->runs[r].len);
    }
}

static th_buf write_model(const model *m, bool compress)
{
    th_buf b = {0};
    tsync__bstream_writer *w;
    cr_assert_eq(tsync__bstream_writer_open(&w, compress, th_buf_write, &b), 0);
    for (uint32_t i = 0; i < m->ntrust; i++)
        cr_assert_eq(tsync__bstream_writer_trust(w, m->trust[i], m->tlen[i]), 0);
    if (m->schema)
        cr_assert_eq(tsync__bstream_writer_schema(w, m->schema_site, m->schema, m->slen), 0);
    for (uint32_t r = 0; r < m->nruns; r++) {
        const mrun *run = &m->runs[r];
        uint32_t si;
        cr_assert_eq(tsync__bstream_writer_site(w, &m->sites[run->site], &si), 0);
        cr_assert_eq(tsync__bstream_writer_run(w, si, run->first, run->prev, run->n,
                                               (const uint8_t *const *)run->body, run->len,
                                               run->sig),
                     0);
    }
    cr_assert_eq(tsync__bstream_writer_finish(w), 0);
    /* Nothing follows the end. */
    cr_assert_eq(tsync__bstream_writer_trust(w, (const uint8_t *)"x", 1), TSYNC_EINVAL);
    tsync__bstream_writer_free(w);
    return b;
}

/* A source handing out at most `step` bytes a call (1..step, varying), to cross every boundary. */
typedef struct {
    const uint8_t *p;
    size_t len, pos;
    uint64_t rng;
    size_t step;
} dribble;

static size_t dribble_read(void *ctx, uint8_t *out, size_t n)
{
    dribble *d = ctx;
    size_t k = 1 + th_rand(&d->rng) % d->step;
    if (k > n) k = n;
    if (k > d->len - d->pos) k = d->len - d->pos;
    memcpy(out, d->p + d->pos, k);
    d->pos += k;
    return k;
}

/* Reads r to its end and checks every item against m. */
static void check_items(tsync__bstream *r, const model *m)
{
    char err[TSYNC__ERRLEN];
    tsync__bs_item it;
    uint32_t nt = 0, nr = 0, nsites = 0;
    bool schema = false;
    tsync__bsite seen[MAXS];
    for (;;) {
        cr_assert_eq(tsync__bstream_next(r, &it, err), 0, "%s", err);
        if (it.kind == TSYNC__BS_END) break;
        switch (it.kind) {
        case TSYNC__BS_TRUST:
            cr_assert(nt < m->ntrust && nr == 0 && nsites == 0 && !schema);
            cr_assert_eq(it.len, m->tlen[nt]);
            cr_assert_eq(memcmp(it.data, m->trust[nt], it.len), 0);
            nt++;
            break;
        case TSYNC__BS_SCHEMA:
            cr_assert(m->schema && !schema && nr == 0 && nsites == 0);
            cr_assert_eq(it.len, m->slen);
            cr_assert_eq(memcmp(it.data, m->schema, it.len), 0);
            cr_assert_eq(memcmp(it.schema_site, m->schema_site, 16), 0);
            schema = true;
            break;
        case TSYNC__BS_SITE:
            cr_assert_eq(it.site_idx, nsites);
            seen[nsites++] = *it.site;
            break;
        case TSYNC__BS_RUN: {
            cr_assert(nr < m->nruns);
            const mrun *want = &m->runs[nr++];
            cr_assert(it.site_idx < nsites);
            cr_assert_eq(memcmp(seen[it.site_idx].site, m->sites[want->site].site, 16), 0);
            cr_assert_eq(memcmp(it.site->pk, m->sites[want->site].pk, 32), 0);
            cr_assert_eq(it.run.first_seq, want->first);
            cr_assert_eq(memcmp(it.run.prev, want->prev, 32), 0);
            cr_assert_eq(memcmp(it.run.sig, want->sig, 64), 0);
            cr_assert_eq(it.run.nbodies, want->n);
            for (uint32_t k = 0; k < want->n; k++) {
                cr_assert_eq(it.run.body_len[k], want->len[k]);
                cr_assert_eq(memcmp(it.run.body[k], want->body[k], want->len[k]), 0);
            }
            break;
        }
        default:
            cr_assert_fail("unexpected item %d", it.kind);
        }
    }
    cr_assert_eq(nt, m->ntrust);
    cr_assert_eq(nr, m->nruns);
    cr_assert_eq(schema, m->schema != NULL);
    /* The end stays the end. */
    cr_assert_eq(tsync__bstream_next(r, &it, err), 0);
    cr_assert_eq(it.kind, TSYNC__BS_END);
}

/* tsync__bundle_decode's view of the same bundle. */
static void check_decoded(const th_buf *b, const model *m)
{
    tsync__bundle d;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(b->p, b->len, &d, &a, err), 0, "%s", err);
    cr_assert_eq(d.ntrust, m->ntrust);
    for (uint32_t i = 0; i < m->ntrust; i++)
        cr_assert_eq(memcmp(d.trust[i], m->trust[i], m->tlen[i]), 0);
    cr_assert_eq(d.schema_len, m->schema ? m->slen : 0);
    cr_assert_eq(d.nruns, m->nruns);
    for (uint32_t r = 0; r < m->nruns; r++) {
        const mrun *want = &m->runs[r];
        cr_assert_eq(memcmp(d.sites[d.runs[r].site].site, m->sites[want->site].site, 16), 0);
        cr_assert_eq(d.runs[r].first_seq, want->first);
        cr_assert_eq(d.runs[r].nbodies, want->n);
        for (uint32_t k = 0; k < want->n; k++)
            cr_assert_eq(memcmp(d.runs[r].body[k], want->body[k], want->len[k]), 0);
    }
    tsync__bundle_free(&d);
    tsync__arena_free(&a);
}

Test(bundle_stream, random_round_trip)
{
    uint64_t rng = th_seed("bundle_stream.random_round_trip");
    for (int round = 0; round < 40; round++) {
        model m;
        make_model(&m, &rng);
        for (int z = 0; z < 2; z++) {
            th_buf b = write_model(&m, z == 1);
            cr_assert_eq(b.p[8], TSYNC__BUNDLE_FORMAT_STREAM);
            char err[TSYNC__ERRLEN];
            tsync__bstream *r;
            cr_assert_eq(tsync__bstream_open_mem(&r, b.p, b.len, err), 0, "%s", err);
            cr_assert_eq(tsync__bstream_format(r), TSYNC__BUNDLE_FORMAT_STREAM);
            check_items(r, &m);
            tsync__bstream_free(r);
            dribble d = {b.p, b.len, 0, th_rand(&rng), 1 + th_rand(&rng) % 5000};
            cr_assert_eq(tsync__bstream_open(&r, dribble_read, &d, err), 0, "%s", err);
            check_items(r, &m);
            tsync__bstream_free(r);
            check_decoded(&b, &m);
            free(b.p);
        }
        free_model(&m);
    }
}

static void assert_one_line(int rc, const char *err)
{
    cr_assert_neq(rc, 0);
    cr_assert(err[0] != '\0' && !strchr(err, '\n'), "message: '%s'", err);
}

/* Reads an image to its end; the first failure's code (0: read whole). */
static int read_all(const uint8_t *p, size_t len, char err[TSYNC__ERRLEN])
{
    tsync__bstream *r;
    tsync__bs_item it;
    err[0] = '\0';
    int rc = tsync__bstream_open_mem(&r, p, len, err);
    while (rc == 0 && (rc = tsync__bstream_next(r, &it, err)) == 0 && it.kind != TSYNC__BS_END) {
    }
    tsync__bstream_free(r);
    return rc;
}

Test(bundle_stream, every_truncation_refused)
{
    uint64_t rng = th_seed("bundle_stream.every_truncation_refused");
    model m = {0};
    do {
        free_model(&m);
        make_model(&m, &rng);
    } while (m.nruns < 2);
    for (int z = 0; z < 2; z++) {
        th_buf b = write_model(&m, z == 1);
        char err[TSYNC__ERRLEN];
        cr_assert_eq(read_all(b.p, b.len, err), 0, "%s", err);
        /* Every cut, even one between two records, since the end record is what says "whole". */
        size_t step = b.len > 20000 ? b.len / 5000 : 1;
        for (size_t n = 0; n < b.len; n += (n < 64 || b.len - n < 64) ? 1 : step) {
            int rc = read_all(b.p, n, err);
            assert_one_line(rc, err);
            cr_assert_eq(rc, TSYNC_ECORRUPT, "cut at %zu of %zu: %s", n, b.len, err);
            tsync__bundle d;
            tsync__arena a = {0};
            cr_assert_eq(tsync__bundle_decode(b.p, n, &d, &a, err), TSYNC_ECORRUPT);
            cr_assert_null(d.runs);
            tsync__arena_free(&a);
        }
        free(b.p);
    }
    free_model(&m);
}

Test(bundle_stream, every_flipped_byte_of_a_compressed_bundle_refused_or_harmless)
{
    uint64_t rng = th_seed("bundle_stream.every_flipped_byte");
    model m = {0};
    m.nsites = 1;
    fill(&rng, m.sites[0].pk, 32);
    tsync__site_id(m.sites[0].pk, m.sites[0].inc, m.sites[0].site);
    m.nruns = 2;
    for (int r = 0; r < 2; r++) {
        m.runs[r].first = 1 + 3 * (uint64_t)r;
        if (r) fill(&rng, m.runs[r].prev, 32);
        m.runs[r].n = 3;
        m.runs[r].body = calloc(3, sizeof(uint8_t *));
        m.runs[r].len = calloc(3, sizeof(size_t));
        for (int k = 0; k < 3; k++) {
            m.runs[r].len[k] = 40;
            m.runs[r].body[k] = rand_bytes(&rng, 40);
        }
    }
    th_buf b = write_model(&m, true);
    char err[TSYNC__ERRLEN];
    for (size_t i = 0; i < b.len; i++) {
        for (int bit = 0; bit < 8; bit += 3) {
            b.p[i] ^= (uint8_t)(1u << bit);
            int rc = read_all(b.p, b.len, err);
            if (rc == 0) {
                /* A few bits of a zstd frame change nothing it decodes to (the window descriptor
                 * may only ask for a larger window; some bitstream bits are padding): then the
                 * checksum matches, and the bundle must read exactly as written. */
                tsync__bstream *r;
                cr_assert_eq(tsync__bstream_open_mem(&r, b.p, b.len, err), 0);
                check_items(r, &m);
                tsync__bstream_free(r);
                b.p[i] ^= (uint8_t)(1u << bit);
                continue;
            }
            assert_one_line(rc, err);
            b.p[i] ^= (uint8_t)(1u << bit);
        }
    }
    cr_assert_eq(read_all(b.p, b.len, err), 0, "%s", err);
    /* Bytes after the frame. */
    th_buf_write(&b, "x", 1);
    assert_one_line(read_all(b.p, b.len, err), err);
    cr_assert(strstr(err, "after the zstd frame"), "%s", err);
    free(b.p);
    free_model(&m);
}

/* ---------------------------------------------------------------- hand-made streams */

typedef struct {
    msgpack_sbuffer img, rec;
    msgpack_packer pk; /* into rec */
} hand;

static void hand_start(hand *h)
{
    msgpack_sbuffer_init(&h->img);
    msgpack_sbuffer_init(&h->rec);
    msgpack_packer_init(&h->pk, &h->rec, msgpack_sbuffer_write);
    msgpack_sbuffer_write(&h->img, "TSYNCBDL\x04\x00", 10);
}

/* Appends the record packed into h->rec as one bin. */
static void hand_put(hand *h)
{
    msgpack_packer ip;
    msgpack_packer_init(&ip, &h->img, msgpack_sbuffer_write);
    msgpack_pack_bin(&ip, h->rec.size);
    msgpack_pack_bin_body(&ip, h->rec.data, h->rec.size);
    msgpack_sbuffer_clear(&h->rec);
}

static void hand_site(hand *h, const tsync__bsite *s)
{
    msgpack_pack_array(&h->pk, 4);
    msgpack_pack_uint8(&h->pk, 3);
    msgpack_pack_bin(&h->pk, 16);
    msgpack_pack_bin_body(&h->pk, s->site, 16);
    msgpack_pack_bin(&h->pk, 32);
    msgpack_pack_bin_body(&h->pk, s->pk, 32);
    msgpack_pack_bin(&h->pk, 16);
    msgpack_pack_bin_body(&h->pk, s->inc, 16);
    hand_put(h);
}

static void hand_run(hand *h, uint32_t site, uint64_t first)
{
    static const uint8_t zero[64];
    msgpack_pack_array(&h->pk, 6);
    msgpack_pack_uint8(&h->pk, 4);
    msgpack_pack_uint32(&h->pk, site);
    msgpack_pack_uint64(&h->pk, first);
    msgpack_pack_bin(&h->pk, 32);
    msgpack_pack_bin_body(&h->pk, zero, 32);
    msgpack_pack_array(&h->pk, 1);
    msgpack_pack_bin(&h->pk, 3);
    msgpack_pack_bin_body(&h->pk, "abc", 3);
    msgpack_pack_bin(&h->pk, 64);
    msgpack_pack_bin_body(&h->pk, zero, 64);
    hand_put(h);
}

static void hand_trust(hand *h)
{
    msgpack_pack_array(&h->pk, 2);
    msgpack_pack_uint8(&h->pk, 1);
    msgpack_pack_bin(&h->pk, 4);
    msgpack_pack_bin_body(&h->pk, "cert", 4);
    hand_put(h);
}

static void hand_end(hand *h, uint32_t nsites, uint64_t nruns, uint64_t nbatches, uint32_t ntrust)
{
    msgpack_pack_array(&h->pk, 5);
    msgpack_pack_uint8(&h->pk, 0);
    msgpack_pack_uint32(&h->pk, nsites);
    msgpack_pack_uint64(&h->pk, nruns);
    msgpack_pack_uint64(&h->pk, nbatches);
    msgpack_pack_uint32(&h->pk, ntrust);
    hand_put(h);
}

static int hand_read(hand *h, char err[TSYNC__ERRLEN])
{
    int rc = read_all((const uint8_t *)h->img.data, h->img.size, err);
    msgpack_sbuffer_destroy(&h->img);
    msgpack_sbuffer_destroy(&h->rec);
    return rc;
}

static tsync__bsite a_site(void)
{
    tsync__bsite s;
    memset(s.pk, 7, 32);
    memset(s.inc, 9, 16);
    tsync__site_id(s.pk, s.inc, s.site);
    return s;
}

Test(bundle_stream, hand_made_streams)
{
    char err[TSYNC__ERRLEN];
    tsync__bsite s = a_site();
    hand h;

    /* The well-formed one the others spoil. */
    hand_start(&h);
    hand_trust(&h);
    hand_site(&h, &s);
    hand_run(&h, 0, 1);
    hand_end(&h, 1, 1, 1, 1);
    cr_assert_eq(hand_read(&h, err), 0, "%s", err);

    /* A run lost in between: the end record's counts say so. */
    hand_start(&h);
    hand_site(&h, &s);
    hand_run(&h, 0, 1);
    hand_end(&h, 1, 2, 2, 0);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "records lost or added"), "%s", err);

    /* A trust record after the data. */
    hand_start(&h);
    hand_site(&h, &s);
    hand_trust(&h);
    hand_end(&h, 1, 0, 0, 1);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "trust record after the data"), "%s", err);

    /* A run before its site. */
    hand_start(&h);
    hand_run(&h, 0, 1);
    hand_end(&h, 0, 1, 1, 0);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "out of range"), "%s", err);

    /* The same site twice. */
    hand_start(&h);
    hand_site(&h, &s);
    hand_site(&h, &s);
    hand_end(&h, 2, 0, 0, 0);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "the same as site 0"), "%s", err);

    /* An unknown kind. */
    hand_start(&h);
    msgpack_pack_array(&h.pk, 1);
    msgpack_pack_uint8(&h.pk, 9);
    hand_put(&h);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "unknown kind 9"), "%s", err);

    /* Something after the end record. */
    hand_start(&h);
    hand_end(&h, 0, 0, 0, 0);
    hand_trust(&h);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "after the end record"), "%s", err);

    /* No end record at all. */
    hand_start(&h);
    hand_site(&h, &s);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "without its end record"), "%s", err);

    /* A record that is not a bin. */
    hand_start(&h);
    msgpack_sbuffer_write(&h.img, "\x93\x01\x02\x03", 4);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "expected a bin"), "%s", err);

    /* A record declared far longer than allowed, and one declared longer than what follows:
     * refused without reserving what they declare. */
    hand_start(&h);
    msgpack_sbuffer_write(&h.img, "\xc6\xff\xff\xff\xff", 5);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "allowed"), "%s", err);
    hand_start(&h);
    msgpack_sbuffer_write(&h.img, "\xc6\x07\x00\x00\x00\x95\x00", 7);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "truncated"), "%s", err);

    /* A compressed flag on a raw stream. */
    hand_start(&h);
    h.img.data[9] = 1;
    hand_end(&h, 0, 0, 0, 0);
    assert_one_line(hand_read(&h, err), err);
    cr_assert(strstr(err, "zstd"), "%s", err);
}

Test(bundle_stream, writer_refuses_out_of_order)
{
    th_buf b = {0};
    tsync__bstream_writer *w;
    tsync__bsite s = a_site();
    uint32_t si;
    static const uint8_t zero[64];
    const uint8_t *body[] = {(const uint8_t *)"abc"};
    size_t len[] = {3};
    cr_assert_eq(tsync__bstream_writer_open(&w, true, th_buf_write, &b), 0);
    cr_assert_eq(tsync__bstream_writer_schema(w, zero, (const uint8_t *)"d", 1), 0);
    cr_assert_eq(tsync__bstream_writer_schema(w, zero, (const uint8_t *)"d", 1), TSYNC_EINVAL);
    cr_assert_eq(tsync__bstream_writer_trust(w, (const uint8_t *)"t", 1), TSYNC_EINVAL);
    cr_assert_eq(tsync__bstream_writer_site(w, &s, &si), 0);
    cr_assert_eq(tsync__bstream_writer_run(w, 1, 1, NULL, 1, body, len, zero), TSYNC_EINVAL);
    static const uint8_t ones[32] = {1};
    cr_assert_eq(tsync__bstream_writer_run(w, si, 1, ones, 1, body, len, zero), TSYNC_EINVAL);
    cr_assert_eq(tsync__bstream_writer_run(w, si, 1, NULL, 1, body, len, zero), 0);
    cr_assert_eq(tsync__bstream_writer_finish(w), 0);
    tsync__bstream_writer_free(w);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(read_all(b.p, b.len, err), 0, "%s", err);
    free(b.p);
}

/* ---------------------------------------------------------------- formats 1 to 3 */

static size_t all_at_once(void *ctx, uint8_t *out, size_t n)
{
    dribble *d = ctx;
    size_t k = n < d->len - d->pos ? n : d->len - d->pos;
    memcpy(out, d->p + d->pos, k);
    d->pos += k;
    return k;
}

Test(bundle_stream, old_formats_read_through_the_same_reader)
{
    uint64_t rng = th_seed("bundle_stream.old_formats");
    for (int round = 0; round < 10; round++) {
        model m;
        make_model(&m, &rng);
        for (int z = 0; z < 2; z++) {
            tsync__bundle_writer *w = tsync__bundle_writer_new();
            for (uint32_t i = 0; i < m.ntrust; i++)
                cr_assert_eq(tsync__bundle_writer_trust(w, m.trust[i], m.tlen[i]), 0);
            if (m.schema)
                cr_assert_eq(tsync__bundle_writer_schema(w, m.schema_site, m.schema, m.slen), 0);
            for (uint32_t r = 0; r < m.nruns; r++) {
                uint32_t si;
                cr_assert_eq(tsync__bundle_writer_site(w, &m.sites[m.runs[r].site], &si), 0);
                cr_assert_eq(tsync__bundle_writer_run(w, si, m.runs[r].first, m.runs[r].prev), 0);
                for (uint32_t k = 0; k < m.runs[r].n; k++)
                    cr_assert_eq(tsync__bundle_writer_body(w, m.runs[r].body[k], m.runs[r].len[k]),
                                 0);
                cr_assert_eq(tsync__bundle_writer_end_run(w, m.runs[r].sig), 0);
            }
            uint8_t *img;
            size_t len;
            cr_assert_eq(tsync__bundle_writer_finish(w, z == 1, &img, &len), 0);
            tsync__bundle_writer_free(w);
            cr_assert_leq(img[8], TSYNC__BUNDLE_FORMAT_SCHEMA);
            char err[TSYNC__ERRLEN];
            tsync__bstream *r;
            cr_assert_eq(tsync__bstream_open_mem(&r, img, len, err), 0, "%s", err);
            cr_assert_eq(tsync__bstream_format(r), img[8]);
            check_items(r, &m);
            tsync__bstream_free(r);
            dribble d = {img, len, 0, 0, 0};
            cr_assert_eq(tsync__bstream_open(&r, all_at_once, &d, err), 0, "%s", err);
            check_items(r, &m);
            tsync__bstream_free(r);
            /* Collected whole, from a source (an uncompressed image moves into the bundle). */
            d.pos = 0;
            cr_assert_eq(tsync__bstream_open(&r, all_at_once, &d, err), 0, "%s", err);
            tsync__bundle bun;
            tsync__arena a = {0};
            cr_assert_eq(tsync__bstream_collect(r, &bun, &a, err), 0, "%s", err);
            tsync__bstream_free(r);
            cr_assert_eq(bun.nruns, m.nruns);
            for (uint32_t i = 0; i < m.nruns; i++)
                for (uint32_t k = 0; k < m.runs[i].n; k++)
                    cr_assert_eq(memcmp(bun.runs[i].body[k], m.runs[i].body[k], m.runs[i].len[k]),
                                 0);
            tsync__bundle_free(&bun);
            tsync__arena_free(&a);
            free(img);
        }
        free_model(&m);
    }
}

/* A small bundle is compressed knowing its size (the frame says it, and the reader's window fits
 * it); one past 4 MiB is compressed as it goes. Both read back the same. */
Test(bundle_stream, small_frames_say_their_size_large_ones_stream)
{
    uint64_t rng = th_seed("bundle_stream.frames");
    for (int big = 0; big < 2; big++) {
        model m = {0};
        m.nsites = 1;
        fill(&rng, m.sites[0].pk, 32);
        tsync__site_id(m.sites[0].pk, m.sites[0].inc, m.sites[0].site);
        m.nruns = big ? 3 : 1;
        for (uint32_t r = 0; r < m.nruns; r++) {
            mrun *run = &m.runs[r];
            run->first = 1 + 20 * (uint64_t)r;
            if (r) fill(&rng, run->prev, 32);
            run->n = 20;
            run->body = calloc(run->n, sizeof *run->body);
            run->len = calloc(run->n, sizeof *run->len);
            for (uint32_t k = 0; k < run->n; k++) {
                run->len[k] = big ? 100000 : 100;
                run->body[k] = rand_bytes(&rng, run->len[k]);
            }
        }
        th_buf raw = write_model(&m, false), z = write_model(&m, true);
        unsigned long long size = ZSTD_getFrameContentSize(z.p + 10, z.len - 10);
        if (big)
            cr_assert_eq(size, ZSTD_CONTENTSIZE_UNKNOWN, "%llu", size);
        else
            cr_assert_eq(size, raw.len - 10, "%llu vs %zu", size, raw.len - 10);
        char err[TSYNC__ERRLEN];
        tsync__bstream *r;
        cr_assert_eq(tsync__bstream_open_mem(&r, z.p, z.len, err), 0, "%s", err);
        check_items(r, &m);
        tsync__bstream_free(r);
        free(raw.p);
        free(z.p);
        free_model(&m);
    }
}
