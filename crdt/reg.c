/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/reg.c — max and min registers: a column whose merged value is the largest (or smallest)
 * value ever written to it, whatever order the writes arrive in (docs/DATA_MODEL.md, "Column
 * policies").
 *
 * Design notes
 * - Values are ordered as SQLite orders them: NULL, then numbers (INTEGER and REAL compared by
 *   value, so 2 < 2.5 < 3), then TEXT, then BLOB, TEXT and BLOB bytewise (the BINARY collation,
 *   whatever collation the column declares). The capture triggers compare with the same order in
 *   SQL, so the till that writes and the tills that merge agree.
 * - NULL means "no value" for both registers: it never replaces a value, and any value replaces
 *   it. For max that is SQLite's order anyway; for min it keeps a register from sticking at NULL.
 * - Values equal in that order but not identical (2 and 2.0) tie; the write's clock then decides,
 *   and the register is a total order on (value, clock): its merge, the greater of the two, is
 *   commutative, associative and idempotent.
 */
#include <string.h>

#include "crdt/crdt.h"

static int rank(const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_NULL:
        return 0;
    case TSYNC__V_INT:
    case TSYNC__V_REAL:
        return 1;
    case TSYNC__V_TEXT:
        return 2;
    default:
        return 3;
    }
}

/* An integer against a double exactly, as SQLite does (no rounding of large integers). */
static int int_real_cmp(int64_t i, double r)
{
    if (r < -9223372036854775808.0) return 1;
    if (r >= 9223372036854775808.0) return -1;
    int64_t y = (int64_t)r; /* truncated toward zero: exact */
    if (i != y) return i < y ? -1 : 1;
    double f = r - (double)y;
    return f > 0 ? -1 : f < 0 ? 1 : 0;
}

int tsync__reg_cmp(const tsync__val *a, const tsync__val *b)
{
    int ra = rank(a), rb = rank(b);
    if (ra != rb) return ra < rb ? -1 : 1;
    switch (ra) {
    case 1:
        if (a->type == TSYNC__V_INT && b->type == TSYNC__V_INT)
            return a->i < b->i ? -1 : a->i > b->i;
        if (a->type == TSYNC__V_REAL && b->type == TSYNC__V_REAL)
            return a->r < b->r ? -1 : a->r > b->r;
        if (a->type == TSYNC__V_INT) return int_real_cmp(a->i, b->r);
        return -int_real_cmp(b->i, a->r);
    case 2:
    case 3: {
        uint32_t n = a->n < b->n ? a->n : b->n;
        int k = n ? memcmp(a->p, b->p, n) : 0;
        if (k) return k < 0 ? -1 : 1;
        return a->n < b->n ? -1 : a->n > b->n;
    }
    default:
        return 0;
    }
}

int tsync__reg_better(int policy, const tsync__val *a, const tsync__val *b)
{
    int an = a->type == TSYNC__V_NULL, bn = b->type == TSYNC__V_NULL;
    if (an || bn) return an == bn ? 0 : an ? -1 : 1;
    int c = tsync__reg_cmp(a, b);
    return policy == TSYNC__POLICY_MIN ? -c : c;
}

int tsync__reg_pick(int policy, const tsync__val *a, tsync__hlc ha,
                    const uint8_t sa[TSYNC__SITE_BYTES], const tsync__val *b, tsync__hlc hb,
                    const uint8_t sb[TSYNC__SITE_BYTES])
{
    int c = tsync__reg_better(policy, a, b);
    if (c == 0) c = tsync__lww_cmp(ha, sa, hb, sb);
    return c;
}
