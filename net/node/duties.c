/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/duties.c — what the node does on timers rather than on a message: sealing local
 * commits, pruning the log, noticing new trust records and a new incarnation, closing sessions
 * due, liveness, the shop's clock, scheduled backups (on a worker thread), and riding out a full
 * disk.
 */
#include <dirent.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/identity.h"
#include "tillsync/backup.h"
#include "node_int.h"

#define PING_IDLE_MS    1000
#define CLOCK_CHECK_MS  1000  /* the shop's clock is worked out this often */
#define CLOCK_PING_MS   10000 /* a peer's clock is measured again this often (PING/PONG) */
#define CLOCK_RECORD_MS 20000 /* and recorded for the sealers this often (while it matters) */

/* ---------------------------------------------------------------- a full disk
 *
 * SQLITE_FULL does not stop the node: what it holds stays intact (the failed transaction rolls
 * back), its sessions go on serving what it has, and sealing and merging are tried again after
 * 0.5 s, doubling up to 30 s. Merges queued meanwhile are dropped once the queue is full: the
 * peers still hold those batches and offer them again when our vector shows we lack them. */
#define FULL_BACKOFF_MIN_MS 500
#define FULL_BACKOFF_MAX_MS 30000
#define FULL_LOG_EVERY_MS   60000

void tsync__node_disk_full_hit(tsync_node *n, const char *what)
{
    uint64_t now = tsync__mono_ms();
    if (!n->full.on) {
        n->full.on = 1;
        n->full.since_ms = tsync__wall_ms();
        n->full.backoff_ms = FULL_BACKOFF_MIN_MS;
        n->full.logged_mono = now;
        n->status_dirty = 1;
        tsync__node_error(
            n, TSYNC_EFULL,
            "disk full: cannot %s (%s); the node keeps its sessions and retries; free space on "
            "the disk of %s",
            what, tsync__node_errtext(), n->db_path);
    } else {
        n->full.backoff_ms = n->full.backoff_ms * 2 > FULL_BACKOFF_MAX_MS ? FULL_BACKOFF_MAX_MS
                                                                          : n->full.backoff_ms * 2;
        if (now - n->full.logged_mono >= FULL_LOG_EVERY_MS) {
            n->full.logged_mono = now;
            tsync__node_error(n, TSYNC_EFULL, "disk full for %llu s: still cannot %s; retrying",
                              (unsigned long long)((tsync__wall_ms() - n->full.since_ms) / 1000),
                              what);
        }
    }
    n->full.retry_mono = now + n->full.backoff_ms;
}

void tsync__node_disk_full_clear(tsync_node *n)
{
    if (!n->full.on) return;
    tsync__node_log(n, TSYNC_LOG_INFO,
                    "disk space is back after %llu s: sealing and merging resume",
                    (unsigned long long)((tsync__wall_ms() - n->full.since_ms) / 1000));
    n->full.on = 0;
    n->full.retry_mono = 0;
    n->status_dirty = 1;
}

/* Waiting out the backoff of a full disk. */
int tsync__node_disk_full_waiting(const tsync_node *n)
{
    return n->full.on && tsync__mono_ms() < n->full.retry_mono;
}

/* ---------------------------------------------------------------- scheduled backups */

static void *backup_main(void *arg)
{
    tsync_node *n = arg;
    tsync_store *s;
    int rc = tsync__node_store_open(n, &s);
    if (rc == 0) {
        rc = tsync_backup(s, n->backup.path, NULL, NULL);
        tsync_store_free(s);
    }
    if (rc) snprintf(n->backup.err, sizeof n->backup.err, "%s", tsync__node_errtext());
    n->backup.rc = rc;
    atomic_store(&n->backup.state, 2);
    return NULL;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Keeps the newest backup_keep backups of this database in backup_dir (names sort by time). */
static void backup_rotate(tsync_node *n, const char *prefix)
{
    DIR *d = opendir(n->o.backup_dir);
    if (!d) return;
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        size_t l = strlen(e->d_name);
        if (strncmp(e->d_name, prefix, pl) != 0 || l < pl + 7 ||
            strcmp(e->d_name + l - 6, ".tsbak") != 0)
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 16;
            char **nm = realloc(names, cap * sizeof *nm);
            if (!nm) break;
            names = nm;
        }
        if (!(names[nn] = strdup(e->d_name))) break;
        nn++;
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_str);
    for (size_t i = 0; i + (size_t)n->o.backup_keep < nn; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", n->o.backup_dir, names[i]);
        if (remove(path) == 0) tsync__node_log(n, TSYNC_LOG_INFO, "removed old backup %s", path);
    }
    for (size_t i = 0; i < nn; i++) free(names[i]);
    free(names);
}

static const char *base_name(const char *path)
{
    const char *b = strrchr(path, '/');
    return b ? b + 1 : path;
}

void tsync__node_backup_tick(tsync_node *n, uint64_t now)
{
    if (!n->o.backup_every_ms || !n->o.backup_dir) return;
    int st = atomic_load(&n->backup.state);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s-", base_name(n->db_path));
    if (st == 2) {
        pthread_join(n->backup.thread, NULL);
        atomic_store(&n->backup.state, 0);
        if (n->backup.rc) {
            tsync__node_error(n, n->backup.rc, "scheduled backup to %s failed: %s", n->backup.path,
                              n->backup.err);
            n->backup.failed++;
        } else {
            tsync__node_log(n, TSYNC_LOG_INFO, "backup written: %s", n->backup.path);
            n->backup.done++;
            n->backup.last_ms = tsync__wall_ms();
            backup_rotate(n, prefix);
        }
        n->status_dirty = 1;
        return;
    }
    if (st != 0 || now < n->backup.next_mono) return;
    n->backup.next_mono = now + n->o.backup_every_ms;
    uint64_t w = tsync__wall_ms();
    time_t t = (time_t)(w / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    snprintf(n->backup.path, sizeof n->backup.path, "%s/%s%04d%02d%02dT%02d%02d%02d.%03uZ.tsbak",
             n->o.backup_dir, prefix, tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
             tm.tm_min, tm.tm_sec, (unsigned)(w % 1000));
    atomic_store(&n->backup.state, 1);
    if (pthread_create(&n->backup.thread, NULL, backup_main, n) != 0) {
        atomic_store(&n->backup.state, 0);
        tsync__node_error(n, TSYNC_ERROR, "cannot start the backup thread");
    }
}

void tsync__node_backup_finish(tsync_node *n)
{
    if (atomic_load(&n->backup.state) != 0) {
        pthread_join(n->backup.thread, NULL); /* a backup in progress completes first */
        atomic_store(&n->backup.state, 2);
        tsync__node_backup_tick(n, tsync__mono_ms());
    }
}

/* ---------------------------------------------------------------- the shop's clock */

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

/* Works out the shop's clock: the median offset of the connected peers' clocks (measured in the
 * HELLO and again by PING/PONG every CLOCK_PING_MS). While our wall clock is more than
 * TSYNC__CLOCK_OFF_MS off it, or our HLC ran more than the skew bound ahead of it, the offset is
 * recorded in the database, where every sealer takes it (store/seal.c: stamp with the shop's time;
 * take the HLC back), and merge judges "too far ahead" against it. Says so in the log once a
 * minute and in the status (docs/DATA_MODEL.md, "Clocks"). */
void tsync__node_clock_tick(tsync_node *n, uint64_t now)
{
    if (now - n->clock.check_mono < CLOCK_CHECK_MS) return;
    n->clock.check_mono = now;
    uint64_t wall = tsync__wall_ms();
    int64_t base = (int64_t)wall - (int64_t)now;
    /* Our own clock counts too (offset 0): with one wrong clock among three tills, each good
     * till sees {0, 0, wrong} and keeps its own; the wrong one sees {wrong, 0, 0}. */
    int64_t d[65] = {0};
    size_t k = 0;
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->up || !p->verified || p->close_at_mono || !p->clock_mono) continue;
        if (now - p->clock_mono >= CLOCK_PING_MS) {
            tsync__msg m = {.type = TSYNC__WIRE_PING};
            m.ping.ms = now;
            tsync__node_send_msg(n, p, &m);
        }
        /* Measured before our own clock jumped: no longer a measure of it. */
        if (p->clock_base_ms - base > 2000 || base - p->clock_base_ms > 2000) continue;
        if (k < sizeof d / sizeof d[0] - 1) d[++k] = p->clock_delta_ms;
    }
    int64_t off = 0;
    if (k) {
        /* Of an even count the middle value nearer ours: two tills cannot tell whose clock is
         * wrong, so neither corrects its own. */
        size_t m = k + 1;
        qsort(d, m, sizeof d[0], cmp_i64);
        int64_t lo = d[(m - 1) / 2], hi = d[m / 2];
        off = (lo < 0 ? -lo : lo) <= (hi < 0 ? -hi : hi) ? lo : hi;
    }
    tsync__sync_clock ck;
    int have = tsync__sync_clock_get(n->s, &ck) == 0;
    int64_t shop_now = (int64_t)wall + off;
    int off_big = k && (off > TSYNC__CLOCK_OFF_MS || off < -TSYNC__CLOCK_OFF_MS);
    int hlc_ahead = k && have && (int64_t)ck.hlc_ms - shop_now > (int64_t)ck.skew_bound_ms;
    if (n->clock.known != (k > 0) || n->clock.peers != k ||
        (off_big && (off - n->clock.off_ms > 1000 || n->clock.off_ms - off > 1000)))
        n->status_dirty = 1;
    n->clock.known = k > 0;
    n->clock.peers = k;
    n->clock.off_ms = off;
    if (off_big || hlc_ahead) {
        if (!n->clock.recorded || now - n->clock.rec_mono >= CLOCK_RECORD_MS ||
            off - n->clock.rec_off_ms > 1000 || n->clock.rec_off_ms - off > 1000) {
            if (tsync__sync_shop_clock(n->s, 1, off) == 0) {
                n->clock.recorded = 1;
                n->clock.rec_mono = now;
                n->clock.rec_off_ms = off;
            }
        }
    } else if (n->clock.recorded && tsync__sync_shop_clock(n->s, 0, 0) == 0) {
        n->clock.recorded = 0;
    }
    if (off_big && (!n->clock.warned_mono || now - n->clock.warned_mono >= CLOCK_LOG_MS)) {
        n->clock.warned_mono = now;
        tsync__node_log(n, TSYNC_LOG_WARN,
                        "this till's clock is %s the shop's median by %" PRId64
                        " s (%zu peer(s)): its "
                        "changes are stamped with the shop's time; set this machine's clock right",
                        off < 0 ? "ahead of" : "behind", (off < 0 ? -off : off) / 1000, k);
    } else if (!off_big && k && n->clock.warned_mono) {
        n->clock.warned_mono = 0;
        tsync__node_log(n, TSYNC_LOG_INFO, "this till's clock agrees with the shop's again");
    }
    if (hlc_ahead &&
        (!n->clock.hlc_warned_mono || now - n->clock.hlc_warned_mono >= CLOCK_LOG_MS)) {
        n->clock.hlc_warned_mono = now;
        tsync__node_log(
            n, TSYNC_LOG_WARN,
            "this till's hybrid clock is %" PRId64 " s ahead of the shop's time (written while "
            "its wall clock was wrong); the next change takes it back to the shop's time",
            ((int64_t)ck.hlc_ms - shop_now) / 1000);
    }
    if (have && ck.resets > n->clock.resets_seen) {
        if (n->clock.resets_seen >= 0)
            tsync__node_log(n, TSYNC_LOG_WARN,
                            "this till's hybrid clock went back from %" PRId64
                            " s ahead to the shop's "
                            "time: its sales are no longer held by its peers",
                            (ck.reset_from_ms - ck.reset_at_ms) / 1000);
        n->clock.resets_seen = ck.resets;
        n->status_dirty = 1;
    }
}

/* Liveness is the node's, not ZeroMQ's (see tsync__tp_options.heartbeat_ivl_ms): a peer we have
 * sent nothing to for PING_IDLE_MS gets a PING, so every live session carries a message each way
 * at least that often; a session with no message for liveness_ms is taken as gone (a cut cable
 * sends no FIN) and closed, and a static peer is dialled again. */
void tsync__node_liveness(tsync_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->up || p->close_at_mono) continue;
        if (p->verified && now >= p->tx_mono && now - p->tx_mono >= PING_IDLE_MS) {
            tsync__msg m = {.type = TSYNC__WIRE_PING};
            m.ping.ms = now;
            tsync__node_send_msg(n, p, &m);
        }
        if (now <= p->rx_mono || now - p->rx_mono < (uint64_t)n->o.liveness_ms) continue;
        /* Bytes still arriving (a large message in transit) keep the session alive. */
        int idle = tsync__tp_peer_rx_idle_ms(n->tp, p->id);
        if (idle >= 0 && idle < n->o.liveness_ms) continue;
        char lb[LBL];
        tsync__node_log(n, TSYNC_LOG_INFO, "no word from %s for %.1f s: taking the link as lost",
                        tsync__node_peer_label(p, lb), (double)(now - p->rx_mono) / 1000);
        int was = p->verified;
        uint32_t id = p->id;
        int si = p->static_idx;
        if (was) tsync__node_notify_peer(n, p, 0);
        tsync__tp_close(n->tp, id);
        if (p->mdns && !p->inbound && !tsync__node_advertised(n, p->pk)) {
            tsync__node_peer_free(p); /* it withdrew its advertisement: it left */
            n->status_dirty = 1;
            continue;
        }
        if (p->mdns && !p->inbound) {
            /* Dial the advertised address again (a new advertisement may change it). */
            char ep[TSYNC__TP_ADDR_LEN];
            uint8_t key[TSYNC__PK_BYTES];
            snprintf(ep, sizeof ep, "%s", p->addr);
            memcpy(key, p->pk, sizeof key);
            tsync__node_peer_free(p);
            uint32_t nid;
            if (tsync__tp_connect(n->tp, ep, key, &nid) == 0) {
                npeer *q = tsync__node_peer_get(n, nid);
                if (q) {
                    q->mdns = q->key_known = 1;
                    memcpy(q->pk, key, sizeof key);
                    snprintf(q->addr, sizeof q->addr, "%s", ep);
                }
            }
            n->status_dirty = 1;
            continue;
        }
        if (p->inbound || si < 0) {
            tsync__node_session_reset(p);
            p->up = 0;
            continue;
        }
        /* A peer we dial: forget this connection and dial again (reconnects back off). */
        speer *sp = &n->statics[si];
        uint8_t key[TSYNC__PK_BYTES];
        memcpy(key, p->pk, sizeof key);
        tsync__node_peer_free(p);
        uint32_t nid;
        if (tsync__node_dial(n, (size_t)si, key, &nid) == 0)
            for (size_t c = 0; c < sp->ncands; c++)
                if (sp->cands[c] == id) sp->cands[c] = nid;
        n->status_dirty = 1;
    }
}

/* ---------------------------------------------------------------- trust, pruning, sealing */

void tsync__node_trust_check(tsync_node *n)
{
    if (!n->enrolled) return;
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    if (tsync__trust_export(n->s, &blobs, &lens, &nb) != 0) return;
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, TSYNC__HASH_BYTES);
    for (size_t i = 0; i < nb; i++) crypto_generichash_update(&st, blobs[i], lens[i]);
    uint8_t d[TSYNC__HASH_BYTES];
    crypto_generichash_final(&st, d, sizeof d);
    tsync__trust_export_free(blobs, lens, nb);
    if (n->trust_digest_valid && memcmp(d, n->trust_digest, sizeof d) == 0) return;
    int first = !n->trust_digest_valid;
    memcpy(n->trust_digest, d, sizeof d);
    n->trust_digest_valid = 1;
    n->trust_gen++;
    if (first) return;
    /* New certificates or revocations (from a merge or `tillsync revoke`): tell every peer, cut
     * revoked sessions, and dial newly certified keys for keyless static peers. */
    tsync__node_apply_revocations(n);
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified && !n->peers[i]->close_at_mono)
            tsync__node_send_certs(n, n->peers[i]);
    tsync__node_dial_candidates(n);
}

/* Stores the acknowledged vectors of the tills we have a session with (status shows one that the
 * log's horizon left behind), prunes what every member of an enrolled shop holds, and keeps the
 * log within its policy (count, bytes, age) in every database: a till behind the horizon then
 * needs a snapshot, which only an enrolled shop can give (docs/NODE.md). */
void tsync__node_prune(tsync_node *n, uint64_t now)
{
    if (n->o.prune_keep < 0) return;
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (p->used && p->verified && p->key_known && p->ack_dirty &&
            tsync__sync_ack_put(n->s, p->pk, &p->acked) == 0)
            p->ack_dirty = 0;
    }
    if (now - n->last_prune_mono < (uint64_t)n->o.prune_ms) return;
    n->last_prune_mono = now;
    size_t pruned = 0, by_policy = 0;
    int rc = 0;
    if (n->enrolled) {
        uint8_t *keys = NULL;
        size_t nk = 0;
        if (tsync__sync_device_keys(n->s, &keys, &nk) != 0) return;
        rc = tsync__sync_prune(n->s, keys, nk, (uint64_t)n->o.prune_keep, &pruned);
        free(keys);
    }
    if (rc == 0) rc = tsync__sync_prune_policy(n->s, NULL, &by_policy);
    if (rc == TSYNC_EFULL)
        tsync__node_disk_full_hit(n, "prune the log");
    else if (rc && rc != TSYNC_EBUSY)
        tsync__node_log(n, TSYNC_LOG_WARN, "cannot prune the log: %s", tsync__node_errtext());
    if (pruned + by_policy) {
        n->pruned += pruned + by_policy;
        n->status_dirty = 1;
        if (pruned)
            tsync__node_log(n, TSYNC_LOG_DEBUG, "pruned %zu batches every member holds", pruned);
        if (by_policy)
            tsync__node_log(n, TSYNC_LOG_INFO,
                            "pruned %zu batches beyond the log policy: a till still lacking them "
                            "needs a snapshot",
                            by_policy);
    }
}

int tsync__node_local_changes(tsync_node *n, uint64_t now)
{
    int ch = tsync__sync_changed(n->s);
    if (ch < 0) return ch;
    int due = n->o.seal_ms && now - n->last_seal_mono >= n->o.seal_ms;
    if (!ch && !due && !n->seal_retry) return 0;
    if (tsync__node_disk_full_waiting(n)) {
        n->seal_retry = 1;
        return 0;
    }
    n->last_seal_mono = now;
    size_t nb = 0;
    int rc = tsync_store_seal(n->s, &nb);
    if (rc == TSYNC_EFULL) {
        tsync__node_disk_full_hit(n, "seal");
        n->seal_retry = 1;
        return 0;
    }
    if (rc == 0 && nb > 0) tsync__node_disk_full_clear(n);
    if (rc == TSYNC_EBUSY) {
        /* The app holds the write lock: try again next round (the commit that changed the data
         * version was already counted). */
        n->seal_retry = 1;
        return 0;
    }
    n->seal_retry = 0;
    if (rc) {
        tsync__node_error(n, rc, "cannot seal: %s", tsync__node_errtext());
        return rc;
    }
    ch = ch || nb > 0;
    n->local_batches += nb;
    if (ch) {
        if ((rc = tsync__node_refresh_ours(n))) return rc;
        tsync__node_push_all(n);
        n->status_dirty = 1;
    }
    return 0;
}

void tsync__node_close_due(tsync_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->close_at_mono || now < p->close_at_mono) continue;
        int was = p->hello;
        if (p->inbound) {
            tsync__tp_close(n->tp, p->id);
            tsync__node_session_reset(p);
        } else {
            /* A dialled peer that refused us or that we refused: stop dialling it. */
            tsync__tp_close(n->tp, p->id);
            tsync__node_peer_free(p);
            continue;
        }
        if (was) tsync__node_notify_peer(n, p, 0);
    }
}

/* The store took a new incarnation (its log went back: store/identity.c), at open or in a merge:
 * say so once, loudly, and show the new head to the peers. */
void tsync__node_identity_check(tsync_node *n)
{
    unsigned r = tsync__identity_renewals(n->s);
    int first = !n->identity_checked;
    if (r == n->renewals_seen && !first) return;
    n->renewals_seen = r;
    n->identity_checked = 1;
    int64_t count = 0;
    char *last = NULL;
    tsync__identity_rollbacks(n->s, &count, &last);
    json_t *o = last ? json_loads(last, 0, NULL) : NULL;
    free(last);
    char own[2 * TSYNC__SITE_BYTES + 1];
    tsync__hex(tsync_store_site_id(n->s), TSYNC__SITE_BYTES, own);
    const char *ns = json_string_value(json_object_get(o, "new_site"));
    if (!ns || strcmp(ns, own) != 0) {
        /* At start: the current incarnation was not taken after a rollback. */
        json_decref(o);
        return;
    }
    tsync__node_log(
        n, TSYNC_LOG_WARN,
        "the log of this till went back (an old copy of the database was written over it: "
        "batch %lld here, %lld already %s): new incarnation, site %.12s -> %.12s; its lost "
        "batches are taken back from peers",
        (long long)json_integer_value(json_object_get(o, "log_seq")),
        (long long)json_integer_value(json_object_get(o, "seen_seq")),
        json_is_string(json_object_get(o, "detected_by")) &&
                !strcmp(json_string_value(json_object_get(o, "detected_by")), "peer")
            ? "at a peer"
            : "sent out",
        json_string_value(json_object_get(o, "old_site"))
            ? json_string_value(json_object_get(o, "old_site"))
            : "?",
        json_string_value(json_object_get(o, "new_site"))
            ? json_string_value(json_object_get(o, "new_site"))
            : "?");
    json_decref(o);
    tsync__node_refresh_ours(n);
    n->status_dirty = 1;
}
