/* SPDX-License-Identifier: Apache-2.0 */
/*
 * codec/relay.h — the messages between a till and a blind relay (docs/RELAY.md, "Protocol"):
 * RHELLO (who the till is: its shop and certificate chain), RHAVE (what the relay holds per
 * origin), RPUT (envelopes to store), RGET / RENV (envelopes asked for and served), RACK, RERR
 * (a refusal: a reason code and one line) and RTRUST (the shop's public revocation records).
 *
 * Design notes
 * - Every message is one msgpack array [type, ...], canonical, like the node's wire protocol; the
 *   decoder refuses any other encoding, wrong types, out-of-range values and trailing bytes, so a
 *   message has exactly one byte string and re-encodes to it.
 * - An envelope is {origin site, first_seq, last_seq, bytes}: the bytes are opaque here (the
 *   encrypted envelope codec is another module's); only the index fields are read.
 * - The protocol version travels in RHELLO; a relay answers another version with RERR VERSION.
 * - Decoded messages point into the input buffer; lists live in an arena freed as one.
 *
 * THREAD SAFETY: every function is reentrant.
 */
#ifndef TSYNC_CODEC_RELAY_H
#define TSYNC_CODEC_RELAY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "codec/codec.h"

#define TSYNC__RELAY_PROTO 1u /* the version RHELLO carries */

/* Limits (a message also stays under the transport's 16 MiB + 64 KiB). */
#define TSYNC__RELAY_ENV_MAX    (16u << 20) /* bytes of one envelope */
#define TSYNC__RELAY_MSG_MAX    ((16u << 20) + (64u << 10))
#define TSYNC__RELAY_CHAIN_MAX  16u   /* records in a RHELLO chain */
#define TSYNC__RELAY_REC_MAX    4096u /* bytes of one trust record (TSYNC__TRUST_MAX_BYTES) */
#define TSYNC__RELAY_TRUST_MAX  256u  /* records in one RTRUST */
#define TSYNC__RELAY_LINE_MAX   200u  /* bytes of an RERR line */
#define TSYNC__RELAY_SHOP_BYTES 16u

typedef enum {
    TSYNC__R_HELLO = 1,
    TSYNC__R_HAVE = 2,
    TSYNC__R_PUT = 3,
    TSYNC__R_GET = 4,
    TSYNC__R_ENV = 5,
    TSYNC__R_ACK = 6,
    TSYNC__R_ERR = 7,
    TSYNC__R_TRUST = 8,
    /* The vault (docs/RELAY.md, "The vault"): backup files in chunks. */
    TSYNC__R_VHAVE = 9,    /* till -> relay: which chunks of a backup do you hold? */
    TSYNC__R_VHELD = 10,   /* relay -> till: these */
    TSYNC__R_VPUT = 11,    /* till -> relay: one chunk */
    TSYNC__R_VCOMMIT = 12, /* till -> relay: the backup is whole (relay checks the hash) */
    TSYNC__R_VLIST = 13,   /* till -> relay: the shop's committed backups? */
    TSYNC__R_VLISTED = 14, /* relay -> till: these */
    TSYNC__R_VGET = 15,    /* till -> relay: one chunk of a committed backup */
    TSYNC__R_VCHUNK = 16,  /* relay -> till: it */
    TSYNC__R_VDEL = 17,    /* till -> relay: delete a backup */
} tsync__rtype;
#define TSYNC__R_MAXTYPE 17u

/* RERR reason codes (stable: they are on the wire and in the relay's counters). */
typedef enum {
    TSYNC__RERR_VERSION = 1,      /* RHELLO of another protocol version */
    TSYNC__RERR_MALFORMED = 2,    /* a message that does not decode */
    TSYNC__RERR_UNKNOWN_SHOP = 3, /* the certificate's admin key is not admitted */
    TSYNC__RERR_BAD_CERT = 4,     /* no valid certificate of the session's key in the chain */
    TSYNC__RERR_EXPIRED = 5,      /* the certificate is expired or not yet valid */
    TSYNC__RERR_REVOKED = 6,      /* a revocation of the till's key is stored */
    TSYNC__RERR_QUOTA = 7,        /* storing the envelopes would pass the shop's quota */
    TSYNC__RERR_PROTOCOL = 8,     /* a message out of order (anything before RHELLO, ...) */
    TSYNC__RERR_INTERNAL = 9,     /* the relay's store failed */
    TSYNC__RERR_ADMISSION = 10,   /* the shop's admission expired */
    TSYNC__RERR_SHOP_ID = 11,     /* the certificate names another shop than the one admitted */
    TSYNC__RERR_BAD_TRUST = 12,   /* an RTRUST record that is not a revocation of the shop */
    TSYNC__RERR_NOT_FOUND = 13,   /* vault: no such backup or chunk */
    TSYNC__RERR_BAD_HASH = 14,    /* vault: a chunk or a whole backup does not match its hash */
} tsync__rerr_code;
#define TSYNC__RERR_MAXCODE 14u

/* The short name of a reason ("quota"), or NULL for an unknown code. */
const char *tsync__rerr_name(uint32_t code);

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t first_seq, last_seq; /* 1 <= first_seq <= last_seq */
    const uint8_t *bytes;         /* 1..TSYNC__RELAY_ENV_MAX bytes, opaque */
    size_t len;
} tsync__renv;

typedef struct {
    uint64_t first, last; /* 1 <= first <= last */
} tsync__rrange;

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint32_t nranges; /* >= 1, sorted, disjoint and not touching (merged) */
    tsync__rrange *ranges;
} tsync__rhave_origin;

typedef struct {
    const uint8_t *p;
    size_t len;
} tsync__rblob;

/* Vault limits: a chunk is 1 MiB (the last one of a backup 1..1 MiB), a backup at most 65536
 * chunks (64 GiB), a listing at most 4096 backups. */
#define TSYNC__VAULT_ID_BYTES   16u
#define TSYNC__VAULT_HASH_BYTES 32u
#define TSYNC__VAULT_CHUNK      (1u << 20)
#define TSYNC__VAULT_MAX_CHUNKS 65536u
#define TSYNC__VAULT_LIST_MAX   4096u

/* A committed backup as RVCOMMIT names it and RVLISTED lists it. */
typedef struct {
    uint8_t id[TSYNC__VAULT_ID_BYTES];
    uint64_t nchunks;                      /* 1..VAULT_MAX_CHUNKS */
    uint64_t size;                         /* (nchunks - 1) MiB < size <= nchunks MiB */
    uint8_t hash[TSYNC__VAULT_HASH_BYTES]; /* BLAKE2b-256 of the whole file */
    uint64_t created_ms;
    uint8_t origin[TSYNC__SITE_BYTES]; /* the site that made it */
    uint64_t epoch;                    /* data-key epoch, 1..2^32-1 */
} tsync__rvbackup;

/* Any message; which fields count depends on type. */
typedef struct {
    uint32_t type; /* tsync__rtype */
    uint64_t req;  /* PUT, GET, ENV, ACK, ERR, TRUST: the request id an answer echoes */
    /* HELLO */
    uint64_t version;
    uint8_t shop_id[TSYNC__RELAY_SHOP_BYTES];
    uint32_t nrecs; /* HELLO: the chain (1..CHAIN_MAX); TRUST: records (1..TRUST_MAX) */
    tsync__rblob *recs;
    /* HAVE */
    uint32_t norigins; /* origins sorted by id, each once */
    tsync__rhave_origin *origins;
    /* PUT (1..), ENV (0..) */
    uint32_t nenvs;
    tsync__renv *envs;
    bool more; /* ENV: more envelopes follow from the last one's last_seq + 1 */
    /* GET */
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t from_seq;  /* >= 1 */
    uint64_t max_bytes; /* >= 1: envelope bytes in one RENV (at least one envelope is sent) */
    /* ACK */
    uint64_t stored, dup;
    /* ERR */
    uint32_t code; /* 1..255 */
    const char *line;
    uint32_t line_len; /* 1..LINE_MAX, no control characters */
    /* The vault. VHAVE, VPUT, VGET, VCHUNK, VDEL: backup id; VCOMMIT: vb (its id too). */
    uint8_t backup_id[TSYNC__VAULT_ID_BYTES];
    uint64_t index;                        /* VPUT, VGET, VCHUNK: chunk index */
    uint8_t hash[TSYNC__VAULT_HASH_BYTES]; /* VPUT, VCHUNK: BLAKE2b-256 of the chunk */
    const uint8_t *chunk;                  /* VPUT, VCHUNK: 1..VAULT_CHUNK bytes */
    size_t chunk_len;
    uint32_t nheld; /* VHELD: chunk indexes held, ascending, each once */
    uint64_t *held;
    tsync__rvbackup vb; /* VCOMMIT */
    uint32_t nbackups;  /* VLISTED: 0..VAULT_LIST_MAX, by created_ms then id */
    tsync__rvbackup *backups;
} tsync__rmsg;

/* Fills *m with the RHELLO of this protocol version that a till of shop_id says: its chain is
 * the till's certificate alone (cert, cert_len bytes), held in *chain. m and chain borrow cert
 * and must not outlive it. The one builder of RHELLO (the node's live session, the blocking
 * client of the vault, tests). */
void tsync__relay_hello(tsync__rmsg *m, tsync__rblob *chain,
                        const uint8_t shop_id[TSYNC__RELAY_SHOP_BYTES], const uint8_t *cert,
                        size_t cert_len);

/* Encodes m (malloc'd *out, the caller frees). Checks what the decoder checks.
 * Errors: TSYNC_EINVAL (with a one-line message in err), TSYNC_ENOMEM. */
int tsync__relay_encode(const tsync__rmsg *m, uint8_t **out, size_t *len, char err[TSYNC__ERRLEN]);

/* Strictly decodes one message (at most TSYNC__RELAY_MSG_MAX bytes); lists in a, bytes in buf.
 * Errors: TSYNC_ECORRUPT (one-line message in err), TSYNC_ENOMEM. */
TSYNC_WARN_UNUSED int tsync__relay_decode(const uint8_t *buf, size_t len, tsync__rmsg *out,
                                          tsync__arena *a, char err[TSYNC__ERRLEN]);

#endif
