/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/codec/test_net_wire.c — the wire messages (net/wire.c): every type round-trips, the test
 * vectors of docs/WIRE.md are produced byte for byte, and the decoder refuses, with a message
 * naming the type and field, every truncation, wrong type, wrong item count, oversize frame,
 * trailing byte, non-canonical encoding, unknown type or version and broken invariant. Every
 * single-byte change of a valid message is either refused or decodes to a different message.
 *
 * Set TSYNC_FUZZ_CORPUS to a directory to write the test vectors there as fuzzing seeds.
 */
#include <criterion/criterion.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/wire.h"

/* ---------------------------------------------------------------- sample messages */

/* The contents of the test vectors: fixed bytes, so the encodings are fixed too. */
static tsync__vv_entry vv_hello[2], vv_ack[3], vv_snap[1];
static uint8_t cert_bytes[4] = {'C', 'E', 'R', 'T'};
static uint8_t body0[3] = {0x01, 0x02, 0x03}, body1[2] = {0x04, 0x05};
static const uint8_t *bodies[2] = {body0, body1};
static size_t body_lens[2] = {3, 2};
static uint8_t blob0[5] = "cert1", blob1[3] = "rev";
static const uint8_t *blobs[2] = {blob0, blob1};
static size_t blob_lens[2] = {5, 3};
static uint8_t proof_bytes[8] = "TSYNCBDL";
static uint8_t rows_bytes[2] = "ab";
static uint8_t schema_bytes[3] = {0x92, 0x01, 0x90};
static const char error_text[] = "protocol version 2 is not spoken here";

enum { NSAMPLES = 13 };

static void fill(uint8_t *p, size_t n, uint8_t v)
{
    memset(p, v, n);
}

/* Sample i (0..NSAMPLES-1): every type, HELLO twice (enrolled and not). */
static tsync__msg sample(int i)
{
    tsync__msg m;
    memset(&m, 0, sizeof m);
    fill(vv_hello[0].site, 16, 0x01);
    vv_hello[0].seq = 1;
    fill(vv_hello[0].hash, 32, 0x02);
    fill(vv_hello[1].site, 16, 0x03);
    vv_hello[1].seq = 70000;
    fill(vv_hello[1].hash, 32, 0x04);
    for (int k = 0; k < 3; k++) {
        fill(vv_ack[k].site, 16, (uint8_t)(0x10 + k));
        vv_ack[k].seq = (uint64_t)1 << (7 * k + 1); /* 2, 256, 32768: three int widths */
        fill(vv_ack[k].hash, 32, (uint8_t)(0x20 + k));
    }
    fill(vv_snap[0].site, 16, 0x30);
    vv_snap[0].seq = 42;
    fill(vv_snap[0].hash, 32, 0x31);

    switch (i) {
    case 0:
        m.type = TSYNC__WIRE_HELLO;
        m.hello.version = TSYNC_WIRE_VERSION;
        m.hello.has_shop = true;
        fill(m.hello.shop, 16, 0xaa);
        m.hello.schema = 3;
        m.hello.cert = cert_bytes;
        m.hello.cert_len = sizeof cert_bytes;
        m.hello.clock_ms = 1700000000000ull;
        m.hello.vv = (tsync__wire_vv){vv_hello, 2};
        break;
    case 1:
        m.type = TSYNC__WIRE_HELLO;
        m.hello.version = TSYNC_WIRE_VERSION;
        m.hello.clock_ms = 1700000000000ull;
        break;
    case 2:
        m.type = TSYNC__WIRE_BATCHES;
        for (int k = 0; k < 32; k++) m.batches.pk[k] = (uint8_t)(k + 1);
        for (int k = 0; k < 16; k++) m.batches.inc[k] = (uint8_t)(0xa0 + k);
        tsync__site_id(m.batches.pk, m.batches.inc, m.batches.site);
        m.batches.first_seq = 7;
        fill(m.batches.prev, 32, 0x66);
        m.batches.nbodies = 2;
        m.batches.body = bodies;
        m.batches.body_len = body_lens;
        fill(m.batches.sig, 64, 0x55);
        break;
    case 3:
        m.type = TSYNC__WIRE_CERTS;
        m.certs.n = 2;
        m.certs.blob = blobs;
        m.certs.len = blob_lens;
        break;
    case 4:
        m.type = TSYNC__WIRE_FORK_PROOF;
        m.fork_proof.proof = proof_bytes;
        m.fork_proof.len = sizeof proof_bytes;
        break;
    case 5:
        m.type = TSYNC__WIRE_ACK;
        m.ack.vv = (tsync__wire_vv){vv_ack, 3};
        break;
    case 6:
        m.type = TSYNC__WIRE_SNAPSHOT_BEGIN;
        fill(m.snapshot_begin.id, 16, 0x77);
        m.snapshot_begin.ntables = 2;
        m.snapshot_begin.vv = (tsync__wire_vv){vv_snap, 1};
        break;
    case 7:
        m.type = TSYNC__WIRE_SNAPSHOT_CHUNK;
        fill(m.snapshot_chunk.id, 16, 0x77);
        m.snapshot_chunk.seq = 0;
        m.snapshot_chunk.rows = rows_bytes;
        m.snapshot_chunk.len = sizeof rows_bytes;
        break;
    case 8:
        m.type = TSYNC__WIRE_SNAPSHOT_END;
        fill(m.snapshot_end.id, 16, 0x77);
        m.snapshot_end.nchunks = 1;
        /* BLAKE2b-256 of the only chunk's rows, "ab" */
        cr_assert_eq(crypto_generichash(m.snapshot_end.hash, 32, rows_bytes, 2, NULL, 0), 0);
        break;
    case 9:
        m.type = TSYNC__WIRE_PING;
        m.ping.ms = 123456;
        break;
    case 10:
        m.type = TSYNC__WIRE_PONG;
        m.pong.echo_ms = 123456;
        m.pong.clock_ms = 1700000000123ull;
        break;
    case 11:
        m.type = TSYNC__WIRE_ERROR;
        m.error.code = TSYNC__WIRE_ERR_VERSION;
        m.error.text = error_text;
        m.error.len = strlen(error_text);
        break;
    case 12:
        m.type = TSYNC__WIRE_SCHEMA;
        fill(m.schema.site, 16, 0x13);
        fill(m.schema.inc, 16, 0x14);
        m.schema.defs = schema_bytes; /* [1, []]: no replicated table */
        m.schema.len = sizeof schema_bytes;
        break;
    }
    return m;
}

/* docs/WIRE.md lists the same hex. */
static const char *const vectors[NSAMPLES] = {
    /* HELLO, enrolled */
    "970101c410aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa03c40443455254cf0000018bcfe568009293c410010101"
    "0101010101010101010101010101c42002020202020202020202020202020202020202020202020202020202"
    "0202020293c41003030303030303030303030303030303ce00011170c4200404040404040404040404040404"
    "040404040404040404040404040404040404",
    /* HELLO, not enrolled */
    "970101c000c0cf0000018bcfe5680090",
    /* BATCHES */
    "9802c410e28bba379e93f5a39c8ba60f9eb2e29cc4200102030405060708090a0b0c0d0e0f10111213141516"
    "1718191a1b1c1d1e1f20c410a0a1a2a3a4a5a6a7a8a9aaabacadaeaf07c42066666666666666666666666666"
    "6666666666666666666666666666666666666692c403010203c4020405c44055555555555555555555555555"
    "5555555555555555555555555555555555555555555555555555555555555555555555555555555555555555"
    "55555555555555",
    /* CERTS */
    "920392c4056365727431c403726576",
    /* FORK_PROOF */
    "9204c4085453594e4342444c",
    /* ACK */
    "92059393c4101010101010101010101010101010101002c42020202020202020202020202020202020202020"
    "2020202020202020202020202093c41011111111111111111111111111111111cd0100c42021212121212121"
    "2121212121212121212121212121212121212121212121212193c41012121212121212121212121212121212"
    "cd8000c4202222222222222222222222222222222222222222222222222222222222222222",
    /* SNAPSHOT_BEGIN */
    "9406c41077777777777777777777777777777777029193c410303030303030303030303030303030302ac420"
    "3131313131313131313131313131313131313131313131313131313131313131",
    /* SNAPSHOT_CHUNK */
    "9407c4107777777777777777777777777777777700c4026162",
    /* SNAPSHOT_END */
    "9408c4107777777777777777777777777777777701c420f65a5e77ff5e2690ad316b7b9fc28dd90cc5c9a37e"
    "617ac3eee1403de3cf9a55",
    /* PING */
    "9209ce0001e240",
    /* PONG */
    "930ace0001e240cf0000018bcfe5687b",
    /* ERROR */
    "930b02d92570726f746f636f6c2076657273696f6e2032206973206e6f742073706f6b656e2068657265",
    /* SCHEMA */
    "940cc41013131313131313131313131313131313c41014141414141414141414141414141414c403920190",
};

static char *to_hex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    cr_assert_not_null(s);
    for (size_t i = 0; i < n; i++) snprintf(s + 2 * i, 3, "%02x", p[i]);
    s[2 * n] = '\0';
    return s;
}

/* ---------------------------------------------------------------- helpers */

static bool vv_eq(const tsync__wire_vv *a, const tsync__wire_vv *b)
{
    if (a->n != b->n) return false;
    return a->n == 0 || memcmp(a->e, b->e, a->n * sizeof *a->e) == 0;
}

static bool bytes_eq(const void *a, size_t na, const void *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na) == 0);
}

static bool blobs_eq(uint32_t n, const uint8_t *const *a, const size_t *la, const uint8_t *const *b,
                     const size_t *lb)
{
    for (uint32_t i = 0; i < n; i++)
        if (!bytes_eq(a[i], la[i], b[i], lb[i])) return false;
    return true;
}

/* Whether two messages say the same thing. */
static bool msg_eq(const tsync__msg *a, const tsync__msg *b)
{
    if (a->type != b->type) return false;
    switch (a->type) {
    case TSYNC__WIRE_HELLO: {
        const tsync__wire_hello *x = &a->hello, *y = &b->hello;
        return x->version == y->version && x->has_shop == y->has_shop &&
               (!x->has_shop || !memcmp(x->shop, y->shop, 16)) && x->schema == y->schema &&
               (x->cert == NULL) == (y->cert == NULL) &&
               bytes_eq(x->cert, x->cert_len, y->cert, y->cert_len) && x->clock_ms == y->clock_ms &&
               vv_eq(&x->vv, &y->vv);
    }
    case TSYNC__WIRE_BATCHES: {
        const tsync__wire_batches *x = &a->batches, *y = &b->batches;
        return !memcmp(x->site, y->site, 16) && !memcmp(x->pk, y->pk, 32) &&
               !memcmp(x->inc, y->inc, 16) && x->first_seq == y->first_seq &&
               !memcmp(x->prev, y->prev, 32) && x->nbodies == y->nbodies &&
               blobs_eq(x->nbodies, x->body, x->body_len, y->body, y->body_len) &&
               !memcmp(x->sig, y->sig, 64);
    }
    case TSYNC__WIRE_CERTS:
        return a->certs.n == b->certs.n &&
               blobs_eq(a->certs.n, a->certs.blob, a->certs.len, b->certs.blob, b->certs.len);
    case TSYNC__WIRE_FORK_PROOF:
        return bytes_eq(a->fork_proof.proof, a->fork_proof.len, b->fork_proof.proof,
                        b->fork_proof.len);
    case TSYNC__WIRE_ACK:
        return vv_eq(&a->ack.vv, &b->ack.vv);
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
        return !memcmp(a->snapshot_begin.id, b->snapshot_begin.id, 16) &&
               a->snapshot_begin.ntables == b->snapshot_begin.ntables &&
               vv_eq(&a->snapshot_begin.vv, &b->snapshot_begin.vv);
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
        return !memcmp(a->snapshot_chunk.id, b->snapshot_chunk.id, 16) &&
               a->snapshot_chunk.seq == b->snapshot_chunk.seq &&
               bytes_eq(a->snapshot_chunk.rows, a->snapshot_chunk.len, b->snapshot_chunk.rows,
                        b->snapshot_chunk.len);
    case TSYNC__WIRE_SNAPSHOT_END:
        return !memcmp(a->snapshot_end.id, b->snapshot_end.id, 16) &&
               a->snapshot_end.nchunks == b->snapshot_end.nchunks &&
               !memcmp(a->snapshot_end.hash, b->snapshot_end.hash, 32);
    case TSYNC__WIRE_PING:
        return a->ping.ms == b->ping.ms;
    case TSYNC__WIRE_PONG:
        return a->pong.echo_ms == b->pong.echo_ms && a->pong.clock_ms == b->pong.clock_ms;
    case TSYNC__WIRE_ERROR:
        return a->error.code == b->error.code &&
               bytes_eq(a->error.text, a->error.len, b->error.text, b->error.len);
    case TSYNC__WIRE_SCHEMA:
        return !memcmp(a->schema.site, b->schema.site, 16) &&
               !memcmp(a->schema.inc, b->schema.inc, 16) &&
               bytes_eq(a->schema.defs, a->schema.len, b->schema.defs, b->schema.len);
    }
    return false;
}

static void encode_ok(const tsync__msg *m, uint8_t **out, size_t *len)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_encode(m, out, len, err);
    cr_assert_eq(rc, 0, "encode of type %d: %d %s", (int)m->type, rc, err);
    cr_assert_eq(*len, tsync__wire_size(m));
    cr_assert_leq(*len, tsync__wire_limit((int)m->type));
}

/* A message built piece by piece with msgpack-c's packer, to make frames our encoder refuses.
 * Spec letters, each taking its arguments in order:
 *   A (unsigned n) array header    u (uint64_t) uint         i (int64_t) int
 *   n nil                          t true                    f (double) float64
 *   b (size_t n, const void *p) bin    B (size_t n, int byte) bin of n copies of byte
 *   s (const char *) str               S (size_t n, int byte) str of n copies of byte
 *   M (unsigned n) map header          r (size_t n, const void *p) raw bytes */
typedef struct {
    uint8_t *p;
    size_t n;
} frame;

static frame build(const char *spec, ...)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    va_list ap;
    va_start(ap, spec);
    for (const char *c = spec; *c; c++) {
        switch (*c) {
        case 'A':
            msgpack_pack_array(&pk, va_arg(ap, unsigned));
            break;
        case 'M':
            msgpack_pack_map(&pk, va_arg(ap, unsigned));
            break;
        case 'u':
            msgpack_pack_uint64(&pk, va_arg(ap, uint64_t));
            break;
        case 'i':
            msgpack_pack_int64(&pk, va_arg(ap, int64_t));
            break;
        case 'n':
            msgpack_pack_nil(&pk);
            break;
        case 't':
            msgpack_pack_true(&pk);
            break;
        case 'f':
            msgpack_pack_double(&pk, va_arg(ap, double));
            break;
        case 'b': {
            size_t n = va_arg(ap, size_t);
            const void *p = va_arg(ap, const void *);
            msgpack_pack_bin(&pk, n);
            msgpack_pack_bin_body(&pk, p, n);
            break;
        }
        case 'B':
        case 'S': {
            size_t n = va_arg(ap, size_t);
            int byte = va_arg(ap, int);
            uint8_t *tmp = malloc(n ? n : 1);
            cr_assert_not_null(tmp);
            memset(tmp, byte, n);
            if (*c == 'B') {
                msgpack_pack_bin(&pk, n);
                msgpack_pack_bin_body(&pk, tmp, n);
            } else {
                msgpack_pack_str(&pk, n);
                msgpack_pack_str_body(&pk, tmp, n);
            }
            free(tmp);
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            msgpack_pack_str(&pk, strlen(s));
            msgpack_pack_str_body(&pk, s, strlen(s));
            break;
        }
        case 'r': {
            size_t n = va_arg(ap, size_t);
            const void *p = va_arg(ap, const void *);
            msgpack_sbuffer_write(&sb, p, n);
            break;
        }
        default:
            cr_assert_fail("bad spec letter %c", *c);
        }
    }
    va_end(ap);
    frame f = {(uint8_t *)sb.data, sb.size};
    return f;
}

#define U(x)  ((uint64_t)(x))
#define I(x)  ((int64_t)(x))
#define Z(x)  ((size_t)(x))
#define SITE1 Z(16), 0x01
#define HASH1 Z(32), 0x02

/* Decodes f, which must be refused with rc and a message containing want; frees f. */
static void refused(frame f, int rc, const char *want)
{
    tsync__msg m;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    int got = tsync__wire_decode(f.p, f.n, &m, &a, err);
    cr_expect_eq(got, rc, "expected %d, got %d for '%s' (%s)", rc, got, want, err);
    cr_expect(strstr(err, want) != NULL, "message '%s' does not contain '%s'", err, want);
    cr_expect(strchr(err, '\n') == NULL);
    cr_expect_eq(m.type, 0, "a refused message is zeroed");
    tsync__arena_free(&a);
    free(f.p);
}

/* Decodes f, which must be accepted and re-encode to the same bytes; frees f. */
static void accepted(frame f)
{
    tsync__msg m;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    uint8_t *again;
    size_t len;
    cr_assert_eq(tsync__wire_decode(f.p, f.n, &m, &a, err), 0, "%s", err);
    encode_ok(&m, &again, &len);
    cr_assert(bytes_eq(f.p, f.n, again, len));
    free(again);
    tsync__arena_free(&a);
    free(f.p);
}

/* A valid enrolled HELLO built by hand with n vector entries (sites 0, 1, 2 ... big-endian). */
static frame hello_with_entries(uint32_t n, uint64_t seq)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    static const uint8_t shop[16], hash[32];
    uint8_t cert[4096];
    memset(cert, 0xce, sizeof cert);
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 7);
    msgpack_pack_uint64(&pk, TSYNC__WIRE_HELLO);
    msgpack_pack_uint64(&pk, TSYNC_WIRE_VERSION);
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, shop, 16);
    msgpack_pack_uint64(&pk, UINT64_MAX);
    msgpack_pack_bin(&pk, sizeof cert);
    msgpack_pack_bin_body(&pk, cert, sizeof cert);
    msgpack_pack_uint64(&pk, TSYNC__WIRE_CLOCK_END - 1);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        uint8_t site[16] = {0};
        site[12] = (uint8_t)(i >> 24);
        site[13] = (uint8_t)(i >> 16);
        site[14] = (uint8_t)(i >> 8);
        site[15] = (uint8_t)i;
        msgpack_pack_array(&pk, 3);
        msgpack_pack_bin(&pk, 16);
        msgpack_pack_bin_body(&pk, site, 16);
        msgpack_pack_uint64(&pk, seq);
        msgpack_pack_bin(&pk, 32);
        msgpack_pack_bin_body(&pk, hash, 32);
    }
    frame f = {(uint8_t *)sb.data, sb.size};
    return f;
}

/* ---------------------------------------------------------------- round trips and vectors */

Test(net_wire, round_trip_every_type)
{
    bool seen[TSYNC__WIRE_TYPE_MAX + 1] = {false};
    for (int i = 0; i < NSAMPLES; i++) {
        tsync__msg m = sample(i), d;
        uint8_t *buf, *again;
        size_t len, len2;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        encode_ok(&m, &buf, &len);
        cr_assert_eq(tsync__wire_decode(buf, len, &d, &a, err), 0, "sample %d: %s", i, err);
        cr_assert(msg_eq(&m, &d), "sample %d decodes to another message", i);
        encode_ok(&d, &again, &len2);
        cr_assert(bytes_eq(buf, len, again, len2), "sample %d re-encodes differently", i);
        seen[m.type] = true;
        free(again);
        free(buf);
        tsync__arena_free(&a);
    }
    for (int t = TSYNC__WIRE_TYPE_MIN; t <= TSYNC__WIRE_TYPE_MAX; t++)
        cr_assert(seen[t], "no sample of type %d", t);
}

Test(net_wire, test_vectors_byte_exact)
{
    for (int i = 0; i < NSAMPLES; i++) {
        tsync__msg m = sample(i);
        uint8_t *buf;
        size_t len;
        encode_ok(&m, &buf, &len);
        char *hex = to_hex(buf, len);
        cr_expect_str_eq(hex, vectors[i], "vector %d (%s): got\n%s", i,
                         tsync__wire_type_name((int)m.type), hex);
        const char *dir = getenv("TSYNC_FUZZ_CORPUS");
        if (dir) {
            char path[512];
            snprintf(path, sizeof path, "%s/vector%02d_%s", dir, i,
                     tsync__wire_type_name((int)m.type));
            FILE *f = fopen(path, "wb");
            cr_assert_not_null(f, "cannot write %s", path);
            cr_assert_eq(fwrite(buf, 1, len, f), len);
            fclose(f);
        }
        free(hex);
        free(buf);
    }
}

/* ---------------------------------------------------------------- damaged frames */

Test(net_wire, every_truncation_refused)
{
    for (int i = 0; i < NSAMPLES; i++) {
        tsync__msg m = sample(i), d;
        uint8_t *buf;
        size_t len;
        encode_ok(&m, &buf, &len);
        for (size_t n = 0; n < len; n++) {
            /* A copy of exactly n bytes, so ASan sees any read past the end. */
            uint8_t *cut = malloc(n ? n : 1);
            memcpy(cut, buf, n);
            tsync__arena a = {0};
            char err[TSYNC__ERRLEN];
            int rc = tsync__wire_decode(cut, n, &d, &a, err);
            cr_assert_eq(rc, TSYNC_ECORRUPT, "sample %d cut to %zu bytes: rc %d (%s)", i, n, rc,
                         err);
            cr_assert(err[0] && !strchr(err, '\n'));
            if (n >= 2)
                cr_assert(!strncmp(err, tsync__wire_type_name((int)m.type),
                                   strlen(tsync__wire_type_name((int)m.type))),
                          "'%s' does not name the type", err);
            tsync__arena_free(&a);
            free(cut);
        }
        free(buf);
    }
}

Test(net_wire, every_byte_change_refused_or_another_message)
{
    size_t decoded = 0, refused_n = 0;
    for (int i = 0; i < NSAMPLES; i++) {
        tsync__msg m = sample(i), d;
        uint8_t *buf;
        size_t len;
        encode_ok(&m, &buf, &len);
        uint8_t *mut = malloc(len);
        for (size_t pos = 0; pos < len; pos++) {
            for (int v = 0; v < 256; v++) {
                if (v == buf[pos]) continue;
                memcpy(mut, buf, len);
                mut[pos] = (uint8_t)v;
                tsync__arena a = {0};
                char err[TSYNC__ERRLEN];
                int rc = tsync__wire_decode(mut, len, &d, &a, err);
                if (rc != 0) {
                    cr_assert(rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION, "rc %d", rc);
                    cr_assert(err[0] && !strchr(err, '\n'));
                    refused_n++;
                } else {
                    /* Accepted: it must be another message, and one whose only encoding is
                     * exactly these bytes. */
                    uint8_t *again;
                    size_t len2;
                    cr_assert_not(msg_eq(&m, &d), "sample %d byte %zu = 0x%02x: same message", i,
                                  pos, v);
                    encode_ok(&d, &again, &len2);
                    cr_assert(bytes_eq(mut, len, again, len2),
                              "sample %d byte %zu = 0x%02x: re-encodes differently", i, pos, v);
                    free(again);
                    decoded++;
                }
                tsync__arena_free(&a);
            }
        }
        free(mut);
        free(buf);
    }
    cr_log_info("byte changes: %zu refused, %zu decoded to another message", refused_n, decoded);
    cr_assert_gt(decoded, 0);
    cr_assert_gt(refused_n, 0);
}

Test(net_wire, wrong_types_named)
{
    static const uint8_t site[16], hash[32];
    refused(build("M", 0u), TSYNC_ECORRUPT, "message is a map, want array");
    refused(build("As", 1u, "PING"), TSYNC_ECORRUPT, "message: field 0 (type) is a str, want uint");
    refused(build("Ai", 1u, I(-1)), TSYNC_ECORRUPT, "message: field 0 (type) is an int, want uint");
    refused(build("AuusunuA", 7u, U(1), U(1), "shop", U(3), U(0), 0u), TSYNC_ECORRUPT,
            "HELLO: field 2 (shop id) is a str, want bin or nil");
    refused(build("AuuBunuA", 7u, U(1), U(1), Z(15), 0xaa, U(3), U(0), 0u), TSYNC_ECORRUPT,
            "HELLO: field 2 (shop id) is a bin of 15 bytes, want 16");
    refused(build("AuuninuA", 7u, U(1), U(1), I(-3), U(0), 0u), TSYNC_ECORRUPT,
            "HELLO: field 3 (schema version) is an int, want uint");
    refused(build("AuunutuA", 7u, U(1), U(1), U(3), U(0), 0u), TSYNC_ECORRUPT,
            "HELLO: field 4 (certificate) is a bool, want bin or nil");
    refused(build("AuununfA", 7u, U(1), U(1), U(3), 1.5, 0u), TSYNC_ECORRUPT,
            "HELLO: field 5 (clock) is a float64, want uint");
    refused(
        build("AuununuAAbsb", 7u, U(1), U(1), U(3), U(0), 1u, 3u, Z(16), site, "7", Z(32), hash),
        TSYNC_ECORRUPT, "HELLO: field 6 (vector) entry 0: seq is a str, want uint");
    /* (Malformed entries still take the 54 bytes of a real one: a shorter list is refused by
     * its count before any entry is read.) */
    refused(build("AuununuAAbubu", 7u, U(1), U(1), U(3), U(0), 1u, 4u, Z(16), site, U(7), Z(32),
                  hash, U(1)),
            TSYNC_ECORRUPT, "HELLO: field 6 (vector) entry 0 is an array of 4, want 3");
    refused(build("AuununuAAsub", 7u, U(1), U(1), U(3), U(0), 1u, 3u, "seventeen chars..", U(7),
                  Z(32), hash),
            TSYNC_ECORRUPT, "HELLO: field 6 (vector) entry 0: site is a str, want bin");
    refused(
        build("AuununuAABub", 7u, U(1), U(1), U(3), U(0), 1u, 3u, Z(16), 1, U(200), Z(31), hash),
        TSYNC_ECORRUPT, "HELLO: field 6 (vector) entry 0: hash is a bin of 31 bytes, want 32");
    refused(build("AuununuM", 7u, U(1), U(1), U(3), U(0), 0u), TSYNC_ECORRUPT,
            "HELLO: field 6 (vector) is a map, want array");
    refused(build("AubbbubMb", 8u, U(2), Z(16), site, Z(32), hash, Z(16), site, U(1), Z(32), hash,
                  0u, Z(32), hash),
            TSYNC_ECORRUPT, "BATCHES: field 6 (bodies) is a map, want array");
    refused(build("AuAs", 2u, U(3), 1u, "cert"), TSYNC_ECORRUPT,
            "CERTS: field 1 (certificates) entry 0 is a str, want bin");
    refused(build("Aus", 2u, U(4), "proof"), TSYNC_ECORRUPT,
            "FORK_PROOF: field 1 (proof) is a str, want bin");
    refused(build("Auf", 2u, U(9), 1.0), TSYNC_ECORRUPT, "PING: field 1 (ms) is a float64");
    refused(build("Aut", 2u, U(9)), TSYNC_ECORRUPT, "PING: field 1 (ms) is a bool, want uint");
    refused(build("Auun", 3u, U(10), U(1)), TSYNC_ECORRUPT, "PONG: field 2 (clock) is nil");
    refused(build("AuuB", 3u, U(11), U(1), Z(3), 'x'), TSYNC_ECORRUPT,
            "ERROR: field 2 (message) is a bin, want str");
    refused(build("Aur", 2u, U(9), Z(1), "\xc1"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is a reserved byte 0xc1");
    refused(build("Aur", 2u, U(9), Z(3), "\xd4\x01\x02"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is an ext, want uint");
}

Test(net_wire, extra_and_missing_fields)
{
    refused(build("Auuu", 3u, U(9), U(1), U(2)), TSYNC_ECORRUPT, "PING has 3 items, want 2");
    refused(build("Au", 1u, U(9)), TSYNC_ECORRUPT, "PING has 1 items, want 2");
    refused(build("Auu", 2u, U(11), U(1)), TSYNC_ECORRUPT, "ERROR has 2 items, want 3");
    refused(build("Auununu", 6u, U(1), U(1), U(3), U(0)), TSYNC_ECORRUPT,
            "HELLO has 6 items, want 7");
    refused(build("AuununuAu", 8u, U(1), U(1), U(3), U(0), 0u, U(0)), TSYNC_ECORRUPT,
            "HELLO has 8 items, want 7");
    refused(build("Auu", 2u, U(5), U(0)), TSYNC_ECORRUPT, "ACK: field 1 (vector) is a uint");
    refused(build("A", 0u), TSYNC_ECORRUPT, "message is an empty array");
    refused((frame){calloc(1, 1), 0}, TSYNC_ECORRUPT, "message is empty");
    /* An array that claims more items than the frame holds: the item is missing. */
    refused(build("Au", 2u, U(9)), TSYNC_ECORRUPT, "PING: field 1 (ms) is missing");
}

Test(net_wire, trailing_bytes_refused)
{
    refused(build("Auuu", 2u, U(9), U(1), U(0)), TSYNC_ECORRUPT,
            "PING is followed by 1 trailing byte");
    refused(build("AuAu", 2u, U(5), 0u, U(5)), TSYNC_ECORRUPT, "ACK is followed by 1 trailing");
    tsync__msg m = sample(0);
    uint8_t *buf;
    size_t len;
    encode_ok(&m, &buf, &len);
    uint8_t *more = malloc(len + 3);
    memcpy(more, buf, len);
    memcpy(more + len, "\x90\x90\x90", 3);
    refused((frame){more, len + 3}, TSYNC_ECORRUPT, "HELLO is followed by 3 trailing bytes");
    free(buf);
}

Test(net_wire, non_canonical_encodings_refused)
{
    /* PING [9, 5] is 92 09 05; each form below says the same with more bytes. */
    refused(build("r", Z(4), "\x92\x09\xcc\x05"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is not in its smallest encoding (2 bytes at byte 2, msgpack-c "
            "writes 1)");
    refused(build("r", Z(11), "\x92\x09\xcf\x00\x00\x00\x00\x00\x00\x00\x05"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is not in its smallest encoding");
    refused(build("r", Z(5), "\x92\x09\xcd\x00\xff"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is not in its smallest encoding");
    refused(build("r", Z(5), "\xdc\x00\x02\x09\x05"), TSYNC_ECORRUPT,
            "message is not in its smallest encoding (3 bytes at byte 0");
    refused(build("r", Z(7), "\xdd\x00\x00\x00\x02\x09\x05"), TSYNC_ECORRUPT,
            "message is not in its smallest encoding");
    refused(build("r", Z(4), "\x92\xcc\x09\x05"), TSYNC_ECORRUPT,
            "message: field 0 (type) is not in its smallest encoding");
    /* str8 for a short text, bin16 for a site id, array16 for a small vector */
    refused(build("Auur", 3u, U(11), U(1), Z(4), "\xd9\x02hi"), TSYNC_ECORRUPT,
            "ERROR: field 2 (message) is not in its smallest encoding");
    uint8_t snap_end[64];
    size_t k = 0;
    memcpy(snap_end + k, "\x94\x08\xc5\x00\x10", 5);
    k += 5;
    memset(snap_end + k, 0x77, 16);
    k += 16;
    snap_end[k++] = 0x01;
    snap_end[k++] = 0xc4;
    snap_end[k++] = 32;
    memset(snap_end + k, 0x99, 32);
    k += 32;
    refused(build("r", k, snap_end), TSYNC_ECORRUPT,
            "SNAPSHOT_END: field 1 (snapshot id) is not in its smallest encoding");
    refused(build("r", Z(5), "\x92\x05\xdc\x00\x00"), TSYNC_ECORRUPT,
            "ACK: field 1 (vector) is not in its smallest encoding");
    /* A positive int written as a signed int is not a uint at all. */
    refused(build("r", Z(4), "\x92\x09\xd0\x05"), TSYNC_ECORRUPT,
            "PING: field 1 (ms) is an int, want uint");
}

Test(net_wire, unknown_type_and_version)
{
    refused(build("Au", 1u, U(0)), TSYNC_EVERSION,
            "message: field 0 (type) is 0, not a message type of protocol version 1 (1..12)");
    refused(build("Auu", 2u, U(13), U(1)), TSYNC_EVERSION, "field 0 (type) is 13, not a message");
    refused(build("Auu", 2u, U(1) << 40, U(1)), TSYNC_EVERSION, "is 1099511627776, not a message");
    refused(build("AuununuA", 7u, U(1), U(2), U(3), U(0), 0u), TSYNC_EVERSION,
            "HELLO: field 1 (version) is 2, this node speaks version 1");
    refused(build("AuununuA", 7u, U(1), U(0), U(3), U(0), 0u), TSYNC_EVERSION,
            "HELLO: field 1 (version) is 0");
    /* A later version may add fields: it is still told "version", not "malformed". */
    refused(build("AuununuAss", 9u, U(1), U(2), U(3), U(0), 0u, "new", "fields"), TSYNC_EVERSION,
            "HELLO: field 1 (version) is 2");
    refused(build("Auu", 2u, U(1), U(2)), TSYNC_EVERSION, "HELLO: field 1 (version) is 2");
    refused(build("Aus", 2u, U(1), "v1"), TSYNC_ECORRUPT,
            "HELLO: field 1 (version) is a str, want uint");
}

Test(net_wire, oversize_refused_before_decoding)
{
    /* Frames whose first bytes name a type and whose length exceeds its limit: refused on the
     * length alone, whatever follows. */
    static const struct {
        int type;
        size_t limit;
    } cases[] = {
        {TSYNC__WIRE_PING, TSYNC__WIRE_MAX_PING},
        {TSYNC__WIRE_PONG, TSYNC__WIRE_MAX_PONG},
        {TSYNC__WIRE_ERROR, TSYNC__WIRE_MAX_ERROR},
        {TSYNC__WIRE_SNAPSHOT_END, TSYNC__WIRE_MAX_SNAPSHOT_END},
        {TSYNC__WIRE_CERTS, TSYNC__WIRE_MAX_CERTS},
        {TSYNC__WIRE_HELLO, TSYNC__WIRE_MAX_HELLO},
        {TSYNC__WIRE_ACK, TSYNC__WIRE_MAX_ACK},
        {TSYNC__WIRE_SNAPSHOT_BEGIN, TSYNC__WIRE_MAX_SNAPSHOT_BEGIN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cr_assert_eq(tsync__wire_limit(cases[i].type), cases[i].limit);
        size_t n = cases[i].limit + 1;
        uint8_t *p = calloc(1, n); /* zeros after the header: uint 0s, never read */
        p[0] = 0x92;
        p[1] = (uint8_t)cases[i].type;
        char want[128];
        snprintf(want, sizeof want, "%s is %zu bytes, more than its limit of %zu",
                 tsync__wire_type_name(cases[i].type), n, cases[i].limit);
        refused((frame){p, n}, TSYNC_ECORRUPT, want);
    }
    /* A frame longer than the largest limit is refused before its first byte is read. */
    size_t n = (size_t)TSYNC__WIRE_MAX_FRAME + 1;
    uint8_t *p = calloc(1, n);
    cr_assert_not_null(p);
    p[0] = 0x92;
    p[1] = TSYNC__WIRE_BATCHES;
    refused((frame){p, n}, TSYNC_ECORRUPT, "message is 67174401 bytes, more than the largest");
    /* An ERROR whose text is long enough to pass the size limit but over the text limit. */
    refused(build("AuuS", 3u, U(11), U(1), Z(513), 'x'), TSYNC_ECORRUPT,
            "ERROR: field 2 (message) has 513 bytes, more than 512");
    refused(build("AuuS", 3u, U(11), U(1), Z(1020), 'x'), TSYNC_ECORRUPT,
            "ERROR is 1026 bytes, more than its limit of 1024");
}

Test(net_wire, limits_are_consistent)
{
    size_t max = 0;
    for (int t = TSYNC__WIRE_TYPE_MIN; t <= TSYNC__WIRE_TYPE_MAX; t++) {
        cr_assert_not_null(tsync__wire_type_name(t));
        cr_assert_gt(tsync__wire_limit(t), 0);
        if (tsync__wire_limit(t) > max) max = tsync__wire_limit(t);
    }
    cr_assert_eq(max, TSYNC__WIRE_MAX_FRAME);
    cr_assert_null(tsync__wire_type_name(0));
    cr_assert_null(tsync__wire_type_name(TSYNC__WIRE_TYPE_MAX + 1));
    cr_assert_null(tsync__wire_type_name(-1));
    cr_assert_eq(tsync__wire_limit(0), 0);
    cr_assert_str_eq(tsync__wire_type_name(TSYNC__WIRE_SNAPSHOT_CHUNK), "SNAPSHOT_CHUNK");

    /* The largest HELLO the field rules allow fits its limit: full vector of 9-byte seqs, the
     * largest certificate, the largest ints. */
    frame f = hello_with_entries(TSYNC__WIRE_VV_MAX, UINT64_MAX);
    cr_assert_eq(f.n, 4067375, "largest HELLO is %zu bytes (docs/WIRE.md says 4067375)", f.n);
    cr_assert_leq(f.n, TSYNC__WIRE_MAX_HELLO);
    tsync__msg m;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__wire_decode(f.p, f.n, &m, &a, err), 0, "%s", err);
    cr_assert_eq(m.hello.vv.n, TSYNC__WIRE_VV_MAX);
    cr_assert_eq(m.hello.cert_len, TSYNC__WIRE_CERT_MAX);
    uint8_t *again;
    size_t len;
    encode_ok(&m, &again, &len);
    cr_assert(bytes_eq(f.p, f.n, again, len));
    free(again);
    tsync__arena_free(&a);
    free(f.p);
    /* One entry more is refused by count, before anything is allocated for it. */
    refused(hello_with_entries(TSYNC__WIRE_VV_MAX + 1, 1), TSYNC_ECORRUPT,
            "HELLO: field 6 (vector) has 65537 entries, more than 65536");

    /* A batch body of the largest size travels in one BATCHES message. */
    uint8_t *big = calloc(1, TSYNC__BATCH_MAX_BYTES);
    cr_assert_not_null(big);
    tsync__msg b = sample(2);
    const uint8_t *one[1] = {big};
    size_t one_len[1] = {TSYNC__BATCH_MAX_BYTES};
    b.batches.nbodies = 1;
    b.batches.body = one;
    b.batches.body_len = one_len;
    uint8_t *buf;
    encode_ok(&b, &buf, &len);
    cr_assert_leq(len, TSYNC__WIRE_MAX_BATCHES);
    cr_assert_eq(tsync__wire_decode(buf, len, &m, &a, err), 0, "%s", err);
    cr_assert_eq(m.batches.body_len[0], TSYNC__BATCH_MAX_BYTES);
    tsync__arena_free(&a);
    free(buf);
    /* ... and one byte more is refused as a body, by the encoder and the decoder. */
    one_len[0] = TSYNC__BATCH_MAX_BYTES + 1;
    big = realloc(big, one_len[0]);
    one[0] = big;
    cr_assert_eq(tsync__wire_encode(&b, &buf, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "BATCHES: field 6 (bodies) entry 0 has 67108865 bytes, more than "
                          "67108864"),
              "%s", err);
    free(big);
}

Test(net_wire, huge_declared_counts_refused_without_allocation)
{
    static const struct {
        const char *bytes;
        size_t n;
        const char *want;
    } cases[] = {
        /* CERTS [3, array32 of 2^31 entries] in 10 bytes */
        {"\x92\x03\xdd\x80\x00\x00\x00\xc4\x01\x00", 10,
         "CERTS: field 1 (certificates) is an array declaring more entries"},
        /* ACK [5, array32 of 2^32-1 entries] */
        {"\x92\x05\xdd\xff\xff\xff\xff\x93\xc4\x10", 10,
         "ACK: field 1 (vector) is an array declaring more entries"},
        /* ACK [5, array16 of 200 entries] with 200 bytes left: each entry needs 54 */
        {"\x92\x05\xdc\x00\xc8", 205, "ACK: field 1 (vector) declares 200 entries, more than"},
        /* BATCHES with bodies: array32 of 2^31 */
        {NULL, 0, "BATCHES: field 6 (bodies) is an array declaring more entries"},
        /* a bin32 claiming 4 GiB */
        {"\x92\x04\xc6\xff\xff\xff\xff\x00", 8,
         "FORK_PROOF: field 1 (proof) is a bin at byte 2 that runs past the end"},
        /* a str32 claiming 2 GiB */
        {"\x93\x0b\x01\xdb\x80\x00\x00\x00", 8,
         "ERROR: field 2 (message) is a str at byte 3 that runs past the end"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        uint8_t buf[512] = {0};
        size_t n = cases[i].n;
        if (cases[i].bytes) {
            memcpy(buf, cases[i].bytes, n < 16 ? n : 5);
        } else {
            tsync__msg m = sample(2);
            uint8_t *enc;
            size_t len;
            encode_ok(&m, &enc, &len);
            /* The bodies array starts after the 5 fixed fields (1+1+18+34+18+1+34 bytes). */
            size_t at = 1 + 1 + 18 + 34 + 18 + 1 + 34;
            cr_assert_eq(enc[at], 0x92);
            memcpy(buf, enc, at);
            memcpy(buf + at, "\xdd\x80\x00\x00\x00", 5);
            n = at + 5 + 10;
            free(enc);
        }
        tsync__msg m;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        cr_assert_eq(tsync__wire_decode(buf, n, &m, &a, err), TSYNC_ECORRUPT, "case %zu", i);
        cr_assert(strstr(err, cases[i].want), "case %zu: '%s'", i, err);
        cr_assert_null(a.head, "case %zu: the arena allocated", i);
    }
}

Test(net_wire, invariants_refused_by_decoder)
{
    static const uint8_t z16[16], z32[32], z64[64];
    uint8_t pk[32], inc[16], site[16], other[16];
    memset(pk, 1, 32);
    memset(inc, 2, 16);
    tsync__site_id(pk, inc, site);
    memset(other, 0xee, 16);
    /* BATCHES [2, site, pk, inc, first_seq, prev, bodies, sig] */
#define BATCHES_MSG(s, seq, prev, bodies_spec, ...)                                                \
    build("Aubbbub" bodies_spec "b", 8u, U(2), Z(16), s, Z(32), pk, Z(16), inc, U(seq), Z(32),     \
          prev, __VA_ARGS__, Z(64), z64)
    refused(BATCHES_MSG(other, 1, z32, "AB", 1u, Z(1), 7), TSYNC_ECORRUPT,
            "BATCHES: field 1 (site) is not BLAKE2b-128(public key || incarnation)");
    refused(BATCHES_MSG(site, 0, z32, "AB", 1u, Z(1), 7), TSYNC_ECORRUPT,
            "BATCHES: field 4 (first seq) is 0");
    uint8_t h[32];
    memset(h, 9, 32);
    refused(BATCHES_MSG(site, 1, h, "AB", 1u, Z(1), 7), TSYNC_ECORRUPT,
            "BATCHES: field 5 (previous hash) is not zero but the run starts at seq 1");
    refused(BATCHES_MSG(site, 2, h, "A", 0u), TSYNC_ECORRUPT, "BATCHES: field 6 (bodies) is empty");
    refused(BATCHES_MSG(site, 2, h, "ABB", 2u, Z(1), 7, Z(0), 0), TSYNC_ECORRUPT,
            "BATCHES: field 6 (bodies) entry 1 is empty");
    refused(BATCHES_MSG(site, UINT64_MAX, h, "ABB", 2u, Z(1), 7, Z(1), 8), TSYNC_ECORRUPT,
            "seq would pass 2^64-1");
    accepted(BATCHES_MSG(site, 2, h, "AB", 1u, Z(1), 7)); /* the control: this one is fine */
#undef BATCHES_MSG

    /* HELLO [1, 1, shop, schema, cert, clock, vv] */
    refused(build("AuubuBuA", 7u, U(1), U(1), Z(16), z16, U(3), Z(0), 0, U(5), 0u), TSYNC_ECORRUPT,
            "HELLO: field 4 (certificate) is empty (nil means no certificate)");
    refused(build("AuubunuA", 7u, U(1), U(1), Z(16), z16, U(3), U(5), 0u), TSYNC_ECORRUPT,
            "HELLO: field 4 (certificate) is nil but a shop id is given");
    refused(build("AuunuBuA", 7u, U(1), U(1), U(3), Z(4), 'c', U(5), 0u), TSYNC_ECORRUPT,
            "HELLO: field 4 (certificate) is present but the shop id is nil");
    refused(build("AuubuBuA", 7u, U(1), U(1), Z(16), z16, U(3), Z(4097), 'c', U(5), 0u),
            TSYNC_ECORRUPT, "HELLO: field 4 (certificate) has 4097 bytes, more than 4096");
    refused(build("AuununuA", 7u, U(1), U(1), U(3), U(1) << 48, 0u), TSYNC_ECORRUPT,
            "HELLO: field 5 (clock) is 281474976710656 ms, not below 2^48");
    accepted(build("AuununuA", 7u, U(1), U(1), U(3), (U(1) << 48) - 1, 0u));

    /* vectors: [site, seq, hash] sorted by site, strictly, seq >= 1 */
    uint8_t s1[16], s2[16];
    memset(s1, 1, 16);
    memset(s2, 2, 16);
    refused(build("AuAAbubAbub", 2u, U(5), 2u, 3u, Z(16), s2, U(1), Z(32), z32, 3u, Z(16), s1, U(1),
                  Z(32), z32),
            TSYNC_ECORRUPT,
            "ACK: field 1 (vector) entry 1 does not sort after entry 0 (sites must be strictly "
            "ascending)");
    refused(build("AuAAbubAbub", 2u, U(5), 2u, 3u, Z(16), s1, U(1), Z(32), z32, 3u, Z(16), s1, U(9),
                  Z(32), z32),
            TSYNC_ECORRUPT, "ACK: field 1 (vector) entry 1 does not sort after entry 0");
    refused(build("AuAAbub", 2u, U(5), 1u, 3u, Z(16), s1, U(0), Z(32), z32), TSYNC_ECORRUPT,
            "ACK: field 1 (vector) entry 0: seq is 0");
    refused(build("AubuAAbub", 4u, U(6), Z(16), s1, U(2), 1u, 3u, Z(16), s1, U(0), Z(32), z32),
            TSYNC_ECORRUPT, "SNAPSHOT_BEGIN: field 3 (vector) entry 0: seq is 0");
    refused(build("AubuA", 4u, U(6), Z(16), s1, U(1) << 32, 0u), TSYNC_ECORRUPT,
            "SNAPSHOT_BEGIN: field 2 (table count) is 4294967296, more than 2^32-1");

    refused(build("AuA", 2u, U(3), 0u), TSYNC_ECORRUPT, "CERTS: field 1 (certificates) is empty");
    refused(build("AuAB", 2u, U(3), 1u, Z(4097), 1), TSYNC_ECORRUPT,
            "CERTS: field 1 (certificates) entry 0 has 4097 bytes, more than 4096");
    refused(build("AuABB", 2u, U(3), 2u, Z(3), 1, Z(0), 0), TSYNC_ECORRUPT,
            "CERTS: field 1 (certificates) entry 1 is empty");
    refused(build("AuB", 2u, U(4), Z(0), 0), TSYNC_ECORRUPT,
            "FORK_PROOF: field 1 (proof) is empty");
    refused(build("AubuB", 4u, U(7), Z(16), s1, U(0), Z(0), 0), TSYNC_ECORRUPT,
            "SNAPSHOT_CHUNK: field 3 (rows) is empty");
    refused(build("Auuu", 3u, U(10), U(1), U(1) << 48), TSYNC_ECORRUPT,
            "PONG: field 2 (clock) is 281474976710656 ms");

    refused(build("Auus", 3u, U(11), U(0), "x"), TSYNC_ECORRUPT, "ERROR: field 1 (code) is 0");
    refused(build("Auus", 3u, U(11), U(1) << 32, "x"), TSYNC_ECORRUPT,
            "ERROR: field 1 (code) is 4294967296, more than 2^32-1");
    static const struct {
        const char *text;
        size_t at;
    } texts[] = {
        {"line\nbreak", 4},    {"tab\there", 3},       {"del\x7f", 3},
        {"esc\x1b[2J", 3},     {"c1 \xc2\x9b", 3},     {"bad \xc3\x28", 4},
        {"over\xc0\xaf", 4},   {"sur\xed\xa0\x80", 3}, {"big\xf4\x90\x80\x80", 3},
        {"cut\xe2\x82", 3},    {"lone\x80", 4},        {"f5\xf5\x80\x80\x80", 2},
        {"e0\xe0\x80\x80", 2},
    };
    for (size_t i = 0; i < sizeof texts / sizeof texts[0]; i++) {
        char want[96];
        snprintf(want, sizeof want,
                 "ERROR: field 2 (message) has a control character or invalid UTF-8 at byte %zu",
                 texts[i].at);
        refused(build("Auus", 3u, U(11), U(1), texts[i].text), TSYNC_ECORRUPT, want);
    }
    /* Valid text of every UTF-8 length, and no text at all, are fine. */
    accepted(build("Auus", 3u, U(11), U(1), "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 \xc2\xa0"));
    accepted(build("Auus", 3u, U(11), U(99), ""));
}

Test(net_wire, encoder_checks_the_same_rules)
{
    char err[TSYNC__ERRLEN];
    uint8_t *out = (uint8_t *)"x";
    size_t len = 1;
    tsync__msg m;

    memset(&m, 0, sizeof m);
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert_null(out);
    cr_assert_eq(len, 0);
    cr_assert(strstr(err, "message has unknown type 0"), "%s", err);
    m.type = (tsync__wire_type)12;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);

    m = sample(0);
    m.hello.version = 0; /* taken as the current version */
    encode_ok(&m, &out, &len);
    free(out);
    m.hello.version = 2;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "HELLO: field 1 (version) is 2"), "%s", err);

    m = sample(0);
    m.hello.has_shop = false;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "HELLO: field 4 (certificate) is present but the shop id is nil"), "%s",
              err);

    tsync__vv_entry rev[2] = {vv_hello[1], vv_hello[0]};
    m = sample(0);
    m.hello.vv = (tsync__wire_vv){rev, 2};
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "HELLO: field 6 (vector) entry 1 does not sort after entry 0"), "%s",
              err);

    tsync__vv_entry *many = calloc(TSYNC__WIRE_VV_MAX + 1, sizeof *many);
    m = sample(5);
    m.ack.vv = (tsync__wire_vv){many, TSYNC__WIRE_VV_MAX + 1};
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "ACK: field 1 (vector) has 65537 entries, more than 65536"), "%s", err);
    free(many);

    m = sample(2);
    m.batches.site[0] ^= 1;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "BATCHES: field 1 (site) is not BLAKE2b-128"), "%s", err);

    m = sample(11);
    m.error.text = "two\nlines";
    m.error.len = 9;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "ERROR: field 2 (message) has a control character"), "%s", err);

    m = sample(10);
    m.pong.clock_ms = UINT64_MAX;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "PONG: field 2 (clock)"), "%s", err);

    m = sample(3);
    m.certs.n = 0;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "CERTS: field 1 (certificates) is empty"), "%s", err);

    /* Each certificate within its limit, together over the message's limit. */
    enum { NBIG = 300 };
    static uint8_t certbuf[TSYNC__WIRE_CERT_MAX];
    const uint8_t *cp[NBIG];
    size_t cl[NBIG];
    for (int i = 0; i < NBIG; i++) {
        cp[i] = certbuf;
        cl[i] = sizeof certbuf;
    }
    m.certs = (tsync__wire_certs){NBIG, cp, cl};
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "CERTS would be 1229705 bytes, more than its limit of 1048576"), "%s",
              err);
    m.certs.n = 255; /* 255 * 4099 + 5 fits in 1 MiB */
    encode_ok(&m, &out, &len);
    free(out);

    m = sample(4);
    m.fork_proof.proof = NULL;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "FORK_PROOF: field 1 (proof) has 8 bytes but no pointer"), "%s", err);
}

Test(net_wire, size_matches_encoding_at_every_width)
{
    /* Ints and lengths at each boundary of msgpack's widths. */
    static const uint64_t ints[] = {0,
                                    127,
                                    128,
                                    255,
                                    256,
                                    65535,
                                    65536,
                                    UINT32_MAX,
                                    (uint64_t)UINT32_MAX + 1,
                                    (1ull << 48) - 1,
                                    UINT64_MAX};
    for (size_t i = 0; i < sizeof ints / sizeof ints[0]; i++) {
        tsync__msg m = sample(9), d;
        m.ping.ms = ints[i];
        uint8_t *buf;
        size_t len;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        encode_ok(&m, &buf, &len);
        cr_assert_eq(tsync__wire_decode(buf, len, &d, &a, err), 0, "%s", err);
        cr_assert_eq(d.ping.ms, ints[i]);
        free(buf);
    }
    static const size_t lens[] = {0, 1, 31, 32, 255, 256, 512};
    static char text[512];
    memset(text, 'x', sizeof text);
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        tsync__msg m = sample(11), d;
        m.error.text = text;
        m.error.len = lens[i];
        uint8_t *buf;
        size_t len;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        encode_ok(&m, &buf, &len);
        cr_assert_eq(tsync__wire_decode(buf, len, &d, &a, err), 0, "%s", err);
        cr_assert_eq(d.error.len, lens[i]);
        free(buf);
    }
    static uint8_t rows[70000];
    static const size_t blens[] = {1, 255, 256, 65535, 65536, 70000};
    for (size_t i = 0; i < sizeof blens / sizeof blens[0]; i++) {
        tsync__msg m = sample(7), d;
        m.snapshot_chunk.rows = rows;
        m.snapshot_chunk.len = blens[i];
        uint8_t *buf;
        size_t len;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        encode_ok(&m, &buf, &len);
        cr_assert_eq(tsync__wire_decode(buf, len, &d, &a, err), 0, "%s", err);
        cr_assert_eq(d.snapshot_chunk.len, blens[i]);
        free(buf);
    }
    /* vectors of 15, 16 and 65536 entries cross the array header widths */
    static const size_t counts[] = {15, 16, 65535, 65536};
    tsync__vv_entry *e = calloc(65536, sizeof *e);
    for (size_t k = 0; k < 65536; k++) {
        e[k].site[14] = (uint8_t)(k >> 8);
        e[k].site[15] = (uint8_t)k;
        e[k].seq = k + 1;
    }
    for (size_t i = 0; i < sizeof counts / sizeof counts[0]; i++) {
        tsync__msg m = sample(5), d;
        m.ack.vv = (tsync__wire_vv){e, counts[i]};
        uint8_t *buf;
        size_t len;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        encode_ok(&m, &buf, &len);
        cr_assert_eq(tsync__wire_decode(buf, len, &d, &a, err), 0, "%s", err);
        cr_assert(vv_eq(&m.ack.vv, &d.ack.vv));
        tsync__arena_free(&a);
        free(buf);
    }
    free(e);
}

/* BATCHES [2, site, pk, inc, first_seq, prev, n bodies of one byte, sig] built by hand. */
static frame batches_with_bodies(uint32_t n)
{
    tsync__msg m = sample(2);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 8);
    msgpack_pack_uint64(&pk, TSYNC__WIRE_BATCHES);
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, m.batches.site, 16);
    msgpack_pack_bin(&pk, 32);
    msgpack_pack_bin_body(&pk, m.batches.pk, 32);
    msgpack_pack_bin(&pk, 16);
    msgpack_pack_bin_body(&pk, m.batches.inc, 16);
    msgpack_pack_uint64(&pk, m.batches.first_seq);
    msgpack_pack_bin(&pk, 32);
    msgpack_pack_bin_body(&pk, m.batches.prev, 32);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_bin(&pk, 1);
        msgpack_pack_bin_body(&pk, "b", 1);
    }
    msgpack_pack_bin(&pk, 64);
    msgpack_pack_bin_body(&pk, m.batches.sig, 64);
    frame f = {(uint8_t *)sb.data, sb.size};
    return f;
}

static frame certs_with_blobs(uint32_t n)
{
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 2);
    msgpack_pack_uint64(&pk, TSYNC__WIRE_CERTS);
    msgpack_pack_array(&pk, n);
    for (uint32_t i = 0; i < n; i++) {
        msgpack_pack_bin(&pk, 1);
        msgpack_pack_bin_body(&pk, "c", 1);
    }
    frame f = {(uint8_t *)sb.data, sb.size};
    return f;
}

Test(net_wire, count_limits)
{
    /* The counts bound what a frame makes the decoder allocate, whatever its size. */
    accepted(batches_with_bodies(TSYNC__WIRE_BODIES_MAX));
    refused(batches_with_bodies(TSYNC__WIRE_BODIES_MAX + 1), TSYNC_ECORRUPT,
            "BATCHES: field 6 (bodies) has 65537 entries, more than 65536");
    accepted(certs_with_blobs(TSYNC__WIRE_CERTS_MAX));
    refused(certs_with_blobs(TSYNC__WIRE_CERTS_MAX + 1), TSYNC_ECORRUPT,
            "CERTS: field 1 (certificates) has 4097 entries, more than 4096");

    char err[TSYNC__ERRLEN];
    uint8_t *out;
    size_t len;
    static const uint8_t one = 'x';
    static const uint8_t *p[TSYNC__WIRE_BODIES_MAX + 1];
    static size_t l[TSYNC__WIRE_BODIES_MAX + 1];
    for (size_t i = 0; i <= TSYNC__WIRE_BODIES_MAX; i++) {
        p[i] = &one;
        l[i] = 1;
    }
    tsync__msg m = sample(2);
    m.batches.nbodies = TSYNC__WIRE_BODIES_MAX + 1;
    m.batches.body = p;
    m.batches.body_len = l;
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "BATCHES: field 6 (bodies) has 65537 entries"), "%s", err);
    m = sample(3);
    m.certs = (tsync__wire_certs){TSYNC__WIRE_CERTS_MAX + 1, p, l};
    cr_assert_eq(tsync__wire_encode(&m, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "CERTS: field 1 (certificates) has 4097 entries"), "%s", err);
}
