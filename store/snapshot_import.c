/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/snapshot_import.c — merging a snapshot into this replica (store/snapshot.h; the byte
 * format is codec/snapshot.h's, docs/SNAPSHOT.md).
 *
 * Design notes
 * - Merging a snapshot is the state-based CRDT join of each of its rows with the local row, so a
 *   snapshot merge ends where merging the batches it summarises would have ended
 *   (tests/store/test_snapshot.c checks exactly that), in any order with any batches, any number of
 *   times.
 * - Import decodes every chunk first without touching the database (a malformed snapshot is
 *   refused before any lock is taken), then in one BEGIN IMMEDIATE transaction decodes again and
 *   merges row by row, writing each changed row at once (chunks arrive in key order, so b-tree
 *   writes are near-appends). Rows are decoded one at a time into reused buffers: memory is one
 *   row plus the chunk's dictionaries.
 * - What cannot apply here (a table not replicated, a column missing) refuses the whole snapshot:
 *   there is no batch to point a parked change at, and skipping a value whose batch was pruned
 *   would lose it. The message says to make this database's schema match first; asking again
 *   afterwards loses nothing.
 * - Rows are written by the row writer the batch merge uses (store/rowwrite.c), so both paths
 *   leave the same rows, tombstones, conflict records and parked rows.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "rowwrite_int.h"
#include "collect_int.h"
#include "snapshot_int.h"
#include "store/sync.h"

/* A chunk table as this database sees it. */
typedef struct {
    tsync__table *t; /* NULL: not replicated here */
    const char *why; /* set: cannot take its rows */
    int map[TSYNC__MAX_COLS];
} ctab;

typedef struct {
    tsync_store *s;
    tsync_merge_report *rep;
    const tsync__vv *vv;
    lsite *ls; /* local sites by index, as they were before the import (seq) or registered */
    uint32_t nls;
    tsync__rowwriter w; /* writes the merged rows (store/rowwrite.c) */
    uint64_t now_ms;
    size_t chunk, nchunks; /* for messages (nchunks 0: not known yet, streaming) */
    const tsync__snap_chunk *c;
    uint32_t *smap; /* chunk site -> local index + 1; 0 while not registered here */
    ctab *tabs;
    struct hicache {
        uint32_t site;
        uint64_t seq;
        tsync__hlc hi;
    } * hi; /* highest clock of batches we hold, looked up for conflict decisions */
    size_t nhi, hicap;
    tsync__front *front; /* the snapshot's collection frontier (its first chunk), by site id */
    size_t nfront;
    tsync__hlc *lfront; /* ours, by local index (nls entries; NULL: we collected nothing) */
} ictx;

/* The local index of chunk site i, registering the site when it is new here. */
static int site_local(ictx *ic, uint32_t i, uint32_t *out)
{
    if (ic->smap[i]) return (*out = ic->smap[i] - 1), 0;
    const tsync__snap_site *cs = &ic->c->sites[i];
    uint32_t idx;
    int rc = tsync__site_index(ic->s, cs->site, cs->has_key ? cs->pk : NULL,
                               cs->has_key ? cs->inc : NULL, &idx);
    if (rc) return rc;
    if (idx >= INT32_MAX) return tsync__err(TSYNC_ECORRUPT, "tsync_sites: index %u", idx);
    if (idx >= ic->nls) {
        uint32_t n = idx + 16;
        lsite *nl = realloc(ic->ls, n * sizeof *nl);
        if (!nl) return tsync__err(TSYNC_ENOMEM, "out of memory");
        memset(nl + ic->nls, 0, (n - ic->nls) * sizeof *nl);
        ic->ls = nl;
        ic->nls = n;
    }
    lsite *l = &ic->ls[idx];
    if (!l->known) {
        l->known = 1;
        l->frozen = -1;
        memcpy(l->id, cs->site, TSYNC__SITE_BYTES);
    }
    ic->smap[i] = idx + 1;
    *out = idx;
    return 0;
}

/* The highest clock of our stored batch (local site, seq), read from its header; 0 when we hold
 * no body for it (pruned, a stub, never had it). */
static tsync__hlc batch_hi(ictx *ic, uint32_t site, uint64_t seq)
{
    if (!seq) return 0;
    for (size_t i = 0; i < ic->nhi; i++)
        if (ic->hi[i].site == site && ic->hi[i].seq == seq) return ic->hi[i].hi;
    tsync__hlc hi = 0;
    sqlite3_stmt *st = tsync__prep(ic->s, "SELECT tsync_log_body(site, seq, body) FROM tsync_log "
                                          "WHERE site=?1 AND seq=?2");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    if (sqlite3_step(st) == SQLITE_ROW) {
        /* [format, origin, seq, hlc_lo, hlc_hi, ...] (codec/codec.h) */
        tsync__mpr r;
        uint32_t n;
        uint64_t u;
        const uint8_t *p;
        tsync__mpr_init(&r, sqlite3_column_blob(st, 0), (size_t)sqlite3_column_bytes(st, 0));
        if (tsync__mpr_array(&r, &n) && n >= 5 && tsync__mpr_uint(&r, &u) &&
            tsync__mpr_bin(&r, &p, &n) && tsync__mpr_uint(&r, &u) && tsync__mpr_uint(&r, &u) &&
            tsync__mpr_uint(&r, &u))
            hi = u;
    }
    sqlite3_reset(st);
    if (ic->nhi == ic->hicap) {
        size_t nc = ic->hicap ? ic->hicap * 2 : 16;
        struct hicache *nh = realloc(ic->hi, nc * sizeof *nh);
        if (!nh) return hi;
        ic->hi = nh;
        ic->hicap = nc;
    }
    ic->hi[ic->nhi++] = (struct hicache){site, seq, hi};
    return hi;
}

/* Whether the exporter's state held our write (hlc of local site l): it held every batch of l
 * we hold, or the batch of l it held last is at or after the write (a site's clocks only grow). */
static int snap_saw(ictx *ic, uint32_t l, tsync__hlc hlc)
{
    if (l >= ic->nls || !ic->ls[l].known) return 0;
    uint64_t sv = tsync__vv_seq(ic->vv, ic->ls[l].id);
    if (sv >= ic->ls[l].seq) return 1;
    return hlc <= batch_hi(ic, l, sv);
}

/* Whether this replica held the snapshot's write (hlc of chunk site i) before the import. */
static int we_saw(ictx *ic, uint32_t i, tsync__hlc hlc)
{
    uint32_t l = ic->smap[i];
    if (!l || l - 1 >= ic->nls) return 0;
    uint64_t ours = ic->ls[l - 1].seq;
    if (ours >= tsync__vv_seq(ic->vv, ic->c->sites[i].site)) return 1;
    return hlc <= batch_hi(ic, l - 1, ours);
}

static const uint8_t *lsite_id(const ictx *ic, uint32_t l)
{
    static const uint8_t zero[TSYNC__SITE_BYTES];
    return l < ic->nls && ic->ls[l].known ? ic->ls[l].id : zero;
}

static int step_done(tsync_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, rc, what);
}

static int refuse(ictx *ic, const tsync__btable *bt, const char *col, uint32_t clen,
                  const char *why)
{
    char nm[48], cn[48];
    tsync__dec_printable(nm, bt->name, bt->name_len);
    if (col) tsync__dec_printable(cn, col, clen);
    char of[32] = "";
    if (ic->nchunks) snprintf(of, sizeof of, " of %zu", ic->nchunks);
    return tsync__err(TSYNC_EREFUSED,
                      "snapshot refused: chunk %zu%s: %s%s%s: %s; migrate first (make this "
                      "database's schema match), then ask for the snapshot again",
                      ic->chunk, of, nm, col ? "." : "", col ? cn : "", why);
}

/* Whether the pair (our write wins over the snapshot's write hlc of site rid) is recorded
 * already: a row where our side won is not rewritten, so a snapshot merged again (a transfer
 * that broke off and started over) would record the same pair twice. */
static int conflict_known(ictx *ic, const tsync__wrow *r, int col, tsync__hlc rhlc,
                          const uint8_t *rid, int *known)
{
    *known = 0;
    sqlite3_stmt *st = tsync__prep(ic->s, "SELECT 1 FROM tsync_conflicts WHERE tbl=?1 AND pk=?2 "
                                          "AND col=?3 AND lose_hlc=?4 AND lose_site=?5 LIMIT 1");
    if (!st) return TSYNC_EIO;
    char *pk = tsync__key_json(r->key, r->klen, r->t->npk);
    if (!pk) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_bind_text(st, 1, r->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 2, pk, -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 3, r->t->cols[col], -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 4, (int64_t)rhlc);
    sqlite3_bind_blob(st, 5, rid, TSYNC__SITE_BYTES, SQLITE_STATIC);
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    free(pk);
    if (x == SQLITE_ROW) *known = 1;
    return x == SQLITE_ROW || x == SQLITE_DONE ? 0
                                               : tsync__err_sqlite(ic->s->db, x, "read conflicts");
}

/* Merges one snapshot row with the local row and writes the result when anything changed. */
static int apply_row(ictx *ic, const tsync__snap_row *row)
{
    const tsync__btable *bt = &ic->c->tables[row->table];
    ctab *ct = &ic->tabs[row->table];
    if (!ct->t) return refuse(ic, bt, NULL, 0, "table not replicated here");
    if (ct->why) return refuse(ic, bt, NULL, 0, ct->why);
    tsync__table *t = ct->t;
    for (uint32_t k = 0; k < row->ncols; k++)
        if (ct->map[row->cols[k].col] < 0)
            return refuse(ic, bt, bt->cols[row->cols[k].col], bt->col_len[row->cols[k].col],
                          "no such column here");
    for (uint32_t k = 0; k < row->nctrs; k++) {
        int lc = ct->map[row->ctrs[k].col];
        if (lc < 0 || !t->is_counter[lc])
            return refuse(ic, bt, bt->cols[row->ctrs[k].col], bt->col_len[row->ctrs[k].col],
                          lc < 0 ? "no such counter column here"
                                 : "a counter there is not a counter here");
    }

    tsync__wrow r;
    tsync__val vals[TSYNC__MAX_COLS];
    memset(&r, 0, sizeof r);
    memset(vals, 0, sizeof vals);
    r.t = t;
    r.vals = vals;
    r.pk = row->pk;
    r.klen = (uint32_t)tsync__key_size(row->pk, t->npk);
    uint8_t kb[512];
    uint8_t *key = r.klen <= sizeof kb ? kb : malloc(r.klen);
    if (!key) return tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__key_encode(row->pk, t->npk, key);
    r.key = key;
    int rc = tsync__rw_load(ic->s, &r);
    int changed = !r.had_meta;
    /* The sweep at the end deletes the rows the frontier covers that the snapshot lacks. */
    if (rc == 0 && ic->nfront) rc = tsync__front_seen_add(ic->s, t->id, key, r.klen);

    /* existence: pointwise max per site */
    for (uint32_t k = 0; rc == 0 && k < row->nexist; k++) {
        const tsync__snap_exist *e = &row->exist[k];
        uint32_t l;
        if ((rc = site_local(ic, e->site, &l))) break;
        const tsync__exist *cur = NULL;
        for (size_t j = 0; j < r.meta.nexist; j++)
            if (r.meta.exist[j].site == l) cur = &r.meta.exist[j];
        /* A row we have no clocks for whose adds our frontier covers was deleted and collected
         * here: its adds were all removed (a till restored from an old backup may still show
         * it). */
        tsync__hlc rmv = e->rmv;
        if (!r.had_meta && ic->lfront && l < ic->nls && e->add <= ic->lfront[l] && e->add > rmv)
            rmv = e->add;
        if (!cur || e->add > cur->add || rmv > cur->rmv) changed = 1;
        rc = tsync__rowmeta_exist_merge(&r.meta, l, e->add, rmv);
    }

    /* fields: last writer wins by (hlc, site id) */
    for (uint32_t k = 0; rc == 0 && k < row->ncols; k++) {
        const tsync__snap_col *e = &row->cols[k];
        int col = ct->map[e->col];
        if (t->is_counter[col]) continue; /* a plain value for a counter: ignored, as merge does */
        const uint8_t *rid = ic->c->sites[e->site].site;
        tsync__colclk cur = r.meta.col[col];
        const uint8_t *lid = lsite_id(ic, cur.site);
        int same = cur.hlc == e->hlc && memcmp(lid, rid, TSYNC__SITE_BYTES) == 0;
        /* By the column's policy (LWW, or a max/min register); the same clock and site: the same
         * write, or two branches of a fork, ordered by value so every replica picks the same. */
        int cmp;
        if ((rc = tsync__rw_pick(&ic->w, &r, col, &e->val, e->hlc, rid, lid, &cmp))) break;
        int wins = cmp > 0;
        if (cur.hlc && !same &&
            (t->policy[col] == TSYNC__POLICY_LWW || t->policy[col] == TSYNC__POLICY_REVIEW)) {
            /* A snapshot has no history. The pair is taken as concurrent when the winning side
             * did not yet hold the losing write: what merge concludes from a batch's overwritten
             * clock, up to a winner whose state held the loser only after writing (then the
             * exporter recorded the conflict, not us). */
            int seen = wins ? snap_saw(ic, cur.site, cur.hlc) : we_saw(ic, e->site, e->hlc);
            if (!seen && !wins && (rc = conflict_known(ic, &r, col, e->hlc, rid, &seen))) break;
            if (!seen && (rc = tsync__rw_conflict(&ic->w, &r, col, &e->val, e->hlc, rid, lid, wins,
                                                  ic->now_ms)))
                break;
        }
        if (wins) {
            uint32_t l;
            if ((rc = site_local(ic, e->site, &l))) break;
            r.meta.col[col] = (tsync__colclk){e->hlc, l};
            r.vals[col] = e->val;
            r.mask |= 1ULL << col;
            changed = 1;
        }
    }

    /* counters: per site, max of P and of N */
    for (uint32_t k = 0; rc == 0 && k < row->nctrs; k++) {
        const tsync__snap_ctr *e = &row->ctrs[k];
        int col = ct->map[e->col], cchg = 0;
        for (uint32_t j = 0; rc == 0 && j < e->n; j++) {
            uint32_t l;
            if ((rc = site_local(ic, e->v[j].site, &l))) break;
            const tsync__ctrset *cs = tsync__rowmeta_ctr(&r.meta, col);
            const tsync__pn *cur = NULL;
            for (size_t q = 0; cs && q < cs->n; q++)
                if (cs->v[q].site == l) cur = &cs->v[q];
            if (!cur || e->v[j].p > cur->p || e->v[j].n > cur->n) cchg = 1;
            rc = tsync__rowmeta_ctr_merge(&r.meta, col, l, e->v[j].p, e->v[j].n);
        }
        if (rc == 0 && cchg) {
            r.vals[col] =
                (tsync__val){.type = TSYNC__V_INT, .i = tsync__rowmeta_ctr_value(&r.meta, col)};
            r.mask |= 1ULL << col;
            changed = 1;
        }
    }

    if (rc == 0 && changed) {
        if (ic->rep) ic->rep->merged++;
        rc = tsync__rw_write(&ic->w, &r);
    } else if (rc == 0 && ic->rep) {
        ic->rep->duplicates++;
    }
    tsync__rowmeta_clear(&r.meta);
    if (key != kb) free(key);
    return rc;
}

/* Prepares the per-chunk maps: sites known here, and each chunk table's local table. */
static int chunk_maps(ictx *ic, const tsync__snap_chunk *c)
{
    ic->c = c;
    free(ic->smap);
    free(ic->tabs);
    ic->smap = calloc(c->nsites + 1, sizeof *ic->smap);
    ic->tabs = calloc(c->ntables + 1, sizeof *ic->tabs);
    if (!ic->smap || !ic->tabs) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < c->nsites; i++)
        for (uint32_t l = 0; l < ic->nls; l++)
            if (ic->ls[l].known && memcmp(ic->ls[l].id, c->sites[i].site, TSYNC__SITE_BYTES) == 0) {
                ic->smap[i] = l + 1;
                break;
            }
    /* The library's own table of resolutions, made here before the table pointers are taken
     * (making it reloads the cache); capture goes off again after its unparking. */
    for (uint32_t i = 0; i < c->ntables; i++)
        if (tsync__name_eq(c->tables[i].name, c->tables[i].name_len, TSYNC__RESOLVED,
                           strlen(TSYNC__RESOLVED)) &&
            !tsync__table_by_name(ic->s, TSYNC__RESOLVED, strlen(TSYNC__RESOLVED))) {
            int rc = tsync__resolved_ensure(ic->s);
            if (rc == 0) rc = tsync__capture_off(ic->s, 1);
            if (rc) return rc;
        }
    for (uint32_t i = 0; i < c->ntables; i++) {
        const tsync__btable *bt = &c->tables[i];
        ctab *ct = &ic->tabs[i];
        ct->t = tsync__table_by_name(ic->s, bt->name, bt->name_len);
        if (!ct->t) continue;
        for (uint32_t k = 0; k < bt->ncols; k++)
            ct->map[k] = tsync__col_by_name(ct->t, bt->cols[k], bt->col_len[k]);
        if ((int)bt->npk != ct->t->npk) ct->why = "its key columns differ here";
        for (uint32_t k = 0; !ct->why && k < bt->npk; k++)
            if (ct->map[k] != ct->t->pk[k]) ct->why = "its key columns differ here";
        /* A column that merges by another rule there (max, min, review, LWW) would merge
         * differently here: refused until the definitions agree. */
        for (uint32_t k = 0; !ct->why && k < bt->ncols; k++)
            if (ct->map[k] >= 0 && tsync__btable_policy(bt, k) != ct->t->policy[ct->map[k]])
                ct->why = "a column policy (max, min, review) differs there";
    }
    return 0;
}

/* Raises the vector to the snapshot's: for each origin we are behind on, its head becomes the
 * snapshot's and a stub in the log marks the batches held only as state. */
static int take_vector(ictx *ic, const tsync__vv *vv, const tsync__snap_site *keys)
{
    tsync_store *s = ic->s;
    char sh[13];
    for (size_t i = 0; i < vv->n; i++) {
        const tsync__vv_entry *e = &vv->e[i];
        if (e->seq == 0) continue;
        tsync__hex(e->site, 6, sh);
        if (memcmp(e->site, s->site, TSYNC__SITE_BYTES) == 0) {
            if (e->seq > ic->ls[s->local_idx].seq)
                tsync__report_msg(
                    ic->rep,
                    "snapshot: it holds %llu batches of this database, which wrote %llu: "
                    "left as is (a copy of this database may be writing with our identity)",
                    (unsigned long long)e->seq, (unsigned long long)ic->ls[s->local_idx].seq);
            continue;
        }
        uint32_t idx;
        int rc = tsync__site_index(s, e->site, keys[i].pk, keys[i].inc, &idx);
        if (rc) return rc;
        uint64_t ours = 0;
        int64_t frozen = -1;
        if (idx < ic->nls && ic->ls[idx].known) {
            ours = ic->ls[idx].seq;
            frozen = ic->ls[idx].frozen;
        }
        if (e->seq <= ours) continue;
        if (frozen >= 0) {
            tsync__report_msg(
                ic->rep,
                "snapshot: site %s is frozen at batch %lld after a fork; its head stays "
                "at batch %llu (the snapshot has %llu), its rows were merged",
                sh, (long long)frozen, (unsigned long long)ours, (unsigned long long)e->seq);
            continue;
        }
        sqlite3_stmt *st = tsync__prep(s, "UPDATE tsync_sites SET seq=?2, hash=?3 WHERE idx=?1");
        if (!st) return TSYNC_EIO;
        sqlite3_bind_int64(st, 1, idx);
        sqlite3_bind_int64(st, 2, (int64_t)e->seq);
        sqlite3_bind_blob(st, 3, e->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
        if ((rc = step_done(s, st, "update vector"))) return rc;
        st = tsync__prep(s, "INSERT INTO tsync_log(site, seq, hash, body, sig) "
                            "VALUES(?1, ?2, ?3, zeroblob(0), NULL)");
        if (!st) return TSYNC_EIO;
        sqlite3_bind_int64(st, 1, idx);
        sqlite3_bind_int64(st, 2, (int64_t)e->seq);
        sqlite3_bind_blob(st, 3, e->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
        if ((rc = step_done(s, st, "write log stub"))) return rc;
    }
    return 0;
}

/* A peer holds more of our own site than our log: this database went back (an old copy written
 * over it). A new incarnation first; the old site is then taken like any other's
 * (store/identity.c). */
static int renew_if_behind(tsync_store *s, const tsync__vv *vv)
{
    uint64_t theirs = tsync__vv_seq(vv, s->site), head = 0;
    sqlite3_stmt *st = theirs ? tsync__prep(s, "SELECT seq FROM tsync_sites WHERE idx=?1") : NULL;
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, s->local_idx);
    if (sqlite3_step(st) == SQLITE_ROW) head = (uint64_t)sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    if (theirs > head && !s->read_only) return tsync__identity_renew(s, head, theirs);
    return 0;
}

static int check_vv_sorted(const tsync__vv *vv)
{
    for (size_t i = 1; i < vv->n; i++)
        if (memcmp(vv->e[i - 1].site, vv->e[i].site, TSYNC__SITE_BYTES) >= 0)
            return tsync__err(TSYNC_EINVAL, "snapshot refused: its vector is not sorted by site "
                                            "id, or names a site twice");
    return 0;
}

/* Pass 1 over one chunk, touching nothing: it decodes, the keys of the vector's sites it
 * describes go to keys[], its highest clock raises *maxh (with that clock's site). */
static int check_chunk(const uint8_t *chunk, size_t len, size_t i, size_t n, const tsync__vv *vv,
                       tsync__snap_site *keys, tsync__hlc *maxh, uint8_t maxsite[])
{
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__snap_reader it;
    tsync__snap_row row;
    int rc = tsync__snap_open(&it, chunk, len, &a, err);
    for (uint32_t k = 0; rc == 0 && k < it.hdr.nsites; k++) {
        const tsync__snap_site *cs = &it.hdr.sites[k];
        const tsync__vv_entry *e = cs->has_key ? tsync__vv_get(vv, cs->site) : NULL;
        if (e) keys[e - vv->e] = *cs;
    }
    while (rc == 0 && it.next < it.nrows && (rc = tsync__snap_next(&it, &row)) == 0) {
        for (uint32_t k = 0; k < row.nexist; k++) {
            tsync__hlc h =
                row.exist[k].add > row.exist[k].rmv ? row.exist[k].add : row.exist[k].rmv;
            if (h > *maxh)
                *maxh = h, memcpy(maxsite, it.hdr.sites[row.exist[k].site].site, TSYNC__SITE_BYTES);
        }
        for (uint32_t k = 0; k < row.ncols; k++)
            if (row.cols[k].hlc > *maxh)
                *maxh = row.cols[k].hlc,
                memcpy(maxsite, it.hdr.sites[row.cols[k].site].site, TSYNC__SITE_BYTES);
    }
    if (rc == 0) rc = tsync__snap_close(&it);
    tsync__snap_reader_free(&it);
    tsync__arena_free(&a);
    if (rc) {
        char of[32] = "";
        if (n) snprintf(of, sizeof of, " of %zu", n);
        rc = tsync__err(rc, "snapshot refused: chunk %zu%s: %s", i, of, err);
    }
    return rc;
}

/* Every origin the vector moves must be described (key and incarnation) by some chunk. */
static int check_keys(const tsync__vv *vv, const tsync__snap_site *keys)
{
    for (size_t i = 0; i < vv->n; i++)
        if (vv->e[i].seq && !keys[i].has_key) {
            char sh[13];
            tsync__hex(vv->e[i].site, 6, sh);
            return tsync__err(TSYNC_ECORRUPT,
                              "snapshot refused: its vector names site %s (batch %llu) but no "
                              "chunk gives that site's key and incarnation",
                              sh, (unsigned long long)vv->e[i].seq);
        }
    return 0;
}

static int check_skew(tsync_store *s, tsync__hlc maxh, const uint8_t maxsite[], uint64_t now)
{
    if (!tsync__hlc_too_far(maxh, now, s->skew_bound_ms)) return 0;
    char sh[13];
    tsync__hex(maxsite, 6, sh);
    return tsync__err(TSYNC_ECLOCKSKEW,
                      "snapshot refused: a clock of site %s is %llu ms ahead of ours (more than "
                      "%llu ms); ask again once the clocks agree",
                      sh, (unsigned long long)(tsync__hlc_ms(maxh) - now),
                      (unsigned long long)s->skew_bound_ms);
}

/* Opens the write transaction rows are merged in: sealed, capture off, our sites loaded. */
static int ic_begin(ictx *ic)
{
    tsync_store *s = ic->s;
    int rc;
    if ((rc = tsync__begin(s))) return rc;
    if ((rc = tsync__seal_locked(s, NULL)) || (rc = tsync__capture_off(s, 1))) goto fail;
    free(ic->ls);
    ic->ls = NULL;
    ic->nhi = 0;
    if ((rc = tsync_snap__load_sites(s, &ic->ls, &ic->nls))) goto fail;
    free(ic->lfront);
    ic->lfront = NULL;
    if ((rc = tsync__front_local(s, ic->nls, &ic->lfront))) goto fail;
    if (s->local_idx >= ic->nls) {
        rc = tsync__err(TSYNC_ECORRUPT, "tsync_sites lacks this database's own site");
        goto fail;
    }
    return 0;
fail:
    tsync__rollback(s);
    tsync__capture_off(s, 0);
    return rc;
}

/* Ends ic_begin's transaction: commits when rc is 0, else rolls back; returns the outcome. */
static int ic_end(ictx *ic, int rc)
{
    tsync__rw_free(&ic->w);
    if (rc == 0) {
        tsync__capture_off(ic->s, 0);
        return tsync__commit(ic->s);
    }
    tsync__rollback(ic->s);
    tsync__capture_off(ic->s, 0);
    return rc;
}

/* Keeps the snapshot's frontier (by site id) and starts noting the keys it carries. */
static int take_front(ictx *ic, const tsync__snap_chunk *c)
{
    ic->front = calloc(c->nfront, sizeof *ic->front);
    if (!ic->front) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < c->nfront; i++) {
        memcpy(ic->front[i].site, c->sites[c->front[i].site].site, TSYNC__SITE_BYTES);
        ic->front[i].hlc = c->front[i].hlc;
    }
    ic->nfront = c->nfront;
    return tsync__front_seen_open(ic->s);
}

/* Once every chunk is in: the local rows the snapshot lacks and its frontier covers are deleted,
 * and our frontier takes the snapshot's (so that our snapshots delete them too). */
static int front_finish(ictx *ic)
{
    if (!ic->nfront) return 0;
    size_t n = 0;
    int rc = tsync__front_sweep(&ic->w, ic->front, ic->nfront, &n);
    if (rc == 0) rc = tsync__front_raise(ic->s, ic->front, ic->nfront);
    if (rc == 0 && n)
        tsync__report_msg(ic->rep, "%zu rows deleted: the exporter deleted and collected them", n);
    return rc;
}

/* Pass 2 over chunk i, inside ic_begin's transaction. */
static int apply_chunk(ictx *ic, const uint8_t *chunk, size_t len, size_t i)
{
    char err[TSYNC__ERRLEN];
    tsync__arena a = {0};
    tsync__snap_reader it;
    tsync__snap_row row;
    int rc = 0;
    ic->chunk = i;
    /* decoded once already: only running out of memory can fail here */
    int drc = tsync__snap_open(&it, chunk, len, &a, err);
    if (drc == 0) {
        rc = chunk_maps(ic, &it.hdr);
        if (rc == 0 && it.hdr.nfront && !ic->nfront) rc = take_front(ic, &it.hdr);
        while (rc == 0 && it.next < it.nrows && (drc = tsync__snap_next(&it, &row)) == 0)
            rc = apply_row(ic, &row);
        if (rc == 0 && drc == 0) drc = tsync__snap_close(&it);
    }
    if (drc) rc = tsync__err(drc, "snapshot refused: chunk %zu: %s", i, err);
    tsync__snap_reader_free(&it);
    tsync__arena_free(&a);
    return rc;
}

/* Raises the local HLC to the highest clock merged (never back). */
static int raise_hlc(tsync_store *s, tsync__hlc maxh)
{
    if (!maxh) return 0;
    tsync__hlc last;
    int rc = tsync__hlc_load(s, &last);
    if (rc) return rc;
    tsync__hlc nl = tsync__hlc_observe(last, maxh);
    return nl != last ? tsync__hlc_store(s, nl) : 0;
}

static void ic_free(ictx *ic)
{
    tsync__rw_free(&ic->w);
    free(ic->ls);
    free(ic->smap);
    free(ic->tabs);
    free(ic->hi);
    free(ic->front);
    free(ic->lfront);
    if (ic->s) tsync__front_seen_drop(ic->s);
    memset(ic, 0, sizeof *ic);
}

static int refused_code(int rc)
{
    return rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION || rc == TSYNC_EREFUSED ||
           rc == TSYNC_ECLOCKSKEW;
}

int tsync__snap_import(tsync_store *s, const uint8_t *const *chunks, const size_t *lens, size_t n,
                       const tsync__vv *vv, tsync_merge_report *report)
{
    static const tsync__vv empty;
    if (!vv) vv = &empty;
    if (!chunks || !lens || n == 0)
        return tsync__err(TSYNC_EINVAL,
                          "snapshot refused: no chunks (a snapshot has at least one)");
    if (!sqlite3_get_autocommit(s->db))
        return tsync__err(TSYNC_EINVAL, "cannot import a snapshot inside an open transaction");
    int rc = check_vv_sorted(vv);
    if (rc || (rc = renew_if_behind(s, vv))) return rc;

    /* Pass 1, touching nothing: every chunk decodes, every origin of the vector is described,
     * no clock is too far ahead. */
    tsync__snap_site *keys = calloc(vv->n + 1, sizeof *keys);
    if (!keys) return tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__hlc maxh = 0;
    uint8_t maxsite[TSYNC__SITE_BYTES] = {0};
    for (size_t i = 0; rc == 0 && i < n; i++)
        rc = check_chunk(chunks[i], lens[i], i, n, vv, keys, &maxh, maxsite);
    if (rc == 0) rc = check_keys(vv, keys);
    uint64_t now = tsync__now_ms(s);
    if (rc == 0) rc = check_skew(s, maxh, maxsite, now);
    if (rc) {
        free(keys);
        if (report && rc != TSYNC_ENOMEM) report->refused++;
        return rc;
    }

    /* Pass 2: one transaction. */
    ictx ic;
    memset(&ic, 0, sizeof ic);
    ic.s = s;
    ic.rep = report;
    ic.w.s = s;
    ic.w.rep = report;
    ic.vv = vv;
    ic.now_ms = now;
    ic.nchunks = n;
    if ((rc = ic_begin(&ic)) == 0) {
        for (size_t i = 0; rc == 0 && i < n; i++) rc = apply_chunk(&ic, chunks[i], lens[i], i);
        if (rc == 0) rc = front_finish(&ic);
        if (rc == 0) rc = take_vector(&ic, vv, keys);
        if (rc == 0) rc = raise_hlc(s, maxh);
        rc = ic_end(&ic, rc);
    }
    if (report && (rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION || rc == TSYNC_EREFUSED))
        report->refused++;
    ic_free(&ic);
    free(keys);
    return rc;
}

/* ---------------------------------------------------------------- streaming, a chunk at a time */

struct tsync__snap_in {
    tsync_store *s;
    tsync__vv vv;           /* the vector from SNAPSHOT_BEGIN (a copy) */
    tsync__snap_site *keys; /* per vector entry: its site's key, once a chunk gave it */
    size_t next;            /* chunks merged */
    ictx ic;                /* reused from chunk to chunk (the conflict lookups' cache too) */
};

int tsync__snap_in_open(tsync_store *s, const tsync__vv *vv, tsync__snap_in **out)
{
    *out = NULL;
    static const tsync__vv empty;
    if (!vv) vv = &empty;
    int rc = check_vv_sorted(vv);
    if (rc || (rc = renew_if_behind(s, vv))) return rc;
    tsync__snap_in *in = calloc(1, sizeof *in);
    if (!in || !(in->keys = calloc(vv->n + 1, sizeof *in->keys))) {
        free(in);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    in->s = s;
    for (size_t i = 0; i < vv->n; i++)
        if (tsync__vv_set(&in->vv, vv->e[i].site, vv->e[i].seq, vv->e[i].hash)) {
            tsync__snap_in_free(in);
            return tsync__err(TSYNC_ENOMEM, "out of memory");
        }
    in->ic.s = s;
    in->ic.w.s = s;
    in->ic.vv = &in->vv;
    *out = in;
    return 0;
}

int tsync__snap_in_chunk(tsync__snap_in *in, const uint8_t *chunk, size_t len,
                         tsync_merge_report *report)
{
    tsync_store *s = in->s;
    if (!sqlite3_get_autocommit(s->db))
        return tsync__err(TSYNC_EINVAL, "cannot import a snapshot inside an open transaction");
    tsync__hlc maxh = 0;
    uint8_t maxsite[TSYNC__SITE_BYTES] = {0};
    uint64_t now = tsync__now_ms(s);
    int rc = check_chunk(chunk, len, in->next, 0, &in->vv, in->keys, &maxh, maxsite);
    if (rc == 0) rc = check_skew(s, maxh, maxsite, now);
    if (rc) {
        if (report && refused_code(rc)) report->refused++;
        return rc;
    }
    ictx *ic = &in->ic;
    ic->rep = report;
    ic->w.rep = report;
    ic->now_ms = now;
    if ((rc = ic_begin(ic)) == 0) {
        rc = apply_chunk(ic, chunk, len, in->next);
        if (rc == 0) rc = raise_hlc(s, maxh);
        rc = ic_end(ic, rc);
    }
    if (rc == 0) in->next++;
    if (report && refused_code(rc)) report->refused++;
    return rc;
}

int tsync__snap_in_finish(tsync__snap_in *in, tsync_merge_report *report)
{
    int rc = in->next ? check_keys(&in->vv, in->keys)
                      : tsync__err(TSYNC_EINVAL,
                                   "snapshot refused: no chunks (a snapshot has at least one)");
    if (rc) {
        if (report && refused_code(rc)) report->refused++;
        return rc;
    }
    ictx *ic = &in->ic;
    ic->rep = report;
    ic->w.rep = report;
    if ((rc = ic_begin(ic)) == 0) {
        rc = front_finish(ic);
        if (rc == 0) rc = take_vector(ic, &in->vv, in->keys);
        rc = ic_end(ic, rc);
    }
    return rc;
}

size_t tsync__snap_in_merged(const tsync__snap_in *in)
{
    return in ? in->next : 0;
}

void tsync__snap_in_free(tsync__snap_in *in)
{
    if (!in) return;
    ic_free(&in->ic);
    tsync__vv_free(&in->vv);
    free(in->keys);
    free(in);
}
