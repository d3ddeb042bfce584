/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/crdt.h — the merge rules of tillsync: hybrid logical clocks, LWW order, the row-existence
 * add-wins OR-set, PN-counters, max/min registers and version vectors.
 *
 * Each rule is a pure function over plain values: the wall clock is passed in, nothing does I/O.
 * Merges are pointwise maxima, which makes them commutative, associative and idempotent.
 *
 * THREAD SAFETY: every function is reentrant; objects are not shared between threads unless the
 * caller locks them.
 */
#ifndef TSYNC_CRDT_H
#define TSYNC_CRDT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

/* ---------------------------------------------------------------- HLC (hlc.c) */

/* The clock of the next local change: max(wall << 16, last + 1). Never goes back. */
tsync__hlc tsync__hlc_next(tsync__hlc last, uint64_t wall_ms);
/* The local clock after observing a remote clock: max(last, remote). */
tsync__hlc tsync__hlc_observe(tsync__hlc last, tsync__hlc remote);
/* True when remote is more than bound_ms ahead of the reference wall time (ms). Such a clock is
 * held, not adopted. */
bool tsync__hlc_too_far(tsync__hlc remote, uint64_t reference_ms, uint64_t bound_ms);

/* ---------------------------------------------------------------- LWW (lww.c) */

/* Orders two writes: higher clock wins, equal clocks: bytewise higher site id wins.
 * Returns <0, 0, >0 like memcmp (0 only for the same clock and site). */
int tsync__lww_cmp(tsync__hlc h1, const uint8_t s1[TSYNC__SITE_BYTES], tsync__hlc h2,
                   const uint8_t s2[TSYNC__SITE_BYTES]);

/* ---------------------------------------------------------------- OR-set (orset.c) */

/* One site's entry in a row's existence set. `site` is an index in a caller-defined site table. */
typedef struct {
    uint32_t site;
    tsync__hlc add; /* latest add (insert or update) by that site */
    tsync__hlc rmv; /* latest add of that site observed by some delete */
} tsync__exist;

/* The row exists iff some entry has add > rmv. */
bool tsync__orset_exists(const tsync__exist *e, size_t n);
/* Merges `site`'s (add, rmv) into the set by pointwise max. The array has room for n+1 entries;
 * returns the new count. */
size_t tsync__orset_merge(tsync__exist *e, size_t n, uint32_t site, tsync__hlc add, tsync__hlc rmv);

/* ---------------------------------------------------------------- PN-counter (pn.c) */

typedef struct {
    uint32_t site;
    uint64_t p, n; /* that site's total increments and decrements */
} tsync__pn;

/* Sum of P minus sum of N, wrapping like int64. */
int64_t tsync__pn_value(const tsync__pn *c, size_t n);
/* Merges site's (p, n) by pointwise max. Room for n+1 entries; returns the new count. */
size_t tsync__pn_merge(tsync__pn *c, size_t n, uint32_t site, uint64_t p, uint64_t nn);
/* Records a local delta by site into its P (delta > 0) or N (delta < 0). Room for n+1. */
size_t tsync__pn_add(tsync__pn *c, size_t n, uint32_t site, int64_t delta);

/* ---------------------------------------------------------------- max/min registers (reg.c) */

/* The merge policy of a column (tsync_tables.policies, docs/DATA_MODEL.md "Column policies"):
 * LWW (the default), a max or min register, or LWW whose concurrent writes a person reviews. */
enum {
    TSYNC__POLICY_LWW = 0,
    TSYNC__POLICY_MAX = 1,
    TSYNC__POLICY_MIN = 2,
    TSYNC__POLICY_REVIEW = 3
};

/* SQLite's order of values: NULL < numbers (INTEGER and REAL by value) < TEXT < BLOB, TEXT and
 * BLOB bytewise. <0, 0, >0 like memcmp; 0 also for 2 and 2.0. */
int tsync__reg_cmp(const tsync__val *a, const tsync__val *b);
/* >0 when a register of policy (TSYNC__POLICY_MAX or _MIN) takes a over b by value alone: the
 * larger (max) or smaller (min) value; NULL is no value and loses to any value. 0: a tie. */
int tsync__reg_better(int policy, const tsync__val *a, const tsync__val *b);
/* The register merge: >0 when write (a, ha, sa) wins over (b, hb, sb): by value
 * (tsync__reg_better), a tie by clock and site (tsync__lww_cmp). 0 only for the same clock and
 * site with tied values. */
int tsync__reg_pick(int policy, const tsync__val *a, tsync__hlc ha,
                    const uint8_t sa[TSYNC__SITE_BYTES], const tsync__val *b, tsync__hlc hb,
                    const uint8_t sb[TSYNC__SITE_BYTES]);

/* ---------------------------------------------------------------- version vectors (vv.c) */

typedef struct {
    tsync__vv_entry *e; /* sorted by site id */
    size_t n, cap;
} tsync__vv;

void tsync__vv_free(tsync__vv *v);
/* Entry for site, or NULL. */
const tsync__vv_entry *tsync__vv_get(const tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES]);
uint64_t tsync__vv_seq(const tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES]);
/* Sets the entry of site (inserting it). hash may be NULL for all zero. 0 or TSYNC_ENOMEM. */
int tsync__vv_set(tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq,
                  const uint8_t *hash);
/* True when a has every batch b has (a.seq >= b.seq for every site of b). */
bool tsync__vv_covers(const tsync__vv *a, const tsync__vv *b);

#endif
