/*
 * store/seal.c — sealing: turning committed pending changes into one signed, hash-chained batch.
 *
 * Design notes
 * - Runs under BEGIN IMMEDIATE, so it sees only committed transactions and no other writer runs
 *   meanwhile; a batch therefore holds whole transactions, and two processes sealing at once
 *   serialise instead of forking.
 * - Pending changes are folded per row in memory first: a row updated a thousand times before
 *   sealing becomes one row change carrying the final values (the superseded ones could never win).
 * - Values are read from the table at sealing time. That is correct because merge always seals
 *   first, inside its own transaction: between a local write and its sealing nothing else changes
 *   the table.
 * - Each row change gets its own clock: max(its captured wall time, last clock + 1), persisted in
 *   tsync_meta so it never goes back, even after a crash.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/sync.h"

typedef struct {
    tsync__table *t;
    uint8_t *key;
    uint32_t klen;
    uint64_t mask;
    int64_t wall;
    uint8_t seen_insert, seen_delete;
} prow;

static int prow_cmp(const void *pa, const void *pb)
{
    const prow *a = pa, *b = pb;
    if (a->t != b->t) return a->t->id < b->t->id ? -1 : 1;
    return tsync__key_cmp(a->key, a->klen, b->key, b->klen, a->t->npk);
}

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

static void *arena_copy(tsync__arena *a, const void *p, size_t n)
{
    void *d = tsync__arena_alloc(a, n ? n : 1);
    if (d && n) memcpy(d, p, n);
    return d;
}

static int copy_val(tsync__arena *a, tsync__val *v)
{
    if ((v->type == TSYNC__V_TEXT || v->type == TSYNC__V_BLOB)) {
        v->p = arena_copy(a, v->p, v->n);
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

int tsync__seal_locked(tsync_store *s, size_t *nbatches)
{
    if (nbatches) *nbatches = 0;
    tsync__arena a = {0};
    tsync__rmap map = {0};
    prow *rows = NULL;
    size_t nrows = 0, rowcap = 0;
    int64_t maxid = 0;
    sitedict sd = {0};
    btab *bt = NULL;
    uint32_t nbt = 0;
    uint8_t *mbuf = NULL, *body = NULL;
    size_t mcap = 0, blen = 0;
    tsync__rowmeta meta;
    memset(&meta, 0, sizeof meta);
    sqlite3_stmt *st = NULL;
    char err[TSYNC__ERRLEN];
    int rc = ((st = tsync__prep(s, "SELECT id, tbl, op, mask, wall, k0, k1, k2, k3 FROM "
                                   "tsync_pending ORDER BY id"))
                  ? SQLITE_OK
                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read pending changes");
    rc = 0;
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        maxid = sqlite3_column_int64(st, 0);
        int tid = sqlite3_column_int(st, 1);
        tsync__table *t = NULL;
        for (int i = 0; i < s->ntables; i++)
            if (s->tables[i].id == tid) t = &s->tables[i];
        if (!t) continue; /* a table no longer replicated */
        tsync__val kv[TSYNC__MAX_PK_COLS];
        for (int i = 0; i < t->npk; i++) tsync__col_val(st, 5 + i, &kv[i]);
        size_t klen = tsync__key_size(kv, t->npk);
        uint8_t kb[512], *k = klen <= sizeof kb ? kb : malloc(klen);
        if (!k) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        tsync__key_encode(kv, t->npk, k);
        tsync__rmap_ent *e = tsync__rmap_get(&map, &a, tid, k, klen, 1);
        if (k != kb) free(k);
        if (!e) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        if (!e->val) {
            if (nrows == rowcap) {
                rowcap = rowcap ? rowcap * 2 : 256;
                prow *nr = realloc(rows, rowcap * sizeof *nr);
                if (!nr) {
                    rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                    break;
                }
                rows = nr;
            }
            rows[nrows] = (prow){t, e->key, e->klen, 0, 0, 0, 0};
            e->val = (void *)(uintptr_t)(nrows + 1);
            nrows++;
        }
        prow *r = &rows[(uintptr_t)e->val - 1];
        int op = sqlite3_column_int(st, 2);
        uint64_t mask = (uint64_t)sqlite3_column_int64(st, 3);
        int64_t wall = sqlite3_column_int64(st, 4);
        if (wall > r->wall) r->wall = wall;
        if (op == 1)
            r->seen_insert = 1, r->mask = ~0ULL;
        else if (op == 2)
            r->mask |= mask;
        else if (op == 3)
            r->seen_delete = 1;
    }
    if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = tsync__err_sqlite(s->db, step, "read pending changes");
    sqlite3_reset(st);
    st = NULL;
    if (rc || nrows == 0) goto out;

    /* Key order: clock rows and lookups then walk each b-tree forward (see tsync__key_cmp). */
    qsort(rows, nrows, sizeof *rows, prow_cmp);
    tsync__hlc last;
    if ((rc = tsync__hlc_load(s, &last))) goto out;
    int64_t corr = 0;
    if ((rc = shop_clock(s, &last, &corr))) goto out;
    tsync__brow *brows = tsync__arena_alloc(&a, nrows * sizeof *brows);
    if (!brows) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    uint32_t dummy;
    if ((rc = sitedict_idx(s, &sd, s->local_idx, &dummy))) goto out; /* sites[0] = origin */
    tsync__hlc hlc_lo = 0, hlc_hi = 0;

    for (size_t ri = 0; ri < nrows; ri++) {
        prow *r = &rows[ri];
        tsync__table *t = r->t;
        tsync__brow *b = &brows[ri];
        memset(b, 0, sizeof *b);
        /* batch table entry */
        uint32_t ti = 0;
        for (; ti < nbt; ti++)
            if (bt[ti].t == t) break;
        if (ti == nbt) {
            btab *nb = realloc(bt, (nbt + 1) * sizeof *nb);
            if (!nb) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                goto out;
            }
            bt = nb;
            bt[nbt].t = t;
            int o = 0;
            for (int i = 0; i < t->npk; i++) bt[nbt].ord2b[t->pk[i]] = o++;
            for (int c = 0; c < t->ncols; c++)
                if (!t->is_pk[c]) bt[nbt].ord2b[c] = o++;
            nbt++;
        }
        b->table = ti;
        if (tsync__key_decode(r->key, r->klen, b->pk, t->npk) != 0) {
            rc = tsync__err(TSYNC_ECORRUPT, "bad pending key in %s", t->name);
            goto out;
        }
        int64_t wall = r->wall + corr;
        tsync__hlc h = tsync__hlc_next(last, wall > 0 ? (uint64_t)wall : 0);
        last = h;

        tsync__rowmeta_clear(&meta);
        int had_meta;
        if ((rc = load_meta(s, t, r->key, r->klen, &meta, &had_meta))) goto out;
        h = above_overwritten(&meta, t, r->mask, s->local_idx, h);
        if (!hlc_lo || h < hlc_lo) hlc_lo = h;
        if (h > hlc_hi) hlc_hi = h;
        b->hlc = h;

        /* Current values: the row, or for a deleted row the values its delete trigger kept. */
        tsync__val vals[TSYNC__MAX_COLS];
        int have_vals = 0, exists = 0;
        if ((rc = bind_key(t->get_row, t, r->key, r->klen))) goto out;
        int sr = sqlite3_step(t->get_row);
        sqlite3_stmt *src = t->get_row;
        if (sr == SQLITE_ROW) {
            exists = 1;
        } else {
            sqlite3_reset(t->get_row);
            if ((rc = bind_key(t->get_tomb, t, r->key, r->klen))) goto out;
            sr = sqlite3_step(t->get_tomb);
            src = t->get_tomb;
        }
        if (sr == SQLITE_ROW) {
            have_vals = 1;
            for (int c = 0; c < t->ncols; c++) {
                tsync__col_val(src, c, &vals[c]);
                if ((rc = copy_val(&a, &vals[c]))) goto out;
            }
        } else if (sr != SQLITE_DONE) {
            rc = tsync__err_sqlite(s->db, sr, "read row");
            goto out;
        }
        sqlite3_reset(src);

        if (r->seen_delete || !exists) {
            b->flags |= TSYNC__ROW_DEL;
            b->rmv = tsync__arena_alloc(&a, (meta.nexist + 1) * sizeof *b->rmv);
            if (!b->rmv) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                goto out;
            }
            size_t ne = meta.nexist;
            for (size_t i = 0; i < ne; i++) {
                tsync__exist e = meta.exist[i];
                if (!e.add || e.rmv >= e.add) continue;
                uint32_t bi;
                if ((rc = sitedict_idx(s, &sd, e.site, &bi))) goto out;
                b->rmv[b->nrmv++] = (tsync__brmv){bi, e.add};
                if ((rc = tsync__rowmeta_exist_merge(&meta, e.site, 0, e.add))) goto out;
            }
        }
        if (exists) {
            b->flags |= TSYNC__ROW_ADD;
            if ((rc = tsync__rowmeta_exist_merge(&meta, s->local_idx, h, 0))) goto out;
        }
        if (have_vals) {
            b->cols = tsync__arena_alloc(&a, (size_t)t->ncols * sizeof *b->cols);
            b->ctrs = tsync__arena_alloc(&a, (size_t)t->ncols * sizeof *b->ctrs);
            if (!b->cols || !b->ctrs) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                goto out;
            }
            for (int c = 0; c < t->ncols; c++) {
                if (t->is_pk[c]) continue;
                if (t->is_counter[c]) {
                    int64_t cur = vals[c].type == TSYNC__V_INT    ? vals[c].i
                                  : vals[c].type == TSYNC__V_REAL ? (int64_t)vals[c].r
                                                                  : 0;
                    int64_t delta =
                        (int64_t)((uint64_t)cur - (uint64_t)tsync__rowmeta_ctr_value(&meta, c));
                    if (delta == 0) continue;
                    if ((rc = tsync__rowmeta_ctr_add(&meta, c, s->local_idx, delta))) goto out;
                    const tsync__ctrset *cs = tsync__rowmeta_ctr(&meta, c);
                    for (size_t j = 0; cs && j < cs->n; j++)
                        if (cs->v[j].site == s->local_idx)
                            b->ctrs[b->nctrs++] =
                                (tsync__bctr){(uint32_t)bt[ti].ord2b[c], cs->v[j].p, cs->v[j].n};
                    continue;
                }
                if (!(r->mask & (1ULL << c))) continue;
                tsync__bcol *bc = &b->cols[b->ncols++];
                bc->col = (uint32_t)bt[ti].ord2b[c];
                bc->val = vals[c];
                bc->old_hlc = meta.col[c].hlc;
                bc->old_site = 0;
                if (bc->old_hlc && (rc = sitedict_idx(s, &sd, meta.col[c].site, &bc->old_site)))
                    goto out;
                meta.col[c] = (tsync__colclk){h, s->local_idx};
            }
        }
        if ((rc = tsync__put_meta(s, t, r->key, r->klen, &meta, &mbuf, &mcap, had_meta))) goto out;
        /* A tombstone exists only for a row with clocks, or one deleted in this window. */
        if (exists && (r->seen_delete || (r->seen_insert && had_meta))) {
            if ((rc = bind_key(t->del_tomb, t, r->key, r->klen))) goto out;
            sr = sqlite3_step(t->del_tomb);
            sqlite3_reset(t->del_tomb);
            if (sr != SQLITE_DONE) {
                rc = tsync__err_sqlite(s->db, sr, "clear tombstone");
                goto out;
            }
        }
    }

    /* Dependencies: the vector entries that changed since this site's previous batch. */
    tsync__bdep *deps = NULL;
    uint32_t ndeps = 0, depcap = 0;
    rc = ((st = tsync__prep(s, "SELECT idx, seq FROM tsync_sites WHERE seq != sealed_seq AND "
                               "idx != ?1"))
              ? SQLITE_OK
              : SQLITE_ERROR);
    if (rc != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, rc, "read vector");
        goto out;
    }
    rc = 0;
    sqlite3_bind_int64(st, 1, s->local_idx);
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (ndeps == depcap) {
            depcap = depcap ? depcap * 2 : 8;
            tsync__bdep *nd = tsync__arena_alloc(&a, depcap * sizeof *nd);
            if (!nd) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            if (ndeps) memcpy(nd, deps, ndeps * sizeof *nd);
            deps = nd;
        }
        uint32_t bi;
        if ((rc = sitedict_idx(s, &sd, (uint32_t)sqlite3_column_int64(st, 0), &bi))) break;
        deps[ndeps++] = (tsync__bdep){bi, (uint64_t)sqlite3_column_int64(st, 1)};
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;

    tsync__btable *btabs = tsync__arena_alloc(&a, (nbt ? nbt : 1) * sizeof *btabs);
    if (!btabs) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    for (uint32_t i = 0; i < nbt; i++) {
        tsync__table *t = bt[i].t;
        tsync__btable *x = &btabs[i];
        x->name = t->name;
        x->name_len = (uint32_t)strlen(t->name);
        x->ncols = (uint32_t)t->ncols;
        x->npk = (uint32_t)t->npk;
        x->cols = tsync__arena_alloc(&a, (size_t)t->ncols * sizeof *x->cols);
        x->col_len = tsync__arena_alloc(&a, (size_t)t->ncols * sizeof *x->col_len);
        x->counters = tsync__arena_alloc(&a, (size_t)t->ncols * sizeof *x->counters);
        if (!x->cols || !x->col_len || !x->counters) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto out;
        }
        for (int c = 0; c < t->ncols; c++) {
            int b = bt[i].ord2b[c];
            x->cols[b] = t->cols[c];
            x->col_len[b] = (uint32_t)strlen(t->cols[c]);
            if (t->is_counter[c]) x->counters[x->ncounters++] = (uint32_t)b;
        }
    }

    uint64_t seq = 0;
    uint8_t prev[TSYNC__HASH_BYTES] = {0};
    rc = ((st = tsync__prep(s, "SELECT seq, hash FROM tsync_sites WHERE idx=?1")) ? SQLITE_OK
                                                                                  : SQLITE_ERROR);
    if (rc != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, rc, "read vector");
        goto out;
    }
    rc = 0;
    sqlite3_bind_int64(st, 1, s->local_idx);
    if (sqlite3_step(st) == SQLITE_ROW) {
        seq = (uint64_t)sqlite3_column_int64(st, 0);
        if (sqlite3_column_bytes(st, 1) == TSYNC__HASH_BYTES)
            memcpy(prev, sqlite3_column_blob(st, 1), TSYNC__HASH_BYTES);
    }
    sqlite3_reset(st);
    st = NULL;

    tsync__batch batch = {0};
    batch.format = TSYNC__BATCH_FORMAT;
    memcpy(batch.origin, s->site, TSYNC__SITE_BYTES);
    batch.seq = seq + 1;
    batch.hlc_lo = hlc_lo;
    batch.hlc_hi = hlc_hi;
    batch.nsites = sd.n;
    batch.sites = (const uint8_t(*)[TSYNC__SITE_BYTES])sd.ids;
    batch.ndeps = ndeps;
    batch.deps = deps;
    batch.ntables = nbt;
    batch.tables = btabs;
    batch.nrows = (uint32_t)nrows;
    batch.rows = brows;
    if ((rc = tsync__batch_encode(&batch, &body, &blen, err))) {
        rc = tsync__err(rc, "sealing: %s", err);
        goto out;
    }
    uint8_t hash[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    tsync__batch_hash(prev, body, blen, hash);
    tsync__batch_sign(s->sk, s->site, batch.seq, hash, sig);

    rc = ((st = tsync__prep(s, "INSERT INTO tsync_log(site, seq, hash, body, sig) "
                               "VALUES(?1, ?2, ?3, ?4, ?5)"))
              ? SQLITE_OK
              : SQLITE_ERROR);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, s->local_idx);
        sqlite3_bind_int64(st, 2, (int64_t)batch.seq);
        sqlite3_bind_blob(st, 3, hash, sizeof hash, SQLITE_STATIC);
        sqlite3_bind_blob(st, 4, body, (int)blen, SQLITE_STATIC);
        sqlite3_bind_blob(st, 5, sig, sizeof sig, SQLITE_STATIC);
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "append batch to the log");
    } else {
        rc = tsync__err_sqlite(s->db, rc, "append batch to the log");
    }
    sqlite3_reset(st);
    st = NULL;
    if (rc) goto out;
    rc = ((st = tsync__prep(s, "UPDATE tsync_sites SET seq=?2, hash=?3 WHERE idx=?1"))
              ? SQLITE_OK
              : SQLITE_ERROR);
    if (rc == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, s->local_idx);
        sqlite3_bind_int64(st, 2, (int64_t)batch.seq);
        sqlite3_bind_blob(st, 3, hash, sizeof hash, SQLITE_STATIC);
        rc = sqlite3_step(st) == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "update vector");
    } else {
        rc = tsync__err_sqlite(s->db, rc, "update vector");
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
    if ((rc = tsync__hlc_store(s, last))) goto out;
    if (nbatches) *nbatches = 1;

out:
    if (rc == 0 && maxid > 0) {
        /* Under BEGIN IMMEDIATE nobody else has written since we read, so every pending row
         * is sealed: an unconditional DELETE lets SQLite clear the table in one step. */
        sqlite3_stmt *del = tsync__prep(s, "DELETE FROM tsync_pending");
        if (!del) {
            rc = TSYNC_EIO;
        } else {
            if (sqlite3_step(del) != SQLITE_DONE)
                rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "clear pending changes");
            sqlite3_reset(del);
        }
    }
    if (st) sqlite3_reset(st);
    tsync__rowmeta_clear(&meta);
    tsync__rmap_free(&map);
    tsync__arena_free(&a);
    free(rows);
    free(bt);
    free(sd.local);
    free(sd.ids);
    free(mbuf);
    free(body);
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
        ((st = tsync__prep(s, "SELECT 1 FROM tsync_pending LIMIT 1")) ? SQLITE_OK : SQLITE_ERROR);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "read pending changes");
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
