/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/mpk.c — the bounded, strict msgpack reader every decoder in tillsync uses on bytes that
 * came from outside (batches, bundles, certificates, wire messages, snapshots).
 *
 * msgpack-c's unpacker is fine for bytes we made, but on hostile bytes it allocates whatever a
 * container header declares before any element arrives, and it accepts any type where we expect
 * one. This reader instead walks the raw bytes in place: every read checks the bytes that are
 * left, a container may not declare more elements than there are bytes left (each element takes
 * at least one byte), and nothing is allocated at all. Strings and blobs are returned as pointers
 * into the buffer.
 *
 * On any failure the reader stops where the failing item starts (so a caller can say where and
 * what it found; a list too long for its room stops after its header) and r->ok becomes false for
 * good: every later read fails too, so a decoder may read a whole structure and test ok once. The
 * first failure is kept in r->fault, with the kind that was wanted and, where it helps a message,
 * the sizes involved: the decoders word messages from these and never read bytes themselves.
 *
 * A canonical reader insists on msgpack-c's smallest form of every int, length and count. The
 * structural checks come first (a count that cannot fit says so before its form is judged), and a
 * fixed-length bin is judged by its length before its form.
 */
#include <string.h>

#include <msgpack.h>

#include "codec/codec.h"

/* Records the first failure and stops the reader for good. */
static bool fail(tsync__mpr *r, tsync__mpr_fault why)
{
    if (r->ok) r->fault = (uint8_t)why;
    r->ok = false;
    return false;
}

/* Every read starts here: a failed reader stays failed, and the kind wanted is remembered for a
 * message. False when the read cannot start. */
static bool begin(tsync__mpr *r, const char *want)
{
    if (!r->ok) return false;
    r->expected = want;
    if (r->p >= r->end) return fail(r, TSYNC__MPR_END);
    return true;
}

static size_t left(const tsync__mpr *r)
{
    return (size_t)(r->end - r->p);
}

/* Big-endian unsigned integer of w bytes at p. */
static uint64_t be(const uint8_t *p, unsigned w)
{
    uint64_t v = 0;
    for (unsigned i = 0; i < w; i++) v = (v << 8) | p[i];
    return v;
}

/* Reads a header: a tag byte followed by w bytes of big-endian length. Succeeds only when the
 * whole header is present; *hdr gets its size. */
static bool header(const tsync__mpr *r, unsigned w, uint64_t *len, size_t *hdr)
{
    if (left(r) < 1 + (size_t)w) return false;
    *len = be(r->p + 1, w);
    *hdr = 1 + (size_t)w;
    return true;
}

/* Ends a read of an item that took `took` bytes: in a canonical reader it must be `smallest`
 * bytes, or the reader stays at the item and fails. */
static bool took(tsync__mpr *r, size_t took, size_t smallest)
{
    if (r->canonical && took != smallest) {
        r->got = took;
        r->want = smallest;
        return fail(r, TSYNC__MPR_NONCANON);
    }
    r->p += took;
    return true;
}

/* Shared by array and map: per_elem is the minimum number of bytes one counted entry takes. */
static bool container(tsync__mpr *r, uint32_t *n, uint8_t fix_lo, uint8_t t16, uint8_t t32,
                      unsigned per_elem, const char *want)
{
    if (!begin(r, want)) return false;
    uint8_t b = r->p[0];
    uint64_t cnt;
    size_t hdr;
    if (b >= fix_lo && b <= fix_lo + 0x0f) {
        cnt = b & 0x0f;
        hdr = 1;
    } else if (b == t16) {
        if (!header(r, 2, &cnt, &hdr)) return fail(r, TSYNC__MPR_SHORT);
    } else if (b == t32) {
        if (!header(r, 4, &cnt, &hdr)) return fail(r, TSYNC__MPR_SHORT);
    } else {
        return fail(r, TSYNC__MPR_TYPE);
    }
    /* The defence against "5 bytes ask for 8.6 GB": a count is believable only if the bytes to
     * hold that many elements are actually here. */
    if (cnt * per_elem > left(r) - hdr) return fail(r, TSYNC__MPR_SHORT);
    if (!took(r, hdr, cnt < 16 ? 1 : cnt <= UINT16_MAX ? 3 : 5)) return false;
    *n = (uint32_t)cnt;
    return true;
}

bool tsync__mpr_array(tsync__mpr *r, uint32_t *n)
{
    return container(r, n, 0x90, 0xdc, 0xdd, 1, "array");
}

bool tsync__mpr_map(tsync__mpr *r, uint32_t *n)
{
    return container(r, n, 0x80, 0xde, 0xdf, 2, "map");
}

bool tsync__mpr_fixarray(tsync__mpr *r, uint32_t *n)
{
    if (!r->ok || left(r) < 1 || r->p[0] < 0x90 || r->p[0] > 0x9f) return false;
    *n = r->p[0] & 0x0f;
    r->p++;
    return true;
}

bool tsync__mpr_room(tsync__mpr *r, uint32_t n, size_t min)
{
    if (!r->ok) return false;
    if ((uint64_t)n * min > left(r)) {
        r->got = n;
        r->want = left(r);
        return fail(r, TSYNC__MPR_ROOM);
    }
    return true;
}

bool tsync__mpr_list(tsync__mpr *r, uint32_t *n, size_t min)
{
    return tsync__mpr_array(r, n) && tsync__mpr_room(r, *n, min);
}

/* A uint of any width, not consumed: *size gets its size. */
static bool peek_uint(tsync__mpr *r, uint64_t *v, size_t *size)
{
    uint8_t b = r->p[0];
    if (b <= 0x7f) {
        *v = b;
        *size = 1;
        return true;
    }
    /* uint8/16/32/64 are 0xcc..0xcf; signed formats are not uints, even when non-negative. */
    if (b < 0xcc || b > 0xcf) return fail(r, TSYNC__MPR_TYPE);
    unsigned w = 1u << (b - 0xcc);
    if (left(r) < 1 + (size_t)w) return fail(r, TSYNC__MPR_SHORT);
    *v = be(r->p + 1, w);
    *size = 1 + w;
    return true;
}

bool tsync__mpr_uint(tsync__mpr *r, uint64_t *v)
{
    size_t size;
    uint64_t u;
    if (!begin(r, "uint") || !peek_uint(r, &u, &size) || !took(r, size, tsync__mp_uint_size(u)))
        return false;
    *v = u;
    return true;
}

/* An int of any width, not consumed (shared by int and value, which name different kinds). */
static bool peek_int(tsync__mpr *r, int64_t *v, size_t *size)
{
    uint8_t b = r->p[0];
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) {
        uint64_t u;
        if (!peek_uint(r, &u, size)) return false;
        if (u > (uint64_t)INT64_MAX) return fail(r, TSYNC__MPR_RANGE);
        *v = (int64_t)u;
        return true;
    }
    if (b >= 0xe0) { /* negative fixint */
        *v = (int64_t)(int8_t)b;
        *size = 1;
        return true;
    }
    if (b < 0xd0 || b > 0xd3) return fail(r, TSYNC__MPR_TYPE); /* int8/16/32/64 */
    unsigned w = 1u << (b - 0xd0);
    if (left(r) < 1 + (size_t)w) return fail(r, TSYNC__MPR_SHORT);
    uint64_t u = be(r->p + 1, w);
    /* Sign-extend from w bytes without shifting a signed value. */
    if (w < 8 && (u >> (8 * w - 1)) != 0) u |= ~(uint64_t)0 << (8 * w);
    *v = (int64_t)u; /* two's complement conversion, defined by every compiler we use */
    *size = 1 + w;
    return true;
}

/* Consumes an int peeked at: the smallest form of a non-negative value is a uint, so a signed
 * form of one is never canonical (2^32 takes 9 bytes either way). */
static bool took_int(tsync__mpr *r, int64_t v, size_t size)
{
    bool signed_form = r->p[0] >= 0xd0 && r->p[0] <= 0xd3;
    size_t smallest = tsync__mp_int_size(v);
    if (r->canonical && v >= 0 && signed_form) {
        r->got = size;
        r->want = smallest;
        return fail(r, TSYNC__MPR_NONCANON);
    }
    return took(r, size, smallest);
}

bool tsync__mpr_int(tsync__mpr *r, int64_t *v)
{
    size_t size;
    int64_t i;
    if (!begin(r, "int") || !peek_int(r, &i, &size) || !took_int(r, i, size)) return false;
    *v = i;
    return true;
}

bool tsync__mpr_bool(tsync__mpr *r, bool *v)
{
    if (!begin(r, "bool")) return false;
    if (r->p[0] != 0xc2 && r->p[0] != 0xc3) return fail(r, TSYNC__MPR_TYPE);
    *v = r->p[0] == 0xc3;
    r->p++;
    return true;
}

bool tsync__mpr_nil(tsync__mpr *r)
{
    /* A probe: not finding a nil is no error. */
    if (!r->ok || left(r) < 1 || r->p[0] != 0xc0) return false;
    r->p++;
    return true;
}

bool tsync__mpr_expect_nil(tsync__mpr *r)
{
    if (!begin(r, "nil")) return false;
    if (r->p[0] != 0xc0) return fail(r, TSYNC__MPR_TYPE);
    r->p++;
    return true;
}

/* str and bin share this: a header then len bytes in place, not consumed: *size gets the whole
 * item's size. */
static bool peek_bytes(tsync__mpr *r, const uint8_t **p, uint32_t *n, bool str, size_t *size)
{
    uint8_t b = r->p[0];
    uint64_t len;
    size_t hdr;
    if (str && b >= 0xa0 && b <= 0xbf) {
        len = b & 0x1f;
        hdr = 1;
    } else {
        /* str8/16/32 are 0xd9..0xdb, bin8/16/32 are 0xc4..0xc6. */
        uint8_t first = str ? 0xd9 : 0xc4;
        if (b < first || b > first + 2) return fail(r, TSYNC__MPR_TYPE);
        unsigned w = 1u << (b - first);
        if (!header(r, w, &len, &hdr)) return fail(r, TSYNC__MPR_SHORT);
    }
    if (len > left(r) - hdr) return fail(r, TSYNC__MPR_SHORT);
    *p = r->p + hdr;
    *n = (uint32_t)len;
    *size = hdr + len;
    return true;
}

static bool bytes(tsync__mpr *r, const uint8_t **p, uint32_t *n, bool str)
{
    size_t size;
    const uint8_t *q;
    uint32_t len;
    if (!begin(r, str ? "str" : "bin") || !peek_bytes(r, &q, &len, str, &size) ||
        !took(r, size, str ? tsync__mp_str_size(len) : tsync__mp_bin_size(len)))
        return false;
    *p = q;
    *n = len;
    return true;
}

bool tsync__mpr_str(tsync__mpr *r, const char **s, uint32_t *n)
{
    const uint8_t *p;
    if (!bytes(r, &p, n, true)) return false;
    *s = (const char *)p;
    return true;
}

bool tsync__mpr_bin(tsync__mpr *r, const uint8_t **p, uint32_t *n)
{
    return bytes(r, p, n, false);
}

bool tsync__mpr_binfix(tsync__mpr *r, uint8_t *out, uint32_t n)
{
    const uint8_t *p;
    uint32_t got;
    size_t size;
    if (!begin(r, "bin") || !peek_bytes(r, &p, &got, false, &size)) return false;
    if (got != n) {
        r->got = got;
        r->want = n;
        return fail(r, TSYNC__MPR_LENGTH);
    }
    if (!took(r, size, tsync__mp_bin_size(n))) return false;
    if (n) memcpy(out, p, n);
    return true;
}

bool tsync__mpr_value(tsync__mpr *r, tsync__val *v)
{
    if (!begin(r, "value")) return false;
    uint8_t b = r->p[0];
    memset(v, 0, sizeof *v);
    if (b == 0xc0) {
        r->p++;
        v->type = TSYNC__V_NULL;
        return true;
    }
    if (b <= 0x7f || b >= 0xe0 || (b >= 0xcc && b <= 0xcf) || (b >= 0xd0 && b <= 0xd3)) {
        size_t size;
        if (!peek_int(r, &v->i, &size) || !took_int(r, v->i, size)) return false;
        v->type = TSYNC__V_INT;
        return true;
    }
    if (b == 0xcb) {
        if (left(r) < 9) return fail(r, TSYNC__MPR_SHORT);
        uint64_t u = be(r->p + 1, 8);
        memcpy(&v->r, &u, sizeof v->r); /* keeps every bit, NaN payloads included */
        v->type = TSYNC__V_REAL;
        r->p += 9;
        return true;
    }
    bool str = (b >= 0xa0 && b <= 0xbf) || (b >= 0xd9 && b <= 0xdb);
    if (str || (b >= 0xc4 && b <= 0xc6)) {
        const uint8_t *p;
        size_t size;
        if (!peek_bytes(r, &p, &v->n, str, &size) ||
            !took(r, size, str ? tsync__mp_str_size(v->n) : tsync__mp_bin_size(v->n)))
            return false;
        v->type = str ? TSYNC__V_TEXT : TSYNC__V_BLOB;
        v->p = p;
        return true;
    }
    /* float32 (no SQLite type is stored that way by us), bool, containers, ext, 0xc1. */
    return fail(r, TSYNC__MPR_TYPE);
}

const char *tsync__mpr_found(const tsync__mpr *r)
{
    return r->p < r->end ? tsync__mp_kind(r->p[0]) : NULL;
}

size_t tsync__mp_uint_size(uint64_t v)
{
    return v < 0x80 ? 1 : v <= UINT8_MAX ? 2 : v <= UINT16_MAX ? 3 : v <= UINT32_MAX ? 5 : 9;
}

size_t tsync__mp_int_size(int64_t v)
{
    if (v >= 0) return tsync__mp_uint_size((uint64_t)v);
    return v >= -32 ? 1 : v >= INT8_MIN ? 2 : v >= INT16_MIN ? 3 : v >= INT32_MIN ? 5 : 9;
}

size_t tsync__mp_str_size(size_t n)
{
    return (n < 32 ? 1 : n <= UINT8_MAX ? 2 : n <= UINT16_MAX ? 3 : 5) + n;
}

size_t tsync__mp_bin_size(size_t n)
{
    return (n <= UINT8_MAX ? 2 : n <= UINT16_MAX ? 3 : 5) + n;
}

size_t tsync__mp_array_size(size_t n)
{
    return n < 16 ? 1 : n <= UINT16_MAX ? 3 : 5;
}

size_t tsync__mp_map_size(size_t n)
{
    return tsync__mp_array_size(n); /* the same widths: fixmap, map16, map32 */
}

const char *tsync__mp_kind(uint8_t b)
{
    if (b <= 0x7f || (b >= 0xcc && b <= 0xcf)) return "uint";
    if (b >= 0xe0 || (b >= 0xd0 && b <= 0xd3)) return "int";
    if (b <= 0x8f || b == 0xde || b == 0xdf) return "map";
    if (b <= 0x9f || b == 0xdc || b == 0xdd) return "array";
    if (b <= 0xbf || (b >= 0xd9 && b <= 0xdb)) return "str";
    switch (b) {
    case 0xc0:
        return "nil";
    case 0xc2:
    case 0xc3:
        return "bool";
    case 0xc4:
    case 0xc5:
    case 0xc6:
        return "bin";
    case 0xca:
        return "float32";
    case 0xcb:
        return "float64";
    case 0xc1:
        return "reserved byte 0xc1";
    default:
        return "ext";
    }
}

/* ---------------------------------------------------------------- writing */

int tsync__mp_pack_bin(msgpack_packer *pk, const void *p, size_t n)
{
    int rc = msgpack_pack_bin(pk, n);
    return rc == 0 && n ? msgpack_pack_bin_body(pk, p, n) : rc;
}

int tsync__mp_pack_str(msgpack_packer *pk, const char *p, size_t n)
{
    int rc = msgpack_pack_str(pk, n);
    return rc == 0 && n ? msgpack_pack_str_body(pk, p, n) : rc;
}

int tsync__mp_pack_val(msgpack_packer *pk, const tsync__val *v)
{
    switch (v->type) {
    case TSYNC__V_INT:
        return msgpack_pack_int64(pk, v->i);
    case TSYNC__V_REAL:
        return msgpack_pack_double(pk, v->r);
    case TSYNC__V_TEXT:
        return tsync__mp_pack_str(pk, v->p, v->n);
    case TSYNC__V_BLOB:
        return tsync__mp_pack_bin(pk, v->p, v->n);
    default:
        return msgpack_pack_nil(pk);
    }
}

int tsync__mp_pack_tables(msgpack_packer *pk, const tsync__btable *tables, uint32_t n)
{
    int rc = msgpack_pack_array(pk, n);
    for (uint32_t i = 0; rc == 0 && i < n; i++) {
        const tsync__btable *t = &tables[i];
        /* [name, cols, npk, counters (, policies)] */
        rc = msgpack_pack_array(pk, t->npolicies ? 5 : 4);
        if (rc == 0) rc = tsync__mp_pack_str(pk, t->name, t->name_len);
        if (rc == 0) rc = msgpack_pack_array(pk, t->ncols);
        for (uint32_t k = 0; rc == 0 && k < t->ncols; k++)
            rc = tsync__mp_pack_str(pk, t->cols[k], t->col_len[k]);
        if (rc == 0) rc = msgpack_pack_uint32(pk, t->npk);
        if (rc == 0) rc = msgpack_pack_array(pk, t->ncounters);
        for (uint32_t k = 0; rc == 0 && k < t->ncounters; k++)
            rc = msgpack_pack_uint32(pk, t->counters[k]);
        if (rc == 0 && t->npolicies) rc = msgpack_pack_array(pk, t->npolicies);
        for (uint32_t k = 0; rc == 0 && k < t->npolicies; k++) {
            rc = msgpack_pack_array(pk, 2);
            if (rc == 0) rc = msgpack_pack_uint32(pk, t->policy_cols[k]);
            if (rc == 0) rc = msgpack_pack_uint32(pk, t->policies[k]);
        }
    }
    return rc;
}
