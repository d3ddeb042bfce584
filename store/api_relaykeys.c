/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_relaykeys.c — the public API of the relay keys (tillsync/trust.h, docs/RELAY_KEYS.md):
 * the admin signs a DATA KEY record (a data key of an epoch sealed to the shop's devices) and a
 * RELAY GRANT; a till tells which data-key epoch it holds and which grant is in force. The records
 * are installed and replicated like the other trust records (tsync_trust_enrol).
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "api_trust_int.h"
#include "internal.h"

_Static_assert(TSYNC_DATA_KEY_BYTES == TSYNC__DATA_KEY_BYTES, "data key size");

int tsync_shop_key_sign_data_key(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                                 uint32_t epoch, const uint8_t key[TSYNC_DATA_KEY_BYTES],
                                 const uint8_t (*device_keys)[TSYNC_PUBLIC_KEY_BYTES],
                                 size_t ndevices)
{
    if (!rec || !rec_len || !k || !key || (!device_keys && ndevices))
        return tsync__err(TSYNC_EINVAL, "no data key given");
    *rec = NULL, *rec_len = 0;
    if (ndevices == 0 || ndevices > TSYNC__DATA_KEY_MAX_DEVICES)
        return tsync__err(TSYNC_EINVAL, "data key: %zu devices; it is sealed to 1..%u devices",
                          ndevices, TSYNC__DATA_KEY_MAX_DEVICES);
    const tsync__shopkey *sk = tsync__api_shopkey(k);
    tsync__dk_seal *seals = calloc(ndevices, sizeof *seals);
    if (!seals) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = 0;
    for (size_t i = 0; i < ndevices && rc == 0; i++) {
        memcpy(seals[i].device_pk, device_keys[i], TSYNC__PK_BYTES);
        rc = tsync__data_key_seal(key, device_keys[i], seals[i].sealed);
    }
    if (rc == 0) {
        tsync__data_key_rec d = {.epoch = epoch,
                                 .nseals = (uint32_t)ndevices,
                                 .seals = seals,
                                 .issued_ms = tsync__wall_ms()};
        memcpy(d.shop_id, sk->shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(d.admin_pk, sk->pk, TSYNC__PK_BYTES);
        char err[TSYNC__ERRLEN];
        rc = tsync__data_key_sign(&d, sk->sk, rec, rec_len, err);
        if (rc) tsync__err(rc, "%s", err);
    }
    free(seals);
    return rc;
}

int tsync_shop_key_sign_grant(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                              const char *const *relay_addrs,
                              const uint8_t (*relay_keys)[TSYNC_PUBLIC_KEY_BYTES], size_t nrelays,
                              uint64_t quota_mb, uint64_t expires_ms)
{
    if (!rec || !rec_len || !k || (nrelays && (!relay_addrs || !relay_keys)))
        return tsync__err(TSYNC_EINVAL, "no grant given");
    *rec = NULL, *rec_len = 0;
    if (nrelays == 0 || nrelays > TSYNC__GRANT_MAX_RELAYS)
        return tsync__err(TSYNC_EINVAL, "relay grant: %zu relays (1..%u allowed)", nrelays,
                          TSYNC__GRANT_MAX_RELAYS);
    const tsync__shopkey *sk = tsync__api_shopkey(k);
    tsync__grant_relay relays[TSYNC__GRANT_MAX_RELAYS];
    for (size_t i = 0; i < nrelays; i++) {
        if (!relay_addrs[i]) return tsync__err(TSYNC_EINVAL, "relay %zu has no address", i + 1);
        size_t n = strlen(relay_addrs[i]);
        relays[i].addr = relay_addrs[i];
        relays[i].addr_len = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
        memcpy(relays[i].pk, relay_keys[i], TSYNC__PK_BYTES);
    }
    tsync__grant_rec g = {.nrelays = (uint32_t)nrelays,
                          .relays = relays,
                          .quota_mb = quota_mb,
                          .expires_ms = expires_ms,
                          .issued_ms = tsync__wall_ms()};
    memcpy(g.shop_id, sk->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(g.admin_pk, sk->pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    int rc = tsync__grant_sign(&g, sk->sk, rec, rec_len, err);
    return rc ? tsync__err(rc, "%s", err) : 0;
}

int tsync_store_data_key_epoch(uint32_t *held, uint32_t *latest, tsync_store *s)
{
    if (!held || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    *held = 0;
    if (latest) *latest = 0;
    tsync__held_key *v;
    uint32_t n, last;
    int rc = tsync__data_keys_held(s, &v, &n, &last);
    if (rc) return rc;
    if (n) *held = v[n - 1].epoch;
    if (latest) *latest = last;
    tsync__held_keys_free(v, n);
    return 0;
}

int tsync_store_grant(uint8_t **rec, size_t *rec_len, tsync_store *s)
{
    if (!rec || !rec_len || !s) return tsync__err(TSYNC_EINVAL, "no store given");
    int rc = tsync__grant_latest(s, rec, rec_len);
    if (rc == TSYNC_ENOTFOUND) return tsync__err(rc, "the shop has no relay grant");
    return rc;
}
