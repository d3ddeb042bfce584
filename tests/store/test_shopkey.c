/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_shopkey.c — the shop admin key file, version 2 (codec/shopkey.c,
 * store/shopkey.c, store/api_shopkey.c; docs/RELAY_KEYS.md "The admin's key file"): the image
 * round-trips with its epochs and devices and refuses damage and disorder; a version 1 file reads,
 * signs without being rewritten, and becomes version 2 (the same admin key and shop, the data key
 * of epoch 1 kept) at the first data key; certifying and revoking through the API keep the
 * devices in the file, and the records they return give each till the epochs it should hold.
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "store/internal.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

TestSuite(shopkey, .fini = th_cleanup);

static uint8_t *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "open %s", path);
    static uint8_t buf[1 << 16];
    *len = fread(buf, 1, sizeof buf, f);
    fclose(f);
    uint8_t *out = malloc(*len);
    memcpy(out, buf, *len);
    return out;
}

Test(shopkey, v2_image_round_trip_and_damage)
{
    tsync__shopkey k = th_shop_make(7, 8, "Corner Shop");
    tsync__shopkey_epoch ep[2] = {{.epoch = 1, .created_ms = TH_T0},
                                  {.epoch = 3, .created_ms = TH_T0 + TH_DAY}};
    memset(ep[0].key, 0x11, sizeof ep[0].key);
    memset(ep[1].key, 0x33, sizeof ep[1].key);
    tsync__shopkey_device dv[3] = {{.revoked = false}, {.revoked = true}, {.revoked = false}};
    for (int i = 0; i < 3; i++) memset(dv[i].pk, 0x40 + i, TSYNC__PK_BYTES);
    tsync__shopkey_ext x = {.version = 2, .epochs = ep, .nepochs = 2, .devices = dv, .ndevices = 3};
    uint8_t *img;
    size_t len;
    cr_assert_eq(tsync__shopkey_encode_ext(&k, &x, &img, &len), 0);
    cr_assert_eq(img[8], 2);

    tsync__shopkey back;
    tsync__shopkey_ext bx;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__shopkey_decode_ext(img, len, &back, &bx, err), 0, "%s", err);
    cr_assert_eq(memcmp(back.sk, k.sk, 64), 0);
    cr_assert_str_eq(back.name, "Corner Shop");
    cr_assert_eq(bx.version, 2);
    cr_assert_eq(bx.nepochs, 2);
    cr_assert_eq(bx.epochs[1].epoch, 3);
    cr_assert_eq(bx.epochs[1].created_ms, TH_T0 + TH_DAY);
    cr_assert_eq(memcmp(bx.epochs[1].key, ep[1].key, 32), 0);
    cr_assert_eq(bx.ndevices, 3);
    cr_assert(bx.devices[1].revoked && !bx.devices[0].revoked && !bx.devices[2].revoked);
    cr_assert_eq(memcmp(bx.devices[2].pk, dv[2].pk, 32), 0);
    /* It re-encodes to the same bytes. */
    uint8_t *again;
    size_t alen;
    cr_assert_eq(tsync__shopkey_encode_ext(&back, &bx, &again, &alen), 0);
    cr_assert(alen == len && memcmp(again, img, len) == 0);
    free(again);
    tsync__shopkey_ext_free(&bx);
    cr_assert_null(bx.epochs);

    for (size_t i = 0; i < len; i++) {
        img[i] ^= 0x20;
        cr_assert_neq(tsync__shopkey_decode_ext(img, len, &back, &bx, err), 0, "byte %zu", i);
        cr_assert(err[0]);
        img[i] ^= 0x20;
    }
    for (size_t n = 0; n < len; n++)
        cr_assert_neq(tsync__shopkey_decode_ext(img, n, &back, &bx, err), 0, "truncated %zu", n);
    img[8] = 3;
    cr_assert_eq(tsync__shopkey_decode_ext(img, len, &back, &bx, err), TSYNC_EVERSION);
    sodium_memzero(img, len);
    free(img);

    /* Disorder is refused when encoding: devices not ascending, an epoch repeated, epoch 0. */
    memset(dv[2].pk, 0x40, TSYNC__PK_BYTES);
    cr_assert_eq(tsync__shopkey_encode_ext(&k, &x, &img, &len), TSYNC_EINVAL);
    memset(dv[2].pk, 0x42, TSYNC__PK_BYTES);
    ep[1].epoch = 1;
    cr_assert_eq(tsync__shopkey_encode_ext(&k, &x, &img, &len), TSYNC_EINVAL);
    ep[0].epoch = 0, ep[1].epoch = 2;
    cr_assert_eq(tsync__shopkey_encode_ext(&k, &x, &img, &len), TSYNC_EINVAL);
    tsync__shopkey_wipe(&k);
}

/* A device: a store with its key, and its enrolment request. */
static tsync_store *device(const char *dir, const char *name, uint8_t **req, size_t *rlen)
{
    tsync_store *s = th_open(th_path(dir, name));
    cr_assert_eq(tsync_trust_request(req, rlen, s, name), 0, "%s", th_errmsg());
    return s;
}

static void install(tsync_store *s, const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    const uint8_t *recs[2] = {a, b};
    size_t lens[2] = {alen, blen};
    tsync_enrol_report r = TSYNC_ENROL_REPORT_INIT;
    cr_assert_eq(tsync_trust_enrol(&r, s, recs, lens, b ? 2 : 1), 0, "%s", th_errmsg());
}

static void epochs_are(tsync_store *s, uint32_t held, uint32_t latest)
{
    uint32_t h, l;
    cr_assert_eq(tsync_store_data_key_epoch(&h, &l, s), 0, "%s", th_errmsg());
    cr_assert_eq(h, held, "held %u, want %u", h, held);
    cr_assert_eq(l, latest, "latest %u, want %u", l, latest);
}

static void state_is(const tsync_shop_key *k, uint32_t version, uint32_t epoch, size_t live,
                     size_t dead)
{
    uint32_t v, e;
    size_t n, r;
    cr_assert_eq(tsync_shop_key_file_state(k, &v, &e, &n, &r), 0);
    cr_assert(v == version && e == epoch && n == live && r == dead,
              "file state v%u epoch %u %zu/%zu, want v%u epoch %u %zu/%zu", v, e, n, r, version,
              epoch, live, dead);
}

Test(shopkey, v1_file_reads_signs_and_upgrades_at_the_first_data_key)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "old.key");
    tsync__shopkey old = th_shop_make(3, 4, "Old Shop");
    cr_assert_eq(tsync__shopkey_write(path, &old), 0, "%s", th_errmsg()); /* version 1 */
    size_t v1len;
    uint8_t *v1 = slurp(path, &v1len);
    cr_assert_eq(v1[8], 1);

    tsync_shop_key *k;
    cr_assert_eq(tsync_shop_key_load(&k, path), 0, "%s", th_errmsg());
    state_is(k, 1, 0, 0, 0);
    uint8_t *req, *cert;
    size_t rlen, clen;
    tsync_store *a = device(dir, "a.db", &req, &rlen);
    /* Signing as before leaves a version 1 file alone. */
    cr_assert_eq(tsync_shop_key_sign_request(&cert, &clen, k, req, rlen, NULL), 0);
    install(a, cert, clen, NULL, 0);
    free(cert);
    size_t n;
    uint8_t *now = slurp(path, &n);
    cr_assert(n == v1len && memcmp(now, v1, n) == 0, "signing rewrote the version 1 file");
    free(now);
    epochs_are(a, 0, 0);

    /* The first data key makes epoch 1 and rewrites the file as version 2. */
    uint8_t *dk;
    size_t dlen;
    cr_assert_eq(tsync_shop_key_data_key(&dk, &dlen, k, (const uint8_t(*)[32])a->pk, 1), 0, "%s",
                 th_errmsg());
    state_is(k, 2, 1, 1, 0);
    install(a, dk, dlen, NULL, 0);
    free(dk);
    epochs_are(a, 1, 1);
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600);

    /* The file on disk: the same admin key and shop, epoch 1 and device a. */
    tsync__shopkey back;
    tsync__shopkey_ext x;
    cr_assert_eq(tsync__shopkey_load_ext(path, &back, &x), 0, "%s", th_errmsg());
    cr_assert_eq(memcmp(back.sk, old.sk, 64), 0);
    cr_assert_eq(memcmp(back.shop_id, old.shop_id, 16), 0);
    cr_assert_eq(x.version, 2);
    cr_assert_eq(x.nepochs, 1);
    cr_assert_eq(x.ndevices, 1);
    cr_assert_eq(memcmp(x.devices[0].pk, a->pk, 32), 0);
    /* The till opens the very key the file keeps. */
    tsync__held_key *held;
    uint32_t nheld, latest;
    cr_assert_eq(tsync__data_keys_held(a, &held, &nheld, &latest), 0, "%s", th_errmsg());
    cr_assert(nheld == 1 && held[0].epoch == 1 && latest == 1);
    cr_assert_eq(memcmp(held[0].key, x.epochs[0].key, 32), 0);
    tsync__held_keys_free(held, nheld);
    tsync__shopkey_ext_free(&x);
    tsync__shopkey_wipe(&back);

    /* Reloaded, it is version 2 with the same epoch; a second data key keeps the epoch. */
    tsync_shop_key_free(k);
    cr_assert_eq(tsync_shop_key_load(&k, path), 0, "%s", th_errmsg());
    state_is(k, 2, 1, 1, 0);
    cr_assert_eq(tsync_shop_key_data_key(&dk, &dlen, k, NULL, 0), 0, "%s", th_errmsg());
    free(dk);
    state_is(k, 2, 1, 1, 0);

    tsync_shop_key_free(k);
    tsync_store_free(a);
    free(req);
    free(v1);
    tsync__shopkey_wipe(&old);
}

Test(shopkey, certify_and_revoke_keep_devices_and_rotate_the_epoch)
{
    char *dir = th_tmpdir_auto();
    const char *path = th_path(dir, "shop.key");
    tsync_shop_key *k;
    cr_assert_eq(tsync_shop_key_create(&k, path, "Corner Shop"), 0, "%s", th_errmsg());
    state_is(k, 2, 1, 0, 0);
    uint8_t *req[2], *cert[2], *dk[2];
    size_t rlen[2], clen[2], dlen[2];
    tsync_store *s[2];
    for (int i = 0; i < 2; i++) {
        s[i] = device(dir, i ? "b.db" : "a.db", &req[i], &rlen[i]);
        cr_assert_eq(
            tsync_shop_key_certify(&cert[i], &clen[i], &dk[i], &dlen[i], k, req[i], rlen[i], NULL),
            0, "%s", th_errmsg());
        install(s[i], cert[i], clen[i], dk[i], dlen[i]);
        epochs_are(s[i], 1, 1);
        state_is(k, 2, 1, (size_t)i + 1, 0);
    }

    /* Revoking a: epoch 2 sealed to b only. */
    uint8_t *rev, *dk2;
    size_t revlen, dk2len;
    cr_assert_eq(tsync_shop_key_revoke_device(&rev, &revlen, &dk2, &dk2len, k, s[0]->pk, NULL, 0),
                 0, "%s", th_errmsg());
    cr_assert_not_null(dk2);
    state_is(k, 2, 2, 1, 1);
    cr_assert_eq(tsync_trust_revoke(s[1], rev, revlen), 0, "%s", th_errmsg());
    install(s[1], dk2, dk2len, NULL, 0);
    epochs_are(s[1], 2, 2);
    install(s[0], dk[1], dlen[1], dk2, dk2len);
    epochs_are(s[0], 1, 2);
    /* A second revocation of a (a corrected cutoff) makes no new epoch. */
    uint8_t *rev2, *dk3;
    size_t rev2len, dk3len;
    cr_assert_eq(tsync_shop_key_revoke_device(&rev2, &rev2len, &dk3, &dk3len, k, s[0]->pk, NULL, 0),
                 0);
    state_is(k, 2, 2, 1, 1);
    free(rev2);
    free(dk3);

    /* a is not certified again; nothing changes. */
    uint8_t *c, *d;
    size_t cl, dl;
    cr_assert_eq(tsync_shop_key_certify(&c, &cl, &d, &dl, k, req[0], rlen[0], NULL), TSYNC_EINVAL);
    cr_assert_null(c);
    cr_assert_null(d);
    cr_assert(strstr(th_errmsg(), "revoked"), "%s", th_errmsg());

    /* Revoking b too leaves nobody to seal epoch 3 to: no record, and no error. */
    cr_assert_eq(tsync_shop_key_revoke_device(&rev2, &rev2len, &dk3, &dk3len, k, s[1]->pk, NULL, 0),
                 0, "%s", th_errmsg());
    cr_assert_null(dk3);
    cr_assert_eq(dk3len, 0);
    state_is(k, 2, 3, 0, 2);
    free(rev2);

    /* The devices and epochs survive a reload. */
    tsync_shop_key_free(k);
    cr_assert_eq(tsync_shop_key_load(&k, path), 0, "%s", th_errmsg());
    state_is(k, 2, 3, 0, 2);

    /* More than 32 devices: refused with the record's limit, the file unchanged. */
    uint8_t many[33][32];
    for (int i = 0; i < 33; i++) memset(many[i], i + 1, 32);
    size_t before_len;
    uint8_t *before = slurp(path, &before_len);
    cr_assert_eq(tsync_shop_key_data_key(&d, &dl, k, (const uint8_t(*)[32])many, 33), TSYNC_EINVAL);
    cr_assert(strstr(th_errmsg(), "more than the 32"), "%s", th_errmsg());
    size_t after_len;
    uint8_t *after = slurp(path, &after_len);
    cr_assert(after_len == before_len && memcmp(after, before, after_len) == 0);
    state_is(k, 2, 3, 0, 2);
    free(before);
    free(after);

    for (int i = 0; i < 2; i++) {
        free(req[i]), free(cert[i]), free(dk[i]);
        tsync_store_free(s[i]);
    }
    free(rev);
    free(dk2);
    tsync_shop_key_free(k);
}
