/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/meta.c — per-row clock metadata, kept as one msgpack blob per row in tsync_clk_<table>
 * rather than one row per column (compact, and one b-tree write per changed row):
 *   [ exist: [site, add, rmv, ...], cols: [col, hlc, site, ...], ctrs: [[col, [site, p, n,
 * ...]]...] ] Sites are indexes in tsync_sites. The blob is written only by this database, but it
 * is decoded strictly all the same: a damaged database must give an error, not a crash.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int tsync__rowmeta_init(tsync__rowmeta *m, int ncols)
{
    memset(m, 0, sizeof *m);
    m->ncols = ncols;
    m->col = calloc(ncols > 0 ? (size_t)ncols : 1, sizeof *m->col);
    return m->col ? 0 : tsync__err(TSYNC_ENOMEM, "out of memory");
}

void tsync__rowmeta_clear(tsync__rowmeta *m)
{
    free(m->exist);
    free(m->col);
    for (size_t i = 0; i < m->nctrs; i++) free(m->ctrs[i].v);
    free(m->ctrs);
    memset(m, 0, sizeof *m);
}

static int grow_exist(tsync__rowmeta *m)
{
    if (m->nexist < m->existcap) return 0;
    size_t nc = m->existcap ? m->existcap * 2 : 4;
    tsync__exist *e = realloc(m->exist, nc * sizeof *e);
    if (!e) return TSYNC_ENOMEM;
    m->exist = e;
    m->existcap = nc;
    return 0;
}

const tsync__ctrset *tsync__rowmeta_ctr(const tsync__rowmeta *m, int col)
{
    for (size_t i = 0; i < m->nctrs; i++)
        if (m->ctrs[i].col == (uint32_t)col) return &m->ctrs[i];
    return NULL;
}

/* The counter set of col with room for one more entry; created when missing. */
static tsync__ctrset *ctr_room(tsync__rowmeta *m, int col)
{
    tsync__ctrset *c = (tsync__ctrset *)tsync__rowmeta_ctr(m, col);
    if (!c) {
        tsync__ctrset *nc = realloc(m->ctrs, (m->nctrs + 1) * sizeof *nc);
        if (!nc) return NULL;
        m->ctrs = nc;
        c = &m->ctrs[m->nctrs++];
        memset(c, 0, sizeof *c);
        c->col = (uint32_t)col;
    }
    if (c->n == c->cap) {
        size_t cap = c->cap ? c->cap * 2 : 2;
        tsync__pn *v = realloc(c->v, cap * sizeof *v);
        if (!v) return NULL;
        c->v = v;
        c->cap = cap;
    }
    return c;
}

int tsync__rowmeta_exist_merge(tsync__rowmeta *m, uint32_t site, tsync__hlc add, tsync__hlc rmv)
{
    if (grow_exist(m)) return tsync__err(TSYNC_ENOMEM, "out of memory");
    m->nexist = tsync__orset_merge(m->exist, m->nexist, site, add, rmv);
    return 0;
}

int tsync__rowmeta_ctr_merge(tsync__rowmeta *m, int col, uint32_t site, uint64_t p, uint64_t n)
{
    tsync__ctrset *c = ctr_room(m, col);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->n = tsync__pn_merge(c->v, c->n, site, p, n);
    return 0;
}

int tsync__rowmeta_ctr_add(tsync__rowmeta *m, int col, uint32_t site, int64_t delta)
{
    tsync__ctrset *c = ctr_room(m, col);
    if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
    c->n = tsync__pn_add(c->v, c->n, site, delta);
    return 0;
}

int tsync__rowmeta_decode(tsync__rowmeta *m, const uint8_t *p, size_t n)
{
    tsync__mpr r;
    uint32_t k, ne, nc, nk;
    tsync__mpr_init(&r, p, n);
    if (!tsync__mpr_array(&r, &k) || k != 3 || !tsync__mpr_array(&r, &ne) || ne % 3) goto bad;
    for (uint32_t i = 0; i < ne / 3; i++) {
        uint64_t site, add, rmv;
        if (!tsync__mpr_uint(&r, &site) || !tsync__mpr_uint(&r, &add) ||
            !tsync__mpr_uint(&r, &rmv) || site > UINT32_MAX)
            goto bad;
        if (grow_exist(m)) return tsync__err(TSYNC_ENOMEM, "out of memory");
        m->exist[m->nexist++] = (tsync__exist){(uint32_t)site, add, rmv};
    }
    if (!tsync__mpr_array(&r, &nc) || nc % 3) goto bad;
    for (uint32_t i = 0; i < nc / 3; i++) {
        uint64_t col, hlc, site;
        if (!tsync__mpr_uint(&r, &col) || !tsync__mpr_uint(&r, &hlc) ||
            !tsync__mpr_uint(&r, &site) || col >= (uint64_t)m->ncols || site > UINT32_MAX)
            goto bad;
        m->col[col] = (tsync__colclk){hlc, (uint32_t)site};
    }
    if (!tsync__mpr_array(&r, &nk)) goto bad;
    for (uint32_t i = 0; i < nk; i++) {
        uint32_t two, np;
        uint64_t col;
        if (!tsync__mpr_array(&r, &two) || two != 2 || !tsync__mpr_uint(&r, &col) ||
            col >= (uint64_t)m->ncols || tsync__rowmeta_ctr(m, (int)col) ||
            !tsync__mpr_array(&r, &np) || np % 3)
            goto bad;
        for (uint32_t j = 0; j < np / 3; j++) {
            uint64_t site, pp, nn;
            if (!tsync__mpr_uint(&r, &site) || !tsync__mpr_uint(&r, &pp) ||
                !tsync__mpr_uint(&r, &nn) || site > UINT32_MAX)
                goto bad;
            tsync__ctrset *c = ctr_room(m, (int)col);
            if (!c) return tsync__err(TSYNC_ENOMEM, "out of memory");
            c->v[c->n++] = (tsync__pn){(uint32_t)site, pp, nn};
        }
    }
    if (!tsync__mpr_done(&r)) goto bad;
    return 0;
bad:
    return tsync__err(TSYNC_ECORRUPT, "row clock metadata is damaged");
}

typedef struct {
    uint8_t **buf;
    size_t *cap, len;
    int oom;
} wbuf;

static int wbuf_write(void *data, const char *p, size_t n)
{
    wbuf *w = data;
    if (w->len + n > *w->cap) {
        size_t nc = (*w->cap ? *w->cap : 64);
        while (nc < w->len + n) nc *= 2;
        uint8_t *nb = realloc(*w->buf, nc);
        if (!nb) {
            w->oom = 1;
            return -1;
        }
        *w->buf = nb;
        *w->cap = nc;
    }
    memcpy(*w->buf + w->len, p, n);
    w->len += n;
    return 0;
}

int tsync__rowmeta_encode(const tsync__rowmeta *m, uint8_t **buf, size_t *cap, size_t *len)
{
    wbuf w = {buf, cap, 0, 0};
    msgpack_packer pk;
    msgpack_packer_init(&pk, &w, wbuf_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_array(&pk, m->nexist * 3);
    for (size_t i = 0; i < m->nexist; i++) {
        msgpack_pack_uint32(&pk, m->exist[i].site);
        msgpack_pack_uint64(&pk, m->exist[i].add);
        msgpack_pack_uint64(&pk, m->exist[i].rmv);
    }
    size_t nc = 0, nk = 0;
    for (int c = 0; c < m->ncols; c++)
        if (m->col[c].hlc) nc++;
    for (size_t i = 0; i < m->nctrs; i++)
        if (m->ctrs[i].n) nk++;
    msgpack_pack_array(&pk, nc * 3);
    for (int c = 0; c < m->ncols; c++)
        if (m->col[c].hlc) {
            msgpack_pack_uint32(&pk, (uint32_t)c);
            msgpack_pack_uint64(&pk, m->col[c].hlc);
            msgpack_pack_uint32(&pk, m->col[c].site);
        }
    msgpack_pack_array(&pk, nk);
    for (size_t i = 0; i < m->nctrs; i++) {
        const tsync__ctrset *c = &m->ctrs[i];
        if (!c->n) continue;
        msgpack_pack_array(&pk, 2);
        msgpack_pack_uint32(&pk, c->col);
        msgpack_pack_array(&pk, c->n * 3);
        for (size_t j = 0; j < c->n; j++) {
            msgpack_pack_uint32(&pk, c->v[j].site);
            msgpack_pack_uint64(&pk, c->v[j].p);
            msgpack_pack_uint64(&pk, c->v[j].n);
        }
    }
    if (w.oom) return tsync__err(TSYNC_ENOMEM, "out of memory");
    *len = w.len;
    return 0;
}

/* ---------------------------------------------------------------- row keys */

size_t tsync__key_size(const tsync__val *v, int n)
{
    size_t sz = 0;
    for (int i = 0; i < n; i++) {
        sz += 1;
        if (v[i].type == TSYNC__V_INT || v[i].type == TSYNC__V_REAL)
            sz += 8;
        else if (v[i].type == TSYNC__V_TEXT || v[i].type == TSYNC__V_BLOB)
            sz += 4 + v[i].n;
    }
    return sz;
}

void tsync__key_encode(const tsync__val *v, int n, uint8_t *out)
{
    for (int i = 0; i < n; i++) {
        *out++ = v[i].type;
        if (v[i].type == TSYNC__V_INT) {
            memcpy(out, &v[i].i, 8);
            out += 8;
        } else if (v[i].type == TSYNC__V_REAL) {
            memcpy(out, &v[i].r, 8);
            out += 8;
        } else if (v[i].type == TSYNC__V_TEXT || v[i].type == TSYNC__V_BLOB) {
            memcpy(out, &v[i].n, 4);
            if (v[i].n) memcpy(out + 4, v[i].p, v[i].n);
            out += 4 + v[i].n;
        }
    }
}

int tsync__key_decode(const uint8_t *p, size_t len, tsync__val *v, int n)
{
    const uint8_t *end = p + len;
    for (int i = 0; i < n; i++) {
        if (p >= end) return -1;
        memset(&v[i], 0, sizeof v[i]);
        v[i].type = *p++;
        if (v[i].type == TSYNC__V_INT || v[i].type == TSYNC__V_REAL) {
            if (end - p < 8) return -1;
            if (v[i].type == TSYNC__V_INT)
                memcpy(&v[i].i, p, 8);
            else
                memcpy(&v[i].r, p, 8);
            p += 8;
        } else if (v[i].type == TSYNC__V_TEXT || v[i].type == TSYNC__V_BLOB) {
            if (end - p < 4) return -1;
            memcpy(&v[i].n, p, 4);
            p += 4;
            if ((size_t)(end - p) < v[i].n) return -1;
            v[i].p = p;
            p += v[i].n;
        } else if (v[i].type != TSYNC__V_NULL) {
            return -1;
        }
    }
    return p == end ? 0 : -1;
}

int tsync__key_cmp(const uint8_t *a, uint32_t alen, const uint8_t *b, uint32_t blen, int npk)
{
    tsync__val ka[TSYNC__MAX_PK_COLS], kb[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(a, alen, ka, npk) || tsync__key_decode(b, blen, kb, npk)) return 0;
    for (int i = 0; i < npk; i++) {
        const tsync__val *x = &ka[i], *y = &kb[i];
        /* SQLite's order: NULL, numbers (integers and reals compared by value), text, blob */
        int cx = x->type == TSYNC__V_REAL ? TSYNC__V_INT : x->type;
        int cy = y->type == TSYNC__V_REAL ? TSYNC__V_INT : y->type;
        if (cx != cy) return cx < cy ? -1 : 1;
        if (x->type == TSYNC__V_INT && y->type == TSYNC__V_INT) {
            if (x->i != y->i) return x->i < y->i ? -1 : 1;
        } else if (cx == TSYNC__V_INT) {
            double dx = x->type == TSYNC__V_INT ? (double)x->i : x->r;
            double dy = y->type == TSYNC__V_INT ? (double)y->i : y->r;
            if (dx != dy) return dx < dy ? -1 : 1;
        } else if (cx == TSYNC__V_TEXT || cx == TSYNC__V_BLOB) {
            uint32_t n = x->n < y->n ? x->n : y->n;
            int k = n ? memcmp(x->p, y->p, n) : 0;
            if (k) return k;
            if (x->n != y->n) return x->n < y->n ? -1 : 1;
        }
    }
    return 0;
}

static uint64_t key_hash(int tbl, const uint8_t *k, size_t n)
{
    uint64_t h = 1469598103934665603ULL ^ (uint64_t)(uint32_t)tbl;
    for (size_t i = 0; i < n; i++) h = (h ^ k[i]) * 1099511628211ULL;
    return h ? h : 1;
}

tsync__rmap_ent *tsync__rmap_get(tsync__rmap *m, tsync__arena *a, int tbl, const uint8_t *key,
                                 size_t klen, int create)
{
    if (create && (m->n + 1) * 4 >= m->cap * 3) {
        size_t nc = m->cap ? m->cap * 2 : 64;
        tsync__rmap_ent *ne = calloc(nc, sizeof *ne);
        if (!ne) return NULL;
        for (size_t i = 0; i < m->cap; i++)
            if (m->e[i].h) {
                size_t j = m->e[i].h & (nc - 1);
                while (ne[j].h) j = (j + 1) & (nc - 1);
                ne[j] = m->e[i];
            }
        free(m->e);
        m->e = ne;
        m->cap = nc;
    }
    if (!m->cap) return NULL;
    uint64_t h = key_hash(tbl, key, klen);
    size_t j = h & (m->cap - 1);
    while (m->e[j].h) {
        tsync__rmap_ent *e = &m->e[j];
        if (e->h == h && e->tbl == tbl && e->klen == klen && memcmp(e->key, key, klen) == 0)
            return e;
        j = (j + 1) & (m->cap - 1);
    }
    if (!create) return NULL;
    uint8_t *k = tsync__arena_alloc(a, klen ? klen : 1);
    if (!k) return NULL;
    memcpy(k, key, klen);
    m->e[j] = (tsync__rmap_ent){h, tbl, (uint32_t)klen, k, NULL};
    m->n++;
    return &m->e[j];
}

void tsync__rmap_free(tsync__rmap *m)
{
    free(m->e);
    memset(m, 0, sizeof *m);
}

/* A total order on values: type, then number or bytes (conflict records, LWW ties). */
int tsync__val_cmp(const tsync__val *a, const tsync__val *b)
{
    if (a->type != b->type) return a->type < b->type ? -1 : 1;
    switch (a->type) {
    case TSYNC__V_INT:
        return a->i < b->i ? -1 : a->i > b->i;
    case TSYNC__V_REAL: {
        uint64_t x, y;
        memcpy(&x, &a->r, 8);
        memcpy(&y, &b->r, 8);
        return x < y ? -1 : x > y;
    }
    case TSYNC__V_TEXT:
    case TSYNC__V_BLOB: {
        uint32_t n = a->n < b->n ? a->n : b->n;
        int k = n ? memcmp(a->p, b->p, n) : 0;
        if (k) return k;
        return a->n < b->n ? -1 : a->n > b->n;
    }
    default:
        return 0;
    }
}

/* Capture off (1) or on (0) for this connection only: merged rows must not be captured as local
 * writes; every other connection keeps capturing. */
int tsync__capture_off(tsync_store *s, int on)
{
    if (sqlite3_db_config(s->db, SQLITE_DBCONFIG_ENABLE_TRIGGER, !on, (int *)NULL) != SQLITE_OK)
        return tsync__err(TSYNC_EIO, "cannot switch capture triggers");
    return 0;
}
