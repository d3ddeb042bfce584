/* SPDX-License-Identifier: Apache-2.0 */
/*
 * crdt/hlc.c — hybrid logical clocks: the wall time in milliseconds shifted left 16 bits, plus a
 * counter in the low bits, so a clock follows real time when it can and still never goes back.
 *
 * Each rule is a pure function over plain values (the wall clock is passed in) so that the store,
 * the property tests and the reference model all use the very same code. The other rules live one
 * per file beside this one: lww.c, orset.c, pn.c, vv.c.
 */
#include "crdt/crdt.h"

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
