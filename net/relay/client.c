/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/client.c — a till's blocking session with one relay of its grant (client.h): the
 * transport with the device key, the relay's key pinned from the grant, RHELLO with this till's
 * certificate, then request and answer with a timeout. Failover walks the grant's relays in
 * order at open; a session lost later is an error the caller may answer by opening again (the
 * vault's upload resumes from what the relay holds).
 */
#include "client.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "codec/cert.h"
#include "net/transport.h"
#include "store/sync.h"
#include "store/trust.h"
#include "util/util.h"

struct tsync__rclient {
    tsync__tp *tp;
    uint32_t peer;
    int timeout_ms;
    const volatile sig_atomic_t *stop; /* the caller's stop flag (may be NULL) */
    uint64_t next_req;
    uint8_t shop_id[TSYNC__SHOP_ID_BYTES];
    char addr[TSYNC__TP_ADDR_LEN];
    uint8_t *last; /* the last answer's bytes, which ans points into */
    tsync__arena a;
    tsync__rmsg m;
};

/* Waits for a transport event of at most ms, in slices that look at the stop flag: a stopping
 * node does not wait out a relay that does not answer. 1: an event; 0: none; < 0: an error (also
 * when stopped, message set). */
static int poll_stop(tsync__rclient *c, uint64_t ms, tsync__tp_event *ev)
{
    if (c->stop && *c->stop)
        return tsync__err(TSYNC_EIO, "relay %s: stopped before it answered", c->addr);
    return tsync__tp_poll(c->tp, (int)(ms < 100 ? ms : 100), ev);
}

/* The next message from the relay into c->m, or an error after timeout_ms. */
static int recv_msg(tsync__rclient *c)
{
    uint64_t end = tsync__mono_ms() + (uint64_t)c->timeout_ms;
    for (;;) {
        uint64_t now = tsync__mono_ms();
        if (now >= end)
            return tsync__err(TSYNC_EIO, "relay %s: no answer within %d ms", c->addr,
                              c->timeout_ms);
        tsync__tp_event ev;
        int n = poll_stop(c, end - now, &ev);
        if (n < 0) return n;
        if (n == 0 || ev.peer != c->peer) continue;
        if (ev.kind == TSYNC__TP_EV_DOWN)
            return tsync__err(TSYNC_EIO, "relay %s: the session was lost", c->addr);
        if (ev.kind == TSYNC__TP_EV_HSFAIL)
            return tsync__err(TSYNC_EREFUSED,
                              "relay %s: the handshake failed (is the relay key in the grant"
                              " the relay's?)",
                              c->addr);
        if (ev.kind != TSYNC__TP_EV_MESSAGE) continue;
        free(c->last);
        tsync__arena_free(&c->a);
        c->last = malloc(ev.len ? ev.len : 1);
        if (!c->last) return tsync__err(TSYNC_ENOMEM, "out of memory");
        memcpy(c->last, ev.data, ev.len);
        char err[TSYNC__ERRLEN];
        int rc = tsync__relay_decode(c->last, ev.len, &c->m, &c->a, err);
        if (rc) return tsync__err(rc, "relay %s: %s", c->addr, err);
        return 0;
    }
}

/* An RERR as an error code and message. */
static int rerr(const tsync__rclient *c, const tsync__rmsg *m)
{
    const char *name = tsync__rerr_name(m->code);
    int rc = m->code == TSYNC__RERR_QUOTA       ? TSYNC_EFULL
             : m->code == TSYNC__RERR_NOT_FOUND ? TSYNC_ENOTFOUND
             : m->code == TSYNC__RERR_BAD_HASH  ? TSYNC_ECORRUPT
                                                : TSYNC_EREFUSED;
    return tsync__err(rc, "relay %s refused (%s): %.*s", c->addr, name ? name : "?",
                      (int)m->line_len, m->line);
}

static int send_msg(tsync__rclient *c, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__relay_encode(m, &b, &len, err);
    if (rc) return tsync__err(rc, "relay %s: %s", c->addr, err);
    rc = tsync__tp_send(c->tp, c->peer, b, len);
    free(b);
    if (rc) return tsync__err(TSYNC_EIO, "relay %s: cannot send (%s)", c->addr, tsync_strerror(rc));
    return 0;
}

/* Dials one relay and says RHELLO; 0 when it answered RHAVE. */
static int try_relay(tsync__rclient *c, const tsync__grant_relay *g, const uint8_t *cert,
                     size_t cert_len)
{
    snprintf(c->addr, sizeof c->addr, "%.*s", (int)g->addr_len, g->addr);
    int rc = tsync__tp_connect(c->tp, c->addr, g->pk, &c->peer);
    if (rc) return tsync__err(rc, "relay %s: cannot dial it", c->addr);
    uint64_t end = tsync__mono_ms() + (uint64_t)c->timeout_ms;
    int up = 0;
    while (!up) {
        uint64_t now = tsync__mono_ms();
        if (now >= end) break;
        tsync__tp_event ev;
        int n = poll_stop(c, end - now, &ev);
        if (n < 0) return n;
        if (n == 1 && ev.peer == c->peer && ev.kind == TSYNC__TP_EV_UP) up = 1;
        if (n == 1 && ev.kind == TSYNC__TP_EV_HSFAIL && ev.peer == c->peer) break;
    }
    if (!up) {
        tsync__tp_close(c->tp, c->peer);
        return tsync__err(TSYNC_EIO, "relay %s: no session within %d ms", c->addr, c->timeout_ms);
    }
    tsync__rblob rec;
    tsync__rmsg h;
    tsync__relay_hello(&h, &rec, c->shop_id, cert, cert_len);
    rc = send_msg(c, &h);
    while (!rc) {
        rc = recv_msg(c);
        if (rc) break;
        if (c->m.type == TSYNC__R_HAVE) break;
        if (c->m.type == TSYNC__R_ERR) rc = rerr(c, &c->m);
    }
    if (!rc) {
        /* The relay is who we dialled (its key pinned): what follows its answer is delivered. */
        rc = tsync__tp_peer_verified(c->tp, c->peer, NULL);
        if (rc) rc = tsync__err(rc, "relay %s: session lost", c->addr);
    }
    if (rc) tsync__tp_close(c->tp, c->peer);
    return rc;
}

int tsync__rclient_open(tsync__rclient **out, tsync_store *s, int timeout_ms,
                        const volatile sig_atomic_t *stop)
{
    *out = NULL;
    tsync__rclient *c = calloc(1, sizeof *c);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->timeout_ms = timeout_ms > 0 ? timeout_ms : 10000;
    c->stop = stop;
    c->next_req = 1;
    uint8_t *grant = NULL, *cert = NULL;
    size_t grant_len = 0, cert_len = 0;
    tsync__arena a = {0};
    int rc = tsync__trust_enrolled(s, c->shop_id);
    if (rc == 0) {
        rc = tsync__err(TSYNC_ENOTFOUND, "this database is not enrolled in a shop");
    } else if (rc == 1) {
        rc = tsync__trust_own_cert(s, &cert, &cert_len);
        if (rc == TSYNC_ENOTFOUND)
            tsync__err(rc, "this till has no certificate of its shop (enrol it first)");
        if (!rc) rc = tsync__grant_latest(s, &grant, &grant_len);
        if (rc == TSYNC_ENOTFOUND && cert)
            tsync__err(rc, "the shop has no relay grant (tillsync shop grant, then trust add)");
    }
    tsync__trust_rec g;
    char err[TSYNC__ERRLEN];
    if (!rc && tsync__trust_decode(grant, grant_len, &g, &a, err) != 0)
        rc = tsync__err(TSYNC_ECORRUPT, "the shop's relay grant: %s", err);
    if (!rc && g.kind != TSYNC__T_GRANT)
        rc = tsync__err(TSYNC_ECORRUPT, "the shop's relay grant is not a grant");
    if (!rc) {
        tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
        o.max_msg = TSYNC__RELAY_MSG_MAX;
        rc = tsync__tp_new(&c->tp, tsync__sync_secret_key(s), &o);
    }
    if (!rc) {
        rc = TSYNC_EIO;
        for (uint32_t i = 0; rc && i < g.u.grant.nrelays; i++)
            rc = try_relay(c, &g.u.grant.relays[i], cert, cert_len);
    }
    free(grant);
    free(cert);
    tsync__arena_free(&a);
    if (rc) {
        tsync__rclient_free(c);
        return rc;
    }
    *out = c;
    return 0;
}

int tsync__rclient_call(tsync__rclient *c, tsync__rmsg *m, const tsync__rmsg **ans)
{
    *ans = NULL;
    m->req = c->next_req++;
    int rc = send_msg(c, m);
    while (!rc) {
        rc = recv_msg(c);
        if (rc) break;
        if (c->m.req != m->req) continue; /* a push (req 0) or an answer given up on */
        if (c->m.type == TSYNC__R_ERR) return rerr(c, &c->m);
        *ans = &c->m;
        return 0;
    }
    return rc;
}

const char *tsync__rclient_addr(const tsync__rclient *c)
{
    return c->addr;
}

const uint8_t *tsync__rclient_shop(const tsync__rclient *c)
{
    return c->shop_id;
}

void tsync__rclient_free(tsync__rclient *c)
{
    if (!c) return;
    tsync__tp_free(c->tp);
    free(c->last);
    tsync__arena_free(&c->a);
    free(c);
}
