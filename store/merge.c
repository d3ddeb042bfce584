/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/merge.c — admitting batches from other sites: verification, the hash chain, holding,
 * forks, revoked devices' kept batches, and the merge transaction (store/merge_apply.c folds the
 * rows, store/rowwrite.c writes them, store/unpark.c re-applies parked changes).
 *
 * Design notes
 * - Two phases. First every body of the bundle is checked (tsync__batch_check) and every run's
 *   hash chain and last signature verified, without touching the database: a bundle with a
 *   flipped byte, a bad signature or a broken chain is refused whole and changes nothing. Only
 *   each batch's clock and dependencies are kept. Then, in one BEGIN IMMEDIATE transaction, local
 *   changes are sealed, and the batches are applied in causal order, each decoded as it applies
 *   (memory stays bounded: store/merge_apply.c).
 * - A batch applies when it is the next of its origin, its prev hash matches our head, its
 *   dependencies (the author's vector delta) are met and its clock is not too far ahead. Otherwise
 *   it is held in tsync_held (verified already) and retried at every merge.
 * - Capture triggers are switched off for this connection only (SQLITE_DBCONFIG_ENABLE_TRIGGER)
 *   while merging; every other connection keeps capturing.
 * - Applied batches are queued (up to TSYNC__MERGE_LOGQ_RUN, the most bodies a run piece holds)
 *   and reach the log when the queue is flushed: each stretch of one origin's consecutive batches
 *   as one run row in tsync_log_runs (store/log_run.c: the live shape's 100k one-sale batches
 *   wrote ~13 MB of whole bodies, and a checkpoint of them, for a 0.8 MB delta), then their
 *   tsync_log rows (seq, hash, signature, the body X'c1') TSYNC__MERGE_LOGQ (32) at a time, one
 *   INSERT for all, in the order they applied, so the rows and their ids are what one INSERT per
 *   batch gave. The queue is flushed before anything that may read the log (a duplicate's stored
 *   hash, a fork, a revoked device's kept batches, a held batch), and at the end of apply_ready.
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "logrun_int.h"
#include "merge_int.h"
#include "prep_int.h"
#include "store/schema.h"
#include "store/sync.h"
#include "store/trust.h"

/* ---------------------------------------------------------------- log, held, forks */

/* One statement appends TSYNC__MERGE_LOGQ batches: the live shape applies 100k one-sale batches,
 * and a statement per batch cost more than the rows it wrote (step, reset, binding, halting). */
#define LOG_V1  "(?,?,?,?,?)"
#define LOG_V2  LOG_V1 "," LOG_V1
#define LOG_V4  LOG_V2 "," LOG_V2
#define LOG_V8  LOG_V4 "," LOG_V4
#define LOG_V16 LOG_V8 "," LOG_V8
#define LOG_V32 LOG_V16 "," LOG_V16
static const char LOG_ONE[] = "INSERT INTO tsync_log(site, seq, hash, body, sig) VALUES" LOG_V1;
static const char LOG_MANY[] = "INSERT INTO tsync_log(site, seq, hash, body, sig) VALUES" LOG_V32;

/* Writes each received run of at least TSYNC__LOGRUN_MIN batches the queue holds whole, in the
 * compact form it came in, as one run row (store/log_run.c), and marks its batches in_run. Any
 * other batch keeps its body in its row: encoding bodies anew would cost more than it saves. */
static int log_runs(mctx *c)
{
    int rc = 0;
    for (size_t i = 0, j; rc == 0 && i < c->nlogq; i = j) {
        const inbatch *a = c->logq[i];
        const tsync__brun *run = a->run;
        for (j = i + 1; j < c->nlogq && run && !a->from_held && !c->logq[j]->from_held &&
                        c->logq[j]->run == run && c->logq[j]->seq == a->seq + (j - i);
             j++)
            ;
        if (!run || !run->crun || j - i < TSYNC__LOGRUN_MIN || a->seq != run->first_seq ||
            j - i != run->nbodies)
            continue;
        rc = tsync__logrun_store(c->s, a->site, a->seq, run->nbodies, run->crun, run->crun_len);
        for (size_t k = i; rc == 0 && k < j; k++) c->logq[k]->in_run = 1;
    }
    return rc;
}

/* Appends the queued batches to tsync_log, in the order they applied (so their ids are what one
 * statement per batch gave). Called before anything that may read the log and at the end. */
static int log_flush(mctx *c)
{
    _Static_assert(TSYNC__MERGE_LOGQ_RUN == sizeof c->logq / sizeof *c->logq, "log queue size");
    static const uint8_t in_run[1] = {TSYNC__LOG_IN_RUN};
    size_t i = 0;
    int rc = log_runs(c);
    if (rc) return rc;
    while (i < c->nlogq) {
        int many = c->nlogq - i >= TSYNC__MERGE_LOGQ;
        size_t k = many ? TSYNC__MERGE_LOGQ : 1;
        sqlite3_stmt *st;
        rc = tsync__prep_or_fail(c->s, &st, many ? LOG_MANY : LOG_ONE, "append to log");
        if (rc) return rc;
        for (size_t j = 0; j < k; j++) {
            const inbatch *ib = c->logq[i + j];
            int p = (int)(5 * j);
            sqlite3_bind_int64(st, p + 1, ib->site);
            sqlite3_bind_int64(st, p + 2, (int64_t)ib->seq);
            sqlite3_bind_blob(st, p + 3, ib->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
            if (ib->in_run)
                sqlite3_bind_blob(st, p + 4, in_run, 1, SQLITE_STATIC);
            else
                sqlite3_bind_blob(st, p + 4, ib->body, (int)ib->body_len, SQLITE_STATIC);
            if (ib->sig) sqlite3_bind_blob(st, p + 5, ib->sig, TSYNC__SIG_BYTES, SQLITE_STATIC);
        }
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(c->s->db, rc, "append to log");
        i += k;
    }
    c->nlogq = 0;
    return 0;
}

/* Queues ib for the log (log_flush); a batch that was held goes at once, with its held row. */
static int log_append(mctx *c, inbatch *ib)
{
    int rc;
    if (!ib->from_held) {
        /* A received run goes whole into one flush when it can (log_runs). */
        if (c->nlogq && ib->run && ib->run != c->logq[c->nlogq - 1]->run &&
            c->nlogq + ib->run->nbodies > TSYNC__MERGE_LOGQ_RUN && (rc = log_flush(c)))
            return rc;
        c->logq[c->nlogq++] = ib;
        return c->nlogq == TSYNC__MERGE_LOGQ_RUN ? log_flush(c) : 0;
    }
    if ((rc = log_flush(c))) return rc;
    c->logq[c->nlogq++] = ib;
    if ((rc = log_flush(c))) return rc;
    {
        sqlite3_stmt *st;
        if (!(st = tsync__prep(c->s, "DELETE FROM tsync_held WHERE site=?1 AND seq=?2")))
            return TSYNC_EIO;
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
        rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(c->s->db, rc, "clear held batch");
    }
    return 0;
}

static int hold(mctx *c, inbatch *ib)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(c->s, &st,
                                 "INSERT OR REPLACE INTO tsync_held(site, seq, prev, "
                                 "hash, body, sig, reason) VALUES(?1,?2,?3,?4,?5,?6,?7)",
                                 "hold batch");
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, ib->site);
    sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
    sqlite3_bind_blob(st, 3, ib->prev, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 4, ib->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
    sqlite3_bind_blob(st, 5, ib->body, (int)ib->body_len, SQLITE_STATIC);
    if (ib->sig) sqlite3_bind_blob(st, 6, ib->sig, TSYNC__SIG_BYTES, SQLITE_STATIC);
    sqlite3_bind_text(st, 7, ib->reason ? ib->reason : "", -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(c->s->db, rc, "hold batch");
}

/* Our own evidence for a sequence number: the stored batches from seq up to the next signed one. */
static int record_fork(mctx *c, inbatch *ib, uint64_t at_seq, const char *why,
                       const tsync__brun *run, const tsync__bsite *bs)
{
    tsync_store *s = c->s;
    msite *m = &c->sites[ib->site];
    char sh[13];
    int rc = 0;
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    if (!w) return tsync__err(TSYNC_ENOMEM, "out of memory");
    uint32_t si;
    rc = tsync__bundle_writer_site(w, bs, &si);
    if (rc == 0 && run) {
        rc = tsync__bundle_writer_run(w, si, run->first_seq, run->prev);
        for (uint32_t i = 0; rc == 0 && i < run->nbodies; i++)
            rc = tsync__bundle_writer_body(w, run->body[i], run->body_len[i]);
        if (rc == 0) rc = tsync__bundle_writer_end_run(w, run->sig);
    }
    /* our side */
    sqlite3_stmt *st;
    if (rc == 0 &&
        sqlite3_prepare_v2(s->db,
                           "SELECT seq, tsync_log_body(site, seq, body), sig FROM tsync_log "
                           "WHERE site=?1 AND seq>=?2 "
                           "ORDER BY seq",
                           -1, &st, NULL) == SQLITE_OK) {
        uint8_t prev[TSYNC__HASH_BYTES] = {0};
        sqlite3_stmt *ph;
        if (at_seq > 1 && sqlite3_prepare_v2(s->db,
                                             "SELECT hash FROM tsync_log WHERE site=?1 AND "
                                             "seq=?2",
                                             -1, &ph, NULL) == SQLITE_OK) {
            sqlite3_bind_int64(ph, 1, ib->site);
            sqlite3_bind_int64(ph, 2, (int64_t)at_seq - 1);
            if (sqlite3_step(ph) == SQLITE_ROW && sqlite3_column_bytes(ph, 0) == TSYNC__HASH_BYTES)
                memcpy(prev, sqlite3_column_blob(ph, 0), TSYNC__HASH_BYTES);
            sqlite3_finalize(ph);
        }
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)at_seq);
        int started = 0;
        while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
            if (!started)
                rc = tsync__bundle_writer_run(w, si, (uint64_t)sqlite3_column_int64(st, 0), prev);
            started = 1;
            if (rc == 0)
                rc = tsync__bundle_writer_body(w, sqlite3_column_blob(st, 1),
                                               (size_t)sqlite3_column_bytes(st, 1));
            if (rc == 0 && sqlite3_column_bytes(st, 2) == TSYNC__SIG_BYTES) {
                rc = tsync__bundle_writer_end_run(w, sqlite3_column_blob(st, 2));
                started = 0;
                break;
            }
        }
        sqlite3_finalize(st);
    }
    uint8_t *proof = NULL;
    size_t plen = 0;
    int known = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM tsync_forks WHERE site=?1 AND seq=?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)at_seq);
        known = sqlite3_step(st) == SQLITE_ROW;
        sqlite3_finalize(st);
    }
    if (known) {
        /* seen before: one proof is enough */
        tsync__bundle_writer_free(w);
        goto freeze;
    }
    if (rc == 0) rc = tsync__bundle_writer_finish(w, true, &proof, &plen);
    tsync__bundle_writer_free(w);
    if (rc) return tsync__err(rc, "cannot build fork proof");
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO tsync_forks(site, seq, at_ms, proof, reason) "
                           "VALUES(?1,?2,?3,?4,?5)",
                           -1, &st, NULL) != SQLITE_OK) {
        free(proof);
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "record fork");
    }
    sqlite3_bind_int64(st, 1, ib->site);
    sqlite3_bind_int64(st, 2, (int64_t)at_seq);
    sqlite3_bind_int64(st, 3, (int64_t)c->now_ms);
    sqlite3_bind_blob(st, 4, proof, (int)plen, SQLITE_STATIC);
    sqlite3_bind_text(st, 5, why, -1, SQLITE_STATIC);
    rc = sqlite3_step(st);
    sqlite3_finalize(st);
    free(proof);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "record fork");
freeze:;
    int64_t frozen = (int64_t)at_seq - 1;
    if (m->frozen < 0 || frozen < m->frozen) m->frozen = frozen;
    m->dirty = 1;
    if (c->rep) c->rep->refused++;
    c->refuse_code = TSYNC_EFORK;
    tsync_merge__report(
        c,
        "refused: fork of site %s at batch %llu (%s); proof recorded, site frozen at "
        "batch %lld; the other branch's rows are merged so no sale is lost",
        tsync_merge__short_site(m->id, sh), (unsigned long long)at_seq, why, (long long)m->frozen);
    return 0;
}

/* ---------------------------------------------------------------- the merge */

static int stored_hash(mctx *c, uint32_t site, uint64_t seq, uint8_t out[TSYNC__HASH_BYTES])
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(c->s, &st, "SELECT hash FROM tsync_log WHERE site=?1 AND seq=?2",
                                 "read log");
    if (rc) return rc;
    sqlite3_bind_int64(st, 1, site);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    rc = TSYNC_ENOTFOUND;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == TSYNC__HASH_BYTES) {
        memcpy(out, sqlite3_column_blob(st, 0), TSYNC__HASH_BYTES);
        rc = 0;
    }
    sqlite3_reset(st);
    return rc;
}

/* Whether batch seq of site was pruned from our log (below the stub at the horizon): such a batch
 * can no longer be compared, and every member held it when it was pruned. */
static int pruned_below(mctx *c, uint32_t site, uint64_t seq)
{
    sqlite3_stmt *st = tsync__prep(c->s, "SELECT min(seq) FROM tsync_log WHERE site=?1");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, site);
    int below = sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL &&
                (uint64_t)sqlite3_column_int64(st, 0) > seq;
    sqlite3_reset(st);
    return below;
}

static int load_held(mctx *c, inbatch **list, size_t *n, size_t *cap)
{
    sqlite3_stmt *st;
    int rc = tsync__prep_or_fail(c->s, &st,
                                 "SELECT site, seq, prev, hash, body, sig FROM tsync_held "
                                 "ORDER BY site, seq",
                                 "read held batches");
    if (rc) return rc;
    char err[TSYNC__ERRLEN];
    tsync__arena scratch = {0};
    size_t scratch_bytes = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (*n == *cap) {
            *cap = *cap ? *cap * 2 : 64;
            inbatch *nl = realloc(*list, *cap * sizeof *nl);
            if (!nl) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            *list = nl;
        }
        inbatch *ib = &(*list)[*n];
        memset(ib, 0, sizeof *ib);
        ib->site = (uint32_t)sqlite3_column_int64(st, 0);
        ib->seq = (uint64_t)sqlite3_column_int64(st, 1);
        if (sqlite3_column_bytes(st, 2) != TSYNC__HASH_BYTES ||
            sqlite3_column_bytes(st, 3) != TSYNC__HASH_BYTES)
            continue;
        memcpy(ib->prev, sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES);
        memcpy(ib->hash, sqlite3_column_blob(st, 3), TSYNC__HASH_BYTES);
        ib->body_len = (size_t)sqlite3_column_bytes(st, 4);
        uint8_t *body = tsync__arena_alloc(&c->a, ib->body_len + 1);
        if (!body) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        memcpy(body, sqlite3_column_blob(st, 4), ib->body_len);
        ib->body = body;
        if (sqlite3_column_bytes(st, 5) == TSYNC__SIG_BYTES) {
            uint8_t *sig = tsync__arena_alloc(&c->a, TSYNC__SIG_BYTES);
            if (!sig) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            memcpy(sig, sqlite3_column_blob(st, 5), TSYNC__SIG_BYTES);
            ib->sig = sig;
        }
        tsync__batch b;
        int drc = tsync_merge__head(c, ib, &b, &scratch, &scratch_bytes, err);
        if (drc == TSYNC_ENOMEM) {
            rc = tsync__err(drc, "out of memory");
            break;
        }
        if (drc) continue;
        ib->from_held = 1;
        (*n)++;
    }
    sqlite3_reset(st);
    tsync__arena_free(&scratch);
    return rc;
}

/* A batch whose clock is too far ahead is held (DESIGN: a wrong clock must not win every write
 * for a day, nor move ours), except once its origin shows, by a later batch with a clock within
 * the bound, that its clock was fixed: then holding it only holds that till's later sales
 * hostage, since they depend on it (docs/DATA_MODEL.md, "Clocks"). It is then merged, and
 * finish() does not let our clock follow it. */
static int clock_fixed_later(const mctx *c, const inbatch *list, size_t n, const inbatch *ib)
{
    for (size_t j = 0; j < n; j++)
        if (list[j].site == ib->site && list[j].seq > ib->seq &&
            !tsync__hlc_too_far(list[j].hlc_hi, c->now_ms, c->s->skew_bound_ms))
            return 1;
    return 0;
}

/* Decides and applies, in causal order, until nothing more can be applied. */
/* The data of a forked branch is merged (not logged): its sales are real, and every replica that
 * sees both branches then shows the same rows. The origin's log stays frozen. */
static int apply_fork_data(mctx *c, inbatch *ib, int counted,
                           const uint8_t branch[TSYNC__HASH_BYTES])
{
    msite *m = &c->sites[ib->site];
    uint8_t id[TSYNC__SITE_BYTES];
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, sizeof id);
    crypto_generichash_update(&h, (const uint8_t *)"tsync-fork", 10);
    crypto_generichash_update(&h, m->id, TSYNC__SITE_BYTES);
    crypto_generichash_update(&h, branch, TSYNC__HASH_BYTES);
    crypto_generichash_final(&h, id, sizeof id);
    uint32_t fs;
    int rc = tsync_merge__site_local(c, id, NULL, NULL, &fs);
    if (rc) return rc;
    c->fork_origin = ib->site;
    c->fork_site = fs;
    c->fork_frozen = m->frozen >= 0 ? (uint64_t)m->frozen : 0;
    rc = tsync_merge__apply_batch(c, ib, NULL, NULL, 0);
    c->fork_site = 0;
    if (rc == 0) rc = tsync_merge__maybe_flush(c);
    ib->done = 1;
    if (rc == 0 && !counted && c->rep) c->rep->refused++;
    return rc;
}

static void drop_held(mctx *c, inbatch *ib)
{
    sqlite3_stmt *st;
    if (!ib->from_held) return;
    if (sqlite3_prepare_v2(c->s->db, "DELETE FROM tsync_held WHERE site=?1 AND seq=?2", -1, &st,
                           NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, ib->site);
        sqlite3_bind_int64(st, 2, (int64_t)ib->seq);
        sqlite3_step(st);
        sqlite3_finalize(st);
    }
}

/* Kept batches of a revoked device (docs/TRUST.md, store/kept.c). Whether m's key is revoked (2)
 * or not (1), looked up once per merge. */
static int site_revoked(mctx *c, msite *m)
{
    if (!m->revoked) {
        int rv = m->has_pk ? tsync__trust_cutoff(c->s, m->pk, m->id, &m->cutoff) : 0;
        if (rv < 0) return rv;
        m->revoked = rv == 1 ? 2 : 1;
    }
    return m->revoked;
}

/* The highest seq of site id, at or above seq, that an honest batch of this merge (the bundle or
 * the held ones) depends on: *kept (0 when none) and *by, that batch's index. An honest batch is by
 * a key that is not revoked and that the trust rules admit. */
static int honest_dep(mctx *c, inbatch *list, size_t n, const uint8_t id[TSYNC__SITE_BYTES],
                      uint64_t seq, uint64_t *kept, size_t *by)
{
    *kept = 0;
    for (size_t i = 0; i < n; i++) {
        inbatch *l = &list[i];
        for (uint32_t d = 0; d < l->ndeps; d++) {
            const mdep *dep = &l->deps[d];
            if (dep->seq < seq || dep->seq <= *kept ||
                memcmp(dep->site, id, TSYNC__SITE_BYTES) != 0)
                continue;
            if (!l->honest) {
                msite *a = &c->sites[l->site];
                int rv = site_revoked(c, a);
                if (rv < 0) return rv;
                char err[TSYNC__ERRLEN];
                int trc = rv == 2 || !a->has_pk ? TSYNC_EREFUSED
                                                : tsync__trust_admit(c->s, a->pk, a->id, l->seq,
                                                                     tsync__hlc_ms(l->hlc_hi), err);
                if (trc == TSYNC_EIO) return trc;
                l->honest = trc == 0 ? 1 : -1;
            }
            if (l->honest == 1) *kept = dep->seq, *by = i;
        }
    }
    return 0;
}

/* Decides and applies, in causal order, until nothing more can be applied. */
static int apply_ready(mctx *c, inbatch *list, size_t n, const tsync__bundle *bun,
                       const uint32_t *run_of, uint8_t *run_forked,
                       uint8_t (*branch)[TSYNC__HASH_BYTES])
{
    int rc = 0, progress = 1;
    char sh[13];
    while (progress) {
        progress = 0;
        for (size_t i = 0; i < n; i++) {
            inbatch *ib = &list[i];
            if (ib->done) continue;
            msite *m = &c->sites[ib->site];
            const tsync__brun *run = run_of && !ib->from_held ? &bun->runs[run_of[i]] : NULL;
            tsync__bsite fake = {0}, *bs = run ? &bun->sites[run->site] : &fake;
            if (!run) {
                memcpy(fake.site, m->id, TSYNC__SITE_BYTES);
                memcpy(fake.pk, m->pk, TSYNC__PK_BYTES);
            }
            /* Anything but the next batch of its origin on our head may read the log (a
             * duplicate's stored hash, a fork's proof and counters, a revoked device's kept
             * batches): the queued appends go first. */
            if (c->nlogq &&
                (ib->seq != m->seq + 1 || (run && run_forked[run_of[i]]) || m->frozen >= 0 ||
                 memcmp(ib->prev, m->hash, TSYNC__HASH_BYTES) != 0) &&
                (rc = log_flush(c)))
                return rc;
            if (run && run_forked[run_of[i]]) {
                if ((rc = apply_fork_data(c, ib, 0, branch[run_of[i]]))) return rc;
                continue;
            }
            if (ib->seq <= m->seq) {
                uint8_t h[TSYNC__HASH_BYTES];
                ib->done = 1;
                tsync__mskip_dup(c->skip, m->id, ib->seq);
                if (stored_hash(c, ib->site, ib->seq, h) == 0 &&
                    memcmp(h, ib->hash, TSYNC__HASH_BYTES) != 0) {
                    if ((rc = record_fork(c, ib, ib->seq,
                                          "a different batch with this number is "
                                          "already here",
                                          run, bs)))
                        return rc;
                    if (run) {
                        run_forked[run_of[i]] = 1;
                        memcpy(branch[run_of[i]], ib->hash, TSYNC__HASH_BYTES);
                    }
                    if ((rc = apply_fork_data(c, ib, 1, ib->hash))) return rc;
                    progress = 1;
                } else {
                    ib->applied = 1;
                    if (c->rep) c->rep->duplicates++;
                }
                drop_held(c, ib);
                continue;
            }
            if (m->frozen >= 0 && (int64_t)ib->seq > m->frozen) {
                ib->done = 1;
                if (c->rep) c->rep->refused++;
                c->refuse_code = TSYNC_EFORK;
                tsync_merge__report(
                    c,
                    "refused: batch %llu of site %s: the site is frozen at batch %lld "
                    "after a fork",
                    (unsigned long long)ib->seq, tsync_merge__short_site(m->id, sh),
                    (long long)m->frozen);
                drop_held(c, ib);
                continue;
            }
            if (!ib->kept) {
                /* A revoked device's batch after the cutoff: kept when an honest batch depends on
                 * it, else refused now, in whatever order it came (it will never apply). */
                int rv = site_revoked(c, m);
                if (rv < 0) return rv;
                if (rv == 2 && ib->seq > m->cutoff) {
                    if ((rc = log_flush(c))) return rc;
                    if ((rc = honest_dep(c, list, n, m->id, ib->seq, &ib->kept, &ib->kept_by)))
                        return rc;
                    if (!ib->kept) {
                        /* The trust check words it (device name, seq, cutoff), as for any batch
                         * the trust rules refuse. */
                        char terr[TSYNC__ERRLEN];
                        int trc = tsync__trust_admit_kept(c->s, m->pk, m->id, ib->seq,
                                                          tsync__hlc_ms(ib->hlc_hi), 0, terr);
                        if (trc == TSYNC_EIO) return trc;
                        ib->done = 1;
                        if (c->rep) c->rep->refused++;
                        c->refuse_code = TSYNC_EREFUSED;
                        tsync_merge__report(
                            c,
                            "refused: batch %llu of site %s: %s, and no honest batch depends on it",
                            (unsigned long long)ib->seq, tsync_merge__short_site(m->id, sh),
                            trc ? terr : "its key was revoked");
                        drop_held(c, ib);
                        continue;
                    }
                }
            }
            if (ib->seq != m->seq + 1) {
                tsync_merge__reason(ib, "waiting for batch %llu of site %s",
                                    (unsigned long long)(m->seq + 1),
                                    tsync_merge__short_site(m->id, sh));
                continue;
            }
            if (memcmp(ib->prev, m->hash, TSYNC__HASH_BYTES) != 0) {
                if ((rc = record_fork(c, ib, ib->seq > 1 ? ib->seq - 1 : 1,
                                      "its previous-batch hash differs from ours", run, bs)))
                    return rc;
                if (run) {
                    run_forked[run_of[i]] = 1;
                    memcpy(branch[run_of[i]], ib->hash, TSYNC__HASH_BYTES);
                }
                if ((rc = apply_fork_data(c, ib, 1, ib->hash))) return rc;
                drop_held(c, ib);
                progress = 1;
                continue;
            }
            int ready = 1;
            for (uint32_t d = 0; d < ib->ndeps && ready; d++) {
                const uint8_t *dsite = ib->deps[d].site;
                uint64_t have = 0;
                for (uint32_t k = 1; k < c->nsites; k++)
                    if (c->sites[k].known && memcmp(c->sites[k].id, dsite, TSYNC__SITE_BYTES) == 0)
                        have = c->sites[k].seq > have ? c->sites[k].seq : have;
                if (have < ib->deps[d].seq) {
                    ready = 0;
                    tsync_merge__reason(ib, "depends on batch %llu of site %s, not here yet",
                                        (unsigned long long)ib->deps[d].seq,
                                        tsync_merge__short_site(dsite, sh));
                }
            }
            if (!ready) continue;
            if (tsync__hlc_too_far(ib->hlc_hi, c->now_ms, c->s->skew_bound_ms)) {
                if (!clock_fixed_later(c, list, n, ib)) {
                    tsync_merge__reason(
                        ib, "clock of site %s is %llu ms ahead of ours",
                        tsync_merge__short_site(m->id, sh),
                        (unsigned long long)(tsync__hlc_ms(ib->hlc_hi) - c->now_ms));
                    continue;
                }
                tsync_merge__report(
                    c,
                    "merged: batch %llu of site %s with a clock %llu ms ahead: a later "
                    "batch of that site shows its clock fixed",
                    (unsigned long long)ib->seq, tsync_merge__short_site(m->id, sh),
                    (unsigned long long)(tsync__hlc_ms(ib->hlc_hi) - c->now_ms));
            }
            if (c->enrolled) {
                /* Enrolled: only keys with a valid certificate of our shop author data, and a
                 * certificate covers data by the batch's clock. */
                char terr[TSYNC__ERRLEN];
                int trc = tsync__trust_admit_kept(c->s, m->pk, m->id, ib->seq,
                                                  tsync__hlc_ms(ib->hlc_hi), ib->kept, terr);
                if (trc == TSYNC_EIO) return trc;
                if (trc) {
                    ib->done = 1;
                    if (c->rep) c->rep->refused++;
                    c->refuse_code = TSYNC_EREFUSED;
                    tsync_merge__report(c, "refused: batch %llu of site %s: %s",
                                        (unsigned long long)ib->seq,
                                        tsync_merge__short_site(m->id, sh), terr);
                    drop_held(c, ib);
                    continue;
                }
            }
            if ((rc = tsync_merge__apply_batch(c, ib, NULL, NULL, 0))) return rc;
            if ((rc = log_append(c, ib))) return rc;
            if ((rc = tsync_merge__maybe_flush(c))) return rc;
            m->seq = ib->seq;
            memcpy(m->hash, ib->hash, TSYNC__HASH_BYTES);
            m->dirty = 1;
            ib->done = 1;
            ib->applied = 1;
            progress = 1;
            if (c->rep) c->rep->merged++;
        }
    }
    return log_flush(c);
}

static int finish(mctx *c, inbatch *list, size_t n)
{
    tsync_store *s = c->s;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        inbatch *ib = &list[i];
        if (ib->done) continue;
        if (c->rep) c->rep->held++;
        if ((rc = hold(c, ib))) return rc;
        tsync_merge__report(c, "held: batch %llu: %s", (unsigned long long)ib->seq,
                            ib->reason ? ib->reason : "");
    }
    if ((rc = tsync_merge__flush_rows(c))) return rc;
    for (uint32_t i = 1; i < c->nsites; i++) {
        msite *m = &c->sites[i];
        if (!m->dirty) continue;
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(s->db,
                               "UPDATE tsync_sites SET seq=?2, hash=?3, frozen_seq=?4 "
                               "WHERE idx=?1",
                               -1, &st, NULL) != SQLITE_OK)
            return tsync__err_sqlite(s->db, SQLITE_ERROR, "update vector");
        sqlite3_bind_int64(st, 1, i);
        sqlite3_bind_int64(st, 2, (int64_t)m->seq);
        if (m->seq) sqlite3_bind_blob(st, 3, m->hash, TSYNC__HASH_BYTES, SQLITE_STATIC);
        if (m->frozen >= 0) sqlite3_bind_int64(st, 4, m->frozen);
        rc = sqlite3_step(st);
        sqlite3_finalize(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "update vector");
        rc = 0;
    }
    if (c->max_hlc) {
        tsync__hlc last;
        if ((rc = tsync__hlc_load(s, &last))) return rc;
        /* Never further than the bound ahead of the shop's time: a far-ahead clock merged
         * because its author fixed it later must not move ours (seal.c keeps the rows it
         * wrote consistent: a write goes above the clock it overwrites). */
        tsync__hlc cap = s->skew_bound_ms > (UINT64_MAX >> 16) - c->now_ms
                             ? UINT64_MAX
                             : tsync__hlc_make(c->now_ms + s->skew_bound_ms, 0xffff);
        tsync__hlc nl = tsync__hlc_observe(last, c->max_hlc < cap ? c->max_hlc : cap);
        if (nl > last && (rc = tsync__hlc_store(s, nl))) return rc;
    }
    return 0;
}

int tsync_store_merge(tsync_store *s, const uint8_t *bundle, size_t len, tsync_merge_report *report)
{
    if (report &&
        tsync__check_version("tsync_merge_report", report->version, TSYNC_MERGE_REPORT_VERSION))
        return TSYNC_EVERSION;
    /* Format 4 ("TSYNCBDL" then the format byte, codec/codec.h) is read record by record, as a
     * file is (store/bundle_read.c): memory stays bounded whatever the bundle's size. One under
     * two slices (2 MiB compressed: tens of MiB decoded, the live shape's day of sales) is decoded
     * whole and merged in one transaction, as before: reading it twice costs ~30% more CPU there.
     * The old formats are one array, read whole. */
    if (bundle && len > 8 && memcmp(bundle, "TSYNCBDL", 8) == 0 &&
        bundle[8] >= TSYNC__BUNDLE_FORMAT_STREAM4 && len >= tsync__merge_slice_bytes * 2)
        return tsync__merge_stream_mem(s, bundle, len, report);
    tsync__arena da = {0};
    tsync__bundle bun;
    char err[TSYNC__ERRLEN];
    memset(&bun, 0, sizeof bun);
    int rc = tsync__bundle_decode(bundle, len, &bun, &da, err);
    if (rc) {
        if (report) report->refused++;
        tsync__arena_free(&da);
        return tsync__err(rc, "bundle refused: %s", err);
    }
    if (bun.schema) {
        /* The author's table definitions are checked as strictly as the rest: a bundle whose
         * description does not decode is damaged or forged and is refused whole. */
        tsync__arena sa = {0};
        tsync__schema sc;
        rc = tsync__schema_decode(bun.schema, bun.schema_len, &sc, &sa, err);
        tsync__arena_free(&sa);
        if (rc) {
            if (report) report->refused++;
            tsync__bundle_free(&bun);
            tsync__arena_free(&da);
            return tsync__err(rc, "bundle refused: %s", err);
        }
    }
    rc = tsync__merge_bundle(s, &bun, report);
    if (rc != TSYNC_EIO && rc != TSYNC_ENOMEM && rc != TSYNC_EBUSY) {
        int src = tsync__schema_from_bundle(s, &bun, report);
        if (rc == 0) rc = src;
    }
    tsync__bundle_free(&bun);
    tsync__arena_free(&da);
    return rc;
}

int tsync__merge_bundle(tsync_store *s, const tsync__bundle *bunp, tsync_merge_report *report)
{
    return tsync__merge_bundle_skip(s, bunp, report, NULL);
}

int tsync__merge_bundle_skip(tsync_store *s, const tsync__bundle *bunp, tsync_merge_report *report,
                             tsync__mskip *skip)
{
    const tsync__bundle bun = *bunp;
    char err[TSYNC__ERRLEN];
    char sh[13];
    int rc = 0;
    mctx c;
    uint8_t *run_forked = NULL;
    uint8_t(*branch)[TSYNC__HASH_BYTES] = NULL;
    tsync_merge__init(&c, s, report);
    c.skip = skip;

    /* Phase 1: decode every body and verify every run, touching nothing. Only the batches'
     * headers are kept: the rows are decoded again as each batch applies. */
    tsync__arena scratch = {0};
    size_t scratch_bytes = 0, n = 0;
    size_t total = 0;
    for (uint32_t i = 0; i < bun.nruns; i++) total += bun.runs[i].nbodies;
    inbatch *list = calloc(total + 1, sizeof *list);
    uint32_t *run_of = calloc(total + 1, sizeof *run_of);
    if (!list || !run_of) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto fail;
    }
    for (uint32_t ri = 0; ri < bun.nruns; ri++) {
        const tsync__brun *run = &bun.runs[ri];
        const tsync__bsite *bs = &bun.sites[run->site];
        uint8_t prev[TSYNC__HASH_BYTES];
        memcpy(prev, run->prev, sizeof prev);
        for (uint32_t k = 0; k < run->nbodies; k++) {
            inbatch *ib = &list[n];
            run_of[n] = ri;
            ib->body = run->body[k];
            ib->body_len = run->body_len[k];
            ib->seq = run->first_seq + k;
            tsync__batch hb;
            if ((rc = tsync_merge__head(&c, ib, &hb, &scratch, &scratch_bytes, err))) {
                rc = tsync__err(rc, "bundle refused: batch %llu of site %s: %s",
                                (unsigned long long)ib->seq, tsync_merge__short_site(bs->site, sh),
                                err);
                goto refuse;
            }
            if (memcmp(hb.origin, bs->site, TSYNC__SITE_BYTES) != 0 || hb.seq != ib->seq) {
                rc = tsync__err(TSYNC_ECHAIN,
                                "bundle refused: run of site %s: batch %llu is out "
                                "of place (found origin %s batch %llu): hash chain broken",
                                tsync_merge__short_site(bs->site, sh), (unsigned long long)ib->seq,
                                tsync_merge__short_site(hb.origin, (char[13]){0}),
                                (unsigned long long)hb.seq);
                goto refuse;
            }
            memcpy(ib->prev, prev, sizeof prev);
            tsync__batch_hash(prev, ib->body, ib->body_len, ib->hash);
            memcpy(prev, ib->hash, sizeof prev);
            ib->run = run;
            n++;
        }
        uint64_t last = run->first_seq + run->nbodies - 1;
        if (tsync__batch_verify(bs->pk, bs->site, last, prev, run->sig) != 0) {
            rc = tsync__err(TSYNC_EBADSIG,
                            "bundle refused: batches %llu-%llu of site %s: "
                            "signature does not verify over the hash chain (altered, reordered "
                            "or forged)",
                            (unsigned long long)run->first_seq, (unsigned long long)last,
                            tsync_merge__short_site(bs->site, sh));
            goto refuse;
        }
        list[n - 1].sig = run->sig;
    }
    tsync__arena_free(&scratch);

    /* Phase 2: one transaction. */
    if ((rc = tsync__begin(s))) goto fail;
    {
        /* Local changes sealed between two slices of a file merge wrote rows the skip summary
         * takes as written by the file only: no more skipping (store/merge_skip.c). */
        size_t sealed = 0;
        if ((rc = tsync__seal_locked(s, &sealed))) goto rollback;
        if (sealed) tsync__mskip_disable(skip);
    }
    if ((rc = tsync__capture_off(s, 1))) goto rollback;
    /* Trust records first: a batch of a till enrolled since our last merge needs its
     * certificate. A bad or foreign record is refused and reported; it does not stop the data. */
    for (uint32_t i = 0; i < bun.ntrust; i++) {
        char terr[TSYNC__ERRLEN];
        int trc = tsync__trust_import(s, bun.trust[i], bun.trust_len[i], terr);
        if (trc == TSYNC_EIO || trc == TSYNC_ENOMEM) {
            rc = trc;
            goto rollback;
        }
        if (trc) {
            if (report) report->refused++;
            tsync_merge__report(&c, "trust record %u not taken: %s", i, terr);
        }
    }
    /* Whether we are enrolled does not change while batches apply: asked once, not per batch
     * (the question reads the schema). */
    if ((c.enrolled = tsync__trust_enrolled(s, NULL)) < 0) {
        rc = c.enrolled;
        goto rollback;
    }
    if ((rc = tsync_merge__load_sites(&c))) goto rollback;
    {
        uint32_t *idx = calloc(bun.nsites + 1, sizeof *idx);
        if (!idx) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto rollback;
        }
        for (uint32_t i = 0; rc == 0 && i < bun.nsites; i++)
            rc = tsync_merge__site_local(&c, bun.sites[i].site, bun.sites[i].pk, bun.sites[i].inc,
                                         &idx[i]);
        for (size_t i = 0; rc == 0 && i < n; i++) list[i].site = idx[bun.runs[run_of[i]].site];
        free(idx);
        if (rc) goto rollback;
    }
    {
        /* Our own batches coming back, signed with our key, that our log lacks above its head or
         * holds with other content: this database went back (an old copy written over it, a
         * revert of the disk) or a copy of it writes with our identity. Take a new incarnation,
         * then merge again: our old site is then a site like any other, its lost branch comes
         * back, and a branch we wrote on meanwhile meets the fork machinery (store/identity.c). */
        uint64_t head = 0, seen = 0;
        int went_back = 0;
        for (size_t i = 0; i < n; i++) {
            if (list[i].site != s->local_idx) continue;
            uint8_t h[TSYNC__HASH_BYTES];
            int hrc = stored_hash(&c, list[i].site, list[i].seq, h);
            if ((hrc == 0 && memcmp(h, list[i].hash, TSYNC__HASH_BYTES) == 0) ||
                (hrc == TSYNC_ENOTFOUND && pruned_below(&c, list[i].site, list[i].seq)))
                continue;
            went_back = 1;
            if (list[i].seq > seen) seen = list[i].seq;
            head = c.sites[s->local_idx].seq;
        }
        if (went_back && !s->read_only && !s->renewing) {
            tsync__rollback(s);
            tsync__capture_off(s, 0);
            tsync_merge__list_free(list, n);
            free(run_of);
            tsync_merge__free(&c);
            if ((rc = tsync__identity_renew(s, head, seen))) return rc;
            s->renewing = 1;
            tsync__mskip_disable(skip);
            rc = tsync__merge_bundle(s, bunp, report);
            s->renewing = 0;
            return rc;
        }
    }
    for (size_t i = 0; i < n; i++)
        if (list[i].site == s->local_idx) {
            /* Our own batches coming back: duplicates, or a sign that this database was cloned. */
            list[i].done = 1;
            uint8_t h[TSYNC__HASH_BYTES];
            int hrc = stored_hash(&c, list[i].site, list[i].seq, h);
            if ((hrc == 0 && memcmp(h, list[i].hash, TSYNC__HASH_BYTES) == 0) ||
                (hrc == TSYNC_ENOTFOUND && pruned_below(&c, list[i].site, list[i].seq))) {
                if (report) report->duplicates++;
            } else {
                if (report) report->refused++;
                c.refuse_code = TSYNC_EFORK;
                tsync_merge__report(
                    &c,
                    "refused: batch %llu claims to be from this database but is not "
                    "ours (a copy of this database is writing with our identity)",
                    (unsigned long long)list[i].seq);
            }
        }
    {
        /* Held batches from earlier merges join this one. */
        size_t cap = total + 1;
        size_t n0 = n;
        if ((rc = load_held(&c, &list, &n, &cap))) goto rollback;
        uint32_t *nr = realloc(run_of, (cap + 1) * sizeof *nr);
        if (!nr) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto rollback;
        }
        run_of = nr;
        /* a batch both held and in this bundle: keep one (the held copy loses) */
        for (size_t i = n0; i < n; i++)
            for (size_t j = 0; j < n0; j++)
                if (list[j].site == list[i].site && list[j].seq == list[i].seq &&
                    memcmp(list[j].hash, list[i].hash, TSYNC__HASH_BYTES) == 0) {
                    list[j].from_held = 1; /* clear the held row when applied */
                    if (!list[j].sig) list[j].sig = list[i].sig;
                    list[i].done = 1;
                }
    }
    run_forked = calloc(bun.nruns + 1, 1);
    branch = calloc(bun.nruns + 1, TSYNC__HASH_BYTES);
    if (!run_forked || !branch) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto rollback;
    }
    /* Resolutions of conflicts (store/conflicts.c) arrive as changes of the library's own table:
     * made before anything applies, so they are not parked here for want of it. A body that
     * merely holds the name as a value makes it early, which is harmless. */
    for (size_t i = 0; i < n && !tsync__table_by_name(s, TSYNC__RESOLVED, strlen(TSYNC__RESOLVED));
         i++)
        if (!list[i].done && list[i].body &&
            memmem(list[i].body, list[i].body_len, TSYNC__RESOLVED, strlen(TSYNC__RESOLVED))) {
            if ((rc = tsync__resolved_ensure(s)) || (rc = tsync__capture_off(s, 1))) goto rollback;
        }
    if ((rc = apply_ready(&c, list, n, &bun, run_of, run_forked, branch))) goto rollback;
    if ((rc = finish(&c, list, n))) goto rollback;
    for (size_t i = 0; i < n; i++)
        if (list[i].applied && list[i].kept && !list[list[i].kept_by].applied) c.keep_publish = 1;
    if (c.keep_publish && (rc = tsync__trust_keep_merged(s))) goto rollback;
    tsync__capture_off(s, 0);
    /* Resolutions from a till that has the table while this one did not: applied now. */
    if ((rc = tsync__resolved_adopt(s))) goto rollback;
    if ((rc = tsync__commit(s))) goto fail;
    tsync_merge__tables_note(&c);
    tsync_merge__list_free(list, n);
    free(run_of);
    free(run_forked);
    free(branch);
    tsync_merge__free(&c);
    if (c.refuse_code)
        return tsync__err(c.refuse_code, "%s",
                          c.refuse_msg[0] ? c.refuse_msg : "some batches were refused");
    return 0;

refuse:
    if (report) report->refused++;
    tsync_merge__report(&c, "%s",
                        tsync_error_last()->code ? tsync_error_last()->message : "refused");
    goto fail;
rollback:
    tsync__rollback(s);
    tsync__capture_off(s, 0);
fail:
    tsync__arena_free(&scratch);
    tsync_merge__list_free(list, n);
    free(run_of);
    free(run_forked);
    free(branch);
    tsync_merge__free(&c);
    return rc;
}
