/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tillsync/conflicts.h — the conflict journal a person works through: list the concurrent field
 * writes last-writer-wins resolved (page by page, open ones only), resolve one (keep the winner,
 * take the other value, or enter a value), dismiss many. A resolution replicates: every till that
 * recorded the same collision shows it resolved, by whom, how and when (docs/DATA_MODEL.md,
 * "Conflicts").
 *
 * THREAD SAFETY: like the store, one thread at a time per store.
 */
#ifndef TILLSYNC_CONFLICTS_H
#define TILLSYNC_CONFLICTS_H

#include "tillsync/common.h"
#include "tillsync/store.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Resolved journal entries older than this are dropped by pruning (tsync_store_prune, the node's
 * duties); open ones are never dropped. */
#define TSYNC_CONFLICTS_KEEP_DAYS 30

/* How a conflict is resolved (tsync_store_conflict_resolve). */
enum {
    TSYNC_RESOLVE_KEEP = 1,       /* keep the value last-writer-wins chose; nothing is written */
    TSYNC_RESOLVE_TAKE_OTHER = 2, /* write the overwritten value again, as a new local write */
    TSYNC_RESOLVE_VALUE = 3       /* write the value given, as a new local write */
};

/* The SQL types of a tsync_value. */
enum {
    TSYNC_VALUE_NULL = 0,
    TSYNC_VALUE_INTEGER = 1,
    TSYNC_VALUE_REAL = 2,
    TSYNC_VALUE_TEXT = 3,
    TSYNC_VALUE_BLOB = 4
};

/* A value as SQLite stores it: type, then i (INTEGER), r (REAL) or data/len (TEXT in UTF-8 without
 * its NUL, BLOB). Borrowed for the call. The column's affinity applies as to any UPDATE (TEXT '5'
 * written into an INTEGER column is stored as 5). */
typedef struct {
    int32_t type; /* TSYNC_VALUE_* */
    int64_t i;
    double r;
    const void *data;
    size_t len;
} tsync_value;

/* The journal as a JSON array in *out (the caller frees it with tsync_free): the entries with an
 * id above since_id, in id order, at most limit of them (0: all), only the open ones when
 * open_only. Each entry: "id", "cid" (the conflict's identity, hex, the same on every till that
 * recorded it; null for entries recorded before it existed), "at_ms" (when this till recorded
 * it), "table", "key" (array), "column", "kind" ("lww": last-writer-wins chose; "review": a
 * column whose concurrent writes wait for a person), "winner" and "loser" ({"value", "hlc",
 * "time_ms", "site", "till": the device name from the trust set's certificates, else the site id in
 * hex}), "open" (bool) and "resolved" (null, or {"how": "keep"|"take"|"value"|"dismissed", "value"
 * (the value written, for take and value), "site", "till", "at_ms"}). A page that is full ends
 * before the next entry: ask again with since_id = the last id. Errors: TSYNC_EIO. */
TSYNC_API int tsync_store_conflicts_list_json(char **out, tsync_store *s, int64_t since_id,
                                              size_t limit, int open_only);

/* How many entries the journal holds (*total) and how many of them are open (*open); either may
 * be NULL. Errors: TSYNC_EIO. */
TSYNC_API int tsync_store_conflicts_count(int64_t *open, int64_t *total, tsync_store *s);

/* Resolves journal entry id: how is TSYNC_RESOLVE_KEEP, _TAKE_OTHER or _VALUE (value: the value to
 * write; ignored otherwise). Taking or entering a value updates the row's column through the
 * replicated table, so it is captured, sealed and wins on every till by the usual rules; the
 * resolution (how, this till, when) is written in the same transaction and replicates with it.
 * Errors: TSYNC_ENOTFOUND (no entry id; the table or column is not replicated here; the row was
 * deleted), TSYNC_EINVAL (already resolved; a bad how; value NULL for TSYNC_RESOLVE_VALUE; the
 * column is part of the key), TSYNC_EIO. */
TSYNC_API int tsync_store_conflict_resolve(tsync_store *s, int64_t id, int32_t how,
                                           const tsync_value *value);

/* Dismisses entries (resolved as "dismissed", the winner kept): the n ids of ids, or, with ids
 * NULL, every open entry. All or nothing: an unknown id is TSYNC_ENOTFOUND, an id already resolved
 * TSYNC_EINVAL, and then nothing is dismissed. *dismissed (may be NULL) says how many were (an
 * entry this call resolved already, its id given twice, counts once).
 * Errors: also TSYNC_EIO. */
TSYNC_API int tsync_store_conflicts_dismiss(tsync_store *s, const int64_t *ids, size_t n,
                                            size_t *dismissed);

#ifdef __cplusplus
}
#endif
#endif
