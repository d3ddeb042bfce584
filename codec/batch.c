/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/batch.c — the batch: the signed unit in which a site's changes travel. This file holds its
 * byte format (encode, strict decode, peek) and the rules that make it tamper-evident: the
 * chained BLAKE2b-256 hash, the Ed25519 signature over it, and how a site id is derived.
 *
 * Design notes
 * - The encoder writes exactly one byte string for a given batch: msgpack-c always picks the
 *   smallest encoding of an int, a length or an array count. The decoder insists on that same
 *   smallest form ("canonical"), so a body that decodes re-encodes to the very same bytes. Bodies
 *   are hashed and forwarded verbatim, and this makes "same batch" and "same bytes" one notion.
 * - The decoder checks every index against what it indexes and every count against the bytes
 *   left, and allocates only from the arena in proportion to the input, so no input can make it
 *   crash, read outside the buffer or allocate without bound.
 * - The encoder checks the same invariants, so a bug in the sealer shows up as an error at the
 *   author instead of as batches every peer refuses.
 * - A few rules go slightly beyond the header comment in crdt.h because they remove ambiguity
 *   for free: a key value may not be NULL (NULL never equals NULL, so it cannot name a row), a
 *   row may not write the same column or counter twice, rmv entries require the DEL flag, a dep's
 *   seq is >= 1, and old_site is 0 when old_hlc is 0.
 * - The encoder treats format 0 (a zero-initialised struct) as the current format.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>
#include <sodium.h>

#include "codec/codec.h"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

#define ROW_FIELDS  7
#define BODY_FIELDS 9

/* ---------------------------------------------------------------- decoder
 *
 * The reads, the canonical checks and the wording of every fault are codec/dec.c's, shared with
 * the snapshot decoder; every message here starts with "batch body: ". */

typedef tsync__dec dec;

/* Smallest encodings of the list entries we allocate for, in bytes. The reader already bounds a
 * count by the bytes left; bounding it by what the entries must at least take keeps the arena
 * within a small multiple of the input (a row struct is ~24 times its 9-byte minimum) instead of
 * ~200 times for a row list that declares one row per byte. */
#define MIN_SITE 18 /* bin8 header + 16 */
#define MIN_DEP  3  /* [idx, seq] */
#define MIN_ROW  9  /* [table, [key], off, flags, [], [], []] */
#define MIN_RMV  3  /* [idx, hlc] */
#define MIN_COL  5  /* [col, value, old_hlc, old_site] */
#define MIN_CTR  4  /* [col, p, n] */

static bool dec_sites(dec *d, tsync__batch *b)
{
    uint32_t n;
    if (!tsync__dec_list(d, "sites", &n, MIN_SITE)) return false;
    if (n == 0) return tsync__dec_fail(d, "sites: empty (sites[0] must be the origin)");
    uint8_t(*sites)[TSYNC__SITE_BYTES] = tsync__dec_alloc(d, n, TSYNC__SITE_BYTES);
    if (!sites) return false;
    d->l1 = "site";
    for (uint32_t i = 0; i < n; i++) {
        d->i1 = i;
        if (!tsync__dec_binfix(d, "id", sites[i], TSYNC__SITE_BYTES)) return false;
    }
    d->l1 = NULL;
    if (memcmp(sites[0], b->origin, TSYNC__SITE_BYTES) != 0)
        return tsync__dec_fail(d, "sites[0] is not the origin");
    b->nsites = n;
    b->sites = (const uint8_t(*)[TSYNC__SITE_BYTES])sites;
    return true;
}

static bool dec_deps(dec *d, tsync__batch *b)
{
    uint32_t n;
    if (!tsync__dec_list(d, "deps", &n, MIN_DEP)) return false;
    b->deps = tsync__dec_alloc(d, n, sizeof *b->deps);
    if (n && !b->deps) return false;
    d->l1 = "dep";
    for (uint32_t i = 0; i < n; i++) {
        d->i1 = i;
        tsync__bdep *e = &b->deps[i];
        if (!tsync__dec_tuple(d, "entry", 2) ||
            !tsync__dec_idx(d, "site index", &e->site, b->nsites, "sites") ||
            !tsync__dec_uint(d, "seq", &e->seq))
            return false;
        if (e->seq == 0) return tsync__dec_fail(d, "seq is 0");
    }
    d->l1 = NULL;
    b->ndeps = n;
    return true;
}

/* masks[t] gets the set of counter columns of table t, for checking rows. */
static bool dec_tables(dec *d, tsync__batch *b, uint64_t **masks)
{
    if (!tsync__dec_tables(d, &b->ntables, &b->tables, masks, false,
                           b->format == TSYNC__BATCH_FORMAT_POLICIES))
        return false;
    /* Format 2 exactly when some table has policies: one body per batch (the encoder's). */
    bool any = false;
    for (uint32_t i = 0; i < b->ntables; i++) any |= b->tables[i].npolicies > 0;
    if (b->format == TSYNC__BATCH_FORMAT_POLICIES && !any)
        return tsync__dec_fail(d, "format 3 without a column policy");
    return true;
}

static bool dec_row(dec *d, tsync__batch *b, const uint64_t *masks, tsync__brow *row)
{
    uint32_t n;
    uint64_t off, flags;
    char nm[48];
    if (!tsync__dec_tuple(d, "row", ROW_FIELDS) ||
        !tsync__dec_idx(d, "table index", &row->table, b->ntables, "tables"))
        return false;
    const tsync__btable *t = &b->tables[row->table];
    if (!tsync__dec_array(d, "key", &n)) return false;
    if (n != t->npk)
        return tsync__dec_fail(d,
                               "key has %" PRIu32 " values, table '%s' has %" PRIu32 " key columns",
                               n, tsync__dec_printable(nm, t->name, t->name_len), t->npk);
    for (uint32_t k = 0; k < n; k++) {
        if (!tsync__dec_value(d, "key value", &row->pk[k])) return false;
        if (row->pk[k].type == TSYNC__V_NULL)
            return tsync__dec_fail(d, "key value %" PRIu32 " is NULL", k);
    }
    if (!tsync__dec_uint(d, "hlc_off", &off)) return false;
    if (off > b->hlc_hi - b->hlc_lo)
        return tsync__dec_fail(d, "hlc_lo + %" PRIu64 " is above hlc_hi", off);
    row->hlc = b->hlc_lo + off;
    if (!tsync__dec_uint(d, "flags", &flags)) return false;
    if (flags & ~(uint64_t)(TSYNC__ROW_ADD | TSYNC__ROW_DEL))
        return tsync__dec_fail(d, "unknown flags 0x%" PRIx64, flags);
    row->flags = (uint32_t)flags;

    if (!tsync__dec_list(d, "rmv", &row->nrmv, MIN_RMV)) return false;
    if (row->nrmv && !(flags & TSYNC__ROW_DEL))
        return tsync__dec_fail(d, "rmv entries without the DEL flag");
    row->rmv = tsync__dec_alloc(d, row->nrmv, sizeof *row->rmv);
    if (row->nrmv && !row->rmv) return false;
    for (uint32_t k = 0; k < row->nrmv; k++) {
        d->l2 = "rmv entry";
        d->i2 = k;
        if (!tsync__dec_tuple(d, "entry", 2) ||
            !tsync__dec_idx(d, "site index", &row->rmv[k].site, b->nsites, "sites") ||
            !tsync__dec_uint(d, "hlc", &row->rmv[k].hlc))
            return false;
    }
    d->l2 = NULL;

    if (!tsync__dec_list(d, "cols", &row->ncols, MIN_COL)) return false;
    row->cols = tsync__dec_alloc(d, row->ncols, sizeof *row->cols);
    if (row->ncols && !row->cols) return false;
    uint64_t seen = 0;
    for (uint32_t k = 0; k < row->ncols; k++) {
        tsync__bcol *c = &row->cols[k];
        uint64_t col;
        d->l2 = "col entry";
        d->i2 = k;
        if (!tsync__dec_tuple(d, "entry", 4) || !tsync__dec_uint(d, "column index", &col))
            return false;
        if (col < t->npk || col >= t->ncols)
            return tsync__dec_fail(d, "column index %" PRIu64 " out of range for table '%s'", col,
                                   tsync__dec_printable(nm, t->name, t->name_len));
        if (seen >> col & 1) return tsync__dec_fail(d, "column index %" PRIu64 " repeated", col);
        seen |= (uint64_t)1 << col;
        c->col = (uint32_t)col;
        if (!tsync__dec_value(d, "value", &c->val) || !tsync__dec_uint(d, "old_hlc", &c->old_hlc) ||
            !tsync__dec_idx(d, "old site index", &c->old_site, b->nsites, "sites"))
            return false;
        if (c->old_hlc == 0 && c->old_site != 0)
            return tsync__dec_fail(d, "old_site set without old_hlc");
    }
    d->l2 = NULL;

    if (!tsync__dec_list(d, "ctrs", &row->nctrs, MIN_CTR)) return false;
    row->ctrs = tsync__dec_alloc(d, row->nctrs, sizeof *row->ctrs);
    if (row->nctrs && !row->ctrs) return false;
    seen = 0;
    for (uint32_t k = 0; k < row->nctrs; k++) {
        tsync__bctr *c = &row->ctrs[k];
        uint64_t col;
        d->l2 = "counter entry";
        d->i2 = k;
        if (!tsync__dec_tuple(d, "entry", 3) || !tsync__dec_uint(d, "column index", &col))
            return false;
        if (col >= 64 || !(masks[row->table] >> col & 1))
            return tsync__dec_fail(d, "column index %" PRIu64 " is not a counter of table '%s'",
                                   col, tsync__dec_printable(nm, t->name, t->name_len));
        if (seen >> col & 1) return tsync__dec_fail(d, "counter column %" PRIu64 " repeated", col);
        seen |= (uint64_t)1 << col;
        c->col = (uint32_t)col;
        if (!tsync__dec_uint(d, "p", &c->p) || !tsync__dec_uint(d, "n", &c->n)) return false;
    }
    d->l2 = NULL;
    return true;
}

/* check: the rows are decoded one at a time into a scratch arena freed every CHECK_ROWS rows, and
 * not kept (tsync__batch_check). */
#define CHECK_ROWS 512

static int decode(const uint8_t *buf, size_t len, tsync__batch *out, tsync__arena *a,
                  char err[TSYNC__ERRLEN], bool check)
{
    memset(out, 0, sizeof *out);
    dec d;
    if (!tsync__dec_open(&d, buf, len, TSYNC__BATCH_MAX_BYTES, a, err, "batch body: ")) return d.rc;
    tsync__batch *b = out;
    uint32_t n;
    uint64_t fmt;
    if (!tsync__dec_array(&d, "body", &n)) goto bad;
    if (n == 0) {
        tsync__dec_fail(&d, "empty array");
        goto bad;
    }
    if (!tsync__dec_uint(&d, "format", &fmt)) goto bad;
    if (fmt != TSYNC__BATCH_FORMAT && fmt != TSYNC__BATCH_FORMAT_POLICIES) {
        snprintf(err, TSYNC__ERRLEN,
                 "batch body: format %" PRIu64 " is not supported (expected %u or %u)", fmt,
                 TSYNC__BATCH_FORMAT, TSYNC__BATCH_FORMAT_POLICIES);
        memset(out, 0, sizeof *out);
        return TSYNC_EVERSION;
    }
    if (n != BODY_FIELDS) {
        tsync__dec_fail(&d, "expected %d fields, got %" PRIu32, BODY_FIELDS, n);
        goto bad;
    }
    b->format = (uint32_t)fmt;
    if (!tsync__dec_binfix(&d, "origin", b->origin, TSYNC__SITE_BYTES) ||
        !tsync__dec_uint(&d, "seq", &b->seq))
        goto bad;
    if (b->seq == 0) {
        tsync__dec_fail(&d, "seq is 0");
        goto bad;
    }
    if (!tsync__dec_uint(&d, "hlc_lo", &b->hlc_lo) || !tsync__dec_uint(&d, "hlc_hi", &b->hlc_hi))
        goto bad;
    if (b->hlc_hi < b->hlc_lo) {
        tsync__dec_fail(&d, "hlc_hi is below hlc_lo");
        goto bad;
    }
    uint64_t *masks;
    if (!dec_sites(&d, b) || !dec_deps(&d, b) || !dec_tables(&d, b, &masks)) goto bad;

    if (!tsync__dec_list(&d, "rows", &n, MIN_ROW)) goto bad;
    if (check) {
        /* A batch of up to CHECK_ROWS rows (the live shape: one sale) checks its rows in a, the
         * caller's arena, which it frees as it goes: a scratch arena per batch would cost a
         * zeroed chunk each. Longer ones check theirs in rs, freed every CHECK_ROWS rows, so the
         * arena of the header keeps at most CHECK_ROWS rows of any batch. */
        tsync__arena rs = {0};
        tsync__brow row;
        if (n > CHECK_ROWS) d.a = &rs;
        for (uint32_t i = 0; i < n; i++) {
            if (n > CHECK_ROWS && i % CHECK_ROWS == CHECK_ROWS - 1) tsync__arena_free(&rs);
            d.l1 = "row";
            d.i1 = i;
            memset(&row, 0, sizeof row);
            if (!dec_row(&d, b, masks, &row)) {
                tsync__arena_free(&rs);
                goto bad;
            }
        }
        tsync__arena_free(&rs);
        d.a = a;
        b->rows = NULL;
    } else {
        b->rows = tsync__dec_alloc(&d, n, sizeof *b->rows);
        if (n && !b->rows) goto bad;
        for (uint32_t i = 0; i < n; i++) {
            d.l1 = "row";
            d.i1 = i;
            if (!dec_row(&d, b, masks, &b->rows[i])) goto bad;
        }
    }
    d.l1 = NULL;
    b->nrows = n;
    if (!tsync__mpr_done(&d.r)) {
        tsync__dec_fail(&d, "%zu trailing bytes", (size_t)(d.r.end - d.r.p));
        goto bad;
    }
    return 0;
bad:
    /* The arena keeps what was allocated; the caller frees it as one. */
    memset(out, 0, sizeof *out);
    return d.rc;
}

int tsync__batch_decode(const uint8_t *buf, size_t len, tsync__batch *out, tsync__arena *a,
                        char err[TSYNC__ERRLEN])
{
    return decode(buf, len, out, a, err, false);
}

int tsync__batch_check(const uint8_t *buf, size_t len, tsync__batch *out, tsync__arena *a,
                       char err[TSYNC__ERRLEN])
{
    return decode(buf, len, out, a, err, true);
}

int tsync__batch_peek(const uint8_t *buf, size_t len, uint8_t origin[TSYNC__SITE_BYTES],
                      uint64_t *seq)
{
    if (!buf || len == 0 || len > TSYNC__BATCH_MAX_BYTES) return TSYNC_ECORRUPT;
    tsync__mpr r;
    tsync__mpr_init(&r, buf, len);
    uint32_t n;
    uint64_t fmt, s;
    uint8_t o[TSYNC__SITE_BYTES];
    if (!tsync__mpr_array(&r, &n) || n == 0 || !tsync__mpr_uint(&r, &fmt)) return TSYNC_ECORRUPT;
    if (fmt != TSYNC__BATCH_FORMAT && fmt != TSYNC__BATCH_FORMAT_POLICIES) return TSYNC_EVERSION;
    if (n != BODY_FIELDS || !tsync__mpr_binfix(&r, o, TSYNC__SITE_BYTES) ||
        !tsync__mpr_uint(&r, &s) || s == 0)
        return TSYNC_ECORRUPT;
    memcpy(origin, o, TSYNC__SITE_BYTES);
    *seq = s;
    return 0;
}

/* ---------------------------------------------------------------- encoder */

static int einval(char *err, const char *fmt, ...) PRINTF_LIKE(2, 3);
static int einval(char *err, const char *fmt, ...)
{
    static const char pre[] = "batch: ";
    memcpy(err, pre, sizeof pre);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err + sizeof pre - 1, TSYNC__ERRLEN - (sizeof pre - 1), fmt, ap);
    va_end(ap);
    return TSYNC_EINVAL;
}

static bool val_ok(const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_NULL:
    case TSYNC__V_INT:
    case TSYNC__V_REAL:
        return true;
    case TSYNC__V_TEXT:
    case TSYNC__V_BLOB:
        return v->n == 0 || v->p != NULL;
    default:
        return false;
    }
}

static int check_row(const tsync__batch *b, const uint64_t *masks, uint32_t i, char *err)
{
    const tsync__brow *row = &b->rows[i];
    char nm[48];
    if (row->table >= b->ntables)
        return einval(err,
                      "row %" PRIu32 ": table index %" PRIu32 " out of range (%" PRIu32 " tables)",
                      i, row->table, b->ntables);
    const tsync__btable *t = &b->tables[row->table];
    for (uint32_t k = 0; k < t->npk; k++) {
        if (!val_ok(&row->pk[k])) return einval(err, "row %" PRIu32 ": bad key value", i);
        if (row->pk[k].type == TSYNC__V_NULL)
            return einval(err, "row %" PRIu32 ": key value %" PRIu32 " is NULL", i, k);
    }
    if (row->hlc < b->hlc_lo || row->hlc > b->hlc_hi)
        return einval(err, "row %" PRIu32 ": hlc outside [hlc_lo, hlc_hi]", i);
    if (row->flags & ~(uint32_t)(TSYNC__ROW_ADD | TSYNC__ROW_DEL))
        return einval(err, "row %" PRIu32 ": unknown flags 0x%" PRIx32, i, row->flags);
    if (row->nrmv && !(row->flags & TSYNC__ROW_DEL))
        return einval(err, "row %" PRIu32 ": rmv entries without the DEL flag", i);
    for (uint32_t k = 0; k < row->nrmv; k++)
        if (row->rmv[k].site >= b->nsites)
            return einval(err, "row %" PRIu32 ": rmv entry %" PRIu32 ": site index out of range", i,
                          k);
    uint64_t seen = 0;
    for (uint32_t k = 0; k < row->ncols; k++) {
        const tsync__bcol *c = &row->cols[k];
        if (c->col < t->npk || c->col >= t->ncols)
            return einval(err,
                          "row %" PRIu32 ": column index %" PRIu32 " out of range for table '%s'",
                          i, c->col, tsync__dec_printable(nm, t->name, t->name_len));
        if (seen >> c->col & 1)
            return einval(err, "row %" PRIu32 ": column index %" PRIu32 " repeated", i, c->col);
        seen |= (uint64_t)1 << c->col;
        if (!val_ok(&c->val))
            return einval(err, "row %" PRIu32 ": column %" PRIu32 ": bad value", i, c->col);
        if (c->old_site >= b->nsites || (c->old_hlc == 0 && c->old_site != 0))
            return einval(err, "row %" PRIu32 ": column %" PRIu32 ": bad old_site", i, c->col);
    }
    seen = 0;
    for (uint32_t k = 0; k < row->nctrs; k++) {
        uint32_t c = row->ctrs[k].col;
        if (c >= 64 || !(masks[row->table] >> c & 1))
            return einval(err, "row %" PRIu32 ": column %" PRIu32 " is not a counter of '%s'", i, c,
                          tsync__dec_printable(nm, t->name, t->name_len));
        if (seen >> c & 1)
            return einval(err, "row %" PRIu32 ": counter column %" PRIu32 " repeated", i, c);
        seen |= (uint64_t)1 << c;
    }
    return 0;
}

/* The decoder's invariants, checked on the struct; masks gets each table's counter columns. */
static int check(const tsync__batch *b, uint64_t *masks, char *err)
{
    if (b->format != 0 && b->format != TSYNC__BATCH_FORMAT &&
        b->format != TSYNC__BATCH_FORMAT_POLICIES)
        return einval(err, "format %" PRIu32 " cannot be written (this build writes %u and %u)",
                      b->format, TSYNC__BATCH_FORMAT, TSYNC__BATCH_FORMAT_POLICIES);
    if (b->seq == 0) return einval(err, "seq is 0");
    if (b->hlc_hi < b->hlc_lo) return einval(err, "hlc_hi is below hlc_lo");
    if (b->nsites == 0 || !b->sites) return einval(err, "no sites (sites[0] must be the origin)");
    if (memcmp(b->sites[0], b->origin, TSYNC__SITE_BYTES) != 0)
        return einval(err, "sites[0] is not the origin");
    for (uint32_t i = 0; i < b->ndeps; i++)
        if (b->deps[i].site >= b->nsites || b->deps[i].seq == 0)
            return einval(err, "dep %" PRIu32 ": site index out of range or seq 0", i);
    for (uint32_t i = 0; i < b->ntables; i++) {
        const tsync__btable *t = &b->tables[i];
        if (t->ncols > TSYNC__MAX_COLS || t->npk < 1 || t->npk > TSYNC__MAX_PK_COLS ||
            t->npk > t->ncols)
            return einval(err,
                          "table %" PRIu32 ": %" PRIu32 " columns with %" PRIu32
                          " key columns (1..%d keys, at most %d columns)",
                          i, t->ncols, t->npk, TSYNC__MAX_PK_COLS, TSYNC__MAX_COLS);
        if (t->name_len && !t->name) return einval(err, "table %" PRIu32 ": no name", i);
        for (uint32_t c = 0; c < t->ncols; c++)
            if (t->col_len[c] && !t->cols[c])
                return einval(err, "table %" PRIu32 ": column %" PRIu32 " has no name", i, c);
        masks[i] = 0;
        for (uint32_t k = 0; k < t->ncounters; k++) {
            uint32_t c = t->counters[k];
            if (c < t->npk || c >= t->ncols || (masks[i] >> c & 1))
                return einval(err, "table %" PRIu32 ": bad counter column %" PRIu32, i, c);
            masks[i] |= (uint64_t)1 << c;
        }
        for (uint32_t k = 0; k < t->npolicies; k++) {
            uint32_t c = t->policy_cols[k];
            if (c < t->npk || c >= t->ncols || (masks[i] >> c & 1) ||
                (k && c <= t->policy_cols[k - 1]) || t->policies[k] < 1 || t->policies[k] > 3)
                return einval(err, "table %" PRIu32 ": bad policy of column %" PRIu32, i, c);
        }
    }
    for (uint32_t i = 0; i < b->nrows; i++) {
        int rc = check_row(b, masks, i, err);
        if (rc) return rc;
    }
    return 0;
}

/* msgpack-c's pack functions return non-zero only when the buffer cannot grow. */
#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

static int pack_row(msgpack_packer *pk, const tsync__batch *b, const tsync__brow *row)
{
    const tsync__btable *t = &b->tables[row->table];
    PK(msgpack_pack_array(pk, ROW_FIELDS));
    PK(msgpack_pack_uint32(pk, row->table));
    PK(msgpack_pack_array(pk, t->npk));
    for (uint32_t k = 0; k < t->npk; k++) PK(tsync__mp_pack_val(pk, &row->pk[k]));
    PK(msgpack_pack_uint64(pk, row->hlc - b->hlc_lo));
    PK(msgpack_pack_uint32(pk, row->flags));
    PK(msgpack_pack_array(pk, row->nrmv));
    for (uint32_t k = 0; k < row->nrmv; k++) {
        PK(msgpack_pack_array(pk, 2));
        PK(msgpack_pack_uint32(pk, row->rmv[k].site));
        PK(msgpack_pack_uint64(pk, row->rmv[k].hlc));
    }
    PK(msgpack_pack_array(pk, row->ncols));
    for (uint32_t k = 0; k < row->ncols; k++) {
        const tsync__bcol *c = &row->cols[k];
        PK(msgpack_pack_array(pk, 4));
        PK(msgpack_pack_uint32(pk, c->col));
        PK(tsync__mp_pack_val(pk, &c->val));
        PK(msgpack_pack_uint64(pk, c->old_hlc));
        PK(msgpack_pack_uint32(pk, c->old_site));
    }
    PK(msgpack_pack_array(pk, row->nctrs));
    for (uint32_t k = 0; k < row->nctrs; k++) {
        PK(msgpack_pack_array(pk, 3));
        PK(msgpack_pack_uint32(pk, row->ctrs[k].col));
        PK(msgpack_pack_uint64(pk, row->ctrs[k].p));
        PK(msgpack_pack_uint64(pk, row->ctrs[k].n));
    }
    return 0;
nomem:
    return -1;
}

static int pack_batch(msgpack_packer *pk, const tsync__batch *b)
{
    PK(msgpack_pack_array(pk, BODY_FIELDS));
    /* Format 2 only when a table carries column policies (codec.h). */
    uint32_t fmt = TSYNC__BATCH_FORMAT;
    for (uint32_t i = 0; i < b->ntables; i++)
        if (b->tables[i].npolicies) fmt = TSYNC__BATCH_FORMAT_POLICIES;
    PK(msgpack_pack_uint32(pk, fmt));
    PK(tsync__mp_pack_bin(pk, b->origin, TSYNC__SITE_BYTES));
    PK(msgpack_pack_uint64(pk, b->seq));
    PK(msgpack_pack_uint64(pk, b->hlc_lo));
    PK(msgpack_pack_uint64(pk, b->hlc_hi));
    PK(msgpack_pack_array(pk, b->nsites));
    for (uint32_t i = 0; i < b->nsites; i++)
        PK(tsync__mp_pack_bin(pk, b->sites[i], TSYNC__SITE_BYTES));
    PK(msgpack_pack_array(pk, b->ndeps));
    for (uint32_t i = 0; i < b->ndeps; i++) {
        PK(msgpack_pack_array(pk, 2));
        PK(msgpack_pack_uint32(pk, b->deps[i].site));
        PK(msgpack_pack_uint64(pk, b->deps[i].seq));
    }
    PK(tsync__mp_pack_tables(pk, b->tables, b->ntables));
    PK(msgpack_pack_array(pk, b->nrows));
    for (uint32_t i = 0; i < b->nrows; i++) PK(pack_row(pk, b, &b->rows[i]));
    return 0;
nomem:
    return -1;
}

/* The encoder's checks with the masks on the stack when the batch has few tables (a rebuilt
 * one-sale batch has one: a malloc per batch showed in the live shape's merge). */
static int check_alloc(const tsync__batch *b, char err[TSYNC__ERRLEN])
{
    uint64_t small[8] = {0};
    uint64_t *masks = b->ntables <= 8 ? small : calloc(b->ntables, sizeof *masks);
    if (!masks) {
        snprintf(err, TSYNC__ERRLEN, "batch: out of memory");
        return TSYNC_ENOMEM;
    }
    int rc = check(b, masks, err);
    if (masks != small) free(masks);
    return rc;
}

int tsync__batch_encode(const tsync__batch *b, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    *out = NULL;
    *len = 0;
    uint8_t *buf = NULL;
    size_t used = 0, cap = 0;
    int rc = tsync__batch_encode_append(b, &buf, &used, &cap, err);
    if (rc) {
        free(buf);
        return rc;
    }
    *out = buf;
    *len = used;
    return 0;
}

int tsync__batch_encode_append(const tsync__batch *b, uint8_t **buf, size_t *len, size_t *cap,
                               char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    int rc = check_alloc(b, err);
    if (rc) return rc;
    /* msgpack-c's buffer over the caller's: it grows it with realloc as it packs */
    size_t start = *len;
    msgpack_sbuffer sb = {.size = *len, .data = (char *)*buf, .alloc = *cap};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    int prc = pack_batch(&pk, b);
    *buf = (uint8_t *)sb.data;
    *cap = sb.alloc;
    if (prc != 0) {
        snprintf(err, TSYNC__ERRLEN, "batch: out of memory");
        return TSYNC_ENOMEM;
    }
    if (sb.size - start > TSYNC__BATCH_MAX_BYTES)
        return einval(err, "body of %zu bytes exceeds the limit of %u", sb.size - start,
                      TSYNC__BATCH_MAX_BYTES);
    *len = sb.size;
    return 0;
}

/* ---------------------------------------------------------------- hashing and signing */

void tsync__batch_hash(const uint8_t prev[TSYNC__HASH_BYTES], const uint8_t *body, size_t len,
                       uint8_t out[TSYNC__HASH_BYTES])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, TSYNC__HASH_BYTES);
    crypto_generichash_update(&st, prev, TSYNC__HASH_BYTES);
    if (len) crypto_generichash_update(&st, body, len);
    crypto_generichash_final(&st, out, TSYNC__HASH_BYTES);
}

#define SIG_DOMAIN     "tsync-batch-v1"
#define SIG_DOMAIN_LEN 14
#define SIG_MSG_LEN    (SIG_DOMAIN_LEN + TSYNC__SITE_BYTES + 8 + TSYNC__HASH_BYTES)

static void sig_message(uint8_t m[SIG_MSG_LEN], const uint8_t origin[TSYNC__SITE_BYTES],
                        uint64_t seq, const uint8_t hash[TSYNC__HASH_BYTES])
{
    /* The domain string keeps a batch signature from ever being valid as any other message the
     * same key signs (certificates, handshakes). */
    memcpy(m, SIG_DOMAIN, SIG_DOMAIN_LEN);
    memcpy(m + SIG_DOMAIN_LEN, origin, TSYNC__SITE_BYTES);
    for (int i = 0; i < 8; i++)
        m[SIG_DOMAIN_LEN + TSYNC__SITE_BYTES + i] = (uint8_t)(seq >> (56 - 8 * i));
    memcpy(m + SIG_DOMAIN_LEN + TSYNC__SITE_BYTES + 8, hash, TSYNC__HASH_BYTES);
}

/* libsodium wants sodium_init() before use; it is idempotent and thread-safe, and these calls
 * are far more expensive than its fast path. */
static void sodium_ready(void)
{
    if (sodium_init() < 0) {
        /* Only fails when no random source exists; signing and hashing do not need one. */
    }
}

void tsync__batch_sign(const uint8_t sk[TSYNC__SK_BYTES], const uint8_t origin[TSYNC__SITE_BYTES],
                       uint64_t seq, const uint8_t hash[TSYNC__HASH_BYTES],
                       uint8_t sig[TSYNC__SIG_BYTES])
{
    uint8_t m[SIG_MSG_LEN];
    sodium_ready();
    sig_message(m, origin, seq, hash);
    crypto_sign_detached(sig, NULL, m, sizeof m, sk);
}

int tsync__batch_verify(const uint8_t pk[TSYNC__PK_BYTES], const uint8_t origin[TSYNC__SITE_BYTES],
                        uint64_t seq, const uint8_t hash[TSYNC__HASH_BYTES],
                        const uint8_t sig[TSYNC__SIG_BYTES])
{
    uint8_t m[SIG_MSG_LEN];
    sodium_ready();
    sig_message(m, origin, seq, hash);
    return crypto_sign_verify_detached(sig, m, sizeof m, pk) == 0 ? 0 : TSYNC_EBADSIG;
}

void tsync__site_id(const uint8_t pk[TSYNC__PK_BYTES], const uint8_t inc[TSYNC__INC_BYTES],
                    uint8_t out[TSYNC__SITE_BYTES])
{
    uint8_t m[TSYNC__PK_BYTES + TSYNC__INC_BYTES];
    memcpy(m, pk, TSYNC__PK_BYTES);
    memcpy(m + TSYNC__PK_BYTES, inc, TSYNC__INC_BYTES);
    crypto_generichash(out, TSYNC__SITE_BYTES, m, sizeof m, NULL, 0);
}
