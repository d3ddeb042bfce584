/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/dec.c — what the batch and snapshot decoders share on top of the bounded reader (mpk.c):
 * a position for messages ("row 3: col entry 1: "), the one wording of every reader fault, the
 * typed reads that say what they were reading when they fail, and arena arrays. Both formats
 * are canonical, so their decoders read with a canonical reader and word a fault the same way.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "codec/codec.h"

const char *tsync__dec_printable(char out[48], const char *s, uint32_t n)
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

bool tsync__dec_open(tsync__dec *d, const uint8_t *buf, size_t len, size_t max, tsync__arena *a,
                     char *err, const char *prefix)
{
    *d = (tsync__dec){.a = a, .err = err, .rc = TSYNC_ECORRUPT, .prefix = prefix};
    tsync__mpr_init(&d->r, buf, len);
    d->r.canonical = true;
    err[0] = '\0';
    if (!buf || len == 0) {
        snprintf(err, TSYNC__ERRLEN, "%sempty", prefix ? prefix : "");
        return false;
    }
    if (len > max) {
        snprintf(err, TSYNC__ERRLEN, "%s%zu bytes, more than the limit of %zu",
                 prefix ? prefix : "", len, max);
        return false;
    }
    return true;
}

bool tsync__dec_fail(tsync__dec *d, const char *fmt, ...)
{
    if (d->rc != 0 && d->rc != TSYNC_ECORRUPT) return false; /* keep the first (ENOMEM) */
    char where[96] = "";
    if (d->l1 && d->l2)
        snprintf(where, sizeof where, "%s %" PRIu32 ": %s %" PRIu32 ": ", d->l1, d->i1, d->l2,
                 d->i2);
    else if (d->l1)
        snprintf(where, sizeof where, "%s %" PRIu32 ": ", d->l1, d->i1);
    int k = snprintf(d->err, TSYNC__ERRLEN, "%s%s", d->prefix ? d->prefix : "", where);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->err + k, TSYNC__ERRLEN - (size_t)k, fmt, ap);
    va_end(ap);
    d->rc = TSYNC_ECORRUPT;
    return false;
}

bool tsync__dec_bad(tsync__dec *d, const char *what)
{
    const tsync__mpr *r = &d->r;
    size_t off = tsync__mpr_pos(r);
    switch ((tsync__mpr_fault)r->fault) {
    case TSYNC__MPR_END:
        return tsync__dec_fail(d, "%s: truncated (expected %s)", what, r->expected);
    case TSYNC__MPR_TYPE:
        return tsync__dec_fail(d, "%s: expected %s, got %s at offset %zu", what, r->expected,
                               tsync__mpr_found(r), off);
    case TSYNC__MPR_RANGE:
        return tsync__dec_fail(d, "%s: integer above INT64_MAX at offset %zu", what, off);
    case TSYNC__MPR_NONCANON:
        return tsync__dec_fail(d, "%s: non-canonical msgpack encoding at offset %zu", what, off);
    case TSYNC__MPR_LENGTH:
        return tsync__dec_fail(d, "%s: expected bin of %" PRIu64 " bytes, got %" PRIu64, what,
                               r->want, r->got);
    case TSYNC__MPR_ROOM:
        return tsync__dec_fail(d,
                               "%s: %" PRIu64 " entries cannot fit in the %" PRIu64 " bytes left",
                               what, r->got, r->want);
    case TSYNC__MPR_SHORT:
    case TSYNC__MPR_OK:
        break;
    }
    return tsync__dec_fail(d, "%s: %s at offset %zu is truncated or longer than the bytes left",
                           what, tsync__mpr_found(r), off);
}

bool tsync__dec_uint(tsync__dec *d, const char *what, uint64_t *v)
{
    return tsync__mpr_uint(&d->r, v) || tsync__dec_bad(d, what);
}

bool tsync__dec_idx(tsync__dec *d, const char *what, uint32_t *v, uint32_t limit, const char *of)
{
    uint64_t u;
    if (!tsync__dec_uint(d, what, &u)) return false;
    if (u >= limit)
        return tsync__dec_fail(d, "%s %" PRIu64 " out of range (%" PRIu32 " %s)", what, u, limit,
                               of);
    *v = (uint32_t)u;
    return true;
}

bool tsync__dec_array(tsync__dec *d, const char *what, uint32_t *n)
{
    return tsync__mpr_array(&d->r, n) || tsync__dec_bad(d, what);
}

bool tsync__dec_list(tsync__dec *d, const char *what, uint32_t *n, size_t min)
{
    return tsync__mpr_list(&d->r, n, min) || tsync__dec_bad(d, what);
}

bool tsync__dec_tuple(tsync__dec *d, const char *what, uint32_t want)
{
    uint32_t n;
    if (!tsync__dec_array(d, what, &n)) return false;
    if (n != want)
        return tsync__dec_fail(d, "%s: expected an array of %" PRIu32 ", got %" PRIu32, what, want,
                               n);
    return true;
}

bool tsync__dec_binfix(tsync__dec *d, const char *what, uint8_t *out, uint32_t n)
{
    return tsync__mpr_binfix(&d->r, out, n) || tsync__dec_bad(d, what);
}

bool tsync__dec_str(tsync__dec *d, const char *what, const char **s, uint32_t *n)
{
    return tsync__mpr_str(&d->r, s, n) || tsync__dec_bad(d, what);
}

bool tsync__dec_value(tsync__dec *d, const char *what, tsync__val *v)
{
    return tsync__mpr_value(&d->r, v) || tsync__dec_bad(d, what);
}

bool tsync__dec_nil(tsync__dec *d, const char *what)
{
    return tsync__mpr_expect_nil(&d->r) || tsync__dec_bad(d, what);
}

bool tsync__dec_nomem(tsync__dec *d)
{
    snprintf(d->err, TSYNC__ERRLEN, "%sout of memory", d->prefix ? d->prefix : "");
    d->rc = TSYNC_ENOMEM;
    return false;
}

void *tsync__dec_alloc(tsync__dec *d, uint32_t n, size_t sz)
{
    void *p = tsync__arena_array(d->a, n, sz);
    if (n && !p) tsync__dec_nomem(d);
    return p;
}

/* Table definitions: [name:str, cols:[str...], npk:uint, counters:[col_idx...]], at least 5
 * bytes each; with policies allowed, a fifth field [[col_idx, policy]...] (never empty) on a
 * table that has column policies. */
#define TABLE_FIELDS 4
#define MIN_TABLE    5

bool tsync__dec_tables(tsync__dec *d, uint32_t *ntables, tsync__btable **tables, uint64_t **masks,
                       bool strict, bool policies)
{
    uint32_t n;
    char nm[48];
    *ntables = 0;
    if (!tsync__dec_list(d, "tables", &n, MIN_TABLE)) return false;
    *tables = tsync__dec_alloc(d, n, sizeof **tables);
    *masks = tsync__dec_alloc(d, n, sizeof **masks);
    if (n && (!*tables || !*masks)) return false;
    d->l1 = "table";
    for (uint32_t i = 0; i < n; i++) {
        d->i1 = i;
        tsync__btable *t = &(*tables)[i];
        uint64_t npk;
        uint32_t nc, nf;
        if (!tsync__dec_array(d, "definition", &nf)) return false;
        if (nf != TABLE_FIELDS && !(policies && nf == TABLE_FIELDS + 1))
            return tsync__dec_fail(d, "definition: expected an array of %s, got %" PRIu32,
                                   policies ? "4 or 5" : "4", nf);
        if (!tsync__dec_str(d, "name", &t->name, &t->name_len) ||
            !tsync__dec_array(d, "columns", &nc))
            return false;
        if (nc > TSYNC__MAX_COLS)
            return tsync__dec_fail(d, "%" PRIu32 " columns, more than %d", nc, TSYNC__MAX_COLS);
        t->ncols = nc;
        t->cols = tsync__dec_alloc(d, nc, sizeof *t->cols);
        t->col_len = tsync__dec_alloc(d, nc, sizeof *t->col_len);
        if (nc && (!t->cols || !t->col_len)) return false;
        for (uint32_t k = 0; k < nc; k++) {
            if (!tsync__dec_str(d, "column name", &t->cols[k], &t->col_len[k])) return false;
            for (uint32_t j = 0; strict && j < k; j++)
                if (t->col_len[j] == t->col_len[k] &&
                    tsync__name_cmp(t->cols[j], t->col_len[j], t->cols[k], t->col_len[k]) == 0)
                    return tsync__dec_fail(d, "column '%s' named twice",
                                           tsync__dec_printable(nm, t->cols[k], t->col_len[k]));
        }
        if (!tsync__dec_uint(d, "key column count", &npk)) return false;
        if (npk < 1 || npk > TSYNC__MAX_PK_COLS || npk > nc)
            return tsync__dec_fail(
                d, "key column count %" PRIu64 " invalid (1..%d, at most the %" PRIu32 " columns)",
                npk, TSYNC__MAX_PK_COLS, nc);
        t->npk = (uint32_t)npk;
        if (!tsync__dec_array(d, "counters", &t->ncounters)) return false;
        t->counters = tsync__dec_alloc(d, t->ncounters, sizeof *t->counters);
        if (t->ncounters && !t->counters) return false;
        for (uint32_t k = 0; k < t->ncounters; k++) {
            uint32_t col = 0;
            if (!tsync__dec_idx(d, "counter column index", &col, nc, "columns")) return false;
            if (col < t->npk)
                return tsync__dec_fail(d, "counter column %" PRIu32 " is a key column", col);
            if ((*masks)[i] >> col & 1)
                return tsync__dec_fail(d, "counter column %" PRIu32 " repeated", col);
            if (strict && k && col < t->counters[k - 1])
                return tsync__dec_fail(d, "counter columns out of order at %" PRIu32, col);
            (*masks)[i] |= (uint64_t)1 << col;
            t->counters[k] = col;
        }
        if (nf == TABLE_FIELDS) continue;
        if (!tsync__dec_list(d, "policies", &t->npolicies, 3)) return false;
        if (t->npolicies == 0) return tsync__dec_fail(d, "an empty list of policies");
        t->policy_cols = tsync__dec_alloc(d, t->npolicies, sizeof *t->policy_cols);
        t->policies = tsync__dec_alloc(d, t->npolicies, sizeof *t->policies);
        if (!t->policy_cols || !t->policies) return false;
        for (uint32_t k = 0; k < t->npolicies; k++) {
            uint32_t col = 0;
            uint64_t pol;
            if (!tsync__dec_tuple(d, "policy", 2) ||
                !tsync__dec_idx(d, "policy column index", &col, nc, "columns") ||
                !tsync__dec_uint(d, "policy", &pol))
                return false;
            if (pol < 1 || pol > 3) return tsync__dec_fail(d, "policy %" PRIu64 " unknown", pol);
            if (col < t->npk || ((*masks)[i] >> col & 1))
                return tsync__dec_fail(d, "policy column %" PRIu32 " is a key or counter column",
                                       col);
            if (k && col <= t->policy_cols[k - 1])
                return tsync__dec_fail(d, "policy columns out of order at %" PRIu32, col);
            t->policy_cols[k] = col;
            t->policies[k] = (uint8_t)pol;
        }
    }
    d->l1 = NULL;
    *ntables = n;
    return true;
}
