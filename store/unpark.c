/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/unpark.c — re-applying parked changes once the schema has caught up.
 *
 * A parked change is a row of a batch kept in the log (tsync_parked: origin, seq, row index) for
 * a table this database did not replicate (col NULL: the whole row) or a column it lacked (col
 * set: that column of the row; the rest of the row applied when it arrived). Once the schema
 * has caught up, the change is applied as if it arrived now with its own clocks: fields by LWW
 * against whatever this till wrote meanwhile, counters by pointwise max of the origin's absolute
 * P and N, so late application gives the result early application would have.
 */
#include <stdlib.h>
#include <string.h>

#include "merge_int.h"

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
    const tsync__batch *b = ib->full;
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
                    (rc = tsync_merge__park(c, ib->site, ib->seq, e->row, bt->name, bt->name_len,
                                            bt->cols[bc], bt->col_len[bc], "no such column here")))
                    return rc;
            }
            for (uint32_t k = 0; k < br->nctrs; k++) {
                uint32_t bc = br->ctrs[k].col;
                if (map[bc] < 0 &&
                    (rc = tsync_merge__park(c, ib->site, ib->seq, e->row, bt->name, bt->name_len,
                                            bt->cols[bc], bt->col_len[bc],
                                            "no such counter column here")))
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
    tsync__batch fb = *b;
    fib.full = &fb;
    fb.nrows = 0;
    fb.rows = tsync__arena_alloc(&c->a, (b->nrows ? b->nrows : 1) * sizeof *rows);
    if (!fb.rows) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t r = 0; r < b->nrows; r++)
        if (how[r]) fb.rows[fb.nrows++] = rows[r];
    for (uint32_t ti = 0; ti < b->ntables; ti++) {
        int used = 0;
        for (uint32_t r = 0; r < fb.nrows && !used; r++) used = fb.rows[r].table == ti;
        if (!used) continue;
        tsync__table *t = tsync__table_by_name(s, b->tables[ti].name, b->tables[ti].name_len);
        c->unpark_blocked = 0;
        if ((rc = tsync_merge__apply_batch(c, &fib, t->name, NULL, 0))) return rc;
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
    tsync_merge__init(&c, s, NULL);
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
        tsync_merge__free(&c);
        return rc;
    }

    int64_t *done = NULL;
    size_t ndone = 0, donecap = 0;
    parked_ent *ents = malloc(np * sizeof *ents);
    char err[TSYNC__ERRLEN];
    rc = ents ? tsync_merge__load_sites(&c) : tsync__err(TSYNC_ENOMEM, "out of memory");
    if (rc == 0) rc = tsync__capture_off(s, 1);
    for (size_t i = 0, j; rc == 0 && i < np; i = j) {
        size_t nents = 0;
        for (j = i; j < np && pl[j].site == pl[i].site && pl[j].seq == pl[i].seq; j++)
            ents[nents++] = pl[j].e;
        inbatch ib;
        memset(&ib, 0, sizeof ib);
        ib.site = pl[i].site;
        ib.seq = pl[i].seq;
        if (!(st = tsync__prep(s, "SELECT tsync_log_body(site, seq, body) FROM tsync_log WHERE "
                                  "site=?1 AND seq=?2"))) {
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
        tsync__batch b;
        if (tsync__batch_decode(ib.body, ib.body_len, &b, &c.a, err) != 0) continue;
        ib.full = &b;
        rc = unpark_batch(&c, &ib, ents, nents, &done, &ndone, &donecap);
    }
    if (rc == 0) rc = tsync_merge__flush_rows(&c);
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
    tsync_merge__free(&c);
    free(ents);
    free(done);
    free(pl);
    return rc;
}
