/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/orset.c — the add-wins OR-set that decides whether a row exists: per site, the latest add
 * and the latest add of that site a delete observed. A delete removes only the adds it saw, so a
 * concurrent insert or update survives it.
 *
 * The merge is a pointwise maximum, which makes it commutative, associative and idempotent.
 */
#include "crdt/crdt.h"

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
