/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/node/relay.c — the till's side of the blind relay (docs/RELAY.md, "The till's side"): a
 * node whose shop has a RELAY GRANT and whose till holds a data key keeps one session with a relay
 * of the grant, beside its LAN peers. It puts what the relay lacks (its own batches and those of
 * other tills it holds) as envelopes, gets what it lacks, takes the relay's pushes, and shows the
 * relay's state, the lag both ways and the envelopes it refused in the node's status.
 *
 * Design notes
 * - Its own transport (a second tsync__tp with its own limits and heartbeats), dialled with the
 *   till's device key and pinned to the relay key the admin signed in the grant; polled without
 *   waiting on every round of the node's loop, so nothing here blocks the LAN side: a relay that
 *   is down or slow costs a poll per round and nothing else.
 * - The relay is judged by what it serves, never believed: an envelope is opened with the key of
 *   its epoch (the AEAD binds shop, origin, range and chain hashes), its payload must be the run
 *   its header says (origin, range, prev_hash, last_hash, by the chain of the bodies), must follow
 *   what this till holds (no gap), and then goes through the merge queue like any batch from a
 *   peer (signatures, chain against the log). Whatever fails is counted by reason and dropped; a
 *   gap is asked for with RGET (after an answer that made progress: a relay that drops or
 *   reorders gets asked again from the first batch lacking, never skipped past); an answer to an
 *   RGET holding an envelope below what was asked for, or of another origin, is a replay,
 *   refused; a run already held in a push (another till's put of what the LAN brought first)
 *   changes nothing and is counted as a duplicate. tests/net/test_relay_hostile.c plays each.
 * - Payload: the compact run the LAN catch-up sends (CBATCHES; a piece above 2 MiB of bodies goes
 *   as a plain BATCHES frame), in pieces of about 1 MiB of bodies (tsync__sync_runs), at most
 *   PUT_BUDGET per RPUT and PUT_WINDOW RPUTs unacknowledged: memory stays bounded whatever the
 *   log holds. What the relay holds is kept per origin as its highest batch (`have`, from RHAVE,
 *   RACK and what it serves); `sent` is that plus the puts in flight. RHAVE is asked for again
 *   every HAVE_MS, which repairs pushes lost on the way.
 * - Batches from the relay enter the merge queue under the pseudo peer id TSYNC__NODE_RELAY_QID,
 *   so a merge that refuses them is counted here (tsync__node_relay_refused), not on a LAN peer.
 * - The shop's revocations this till holds go to the relay in RTRUST at the start of every
 *   session and again whenever the trust set changes (the node's trust digest), so a device the
 *   admin revoked on any till is refused by the relay without a relay command.
 * - One RENV (GET_MAX_BYTES of envelopes, compressed) can hold far more bodies than the merge
 *   queue's MERGE_QUEUE_MAX (100,000 one-sale batches fit in one): what is past the queue's bound
 *   waits here (`pend`) and goes in over the next rounds, each merged in its own transaction as a
 *   LAN catch-up is, so the thread comes back to its sessions between merges; nothing more is
 *   read from the relay meanwhile.
 */
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "codec/envelope.h"
#include "codec/relay.h"
#include "node_int.h"

#define CONFIG_MS        2000 /* ... after a failed read, the grant and keys are read again */
#define CONNECT_WAIT_MS  5000 /* no RHAVE by then after dialling: down, the next relay */
#define BACKOFF_MIN_MS   1000 /* before dialling again after a failure, doubled per failure */
#define BACKOFF_MAX_MS   60000
#define REFUSED_WAIT_MS  30000 /* after a relay refused the session (RERR) */
#define QUOTA_WAIT_MS    60000 /* no puts this long after RERR quota (reading goes on) */
#define PUT_ERR_WAIT_MS  10000 /* ... after another refused put, or a log we cannot read */
#define PROBE_MS         10000 /* every origin known is asked for again (a lost push) */
#define TRUST_RECS_MAX   200   /* trust records carried in one envelope */
#define PUT_BUDGET       (4u << 20)
#define PUT_WINDOW       4
#define GET_MAX_BYTES    (4u << 20)
#define CBATCHES_MAX_RAW (2u << 20)
#define EVENTS_PER_ROUND 64
#define MAX_RELAYS       8

enum { ST_NONE, ST_CONNECTING, ST_UP, ST_REFUSED, ST_DOWN };
static const char *const state_name[] = {"none", "connecting", "up", "refused", "down"};

/* Envelopes refused, by reason (status: relay.envelopes_refused). */
enum {
    RR_KEY,
    RR_MALFORMED,
    RR_SHOP,
    RR_TAG,
    RR_MISMATCH,
    RR_CHAIN,
    RR_GAP,
    RR_SIGNATURE,
    RR_REPLAY,
    RR_N
};
static const char *const rr_name[RR_N] = {"no_key", "malformed", "shop",      "tag",   "mismatch",
                                          "chain",  "gap",       "signature", "replay"};

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t last;
} put_ent;

typedef struct {
    uint64_t req;
    put_ent *e;
    uint32_t n;
    uint64_t batches;
} rput;

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t from;
    int probe; /* asked even when the relay is not known to hold more (a lost push) */
} rget;

struct tsync__nrelay {
    int state;
    char reason[320];
    tsync__tp *tp;
    uint32_t peer; /* the dialled relay (0: none) */
    int served;    /* RHAVE came on this session */
    int verified;  /* the transport delivers more than the first message */
    /* The grant in force: its relays, in order */
    uint8_t grant_id[TSYNC__HASH_BYTES];
    int have_grant;
    uint64_t grant_exp; /* Unix ms the grant expires; past it the relay is not used */
    int grant_expired;
    uint32_t nrelays, idx;
    char addr[MAX_RELAYS][256];
    uint8_t pk[MAX_RELAYS][TSYNC__PK_BYTES];
    tsync__held_key *keys; /* the epochs this till can open, ascending */
    uint32_t nkeys;
    uint64_t config_mono, dial_mono, retry_mono, backoff_ms, probe_mono;
    uint64_t config_gen; /* n->trust_gen when the grant and keys were read */
    int config_read, config_failed;
    uint64_t next_req;
    tsync__vv have, sent, got; /* got: queued from the relay since the last merge */
    int have_known;
    rput puts[PUT_WINDOW];
    size_t nputs;
    uint64_t put_wait_mono;
    char put_err[320]; /* why puts wait (quota, ...); "" when they do not */
    rget *gets;
    size_t ngets, capgets;
    uint64_t get_req; /* the RGET in flight (0: none), its origin and first seq */
    uint8_t get_origin[TSYNC__SITE_BYTES];
    uint64_t get_from;
    uint64_t last_ok_ms, up_ms;
    uint64_t refused[RR_N], dup, envs_in, envs_out, batches_in, batches_out, sessions;
    uint64_t trust_in; /* trust records received in envelopes (held already or new) */
    /* RTRUST: the trust digest whose revocations this session was sent (valid: sent), the
     * request ids of the last ones sent, revocation records the relay took */
    uint8_t trust_sent[TSYNC__HASH_BYTES];
    int trust_sent_valid;
    uint64_t trust_req_first, trust_req_last, revocations_out;
    /* Envelopes of an RENV not taken yet (the merge queue was full), their bytes copied */
    tsync__renv *pend;
    uint8_t *pend_bytes;
    size_t npend, ipend;
    int pend_push, pend_answer;
};

/* ---------------------------------------------------------------- small helpers */

static void set_state(tsync_node *n, int state, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void set_state(tsync_node *n, int state, const char *fmt, ...)
{
    struct tsync__nrelay *r = n->relay;
    char why[sizeof r->reason];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    if (r->state == state && !strcmp(r->reason, why)) return;
    int level = state == ST_UP || state == ST_CONNECTING ? TSYNC_LOG_DEBUG : TSYNC_LOG_INFO;
    if (state == ST_UP) level = TSYNC_LOG_INFO;
    tsync__node_log(n, level, "relay: %s%s%s", state_name[state], why[0] ? ": " : "", why);
    r->state = state;
    snprintf(r->reason, sizeof r->reason, "%s", why);
    n->status_dirty = 1;
}

static uint64_t expected(tsync_node *n, const uint8_t origin[TSYNC__SITE_BYTES])
{
    uint64_t a = tsync__vv_seq(&n->ours, origin), b = tsync__vv_seq(&n->relay->got, origin);
    return a > b ? a : b;
}

static void raise_to(tsync__vv *v, const uint8_t site[TSYNC__SITE_BYTES], uint64_t seq)
{
    if (tsync__vv_seq(v, site) < seq) tsync__vv_set(v, site, seq, NULL);
}

static void vv_copy_raise(tsync__vv *dst, const tsync__vv *src)
{
    for (size_t i = 0; i < src->n; i++) raise_to(dst, src->e[i].site, src->e[i].seq);
}

static void vv_clear(tsync__vv *v)
{
    v->n = 0;
}

static void puts_clear(struct tsync__nrelay *r)
{
    for (size_t i = 0; i < r->nputs; i++) free(r->puts[i].e);
    r->nputs = 0;
}

static int send_msg(tsync_node *n, const tsync__rmsg *m)
{
    struct tsync__nrelay *r = n->relay;
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__relay_encode(m, &b, &len, err);
    if (rc) {
        tsync__node_error(n, rc, "relay: cannot encode a message: %s", err);
        return rc;
    }
    rc = tsync__tp_send(r->tp, r->peer, b, len);
    free(b);
    return rc;
}

static void pend_clear(struct tsync__nrelay *r)
{
    free(r->pend);
    free(r->pend_bytes);
    r->pend = NULL;
    r->pend_bytes = NULL;
    r->npend = r->ipend = 0;
}

/* Ends the session with the relay (the transport forgets it: no reconnect). */
static void session_end(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    pend_clear(r);
    if (r->peer) tsync__tp_close(r->tp, r->peer);
    r->peer = 0;
    r->served = r->verified = 0;
    r->get_req = 0;
    r->ngets = 0;
    puts_clear(r);
}

/* A failure to reach or be served by the current relay: the next one of the grant, later. */
static void failed(tsync_node *n, uint64_t wait_ms)
{
    struct tsync__nrelay *r = n->relay;
    session_end(n);
    if (r->nrelays) r->idx = (r->idx + 1) % r->nrelays;
    if (!r->backoff_ms) r->backoff_ms = BACKOFF_MIN_MS;
    uint64_t w = wait_ms > r->backoff_ms ? wait_ms : r->backoff_ms;
    r->retry_mono = tsync__mono_ms() + w;
    r->backoff_ms = r->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : r->backoff_ms * 2;
}

/* ---------------------------------------------------------------- the grant and the keys */

/* Whether the relay may be used now (a grant, a key, enrolled, not disabled); keeps the grant's
 * relays and the keys, and ends the session when the grant changed or went away. */
static int config(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    const char *why = NULL;
    uint8_t *body = NULL;
    size_t len = 0;
    r->config_failed = 0;
    if (!n->enrolled) why = "this database is not enrolled in a shop";
    if (!why) {
        int rc = tsync__grant_latest(n->s, &body, &len);
        if (rc == TSYNC_ENOTFOUND)
            why = "the shop has no relay grant (the admin signs one: tillsync shop grant)";
        else if (rc)
            why = "cannot read the relay grant", r->config_failed = 1;
    }
    if (body) {
        uint8_t id[TSYNC__HASH_BYTES];
        tsync__trust_id(body, len, id);
        if (!r->have_grant || memcmp(id, r->grant_id, sizeof id)) {
            tsync__trust_rec rec;
            tsync__arena a = {0};
            char err[TSYNC__ERRLEN];
            if (tsync__trust_decode(body, len, &rec, &a, err) == 0 && rec.kind == TSYNC__T_GRANT) {
                session_end(n);
                r->nrelays = rec.u.grant.nrelays > MAX_RELAYS ? MAX_RELAYS : rec.u.grant.nrelays;
                for (uint32_t i = 0; i < r->nrelays; i++) {
                    snprintf(r->addr[i], sizeof r->addr[i], "%.*s",
                             (int)rec.u.grant.relays[i].addr_len, rec.u.grant.relays[i].addr);
                    memcpy(r->pk[i], rec.u.grant.relays[i].pk, TSYNC__PK_BYTES);
                }
                r->idx = 0;
                r->retry_mono = 0;
                r->backoff_ms = 0;
                r->have_known = 0;
                memcpy(r->grant_id, id, sizeof id);
                r->have_grant = 1;
                r->grant_exp = rec.u.grant.expires_ms;
            } else {
                why = "the relay grant does not decode";
            }
            tsync__arena_free(&a);
        }
        free(body);
    }
    if (!why) {
        tsync__held_keys_free(r->keys, r->nkeys);
        r->keys = NULL;
        r->nkeys = 0;
        uint32_t latest = 0;
        if (tsync__data_keys_held(n->s, &r->keys, &r->nkeys, &latest))
            why = "cannot read the shop's data keys", r->config_failed = 1;
        else if (!r->nkeys)
            why = "no data key of the shop is sealed to this till (the admin issues one that "
                  "includes it)";
    }
    if (why) {
        if (r->peer) session_end(n);
        r->have_grant = 0;
        set_state(n, ST_NONE, "%s", why);
        return 0;
    }
    /* The admin let the shop use its relays until the grant's expiry: past it this till stops,
     * and says so as a refusal (a person must act: the admin signs a new grant). */
    r->grant_expired = r->grant_exp && tsync__wall_ms() > r->grant_exp;
    if (r->grant_expired) {
        if (r->peer) session_end(n);
        time_t t = (time_t)(r->grant_exp / 1000);
        struct tm tm;
        char when[32] = "?";
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        set_state(n, ST_REFUSED,
                  "grant_expired: the shop's relay grant expired on %s; the admin signs a new "
                  "one (tillsync shop grant)",
                  when);
        return 0;
    }
    return 1;
}

static const tsync__held_key *key_of(struct tsync__nrelay *r, uint32_t epoch)
{
    for (uint32_t i = 0; i < r->nkeys; i++)
        if (r->keys[i].epoch == epoch) return &r->keys[i];
    return NULL;
}

/* ---------------------------------------------------------------- dialling and RHELLO */

static void dial(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    if (!r->tp) {
        tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
        o.max_msg = TSYNC__RELAY_MSG_MAX;
        o.rcv_queue_bytes = (size_t)4 * TSYNC__RELAY_MSG_MAX;
        o.reconnect_ivl_max_ms = 5000;
        if (tsync__tp_new(&r->tp, tsync__sync_secret_key(n->s), &o)) {
            set_state(n, ST_DOWN, "cannot start a transport: %s", tsync__node_errtext());
            failed(n, BACKOFF_MAX_MS);
            return;
        }
    }
    if (tsync__tp_connect(r->tp, r->addr[r->idx], r->pk[r->idx], &r->peer)) {
        set_state(n, ST_DOWN, "cannot dial %s: %s", r->addr[r->idx], tsync__node_errtext());
        r->peer = 0;
        failed(n, 0);
        return;
    }
    r->dial_mono = tsync__mono_ms();
    if (r->state != ST_DOWN && r->state != ST_REFUSED)
        set_state(n, ST_CONNECTING, "dialling %s", r->addr[r->idx]);
}

static void hello(tsync_node *n)
{
    uint8_t *cert = NULL;
    size_t len = 0;
    if (tsync__trust_own_cert(n->s, &cert, &len)) {
        set_state(n, ST_NONE, "this till has no certificate of its own to present");
        failed(n, BACKOFF_MAX_MS);
        return;
    }
    tsync__rblob rec;
    tsync__rmsg m;
    tsync__relay_hello(&m, &rec, n->shop, cert, len);
    send_msg(n, &m);
    free(cert);
}

/* ---------------------------------------------------------------- RTRUST */

/* Sends the shop's revocations this till holds, signed by the admin key of its own certificate
 * (the one the relay admitted; the relay refuses a whole RTRUST holding any other record), in
 * RTRUSTs of at most TSYNC__RELAY_TRUST_MAX records. Runs once per session and trust digest (a
 * store that cannot be read now is tried again with the next session or trust change, not on
 * every round of the loop). */
static void send_revocations(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    memcpy(r->trust_sent, n->trust_digest, sizeof r->trust_sent);
    r->trust_sent_valid = 1;
    uint8_t **blobs = NULL, *cert = NULL;
    size_t *lens = NULL, nb = 0, clen = 0, k = 0;
    tsync__arena a = {0};
    tsync__trust_rec own, rec;
    char err[TSYNC__ERRLEN];
    if (tsync__trust_own_cert(n->s, &cert, &clen) ||
        tsync__trust_decode(cert, clen, &own, &a, err) || own.kind != TSYNC__T_CERT ||
        tsync__trust_export(n->s, &blobs, &lens, &nb)) {
        free(cert);
        tsync__arena_free(&a);
        return;
    }
    tsync__rblob *recs = calloc(nb ? nb : 1, sizeof *recs);
    for (size_t i = 0; recs && i < nb; i++)
        if (tsync__trust_decode(blobs[i], lens[i], &rec, &a, err) == 0 &&
            rec.kind == TSYNC__T_REVOCATION &&
            !memcmp(rec.u.rev.admin_pk, own.u.cert.admin_pk, TSYNC__PK_BYTES) &&
            !memcmp(rec.u.rev.shop_id, n->shop, TSYNC__SHOP_ID_BYTES))
            recs[k++] = (tsync__rblob){blobs[i], lens[i]};
    for (size_t i = 0; i < k; i += TSYNC__RELAY_TRUST_MAX) {
        size_t c = k - i < TSYNC__RELAY_TRUST_MAX ? k - i : TSYNC__RELAY_TRUST_MAX;
        tsync__rmsg m = {
            .type = TSYNC__R_TRUST, .req = ++r->next_req, .nrecs = (uint32_t)c, .recs = recs + i};
        if (i == 0) r->trust_req_first = m.req;
        r->trust_req_last = m.req;
        if (send_msg(n, &m)) {
            r->trust_sent_valid = 0; /* the queue is full: the next round tries again */
            break;
        }
    }
    if (k)
        tsync__node_log(n, TSYNC_LOG_DEBUG, "relay %s: sent the shop's %zu revocation(s)",
                        r->addr[r->idx], k);
    free(recs);
    free(cert);
    tsync__trust_export_free(blobs, lens, nb);
    tsync__arena_free(&a);
}

static int is_trust_req(const struct tsync__nrelay *r, uint64_t req)
{
    return req && req >= r->trust_req_first && req <= r->trust_req_last;
}

/* ---------------------------------------------------------------- RGET */

static void want(struct tsync__nrelay *r, const uint8_t origin[TSYNC__SITE_BYTES], uint64_t from,
                 int probe)
{
    for (size_t i = 0; i < r->ngets; i++)
        if (!memcmp(r->gets[i].origin, origin, TSYNC__SITE_BYTES)) {
            if (from < r->gets[i].from) r->gets[i].from = from;
            r->gets[i].probe |= probe;
            return;
        }
    if (r->ngets == r->capgets) {
        size_t cap = r->capgets ? r->capgets * 2 : 8;
        rget *g = realloc(r->gets, cap * sizeof *g);
        if (!g) return; /* asked for at the next RHAVE */
        r->gets = g;
        r->capgets = cap;
    }
    memcpy(r->gets[r->ngets].origin, origin, TSYNC__SITE_BYTES);
    r->gets[r->ngets].probe = probe;
    r->gets[r->ngets++].from = from;
}

static void get_next(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    while (r->served && !r->get_req && r->ngets && r->ipend == r->npend) {
        rget g = r->gets[0];
        memmove(r->gets, r->gets + 1, (r->ngets - 1) * sizeof *r->gets);
        r->ngets--;
        uint64_t e = expected(n, g.origin);
        if (g.from <= e) g.from = e + 1;
        if (!g.probe && g.from > tsync__vv_seq(&r->have, g.origin)) continue; /* none there */
        tsync__rmsg m = {.type = TSYNC__R_GET,
                         .req = ++r->next_req,
                         .from_seq = g.from,
                         .max_bytes = GET_MAX_BYTES};
        memcpy(m.origin, g.origin, TSYNC__SITE_BYTES);
        if (send_msg(n, &m) == 0) {
            r->get_req = m.req;
            memcpy(r->get_origin, g.origin, TSYNC__SITE_BYTES);
            r->get_from = g.from;
        }
    }
}

/* ---------------------------------------------------------------- RPUT */

typedef struct {
    tsync_node *n;
    const tsync__held_key *k;
    uint8_t *trust; /* the CERTS frame of the shop's trust set (made at the first need) */
    size_t trust_len;
    int trust_done;
    tsync__renv *envs;
    put_ent *ents;
    size_t nenv, cap, bytes;
    uint64_t batches;
} put_ctx;

/* The shop's trust records as one CERTS frame (certificates first: tsync__trust_export's
 * order), so a till that meets an origin first through the relay can check its batches. */
static int trust_frame(put_ctx *c)
{
    c->trust_done = 1;
    uint8_t **blobs = NULL;
    size_t *lens = NULL, nb = 0;
    int rc = tsync__trust_export(c->n->s, &blobs, &lens, &nb);
    if (rc || !nb) {
        tsync__trust_export_free(blobs, lens, nb);
        return rc;
    }
    tsync__msg m = {.type = TSYNC__WIRE_CERTS};
    m.certs.n = (uint32_t)(nb > TRUST_RECS_MAX ? TRUST_RECS_MAX : nb);
    m.certs.blob = (const uint8_t *const *)blobs;
    m.certs.len = lens;
    char err[TSYNC__ERRLEN];
    rc = tsync__wire_encode(&m, &c->trust, &c->trust_len, err);
    tsync__trust_export_free(blobs, lens, nb);
    return rc ? tsync__err(rc, "encode the trust records for the relay: %s", err) : 0;
}

static int emit_env(void *ctx, const tsync__run_piece *pc)
{
    put_ctx *c = ctx;
    tsync_node *n = c->n;
    char err[TSYNC__ERRLEN];
    uint8_t *run = NULL;
    size_t rlen = 0;
    int rc;
    /* The first piece of an origin carries the trust set: a till that has never met the
     * origin's device gets its certificate with its first batches. */
    if (pc->first_seq == 1 && !c->trust_done && (rc = trust_frame(c))) return rc;
    size_t tlen = pc->first_seq == 1 ? c->trust_len : 0;
    if (pc->bytes <= CBATCHES_MAX_RAW) {
        rc = tsync__wire_cbatches_build(pc->site, pc->first_seq, pc->prev, pc->n, pc->body, pc->len,
                                        pc->sig, &run, &rlen, err);
    } else {
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
        rc = tsync__wire_encode(&m, &run, &rlen, err);
    }
    if (rc) return tsync__err(rc, "encode a run for the relay: %s", err);
    /* Payload: trust frame length (u32, big-endian; 0: none), the trust frame, the run. */
    size_t plen = 4 + tlen + rlen;
    uint8_t *payload = malloc(plen);
    if (!payload) {
        free(run);
        return TSYNC_ENOMEM;
    }
    payload[0] = (uint8_t)(tlen >> 24);
    payload[1] = (uint8_t)(tlen >> 16);
    payload[2] = (uint8_t)(tlen >> 8);
    payload[3] = (uint8_t)tlen;
    if (tlen) memcpy(payload + 4, c->trust, tlen);
    memcpy(payload + 4 + tlen, run, rlen);
    free(run);
    tsync__env_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.shop_id, n->shop, TSYNC__ENV_SHOP_BYTES);
    memcpy(h.origin, pc->site->site, TSYNC__SITE_BYTES);
    h.first_seq = pc->first_seq;
    h.last_seq = pc->first_seq + pc->n - 1;
    memcpy(h.prev_hash, pc->prev, TSYNC__HASH_BYTES);
    memcpy(h.last_hash, pc->last, TSYNC__HASH_BYTES);
    h.epoch = c->k->epoch;
    uint8_t *env = NULL;
    size_t elen = 0;
    rc = tsync__env_seal(&h, c->k->key, payload, plen, &env, &elen, err);
    free(payload);
    if (rc) return tsync__err(rc, "seal an envelope: %s", err);
    if (elen > TSYNC__RELAY_ENV_MAX) {
        free(env);
        return tsync__err(TSYNC_EINVAL,
                          "batches %llu..%llu make an envelope of %zu bytes, over the relay's "
                          "limit of %u",
                          (unsigned long long)h.first_seq, (unsigned long long)h.last_seq, elen,
                          TSYNC__RELAY_ENV_MAX);
    }
    if (c->nenv == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 8;
        tsync__renv *e = realloc(c->envs, cap * sizeof *e);
        if (e) c->envs = e;
        put_ent *p = e ? realloc(c->ents, cap * sizeof *p) : NULL;
        if (p) c->ents = p;
        if (!e || !p) {
            free(env);
            return TSYNC_ENOMEM;
        }
        c->cap = cap;
    }
    tsync__renv *e = &c->envs[c->nenv];
    memcpy(e->origin, h.origin, TSYNC__SITE_BYTES);
    e->first_seq = h.first_seq;
    e->last_seq = h.last_seq;
    e->bytes = env;
    e->len = elen;
    memcpy(c->ents[c->nenv].origin, h.origin, TSYNC__SITE_BYTES);
    c->ents[c->nenv].last = h.last_seq;
    c->nenv++;
    c->bytes += elen;
    c->batches += pc->n;
    return 0;
}

/* An origin whose log here starts at a stub (pruned, or taken as a snapshot): the relay gets it
 * from the batch after the stub (what is below is not held here to be put). */
static int horizon_raise(void *ctx, const tsync__horizon *h)
{
    raise_to(ctx, h->site, h->seq);
    return 0;
}

/* Whether the relay, as far as we sent it, lacks a batch we hold. */
static int relay_lacks(tsync_node *n)
{
    for (size_t i = 0; i < n->ours.n; i++)
        if (tsync__vv_seq(&n->relay->sent, n->ours.e[i].site) < n->ours.e[i].seq) return 1;
    return 0;
}

void tsync__node_relay_push(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    if (!r || !r->served || !r->nkeys) return;
    uint64_t now = tsync__mono_ms();
    if (now < r->put_wait_mono) return;
    if (!n->ours_valid && tsync__node_refresh_ours(n)) return;
    int behind_tried = 0;
    while (r->nputs < PUT_WINDOW && relay_lacks(n)) {
        put_ctx c = {.n = n, .k = &r->keys[r->nkeys - 1]};
        int more = 0;
        int rc = tsync__sync_runs(n->s, &r->sent, PUT_BUDGET, emit_env, &c, &more);
        if (rc == 0 && c.nenv) {
            tsync__rmsg m = {.type = TSYNC__R_PUT,
                             .req = ++r->next_req,
                             .nenvs = (uint32_t)c.nenv,
                             .envs = c.envs};
            rc = send_msg(n, &m);
            if (rc == 0) {
                rput *p = &r->puts[r->nputs++];
                p->req = m.req;
                p->e = c.ents;
                p->n = (uint32_t)c.nenv;
                p->batches = c.batches;
                c.ents = NULL;
                for (size_t i = 0; i < c.nenv; i++)
                    raise_to(&r->sent, c.envs[i].origin, c.envs[i].last_seq);
            }
        } else if (rc == 0) {
            /* Nothing could be cut (bodies after the last signature wait for it, an origin
             * frozen after a fork): look again a little later, not on every round. */
            r->put_wait_mono = now + 200;
            rc = TSYNC_EBUSY;
        }
        for (size_t i = 0; i < c.nenv; i++) free((void *)c.envs[i].bytes);
        free(c.envs);
        free(c.ents);
        free(c.trust);
        if (rc == TSYNC_EBUSY) break; /* the transport's queue is full, or nothing to cut */
        if (rc == TSYNC__SYNC_BEHIND && !behind_tried) {
            behind_tried = 1;
            if (tsync__log_horizon(n->s, horizon_raise, &r->sent) == 0) continue;
        }
        if (rc) {
            /* Batches held only as a stub here (pruned), or the log could not be read: the
             * relay gets them from a till that holds them; try again later. */
            snprintf(r->put_err, sizeof r->put_err, "cannot put batches: %s",
                     tsync__node_errtext());
            tsync__node_log(n, TSYNC_LOG_WARN, "relay: %s", r->put_err);
            r->put_wait_mono = now + PUT_ERR_WAIT_MS;
            n->status_dirty = 1;
            break;
        }
    }
}

/* ---------------------------------------------------------------- RENV */

static void refuse(tsync_node *n, int why, const tsync__renv *e, const char *what)
{
    char o[17];
    tsync__hex(e->origin, 8, o);
    n->relay->refused[why]++;
    n->status_dirty = 1;
    tsync__node_log(n, TSYNC_LOG_WARN, "relay: envelope of %s batches %llu..%llu refused (%s): %s",
                    o, (unsigned long long)e->first_seq, (unsigned long long)e->last_seq,
                    rr_name[why], what);
}

/* The trust records an envelope carries (a CERTS frame): each is verified by the trust store like
 * one from a LAN peer (admin-signed: the relay cannot forge one). Records this till refuses are
 * counted with the node's refused trust records. */
static int take_trust(tsync_node *n, const uint8_t *p, size_t len, char err[TSYNC__ERRLEN])
{
    tsync__msg m;
    tsync__arena a = {0};
    int rc = tsync__wire_decode(p, len, &m, &a, err);
    if (rc == 0 && m.type != TSYNC__WIRE_CERTS) {
        snprintf(err, TSYNC__ERRLEN, "the payload's trust frame is not a CERTS message");
        rc = TSYNC_ECORRUPT;
    }
    int changed = 0;
    for (uint32_t i = 0; rc == 0 && i < m.certs.n; i++) {
        char why[TSYNC__ERRLEN];
        if (tsync__trust_import(n->s, m.certs.blob[i], m.certs.len[i], why) == 0) {
            changed = 1;
            n->relay->trust_in++;
        } else {
            n->refused[R_TRUST]++;
            tsync__node_log(n, TSYNC_LOG_DEBUG, "relay: trust record not taken: %s", why);
        }
    }
    tsync__arena_free(&a);
    if (changed) tsync__node_trust_check(n);
    return rc;
}

/* One envelope from the relay (push: unsolicited; answer: in the answer to the RGET in flight). */
static void take(tsync_node *n, const tsync__renv *e, int push, int answer)
{
    struct tsync__nrelay *r = n->relay;
    char err[TSYNC__ERRLEN];
    tsync__env_header h;
    if (tsync__env_decode(e->bytes, e->len, &h, err)) return refuse(n, RR_MALFORMED, e, err);
    const tsync__held_key *k = key_of(r, h.epoch);
    if (!k) {
        snprintf(err, sizeof err, "this till holds no data key of epoch %u", h.epoch);
        return refuse(n, RR_KEY, e, err);
    }
    uint8_t *pl = NULL;
    size_t plen = 0;
    int rc = tsync__env_open(e->bytes, e->len, n->shop, h.epoch, k->key, &pl, &plen, &h, err);
    if (rc)
        return refuse(n,
                      rc == TSYNC_EBADSIG  ? RR_TAG
                      : rc == TSYNC_EINVAL ? RR_SHOP
                                           : RR_MALFORMED,
                      e, err);
    /* The relay's index must be the header it cannot change. */
    if (memcmp(h.origin, e->origin, TSYNC__SITE_BYTES) || h.first_seq != e->first_seq ||
        h.last_seq != e->last_seq) {
        free(pl);
        return refuse(n, RR_MISMATCH, e, "the relay's index differs from the sealed header");
    }
    /* An answer holds the origin asked for from the seq asked for (the store's get): an older
     * envelope served as new, or another origin's, is a replay, never progress. A push may
     * carry what is held already (the whole RPUT is forwarded): that is a duplicate below. */
    if (answer &&
        (memcmp(h.origin, r->get_origin, TSYNC__SITE_BYTES) || h.last_seq < r->get_from)) {
        free(pl);
        snprintf(err, sizeof err,
                 "not what was asked for (its origin from batch %llu): an older envelope served "
                 "again, or another origin's",
                 (unsigned long long)r->get_from);
        return refuse(n, RR_REPLAY, e, err);
    }
    raise_to(&r->have, h.origin, h.last_seq);
    uint64_t have = expected(n, h.origin);
    if (h.last_seq <= have) { /* held already: a put of what we got over the LAN, or a replay */
        free(pl);
        r->dup++;
        return;
    }
    if (h.first_seq > have + 1) {
        free(pl);
        snprintf(err, sizeof err, "it starts at batch %llu, this till holds up to %llu",
                 (unsigned long long)h.first_seq, (unsigned long long)have);
        if (push) want(r, h.origin, have + 1, 0);
        return refuse(n, RR_GAP, e, err);
    }
    /* The payload: a trust frame (its length first, u32 big-endian), then the run. */
    size_t tlen =
        plen >= 4 ? (size_t)pl[0] << 24 | (size_t)pl[1] << 16 | (size_t)pl[2] << 8 | pl[3] : 0;
    if (plen < 4 || tlen > plen - 4) {
        free(pl);
        return refuse(n, RR_MALFORMED, e, "the payload's trust frame length is out of range");
    }
    if (tlen && take_trust(n, pl + 4, tlen, err)) {
        free(pl);
        return refuse(n, RR_MALFORMED, e, err);
    }
    const tsync__wire_batches *b = NULL;
    rc = tsync__node_queue_frame(n, TSYNC__NODE_RELAY_QID, "the relay", pl + 4 + tlen,
                                 plen - 4 - tlen, &b);
    free(pl);
    if (rc) return refuse(n, RR_MALFORMED, e, "the payload is not a run of batches");
    if (!b) return; /* the merge queue is full: asked for again at the next RHAVE */
    /* The run must be the one the header names, chained from its prev_hash to its last_hash. */
    uint8_t hh[TSYNC__HASH_BYTES];
    memcpy(hh, b->prev, sizeof hh);
    for (uint32_t i = 0; i < b->nbodies; i++) tsync__batch_hash(hh, b->body[i], b->body_len[i], hh);
    const char *bad = NULL;
    if (memcmp(b->site, h.origin, TSYNC__SITE_BYTES) || b->first_seq != h.first_seq ||
        b->nbodies != h.last_seq - h.first_seq + 1)
        bad = "the run inside is not the range its header names";
    else if (memcmp(b->prev, h.prev_hash, sizeof hh) || memcmp(hh, h.last_hash, sizeof hh))
        bad = "the run's hash chain does not match the header's prev_hash and last_hash";
    if (!bad && h.first_seq == have + 1 && have > 0) {
        /* It must continue the batch this till holds (or has queued) at first_seq - 1. */
        const tsync__vv_entry *g = tsync__vv_get(&r->got, h.origin);
        const tsync__vv_entry *o = tsync__vv_get(&n->ours, h.origin);
        const uint8_t *at = g && g->seq == have ? g->hash : o && o->seq == have ? o->hash : NULL;
        if (at && memcmp(at, h.prev_hash, sizeof hh))
            bad = "it does not continue this till's chain";
    }
    if (bad) {
        tsync__node_queue_drop_last(n);
        return refuse(n, RR_CHAIN, e, bad);
    }
    tsync__vv_set(&r->got, h.origin, h.last_seq, h.last_hash);
    r->envs_in++;
    r->batches_in += b->nbodies;
}

/* Keeps envelopes e[0..k-1] (their bytes copied) to be taken in the next rounds. Out of memory,
 * they are dropped: the next probe asks for them again. */
static void pend_keep(struct tsync__nrelay *r, const tsync__renv *e, size_t k, int push, int answer)
{
    size_t total = 0;
    for (size_t i = 0; i < k; i++) total += e[i].len;
    r->pend = malloc(k * sizeof *r->pend);
    r->pend_bytes = malloc(total ? total : 1);
    if (!r->pend || !r->pend_bytes) return pend_clear(r);
    uint8_t *p = r->pend_bytes;
    for (size_t i = 0; i < k; i++) {
        r->pend[i] = e[i];
        memcpy(p, e[i].bytes, e[i].len);
        r->pend[i].bytes = p;
        p += e[i].len;
    }
    r->npend = k;
    r->ipend = 0;
    r->pend_push = push;
    r->pend_answer = answer; /* get_origin and get_from stay: no RGET goes out meanwhile */
}

/* Takes what an RENV left over while the merge queue has room (the last round merged it). */
static void pend_take(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    while (r->ipend < r->npend && n->mq.bytes < MERGE_QUEUE_MAX)
        take(n, &r->pend[r->ipend++], r->pend_push, r->pend_answer);
    if (r->npend && r->ipend == r->npend) {
        pend_clear(r);
        get_next(n);
    }
}

static void on_env(tsync_node *n, const tsync__rmsg *m)
{
    struct tsync__nrelay *r = n->relay;
    int answer = m->req && m->req == r->get_req;
    uint32_t i = 0;
    for (; i < m->nenvs && n->mq.bytes < MERGE_QUEUE_MAX; i++)
        take(n, &m->envs[i], m->req == 0, answer);
    if (i < m->nenvs) pend_keep(r, m->envs + i, m->nenvs - i, m->req == 0, answer);
    r->last_ok_ms = tsync__wall_ms();
    if (answer) {
        r->get_req = 0;
        /* Asked for next: from the first batch still lacking, whether the relay said there is
         * more or left a gap (an envelope dropped or out of order, refused as a gap above), so
         * nothing it skipped is skipped here. Only after progress (this till now holds what it
         * asked from): a relay serving nothing usable is asked again at the next probe, not in
         * a loop. get_next drops it when the relay is not known to hold more. */
        if (expected(n, r->get_origin) >= r->get_from)
            want(r, r->get_origin, expected(n, r->get_origin) + 1, 0);
    }
    n->status_dirty = 1;
    get_next(n);
}

/* ---------------------------------------------------------------- the relay's messages */

static void on_have(tsync_node *n, const tsync__rmsg *m)
{
    struct tsync__nrelay *r = n->relay;
    if (!r->verified) {
        /* The relay is the key we dialled (pinned): what follows its answer is delivered. */
        tsync__tp_peer_verified(r->tp, r->peer, NULL);
        r->verified = 1;
    }
    if (!r->served) {
        r->served = 1;
        r->sessions++;
        r->up_ms = tsync__wall_ms();
        r->probe_mono = tsync__mono_ms();
        r->backoff_ms = 0;
        r->trust_sent_valid = 0;
        vv_clear(&r->have);
        vv_clear(&r->sent);
        set_state(n, ST_UP, "%s", r->addr[r->idx]);
    }
    r->have_known = 1;
    r->last_ok_ms = tsync__wall_ms();
    if (!n->ours_valid) tsync__node_refresh_ours(n);
    for (uint32_t i = 0; i < m->norigins; i++) {
        const tsync__rhave_origin *o = &m->origins[i];
        uint64_t top = o->ranges[o->nranges - 1].last;
        raise_to(&r->have, o->origin, top);
        if (top > expected(n, o->origin)) want(r, o->origin, expected(n, o->origin) + 1, 0);
    }
    /* What is in flight counts as sent; the rest of `sent` is what the relay said. */
    vv_copy_raise(&r->sent, &r->have);
    n->status_dirty = 1;
    get_next(n);
    tsync__node_relay_push(n);
}

static void on_ack(tsync_node *n, const tsync__rmsg *m)
{
    struct tsync__nrelay *r = n->relay;
    if (is_trust_req(r, m->req)) {
        r->revocations_out += m->stored;
        r->last_ok_ms = tsync__wall_ms();
        n->status_dirty = 1;
        return;
    }
    for (size_t i = 0; i < r->nputs; i++) {
        if (r->puts[i].req != m->req) continue;
        for (uint32_t k = 0; k < r->puts[i].n; k++)
            raise_to(&r->have, r->puts[i].e[k].origin, r->puts[i].e[k].last);
        r->envs_out += r->puts[i].n;
        r->batches_out += r->puts[i].batches;
        free(r->puts[i].e);
        r->puts[i] = r->puts[--r->nputs];
        break;
    }
    r->last_ok_ms = tsync__wall_ms();
    if (r->put_err[0]) r->put_err[0] = 0;
    n->status_dirty = 1;
    tsync__node_relay_push(n);
}

static void on_err(tsync_node *n, const tsync__rmsg *m)
{
    struct tsync__nrelay *r = n->relay;
    const char *name = tsync__rerr_name(m->code);
    char why[300];
    snprintf(why, sizeof why, "%s: %.*s", name ? name : "unknown", (int)m->line_len, m->line);
    int put = 0;
    for (size_t i = 0; i < r->nputs; i++) put |= r->puts[i].req == m->req;
    if (m->req && put) {
        /* An upload refused (quota, ...): nothing of it was stored; reading goes on. */
        puts_clear(r);
        vv_clear(&r->sent);
        vv_copy_raise(&r->sent, &r->have);
        snprintf(r->put_err, sizeof r->put_err, "uploads refused: %s", why);
        r->put_wait_mono =
            tsync__mono_ms() + (m->code == TSYNC__RERR_QUOTA ? QUOTA_WAIT_MS : PUT_ERR_WAIT_MS);
        tsync__node_log(n, TSYNC_LOG_WARN, "relay %s: %s", r->addr[r->idx], r->put_err);
        n->status_dirty = 1;
        return;
    }
    if (m->req && m->req == r->get_req) {
        r->get_req = 0;
        tsync__node_log(n, TSYNC_LOG_WARN, "relay %s: a read refused: %s", r->addr[r->idx], why);
        return;
    }
    if (is_trust_req(r, m->req)) {
        /* Sent again with the next session or trust change; the session goes on. */
        tsync__node_log(n, TSYNC_LOG_WARN, "relay %s: the shop's revocations refused: %s",
                        r->addr[r->idx], why);
        return;
    }
    /* The session refused (unknown_shop, revoked, expired, admission, ...). */
    set_state(n, ST_REFUSED, "%s refused this till: %s", r->addr[r->idx], why);
    failed(n, REFUSED_WAIT_MS);
}

static void on_event(tsync_node *n, const tsync__tp_event *ev)
{
    struct tsync__nrelay *r = n->relay;
    if (!r->peer || ev->peer != r->peer) return; /* a relay we left */
    switch (ev->kind) {
    case TSYNC__TP_EV_UP:
        r->served = r->verified = 0;
        hello(n);
        break;
    case TSYNC__TP_EV_DOWN:
        if (r->served)
            set_state(n, ST_DOWN,
                      "lost the session with %s (relay stopped or unreachable); dialling again",
                      r->addr[r->idx]);
        r->served = r->verified = 0;
        r->get_req = 0;
        r->ngets = 0;
        puts_clear(r);
        r->dial_mono = tsync__mono_ms(); /* the transport dials again: give it its time */
        break;
    case TSYNC__TP_EV_HSFAIL:
        set_state(n, ST_DOWN,
                  "handshake with %s failed: its key is not the one in the grant, or it refused "
                  "this till's key",
                  r->addr[r->idx]);
        break;
    case TSYNC__TP_EV_MESSAGE: {
        tsync__rmsg m;
        tsync__arena a = {0};
        char err[TSYNC__ERRLEN];
        if (tsync__relay_decode(ev->data, ev->len, &m, &a, err)) {
            tsync__node_log(n, TSYNC_LOG_WARN, "relay %s: a message refused: %s", r->addr[r->idx],
                            err);
            tsync__arena_free(&a);
            break;
        }
        switch (m.type) {
        case TSYNC__R_HAVE:
            on_have(n, &m);
            break;
        case TSYNC__R_ENV:
            on_env(n, &m);
            break;
        case TSYNC__R_ACK:
            on_ack(n, &m);
            break;
        case TSYNC__R_ERR:
            on_err(n, &m);
            break;
        default:
            tsync__node_log(n, TSYNC_LOG_WARN, "relay %s: unexpected message type %u",
                            r->addr[r->idx], m.type);
        }
        tsync__arena_free(&a);
        break;
    }
    }
}

/* ---------------------------------------------------------------- the node's hooks */

int tsync__node_relay_new(tsync_node *n)
{
    n->relay = calloc(1, sizeof *n->relay);
    if (!n->relay) return TSYNC_ENOMEM;
    n->relay->state = ST_NONE;
    snprintf(n->relay->reason, sizeof n->relay->reason, "%s",
             n->o.no_relay ? "disabled (--no-relay)" : "not looked at yet");
    return 0;
}

void tsync__node_relay_free(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    if (!r) return;
    puts_clear(r);
    pend_clear(r);
    tsync__tp_free(r->tp);
    tsync__held_keys_free(r->keys, r->nkeys);
    tsync__vv_free(&r->have);
    tsync__vv_free(&r->sent);
    tsync__vv_free(&r->got);
    free(r->gets);
    free(r);
    n->relay = NULL;
}

void tsync__node_relay_tick(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    if (!r || n->o.no_relay) return;
    uint64_t now = tsync__mono_ms();
    /* Grants and data keys are trust records: they change only when the node's trust digest does
     * (tsync__node_trust_check: merged from a peer or the relay, or imported by another
     * connection, seen within an anti-entropy period). Read on a timer instead, they cost a node
     * without a grant three queries every 2 s on its loop, and one with a grant the opening of
     * its data keys too. */
    if (!r->config_read || r->config_gen != n->trust_gen ||
        (r->config_failed && now - r->config_mono >= CONFIG_MS)) {
        r->config_read = 1;
        r->config_gen = n->trust_gen;
        r->config_mono = now;
        if (!config(n)) return;
    }
    if (!r->have_grant || !r->nrelays || r->grant_expired) return;
    /* What was queued from the relay was merged (or refused): our vector says the rest. */
    if (!n->mq.n) vv_clear(&r->got);
    pend_take(n);
    tsync__tp_event ev;
    for (int i = 0;
         r->tp && i < EVENTS_PER_ROUND && n->mq.bytes < MERGE_QUEUE_MAX && r->ipend == r->npend;
         i++) {
        int rc = tsync__tp_poll(r->tp, 0, &ev);
        if (rc != 1) break;
        on_event(n, &ev);
        if (!r->have_grant) return;
    }
    if (!r->peer && now >= r->retry_mono) dial(n);
    if (r->peer && !r->served && now >= r->dial_mono + CONNECT_WAIT_MS) {
        if (r->state != ST_DOWN || !strstr(r->reason, "handshake"))
            set_state(n, ST_DOWN,
                      "no session with %s within %d s (relay not running or unreachable)",
                      r->addr[r->idx], CONNECT_WAIT_MS / 1000);
        failed(n, 0);
    }
    if (r->served && n->trust_digest_valid &&
        (!r->trust_sent_valid || memcmp(r->trust_sent, n->trust_digest, sizeof r->trust_sent)))
        send_revocations(n);
    if (r->served && now - r->probe_mono >= PROBE_MS) {
        /* The relay does not say RHAVE again on a session: a push lost on the way is found by
         * asking for every origin it is known to serve from the next batch we lack. */
        r->probe_mono = now;
        for (size_t i = 0; i < r->have.n; i++)
            want(r, r->have.e[i].site, expected(n, r->have.e[i].site) + 1, 1);
        get_next(n);
    }
}

void tsync__node_relay_refused(tsync_node *n, int rc)
{
    if (!n->relay) return;
    n->relay->refused[RR_SIGNATURE]++;
    n->status_dirty = 1;
    tsync__node_log(n, TSYNC_LOG_WARN, "relay: batches it served refused at merge: %s (%s)",
                    tsync__node_errtext(), tsync_strerror(rc));
}

json_t *tsync__node_relay_json(tsync_node *n)
{
    struct tsync__nrelay *r = n->relay;
    json_t *o = json_object();
    if (!r) return o;
    json_object_set_new(o, "state", json_string(state_name[r->state]));
    json_object_set_new(o, "reason", r->reason[0] ? json_string(r->reason) : json_null());
    json_object_set_new(o, "address",
                        r->have_grant && r->nrelays ? json_string(r->addr[r->idx]) : json_null());
    json_object_set_new(o, "relays", json_integer(r->have_grant ? r->nrelays : 0));
    if (r->have_known) {
        uint64_t out = 0, in = 0;
        for (size_t i = 0; i < n->ours.n; i++) {
            uint64_t t = tsync__vv_seq(&r->have, n->ours.e[i].site);
            if (n->ours.e[i].seq > t) out += n->ours.e[i].seq - t;
        }
        for (size_t i = 0; i < r->have.n; i++) {
            uint64_t mine = tsync__vv_seq(&n->ours, r->have.e[i].site);
            if (r->have.e[i].seq > mine) in += r->have.e[i].seq - mine;
        }
        json_object_set_new(o, "relay_lacks", json_integer((json_int_t)out));
        json_object_set_new(o, "till_lacks", json_integer((json_int_t)in));
    } else {
        json_object_set_new(o, "relay_lacks", json_null());
        json_object_set_new(o, "till_lacks", json_null());
    }
    json_object_set_new(o, "last_exchange_ms",
                        r->last_ok_ms ? json_integer((json_int_t)r->last_ok_ms) : json_null());
    json_object_set_new(o, "up_since_ms",
                        r->served ? json_integer((json_int_t)r->up_ms) : json_null());
    json_object_set_new(o, "uploads", r->put_err[0] ? json_string(r->put_err) : json_null());
    json_object_set_new(o, "sessions", json_integer((json_int_t)r->sessions));
    json_object_set_new(o, "envelopes_sent", json_integer((json_int_t)r->envs_out));
    json_object_set_new(o, "batches_sent", json_integer((json_int_t)r->batches_out));
    json_object_set_new(o, "envelopes_received", json_integer((json_int_t)r->envs_in));
    json_object_set_new(o, "batches_received", json_integer((json_int_t)r->batches_in));
    json_object_set_new(o, "envelopes_duplicate", json_integer((json_int_t)r->dup));
    json_object_set_new(o, "trust_records_received", json_integer((json_int_t)r->trust_in));
    json_object_set_new(o, "revocations_sent", json_integer((json_int_t)r->revocations_out));
    json_t *ref = json_object();
    for (int i = 0; i < RR_N; i++)
        json_object_set_new(ref, rr_name[i], json_integer((json_int_t)r->refused[i]));
    json_object_set_new(o, "envelopes_refused", ref);
    return o;
}
