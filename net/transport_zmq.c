/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/transport_zmq.c — the transport of net/transport.h on ZeroMQ with CURVE: one ROUTER bound for
 * the peers that dial us, one DEALER per peer we dial, a ZAP handler that decides who may finish a
 * handshake, and socket monitors that turn connection changes into UP / DOWN / HANDSHAKE_FAILED
 * events. Everything runs on the thread that owns the transport, inside tsync__tp_poll: there is
 * no helper thread, so nothing here locks.
 * Over 800 lines on purpose: the sockets, the ZAP handler and the monitors share the ordering rule
 * below (monitor events before a connection's messages), which splitting would scatter.
 *
 * Design notes (docs/TRANSPORT.md has the long form)
 * - Who sent a message is taken from the handshake, never from what the peer says. Our ZAP handler
 *   writes the client's CURVE key (hex) as the connection's User-Id, and every inbound message
 *   carries it. The ROUTER names connections itself: DEALERs do not set ZMQ_ROUTING_ID, because a
 *   self-chosen routing id is only a claim, and one admitted key could take another's id while it
 *   is offline and receive the replies meant for it. ROUTER-made ids are per connection and never
 *   shown to anyone, so a reply cannot reach another connection.
 * - A session is one connection. Each side's first message is its certificate (the sync layer
 *   checks it); until the caller calls tsync__tp_peer_verified, later messages of the session are
 *   dropped. A dialled peer gets a fresh DEALER per session: when a session ends the socket is
 *   closed with whatever it still held, so nothing queued for or from an old session can pass for
 *   the new session's certificate. libzmq's own reconnect (100 ms doubling to 2 s) covers a peer
 *   that is not there yet; our timer with the same backoff covers sessions that end.
 * - Message events are ordered after the monitor events that preceded them: after receiving a
 *   message we drain the socket's monitor before looking at the message. libzmq emits a
 *   connection's events from its I/O thread before that connection's later messages reach us.
 * - Back-pressure: every queue has a high-water mark and sends never block (ZMQ_DONTWAIT; ROUTER
 *   with ZMQ_ROUTER_MANDATORY so a full peer says EAGAIN instead of dropping silently).
 *   ZMQ_MAXMSGSIZE makes libzmq drop a connection that announces a larger message before
 *   allocating it.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#endif

#include <sodium.h>
#include <zmq.h>

#include "net/transport.h"
#include "util/util.h"

#define ZAP_ENDPOINT "inproc://zeromq.zap.01"
#define ZAP_DOMAIN   "tillsync"
#define OLD_RIDS     4   /* superseded connections of one inbound key we still recognise */
#define RECV_BUDGET  256 /* messages dropped per service round before other work gets a turn */
/* ZMQ_MAXMSGSIZE is checked on the encrypted frame: a CURVE MESSAGE command adds its name (8),
 * a nonce (8), a flags byte and a MAC (16) to the payload. Measured: a payload of exactly max_msg
 * was refused without this. */
#define CURVE_OVERHEAD 64

#define MON_EVENTS                                                                                 \
    (ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_SUCCEEDED |                \
     ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |                  \
     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

typedef struct {
    uint32_t id;
    int inbound;
    int revoked;
    int key_known;
    uint8_t ed_pk[32];
    uint8_t curve_pk[32];
    char address[TSYNC__TP_ADDR_LEN];

    /* the current session */
    int up;
    int verified;
    uint64_t nrx; /* messages seen in this session, delivered or not */

    /* dialled peers */
    char *endpoint;
    void *sock, *mon; /* DEALER of the current attempt and its monitor (PAIR) */
    uint32_t gen;     /* numbers the monitor endpoints of successive sockets */
    int failures;     /* sessions ended before being verified: the backoff exponent */
    int64_t retry_at; /* monotonic ms at which to open a new socket; 0: none due */

    /* peers that dialled us */
    uint8_t rid[256]; /* the ROUTER's id of the current connection */
    size_t rid_len;
    int fd;  /* its file descriptor (ZMQ_SRCFD), to match DISCONNECTED events */
    int dfd; /* a dialled peer's connection descriptor (monitor CONNECTED), for TCP_INFO */
    uint64_t old_rid[OLD_RIDS];
    int nold;

    uint64_t up_ms, down_ms, seen_ms;
    uint64_t up_order; /* inbound: orders the sessions of a key, oldest first */
    uint64_t rx, tx, slow, dropped;
    uint32_t sessions;
} peer;

typedef struct {
    tsync__tp_event ev;
    int holds_msg; /* the message is tp->msg */
} queued;

struct tsync__tp {
    tsync__tp_options o;
    int rcvhwm; /* hwm, lowered so that rcvhwm full-size messages fit rcv_queue_bytes */
    uint8_t curve_pk[32], curve_sk[32], ed_pk[32];
    void *ctx;
    void *zap;
    void *router, *router_mon;
    int epfd;

    peer **peers;
    size_t npeers, cap_peers;
    uint32_t next_id;
    uint64_t next_up; /* numbers inbound sessions as they come up (peer.up_order) */
    size_t ninbound;
    size_t rr; /* round-robin start among data sockets */

    uint8_t (*denied)[32]; /* revoked CURVE keys */
    size_t ndenied, cap_denied;
    unsigned zap_denials; /* denials we reported, whose AUTH monitor events we swallow */

    queued *q; /* ring of pending events */
    size_t qhead, qlen, qcap;

    zmq_msg_t msg;
    int msg_state; /* 0: none, 1: queued, 2: delivered (borrowed until the next poll) */

    zmq_pollitem_t *items;
    size_t cap_items;

    tsync__tp_stats st;
};

/* ---------------------------------------------------------------- small helpers */

static int zerr(int code, const char *what)
{
    return tsync__err(code, "transport: %s: %s", what, zmq_strerror(zmq_errno()));
}

static uint64_t rid_hash(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a: a collision only costs one stale message */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static void short_key(const uint8_t k[32], char out[17])
{
    tsync__hex(k, 8, out);
}

int tsync__tp_curve_of(const uint8_t ed_pk[32], uint8_t curve_pk[32])
{
    /* libsodium refuses small-order and non-canonical points, which have no CURVE twin. */
    if (!ed_pk || crypto_sign_ed25519_pk_to_curve25519(curve_pk, ed_pk) != 0)
        return tsync__err(TSYNC_EINVAL, "transport: not a valid Ed25519 public key");
    return 0;
}

/* The ZMQ_MAXMSGSIZE that admits every message of max_msg bytes and nothing much larger. */
static int64_t wire_max(const tsync__tp *tp)
{
    return tp->o.max_msg > (size_t)INT64_MAX - CURVE_OVERHEAD
               ? -1
               : (int64_t)(tp->o.max_msg + CURVE_OVERHEAD);
}

static int setopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

/* ---------------------------------------------------------------- peers */

static peer *find_peer(tsync__tp *tp, uint32_t id)
{
    for (size_t i = 0; i < tp->npeers; i++)
        if (tp->peers[i]->id == id) return tp->peers[i];
    return NULL;
}

static peer *find_inbound(tsync__tp *tp, const uint8_t curve[32])
{
    for (size_t i = 0; i < tp->npeers; i++)
        if (tp->peers[i]->inbound && !memcmp(tp->peers[i]->curve_pk, curve, 32))
            return tp->peers[i];
    return NULL;
}

/* The Ed25519 key behind a CURVE key, if any peer record has learnt it. */
static const uint8_t *known_ed(tsync__tp *tp, const uint8_t curve[32])
{
    for (size_t i = 0; i < tp->npeers; i++)
        if (tp->peers[i]->key_known && !memcmp(tp->peers[i]->curve_pk, curve, 32))
            return tp->peers[i]->ed_pk;
    return NULL;
}

static int is_denied(tsync__tp *tp, const uint8_t curve[32])
{
    for (size_t i = 0; i < tp->ndenied; i++)
        if (!memcmp(tp->denied[i], curve, 32)) return 1;
    return 0;
}

static peer *add_peer(tsync__tp *tp)
{
    if (tp->npeers == tp->cap_peers) {
        size_t cap = tp->cap_peers ? 2 * tp->cap_peers : 16;
        peer **np = realloc(tp->peers, cap * sizeof *np);
        if (!np) return NULL;
        tp->peers = np;
        tp->cap_peers = cap;
    }
    peer *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->id = ++tp->next_id;
    p->fd = -1;
    p->dfd = -1;
    tp->peers[tp->npeers++] = p;
    return p;
}

static void remove_peer(tsync__tp *tp, peer *p)
{
    for (size_t i = 0; i < tp->npeers; i++)
        if (tp->peers[i] == p) {
            tp->peers[i] = tp->peers[--tp->npeers];
            break;
        }
    if (p->inbound) tp->ninbound--;
    free(p->endpoint);
    free(p);
}

/* An inbound record that may be forgotten to make room: no session now, least recently seen. */
static peer *evictable(tsync__tp *tp)
{
    peer *best = NULL;
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *p = tp->peers[i];
        if (p->inbound && !p->up && (!best || p->seen_ms < best->seen_ms)) best = p;
    }
    return best;
}

/* ---------------------------------------------------------------- the event queue */

static queued *q_push(tsync__tp *tp)
{
    if (tp->qlen == tp->qcap) {
        size_t cap = tp->qcap ? 2 * tp->qcap : 16;
        queued *nq = malloc(cap * sizeof *nq);
        if (!nq) return NULL; /* the event is lost; the peer's state in peer_info stays right */
        for (size_t i = 0; i < tp->qlen; i++) nq[i] = tp->q[(tp->qhead + i) % tp->qcap];
        free(tp->q);
        tp->q = nq;
        tp->qcap = cap;
        tp->qhead = 0;
    }
    queued *e = &tp->q[(tp->qhead + tp->qlen++) % tp->qcap];
    memset(e, 0, sizeof *e);
    e->ev.at_ms = tsync__wall_ms();
    return e;
}

static queued *q_peer_event(tsync__tp *tp, const peer *p, int kind, int reason)
{
    queued *e = q_push(tp);
    if (!e) return NULL;
    e->ev.kind = kind;
    e->ev.reason = reason;
    e->ev.peer = p->id;
    e->ev.inbound = p->inbound;
    e->ev.key_known = p->key_known;
    memcpy(e->ev.ed_pk, p->ed_pk, 32);
    memcpy(e->ev.curve_pk, p->curve_pk, 32);
    memcpy(e->ev.address, p->address, sizeof e->ev.address);
    return e;
}

static void release_msg(tsync__tp *tp)
{
    if (tp->msg_state) zmq_msg_close(&tp->msg);
    tp->msg_state = 0;
}

/* Withdraws a queued, undelivered message of peer id (its session was closed by the caller). */
static void q_cancel_messages(tsync__tp *tp, uint32_t id)
{
    for (size_t i = 0; i < tp->qlen; i++) {
        queued *e = &tp->q[(tp->qhead + i) % tp->qcap];
        if (e->ev.kind == TSYNC__TP_EV_MESSAGE && e->ev.peer == id) {
            e->ev.kind = 0;
            if (e->holds_msg && tp->msg_state == 1) release_msg(tp);
            e->holds_msg = 0;
        }
    }
}

static int q_pop(tsync__tp *tp, tsync__tp_event *ev)
{
    while (tp->qlen) {
        queued *e = &tp->q[tp->qhead];
        tp->qhead = (tp->qhead + 1) % tp->qcap;
        tp->qlen--;
        if (!e->ev.kind) continue;
        *ev = e->ev;
        if (e->holds_msg) {
            ev->data = zmq_msg_data(&tp->msg);
            ev->len = zmq_msg_size(&tp->msg);
            tp->msg_state = 2;
        }
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- host event loop support */

static void ep_add(tsync__tp *tp, void *s)
{
#ifdef __linux__
    int fd;
    size_t len = sizeof fd;
    if (tp->epfd < 0 || !s || zmq_getsockopt(s, ZMQ_FD, &fd, &len) != 0) return;
    struct epoll_event e = {.events = EPOLLIN, .data.fd = fd};
    epoll_ctl(tp->epfd, EPOLL_CTL_ADD, fd, &e);
#else
    (void)tp, (void)s;
#endif
}

static void ep_del(tsync__tp *tp, void *s)
{
#ifdef __linux__
    int fd;
    size_t len = sizeof fd;
    if (tp->epfd < 0 || !s || zmq_getsockopt(s, ZMQ_FD, &fd, &len) != 0) return;
    epoll_ctl(tp->epfd, EPOLL_CTL_DEL, fd, NULL);
#else
    (void)tp, (void)s;
#endif
}

/* ---------------------------------------------------------------- monitors */

/* Starts a monitor on s at the inproc endpoint ep and returns the PAIR socket reading it. */
static void *monitor_open(tsync__tp *tp, void *s, const char *ep, int events)
{
    if (zmq_socket_monitor(s, ep, events) != 0) return NULL;
    void *m = zmq_socket(tp->ctx, ZMQ_PAIR);
    if (!m) return NULL;
    setopt_int(m, ZMQ_LINGER, 0);
    if (zmq_connect(m, ep) != 0) {
        zmq_socket_monitor(s, NULL, 0);
        zmq_close(m);
        return NULL;
    }
    return m;
}

/* Reads one monitor event without waiting. 1 with an event, 0 when there is none. */
static int monitor_read(void *m, uint16_t *event, uint32_t *value)
{
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, m, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return 0;
    }
    int ok = zmq_msg_size(&f) == 6;
    if (ok) {
        memcpy(event, zmq_msg_data(&f), 2);
        memcpy(value, (uint8_t *)zmq_msg_data(&f) + 2, 4);
    }
    /* The rest (the endpoint, or more in later versions) names our own side: skip it. */
    while (zmq_msg_more(&f)) {
        zmq_msg_close(&f);
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, m, ZMQ_DONTWAIT) < 0) break;
    }
    zmq_msg_close(&f);
    return ok;
}

static int hs_reason_of_protocol_error(uint32_t code)
{
    return code == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC ||
                   code == ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE
               ? TSYNC__TP_HS_CRYPTO
               : TSYNC__TP_HS_PROTOCOL;
}

/* ---------------------------------------------------------------- dialled peers */

static void dealer_close(tsync__tp *tp, peer *p)
{
    /* Stop the monitor before closing the PAIR that reads it: libzmq's I/O thread sends each
     * event with a blocking send while holding the socket's monitor mutex, and a PAIR without
     * its reader blocks for ever, so zmq_socket_monitor(NULL) would wait for that mutex. */
    if (p->sock) {
        ep_del(tp, p->sock);
        zmq_socket_monitor(p->sock, NULL, 0);
    }
    if (p->mon) {
        ep_del(tp, p->mon);
        zmq_close(p->mon);
        p->mon = NULL;
    }
    if (p->sock) {
        zmq_close(p->sock); /* ZMQ_LINGER 0: whatever it held goes with it */
        p->sock = NULL;
    }
}

static void schedule_retry(tsync__tp *tp, peer *p)
{
    int shift = p->failures < 16 ? p->failures : 16;
    int64_t d = (int64_t)tp->o.reconnect_ivl_ms << shift;
    if (d > tp->o.reconnect_ivl_max_ms) d = tp->o.reconnect_ivl_max_ms;
    p->failures++;
    p->retry_at = (int64_t)tsync__mono_ms() + d;
}

static int dealer_open(tsync__tp *tp, peer *p)
{
    char ep[64];
    void *s = zmq_socket(tp->ctx, ZMQ_DEALER);
    if (!s) return zerr(TSYNC_ERROR, "cannot create a socket");
    int64_t maxmsg = wire_max(tp);
    if (setopt_int(s, ZMQ_LINGER, 0) || setopt_int(s, ZMQ_SNDHWM, tp->o.hwm) ||
        setopt_int(s, ZMQ_RCVHWM, tp->rcvhwm) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        setopt_int(s, ZMQ_RECONNECT_IVL, tp->o.reconnect_ivl_ms) ||
        setopt_int(s, ZMQ_RECONNECT_IVL_MAX, tp->o.reconnect_ivl_max_ms) ||
        setopt_int(s, ZMQ_HEARTBEAT_IVL, tp->o.heartbeat_ivl_ms < 0 ? 0 : tp->o.heartbeat_ivl_ms) ||
        setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, tp->o.heartbeat_timeout_ms) ||
        setopt_int(s, ZMQ_HEARTBEAT_TTL, tp->o.heartbeat_ttl_ms) ||
        setopt_int(s, ZMQ_HANDSHAKE_IVL, tp->o.handshake_ms) ||
        /* Queue only on a finished handshake: a message sent while no session exists fails
         * at once instead of waiting to be the first thing the next session carries. */
        setopt_int(s, ZMQ_IMMEDIATE, 1) ||
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, p->curve_pk, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, tp->curve_pk, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, tp->curve_sk, 32)) {
        int rc = zerr(TSYNC_ERROR, "cannot configure a peer socket");
        zmq_close(s);
        return rc;
    }
    snprintf(ep, sizeof ep, "inproc://tsync-tp-mon-%u-%u", p->id, ++p->gen);
    void *m = monitor_open(tp, s, ep, MON_EVENTS);
    if (!m) {
        int rc = zerr(TSYNC_ERROR, "cannot monitor a peer socket");
        zmq_close(s);
        return rc;
    }
    if (zmq_connect(s, p->endpoint) != 0) {
        int rc = zerr(TSYNC_EINVAL, "cannot dial the peer's endpoint");
        zmq_socket_monitor(s, NULL, 0);
        zmq_close(m);
        zmq_close(s);
        return rc;
    }
    p->sock = s;
    p->mon = m;
    p->retry_at = 0;
    ep_add(tp, s);
    ep_add(tp, m);
    return 0;
}

/* The session of p ended or never started: report it (once), drop the socket, and come back. */
static void session_down(tsync__tp *tp, peer *p, int reason)
{
    if (p->up) {
        p->up = 0;
        p->down_ms = tsync__wall_ms();
        q_peer_event(tp, p, TSYNC__TP_EV_DOWN, reason);
    }
    if (p->inbound) return;
    dealer_close(tp, p);
    if (!p->revoked && reason != TSYNC__TP_DOWN_CLOSED) schedule_retry(tp, p);
}

static void hs_failed(tsync__tp *tp, const peer *p, int reason, uint32_t code)
{
    tp->st.handshake_failed++;
    queued *e = p ? q_peer_event(tp, p, TSYNC__TP_EV_HSFAIL, reason) : q_push(tp);
    if (!e) return;
    if (!p) e->ev.inbound = 1; /* only the listening socket reports failures without a peer */
    e->ev.kind = TSYNC__TP_EV_HSFAIL;
    e->ev.reason = reason;
    e->ev.code = code;
}

/* Handles the monitor events of a dialled peer's socket; may close the socket. */
static void dealer_monitor(tsync__tp *tp, peer *p)
{
    uint16_t event;
    uint32_t value;
    while (p->mon && monitor_read(p->mon, &event, &value)) {
        switch (event) {
        case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: {
            int events;
            size_t len = sizeof events;
            p->up = 1;
            p->verified = 0;
            p->nrx = 0;
            p->up_ms = tsync__wall_ms();
            p->sessions++;
            /* libzmq attached the session's pipe before emitting this event, but our socket
             * learns of it only when it next processes commands, and a send may skip that
             * (it throttles): do it now, so a send right after UP finds the pipe. */
            zmq_getsockopt(p->sock, ZMQ_EVENTS, &events, &len);
            q_peer_event(tp, p, TSYNC__TP_EV_UP, 0);
            break;
        }
        case ZMQ_EVENT_CONNECTED:
            p->dfd = (int)value;
            break;
        case ZMQ_EVENT_DISCONNECTED:
            /* Before a handshake finished, libzmq redials by itself with its backoff. */
            p->dfd = -1;
            if (p->up) session_down(tp, p, TSYNC__TP_DOWN_LOST);
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            /* The server hung up during the handshake: what a CURVE server does when our
             * HELLO does not decrypt, i.e. we hold the wrong server key. libzmq redials. */
            hs_failed(tp, p, TSYNC__TP_HS_DROPPED, value);
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            hs_failed(tp, p,
                      event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH ? TSYNC__TP_HS_REFUSED
                                                               : hs_reason_of_protocol_error(value),
                      value);
            /* libzmq gives up on an endpoint after these; we retry with our backoff, since a
             * refusal can end (a certificate renewed, a revocation undone by the admin). */
            session_down(tp, p, TSYNC__TP_DOWN_LOST);
            break;
        default:
            break;
        }
    }
}

static void run_timers(tsync__tp *tp)
{
    int64_t now = (int64_t)tsync__mono_ms();
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *p = tp->peers[i];
        if (p->inbound || p->sock || !p->retry_at || p->retry_at > now) continue;
        if (dealer_open(tp, p) != 0) schedule_retry(tp, p);
    }
}

/* ---------------------------------------------------------------- peers that dialled us */

static void router_monitor(tsync__tp *tp)
{
    uint16_t event;
    uint32_t value;
    while (tp->router_mon && monitor_read(tp->router_mon, &event, &value)) {
        switch (event) {
        case ZMQ_EVENT_DISCONNECTED:
            for (size_t i = 0; i < tp->npeers; i++) {
                peer *p = tp->peers[i];
                if (p->inbound && p->up && p->fd == (int)value) {
                    p->fd = -1;
                    session_down(tp, p, TSYNC__TP_DOWN_LOST);
                }
            }
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH:
            /* Our own ZAP denial, already reported with the key it named. */
            if (tp->zap_denials) {
                tp->zap_denials--;
                break;
            }
            hs_failed(tp, NULL, TSYNC__TP_HS_DENIED, value);
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL:
            hs_failed(tp, NULL, hs_reason_of_protocol_error(value), value);
            break;
        case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL:
            hs_failed(tp, NULL, TSYNC__TP_HS_DROPPED, value);
            break;
        default:
            break;
        }
    }
}

/* Cuts the connection of an inbound session. A ROUTER cannot close one connection, so we shut
 * its socket down under libzmq, which then sees an ordinary disconnect and cleans up. The fd is
 * still this connection's: we drained the monitor first, and libzmq reports a disconnect before
 * it closes (and could reuse) the descriptor. */
static void inbound_cut(tsync__tp *tp, peer *p, int reason)
{
    router_monitor(tp);
    if (p->up && p->fd >= 0) shutdown(p->fd, SHUT_RDWR);
    p->fd = -1;
    session_down(tp, p, reason);
}

/* ---------------------------------------------------------------- ZAP */

static int zap_can_admit_new(tsync__tp *tp)
{
    return tp->ninbound < (size_t)tp->o.max_inbound || evictable(tp) != NULL;
}

/* reqid: the request's id frame, or NULL when the request was too short to have one. */
static void zap_reply(tsync__tp *tp, zmq_msg_t *reqid, const char *status, const char *text,
                      const char *user)
{
    zmq_send(tp->zap, "1.0", 3, ZMQ_SNDMORE);
    if (reqid)
        zmq_send(tp->zap, zmq_msg_data(reqid), zmq_msg_size(reqid), ZMQ_SNDMORE);
    else
        zmq_send(tp->zap, "", 0, ZMQ_SNDMORE);
    zmq_send(tp->zap, status, strlen(status), ZMQ_SNDMORE);
    zmq_send(tp->zap, text, strlen(text), ZMQ_SNDMORE);
    zmq_send(tp->zap, user, strlen(user), ZMQ_SNDMORE);
    zmq_send(tp->zap, "", 0, 0);
}

/* Answers one ZAP request, if one is waiting. 1 when one was answered. */
static int zap_serve_one(tsync__tp *tp)
{
    /* version, request id, domain, address, identity, mechanism, credentials */
    zmq_msg_t f[7];
    int n = 0, more = 1;
    zmq_msg_init(&f[0]);
    if (zmq_msg_recv(&f[0], tp->zap, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f[0]);
        return 0;
    }
    n = 1;
    more = zmq_msg_more(&f[0]);
    while (more) {
        zmq_msg_t x;
        zmq_msg_t *t = n < 7 ? &f[n] : &x;
        zmq_msg_init(t);
        if (zmq_msg_recv(t, tp->zap, 0) < 0) {
            zmq_msg_close(t);
            break;
        }
        more = zmq_msg_more(t);
        if (n < 7)
            n++;
        else
            zmq_msg_close(t), n = 8; /* too many frames: malformed */
    }

    int nf = n < 7 ? n : 7;
    if (n != 7 || zmq_msg_size(&f[5]) != 5 || memcmp(zmq_msg_data(&f[5]), "CURVE", 5) ||
        zmq_msg_size(&f[6]) != 32) {
        /* Only sockets of our own context can ask; this is a bug, not an attack. A REP socket
         * must answer before it can receive again, so answer even without a request id. */
        zap_reply(tp, nf >= 2 ? &f[1] : NULL, "500", "malformed ZAP request", "");
        tp->st.denied++;
        for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
        return 1;
    }

    uint8_t curve[32];
    char address[TSYNC__TP_ADDR_LEN];
    size_t al = zmq_msg_size(&f[3]) < sizeof address ? zmq_msg_size(&f[3]) : sizeof address - 1;
    memcpy(curve, zmq_msg_data(&f[6]), 32);
    memcpy(address, zmq_msg_data(&f[3]), al);
    address[al] = 0;

    const uint8_t *ed = known_ed(tp, curve);
    const char *why = NULL;
    if (is_denied(tp, curve))
        why = "revoked";
    else if (!find_inbound(tp, curve) && !zap_can_admit_new(tp))
        why = "too many peers";
    else if (tp->o.admit && !tp->o.admit(tp->o.admit_ctx, curve, ed, address))
        why = "not admitted";

    if (why) {
        tp->st.denied++;
        tp->zap_denials++;
        queued *e = q_push(tp);
        if (e) {
            peer *p = find_inbound(tp, curve);
            e->ev.kind = TSYNC__TP_EV_HSFAIL;
            e->ev.reason = TSYNC__TP_HS_DENIED;
            e->ev.code = 400;
            e->ev.inbound = 1;
            e->ev.peer = p ? p->id : 0;
            memcpy(e->ev.curve_pk, curve, 32);
            if (ed) memcpy(e->ev.ed_pk, ed, 32), e->ev.key_known = 1;
            memcpy(e->ev.address, address, al + 1);
        }
        zap_reply(tp, &f[1], "400", why, "");
    } else {
        char user[65];
        tsync__hex(curve, 32, user);
        zap_reply(tp, &f[1], "200", "OK", user);
    }
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
    return 1;
}

/* ---------------------------------------------------------------- receiving */

/* Reads and drops the remaining frames of a message whose first frame is in m. */
static void drain_more(void *s, zmq_msg_t *m)
{
    while (zmq_msg_more(m)) {
        zmq_msg_close(m);
        zmq_msg_init(m);
        if (zmq_msg_recv(m, s, ZMQ_DONTWAIT) < 0) break;
    }
}

/* Delivers tp->msg as a message of p's session, or drops it. 1 when queued. */
static int accept_msg(tsync__tp *tp, peer *p)
{
    if (zmq_msg_size(&tp->msg) > tp->o.max_msg) {
        /* libzmq's own limit includes the CURVE framing and so lets through a few bytes more;
         * past max_msg the peer breaks the protocol like one libzmq cuts off, and so is cut. */
        tp->st.dropped_oversize++;
        p->dropped++;
        if (p->inbound)
            inbound_cut(tp, p, TSYNC__TP_DOWN_OVERSIZE);
        else
            session_down(tp, p, TSYNC__TP_DOWN_OVERSIZE);
        return 0;
    }
    int first = p->nrx == 0;
    p->nrx++;
    if (!first && !p->verified) {
        tp->st.dropped_unverified++;
        p->dropped++;
        return 0;
    }
    queued *e = q_peer_event(tp, p, TSYNC__TP_EV_MESSAGE, 0);
    if (!e) return 0;
    e->ev.first = first;
    e->holds_msg = 1;
    p->rx++;
    p->seen_ms = tsync__wall_ms();
    tp->st.rx++;
    tp->msg_state = 1;
    return 1;
}

static void remember_old_rid(peer *p)
{
    if (!p->rid_len) return;
    p->old_rid[p->nold++ % OLD_RIDS] = rid_hash(p->rid, p->rid_len);
}

static int is_old_rid(const peer *p, uint64_t h)
{
    int n = p->nold < OLD_RIDS ? p->nold : OLD_RIDS;
    for (int i = 0; i < n; i++)
        if (p->old_rid[i] == h) return 1;
    return 0;
}

/* The record of the inbound connection r (routing id, rl bytes) of key curve: the record whose
 * connection it is; for a new connection, a record of the key without a session, else NULL
 * (a new record is due) while the key has fewer than sessions_per_key records, else the record
 * of the key's oldest session, which the new one supersedes. *stale: r is a connection the key
 * had before, already superseded or cut (NULL returned). */
static peer *inbound_of(tsync__tp *tp, const uint8_t curve[32], const uint8_t *r, size_t rl,
                        int *stale)
{
    uint64_t h = rid_hash(r, rl);
    peer *idle = NULL, *oldest = NULL;
    int n = 0;
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *p = tp->peers[i];
        if (!p->inbound || memcmp(p->curve_pk, curve, 32)) continue;
        if (p->rid_len == rl && !memcmp(p->rid, r, rl)) return p;
        if (is_old_rid(p, h)) {
            p->dropped++;
            *stale = 1;
            return NULL;
        }
        n++;
        if (!p->up && !idle) idle = p;
        if (p->up && (!oldest || p->up_order < oldest->up_order)) oldest = p;
    }
    if (idle) return idle;
    return n < (tp->o.sessions_per_key > 1 ? tp->o.sessions_per_key : 1) ? NULL : oldest;
}

/* One message from the ROUTER. Returns 1 when an event was queued, 0 when it was dropped, -1
 * when there was none. */
static int recv_inbound(tsync__tp *tp)
{
    zmq_msg_t rid;
    zmq_msg_init(&rid);
    if (zmq_msg_recv(&rid, tp->router, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&rid);
        return -1;
    }
    if (!zmq_msg_more(&rid)) { /* a ROUTER always prefixes the routing id: cannot happen */
        zmq_msg_close(&rid);
        tp->st.dropped_malformed++;
        return 0;
    }
    zmq_msg_init(&tp->msg);
    tp->msg_state = 1; /* owned until released or handed to the caller */
    if (zmq_msg_recv(&tp->msg, tp->router, ZMQ_DONTWAIT) < 0 || zmq_msg_more(&tp->msg)) {
        drain_more(tp->router, &tp->msg);
        release_msg(tp);
        zmq_msg_close(&rid);
        tp->st.dropped_malformed++;
        return 0;
    }

    /* Events that happened before this message (its connection's accept, an older
     * connection's disconnect on a descriptor it now reuses) must be applied first. */
    router_monitor(tp);

    int out = 0;
    uint8_t curve[32];
    const char *user = zmq_msg_gets(&tp->msg, "User-Id");
    const char *addr = zmq_msg_gets(&tp->msg, "Peer-Address");
    int fd = zmq_msg_get(&tp->msg, ZMQ_SRCFD);
    const uint8_t *r = zmq_msg_data(&rid);
    size_t rl = zmq_msg_size(&rid);
    peer *p = NULL;

    if (!user || tsync__unhex(user, curve, 32) != 0 || rl == 0 || rl > sizeof p->rid) {
        /* No key from our ZAP handler (or an impossible routing id): never deliver it. */
        tp->st.dropped_malformed++;
        goto drop;
    }
    if (is_denied(tp, curve)) {
        tp->st.dropped_revoked++;
        goto drop;
    }
    int stale = 0;
    p = inbound_of(tp, curve, r, rl, &stale);
    if (stale) {
        tp->st.dropped_stale++; /* a superseded connection's message */
        goto drop;
    }
    if (!p) {
        if (tp->ninbound >= (size_t)tp->o.max_inbound) {
            peer *old = evictable(tp);
            if (!old) {
                tp->st.dropped_full++;
                goto drop;
            }
            remove_peer(tp, old);
        }
        if (!(p = add_peer(tp))) {
            tp->st.dropped_full++;
            goto drop;
        }
        p->inbound = 1;
        tp->ninbound++;
        memcpy(p->curve_pk, curve, 32);
        const uint8_t *ed = known_ed(tp, curve);
        if (ed) memcpy(p->ed_pk, ed, 32), p->key_known = 1;
    }

    int same = p->rid_len == rl && !memcmp(p->rid, r, rl);
    if (same && !p->up) {
        tp->st.dropped_stale++; /* sent before its connection broke or was cut */
        p->dropped++;
        goto drop;
    }
    if (!same) {
        /* A new connection from this key: a new session. When it takes the record of a live
         * one (the key's only session, or its oldest past sessions_per_key), that session is
         * superseded. Its connection is still open (its disconnect would have been applied
         * above), so cut it: one key holds at most sessions_per_key connections' worth of our
         * queues, not one per redial. */
        if (p->up) {
            if (p->fd >= 0 && p->fd != fd) shutdown(p->fd, SHUT_RDWR);
            p->fd = -1;
            session_down(tp, p, TSYNC__TP_DOWN_SUPERSEDED);
        }
        remember_old_rid(p);
        if (fd >= 0) /* no two live connections share a descriptor: whoever had it is gone */
            for (size_t i = 0; i < tp->npeers; i++) {
                peer *o = tp->peers[i];
                if (o != p && o->inbound && o->up && o->fd == fd) {
                    o->fd = -1;
                    session_down(tp, o, TSYNC__TP_DOWN_LOST);
                }
            }
        memcpy(p->rid, r, rl);
        p->rid_len = rl;
        p->fd = fd;
        p->up = 1;
        p->up_order = ++tp->next_up;
        p->verified = 0;
        p->nrx = 0;
        p->up_ms = tsync__wall_ms();
        p->sessions++;
        snprintf(p->address, sizeof p->address, "%s", addr ? addr : "");
        q_peer_event(tp, p, TSYNC__TP_EV_UP, 0);
    }
    out = accept_msg(tp, p);
    zmq_msg_close(&rid);
    if (!out) release_msg(tp);
    return out;

drop:
    zmq_msg_close(&rid);
    release_msg(tp);
    return 0;
}

/* One message from a dialled peer's socket; results as recv_inbound. */
static int recv_outbound(tsync__tp *tp, peer *p)
{
    zmq_msg_init(&tp->msg);
    tp->msg_state = 1;
    if (zmq_msg_recv(&tp->msg, p->sock, ZMQ_DONTWAIT) < 0) {
        release_msg(tp);
        return -1;
    }
    if (zmq_msg_more(&tp->msg)) {
        drain_more(p->sock, &tp->msg);
        release_msg(tp);
        tp->st.dropped_malformed++;
        return 0;
    }
    dealer_monitor(tp, p); /* see recv_inbound; this may end the session and close the socket */
    if (!p->up) {
        tp->st.dropped_stale++;
        p->dropped++;
        release_msg(tp);
        return 0;
    }
    int out = accept_msg(tp, p);
    if (!out) release_msg(tp);
    return out;
}

/* Does all the work that needs no waiting: ZAP requests, monitor events, and messages until one
 * is queued. Returns 1 when it stopped with messages possibly left (it dropped RECV_BUDGET), so
 * that "no event" is only ever reported when every socket was found empty. */
static int service(tsync__tp *tp)
{
    while (zap_serve_one(tp)) {
    }
    router_monitor(tp);
    for (size_t i = 0; i < tp->npeers; i++)
        if (tp->peers[i]->mon) dealer_monitor(tp, tp->peers[i]);
    if (tp->msg_state) return 0; /* one message at a time: the caller holds it or will */

    /* Sources: 0 is the ROUTER, 1..npeers the dialled peers; start where we left off. */
    size_t nsrc = tp->npeers + 1;
    int budget = RECV_BUDGET;
    int idle = 0;
    for (size_t k = tp->rr % nsrc; budget > 0 && idle < (int)nsrc; k = (k + 1) % nsrc) {
        int rc = -1;
        if (k == 0) {
            if (tp->router) rc = recv_inbound(tp);
        } else if (k - 1 < tp->npeers) {
            peer *p = tp->peers[k - 1];
            if (!p->inbound && p->sock) rc = recv_outbound(tp, p);
        }
        if (rc == 1) {
            tp->rr = k + 1;
            return 0;
        }
        if (rc < 0) {
            idle++;
        } else {
            idle = 0;
            budget--;
        }
        nsrc = tp->npeers + 1; /* an eviction may have shrunk the table */
    }
    return budget == 0;
}

static int next_timer(tsync__tp *tp, int64_t now)
{
    int64_t best = -1;
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *p = tp->peers[i];
        if (p->inbound || p->sock || !p->retry_at) continue;
        int64_t d = p->retry_at > now ? p->retry_at - now : 0;
        if (best < 0 || d < best) best = d;
    }
    return best > INT32_MAX ? INT32_MAX : (int)best;
}

/* ---------------------------------------------------------------- public functions */

int tsync__tp_poll(tsync__tp *tp, int timeout_ms, tsync__tp_event *ev)
{
    if (!tp || !ev) return tsync__err(TSYNC_EINVAL, "transport: poll needs a transport and event");
    if (tp->msg_state == 2) release_msg(tp);
    int64_t deadline = timeout_ms < 0 ? -1 : (int64_t)tsync__mono_ms() + timeout_ms;
    for (;;) {
        if (q_pop(tp, ev)) return 1;
        run_timers(tp);
        int more = service(tp);
        if (tp->qlen || more) continue;

        int64_t now = (int64_t)tsync__mono_ms();
        if (deadline >= 0 && now >= deadline) return 0;
        int64_t wait = deadline < 0 ? -1 : deadline - now;
        int t = next_timer(tp, now);
        if (t >= 0 && (wait < 0 || t < wait)) wait = t;

        size_t need = 3 + 2 * tp->npeers, n = 0;
        if (need > tp->cap_items) {
            zmq_pollitem_t *ni = realloc(tp->items, need * sizeof *ni);
            if (!ni) return tsync__err(TSYNC_ENOMEM, "transport: out of memory");
            tp->items = ni;
            tp->cap_items = need;
        }
        void *socks[3] = {tp->zap, tp->router, tp->router_mon};
        for (int i = 0; i < 3; i++)
            if (socks[i]) tp->items[n++] = (zmq_pollitem_t){socks[i], 0, ZMQ_POLLIN, 0};
        for (size_t i = 0; i < tp->npeers; i++) {
            peer *p = tp->peers[i];
            if (p->sock) tp->items[n++] = (zmq_pollitem_t){p->sock, 0, ZMQ_POLLIN, 0};
            if (p->mon) tp->items[n++] = (zmq_pollitem_t){p->mon, 0, ZMQ_POLLIN, 0};
        }
        if (zmq_poll(tp->items, (int)n, (long)wait) < 0) {
            if (zmq_errno() == EINTR) return 0;
            return zerr(TSYNC_ERROR, "poll");
        }
    }
}

int tsync__tp_new(tsync__tp **out, const uint8_t ed_sk[64], const tsync__tp_options *opts)
{
    if (!out || !ed_sk) return tsync__err(TSYNC_EINVAL, "transport: no key");
    *out = NULL;
    tsync__tp_options o = TSYNC__TP_OPTIONS_INIT;
    if (opts) {
        if (opts->version != TSYNC__TP_OPTIONS_VERSION)
            return tsync__err(TSYNC_EINVAL, "transport: options version %u is not %u",
                              opts->version, TSYNC__TP_OPTIONS_VERSION);
        o = *opts;
    }
    if (o.hwm < 0 || o.reconnect_ivl_ms < 0 || o.reconnect_ivl_max_ms < 0 ||
        o.heartbeat_ivl_ms < -1 || o.heartbeat_timeout_ms < 0 || o.heartbeat_ttl_ms < 0 ||
        o.handshake_ms < 0 || o.max_inbound < 0 || o.sessions_per_key < 0)
        return tsync__err(TSYNC_EINVAL, "transport: negative option");
    if (!o.max_msg) o.max_msg = TSYNC__TP_MAX_MSG_DEFAULT;
    if (!o.hwm) o.hwm = 1000;
    if (!o.reconnect_ivl_ms) o.reconnect_ivl_ms = 100;
    if (!o.reconnect_ivl_max_ms) o.reconnect_ivl_max_ms = 2000;
    if (o.reconnect_ivl_max_ms < o.reconnect_ivl_ms) o.reconnect_ivl_max_ms = o.reconnect_ivl_ms;
    if (!o.heartbeat_ivl_ms) o.heartbeat_ivl_ms = 500;
    if (!o.heartbeat_timeout_ms) o.heartbeat_timeout_ms = 1500;
    if (!o.heartbeat_ttl_ms) o.heartbeat_ttl_ms = 3000;
    if (!o.handshake_ms) o.handshake_ms = 5000;
    if (!o.max_inbound) o.max_inbound = 1024;
    if (!o.rcv_queue_bytes) o.rcv_queue_bytes = (size_t)256 << 20;

    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    if (!zmq_has("curve"))
        return tsync__err(TSYNC_EUNSUPPORTED, "transport: libzmq was built without CURVE");

    tsync__tp *tp = calloc(1, sizeof *tp);
    if (!tp) return tsync__err(TSYNC_ENOMEM, "transport: out of memory");
    tp->o = o;
    tp->epfd = -1;
    /* libzmq counts messages, not bytes: hwm messages of max_msg bytes each could be gigabytes
     * that a peer makes us buffer while the owner is busy. Small messages keep the full hwm in
     * practice (sends are bounded by our own hwm; the receive side only needs a few in flight
     * to keep up, measured: 15 behaves like 1000 for 200-byte messages). */
    size_t fit = o.rcv_queue_bytes / o.max_msg;
    tp->rcvhwm = fit < (size_t)o.hwm ? (fit < 2 ? 2 : (int)fit) : o.hwm;
    memcpy(tp->ed_pk, ed_sk + 32, 32); /* libsodium's secret key is seed || public key */
    if (crypto_sign_ed25519_pk_to_curve25519(tp->curve_pk, tp->ed_pk) != 0 ||
        crypto_sign_ed25519_sk_to_curve25519(tp->curve_sk, ed_sk) != 0) {
        free(tp);
        return tsync__err(TSYNC_EINVAL, "transport: the device key is not a valid Ed25519 key");
    }

    /* A context per transport: the ZAP endpoint is per context, and two nodes in one process
     * (tests, an embedding app) must not answer each other's handshakes. */
    tp->ctx = zmq_ctx_new();
    if (!tp->ctx) {
        int rc = zerr(TSYNC_ERROR, "cannot create a ZeroMQ context");
        sodium_memzero(tp->curve_sk, sizeof tp->curve_sk);
        free(tp);
        return rc;
    }
    zmq_ctx_set(tp->ctx, ZMQ_BLOCKY, 0);

    /* The ZAP handler exists before any socket is bound: without one, a CURVE server admits
     * every client key. */
    tp->zap = zmq_socket(tp->ctx, ZMQ_REP);
    if (!tp->zap || setopt_int(tp->zap, ZMQ_LINGER, 0) || zmq_bind(tp->zap, ZAP_ENDPOINT) != 0) {
        int rc = zerr(TSYNC_ERROR, "cannot start the ZAP handler");
        tsync__tp_free(tp);
        return rc;
    }
    *out = tp;
    return 0;
}

void tsync__tp_free(tsync__tp *tp)
{
    if (!tp) return;
    release_msg(tp);
    for (size_t i = 0; i < tp->npeers; i++) {
        dealer_close(tp, tp->peers[i]);
        free(tp->peers[i]->endpoint);
        free(tp->peers[i]);
    }
    if (tp->router) zmq_socket_monitor(tp->router, NULL, 0); /* before its reader goes */
    if (tp->router_mon) zmq_close(tp->router_mon);
    if (tp->router) zmq_close(tp->router);
    if (tp->zap) zmq_close(tp->zap);
    if (tp->ctx) zmq_ctx_term(tp->ctx); /* prompt: every socket has ZMQ_LINGER 0 */
    if (tp->epfd >= 0) close(tp->epfd);
    sodium_memzero(tp->curve_sk, sizeof tp->curve_sk);
    free(tp->peers);
    free(tp->denied);
    free(tp->q);
    free(tp->items);
    free(tp);
}

static int router_open(tsync__tp *tp)
{
    void *s = zmq_socket(tp->ctx, ZMQ_ROUTER);
    if (!s) return zerr(TSYNC_ERROR, "cannot create the listening socket");
    int64_t maxmsg = wire_max(tp);
    if (setopt_int(s, ZMQ_LINGER, 0) || setopt_int(s, ZMQ_SNDHWM, tp->o.hwm) ||
        setopt_int(s, ZMQ_RCVHWM, tp->rcvhwm) ||
        zmq_setsockopt(s, ZMQ_MAXMSGSIZE, &maxmsg, sizeof maxmsg) ||
        setopt_int(s, ZMQ_HEARTBEAT_IVL, tp->o.heartbeat_ivl_ms < 0 ? 0 : tp->o.heartbeat_ivl_ms) ||
        setopt_int(s, ZMQ_HEARTBEAT_TIMEOUT, tp->o.heartbeat_timeout_ms) ||
        setopt_int(s, ZMQ_HEARTBEAT_TTL, tp->o.heartbeat_ttl_ms) ||
        setopt_int(s, ZMQ_HANDSHAKE_IVL, tp->o.handshake_ms) ||
        /* A full or vanished peer makes send fail instead of silently dropping. */
        setopt_int(s, ZMQ_ROUTER_MANDATORY, 1) || setopt_int(s, ZMQ_CURVE_SERVER, 1) ||
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, tp->curve_pk, 32) ||
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, tp->curve_sk, 32) ||
        zmq_setsockopt(s, ZMQ_ZAP_DOMAIN, ZAP_DOMAIN, strlen(ZAP_DOMAIN))) {
        int rc = zerr(TSYNC_ERROR, "cannot configure the listening socket");
        zmq_close(s);
        return rc;
    }
    void *m = monitor_open(tp, s, "inproc://tsync-tp-mon-router", MON_EVENTS);
    if (!m) {
        int rc = zerr(TSYNC_ERROR, "cannot monitor the listening socket");
        zmq_close(s);
        return rc;
    }
    tp->router = s;
    tp->router_mon = m;
    ep_add(tp, s);
    ep_add(tp, m);
    return 0;
}

int tsync__tp_bind(tsync__tp *tp, const char *endpoint, char *actual, size_t n)
{
    if (!tp || !endpoint) return tsync__err(TSYNC_EINVAL, "transport: no endpoint to listen on");
    if (!tp->router) {
        int rc = router_open(tp);
        if (rc) return rc;
    }
    if (zmq_bind(tp->router, endpoint) != 0) {
        int e = zmq_errno();
        return tsync__err(e == EADDRINUSE || e == EADDRNOTAVAIL || e == EACCES ? TSYNC_EIO
                                                                               : TSYNC_EINVAL,
                          "transport: cannot listen on %s: %s", endpoint, zmq_strerror(e));
    }
    if (actual && n) {
        char buf[256];
        size_t len = sizeof buf;
        if (zmq_getsockopt(tp->router, ZMQ_LAST_ENDPOINT, buf, &len) != 0) buf[0] = 0;
        snprintf(actual, n, "%s", buf);
    }
    return 0;
}

int tsync__tp_connect(tsync__tp *tp, const char *endpoint, const uint8_t peer_ed_pk[32],
                      uint32_t *peer_id)
{
    uint8_t curve[32];
    if (!tp || !endpoint || !peer_ed_pk)
        return tsync__err(TSYNC_EINVAL, "transport: connect needs an endpoint and a key");
    if (strlen(endpoint) >= TSYNC__TP_ADDR_LEN)
        return tsync__err(TSYNC_EINVAL, "transport: endpoint too long: %.40s...", endpoint);
    int rc = tsync__tp_curve_of(peer_ed_pk, curve);
    if (rc) return rc;
    char hex[17];
    short_key(peer_ed_pk, hex);
    if (is_denied(tp, curve))
        return tsync__err(TSYNC_EREFUSED, "transport: key %s... is revoked", hex);
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *o = tp->peers[i];
        if (!o->inbound && !memcmp(o->ed_pk, peer_ed_pk, 32) && !strcmp(o->endpoint, endpoint)) {
            if (peer_id) *peer_id = o->id;
            return tsync__err(TSYNC_EEXISTS, "transport: already dialling %s... at %s", hex,
                              endpoint);
        }
    }
    peer *p = add_peer(tp);
    if (!p || !(p->endpoint = strdup(endpoint))) {
        if (p) remove_peer(tp, p);
        return tsync__err(TSYNC_ENOMEM, "transport: out of memory");
    }
    memcpy(p->ed_pk, peer_ed_pk, 32);
    memcpy(p->curve_pk, curve, 32);
    p->key_known = 1;
    snprintf(p->address, sizeof p->address, "%s", endpoint);
    if ((rc = dealer_open(tp, p)) != 0) {
        remove_peer(tp, p);
        return rc;
    }
    if (peer_id) *peer_id = p->id;
    return 0;
}

int tsync__tp_send(tsync__tp *tp, uint32_t id, const void *msg, size_t len)
{
    static const uint8_t none[1];
    peer *p = tp ? find_peer(tp, id) : NULL;
    if (!p) return tsync__err(TSYNC_ENOTFOUND, "transport: no peer %u", id);
    if (len > tp->o.max_msg)
        return tsync__err(TSYNC_EINVAL, "transport: message of %zu bytes exceeds the %zu limit",
                          len, tp->o.max_msg);
    if (!msg) msg = none;               /* zmq_send copies len bytes: never from NULL */
    if (p->inbound) router_monitor(tp); /* a connection that just went is not sent to */
    if (!p->up) return tsync__err(TSYNC_ENOTFOUND, "transport: peer %u is not connected", id);

    void *s = p->inbound ? tp->router : p->sock;
    for (int attempt = 0;; attempt++) {
        int rc = p->inbound ? zmq_send(s, p->rid, p->rid_len, ZMQ_SNDMORE | ZMQ_DONTWAIT) : 0;
        if (rc >= 0) rc = zmq_send(s, msg, len, ZMQ_DONTWAIT);
        if (rc >= 0) break;
        int e = zmq_errno();
        if (e == EAGAIN && attempt == 0) {
            /* The queue may have drained with the news still in the socket's command queue,
             * which a send does not always read: read it and try once more. */
            int events;
            size_t elen = sizeof events;
            zmq_getsockopt(s, ZMQ_EVENTS, &events, &elen);
            continue;
        }
        if (e == EAGAIN) {
            tp->st.slow++;
            p->slow++;
            return tsync__err(TSYNC_EBUSY, "transport: peer %u is slow: %d messages queued", id,
                              tp->o.hwm);
        }
        if (e == EHOSTUNREACH) { /* the ROUTER no longer has this connection */
            p->fd = -1;
            session_down(tp, p, TSYNC__TP_DOWN_LOST);
            return tsync__err(TSYNC_ENOTFOUND, "transport: peer %u is not connected", id);
        }
        return zerr(TSYNC_ERROR, "send");
    }
    p->tx++;
    tp->st.tx++;
    return 0;
}

int tsync__tp_fd(tsync__tp *tp)
{
#ifdef __linux__
    if (!tp) return tsync__err(TSYNC_EINVAL, "transport: no transport");
    if (tp->epfd >= 0) return tp->epfd;
    tp->epfd = epoll_create1(EPOLL_CLOEXEC);
    if (tp->epfd < 0) return tsync__err(TSYNC_EIO, "transport: epoll: %s", strerror(errno));
    ep_add(tp, tp->zap);
    ep_add(tp, tp->router);
    ep_add(tp, tp->router_mon);
    for (size_t i = 0; i < tp->npeers; i++) {
        ep_add(tp, tp->peers[i]->sock);
        ep_add(tp, tp->peers[i]->mon);
    }
    return tp->epfd;
#else
    (void)tp;
    return tsync__err(TSYNC_EUNSUPPORTED, "transport: no epoll on this system");
#endif
}

int tsync__tp_timeout_ms(tsync__tp *tp)
{
    if (tp->qlen || tp->msg_state == 1) return 0;
    return next_timer(tp, (int64_t)tsync__mono_ms());
}

int tsync__tp_peer_verified(tsync__tp *tp, uint32_t id, const uint8_t *ed_pk)
{
    peer *p = find_peer(tp, id);
    if (!p) return tsync__err(TSYNC_ENOTFOUND, "transport: no peer %u", id);
    if (!p->up) return tsync__err(TSYNC_ENOTFOUND, "transport: peer %u has no session", id);
    if (ed_pk) {
        uint8_t curve[32];
        char hex[17];
        short_key(ed_pk, hex);
        if (tsync__tp_curve_of(ed_pk, curve) != 0 || memcmp(curve, p->curve_pk, 32) ||
            (p->key_known && memcmp(p->ed_pk, ed_pk, 32)))
            return tsync__err(TSYNC_EREFUSED,
                              "transport: peer %u did not authenticate as key %s...", id, hex);
        memcpy(p->ed_pk, ed_pk, 32);
        p->key_known = 1;
    }
    p->verified = 1;
    p->failures = 0; /* a session the caller accepted resets the reconnect backoff */
    return 0;
}

int tsync__tp_close(tsync__tp *tp, uint32_t id)
{
    peer *p = find_peer(tp, id);
    if (!p) return tsync__err(TSYNC_ENOTFOUND, "transport: no peer %u", id);
    q_cancel_messages(tp, id);
    if (p->inbound) {
        inbound_cut(tp, p, TSYNC__TP_DOWN_CLOSED);
        return 0;
    }
    session_down(tp, p, TSYNC__TP_DOWN_CLOSED);
    remove_peer(tp, p);
    return 0;
}

int tsync__tp_revoke(tsync__tp *tp, const uint8_t ed_pk[32])
{
    uint8_t curve[32];
    int rc = tsync__tp_curve_of(ed_pk, curve);
    if (rc) return rc;
    if (!is_denied(tp, curve)) {
        if (tp->ndenied == tp->cap_denied) {
            size_t cap = tp->cap_denied ? 2 * tp->cap_denied : 8;
            uint8_t(*nd)[32] = realloc(tp->denied, cap * sizeof *nd);
            if (!nd) return tsync__err(TSYNC_ENOMEM, "transport: out of memory");
            tp->denied = nd;
            tp->cap_denied = cap;
        }
        memcpy(tp->denied[tp->ndenied++], curve, 32);
    }
    for (size_t i = 0; i < tp->npeers; i++) {
        peer *p = tp->peers[i];
        if (memcmp(p->curve_pk, curve, 32)) continue;
        p->revoked = 1;
        p->retry_at = 0;
        q_cancel_messages(tp, p->id);
        if (p->inbound)
            inbound_cut(tp, p, TSYNC__TP_DOWN_CLOSED);
        else
            session_down(tp, p, TSYNC__TP_DOWN_CLOSED);
    }
    return 0;
}

int tsync__tp_peer_get(tsync__tp *tp, uint32_t id, tsync__tp_peer_info *out)
{
    peer *p = find_peer(tp, id);
    if (!p) return tsync__err(TSYNC_ENOTFOUND, "transport: no peer %u", id);
    memset(out, 0, sizeof *out);
    out->id = p->id;
    out->inbound = p->inbound;
    out->up = p->up;
    out->verified = p->up && p->verified;
    out->revoked = p->revoked;
    out->key_known = p->key_known;
    memcpy(out->ed_pk, p->ed_pk, 32);
    memcpy(out->curve_pk, p->curve_pk, 32);
    memcpy(out->address, p->address, sizeof out->address);
    out->up_ms = p->up_ms;
    out->down_ms = p->down_ms;
    out->seen_ms = p->seen_ms;
    out->rx = p->rx;
    out->tx = p->tx;
    out->slow = p->slow;
    out->dropped = p->dropped;
    out->sessions = p->sessions;
    return 0;
}

size_t tsync__tp_peers(tsync__tp *tp, uint32_t *ids, size_t cap)
{
    for (size_t i = 0; i < tp->npeers && i < cap; i++) ids[i] = tp->peers[i]->id;
    return tp->npeers;
}

void tsync__tp_stats_get(tsync__tp *tp, tsync__tp_stats *out)
{
    *out = tp->st;
}

const uint8_t *tsync__tp_curve_pk(tsync__tp *tp)
{
    return tp->curve_pk;
}

int tsync__tp_peer_rx_idle_ms(tsync__tp *tp, uint32_t id)
{
    peer *p = find_peer(tp, id);
    if (!p || !p->up) return -1;
    int fd = p->inbound ? p->fd : p->dfd;
    if (fd < 0) return -1;
    struct tcp_info ti;
    socklen_t len = sizeof ti;
    memset(&ti, 0, sizeof ti);
    if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0 || len < sizeof ti) return -1;
    return ti.tcpi_last_data_recv > (uint32_t)INT32_MAX ? INT32_MAX : (int)ti.tcpi_last_data_recv;
}
