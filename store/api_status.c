/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/api_status.c — the database's status for an app's status screen (tillsync/status.h): the
 * counts, rollbacks, what needs a person, held batches with their reasons, and the JSON that
 * `status`, `parked` and the node's status file show, built here once from the same reads.
 */
#include <jansson.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "collect_int.h"
#include "conflicts_int.h"
#include "internal.h"
#include "tillsync/conflicts.h"
#include "store/identity.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tillsync/migrate.h"
#include "tillsync/schema.h"
#include "tillsync/status.h"

_Static_assert(TSYNC_PUBLIC_KEY_BYTES == TSYNC__PK_BYTES, "a public key is an Ed25519 key");
_Static_assert(TSYNC_SITE_ID_BYTES == TSYNC__SITE_BYTES, "one size of site id");

/* Text the caller frees, from a JSON value; decrefs it. */
static int dump(json_t *v, char **out)
{
    *out = v ? json_dumps(v, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

static json_t *hexj(const uint8_t *p, size_t n)
{
    char h[2 * TSYNC__PK_BYTES + 1];
    tsync__hex(p, n, h);
    return json_string(h);
}

/* ---------------------------------------------------------------- counts */

static int count_mismatch(void *ctx, const tsync_schema_mismatch *m)
{
    (void)m;
    (*(size_t *)ctx)++;
    return 0;
}

static int count_behind(void *ctx, const tsync__behind *b)
{
    (void)b;
    (*(int64_t *)ctx)++;
    return 0;
}

static int count_horizon(void *ctx, const tsync__horizon *h)
{
    (void)h;
    (*(int64_t *)ctx)++;
    return 0;
}

/* The log's part of the status; what cannot be read is -1. */
static void log_status(tsync_store *s, tsync_store_status *st)
{
    tsync__log_stats ls;
    tsync_log_policy p;
    st->log_batches = st->log_bytes = st->log_max_batches = st->log_max_bytes = st->log_max_age_ms =
        st->log_horizons = -1;
    st->log_behind = 0;
    if (tsync__log_stats_get(s, &ls) == 0) {
        st->log_batches = ls.batches;
        st->log_bytes = ls.bytes;
        if (tsync__log_policy_resolve(s, NULL, &ls, &p) == 0) {
            st->log_max_batches = p.max_batches < 0 ? -1 : p.max_batches;
            st->log_max_bytes = p.max_bytes < 0 ? -1 : p.max_bytes;
            st->log_max_age_ms = p.max_age_ms < 0 ? -1 : p.max_age_ms;
        }
    }
    int64_t nh = 0;
    if (tsync__log_horizon(s, count_horizon, &nh) == 0) st->log_horizons = nh;
    tsync__log_behind(s, count_behind, &st->log_behind);
}

/* Conflicts on review columns still open (tsync_conflicts.kind 1 with no resolution in
 * tsync_resolved: store/conflicts.c); -1 when they cannot be read (a database of an older build
 * opened read-only has no kind yet: none). Before the first resolution there is no
 * tsync_resolved: every kind 1 entry is open. */
static int64_t review_open(tsync_store *s)
{
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT count(*) FROM tsync_conflicts c WHERE kind=1 AND NOT EXISTS "
                           "(SELECT 1 FROM " TSYNC__RESOLVED " r WHERE r.cid = c.cid)",
                           -1, &st, NULL) != SQLITE_OK &&
        sqlite3_prepare_v2(s->db, "SELECT count(*) FROM tsync_conflicts WHERE kind=1", -1, &st,
                           NULL) != SQLITE_OK)
        return sqlite3_prepare_v2(s->db, "SELECT 1 FROM tsync_conflicts LIMIT 0", -1, &st, NULL) ==
                       SQLITE_OK
                   ? (sqlite3_finalize(st), 0)
                   : -1;
    int64_t n = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_finalize(st);
    return n;
}

int tsync_store_status_get(tsync_store_status *out, tsync_store *s)
{
    if (!out) return tsync__err(TSYNC_EINVAL, "no status to fill");
    if (out->version < 1 || out->version > TSYNC_STORE_STATUS_VERSION)
        return tsync__err(TSYNC_EVERSION, "store status of version %u (this library has %u)",
                          out->version, (unsigned)TSYNC_STORE_STATUS_VERSION);
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    memcpy(st.site_id, s->site, sizeof st.site_id);
    memcpy(st.public_key, s->pk, sizeof st.public_key);
    /* A count that cannot be read is -1 and the rest still shows: status is what a person reads
     * when something is wrong. */
    tsync__sync_counts c;
    tsync__sync_counts_get(s, &c);
    st.held = c.held;
    st.parked = c.parked;
    st.conflicts = c.conflicts;
    st.forks = c.forks;
    st.unsealed = c.pending;
    /* Likewise: no rollback record reads as none. */
    if (tsync__identity_rollbacks(s, &st.rollbacks, &st.last_rollback_json) != 0) {
        st.rollbacks = 0;
        st.last_rollback_json = NULL;
    }
    char note[512];
    int rc = 0;
    if (tsync__unsealable_note(s, note, sizeof note) == 1 && !(st.unsealable = strdup(note)))
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) rc = tsync_store_schema_mismatches(s, count_mismatch, &st.schema_mismatches);
    if (rc == 0) rc = tsync_store_signed_migration_error(&st.signed_migration_error, s);
    if (rc != 0) {
        tsync_store_status_clear(&st);
        return rc;
    }
    log_status(s, &st);
    st.review_open = review_open(s);
    /* A caller built against an older version has room for that version's fields only. */
    if (out->version == 1) {
        st.version = 1;
        memcpy(out, &st, offsetof(tsync_store_status, log_batches));
    } else if (out->version == 2) {
        st.version = 2;
        memcpy(out, &st, offsetof(tsync_store_status, review_open));
    } else {
        *out = st;
    }
    return 0;
}

void tsync_store_status_clear(tsync_store_status *st)
{
    if (!st) return;
    unsigned int v = st->version;
    free(st->unsealable);
    free(st->signed_migration_error);
    free(st->last_rollback_json);
    memset(st, 0, sizeof *st);
    st->version = v;
}

int tsync_store_status_attention(const tsync_store_status *st)
{
    return st &&
           (st->schema_mismatches > 0 || st->signed_migration_error ||
            (st->version >= 2 && st->log_behind > 0) || (st->version >= 3 && st->review_open > 0));
}

/* ---------------------------------------------------------------- the log as JSON */

#define LOG_LIST_MAX 32

static int horizon_add(void *ctx, const tsync__horizon *h)
{
    if (json_array_size(ctx) >= LOG_LIST_MAX) return 0;
    json_t *e = json_object();
    json_object_set_new(e, "origin", hexj(h->site, TSYNC__SITE_BYTES));
    json_object_set_new(e, "seq", json_integer((json_int_t)h->seq));
    json_object_set_new(e, "head", json_integer((json_int_t)h->head));
    return json_array_append_new(ctx, e) == 0 ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

static int behind_add(void *ctx, const tsync__behind *b)
{
    if (json_array_size(ctx) >= LOG_LIST_MAX) return 0;
    json_t *e = json_object();
    json_object_set_new(e, "key", hexj(b->pk, TSYNC__PK_BYTES));
    json_object_set_new(e, "origin", hexj(b->horizon.site, TSYNC__SITE_BYTES));
    json_object_set_new(e, "acked", json_integer((json_int_t)b->horizon.acked));
    json_object_set_new(e, "horizon", json_integer((json_int_t)b->horizon.seq));
    json_object_set_new(e, "acked_ms", json_integer((json_int_t)b->acked_ms));
    return json_array_append_new(ctx, e) == 0 ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* Deleted rows collected (store/collect.c): "rows" ever, "pending" marked and waiting for every
 * till's acknowledgement, "frontier" (per origin the highest clock collected; at most 32). */
static json_t *collect_json(tsync_store *s)
{
    int64_t rows, pending;
    tsync__collect_counts(s, &rows, &pending);
    json_t *c = json_object(), *f = json_array();
    json_object_set_new(c, "rows", json_integer(rows));
    json_object_set_new(c, "pending", json_integer(pending));
    tsync__front *fr = NULL;
    size_t n = 0;
    if (tsync__front_load(s, &fr, &n) == 0)
        for (size_t i = 0; i < n && i < LOG_LIST_MAX; i++) {
            json_t *e = json_object();
            json_object_set_new(e, "origin", hexj(fr[i].site, TSYNC__SITE_BYTES));
            json_object_set_new(e, "hlc", json_integer((json_int_t)fr[i].hlc));
            json_array_append_new(f, e);
        }
    free(fr);
    json_object_set_new(c, "frontier", f);
    return c;
}

int tsync_store_log_json(char **out, tsync_store *s)
{
    *out = NULL;
    tsync_store_status full = TSYNC_STORE_STATUS_INIT, *st = &full;
    log_status(s, st);
    json_t *o = json_object(), *p = json_object(), *h = json_array(), *b = json_array();
    json_object_set_new(o, "batches", json_integer(st->log_batches));
    json_object_set_new(o, "bytes", json_integer(st->log_bytes));
    json_object_set_new(p, "max_batches", json_integer(st->log_max_batches));
    json_object_set_new(p, "max_bytes", json_integer(st->log_max_bytes));
    json_object_set_new(p, "max_age_ms", json_integer(st->log_max_age_ms));
    json_object_set_new(o, "policy", p);
    tsync__log_horizon(s, horizon_add, h);
    tsync__log_behind(s, behind_add, b);
    json_object_set_new(o, "horizon", h);
    json_object_set_new(o, "behind", b);
    json_object_set_new(o, "collect", collect_json(s));
    return dump(o, out);
}

/* ---------------------------------------------------------------- lists as JSON */

static int mismatch_add(void *ctx, const tsync_schema_mismatch *m)
{
    json_t *e = json_object();
    json_object_set_new(e, "table", json_string(m->table));
    json_object_set_new(e, "column", m->column ? json_string(m->column) : json_null());
    json_object_set_new(e, "site", json_string(m->site_hex));
    json_object_set_new(e, "till", json_string(m->till));
    json_object_set_new(e, "what", json_string(m->what));
    json_object_set_new(e, "seen_ms", json_integer((json_int_t)m->seen_ms));
    return json_array_append_new(ctx, e) == 0 ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

static int parked_add(void *ctx, const tsync_parked_change *c)
{
    json_t *e = json_object();
    json_object_set_new(e, "id", json_integer(c->id));
    json_object_set_new(e, "origin", json_string(c->origin_hex));
    json_object_set_new(e, "till", json_string(c->till));
    json_object_set_new(e, "seq", json_integer((json_int_t)c->seq));
    json_object_set_new(e, "row", json_integer(c->row));
    json_object_set_new(e, "table", json_string(c->table));
    json_object_set_new(e, "column", c->column ? json_string(c->column) : json_null());
    json_object_set_new(e, "reason", json_string(c->reason));
    return json_array_append_new(ctx, e) == 0 ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

static int mismatches(tsync_store *s, json_t **out)
{
    *out = json_array();
    if (!*out) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = tsync_store_schema_mismatches(s, mismatch_add, *out);
    if (rc) json_decref(*out), *out = NULL;
    return rc;
}

static int parked(tsync_store *s, size_t limit, size_t *total, json_t **out)
{
    *out = json_array();
    if (!*out) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int rc = tsync_store_parked_foreach(s, limit, total, parked_add, *out);
    if (rc) json_decref(*out), *out = NULL;
    return rc;
}

int tsync_store_schema_mismatches_json(char **out, tsync_store *s)
{
    *out = NULL;
    json_t *a;
    int rc = mismatches(s, &a);
    return rc ? rc : dump(a, out);
}

int tsync_store_parked_json(char **out, tsync_store *s, size_t limit)
{
    *out = NULL;
    json_t *a;
    size_t total = 0;
    int rc = parked(s, limit, &total, &a);
    if (rc) return rc;
    json_t *o = json_object();
    json_object_set_new(o, "total", json_integer((json_int_t)total));
    json_object_set_new(o, "parked", a);
    return dump(o, out);
}

int tsync_store_status_json(char **out, tsync_store *s, size_t parked_max)
{
    *out = NULL;
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    int rc = tsync_store_status_get(&st, s);
    if (rc) return rc;
    json_t *mm = NULL, *pk = NULL;
    rc = mismatches(s, &mm);
    if (rc == 0) rc = parked(s, parked_max, NULL, &pk);
    if (rc) {
        json_decref(mm);
        tsync_store_status_clear(&st);
        return rc;
    }
    json_t *o = json_object();
    json_object_set_new(o, "site", hexj(st.site_id, sizeof st.site_id));
    json_object_set_new(o, "public_key", hexj(st.public_key, sizeof st.public_key));
    json_object_set_new(o, "rollbacks", json_integer(st.rollbacks));
    if (st.unsealable) json_object_set_new(o, "unsealable", json_string(st.unsealable));
    json_object_set_new(o, "held", json_integer(st.held));
    json_object_set_new(o, "parked", json_integer(st.parked));
    json_object_set_new(o, "conflicts", json_integer(st.conflicts));
    {
        /* Open conflicts wait for a person (tillsync/conflicts.h); -1 when unreadable. */
        int64_t open = -1;
        if (tsync_store_conflicts_count(&open, NULL, s) != 0) open = -1;
        json_object_set_new(o, "conflicts_open", json_integer(open));
    }
    json_object_set_new(o, "forks", json_integer(st.forks));
    json_object_set_new(o, "unsealed", json_integer(st.unsealed));
    /* Like "unsealable": there only when something waits for a person. */
    if (st.review_open > 0) json_object_set_new(o, "review_open", json_integer(st.review_open));
    json_t *lr = st.last_rollback_json ? json_loads(st.last_rollback_json, 0, NULL) : NULL;
    json_object_set_new(o, "last_rollback", lr ? lr : json_null());
    /* The table definitions of another till differ, or signed migrations cannot run: one
     * definition must change, by a person (docs/MIGRATIONS.md). A till behind the log's
     * horizon needs a snapshot or a restore. */
    json_object_set_new(o, "state",
                        json_string(json_array_size(mm) || st.signed_migration_error ||
                                            st.log_behind > 0 || st.review_open > 0
                                        ? "attention"
                                        : "ok"));
    json_object_set_new(o, "schema_mismatches", mm);
    json_object_set_new(o, "signed_migration_error",
                        st.signed_migration_error ? json_string(st.signed_migration_error)
                                                  : json_null());
    json_object_set_new(o, "parked_changes", pk);
    /* The relay keys this till holds (docs/RELAY_KEYS.md). */
    json_object_set_new(o, "relay_keys", tsync__relaykeys_json(s));
    tsync_store_status_clear(&st);
    return dump(o, out);
}

/* ---------------------------------------------------------------- held batches */

int tsync_store_held_foreach(size_t *total, tsync_store *s, size_t limit, tsync_held_fn fn,
                             void *ctx)
{
    sqlite3_stmt *st;
    if (total) {
        *total = 0;
        if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM tsync_held", -1, &st, NULL) !=
            SQLITE_OK)
            return tsync__err_sqlite(s->db, SQLITE_ERROR, "read held batches");
        if (sqlite3_step(st) == SQLITE_ROW) *total = (size_t)sqlite3_column_int64(st, 0);
        sqlite3_finalize(st);
    }
    if (sqlite3_prepare_v2(s->db,
                           "SELECT s.site, h.seq, h.reason FROM tsync_held h LEFT JOIN tsync_sites "
                           "s ON s.idx = h.site ORDER BY s.site, h.seq LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "read held batches");
    sqlite3_bind_int64(st, 1, limit ? (int64_t)(limit > INT64_MAX ? INT64_MAX : limit) : -1);
    int rc = 0, x;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        char hex[2 * TSYNC__SITE_BYTES + 1] = "";
        if (sqlite3_column_bytes(st, 0) == TSYNC__SITE_BYTES)
            tsync__hex(sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES, hex);
        const char *why = (const char *)sqlite3_column_text(st, 2);
        tsync_held_batch b = {TSYNC_HELD_BATCH_VERSION, hex, (uint64_t)sqlite3_column_int64(st, 1),
                              why ? why : ""};
        if ((rc = fn(ctx, &b))) break;
    }
    if (rc == 0 && x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "read held batches");
    sqlite3_finalize(st);
    return rc;
}
