/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/discovery_static.c — the discovery seam's dispatch (tsync__disc_fd / _timeout_ms / _poll /
 * _free call the backend through its ops table) and the static backend: a fixed list of
 * endpoints, from `--peer` or a relay address, reported FOUND once each. It needs no daemon, no
 * descriptor and no timer, so a node with only static peers runs the same loop as one with mDNS.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "net/discovery.h"
#include "util/util.h"

/* ---------------------------------------------------------------- the seam */

int tsync__disc_fd(tsync__disc *d)
{
    return d->ops->fd(d);
}

int tsync__disc_timeout_ms(tsync__disc *d)
{
    return d->ops->timeout_ms(d);
}

int tsync__disc_poll(tsync__disc *d, tsync__disc_event *ev)
{
    int rc = d->ops->poll(d, ev);
    if (rc == 1 && ev->kind == TSYNC__DISC_FOUND) d->stats.found++;
    if (rc == 1 && ev->kind == TSYNC__DISC_LOST) d->stats.lost++;
    if (rc == 1 && ev->kind == TSYNC__DISC_DAEMON_DOWN) d->stats.daemon_down++;
    return rc;
}

const char *tsync__disc_self_name(tsync__disc *d)
{
    return d->ops->self_name(d);
}

void tsync__disc_stats_get(tsync__disc *d, tsync__disc_stats *out)
{
    *out = d->stats;
}

void tsync__disc_free(tsync__disc *d)
{
    if (d) d->ops->free(d);
}

/* ---------------------------------------------------------------- the static backend */

typedef struct {
    tsync__disc base;
    size_t n, next; /* peers, and the next one to report */
    tsync__disc_event *peers;
} disc_static;

static int host_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
           c == '.' || c == '_';
}

/* "tcp://HOST:PORT[#KEY]" into ev (kind, name, endpoint, key). Strict, so a typo is an error at
 * start rather than a peer that is silently never reached. */
static int parse_spec(const char *spec, tsync__disc_event *ev)
{
    memset(ev, 0, sizeof *ev);
    ev->kind = TSYNC__DISC_FOUND;
    const char *hash = strchr(spec, '#');
    size_t elen = hash ? (size_t)(hash - spec) : strlen(spec);
    const char *usage = "expected tcp://HOST:PORT or tcp://HOST:PORT#KEY";
    if (elen < 6 || strncmp(spec, "tcp://", 6) != 0)
        return tsync__err(TSYNC_EINVAL, "peer '%s': %s", spec, usage);
    if (elen >= TSYNC__DISC_EP_LEN)
        return tsync__err(TSYNC_EINVAL, "peer '%s': longer than %d characters", spec,
                          TSYNC__DISC_EP_LEN - 1);
    const char *host = spec + 6, *end = spec + elen, *colon;
    if (*host == '[') {
        const char *rb = memchr(host, ']', (size_t)(end - host));
        if (!rb || rb == host + 1 || rb + 1 >= end || rb[1] != ':')
            return tsync__err(TSYNC_EINVAL, "peer '%s': an IPv6 address goes in brackets: %s", spec,
                              "tcp://[ADDR]:PORT");
        for (const char *p = host + 1; p < rb; p++)
            if (!host_char(*p) && *p != ':' && *p != '%')
                return tsync__err(TSYNC_EINVAL, "peer '%s': bad character in the address", spec);
        colon = rb + 1;
    } else {
        colon = NULL;
        for (const char *p = host; p < end; p++)
            if (*p == ':') colon = p;
        if (!colon || colon == host) return tsync__err(TSYNC_EINVAL, "peer '%s': %s", spec, usage);
        for (const char *p = host; p < colon; p++)
            if (!host_char(*p))
                return tsync__err(TSYNC_EINVAL, "peer '%s': bad character in the host name", spec);
    }
    unsigned long port = 0;
    size_t digits = (size_t)(end - colon - 1);
    for (const char *p = colon + 1; p < end; p++) {
        if (*p < '0' || *p > '9' || port > 65535) {
            port = 0;
            break;
        }
        port = port * 10 + (unsigned long)(*p - '0');
    }
    if (digits == 0 || digits > 5 || port == 0 || port > 65535)
        return tsync__err(TSYNC_EINVAL, "peer '%s': the port must be a number from 1 to 65535",
                          spec);
    memcpy(ev->endpoint, spec, elen);
    snprintf(ev->name, sizeof ev->name, "%.*s", (int)sizeof ev->name - 1, ev->endpoint);
    if (hash) {
        const char *hex = hash + 1;
        uint8_t curve[32];
        if (tsync__unhex(hex, ev->key, sizeof ev->key) != 0)
            return tsync__err(TSYNC_EINVAL,
                              "peer '%s': KEY must be 64 hex digits (the peer device's Ed25519 "
                              "public key, \"public_key\" in its state JSON)",
                              spec);
        if (crypto_sign_ed25519_pk_to_curve25519(curve, ev->key) != 0)
            return tsync__err(TSYNC_EINVAL, "peer '%s': KEY is not a valid public key", spec);
        ev->has_key = 1;
    }
    return 0;
}

static int static_fd(tsync__disc *d)
{
    return -1;
}

static int static_timeout_ms(tsync__disc *d)
{
    disc_static *s = (disc_static *)d;
    return s->next < s->n ? 0 : -1;
}

static int static_poll(tsync__disc *d, tsync__disc_event *ev)
{
    disc_static *s = (disc_static *)d;
    if (s->next >= s->n) return 0;
    *ev = s->peers[s->next++];
    return 1;
}

static void static_free(tsync__disc *d)
{
    disc_static *s = (disc_static *)d;
    free(s->peers);
    free(s);
}

static const char *static_self_name(tsync__disc *d)
{
    return NULL;
}

static const tsync__disc_ops static_ops = {
    static_fd, static_timeout_ms, static_poll, static_self_name, static_free,
};

int tsync__disc_static_new(tsync__disc **out, const char *const *endpoints, size_t n)
{
    *out = NULL;
    if (n && !endpoints) return tsync__err(TSYNC_EINVAL, "static discovery: no endpoint list");
    if (sodium_init() < 0) return tsync__err(TSYNC_ERROR, "libsodium failed to initialise");
    disc_static *s = calloc(1, sizeof *s);
    if (!s || (n && !(s->peers = calloc(n, sizeof *s->peers)))) {
        free(s);
        return tsync__err(TSYNC_ENOMEM, "static discovery: out of memory");
    }
    s->base.ops = &static_ops;
    for (size_t i = 0; i < n; i++) {
        if (!endpoints[i]) {
            static_free(&s->base);
            return tsync__err(TSYNC_EINVAL, "static discovery: endpoint %zu is NULL", i);
        }
        tsync__disc_event ev;
        int rc = parse_spec(endpoints[i], &ev);
        if (rc) {
            static_free(&s->base);
            return rc;
        }
        int dup = 0; /* the same spec twice is one peer */
        for (size_t j = 0; j < s->n && !dup; j++)
            dup = !strcmp(s->peers[j].endpoint, ev.endpoint) && s->peers[j].has_key == ev.has_key &&
                  !memcmp(s->peers[j].key, ev.key, sizeof ev.key);
        if (!dup) s->peers[s->n++] = ev;
    }
    *out = &s->base;
    return 0;
}
