/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_shopkey.c — the admin's side of the shop data key (tillsync/trust.h, "the admin's data
 * keys"; docs/RELAY_KEYS.md): certifying a device records it in the key file and issues the data
 * key sealed to the shop's devices; revoking one makes a new epoch sealed to those that remain;
 * an existing shop gets its first epoch on demand.
 *
 * Design notes
 * - Each function works on a copy of what the key file keeps, signs everything it returns, and
 *   only then replaces the file and adopts the copy: an error leaves the file and the handle as
 *   they were, and nothing is handed out that the file does not back.
 * - A version 1 file is written back as version 2 by the first of these that succeeds: the
 *   caller sees it through tsync_shop_key_file_state (the CLI says so once).
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "api_trust_int.h"
#include "internal.h"

_Static_assert(TSYNC_DATA_KEY_MAX_DEVICES == TSYNC__DATA_KEY_MAX_DEVICES, "data key devices");

int tsync__shopkey_ext_copy(tsync__shopkey_ext *to, const tsync__shopkey_ext *from)
{
    memset(to, 0, sizeof *to);
    to->version = 2;
    /* one spare slot each: a copy usually grows by a device or an epoch */
    to->epochs = malloc((from->nepochs + 1) * sizeof *to->epochs);
    to->devices = malloc((from->ndevices + 1) * sizeof *to->devices);
    if (!to->epochs || !to->devices) {
        tsync__shopkey_ext_free(to);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    if (from->nepochs) memcpy(to->epochs, from->epochs, from->nepochs * sizeof *to->epochs);
    if (from->ndevices) memcpy(to->devices, from->devices, from->ndevices * sizeof *to->devices);
    to->nepochs = from->nepochs;
    to->ndevices = from->ndevices;
    return 0;
}

/* The device's entry in x, or NULL; *at is where it is or would go (keys ascending). */
static tsync__shopkey_device *find(tsync__shopkey_ext *x, const uint8_t pk[TSYNC__PK_BYTES],
                                   uint32_t *at)
{
    uint32_t lo = 0, hi = x->ndevices;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        int c = memcmp(x->devices[mid].pk, pk, TSYNC__PK_BYTES);
        if (c == 0) {
            *at = mid;
            return &x->devices[mid];
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *at = lo;
    return NULL;
}

/* Adds pk (not revoked) when x does not list it; a revoked one is refused. */
static int add_device(tsync__shopkey_ext *x, const uint8_t pk[TSYNC__PK_BYTES])
{
    uint32_t at;
    tsync__shopkey_device *d = find(x, pk, &at);
    if (d && d->revoked) {
        char hex[2 * TSYNC__PK_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, pk, TSYNC__PK_BYTES);
        return tsync__err(TSYNC_EINVAL,
                          "device %s is revoked in this key file; a revoked key stays revoked "
                          "(the device needs a new key)",
                          hex);
    }
    if (d) return 0;
    if (x->ndevices >= TSYNC__SHOPKEY_MAX_DEVICES)
        return tsync__err(TSYNC_EINVAL, "the key file lists %u devices, its limit",
                          TSYNC__SHOPKEY_MAX_DEVICES);
    tsync__shopkey_device *v = realloc(x->devices, (x->ndevices + 1) * sizeof *v);
    if (!v) return tsync__err(TSYNC_ENOMEM, "out of memory");
    x->devices = v;
    memmove(&v[at + 1], &v[at], (x->ndevices - at) * sizeof *v);
    memcpy(v[at].pk, pk, TSYNC__PK_BYTES);
    v[at].revoked = false;
    x->ndevices++;
    return 0;
}

/* Appends the next epoch (1 when none) with a fresh random key. */
static int new_epoch(tsync__shopkey_ext *x)
{
    uint32_t last = x->nepochs ? x->epochs[x->nepochs - 1].epoch : 0;
    if (last == UINT32_MAX || x->nepochs >= TSYNC__SHOPKEY_MAX_EPOCHS)
        return tsync__err(TSYNC_EINVAL, "the key file holds %u data-key epochs, its limit",
                          x->nepochs);
    tsync__shopkey_epoch *v = realloc(x->epochs, (x->nepochs + 1) * sizeof *v);
    if (!v) return tsync__err(TSYNC_ENOMEM, "out of memory");
    x->epochs = v;
    v[x->nepochs].epoch = last + 1;
    v[x->nepochs].created_ms = tsync__wall_ms();
    randombytes_buf(v[x->nepochs].key, TSYNC__DATA_KEY_BYTES);
    x->nepochs++;
    return 0;
}

/* A DATA KEY record of x's latest epoch sealed to its certified devices. With none left, *rec
 * is NULL and the result 0 when none_ok, else TSYNC_EINVAL. */
static int seal(const tsync_shop_key *k, const tsync__shopkey_ext *x, bool none_ok, uint8_t **rec,
                size_t *len)
{
    *rec = NULL, *len = 0;
    size_t n = 0;
    for (uint32_t i = 0; i < x->ndevices; i++) n += !x->devices[i].revoked;
    if (n == 0)
        return none_ok ? 0
                       : tsync__err(TSYNC_EINVAL, "no device to seal the data key to (the key "
                                                  "file lists none that is certified and not "
                                                  "revoked)");
    if (n > TSYNC__DATA_KEY_MAX_DEVICES)
        return tsync__err(TSYNC_EINVAL,
                          "the data key would be sealed to %zu devices, more than the %u a DATA "
                          "KEY record holds",
                          n, TSYNC__DATA_KEY_MAX_DEVICES);
    uint8_t devs[TSYNC__DATA_KEY_MAX_DEVICES][TSYNC__PK_BYTES];
    n = 0;
    for (uint32_t i = 0; i < x->ndevices; i++)
        if (!x->devices[i].revoked) memcpy(devs[n++], x->devices[i].pk, TSYNC__PK_BYTES);
    const tsync__shopkey_epoch *e = &x->epochs[x->nepochs - 1];
    return tsync_shop_key_sign_data_key(rec, len, k, e->epoch, e->key,
                                        (const uint8_t(*)[TSYNC_PUBLIC_KEY_BYTES])devs, n);
}

/* Writes x to k's file and adopts it; x is consumed either way. */
static int commit(tsync_shop_key *k, tsync__shopkey_ext *x)
{
    int rc = k->path ? tsync__shopkey_replace(k->path, &k->k, x)
                     : tsync__err(TSYNC_EINVAL, "this key has no file to keep devices in");
    if (rc) {
        tsync__shopkey_ext_free(x);
        return rc;
    }
    tsync__shopkey_ext_free(&k->x);
    k->x = *x;
    return 0;
}

static void drop(uint8_t **p, size_t *n)
{
    if (!p) return;
    free(*p);
    *p = NULL, *n = 0;
}

int tsync_shop_key_file_state(const tsync_shop_key *k, uint32_t *file_version, uint32_t *epoch,
                              size_t *ndevices, size_t *nrevoked)
{
    if (!k) return tsync__err(TSYNC_EINVAL, "no key given");
    size_t live = 0, dead = 0;
    for (uint32_t i = 0; i < k->x.ndevices; i++) k->x.devices[i].revoked ? dead++ : live++;
    if (file_version) *file_version = k->x.version ? k->x.version : 1;
    if (epoch) *epoch = k->x.nepochs ? k->x.epochs[k->x.nepochs - 1].epoch : 0;
    if (ndevices) *ndevices = live;
    if (nrevoked) *nrevoked = dead;
    return 0;
}

int tsync_shop_key_certify(uint8_t **cert, size_t *cert_len, uint8_t **dkey, size_t *dkey_len,
                           tsync_shop_key *k, const uint8_t *req, size_t req_len,
                           const tsync_sign_options *opts)
{
    if ((dkey && !dkey_len) || !k) return tsync__err(TSYNC_EINVAL, "no key given");
    if (dkey) *dkey = NULL, *dkey_len = 0;
    int rc = tsync_shop_key_sign_request(cert, cert_len, k, req, req_len, opts);
    if (rc) return rc;
    /* the certificate names the device the request asked for */
    tsync__arena a = {0};
    tsync__trust_rec r;
    char err[TSYNC__ERRLEN];
    tsync__shopkey_ext x;
    rc = tsync__trust_decode(*cert, *cert_len, &r, &a, err);
    if (rc) rc = tsync__err(rc, "%s", err);
    if (rc == 0) rc = tsync__shopkey_ext_copy(&x, &k->x);
    if (rc == 0) {
        rc = add_device(&x, r.u.cert.device_pk);
        if (rc == 0 && dkey && x.nepochs == 0) rc = new_epoch(&x);
        if (rc == 0 && dkey) rc = seal(k, &x, false, dkey, dkey_len);
        if (rc == 0)
            rc = commit(k, &x);
        else
            tsync__shopkey_ext_free(&x);
    }
    tsync__arena_free(&a);
    if (rc) {
        drop(cert, cert_len);
        drop(dkey, dkey_len);
    }
    return rc;
}

int tsync_shop_key_revoke_device(uint8_t **rev, size_t *rev_len, uint8_t **dkey, size_t *dkey_len,
                                 tsync_shop_key *k,
                                 const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                                 const tsync_cutoff *cutoffs, size_t ncutoffs)
{
    if ((dkey && !dkey_len) || !k) return tsync__err(TSYNC_EINVAL, "no key given");
    if (dkey) *dkey = NULL, *dkey_len = 0;
    int rc = tsync_shop_key_revoke(rev, rev_len, k, device_key, cutoffs, ncutoffs);
    if (rc) return rc;
    tsync__shopkey_ext x;
    rc = tsync__shopkey_ext_copy(&x, &k->x);
    if (rc == 0) {
        uint32_t at;
        tsync__shopkey_device *d = find(&x, device_key, &at);
        /* A second revocation of a revoked key (a corrected cutoff) needs no new epoch. */
        if (!d || !d->revoked) {
            if (!d) {
                rc = add_device(&x, device_key);
                d = find(&x, device_key, &at);
            }
            if (rc == 0) {
                d->revoked = true;
                rc = new_epoch(&x);
            }
        }
        if (rc == 0 && dkey) rc = seal(k, &x, true, dkey, dkey_len);
        if (rc == 0)
            rc = commit(k, &x);
        else
            tsync__shopkey_ext_free(&x);
    }
    if (rc) {
        drop(rev, rev_len);
        drop(dkey, dkey_len);
    }
    return rc;
}

int tsync_shop_key_data_key(uint8_t **dkey, size_t *dkey_len, tsync_shop_key *k,
                            const uint8_t (*device_keys)[TSYNC_PUBLIC_KEY_BYTES], size_t ndevices)
{
    if (!dkey || !dkey_len || !k || (ndevices && !device_keys))
        return tsync__err(TSYNC_EINVAL, "no key given");
    *dkey = NULL, *dkey_len = 0;
    tsync__shopkey_ext x;
    int rc = tsync__shopkey_ext_copy(&x, &k->x);
    for (size_t i = 0; i < ndevices && rc == 0; i++) rc = add_device(&x, device_keys[i]);
    if (rc == 0 && x.nepochs == 0) rc = new_epoch(&x);
    if (rc == 0) rc = seal(k, &x, false, dkey, dkey_len);
    if (rc == 0)
        rc = commit(k, &x);
    else
        tsync__shopkey_ext_free(&x);
    if (rc) drop(dkey, dkey_len);
    return rc;
}
