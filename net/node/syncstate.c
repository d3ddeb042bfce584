/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/syncstate.c — the one word a till's sync indicator shows (include/tillsync/node.h,
 * tsync_node_sync_state; docs/NODE.md, "Sync state"): alone, offline, syncing, synced or
 * attention, with since when, the last moment every connected till was current, and why in
 * words. Evaluated on the node's thread at least every 100 ms (step) and at every status build;
 * copied under a mutex for any thread; a change calls tsync_node_on_sync_state's callback.
 *
 * Design notes:
 * - "Current": a connected peer is current when its acknowledged vector equals what we hold,
 *   both ways (it lacks nothing of ours, we lack nothing it told us it has). In flight
 *   ("busy"): a connected peer not current, received batches queued for merging, or a snapshot
 *   moving.
 * - Hysteresis: from synced, the state goes to syncing only once something has been in flight
 *   continuously for SYNCING_AFTER_MS. A sale reaches a connected till and comes back
 *   acknowledged in milliseconds, so a selling till stays synced instead of blinking; a catch-up
 *   or a peer that stopped answering shows. Back to synced as soon as nothing is in flight at an
 *   evaluation: going back to syncing then needs another SYNCING_AFTER_MS, so the word cannot
 *   change more often than that. From any other state (a peer just connected and catching up)
 *   something in flight is syncing at once.
 * - Attention wins over the rest: it says what a person must look at. Held and parked counts
 *   and forks come from the last status build (SQL, about once a second). Refused input counts
 *   only while recent: a refusal counter that grew in the last 10 minutes
 *   (tsync__node_refused_window_ms);
 *   the counters themselves only grow, and one bad message a week ago needs nobody now.
 * - Stuck: a connected peer whose lag (both ways, in batches) has been non-zero and has not
 *   shrunk for 60 s (tsync__node_stuck_ms).
 * - The callback gets a change of the word or of the reason; reasons hold no clock values, so an
 *   unchanged situation calls nothing.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "node_int.h"

#define SYNCING_AFTER_MS 500

uint64_t tsync__node_refused_window_ms = 10 * 60 * 1000;
uint64_t tsync__node_stuck_ms = 60000;

const char *tsync_sync_state_name(int state)
{
    switch (state) {
    case TSYNC_SYNC_ALONE:
        return "alone";
    case TSYNC_SYNC_OFFLINE:
        return "offline";
    case TSYNC_SYNC_SYNCING:
        return "syncing";
    case TSYNC_SYNC_SYNCED:
        return "synced";
    case TSYNC_SYNC_ATTENTION:
        return "attention";
    default:
        return "unknown";
    }
}

void tsync__node_sync_init(tsync_node *n)
{
    pthread_mutex_init(&n->sync.mu, NULL);
    n->sync.cur.version = TSYNC_SYNC_STATE_VERSION;
    n->sync.cur.state = TSYNC_SYNC_ALONE;
    n->sync.cur.since_ms = tsync__wall_ms();
    snprintf(n->sync.cur.reason, sizeof n->sync.cur.reason, "starting");
}

void tsync__node_sync_free(tsync_node *n)
{
    pthread_mutex_destroy(&n->sync.mu);
}

int tsync_node_sync_state(tsync_sync_state *out, tsync_node *n)
{
    if (!out || !n) return tsync__err(TSYNC_EINVAL, "tsync_node_sync_state: no node or no output");
    if (out->version != TSYNC_SYNC_STATE_VERSION)
        return tsync__err(TSYNC_EINVAL,
                          "sync state record of an unknown version %u (this library: %u)",
                          out->version, TSYNC_SYNC_STATE_VERSION);
    pthread_mutex_lock(&n->sync.mu);
    *out = n->sync.cur;
    pthread_mutex_unlock(&n->sync.mu);
    return 0;
}

int tsync_node_on_sync_state(tsync_node *n, tsync_sync_state_fn fn, void *ctx)
{
    if (!n) return tsync__err(TSYNC_EINVAL, "tsync_node_on_sync_state: no node");
    pthread_mutex_lock(&n->sync.mu);
    n->sync.fn = fn;
    n->sync.ctx = ctx;
    pthread_mutex_unlock(&n->sync.mu);
    return 0;
}

/* Appends "; " and the formatted text to buf (cut when full). */
static void add(char *buf, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void add(char *buf, size_t len, const char *fmt, ...)
{
    size_t used = strlen(buf);
    if (used && used + 2 < len) {
        memcpy(buf + used, "; ", 3);
        used += 2;
    }
    if (used + 1 >= len) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf + used, len - used, fmt, ap);
    va_end(ap);
}

static void peer_name(const nlink *l, char *buf, size_t len)
{
    char k[17] = "";
    if (l->key_known) tsync__hex(l->pk, 8, k);
    if (l->name[0])
        snprintf(buf, len, "%s", l->name);
    else if (k[0])
        snprintf(buf, len, "%s… at %s", k, l->addr);
    else
        snprintf(buf, len, "%s", l->addr);
}

/* "10 minutes", "60 s" */
static const char *span(uint64_t ms, char *buf, size_t len)
{
    if (ms >= 120000 && ms % 60000 == 0)
        snprintf(buf, len, "%llu minutes", (unsigned long long)(ms / 60000));
    else
        snprintf(buf, len, "%llu s", (unsigned long long)((ms + 999) / 1000));
    return buf;
}

/* Why a person should look, in words ("" when nothing). */
static void attention(tsync_node *n, uint64_t now, char *why, size_t len)
{
    char win[32];
    why[0] = 0;
    if (n->sync.counts_known && n->sync.held > 0)
        add(why, len, "%lld batch(es) held: %s", (long long)n->sync.held,
            n->sync.held_why[0] ? n->sync.held_why : "waiting for earlier batches");
    if (n->sync.counts_known && n->sync.parked > 0)
        add(why, len,
            "%lld row change(s) parked: another till has a table or column this one lacks "
            "(apply its migration here)",
            (long long)n->sync.parked);
    if (n->sync.counts_known && n->sync.forks > 0)
        add(why, len,
            "%lld fork(s): a till's log forked (a copy of its database ran as a second till); "
            "its changes after the fork are not taken",
            (long long)n->sync.forks);
    char names[256] = "";
    for (int i = 0; i < R_COUNT; i++)
        if (n->sync.refused_mono[i] &&
            now - n->sync.refused_mono[i] < tsync__node_refused_window_ms)
            add(names, sizeof names, "%s", tsync__node_refused_name[i]);
    if (names[0])
        add(why, len, "input refused in the last %s (%s): see refused in the status and the log",
            span(tsync__node_refused_window_ms, win, sizeof win), names);
    for (size_t i = 0; i < n->nlinks; i++) {
        const nlink *l = &n->links[i];
        char pn[TSYNC__TRUST_NAME_MAX + TSYNC__TP_ADDR_LEN + 24];
        if (l->state == TSYNC_PEER_REFUSED) {
            peer_name(l, pn, sizeof pn);
            add(why, len, "till %s refused: %s", pn, l->why);
        } else if (l->state == TSYNC_PEER_CONNECTED && l->p && l->p->verified &&
                   l->p->lag_last > 0 && now - l->p->lag_mono >= tsync__node_stuck_ms) {
            uint64_t lo, li;
            tsync__node_lags(n, l->p, &lo, &li);
            peer_name(l, pn, sizeof pn);
            add(why, len,
                "sync with %s is stuck: it lacks %llu batch(es), we lack %llu, not shrinking "
                "for %s",
                pn, (unsigned long long)lo, (unsigned long long)li,
                span(tsync__node_stuck_ms, win, sizeof win));
        }
    }
    if (n->full.on) add(why, len, "the disk is full: sealing and merging wait");
}

void tsync__node_sync_eval(tsync_node *n)
{
    uint64_t now = tsync__mono_ms(), wall = tsync__wall_ms();
    /* Refusal counters that grew since the last look. */
    for (int i = 0; i < R_COUNT; i++)
        if (n->refused[i] > n->sync.refused_seen[i]) {
            n->sync.refused_seen[i] = n->refused[i];
            n->sync.refused_mono[i] = now;
        }
    size_t connected = 0, behind = 0;
    for (size_t i = 0; i < n->nlinks; i++) {
        const nlink *l = &n->links[i];
        npeer *p = l->p;
        if (l->state != TSYNC_PEER_CONNECTED || !p || !p->verified) continue;
        connected++;
        uint64_t lo, li;
        tsync__node_lags(n, p, &lo, &li);
        uint64_t lag = lo + li;
        if (lag == 0 || lag < p->lag_last || p->lag_last == 0) {
            p->lag_mono = now;
            p->stuck_said = 0;
        }
        p->lag_last = lag;
        if (lag && now - p->lag_mono >= tsync__node_stuck_ms && !p->stuck_said) {
            /* Said once when it begins (nothing else logs it); the state carries it after. */
            char lb[LBL];
            p->stuck_said = 1;
            tsync__node_log(n, TSYNC_LOG_WARN,
                            "sync with %s is stuck: it lacks %llu batch(es), we lack %llu, not "
                            "shrinking for %llu ms",
                            tsync__node_peer_label(p, lb), (unsigned long long)lo,
                            (unsigned long long)li, (unsigned long long)tsync__node_stuck_ms);
        }
        if (lag || p->in.active || p->out.active) behind++;
    }
    if (connected) n->sync.ever_connected = 1;
    int busy = connected && (behind || n->mq.n);
    if (!busy)
        n->sync.busy_mono = 0;
    else if (!n->sync.busy_mono)
        n->sync.busy_mono = now;

    tsync_sync_state next = {.version = TSYNC_SYNC_STATE_VERSION};
    pthread_mutex_lock(&n->sync.mu);
    int prev = n->sync.cur.state;
    next.last_synced_at_ms = n->sync.cur.last_synced_at_ms;
    pthread_mutex_unlock(&n->sync.mu);
    if (connected && !busy) next.last_synced_at_ms = wall;

    attention(n, now, next.reason, sizeof next.reason);
    /* Another till is known: one connected since start, one listed (dialled, advertised,
     * refused), or one whose batches this database holds. */
    int known = n->sync.ever_connected || n->nlinks || n->nstatics || n->ours.n > 1;
    if (next.reason[0]) {
        next.state = TSYNC_SYNC_ATTENTION;
    } else if (!connected) {
        next.state = known ? TSYNC_SYNC_OFFLINE : TSYNC_SYNC_ALONE;
        if (known)
            snprintf(next.reason, sizeof next.reason,
                     "no other till is reachable (%zu known); sales are kept and sent when one "
                     "is",
                     n->nlinks);
        else
            snprintf(next.reason, sizeof next.reason,
                     "no other till known yet: give a peer, or enrol this till so it finds the "
                     "shop's tills");
    } else if (busy && (prev != TSYNC_SYNC_SYNCED || now - n->sync.busy_mono >= SYNCING_AFTER_MS)) {
        next.state = TSYNC_SYNC_SYNCING;
        snprintf(next.reason, sizeof next.reason, "changes in flight with %zu connected till(s)",
                 connected);
    } else {
        next.state = TSYNC_SYNC_SYNCED;
        snprintf(next.reason, sizeof next.reason, "%zu connected till(s) current", connected);
    }

    pthread_mutex_lock(&n->sync.mu);
    int changed = next.state != n->sync.cur.state || strcmp(next.reason, n->sync.cur.reason) != 0;
    next.since_ms = next.state != n->sync.cur.state ? wall : n->sync.cur.since_ms;
    n->sync.cur = next;
    tsync_sync_state_fn fn = changed ? n->sync.fn : NULL;
    void *ctx = n->sync.ctx;
    pthread_mutex_unlock(&n->sync.mu);
    if (changed) {
        n->status_dirty = 1;
        /* DEBUG only: what needs attention is logged where it happens (a refusal once a minute,
         * a held batch, a full disk); repeating it here would log it again at each change. */
        tsync__node_log(n, TSYNC_LOG_DEBUG, "sync: %s (%s)", tsync_sync_state_name(next.state),
                        next.reason);
    }
    if (fn) fn(ctx, &next);
}
