/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/prune.c — keeping the batch log bounded (docs/NODE.md, "Pruning and snapshots";
 * docs/DATA_MODEL.md, "The log and its horizon").
 *
 * Two rules delete old batch bodies, each leaving a stub (hash kept, body empty) at the highest
 * batch it removes of an origin, so chains continue and a peer below it is told it needs a
 * snapshot (store/sync.c):
 * - acknowledgements (enrolled nodes): what every certified member acknowledged to us, except the
 *   newest `keep` of each origin. Loses nothing, but waits for the slowest member forever.
 * - the policy (every database): the log's bodies are kept within a count, a byte size and an age,
 *   whoever acknowledged what. A till behind the new horizon gets a snapshot from an enrolled peer.
 *
 * Design notes. The policy never deletes what only this log holds or what a later step reads:
 * the newest batch of each origin (a peer one behind gets batches; enrolment reads its clock), our
 * own batches above the marker (never handed to a peer or a bundle: a lone till's only history)
 * or, where tills acknowledge to a node here, above what the furthest of them acknowledged,
 * batches parked row changes point into, and every batch of an origin frozen after a fork (its
 * counters' common prefix is read from the log). Held batches live in tsync_held, untouched. Count
 * and bytes are cut oldest first in the order this log received them (its rowid), age by the
 * batch's own clock (the HLC at the head of its body, read without loading the body).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "logrun_int.h"
#include "collect_int.h"
#include "conflicts_int.h"
#include "internal.h"
#include "store/sync.h"
#include "tillsync/status.h"

/* ---------------------------------------------------------------- acknowledgements */

static int acks_table(tsync_store *s)
{
    return tsync__exec(s, "CREATE TABLE IF NOT EXISTS tsync_acks(pk BLOB PRIMARY KEY, vv BLOB NOT "
                          "NULL, at_ms INTEGER NOT NULL) WITHOUT ROWID");
}

/* An acknowledged vector is stored as (site 16 bytes, seq 8 bytes big-endian) entries. */
int tsync__sync_ack_put(tsync_store *s, const uint8_t pk[TSYNC__PK_BYTES], const tsync__vv *vv)
{
    int rc = acks_table(s);
    if (rc) return rc;
    size_t len = vv->n * 24;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (size_t i = 0; i < vv->n; i++) {
        memcpy(buf + i * 24, vv->e[i].site, TSYNC__SITE_BYTES);
        for (int b = 0; b < 8; b++) buf[i * 24 + 16 + b] = (uint8_t)(vv->e[i].seq >> (56 - 8 * b));
    }
    sqlite3_stmt *st;
    rc = sqlite3_prepare_v2(s->db, "INSERT OR REPLACE INTO tsync_acks VALUES(?1, ?2, ?3)", -1, &st,
                            NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_blob(st, 1, pk, TSYNC__PK_BYTES, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, buf, (int)len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (int64_t)tsync__now_ms(s));
        rc = sqlite3_step(st);
        rc = rc == SQLITE_DONE ? SQLITE_OK : rc;
        sqlite3_finalize(st);
    }
    free(buf);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "record an acknowledgement");
    /* Collection counts only acknowledgements stored after it marked rows (store/collect.c). */
    return tsync__collect_ack_gen(s, pk);
}

/* The seq of site in a stored acknowledgement blob (0 when absent). */
static uint64_t ack_seq(const uint8_t *blob, int len, const uint8_t *site)
{
    for (int i = 0; i + 24 <= len; i += 24)
        if (memcmp(blob + i, site, TSYNC__SITE_BYTES) == 0) {
            uint64_t v = 0;
            for (int b = 0; b < 8; b++) v = v << 8 | blob[i + 16 + b];
            return v;
        }
    return 0;
}

/* Deletes the bodies of origin idx below h and makes h a stub. *n += rows deleted or emptied. */
static int cut_at(tsync_store *s, int64_t idx, uint64_t h, size_t *n)
{
    sqlite3_stmt *del = tsync__prep(s, "DELETE FROM tsync_log WHERE site=?1 AND seq<?2");
    if (!del) return TSYNC_EIO;
    sqlite3_bind_int64(del, 1, idx);
    sqlite3_bind_int64(del, 2, (int64_t)h);
    int rc = sqlite3_step(del);
    sqlite3_reset(del);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "prune the log");
    *n += (size_t)sqlite3_changes(s->db);
    sqlite3_stmt *stub =
        tsync__prep(s, "UPDATE tsync_log SET body=X'' WHERE site=?1 AND seq=?2 AND length(body)>0");
    if (!stub) return TSYNC_EIO;
    sqlite3_bind_int64(stub, 1, idx);
    sqlite3_bind_int64(stub, 2, (int64_t)h);
    rc = sqlite3_step(stub);
    sqlite3_reset(stub);
    if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "prune the log");
    *n += (size_t)sqlite3_changes(s->db);
    /* The runs whose batches are all gone or the stub now (store/log_run.c). */
    return tsync__logrun_prune(s, idx, h + 1);
}

/* Ends a prune's transaction: commits it after rc 0 (then *pruned = n, when asked), else rolls it
 * back. rc, or the commit's failure. */
static int finish(tsync_store *s, int rc, size_t n, size_t *pruned)
{
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    rc = tsync__commit(s);
    if (rc == 0 && pruned) *pruned = n;
    return rc;
}

int tsync__sync_prune(tsync_store *s, const uint8_t *members, size_t nmembers, uint64_t keep,
                      size_t *pruned)
{
    if (pruned) *pruned = 0;
    if (nmembers == 0) return 0; /* nobody to wait for is not "everybody acknowledged" */
    int rc = acks_table(s);
    if (rc) return rc;
    if ((rc = tsync__begin(s))) return rc;
    sqlite3_stmt *sites = NULL, *ack = NULL, *parked = NULL;
    uint8_t **blobs = calloc(nmembers, sizeof *blobs);
    int *lens = calloc(nmembers, sizeof *lens);
    size_t n = 0;
    if (!blobs || !lens) {
        rc = tsync__err(TSYNC_ENOMEM, "out of memory");
        goto out;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT vv FROM tsync_acks WHERE pk=?1", -1, &ack, NULL) ||
        sqlite3_prepare_v2(s->db, "SELECT idx, site, seq FROM tsync_sites WHERE seq > 0", -1,
                           &sites, NULL) ||
        sqlite3_prepare_v2(s->db, "SELECT min(seq) FROM tsync_parked WHERE site=?1", -1, &parked,
                           NULL)) {
        rc = tsync__err_sqlite(s->db, SQLITE_ERROR, "prune the log");
        goto out;
    }
    for (size_t m = 0; m < nmembers; m++) {
        sqlite3_reset(ack);
        sqlite3_bind_blob(ack, 1, members + m * TSYNC__PK_BYTES, TSYNC__PK_BYTES, SQLITE_STATIC);
        if (sqlite3_step(ack) != SQLITE_ROW) goto out; /* a member never acknowledged anything */
        lens[m] = sqlite3_column_bytes(ack, 0);
        blobs[m] = malloc((size_t)lens[m] + 1);
        if (!blobs[m]) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            goto out;
        }
        if (lens[m] > 0) memcpy(blobs[m], sqlite3_column_blob(ack, 0), (size_t)lens[m]);
    }
    while (rc == 0 && sqlite3_step(sites) == SQLITE_ROW) {
        int64_t idx = sqlite3_column_int64(sites, 0);
        const uint8_t *site = sqlite3_column_blob(sites, 1);
        uint64_t head = (uint64_t)sqlite3_column_int64(sites, 2);
        if (sqlite3_column_bytes(sites, 1) != TSYNC__SITE_BYTES || head <= keep) continue;
        uint64_t h = head - keep;
        for (size_t m = 0; m < nmembers; m++) {
            uint64_t a = ack_seq(blobs[m], lens[m], site);
            if (a < h) h = a;
        }
        /* Parked row changes are re-applied from their batch bodies later: keep those. */
        sqlite3_reset(parked);
        sqlite3_bind_int64(parked, 1, idx);
        if (sqlite3_step(parked) == SQLITE_ROW && sqlite3_column_type(parked, 0) != SQLITE_NULL) {
            uint64_t p = (uint64_t)sqlite3_column_int64(parked, 0);
            if (p <= h) h = p - 1;
        }
        if (h < 2) continue;
        rc = cut_at(s, idx, h, &n);
    }
out:
    for (size_t m = 0; blobs && m < nmembers; m++) free(blobs[m]);
    free(blobs);
    free(lens);
    sqlite3_finalize(sites);
    sqlite3_finalize(ack);
    sqlite3_finalize(parked);
    return finish(s, rc, n, pruned);
}

/* ---------------------------------------------------------------- the policy */

static const char *const POLICY_KEYS[3] = {"log_max_batches", "log_max_bytes", "log_max_age_ms"};

static int policy_version(const tsync_log_policy *p)
{
    if (!p) return tsync__err(TSYNC_EINVAL, "no log policy");
    if (p->version != TSYNC_LOG_POLICY_VERSION)
        return tsync__err(TSYNC_EVERSION, "tsync_log_policy of version %u (this library has %u)",
                          p->version, (unsigned)TSYNC_LOG_POLICY_VERSION);
    return 0;
}

int tsync_store_log_policy_set(tsync_store *s, const tsync_log_policy *p)
{
    int rc = policy_version(p);
    if (rc) return rc;
    const int64_t v[3] = {p->max_batches, p->max_bytes, p->max_age_ms};
    if ((rc = tsync__begin(s))) return rc;
    for (int i = 0; i < 3 && rc == 0; i++) rc = tsync__meta_int(s, POLICY_KEYS[i], NULL, v[i]);
    if (rc) {
        tsync__rollback(s);
        return rc;
    }
    return tsync__commit(s);
}

int tsync_store_log_policy_get(tsync_log_policy *out, tsync_store *s)
{
    int rc = policy_version(out);
    if (rc) return rc;
    int64_t v[3] = {0, 0, 0};
    /* A database that never had a policy set (or one opened read-only by an older build's
     * schema) reads as all defaults. */
    for (int i = 0; i < 3; i++)
        if (tsync__meta_int(s, POLICY_KEYS[i], &v[i], 0) != 0) v[i] = 0;
    out->max_batches = v[0];
    out->max_bytes = v[1];
    out->max_age_ms = v[2];
    return 0;
}

static int64_t pragma_int(tsync_store *s, const char *sql)
{
    sqlite3_stmt *st = tsync__prep(s, sql);
    if (!st) return 0;
    int64_t v = sqlite3_step(st) == SQLITE_ROW ? sqlite3_column_int64(st, 0) : 0;
    sqlite3_reset(st);
    return v;
}

/* Measured on tsync_log (100k rows, page size 4096): 64 B a row with a 1-byte body and no
 * signature, 67 B with a 100-byte body and none, 139 B with a signature. */
#define LOG_ROW_BYTES 66
#define LOG_SIG_BYTES 72

int tsync__log_stats_get(tsync_store *s, tsync__log_stats *out)
{
    memset(out, 0, sizeof *out);
    int64_t sigs = 0;
    /* length() of a blob reads its size from the record header, not its pages. */
    /* A received run's batches count their share of its row (TSYNC__LOG_BODY_BYTES), summed
     * per run. */
    sqlite3_stmt *st = tsync__prep(
        s, "SELECT count(*), total(length(body)>0), total(sig IS NOT NULL), total(length(body)) - "
           "total(length(body)=1) + "
           "(SELECT total(length(r.data) / r.n * (SELECT count(*) FROM tsync_log l WHERE l.site = "
           "r.site AND l.seq >= r.first_seq AND l.seq < r.first_seq + r.n AND length(l.body) = 1)) "
           "FROM tsync_log_runs r) FROM tsync_log");
    if (!st) return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        out->rows = sqlite3_column_int64(st, 0);
        out->batches = (int64_t)sqlite3_column_double(st, 1);
        sigs = (int64_t)sqlite3_column_double(st, 2);
        out->bytes = (int64_t)sqlite3_column_double(st, 3);
    }
    sqlite3_reset(st);
    if (rc != SQLITE_ROW) return tsync__err_sqlite(s->db, rc, "read the log's size");
    int64_t used = (pragma_int(s, "PRAGMA page_count") - pragma_int(s, "PRAGMA freelist_count")) *
                   pragma_int(s, "PRAGMA page_size");
    /* What is not log: the rows, their clocks and tombstones, the other tables. A log row costs
     * about LOG_ROW_BYTES besides its body (hash, ids, index entry, page slack), LOG_SIG_BYTES
     * more with a signature: a received run's batches but its last have none, so one flat 128 B
     * a row took a run of 100k batches' rows for ~6 MB of data they are not. */
    out->data_bytes = used - out->bytes - out->rows * LOG_ROW_BYTES - sigs * LOG_SIG_BYTES;
    if (out->data_bytes < 0) out->data_bytes = 0;
    return 0;
}

int tsync__log_policy_resolve(tsync_store *s, const tsync_log_policy *over,
                              const tsync__log_stats *st, tsync_log_policy *out)
{
    tsync_log_policy p = TSYNC_LOG_POLICY_INIT;
    int rc = tsync_store_log_policy_get(&p, s);
    if (rc) return rc;
    if (over && over->max_batches) p.max_batches = over->max_batches;
    if (over && over->max_bytes) p.max_bytes = over->max_bytes;
    if (over && over->max_age_ms) p.max_age_ms = over->max_age_ms;
    if (!p.max_batches) p.max_batches = TSYNC__LOG_DEFAULT_BATCHES;
    if (!p.max_age_ms) p.max_age_ms = TSYNC__LOG_DEFAULT_AGE_MS;
    if (!p.max_bytes) {
        /* The log may be as large as everything else, and never needs to be below 64 MiB. */
        p.max_bytes = st->data_bytes * TSYNC__LOG_DEFAULT_DATA_FACTOR;
        if (p.max_bytes < TSYNC__LOG_MIN_BYTES) p.max_bytes = TSYNC__LOG_MIN_BYTES;
    }
    *out = p;
    return 0;
}

/* One origin as the policy sees it. */
typedef struct {
    int64_t idx;
    uint64_t head, low; /* head; lowest seq whose body is held (0: none) */
    uint64_t cap;       /* the policy may stub up to here */
    uint64_t h;         /* where it will stub (0: nothing) */
} porigin;

/* The ms of batch (idx, seq)'s highest clock, read from the start of its body; 0 when the batch
 * is not held as a body (then it is not taken as old). */
static uint64_t batch_ms(tsync_store *s, int64_t idx, uint64_t seq)
{
    sqlite3_stmt *st = tsync__prep(
        s, "SELECT id, length(body) FROM tsync_log WHERE site=?1 AND seq=?2 AND length(body)>0");
    if (!st) return 0;
    sqlite3_bind_int64(st, 1, idx);
    sqlite3_bind_int64(st, 2, (int64_t)seq);
    int64_t id = -1, blen = 0;
    if (sqlite3_step(st) == SQLITE_ROW) {
        id = sqlite3_column_int64(st, 0);
        blen = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    if (id < 0) return 0;
    uint8_t head[64];
    int n, ok;
    if (blen == 1) {
        /* A batch of a received run (store/log_run.c): its body as rebuilt. */
        sqlite3_stmt *rb =
            tsync__prep(s, "SELECT tsync_log_body(site, seq, body) FROM tsync_log WHERE id=?1");
        if (!rb) return 0;
        sqlite3_bind_int64(rb, 1, id);
        ok = sqlite3_step(rb) == SQLITE_ROW;
        n = ok ? sqlite3_column_bytes(rb, 0) : 0;
        if (n > (int)sizeof head) n = (int)sizeof head;
        if (ok && n > 0) memcpy(head, sqlite3_column_blob(rb, 0), (size_t)n);
        sqlite3_reset(rb);
    } else {
        sqlite3_blob *b;
        if (sqlite3_blob_open(s->db, "main", "tsync_log", "body", id, 0, &b) != SQLITE_OK) return 0;
        n = sqlite3_blob_bytes(b);
        if (n > (int)sizeof head) n = (int)sizeof head;
        ok = sqlite3_blob_read(b, head, n, 0) == SQLITE_OK;
        sqlite3_blob_close(b);
    }
    if (!ok) return 0;
    /* [format, origin, seq, hlc_lo, hlc_hi, ...] (codec/codec.h) */
    tsync__mpr r;
    tsync__mpr_init(&r, head, (size_t)n);
    uint32_t items;
    uint64_t fmt, sq, lo, hi;
    uint8_t origin[TSYNC__SITE_BYTES];
    if (!tsync__mpr_fixarray(&r, &items) || !tsync__mpr_uint(&r, &fmt) ||
        !tsync__mpr_binfix(&r, origin, sizeof origin) || !tsync__mpr_uint(&r, &sq) ||
        !tsync__mpr_uint(&r, &lo) || !tsync__mpr_uint(&r, &hi))
        return 0;
    return tsync__hlc_ms(hi);
}

/* The highest seq in [o->low, o->cap] whose clock is before cutoff (0: none). Clocks rise with
 * seq within an origin, so a binary search reads about log2(n) body heads. */
static uint64_t age_cut(tsync_store *s, const porigin *o, uint64_t cutoff)
{
    if (!o->low || o->cap < o->low) return 0;
    uint64_t ms = batch_ms(s, o->idx, o->low);
    if (!ms || ms >= cutoff) return 0;
    uint64_t lo = o->low, hi = o->cap; /* lo is old; find the last old one */
    while (lo < hi) {
        uint64_t mid = lo + (hi - lo + 1) / 2;
        uint64_t m = batch_ms(s, o->idx, mid);
        if (m && m < cutoff)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* How far another till is known to hold our own batches: the marker (handed to a peer or
 * written into a bundle), and, where tills acknowledged to a node here, no further than the
 * furthest of them acknowledged (a batch handed over may have been lost on the way). Our batches
 * above it never left this database, and here they are all there is. */
static uint64_t own_held_elsewhere(tsync_store *s)
{
    uint64_t held =
        s->mark_known && !memcmp(s->mark_site, s->site, TSYNC__SITE_BYTES) ? s->mark_seq : 0;
    sqlite3_stmt *st;
    if (held == 0 ||
        sqlite3_prepare_v2(s->db, "SELECT vv FROM tsync_acks", -1, &st, NULL) != SQLITE_OK)
        return held;
    uint64_t acked = 0;
    int any = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        uint64_t a = ack_seq(sqlite3_column_blob(st, 0), sqlite3_column_bytes(st, 0), s->site);
        any = 1;
        if (a > acked) acked = a;
    }
    sqlite3_finalize(st);
    return any && acked < held ? acked : held;
}

static int load_origins(tsync_store *s, porigin **out, size_t *nout)
{
    *out = NULL;
    *nout = 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT s.idx, s.seq, s.frozen_seq, (SELECT min(seq) FROM tsync_log l "
                           "WHERE l.site = s.idx AND length(l.body) > 0), (SELECT min(seq) FROM "
                           "tsync_parked p WHERE p.site = s.idx) FROM tsync_sites s WHERE s.seq > "
                           "0 ORDER BY s.idx",
                           -1, &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "prune the log");
    size_t cap = 0;
    int rc = 0;
    porigin *v = NULL;
    while (sqlite3_step(st) == SQLITE_ROW) {
        if (*nout == cap) {
            cap = cap ? cap * 2 : 16;
            porigin *nv = realloc(v, cap * sizeof *nv);
            if (!nv) {
                rc = tsync__err(TSYNC_ENOMEM, "out of memory");
                break;
            }
            v = nv;
        }
        porigin *o = &v[(*nout)++];
        memset(o, 0, sizeof *o);
        o->idx = sqlite3_column_int64(st, 0);
        o->head = (uint64_t)sqlite3_column_int64(st, 1);
        o->low = (uint64_t)sqlite3_column_int64(st, 3);
        /* The newest batch of every origin stays. */
        o->cap = o->head > 0 ? o->head - 1 : 0;
        if (sqlite3_column_type(st, 2) != SQLITE_NULL) o->cap = 0; /* frozen after a fork */
        if (sqlite3_column_type(st, 4) != SQLITE_NULL) {
            uint64_t p = (uint64_t)sqlite3_column_int64(st, 4);
            if (p <= o->cap) o->cap = p ? p - 1 : 0;
        }
        if (o->idx == (int64_t)s->local_idx) {
            uint64_t held = own_held_elsewhere(s);
            if (held < o->cap) o->cap = held;
        }
    }
    sqlite3_finalize(st);
    if (rc) {
        free(v);
        *nout = 0;
        return rc;
    }
    *out = v;
    return 0;
}

static porigin *find_origin(porigin *v, size_t n, int64_t idx)
{
    size_t lo = 0, hi = n;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (v[mid].idx < idx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < n && v[lo].idx == idx ? &v[lo] : NULL;
}

/* Bodies of origin o at or below h (count and bytes), to take off the totals. */
static int below(tsync_store *s, const porigin *o, uint64_t h, int64_t *count, int64_t *bytes)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT count(*), total(" TSYNC__LOG_BODY_BYTES ") FROM "
                                      "tsync_log WHERE site=?1 AND seq<=?2 AND length(body)>0");
    if (!st) return TSYNC_EIO;
    sqlite3_bind_int64(st, 1, o->idx);
    sqlite3_bind_int64(st, 2, (int64_t)h);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *count -= sqlite3_column_int64(st, 0);
        *bytes -= (int64_t)sqlite3_column_double(st, 1);
    }
    sqlite3_reset(st);
    return rc == SQLITE_ROW ? 0 : tsync__err_sqlite(s->db, rc, "prune the log");
}

/* Oldest first (as this log received them), the bodies the bounds still exceed by. */
static int size_cut(tsync_store *s, porigin *v, size_t nv, const tsync_log_policy *p, int64_t count,
                    int64_t bytes)
{
    int over_n = p->max_batches >= 0 && count > p->max_batches;
    int over_b = p->max_bytes >= 0 && bytes > p->max_bytes;
    if (!over_n && !over_b) return 0;
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(s->db,
                           "SELECT site, seq, " TSYNC__LOG_BODY_BYTES " FROM tsync_log WHERE "
                           "length(body) > 0 ORDER BY id",
                           -1, &st, NULL) != SQLITE_OK)
        return tsync__err_sqlite(s->db, SQLITE_ERROR, "prune the log");
    int rc;
    while ((over_n || over_b) && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        porigin *o = find_origin(v, nv, sqlite3_column_int64(st, 0));
        uint64_t seq = (uint64_t)sqlite3_column_int64(st, 1);
        if (!o || seq <= o->h || seq > o->cap) continue;
        o->h = seq;
        count--;
        bytes -= sqlite3_column_int64(st, 2);
        over_n = p->max_batches >= 0 && count > p->max_batches;
        over_b = p->max_bytes >= 0 && bytes > p->max_bytes;
    }
    sqlite3_finalize(st);
    return 0;
}

/* Where the policy cuts each origin (*v, *nv; v[i].h 0: not at all); *any: whether anywhere. */
static int plan(tsync_store *s, const tsync_log_policy *over, porigin **v, size_t *nv, int *any)
{
    *any = 0;
    tsync__log_stats st;
    tsync_log_policy p;
    int rc;
    if ((rc = tsync__log_stats_get(s, &st)) || (rc = tsync__log_policy_resolve(s, over, &st, &p)) ||
        (rc = load_origins(s, v, nv)))
        return rc;
    int64_t count = st.batches, bytes = st.bytes;
    if (p.max_age_ms >= 0) {
        uint64_t now = tsync__now_ms(s);
        uint64_t cutoff = now > (uint64_t)p.max_age_ms ? now - (uint64_t)p.max_age_ms : 0;
        for (size_t i = 0; i < *nv && rc == 0; i++) {
            (*v)[i].h = age_cut(s, &(*v)[i], cutoff);
            if ((*v)[i].h) rc = below(s, &(*v)[i], (*v)[i].h, &count, &bytes);
        }
    }
    if (rc == 0) rc = size_cut(s, *v, *nv, &p, count, bytes);
    for (size_t i = 0; i < *nv; i++) *any |= (*v)[i].h != 0;
    return rc;
}

static int policy_cut(tsync_store *s, const tsync_log_policy *over, size_t *pruned)
{
    porigin *v = NULL;
    size_t nv = 0, n = 0;
    int any = 0, rc;
    /* Most rounds find nothing to do: find out under a read transaction, so that the app's
     * writes never wait for a prune that deletes nothing. */
    if (sqlite3_get_autocommit(s->db)) {
        if ((rc = tsync__exec(s, "BEGIN"))) return rc;
        rc = plan(s, over, &v, &nv, &any);
        tsync__exec(s, "COMMIT");
        free(v);
        v = NULL;
        if (rc || !any) return rc;
    }
    if ((rc = tsync__begin(s))) return rc;
    rc = plan(s, over, &v, &nv, &any);
    for (size_t i = 0; i < nv && rc == 0; i++)
        if (v[i].h) rc = cut_at(s, v[i].idx, v[i].h, &n);
    free(v);
    return finish(s, rc, n, pruned);
}

/* The policy's cut, then (outside a caller's transaction) a round of collecting deleted rows. */
int tsync__sync_prune_policy(tsync_store *s, const tsync_log_policy *over, size_t *pruned)
{
    if (pruned) *pruned = 0;
    if (s->read_only) return tsync__err(TSYNC_EINVAL, "the database is open read-only");
    int rc = policy_cut(s, over, pruned);
    /* The conflict journal's bound: resolved entries older than TSYNC_CONFLICTS_KEEP_DAYS. */
    if (rc == 0 && sqlite3_get_autocommit(s->db)) {
        rc = tsync__conflicts_trim(s, NULL);
        if (rc == TSYNC_EBUSY) rc = 0;
    }
    /* A busy database (the app writing) only delays collection to the next round. */
    if (rc == 0 && sqlite3_get_autocommit(s->db)) {
        rc = tsync__collect(s, NULL);
        if (rc == TSYNC_EBUSY) rc = 0;
    }
    return rc;
}

int tsync_store_prune(tsync_store *s, size_t *pruned)
{
    return tsync__sync_prune_policy(s, NULL, pruned);
}

int tsync_store_collect(tsync_store *s, size_t *collected)
{
    if (collected) *collected = 0;
    if (s->read_only) return tsync__err(TSYNC_EINVAL, "the database is open read-only");
    return tsync__collect(s, collected);
}

/* ---------------------------------------------------------------- the horizon, for status */

int tsync__log_horizon(tsync_store *s, int (*each)(void *ctx, const tsync__horizon *h), void *ctx)
{
    /* The highest stub of each origin: below it nothing is held as a body. */
    sqlite3_stmt *st = tsync__prep(s, "SELECT s.site, max(l.seq), s.seq FROM tsync_log l JOIN "
                                      "tsync_sites s ON s.idx = l.site WHERE length(l.body) = 0 "
                                      "GROUP BY l.site ORDER BY s.site");
    if (!st) return tsync_error_last()->code ? tsync_error_last()->code : TSYNC_EIO;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__SITE_BYTES) continue;
        tsync__horizon h = {.seq = (uint64_t)sqlite3_column_int64(st, 1),
                            .head = (uint64_t)sqlite3_column_int64(st, 2)};
        memcpy(h.site, sqlite3_column_blob(st, 0), TSYNC__SITE_BYTES);
        rc = each(ctx, &h);
    }
    sqlite3_reset(st);
    return rc;
}

typedef struct {
    const uint8_t *blob;
    int len;
    tsync__horizon worst; /* the first origin the till is behind on */
    int behind;
} behind_ctx;

static int behind_one(void *ctx, const tsync__horizon *h)
{
    behind_ctx *b = ctx;
    uint64_t a = ack_seq(b->blob, b->len, h->site);
    if (a < h->seq && !b->behind) {
        b->worst = *h;
        b->worst.acked = a;
        b->behind = 1;
    }
    return 0;
}

int tsync__log_behind(tsync_store *s, int (*each)(void *ctx, const tsync__behind *b), void *ctx)
{
    sqlite3_stmt *st;
    /* No acknowledgements table: no till ever acknowledged anything to a node here. */
    if (sqlite3_prepare_v2(s->db, "SELECT pk, vv, at_ms FROM tsync_acks ORDER BY pk", -1, &st,
                           NULL) != SQLITE_OK)
        return 0;
    int rc = 0;
    while (rc == 0 && sqlite3_step(st) == SQLITE_ROW) {
        if (sqlite3_column_bytes(st, 0) != TSYNC__PK_BYTES) continue;
        behind_ctx b = {.blob = sqlite3_column_blob(st, 1), .len = sqlite3_column_bytes(st, 1)};
        if ((rc = tsync__log_horizon(s, behind_one, &b)) || !b.behind) continue;
        tsync__behind r = {.horizon = b.worst, .acked_ms = sqlite3_column_int64(st, 2)};
        memcpy(r.pk, sqlite3_column_blob(st, 0), TSYNC__PK_BYTES);
        rc = each(ctx, &r);
    }
    sqlite3_finalize(st);
    return rc;
}
