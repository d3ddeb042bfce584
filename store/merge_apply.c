/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/merge_apply.c — folding the rows of merged batches (store/merge_int.h): per row, the
 * existence OR-set, each LWW column and each PN-counter are merged in memory with the row's clocks
 * here, conflicts recorded as they are found, and what this database cannot take parked; the rows
 * are then written once each by the shared row writer (store/rowwrite.c). Also what a batch on its
 * way in keeps (its header, why it waits).
 *
 * Design notes
 * - Row changes are folded in memory per row (clocks and winning values), and written to SQLite
 *   once per row when the folded rows reach TSYNC__MERGE_FLUSH_ROWS, and at the end: 100k updates
 *   of 10k products touch 10k rows, and a merge of 1M rows holds at most 20,000 at once. A row
 *   written by an earlier flush is read back from the database like any other, inside the same
 *   transaction, so where the flushes fall does not change the result (tests/store/
 *   test_scale_merge.c). A folded value points into the batch's body, which lives as long as the
 *   merge; the batch's decoded arrays are freed long before.
 * - What this database cannot apply (a table or column it lacks) is parked, never dropped: the
 *   batch stays in the log and tsync_parked points at the row, to be applied after the schema
 *   catches up (store/unpark.c). Clocks make late application give the same result.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "merge_int.h"
#include "prep_int.h"
#include "store/sync.h"

void tsync_merge__init(mctx *c, tsync_store *s, tsync_merge_report *rep)
{
    memset(c, 0, sizeof *c);
    c->s = s;
    c->rep = rep;
    c->w.s = s;
    c->w.rep = rep;
    c->now_ms = tsync__ref_now_ms(s);
}

void tsync_merge__report(mctx *c, const char *fmt, ...)
{
    char buf[TSYNC__REPORT_LINE];
    va_list ap;
    va_start(ap, fmt);
    tsync__report_vmsg(c->rep, buf, fmt, ap);
    va_end(ap);
    if (strncmp(buf, "refused", 7) == 0 && !c->refuse_msg[0])
        snprintf(c->refuse_msg, sizeof c->refuse_msg, "%s", buf);
}

const char *tsync_merge__short_site(const uint8_t *id, char out[13])
{
    tsync__hex(id, 6, out);
    return out;
}

/* ---------------------------------------------------------------- batches on their way in */

#define REASON_LEN 256

/* Set at every pass of apply_ready while ib waits, so the buffer is kept. */
void tsync_merge__reason(inbatch *ib, const char *fmt, ...)
{
    if (!ib->reason && !(ib->reason = malloc(REASON_LEN))) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ib->reason, REASON_LEN, fmt, ap);
    va_end(ap);
}

void tsync_merge__list_free(inbatch *list, size_t n)
{
    for (size_t i = 0; list && i < n; i++) free(list[i].reason);
    free(list);
}

/* scratch holds only headers (the check frees its rows as it goes): freed every 256 KB of bodies
 * rather than per batch, since a merge of 100k small batches would allocate a chunk for each. */
int tsync_merge__head(mctx *c, inbatch *ib, tsync__batch *b, tsync__arena *scratch,
                      size_t *scratch_bytes, char err[TSYNC__ERRLEN])
{
    if (*scratch_bytes > (256u << 10)) {
        tsync__arena_free(scratch);
        *scratch_bytes = 0;
    }
    *scratch_bytes += ib->body_len;
    int rc = tsync__batch_check(ib->body, ib->body_len, b, scratch, err);
    if (rc) return rc;
    mdep *deps = tsync__arena_array(&c->a, b->ndeps, sizeof *deps);
    if (b->ndeps && !deps) {
        snprintf(err, TSYNC__ERRLEN, "out of memory");
        return TSYNC_ENOMEM;
    }
    for (uint32_t d = 0; d < b->ndeps; d++) {
        memcpy(deps[d].site, b->sites[b->deps[d].site], TSYNC__SITE_BYTES);
        deps[d].seq = b->deps[d].seq;
    }
    ib->hlc_hi = b->hlc_hi;
    ib->ndeps = b->ndeps;
    ib->deps = deps;
    return 0;
}

/* ---------------------------------------------------------------- sites */

int tsync_merge__load_sites(mctx *c)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(c->s, &st,
                                 "SELECT idx, site, pk, seq, hash, frozen_seq FROM "
                                 "tsync_sites ORDER BY idx",
                                 "read sites");
    if (rc) return rc;
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

int tsync_merge__site_local(mctx *c, const uint8_t id[TSYNC__SITE_BYTES], const uint8_t *pk,
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

/* ---------------------------------------------------------------- folding rows */

#define SEEN_BITS ((size_t)1 << 23) /* 1 MB: ~3% false positives at 1M rows, each a look-up */

/* Whether table t had no clocks when this merge first met it (after the local seal): then it had
 * no rows and no tombstones, and only this merge writes it. */
static int table_fresh(mctx *c, tsync__table *t, int *fresh)
{
    *fresh = 0;
    for (size_t i = 0; i < c->ntables; i++)
        if (c->tables[i].id == t->id) {
            *fresh = c->tables[i].fresh;
            return 0;
        }
    sqlite3_str *q = sqlite3_str_new(c->s->db);
    sqlite3_str_appendf(q, "SELECT 1 FROM %s LIMIT 1", t->qclk);
    char *sql = tsync__sql_finish(q);
    if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
    sqlite3_stmt *st = NULL;
    int x = sqlite3_prepare_v2(c->s->db, sql, -1, &st, NULL);
    sqlite3_free(sql);
    if (x == SQLITE_OK) x = sqlite3_step(st);
    sqlite3_finalize(st);
    if (x != SQLITE_ROW && x != SQLITE_DONE)
        return tsync__err_sqlite(c->s->db, x, "read row clocks");
    *fresh = x == SQLITE_DONE;
    if (*fresh && !c->seen && !(c->seen = calloc(SEEN_BITS / 8, 1))) *fresh = 0;
    struct mtable *nt = realloc(c->tables, (c->ntables + 1) * sizeof *nt);
    if (!nt) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->tables = nt;
    c->tables[c->ntables++] = (struct mtable){t->id, *fresh};
    return 0;
}

/* Adds name to the store's set (once). */
static void merged_add(tsync_store *s, const char *name)
{
    for (size_t k = 0; k < s->nmerged_tables; k++)
        if (!strcmp(s->merged_tables[k], name)) return;
    char **v = realloc(s->merged_tables, (s->nmerged_tables + 1) * sizeof *v);
    if (!v) return;
    s->merged_tables = v;
    if ((v[s->nmerged_tables] = strdup(name))) s->nmerged_tables++;
}

/* After a commit: the tables whose rows c folded (each met through table_fresh above, so
 * c->tables lists them already) join the store's set. Out of memory
 * loses a name: the set is a hint for refreshing a screen, never a correctness matter. */
void tsync_merge__tables_note(const mctx *c)
{
    tsync_store *s = c->s;
    for (size_t i = 0; i < c->ntables; i++)
        for (int j = 0; j < s->ntables; j++)
            if (s->tables[j].id == c->tables[i].id) merged_add(s, s->tables[j].name);
}

void tsync__sync_merged_tables_all(tsync_store *s)
{
    if (tsync__tables_refresh(s) != 0) return;
    for (int j = 0; j < s->ntables; j++) merged_add(s, s->tables[j].name);
}

void tsync__sync_merged_tables_take(tsync_store *s, char ***names, size_t *n)
{
    *names = s->merged_tables;
    *n = s->nmerged_tables;
    s->merged_tables = NULL;
    s->nmerged_tables = 0;
}

void tsync__sync_merged_tables_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* Marks the row of hash h as folded; returns whether it may have been before (a Bloom filter:
 * never a false "no"). */
static int seen_before(mctx *c, uint64_t h)
{
    uint64_t step = (h >> 32) | 1;
    int all = 1;
    for (int i = 0; i < 3; i++) {
        size_t bit = (size_t)(h + (uint64_t)i * step) & (SEEN_BITS - 1);
        all &= c->seen[bit >> 3] >> (bit & 7) & 1;
        c->seen[bit >> 3] |= (uint8_t)(1u << (bit & 7));
    }
    return all;
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
    tsync__rmap_ent *e = tsync__rmap_get(&c->rows, &c->ra, t->id, k, klen, 1);
    if (k != kb) free(k);
    if (!e) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    if (e->val) return e->val;
    mrow *r = tsync__arena_alloc(&c->ra, sizeof *r);
    if (!r) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    r->t = t;
    r->vals = tsync__arena_alloc(&c->ra, (size_t)t->ncols * sizeof *r->vals);
    if (!r->vals) {
        *rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    r->key = e->key;
    r->klen = e->klen;
    int fresh = 0;
    if ((*rc = table_fresh(c, t, &fresh))) return NULL;
    if (fresh && !seen_before(c, e->h)) {
        /* new here: what tsync__rw_load finds for a row without clocks */
        if ((*rc = tsync__rowmeta_init(&r->meta, t->ncols))) return NULL;
    } else if ((*rc = tsync__rw_load(c->s, r))) {
        return NULL;
    }
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

/* Records a conflict (the sites by local index: an index out of range records no site). */
static int record_conflict(mctx *c, mrow *r, int col, const tsync__val *remote, tsync__hlc rhlc,
                           uint32_t rsite, int remote_wins)
{
    uint32_t ls = r->meta.col[col].site;
    return tsync__rw_conflict(&c->w, r, col, remote, rhlc,
                              rsite < c->nsites ? c->sites[rsite].id : NULL,
                              ls < c->nsites ? c->sites[ls].id : NULL, remote_wins, c->now_ms);
}

int tsync_merge__park(mctx *c, uint32_t site, uint64_t seq, uint32_t row, const char *tbl,
                      size_t tlen, const char *col, size_t clen, const char *reason)
{
    return tsync__rw_park(&c->w, site, seq, row, tbl, tlen, col, clen, reason);
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
                           "SELECT tsync_log_body(site, seq, body) FROM tsync_log WHERE "
                           "site=?1 AND seq<=?2 ORDER BY seq",
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

int tsync_merge__apply_batch(mctx *c, inbatch *ib, const char *only_table, const int64_t *only_rows,
                             size_t nonly)
{
    const tsync__batch *b = ib->full;
    tsync__batch full;
    tsync_store *s = c->s;
    int rc = 0;
    if (c->ba_bytes > TSYNC__MERGE_DECODE_BYTES) {
        tsync__arena_free(&c->ba);
        c->ba_bytes = 0;
    }
    if (!b) {
        /* The body decoded when the merge began, so a failure here is memory. */
        char err[TSYNC__ERRLEN];
        if ((rc = tsync__batch_decode(ib->body, ib->body_len, &full, &c->ba, err)))
            return tsync__err(rc, "batch %llu: %s", (unsigned long long)ib->seq, err);
        b = &full;
        c->ba_bytes += ib->body_len;
    }
    uint32_t *bsite = tsync__arena_alloc(&c->ba, (b->nsites ? b->nsites : 1) * sizeof *bsite);
    c->ba_bytes += (b->nsites ? b->nsites : 1) * sizeof *bsite;
    if (!bsite) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < b->nsites; i++)
        if ((rc = tsync_merge__site_local(c, b->sites[i], NULL, NULL, &bsite[i]))) return rc;
    bsite[0] = ib->site;
    /* Pass 2 of a file merge: the changes a later change of this file supersedes are left out
     * (store/merge_skip.c). A batch the summary did not count means something else applies. */
    int ssite = -1;
    if (c->skip && !only_table && tsync__mskip_active(c->skip)) {
        ssite = tsync__mskip_site(c->skip, b->origin);
        if (ssite < 0 || c->fork_site) tsync__mskip_disable(c->skip), ssite = -1;
    }

    /* Per batch table: local table and column mapping (-1: missing here). */
    for (uint32_t ti = 0; ti < b->ntables; ti++) {
        tsync__btable *bt = &b->tables[ti];
        if (only_table && !tsync__name_eq(only_table, strlen(only_table), bt->name, bt->name_len))
            continue;
        tsync__table *t = tsync__table_by_name(s, bt->name, bt->name_len);
        int map[TSYNC__MAX_COLS];
        uint8_t polmis[TSYNC__MAX_COLS] = {0};
        const char *why = NULL;
        if (t) {
            for (uint32_t k = 0; k < bt->ncols; k++) {
                map[k] = tsync__col_by_name(t, bt->cols[k], bt->col_len[k]);
                polmis[k] = map[k] >= 0 && tsync__btable_policy(bt, k) != t->policy[map[k]];
            }
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
                if (!only_table &&
                    (rc = tsync_merge__park(c, ib->site, ib->seq, ri, bt->name, bt->name_len, NULL,
                                            0, t ? why : "no such replicated table here")))
                    return rc;
                continue;
            }
            void *start = NULL;
            if (ssite >= 0 && tsync__mskip_row(c->skip, ssite, t, bt, br, &start)) continue;
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
                        (rc = tsync_merge__park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                                bt->cols[bc->col], bt->col_len[bc->col],
                                                "no such column here")))
                        return rc;
                    continue;
                }
                if (polmis[bc->col]) {
                    /* Merged by another rule there (max, min, review or LWW), this write would
                     * end elsewhere than it does there: parked until the definitions agree. */
                    if (!only_table &&
                        (rc = tsync_merge__park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                                bt->cols[bc->col], bt->col_len[bc->col],
                                                "a column policy (max, min, review) differs "
                                                "there")))
                        return rc;
                    continue;
                }
                if (t->is_counter[col]) {
                    /* A plain value there for what is a counter here cannot be counted: it is
                     * parked (and shown) until the definitions agree, not dropped unseen. */
                    if (!only_table &&
                        (rc = tsync_merge__park(c, ib->site, ib->seq, ri, bt->name, bt->name_len,
                                                bt->cols[bc->col], bt->col_len[bc->col],
                                                "a plain column there is a counter here")))
                        return rc;
                    continue;
                }
                tsync__colclk cur = r->meta.col[col];
                /* LWW, or a max/min register (its value first); the same clock and site only
                 * from two branches of a fork, ordered by value. */
                int cmp;
                if ((rc = tsync__rw_pick(&c->w, r, col, &bc->val, br->hlc, c->sites[ib->site].id,
                                         cur.hlc ? c->sites[cur.site].id : NULL, &cmp)))
                    return rc;
                int wins = cmp > 0;
                /* Concurrent: the writer overwrote something older than what we show. A max/min
                 * register has no loser to show: the join keeps what both meant. */
                if (cur.hlc && (cur.hlc != br->hlc || cur.site != ib->site) &&
                    (t->policy[col] == TSYNC__POLICY_LWW ||
                     t->policy[col] == TSYNC__POLICY_REVIEW)) {
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
                    if (!only_table && (rc = tsync_merge__park(
                                            c, ib->site, ib->seq, ri, bt->name, bt->name_len,
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
            if (start) {
                uint64_t m = tsync__mskip_mask(c->skip, start);
                int won = 1;
                for (int col = 0; col < t->ncols && won; col++)
                    if (m >> col & 1)
                        won = r->meta.col[col].hlc == br->hlc && r->meta.col[col].site == ib->site;
                if (won) tsync__mskip_won(c->skip, start);
            }
        }
    }
    if (b->hlc_hi > c->max_hlc) c->max_hlc = b->hlc_hi;
    return 0;
}

static int row_cmp(const void *pa, const void *pb)
{
    const mrow *a = *(const mrow *const *)pa, *b = *(const mrow *const *)pb;
    if (a->t != b->t) return a->t->id < b->t->id ? -1 : 1;
    return tsync__key_cmp(a->key, a->klen, b->key, b->klen, a->t->npk);
}

int tsync_merge__flush_rows(mctx *c)
{
    int rc = 0;
    /* Writing rows in key order turns random b-tree inserts into near-appends: the same pages
     * stay hot and splits are cheap. The order of rows does not change the result. */
    if (c->nrowlist > 1) qsort(c->rowlist, c->nrowlist, sizeof *c->rowlist, row_cmp);
    for (size_t i = 0; rc == 0 && i < c->nrowlist; i++) rc = tsync__rw_write(&c->w, c->rowlist[i]);
    for (size_t i = 0; i < c->nrowlist; i++) tsync__rowmeta_clear(&c->rowlist[i]->meta);
    c->nrowlist = 0;
    tsync__rmap_free(&c->rows);
    tsync__arena_free(&c->ra);
    return rc;
}

int tsync_merge__maybe_flush(mctx *c)
{
    size_t rows = c->s->merge_flush_rows ? c->s->merge_flush_rows : TSYNC__MERGE_FLUSH_ROWS;
    if (rows == SIZE_MAX) return 0; /* tests: the reference, one flush at the end */
    if (rows > TSYNC__MERGE_FLUSH_ROWS_SKIP &&
        tsync__mskip_kept_bytes(c->skip) > TSYNC__MERGE_SKIP_BIG)
        rows = TSYNC__MERGE_FLUSH_ROWS_SKIP;
    if (c->nrowlist < rows) return 0;
    return tsync_merge__flush_rows(c);
}

void tsync_merge__free(mctx *c)
{
    for (size_t i = 0; i < c->nrowlist; i++) tsync__rowmeta_clear(&c->rowlist[i]->meta);
    free(c->rowlist);
    tsync__rmap_free(&c->rows);
    tsync__rw_free(&c->w);
    free(c->sites);
    tsync__arena_free(&c->a);
    tsync__arena_free(&c->ra);
    tsync__arena_free(&c->ba);
    free(c->tables);
    free(c->seen);
}
