/*
 * crdt/hlc.c — the small merge rules of tillsync's data model: hybrid logical clocks, the LWW
 * order of field writes, the add-wins OR-set that decides whether a row exists, and PN-counters.
 *
 * Each rule is a pure function over plain values so that the store, the property tests and the
 * reference model all use the very same code. Merges are pointwise maxima, which is what makes
 * them commutative, associative and idempotent: apply batches in any order, any number of times.
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

/* ---------------------------------------------------------------- HLC */

tsync__hlc tsync__hlc_next(tsync__hlc last, uint64_t wall_ms)
{
    /* Saturate rather than wrap: a clock at the end of time (year 10889, or a corrupt value)
     * must not restart from 0 and so go back. */
    tsync__hlc after = last == UINT64_MAX ? last : last + 1;
    tsync__hlc wall = wall_ms > (UINT64_MAX >> 16) ? UINT64_MAX & ~(uint64_t)0xffff : wall_ms << 16;
    return wall > after ? wall : after;
}

tsync__hlc tsync__hlc_observe(tsync__hlc last, tsync__hlc remote)
{
    return remote > last ? remote : last;
}

bool tsync__hlc_too_far(tsync__hlc remote, uint64_t reference_ms, uint64_t bound_ms)
{
    uint64_t limit = reference_ms > UINT64_MAX - bound_ms ? UINT64_MAX : reference_ms + bound_ms;
    return tsync__hlc_ms(remote) > limit;
}

/* ---------------------------------------------------------------- LWW */

int tsync__lww_cmp(tsync__hlc h1, const uint8_t s1[TSYNC__SITE_BYTES], tsync__hlc h2,
                   const uint8_t s2[TSYNC__SITE_BYTES])
{
    if (h1 != h2) return h1 < h2 ? -1 : 1;
    /* Equal clocks can only come from different sites (a site's clocks strictly increase), and
     * every replica must pick the same winner: the bytewise higher site id. */
    int c = memcmp(s1, s2, TSYNC__SITE_BYTES);
    return (c > 0) - (c < 0);
}

/* ---------------------------------------------------------------- OR-set of row existence */

bool tsync__orset_exists(const tsync__exist *e, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (e[i].add > e[i].rmv) return true;
    return false;
}

size_t tsync__orset_merge(tsync__exist *e, size_t n, uint32_t site, tsync__hlc add, tsync__hlc rmv)
{
    for (size_t i = 0; i < n; i++) {
        if (e[i].site != site) continue;
        if (add > e[i].add) e[i].add = add;
        if (rmv > e[i].rmv) e[i].rmv = rmv;
        return n;
    }
    e[n].site = site;
    e[n].add = add;
    e[n].rmv = rmv;
    return n + 1;
}

/* ---------------------------------------------------------------- PN-counter */

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
