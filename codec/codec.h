/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/codec.h — the byte formats of tillsync: values, batches and their hashing and signing
 * rules, bundles, and the one strict bounded msgpack reader every decoder uses.
 *
 * Design notes
 * - Nothing here does I/O or touches SQLite: bytes come in and go out as buffers.
 * - Encoding uses msgpack-c's packer. Decoding uses our own bounded reader (mpk.c), because
 *   msgpack-c's unpacker allocates a container's declared size before the bytes arrive (5 bytes
 *   can ask for 8.6 GB) and is not strict about types or trailing bytes.
 * - Decoded values point into the input buffer; arrays live in an arena freed as one.
 *
 * THREAD SAFETY: every function is reentrant; objects are not shared between threads unless the
 * caller locks them.
 */
#ifndef TSYNC_CODEC_H
#define TSYNC_CODEC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util/util.h"

#define TSYNC__SITE_BYTES 16 /* site id: BLAKE2b-128(public key || incarnation) */
#define TSYNC__PK_BYTES   32 /* Ed25519 public key */
#define TSYNC__SK_BYTES   64 /* Ed25519 secret key (libsodium layout) */
#define TSYNC__INC_BYTES  16 /* incarnation: 128 random bits */
#define TSYNC__HASH_BYTES 32 /* BLAKE2b-256 */
#define TSYNC__SIG_BYTES  64 /* Ed25519 detached signature */

#define TSYNC__BATCH_FORMAT 1u
/* A batch that carries a table with column policies (max, min, review): its table definitions
 * have a fifth field. Written only then, so tills of an older build, which refuse it as a format
 * they do not support, still take every batch of tables without policies. */
#define TSYNC__BATCH_FORMAT_POLICIES 3u /* 2 stays unused: tests use it as "a format not read" */
#define TSYNC__BATCH_MAX_BYTES       (64u << 20) /* hard limit of one batch body */
#define TSYNC__BUNDLE_FORMAT         1u          /* [sites, runs] */
#define TSYNC__BUNDLE_FORMAT_TRUST                                                                 \
    2u /* [sites, runs, trust records]: written when there are some */
#define TSYNC__BUNDLE_FORMAT_SCHEMA                                                                \
    3u /* [sites, runs, trust records, [author site, table definitions]] */
#define TSYNC__BUNDLE_FORMAT_STREAM4                                                               \
    4u /* records one by one (codec/bundle_stream.c), runs as whole bodies */
#define TSYNC__BUNDLE_FORMAT_STREAM                                                                \
    5u /* format 4 with compact runs (codec/compact.h): what tillsync writes */
#define TSYNC__BUNDLE_RECORD_MAX      (128u << 20) /* one record of format 4 (a run piece) */
#define TSYNC__BUNDLE_SCHEMA_MAX      (1u << 20)   /* the author's table definitions */
#define TSYNC__BUNDLE_TRUST_MAX_BYTES 4096u  /* one trust record (certificate, revocation, ...) */
#define TSYNC__BUNDLE_TRUST_MAX       65536u /* trust records per bundle */
#define TSYNC__BUNDLE_MAX_BYTES       (1u << 30) /* hard limit of a decompressed bundle payload */
#define TSYNC__MAX_PK_COLS            4
#define TSYNC__MAX_COLS               63 /* columns of a replicated table, key included (mask fits in int64) */

/* ---------------------------------------------------------------- HLC */

/* A hybrid logical clock: 48-bit Unix milliseconds << 16 | 16-bit logical counter. Adding 1 to a
 * clock whose logical part is 0xffff carries into the milliseconds, as intended. 0 means "none". */
typedef uint64_t tsync__hlc;

#define TSYNC__HLC_DEFAULT_SKEW_MS (5u * 60u * 1000u)

static inline tsync__hlc tsync__hlc_make(uint64_t ms, uint16_t logical)
{
    return (ms << 16) | logical;
}
static inline uint64_t tsync__hlc_ms(tsync__hlc h)
{
    return h >> 16;
}
/* ---------------------------------------------------------------- version vector entries
 *
 * One site's position, as messages carry it (the rules over whole vectors are in crdt/). */

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t seq;                    /* highest contiguous sequence number held */
    uint8_t hash[TSYNC__HASH_BYTES]; /* hash of that batch (all zero when seq is 0) */
} tsync__vv_entry;

/* ---------------------------------------------------------------- values */

typedef enum {
    TSYNC__V_NULL = 0,
    TSYNC__V_INT = 1,
    TSYNC__V_REAL = 2,
    TSYNC__V_TEXT = 3,
    TSYNC__V_BLOB = 4,
} tsync__vtype;

/* An SQLite value. p is borrowed (from the decoded buffer or the SQLite row). */
typedef struct {
    uint8_t type; /* tsync__vtype */
    int64_t i;
    double r;
    const void *p;
    uint32_t n;
} tsync__val;

/* ---------------------------------------------------------------- batches
 *
 * Body wire format (msgpack, exactly these types; see docs/PROTOCOL.md):
 *   [ format:uint(=1), origin:bin16, seq:uint>=1, hlc_lo:uint, hlc_hi:uint>=hlc_lo,
 *     sites:[bin16...]       -- dictionary; sites[0] is the origin
 *     deps:[[site_idx,seq]...] -- author's vector entries changed since its previous batch
 *     tables:[[name:str, cols:[str...], npk:uint, counters:[col_idx...]
 *              (, policies:[[col_idx, policy:uint 1..3]...])]...]
 *       (format 3 only, and then exactly for the tables that have a column policy: 1 max, 2 min,
 *       3 review; col_idx ascending, not a key or counter column)
 *     rows:[[table_idx, pk:[value * npk], hlc_off:uint, flags:uint,
 *            rmv:[[site_idx, hlc]...], cols:[[col_idx, value, old_hlc, old_site_idx]...],
 *            ctrs:[[col_idx, p, n]...]]...] ]
 * A value is nil, an int (any msgpack int width; uint above INT64_MAX is refused), a float64, a
 * str (TEXT) or a bin (BLOB). Row hlc = hlc_lo + hlc_off and must be <= hlc_hi.
 */

#define TSYNC__ROW_ADD 1u /* the origin inserted or updated the row: its add clock becomes hlc */
#define TSYNC__ROW_DEL 2u /* the origin deleted the row: rmv lists the adds it had observed */

typedef struct {
    const char *name;
    uint32_t name_len;
    uint32_t ncols;    /* including the key columns */
    const char **cols; /* column names (not NUL-terminated) */
    uint32_t *col_len;
    uint32_t npk; /* the first npk columns are the key, in key order */
    uint32_t ncounters;
    uint32_t *counters;    /* column indexes that are PN-counters */
    uint32_t npolicies;    /* columns with a merge policy other than LWW (format 3) */
    uint32_t *policy_cols; /* their indexes, ascending */
    uint8_t *policies;     /* TSYNC__POLICY_* of each (crdt/crdt.h) */
} tsync__btable;

/* The policy a table definition gives column col (0: LWW). */
static inline uint8_t tsync__btable_policy(const tsync__btable *t, uint32_t col)
{
    for (uint32_t k = 0; k < t->npolicies; k++)
        if (t->policy_cols[k] == col) return t->policies[k];
    return 0;
}

typedef struct {
    uint32_t site;
    tsync__hlc hlc;
} tsync__brmv;

typedef struct {
    uint32_t col;
    tsync__val val;
    tsync__hlc old_hlc; /* clock of the value this write overwrote, 0 if none */
    uint32_t old_site;  /* its site (index in sites); 0 when old_hlc is 0 */
} tsync__bcol;

typedef struct {
    uint32_t col;
    uint64_t p, n; /* the origin's absolute P and N for this counter */
} tsync__bctr;

typedef struct {
    uint32_t table;
    tsync__val pk[TSYNC__MAX_PK_COLS];
    tsync__hlc hlc;
    uint32_t flags; /* TSYNC__ROW_ADD | TSYNC__ROW_DEL */
    uint32_t nrmv, ncols, nctrs;
    tsync__brmv *rmv;
    tsync__bcol *cols;
    tsync__bctr *ctrs;
} tsync__brow;

typedef struct {
    uint32_t site;
    uint64_t seq;
} tsync__bdep;

typedef struct {
    uint32_t format;
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t seq;
    tsync__hlc hlc_lo, hlc_hi;
    uint32_t nsites;
    const uint8_t (*sites)[TSYNC__SITE_BYTES];
    uint32_t ndeps;
    tsync__bdep *deps;
    uint32_t ntables;
    tsync__btable *tables;
    uint32_t nrows;
    tsync__brow *rows;
} tsync__batch;

/* Encodes b into a new malloc'd buffer (*out, *len; caller frees). Checks the invariants the
 * decoder checks (sites[0] == origin, indexes in range, hlc range) and fails with TSYNC_EINVAL and
 * a message in err if one does not hold. */
int tsync__batch_encode(const tsync__batch *b, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);
/* Like tsync__batch_encode, but appends the body after the *len bytes of *buf (*cap its size,
 * grown with realloc; *buf may change even on failure, and the caller frees it): rebuilding a run
 * of 100k bodies then takes no allocation per body. On success *len grows by the body's length;
 * on failure it is left as it was. */
int tsync__batch_encode_append(const tsync__batch *b, uint8_t **buf, size_t *len, size_t *cap,
                               char err[TSYNC__ERRLEN]);

/* Strictly decodes a body. Arrays are allocated in a; values point into buf, which must outlive
 * *out. Wrong types, wrong array lengths, indexes out of range, trailing bytes or more than
 * TSYNC__BATCH_MAX_BYTES: TSYNC_ECORRUPT (TSYNC_EVERSION for an unknown format) and a one-line
 * message in err. */
TSYNC_WARN_UNUSED int tsync__batch_decode(const uint8_t *buf, size_t len, tsync__batch *out,
                                          tsync__arena *a, char err[TSYNC__ERRLEN]);

/* Checks a body as strictly as tsync__batch_decode (same faults, same messages) and keeps only its
 * header: origin, seq, clocks, sites, deps and tables in a; the rows are checked one at a time and
 * not kept (rows NULL, nrows their count): those of a batch of at most 512 rows in a too (the
 * caller frees a as it goes), those of a longer one in a scratch arena of their own, freed as it
 * goes. For a merge that verifies a whole bundle first and decodes each batch's rows when it
 * applies. */
TSYNC_WARN_UNUSED int tsync__batch_check(const uint8_t *buf, size_t len, tsync__batch *out,
                                         tsync__arena *a, char err[TSYNC__ERRLEN]);

/* Reads only origin and seq from a body (cheap; for logging and fork checks). */
TSYNC_WARN_UNUSED int tsync__batch_peek(const uint8_t *buf, size_t len,
                                        uint8_t origin[TSYNC__SITE_BYTES], uint64_t *seq);

/* hash = BLAKE2b-256(prev_hash || body). prev_hash of seq 1 is all zero. */
void tsync__batch_hash(const uint8_t prev[TSYNC__HASH_BYTES], const uint8_t *body, size_t len,
                       uint8_t out[TSYNC__HASH_BYTES]);

/* The signed message is "tsync-batch-v1" (14 bytes) || origin || seq (8 bytes big-endian) || hash.
 * Signing the chained hash means one signature covers every earlier batch of the origin. */
void tsync__batch_sign(const uint8_t sk[TSYNC__SK_BYTES], const uint8_t origin[TSYNC__SITE_BYTES],
                       uint64_t seq, const uint8_t hash[TSYNC__HASH_BYTES],
                       uint8_t sig[TSYNC__SIG_BYTES]);
TSYNC_WARN_UNUSED int tsync__batch_verify(const uint8_t pk[TSYNC__PK_BYTES],
                                          const uint8_t origin[TSYNC__SITE_BYTES], uint64_t seq,
                                          const uint8_t hash[TSYNC__HASH_BYTES],
                                          const uint8_t sig[TSYNC__SIG_BYTES]);

/* site = BLAKE2b-128(pk || incarnation). */
void tsync__site_id(const uint8_t pk[TSYNC__PK_BYTES], const uint8_t inc[TSYNC__INC_BYTES],
                    uint8_t out[TSYNC__SITE_BYTES]);

/* ---------------------------------------------------------------- bundles
 *
 * File: "TSYNCBDL" | format:u8(=1) | flags:u8 (bit 0: payload is one zstd frame with checksum)
 *       | payload
 * Payload (msgpack): [ sites:[[site:bin16, pk:bin32, incarnation:bin16]...],
 *                      runs:[[site_idx, first_seq:uint>=1, prev_hash:bin32, bodies:[bin...],
 *                             sig:bin64]...] ]
 * Format 2 adds a third element: trust:[bin (1..4096 bytes)...], the shop's certificates,
 * revocations and rotations, checked by the store.
 * A run is a contiguous range of one origin's batches; only its last batch's signature travels.
 */

typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
} tsync__bsite;

typedef struct {
    uint32_t site; /* index in the bundle's sites */
    uint64_t first_seq;
    uint8_t prev[TSYNC__HASH_BYTES];
    uint32_t nbodies;
    const uint8_t **body;
    size_t *body_len;
    uint8_t sig[TSYNC__SIG_BYTES];
    /* The run's bodies as the compact blob they came in (codec/compact.h; bundle format 5), NULL
     * when they came whole: what the store keeps of a run it applies whole (store/log_run.c). */
    const uint8_t *crun;
    size_t crun_len;
} tsync__brun;

typedef struct {
    uint32_t nsites;
    tsync__bsite *sites;
    uint32_t nruns;
    tsync__brun *runs;
    uint32_t ntrust; /* format 2: the shop's trust records (opaque here) */
    const uint8_t **trust;
    size_t *trust_len;
    /* format 3: the bundle's author and the definitions of its replicated tables (store/schema.h;
     * opaque here). schema NULL: none. */
    uint8_t schema_site[TSYNC__SITE_BYTES];
    const uint8_t *schema;
    size_t schema_len;
    uint8_t *payload; /* owned: the decompressed payload the bodies point into (or NULL) */
} tsync__bundle;

/* Decodes a bundle file image of any format (4: through tsync__bstream, copying the bodies into a).
 * Checks magic, format, zstd frame and checksum, limits, exact
 * msgpack types, that every site id equals BLAKE2b-128(pk || incarnation), and no trailing bytes.
 * Does not verify signatures (the store does, with chain context). Arrays in a; bodies point into
 * buf or into out->payload, freed by tsync__bundle_free. TSYNC_ECORRUPT / TSYNC_EVERSION + err. */
TSYNC_WARN_UNUSED int tsync__bundle_decode(const uint8_t *buf, size_t len, tsync__bundle *out,
                                           tsync__arena *a, char err[TSYNC__ERRLEN]);
void tsync__bundle_free(tsync__bundle *b);

/* Builds a bundle of format 1 to 3 in memory (fork proofs, which peers of every version read).
 * Add sites, then runs (each: begin, bodies, end). */
typedef struct tsync__bundle_writer tsync__bundle_writer;
tsync__bundle_writer *tsync__bundle_writer_new(void);
/* Returns the index of the site (adding it once). */
int tsync__bundle_writer_site(tsync__bundle_writer *w, const tsync__bsite *s, uint32_t *idx);
int tsync__bundle_writer_run(tsync__bundle_writer *w, uint32_t site_idx, uint64_t first_seq,
                             const uint8_t prev[TSYNC__HASH_BYTES]);
/* The body is copied. */
int tsync__bundle_writer_body(tsync__bundle_writer *w, const uint8_t *body, size_t len);
int tsync__bundle_writer_end_run(tsync__bundle_writer *w, const uint8_t sig[TSYNC__SIG_BYTES]);
/* Adds a trust record (certificate, revocation, rotation; copied). The bundle is then written in
 * format 2. */
int tsync__bundle_writer_trust(tsync__bundle_writer *w, const uint8_t *rec, size_t len);
/* Sets the author's site and the definitions of its replicated tables (copied; 1..
 * TSYNC__BUNDLE_SCHEMA_MAX bytes). The bundle is then written in format 3. */
int tsync__bundle_writer_schema(tsync__bundle_writer *w, const uint8_t site[TSYNC__SITE_BYTES],
                                const uint8_t *defs, size_t len);
/* Produces the file image (malloc'd; caller frees). compress: use zstd (level 3). */
int tsync__bundle_writer_finish(tsync__bundle_writer *w, bool compress, uint8_t **out, size_t *len);
void tsync__bundle_writer_free(tsync__bundle_writer *w);

/* ---------------------------------------------------------------- bundle format 4: streamed
 *
 * File: "TSYNCBDL" | format:u8(=4) | flags:u8 (bit 0: zstd, one frame with checksum) | records.
 * Each record is one msgpack bin holding a msgpack array [kind, ...]:
 *   1 trust  [1, record:bin 1..4096]                           -- first, any number (<= 65536)
 *   2 schema [2, author site:bin16, definitions:bin]           -- then at most one
 *   3 site   [3, site:bin16, pk:bin32, incarnation:bin16]      -- before the runs that use it
 *   4 run    [4, site_idx, first_seq, prev_hash:bin32, bodies:[bin...], sig:bin64]
 *   0 end    [0, nsites, nruns, nbatches, ntrust]                -- last: what came before it
 * See docs/PROTOCOL.md, "Bundle format 4". */

/* Reads a bundle of any format one item at a time. Format 4 holds one record in memory (at most
 * TSYNC__BUNDLE_RECORD_MAX, about one run piece of 1 MiB in practice) plus zstd's window; formats
 * 1 to 3 are read whole. An item is valid until the next call. Nothing read may be acted on for
 * good before TSYNC__BS_END: only then are the counts and zstd's checksum checked. */
typedef struct tsync__bstream tsync__bstream;
/* Reads up to n bytes into buf: how many, 0 at the end, (size_t)-1 on an I/O error. */
typedef size_t (*tsync__bstream_read_fn)(void *ctx, uint8_t *buf, size_t n);
typedef enum {
    TSYNC__BS_END = 0, /* the bundle ended, whole and intact */
    TSYNC__BS_TRUST,   /* data, len: a trust record */
    TSYNC__BS_SCHEMA,  /* schema_site; data, len: the author's table definitions */
    TSYNC__BS_SITE,    /* site, site_idx: a new origin (indexes count from 0 in this order) */
    TSYNC__BS_RUN,     /* run (bodies point into the reader), and its site, site_idx */
} tsync__bs_kind;
typedef struct {
    tsync__bs_kind kind;
    const uint8_t *data;
    size_t len;
    uint8_t schema_site[TSYNC__SITE_BYTES];
    uint32_t site_idx;
    const tsync__bsite *site;
    tsync__brun run;
} tsync__bs_item;
/* Opens a reader over a buffer (kept by the caller) or over rd. Reads the file header: bad magic
 * TSYNC_ECORRUPT, unknown format or flags TSYNC_EVERSION, and a one-line message in err. */
TSYNC_WARN_UNUSED int tsync__bstream_open_mem(tsync__bstream **out, const uint8_t *buf, size_t len,
                                              char err[TSYNC__ERRLEN]);
TSYNC_WARN_UNUSED int tsync__bstream_open(tsync__bstream **out, tsync__bstream_read_fn rd,
                                          void *ctx, char err[TSYNC__ERRLEN]);
/* The next item. A failure (TSYNC_ECORRUPT for anything malformed or cut short, TSYNC_EIO from
 * rd, TSYNC_ENOMEM) is final: every later call returns it again. */
TSYNC_WARN_UNUSED int tsync__bstream_next(tsync__bstream *r, tsync__bs_item *it,
                                          char err[TSYNC__ERRLEN]);
/* Reads the rest into out, as tsync__bundle_decode does (bodies copied into a). */
TSYNC_WARN_UNUSED int tsync__bstream_collect(tsync__bstream *r, tsync__bundle *out, tsync__arena *a,
                                             char err[TSYNC__ERRLEN]);
unsigned tsync__bstream_format(const tsync__bstream *r);
/* The sites met so far (borrowed, valid until the next call). */
const tsync__bsite *tsync__bstream_sites(const tsync__bstream *r, uint32_t *n);
void tsync__bstream_free(tsync__bstream *r);

/* Writes format 4 into wr as it goes: trust records, then the schema, then sites and runs, then
 * finish. Holds one record and zstd's buffers. Calls out of that order, or out of the limits:
 * TSYNC_EINVAL (nothing written). wr's non-zero result, or TSYNC_ENOMEM, is final. */
typedef int (*tsync__bstream_write_fn)(void *ctx, const void *p, size_t n);
typedef struct tsync__bstream_writer tsync__bstream_writer;
/* Writes the file header at once. compress: zstd level 3 with its checksum. */
int tsync__bstream_writer_open(tsync__bstream_writer **out, bool compress,
                               tsync__bstream_write_fn wr, void *ctx);
/* The same in a given format: TSYNC__BUNDLE_FORMAT_STREAM (5, compact runs) or
 * TSYNC__BUNDLE_FORMAT_STREAM4 (4, for readers that predate format 5); else TSYNC_EINVAL. */
int tsync__bstream_writer_open_format(tsync__bstream_writer **out, bool compress, unsigned format,
                                      tsync__bstream_write_fn wr, void *ctx);
int tsync__bstream_writer_trust(tsync__bstream_writer *w, const uint8_t *rec, size_t len);
int tsync__bstream_writer_schema(tsync__bstream_writer *w, const uint8_t site[TSYNC__SITE_BYTES],
                                 const uint8_t *defs, size_t len);
/* The index of the site, writing its record the first time. */
int tsync__bstream_writer_site(tsync__bstream_writer *w, const tsync__bsite *s, uint32_t *idx);
/* One run piece: n bodies from first_seq, prev the hash before it (NULL: zero), sig the last
 * batch's signature. */
int tsync__bstream_writer_run(tsync__bstream_writer *w, uint32_t site_idx, uint64_t first_seq,
                              const uint8_t prev[TSYNC__HASH_BYTES], uint32_t n,
                              const uint8_t *const *body, const size_t *len,
                              const uint8_t sig[TSYNC__SIG_BYTES]);
/* Writes the end record and ends the zstd frame. */
int tsync__bstream_writer_finish(tsync__bstream_writer *w);
void tsync__bstream_writer_free(tsync__bstream_writer *w);

/* ---------------------------------------------------------------- bounded msgpack reader */

/* Why a read failed (tsync__mpr.fault), for the decoders' messages. */
typedef enum {
    TSYNC__MPR_OK = 0,
    TSYNC__MPR_END,      /* the input ended where an item was expected */
    TSYNC__MPR_TYPE,     /* an item of another kind is there */
    TSYNC__MPR_SHORT,    /* an item of the right kind whose header, body or declared count runs
                            past the end */
    TSYNC__MPR_RANGE,    /* a uint above INT64_MAX where an int was read */
    TSYNC__MPR_NONCANON, /* not the smallest encoding (canonical readers only) */
    TSYNC__MPR_LENGTH,   /* a bin of another length than asked for (binfix) */
    TSYNC__MPR_ROOM,     /* more list entries than the bytes left can hold (room) */
} tsync__mpr_fault;

/* A strict msgpack reader over a buffer. Every read checks the bytes left; a container's declared
 * count must not exceed the bytes left (each element takes at least one byte), so no declared size
 * can make us allocate more than the input's size. On error, ok becomes false and stays false, the
 * reader stops at the start of the failing item (p), and the first failure is described by fault,
 * expected and got/want, so each decoder can word its one-line message without reading bytes
 * itself.
 * A canonical reader (canonical = true after init) also refuses any encoding of an int, a length
 * or a count other than the smallest, the one msgpack-c writes, so that whatever decodes
 * re-encodes to the same bytes; a non-negative int in a signed form is not canonical either. */
typedef struct {
    const uint8_t *p, *end;
    const uint8_t *start; /* where the input began: offsets in messages count from here */
    bool ok;
    bool canonical;
    uint8_t fault;        /* tsync__mpr_fault of the first failure */
    const char *expected; /* the kind that read wanted ("uint", "bin", "value", ...) */
    /* NONCANON: bytes the item took, bytes of its smallest form. LENGTH: the bin's length, the
     * length asked for. ROOM: the declared count, the bytes left after its header. */
    uint64_t got, want;
} tsync__mpr;

static inline void tsync__mpr_init(tsync__mpr *r, const uint8_t *p, size_t n)
{
    r->p = p;
    r->end = p + n;
    r->start = p;
    r->ok = true;
    r->canonical = false;
    r->fault = TSYNC__MPR_OK;
    r->expected = NULL;
    r->got = r->want = 0;
}
bool tsync__mpr_array(tsync__mpr *r, uint32_t *n);
bool tsync__mpr_map(tsync__mpr *r, uint32_t *n);
bool tsync__mpr_uint(tsync__mpr *r, uint64_t *v);
bool tsync__mpr_int(tsync__mpr *r, int64_t *v);
bool tsync__mpr_bool(tsync__mpr *r, bool *v);
bool tsync__mpr_nil(tsync__mpr *r); /* consumes a nil if next, returns whether it did */
/* A nil that must be next: fails the reader (expected "nil") when it is not. */
bool tsync__mpr_expect_nil(tsync__mpr *r);
bool tsync__mpr_str(tsync__mpr *r, const char **s, uint32_t *n);
bool tsync__mpr_bin(tsync__mpr *r, const uint8_t **p, uint32_t *n);
/* bin of exactly n bytes (its length is checked before its encoding) */
bool tsync__mpr_binfix(tsync__mpr *r, uint8_t *out, uint32_t n);
bool tsync__mpr_value(tsync__mpr *r, tsync__val *v);
/* A probe like nil: consumes a fixarray header (0..15 items) if next and returns whether it did.
 * Its count is not checked against the bytes left: for a message's item count, compared with a
 * fixed number before the type says what a short message means; nothing is allocated by it. */
bool tsync__mpr_fixarray(tsync__mpr *r, uint32_t *n);
/* Whether n list entries of at least min bytes each fit in the bytes left; fails the reader
 * (TSYNC__MPR_ROOM) when not. Bounding a count by its smallest real entry keeps what a decoder
 * allocates for the entries within a small multiple of the input. */
bool tsync__mpr_room(tsync__mpr *r, uint32_t n, size_t min);
/* An array of n entries of at least min bytes each: tsync__mpr_array then tsync__mpr_room. */
bool tsync__mpr_list(tsync__mpr *r, uint32_t *n, size_t min);
/* Offset of the reader's position (after a failure: of the failing item) from the start. */
static inline size_t tsync__mpr_pos(const tsync__mpr *r)
{
    return (size_t)(r->p - r->start);
}
/* Kind of the item the reader stopped at ("uint", "str", ...), or NULL at the end of input. */
const char *tsync__mpr_found(const tsync__mpr *r);
/* Canonical (smallest) msgpack sizes, as msgpack-c writes them: a strict decoder refuses any
 * other form, and an encoder can size a message before writing it. */
size_t tsync__mp_uint_size(uint64_t v);
size_t tsync__mp_int_size(int64_t v);
size_t tsync__mp_str_size(size_t n);   /* header + n bytes */
size_t tsync__mp_bin_size(size_t n);   /* header + n bytes */
size_t tsync__mp_array_size(size_t n); /* header only */
size_t tsync__mp_map_size(size_t n);   /* header only */
/* What kind of msgpack item starts with byte b ("uint", "str", "reserved byte 0xc1", ...). */
const char *tsync__mp_kind(uint8_t b);

/* Writing with msgpack-c's packer (msgpack.h), one way for every format: a bin, a str, and a
 * value as batches and snapshots carry it (nil, int, float64, str for TEXT, bin for BLOB).
 * 0, or the packer's non-zero result when its buffer cannot grow. */
struct msgpack_packer;
int tsync__mp_pack_bin(struct msgpack_packer *pk, const void *p, size_t n);
int tsync__mp_pack_str(struct msgpack_packer *pk, const char *p, size_t n);
int tsync__mp_pack_val(struct msgpack_packer *pk, const tsync__val *v);
/* The list of table definitions batches and snapshots both carry (tsync__dec_tables reads it). */
int tsync__mp_pack_tables(struct msgpack_packer *pk, const tsync__btable *tables, uint32_t n);

static inline bool tsync__mpr_done(const tsync__mpr *r)
{
    return r->ok && r->p == r->end;
}

/* ---------------------------------------------------------------- decoding with messages (dec.c)
 *
 * What the batch and snapshot decoders share on top of a canonical reader: where they are, for
 * messages such as "batch body: row 3: col entry 1: value: expected value, got map at offset
 * 40", and typed reads that word the reader's fault when they fail. Each read returns false after
 * a failure, with rc (TSYNC_ECORRUPT, or TSYNC_ENOMEM kept over any later failure) and the one-line
 * message in err. */
typedef struct {
    tsync__mpr r; /* canonical */
    tsync__arena *a;
    char *err;           /* TSYNC__ERRLEN bytes */
    int rc;              /* TSYNC_ECORRUPT until a failure says otherwise */
    const char *prefix;  /* starts every message ("batch body: "), or NULL */
    const char *l1, *l2; /* where we are: "row 3: exist entry 1: " (NULL: not in a list) */
    uint32_t i1, i2;
} tsync__dec;

/* Starts decoding buf with a canonical reader. False (rc TSYNC_ECORRUPT, message in err) when
 * buf is empty or longer than max bytes. */
bool tsync__dec_open(tsync__dec *d, const uint8_t *buf, size_t len, size_t max, tsync__arena *a,
                     char *err, const char *prefix);
/* Words a failure at the current position (printf-style); always false. */
bool tsync__dec_fail(tsync__dec *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Words the reader's fault while reading `what`; always false. */
bool tsync__dec_bad(tsync__dec *d, const char *what);
bool tsync__dec_uint(tsync__dec *d, const char *what, uint64_t *v);
/* A uint that must be < limit (an index); `of` names what it indexes, for the message. */
bool tsync__dec_idx(tsync__dec *d, const char *what, uint32_t *v, uint32_t limit, const char *of);
bool tsync__dec_array(tsync__dec *d, const char *what, uint32_t *n);
/* An array of n entries of at least min bytes each (tsync__mpr_list). */
bool tsync__dec_list(tsync__dec *d, const char *what, uint32_t *n, size_t min);
/* An array of exactly want items. */
bool tsync__dec_tuple(tsync__dec *d, const char *what, uint32_t want);
bool tsync__dec_binfix(tsync__dec *d, const char *what, uint8_t *out, uint32_t n);
bool tsync__dec_str(tsync__dec *d, const char *what, const char **s, uint32_t *n);
bool tsync__dec_value(tsync__dec *d, const char *what, tsync__val *v);
bool tsync__dec_nil(tsync__dec *d, const char *what);
/* Records running out of memory; always false. */
bool tsync__dec_nomem(tsync__dec *d);
/* An arena array of n elements of sz bytes (NULL when n is 0; NULL and ENOMEM when out of
 * memory, so a caller tests `n && !p`). */
void *tsync__dec_alloc(tsync__dec *d, uint32_t n, size_t sz);
/* The list of table definitions batches and snapshots both carry (codec.h, batches): tables in
 * the arena, masks[t] the set of table t's counter columns for checking rows. strict adds the
 * snapshot's rules (docs/SNAPSHOT.md): column names unique as SQLite compares them, counter
 * columns in ascending order. policies: a table may carry its column policies (batch format 3,
 * snapshot format 4). */
bool tsync__dec_tables(tsync__dec *d, uint32_t *ntables, tsync__btable **tables, uint64_t **masks,
                       bool strict, bool policies);
/* Copies a name from the input into a message: at most 40 bytes, non-printable bytes as '?', so
 * a hostile name cannot break a one-line message or a terminal. */
const char *tsync__dec_printable(char out[48], const char *s, uint32_t n);

#endif
