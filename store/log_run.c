/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/log_run.c — received runs kept in the log as one compact row per run, and
 * tsync_log_body(), which gives every reader of the log the body it read before
 * (store/logrun_int.h).
 *
 * Design notes
 * - The live shape merges 100k one-sale batches: one whole body per tsync_log row wrote ~13 MB
 *   (and checkpointed it) for a 0.8 MB delta. A run row holds the same bodies in codec/compact.h's
 *   form, a fraction of that; the per-batch rows keep seq, hash and signature, so the chain, the
 *   stubs of the horizon and the counts are read as before.
 * - tsync_log_body() decodes a run once and keeps it: readers go through a run in seq order
 *   (serving peers, fork proofs), so each run is rebuilt once per pass. The cache is keyed by the
 *   run row's rowid, origin, first seq, count and length, looked up at every call, so a rolled
 *   back or pruned run is never served from it.
 */
#include <stdlib.h>
#include <string.h>

#include "codec/compact.h"
#include "logrun_int.h"
#include "prep_int.h"

struct tsync__logrun {
    sqlite3 *db;
    sqlite3_stmt *find, *data, *origin;
    tsync__crun_dec *dec;
    int valid;
    int64_t rowid, site, first, n, dlen;
    const uint8_t *const *body;
    const size_t *len;
};

static int prep(tsync__logrun *lr, sqlite3_stmt **st, const char *sql)
{
    if (*st) {
        sqlite3_reset(*st);
        sqlite3_clear_bindings(*st);
        return 0;
    }
    return sqlite3_prepare_v2(lr->db, sql, -1, st, NULL) == SQLITE_OK ? 0 : -1;
}

/* Rebuilds the run holding (site, seq) into the cache. 0, or -1 with msg set. */
static int load(tsync__logrun *lr, int64_t site, int64_t seq, const char **msg)
{
    *msg = "tsync_log_body: cannot read tsync_log_runs";
    if (prep(lr, &lr->find,
             "SELECT rowid, first_seq, n, length(data) FROM tsync_log_runs WHERE site=?1 AND "
             "first_seq<=?2 ORDER BY first_seq DESC LIMIT 1"))
        return -1;
    sqlite3_bind_int64(lr->find, 1, site);
    sqlite3_bind_int64(lr->find, 2, seq);
    if (sqlite3_step(lr->find) != SQLITE_ROW) {
        sqlite3_reset(lr->find);
        *msg = "tsync_log_body: a batch of the log is in no run";
        return -1;
    }
    int64_t rowid = sqlite3_column_int64(lr->find, 0), first = sqlite3_column_int64(lr->find, 1),
            n = sqlite3_column_int64(lr->find, 2), dlen = sqlite3_column_int64(lr->find, 3);
    sqlite3_reset(lr->find);
    if (seq >= first + n || n <= 0 || n > UINT32_MAX) {
        *msg = "tsync_log_body: a batch of the log is in no run";
        return -1;
    }
    if (lr->valid && lr->rowid == rowid && lr->site == site && lr->first == first && lr->n == n &&
        lr->dlen == dlen)
        return 0;
    lr->valid = 0;
    uint8_t origin[TSYNC__SITE_BYTES];
    if (prep(lr, &lr->origin, "SELECT site FROM tsync_sites WHERE idx=?1")) return -1;
    sqlite3_bind_int64(lr->origin, 1, site);
    int ok = sqlite3_step(lr->origin) == SQLITE_ROW &&
             sqlite3_column_bytes(lr->origin, 0) == TSYNC__SITE_BYTES;
    if (ok) memcpy(origin, sqlite3_column_blob(lr->origin, 0), TSYNC__SITE_BYTES);
    sqlite3_reset(lr->origin);
    if (!ok) {
        *msg = "tsync_log_body: the origin of a run is not in tsync_sites";
        return -1;
    }
    if (prep(lr, &lr->data, "SELECT data FROM tsync_log_runs WHERE rowid=?1")) return -1;
    sqlite3_bind_int64(lr->data, 1, rowid);
    if (sqlite3_step(lr->data) != SQLITE_ROW) {
        sqlite3_reset(lr->data);
        return -1;
    }
    if (!lr->dec && !(lr->dec = tsync__crun_dec_new())) {
        sqlite3_reset(lr->data);
        *msg = "tsync_log_body: out of memory";
        return -1;
    }
    char e[TSYNC__ERRLEN];
    int rc = tsync__crun_decode(lr->dec, origin, (uint64_t)first, (uint32_t)n,
                                sqlite3_column_blob(lr->data, 0),
                                (size_t)sqlite3_column_bytes(lr->data, 0), &lr->body, &lr->len, e);
    sqlite3_reset(lr->data);
    if (rc) {
        *msg = rc == TSYNC_ENOMEM ? "tsync_log_body: out of memory"
                                  : "tsync_log_body: a run of the log is corrupt";
        return -1;
    }
    lr->valid = 1;
    lr->rowid = rowid, lr->site = site, lr->first = first, lr->n = n, lr->dlen = dlen;
    return 0;
}

static void fn_body(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
    (void)argc;
    sqlite3_value *bv = argv[2];
    if (sqlite3_value_type(bv) != SQLITE_BLOB || sqlite3_value_bytes(bv) != 1 ||
        *(const uint8_t *)sqlite3_value_blob(bv) != TSYNC__LOG_IN_RUN) {
        sqlite3_result_value(ctx, bv);
        return;
    }
    tsync__logrun *lr = sqlite3_user_data(ctx);
    int64_t site = sqlite3_value_int64(argv[0]), seq = sqlite3_value_int64(argv[1]);
    const char *msg;
    if (load(lr, site, seq, &msg)) {
        sqlite3_result_error(ctx, msg, -1);
        return;
    }
    size_t i = (size_t)(seq - lr->first);
    sqlite3_result_blob64(ctx, lr->body[i], lr->len[i], SQLITE_TRANSIENT);
}

tsync__logrun *tsync__logrun_attach(sqlite3 *db)
{
    tsync__logrun *lr = calloc(1, sizeof *lr);
    if (!lr) return NULL;
    lr->db = db;
    if (sqlite3_create_function_v2(db, "tsync_log_body", 3, SQLITE_UTF8, lr, fn_body, NULL, NULL,
                                   NULL) != SQLITE_OK) {
        free(lr);
        return NULL;
    }
    return lr;
}

void tsync__logrun_detach(tsync__logrun *lr)
{
    if (!lr) return;
    sqlite3_finalize(lr->find);
    sqlite3_finalize(lr->data);
    sqlite3_finalize(lr->origin);
    sqlite3_create_function_v2(lr->db, "tsync_log_body", 3, SQLITE_UTF8, NULL, NULL, NULL, NULL,
                               NULL);
    tsync__crun_dec_free(lr->dec);
    free(lr);
}

int tsync__logrun_store(tsync_store *s, int64_t site_idx, uint64_t first_seq, uint32_t n,
                        const uint8_t *data, size_t dlen)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st,
                                 "INSERT INTO tsync_log_runs(site, first_seq, n, data) "
                                 "VALUES(?1, ?2, ?3, ?4)",
                                 "append run to log");
    if (rc == 0) {
        sqlite3_bind_int64(st, 1, site_idx);
        sqlite3_bind_int64(st, 2, (int64_t)first_seq);
        sqlite3_bind_int64(st, 3, n);
        sqlite3_bind_blob64(st, 4, data, dlen, SQLITE_STATIC);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        rc = rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "append run to log");
    }
    return rc;
}

int tsync__logrun_prune(tsync_store *s, int64_t site_idx, uint64_t from)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(s, &st,
                                 "DELETE FROM tsync_log_runs WHERE site=?1 AND first_seq + n <= ?2",
                                 "prune the log's runs");
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, site_idx);
    sqlite3_bind_int64(st, 2, (int64_t)from);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "prune the log's runs");
}
