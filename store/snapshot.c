/*
 * store/snapshot.c — snapshots: this replica's state as self-contained chunks, and merging such a
 * state into another replica (store/snapshot.h; the byte format is in docs/SNAPSHOT.md).
 *
 * Design notes
 * - A snapshot is state, not history: per row its key, the existence OR-set, the LWW clock and
 *   value of every column ever written and each counter's per-site P and N. Merging it is the
 *   state-based CRDT join of those with the local row, so a snapshot merge ends where merging the
 *   batches it summarises would have ended (tests/test_snapshot.c checks exactly that), in any
 *   order with any batches, any number of times.
 * - Clock metadata names sites by their local index in tsync_sites; a chunk names them by an index
 *   into its own site table, which carries the site id (and key and incarnation when known), so a
 *   chunk decodes on its own and the receiver maps sites by id.
 * - Export reads everything in one read transaction, after sealing, so the rows, their clocks and
 *   the version vector returned are one consistent state. Chunks are built a row at a time and
 *   cut before they pass the size asked for: memory is one chunk, whatever the table size.
 * - Import decodes every chunk first without touching the database (a malformed snapshot is
 *   refused before any lock is taken), then in one BEGIN IMMEDIATE transaction decodes again and
 *   merges row by row, writing each changed row at once (chunks arrive in key order, so b-tree
 *   writes are near-appends). Rows are decoded one at a time into reused buffers: memory is one
 *   row plus the chunk's dictionaries.
 * - What cannot apply here (a table not replicated, a column missing) refuses the whole snapshot:
 *   there is no batch to point a parked change at, and skipping a value whose batch was pruned
 *   would lose it. The message says to migrate first; asking again afterwards loses nothing.
 * - Rows are written as store/merge.c's flush_row writes them (update, insert, resurrect from the
 *   tombstone, move to the tombstone), so both paths leave the same rows and tombstones.
 */
#include <inttypes.h>
#include <msgpack.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "store/snapshot.h"
#include "store/sync.h"

#define TOP_FIELDS   4 /* [format, sites, tables, rows] */
#define SITE_FIELDS  3 /* [site, pk|nil, inc|nil] */
#define TABLE_FIELDS 4 /* [name, cols, npk, counters] */
#define ROW_FIELDS   5 /* [table, key, exist, cols, ctrs] */

/* Smallest encodings of the list entries the decoder allocates for, in bytes: a count is then
 * believable only when that many bytes are left, which bounds what a hostile count can allocate. */
#define MIN_SITE  21 /* [bin16, nil, nil] */
#define MIN_TABLE 5  /* [name, [], npk, []] */
#define MIN_ROW   7  /* [table, [key], [], [], []] */
#define MIN_CTR   3  /* [col, []] */

#define MAX_MESSAGES 64 /* report lines, as merge keeps them */

/* Copies a name from the input into a message: at most 40 bytes, non-printable bytes as '?' (as
 * crdt/batch.c does), so a hostile name cannot break the one-line message. */
static const char *printable(char out[48], const char *s, uint32_t n)
{
    uint32_t k = n > 40 ? 40 : n;
    for (uint32_t i = 0; i < k; i++) {
        unsigned char c = (unsigned char)s[i];
        out[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
    }
    if (n > k)
        memcpy(out + k, "...", 4);
    else
        out[k] = '\0';
    return out;
}

/* ---------------------------------------------------------------- decoder
 *
 * The helpers follow crdt/batch.c's decoder (static there): strict types, the smallest encoding
 * of every integer, length and count, and a message saying where it went wrong. */

typedef struct {
    tsync__mpr r;
    const uint8_t *base;
    tsync__arena *a;
    char *err;
    int rc;
    const char *l1, *l2; /* where we are: "row 3: exist entry 1: " */
    uint32_t i1, i2;
} dec;

static bool fail(dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(dec *d, const char *fmt, ...)
{
    if (d->rc != 0 && d->rc != TSYNC_ECORRUPT) return false; /* keep the first (ENOMEM) */
    char where[96] = "";
    if (d->l1 && d->l2)
        snprintf(where, sizeof where, "%s %" PRIu32 ": %s %" PRIu32 ": ", d->l1, d->i1, d->l2,
                 d->i2);
    else if (d->l1)
        snprintf(where, sizeof where, "%s %" PRIu32 ": ", d->l1, d->i1);
    int k = snprintf(d->err, TSYNC__ERRLEN, "%s", where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    d->rc = TSYNC_ECORRUPT;
    return false;
}

/* Explains why reading `what` (an item of kind `want`) at the current position failed. */
static bool bad(dec *d, const char *what, const char *want)
{
    size_t off = (size_t)(d->r.p - d->base);
    if (d->r.p >= d->r.end) return fail(d, "%s: truncated (expected %s)", what, want);
    const char *got = tsync__mp_kind(d->r.p[0]);
    bool intish = !strcmp(got, "uint") || !strcmp(got, "int");
    bool family =
        !strcmp(got, want) ||
        (!strcmp(want, "value") && (intish || !strcmp(got, "nil") || !strcmp(got, "float64") ||
                                    !strcmp(got, "str") || !strcmp(got, "bin")));
    if (!family) return fail(d, "%s: expected %s, got %s at offset %zu", what, want, got, off);
    if (d->r.p[0] == 0xcf && (size_t)(d->r.end - d->r.p) >= 9 && strcmp(want, "uint"))
        return fail(d, "%s: integer above INT64_MAX at offset %zu", what, off);
    return fail(d, "%s: %s at offset %zu is truncated or longer than the bytes left", what, got,
                off);
}

static bool noncanon(dec *d, const char *what, const uint8_t *start)
{
    return fail(d, "%s: non-canonical msgpack encoding at offset %zu", what,
                (size_t)(start - d->base));
}

static bool rd_uint(dec *d, const char *what, uint64_t *v)
{
    const uint8_t *s = d->r.p;
    if (!tsync__mpr_uint(&d->r, v)) return bad(d, what, "uint");
    if ((size_t)(d->r.p - s) != tsync__mp_uint_size(*v)) return noncanon(d, what, s);
    return true;
}

/* A uint that must be < limit (an index); `of` names what it indexes. */
static bool rd_idx(dec *d, const char *what, uint32_t *v, uint32_t limit, const char *of)
{
    uint64_t u;
    if (!rd_uint(d, what, &u)) return false;
    if (u >= limit)
        return fail(d, "%s %" PRIu64 " out of range (%" PRIu32 " %s)", what, u, limit, of);
    *v = (uint32_t)u;
    return true;
}

static bool rd_array(dec *d, const char *what, uint32_t *n)
{
    const uint8_t *s = d->r.p;
    if (!tsync__mpr_array(&d->r, n)) return bad(d, what, "array");
    if ((size_t)(d->r.p - s) != tsync__mp_array_size(*n)) return noncanon(d, what, s);
    return true;
}

/* An array of n entries of at least min bytes each. */
static bool rd_list(dec *d, const char *what, uint32_t *n, size_t min)
{
    if (!rd_array(d, what, n)) return false;
    size_t left = (size_t)(d->r.end - d->r.p);
    if ((uint64_t)*n * min > left)
        return fail(d, "%s: %" PRIu32 " entries cannot fit in the %zu bytes left", what, *n, left);
    return true;
}

static bool rd_tuple(dec *d, const char *what, uint32_t want)
{
    uint32_t n;
    if (!rd_array(d, what, &n)) return false;
    if (n != want)
        return fail(d, "%s: expected an array of %" PRIu32 ", got %" PRIu32, what, want, n);
    return true;
}

static bool rd_bin_exact(dec *d, const char *what, uint8_t *out, uint32_t want)
{
    const uint8_t *s = d->r.p, *p;
    uint32_t n;
    if (!tsync__mpr_bin(&d->r, &p, &n)) return bad(d, what, "bin");
    if (n != want)
        return fail(d, "%s: expected bin of %" PRIu32 " bytes, got %" PRIu32, what, want, n);
    if ((size_t)(d->r.p - s) != tsync__mp_bin_size(n)) return noncanon(d, what, s);
    memcpy(out, p, want);
    return true;
}

static bool rd_str(dec *d, const char *what, const char **str, uint32_t *n)
{
    const uint8_t *s = d->r.p;
    if (!tsync__mpr_str(&d->r, str, n)) return bad(d, what, "str");
    if ((size_t)(d->r.p - s) != tsync__mp_str_size(*n)) return noncanon(d, what, s);
    return true;
}

static bool rd_value(dec *d, const char *what, tsync__val *v)
{
    const uint8_t *s = d->r.p;
    if (!tsync__mpr_value(&d->r, v)) return bad(d, what, "value");
    size_t want = 0;
    switch (v->type) {
    case TSYNC__V_NULL:
        want = 1;
        break;
    case TSYNC__V_INT:
        /* only the uint form is canonical for a non-negative value */
        want = v->i >= 0 && s[0] >= 0xd0 ? 0 : tsync__mp_int_size(v->i);
        break;
    case TSYNC__V_REAL:
        want = 9;
        break;
    case TSYNC__V_TEXT:
        want = tsync__mp_str_size(v->n);
        break;
    case TSYNC__V_BLOB:
        want = tsync__mp_bin_size(v->n);
        break;
    }
    if ((size_t)(d->r.p - s) != want) return noncanon(d, what, s);
    return true;
}

static void *alloc_array(dec *d, uint32_t n, size_t sz)
{
    if (n == 0) return NULL;
    void *p = (size_t)n > SIZE_MAX / sz ? NULL : tsync__arena_alloc(d->a, (size_t)n * sz);
    if (!p) {
        snprintf(d->err, TSYNC__ERRLEN, "out of memory");
        d->rc = TSYNC_ENOMEM;
    }
    return p;
}

/* Grows a scratch array to hold n elements. */
static bool grow(dec *d, void **p, size_t *cap, size_t n, size_t sz)
{
    if (n <= *cap) return true;
    size_t nc = *cap ? *cap : 16;
    while (nc < n) nc *= 2;
    void *np = realloc(*p, nc * sz);
    if (!np) {
        snprintf(d->err, TSYNC__ERRLEN, "out of memory");
        d->rc = TSYNC_ENOMEM;
        return false;
    }
    *p = np;
    *cap = nc;
    return true;
}

/* A chunk being read: its dictionaries decoded, its rows read one at a time into buffers that
 * are reused from row to row (a row's arrays are valid until the next row is read). */
typedef struct {
    dec d;
    tsync__snap_chunk hdr;      /* sites and tables (in the arena); rows are not kept */
    uint64_t *ctrmask;          /* per table: its counter columns */
    uint32_t nrows, next;       /* rows declared, rows read */
    uint32_t *stamp, stamp_gen; /* per site: the last entry list it appeared in (repeats) */
    tsync__exist *exist;
    size_t excap;
    tsync__snap_col *cols;
    size_t colcap;
    tsync__snap_ctr *ctrs;
    size_t ctrcap;
    tsync__pn *pn;
    size_t pncap;
} snapit;

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
    if (!rd_list(d, "sites", &n, MIN_SITE)) return false;
    c->sites = alloc_array(d, n, sizeof *c->sites);
    if (n && !c->sites) return false;
    d->l1 = "site";
    for (uint32_t i = 0; i < n; i++) {
        tsync__snap_site *e = &c->sites[i];
        d->i1 = i;
        if (!rd_tuple(d, "entry", SITE_FIELDS) ||
            !rd_bin_exact(d, "id", e->site, TSYNC__SITE_BYTES))
            return false;
        if (tsync__mpr_nil(&d->r)) {
            if (!tsync__mpr_nil(&d->r)) return bad(d, "incarnation (no key given)", "nil");
            continue;
        }
        if (!rd_bin_exact(d, "public key", e->pk, TSYNC__PK_BYTES) ||
            !rd_bin_exact(d, "incarnation", e->inc, TSYNC__INC_BYTES))
            return false;
        uint8_t id[TSYNC__SITE_BYTES];
        tsync__site_id(e->pk, e->inc, id);
        if (memcmp(id, e->site, TSYNC__SITE_BYTES) != 0)
            return fail(d, "id is not BLAKE2b-128(public key || incarnation)");
        e->has_key = 1;
    }
    d->l1 = NULL;
    c->nsites = n;
    if (n > 1) {
        tsync__snap_site **o = alloc_array(d, n, sizeof *o);
        if (!o) return false;
        for (uint32_t i = 0; i < n; i++) o[i] = &c->sites[i];
        qsort(o, n, sizeof *o, cmp_site);
        for (uint32_t i = 1; i < n; i++)
            if (memcmp(o[i - 1]->site, o[i]->site, TSYNC__SITE_BYTES) == 0)
                return fail(d, "sites: site %" PRIu32 " repeats site %" PRIu32,
                            (uint32_t)(o[i] - c->sites), (uint32_t)(o[i - 1] - c->sites));
    }
    return true;
}

static bool dec_tables(dec *d, tsync__snap_chunk *c, uint64_t **masks)
{
    uint32_t n;
    char nm[48];
    if (!rd_list(d, "tables", &n, MIN_TABLE)) return false;
    c->tables = alloc_array(d, n, sizeof *c->tables);
    *masks = alloc_array(d, n, sizeof **masks);
    if (n && (!c->tables || !*masks)) return false;
    d->l1 = "table";
    for (uint32_t i = 0; i < n; i++) {
        d->i1 = i;
        tsync__btable *t = &c->tables[i];
        uint64_t npk;
        uint32_t nc;
        if (!rd_tuple(d, "definition", TABLE_FIELDS) ||
            !rd_str(d, "name", &t->name, &t->name_len) || !rd_array(d, "columns", &nc))
            return false;
        if (nc > TSYNC__MAX_COLS)
            return fail(d, "%" PRIu32 " columns, more than %d", nc, TSYNC__MAX_COLS);
        t->ncols = nc;
        t->cols = alloc_array(d, nc, sizeof *t->cols);
        t->col_len = alloc_array(d, nc, sizeof *t->col_len);
        if (nc && (!t->cols || !t->col_len)) return false;
        for (uint32_t k = 0; k < nc; k++) {
            if (!rd_str(d, "column name", &t->cols[k], &t->col_len[k])) return false;
            for (uint32_t j = 0; j < k; j++)
                if (tsync__name_eq(t->cols[j], t->col_len[j], t->cols[k], t->col_len[k]))
                    return fail(d, "column '%s' named twice",
                                printable(nm, t->cols[k], t->col_len[k]));
        }
        if (!rd_uint(d, "key column count", &npk)) return false;
        if (npk < 1 || npk > TSYNC__MAX_PK_COLS || npk > nc)
            return fail(
                d, "key column count %" PRIu64 " invalid (1..%d, at most the %" PRIu32 " columns)",
                npk, TSYNC__MAX_PK_COLS, nc);
        t->npk = (uint32_t)npk;
        if (!rd_array(d, "counters", &t->ncounters)) return false;
        t->counters = alloc_array(d, t->ncounters, sizeof *t->counters);
        if (t->ncounters && !t->counters) return false;
        for (uint32_t k = 0; k < t->ncounters; k++) {
            uint32_t col = 0;
            if (!rd_idx(d, "counter column index", &col, nc, "columns")) return false;
            if (col < t->npk) return fail(d, "counter column %" PRIu32 " is a key column", col);
            if ((*masks)[i] >> col & 1) return fail(d, "counter column %" PRIu32 " repeated", col);
            if (k && col < t->counters[k - 1])
                return fail(d, "counter columns out of order at %" PRIu32, col);
            (*masks)[i] |= (uint64_t)1 << col;
            t->counters[k] = col;
        }
    }
    d->l1 = NULL;
    c->ntables = n;
    if (n > 1) {
        tsync__btable **o = alloc_array(d, n, sizeof *o);
        if (!o) return false;
        for (uint32_t i = 0; i < n; i++) o[i] = &c->tables[i];
        qsort(o, n, sizeof *o, cmp_table);
        for (uint32_t i = 1; i < n; i++)
            if (cmp_table(&o[i - 1], &o[i]) == 0)
                return fail(d, "tables: table '%s' is described twice",
                            printable(nm, o[i]->name, o[i]->name_len));
    }
    return true;
}

static int it_open(snapit *it, const uint8_t *buf, size_t len, tsync__arena *a,
                   char err[TSYNC__ERRLEN])
{
    memset(it, 0, sizeof *it);
    err[0] = '\0';
    if (!buf || len == 0) {
        snprintf(err, TSYNC__ERRLEN, "empty");
        return TSYNC_ECORRUPT;
    }
    if (len > TSYNC__SNAP_CHUNK_MAX_BYTES) {
        snprintf(err, TSYNC__ERRLEN, "%zu bytes, more than the limit of %u", len,
                 (unsigned)TSYNC__SNAP_CHUNK_MAX_BYTES);
        return TSYNC_ECORRUPT;
    }
    dec *d = &it->d;
    *d = (dec){.base = buf, .a = a, .err = err, .rc = 0};
    tsync__mpr_init(&d->r, buf, len);
    uint32_t n;
    uint64_t fmt;
    if (!rd_array(d, "chunk", &n)) return d->rc;
    if (n == 0) return fail(d, "chunk: empty array"), d->rc;
    if (!rd_uint(d, "format", &fmt)) return d->rc;
    if (fmt != TSYNC__SNAP_FORMAT) {
        snprintf(err, TSYNC__ERRLEN, "format %" PRIu64 " is not supported (this build reads %u)",
                 fmt, TSYNC__SNAP_FORMAT);
        return d->rc = TSYNC_EVERSION;
    }
    if (n != TOP_FIELDS)
        return fail(d, "chunk: expected %d fields, got %" PRIu32, TOP_FIELDS, n), d->rc;
    if (!dec_sites(d, &it->hdr) || !dec_tables(d, &it->hdr, &it->ctrmask)) return d->rc;
    if (it->hdr.nsites) {
        it->stamp = alloc_array(d, it->hdr.nsites, sizeof *it->stamp);
        if (!it->stamp) return d->rc;
    }
    if (!rd_list(d, "rows", &it->nrows, MIN_ROW)) return d->rc;
    return 0;
}

/* Reads the next row into it's buffers. 0, or the error (message in err). */
static int it_next(snapit *it, tsync__snap_row *row)
{
    dec *d = &it->d;
    const tsync__snap_chunk *c = &it->hdr;
    uint32_t n;
    char nm[48];
    memset(row, 0, sizeof *row);
    d->l1 = "row";
    d->i1 = it->next++;
    d->l2 = NULL;
    if (!rd_tuple(d, "row", ROW_FIELDS) ||
        !rd_idx(d, "table index", &row->table, c->ntables, "tables"))
        return d->rc;
    const tsync__btable *t = &c->tables[row->table];
    uint64_t ctrs = it->ctrmask[row->table];
    if (!rd_array(d, "key", &n)) return d->rc;
    if (n != t->npk)
        return fail(d, "key has %" PRIu32 " values, table '%s' has %" PRIu32 " key columns", n,
                    printable(nm, t->name, t->name_len), t->npk),
               d->rc;
    for (uint32_t k = 0; k < n; k++) {
        if (!rd_value(d, "key value", &row->pk[k])) return d->rc;
        if (row->pk[k].type == TSYNC__V_NULL)
            return fail(d, "key value %" PRIu32 " is NULL", k), d->rc;
    }

    /* exist: [site, add, rmv, ...] */
    if (!rd_array(d, "exist", &n)) return d->rc;
    if (n % 3) return fail(d, "exist: %" PRIu32 " items, not a multiple of 3", n), d->rc;
    if (!grow(d, (void **)&it->exist, &it->excap, n / 3, sizeof *it->exist)) return d->rc;
    it->stamp_gen++;
    for (uint32_t k = 0; k < n / 3; k++) {
        tsync__exist *e = &it->exist[k];
        d->l2 = "exist entry";
        d->i2 = k;
        if (!rd_idx(d, "site index", &e->site, c->nsites, "sites") || !rd_uint(d, "add", &e->add) ||
            !rd_uint(d, "rmv", &e->rmv))
            return d->rc;
        if (it->stamp[e->site] == it->stamp_gen)
            return fail(d, "site index %" PRIu32 " repeated", e->site), d->rc;
        it->stamp[e->site] = it->stamp_gen;
        if (!e->add && !e->rmv) return fail(d, "add and rmv are both 0"), d->rc;
    }
    row->nexist = n / 3;
    row->exist = it->exist;
    d->l2 = NULL;

    /* cols: [col, hlc, site, value, ...] */
    if (!rd_array(d, "cols", &n)) return d->rc;
    if (n % 4) return fail(d, "cols: %" PRIu32 " items, not a multiple of 4", n), d->rc;
    if (!grow(d, (void **)&it->cols, &it->colcap, n / 4, sizeof *it->cols)) return d->rc;
    for (uint32_t k = 0; k < n / 4; k++) {
        tsync__snap_col *e = &it->cols[k];
        d->l2 = "col entry";
        d->i2 = k;
        if (!rd_idx(d, "column index", &e->col, t->ncols, "columns")) return d->rc;
        if (e->col < t->npk) return fail(d, "column %" PRIu32 " is a key column", e->col), d->rc;
        if (ctrs >> e->col & 1)
            return fail(d, "column %" PRIu32 " is a counter (its state goes in ctrs)", e->col),
                   d->rc;
        if (k && e->col <= it->cols[k - 1].col)
            return fail(d, "column %" PRIu32 " out of order or repeated", e->col), d->rc;
        if (!rd_uint(d, "hlc", &e->hlc) || !rd_idx(d, "site index", &e->site, c->nsites, "sites") ||
            !rd_value(d, "value", &e->val))
            return d->rc;
        if (!e->hlc) return fail(d, "hlc is 0"), d->rc;
    }
    row->ncols = n / 4;
    row->cols = it->cols;
    d->l2 = NULL;

    /* ctrs: [[col, [site, p, n, ...]], ...] */
    if (!rd_list(d, "ctrs", &n, MIN_CTR)) return d->rc;
    if (!grow(d, (void **)&it->ctrs, &it->ctrcap, n, sizeof *it->ctrs)) return d->rc;
    size_t npn = 0;
    for (uint32_t k = 0; k < n; k++) {
        tsync__snap_ctr *e = &it->ctrs[k];
        uint32_t m;
        d->l2 = "counter entry";
        d->i2 = k;
        if (!rd_tuple(d, "entry", 2) || !rd_idx(d, "column index", &e->col, t->ncols, "columns"))
            return d->rc;
        if (!(ctrs >> e->col & 1))
            return fail(d, "column %" PRIu32 " is not a counter of table '%s'", e->col,
                        printable(nm, t->name, t->name_len)),
                   d->rc;
        if (k && e->col <= it->ctrs[k - 1].col)
            return fail(d, "column %" PRIu32 " out of order or repeated", e->col), d->rc;
        if (!rd_array(d, "sites", &m)) return d->rc;
        if (m == 0 || m % 3)
            return fail(d, "%" PRIu32 " items, not a positive multiple of 3", m), d->rc;
        if (!grow(d, (void **)&it->pn, &it->pncap, npn + m / 3, sizeof *it->pn)) return d->rc;
        it->stamp_gen++;
        e->n = m / 3;
        e->v = (tsync__pn *)(uintptr_t)npn; /* an offset until the pool stops moving */
        for (uint32_t j = 0; j < m / 3; j++) {
            tsync__pn *p = &it->pn[npn++];
            if (!rd_idx(d, "site index", &p->site, c->nsites, "sites") || !rd_uint(d, "p", &p->p) ||
                !rd_uint(d, "n", &p->n))
                return d->rc;
            if (it->stamp[p->site] == it->stamp_gen)
                return fail(d, "site index %" PRIu32 " repeated", p->site), d->rc;
            it->stamp[p->site] = it->stamp_gen;
            if (!p->p && !p->n) return fail(d, "p and n are both 0"), d->rc;
        }
    }
    for (uint32_t k = 0; k < n; k++) it->ctrs[k].v = it->pn + (uintptr_t)it->ctrs[k].v;
    row->nctrs = n;
    row->ctrs = it->ctrs;
    d->l2 = NULL;
    if (!row->nexist && !row->ncols && !row->nctrs) return fail(d, "carries no clocks"), d->rc;
    d->l1 = NULL;
    return 0;
}

static int it_close(snapit *it)
{
    dec *d = &it->d;
    d->l1 = d->l2 = NULL;
    if (it->next != it->nrows)
        return fail(d, "rows: %" PRIu32 " not read", it->nrows - it->next), d->rc;
    if (!tsync__mpr_done(&d->r))
        return fail(d, "%zu trailing bytes", (size_t)(d->r.end - d->r.p)), d->rc;
    return 0;
}

static void it_free(snapit *it)
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
    int rc = it_open(&it, buf, len, a, err);
    if (rc == 0 && it.nrows) {
        out->rows = alloc_array(&it.d, it.nrows, sizeof *out->rows);
        if (!out->rows) rc = it.d.rc;
    }
    for (uint32_t i = 0; rc == 0 && i < it.nrows; i++) {
        tsync__snap_row *r = &out->rows[i];
        if ((rc = it_next(&it, r))) break;
        /* copy the row's arrays out of the reused buffers */
        tsync__exist *ex = alloc_array(&it.d, r->nexist, sizeof *ex);
        tsync__snap_col *co = alloc_array(&it.d, r->ncols, sizeof *co);
        tsync__snap_ctr *ct = alloc_array(&it.d, r->nctrs, sizeof *ct);
        if ((r->nexist && !ex) || (r->ncols && !co) || (r->nctrs && !ct)) {
            rc = it.d.rc;
            break;
        }
        if (r->nexist) memcpy(ex, r->exist, r->nexist * sizeof *ex);
        if (r->ncols) memcpy(co, r->cols, r->ncols * sizeof *co);
        for (uint32_t k = 0; k < r->nctrs; k++) {
            ct[k] = r->ctrs[k];
            ct[k].v = alloc_array(&it.d, ct[k].n, sizeof *ct[k].v);
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
    if (rc == 0) rc = it_close(&it);
    it_free(&it);
    if (rc) {
        memset(out, 0, sizeof *out);
        return rc;
    }
    out->nsites = it.hdr.nsites;
    out->sites = it.hdr.sites;
    out->ntables = it.hdr.ntables;
    out->tables = it.hdr.tables;
    out->nrows = it.nrows;
    return 0;
}

/* ---------------------------------------------------------------- encoder */

#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) goto nomem;                                                                  \
    } while (0)

static int pack_bytes(msgpack_packer *pk, bool str, const void *p, uint32_t n)
{
    int rc = str ? msgpack_pack_str(pk, n) : msgpack_pack_bin(pk, n);
    if (rc == 0 && n) rc = str ? msgpack_pack_str_body(pk, p, n) : msgpack_pack_bin_body(pk, p, n);
    return rc;
}

/* As crdt/batch.c packs a value (static there). */
static int pack_val(msgpack_packer *pk, const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_INT:
        return msgpack_pack_int64(pk, v->i);
    case TSYNC__V_REAL:
        return msgpack_pack_double(pk, v->r);
    case TSYNC__V_TEXT:
        return pack_bytes(pk, true, v->p, v->n);
    case TSYNC__V_BLOB:
        return pack_bytes(pk, false, v->p, v->n);
    default:
        return msgpack_pack_nil(pk);
    }
}

int tsync__snap_encode(const tsync__snap_chunk *c, uint8_t **out, size_t *len)
{
    *out = NULL;
    *len = 0;
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    PK(msgpack_pack_array(&pk, TOP_FIELDS));
    PK(msgpack_pack_uint32(&pk, TSYNC__SNAP_FORMAT));
    PK(msgpack_pack_array(&pk, c->nsites));
    for (uint32_t i = 0; i < c->nsites; i++) {
        const tsync__snap_site *s = &c->sites[i];
        PK(msgpack_pack_array(&pk, SITE_FIELDS));
        PK(pack_bytes(&pk, false, s->site, TSYNC__SITE_BYTES));
        if (s->has_key) {
            PK(pack_bytes(&pk, false, s->pk, TSYNC__PK_BYTES));
            PK(pack_bytes(&pk, false, s->inc, TSYNC__INC_BYTES));
        } else {
            PK(msgpack_pack_nil(&pk));
            PK(msgpack_pack_nil(&pk));
        }
    }
    PK(msgpack_pack_array(&pk, c->ntables));
    for (uint32_t i = 0; i < c->ntables; i++) {
        const tsync__btable *t = &c->tables[i];
        PK(msgpack_pack_array(&pk, TABLE_FIELDS));
        PK(pack_bytes(&pk, true, t->name, t->name_len));
        PK(msgpack_pack_array(&pk, t->ncols));
        for (uint32_t k = 0; k < t->ncols; k++)
            PK(pack_bytes(&pk, true, t->cols[k], t->col_len[k]));
        PK(msgpack_pack_uint32(&pk, t->npk));
        PK(msgpack_pack_array(&pk, t->ncounters));
        for (uint32_t k = 0; k < t->ncounters; k++) PK(msgpack_pack_uint32(&pk, t->counters[k]));
    }
    PK(msgpack_pack_array(&pk, c->nrows));
    for (uint32_t i = 0; i < c->nrows; i++) {
        const tsync__snap_row *r = &c->rows[i];
        uint32_t npk = r->table < c->ntables ? c->tables[r->table].npk : 0;
        PK(msgpack_pack_array(&pk, ROW_FIELDS));
        PK(msgpack_pack_uint32(&pk, r->table));
        PK(msgpack_pack_array(&pk, npk));
        for (uint32_t k = 0; k < npk; k++) PK(pack_val(&pk, &r->pk[k]));
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
            PK(pack_val(&pk, &r->cols[k].val));
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

static size_t site_size(const tsync__snap_site *s)
{
    return 1 + tsync__mp_bin_size(TSYNC__SITE_BYTES) +
           (s->has_key ? tsync__mp_bin_size(TSYNC__PK_BYTES) + tsync__mp_bin_size(TSYNC__INC_BYTES)
                       : 2);
}

static size_t table_size(const tsync__btable *t)
{
    size_t n = 1 + tsync__mp_str_size(t->name_len) + tsync__mp_array_size(t->ncols) +
               tsync__mp_uint_size(t->npk) + tsync__mp_array_size(t->ncounters);
    for (uint32_t k = 0; k < t->ncols; k++) n += tsync__mp_str_size(t->col_len[k]);
    for (uint32_t k = 0; k < t->ncounters; k++) n += tsync__mp_uint_size(t->counters[k]);
    return n;
}

static size_t row_size(const tsync__snap_row *r, uint32_t npk)
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

/* ---------------------------------------------------------------- export */

/* A site of tsync_sites, by local index. */
typedef struct {
    int known, has_key;
    uint64_t seq;   /* contiguous batches held */
    int64_t frozen; /* frozen_seq, -1 when not frozen */
    uint8_t id[TSYNC__SITE_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
} lsite;

static int load_lsites(tsync_store *s, lsite **out, uint32_t *n)
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
    tsync__exist *dex;
    size_t dexcap;
    tsync__snap_col *dcol;
    tsync__snap_ctr *dctr;
    tsync__pn *dpn;
    size_t dpncap;
} exporter;

static size_t chunk_size(const exporter *x)
{
    return 1 + tsync__mp_uint_size(TSYNC__SNAP_FORMAT) + tsync__mp_array_size(x->c.nsites) +
           x->sz_sites + tsync__mp_array_size(x->c.ntables) + x->sz_tables +
           tsync__mp_array_size(x->c.nrows) + x->sz_rows;
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
    x->sz_sites += site_size(e);
    x->slocal[x->c.nsites] = l;
    x->smap[l] = ++x->c.nsites;
    return x->c.nsites - 1;
}

/* Adds table ti (position in s->tables) to the chunk; returns its chunk index or -1. The chunk
 * lists the key columns first, in key order, then the others in ordinal order (as a batch does);
 * ord2b maps a local ordinal to that position. */
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
    if (!b->cols || !b->col_len || !b->counters) return -1;
    for (int c = 0; c < t->ncols; c++) {
        b->cols[ord2b[c]] = t->cols[c];
        b->col_len[ord2b[c]] = (uint32_t)strlen(t->cols[c]);
    }
    for (uint32_t k = 0; k < b->ncols; k++) /* ascending chunk index */
        for (int c = 0; c < t->ncols; c++)
            if (ord2b[c] == (int)k && t->is_counter[c]) b->counters[b->ncounters++] = k;
    x->sz_tables += table_size(b);
    x->tlocal[x->c.ntables] = ti;
    x->tmap[ti] = (int)++x->c.ntables;
    return (int)x->c.ntables - 1;
}

static void ex_reset(exporter *x)
{
    for (uint32_t i = 0; i < x->c.nsites; i++) x->smap[x->slocal[i]] = 0;
    for (uint32_t i = 0; i < x->c.ntables; i++) x->tmap[x->tlocal[i]] = 0;
    x->c.nsites = x->c.ntables = x->c.nrows = 0;
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
        /* translate sites into chunk indexes in a copy, so a cut can start again from the draft */
        tsync__snap_row r = *d;
        tsync__exist *ex = tsync__arena_alloc(&x->a, (d->nexist + 1) * sizeof *ex);
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
        size_t rs = row_size(&r, (uint32_t)x->s->tables[ti].npk);
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

/* A growable string for building SQL. */
typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t nc = b->cap ? b->cap * 2 : 256;
        while (nc < b->n + n + 1) nc *= 2;
        char *np = realloc(b->p, nc);
        if (!np) {
            b->oom = 1;
            return;
        }
        b->p = np;
        b->cap = nc;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = 0;
}

static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, s, strlen(s));
}

/* Appends "name" quoted for SQL. */
static void sb_ident(sbuf *b, const char *name)
{
    sb_put(b, "\"", 1);
    for (const char *c = name; *c; c++) {
        sb_put(b, c, 1);
        if (*c == '"') sb_put(b, c, 1); /* doubled */
    }
    sb_put(b, "\"", 1);
}

static void sb_param(sbuf *b, int i)
{
    char t[16];
    snprintf(t, sizeof t, "?%d", i);
    sb_str(b, t);
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
    sbuf q = {0};
    sb_str(&q, "SELECT ");
    for (int i = 0; i < t->npk; i++) {
        sb_ident(&q, t->cols[t->pk[i]]);
        sb_str(&q, ", ");
    }
    sb_str(&q, "tsync_m FROM ");
    sb_str(&q, t->qclk);
    sb_str(&q, " ORDER BY ");
    for (int i = 0; i < t->npk; i++) {
        if (i) sb_str(&q, ", ");
        sb_ident(&q, t->cols[t->pk[i]]);
    }
    if (q.oom) {
        free(q.p);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, q.p, -1, &st, NULL);
    free(q.p);
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
            tsync__exist *ne = realloc(x->dex, m.nexist * sizeof *ne);
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
                d->exist[d->nexist++] = m.exist[i];
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
         * a clock but no value anywhere (a row a local constraint kept out, see merge.c's
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
            tsync__pn *np = realloc(x->dpn, npn * sizeof *np);
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
                    e->v[e->n++] = cs->v[j];
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
        (rc = load_lsites(s, &x.ls, &x.nls)))
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

/* ---------------------------------------------------------------- import */

static void report_msg(tsync_merge_report *r, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void report_msg(tsync_merge_report *r, const char *fmt, ...)
{
    if (!r || r->nmessages >= MAX_MESSAGES) return;
    char buf[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    char **nm = realloc(r->messages, (r->nmessages + 1) * sizeof *nm);
    if (!nm) return;
    r->messages = nm;
    if (r->nmessages == MAX_MESSAGES - 1) snprintf(buf, sizeof buf, "(further messages omitted)");
    r->messages[r->nmessages] = strdup(buf);
    if (r->messages[r->nmessages]) r->nmessages++;
}

enum { K_UPD_ROW, K_INS_ROW, K_UPD_TOMB, K_INS_TOMB, K_RES_ROW, K_KEEP_TOMB, K_DEL_ROW };

/* Parameters: the key is ?1..?npk (pk_where), the value of column c is ?(VAL0 + c). */
#define VAL0 (TSYNC__MAX_PK_COLS + 1)

typedef struct {
    int tbl, kind;
    uint64_t mask, mask2;
    sqlite3_stmt *st;
} cstmt;

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
    cstmt *stmts;
    size_t nstmts;
    uint8_t *mbuf;
    size_t mcap;
    uint64_t now_ms;
    size_t chunk, nchunks; /* for messages */
    const tsync__snap_chunk *c;
    uint32_t *smap; /* chunk site -> local index + 1; 0 while not registered here */
    ctab *tabs;
    struct hicache {
        uint32_t site;
        uint64_t seq;
        tsync__hlc hi;
    } * hi; /* highest clock of batches we hold, looked up for conflict decisions */
    size_t nhi, hicap;
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
    sqlite3_stmt *st = tsync__prep(ic->s, "SELECT body FROM tsync_log WHERE site=?1 AND seq=?2");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    if (sqlite3_step(st) == SQLITE_ROW) {
        /* [format, origin, seq, hlc_lo, hlc_hi, ...] (crdt/crdt.h) */
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

static sqlite3_stmt *cached_stmt(ictx *ic, tsync__table *t, int kind, uint64_t mask, uint64_t mask2)
{
    for (size_t i = 0; i < ic->nstmts; i++)
        if (ic->stmts[i].tbl == t->id && ic->stmts[i].kind == kind && ic->stmts[i].mask == mask &&
            ic->stmts[i].mask2 == mask2)
            return ic->stmts[i].st;
    sbuf q = {0};
    switch (kind) {
    case K_UPD_ROW:
    case K_UPD_TOMB: {
        sb_str(&q, "UPDATE ");
        sb_str(&q, kind == K_UPD_ROW ? t->qname : t->qtomb);
        sb_str(&q, " SET ");
        int first = 1;
        for (int c = 0; c < t->ncols; c++)
            if (mask >> c & 1) {
                if (!first) sb_str(&q, ",");
                sb_ident(&q, t->cols[c]);
                sb_str(&q, "=");
                sb_param(&q, VAL0 + c);
                first = 0;
            }
        sb_str(&q, " WHERE ");
        sb_str(&q, t->pk_where);
        break;
    }
    case K_INS_TOMB:
        sb_str(&q, "INSERT OR IGNORE INTO ");
        sb_str(&q, t->qtomb);
        sb_str(&q, "(");
        for (int i = 0; i < t->npk; i++) {
            if (i) sb_str(&q, ",");
            sb_ident(&q, t->cols[t->pk[i]]);
        }
        sb_str(&q, ") VALUES(");
        for (int i = 0; i < t->npk; i++) {
            if (i) sb_str(&q, ",");
            sb_param(&q, i + 1);
        }
        sb_str(&q, ")");
        break;
    case K_INS_ROW:
    case K_RES_ROW:
        /* A resurrected row takes the key and the columns ever written from its tombstone
         * (mask), this merge's values and the counters' totals as parameters (mask2); columns
         * never written take their DEFAULT, as in a fresh insert. */
        sb_str(&q, "INSERT INTO ");
        sb_str(&q, t->qname);
        sb_str(&q, "(");
        for (int i = 0; i < t->npk; i++) {
            if (i) sb_str(&q, ",");
            sb_ident(&q, t->cols[t->pk[i]]);
        }
        for (int c = 0; c < t->ncols; c++)
            if (!t->is_pk[c] && (mask >> c & 1)) {
                sb_str(&q, ",");
                sb_ident(&q, t->cols[c]);
            }
        sb_str(&q, kind == K_INS_ROW ? ") VALUES(" : ") SELECT ");
        for (int i = 0; i < t->npk; i++) {
            if (i) sb_str(&q, ",");
            if (kind == K_INS_ROW)
                sb_param(&q, i + 1);
            else
                sb_ident(&q, t->cols[t->pk[i]]);
        }
        for (int c = 0; c < t->ncols; c++)
            if (!t->is_pk[c] && (mask >> c & 1)) {
                sb_str(&q, ",");
                if (kind == K_INS_ROW || (mask2 >> c & 1))
                    sb_param(&q, VAL0 + c);
                else
                    sb_ident(&q, t->cols[c]);
            }
        if (kind == K_INS_ROW) {
            sb_str(&q, ")");
        } else {
            sb_str(&q, " FROM ");
            sb_str(&q, t->qtomb);
            sb_str(&q, " WHERE ");
            sb_str(&q, t->pk_where);
        }
        break;
    case K_KEEP_TOMB:
        sb_str(&q, "INSERT OR REPLACE INTO ");
        sb_str(&q, t->qtomb);
        sb_str(&q, "(");
        sb_str(&q, t->all_cols);
        sb_str(&q, ") SELECT ");
        sb_str(&q, t->all_cols);
        sb_str(&q, " FROM ");
        sb_str(&q, t->qname);
        sb_str(&q, " WHERE ");
        sb_str(&q, t->pk_where);
        break;
    default:
        sb_str(&q, "DELETE FROM ");
        sb_str(&q, t->qname);
        sb_str(&q, " WHERE ");
        sb_str(&q, t->pk_where);
        break;
    }
    if (q.oom) {
        free(q.p);
        tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(ic->s->db, q.p, -1, &st, NULL);
    free(q.p);
    if (rc != SQLITE_OK) {
        tsync__err_sqlite(ic->s->db, rc, "prepare snapshot statement");
        return NULL;
    }
    cstmt *ns = realloc(ic->stmts, (ic->nstmts + 1) * sizeof *ns);
    if (!ns) {
        sqlite3_finalize(st);
        tsync__err(TSYNC_ENOMEM, "out of memory");
        return NULL;
    }
    ic->stmts = ns;
    ic->stmts[ic->nstmts++] = (cstmt){t->id, kind, mask, mask2, st};
    return st;
}

/* One row being merged. */
typedef struct {
    tsync__table *t;
    const tsync__val *pk;
    uint8_t *key;
    uint32_t klen;
    tsync__rowmeta m;
    int had_meta, existed;
    uint64_t mask; /* columns whose value changed */
    tsync__val vals[TSYNC__MAX_COLS];
} irow;

static int step_done(tsync_store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, rc, what);
}

static int row_in(tsync_store *s, sqlite3_stmt *st, const irow *r, int *out)
{
    bind_pk(st, r->pk, r->t->npk);
    int x = sqlite3_step(st);
    *out = x == SQLITE_ROW;
    sqlite3_reset(st);
    return x == SQLITE_ROW || x == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, x, "read row");
}

/* The value this replica shows for a column now (from the row or its tombstone). *owner is the
 * statement the value points into (reset it after use), or NULL. */
static int current_value(ictx *ic, irow *r, int col, tsync__val *out, sqlite3_stmt **owner)
{
    *owner = NULL;
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = r->existed ? r->t->get_row : r->t->get_tomb;
    bind_pk(st, r->pk, r->t->npk);
    int x = sqlite3_step(st);
    if (x == SQLITE_ROW) {
        tsync__col_val(st, col, out);
        *owner = st;
        return 0;
    }
    sqlite3_reset(st);
    return x == SQLITE_DONE ? 0 : tsync__err_sqlite(ic->s->db, x, "read row");
}

/* As store/merge.c records a conflict: both values with their clocks and sites. */
static int record_conflict(ictx *ic, irow *r, int col, const tsync__val *remote, tsync__hlc rhlc,
                           const uint8_t *rsite, int remote_wins)
{
    tsync_store *s = ic->s;
    tsync__val cur;
    sqlite3_stmt *owner;
    int rc = current_value(ic, r, col, &cur, &owner);
    if (rc) return rc;
    sqlite3_stmt *st = tsync__prep(s, "INSERT INTO tsync_conflicts(at_ms, tbl, pk, col, win_val, "
                                      "win_hlc, win_site, lose_val, lose_hlc, lose_site) "
                                      "VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
    if (!st) {
        if (owner) sqlite3_reset(owner);
        return TSYNC_EIO;
    }
    char *pk = tsync__key_json(r->key, r->klen, r->t->npk);
    const tsync__val *wv = remote_wins ? remote : &cur, *lv = remote_wins ? &cur : remote;
    tsync__hlc lh = r->m.col[col].hlc;
    const uint8_t *ls = lsite_id(ic, r->m.col[col].site);
    sqlite3_bind_int64(st, 1, (int64_t)ic->now_ms);
    sqlite3_bind_text(st, 2, r->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 3, pk ? pk : "[]", -1, SQLITE_TRANSIENT);
    sqlite3_bind_text(st, 4, r->t->cols[col], -1, SQLITE_STATIC);
    tsync__bind_val(st, 5, wv);
    sqlite3_bind_int64(st, 6, (int64_t)(remote_wins ? rhlc : lh));
    sqlite3_bind_blob(st, 7, remote_wins ? rsite : ls, TSYNC__SITE_BYTES, SQLITE_TRANSIENT);
    tsync__bind_val(st, 8, lv);
    sqlite3_bind_int64(st, 9, (int64_t)(remote_wins ? lh : rhlc));
    sqlite3_bind_blob(st, 10, remote_wins ? ls : rsite, TSYNC__SITE_BYTES, SQLITE_TRANSIENT);
    rc = step_done(s, st, "record conflict");
    if (owner) sqlite3_reset(owner);
    free(pk);
    if (rc == 0 && ic->rep) ic->rep->conflicts++;
    return rc;
}

/* Runs a statement writing a row of the app's table. A local constraint (a unique index added
 * after replicate, a STRICT type) does not fail the import: as store/merge.c's step_row does, the
 * row is parked with the reason and its clocks are kept. Returns 1 when parked, -1 on error. */
static int step_row(ictx *ic, irow *r, sqlite3_stmt *st, const char *what, int *rc)
{
    int x = sqlite3_step(st);
    sqlite3_reset(st);
    if (x == SQLITE_DONE || x == SQLITE_ROW) return 0;
    if ((x & 0xff) != SQLITE_CONSTRAINT && (x & 0xff) != SQLITE_MISMATCH) {
        *rc = tsync__err_sqlite(ic->s->db, x, what);
        return -1;
    }
    char *key = tsync__key_json(r->key, r->klen, r->t->npk);
    char reason[300];
    snprintf(reason, sizeof reason, "%s %s: %s", what, key ? key : "?", sqlite3_errmsg(ic->s->db));
    free(key);
    sqlite3_stmt *p = tsync__prep(ic->s, "INSERT INTO tsync_parked(site, seq, row, tbl, col, "
                                         "reason) VALUES(?1,?2,?3,?4,?5,?6)");
    if (!p) {
        *rc = TSYNC_EIO;
        return -1;
    }
    sqlite3_bind_int64(p, 1, 0);
    sqlite3_bind_int64(p, 2, 0);
    sqlite3_bind_int64(p, 3, UINT32_MAX);
    sqlite3_bind_text(p, 4, r->t->name, -1, SQLITE_STATIC);
    sqlite3_bind_text(p, 6, reason, -1, SQLITE_STATIC);
    if ((*rc = step_done(ic->s, p, "park row"))) return -1;
    if (ic->rep) ic->rep->parked++;
    report_msg(ic->rep, "parked: a row of %s could not be written here: %s", r->t->name, reason);
    return 1;
}

static void bind_vals(sqlite3_stmt *st, const irow *r, uint64_t mask)
{
    for (int c = 0; c < r->t->ncols; c++)
        if (mask >> c & 1) tsync__bind_val(st, VAL0 + c, &r->vals[c]);
}

/* Writes a merged row to the table or its tombstone, then its clocks (store/merge.c's
 * flush_row, so both leave the same rows and tombstones). */
static int write_row(ictx *ic, irow *r)
{
    tsync_store *s = ic->s;
    tsync__table *t = r->t;
    int rc = 0, exists = tsync__orset_exists(r->m.exist, r->m.nexist);
    uint64_t mask = r->mask;
    sqlite3_stmt *st;
    if (exists && r->existed) {
        if (mask) {
            if (!(st = cached_stmt(ic, t, K_UPD_ROW, mask, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            bind_vals(st, r, mask);
            if (step_row(ic, r, st, "update row", &rc)) goto meta;
        }
    } else if (exists) {
        int tomb = 0;
        if (r->had_meta && (rc = row_in(s, t->get_tomb, r, &tomb))) return rc;
        if (tomb) {
            uint64_t known = 0, params = mask;
            for (int c = 0; c < t->ncols; c++) {
                if (t->is_pk[c]) continue;
                if (t->is_counter[c] && tsync__rowmeta_ctr(&r->m, c)) {
                    r->vals[c] =
                        (tsync__val){.type = TSYNC__V_INT, .i = tsync__rowmeta_ctr_value(&r->m, c)};
                    params |= 1ULL << c;
                }
                if (r->m.col[c].hlc || tsync__rowmeta_ctr(&r->m, c)) known |= 1ULL << c;
            }
            known |= params;
            if (!(st = cached_stmt(ic, t, K_RES_ROW, known, params))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            bind_vals(st, r, params);
            if (step_row(ic, r, st, "resurrect row", &rc)) goto meta;
            bind_pk(t->del_tomb, r->pk, t->npk);
            if ((rc = step_done(s, t->del_tomb, "clear tombstone"))) return rc;
        } else {
            if (!(st = cached_stmt(ic, t, K_INS_ROW, mask, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            bind_vals(st, r, mask);
            if (step_row(ic, r, st, "insert row", &rc)) goto meta;
        }
    } else {
        if (r->existed) {
            /* keep the values, so a later resurrection shows the latest of each field */
            if (!(st = cached_stmt(ic, t, K_KEEP_TOMB, 0, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            if ((rc = step_done(s, st, "keep tombstone"))) return rc;
            if (!(st = cached_stmt(ic, t, K_DEL_ROW, 0, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            if ((rc = step_done(s, st, "delete row"))) return rc;
        } else if (mask) {
            if (!(st = cached_stmt(ic, t, K_INS_TOMB, 0, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            if ((rc = step_done(s, st, "keep tombstone"))) return rc;
        }
        if (mask) {
            if (!(st = cached_stmt(ic, t, K_UPD_TOMB, mask, 0))) return TSYNC_EIO;
            bind_pk(st, r->pk, t->npk);
            bind_vals(st, r, mask);
            if ((rc = step_done(s, st, "update tombstone"))) return rc;
        }
    }
meta:
    if (rc) return rc;
    return tsync__put_meta(s, t, r->key, r->klen, &r->m, &ic->mbuf, &ic->mcap, r->had_meta);
}

static int refuse(ictx *ic, const tsync__btable *bt, const char *col, uint32_t clen,
                  const char *why)
{
    char nm[48], cn[48];
    printable(nm, bt->name, bt->name_len);
    if (col) printable(cn, col, clen);
    return tsync__err(TSYNC_EREFUSED,
                      "snapshot refused: chunk %zu of %zu: %s%s%s: %s; migrate first (make this "
                      "database's schema match), then ask for the snapshot again",
                      ic->chunk, ic->nchunks, nm, col ? "." : "", col ? cn : "", why);
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

    irow r;
    memset(&r, 0, sizeof r);
    r.t = t;
    r.pk = row->pk;
    r.klen = (uint32_t)tsync__key_size(row->pk, t->npk);
    uint8_t kb[512];
    r.key = r.klen <= sizeof kb ? kb : malloc(r.klen);
    if (!r.key) return tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__key_encode(row->pk, t->npk, r.key);
    int rc = tsync__load_meta(ic->s, t, r.key, r.klen, &r.m, &r.had_meta);
    if (rc == 0 && r.had_meta) rc = row_in(ic->s, t->exists_row, &r, &r.existed);
    int changed = !r.had_meta;

    /* existence: pointwise max per site */
    for (uint32_t k = 0; rc == 0 && k < row->nexist; k++) {
        const tsync__exist *e = &row->exist[k];
        uint32_t l;
        if ((rc = site_local(ic, e->site, &l))) break;
        const tsync__exist *cur = NULL;
        for (size_t j = 0; j < r.m.nexist; j++)
            if (r.m.exist[j].site == l) cur = &r.m.exist[j];
        if (!cur || e->add > cur->add || e->rmv > cur->rmv) changed = 1;
        rc = tsync__rowmeta_exist_merge(&r.m, l, e->add, e->rmv);
    }

    /* fields: last writer wins by (hlc, site id) */
    for (uint32_t k = 0; rc == 0 && k < row->ncols; k++) {
        const tsync__snap_col *e = &row->cols[k];
        int col = ct->map[e->col];
        if (t->is_counter[col]) continue; /* a plain value for a counter: ignored, as merge does */
        const uint8_t *rid = ic->c->sites[e->site].site;
        tsync__colclk cur = r.m.col[col];
        const uint8_t *lid = lsite_id(ic, cur.site);
        int same = cur.hlc == e->hlc && memcmp(lid, rid, TSYNC__SITE_BYTES) == 0;
        int cmp = cur.hlc == 0 ? 1 : tsync__lww_cmp(e->hlc, rid, cur.hlc, lid);
        if (cmp == 0) {
            /* Same clock and site: the same write, or two branches of a fork; order by value so
             * every replica picks the same one. */
            tsync__val cv;
            sqlite3_stmt *owner;
            if ((rc = current_value(ic, &r, col, &cv, &owner))) break;
            cmp = tsync__val_cmp(&e->val, &cv);
            if (owner) sqlite3_reset(owner);
        }
        int wins = cmp > 0;
        if (cur.hlc && !same) {
            /* A snapshot has no history. The pair is taken as concurrent when the winning side
             * did not yet hold the losing write: what merge concludes from a batch's overwritten
             * clock, up to a winner whose state held the loser only after writing (then the
             * exporter recorded the conflict, not us). */
            int seen = wins ? snap_saw(ic, cur.site, cur.hlc) : we_saw(ic, e->site, e->hlc);
            if (!seen && (rc = record_conflict(ic, &r, col, &e->val, e->hlc, rid, wins))) break;
        }
        if (wins) {
            uint32_t l;
            if ((rc = site_local(ic, e->site, &l))) break;
            r.m.col[col] = (tsync__colclk){e->hlc, l};
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
            const tsync__ctrset *cs = tsync__rowmeta_ctr(&r.m, col);
            const tsync__pn *cur = NULL;
            for (size_t q = 0; cs && q < cs->n; q++)
                if (cs->v[q].site == l) cur = &cs->v[q];
            if (!cur || e->v[j].p > cur->p || e->v[j].n > cur->n) cchg = 1;
            rc = tsync__rowmeta_ctr_merge(&r.m, col, l, e->v[j].p, e->v[j].n);
        }
        if (rc == 0 && cchg) {
            r.vals[col] =
                (tsync__val){.type = TSYNC__V_INT, .i = tsync__rowmeta_ctr_value(&r.m, col)};
            r.mask |= 1ULL << col;
            changed = 1;
        }
    }

    if (rc == 0 && changed) {
        if (ic->rep) ic->rep->merged++;
        rc = write_row(ic, &r);
    } else if (rc == 0 && ic->rep) {
        ic->rep->duplicates++;
    }
    tsync__rowmeta_clear(&r.m);
    if (r.key != kb) free(r.key);
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
                report_msg(ic->rep,
                           "snapshot: it holds %llu batches of this database, which wrote %llu: "
                           "left as is (a copy of this database may be writing with our identity)",
                           (unsigned long long)e->seq,
                           (unsigned long long)ic->ls[s->local_idx].seq);
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
            report_msg(ic->rep,
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
    for (size_t i = 1; i < vv->n; i++)
        if (memcmp(vv->e[i - 1].site, vv->e[i].site, TSYNC__SITE_BYTES) >= 0)
            return tsync__err(TSYNC_EINVAL, "snapshot refused: its vector is not sorted by site "
                                            "id, or names a site twice");
    {
        /* A peer holds more of our own site than our log: this database went back (an old copy
         * written over it). A new incarnation first; the old site is then taken like any other's
         * (store/identity.c). */
        uint64_t theirs = tsync__vv_seq(vv, s->site), head = 0;
        sqlite3_stmt *st =
            theirs ? tsync__prep(s, "SELECT seq FROM tsync_sites WHERE idx=?1") : NULL;
        if (st) {
            sqlite3_bind_int64(st, 1, s->local_idx);
            if (sqlite3_step(st) == SQLITE_ROW) head = (uint64_t)sqlite3_column_int64(st, 0);
            sqlite3_reset(st);
            int rc = 0;
            if (theirs > head && !s->read_only && (rc = tsync__identity_renew(s, head, theirs)))
                return rc;
        }
    }

    /* Pass 1, touching nothing: every chunk decodes, every origin of the vector is described,
     * no clock is too far ahead. */
    tsync__snap_site *keys = calloc(vv->n + 1, sizeof *keys);
    if (!keys) return tsync__err(TSYNC_ENOMEM, "out of memory");
    tsync__hlc maxh = 0;
    uint8_t maxsite[TSYNC__SITE_BYTES] = {0};
    char err[TSYNC__ERRLEN];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        tsync__arena a = {0};
        snapit it;
        tsync__snap_row row;
        rc = it_open(&it, chunks[i], lens[i], &a, err);
        for (uint32_t k = 0; rc == 0 && k < it.hdr.nsites; k++) {
            const tsync__snap_site *cs = &it.hdr.sites[k];
            const tsync__vv_entry *e = cs->has_key ? tsync__vv_get(vv, cs->site) : NULL;
            if (e) keys[e - vv->e] = *cs;
        }
        while (rc == 0 && it.next < it.nrows && (rc = it_next(&it, &row)) == 0) {
            for (uint32_t k = 0; k < row.nexist; k++) {
                tsync__hlc h =
                    row.exist[k].add > row.exist[k].rmv ? row.exist[k].add : row.exist[k].rmv;
                if (h > maxh)
                    maxh = h, memcpy(maxsite, it.hdr.sites[row.exist[k].site].site, sizeof maxsite);
            }
            for (uint32_t k = 0; k < row.ncols; k++)
                if (row.cols[k].hlc > maxh)
                    maxh = row.cols[k].hlc,
                    memcpy(maxsite, it.hdr.sites[row.cols[k].site].site, sizeof maxsite);
        }
        if (rc == 0) rc = it_close(&it);
        it_free(&it);
        tsync__arena_free(&a);
        if (rc) rc = tsync__err(rc, "snapshot refused: chunk %zu of %zu: %s", i, n, err);
    }
    for (size_t i = 0; rc == 0 && i < vv->n; i++)
        if (vv->e[i].seq && !keys[i].has_key) {
            char sh[13];
            tsync__hex(vv->e[i].site, 6, sh);
            rc = tsync__err(TSYNC_ECORRUPT,
                            "snapshot refused: its vector names site %s (batch %llu) but no "
                            "chunk gives that site's key and incarnation",
                            sh, (unsigned long long)vv->e[i].seq);
        }
    uint64_t now = tsync__now_ms(s);
    if (rc == 0 && tsync__hlc_too_far(maxh, now, s->skew_bound_ms)) {
        char sh[13];
        tsync__hex(maxsite, 6, sh);
        rc = tsync__err(TSYNC_ECLOCKSKEW,
                        "snapshot refused: a clock of site %s is %llu ms ahead of ours (more than "
                        "%llu ms); ask again once the clocks agree",
                        sh, (unsigned long long)(tsync__hlc_ms(maxh) - now),
                        (unsigned long long)s->skew_bound_ms);
    }
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
    ic.vv = vv;
    ic.now_ms = now;
    ic.nchunks = n;
    if ((rc = tsync__begin(s))) goto fail;
    if ((rc = tsync__seal_locked(s, NULL))) goto rollback;
    if ((rc = tsync__capture_off(s, 1))) goto rollback;
    if ((rc = load_lsites(s, &ic.ls, &ic.nls))) goto rollback;
    if (s->local_idx >= ic.nls) {
        rc = tsync__err(TSYNC_ECORRUPT, "tsync_sites lacks this database's own site");
        goto rollback;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        tsync__arena a = {0};
        snapit it;
        tsync__snap_row row;
        ic.chunk = i;
        /* decoded once already: only running out of memory can fail here */
        int drc = it_open(&it, chunks[i], lens[i], &a, err);
        if (drc == 0) {
            rc = chunk_maps(&ic, &it.hdr);
            while (rc == 0 && it.next < it.nrows && (drc = it_next(&it, &row)) == 0)
                rc = apply_row(&ic, &row);
            if (rc == 0 && drc == 0) drc = it_close(&it);
        }
        if (drc) rc = tsync__err(drc, "snapshot refused: chunk %zu of %zu: %s", i, n, err);
        it_free(&it);
        tsync__arena_free(&a);
    }
    if (rc) goto rollback;
    if ((rc = take_vector(&ic, vv, keys))) goto rollback;
    if (maxh) {
        tsync__hlc last;
        if ((rc = tsync__hlc_load(s, &last))) goto rollback;
        tsync__hlc nl = tsync__hlc_observe(last, maxh);
        if (nl != last && (rc = tsync__hlc_store(s, nl))) goto rollback;
    }
    for (size_t i = 0; i < ic.nstmts; i++) sqlite3_finalize(ic.stmts[i].st);
    ic.nstmts = 0;
    tsync__capture_off(s, 0);
    rc = tsync__commit(s);
    goto fail;
rollback:
    for (size_t i = 0; i < ic.nstmts; i++) sqlite3_finalize(ic.stmts[i].st);
    ic.nstmts = 0;
    tsync__rollback(s);
    tsync__capture_off(s, 0);
fail:
    if (report && (rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION || rc == TSYNC_EREFUSED))
        report->refused++;
    free(ic.stmts);
    free(ic.ls);
    free(ic.mbuf);
    free(ic.smap);
    free(ic.tabs);
    free(ic.hi);
    free(keys);
    return rc;
}
