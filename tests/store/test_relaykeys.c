/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_relaykeys.c — data keys and relay grants (codec/cert.c, codec/datakey.c,
 * store/relaykeys.c): the records sign, decode to what was signed and refuse tampering and bad
 * fields; a data key sealed to a device opens with that device's key only; the records replicate
 * between two tills of a shop through a bundle (th_sync) and each till opens the epochs sealed to
 * it; after a revocation the admin's new epoch is not sealed to the revoked till, which keeps
 * opening the old epoch (and the envelopes sealed with it) but not the new one; a till of another
 * shop refuses the records.
 */
#include <criterion/criterion.h>
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "codec/envelope.h"
#include "store/internal.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"

TestSuite(relaykeys, .fini = th_cleanup);

/* A DATA KEY record of epoch sealing key to the n devices given, signed by shop k. */
static uint8_t *dk_make(const tsync__shopkey *k, uint32_t epoch, const uint8_t *key,
                        tsync_store *const *devs, uint32_t n, size_t *len)
{
    tsync__dk_seal seals[8];
    cr_assert(n <= 8);
    for (uint32_t i = 0; i < n; i++) {
        memcpy(seals[i].device_pk, devs[i]->pk, TSYNC__PK_BYTES);
        cr_assert_eq(tsync__data_key_seal(key, devs[i]->pk, seals[i].sealed), 0);
    }
    tsync__data_key_rec d = {
        .epoch = epoch, .nseals = n, .seals = seals, .issued_ms = TH_T0 + epoch};
    memcpy(d.shop_id, k->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(d.admin_pk, k->pk, TSYNC__PK_BYTES);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__data_key_sign(&d, k->sk, &out, len, err), 0, "%s", err);
    return out;
}

static uint8_t *grant_make(const tsync__shopkey *k, const char *addr, uint64_t quota, size_t *len)
{
    tsync__grant_relay r = {.addr = addr, .addr_len = (uint32_t)strlen(addr)};
    memset(r.pk, 0x5a, sizeof r.pk);
    tsync__grant_rec g = {.nrelays = 1,
                          .relays = &r,
                          .quota_mb = quota,
                          .expires_ms = TH_T0 + 30 * TH_DAY,
                          .issued_ms = TH_T0};
    memcpy(g.shop_id, k->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(g.admin_pk, k->pk, TSYNC__PK_BYTES);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__grant_sign(&g, k->sk, &out, len, err), 0, "%s", err);
    return out;
}

static void import_ok(tsync_store *s, const uint8_t *rec, size_t len)
{
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_import(s, rec, len, err), 0, "%s", err);
}

/* The epochs s holds, as "1,2" (static buffer), and the latest epoch of the shop. */
static const char *held(tsync_store *s, uint32_t *latest, uint8_t key_of_last[32])
{
    static char buf[64];
    tsync__held_key *v;
    uint32_t n;
    cr_assert_eq(tsync__data_keys_held(s, &v, &n, latest), 0, "%s", th_errmsg());
    buf[0] = '\0';
    for (uint32_t i = 0; i < n; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%u", i ? "," : "", v[i].epoch);
    if (n && key_of_last) memcpy(key_of_last, v[n - 1].key, 32);
    tsync__held_keys_free(v, n);
    return buf;
}

Test(relaykeys, data_key_record_round_trip_and_tamper)
{
    TH_AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    tsync__shopkey k = th_shop_make(1, 1, "Shop");
    uint8_t key[32];
    randombytes_buf(key, sizeof key);
    tsync_store *devs[2] = {b, a}; /* any order: written sorted */
    size_t len;
    uint8_t *rec = dk_make(&k, 3, key, devs, 2, &len);

    tsync__trust_rec r;
    tsync__arena ar = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_decode(rec, len, &r, &ar, err), 0, "%s", err);
    cr_assert_eq(r.kind, TSYNC__T_DATA_KEY);
    cr_assert_eq(r.u.dkey.epoch, 3);
    cr_assert_eq(r.u.dkey.nseals, 2);
    cr_assert(memcmp(r.u.dkey.seals[0].device_pk, r.u.dkey.seals[1].device_pk, 32) < 0);
    uint8_t got[32];
    cr_assert_eq(tsync__data_key_open(&r.u.dkey, a->sk, got), 0);
    cr_assert(memcmp(got, key, 32) == 0);
    cr_assert_eq(tsync__data_key_open(&r.u.dkey, b->sk, got), 0);
    cr_assert(memcmp(got, key, 32) == 0);
    cr_assert_eq(tsync__data_key_open(&r.u.dkey, c->sk, got), TSYNC_ENOTFOUND);
    /* A seal copied under another device's name does not open for that device. */
    memcpy(r.u.dkey.seals[0].sealed, r.u.dkey.seals[1].sealed, TSYNC__DATA_KEY_SEALED);
    cr_assert_eq(tsync__data_key_open(&r.u.dkey, memcmp(a->pk, b->pk, 32) < 0 ? a->sk : b->sk, got),
                 TSYNC_EBADSIG);
    tsync__arena_free(&ar);

    /* Every flipped byte: refused (malformed, or the signature). */
    for (size_t i = 0; i < len; i++) {
        rec[i] ^= 0x01;
        int rc = tsync__trust_decode(rec, len, &r, &ar, err);
        cr_assert_neq(rc, 0, "flip at %zu accepted", i);
        cr_assert(err[0] && !strchr(err, '\n'));
        tsync__arena_free(&ar);
        rec[i] ^= 0x01;
    }
    /* Armour round trip under its own label. */
    char *text;
    cr_assert_eq(tsync__armour(TSYNC__T_DATA_KEY, rec, len, NULL, &text), 0);
    cr_assert(strstr(text, "BEGIN TILLSYNC DATA KEY"), "%s", text);
    free(text);
    free(rec);

    /* Bad fields refused by the signer. */
    tsync__dk_seal s1;
    memcpy(s1.device_pk, k.pk, 32);
    tsync__data_key_rec bad = {.epoch = 1, .nseals = 1, .seals = &s1, .issued_ms = 1};
    memcpy(bad.admin_pk, k.pk, 32);
    uint8_t *out;
    cr_assert_eq(tsync__data_key_sign(&bad, k.sk, &out, &len, err), TSYNC_EINVAL);
    memcpy(s1.device_pk, a->pk, 32);
    bad.epoch = 0;
    cr_assert_eq(tsync__data_key_sign(&bad, k.sk, &out, &len, err), TSYNC_EINVAL);
    bad.epoch = 1;
    bad.nseals = 0;
    cr_assert_eq(tsync__data_key_sign(&bad, k.sk, &out, &len, err), TSYNC_EINVAL);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

Test(relaykeys, grant_record_round_trip_and_refusals)
{
    tsync__shopkey k = th_shop_make(2, 2, "Shop");
    size_t len;
    uint8_t *rec = grant_make(&k, "tcp://relay.example:7400", 512, &len);
    tsync__trust_rec r;
    tsync__arena ar = {0};
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__trust_decode(rec, len, &r, &ar, err), 0, "%s", err);
    cr_assert_eq(r.kind, TSYNC__T_GRANT);
    cr_assert_eq(r.u.grant.nrelays, 1);
    cr_assert_eq(r.u.grant.relays[0].addr_len, strlen("tcp://relay.example:7400"));
    cr_assert(memcmp(r.u.grant.relays[0].addr, "tcp://relay.example:7400", 24) == 0);
    cr_assert_eq(r.u.grant.quota_mb, 512);
    cr_assert_eq(r.u.grant.expires_ms, TH_T0 + 30 * TH_DAY);
    tsync__arena_free(&ar);
    for (size_t i = 0; i < len; i++) {
        rec[i] ^= 0x80;
        cr_assert_neq(tsync__trust_decode(rec, len, &r, &ar, err), 0, "flip at %zu", i);
        tsync__arena_free(&ar);
        rec[i] ^= 0x80;
    }
    free(rec);

    static const char *const bad_addr[] = {"relay.example:7400", "tcp://", "tcp://a b:1",
                                           "udp://x:1"};
    for (size_t i = 0; i < 4; i++) {
        tsync__grant_relay rl = {.addr = bad_addr[i], .addr_len = (uint32_t)strlen(bad_addr[i])};
        tsync__grant_rec g = {.nrelays = 1, .relays = &rl, .expires_ms = 2, .issued_ms = 1};
        memcpy(g.admin_pk, k.pk, 32);
        uint8_t *out;
        cr_assert_eq(tsync__grant_sign(&g, k.sk, &out, &len, err), TSYNC_EINVAL, "%s", bad_addr[i]);
    }
    tsync__grant_relay rl = {.addr = "tcp://x:1", .addr_len = 9};
    tsync__grant_rec g = {.nrelays = 1, .relays = &rl, .expires_ms = 5, .issued_ms = 5};
    memcpy(g.admin_pk, k.pk, 32);
    uint8_t *out;
    cr_assert_eq(tsync__grant_sign(&g, k.sk, &out, &len, err), TSYNC_EINVAL);
    cr_assert(strstr(err, "expires"), "%s", err);
}

Test(relaykeys, replicate_and_rotate_on_revocation)
{
    TH_AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    tsync_store *x = th_open_products(th_path(dir, "x.db")); /* another shop's till */
    tsync__shopkey k = th_shop_make(3, 3, "Shop");
    tsync__shopkey other = th_shop_make(4, 4, "Other");
    th_must_enrol(a, &k, "a");
    th_must_enrol(b, &k, "b");
    th_must_enrol(c, &k, "c");
    th_must_enrol(x, &other, "x");

    uint32_t latest;
    cr_assert_str_eq(held(a, &latest, NULL), "");
    cr_assert_eq(latest, 0);

    /* Epoch 1 sealed to a, b, c, and a grant: installed on a only, replicated by bundles. */
    uint8_t k1[32], k2[32];
    randombytes_buf(k1, 32);
    randombytes_buf(k2, 32);
    tsync_store *all[3] = {a, b, c};
    size_t l1, lg;
    uint8_t *r1 = dk_make(&k, 1, k1, all, 3, &l1);
    uint8_t *gr = grant_make(&k, "tcp://127.0.0.1:7400", 100, &lg);
    import_ok(a, r1, l1);
    import_ok(a, gr, lg);
    import_ok(a, r1, l1); /* a duplicate is a no-op */
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, c), 0, "%s", th_errmsg());
    uint8_t got[32];
    cr_assert_str_eq(held(b, &latest, got), "1");
    cr_assert_eq(latest, 1);
    cr_assert(memcmp(got, k1, 32) == 0);
    cr_assert_str_eq(held(c, &latest, got), "1");
    cr_assert(memcmp(got, k1, 32) == 0);
    uint8_t *gb;
    size_t gl;
    cr_assert_eq(tsync__grant_latest(c, &gb, &gl), 0, "%s", th_errmsg());
    cr_assert(gl == lg && memcmp(gb, gr, lg) == 0);
    free(gb);

    /* An envelope sealed by a with epoch 1 opens on c. */
    tsync__env_header h = {.first_seq = 1, .last_seq = 2, .epoch = 1};
    memcpy(h.shop_id, k.shop_id, 16);
    uint8_t *env1, *p;
    size_t env1_len, plen;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__env_seal(&h, k1, (const uint8_t *)"run", 3, &env1, &env1_len, err), 0);

    /* c is revoked; the admin's epoch 2 is sealed to a and b only. */
    size_t lrev, l2;
    uint8_t *rev = th_rev_make(&k, c->pk, NULL, 0, TH_T0 + 5, &lrev);
    import_ok(a, rev, lrev);
    tsync_store *rest[2] = {a, b};
    uint8_t *r2 = dk_make(&k, 2, k2, rest, 2, &l2);
    import_ok(a, r2, l2);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_str_eq(held(b, &latest, got), "1,2");
    cr_assert_eq(latest, 2);
    cr_assert(memcmp(got, k2, 32) == 0);
    /* c gets the record all the same (it is public; here installed by hand): it cannot open it. */
    import_ok(c, r2, l2);
    cr_assert_str_eq(held(c, &latest, got), "1");
    cr_assert_eq(latest, 2);
    cr_assert(memcmp(got, k1, 32) == 0);
    /* The old envelope still opens on c; a new one of epoch 2 does not, with any key c has. */
    cr_assert_eq(tsync__env_open(env1, env1_len, k.shop_id, 1, got, &p, &plen, NULL, err), 0, "%s",
                 err);
    free(p);
    h.epoch = 2;
    uint8_t *env2;
    size_t env2_len;
    cr_assert_eq(tsync__env_seal(&h, k2, (const uint8_t *)"new", 3, &env2, &env2_len, err), 0);
    cr_assert_eq(tsync__env_open(env2, env2_len, k.shop_id, 1, got, &p, &plen, NULL, err),
                 TSYNC_EINVAL);
    cr_assert_eq(tsync__env_open(env2, env2_len, k.shop_id, 2, got, &p, &plen, NULL, err),
                 TSYNC_EBADSIG);

    /* Another shop's till refuses both records. */
    cr_assert_eq(tsync__trust_import(x, r1, l1, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "shop"), "%s", err);
    cr_assert_eq(tsync__trust_import(x, gr, lg, err), TSYNC_EREFUSED);
    cr_assert_str_eq(held(x, &latest, NULL), "");
    cr_assert_eq(tsync__grant_latest(x, &gb, &gl), TSYNC_ENOTFOUND);
    /* A till not enrolled keeps none. */
    tsync_store *y = th_open_products(th_path(dir, "y.db"));
    cr_assert_eq(tsync__trust_import(y, r1, l1, err), TSYNC_EREFUSED);
    cr_assert(strstr(err, "enrolled"), "%s", err);

    free(env1);
    free(env2);
    free(r1);
    free(r2);
    free(gr);
    free(rev);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
    tsync_store_free(x);
    tsync_store_free(y);
}

/* The same through the public API only (tillsync/trust.h): the admin signs with a key file, the
 * records are installed with tsync_trust_enrol, the till reports its epoch and grant. */
Test(relaykeys, public_api)
{
    TH_AUTO_FREE char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *b = th_open_products(th_path(dir, "b.db"));
    tsync_shop_key *k;
    cr_assert_eq(tsync_shop_key_create(&k, th_path(dir, "shop.key"), "Shop"), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_trust_enrol_with_key(NULL, a, k, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_trust_enrol_with_key(NULL, b, k, NULL), 0, "%s", th_errmsg());
    uint32_t held = 9, latest = 9;
    cr_assert_eq(tsync_store_data_key_epoch(&held, &latest, a), 0);
    cr_assert_eq(held, 0);
    cr_assert_eq(latest, 0);
    uint8_t *rec;
    size_t len;
    cr_assert_eq(tsync_store_grant(&rec, &len, a), TSYNC_ENOTFOUND);

    uint8_t devs[2][TSYNC_PUBLIC_KEY_BYTES], key[TSYNC_DATA_KEY_BYTES];
    cr_assert_eq(tsync_store_public_key(devs[0], a), 0);
    cr_assert_eq(tsync_store_public_key(devs[1], b), 0);
    randombytes_buf(key, sizeof key);
    /* Epoch 1 sealed to a only, then re-sealed to a and b. */
    uint8_t *r1, *r1b;
    size_t l1, l1b;
    cr_assert_eq(tsync_shop_key_sign_data_key(&r1, &l1, k, 1, key, devs, 1), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_shop_key_sign_data_key(&r1b, &l1b, k, 1, key, devs, 2), 0, "%s",
                 th_errmsg());
    cr_assert_eq(tsync_shop_key_sign_data_key(&rec, &len, k, 0, key, devs, 2), TSYNC_EINVAL);
    cr_assert_eq(tsync_shop_key_sign_data_key(&rec, &len, k, 1, key, devs, 0), TSYNC_EINVAL);
    const uint8_t *recs[1] = {r1};
    cr_assert_eq(tsync_trust_enrol(NULL, a, recs, &l1, 1), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_data_key_epoch(&held, &latest, b), 0);
    cr_assert_eq(held, 0, "b is not in the first record");
    cr_assert_eq(latest, 1);
    recs[0] = r1b;
    cr_assert_eq(tsync_trust_enrol(NULL, a, recs, &l1b, 1), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_data_key_epoch(&held, NULL, b), 0);
    cr_assert_eq(held, 1);

    const char *addrs[2] = {"tcp://127.0.0.1:7400", "tcp://10.1.2.3:7400"};
    uint8_t rkeys[2][TSYNC_PUBLIC_KEY_BYTES];
    memset(rkeys, 0x33, sizeof rkeys);
    uint64_t exp = tsync__wall_ms() + 86400000ull;
    cr_assert_eq(tsync_shop_key_sign_grant(&rec, &len, k, addrs, rkeys, 2, 0, 1000), TSYNC_EINVAL,
                 "an expiry in the past is refused");
    const char *bad[1] = {"127.0.0.1:7400"};
    cr_assert_eq(tsync_shop_key_sign_grant(&rec, &len, k, bad, rkeys, 1, 0, exp), TSYNC_EINVAL);
    cr_assert(strstr(th_errmsg(), "127.0.0.1:7400"), "%s", th_errmsg());
    uint8_t *g;
    size_t gl;
    cr_assert_eq(tsync_shop_key_sign_grant(&g, &gl, k, addrs, rkeys, 2, 250, exp), 0, "%s",
                 th_errmsg());
    recs[0] = g;
    cr_assert_eq(tsync_trust_enrol(NULL, b, recs, &gl, 1), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_grant(&rec, &len, a), 0, "%s", th_errmsg());
    cr_assert(len == gl && memcmp(rec, g, gl) == 0);
    tsync_trust_record t = TSYNC_TRUST_RECORD_INIT;
    cr_assert_eq(tsync_trust_record_decode(&t, rec, len), 0, "%s", th_errmsg());
    cr_assert_eq(t.kind, TSYNC_TRUST_GRANT);
    cr_assert_eq(t.expires_ms, exp);
    cr_assert_str_eq(tsync_trust_kind_label(t.kind), "RELAY GRANT");
    tsync_trust_record_clear(&t);
    char *text;
    cr_assert_eq(tsync_trust_armour(&text, r1b, l1b, NULL), 0);
    cr_assert(strstr(text, "BEGIN TILLSYNC DATA KEY"), "%s", text);
    tsync_free(text);
    tsync_free(rec);
    tsync_free(g);
    tsync_free(r1);
    tsync_free(r1b);
    tsync_shop_key_free(k);
    tsync_store_free(a);
    tsync_store_free(b);
}
