/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/cert.h — the byte formats of shop trust: the shop admin key file, the enrolment request a
 * device makes, the certificate the admin signs, the revocation, and the admin key rotation; how
 * each is signed and verified, and the text armour that lets them travel by e-mail or paste.
 *
 * Design notes
 * - Pure, like the rest of crdt/: no files, no clock, no SQLite. Times are passed in (Unix ms).
 * - Every record is one msgpack array whose first two elements are its kind and format, and whose
 *   last element(s) are Ed25519 signatures. A signature signs "tsync-<kind>-v1" followed by the
 *   BLAKE2b-256 of every byte of the encoding before the first signature (the array header
 *   included), like a batch signature signs its hash. The encoding is canonical (smallest form
 *   of every int, length and count) and the decoder insists on it, so a record has exactly one
 *   byte string and "same record" means "same bytes" (its BLAKE2b-256 is its id for
 *   de-duplication).
 * - Decoding always verifies the signatures against the keys the record itself names (the device
 *   key for a request, the admin key for the others). Whether that admin key is *this shop's* key
 *   is a question for the database (store/trust.c), not for the format.
 * - Decoded records point into the input buffer; the cutoff list of a revocation lives in an
 *   arena freed as one.
 *
 * THREAD SAFETY: every function is reentrant.
 */
#ifndef TSYNC_CRDT_CERT_H
#define TSYNC_CRDT_CERT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

#define TSYNC__SHOP_ID_BYTES     16
#define TSYNC__TRUST_FORMAT      1u
#define TSYNC__TRUST_NAME_MAX    64u        /* bytes of a shop or device name (UTF-8) */
#define TSYNC__TRUST_MAX_CUTOFFS 128u       /* sites named by one revocation */
#define TSYNC__TRUST_MAX_BYTES   4096u      /* one encoded record (= TSYNC__WIRE_CERT_MAX) */
#define TSYNC__SHOPKEY_MAX_BYTES (1u << 20) /* hard limit of an admin key file */

/* What a record is: its first msgpack element. */
typedef enum {
    TSYNC__T_REQUEST = 1,    /* device -> admin: "please certify my key" (signed by the device) */
    TSYNC__T_CERT = 2,       /* admin -> shop: "this key is a device of my shop until ..." */
    TSYNC__T_REVOCATION = 3, /* admin -> shop: "refuse this key, keep its batches up to ..." */
    TSYNC__T_ROTATION = 4,   /* old admin key and new admin key: "the shop's key is now ..." */
    TSYNC__T_MIGRATION = 5,  /* admin -> shop: "every till runs this migration, in order" */
    TSYNC__T_DATA_KEY = 6,   /* admin -> shop: "the data key of epoch N, sealed to each device" */
    TSYNC__T_GRANT = 7,      /* admin -> shop and relay: "these relays serve my shop until ..." */
} tsync__trust_kind;

/* Data keys and grants (docs/RELAY_KEYS.md). A data key record seals the 32-byte key to each
 * device with crypto_box_seal to the X25519 form of its Ed25519 key: 80 bytes a device, so the
 * 4096-byte record limit holds TSYNC__DATA_KEY_MAX_DEVICES. */
#define TSYNC__DATA_KEY_BYTES       32u
#define TSYNC__DATA_KEY_SEALED      80u /* crypto_box_SEALBYTES + 32 */
#define TSYNC__DATA_KEY_MAX_DEVICES 32u
#define TSYNC__GRANT_MAX_RELAYS     8u
#define TSYNC__GRANT_ADDR_MAX       255u /* bytes of a relay address */

/* Bytes of SQL in a signed migration: the whole record fits TSYNC__TRUST_MAX_BYTES. */
#define TSYNC__TRUST_SQL_MAX 3584u

/* Wire format (msgpack, exactly these types; names are str of 1..64 bytes of UTF-8 without
 * control characters; times are Unix ms):
 *   request:    [1, 1, device_pk:bin32, device_name:str, created_ms:uint, sig:bin64]
 *   cert:       [2, 1, shop_id:bin16, shop_name:str, device_pk:bin32, device_name:str,
 *                not_before_ms:uint, expires_ms:uint (> not_before_ms), admin_pk:bin32, sig:bin64]
 *   revocation: [3, 1, shop_id:bin16, device_pk:bin32, cutoffs:[[site:bin16, seq:uint]...],
 *                issued_ms:uint, admin_pk:bin32, sig:bin64]
 *               cutoffs sorted by site, no site twice, at most TSYNC__TRUST_MAX_CUTOFFS
 *   rotation:   [4, 1, shop_id:bin16, old_pk:bin32, new_pk:bin32 (!= old_pk), issued_ms:uint,
 *                old_sig:bin64, new_sig:bin64]
 *   migration:  [5, 1, shop_id:bin16, number:uint >= 1, name:str, sql:bin, issued_ms:uint,
 *                admin_pk:bin32, sig:bin64]
 *               name: the migration's file name (NUMBER_NAME.sql), the rules of names; sql:
 *               1..TSYNC__TRUST_SQL_MAX bytes without NUL
 *   data key:   [6, 1, shop_id:bin16, epoch:uint 1..2^32-1,
 *                seals:[[device_pk:bin32, sealed:bin80]...], issued_ms:uint, admin_pk:bin32,
 *                sig:bin64]
 *               1..TSYNC__DATA_KEY_MAX_DEVICES seals sorted by device key, no key twice, not the
 *               admin key; sealed = crypto_box_seal(key, X25519 form of device_pk)
 *   grant:      [7, 1, shop_id:bin16, relays:[[addr:str, relay_pk:bin32]...], quota_mb:uint,
 *                expires_ms:uint (> issued_ms), issued_ms:uint, admin_pk:bin32, sig:bin64]
 *               1..TSYNC__GRANT_MAX_RELAYS relays in the admin's order of preference; addr:
 *               "tcp://" then 1..249 printable ASCII bytes; quota_mb 0 means no quota
 * Signed message: domain || BLAKE2b-256(the bytes before the first signature); domains
 * "tsync-req-v1", "tsync-cert-v1", "tsync-rev-v1", "tsync-rot-v1", "tsync-mig-v1",
 * "tsync-dkey-v1", "tsync-grant-v1" (both rotation
 * signatures sign the same message). A certificate's device key may not be its admin key.
 */

typedef struct {
    uint8_t device_pk[TSYNC__PK_BYTES];
    const char *device_name; /* not NUL-terminated */
    uint32_t device_name_len;
    uint64_t created_ms;
} tsync__req;

typedef struct {
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    const char *shop_name;
    uint32_t shop_name_len;
    uint8_t device_pk[TSYNC__PK_BYTES];
    const char *device_name;
    uint32_t device_name_len;
    uint64_t not_before_ms; /* judged by wall time for sessions only (see store/trust.h) */
    uint64_t expires_ms;    /* wall time for sessions, batch HLC for data */
    uint8_t admin_pk[TSYNC__PK_BYTES];
} tsync__cert;

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq; /* the last batch of site still admitted; 0: none */
} tsync__cutoff;

typedef struct {
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    uint8_t device_pk[TSYNC__PK_BYTES];
    uint32_t ncutoffs;
    tsync__cutoff *cutoffs; /* sorted by site; a site not listed has cutoff 0 */
    uint64_t issued_ms;
    uint8_t admin_pk[TSYNC__PK_BYTES];
} tsync__revocation;

typedef struct {
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    uint8_t old_pk[TSYNC__PK_BYTES];
    uint8_t new_pk[TSYNC__PK_BYTES];
    uint64_t issued_ms;
} tsync__rotation;

/* A schema migration signed by the shop admin (docs/MIGRATIONS.md, "Signed migrations"). */
typedef struct {
    uint8_t admin_pk[TSYNC__PK_BYTES];
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    uint64_t number;  /* its place in the order, as in the file name */
    const char *name; /* the file name, not NUL-terminated */
    uint32_t name_len;
    const uint8_t *sql; /* the file's bytes */
    uint32_t sql_len;
    uint64_t issued_ms;
} tsync__migration_rec;

typedef struct {
    uint8_t device_pk[TSYNC__PK_BYTES];
    uint8_t sealed[TSYNC__DATA_KEY_SEALED];
} tsync__dk_seal;

/* The shop data key of one epoch, sealed to every device certified when it was issued. */
typedef struct {
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    uint32_t epoch;
    uint32_t nseals;
    tsync__dk_seal *seals; /* sorted by device_pk */
    uint64_t issued_ms;
    uint8_t admin_pk[TSYNC__PK_BYTES];
} tsync__data_key_rec;

typedef struct {
    const char *addr; /* not NUL-terminated */
    uint32_t addr_len;
    uint8_t pk[TSYNC__PK_BYTES]; /* the relay's public key */
} tsync__grant_relay;

/* The shop's admission at its relays. */
typedef struct {
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    uint32_t nrelays;
    tsync__grant_relay *relays;
    uint64_t quota_mb; /* 0: no quota */
    uint64_t expires_ms;
    uint64_t issued_ms;
    uint8_t admin_pk[TSYNC__PK_BYTES];
} tsync__grant_rec;

/* Any decoded record. */
typedef struct {
    uint32_t kind; /* tsync__trust_kind */
    union {
        tsync__req req;
        tsync__cert cert;
        tsync__revocation rev;
        tsync__rotation rot;
        tsync__migration_rec mig;
        tsync__data_key_rec dkey;
        tsync__grant_rec grant;
    } u;
} tsync__trust_rec;

/* Strictly decodes a record of any kind and verifies its signature(s) against the key(s) it
 * names. Cutoffs are allocated in a; names point into buf, which must outlive *out.
 * Errors (with a one-line message in err): TSYNC_ECORRUPT (malformed: wrong types, lengths,
 * non-canonical encoding, bad name, unsorted cutoffs, trailing bytes, more than
 * TSYNC__TRUST_MAX_BYTES), TSYNC_EVERSION (unknown kind or format), TSYNC_EBADSIG (a signature
 * does not verify), TSYNC_ENOMEM. */
TSYNC_WARN_UNUSED int tsync__trust_decode(const uint8_t *buf, size_t len, tsync__trust_rec *out,
                                          tsync__arena *a, char err[TSYNC__ERRLEN]);

/* The id of a record: BLAKE2b-256 of its bytes. */
void tsync__trust_id(const uint8_t *buf, size_t len, uint8_t out[TSYNC__HASH_BYTES]);

/* Encoders. Each checks what the decoder checks, writes a new malloc'd buffer (*out, *len; the
 * caller frees) and signs it. The public keys in the struct must be those of the secret keys
 * given (TSYNC_EINVAL otherwise). */
int tsync__req_sign(const tsync__req *r, const uint8_t device_sk[TSYNC__SK_BYTES], uint8_t **out,
                    size_t *len, char err[TSYNC__ERRLEN]);
int tsync__cert_sign(const tsync__cert *c, const uint8_t admin_sk[TSYNC__SK_BYTES], uint8_t **out,
                     size_t *len, char err[TSYNC__ERRLEN]);
/* Cutoffs may come in any order; they are written sorted. A site given twice: TSYNC_EINVAL. */
int tsync__revocation_sign(const tsync__revocation *r, const uint8_t admin_sk[TSYNC__SK_BYTES],
                           uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);
int tsync__rotation_sign(const tsync__rotation *r, const uint8_t old_sk[TSYNC__SK_BYTES],
                         const uint8_t new_sk[TSYNC__SK_BYTES], uint8_t **out, size_t *len,
                         char err[TSYNC__ERRLEN]);

int tsync__migration_sign(const tsync__migration_rec *m, const uint8_t admin_sk[TSYNC__SK_BYTES],
                          uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);

/* Seals may come in any order; they are written sorted. A device given twice, or the admin key
 * as a device: TSYNC_EINVAL. */
int tsync__data_key_sign(const tsync__data_key_rec *d, const uint8_t admin_sk[TSYNC__SK_BYTES],
                         uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);
int tsync__grant_sign(const tsync__grant_rec *g, const uint8_t admin_sk[TSYNC__SK_BYTES],
                      uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);

/* Seals a data key to a device (Ed25519 public key). TSYNC_EINVAL when the key has no X25519
 * form (not a valid point). */
int tsync__data_key_seal(const uint8_t key[TSYNC__DATA_KEY_BYTES],
                         const uint8_t device_pk[TSYNC__PK_BYTES],
                         uint8_t out[TSYNC__DATA_KEY_SEALED]);
/* Opens the seal of device (its Ed25519 secret key, libsodium layout) in d. 0 and key filled,
 * TSYNC_ENOTFOUND when d has no seal for the device, TSYNC_EBADSIG when the seal does not open
 * (sealed to another key). */
TSYNC_WARN_UNUSED int tsync__data_key_open(const tsync__data_key_rec *d,
                                           const uint8_t device_sk[TSYNC__SK_BYTES],
                                           uint8_t key[TSYNC__DATA_KEY_BYTES]);

/* The cutoff of site in a revocation (0 when the site is not listed). */
uint64_t tsync__revocation_cutoff(const tsync__revocation *r,
                                  const uint8_t site[TSYNC__SITE_BYTES]);

/* True when n bytes at s are an acceptable name: 1..TSYNC__TRUST_NAME_MAX bytes of valid UTF-8
 * (no overlong forms, no surrogates) without control characters. */
TSYNC_WARN_UNUSED bool tsync__trust_name_ok(const char *s, size_t n);

/* ---------------------------------------------------------------- the shop admin key file
 *
 * "TSYNCSHP" | version u8 | msgpack payload | BLAKE2b-256 of everything before (32).
 * version 1: [secret_key:bin64, shop_id:bin16, shop_name:str, created_ms:uint]
 * version 2: the same four, then
 *            data_keys:[[epoch:uint 1..2^32-1, key:bin32, created_ms:uint]...]  (epochs ascending)
 *            devices:[[device_pk:bin32, revoked:bool]...]                        (keys ascending)
 * The secret key is libsodium's layout (seed || public key); the decoder checks that the public
 * half is the one the seed derives, so a damaged key is found before it signs anything.
 * codec/shopkey.c.
 */
typedef struct {
    uint8_t sk[TSYNC__SK_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    char name[TSYNC__TRUST_NAME_MAX + 1]; /* NUL-terminated */
    uint32_t name_len;
    uint64_t created_ms;
} tsync__shopkey;

#define TSYNC__SHOPKEY_MAX_EPOCHS  8192u /* data-key epochs a key file keeps */
#define TSYNC__SHOPKEY_MAX_DEVICES 8192u /* devices (certified or revoked) a key file keeps */

typedef struct {
    uint32_t epoch;
    uint8_t key[TSYNC__DATA_KEY_BYTES];
    uint64_t created_ms;
} tsync__shopkey_epoch;

typedef struct {
    uint8_t pk[TSYNC__PK_BYTES];
    bool revoked;
} tsync__shopkey_device;

/* What a version 2 file adds: the shop's data keys and the devices the admin certified or
 * revoked. version is the file's (1: read from a version 1 file, which has neither). Arrays are
 * malloc'd; free with tsync__shopkey_ext_free (it wipes the keys). */
typedef struct {
    uint32_t version;
    tsync__shopkey_epoch *epochs; /* ascending by epoch */
    uint32_t nepochs;
    tsync__shopkey_device *devices; /* ascending by key */
    uint32_t ndevices;
} tsync__shopkey_ext;

/* Fills k from a 32-byte seed (the caller draws it at random), a shop id and a name.
 * TSYNC_EINVAL (with err) for a bad name. */
int tsync__shopkey_init(tsync__shopkey *k, const uint8_t seed[32],
                        const uint8_t shop_id[TSYNC__SHOP_ID_BYTES], const char *name,
                        size_t name_len, uint64_t created_ms, char err[TSYNC__ERRLEN]);
/* The version 1 file image of k (malloc'd; the caller wipes and frees it). */
int tsync__shopkey_encode(const tsync__shopkey *k, uint8_t **out, size_t *len);
/* The version 2 file image of k and x (x->version is not read). TSYNC_EINVAL when x breaks the
 * format's rules (order, limits), TSYNC_ENOMEM. */
int tsync__shopkey_encode_ext(const tsync__shopkey *k, const tsync__shopkey_ext *x, uint8_t **out,
                              size_t *len);
/* Strict decode of a file image of version 1 or 2: magic, version, checksum, msgpack, key
 * consistency. TSYNC_ECORRUPT / TSYNC_EVERSION with a message in err. */
TSYNC_WARN_UNUSED int tsync__shopkey_decode(const uint8_t *buf, size_t len, tsync__shopkey *out,
                                            char err[TSYNC__ERRLEN]);
/* The same, filling x too (may be NULL; on success the caller frees it). */
TSYNC_WARN_UNUSED int tsync__shopkey_decode_ext(const uint8_t *buf, size_t len, tsync__shopkey *out,
                                                tsync__shopkey_ext *x, char err[TSYNC__ERRLEN]);
/* Wipes the secret key. */
void tsync__shopkey_wipe(tsync__shopkey *k);
/* Wipes the data keys, frees the arrays and zeroes x. Accepts NULL. */
void tsync__shopkey_ext_free(tsync__shopkey_ext *x);

/* ---------------------------------------------------------------- text armour
 *
 *   -----BEGIN TILLSYNC CERTIFICATE-----
 *   <base64 of the record, 64 characters a line>
 *   -----END TILLSYNC CERTIFICATE-----
 * Labels: ENROLMENT REQUEST, CERTIFICATE, REVOCATION, ADMIN KEY ROTATION, SIGNED MIGRATION, DATA
 * KEY, RELAY GRANT. Text
 * outside the blocks (the comment lines the CLI writes, an e-mail around a pasted block) is
 * ignored; inside a block only base64 and line breaks are allowed.
 */

/* The label of a kind ("CERTIFICATE"), or NULL for an unknown kind. */
const char *tsync__trust_label(uint32_t kind);
/* Armours a record of the given kind. comment (may be NULL) is written before the block, each of
 * its lines prefixed with "# ". *out is a malloc'd NUL-terminated string (the caller frees). */
int tsync__armour(uint32_t kind, const uint8_t *rec, size_t len, const char *comment, char **out);
/* Finds the next armoured block in text[*pos..len), decodes its base64 into a malloc'd *rec
 * (caller frees) and sets *kind from the label and *pos past the block. The kind of the record
 * itself is checked when it is decoded. Returns 0, TSYNC_ENOTFOUND when no block is left, or
 * TSYNC_ECORRUPT (unknown label, no END line, bad base64, more than TSYNC__TRUST_MAX_BYTES) with
 * a message in err. */
TSYNC_WARN_UNUSED int tsync__dearmour(const char *text, size_t len, size_t *pos, uint32_t *kind,
                                      uint8_t **rec, size_t *rec_len, char err[TSYNC__ERRLEN]);

#endif
