/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/seal.c — sealing: turning committed pending changes into signed, hash-chained batches.
 *
 * Design notes
 * - Runs under BEGIN IMMEDIATE, so it sees only committed transactions and no other writer runs
 *   meanwhile, and two processes sealing at once serialise instead of forking.
 * - A transaction is not a unit of sync: what one seal finds is cut into as many batches as the
 *   budgets need (TSYNC__SEAL_BATCH_BYTES, TSYNC__SEAL_BATCH_ROWS), each signed and chained like
 *   any other, all in the one transaction. A row change is never split; the capture triggers keep
 *   every row under TSYNC_MAX_ROW_BYTES, so one always fits a batch. A change over it (captured by
 *   an older build) is set aside in tsync_unsealable and reported instead of failing every later
 *   seal; it is folded back in when the row changes again (unsealable.c).
 * - Pending changes are folded per row first (GROUP BY in the per-table scan, seal_scan.c): a row
 *   updated a thousand times before sealing becomes one row change carrying the final values
 *   (the superseded ones could never win). Rows stream through in key order, so sealing holds
 *   one batch in memory whatever the size of the transaction. When a table's pending keys
 *   already ascend in capture order with none twice (a bulk statement over a table written in
 *   key order), they are taken as captured: the same rows in the same order, without the sort.
 * - Values are read from the table at sealing time. That is correct because merge always seals
 *   first, inside its own transaction: between a local write and its sealing nothing else changes
 *   the table.
 * - Each row change gets its own clock: max(its captured wall time, last clock + 1), persisted in
 *   tsync_meta so it never goes back, even after a crash.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "prep_int.h"
#include "seal_int.h"
#include "store/sync.h"

/* The shop's clock (docs/DATA_MODEL.md, "Clocks"). When a node measured the shop's median clock:
 * - a wall clock more than TSYNC__CLOCK_OFF_MS off it is corrected by that offset (*corr), so one
 *   wrong clock cannot move this till's clock (and every clock it writes) away from the shop's;
 * - a clock already moved more than the skew bound ahead of the shop's time (written before the
 *   node knew better) goes back to the shop's time, so the sales after the mistake are not held
 *   by every peer until real time catches up. above_overwritten keeps each row's own clocks
 *   increasing, which is all LWW and the OR-set need; the reset is counted in tsync_meta. */
static int shop_clock(tsync_store *s, tsync__hlc *last, int64_t *corr)
{
    int64_t off;
    *corr = 0;
    if (!tsync__shop_offset(s, &off)) return 0;
    if (off > TSYNC__CLOCK_OFF_MS || off < -TSYNC__CLOCK_OFF_MS) *corr = off;
    int64_t now = (int64_t)tsync__now_ms(s) + off;
    if (now <= 0 || !tsync__hlc_too_far(*last, (uint64_t)now, s->skew_bound_ms)) return 0;
    int64_t resets = 0;
    int rc = tsync__meta_int(s, "hlc_resets", &resets, 0);
    if (!rc) rc = tsync__meta_int(s, "hlc_resets", NULL, resets + 1);
    if (!rc) rc = tsync__meta_int(s, "hlc_reset_from", NULL, (int64_t)tsync__hlc_ms(*last));
    if (!rc) rc = tsync__meta_int(s, "hlc_reset_at", NULL, now);
    *last = tsync__hlc_make((uint64_t)now, 0);
    return rc;
}

/* A row change's clock must be above every clock it overwrites (the columns it writes, this
 * site's own add and remove clocks of the row), or the other replicas would keep the older value
 * while this one shows the newer. With the site's clock never behind what it merged that is
 * always so; after a reset (shop_clock) or a merge that did not follow a far-ahead clock
 * (store/merge.c) the row's clock goes above the old one, and the site's clock stays where it is.
 */
static tsync__hlc above_overwritten(const tsync__rowmeta *m, const tsync__table *t, uint64_t mask,
                                    uint32_t local, tsync__hlc h)
{
    tsync__hlc floor = 0;
    for (int c = 0; c < t->ncols && c < m->ncols; c++)
        if (!t->is_pk[c] && !t->is_counter[c] && (mask & (1ULL << c)) && m->col[c].hlc > floor)
            floor = m->col[c].hlc;
    for (size_t i = 0; i < m->nexist; i++) {
        if (m->exist[i].site != local) continue;
        if (m->exist[i].add > floor) floor = m->exist[i].add;
        if (m->exist[i].rmv > floor) floor = m->exist[i].rmv;
    }
    return floor >= h && floor != UINT64_MAX ? floor + 1 : h;
}

/* Per-batch dictionaries: local site index -> batch index, table -> batch table. */
typedef struct {
    uint32_t *local; /* local site idx of each batch site */
    uint32_t n, cap;
    uint8_t (*ids)[TSYNC__SITE_BYTES];
} sitedict;

static int sitedict_idx(tsync_store *s, sitedict *d, uint32_t local, uint32_t *out)
{
    for (uint32_t i = 0; i < d->n; i++)
        if (d->local[i] == local) return (*out = i), 0;
    if (d->n == d->cap) {
        uint32_t nc = d->cap ? d->cap * 2 : 8;
        uint32_t *nl = realloc(d->local, nc * sizeof *nl);
        if (!nl) return tsync__err(TSYNC_ENOMEM, "out of memory");
        d->local = nl;
        uint8_t(*ni)[TSYNC__SITE_BYTES] = realloc(d->ids, nc * sizeof *ni);
        if (!ni) return tsync__err(TSYNC_ENOMEM, "out of memory");
        d->ids = ni;
        d->cap = nc;
    }
    int rc = tsync__site_of(s, local, d->ids[d->n]);
    if (rc) return rc;
    d->local[d->n] = local;
    *out = d->n++;
    return 0;
}

typedef struct {
    tsync__table *t;
    int ord2b[TSYNC__MAX_COLS]; /* local ordinal -> batch column index */
} btab;

static void *pool_copy(tsync__pool *a, const void *p, size_t n)
{
    void *d = tsync__pool_alloc(a, n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

static int copy_val(tsync__pool *a, tsync__val *v)
{
    if ((v->type == TSYNC__V_TEXT || v->type == TSYNC__V_BLOB)) {
        v->p = pool_copy(a, v->p, v->n);
        if (!v->p) return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    return 0;
}

static int bind_key(sqlite3_stmt *st, const tsync__table *t, const uint8_t *key, uint32_t klen)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(key, klen, kv, t->npk) != 0)
        return tsync__err(TSYNC_ECORRUPT, "bad row key in table %s", t->name);
    sqlite3_reset(st);
    for (int i = 0; i < t->npk; i++) tsync__bind_val(st, i + 1, &kv[i]);
    return 0;
}

/* Loads the clock blob of a row (empty metadata when the row has none). */
static int load_meta(tsync_store *s, tsync__table *t, const uint8_t *key, uint32_t klen,
                     tsync__rowmeta *m, int *found)
{
    if (found) *found = 0;
    int rc = tsync__rowmeta_init(m, t->ncols);
    if (rc) return rc;
    rc = bind_key(t->get_clk, t, key, klen);
    if (rc) return rc;
    int st = sqlite3_step(t->get_clk);
    if (st == SQLITE_ROW && found) *found = 1;
    if (st == SQLITE_ROW)
        rc = tsync__rowmeta_decode(m, sqlite3_column_blob(t->get_clk, 0),
                                   (size_t)sqlite3_column_bytes(t->get_clk, 0));
    else if (st != SQLITE_DONE)
        rc = tsync__err_sqlite(s->db, st, "read row clocks");
    sqlite3_reset(t->get_clk);
    return rc;
}

int tsync__put_meta(tsync_store *s, tsync__table *t, const uint8_t *key, uint32_t klen,
                    const tsync__rowmeta *m, uint8_t **buf, size_t *cap, int exists)
{
    size_t len;
    int rc = tsync__rowmeta_encode(m, buf, cap, &len);
    if (rc) return rc;
    sqlite3_stmt *st = exists ? t->upd_clk : t->put_clk;
    rc = bind_key(st, t, key, klen);
    if (rc) return rc;
    sqlite3_bind_blob(st, t->npk + 1, *buf, (int)len, SQLITE_STATIC);
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "write row clocks");
}

int tsync__load_meta(tsync_store *s, tsync__table *t, const uint8_t *key, uint32_t klen,
                     tsync__rowmeta *m, int *found)
{
    return load_meta(s, t, key, klen, m, found);
}

/* One batch being built. Its pool holds its rows, their values and its tables, and is freed as
 * soon as the batch is in the log (its chunks kept for the next), so sealing holds one batch's
 * values at a time. */
typedef struct {
    tsync__pool a;
    sitedict sd;
    btab *bt;
    uint32_t nbt;
    tsync__brow *rows; /* malloc'd, kept across batches (the values live in a) */
    uint32_t nrows, cap;
    size_t bytes; /* estimated encoded size so far */
    tsync__hlc lo, hi;
} bbuild;

/* Encodes, signs and appends the batch being built as this site's next batch (*seq + 1, chained
 * to prev), then empties it for the next one. */
static int seal_flush(tsync_store *s, bbuild *cur, uint64_t *seq, uint8_t prev[TSYNC__HASH_BYTES])
{
    uint8_t *body = NULL;
    size_t blen = 0;
    char err[TSYNC__ERRLEN];
    sqlite3_stmt *st = NULL;
    tsync__pool *a = &cur->a;

    /* Dependencies: the vector entries that changed since this site's previous batch (for the
     * second and later batch of one seal, none: the chain orders them after the first). */
    tsync__bdep *deps = NULL;
    uint32_t ndeps = 0, depcap = 0;
    int rc = tsync__prep_or_fail(s, &st,
                                 "SELECT idx, seq FROM tsync_sites WHERE seq != sealed_seq AND "
                                 "idx != ?1",
                                 "read vector");
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, s->local_idx);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ndeps == depcap) {
            depcap = depcap ? depcap * 2 : 8;
            tsync__bdep *nd = tsync__pool_alloc(a, depcap * sizeof *nd);
            if (!nd) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            if (ndeps) memcpy(nd, deps, ndeps * sizeof *nd);
            deps = nd;
        }
        uint32_t bi;
        if ((rc = sitedict_idx(s, &cur->sd, (uint32_t)sqlite3_column_int64(st, 0), &bi))) break;
        deps[ndeps++] = (tsync__bdep){bi, (uint64_t)sqlite3_column_int64(st, 1)};
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;

    tsync__btable *btabs = tsync__pool_alloc(a, (cur->nbt ? cur->nbt : 1) * sizeof *btabs);
    if (!btabs) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < cur->nbt; i++) {
        tsync__table *t = cur->bt[i].t;
        tsync__btable *x = &btabs[i];
        x->name = t->name;
        x->name_len = (uint32_t)strlen(t->name);
        x->ncols = (uint32_t)t->ncols;
        x->npk = (uint32_t)t->npk;
        x->cols = tsync__pool_alloc(a, (size_t)t->ncols * sizeof *x->cols);
        x->col_len = tsync__pool_alloc(a, (size_t)t->ncols * sizeof *x->col_len);
        x->counters = tsync__pool_alloc(a, (size_t)t->ncols * sizeof *x->counters);
        x->policy_cols = tsync__pool_alloc(a, (size_t)t->ncols * sizeof *x->policy_cols);
        x->policies = tsync__pool_alloc(a, (size_t)t->ncols);
        if (!x->cols || !x->col_len || !x->counters || !x->policy_cols || !x->policies) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto out;
        }
        /* Non-key columns keep their order in the batch: counters and policies ascend. */
        for (int c = 0; c < t->ncols; c++) {
            int b = cur->bt[i].ord2b[c];
            x->cols[b] = t->cols[c];
            x->col_len[b] = (uint32_t)strlen(t->cols[c]);
            if (t->is_counter[c]) x->counters[x->ncounters++] = (uint32_t)b;
            if (t->policy[c]) {
                x->policy_cols[x->npolicies] = (uint32_t)b;
                x->policies[x->npolicies++] = t->policy[c];
            }
        }
    }

    tsync__batch batch = {0};
    batch.format = TSYNC__BATCH_FORMAT;
    memcpy(batch.origin, s->site, TSYNC__SITE_BYTES);
    batch.seq = *seq + 1;
    batch.hlc_lo = cur->lo;
    batch.hlc_hi = cur->hi;
    batch.nsites = cur->sd.n;
    batch.sites = (const uint8_t(*)[TSYNC__SITE_BYTES])cur->sd.ids;
    batch.ndeps = ndeps;
    batch.deps = deps;
    batch.ntables = cur->nbt;
    batch.tables = btabs;
    batch.nrows = cur->nrows;
    batch.rows = cur->rows;
    if ((rc = tsync__batch_encode(&batch, &body, &blen, err))) {
        rc = tsync__err(rc, "sealing: %s", err);
        goto out;
    }
    uint8_t hash[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    tsync__batch_hash(prev, body, blen, hash);
    tsync__batch_sign(s->sk, s->site, batch.seq, hash, sig);

    rc = tsync__prep_or_fail(s, &st,
                             "INSERT INTO tsync_log(site, seq, hash, body, sig) "
                             "VALUES(?1, ?2, ?3, ?4, ?5)",
                             "append batch to the log");
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, s->local_idx);
        sqlite3_bind_int64(st, 2, (int64_t)batch.seq);
        sqlite3_bind_blob(st, 3, hash, sizeof hash, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, body, (int)blen, SQLITE_STATIC);
        sqlite3_bind_blob(st, 5, sig, sizeof sig, SQLITE_STATIC);
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "append batch to the log");
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;
    rc = tsync__prep_or_fail(s, &st, "UPDATE tsync_sites SET seq=?2, hash=?3 WHERE idx=?1",
                             "update vector");
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, s->local_idx);
        sqlite3_bind_int64(st, 2, (int64_t)batch.seq);
        sqlite3_bind_blob(st, 3, hash, sizeof hash, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "update vector");
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;
    st = tsync__prep(s, "UPDATE tsync_sites SET sealed_seq=seq WHERE sealed_seq!=seq");
    rc = st && sqlite3_step(st) == SQLITE_DONE
             ? 0
             : tsync__err_sqlite(s->db, SQLITE_ERROR, "update vector");
    if (st) sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;
    *seq = batch.seq;
    memcpy(prev, hash, TSYNC__HASH_BYTES);

out:
    if (st) sqlite3_reset(st);
    free(body);
    tsync__pool_reset(&cur->a);
    cur->sd.n = 0;
    cur->nbt = 0;
    cur->nrows = 0; /* rows is malloc'd and kept for the next batch */
    cur->bytes = 0;
    cur->lo = cur->hi = 0;
    return rc;
}

/* This site's last sealed seq and the hash the next batch chains to. */
static int load_head(tsync_store *s, uint64_t *seq, uint8_t prev[TSYNC__HASH_BYTES])
{
    *seq = 0;
    memset(prev, 0, TSYNC__HASH_BYTES);
    sqlite3_stmt *st = tsync__prep(s, "SELECT seq, hash FROM tsync_sites WHERE idx=?1");
    if (!st) return tsync__err_sqlite(s->db, SQLITE_ERROR, "read vector");
    sqlite3_bind_int64(st, 1, s->local_idx);
    if (sqlite3_step(st) == SQLITE_ROW) {
        *seq = (uint64_t)sqlite3_column_int64(st, 0);
        if (sqlite3_column_bytes(st, 1) == TSYNC__HASH_BYTES)
            memcpy(prev, sqlite3_column_blob(st, 1), TSYNC__HASH_BYTES);
    }
    sqlite3_reset(st);
    return 0;
}

int tsync__seal_empty_locked(tsync_store *s)
{
    bbuild cur;
    memset(&cur, 0, sizeof cur);
    uint64_t seq;
    uint8_t prev[TSYNC__HASH_BYTES];
    tsync__hlc last;
    int64_t corr = 0;
    uint32_t origin;
    int rc = tsync__hlc_load(s, &last);
    if (!rc) rc = shop_clock(s, &last, &corr);
    if (!rc) rc = load_head(s, &seq, prev);
    if (!rc) rc = sitedict_idx(s, &cur.sd, s->local_idx, &origin); /* sites[0] = origin */
    if (!rc) {
        int64_t wall = (int64_t)tsync__now_ms(s) + corr;
        last = tsync__hlc_next(last, wall > 0 ? (uint64_t)wall : 0);
        cur.lo = cur.hi = last;
        rc = seal_flush(s, &cur, &seq, prev);
    }
    if (!rc) rc = tsync__hlc_store(s, last);
    tsync__pool_free(&cur.a);
    free(cur.rows);
    free(cur.bt);
    free(cur.sd.local);
    free(cur.sd.ids);
    return rc;
}

/* ---------------------------------------------------------------- one seal
 *
 * tsync__seal_locked walks the replicated tables in id order; for each, one statement
 * (seal_scan.c) folds its pending changes per row, in key order, and joins each row's clocks, its
 * values and its tombstone. Each row change is added to the batch being built, which goes to the
 * log as soon as the next change would take it past a budget: what sealing holds at once is one
 * batch, whatever the size of the transaction. SQLite's sorter spills the folding to temporary
 * files when it outgrows its cache. Then the last batch is appended, the clock persisted and
 * tsync_pending emptied (seal_close). */

typedef struct {
    size_t budget, max_rows; /* per batch */
    bbuild cur;              /* the batch being built */
    size_t nbat;             /* batches appended to the log */
    int any;                 /* tsync_pending had rows */
    tsync__hlc last;         /* the clock of the last row change */
    int64_t corr;            /* the wall clock's correction (shop_clock) */
    uint64_t seq; /* this site's last sealed seq, and the hash the next batch chains to */
    uint8_t prev[TSYNC__HASH_BYTES];
    tsync__rowmeta meta; /* the clocks of the row being sealed, and their encoding */
    uint8_t *mbuf;
    size_t mcap;
    uint8_t *kbuf; /* the encoded key of the row being sealed */
    size_t kcap;
    tsync__aside aside; /* set-aside changes, when tsync_unsealable has any */
    tsync__newclk nc;   /* clock entries of new rows not written yet */
} sealing;

static void sealing_free(sealing *z)
{
    tsync__newclk_free(&z->nc);
    tsync__rowmeta_clear(&z->meta);
    tsync__pool_free(&z->cur.a);
    free(z->cur.rows);
    free(z->cur.bt);
    free(z->cur.sd.local);
    free(z->cur.sd.ids);
    free(z->mbuf);
    free(z->kbuf);
    tsync__aside_free(&z->aside);
}

/* Empties z->meta for a row of t, keeping its allocations: clearing and allocating it again for
 * each of a million rows costs more than the row's clock work. */
static int meta_reset(tsync__rowmeta *m, const tsync__table *t)
{
    if (m->col && m->ncols == t->ncols && !m->nctrs) {
        m->nexist = 0;
        memset(m->col, 0, (size_t)t->ncols * sizeof *m->col);
        return 0;
    }
    tsync__rowmeta_clear(m);
    return tsync__rowmeta_init(m, t->ncols);
}

/* The values row change r carries, from the scan's current row: the row, or for a deleted row
 * the values its delete trigger kept (*vals0: the first column of those in st). *exists says
 * whether the row is in its table and *have_vals whether there are values; *vbytes and *nvals
 * measure what the change carries. */
static void scan_values(const prow *r, sqlite3_stmt *st, int *exists, int *have_vals, int *vals0,
                        size_t *vbytes, size_t *nvals)
{
    const tsync__table *t = r->t;
    int row = TSYNC__SCAN_ROW(t), tomb = TSYNC__SCAN_TOMB(t);
    *exists = sqlite3_column_int(st, row) != 0;
    *have_vals = *exists || sqlite3_column_int(st, tomb) != 0;
    *vals0 = *exists ? row + 1 : tomb + 1;
    /* What the change carries: the key and the values of the columns it names. Text and blob
     * bytes are what TSYNC_MAX_ROW_BYTES limits (the capture trigger sums the same lengths);
     * the rest is encoding overhead, a few bytes per value. */
    *vbytes = *nvals = 0;
    for (int c = 0; *have_vals && c < t->ncols; c++) {
        if (!t->is_pk[c] && !t->is_counter[c] && !(r->mask & (1ULL << c))) continue;
        int ty = sqlite3_column_type(st, *vals0 + c);
        if (ty == SQLITE_TEXT || ty == SQLITE_BLOB)
            *vbytes += (size_t)sqlite3_column_bytes(st, *vals0 + c);
        (*nvals)++;
    }
}

/* The index of t among the batch's tables, adding it (with its batch column order: the key
 * columns first) if the batch does not name it yet. */
static int batch_table(bbuild *cur, tsync__table *t, uint32_t *out)
{
    uint32_t ti = 0;
    for (; ti < cur->nbt; ti++)
        if (cur->bt[ti].t == t) break;
    if (ti == cur->nbt) {
        btab *nb = realloc(cur->bt, (cur->nbt + 1) * sizeof *nb);
        if (!nb) return tsync__err(TSYNC_ENOMEM, "out of memory");
        cur->bt = nb;
        cur->bt[cur->nbt].t = t;
        int o = 0;
        for (int i = 0; i < t->npk; i++) cur->bt[cur->nbt].ord2b[t->pk[i]] = o++;
        for (int c = 0; c < t->ncols; c++)
            if (!t->is_pk[c]) cur->bt[cur->nbt].ord2b[c] = o++;
        cur->nbt++;
    }
    *out = ti;
    return 0;
}

/* The columns of batch row b (table ti of the batch) from the row's values: each counter as this
 * site's P and N after the local delta, each other column the change names with the clock h and
 * the clock it overwrites. Updates the row's clocks in z->meta to match. */
static int put_columns(tsync_store *s, sealing *z, const prow *r, uint32_t ti,
                       const tsync__val *vals, tsync__hlc h, tsync__brow *b)
{
    tsync__table *t = r->t;
    bbuild *cur = &z->cur;
    int rc;
    /* Room for the columns the change names and this site's counters only: the pool zeroes what
     * it hands out, and an UPDATE of one column of a wide table names one. */
    size_t ncol = 0, nctr = 0;
    for (int c = 0; c < t->ncols; c++)
        if (t->is_counter[c])
            nctr++;
        else if (!t->is_pk[c] && (r->mask & (1ULL << c)))
            ncol++;
    b->cols = ncol ? tsync__pool_alloc(&cur->a, ncol * sizeof *b->cols) : NULL;
    b->ctrs = nctr ? tsync__pool_alloc(&cur->a, nctr * sizeof *b->ctrs) : NULL;
    if ((ncol && !b->cols) || (nctr && !b->ctrs)) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (int c = 0; c < t->ncols; c++) {
        if (t->is_pk[c]) continue;
        if (t->is_counter[c]) {
            int64_t cur_v = vals[c].type == TSYNC__V_INT    ? vals[c].i
                            : vals[c].type == TSYNC__V_REAL ? (int64_t)vals[c].r
                                                            : 0;
            int64_t delta =
                (int64_t)((uint64_t)cur_v - (uint64_t)tsync__rowmeta_ctr_value(&z->meta, c));
            if (delta == 0) continue;
            if ((rc = tsync__rowmeta_ctr_add(&z->meta, c, s->local_idx, delta))) return rc;
            const tsync__ctrset *cs = tsync__rowmeta_ctr(&z->meta, c);
            for (size_t j = 0; cs && j < cs->n; j++)
                if (cs->v[j].site == s->local_idx)
                    b->ctrs[b->nctrs++] =
                        (tsync__bctr){(uint32_t)cur->bt[ti].ord2b[c], cs->v[j].p, cs->v[j].n};
            continue;
        }
        if (!(r->mask & (1ULL << c))) continue;
        tsync__bcol *bc = &b->cols[b->ncols++];
        bc->col = (uint32_t)cur->bt[ti].ord2b[c];
        bc->val = vals[c];
        bc->old_hlc = z->meta.col[c].hlc;
        bc->old_site = 0;
        if (bc->old_hlc && (rc = sitedict_idx(s, &cur->sd, z->meta.col[c].site, &bc->old_site)))
            return rc;
        z->meta.col[c] = (tsync__colclk){h, s->local_idx};
    }
    return 0;
}

/* Room for one more row in the batch being built (its first row names this site: sites[0] is the
 * origin). The row array grows with the batch, up to the row budget, and is kept across batches. */
static int batch_room(tsync_store *s, sealing *z)
{
    bbuild *cur = &z->cur;
    if (cur->nrows == 0) {
        uint32_t origin;
        int rc = sitedict_idx(s, &cur->sd, s->local_idx, &origin);
        if (rc) return rc;
    }
    if (cur->nrows < cur->cap) return 0;
    size_t nc = cur->cap ? (size_t)cur->cap * 2 : 64;
    if (nc > z->max_rows) nc = z->max_rows > cur->nrows ? z->max_rows : cur->nrows + 1;
    tsync__brow *nr = realloc(cur->rows, nc * sizeof *nr);
    if (!nr) return tsync__err(TSYNC_ENOMEM, "out of memory");
    cur->rows = nr;
    cur->cap = (uint32_t)nc;
    return 0;
}

/* Adds row change r (st: the scan, on its row) to the batch being built, appending that batch to
 * the log first when the change would take it past a budget, gives it its clock, and writes the
 * row's clocks. */
static int seal_row(tsync_store *s, sealing *z, const prow *r, sqlite3_stmt *st)
{
    tsync__table *t = r->t;
    bbuild *cur = &z->cur;

    /* The size of the current values decides whether this row change still fits the batch. */
    int exists, have_vals, vals0, rc;
    size_t vbytes = 0, nvals = 0;
    scan_values(r, st, &exists, &have_vals, &vals0, &vbytes, &nvals);
    if (vbytes > TSYNC_MAX_ROW_BYTES) {
        /* Only a write captured before the capture trigger checked the size gets here (the
         * trigger refuses such writes since). It cannot travel: an existing row's change is
         * set aside, reported, and does not hold back the changes sealed around it; a deleted
         * row's is sealed as a delete without the values it no longer shows. */
        if (exists) return tsync__set_aside(s, r, vbytes);
        have_vals = 0;
        vbytes = nvals = 0;
    }
    size_t est = 64 + r->klen + vbytes + 16 * nvals;
    /* Close the batch before this change would take it past a budget. A transaction is not a
     * unit of sync, so one transaction may span several batches; each is signed and chained
     * like any other, and clocks keep rising across them. (The scan's current row stays valid
     * while other statements run: only stepping or resetting it moves it.) */
    if (cur->nrows && (cur->bytes + est > z->budget || cur->nrows >= z->max_rows)) {
        if ((rc = seal_flush(s, cur, &z->seq, z->prev))) return rc;
        z->nbat++;
    }
    if ((rc = batch_room(s, z))) return rc;
    /* The values the batch row carries live in its pool: those of the columns the change names
     * (the key is the copy below; a counter is a number). */
    tsync__val vals[TSYNC__MAX_COLS];
    for (int c = 0; have_vals && c < t->ncols; c++) {
        tsync__col_val(st, vals0 + c, &vals[c]);
        if (!t->is_pk[c] && !t->is_counter[c] && (r->mask & (1ULL << c)) &&
            (rc = copy_val(&cur->a, &vals[c])))
            return rc;
    }
    /* The batch row's key points into the batch's pool, which lives as long as the batch. */
    uint8_t *key = pool_copy(&cur->a, r->key, r->klen);
    if (!key) return tsync__err(TSYNC_ENOMEM, "out of memory");

    tsync__brow *b = &cur->rows[cur->nrows++];
    memset(b, 0, sizeof *b);
    uint32_t ti = 0;
    if ((rc = batch_table(cur, t, &ti))) return rc;
    b->table = ti;
    if (tsync__key_decode(key, r->klen, b->pk, t->npk) != 0)
        return tsync__err(TSYNC_ECORRUPT, "bad pending key in %s", t->name);
    int64_t wall = r->wall + z->corr;
    tsync__hlc h = tsync__hlc_next(z->last, wall > 0 ? (uint64_t)wall : 0);
    z->last = h;

    if ((rc = meta_reset(&z->meta, t))) return rc;
    int clk = TSYNC__SCAN_CLK(t);
    int had_meta = sqlite3_column_type(st, clk) != SQLITE_NULL;
    if (had_meta && (rc = tsync__rowmeta_decode(&z->meta, sqlite3_column_blob(st, clk),
                                                (size_t)sqlite3_column_bytes(st, clk))))
        return rc;
    h = above_overwritten(&z->meta, t, r->mask, s->local_idx, h);
    if (!cur->lo || h < cur->lo) cur->lo = h;
    if (h > cur->hi) cur->hi = h;
    b->hlc = h;

    if (r->seen_delete || !exists) {
        b->flags |= TSYNC__ROW_DEL;
        b->rmv = tsync__pool_alloc(&cur->a, (z->meta.nexist + 1) * sizeof *b->rmv);
        if (!b->rmv) return tsync__err(TSYNC_ENOMEM, "out of memory");
        size_t ne = z->meta.nexist;
        for (size_t i = 0; i < ne; i++) {
            tsync__exist e = z->meta.exist[i];
            if (!e.add || e.rmv >= e.add) continue;
            uint32_t bi;
            if ((rc = sitedict_idx(s, &cur->sd, e.site, &bi))) return rc;
            b->rmv[b->nrmv++] = (tsync__brmv){bi, e.add};
            if ((rc = tsync__rowmeta_exist_merge(&z->meta, e.site, 0, e.add))) return rc;
        }
    }
    if (exists) {
        b->flags |= TSYNC__ROW_ADD;
        if ((rc = tsync__rowmeta_exist_merge(&z->meta, s->local_idx, h, 0))) return rc;
    }
    if (have_vals && (rc = put_columns(s, z, r, ti, vals, h, b))) return rc;
    cur->bytes += est + 24 * (size_t)b->nrmv;
    /* Every clock entry goes through the batched writer (seal_clk.c); the reference of the
     * property tests (tsync__seal_newclk_rows == 1) updates existing entries one by one. */
    rc = had_meta && tsync__seal_newclk_rows == 1
             ? tsync__put_meta(s, t, r->key, r->klen, &z->meta, &z->mbuf, &z->mcap, 1)
             : tsync__newclk_add(s, &z->nc, t, r->key, r->klen, &z->meta, &z->mbuf, &z->mcap);
    if (rc) return rc;
    /* A tombstone exists only for a row with clocks, or one deleted in this window. */
    if (exists && (r->seen_delete || (r->seen_insert && had_meta))) {
        if ((rc = bind_key(t->del_tomb, t, r->key, r->klen))) return rc;
        int sr = sqlite3_step(t->del_tomb);
        sqlite3_reset(t->del_tomb);
        if (sr != SQLITE_DONE) return tsync__err_sqlite(s->db, sr, "clear tombstone");
    }
    return 0;
}

/* The scan's current row as a row change: its key encoded into z->kbuf, its pending changes
 * folded (by the scan), and its set-aside changes folded in. */
static int scan_row(sealing *z, tsync__table *t, sqlite3_stmt *st, prow *r)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    for (int i = 0; i < t->npk; i++) tsync__col_val(st, i, &kv[i]);
    size_t klen = tsync__key_size(kv, t->npk);
    if (klen > z->kcap) {
        size_t nc = klen > 2 * z->kcap ? klen : 2 * z->kcap;
        uint8_t *nk = realloc(z->kbuf, nc);
        if (!nk) return tsync__err(TSYNC_ENOMEM, "out of memory");
        z->kbuf = nk;
        z->kcap = nc;
    }
    tsync__key_encode(kv, t->npk, z->kbuf);
    int ins = sqlite3_column_int(st, TSYNC__SCAN_INS(t)) != 0;
    *r = (prow){t,
                z->kbuf,
                (uint32_t)klen,
                ins ? ~0ULL : (uint64_t)sqlite3_column_int64(st, TSYNC__SCAN_MASK(t)),
                sqlite3_column_int64(st, TSYNC__SCAN_WALL(t)),
                (uint8_t)ins,
                (uint8_t)(sqlite3_column_int(st, TSYNC__SCAN_DEL(t)) != 0)};
    return tsync__aside_fold(&z->aside, r);
}

/* Seals the pending changes of table t. */
static int seal_table(tsync_store *s, sealing *z, tsync__table *t)
{
    sqlite3_stmt *st;
    int run, rc = tsync__seal_presorted(s, t, &run);
    if (rc == 0) rc = tsync__seal_scan(s, t, run, &st);
    if (rc) return rc;
    int step;
    prow r;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        z->any = 1;
        if ((rc = scan_row(z, t, st, &r)) || (rc = seal_row(s, z, &r, st))) break;
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read pending changes");
    sqlite3_reset(st);
    if (rc == 0 && z->nc.n) rc = tsync__newclk_flush(s, &z->nc);
    return rc;
}

static int table_id_cmp(const void *pa, const void *pb)
{
    const tsync__table *a = *(tsync__table *const *)pa, *b = *(tsync__table *const *)pb;
    return a->id < b->id ? -1 : a->id > b->id;
}

/* The tables with pending changes, in id order (the order batches list rows in: table, then key),
 * each sealed in turn. */
static int seal_tables(tsync_store *s, sealing *z)
{
    sqlite3_stmt *st = NULL;
    int rc = tsync__prep_or_fail(s, &st, "SELECT DISTINCT tbl FROM tsync_pending",
                                 "read pending changes");
    if (rc) return rc;
    tsync__table **ts = calloc((size_t)s->ntables + 1, sizeof *ts);
    if (!ts) {
        sqlite3_reset(st);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    int n = 0, step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        z->any = 1;
        int tid = sqlite3_column_int(st, 0);
        for (int i = 0; i < s->ntables && n < s->ntables; i++)
            if (s->tables[i].id == tid) ts[n++] = &s->tables[i]; /* else no longer replicated */
    }
    if (step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read pending changes");
    sqlite3_reset(st);
    qsort(ts, (size_t)n, sizeof *ts, table_id_cmp);
    if (rc == 0 && n) {
        rc = tsync__hlc_load(s, &z->last);
        if (rc == 0) rc = shop_clock(s, &z->last, &z->corr);
        if (rc == 0) rc = load_head(s, &z->seq, z->prev);
        if (rc == 0) rc = tsync__aside_load(s, &z->aside);
    }
    for (int i = 0; rc == 0 && i < n; i++) rc = seal_table(s, z, ts[i]);
    free(ts);
    return rc;
}

/* The last batch to the log, the clock persisted, the folded set-aside changes dropped and
 * tsync_pending emptied. */
static int seal_close(tsync_store *s, sealing *z, size_t *nbatches)
{
    int rc;
    if (z->cur.nrows) {
        if ((rc = seal_flush(s, &z->cur, &z->seq, z->prev))) return rc;
        z->nbat++;
    }
    if (z->nbat && (rc = tsync__hlc_store(s, z->last))) return rc;
    if (nbatches) *nbatches = z->nbat;
    if ((rc = tsync__aside_drop(s, &z->aside))) return rc;
    if (z->any) {
        /* Under BEGIN IMMEDIATE nobody else has written since we read, so every pending row
         * is sealed (or set aside): an unconditional DELETE lets SQLite clear the table in one
         * step. */
        sqlite3_stmt *del = tsync__prep(s, "DELETE FROM tsync_pending");
        if (!del) return TSYNC_EIO;
        rc = 0;
        if (sqlite3_step(del) != SQLITE_DONE)
            rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "clear pending changes");
        sqlite3_reset(del);
        return rc;
    }
    return 0;
}

int tsync__seal_locked(tsync_store *s, size_t *nbatches)
{
    if (nbatches) *nbatches = 0;
    sealing z;
    memset(&z, 0, sizeof z);
    z.budget = s->seal_batch_bytes ? s->seal_batch_bytes : TSYNC__SEAL_BATCH_BYTES;
    z.max_rows = s->seal_batch_rows ? s->seal_batch_rows : TSYNC__SEAL_BATCH_ROWS;
    int rc = seal_tables(s, &z);
    if (rc == 0) rc = seal_close(s, &z, nbatches);
    sealing_free(&z);
    return rc;
}

int tsync_store_seal(tsync_store *s, size_t *nbatches)
{
    if (nbatches) *nbatches = 0;
    if (!sqlite3_get_autocommit(s->db))
        return tsync__err(TSYNC_EINVAL, "cannot seal inside an open transaction; commit first");
    /* Cheap check first: most calls find nothing to do. */
    sqlite3_stmt *st;
    int rc =
        tsync__prep_or_fail(s, &st, "SELECT 1 FROM tsync_pending LIMIT 1", "read pending changes");
    if (rc) return rc;
    int any = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_reset(st);
    if (!any) return 0;
    if ((rc = tsync__begin(s))) return rc;
    rc = tsync__seal_locked(s, nbatches);
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    return tsync__commit(s);
}
