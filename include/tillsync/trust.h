/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/trust.h — shop trust: the shop admin key, the records it signs (certificates,
 * revocations, admin key rotations, signed migrations), enrolling a till in a shop, revoking a
 * device, and the trust set a database holds. docs/TRUST.md explains the model; the rules that
 * admit a batch or a session by its author's key are applied by merge and the node on their own.
 *
 * Two sides:
 * - The shop admin holds a key file (tsync_shop_key_*): it creates the shop, signs a till's
 *   enrolment request into a certificate, signs revocations, rotations and migrations. The key
 *   file stays off the tills.
 * - A till (a tsync_store) makes an enrolment request, installs the certificate and the other
 *   records (tsync_trust_enrol, tsync_trust_revoke), and reports the trust set it holds.
 * The one-machine case (the admin key at hand on the till) is tsync_trust_enrol_with_key.
 *
 * Records are byte strings (a msgpack array, signed; at most TSYNC_TRUST_RECORD_MAX bytes). They
 * travel as text armour ("-----BEGIN TILLSYNC CERTIFICATE-----", base64) by e-mail or paste:
 * tsync_trust_armour writes it, tsync_trust_records_parse reads it back.
 *
 * Conventions: output parameters first; 0 or a negative TSYNC_E* code with a one-line message in
 * tsync_error_last(); every struct with a `version` field is initialised with its *_INIT macro,
 * and a version this library does not know is refused with TSYNC_EVERSION. Buffers returned
 * through `uint8_t **` / `char **` are the caller's, freed with tsync_free().
 *
 * THREAD SAFETY: a tsync_store is used by one thread at a time (store.h). A tsync_shop_key may be
 * read by several threads at once; tsync_shop_key_free must not race its use. The functions
 * that take neither touch no shared state and may run on any thread.
 */
#ifndef TILLSYNC_TRUST_H
#define TILLSYNC_TRUST_H

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

#define TSYNC_PUBLIC_KEY_BYTES 32   /* an Ed25519 public key: a device key or an admin key */
#define TSYNC_SHOP_ID_BYTES    16   /* a shop's random id */
#define TSYNC_TRUST_NAME_MAX   64   /* bytes of a shop, device or migration name (UTF-8) */
#define TSYNC_TRUST_RECORD_MAX 4096 /* bytes of one record */
/* The longest validity tsync_shop_key_sign_request gives a certificate, in days. */
#define TSYNC_TRUST_MAX_DAYS 36500u

/* What a record is. */
typedef enum {
    TSYNC_TRUST_REQUEST = 1, /* device -> admin: "please certify my key" (signed by the device) */
    TSYNC_TRUST_CERTIFICATE = 2, /* admin -> shop: "this key is a device of my shop until ..." */
    TSYNC_TRUST_REVOCATION = 3,  /* admin -> shop: "refuse this key, keep its batches up to ..." */
    TSYNC_TRUST_ROTATION = 4,    /* old and new admin key: "the shop's admin key is now ..." */
    TSYNC_TRUST_MIGRATION = 5,   /* admin -> shop: "every till runs this migration, in order" */
    TSYNC_TRUST_DATA_KEY = 6,    /* admin -> shop: the data key of an epoch, sealed to devices */
    TSYNC_TRUST_GRANT = 7,       /* admin -> shop and relays: "these relays serve my shop" */
} tsync_trust_kind;

/* The label of a kind in text armour ("CERTIFICATE", "ENROLMENT REQUEST", "REVOCATION",
 * "ADMIN KEY ROTATION", "SIGNED MIGRATION", "DATA KEY", "RELAY GRANT"), or NULL for an unknown
 * kind. Static string. */
TSYNC_API const char *tsync_trust_kind_label(int kind);

/* ms since 1970 as a date for messages, "2025-03-01 12:00 UTC" (or "<ms> ms" past the year 9999),
 * written to out; returns out. */
TSYNC_API const char *tsync_trust_date(uint64_t ms, char out[32]);

/* The last batch of a site that a revocation still admits (0: none of that site). */
typedef struct {
    uint8_t site_id[TSYNC_SITE_ID_BYTES];
    uint64_t seq;
} tsync_cutoff;

/* ---------------------------------------------------------------- records as data */

/* A decoded record, its signatures verified. Fields a kind does not have are zero / "". Names are
 * NUL-terminated copies. */
typedef struct {
    uint32_t version; /* TSYNC_TRUST_RECORD_VERSION */
    int32_t kind;     /* a tsync_trust_kind */
    /* certificate, revocation, rotation, migration, data key, grant: the shop the record is of */
    uint8_t shop_id[TSYNC_SHOP_ID_BYTES];
    /* certificate: the shop's name */
    char shop_name[TSYNC_TRUST_NAME_MAX + 1];
    /* request, certificate, revocation: the device's key */
    uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES];
    /* request, certificate: the device's name */
    char device_name[TSYNC_TRUST_NAME_MAX + 1];
    /* certificate, revocation, migration, data key, grant: the admin key that signed it;
     * rotation: the old key */
    uint8_t admin_key[TSYNC_PUBLIC_KEY_BYTES];
    /* rotation: the new admin key (it signed the rotation too) */
    uint8_t new_admin_key[TSYNC_PUBLIC_KEY_BYTES];
    /* request: when it was made; revocation, rotation, migration, data key, grant: when it was
     * issued;
     * certificate: its not_before (Unix ms) */
    uint64_t issued_ms;
    /* certificate: valid from (wall time for sessions) and until (also bounds the clock of the
     * device's batches), Unix ms; grant: expires_ms is when it expires */
    uint64_t not_before_ms;
    uint64_t expires_ms;
    /* revocation: the cutoffs it names, sorted by site (a site not named has cutoff 0); freed by
     * tsync_trust_record_clear */
    size_t ncutoffs;
    tsync_cutoff *cutoffs;
    /* migration: its number, file name (NUMBER_NAME.sql), SQL length and BLAKE2b-256 of the SQL */
    uint64_t migration_number;
    char migration_name[TSYNC_TRUST_NAME_MAX + 1];
    size_t sql_len;
    uint8_t sql_hash[TSYNC_HASH_BYTES];
} tsync_trust_record;

#define TSYNC_TRUST_RECORD_VERSION 1
#define TSYNC_TRUST_RECORD_INIT                                                                    \
    {                                                                                              \
        TSYNC_TRUST_RECORD_VERSION, 0, {0}, {0}, {0}, {0}, {0}, {0}, 0, 0, 0, 0, NULL, 0, {0}, 0,  \
        {                                                                                          \
            0                                                                                      \
        }                                                                                          \
    }

/* Sets *out to TSYNC_TRUST_RECORD_INIT as of version (the caller's TSYNC_TRUST_RECORD_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_trust_record_init(tsync_trust_record *out, uint32_t version);

/* Strictly decodes one record (not armoured) of any kind and verifies its signature(s) against
 * the key(s) the record names. Whether that admin key is a shop's key is a question for a
 * database (tsync_trust_enrol, tsync_trust_revoke), not for the record.
 * out: initialised with TSYNC_TRUST_RECORD_INIT (or cleared); clear it with
 *      tsync_trust_record_clear afterwards.
 * Errors: TSYNC_ECORRUPT (malformed, non-canonical, over TSYNC_TRUST_RECORD_MAX bytes),
 * TSYNC_EVERSION (unknown kind or format, or out->version unknown), TSYNC_EBADSIG (a signature
 * does not verify), TSYNC_ENOMEM, TSYNC_EINVAL (NULL argument). */
TSYNC_API TSYNC_WARN_UNUSED int tsync_trust_record_decode(tsync_trust_record *out,
                                                          const uint8_t *rec, size_t len);

/* Frees what a record holds (its cutoffs) and zeroes it, keeping its version. Accepts NULL. */
TSYNC_API void tsync_trust_record_clear(tsync_trust_record *r);

/* ---------------------------------------------------------------- text armour */

/* Records read from text, in order. */
typedef struct {
    uint32_t version; /* TSYNC_TRUST_RECORDS_VERSION */
    size_t n;
    uint8_t **records; /* n records (not armoured) ... */
    size_t *lens;      /* ... and their lengths */
} tsync_trust_records;

#define TSYNC_TRUST_RECORDS_VERSION 1
#define TSYNC_TRUST_RECORDS_INIT                                                                   \
    {                                                                                              \
        TSYNC_TRUST_RECORDS_VERSION, 0, NULL, NULL                                                 \
    }

/* Sets *out to TSYNC_TRUST_RECORDS_INIT as of version (the caller's TSYNC_TRUST_RECORDS_VERSION),
 * for bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_trust_records_init(tsync_trust_records *out, uint32_t version);

/* Reads the records of a text (a file's content) and appends them to out: every armoured block,
 * in order; text outside the blocks (comment lines, an e-mail around a pasted block) is ignored.
 * A text without any block is taken as one record in raw bytes when it starts like one. Records
 * are not decoded here (tsync_trust_record_decode), except that a block's label must match the
 * kind its record claims.
 * Errors (nothing appended): TSYNC_ECORRUPT (an unknown label, a block without its END line, bad
 * base64, a record over TSYNC_TRUST_RECORD_MAX bytes, a label that does not match its record),
 * TSYNC_ENOTFOUND (no block, and not a raw record; the message starts "holds no tillsync record"
 * so that a caller may put the file's name before it), TSYNC_EVERSION (out->version unknown),
 * TSYNC_ENOMEM. */
TSYNC_API int tsync_trust_records_parse(tsync_trust_records *out, const char *text, size_t len);

/* Frees the records and zeroes the list, keeping its version. Accepts NULL. */
TSYNC_API void tsync_trust_records_clear(tsync_trust_records *r);

/* Armours a record: comment (may be NULL) first, each of its lines prefixed with "# ", then the
 * block labelled by the record's kind, base64 in lines of 64 characters. *out is a NUL-terminated
 * string, the caller's (tsync_free()). Errors: TSYNC_EINVAL (not a record of a known kind),
 * TSYNC_ENOMEM. */
TSYNC_API int tsync_trust_armour(char **out, const uint8_t *rec, size_t len, const char *comment);

/* ---------------------------------------------------------------- the shop admin key */

typedef struct tsync_shop_key tsync_shop_key;

/* Creates a new shop: a random admin key pair and shop id, written to a new key file at path
 * (mode 0600; never overwrites: TSYNC_EEXISTS). out (may be NULL) receives the key, freed with
 * tsync_shop_key_free. Errors: TSYNC_EEXISTS, TSYNC_EINVAL (name not 1..TSYNC_TRUST_NAME_MAX
 * bytes of UTF-8 without control characters), TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_create(tsync_shop_key **out, const char *path, const char *name);

/* Reads a key file. Refuses a file other users can read (TSYNC_EINVAL; the message says which
 * mode to give it), a missing one (TSYNC_ENOTFOUND) and a damaged one (TSYNC_ECORRUPT,
 * TSYNC_EVERSION). */
TSYNC_API int tsync_shop_key_load(tsync_shop_key **out, const char *path);

/* Wipes the secret key from memory and frees. Accepts NULL. */
TSYNC_API void tsync_shop_key_free(tsync_shop_key *k);

/* 1 when the n bytes at head (the start of a file, n may be short) begin like an admin key file,
 * else 0: tells a key file from a record file without reading the secret. */
TSYNC_API int tsync_shop_key_sniff(const void *head, size_t n);

/* What a key file says, without its secret. */
typedef struct {
    uint32_t version; /* TSYNC_SHOP_INFO_VERSION */
    uint8_t shop_id[TSYNC_SHOP_ID_BYTES];
    char shop_name[TSYNC_TRUST_NAME_MAX + 1];
    uint8_t admin_key[TSYNC_PUBLIC_KEY_BYTES];
    uint64_t created_ms; /* when the key was made (Unix ms) */
} tsync_shop_info;

#define TSYNC_SHOP_INFO_VERSION 1
#define TSYNC_SHOP_INFO_INIT                                                                       \
    {                                                                                              \
        TSYNC_SHOP_INFO_VERSION, {0}, {0}, {0}, 0                                                  \
    }

/* Sets *out to TSYNC_SHOP_INFO_INIT as of version (the caller's TSYNC_SHOP_INFO_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_shop_info_init(tsync_shop_info *out, uint32_t version);

/* Fills out. Errors: TSYNC_EVERSION (out->version unknown), TSYNC_EINVAL (NULL argument). */
TSYNC_API int tsync_shop_key_info(tsync_shop_info *out, const tsync_shop_key *k);

/* How tsync_shop_key_sign_request and tsync_trust_enrol_with_key make a certificate. */
typedef struct {
    uint32_t version;        /* TSYNC_SIGN_OPTIONS_VERSION */
    uint32_t days;           /* valid for this many days, 1..TSYNC_TRUST_MAX_DAYS; 0 means 365 */
    const char *device_name; /* NULL: the name in the request (enrol_with_key: the host name) */
} tsync_sign_options;

#define TSYNC_SIGN_OPTIONS_VERSION 1
#define TSYNC_SIGN_OPTIONS_INIT                                                                    \
    {                                                                                              \
        TSYNC_SIGN_OPTIONS_VERSION, 0, NULL                                                        \
    }

/* Sets *out to TSYNC_SIGN_OPTIONS_INIT as of version (the caller's TSYNC_SIGN_OPTIONS_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_sign_options_init(tsync_sign_options *out, uint32_t version);

/* Verifies an enrolment request (not armoured) and signs a certificate for its device key, of
 * the key's shop, valid from now (wall time) for opts->days.
 * opts: NULL for defaults.
 * Errors: TSYNC_ECORRUPT / TSYNC_EBADSIG / TSYNC_EVERSION (a bad request or an unknown
 * opts->version), TSYNC_EINVAL (another kind of record, days over TSYNC_TRUST_MAX_DAYS, a bad
 * name, the request's key is the admin key), TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_sign_request(uint8_t **cert, size_t *cert_len, const tsync_shop_key *k,
                                          const uint8_t *req, size_t req_len,
                                          const tsync_sign_options *opts);

/* Signs a revocation of device_key, issued now: a till refuses the device's sessions, and its
 * batches of a site after the cutoff named for that site (0 for a site not named; a batch an
 * honest device depends on is kept everywhere, docs/TRUST.md). Cutoffs may come in any order.
 * Errors: TSYNC_EINVAL (a site given twice, more than 128 sites), TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_revoke(uint8_t **rev, size_t *rev_len, const tsync_shop_key *k,
                                    const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                                    const tsync_cutoff *cutoffs, size_t ncutoffs);

/* Rotates the admin key: makes a new key of the same shop, signs the rotation with both keys and
 * writes the new key to a new file at new_path (0600, never overwriting: TSYNC_EEXISTS; nothing is
 * written on any error). Installed on one till (tsync_trust_enrol) the rotation replicates, and
 * every till then takes records signed by either key.
 * new_key: may be NULL; receives the new key (tsync_shop_key_free).
 * Errors: TSYNC_EEXISTS, TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_rotate(tsync_shop_key **new_key, uint8_t **rot, size_t *rot_len,
                                    const tsync_shop_key *k, const char *new_path);

/* The number of a migration file name, NUMBER_NAME.sql with a NAME and a NUMBER from 1 to 18
 * digits ("001_add_note.sql": 1). Errors: TSYNC_EINVAL (not such a name). */
TSYNC_API int tsync_migration_number(int64_t *number, const char *file_name);

/* Signs a migration for every till of the shop (tsync_store_migrate_signed in migrate.h installs
 * it): file_name is its NUMBER_NAME.sql (a base name, no folder), sql its bytes (1..3584
 * without NUL: a longer migration is split into several). Errors: TSYNC_EINVAL (a bad name, SQL
 * empty, too long or holding NUL), TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_sign_migration(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                                            const char *file_name, const void *sql, size_t sql_len);

/* ---------------------------------------------------------------- a till: enrolment */

/* This device's public key (its Ed25519 key, which a certificate certifies). Never fails for an
 * open store: returns 0. */
TSYNC_API int tsync_store_public_key(uint8_t out[TSYNC_PUBLIC_KEY_BYTES], tsync_store *s);

/* An enrolment request for this device, signed with its key: device_name (NULL: the host name)
 * and the wall time. Errors: TSYNC_EINVAL (a bad name), TSYNC_ENOMEM. */
TSYNC_API int tsync_trust_request(uint8_t **req, size_t *req_len, tsync_store *s,
                                  const char *device_name);

/* What tsync_trust_enrol did. */
typedef struct {
    uint32_t version; /* TSYNC_ENROL_REPORT_VERSION */
    int32_t first;    /* 1: the database was not enrolled before; 0: renewal or extra records */
    int32_t own;      /* 1: a certificate of this device was among the records */
    uint8_t shop_id[TSYNC_SHOP_ID_BYTES];
    char shop_name[TSYNC_TRUST_NAME_MAX + 1];
    char device_name[TSYNC_TRUST_NAME_MAX + 1]; /* of this device's certificate, when own */
    uint64_t expires_ms; /* latest expiry of this device's certificates, when own */
    size_t added;        /* records that were new */
} tsync_enrol_report;

#define TSYNC_ENROL_REPORT_VERSION 1
#define TSYNC_ENROL_REPORT_INIT                                                                    \
    {                                                                                              \
        TSYNC_ENROL_REPORT_VERSION, 0, 0, {0}, {0}, {0}, 0, 0                                      \
    }

/* Sets *out to TSYNC_ENROL_REPORT_INIT as of version (the caller's TSYNC_ENROL_REPORT_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_enrol_report_init(tsync_enrol_report *out, uint32_t version);

/* Installs certificates and admin key rotations (n records, not armoured) in one transaction.
 * Not yet enrolled: one of them must be a certificate of this device's key, valid now (wall time,
 * 5 minutes of tolerance) and not revoked; the database becomes enrolled in its shop. Records of
 * other shops already stored are dropped. Refused when the database holds batches by keys the
 * shop would not admit. Enrolled: every record must be of the same shop and signed by one of its
 * admin keys (a renewed certificate of this device, other devices' certificates, rotations).
 * report: may be NULL.
 * Errors: TSYNC_EREFUSED (the message says which rule and which key), TSYNC_ECORRUPT /
 * TSYNC_EBADSIG / TSYNC_EVERSION (a bad record, or an unknown report->version), TSYNC_EINVAL (no
 * record, a request or a revocation given), TSYNC_EIO, TSYNC_EBUSY. Nothing changes on error. */
TSYNC_API int tsync_trust_enrol(tsync_enrol_report *report, tsync_store *s,
                                const uint8_t *const *records, const size_t *lens, size_t n);

/* The one-machine case: makes this device's request, signs it with the admin key k (opts as for
 * tsync_shop_key_sign_request; opts->device_name names the device) and installs the certificate
 * (tsync_trust_enrol). The key is not kept anywhere. opts and report may be NULL.
 * Errors: as tsync_trust_request, tsync_shop_key_sign_request and tsync_trust_enrol. */
TSYNC_API int tsync_trust_enrol_with_key(tsync_enrol_report *report, tsync_store *s,
                                         const tsync_shop_key *k, const tsync_sign_options *opts);

/* Installs a revocation (not armoured): the database must be enrolled and the revocation signed
 * by one of its shop's admin keys. It replicates to the other tills. Installing it twice is a
 * no-op. Errors: TSYNC_EREFUSED (not enrolled, another shop, an unknown admin key),
 * TSYNC_ECORRUPT / TSYNC_EBADSIG / TSYNC_EVERSION, TSYNC_EINVAL (not a revocation), TSYNC_EIO. */
TSYNC_API int tsync_trust_revoke(tsync_store *s, const uint8_t *rev, size_t rev_len);

/* ---------------------------------------------------------------- a till: the trust set */

/* A device of the shop: one certificate key, all its certificates together. */
typedef struct {
    uint8_t key[TSYNC_PUBLIC_KEY_BYTES];
    char name[TSYNC_TRUST_NAME_MAX + 1];      /* of its certificate with the latest expiry */
    uint64_t not_before_ms;                   /* earliest not_before of its certificates */
    uint64_t expires_ms;                      /* latest expiry of its certificates */
    int32_t revoked;                          /* a revocation of the key is installed */
    int32_t this_device;                      /* it is this database's own key */
    size_t nsites;                            /* the sites of the key this database knows ... */
    uint8_t (*site_ids)[TSYNC_SITE_ID_BYTES]; /* ... (a device has one per database/incarnation) */
} tsync_trust_device;

/* The shop a database is enrolled in, as data. */
typedef struct {
    uint32_t version; /* TSYNC_TRUST_SET_VERSION */
    int32_t enrolled; /* 0: not enrolled (it admits any validly signed batch); nothing below */
    uint8_t shop_id[TSYNC_SHOP_ID_BYTES];
    char shop_name[TSYNC_TRUST_NAME_MAX + 1];
    size_t nadmin_keys; /* the key it enrolled with first, then every key joined by rotations */
    uint8_t (*admin_keys)[TSYNC_PUBLIC_KEY_BYTES];
    size_t ndevices; /* ordered by name, then key */
    tsync_trust_device *devices;
} tsync_trust_set;

#define TSYNC_TRUST_SET_VERSION 1
#define TSYNC_TRUST_SET_INIT                                                                       \
    {                                                                                              \
        TSYNC_TRUST_SET_VERSION, 0, {0}, {0}, 0, NULL, 0, NULL                                     \
    }

/* Sets *out to TSYNC_TRUST_SET_INIT as of version (the caller's TSYNC_TRUST_SET_VERSION), for
 * bindings without macros. Errors: TSYNC_EINVAL (out is NULL), TSYNC_EVERSION (version 0 or
 * newer than this library's). */
TSYNC_API int tsync_trust_set_init(tsync_trust_set *out, uint32_t version);

/* Reads the trust set of the database into out (initialised with TSYNC_TRUST_SET_INIT; clear it
 * with tsync_trust_set_clear). Works on a store opened read-only.
 * Errors: TSYNC_EVERSION (out->version unknown), TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_trust_set_get(tsync_trust_set *out, tsync_store *s);

/* Frees what a trust set holds and zeroes it, keeping its version. Accepts NULL. */
TSYNC_API void tsync_trust_set_clear(tsync_trust_set *t);

/* The trust set as JSON: {"enrolled": bool, "shop_id", "shop_name", "admin_keys": [...],
 * "certificates": [{"device_key", "device_name", "not_before", "expires", "revoked",
 * "this_device"}]} (keys in hex, times in Unix ms). *out is the caller's (tsync_free()). */
TSYNC_API int tsync_trust_json(char **out, tsync_store *s);

/* ---------------------------------------------------------------- revocation, the admin's view */

/* The sites of device_key that the database at db_path (opened read-only; no key file needed)
 * knows, each with the highest seq it holds contiguously: the cutoffs that keep everything that
 * database has of the device. *out (the caller's, tsync_free()) may be NULL with *n 0.
 * Errors: TSYNC_ENOTFOUND (no such database), TSYNC_EINVAL (more than 128 sites), TSYNC_EIO. */
TSYNC_API int tsync_revocation_cutoffs_from_db(tsync_cutoff **out, size_t *n, const char *db_path,
                                               const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES]);

/* Another device whose batches depend on batches of a revoked site after its cutoff. */
typedef struct {
    uint8_t site_id[TSYNC_SITE_ID_BYTES];
    uint8_t key[TSYNC_PUBLIC_KEY_BYTES];
    char name[TSYNC_TRUST_NAME_MAX + 1]; /* its device name, "" when no certificate is known */
    uint64_t batches;                    /* its batches that depend on one after the cutoff */
    uint64_t max_dep;                    /* the highest seq of the revoked site they depend on */
} tsync_revocation_dependant;

/* One site of the revoked device, as one database sees it. */
typedef struct {
    uint8_t site_id[TSYNC_SITE_ID_BYTES];
    uint64_t cutoff; /* named by the revocation (0 when not named) */
    int32_t known;   /* the database knows the site */
    uint64_t have;   /* what the database holds of it (its version vector) */
    uint64_t beyond; /* batches of the site after the cutoff in its log or held */
    uint64_t kept;   /* the highest seq of the site an honest batch here depends on (0: none) */
    size_t ndeps;
    tsync_revocation_dependant *deps;
} tsync_revocation_site;

/* What a revocation would cut, seen from one database. */
typedef struct {
    uint32_t version; /* TSYNC_REVOCATION_PREVIEW_VERSION */
    size_t nsites;
    tsync_revocation_site *sites;
} tsync_revocation_preview;

#define TSYNC_REVOCATION_PREVIEW_VERSION 1
#define TSYNC_REVOCATION_PREVIEW_INIT                                                              \
    {                                                                                              \
        TSYNC_REVOCATION_PREVIEW_VERSION, 0, NULL                                                  \
    }

/* Sets *out to TSYNC_REVOCATION_PREVIEW_INIT as of version (the caller's
 * TSYNC_REVOCATION_PREVIEW_VERSION), for bindings without macros. Errors: TSYNC_EINVAL (out is
 * NULL), TSYNC_EVERSION (version 0 or newer than this library's). */
TSYNC_API int tsync_revocation_preview_init(tsync_revocation_preview *out, uint32_t version);

/* For device_key and the cutoffs a revocation would name: every site of the device that the
 * database at db_path (opened read-only) knows or the cutoffs name, what it holds after the
 * cutoff, and which other devices' batches in its log depend on those (so every till will keep
 * them: up to the larger of have and kept). Nothing is signed or written.
 * out: initialised with TSYNC_REVOCATION_PREVIEW_INIT; clear with tsync_revocation_preview_clear.
 * Errors: TSYNC_ENOTFOUND (no such database), TSYNC_EVERSION (out->version unknown), TSYNC_EIO,
 * TSYNC_ENOMEM. */
TSYNC_API int tsync_revocation_preview_get(tsync_revocation_preview *out, const char *db_path,
                                           const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                                           const tsync_cutoff *cutoffs, size_t ncutoffs);

/* Frees what a preview holds and zeroes it, keeping its version. Accepts NULL. */
TSYNC_API void tsync_revocation_preview_clear(tsync_revocation_preview *p);

/* ---------------------------------------------------------------- relay keys (docs/RELAY_KEYS.md)
 *
 * The shop data key encrypts what an off-site relay stores for the shop (the relay never holds
 * it). It has an epoch: the admin makes epoch 1 with the shop and a new epoch when a device is
 * revoked, and seals each epoch to the devices of the shop. A RELAY GRANT names the relays that
 * serve the shop. Both are trust records: install one on any till with tsync_trust_enrol and it
 * replicates to the others. */

#define TSYNC_DATA_KEY_BYTES 32 /* a shop data key (XChaCha20-Poly1305) */

/* Signs a DATA KEY record: key, the shop's data key of epoch (>= 1), sealed to each of the
 * ndevices device keys (1..32; crypto_box_seal to the X25519 form of the Ed25519 key), issued
 * now. The caller draws the key (randombytes) and keeps it; re-sealing the same epoch's key to
 * more devices is a new record of the same epoch.
 * Errors: TSYNC_EINVAL (epoch 0, no device or more than 32, a device given twice or the admin
 * key, a device key that is not a valid Ed25519 key), TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_sign_data_key(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                                           uint32_t epoch, const uint8_t key[TSYNC_DATA_KEY_BYTES],
                                           const uint8_t (*device_keys)[TSYNC_PUBLIC_KEY_BYTES],
                                           size_t ndevices);

/* Signs a RELAY GRANT: nrelays relays (1..8, in order of preference), each an address
 * "tcp://HOST:PORT" and the relay's public key; quota_mb (0: none) and expires_ms (Unix ms, after
 * now). Errors: TSYNC_EINVAL (no relay or more than 8, an address not tcp:// and printable
 * ASCII, an expiry not after now), TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_sign_grant(uint8_t **rec, size_t *rec_len, const tsync_shop_key *k,
                                        const char *const *relay_addrs,
                                        const uint8_t (*relay_keys)[TSYNC_PUBLIC_KEY_BYTES],
                                        size_t nrelays, uint64_t quota_mb, uint64_t expires_ms);

/* The data-key epoch this till holds: *held the latest epoch sealed to its key (0: none, which a
 * person must fix before a relay is used: the admin issues a data key that includes this till),
 * *latest (may be NULL) the latest epoch of the shop the till has received (held or not).
 * Not enrolled: both 0. Errors: TSYNC_EINVAL, TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_data_key_epoch(uint32_t *held, uint32_t *latest, tsync_store *s);

/* The shop's grant in force (the latest issued), verbatim: decode it with
 * tsync_trust_record_decode. *rec is the caller's (tsync_free()).
 * Errors: TSYNC_ENOTFOUND (none, or not enrolled), TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_store_grant(uint8_t **rec, size_t *rec_len, tsync_store *s);

/* ---------------------------------------------------------------- the admin's data keys
 * (docs/RELAY_KEYS.md, "The admin's key file")
 *
 * A key file of version 2 (tsync_shop_key_create makes one) also keeps the shop data key of
 * every epoch and the devices the admin certified and revoked, so the admin can seal each epoch
 * to the devices of the shop. A version 1 file (made by builds before this) opens and signs as
 * before, and is rewritten as version 2 by the first function below that succeeds on it (the
 * file at the path it was loaded from is replaced atomically; tsync_shop_key_file_state tells the
 * version before and after). These functions change the key and its file: do not call them on
 * one key from two threads at once. */

#define TSYNC_DATA_KEY_MAX_DEVICES 32 /* devices one DATA KEY record is sealed to */

/* What the key file keeps: *file_version 1 or 2 (as read, or 2 once rewritten), *epoch the
 * latest data-key epoch (0: none yet, a version 1 file), *ndevices the devices it lists that are
 * not revoked, *nrevoked the revoked ones. Any output may be NULL. Errors: TSYNC_EINVAL (k NULL).
 */
TSYNC_API int tsync_shop_key_file_state(const tsync_shop_key *k, uint32_t *file_version,
                                        uint32_t *epoch, size_t *ndevices, size_t *nrevoked);

/* tsync_shop_key_sign_request, and the key file records the device as certified. dkey (may be
 * NULL: no data key record) receives a DATA KEY record of the latest epoch (epoch 1 is made when
 * the file has none) sealed to every certified, not revoked device the file lists, this one
 * included; the till installs both records (tsync_trust_enrol). Nothing is written on any error.
 * Errors: as tsync_shop_key_sign_request; TSYNC_EINVAL (the device is revoked in the key file;
 * with dkey, more than TSYNC_DATA_KEY_MAX_DEVICES devices to seal to, or a device key the file
 * lists that is not a valid Ed25519 key), TSYNC_EIO (the key file cannot be replaced). */
TSYNC_API int tsync_shop_key_certify(uint8_t **cert, size_t *cert_len, uint8_t **dkey,
                                     size_t *dkey_len, tsync_shop_key *k, const uint8_t *req,
                                     size_t req_len, const tsync_sign_options *opts);

/* tsync_shop_key_revoke, and the key file records the device as revoked and, unless it was
 * already, makes a new data-key epoch (the latest + 1) that the revoked device never gets. dkey
 * (may be NULL) receives a DATA KEY record of the latest epoch sealed to every certified device
 * not revoked, or NULL with *dkey_len 0 when no such device is left. Nothing is written on any
 * error. Errors: as tsync_shop_key_revoke; TSYNC_EINVAL (with dkey, more than
 * TSYNC_DATA_KEY_MAX_DEVICES devices remain), TSYNC_EIO. */
TSYNC_API int tsync_shop_key_revoke_device(uint8_t **rev, size_t *rev_len, uint8_t **dkey,
                                           size_t *dkey_len, tsync_shop_key *k,
                                           const uint8_t device_key[TSYNC_PUBLIC_KEY_BYTES],
                                           const tsync_cutoff *cutoffs, size_t ncutoffs);

/* A DATA KEY record of the latest epoch (epoch 1 is made when the file has none: an existing
 * shop) sealed to every certified, not revoked device the key file lists plus the ndevices
 * device_keys given (which the file then lists as certified; the caller vouches for them, e.g.
 * from a till's trust set, tsync_trust_set_get). Nothing is written on any error.
 * Errors: TSYNC_EINVAL (no device to seal to, more than TSYNC_DATA_KEY_MAX_DEVICES, a given
 * device the file lists as revoked, a key that is not a valid Ed25519 key or is the admin key),
 * TSYNC_EIO, TSYNC_ENOMEM. */
TSYNC_API int tsync_shop_key_data_key(uint8_t **dkey, size_t *dkey_len, tsync_shop_key *k,
                                      const uint8_t (*device_keys)[TSYNC_PUBLIC_KEY_BYTES],
                                      size_t ndevices);

#ifdef __cplusplus
}
#endif
#endif
