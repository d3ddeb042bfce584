/*
 * store/merge.c — verifying and merging batches from other sites.
 *
 * Design notes
 * - Two phases. First every run of the bundle is decoded and its hash chain and last signature
 *   verified, without touching the database: a bundle with a flipped byte, a bad signature or a
 *   broken chain is refused whole and changes nothing. Then, in one BEGIN IMMEDIATE transaction,
 *   local changes are sealed, and the batches are applied in causal order.
 * - A batch applies when it is the next of its origin, its prev hash matches our head, its
 *   dependencies (the author's vector delta) are met and its clock is not too far ahead. Otherwise
 *   it is held in tsync_held (verified already) and retried at every merge.
 * - Row changes are folded in memory per row (clocks and winning values), and written to SQLite
 *   once per row at the end: 100k updates of 10k products touch 10k rows.
 * - Capture triggers are switched off for this connection only (SQLITE_DBCONFIG_ENABLE_TRIGGER)
 *   while merging; every other connection keeps capturing.
 * - What this database cannot apply (a table or column it lacks) is parked, never dropped: the
 *   batch stays in the log and tsync_parked points at the row, to be applied after the schema
 *   catches up. Clocks make late application give the same result.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store/schema.h"
#include "store/sync.h"
#include "store/trust.h"

#define MAX_MESSAGES 64

/* One batch on its way in. */
typedef struct {
    uint32_t site; /* local index of the origin */
    uint64_t seq;
    uint8_t prev[TSYNC__HASH_BYTES];
    uint8_t hash[TSYNC__HASH_BYTES];
    const uint8_t *body;
    size_t body_len;
    const uint8_t *sig; /* NULL unless the batch ended a signed run */
    tsync__batch b;
    int from_held;
    int done;         /* applied, duplicate, refused */
    char reason[256]; /* why it waits: site ids and numbers (one per batch: kept small) */
    /* Kept batches of a revoked device (store/kept.c): */
    int applied;    /* in our log now (applied or a duplicate) */
    int honest;     /* 0 not known yet, 1 by a key with a certificate and not revoked, -1 not */
    uint64_t kept;  /* beyond its site's cutoff, kept: the seq an honest batch depends on */
    size_t kept_by; /* that honest batch (index in the list) */
} inbatch;

/* A site known to this merge. */
typedef struct {
    uint8_t id[TSYNC__SITE_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    int has_pk;
    uint64_t seq;
    uint8_t hash[TSYNC__HASH_BYTES];
    int64_t frozen; /* -1: not frozen */
    int dirty;
    int known;       /* loaded from or added to tsync_sites */
    int revoked;     /* 0 not looked up yet, 1 its key is not revoked, 2 revoked */
    uint64_t cutoff; /* revoked: the cutoff its revocation names for this site */
} msite;

/* The folded state of one row. */
typedef struct {
    tsync__table *t;
    const uint8_t *key;
    uint32_t klen;
    tsync__rowmeta meta;
    int had_meta, existed;
    uint64_t mask;    /* columns whose value changed */
    tsync__val *vals; /* t->ncols entries, in the arena */
} mrow;

typedef struct {
    int tbl, kind;
    uint64_t mask, mask2;
    sqlite3_stmt *st;
} cstmt;

enum { K_UPD_ROW, K_INS_ROW, K_UPD_TOMB, K_INS_TOMB, K_RES_ROW };

typedef struct {
    tsync_store *s;
    tsync_merge_report *rep;
    tsync__arena a;
    msite *sites; /* by local index (sparse: idx up to nsites) */
    uint32_t nsites;
    tsync__rmap rows;
    mrow **rowlist;
    size_t nrowlist, rowcap;
    cstmt *stmts;
    size_t nstmts;
    tsync__hlc max_hlc;
    uint64_t now_ms;
    uint8_t *mbuf;
    size_t mcap;
    int refuse_code;
    char refuse_msg[TSYNC__ERRLEN + 64]; /* the first refusal, for tsync_error_last() */
    int unpark_blocked;                  /* unparking: the table still cannot take the rows */
    /* Applying a forked branch's rows: its counters count under a site derived from the branch
     * (minus what the common prefix already counted), so both branches' sales add up. */
    uint32_t fork_origin, fork_site;
    uint64_t fork_frozen;
    int keep_publish; /* kept a revoked device's batch on the word of a batch that did not apply */
} mctx;

static void report_msg(mctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void report_msg(mctx *c, const char *fmt, ...)
{
    tsync_merge_report *r = c->rep;
    char buf[TSYNC__ERRLEN + 64]; /* a prefix and a refusal of TSYNC__ERRLEN */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(buf);
    if (strncmp(buf, "refused", 7) == 0 && !c->refuse_msg[0])
        snprintf(c->refuse_msg, sizeof c->refuse_msg, "%s", buf);
    if (!r || r->nmessages >= MAX_MESSAGES) return;
    char **nm = realloc(r->messages, (r->nmessages + 1) * sizeof *nm);
    if (!nm) return;
    r->messages = nm;
    if (r->nmessages == MAX_MESSAGES - 1) snprintf(buf, sizeof buf, "(further messages omitted)");
    r->messages[r->nmessages] = strdup(buf);
    if (r->messages[r->nmessages]) r->nmessages++;
}

void tsync_merge_report_clear(tsync_merge_report *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->nmessages; i++) free(r->messages[i]);
    free(r->messages);
    unsigned int v = r->version;
    memset(r, 0, sizeof *r);
    r->version = v;
}

static const char *short_site(const uint8_t *id, char out[13])
{
    tsync__hex(id, 6, out);
    return out;
}

/* Capture off (1) or on (0) for this connection only: merged rows must not be captured as
 * local writes, while every other connection keeps capturing. Switching expires prepared
 * statements, which re-prepare on their next use. */
/* ---------------------------------------------------------------- sites */

static int load_sites(mctx *c)
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "SELECT idx, site, pk, seq, hash, frozen_seq FROM "
                                      "tsync_sites ORDER BY idx"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "read sites");
    while (sqlite3_step(st) == SQLITE_ROW) {
        uint32_t idx = (uint32_t)sqlite3_column_int64(st, 0);
        if (idx >= c->nsites) {
            uint32_t n = idx + 16;
            msite *ns = realloc(c->sites, n * sizeof *ns);
            if (!ns) {
                sqlite3_reset(st);
                return tsync__err(TSYNC_ENOMEM, "out of memory");
            }
            memset(ns + c->nsites, 0, (n - c->nsites) * sizeof *ns);
            c->sites = ns;
            c->nsites = n;
        }
        msite *m = &c->sites[idx];
        if (sqlite3_column_bytes(st, 1) == TSYNC__SITE_BYTES)
            memcpy(m->id, sqlite3_column_blob(st, 1), TSYNC__SITE_BYTES);
        m->has_pk = sqlite3_column_bytes(st, 2) == TSYNC__PK_BYTES;
        if (m->has_pk) memcpy(m->pk, sqlite3_column_blob(st, 2), TSYNC__PK_BYTES);
        m->seq = (uint64_t)sqlite3_column_int64(st, 3);
        if (sqlite3_column_bytes(st, 4) == TSYNC__HASH_BYTES)
            memcpy(m->hash, sqlite3_column_blob(st, 4), TSYNC__HASH_BYTES);
        m->frozen = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
        m->known = 1;
    }
    sqlite3_reset(st);
    return 0;
}

/* Local index of a site id, registering it in tsync_sites when new. */
static int site_local(mctx *c, const uint8_t id[TSYNC__SITE_BYTES], const uint8_t *pk,
                      const uint8_t *inc, uint32_t *out)
{
    for (uint32_t i = 1; i < c->nsites; i++)
        if (c->sites[i].known && memcmp(c->sites[i].id, id, TSYNC__SITE_BYTES) == 0 &&
            (!pk || c->sites[i].has_pk)) {
            *out = i;
            return 0;
        }
    int rc = tsync__site_index(c->s, id, pk, inc, out);
    if (rc) return rc;
    if (*out >= c->nsites) {
        uint32_t n = *out + 16;
        msite *ns = realloc(c->sites, n * sizeof *ns);
        if (!ns) return tsync__err(TSYNC_ENOMEM, "out of memory");
        memset(ns + c->nsites, 0, (n - c->nsites) * sizeof *ns);
        c->sites = ns;
        c->nsites = n;
    }
    msite *m = &c->sites[*out];
    if (!m->known) {
        /* a site new to this database: nothing held, nothing frozen */
        memset(m, 0, sizeof *m);
        m->frozen = -1;
        m->known = 1;
    }
    memcpy(m->id, id, TSYNC__SITE_BYTES);
    if (pk) {
        memcpy(m->pk, pk, TSYNC__PK_BYTES);
        m->has_pk = 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- cached statements */

/* mask: the columns the statement writes; mask2 (K_RES_ROW only): those of them whose value is a
 * parameter rather than the tombstone's. */
static sqlite3_stmt *cached_stmt(mctx *c, tsync__table *t, int kind, uint64_t mask, uint64_t mask2)
{
    for (size_t i = 0; i < c->nstmts; i++)
        if (c->stmts[i].tbl == t->id && c->stmts[i].kind == kind && c->stmts[i].mask == mask &&
            c->stmts[i].mask2 == mask2)
            return c->stmts[i].st;
    size_t cap = 256 + (size_t)t->ncols * 64 + strlen(t->all_cols) * 3 + strlen(t->pk_where);
    char *sql = malloc(cap);
    if (!sql) return NULL;
    size_t o = 0;
    if (kind == K_INS_TOMB) {
        /* the key only: the rest comes from K_UPD_TOMB */
        o += (size_t)snprintf(sql + o, cap - o, "INSERT OR IGNORE INTO %s(", t->qtomb);
        for (int i = 0; i < t->npk; i++) {
            o += (size_t)snprintf(sql + o, cap - o, "%s\"", i ? "," : "");
            for (const char *p = t->cols[t->pk[i]]; *p; p++)
                o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
            o += (size_t)snprintf(sql + o, cap - o, "\"");
        }
        o += (size_t)snprintf(sql + o, cap - o, ") VALUES(");
        for (int i = 0; i < t->npk; i++)
            o += (size_t)snprintf(sql + o, cap - o, "%s?%d", i ? "," : "", i + 1);
        snprintf(sql + o, cap - o, ")");
    } else if (kind == K_RES_ROW) {
        /* Resurrection: the key and the columns ever written come from the tombstone; columns
         * never written take their DEFAULT, as in a fresh insert. */
        o += (size_t)snprintf(sql + o, cap - o, "INSERT INTO %s(", t->qname);
        int first = 1;
        for (int col = 0; col < t->ncols; col++)
            if (t->is_pk[col] || (mask & (1ULL << col))) {
                o += (size_t)snprintf(sql + o, cap - o, "%s\"", first ? "" : ",");
                for (const char *p = t->cols[col]; *p; p++)
                    o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
                o += (size_t)snprintf(sql + o, cap - o, "\"");
                first = 0;
            }
        o += (size_t)snprintf(sql + o, cap - o, ") SELECT ");
        first = 1;
        for (int col = 0; col < t->ncols; col++)
            if (t->is_pk[col] || (mask & (1ULL << col))) {
                if (mask2 & (1ULL << col)) {
                    o += (size_t)snprintf(sql + o, cap - o, "%s?%d", first ? "" : ",",
                                          col + 1 + TSYNC__MAX_PK_COLS);
                } else {
                    o += (size_t)snprintf(sql + o, cap - o, "%s\"", first ? "" : ",");
                    for (const char *p = t->cols[col]; *p; p++)
                        o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
                    o += (size_t)snprintf(sql + o, cap - o, "\"");
                }
                first = 0;
            }
        snprintf(sql + o, cap - o, " FROM %s WHERE %s", t->qtomb, t->pk_where);
    } else if (kind == K_INS_ROW) {
        o += (size_t)snprintf(sql + o, cap - o, "INSERT INTO %s(", t->qname);
        int first = 1;
        for (int col = 0; col < t->ncols; col++)
            if (t->is_pk[col] || (mask & (1ULL << col))) {
                o += (size_t)snprintf(sql + o, cap - o, "%s\"", first ? "" : ",");
                for (const char *p = t->cols[col]; *p; p++)
                    o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
                o += (size_t)snprintf(sql + o, cap - o, "\"");
                first = 0;
            }
        o += (size_t)snprintf(sql + o, cap - o, ") VALUES(");
        first = 1;
        for (int col = 0; col < t->ncols; col++)
            if (t->is_pk[col] || (mask & (1ULL << col))) {
                o += (size_t)snprintf(sql + o, cap - o, "%s?%d", first ? "" : ",", col + 1);
                first = 0;
            }
        snprintf(sql + o, cap - o, ")");
    } else {
        o += (size_t)snprintf(sql + o, cap - o, "UPDATE %s SET ",
                              kind == K_UPD_ROW ? t->qname : t->qtomb);
        int first = 1;
        for (int col = 0; col < t->ncols; col++)
            if (mask & (1ULL << col)) {
                o += (size_t)snprintf(sql + o, cap - o, "%s\"", first ? "" : ",");
                for (const char *p = t->cols[col]; *p; p++)
                    o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
                o += (size_t)snprintf(sql + o, cap - o, "\"=?%d", col + 1 + TSYNC__MAX_PK_COLS);
                first = 0;
            }
        snprintf(sql + o, cap - o, " WHERE %s", t->pk_where);
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(c->s->db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK) {
        tsync__err_sqlite(c->s->db, rc, "prepare merge statement");
        return NULL;
    }
    cstmt *ns = realloc(c->stmts, (c->nstmts + 1) * sizeof *ns);
    if (!ns) {
        sqlite3_finalize(st);
        return NULL;
    }
    c->stmts = ns;
    c->stmts[c->nstmts++] = (cstmt){t->id, kind, mask, mask2, st};
    return st;
}

/* ---------------------------------------------------------------- applying rows */

static int step_done(tsync_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, rc, what);
}

static int bind_keyvals(sqlite3_stmt *st, const tsync__table *t, const mrow *r, int base_pk)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(r->key, r->klen, kv, t->npk) != 0)
        return tsync__err(TSYNC_ECORRUPT, "bad row key in %s", t->name);
    for (int i = 0; i < t->npk; i++) tsync__bind_val(st, base_pk ? t->pk[i] + 1 : i + 1, &kv[i]);
    return 0;
}

static int row_exists_in(tsync_store *s, sqlite3_stmt *st, const tsync__table *t, const mrow *r,
                         int *out)
{
    sqlite3_reset(st);
    int rc = bind_keyvals(st, t, r, 0);
    if (rc) return rc;
    int x = sqlite3_step(st);
    *out = x == SQLITE_ROW;
    sqlite3_reset(st);
    return x == SQLITE_ROW || x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "read row");
}

static mrow *get_row(mctx *c, tsync__table *t, const tsync__val *pk, int *rc)
{
    size_t klen = tsync__key_size(pk, t->npk);
    uint8_t kb[512], *k = klen <= sizeof kb ? kb : malloc(klen);
    if (!k) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    tsync__key_encode(pk, t->npk, k);
    tsync__rmap_ent *e = tsync__rmap_get(&c->rows, &c->a, t->id, k, klen, 1);
    if (k != kb) free(k);
    if (!e) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    if (e->val) return e->val;
    mrow *r = tsync__arena_alloc(&c->a, sizeof *r);
    if (!r) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    r->t = t;
    r->vals = tsync__arena_alloc(&c->a, (size_t)t->ncols * sizeof *r->vals);
    if (!r->vals) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    r->key = e->key;
    r->klen = e->klen;
    /* Every row in the table or its tombstones has clocks (sealing comes first), so a row
     * without clocks is new here and needs no further look-up. */
    if ((*rc = tsync__load_meta(c->s, t, r->key, r->klen, &r->meta, &r->had_meta))) return NULL;
    if (r->had_meta && (*rc = row_exists_in(c->s, t->exists_row, t, r, &r->existed))) return NULL;
    if (c->nrowlist == c->rowcap) {
        c->rowcap = c->rowcap ? c->rowcap * 2 : 1024;
        mrow **nl = realloc(c->rowlist, c->rowcap * sizeof *nl);
        if (!nl) {
            *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            return NULL;
        }
        c->rowlist = nl;
    }
    c->rowlist[c->nrowlist++] = r;
    e->val = r;
    return r;
}

/* The value this replica currently shows for a column (for conflict records). */
static int current_value(mctx *c, mrow *r, int col, tsync__val *out, sqlite3_stmt **owner)
{
    *owner = NULL;
    memset(out, 0, sizeof *out);
    if (r->mask & (1ULL << col)) {
        *out = r->vals[col];
        return 0;
    }
    tsync__table *t = r->t;
    sqlite3_stmt *st = r->existed ? t->get_row : t->get_tomb;
    sqlite3_reset(st);
    int rc = bind_keyvals(st, t, r, 0);
    if (rc) return rc;
    if (sqlite3_step(st) == SQLITE_ROW) {
        tsync__col_val(st, col, out);
        *owner = st;
    } else {
        sqlite3_reset(st);
    }
    return 0;
}

static json_t *val_json(const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_INT:
        return json_integer(v->i);
    case TSYNC__V_REAL:
        return json_real(v->r);
    case TSYNC__V_TEXT:
        return json_stringn_nocheck(v->p ? v->p : "", v->n);
    case TSYNC__V_BLOB: {
        char *h = malloc((size_t)v->n * 2 + 1);
        if (!h) return json_null();
        tsync__hex(v->p, v->n, h);
        json_t *j = json_string(h);
        free(h);
        return j;
    }
    default:
        return json_null();
    }
}

char *tsync__key_json(const uint8_t *key, uint32_t klen, int npk)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(key, klen, kv, npk) != 0) return strdup("[]");
    json_t *a = json_array();
    for (int i = 0; i < npk; i++) json_array_append_new(a, val_json(&kv[i]));
    char *s = json_dumps(a, JSON_COMPACT | JSON_ENCODE_ANY);
    json_decref(a);
    return s;
}

static int record_conflict(mctx *c, mrow *r, int col, const tsync__val *remote, tsync__hlc rhlc,
                           uint32_t rsite, int remote_wins)
{
    tsync_store *s = c->s;
    tsync__val cur;
    sqlite3_stmt *owner;
    int rc = current_value(c, r, col, &cur, &owner);
    if (rc) return rc;
    sqlite3_stmt *st;
    rc = ((st = tsync__prep(s, "INSERT INTO tsync_conflicts(at_ms, tbl, pk, col, win_val, "
                               "win_hlc, win_site, lose_val, lose_hlc, lose_site) "
                               "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)"))
              ? SQLITE_OK
              : SQLITE_ERROR);
    if (rc != SQLITE_OK) {
        if (owner) sqlite3_reset(owner);
        return tsync__err_sqlite(s->db, rc, "record conflict");
    }
    char *pk = tsync__key_json(r->key, r->klen, r->t->npk);
    const tsync__val *wv = remote_wins ? remote : &cur, *lv = remote_wins ? &cur : remote;
    tsync__hlc wh = remote_wins ? rhlc : r->meta.col[col].hlc;
    tsync__hlc lh = remote_wins ? r->meta.col[col].hlc : rhlc;
    uint32_t ws = remote_wins ? rsite : r->meta.col[col].site;
    uint32_t ls = remote_wins ? r->meta.col[col].site : rsite;
    sqlite3_bind_int64(st, 1, (int64_t)c->now_ms);
    sqlite3_bind_text(st, 2, r->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pk ? pk : "[]", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, r->t->cols[col], -1, SQLITE_STATIC);
    tsync__bind_val(st, 5, wv);
    sqlite3_bind_int64(st, 6, (int64_t)wh);
    if (ws < c->nsites) sqlite3_bind_blob(st, 7, c->sites[ws].id, TSYNC__SITE_BYTES, SQLITE_STATIC);
    tsync__bind_val(st, 8, lv);
    sqlite3_bind_int64(st, 9, (int64_t)lh);
    if (ls < c->nsites)
        sqlite3_bind_blob(st, 10, c->sites[ls].id, TSYNC__SITE_BYTES, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (owner) sqlite3_reset(owner);
    free(pk);
    if (c->rep) c->rep->conflicts++;
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "record conflict");
}

static int park(mctx *c, uint32_t site, uint64_t seq, uint32_t row, const char *tbl, size_t tlen,
                const char *col, size_t clen, const char *reason)
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "INSERT INTO tsync_parked(site, seq, row, tbl, col, "
                                      "reason) VALUES(?1,?2,?3,?4,?5,?6)"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "park change");
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    sqlite3_bind_int64(st, 3, row);
    sqlite3_bind_text(st, 4, tbl, (int)tlen, SQLITE_STATIC);
    if (col) sqlite3_bind_text(st, 5, col, (int)clen, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(c->s->db, rc, "park change");
    if (c->rep) c->rep->parked++;
    if (seq == 0) {
        /* a row this database could not write (a local constraint); its clocks are kept */
        report_msg(c, "parked: a row of %.*s could not be written here: %s", (int)tlen, tbl,
                   reason);
        return 0;
    }
    report_msg(c, "parked: %s %.*s%s%.*s from batch %llu: %s", col ? "column" : "table", (int)tlen,
               tbl, col ? "." : "", (int)(col ? clen : 0), col ? col : "", (unsigned long long)seq,
               reason);
    return 0;
}

/* The origin's own P and N for a counter as of the last batch both fork branches share: the
 * latest value in its logged batches up to the frozen seq. Forks are rare; a scan is fine. */
static int prefix_counter(mctx *c, tsync__table *t, const tsync__val *pk, const char *colname,
                          uint64_t *p, uint64_t *n)
{
    *p = *n = 0;
    size_t klen = tsync__key_size(pk, t->npk);
    uint8_t *want = malloc(klen + 1), *got = malloc(klen + 1);
    sqlite3_stmt *st;
    int rc = 0;
    if (!want || !got) {
        free(want), free(got);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    tsync__key_encode(pk, t->npk, want);
    if (sqlite3_prepare_v2(c->s->db,
                           "SELECT body FROM tsync_log WHERE site=?1 AND seq<=?2 ORDER "
                           "BY seq",
                           -1, &st, NULL) != SQLITE_OK) {
        free(want), free(got);
        return tsync__err_sqlite(c->s->db, SQLITE_ERROR, "read log");
    }
    sqlite3_bind_int64(st, 1, c->fork_origin);
    sqlite3_bind_int64(st, 2, (int64_t)c->fork_frozen);
    while (sqlite3_step(st) == SQLITE_ROW) {
        tsync__arena a = {0};
        tsync__batch b;
        char err[TSYNC__ERRLEN];
        if (tsync__batch_decode(sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0), &b,
                                &a, err) == 0) {
            for (uint32_t i = 0; i < b.nrows; i++) {
                tsync__btable *bt = &b.tables[b.rows[i].table];
                if (!tsync__name_eq(bt->name, bt->name_len, t->name, strlen(t->name)) ||
                    (int)bt->npk != t->npk || tsync__key_size(b.rows[i].pk, t->npk) != klen)
                    continue;
                tsync__key_encode(b.rows[i].pk, t->npk, got);
                if (memcmp(got, want, klen)) continue;
                for (uint32_t k = 0; k < b.rows[i].nctrs; k++) {
                    uint32_t bc = b.rows[i].ctrs[k].col;
                    if (tsync__name_eq(bt->cols[bc], bt->col_len[bc], colname, strlen(colname))) {
                        *p = b.rows[i].ctrs[k].p;
                        *n = b.rows[i].ctrs[k].n;
                    }
                }
            }
        }
        tsync__arena_free(&a);
    }
    sqlite3_finalize(st);
    free(want), free(got);
    return rc;
}

/* Applies batch rows to the folded row state. only_table: when not NULL, apply only rows of that
 * table and only the row indexes listed (unparking); parking is then not recorded again. */
static int apply_batch(mctx *c, inbatch *ib, const char *only_table, const int64_t *only_rows,
                       size_t nonly)
{
    tsync__batch *b = &ib->b;
    tsync_store *s = c->s;
    int rc = 0;
    uint32_t *bsite = tsync__arena_alloc(&c->a, (b->nsites ? b->nsites : 1) * sizeof *bsite);
    if (!bsite) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < b->nsites; i++)
        if ((rc = site_local(c, b->sites[i], NULL, NULL, &bsite[i]))) return rc;
    bsite[0] = ib->site;

    /* Per batch table: local table and column mapping (-1: missing here). */
    for (uint32_t ti = 0; ti < b->ntables; ti++) {
        tsync__btable *bt = &b->tables[ti];
        if (only_table && !tsync__name_eq(only_table, strlen(only_table), bt->name, bt->name_len))
            continue;
        tsync__table *t = tsync__table_by_name(s, bt->name, bt->name_len);
        int map[TSYNC__MAX_COLS];
        const char *why = NULL;
        if (t) {
            for (uint32_t k = 0; k < bt->ncols; k++)
                map[k] = tsync__col_by_name(t, bt->cols[k], bt->col_len[k]);
            if ((int)bt->npk != t->npk) why = "the key columns differ here";
            for (uint32_t k = 0; !why && k < bt->npk; k++)
                if (map[k] != t->pk[k]) why = "the key columns differ here";
            for (uint32_t k = 0; !why && k < bt->ncounters; k++) {
                int m = map[bt->counters[k]];
                if (m >= 0 && !t->is_counter[m]) why = "a counter column there is not one here";
            }
        }
        for (uint32_t ri = 0; ri < b->nrows; ri++) {
            tsync__brow *br = &b->rows[ri];
            if (br->table != ti) continue;
            if (only_rows) {
                size_t k = 0;
                while (k < nonly && only_rows[k] != (int64_t)ri) k++;
                if (k == nonly) continue;
            }
            if (!t || why) {
                if (only_table) c->unpark_blocked = 1;
                if (!only_table && (rc = park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                              NULL, 0, t ? why : "no such replicated table here")))
                    return rc;
                continue;
            }
            mrow *r = get_row(c, t, br->pk, &rc);
            if (!r) return rc;
            if (br->flags & TSYNC__ROW_ADD)
                if ((rc = tsync__rowmeta_exist_merge(&r->meta, ib->site, br->hlc, 0))) return rc;
            for (uint32_t k = 0; k < br->nrmv; k++)
                if ((rc = tsync__rowmeta_exist_merge(&r->meta, bsite[br->rmv[k].site], 0,
                                                     br->rmv[k].hlc)))
                    return rc;
            for (uint32_t k = 0; k < br->ncols; k++) {
                tsync__bcol *bc = &br->cols[k];
                int col = map[bc->col];
                if (col < 0) {
                    if (!only_table &&
                        (rc = park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                   bt->cols[bc->col], bt->col_len[bc->col], "no such column here")))
                        return rc;
                    continue;
                }
                if (t->is_counter[col]) {
                    /* A plain value there for what is a counter here cannot be counted: it is
                     * parked (and shown) until the definitions agree, not dropped unseen. */
                    if (!only_table && (rc = park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                                  bt->cols[bc->col], bt->col_len[bc->col],
                                                  "a plain column there is a counter here")))
                        return rc;
                    continue;
                }
                tsync__colclk cur = r->meta.col[col];
                int cmp = cur.hlc == 0 ? 1
                                       : tsync__lww_cmp(br->hlc, c->sites[ib->site].id, cur.hlc,
                                                        c->sites[cur.site].id);
                if (cmp == 0) {
                    /* Same clock and site: only two branches of a fork do that. Order by value
                     * so that every replica picks the same one. */
                    tsync__val cv;
                    sqlite3_stmt *owner;
                    if ((rc = current_value(c, r, col, &cv, &owner))) return rc;
                    cmp = tsync__val_cmp(&bc->val, &cv);
                    if (owner) sqlite3_reset(owner);
                }
                int wins = cmp > 0;
                /* Concurrent: the writer overwrote something older than what we show. */
                if (cur.hlc && (cur.hlc != br->hlc || cur.site != ib->site)) {
                    uint32_t os = bc->old_hlc ? bsite[bc->old_site] : 0;
                    int concurrent =
                        bc->old_hlc == 0 || tsync__lww_cmp(bc->old_hlc, c->sites[os].id, cur.hlc,
                                                           c->sites[cur.site].id) < 0;
                    if (concurrent &&
                        (rc = record_conflict(c, r, col, &bc->val, br->hlc, ib->site, wins)))
                        return rc;
                }
                if (wins) {
                    r->meta.col[col] = (tsync__colclk){br->hlc, ib->site};
                    r->vals[col] = bc->val;
                    r->mask |= 1ULL << col;
                }
            }
            for (uint32_t k = 0; k < br->nctrs; k++) {
                int col = map[br->ctrs[k].col];
                if (col < 0) {
                    if (!only_table &&
                        (rc = park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                   bt->cols[br->ctrs[k].col], bt->col_len[br->ctrs[k].col],
                                   "no such counter column here")))
                        return rc;
                    continue;
                }
                uint64_t cp = br->ctrs[k].p, cn = br->ctrs[k].n;
                uint32_t csite = ib->site;
                if (c->fork_site && ib->site == c->fork_origin) {
                    uint64_t p0 = 0, n0 = 0;
                    if ((rc = prefix_counter(c, t, br->pk, t->cols[col], &p0, &n0))) return rc;
                    cp = cp > p0 ? cp - p0 : 0;
                    cn = cn > n0 ? cn - n0 : 0;
                    csite = c->fork_site;
                }
                if ((rc = tsync__rowmeta_ctr_merge(&r->meta, col, csite, cp, cn))) return rc;
                r->vals[col] = (tsync__val){.type = TSYNC__V_INT,
                                            .i = tsync__rowmeta_ctr_value(&r->meta, col)};
                r->mask |= 1ULL << col;
            }
        }
    }
    if (b->hlc_hi > c->max_hlc) c->max_hlc = b->hlc_hi;
    return 0;
}

/* Runs a statement that writes a row of the app's table. A local constraint (a unique index
 * added after replicate, a STRICT type) must not make the whole merge fail: the row is parked
 * with the reason, its clocks are still kept, and the merge goes on. Returns 1 when parked. */
static int step_row(mctx *c, mrow *r, sqlite3_stmt *st, const char *what, int *rc)
{
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    if (x == SQLITE_DONE || x == SQLITE_ROW) return 0;
    if ((x & 0xff) != SQLITE_CONSTRAINT && (x & 0xff) != SQLITE_MISMATCH) {
        *rc = tsync__err_sqlite(c->s->db, x, what);
        return -1;
    }
    char *key = tsync__key_json(r->key, r->klen, r->t->npk);
    char reason[300];
    snprintf(reason, sizeof reason, "%s %s: %s", what, key ? key : "?", sqlite3_errmsg(c->s->db));
    free(key);
    *rc = park(c, 0, 0, UINT32_MAX, r->t->name, strlen(r->t->name), NULL, 0, reason);
    return *rc ? -1 : 1;
}

/* Writes one folded row to the table or its tombstone, and its clocks. */
static int flush_row(mctx *c, mrow *r)
{
    tsync_store *s = c->s;
    tsync__table *t = r->t;
    int rc = 0;
    int exists = tsync__orset_exists(r->meta.exist, r->meta.nexist);
    uint64_t mask = r->mask;
    sqlite3_stmt *st;
    if (exists && r->existed) {
        if (mask) {
            if (!(st = cached_stmt(c, t, K_UPD_ROW, mask, 0)))
                return tsync__err(TSYNC_EIO, "prepare");
            if ((rc = bind_keyvals(st, t, r, 0))) return rc;
            for (int col = 0; col < t->ncols; col++)
                if (mask & (1ULL << col))
                    tsync__bind_val(st, col + 1 + TSYNC__MAX_PK_COLS, &r->vals[col]);
            if (step_row(c, r, st, "update row", &rc)) goto meta;
        }
    } else if (exists) {
        /* New here, or resurrected: start from the tombstone's values if there are any. */
        int tomb = 0;
        if (r->had_meta && (rc = row_exists_in(s, t->get_tomb, t, r, &tomb))) return rc;
        if (tomb) {
            /* The tombstone has a value for every column written before; this merge's values
             * and every counter's current total come as parameters (a counter column of a
             * tombstone made from a partial change can be NULL). */
            uint64_t known = 0, params = mask;
            for (int col = 0; col < t->ncols; col++) {
                if (t->is_pk[col]) continue;
                if (t->is_counter[col] && tsync__rowmeta_ctr(&r->meta, col)) {
                    r->vals[col] = (tsync__val){.type = TSYNC__V_INT,
                                                .i = tsync__rowmeta_ctr_value(&r->meta, col)};
                    params |= 1ULL << col;
                }
                if (r->meta.col[col].hlc || tsync__rowmeta_ctr(&r->meta, col)) known |= 1ULL << col;
            }
            known |= params;
            if (!(st = cached_stmt(c, t, K_RES_ROW, known, params)))
                return tsync__err(TSYNC_EIO, "prepare");
            if ((rc = bind_keyvals(st, t, r, 0))) return rc;
            for (int col = 0; col < t->ncols; col++)
                if (params & (1ULL << col))
                    tsync__bind_val(st, col + 1 + TSYNC__MAX_PK_COLS, &r->vals[col]);
            if (step_row(c, r, st, "resurrect row", &rc)) goto meta;
            sqlite3_reset(t->del_tomb);
            if ((rc = bind_keyvals(t->del_tomb, t, r, 0))) return rc;
            if ((rc = step_done(s, t->del_tomb, "clear tombstone"))) return rc;
        } else {
            if (!(st = cached_stmt(c, t, K_INS_ROW, mask, 0)))
                return tsync__err(TSYNC_EIO, "prepare");
            if ((rc = bind_keyvals(st, t, r, 1))) return rc;
            for (int col = 0; col < t->ncols; col++)
                if (!t->is_pk[col] && (mask & (1ULL << col)))
                    tsync__bind_val(st, col + 1, &r->vals[col]);
            if (step_row(c, r, st, "insert row", &rc)) goto meta;
        }
    } else {
        if (r->existed) {
            /* Keep the values so a later resurrection shows the latest of each field. */
            size_t n = strlen(t->qname) + strlen(t->qtomb) + 2 * strlen(t->all_cols) +
                       2 * strlen(t->pk_where) + 96;
            char *q = malloc(n);
            if (!q) return tsync__err(TSYNC_ENOMEM, "out of memory");
            sqlite3_stmt *cp;
            snprintf(q, n, "INSERT OR REPLACE INTO %s(%s) SELECT %s FROM %s WHERE %s", t->qtomb,
                     t->all_cols, t->all_cols, t->qname, t->pk_where);
            rc = sqlite3_prepare_v2(s->db, q, -1, &cp, NULL);
            if (rc == SQLITE_OK) {
                if ((rc = bind_keyvals(cp, t, r, 0)) == 0) rc = step_done(s, cp, "keep tombstone");
                sqlite3_finalize(cp);
            } else {
                rc = tsync__err_sqlite(s->db, rc, "keep tombstone");
            }
            if (rc == 0) {
                snprintf(q, n, "DELETE FROM %s WHERE %s", t->qname, t->pk_where);
                rc = sqlite3_prepare_v2(s->db, q, -1, &cp, NULL);
                if (rc == SQLITE_OK) {
                    if ((rc = bind_keyvals(cp, t, r, 0)) == 0) rc = step_done(s, cp, "delete row");
                    sqlite3_finalize(cp);
                } else {
                    rc = tsync__err_sqlite(s->db, rc, "delete row");
                }
            }
            free(q);
            if (rc) return rc;
        } else if (mask) {
            if (!(st = cached_stmt(c, t, K_INS_TOMB, 0, 0)))
                return tsync__err(TSYNC_EIO, "prepare");
            if ((rc = bind_keyvals(st, t, r, 0))) return rc;
            if ((rc = step_done(s, st, "keep tombstone"))) return rc;
        }
        if (mask) {
            if (!(st = cached_stmt(c, t, K_UPD_TOMB, mask, 0)))
                return tsync__err(TSYNC_EIO, "prepare");
            if ((rc = bind_keyvals(st, t, r, 0))) return rc;
            for (int col = 0; col < t->ncols; col++)
                if (mask & (1ULL << col))
                    tsync__bind_val(st, col + 1 + TSYNC__MAX_PK_COLS, &r->vals[col]);
            if ((rc = step_done(s, st, "update tombstone"))) return rc;
        }
    }
meta:
    if (rc) return rc;
    return tsync__put_meta(s, t, r->key, r->klen, &r->meta, &c->mbuf, &c->mcap, r->had_meta);
}

static int row_cmp(const void *pa, const void *pb)
{
    const mrow *a = *(const mrow *const *)pa, *b = *(const mrow *const *)pb;
    if (a->t != b->t) return a->t->id < b->t->id ? -1 : 1;
    return tsync__key_cmp(a->key, a->klen, b->key, b->klen, a->t->npk);
}

static int flush_rows(mctx *c)
{
    int rc = 0;
    /* Writing rows in key order turns random b-tree inserts into near-appends: the same pages
     * stay hot and splits are cheap. The order of rows does not change the result. */
    if (c->nrowlist > 1) qsort(c->rowlist, c->nrowlist, sizeof *c->rowlist, row_cmp);
    for (size_t i = 0; rc == 0 && i < c->nrowlist; i++) rc = flush_row(c, c->rowlist[i]);
    for (size_t i = 0; i < c->nrowlist; i++) tsync__rowmeta_clear(&c->rowlist[i]->meta);
    c->nrowlist = 0;
    tsync__rmap_free(&c->rows);
    return rc;
}

static void ctx_free(mctx *c)
{
    for (size_t i = 0; i < c->nrowlist; i++) tsync__rowmeta_clear(&c->rowlist[i]->meta);
    free(c->rowlist);
    tsync__rmap_free(&c->rows);
    for (size_t i = 0; i < c->nstmts; i++) sqlite3_finalize(c->stmts[i].st);
    free(c->stmts);
    free(c->sites);
    free(c->mbuf);
    tsync__arena_free(&c->a);
}

/* ---------------------------------------------------------------- log, held, forks */

static int log_append(mctx *c, inbatch *ib)
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "INSERT INTO tsync_log(site, seq, hash, body, sig) "
                                      "VALUES(?1,?2,?3,?4,?5)"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "append to log");
    sqlite3_bind_int64(st, 1, ib->site);
    sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
    sqlite3_bind_blob(st, 3, ib->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, ib->body, (int)ib->body_len, SQLITE_STATIC);
    if (ib->sig) sqlite3_bind_blob(st, 5, ib->sig, TSYNC__SIG_BYTES, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(c->s->db, rc, "append to log");
    if (ib->from_held) {
        if (!(st = tsync__prep(c->s, "DELETE FROM tsync_held WHERE site=?1 AND seq=?2")))
            return TSYNC_EIO;
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(c->s->db, rc, "clear held batch");
    }
    return 0;
}

static int hold(mctx *c, inbatch *ib)
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "INSERT OR REPLACE INTO tsync_held(site, seq, prev, "
                                      "hash, body, sig, reason) VALUES(?1,?2,?3,?4,?5,?6,?7)"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "hold batch");
    sqlite3_bind_int64(st, 1, ib->site);
    sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
    sqlite3_bind_blob(st, 3, ib->prev, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, ib->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, ib->body, (int)ib->body_len, SQLITE_STATIC);
    if (ib->sig) sqlite3_bind_blob(st, 6, ib->sig, TSYNC__SIG_BYTES, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, ib->reason, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(c->s->db, rc, "hold batch");
}

/* Our own evidence for a sequence number: the stored batches from seq up to the next signed one. */
static int record_fork(mctx *c, inbatch *ib, uint64_t at_seq, const char *why,
                       const tsync__brun *run, const tsync__bsite *bs)
{
    tsync_store *s = c->s;
    msite *m = &c->sites[ib->site];
    char sh[13];
    int rc = 0;
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    if (!w) return tsync__err(TSYNC_ENOMEM, "out of memory");
    uint32_t si;
    rc = tsync__bundle_writer_site(w, bs, &si);
    if (rc == 0 && run) {
        rc = tsync__bundle_writer_run(w, si, run->first_seq, run->prev);
        for (uint32_t i = 0; rc == 0 && i < run->nbodies; i++)
            rc = tsync__bundle_writer_body(w, run->body[i], run->body_len[i]);
        if (rc == 0) rc = tsync__bundle_writer_end_run(w, run->sig);
    }
    /* our side */
    sqlite3_stmt *st;
    if (rc == 0 &&
        sqlite3_prepare_v2(s->db,
                           "SELECT seq, body, sig FROM tsync_log WHERE site=?1 AND seq>=?2 "
                           "ORDER BY seq",
                           -1, &st, NULL) == SQLITE_OK) {
        uint8_t prev[TSYNC__HASH_BYTES] = {0};
        sqlite3_stmt *ph;
        if (at_seq > 1 && sqlite3_prepare_v2(s->db,
                                             "SELECT hash FROM tsync_log WHERE site=?1 AND "
                                             "seq=?2",
                                             -1, &ph, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(ph, 1, ib->site);
            sqlite3_bind_int64(ph, 2, (int64_t)at_seq - 1);
            if (sqlite3_step(ph) == SQLITE_ROW && sqlite3_column_bytes(ph, 0) == TSYNC__HASH_BYTES)
                memcpy(prev, sqlite3_column_blob(ph, 0), TSYNC__HASH_BYTES);
            sqlite3_finalize(ph);
        }
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)at_seq);
        int started = 0;
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            if (!started)
                rc = tsync__bundle_writer_run(w, si, (uint64_t)sqlite3_column_int64(st, 0), prev);
            started = 1;
            if (rc == 0)
                rc = tsync__bundle_writer_body(w, sqlite3_column_blob(st, 1),
                                               (size_t)sqlite3_column_bytes(st, 1));
            if (rc == 0 && sqlite3_column_bytes(st, 2) == TSYNC__SIG_BYTES) {
                rc = tsync__bundle_writer_end_run(w, sqlite3_column_blob(st, 2));
                started = 0;
                break;
            }
        }
        sqlite3_finalize(st);
    }
    uint8_t *proof = NULL;
    size_t plen = 0;
    int known = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM tsync_forks WHERE site=?1 AND seq=?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)at_seq);
        known = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    if (known) {
        /* seen before: one proof is enough */
        tsync__bundle_writer_free(w);
        goto freeze;
    }
    if (rc == 0) rc = tsync__bundle_writer_finish(w, true, &proof, &plen);
    tsync__bundle_writer_free(w);
    if (rc) return tsync__err(rc, "cannot build fork proof");
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO tsync_forks(site, seq, at_ms, proof, reason) "
                           "VALUES(?1,?2,?3,?4,?5)",
                           -1, &st, NULL) != SQLITE_OK) {
        free(proof);
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "record fork");
    }
    sqlite3_bind_int64(st, 1, ib->site);
    sqlite3_bind_int64(st, 2, (int64_t)at_seq);
    sqlite3_bind_int64(st, 3, (int64_t)c->now_ms);
    sqlite3_bind_blob(st, 4, proof, (int)plen, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, why, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(proof);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "record fork");
freeze:;
    int64_t frozen = (int64_t)at_seq - 1;
    if (m->frozen < 0 || frozen < m->frozen) m->frozen = frozen;
    m->dirty = 1;
    if (c->rep) c->rep->refused++;
    c->refuse_code = TSYNC_EFORK;
    report_msg(c,
               "refused: fork of site %s at batch %llu (%s); proof recorded, site frozen at "
               "batch %lld; the other branch's rows are merged so no sale is lost",
               short_site(m->id, sh), (unsigned long long)at_seq, why, (long long)m->frozen);
    return 0;
}

/* ---------------------------------------------------------------- the merge */

static int stored_hash(mctx *c, uint32_t site, uint64_t seq, uint8_t out[TSYNC__HASH_BYTES])
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "SELECT hash FROM tsync_log WHERE site=?1 AND seq=?2"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "read log");
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    rc = TSYNC_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == TSYNC__HASH_BYTES) {
        memcpy(out, sqlite3_column_blob(st, 0), TSYNC__HASH_BYTES);
        rc = 0;
    }
    sqlite3_reset(st);
    return rc;
}

/* Whether batch seq of site was pruned from our log (below the stub at the horizon): such a batch
 * can no longer be compared, and every member held it when it was pruned. */
static int pruned_below(mctx *c, uint32_t site, uint64_t seq)
{
    sqlite3_stmt *st = tsync__prep(c->s, "SELECT min(seq) FROM tsync_log WHERE site=?1");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, site);
    int below = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL &&
                (uint64_t)sqlite3_column_int64(st, 0) > seq;
    sqlite3_reset(st);
    return below;
}

static int load_held(mctx *c, inbatch **list, size_t *n, size_t *cap)
{
    sqlite3_stmt *st;
    int rc = ((st = tsync__prep(c->s, "SELECT site, seq, prev, hash, body, sig FROM tsync_held "
                                      "ORDER BY site, seq"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(c->s->db, rc, "read held batches");
    rc = 0;
    char err[TSYNC__ERRLEN];
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            inbatch *nl = realloc(*list, *cap * sizeof *nl);
            if (!nl) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            *list = nl;
        }
        inbatch *ib = &(*list)[*n];
        memset(ib, 0, sizeof *ib);
        ib->site = (uint32_t)sqlite3_column_int64(st, 0);
        ib->seq = (uint64_t)sqlite3_column_int64(st, 1);
        if (sqlite3_column_bytes(st, 2) != TSYNC__HASH_BYTES ||
            sqlite3_column_bytes(st, 3) != TSYNC__HASH_BYTES)
            continue;
        memcpy(ib->prev, sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES);
        memcpy(ib->hash, sqlite3_column_blob(st, 3), TSYNC__HASH_BYTES);
        ib->body_len = (size_t)sqlite3_column_bytes(st, 4);
        uint8_t *body = tsync__arena_alloc(&c->a, ib->body_len + 1);
        if (!body) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        memcpy(body, sqlite3_column_blob(st, 4), ib->body_len);
        ib->body = body;
        if (sqlite3_column_bytes(st, 5) == TSYNC__SIG_BYTES) {
            uint8_t *sig = tsync__arena_alloc(&c->a, TSYNC__SIG_BYTES);
            if (!sig) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            memcpy(sig, sqlite3_column_blob(st, 5), TSYNC__SIG_BYTES);
            ib->sig = sig;
        }
        if (tsync__batch_decode(ib->body, ib->body_len, &ib->b, &c->a, err) != 0) continue;
        ib->from_held = 1;
        (*n)++;
    }
    sqlite3_reset(st);
    return rc;
}

/* A batch whose clock is too far ahead is held (DESIGN: a wrong clock must not win every write
 * for a day, nor move ours), except once its origin shows, by a later batch with a clock within
 * the bound, that its clock was fixed: then holding it only holds that till's later sales
 * hostage, since they depend on it (docs/DATA_MODEL.md, "Clocks"). It is then merged, and
 * finish() does not let our clock follow it. */
static int clock_fixed_later(const mctx *c, const inbatch *list, size_t n, const inbatch *ib)
{
    for (size_t j = 0; j < n; j++)
        if (list[j].site == ib->site && list[j].seq > ib->seq &&
            !tsync__hlc_too_far(list[j].b.hlc_hi, c->now_ms, c->s->skew_bound_ms))
            return 1;
    return 0;
}

/* Decides and applies, in causal order, until nothing more can be applied. */
/* The data of a forked branch is merged (not logged): its sales are real, and every replica that
 * sees both branches then shows the same rows. The origin's log stays frozen. */
static int apply_fork_data(mctx *c, inbatch *ib, int counted,
                           const uint8_t branch[TSYNC__HASH_BYTES])
{
    msite *m = &c->sites[ib->site];
    uint8_t id[TSYNC__SITE_BYTES];
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof id);
    crypto_generichash_update(&h, (const uint8_t *)"tsync-fork", 10);
    crypto_generichash_update(&h, m->id, TSYNC__SITE_BYTES);
    crypto_generichash_update(&h, branch, TSYNC__HASH_BYTES);
    crypto_generichash_final(&h, id, sizeof id);
    uint32_t fs;
    int rc = site_local(c, id, NULL, NULL, &fs);
    if (rc) return rc;
    c->fork_origin = ib->site;
    c->fork_site = fs;
    c->fork_frozen = m->frozen >= 0 ? (uint64_t)m->frozen : 0;
    rc = apply_batch(c, ib, NULL, NULL, 0);
    c->fork_site = 0;
    ib->done = 1;
    if (rc == 0 && !counted && c->rep) c->rep->refused++;
    return rc;
}

static void drop_held(mctx *c, inbatch *ib)
{
    sqlite3_stmt *st;
    if (!ib->from_held) return;
    if (sqlite3_prepare_v2(c->s->db, "DELETE FROM tsync_held WHERE site=?1 AND seq=?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
}

/* Kept batches of a revoked device (docs/TRUST.md, store/kept.c). Whether m's key is revoked (2)
 * or not (1), looked up once per merge. */
static int site_revoked(mctx *c, msite *m)
{
    if (!m->revoked) {
        int rv = m->has_pk ? tsync__trust_cutoff(c->s, m->pk, m->id, &m->cutoff) : 0;
        if (rv < 0) return rv;
        m->revoked = rv == 1 ? 2 : 1;
    }
    return m->revoked;
}

/* The highest seq of site id, at or above seq, that an honest batch of this merge (the bundle or
 * the held ones) depends on: *kept (0 when none) and *by, that batch's index. An honest batch is by
 * a key that is not revoked and that the trust rules admit. */
static int honest_dep(mctx *c, inbatch *list, size_t n, const uint8_t id[TSYNC__SITE_BYTES],
                      uint64_t seq, uint64_t *kept, size_t *by)
{
    *kept = 0;
    for (size_t i = 0; i < n; i++) {
        inbatch *l = &list[i];
        for (uint32_t d = 0; d < l->b.ndeps; d++) {
            const tsync__bdep *dep = &l->b.deps[d];
            if (dep->seq < seq || dep->seq <= *kept ||
                memcmp(l->b.sites[dep->site], id, TSYNC__SITE_BYTES) != 0)
                continue;
            if (!l->honest) {
                msite *a = &c->sites[l->site];
                int rv = site_revoked(c, a);
                if (rv < 0) return rv;
                char err[TSYNC__ERRLEN];
                int trc = rv == 2 || !a->has_pk
                              ? TSYNC_EREFUSED
                              : tsync__trust_admit(c->s, a->pk, a->id, l->seq,
                                                   tsync__hlc_ms(l->b.hlc_hi), err);
                if (trc == TSYNC_EIO) return trc;
                l->honest = trc == 0 ? 1 : -1;
            }
            if (l->honest == 1) *kept = dep->seq, *by = i;
        }
    }
    return 0;
}

/* Decides and applies, in causal order, until nothing more can be applied. */
static int apply_ready(mctx *c, inbatch *list, size_t n, const tsync__bundle *bun,
                       const uint32_t *run_of, uint8_t *run_forked,
                       uint8_t (*branch)[TSYNC__HASH_BYTES])
{
    int rc = 0, progress = 1;
    char sh[13];
    while (progress) {
        progress = 0;
        for (size_t i = 0; i < n; i++) {
            inbatch *ib = &list[i];
            if (ib->done) continue;
            msite *m = &c->sites[ib->site];
            const tsync__brun *run = run_of && !ib->from_held ? &bun->runs[run_of[i]] : NULL;
            tsync__bsite fake = {0}, *bs = run ? &bun->sites[run->site] : &fake;
            if (!run) {
                memcpy(fake.site, m->id, TSYNC__SITE_BYTES);
                memcpy(fake.pk, m->pk, TSYNC__PK_BYTES);
            }
            if (run && run_forked[run_of[i]]) {
                if ((rc = apply_fork_data(c, ib, 0, branch[run_of[i]]))) return rc;
                continue;
            }
            if (ib->seq <= m->seq) {
                uint8_t h[TSYNC__HASH_BYTES];
                ib->done = 1;
                if (stored_hash(c, ib->site, ib->seq, h) == 0 &&
                    memcmp(h, ib->hash, TSYNC__HASH_BYTES) != 0) {
                    if ((rc = record_fork(c, ib, ib->seq,
                                          "a different batch with this number is "
                                          "already here",
                                          run, bs)))
                        return rc;
                    if (run) {
                        run_forked[run_of[i]] = 1;
                        memcpy(branch[run_of[i]], ib->hash, TSYNC__HASH_BYTES);
                    }
                    if ((rc = apply_fork_data(c, ib, 1, ib->hash))) return rc;
                    progress = 1;
                } else {
                    ib->applied = 1;
                    if (c->rep) c->rep->duplicates++;
                }
                drop_held(c, ib);
                continue;
            }
            if (m->frozen >= 0 && (int64_t)ib->seq > m->frozen) {
                ib->done = 1;
                if (c->rep) c->rep->refused++;
                c->refuse_code = TSYNC_EFORK;
                report_msg(c,
                           "refused: batch %llu of site %s: the site is frozen at batch %lld "
                           "after a fork",
                           (unsigned long long)ib->seq, short_site(m->id, sh),
                           (long long)m->frozen);
                drop_held(c, ib);
                continue;
            }
            if (!ib->kept) {
                /* A revoked device's batch after the cutoff: kept when an honest batch depends on
                 * it, else refused now, in whatever order it came (it will never apply). */
                int rv = site_revoked(c, m);
                if (rv < 0) return rv;
                if (rv == 2 && ib->seq > m->cutoff) {
                    if ((rc = honest_dep(c, list, n, m->id, ib->seq, &ib->kept, &ib->kept_by)))
                        return rc;
                    if (!ib->kept) {
                        /* The trust check words it (device name, seq, cutoff), as for any batch
                         * the trust rules refuse. */
                        char terr[TSYNC__ERRLEN];
                        int trc = tsync__trust_admit_kept(c->s, m->pk, m->id, ib->seq,
                                                          tsync__hlc_ms(ib->b.hlc_hi), 0, terr);
                        if (trc == TSYNC_EIO) return trc;
                        ib->done = 1;
                        if (c->rep) c->rep->refused++;
                        c->refuse_code = TSYNC_EREFUSED;
                        report_msg(
                            c,
                            "refused: batch %llu of site %s: %s, and no honest batch depends on it",
                            (unsigned long long)ib->seq, short_site(m->id, sh),
                            trc ? terr : "its key was revoked");
                        drop_held(c, ib);
                        continue;
                    }
                }
            }
            if (ib->seq != m->seq + 1) {
                snprintf(ib->reason, sizeof ib->reason, "waiting for batch %llu of site %s",
                         (unsigned long long)(m->seq + 1), short_site(m->id, sh));
                continue;
            }
            if (memcmp(ib->prev, m->hash, TSYNC__HASH_BYTES) != 0) {
                if ((rc = record_fork(c, ib, ib->seq > 1 ? ib->seq - 1 : 1,
                                      "its previous-batch hash differs from ours", run, bs)))
                    return rc;
                if (run) {
                    run_forked[run_of[i]] = 1;
                    memcpy(branch[run_of[i]], ib->hash, TSYNC__HASH_BYTES);
                }
                if ((rc = apply_fork_data(c, ib, 1, ib->hash))) return rc;
                drop_held(c, ib);
                progress = 1;
                continue;
            }
            int ready = 1;
            for (uint32_t d = 0; d < ib->b.ndeps && ready; d++) {
                const uint8_t *dsite = ib->b.sites[ib->b.deps[d].site];
                uint64_t have = 0;
                for (uint32_t k = 1; k < c->nsites; k++)
                    if (c->sites[k].known && memcmp(c->sites[k].id, dsite, TSYNC__SITE_BYTES) == 0)
                        have = c->sites[k].seq > have ? c->sites[k].seq : have;
                if (have < ib->b.deps[d].seq) {
                    ready = 0;
                    snprintf(ib->reason, sizeof ib->reason,
                             "depends on batch %llu of site %s, not here yet",
                             (unsigned long long)ib->b.deps[d].seq, short_site(dsite, sh));
                }
            }
            if (!ready) continue;
            if (tsync__hlc_too_far(ib->b.hlc_hi, c->now_ms, c->s->skew_bound_ms)) {
                if (!clock_fixed_later(c, list, n, ib)) {
                    snprintf(ib->reason, sizeof ib->reason,
                             "clock of site %s is %llu ms ahead of ours", short_site(m->id, sh),
                             (unsigned long long)(tsync__hlc_ms(ib->b.hlc_hi) - c->now_ms));
                    continue;
                }
                report_msg(c,
                           "merged: batch %llu of site %s with a clock %llu ms ahead: a later "
                           "batch of that site shows its clock fixed",
                           (unsigned long long)ib->seq, short_site(m->id, sh),
                           (unsigned long long)(tsync__hlc_ms(ib->b.hlc_hi) - c->now_ms));
            }
            {
                /* Enrolled: only keys with a valid certificate of our shop author data, and a
                 * certificate covers data by the batch's clock. */
                char terr[TSYNC__ERRLEN];
                int trc = tsync__trust_admit_kept(c->s, m->pk, m->id, ib->seq,
                                                  tsync__hlc_ms(ib->b.hlc_hi), ib->kept, terr);
                if (trc == TSYNC_EIO) return trc;
                if (trc) {
                    ib->done = 1;
                    if (c->rep) c->rep->refused++;
                    c->refuse_code = TSYNC_EREFUSED;
                    report_msg(c, "refused: batch %llu of site %s: %s", (unsigned long long)ib->seq,
                               short_site(m->id, sh), terr);
                    drop_held(c, ib);
                    continue;
                }
            }
            if ((rc = apply_batch(c, ib, NULL, NULL, 0))) return rc;
            if ((rc = log_append(c, ib))) return rc;
            m->seq = ib->seq;
            memcpy(m->hash, ib->hash, TSYNC__HASH_BYTES);
            m->dirty = 1;
            ib->done = 1;
            ib->applied = 1;
            progress = 1;
            if (c->rep) c->rep->merged++;
        }
    }
    return 0;
}

static int finish(mctx *c, inbatch *list, size_t n)
{
    tsync_store *s = c->s;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        inbatch *ib = &list[i];
        if (ib->done) continue;
        if (c->rep) c->rep->held++;
        if ((rc = hold(c, ib))) return rc;
        report_msg(c, "held: batch %llu: %s", (unsigned long long)ib->seq, ib->reason);
    }
    if ((rc = flush_rows(c))) return rc;
    for (uint32_t i = 1; i < c->nsites; i++) {
        msite *m = &c->sites[i];
        if (!m->dirty) continue;
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "UPDATE tsync_sites SET seq=?2, hash=?3, frozen_seq=?4 "
                               "WHERE idx=?1",
                               -1, &st, NULL) != SQLITE_OK)
            return tsync__err_sqlite(s->db, SQLITE_ERROR, "update vector");
        sqlite3_bind_int64(st, 1, i);
        sqlite3_bind_int64(st, 2, (int64_t)m->seq);
        if (m->seq) sqlite3_bind_blob(st, 3, m->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
        if (m->frozen >= 0) sqlite3_bind_int64(st, 4, m->frozen);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "update vector");
        rc = 0;
    }
    if (c->max_hlc) {
        tsync__hlc last;
        if ((rc = tsync__hlc_load(s, &last))) return rc;
        /* Never further than the bound ahead of the shop's time: a far-ahead clock merged
         * because its author fixed it later must not move ours (seal.c keeps the rows it
         * wrote consistent: a write goes above the clock it overwrites). */
        tsync__hlc cap = s->skew_bound_ms > (UINT64_MAX >> 16) - c->now_ms
                             ? UINT64_MAX
                             : tsync__hlc_make(c->now_ms + s->skew_bound_ms, 0xffff);
        tsync__hlc nl = tsync__hlc_observe(last, c->max_hlc < cap ? c->max_hlc : cap);
        if (nl > last && (rc = tsync__hlc_store(s, nl))) return rc;
    }
    return 0;
}

int tsync_store_merge(tsync_store *s, const uint8_t *bundle, size_t len, tsync_merge_report *report)
{
    if (report &&
        tsync__check_version("tsync_merge_report", report->version, TSYNC_MERGE_REPORT_VERSION))
        return TSYNC_EVERSION;
    tsync__arena da = {0};
    tsync__bundle bun;
    char err[TSYNC__ERRLEN];
    memset(&bun, 0, sizeof bun);
    int rc = tsync__bundle_decode(bundle, len, &bun, &da, err);
    if (rc) {
        if (report) report->refused++;
        tsync__arena_free(&da);
        return tsync__err(rc, "bundle refused: %s", err);
    }
    if (bun.schema) {
        /* The author's table definitions are checked as strictly as the rest: a bundle whose
         * description does not decode is damaged or forged and is refused whole. */
        tsync__arena sa = {0};
        tsync__schema sc;
        rc = tsync__schema_decode(bun.schema, bun.schema_len, &sc, &sa, err);
        tsync__arena_free(&sa);
        if (rc) {
            if (report) report->refused++;
            tsync__bundle_free(&bun);
            tsync__arena_free(&da);
            return tsync__err(rc, "bundle refused: %s", err);
        }
    }
    rc = tsync__merge_bundle(s, &bun, report);
    if (rc != TSYNC_EIO && rc != TSYNC_ENOMEM && rc != TSYNC_EBUSY) {
        int src = tsync__schema_from_bundle(s, &bun, report);
        if (rc == 0) rc = src;
    }
    tsync__bundle_free(&bun);
    tsync__arena_free(&da);
    return rc;
}

int tsync__merge_bundle(tsync_store *s, const tsync__bundle *bunp, tsync_merge_report *report)
{
    const tsync__bundle bun = *bunp;
    char err[TSYNC__ERRLEN];
    char sh[13];
    int rc = 0;
    mctx c;
    uint8_t *run_forked = NULL;
    uint8_t(*branch)[TSYNC__HASH_BYTES] = NULL;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.rep = report;
    c.now_ms = tsync__ref_now_ms(s);

    /* Phase 1: decode every body and verify every run, touching nothing. */
    size_t total = 0;
    for (uint32_t i = 0; i < bun.nruns; i++) total += bun.runs[i].nbodies;
    inbatch *list = calloc(total + 1, sizeof *list);
    uint32_t *run_of = calloc(total + 1, sizeof *run_of);
    if (!list || !run_of) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto fail;
    }
    size_t n = 0;
    for (uint32_t ri = 0; ri < bun.nruns; ri++) {
        const tsync__brun *run = &bun.runs[ri];
        const tsync__bsite *bs = &bun.sites[run->site];
        uint8_t prev[TSYNC__HASH_BYTES];
        memcpy(prev, run->prev, sizeof prev);
        for (uint32_t k = 0; k < run->nbodies; k++) {
            inbatch *ib = &list[n];
            run_of[n] = ri;
            ib->body = run->body[k];
            ib->body_len = run->body_len[k];
            ib->seq = run->first_seq + k;
            if ((rc = tsync__batch_decode(ib->body, ib->body_len, &ib->b, &c.a, err))) {
                rc = tsync__err(rc, "bundle refused: batch %llu of site %s: %s",
                                (unsigned long long)ib->seq, short_site(bs->site, sh), err);
                goto refuse;
            }
            if (memcmp(ib->b.origin, bs->site, TSYNC__SITE_BYTES) != 0 || ib->b.seq != ib->seq) {
                rc = tsync__err(TSYNC_ECHAIN,
                                "bundle refused: run of site %s: batch %llu is out "
                                "of place (found origin %s batch %llu): hash chain broken",
                                short_site(bs->site, sh), (unsigned long long)ib->seq,
                                short_site(ib->b.origin, (char[13]){0}),
                                (unsigned long long)ib->b.seq);
                goto refuse;
            }
            memcpy(ib->prev, prev, sizeof prev);
            tsync__batch_hash(prev, ib->body, ib->body_len, ib->hash);
            memcpy(prev, ib->hash, sizeof prev);
            n++;
        }
        uint64_t last = run->first_seq + run->nbodies - 1;
        if (tsync__batch_verify(bs->pk, bs->site, last, prev, run->sig) != 0) {
            rc = tsync__err(TSYNC_EBADSIG,
                            "bundle refused: batches %llu-%llu of site %s: "
                            "signature does not verify over the hash chain (altered, reordered "
                            "or forged)",
                            (unsigned long long)run->first_seq, (unsigned long long)last,
                            short_site(bs->site, sh));
            goto refuse;
        }
        list[n - 1].sig = run->sig;
    }

    /* Phase 2: one transaction. */
    if ((rc = tsync__begin(s))) goto fail;
    if ((rc = tsync__seal_locked(s, NULL))) goto rollback;
    if ((rc = tsync__capture_off(s, 1))) goto rollback;
    /* Trust records first: a batch of a till enrolled since our last merge needs its
     * certificate. A bad or foreign record is refused and reported; it does not stop the data. */
    for (uint32_t i = 0; i < bun.ntrust; i++) {
        char terr[TSYNC__ERRLEN];
        int trc = tsync__trust_import(s, bun.trust[i], bun.trust_len[i], terr);
        if (trc == TSYNC_EIO || trc == TSYNC_ENOMEM) {
            rc = trc;
            goto rollback;
        }
        if (trc) {
            if (report) report->refused++;
            report_msg(&c, "trust record %u not taken: %s", i, terr);
        }
    }
    if ((rc = load_sites(&c))) goto rollback;
    {
        uint32_t *idx = calloc(bun.nsites + 1, sizeof *idx);
        if (!idx) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto rollback;
        }
        for (uint32_t i = 0; rc == 0 && i < bun.nsites; i++)
            rc = site_local(&c, bun.sites[i].site, bun.sites[i].pk, bun.sites[i].inc, &idx[i]);
        for (size_t i = 0; rc == 0 && i < n; i++) list[i].site = idx[bun.runs[run_of[i]].site];
        free(idx);
        if (rc) goto rollback;
    }
    {
        /* Our own batches coming back, signed with our key, that our log lacks above its head or
         * holds with other content: this database went back (an old copy written over it, a
         * revert of the disk) or a copy of it writes with our identity. Take a new incarnation,
         * then merge again: our old site is then a site like any other, its lost branch comes
         * back, and a branch we wrote on meanwhile meets the fork machinery (store/identity.c). */
        uint64_t head = 0, seen = 0;
        int went_back = 0;
        for (size_t i = 0; i < n; i++) {
            if (list[i].site != s->local_idx) continue;
            uint8_t h[TSYNC__HASH_BYTES];
            int hrc = stored_hash(&c, list[i].site, list[i].seq, h);
            if ((hrc == 0 && memcmp(h, list[i].hash, TSYNC__HASH_BYTES) == 0) ||
                (hrc == TSYNC_ENOTFOUND && pruned_below(&c, list[i].site, list[i].seq)))
                continue;
            went_back = 1;
            if (list[i].seq > seen) seen = list[i].seq;
            head = c.sites[s->local_idx].seq;
        }
        if (went_back && !s->read_only && !s->renewing) {
            tsync__rollback(s);
            tsync__capture_off(s, 0);
            free(list);
            free(run_of);
            ctx_free(&c);
            if ((rc = tsync__identity_renew(s, head, seen))) return rc;
            s->renewing = 1;
            rc = tsync__merge_bundle(s, bunp, report);
            s->renewing = 0;
            return rc;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].site == s->local_idx) {
            /* Our own batches coming back: duplicates, or a sign that this database was cloned. */
            list[i].done = 1;
            uint8_t h[TSYNC__HASH_BYTES];
            int hrc = stored_hash(&c, list[i].site, list[i].seq, h);
            if ((hrc == 0 && memcmp(h, list[i].hash, TSYNC__HASH_BYTES) == 0) ||
                (hrc == TSYNC_ENOTFOUND && pruned_below(&c, list[i].site, list[i].seq))) {
                if (report) report->duplicates++;
            } else {
                if (report) report->refused++;
                c.refuse_code = TSYNC_EFORK;
                report_msg(&c,
                           "refused: batch %llu claims to be from this database but is not "
                           "ours (a copy of this database is writing with our identity)",
                           (unsigned long long)list[i].seq);
            }
        }
    {
        /* Held batches from earlier merges join this one. */
        size_t cap = total + 1;
        size_t n0 = n;
        if ((rc = load_held(&c, &list, &n, &cap))) goto rollback;
        uint32_t *nr = realloc(run_of, (cap + 1) * sizeof *nr);
        if (!nr) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto rollback;
        }
        run_of = nr;
        /* a batch both held and in this bundle: keep one (the held copy loses) */
        for (size_t i = n0; i < n; i++)
            for (size_t j = 0; j < n0; j++)
                if (list[j].site == list[i].site && list[j].seq == list[i].seq &&
                    memcmp(list[j].hash, list[i].hash, TSYNC__HASH_BYTES) == 0) {
                    list[j].from_held = 1; /* clear the held row when applied */
                    if (!list[j].sig) list[j].sig = list[i].sig;
                    list[i].done = 1;
                }
    }
    run_forked = calloc(bun.nruns + 1, 1);
    branch = calloc(bun.nruns + 1, TSYNC__HASH_BYTES);
    if (!run_forked || !branch) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto rollback;
    }
    if ((rc = apply_ready(&c, list, n, &bun, run_of, run_forked, branch))) goto rollback;
    if ((rc = finish(&c, list, n))) goto rollback;
    for (size_t i = 0; i < n; i++)
        if (list[i].applied && list[i].kept && !list[list[i].kept_by].applied) c.keep_publish = 1;
    if (c.keep_publish && (rc = tsync__trust_keep_merged(s))) goto rollback;
    tsync__capture_off(s, 0);
    if ((rc = tsync__commit(s))) goto fail;
    free(list);
    free(run_of);
    free(run_forked);
    free(branch);
    ctx_free(&c);
    if (c.refuse_code)
        return tsync__err(c.refuse_code, "%s",
                          c.refuse_msg[0] ? c.refuse_msg : "some batches were refused");
    return 0;

refuse:
    if (report) report->refused++;
    report_msg(&c, "%s", tsync_error_last()->code ? tsync_error_last()->message : "refused");
    goto fail;
rollback:
    tsync__rollback(s);
    tsync__capture_off(s, 0);
fail:
    free(list);
    free(run_of);
    free(run_forked);
    free(branch);
    ctx_free(&c);
    return rc;
}

/* ---------------------------------------------------------------- unparking
 *
 * A parked change is a row of a batch kept in the log (tsync_parked: origin, seq, row index) for
 * a table this database did not replicate (col NULL: the whole row) or a column it lacked (col
 * set: that column of the row; the rest of the row applied when it arrived). Once the schema
 * has caught up, the change is applied as if it arrived now with its own clocks: fields by LWW
 * against whatever this till wrote meanwhile, counters by pointwise max of the origin's absolute
 * P and N, so late application gives the result early application would have. */

/* One parked change of a batch being re-applied. */
typedef struct {
    int64_t id;
    uint32_t row;
    char *col; /* NULL: the whole row */
} parked_ent;

/* The local column of each column of a batch table (-1: missing here), or -1 when the table
 * here cannot take the batch's rows at all (another key, or a counter there that is a plain
 * column here), exactly as apply_batch decides. */
static int unpark_map(const tsync__btable *bt, const tsync__table *t, int map[TSYNC__MAX_COLS])
{
    for (uint32_t k = 0; k < bt->ncols; k++)
        map[k] = tsync__col_by_name(t, bt->cols[k], bt->col_len[k]);
    if ((int)bt->npk != t->npk) return -1;
    for (uint32_t k = 0; k < bt->npk; k++)
        if (map[k] != t->pk[k]) return -1;
    for (uint32_t k = 0; k < bt->ncounters; k++) {
        int m = map[bt->counters[k]];
        if (m >= 0 && !t->is_counter[m]) return -1;
    }
    return 0;
}

static int bt_is_counter(const tsync__btable *bt, uint32_t col)
{
    for (uint32_t k = 0; k < bt->ncounters; k++)
        if (bt->counters[k] == col) return 1;
    return 0;
}

/* Re-applies what can apply now of the parked changes ents of one batch; appends the ids of those
 * applied to *done. A whole row whose table now exists may still carry columns this database
 * lacks: those are parked again, as columns. */
static int unpark_batch(mctx *c, inbatch *ib, parked_ent *ents, size_t nents, int64_t **done,
                        size_t *ndone, size_t *donecap)
{
    tsync__batch *b = &ib->b;
    tsync_store *s = c->s;
    int rc = 0;
    /* Per batch row: 0 untouched, 1 whole row, 2 some columns (in the row's copy). */
    uint8_t *how = tsync__arena_alloc(&c->a, b->nrows ? b->nrows : 1);
    tsync__brow *rows = tsync__arena_alloc(&c->a, (b->nrows ? b->nrows : 1) * sizeof *rows);
    if (!how || !rows) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (size_t i = 0; i < nents; i++) {
        parked_ent *e = &ents[i];
        if (e->row >= b->nrows) continue; /* not this batch's row: keep it, never drop */
        tsync__brow *br = &b->rows[e->row];
        tsync__btable *bt = &b->tables[br->table];
        tsync__table *t = tsync__table_by_name(s, bt->name, bt->name_len);
        int map[TSYNC__MAX_COLS];
        if (!t || unpark_map(bt, t, map) != 0) continue;
        if (!e->col) {
            if (how[e->row] == 2) continue; /* cannot happen: a row is parked whole or by column */
            for (uint32_t k = 0; k < br->ncols; k++) {
                uint32_t bc = br->cols[k].col;
                if (map[bc] < 0 &&
                    (rc = park(c, ib->site, ib->seq, e->row, bt->name, bt->name_len, bt->cols[bc],
                               bt->col_len[bc], "no such column here")))
                    return rc;
            }
            for (uint32_t k = 0; k < br->nctrs; k++) {
                uint32_t bc = br->ctrs[k].col;
                if (map[bc] < 0 &&
                    (rc = park(c, ib->site, ib->seq, e->row, bt->name, bt->name_len, bt->cols[bc],
                               bt->col_len[bc], "no such counter column here")))
                    return rc;
            }
            rows[e->row] = *br;
            how[e->row] = 1;
        } else {
            if (how[e->row] == 1) continue;
            uint32_t k = 0;
            while (k < bt->ncols &&
                   !tsync__name_eq(bt->cols[k], bt->col_len[k], e->col, strlen(e->col)))
                k++;
            if (k == bt->ncols || map[k] < 0) continue; /* still missing here */
            int ctr = bt_is_counter(bt, k);
            /* A plain value for what is a counter here would be ignored: keep it parked. */
            if (!ctr && t->is_counter[map[k]]) continue;
            if (how[e->row] == 0) {
                rows[e->row] = *br;
                rows[e->row].flags = 0; /* existence was merged when the change was parked */
                rows[e->row].nrmv = 0;
                rows[e->row].ncols = rows[e->row].nctrs = 0;
                rows[e->row].cols = tsync__arena_alloc(&c->a, (br->ncols + 1) * sizeof *br->cols);
                rows[e->row].ctrs = tsync__arena_alloc(&c->a, (br->nctrs + 1) * sizeof *br->ctrs);
                if (!rows[e->row].cols || !rows[e->row].ctrs)
                    return tsync__err(TSYNC_ENOMEM, "out of memory");
                how[e->row] = 2;
            }
            tsync__brow *fr = &rows[e->row];
            int found = 0;
            for (uint32_t j = 0; !ctr && j < fr->ncols; j++) found |= fr->cols[j].col == k;
            for (uint32_t j = 0; ctr && j < fr->nctrs; j++) found |= fr->ctrs[j].col == k;
            for (uint32_t j = 0; !ctr && j < br->ncols && !found; j++)
                if (br->cols[j].col == k) fr->cols[fr->ncols++] = br->cols[j], found = 1;
            for (uint32_t j = 0; ctr && j < br->nctrs && !found; j++)
                if (br->ctrs[j].col == k) fr->ctrs[fr->nctrs++] = br->ctrs[j], found = 1;
            if (!found) continue; /* the row does not carry it: keep the record */
        }
        if (*ndone == *donecap) {
            size_t cap = *donecap ? *donecap * 2 : 256;
            int64_t *nd = realloc(*done, cap * sizeof *nd);
            if (!nd) return tsync__err(TSYNC_ENOMEM, "out of memory");
            *done = nd;
            *donecap = cap;
        }
        (*done)[(*ndone)++] = e->id;
    }
    /* The rows to apply, as a batch of their own (same origin, sites and tables). */
    inbatch fib = *ib;
    fib.b.nrows = 0;
    fib.b.rows = tsync__arena_alloc(&c->a, (b->nrows ? b->nrows : 1) * sizeof *rows);
    if (!fib.b.rows) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t r = 0; r < b->nrows; r++)
        if (how[r]) fib.b.rows[fib.b.nrows++] = rows[r];
    for (uint32_t ti = 0; ti < b->ntables; ti++) {
        int used = 0;
        for (uint32_t r = 0; r < fib.b.nrows && !used; r++) used = fib.b.rows[r].table == ti;
        if (!used) continue;
        tsync__table *t = tsync__table_by_name(s, b->tables[ti].name, b->tables[ti].name_len);
        c->unpark_blocked = 0;
        if ((rc = apply_batch(c, &fib, t->name, NULL, 0))) return rc;
        if (c->unpark_blocked)
            return tsync__err(TSYNC_ERROR, "internal: parked rows of %s could not be re-applied",
                              t->name);
    }
    return 0;
}

/* Re-applies parked changes of a table (or of every table when table is NULL) that can apply now
 * (called inside the transaction of replicate or migrate, after local changes were sealed). */
int tsync__unpark(tsync_store *s, const char *table)
{
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    mctx c;
    memset(&c, 0, sizeof c);
    c.s = s;
    c.now_ms = tsync__ref_now_ms(s);
    /* Every parked change, grouped by batch, the batches in the order this database applied
     * them: re-applied writes then meet each other as they met at their authors (per origin in
     * sequence, across origins causally), and LWW and conflict records come out as they would
     * have. One query: a till long on an old version may have many thousands parked. */
    struct pref {
        parked_ent e;
        uint32_t site;
        uint64_t seq;
    } *pl = NULL;
    size_t np = 0, pcap = 0;
    sqlite3_stmt *st = tsync__prep(
        s, "SELECT p.id, p.site, p.seq, p.row, p.col FROM tsync_parked p JOIN tsync_log l ON "
           "l.site = p.site AND l.seq = p.seq WHERE p.seq > 0 AND (?1 IS NULL OR p.tbl = ?1 "
           "COLLATE NOCASE) "
           "ORDER BY l.id, p.row, p.id");
    if (!st) return TSYNC_EIO;
    if (table) sqlite3_bind_text(st, 1, table, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (np == pcap) {
            pcap = pcap ? pcap * 2 : 256;
            struct pref *n = realloc(pl, pcap * sizeof *n);
            if (!n) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            pl = n;
        }
        struct pref *p = &pl[np++];
        p->e.id = sqlite3_column_int64(st, 0);
        p->site = (uint32_t)sqlite3_column_int64(st, 1);
        p->seq = (uint64_t)sqlite3_column_int64(st, 2);
        int64_t row = sqlite3_column_int64(st, 3);
        p->e.row = row >= 0 && row < UINT32_MAX ? (uint32_t)row : UINT32_MAX;
        p->e.col = NULL;
        if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
            size_t n = (size_t)sqlite3_column_bytes(st, 4);
            if (!(p->e.col = tsync__arena_alloc(&c.a, n + 1))) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            memcpy(p->e.col, sqlite3_column_text(st, 4), n);
        }
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read parked changes");
    sqlite3_reset(st);
    if (rc || np == 0) { /* switching capture expires every statement: not for nothing */
        free(pl);
        ctx_free(&c);
        return rc;
    }

    int64_t *done = NULL;
    size_t ndone = 0, donecap = 0;
    parked_ent *ents = malloc(np * sizeof *ents);
    char err[TSYNC__ERRLEN];
    rc = ents ? load_sites(&c) : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) rc = tsync__capture_off(s, 1);
    for (size_t i = 0, j; rc == 0 && i < np; i = j) {
        size_t nents = 0;
        for (j = i; j < np && pl[j].site == pl[i].site && pl[j].seq == pl[i].seq; j++)
            ents[nents++] = pl[j].e;
        inbatch ib;
        memset(&ib, 0, sizeof ib);
        ib.site = pl[i].site;
        ib.seq = pl[i].seq;
        if (!(st = tsync__prep(s, "SELECT body FROM tsync_log WHERE site=?1 AND seq=?2"))) {
            rc = TSYNC_EIO;
            break;
        }
        sqlite3_bind_int64(st, 1, ib.site);
        sqlite3_bind_int64(st, 2, (int64_t)ib.seq);
        int found = sqlite3_step(st) == SQLITE_ROW;
        if (found) {
            ib.body_len = (size_t)sqlite3_column_bytes(st, 0);
            uint8_t *body = tsync__arena_alloc(&c.a, ib.body_len + 1);
            if (body) memcpy(body, sqlite3_column_blob(st, 0), ib.body_len);
            ib.body = body;
        }
        sqlite3_reset(st);
        if (!found) continue;
        if (!ib.body) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        /* A body that no longer decodes cannot be applied; its changes stay parked and shown. */
        if (tsync__batch_decode(ib.body, ib.body_len, &ib.b, &c.a, err) != 0) continue;
        rc = unpark_batch(&c, &ib, ents, nents, &done, &ndone, &donecap);
    }
    if (rc == 0) rc = flush_rows(&c);
    for (size_t i = 0; rc == 0 && i < ndone; i++) {
        if (!(st = tsync__prep(s, "DELETE FROM tsync_parked WHERE id=?1"))) {
            rc = TSYNC_EIO;
            break;
        }
        sqlite3_bind_int64(st, 1, done[i]);
        step = sqlite3_step(st);
        sqlite3_reset(st);
        if (step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "clear parked change");
    }
    tsync__capture_off(s, 0); /* also after a failure: capture must come back on */
    ctx_free(&c);
    free(ents);
    free(done);
    free(pl);
    return rc;
}
