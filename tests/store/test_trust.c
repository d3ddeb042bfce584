/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_trust.c — shop trust: the record formats and their signatures (crdt/cert.c), and
 * trust kept in the database (store/trust.c): enrolment, admission of batches and sessions by key,
 * expiry by batch clock, revocation cutoffs, renewal, rotation, replication of the record set, and
 * the shop admin key file.
 *
 * Shops are made from fixed seeds (tsync__shopkey_init), so records can be built with any times.
 * Device keys are the stores' own, read through store/internal.h. A store's wall clock is moved
 * with its clock_offset_ms where a test needs "now" to be elsewhere.
 *
 * Set TSYNC_FUZZ_CORPUS to a directory to write sample records there as seeds for
 * fuzz/fuzz_cert.c (first byte: the decoder, see that file).
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/internal.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

static void init_sodium(void)
{
    cr_assert(sodium_init() >= 0);
}

TestSuite(trust_format, .init = init_sodium);
TestSuite(trust, .init = init_sodium, .fini = th_cleanup);

#define DAY  86400000ull
#define T0   1760000000000ull /* 2025-10-09: "now" of the format tests */
#define YEAR (365 * DAY)

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint8_t *rot_make(const tsync__shopkey *old, const tsync__shopkey *nk, uint64_t issued,
                         size_t *len)
{
    tsync__rotation t = {.issued_ms = issued};
    memcpy(t.shop_id, old->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(t.old_pk, old->pk, TSYNC__PK_BYTES);
    memcpy(t.new_pk, nk->pk, TSYNC__PK_BYTES);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    int rc = tsync__rotation_sign(&t, old->sk, nk->sk, &out, len, err);
    cr_assert_eq(rc, 0, "%s", err);
    return out;
}

static uint8_t *req_make(const uint8_t sk[TSYNC__SK_BYTES], const char *name, size_t *len)
{
    tsync__req r = {
        .device_name = name, .device_name_len = (uint32_t)strlen(name), .created_ms = T0};
    crypto_sign_ed25519_sk_to_pk(r.device_pk, sk);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    int rc = tsync__req_sign(&r, sk, &out, len, err);
    cr_assert_eq(rc, 0, "%s", err);
    return out;
}

static int decode(const uint8_t *p, size_t n, tsync__trust_rec *r, tsync__arena *a)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_decode(p, n, r, a, err);
    if (rc) cr_assert(err[0] && !strchr(err, '\n'), "an error needs a one-line message");
    return rc;
}

/* Writes a fuzzing seed when TSYNC_FUZZ_CORPUS is set: selector byte, then the bytes. */
static void seed_corpus(const char *name, uint8_t selector, const void *p, size_t n)
{
    const char *dir = getenv("TSYNC_FUZZ_CORPUS");
    if (!dir || !*dir) return;
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f) return;
    fputc(selector, f);
    fwrite(p, 1, n, f);
    fclose(f);
}

/* Every single-byte change of a signed record must be refused. */
static void assert_every_flip_refused(const uint8_t *rec, size_t len, const char *what)
{
    uint8_t *m = malloc(len);
    static const uint8_t XOR[] = {0x01, 0x80, 0xff};
    for (size_t i = 0; i < len; i++) {
        for (size_t x = 0; x < sizeof XOR; x++) {
            memcpy(m, rec, len);
            m[i] ^= XOR[x];
            tsync__arena a = {0};
            tsync__trust_rec r;
            int rc = decode(m, len, &r, &a);
            tsync__arena_free(&a);
            cr_assert_neq(rc, 0, "%s: byte %zu ^ 0x%02x was accepted", what, i, XOR[x]);
        }
    }
    for (size_t n = 0; n < len; n++) {
        tsync__arena a = {0};
        tsync__trust_rec r;
        cr_assert_neq(decode(rec, n, &r, &a), 0, "%s: truncated to %zu bytes was accepted", what,
                      n);
        tsync__arena_free(&a);
    }
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, rec, len);
    longer[len] = 0xc0;
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(longer, len + 1, &r, &a), TSYNC_ECORRUPT, "%s: trailing byte", what);
    tsync__arena_free(&a);
    free(longer);
    free(m);
}

/* ================================================================ formats */

Test(trust_format, request_round_trip_and_tamper)
{
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    size_t len;
    uint8_t *req = req_make(sk, "till-1 ☕", &len);
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(req, len, &r, &a), 0);
    cr_assert_eq(r.kind, TSYNC__T_REQUEST);
    cr_assert_eq(memcmp(r.u.req.device_pk, pk, 32), 0);
    cr_assert_eq(r.u.req.device_name_len, strlen("till-1 ☕"));
    cr_assert_eq(memcmp(r.u.req.device_name, "till-1 ☕", r.u.req.device_name_len), 0);
    cr_assert_eq(r.u.req.created_ms, T0);
    tsync__arena_free(&a);
    /* deterministic: the same request encodes to the same bytes */
    size_t len2;
    uint8_t *again = req_make(sk, "till-1 ☕", &len2);
    cr_assert_eq(len, len2);
    cr_assert_eq(memcmp(req, again, len), 0);
    assert_every_flip_refused(req, len, "request");
    seed_corpus("request", 0, req, len);
    free(again);
    free(req);
}

Test(trust_format, request_signed_by_another_key_refused)
{
    uint8_t pk[32], sk[64], pk2[32], sk2[64];
    crypto_sign_keypair(pk, sk);
    crypto_sign_keypair(pk2, sk2);
    tsync__req r = {.device_name = "x", .device_name_len = 1, .created_ms = 1};
    memcpy(r.device_pk, pk, 32);
    uint8_t *out;
    size_t len;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__req_sign(&r, sk2, &out, &len, err), TSYNC_EINVAL,
                 "the encoder must not sign another key's request");
}

Test(trust_format, cert_round_trip_and_tamper)
{
    tsync__shopkey k = th_shop_make(1, 1, "Corner Shop");
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    size_t len;
    uint8_t *c = th_cert_make(&k, pk, "till-1", T0, T0 + YEAR, &len);
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(c, len, &r, &a), 0);
    cr_assert_eq(r.kind, TSYNC__T_CERT);
    cr_assert_eq(memcmp(r.u.cert.shop_id, k.shop_id, 16), 0);
    cr_assert_eq(memcmp(r.u.cert.device_pk, pk, 32), 0);
    cr_assert_eq(memcmp(r.u.cert.admin_pk, k.pk, 32), 0);
    cr_assert_eq(r.u.cert.not_before_ms, T0);
    cr_assert_eq(r.u.cert.expires_ms, T0 + YEAR);
    cr_assert_eq(r.u.cert.shop_name_len, 11);
    tsync__arena_free(&a);
    assert_every_flip_refused(c, len, "certificate");
    seed_corpus("cert", 0, c, len);
    free(c);
}

Test(trust_format, cert_rules)
{
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    tsync__shopkey other = th_shop_make(2, 1, "Shop");
    uint8_t pk[32], sk[64], *out;
    size_t len;
    char err[TSYNC__ERRLEN];
    crypto_sign_keypair(pk, sk);
    tsync__cert c = {.shop_name = "Shop",
                     .shop_name_len = 4,
                     .device_name = "t",
                     .device_name_len = 1,
                     .not_before_ms = 10,
                     .expires_ms = 10};
    memcpy(c.device_pk, pk, 32);
    memcpy(c.admin_pk, k.pk, 32);
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "expires == nb");
    c.expires_ms = 11;
    cr_assert_eq(tsync__cert_sign(&c, other.sk, &out, &len, err), TSYNC_EINVAL, "wrong admin sk");
    memcpy(c.device_pk, k.pk, 32);
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "device = admin");
    memcpy(c.device_pk, pk, 32);
    c.device_name = "";
    c.device_name_len = 0;
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "empty name");
    c.device_name = "bad\nname";
    c.device_name_len = 8;
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "control char");
    c.device_name = "\xc0\xaf";
    c.device_name_len = 2;
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "overlong UTF-8");
    char longname[66];
    memset(longname, 'a', 65);
    longname[65] = 0;
    c.device_name = longname;
    c.device_name_len = 65;
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), TSYNC_EINVAL, "65 bytes");
    c.device_name_len = 64;
    cr_assert_eq(tsync__cert_sign(&c, k.sk, &out, &len, err), 0, "64 bytes: %s", err);
    free(out);
}

Test(trust_format, names)
{
    cr_assert(tsync__trust_name_ok("a", 1));
    cr_assert(tsync__trust_name_ok("Café Ünïcode 日本 😀", strlen("Café Ünïcode 日本 😀")));
    cr_assert_not(tsync__trust_name_ok("", 0));
    cr_assert_not(tsync__trust_name_ok("a\tb", 3));
    cr_assert_not(tsync__trust_name_ok("a\x7f", 2));
    cr_assert_not(tsync__trust_name_ok("\xc2\x85", 2), "C1 control (NEL)");
    cr_assert_not(tsync__trust_name_ok("\xed\xa0\x80", 3), "surrogate");
    cr_assert_not(tsync__trust_name_ok("\xf4\x90\x80\x80", 4), "beyond U+10FFFF");
    cr_assert_not(tsync__trust_name_ok("\xe0\x80\xaf", 3), "overlong");
    cr_assert_not(tsync__trust_name_ok("\xe2\x82", 2), "truncated sequence");
    cr_assert_not(tsync__trust_name_ok("a\0b", 3), "NUL");
}

Test(trust_format, revocation_cutoffs_sorted_and_looked_up)
{
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    tsync__cutoff cuts[3];
    memset(cuts, 0, sizeof cuts);
    memset(cuts[0].site, 9, 16), cuts[0].seq = 90;
    memset(cuts[1].site, 3, 16), cuts[1].seq = 30;
    memset(cuts[2].site, 6, 16), cuts[2].seq = 60;
    size_t len;
    uint8_t *v = th_rev_make(&k, pk, cuts, 3, T0, &len);
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(v, len, &r, &a), 0);
    cr_assert_eq(r.kind, TSYNC__T_REVOCATION);
    cr_assert_eq(r.u.rev.ncutoffs, 3);
    cr_assert_eq(r.u.rev.cutoffs[0].seq, 30, "written sorted by site");
    cr_assert_eq(r.u.rev.cutoffs[2].seq, 90);
    uint8_t site[16];
    memset(site, 6, 16);
    cr_assert_eq(tsync__revocation_cutoff(&r.u.rev, site), 60);
    memset(site, 7, 16);
    cr_assert_eq(tsync__revocation_cutoff(&r.u.rev, site), 0, "a site not named: cutoff 0");
    tsync__arena_free(&a);
    assert_every_flip_refused(v, len, "revocation");
    seed_corpus("revocation", 0, v, len);
    free(v);

    memcpy(cuts[1].site, cuts[0].site, 16);
    tsync__revocation dup = {.ncutoffs = 3, .cutoffs = cuts};
    memcpy(dup.admin_pk, k.pk, 32);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__revocation_sign(&dup, k.sk, &out, &len, err), TSYNC_EINVAL);
}

Test(trust_format, revocation_unsorted_cutoffs_refused_by_decoder)
{
    /* Re-sign hand-made bytes with the cutoffs out of order: the signature is right, the order is
     * not, and order is part of the canonical form. */
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    tsync__cutoff cuts[2];
    memset(cuts, 0, sizeof cuts);
    memset(cuts[0].site, 1, 16), cuts[0].seq = 1;
    memset(cuts[1].site, 2, 16), cuts[1].seq = 2;
    size_t len;
    uint8_t *v = th_rev_make(&k, pk, cuts, 2, T0, &len);
    /* layout: 98 03 01 c4 10 <id> c4 20 <pk> 92 | 92 c4 10 <site1> 01 | 92 c4 10 <site2> 02 ... */
    size_t first = 1 + 1 + 1 + 18 + 34 + 1;
    uint8_t tmp[20];
    memcpy(tmp, v + first, 20);
    memmove(v + first, v + first + 20, 20);
    memcpy(v + first + 20, tmp, 20);
    /* re-sign the changed prefix */
    size_t signed_len = len - 66;
    uint8_t msg[12 + 32];
    memcpy(msg, "tsync-rev-v1", 12);
    crypto_generichash(msg + 12, 32, v, signed_len, NULL, 0);
    crypto_sign_detached(v + len - 64, NULL, msg, sizeof msg, k.sk);
    tsync__arena a = {0};
    tsync__trust_rec r;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_decode(v, len, &r, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "ascending"), "%s", err);
    /* and swapped back it verifies: the test edits what it thinks it edits */
    memcpy(tmp, v + first, 20);
    memmove(v + first, v + first + 20, 20);
    memcpy(v + first + 20, tmp, 20);
    crypto_generichash(msg + 12, 32, v, signed_len, NULL, 0);
    crypto_sign_detached(v + len - 64, NULL, msg, sizeof msg, k.sk);
    cr_assert_eq(tsync__trust_decode(v, len, &r, &a, err), 0, "%s", err);
    tsync__arena_free(&a);
    free(v);
}

Test(trust_format, rotation_needs_both_signatures)
{
    tsync__shopkey k0 = th_shop_make(1, 1, "Shop"), k1 = th_shop_make(2, 1, "Shop");
    size_t len;
    uint8_t *t = rot_make(&k0, &k1, T0, &len);
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(t, len, &r, &a), 0);
    cr_assert_eq(r.kind, TSYNC__T_ROTATION);
    cr_assert_eq(memcmp(r.u.rot.old_pk, k0.pk, 32), 0);
    cr_assert_eq(memcmp(r.u.rot.new_pk, k1.pk, 32), 0);
    tsync__arena_free(&a);
    assert_every_flip_refused(t, len, "rotation");
    seed_corpus("rotation", 0, t, len);
    free(t);
    tsync__rotation same = {0};
    memcpy(same.old_pk, k0.pk, 32);
    memcpy(same.new_pk, k0.pk, 32);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__rotation_sign(&same, k0.sk, k0.sk, &out, &len, err), TSYNC_EINVAL);
}

Test(trust_format, unknown_kind_format_and_noncanonical)
{
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__trust_rec r;
    static const uint8_t kind9[] = {0x92, 0x09, 0x01};
    cr_assert_eq(tsync__trust_decode(kind9, sizeof kind9, &r, &a, err), TSYNC_EVERSION);
    static const uint8_t fmt2[] = {0x92, 0x02, 0x02};
    cr_assert_eq(tsync__trust_decode(fmt2, sizeof fmt2, &r, &a, err), TSYNC_EVERSION);
    static const uint8_t wide_kind[] = {0x92, 0xcc, 0x02, 0x01};
    cr_assert_eq(tsync__trust_decode(wide_kind, sizeof wide_kind, &r, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "non-canonical"), "%s", err);
    static const uint8_t wide_array[] = {0xdc, 0x00, 0x0a, 0x02, 0x01};
    cr_assert_eq(tsync__trust_decode(wide_array, sizeof wide_array, &r, &a, err), TSYNC_ECORRUPT);
    static const uint8_t map[] = {0x81, 0x01, 0x02};
    cr_assert_eq(tsync__trust_decode(map, sizeof map, &r, &a, err), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__trust_decode(map, 0, &r, &a, err), TSYNC_ECORRUPT);
    /* fields missing: a certificate array of 9 */
    static const uint8_t short_cert[] = {0x93, 0x02, 0x01, 0xc0};
    cr_assert_eq(tsync__trust_decode(short_cert, sizeof short_cert, &r, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "expected 10 fields, got 3"), "%s", err);
    /* an array that declares more elements than there are bytes */
    static const uint8_t liar[] = {0x9a, 0x02, 0x01};
    cr_assert_eq(tsync__trust_decode(liar, sizeof liar, &r, &a, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "longer than the bytes left"), "%s", err);
    tsync__arena_free(&a);
}

Test(trust_format, kinds_are_not_interchangeable)
{
    /* A request re-labelled as a certificate (kind byte changed) fails: field count and domain. */
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    size_t len;
    uint8_t *req = req_make(sk, "t", &len);
    req[1] = TSYNC__T_CERT;
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_neq(decode(req, len, &r, &a), 0);
    tsync__arena_free(&a);
    free(req);
}

Test(trust_format, shopkey_file_round_trip_and_damage)
{
    tsync__shopkey k = th_shop_make(7, 8, "Corner Shop");
    uint8_t *img;
    size_t len;
    cr_assert_eq(tsync__shopkey_encode(&k, &img, &len), 0);
    tsync__shopkey back;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__shopkey_decode(img, len, &back, err), 0, "%s", err);
    cr_assert_eq(memcmp(back.sk, k.sk, 64), 0);
    cr_assert_eq(memcmp(back.pk, k.pk, 32), 0);
    cr_assert_eq(memcmp(back.shop_id, k.shop_id, 16), 0);
    cr_assert_str_eq(back.name, "Corner Shop");
    cr_assert_eq(back.created_ms, T0);
    seed_corpus("shopkey", 1, img, len);
    for (size_t i = 0; i < len; i++) {
        img[i] ^= 0x20;
        cr_assert_neq(tsync__shopkey_decode(img, len, &back, err), 0, "byte %zu flipped", i);
        cr_assert(err[0]);
        img[i] ^= 0x20;
    }
    for (size_t n = 0; n < len; n++)
        cr_assert_neq(tsync__shopkey_decode(img, n, &back, err), 0, "truncated to %zu", n);
    img[8] = 3; /* 1 and 2 are known (test_shopkey.c) */
    cr_assert_eq(tsync__shopkey_decode(img, len, &back, err), TSYNC_EVERSION);
    sodium_memzero(img, len);
    free(img);
}

Test(trust_format, armour_round_trip_with_text_around)
{
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    size_t len1, len2;
    uint8_t *c1 = th_cert_make(&k, pk, "till-1", T0, T0 + YEAR, &len1);
    uint8_t *c2 = th_rev_make(&k, pk, NULL, 0, T0, &len2);
    char *a1, *a2;
    cr_assert_eq(tsync__armour(TSYNC__T_CERT, c1, len1, "a comment\nsecond line", &a1), 0);
    cr_assert_eq(tsync__armour(TSYNC__T_REVOCATION, c2, len2, NULL, &a2), 0);
    cr_assert(strstr(a1, "# a comment\n# second line\n-----BEGIN TILLSYNC CERTIFICATE-----\n"));
    for (char *l = strchr(a1, '\n'); l && l[1]; l = strchr(l + 1, '\n')) {
        size_t n = strcspn(l + 1, "\n");
        cr_assert(n <= 64 || strncmp(l + 1, "-----", 5) == 0, "line of %zu characters", n);
    }
    /* an e-mail around both blocks, with CRLF line ends in the second */
    char *mail = malloc(strlen(a1) + 2 * strlen(a2) + 200);
    strcpy(mail, "Hi,\nhere it is:\n\n");
    strcat(mail, a1);
    strcat(mail, "\nand the other:\n");
    size_t o = strlen(mail);
    for (const char *p = a2; *p; p++) {
        if (*p == '\n') mail[o++] = '\r';
        mail[o++] = *p;
    }
    strcpy(mail + o, "Regards\n");
    size_t pos = 0, rlen;
    uint32_t kind;
    uint8_t *rec;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__dearmour(mail, strlen(mail), &pos, &kind, &rec, &rlen, err), 0, "%s", err);
    cr_assert_eq(kind, TSYNC__T_CERT);
    cr_assert_eq(rlen, len1);
    cr_assert_eq(memcmp(rec, c1, len1), 0);
    free(rec);
    cr_assert_eq(tsync__dearmour(mail, strlen(mail), &pos, &kind, &rec, &rlen, err), 0, "%s", err);
    cr_assert_eq(kind, TSYNC__T_REVOCATION);
    cr_assert_eq(memcmp(rec, c2, len2), 0);
    free(rec);
    cr_assert_eq(tsync__dearmour(mail, strlen(mail), &pos, &kind, &rec, &rlen, err),
                 TSYNC_ENOTFOUND);
    seed_corpus("armour", 2, mail, strlen(mail));

    /* damaged armour */
    char *bad = strdup(a1);
    char *body = strstr(bad, "-----\n") + 6;
    body[3] = '!';
    pos = 0;
    cr_assert_eq(tsync__dearmour(bad, strlen(bad), &pos, &kind, &rec, &rlen, err), TSYNC_ECORRUPT);
    free(bad);
    bad = strdup(a1);
    *strstr(bad, "-----END") = '\0';
    pos = 0;
    cr_assert_eq(tsync__dearmour(bad, strlen(bad), &pos, &kind, &rec, &rlen, err), TSYNC_ECORRUPT);
    cr_assert(strstr(err, "cut off"), "%s", err);
    free(bad);
    const char *unknown =
        "-----BEGIN TILLSYNC PASSWORD-----\nAAAA\n-----END TILLSYNC PASSWORD-----\n";
    pos = 0;
    cr_assert_eq(tsync__dearmour(unknown, strlen(unknown), &pos, &kind, &rec, &rlen, err),
                 TSYNC_ECORRUPT);
    free(mail), free(a1), free(a2), free(c1), free(c2);
}

/* ================================================================ the database */

typedef struct {
    char *dir;
    tsync_store *a, *b, *c;
    tsync__shopkey shop, other;
} world;

static void world_open(world *w)
{
    w->dir = th_tmpdir_auto();
    w->a = th_open_products(th_path(w->dir, "a.db"));
    w->b = th_open_products(th_path(w->dir, "b.db"));
    w->c = th_open_products(th_path(w->dir, "c.db"));
    w->shop = th_shop_make(1, 1, "Corner Shop");
    w->other = th_shop_make(2, 2, "Other Shop");
}

static void world_close(world *w)
{
    tsync_store_free(w->a);
    tsync_store_free(w->b);
    tsync_store_free(w->c);
    th_rmdir(w->dir);
    free(w->dir);
}

static int import(tsync_store *s, const uint8_t *rec, size_t len)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_import(s, rec, len, err);
    if (rc) cr_assert(err[0], "an error needs a message");
    return rc;
}

/* Copies every trust record of from into to; returns how many were refused. */
static int replicate_trust(tsync_store *from, tsync_store *to)
{
    uint8_t **b;
    size_t *l, n;
    cr_assert_eq(tsync__trust_export(from, &b, &l, &n), 0, "%s", th_errmsg());
    int refused = 0;
    for (size_t i = 0; i < n; i++) refused += import(to, b[i], l[i]) != 0;
    tsync__trust_export_free(b, l, n);
    return refused;
}

static int admit(tsync_store *s, const tsync_store *author, uint64_t seq, uint64_t hlc_ms)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_admit(s, author->pk, author->site, seq, hlc_ms, err);
    if (rc) cr_assert(err[0] && !strchr(err, '\n'));
    return rc;
}

Test(trust, never_enrolled_admits_everything)
{
    world w;
    world_open(&w);
    cr_assert_eq(tsync__trust_enrolled(w.a, NULL), 0);
    cr_assert_eq(admit(w.a, w.b, 1, now_ms()), 0);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_session(w.a, w.b->pk, now_ms(), err), 0);
    uint8_t **b;
    size_t *l, n;
    cr_assert_eq(tsync__trust_export(w.a, &b, &l, &n), 0);
    cr_assert_eq(n, 0);
    uint8_t *c;
    size_t len;
    cr_assert_eq(tsync__trust_own_cert(w.a, &c, &len), TSYNC_ENOTFOUND);
    /* the readers do not create the tables */
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM sqlite_master WHERE name='tsync_shop'", -1), 0);
    world_close(&w);
}

Test(trust, full_flow)
{
    world w;
    world_open(&w);
    /* request -> sign -> enrol, as the CLI does it */
    uint8_t *req;
    size_t rlen;
    cr_assert_eq(tsync__trust_request(w.a, "till-a", &req, &rlen), 0, "%s", th_errmsg());
    tsync__arena ar = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(req, rlen, &r, &ar), 0);
    cr_assert_eq(memcmp(r.u.req.device_pk, w.a->pk, 32), 0);
    uint64_t now = now_ms();
    size_t clen;
    uint8_t *cert = th_cert_make(&w.shop, r.u.req.device_pk, "till-a", now, now + YEAR, &clen);
    tsync__arena_free(&ar);
    free(req);
    const uint8_t *recs[1] = {cert};
    tsync__enrol_result res;
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &clen, 1, &res), 0, "%s", th_errmsg());
    cr_assert_eq(res.first, 1);
    cr_assert_eq(res.own, 1);
    cr_assert_str_eq(res.shop_name, "Corner Shop");
    cr_assert_str_eq(res.device_name, "till-a");
    cr_assert_eq(res.expires_ms, now + YEAR);
    uint8_t id[16];
    cr_assert_eq(tsync__trust_enrolled(w.a, id), 1);
    cr_assert_eq(memcmp(id, w.shop.shop_id, 16), 0);
    uint8_t *own;
    size_t olen;
    cr_assert_eq(tsync__trust_own_cert(w.a, &own, &olen), 0);
    cr_assert_eq(olen, clen);
    cr_assert_eq(memcmp(own, cert, clen), 0);
    free(own);
    free(cert);

    /* B enrols in the same shop; the records replicate both ways */
    th_must_enrol(w.b, &w.shop, "till-b");
    cr_assert_eq(replicate_trust(w.a, w.b), 0);
    cr_assert_eq(replicate_trust(w.b, w.a), 0);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2);
    cr_assert_eq(replicate_trust(w.b, w.a), 0, "duplicates are no-ops");
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2);

    /* admitted: own and the other enrolled device's batches; sessions too */
    cr_assert_eq(admit(w.a, w.a, 1, now), 0);
    cr_assert_eq(admit(w.a, w.b, 1, now), 0, "%s", th_errmsg());
    cr_assert_eq(admit(w.b, w.a, 7, now), 0);
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_session(w.a, w.b->pk, now, err), 0, "%s", err);

    /* C, never certified: refused by batch and by session */
    cr_assert_eq(admit(w.a, w.c, 1, now), TSYNC_EREFUSED);
    cr_assert_eq(tsync__trust_session(w.a, w.c->pk, now, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "no certificate"), "%s", err);

    /* C enrolled in another shop: its certificate does not enter A, its batches stay refused */
    th_must_enrol(w.c, &w.other, "till-c");
    cr_assert_eq(replicate_trust(w.c, w.a), 1);
    cr_assert_eq(admit(w.a, w.c, 1, now), TSYNC_EREFUSED);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2);
    /* and a certificate of the other shop cannot enrol an enrolled database */
    cr_assert_eq(th_enrol(w.a, &w.other, "till-a", 30, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "enrolled in shop 'Corner Shop'"), "%s", th_errmsg());
    world_close(&w);
}

Test(trust, forged_shop_id_with_another_key_refused)
{
    /* A forger copies the shop id (it is public) and signs with his own key. */
    world w;
    world_open(&w);
    th_must_enrol(w.a, &w.shop, "till-a");
    tsync__shopkey forger = th_shop_make(3, 1, "Corner Shop");
    size_t len;
    uint64_t now = now_ms();
    uint8_t *c = th_cert_make(&forger, w.c->pk, "evil", now - DAY, now + YEAR, &len);
    cr_assert_eq(import(w.a, c, len), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "not (yet) an admin key"), "%s", th_errmsg());
    cr_assert_eq(admit(w.a, w.c, 1, now), TSYNC_EREFUSED);
    const uint8_t *recs[1] = {c};
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, NULL), TSYNC_EREFUSED);
    free(c);
    /* a revocation by the forger of a real device: refused too */
    th_must_enrol(w.b, &w.shop, "till-b");
    cr_assert_eq(replicate_trust(w.b, w.a), 0);
    uint8_t *v = th_rev_make(&forger, w.b->pk, NULL, 0, now, &len);
    cr_assert_eq(tsync__trust_revoke(w.a, v, len), TSYNC_EREFUSED);
    cr_assert_eq(import(w.a, v, len), TSYNC_EREFUSED);
    cr_assert_eq(admit(w.a, w.b, 1, now), 0, "the real device stays admitted");
    free(v);
    world_close(&w);
}

Test(trust, expiry_judged_by_batch_clock_and_wall_time)
{
    world w;
    world_open(&w);
    th_must_enrol(w.a, &w.shop, "till-a");
    uint64_t now = now_ms();
    size_t len;
    /* B's certificate expired yesterday */
    uint8_t *c = th_cert_make(&w.shop, w.b->pk, "till-b", now - 30 * DAY, now - DAY, &len);
    cr_assert_eq(import(w.a, c, len), 0, "an expired certificate is kept: it admits old batches");
    cr_assert_eq(admit(w.a, w.b, 5, now - 2 * DAY), 0, "batch clock before expiry");
    cr_assert_eq(admit(w.a, w.b, 5, now - DAY), 0, "batch clock at expiry");
    cr_assert_eq(admit(w.a, w.b, 6, now - DAY + 1), TSYNC_EREFUSED, "batch clock after expiry");
    cr_assert(strstr(th_errmsg(), "expired"), "%s", th_errmsg());
    cr_assert_eq(admit(w.a, w.b, 1, now - 40 * DAY), 0,
                 "not_before does not bound data: sales from before enrolment replicate");
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_session(w.a, w.b->pk, now, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "expired"), "%s", err);
    cr_assert_eq(tsync__trust_session(w.a, w.b->pk, now - 2 * DAY, err), 0, "%s", err);
    free(c);
    /* a certificate not valid yet: sessions wait for it (5 minutes of clock skew tolerated) */
    c = th_cert_make(&w.shop, w.c->pk, "till-c", now + DAY, now + YEAR, &len);
    cr_assert_eq(import(w.a, c, len), 0);
    cr_assert_eq(tsync__trust_session(w.a, w.c->pk, now, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "not valid before"), "%s", err);
    cr_assert_eq(tsync__trust_session(w.a, w.c->pk, now + DAY - 60000, err), 0, "%s", err);
    free(c);
    world_close(&w);
}

Test(trust, renewal_extends_and_union_of_certificates_counts)
{
    world w;
    world_open(&w);
    tsync__enrol_result res;
    cr_assert_eq(th_enrol(w.a, &w.shop, "till-a", 10, &res), 0, "%s", th_errmsg());
    uint64_t first_exp = res.expires_ms;
    cr_assert_eq(th_enrol(w.a, &w.shop, "till-a", 400, &res), 0, "renewal: %s", th_errmsg());
    cr_assert_eq(res.first, 0);
    cr_assert_eq(res.own, 1);
    cr_assert(res.expires_ms > first_exp + 300 * DAY);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_shop", -1), 1);
    /* the renewed certificate admits batches past the first expiry */
    cr_assert_eq(admit(w.a, w.a, 9, first_exp + 100 * DAY), 0, "%s", th_errmsg());
    /* an expired certificate of this device is refused at enrolment */
    size_t len;
    uint64_t now = tsync__now_ms(w.a);
    uint8_t *old = th_cert_make(&w.shop, w.a->pk, "till-a", now - 20 * DAY, now - DAY, &len);
    const uint8_t *recs[1] = {old};
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "expired"), "%s", th_errmsg());
    free(old);
    /* and one not valid for a day */
    uint8_t *early = th_cert_make(&w.shop, w.a->pk, "till-a", now + DAY, now + 9 * DAY, &len);
    recs[0] = early;
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "not valid before"), "%s", th_errmsg());
    free(early);
    world_close(&w);
}

Test(trust, revocation_cutoff)
{
    world w;
    world_open(&w);
    th_must_enrol(w.a, &w.shop, "till-a");
    th_must_enrol(w.b, &w.shop, "till-b");
    cr_assert_eq(replicate_trust(w.b, w.a), 0);
    uint64_t now = now_ms();
    tsync__cutoff cut = {.seq = 5};
    memcpy(cut.site, w.b->site, 16);
    size_t len;
    uint8_t *v = th_rev_make(&w.shop, w.b->pk, &cut, 1, now, &len);
    cr_assert_eq(tsync__trust_revoke(w.a, v, len), 0, "%s", th_errmsg());
    cr_assert_eq(tsync__trust_revoke(w.a, v, len), 0, "a duplicate is a no-op");
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_revocations", -1), 1);
    cr_assert_eq(admit(w.a, w.b, 5, now), 0, "seq <= cutoff admitted");
    cr_assert_eq(admit(w.a, w.b, 6, now), TSYNC_EREFUSED, "seq > cutoff refused");
    cr_assert(strstr(th_errmsg(), "revoked"), "%s", th_errmsg());
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_session(w.a, w.b->pk, now, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "revoked"), "%s", err);
    /* another site (incarnation) of the same key: not named, cutoff 0 */
    char e2[TSYNC__ERRLEN];
    uint8_t other_site[16];
    memset(other_site, 0x42, 16);
    cr_assert_eq(tsync__trust_admit(w.a, w.b->pk, other_site, 1, now, e2), TSYNC_EREFUSED);
    /* the revocation replicates to C, which enrols in the shop later */
    th_must_enrol(w.c, &w.shop, "till-c");
    cr_assert_eq(replicate_trust(w.a, w.c), 0);
    cr_assert_eq(admit(w.c, w.b, 5, now), 0);
    cr_assert_eq(admit(w.c, w.b, 6, now), TSYNC_EREFUSED);
    /* a later revocation governs (the admin corrects the cutoff), in either arrival order */
    cut.seq = 8;
    uint8_t *v2 = th_rev_make(&w.shop, w.b->pk, &cut, 1, now + 1000, &len);
    cr_assert_eq(import(w.a, v2, len), 0);
    cr_assert_eq(admit(w.a, w.b, 8, now), 0);
    cr_assert_eq(admit(w.a, w.b, 9, now), TSYNC_EREFUSED);
    /* B cannot come back with a renewed certificate of the revoked key */
    cr_assert_eq(replicate_trust(w.a, w.b), 0);
    cr_assert_eq(th_enrol(w.b, &w.shop, "till-b", 400, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "revoked"), "%s", th_errmsg());
    free(v);
    free(v2);
    world_close(&w);
}

Test(trust, revoke_needs_an_enrolled_database_and_a_revocation)
{
    world w;
    world_open(&w);
    size_t len;
    uint8_t *v = th_rev_make(&w.shop, w.b->pk, NULL, 0, now_ms(), &len);
    cr_assert_eq(tsync__trust_revoke(w.a, v, len), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "not enrolled"), "%s", th_errmsg());
    th_must_enrol(w.a, &w.shop, "till-a");
    uint64_t now = now_ms();
    uint8_t *c = th_cert_make(&w.shop, w.b->pk, "till-b", now, now + DAY, &len);
    cr_assert_eq(tsync__trust_revoke(w.a, c, len), TSYNC_EINVAL);
    free(c);
    free(v);
    world_close(&w);
}

Test(trust, enrol_refuses_database_with_foreign_batches)
{
    world w;
    world_open(&w);
    /* C sells while nobody is enrolled; A merges C's batches */
    th_exec(w.c, "INSERT INTO products(id, name, price) VALUES('p1', 'Tea', 200)");
    th_seal(w.c);
    cr_assert_eq(th_sync(w.c, w.a), 0, "%s", th_errmsg());
    /* A's own sales before enrolment are no obstacle */
    th_exec(w.a, "INSERT INTO products(id, name, price) VALUES('p2', 'Coffee', 250)");
    th_seal(w.a);
    char *before = th_text(w.a, "SELECT group_concat(name) FROM sqlite_master");
    cr_assert_eq(th_enrol(w.a, &w.shop, "till-a", 365, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "would refuse"), "%s", th_errmsg());
    cr_assert_eq(tsync__trust_enrolled(w.a, NULL), 0, "nothing changed");
    char *after = th_text(w.a, "SELECT group_concat(name) FROM sqlite_master");
    cr_assert_str_eq(before, after, "not even the trust tables were created");
    free(before), free(after);

    /* with C's certificate of the shop given too, A enrols */
    uint64_t now = tsync__now_ms(w.a);
    size_t la, lc;
    uint8_t *ca = th_cert_make(&w.shop, w.a->pk, "till-a", now - DAY, now + YEAR, &la);
    uint8_t *cc = th_cert_make(&w.shop, w.c->pk, "till-c", now - DAY, now + YEAR, &lc);
    const uint8_t *recs[2] = {ca, cc};
    size_t lens[2] = {la, lc};
    /* ... but not when C was revoked with a cutoff below what A holds of it */
    uint8_t *v = th_rev_make(&w.shop, w.c->pk, NULL, 0, now, &lc);
    cr_assert_eq(import(w.a, v, lc), 0, "a database not enrolled keeps records of any shop");
    cr_assert_eq(tsync__trust_enrol(w.a, recs, lens, 2, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "revoked"), "%s", th_errmsg());
    cr_assert_eq(tsync__trust_enrolled(w.a, NULL), 0);
    th_exec(w.a, "DELETE FROM tsync_revocations");
    cr_assert_eq(tsync__trust_enrol(w.a, recs, lens, 2, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(admit(w.a, w.c, 1, now), 0);
    free(ca), free(cc), free(v);
    world_close(&w);
}

Test(trust, enrol_with_certificate_stored_before)
{
    /* A database not yet enrolled keeps records of any shop (say, from bundles); enrolment keeps
     * those of its shop and drops the rest. */
    world w;
    world_open(&w);
    th_exec(w.c, "INSERT INTO products(id, name) VALUES('p1', 'Tea')");
    th_seal(w.c);
    cr_assert_eq(th_sync(w.c, w.a), 0);
    uint64_t now = now_ms();
    size_t l1, l2;
    uint8_t *cc = th_cert_make(&w.shop, w.c->pk, "till-c", now - DAY, now + YEAR, &l1);
    uint8_t *cx = th_cert_make(&w.other, w.b->pk, "till-x", now - DAY, now + YEAR, &l2);
    cr_assert_eq(import(w.a, cc, l1), 0);
    cr_assert_eq(import(w.a, cx, l2), 0);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2);
    th_must_enrol(w.a, &w.shop, "till-a");
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_certs", -1), 2, "own + C's; X dropped");
    cr_assert_eq(admit(w.a, w.c, 1, now), 0);
    cr_assert_eq(admit(w.a, w.b, 1, now), TSYNC_EREFUSED);
    free(cc), free(cx);
    world_close(&w);
}

Test(trust, tampered_records_refused_and_change_nothing)
{
    world w;
    world_open(&w);
    uint64_t now = now_ms();
    size_t len;
    uint8_t *c = th_cert_make(&w.shop, w.a->pk, "till-a", now - DAY, now + YEAR, &len);
    const uint8_t *recs[1] = {c};
    for (size_t i = 0; i < len; i += 7) {
        c[i] ^= 0x04;
        int rc = tsync__trust_enrol(w.a, recs, &len, 1, NULL);
        cr_assert(rc == TSYNC_ECORRUPT || rc == TSYNC_EBADSIG || rc == TSYNC_EVERSION,
                  "byte %zu: rc %d", i, rc);
        cr_assert_eq(tsync__trust_enrolled(w.a, NULL), 0);
        c[i] ^= 0x04;
    }
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, NULL), 0, "%s", th_errmsg());
    /* a request and a revocation are not enrolment records */
    uint8_t *req;
    size_t rlen;
    cr_assert_eq(tsync__trust_request(w.b, NULL, &req, &rlen), 0);
    recs[0] = req;
    cr_assert_eq(tsync__trust_enrol(w.b, recs, &rlen, 1, NULL), TSYNC_EINVAL);
    cr_assert_eq(import(w.a, req, rlen), TSYNC_EREFUSED);
    req[rlen - 1] ^= 1;
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(req, rlen, &r, &a), TSYNC_EBADSIG, "tampered request");
    tsync__arena_free(&a);
    free(req);
    /* tampered revocation */
    uint8_t *v = th_rev_make(&w.shop, w.b->pk, NULL, 0, now, &len);
    v[len - 70] ^= 0x01; /* in the admin key */
    cr_assert_neq(tsync__trust_revoke(w.a, v, len), 0);
    cr_assert_neq(import(w.a, v, len), 0);
    cr_assert_eq(th_int(w.a, "SELECT count(*) FROM tsync_revocations", -1), 0);
    free(v);
    free(c);
    world_close(&w);
}

Test(trust, enrol_needs_a_certificate_of_this_device)
{
    world w;
    world_open(&w);
    uint64_t now = now_ms();
    size_t len;
    uint8_t *cb = th_cert_make(&w.shop, w.b->pk, "till-b", now - DAY, now + YEAR, &len);
    const uint8_t *recs[1] = {cb};
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, NULL), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "this device's key"), "%s", th_errmsg());
    cr_assert_eq(tsync__trust_enrolled(w.a, NULL), 0);
    /* once enrolled, another device's certificate alone installs fine */
    th_must_enrol(w.a, &w.shop, "till-a");
    tsync__enrol_result res;
    cr_assert_eq(tsync__trust_enrol(w.a, recs, &len, 1, &res), 0, "%s", th_errmsg());
    cr_assert_eq(res.own, 0);
    cr_assert_eq(res.added, 1);
    cr_assert_eq(admit(w.a, w.b, 1, now), 0);
    free(cb);
    world_close(&w);
}

Test(trust, rotation_joins_admin_keys_in_any_order)
{
    world w;
    world_open(&w);
    tsync__shopkey k0 = w.shop;
    uint8_t seed[32];
    memset(seed, 0x33, 32);
    tsync__shopkey k1, k2;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__shopkey_init(&k1, seed, k0.shop_id, k0.name, k0.name_len, T0, err), 0);
    memset(seed, 0x44, 32);
    cr_assert_eq(tsync__shopkey_init(&k2, seed, k0.shop_id, k0.name, k0.name_len, T0, err), 0);
    uint64_t now = now_ms();
    size_t l01, l12, lb, lc;
    uint8_t *r01 = rot_make(&k0, &k1, now, &l01);
    uint8_t *r12 = rot_make(&k1, &k2, now + 1, &l12);
    th_must_enrol(w.a, &k0, "till-a");                                              /* old key */
    uint8_t *cb = th_cert_make(&k2, w.b->pk, "till-b", now - DAY, now + YEAR, &lb); /* newest key */
    cr_assert_eq(import(w.a, cb, lb), TSYNC_EREFUSED, "k2 is not known yet");
    /* the second rotation arrives first: kept, not joined */
    cr_assert_eq(import(w.a, r12, l12), 0);
    cr_assert_eq(import(w.a, cb, lb), TSYNC_EREFUSED);
    cr_assert_eq(import(w.a, r01, l01), 0);
    cr_assert_eq(import(w.a, cb, lb), 0, "%s", th_errmsg());
    cr_assert_eq(admit(w.a, w.b, 1, now), 0);
    /* a database enrolled with the newest key accepts certificates of the oldest once it has the
     * rotations */
    th_must_enrol(w.c, &k2, "till-c");
    uint8_t *ca = th_cert_make(&k0, w.a->pk, "till-a", now - DAY, now + YEAR, &lc);
    cr_assert_eq(import(w.c, ca, lc), TSYNC_EREFUSED);
    cr_assert_eq(replicate_trust(w.a, w.c), 0, "export orders rotations first");
    cr_assert_eq(admit(w.c, w.a, 1, now), 0);
    char *js;
    cr_assert_eq(tsync__trust_json(w.c, &js), 0);
    cr_assert(strstr(js, "\"enrolled\": true"), "%s", js);
    free(js);
    cr_assert_eq(th_int(w.c, "SELECT count(*) FROM tsync_rotations WHERE joined=1", -1), 2);
    /* a rotation of another shop is refused */
    tsync__shopkey o2 = th_shop_make(9, 2, "Other Shop");
    uint8_t *ro = rot_make(&w.other, &o2, now, &l01);
    cr_assert_eq(import(w.c, ro, l01), TSYNC_EREFUSED);
    free(ro), free(r01), free(r12), free(cb), free(ca);
    world_close(&w);
}

Test(trust, enrol_with_rotation_given_alongside)
{
    /* The till gets its certificate signed by the new key, plus the rotation record, and already
     * holds a certificate by the old key of another till. */
    world w;
    world_open(&w);
    tsync__shopkey k1 = th_shop_make(0x55, 1, "Corner Shop");
    uint64_t now = now_ms();
    size_t lr, la;
    uint8_t *rot = rot_make(&w.shop, &k1, now, &lr);
    uint8_t *ca = th_cert_make(&k1, w.a->pk, "till-a", now - DAY, now + YEAR, &la);
    const uint8_t *recs[2] = {ca, rot};
    size_t lens[2] = {la, lr};
    tsync__enrol_result res;
    cr_assert_eq(tsync__trust_enrol(w.a, recs, lens, 2, &res), 0, "%s", th_errmsg());
    cr_assert_eq(res.added, 2);
    size_t lb;
    uint8_t *cb = th_cert_make(&w.shop, w.b->pk, "till-b", now - DAY, now + YEAR, &lb);
    cr_assert_eq(import(w.a, cb, lb), 0, "%s", th_errmsg());
    free(rot), free(ca), free(cb);
    world_close(&w);
}

Test(trust, import_inside_an_open_transaction)
{
    /* merge will call import inside its own transaction: import must not begin or commit */
    world w;
    world_open(&w);
    th_must_enrol(w.a, &w.shop, "till-a");
    uint64_t now = now_ms();
    size_t len;
    uint8_t *cb = th_cert_make(&w.shop, w.b->pk, "till-b", now - DAY, now + YEAR, &len);
    th_exec(w.a, "BEGIN IMMEDIATE");
    cr_assert_eq(import(w.a, cb, len), 0, "%s", th_errmsg());
    cr_assert_eq(sqlite3_get_autocommit(tsync_store_sqlite(w.a)), 0, "still in the transaction");
    th_exec(w.a, "ROLLBACK");
    cr_assert_eq(admit(w.a, w.b, 1, now), TSYNC_EREFUSED, "rolled back with the caller");
    free(cb);
    world_close(&w);
}

Test(trust, shop_key_file)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "shop.key");
    tsync__shopkey k;
    cr_assert_eq(tsync__shopkey_create(path, "Corner Shop", T0, &k), 0, "%s", th_errmsg());
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "mode %o", sb.st_mode & 0777);
    tsync__shopkey back;
    cr_assert_eq(tsync__shopkey_load(path, &back), 0, "%s", th_errmsg());
    cr_assert_eq(memcmp(back.sk, k.sk, 64), 0);
    cr_assert_str_eq(back.name, "Corner Shop");
    /* never overwritten */
    uint8_t before[512];
    FILE *f = fopen(path, "rb");
    size_t n = fread(before, 1, sizeof before, f);
    fclose(f);
    cr_assert_eq(tsync__shopkey_create(path, "Another", T0, NULL), TSYNC_EEXISTS);
    cr_assert_eq(tsync__shopkey_write(path, &k), TSYNC_EEXISTS);
    uint8_t after[512];
    f = fopen(path, "rb");
    cr_assert_eq(fread(after, 1, sizeof after, f), n);
    fclose(f);
    cr_assert_eq(memcmp(before, after, n), 0);
    /* readable by others: refused, with the fix in the message */
    chmod(path, 0644);
    cr_assert_eq(tsync__shopkey_load(path, &back), TSYNC_EINVAL);
    cr_assert(strstr(th_errmsg(), "chmod 600"), "%s", th_errmsg());
    chmod(path, 0600);
    /* damaged */
    f = fopen(path, "r+b");
    fseek(f, 20, SEEK_SET);
    fputc(before[20] ^ 1, f);
    fclose(f);
    cr_assert_eq(tsync__shopkey_load(path, &back), TSYNC_ECORRUPT);
    cr_assert_eq(tsync__shopkey_load(th_path(dir, "missing.key"), &back), TSYNC_ENOTFOUND);
    /* bad name: nothing written */
    cr_assert_eq(tsync__shopkey_create(th_path(dir, "bad.key"), "", T0, NULL), TSYNC_EINVAL);
    cr_assert_neq(access(th_path(dir, "bad.key"), F_OK), 0);
    tsync__shopkey_wipe(&k);
    tsync__shopkey_wipe(&back);
    th_rmdir(dir);
    free(dir);
}

Test(trust, cutoffs_from_a_database)
{
    world w;
    world_open(&w);
    th_exec(w.b, "INSERT INTO products(id, name) VALUES('p1', 'Tea')");
    th_seal(w.b);
    th_exec(w.b, "INSERT INTO products(id, name) VALUES('p2', 'Tea')");
    th_seal(w.b);
    cr_assert_eq(th_sync(w.b, w.a), 0);
    tsync__cutoff *cuts;
    uint32_t n;
    cr_assert_eq(tsync__trust_cutoffs_from_db(th_path(w.dir, "a.db"), w.b->pk, &cuts, &n), 0, "%s",
                 th_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(memcmp(cuts[0].site, w.b->site, 16), 0);
    cr_assert_eq(cuts[0].seq, 2);
    free(cuts);
    cr_assert_eq(tsync__trust_cutoffs_from_db(th_path(w.dir, "a.db"), w.c->pk, &cuts, &n), 0);
    cr_assert_eq(n, 0);
    free(cuts);
    cr_assert_eq(tsync__trust_cutoffs_from_db(th_path(w.dir, "nope.db"), w.c->pk, &cuts, &n),
                 TSYNC_ENOTFOUND);
    world_close(&w);
}

/* ================================================================ test vectors (docs/TRUST.md) */

static char *tohex(const uint8_t *p, size_t n)
{
    char *s = malloc(2 * n + 1);
    for (size_t i = 0; i < n; i++) snprintf(s + 2 * i, 3, "%02x", p[i]);
    return s;
}

Test(trust_format, test_vectors)
{
    /* Ed25519 signatures are deterministic, so fixed seeds give fixed bytes. */
    uint8_t seed[32], id[16], dseed[32], dpk[32], dsk[64];
    memset(seed, 1, 32);
    memset(id, 0xab, 16);
    memset(dseed, 2, 32);
    crypto_sign_seed_keypair(dpk, dsk, dseed);
    tsync__shopkey k;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__shopkey_init(&k, seed, id, "Corner Shop", 11, T0, err), 0);
    char *h = tohex(k.pk, 32);
    cr_assert_str_eq(h, "8a88e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5c");
    free(h);
    h = tohex(dpk, 32);
    cr_assert_str_eq(h, "8139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b394");
    free(h);
    size_t n;
    uint8_t *o = req_make(dsk, "till-1", &n);
    h = tohex(o, n);
    cr_assert_str_eq(h, "960101c4208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f"
                        "5b8fc9b394a674696c6c2d31cf00000199c82cc000c440b2ff1db8f977fb60b3"
                        "f81db8cda41cf3ca6e3b2519986252333e4eb25853fded0f320c017af7da8765"
                        "348307db2303f57c954b16fde3df98e82f58f5956d5f0d");
    free(h), free(o);
    o = th_cert_make(&k, dpk, "till-1", T0, T0 + YEAR, &n);
    h = tohex(o, n);
    cr_assert_str_eq(h, "9a0201c410ababababababababababababababababab436f726e65722053686f"
                        "70c4208139770ea87d175f56a35466c34c7ecccb8d8a91b4ee37a25df60f5b8f"
                        "c9b394a674696c6c2d31cf00000199c82cc000cf000001a11fddec00c4208a88"
                        "e3dd7409f195fd52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5cc440"
                        "d40f152a58e8f9946a4a3c256adabb9ef13c8a5a866fa2124daad363d8e007d6"
                        "02f01b89d491a2e552312bb80ec63374acc82d1546f2c31ff86cfddb62c59e00");
    free(h), free(o);
    tsync__cutoff cu = {.seq = 17};
    memset(cu.site, 0x5a, 16);
    o = th_rev_make(&k, dpk, &cu, 1, T0 + DAY, &n);
    h = tohex(o, n);
    cr_assert_str_eq(h, "980301c410ababababababababababababababababc4208139770ea87d175f56"
                        "a35466c34c7ecccb8d8a91b4ee37a25df60f5b8fc9b3949192c4105a5a5a5a5a"
                        "5a5a5a5a5a5a5a5a5a5a5a11cf00000199cd531c00c4208a88e3dd7409f195fd"
                        "52db2d3cba5d72ca6709bf1d94121bf3748801b40f6f5cc440abf7de6c8a1624"
                        "1268929686d176a1a55276bc667073ecc9e0b980abfd00ab2d44edc07ce71f88"
                        "2d733b1d433ba55749927591cb7bbc1ec5d4641d3f0abae409");
    free(h), free(o);
}

Test(trust_format, largest_revocation_fits_the_limit)
{
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    uint8_t pk[32], sk[64];
    crypto_sign_keypair(pk, sk);
    tsync__cutoff cuts[TSYNC__TRUST_MAX_CUTOFFS + 1];
    for (uint32_t i = 0; i <= TSYNC__TRUST_MAX_CUTOFFS; i++) {
        memset(cuts[i].site, 0, 16);
        cuts[i].site[0] = (uint8_t)(i >> 8), cuts[i].site[1] = (uint8_t)i;
        cuts[i].seq = UINT64_MAX;
    }
    size_t len;
    uint8_t *v = th_rev_make(&k, pk, cuts, TSYNC__TRUST_MAX_CUTOFFS, UINT64_MAX, &len);
    cr_assert_leq(len, TSYNC__TRUST_MAX_BYTES);
    cr_assert_eq(len, 3751, "docs/TRUST.md quotes this size");
    tsync__arena a = {0};
    tsync__trust_rec r;
    cr_assert_eq(decode(v, len, &r, &a), 0);
    cr_assert_eq(r.u.rev.ncutoffs, TSYNC__TRUST_MAX_CUTOFFS);
    tsync__arena_free(&a);
    free(v);
    tsync__revocation big = {.ncutoffs = TSYNC__TRUST_MAX_CUTOFFS + 1, .cutoffs = cuts};
    memcpy(big.admin_pk, k.pk, 32);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__revocation_sign(&big, k.sk, &out, &len, err), TSYNC_EINVAL);
}
