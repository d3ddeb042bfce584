/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/hostile_relay.c — a hostile relay for tests (docs/RELAY.md, "A hostile relay";
 * tests/net/test_relay_hostile.c): the real relay server (net/relay/relay.c, its store, its
 * protocol) with a tamper hook on what it serves, RENV answers to RGET and pushes.
 *
 *   hostile_relay DIR MODE     (DIR made by `tillsync relay init`, shops admitted as usual)
 *
 * It listens on tcp://127.0.0.1:* and logs like `tillsync relay run` ("relay: listening on EP")
 * on stderr, plus one "hostile: ..." line per envelope it tampered with. MODE:
 *   flip     flips the last byte (inside the AEAD tag) of each envelope the first time it is
 *            served; served again, it is intact
 *   drop     omits every other envelope of an RENV (never its first or last) the first time
 *            it is served: a gap in the middle of a range; pushes of one envelope: every other
 *   reorder  serves the envelopes of every RENV in reverse order
 *   replay   adds the origin's first envelope (an older range) to every RENV whose envelopes or
 *            RGET start above it, as if it were new
 *   foreign  adds an envelope of another shop stored on this relay to every RENV
 * Without a relay's production code changed: the hook is set through net/relay/relay_int.h, which
 * neither the CLI nor the public API reaches.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/relay/relay_int.h"
#include "tillsync/relay.h"
#include "util/util.h"

enum { FLIP, DROP, REORDER, REPLAY, FOREIGN };
static const char *const modes[] = {"flip", "drop", "reorder", "replay", "foreign", NULL};

#define MAX_SEEN 65536u
#define MAX_OUT  1100u

typedef struct {
    int64_t shop;
    uint8_t origin[16];
    uint64_t first;
} seen_key;

static struct {
    int mode;
    seen_key *seen;
    uint32_t nseen;
    uint64_t pushes;
    tsync__renv out[MAX_OUT];
    uint8_t *own[MAX_OUT]; /* copies made for the last RENV, freed at the next call */
    uint32_t nown;
} h;

static volatile sig_atomic_t stop;

static void on_signal(int sig)
{
    (void)sig;
    stop = 1;
}

static void log_line(void *ctx, int level, const char *line)
{
    (void)ctx;
    (void)level;
    fprintf(stderr, "%s\n", line);
    fflush(stderr);
}

/* Whether e of shop was served before; marks it served. */
static int seen(int64_t shop, const tsync__renv *e)
{
    for (uint32_t i = 0; i < h.nseen; i++)
        if (h.seen[i].shop == shop && h.seen[i].first == e->first_seq &&
            !memcmp(h.seen[i].origin, e->origin, 16))
            return 1;
    if (h.nseen < MAX_SEEN) {
        seen_key *k = &h.seen[h.nseen++];
        k->shop = shop;
        memcpy(k->origin, e->origin, 16);
        k->first = e->first_seq;
    }
    return 0;
}

static const uint8_t *keep(const uint8_t *b, size_t len)
{
    uint8_t *c = malloc(len);
    if (!c) abort();
    memcpy(c, b, len);
    h.own[h.nown++] = c;
    return c;
}

static void say(const char *what, int64_t shop, const tsync__renv *e)
{
    char o[17];
    tsync__hex(e->origin, 8, o);
    fprintf(stderr, "hostile: %s shop %lld origin %s batches %llu..%llu\n", what, (long long)shop,
            o, (unsigned long long)e->first_seq, (unsigned long long)e->last_seq);
    fflush(stderr);
}

/* The first envelope get finds (copied into the out array at *n). */
typedef struct {
    tsync__renv *e;
    int found;
} first_ctx;

static int first_one(void *ctx, const tsync__renv *e)
{
    first_ctx *c = ctx;
    *c->e = *e;
    c->e->bytes = keep(e->bytes, e->len);
    c->found = 1;
    return 1;
}

static int first_of(tsync__rstore *st, int64_t shop, const uint8_t origin[16], tsync__renv *out)
{
    first_ctx c = {out, 0};
    return st->ops->get(st, shop, origin, 1, first_one, &c) == 0 && c.found;
}

/* Another shop's first origin (the shops' handles are small integers). */
typedef struct {
    uint8_t origin[16];
    int found;
} origin_ctx;

static int origin_one(void *ctx, const uint8_t origin[16], const tsync__rrange *g, uint32_t n)
{
    (void)g;
    (void)n;
    origin_ctx *c = ctx;
    memcpy(c->origin, origin, 16);
    c->found = 1;
    return 1;
}

static int foreign_env(tsync__rstore *st, int64_t shop, tsync__renv *out)
{
    for (int64_t other = 1; other <= 16; other++) {
        if (other == shop) continue;
        origin_ctx c = {{0}, 0};
        st->ops->ranges(st, other, origin_one, &c);
        if (c.found && first_of(st, other, c.origin, out)) return 1;
    }
    return 0;
}

static void tamper(void *ctx, tsync__rstore *st, int64_t shop, const tsync__rmsg *get,
                   tsync__rmsg *m)
{
    (void)ctx;
    for (uint32_t i = 0; i < h.nown; i++) free(h.own[i]);
    h.nown = 0;
    uint32_t n = 0;
    if (m->nenvs + 1 > MAX_OUT) return;
    switch (h.mode) {
    case FLIP:
        for (uint32_t i = 0; i < m->nenvs; i++) {
            h.out[n] = m->envs[i];
            if (!seen(shop, &m->envs[i])) {
                uint8_t *c = (uint8_t *)keep(m->envs[i].bytes, m->envs[i].len);
                c[m->envs[i].len - 1] ^= 0x5a;
                h.out[n].bytes = c;
                say("flipped a byte of", shop, &m->envs[i]);
            }
            n++;
        }
        break;
    case DROP:
        for (uint32_t i = 0; i < m->nenvs; i++) {
            int single = !get && m->nenvs == 1;
            int drop = single ? h.pushes++ % 2 == 1 : i % 2 == 1 && i + 1 < m->nenvs;
            if (drop && !seen(shop, &m->envs[i])) {
                say("dropped", shop, &m->envs[i]);
                continue;
            }
            h.out[n++] = m->envs[i];
        }
        break;
    case REORDER:
        for (uint32_t i = 0; i < m->nenvs; i++) h.out[n++] = m->envs[m->nenvs - 1 - i];
        if (m->nenvs > 1) say("reversed an RENV ending with", shop, &m->envs[m->nenvs - 1]);
        break;
    case REPLAY: {
        for (uint32_t i = 0; i < m->nenvs; i++) h.out[n++] = m->envs[i];
        const uint8_t *origin = get ? get->origin : m->nenvs ? m->envs[0].origin : NULL;
        uint64_t above = get ? get->from_seq : m->nenvs ? m->envs[0].first_seq : 0;
        if (origin && first_of(st, shop, origin, &h.out[n])) {
            if (h.out[n].last_seq < above) {
                say("replayed", shop, &h.out[n]);
                n++;
            }
        }
        break;
    }
    case FOREIGN:
        for (uint32_t i = 0; i < m->nenvs; i++) h.out[n++] = m->envs[i];
        if (foreign_env(st, shop, &h.out[n])) {
            say("served another shop's", shop, &h.out[n]);
            n++;
        }
        break;
    }
    m->envs = h.out;
    m->nenvs = n;
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: hostile_relay DIR flip|drop|reorder|replay|foreign\n");
        return 2;
    }
    h.mode = -1;
    for (int i = 0; modes[i]; i++)
        if (!strcmp(argv[2], modes[i])) h.mode = i;
    if (h.mode < 0) {
        fprintf(stderr, "hostile_relay: unknown mode %s\n", argv[2]);
        return 2;
    }
    h.seen = calloc(MAX_SEEN, sizeof *h.seen);
    if (!h.seen) return 1;
    signal(SIGTERM, on_signal);
    signal(SIGINT, on_signal);
    tsync_relay_options o = TSYNC_RELAY_OPTIONS_INIT;
    o.listen = "tcp://127.0.0.1:*";
    o.log = log_line;
    o.log_level = TSYNC_LOG_INFO;
    tsync_relay *r;
    if (tsync_relay_new(&r, argv[1], &o)) {
        fprintf(stderr, "hostile_relay: %s\n", tsync_error_last()->message);
        return 1;
    }
    tsync__relay_set_tamper(r, tamper, NULL);
    int rc = tsync_relay_run(r, &stop);
    tsync_relay_free(r);
    for (uint32_t i = 0; i < h.nown; i++) free(h.own[i]);
    free(h.seen);
    return rc ? 1 : 0;
}
