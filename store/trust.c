/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/trust.c — shop trust in the database (see trust.h for the rules): enrolment, the
 * replicated set of certificates, revocations and admin key rotations, the checks that admit a
 * batch or a session by its author's key, and the shop admin key file.
 * Over 800 lines on purpose: every query over the trust tables sits beside the writer of those
 * tables, whose invariants (one shop, admin-signed records only) the queries rely on.
 *
 * Design notes
 * - The trust tables are created on first use by the functions that write them. The readers
 *   (admit, session, export), which merge and the network call for every batch and connection,
 *   only look: a database without the tables is simply not enrolled.
 * - Records are kept verbatim (they replicate as they came) next to the few columns the queries
 *   need. Their id is the BLAKE2b-256 of the bytes, so a record received twice is stored once.
 * - An enrolled database stores only records of its shop signed by one of its admin keys; the
 *   queries rely on that instead of re-checking signatures on every batch. A database not yet
 *   enrolled stores any record whose own signature verifies (they may be of the shop it will
 *   join); enrolment drops the others.
 * - Admin keys: the key the database enrolled with, plus every key joined to it through a chain
 *   of rotations (a rotation is signed by both its keys, so it joins them in both directions).
 *   A rotation that does not join yet is kept of the same shop and joins when the missing link
 *   arrives, so the order in which rotations replicate does not matter.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "store/trust.h"
#include "tillsync/trust.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS tsync_shop(id INTEGER PRIMARY KEY CHECK(id = 1),"
    "  shop_id BLOB NOT NULL, name TEXT NOT NULL, admin_pk BLOB NOT NULL,"
    "  enrolled_ms INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS tsync_certs(id BLOB PRIMARY KEY, shop_id BLOB NOT NULL,"
    "  device_pk BLOB NOT NULL, device_name TEXT NOT NULL, not_before INTEGER NOT NULL,"
    "  expires INTEGER NOT NULL, admin_pk BLOB NOT NULL, body BLOB NOT NULL,"
    "  added_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tsync_certs_device ON tsync_certs(device_pk);"
    "CREATE TABLE IF NOT EXISTS tsync_revocations(id BLOB PRIMARY KEY, shop_id BLOB NOT NULL,"
    "  device_pk BLOB NOT NULL, issued_ms INTEGER NOT NULL, admin_pk BLOB NOT NULL,"
    "  body BLOB NOT NULL, added_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE INDEX IF NOT EXISTS tsync_revocations_device ON tsync_revocations(device_pk);"
    "CREATE TABLE IF NOT EXISTS tsync_rotations(id BLOB PRIMARY KEY, shop_id BLOB NOT NULL,"
    "  old_pk BLOB NOT NULL, new_pk BLOB NOT NULL, issued_ms INTEGER NOT NULL,"
    "  joined INTEGER NOT NULL DEFAULT 0, body BLOB NOT NULL, added_ms INTEGER NOT NULL)"
    "  WITHOUT ROWID;"
    /* Signed migrations (store/signed_migration.c applies them). */
    "CREATE TABLE IF NOT EXISTS tsync_signed_migrations(id BLOB PRIMARY KEY, shop_id BLOB NOT "
    "  NULL, number INTEGER NOT NULL, name TEXT NOT NULL, admin_pk BLOB NOT NULL, body BLOB NOT "
    "  NULL, added_ms INTEGER NOT NULL) WITHOUT ROWID;";

/* The enrolment of this database, as tsync_shop holds it. */
typedef struct {
    int enrolled;
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    char name[TSYNC__TRUST_NAME_MAX + 1];
    uint8_t admin_pk[TSYNC__PK_BYTES];
} shop;

/* ---------------------------------------------------------------- small helpers */

static const char *hex8(const uint8_t *p, char out[17])
{
    tsync__hex(p, 8, out);
    return out;
}

const char *tsync_trust_date(uint64_t ms, char out[32])
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (ms / 1000 > (uint64_t)253402300799 || !gmtime_r(&t, &tm)) {
        snprintf(out, 32, "%" PRIu64 " ms", ms);
        return out;
    }
    strftime(out, 32, "%Y-%m-%d %H:%M UTC", &tm);
    return out;
}

/* A name from the input, for a message (names are validated UTF-8 already). */
static const char *name_of(const char *s, uint32_t n, char out[TSYNC__TRUST_NAME_MAX + 1])
{
    if (n > TSYNC__TRUST_NAME_MAX) n = TSYNC__TRUST_NAME_MAX;
    memcpy(out, s, n);
    out[n] = '\0';
    return out;
}

/* Records err as the last error too, and returns code. */
static int fail(char *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static int fail(char *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, TSYNC__ERRLEN, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(err);
    return tsync__err(code, "%s", err);
}

/* An SQLite failure: recorded, copied into err. */
static int sqlfail(tsync_store *s, int rc, const char *what, char *err)
{
    int code = tsync__err_sqlite(s->db, rc, what);
    if (err) snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return code;
}

static sqlite3_stmt *prep(tsync_store *s, const char *sql, char *err)
{
    sqlite3_stmt *st = tsync__prep(s, sql);
    if (!st && err) snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return st;
}

/* A statement about one device key in one shop: pk bound as ?1, the shop's id as ?2. */
static sqlite3_stmt *prep_key(tsync_store *s, const char *sql, const uint8_t pk[TSYNC__PK_BYTES],
                              const uint8_t shop_id[TSYNC__SHOP_ID_BYTES], char *err)
{
    sqlite3_stmt *st = prep(s, sql, err);
    if (!st) return NULL;
    sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    return st;
}

/* Runs a statement without rows to its end and resets it. */
static int step_done(tsync_store *s, sqlite3_stmt *st, const char *what, char *err)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sqlfail(s, rc, what, err);
}

/* 1 when the trust tables exist, 0 when not, <0 on error. */
static int have_tables(tsync_store *s, char *err)
{
    sqlite3_stmt *st = prep(s,
                            "SELECT count(*) FROM sqlite_master WHERE type='table' AND name IN "
                            "('tsync_shop','tsync_certs','tsync_revocations','tsync_rotations')",
                            err);
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    int n = rc == SQLITE_ROW ? sqlite3_column_int(st, 0) : -1;
    sqlite3_reset(st);
    if (n < 0) return sqlfail(s, rc, "read schema", err);
    return n == 4;
}

static int ensure_tables(tsync_store *s, char *err)
{
    int rc = have_tables(s, err);
    if (rc < 0) return rc;
    if (rc == 1) return 0;
    rc = tsync__exec(s, SCHEMA);
    if (rc && err) snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return rc;
}

/* Reads tsync_shop (the tables must exist). */
static int load_shop(tsync_store *s, shop *sh, char *err)
{
    memset(sh, 0, sizeof *sh);
    sqlite3_stmt *st = prep(s, "SELECT shop_id, name, admin_pk FROM tsync_shop WHERE id=1", err);
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) == TSYNC__SHOP_ID_BYTES &&
            sqlite3_column_bytes(st, 2) == TSYNC__PK_BYTES) {
            sh->enrolled = 1;
            memcpy(sh->shop_id, sqlite3_column_blob(st, 0), TSYNC__SHOP_ID_BYTES);
            memcpy(sh->admin_pk, sqlite3_column_blob(st, 2), TSYNC__PK_BYTES);
            snprintf(sh->name, sizeof sh->name, "%s",
                     sqlite3_column_text(st, 1) ? (const char *)sqlite3_column_text(st, 1) : "");
        }
        rc = SQLITE_DONE;
    }
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return sqlfail(s, rc, "read shop", err);
    if (!sh->enrolled) {
        /* a row we did not write */
        sqlite3_stmt *c = prep(s, "SELECT count(*) FROM tsync_shop", err);
        if (!c) return TSYNC_EIO;
        int n = sqlite3_step(c) == SQLITE_ROW ? sqlite3_column_int(c, 0) : 0;
        sqlite3_reset(c);
        if (n) return fail(err, TSYNC_ECORRUPT, "tsync_shop holds a malformed row");
    }
    return 0;
}

/* The shop, or not enrolled when the tables do not exist. */
static int current_shop(tsync_store *s, shop *sh, char *err)
{
    memset(sh, 0, sizeof *sh);
    int rc = have_tables(s, err);
    if (rc <= 0) return rc;
    return load_shop(s, sh, err);
}

/* 1 when pk is one of the shop's admin keys, 0 when not, <0 on error. */
static int admin_ok(tsync_store *s, const shop *sh, const uint8_t pk[TSYNC__PK_BYTES], char *err)
{
    if (sodium_memcmp(pk, sh->admin_pk, TSYNC__PK_BYTES) == 0) return 1;
    sqlite3_stmt *st = prep_key(s,
                                "SELECT 1 FROM tsync_rotations WHERE joined=1 AND shop_id=?2 AND "
                                "(old_pk=?1 OR new_pk=?1) LIMIT 1",
                                pk, sh->shop_id, err);
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc == SQLITE_ROW) return 1;
    if (rc == SQLITE_DONE) return 0;
    return sqlfail(s, rc, "read rotations", err);
}

/* Joins every rotation of the shop that links to an admin key, until none is left to join. */
static int join_rotations(tsync_store *s, const shop *sh, char *err)
{
    static const char *sql =
        "UPDATE tsync_rotations SET joined=1 WHERE joined=0 AND shop_id=?1 AND ("
        "old_pk=?2 OR new_pk=?2 OR "
        "old_pk IN (SELECT old_pk FROM tsync_rotations WHERE joined=1 UNION "
        "           SELECT new_pk FROM tsync_rotations WHERE joined=1) OR "
        "new_pk IN (SELECT old_pk FROM tsync_rotations WHERE joined=1 UNION "
        "           SELECT new_pk FROM tsync_rotations WHERE joined=1))";
    for (;;) {
        sqlite3_stmt *st = prep(s, sql, err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 1, sh->shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, sh->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        int rc = step_done(s, st, "join rotations", err);
        if (rc) return rc;
        if (sqlite3_changes(s->db) == 0) return 0;
    }
}

/* Begins a transaction unless the caller has one open; *own says which. */
static int begin(tsync_store *s, int *own, char *err)
{
    *own = sqlite3_get_autocommit(s->db);
    if (!*own) return 0;
    int rc = tsync__begin(s);
    if (rc && err) snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return rc;
}

static int end(tsync_store *s, int own, int rc, char *err)
{
    if (!own) return rc;
    if (rc) {
        /* keep the error of the failure, not of the rollback */
        const tsync_error *e = tsync_error_last();
        char msg[512];
        snprintf(msg, sizeof msg, "%s", e->code ? e->message : "failed");
        tsync__rollback(s);
        tsync__err(rc, "%s", msg);
        return rc;
    }
    rc = tsync__commit(s);
    if (rc && err) snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return rc;
}

/* ---------------------------------------------------------------- storing records */

/* Stores a decoded, verified record. Enrolled: it must be of the shop and signed by an admin key.
 * *added: 1 when it was new. */
static int store_record(tsync_store *s, const shop *sh, const tsync__trust_rec *r,
                        const uint8_t *blob, size_t len, int *added, char *err)
{
    char a[17], b[17], nm[TSYNC__TRUST_NAME_MAX + 1];
    uint8_t id[TSYNC__HASH_BYTES];
    tsync__trust_id(blob, len, id);
    *added = 0;
    const uint8_t *shop_id = NULL, *admin = NULL;
    switch (r->kind) {
    case TSYNC__T_CERT:
        shop_id = r->u.cert.shop_id, admin = r->u.cert.admin_pk;
        break;
    case TSYNC__T_REVOCATION:
        shop_id = r->u.rev.shop_id, admin = r->u.rev.admin_pk;
        break;
    case TSYNC__T_ROTATION:
        shop_id = r->u.rot.shop_id;
        break;
    case TSYNC__T_MIGRATION:
        shop_id = r->u.mig.shop_id, admin = r->u.mig.admin_pk;
        /* Only a till of the shop runs the shop's migrations. */
        if (!sh->enrolled)
            return fail(err, TSYNC_EREFUSED,
                        "a signed migration needs a database enrolled in its shop");
        break;
    case TSYNC__T_DATA_KEY:
    case TSYNC__T_GRANT:
        /* Kept only by a till of the shop: enrolment's clean-up of other shops' records need
         * not know them (store/relaykeys.c). */
        shop_id = r->kind == TSYNC__T_GRANT ? r->u.grant.shop_id : r->u.dkey.shop_id;
        admin = r->kind == TSYNC__T_GRANT ? r->u.grant.admin_pk : r->u.dkey.admin_pk;
        if (!sh->enrolled)
            return fail(err, TSYNC_EREFUSED, "a %s needs a database enrolled in its shop",
                        r->kind == TSYNC__T_GRANT ? "relay grant" : "data key");
        break;
    default:
        return fail(err, TSYNC_EREFUSED,
                    "an enrolment request is not a shop record (the shop admin signs it into "
                    "a certificate, and the certificate is installed)");
    }
    if (sh->enrolled) {
        if (memcmp(shop_id, sh->shop_id, TSYNC__SHOP_ID_BYTES) != 0)
            return fail(err, TSYNC_EREFUSED,
                        "%s of shop %s…, but this database is enrolled in shop '%s' (%s…)",
                        tsync__trust_label(r->kind), hex8(shop_id, a), sh->name,
                        hex8(sh->shop_id, b));
        if (admin) {
            int ok = admin_ok(s, sh, admin, err);
            if (ok < 0) return ok;
            if (!ok)
                return fail(err, TSYNC_EREFUSED,
                            "%s signed by admin key %s…, which is not (yet) an admin key of shop "
                            "'%s' (a rotation to it has not arrived)",
                            tsync__trust_label(r->kind), hex8(admin, a), sh->name);
        }
    }
    if (r->kind == TSYNC__T_DATA_KEY || r->kind == TSYNC__T_GRANT)
        return tsync__relaykeys_store(s, r, id, blob, len, added, err);
    sqlite3_stmt *st;
    uint64_t now = tsync__now_ms(s);
    if (r->kind == TSYNC__T_CERT) {
        const tsync__cert *c = &r->u.cert;
        st = prep(
            s,
            "INSERT OR IGNORE INTO tsync_certs(id, shop_id, device_pk, device_name, "
            "not_before, expires, admin_pk, body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
            err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 3, c->device_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 4, name_of(c->device_name, c->device_name_len, nm), -1,
                          SQLITE_TRANSIENT);
        /* ms fit int64 for 292 million years; clamp anything beyond so SQL compares sanely */
        sqlite3_bind_int64(st, 5,
                           (int64_t)(c->not_before_ms > INT64_MAX ? INT64_MAX : c->not_before_ms));
        sqlite3_bind_int64(st, 6, (int64_t)(c->expires_ms > INT64_MAX ? INT64_MAX : c->expires_ms));
        sqlite3_bind_blob(st, 7, c->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    } else if (r->kind == TSYNC__T_REVOCATION) {
        const tsync__revocation *v = &r->u.rev;
        st = prep(s,
                  "INSERT OR IGNORE INTO tsync_revocations(id, shop_id, device_pk, issued_ms, "
                  "admin_pk, body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                  err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 3, v->device_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (int64_t)(v->issued_ms > INT64_MAX ? INT64_MAX : v->issued_ms));
        sqlite3_bind_blob(st, 5, v->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, blob, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)now);
    } else if (r->kind == TSYNC__T_MIGRATION) {
        const tsync__migration_rec *m = &r->u.mig;
        st = prep(s,
                  "INSERT OR IGNORE INTO tsync_signed_migrations(id, shop_id, number, name, "
                  "admin_pk, body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                  err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_int64(st, 3, (int64_t)m->number);
        sqlite3_bind_text(st, 4, m->name, (int)m->name_len, SQLITE_STATIC);
        sqlite3_bind_blob(st, 5, m->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 6, blob, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)now);
    } else {
        const tsync__rotation *t = &r->u.rot;
        st = prep(s,
                  "INSERT OR IGNORE INTO tsync_rotations(id, shop_id, old_pk, new_pk, issued_ms, "
                  "body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                  err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 3, t->old_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, t->new_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 5, (int64_t)(t->issued_ms > INT64_MAX ? INT64_MAX : t->issued_ms));
        sqlite3_bind_blob(st, 6, blob, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 7, (int64_t)now);
    }
    sqlite3_bind_blob(st, 1, id, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    if (r->kind == TSYNC__T_CERT) {
        sqlite3_bind_blob(st, 8, blob, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 9, (int64_t)now);
    }
    int rc = step_done(s, st, "store trust record", err);
    if (rc) return rc;
    *added = sqlite3_changes(s->db) > 0;
    if (*added && r->kind == TSYNC__T_ROTATION && sh->enrolled) return join_rotations(s, sh, err);
    return 0;
}

/* ---------------------------------------------------------------- admission */

int tsync__trust_enrolled(tsync_store *s, uint8_t shop_id[TSYNC__SHOP_ID_BYTES])
{
    shop sh;
    int rc = current_shop(s, &sh, NULL);
    if (rc) return rc;
    if (sh.enrolled && shop_id) memcpy(shop_id, sh.shop_id, TSYNC__SHOP_ID_BYTES);
    return sh.enrolled;
}

/* The latest-issued revocation of pk in the shop, decoded into *v (cutoffs in a). 1 when there
 * is one, 0 when not, <0 on error. */
static int find_revocation(tsync_store *s, const shop *sh, const uint8_t pk[TSYNC__PK_BYTES],
                           tsync__revocation *v, tsync__arena *a, char *err)
{
    sqlite3_stmt *st = prep_key(s,
                                "SELECT body FROM tsync_revocations WHERE device_pk=?1 AND "
                                "shop_id=?2 ORDER BY issued_ms DESC, id DESC LIMIT 1",
                                pk, sh->shop_id, err);
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        sqlite3_reset(st);
        return 0;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return sqlfail(s, rc, "read revocations", err);
    }
    /* Decoding again verifies again: cheap next to a batch, and the table is not trusted blindly
     * (it is in a file anyone with the database can edit). */
    tsync__trust_rec r;
    char derr[TSYNC__ERRLEN];
    rc = tsync__trust_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &r, a,
                             derr);
    if (rc == 0 && r.kind != TSYNC__T_REVOCATION) rc = TSYNC_ECORRUPT;
    sqlite3_reset(st);
    if (rc) return fail(err, TSYNC_ECORRUPT, "a stored revocation is damaged: %s", derr);
    /* cutoffs point into the arena, the rest was copied */
    *v = r.u.rev;
    return 1;
}

/* The certificate of pk with the latest expiry: 1 and its name and expiry, 0 when none. */
static int latest_cert(tsync_store *s, const shop *sh, const uint8_t pk[TSYNC__PK_BYTES],
                       char name[TSYNC__TRUST_NAME_MAX + 1], uint64_t *expires, char *err)
{
    sqlite3_stmt *st =
        prep_key(s,
                 "SELECT device_name, expires FROM tsync_certs WHERE device_pk=?1 AND "
                 "shop_id=?2 ORDER BY expires DESC LIMIT 1",
                 pk, sh->shop_id, err);
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        const char *n = (const char *)sqlite3_column_text(st, 0);
        snprintf(name, TSYNC__TRUST_NAME_MAX + 1, "%s", n ? n : "");
        *expires = (uint64_t)sqlite3_column_int64(st, 1);
        sqlite3_reset(st);
        return 1;
    }
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : sqlfail(s, rc, "read certificates", err);
}

static int admit(tsync_store *s, const shop *sh, const uint8_t pk[TSYNC__PK_BYTES],
                 const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq, uint64_t hlc_ms,
                 uint64_t kept, char *err)
{
    char k[17], st[17], name[TSYNC__TRUST_NAME_MAX + 1], d1[32], d2[32];
    uint64_t expires = 0;
    int rc = latest_cert(s, sh, pk, name, &expires, err);
    if (rc < 0) return rc;
    if (rc == 0)
        return fail(err, TSYNC_EREFUSED, "key %s… has no certificate of shop '%s'", hex8(pk, k),
                    sh->name);
    if (hlc_ms > expires)
        return fail(err, TSYNC_EREFUSED,
                    "certificate of key %s… (device '%s') expired %s, before the batch clock %s",
                    hex8(pk, k), name, tsync_trust_date(expires, d1), tsync_trust_date(hlc_ms, d2));
    tsync__arena a = {0};
    tsync__revocation v;
    rc = find_revocation(s, sh, pk, &v, &a, err);
    if (rc == 1) {
        uint64_t cut = tsync__revocation_cutoff(&v, site);
        rc = 0;
        if (seq > cut && seq <= kept) cut = kept; /* an honest batch depends on it: kept */
        if (seq > cut)
            rc = fail(err, TSYNC_EREFUSED,
                      "key %s… (device '%s') was revoked: site %s… seq %" PRIu64
                      " is after the cutoff %" PRIu64,
                      hex8(pk, k), name, hex8(site, st), seq, cut);
    }
    tsync__arena_free(&a);
    return rc;
}

int tsync__trust_admit(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                       const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq, uint64_t batch_hlc_ms,
                       char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    shop sh;
    int rc = current_shop(s, &sh, err);
    if (rc || !sh.enrolled) return rc;
    return admit(s, &sh, pk, site, seq, batch_hlc_ms, 0, err);
}

int tsync__trust_admit_kept(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                            const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq,
                            uint64_t batch_hlc_ms, uint64_t kept, char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    shop sh;
    int rc = current_shop(s, &sh, err);
    if (rc || !sh.enrolled) return rc;
    return admit(s, &sh, pk, site, seq, batch_hlc_ms, kept, err);
}

int tsync__trust_cutoff(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES],
                        const uint8_t site[TSYNC__SITE_BYTES], uint64_t *cutoff)
{
    char err[TSYNC__ERRLEN];
    shop sh;
    *cutoff = 0;
    int rc = current_shop(s, &sh, err);
    if (rc || !sh.enrolled) return rc;
    tsync__arena a = {0};
    tsync__revocation v;
    rc = find_revocation(s, &sh, pk, &v, &a, err);
    if (rc == 1) *cutoff = tsync__revocation_cutoff(&v, site);
    tsync__arena_free(&a);
    if (rc < 0) tsync__err(rc, "%s", err);
    return rc;
}

int tsync__trust_session(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES], uint64_t now_ms,
                         char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    shop sh;
    char k[17], name[TSYNC__TRUST_NAME_MAX + 1], d[32];
    int rc = current_shop(s, &sh, err);
    if (rc || !sh.enrolled) return rc;
    tsync__arena a = {0};
    tsync__revocation v;
    rc = find_revocation(s, &sh, pk, &v, &a, err);
    tsync__arena_free(&a);
    if (rc < 0) return rc;
    if (rc == 1)
        return fail(err, TSYNC_EREFUSED, "key %s… was revoked by the admin of shop '%s' on %s",
                    hex8(pk, k), sh.name, tsync_trust_date(v.issued_ms, d));
    sqlite3_stmt *st = prep_key(s,
                                "SELECT count(*), sum(not_before <= ?3 AND expires >= ?4), "
                                "max(expires), min(not_before), max(device_name) FROM tsync_certs "
                                "WHERE device_pk=?1 AND shop_id=?2",
                                pk, sh.shop_id, err);
    if (!st) return TSYNC_EIO;
    /* Both dates with TSYNC__TRUST_SKEW_MS of tolerance: two tills' clocks a few minutes apart
     * must not cut them off from each other (data is judged by batch clocks, without it). */
    sqlite3_bind_int64(st, 3, (int64_t)(now_ms + TSYNC__TRUST_SKEW_MS));
    sqlite3_bind_int64(
        st, 4, (int64_t)(now_ms > TSYNC__TRUST_SKEW_MS ? now_ms - TSYNC__TRUST_SKEW_MS : 0));
    rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return sqlfail(s, rc, "read certificates", err);
    }
    int64_t n = sqlite3_column_int64(st, 0), valid = sqlite3_column_int64(st, 1);
    uint64_t max_exp = (uint64_t)sqlite3_column_int64(st, 2);
    uint64_t min_nb = (uint64_t)sqlite3_column_int64(st, 3);
    const char *nm = (const char *)sqlite3_column_text(st, 4);
    snprintf(name, sizeof name, "%s", nm ? nm : "");
    sqlite3_reset(st);
    if (n == 0)
        return fail(err, TSYNC_EREFUSED, "key %s… has no certificate of shop '%s'", hex8(pk, k),
                    sh.name);
    if (valid > 0) return 0;
    if (max_exp + TSYNC__TRUST_SKEW_MS < now_ms)
        return fail(err, TSYNC_EREFUSED, "certificate of key %s… (device '%s') expired %s",
                    hex8(pk, k), name, tsync_trust_date(max_exp, d));
    return fail(err, TSYNC_EREFUSED,
                "certificate of key %s… (device '%s') is not valid before %s (check the clocks)",
                hex8(pk, k), name, tsync_trust_date(min_nb, d));
}

/* ---------------------------------------------------------------- export and import */

void tsync__trust_export_free(uint8_t **blobs, size_t *lens, size_t n)
{
    for (size_t i = 0; blobs && i < n; i++) free(blobs[i]);
    free(blobs);
    free(lens);
}

int tsync__trust_export(tsync_store *s, uint8_t ***blobs, size_t **lens, size_t *n)
{
    *blobs = NULL, *lens = NULL, *n = 0;
    int rc = have_tables(s, NULL);
    if (rc <= 0) return rc;
    rc = 0;
    static const char *const sql[] = {
        "SELECT body FROM tsync_rotations ORDER BY issued_ms, id",
        "SELECT body FROM tsync_certs ORDER BY not_before, id",
        "SELECT body FROM tsync_revocations ORDER BY issued_ms, id",
        "SELECT body FROM tsync_signed_migrations ORDER BY number, id",
        "SELECT body FROM tsync_data_keys ORDER BY epoch, issued_ms, id",
        "SELECT body FROM tsync_grants ORDER BY issued_ms, id",
    };
    size_t cap = 0;
    for (int q = 0; q < 6 && rc == 0; q++) {
        sqlite3_stmt *st;
        if ((rc = sqlite3_prepare_v2(s->db, sql[q], -1, &st, NULL)) != SQLITE_OK) {
            /* A database whose trust tables predate signed migrations, or that never received
             * a data key or grant (store/relaykeys.c creates those tables), has none to send. */
            if (q >= 3) {
                rc = 0;
                continue;
            }
            rc = tsync__err_sqlite(s->db, rc, "read trust records");
            break;
        }
        int src;
        while ((src = sqlite3_step(st)) == SQLITE_ROW) {
            size_t len = (size_t)sqlite3_column_bytes(st, 0);
            if (*n == cap) {
                cap = cap ? 2 * cap : 16;
                uint8_t **nb = realloc(*blobs, cap * sizeof *nb);
                if (nb) *blobs = nb;
                size_t *nl = realloc(*lens, cap * sizeof *nl);
                if (nl) *lens = nl;
                if (!nb || !nl) {
                    rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                    break;
                }
            }
            uint8_t *b = malloc(len ? len : 1);
            if (!b) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            if (len) memcpy(b, sqlite3_column_blob(st, 0), len);
            (*blobs)[*n] = b;
            (*lens)[*n] = len;
            (*n)++;
        }
        if (rc == 0 && src != SQLITE_DONE) rc = tsync__err_sqlite(s->db, src, "read trust records");
        sqlite3_finalize(st);
    }
    if (rc) {
        tsync__trust_export_free(*blobs, *lens, *n);
        *blobs = NULL, *lens = NULL, *n = 0;
    }
    return rc;
}

/* After a new revocation: what this till already merged of a revoked device beyond the cutoff
 * stays, so it must be kept everywhere (tsync__trust_keep_merged, docs/TRUST.md). */
static int keep_merged(tsync_store *s, char *err)
{
    int rc = tsync__trust_keep_merged(s);
    if (rc)
        snprintf(err, TSYNC__ERRLEN, "%s",
                 tsync_error_last()->code ? tsync_error_last()->message : "cannot seal a batch");
    return rc;
}

int tsync__trust_import(tsync_store *s, const uint8_t *blob, size_t len, char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    tsync__arena a = {0};
    tsync__trust_rec r;
    int rc = tsync__trust_decode(blob, len, &r, &a, err);
    if (rc) {
        tsync__err(rc, "%s", err);
        tsync__arena_free(&a);
        return rc;
    }
    if (r.kind == TSYNC__T_REQUEST) {
        tsync__arena_free(&a);
        return fail(err, TSYNC_EREFUSED, "an enrolment request is not a shop record");
    }
    int own, added;
    rc = begin(s, &own, err);
    if (rc == 0) {
        shop sh;
        rc = ensure_tables(s, err);
        if (rc == 0) rc = load_shop(s, &sh, err);
        if (rc == 0) rc = store_record(s, &sh, &r, blob, len, &added, err);
        if (rc == 0 && added && sh.enrolled && r.kind == TSYNC__T_REVOCATION)
            rc = keep_merged(s, err);
        rc = end(s, own, rc, err);
    }
    tsync__arena_free(&a);
    return rc;
}

int tsync__trust_own_cert(tsync_store *s, uint8_t **out, size_t *len)
{
    *out = NULL, *len = 0;
    shop sh;
    int rc = current_shop(s, &sh, NULL);
    if (rc) return rc;
    if (!sh.enrolled) return tsync__err(TSYNC_ENOTFOUND, "this database is not enrolled in a shop");
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db,
                            "SELECT body FROM tsync_certs WHERE device_pk=?1 AND shop_id=?2 "
                            "ORDER BY expires DESC, id LIMIT 1",
                            -1, &st, NULL);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read certificates");
    sqlite3_bind_blob(st, 1, s->pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, sh.shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *out = malloc(*len ? *len : 1);
        if (*out && *len) memcpy(*out, sqlite3_column_blob(st, 0), *len);
        rc = *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
    } else if (rc == SQLITE_DONE) {
        rc = tsync__err(TSYNC_ENOTFOUND, "this device has no certificate of its shop");
    } else {
        rc = tsync__err_sqlite(s->db, rc, "read certificates");
    }
    sqlite3_finalize(st);
    return rc;
}

/* ---------------------------------------------------------------- enrolment */

int tsync__trust_request(tsync_store *s, const char *name, uint8_t **out, size_t *len)
{
    *out = NULL, *len = 0;
    char host[256] = "";
    if (!name) {
        if (gethostname(host, sizeof host - 1) != 0 || !host[0])
            snprintf(host, sizeof host, "till");
        host[TSYNC__TRUST_NAME_MAX] = '\0'; /* host names are ASCII: no character is cut */
        name = host;
    }
    if (!tsync__trust_name_ok(name, strlen(name)))
        return tsync__err(TSYNC_EINVAL,
                          "device name '%s' must be 1..%u bytes of UTF-8 without control "
                          "characters",
                          name, TSYNC__TRUST_NAME_MAX);
    tsync__req r = {.device_name = name,
                    .device_name_len = (uint32_t)strlen(name),
                    .created_ms = tsync__now_ms(s)};
    memcpy(r.device_pk, s->pk, TSYNC__PK_BYTES);
    char err[TSYNC__ERRLEN];
    int rc = tsync__req_sign(&r, s->sk, out, len, err);
    return rc ? tsync__err(rc, "%s", err) : 0;
}

/* Checks the batches the database already holds against the shop (first enrolment): every origin
 * other than this device must be admitted up to its highest seq and clock. */
static int check_held_batches(tsync_store *s, const shop *sh, char *err)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(
        s->db,
        "SELECT x.site, si.site, si.pk, max(x.seq), count(*) FROM "
        "(SELECT site, seq FROM tsync_log UNION SELECT site, seq FROM tsync_held) x "
        "LEFT JOIN tsync_sites si ON si.idx = x.site GROUP BY x.site ORDER BY x.site",
        -1, &st, NULL);
    if (rc != SQLITE_OK) return sqlfail(s, rc, "read the batch log", err);
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        char si[17];
        int64_t idx = sqlite3_column_int64(st, 0);
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 3);
        int64_t count = sqlite3_column_int64(st, 4);
        uint8_t site[TSYNC__SITE_BYTES] = {0}, pk[TSYNC__PK_BYTES];
        if (sqlite3_column_bytes(st, 1) == TSYNC__SITE_BYTES)
            memcpy(site, sqlite3_column_blob(st, 1), TSYNC__SITE_BYTES);
        if (sqlite3_column_bytes(st, 2) != TSYNC__PK_BYTES) {
            rc = fail(err, TSYNC_EREFUSED,
                      "the database holds %" PRId64 " batches of site %s… whose key is unknown; "
                      "enrol a fresh database instead",
                      count, hex8(site, si));
            break;
        }
        memcpy(pk, sqlite3_column_blob(st, 2), TSYNC__PK_BYTES);
        if (sodium_memcmp(pk, s->pk, TSYNC__PK_BYTES) == 0) continue; /* this device */
        /* The clock of the highest batch: clocks grow with seq, so it is the latest. */
        uint64_t hlc_ms = 0;
        sqlite3_stmt *b;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT tsync_log_body(site, seq, body) FROM tsync_log WHERE "
                               "site=?1 AND seq=?2 UNION ALL "
                               "SELECT body FROM tsync_held WHERE site=?1 AND seq=?2 LIMIT 1",
                               -1, &b, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(b, 1, idx);
            sqlite3_bind_int64(b, 2, (int64_t)seq);
            if (sqlite3_step(b) == SQLITE_ROW) {
                tsync__arena a = {0};
                tsync__batch bt;
                char berr[TSYNC__ERRLEN];
                if (tsync__batch_decode(sqlite3_column_blob(b, 0),
                                        (size_t)sqlite3_column_bytes(b, 0), &bt, &a, berr) == 0)
                    hlc_ms = tsync__hlc_ms(bt.hlc_hi);
                tsync__arena_free(&a);
            }
            sqlite3_finalize(b);
        }
        char why[TSYNC__ERRLEN];
        rc = admit(s, sh, pk, site, seq, hlc_ms, 0, why);
        if (rc == TSYNC_EREFUSED) {
            /* may be longer than err holds: the last error keeps all of it */
            rc = tsync__err(TSYNC_EREFUSED,
                            "the database holds %" PRId64 " batch%s (site %s…, up to seq %" PRIu64
                            ") that shop '%s' would refuse: %s. Give that device's certificate "
                            "too, or enrol a fresh database",
                            count, count == 1 ? "" : "es", hex8(site, si), seq, sh->name, why);
            snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
            tsync__utf8_trim(err);
        } else if (rc)
            snprintf(err, TSYNC__ERRLEN, "%s", why);
        if (rc) break;
    }
    if (rc == SQLITE_DONE)
        rc = 0;
    else if (rc > 0)
        rc = sqlfail(s, rc, "read the batch log", err);
    sqlite3_finalize(st);
    return rc;
}

/* Drops what a just-enrolled database holds of other shops or signed by keys not of the shop. */
static int drop_foreign(tsync_store *s, const shop *sh, char *err)
{
    static const char *const sql[] = {
        "DELETE FROM tsync_rotations WHERE shop_id != ?1",
        "DELETE FROM tsync_certs WHERE shop_id != ?1 OR NOT (admin_pk = ?2 OR admin_pk IN "
        "(SELECT old_pk FROM tsync_rotations WHERE joined=1 UNION "
        " SELECT new_pk FROM tsync_rotations WHERE joined=1))",
        "DELETE FROM tsync_revocations WHERE shop_id != ?1 OR NOT (admin_pk = ?2 OR admin_pk IN "
        "(SELECT old_pk FROM tsync_rotations WHERE joined=1 UNION "
        " SELECT new_pk FROM tsync_rotations WHERE joined=1))",
    };
    for (int i = 0; i < 3; i++) {
        sqlite3_stmt *st;
        int rc = sqlite3_prepare_v2(s->db, sql[i], -1, &st, NULL);
        if (rc != SQLITE_OK) return sqlfail(s, rc, "drop records of other shops", err);
        sqlite3_bind_blob(st, 1, sh->shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
        if (i) sqlite3_bind_blob(st, 2, sh->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return sqlfail(s, rc, "drop records of other shops", err);
    }
    return 0;
}

static int enrol_locked(tsync_store *s, const tsync__trust_rec *recs, const uint8_t *const *blobs,
                        const size_t *lens, size_t n, tsync__enrol_result *res, char *err)
{
    char a[17], b[17], d[32], nm[TSYNC__TRUST_NAME_MAX + 1];
    uint64_t now = tsync__now_ms(s);
    shop sh;
    int rc = ensure_tables(s, err);
    if (rc == 0) rc = load_shop(s, &sh, err);
    if (rc) return rc;
    res->first = !sh.enrolled;

    /* This device's certificates: each must be valid now; the latest expiry makes the enrolment. */
    const tsync__cert *mine = NULL;
    for (size_t i = 0; i < n; i++) {
        const tsync__cert *c = &recs[i].u.cert;
        if (recs[i].kind != TSYNC__T_CERT || sodium_memcmp(c->device_pk, s->pk, TSYNC__PK_BYTES))
            continue;
        if (c->expires_ms < now)
            return fail(err, TSYNC_EREFUSED,
                        "the certificate of this device ('%s') expired %s; ask the shop admin for "
                        "a new one",
                        name_of(c->device_name, c->device_name_len, nm),
                        tsync_trust_date(c->expires_ms, d));
        if (c->not_before_ms > now + TSYNC__TRUST_SKEW_MS)
            return fail(err, TSYNC_EREFUSED,
                        "the certificate of this device is not valid before %s (is this "
                        "machine's clock right?)",
                        tsync_trust_date(c->not_before_ms, d));
        if (!mine || c->expires_ms > mine->expires_ms) mine = c;
    }
    if (!sh.enrolled) {
        if (!mine) {
            char pk[2 * TSYNC__PK_BYTES + 1];
            tsync__hex(s->pk, TSYNC__PK_BYTES, pk);
            return fail(err, TSYNC_EREFUSED,
                        "no certificate for this device's key %s (make an enrolment request from "
                        "this database and have the shop admin sign it)",
                        pk);
        }
        sh.enrolled = 1;
        memcpy(sh.shop_id, mine->shop_id, TSYNC__SHOP_ID_BYTES);
        memcpy(sh.admin_pk, mine->admin_pk, TSYNC__PK_BYTES);
        name_of(mine->shop_name, mine->shop_name_len, sh.name);
        sqlite3_stmt *st = prep(s,
                                "INSERT INTO tsync_shop(id, shop_id, name, admin_pk, enrolled_ms) "
                                "VALUES(1, ?1, ?2, ?3, ?4)",
                                err);
        if (!st) return TSYNC_EIO;
        sqlite3_bind_blob(st, 1, sh.shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_text(st, 2, sh.name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, sh.admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 4, (int64_t)now);
        if ((rc = step_done(s, st, "enrol", err))) return rc;
        if ((rc = join_rotations(s, &sh, err)) || (rc = drop_foreign(s, &sh, err))) return rc;
    }

    /* Rotations first, so certificates signed by a new admin key find it. */
    for (int pass = 0; pass < 2; pass++) {
        for (size_t i = 0; i < n; i++) {
            if ((recs[i].kind == TSYNC__T_ROTATION) != (pass == 0)) continue;
            const uint8_t *id =
                recs[i].kind == TSYNC__T_CERT ? recs[i].u.cert.shop_id : recs[i].u.rot.shop_id;
            if (memcmp(id, sh.shop_id, TSYNC__SHOP_ID_BYTES) != 0)
                return fail(err, TSYNC_EREFUSED,
                            "record %zu is of shop %s…, but this database %s shop '%s' (%s…)",
                            i + 1, hex8(id, a), res->first ? "is enrolling in" : "is enrolled in",
                            sh.name, hex8(sh.shop_id, b));
            int added = 0;
            char why[TSYNC__ERRLEN];
            rc = store_record(s, &sh, &recs[i], blobs[i], lens[i], &added, why);
            if (rc) return fail(err, rc, "record %zu: %s", i + 1, why);
            res->added += (size_t)added;
        }
    }

    /* A revoked key cannot come back with a new certificate: it needs a new key. */
    tsync__arena ar = {0};
    tsync__revocation v;
    rc = find_revocation(s, &sh, s->pk, &v, &ar, err);
    tsync__arena_free(&ar);
    if (rc < 0) return rc;
    if (rc == 1 && (mine || res->first))
        return fail(err, TSYNC_EREFUSED,
                    "this device's key was revoked by the shop admin on %s; it needs a new key "
                    "(a new database key file) and a new certificate",
                    tsync_trust_date(v.issued_ms, d));
    if (res->first && (rc = check_held_batches(s, &sh, err))) return rc;

    memcpy(res->shop_id, sh.shop_id, TSYNC__SHOP_ID_BYTES);
    snprintf(res->shop_name, sizeof res->shop_name, "%s", sh.name);
    res->own = mine != NULL;
    if (mine) name_of(mine->device_name, mine->device_name_len, res->device_name);
    rc = latest_cert(s, &sh, s->pk, nm, &res->expires_ms, err);
    if (rc > 0) {
        if (!mine) snprintf(res->device_name, sizeof res->device_name, "%s", nm);
        rc = 0;
    }
    return rc;
}

int tsync__trust_enrol(tsync_store *s, const uint8_t *const *blobs, const size_t *lens, size_t n,
                       tsync__enrol_result *res)
{
    tsync__enrol_result dummy;
    if (!res) res = &dummy;
    memset(res, 0, sizeof *res);
    if (n == 0) return tsync__err(TSYNC_EINVAL, "no certificate given");
    tsync__arena a = {0};
    tsync__trust_rec *recs = calloc(n, sizeof *recs);
    if (!recs) return tsync__err(TSYNC_ENOMEM, "out of memory");
    char err[TSYNC__ERRLEN];
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        rc = tsync__trust_decode(blobs[i], lens[i], &recs[i], &a, err);
        if (rc) {
            tsync__err(rc, "record %zu: %s", i + 1, err);
        } else if (recs[i].kind == TSYNC__T_REQUEST) {
            rc = tsync__err(TSYNC_EINVAL,
                            "record %zu is an enrolment request, not a certificate: the shop "
                            "admin signs it into a certificate first",
                            i + 1);
        } else if (recs[i].kind == TSYNC__T_REVOCATION) {
            rc = tsync__err(TSYNC_EINVAL,
                            "record %zu is a revocation, not a certificate: install it as a "
                            "revocation",
                            i + 1);
        }
    }
    if (rc == 0) {
        int own;
        rc = begin(s, &own, err);
        if (rc == 0) {
            rc = enrol_locked(s, recs, blobs, lens, n, res, err);
            rc = end(s, own, rc, err);
        }
    }
    free(recs);
    tsync__arena_free(&a);
    return rc;
}

int tsync__trust_revoke(tsync_store *s, const uint8_t *rec, size_t len)
{
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__trust_rec r;
    int rc = tsync__trust_decode(rec, len, &r, &a, err);
    if (rc) {
        tsync__arena_free(&a);
        return tsync__err(rc, "%s", err);
    }
    if (r.kind != TSYNC__T_REVOCATION) {
        tsync__arena_free(&a);
        return tsync__err(TSYNC_EINVAL, "this is %s %s, not a revocation",
                          r.kind == TSYNC__T_CERT ? "a" : "an",
                          r.kind == TSYNC__T_CERT       ? "certificate"
                          : r.kind == TSYNC__T_ROTATION ? "admin key rotation"
                                                        : "enrolment request");
    }
    int own, added;
    rc = begin(s, &own, err);
    if (rc == 0) {
        shop sh;
        rc = ensure_tables(s, err);
        if (rc == 0) rc = load_shop(s, &sh, err);
        if (rc == 0 && !sh.enrolled)
            rc = fail(err, TSYNC_EREFUSED,
                      "this database is not enrolled in a shop, so it has no admin key to check "
                      "the revocation against (enrol it with its certificate first)");
        if (rc == 0) rc = store_record(s, &sh, &r, rec, len, &added, err);
        if (rc == 0 && added) rc = keep_merged(s, err);
        rc = end(s, own, rc, err);
    }
    tsync__arena_free(&a);
    return rc;
}

int tsync__trust_cutoffs_from_db(const char *path, const uint8_t pk[TSYNC__PK_BYTES],
                                 tsync__cutoff **out, uint32_t *n)
{
    *out = NULL, *n = 0;
    sqlite3 *db = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return tsync__err(TSYNC_ENOTFOUND, "database %s does not exist", path);
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    sqlite3_stmt *st = NULL;
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "SELECT site, seq FROM tsync_sites WHERE pk=?1 AND seq > 0 "
                                "ORDER BY site",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot read the sites of %s: %s", path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close(db);
        return rc;
    }
    sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    size_t cap = 0;
    int src;
    rc = 0;
    while ((src = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        if (*n == TSYNC__TRUST_MAX_CUTOFFS) {
            rc = tsync__err(TSYNC_EINVAL, "device has more than %u sites in %s",
                            TSYNC__TRUST_MAX_CUTOFFS, path);
            break;
        }
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            tsync__cutoff *nc = realloc(*out, cap * sizeof *nc);
            if (!nc) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            *out = nc;
        }
        memcpy((*out)[*n].site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        (*out)[*n].seq = (uint64_t)sqlite3_column_int64(st, 1);
        (*n)++;
    }
    if (rc == 0 && src != SQLITE_DONE)
        rc = tsync__err(TSYNC_EIO, "cannot read the sites of %s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (rc) {
        free(*out);
        *out = NULL, *n = 0;
    }
    return rc;
}

/* ---------------------------------------------------------------- status */

static json_t *hexj(const void *p, int n)
{
    char buf[2 * 64 + 1];
    if (n <= 0 || n > 64) return json_null();
    tsync__hex(p, (size_t)n, buf);
    return json_string(buf);
}

int tsync__trust_json(tsync_store *s, char **out)
{
    *out = NULL;
    shop sh;
    int rc = current_shop(s, &sh, NULL);
    if (rc) return rc;
    json_t *o = json_object();
    json_object_set_new(o, "enrolled", json_boolean(sh.enrolled));
    if (sh.enrolled) {
        json_object_set_new(o, "shop_id", hexj(sh.shop_id, TSYNC__SHOP_ID_BYTES));
        json_object_set_new(o, "shop_name", json_string(sh.name));
        json_t *keys = json_array(), *certs = json_array();
        json_array_append_new(keys, hexj(sh.admin_pk, TSYNC__PK_BYTES));
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "SELECT old_pk FROM tsync_rotations WHERE joined=1 AND old_pk!=?1 "
                               "UNION SELECT new_pk FROM tsync_rotations WHERE joined=1 AND "
                               "new_pk!=?1",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_blob(st, 1, sh.admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
            while (sqlite3_step(st) == SQLITE_ROW)
                json_array_append_new(
                    keys, hexj(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0)));
            sqlite3_finalize(st);
        }
        if (sqlite3_prepare_v2(
                s->db,
                "SELECT device_pk, (SELECT device_name FROM tsync_certs n WHERE n.device_pk = "
                "c.device_pk ORDER BY expires DESC, id LIMIT 1) AS name, "
                "min(not_before), max(expires), "
                "EXISTS(SELECT 1 FROM tsync_revocations r WHERE r.device_pk = "
                "c.device_pk) FROM tsync_certs c GROUP BY device_pk ORDER BY "
                "name, device_pk",
                -1, &st, NULL) == SQLITE_OK) {
            while (sqlite3_step(st) == SQLITE_ROW) {
                json_t *e = json_object();
                json_object_set_new(e, "device_key",
                                    hexj(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0)));
                json_object_set_new(e, "device_name",
                                    json_string((const char *)sqlite3_column_text(st, 1)));
                json_object_set_new(e, "not_before", json_integer(sqlite3_column_int64(st, 2)));
                json_object_set_new(e, "expires", json_integer(sqlite3_column_int64(st, 3)));
                json_object_set_new(e, "revoked", json_boolean(sqlite3_column_int(st, 4)));
                json_object_set_new(
                    e, "this_device",
                    json_boolean(sqlite3_column_bytes(st, 0) == TSYNC__PK_BYTES &&
                                 memcmp(sqlite3_column_blob(st, 0), s->pk, TSYNC__PK_BYTES) == 0));
                json_array_append_new(certs, e);
            }
            sqlite3_finalize(st);
        }
        json_object_set_new(o, "admin_keys", keys);
        json_object_set_new(o, "certificates", certs);
    }
    *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}
