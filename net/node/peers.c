/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/peers.c — the other tills: session entries, the network state rows an app shows
 * (tsync_peer_state, rebuilt from sessions, refusals, mDNS and static peers, each change an
 * event), refusals remembered for a while, static peers (with the candidate keys of a keyless
 * address) and the glue to mDNS discovery (net/discovery.h).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

#define MDNS_FALLBACK_MS 3000  /* no session with an advertised till this long: dial it too */
#define REFUSAL_KEEP_MS  30000 /* a till refused (or refusing us) shows "refused" this long */
#define REFUSAL_LOG_MS   60000 /* the same refusal is logged at most this often per till */

/* ---------------------------------------------------------------- peers */

npeer *tsync__node_peer_find(tsync_node *n, uint32_t id)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->id == id) return n->peers[i];
    return NULL;
}

npeer *tsync__node_peer_get(tsync_node *n, uint32_t id)
{
    npeer *p = tsync__node_peer_find(n, id);
    if (p) return p;
    for (size_t i = 0; i < n->npeers; i++)
        if (!n->peers[i]->used) {
            p = n->peers[i];
            break;
        }
    if (!p) {
        /* Peers are allocated one by one, so a pointer to one stays valid while others are
         * added (a handler may dial new peers while it holds one). */
        npeer **np = realloc(n->peers, (n->npeers + 1) * sizeof *np);
        if (!np) return NULL;
        n->peers = np;
        if (!(p = calloc(1, sizeof *p))) return NULL;
        n->peers[n->npeers++] = p;
    }
    memset(p, 0, sizeof *p);
    p->used = 1;
    p->id = id;
    p->static_idx = -1;
    p->born_mono = tsync__mono_ms();
    return p;
}

void tsync__node_session_reset(npeer *p)
{
    p->fork_sent = 0;
    tsync__node_snap_clear(&p->out);
    tsync__node_snap_clear(&p->in);
    p->up = p->hello = p->verified = 0;
    p->fork_check = 0;
    p->features = 0;
    p->features_known = 0;
    p->push_wait_mono = 0;
    tsync__vv_free(&p->acked);
    tsync__vv_free(&p->sent);
    p->nfl = 0;
    p->fl_bytes = 0;
    p->idle_first = p->idle_last = 0;
    p->fwd_pending = 0;
    p->relay_need = 0;
    p->relay_mono = 0;
    p->relay_said = 0;
    p->relay_elsewhere = 0;
    p->bad = 0;
    p->close_at_mono = 0;
}

void tsync__node_peer_free(npeer *p)
{
    tsync__node_session_reset(p);
    free(p->fl);
    p->fl = NULL;
    p->capfl = 0;
    p->used = 0;
}

int tsync__node_online(tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->verified) return 1;
    return 0;
}

void tsync__node_notify_peer(tsync_node *n, npeer *p, int up)
{
    n->status_dirty = 1;
    if (!n->o.on_peer) return;
    char k[2 * TSYNC__PK_BYTES + 1] = "";
    if (p->key_known) tsync__hex(p->pk, TSYNC__PK_BYTES, k);
    n->o.on_peer(n->o.cb_ctx, k, p->addr, up, tsync__node_online(n));
}

/* ---------------------------------------------------------------- network state */

const char *tsync_peer_state_name(int state)
{
    switch (state) {
    case TSYNC_PEER_DISCOVERED:
        return "discovered";
    case TSYNC_PEER_CONNECTING:
        return "connecting";
    case TSYNC_PEER_CONNECTED:
        return "connected";
    case TSYNC_PEER_UNREACHABLE:
        return "unreachable";
    case TSYNC_PEER_WAITING:
        return "waiting";
    case TSYNC_PEER_REFUSED:
        return "refused";
    default:
        return "gone";
    }
}

/* When two rows name the same till (an old inbound session and a new one, a dial and an
 * advertisement), the one shown is the most alive. */
static int state_rank(int st)
{
    static const int r[] = {
        [TSYNC_PEER_GONE] = 0,       [TSYNC_PEER_DISCOVERED] = 1, [TSYNC_PEER_UNREACHABLE] = 2,
        [TSYNC_PEER_CONNECTING] = 3, [TSYNC_PEER_REFUSED] = 4,    [TSYNC_PEER_CONNECTED] = 5,
        [TSYNC_PEER_WAITING] = 1};
    return st >= 0 && st <= TSYNC_PEER_REFUSED ? r[st] : 0;
}

/* ---------------------------------------------------------------- refusals */

nrefusal *tsync__node_refusal_find(tsync_node *n, const uint8_t pk[TSYNC__PK_BYTES], uint64_t now)
{
    for (size_t i = 0; i < n->nrefusals; i++) {
        nrefusal *f = &n->refusals[i];
        if (memcmp(f->pk, pk, TSYNC__PK_BYTES)) continue;
        return now - f->at_mono < REFUSAL_KEEP_MS ? f : NULL;
    }
    return NULL;
}

/* Notes that the session with this till was refused (by_peer: it refused us) for why. Returns
 * whether to log it now: the first time, when the reason changes, or REFUSAL_LOG_MS after the
 * last line (a till redials several times a second; its log must not fill with the same line). */
int tsync__node_refusal_note(tsync_node *n, const npeer *p, const uint8_t pk[TSYNC__PK_BYTES],
                             int by_peer, const char *why)
{
    uint64_t now = tsync__mono_ms();
    nrefusal *f = NULL;
    for (size_t i = 0; i < n->nrefusals && !f; i++)
        if (!memcmp(n->refusals[i].pk, pk, TSYNC__PK_BYTES)) f = &n->refusals[i];
    if (!f) {
        size_t at = n->nrefusals;
        if (at == REFUSALS_MAX) { /* forget the oldest */
            at = 0;
            for (size_t i = 1; i < n->nrefusals; i++)
                if (n->refusals[i].at_mono < n->refusals[at].at_mono) at = i;
        } else {
            n->nrefusals++;
        }
        f = &n->refusals[at];
        memset(f, 0, sizeof *f);
        memcpy(f->pk, pk, TSYNC__PK_BYTES);
    }
    int log = !f->logged_mono || now - f->logged_mono >= REFUSAL_LOG_MS || f->by_peer != by_peer ||
              strncmp(f->why, why, sizeof f->why - 1) != 0;
    f->by_peer = by_peer;
    f->inbound = p->inbound;
    snprintf(f->why, sizeof f->why, "%s", why);
    snprintf(f->addr, sizeof f->addr, "%s", p->addr);
    if (p->name[0]) snprintf(f->name, sizeof f->name, "%s", p->name);
    f->at_mono = now;
    if (log) f->logged_mono = now;
    n->status_dirty = 1;
    return log;
}

static nlink *link_find(nlink *v, size_t nv, const char *id)
{
    for (size_t i = 0; i < nv; i++)
        if (!strcmp(v[i].id, id)) return &v[i];
    return NULL;
}

/* Is a till with this key advertised for our shop now (mDNS)? */
int tsync__node_advertised(const tsync_node *n, const uint8_t key[TSYNC__PK_BYTES])
{
    for (size_t i = 0; i < n->mdns.nfound; i++)
        if (!memcmp(n->mdns.found[i].key, key, TSYNC__PK_BYTES)) return 1;
    return 0;
}

static void link_event(tsync_node *n, const nlink *l, int state, int previous, uint64_t since,
                       int online)
{
    char k[2 * TSYNC__PK_BYTES + 1] = "";
    if (l->key_known) tsync__hex(l->pk, TSYNC__PK_BYTES, k);
    tsync__node_log(n, TSYNC_LOG_DEBUG, "peer %s%s%.16s at %s: %s (was %s)", l->name,
                    l->name[0] ? " " : "", k[0] ? k : "(key unknown)", l->addr,
                    tsync_peer_state_name(state), tsync_peer_state_name(previous));
    n->status_dirty = 1;
    if (!n->o.on_peer_state) return;
    tsync_peer_event e = {.key_hex = k,
                          .address = l->addr,
                          .name = l->name,
                          .state = state,
                          .previous = previous,
                          .since_ms = since,
                          .online = online,
                          .reason = state == TSYNC_PEER_REFUSED ? l->why : ""};
    n->o.on_peer_state(n->o.cb_ctx, &e);
}

/* Whether a till other than l's is connected (l's own sessions are not verified yet). */
static int online_but(const tsync_node *n, const nlink *l)
{
    for (size_t i = 0; i < n->npeers; i++) {
        const npeer *p = n->peers[i];
        if (!p->used || !p->verified || p == l->p) continue;
        if (l->key_known && p->key_known && !memcmp(p->pk, l->pk, TSYNC__PK_BYTES)) continue;
        return 1;
    }
    return 0;
}

/* The state of one session entry. A till that was connected and is not now is unreachable
 * (lost, or restarting) until a session is verified again; a first dial is "connecting" for
 * liveness_ms, then unreachable too (the transport keeps dialling with backoff). */
static int session_state(const tsync_node *n, const npeer *p, const nlink *prev, uint64_t now)
{
    if (p->verified) return TSYNC_PEER_CONNECTED;
    if (prev && (prev->state == TSYNC_PEER_CONNECTED || prev->state == TSYNC_PEER_UNREACHABLE))
        return TSYNC_PEER_UNREACHABLE;
    if (p->inbound && !p->up) return TSYNC_PEER_UNREACHABLE;
    if (!p->up && now - p->born_mono >= (uint64_t)n->o.liveness_ms) return TSYNC_PEER_UNREACHABLE;
    return TSYNC_PEER_CONNECTING;
}

/* Rebuilds the rows from the sessions and advertisements and reports every change. */
void tsync__node_links_update(tsync_node *n)
{
    uint64_t now = tsync__mono_ms(), wall = tsync__wall_ms();
    size_t cap = n->npeers + n->mdns.nfound + n->nstatics + n->nrefusals, nv = 0;
    nlink *v = cap ? calloc(cap, sizeof *v) : NULL;
    if (cap && !v) return; /* keep the old rows; the next round tries again */
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used) continue;
        /* A keyless static address dialled with many candidate keys is one row, by address. */
        const speer *sp = p->static_idx >= 0 ? &n->statics[p->static_idx] : NULL;
        int by_addr = sp && !sp->has_key && !sp->found;
        if (by_addr && !p->up && sp->ncands > 1 && sp->cands[0] != p->id) continue;
        nlink r = {0};
        if (p->key_known && !by_addr) {
            r.key_known = 1;
            memcpy(r.pk, p->pk, TSYNC__PK_BYTES);
            tsync__hex(p->pk, TSYNC__PK_BYTES, r.id);
        } else if (by_addr) {
            snprintf(r.id, sizeof r.id, "@%s", p->addr);
        } else { /* a session whose key is unknown (not enrolled): one row per session */
            snprintf(r.id, sizeof r.id, "@%s#%" PRIu32, p->addr, p->id);
        }
        snprintf(r.addr, sizeof r.addr, "%s", p->addr);
        snprintf(r.name, sizeof r.name, "%s", p->name);
        r.via = p->inbound ? "inbound" : p->mdns ? "mdns" : "static";
        r.p = p;
        r.seen_ms = p->seen_ms;
        const nlink *prev = link_find(n->links, n->nlinks, r.id);
        r.state = session_state(n, p, prev, now);
        /* A session just admitted with a till that refused us a moment ago is most likely about
         * to be refused again (it checks our certificate as we check its): not "connected" yet. */
        const nrefusal *rf = r.key_known ? tsync__node_refusal_find(n, r.pk, now) : NULL;
        if (rf && (r.state != TSYNC_PEER_CONNECTED || now - rf->at_mono < 2000 ||
                   now - p->verified_mono < 2000)) {
            r.state = TSYNC_PEER_REFUSED;
            snprintf(r.why, sizeof r.why, "%s%s", rf->by_peer ? "it refused us: " : "", rf->why);
        }
        nlink *same = link_find(v, nv, r.id);
        if (same) {
            if (state_rank(r.state) <= state_rank(same->state)) continue;
            *same = r;
        } else {
            v[nv++] = r;
        }
    }
    /* A refused till whose session is gone (an inbound one is not dialled back) stays listed. */
    for (size_t i = 0; i < n->nrefusals; i++) {
        const nrefusal *f = &n->refusals[i];
        char id[sizeof v[0].id];
        tsync__hex(f->pk, TSYNC__PK_BYTES, id);
        if (now - f->at_mono >= REFUSAL_KEEP_MS || link_find(v, nv, id)) continue;
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        r->key_known = 1;
        memcpy(r->pk, f->pk, TSYNC__PK_BYTES);
        snprintf(r->addr, sizeof r->addr, "%s", f->addr);
        snprintf(r->name, sizeof r->name, "%s", f->name);
        r->via = f->inbound ? "inbound" : "static";
        r->state = TSYNC_PEER_REFUSED;
        snprintf(r->why, sizeof r->why, "%s%s", f->by_peer ? "it refused us: " : "", f->why);
    }
    for (size_t i = 0; i < n->mdns.nfound; i++) {
        const nfound *f = &n->mdns.found[i];
        char id[sizeof v[0].id];
        tsync__hex(f->key, TSYNC__PK_BYTES, id);
        nlink *same = link_find(v, nv, id);
        if (same) {
            same->discovered_ms = f->found_ms;
            if (!same->name[0]) snprintf(same->name, sizeof same->name, "%s", f->name);
            continue;
        }
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        r->key_known = 1;
        memcpy(r->pk, f->key, TSYNC__PK_BYTES);
        snprintf(r->addr, sizeof r->addr, "%s", f->endpoint);
        snprintf(r->name, sizeof r->name, "%s", f->name);
        r->via = "mdns";
        r->state = TSYNC_PEER_DISCOVERED;
        r->discovered_ms = f->found_ms;
    }
    /* A static address nothing was dialled at yet is listed too, with the reason: otherwise a
     * mistyped setup shows "peers: none" and nothing says why. */
    for (size_t i = 0; i < n->nstatics; i++) {
        const speer *sp = &n->statics[i];
        if (sp->has_key || sp->found || sp->ncands) continue;
        char id[sizeof v[0].id];
        snprintf(id, sizeof id, "@%s", sp->endpoint);
        if (link_find(v, nv, id)) continue;
        nlink *r = &v[nv++];
        memcpy(r->id, id, sizeof id);
        snprintf(r->addr, sizeof r->addr, "%s", sp->endpoint);
        r->via = "static";
        r->state = TSYNC_PEER_WAITING;
        r->reason = KEYLESS_WAIT;
    }
    /* Carry the times over, and report what changed. */
    for (size_t i = 0; i < nv; i++) {
        nlink *r = &v[i];
        const nlink *prev = link_find(n->links, n->nlinks, r->id);
        int was = prev ? prev->state : TSYNC_PEER_GONE;
        if (prev) {
            r->since_ms = prev->since_ms;
            r->connected_ms = prev->connected_ms;
            r->lost_ms = prev->lost_ms;
            if (!r->discovered_ms) r->discovered_ms = prev->discovered_ms;
            if (prev->seen_ms > r->seen_ms) r->seen_ms = prev->seen_ms;
            if (!r->name[0]) memcpy(r->name, prev->name, sizeof r->name);
        }
        if (r->state == was) continue;
        r->since_ms = wall;
        if (r->state == TSYNC_PEER_CONNECTED) r->connected_ms = wall;
        if (was == TSYNC_PEER_CONNECTED) r->lost_ms = wall;
    }
    nlink *old = n->links;
    size_t nold = n->nlinks;
    n->links = v;
    n->nlinks = nv;
    int online = tsync__node_online(n);
    for (size_t i = 0; i < nv; i++) {
        const nlink *prev = link_find(old, nold, v[i].id);
        int was = prev ? prev->state : TSYNC_PEER_GONE;
        if (v[i].state == was) continue;
        if (v[i].state == TSYNC_PEER_CONNECTED && v[i].p &&
            (was == TSYNC_PEER_GONE || was == TSYNC_PEER_DISCOVERED || was == TSYNC_PEER_WAITING)) {
            /* The rows are rebuilt after a round's events: a session dialled and verified within
             * one round (the peer's HELLO already queued when the loop first looked, as when a
             * node's thread starts late under load, or an inbound till that is quick) was
             * connecting all the same, since it was made. Every change is an event: a till new
             * to the list is connecting first (docs/NODE.md, "Network state"). */
            uint64_t born = wall - (now - v[i].p->born_mono);
            if (prev && born < prev->since_ms) born = prev->since_ms;
            link_event(n, &v[i], TSYNC_PEER_CONNECTING, was, born, online_but(n, &v[i]));
            was = TSYNC_PEER_CONNECTING;
        }
        link_event(n, &v[i], v[i].state, was, v[i].since_ms, online);
    }
    for (size_t i = 0; i < nold; i++)
        if (!link_find(v, nv, old[i].id))
            link_event(n, &old[i], TSYNC_PEER_GONE, old[i].state, wall, online);
    free(old);
}

/* mDNS: remember the shop's advertised tills (FOUND adds or updates, LOST forgets). */
static void found_note(tsync_node *n, const tsync__disc_event *ev)
{
    size_t i;
    for (i = 0; i < n->mdns.nfound; i++)
        if (!memcmp(n->mdns.found[i].key, ev->key, TSYNC__PK_BYTES)) break;
    if (ev->kind == TSYNC__DISC_LOST) {
        if (i < n->mdns.nfound) n->mdns.found[i] = n->mdns.found[--n->mdns.nfound];
        return;
    }
    if (i == n->mdns.nfound) {
        if (n->mdns.nfound == n->mdns.capfound) {
            size_t c = n->mdns.capfound ? 2 * n->mdns.capfound : 8;
            nfound *nf = realloc(n->mdns.found, c * sizeof *nf);
            if (!nf) return;
            n->mdns.found = nf;
            n->mdns.capfound = c;
        }
        memset(&n->mdns.found[i], 0, sizeof n->mdns.found[i]);
        memcpy(n->mdns.found[i].key, ev->key, TSYNC__PK_BYTES);
        n->mdns.found[i].found_ms = tsync__wall_ms();
        n->mdns.found[i].quiet_mono = tsync__mono_ms();
        n->mdns.nfound++;
    }
    nfound *f = &n->mdns.found[i];
    snprintf(f->endpoint, sizeof f->endpoint, "%s", ev->endpoint);
    size_t k = 0;
    for (const char *c = ev->name; *c && k + 1 < sizeof f->name; c++)
        f->name[k++] = (*c >= 0x20 && *c < 0x7f) ? *c : '?';
    f->name[k] = 0;
}

/* ---------------------------------------------------------------- static peers */

int tsync__node_parse_peer(const char *spec, speer *sp, char *err, size_t errlen)
{
    memset(sp, 0, sizeof *sp);
    const char *hash = strchr(spec, '#');
    size_t elen = hash ? (size_t)(hash - spec) : strlen(spec);
    if (strncmp(spec, "tcp://", 6) != 0 || elen <= 6 || elen >= sizeof sp->endpoint ||
        !memchr(spec + 6, ':', elen - 6)) {
        snprintf(err, errlen, "peer '%s': expected tcp://ADDR:PORT or tcp://ADDR:PORT#KEY", spec);
        return TSYNC_EINVAL;
    }
    memcpy(sp->endpoint, spec, elen);
    sp->endpoint[elen] = 0;
    if (hash) {
        if (tsync__unhex(hash + 1, sp->key, sizeof sp->key) != 0) {
            snprintf(err, errlen, "peer '%s': KEY must be 64 hex digits (that till's public key)",
                     spec);
            return TSYNC_EINVAL;
        }
        sp->has_key = 1;
    }
    return 0;
}

int tsync__node_dial(tsync_node *n, size_t si, const uint8_t key[TSYNC__PK_BYTES], uint32_t *id)
{
    speer *sp = &n->statics[si];
    int rc = tsync__tp_connect(n->tp, sp->endpoint, key, id);
    if (rc && rc != TSYNC_EEXISTS) return rc;
    npeer *p = tsync__node_peer_get(n, *id);
    if (!p) return TSYNC_ENOMEM;
    p->static_idx = (int)si;
    p->key_known = 1;
    memcpy(p->pk, key, TSYNC__PK_BYTES);
    snprintf(p->addr, sizeof p->addr, "%s", sp->endpoint);
    return 0;
}

/* Keyless static peers of an enrolled till: dial once per certified device key not tried yet. */
void tsync__node_dial_candidates(tsync_node *n)
{
    uint8_t *keys = NULL;
    size_t nk = 0;
    int need = 0;
    for (size_t i = 0; i < n->nstatics; i++) need |= !n->statics[i].has_key && !n->statics[i].found;
    if (!need || tsync__sync_device_keys(n->s, &keys, &nk) != 0) return;
    for (size_t i = 0; i < n->nstatics; i++) {
        speer *sp = &n->statics[i];
        if (sp->has_key || sp->found) continue;
        for (size_t k = 0; k < nk; k++) {
            const uint8_t *key = keys + k * TSYNC__PK_BYTES;
            size_t c;
            for (c = 0; c < sp->ncands; c++)
                if (memcmp(sp->cand_keys + c * TSYNC__PK_BYTES, key, TSYNC__PK_BYTES) == 0) break;
            if (c < sp->ncands) continue;
            uint32_t *ids = realloc(sp->cands, (sp->ncands + 1) * sizeof *ids);
            if (!ids) break;
            sp->cands = ids;
            uint8_t *ck = realloc(sp->cand_keys, (sp->ncands + 1) * TSYNC__PK_BYTES);
            if (!ck) break;
            sp->cand_keys = ck;
            uint32_t id;
            if (tsync__node_dial(n, i, key, &id) != 0) continue;
            sp->cands[sp->ncands] = id;
            memcpy(sp->cand_keys + sp->ncands * TSYNC__PK_BYTES, key, TSYNC__PK_BYTES);
            sp->ncands++;
        }
        if (sp->waiting && sp->ncands) {
            sp->waiting = 0;
            n->status_dirty = 1;
            tsync__node_log(n, TSYNC_LOG_INFO,
                            "peer %s: a certificate of another till is known now: dialling it",
                            sp->endpoint);
        }
    }
    free(keys);
}

/* A candidate came up: the endpoint's key is found, the other dials stop. */
void tsync__node_candidate_up(tsync_node *n, npeer *p)
{
    if (p->static_idx < 0) return;
    speer *sp = &n->statics[p->static_idx];
    if (sp->has_key || sp->found) return;
    sp->found = 1;
    memcpy(sp->key, p->pk, TSYNC__PK_BYTES);
    for (size_t c = 0; c < sp->ncands; c++) {
        if (sp->cands[c] == p->id) continue;
        tsync__tp_close(n->tp, sp->cands[c]);
        npeer *o = tsync__node_peer_find(n, sp->cands[c]);
        if (o) tsync__node_peer_free(o);
    }
}

/* ---------------------------------------------------------------- mDNS discovery */

/* Dials an advertised till at endpoint (NULL: it withdrew its advertisement). Nothing is done
 * when a session with that key is up or that address is being dialled. A dial without a session
 * stops when the till withdraws its advertisement (a session is judged by liveness, not mDNS: a
 * cut host stays listed for an hour) or moves to another address (dialled there instead). */
static void mdns_dial(tsync_node *n, const uint8_t key[TSYNC__PK_BYTES], const char *endpoint)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->key_known || memcmp(p->pk, key, TSYNC__PK_BYTES) != 0) continue;
        if (p->up) return;
        if (!p->mdns || p->inbound) continue;
        if (endpoint && !strcmp(p->addr, endpoint)) return;
        tsync__tp_close(n->tp, p->id);
        tsync__node_peer_free(p);
    }
    if (!endpoint) return;
    uint32_t id;
    int rc = tsync__tp_connect(n->tp, endpoint, key, &id);
    if (rc && rc != TSYNC_EEXISTS) return;
    npeer *p = tsync__node_peer_get(n, id);
    if (!p) return;
    p->mdns = 1;
    p->key_known = 1;
    memcpy(p->pk, key, TSYNC__PK_BYTES);
    snprintf(p->addr, sizeof p->addr, "%s", endpoint);
    char k[17];
    tsync__hex(key, 8, k);
    tsync__node_log(n, TSYNC_LOG_DEBUG, "mDNS: found %s at %s: dialling", k, endpoint);
}

/* The till with the larger key of a pair waits to be dialled; when no session with an advertised
 * till of the shop has been up for MDNS_FALLBACK_MS it dials too. That covers a till whose
 * address changed without a goodbye (the others dial its old address until the record expires,
 * up to two minutes) and links that only work one way. Two sessions with one till are harmless. */
void tsync__node_mdns_fallback(tsync_node *n, uint64_t now)
{
    const uint8_t *own = tsync__sync_public_key(n->s);
    for (size_t i = 0; i < n->mdns.nfound; i++) {
        nfound *f = &n->mdns.found[i];
        if (memcmp(f->key, own, TSYNC__PK_BYTES) > 0) continue; /* we dial it anyway */
        int up = 0;
        for (size_t j = 0; j < n->npeers && !up; j++) {
            const npeer *p = n->peers[j];
            up = p->used && p->up && p->key_known && !memcmp(p->pk, f->key, TSYNC__PK_BYTES);
        }
        if (up) {
            f->quiet_mono = now;
            continue;
        }
        /* (now was read before this round's discovery events stamped new entries) */
        if (now < f->quiet_mono || now - f->quiet_mono < MDNS_FALLBACK_MS) continue;
        mdns_dial(n, f->key, f->endpoint);
    }
}

/* A till advertised on the LAN: dial it when it speaks our protocol and, for an enrolled till,
 * belongs to our shop (TXT can be forged: the certificate in its HELLO is what decides). A
 * database never enrolled talks only to its static peers. */
static void on_discovered(tsync_node *n, const tsync__disc_event *ev)
{
    if (ev->kind == TSYNC__DISC_DAEMON_DOWN) {
        if (!n->mdns.down_logged)
            tsync__node_log(n, TSYNC_LOG_WARN,
                            "mDNS: no avahi daemon reachable; sessions and static peers go on, "
                            "no new tills are found until one appears");
        n->mdns.down_logged = 1;
        n->mdns.daemon = -1;
        n->status_dirty = 1;
        return;
    }
    if (ev->kind == TSYNC__DISC_DAEMON_UP) {
        tsync__node_log(n, TSYNC_LOG_INFO, "mDNS: avahi daemon reachable; publishing and browsing");
        n->mdns.down_logged = 0;
        n->mdns.daemon = 1;
        n->status_dirty = 1;
        return;
    }
    if (!ev->has_key || !n->enrolled || ev->version != TSYNC_WIRE_VERSION || !ev->has_shop ||
        memcmp(ev->shop, n->shop, TSYNC__SHOP_ID_BYTES) != 0)
        return;
    found_note(n, ev);
    n->status_dirty = 1;
    /* One session per pair: the till with the smaller key dials, the other waits for it (and
     * dials too when no session came for a while: tsync__node_mdns_fallback). */
    int dialer = memcmp(ev->key, tsync__sync_public_key(n->s), TSYNC__PK_BYTES) > 0;
    int dialling = 0; /* a fallback dial of ours follows the till too */
    for (size_t i = 0; i < n->npeers && !dialling; i++) {
        const npeer *p = n->peers[i];
        dialling = p->used && p->mdns && !p->inbound && !memcmp(p->pk, ev->key, TSYNC__PK_BYTES);
    }
    if (dialer || dialling || ev->kind == TSYNC__DISC_LOST)
        mdns_dial(n, ev->key, ev->kind == TSYNC__DISC_FOUND ? ev->endpoint : NULL);
}

void tsync__node_discovery(tsync_node *n)
{
    if (!n->mdns.disc) return;
    tsync__disc_event ev;
    for (int i = 0; i < 64 && tsync__disc_poll(n->mdns.disc, &ev) == 1; i++) on_discovered(n, &ev);
}
