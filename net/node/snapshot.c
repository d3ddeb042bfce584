/*
 * net/node/snapshot.c — a peer behind the pruned horizon lacks batches this till keeps only as
 * stubs: it gets a snapshot of our state instead (store/snapshot.h makes and takes it), sent in
 * chunks with a hash over them. Enrolled shops only: a snapshot's rows carry no author
 * signature, so it is trusted hop by hop, from a certified peer.
 */
#include <stdlib.h>
#include <string.h>

#include "store/snapshot.h"
#include "node_int.h"

#define SNAP_CHUNK_BYTES (1u << 20)
#define SNAP_INTERVAL_MS 30000
#define SNAP_MAX_BYTES   (2ull << 30) /* a snapshot larger than this is refused */

void tsync__node_snap_clear(snap *z)
{
    for (size_t i = 0; i < z->n; i++) free(z->chunk[i]);
    free(z->chunk);
    free(z->len);
    tsync__vv_free(&z->vv);
    memset(z, 0, sizeof *z);
}

static int snap_add(snap *z, const uint8_t *p, size_t len)
{
    if (z->bytes + len > SNAP_MAX_BYTES) return TSYNC_EINVAL;
    if (z->n == z->cap) {
        size_t cap = z->cap ? z->cap * 2 : 16;
        uint8_t **c = realloc(z->chunk, cap * sizeof *c);
        if (!c) return TSYNC_ENOMEM;
        z->chunk = c;
        size_t *l = realloc(z->len, cap * sizeof *l);
        if (!l) return TSYNC_ENOMEM;
        z->len = l;
        z->cap = cap;
    }
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return TSYNC_ENOMEM;
    memcpy(copy, p, len);
    z->chunk[z->n] = copy;
    z->len[z->n++] = len;
    z->bytes += len;
    crypto_generichash_update(&z->h, p, len);
    return 0;
}

static int snap_emit(void *ctx, const uint8_t *chunk, size_t len)
{
    return snap_add(ctx, chunk, len) ? TSYNC_ENOMEM : 0;
}

/* Sends what it can of an outgoing snapshot (BEGIN went first); END once every chunk is out. */
void tsync__node_snap_pump(tsync_node *n, npeer *p)
{
    snap *z = &p->out;
    while (z->active && z->next < z->n) {
        tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_CHUNK};
        memcpy(m.snapshot_chunk.id, z->id, sizeof z->id);
        m.snapshot_chunk.seq = z->next;
        m.snapshot_chunk.rows = z->chunk[z->next];
        m.snapshot_chunk.len = z->len[z->next];
        int rc = tsync__node_send_msg(n, p, &m);
        if (rc == TSYNC_EBUSY) return;
        if (rc) {
            tsync__node_snap_clear(z);
            return;
        }
        free(z->chunk[z->next]);
        z->chunk[z->next++] = NULL;
    }
    if (!z->active) return;
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_END};
    memcpy(m.snapshot_end.id, z->id, sizeof z->id);
    m.snapshot_end.nchunks = z->n;
    crypto_generichash_final(&z->h, m.snapshot_end.hash, TSYNC__HASH_BYTES);
    if (tsync__node_send_msg(n, p, &m) != 0) {
        tsync__node_snap_clear(z);
        return;
    }
    /* The peer now holds what the snapshot covers: batches follow from there. */
    for (size_t i = 0; i < z->vv.n; i++)
        if (tsync__vv_seq(&p->sent, z->vv.e[i].site) < z->vv.e[i].seq)
            tsync__vv_set(&p->sent, z->vv.e[i].site, z->vv.e[i].seq, z->vv.e[i].hash);
    char lb[LBL];
    tsync__node_log(n, TSYNC_LOG_INFO, "sent a snapshot to %s (%zu chunks, %zu bytes)",
                    tsync__node_peer_label(p, lb), z->n, z->bytes);
    n->snaps_sent++;
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
    int rc = tsync__snap_export(n->s, SNAP_CHUNK_BYTES, snap_emit, z, &z->vv);
    if (rc) {
        tsync__node_error(n, rc, "cannot make a snapshot for %s: %s", tsync__node_peer_label(p, lb),
                          tsync__node_errtext());
        tsync__node_snap_clear(z);
        return;
    }
    tsync__msg m = {.type = TSYNC__WIRE_SNAPSHOT_BEGIN};
    memcpy(m.snapshot_begin.id, z->id, sizeof z->id);
    m.snapshot_begin.ntables = 0;
    m.snapshot_begin.vv.e = z->vv.e;
    m.snapshot_begin.vv.n = z->vv.n;
    if (tsync__node_send_msg(n, p, &m) != 0) {
        tsync__node_snap_clear(z);
        return;
    }
    z->active = 1;
    tsync__node_log(n, TSYNC_LOG_INFO, "%s is behind the pruned horizon: sending a snapshot",
                    tsync__node_peer_label(p, lb));
    tsync__node_snap_pump(n, p);
}

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

void tsync__node_on_snapshot(tsync_node *n, npeer *p, const tsync__msg *m)
{
    snap *z = &p->in;
    char lb[LBL];
    if (!n->enrolled || !p->key_known) {
        snap_refuse(n, p, "snapshots are taken only from certified peers of an enrolled shop");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_BEGIN) {
        tsync__node_snap_clear(z);
        z->active = 1;
        memcpy(z->id, m->snapshot_begin.id, sizeof z->id);
        crypto_generichash_init(&z->h, NULL, 0, TSYNC__HASH_BYTES);
        for (size_t i = 0; i < m->snapshot_begin.vv.n; i++)
            if (tsync__vv_set(&z->vv, m->snapshot_begin.vv.e[i].site, m->snapshot_begin.vv.e[i].seq,
                              m->snapshot_begin.vv.e[i].hash)) {
                snap_refuse(n, p, "out of memory");
                return;
            }
        return;
    }
    if (!z->active) {
        snap_refuse(n, p, "chunk without SNAPSHOT_BEGIN");
        return;
    }
    if (m->type == TSYNC__WIRE_SNAPSHOT_CHUNK) {
        if (memcmp(m->snapshot_chunk.id, z->id, sizeof z->id) != 0 ||
            m->snapshot_chunk.seq != z->n) {
            snap_refuse(n, p, "chunk of another transfer or out of order");
            return;
        }
        if (snap_add(z, m->snapshot_chunk.rows, m->snapshot_chunk.len) != 0)
            snap_refuse(n, p, "larger than this node takes");
        return;
    }
    uint8_t h[TSYNC__HASH_BYTES];
    crypto_generichash_final(&z->h, h, sizeof h);
    if (memcmp(m->snapshot_end.id, z->id, sizeof z->id) != 0 || m->snapshot_end.nchunks != z->n ||
        memcmp(m->snapshot_end.hash, h, sizeof h) != 0) {
        snap_refuse(n, p, "its chunks do not match SNAPSHOT_END (count or hash)");
        return;
    }
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync__snap_import(n->s, (const uint8_t *const *)z->chunk, z->len, z->n, &z->vv, &r);
    tsync_merge_report_clear(&r);
    if (rc) {
        snap_refuse(n, p, tsync__node_errtext());
        if (rc == TSYNC_EFULL) tsync__node_disk_full_hit(n, "take a snapshot");
        if (rc == TSYNC_EIO || rc == TSYNC_ENOMEM) n->failed = rc;
        return;
    }
    tsync__node_log(n, TSYNC_LOG_INFO, "took a snapshot from %s (%zu chunks, %zu bytes)",
                    tsync__node_peer_label(p, lb), z->n, z->bytes);
    n->snaps_received++;
    tsync__node_snap_clear(z);
    tsync__node_refresh_ours(n);
    tsync__node_send_vector(n, p, 0);
    if (n->o.on_change) {
        tsync_node_change c = {0, 0};
        n->o.on_change(n->o.cb_ctx, &c);
    }
    tsync__node_push_all(n);
}
