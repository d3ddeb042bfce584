/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/datakey.c — sealing the shop data key to a device and opening it again (codec/cert.h,
 * docs/RELAY_KEYS.md). A device has only its Ed25519 key: the seal goes to the X25519 form of it
 * (libsodium's conversion), so enrolment needs no second key and no new request format.
 */
#include <sodium.h>
#include <string.h>

#include "codec/cert.h"

_Static_assert(TSYNC__DATA_KEY_SEALED == crypto_box_SEALBYTES + TSYNC__DATA_KEY_BYTES,
               "sealed data key size");

int tsync__data_key_seal(const uint8_t key[TSYNC__DATA_KEY_BYTES],
                         const uint8_t device_pk[TSYNC__PK_BYTES],
                         uint8_t out[TSYNC__DATA_KEY_SEALED])
{
    uint8_t xpk[crypto_box_PUBLICKEYBYTES];
    if (crypto_sign_ed25519_pk_to_curve25519(xpk, device_pk) != 0)
        return tsync__err(TSYNC_EINVAL, "device key has no X25519 form (not a valid key)");
    crypto_box_seal(out, key, TSYNC__DATA_KEY_BYTES, xpk);
    return 0;
}

int tsync__data_key_open(const tsync__data_key_rec *d, const uint8_t device_sk[TSYNC__SK_BYTES],
                         uint8_t key[TSYNC__DATA_KEY_BYTES])
{
    const uint8_t *pk = device_sk + 32; /* libsodium's layout: seed || public key */
    const tsync__dk_seal *seal = NULL;
    for (uint32_t i = 0; i < d->nseals && !seal; i++)
        if (memcmp(d->seals[i].device_pk, pk, TSYNC__PK_BYTES) == 0) seal = &d->seals[i];
    if (!seal) return TSYNC_ENOTFOUND;
    uint8_t xpk[crypto_box_PUBLICKEYBYTES], xsk[crypto_box_SECRETKEYBYTES];
    if (crypto_sign_ed25519_pk_to_curve25519(xpk, pk) != 0) return TSYNC_EBADSIG;
    crypto_sign_ed25519_sk_to_curve25519(xsk, device_sk);
    int rc = crypto_box_seal_open(key, seal->sealed, TSYNC__DATA_KEY_SEALED, xpk, xsk);
    sodium_memzero(xsk, sizeof xsk);
    if (rc != 0) {
        sodium_memzero(key, TSYNC__DATA_KEY_BYTES);
        return TSYNC_EBADSIG;
    }
    return 0;
}
