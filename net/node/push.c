/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/push.c — pushing batches to a peer: what its `sent` vector lacks goes out as signed run
 * pieces while less than window_bytes are unacknowledged (node_int.h, "How batches move"); and
 * anti-entropy: every anti_entropy_ms each peer gets our vector, a piece unacknowledged for a
 * whole period is sent again, and fork proofs spread.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

#define PUSH_ERR_LOG_MS 60000 /* the same failure to send batches is logged this often */
/* Pieces up to this many bytes of bodies go compact (CBATCHES): the live shape's many small
 * batches, where it saves most. A larger piece is one big transaction's batch, which compacting
 * saves little on and would keep both nodes' threads busy for seconds (liveness is 3.5 s). */
#define CBATCHES_MAX_RAW (2u << 20)
/* ... and of at least this many batches: a live sale's lone batch goes as BATCHES at once, with
 * no compressor to set up on its way (commit-to-visible latency), and would save a few dozen
 * bytes. */
#define CBATCHES_MIN_BODIES 8u
#define PUSH_BUSY           1

typedef struct {
    tsync_node *n;
    npeer *p;
    int busy;
} push_ctx;

#define PUSH_BUSY 1

static int emit_piece(void *ctx, const tsync__run_piece *pc)
{
    push_ctx *c = ctx;
    npeer *p = c->p;
    int rc;
    if ((p->features & TSYNC__FEAT_CBATCHES) && pc->n >= CBATCHES_MIN_BODIES &&
        pc->bytes <= CBATCHES_MAX_RAW) {
        /* The peer reads CBATCHES: the piece compact and compressed, as in a bundle. */
        uint8_t *buf;
        size_t len;
        char err[TSYNC__ERRLEN];
        rc = tsync__wire_cbatches_build(pc->site, pc->first_seq, pc->prev, pc->n, pc->body, pc->len,
                                        pc->sig, &buf, &len, err);
        if (rc) {
            tsync__node_error(c->n, rc, "cannot encode CBATCHES: %s", err);
            return rc;
        }
        rc = tsync__tp_send(c->n->tp, p->id, buf, len);
        free(buf);
        if (rc == 0) {
            p->tx_msgs++;
            p->tx_mono = tsync__mono_ms();
        }
        goto sent;
    }
    tsync__msg m = {.type = TSYNC__WIRE_BATCHES};
    memcpy(m.batches.site, pc->site->site, TSYNC__SITE_BYTES);
    memcpy(m.batches.pk, pc->site->pk, TSYNC__PK_BYTES);
    memcpy(m.batches.inc, pc->site->inc, TSYNC__INC_BYTES);
    m.batches.first_seq = pc->first_seq;
    memcpy(m.batches.prev, pc->prev, TSYNC__HASH_BYTES);
    m.batches.nbodies = pc->n;
    m.batches.body = pc->body;
    m.batches.body_len = pc->len;
    memcpy(m.batches.sig, pc->sig, TSYNC__SIG_BYTES);
    rc = tsync__node_send_msg(c->n, p, &m);
sent:
    if (rc == TSYNC_EBUSY) {
        c->busy = 1;
        return PUSH_BUSY;
    }
    if (rc) return rc;
    uint64_t last = pc->first_seq + pc->n - 1;
    if (tsync__vv_set(&p->sent, pc->site->site, last, pc->last)) return TSYNC_ENOMEM;
    if (p->nfl == p->capfl) {
        size_t cap = p->capfl ? p->capfl * 2 : 16;
        inflight *f = realloc(p->fl, cap * sizeof *f);
        if (!f) return TSYNC_ENOMEM;
        p->fl = f;
        p->capfl = cap;
    }
    inflight *f = &p->fl[p->nfl++];
    memcpy(f->site, pc->site->site, TSYNC__SITE_BYTES);
    f->seq = last;
    f->bytes = pc->bytes;
    f->sent_mono = tsync__mono_ms();
    p->fl_bytes += pc->bytes;
    p->tx_batches += pc->n;
    return 0;
}

/* Whether `have` lacks something of ours (with check_hash: or holds another batch at a seq). */
static int lacks(const tsync__vv *have, const tsync__vv *ours, int check_hash)
{
    for (size_t i = 0; i < ours->n; i++) {
        const tsync__vv_entry *e = tsync__vv_get(have, ours->e[i].site);
        if (!e || e->seq < ours->e[i].seq) return 1;
        if (check_hash && e->seq == ours->e[i].seq &&
            memcmp(e->hash, ours->e[i].hash, TSYNC__HASH_BYTES) != 0)
            return 1;
        /* Ahead on an origin: it may hold another branch of it (a fork, a till whose log went
         * back), and then lacks our branch's tail; tsync__sync_runs sends it from the fork. */
        if (check_hash && e->seq > ours->e[i].seq) return 1;
    }
    return 0;
}

/* Logs a failure to send batches to p: a new one at once, the same one again only after
 * PUSH_ERR_LOG_MS, with how often it repeated meanwhile. */
static void push_failed(tsync_node *n, npeer *p, int rc)
{
    const char *why = tsync__node_errtext();
    uint64_t now = tsync__mono_ms();
    if (strncmp(p->push_err, why, sizeof p->push_err - 1) == 0 &&
        now - p->push_err_mono < PUSH_ERR_LOG_MS) {
        p->push_err_repeats++;
        return;
    }
    char lb[LBL];
    if (p->push_err_repeats && strncmp(p->push_err, why, sizeof p->push_err - 1) == 0)
        tsync__node_error(n, rc, "cannot send batches to %s: %s (again, %u times in %llu s)",
                          tsync__node_peer_label(p, lb), why, p->push_err_repeats + 1,
                          (unsigned long long)((now - p->push_err_mono) / 1000));
    else
        tsync__node_error(n, rc, "cannot send batches to %s: %s", tsync__node_peer_label(p, lb),
                          why);
    snprintf(p->push_err, sizeof p->push_err, "%s", why);
    p->push_err_mono = now;
    p->push_err_repeats = 0;
}

int tsync__node_push(tsync_node *n, npeer *p)
{
    if (!p->verified || p->close_at_mono || !n->ours_valid) return 0;
    if (p->out.active) {
        tsync__node_snap_pump(n, p);
        return 0;
    }
    if (p->fl_bytes >= n->o.window_bytes) return 0;
    if (p->push_wait_mono) {
        if (tsync__mono_ms() < p->push_wait_mono) return 0; /* its FEATURES may still come */
        p->push_wait_mono = 0;
    }
    if (!lacks(&p->sent, &n->ours, p->fork_check)) {
        p->fork_check = 0;
        return 0;
    }
    push_ctx c = {n, p, 0};
    int more = 0;
    int rc =
        tsync__sync_runs(n->s, &p->sent, n->o.window_bytes - p->fl_bytes, emit_piece, &c, &more);
    p->fork_check = 0;
    if (rc == PUSH_BUSY) return 0;
    if (rc == TSYNC__SYNC_BEHIND) {
        /* Behind by what we last heard from it, but a snapshot we took since then may have left a
         * hole in our log where its head was (it took the same batches meanwhile): wait for its
         * next ACK (every anti-entropy period; it calls push) before sending a whole snapshot. */
        if (p->vv_snaps == n->snaps_received) tsync__node_snap_start(n, p);
        return 0;
    }
    if (rc)
        push_failed(n, p, rc);
    else
        p->push_err[0] = 0;
    return rc;
}

void tsync__node_push_waiting(tsync_node *n, uint64_t now)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (p->used && p->push_wait_mono && now >= p->push_wait_mono) tsync__node_push(n, p);
    }
}

void tsync__node_push_all(tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used) tsync__node_push(n, n->peers[i]);
}

/* ---------------------------------------------------------------- forwarding */

/* Merged batches go to the peers that lack them this long after the merge: in a mesh most got
 * them from their origin too, and their ACKs, which arrive meanwhile, keep us from sending
 * duplicates. */
#define FORWARD_DELAY_MS 3
/* A peer that still lacked them after the delay this many forwards in a row gets them only
 * through us (a star's hub and its leaves): from then on it gets them at once, as a hop of the
 * commit-to-visible path, not 3 ms later. */
#define RELAY_AT_ONCE 2
/* ... for this long: then one forward is delayed again to see whether it still needs us (a till
 * that dialled the origin meanwhile). A peer whose ACK once showed batches we hold but never sent
 * it gets them elsewhere (a mesh, where an ACK late twice under load must not turn every forward
 * into a duplicate): it stays on the delay for the rest of the session. */
#define RELAY_PROBE_MS 2000

void tsync__node_forward_merged(tsync_node *n)
{
    uint64_t now = tsync__mono_ms();
    int delayed = 0;
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || p->close_at_mono || !lacks(&p->sent, &n->ours, 0)) continue;
        if (p->relay_mono && now - p->relay_mono < RELAY_PROBE_MS) {
            tsync__node_push(n, p);
            continue;
        }
        p->relay_mono = 0;
        p->fwd_pending = 1;
        delayed = 1;
    }
    if (delayed && !n->forward_due) n->forward_due = now + FORWARD_DELAY_MS;
}

void tsync__node_forward_due(tsync_node *n)
{
    uint64_t now = tsync__mono_ms();
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->fwd_pending) continue;
        p->fwd_pending = 0;
        if (!p->verified || p->close_at_mono) continue;
        if (!lacks(&p->sent, &n->ours, 0)) {
            p->relay_need = 0;
            continue;
        }
        if (p->relay_need < RELAY_AT_ONCE) p->relay_need++;
        if (p->relay_need < RELAY_AT_ONCE || p->relay_elsewhere) continue;
        if (p->relay_need == RELAY_AT_ONCE && !p->relay_said) {
            char lb[LBL];
            tsync__node_log(
                n, TSYNC_LOG_DEBUG,
                "forwarding to %s at once: it gets the batches we merge only through us",
                tsync__node_peer_label(p, lb));
            p->relay_said = 1;
        }
        p->relay_mono = now;
    }
    tsync__node_push_all(n);
}

void tsync__node_relay_elsewhere(tsync_node *n, npeer *p)
{
    p->relay_need = 0;
    p->relay_elsewhere = 1;
    if (!p->relay_mono) return;
    p->relay_mono = 0;
    if (p->relay_said) {
        char lb[LBL];
        tsync__node_log(n, TSYNC_LOG_DEBUG,
                        "forwarding to %s after a delay again: it gets batches from elsewhere",
                        tsync__node_peer_label(p, lb));
        p->relay_said = 0;
    }
}

typedef struct {
    tsync_node *n;
    npeer *p;
} proof_ctx;

static int send_proof(void *ctx, int64_t id, const uint8_t *proof, size_t len)
{
    proof_ctx *c = ctx;
    tsync__msg m = {.type = TSYNC__WIRE_FORK_PROOF};
    m.fork_proof.proof = proof;
    m.fork_proof.len = len;
    int rc = tsync__node_send_msg(c->n, c->p, &m);
    if (rc == TSYNC_EBUSY) return 1; /* the rest next round */
    c->p->fork_sent = id;            /* a proof too large to send is skipped, not retried */
    return 0;
}

/* Fork proofs replicate like revocations: every peer gets each proof once per session, and
 * merging one freezes the forked origin there too. */
static void spread_forks(tsync_node *n, npeer *p)
{
    proof_ctx c = {n, p};
    tsync__sync_fork_proofs(n->s, p->fork_sent, send_proof, &c);
}

void tsync__node_anti_entropy(tsync_node *n, uint64_t now)
{
    tsync__node_trust_check(n);
    tsync__node_prune(n, now);
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || p->close_at_mono) continue;
        tsync__node_send_vector(n, p, 0);
        spread_forks(n, p);
        uint64_t since = p->nfl && p->progress_mono > p->fl[0].sent_mono ? p->progress_mono
                         : p->nfl                                        ? p->fl[0].sent_mono
                                                                         : now;
        uint64_t period = (uint64_t)n->o.anti_entropy_ms;
        uint64_t idle_from = p->nfl && p->idle_first > p->fl[0].sent_mono ? p->idle_first
                             : p->nfl                                     ? p->fl[0].sent_mono
                                                                          : now;
        if (p->nfl && now - since >= period && p->idle_first && p->idle_last >= idle_from &&
            p->idle_last - idle_from >= period / 2) {
            /* The oldest piece in flight was not acknowledged within a whole period, nothing else
             * was meanwhile, and the peer kept sending ACKs without it for half a period (lost in
             * a reconnect, or held for a missing dependency): send again from the peer's ACK. A
             * peer still acknowledging is only slow (merging a catch-up), and one that sends no
             * ACK at all is busy (its thread in a merge longer than a period, on a loaded
             * machine; a dead one is cut by liveness, and a new session starts from its HELLO):
             * sending it all again would double its work and the bytes. */
            char lb[LBL];
            tsync__node_log(n, TSYNC_LOG_DEBUG, "resending to %s from its last acknowledged vector",
                            tsync__node_peer_label(p, lb));
            tsync__vv_free(&p->sent);
            for (size_t k = 0; k < p->acked.n; k++)
                tsync__vv_set(&p->sent, p->acked.e[k].site, p->acked.e[k].seq, p->acked.e[k].hash);
            p->nfl = 0;
            p->fl_bytes = 0;
            p->progress_mono = now;
            p->idle_first = p->idle_last = 0;
        }
        tsync__node_push(n, p);
    }
}
