/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/kept.c — kept batches of a revoked device (docs/TRUST.md, "Kept batches").
 *
 * A revocation names a cutoff per site of the device, but a till may have merged more of the
 * device's batches before the revocation reached it, and sold on top of them. Those batches cannot
 * be taken back from that till, and its own later batches depend on them. So the rule is: a batch
 * of a revoked site beyond the named cutoff is kept (admitted everywhere) when an honest batch (by
 * a key with a certificate and not revoked) depends on it; every other one is refused.
 *
 * Two halves make every till apply the same set:
 * - merge admits such a batch when an honest batch in the same merge (the bundle or the held ones)
 *   depends on it (store/merge.c);
 * - a till that holds more of a revoked site than the named cutoff, without a batch of its own
 *   depending on all of it (it merged them before it learnt of the revocation, or on the word of a
 *   batch that did not apply), seals a batch, empty when it has nothing to seal, whose
 *   dependencies name what it holds (tsync__trust_keep_merged). Its peers then keep the same.
 *
 * Also here: the preview of a revocation for the admin (what a database holds of the device
 * beyond each cutoff, and which honest tills' batches depend on it).
 */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "internal.h"
#include "logrun_int.h"
#include "store/trust.h"

/* ---------------------------------------------------------------- publishing what is kept */

int tsync__trust_keep_merged(tsync_store *s)
{
    uint64_t own_cut;
    int rc = tsync__trust_cutoff(s, s->pk, s->site, &own_cut);
    if (rc < 0) return rc;
    if (rc == 1) return 0; /* this device is revoked itself: its batches are no one's evidence */
    /* Sites of revoked keys this database holds more of than it has sealed a batch over. */
    sqlite3_stmt *st =
        tsync__prep(s, "SELECT site, pk, seq FROM tsync_sites WHERE "
                       "seq > sealed_seq AND idx != ?1 AND length(pk) = 32 AND pk IN "
                       "(SELECT device_pk FROM tsync_revocations)");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_int64(st, 1, s->local_idx);
    struct {
        uint8_t site[TSYNC__SITE_BYTES], pk[TSYNC__PK_BYTES];
        uint64_t seq;
    } *c = NULL;
    size_t n = 0, cap = 0;
    int step;
    rc = 0;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 4;
            void *nc = realloc(c, cap * sizeof *c);
            if (!nc) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            c = nc;
        }
        memcpy(c[n].site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        memcpy(c[n].pk, sqlite3_column_blob(st, 1), TSYNC__PK_BYTES);
        c[n++].seq = (uint64_t)sqlite3_column_int64(st, 2);
    }
    if (rc == 0 && step != SQLITE_DONE) rc = tsync__err_sqlite(s->db, step, "read sites");
    sqlite3_reset(st);
    int need = 0;
    for (size_t i = 0; rc == 0 && i < n && !need; i++) {
        uint64_t cut;
        int r = tsync__trust_cutoff(s, c[i].pk, c[i].site, &cut);
        if (r < 0) rc = r;
        need = r == 1 && c[i].seq > cut;
    }
    free(c);
    if (rc || !need) return rc;
    /* Pending sales carry the dependencies as well as an empty batch would. */
    size_t sealed = 0;
    if ((rc = tsync__seal_locked(s, &sealed))) return rc;
    return sealed ? 0 : tsync__seal_empty_locked(s);
}

/* ---------------------------------------------------------------- the admin's preview */

void tsync__cut_preview_free(tsync__cut_site *v, uint32_t n)
{
    for (uint32_t i = 0; v && i < n; i++) free(v[i].deps);
    free(v);
}

static tsync__cut_site *preview_site(tsync__cut_site **v, uint32_t *n, uint32_t *cap,
                                     const uint8_t site[TSYNC__SITE_BYTES])
{
    for (uint32_t i = 0; i < *n; i++)
        if (memcmp((*v)[i].site, site, TSYNC__SITE_BYTES) == 0) return &(*v)[i];
    if (*n == *cap) {
        uint32_t nc = *cap ? 2 * *cap : 8;
        tsync__cut_site *nv = realloc(*v, nc * sizeof *nv);
        if (!nv) return NULL;
        *v = nv;
        *cap = nc;
    }
    tsync__cut_site *e = &(*v)[(*n)++];
    memset(e, 0, sizeof *e);
    memcpy(e->site, site, TSYNC__SITE_BYTES);
    return e;
}

/* Counts one dependency of a batch of dependant site dsite (key dpk) on e at seq. */
static int preview_dep(sqlite3 *db, tsync__cut_site *e, const uint8_t dsite[TSYNC__SITE_BYTES],
                       const uint8_t dpk[TSYNC__PK_BYTES], uint64_t seq)
{
    tsync__cut_dep *d = NULL;
    for (uint32_t i = 0; i < e->ndeps && !d; i++)
        if (memcmp(e->deps[i].site, dsite, TSYNC__SITE_BYTES) == 0) d = &e->deps[i];
    if (!d) {
        tsync__cut_dep *nd = realloc(e->deps, (e->ndeps + 1) * sizeof *nd);
        if (!nd) return tsync__err(TSYNC_ENOMEM, "out of memory");
        e->deps = nd;
        d = &nd[e->ndeps++];
        memset(d, 0, sizeof *d);
        memcpy(d->site, dsite, TSYNC__SITE_BYTES);
        memcpy(d->pk, dpk, TSYNC__PK_BYTES);
        sqlite3_stmt *st;
        if (sqlite3_prepare_v2(db,
                               "SELECT device_name FROM tsync_certs WHERE device_pk=?1 "
                               "ORDER BY expires DESC LIMIT 1",
                               -1, &st, NULL) == SQLITE_OK) {
            sqlite3_bind_blob(st, 1, dpk, TSYNC__PK_BYTES, SQLITE_STATIC);
            if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_text(st, 0))
                snprintf(d->name, sizeof d->name, "%s", (const char *)sqlite3_column_text(st, 0));
            sqlite3_finalize(st);
        }
    }
    d->batches++;
    if (seq > d->max_dep) d->max_dep = seq;
    if (seq > e->kept) e->kept = seq;
    return 0;
}

int tsync__trust_cut_preview(const char *path, const uint8_t pk[TSYNC__PK_BYTES],
                             const tsync__cutoff *cuts, uint32_t ncuts, tsync__cut_site **out,
                             uint32_t *nout)
{
    *out = NULL, *nout = 0;
    struct stat sb;
    if (stat(path, &sb) != 0)
        return tsync__err(TSYNC_ENOTFOUND, "database %s does not exist", path);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    tsync__cut_site *v = NULL;
    uint32_t n = 0, cap = 0;
    tsync__arena a = {0};
    tsync__logrun *lr = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
    /* Bodies of received runs are read through tsync_log_body (store/logrun_int.h). */
    if (rc == SQLITE_OK && !(lr = tsync__logrun_attach(db))) rc = SQLITE_NOMEM;
    /* The device's sites this database knows, with what it holds of each. */
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(db,
                                "SELECT s.site, s.seq, "
                                "(SELECT count(*) FROM tsync_log l WHERE l.site = s.idx AND "
                                "l.seq > ?2) + (SELECT count(*) FROM tsync_held h WHERE "
                                "h.site = s.idx AND h.seq > ?2) FROM tsync_sites s WHERE "
                                "s.site = ?1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot read %s: %s", path,
                        db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        goto out;
    }
    rc = 0;
    for (uint32_t i = 0; i < ncuts && rc == 0; i++)
        if (!preview_site(&v, &n, &cap, cuts[i].site))
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
    {
        sqlite3_stmt *ss;
        if (rc == 0 && sqlite3_prepare_v2(db, "SELECT site FROM tsync_sites WHERE pk=?1", -1, &ss,
                                          NULL) == SQLITE_OK) {
            sqlite3_bind_blob(ss, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
            while (rc == 0 && sqlite3_step(ss) == SQLITE_ROW)
                if (sqlite3_column_bytes(ss, 0) == TSYNC__SITE_BYTES &&
                    !preview_site(&v, &n, &cap, sqlite3_column_blob(ss, 0)))
                    rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            sqlite3_finalize(ss);
        }
    }
    for (uint32_t i = 0; i < n && rc == 0; i++) {
        tsync__cut_site *e = &v[i];
        for (uint32_t k = 0; k < ncuts; k++)
            if (memcmp(cuts[k].site, e->site, TSYNC__SITE_BYTES) == 0) e->cutoff = cuts[k].seq;
        e->kept = e->cutoff;
        sqlite3_reset(st);
        sqlite3_bind_blob(st, 1, e->site, TSYNC__SITE_BYTES, SQLITE_STATIC);
        sqlite3_bind_int64(st, 2, (int64_t)e->cutoff);
        if (sqlite3_step(st) == SQLITE_ROW) {
            e->known = 1;
            e->have = (uint64_t)sqlite3_column_int64(st, 1);
            e->beyond = (uint64_t)sqlite3_column_int64(st, 2);
        }
    }
    sqlite3_finalize(st);
    st = NULL;
    if (rc) goto out;
    /* Honest batches (by other keys) in the log that depend on a batch beyond a cutoff. Every
     * body is decoded: this is a one-off for the admin, not a per-batch path. */
    if (sqlite3_prepare_v2(db,
                           "SELECT s.site, s.pk, tsync_log_body(l.site, l.seq, l.body) FROM "
                           "tsync_log l JOIN tsync_sites s ON "
                           "s.idx = l.site WHERE length(s.pk) = 32 AND s.pk != ?1",
                           -1, &st, NULL) != SQLITE_OK) {
        rc = tsync__err(TSYNC_EIO, "cannot read the log of %s: %s", path, sqlite3_errmsg(db));
        goto out;
    }
    sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
    int step = SQLITE_DONE;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        tsync__batch b;
        char err[TSYNC__ERRLEN];
        tsync__arena_free(&a);
        memset(&a, 0, sizeof a);
        if (tsync__batch_decode(sqlite3_column_blob(st, 2), (size_t)sqlite3_column_bytes(st, 2), &b,
                                &a, err) != 0)
            continue;
        for (uint32_t d = 0; d < b.ndeps && rc == 0; d++)
            for (uint32_t i = 0; i < n && rc == 0; i++)
                if (memcmp(b.sites[b.deps[d].site], v[i].site, TSYNC__SITE_BYTES) == 0 &&
                    b.deps[d].seq > v[i].cutoff)
                    rc = preview_dep(db, &v[i], sqlite3_column_blob(st, 0),
                                     sqlite3_column_blob(st, 1), b.deps[d].seq);
    }
    if (rc == 0 && step != SQLITE_DONE)
        rc = tsync__err(TSYNC_EIO, "cannot read the log of %s: %s", path, sqlite3_errmsg(db));
out:
    if (st) sqlite3_finalize(st);
    tsync__logrun_detach(lr);
    sqlite3_close(db);
    tsync__arena_free(&a);
    if (rc) {
        tsync__cut_preview_free(v, n);
        return rc;
    }
    *out = v;
    *nout = n;
    return 0;
}
