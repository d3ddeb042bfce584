/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/relay.c — the blind relay server (docs/RELAY.md): one bound CURVE socket (the node's
 * transport, net/transport.h, with the relay's own key), sessions of tills from many shops, and
 * the store (store/relay_store.h) behind its vtable.
 *
 * A session's first message must be RHELLO. The transport admits any CURVE key at the handshake
 * (a key alone says nothing about a shop) and delivers nothing else until the session is
 * verified; the relay verifies the certificate in RHELLO (signature, its admin key admitted,
 * admission not expired, validity, no stored revocation, the device key the one behind the
 * session's CURVE key) and answers RHAVE, or RERR with a reason, counted, after which the
 * session is cut. A verified till may then RPUT (all or nothing under its shop's quota), RGET
 * (answered by RENV of at most max_bytes, so memory does not grow with what a shop holds) and
 * RTRUST (its shop's revocations, which also cut the revoked tills' sessions).
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cert.h"
#include "net/transport.h"
#include "relay_int.h"
#include "store/relay_store.h"
#include "store/trust.h"
#include "tillsync/relay.h"
#include "util/util.h"

#define MAX_SESSIONS 4096u
/* Sessions of one device key at once (a till's live session, its cloud backup, a hand-run
 * `backup --remote`): one more cuts the key's oldest, so a leaked key cannot take the relay's
 * sessions. */
#define SESSIONS_PER_KEY 4
#define GET_MAX_ENVS     1024u

typedef struct {
    uint32_t peer;
    int state; /* 0 waiting for RHELLO, 1 served, 2 refused (cut at cut_ms) */
    uint64_t cut_ms;
    int64_t shop;
    uint8_t admin_pk[TSYNC__PK_BYTES];
    uint8_t device_pk[TSYNC__PK_BYTES];
    char label[96]; /* "session 3 (till-1 ab12cd34)" */
    char address[TSYNC__TP_ADDR_LEN];
} sess;

struct tsync_relay {
    tsync_relay_options o;
    tsync__rstore *st;
    tsync__tp *tp;
    char endpoint[TSYNC__TP_ADDR_LEN];
    atomic_int stop;
    sess *s;
    uint32_t ns, cap;
    int64_t open;
    tsync__relay_tamper_fn tamper; /* tests only (relay_int.h); NULL */
    void *tamper_ctx;
};

static void rlog(tsync_relay *r, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void rlog(tsync_relay *r, int level, const char *fmt, ...)
{
    if (!r->o.log || level > (r->o.log_level ? r->o.log_level : TSYNC_LOG_INFO)) return;
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(line);
    r->o.log(r->o.log_ctx, level, line);
}

static sess *find(tsync_relay *r, uint32_t peer)
{
    for (uint32_t i = 0; i < r->ns; i++)
        if (r->s[i].peer == peer) return &r->s[i];
    return NULL;
}

static void count(tsync_relay *r, const char *name, int64_t delta, int set)
{
    int rc = r->st->ops->count(r->st, name, delta, set);
    if (rc) rlog(r, TSYNC_LOG_ERROR, "relay: counter %s: %s", name, tsync_error_last()->message);
}

static void send_msg(tsync_relay *r, sess *s, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__relay_encode(m, &b, &len, err);
    if (rc) {
        rlog(r, TSYNC_LOG_ERROR, "relay: %s: cannot encode an answer: %s", s->label, err);
        return;
    }
    rc = tsync__tp_send(r->tp, s->peer, b, len);
    if (rc)
        rlog(r, TSYNC_LOG_WARN, "relay: %s: answer not sent (%s)", s->label, tsync_strerror(rc));
    free(b);
}

static void feed_follow(tsync_relay *r, const sess *s, int on);

/* With the test double's hook set (relay_int.h), each RENV goes through it, one session at a
 * time; 0: no hook, the caller sends m itself. */
static int tampered(tsync_relay *r, sess *t, const tsync__rmsg *get, const tsync__rmsg *m)
{
    if (!r->tamper) return 0;
    tsync__rmsg c = *m;
    r->tamper(r->tamper_ctx, r->st, t->shop, get, &c);
    send_msg(r, t, &c);
    return 1;
}

/* Sends RERR code with a line, counts it; hello: the session is cut after the linger. */
static void refuse(tsync_relay *r, sess *s, uint64_t req, uint32_t code, int cut, const char *fmt,
                   ...) __attribute__((format(printf, 6, 7)));
static void refuse(tsync_relay *r, sess *s, uint64_t req, uint32_t code, int cut, const char *fmt,
                   ...)
{
    char line[TSYNC__RELAY_LINE_MAX + 1];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    tsync__utf8_trim(line);
    for (char *p = line; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    if (!line[0]) snprintf(line, sizeof line, "refused");
    tsync__rmsg m = {.type = TSYNC__R_ERR,
                     .req = req,
                     .code = code,
                     .line = line,
                     .line_len = (uint32_t)strlen(line)};
    send_msg(r, s, &m);
    char name[64];
    snprintf(name, sizeof name, "refused.%s", tsync__rerr_name(code));
    count(r, name, 1, 0);
    rlog(r, TSYNC_LOG_WARN, "relay: %s refused (%s): %s", s->label, tsync__rerr_name(code), line);
    if (cut && s->state != 2) {
        feed_follow(r, s, 0);
        s->state = 2;
        s->cut_ms = tsync__mono_ms() + (r->o.refused_linger_ms ? r->o.refused_linger_ms : 2000);
    }
}

/* ---------------------------------------------------------------- RHELLO */

typedef struct {
    tsync__rmsg m;
    tsync__rhave_origin *o;
    uint32_t n, cap;
    tsync__arena a;
} have_ctx;

static int have_add(void *ctx, const uint8_t origin[TSYNC__SITE_BYTES], const tsync__rrange *g,
                    uint32_t n)
{
    have_ctx *c = ctx;
    if (c->n == c->cap) {
        uint32_t nc = c->cap ? c->cap * 2 : 16;
        tsync__rhave_origin *o = realloc(c->o, nc * sizeof *o);
        if (!o) return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
        c->o = o;
        c->cap = nc;
    }
    tsync__rrange *copy = tsync__arena_array(&c->a, n, sizeof *copy);
    if (!copy) return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
    memcpy(copy, g, n * sizeof *g);
    tsync__rhave_origin *o = &c->o[c->n++];
    memcpy(o->origin, origin, TSYNC__SITE_BYTES);
    o->nranges = n;
    o->ranges = copy;
    return 0;
}

static void send_have(tsync_relay *r, sess *s)
{
    have_ctx c = {0};
    int rc = r->st->ops->ranges(r->st, s->shop, have_add, &c);
    if (rc) {
        refuse(r, s, 0, TSYNC__RERR_INTERNAL, 0, "the relay's store failed");
    } else {
        c.m = (tsync__rmsg){.type = TSYNC__R_HAVE, .norigins = c.n, .origins = c.o};
        send_msg(r, s, &c.m);
    }
    free(c.o);
    tsync__arena_free(&c.a);
}

static void on_hello(tsync_relay *r, sess *s, const tsync__rmsg *m, const uint8_t curve_pk[32])
{
    if (m->version != TSYNC__RELAY_PROTO) {
        refuse(r, s, 0, TSYNC__RERR_VERSION, 1,
               "protocol version %" PRIu64 " is not served (this relay speaks %u)", m->version,
               TSYNC__RELAY_PROTO);
        return;
    }
    /* The chain: a certificate of the session's key (other records are not used yet). */
    tsync__arena a = {0};
    tsync__trust_rec rec;
    const tsync__cert *c = NULL;
    char err[TSYNC__ERRLEN] = "no certificate in the chain";
    for (uint32_t i = 0; i < m->nrecs && !c; i++) {
        if (tsync__trust_decode(m->recs[i].p, m->recs[i].len, &rec, &a, err) != 0) break;
        uint8_t cv[32];
        if (rec.kind == TSYNC__T_CERT && tsync__tp_curve_of(rec.u.cert.device_pk, cv) == 0 &&
            sodium_memcmp(cv, curve_pk, 32) == 0)
            c = &rec.u.cert;
        else
            snprintf(err, sizeof err, "no certificate of the session's key in the chain");
    }
    if (!c) {
        refuse(r, s, 0, TSYNC__RERR_BAD_CERT, 1, "%s", err);
        tsync__arena_free(&a);
        return;
    }
    char keyh[17];
    sodium_bin2hex(keyh, sizeof keyh, c->device_pk, 8);
    snprintf(s->label, sizeof s->label, "session %" PRIu32 " (%.*s %s)", s->peer,
             (int)(c->device_name_len > 40 ? 40 : c->device_name_len), c->device_name, keyh);
    for (char *p = s->label; *p; p++)
        if ((unsigned char)*p < 0x20 || *p == 0x7f) *p = '?';
    memcpy(s->device_pk, c->device_pk, TSYNC__PK_BYTES);
    uint64_t now = tsync__wall_ms();
    tsync__rshop shop;
    int rc = r->st->ops->shop(r->st, c->admin_pk, &shop);
    char adm[17];
    sodium_bin2hex(adm, sizeof adm, c->admin_pk, 8);
    if (rc == TSYNC_ENOTFOUND) {
        refuse(r, s, 0, TSYNC__RERR_UNKNOWN_SHOP, 1, "shop admin key %s... is not admitted here",
               adm);
    } else if (rc) {
        refuse(r, s, 0, TSYNC__RERR_INTERNAL, 1, "the relay's store failed");
    } else if (shop.expires_ms && now > shop.expires_ms) {
        refuse(r, s, 0, TSYNC__RERR_ADMISSION, 1, "the admission of shop %s... expired at %" PRIu64,
               adm, shop.expires_ms);
    } else if (memcmp(m->shop_id, c->shop_id, TSYNC__SHOP_ID_BYTES) != 0) {
        refuse(r, s, 0, TSYNC__RERR_BAD_CERT, 1,
               "the certificate is of another shop than RHELLO's");
    } else if (shop.has_shop_id && memcmp(shop.shop_id, c->shop_id, TSYNC__SHOP_ID_BYTES) != 0) {
        refuse(r, s, 0, TSYNC__RERR_SHOP_ID, 1,
               "admin key %s... serves another shop id here than the certificate's", adm);
    } else if (now + TSYNC__TRUST_SKEW_MS < c->not_before_ms || now > c->expires_ms) {
        refuse(r, s, 0, TSYNC__RERR_EXPIRED, 1,
               "the certificate is valid from %" PRIu64 " to %" PRIu64 " (now %" PRIu64 ")",
               c->not_before_ms, c->expires_ms, now);
    } else if ((rc = r->st->ops->revoked(r->st, shop.id, c->device_pk)) != 0) {
        if (rc < 0)
            refuse(r, s, 0, TSYNC__RERR_INTERNAL, 1, "the relay's store failed");
        else
            refuse(r, s, 0, TSYNC__RERR_REVOKED, 1, "this till's key is revoked by its shop");
    } else if (!shop.has_shop_id && r->st->ops->bind_shop_id(r->st, shop.id, c->shop_id) != 0) {
        refuse(r, s, 0, TSYNC__RERR_INTERNAL, 1, "the relay's store failed");
    } else if ((rc = tsync__tp_peer_verified(r->tp, s->peer, c->device_pk)) != 0) {
        if (rc != TSYNC_ENOTFOUND)
            refuse(r, s, 0, TSYNC__RERR_BAD_CERT, 1,
                   "the certificate names another key than the session's");
    } else {
        s->state = 1;
        s->shop = shop.id;
        memcpy(s->admin_pk, shop.admin_pk, TSYNC__PK_BYTES);
        count(r, "sessions", 1, 0);
        rlog(r, TSYNC_LOG_INFO, "relay: %s admitted for shop %s... from %s", s->label, adm,
             s->address);
        feed_follow(r, s, 1);
        send_have(r, s);
    }
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- RPUT, RGET, RTRUST */

/* Forwards what a till just stored to the served sessions of the shop's other tills (every
 * session of each; not the putting till's other sessions, which hold it) as an unsolicited RENV
 * (req 0), so a till online at the same time sees a sale without polling. Best effort: a push
 * the transport cannot queue is lost, and the till finds the gap by the sequence numbers and asks
 * with RGET. The whole RPUT is forwarded (duplicates too: a till drops what it holds); one
 * encoding serves every session. */
static void push(tsync_relay *r, const sess *from, const tsync__rmsg *m)
{
    tsync__rmsg p = {.type = TSYNC__R_ENV, .req = 0, .nenvs = m->nenvs, .envs = m->envs};
    uint8_t *b = NULL;
    size_t len = 0;
    char err[TSYNC__ERRLEN];
    for (uint32_t i = 0; i < r->ns; i++) {
        sess *t = &r->s[i];
        if (t->state != 1 || t->shop != from->shop ||
            !memcmp(t->device_pk, from->device_pk, TSYNC__PK_BYTES))
            continue;
        if (tampered(r, t, NULL, &p)) continue;
        if (!b && tsync__relay_encode(&p, &b, &len, err)) {
            rlog(r, TSYNC_LOG_ERROR, "relay: %s: cannot encode a push: %s", from->label, err);
            return;
        }
        if (tsync__tp_send(r->tp, t->peer, b, len))
            rlog(r, TSYNC_LOG_DEBUG, "relay: %s: push not queued", t->label);
    }
    free(b);
}

static void on_put(tsync_relay *r, sess *s, const tsync__rmsg *m)
{
    for (uint32_t i = 0; i < m->nenvs; i++)
        if (m->envs[i].last_seq > INT64_MAX) {
            refuse(r, s, m->req, TSYNC__RERR_MALFORMED, 0, "envelope %" PRIu32 ": seq above 2^63",
                   i);
            return;
        }
    tsync__rshop shop;
    int rc = r->st->ops->shop(r->st, s->admin_pk, &shop);
    uint64_t stored = 0, dup = 0;
    if (!rc)
        rc = r->st->ops->put(r->st, s->shop, shop.quota_bytes, m->envs, m->nenvs, &stored, &dup);
    if (rc == TSYNC_EFULL) {
        refuse(r, s, m->req, TSYNC__RERR_QUOTA, 0, "%s", tsync_error_last()->message);
        return;
    }
    if (rc) {
        refuse(r, s, m->req, TSYNC__RERR_INTERNAL, 0, "the relay's store failed");
        rlog(r, TSYNC_LOG_ERROR, "relay: %s: put: %s", s->label, tsync_error_last()->message);
        return;
    }
    tsync__rmsg a = {.type = TSYNC__R_ACK, .req = m->req, .stored = stored, .dup = dup};
    send_msg(r, s, &a);
    if (stored > 0) push(r, s, m);
}

typedef struct {
    tsync__renv *e;
    uint32_t n;
    uint64_t bytes, cap;
    bool more;
    int oom;
} get_ctx;

static int get_one(void *ctx, const tsync__renv *e)
{
    get_ctx *c = ctx;
    if (c->n > 0 && (c->n == GET_MAX_ENVS || c->bytes + e->len > c->cap)) {
        c->more = true;
        return 1;
    }
    uint8_t *copy = malloc(e->len);
    if (!copy) {
        c->oom = 1;
        return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
    }
    memcpy(copy, e->bytes, e->len);
    c->e[c->n] = *e;
    c->e[c->n].bytes = copy;
    c->n++;
    c->bytes += e->len;
    return 0;
}

static void on_get(tsync_relay *r, sess *s, const tsync__rmsg *m)
{
    get_ctx c = {0};
    uint64_t cap = r->o.max_get_bytes ? r->o.max_get_bytes : (8u << 20);
    c.cap = m->max_bytes < cap ? m->max_bytes : cap;
    c.e = calloc(GET_MAX_ENVS, sizeof *c.e);
    int rc =
        c.e ? r->st->ops->get(r->st, s->shop, m->origin, m->from_seq, get_one, &c) : TSYNC_ENOMEM;
    if (rc) {
        refuse(r, s, m->req, TSYNC__RERR_INTERNAL, 0, "the relay's store failed");
    } else {
        tsync__rmsg a = {
            .type = TSYNC__R_ENV, .req = m->req, .nenvs = c.n, .envs = c.e, .more = c.more};
        if (!tampered(r, s, m, &a)) send_msg(r, s, &a);
    }
    for (uint32_t i = 0; i < c.n; i++) free((void *)c.e[i].bytes);
    free(c.e);
}

static void on_trust(tsync_relay *r, sess *s, const tsync__rmsg *m)
{
    tsync__rshop shop;
    if (r->st->ops->shop(r->st, s->admin_pk, &shop) != 0) {
        refuse(r, s, m->req, TSYNC__RERR_INTERNAL, 0, "the relay's store failed");
        return;
    }
    tsync__arena a = {0};
    tsync__trust_rec *rec = calloc(m->nrecs, sizeof *rec);
    char err[TSYNC__ERRLEN];
    uint32_t i = 0;
    for (; rec && i < m->nrecs; i++) {
        if (tsync__trust_decode(m->recs[i].p, m->recs[i].len, &rec[i], &a, err) != 0) break;
        if (rec[i].kind != TSYNC__T_REVOCATION) {
            snprintf(err, sizeof err, "not a revocation");
            break;
        }
        if (memcmp(rec[i].u.rev.shop_id, shop.shop_id, TSYNC__SHOP_ID_BYTES) != 0 ||
            memcmp(rec[i].u.rev.admin_pk, shop.admin_pk, TSYNC__PK_BYTES) != 0) {
            snprintf(err, sizeof err, "a revocation of another shop or admin key");
            break;
        }
    }
    if (!rec || i < m->nrecs) {
        refuse(r, s, m->req, TSYNC__RERR_BAD_TRUST, 0, "record %" PRIu32 ": %s", i,
               rec ? err : "out of memory");
        free(rec);
        tsync__arena_free(&a);
        return;
    }
    int rc = 0;
    for (i = 0; !rc && i < m->nrecs; i++)
        rc = r->st->ops->revoke(r->st, s->shop, rec[i].u.rev.device_pk, m->recs[i].p,
                                m->recs[i].len);
    if (rc) {
        refuse(r, s, m->req, TSYNC__RERR_INTERNAL, 0, "the relay's store failed");
    } else {
        tsync__rmsg ack = {.type = TSYNC__R_ACK, .req = m->req, .stored = m->nrecs};
        send_msg(r, s, &ack);
        /* The revoked tills of this shop lose their sessions now. */
        for (i = 0; i < m->nrecs; i++)
            for (uint32_t k = 0; k < r->ns; k++) {
                sess *o = &r->s[k];
                if (o->state == 1 && o->shop == s->shop &&
                    !memcmp(o->device_pk, rec[i].u.rev.device_pk, TSYNC__PK_BYTES))
                    refuse(r, o, 0, TSYNC__RERR_REVOKED, 1,
                           "this till's key was revoked by its shop");
            }
    }
    free(rec);
    tsync__arena_free(&a);
}

/* ---------------------------------------------------------------- the vault (net/relay/vault.c) */

static void vault_send(void *ctx, const tsync__rmsg *m)
{
    void **c = ctx;
    send_msg(c[0], c[1], m);
}

static void vault_refuse(void *ctx, uint64_t req, uint32_t code, const char *line)
{
    void **c = ctx;
    refuse(c[0], c[1], req, code, 0, "%s", line);
}

static void vault_log(void *ctx, int level, const char *line)
{
    void **c = ctx;
    rlog(c[0], level, "%s", line);
}

static void on_vault(tsync_relay *r, sess *s, const tsync__rmsg *m)
{
    void *c[2] = {r, s};
    tsync__vault_sess v = {.st = r->st,
                           .shop = s->shop,
                           .admin_pk = s->admin_pk,
                           .label = s->label,
                           .send = vault_send,
                           .refuse = vault_refuse,
                           .log = vault_log,
                           .ctx = c};
    tsync__relay_vault(&v, m);
}

/* ---------------------------------------------------------------- events */

static void on_message(tsync_relay *r, const tsync__tp_event *ev)
{
    sess *s = find(r, ev->peer);
    if (!s || s->state == 2) return;
    tsync__arena a = {0};
    tsync__rmsg m;
    char err[TSYNC__ERRLEN];
    if (tsync__relay_decode(ev->data, ev->len, &m, &a, err) != 0) {
        refuse(r, s, 0, TSYNC__RERR_MALFORMED, s->state == 0, "%s", err);
    } else if (s->state == 0) {
        if (m.type == TSYNC__R_HELLO)
            on_hello(r, s, &m, ev->curve_pk);
        else
            refuse(r, s, 0, TSYNC__RERR_PROTOCOL, 1, "the first message must be RHELLO");
    } else {
        switch (m.type) {
        case TSYNC__R_PUT:
            on_put(r, s, &m);
            break;
        case TSYNC__R_GET:
            on_get(r, s, &m);
            break;
        case TSYNC__R_TRUST:
            on_trust(r, s, &m);
            break;
        case TSYNC__R_VHAVE:
        case TSYNC__R_VPUT:
        case TSYNC__R_VCOMMIT:
        case TSYNC__R_VLIST:
        case TSYNC__R_VGET:
        case TSYNC__R_VDEL:
            on_vault(r, s, &m);
            break;
        default:
            refuse(r, s, m.req, TSYNC__RERR_PROTOCOL, 0, "a till does not send %s here",
                   m.type == TSYNC__R_HELLO ? "RHELLO twice" : "this message type");
        }
    }
    tsync__arena_free(&a);
}

static void on_up(tsync_relay *r, const tsync__tp_event *ev)
{
    if (find(r, ev->peer)) return;
    if (r->ns == r->cap) {
        uint32_t nc = r->cap ? r->cap * 2 : 16;
        sess *n = nc <= MAX_SESSIONS ? realloc(r->s, nc * sizeof *n) : NULL;
        if (!n) {
            rlog(r, TSYNC_LOG_WARN, "relay: session %" PRIu32 " from %s cut: too many sessions",
                 ev->peer, ev->address);
            tsync__tp_close(r->tp, ev->peer);
            return;
        }
        r->s = n;
        r->cap = nc;
    }
    sess *s = &r->s[r->ns++];
    memset(s, 0, sizeof *s);
    s->peer = ev->peer;
    snprintf(s->label, sizeof s->label, "session %" PRIu32, ev->peer);
    snprintf(s->address, sizeof s->address, "%s", ev->address);
    r->open++;
    count(r, "sessions_open", r->open, 1);
    rlog(r, TSYNC_LOG_INFO, "relay: session %" PRIu32 " up from %s", ev->peer, ev->address);
}

static void on_down(tsync_relay *r, const tsync__tp_event *ev)
{
    sess *s = find(r, ev->peer);
    if (!s) return;
    static const char *const why[] = {"?", "lost", "closed", "superseded", "oversize"};
    rlog(r, TSYNC_LOG_INFO, "relay: %s down (%s)", s->label,
         ev->reason >= 1 && ev->reason <= 4 ? why[ev->reason] : "?");
    feed_follow(r, s, 0);
    *s = r->s[--r->ns];
    r->open--;
    count(r, "sessions_open", r->open, 1);
}

/* ---------------------------------------------------------------- pushes across relay processes */

/* With a store several relay processes share (JetStream), a till of this relay must also get
 * pushes of what a till on another relay stored: the relay follows the envelopes of every shop
 * it serves a session of (store feed), and forwards each new one as a push (RENV req 0), one
 * envelope per push. Best effort as any push: a gap is found by sequence numbers and asked for. */

static int shop_served(const tsync_relay *r, int64_t shop, const sess *except)
{
    for (uint32_t i = 0; i < r->ns; i++)
        if (&r->s[i] != except && r->s[i].state == 1 && r->s[i].shop == shop) return 1;
    return 0;
}

static void feed_follow(tsync_relay *r, const sess *s, int on)
{
    if (!r->st->feed || s->state != 1) return;
    if (!on && shop_served(r, s->shop, s)) return;
    if (r->st->feed->watch(r->st, s->shop, on) != 0)
        rlog(r, TSYNC_LOG_WARN, "relay: %s: cannot follow the shop's envelopes on the store: %s",
             s->label, tsync_error_last()->message);
}

static int feed_push(void *ctx, int64_t shop, const tsync__renv *e)
{
    tsync_relay *r = ctx;
    tsync__rmsg p = {.type = TSYNC__R_ENV, .req = 0, .nenvs = 1, .envs = (tsync__renv *)e};
    uint8_t *b = NULL;
    size_t len = 0;
    char err[TSYNC__ERRLEN];
    for (uint32_t i = 0; i < r->ns; i++) {
        sess *t = &r->s[i];
        if (t->state != 1 || t->shop != shop) continue;
        if (tampered(r, t, NULL, &p)) continue;
        if (!b && tsync__relay_encode(&p, &b, &len, err)) {
            rlog(r, TSYNC_LOG_ERROR, "relay: cannot encode a push from the store: %s", err);
            return 0;
        }
        if (tsync__tp_send(r->tp, t->peer, b, len))
            rlog(r, TSYNC_LOG_DEBUG, "relay: %s: push not queued", t->label);
    }
    free(b);
    return 0;
}

/* ---------------------------------------------------------------- the public API */

int tsync_relay_new(tsync_relay **out, const char *dir, const tsync_relay_options *opts)
{
    *out = NULL;
    if (!opts) return tsync__err(TSYNC_EINVAL, "relay: no options");
    int rc =
        tsync__check_version("tsync_relay_options", opts->version, TSYNC_RELAY_OPTIONS_VERSION);
    if (rc) return rc;
    if (!opts->listen || !*opts->listen)
        return tsync__err(TSYNC_EINVAL, "relay: no listen endpoint");
    uint8_t sk[64];
    rc = tsync__relay_key_load(dir, sk);
    if (rc) return rc;
    tsync_relay *r = calloc(1, sizeof *r);
    if (!r) {
        sodium_memzero(sk, sizeof sk);
        return tsync__err(TSYNC_ENOMEM, "relay: out of memory");
    }
    /* A version 1 struct ends before store. */
    memcpy(&r->o, opts, opts->version >= 2 ? sizeof *opts : offsetof(tsync_relay_options, store));
    r->o.listen = NULL;
    r->o.store = NULL;
    rc = tsync__rstore_open(&r->st, dir, opts->version >= 2 ? opts->store : NULL, 0, 0);
    if (!rc) {
        tsync__tp_options to = TSYNC__TP_OPTIONS_INIT;
        to.max_msg = TSYNC__RELAY_MSG_MAX;
        to.max_inbound = (int)MAX_SESSIONS;
        to.sessions_per_key = SESSIONS_PER_KEY;
        rc = tsync__tp_new(&r->tp, sk, &to);
    }
    sodium_memzero(sk, sizeof sk);
    if (!rc) rc = tsync__tp_bind(r->tp, opts->listen, r->endpoint, sizeof r->endpoint);
    if (!rc) count(r, "sessions_open", 0, 1);
    if (rc) {
        tsync_relay_free(r);
        return rc;
    }
    *out = r;
    return 0;
}

const char *tsync_relay_endpoint(tsync_relay *r)
{
    return r ? r->endpoint : "";
}

int tsync_relay_run(tsync_relay *r, volatile sig_atomic_t *stop)
{
    if (!r) return tsync__err(TSYNC_EINVAL, "relay: NULL");
    rlog(r, TSYNC_LOG_INFO, "relay: listening on %s", r->endpoint);
    int rc = 0;
    while (!atomic_load(&r->stop) && !(stop && *stop)) {
        tsync__tp_event ev;
        /* With a shared store, envelopes other relays stored are looked for every 10 ms. */
        int n = tsync__tp_poll(r->tp, r->st->feed ? 10 : 200, &ev);
        if (n < 0) {
            rc = n;
            break;
        }
        if (n == 1) switch (ev.kind) {
            case TSYNC__TP_EV_UP:
                on_up(r, &ev);
                break;
            case TSYNC__TP_EV_DOWN:
                on_down(r, &ev);
                break;
            case TSYNC__TP_EV_MESSAGE:
                on_message(r, &ev);
                break;
            case TSYNC__TP_EV_HSFAIL:
                count(r, "handshake_failed", 1, 0);
                rlog(r, TSYNC_LOG_INFO, "relay: handshake from %s failed (%d)", ev.address,
                     ev.reason);
                break;
            default:
                break;
            }
        if (r->st->feed) r->st->feed->next(r->st, feed_push, r);
        uint64_t now = tsync__mono_ms();
        for (uint32_t i = 0; i < r->ns; i++)
            if (r->s[i].state == 2 && now >= r->s[i].cut_ms) {
                r->s[i].cut_ms = UINT64_MAX;
                tsync__tp_close(r->tp, r->s[i].peer);
            }
    }
    atomic_store(&r->stop, 0);
    rlog(r, TSYNC_LOG_INFO, "relay: stopped");
    return rc;
}

void tsync__relay_set_tamper(tsync_relay *r, tsync__relay_tamper_fn fn, void *ctx)
{
    r->tamper = fn;
    r->tamper_ctx = ctx;
}

void tsync_relay_stop(tsync_relay *r)
{
    if (r) atomic_store(&r->stop, 1);
}

void tsync_relay_free(tsync_relay *r)
{
    if (!r) return;
    tsync__tp_free(r->tp);
    if (r->st) {
        count(r, "sessions_open", 0, 1);
        r->st->ops->close(r->st);
    }
    free(r->s);
    free(r);
}
