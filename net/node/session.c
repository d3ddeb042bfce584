/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/session.c — one session with a peer: the HELLO with its certificate check, the
 * messages it sends and what the node does with each (ACK, CERTS, FORK_PROOF, PING/PONG, ERROR,
 * SCHEMA), the table definitions exchanged after HELLO, and the transport's events (a session up
 * or down, a failed handshake).
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/schema.h"
#include "tillsync/migrate.h"
#include "node_int.h"

/* A session that sends more malformed messages is closed. */
#define MAX_BAD_MESSAGES 16
/* How long the first push waits for a peer's FEATURES after its HELLO. */
#define FEATURES_WAIT_MS 200

/* ---------------------------------------------------------------- sending */

int tsync__node_send_msg(tsync_node *n, npeer *p, const tsync__msg *m)
{
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_encode(m, &buf, &len, err);
    if (rc) {
        tsync__node_error(n, rc, "cannot encode %s: %s", tsync__wire_type_name(m->type), err);
        return rc;
    }
    rc = tsync__tp_send(n->tp, p->id, buf, len);
    free(buf);
    if (rc == 0) {
        p->tx_msgs++;
        p->tx_mono = tsync__mono_ms();
    }
    return rc;
}

/* FEATURES right after our HELLO, so that it reaches the peer right after it too: a peer that
 * knows the type learns before its first push that it may send us CBATCHES; one that predates it
 * counts an unknown message and syncs on (docs/WIRE.md, "Extension messages"). */
static void send_features(tsync_node *n, npeer *p)
{
    uint8_t *buf;
    size_t len;
    if (tsync__wire_features_encode(TSYNC__FEAT_ALL, &buf, &len) != 0) return;
    if (tsync__tp_send(n->tp, p->id, buf, len) == 0) {
        p->tx_msgs++;
        p->tx_mono = tsync__mono_ms();
    }
    free(buf);
}

/* ERROR without ending the session (the peer learns why something was refused). The text is cut
 * to the wire's limit on a character boundary, UTF-8 kept (names, "…"), control characters and
 * broken UTF-8 replaced: the wire format accepts UTF-8 without control characters. */
void tsync__node_send_note(tsync_node *n, npeer *p, uint32_t code, const char *text)
{
    char buf[TSYNC__WIRE_TEXT_MAX + 1];
    const uint8_t *t = (const uint8_t *)text;
    size_t tlen = strlen(text), len = 0;
    for (size_t i = 0; i < tlen && len < TSYNC__WIRE_TEXT_MAX;) {
        size_t k = tsync__utf8_char(t + i, tlen - i);
        if (k == 0) {
            buf[len++] = t[i] < 0x20 || t[i] == 0x7f ? ' ' : '?';
            i++;
        } else if (len + k <= TSYNC__WIRE_TEXT_MAX) {
            memcpy(buf + len, t + i, k);
            len += k;
            i += k;
        } else {
            break;
        }
    }
    tsync__msg m = {.type = TSYNC__WIRE_ERROR};
    m.error.code = code;
    m.error.text = buf;
    m.error.len = len;
    tsync__node_send_msg(n, p, &m);
}

static void send_error(tsync_node *n, npeer *p, uint32_t code, const char *text)
{
    tsync__node_send_note(n, p, code, text);
    /* Give the ERROR a moment to leave before the session is cut. */
    p->close_at_mono = tsync__mono_ms() + 200;
    p->verified = 0;
}

int tsync__node_refresh_ours(tsync_node *n)
{
    tsync__vv_free(&n->ours);
    n->ours_valid = 0;
    int rc = tsync__sync_vv(n->s, &n->ours);
    if (rc) {
        tsync__node_error(n, rc, "cannot read the version vector: %s", tsync__node_errtext());
        return rc;
    }
    n->ours_valid = 1;
    return 0;
}

int tsync__node_send_vector(tsync_node *n, npeer *p, int hello)
{
    tsync__msg m;
    memset(&m, 0, sizeof m);
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    if (hello) {
        m.type = TSYNC__WIRE_HELLO;
        m.hello.version = TSYNC_WIRE_VERSION;
        m.hello.schema = tsync__sync_schema(n->s);
        m.hello.clock_ms = tsync__wall_ms();
        if (n->enrolled) {
            if (tsync__trust_own_cert(n->s, &cert, &cert_len) != 0) {
                tsync__node_error(n, TSYNC_ENOTFOUND, "no certificate of our own to present: %s",
                                  tsync__node_errtext());
                return TSYNC_ENOTFOUND;
            }
            m.hello.has_shop = true;
            memcpy(m.hello.shop, n->shop, sizeof m.hello.shop);
            m.hello.cert = cert;
            m.hello.cert_len = cert_len;
        }
        m.hello.vv.e = n->ours.e;
        m.hello.vv.n = n->ours.n;
    } else {
        m.type = TSYNC__WIRE_ACK;
        m.ack.vv.e = n->ours.e;
        m.ack.vv.n = n->ours.n;
    }
    int rc = tsync__node_send_msg(n, p, &m);
    free(cert);
    return rc;
}

int tsync__node_send_certs(tsync_node *n, npeer *p)
{
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    int rc = tsync__trust_export(n->s, &blobs, &lens, &nb);
    if (rc) return rc;
    for (size_t off = 0; rc == 0 && off < nb;) {
        /* Several messages if the shop ever has more records than one CERTS holds. */
        size_t k = nb - off;
        if (k > 200) k = 200;
        tsync__msg m = {.type = TSYNC__WIRE_CERTS};
        m.certs.n = (uint32_t)k;
        m.certs.blob = (const uint8_t *const *)(blobs + off);
        m.certs.len = lens + off;
        rc = tsync__node_send_msg(n, p, &m);
        off += k;
    }
    tsync__trust_export_free(blobs, lens, nb);
    return rc;
}

/* ---------------------------------------------------------------- receiving */

void tsync__node_bad_message(tsync_node *n, npeer *p, int reason, const char *what)
{
    char lb[LBL];
    n->refused[reason]++;
    n->status_dirty = 1;
    tsync__node_log(n, TSYNC_LOG_WARN, "refused from %s: %s", tsync__node_peer_label(p, lb), what);
    if (++p->bad >= MAX_BAD_MESSAGES && !p->close_at_mono) {
        tsync__node_log(n, TSYNC_LOG_WARN, "closing the session with %s: %d bad messages",
                        tsync__node_peer_label(p, lb), p->bad);
        send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "too many malformed messages");
    }
}

/* Revoked keys are refused by the transport from now on (ZAP), and their sessions cut. */
void tsync__node_apply_revocations(tsync_node *n)
{
    if (!n->enrolled) return;
    uint64_t now = tsync__wall_ms();
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (!p->used || !p->verified || !p->key_known) continue;
        char err[TSYNC__ERRLEN];
        if (tsync__trust_session(n->s, p->pk, now, err) == 0) continue;
        char lb[LBL];
        int log = tsync__node_refusal_note(n, p, p->pk, 0, err);
        tsync__node_log(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG,
                        "closing the session with %s: %s", tsync__node_peer_label(p, lb), err);
        n->refused[R_CERT]++;
        uint8_t *keys = NULL;
        size_t nk = 0, k;
        tsync__sync_device_keys(n->s, &keys, &nk);
        for (k = 0; k < nk; k++)
            if (memcmp(keys + k * TSYNC__PK_BYTES, p->pk, TSYNC__PK_BYTES) == 0) break;
        free(keys);
        uint8_t pk[TSYNC__PK_BYTES];
        memcpy(pk, p->pk, sizeof pk);
        if (k == nk)
            tsync__tp_revoke(n->tp, pk); /* revoked: never again */
        else
            send_error(n, p, TSYNC__WIRE_ERR_CERT, err); /* expired: a renewal may come */
    }
}

/* Signed migrations arrive with the trust records: run those not run here yet. A refusal is
 * logged (once per arrival) and kept for status; the next signed migration runs them again. */
static void run_signed_migrations(tsync_node *n)
{
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    int rc = tsync__migrate_signed_pending(n->s, &r);
    if (rc)
        tsync__node_log(n, TSYNC_LOG_WARN, "signed migrations cannot run here: %s",
                        tsync__node_errtext());
    for (size_t i = 0; i < r.napplied; i++)
        tsync__node_log(n, TSYNC_LOG_INFO, "applied signed migration %s (schema version %lld)",
                        r.applied[i].name, (long long)r.to_version);
    if (rc || r.napplied) n->status_dirty = 1;
    tsync_migrate_report_clear(&r);
}

static void import_certs(tsync_node *n, npeer *p, const tsync__wire_certs *c)
{
    int changed = 0;
    for (uint32_t i = 0; i < c->n; i++) {
        char err[TSYNC__ERRLEN];
        uint8_t id[TSYNC__HASH_BYTES];
        (void)id;
        int rc = tsync__trust_import(n->s, c->blob[i], c->len[i], err);
        if (rc == 0) {
            changed = 1;
        } else {
            char lb[LBL];
            n->refused[R_TRUST]++;
            tsync__node_log(n, TSYNC_LOG_WARN, "trust record from %s not taken: %s",
                            tsync__node_peer_label(p, lb), err);
        }
    }
    if (changed) {
        tsync__node_trust_check(n);
        run_signed_migrations(n);
    }
}

/* ---------------------------------------------------------------- table definitions
 *
 * Each side sends its table definitions (SCHEMA) right after admitting the other's HELLO, and
 * again when they change; the store keeps the latest of each till and says what differs. A
 * difference is logged when it is first seen (or changes), and once at start: never every tick.
 */
static int schema_log_one(void *ctx, const tsync_schema_mismatch *m)
{
    tsync_node *n = ctx;
    tsync__node_log(
        n, TSYNC_LOG_WARN,
        "definition of %s differs on till %s%s%.16s: %s (their changes that do not fit stay parked "
        "until the definitions agree: docs/MIGRATIONS.md)",
        m->table, m->till, m->till[0] ? " " : "", m->site_hex, m->what);
    return 0;
}

static void schema_log(tsync_node *n, const uint8_t *site)
{
    if (tsync__schema_mismatches(n->s, site, schema_log_one, n) != 0)
        tsync__node_log(n, TSYNC_LOG_WARN, "cannot compare table definitions: %s",
                        tsync__node_errtext());
    n->status_dirty = 1;
}

static void send_schema(tsync_node *n, npeer *p)
{
    tsync__msg m = {.type = TSYNC__WIRE_SCHEMA};
    uint8_t *defs = NULL;
    size_t len = 0;
    if (tsync__schema_message(n->s, m.schema.site, m.schema.inc, &defs, &len) != 0) return;
    m.schema.defs = defs;
    m.schema.len = len;
    tsync__node_send_msg(n, p, &m);
    free(defs);
}

static void on_schema(tsync_node *n, npeer *p, const tsync__wire_schema *sm)
{
    char lb[LBL];
    if (p->key_known) {
        uint8_t id[TSYNC__SITE_BYTES];
        tsync__site_id(p->pk, sm->inc, id);
        if (memcmp(id, sm->site, sizeof id) != 0) {
            tsync__node_bad_message(n, p, R_MALFORMED, "SCHEMA: the site is not the session key's");
            return;
        }
    }
    int changed = 0;
    int rc = tsync__schema_record(n->s, sm->site, p->key_known ? p->pk : NULL, sm->defs, sm->len,
                                  &changed);
    if (rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION) {
        tsync__node_bad_message(n, p, R_MALFORMED, tsync__node_errtext());
        return;
    }
    if (rc) {
        tsync__node_log(n, TSYNC_LOG_WARN, "cannot record the table definitions of %s: %s",
                        tsync__node_peer_label(p, lb), tsync__node_errtext());
        return;
    }
    if (changed) schema_log(n, sm->site);
}

/* At start, and when our own definitions changed (a migration, `replicate`): peers are told,
 * and what differs now is logged. */
void tsync__node_schema_tick(tsync_node *n)
{
    uint8_t *defs = NULL, d[TSYNC__HASH_BYTES];
    size_t len = 0;
    if (tsync__schema_encode(n->s, &defs, &len) != 0) return;
    tsync__schema_digest(defs, len, d);
    free(defs);
    if (n->schema_known && memcmp(d, n->schema_digest, sizeof d) == 0) return;
    int first = !n->schema_known;
    memcpy(n->schema_digest, d, sizeof d);
    n->schema_known = 1;
    for (size_t i = 0; !first && i < n->npeers; i++) {
        npeer *p = n->peers[i];
        if (p->used && p->up && p->verified && !p->close_at_mono) send_schema(n, p);
    }
    schema_log(n, NULL);
}

/* ---------------------------------------------------------------- the messages of a session */

/* Checks the HELLO (the session's first message) and admits the session. */
static void on_hello(tsync_node *n, npeer *p, const tsync__wire_hello *h)
{
    char lb[LBL];
    uint64_t now = tsync__wall_ms();
    if (n->enrolled != h->has_shop ||
        (h->has_shop && memcmp(h->shop, n->shop, TSYNC__SHOP_ID_BYTES) != 0)) {
        n->refused[R_SHOP]++;
        const char *why = !n->enrolled   ? "this till is not enrolled in a shop, the peer is"
                          : !h->has_shop ? "the peer is not enrolled in a shop"
                                         : "the peer belongs to another shop";
        tsync__node_log(n, TSYNC_LOG_WARN, "refused %s: %s", tsync__node_peer_label(p, lb), why);
        send_error(n, p, TSYNC__WIRE_ERR_SHOP, why);
        return;
    }
    const uint8_t *key = NULL;
    if (h->has_shop) {
        tsync__arena a = {0};
        tsync__trust_rec rec;
        char err[TSYNC__ERRLEN];
        int rc = tsync__trust_decode(h->cert, h->cert_len, &rec, &a, err);
        if (rc == 0 && rec.kind != TSYNC__T_CERT) {
            rc = TSYNC_EREFUSED;
            snprintf(err, sizeof err, "the first message does not carry a certificate");
        }
        if (rc == 0) rc = tsync__trust_import(n->s, h->cert, h->cert_len, err);
        uint8_t pk[TSYNC__PK_BYTES];
        int rec_ok = rc == 0;
        if (rc == 0) {
            memcpy(pk, rec.u.cert.device_pk, sizeof pk);
            snprintf(p->name, sizeof p->name, "%.*s", (int)rec.u.cert.device_name_len,
                     rec.u.cert.device_name);
            if (p->key_known && memcmp(pk, p->pk, sizeof pk) != 0) {
                rc = TSYNC_EREFUSED;
                snprintf(err, sizeof err, "the certificate names another key than the session's");
            }
        }
        if (rc == 0) rc = tsync__trust_session(n->s, pk, now, err);
        if (rc == 0) {
            int vr = tsync__tp_peer_verified(n->tp, p->id, pk);
            if (vr == TSYNC_ENOTFOUND) {
                /* The session ended while its HELLO waited (the transport drains a connection's
                 * monitor after its message: a lossy link's disconnect lands here). Nothing was
                 * refused: its DOWN event follows. */
                tsync__arena_free(&a);
                return;
            }
            if (vr != 0) {
                rc = TSYNC_EREFUSED;
                snprintf(err, sizeof err, "the certificate names another key than the session's");
            }
        }
        tsync__arena_free(&a);
        if (rc) {
            n->refused[R_CERT]++;
            /* A certificate refused for its dates (or a revoked key) names a real till: its
             * row shows "refused" with the reason, and the line comes once a minute. */
            int known = rec_ok && (!p->key_known || !memcmp(pk, p->pk, sizeof pk));
            int log = known ? tsync__node_refusal_note(n, p, pk, 0, err) : 1;
            tsync__node_log(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG, "refused %s: %s",
                            tsync__node_peer_label(p, lb), err);
            send_error(n, p, TSYNC__WIRE_ERR_CERT, err);
            return;
        }
        memcpy(p->pk, pk, sizeof pk);
        p->key_known = 1;
        key = pk;
    } else if (tsync__tp_peer_verified(n->tp, p->id, NULL) != 0) {
        n->refused[R_UNEXPECTED]++;
        return;
    }
    (void)key;
    tsync__vv_free(&p->acked);
    tsync__vv_free(&p->sent);
    for (size_t i = 0; i < h->vv.n; i++)
        if (tsync__vv_set(&p->acked, h->vv.e[i].site, h->vv.e[i].seq, h->vv.e[i].hash) ||
            tsync__vv_set(&p->sent, h->vv.e[i].site, h->vv.e[i].seq, h->vv.e[i].hash))
            return;
    p->vv_snaps = n->snaps_received;
    p->hello = p->verified = 1;
    p->fork_check = 1;
    /* Earlier inbound sessions of this till that ended are replaced by this one. */
    for (size_t i = 0; i < n->npeers; i++) {
        npeer *o = n->peers[i];
        if (o != p && o->used && o->inbound && !o->up && o->key_known &&
            !memcmp(o->pk, p->pk, TSYNC__PK_BYTES))
            tsync__node_peer_free(o);
    }
    p->ack_dirty = 1;
    p->schema = h->schema;
    p->clock_delta_ms = (int64_t)h->clock_ms - (int64_t)now;
    p->progress_mono = tsync__mono_ms();
    p->clock_mono = p->verified_mono = p->progress_mono;
    p->clock_base_ms = (int64_t)now - (int64_t)p->clock_mono;
    /* A till that is refused and redials logs this once a minute, not at every session. */
    int again = p->key_known && tsync__node_refusal_find(n, p->pk, p->progress_mono);
    if ((p->clock_delta_ms > 60000 || p->clock_delta_ms < -60000) &&
        (!n->clock.diff_logged_mono ||
         p->progress_mono - n->clock.diff_logged_mono >= CLOCK_LOG_MS)) {
        n->clock.diff_logged_mono = p->progress_mono;
        tsync__node_log(n, TSYNC_LOG_WARN, "%s: its clock differs from ours by %+" PRId64 " s",
                        tsync__node_peer_label(p, lb), p->clock_delta_ms / 1000);
    }
    tsync__node_log(n, again ? TSYNC_LOG_DEBUG : TSYNC_LOG_INFO,
                    "connected to %s (%s, schema %" PRIu64 ")", tsync__node_peer_label(p, lb),
                    p->inbound ? "inbound" : "outbound", p->schema);
    if (n->enrolled) {
        /* A new certificate (this peer's) goes to every peer now, before any batch of its
         * author is forwarded to them; then this peer gets the shop's whole set. */
        tsync__node_trust_check(n);
        tsync__node_send_certs(n, p);
    }
    send_schema(n, p);
    tsync__node_notify_peer(n, p, 1);
    /* Its FEATURES follows its HELLO: wait for it a moment before the first push (a peer that
     * predates it never sends one, and gets BATCHES after FEATURES_WAIT_MS). */
    if (!p->features_known) p->push_wait_mono = p->progress_mono + FEATURES_WAIT_MS;
    tsync__node_push(n, p);
}

static void on_ack(tsync_node *n, npeer *p, const tsync__wire_vv *vv)
{
    p->vv_snaps = n->snaps_received;
    tsync__vv_free(&p->acked);
    for (size_t i = 0; i < vv->n; i++) {
        if (tsync__vv_set(&p->acked, vv->e[i].site, vv->e[i].seq, vv->e[i].hash)) return;
        const tsync__vv_entry *s = tsync__vv_get(&p->sent, vv->e[i].site);
        if (!s || s->seq < vv->e[i].seq) {
            /* It got batches we hold but never sent it: from their origin or another till (not
             * its own new ones, which we do not hold yet). */
            if (s && tsync__vv_seq(&n->ours, vv->e[i].site) >= vv->e[i].seq)
                tsync__node_relay_elsewhere(n, p);
            tsync__vv_set(&p->sent, vv->e[i].site, vv->e[i].seq, vv->e[i].hash);
        }
    }
    /* Pieces the peer now holds are no longer in flight. */
    size_t k = 0;
    int popped = 0;
    for (size_t i = 0; i < p->nfl; i++) {
        if (tsync__vv_seq(&p->acked, p->fl[i].site) >= p->fl[i].seq) {
            p->fl_bytes -= p->fl[i].bytes;
            popped = 1;
        } else {
            p->fl[k++] = p->fl[i];
        }
    }
    p->nfl = k;
    p->ack_dirty = 1;
    uint64_t now = tsync__mono_ms();
    if (popped || k == 0) {
        p->progress_mono = now;
        p->idle_first = p->idle_last = 0;
    } else {
        if (!p->idle_first) p->idle_first = now;
        p->idle_last = now;
    }
    tsync__node_push(n, p);
}

static void on_message(tsync_node *n, const tsync__tp_event *ev)
{
    npeer *p = tsync__node_peer_find(n, ev->peer);
    if (!p || !p->up || p->close_at_mono) return;
    p->rx_msgs++;
    p->seen_ms = ev->at_ms;
    p->rx_mono = tsync__mono_ms();
    tsync__arena a = {0};
    tsync__msg m;
    char err[TSYNC__ERRLEN];
    int ext = ev->first ? 0 : tsync__wire_ext_type(ev->data, ev->len);
    if (ext == TSYNC__WIRE_FEATURES) {
        uint64_t bits;
        if (tsync__wire_features_decode(ev->data, ev->len, &bits, err) != 0) {
            tsync__node_bad_message(n, p, R_MALFORMED, err);
            return;
        }
        if (bits & TSYNC__FEAT_CBATCHES) {
            char lb[LBL];
            tsync__node_log(n, TSYNC_LOG_DEBUG, "%s reads CBATCHES: batches go to it compact",
                            tsync__node_peer_label(p, lb));
        }
        p->features = bits;
        p->features_known = 1;
        p->push_wait_mono = 0;
        tsync__node_push(n, p);
        return;
    }
    if (ext == TSYNC__WIRE_CBATCHES) {
        if (!p->verified)
            tsync__node_bad_message(n, p, R_UNEXPECTED, "CBATCHES before HELLO was admitted");
        else if (tsync__node_queue_batches(n, p, ev->data, ev->len) != 0)
            tsync__node_bad_message(n, p, R_MALFORMED, "CBATCHES");
        return;
    }
    int rc = tsync__wire_decode(ev->data, ev->len, &m, &a, err);
    if (rc) {
        if (ev->first && rc == TSYNC_EVERSION) {
            n->refused[R_VERSION]++;
            send_error(n, p, TSYNC__WIRE_ERR_VERSION, "protocol version not spoken here");
        } else {
            tsync__node_bad_message(n, p, R_MALFORMED, err);
            if (ev->first) send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "malformed HELLO");
        }
        tsync__arena_free(&a);
        return;
    }
    if (ev->first != (m.type == TSYNC__WIRE_HELLO)) {
        tsync__node_bad_message(n, p, R_UNEXPECTED,
                                ev->first ? "the first message is not HELLO"
                                          : "HELLO in the middle");
        if (ev->first) send_error(n, p, TSYNC__WIRE_ERR_PROTOCOL, "expected HELLO");
        tsync__arena_free(&a);
        return;
    }
    switch (m.type) {
    case TSYNC__WIRE_HELLO:
        on_hello(n, p, &m.hello);
        break;
    case TSYNC__WIRE_BATCHES:
        if (tsync__node_queue_batches(n, p, ev->data, ev->len) != 0)
            tsync__node_bad_message(n, p, R_MALFORMED, "BATCHES");
        break;
    case TSYNC__WIRE_ACK:
        on_ack(n, p, &m.ack.vv);
        break;
    case TSYNC__WIRE_CERTS:
        import_certs(n, p, &m.certs);
        break;
    case TSYNC__WIRE_FORK_PROOF: {
        /* A proof is a bundle of both signed branches: merging it records the fork and freezes
         * the origin here too (TSYNC_EFORK is the expected answer). A proof that does not verify
         * is refused like any bad batch. */
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        int mrc = tsync_store_merge(n->s, m.fork_proof.proof, m.fork_proof.len, &r);
        tsync_merge_report_clear(&r);
        if (mrc == TSYNC_EFORK || mrc == 0) {
            char lb[LBL];
            tsync__node_log(n, TSYNC_LOG_INFO, "fork proof from %s taken: %s",
                            tsync__node_peer_label(p, lb),
                            mrc ? tsync__node_errtext() : "already known");
            n->status_dirty = 1;
            for (size_t i = 0; mrc == TSYNC_EFORK && i < n->npeers; i++)
                if (n->peers[i]->used)
                    n->peers[i]->fork_check = 1; /* as in tsync__node_flush_merges */
        } else if (mrc != TSYNC_EBUSY) {         /* busy: it comes again next session */
            tsync__node_bad_message(n, p, tsync__node_refusal_reason(mrc), tsync__node_errtext());
        }
        break;
    }
    case TSYNC__WIRE_PING: {
        tsync__msg pong = {.type = TSYNC__WIRE_PONG};
        pong.pong.echo_ms = m.ping.ms;
        pong.pong.clock_ms = tsync__wall_ms();
        tsync__node_send_msg(n, p, &pong);
        break;
    }
    case TSYNC__WIRE_PONG: {
        /* Its clock, half a round trip ago (the PING carried our monotonic ms). */
        uint64_t mnow = tsync__mono_ms(), wnow = tsync__wall_ms();
        if (m.pong.echo_ms <= mnow && mnow - m.pong.echo_ms < 10000 &&
            m.pong.clock_ms < INT64_MAX / 2) {
            p->clock_delta_ms =
                (int64_t)(m.pong.clock_ms + (mnow - m.pong.echo_ms) / 2) - (int64_t)wnow;
            p->clock_mono = mnow;
            p->clock_base_ms = (int64_t)wnow - (int64_t)mnow;
        }
        break;
    }
    case TSYNC__WIRE_ERROR: {
        char lb[LBL];
        int log = 1;
        if (m.error.code == TSYNC__WIRE_ERR_CERT && p->key_known) {
            /* It refused our certificate (or its clock says it is not valid): not connected,
             * whatever our side of the handshake said; shown as refused, logged once a minute. */
            char why[160];
            snprintf(why, sizeof why, "%.*s", (int)m.error.len, m.error.text);
            log = tsync__node_refusal_note(n, p, p->pk, 1, why);
            if (p->verified) {
                p->verified = 0;
                tsync__node_notify_peer(n, p, 0);
            }
        }
        tsync__node_log(n, log ? TSYNC_LOG_WARN : TSYNC_LOG_DEBUG, "%s reports error %u: %.*s",
                        tsync__node_peer_label(p, lb), m.error.code, (int)m.error.len,
                        m.error.text);
        break;
    }
    case TSYNC__WIRE_SNAPSHOT_BEGIN:
    case TSYNC__WIRE_SNAPSHOT_CHUNK:
    case TSYNC__WIRE_SNAPSHOT_END:
        tsync__node_on_snapshot(n, p, &m);
        break;
    case TSYNC__WIRE_SCHEMA:
        on_schema(n, p, &m.schema);
        break;
    default:
        tsync__node_bad_message(n, p, R_UNEXPECTED, "message of an unknown type");
        break;
    }
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- transport events */

int tsync__node_admit(void *ctx, const uint8_t curve_pk[TSYNC__TP_KEY_BYTES], const uint8_t *ed_pk,
                      const char *address)
{
    /* Revoked keys are refused by the transport itself (tsync__tp_revoke at start and whenever a
     * revocation arrives). Every other key is judged by the certificate in its HELLO: judging a
     * key we dial here, before its certificate could arrive, would refuse two tills that have
     * not met yet, each waiting for the other's certificate. */
    (void)ctx;
    (void)curve_pk;
    (void)ed_pk;
    (void)address;
    return 1;
}

void tsync__node_on_event(tsync_node *n, const tsync__tp_event *ev)
{
    char lb[LBL];
    switch (ev->kind) {
    case TSYNC__TP_EV_MESSAGE:
        on_message(n, ev);
        break;
    case TSYNC__TP_EV_UP: {
        npeer *p = tsync__node_peer_get(n, ev->peer);
        if (!p) return;
        tsync__node_session_reset(p);
        p->up = 1;
        p->rx_mono = p->tx_mono = tsync__mono_ms();
        p->inbound = ev->inbound;
        p->up_ms = p->seen_ms = ev->at_ms;
        if (ev->key_known) {
            p->key_known = 1;
            memcpy(p->pk, ev->ed_pk, TSYNC__PK_BYTES);
        }
        if (!p->addr[0] || ev->inbound) snprintf(p->addr, sizeof p->addr, "%s", ev->address);
        tsync__node_candidate_up(n, p);
        tsync__node_log(n, TSYNC_LOG_DEBUG, "session up with %s", tsync__node_peer_label(p, lb));
        if (!n->ours_valid) tsync__node_refresh_ours(n);
        if (tsync__node_send_vector(n, p, 1) == 0) send_features(n, p);
        break;
    }
    case TSYNC__TP_EV_DOWN: {
        npeer *p = tsync__node_peer_find(n, ev->peer);
        if (!p) return;
        int was = p->verified;
        if (ev->reason == TSYNC__TP_DOWN_OVERSIZE) n->refused[R_OVERSIZE]++;
        tsync__node_session_reset(p);
        if (was) {
            tsync__node_log(n, TSYNC_LOG_INFO, "disconnected from %s",
                            tsync__node_peer_label(p, lb));
            tsync__node_notify_peer(n, p, 0);
        }
        n->status_dirty = 1;
        /* A till found over mDNS that closed and withdrew its advertisement has left: stop
         * dialling it (it is dialled again when it is advertised again). */
        if (p->mdns && !p->inbound && p->key_known && !tsync__node_advertised(n, p->pk)) {
            tsync__tp_close(n->tp, p->id);
            tsync__node_peer_free(p);
        }
        break;
    }
    case TSYNC__TP_EV_HSFAIL:
        if (ev->reason == TSYNC__TP_HS_DENIED)
            n->refused[R_DENIED]++;
        else if (ev->inbound && ev->reason == TSYNC__TP_HS_DROPPED)
            n->hs_incomplete++; /* timed out or hung up: a lossy link as much as a scanner */
        else if (ev->inbound)
            n->refused[R_HANDSHAKE]++;
        tsync__node_log(n, TSYNC_LOG_DEBUG, "handshake with %s failed (reason %d)", ev->address,
                        ev->reason);
        n->status_dirty = 1;
        break;
    }
}
