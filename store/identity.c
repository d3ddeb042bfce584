/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/identity.c — noticing that this till's own log went back, and taking a new incarnation.
 *
 * An old copy written back over the live database (a VM snapshot revert, a disk image restore,
 * `cp` instead of `tillsync restore`) keeps the path, the inode and the key file, so the
 * fingerprint check of keys.c does not fire: the till would go on writing batches whose numbers
 * its peers already hold with other content (a fork of itself), and refuse its own lost branch
 * when peers offer it back. Two ways in which the till notices, either of which is enough:
 *
 * - The marker: a small file beside the key file ("<key>.mark") recording the highest batch of
 *   this site that was handed to a peer or written into a bundle. At open, a log whose head is
 *   behind the marker of the same site went back. This covers a copy of the database file alone.
 *   The marker is written before the batches leave (tsync__sync_runs), not at every seal, and
 *   without fsync: a lost marker update (a power cut) only falls back to the second way, and a
 *   marker ahead of the log is only possible if batches had left, which is exactly a rollback.
 *   Cost: one small pwrite per push of new own batches; never on the app's commit path.
 * - A peer: batches of this site, signed with this key, that the log lacks above its head or
 *   holds with other content (tsync_store_merge). This covers a revert of the whole disk, marker
 *   included, and a cloned image writing with the same identity.
 *
 * Either way the store renews the incarnation exactly like a restore does (backup.c's key file
 * path), registers the new site id, and records the rollback in tsync_meta ("rollbacks" and
 * "rollback_last") for status. The old site id becomes a site like any other here: its batches
 * that peers hold are taken back (if this till wrote on the old branch meanwhile, the usual fork
 * machinery records the fork, freezes the old site and merges both branches' rows everywhere).
 * Other handles on the database (the app's) notice the new identity in tsync__begin through
 * tsync_meta.local_site and reload the key file before they seal.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/identity.h"
#include "internal.h"

#define MARK_MAGIC "TSYNCMRK"
#define MARK_LEN   (8 + TSYNC__SITE_BYTES + 8 + 16)

static char *mark_path(tsync_store *s)
{
    size_t n = strlen(s->key_path) + 6;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s.mark", s->key_path);
    return p;
}

/* 0 and the marker, or -1 when there is none or it is damaged (then it is ignored). */
static int mark_read(tsync_store *s, uint8_t site[TSYNC__SITE_BYTES], uint64_t *seq)
{
    char *path = mark_path(s);
    if (!path) return -1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    free(path);
    if (fd < 0) return -1;
    uint8_t b[MARK_LEN + 1], sum[16];
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    if (n != MARK_LEN || memcmp(b, MARK_MAGIC, 8) != 0) return -1;
    crypto_generichash(sum, sizeof sum, b, MARK_LEN - 16, NULL, 0);
    if (memcmp(sum, b + MARK_LEN - 16, 16) != 0) return -1;
    memcpy(site, b + 8, TSYNC__SITE_BYTES);
    *seq = 0;
    for (int i = 0; i < 8; i++) *seq |= (uint64_t)b[8 + TSYNC__SITE_BYTES + i] << (8 * i);
    return 0;
}

void tsync__mark_sent(tsync_store *s, uint64_t seq)
{
    if (s->read_only) return;
    if (s->mark_known && memcmp(s->mark_site, s->site, TSYNC__SITE_BYTES) == 0 &&
        seq <= s->mark_seq)
        return;
    uint8_t b[MARK_LEN];
    memcpy(b, MARK_MAGIC, 8);
    memcpy(b + 8, s->site, TSYNC__SITE_BYTES);
    for (int i = 0; i < 8; i++) b[8 + TSYNC__SITE_BYTES + i] = (uint8_t)(seq >> (8 * i));
    crypto_generichash(b + MARK_LEN - 16, 16, b, MARK_LEN - 16, NULL, 0);
    char *path = mark_path(s);
    if (!path) return;
    /* In place, one small write: no new block on a full disk, and a torn write fails the
     * checksum (the marker is then ignored, and a peer still shows the rollback). */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    free(path);
    if (fd < 0) return;
    if (pwrite(fd, b, sizeof b, 0) == (ssize_t)sizeof b) {
        memcpy(s->mark_site, s->site, TSYNC__SITE_BYTES);
        s->mark_seq = seq;
        s->mark_known = 1;
    }
    close(fd);
}

static int own_head(tsync_store *s, uint64_t *seq)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT seq FROM tsync_sites WHERE idx=?1");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_int64(st, 1, s->local_idx);
    *seq = sqlite3_step(st) == SQLITE_ROW ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return 0;
}

static int meta_put(tsync_store *s, const char *k, int64_t iv, const char *tv)
{
    sqlite3_stmt *st = tsync__prep(s, "INSERT OR REPLACE INTO tsync_meta VALUES(?1, ?2)");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    if (tv)
        sqlite3_bind_text(st, 2, tv, -1, SQLITE_STATIC);
    else
        sqlite3_bind_int64(st, 2, iv);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "write metadata");
}

static int64_t meta_int(tsync_store *s, const char *k)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT v FROM tsync_meta WHERE k=?1");
    if (!st) return -1;
    sqlite3_bind_text(st, 1, k, -1, SQLITE_STATIC);
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return v;
}

/* The identity of the key file as it is now: inc, site and its row (registered when new). */
static int load_identity(tsync_store *s)
{
    int rc = tsync__key_load_or_create(s, 0);
    if (rc) return rc;
    tsync__site_id(s->pk, s->inc, s->site);
    return tsync__site_index(s, s->site, s->pk, s->inc, &s->local_idx);
}

/* Inside a write transaction: a new incarnation, the new site registered as ours, the rollback
 * recorded. how: "marker" or "peer". */
static int renew_locked(tsync_store *s, const char *how, uint64_t log_seq, uint64_t seen)
{
    uint8_t old[TSYNC__SITE_BYTES];
    memcpy(old, s->site, sizeof old);
    int rc = tsync__key_renew(s->key_path);
    if (rc == 0) rc = load_identity(s);
    if (rc == 0) rc = meta_put(s, "local_site", s->local_idx, NULL);
    int64_t n = meta_int(s, "rollbacks");
    if (rc == 0) rc = meta_put(s, "rollbacks", (n > 0 ? n : 0) + 1, NULL);
    if (rc == 0) {
        char os[2 * TSYNC__SITE_BYTES + 1], ns[2 * TSYNC__SITE_BYTES + 1];
        tsync__hex(old, TSYNC__SITE_BYTES, os);
        tsync__hex(s->site, TSYNC__SITE_BYTES, ns);
        json_t *o =
            json_pack("{s:I, s:s, s:s, s:s, s:I, s:I}", "at_ms", (json_int_t)tsync__now_ms(s),
                      "detected_by", how, "old_site", os, "new_site", ns, "log_seq",
                      (json_int_t)log_seq, "seen_seq", (json_int_t)seen);
        char *txt = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        rc = txt ? meta_put(s, "rollback_last", 0, txt) : tsync__err(TSYNC_ENOMEM, "out of memory");
        free(txt);
    }
    if (rc == 0) s->renewals++;
    return rc;
}

int tsync__identity_open_locked(tsync_store *s)
{
    uint8_t site[TSYNC__SITE_BYTES];
    uint64_t mseq, head;
    int rc = 0;
    if (mark_read(s, site, &mseq) != 0) return 0;
    if (memcmp(site, s->site, TSYNC__SITE_BYTES) != 0) return 0; /* an older identity's */
    memcpy(s->mark_site, site, sizeof site);
    s->mark_seq = mseq;
    s->mark_known = 1;
    if ((rc = own_head(s, &head))) return rc;
    if (head >= mseq || s->read_only) return 0;
    return renew_locked(s, "marker", head, mseq);
}

int tsync__identity_refresh_locked(tsync_store *s)
{
    int64_t idx = meta_int(s, "local_site");
    if (idx <= 0 || (uint32_t)idx == s->local_idx) return 0;
    /* Another handle took a new incarnation (or opened with another key file: then this reload
     * finds our own site again and nothing changes). */
    uint8_t inc[TSYNC__INC_BYTES];
    memcpy(inc, s->inc, sizeof inc);
    int rc = tsync__key_load_or_create(s, 0);
    if (rc || memcmp(inc, s->inc, sizeof inc) == 0) return rc;
    tsync__site_id(s->pk, s->inc, s->site);
    return tsync__site_index(s, s->site, s->pk, s->inc, &s->local_idx);
}

int tsync__identity_renew(tsync_store *s, uint64_t log_seq, uint64_t seen)
{
    if (s->read_only) return tsync__err(TSYNC_EINVAL, "the database is open read-only");
    int rc = tsync__exec(s, "BEGIN IMMEDIATE");
    if (rc) return rc;
    uint8_t inc[TSYNC__INC_BYTES];
    memcpy(inc, s->inc, sizeof inc);
    /* Another handle may have renewed already: then take its identity, do not renew twice. */
    rc = tsync__key_load_or_create(s, 0);
    if (rc == 0 && memcmp(inc, s->inc, sizeof inc) != 0) {
        tsync__site_id(s->pk, s->inc, s->site);
        rc = tsync__site_index(s, s->site, s->pk, s->inc, &s->local_idx);
    } else if (rc == 0) {
        rc = renew_locked(s, "peer", log_seq, seen);
    }
    if (rc == 0) return tsync__exec(s, "COMMIT");
    tsync__rollback(s);
    return rc;
}

unsigned tsync__identity_renewals(tsync_store *s)
{
    return s->renewals;
}

int tsync__identity_rollbacks(tsync_store *s, int64_t *count, char **last_json)
{
    *count = 0;
    if (last_json) *last_json = NULL;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT (SELECT v FROM tsync_meta WHERE k='rollbacks'), "
                           "(SELECT v FROM tsync_meta WHERE k='rollback_last')",
                           -1, &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "read metadata");
    if (sqlite3_step(st) == SQLITE_ROW) {
        *count = sqlite3_column_int64(st, 0);
        const char *t = (const char *)sqlite3_column_text(st, 1);
        if (last_json && t) *last_json = strdup(t);
    }
    sqlite3_finalize(st);
    return 0;
}
