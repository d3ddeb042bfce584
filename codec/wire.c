/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/wire.c — the encoder and the strict decoder of the messages tillsync nodes exchange
 * (codec/wire.h; the byte-level specification with test vectors is docs/WIRE.md).
 * Over 800 lines on purpose: the message table and check() serve the encoder and the decoder
 * alike, and splitting them apart would put one rule in two files.
 *
 * A frame comes from a peer we may not trust yet: before its certificate is checked, anyone who
 * can reach the port can send one. So the decoder believes nothing a frame declares until the
 * bytes are there, accepts exactly one encoding of each message, and says in one line which field
 * of which message was wrong, so a refused peer can be diagnosed from the log.
 *
 * Design notes
 * - Order of checks: frame length against the largest limit; array header and type; frame length
 *   against the type's limit; for HELLO the protocol version (before the item count, so a future
 *   version with more fields is told "version", not "malformed"); the item count; each field's
 *   msgpack type and canonical form, in order; trailing bytes; then the invariants.
 * - The invariants (sizes, sorted vectors, site ids, clock ranges, text) live in one function,
 *   check(), which the encoder runs too. Rules that only concern the bytes (types, canonical forms,
 *   values too large for the C field) are the decoder's alone.
 * - Canonical means what msgpack-c's packer writes: the smallest int, the smallest str/bin/array
 *   header (msgpack-c has no fixbin, and uses str8 for 32..255 bytes). After each read the
 *   reader (codec/mpk.c, canonical) compares the bytes consumed with that size, as for batch
 * bodies.
 * - The encoder computes the exact size first (tsync__wire_size), refuses a message over its limit
 *   before packing anything, and packs into a buffer of exactly that size.
 */
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <msgpack.h>

#include "codec/wire.h"

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#else
#define PRINTF_LIKE(f, a)
#endif

/* ---------------------------------------------------------------- the message table */

typedef struct {
    const char *name;
    uint32_t items; /* length of the message array, the type included */
    size_t limit;
    const char *const *fields; /* names of items 0..items-1, for messages */
} mtype;

static const char *const f_hello[] = {"type",        "version", "shop id", "schema version",
                                      "certificate", "clock",   "vector"};
static const char *const f_batches[] = {"type",      "site",          "public key", "incarnation",
                                        "first seq", "previous hash", "bodies",     "signature"};
static const char *const f_certs[] = {"type", "certificates"};
static const char *const f_fork[] = {"type", "proof"};
static const char *const f_ack[] = {"type", "vector"};
static const char *const f_sbegin[] = {"type", "snapshot id", "table count", "vector"};
static const char *const f_schunk[] = {"type", "snapshot id", "seq", "rows"};
static const char *const f_send[] = {"type", "snapshot id", "chunk count", "hash"};
static const char *const f_ping[] = {"type", "ms"};
static const char *const f_pong[] = {"type", "echo ms", "clock"};
static const char *const f_error[] = {"type", "code", "message"};
static const char *const f_schema[] = {"type", "site", "incarnation", "definitions"};

#define ITEMS(a) (uint32_t)(sizeof a / sizeof a[0])

static const mtype types[TSYNC__WIRE_TYPE_MAX + 1] = {
    [TSYNC__WIRE_HELLO] = {"HELLO", ITEMS(f_hello), TSYNC__WIRE_MAX_HELLO, f_hello},
    [TSYNC__WIRE_BATCHES] = {"BATCHES", ITEMS(f_batches), TSYNC__WIRE_MAX_BATCHES, f_batches},
    [TSYNC__WIRE_CERTS] = {"CERTS", ITEMS(f_certs), TSYNC__WIRE_MAX_CERTS, f_certs},
    [TSYNC__WIRE_FORK_PROOF] = {"FORK_PROOF", ITEMS(f_fork), TSYNC__WIRE_MAX_FORK_PROOF, f_fork},
    [TSYNC__WIRE_ACK] = {"ACK", ITEMS(f_ack), TSYNC__WIRE_MAX_ACK, f_ack},
    [TSYNC__WIRE_SNAPSHOT_BEGIN] = {"SNAPSHOT_BEGIN", ITEMS(f_sbegin),
                                    TSYNC__WIRE_MAX_SNAPSHOT_BEGIN, f_sbegin},
    [TSYNC__WIRE_SNAPSHOT_CHUNK] = {"SNAPSHOT_CHUNK", ITEMS(f_schunk),
                                    TSYNC__WIRE_MAX_SNAPSHOT_CHUNK, f_schunk},
    [TSYNC__WIRE_SNAPSHOT_END] = {"SNAPSHOT_END", ITEMS(f_send), TSYNC__WIRE_MAX_SNAPSHOT_END,
                                  f_send},
    [TSYNC__WIRE_PING] = {"PING", ITEMS(f_ping), TSYNC__WIRE_MAX_PING, f_ping},
    [TSYNC__WIRE_PONG] = {"PONG", ITEMS(f_pong), TSYNC__WIRE_MAX_PONG, f_pong},
    [TSYNC__WIRE_ERROR] = {"ERROR", ITEMS(f_error), TSYNC__WIRE_MAX_ERROR, f_error},
    [TSYNC__WIRE_SCHEMA] = {"SCHEMA", ITEMS(f_schema), TSYNC__WIRE_MAX_SCHEMA, f_schema},
};

static const mtype *mtype_of(uint64_t type)
{
    if (type < TSYNC__WIRE_TYPE_MIN || type > TSYNC__WIRE_TYPE_MAX) return NULL;
    return &types[type];
}

const char *tsync__wire_type_name(int type)
{
    const mtype *t = type < 0 ? NULL : mtype_of((uint64_t)type);
    return t ? t->name : NULL;
}

size_t tsync__wire_limit(int type)
{
    const mtype *t = type < 0 ? NULL : mtype_of((uint64_t)type);
    return t ? t->limit : 0;
}

/* ---------------------------------------------------------------- messages */

/* Where a rule broke, for the one-line message: "HELLO: field 6 (vector) entry 3: seq". */
typedef struct {
    char *err;
    int code;          /* what a broken rule returns: ECORRUPT decoding, EINVAL encoding */
    int rc;            /* what this call returns */
    const char *tname; /* "HELLO", ...; "message" until the type is known */
    int field;         /* item index in the message array; -1: the message as a whole */
    const char *fname;
    int64_t entry;   /* index in the field's array; -1: none */
    const char *sub; /* part of the entry ("seq"); NULL: none */
} ctx;

static void at(ctx *c, const mtype *t, int field)
{
    c->field = field;
    c->fname = field >= 0 ? t->fields[field] : NULL;
    c->entry = -1;
    c->sub = NULL;
}

static size_t put(char *buf, size_t k, const char *fmt, ...) PRINTF_LIKE(3, 4);
static size_t put(char *buf, size_t k, const char *fmt, ...)
{
    if (k >= TSYNC__ERRLEN - 1) return k;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf + k, TSYNC__ERRLEN - k, fmt, ap);
    va_end(ap);
    if (n < 0) return k;
    return k + (size_t)n >= TSYNC__ERRLEN ? TSYNC__ERRLEN - 1 : k + (size_t)n;
}

/* Writes "<where> <what>" into c->err; always returns false so callers can `return fail(...)`. */
static bool fail(ctx *c, const char *fmt, ...) PRINTF_LIKE(2, 3);
static bool fail(ctx *c, const char *fmt, ...)
{
    size_t k = put(c->err, 0, "%s", c->tname);
    if (c->field >= 0) k = put(c->err, k, ": field %d (%s)", c->field, c->fname);
    if (c->entry >= 0) k = put(c->err, k, " entry %" PRId64, c->entry);
    if (c->sub) k = put(c->err, k, ": %s", c->sub);
    k = put(c->err, k, " ");
    if (k < TSYNC__ERRLEN - 1) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(c->err + k, TSYNC__ERRLEN - k, fmt, ap);
        va_end(ap);
    }
    tsync__utf8_trim(c->err); /* a cut never leaves half a character */
    c->rc = c->code;
    return false;
}

/* ---------------------------------------------------------------- invariants (both directions) */

static const uint8_t zero_hash[TSYNC__HASH_BYTES];

/* Offset of the first byte of s that is not valid UTF-8 or is a control character (C0, DEL, C1),
 * or n. Control characters are refused so a peer's message cannot break a log line or send
 * escape sequences to a terminal. */
static size_t text_bad_at(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t b = s[i];
        if (b < 0x80) {
            if (b < 0x20 || b == 0x7f) return i;
            i++;
            continue;
        }
        size_t need;
        uint8_t lo = 0x80, hi = 0xbf; /* allowed range of the first continuation byte */
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
            if (b == 0xc2) lo = 0xa0; /* c2 80..c2 9f are U+0080..U+009F, the C1 controls */
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            if (b == 0xe0) lo = 0xa0; /* overlong */
            if (b == 0xed) hi = 0x9f; /* UTF-16 surrogates */
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            if (b == 0xf0) lo = 0x90; /* overlong */
            if (b == 0xf4) hi = 0x8f; /* above U+10FFFF */
        } else {
            return i; /* a continuation byte, an overlong lead (c0, c1) or f5..ff */
        }
        if (n - i <= need) return i;
        if (s[i + 1] < lo || s[i + 1] > hi) return i;
        for (size_t k = 2; k <= need; k++)
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) return i;
        i += need + 1;
    }
    return n;
}

static bool check_vv(ctx *c, const tsync__wire_vv *vv)
{
    if (vv->n > TSYNC__WIRE_VV_MAX)
        return fail(c, "has %zu entries, more than %u", vv->n, TSYNC__WIRE_VV_MAX);
    if (vv->n && !vv->e) return fail(c, "has %zu entries but no array", vv->n);
    for (size_t i = 0; i < vv->n; i++) {
        c->entry = (int64_t)i;
        if (i > 0 && memcmp(vv->e[i - 1].site, vv->e[i].site, TSYNC__SITE_BYTES) >= 0)
            return fail(c, "does not sort after entry %zu (sites must be strictly ascending)",
                        i - 1);
        if (vv->e[i].seq == 0) {
            c->sub = "seq";
            return fail(c, "is 0 (an origin of which nothing is held is left out)");
        }
    }
    c->entry = -1;
    return true;
}

/* A list of 1..max_n opaque blobs of 1..max bytes each. */
static bool check_blobs(ctx *c, uint32_t n, const uint8_t *const *p, const size_t *len,
                        uint32_t max_n, size_t max)
{
    if (n == 0) return fail(c, "is empty");
    if (n > max_n) return fail(c, "has %" PRIu32 " entries, more than %" PRIu32, n, max_n);
    if (!p || !len) return fail(c, "has %" PRIu32 " entries but no array", n);
    for (uint32_t i = 0; i < n; i++) {
        c->entry = i;
        if (len[i] == 0) return fail(c, "is empty");
        if (len[i] > max) return fail(c, "has %zu bytes, more than %zu", len[i], max);
        if (!p[i]) return fail(c, "has %zu bytes but no pointer", len[i]);
    }
    c->entry = -1;
    return true;
}

static bool check_bytes(ctx *c, const void *p, size_t len)
{
    if (len == 0) return fail(c, "is empty");
    if (!p) return fail(c, "has %zu bytes but no pointer", len);
    return true;
}

static bool check_clock(ctx *c, uint64_t ms)
{
    if (ms >= TSYNC__WIRE_CLOCK_END)
        return fail(c, "is %" PRIu64 " ms, not below 2^48 (the HLC's millisecond range)", ms);
    return true;
}

static bool check_hello(ctx *c, const mtype *t, const tsync__wire_hello *h)
{
    at(c, t, 1);
    if (h->version != 0 && h->version != TSYNC_WIRE_VERSION)
        return fail(c, "is %" PRIu32 ", this node speaks version %u", h->version,
                    TSYNC_WIRE_VERSION);
    /* A database is enrolled exactly when it has a shop id and its certificate: one without the
     * other is a sender bug, and refusing it keeps the trust code from guessing. */
    at(c, t, 4);
    if (h->cert && !h->has_shop) return fail(c, "is present but the shop id is nil");
    if (!h->cert && h->has_shop)
        return fail(c, "is nil but a shop id is given (an enrolled node has a certificate)");
    if (h->cert && h->cert_len == 0) return fail(c, "is empty (nil means no certificate)");
    if (h->cert_len > TSYNC__WIRE_CERT_MAX)
        return fail(c, "has %zu bytes, more than %u", h->cert_len, TSYNC__WIRE_CERT_MAX);
    at(c, t, 5);
    if (!check_clock(c, h->clock_ms)) return false;
    at(c, t, 6);
    return check_vv(c, &h->vv);
}

static bool check_batches(ctx *c, const mtype *t, const tsync__wire_batches *b)
{
    uint8_t id[TSYNC__SITE_BYTES];
    at(c, t, 1);
    tsync__site_id(b->pk, b->inc, id);
    if (memcmp(id, b->site, TSYNC__SITE_BYTES) != 0)
        return fail(c, "is not BLAKE2b-128(public key || incarnation)");
    at(c, t, 4);
    if (b->first_seq == 0) return fail(c, "is 0");
    at(c, t, 5);
    if (b->first_seq == 1 && memcmp(b->prev, zero_hash, TSYNC__HASH_BYTES) != 0)
        return fail(c, "is not zero but the run starts at seq 1");
    at(c, t, 6);
    if (b->nbodies && b->first_seq - 1 > UINT64_MAX - b->nbodies)
        return fail(c, "has %" PRIu32 " bodies from seq %" PRIu64 ": seq would pass 2^64-1",
                    b->nbodies, b->first_seq);
    return check_blobs(c, b->nbodies, b->body, b->body_len, TSYNC__WIRE_BODIES_MAX,
                       TSYNC__BATCH_MAX_BYTES);
}

static bool check_error(ctx *c, const mtype *t, const tsync__wire_error *e)
{
    at(c, t, 1);
    if (e->code == 0) return fail(c, "is 0");
    at(c, t, 2);
    if (e->len > TSYNC__WIRE_TEXT_MAX)
        return fail(c, "has %zu bytes, more than %u", e->len, TSYNC__WIRE_TEXT_MAX);
    if (e->len && !e->text) return fail(c, "has %zu bytes but no pointer", e->len);
    size_t bad = e->len ? text_bad_at((const uint8_t *)e->text, e->len) : 0;
    if (e->len && bad < e->len)
        return fail(c, "has a control character or invalid UTF-8 at byte %zu", bad);
    return true;
}

/* Every rule about values, for both directions. c->tname is already set. */
static bool check(ctx *c, const tsync__msg *m)
{
    const mtype *t = mtype_of((uint64_t)m->type);
    switch (m->type) {
    case TSYNC__WIRE_HELLO:
        return check_hello(c, t, &m->hello);
    case TSYNC__WIRE_BATCHES:
        return check_batches(c, t, &m->batches);
    case TSYNC__WIRE_CERTS:
        at(c, t, 1);
        return check_blobs(c, m->certs.n, m->certs.blob, m->certs.len, TSYNC__WIRE_CERTS_MAX,
                           TSYNC__WIRE_CERT_MAX);
    case TSYNC__WIRE_FORK_PROOF:
        at(c, t, 1);
        return check_bytes(c, m->fork_proof.proof, m->fork_proof.len);
    case TSYNC__WIRE_ACK:
        at(c, t, 1);
        return check_vv(c, &m->ack.vv);
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
        at(c, t, 3);
        return check_vv(c, &m->snapshot_begin.vv);
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
        at(c, t, 3);
        return check_bytes(c, m->snapshot_chunk.rows, m->snapshot_chunk.len);
    case TSYNC__WIRE_PONG:
        at(c, t, 2);
        return check_clock(c, m->pong.clock_ms);
    case TSYNC__WIRE_ERROR:
        return check_error(c, t, &m->error);
    case TSYNC__WIRE_SCHEMA:
        at(c, t, 3);
        if (m->schema.len > TSYNC__WIRE_SCHEMA_MAX)
            return fail(c, "has %zu bytes, more than %u", m->schema.len, TSYNC__WIRE_SCHEMA_MAX);
        return check_bytes(c, m->schema.defs, m->schema.len);
    case TSYNC__WIRE_SNAPSHOT_END:
    case TSYNC__WIRE_PING:
        return true;
    }
    return fail(c, "has unknown type %d", (int)m->type);
}

/* [site:bin16, seq:uint, hash:bin32] */
#define VV_ENTRY_MIN (1 + 2 + TSYNC__SITE_BYTES + 1 + 2 + TSYNC__HASH_BYTES)

static size_t vv_size(const tsync__wire_vv *vv)
{
    size_t s = tsync__mp_array_size(vv->n);
    for (size_t i = 0; i < vv->n; i++) s += VV_ENTRY_MIN - 1 + tsync__mp_uint_size(vv->e[i].seq);
    return s;
}

static size_t blobs_size(uint32_t n, const size_t *len)
{
    size_t s = tsync__mp_array_size(n);
    for (uint32_t i = 0; i < n; i++) s += tsync__mp_bin_size(len[i]);
    return s;
}

size_t tsync__wire_size(const tsync__msg *m)
{
    const mtype *t = mtype_of((uint64_t)m->type);
    if (!t) return 0;
    size_t s = tsync__mp_array_size(t->items) + tsync__mp_uint_size((uint64_t)m->type);
    switch (m->type) {
    case TSYNC__WIRE_HELLO: {
        const tsync__wire_hello *h = &m->hello;
        s += tsync__mp_uint_size(TSYNC_WIRE_VERSION) +
             (h->has_shop ? tsync__mp_bin_size(TSYNC__SITE_BYTES) : 1) +
             tsync__mp_uint_size(h->schema) + (h->cert ? tsync__mp_bin_size(h->cert_len) : 1) +
             tsync__mp_uint_size(h->clock_ms) + vv_size(&h->vv);
        break;
    }
    case TSYNC__WIRE_BATCHES: {
        const tsync__wire_batches *b = &m->batches;
        s += tsync__mp_bin_size(TSYNC__SITE_BYTES) + tsync__mp_bin_size(TSYNC__PK_BYTES) +
             tsync__mp_bin_size(TSYNC__INC_BYTES) + tsync__mp_uint_size(b->first_seq) +
             tsync__mp_bin_size(TSYNC__HASH_BYTES) + blobs_size(b->nbodies, b->body_len) +
             tsync__mp_bin_size(TSYNC__SIG_BYTES);
        break;
    }
    case TSYNC__WIRE_CERTS:
        s += blobs_size(m->certs.n, m->certs.len);
        break;
    case TSYNC__WIRE_FORK_PROOF:
        s += tsync__mp_bin_size(m->fork_proof.len);
        break;
    case TSYNC__WIRE_ACK:
        s += vv_size(&m->ack.vv);
        break;
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
        s += tsync__mp_bin_size(TSYNC__SITE_BYTES) +
             tsync__mp_uint_size(m->snapshot_begin.ntables) + vv_size(&m->snapshot_begin.vv);
        break;
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
        s += tsync__mp_bin_size(TSYNC__SITE_BYTES) + tsync__mp_uint_size(m->snapshot_chunk.seq) +
             tsync__mp_bin_size(m->snapshot_chunk.len);
        break;
    case TSYNC__WIRE_SNAPSHOT_END:
        s += tsync__mp_bin_size(TSYNC__SITE_BYTES) + tsync__mp_uint_size(m->snapshot_end.nchunks) +
             tsync__mp_bin_size(TSYNC__HASH_BYTES);
        break;
    case TSYNC__WIRE_PING:
        s += tsync__mp_uint_size(m->ping.ms);
        break;
    case TSYNC__WIRE_PONG:
        s += tsync__mp_uint_size(m->pong.echo_ms) + tsync__mp_uint_size(m->pong.clock_ms);
        break;
    case TSYNC__WIRE_ERROR:
        s += tsync__mp_uint_size(m->error.code) + tsync__mp_str_size(m->error.len);
        break;
    case TSYNC__WIRE_SCHEMA:
        s += tsync__mp_bin_size(TSYNC__SITE_BYTES) + tsync__mp_bin_size(TSYNC__INC_BYTES) +
             tsync__mp_bin_size(m->schema.len);
        break;
    }
    return s;
}

/* ---------------------------------------------------------------- decoder */

typedef struct {
    tsync__mpr r; /* canonical */
    tsync__arena *a;
    ctx c;
} dec;

/* "an int", "an array", "an ext", "a uint", ... */
static const char *article(const char *kind)
{
    return strchr("aei", kind[0]) ? "an" : "a";
}

/* Explains why the reader could not read an item, from its account of the failure; `want`
 * names what the field may be when that is more than the reader was asked for ("bin or nil"). */
static bool bad(dec *d, const char *want)
{
    const tsync__mpr *r = &d->r;
    size_t off = tsync__mpr_pos(r);
    const char *got = tsync__mpr_found(r);
    if (!want) want = r->expected;
    switch ((tsync__mpr_fault)r->fault) {
    case TSYNC__MPR_END:
        return fail(&d->c, "is missing: the message ends at byte %zu (want %s)", off, want);
    case TSYNC__MPR_TYPE:
        if (!strcmp(got, "nil")) return fail(&d->c, "is nil, want %s", want);
        return fail(&d->c, "is %s %s, want %s", article(got), got, want);
    case TSYNC__MPR_NONCANON:
        return fail(&d->c,
                    "is not in its smallest encoding (%" PRIu64 " bytes at byte %zu, msgpack-c "
                    "writes %" PRIu64 ")",
                    r->got, off, r->want);
    case TSYNC__MPR_SHORT:
    case TSYNC__MPR_ROOM: /* rd_list words it */
    case TSYNC__MPR_RANGE:
    case TSYNC__MPR_LENGTH:
    case TSYNC__MPR_OK:
        break;
    }
    if (!strcmp(got, "array"))
        return fail(&d->c, "is an array declaring more entries than the %zu bytes left can hold",
                    (size_t)(r->end - r->p));
    return fail(&d->c, "is %s %s at byte %zu that runs past the end of the message", article(got),
                got, off);
}

static bool rd_uint(dec *d, uint64_t *v)
{
    return tsync__mpr_uint(&d->r, v) || bad(d, NULL);
}

static bool rd_array(dec *d, uint32_t *n)
{
    return tsync__mpr_array(&d->r, n) || bad(d, NULL);
}

/* An array of exactly `want` items (an entry of a list). */
static bool rd_tuple(dec *d, uint32_t want)
{
    uint32_t n;
    if (!rd_array(d, &n)) return false;
    if (n != want) return fail(&d->c, "is an array of %" PRIu32 ", want %" PRIu32, n, want);
    return true;
}

/* An array of n entries that take at least min bytes each (tsync__mpr_list). */
static bool rd_list(dec *d, uint32_t *n, size_t min)
{
    if (tsync__mpr_list(&d->r, n, min)) return true;
    if (d->r.fault != TSYNC__MPR_ROOM) return bad(d, NULL);
    return fail(&d->c,
                "declares %" PRIu64 " entries, more than the %" PRIu64 " bytes left can hold "
                "(%zu each at least)",
                d->r.got, d->r.want, min);
}

static bool rd_bin(dec *d, const uint8_t **p, size_t *n, const char *want)
{
    uint32_t len;
    if (!tsync__mpr_bin(&d->r, p, &len)) return bad(d, want);
    *n = len;
    return true;
}

static bool rd_fixed(dec *d, uint8_t *out, uint32_t want, const char *kind)
{
    const uint8_t *p = NULL;
    size_t n = 0;
    if (!rd_bin(d, &p, &n, kind)) return false;
    if (n != want) return fail(&d->c, "is a bin of %zu bytes, want %" PRIu32, n, want);
    memcpy(out, p, want);
    return true;
}

static bool rd_str(dec *d, const char **p, size_t *n)
{
    uint32_t len;
    if (!tsync__mpr_str(&d->r, p, &len)) return bad(d, NULL);
    *n = len;
    return true;
}

static void *alloc_array(dec *d, uint32_t n, size_t sz)
{
    void *p = tsync__arena_array(d->a, n, sz);
    if (n && !p) {
        fail(&d->c, "cannot be held: out of memory");
        d->c.rc = TSYNC_ENOMEM;
    }
    return p;
}

static bool dec_vv(dec *d, tsync__wire_vv *vv)
{
    uint32_t n;
    if (!rd_list(d, &n, VV_ENTRY_MIN)) return false;
    /* The count limit is checked before allocating, the order only by check(). */
    if (n > TSYNC__WIRE_VV_MAX)
        return fail(&d->c, "has %" PRIu32 " entries, more than %u", n, TSYNC__WIRE_VV_MAX);
    tsync__vv_entry *e = alloc_array(d, n, sizeof *e);
    if (n && !e) return false;
    for (uint32_t i = 0; i < n; i++) {
        d->c.entry = i;
        d->c.sub = NULL;
        if (!rd_tuple(d, 3)) return false;
        d->c.sub = "site";
        if (!rd_fixed(d, e[i].site, TSYNC__SITE_BYTES, "bin")) return false;
        d->c.sub = "seq";
        if (!rd_uint(d, &e[i].seq)) return false;
        d->c.sub = "hash";
        if (!rd_fixed(d, e[i].hash, TSYNC__HASH_BYTES, "bin")) return false;
    }
    d->c.entry = -1;
    d->c.sub = NULL;
    vv->e = e;
    vv->n = n;
    return true;
}

/* A list of at most max_n bins (their sizes are checked by check()). */
static bool dec_blobs(dec *d, uint32_t *n, uint32_t max_n, const uint8_t *const **blob,
                      const size_t **len)
{
    if (!rd_list(d, n, 2 + 1)) return false; /* bin8 of one byte */
    if (*n > max_n) return fail(&d->c, "has %" PRIu32 " entries, more than %" PRIu32, *n, max_n);
    const uint8_t **p = alloc_array(d, *n, sizeof *p);
    size_t *l = alloc_array(d, *n, sizeof *l);
    if (*n && (!p || !l)) return false;
    for (uint32_t i = 0; i < *n; i++) {
        d->c.entry = i;
        if (!rd_bin(d, &p[i], &l[i], "bin")) return false;
    }
    d->c.entry = -1;
    *blob = p;
    *len = l;
    return true;
}

static bool dec_hello(dec *d, const mtype *t, tsync__wire_hello *h)
{
    /* Item 1, the version, was read before the item count was checked. */
    at(&d->c, t, 2);
    h->has_shop = !tsync__mpr_nil(&d->r);
    if (h->has_shop && !rd_fixed(d, h->shop, TSYNC__SITE_BYTES, "bin or nil")) return false;
    at(&d->c, t, 3);
    if (!rd_uint(d, &h->schema)) return false;
    at(&d->c, t, 4);
    if (!tsync__mpr_nil(&d->r) && !rd_bin(d, &h->cert, &h->cert_len, "bin or nil")) return false;
    at(&d->c, t, 5);
    if (!rd_uint(d, &h->clock_ms)) return false;
    at(&d->c, t, 6);
    return dec_vv(d, &h->vv);
}

static bool dec_batches(dec *d, const mtype *t, tsync__wire_batches *b)
{
    at(&d->c, t, 1);
    if (!rd_fixed(d, b->site, TSYNC__SITE_BYTES, "bin")) return false;
    at(&d->c, t, 2);
    if (!rd_fixed(d, b->pk, TSYNC__PK_BYTES, "bin")) return false;
    at(&d->c, t, 3);
    if (!rd_fixed(d, b->inc, TSYNC__INC_BYTES, "bin")) return false;
    at(&d->c, t, 4);
    if (!rd_uint(d, &b->first_seq)) return false;
    at(&d->c, t, 5);
    if (!rd_fixed(d, b->prev, TSYNC__HASH_BYTES, "bin")) return false;
    at(&d->c, t, 6);
    if (!dec_blobs(d, &b->nbodies, TSYNC__WIRE_BODIES_MAX, &b->body, &b->body_len)) return false;
    at(&d->c, t, 7);
    return rd_fixed(d, b->sig, TSYNC__SIG_BYTES, "bin");
}

static bool dec_fields(dec *d, const mtype *t, tsync__msg *m)
{
    uint64_t u;
    switch (m->type) {
    case TSYNC__WIRE_HELLO:
        return dec_hello(d, t, &m->hello);
    case TSYNC__WIRE_BATCHES:
        return dec_batches(d, t, &m->batches);
    case TSYNC__WIRE_CERTS:
        at(&d->c, t, 1);
        return dec_blobs(d, &m->certs.n, TSYNC__WIRE_CERTS_MAX, &m->certs.blob, &m->certs.len);
    case TSYNC__WIRE_FORK_PROOF:
        at(&d->c, t, 1);
        return rd_bin(d, &m->fork_proof.proof, &m->fork_proof.len, "bin");
    case TSYNC__WIRE_ACK:
        at(&d->c, t, 1);
        return dec_vv(d, &m->ack.vv);
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
        at(&d->c, t, 1);
        if (!rd_fixed(d, m->snapshot_begin.id, TSYNC__SITE_BYTES, "bin")) return false;
        at(&d->c, t, 2);
        if (!rd_uint(d, &u)) return false;
        if (u > UINT32_MAX) return fail(&d->c, "is %" PRIu64 ", more than 2^32-1", u);
        m->snapshot_begin.ntables = (uint32_t)u;
        at(&d->c, t, 3);
        return dec_vv(d, &m->snapshot_begin.vv);
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
        at(&d->c, t, 1);
        if (!rd_fixed(d, m->snapshot_chunk.id, TSYNC__SITE_BYTES, "bin")) return false;
        at(&d->c, t, 2);
        if (!rd_uint(d, &m->snapshot_chunk.seq)) return false;
        at(&d->c, t, 3);
        return rd_bin(d, &m->snapshot_chunk.rows, &m->snapshot_chunk.len, "bin");
    case TSYNC__WIRE_SNAPSHOT_END:
        at(&d->c, t, 1);
        if (!rd_fixed(d, m->snapshot_end.id, TSYNC__SITE_BYTES, "bin")) return false;
        at(&d->c, t, 2);
        if (!rd_uint(d, &m->snapshot_end.nchunks)) return false;
        at(&d->c, t, 3);
        return rd_fixed(d, m->snapshot_end.hash, TSYNC__HASH_BYTES, "bin");
    case TSYNC__WIRE_PING:
        at(&d->c, t, 1);
        return rd_uint(d, &m->ping.ms);
    case TSYNC__WIRE_PONG:
        at(&d->c, t, 1);
        if (!rd_uint(d, &m->pong.echo_ms)) return false;
        at(&d->c, t, 2);
        return rd_uint(d, &m->pong.clock_ms);
    case TSYNC__WIRE_ERROR:
        at(&d->c, t, 1);
        if (!rd_uint(d, &u)) return false;
        if (u > UINT32_MAX) return fail(&d->c, "is %" PRIu64 ", more than 2^32-1", u);
        m->error.code = (uint32_t)u;
        at(&d->c, t, 2);
        return rd_str(d, &m->error.text, &m->error.len);
    case TSYNC__WIRE_SCHEMA:
        at(&d->c, t, 1);
        if (!rd_fixed(d, m->schema.site, TSYNC__SITE_BYTES, "bin")) return false;
        at(&d->c, t, 2);
        if (!rd_fixed(d, m->schema.inc, TSYNC__INC_BYTES, "bin")) return false;
        at(&d->c, t, 3);
        return rd_bin(d, &m->schema.defs, &m->schema.len, "bin");
    }
    return false; /* not reached: the type was looked up */
}

int tsync__wire_decode(const uint8_t *buf, size_t len, tsync__msg *out, tsync__arena *a,
                       char err[TSYNC__ERRLEN])
{
    dec d = {.a = a,
             .c = {.err = err,
                   .code = TSYNC_ECORRUPT,
                   .rc = 0,
                   .tname = "message",
                   .field = -1,
                   .entry = -1}};
    memset(out, 0, sizeof *out);
    err[0] = '\0';
    if (!buf || len == 0) {
        fail(&d.c, "is empty");
        goto bad;
    }
    if (len > TSYNC__WIRE_MAX_FRAME) {
        fail(&d.c, "is %zu bytes, more than the largest message (%u)", len, TSYNC__WIRE_MAX_FRAME);
        goto bad;
    }
    tsync__mpr_init(&d.r, buf, len);
    d.r.canonical = true;

    /* A fixarray's item count is not bounded by the bytes left: a bounded read would refuse a
     * count larger than the bytes left, which is what a truncated message looks like, before we
     * know its type to say so. Nothing is allocated by this count; every item read later is
     * bounded. */
    uint32_t items;
    uint64_t type;
    if (!tsync__mpr_fixarray(&d.r, &items) && !rd_array(&d, &items)) goto bad;
    if (items == 0) {
        fail(&d.c, "is an empty array, want [type, fields...]");
        goto bad;
    }
    d.c.field = 0;
    d.c.fname = "type";
    if (!rd_uint(&d, &type)) goto bad;
    const mtype *t = mtype_of(type);
    if (!t) {
        fail(&d.c, "is %" PRIu64 ", not a message type of protocol version %u (%d..%d)", type,
             TSYNC_WIRE_VERSION, TSYNC__WIRE_TYPE_MIN, TSYNC__WIRE_TYPE_MAX);
        d.c.rc = TSYNC_EVERSION;
        goto bad;
    }
    out->type = (tsync__wire_type)type;
    d.c.tname = t->name;
    at(&d.c, t, -1);
    if (len > t->limit) {
        fail(&d.c, "is %zu bytes, more than its limit of %zu", len, t->limit);
        goto bad;
    }
    if (type == TSYNC__WIRE_HELLO && items >= 2) {
        uint64_t v;
        at(&d.c, t, 1);
        if (!rd_uint(&d, &v)) goto bad;
        if (v != TSYNC_WIRE_VERSION) {
            fail(&d.c, "is %" PRIu64 ", this node speaks version %u", v, TSYNC_WIRE_VERSION);
            d.c.rc = TSYNC_EVERSION;
            goto bad;
        }
        out->hello.version = (uint32_t)v;
        at(&d.c, t, -1);
    }
    if (items != t->items) {
        fail(&d.c, "has %" PRIu32 " items, want %" PRIu32 " (the type and %" PRIu32 " fields)",
             items, t->items, t->items - 1);
        goto bad;
    }
    if (!dec_fields(&d, t, out)) goto bad;
    if (d.r.p != d.r.end) {
        at(&d.c, t, -1);
        size_t extra = (size_t)(d.r.end - d.r.p);
        fail(&d.c, "is followed by %zu trailing byte%s", extra, extra == 1 ? "" : "s");
        goto bad;
    }
    if (!check(&d.c, out)) goto bad;
    return 0;
bad:
    memset(out, 0, sizeof *out);
    return d.c.rc ? d.c.rc : TSYNC_ECORRUPT;
}

/* ---------------------------------------------------------------- encoder */

/* msgpack-c's pack functions fail only when the buffer cannot grow. */
#define PK(x)                                                                                      \
    do {                                                                                           \
        if ((x) != 0) return -1;                                                                   \
    } while (0)

static int pack_vv(msgpack_packer *pk, const tsync__wire_vv *vv)
{
    PK(msgpack_pack_array(pk, vv->n));
    for (size_t i = 0; i < vv->n; i++) {
        PK(msgpack_pack_array(pk, 3));
        PK(tsync__mp_pack_bin(pk, vv->e[i].site, TSYNC__SITE_BYTES));
        PK(msgpack_pack_uint64(pk, vv->e[i].seq));
        PK(tsync__mp_pack_bin(pk, vv->e[i].hash, TSYNC__HASH_BYTES));
    }
    return 0;
}

static int pack_blobs(msgpack_packer *pk, uint32_t n, const uint8_t *const *p, const size_t *len)
{
    PK(msgpack_pack_array(pk, n));
    for (uint32_t i = 0; i < n; i++) PK(tsync__mp_pack_bin(pk, p[i], len[i]));
    return 0;
}

static int pack_fields(msgpack_packer *pk, const tsync__msg *m)
{
    switch (m->type) {
    case TSYNC__WIRE_HELLO: {
        const tsync__wire_hello *h = &m->hello;
        PK(msgpack_pack_uint32(pk, TSYNC_WIRE_VERSION));
        PK(h->has_shop ? tsync__mp_pack_bin(pk, h->shop, TSYNC__SITE_BYTES) : msgpack_pack_nil(pk));
        PK(msgpack_pack_uint64(pk, h->schema));
        PK(h->cert ? tsync__mp_pack_bin(pk, h->cert, h->cert_len) : msgpack_pack_nil(pk));
        PK(msgpack_pack_uint64(pk, h->clock_ms));
        return pack_vv(pk, &h->vv);
    }
    case TSYNC__WIRE_BATCHES: {
        const tsync__wire_batches *b = &m->batches;
        PK(tsync__mp_pack_bin(pk, b->site, TSYNC__SITE_BYTES));
        PK(tsync__mp_pack_bin(pk, b->pk, TSYNC__PK_BYTES));
        PK(tsync__mp_pack_bin(pk, b->inc, TSYNC__INC_BYTES));
        PK(msgpack_pack_uint64(pk, b->first_seq));
        PK(tsync__mp_pack_bin(pk, b->prev, TSYNC__HASH_BYTES));
        PK(pack_blobs(pk, b->nbodies, b->body, b->body_len));
        return tsync__mp_pack_bin(pk, b->sig, TSYNC__SIG_BYTES);
    }
    case TSYNC__WIRE_CERTS:
        return pack_blobs(pk, m->certs.n, m->certs.blob, m->certs.len);
    case TSYNC__WIRE_FORK_PROOF:
        return tsync__mp_pack_bin(pk, m->fork_proof.proof, m->fork_proof.len);
    case TSYNC__WIRE_ACK:
        return pack_vv(pk, &m->ack.vv);
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
        PK(tsync__mp_pack_bin(pk, m->snapshot_begin.id, TSYNC__SITE_BYTES));
        PK(msgpack_pack_uint32(pk, m->snapshot_begin.ntables));
        return pack_vv(pk, &m->snapshot_begin.vv);
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
        PK(tsync__mp_pack_bin(pk, m->snapshot_chunk.id, TSYNC__SITE_BYTES));
        PK(msgpack_pack_uint64(pk, m->snapshot_chunk.seq));
        return tsync__mp_pack_bin(pk, m->snapshot_chunk.rows, m->snapshot_chunk.len);
    case TSYNC__WIRE_SNAPSHOT_END:
        PK(tsync__mp_pack_bin(pk, m->snapshot_end.id, TSYNC__SITE_BYTES));
        PK(msgpack_pack_uint64(pk, m->snapshot_end.nchunks));
        return tsync__mp_pack_bin(pk, m->snapshot_end.hash, TSYNC__HASH_BYTES);
    case TSYNC__WIRE_PING:
        return msgpack_pack_uint64(pk, m->ping.ms);
    case TSYNC__WIRE_PONG:
        PK(msgpack_pack_uint64(pk, m->pong.echo_ms));
        return msgpack_pack_uint64(pk, m->pong.clock_ms);
    case TSYNC__WIRE_ERROR:
        PK(msgpack_pack_uint32(pk, m->error.code));
        return tsync__mp_pack_str(pk, m->error.text, m->error.len);
    case TSYNC__WIRE_SCHEMA:
        PK(tsync__mp_pack_bin(pk, m->schema.site, TSYNC__SITE_BYTES));
        PK(tsync__mp_pack_bin(pk, m->schema.inc, TSYNC__INC_BYTES));
        return tsync__mp_pack_bin(pk, m->schema.defs, m->schema.len);
    }
    return -1;
}

int tsync__wire_encode(const tsync__msg *m, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN])
{
    ctx c = {.err = err, .code = TSYNC_EINVAL, .tname = "message", .field = -1, .entry = -1};
    *out = NULL;
    *len = 0;
    err[0] = '\0';
    const mtype *t = m ? mtype_of((uint64_t)m->type) : NULL;
    if (!t) {
        fail(&c, "has unknown type %d", m ? (int)m->type : 0);
        return c.rc;
    }
    c.tname = t->name;
    if (!check(&c, m)) return c.rc;
    size_t size = tsync__wire_size(m);
    if (size > t->limit) {
        at(&c, t, -1);
        fail(&c, "would be %zu bytes, more than its limit of %zu", size, t->limit);
        return c.rc;
    }

    /* One allocation of exactly the right size: sbuffer never has to grow or copy. */
    msgpack_sbuffer sb = {.size = 0, .data = malloc(size), .alloc = size};
    msgpack_packer pk;
    if (!sb.data) goto nomem;
    msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
    if (msgpack_pack_array(&pk, t->items) != 0 ||
        msgpack_pack_uint32(&pk, (uint32_t)m->type) != 0 || pack_fields(&pk, m) != 0)
        goto nomem;
    if (sb.size != size) {
        /* tsync__wire_size and the packer disagree: a bug here, never the caller's. */
        at(&c, t, -1);
        fail(&c, "encoded to %zu bytes, %zu expected (internal error)", sb.size, size);
        msgpack_sbuffer_destroy(&sb);
        return TSYNC_ERROR;
    }
    *out = (uint8_t *)msgpack_sbuffer_release(&sb);
    *len = size;
    return 0;
nomem:
    msgpack_sbuffer_destroy(&sb);
    snprintf(err, TSYNC__ERRLEN, "%s: out of memory", t->name);
    return TSYNC_ENOMEM;
}
