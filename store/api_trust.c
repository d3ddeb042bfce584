/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_trust.c — the public API of shop trust, the admin's half (include/tillsync/trust.h):
 * records as data, their text armour, the shop admin key file and what it signs. The byte formats
 * are codec/cert.c's, the key file's reading and writing store/trust.c's; this file turns them
 * into the public conventions (outputs first, versioned structs, the last error recorded).
 * The till's half (enrolment, the trust set, the revocation preview) is store/api_trust_store.c.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api_trust_int.h"
#include "store/trust.h"
#include "tillsync/trust.h"

/* The public sizes are the formats' own: a mismatch is a build error, not a silent copy bug. */
_Static_assert(TSYNC_PUBLIC_KEY_BYTES == TSYNC__PK_BYTES, "public key size");
_Static_assert(TSYNC_SHOP_ID_BYTES == TSYNC__SHOP_ID_BYTES, "shop id size");
_Static_assert(TSYNC_TRUST_NAME_MAX == TSYNC__TRUST_NAME_MAX, "name size");
_Static_assert(TSYNC_TRUST_RECORD_MAX == TSYNC__TRUST_MAX_BYTES, "record size");
_Static_assert(TSYNC_SITE_ID_BYTES == TSYNC__SITE_BYTES, "site id size");
_Static_assert(TSYNC_HASH_BYTES == TSYNC__HASH_BYTES, "hash size");

#define DEFAULT_DAYS 365u
#define DAY_MS       86400000ull

int tsync__api_version(unsigned int got, unsigned int known, const char *what)
{
    if (got >= 1 && got <= known) return 0;
    return tsync__err(TSYNC_EVERSION, "%s version %u is not one this library knows (1..%u)", what,
                      got, known);
}

void tsync__api_name(char out[TSYNC_TRUST_NAME_MAX + 1], const char *s, size_t n)
{
    if (n > TSYNC_TRUST_NAME_MAX) n = TSYNC_TRUST_NAME_MAX;
    memcpy(out, s, n);
    out[n] = '\0';
}

const char *tsync_trust_kind_label(int kind)
{
    return kind > 0 ? tsync__trust_label((uint32_t)kind) : NULL;
}

/* ---------------------------------------------------------------- records as data */

/* tsync__trust_decode with its message recorded as the last error; a is freed on failure. */
static int decode(const uint8_t *rec, size_t len, tsync__trust_rec *t, tsync__arena *a)
{
    char err[TSYNC__ERRLEN];
    int rc = tsync__trust_decode(rec, len, t, a, err);
    if (rc) {
        tsync__arena_free(a);
        return tsync__err(rc, "%s", err);
    }
    return 0;
}

void tsync_trust_record_clear(tsync_trust_record *r)
{
    if (!r) return;
    unsigned int v = r->version;
    free(r->cutoffs);
    memset(r, 0, sizeof *r);
    r->version = v;
}

int tsync_trust_record_decode(tsync_trust_record *out, const uint8_t *rec, size_t len)
{
    if (!out || !rec) return tsync__err(TSYNC_EINVAL, "no record given");
    int rc = tsync__api_version(out->version, TSYNC_TRUST_RECORD_VERSION, "tsync_trust_record");
    if (rc) return rc;
    tsync_trust_record_clear(out);
    tsync__arena a = {0};
    tsync__trust_rec t;
    if ((rc = decode(rec, len, &t, &a))) return rc;
    out->kind = (int)t.kind;
    switch (t.kind) {
    case TSYNC__T_REQUEST:
        memcpy(out->device_key, t.u.req.device_pk, TSYNC__PK_BYTES);
        tsync__api_name(out->device_name, t.u.req.device_name, t.u.req.device_name_len);
        out->issued_ms = t.u.req.created_ms;
        break;
    case TSYNC__T_CERT:
        memcpy(out->shop_id, t.u.cert.shop_id, TSYNC__SHOP_ID_BYTES);
        tsync__api_name(out->shop_name, t.u.cert.shop_name, t.u.cert.shop_name_len);
        memcpy(out->device_key, t.u.cert.device_pk, TSYNC__PK_BYTES);
        tsync__api_name(out->device_name, t.u.cert.device_name, t.u.cert.device_name_len);
        memcpy(out->admin_key, t.u.cert.admin_pk, TSYNC__PK_BYTES);
        out->issued_ms = out->not_before_ms = t.u.cert.not_before_ms;
        out->expires_ms = t.u.cert.expires_ms;
        break;
    case TSYNC__T_REVOCATION:
        memcpy(out->shop_id, t.u.rev.shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(out->device_key, t.u.rev.device_pk, TSYNC__PK_BYTES);
        memcpy(out->admin_key, t.u.rev.admin_pk, TSYNC__PK_BYTES);
        out->issued_ms = t.u.rev.issued_ms;
        if (t.u.rev.ncutoffs) {
            out->cutoffs = malloc(t.u.rev.ncutoffs * sizeof *out->cutoffs);
            if (!out->cutoffs) {
                tsync__arena_free(&a);
                return tsync__err(TSYNC_ENOMEM, "out of memory");
            }
            for (uint32_t i = 0; i < t.u.rev.ncutoffs; i++) {
                memcpy(out->cutoffs[i].site_id, t.u.rev.cutoffs[i].site, TSYNC__SITE_BYTES);
                out->cutoffs[i].seq = t.u.rev.cutoffs[i].seq;
            }
            out->ncutoffs = t.u.rev.ncutoffs;
        }
        break;
    case TSYNC__T_ROTATION:
        memcpy(out->shop_id, t.u.rot.shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(out->admin_key, t.u.rot.old_pk, TSYNC__PK_BYTES);
        memcpy(out->new_admin_key, t.u.rot.new_pk, TSYNC__PK_BYTES);
        out->issued_ms = t.u.rot.issued_ms;
        break;
    case TSYNC__T_MIGRATION:
        memcpy(out->shop_id, t.u.mig.shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(out->admin_key, t.u.mig.admin_pk, TSYNC__PK_BYTES);
        out->issued_ms = t.u.mig.issued_ms;
        out->migration_number = t.u.mig.number;
        tsync__api_name(out->migration_name, t.u.mig.name, t.u.mig.name_len);
        out->sql_len = t.u.mig.sql_len;
        crypto_generichash(out->sql_hash, TSYNC__HASH_BYTES, t.u.mig.sql, t.u.mig.sql_len, NULL, 0);
        break;
    case TSYNC__T_DATA_KEY:
        memcpy(out->shop_id, t.u.dkey.shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(out->admin_key, t.u.dkey.admin_pk, TSYNC__PK_BYTES);
        out->issued_ms = t.u.dkey.issued_ms;
        break;
    case TSYNC__T_GRANT:
        memcpy(out->shop_id, t.u.grant.shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(out->admin_key, t.u.grant.admin_pk, TSYNC__PK_BYTES);
        out->issued_ms = t.u.grant.issued_ms;
        out->expires_ms = t.u.grant.expires_ms;
        break;
    }
    tsync__arena_free(&a);
    return 0;
}

/* ---------------------------------------------------------------- text armour */

void tsync_trust_records_clear(tsync_trust_records *r)
{
    if (!r) return;
    unsigned int v = r->version;
    for (size_t i = 0; i < r->n; i++) free(r->records[i]);
    free(r->records);
    free(r->lens);
    memset(r, 0, sizeof *r);
    r->version = v;
}

static int records_add(tsync_trust_records *r, uint8_t *rec, size_t len)
{
    uint8_t **nr = realloc(r->records, (r->n + 1) * sizeof *nr);
    if (nr) r->records = nr;
    size_t *nl = realloc(r->lens, (r->n + 1) * sizeof *nl);
    if (nl) r->lens = nl;
    if (!nr || !nl) {
        free(rec);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    r->records[r->n] = rec;
    r->lens[r->n++] = len;
    return 0;
}

/* Drops the records appended after the first `keep`. */
static void records_cut(tsync_trust_records *r, size_t keep)
{
    while (r->n > keep) free(r->records[--r->n]);
}

int tsync_trust_records_parse(tsync_trust_records *out, const char *text, size_t len)
{
    if (!out || (!text && len)) return tsync__err(TSYNC_EINVAL, "no text given");
    int rc = tsync__api_version(out->version, TSYNC_TRUST_RECORDS_VERSION, "tsync_trust_records");
    if (rc) return rc;
    size_t pos = 0, found = 0, keep = out->n;
    char err[TSYNC__ERRLEN];
    for (;;) {
        uint32_t kind;
        uint8_t *rec;
        size_t rlen;
        rc = tsync__dearmour(text, len, &pos, &kind, &rec, &rlen, err);
        if (rc == TSYNC_ENOTFOUND) break;
        if (rc) {
            records_cut(out, keep);
            return tsync__err(rc, "%s", err[0] ? err : "out of memory");
        }
        if (rlen >= 2 && rec[0] >= 0x90 && rec[0] <= 0x9f && rec[1] >= 1 && rec[1] <= 5 &&
            rec[1] != kind) {
            /* the record's own kind (its second byte: [array, kind, ...]) must match the label;
             * anything malformed is left for the decoder to explain */
            free(rec);
            records_cut(out, keep);
            return tsync__err(TSYNC_ECORRUPT, "the block labelled %s holds another kind of record",
                              tsync__trust_label(kind));
        }
        if ((rc = records_add(out, rec, rlen))) {
            records_cut(out, keep);
            return rc;
        }
        found++;
    }
    if (found) return 0;
    /* no armour: the text may be one record as raw bytes (a msgpack array) */
    if (len == 0 || (uint8_t)text[0] < 0x90 || (uint8_t)text[0] > 0x9f)
        return tsync__err(TSYNC_ENOTFOUND,
                          "holds no tillsync record (no '-----BEGIN TILLSYNC ...' block)");
    uint8_t *rec = malloc(len);
    if (!rec) return tsync__err(TSYNC_ENOMEM, "out of memory");
    memcpy(rec, text, len);
    return records_add(out, rec, len);
}

int tsync_trust_armour(char **out, const uint8_t *rec, size_t len, const char *comment)
{
    if (!out) return tsync__err(TSYNC_EINVAL, "no output given");
    *out = NULL;
    /* The kind is the record's second byte ([fixarray, kind, ...]); the rest is the decoder's. */
    if (!rec || len < 2 || len > TSYNC__TRUST_MAX_BYTES || rec[0] < 0x90 || rec[0] > 0x9f ||
        !tsync__trust_label(rec[1]))
        return tsync__err(TSYNC_EINVAL, "not a trust record of a known kind");
    int rc = tsync__armour(rec[1], rec, len, comment, out);
    return rc ? tsync__err(rc, rc == TSYNC_ENOMEM ? "out of memory" : "cannot armour the record")
              : 0;
}

/* ---------------------------------------------------------------- the shop admin key */

static tsync_shop_key *key_new(void)
{
    tsync_shop_key *k = calloc(1, sizeof *k);
    if (!k) tsync__err(TSYNC_ENOMEM, "out of memory");
    return k;
}

void tsync_shop_key_free(tsync_shop_key *k)
{
    if (!k) return;
    tsync__shopkey_wipe(&k->k);
    tsync__shopkey_ext_free(&k->x);
    free(k->path);
    free(k);
}

int tsync_shop_key_create(tsync_shop_key **out, const char *path, const char *name)
{
    if (out) *out = NULL;
    if (!path) return tsync__err(TSYNC_EINVAL, "no key file given");
    tsync_shop_key *k = key_new();
    if (!k) return TSYNC_ENOMEM;
    int rc = tsync__shopkey_create_ext(path, name, tsync__wall_ms(), &k->k, &k->x);
    if (rc == 0 && !(k->path = strdup(path))) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc || !out)
        tsync_shop_key_free(k);
    else
        *out = k;
    return rc;
}

int tsync_shop_key_load(tsync_shop_key **out, const char *path)
{
    if (!out || !path) return tsync__err(TSYNC_EINVAL, "no key file given");
    *out = NULL;
    tsync_shop_key *k = key_new();
    if (!k) return TSYNC_ENOMEM;
    int rc = tsync__shopkey_load_ext(path, &k->k, &k->x);
    if (rc == 0 && !(k->path = strdup(path))) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc)
        tsync_shop_key_free(k);
    else
        *out = k;
    return rc;
}

int tsync_shop_key_sniff(const void *head, size_t n)
{
    return head && n >= 8 && memcmp(head, "TSYNCSHP", 8) == 0;
}

int tsync_shop_key_info(tsync_shop_info *out, const tsync_shop_key *k)
{
    if (!out || !k) return tsync__err(TSYNC_EINVAL, "no key given");
    int rc = tsync__api_version(out->version, TSYNC_SHOP_INFO_VERSION, "tsync_shop_info");
    if (rc) return rc;
    memcpy(out->shop_id, k->k.shop_id, TSYNC__SHOP_ID_BYTES);
    tsync__api_name(out->shop_name, k->k.name, k->k.name_len);
    memcpy(out->admin_key, k->k.pk, TSYNC__PK_BYTES);
    out->created_ms = k->k.created_ms;
    return 0;
}

int tsync__api_sign_options(const tsync_sign_options *opts, unsigned *days, const char **name)
{
    *days = DEFAULT_DAYS, *name = NULL;
    if (!opts) return 0;
    int rc = tsync__api_version(opts->version, TSYNC_SIGN_OPTIONS_VERSION, "tsync_sign_options");
    if (rc) return rc;
    if (opts->days > TSYNC_TRUST_MAX_DAYS)
        return tsync__err(TSYNC_EINVAL, "a certificate is valid for 1 to %u days, not %u",
                          TSYNC_TRUST_MAX_DAYS, opts->days);
    if (opts->days) *days = opts->days;
    *name = opts->device_name;
    return 0;
}

int tsync_shop_key_sign_request(uint8_t **cert, size_t *cert_len, const tsync_shop_key *k,
                                const uint8_t *req, size_t req_len, const tsync_sign_options *opts)
{
    if (!cert || !cert_len || !k || !req) return tsync__err(TSYNC_EINVAL, "no request given");
    *cert = NULL, *cert_len = 0;
    unsigned days;
    const char *name;
    int rc = tsync__api_sign_options(opts, &days, &name);
    if (rc) return rc;
    tsync__arena a = {0};
    tsync__trust_rec r;
    if ((rc = decode(req, req_len, &r, &a))) return rc;
    if (r.kind != TSYNC__T_REQUEST) {
        tsync__arena_free(&a);
        return tsync__err(TSYNC_EINVAL, "this is a %s record, not an enrolment request",
                          tsync__trust_label(r.kind));
    }
    uint64_t now = tsync__wall_ms();
    tsync__cert c = {
        .shop_name = k->k.name,
        .shop_name_len = k->k.name_len,
        .device_name = name ? name : r.u.req.device_name,
        .device_name_len = name ? (uint32_t)strlen(name) : r.u.req.device_name_len,
        .not_before_ms = now,
        .expires_ms = now + (uint64_t)days * DAY_MS,
    };
    memcpy(c.shop_id, k->k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(c.device_pk, r.u.req.device_pk, TSYNC__PK_BYTES);
    memcpy(c.admin_pk, k->k.pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    rc = tsync__cert_sign(&c, k->k.sk, cert, cert_len, err);
    tsync__arena_free(&a);
    return rc ? tsync__err(rc, "%s", err) : 0;
}

int tsync_shop_key_revoke(uint8_t **rev, size_t *rev_len, const tsync_shop_key *k,
                          const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                          const tsync_cutoff *cutoffs, size_t ncutoffs)
{
    if (!rev || !rev_len || !k || !device_key || (ncutoffs && !cutoffs))
        return tsync__err(TSYNC_EINVAL, "no device key given");
    *rev = NULL, *rev_len = 0;
    if (ncutoffs > TSYNC__TRUST_MAX_CUTOFFS)
        return tsync__err(TSYNC_EINVAL, "a revocation names at most %u sites, not %zu",
                          TSYNC__TRUST_MAX_CUTOFFS, ncutoffs);
    tsync__revocation v = {.issued_ms = tsync__wall_ms(), .ncutoffs = (uint32_t)ncutoffs};
    v.cutoffs = tsync__api_cutoffs_in(cutoffs, ncutoffs);
    if (ncutoffs && !v.cutoffs) return TSYNC_ENOMEM;
    memcpy(v.device_pk, device_key, TSYNC__PK_BYTES);
    memcpy(v.shop_id, k->k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(v.admin_pk, k->k.pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    int rc = tsync__revocation_sign(&v, k->k.sk, rev, rev_len, err);
    free(v.cutoffs);
    return rc ? tsync__err(rc, "%s", err) : 0;
}

int tsync_shop_key_rotate(tsync_shop_key **new_key, uint8_t **rot, size_t *rot_len,
                          const tsync_shop_key *k, const char *new_path)
{
    if (new_key) *new_key = NULL;
    if (!rot || !rot_len || !k || !new_path) return tsync__err(TSYNC_EINVAL, "no key given");
    *rot = NULL, *rot_len = 0;
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    tsync_shop_key *nk = key_new();
    if (!nk) return TSYNC_ENOMEM;
    uint8_t seed[32];
    char err[TSYNC__ERRLEN];
    randombytes_buf(seed, sizeof seed);
    int rc = tsync__shopkey_init(&nk->k, seed, k->k.shop_id, k->k.name, k->k.name_len,
                                 tsync__wall_ms(), err);
    sodium_memzero(seed, sizeof seed);
    if (rc) {
        tsync_shop_key_free(nk);
        return tsync__err(rc, "%s", err);
    }
    tsync__rotation t = {.issued_ms = nk->k.created_ms};
    memcpy(t.shop_id, k->k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(t.old_pk, k->k.pk, TSYNC__PK_BYTES);
    memcpy(t.new_pk, nk->k.pk, TSYNC__PK_BYTES);
    rc = tsync__rotation_sign(&t, k->k.sk, nk->k.sk, rot, rot_len, err);
    if (rc)
        rc = tsync__err(rc, "%s", err);
    else /* the new key file keeps the data keys and devices: same shop */
        rc = tsync__shopkey_write_ext(new_path, &nk->k, &k->x);
    if (rc == 0 && !(nk->path = strdup(new_path))) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) rc = tsync__shopkey_ext_copy(&nk->x, &k->x);
    if (rc) {
        free(*rot);
        *rot = NULL, *rot_len = 0;
        tsync_shop_key_free(nk);
        return rc;
    }
    if (new_key)
        *new_key = nk;
    else
        tsync_shop_key_free(nk);
    return 0;
}

int tsync_migration_number(int64_t *number, const char *file_name)
{
    if (number) *number = 0;
    if (!number || !file_name) return tsync__err(TSYNC_EINVAL, "no file name given");
    int64_t v = 0;
    int digits = 0;
    const char *p = file_name;
    while (*p >= '0' && *p <= '9' && ++digits <= 18) v = v * 10 + (*p++ - '0');
    size_t n = strlen(file_name);
    if (!digits || digits > 18 || v == 0 || *p != '_' || n < 5 ||
        strcmp(file_name + n - 4, ".sql") != 0 || (size_t)(p - file_name) + 1 >= n - 4)
        return tsync__err(TSYNC_EINVAL, "a migration file is named NUMBER_NAME.sql "
                                        "(001_add_note.sql), as in a migrations folder");
    *number = v;
    return 0;
}

int tsync_shop_key_sign_migration(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                                  const char *file_name, const void *sql, size_t sql_len)
{
    if (!rec || !rec_len || !k || !file_name || (!sql && sql_len))
        return tsync__err(TSYNC_EINVAL, "no migration given");
    *rec = NULL, *rec_len = 0;
    int64_t number;
    int rc = tsync_migration_number(&number, file_name);
    if (rc) return rc;
    tsync__migration_rec m = {.number = (uint64_t)number,
                              .name = file_name,
                              .name_len = (uint32_t)strlen(file_name),
                              .sql = (const uint8_t *)sql,
                              /* the signer explains a length it refuses */
                              .sql_len = sql_len > UINT32_MAX ? UINT32_MAX : (uint32_t)sql_len,
                              .issued_ms = tsync__wall_ms()};
    memcpy(m.shop_id, k->k.shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(m.admin_pk, k->k.pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    rc = tsync__migration_sign(&m, k->k.sk, rec, rec_len, err);
    return rc ? tsync__err(rc, "%s", err) : 0;
}

tsync__cutoff *tsync__api_cutoffs_in(const tsync_cutoff *c, size_t n)
{
    tsync__cutoff *v = n ? malloc(n * sizeof *v) : NULL;
    if (n && !v) {
        tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        memcpy(v[i].site, c[i].site_id, TSYNC__SITE_BYTES);
        v[i].seq = c[i].seq;
    }
    return v;
}

void tsync__api_cutoffs_out(tsync_cutoff *out, const tsync__cutoff *c, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        memcpy(out[i].site_id, c[i].site, TSYNC__SITE_BYTES);
        out[i].seq = c[i].seq;
    }
}

const tsync__shopkey *tsync__api_shopkey(const tsync_shop_key *k)
{
    return &k->k;
}
