/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/attacker.c — see attacker.h.
 */
#include "tests/lib/attacker.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/trust.h"
#include "tests/lib/helpers.h"
#include "util/util.h"

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

void att_connect(att *a, const uint8_t sk[64], const nu_node *v, const uint8_t v_pk[32],
                 size_t max_msg)
{
    memset(a, 0, sizeof *a);
    tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
    o.max_msg = max_msg;
    /* Keep the receive high-water mark at its default whatever max_msg is: with a pipe of 2
     * messages libzmq 4.3.4 stops reading, and a reset by the node then makes its heartbeat timer
     * abort the process (stream_engine_base.cpp: Assertion failed: !_io_error). */
    o.rcv_queue_bytes = (size_t)1 << 40;
    /* No ZMTP heartbeats, as in the node's own transport: their TTL would ask V to drop a member
     * that is still encrypting a 64 MiB frame (seconds under the sanitizers) before it is sent. */
    o.heartbeat_ivl_ms = -1;
    int rc = tsync__tp_new(&a->tp, sk, &o);
    cr_assert_eq(rc, 0, "attacker transport: %s", errmsg());
    rc = tsync__tp_connect(a->tp, v->endpoint, v_pk, &a->peer);
    cr_assert_eq(rc, 0, "attacker connect: %s", errmsg());
}

static void att_event(att *a, const tsync__tp_event *ev)
{
    switch (ev->kind) {
    case TSYNC__TP_EV_UP:
        a->up = 1;
        a->ups++;
        break;
    case TSYNC__TP_EV_DOWN:
        a->up = 0;
        a->downs++;
        break;
    case TSYNC__TP_EV_HSFAIL:
        a->hsfail++;
        break;
    case TSYNC__TP_EV_MESSAGE: {
        tsync__arena ar = {0};
        tsync__msg m;
        char err[TSYNC__ERRLEN];
        if (tsync__wire_decode(ev->data, ev->len, &m, &ar, err) != 0) {
            a->got[0]++;
        } else {
            a->got[m.type]++;
            if (m.type == TSYNC__WIRE_ERROR) a->error_code = m.error.code;
            if (m.type == TSYNC__WIRE_PONG) a->pong = m.pong.echo_ms;
            /* The node's HELLO: take the session, so that whatever it sends next is seen. */
            if (ev->first && m.type == TSYNC__WIRE_HELLO)
                tsync__tp_peer_verified(a->tp, ev->peer, NULL);
        }
        tsync__arena_free(&ar);
        break;
    }
    }
}

void att_pump(att *a, int ms)
{
    int64_t end = nu_now_ms() + ms;
    do {
        tsync__tp_event ev;
        int rc = tsync__tp_poll(a->tp, 10, &ev);
        cr_assert_geq(rc, 0, "attacker poll: %s", errmsg());
        if (rc == 1) att_event(a, &ev);
    } while (nu_now_ms() < end);
}

void att_send(att *a, const void *buf, size_t len)
{
    int64_t end = nu_now_ms() + 10000;
    int rc;
    while ((rc = tsync__tp_send(a->tp, a->peer, buf, len)) == TSYNC_EBUSY && nu_now_ms() < end)
        att_pump(a, 10);
    cr_assert_eq(rc, 0, "attacker send of %zu bytes: %s", len, errmsg());
}

void att_send_msg(att *a, const tsync__msg *m)
{
    uint8_t *buf;
    size_t len;
    char err[TSYNC__ERRLEN];
    int rc = tsync__wire_encode(m, &buf, &len, err);
    cr_assert_eq(rc, 0, "encode %s: %s", tsync__wire_type_name(m->type), err);
    att_send(a, buf, len);
    free(buf);
}

void att_hello_fill(tsync__msg *m, const uint8_t *shop_id, const uint8_t *cert, size_t cert_len)
{
    memset(m, 0, sizeof *m);
    m->type = TSYNC__WIRE_HELLO;
    m->hello.version = TSYNC_WIRE_VERSION;
    if (shop_id) {
        m->hello.has_shop = true;
        memcpy(m->hello.shop, shop_id, TSYNC__SHOP_ID_BYTES);
        m->hello.cert = cert;
        m->hello.cert_len = cert_len;
    }
    m->hello.clock_ms = tsync__wall_ms();
}

void att_hello(att *a, const uint8_t *shop_id, const uint8_t *cert, size_t cert_len)
{
    tsync__msg m;
    att_hello_fill(&m, shop_id, cert, cert_len);
    att_send_msg(a, &m);
}

void att_free(att *a)
{
    tsync__tp_free(a->tp);
    a->tp = NULL;
}

void att_got_nothing(const att *a, const char *what)
{
    cr_assert_eq(a->got[TSYNC__WIRE_BATCHES], 0, "%s: the attacker received %d BATCHES", what,
                 a->got[TSYNC__WIRE_BATCHES]);
    cr_assert_eq(a->got[TSYNC__WIRE_CERTS], 0, "%s: the attacker received %d CERTS", what,
                 a->got[TSYNC__WIRE_CERTS]);
    cr_assert_eq(a->got[TSYNC__WIRE_ACK], 0, "%s: the attacker received %d ACKs", what,
                 a->got[TSYNC__WIRE_ACK]);
    cr_assert_eq(a->got[TSYNC__WIRE_SNAPSHOT_BEGIN] + a->got[TSYNC__WIRE_SNAPSHOT_CHUNK], 0,
                 "%s: the attacker received a snapshot", what);
}

/* ---------------------------------------------------------------- the attacker's batches */

static int grab(void *ctx, const tsync__run_piece *pc)
{
    adb *d = ctx;
    d->site = *pc->site;
    for (uint32_t i = 0; i < pc->n && d->n < 8; i++) {
        d->body[d->n] = malloc(pc->len[i]);
        memcpy(d->body[d->n], pc->body[i], pc->len[i]);
        d->len[d->n] = pc->len[i];
        const uint8_t *prev = d->n ? d->hash[d->n - 1] : (const uint8_t[TSYNC__HASH_BYTES]){0};
        tsync__batch_hash(prev, d->body[d->n], d->len[d->n], d->hash[d->n]);
        d->n++;
    }
    return 0;
}

void adb_open(adb *d, const char *dir, const char *name, const char *keyfile, int sales,
              int64_t future_ms)
{
    memset(d, 0, sizeof *d);
    snprintf(d->db, sizeof d->db, "%s/%s.db", dir, name);
    nu_make_db(d->db);
    if (keyfile) nu_enrol(d->db, keyfile, name);
    d->s = th_open(d->db);
    for (int i = 0; i < sales; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO sales VALUES('att-%s-%d', 'att', 'p0', 1)", name, i);
        th_exec(d->s, sql);
        if (future_ms) {
            snprintf(sql, sizeof sql, "UPDATE tsync_pending SET wall = wall + %lld",
                     (long long)future_ms);
            th_exec(d->s, sql);
        }
        cr_assert_eq(th_seal(d->s), 1);
    }
    if (sales) {
        int rc = tsync__sync_runs(d->s, NULL, 64u << 20, grab, d, NULL);
        cr_assert_eq(rc, 0, "runs: %s", errmsg());
        cr_assert_eq(d->n, sales, "the attacker's log has %d batches, want %d", d->n, sales);
    }
    if (keyfile) {
        int rc = tsync__trust_own_cert(d->s, &d->cert, &d->cert_len);
        cr_assert_eq(rc, 0, "own certificate: %s", errmsg());
    }
}

const uint8_t *adb_sk(adb *d)
{
    return tsync__sync_secret_key(d->s);
}

void adb_close(adb *d)
{
    for (int i = 0; i < d->n; i++) free(d->body[i]);
    free(d->cert);
    tsync_store_free(d->s);
    memset(d, 0, sizeof *d);
}

void run_build(run_msg *r, const adb *d, const tsync__bsite *as, uint64_t first_seq,
               const uint8_t *prev, const int *idx, int k)
{
    memset(r, 0, sizeof *r);
    r->m.type = TSYNC__WIRE_BATCHES;
    tsync__wire_batches *b = &r->m.batches;
    memcpy(b->site, as->site, TSYNC__SITE_BYTES);
    memcpy(b->pk, as->pk, TSYNC__PK_BYTES);
    memcpy(b->inc, as->inc, TSYNC__INC_BYTES);
    b->first_seq = first_seq;
    if (prev) memcpy(b->prev, prev, TSYNC__HASH_BYTES);
    for (int i = 0; i < k; i++) {
        r->body[i] = d->body[idx[i]];
        r->len[i] = d->len[idx[i]];
    }
    b->nbodies = (uint32_t)k;
    b->body = r->body;
    b->body_len = r->len;
}

void run_sign(run_msg *r, const uint8_t sk[64], const uint8_t origin[TSYNC__SITE_BYTES])
{
    tsync__wire_batches *b = &r->m.batches;
    uint8_t h[TSYNC__HASH_BYTES];
    memcpy(h, b->prev, sizeof h);
    for (uint32_t i = 0; i < b->nbodies; i++) tsync__batch_hash(h, b->body[i], b->body_len[i], h);
    tsync__batch_sign(sk, origin, b->first_seq + b->nbodies - 1, h, b->sig);
}
