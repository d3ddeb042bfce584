/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_crdt_bundle.c — bundles (crdt/bundle.c): the writer and the strict decoder, with
 * and without zstd; flipped, truncated and forged bundles are refused.
 *
 * Set TSYNC_FUZZ_CORPUS to a directory to write the sample bundles there as fuzzing seeds.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zstd.h>

#include "crdt/crdt.h"

typedef struct {
    tsync__bsite site;
    uint8_t sk[TSYNC__SK_BYTES];
} ident;

static void make_ident(ident *id, uint8_t tag)
{
    cr_assert_geq(sodium_init(), 0);
    uint8_t seed[crypto_sign_SEEDBYTES];
    memset(seed, tag, sizeof seed);
    crypto_sign_seed_keypair(id->site.pk, id->sk, seed);
    memset(id->site.inc, tag ^ 0x5a, TSYNC__INC_BYTES);
    tsync__site_id(id->site.pk, id->site.inc, id->site.site);
}

/* A small but real batch body of origin `o`, seq `seq`. */
static void make_body(const ident *o, uint64_t seq, uint8_t **out, size_t *len)
{
    static const char *cols[] = {"id", "qty"};
    static uint32_t clen[] = {2, 3};
    tsync__btable t = {
        .name = "stock", .name_len = 5, .ncols = 2, .cols = cols, .col_len = clen, .npk = 1};
    tsync__bcol c = {.col = 1, .val = {.type = TSYNC__V_INT, .i = (int64_t)seq * 10}};
    tsync__brow r = {
        .table = 0, .hlc = 1000 + seq, .flags = TSYNC__ROW_ADD, .ncols = 1, .cols = &c};
    r.pk[0] = (tsync__val){.type = TSYNC__V_TEXT, .p = "sku-1", .n = 5};
    tsync__batch b = {.format = 1,
                      .seq = seq,
                      .hlc_lo = 1000,
                      .hlc_hi = 2000,
                      .nsites = 1,
                      .sites = (const uint8_t(*)[16])o->site.site,
                      .ntables = 1,
                      .tables = &t,
                      .nrows = 1,
                      .rows = &r};
    memcpy(b.origin, o->site.site, 16);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_encode(&b, out, len, err), 0, "%s", err);
}

typedef struct {
    ident ids[2];
    uint8_t *bodies[5];
    size_t lens[5];
    uint8_t sigs[2][64];
    uint8_t prev1[32]; /* hash before the second origin's run (it starts at seq 3) */
} fixture;

/* Origin 0: seqs 1..3 in one run. Origin 1: seqs 3..4 (its earlier batches elsewhere). */
static void make_fixture(fixture *f)
{
    make_ident(&f->ids[0], 1);
    make_ident(&f->ids[1], 2);
    uint8_t h[32] = {0};
    for (int i = 0; i < 3; i++) {
        make_body(&f->ids[0], (uint64_t)i + 1, &f->bodies[i], &f->lens[i]);
        tsync__batch_hash(h, f->bodies[i], f->lens[i], h);
    }
    tsync__batch_sign(f->ids[0].sk, f->ids[0].site.site, 3, h, f->sigs[0]);
    memset(f->prev1, 0x77, 32);
    memcpy(h, f->prev1, 32);
    for (int i = 3; i < 5; i++) {
        make_body(&f->ids[1], (uint64_t)i, &f->bodies[i], &f->lens[i]);
        tsync__batch_hash(h, f->bodies[i], f->lens[i], h);
    }
    tsync__batch_sign(f->ids[1].sk, f->ids[1].site.site, 4, h, f->sigs[1]);
}

static void free_fixture(fixture *f)
{
    for (int i = 0; i < 5; i++) free(f->bodies[i]);
}

static void write_bundle(const fixture *f, bool compress, uint8_t **out, size_t *len)
{
    static const uint8_t zero[32];
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    uint32_t i0, i1, again;
    cr_assert_not_null(w);
    cr_assert_eq(tsync__bundle_writer_site(w, &f->ids[0].site, &i0), 0);
    cr_assert_eq(tsync__bundle_writer_site(w, &f->ids[1].site, &i1), 0);
    cr_assert_eq(tsync__bundle_writer_site(w, &f->ids[0].site, &again), 0);
    cr_assert_eq(again, i0); /* added once */
    cr_assert_eq(tsync__bundle_writer_run(w, i0, 1, zero), 0);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(tsync__bundle_writer_body(w, f->bodies[i], f->lens[i]), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(w, f->sigs[0]), 0);
    cr_assert_eq(tsync__bundle_writer_run(w, i1, 3, f->prev1), 0);
    for (int i = 3; i < 5; i++)
        cr_assert_eq(tsync__bundle_writer_body(w, f->bodies[i], f->lens[i]), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(w, f->sigs[1]), 0);
    cr_assert_eq(tsync__bundle_writer_finish(w, compress, out, len), 0);
    tsync__bundle_writer_free(w);
}

static void seed_file(const char *name, const uint8_t *p, size_t n)
{
    const char *dir = getenv("TSYNC_FUZZ_CORPUS");
    if (!dir) return;
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "cannot write %s", path);
    fwrite(p, 1, n, f);
    fclose(f);
}

static void check_content(const fixture *f, const tsync__bundle *b)
{
    cr_assert_eq(b->nsites, 2);
    cr_assert_eq(memcmp(&b->sites[0], &f->ids[0].site, sizeof(tsync__bsite)), 0);
    cr_assert_eq(memcmp(&b->sites[1], &f->ids[1].site, sizeof(tsync__bsite)), 0);
    cr_assert_eq(b->nruns, 2);
    cr_assert_eq(b->runs[0].site, 0);
    cr_assert_eq(b->runs[0].first_seq, 1);
    cr_assert_eq(b->runs[0].nbodies, 3);
    cr_assert_eq(b->runs[1].site, 1);
    cr_assert_eq(b->runs[1].first_seq, 3);
    cr_assert_eq(b->runs[1].nbodies, 2);
    cr_assert_arr_eq(b->runs[1].prev, f->prev1, 32);
    cr_assert_arr_eq(b->runs[0].sig, f->sigs[0], 64);
    cr_assert_arr_eq(b->runs[1].sig, f->sigs[1], 64);
    for (int r = 0, k = 0; r < 2; r++)
        for (uint32_t i = 0; i < b->runs[r].nbodies; i++, k++) {
            cr_assert_eq(b->runs[r].body_len[i], f->lens[k]);
            cr_assert_eq(memcmp(b->runs[r].body[i], f->bodies[k], f->lens[k]), 0);
        }
}

/* The chain of a decoded run verifies with the one signature it carries. */
static void check_chain(const tsync__bundle *b, uint32_t r)
{
    const tsync__brun *run = &b->runs[r];
    uint8_t h[32];
    memcpy(h, run->prev, 32);
    for (uint32_t i = 0; i < run->nbodies; i++)
        tsync__batch_hash(h, run->body[i], run->body_len[i], h);
    const tsync__bsite *s = &b->sites[run->site];
    cr_assert_eq(
        tsync__batch_verify(s->pk, s->site, run->first_seq + run->nbodies - 1, h, run->sig), 0);
}

static void round_trip(bool compress)
{
    fixture f;
    make_fixture(&f);
    uint8_t *img;
    size_t len;
    write_bundle(&f, compress, &img, &len);
    seed_file(compress ? "sample_zstd" : "sample_plain", img, len);
    cr_assert_eq(memcmp(img, "TSYNCBDL\x01", 9), 0);
    cr_assert_eq(img[9], compress ? 1 : 0);
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), 0, "%s", err);
    cr_assert_eq(b.payload == NULL, !compress);
    check_content(&f, &b);
    check_chain(&b, 0);
    check_chain(&b, 1);
    tsync__bundle_free(&b);
    tsync__bundle_free(&b); /* idempotent */
    tsync__arena_free(&a);
    free(img);
    free_fixture(&f);
}

Test(crdt_bundle, round_trip_uncompressed)
{
    round_trip(false);
}

Test(crdt_bundle, round_trip_compressed)
{
    round_trip(true);
}

Test(crdt_bundle, empty_bundle)
{
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    uint8_t *img;
    size_t len;
    cr_assert_eq(tsync__bundle_writer_finish(w, true, &img, &len), 0);
    tsync__bundle_writer_free(w);
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), 0, "%s", err);
    cr_assert_eq(b.nsites, 0);
    cr_assert_eq(b.nruns, 0);
    tsync__bundle_free(&b);
    tsync__arena_free(&a);
    free(img);
}

Test(crdt_bundle, flipped_byte_in_compressed_bundle_is_refused)
{
    fixture f;
    make_fixture(&f);
    uint8_t *img;
    size_t len;
    write_bundle(&f, true, &img, &len);
    int refused = 0, same = 0;
    for (size_t i = 0; i < len; i++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *c = malloc(len);
            memcpy(c, img, len);
            c[i] ^= (uint8_t)(1u << bit);
            tsync__bundle b;
            tsync__arena a = {0};
            char err[TSYNC__ERRLEN];
            if (tsync__bundle_decode(c, len, &b, &a, err) != 0) {
                refused++;
                cr_assert_neq(err[0], '\0');
                cr_assert_null(b.payload);
            } else {
                /* A few bits zstd does not interpret (the frame header's unused bit, some bits
                 * of entropy-table headers) can pass: then the checksum proves the content is
                 * exactly the original, and we check that here too. */
                same++;
                check_content(&f, &b);
                tsync__bundle_free(&b);
            }
            tsync__arena_free(&a);
            free(c);
        }
    }
    cr_log_info("compressed flips: %d refused, %d harmless", refused, same);
    cr_assert_lt(same * 100, refused);
    free(img);
    free_fixture(&f);
}

Test(crdt_bundle, flipped_byte_in_compressed_payload_says_checksum_or_corrupt)
{
    fixture f;
    make_fixture(&f);
    uint8_t *img;
    size_t len;
    write_bundle(&f, true, &img, &len);
    img[len - 1] ^= 0x01; /* the frame's checksum */
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "zstd"), "%s", err);
    img[len - 1] ^= 0x01;
    img[len / 2] ^= 0x40; /* somewhere in the compressed data */
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_ECORRUPT);
    tsync__arena_free(&a);
    free(img);
    free_fixture(&f);
}

static void truncations(bool compress)
{
    fixture f;
    make_fixture(&f);
    uint8_t *img;
    size_t len;
    write_bundle(&f, compress, &img, &len);
    for (size_t n = 0; n < len; n++) {
        uint8_t *c = malloc(n ? n : 1);
        memcpy(c, img, n);
        tsync__bundle b;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        int rc = tsync__bundle_decode(c, n, &b, &a, err);
        cr_assert_eq(rc, TSYNC_ECORRUPT, "prefix of %zu bytes: rc %d", n, rc);
        cr_assert_eq(strncmp(err, "bundle: ", 8), 0, "%s", err);
        cr_assert_null(b.payload);
        tsync__arena_free(&a);
        free(c);
    }
    /* and one byte more is refused as well */
    uint8_t *c = malloc(len + 1);
    memcpy(c, img, len);
    c[len] = 0;
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(c, len + 1, &b, &a, err), TSYNC_ECORRUPT);
    cr_log_info("trailing: %s", err);
    tsync__arena_free(&a);
    free(c);
    free(img);
    free_fixture(&f);
}

Test(crdt_bundle, truncated_bundle_refused)
{
    truncations(false);
    truncations(true);
}

Test(crdt_bundle, bad_magic_version_and_flags_refused)
{
    fixture f;
    make_fixture(&f);
    uint8_t *img;
    size_t len;
    write_bundle(&f, false, &img, &len);
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    img[0] = 'X';
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "magic"), "%s", err);
    img[0] = 'T';
    img[8] = 6; /* 1 to 5 exist (2 adds trust records, 3 the table definitions, 4 is streamed,
                   5 has compact runs) */
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_EVERSION);
    cr_assert(strstr(err, "format 6"), "%s", err);
    img[8] = 0;
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_EVERSION);
    img[8] = 1;
    img[9] = 2;
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_EVERSION);
    cr_assert(strstr(err, "flags"), "%s", err);
    img[9] = 1; /* says compressed, is not */
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), TSYNC_ECORRUPT);
    img[9] = 0;
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), 0, "%s", err);
    tsync__bundle_free(&b);
    tsync__arena_free(&a);
    free(img);
    free_fixture(&f);
}

/* ---------------------------------------------------------------- hand-made payloads */

enum pbrk {
    P_NONE,
    P_SITE_MISMATCH,
    P_SITE_PK31,
    P_SITE_LEN2,
    P_RUN_SITE_OOR,
    P_RUN_SEQ0,
    P_RUN_NO_BODIES,
    P_RUN_SEQ1_PREV,
    P_RUN_BODY_STR,
    P_RUN_BODY_EMPTY,
    P_RUN_SIG63,
    P_RUN_LEN4,
    P_RUN_SEQ_OVERFLOW,
    P_TOP3,
    P_TRAILING,
    P_COUNT
};

static void make_image(enum pbrk k, const ident *id, msgpack_sbuffer *sb)
{
    msgpack_packer pk;
    static const uint8_t zero[64];
    uint8_t prev[32];
    memset(prev, 0x11, sizeof prev);
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
    msgpack_sbuffer_write(sb, "TSYNCBDL\x01\x00", 10);
    msgpack_pack_array(&pk, k == P_TOP3 ? 3 : 2);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, k == P_SITE_LEN2 ? 2 : 3);
    uint8_t site[16];
    memcpy(site, id->site.site, 16);
    if (k == P_SITE_MISMATCH) site[0] ^= 1;
    msgpack_pack_bin_with_body(&pk, site, 16);
    msgpack_pack_bin_with_body(&pk, id->site.pk, k == P_SITE_PK31 ? 31 : 32);
    if (k != P_SITE_LEN2) msgpack_pack_bin_with_body(&pk, id->site.inc, 16);
    msgpack_pack_array(&pk, 1);
    msgpack_pack_array(&pk, k == P_RUN_LEN4 ? 4 : 5);
    msgpack_pack_uint32(&pk, k == P_RUN_SITE_OOR ? 1 : 0);
    msgpack_pack_uint64(&pk, k == P_RUN_SEQ0           ? 0
                             : k == P_RUN_SEQ1_PREV    ? 1
                             : k == P_RUN_SEQ_OVERFLOW ? UINT64_MAX
                                                       : 5);
    msgpack_pack_bin_with_body(&pk, prev, 32);
    if (k == P_RUN_NO_BODIES) {
        msgpack_pack_array(&pk, 0);
    } else {
        msgpack_pack_array(&pk, 2);
        if (k == P_RUN_BODY_STR)
            msgpack_pack_str_with_body(&pk, "abc", 3);
        else
            msgpack_pack_bin_with_body(&pk, "abc", k == P_RUN_BODY_EMPTY ? 0 : 3);
        msgpack_pack_bin_with_body(&pk, "defg", 4);
    }
    if (k != P_RUN_LEN4) msgpack_pack_bin_with_body(&pk, zero, k == P_RUN_SIG63 ? 63 : 64);
    if (k == P_TOP3) msgpack_pack_nil(&pk);
    if (k == P_TRAILING) msgpack_pack_nil(&pk);
}

Test(crdt_bundle, hand_made_payload_rules)
{
    ident id;
    make_ident(&id, 9);
    for (int k = 0; k < P_COUNT; k++) {
        msgpack_sbuffer sb;
        tsync__bundle b;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        make_image((enum pbrk)k, &id, &sb);
        int rc = tsync__bundle_decode((const uint8_t *)sb.data, sb.size, &b, &a, err);
        if (k == P_NONE) {
            cr_assert_eq(rc, 0, "%s", err);
            cr_assert_eq(b.runs[0].nbodies, 2);
            cr_assert_eq(b.runs[0].body_len[1], 4);
            cr_assert_eq(memcmp(b.runs[0].body[1], "defg", 4), 0);
            seed_file("handmade", (const uint8_t *)sb.data, sb.size);
        } else {
            cr_assert_eq(rc, TSYNC_ECORRUPT, "case %d: rc %d", k, rc);
            cr_assert_eq(strncmp(err, "bundle: ", 8), 0);
            cr_assert_null(strchr(err, '\n'));
            cr_log_info("case %d: %s", k, err);
        }
        if (k == P_SITE_MISMATCH) cr_assert(strstr(err, "does not match"), "%s", err);
        tsync__bundle_free(&b);
        tsync__arena_free(&a);
        msgpack_sbuffer_destroy(&sb);
    }
}

Test(crdt_bundle, zstd_frame_rules)
{
    ident id;
    make_ident(&id, 3);
    msgpack_sbuffer sb;
    make_image(P_NONE, &id, &sb);
    const uint8_t *payload = (const uint8_t *)sb.data + 10;
    size_t plen = sb.size - 10;
    size_t cap = ZSTD_compressBound(plen) * 2 + 10;
    uint8_t *img = malloc(cap);
    memcpy(img, "TSYNCBDL\x01\x01", 10);
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];

    /* a frame without a checksum is refused */
    size_t z = ZSTD_compress(img + 10, cap - 10, payload, plen, 3);
    cr_assert_not(ZSTD_isError(z));
    cr_assert_eq(tsync__bundle_decode(img, 10 + z, &b, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "checksum"), "%s", err);

    /* with a checksum it decodes */
    ZSTD_CCtx *c = ZSTD_createCCtx();
    ZSTD_CCtx_setParameter(c, ZSTD_c_checksumFlag, 1);
    z = ZSTD_compress2(c, img + 10, cap - 10, payload, plen);
    cr_assert_not(ZSTD_isError(z));
    cr_assert_eq(tsync__bundle_decode(img, 10 + z, &b, &a, err), 0, "%s", err);
    tsync__bundle_free(&b);

    /* a second frame after the first is refused */
    memcpy(img + 10 + z, img + 10, z);
    cr_assert_eq(tsync__bundle_decode(img, 10 + 2 * z, &b, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "after the zstd frame"), "%s", err);

    /* an empty payload is refused */
    cr_assert_eq(tsync__bundle_decode(img, 10, &b, &a, err), TSYNC_ECORRUPT);
    ZSTD_freeCCtx(c);
    tsync__arena_free(&a);
    free(img);
    msgpack_sbuffer_destroy(&sb);
}

Test(crdt_bundle, large_payload_grows_the_output_buffer)
{
    /* A run whose bodies add up to several MiB of highly compressible bytes: the decoder's
     * buffer starts small (it never trusts the frame's declared size) and must grow. */
    ident id;
    make_ident(&id, 4);
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    uint32_t i0;
    uint8_t prev[32] = {1}, sig[64] = {2};
    size_t blen = 1 << 20;
    uint8_t *body = malloc(blen);
    memset(body, 0x2a, blen);
    cr_assert_eq(tsync__bundle_writer_site(w, &id.site, &i0), 0);
    cr_assert_eq(tsync__bundle_writer_run(w, i0, 10, prev), 0);
    for (int i = 0; i < 6; i++) {
        body[0] = (uint8_t)i;
        cr_assert_eq(tsync__bundle_writer_body(w, body, blen), 0);
    }
    cr_assert_eq(tsync__bundle_writer_end_run(w, sig), 0);
    uint8_t *img;
    size_t len;
    cr_assert_eq(tsync__bundle_writer_finish(w, true, &img, &len), 0);
    cr_assert_lt(len, (size_t)1 << 16);
    tsync__bundle b;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__bundle_decode(img, len, &b, &a, err), 0, "%s", err);
    cr_assert_eq(b.runs[0].nbodies, 6);
    for (uint32_t i = 0; i < 6; i++) {
        cr_assert_eq(b.runs[0].body_len[i], blen);
        cr_assert_eq(b.runs[0].body[i][0], i);
        cr_assert_eq(b.runs[0].body[i][blen - 1], 0x2a);
    }
    tsync__bundle_free(&b);
    tsync__arena_free(&a);
    free(img);
    free(body);
    tsync__bundle_writer_free(w);
}

Test(crdt_bundle, writer_refuses_misuse)
{
    ident id;
    make_ident(&id, 5);
    uint8_t zero[32] = {0}, prev[32] = {7}, sig[64] = {0}, body[1] = {0x90};
    uint32_t idx;
    uint8_t *img;
    size_t len;
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    tsync__bsite forged = id.site;
    forged.inc[0] ^= 1;
    cr_assert_eq(tsync__bundle_writer_site(w, &forged, &idx), TSYNC_EINVAL);
    cr_assert_eq(tsync__bundle_writer_run(w, 0, 1, zero), TSYNC_EINVAL); /* no such site */
    cr_assert_eq(tsync__bundle_writer_site(w, &id.site, &idx), 0);
    cr_assert_eq(tsync__bundle_writer_body(w, body, 1), TSYNC_EINVAL);     /* not in a run */
    cr_assert_eq(tsync__bundle_writer_end_run(w, sig), TSYNC_EINVAL);      /* not in a run */
    cr_assert_eq(tsync__bundle_writer_run(w, idx, 0, zero), TSYNC_EINVAL); /* seq 0 */
    cr_assert_eq(tsync__bundle_writer_run(w, idx, 1, prev), TSYNC_EINVAL); /* seq 1, prev set */
    cr_assert_eq(tsync__bundle_writer_run(w, idx, 1, NULL), 0);
    cr_assert_eq(tsync__bundle_writer_run(w, idx, 2, zero), TSYNC_EINVAL); /* nested */
    cr_assert_eq(tsync__bundle_writer_end_run(w, sig), TSYNC_EINVAL);      /* no bodies */
    cr_assert_eq(tsync__bundle_writer_body(w, body, 0), TSYNC_EINVAL);
    cr_assert_eq(tsync__bundle_writer_finish(w, false, &img, &len), TSYNC_EINVAL); /* open run */
    cr_assert_eq(tsync__bundle_writer_body(w, body, 1), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(w, sig), 0);
    cr_assert_eq(tsync__bundle_writer_finish(w, false, &img, &len), 0);
    free(img);
    tsync__bundle_writer_free(w);
    tsync__bundle_writer_free(NULL);
}
