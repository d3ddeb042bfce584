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

static int idx_first_cmp(const void *a, const void *b)
{
    const idx *x = a, *y = b;
    return x->first < y->first ? -1 : x->first > y->first;
}

/* Marks in isnew the envelopes of envs that the stream does not hold yet (and that an earlier
 * envelope of the same put does not repeat), adding their bytes to res. One subject lookup per
 * origin: the exact subject's when the put has one envelope of that origin, else the origin's
 * whole list. */
static int find_new(tsync__nx *s, int64_t shop, const tsync__renv *envs, uint32_t n, uint8_t *isnew,
                    tsync__nats_reserve_ctx *res)
{
    uint8_t *done = calloc(n ? n : 1, 1);
    if (!done) return tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    int rc = 0;
    for (uint32_t i = 0; !rc && i < n; i++) {
        if (done[i]) continue;
        const uint8_t *origin = envs[i].origin;
        uint32_t same = 0;
        for (uint32_t j = i; j < n; j++) same += !memcmp(envs[j].origin, origin, TSYNC__SITE_BYTES);
        char oh[TSYNC__NATS_OHEX + 1], filter[TSYNC__NATS_SUBJ];
        tsync__nats_hex(oh, origin, TSYNC__SITE_BYTES);
        if (same == 1)
            snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.%" PRIu64 ".*", shop, oh,
                     envs[i].first_seq);
        else
            snprintf(filter, sizeof filter, "tsync.%" PRId64 ".e.%s.*.*", shop, oh);
        idx_list l = {0};
        rc = tsync__nats_subjects(s, shop, filter, idx_add, &l);
        if (!rc && l.n) qsort(l.v, l.n, sizeof *l.v, idx_first_cmp);
        for (uint32_t j = i; !rc && j < n; j++) {
            const tsync__renv *e = &envs[j];
            if (memcmp(e->origin, origin, TSYNC__SITE_BYTES) != 0) continue;
            done[j] = 1;
            int seen = 0;
            for (uint32_t k = i; k < j && !seen; k++)
                seen = isnew[k] && envs[k].first_seq == e->first_seq &&
                       !memcmp(envs[k].origin, e->origin, TSYNC__SITE_BYTES);
            idx key = {.first = e->first_seq};
            if (!seen && l.n) seen = bsearch(&key, l.v, l.n, sizeof *l.v, idx_first_cmp) != NULL;
            if (!seen) {
                isnew[j] = 1;
                res->bytes += (int64_t)e->len;
                res->envelopes++;
            }
        }
        free(l.v);
    }
    free(done);
    return rc;
}

enum { PUB_WAIT = 0, PUB_STORED, PUB_DUP, PUB_FAILED };

void tsync__nats_on_ack(jsCtx *js, natsMsg *m, jsPubAck *pa, jsPubAckErr *pae, void *closure)
{
    (void)js;
    (void)pae;
    tsync__nx *s = closure;
    pthread_mutex_lock(&s->pub.mu);
    for (uint32_t i = 0; i < s->pub.n; i++)
        if (s->pub.msgs[i] == m) {
            s->pub.msgs[i] = NULL;
            s->pub.state[i] = !pa ? PUB_FAILED : pa->Duplicate ? PUB_DUP : PUB_STORED;
            break;
        }
    pthread_mutex_unlock(&s->pub.mu);
    natsMsg_Destroy(m);
}

/* Publishes the new envelopes of a put together and waits once for JetStream's acks: state[i]
 * says what became of envelope i (PUB_WAIT: no answer). A lone envelope goes by js_PublishMsg:
 * its ack comes back on the connection's reply path, without the hop through the async
 * publish's own delivery thread. */
static void publish_all(tsync__nx *s, int64_t shop, const tsync__renv *envs, uint32_t n,
                        const uint8_t *isnew, natsMsg **msgs, int *state)
{
    uint32_t nnew = 0;
    for (uint32_t i = 0; i < n; i++) nnew += isnew[i];
    pthread_mutex_lock(&s->pub.mu);
    s->pub.msgs = msgs;
    s->pub.state = state;
    s->pub.n = n;
    pthread_mutex_unlock(&s->pub.mu);
    int sent = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!isnew[i]) continue;
        const tsync__renv *e = &envs[i];
        char subj[TSYNC__NATS_SUBJ], msgid[TSYNC__NATS_OHEX + 24];
        env_subject(subj, shop, e);
        tsync__nats_hex(msgid, e->origin, TSYNC__SITE_BYTES);
        snprintf(msgid + TSYNC__NATS_OHEX, sizeof msgid - TSYNC__NATS_OHEX, ".%" PRIu64,
                 e->first_seq);
        jsPubOptions po;
        jsPubOptions_Init(&po);
        po.MsgId = msgid;
        natsMsg *m = NULL;
        natsStatus st = natsMsg_Create(&m, subj, NULL, (const char *)e->bytes, (int)e->len);
        if (st == NATS_OK) st = natsMsgHeader_Set(m, "Tsync-Relay", s->instance);
        pthread_mutex_lock(&s->pub.mu);
        msgs[i] = m;
        pthread_mutex_unlock(&s->pub.mu);
        natsMsg *owned = m;
        if (st == NATS_OK && nnew == 1) {
            jsPubAck *ack = NULL;
            jsErrCode je = 0;
            st = js_PublishMsg(&ack, s->js, m, &po, &je);
            pthread_mutex_lock(&s->pub.mu);
            msgs[i] = NULL;
            state[i] = st != NATS_OK ? PUB_FAILED : ack->Duplicate ? PUB_DUP : PUB_STORED;
            pthread_mutex_unlock(&s->pub.mu);
            jsPubAck_Destroy(ack);
            natsMsg_Destroy(m);
            continue;
        }
        if (st == NATS_OK) st = js_PublishMsgAsync(s->js, &owned, &po);
        if (st != NATS_OK) {
            /* Not sent: still ours (the library takes the message only when it sends it). */
            pthread_mutex_lock(&s->pub.mu);
            msgs[i] = NULL;
            state[i] = PUB_FAILED;
            pthread_mutex_unlock(&s->pub.mu);
            natsMsg_Destroy(owned);
        } else {
            sent++;
        }
    }
    if (sent) {
        jsPubOptions o;
        jsPubOptions_Init(&o);
        o.MaxWait = 10000; /* as the synchronous calls (a leader election takes a few seconds) */
        if (js_PublishAsyncComplete(s->js, &o) != NATS_OK) {
            /* No answer in time: take the messages back from nats.c (their acks, should they
             * come, are ignored), then let an ack handler already running finish. */
            natsMsgList l = {0};
            if (js_PublishAsyncGetPendingList(&l, s->js) == NATS_OK) natsMsgList_Destroy(&l);
            js_PublishAsyncComplete(s->js, &o);
        }
    }
    pthread_mutex_lock(&s->pub.mu);
    s->pub.msgs = NULL;
    s->pub.state = NULL;
    s->pub.n = 0;
    pthread_mutex_unlock(&s->pub.mu);
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
    natsMsg **msgs = calloc(n ? n : 1, sizeof *msgs);
    int *state = calloc(n ? n : 1, sizeof *state);
    if (!isnew || !msgs || !state) rc = tsync__err(TSYNC_ENOMEM, "relay store: out of memory");
    tsync__nats_reserve_ctx res = {quota, 0, 0};
    if (!rc) rc = find_new(s, shop, envs, n, isnew, &res);
    if (!rc && res.bytes > 0) rc = tsync__nats_shop_update(s, a, tsync__nats_reserve_fn, &res);
    if (!rc) publish_all(s, shop, envs, n, isnew, msgs, state);
    /* What JetStream says is a duplicate (another relay stored it a moment ago) and what could
     * not be published is given back. */
    tsync__nats_reserve_ctx back = {quota, 0, 0};
    char failed[TSYNC__NATS_SUBJ] = "";
    for (uint32_t i = 0; !rc && i < n; i++) {
        const tsync__renv *e = &envs[i];
        if (!isnew[i] || state[i] == PUB_DUP) {
            (*dup)++;
            if (isnew[i]) {
                back.bytes -= (int64_t)e->len;
                back.envelopes--;
            }
            continue;
        }
        if (state[i] == PUB_STORED) {
            (*stored)++;
            continue;
        }
        /* No answer is not "not stored" (the ack may be what was lost): ask. */
        char subj[TSYNC__NATS_SUBJ];
        env_subject(subj, shop, e);
        int have = 0;
        if (tsync__nats_subjects(s, shop, subj, tsync__nats_count_one, &have) == 0 && have > 0) {
            (*stored)++;
        } else {
            back.bytes -= (int64_t)e->len;
            back.envelopes--;
            if (!failed[0]) memcpy(failed, subj, sizeof failed);
        }
    }
    free(isnew);
    free(msgs);
    free(state);
    if (!rc && back.envelopes) rc = tsync__nats_shop_update(s, a, tsync__nats_reserve_fn, &back);
    if (!rc && failed[0])
        rc = tsync__err(TSYNC_EIO, "relay store %s: %s: JetStream did not acknowledge it", s->url,
                        failed);
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
