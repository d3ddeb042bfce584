/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/status.c — the node's status as JSON (docs/NODE.md lists the fields), built on the
 * node's thread about once a second, written to the status file for other processes and kept
 * for tsync_node_status_json (any thread).
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "store/identity.h"
#include "store/schema.h"
#include "tillsync/conflicts.h"
#include "tillsync/status.h"
#include "../console/console.h"
#include "node_int.h"

const char *const tsync__node_refused_name[R_COUNT] = {
    "malformed", "unexpected", "version",  "shop",   "certificate", "signature", "fork",
    "batch",     "trust",      "oversize", "denied", "handshake",   "snapshot",
};

static json_t *hexj(const uint8_t *p, size_t len)
{
    char buf[2 * 64 + 1];
    tsync__hex(p, len, buf);
    return json_string(buf);
}

void tsync__node_lags(tsync_node *n, const npeer *p, uint64_t *out, uint64_t *in)
{
    *out = *in = 0;
    for (size_t i = 0; i < n->ours.n; i++) {
        uint64_t theirs = tsync__vv_seq(&p->acked, n->ours.e[i].site);
        if (n->ours.e[i].seq > theirs) *out += n->ours.e[i].seq - theirs;
    }
    for (size_t i = 0; i < p->acked.n; i++) {
        uint64_t mine = tsync__vv_seq(&n->ours, p->acked.e[i].site);
        if (p->acked.e[i].seq > mine) *in += p->acked.e[i].seq - mine;
    }
}

static char *status_build(tsync_node *n)
{
    json_t *o = json_object();
    uint64_t now = tsync__wall_ms();
    json_object_set_new(o, "format", json_integer(1));
    json_object_set_new(o, "pid", json_integer((json_int_t)getpid()));
    json_object_set_new(o, "updated_ms", json_integer((json_int_t)now));
    json_object_set_new(o, "started_ms", json_integer((json_int_t)n->started_ms));
    json_object_set_new(o, "database", json_string(n->db_path));
    json_object_set_new(o, "listen", json_string(n->endpoint));
    json_object_set_new(o, "online", json_boolean(tsync__node_online(n)));
    json_object_set_new(o, "site", hexj(tsync_store_site_id(n->s), TSYNC__SITE_BYTES));
    json_object_set_new(o, "public_key", hexj(tsync__sync_public_key(n->s), TSYNC__PK_BYTES));
    json_object_set_new(o, "enrolled", json_boolean(n->enrolled));
    json_object_set_new(o, "schema", json_integer((json_int_t)tsync__sync_schema(n->s)));
    json_t *peers = json_array();
    uint64_t pending = 0;
    const uint8_t *own = tsync_store_site_id(n->s);
    for (size_t i = 0; i < n->nlinks; i++) {
        const nlink *l = &n->links[i];
        const npeer *p = l->p;
        json_t *e = json_object();
        json_object_set_new(e, "address", json_string(l->addr));
        json_object_set_new(e, "key", l->key_known ? hexj(l->pk, TSYNC__PK_BYTES) : json_null());
        if (l->name[0]) json_object_set_new(e, "name", json_string(l->name));
        json_object_set_new(e, "via", json_string(l->via));
        if (l->reason) json_object_set_new(e, "reason", json_string(l->reason));
        if (p)
            json_object_set_new(e, "direction", json_string(p->inbound ? "inbound" : "outbound"));
        json_object_set_new(e, "state", json_string(tsync_peer_state_name(l->state)));
        if (l->state == TSYNC_PEER_REFUSED)
            json_object_set_new(e, "refused_reason", json_string(l->why));
        json_object_set_new(e, "since_ms", json_integer((json_int_t)l->since_ms));
        json_object_set_new(e, "discovered_ms",
                            l->discovered_ms ? json_integer((json_int_t)l->discovered_ms)
                                             : json_null());
        json_object_set_new(e, "connected_ms",
                            l->connected_ms ? json_integer((json_int_t)l->connected_ms)
                                            : json_null());
        json_object_set_new(e, "lost_ms",
                            l->lost_ms ? json_integer((json_int_t)l->lost_ms) : json_null());
        json_object_set_new(e, "last_seen_ms",
                            l->seen_ms ? json_integer((json_int_t)l->seen_ms) : json_null());
        if (p && p->verified) {
            uint64_t lo, li;
            tsync__node_lags(n, p, &lo, &li);
            json_object_set_new(e, "they_lack", json_integer((json_int_t)lo));
            json_object_set_new(e, "we_lack", json_integer((json_int_t)li));
            json_object_set_new(e, "in_flight_bytes", json_integer((json_int_t)p->fl_bytes));
            json_object_set_new(e, "schema", json_integer((json_int_t)p->schema));
            json_object_set_new(e, "clock_delta_ms", json_integer(p->clock_delta_ms));
            uint64_t mine = tsync__vv_seq(&n->ours, own), theirs = tsync__vv_seq(&p->acked, own);
            if (mine > theirs && mine - theirs > pending) pending = mine - theirs;
        }
        json_object_set_new(e, "batches_in", json_integer((json_int_t)(p ? p->rx_batches : 0)));
        json_object_set_new(e, "batches_out", json_integer((json_int_t)(p ? p->tx_batches : 0)));
        json_array_append_new(peers, e);
    }
    json_object_set_new(o, "peers", peers);
    json_object_set_new(o, "pending_out", json_integer((json_int_t)pending));
    tsync__sync_counts c = {0};
    int counts_ok = tsync__sync_counts_get(n->s, &c) == 0;
    if (counts_ok) {
        json_object_set_new(o, "held", json_integer(c.held));
        json_object_set_new(o, "parked", json_integer(c.parked));
        json_object_set_new(o, "conflicts", json_integer(c.conflicts));
        /* The open ones (not yet resolved or dismissed) are what a person must act on. */
        int64_t open = 0;
        if (tsync_store_conflicts_count(&open, NULL, n->s) == 0)
            json_object_set_new(o, "conflicts_open", json_integer(open));
        json_object_set_new(o, "forks", json_integer(c.forks));
        json_object_set_new(o, "unsealed", json_integer(c.pending));
    }
    {
        int64_t rb = 0;
        char *last = NULL;
        if (tsync__identity_rollbacks(n->s, &rb, &last) == 0) {
            json_object_set_new(o, "rollbacks", json_integer(rb));
            json_t *lj = last ? json_loads(last, 0, NULL) : NULL;
            json_object_set_new(o, "last_rollback", lj ? lj : json_null());
        }
        free(last);
    }
    json_object_set_new(o, "disk_full", json_boolean(n->full.on));
    json_object_set_new(o, "disk_full_since_ms",
                        n->full.on ? json_integer((json_int_t)n->full.since_ms) : json_null());
    /* Other tills whose table definitions differ from ours: a person must act (a migration). */
    char *mtext = NULL;
    json_t *mm =
        tsync_store_schema_mismatches_json(&mtext, n->s) == 0 ? json_loads(mtext, 0, NULL) : NULL;
    free(mtext);
    if (!mm) mm = json_array();
    char *merr = NULL;
    tsync_store_signed_migration_error(&merr, n->s);
    json_object_set_new(o, "state", json_string(json_array_size(mm) || merr ? "attention" : "ok"));
    json_object_set_new(o, "schema_mismatches", mm);
    json_object_set_new(o, "signed_migration_error", merr ? json_string(merr) : json_null());
    free(merr);
    /* Why batches are held, per origin (a till with a bad clock is named there). */
    tsync__sync_held hr[8];
    int nh = c.held > 0 ? tsync__sync_held_get(n->s, hr, 8) : 0;
    json_t *hj = json_array();
    for (int i = 0; i < nh; i++) {
        json_t *e = json_object();
        json_object_set_new(e, "count", json_integer(hr[i].count));
        json_object_set_new(e, "reason", json_string(hr[i].reason));
        json_array_append_new(hj, e);
    }
    json_object_set_new(o, "held_reasons", hj);
    /* The sync state reads these counts (syncstate.c): refreshed here, with the status. */
    if (counts_ok) { /* else the last counts stay */
        n->sync.counts_known = 1;
        n->sync.held = c.held;
        n->sync.parked = c.parked;
        n->sync.forks = c.forks;
        snprintf(n->sync.held_why, sizeof n->sync.held_why, "%s", nh > 0 ? hr[0].reason : "");
    }
    tsync__node_sync_eval(n);
    tsync_sync_state ss = TSYNC_SYNC_STATE_INIT;
    tsync_node_sync_state(&ss, n);
    json_t *sj = json_object();
    json_object_set_new(sj, "state", json_string(tsync_sync_state_name(ss.state)));
    json_object_set_new(sj, "since_ms", json_integer((json_int_t)ss.since_ms));
    json_object_set_new(sj, "last_synced_at_ms",
                        ss.last_synced_at_ms ? json_integer((json_int_t)ss.last_synced_at_ms)
                                             : json_null());
    json_object_set_new(sj, "reason", json_string(ss.reason));
    json_object_set_new(o, "sync", sj);
    /* This till's clock against the shop's (docs/DATA_MODEL.md, "Clocks"). */
    json_t *cj = json_object();
    tsync__sync_clock ck;
    int have_ck = tsync__sync_clock_get(n->s, &ck) == 0;
    int64_t off = n->clock.off_ms;
    int big = n->clock.known && (off > TSYNC__CLOCK_OFF_MS || off < -TSYNC__CLOCK_OFF_MS);
    json_object_set_new(cj, "state",
                        json_string(!n->clock.known ? "unknown"
                                    : !big          ? "ok"
                                    : off < 0       ? "ahead"
                                                    : "behind"));
    json_object_set_new(cj, "peers", json_integer((json_int_t)n->clock.peers));
    json_object_set_new(cj, "ahead_ms",
                        n->clock.known ? json_integer(-off) : json_null()); /* ours - median */
    json_object_set_new(cj, "stamped_with_shop_time", json_boolean(big));
    if (have_ck) {
        json_object_set_new(cj, "hlc_ms", json_integer((json_int_t)ck.hlc_ms));
        json_object_set_new(cj, "hlc_ahead_ms",
                            json_integer((json_int_t)ck.hlc_ms - (json_int_t)(now + off)));
        json_object_set_new(cj, "skew_bound_ms", json_integer((json_int_t)ck.skew_bound_ms));
        json_object_set_new(cj, "resets", json_integer(ck.resets));
        json_object_set_new(cj, "reset_from_ms",
                            ck.resets ? json_integer(ck.reset_from_ms) : json_null());
        json_object_set_new(cj, "reset_at_ms",
                            ck.resets ? json_integer(ck.reset_at_ms) : json_null());
    }
    json_object_set_new(o, "clock", cj);
    /* A full disk or a wrong clock needs a person too (schema differences are above). */
    if (n->full.on || big) json_object_set_new(o, "state", json_string("attention"));
    json_t *ref = json_object();
    tsync__tp_stats ts;
    tsync__tp_stats_get(n->tp, &ts);
    for (int i = 0; i < R_COUNT; i++) {
        uint64_t v = n->refused[i];
        if (i == R_OVERSIZE) v += ts.dropped_oversize > v ? ts.dropped_oversize - v : 0;
        json_object_set_new(ref, tsync__node_refused_name[i], json_integer((json_int_t)v));
    }
    json_object_set_new(ref, "unverified", json_integer((json_int_t)ts.dropped_unverified));
    json_object_set_new(o, "refused", ref);
    json_object_set_new(o, "handshakes_incomplete", json_integer((json_int_t)n->hs_incomplete));
    json_object_set_new(o, "batches_merged", json_integer((json_int_t)n->merged));
    /* Our own batches since start, whoever sealed them (us, a merge, the app's own seal). */
    uint64_t own_now = tsync__vv_seq(&n->ours, own);
    json_object_set_new(
        o, "batches_sealed",
        json_integer((json_int_t)(own_now > n->own_seq0 ? own_now - n->own_seq0 : 0)));
    json_object_set_new(o, "batches_pruned", json_integer((json_int_t)n->pruned));
    if (n->o.backup_every_ms) {
        json_t *b = json_object();
        json_object_set_new(b, "dir", json_string(n->o.backup_dir));
        json_object_set_new(b, "every_ms", json_integer((json_int_t)n->o.backup_every_ms));
        json_object_set_new(b, "done", json_integer((json_int_t)n->backup.done));
        json_object_set_new(b, "failed", json_integer((json_int_t)n->backup.failed));
        json_object_set_new(b, "last_ms",
                            n->backup.last_ms ? json_integer((json_int_t)n->backup.last_ms)
                                              : json_null());
        json_object_set_new(o, "backups", b);
    }
    tsync__node_cloud_status(n, o); /* net/node/cloud.c */
    if (n->console) {
        json_t *con = json_object();
        json_object_set_new(con, "address", json_string(tsync__console_address(n->console)));
        json_object_set_new(con, "token_file", json_string(tsync__console_token_path(n->console)));
        json_object_set_new(o, "console", con);
    }
    json_object_set_new(o, "relay", tsync__node_relay_json(n));
    json_object_set_new(o, "snapshots_sent", json_integer((json_int_t)n->snaps_sent));
    json_object_set_new(o, "snapshots_received", json_integer((json_int_t)n->snaps_received));
    json_t *md = json_object();
    json_object_set_new(md, "enabled", json_boolean(n->mdns.disc != NULL));
    if (n->mdns.disc) {
        tsync__disc_stats ds;
        tsync__disc_stats_get(n->mdns.disc, &ds);
        json_object_set_new(md, "daemon",
                            json_string(n->mdns.daemon > 0   ? "reachable"
                                        : n->mdns.daemon < 0 ? "unreachable"
                                                             : "unknown"));
        const char *nm =
            n->mdns.daemon > 0 && n->mdns.port ? tsync__disc_self_name(n->mdns.disc) : NULL;
        json_t *nj = nm ? json_string(nm) : NULL;
        json_object_set_new(md, "published_as", nj ? nj : json_null());
        /* Only an enrolled till acts on what it finds (its shop's tills). */
        json_object_set_new(md, "shop_tills_found", json_integer((json_int_t)n->mdns.nfound));
        json_object_set_new(md, "found", json_integer((json_int_t)ds.found));
        json_object_set_new(md, "malformed", json_integer((json_int_t)ds.malformed));
        json_object_set_new(md, "collisions", json_integer((json_int_t)ds.collisions));
    }
    json_object_set_new(o, "mdns", md);
    char *s = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    json_decref(o);
    return s;
}

/* A full disk has no block for a new file: the status is written over the old file's blocks. */
static void status_in_place(const char *path, const char *txt)
{
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t len = strlen(txt);
    if (pwrite(fd, txt, len, 0) == (ssize_t)len && pwrite(fd, "\n", 1, (off_t)len) == 1)
        (void)!ftruncate(fd, (off_t)len + 1);
    close(fd);
}

/* Reads the rows tsync__node_links_update made this round (the node's thread). */
void tsync__node_status_publish(tsync_node *n)
{
    char *s = status_build(n);
    if (!s) return;
    if (n->status_path) {
        size_t len = strlen(n->status_path) + 8;
        char *tmp = malloc(len);
        if (tmp) {
            snprintf(tmp, len, "%s.tmp", n->status_path);
            FILE *f = fopen(tmp, "w");
            int done = 0;
            if (f) {
                int ok = fputs(s, f) >= 0 && fputc('\n', f) != EOF;
                ok = fclose(f) == 0 && ok;
                done = ok && rename(tmp, n->status_path) == 0;
                if (!done) remove(tmp);
            }
            if (!done) status_in_place(n->status_path, s);
            free(tmp);
        }
    }
    pthread_mutex_lock(&n->status_mu);
    free(n->status_json);
    n->status_json = s;
    pthread_mutex_unlock(&n->status_mu);
    n->status_dirty = 0;
}
