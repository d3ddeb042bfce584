/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/compact.c — compact runs (codec/compact.h; docs/PROTOCOL.md, "Bundle format 5").
 *
 * Design notes
 * - The live shape seals every sale as its own batch: a body of ~125 bytes of which ~90 are the
 *   origin twice, the seq, two full clocks and the table's definition, identical or nearly so in
 *   every batch. Here each body is split into fields, the repeated ones are left out or coded
 *   against the batch before, and every kind of field goes to its own stream (clocks with clocks,
 *   keys with keys), which zstd then compresses far better than interleaved msgpack.
 * - Nothing new is trusted: the reader rebuilds the tsync__batch and encodes it with the one batch
 *   encoder, whose output is canonical, so a rebuilt body is byte for byte the body the author
 *   hashed and signed when the writer's input was canonical; the writer checks that (decode,
 * encode, compare) and sends any body that is not whole, in a raw stream. A forged field rebuilds
 * other bytes, which the hash chain and the signature refuse as before.
 * - All integers are LEB128 varints in their shortest form; signed ones zigzag-coded. A count is
 *   checked against the bytes left in the stream its entries come from before anything is
 *   allocated for it, and a run rebuilds to at most TSYNC__BUNDLE_RECORD_MAX bytes, the largest
 *   record format 4 lets a reader hold, so a hostile blob cannot make the reader hold more.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec/compact.h"

enum {
    S_HDR,  /* per batch: mode, clock, counts */
    S_SITE, /* dictionary references of the sites beyond the origin */
    S_DEP,  /* deps: site index, seq delta */
    S_ROW,  /* per row: table, hlc_off, flags, counts */
    S_KT,   /* key value tags */
    S_K,    /* key value payloads */
    S_VT,   /* column value tags */
    S_V,    /* column value payloads */
    S_OLD,  /* overwritten clocks: milliseconds before the row's */
    S_OLDL, /* their logical parts */
    S_COL,  /* column index, old site */
    S_CTR,  /* counters: column, p, n */
    S_RMV,  /* rmv: site, clock */
    S_RAW,  /* whole bodies, new site ids, table definitions */
    NSTREAMS
};

#define MODE_COMPACT 0u
#define MODE_RAW     1u
#define TABLES_SAME  0u
#define TABLES_NEW   1u
#define ROW_VARINTS  6u /* table, hlc_off, flags, nrmv, ncols, nctrs */
/* Rebuilt body bytes whose decoded batches the reader holds before freeing them (a decoded batch
 * takes a few times its body): about one arena chunk. Much more, and every free hands a stretch
 * at the top of the heap back to the kernel, which the next batches fault in again. */
#define BATCH_ARENA_BYTES ((size_t)4 << 10)

/* ---------------------------------------------------------------- writer */

typedef struct {
    uint8_t *p;
    size_t len, cap;
    bool oom;
} sbuf;

static void put(sbuf *b, const void *p, size_t n)
{
    if (b->oom || n == 0) return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) {
            b->oom = true;
            return;
        }
        b->p = np;
        b->cap = cap;
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
}

static void putv(sbuf *b, uint64_t v)
{
    uint8_t t[10];
    size_t k = 0;
    do {
        t[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[k] |= 0x80;
        k++;
    } while (v);
    put(b, t, k);
}

static uint64_t zz(int64_t v)
{
    return ((uint64_t)v << 1) ^ (uint64_t)(v >> 63);
}

static int64_t unzz(uint64_t v)
{
    return (int64_t)(v >> 1) ^ -(int64_t)(v & 1);
}

/* A clock's milliseconds relative to ref's (mod 2^64: any uint64 clock round-trips). */
static uint64_t ms_delta(uint64_t ref_ms, tsync__hlc h)
{
    return zz((int64_t)(ref_ms - (h >> 16)));
}

static void put_val(sbuf *tag, sbuf *pay, const tsync__val *v)
{
    uint8_t t = v->type;
    put(tag, &t, 1);
    switch (v->type) {
    case TSYNC__V_INT:
        putv(pay, zz(v->i));
        break;
    case TSYNC__V_REAL: {
        uint64_t bits;
        uint8_t le[8];
        memcpy(&bits, &v->r, 8);
        for (int i = 0; i < 8; i++) le[i] = (uint8_t)(bits >> (8 * i));
        put(pay, le, 8);
        break;
    }
    case TSYNC__V_TEXT:
    case TSYNC__V_BLOB:
        putv(pay, v->n);
        put(pay, v->p, v->n);
        break;
    default:
        break;
    }
}

typedef struct {
    uint8_t (*site)[TSYNC__SITE_BYTES];
    uint64_t *last; /* the last dep seq met for the site */
    uint32_t n, cap;
} sdict;

/* The dictionary index of a site, adding it (adds: *fresh). -1 when out of memory. */
static int64_t dict_find(sdict *d, const uint8_t *site, bool add, bool *fresh)
{
    *fresh = false;
    for (uint32_t i = 0; i < d->n; i++)
        if (memcmp(d->site[i], site, TSYNC__SITE_BYTES) == 0) return i;
    if (!add) return -1;
    if (d->n == d->cap) {
        uint32_t cap = d->cap ? d->cap * 2 : 8;
        void *ns = realloc(d->site, (size_t)cap * sizeof *d->site);
        if (!ns) return -1;
        d->site = ns;
        void *nl = realloc(d->last, (size_t)cap * sizeof *d->last);
        if (!nl) return -1;
        d->last = nl;
        d->cap = cap;
    }
    memcpy(d->site[d->n], site, TSYNC__SITE_BYTES);
    d->last[d->n] = 0;
    *fresh = true;
    return d->n++;
}

/* Whether body is a canonical batch of origin and seq (decoded into *b) that a compact run may
 * carry. A batch with column policies (format 3) travels raw, so that a reader of an older build
 * meets its format and refuses it by name rather than a table definition it cannot parse. */
static bool canonical(const uint8_t *body, size_t len, const uint8_t *origin, uint64_t seq,
                      tsync__batch *b, tsync__arena *a)
{
    char err[TSYNC__ERRLEN];
    if (tsync__batch_decode(body, len, b, a, err) != 0) return false;
    if (b->seq != seq || memcmp(b->origin, origin, TSYNC__SITE_BYTES) != 0) return false;
    if (b->format == TSYNC__BATCH_FORMAT_POLICIES) return false;
    uint8_t *re;
    size_t rlen;
    if (tsync__batch_encode(b, &re, &rlen, err) != 0) return false;
    bool same = rlen == len && memcmp(re, body, len) == 0;
    free(re);
    return same;
}

int tsync__crun_encode(const uint8_t origin[TSYNC__SITE_BYTES], uint64_t first_seq, uint32_t n,
                       const uint8_t *const *body, const size_t *len, uint8_t **out,
                       size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    sbuf s[NSTREAMS] = {0};
    sdict dict = {0};
    msgpack_sbuffer tb, prev_tb;
    msgpack_packer tpk;
    msgpack_sbuffer_init(&tb);
    msgpack_sbuffer_init(&prev_tb);
    msgpack_packer_init(&tpk, &tb, msgpack_sbuffer_write);
    bool fresh, have_tables = false, oom = false;
    uint64_t prev_ms = 0;
    if (dict_find(&dict, origin, true, &fresh) < 0) oom = true;
    for (uint32_t k = 0; k < n && !oom; k++) {
        tsync__arena a = {0};
        tsync__batch b;
        if (!canonical(body[k], len[k], origin, first_seq + k, &b, &a)) {
            putv(&s[S_HDR], MODE_RAW);
            putv(&s[S_HDR], len[k]);
            put(&s[S_RAW], body[k], len[k]);
            tsync__arena_free(&a);
            continue;
        }
        sbuf *h = &s[S_HDR];
        putv(h, MODE_COMPACT);
        putv(h, ms_delta(prev_ms, b.hlc_lo));
        putv(h, b.hlc_lo & 0xffff);
        putv(h, b.hlc_hi - b.hlc_lo);
        prev_ms = b.hlc_lo >> 16;
        putv(h, b.nsites - 1);
        putv(h, b.ndeps);
        tb.size = 0;
        if (tsync__mp_pack_tables(&tpk, b.tables, b.ntables) != 0) oom = true;
        if (have_tables && tb.size == prev_tb.size && memcmp(tb.data, prev_tb.data, tb.size) == 0) {
            putv(h, TABLES_SAME);
        } else {
            putv(h, TABLES_NEW);
            putv(h, tb.size);
            put(&s[S_RAW], tb.data, tb.size);
            prev_tb.size = 0;
            if (msgpack_sbuffer_write(&prev_tb, tb.data, tb.size) != 0) oom = true;
            have_tables = true;
        }
        putv(h, b.nrows);
        /* Sites beyond the origin, by dictionary reference (0: a new one, its id follows). */
        int64_t *map = calloc(b.nsites, sizeof *map);
        if (!map) {
            oom = true;
            tsync__arena_free(&a);
            break;
        }
        map[0] = 0;
        for (uint32_t i = 1; i < b.nsites; i++) {
            int64_t di = dict_find(&dict, b.sites[i], false, &fresh);
            if (di < 0) {
                di = dict_find(&dict, b.sites[i], true, &fresh);
                if (di < 0) oom = true;
                putv(&s[S_SITE], 0);
                put(&s[S_RAW], b.sites[i], TSYNC__SITE_BYTES);
            } else {
                putv(&s[S_SITE], (uint64_t)di + 1);
            }
            map[i] = di < 0 ? 0 : di;
        }
        for (uint32_t i = 0; i < b.ndeps && !oom; i++) {
            uint64_t *last = &dict.last[map[b.deps[i].site]];
            putv(&s[S_DEP], b.deps[i].site);
            putv(&s[S_DEP], zz((int64_t)(b.deps[i].seq - *last)));
            *last = b.deps[i].seq;
        }
        free(map);
        for (uint32_t i = 0; i < b.nrows; i++) {
            const tsync__brow *r = &b.rows[i];
            const tsync__btable *t = &b.tables[r->table];
            uint64_t rms = r->hlc >> 16;
            sbuf *rw = &s[S_ROW];
            putv(rw, r->table);
            putv(rw, r->hlc - b.hlc_lo);
            putv(rw, r->flags);
            putv(rw, r->nrmv);
            putv(rw, r->ncols);
            putv(rw, r->nctrs);
            for (uint32_t c = 0; c < t->npk; c++) put_val(&s[S_KT], &s[S_K], &r->pk[c]);
            for (uint32_t c = 0; c < r->nrmv; c++) {
                putv(&s[S_RMV], r->rmv[c].site);
                putv(&s[S_RMV], ms_delta(rms, r->rmv[c].hlc));
                putv(&s[S_RMV], r->rmv[c].hlc & 0xffff);
            }
            for (uint32_t c = 0; c < r->ncols; c++) {
                const tsync__bcol *col = &r->cols[c];
                putv(&s[S_COL], col->col);
                putv(&s[S_COL], col->old_site);
                put_val(&s[S_VT], &s[S_V], &col->val);
                if (col->old_hlc == 0) {
                    putv(&s[S_OLD], 0);
                } else {
                    putv(&s[S_OLD], 1 + ms_delta(rms, col->old_hlc));
                    putv(&s[S_OLDL], col->old_hlc & 0xffff);
                }
            }
            for (uint32_t c = 0; c < r->nctrs; c++) {
                putv(&s[S_CTR], r->ctrs[c].col);
                putv(&s[S_CTR], r->ctrs[c].p);
                putv(&s[S_CTR], r->ctrs[c].n);
            }
        }
        tsync__arena_free(&a);
    }
    sbuf all = {0};
    for (int i = 0; i < NSTREAMS; i++) {
        oom |= s[i].oom;
        putv(&all, s[i].len);
    }
    for (int i = 0; i < NSTREAMS; i++) put(&all, s[i].p, s[i].len);
    oom |= all.oom;
    for (int i = 0; i < NSTREAMS; i++) free(s[i].p);
    free(dict.site);
    free(dict.last);
    msgpack_sbuffer_destroy(&tb);
    msgpack_sbuffer_destroy(&prev_tb);
    if (oom) {
        free(all.p);
        return TSYNC_ENOMEM;
    }
    *out = all.p;
    *out_len = all.len;
    return 0;
}

/* ---------------------------------------------------------------- reader */

struct tsync__crun_dec {
    uint8_t *out; /* the rebuilt bodies, one after the other */
    size_t olen, ocap;
    const uint8_t **body;
    size_t *len;
    uint32_t cap;
    uint8_t (*site)[TSYNC__SITE_BYTES];
    uint64_t *last;
    uint32_t nsites, capsites;
};

typedef struct {
    const uint8_t *p, *end;
} rd;

typedef struct {
    rd s[NSTREAMS];
    char *err;
    uint32_t batch; /* index in the run, for messages */
} ctx;

static const char *const SNAME[NSTREAMS] = {
    "header",  "sites",    "deps",   "rows",       "key tags",
    "keys",    "tags",     "values", "old clocks", "old logical clocks",
    "columns", "counters", "rmv",    "raw"};

static bool fail(ctx *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(ctx *c, const char *fmt, ...)
{
    if (c->err[0]) return false;
    int k = snprintf(c->err, TSYNC__ERRLEN, "compact run: batch %" PRIu32 ": ", c->batch);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    return false;
}

/* A shortest-form varint from stream i. */
static bool getv(ctx *c, int i, uint64_t *v)
{
    rd *r = &c->s[i];
    uint64_t x = 0;
    for (unsigned k = 0; k < 10; k++) {
        if (r->p == r->end) return fail(c, "%s stream ends early", SNAME[i]);
        uint8_t b = *r->p++;
        if (k == 9 && b > 1) return fail(c, "%s stream: varint above 2^64", SNAME[i]);
        x |= (uint64_t)(b & 0x7f) << (7 * k);
        if (!(b & 0x80)) {
            if (k > 0 && b == 0)
                return fail(c, "%s stream: varint not in its shortest form", SNAME[i]);
            *v = x;
            return true;
        }
    }
    return fail(c, "%s stream: varint longer than 10 bytes", SNAME[i]);
}

static bool get32(ctx *c, int i, uint32_t *v, const char *what)
{
    uint64_t x;
    if (!getv(c, i, &x)) return false;
    if (x > UINT32_MAX) return fail(c, "%s %" PRIu64 " out of range", what, x);
    *v = (uint32_t)x;
    return true;
}

static bool getb(ctx *c, int i, const uint8_t **p, uint64_t n)
{
    rd *r = &c->s[i];
    if ((uint64_t)(r->end - r->p) < n) return fail(c, "%s stream ends early", SNAME[i]);
    *p = r->p;
    r->p += n;
    return true;
}

/* A count (from stream src) of entries that take at least min bytes each of stream i. */
static bool getn(ctx *c, int src, int i, uint32_t *n, size_t min, const char *what)
{
    if (!get32(c, src, n, what)) return false;
    if ((uint64_t)*n * min > (uint64_t)(c->s[i].end - c->s[i].p))
        return fail(c, "%s: %" PRIu32 " entries cannot fit in the %zu bytes left of its stream",
                    what, *n, (size_t)(c->s[i].end - c->s[i].p));
    return true;
}

/* A clock from milliseconds relative to ref_ms (stream i) and a logical part (stream li). */
static bool get_clock(ctx *c, int i, int li, uint64_t ref_ms, uint64_t code, tsync__hlc *h)
{
    uint64_t lg;
    uint64_t ms = ref_ms - (uint64_t)unzz(code);
    if (!getv(c, li, &lg)) return false;
    if (ms >> 48 || lg > 0xffff) return fail(c, "%s: clock out of range", SNAME[i]);
    *h = ms << 16 | lg;
    return true;
}

static bool get_val(ctx *c, int ti, int pi, tsync__val *v)
{
    const uint8_t *t = NULL, *p = NULL;
    uint64_t x;
    memset(v, 0, sizeof *v);
    if (!getb(c, ti, &t, 1)) return false;
    v->type = *t;
    switch (*t) {
    case TSYNC__V_NULL:
        return true;
    case TSYNC__V_INT:
        if (!getv(c, pi, &x)) return false;
        v->i = unzz(x);
        return true;
    case TSYNC__V_REAL: {
        uint64_t bits = 0;
        if (!getb(c, pi, &p, 8)) return false;
        for (int k = 0; k < 8; k++) bits |= (uint64_t)p[k] << (8 * k);
        memcpy(&v->r, &bits, 8);
        return true;
    }
    case TSYNC__V_TEXT:
    case TSYNC__V_BLOB:
        if (!getv(c, pi, &x) || !getb(c, pi, &p, x)) return false;
        if (x > TSYNC__BATCH_MAX_BYTES) return fail(c, "value of %" PRIu64 " bytes", x);
        v->p = p;
        v->n = (uint32_t)x;
        return true;
    default:
        return fail(c, "%s stream: unknown value tag %u", SNAME[ti], *t);
    }
}

tsync__crun_dec *tsync__crun_dec_new(void)
{
    return calloc(1, sizeof(tsync__crun_dec));
}

void tsync__crun_dec_free(tsync__crun_dec *d)
{
    if (!d) return;
    free(d->out);
    free(d->body);
    free(d->len);
    free(d->site);
    free(d->last);
    free(d);
}

uint8_t *tsync__crun_dec_take(tsync__crun_dec *d, const uint8_t *const *body)
{
    if (!d || !body || body != (const uint8_t *const *)d->body || !d->out) return NULL;
    uint8_t *out = d->out;
    d->out = NULL;
    d->olen = d->ocap = 0;
    return out;
}

static bool add_site(tsync__crun_dec *d, const uint8_t *site)
{
    if (d->nsites == d->capsites) {
        uint32_t cap = d->capsites ? d->capsites * 2 : 8;
        void *ns = realloc(d->site, (size_t)cap * sizeof *d->site);
        if (!ns) return false;
        d->site = ns;
        void *nl = realloc(d->last, (size_t)cap * sizeof *d->last);
        if (!nl) return false;
        d->last = nl;
        d->capsites = cap;
    }
    memcpy(d->site[d->nsites], site, TSYNC__SITE_BYTES);
    d->last[d->nsites++] = 0;
    return true;
}

static int append(tsync__crun_dec *d, const uint8_t *p, size_t n, ctx *c)
{
    if (d->olen + n > TSYNC__BUNDLE_RECORD_MAX) {
        fail(c, "the run rebuilds to more than %u bytes", TSYNC__BUNDLE_RECORD_MAX);
        return TSYNC_ECORRUPT;
    }
    if (d->olen + n > d->ocap) {
        size_t cap = d->ocap ? d->ocap : (size_t)64 << 10;
        while (cap < d->olen + n) cap *= 2;
        uint8_t *np = realloc(d->out, cap);
        if (!np) return TSYNC_ENOMEM;
        d->out = np;
        d->ocap = cap;
    }
    memcpy(d->out + d->olen, p, n);
    d->olen += n;
    return 0;
}

/* One compact batch into b (arrays in a). */
typedef struct {
    tsync__arena ta; /* the tables, which later batches share */
    tsync__btable *tables;
    uint32_t ntables;
    bool have;
    uint64_t prev_ms;
} runstate;

static bool get_batch(tsync__crun_dec *d, ctx *c, tsync__batch *b, tsync__arena *a, runstate *rs)
{
    uint64_t code = 0, lg = 0, span = 0, x = 0;
    if (!getv(c, S_HDR, &code) || !getv(c, S_HDR, &lg) || !getv(c, S_HDR, &span)) return false;
    uint64_t ms = rs->prev_ms - (uint64_t)unzz(code);
    if (ms >> 48 || lg > 0xffff) return fail(c, "hlc_lo out of range");
    b->hlc_lo = ms << 16 | lg;
    rs->prev_ms = ms;
    if (b->hlc_lo + span < b->hlc_lo) return fail(c, "hlc_hi above 2^64");
    b->hlc_hi = b->hlc_lo + span;
    uint32_t nextra = 0;
    if (!getn(c, S_HDR, S_SITE, &nextra, 1, "sites") ||
        !getn(c, S_HDR, S_DEP, &b->ndeps, 2, "deps"))
        return false;
    if (!getv(c, S_HDR, &x)) return false;
    if (x == TABLES_SAME) {
        if (!rs->have) return fail(c, "tables the same as a batch before the first");
    } else if (x == TABLES_NEW) {
        uint64_t tl;
        const uint8_t *tp = NULL;
        if (!getv(c, S_HDR, &tl) || !getb(c, S_RAW, &tp, tl)) return false;
        tsync__dec dd;
        uint64_t *masks;
        char derr[TSYNC__ERRLEN];
        if (!tsync__dec_open(&dd, tp, tl, TSYNC__BATCH_MAX_BYTES, &rs->ta, derr, "tables: ") ||
            !tsync__dec_tables(&dd, &rs->ntables, &rs->tables, &masks, false, false) ||
            !tsync__mpr_done(&dd.r)) {
            rs->have = false;
            return fail(c, "%s", derr[0] ? derr : "tables: trailing bytes");
        }
        rs->have = true;
    } else {
        return fail(c, "tables code %" PRIu64 " (0 or 1)", x);
    }
    b->ntables = rs->ntables;
    b->tables = rs->ntables ? rs->tables : NULL;
    if (!getn(c, S_HDR, S_ROW, &b->nrows, ROW_VARINTS, "rows")) return false;
    b->nsites = nextra + 1;
    uint8_t(*sites)[TSYNC__SITE_BYTES] = tsync__arena_array(a, b->nsites, sizeof *sites);
    uint32_t *map = tsync__arena_array(a, b->nsites, sizeof *map);
    if (!sites || !map) return fail(c, "out of memory");
    memcpy(sites[0], d->site[0], TSYNC__SITE_BYTES);
    map[0] = 0;
    for (uint32_t i = 1; i < b->nsites; i++) {
        if (!getv(c, S_SITE, &x)) return false;
        if (x == 0) {
            const uint8_t *sp = NULL;
            if (!getb(c, S_RAW, &sp, TSYNC__SITE_BYTES)) return false;
            if (!add_site(d, sp)) return fail(c, "out of memory");
            x = d->nsites;
        }
        if (x > d->nsites) return fail(c, "site reference %" PRIu64 " out of range", x);
        map[i] = (uint32_t)(x - 1);
        memcpy(sites[i], d->site[x - 1], TSYNC__SITE_BYTES);
    }
    b->sites = (const uint8_t(*)[TSYNC__SITE_BYTES])sites;
    b->deps = b->ndeps ? tsync__arena_array(a, b->ndeps, sizeof *b->deps) : NULL;
    b->rows = b->nrows ? tsync__arena_array(a, b->nrows, sizeof *b->rows) : NULL;
    if ((b->ndeps && !b->deps) || (b->nrows && !b->rows)) return fail(c, "out of memory");
    for (uint32_t i = 0; i < b->ndeps; i++) {
        if (!get32(c, S_DEP, &b->deps[i].site, "dep site") || !getv(c, S_DEP, &x)) return false;
        if (b->deps[i].site >= b->nsites)
            return fail(c, "dep site %" PRIu32 " out of range", b->deps[i].site);
        uint64_t *last = &d->last[map[b->deps[i].site]];
        b->deps[i].seq = *last + (uint64_t)unzz(x);
        *last = b->deps[i].seq;
    }
    for (uint32_t i = 0; i < b->nrows; i++) {
        tsync__brow *r = &b->rows[i];
        uint64_t off;
        if (!get32(c, S_ROW, &r->table, "table index") || !getv(c, S_ROW, &off) ||
            !get32(c, S_ROW, &r->flags, "flags") || !getn(c, S_ROW, S_RMV, &r->nrmv, 3, "rmv") ||
            !getn(c, S_ROW, S_COL, &r->ncols, 2, "cols") ||
            !getn(c, S_ROW, S_CTR, &r->nctrs, 3, "ctrs"))
            return false;
        if (r->table >= b->ntables)
            return fail(c, "row %" PRIu32 ": table index %" PRIu32 " out of range", i, r->table);
        if (off > span) return fail(c, "row %" PRIu32 ": hlc_off above hlc_hi", i);
        r->hlc = b->hlc_lo + off;
        uint64_t rms = r->hlc >> 16;
        for (uint32_t k = 0; k < b->tables[r->table].npk; k++)
            if (!get_val(c, S_KT, S_K, &r->pk[k])) return false;
        r->rmv = r->nrmv ? tsync__arena_array(a, r->nrmv, sizeof *r->rmv) : NULL;
        r->cols = r->ncols ? tsync__arena_array(a, r->ncols, sizeof *r->cols) : NULL;
        r->ctrs = r->nctrs ? tsync__arena_array(a, r->nctrs, sizeof *r->ctrs) : NULL;
        if ((r->nrmv && !r->rmv) || (r->ncols && !r->cols) || (r->nctrs && !r->ctrs))
            return fail(c, "out of memory");
        for (uint32_t k = 0; k < r->nrmv; k++)
            if (!get32(c, S_RMV, &r->rmv[k].site, "rmv site") || !getv(c, S_RMV, &x) ||
                !get_clock(c, S_RMV, S_RMV, rms, x, &r->rmv[k].hlc))
                return false;
        for (uint32_t k = 0; k < r->ncols; k++) {
            tsync__bcol *col = &r->cols[k];
            if (!get32(c, S_COL, &col->col, "column index") ||
                !get32(c, S_COL, &col->old_site, "old site") || !get_val(c, S_VT, S_V, &col->val) ||
                !getv(c, S_OLD, &x))
                return false;
            col->old_hlc = 0;
            if (x && !get_clock(c, S_OLD, S_OLDL, rms, x - 1, &col->old_hlc)) return false;
            if (x && col->old_hlc == 0) return fail(c, "an overwritten clock of 0 coded as one");
        }
        for (uint32_t k = 0; k < r->nctrs; k++)
            if (!get32(c, S_CTR, &r->ctrs[k].col, "counter column") ||
                !getv(c, S_CTR, &r->ctrs[k].p) || !getv(c, S_CTR, &r->ctrs[k].n))
                return false;
    }
    return true;
}

int tsync__crun_decode(tsync__crun_dec *d, const uint8_t origin[TSYNC__SITE_BYTES],
                       uint64_t first_seq, uint32_t n, const uint8_t *blob, size_t blen,
                       const uint8_t *const **body, const size_t **len, char err[TSYNC__ERRLEN])
{
    err[0] = '\0';
    *body = NULL;
    *len = NULL;
    d->olen = 0;
    d->nsites = 0;
    ctx c = {.err = err};
    rd all = {blob, blob + blen};
    c.s[0] = all;
    uint64_t sz[NSTREAMS], total = 0;
    for (int i = 0; i < NSTREAMS; i++) {
        if (!getv(&c, 0, &sz[i])) goto bad;
        total += sz[i] > blen ? blen + 1 : sz[i];
    }
    if (total != (uint64_t)(c.s[0].end - c.s[0].p)) {
        fail(&c, "stream lengths add up to %" PRIu64 " bytes, the run has %zu", total,
             (size_t)(c.s[0].end - c.s[0].p));
        goto bad;
    }
    const uint8_t *p = c.s[0].p;
    for (int i = 0; i < NSTREAMS; i++) {
        c.s[i].p = p;
        c.s[i].end = p + sz[i];
        p += sz[i];
    }
    if (n > d->cap) {
        const uint8_t **nb = realloc(d->body, (size_t)n * sizeof *nb);
        if (nb) d->body = nb;
        size_t *nl = nb ? realloc(d->len, (size_t)n * sizeof *nl) : NULL;
        if (!nl) return TSYNC_ENOMEM;
        d->len = nl;
        d->cap = n;
    }
    if (!add_site(d, origin)) return TSYNC_ENOMEM;
    runstate rs = {0};
    /* The decoded batches' arrays, freed every BATCH_ARENA_BYTES of rebuilt bodies rather than
     * per batch: a run of 100k one-sale batches would allocate (and zero) a chunk for each. */
    tsync__arena a = {0};
    size_t a_bytes = 0;
    int rc = 0;
    for (uint32_t k = 0; k < n && rc == 0; k++) {
        c.batch = k;
        uint64_t mode, l;
        size_t start = d->olen;
        if (!getv(&c, S_HDR, &mode)) goto corrupt;
        if (mode == MODE_RAW) {
            const uint8_t *bp = NULL;
            if (!getv(&c, S_HDR, &l) || !getb(&c, S_RAW, &bp, l)) goto corrupt;
            if (l == 0 || l > TSYNC__BATCH_MAX_BYTES) {
                fail(&c, "a whole body of %" PRIu64 " bytes", l);
                goto corrupt;
            }
            rc = append(d, bp, l, &c);
        } else if (mode == MODE_COMPACT) {
            if (a_bytes > BATCH_ARENA_BYTES) {
                tsync__arena_free(&a);
                a_bytes = 0;
            }
            tsync__batch b = {.format = TSYNC__BATCH_FORMAT, .seq = first_seq + k};
            memcpy(b.origin, origin, TSYNC__SITE_BYTES);
            bool ok = get_batch(d, &c, &b, &a, &rs);
            char eerr[TSYNC__ERRLEN];
            if (ok) {
                /* encoded straight after the bodies before it (no buffer per body) */
                int erc = tsync__batch_encode_append(&b, &d->out, &d->olen, &d->ocap, eerr);
                if (erc == TSYNC_ENOMEM)
                    rc = TSYNC_ENOMEM;
                else if (erc)
                    ok = fail(&c, "%s", eerr);
                else if (d->olen > TSYNC__BUNDLE_RECORD_MAX)
                    ok = fail(&c, "the run rebuilds to more than %u bytes",
                              TSYNC__BUNDLE_RECORD_MAX);
            }
            a_bytes += d->olen - start;
            if (!ok) goto corrupt;
        } else {
            fail(&c, "unknown mode %" PRIu64, mode);
            goto corrupt;
        }
        if (rc) break;
        d->len[k] = d->olen - start;
    }
    tsync__arena_free(&rs.ta);
    tsync__arena_free(&a);
    if (rc) return rc == TSYNC_ECORRUPT || err[0] ? TSYNC_ECORRUPT : rc;
    for (int i = 0; i < NSTREAMS; i++)
        if (c.s[i].p != c.s[i].end) {
            c.batch = n;
            fail(&c, "%zu bytes left in the %s stream", (size_t)(c.s[i].end - c.s[i].p), SNAME[i]);
            return TSYNC_ECORRUPT;
        }
    size_t off = 0;
    for (uint32_t k = 0; k < n; k++) {
        d->body[k] = d->out + off;
        off += d->len[k];
    }
    *body = d->body;
    *len = d->len;
    return 0;
corrupt:
    tsync__arena_free(&rs.ta);
    tsync__arena_free(&a);
    return TSYNC_ECORRUPT;
bad:
    return TSYNC_ECORRUPT;
}
