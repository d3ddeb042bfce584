/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/sync.c — what the sync engine and bundles read from the log: our version vector, and the
 * batches a peer lacks as signed pieces of runs (store/sync.h).
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "internal.h"
#include "store/sync.h"

int tsync__sync_vv(tsync_store *s, tsync__vv *out)
{
    memset(out, 0, sizeof *out);
    sqlite3_stmt *st = tsync__prep(s, "SELECT site, seq, hash FROM tsync_sites WHERE seq > 0");
    if (!st) return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        const void *h =
            sqlite3_column_bytes(st, 2) == TSYNC__HASH_BYTES ? sqlite3_column_blob(st, 2) : NULL;
        if (tsync__vv_set(out, sqlite3_column_blob(st, 0), (uint64_t)sqlite3_column_int64(st, 1),
                          h))
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read vector");
    sqlite3_reset(st);
    if (rc) tsync__vv_free(out);
    return rc;
}

/* The bodies of the piece being built. */
typedef struct {
    uint8_t **body;
    size_t *len;
    uint32_t n, cap;
    size_t bytes;
} piece_buf;

static void piece_reset(piece_buf *p)
{
    for (uint32_t i = 0; i < p->n; i++) free(p->body[i]);
    p->n = 0;
    p->bytes = 0;
}

static int piece_add(piece_buf *p, const void *body, size_t len)
{
    if (p->n == p->cap) {
        uint32_t cap = p->cap ? p->cap * 2 : 64;
        uint8_t **b = realloc(p->body, cap * sizeof *b);
        if (!b) return TSYNC_ENOMEM;
        p->body = b;
        size_t *l = realloc(p->len, cap * sizeof *l);
        if (!l) return TSYNC_ENOMEM;
        p->len = l;
        p->cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, body, len);
    p->body[p->n] = copy;
    p->len[p->n++] = len;
    p->bytes += len;
    return 0;
}

static void piece_free(piece_buf *p)
{
    piece_reset(p);
    free(p->body);
    free(p->len);
}

/* Where to start sending one origin to a peer holding pe (NULL: nothing of it), given our head
 * and the seq the origin was frozen at (-1: not frozen). */
static int64_t start_for(tsync_store *s, int64_t idx, const tsync__vv_entry *pe, int64_t head,
                         int64_t frozen)
{
    static const uint8_t zero[TSYNC__HASH_BYTES];
    int64_t from = pe ? (int64_t)pe->seq : 0;
    if (pe && from > 0 && from <= head && memcmp(pe->hash, zero, sizeof zero) != 0) {
        /* Same number, different hash: a fork. Send our branch from the last common batch we
         * know of (or from the start) so the peer sees it and merges its rows too. */
        sqlite3_stmt *h = tsync__prep(s, "SELECT hash FROM tsync_log WHERE site=?1 AND seq=?2");
        if (h) {
            sqlite3_bind_int64(h, 1, idx);
            sqlite3_bind_int64(h, 2, from);
            if (sqlite3_step(h) == SQLITE_ROW && sqlite3_column_bytes(h, 0) == TSYNC__HASH_BYTES &&
                memcmp(sqlite3_column_blob(h, 0), pe->hash, TSYNC__HASH_BYTES) != 0)
                from = frozen >= 0 && frozen < from ? frozen : 0;
            sqlite3_reset(h);
        }
    } else if (from > head && frozen >= 0) {
        from = frozen; /* the peer may hold the other branch */
    }
    return from;
}

/* TSYNC__SYNC_BEHIND for a peer holding site up to `have`, below our stub at `horizon` (what the
 * node logs and what a refused bundle says). */
static int behind(const uint8_t *site, int64_t have, int64_t horizon)
{
    char sh[17];
    tsync__hex(site, 8, sh);
    return tsync__err(TSYNC__SYNC_BEHIND,
                      "its vector holds site %s up to batch %lld, below this database's pruned "
                      "horizon (batch %lld): it needs a snapshot",
                      sh, (long long)have, (long long)horizon);
}

/* The batch at `from` (the peer's head) is not in our log. When the next entry above it is a stub
 * (the horizon of a pruned log, or where a snapshot took us over a log that stops short of it), the
 * batches between are gone here: the peer needs a snapshot. A body there is a gap in the log. */
static int behind_or_gap(tsync_store *s, int64_t idx, const uint8_t *site, int64_t from)
{
    sqlite3_stmt *m = tsync__prep(s, "SELECT seq, length(body) FROM tsync_log WHERE site=?1 AND "
                                     "seq>?2 ORDER BY seq LIMIT 1");
    if (!m) return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    sqlite3_bind_int64(m, 1, idx);
    sqlite3_bind_int64(m, 2, from);
    int64_t next = -1, len = -1;
    if (sqlite3_step(m) == SQLITE_ROW) {
        next = sqlite3_column_int64(m, 0);
        len = sqlite3_column_int64(m, 1);
    }
    sqlite3_reset(m);
    if (next > from && len == 0) return behind(site, from, next);
    return tsync__err(TSYNC_ECORRUPT, "log has a gap: batch %lld of an origin is missing",
                      (long long)from);
}

int tsync__sync_runs(tsync_store *s, const tsync__vv *peer, size_t budget, tsync__run_fn emit,
                     void *ctx, int *more)
{
    if (more) *more = 0;
    int own_txn = sqlite3_get_autocommit(s->db);
    int rc;
    /* A read transaction gives one consistent snapshot of the log. */
    if (own_txn && (rc = tsync__exec(s, "BEGIN"))) return rc;
    sqlite3_stmt *sites = NULL, *bodies = NULL;
    piece_buf pb = {0};
    size_t sent = 0;
    rc = 0;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT idx, site, pk, inc, seq, frozen_seq FROM tsync_sites "
                           "WHERE seq > 0 AND pk IS NOT NULL ORDER BY idx",
                           -1, &sites, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db,
                           "SELECT seq, tsync_log_body(site, seq, body), sig, hash FROM "
                           "tsync_log WHERE site=?1 AND seq>?2 "
                           "AND seq<=?3 ORDER BY seq",
                           -1, &bodies, NULL) != SQLITE_OK) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "read log");
        goto out;
    }
    int step;
    while (rc == 0 && (step = sqlite3_step(sites)) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(sites, 0);
        tsync__bsite bs;
        if (sqlite3_column_bytes(sites, 1) != TSYNC__SITE_BYTES ||
            sqlite3_column_bytes(sites, 2) != TSYNC__PK_BYTES ||
            sqlite3_column_bytes(sites, 3) != TSYNC__INC_BYTES)
            continue;
        memcpy(bs.site, sqlite3_column_blob(sites, 1), TSYNC__SITE_BYTES);
        memcpy(bs.pk, sqlite3_column_blob(sites, 2), TSYNC__PK_BYTES);
        memcpy(bs.inc, sqlite3_column_blob(sites, 3), TSYNC__INC_BYTES);
        int64_t head = sqlite3_column_int64(sites, 4);
        int64_t frozen =
            sqlite3_column_type(sites, 5) == SQLITE_NULL ? -1 : sqlite3_column_int64(sites, 5);
        const tsync__vv_entry *pe = peer ? tsync__vv_get(peer, bs.site) : NULL;
        int64_t from = start_for(s, idx, pe, head, frozen);
        if (from >= head) continue;
        if (sent >= budget) {
            if (more) *more = 1;
            break;
        }
        uint8_t prev[TSYNC__HASH_BYTES] = {0};
        if (from > 0) {
            sqlite3_stmt *h = tsync__prep(s, "SELECT hash FROM tsync_log WHERE site=?1 AND seq=?2");
            int ok = h != NULL;
            if (ok) {
                sqlite3_bind_int64(h, 1, idx);
                sqlite3_bind_int64(h, 2, from);
                ok = sqlite3_step(h) == SQLITE_ROW &&
                     sqlite3_column_bytes(h, 0) == TSYNC__HASH_BYTES;
                if (ok) memcpy(prev, sqlite3_column_blob(h, 0), sizeof prev);
                sqlite3_reset(h);
            }
            if (!ok) {
                /* Pruned away (below the stub at the horizon): the peer needs a snapshot, as
                 * for a peer that holds nothing of the origin. Above the horizon it is a gap. */
                rc = behind_or_gap(s, idx, bs.site, from);
                break;
            }
        }
        sqlite3_reset(bodies);
        sqlite3_bind_int64(bodies, 1, idx);
        sqlite3_bind_int64(bodies, 2, from);
        sqlite3_bind_int64(bodies, 3, head);
        int64_t expect = from + 1, first = from + 1;
        piece_reset(&pb);
        while (rc == 0 && (step = sqlite3_step(bodies)) == SQLITE_ROW) {
            int64_t at = sqlite3_column_int64(bodies, 0);
            if (sqlite3_column_bytes(bodies, 1) == 0) {
                /* A stub: batches up to here were pruned (or came as a snapshot). */
                rc = behind(bs.site, from, at);
                break;
            }
            if (at != expect) {
                rc = tsync__err(TSYNC_ECORRUPT, "log has a gap before batch %lld",
                                (long long)expect);
                break;
            }
            if ((rc = piece_add(&pb, sqlite3_column_blob(bodies, 1),
                                (size_t)sqlite3_column_bytes(bodies, 1)))) {
                rc = tsync__err(rc, "out of memory");
                break;
            }
            int signed_here = sqlite3_column_bytes(bodies, 2) == TSYNC__SIG_BYTES;
            int cut = signed_here && (expect == head || pb.bytes >= TSYNC__RUN_PIECE_BYTES ||
                                      pb.n >= TSYNC__RUN_PIECE_BODIES || sent + pb.bytes >= budget);
            if (cut) {
                /* Before our own batches leave: the marker of store/identity.c. */
                if (idx == (int64_t)s->local_idx) tsync__mark_sent(s, (uint64_t)expect);
                tsync__run_piece p = {
                    .site = &bs,
                    .first_seq = (uint64_t)first,
                    .prev = prev,
                    .n = pb.n,
                    .body = (const uint8_t *const *)pb.body,
                    .len = pb.len,
                    .sig = sqlite3_column_blob(bodies, 2),
                    .last = sqlite3_column_blob(bodies, 3),
                    .bytes = pb.bytes,
                };
                if ((rc = emit(ctx, &p))) break;
                sent += pb.bytes;
                memcpy(prev, sqlite3_column_blob(bodies, 3), sizeof prev);
                first = expect + 1;
                piece_reset(&pb);
                if (sent >= budget && expect < head) {
                    if (more) *more = 1;
                    break;
                }
            }
            expect++;
        }
        /* Bodies after the last signed batch (a run still arriving) wait for their signature. */
        if (rc == 0 && more && *more) break;
    }
out:
    piece_free(&pb);
    sqlite3_finalize(sites);
    sqlite3_finalize(bodies);
    if (own_txn) tsync__exec(s, "COMMIT");
    return rc;
}

static int64_t count_of(tsync_store *s, const char *sql)
{
    sqlite3_stmt *st = tsync__prep(s, sql);
    if (!st) return -1;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : -1;
    sqlite3_reset(st);
    return v;
}

int tsync__sync_counts_get(tsync_store *s, tsync__sync_counts *out)
{
    out->held = count_of(s, "SELECT count(*) FROM tsync_held");
    out->parked = count_of(s, "SELECT count(*) FROM tsync_parked");
    out->forks = count_of(s, "SELECT count(*) FROM tsync_forks");
    out->conflicts = count_of(s, "SELECT count(*) FROM tsync_conflicts");
    out->pending = count_of(s, "SELECT count(*) FROM tsync_pending");
    if (out->held < 0 || out->parked < 0 || out->forks < 0 || out->conflicts < 0 ||
        out->pending < 0)
        return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    return 0;
}

int tsync__sync_shop_clock(tsync_store *s, int known, int64_t offset_ms)
{
    return tsync__shop_clock_record(s, known, offset_ms);
}

int tsync__sync_clock_get(tsync_store *s, tsync__sync_clock *out)
{
    memset(out, 0, sizeof *out);
    tsync__hlc h;
    int rc = tsync__hlc_load(s, &h);
    if (!rc) rc = tsync__meta_int(s, "hlc_resets", &out->resets, 0);
    if (!rc) rc = tsync__meta_int(s, "hlc_reset_from", &out->reset_from_ms, 0);
    if (!rc) rc = tsync__meta_int(s, "hlc_reset_at", &out->reset_at_ms, 0);
    out->hlc_ms = tsync__hlc_ms(h);
    out->skew_bound_ms = s->skew_bound_ms;
    return rc;
}

int tsync__sync_held_get(tsync_store *s, tsync__sync_held *out, int max)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT count(*), (SELECT reason FROM tsync_held i WHERE "
                                      "i.site=h.site ORDER BY seq LIMIT 1) FROM tsync_held h "
                                      "GROUP BY site ORDER BY site");
    if (!st) return TSYNC_EIO;
    int n = 0, rc;
    while (n < max && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        out[n].count = sqlite3_column_int64(st, 0);
        const char *r = (const char *)sqlite3_column_text(st, 1);
        snprintf(out[n].reason, sizeof out[n].reason, "%s", r ? r : "");
        n++;
    }
    sqlite3_reset(st);
    return n;
}

int tsync__sync_changed(tsync_store *s)
{
    sqlite3_stmt *st = tsync__prep(s, "PRAGMA data_version");
    if (!st) return TSYNC_EIO;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return tsync__err_sqlite(s->db, rc, "read data version");
    }
    int64_t v = sqlite3_column_int64(st, 0);
    sqlite3_reset(st);
    int changed = !s->data_version_seen || v != s->data_version;
    s->data_version = v;
    s->data_version_seen = 1;
    return changed;
}

int tsync__sync_device_keys(tsync_store *s, uint8_t **keys, size_t *n)
{
    *keys = NULL;
    *n = 0;
    sqlite3_stmt *st;
    /* The trust tables exist only once trust was used; no table means no keys. */
    if (sqlite3_prepare_v2(s->db,
                           "SELECT DISTINCT device_pk FROM tsync_certs WHERE device_pk NOT IN "
                           "(SELECT device_pk FROM tsync_revocations) ORDER BY device_pk",
                           -1, &st, NULL) != SQLITE_OK)
        return 0;
    size_t cap = 0;
    int rc = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__PK_BYTES ||
            memcmp(sqlite3_column_blob(st, 0), s->pk, TSYNC__PK_BYTES) == 0)
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 8;
            uint8_t *k = realloc(*keys, cap * TSYNC__PK_BYTES);
            if (!k) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            *keys = k;
        }
        memcpy(*keys + *n * TSYNC__PK_BYTES, sqlite3_column_blob(st, 0), TSYNC__PK_BYTES);
        (*n)++;
    }
    sqlite3_finalize(st);
    if (rc) {
        free(*keys);
        *keys = NULL;
        *n = 0;
    }
    return rc;
}

const uint8_t *tsync__sync_secret_key(tsync_store *s)
{
    return s->sk;
}

const uint8_t *tsync__sync_public_key(tsync_store *s)
{
    return s->pk;
}

uint64_t tsync__sync_schema(tsync_store *s)
{
    /* The highest applied migration (store/migrate.c); no migrations table: version 0. */
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db, "SELECT max(number) FROM tsync_migrations", -1, &st, NULL) !=
        SQLITE_OK)
        return 0;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_finalize(st);
    return v > 0 ? (uint64_t)v : 0;
}

/* ---------------------------------------------------------------- WAL checkpoints off the commit
 * path: SQLite's automatic checkpoint runs inside whichever commit crosses the threshold, and costs
 * 10-20 ms there; a merge that pays it delays every sale it carries. */

struct tsync__ckpt {
    pthread_t th;
    sqlite3 *db;
    atomic_int stop;
    int period_ms;
};

static void *ckpt_main(void *arg)
{
    struct tsync__ckpt *c = arg;
    while (!atomic_load(&c->stop)) {
        struct timespec ts = {c->period_ms / 1000, (long)(c->period_ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
        sqlite3_exec(c->db, "PRAGMA wal_checkpoint(PASSIVE)", NULL, NULL, NULL);
    }
    return NULL;
}

void tsync__sync_busy_timeout(tsync_store *s, int ms)
{
    sqlite3_busy_timeout(s->db, ms);
}

int tsync__sync_ckpt_start(tsync_store *s, int period_ms, tsync__ckpt **out)
{
    *out = NULL;
    struct tsync__ckpt *c = calloc(1, sizeof *c);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->period_ms = period_ms > 0 ? period_ms : 100;
    if (sqlite3_open_v2(s->path, &c->db, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        int rc = tsync__err(TSYNC_EIO, "%s: cannot open for checkpoints: %s", s->path,
                            sqlite3_errmsg(c->db));
        sqlite3_close(c->db);
        free(c);
        return rc;
    }
    sqlite3_busy_timeout(c->db, 0); /* PASSIVE never waits anyway */
    if (pthread_create(&c->th, NULL, ckpt_main, c) != 0) {
        sqlite3_close(c->db);
        free(c);
        return tsync__err(TSYNC_ERROR, "cannot start the checkpoint thread");
    }
    sqlite3_exec(s->db, "PRAGMA wal_autocheckpoint=0", NULL, NULL, NULL);
    *out = c;
    return 0;
}

void tsync__sync_ckpt_stop(tsync_store *s, tsync__ckpt *c)
{
    if (!c) return;
    atomic_store(&c->stop, 1);
    pthread_join(c->th, NULL);
    sqlite3_close(c->db);
    free(c);
    if (s) sqlite3_exec(s->db, "PRAGMA wal_autocheckpoint=1000", NULL, NULL, NULL);
}

int tsync__sync_fork_proofs(tsync_store *s, int64_t after_id,
                            int (*each)(void *ctx, int64_t id, const uint8_t *proof, size_t len),
                            void *ctx)
{
    sqlite3_stmt *st =
        tsync__prep(s, "SELECT id, proof FROM tsync_forks WHERE id > ?1 ORDER BY id");
    if (!st) return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    sqlite3_bind_int64(st, 1, after_id);
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW)
        rc = each(ctx, sqlite3_column_int64(st, 0), sqlite3_column_blob(st, 1),
                  (size_t)sqlite3_column_bytes(st, 1));
    sqlite3_reset(st);
    return rc;
}
