/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/trust.h — shop trust kept in the database: which shop it is enrolled in, the
 * certificates and revocations of that shop (a replicated, admin-signed set), and the rules that
 * admit a batch or a session by its author's key. Also the shop admin key file on disk.
 *
 * Tables (created on first use, IF NOT EXISTS): tsync_shop (one row once enrolled: shop id, name,
 * the admin key it enrolled with), tsync_certs, tsync_revocations and tsync_rotations (each
 * record verbatim with its id, plus the columns the queries need). See docs/TRUST.md.
 *
 * The rules, in one place:
 * - A database never enrolled admits everything (and stores records of any shop, unused until it
 *   enrols). Enrolled: a key is admitted when the shop holds a certificate for it, signed by one
 *   of the shop's admin keys (the enrolment key and every key joined to it by a rotation).
 * - Data: a batch is admitted when its clock (ms) is at or before the latest expiry among the
 *   key's certificates. not_before does not bound data, so what a till sold before it was
 *   enrolled still replicates. A revoked key: a batch of site S at seq N is admitted only when
 *   N <= the cutoff the revocation names for S (0 for a site it does not name), or when an
 *   honest batch depends on it (kept batches, store/kept.c). When a key has several
 *   revocations, the latest issued (ties: greater id) governs, so the admin can correct one.
 * - Sessions: wall time within [not_before - 5 min, expires] of some certificate, and the key is
 *   not revoked at all.
 *
 * Every function here takes a store used by one thread at a time, as the store does. Functions
 * that write run in their own BEGIN IMMEDIATE transaction, or inside the caller's when one is open
 * (merge may call tsync__trust_import inside its transaction).
 */
#ifndef TSYNC_STORE_TRUST_H
#define TSYNC_STORE_TRUST_H

#include <stddef.h>
#include <stdint.h>

#include "codec/cert.h"
#include "tillsync/store.h"

/* Tolerated clock difference between the admin's machine and a till, or two tills, for a
 * certificate's not_before (enrolment, sessions) and expiry (sessions only). */
#define TSYNC__TRUST_SKEW_MS (5u * 60u * 1000u)

/* ---------------------------------------------------------------- called by merge, bundles, net */

/* 1 when the database is enrolled in a shop (shop_id, which may be NULL, receives its id), 0 when
 * not, or a negative error code (TSYNC_EIO) with the last error recorded. Cheap (one cached
 * query). */
TSYNC_WARN_UNUSED int tsync__trust_enrolled(tsync_store *s, uint8_t shop_id[TSYNC__SHOP_ID_BYTES]);

/* Whether a batch by key pk from site at seq, with clock batch_hlc_ms (the ms part of the batch's
 * highest HLC), is admitted (rules above).
 * Returns 0 when admitted; TSYNC_EREFUSED with a one-line reason in err (no certificate of the
 * shop, certificate expired before the batch clock, revoked and after the cutoff); TSYNC_EIO on
 * a database error (err says so too). A never-enrolled database admits everything. */
TSYNC_WARN_UNUSED int tsync__trust_admit(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                                         const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq,
                                         uint64_t batch_hlc_ms, char err[TSYNC__ERRLEN]);

/* tsync__trust_admit, with the cutoff of a revoked key raised to kept for this site: kept is the
 * highest seq of the site that an honest batch depends on (0: none), see docs/TRUST.md. */
TSYNC_WARN_UNUSED int tsync__trust_admit_kept(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                                              const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq,
                                              uint64_t batch_hlc_ms, uint64_t kept,
                                              char err[TSYNC__ERRLEN]);

/* Whether key pk is revoked: 1 and the cutoff its governing revocation names for site in *cutoff
 * (0 when it does not name the site), 0 when not revoked or not enrolled, TSYNC_EIO (recorded). */
TSYNC_WARN_UNUSED int tsync__trust_cutoff(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                                          const uint8_t site[TSYNC__SITE_BYTES], uint64_t *cutoff);

/* Whether a peer with key pk may hold a session now (now_ms: wall time, Unix ms).
 * 0 when admitted; TSYNC_EREFUSED + err (no certificate, not yet valid, expired, revoked).
 * A never-enrolled database admits every key (its node talks only to static peers). */
TSYNC_WARN_UNUSED int tsync__trust_session(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                                           uint64_t now_ms, char err[TSYNC__ERRLEN]);

/* Every stored trust record, verbatim (for bundles and the handshake): rotations first, then
 * certificates, then revocations, so a receiver importing them in order knows every admin key
 * before it meets a record signed by it. On an enrolled database only the shop's records exist.
 * *blobs and *lens are malloc'd arrays of *n malloc'd blobs; free them with
 * tsync__trust_export_free. Errors: TSYNC_ENOMEM, TSYNC_EIO. */
int tsync__trust_export(tsync_store *s, uint8_t ***blobs, size_t **lens, size_t *n);
void tsync__trust_export_free(uint8_t **blobs, size_t *lens, size_t n);

/* Verifies one record (certificate, revocation or rotation; not armoured) and stores it. A record
 * already held is a no-op (0). Enrolled: it must be of this shop and signed by one of its admin
 * keys; never enrolled: it is stored when its own signature verifies.
 * Errors (+ err and the last error): TSYNC_ECORRUPT / TSYNC_EVERSION / TSYNC_EBADSIG (the record
 * is bad), TSYNC_EREFUSED (another shop, an unknown admin key, or an enrolment request),
 * TSYNC_EIO. Changes nothing on error. */
int tsync__trust_import(tsync_store *s, const uint8_t *blob, size_t len, char err[TSYNC__ERRLEN]);

/* This device's certificate (the one with the latest expiry), for the first message of a session.
 * *out is malloc'd (caller frees). TSYNC_ENOTFOUND when the database is not enrolled. */
int tsync__trust_own_cert(tsync_store *s, uint8_t **out, size_t *len);

/* ---------------------------------------------------------------- called by the CLI */

/* An enrolment request for this device, signed with its key: name (NULL: the host name) and the
 * wall time. *out is malloc'd (caller frees). TSYNC_EINVAL for a bad name. */
int tsync__trust_request(tsync_store *s, const char *name, uint8_t **out, size_t *len);

/* What tsync__trust_enrol did, for the message the CLI prints. */
typedef struct {
    int first; /* 1: the database was not enrolled before; 0: renewal or extra records */
    int own;   /* 1: a certificate of this device was among the records */
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    char shop_name[TSYNC__TRUST_NAME_MAX + 1];
    char device_name[TSYNC__TRUST_NAME_MAX + 1]; /* of this device's certificate, when own */
    uint64_t expires_ms;                         /* latest expiry of this device's certificates */
    size_t added;                                /* records that were new */
} tsync__enrol_result;

/* Installs certificates and rotations (n records, not armoured) in one transaction.
 * Not yet enrolled: one of them must be a certificate of this device's key, valid now (wall time,
 * not_before with TSYNC__TRUST_SKEW_MS of tolerance) and not revoked; the database becomes
 * enrolled in its shop with its admin key. Records of other shops already stored are dropped.
 * Refused when the database holds batches (log or held) by keys that would not be admitted:
 * another device's key without a certificate of the shop among the stored and given records,
 * revoked past a cutoff or expired before its batches' clocks.
 * Enrolled: every record must be of the same shop and signed by one of its admin keys (a renewed
 * certificate of this device, other devices' certificates, rotations).
 * Errors: TSYNC_EREFUSED (the message says which rule and which key), TSYNC_ECORRUPT /
 * TSYNC_EBADSIG / TSYNC_EVERSION (a bad record), TSYNC_EINVAL (a request or revocation given),
 * TSYNC_EIO. Nothing changes on error. res may be NULL. */
int tsync__trust_enrol(tsync_store *s, const uint8_t *const *recs, const size_t *lens, size_t n,
                       tsync__enrol_result *res);

/* Installs a revocation (not armoured): the database must be enrolled and the revocation signed
 * by one of its shop's admin keys. Duplicate: no-op. Errors: TSYNC_EREFUSED (not enrolled, other
 * shop, unknown admin key), TSYNC_ECORRUPT / TSYNC_EBADSIG / TSYNC_EVERSION, TSYNC_EINVAL (not a
 * revocation), TSYNC_EIO. */
int tsync__trust_revoke(tsync_store *s, const uint8_t *rec, size_t len);

/* The shop this database is enrolled in, as JSON {"enrolled":bool, "shop_id", "shop_name",
 * "admin_keys":[...], "certificates":[{device_key, device_name, not_before, expires, revoked}]}
 * (times in Unix ms). *out is malloc'd (caller frees). */
int tsync__trust_json(tsync_store *s, char **out);

/* The sites of device key pk that the database at path (opened read-only, no key file needed)
 * knows, each with the highest seq it holds contiguously: the cutoffs that keep everything that
 * database has of the device. *out is malloc'd (caller frees), *n may be 0.
 * Errors: TSYNC_ENOTFOUND (no such database), TSYNC_EIO. */
int tsync__trust_cutoffs_from_db(const char *path, const uint8_t pk[TSYNC__PK_BYTES],
                                 tsync__cutoff **out, uint32_t *n);

/* ---------------------------------------------------------------- kept batches (store/kept.c) */

/* Run inside a transaction after a revocation arrives, and by merge after it kept a batch of a
 * revoked device on the word of a batch that did not apply: when this database holds more of a
 * revoked site than its cutoff and no batch of its own depends on all of it, seals its pending
 * changes, or an empty batch, so that a batch of this till names what it holds and every till
 * keeps the same. Nothing when this device is revoked itself. */
int tsync__trust_keep_merged(tsync_store *s);

/* What a revocation would cut, seen from one database (the admin's preview). */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];      /* a site of another device ... */
    uint8_t pk[TSYNC__PK_BYTES];          /* ... and its key */
    char name[TSYNC__TRUST_NAME_MAX + 1]; /* its device name, "" when no certificate is known */
    uint64_t batches;                     /* its batches that depend on a batch beyond the cutoff */
    uint64_t max_dep;                     /* the highest seq of the revoked site they depend on */
} tsync__cut_dep;

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t cutoff; /* named by the revocation (0 when not named) */
    int known;       /* the database knows the site */
    uint64_t have;   /* what the database holds of it (its vector) */
    uint64_t beyond; /* batches of the site after the cutoff in its log or held */
    uint64_t kept;   /* cutoff raised to the highest seq an honest batch here depends on */
    uint32_t ndeps;
    tsync__cut_dep *deps; /* honest sites whose batches depend on batches after the cutoff */
} tsync__cut_site;

/* For the device key pk and the cutoffs a revocation would name: every site of the device that
 * the database at path (opened read-only) knows or the cutoffs name, what it holds after the
 * cutoff, and which other devices' batches in its log depend on those batches (so every till will
 * keep them). *out is malloc'd: free with tsync__cut_preview_free.
 * Errors: TSYNC_ENOTFOUND (no such database), TSYNC_EIO, TSYNC_ENOMEM. */
int tsync__trust_cut_preview(const char *path, const uint8_t pk[TSYNC__PK_BYTES],
                             const tsync__cutoff *cuts, uint32_t ncuts, tsync__cut_site **out,
                             uint32_t *nout);
void tsync__cut_preview_free(tsync__cut_site *v, uint32_t n);

/* ---------------------------------------------------------------- the shop admin key file
 * (store/shopkey.c) */

/* Creates a new shop (random admin key pair and shop id) with data-key epoch 1 and writes its
 * key file (version 2) with mode 0600. Never overwrites: an existing path is TSYNC_EEXISTS. Also
 * TSYNC_EINVAL (bad name), TSYNC_EIO. out (may be NULL) receives the key; wipe it with
 * tsync__shopkey_wipe. x (may be NULL) receives the epoch (tsync__shopkey_ext_free). */
int tsync__shopkey_create(const char *path, const char *name, uint64_t now_ms, tsync__shopkey *out);
int tsync__shopkey_create_ext(const char *path, const char *name, uint64_t now_ms,
                              tsync__shopkey *out, tsync__shopkey_ext *x);

/* Writes k to a new file at path (0600, never overwriting: TSYNC_EEXISTS): version 1 when x is
 * NULL, else version 2. */
int tsync__shopkey_write(const char *path, const tsync__shopkey *k);
int tsync__shopkey_write_ext(const char *path, const tsync__shopkey *k,
                             const tsync__shopkey_ext *x);

/* Replaces the key file at path by version 2 of k and x: a new file beside it (0600), fsync'd,
 * renamed over it, the folder fsync'd, so a crash leaves the old file or the new one.
 * TSYNC_EIO, TSYNC_EINVAL (x breaks the format's limits). */
int tsync__shopkey_replace(const char *path, const tsync__shopkey *k, const tsync__shopkey_ext *x);

/* Reads a key file. Refuses a file other users can read (TSYNC_EINVAL, says how to fix it), a
 * missing one (TSYNC_ENOTFOUND) and a damaged one (TSYNC_ECORRUPT / TSYNC_EVERSION). x (may be
 * NULL) receives what version 2 adds (x->version says which version the file was). */
int tsync__shopkey_load(const char *path, tsync__shopkey *out);
int tsync__shopkey_load_ext(const char *path, tsync__shopkey *out, tsync__shopkey_ext *x);

/* ---------------------------------------------------------------- data keys and grants
 * (store/relaykeys.c, docs/RELAY_KEYS.md) */

/* Stores a verified DATA KEY or RELAY GRANT record (store/trust.c checked shop and admin key).
 * *added: 1 when new. TSYNC_EIO + err. */
int tsync__relaykeys_store(tsync_store *s, const tsync__trust_rec *r,
                           const uint8_t id[TSYNC__HASH_BYTES], const uint8_t *blob, size_t len,
                           int *added, char err[TSYNC__ERRLEN]);

typedef struct {
    uint32_t epoch;
    uint8_t key[TSYNC__DATA_KEY_BYTES];
} tsync__held_key;

/* The data-key epochs sealed to this till's key, ascending, opened (*out malloc'd; free with
 * tsync__held_keys_free, which wipes the keys), and the latest epoch the shop has issued (0:
 * none), whether or not it is sealed to this till. Not enrolled: none. TSYNC_EIO, TSYNC_ENOMEM. */
int tsync__data_keys_held(tsync_store *s, tsync__held_key **out, uint32_t *n,
                          uint32_t *latest_epoch);
void tsync__held_keys_free(tsync__held_key *v, uint32_t n);

/* The shop's latest-issued grant, verbatim (*body malloc'd, caller frees). TSYNC_ENOTFOUND when
 * there is none or the database is not enrolled; TSYNC_EIO. */
int tsync__grant_latest(tsync_store *s, uint8_t **body, size_t *len);

/* For tsync_store_status_json: {"data_key_epoch": held (0: none), "data_key_latest": N,
 * "grant": null | {"relays": [{"address", "key"}], "quota_mb", "expires_ms", "issued_ms"}}
 * (a key that cannot be read leaves its field out); null when not enrolled. A new reference
 * (json_t from jansson). */
struct json_t;
struct json_t *tsync__relaykeys_json(tsync_store *s);

#endif
