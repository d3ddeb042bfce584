/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/discovery.h — the discovery seam: how the node learns where the other tills are. Two
 * backends behind one interface: mDNS through the avahi daemon (publishes this till as
 * _tillsync._tcp with its protocol version, shop id and public key in TXT, browses and resolves
 * the others), and a static list of addresses (`--peer`, a relay). The node asks for events:
 * FOUND (a peer, or a new address or TXT for it), LOST (no longer advertised), and the avahi
 * daemon going away or coming back. What discovery says is a hint: TXT can be forged, so the
 * certificate check when the transport connects decides who a peer is, and liveness comes from
 * the transport's heartbeats, not from mDNS. docs/DISCOVERY.md explains the design;
 * net/discovery_avahi.c and net/discovery_static.c implement it.
 *
 * THREAD SAFETY: a discovery object belongs to one thread (the node's network thread), which makes
 * every call on it, including tsync__disc_free; nothing in it locks and it starts no thread. avahi
 * is driven on that thread through tsync__disc_fd / tsync__disc_timeout_ms / tsync__disc_poll.
 * Two objects are independent (each has its own connection to the daemon). The TXT functions are
 * pure and may be called from any thread.
 */
#ifndef TSYNC_NET_DISCOVERY_H
#define TSYNC_NET_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "tillsync/common.h"

#define TSYNC__DISC_SERVICE_TYPE "_tillsync._tcp"
#define TSYNC__DISC_NAME_LEN     64  /* a DNS label: 63 bytes and the NUL */
#define TSYNC__DISC_EP_LEN       128 /* = TSYNC__TP_ADDR_LEN */
#define TSYNC__DISC_SHOP_BYTES   16
#define TSYNC__DISC_KEY_BYTES    32
/* The most services (one per name, interface and protocol) the avahi backend tracks at once;
 * more are ignored and counted, so a noisy LAN cannot grow the node's memory without bound. */
#define TSYNC__DISC_MAX_SERVICES 1024

typedef struct tsync__disc tsync__disc;

typedef enum {
    TSYNC__DISC_FOUND = 1,       /* a peer is advertised, or its endpoint or TXT changed */
    TSYNC__DISC_LOST = 2,        /* a peer found before is no longer advertised (or the daemon
                                    went away, so nothing is known); name and the last fields */
    TSYNC__DISC_DAEMON_DOWN = 3, /* avahi is not reachable; mDNS is off until DAEMON_UP */
    TSYNC__DISC_DAEMON_UP = 4,   /* avahi is reachable; we publish and browse again */
} tsync__disc_kind;

typedef struct {
    int kind;                          /* a tsync__disc_kind */
    char name[TSYNC__DISC_NAME_LEN];   /* service instance name, or the endpoint of a static peer.
                                          Not an identity: mDNS renames on collisions. Untrusted
                                          UTF-8 from the network: escape before printing it. */
    char endpoint[TSYNC__DISC_EP_LEN]; /* tcp://ADDR:PORT; IPv4 preferred; IPv6 in brackets
                                          (link-local with %ifname); a static peer's as given */
    uint32_t version;                  /* TXT "v": protocol version; 0 for a static peer */
    int has_shop;
    uint8_t shop[TSYNC__DISC_SHOP_BYTES]; /* TXT "shop" */
    int has_key;
    uint8_t key[TSYNC__DISC_KEY_BYTES]; /* TXT "pk", or a static peer's #KEY: the Ed25519 public
                                           key the transport dials with (tsync__tp_connect) */
    uint32_t interface;                 /* avahi: the interface index of the reported address */
} tsync__disc_event;

/* What the avahi backend publishes about this till. */
typedef struct {
    uint32_t version; /* protocol version, TXT "v" */
    int has_shop;     /* an enrolled till publishes its shop id, TXT "shop" */
    uint8_t shop[TSYNC__DISC_SHOP_BYTES];
    uint8_t key[TSYNC__DISC_KEY_BYTES]; /* this device's Ed25519 public key, TXT "pk" */
    uint16_t port;                      /* the port the transport listens on; 0: browse only */
    const char *name; /* preferred instance name (copied); NULL: "tillsync-" and the first 8 hex
                         digits of key. On a collision avahi's alternative ("name #2") is used. */
} tsync__disc_self;

/* Counters since creation, for status. */
typedef struct {
    uint64_t found, lost;    /* FOUND and LOST events delivered */
    uint64_t malformed;      /* resolved services ignored for a malformed TXT (per resolution) */
    uint64_t own;            /* services ignored as our own */
    uint64_t dropped_full;   /* services ignored because TSYNC__DISC_MAX_SERVICES were tracked */
    uint64_t daemon_down;    /* DAEMON_DOWN events */
    uint64_t connects;       /* attempts to reach the daemon (avahi_client_new calls) */
    uint64_t collisions;     /* times our name collided and an alternative was chosen */
    uint64_t resolve_failed; /* resolver failures (the service stays unreported until resolved) */
    uint64_t publish_failed; /* entry group failures (publishing is retried) */
} tsync__disc_stats;

/* Creates the avahi backend: publishes self (unless self->port is 0) as TSYNC__DISC_SERVICE_TYPE
 * on every interface and protocol, browses the same type and resolves what it finds with the
 * protocol it was browsed on. Our own service is never reported. When no daemon (or no system
 * bus) is reachable it still succeeds: the first poll delivers DAEMON_DOWN, and it connects when
 * the daemon appears, then delivers DAEMON_UP and publishes and browses again; so does it after a
 * daemon restart. Exactly one of DAEMON_DOWN / DAEMON_UP comes first, then one per change.
 * Errors: TSYNC_EINVAL (self NULL, name too long or not valid UTF-8 for avahi), TSYNC_ENOMEM,
 * TSYNC_EIO (no epoll descriptor). */
int tsync__disc_avahi_new(tsync__disc **out, const tsync__disc_self *self);

/* Creates the static backend: each spec is "tcp://HOST:PORT" or "tcp://HOST:PORT#KEY" (KEY: 64
 * hex digits, the peer's Ed25519 public key; HOST: a name, an IPv4 address or [IPv6]), as
 * `tillsync run --peer` takes it. Each is reported FOUND once, in order, by the first polls; there
 * is never a LOST. n may be 0. Errors: TSYNC_EINVAL (the message names the bad spec),
 * TSYNC_ENOMEM. */
int tsync__disc_static_new(tsync__disc **out, const char *const *endpoints, size_t n);

/* A descriptor that is readable when tsync__disc_poll may have work (level-triggered), for the
 * node's poll loop; -1 when the backend has none (static). The same descriptor until
 * tsync__disc_free; do not read or close it. */
int tsync__disc_fd(tsync__disc *d);

/* The longest the node may wait on tsync__disc_fd before calling tsync__disc_poll: 0 when work is
 * due now, -1 when nothing is timed. */
int tsync__disc_timeout_ms(tsync__disc *d);

/* Never blocks (but see docs/DISCOVERY.md: avahi-client's calls to the daemon are synchronous
 * D-Bus calls, quick unless the daemon hangs). Services the daemon connection and timers, then
 * fills *ev with one event: returns 1, or 0 when there is none now. Call it until it returns 0
 * before each wait on the descriptor. */
int tsync__disc_poll(tsync__disc *d, tsync__disc_event *ev);

/* The instance name this till is published under now, after any renames for collisions
 * ("name #2"); borrowed until the next tsync__disc_poll. NULL for the static backend. */
const char *tsync__disc_self_name(tsync__disc *d);

/* Copies the counters into *out. */
void tsync__disc_stats_get(tsync__disc *d, tsync__disc_stats *out);

/* Withdraws what the avahi backend published (peers see it go) and frees everything. Accepts
 * NULL. */
void tsync__disc_free(tsync__disc *d);

/* ---------------------------------------------------------------- TXT records
 *
 * The TXT of a _tillsync._tcp service, as DNS carries it: a sequence of strings, each a length
 * byte then that many bytes, "key=value". Keys are matched without regard to case (RFC 6763) and
 * strings with an unknown key are ignored, so later versions can add keys; avahi delivers the
 * strings in reverse order, so nothing depends on the order. Known keys are strict:
 *   v=DECIMAL    required; 1 to 10 digits, no sign, no leading zero, at most 2^32-1
 *   pk=HEX64     required; exactly 64 hex digits, a valid Ed25519 public key
 *   shop=HEX32   optional; exactly 32 hex digits
 * A known key twice, without '=' or with a bad value, or a length byte running past the end,
 * makes the whole TXT malformed: the service is ignored. */

#define TSYNC__DISC_TXT_MAX 256 /* bytes tsync__disc_txt_encode writes at most */

typedef struct {
    uint32_t version;
    int has_shop;
    uint8_t shop[TSYNC__DISC_SHOP_BYTES];
    uint8_t key[TSYNC__DISC_KEY_BYTES];
} tsync__disc_txt;

/* Parses TXT rdata (len bytes; 0 bytes or a single zero byte is an empty TXT). Returns 0 and
 * fills *out, or TSYNC_ECORRUPT with a one-line reason in err (errlen bytes, may be 0). */
int tsync__disc_txt_parse(const uint8_t *rdata, size_t len, tsync__disc_txt *out, char *err,
                          size_t errlen);

/* Writes t as TXT rdata ("v", then "shop" when has_shop, then "pk"; hex in lower case) into out
 * (cap bytes; TSYNC__DISC_TXT_MAX is always enough). Returns the length, or 0 if cap is too
 * small. */
size_t tsync__disc_txt_encode(const tsync__disc_txt *t, uint8_t *out, size_t cap);

/* ---------------------------------------------------------------- for the backends only */

typedef struct {
    int (*fd)(tsync__disc *d);
    int (*timeout_ms)(tsync__disc *d);
    int (*poll)(tsync__disc *d, tsync__disc_event *ev);
    const char *(*self_name)(tsync__disc *d);
    void (*free)(tsync__disc *d);
} tsync__disc_ops;

/* Every backend's object starts with this. */
struct tsync__disc {
    const tsync__disc_ops *ops;
    tsync__disc_stats stats;
};

#endif
