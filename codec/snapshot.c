/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/snapshot.c — the snapshot chunk's byte format: strict decoding (whole, or a row at a
 * time), encoding, sizes and the transfer hash (codec/snapshot.h; docs/SNAPSHOT.md).
 *
 * Design notes
 * - Like a batch body, a chunk has exactly one encoding: the decoder insists on the smallest form
 *   of every integer, length and count (what msgpack-c writes), so a decoded chunk re-encodes to
 *   the very bytes it came from.
 * - Decoding reads with the one bounded reader of codec/codec.h (tsync__mpr); the helpers here
 *   add the canonical-form checks and a message saying where it went wrong. Every count is
 *   checked against the bytes left before anything is allocated for it.
 * - Rows can be read one at a time into reused buffers (tsync__snap_next): a merge of a large
 *   snapshot needs the memory of one row plus the chunk's dictionaries.
 */
#include <inttypes.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/snapshot.h"

#define TOP_FIELDS  4 /* [format, sites, tables, rows] */
#define TOP_FIELDS2 5 /* format 3: [format, sites, tables, frontier, rows] */
#define SITE_FIELDS 3 /* [site, pk|nil, inc|nil] */
#define ROW_FIELDS  5 /* [table, key, exist, cols, ctrs] */

/* Smallest encodings of the list entries the decoder allocates for, in bytes: a count is then
 * believable only when that many bytes are left, which bounds what a hostile count can allocate. */
#define MIN_SITE 21 /* [bin16, nil, nil] */
#define MIN_ROW  7  /* [table, [key], [], [], []] */
#define MIN_CTR  3  /* [col, []] */

/* ---------------------------------------------------------------- decoder
 *
 * The reads, the canonical checks and the wording of every fault are codec/dec.c's, shared with
 * the batch decoder; snapshot messages carry no prefix (the importer says which chunk). */

typedef tsync__dec dec;

/* Grows a scratch array to hold n elements. */
static bool grow(dec *d, void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < n) nc *= 2;
    void *np = realloc(*p, nc * sz);
    if (!np) return tsync__dec_nomem(d);
    *p = np;
    *cap = nc;
    return true;
}

typedef tsync__snap_reader snapit;

static int cmp_site(const void *a, const void *b)
{
    return memcmp(((const tsync__snap_site *const *)a)[0]->site,
                  ((const tsync__snap_site *const *)b)[0]->site, TSYNC__SITE_BYTES);
}

static int cmp_table(const void *a, const void *b)
{
    const tsync__btable *x = *(const tsync__btable *const *)a,
                        *y = *(const tsync__btable *const *)b;
    /* as SQLite compares names: `Items` and `items` are one table */
    return tsync__name_cmp(x->name, x->name_len, y->name, y->name_len);
}

static bool dec_sites(dec *d, tsync__snap_chunk *c)
{
    uint32_t n;
    if (!tsync__dec_list(d, "sites", &n, MIN_SITE)) return false;
    c->sites = tsync__dec_alloc(d, n, sizeof *c->sites);
    if (n && !c->sites) return false;
    d->l1 = "site";
    for (uint32_t i = 0; i < n; i++) {
        tsync__snap_site *e = &c->sites[i];
        d->i1 = i;
        if (!tsync__dec_tuple(d, "entry", SITE_FIELDS) ||
            !tsync__dec_binfix(d, "id", e->site, TSYNC__SITE_BYTES))
            return false;
        if (tsync__mpr_nil(&d->r)) {
            if (!tsync__dec_nil(d, "incarnation (no key given)")) return false;
            continue;
        }
        if (!tsync__dec_binfix(d, "public key", e->pk, TSYNC__PK_BYTES) ||
            !tsync__dec_binfix(d, "incarnation", e->inc, TSYNC__INC_BYTES))
            return false;
        uint8_t id[TSYNC__SITE_BYTES];
        tsync__site_id(e->pk, e->inc, id);
        if (memcmp(id, e->site, TSYNC__SITE_BYTES) != 0)
            return tsync__dec_fail(d, "id is not BLAKE2b-128(public key || incarnation)");
        e->has_key = 1;
    }
    d->l1 = NULL;
    c->nsites = n;
    if (n > 1) {
        tsync__snap_site **o = tsync__dec_alloc(d, n, sizeof *o);
        if (!o) return false;
        for (uint32_t i = 0; i < n; i++) o[i] = &c->sites[i];
        qsort(o, n, sizeof *o, cmp_site);
        for (uint32_t i = 1; i < n; i++)
            if (memcmp(o[i - 1]->site, o[i]->site, TSYNC__SITE_BYTES) == 0)
                return tsync__dec_fail(d, "sites: site %" PRIu32 " repeats site %" PRIu32,
                                       (uint32_t)(o[i] - c->sites),
                                       (uint32_t)(o[i - 1] - c->sites));
    }
    return true;
}

/* pol: the chunk's format when it carries column policies (4 or 5), else 0. */
static bool dec_tables(dec *d, tsync__snap_chunk *c, uint64_t **masks, unsigned pol)
{
    uint32_t n;
    char nm[48];
    if (!tsync__dec_tables(d, &n, &c->tables, masks, true, pol != 0)) return false;
    c->ntables = n;
    /* Formats 4 and 5 exactly when some table has policies: one encoding per chunk. */
    bool any = false;
    for (uint32_t i = 0; i < n; i++) any |= c->tables[i].npolicies > 0;
    if (pol && !any) return tsync__dec_fail(d, "format %u without a column policy", pol);
    if (n > 1) {
        tsync__btable **o = tsync__dec_alloc(d, n, sizeof *o);
        if (!o) return false;
        for (uint32_t i = 0; i < n; i++) o[i] = &c->tables[i];
        qsort(o, n, sizeof *o, cmp_table);
        for (uint32_t i = 1; i < n; i++)
            if (cmp_table(&o[i - 1], &o[i]) == 0)
                return tsync__dec_fail(d, "tables: table '%s' is described twice",
                                       tsync__dec_printable(nm, o[i]->name, o[i]->name_len));
    }
    return true;
}

/* The frontier of a format-3 chunk: pairs (site, hlc), sites unique, at least one pair. */
static bool dec_front(dec *d, tsync__snap_chunk *c, uint32_t *stamp)
{
    uint32_t n;
    if (!tsync__dec_list(d, "frontier", &n, 1)) return false;
    if (n == 0 || n % 2)
        return tsync__dec_fail(d,
                               "frontier: %" PRIu32 " items, not a positive "
                               "multiple of 2",
                               n);
    c->nfront = n / 2;
    c->front = tsync__dec_alloc(d, c->nfront, sizeof *c->front);
    if (!c->front) return false;
    for (uint32_t i = 0; i < c->nfront; i++) {
        uint64_t h;
        if (!tsync__dec_idx(d, "frontier site", &c->front[i].site, c->nsites, "sites") ||
            !tsync__dec_uint(d, "frontier clock", &h))
            return false;
        if (h == 0) return tsync__dec_fail(d, "frontier: clock 0");
        if (stamp[c->front[i].site]) return tsync__dec_fail(d, "frontier: a site repeats");
        stamp[c->front[i].site] = 1;
        c->front[i].hlc = h;
    }
    memset(stamp, 0, c->nsites * sizeof *stamp);
    return true;
}

int tsync__snap_open(snapit *it, const uint8_t *buf, size_t len, tsync__arena *a,
                     char err[TSYNC__ERRLEN])
{
    memset(it, 0, sizeof *it);
    dec *d = &it->d;
    if (!tsync__dec_open(d, buf, len, TSYNC__SNAP_CHUNK_MAX_BYTES, a, err, NULL)) return d->rc;
    uint32_t n;
    uint64_t fmt;
    if (!tsync__dec_array(d, "chunk", &n)) return d->rc;
    if (n == 0) return tsync__dec_fail(d, "chunk: empty array"), d->rc;
    if (!tsync__dec_uint(d, "format", &fmt)) return d->rc;
    if (fmt != TSYNC__SNAP_FORMAT && fmt != TSYNC__SNAP_FORMAT_FRONT &&
        fmt != TSYNC__SNAP_FORMAT_POLICIES && fmt != TSYNC__SNAP_FORMAT_FRONT_POLICIES) {
        snprintf(err, TSYNC__ERRLEN,
                 "format %" PRIu64 " is not supported (this build reads %u, %u, %u and %u)", fmt,
                 TSYNC__SNAP_FORMAT, TSYNC__SNAP_FORMAT_FRONT, TSYNC__SNAP_FORMAT_POLICIES,
                 TSYNC__SNAP_FORMAT_FRONT_POLICIES);
        return d->rc = TSYNC_EVERSION;
    }
    unsigned pol = fmt >= TSYNC__SNAP_FORMAT_POLICIES ? (unsigned)fmt : 0;
    if (pol)
        fmt = fmt == TSYNC__SNAP_FORMAT_POLICIES ? TSYNC__SNAP_FORMAT : TSYNC__SNAP_FORMAT_FRONT;
    int want = fmt == TSYNC__SNAP_FORMAT ? TOP_FIELDS : TOP_FIELDS2;
    if (n != (uint32_t)want)
        return tsync__dec_fail(d, "chunk: expected %d fields, got %" PRIu32, want, n), d->rc;
    if (!dec_sites(d, &it->hdr) || !dec_tables(d, &it->hdr, &it->ctrmask, pol)) return d->rc;
    if (it->hdr.nsites) {
        it->stamp = tsync__dec_alloc(d, it->hdr.nsites, sizeof *it->stamp);
        if (!it->stamp) return d->rc;
    }
    if (fmt == TSYNC__SNAP_FORMAT_FRONT && !dec_front(d, &it->hdr, it->stamp)) return d->rc;
    if (!tsync__dec_list(d, "rows", &it->nrows, MIN_ROW)) return d->rc;
    return 0;
}

/* Reads the next row into it's buffers. 0, or the error (message in err). */
int tsync__snap_next(snapit *it, tsync__snap_row *row)
{
    dec *d = &it->d;
    const tsync__snap_chunk *c = &it->hdr;
    uint32_t n;
    char nm[48];
    memset(row, 0, sizeof *row);
    d->l1 = "row";
    d->i1 = it->next++;
    d->l2 = NULL;
    if (!tsync__dec_tuple(d, "row", ROW_FIELDS) ||
        !tsync__dec_idx(d, "table index", &row->table, c->ntables, "tables"))
        return d->rc;
    const tsync__btable *t = &c->tables[row->table];
    uint64_t ctrs = it->ctrmask[row->table];
    if (!tsync__dec_array(d, "key", &n)) return d->rc;
    if (n != t->npk)
        return tsync__dec_fail(d,
                               "key has %" PRIu32 " values, table '%s' has %" PRIu32 " key columns",
                               n, tsync__dec_printable(nm, t->name, t->name_len), t->npk),
               d->rc;
    for (uint32_t k = 0; k < n; k++) {
        if (!tsync__dec_value(d, "key value", &row->pk[k])) return d->rc;
        if (row->pk[k].type == TSYNC__V_NULL)
            return tsync__dec_fail(d, "key value %" PRIu32 " is NULL", k), d->rc;
    }

    /* exist: [site, add, rmv, ...] */
    if (!tsync__dec_array(d, "exist", &n)) return d->rc;
    if (n % 3) return tsync__dec_fail(d, "exist: %" PRIu32 " items, not a multiple of 3", n), d->rc;
    if (!grow(d, (void **)&it->exist, &it->excap, n / 3, sizeof *it->exist)) return d->rc;
    it->stamp_gen++;
    for (uint32_t k = 0; k < n / 3; k++) {
        tsync__snap_exist *e = &it->exist[k];
        d->l2 = "exist entry";
        d->i2 = k;
        if (!tsync__dec_idx(d, "site index", &e->site, c->nsites, "sites") ||
            !tsync__dec_uint(d, "add", &e->add) || !tsync__dec_uint(d, "rmv", &e->rmv))
            return d->rc;
        if (it->stamp[e->site] == it->stamp_gen)
            return tsync__dec_fail(d, "site index %" PRIu32 " repeated", e->site), d->rc;
        it->stamp[e->site] = it->stamp_gen;
        if (!e->add && !e->rmv) return tsync__dec_fail(d, "add and rmv are both 0"), d->rc;
    }
    row->nexist = n / 3;
    row->exist = it->exist;
    d->l2 = NULL;

    /* cols: [col, hlc, site, value, ...] */
    if (!tsync__dec_array(d, "cols", &n)) return d->rc;
    if (n % 4) return tsync__dec_fail(d, "cols: %" PRIu32 " items, not a multiple of 4", n), d->rc;
    if (!grow(d, (void **)&it->cols, &it->colcap, n / 4, sizeof *it->cols)) return d->rc;
    for (uint32_t k = 0; k < n / 4; k++) {
        tsync__snap_col *e = &it->cols[k];
        d->l2 = "col entry";
        d->i2 = k;
        if (!tsync__dec_idx(d, "column index", &e->col, t->ncols, "columns")) return d->rc;
        if (e->col < t->npk)
            return tsync__dec_fail(d, "column %" PRIu32 " is a key column", e->col), d->rc;
        if (ctrs >> e->col & 1)
            return tsync__dec_fail(d, "column %" PRIu32 " is a counter (its state goes in ctrs)",
                                   e->col),
                   d->rc;
        if (k && e->col <= it->cols[k - 1].col)
            return tsync__dec_fail(d, "column %" PRIu32 " out of order or repeated", e->col), d->rc;
        if (!tsync__dec_uint(d, "hlc", &e->hlc) ||
            !tsync__dec_idx(d, "site index", &e->site, c->nsites, "sites") ||
            !tsync__dec_value(d, "value", &e->val))
            return d->rc;
        if (!e->hlc) return tsync__dec_fail(d, "hlc is 0"), d->rc;
    }
    row->ncols = n / 4;
    row->cols = it->cols;
    d->l2 = NULL;

    /* ctrs: [[col, [site, p, n, ...]], ...] */
    if (!tsync__dec_list(d, "ctrs", &n, MIN_CTR)) return d->rc;
    if (!grow(d, (void **)&it->ctrs, &it->ctrcap, n, sizeof *it->ctrs)) return d->rc;
    size_t npn = 0;
    for (uint32_t k = 0; k < n; k++) {
        tsync__snap_ctr *e = &it->ctrs[k];
        uint32_t m;
        d->l2 = "counter entry";
        d->i2 = k;
        if (!tsync__dec_tuple(d, "entry", 2) ||
            !tsync__dec_idx(d, "column index", &e->col, t->ncols, "columns"))
            return d->rc;
        if (!(ctrs >> e->col & 1))
            return tsync__dec_fail(d, "column %" PRIu32 " is not a counter of table '%s'", e->col,
                                   tsync__dec_printable(nm, t->name, t->name_len)),
                   d->rc;
        if (k && e->col <= it->ctrs[k - 1].col)
            return tsync__dec_fail(d, "column %" PRIu32 " out of order or repeated", e->col), d->rc;
        if (!tsync__dec_array(d, "sites", &m)) return d->rc;
        if (m == 0 || m % 3)
            return tsync__dec_fail(d, "%" PRIu32 " items, not a positive multiple of 3", m), d->rc;
        if (!grow(d, (void **)&it->pn, &it->pncap, npn + m / 3, sizeof *it->pn)) return d->rc;
        it->stamp_gen++;
        e->n = m / 3;
        e->v = (tsync__snap_pn *)(uintptr_t)npn; /* an offset until the pool stops moving */
        for (uint32_t j = 0; j < m / 3; j++) {
            tsync__snap_pn *p = &it->pn[npn++];
            if (!tsync__dec_idx(d, "site index", &p->site, c->nsites, "sites") ||
                !tsync__dec_uint(d, "p", &p->p) || !tsync__dec_uint(d, "n", &p->n))
                return d->rc;
            if (it->stamp[p->site] == it->stamp_gen)
                return tsync__dec_fail(d, "site index %" PRIu32 " repeated", p->site), d->rc;
            it->stamp[p->site] = it->stamp_gen;
            if (!p->p && !p->n) return tsync__dec_fail(d, "p and n are both 0"), d->rc;
        }
    }
    for (uint32_t k = 0; k < n; k++) it->ctrs[k].v = it->pn + (uintptr_t)it->ctrs[k].v;
    row->nctrs = n;
    row->ctrs = it->ctrs;
    d->l2 = NULL;
    if (!row->nexist && !row->ncols && !row->nctrs)
        return tsync__dec_fail(d, "carries no clocks"), d->rc;
    d->l1 = NULL;
    return 0;
}

int tsync__snap_close(snapit *it)
{
    dec *d = &it->d;
    d->l1 = d->l2 = NULL;
    if (it->next != it->nrows)
        return tsync__dec_fail(d, "rows: %" PRIu32 " not read", it->nrows - it->next), d->rc;
    if (!tsync__mpr_done(&d->r))
        return tsync__dec_fail(d, "%zu trailing bytes", (size_t)(d->r.end - d->r.p)), d->rc;
    return 0;
}

void tsync__snap_reader_free(snapit *it)
{
    free(it->exist);
    free(it->cols);
    free(it->ctrs);
    free(it->pn);
    it->exist = NULL;
    it->cols = NULL;
    it->ctrs = NULL;
    it->pn = NULL;
}

int tsync__snap_decode(const uint8_t *buf, size_t len, tsync__snap_chunk *out, tsync__arena *a,
                       char err[TSYNC__ERRLEN])
{
    memset(out, 0, sizeof *out);
    snapit it;
    int rc = tsync__snap_open(&it, buf, len, a, err);
    if (rc == 0 && it.nrows) {
        out->rows = tsync__dec_alloc(&it.d, it.nrows, sizeof *out->rows);
        if (!out->rows) rc = it.d.rc;
    }
    for (uint32_t i = 0; rc == 0 && i < it.nrows; i++) {
        tsync__snap_row *r = &out->rows[i];
        if ((rc = tsync__snap_next(&it, r))) break;
        /* copy the row's arrays out of the reused buffers */
        tsync__snap_exist *ex = tsync__dec_alloc(&it.d, r->nexist, sizeof *ex);
        tsync__snap_col *co = tsync__dec_alloc(&it.d, r->ncols, sizeof *co);
        tsync__snap_ctr *ct = tsync__dec_alloc(&it.d, r->nctrs, sizeof *ct);
        if ((r->nexist && !ex) || (r->ncols && !co) || (r->nctrs && !ct)) {
            rc = it.d.rc;
            break;
        }
        if (r->nexist) memcpy(ex, r->exist, r->nexist * sizeof *ex);
        if (r->ncols) memcpy(co, r->cols, r->ncols * sizeof *co);
        for (uint32_t k = 0; k < r->nctrs; k++) {
            ct[k] = r->ctrs[k];
            ct[k].v = tsync__dec_alloc(&it.d, ct[k].n, sizeof *ct[k].v);
            if (!ct[k].v) {
                rc = it.d.rc;
                break;
            }
            memcpy(ct[k].v, r->ctrs[k].v, ct[k].n * sizeof *ct[k].v);
        }
        r->exist = ex;
        r->cols = co;
        r->ctrs = ct;
    }
    if (rc == 0) rc = tsync__snap_close(&it);
    tsync__snap_reader_free(&it);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->nsites = it.hdr.nsites;
    out->sites = it.hdr.sites;
    out->ntables = it.hdr.ntables;
    out->tables = it.hdr.tables;
    out->nfront = it.hdr.nfront;
    out->front = it.hdr.front;
    out->nrows = it.nrows;
    return 0;
}

/* ---------------------------------------------------------------- encoder */

#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

int tsync__snap_encode(const tsync__snap_chunk *c, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    PK(msgpack_pack_array(&pk, c->nfront ? TOP_FIELDS2 : TOP_FIELDS));
    bool pol = false;
    for (uint32_t i = 0; i < c->ntables; i++) pol |= c->tables[i].npolicies > 0;
    PK(msgpack_pack_uint32(
        &pk, c->nfront ? (pol ? TSYNC__SNAP_FORMAT_FRONT_POLICIES : TSYNC__SNAP_FORMAT_FRONT)
                       : (pol ? TSYNC__SNAP_FORMAT_POLICIES : TSYNC__SNAP_FORMAT)));
    PK(msgpack_pack_array(&pk, c->nsites));
    for (uint32_t i = 0; i < c->nsites; i++) {
        const tsync__snap_site *s = &c->sites[i];
        PK(msgpack_pack_array(&pk, SITE_FIELDS));
        PK(tsync__mp_pack_bin(&pk, s->site, TSYNC__SITE_BYTES));
        if (s->has_key) {
            PK(tsync__mp_pack_bin(&pk, s->pk, TSYNC__PK_BYTES));
            PK(tsync__mp_pack_bin(&pk, s->inc, TSYNC__INC_BYTES));
        } else {
            PK(msgpack_pack_nil(&pk));
            PK(msgpack_pack_nil(&pk));
        }
    }
    PK(tsync__mp_pack_tables(&pk, c->tables, c->ntables));
    if (c->nfront) {
        PK(msgpack_pack_array(&pk, c->nfront * 2));
        for (uint32_t i = 0; i < c->nfront; i++) {
            PK(msgpack_pack_uint32(&pk, c->front[i].site));
            PK(msgpack_pack_uint64(&pk, c->front[i].hlc));
        }
    }
    PK(msgpack_pack_array(&pk, c->nrows));
    for (uint32_t i = 0; i < c->nrows; i++) {
        const tsync__snap_row *r = &c->rows[i];
        uint32_t npk = r->table < c->ntables ? c->tables[r->table].npk : 0;
        PK(msgpack_pack_array(&pk, ROW_FIELDS));
        PK(msgpack_pack_uint32(&pk, r->table));
        PK(msgpack_pack_array(&pk, npk));
        for (uint32_t k = 0; k < npk; k++) PK(tsync__mp_pack_val(&pk, &r->pk[k]));
        PK(msgpack_pack_array(&pk, r->nexist * 3));
        for (uint32_t k = 0; k < r->nexist; k++) {
            PK(msgpack_pack_uint32(&pk, r->exist[k].site));
            PK(msgpack_pack_uint64(&pk, r->exist[k].add));
            PK(msgpack_pack_uint64(&pk, r->exist[k].rmv));
        }
        PK(msgpack_pack_array(&pk, r->ncols * 4));
        for (uint32_t k = 0; k < r->ncols; k++) {
            PK(msgpack_pack_uint32(&pk, r->cols[k].col));
            PK(msgpack_pack_uint64(&pk, r->cols[k].hlc));
            PK(msgpack_pack_uint32(&pk, r->cols[k].site));
            PK(tsync__mp_pack_val(&pk, &r->cols[k].val));
        }
        PK(msgpack_pack_array(&pk, r->nctrs));
        for (uint32_t k = 0; k < r->nctrs; k++) {
            const tsync__snap_ctr *e = &r->ctrs[k];
            PK(msgpack_pack_array(&pk, 2));
            PK(msgpack_pack_uint32(&pk, e->col));
            PK(msgpack_pack_array(&pk, e->n * 3));
            for (uint32_t j = 0; j < e->n; j++) {
                PK(msgpack_pack_uint32(&pk, e->v[j].site));
                PK(msgpack_pack_uint64(&pk, e->v[j].p));
                PK(msgpack_pack_uint64(&pk, e->v[j].n));
            }
        }
    }
    *out = (uint8_t *)sb.data;
    *len = sb.size;
    if (!*out) { /* an empty buffer never happens: the top array is always written */
        *out = malloc(1);
        if (!*out) return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    return 0;
nomem:
    msgpack_sbuffer_destroy(&sb);
    return tsync__err(TSYNC_ENOMEM, "out of memory");
}

void tsync__snap_hash(const uint8_t *const *chunks, const size_t *lens, size_t n,
                      uint8_t out[TSYNC__HASH_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, TSYNC__HASH_BYTES);
    for (size_t i = 0; i < n; i++) crypto_generichash_update(&st, chunks[i], lens[i]);
    crypto_generichash_final(&st, out, TSYNC__HASH_BYTES);
}

/* Encoded sizes, as msgpack-c writes them (for cutting chunks before they grow too large). */
static size_t val_size(const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_INT:
        return tsync__mp_int_size(v->i);
    case TSYNC__V_REAL:
        return 9;
    case TSYNC__V_TEXT:
        return tsync__mp_str_size(v->n);
    case TSYNC__V_BLOB:
        return tsync__mp_bin_size(v->n);
    default:
        return 1;
    }
}

size_t tsync__snap_site_size(const tsync__snap_site *s)
{
    return 1 + tsync__mp_bin_size(TSYNC__SITE_BYTES) +
           (s->has_key ? tsync__mp_bin_size(TSYNC__PK_BYTES) + tsync__mp_bin_size(TSYNC__INC_BYTES)
                       : 2);
}

size_t tsync__snap_table_size(const tsync__btable *t)
{
    size_t n = 1 + tsync__mp_str_size(t->name_len) + tsync__mp_array_size(t->ncols) +
               tsync__mp_uint_size(t->npk) + tsync__mp_array_size(t->ncounters);
    for (uint32_t k = 0; k < t->ncols; k++) n += tsync__mp_str_size(t->col_len[k]);
    for (uint32_t k = 0; k < t->ncounters; k++) n += tsync__mp_uint_size(t->counters[k]);
    if (t->npolicies) n += tsync__mp_array_size(t->npolicies);
    for (uint32_t k = 0; k < t->npolicies; k++)
        n += 1 + tsync__mp_uint_size(t->policy_cols[k]) + tsync__mp_uint_size(t->policies[k]);
    return n;
}

size_t tsync__snap_row_size(const tsync__snap_row *r, uint32_t npk)
{
    size_t n = 1 + tsync__mp_uint_size(r->table) + tsync__mp_array_size(npk) +
               tsync__mp_array_size((size_t)r->nexist * 3) +
               tsync__mp_array_size((size_t)r->ncols * 4) + tsync__mp_array_size(r->nctrs);
    for (uint32_t k = 0; k < npk; k++) n += val_size(&r->pk[k]);
    for (uint32_t k = 0; k < r->nexist; k++)
        n += tsync__mp_uint_size(r->exist[k].site) + tsync__mp_uint_size(r->exist[k].add) +
             tsync__mp_uint_size(r->exist[k].rmv);
    for (uint32_t k = 0; k < r->ncols; k++)
        n += tsync__mp_uint_size(r->cols[k].col) + tsync__mp_uint_size(r->cols[k].hlc) +
             tsync__mp_uint_size(r->cols[k].site) + val_size(&r->cols[k].val);
    for (uint32_t k = 0; k < r->nctrs; k++) {
        const tsync__snap_ctr *e = &r->ctrs[k];
        n += 1 + tsync__mp_uint_size(e->col) + tsync__mp_array_size((size_t)e->n * 3);
        for (uint32_t j = 0; j < e->n; j++)
            n += tsync__mp_uint_size(e->v[j].site) + tsync__mp_uint_size(e->v[j].p) +
                 tsync__mp_uint_size(e->v[j].n);
    }
    return n;
}

size_t tsync__snap_head_size(uint32_t nsites, uint32_t ntables, uint32_t nrows)
{
    return 1 + tsync__mp_uint_size(TSYNC__SNAP_FORMAT) + tsync__mp_array_size(nsites) +
           tsync__mp_array_size(ntables) + tsync__mp_array_size(nrows);
}

size_t tsync__snap_front_size(const tsync__snap_front *f, uint32_t n)
{
    if (!n) return 0;
    size_t b = tsync__mp_array_size((size_t)n * 2);
    for (uint32_t i = 0; i < n; i++)
        b += tsync__mp_uint_size(f[i].site) + tsync__mp_uint_size(f[i].hlc);
    return b;
}
