/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/discovery_avahi.c — the mDNS backend of net/discovery.h on avahi-client, and the codec of
 * our TXT records. It publishes this till as _tillsync._tcp, browses the same type, keeps one
 * resolver open per browsed service (avahi reports every change of address or TXT through it),
 * and turns all that into FOUND / LOST events per service name, plus DAEMON_DOWN / DAEMON_UP.
 * Over 800 lines on purpose: the AvahiPoll adapter, the publisher and the browser/resolver state
 * share avahi's client object and the reconcile step that alone may tear avahi objects down.
 *
 * Design notes (docs/DISCOVERY.md has the long form)
 * - avahi runs on the node's thread through our own AvahiPoll: avahi-client (via libdbus) asks
 *   it for watches on descriptors and for timeouts, we keep them in two lists, mirror the watched
 *   descriptors into one level-triggered epoll set (the descriptor the node polls), and run the
 *   callbacks inside tsync__disc_poll. No helper thread, so nothing locks, and avahi's callbacks
 *   run only inside our calls. libdbus may watch one descriptor twice (reading, writing), so the
 *   epoll set holds the union per descriptor, and is rebuilt whenever the watches change, because
 *   a descriptor closed and reused would otherwise silently vanish from it.
 * - Events are computed, not queued: each service name keeps what we last reported and a dirty
 *   mark; tsync__disc_poll reports the difference between that and what the resolvers say now.
 *   Flapping collapses into the latest state and memory stays bounded by the services tracked.
 * - We never tear avahi objects down inside avahi's callbacks: the callbacks record what
 *   happened, and a reconcile step after each dispatch round does the work (recreate the client
 *   after AVAHI_CLIENT_FAILURE, publish when the daemon is RUNNING, retry a failed browser or
 *   resolver). avahi_client_new calls its callback before it returns, which this also keeps
 *   simple.
 * - Daemon presence: AVAHI_CLIENT_NO_FAIL makes a client wait for avahi-daemon on the bus, but
 *   avahi_client_new still fails when the system bus itself is absent; then we retry on a timer
 *   (0.5 s doubling to 5 s). A daemon that goes away puts the client in FAILURE; we free it and
 *   make a new one, which waits for the next daemon and then publishes again.
 * - While the daemon is away nothing is known, so every peer reported is reported LOST.
 */
#include <errno.h>
#include <net/if.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/domain.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/strlst.h>
#include <avahi-common/watch.h>
#include <sodium.h>

#include "net/discovery.h"
#include "util/util.h"

#define CONNECT_FIRST_MS 500  /* first retry of avahi_client_new without a system bus */
#define CONNECT_MAX_MS   5000 /* ... doubling up to this */
#define RETRY_MS         5000 /* a failed browser, resolver or entry group is retried after */
#define MAX_ROUNDS       16   /* dispatch rounds per tsync__disc_poll call before returning */
#define MAX_RENAMES      32   /* alternative names tried in a row for a local collision */

/* ---------------------------------------------------------------- TXT records */

/* Exactly 2n hex digits (a TXT value, not NUL-terminated) into n bytes of at most 32. */
static int unhex_exact(const uint8_t *s, size_t len, uint8_t *out, size_t n)
{
    char text[2 * 32 + 1];
    if (n > 32 || len != 2 * n) return -1;
    memcpy(text, s, len);
    text[len] = '\0';
    return tsync__unhex(text, out, n);
}

static int key_is(const uint8_t *k, size_t klen, const char *name)
{
    if (klen != strlen(name)) return 0;
    for (size_t i = 0; i < klen; i++) {
        uint8_t c = k[i];
        if (c >= 'A' && c <= 'Z') c = (uint8_t)(c - 'A' + 'a');
        if (c != (uint8_t)name[i]) return 0;
    }
    return 1;
}

static int txt_fail(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int txt_fail(char *err, size_t errlen, const char *fmt, ...)
{
    if (errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return TSYNC_ECORRUPT;
}

int tsync__disc_txt_parse(const uint8_t *rdata, size_t len, tsync__disc_txt *out, char *err,
                          size_t errlen)
{
    static const char *const names[] = {"v", "shop", "pk"};
    int seen[3] = {0, 0, 0};
    memset(out, 0, sizeof *out);
    if (errlen) err[0] = '\0';
    if (len > 65535) return txt_fail(err, errlen, "TXT: %zu bytes, more than DNS allows", len);
    size_t i = 0, idx = 0;
    while (i < len) {
        size_t n = rdata[i++];
        if (n > len - i)
            return txt_fail(err, errlen, "TXT string %zu: length %zu runs past the end", idx, n);
        const uint8_t *s = rdata + i;
        i += n;
        idx++;
        const uint8_t *eq = n ? memchr(s, '=', n) : NULL;
        size_t klen = eq ? (size_t)(eq - s) : n;
        if (klen == 0) continue; /* empty, or "=..." (RFC 6763 6.4: ignore) */
        int which = -1;
        for (int k = 0; k < 3; k++)
            if (key_is(s, klen, names[k])) which = k;
        if (which < 0) continue; /* unknown keys are for later versions */
        if (seen[which]) return txt_fail(err, errlen, "TXT: '%s' appears twice", names[which]);
        seen[which] = 1;
        if (!eq) return txt_fail(err, errlen, "TXT: '%s' has no value", names[which]);
        const uint8_t *v = eq + 1;
        size_t vlen = n - klen - 1;
        if (which == 0) {
            uint64_t x = 0;
            int ok = vlen >= 1 && vlen <= 10 && !(vlen > 1 && v[0] == '0');
            for (size_t j = 0; ok && j < vlen; j++) {
                ok = v[j] >= '0' && v[j] <= '9';
                x = x * 10 + (uint64_t)(v[j] - '0');
            }
            if (!ok || x > UINT32_MAX)
                return txt_fail(err, errlen,
                                "TXT: 'v' must be a decimal number below 2^32 without sign or "
                                "leading zeros");
            out->version = (uint32_t)x;
        } else if (which == 1) {
            if (unhex_exact(v, vlen, out->shop, sizeof out->shop))
                return txt_fail(err, errlen,
                                "TXT: 'shop' must be exactly %d hex digits (%zu bytes)",
                                2 * TSYNC__DISC_SHOP_BYTES, vlen);
            out->has_shop = 1;
        } else {
            uint8_t curve[32];
            if (unhex_exact(v, vlen, out->key, sizeof out->key))
                return txt_fail(err, errlen, "TXT: 'pk' must be exactly %d hex digits (%zu bytes)",
                                2 * TSYNC__DISC_KEY_BYTES, vlen);
            if (crypto_sign_ed25519_pk_to_curve25519(curve, out->key) != 0)
                return txt_fail(err, errlen, "TXT: 'pk' is not a valid Ed25519 public key");
        }
    }
    if (!seen[0]) return txt_fail(err, errlen, "TXT: no 'v' (protocol version)");
    if (!seen[2]) return txt_fail(err, errlen, "TXT: no 'pk' (public key)");
    return 0;
}

static size_t put_str(uint8_t *out, size_t cap, size_t at, const char *s)
{
    size_t n = strlen(s);
    if (at + 1 + n > cap) return 0; /* 0 is never a successful length: at least "v=N" */
    out[at] = (uint8_t)n;
    memcpy(out + at + 1, s, n);
    return at + 1 + n;
}

size_t tsync__disc_txt_encode(const tsync__disc_txt *t, uint8_t *out, size_t cap)
{
    char item[8 + 2 * TSYNC__DISC_KEY_BYTES];
    size_t at = 0;
    snprintf(item, sizeof item, "v=%u", (unsigned)t->version);
    if (!(at = put_str(out, cap, at, item))) return 0;
    if (t->has_shop) {
        memcpy(item, "shop=", 5);
        sodium_bin2hex(item + 5, sizeof item - 5, t->shop, sizeof t->shop);
        if (!(at = put_str(out, cap, at, item))) return 0;
    }
    memcpy(item, "pk=", 3);
    sodium_bin2hex(item + 3, sizeof item - 3, t->key, sizeof t->key);
    return put_str(out, cap, at, item);
}

/* ---------------------------------------------------------------- our AvahiPoll */

typedef struct disc_avahi disc_avahi;

struct AvahiWatch {
    disc_avahi *d;
    int fd;
    AvahiWatchEvent events;  /* wanted */
    AvahiWatchEvent revents; /* during its callback: what happened */
    AvahiWatchCallback cb;
    void *userdata;
    int dead; /* freed by avahi; unlinked by sweep() */
    AvahiWatch *next;
};

struct AvahiTimeout {
    disc_avahi *d;
    int enabled;
    struct timeval when; /* wall clock, as avahi computes it (avahi_elapse_time) */
    AvahiTimeoutCallback cb;
    void *userdata;
    int dead;
    AvahiTimeout *next;
};

/* One browsed service: (interface, protocol, name, domain) with its resolver. */
typedef enum { ROW_RESOLVING, ROW_OK, ROW_BAD, ROW_OWN, ROW_FAILED } row_state;

typedef struct {
    disc_avahi *d;
    AvahiIfIndex iface;
    AvahiProtocol proto;
    char *name, *domain;
    AvahiServiceResolver *res;
    row_state state;
    int64_t retry_at;     /* ROW_FAILED: monotonic ms to open a new resolver */
    tsync__disc_event ev; /* ROW_OK: what we would report */
} row;

/* One service name: what we last told the node about it. */
typedef struct {
    char name[TSYNC__DISC_NAME_LEN];
    int reported; /* a FOUND was delivered and no LOST since */
    int dirty;    /* its rows changed since we last compared */
    tsync__disc_event rep;
} peer;

typedef enum { DAEMON_UNKNOWN, DAEMON_IS_DOWN, DAEMON_IS_UP } daemon_state;

struct disc_avahi {
    tsync__disc base;
    AvahiPoll api;
    AvahiWatch *watches;
    AvahiTimeout *timeouts;
    int ep;       /* epoll set mirroring the watches */
    int ep_dirty; /* watches changed since the set was rebuilt */
    int *ep_fds;  /* descriptors in the set */
    size_t ep_n, ep_cap;

    /* self */
    tsync__disc_self self;
    char *name; /* current instance name (avahi_malloc'd), after any renames */
    AvahiStringList *txt;

    /* the daemon connection */
    AvahiClient *client;
    AvahiClientState cstate;
    int restart;           /* the client failed: free it and make another */
    int64_t connect_at;    /* !client: monotonic ms of the next avahi_client_new */
    int connect_ms;        /* current backoff */
    daemon_state reported; /* what the node was last told */

    AvahiEntryGroup *group;
    int published;      /* services added and committed in group */
    int republish;      /* the group collided or failed: reset and add again */
    int64_t publish_at; /* earliest time for the next publish attempt; 0: now */

    AvahiServiceBrowser *browser;
    int browser_failed;
    int64_t browse_at;

    row **rows;
    size_t nrows, rows_cap;
    peer *peers;
    size_t npeers, peers_cap;
    size_t ndirty;
};

/* Avahi states its timeouts as wall-clock timevals: in milliseconds, rounded up so a timeout
 * never fires before its time. */
static int64_t tv_ms(const struct timeval *tv)
{
    return (int64_t)tv->tv_sec * 1000 + ((int64_t)tv->tv_usec + 999) / 1000;
}

static AvahiWatch *w_new(const AvahiPoll *api, int fd, AvahiWatchEvent event, AvahiWatchCallback cb,
                         void *userdata)
{
    disc_avahi *d = api->userdata;
    AvahiWatch *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->d = d;
    w->fd = fd;
    w->events = event;
    w->cb = cb;
    w->userdata = userdata;
    AvahiWatch **p = &d->watches; /* appended: a round only visits watches it started with */
    while (*p) p = &(*p)->next;
    *p = w;
    d->ep_dirty = 1;
    return w;
}

static void w_update(AvahiWatch *w, AvahiWatchEvent event)
{
    if (w->events != event) w->d->ep_dirty = 1;
    w->events = event;
}

static AvahiWatchEvent w_get_events(AvahiWatch *w)
{
    return w->revents;
}

static void w_free(AvahiWatch *w)
{
    w->dead = 1;
    w->d->ep_dirty = 1;
}

static void t_set(AvahiTimeout *t, const struct timeval *tv)
{
    t->enabled = tv != NULL;
    if (tv) t->when = *tv;
}

static AvahiTimeout *t_new(const AvahiPoll *api, const struct timeval *tv, AvahiTimeoutCallback cb,
                           void *userdata)
{
    disc_avahi *d = api->userdata;
    AvahiTimeout *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->d = d;
    t->cb = cb;
    t->userdata = userdata;
    t_set(t, tv);
    AvahiTimeout **p = &d->timeouts;
    while (*p) p = &(*p)->next;
    *p = t;
    return t;
}

static void t_update(AvahiTimeout *t, const struct timeval *tv)
{
    t_set(t, tv);
}

static void t_free(AvahiTimeout *t)
{
    t->dead = 1;
}

static void sweep(disc_avahi *d)
{
    for (AvahiWatch **p = &d->watches; *p;) {
        AvahiWatch *w = *p;
        if (w->dead) {
            *p = w->next;
            free(w);
        } else {
            p = &w->next;
        }
    }
    for (AvahiTimeout **p = &d->timeouts; *p;) {
        AvahiTimeout *t = *p;
        if (t->dead) {
            *p = t->next;
            free(t);
        } else {
            p = &t->next;
        }
    }
}

static uint32_t to_epoll(AvahiWatchEvent e)
{
    return (e & AVAHI_WATCH_IN ? EPOLLIN : 0) | (e & AVAHI_WATCH_OUT ? EPOLLOUT : 0);
}

/* Rebuilds the epoll set from the live watches: a watch that wants nothing is left out (else a
 * hung-up descriptor nobody reads would keep the set readable: a busy loop). */
static void ep_sync(disc_avahi *d)
{
    if (!d->ep_dirty) return;
    for (size_t i = 0; i < d->ep_n; i++) epoll_ctl(d->ep, EPOLL_CTL_DEL, d->ep_fds[i], NULL);
    d->ep_n = 0;
    for (AvahiWatch *w = d->watches; w; w = w->next) {
        if (w->dead || !w->events) continue;
        uint32_t mask = 0;
        int first = 1;
        for (AvahiWatch *v = d->watches; v; v = v->next)
            if (!v->dead && v->events && v->fd == w->fd) mask |= to_epoll(v->events);
        for (size_t i = 0; i < d->ep_n && first; i++) first = d->ep_fds[i] != w->fd;
        if (!first) continue;
        if (d->ep_n == d->ep_cap) {
            size_t cap = d->ep_cap ? 2 * d->ep_cap : 8;
            int *n = realloc(d->ep_fds, cap * sizeof *n);
            if (!n) return; /* stays dirty: retried on the next call */
            d->ep_fds = n;
            d->ep_cap = cap;
        }
        struct epoll_event ee = {.events = mask, .data.fd = w->fd};
        if (epoll_ctl(d->ep, EPOLL_CTL_ADD, w->fd, &ee) == 0) d->ep_fds[d->ep_n++] = w->fd;
    }
    d->ep_dirty = 0;
}

/* One pass over the descriptors and the due timeouts. Returns 1 if any callback ran. */
static int dispatch_round(disc_avahi *d)
{
    int ran = 0;
    size_t n = 0;
    for (AvahiWatch *w = d->watches; w; w = w->next) n += !w->dead && w->events;
    if (n) {
        struct pollfd *pf = calloc(n, sizeof *pf);
        AvahiWatch **ws = calloc(n, sizeof *ws);
        if (pf && ws) {
            size_t k = 0;
            for (AvahiWatch *w = d->watches; w && k < n; w = w->next) {
                if (w->dead || !w->events) continue;
                pf[k].fd = w->fd;
                pf[k].events = (short)((w->events & AVAHI_WATCH_IN ? POLLIN : 0) |
                                       (w->events & AVAHI_WATCH_OUT ? POLLOUT : 0));
                ws[k++] = w;
            }
            if (poll(pf, k, 0) > 0) {
                for (size_t i = 0; i < k; i++) {
                    AvahiWatch *w = ws[i];
                    if (!pf[i].revents || w->dead) continue;
                    short r = pf[i].revents;
                    w->revents = (AvahiWatchEvent)((r & POLLIN ? AVAHI_WATCH_IN : 0) |
                                                   (r & POLLOUT ? AVAHI_WATCH_OUT : 0) |
                                                   (r & POLLERR ? AVAHI_WATCH_ERR : 0) |
                                                   (r & POLLHUP ? AVAHI_WATCH_HUP : 0));
                    w->cb(w, w->fd, w->revents, w->userdata);
                    w->revents = 0;
                    ran = 1;
                }
            }
        }
        free(pf);
        free(ws);
    }
    int64_t now = (int64_t)tsync__wall_ms();
    size_t nt = 0;
    for (AvahiTimeout *t = d->timeouts; t; t = t->next) nt++;
    /* Only the timeouts that existed at the start: one re-armed for "now" waits a round. */
    AvahiTimeout *t = d->timeouts;
    for (size_t i = 0; i < nt && t; i++, t = t->next) {
        if (t->dead || !t->enabled) continue;
        if (tv_ms(&t->when) > now) continue;
        t->enabled = 0; /* one shot unless the callback re-arms it (as avahi's simple poll) */
        t->cb(t, t->userdata);
        ran = 1;
    }
    sweep(d);
    return ran;
}

/* ---------------------------------------------------------------- services and names */

static peer *peer_find(disc_avahi *d, const char *name)
{
    for (size_t i = 0; i < d->npeers; i++)
        if (!strcmp(d->peers[i].name, name)) return &d->peers[i];
    return NULL;
}

static void mark_dirty(disc_avahi *d, const char *name)
{
    peer *p = peer_find(d, name);
    if (!p) {
        if (d->npeers == d->peers_cap) {
            size_t cap = d->peers_cap ? 2 * d->peers_cap : 16;
            peer *n = realloc(d->peers, cap * sizeof *n);
            if (!n) return; /* the name stays unreported; its next change retries */
            d->peers = n;
            d->peers_cap = cap;
        }
        p = &d->peers[d->npeers++];
        memset(p, 0, sizeof *p);
        snprintf(p->name, sizeof p->name, "%s", name);
    }
    if (!p->dirty) d->ndirty++;
    p->dirty = 1;
}

static void row_free(disc_avahi *d, size_t i, int free_resolver)
{
    row *r = d->rows[i];
    if (free_resolver && r->res) avahi_service_resolver_free(r->res);
    mark_dirty(d, r->name);
    free(r->name);
    free(r->domain);
    free(r);
    d->rows[i] = d->rows[--d->nrows];
}

/* Forgets every service: the client that browsed them is gone or going. */
static void rows_clear(disc_avahi *d, int free_resolvers)
{
    while (d->nrows) row_free(d, d->nrows - 1, free_resolvers);
}

static int addr_is_linklocal6(const AvahiAddress *a)
{
    return a->proto == AVAHI_PROTO_INET6 && a->data.ipv6.address[0] == 0xfe &&
           (a->data.ipv6.address[1] & 0xc0) == 0x80;
}

/* Which of two resolved rows of one name to report: IPv4 first (every transport can dial it),
 * then a global IPv6 address, then link-local; then the lower interface index, for stability. */
static int row_better(const row *a, const row *b)
{
    int pa = a->proto == AVAHI_PROTO_INET ? 0 : 1, pb = b->proto == AVAHI_PROTO_INET ? 0 : 1;
    if (pa != pb) return pa < pb;
    int la = strchr(a->ev.endpoint, '%') != NULL, lb = strchr(b->ev.endpoint, '%') != NULL;
    if (la != lb) return la < lb;
    return a->iface < b->iface;
}

static void resolve_cb(AvahiServiceResolver *res, AvahiIfIndex iface, AvahiProtocol proto,
                       AvahiResolverEvent event, const char *name, const char *type,
                       const char *domain, const char *host, const AvahiAddress *a, uint16_t port,
                       AvahiStringList *txt, AvahiLookupResultFlags flags, void *userdata)
{
    row *r = userdata;
    disc_avahi *d = r->d;
    row_state was = r->state;
    if (event != AVAHI_RESOLVER_FOUND || !a) {
        /* The resolver stays quiet after a failure: open a new one later. */
        d->base.stats.resolve_failed++;
        r->state = ROW_FAILED;
        r->retry_at = (int64_t)tsync__mono_ms() + RETRY_MS;
        if (was == ROW_OK) mark_dirty(d, r->name);
        return;
    }
    tsync__disc_event ev;
    memset(&ev, 0, sizeof ev);
    ev.kind = TSYNC__DISC_FOUND;
    snprintf(ev.name, sizeof ev.name, "%s", r->name);
    ev.interface = iface > 0 ? (uint32_t)iface : 0;
    char addr[AVAHI_ADDRESS_STR_MAX], ifname[IF_NAMESIZE] = "";
    avahi_address_snprint(addr, sizeof addr, a);
    int ok = port != 0;
    if (a->proto == AVAHI_PROTO_INET) {
        snprintf(ev.endpoint, sizeof ev.endpoint, "tcp://%s:%u", addr, (unsigned)port);
    } else if (addr_is_linklocal6(a)) {
        /* A link-local address means nothing without its interface. */
        ok = ok && iface > 0 && if_indextoname((unsigned)iface, ifname);
        snprintf(ev.endpoint, sizeof ev.endpoint, "tcp://[%s%%%s]:%u", addr, ifname,
                 (unsigned)port);
    } else {
        snprintf(ev.endpoint, sizeof ev.endpoint, "tcp://[%s]:%u", addr, (unsigned)port);
    }
    /* TXT back into DNS wire form, so one strict parser (fuzzed) sees what came from the net. */
    size_t len = 0;
    for (AvahiStringList *s = txt; s; s = s->next) len += 1 + s->size;
    uint8_t *rdata = malloc(len ? len : 1);
    size_t at = 0;
    for (AvahiStringList *s = txt; rdata && s; s = s->next) {
        if (s->size > 255) ok = 0; /* cannot come from DNS */
        rdata[at++] = (uint8_t)(s->size > 255 ? 255 : s->size);
        memcpy(rdata + at, s->text, s->size > 255 ? 255 : s->size);
        at += s->size > 255 ? 255 : s->size;
    }
    tsync__disc_txt t;
    char err[128];
    ok = ok && rdata && tsync__disc_txt_parse(rdata, at, &t, err, sizeof err) == 0;
    free(rdata);
    if (!ok) {
        d->base.stats.malformed++;
        r->state = ROW_BAD;
    } else if (!memcmp(t.key, d->self.key, sizeof t.key)) {
        /* Our own key under another name (a leftover of ours, or a clone): never dial it. */
        if (was != ROW_OWN) d->base.stats.own++;
        r->state = ROW_OWN;
    } else {
        ev.version = t.version;
        ev.has_shop = t.has_shop;
        memcpy(ev.shop, t.shop, sizeof ev.shop);
        ev.has_key = 1;
        memcpy(ev.key, t.key, sizeof ev.key);
        r->ev = ev;
        r->state = ROW_OK;
    }
    if (was == ROW_OK || r->state == ROW_OK) mark_dirty(d, r->name);
}

static int row_resolve(disc_avahi *d, row *r)
{
    /* Resolve with the protocol it was browsed on: "unspecified" can return an IPv6 link-local
     * address for an IPv4 row. */
    r->res =
        avahi_service_resolver_new(d->client, r->iface, r->proto, r->name, TSYNC__DISC_SERVICE_TYPE,
                                   r->domain, r->proto, 0, resolve_cb, r);
    if (!r->res) {
        d->base.stats.resolve_failed++;
        r->state = ROW_FAILED;
        r->retry_at = (int64_t)tsync__mono_ms() + RETRY_MS;
        return -1;
    }
    r->state = ROW_RESOLVING;
    return 0;
}

static size_t row_find(disc_avahi *d, AvahiIfIndex iface, AvahiProtocol proto, const char *name,
                       const char *domain)
{
    for (size_t i = 0; i < d->nrows; i++) {
        row *r = d->rows[i];
        if (r->iface == iface && r->proto == proto && !strcmp(r->name, name) &&
            !strcmp(r->domain, domain))
            return i;
    }
    return (size_t)-1;
}

static void browse_cb(AvahiServiceBrowser *b, AvahiIfIndex iface, AvahiProtocol proto,
                      AvahiBrowserEvent event, const char *name, const char *type,
                      const char *domain, AvahiLookupResultFlags flags, void *userdata)
{
    disc_avahi *d = userdata;
    if (event == AVAHI_BROWSER_FAILURE) {
        d->browser_failed = 1;
        return;
    }
    if (event != AVAHI_BROWSER_NEW && event != AVAHI_BROWSER_REMOVE) return;
    if (!name || !domain) return;
    size_t i = row_find(d, iface, proto, name, domain);
    if (event == AVAHI_BROWSER_REMOVE) {
        if (i != (size_t)-1) row_free(d, i, 1);
        return;
    }
    if (i != (size_t)-1) return;
    if (flags & AVAHI_LOOKUP_RESULT_OUR_OWN) {
        d->base.stats.own++;
        return;
    }
    if (d->nrows >= TSYNC__DISC_MAX_SERVICES) {
        d->base.stats.dropped_full++;
        return;
    }
    if (d->nrows == d->rows_cap) {
        size_t cap = d->rows_cap ? 2 * d->rows_cap : 16;
        row **n = realloc(d->rows, cap * sizeof *n);
        if (!n) return;
        d->rows = n;
        d->rows_cap = cap;
    }
    row *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name)) || !(r->domain = strdup(domain))) {
        if (r) free(r->name);
        free(r);
        return;
    }
    r->d = d;
    r->iface = iface;
    r->proto = proto;
    d->rows[d->nrows++] = r;
    row_resolve(d, r);
}

/* ---------------------------------------------------------------- the daemon connection */

static void group_cb(AvahiEntryGroup *g, AvahiEntryGroupState state, void *userdata)
{
    disc_avahi *d = userdata;
    if (state == AVAHI_ENTRY_GROUP_COLLISION) {
        /* Another host has our name: take the next alternative ("name #2") and publish again. */
        char *alt = avahi_alternative_service_name(d->name);
        if (alt) {
            avahi_free(d->name);
            d->name = alt;
        }
        d->base.stats.collisions++;
        d->republish = 1;
        d->publish_at = 0;
    } else if (state == AVAHI_ENTRY_GROUP_FAILURE) {
        d->base.stats.publish_failed++;
        d->republish = 1;
        d->publish_at = (int64_t)tsync__mono_ms() + RETRY_MS;
    }
}

static void client_cb(AvahiClient *c, AvahiClientState state, void *userdata)
{
    disc_avahi *d = userdata;
    d->cstate = state;
    if (state == AVAHI_CLIENT_FAILURE) {
        d->restart = 1;
    } else if (state == AVAHI_CLIENT_S_COLLISION || state == AVAHI_CLIENT_S_REGISTERING) {
        /* The daemon's host name is changing: withdraw and publish again once it is RUNNING. */
        if (d->group && d->published) {
            avahi_entry_group_reset(d->group);
            d->published = 0;
        }
    }
}

static int client_up(const disc_avahi *d)
{
    return d->client && !d->restart &&
           (d->cstate == AVAHI_CLIENT_S_RUNNING || d->cstate == AVAHI_CLIENT_S_REGISTERING ||
            d->cstate == AVAHI_CLIENT_S_COLLISION);
}

/* Frees the client and everything made with it. avahi_client_free closes the bus connection
 * first, so it makes no calls to the daemon; the daemon withdraws our service when we go. */
static void client_teardown(disc_avahi *d)
{
    rows_clear(d, 0);
    d->group = NULL;
    d->published = 0;
    d->republish = 0;
    d->browser = NULL;
    d->browser_failed = 0;
    if (d->client) avahi_client_free(d->client);
    d->client = NULL;
    d->restart = 0;
}

static void client_connect(disc_avahi *d)
{
    int error = 0;
    d->base.stats.connects++;
    d->cstate = AVAHI_CLIENT_CONNECTING;
    AvahiClient *c = avahi_client_new(&d->api, AVAHI_CLIENT_NO_FAIL, client_cb, d, &error);
    d->client = c;
    if (!c) {
        /* No system bus at all (NO_FAIL only covers a bus without avahi-daemon). */
        d->connect_at = (int64_t)tsync__mono_ms() + d->connect_ms;
        d->connect_ms = d->connect_ms * 2 > CONNECT_MAX_MS ? CONNECT_MAX_MS : d->connect_ms * 2;
    }
}

static int publish(disc_avahi *d)
{
    if (!d->group) {
        d->group = avahi_entry_group_new(d->client, group_cb, d);
        if (!d->group) return -1;
    } else if (d->republish || d->published) {
        avahi_entry_group_reset(d->group);
    }
    d->published = 0;
    d->republish = 0;
    for (int tries = 0;; tries++) {
        int rc = avahi_entry_group_add_service_strlst(d->group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                                      0, d->name, TSYNC__DISC_SERVICE_TYPE, NULL,
                                                      NULL, d->self.port, d->txt);
        if (rc == AVAHI_ERR_COLLISION && tries < MAX_RENAMES) {
            /* A local collision (another client of this daemon has the name) is reported here,
             * not through the group's state. */
            char *alt = avahi_alternative_service_name(d->name);
            if (!alt) return -1;
            avahi_free(d->name);
            d->name = alt;
            d->base.stats.collisions++;
            continue;
        }
        if (rc < 0) return -1;
        break;
    }
    if (avahi_entry_group_commit(d->group) < 0) return -1;
    d->published = 1;
    return 0;
}

/* Brings avahi objects in line with the state the callbacks recorded. Returns 1 if it did
 * something that may have produced work. */
static int reconcile(disc_avahi *d)
{
    int did = 0;
    int64_t now = (int64_t)tsync__mono_ms();
    if (d->restart) {
        client_teardown(d);
        d->connect_at = 0;
        did = 1;
    }
    if (!d->client && now >= d->connect_at) {
        client_connect(d);
        did = 1;
    }
    if (!client_up(d)) return did;
    d->connect_ms = CONNECT_FIRST_MS;
    if (d->cstate == AVAHI_CLIENT_S_RUNNING && d->self.port && (!d->published || d->republish) &&
        now >= d->publish_at) {
        if (publish(d) < 0) {
            d->base.stats.publish_failed++;
            d->publish_at = now + RETRY_MS;
        }
        did = 1;
    }
    if (d->browser_failed) {
        avahi_service_browser_free(d->browser);
        d->browser = NULL;
        d->browser_failed = 0;
        rows_clear(d, 1);
        d->browse_at = now + RETRY_MS;
        did = 1;
    }
    if (!d->browser && now >= d->browse_at) {
        d->browser = avahi_service_browser_new(d->client, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC,
                                               TSYNC__DISC_SERVICE_TYPE, NULL, 0, browse_cb, d);
        if (!d->browser) d->browse_at = now + RETRY_MS;
        did = 1;
    }
    for (size_t i = 0; i < d->nrows; i++) {
        row *r = d->rows[i];
        if (r->state != ROW_FAILED || now < r->retry_at) continue;
        if (r->res) avahi_service_resolver_free(r->res);
        r->res = NULL;
        row_resolve(d, r);
        did = 1;
    }
    return did;
}

/* ---------------------------------------------------------------- events */

static int events_pending(const disc_avahi *d)
{
    daemon_state now = client_up(d) ? DAEMON_IS_UP : DAEMON_IS_DOWN;
    return d->restart || d->ndirty || now != d->reported;
}

static int ev_same(const tsync__disc_event *a, const tsync__disc_event *b)
{
    return !strcmp(a->name, b->name) && !strcmp(a->endpoint, b->endpoint) &&
           a->version == b->version && a->has_shop == b->has_shop &&
           !memcmp(a->shop, b->shop, sizeof a->shop) && a->has_key == b->has_key &&
           !memcmp(a->key, b->key, sizeof a->key) && a->interface == b->interface;
}

static int emit(disc_avahi *d, tsync__disc_event *ev)
{
    daemon_state now = client_up(d) ? DAEMON_IS_UP : DAEMON_IS_DOWN;
    if (now != d->reported) {
        d->reported = now;
        memset(ev, 0, sizeof *ev);
        ev->kind = now == DAEMON_IS_UP ? TSYNC__DISC_DAEMON_UP : TSYNC__DISC_DAEMON_DOWN;
        return 1;
    }
    for (size_t i = 0; d->ndirty && i < d->npeers;) {
        peer *p = &d->peers[i];
        if (!p->dirty) {
            i++;
            continue;
        }
        p->dirty = 0;
        d->ndirty--;
        const row *best = NULL;
        for (size_t j = 0; j < d->nrows; j++) {
            const row *r = d->rows[j];
            if (r->state == ROW_OK && !strcmp(r->ev.name, p->name) &&
                (!best || row_better(r, best)))
                best = r;
        }
        if (!best) {
            int was = p->reported;
            if (was) {
                *ev = p->rep;
                ev->kind = TSYNC__DISC_LOST;
            }
            d->peers[i] = d->peers[--d->npeers]; /* forget the name */
            if (was) return 1;
            continue;
        }
        if (p->reported && ev_same(&p->rep, &best->ev)) {
            i++;
            continue;
        }
        p->rep = best->ev;
        p->reported = 1;
        *ev = best->ev;
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------- the backend */

static int avahi_fd(tsync__disc *base)
{
    return ((disc_avahi *)base)->ep;
}

static int avahi_timeout_ms(tsync__disc *base)
{
    disc_avahi *d = (disc_avahi *)base;
    if (events_pending(d)) return 0;
    int64_t best = -1;
    int64_t now = (int64_t)tsync__wall_ms();
    for (AvahiTimeout *t = d->timeouts; t; t = t->next) {
        if (t->dead || !t->enabled) continue;
        int64_t ms = tv_ms(&t->when) - now;
        if (ms < 0) ms = 0;
        if (best < 0 || ms < best) best = ms;
    }
    int64_t mono = (int64_t)tsync__mono_ms();
    int64_t due[3] = {-1, -1, -1};
    if (!d->client) due[0] = d->connect_at;
    if (client_up(d)) {
        if (!d->browser) due[1] = d->browse_at;
        if (d->cstate == AVAHI_CLIENT_S_RUNNING && d->self.port && (!d->published || d->republish))
            due[2] = d->publish_at;
    }
    for (int i = 0; i < 3; i++) {
        if (due[i] < 0) continue;
        int64_t ms = due[i] > mono ? due[i] - mono : 0;
        if (best < 0 || ms < best) best = ms;
    }
    for (size_t i = 0; i < d->nrows; i++) {
        if (d->rows[i]->state != ROW_FAILED) continue;
        int64_t ms = d->rows[i]->retry_at > mono ? d->rows[i]->retry_at - mono : 0;
        if (best < 0 || ms < best) best = ms;
    }
    return best > 60000 ? 60000 : (int)best;
}

static int avahi_poll_ev(tsync__disc *base, tsync__disc_event *ev)
{
    disc_avahi *d = (disc_avahi *)base;
    int rc = 0;
    for (int round = 0; round < MAX_ROUNDS; round++) {
        if ((rc = emit(d, ev))) break;
        int did = dispatch_round(d);
        did |= reconcile(d);
        if (!did) {
            rc = emit(d, ev);
            break;
        }
    }
    sweep(d);
    ep_sync(d);
    return rc;
}

static void avahi_free_backend(tsync__disc *base)
{
    disc_avahi *d = (disc_avahi *)base;
    client_teardown(d);
    sweep(d);
    /* avahi_client_free frees every watch and timeout it made; anything left is ours to free. */
    while (d->watches) {
        AvahiWatch *w = d->watches;
        d->watches = w->next;
        free(w);
    }
    while (d->timeouts) {
        AvahiTimeout *t = d->timeouts;
        d->timeouts = t->next;
        free(t);
    }
    if (d->ep >= 0) close(d->ep);
    free(d->ep_fds);
    free(d->rows);
    free(d->peers);
    avahi_free(d->name);
    avahi_string_list_free(d->txt);
    sodium_memzero(&d->self, sizeof d->self);
    free(d);
}

static const char *avahi_self_name(tsync__disc *base)
{
    return ((disc_avahi *)base)->name;
}

static const tsync__disc_ops avahi_ops = {
    avahi_fd, avahi_timeout_ms, avahi_poll_ev, avahi_self_name, avahi_free_backend,
};

int tsync__disc_avahi_new(tsync__disc **out, const tsync__disc_self *self)
{
    *out = NULL;
    if (!self) return tsync__err(TSYNC_EINVAL, "mDNS discovery: no description of this till");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    char dflt[32];
    const char *name = self->name;
    if (!name) {
        char hex[9];
        sodium_bin2hex(hex, sizeof hex, self->key, 4);
        snprintf(dflt, sizeof dflt, "tillsync-%s", hex);
        name = dflt;
    }
    if (strlen(name) >= TSYNC__DISC_NAME_LEN || !avahi_is_valid_service_name(name))
        return tsync__err(TSYNC_EINVAL,
                          "mDNS discovery: service name '%.80s' is not valid (1 to 63 bytes of "
                          "UTF-8)",
                          name);
    disc_avahi *d = calloc(1, sizeof *d);
    if (!d) return tsync__err(TSYNC_ENOMEM, "mDNS discovery: out of memory");
    d->base.ops = &avahi_ops;
    d->self = *self;
    d->self.name = NULL;
    d->connect_ms = CONNECT_FIRST_MS;
    d->api.userdata = d;
    d->api.watch_new = w_new;
    d->api.watch_update = w_update;
    d->api.watch_get_events = w_get_events;
    d->api.watch_free = w_free;
    d->api.timeout_new = t_new;
    d->api.timeout_update = t_update;
    d->api.timeout_free = t_free;
    d->ep = epoll_create1(EPOLL_CLOEXEC);
    if (d->ep < 0) {
        free(d);
        return tsync__err(TSYNC_EIO, "mDNS discovery: epoll_create1: %s", strerror(errno));
    }
    tsync__disc_txt t = {.version = self->version, .has_shop = self->has_shop};
    memcpy(t.shop, self->shop, sizeof t.shop);
    memcpy(t.key, self->key, sizeof t.key);
    uint8_t rdata[TSYNC__DISC_TXT_MAX];
    size_t len = tsync__disc_txt_encode(&t, rdata, sizeof rdata);
    if (!(d->name = avahi_strdup(name)) || avahi_string_list_parse(rdata, len, &d->txt) < 0) {
        avahi_free_backend(&d->base);
        return tsync__err(TSYNC_ENOMEM, "mDNS discovery: out of memory");
    }
    reconcile(d); /* first connection attempt: DAEMON_DOWN or DAEMON_UP is ready for poll */
    sweep(d);
    ep_sync(d);
    *out = &d->base;
    return 0;
}
