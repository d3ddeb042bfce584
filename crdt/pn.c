/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/pn.c — PN-counters: per site, the total of its increments (P) and of its decrements (N).
 * The value is the sum of P minus the sum of N; the merge is a pointwise maximum, so a counter
 * merged from batches in any order, any number of times, counts every sale once.
 */
#include "crdt/crdt.h"

int64_t tsync__pn_value(const tsync__pn *c, size_t n)
{
    /* Unsigned arithmetic wraps without undefined behaviour; the conversion back to int64 is
     * two's complement on every compiler we support. */
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) v += c[i].p - c[i].n;
    return (int64_t)v;
}

static size_t pn_find(tsync__pn *c, size_t n, uint32_t site)
{
    for (size_t i = 0; i < n; i++)
        if (c[i].site == site) return i;
    c[n].site = site;
    c[n].p = 0;
    c[n].n = 0;
    return n;
}

size_t tsync__pn_merge(tsync__pn *c, size_t n, uint32_t site, uint64_t p, uint64_t nn)
{
    size_t i = pn_find(c, n, site);
    if (p > c[i].p) c[i].p = p;
    if (nn > c[i].n) c[i].n = nn;
    return i == n ? n + 1 : n;
}

size_t tsync__pn_add(tsync__pn *c, size_t n, uint32_t site, int64_t delta)
{
    size_t i = pn_find(c, n, site);
    if (delta > 0)
        c[i].p += (uint64_t)delta;
    else if (delta < 0)
        c[i].n += (uint64_t)0 - (uint64_t)delta; /* also right for INT64_MIN */
    return i == n ? n + 1 : n;
}
