/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/schema.h — the canonical description of the replicated tables' definitions (what tills
 * compare in the handshake and in bundles), its strict decoder, the store of the other tills'
 * definitions, and the comparison. Public side: tillsync/schema.h.
 *
 * THREAD SAFETY: like the store, one thread at a time.
 */
#ifndef TSYNC_STORE_SCHEMA_H
#define TSYNC_STORE_SCHEMA_H

#include <stddef.h>
#include <stdint.h>

#include "crdt/crdt.h"
#include "tillsync/schema.h"

#define TSYNC__SCHEMA_FORMAT     1u
#define TSYNC__SCHEMA_MAX_BYTES  (1u << 20) /* a whole description */
#define TSYNC__SCHEMA_MAX_TABLES 4096u
#define TSYNC__SCHEMA_NAME_MAX   256u /* bytes of a table name, a column name or a declared type */

typedef struct {
    const char *name, *type; /* lower case, not NUL-terminated */
    uint32_t name_len, type_len;
    uint8_t key;     /* 0: not a key column; k: the k-th key column */
    uint8_t counter; /* a PN-counter column */
    uint8_t policy;  /* TSYNC__POLICY_* (crdt/crdt.h): max, min, review, or 0 for LWW */
} tsync__scol;

typedef struct {
    const char *name;
    uint32_t name_len;
    uint32_t ncols; /* 1..TSYNC__MAX_COLS, sorted by name */
    tsync__scol *cols;
} tsync__stable;

typedef struct {
    uint32_t ntables; /* sorted by name */
    tsync__stable *tables;
} tsync__schema;

/* This database's description in canonical form (malloc'd; the caller frees). Errors: TSYNC_EIO,
 * TSYNC_ENOMEM. */
int tsync__schema_encode(tsync_store *s, uint8_t **out, size_t *len);

/* What a SCHEMA message carries: our site id and incarnation (so the receiver can check the site
 * against the session key) and our description (malloc'd; the caller frees). */
int tsync__schema_message(tsync_store *s, uint8_t site[TSYNC__SITE_BYTES],
                          uint8_t inc[TSYNC__INC_BYTES], uint8_t **defs, size_t *len);

/* Strict decoder of a description: canonical form only (format, lower case, sorted, no
 * duplicates, key positions 1..n each once, counters not in the key, valid UTF-8 without control
 * characters), within the limits above, no trailing bytes. Arrays in a; strings point into p.
 * TSYNC_ECORRUPT / TSYNC_EVERSION with err. */
int tsync__schema_decode(const uint8_t *p, size_t n, tsync__schema *out, tsync__arena *a,
                         char err[TSYNC__ERRLEN]);

/* BLAKE2b-256 of a description's bytes. */
void tsync__schema_digest(const uint8_t *p, size_t n, uint8_t out[TSYNC__HASH_BYTES]);

/* One difference (what: one line, NUL-terminated; column NULL for the table itself). */
typedef void (*tsync__schema_diff_fn)(void *ctx, const char *table, const char *column,
                                      const char *what);
/* Calls fn for each difference between here and there, in table then column order. */
void tsync__schema_diff(const tsync__schema *here, const tsync__schema *there,
                        tsync__schema_diff_fn fn, void *ctx);

/* Records the description another till sent (site: its site id; pk: its public key or NULL),
 * after decoding it strictly. *changed (may be NULL) becomes 1 when it differs from what was
 * recorded for that till before (or none was) or our own definitions changed since. Records of
 * our own site are ignored. Opens its own write transaction unless one is open.
 * Errors: TSYNC_ECORRUPT (with the decoder's message), TSYNC_EIO, TSYNC_EBUSY. */
int tsync__schema_record(tsync_store *s, const uint8_t site[TSYNC__SITE_BYTES], const uint8_t *pk,
                         const uint8_t *defs, size_t len, int *changed);

/* tsync_store_schema_mismatches for one till only (site), or every till (site NULL). */
int tsync__schema_mismatches(tsync_store *s, const uint8_t *site, tsync_schema_mismatch_fn fn,
                             void *ctx);

/* tsync_store_merge's part after the merge: runs the signed migrations the bundle's trust records
 * may have brought, records the description the bundle carries, and adds a message to report for
 * each difference when it changed. */
int tsync__schema_from_bundle(tsync_store *s, const tsync__bundle *b, tsync_merge_report *report);

#endif
