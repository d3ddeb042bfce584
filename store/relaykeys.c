/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relaykeys.c — the shop's data keys and relay grants in the database (docs/RELAY_KEYS.md):
 * storing the admin-signed DATA KEY and RELAY GRANT records that replicate through the trust set
 * (store/trust.c verifies them and calls in here), and reading back what this till holds: the
 * data-key epochs sealed to its key, and the shop's grant.
 *
 * Design notes
 * - The records are kept verbatim, like certificates: a till stores every epoch's record, also
 *   those not sealed to it, so it forwards them to tills that can open them.
 * - Keys are never stored opened: a till opens its seals (its Ed25519 key's X25519 form) when
 *   asked, so the data key is in the database only as the admin sealed it, and a copied
 *   database without the key file beside it yields nothing.
 * - Several records may share an epoch (the admin seals the same key again when a device is
 *   certified): they carry the same key, and a till takes the first seal that opens.
 */
#include <inttypes.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store/trust.h"

static const char *SCHEMA =
    "CREATE TABLE IF NOT EXISTS tsync_data_keys(id BLOB PRIMARY KEY, shop_id BLOB NOT NULL,"
    "  epoch INTEGER NOT NULL, issued_ms INTEGER NOT NULL, admin_pk BLOB NOT NULL,"
    "  body BLOB NOT NULL, added_ms INTEGER NOT NULL) WITHOUT ROWID;"
    "CREATE TABLE IF NOT EXISTS tsync_grants(id BLOB PRIMARY KEY, shop_id BLOB NOT NULL,"
    "  expires_ms INTEGER NOT NULL, issued_ms INTEGER NOT NULL, admin_pk BLOB NOT NULL,"
    "  body BLOB NOT NULL, added_ms INTEGER NOT NULL) WITHOUT ROWID;";

static int64_t clamp(uint64_t v)
{
    return (int64_t)(v > INT64_MAX ? INT64_MAX : v);
}

int tsync__relaykeys_store(tsync_store *s, const tsync__trust_rec *r,
                           const uint8_t id[TSYNC__HASH_BYTES], const uint8_t *blob, size_t len,
                           int *added, char err[TSYNC__ERRLEN])
{
    *added = 0;
    char *msg = NULL;
    int rc = sqlite3_exec(s->db, SCHEMA, NULL, NULL, &msg);
    if (rc != SQLITE_OK) {
        snprintf(err, TSYNC__ERRLEN, "create the data key tables: %s", msg ? msg : "failed");
        sqlite3_free(msg);
        return tsync__err(TSYNC_EIO, "%s", err);
    }
    sqlite3_stmt *st;
    if (r->kind == TSYNC__T_DATA_KEY) {
        const tsync__data_key_rec *k = &r->u.dkey;
        st = tsync__prep(s, "INSERT OR IGNORE INTO tsync_data_keys(id, shop_id, epoch, issued_ms, "
                            "admin_pk, body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7)");
        if (!st) goto sqlerr;
        sqlite3_bind_blob(st, 2, k->shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, k->epoch);
        sqlite3_bind_int64(st, 4, clamp(k->issued_ms));
        sqlite3_bind_blob(st, 5, k->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    } else {
        const tsync__grant_rec *g = &r->u.grant;
        st = tsync__prep(s, "INSERT OR IGNORE INTO tsync_grants(id, shop_id, expires_ms, "
                            "issued_ms, admin_pk, body, added_ms) VALUES(?1,?2,?3,?4,?5,?6,?7)");
        if (!st) goto sqlerr;
        sqlite3_bind_blob(st, 2, g->shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, clamp(g->expires_ms));
        sqlite3_bind_int64(st, 4, clamp(g->issued_ms));
        sqlite3_bind_blob(st, 5, g->admin_pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    }
    sqlite3_bind_blob(st, 1, id, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 6, blob, (int)len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 7, (int64_t)tsync__now_ms(s));
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) {
        tsync__err_sqlite(s->db, rc, "store a data key or grant");
        goto sqlerr;
    }
    *added = sqlite3_changes(s->db) > 0;
    return 0;
sqlerr:
    snprintf(err, TSYNC__ERRLEN, "%s", tsync_error_last()->message);
    return TSYNC_EIO;
}

/* A statement over one of the tables, or NULL (no error) when the table does not exist yet: a
 * database that never received such a record has none. */
static sqlite3_stmt *prep_opt(tsync_store *s, const char *sql, int *rc)
{
    sqlite3_stmt *st = NULL;
    *rc = 0;
    int src = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (src == SQLITE_OK) return st;
    if (strstr(sqlite3_errmsg(s->db), "no such table")) return NULL;
    *rc = tsync__err_sqlite(s->db, src, "read data keys");
    return NULL;
}

void tsync__held_keys_free(tsync__held_key *v, uint32_t n)
{
    if (v) sodium_memzero(v, n * sizeof *v);
    free(v);
}

int tsync__data_keys_held(tsync_store *s, tsync__held_key **out, uint32_t *n,
                          uint32_t *latest_epoch)
{
    *out = NULL, *n = 0, *latest_epoch = 0;
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    int rc = tsync__trust_enrolled(s, shop_id);
    if (rc <= 0) return rc;
    sqlite3_stmt *st = prep_opt(s,
                                "SELECT epoch, body FROM tsync_data_keys WHERE shop_id = ?1 "
                                "ORDER BY epoch, issued_ms, id",
                                &rc);
    if (!st) return rc;
    sqlite3_bind_blob(st, 1, shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    uint32_t cap = 0;
    int src;
    while (rc == 0 && (src = sqlite3_step(st)) == SQLITE_ROW) {
        uint32_t epoch = (uint32_t)sqlite3_column_int64(st, 0);
        if (epoch > *latest_epoch) *latest_epoch = epoch;
        if (*n && (*out)[*n - 1].epoch == epoch) continue; /* opened already */
        tsync__arena a = {0};
        tsync__trust_rec r;
        char err[TSYNC__ERRLEN];
        /* Verified when stored; decoded again for the seals (the bytes are the record). */
        if (tsync__trust_decode(sqlite3_column_blob(st, 1), (size_t)sqlite3_column_bytes(st, 1), &r,
                                &a, err) != 0 ||
            r.kind != TSYNC__T_DATA_KEY) {
            tsync__arena_free(&a);
            continue;
        }
        uint8_t key[TSYNC__DATA_KEY_BYTES];
        int orc = tsync__data_key_open(&r.u.dkey, s->sk, key);
        tsync__arena_free(&a);
        if (orc != 0) continue; /* not sealed to this till */
        if (*n == cap) {
            cap = cap ? 2 * cap : 4;
            tsync__held_key *grown = calloc(cap, sizeof *grown);
            if (!grown) {
                sodium_memzero(key, sizeof key);
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            if (*n) memcpy(grown, *out, *n * sizeof *grown);
            tsync__held_keys_free(*out, *n);
            *out = grown;
        }
        (*out)[*n].epoch = epoch;
        memcpy((*out)[*n].key, key, sizeof key);
        sodium_memzero(key, sizeof key);
        (*n)++;
    }
    if (rc == 0 && src != SQLITE_DONE) rc = tsync__err_sqlite(s->db, src, "read data keys");
    sqlite3_finalize(st);
    if (rc) {
        tsync__held_keys_free(*out, *n);
        *out = NULL, *n = 0;
    }
    return rc;
}

int tsync__grant_latest(tsync_store *s, uint8_t **body, size_t *len)
{
    *body = NULL, *len = 0;
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    int rc = tsync__trust_enrolled(s, shop_id);
    if (rc < 0) return rc;
    if (rc == 0) return TSYNC_ENOTFOUND;
    sqlite3_stmt *st = prep_opt(s,
                                "SELECT body FROM tsync_grants WHERE shop_id = ?1 "
                                "ORDER BY issued_ms DESC, id DESC LIMIT 1",
                                &rc);
    if (!st) return rc ? rc : TSYNC_ENOTFOUND;
    sqlite3_bind_blob(st, 1, shop_id, TSYNC__SHOP_ID_BYTES, SQLITE_STATIC);
    int src = sqlite3_step(st);
    if (src == SQLITE_ROW) {
        *len = (size_t)sqlite3_column_bytes(st, 0);
        *body = malloc(*len ? *len : 1);
        if (!*body)
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        else
            memcpy(*body, sqlite3_column_blob(st, 0), *len);
    } else if (src == SQLITE_DONE) {
        rc = TSYNC_ENOTFOUND;
    } else {
        rc = tsync__err_sqlite(s->db, src, "read grants");
    }
    sqlite3_finalize(st);
    return rc;
}

struct json_t *tsync__relaykeys_json(tsync_store *s)
{
    /* A till not enrolled has no shop, so no keys to speak of. */
    if (tsync__trust_enrolled(s, NULL) != 1) return json_null();
    json_t *o = json_object();
    tsync__held_key *v;
    uint32_t n, latest;
    if (tsync__data_keys_held(s, &v, &n, &latest) == 0) {
        json_object_set_new(o, "data_key_epoch", json_integer(n ? v[n - 1].epoch : 0));
        json_object_set_new(o, "data_key_latest", json_integer(latest));
        tsync__held_keys_free(v, n);
    }
    uint8_t *body;
    size_t len;
    json_t *g = json_null();
    if (tsync__grant_latest(s, &body, &len) == 0) {
        tsync__arena a = {0};
        tsync__trust_rec r;
        char err[TSYNC__ERRLEN];
        if (tsync__trust_decode(body, len, &r, &a, err) == 0 && r.kind == TSYNC__T_GRANT) {
            json_t *rl = json_array();
            for (uint32_t i = 0; i < r.u.grant.nrelays; i++) {
                char hex[2 * TSYNC__PK_BYTES + 1];
                tsync__hex(r.u.grant.relays[i].pk, TSYNC__PK_BYTES, hex);
                json_array_append_new(rl,
                                      json_pack("{s:s%,s:s}", "address", r.u.grant.relays[i].addr,
                                                (size_t)r.u.grant.relays[i].addr_len, "key", hex));
            }
            json_decref(g);
            g = json_pack("{s:o,s:I,s:I,s:I}", "relays", rl, "quota_mb",
                          (json_int_t)r.u.grant.quota_mb, "expires_ms",
                          (json_int_t)r.u.grant.expires_ms, "issued_ms",
                          (json_int_t)r.u.grant.issued_ms);
        }
        tsync__arena_free(&a);
        free(body);
    }
    json_object_set_new(o, "grant", g ? g : json_null());
    return o;
}
