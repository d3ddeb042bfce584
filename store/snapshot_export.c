/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/snapshot_export.c — this replica's state as snapshot chunks (store/snapshot.h; the byte
 * format is codec/snapshot.h's, docs/SNAPSHOT.md).
 *
 * Design notes
 * - A snapshot is state, not history: per row its key, the existence OR-set, the LWW clock and
 *   value of every column ever written and each counter's per-site P and N.
 * - Clock metadata names sites by their local index in tsync_sites; a chunk names them by an index
 *   into its own site table, which carries the site id (and key and incarnation when known), so a
 *   chunk decodes on its own and the receiver maps sites by id.
 * - Export reads everything in one read transaction, after sealing, so the rows, their clocks and
 *   the version vector returned are one consistent state. Chunks are built a row at a time and
 *   cut before they pass the size asked for: memory is one chunk, whatever the table size.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "collect_int.h"
#include "snapshot_int.h"
#include "store/sync.h"

int tsync_snap__load_sites(tsync_store *s, lsite **out, uint32_t *n)
{
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = tsync__prep(s, "SELECT idx, site, pk, inc, seq, frozen_seq FROM tsync_sites "
                                      "ORDER BY idx");
    if (!st) return TSYNC_EIO;
    int rc = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(st, 0);
        if (idx < 0 || idx >= INT32_MAX || sqlite3_column_bytes(st, 1) != TSYNC__SITE_BYTES)
            continue;
        if ((uint32_t)idx >= *n) {
            uint32_t nn = (uint32_t)idx + 16;
            lsite *ns = realloc(*out, nn * sizeof *ns);
            if (!ns) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            memset(ns + *n, 0, (nn - *n) * sizeof *ns);
            *out = ns;
            *n = nn;
        }
        lsite *l = &(*out)[idx];
        l->known = 1;
        memcpy(l->id, sqlite3_column_blob(st, 1), TSYNC__SITE_BYTES);
        l->seq = (uint64_t)sqlite3_column_int64(st, 4);
        l->frozen = sqlite3_column_type(st, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(st, 5);
        if (sqlite3_column_bytes(st, 2) == TSYNC__PK_BYTES &&
            sqlite3_column_bytes(st, 3) == TSYNC__INC_BYTES) {
            l->has_key = 1;
            memcpy(l->pk, sqlite3_column_blob(st, 2), TSYNC__PK_BYTES);
            memcpy(l->inc, sqlite3_column_blob(st, 3), TSYNC__INC_BYTES);
        }
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read sites");
    sqlite3_reset(st);
    return rc;
}

/* The chunk being built. */
typedef struct {
    tsync_store *s;
    size_t budget;
    int (*emit)(void *, const uint8_t *, size_t);
    void *ctx;
    int emit_rc; /* emit's own value, returned as is */
    tsync__arena a;
    lsite *ls;
    uint32_t nls;
    uint32_t *smap;   /* local site index -> chunk site index + 1 (0: not in this chunk) */
    uint32_t *slocal; /* chunk site index -> local site index */
    tsync__snap_chunk c;
    uint32_t sitecap, tablecap, rowcap;
    int *tmap; /* local table (position in s->tables) -> chunk table index + 1 */
    int *tlocal;
    size_t sz_sites, sz_tables, sz_rows;
    size_t nchunks;
    /* the row being added, with local site indexes */
    tsync__snap_row draft;
    tsync__snap_exist *dex;
    size_t dexcap;
    tsync__snap_col *dcol;
    tsync__snap_ctr *dctr;
    tsync__snap_pn *dpn;
    size_t dpncap;
} exporter;

static size_t chunk_size(const exporter *x)
{
    return tsync__snap_head_size(x->c.nsites, x->c.ntables, x->c.nrows) + x->sz_sites +
           x->sz_tables + x->sz_rows + tsync__snap_front_size(x->c.front, x->c.nfront);
}

/* Adds local site l to the chunk's sites (once); returns its chunk index, or UINT32_MAX. */
static uint32_t ex_site(exporter *x, uint32_t l)
{
    if (x->smap[l]) return x->smap[l] - 1;
    if (x->c.nsites == x->sitecap) {
        uint32_t nc = x->sitecap ? x->sitecap * 2 : 16;
        tsync__snap_site *ns = realloc(x->c.sites, nc * sizeof *ns);
        if (!ns) return UINT32_MAX;
        x->c.sites = ns;
        uint32_t *nl = realloc(x->slocal, nc * sizeof *nl);
        if (!nl) return UINT32_MAX;
        x->slocal = nl;
        x->sitecap = nc;
    }
    tsync__snap_site *e = &x->c.sites[x->c.nsites];
    memset(e, 0, sizeof *e);
    memcpy(e->site, x->ls[l].id, TSYNC__SITE_BYTES);
    if (x->ls[l].has_key) {
        e->has_key = 1;
        memcpy(e->pk, x->ls[l].pk, TSYNC__PK_BYTES);
        memcpy(e->inc, x->ls[l].inc, TSYNC__INC_BYTES);
    }
    x->sz_sites += tsync__snap_site_size(e);
    x->slocal[x->c.nsites] = l;
    x->smap[l] = ++x->c.nsites;
    return x->c.nsites - 1;
}

/* Adds table ti (position in s->tables) to the chunk; returns its chunk index or -1. The chunk
 * lists the key columns first, in key order, then the others in ordinal order (as a batch
 * does); ord2b maps a local ordinal to that position. */
static int ex_table(exporter *x, int ti, const int *ord2b)
{
    if (x->tmap[ti]) return x->tmap[ti] - 1;
    tsync__table *t = &x->s->tables[ti];
    if (x->c.ntables == x->tablecap) {
        uint32_t nc = x->tablecap ? x->tablecap * 2 : 4;
        tsync__btable *nt = realloc(x->c.tables, nc * sizeof *nt);
        if (!nt) return -1;
        x->c.tables = nt;
        int *nl = realloc(x->tlocal, nc * sizeof *nl);
        if (!nl) return -1;
        x->tlocal = nl;
        x->tablecap = nc;
    }
    tsync__btable *b = &x->c.tables[x->c.ntables];
    memset(b, 0, sizeof *b);
    b->name = t->name;
    b->name_len = (uint32_t)strlen(t->name);
    b->ncols = (uint32_t)t->ncols;
    b->npk = (uint32_t)t->npk;
    b->cols = tsync__arena_alloc(&x->a, (size_t)t->ncols * sizeof *b->cols);
    b->col_len = tsync__arena_alloc(&x->a, (size_t)t->ncols * sizeof *b->col_len);
    b->counters = tsync__arena_alloc(&x->a, (size_t)t->ncols * sizeof *b->counters);
    b->policy_cols = tsync__arena_alloc(&x->a, (size_t)t->ncols * sizeof *b->policy_cols);
    b->policies = tsync__arena_alloc(&x->a, (size_t)t->ncols);
    if (!b->cols || !b->col_len || !b->counters || !b->policy_cols || !b->policies) return -1;
    for (int c = 0; c < t->ncols; c++) {
        b->cols[ord2b[c]] = t->cols[c];
        b->col_len[ord2b[c]] = (uint32_t)strlen(t->cols[c]);
    }
    for (uint32_t k = 0; k < b->ncols; k++) /* ascending chunk index */
        for (int c = 0; c < t->ncols; c++)
            if (ord2b[c] == (int)k && t->is_counter[c]) b->counters[b->ncounters++] = k;
    for (uint32_t k = 0; k < b->ncols; k++) /* the column policies, likewise */
        for (int c = 0; c < t->ncols; c++)
            if (ord2b[c] == (int)k && t->policy[c]) {
                b->policy_cols[b->npolicies] = k;
                b->policies[b->npolicies++] = t->policy[c];
            }
    x->sz_tables += tsync__snap_table_size(b);
    x->tlocal[x->c.ntables] = ti;
    x->tmap[ti] = (int)++x->c.ntables;
    return (int)x->c.ntables - 1;
}

static void ex_reset(exporter *x)
{
    for (uint32_t i = 0; i < x->c.nsites; i++) x->smap[x->slocal[i]] = 0;
    for (uint32_t i = 0; i < x->c.ntables; i++) x->tmap[x->tlocal[i]] = 0;
    x->c.nsites = x->c.ntables = x->c.nrows = x->c.nfront = 0; /* the frontier: first chunk only */
    x->sz_sites = x->sz_tables = x->sz_rows = 0;
    tsync__arena_free(&x->a);
}

static int ex_flush(exporter *x)
{
    uint8_t *buf;
    size_t len;
    size_t want = chunk_size(x);
    int rc = tsync__snap_encode(&x->c, &buf, &len);
    if (rc) return rc;
    if (len != want) {
        free(buf);
        return tsync__err(TSYNC_ERROR, "internal: snapshot chunk is %zu bytes, %zu expected", len,
                          want);
    }
    rc = x->emit(x->ctx, buf, len);
    free(buf);
    x->nchunks++;
    if (rc) {
        x->emit_rc = rc;
        return rc;
    }
    ex_reset(x);
    return 0;
}

static void *arena_copy(tsync__arena *a, const void *p, size_t n)
{
    void *d = tsync__arena_alloc(a, n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

/* Copies a value's bytes into the arena (they point into a statement row). */
static int keep_val(tsync__arena *a, tsync__val *v)
{
    if (v->type == TSYNC__V_TEXT || v->type == TSYNC__V_BLOB) {
        v->p = arena_copy(a, v->p, v->n);
        if (!v->p) return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    return 0;
}

/* Moves the draft (local site indexes) into the chunk: cuts the chunk first when the row would
 * take it past the budget. */
static int ex_add(exporter *x, int ti, const int *ord2b, const char *what)
{
    for (int attempt = 0;; attempt++) {
        uint32_t ns0 = x->c.nsites, nt0 = x->c.ntables;
        size_t szs0 = x->sz_sites, szt0 = x->sz_tables;
        int tb = ex_table(x, ti, ord2b);
        if (tb < 0) return tsync__err(TSYNC_ENOMEM, "out of memory");
        tsync__snap_row *d = &x->draft;
        d->table = (uint32_t)tb;
        /* translate sites into chunk indexes in a copy, so a cut can start again from the draft
         */
        tsync__snap_row r = *d;
        tsync__snap_exist *ex = tsync__arena_alloc(&x->a, (d->nexist + 1) * sizeof *ex);
        tsync__snap_col *co = tsync__arena_alloc(&x->a, (d->ncols + 1) * sizeof *co);
        tsync__snap_ctr *ct = tsync__arena_alloc(&x->a, (d->nctrs + 1) * sizeof *ct);
        if (!ex || !co || !ct) return tsync__err(TSYNC_ENOMEM, "out of memory");
        for (uint32_t k = 0; k < d->nexist; k++) {
            ex[k] = d->exist[k];
            if ((ex[k].site = ex_site(x, d->exist[k].site)) == UINT32_MAX)
                return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
        for (uint32_t k = 0; k < d->ncols; k++) {
            co[k] = d->cols[k];
            if ((co[k].site = ex_site(x, d->cols[k].site)) == UINT32_MAX)
                return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
        for (uint32_t k = 0; k < d->nctrs; k++) {
            ct[k] = d->ctrs[k];
            ct[k].v = tsync__arena_alloc(&x->a, ct[k].n * sizeof *ct[k].v);
            if (!ct[k].v) return tsync__err(TSYNC_ENOMEM, "out of memory");
            for (uint32_t j = 0; j < ct[k].n; j++) {
                ct[k].v[j] = d->ctrs[k].v[j];
                if ((ct[k].v[j].site = ex_site(x, d->ctrs[k].v[j].site)) == UINT32_MAX)
                    return tsync__err(TSYNC_ENOMEM, "out of memory");
            }
        }
        r.exist = ex;
        r.cols = co;
        r.ctrs = ct;
        size_t rs = tsync__snap_row_size(&r, (uint32_t)x->s->tables[ti].npk);
        size_t total = chunk_size(x) + rs +
                       (tsync__mp_array_size(x->c.nrows + 1) - tsync__mp_array_size(x->c.nrows));
        if (x->c.nrows > 0 && total > x->budget && attempt == 0) {
            /* undo this row's dictionary entries, send the chunk, start a new one */
            for (uint32_t i = ns0; i < x->c.nsites; i++) x->smap[x->slocal[i]] = 0;
            for (uint32_t i = nt0; i < x->c.ntables; i++) x->tmap[x->tlocal[i]] = 0;
            x->c.nsites = ns0;
            x->c.ntables = nt0;
            x->sz_sites = szs0;
            x->sz_tables = szt0;
            int rc = ex_flush(x);
            if (rc) return rc;
            continue;
        }
        if (total > TSYNC__SNAP_CHUNK_MAX_BYTES)
            return tsync__err(TSYNC_EUNSUPPORTED,
                              "snapshot: row %s takes %zu bytes, more than a chunk may hold (%u)",
                              what, rs, (unsigned)TSYNC__SNAP_CHUNK_MAX_BYTES);
        if (x->c.nrows == x->rowcap) {
            uint32_t nc = x->rowcap ? x->rowcap * 2 : 256;
            tsync__snap_row *nr = realloc(x->c.rows, nc * sizeof *nr);
            if (!nr) return tsync__err(TSYNC_ENOMEM, "out of memory");
            x->c.rows = nr;
            x->rowcap = nc;
        }
        /* the values still point into the statements' rows: the chunk keeps its own copy */
        for (uint32_t k = 0; k < (uint32_t)x->s->tables[ti].npk; k++)
            if (keep_val(&x->a, &r.pk[k])) return TSYNC_ENOMEM;
        for (uint32_t k = 0; k < r.ncols; k++)
            if (keep_val(&x->a, &co[k].val)) return TSYNC_ENOMEM;
        x->c.rows[x->c.nrows++] = r;
        x->sz_rows += rs;
        return 0;
    }
}

static void bind_pk(sqlite3_stmt *st, const tsync__val *pk, int npk)
{
    sqlite3_reset(st);
    for (int i = 0; i < npk; i++) tsync__bind_val(st, i + 1, &pk[i]);
}

/* Exports one table: its clock rows in key order, each with the values of its written columns
 * (from the row, or from the tombstone of a deleted row). */
static int export_table(exporter *x, int ti)
{
    tsync_store *s = x->s;
    tsync__table *t = &s->tables[ti];
    int ord2b[TSYNC__MAX_COLS];
    int o = 0;
    for (int i = 0; i < t->npk; i++) ord2b[t->pk[i]] = o++;
    for (int c = 0; c < t->ncols; c++)
        if (!t->is_pk[c]) ord2b[c] = o++;
    sqlite3_str *q = sqlite3_str_new(s->db);
    sqlite3_str_appendall(q, "SELECT ");
    for (int i = 0; i < t->npk; i++) {
        tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
        sqlite3_str_appendall(q, ", ");
    }
    sqlite3_str_appendf(q, "tsync_m FROM %s ORDER BY ", t->qclk);
    for (int i = 0; i < t->npk; i++) {
        if (i) sqlite3_str_appendall(q, ", ");
        tsync__sql_ident(q, NULL, t->cols[t->pk[i]]);
    }
    char *sql = tsync__sql_finish(q);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read row clocks");
    rc = 0;
    tsync__rowmeta m;
    memset(&m, 0, sizeof m);
    int step;
    x->dcol = realloc(x->dcol, (size_t)TSYNC__MAX_COLS * sizeof *x->dcol);
    x->dctr = realloc(x->dctr, (size_t)TSYNC__MAX_COLS * sizeof *x->dctr);
    if (!x->dcol || !x->dctr) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        tsync__snap_row *d = &x->draft;
        memset(d, 0, sizeof *d);
        for (int i = 0; i < t->npk; i++) tsync__col_val(st, i, &d->pk[i]);
        tsync__rowmeta_clear(&m);
        if ((rc = tsync__rowmeta_init(&m, t->ncols))) break;
        if ((rc = tsync__rowmeta_decode(&m, sqlite3_column_blob(st, t->npk),
                                        (size_t)sqlite3_column_bytes(st, t->npk)))) {
            rc = tsync__err(TSYNC_ECORRUPT, "snapshot: the clocks of a row of %s are damaged",
                            t->name);
            break;
        }
        /* existence: skip entries that say nothing (never written by us, possible in a hostile
         * batch's merge) */
        if (m.nexist > x->dexcap) {
            tsync__snap_exist *ne = realloc(x->dex, m.nexist * sizeof *ne);
            if (!ne) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            x->dex = ne;
            x->dexcap = m.nexist;
        }
        d->exist = x->dex;
        for (size_t i = 0; i < m.nexist; i++)
            if ((m.exist[i].add || m.exist[i].rmv) && m.exist[i].site < x->nls &&
                x->ls[m.exist[i].site].known)
                d->exist[d->nexist++] =
                    (tsync__snap_exist){m.exist[i].site, m.exist[i].add, m.exist[i].rmv};
        /* values of the written columns */
        int have_vals = 0;
        sqlite3_stmt *src = t->get_row;
        bind_pk(src, d->pk, t->npk);
        int sr = sqlite3_step(src);
        if (sr != SQLITE_ROW) {
            sqlite3_reset(src);
            src = t->get_tomb;
            bind_pk(src, d->pk, t->npk);
            sr = sqlite3_step(src);
        }
        if (sr == SQLITE_ROW)
            have_vals = 1;
        else if (sr != SQLITE_DONE)
            rc = tsync__err_sqlite(s->db, sr, "read row");
        d->cols = x->dcol;
        for (int c = 0; rc == 0 && have_vals && c < t->ncols; c++) {
            if (t->is_pk[c] || t->is_counter[c] || !m.col[c].hlc) continue;
            if (m.col[c].site >= x->nls || !x->ls[m.col[c].site].known) continue;
            tsync__snap_col *e = &d->cols[d->ncols++];
            e->col = (uint32_t)ord2b[c];
            e->hlc = m.col[c].hlc;
            e->site = m.col[c].site;
            tsync__col_val(src, c, &e->val); /* valid until src is reset, after ex_add */
        }
        /* Ascending chunk column order: non-key columns keep their ordinal order. A column with
         * a clock but no value anywhere (a row a local constraint kept out, see rowwrite.c's
         * step_row) is left out: its value is not here to give. */
        if (rc) {
            sqlite3_reset(src);
            break;
        }
        /* counters, in the chunk's column order (non-key ordinal order) */
        size_t npn = 0;
        for (int c = 0; c < t->ncols; c++) {
            const tsync__ctrset *cs = t->is_counter[c] ? tsync__rowmeta_ctr(&m, c) : NULL;
            if (cs) npn += cs->n;
        }
        if (npn > x->dpncap) {
            tsync__snap_pn *np = realloc(x->dpn, npn * sizeof *np);
            if (!np) {
                sqlite3_reset(src);
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            x->dpn = np;
            x->dpncap = npn;
        }
        d->ctrs = x->dctr;
        npn = 0;
        for (int c = 0; c < t->ncols; c++) {
            const tsync__ctrset *cs = t->is_counter[c] ? tsync__rowmeta_ctr(&m, c) : NULL;
            if (!cs) continue;
            tsync__snap_ctr *e = &d->ctrs[d->nctrs];
            e->col = (uint32_t)ord2b[c];
            e->v = x->dpn + npn;
            e->n = 0;
            for (size_t j = 0; j < cs->n; j++)
                if ((cs->v[j].p || cs->v[j].n) && cs->v[j].site < x->nls &&
                    x->ls[cs->v[j].site].known)
                    e->v[e->n++] = (tsync__snap_pn){cs->v[j].site, cs->v[j].p, cs->v[j].n};
            npn += e->n;
            if (e->n) d->nctrs++;
        }
        if (d->nexist || d->ncols || d->nctrs) { /* else nothing to say about it */
            char what[64];
            snprintf(what, sizeof what, "of table %.40s", t->name);
            rc = ex_add(x, ti, ord2b, what);
        }
        sqlite3_reset(src);
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read row clocks");
    tsync__rowmeta_clear(&m);
    sqlite3_finalize(st);
    return rc;
}

/* Puts the collection frontier into the first chunk, its sites into the chunk's dictionary. */
static int front_add(exporter *x)
{
    tsync__front *f = NULL;
    size_t n = 0;
    int rc = tsync__front_load(x->s, &f, &n);
    if (rc || n == 0) {
        free(f);
        return rc;
    }
    x->c.front = calloc(n, sizeof *x->c.front);
    if (!x->c.front) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    for (size_t i = 0; rc == 0 && i < n; i++) {
        uint32_t l = 0;
        while (l < x->nls &&
               !(x->ls[l].known && !memcmp(x->ls[l].id, f[i].site, TSYNC__SITE_BYTES)))
            l++;
        if (l == x->nls) continue; /* a site never registered here wrote nothing here */
        uint32_t ci = ex_site(x, l);
        if (ci == UINT32_MAX) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        x->c.front[x->c.nfront++] = (tsync__snap_front){ci, f[i].hlc};
    }
    free(f);
    return rc;
}

int tsync__snap_export(tsync_store *s, size_t chunk_bytes,
                       int (*emit)(void *ctx, const uint8_t *chunk, size_t len), void *ctx,
                       tsync__vv *vv)
{
    memset(vv, 0, sizeof *vv);
    if (!emit || chunk_bytes < 64)
        return tsync__err(TSYNC_EINVAL, "snapshot: no emit function, or chunks under 64 bytes");
    if (!sqlite3_get_autocommit(s->db))
        return tsync__err(TSYNC_EINVAL, "cannot export a snapshot inside an open transaction");
    if (chunk_bytes > TSYNC__SNAP_CHUNK_MAX_BYTES) chunk_bytes = TSYNC__SNAP_CHUNK_MAX_BYTES;

    /* Seal, then read in a transaction that finds nothing pending, so every row has its clocks.
     * A writer that keeps committing between the two gets the write lock taken from it once. */
    int rc = 0, write_txn = 0;
    for (int attempt = 0;; attempt++) {
        if (attempt == 3) {
            if ((rc = tsync__begin(s))) return rc;
            write_txn = 1;
            if ((rc = tsync__seal_locked(s, NULL))) goto out;
            break;
        }
        if ((rc = tsync_store_seal(s, NULL))) return rc;
        if ((rc = tsync__exec(s, "BEGIN"))) return rc;
        sqlite3_stmt *st = tsync__prep(s, "SELECT 1 FROM tsync_pending LIMIT 1");
        if (!st) {
            rc = TSYNC_EIO;
            goto out;
        }
        int x = sqlite3_step(st);
        sqlite3_reset(st);
        if (x == SQLITE_DONE) break;
        if (x != SQLITE_ROW) {
            rc = tsync__err_sqlite(s->db, x, "read pending changes");
            goto out;
        }
        tsync__rollback(s);
    }
    exporter x;
    memset(&x, 0, sizeof x);
    x.s = s;
    x.budget = chunk_bytes;
    x.emit = emit;
    x.ctx = ctx;
    if ((rc = tsync__tables_refresh(s)) || (rc = tsync__sync_vv(s, vv)) ||
        (rc = tsync_snap__load_sites(s, &x.ls, &x.nls)))
        goto done;
    x.smap = calloc(x.nls + 1, sizeof *x.smap);
    x.tmap = calloc((size_t)s->ntables + 1, sizeof *x.tmap);
    if (!x.smap || !x.tmap) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto done;
    }
    /* The first chunk names every site of the vector with its key and incarnation, so the
     * receiver can register the origins whose heads it takes. */
    for (size_t i = 0; i < vv->n; i++)
        for (uint32_t l = 0; l < x.nls; l++)
            if (x.ls[l].known && memcmp(x.ls[l].id, vv->e[i].site, TSYNC__SITE_BYTES) == 0) {
                if (ex_site(&x, l) == UINT32_MAX) rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
    /* ... and carries the collection frontier, so that an importer deletes the rows it holds that
     * this replica deleted and collected (store/collect.c). */
    if (rc == 0) rc = front_add(&x);
    for (int ti = 0; rc == 0 && ti < s->ntables; ti++) rc = export_table(&x, ti);
    if (rc == 0 && (x.c.nrows || x.nchunks == 0)) rc = ex_flush(&x);
done:
    if (x.emit_rc) rc = x.emit_rc;
    tsync__arena_free(&x.a);
    free(x.ls);
    free(x.smap);
    free(x.slocal);
    free(x.tmap);
    free(x.tlocal);
    free(x.c.sites);
    free(x.c.tables);
    free(x.c.rows);
    free(x.c.front);
    free(x.dex);
    free(x.dcol);
    free(x.dctr);
    free(x.dpn);
out:
    if (rc == 0 && write_txn) {
        rc = tsync__commit(s);
    } else if (rc == 0) {
        rc = tsync__exec(s, "COMMIT");
    } else {
        tsync__rollback(s);
    }
    if (rc) tsync__vv_free(vv);
    return rc;
}
