/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/unsealable.c — row changes too large to seal (over TSYNC_MAX_ROW_BYTES), which only an
 * older build could capture: set aside in tsync_unsealable instead of failing every later seal,
 * reported, and folded back into the seal that finds the row changed again.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "seal_int.h"

/* Sets aside a row change that cannot be sealed (over TSYNC_MAX_ROW_BYTES) in tsync_unsealable,
 * in the form of its pending rows, so it is folded back in when the row changes again. */
int tsync__set_aside(tsync_store *s, const prow *r, size_t bytes)
{
    tsync__val kv[TSYNC__MAX_PK_COLS];
    if (tsync__key_decode(r->key, r->klen, kv, r->t->npk) != 0)
        return tsync__err(TSYNC_ECORRUPT, "bad pending key in %s", r->t->name);
    for (int op = 3; op >= 1; op -= 2) {
        if (op == 3 && !r->seen_delete) continue;
        sqlite3_stmt *st = tsync__prep(s, "INSERT INTO tsync_unsealable(tbl,op,mask,wall,k0,k1,k2,"
                                          "k3,bytes) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)");
        if (!st) return TSYNC_EIO;
        int ins = op == 1 && (r->seen_insert || r->seen_delete);
        sqlite3_bind_int(st, 1, r->t->id);
        sqlite3_bind_int(st, 2, op == 3 ? 3 : ins ? 1 : 2);
        sqlite3_bind_int64(st, 3, op == 3 ? 0 : ins ? -1 : (int64_t)r->mask);
        sqlite3_bind_int64(st, 4, r->wall);
        for (int i = 0; i < r->t->npk; i++) tsync__bind_val(st, 5 + i, &kv[i]);
        sqlite3_bind_int64(st, 9, (int64_t)bytes);
        int x = sqlite3_step(st);
        sqlite3_reset(st);
        if (x != SQLITE_DONE) return tsync__err_sqlite(s->db, x, "set aside an oversize change");
    }
    return 0;
}

struct tsync__aside_ent {
    tsync__aside_ent *next;
    int64_t id, wall;
    uint64_t mask;
    int op;
};

int tsync__aside_load(tsync_store *s, tsync__aside *x)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT id, tbl, op, mask, wall, k0, k1, k2, k3 FROM "
                                      "tsync_unsealable ORDER BY id");
    if (!st) return TSYNC_EIO;
    int rc = 0, step;
    while (rc == 0 && (step = sqlite3_step(st)) == SQLITE_ROW) {
        int tid = sqlite3_column_int(st, 1);
        tsync__table *t = NULL;
        for (int i = 0; i < s->ntables; i++)
            if (s->tables[i].id == tid) t = &s->tables[i];
        if (!t) continue;
        tsync__val kv[TSYNC__MAX_PK_COLS];
        for (int i = 0; i < t->npk; i++) tsync__col_val(st, 5 + i, &kv[i]);
        size_t klen = tsync__key_size(kv, t->npk);
        uint8_t *k = malloc(klen ? klen : 1);
        tsync__aside_ent *e = tsync__arena_alloc(&x->a, sizeof *e);
        if (!k || !e) {
            free(k);
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        tsync__key_encode(kv, t->npk, k);
        tsync__rmap_ent *m = tsync__rmap_get(&x->map, &x->a, tid, k, klen, 1);
        free(k);
        if (!m) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        /* Kept in id order (the fold does not depend on it). */
        *e = (tsync__aside_ent){NULL, sqlite3_column_int64(st, 0), sqlite3_column_int64(st, 4),
                                (uint64_t)sqlite3_column_int64(st, 3), sqlite3_column_int(st, 2)};
        tsync__aside_ent **tail = (tsync__aside_ent **)&m->val;
        while (*tail) tail = &(*tail)->next;
        *tail = e;
    }
    if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = tsync__err_sqlite(s->db, step, "read set-aside changes");
    sqlite3_reset(st);
    return rc;
}

int tsync__aside_fold(tsync__aside *x, prow *r)
{
    if (!x->map.n) return 0; /* the usual case: nothing set aside */
    tsync__rmap_ent *m = tsync__rmap_get(&x->map, &x->a, r->t->id, r->key, r->klen, 0);
    if (!m || !m->val) return 0; /* the row has nothing set aside */
    for (tsync__aside_ent *e = m->val; e; e = e->next) {
        if (e->wall > r->wall) r->wall = e->wall;
        if (e->op == 1)
            r->seen_insert = 1, r->mask = ~0ULL;
        else if (e->op == 2)
            r->mask |= e->mask;
        else if (e->op == 3)
            r->seen_delete = 1;
        if (x->ndrop == x->dropcap) {
            size_t nc = x->dropcap ? x->dropcap * 2 : 16;
            int64_t *nd = realloc(x->drop, nc * sizeof *nd);
            if (!nd) return tsync__err(TSYNC_ENOMEM, "out of memory");
            x->drop = nd;
            x->dropcap = nc;
        }
        x->drop[x->ndrop++] = e->id;
    }
    m->val = NULL; /* a row is sealed once per seal */
    return 0;
}

int tsync__aside_drop(tsync_store *s, tsync__aside *x)
{
    for (size_t i = 0; i < x->ndrop; i++) {
        sqlite3_stmt *st = tsync__prep(s, "DELETE FROM tsync_unsealable WHERE id=?1");
        if (!st) return TSYNC_EIO;
        sqlite3_bind_int64(st, 1, x->drop[i]);
        int rc = sqlite3_step(st);
        sqlite3_reset(st);
        if (rc != SQLITE_DONE) return tsync__err_sqlite(s->db, rc, "drop set-aside changes");
    }
    x->ndrop = 0;
    return 0;
}

void tsync__aside_free(tsync__aside *x)
{
    tsync__rmap_free(&x->map);
    tsync__arena_free(&x->a);
    free(x->drop);
    memset(x, 0, sizeof *x);
}

int tsync__unsealable_note(tsync_store *s, char *buf, size_t n)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT count(DISTINCT tbl || ':' || quote(k0) || quote(k1) "
                                      "|| quote(k2) || quote(k3)), max(bytes), (SELECT name FROM "
                                      "tsync_tables t WHERE t.id = u.tbl) FROM tsync_unsealable u");
    if (!st) return TSYNC_EIO;
    int rc = 0;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_int64(st, 0) > 0) {
        int64_t rows = sqlite3_column_int64(st, 0);
        const char *table = (const char *)sqlite3_column_text(st, 2);
        snprintf(buf, n,
                 "%lld row%s over the per-row limit of %u bytes (the largest in table %s, %lld "
                 "bytes) cannot be sent and stay%s on this till; make %s smaller or delete %s",
                 (long long)rows, rows == 1 ? "" : "s", (unsigned)TSYNC_MAX_ROW_BYTES,
                 table ? table : "?", (long long)sqlite3_column_int64(st, 1), rows == 1 ? "s" : "",
                 rows == 1 ? "it" : "them", rows == 1 ? "it" : "them");
        rc = 1;
    }
    sqlite3_reset(st);
    return rc;
}
