/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/wire.h — the messages two tillsync nodes exchange over ZeroMQ: their types, fields, size
 * limits, encoder and strict decoder. docs/WIRE.md is the byte-level specification, with test
 * vectors; this header is its C face.
 *
 * Design notes
 * - One message is one ZeroMQ frame holding one msgpack array [type, fields...]. Every type has
 *   an exact item count, every field an exact msgpack type, every integer and length its smallest
 *   encoding (what msgpack-c's packer writes), and nothing may follow the array. So a message has
 *   exactly one encoding: a decoded message re-encodes to the very bytes received, which the fuzz
 *   target checks, and a peer that encodes differently is caught at once instead of half-working.
 * - Each type has a hard size limit, checked on the frame length as soon as the type is known and
 *   before any field is read; TSYNC__WIRE_MAX_FRAME (the largest) is what the transport sets as
 *   ZMQ_MAXMSGSIZE, so larger frames never reach us.
 * - Decoding uses the bounded reader of crdt/crdt.h (tsync__mpr), never msgpack-c's unpacker: a
 *   declared count is believed only when the bytes for it are present. Arrays are allocated in
 *   the caller's arena, and the count limits (vector entries, bodies, certificates) keep them
 *   under 4 MiB whatever the frame holds. Variable-length fields point into the input buffer,
 *   which must outlive the decoded message.
 * - This layer checks form, not meaning: certificates, fork proofs and snapshot rows are opaque
 *   bytes here (net/trust and store/ judge them), batch bodies are decoded and their signature
 *   checked by the store with its chain state. What is checked here is what needs no state: sizes,
 *   site id = BLAKE2b-128(pk || incarnation), sorted vectors, clock ranges.
 * - The encoder checks the same invariants as the decoder (they share one function), so a bug in
 *   the sync engine shows up at the sender as TSYNC_EINVAL instead of as a peer that hangs up.
 *
 * THREAD SAFETY: every function is reentrant; a decoded message is read-only and may be shared
 * once decoded, as long as its buffer and arena live.
 */
#ifndef TSYNC_NET_WIRE_H
#define TSYNC_NET_WIRE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

/* The protocol version a node speaks: sent in HELLO (and in the mDNS TXT record). A peer that
 * sends another version gets ERROR TSYNC__WIRE_ERR_VERSION and is disconnected. */
#define TSYNC_WIRE_VERSION 1u

/* Message types (item 0 of every message). 0 is never valid, so a zeroed message cannot be sent
 * by accident. */
typedef enum {
    TSYNC__WIRE_HELLO = 1,
    TSYNC__WIRE_BATCHES = 2,
    TSYNC__WIRE_CERTS = 3,
    TSYNC__WIRE_FORK_PROOF = 4,
    TSYNC__WIRE_ACK = 5,
    TSYNC__WIRE_SNAPSHOT_BEGIN = 6,
    TSYNC__WIRE_SNAPSHOT_CHUNK = 7,
    TSYNC__WIRE_SNAPSHOT_END = 8,
    TSYNC__WIRE_PING = 9,
    TSYNC__WIRE_PONG = 10,
    TSYNC__WIRE_ERROR = 11,
    TSYNC__WIRE_SCHEMA = 12,
} tsync__wire_type;

#define TSYNC__WIRE_TYPE_MIN 1
#define TSYNC__WIRE_TYPE_MAX 12

/* Field limits. */
#define TSYNC__WIRE_CERT_MAX   4096u        /* one certificate or revocation blob */
#define TSYNC__WIRE_VV_MAX     65536u       /* entries of a version vector */
#define TSYNC__WIRE_BODIES_MAX 65536u       /* batch bodies in one BATCHES */
#define TSYNC__WIRE_CERTS_MAX  4096u        /* blobs in one CERTS */
#define TSYNC__WIRE_TEXT_MAX   512u         /* bytes of an ERROR message */
#define TSYNC__WIRE_SCHEMA_MAX (1u << 20)   /* bytes of the table definitions in SCHEMA */
#define TSYNC__WIRE_CLOCK_END  (1ull << 48) /* wall clocks (ms) are below this: HLC's 48-bit ms */
#define TSYNC__WIRE_BULK_EXTRA (64u << 10)  /* room for the fields around one maximal batch */

/* Hard size limits of whole messages, in bytes, per type. A vector of TSYNC__WIRE_VV_MAX entries
 * fits in 4 MiB. BATCHES, FORK_PROOF and SNAPSHOT_CHUNK carry one batch body of up to
 * TSYNC__BATCH_MAX_BYTES (sealing keeps batches far smaller, but any valid batch must travel: one
 * that cannot would stall its origin's chain at every peer) plus room for the fields around it.
 * Senders keep bulk messages near TSYNC__WIRE_SOFT_BYTES and exceed it only with a single large
 * body. */
#define TSYNC__WIRE_MAX_HELLO          (4u << 20)
#define TSYNC__WIRE_MAX_BATCHES        (TSYNC__BATCH_MAX_BYTES + TSYNC__WIRE_BULK_EXTRA)
#define TSYNC__WIRE_MAX_CERTS          (1u << 20)
#define TSYNC__WIRE_MAX_FORK_PROOF     (TSYNC__BATCH_MAX_BYTES + TSYNC__WIRE_BULK_EXTRA)
#define TSYNC__WIRE_MAX_ACK            (4u << 20)
#define TSYNC__WIRE_MAX_SNAPSHOT_BEGIN (4u << 20)
#define TSYNC__WIRE_MAX_SNAPSHOT_CHUNK (TSYNC__BATCH_MAX_BYTES + TSYNC__WIRE_BULK_EXTRA)
#define TSYNC__WIRE_MAX_SNAPSHOT_END   128u
#define TSYNC__WIRE_MAX_PING           64u
#define TSYNC__WIRE_MAX_PONG           64u
#define TSYNC__WIRE_MAX_ERROR          1024u
#define TSYNC__WIRE_MAX_SCHEMA         (TSYNC__WIRE_SCHEMA_MAX + 256u)
#define TSYNC__WIRE_MAX_FRAME          TSYNC__WIRE_MAX_BATCHES /* the largest of the above */
#define TSYNC__WIRE_SOFT_BYTES         (1u << 20)

/* ERROR codes. A receiver treats a code it does not know like TSYNC__WIRE_ERR_PROTOCOL, so new
 * codes need no new protocol version. */
enum {
    TSYNC__WIRE_ERR_PROTOCOL = 1, /* a message was malformed, oversize or not expected now */
    TSYNC__WIRE_ERR_VERSION = 2,  /* the protocol version is not spoken here */
    TSYNC__WIRE_ERR_SHOP = 3,     /* another shop, or enrolled talking to not enrolled */
    TSYNC__WIRE_ERR_CERT = 4,     /* certificate missing, invalid, expired or revoked */
    TSYNC__WIRE_ERR_BUSY = 5,     /* cannot serve this now (load, snapshot in progress): retry */
    TSYNC__WIRE_ERR_SHUTDOWN = 6, /* the node is stopping */
    TSYNC__WIRE_ERR_INTERNAL = 7, /* a local failure (disk, memory) on the sender's side */
};

/* A version vector on the wire: entries sorted by site id, strictly ascending, each seq >= 1
 * (an origin of which nothing is held is left out). A tsync__vv can be sent as {v.e, v.n} once
 * its seq-0 entries are dropped. */
typedef struct {
    const tsync__vv_entry *e;
    size_t n;
} tsync__wire_vv;

typedef struct {
    uint32_t version; /* TSYNC_WIRE_VERSION (0 is taken as it when encoding) */
    bool has_shop;    /* false: the database is not enrolled */
    uint8_t shop[TSYNC__SITE_BYTES];
    uint64_t schema;     /* the sender's schema version */
    const uint8_t *cert; /* NULL: none; present exactly when has_shop */
    size_t cert_len;     /* 1..TSYNC__WIRE_CERT_MAX when present */
    uint64_t clock_ms;   /* the sender's wall clock, Unix ms, < TSYNC__WIRE_CLOCK_END */
    tsync__wire_vv vv;   /* what the sender holds */
} tsync__wire_hello;

/* A contiguous run of one origin's batches, as in a bundle, with the origin's key inline. */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES]; /* = BLAKE2b-128(pk || inc) */
    uint8_t pk[TSYNC__PK_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
    uint64_t first_seq;              /* >= 1 */
    uint8_t prev[TSYNC__HASH_BYTES]; /* hash before the first batch; zero when first_seq is 1 */
    uint32_t nbodies;                /* 1..TSYNC__WIRE_BODIES_MAX */
    const uint8_t *const *body;      /* each 1..TSYNC__BATCH_MAX_BYTES bytes */
    const size_t *body_len;
    uint8_t sig[TSYNC__SIG_BYTES]; /* signature of the last batch */
} tsync__wire_batches;

typedef struct {
    uint32_t n;                 /* 1..TSYNC__WIRE_CERTS_MAX */
    const uint8_t *const *blob; /* certificates and revocations, opaque here */
    const size_t *len;          /* each 1..TSYNC__WIRE_CERT_MAX */
} tsync__wire_certs;

typedef struct {
    const uint8_t *proof; /* a bundle image, opaque here */
    size_t len;           /* >= 1 */
} tsync__wire_fork_proof;

typedef struct {
    tsync__wire_vv vv; /* what the sender now holds */
} tsync__wire_ack;

typedef struct {
    uint8_t id[TSYNC__SITE_BYTES]; /* random, names the transfer */
    uint32_t ntables;
    tsync__wire_vv vv; /* the vector the snapshot is consistent with */
} tsync__wire_snapshot_begin;

typedef struct {
    uint8_t id[TSYNC__SITE_BYTES];
    uint64_t seq;        /* 0, 1, 2 ... */
    const uint8_t *rows; /* a store-encoded chunk, opaque here */
    size_t len;          /* >= 1 */
} tsync__wire_snapshot_chunk;

typedef struct {
    uint8_t id[TSYNC__SITE_BYTES];
    uint64_t nchunks;
    uint8_t hash[TSYNC__HASH_BYTES]; /* BLAKE2b-256 of the rows of chunks 0..nchunks-1 in order */
} tsync__wire_snapshot_end;

typedef struct {
    uint64_t ms; /* chosen by the pinger (its monotonic clock, say); echoed in PONG */
} tsync__wire_ping;

typedef struct {
    uint64_t echo_ms;  /* the PING's ms */
    uint64_t clock_ms; /* the ponger's wall clock, Unix ms, < TSYNC__WIRE_CLOCK_END */
} tsync__wire_pong;

typedef struct {
    uint32_t code;    /* >= 1; TSYNC__WIRE_ERR_* */
    const char *text; /* UTF-8, no control characters, not NUL-terminated */
    size_t len;       /* 0..TSYNC__WIRE_TEXT_MAX */
} tsync__wire_error;

/* The sender's table definitions (store/schema.h's canonical form, opaque here; the store
 * decodes it strictly), sent after HELLO and again when they change. site must be
 * BLAKE2b-128(session key || inc): the receiver checks that. */
typedef struct {
    uint8_t site[TSYNC__SITE_BYTES];
    uint8_t inc[TSYNC__INC_BYTES];
    const uint8_t *defs;
    size_t len; /* 1..TSYNC__WIRE_SCHEMA_MAX */
} tsync__wire_schema;

/* One message. Set type and the member of the same name. */
typedef struct {
    tsync__wire_type type;
    union {
        tsync__wire_hello hello;
        tsync__wire_batches batches;
        tsync__wire_certs certs;
        tsync__wire_fork_proof fork_proof;
        tsync__wire_ack ack;
        tsync__wire_snapshot_begin snapshot_begin;
        tsync__wire_snapshot_chunk snapshot_chunk;
        tsync__wire_snapshot_end snapshot_end;
        tsync__wire_ping ping;
        tsync__wire_pong pong;
        tsync__wire_error error;
        tsync__wire_schema schema;
    };
} tsync__msg;

/* "HELLO", "BATCHES", ... or NULL for an unknown type. Static string. */
const char *tsync__wire_type_name(int type);

/* The size limit of a message of that type in bytes, 0 for an unknown type. */
size_t tsync__wire_limit(int type);

/* The exact size tsync__wire_encode would produce for m (no checks; m must be well formed as far
 * as counts and pointers go). Lets a sender fill a message up to a budget. */
size_t tsync__wire_size(const tsync__msg *m);

/* Encodes m into a new malloc'd buffer (*out, *len; the caller frees it). Checks every invariant
 * the decoder checks, and the type's size limit: TSYNC_EINVAL with a one-line message in err
 * naming the type and field when one does not hold; TSYNC_ENOMEM. */
int tsync__wire_encode(const tsync__msg *m, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);

/* Strictly decodes one frame. Arrays are allocated in a (freed with it); variable-length fields
 * point into buf, which must outlive *out. Errors, with a one-line message in err naming the
 * message type, the field and the problem (*out is zeroed):
 *   TSYNC_EVERSION  unknown message type, or a HELLO of another protocol version;
 *   TSYNC_ECORRUPT  anything else: over the type's limit, wrong type, wrong item count,
 *                   non-canonical encoding, broken invariant, trailing bytes;
 *   TSYNC_ENOMEM    the arena could not grow. */
TSYNC_WARN_UNUSED int tsync__wire_decode(const uint8_t *buf, size_t len, tsync__msg *out,
                                         tsync__arena *a, char err[TSYNC__ERRLEN]);

#endif
