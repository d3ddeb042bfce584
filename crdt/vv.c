/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/vv.c — version vectors: for each origin site, the highest contiguous sequence number held
 * and the hash of that batch.
 *
 * A vector is an array sorted by site id, so look-ups are binary searches and two vectors can be
 * compared in one merge-like pass. Carrying the hash next to the seq is what lets two peers notice
 * a fork (same origin and seq, different batch) while they exchange vectors.
 */
#include <stdlib.h>
#include <string.h>

#include "crdt/crdt.h"

void tsync__vv_free(tsync__vv *v)
{
    if (!v) return;
    free(v->e);
    v->e = NULL;
    v->n = v->cap = 0;
}

/* Index of site, or of where it would be inserted; *found says which. */
static size_t vv_find(const tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES], bool *found)
{
    size_t lo = 0, hi = v->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = memcmp(v->e[mid].site, site, TSYNC__SITE_BYTES);
        if (c == 0) {
            *found = true;
            return mid;
        }
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    *found = false;
    return lo;
}

const tsync__vv_entry *tsync__vv_get(const tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES])
{
    bool found;
    size_t i = vv_find(v, site, &found);
    return found ? &v->e[i] : NULL;
}

uint64_t tsync__vv_seq(const tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES])
{
    const tsync__vv_entry *e = tsync__vv_get(v, site);
    return e ? e->seq : 0;
}

int tsync__vv_set(tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq,
                  const uint8_t *hash)
{
    bool found;
    size_t i = vv_find(v, site, &found);
    if (!found) {
        if (v->n == v->cap) {
            size_t cap = v->cap ? v->cap * 2 : 8;
            if (cap > SIZE_MAX / sizeof *v->e) return TSYNC_ENOMEM;
            tsync__vv_entry *e = realloc(v->e, cap * sizeof *e);
            if (!e) return TSYNC_ENOMEM;
            v->e = e;
            v->cap = cap;
        }
        memmove(&v->e[i + 1], &v->e[i], (v->n - i) * sizeof *v->e);
        v->n++;
        memcpy(v->e[i].site, site, TSYNC__SITE_BYTES);
    }
    v->e[i].seq = seq;
    if (hash)
        memcpy(v->e[i].hash, hash, TSYNC__HASH_BYTES);
    else
        memset(v->e[i].hash, 0, TSYNC__HASH_BYTES);
    return 0;
}

bool tsync__vv_covers(const tsync__vv *a, const tsync__vv *b)
{
    /* Both are sorted: walk them together instead of searching a for every site of b. */
    size_t i = 0;
    for (size_t j = 0; j < b->n; j++) {
        if (b->e[j].seq == 0) continue;
        while (i < a->n && memcmp(a->e[i].site, b->e[j].site, TSYNC__SITE_BYTES) < 0) i++;
        if (i == a->n || memcmp(a->e[i].site, b->e[j].site, TSYNC__SITE_BYTES) != 0) return false;
        if (a->e[i].seq < b->e[j].seq) return false;
    }
    return true;
}
