/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/lww.c — the last-writer-wins order of field writes: the clock first, then the site id, so
 * that every replica picks the same winner for the same pair of writes, whatever order they
 * arrive in.
 */
#include <string.h>

#include "crdt/crdt.h"

int tsync__lww_cmp(tsync__hlc h1, const uint8_t s1[TSYNC__SITE_BYTES], tsync__hlc h2,
                   const uint8_t s2[TSYNC__SITE_BYTES])
{
    if (h1 != h2) return h1 < h2 ? -1 : 1;
    /* Equal clocks can only come from different sites (a site's clocks strictly increase), and
     * every replica must pick the same winner: the bytewise higher site id. */
    int c = memcmp(s1, s2, TSYNC__SITE_BYTES);
    return (c > 0) - (c < 0);
}
