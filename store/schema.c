/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/schema.c — tills compare the definitions of their replicated tables. Two tills whose
 * `products` differ (a counter on one only, an extra column, another declared type) merge each
 * other's batches without error, yet park or drop parts of them, or store values with another
 * affinity: their contents never converge. This file gives each till a canonical description of
 * its replicated tables and a digest of it, keeps the latest description each other till sent
 * (in the handshake or in a bundle) in tsync_peer_schemas, and says what differs, so `status` can
 * show it. It also lists the parked changes with their reasons (tillsync/schema.h).
 *
 * Design notes
 * - The description is msgpack `[format, tables]`, each table `[name, cols]`, each column
 *   `[name, type, key, role]` (key: 0, or the column's position in the primary key from 1;
 *   role: 0 LWW, 1 counter, and since column policies 2 max, 3 min, 4 review; a till that knows
 *   only 0 and 1 refuses a description with a policy, with a clear error, and a table without
 *   policies is described in the same bytes as before). Names and declared types are in ASCII lower
 * case (SQLite compares names ASCII-case-insensitively, and a declared type's affinity does not
 * depend on case), types with runs of blanks made one space; tables and columns sorted by name
 * bytewise. So two tills have the same bytes, and the same digest, exactly when they replicate the
 * same tables with the same columns, types, keys and counters; column order does not matter
 * (batches name columns).
 * - The decoder accepts only that canonical form. A description is advisory (it changes what
 *   status shows, never what merges), so it is not signed; it arrives over an authenticated
 *   session or in a bundle whose batches are verified.
 * - A till's own description is computed when needed (a few PRAGMAs per replicated table) rather
 *   than cached, so a migration, a `replicate` or a change by hand is seen at once.
 */
#include <inttypes.h>
#include <jansson.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "internal.h"
#include "store/sync.h"
#include "store/schema.h"

static const char *PEER_SCHEMAS =
    "CREATE TABLE IF NOT EXISTS tsync_peer_schemas(site BLOB PRIMARY KEY, pk BLOB,"
    "  defs BLOB NOT NULL, digest BLOB NOT NULL, ours BLOB NOT NULL, seen_ms INTEGER NOT NULL)"
    "  WITHOUT ROWID;";

/* ---------------------------------------------------------------- this till's description */

typedef struct {
    char *name, *type;
    int key, counter;
} lcol;

typedef struct {
    char *name;
    int ncols;
    lcol cols[TSYNC__MAX_COLS];
} ltable;

static void lower(char *p)
{
    for (; *p; p++)
        if (*p >= 'A' && *p <= 'Z') *p = (char)(*p - 'A' + 'a');
}

/* Lower case, blanks trimmed and runs of them made one space. */
static char *norm_type(const char *t)
{
    char *o = malloc(strlen(t ? t : "") + 1);
    if (!o) return NULL;
    size_t n = 0;
    int blank = 0;
    for (const char *p = t ? t : ""; *p; p++) {
        if (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r' || *p == '\f' || *p == '\v') {
            blank = n > 0;
            continue;
        }
        if (blank) o[n++] = ' ';
        blank = 0;
        o[n++] = *p;
    }
    o[n] = '\0';
    lower(o);
    return o;
}

static int by_col(const void *a, const void *b)
{
    return strcmp(((const lcol *)a)->name, ((const lcol *)b)->name);
}

static int by_table(const void *a, const void *b)
{
    return strcmp(((const ltable *)a)->name, ((const ltable *)b)->name);
}

static void ltables_free(ltable *t, int n)
{
    for (int i = 0; t && i < n; i++) {
        free(t[i].name);
        for (int k = 0; k < t[i].ncols; k++) free(t[i].cols[k].name), free(t[i].cols[k].type);
    }
    free(t);
}

static int describe_table(tsync_store *s, const tsync__table *t, ltable *o)
{
    o->name = strdup(t->name);
    if (!o->name) return tsync__err(TSYNC_ENOMEM, "out of memory");
    lower(o->name);
    sqlite3_stmt *st = tsync__prep(s, "SELECT name, type FROM pragma_table_xinfo(?1)");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_text(st, 1, t->name, -1, SQLITE_STATIC);
    for (int c = 0; c < t->ncols; c++) {
        lcol *lc = &o->cols[o->ncols++];
        lc->name = strdup(t->cols[c]);
        lc->type = NULL;
        lc->counter = t->is_counter[c] ? 1 : t->policy[c] ? 1 + t->policy[c] : 0;
        lc->key = 0;
        for (int k = 0; k < t->npk; k++)
            if (t->pk[k] == c) lc->key = k + 1;
        if (!lc->name) {
            sqlite3_reset(st);
            return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
    }
    int x;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        const char *cn = (const char *)sqlite3_column_text(st, 0);
        int c = cn ? tsync__col_by_name(t, cn, strlen(cn)) : -1;
        if (c < 0 || o->cols[c].type) continue;
        if (!(o->cols[c].type = norm_type((const char *)sqlite3_column_text(st, 1)))) {
            sqlite3_reset(st);
            return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
    }
    sqlite3_reset(st);
    if (x != SQLITE_DONE) return tsync__err_sqlite(s->db, x, "read the columns of a table");
    for (int c = 0; c < o->ncols; c++) {
        lower(o->cols[c].name);
        if (!o->cols[c].type && !(o->cols[c].type = strdup("")))
            return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    qsort(o->cols, (size_t)o->ncols, sizeof o->cols[0], by_col);
    return 0;
}

static int pack_str(msgpack_packer *pk, const char *s)
{
    size_t n = strlen(s);
    return msgpack_pack_str(pk, n) || (n && msgpack_pack_str_body(pk, s, n));
}

int tsync__schema_encode(tsync_store *s, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    ltable *lt = calloc((size_t)s->ntables + 1, sizeof *lt);
    if (!lt) return tsync__err(TSYNC_ENOMEM, "out of memory");
    int n = 0;
    for (int i = 0; rc == 0 && i < s->ntables; i++)
        if (!tsync__table_internal(s->tables[i].name)) /* the library's own: every till makes it */
            rc = describe_table(s, &s->tables[i], &lt[n++]);
    if (rc) {
        ltables_free(lt, n);
        return rc;
    }
    qsort(lt, (size_t)n, sizeof *lt, by_table);
    msgpack_sbuffer sb;
    msgpack_packer pk;
    msgpack_sbuffer_init(&sb);
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int bad = msgpack_pack_array(&pk, 2) || msgpack_pack_uint32(&pk, TSYNC__SCHEMA_FORMAT) ||
              msgpack_pack_array(&pk, (size_t)n);
    for (int i = 0; !bad && i < n; i++) {
        bad = msgpack_pack_array(&pk, 2) || pack_str(&pk, lt[i].name) ||
              msgpack_pack_array(&pk, (size_t)lt[i].ncols);
        for (int c = 0; !bad && c < lt[i].ncols; c++) {
            const lcol *lc = &lt[i].cols[c];
            bad = msgpack_pack_array(&pk, 4) || pack_str(&pk, lc->name) ||
                  pack_str(&pk, lc->type) || msgpack_pack_uint32(&pk, (uint32_t)lc->key) ||
                  msgpack_pack_uint32(&pk, (uint32_t)lc->counter);
        }
    }
    ltables_free(lt, n);
    if (bad) {
        msgpack_sbuffer_destroy(&sb);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    /* What we send must be what every till accepts: a name the canonical form cannot carry (too
     * long, not UTF-8) means no description rather than one that peers refuse. */
    tsync__arena a = {0};
    tsync__schema chk;
    char err[TSYNC__ERRLEN];
    rc = tsync__schema_decode((const uint8_t *)sb.data, sb.size, &chk, &a, err);
    tsync__arena_free(&a);
    if (rc) {
        msgpack_sbuffer_destroy(&sb);
        return tsync__err(TSYNC_EUNSUPPORTED,
                          "the definitions of the replicated tables cannot be described: %s", err);
    }
    *len = sb.size;
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    return 0;
}

int tsync__schema_message(tsync_store *s, uint8_t site[TSYNC__SITE_BYTES],
                          uint8_t inc[TSYNC__INC_BYTES], uint8_t **defs, size_t *len)
{
    memcpy(site, s->site, TSYNC__SITE_BYTES);
    memcpy(inc, s->inc, TSYNC__INC_BYTES);
    return tsync__schema_encode(s, defs, len);
}

void tsync__schema_digest(const uint8_t *p, size_t n, uint8_t out[TSYNC__HASH_BYTES])
{
    crypto_generichash(out, TSYNC__HASH_BYTES, p, n, NULL, 0);
}

/* ---------------------------------------------------------------- strict decoder */

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, TSYNC__ERRLEN, "table definitions: " __VA_ARGS__);                           \
        return TSYNC_ECORRUPT;                                                                     \
    } while (0)

/* Index of the first byte that is not valid UTF-8, a control character or an upper-case ASCII
 * letter; n when there is none. */
static size_t name_bad_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        if (c < 0x80) {
            if (c < 0x20 || c == 0x7f || (c >= 'A' && c <= 'Z')) return i;
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xc2 && c <= 0xdf)
            k = 1, cp = c & 0x1f;
        else if (c >= 0xe0 && c <= 0xef)
            k = 2, cp = c & 0x0f;
        else if (c >= 0xf0 && c <= 0xf4)
            k = 3, cp = c & 0x07;
        else
            return i;
        if (n - i < k + 1) return i;
        for (size_t j = 1; j <= k; j++) {
            if ((s[i + j] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (s[i + j] & 0x3f);
        }
        if ((k == 2 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
            (k == 3 && (cp < 0x10000 || cp > 0x10ffff)))
            return i;
        i += k + 1;
    }
    return n;
}

static int rd_name(tsync__mpr *r, const char **s, uint32_t *n, bool may_be_empty, const char *what,
                   char err[TSYNC__ERRLEN])
{
    if (!tsync__mpr_str(r, s, n)) FAIL("%s is not a string", what);
    if (*n == 0 && !may_be_empty) FAIL("%s is empty", what);
    if (*n > TSYNC__SCHEMA_NAME_MAX)
        FAIL("%s has %" PRIu32 " bytes, at most %u", what, *n, TSYNC__SCHEMA_NAME_MAX);
    size_t bad = name_bad_at((const uint8_t *)*s, *n);
    if (bad < *n)
        FAIL("%s has an upper-case letter, a control character or invalid UTF-8 at byte %zu", what,
             bad);
    return 0;
}

/* Bytewise order, a prefix first: how the encoder sorts (strcmp of the lowered names). */
static int name_cmp(const char *a, uint32_t an, const char *b, uint32_t bn)
{
    int c = memcmp(a, b, an < bn ? an : bn);
    return c ? c : (an > bn) - (an < bn);
}

int tsync__schema_decode(const uint8_t *p, size_t n, tsync__schema *out, tsync__arena *a,
                         char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    if (!p || n == 0) FAIL("empty");
    if (n > TSYNC__SCHEMA_MAX_BYTES)
        FAIL("%zu bytes, more than %u", n, (unsigned)TSYNC__SCHEMA_MAX_BYTES);
    tsync__mpr r;
    tsync__mpr_init(&r, p, n);
    uint32_t k, nt;
    uint64_t fmt;
    if (!tsync__mpr_array(&r, &k) || k != 2) FAIL("not an array of 2 items");
    if (!tsync__mpr_uint(&r, &fmt)) FAIL("the format is not a uint");
    if (fmt != TSYNC__SCHEMA_FORMAT) {
        snprintf(err, TSYNC__ERRLEN, "table definitions: format %" PRIu64 " is not supported (%u)",
                 fmt, TSYNC__SCHEMA_FORMAT);
        return TSYNC_EVERSION;
    }
    if (!tsync__mpr_array(&r, &nt)) FAIL("the tables are not an array");
    if (nt > TSYNC__SCHEMA_MAX_TABLES)
        FAIL("%" PRIu32 " tables, at most %u", nt, TSYNC__SCHEMA_MAX_TABLES);
    tsync__stable *ts = tsync__arena_alloc(a, (nt ? nt : 1) * sizeof *ts);
    if (!ts) FAIL("out of memory");
    int rc;
    for (uint32_t i = 0; i < nt; i++) {
        tsync__stable *t = &ts[i];
        uint32_t nc;
        if (!tsync__mpr_array(&r, &k) || k != 2)
            FAIL("table %" PRIu32 " is not [name, columns]", i);
        if ((rc = rd_name(&r, &t->name, &t->name_len, false, "a table name", err))) return rc;
        if (i && name_cmp(ts[i - 1].name, ts[i - 1].name_len, t->name, t->name_len) >= 0)
            FAIL("table %.*s is out of order or listed twice", (int)t->name_len, t->name);
        if (!tsync__mpr_array(&r, &nc) || nc == 0 || nc > TSYNC__MAX_COLS)
            FAIL("table %.*s: columns are not an array of 1..%d", (int)t->name_len, t->name,
                 TSYNC__MAX_COLS);
        t->cols = tsync__arena_alloc(a, nc * sizeof *t->cols);
        if (!t->cols) FAIL("out of memory");
        uint32_t keys = 0, npk = 0;
        for (uint32_t c = 0; c < nc; c++) {
            tsync__scol *col = &t->cols[c];
            uint64_t key, ctr;
            if (!tsync__mpr_array(&r, &k) || k != 4)
                FAIL("table %.*s: column %" PRIu32 " is not [name, type, key, counter]",
                     (int)t->name_len, t->name, c);
            if ((rc = rd_name(&r, &col->name, &col->name_len, false, "a column name", err)) ||
                (rc = rd_name(&r, &col->type, &col->type_len, true, "a declared type", err)))
                return rc;
            if (c && name_cmp(t->cols[c - 1].name, t->cols[c - 1].name_len, col->name,
                              col->name_len) >= 0)
                FAIL("table %.*s: column %.*s is out of order or listed twice", (int)t->name_len,
                     t->name, (int)col->name_len, col->name);
            if (!tsync__mpr_uint(&r, &key) || key > TSYNC__MAX_PK_COLS)
                FAIL("table %.*s: column %.*s: the key position is not a uint 0..%d",
                     (int)t->name_len, t->name, (int)col->name_len, col->name, TSYNC__MAX_PK_COLS);
            if (!tsync__mpr_uint(&r, &ctr) || ctr > 1 + TSYNC__POLICY_REVIEW)
                FAIL("table %.*s: column %.*s: the counter flag is not 0 or 1, nor a policy "
                     "2..%d (max, min, review)",
                     (int)t->name_len, t->name, (int)col->name_len, col->name,
                     1 + TSYNC__POLICY_REVIEW);
            if (key && ctr > 1)
                FAIL("table %.*s: column %.*s: a key column takes no policy (the counter flag "
                     "is not 0 or 1)",
                     (int)t->name_len, t->name, (int)col->name_len, col->name);
            if (key && ctr)
                FAIL("table %.*s: column %.*s is both a key column and a counter", (int)t->name_len,
                     t->name, (int)col->name_len, col->name);
            if (key) {
                if (keys & (1u << key))
                    FAIL("table %.*s: two columns at key position %" PRIu64, (int)t->name_len,
                         t->name, key);
                keys |= 1u << key;
                npk++;
            }
            col->key = (uint8_t)key;
            col->counter = ctr == 1;
            col->policy = (uint8_t)(ctr > 1 ? ctr - 1 : 0);
        }
        if (npk == 0 || keys != ((1u << (npk + 1)) - 2))
            FAIL("table %.*s: the key positions are not 1..n", (int)t->name_len, t->name);
        t->ncols = nc;
    }
    if (!tsync__mpr_done(&r)) FAIL("%zu trailing bytes or a malformed item", (size_t)(r.end - r.p));
    out->ntables = nt;
    out->tables = ts;
    return 0;
}

/* ---------------------------------------------------------------- comparison */

static void diff_table(const tsync__stable *h, const tsync__stable *t, tsync__schema_diff_fn fn,
                       void *ctx)
{
    char tn[TSYNC__SCHEMA_NAME_MAX + 1], cn[TSYNC__SCHEMA_NAME_MAX + 1], w[3 * 300];
    snprintf(tn, sizeof tn, "%.*s", (int)h->name_len, h->name);
    uint32_t i = 0, j = 0;
    while (i < h->ncols || j < t->ncols) {
        const tsync__scol *a = i < h->ncols ? &h->cols[i] : NULL;
        const tsync__scol *b = j < t->ncols ? &t->cols[j] : NULL;
        int c = !a ? 1 : !b ? -1 : name_cmp(a->name, a->name_len, b->name, b->name_len);
        const tsync__scol *x = c <= 0 ? a : b;
        snprintf(cn, sizeof cn, "%.*s", (int)x->name_len, x->name);
        if (c < 0) {
            snprintf(w, sizeof w, "column %s: here, missing there", cn);
            fn(ctx, tn, cn, w);
            i++;
            continue;
        }
        if (c > 0) {
            snprintf(w, sizeof w, "column %s: there, missing here", cn);
            fn(ctx, tn, cn, w);
            j++;
            continue;
        }
        if (a->counter != b->counter) {
            snprintf(w, sizeof w, "column %s: %s here, %s there", cn,
                     a->counter ? "a counter" : "a plain column",
                     b->counter ? "a counter" : "a plain column");
            fn(ctx, tn, cn, w);
        }
        if (a->policy != b->policy) {
            snprintf(w, sizeof w, "column %s: merges by %s here, by %s there", cn,
                     tsync__policy_name(a->policy) ?: "lww",
                     tsync__policy_name(b->policy) ?: "lww");
            fn(ctx, tn, cn, w);
        }
        if (a->key != b->key) {
            if (a->key && b->key)
                snprintf(w, sizeof w, "column %s: key column %u here, key column %u there", cn,
                         a->key, b->key);
            else
                snprintf(w, sizeof w, "column %s: %s here, %s there", cn,
                         a->key ? "in the key" : "not in the key",
                         b->key ? "in the key" : "not in the key");
            fn(ctx, tn, cn, w);
        }
        if (a->type_len != b->type_len || memcmp(a->type, b->type, a->type_len) != 0) {
            snprintf(w, sizeof w, "column %s: type %.*s here, %.*s there", cn,
                     a->type_len ? (int)a->type_len : 4, a->type_len ? a->type : "none",
                     b->type_len ? (int)b->type_len : 4, b->type_len ? b->type : "none");
            fn(ctx, tn, cn, w);
        }
        i++, j++;
    }
}

void tsync__schema_diff(const tsync__schema *here, const tsync__schema *there,
                        tsync__schema_diff_fn fn, void *ctx)
{
    uint32_t i = 0, j = 0;
    char tn[TSYNC__SCHEMA_NAME_MAX + 1];
    while (i < here->ntables || j < there->ntables) {
        const tsync__stable *a = i < here->ntables ? &here->tables[i] : NULL;
        const tsync__stable *b = j < there->ntables ? &there->tables[j] : NULL;
        int c = !a ? 1 : !b ? -1 : name_cmp(a->name, a->name_len, b->name, b->name_len);
        if (c == 0) {
            diff_table(a, b, fn, ctx);
            i++, j++;
            continue;
        }
        const tsync__stable *x = c < 0 ? a : b;
        snprintf(tn, sizeof tn, "%.*s", (int)x->name_len, x->name);
        fn(ctx, tn, NULL, c < 0 ? "replicated here, not there" : "replicated there, not here");
        if (c < 0)
            i++;
        else
            j++;
    }
}

/* ---------------------------------------------------------------- other tills' descriptions */

int tsync__schema_record(tsync_store *s, const uint8_t site[TSYNC__SITE_BYTES], const uint8_t *pk,
                         const uint8_t *defs, size_t len, int *changed)
{
    if (changed) *changed = 0;
    tsync__arena a = {0};
    tsync__schema sc;
    char err[TSYNC__ERRLEN];
    int rc = tsync__schema_decode(defs, len, &sc, &a, err);
    tsync__arena_free(&a);
    if (rc) return tsync__err(rc, "%s", err);
    if (memcmp(site, s->site, TSYNC__SITE_BYTES) == 0) return 0;
    uint8_t digest[TSYNC__HASH_BYTES], ours[TSYNC__HASH_BYTES];
    tsync__schema_digest(defs, len, digest);
    uint8_t *mine = NULL;
    size_t mlen = 0;
    if ((rc = tsync__schema_encode(s, &mine, &mlen))) return rc;
    tsync__schema_digest(mine, mlen, ours);
    free(mine);
    sqlite3_stmt *st;
    /* The usual case, the same definitions again (every session, every bundle): nothing to
     * write, so no write transaction. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT 1 FROM tsync_peer_schemas WHERE site = ?1 AND digest = ?2 AND "
                           "ours = ?3 AND (?4 IS NULL OR pk = ?4)",
                           -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, digest, sizeof digest, SQLITE_STATIC);
        sqlite3_bind_blob(st, 3, ours, sizeof ours, SQLITE_STATIC);
        if (pk) sqlite3_bind_blob(st, 4, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        int same = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
        if (same) return 0;
    }
    int own = !s->in_txn;
    if (own && (rc = tsync__begin(s))) return rc;
    if ((rc = tsync__exec(s, PEER_SCHEMAS))) goto out;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT digest = ?2 AND ours = ?3 FROM tsync_peer_schemas "
                           "WHERE site = ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "read the definitions of other tills");
        goto out;
    }
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, digest, sizeof digest, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, ours, sizeof ours, SQLITE_STATIC);
    int same = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int(st, 0);
    sqlite3_finalize(st);
    if (changed) *changed = !same;
    /* A till restored from a backup comes back with a new site id and the same key: its old
     * record would otherwise be shown for ever. */
    if (pk &&
        sqlite3_prepare_v2(s->db, "DELETE FROM tsync_peer_schemas WHERE pk = ?1 AND site <> ?2", -1,
                           &st, NULL) == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        int x = sqlite3_step(st);
        sqlite3_finalize(st);
        if (x != SQLITE_DONE) {
            rc = tsync__err_sqlite(s->db, x, "record the definitions of another till");
            goto out;
        }
    }
    if (sqlite3_prepare_v2(
            s->db,
            "INSERT OR REPLACE INTO tsync_peer_schemas(site, pk, defs, digest, ours, "
            "seen_ms) VALUES(?1, coalesce(?2, (SELECT pk FROM tsync_peer_schemas "
            "WHERE site = ?1)), ?3, ?4, ?5, ?6)",
            -1, &st, NULL) != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "record the definitions of another till");
        goto out;
    }
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    if (pk) sqlite3_bind_blob(st, 2, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 3, defs, (int)len, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, digest, sizeof digest, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, ours, sizeof ours, SQLITE_STATIC);
    sqlite3_bind_int64(st, 6, (int64_t)tsync__now_ms(s));
    int x = sqlite3_step(st);
    sqlite3_finalize(st);
    if (x != SQLITE_DONE)
        rc = tsync__err_sqlite(s->db, x, "record the definitions of another till");
out:
    if (own) {
        if (rc == 0)
            rc = tsync__commit(s);
        else
            tsync__rollback(s);
    }
    return rc;
}

/* The device name in a certificate of pk, or "" (no trust tables, no certificate). */
static void till_name(tsync_store *s, const void *pk, int pklen, char *out, size_t outlen)
{
    out[0] = '\0';
    sqlite3_stmt *st;
    if (!pk || pklen != TSYNC__PK_BYTES ||
        sqlite3_prepare_v2(s->db,
                           "SELECT device_name FROM tsync_certs WHERE device_pk = ?1 "
                           "ORDER BY not_before DESC LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return;
    sqlite3_bind_blob(st, 1, pk, pklen, SQLITE_STATIC);
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
        snprintf(out, outlen, "%s", (const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
}

/* 1 when pk is revoked in this database's shop (no trust tables: 0). A revoked till's
 * definitions no longer matter. */
static int revoked(tsync_store *s, const void *pk, int pklen)
{
    sqlite3_stmt *st;
    if (!pk || pklen != TSYNC__PK_BYTES ||
        sqlite3_prepare_v2(s->db, "SELECT 1 FROM tsync_revocations WHERE device_pk = ?1 LIMIT 1",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    sqlite3_bind_blob(st, 1, pk, pklen, SQLITE_STATIC);
    int yes = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
    return yes;
}

typedef struct {
    tsync_schema_mismatch m;
    tsync_schema_mismatch_fn fn;
    void *ctx;
    int rc;
} mm_ctx;

static void mm_one(void *ctx, const char *table, const char *column, const char *what)
{
    mm_ctx *c = ctx;
    if (c->rc) return;
    c->m.table = table;
    c->m.column = column;
    c->m.what = what;
    c->rc = c->fn(c->ctx, &c->m);
}

int tsync__schema_mismatches(tsync_store *s, const uint8_t *site, tsync_schema_mismatch_fn fn,
                             void *ctx)
{
    sqlite3_stmt *st;
    /* No table: no other till's definition was ever received. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT site, pk, defs, seen_ms FROM tsync_peer_schemas WHERE ?1 IS "
                           "NULL OR site = ?1 ORDER BY site",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    if (site) sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    uint8_t *mine = NULL;
    size_t mlen = 0;
    int rc = tsync__schema_encode(s, &mine, &mlen);
    tsync__arena a = {0};
    tsync__schema here;
    char err[TSYNC__ERRLEN];
    if (rc == 0 && (rc = tsync__schema_decode(mine, mlen, &here, &a, err)))
        rc = tsync__err(rc, "%s", err);
    int x = SQLITE_DONE;
    while (rc == 0 && (x = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__arena ta = {0};
        tsync__schema there;
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES ||
            tsync__schema_decode(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2),
                                 &there, &ta, err) != 0) {
            tsync__arena_free(&ta);
            continue; /* written by this library after a strict decode: cannot happen */
        }
        if (revoked(s, sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1))) {
            tsync__arena_free(&ta);
            continue;
        }
        char hex[2 * TSYNC__SITE_BYTES + 1], name[256];
        tsync__hex(sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES, hex);
        till_name(s, sqlite3_column_blob(st, 1), sqlite3_column_bytes(st, 1), name, sizeof name);
        mm_ctx c = {.fn = fn, .ctx = ctx};
        c.m.version = TSYNC_SCHEMA_MISMATCH_VERSION;
        c.m.site_hex = hex;
        c.m.till = name;
        c.m.seen_ms = (uint64_t)sqlite3_column_int64(st, 3);
        tsync__schema_diff(&here, &there, mm_one, &c);
        tsync__arena_free(&ta);
        rc = c.rc;
    }
    if (rc == 0 && x != SQLITE_DONE)
        rc = tsync__err_sqlite(s->db, x, "read the definitions of other tills");
    sqlite3_finalize(st);
    tsync__arena_free(&a);
    free(mine);
    return rc;
}

int tsync_store_schema_mismatches(tsync_store *s, tsync_schema_mismatch_fn fn, void *ctx)
{
    return tsync__schema_mismatches(s, NULL, fn, ctx);
}

/* ---------------------------------------------------------------- bundles */

static void report_add(tsync_merge_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void report_add(tsync_merge_report *r, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nm = realloc(r->messages, (r->nmessages + 1) * sizeof *nm);
    if (!nm) return;
    r->messages = nm;
    if ((r->messages[r->nmessages] = strdup(buf))) r->nmessages++;
}

static int report_mismatch(void *ctx, const tsync_schema_mismatch *m)
{
    report_add(ctx, "definition of %s differs on till %s%s%.16s: %s", m->table, m->till,
               m->till[0] ? " " : "", m->site_hex, m->what);
    return 0;
}

int tsync__schema_from_bundle(tsync_store *s, const tsync__bundle *b, tsync_merge_report *report)
{
    if (b->ntrust) {
        /* Its trust records may have brought signed migrations: run them now, so the parked
         * changes that they make fit apply. A refusal does not fail the merge; it is reported
         * and kept for status. */
        tsync_migrate_report mr = TSYNC_MIGRATE_REPORT_INIT;
        int mrc = tsync__migrate_signed_pending(s, &mr);
        if (mrc == TSYNC_EIO || mrc == TSYNC_ENOMEM || mrc == TSYNC_EBUSY) {
            tsync_migrate_report_clear(&mr);
            return mrc;
        }
        if (report && mrc)
            report_add(report, "signed migrations cannot run here: %s",
                       tsync_error_last()->code ? tsync_error_last()->message : "?");
        for (size_t i = 0; report && i < mr.napplied; i++)
            report_add(report, "applied signed migration %s", mr.applied[i].name);
        tsync_migrate_report_clear(&mr);
    }
    if (!b->schema) return 0;
    const uint8_t *pk = NULL;
    for (uint32_t i = 0; i < b->nsites; i++)
        if (!memcmp(b->sites[i].site, b->schema_site, TSYNC__SITE_BYTES)) pk = b->sites[i].pk;
    int changed = 0;
    int rc = tsync__schema_record(s, b->schema_site, pk, b->schema, b->schema_len, &changed);
    if (rc == 0 && changed && report)
        rc = tsync__schema_mismatches(s, b->schema_site, report_mismatch, report);
    return rc;
}

/* ---------------------------------------------------------------- public: this till */

int tsync_store_schema_json(char **out, tsync_store *s, uint8_t digest[TSYNC_HASH_BYTES])
{
    *out = NULL;
    uint8_t *d = NULL;
    size_t n = 0;
    int rc = tsync__schema_encode(s, &d, &n);
    if (rc) return rc;
    uint8_t dg[TSYNC__HASH_BYTES];
    tsync__schema_digest(d, n, dg);
    if (digest) memcpy(digest, dg, sizeof dg);
    tsync__arena a = {0};
    tsync__schema sc;
    char err[TSYNC__ERRLEN], hex[2 * TSYNC__HASH_BYTES + 1];
    if ((rc = tsync__schema_decode(d, n, &sc, &a, err))) {
        free(d);
        tsync__arena_free(&a);
        return tsync__err(rc, "%s", err);
    }
    json_t *o = json_object(), *tables = json_array();
    tsync__hex(dg, sizeof dg, hex);
    json_object_set_new(o, "digest", json_string(hex));
    for (uint32_t i = 0; i < sc.ntables; i++) {
        const tsync__stable *t = &sc.tables[i];
        json_t *jt = json_object(), *cols = json_array();
        json_object_set_new(jt, "name", json_stringn(t->name, t->name_len));
        for (uint32_t c = 0; c < t->ncols; c++) {
            const tsync__scol *col = &t->cols[c];
            json_t *jc = json_object();
            json_object_set_new(jc, "name", json_stringn(col->name, col->name_len));
            json_object_set_new(jc, "type", json_stringn(col->type, col->type_len));
            json_object_set_new(jc, "key", json_integer(col->key));
            json_object_set_new(jc, "counter", json_boolean(col->counter));
            if (col->policy)
                json_object_set_new(jc, "policy", json_string(tsync__policy_name(col->policy)));
            json_array_append_new(cols, jc);
        }
        json_object_set_new(jt, "columns", cols);
        json_array_append_new(tables, jt);
    }
    json_object_set_new(o, "tables", tables);
    *out = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    free(d);
    tsync__arena_free(&a);
    return *out ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

/* ---------------------------------------------------------------- public: parked changes */

int tsync_store_parked_foreach(tsync_store *s, size_t limit, size_t *total, tsync_parked_fn fn,
                               void *ctx)
{
    sqlite3_stmt *st;
    if (total) {
        if (sqlite3_prepare_v2(s->db, "SELECT count(*) FROM tsync_parked", -1, &st, NULL) !=
            SQLITE_OK)
            return tsync__err_sqlite(s->db, SQLITE_ERROR, "read parked changes");
        *total = sqlite3_step(st) == SQLITE_ROW ? (size_t)sqlite3_column_int64(st, 0) : 0;
        sqlite3_finalize(st);
    }
    if (sqlite3_prepare_v2(s->db,
                           "SELECT p.id, s.site, s.pk, p.seq, p.row, p.tbl, p.col, p.reason FROM "
                           "tsync_parked p LEFT JOIN tsync_sites s ON s.idx = p.site AND p.seq > 0 "
                           "ORDER BY p.id LIMIT ?1",
                           -1, &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "read parked changes");
    sqlite3_bind_int64(st, 1, limit ? (int64_t)(limit > INT64_MAX ? INT64_MAX : limit) : -1);
    int rc = 0, x;
    while ((x = sqlite3_step(st)) == SQLITE_ROW) {
        char hex[2 * TSYNC__SITE_BYTES + 1] = "", name[256];
        if (sqlite3_column_bytes(st, 1) == TSYNC__SITE_BYTES)
            tsync__hex(sqlite3_column_blob(st, 1), TSYNC__SITE_BYTES, hex);
        till_name(s, sqlite3_column_blob(st, 2), sqlite3_column_bytes(st, 2), name, sizeof name);
        tsync_parked_change c = {
            .version = TSYNC_PARKED_CHANGE_VERSION,
            .id = sqlite3_column_int64(st, 0),
            .origin_hex = hex,
            .seq = (uint64_t)sqlite3_column_int64(st, 3),
            .row = (uint32_t)sqlite3_column_int64(st, 4),
            .table = (const char *)sqlite3_column_text(st, 5),
            .column = (const char *)sqlite3_column_text(st, 6),
            .reason = (const char *)sqlite3_column_text(st, 7),
            .till = name,
        };
        if (!c.table) c.table = "";
        if (!c.reason) c.reason = "";
        if ((rc = fn(ctx, &c))) break;
    }
    if (rc == 0 && x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "read parked changes");
    sqlite3_finalize(st);
    return rc;
}
