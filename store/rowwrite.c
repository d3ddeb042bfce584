/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/rowwrite.c — the one writer of merged rows into the app's tables (store/rowwrite_int.h):
 * both merges, of batches (store/merge_apply.c) and of snapshots (store/snapshot_import.c), decide
 * a row's clocks and winning values their own way, then hand the row here to be written, so both
 * leave the same rows, tombstones, conflict records and parked rows.
 *
 * Design notes
 * - A row that exists after the merge is updated in place, inserted, or resurrected from its
 *   tombstone (the tombstone keeps the latest value of every column ever written, so a row
 *   deleted and then written again shows the latest of each field); a row that no longer exists
 *   moves to its tombstone. Then its clocks are written.
 * - Statements are prepared once per table, kind and column set, and kept for the writer's life:
 *   a merge of 100k rows of one table prepares a handful.
 * - Parameters: the key is ?1..?npk (as t->pk_where names it), the value of column c is
 *   ?(VAL0 + c), whatever the statement.
 * - A local constraint the app added (a unique index after replicate, a STRICT type) refuses a
 *   row: the row is parked with the reason, its clocks are kept, and the merge goes on.
 */
#include <jansson.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "rowwrite_int.h"

#define MAX_MESSAGES 64

/* ---------------------------------------------------------------- the report */

void tsync__report_add(tsync_merge_report *r, const char *msg)
{
    if (!r || r->nmessages >= MAX_MESSAGES) return;
    char **nm = realloc(r->messages, (r->nmessages + 1) * sizeof *nm);
    if (!nm) return;
    r->messages = nm;
    r->messages[r->nmessages] =
        strdup(r->nmessages == MAX_MESSAGES - 1 ? "(further messages omitted)" : msg);
    if (r->messages[r->nmessages]) r->nmessages++;
}

void tsync__report_vmsg(tsync_merge_report *r, char *buf, const char *fmt, va_list ap)
{
    vsnprintf(buf, TSYNC__REPORT_LINE, fmt, ap);
    tsync__utf8_trim(buf);
    tsync__report_add(r, buf);
}

void tsync__report_msg(tsync_merge_report *r, const char *fmt, ...)
{
    if (!r || r->nmessages >= MAX_MESSAGES) return;
    char buf[TSYNC__REPORT_LINE];
    va_list ap;
    va_start(ap, fmt);
    tsync__report_vmsg(r, buf, fmt, ap);
    va_end(ap);
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

/* ---------------------------------------------------------------- keys as JSON */

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

/* ---------------------------------------------------------------- statements */

enum { K_UPD_ROW, K_INS_ROW, K_UPD_TOMB, K_INS_TOMB, K_RES_ROW, K_KEEP_TOMB, K_DEL_ROW };

#define VAL0 (TSYNC__MAX_PK_COLS + 1)

struct tsync__wstmt {
    int tbl, kind;
    uint64_t mask, mask2;
    sqlite3_stmt *st;
};

void tsync__rw_free(tsync__rowwriter *w)
{
    for (size_t i = 0; i < w->nstmts; i++) sqlite3_finalize(w->stmts[i].st);
    free(w->stmts);
    free(w->mbuf);
    w->stmts = NULL;
    w->nstmts = 0;
    w->mbuf = NULL;
    w->mcap = 0;
}

static void ident(sqlite3_str *q, const char *name)
{
    tsync__sql_ident(q, NULL, name);
}

/* The SQL of a statement kind. mask: the columns it writes; mask2 (K_RES_ROW only): those of
 * them whose value is a parameter rather than the tombstone's. */
static void stmt_sql(sqlite3_str *q, const tsync__table *t, int kind, uint64_t mask, uint64_t mask2)
{
    switch (kind) {
    case K_UPD_ROW:
    case K_UPD_TOMB: {
        sqlite3_str_appendf(q, "UPDATE %s SET ", kind == K_UPD_ROW ? t->qname : t->qtomb);
        int first = 1;
        for (int c = 0; c < t->ncols; c++)
            if (mask >> c & 1) {
                if (!first) sqlite3_str_appendall(q, ",");
                ident(q, t->cols[c]);
                sqlite3_str_appendf(q, "=?%d", VAL0 + c);
                first = 0;
            }
        sqlite3_str_appendf(q, " WHERE %s", t->pk_where);
        break;
    }
    case K_INS_TOMB:
        /* the key only: the rest comes from K_UPD_TOMB */
        sqlite3_str_appendf(q, "INSERT OR IGNORE INTO %s(", t->qtomb);
        for (int i = 0; i < t->npk; i++) {
            if (i) sqlite3_str_appendall(q, ",");
            ident(q, t->cols[t->pk[i]]);
        }
        sqlite3_str_appendall(q, ") VALUES(");
        for (int i = 0; i < t->npk; i++) sqlite3_str_appendf(q, "%s?%d", i ? "," : "", i + 1);
        sqlite3_str_appendall(q, ")");
        break;
    case K_INS_ROW:
    case K_RES_ROW:
        /* A resurrected row takes the key and the columns ever written from its tombstone
         * (mask), this merge's values and the counters' totals as parameters (mask2); columns
         * never written take their DEFAULT, as in a fresh insert. */
        sqlite3_str_appendf(q, "INSERT INTO %s(", t->qname);
        for (int i = 0; i < t->npk; i++) {
            if (i) sqlite3_str_appendall(q, ",");
            ident(q, t->cols[t->pk[i]]);
        }
        for (int c = 0; c < t->ncols; c++)
            if (!t->is_pk[c] && (mask >> c & 1)) {
                sqlite3_str_appendall(q, ",");
                ident(q, t->cols[c]);
            }
        sqlite3_str_appendall(q, kind == K_INS_ROW ? ") VALUES(" : ") SELECT ");
        for (int i = 0; i < t->npk; i++) {
            if (i) sqlite3_str_appendall(q, ",");
            if (kind == K_INS_ROW)
                sqlite3_str_appendf(q, "?%d", i + 1);
            else
                ident(q, t->cols[t->pk[i]]);
        }
        for (int c = 0; c < t->ncols; c++)
            if (!t->is_pk[c] && (mask >> c & 1)) {
                sqlite3_str_appendall(q, ",");
                if (kind == K_INS_ROW || (mask2 >> c & 1))
                    sqlite3_str_appendf(q, "?%d", VAL0 + c);
                else
                    ident(q, t->cols[c]);
            }
        if (kind == K_INS_ROW)
            sqlite3_str_appendall(q, ")");
        else
            sqlite3_str_appendf(q, " FROM %s WHERE %s", t->qtomb, t->pk_where);
        break;
    case K_KEEP_TOMB:
        sqlite3_str_appendf(q, "INSERT OR REPLACE INTO %s(%s) SELECT %s FROM %s WHERE %s", t->qtomb,
                            t->all_cols, t->all_cols, t->qname, t->pk_where);
        break;
    default:
        sqlite3_str_appendf(q, "DELETE FROM %s WHERE %s", t->qname, t->pk_where);
        break;
    }
}

static int stmt_for(tsync__rowwriter *w, tsync__table *t, int kind, uint64_t mask, uint64_t mask2,
                    sqlite3_stmt **out)
{
    for (size_t i = 0; i < w->nstmts; i++)
        if (w->stmts[i].tbl == t->id && w->stmts[i].kind == kind && w->stmts[i].mask == mask &&
            w->stmts[i].mask2 == mask2) {
            *out = w->stmts[i].st;
            return 0;
        }
    sqlite3_str *q = sqlite3_str_new(w->s->db);
    stmt_sql(q, t, kind, mask, mask2);
    char *sql = tsync__sql_finish(q);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(w->s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    /* TSYNC_EIO, as both merges returned when a statement of theirs did not prepare */
    if (rc != SQLITE_OK)
        return tsync__err(TSYNC_EIO, "prepare row statement: %s", sqlite3_errmsg(w->s->db));
    tsync__wstmt *ns = realloc(w->stmts, (w->nstmts + 1) * sizeof *ns);
    if (!ns) {
        sqlite3_finalize(st);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    w->stmts = ns;
    w->stmts[w->nstmts++] = (tsync__wstmt){t->id, kind, mask, mask2, st};
    *out = st;
    return 0;
}

/* ---------------------------------------------------------------- reading the row */

static int step_done(tsync_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, rc, what);
}

/* Resets st and binds the row's key to ?1..?npk. */
static int bind_key(sqlite3_stmt *st, const tsync__wrow *r)
{
    const tsync__table *t = r->t;
    sqlite3_reset(st);
    if (r->pk) {
        for (int i = 0; i < t->npk; i++) tsync__bind_val(st, i + 1, &r->pk[i]);
        return 0;
    }
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(r->key, r->klen, kv, t->npk) != 0)
        return tsync__err(TSYNC_ECORRUPT, "bad row key in %s", t->name);
    for (int i = 0; i < t->npk; i++) tsync__bind_val(st, i + 1, &kv[i]);
    return 0;
}

static void bind_vals(sqlite3_stmt *st, const tsync__wrow *r, uint64_t mask)
{
    for (int c = 0; c < r->t->ncols; c++)
        if (mask >> c & 1) tsync__bind_val(st, VAL0 + c, &r->vals[c]);
}

/* Whether the statement (keyed by ?1..?npk) finds the row. */
static int row_in(tsync_store *s, sqlite3_stmt *st, const tsync__wrow *r, int *out)
{
    int rc = bind_key(st, r);
    if (rc) return rc;
    int x = sqlite3_step(st);
    *out = x == SQLITE_ROW;
    sqlite3_reset(st);
    return x == SQLITE_ROW || x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "read row");
}

int tsync__rw_load(tsync_store *s, tsync__wrow *r)
{
    int rc = tsync__load_meta(s, r->t, r->key, r->klen, &r->meta, &r->had_meta);
    if (rc == 0 && r->had_meta) rc = row_in(s, r->t->exists_row, r, &r->existed);
    return rc;
}

int tsync__rw_current(tsync__rowwriter *w, tsync__wrow *r, int col, tsync__val *out,
                      sqlite3_stmt **owner)
{
    *owner = NULL;
    memset(out, 0, sizeof *out);
    if (r->mask & (1ULL << col)) {
        *out = r->vals[col];
        return 0;
    }
    sqlite3_stmt *st = r->existed ? r->t->get_row : r->t->get_tomb;
    int rc = bind_key(st, r);
    if (rc) return rc;
    int x = sqlite3_step(st);
    if (x == SQLITE_ROW) {
        tsync__col_val(st, col, out);
        *owner = st;
        return 0;
    }
    sqlite3_reset(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(w->s->db, x, "read row");
}

int tsync__rw_pick(tsync__rowwriter *w, tsync__wrow *r, int col, const tsync__val *v, tsync__hlc h,
                   const uint8_t *site, const uint8_t *cur_site, int *cmp)
{
    tsync__colclk cur = r->meta.col[col];
    int policy = r->t->policy[col];
    int reg = policy == TSYNC__POLICY_MAX || policy == TSYNC__POLICY_MIN;
    *cmp = 1;
    if (cur.hlc == 0) return 0;
    if (!reg) *cmp = tsync__lww_cmp(h, site, cur.hlc, cur_site);
    if (*cmp && !reg) return 0;
    tsync__val cv;
    sqlite3_stmt *owner;
    int rc = tsync__rw_current(w, r, col, &cv, &owner);
    if (rc) return rc;
    if (reg) *cmp = tsync__reg_pick(policy, v, h, site, &cv, cur.hlc, cur_site);
    /* Same clock and site: only two branches of a fork do that. */
    if (*cmp == 0) *cmp = tsync__val_cmp(v, &cv);
    if (owner) sqlite3_reset(owner);
    return 0;
}

/* ---------------------------------------------------------------- conflicts and parked rows */

int tsync__rw_conflict(tsync__rowwriter *w, tsync__wrow *r, int col, const tsync__val *remote,
                       tsync__hlc rhlc, const uint8_t *rsite, const uint8_t *local_site,
                       int remote_wins, uint64_t now_ms)
{
    tsync_store *s = w->s;
    tsync__val cur;
    sqlite3_stmt *owner;
    int rc = tsync__rw_current(w, r, col, &cur, &owner);
    if (rc) return rc;
    sqlite3_stmt *st =
        tsync__prep(s, "INSERT INTO tsync_conflicts(at_ms, tbl, pk, col, win_val, "
                       "win_hlc, win_site, lose_val, lose_hlc, lose_site, cid, "
                       "key, kind) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13)");
    if (!st) {
        if (owner) sqlite3_reset(owner);
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "record conflict");
    }
    char *pk = tsync__key_json(r->key, r->klen, r->t->npk);
    const tsync__val *wv = remote_wins ? remote : &cur, *lv = remote_wins ? &cur : remote;
    tsync__hlc lh = r->meta.col[col].hlc;
    const uint8_t *ws = remote_wins ? rsite : local_site, *ls = remote_wins ? local_site : rsite;
    sqlite3_bind_int64(st, 1, (int64_t)now_ms);
    sqlite3_bind_text(st, 2, r->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pk ? pk : "[]", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, r->t->cols[col], -1, SQLITE_STATIC);
    tsync__bind_val(st, 5, wv);
    sqlite3_bind_int64(st, 6, (int64_t)(remote_wins ? rhlc : lh));
    if (ws) sqlite3_bind_blob(st, 7, ws, TSYNC__SITE_BYTES, SQLITE_TRANSIENT);
    tsync__bind_val(st, 8, lv);
    sqlite3_bind_int64(st, 9, (int64_t)(remote_wins ? lh : rhlc));
    if (ls) sqlite3_bind_blob(st, 10, ls, TSYNC__SITE_BYTES, SQLITE_TRANSIENT);
    /* The identity every till that meets this collision gives it (store/conflicts.c). */
    uint8_t cid[TSYNC__CID_BYTES];
    tsync__conflict_id(cid, r->t->name, r->key, r->klen, r->t->cols[col], rhlc, rsite, lh,
                       local_site);
    sqlite3_bind_blob(st, 11, cid, sizeof cid, SQLITE_TRANSIENT);
    sqlite3_bind_blob(st, 12, r->key, (int)r->klen, SQLITE_TRANSIENT);
    sqlite3_bind_int(st, 13, r->t->policy[col] == TSYNC__POLICY_REVIEW);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (owner) sqlite3_reset(owner);
    free(pk);
    if (w->rep) w->rep->conflicts++;
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "record conflict");
}

int tsync__rw_park(tsync__rowwriter *w, uint32_t site, uint64_t seq, uint32_t row, const char *tbl,
                   size_t tlen, const char *col, size_t clen, const char *reason)
{
    sqlite3_stmt *st = tsync__prep(w->s, "INSERT INTO tsync_parked(site, seq, row, tbl, col, "
                                         "reason) VALUES(?1,?2,?3,?4,?5,?6)");
    if (!st) return tsync__err_sqlite(w->s->db, SQLITE_ERROR, "park change");
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    sqlite3_bind_int64(st, 3, row);
    sqlite3_bind_text(st, 4, tbl, (int)tlen, SQLITE_STATIC);
    if (col) sqlite3_bind_text(st, 5, col, (int)clen, SQLITE_STATIC);
    sqlite3_bind_text(st, 6, reason, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(w->s->db, rc, "park change");
    if (w->rep) w->rep->parked++;
    if (seq == 0) {
        /* a row this database could not write (a local constraint); its clocks are kept */
        tsync__report_msg(w->rep, "parked: a row of %.*s could not be written here: %s", (int)tlen,
                          tbl, reason);
        return 0;
    }
    tsync__report_msg(w->rep, "parked: %s %.*s%s%.*s from batch %llu: %s", col ? "column" : "table",
                      (int)tlen, tbl, col ? "." : "", (int)(col ? clen : 0), col ? col : "",
                      (unsigned long long)seq, reason);
    return 0;
}

/* ---------------------------------------------------------------- writing the row */

/* Runs a statement that writes a row of the app's table. Returns 0 when written, 1 when a local
 * constraint refused it and it was parked, -1 on error (*rc). */
static int step_row(tsync__rowwriter *w, tsync__wrow *r, sqlite3_stmt *st, const char *what,
                    int *rc)
{
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    if (x == SQLITE_DONE || x == SQLITE_ROW) return 0;
    if ((x & 0xff) != SQLITE_CONSTRAINT && (x & 0xff) != SQLITE_MISMATCH) {
        *rc = tsync__err_sqlite(w->s->db, x, what);
        return -1;
    }
    char *key = tsync__key_json(r->key, r->klen, r->t->npk);
    char reason[300];
    snprintf(reason, sizeof reason, "%s %s: %s", what, key ? key : "?", sqlite3_errmsg(w->s->db));
    free(key);
    *rc = tsync__rw_park(w, 0, 0, UINT32_MAX, r->t->name, strlen(r->t->name), NULL, 0, reason);
    return *rc ? -1 : 1;
}

int tsync__rw_write(tsync__rowwriter *w, tsync__wrow *r)
{
    tsync_store *s = w->s;
    tsync__table *t = r->t;
    int rc = 0, exists = tsync__orset_exists(r->meta.exist, r->meta.nexist);
    uint64_t mask = r->mask;
    sqlite3_stmt *st;
    if (exists && r->existed) {
        if (mask) {
            if ((rc = stmt_for(w, t, K_UPD_ROW, mask, 0, &st)) || (rc = bind_key(st, r))) return rc;
            bind_vals(st, r, mask);
            if (step_row(w, r, st, "update row", &rc)) goto meta;
        }
    } else if (exists) {
        /* New here, or resurrected: start from the tombstone's values if there are any. */
        int tomb = 0;
        if (r->had_meta && (rc = row_in(s, t->get_tomb, r, &tomb))) return rc;
        if (tomb) {
            /* The tombstone has a value for every column written before; this merge's values
             * and every counter's current total come as parameters (a counter column of a
             * tombstone made from a partial change can be NULL). */
            uint64_t known = 0, params = mask;
            for (int c = 0; c < t->ncols; c++) {
                if (t->is_pk[c]) continue;
                if (t->is_counter[c] && tsync__rowmeta_ctr(&r->meta, c)) {
                    r->vals[c] = (tsync__val){.type = TSYNC__V_INT,
                                              .i = tsync__rowmeta_ctr_value(&r->meta, c)};
                    params |= 1ULL << c;
                }
                if (r->meta.col[c].hlc || tsync__rowmeta_ctr(&r->meta, c)) known |= 1ULL << c;
            }
            known |= params;
            if ((rc = stmt_for(w, t, K_RES_ROW, known, params, &st)) || (rc = bind_key(st, r)))
                return rc;
            bind_vals(st, r, params);
            if (step_row(w, r, st, "resurrect row", &rc)) goto meta;
            if ((rc = bind_key(t->del_tomb, r))) return rc;
            if ((rc = step_done(s, t->del_tomb, "clear tombstone"))) return rc;
        } else {
            if ((rc = stmt_for(w, t, K_INS_ROW, mask, 0, &st)) || (rc = bind_key(st, r))) return rc;
            bind_vals(st, r, mask);
            if (step_row(w, r, st, "insert row", &rc)) goto meta;
        }
    } else {
        if (r->existed) {
            /* Keep the values so a later resurrection shows the latest of each field. */
            if ((rc = stmt_for(w, t, K_KEEP_TOMB, 0, 0, &st)) || (rc = bind_key(st, r)) ||
                (rc = step_done(s, st, "keep tombstone")))
                return rc;
            if ((rc = stmt_for(w, t, K_DEL_ROW, 0, 0, &st)) || (rc = bind_key(st, r)) ||
                (rc = step_done(s, st, "delete row")))
                return rc;
        } else if (mask) {
            if ((rc = stmt_for(w, t, K_INS_TOMB, 0, 0, &st)) || (rc = bind_key(st, r)) ||
                (rc = step_done(s, st, "keep tombstone")))
                return rc;
        }
        if (mask) {
            if ((rc = stmt_for(w, t, K_UPD_TOMB, mask, 0, &st)) || (rc = bind_key(st, r)))
                return rc;
            bind_vals(st, r, mask);
            if ((rc = step_done(s, st, "update tombstone"))) return rc;
        }
    }
meta:
    if (rc) return rc;
    return tsync__put_meta(s, t, r->key, r->klen, &r->meta, &w->mbuf, &w->mcap, r->had_meta);
}
