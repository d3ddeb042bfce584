/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/snapshot.c — a peer behind the pruned horizon lacks batches this till keeps only as
 * stubs: it gets a snapshot of our state instead (store/snapshot.h makes and takes it), sent in
 * chunks with a hash over them. Enrolled shops only: a snapshot's rows carry no author
 * signature, so it is trusted hop by hop, from a certified peer.
 *
 * Design notes
 * - Neither side stops the node's loop for long, whatever the size (docs/SNAPSHOT.md, "Streaming").
 *   The sender exports on a worker thread with its own connection: one read transaction pins a
 *   consistent state while the worker encodes chunks into a queue of SNAP_QUEUE; the node's
 *   thread sends them as the receiver makes room. So a 1M-row export neither blocks liveness
 *   nor sits in memory: the worker waits (read transaction open) while the queue is full.
 * - The receiver merges each chunk in a short transaction of its own, queued chunks for up to
 *   SNAP_SLICE_MS per round of the loop (a chunk of SNAP_CHUNK_BYTES merges in a few ms, and the
 *   loop does not sleep while chunks wait), and acknowledges what it merged with a
 *   SNAPSHOT_END of the transfer's id going back (count = chunks merged, hash zero). A sender
 *   that paces announces its window in SNAPSHOT_BEGIN's field 2 (nodes before this sent 0 there
 *   and ignore it), and keeps at most that many chunks unacknowledged; a receiver that announces
 *   nothing back within SNAP_ACK_WAIT_MS is an older node, which gets the chunks unpaced.
 * - Rows merged before the transfer ends stay merged if it breaks off (each is a join with a
 *   state of the shop); the vector, which says "I hold everything up to here", is taken only
 *   after SNAPSHOT_END's count and hash matched. A broken transfer restarts with the next
 *   session, whose rows then mostly merge as duplicates.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "store/snapshot.h"
#include "node_int.h"

#define SNAP_CHUNK_BYTES (64u << 10) /* ~1 000 rows: merges in a few ms */
#define SNAP_WINDOW      16u         /* chunks sent ahead of the receiver's acknowledgement */
#define SNAP_SLICE_MS    8           /* the receiver merges queued chunks this long per round */
#define SNAP_QUEUE       4u          /* chunks the export worker encodes ahead of sending */
#define SNAP_ACK_WAIT_MS 3000        /* no acknowledgement after BEGIN this long: an older node */
#define SNAP_INTERVAL_MS 30000
#define SNAP_MAX_BYTES   (2ull << 30) /* queued from an unpaced (older) sender: refused beyond */
#define SNAP_LOG_MS      5000         /* progress is logged this often */

/* ---------------------------------------------------------------- the export worker */

typedef struct snapjob {
    pthread_t thread;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    char *db_path;
    char *key_path; /* NULL: the default key file */
    /* under mu */
    int cancel, done, rc, vv_ready;
    char err[256];
    tsync__vv vv; /* the state's vector, copied at the first chunk */
    struct snapq q[SNAP_QUEUE];
    size_t qhead, qn;
    /* the worker's own */
    tsync__vv vv_w;
} snapjob;

static int job_emit(void *ctx, const uint8_t *chunk, size_t len)
{
    snapjob *j = ctx;
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, chunk, len);
    int rc = 0;
    pthread_mutex_lock(&j->mu);
    if (!j->vv_ready) {
        for (size_t i = 0; rc == 0 && i < j->vv_w.n; i++)
            rc = tsync__vv_set(&j->vv, j->vv_w.e[i].site, j->vv_w.e[i].seq, j->vv_w.e[i].hash)
                     ? TSYNC_ENOMEM
                     : 0;
        j->vv_ready = 1;
    }
    /* The read transaction stays open while we wait: the state stays the one of the vector. */
    while (rc == 0 && !j->cancel && j->qn == SNAP_QUEUE) pthread_cond_wait(&j->cv, &j->mu);
    if (rc == 0 && j->cancel) rc = TSYNC_EBUSY;
    if (rc == 0) {
        j->q[(j->qhead + j->qn++) % SNAP_QUEUE] = (struct snapq){copy, len};
        copy = NULL;
    }
    pthread_mutex_unlock(&j->mu);
    free(copy);
    return rc;
}

static void *job_main(void *arg)
{
    snapjob *j = arg;
    tsync_store *s;
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    so.key_path = j->key_path;
    int rc = tsync_store_open(&s, j->db_path, &so);
    if (rc == 0) {
        rc = tsync__snap_export(s, SNAP_CHUNK_BYTES, job_emit, j, &j->vv_w);
        tsync__vv_free(&j->vv_w);
        tsync_store_free(s);
    }
    pthread_mutex_lock(&j->mu);
    if (rc) snprintf(j->err, sizeof j->err, "%s", tsync__node_errtext());
    j->rc = rc;
    j->done = 1;
    pthread_mutex_unlock(&j->mu);
    return NULL;
}

/* Stops the worker (it is waiting in job_emit, or ends its export at the next chunk) and frees
 * what it queued. */
static void job_free(snapjob *j)
{
    if (!j) return;
    pthread_mutex_lock(&j->mu);
    j->cancel = 1;
    pthread_cond_broadcast(&j->cv);
    pthread_mutex_unlock(&j->mu);
    pthread_join(j->thread, NULL);
    for (size_t i = 0; i < j->qn; i++) free(j->q[(j->qhead + i) % SNAP_QUEUE].p);
    tsync__vv_free(&j->vv);
    pthread_mutex_destroy(&j->mu);
    pthread_cond_destroy(&j->cv);
    free(j->db_path);
    free(j->key_path);
    free(j);
}

static int job_start(tsync_node *n, snapjob **out)
{
    snapjob *j = calloc(1, sizeof *j);
    if (!j) return TSYNC_ENOMEM;
    if (!(j->db_path = strdup(n->db_path)) ||
        (n->key_path && !(j->key_path = strdup(n->key_path)))) {
        free(j->db_path);
        free(j->key_path);
        free(j);
        return TSYNC_ENOMEM;
    }
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->cv, NULL);
    if (pthread_create(&j->thread, NULL, job_main, j) != 0) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->cv);
        free(j->db_path);
        free(j->key_path);
        free(j);
        return TSYNC_ERROR;
    }
    *out = j;
    return 0;
}

/* ---------------------------------------------------------------- both sides */

void tsync__node_snap_clear(snap *z)
{
    job_free(z->job);
    for (size_t i = 0; i < z->qn; i++) free(z->q[(z->qhead + i) % z->qcap].p);
    free(z->q);
    tsync__snap_in_free(z->imp);
    tsync__vv_free(&z->vv);
    memset(z, 0, sizeof *z);
}

/* ---------------------------------------------------------------- sending */

static void send_fail(tsync_node *n, npeer *p, int rc, const char *why)
{
    char lb[LBL];
    tsync__node_error(n, rc, "cannot send a snapshot to %s: %s", tsync__node_peer_label(p, lb),
                      why);
    tsync__node_snap_clear(&p->out);
}

/* Sends what it can of an outgoing snapshot: BEGIN once the worker has the state's vector, the
 * chunks the worker made while the receiver's window allows, END once the export is done. */
void tsync__node_snap_pump(tsync_node *n, npeer *p)
{
    snap *z = &p->out;
    if (!z->active || !z->job) return;
    snapjob *j = z->job;
    char lb[LBL];
    int rc = 0, failed = 0;
    char err[256] = "";
    pthread_mutex_lock(&j->mu);
    if (!z->begun && j->vv_ready && !z->vv.n)
        for (size_t i = 0; rc == 0 && i < j->vv.n; i++)
            rc = tsync__vv_set(&z->vv, j->vv.e[i].site, j->vv.e[i].seq, j->vv.e[i].hash);
    int ready = j->vv_ready, done = j->done;
    if (done && j->rc) {
        failed = j->rc;
        snprintf(err, sizeof err, "%s", j->err);
    }
    pthread_mutex_unlock(&j->mu);
    if (rc) return send_fail(n, p, TSYNC_ENOMEM, "out of memory");
    if (failed) return send_fail(n, p, failed, err);
    if (!ready) return;
    if (!z->begun) {
        tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_BEGIN};
        memcpy(m.snapshot_begin.id, z->id, sizeof z->id);
        m.snapshot_begin.ntables = SNAP_WINDOW; /* field 2: our window (docs/WIRE.md) */
        m.snapshot_begin.vv.e = z->vv.e;
        m.snapshot_begin.vv.n = z->vv.n;
        rc = tsync__node_send_msg(n, p, &m);
        if (rc == TSYNC_EBUSY) return;
        if (rc) return send_fail(n, p, rc, "SNAPSHOT_BEGIN not sent");
        z->begun = 1;
        z->begin_mono = tsync__mono_ms();
        z->last_log_mono = z->begin_mono;
        tsync__node_log(n, TSYNC_LOG_INFO, "%s is behind the pruned horizon: sending a snapshot",
                        tsync__node_peer_label(p, lb));
    }
    int paced = z->acks || tsync__mono_ms() - z->begin_mono < SNAP_ACK_WAIT_MS;
    if (!paced && !z->unpaced) {
        z->unpaced = 1;
        tsync__node_log(n, TSYNC_LOG_INFO,
                        "%s acknowledges no snapshot chunks (an older build): sending unpaced",
                        tsync__node_peer_label(p, lb));
    }
    for (;;) {
        if (paced && z->n >= z->acked + SNAP_WINDOW) return;
        pthread_mutex_lock(&j->mu);
        struct snapq c = j->qn ? j->q[j->qhead] : (struct snapq){NULL, 0};
        done = j->done;
        pthread_mutex_unlock(&j->mu);
        if (!c.p) break;
        tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_CHUNK};
        memcpy(m.snapshot_chunk.id, z->id, sizeof z->id);
        m.snapshot_chunk.seq = z->n;
        m.snapshot_chunk.rows = c.p;
        m.snapshot_chunk.len = c.len;
        rc = tsync__node_send_msg(n, p, &m);
        if (rc == TSYNC_EBUSY) return;
        if (rc) return send_fail(n, p, rc, "SNAPSHOT_CHUNK not sent");
        crypto_generichash_update(&z->h, c.p, c.len);
        z->n++;
        z->bytes += c.len;
        pthread_mutex_lock(&j->mu);
        j->qhead = (j->qhead + 1) % SNAP_QUEUE;
        j->qn--;
        pthread_cond_signal(&j->cv);
        pthread_mutex_unlock(&j->mu);
        free(c.p);
    }
    if (!done) return;
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_END};
    memcpy(m.snapshot_end.id, z->id, sizeof z->id);
    m.snapshot_end.nchunks = z->n;
    crypto_generichash_state h = z->h; /* final() consumes it: a busy send tries again */
    crypto_generichash_final(&h, m.snapshot_end.hash, TSYNC__HASH_BYTES);
    rc = tsync__node_send_msg(n, p, &m);
    if (rc == TSYNC_EBUSY) return;
    if (rc) return send_fail(n, p, rc, "SNAPSHOT_END not sent");
    /* The peer now holds what the snapshot covers: batches follow from there. */
    for (size_t i = 0; i < z->vv.n; i++)
        if (tsync__vv_seq(&p->sent, z->vv.e[i].site) < z->vv.e[i].seq)
            tsync__vv_set(&p->sent, z->vv.e[i].site, z->vv.e[i].seq, z->vv.e[i].hash);
    tsync__node_log(n, TSYNC_LOG_INFO, "sent a snapshot to %s (%zu chunks, %zu bytes, %llu ms)",
                    tsync__node_peer_label(p, lb), z->n, z->bytes,
                    (unsigned long long)(tsync__mono_ms() - z->begin_mono));
    n->snaps_sent++;
    memcpy(p->out_done_id, z->id, sizeof z->id);
    tsync__node_snap_clear(z);
}

/* The peer lacks batches we hold only as stubs: send it our state instead (enrolled only: a
 * snapshot is trusted hop by hop, so only a certified peer may send or receive one). */
void tsync__node_snap_start(tsync_node *n, npeer *p)
{
    char lb[LBL];
    if (p->out.active) return;
    /* At most one snapshot per peer per SNAP_INTERVAL_MS: one the peer refused (it must migrate
     * first, say) is not rebuilt on every acknowledgement. */
    uint64_t now = tsync__mono_ms();
    if (p->last_snap_mono && now - p->last_snap_mono < SNAP_INTERVAL_MS) return;
    /* Two sessions with the same till (one dialled each way) need one snapshot, not two. */
    for (size_t i = 0; p->key_known && i < n->npeers; i++) {
        npeer *o = n->peers[i];
        if (o != p && o->used && o->verified && o->key_known &&
            !memcmp(o->pk, p->pk, TSYNC__PK_BYTES) &&
            (o->out.active || (o->last_snap_mono && now - o->last_snap_mono < SNAP_INTERVAL_MS)))
            return;
    }
    p->last_snap_mono = now;
    if (!n->enrolled || !p->key_known) {
        tsync__node_log(
            n, TSYNC_LOG_WARN,
            "%s lacks batches this till has pruned, and snapshots need an enrolled shop",
            tsync__node_peer_label(p, lb));
        return;
    }
    snap *z = &p->out;
    memset(z, 0, sizeof *z);
    crypto_generichash_init(&z->h, NULL, 0, TSYNC__HASH_BYTES);
    randombytes_buf(z->id, sizeof z->id);
    int rc = job_start(n, &z->job);
    if (rc) {
        tsync__node_error(n, rc, "cannot make a snapshot for %s: no export thread",
                          tsync__node_peer_label(p, lb));
        tsync__node_snap_clear(z);
        return;
    }
    z->active = 1;
}

/* SNAPSHOT_END of our outgoing transfer, from its receiver: it merged m's count of chunks. */
static void on_ack(tsync_node *n, npeer *p, const tsync__msg *m)
{
    snap *z = &p->out;
    if (m->snapshot_end.nchunks > z->acked && m->snapshot_end.nchunks <= z->n)
        z->acked = m->snapshot_end.nchunks;
    z->acks = 1;
    tsync__node_snap_pump(n, p);
}

/* ---------------------------------------------------------------- receiving */

/* Incoming snapshot messages. Only an enrolled till takes a snapshot, and only from a peer whose
 * certificate it checked: unlike batches, a snapshot's rows carry no author signature. */
static void snap_refuse(tsync_node *n, npeer *p, const char *why)
{
    char lb[LBL];
    n->refused[R_SNAPSHOT]++;
    n->status_dirty = 1;
    tsync__node_log(n, TSYNC_LOG_WARN, "snapshot from %s refused: %s",
                    tsync__node_peer_label(p, lb), why);
    tsync__node_send_note(n, p, TSYNC__WIRE_ERR_BUSY, why);
    tsync__node_snap_clear(&p->in);
}

static int queue_push(snap *z, const uint8_t *p, size_t len)
{
    if (z->qn == z->qcap) {
        size_t cap = z->qcap ? z->qcap * 2 : 16;
        struct snapq *q = malloc(cap * sizeof *q);
        if (!q) return TSYNC_ENOMEM;
        for (size_t i = 0; i < z->qn; i++) q[i] = z->q[(z->qhead + i) % z->qcap];
        free(z->q);
        z->q = q;
        z->qhead = 0;
        z->qcap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, p, len);
    z->q[(z->qhead + z->qn++) % z->qcap] = (struct snapq){copy, len};
    z->qbytes += len;
    return 0;
}

/* Tells a pacing sender how many chunks we merged (again later when its queue was full). */
static void send_ack(tsync_node *n, npeer *p)
{
    snap *z = &p->in;
    size_t merged = tsync__snap_in_merged(z->imp);
    if (!z->window || z->acked_sent == merged + 1) return;
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_END};
    memcpy(m.snapshot_end.id, z->id, sizeof z->id);
    m.snapshot_end.nchunks = merged;
    if (tsync__node_send_msg(n, p, &m) == 0) z->acked_sent = merged + 1;
}

void tsync__node_on_snapshot(tsync_node *n, npeer *p, const tsync__msg *m)
{
    snap *z = &p->in;
    if (m->type == TSYNC__WIRE_SNAPSHOT_END && p->out.active && p->out.begun &&
        memcmp(m->snapshot_end.id, p->out.id, sizeof p->out.id) == 0) {
        on_ack(n, p, m);
        return;
    }
    /* Acknowledgements of chunks the receiver merged after our END left. */
    if (m->type == TSYNC__WIRE_SNAPSHOT_END &&
        memcmp(m->snapshot_end.id, p->out_done_id, sizeof p->out_done_id) == 0)
        return;
    if (!n->enrolled || !p->key_known) {
        snap_refuse(n, p, "snapshots are taken only from certified peers of an enrolled shop");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_BEGIN) {
        tsync__node_snap_clear(z);
        z->active = 1;
        memcpy(z->id, m->snapshot_begin.id, sizeof z->id);
        z->window = m->snapshot_begin.ntables;
        z->begin_mono = z->last_log_mono = tsync__mono_ms();
        crypto_generichash_init(&z->h, NULL, 0, TSYNC__HASH_BYTES);
        for (size_t i = 0; i < m->snapshot_begin.vv.n; i++)
            if (tsync__vv_set(&z->vv, m->snapshot_begin.vv.e[i].site, m->snapshot_begin.vv.e[i].seq,
                              m->snapshot_begin.vv.e[i].hash)) {
                snap_refuse(n, p, "out of memory");
                return;
            }
        if (tsync__snap_in_open(n->s, &z->vv, &z->imp)) {
            snap_refuse(n, p, tsync__node_errtext());
            return;
        }
        send_ack(n, p); /* 0 merged: we pace */
        return;
    }
    if (!z->active) {
        snap_refuse(n, p, "chunk without SNAPSHOT_BEGIN");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_CHUNK) {
        if (memcmp(m->snapshot_chunk.id, z->id, sizeof z->id) != 0 ||
            m->snapshot_chunk.seq != z->n || z->end) {
            snap_refuse(n, p, "chunk of another transfer or out of order");
            return;
        }
        /* A pacing sender keeps its window, so the queue stays a few chunks; one that does not
         * (an older node, or one that heard no acknowledgement in time) is bounded by bytes, as
         * before snapshots streamed. */
        if (z->qbytes + m->snapshot_chunk.len > SNAP_MAX_BYTES) {
            snap_refuse(n, p, "larger than this node takes");
            return;
        }
        if (queue_push(z, m->snapshot_chunk.rows, m->snapshot_chunk.len)) {
            snap_refuse(n, p, "out of memory");
            return;
        }
        crypto_generichash_update(&z->h, m->snapshot_chunk.rows, m->snapshot_chunk.len);
        z->n++;
        z->bytes += m->snapshot_chunk.len;
        return;
    }
    uint8_t h[TSYNC__HASH_BYTES];
    crypto_generichash_final(&z->h, h, sizeof h);
    if (memcmp(m->snapshot_end.id, z->id, sizeof z->id) != 0 || m->snapshot_end.nchunks != z->n ||
        memcmp(m->snapshot_end.hash, h, sizeof h) != 0 || z->end) {
        snap_refuse(n, p, "its chunks do not match SNAPSHOT_END (count or hash)");
        return;
    }
    z->end = 1;
}

/* Merges the next queued chunk of p's incoming snapshot; takes the snapshot's vector once every
 * chunk is merged and END matched. */
static void snap_in_step(tsync_node *n, npeer *p)
{
    snap *z = &p->in;
    char lb[LBL];
    uint64_t t0 = tsync__mono_ms();
    while (z->qn && tsync__mono_ms() - t0 < SNAP_SLICE_MS) {
        struct snapq c = z->q[z->qhead];
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        int rc = tsync__snap_in_chunk(z->imp, c.p, c.len, &r);
        tsync_merge_report_clear(&r);
        if (rc == TSYNC_EBUSY) return; /* the app holds the write lock: next round */
        if (rc) {
            snap_refuse(n, p, tsync__node_errtext());
            if (rc == TSYNC_EFULL) tsync__node_disk_full_hit(n, "take a snapshot");
            if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
            return;
        }
        free(c.p);
        z->qhead = (z->qhead + 1) % z->qcap;
        z->qn--;
        z->qbytes -= c.len;
    }
    send_ack(n, p);
    uint64_t now = tsync__mono_ms();
    if (now - z->last_log_mono >= SNAP_LOG_MS) {
        z->last_log_mono = now;
        tsync__node_log(n, TSYNC_LOG_INFO, "taking a snapshot from %s: %zu chunks merged",
                        tsync__node_peer_label(p, lb), tsync__snap_in_merged(z->imp));
    }
    if (!z->end || z->qn) return;
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync__snap_in_finish(z->imp, &r);
    tsync_merge_report_clear(&r);
    if (rc == TSYNC_EBUSY) return;
    if (rc) {
        snap_refuse(n, p, tsync__node_errtext());
        if (rc == TSYNC_EFULL) tsync__node_disk_full_hit(n, "take a snapshot");
        if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
        return;
    }
    tsync__node_log(n, TSYNC_LOG_INFO, "took a snapshot from %s (%zu chunks, %zu bytes, %llu ms)",
                    tsync__node_peer_label(p, lb), z->n, z->bytes,
                    (unsigned long long)(now - z->begin_mono));
    n->snaps_received++;
    tsync__node_snap_clear(z);
    tsync__node_refresh_ours(n);
    tsync__node_send_vector(n, p, 0);
    if (n->o.on_change) {
        /* A snapshot replaces the content: every table may have changed. */
        char **tables = NULL;
        size_t ntables = 0;
        tsync__sync_merged_tables_take(n->s, &tables, &ntables);
        tsync__sync_merged_tables_free(tables, ntables);
        tsync__sync_merged_tables_all(n->s);
        tsync__sync_merged_tables_take(n->s, &tables, &ntables);
        tsync_node_change c = {0, 0, (const char *const *)tables, ntables};
        n->o.on_change(n->o.cb_ctx, &c);
        tsync__sync_merged_tables_free(tables, ntables);
    }
    tsync__node_push_all(n);
}

/* Whether an incoming snapshot has chunks waiting: the loop should not sleep. */
int tsync__node_snap_busy(const tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++)
        if (n->peers[i]->used && n->peers[i]->in.active && n->peers[i]->in.qn) return 1;
    return 0;
}

/* Once per round: outgoing snapshots send what their workers made, incoming ones merge chunks
 * for up to SNAP_SLICE_MS. */
void tsync__node_snap_tick(tsync_node *n)
{
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used) continue;
        if (p->out.active && p->verified && !p->close_at_mono) tsync__node_snap_pump(n, p);
        if (p->in.active && !tsync__node_disk_full_waiting(n)) snap_in_step(n, p);
    }
}
