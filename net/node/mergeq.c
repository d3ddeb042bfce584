/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/mergeq.c — the merge queue: BATCHES received while events are drained wait here and
 * are merged in one transaction per round (peer by peer when the whole is refused, so one bad
 * sender cannot block the others); then every sender learns our new vector, and merged batches
 * are forwarded (push.c: at once to a peer that gets them only through us). A busy database keeps
 * the queue for a retry; a full one drops it (the senders offer the batches again).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_int.h"

#define MERGE_RETRY_MS 50
/* BATCHES beyond this while the database is busy are dropped: their senders send them again. */
#define QUEUE_HARD_MAX (64u << 20)

/* ---------------------------------------------------------------- the queue */

int tsync__node_queue_batches(tsync_node *n, npeer *p, const void *data, size_t len)
{
    char lb[LBL];
    const tsync__wire_batches *b = NULL;
    int rc = tsync__node_queue_frame(n, p->id, tsync__node_peer_label(p, lb), data, len, &b);
    if (rc == 0 && b) p->rx_batches += b->nbodies;
    return rc;
}

/* What the merge will handle: a CBATCHES's bodies are many times its frame, and the queue is
 * merged once it holds MERGE_QUEUE_MAX (one merge of everything a catch-up sent would keep the
 * thread away from the sessions for longer than liveness allows); its compact run is kept too. */
static size_t q_work(const qmsg *q)
{
    size_t work = q->len + q->blob_len;
    if (q->crun)
        for (uint32_t k = 0; k < q->m.batches.nbodies; k++) work += q->m.batches.body_len[k];
    return work;
}

static void q_free(qmsg *q)
{
    free(q->frame);
    tsync__arena_free(&q->a);
    tsync__crun_dec_free(q->crun);
    free(q->blob);
    q->frame = NULL, q->crun = NULL, q->blob = NULL, q->blob_len = 0;
}

void tsync__node_queue_drop_last(tsync_node *n)
{
    if (!n->mq.n) return;
    qmsg *q = &n->mq.q[--n->mq.n];
    size_t work = q_work(q);
    n->mq.bytes -= work < n->mq.bytes ? work : n->mq.bytes;
    q_free(q);
}

int tsync__node_queue_frame(tsync_node *n, uint32_t peer, const char *from, const void *data,
                            size_t len, const tsync__wire_batches **out)
{
    if (out) *out = NULL;
    if (n->mq.bytes + len > QUEUE_HARD_MAX) return 0; /* sent again after the next ACK */
    if (n->mq.n == n->mq.cap) {
        size_t cap = n->mq.cap ? n->mq.cap * 2 : 16;
        qmsg *q = realloc(n->mq.q, cap * sizeof *q);
        if (!q) return TSYNC_ENOMEM;
        n->mq.q = q;
        n->mq.cap = cap;
    }
    qmsg *q = &n->mq.q[n->mq.n];
    memset(q, 0, sizeof *q);
    q->frame = malloc(len);
    if (!q->frame) return TSYNC_ENOMEM;
    memcpy(q->frame, data, len);
    q->len = len;
    q->peer = peer;
    char err[TSYNC__ERRLEN];
    int rc;
    if (tsync__wire_ext_type(q->frame, len) == TSYNC__WIRE_CBATCHES) {
        /* Rebuilt here into bodies as BATCHES carries them, and the compact run kept: a run the
         * merge applies whole is stored in it (store/log_run.c), as from a bundle. */
        tsync__wire_cbatches cb;
        q->m.type = TSYNC__WIRE_BATCHES;
        rc = tsync__wire_cbatches_decode(q->frame, len, &cb, err);
        if (rc == 0 && !(q->crun = tsync__crun_dec_new())) rc = TSYNC_ENOMEM;
        if (rc == 0)
            rc = tsync__wire_cbatches_unpack_raw(&cb, q->crun, &q->m.batches, &q->blob,
                                                 &q->blob_len, err);
    } else {
        rc = tsync__wire_decode(q->frame, len, &q->m, &q->a, err);
        if (rc == 0 && q->m.type != TSYNC__WIRE_BATCHES) {
            snprintf(err, TSYNC__ERRLEN, "not a BATCHES message");
            rc = TSYNC_ECORRUPT;
        }
    }
    if (rc != 0) {
        tsync__node_log(n, TSYNC_LOG_DEBUG, "batches from %s refused: %s", from, err);
        q_free(q);
        return rc == TSYNC_ENOMEM ? rc : TSYNC_ECORRUPT;
    }
    n->mq.n++;
    n->mq.bytes += q_work(q);
    if (out) *out = &q->m.batches;
    return 0;
}

/* ---------------------------------------------------------------- merging */

void tsync__node_q_clear(tsync_node *n)
{
    for (size_t i = 0; i < n->mq.n; i++) q_free(&n->mq.q[i]);
    n->mq.n = 0;
    n->mq.bytes = 0;
}

/* Merges the queued messages of one peer (peer != 0) or of all (peer == 0) in one transaction.
 * Returns tsync__merge_bundle's code. */
static int merge_some(tsync_node *n, uint32_t peer, tsync_merge_report *r)
{
    size_t k = 0;
    for (size_t i = 0; i < n->mq.n; i++)
        if (!peer || n->mq.q[i].peer == peer) k++;
    if (!k) return 0;
    tsync__bsite *sites = calloc(k, sizeof *sites);
    tsync__brun *runs = calloc(k, sizeof *runs);
    if (!sites || !runs) {
        free(sites);
        free(runs);
        return TSYNC_ENOMEM;
    }
    size_t j = 0;
    for (size_t i = 0; i < n->mq.n; i++) {
        if (peer && n->mq.q[i].peer != peer) continue;
        const tsync__wire_batches *b = &n->mq.q[i].m.batches;
        memcpy(sites[j].site, b->site, TSYNC__SITE_BYTES);
        memcpy(sites[j].pk, b->pk, TSYNC__PK_BYTES);
        memcpy(sites[j].inc, b->inc, TSYNC__INC_BYTES);
        runs[j].site = (uint32_t)j;
        runs[j].first_seq = b->first_seq;
        memcpy(runs[j].prev, b->prev, TSYNC__HASH_BYTES);
        runs[j].nbodies = b->nbodies;
        runs[j].body = (const uint8_t **)b->body;
        runs[j].body_len = (size_t *)b->body_len;
        memcpy(runs[j].sig, b->sig, TSYNC__SIG_BYTES);
        /* The store keeps it only for a run it applies whole (and long enough). */
        runs[j].crun = n->mq.q[i].blob;
        runs[j].crun_len = n->mq.q[i].blob_len;
        j++;
    }
    tsync__bundle bun;
    memset(&bun, 0, sizeof bun);
    bun.nsites = bun.nruns = (uint32_t)k;
    bun.sites = sites;
    bun.runs = runs;
    int rc = tsync__merge_bundle(n->s, &bun, r);
    free(sites);
    free(runs);
    return rc;
}

int tsync__node_refusal_reason(int rc)
{
    switch (rc) {
    case TSYNC_EBADSIG:
    case TSYNC_ECHAIN:
    case TSYNC_ECORRUPT:
    case TSYNC_EVERSION:
        return R_SIGNATURE;
    case TSYNC_EFORK:
        return R_FORK;
    default:
        return R_BATCH;
    }
}

static int is_db_failure(int rc)
{
    return rc == TSYNC_EIO || rc == TSYNC_ENOMEM || rc == TSYNC_EBUSY || rc == TSYNC_ERROR ||
           rc == TSYNC_EFULL;
}

static void account(tsync_node *n, const tsync_merge_report *r)
{
    n->merged += r->merged;
    n->conflicts += r->conflicts;
    n->held_reported += r->held;
    for (size_t i = 0; i < r->nmessages; i++)
        tsync__node_log(n, TSYNC_LOG_DEBUG, "merge: %s", r->messages[i]);
}

void tsync__node_flush_merges(tsync_node *n)
{
    if (!n->mq.n) return;
    if (tsync__node_disk_full_waiting(n)) {
        if (n->mq.bytes >= MERGE_QUEUE_MAX) tsync__node_q_clear(n);
        return;
    }
    if (n->mq.retry_mono && tsync__mono_ms() < n->mq.retry_mono) return;
    n->mq.retry_mono = 0;
    /* The tables this round's merges change, for on_change (nothing older: a snapshot's). */
    char **tables = NULL;
    size_t ntables = 0;
    tsync__sync_merged_tables_take(n->s, &tables, &ntables);
    tsync__sync_merged_tables_free(tables, ntables);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = merge_some(n, 0, &r);
    if (rc == TSYNC_EFULL) {
        tsync_merge_report_clear(&r);
        tsync__node_disk_full_hit(n, "merge");
        if (n->mq.bytes >= MERGE_QUEUE_MAX) tsync__node_q_clear(n);
        return;
    }
    if (rc == 0) tsync__node_disk_full_clear(n);
    if (rc == TSYNC_EBUSY) {
        /* The app holds the write lock: keep the batches and try again shortly (the node keeps
         * reading its peers meanwhile, so they do not take it for dead). */
        tsync_merge_report_clear(&r);
        n->mq.retry_mono = tsync__mono_ms() + MERGE_RETRY_MS;
        return;
    }
    size_t merged = r.merged, conflicts = r.conflicts;
    account(n, &r);
    tsync_merge_report_clear(&r);
    n->merges++;
    if (rc && !is_db_failure(rc) && rc != TSYNC_EFORK && rc != TSYNC_EREFUSED) {
        /* Refused whole: merge peer by peer, so only the bad sender's batches are refused. */
        uint32_t *ids = calloc(n->mq.n, sizeof *ids);
        size_t nid = 0;
        for (size_t i = 0; ids && i < n->mq.n; i++) {
            size_t k;
            for (k = 0; k < nid && ids[k] != n->mq.q[i].peer; k++)
                ;
            if (k == nid) ids[nid++] = n->mq.q[i].peer;
        }
        for (size_t i = 0; i < nid; i++) {
            tsync_merge_report pr = TSYNC_MERGE_REPORT_INIT;
            int prc = merge_some(n, ids[i], &pr);
            merged += pr.merged;
            conflicts += pr.conflicts;
            account(n, &pr);
            tsync_merge_report_clear(&pr);
            npeer *p = tsync__node_peer_find(n, ids[i]);
            if (prc && p && prc != TSYNC_EFULL) /* a full disk is not the sender's fault */
                tsync__node_bad_message(n, p, tsync__node_refusal_reason(prc),
                                        tsync__node_errtext());
            if (prc && ids[i] == TSYNC__NODE_RELAY_QID && !is_db_failure(prc))
                tsync__node_relay_refused(n, prc);
            if (prc && is_db_failure(prc)) rc = prc;
        }
        free(ids);
        if (!is_db_failure(rc)) rc = 0;
    } else if (rc == TSYNC_EFORK || rc == TSYNC_EREFUSED) {
        n->refused[tsync__node_refusal_reason(rc)]++;
        /* A fork found now: every peer may hold the other branch, longer than ours; the next
         * push compares heads and sends our branch from the fork (both branches reach all). */
        for (size_t i = 0; rc == TSYNC_EFORK && i < n->npeers; i++)
            if (n->peers[i]->used) n->peers[i]->fork_check = 1;
        tsync__node_log(n, TSYNC_LOG_WARN, "some batches refused: %s", tsync__node_errtext());
        rc = 0;
    }
    if (rc == TSYNC_EBUSY) {
        tsync__node_log(n, TSYNC_LOG_DEBUG, "database busy: %zu messages will be sent again",
                        n->mq.n);
    } else if (rc == TSYNC_EFULL) {
        tsync__node_disk_full_hit(n, "merge"); /* the senders offer the batches again */
    } else if (rc) {
        tsync__node_error(n, rc, "merge failed: %s", tsync__node_errtext());
        if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
    }
    /* Tell each sender what we hold now (also after a refusal: it learns what we lack); after a
     * merge, tell every peer, so peers that got the same batches from their origin do not forward
     * them to us again. */
    tsync__node_refresh_ours(n);
    /* A sender holds what it sent us: never send those batches back to it (it does not ACK what
     * it merely sent). Only when our head for that origin is the sender's branch. */
    for (size_t i = 0; i < n->mq.n; i++) {
        npeer *p = tsync__node_peer_find(n, n->mq.q[i].peer);
        const tsync__wire_batches *b = &n->mq.q[i].m.batches;
        if (!p || !p->verified || !b->nbodies) continue;
        uint64_t last = b->first_seq + b->nbodies - 1;
        if (tsync__vv_seq(&p->sent, b->site) >= last || tsync__vv_seq(&n->ours, b->site) < last)
            continue;
        uint8_t h[TSYNC__HASH_BYTES];
        memcpy(h, b->prev, sizeof h);
        for (uint32_t k = 0; k < b->nbodies; k++)
            tsync__batch_hash(h, b->body[k], b->body_len[k], h);
        const tsync__vv_entry *e = tsync__vv_get(&n->ours, b->site);
        if (e->seq == last && memcmp(e->hash, h, sizeof h) != 0) continue;
        tsync__vv_set(&p->sent, b->site, last, h);
    }
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || p->close_at_mono) continue;
        size_t k;
        for (k = 0; k < n->mq.n && n->mq.q[k].peer != p->id; k++)
            ;
        if (merged || k < n->mq.n) tsync__node_send_vector(n, p, 0);
    }
    tsync__node_q_clear(n);
    n->status_dirty = 1;
    if (merged) {
        tsync__node_log(n, TSYNC_LOG_DEBUG, "merged %zu batches", merged);
        /* The app learns first: pushes made before its callback would delay what it sees. */
        if (n->o.on_change) {
            tsync__sync_merged_tables_take(n->s, &tables, &ntables);
            tsync_node_change c = {merged, conflicts, (const char *const *)tables, ntables};
            n->o.on_change(n->o.cb_ctx, &c);
            tsync__sync_merged_tables_free(tables, ntables);
        }
        /* Forward to the peers that lack them: at once to those that get them only through us,
         * a moment later to the others (push.c). */
        tsync__node_forward_merged(n);
    }
}
