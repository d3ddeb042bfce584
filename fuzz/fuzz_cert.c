/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz/fuzz_cert.c — libFuzzer target for every decoder of shop trust (crdt/cert.c). The first
 * byte selects the decoder (modulo 3), the rest is its input:
 *   0: a trust record (request, certificate, revocation, rotation, signed migration, data key,
 *      relay grant):
 *      tsync__trust_decode
 *   1: a shop admin key file image (version 1 or 2): tsync__shopkey_decode_ext
 *   2: armoured text: every block through tsync__dearmour, then tsync__trust_decode
 * Any input must be refused with a one-line message or decode. What decodes is checked: a record
 * armours and de-armours to the same bytes and has sane fields; a key file re-encodes to exactly
 * its input (the format is canonical).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cert.h"

static void check_err(int rc, const char *err)
{
    if (rc != 0 && (err[0] == '\0' || strchr(err, '\n'))) abort();
}

static void record(const uint8_t *p, size_t n)
{
    tsync__trust_rec r;
    tsync__arena a = {0};
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_decode(p, n, &r, &a, err);
    check_err(rc, err);
    if (rc == 0) {
        switch (r.kind) {
        case TSYNC__T_REQUEST:
            if (!tsync__trust_name_ok(r.u.req.device_name, r.u.req.device_name_len)) abort();
            break;
        case TSYNC__T_CERT:
            if (r.u.cert.expires_ms <= r.u.cert.not_before_ms ||
                !tsync__trust_name_ok(r.u.cert.shop_name, r.u.cert.shop_name_len))
                abort();
            break;
        case TSYNC__T_REVOCATION:
            if (r.u.rev.ncutoffs > TSYNC__TRUST_MAX_CUTOFFS) abort();
            for (uint32_t i = 1; i < r.u.rev.ncutoffs; i++)
                if (memcmp(r.u.rev.cutoffs[i - 1].site, r.u.rev.cutoffs[i].site,
                           TSYNC__SITE_BYTES) >= 0)
                    abort();
            for (uint32_t i = 0; i < r.u.rev.ncutoffs; i++)
                if (tsync__revocation_cutoff(&r.u.rev, r.u.rev.cutoffs[i].site) !=
                    r.u.rev.cutoffs[i].seq)
                    abort();
            break;
        case TSYNC__T_ROTATION:
            if (memcmp(r.u.rot.old_pk, r.u.rot.new_pk, TSYNC__PK_BYTES) == 0) abort();
            break;
        case TSYNC__T_MIGRATION:
            if (r.u.mig.number == 0 || r.u.mig.sql_len == 0 ||
                r.u.mig.sql_len > TSYNC__TRUST_SQL_MAX ||
                !tsync__trust_name_ok(r.u.mig.name, r.u.mig.name_len))
                abort();
            break;
        case TSYNC__T_DATA_KEY:
            if (r.u.dkey.epoch == 0 || r.u.dkey.nseals == 0 ||
                r.u.dkey.nseals > TSYNC__DATA_KEY_MAX_DEVICES)
                abort();
            for (uint32_t i = 1; i < r.u.dkey.nseals; i++)
                if (memcmp(r.u.dkey.seals[i - 1].device_pk, r.u.dkey.seals[i].device_pk,
                           TSYNC__PK_BYTES) >= 0)
                    abort();
            break;
        case TSYNC__T_GRANT:
            if (r.u.grant.nrelays == 0 || r.u.grant.nrelays > TSYNC__GRANT_MAX_RELAYS ||
                r.u.grant.expires_ms <= r.u.grant.issued_ms)
                abort();
            for (uint32_t i = 0; i < r.u.grant.nrelays; i++)
                if (r.u.grant.relays[i].addr_len > TSYNC__GRANT_ADDR_MAX ||
                    memcmp(r.u.grant.relays[i].addr, "tcp://", 6) != 0)
                    abort();
            break;
        default:
            abort();
        }
        char *text;
        if (tsync__armour(r.kind, p, n, "fuzz", &text) != 0) abort();
        size_t pos = 0, len;
        uint32_t kind;
        uint8_t *back;
        if (tsync__dearmour(text, strlen(text), &pos, &kind, &back, &len, err) != 0 ||
            kind != r.kind || len != n || memcmp(back, p, n) != 0)
            abort();
        free(back);
        free(text);
    }
    tsync__arena_free(&a);
}

static void shopkey(const uint8_t *p, size_t n)
{
    tsync__shopkey k;
    tsync__shopkey_ext x;
    char err[TSYNC__ERRLEN];
    int rc = tsync__shopkey_decode_ext(p, n, &k, &x, err);
    check_err(rc, err);
    if (rc == 0) {
        /* both versions re-encode to the same bytes */
        uint8_t *img;
        size_t len;
        int erc = x.version == 1 ? tsync__shopkey_encode(&k, &img, &len)
                                 : tsync__shopkey_encode_ext(&k, &x, &img, &len);
        if (erc != 0 || len != n || memcmp(img, p, n) != 0) abort();
        free(img);
        tsync__shopkey_ext_free(&x);
    }
    tsync__shopkey_wipe(&k);
}

static void armoured(const uint8_t *p, size_t n)
{
    size_t pos = 0;
    for (int blocks = 0; blocks < 64; blocks++) {
        uint32_t kind;
        uint8_t *rec;
        size_t len;
        char err[TSYNC__ERRLEN];
        size_t before = pos;
        int rc = tsync__dearmour((const char *)p, n, &pos, &kind, &rec, &len, err);
        if (rc == TSYNC_ENOTFOUND) return;
        check_err(rc, err);
        if (rc) return;
        if (pos <= before || pos > n || !tsync__trust_label(kind)) abort();
        record(rec, len);
        free(rec);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0) return 0;
    switch (data[0] % 3) {
    case 0:
        record(data + 1, size - 1);
        break;
    case 1:
        shopkey(data + 1, size - 1);
        break;
    default:
        armoured(data + 1, size - 1);
        break;
    }
    return 0;
}
