/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/relay_store_nats_env.c — envelopes on JetStream (design notes in
 * store/relay_store_nats_int.h): one message per envelope in the shop's stream, its index in the
 * subject; put with quota reservation and JetStream's duplicate window; ranges and get read the
 * subject index; the feed follows what other relay processes store.
 */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "relay_store_nats_int.h"

#define MAX_FEEDS 4096 /* shops one relay process follows */

typedef struct {
    uint8_t origin[TSYNC__SITE_BYTES];
    uint64_t first, last;
} idx;

/* tsync.<id>.e.<origin>.<first>.<last> into x; -1 when it is not an envelope subject. */
static int parse_subject(const char *subj, idx *x)
{
    const char *p = strstr(subj, ".e.");
    if (!p || strlen(p + 3) < TSYNC__NATS_OHEX + 4) return -1;
    char oh[TSYNC__NATS_OHEX + 1];
    memcpy(oh, p + 3, TSYNC__NATS_OHEX);
    oh[TSYNC__NATS_OHEX] = 0;
    if (tsync__nats_unhex(x->origin, TSYNC__SITE_BYTES, oh) != 0 || p[3 + TSYNC__NATS_OHEX] != '.')
        return -1;
    char *end;
    x->first = strtoull(p + 4 + TSYNC__NATS_OHEX, &end, 10);
    if (*end != '.') return -1;
    x->last = strtoull(end + 1, &end, 10);
    return *end || x->first == 0 || x->last < x->first ? -1 : 0;
}

typedef struct {
    idx *v;
    size_t n, cap;
} idx_list;

static int idx_add(void *ctx, const char *subj)
{
    idx_list *l = ctx;
    idx x;
    if (parse_subject(subj, &x) != 0) return 0;
    void *g = tsync__nats_grow(l->v, &l->cap, l->n, sizeof *l->v);
    if (!g) return TSYNC_ENOMEM;
    l->v = g;
    l->v[l->n++] = x;
    return 0;
}

static int idx_cmp(const void *a, const void *b)
{
    const idx *x = a, *y = b;
    int c = memcmp(x->origin, y->origin, TSYNC__SITE_BYTES);
    if (c) return c;
    return x->first < y->first ? -1 : x->first > y->first;
}

static void env_subject(char *out, int64_t id, const tsync__renv *e)
{
    char oh[TSYNC__NATS_OHEX + 1];
    tsync__nats_hex(oh, e->origin, TSYNC__SITE_BYTES);
    snprintf(out, TSYNC__NATS_SUBJ, "tsync.%" PRId64 ".e.%s.%" PRIu64 ".%" PRIu64, id, oh,
             e->first_seq, e->last_seq);
}

int tsync__nats_put(tsync__rstore *b, int64_t shop, uint64_t quota, const tsync__renv *envs,
                    uint32_t n, uint64_t *stored, uint64_t *dup)
{
    tsync__nx *s = (tsync__nx *)b;
    *stored = *dup = 0;
    char a[65];
    int rc = tsync__nats_admin_of(s, shop, a);
    if (rc) return rc;
    uint8_t *isnew = calloc(n ? n : 1, 1);
    if (!isnew) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    tsync__nats_reserve_ctx res = {quota, 0, 0};
    for (uint32_t i = 0; !rc && i < n; i++) {
        const tsync__renv *e = &envs[i];
        int seen = 0;
        for (uint32_t k = 0; k < i && !seen; k++)
            seen = isnew[k] && envs[k].first_seq == e->first_seq &&
                   !memcmp(envs[k].origin, e->origin, TSYNC__SITE_BYTES);
        if (!seen) {
            char oh[TSYNC__NATS_OHEX + 1], filter[TSYNC__NATS_SUBJ];
            tsync__nats_hex(oh, e->origin, TSYNC__SITE_BYTES);
            snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.%" PRIu64 ".*", shop, oh,
                     e->first_seq);
            int have = 0;
            rc = tsync__nats_subjects(s, shop, filter, tsync__nats_count_one, &have);
            seen = have > 0;
        }
        if (!rc && !seen) {
            isnew[i] = 1;
            res.bytes += (int64_t)e->len;
            res.envelopes++;
        }
    }
    if (!rc && res.bytes > 0) rc = tsync__nats_shop_update(s, a, tsync__nats_reserve_fn, &res);
    if (rc) {
        free(isnew);
        return rc;
    }
    /* Publish; what JetStream says is a duplicate (another relay stored it a moment ago) and what
     * could not be published is given back. */
    tsync__nats_reserve_ctx back = {quota, 0, 0};
    for (uint32_t i = 0; i < n; i++) {
        const tsync__renv *e = &envs[i];
        if (!isnew[i]) {
            (*dup)++;
            continue;
        }
        if (rc) {
            back.bytes -= (int64_t)e->len;
            back.envelopes--;
            continue;
        }
        char subj[TSYNC__NATS_SUBJ], msgid[TSYNC__NATS_OHEX + 24];
        env_subject(subj, shop, e);
        tsync__nats_hex(msgid, e->origin, TSYNC__SITE_BYTES);
        snprintf(msgid + TSYNC__NATS_OHEX, sizeof msgid - TSYNC__NATS_OHEX, ".%" PRIu64,
                 e->first_seq);
        natsMsg *m = NULL;
        jsPubAck *ack = NULL;
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msgid;
        jsErrCode je = 0;
        natsStatus st = natsMsg_Create(&m, subj, NULL, (const char *)e->bytes, (int)e->len);
        if (st == NATS_OK) st = natsMsgHeader_Set(m, "Tsync-Relay", s->instance);
        if (st == NATS_OK) st = js_PublishMsg(&ack, s->js, m, &po, &je);
        if (st == NATS_OK && ack->Duplicate) {
            (*dup)++;
            back.bytes -= (int64_t)e->len;
            back.envelopes--;
        } else if (st == NATS_OK) {
            (*stored)++;
        } else {
            /* No answer is not "not stored" (the ack may be what was lost): ask. */
            rc = tsync__nats_err(s, subj, st);
            int have = 0;
            if (tsync__nats_subjects(s, shop, subj, tsync__nats_count_one, &have) == 0 &&
                have > 0) {
                rc = 0;
                (*stored)++;
            } else {
                back.bytes -= (int64_t)e->len;
                back.envelopes--;
            }
        }
        jsPubAck_Destroy(ack);
        natsMsg_Destroy(m);
    }
    free(isnew);
    if (back.envelopes) {
        int r2 = tsync__nats_shop_update(s, a, tsync__nats_reserve_fn, &back);
        if (!rc) rc = r2;
    }
    if (rc) *stored = 0;
    return rc;
}

int tsync__nats_ranges(tsync__rstore *b, int64_t shop, tsync__rstore_ranges_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    char filter[64];
    snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.>", shop);
    idx_list l = {0};
    int rc = tsync__nats_subjects(s, shop, filter, idx_add, &l);
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, idx_cmp);
    tsync__rrange *rg = l.n ? malloc(l.n * sizeof *rg) : NULL;
    if (!rc && l.n && !rg) rc = tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    uint32_t nr = 0;
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (nr > 0 && memcmp(l.v[i].origin, l.v[i - 1].origin, TSYNC__SITE_BYTES) != 0) {
            rc = fn(ctx, l.v[i - 1].origin, rg, nr);
            nr = 0;
            if (rc) break;
        }
        if (nr > 0 && l.v[i].first <= rg[nr - 1].last + 1) {
            if (l.v[i].last > rg[nr - 1].last) rg[nr - 1].last = l.v[i].last;
            continue;
        }
        rg[nr++] = (tsync__rrange){l.v[i].first, l.v[i].last};
    }
    if (!rc && nr > 0) rc = fn(ctx, l.v[l.n - 1].origin, rg, nr);
    free(rg);
    free(l.v);
    return rc;
}

int tsync__nats_get(tsync__rstore *b, int64_t shop, const uint8_t origin[TSYNC__SITE_BYTES],
                    uint64_t from, tsync__rstore_env_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    char oh[TSYNC__NATS_OHEX + 1], filter[TSYNC__NATS_SUBJ], name[40];
    tsync__nats_hex(oh, origin, TSYNC__SITE_BYTES);
    snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.*.*", shop, oh);
    tsync__nats_stream_name(name, sizeof name, shop);
    idx_list l = {0};
    int rc = tsync__nats_subjects(s, shop, filter, idx_add, &l);
    if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, idx_cmp);
    for (size_t i = 0; !rc && i < l.n; i++) {
        if (l.v[i].last < from) continue;
        tsync__renv e = {.first_seq = l.v[i].first, .last_seq = l.v[i].last};
        memcpy(e.origin, origin, TSYNC__SITE_BYTES);
        char subj[TSYNC__NATS_SUBJ];
        env_subject(subj, shop, &e);
        natsMsg *m = NULL;
        jsErrCode je = 0;
        natsStatus st = js_GetLastMsg(&m, s->js, name, subj, NULL, &je);
        if (st != NATS_OK) {
            rc = tsync__nats_err(s, subj, st);
            break;
        }
        e.bytes = (const uint8_t *)natsMsg_GetData(m);
        e.len = (size_t)natsMsg_GetDataLength(m);
        rc = fn(ctx, &e);
        natsMsg_Destroy(m);
    }
    free(l.v);
    return rc == 1 ? 0 : rc;
}

/* ---------------------------------------------------------------- the feed */

int tsync__nats_feed_watch(tsync__rstore *b, int64_t shop, int on)
{
    tsync__nx *s = (tsync__nx *)b;
    uint32_t i = 0;
    while (i < s->nsubs && s->subs[i].shop != shop) i++;
    if (!on) {
        if (i < s->nsubs) {
            natsSubscription_Unsubscribe(s->subs[i].sub);
            natsSubscription_Destroy(s->subs[i].sub);
            s->subs[i] = s->subs[--s->nsubs];
        }
        return 0;
    }
    if (i < s->nsubs) return 0;
    if (s->nsubs == s->capsubs) {
        uint32_t nc = s->capsubs ? s->capsubs * 2 : 16;
        tsync__nats_feed_sub *v = nc <= MAX_FEEDS ? realloc(s->subs, nc * sizeof *v) : NULL;
        if (!v) return tsync__err(TSYNC_ENOMEM, "relay store: too many shops watched");
        s->subs = v;
        s->capsubs = nc;
    }
    char subj[64];
    snprintf(subj, sizeof subj, "tsync.%" PRId64 ".e.>", shop);
    natsSubscription *sub = NULL;
    natsStatus st = natsConnection_SubscribeSync(&sub, s->nc, subj);
    /* The server has the subscription before the relay answers the session (RHAVE): what
     * another relay stores after that is pushed. */
    if (st == NATS_OK) st = natsConnection_FlushTimeout(s->nc, 2000);
    if (st != NATS_OK) {
        natsSubscription_Destroy(sub);
        return tsync__nats_err(s, subj, st);
    }
    s->subs[s->nsubs++] = (tsync__nats_feed_sub){shop, sub};
    return 0;
}

int tsync__nats_feed_next(tsync__rstore *b, tsync__rstore_feed_fn fn, void *ctx)
{
    tsync__nx *s = (tsync__nx *)b;
    int got = 0;
    for (uint32_t i = 0; i < s->nsubs; i++) {
        natsMsg *m;
        /* At most 64 per shop and call, so one busy shop does not hold up the relay's loop. */
        for (int k = 0; k < 64 && natsSubscription_NextMsg(&m, s->subs[i].sub, 0) == NATS_OK; k++) {
            const char *who = NULL;
            idx x;
            if (!(natsMsgHeader_Get(m, "Tsync-Relay", &who) == NATS_OK && who &&
                  !strcmp(who, s->instance)) &&
                parse_subject(natsMsg_GetSubject(m), &x) == 0) {
                tsync__renv e = {.first_seq = x.first, .last_seq = x.last};
                memcpy(e.origin, x.origin, TSYNC__SITE_BYTES);
                e.bytes = (const uint8_t *)natsMsg_GetData(m);
                e.len = (size_t)natsMsg_GetDataLength(m);
                if (e.len > 0) {
                    fn(ctx, s->subs[i].shop, &e);
                    got++;
                }
            }
            natsMsg_Destroy(m);
        }
    }
    return got;
}
