/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/cert.c — the formats of shop trust (see cert.h): enrolment requests, certificates,
 * revocations and admin key rotations, and the text armour around them (the shop admin key file
 * is codec/shopkey.c).
 * Over 800 lines on purpose: each record kind's decoder and signer sit side by side, so a field
 * added to one is seen to need adding to the other.
 *
 * Design notes
 * - Decoding is strict in the same way as batches: exact types, exact array lengths, the smallest
 *   encoding of every int, length and count, no trailing bytes, and every name checked. Whatever
 *   decodes re-encodes to the same bytes, so a record's hash is its identity.
 * - Verification is part of decoding: a record that decodes is signed by the keys it names. What
 *   is left to the caller is whether those keys mean anything to it.
 * - A signature signs a domain string and the BLAKE2b-256 of the bytes before it, so no record can
 *   be passed off as another kind of record, or as a batch (whose message starts "tsync-batch").
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "codec/cert.h"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* Fields of each kind's array, signatures included (index = kind). */
static const uint32_t FIELDS[] = {0, 6, 10, 8, 8, 9, 8, 9};
static const char *const DOMAIN[] = {
    NULL,           "tsync-req-v1", "tsync-cert-v1", "tsync-rev-v1",
    "tsync-rot-v1", "tsync-mig-v1", "tsync-dkey-v1", "tsync-grant-v1"};
static const char *const WHAT[] = {"trust record", "enrolment request",  "certificate",
                                   "revocation",   "admin key rotation", "signed migration",
                                   "data key",     "relay grant"};
static const char *const LABEL[] = {NULL,         "ENROLMENT REQUEST",  "CERTIFICATE",
                                    "REVOCATION", "ADMIN KEY ROTATION", "SIGNED MIGRATION",
                                    "DATA KEY",   "RELAY GRANT"};

#define NKINDS 7u

/* ---------------------------------------------------------------- names */

bool tsync__trust_name_ok(const char *str, size_t n)
{
    return str && n > 0 && n <= TSYNC__TRUST_NAME_MAX && tsync__utf8_text_ok(str, n);
}

/* ---------------------------------------------------------------- decoder */

typedef struct {
    tsync__mpr r;     /* canonical; the signed bytes start at r.start */
    const char *what; /* "certificate", for messages */
    char *err;
    int rc;
} dec;

static bool fail(dec *d, const char *fmt, ...) PRINTF_LIKE(2, 3);
static bool fail(dec *d, const char *fmt, ...)
{
    int k = snprintf(d->err, TSYNC__ERRLEN, "%s: ", d->what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    d->r.ok = false;
    if (d->rc == 0) d->rc = TSYNC_ECORRUPT;
    return false;
}

/* Explains why the reader could not read `field`, from its account of the failure. The readers
 * below read nothing once a message is written (the reader is stopped), so it is never
 * overwritten by a later field's. */
static bool bad(dec *d, const char *field)
{
    const tsync__mpr *r = &d->r;
    size_t at = tsync__mpr_pos(r);
    switch ((tsync__mpr_fault)r->fault) {
    case TSYNC__MPR_END:
        return fail(d, "%s: truncated (expected %s)", field, r->expected);
    case TSYNC__MPR_TYPE:
        return fail(d, "%s: expected %s at offset %zu", field, r->expected, at);
    case TSYNC__MPR_NONCANON:
        return fail(d, "%s: non-canonical msgpack encoding at offset %zu", field, at);
    case TSYNC__MPR_LENGTH:
        return fail(d, "%s: expected %" PRIu64 " bytes, got %" PRIu64, field, r->want, r->got);
    case TSYNC__MPR_ROOM:
        return fail(d, "%s: %" PRIu64 " entries cannot fit in the bytes left", field, r->got);
    case TSYNC__MPR_SHORT:
    case TSYNC__MPR_RANGE:
    case TSYNC__MPR_OK:
        break;
    }
    return fail(d, "%s: %s at offset %zu is truncated or longer than the bytes left", field,
                r->expected, at);
}

static bool rd_uint(dec *d, const char *field, uint64_t *v)
{
    return d->r.ok && (tsync__mpr_uint(&d->r, v) || bad(d, field));
}

static bool rd_array(dec *d, const char *field, uint32_t *n)
{
    return d->r.ok && (tsync__mpr_array(&d->r, n) || bad(d, field));
}

static bool rd_fix(dec *d, const char *field, uint8_t *out, uint32_t n)
{
    return d->r.ok && (tsync__mpr_binfix(&d->r, out, n) || bad(d, field));
}

static bool rd_bin(dec *d, const char *field, const uint8_t **p, uint32_t *n)
{
    return d->r.ok && (tsync__mpr_bin(&d->r, p, n) || bad(d, field));
}

static bool rd_name(dec *d, const char *field, const char **str, uint32_t *n)
{
    if (!d->r.ok) return false;
    if (!tsync__mpr_str(&d->r, str, n)) return bad(d, field);
    if (!tsync__trust_name_ok(*str, *n))
        return fail(d, "%s: not 1..%u bytes of UTF-8 without control characters", field,
                    TSYNC__TRUST_NAME_MAX);
    return true;
}

/* message = domain || BLAKE2b-256(signed bytes). */
static void message(uint32_t kind, const uint8_t *p, size_t n, uint8_t *msg, size_t *mlen)
{
    size_t dl = strlen(DOMAIN[kind]);
    memcpy(msg, DOMAIN[kind], dl);
    crypto_generichash(msg + dl, TSYNC__HASH_BYTES, p, n, NULL, 0);
    *mlen = dl + TSYNC__HASH_BYTES;
}

static bool verify(dec *d, uint32_t kind, size_t signed_len, const uint8_t sig[TSYNC__SIG_BYTES],
                   const uint8_t pk[TSYNC__PK_BYTES], const char *whose)
{
    uint8_t msg[32 + TSYNC__HASH_BYTES];
    size_t mlen;
    message(kind, d->r.start, signed_len, msg, &mlen);
    if (crypto_sign_verify_detached(sig, msg, mlen, pk) != 0) {
        fail(d, "signature of the %s does not verify", whose);
        d->rc = TSYNC_EBADSIG;
        return false;
    }
    return true;
}

static bool dec_req(dec *d, tsync__req *q, size_t *signed_len, uint8_t sig[TSYNC__SIG_BYTES])
{
    if (!rd_fix(d, "device key", q->device_pk, TSYNC__PK_BYTES) ||
        !rd_name(d, "device name", &q->device_name, &q->device_name_len) ||
        !rd_uint(d, "created", &q->created_ms))
        return false;
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

static bool dec_cert(dec *d, tsync__cert *c, size_t *signed_len, uint8_t sig[TSYNC__SIG_BYTES])
{
    if (!rd_fix(d, "shop id", c->shop_id, TSYNC__SHOP_ID_BYTES) ||
        !rd_name(d, "shop name", &c->shop_name, &c->shop_name_len) ||
        !rd_fix(d, "device key", c->device_pk, TSYNC__PK_BYTES) ||
        !rd_name(d, "device name", &c->device_name, &c->device_name_len) ||
        !rd_uint(d, "not before", &c->not_before_ms) || !rd_uint(d, "expires", &c->expires_ms) ||
        !rd_fix(d, "admin key", c->admin_pk, TSYNC__PK_BYTES))
        return false;
    if (c->expires_ms <= c->not_before_ms) return fail(d, "expires before it becomes valid");
    if (sodium_memcmp(c->admin_pk, c->device_pk, TSYNC__PK_BYTES) == 0)
        return fail(d, "the device key is the admin key");
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

static bool dec_rev(dec *d, tsync__revocation *v, tsync__arena *a, size_t *signed_len,
                    uint8_t sig[TSYNC__SIG_BYTES])
{
    uint32_t n;
    if (!rd_fix(d, "shop id", v->shop_id, TSYNC__SHOP_ID_BYTES) ||
        !rd_fix(d, "device key", v->device_pk, TSYNC__PK_BYTES) || !rd_array(d, "cutoffs", &n))
        return false;
    if (n > TSYNC__TRUST_MAX_CUTOFFS)
        return fail(d, "%" PRIu32 " cutoffs, more than %u", n, TSYNC__TRUST_MAX_CUTOFFS);
    /* Each entry takes at least 1 + 18 + 1 bytes: bound the allocation by the input. */
    if (!tsync__mpr_room(&d->r, n, 20)) return bad(d, "cutoffs");
    v->cutoffs = tsync__arena_array(a, n, sizeof *v->cutoffs);
    if (n && !v->cutoffs) {
        fail(d, "out of memory");
        d->rc = TSYNC_ENOMEM;
        return false;
    }
    for (uint32_t i = 0; i < n; i++) {
        uint32_t two;
        if (!rd_array(d, "cutoff", &two)) return false;
        if (two != 2) return fail(d, "cutoff %" PRIu32 ": expected [site, seq]", i);
        if (!rd_fix(d, "cutoff site", v->cutoffs[i].site, TSYNC__SITE_BYTES) ||
            !rd_uint(d, "cutoff seq", &v->cutoffs[i].seq))
            return false;
        if (i && memcmp(v->cutoffs[i - 1].site, v->cutoffs[i].site, TSYNC__SITE_BYTES) >= 0)
            return fail(d, "cutoff %" PRIu32 ": sites not in ascending order (or repeated)", i);
    }
    v->ncutoffs = n;
    if (!rd_uint(d, "issued", &v->issued_ms) ||
        !rd_fix(d, "admin key", v->admin_pk, TSYNC__PK_BYTES))
        return false;
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

static bool dec_rot(dec *d, tsync__rotation *t, size_t *signed_len, uint8_t sig[TSYNC__SIG_BYTES],
                    uint8_t sig2[TSYNC__SIG_BYTES])
{
    if (!rd_fix(d, "shop id", t->shop_id, TSYNC__SHOP_ID_BYTES) ||
        !rd_fix(d, "old admin key", t->old_pk, TSYNC__PK_BYTES) ||
        !rd_fix(d, "new admin key", t->new_pk, TSYNC__PK_BYTES) ||
        !rd_uint(d, "issued", &t->issued_ms))
        return false;
    if (sodium_memcmp(t->old_pk, t->new_pk, TSYNC__PK_BYTES) == 0)
        return fail(d, "the new admin key is the old one");
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "old key's signature", sig, TSYNC__SIG_BYTES) &&
           rd_fix(d, "new key's signature", sig2, TSYNC__SIG_BYTES);
}

static bool dec_mig(dec *d, tsync__migration_rec *m, size_t *signed_len,
                    uint8_t sig[TSYNC__SIG_BYTES])
{
    if (!rd_fix(d, "shop id", m->shop_id, TSYNC__SHOP_ID_BYTES) ||
        !rd_uint(d, "number", &m->number))
        return false;
    if (m->number == 0 || m->number > INT64_MAX) return fail(d, "number: not 1..2^63-1");
    if (!rd_name(d, "name", &m->name, &m->name_len)) return false;
    if (!rd_bin(d, "sql", &m->sql, &m->sql_len)) return false;
    if (m->sql_len == 0 || m->sql_len > TSYNC__TRUST_SQL_MAX)
        return fail(d, "sql: %" PRIu32 " bytes (1..%u allowed)", m->sql_len, TSYNC__TRUST_SQL_MAX);
    if (memchr(m->sql, 0, m->sql_len)) return fail(d, "sql: has a NUL byte");
    if (!rd_uint(d, "issued", &m->issued_ms) ||
        !rd_fix(d, "admin key", m->admin_pk, TSYNC__PK_BYTES))
        return false;
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

static bool nomem_dec(dec *d)
{
    fail(d, "out of memory");
    d->rc = TSYNC_ENOMEM;
    return false;
}

static bool dec_dkey(dec *d, tsync__data_key_rec *k, tsync__arena *a, size_t *signed_len,
                     uint8_t sig[TSYNC__SIG_BYTES])
{
    uint64_t epoch;
    uint32_t n;
    if (!rd_fix(d, "shop id", k->shop_id, TSYNC__SHOP_ID_BYTES) || !rd_uint(d, "epoch", &epoch))
        return false;
    if (epoch == 0 || epoch > UINT32_MAX) return fail(d, "epoch: not 1..2^32-1");
    k->epoch = (uint32_t)epoch;
    if (!rd_array(d, "seals", &n)) return false;
    if (n == 0 || n > TSYNC__DATA_KEY_MAX_DEVICES)
        return fail(d, "%" PRIu32 " seals (1..%u allowed)", n, TSYNC__DATA_KEY_MAX_DEVICES);
    if (!tsync__mpr_room(&d->r, n, 1 + 34 + 82)) return bad(d, "seals");
    k->seals = tsync__arena_array(a, n, sizeof *k->seals);
    if (!k->seals) return nomem_dec(d);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t two;
        if (!rd_array(d, "seal", &two)) return false;
        if (two != 2) return fail(d, "seal %" PRIu32 ": expected [device key, sealed key]", i);
        if (!rd_fix(d, "seal device key", k->seals[i].device_pk, TSYNC__PK_BYTES) ||
            !rd_fix(d, "sealed key", k->seals[i].sealed, TSYNC__DATA_KEY_SEALED))
            return false;
        if (i && memcmp(k->seals[i - 1].device_pk, k->seals[i].device_pk, TSYNC__PK_BYTES) >= 0)
            return fail(d, "seal %" PRIu32 ": device keys not in ascending order (or repeated)", i);
    }
    k->nseals = n;
    if (!rd_uint(d, "issued", &k->issued_ms) ||
        !rd_fix(d, "admin key", k->admin_pk, TSYNC__PK_BYTES))
        return false;
    for (uint32_t i = 0; i < n; i++)
        if (sodium_memcmp(k->seals[i].device_pk, k->admin_pk, TSYNC__PK_BYTES) == 0)
            return fail(d, "seal %" PRIu32 ": the device key is the admin key", i);
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

/* "tcp://" and 1..249 printable ASCII bytes (no space). */
static bool relay_addr_ok(const char *s, uint32_t n)
{
    if (n <= 6 || n > TSYNC__GRANT_ADDR_MAX || memcmp(s, "tcp://", 6) != 0) return false;
    for (uint32_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~') return false;
    return true;
}

static bool dec_grant(dec *d, tsync__grant_rec *g, tsync__arena *a, size_t *signed_len,
                      uint8_t sig[TSYNC__SIG_BYTES])
{
    uint32_t n;
    if (!rd_fix(d, "shop id", g->shop_id, TSYNC__SHOP_ID_BYTES) || !rd_array(d, "relays", &n))
        return false;
    if (n == 0 || n > TSYNC__GRANT_MAX_RELAYS)
        return fail(d, "%" PRIu32 " relays (1..%u allowed)", n, TSYNC__GRANT_MAX_RELAYS);
    if (!tsync__mpr_room(&d->r, n, 1 + 8 + 34)) return bad(d, "relays");
    g->relays = tsync__arena_array(a, n, sizeof *g->relays);
    if (!g->relays) return nomem_dec(d);
    for (uint32_t i = 0; i < n; i++) {
        uint32_t two;
        if (!rd_array(d, "relay", &two)) return false;
        if (two != 2) return fail(d, "relay %" PRIu32 ": expected [address, key]", i);
        if (!d->r.ok) return false;
        if (!tsync__mpr_str(&d->r, &g->relays[i].addr, &g->relays[i].addr_len))
            return bad(d, "relay address");
        if (!relay_addr_ok(g->relays[i].addr, g->relays[i].addr_len))
            return fail(d, "relay %" PRIu32 ": address is not tcp:// and printable ASCII", i);
        if (!rd_fix(d, "relay key", g->relays[i].pk, TSYNC__PK_BYTES)) return false;
    }
    g->nrelays = n;
    if (!rd_uint(d, "quota", &g->quota_mb) || !rd_uint(d, "expires", &g->expires_ms) ||
        !rd_uint(d, "issued", &g->issued_ms) ||
        !rd_fix(d, "admin key", g->admin_pk, TSYNC__PK_BYTES))
        return false;
    if (g->expires_ms <= g->issued_ms) return fail(d, "expires before it is issued");
    *signed_len = tsync__mpr_pos(&d->r);
    return rd_fix(d, "signature", sig, TSYNC__SIG_BYTES);
}

int tsync__trust_decode(const uint8_t *buf, size_t len, tsync__trust_rec *out, tsync__arena *a,
                        char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    dec d = {.what = WHAT[0], .err = err};
    if (!buf || len == 0) {
        fail(&d, "empty");
        return d.rc;
    }
    if (len > TSYNC__TRUST_MAX_BYTES) {
        fail(&d, "%zu bytes, more than the limit of %u", len, TSYNC__TRUST_MAX_BYTES);
        return d.rc;
    }
    tsync__mpr_init(&d.r, buf, len);
    d.r.canonical = true;
    uint32_t n;
    uint64_t kind, fmt;
    if (!rd_array(&d, "record", &n)) return d.rc;
    if (n < 2) {
        fail(&d, "expected an array of at least 2, got %" PRIu32, n);
        return d.rc;
    }
    if (!rd_uint(&d, "kind", &kind) || !rd_uint(&d, "format", &fmt)) return d.rc;
    if (kind < 1 || kind > NKINDS) {
        snprintf(err, TSYNC__ERRLEN, "trust record: unknown kind %" PRIu64, kind);
        return TSYNC_EVERSION;
    }
    d.what = WHAT[kind];
    if (fmt != TSYNC__TRUST_FORMAT) {
        snprintf(err, TSYNC__ERRLEN, "%s: format %" PRIu64 " is not supported (expected %u)",
                 d.what, fmt, TSYNC__TRUST_FORMAT);
        return TSYNC_EVERSION;
    }
    if (n != FIELDS[kind]) {
        fail(&d, "expected %" PRIu32 " fields, got %" PRIu32, FIELDS[kind], n);
        return d.rc;
    }
    uint8_t sig[TSYNC__SIG_BYTES], sig2[TSYNC__SIG_BYTES];
    size_t signed_len = 0;
    bool ok = false;
    switch (kind) {
    case TSYNC__T_REQUEST:
        ok = dec_req(&d, &out->u.req, &signed_len, sig);
        break;
    case TSYNC__T_CERT:
        ok = dec_cert(&d, &out->u.cert, &signed_len, sig);
        break;
    case TSYNC__T_REVOCATION:
        ok = dec_rev(&d, &out->u.rev, a, &signed_len, sig);
        break;
    case TSYNC__T_ROTATION:
        ok = dec_rot(&d, &out->u.rot, &signed_len, sig, sig2);
        break;
    case TSYNC__T_MIGRATION:
        ok = dec_mig(&d, &out->u.mig, &signed_len, sig);
        break;
    case TSYNC__T_DATA_KEY:
        ok = dec_dkey(&d, &out->u.dkey, a, &signed_len, sig);
        break;
    case TSYNC__T_GRANT:
        ok = dec_grant(&d, &out->u.grant, a, &signed_len, sig);
        break;
    }
    if (ok && !tsync__mpr_done(&d.r))
        ok = fail(&d, "%zu trailing bytes", (size_t)(d.r.end - d.r.p));
    if (ok) {
        switch (kind) {
        case TSYNC__T_REQUEST:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.req.device_pk, "device key");
            break;
        case TSYNC__T_CERT:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.cert.admin_pk, "admin key");
            break;
        case TSYNC__T_REVOCATION:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.rev.admin_pk, "admin key");
            break;
        case TSYNC__T_ROTATION:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.rot.old_pk, "old admin key") &&
                 verify(&d, (uint32_t)kind, signed_len, sig2, out->u.rot.new_pk, "new admin key");
            break;
        case TSYNC__T_MIGRATION:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.mig.admin_pk, "admin key");
            break;
        case TSYNC__T_DATA_KEY:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.dkey.admin_pk, "admin key");
            break;
        case TSYNC__T_GRANT:
            ok = verify(&d, (uint32_t)kind, signed_len, sig, out->u.grant.admin_pk, "admin key");
            break;
        }
    }
    if (!ok) {
        int rc = d.rc ? d.rc : TSYNC_ECORRUPT;
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->kind = (uint32_t)kind;
    return 0;
}

void tsync__trust_id(const uint8_t *buf, size_t len, uint8_t out[TSYNC__HASH_BYTES])
{
    crypto_generichash(out, TSYNC__HASH_BYTES, buf, len, NULL, 0);
}

uint64_t tsync__revocation_cutoff(const tsync__revocation *r, const uint8_t site[TSYNC__SITE_BYTES])
{
    size_t lo = 0, hi = r->ncutoffs;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(r->cutoffs[mid].site, site, TSYNC__SITE_BYTES);
        if (c == 0) return r->cutoffs[mid].seq;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

/* ---------------------------------------------------------------- encoders */

static int einval(char *err, const char *what, const char *fmt, ...) PRINTF_LIKE(3, 4);
static int einval(char *err, const char *what, const char *fmt, ...)
{
    int k = snprintf(err, TSYNC__ERRLEN, "%s: ", what);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    return TSYNC_EINVAL;
}

/* msgpack-c's pack functions return non-zero only when the buffer cannot grow. */
#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

static bool key_pair(const uint8_t sk[TSYNC__SK_BYTES], const uint8_t pk[TSYNC__PK_BYTES])
{
    uint8_t derived[TSYNC__PK_BYTES];
    crypto_sign_ed25519_sk_to_pk(derived, sk);
    return sodium_memcmp(derived, pk, TSYNC__PK_BYTES) == 0;
}

static void sign(uint32_t kind, const uint8_t *p, size_t n, const uint8_t sk[TSYNC__SK_BYTES],
                 uint8_t sig[TSYNC__SIG_BYTES])
{
    uint8_t msg[32 + TSYNC__HASH_BYTES];
    size_t mlen;
    message(kind, p, n, msg, &mlen);
    crypto_sign_detached(sig, NULL, msg, mlen, sk);
}

/* Signs what sb holds with each key and appends the signatures; hands the buffer over. */
static int finish(msgpack_sbuffer *sb, msgpack_packer *pk, uint32_t kind, const uint8_t *const *sks,
                  int nsks, uint8_t **out, size_t *len, char *err)
{
    uint8_t sig[2][TSYNC__SIG_BYTES];
    size_t signed_len = sb->size;
    for (int i = 0; i < nsks; i++)
        sign(kind, (const uint8_t *)sb->data, signed_len, sks[i], sig[i]);
    for (int i = 0; i < nsks; i++) PK(tsync__mp_pack_bin(pk, sig[i], TSYNC__SIG_BYTES));
    if (sb->size > TSYNC__TRUST_MAX_BYTES) {
        size_t size = sb->size;
        msgpack_sbuffer_destroy(sb);
        return einval(err, WHAT[kind], "%zu bytes, more than the limit of %u", size,
                      TSYNC__TRUST_MAX_BYTES);
    }
    *len = sb->size;
    *out = (uint8_t *)msgpack_sbuffer_release(sb);
    return 0;
nomem:
    msgpack_sbuffer_destroy(sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

static void start(msgpack_sbuffer *sb, msgpack_packer *pk)
{
    msgpack_sbuffer_init(sb);
    msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
}

static int head(msgpack_packer *pk, uint32_t kind)
{
    int rc = msgpack_pack_array(pk, FIELDS[kind]);
    if (rc == 0) rc = msgpack_pack_uint32(pk, kind);
    if (rc == 0) rc = msgpack_pack_uint32(pk, TSYNC__TRUST_FORMAT);
    return rc;
}

int tsync__req_sign(const tsync__req *r, const uint8_t device_sk[TSYNC__SK_BYTES], uint8_t **out,
                    size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_REQUEST;
    *out = NULL, *len = 0, err[0] = '\0';
    if (!tsync__trust_name_ok(r->device_name, r->device_name_len))
        return einval(err, WHAT[kind],
                      "device name must be 1..%u bytes of UTF-8 without control "
                      "characters",
                      TSYNC__TRUST_NAME_MAX);
    if (!key_pair(device_sk, r->device_pk))
        return einval(err, WHAT[kind], "the device key is not the signing key's public key");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, r->device_pk, TSYNC__PK_BYTES));
    PK(tsync__mp_pack_str(&pk, r->device_name, r->device_name_len));
    PK(msgpack_pack_uint64(&pk, r->created_ms));
    const uint8_t *sks[1] = {device_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

int tsync__cert_sign(const tsync__cert *c, const uint8_t admin_sk[TSYNC__SK_BYTES], uint8_t **out,
                     size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_CERT;
    *out = NULL, *len = 0, err[0] = '\0';
    if (!tsync__trust_name_ok(c->shop_name, c->shop_name_len))
        return einval(err, WHAT[kind], "bad shop name");
    if (!tsync__trust_name_ok(c->device_name, c->device_name_len))
        return einval(err, WHAT[kind], "bad device name");
    if (c->expires_ms <= c->not_before_ms)
        return einval(err, WHAT[kind], "expires before it becomes valid");
    if (sodium_memcmp(c->admin_pk, c->device_pk, TSYNC__PK_BYTES) == 0)
        return einval(err, WHAT[kind], "the device key is the admin key");
    if (!key_pair(admin_sk, c->admin_pk))
        return einval(err, WHAT[kind], "the admin key is not the signing key's public key");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, c->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(tsync__mp_pack_str(&pk, c->shop_name, c->shop_name_len));
    PK(tsync__mp_pack_bin(&pk, c->device_pk, TSYNC__PK_BYTES));
    PK(tsync__mp_pack_str(&pk, c->device_name, c->device_name_len));
    PK(msgpack_pack_uint64(&pk, c->not_before_ms));
    PK(msgpack_pack_uint64(&pk, c->expires_ms));
    PK(tsync__mp_pack_bin(&pk, c->admin_pk, TSYNC__PK_BYTES));
    const uint8_t *sks[1] = {admin_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

static int cutoff_cmp(const void *a, const void *b)
{
    return memcmp(((const tsync__cutoff *)a)->site, ((const tsync__cutoff *)b)->site,
                  TSYNC__SITE_BYTES);
}

int tsync__revocation_sign(const tsync__revocation *r, const uint8_t admin_sk[TSYNC__SK_BYTES],
                           uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_REVOCATION;
    *out = NULL, *len = 0, err[0] = '\0';
    if (r->ncutoffs > TSYNC__TRUST_MAX_CUTOFFS)
        return einval(err, WHAT[kind], "%" PRIu32 " cutoffs, more than %u", r->ncutoffs,
                      TSYNC__TRUST_MAX_CUTOFFS);
    if (!key_pair(admin_sk, r->admin_pk))
        return einval(err, WHAT[kind], "the admin key is not the signing key's public key");
    tsync__cutoff *cs = NULL;
    if (r->ncutoffs) {
        cs = malloc(r->ncutoffs * sizeof *cs);
        if (!cs) {
            snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
            return TSYNC_ENOMEM;
        }
        memcpy(cs, r->cutoffs, r->ncutoffs * sizeof *cs);
        qsort(cs, r->ncutoffs, sizeof *cs, cutoff_cmp);
        for (uint32_t i = 1; i < r->ncutoffs; i++)
            if (memcmp(cs[i - 1].site, cs[i].site, TSYNC__SITE_BYTES) == 0) {
                free(cs);
                return einval(err, WHAT[kind], "a site is given two cutoffs");
            }
    }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, r->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(tsync__mp_pack_bin(&pk, r->device_pk, TSYNC__PK_BYTES));
    PK(msgpack_pack_array(&pk, r->ncutoffs));
    for (uint32_t i = 0; i < r->ncutoffs; i++) {
        PK(msgpack_pack_array(&pk, 2));
        PK(tsync__mp_pack_bin(&pk, cs[i].site, TSYNC__SITE_BYTES));
        PK(msgpack_pack_uint64(&pk, cs[i].seq));
    }
    PK(msgpack_pack_uint64(&pk, r->issued_ms));
    PK(tsync__mp_pack_bin(&pk, r->admin_pk, TSYNC__PK_BYTES));
    free(cs);
    const uint8_t *sks[1] = {admin_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    free(cs);
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

int tsync__migration_sign(const tsync__migration_rec *m, const uint8_t admin_sk[TSYNC__SK_BYTES],
                          uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_MIGRATION;
    *out = NULL, *len = 0, err[0] = '\0';
    if (m->number == 0 || m->number > INT64_MAX)
        return einval(err, WHAT[kind], "number %" PRIu64 " is not 1..2^63-1", m->number);
    if (!tsync__trust_name_ok(m->name, m->name_len))
        return einval(err, WHAT[kind], "name: not 1..%u bytes of UTF-8 without control characters",
                      TSYNC__TRUST_NAME_MAX);
    if (m->sql_len == 0 || m->sql_len > TSYNC__TRUST_SQL_MAX || memchr(m->sql, 0, m->sql_len))
        return einval(err, WHAT[kind],
                      "the SQL is %" PRIu32 " bytes; a signed migration holds 1..%u bytes "
                      "without NUL (split it into several migrations)",
                      m->sql_len, TSYNC__TRUST_SQL_MAX);
    if (!key_pair(admin_sk, m->admin_pk))
        return einval(err, WHAT[kind], "the admin key is not the signing key's public key");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, m->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(msgpack_pack_uint64(&pk, m->number));
    PK(tsync__mp_pack_str(&pk, m->name, m->name_len));
    PK(tsync__mp_pack_bin(&pk, m->sql, m->sql_len));
    PK(msgpack_pack_uint64(&pk, m->issued_ms));
    PK(tsync__mp_pack_bin(&pk, m->admin_pk, TSYNC__PK_BYTES));
    const uint8_t *sks[1] = {admin_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

int tsync__rotation_sign(const tsync__rotation *r, const uint8_t old_sk[TSYNC__SK_BYTES],
                         const uint8_t new_sk[TSYNC__SK_BYTES], uint8_t **out, size_t *len,
                         char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_ROTATION;
    *out = NULL, *len = 0, err[0] = '\0';
    if (sodium_memcmp(r->old_pk, r->new_pk, TSYNC__PK_BYTES) == 0)
        return einval(err, WHAT[kind], "the new admin key is the old one");
    if (!key_pair(old_sk, r->old_pk) || !key_pair(new_sk, r->new_pk))
        return einval(err, WHAT[kind], "a public key does not match its signing key");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, r->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(tsync__mp_pack_bin(&pk, r->old_pk, TSYNC__PK_BYTES));
    PK(tsync__mp_pack_bin(&pk, r->new_pk, TSYNC__PK_BYTES));
    PK(msgpack_pack_uint64(&pk, r->issued_ms));
    const uint8_t *sks[2] = {old_sk, new_sk};
    return finish(&sb, &pk, kind, sks, 2, out, len, err);
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

static int seal_cmp(const void *a, const void *b)
{
    return memcmp(((const tsync__dk_seal *)a)->device_pk, ((const tsync__dk_seal *)b)->device_pk,
                  TSYNC__PK_BYTES);
}

int tsync__data_key_sign(const tsync__data_key_rec *k, const uint8_t admin_sk[TSYNC__SK_BYTES],
                         uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_DATA_KEY;
    *out = NULL, *len = 0, err[0] = '\0';
    if (k->epoch == 0) return einval(err, WHAT[kind], "epoch 0 (epochs start at 1)");
    if (k->nseals == 0 || k->nseals > TSYNC__DATA_KEY_MAX_DEVICES)
        return einval(err, WHAT[kind], "%" PRIu32 " devices; a data key is sealed to 1..%u devices",
                      k->nseals, TSYNC__DATA_KEY_MAX_DEVICES);
    if (!key_pair(admin_sk, k->admin_pk))
        return einval(err, WHAT[kind], "the admin key is not the signing key's public key");
    tsync__dk_seal *ss = malloc(k->nseals * sizeof *ss);
    if (!ss) {
        snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
        return TSYNC_ENOMEM;
    }
    memcpy(ss, k->seals, k->nseals * sizeof *ss);
    qsort(ss, k->nseals, sizeof *ss, seal_cmp);
    for (uint32_t i = 0; i < k->nseals; i++)
        if ((i && memcmp(ss[i - 1].device_pk, ss[i].device_pk, TSYNC__PK_BYTES) == 0) ||
            sodium_memcmp(ss[i].device_pk, k->admin_pk, TSYNC__PK_BYTES) == 0) {
            free(ss);
            return einval(err, WHAT[kind], "a device is given twice, or is the admin key");
        }
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, k->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(msgpack_pack_uint32(&pk, k->epoch));
    PK(msgpack_pack_array(&pk, k->nseals));
    for (uint32_t i = 0; i < k->nseals; i++) {
        PK(msgpack_pack_array(&pk, 2));
        PK(tsync__mp_pack_bin(&pk, ss[i].device_pk, TSYNC__PK_BYTES));
        PK(tsync__mp_pack_bin(&pk, ss[i].sealed, TSYNC__DATA_KEY_SEALED));
    }
    PK(msgpack_pack_uint64(&pk, k->issued_ms));
    PK(tsync__mp_pack_bin(&pk, k->admin_pk, TSYNC__PK_BYTES));
    free(ss);
    const uint8_t *sks[1] = {admin_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    free(ss);
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

int tsync__grant_sign(const tsync__grant_rec *g, const uint8_t admin_sk[TSYNC__SK_BYTES],
                      uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    const uint32_t kind = TSYNC__T_GRANT;
    *out = NULL, *len = 0, err[0] = '\0';
    if (g->nrelays == 0 || g->nrelays > TSYNC__GRANT_MAX_RELAYS)
        return einval(err, WHAT[kind], "%" PRIu32 " relays (1..%u allowed)", g->nrelays,
                      TSYNC__GRANT_MAX_RELAYS);
    for (uint32_t i = 0; i < g->nrelays; i++)
        if (!relay_addr_ok(g->relays[i].addr, g->relays[i].addr_len))
            return einval(err, WHAT[kind],
                          "relay address '%.*s' is not tcp://HOST:PORT in printable ASCII",
                          (int)(g->relays[i].addr_len > 255 ? 255 : g->relays[i].addr_len),
                          g->relays[i].addr);
    if (g->expires_ms <= g->issued_ms)
        return einval(err, WHAT[kind], "expires before it is issued");
    if (!key_pair(admin_sk, g->admin_pk))
        return einval(err, WHAT[kind], "the admin key is not the signing key's public key");
    msgpack_sbuffer sb;
    msgpack_packer pk;
    start(&sb, &pk);
    PK(head(&pk, kind));
    PK(tsync__mp_pack_bin(&pk, g->shop_id, TSYNC__SHOP_ID_BYTES));
    PK(msgpack_pack_array(&pk, g->nrelays));
    for (uint32_t i = 0; i < g->nrelays; i++) {
        PK(msgpack_pack_array(&pk, 2));
        PK(tsync__mp_pack_str(&pk, g->relays[i].addr, g->relays[i].addr_len));
        PK(tsync__mp_pack_bin(&pk, g->relays[i].pk, TSYNC__PK_BYTES));
    }
    PK(msgpack_pack_uint64(&pk, g->quota_mb));
    PK(msgpack_pack_uint64(&pk, g->expires_ms));
    PK(msgpack_pack_uint64(&pk, g->issued_ms));
    PK(tsync__mp_pack_bin(&pk, g->admin_pk, TSYNC__PK_BYTES));
    const uint8_t *sks[1] = {admin_sk};
    return finish(&sb, &pk, kind, sks, 1, out, len, err);
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", WHAT[kind]);
    return TSYNC_ENOMEM;
}

/* ---------------------------------------------------------------- armour */

#define BEGIN "-----BEGIN TILLSYNC "
#define END   "-----END TILLSYNC "
#define DASH  "-----"
#define LINE  64

const char *tsync__trust_label(uint32_t kind)
{
    return kind >= 1 && kind <= NKINDS ? LABEL[kind] : NULL;
}

int tsync__armour(uint32_t kind, const uint8_t *rec, size_t len, const char *comment, char **out)
{
    *out = NULL;
    const char *label = tsync__trust_label(kind);
    if (!label || len == 0 || len > TSYNC__TRUST_MAX_BYTES) return TSYNC_EINVAL;
    size_t b64len = sodium_base64_encoded_len(len, sodium_base64_VARIANT_ORIGINAL);
    size_t clen = comment ? strlen(comment) : 0, nlines = 1;
    for (size_t i = 0; i < clen; i++) nlines += comment[i] == '\n';
    size_t cap = clen + 3 * nlines + 2 * (strlen(BEGIN) + strlen(label) + strlen(DASH) + 1) + 4 +
                 b64len + b64len / LINE + 2;
    char *b64 = malloc(b64len), *s = malloc(cap);
    if (!b64 || !s) {
        free(b64), free(s);
        return TSYNC_ENOMEM;
    }
    sodium_bin2base64(b64, b64len, rec, len, sodium_base64_VARIANT_ORIGINAL);
    size_t o = 0;
    for (const char *c = comment; c && *c;) {
        const char *nl = strchr(c, '\n');
        size_t n = nl ? (size_t)(nl - c) : strlen(c);
        memcpy(s + o, "# ", 2), o += 2;
        memcpy(s + o, c, n), o += n;
        s[o++] = '\n';
        c += n + (nl ? 1 : 0);
    }
    o += (size_t)sprintf(s + o, "%s%s%s\n", BEGIN, label, DASH);
    size_t n = strlen(b64);
    for (size_t i = 0; i < n; i += LINE) {
        size_t k = n - i < LINE ? n - i : LINE;
        memcpy(s + o, b64 + i, k), o += k;
        s[o++] = '\n';
    }
    o += (size_t)sprintf(s + o, "%s%s%s\n", END, label, DASH);
    s[o] = '\0';
    free(b64);
    *out = s;
    return 0;
}

static const char *find(const char *h, size_t hn, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; hn >= n && i <= hn - n; i++)
        if (memcmp(h + i, needle, n) == 0) return h + i;
    return NULL;
}

int tsync__dearmour(const char *text, size_t len, size_t *pos, uint32_t *kind, uint8_t **rec,
                    size_t *rec_len, char err[TSYNC__ERRLEN])
{
    *rec = NULL, *rec_len = 0, *kind = 0;
    err[0] = '\0';
    if (*pos >= len) return TSYNC_ENOTFOUND;
    const char *t = text + *pos, *end = text + len;
    const char *b = find(t, (size_t)(end - t), BEGIN);
    if (!b) return TSYNC_ENOTFOUND;
    const char *lab = b + strlen(BEGIN);
    uint32_t k = 0;
    for (uint32_t i = 1; i <= NKINDS; i++) {
        size_t ln = strlen(LABEL[i]);
        if ((size_t)(end - lab) >= ln + strlen(DASH) && memcmp(lab, LABEL[i], ln) == 0 &&
            memcmp(lab + ln, DASH, strlen(DASH)) == 0)
            k = i;
    }
    if (!k) {
        snprintf(err, TSYNC__ERRLEN, "armour: unknown block type after '%s'", BEGIN);
        return TSYNC_ECORRUPT;
    }
    const char *body = lab + strlen(LABEL[k]) + strlen(DASH);
    char endline[64];
    snprintf(endline, sizeof endline, "%s%s%s", END, LABEL[k], DASH);
    const char *e = find(body, (size_t)(end - body), endline);
    if (!e) {
        snprintf(err, TSYNC__ERRLEN, "armour: no '%s' line (the block is cut off)", endline);
        return TSYNC_ECORRUPT;
    }
    size_t blen = (size_t)(e - body);
    size_t cap = blen / 4 * 3 + 3;
    if (cap > TSYNC__TRUST_MAX_BYTES + 3) cap = TSYNC__TRUST_MAX_BYTES + 3;
    uint8_t *bin = malloc(cap ? cap : 1);
    if (!bin) return TSYNC_ENOMEM;
    const char *b64end = NULL;
    size_t n = 0;
    if (sodium_base642bin(bin, cap, body, blen, " \t\r\n", &n, &b64end,
                          sodium_base64_VARIANT_ORIGINAL) != 0 ||
        b64end != e || n == 0) {
        free(bin);
        snprintf(err, TSYNC__ERRLEN, "armour: the %s block is not valid base64%s", LABEL[k],
                 blen / 4 * 3 > TSYNC__TRUST_MAX_BYTES ? " (or too long)" : "");
        return TSYNC_ECORRUPT;
    }
    if (n > TSYNC__TRUST_MAX_BYTES) {
        free(bin);
        snprintf(err, TSYNC__ERRLEN, "armour: the %s block is longer than %u bytes", LABEL[k],
                 TSYNC__TRUST_MAX_BYTES);
        return TSYNC_ECORRUPT;
    }
    *pos = (size_t)(e - text) + strlen(endline);
    *kind = k;
    *rec = bin;
    *rec_len = n;
    return 0;
}
