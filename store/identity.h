/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/identity.h — what the node reads of rollback detection (store/identity.c): how many times
 * this database found its own log gone back (an old copy written over it) and took a new
 * incarnation, and the last such event, for status and the log.
 */
#ifndef TSYNC_STORE_IDENTITY_H
#define TSYNC_STORE_IDENTITY_H

#include <stdint.h>

#include "tillsync/store.h"

/* Incarnations this handle took since it was opened (the node logs each new one). */
unsigned tsync__identity_renewals(tsync_store *s);

/* Rollbacks recorded in the database, and the last as a JSON object (malloc'd; NULL when none):
 * at_ms, detected_by ("marker" or "peer"), old_site, new_site, log_seq (this till's head then),
 * seen_seq (the highest own batch the marker or a peer knew). 0 or TSYNC_EIO. */
int tsync__identity_rollbacks(tsync_store *s, int64_t *count, char **last_json);

#endif
