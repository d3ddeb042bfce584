/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/transport.h — the node's network transport: authenticated, encrypted message channels to the
 * other tills, with liveness and back-pressure, and nothing about sync. One bound socket takes the
 * connections peers make to us; one connection per peer we dial. Every channel is ZeroMQ CURVE with
 * the key pair derived from the device's Ed25519 key; who may connect is decided by this module's
 * ZAP handler, asking the caller. Messages are opaque byte strings of a bounded size.
 * docs/TRANSPORT.md explains the design; net/transport_zmq.c implements it.
 *
 * THREAD SAFETY: a transport belongs to one thread (the node's network thread), which makes every
 * call on it, including tsync__tp_free; nothing in it locks. Two transports on two threads are
 * independent (each has its own ZeroMQ context). The admit callback runs on the owning thread,
 * inside tsync__tp_poll, and never from a function that returns an error.
 */
#ifndef TSYNC_NET_TRANSPORT_H
#define TSYNC_NET_TRANSPORT_H

#include <stddef.h>
#include <stdint.h>

#include "tillsync/common.h"

#define TSYNC__TP_KEY_BYTES 32 /* Ed25519 and CURVE public keys */
#define TSYNC__TP_ADDR_LEN  128

/* The default largest message: the wire protocol's 16 MiB frame plus room for its envelope. */
#define TSYNC__TP_MAX_MSG_DEFAULT ((16u << 20) + (64u << 10))

typedef struct tsync__tp tsync__tp;

/* Who may complete a handshake with our bound socket. curve_pk is the client's CURVE public key,
 * proved by the handshake; ed_pk is its Ed25519 key when the transport knows it (a peer we dialled
 * or one the caller marked verified), else NULL: a CURVE key cannot be turned back into an Ed25519
 * key, so an unknown key is named by its certificate, which is its first message. address is the
 * client's IP address. Return 1 to admit, 0 to refuse. Keys refused by tsync__tp_revoke never reach
 * the callback. Runs on the owning thread inside tsync__tp_poll. */
typedef int (*tsync__tp_admit_fn)(void *ctx, const uint8_t curve_pk[TSYNC__TP_KEY_BYTES],
                                  const uint8_t *ed_pk, const char *address);

/* Zero in any field means its default, so TSYNC__TP_OPTIONS_INIT is the default configuration. */
typedef struct {
    unsigned int version;     /* TSYNC__TP_OPTIONS_VERSION */
    size_t max_msg;           /* largest message either way; 0: TSYNC__TP_MAX_MSG_DEFAULT */
    int hwm;                  /* messages queued per connection and direction; 0: 1000 */
    size_t rcv_queue_bytes;   /* receive queue budget per connection: the receive high-water
                                 mark is lowered to max(2, this / max_msg) messages when that
                                 is below hwm; 0: 256 MiB */
    int reconnect_ivl_ms;     /* first reconnect delay, doubled per failure; 0: 100 */
    int reconnect_ivl_max_ms; /* reconnect delay cap; 0: 2000 */
    int heartbeat_ivl_ms;     /* ping interval; 0: 500; -1: no ZMTP heartbeats (the caller
                                 checks liveness itself: libzmq 4.3.4 aborts when a heartbeat
                                 timeout resets a connection whose receive queue is full,
                                 zeromq/libzmq#4767, which a busy receiver can meet) */
    int heartbeat_timeout_ms; /* no traffic this long after a ping: link dead; 0: 1500 */
    int heartbeat_ttl_ms;     /* asks the remote to drop us after this much silence; 0: 3000 */
    int handshake_ms;         /* a handshake not finished by then is dropped; 0: 5000 */
    int max_inbound;          /* keys remembered for peers that dialled us; 0: 1024 */
    tsync__tp_admit_fn admit; /* NULL admits every key that is not revoked */
    void *admit_ctx;
    int sessions_per_key; /* inbound connections of one key served at once, each its own peer
                             handle; one more cuts the key's oldest (DOWN/SUPERSEDED). 0 or 1:
                             a new connection of a key supersedes its session (a till) */
} tsync__tp_options;

#define TSYNC__TP_OPTIONS_VERSION 1
/* (kept on one line: clang-format would spread the braces over four) */
/* clang-format off */
#define TSYNC__TP_OPTIONS_INIT {.version = TSYNC__TP_OPTIONS_VERSION}
/* clang-format on */

typedef enum {
    TSYNC__TP_EV_MESSAGE = 1, /* data, len: a message from peer */
    TSYNC__TP_EV_UP = 2,      /* a session with peer began; expect its certificate first */
    TSYNC__TP_EV_DOWN = 3,    /* the session with peer ended (reason: tsync__tp_down_reason) */
    TSYNC__TP_EV_HSFAIL = 4,  /* a connection failed to authenticate (tsync__tp_hs_reason) */
} tsync__tp_event_kind;

typedef enum {
    TSYNC__TP_DOWN_LOST = 1,       /* the connection closed, or heartbeats stopped */
    TSYNC__TP_DOWN_CLOSED = 2,     /* we closed it: tsync__tp_close or tsync__tp_revoke */
    TSYNC__TP_DOWN_SUPERSEDED = 3, /* inbound: the same key opened a newer connection (past
                                      sessions_per_key: the key's oldest one) */
    TSYNC__TP_DOWN_OVERSIZE = 4,   /* we cut it: the peer sent a message over max_msg */
} tsync__tp_down_reason;

typedef enum {
    TSYNC__TP_HS_DENIED = 1,   /* inbound: our ZAP handler refused the key (revoked or admit) */
    TSYNC__TP_HS_REFUSED = 2,  /* outbound: the remote refused our key */
    TSYNC__TP_HS_CRYPTO = 3,   /* the CURVE exchange failed: a wrong server key on one side */
    TSYNC__TP_HS_DROPPED = 4,  /* the remote hung up mid-handshake (outbound: often a wrong
                                  server key, which the server cannot tell from garbage) */
    TSYNC__TP_HS_PROTOCOL = 5, /* not ZMTP/CURVE at all, or a malformed handshake */
} tsync__tp_hs_reason;

typedef struct {
    int kind;      /* a tsync__tp_event_kind */
    uint32_t peer; /* the peer handle; 0 for a handshake failure of an inbound connection */
    int inbound;   /* 1: the peer dialled us; 0: we dialled it */
    int key_known; /* ed_pk is valid */
    uint8_t ed_pk[TSYNC__TP_KEY_BYTES];
    uint8_t curve_pk[TSYNC__TP_KEY_BYTES]; /* all zero when not known (inbound garbage) */
    const void *data; /* MESSAGE: borrowed until the next tsync__tp_poll or tsync__tp_free */
    size_t len;
    int first;      /* MESSAGE: the first of its session (the certificate, by protocol) */
    int reason;     /* DOWN: tsync__tp_down_reason; HANDSHAKE_FAILED: tsync__tp_hs_reason */
    uint32_t code;  /* HANDSHAKE_FAILED: ZeroMQ's status or ZMQ_PROTOCOL_ERROR_* value */
    uint64_t at_ms; /* wall clock, Unix ms */
    char address[TSYNC__TP_ADDR_LEN]; /* the endpoint we dialled, or the inbound peer's IP */
} tsync__tp_event;

/* Counters since tsync__tp_new, for status. */
typedef struct {
    uint64_t rx, tx;             /* messages delivered and sent */
    uint64_t slow;               /* sends refused because the peer's queue was full */
    uint64_t dropped_unverified; /* messages after the first from a session not yet verified */
    uint64_t dropped_revoked;    /* messages from a revoked key still in flight */
    uint64_t dropped_stale;      /* messages from a session already down or superseded */
    uint64_t dropped_malformed;  /* multi-part or unauthenticated messages */
    uint64_t dropped_oversize;   /* messages over max_msg (their sessions are cut) */
    uint64_t dropped_full;       /* messages from a new key while max_inbound keys are known */
    uint64_t denied;             /* handshakes our ZAP handler refused */
    uint64_t handshake_failed;   /* other failed handshakes, either direction */
} tsync__tp_stats;

/* One peer, for status ("online, last seen"). */
typedef struct {
    uint32_t id;
    int inbound;
    int up;       /* a session is established now */
    int verified; /* the caller accepted this session's certificate */
    int revoked;
    int key_known;
    uint8_t ed_pk[TSYNC__TP_KEY_BYTES];
    uint8_t curve_pk[TSYNC__TP_KEY_BYTES];
    char address[TSYNC__TP_ADDR_LEN];
    uint64_t up_ms, down_ms, seen_ms; /* wall clock, Unix ms; 0: never */
    uint64_t rx, tx, slow, dropped;
    uint32_t sessions; /* sessions that came up */
} tsync__tp_peer_info;

/* Creates a transport for the device whose Ed25519 secret key (libsodium layout, 64 bytes) is
 * ed_sk; the CURVE pair is derived from it. Starts the ZAP handler, so the bound socket never
 * accepts a connection this module did not check. opts: NULL for defaults.
 * Errors: TSYNC_EINVAL (bad key or options), TSYNC_EUNSUPPORTED (libzmq without CURVE),
 * TSYNC_ERROR (ZeroMQ failed; the message says where). */
int tsync__tp_new(tsync__tp **out, const uint8_t ed_sk[64], const tsync__tp_options *opts);

/* Closes every socket without lingering (unsent messages are dropped) and frees the transport.
 * Accepts NULL. */
void tsync__tp_free(tsync__tp *tp);

/* Listens on endpoint ("tcp://0.0.0.0:7400"; port "*" picks a free one). actual receives the
 * endpoint really bound (n bytes including the NUL; may be NULL). May be called more than once.
 * Errors: TSYNC_EINVAL (malformed endpoint), TSYNC_EIO (address in use or not ours). */
int tsync__tp_bind(tsync__tp *tp, const char *endpoint, char *actual, size_t n);

/* Dials the peer with Ed25519 public key peer_ed_pk at endpoint and keeps the connection up,
 * reconnecting with backoff, until tsync__tp_close or tsync__tp_revoke. Returns at once; UP comes
 * as an event. *peer_id receives the peer handle.
 * Errors: TSYNC_EINVAL (endpoint or key), TSYNC_EEXISTS (already dialling that key at that
 * endpoint; *peer_id is the existing handle), TSYNC_EREFUSED (the key is revoked). */
int tsync__tp_connect(tsync__tp *tp, const char *endpoint, const uint8_t peer_ed_pk[32],
                      uint32_t *peer_id);

/* Queues msg (len bytes, copied) to peer, dialled or inbound, without blocking.
 * Errors: TSYNC_EBUSY (the peer is slow: its queue holds hwm messages; counted; retry later),
 * TSYNC_ENOTFOUND (no such peer, or no session with it now), TSYNC_EINVAL (len > max_msg). */
int tsync__tp_send(tsync__tp *tp, uint32_t peer, const void *msg, size_t len);

/* Waits up to timeout_ms (0: do not wait; -1: forever) for one event and fills *ev. Also services
 * the ZAP handler, monitor events and reconnect timers, so the owning thread must call it often
 * (a handshake waits for it). Returns 1 with an event, 0 when none came in time (also when a
 * signal interrupted the wait), or a negative error (TSYNC_ERROR: ZeroMQ failed). */
int tsync__tp_poll(tsync__tp *tp, int timeout_ms, tsync__tp_event *ev);

/* A file descriptor that becomes readable when the transport may have work, for a host event
 * loop (an epoll set of the ZMQ_FD of every socket). It is edge-triggered in effect: readable
 * means "look", not "there is an event", and any transport call may consume the wake-up of a
 * message that is still waiting. So, before every wait on it, call tsync__tp_poll(tp, 0, ...)
 * until it returns 0; and wait no longer than tsync__tp_timeout_ms. Valid until tsync__tp_free;
 * do not read or close it. Errors: TSYNC_EUNSUPPORTED (no epoll), TSYNC_EIO. */
int tsync__tp_fd(tsync__tp *tp);

/* Milliseconds until a reconnect timer is due (0: now), or -1 when none is pending: the longest a
 * host loop may wait on tsync__tp_fd. */
int tsync__tp_timeout_ms(tsync__tp *tp);

/* Marks the current session with peer as verified: its certificate was checked. Until then only
 * the session's first message is delivered and later ones are dropped and counted. ed_pk: the key
 * the certificate names (NULL when the peer was dialled with a key); it must be the key behind the
 * session's CURVE key, and is remembered for later sessions.
 * Errors: TSYNC_ENOTFOUND (no such peer or no session), TSYNC_EREFUSED (ed_pk is not the key that
 * authenticated the session). */
int tsync__tp_peer_verified(tsync__tp *tp, uint32_t peer, const uint8_t *ed_pk);

/* Ends the session with peer: a dialled peer is forgotten (no reconnect), an inbound peer's
 * connection is cut (it may dial again and must present its certificate again). A DOWN event
 * follows when a session was up. Errors: TSYNC_ENOTFOUND. */
int tsync__tp_close(tsync__tp *tp, uint32_t peer);

/* Refuses the key ed_pk from now on: the ZAP handler denies it, its sessions are cut (DOWN
 * events follow) and its messages still in flight are dropped. Dialled peers with the key stop
 * reconnecting. Idempotent. Errors: TSYNC_EINVAL (not a valid Ed25519 public key). */
int tsync__tp_revoke(tsync__tp *tp, const uint8_t ed_pk[32]);

/* Fills *out for peer. Errors: TSYNC_ENOTFOUND. */
int tsync__tp_peer_get(tsync__tp *tp, uint32_t peer, tsync__tp_peer_info *out);

/* Writes up to cap peer handles into ids and returns how many peers there are. */
size_t tsync__tp_peers(tsync__tp *tp, uint32_t *ids, size_t cap);

/* Milliseconds since bytes last arrived on the connection of peer (the kernel's TCP_INFO), or -1
 * when not known (no session, not TCP). Unlike message times, this moves while a large message is
 * still arriving: liveness checks use it so a 64 MiB batch on a slow link is not taken for a
 * silent peer. */
int tsync__tp_peer_rx_idle_ms(tsync__tp *tp, uint32_t id);

/* Copies the counters into *out. */
void tsync__tp_stats_get(tsync__tp *tp, tsync__tp_stats *out);

/* Our CURVE public key (derived from the device key), borrowed for the transport's lifetime. */
const uint8_t *tsync__tp_curve_pk(tsync__tp *tp);

/* The CURVE public key of an Ed25519 public key. 0, or TSYNC_EINVAL (not a valid key). */
int tsync__tp_curve_of(const uint8_t ed_pk[32], uint8_t curve_pk[32]);

#endif
