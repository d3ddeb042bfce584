/*
 * store/unsealable.c — row changes too large to seal (over TSYNC_MAX_ROW_BYTES), which only an
 * older build could capture: set aside in tsync_unsealable instead of failing every later seal,
 * reported, and folded back into the seal that finds the row changed again.
 */
#include <stdio.h>
#include <stdlib.h>

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

/* Folds the set-aside changes of rows that changed again (they are in the map) back in, and drops
 * them from tsync_unsealable: sealed now, or set aside again if the row is still too large. */
int tsync__fold_set_aside(tsync_store *s, tsync__rmap *map, tsync__arena *a, prow *rows)
{
    sqlite3_stmt *st = tsync__prep(s, "SELECT id, tbl, op, mask, wall, k0, k1, k2, k3 FROM "
                                      "tsync_unsealable ORDER BY id");
    if (!st) return TSYNC_EIO;
    int64_t *ids = NULL;
    size_t nids = 0;
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
        if (!k) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        tsync__key_encode(kv, t->npk, k);
        tsync__rmap_ent *e = tsync__rmap_get(map, a, tid, k, klen, 0);
        free(k);
        if (!e || !e->val) continue; /* the row did not change: it stays set aside */
        prow *r = &rows[(uintptr_t)e->val - 1];
        int op = sqlite3_column_int(st, 2);
        int64_t wall = sqlite3_column_int64(st, 4);
        if (wall > r->wall) r->wall = wall;
        if (op == 1)
            r->seen_insert = 1, r->mask = ~0ULL;
        else if (op == 2)
            r->mask |= (uint64_t)sqlite3_column_int64(st, 3);
        else if (op == 3)
            r->seen_delete = 1;
        int64_t *ni = realloc(ids, (nids + 1) * sizeof *ni);
        if (!ni) {
            rc = tsync__err(TSYNC_ENOMEM, "out of memory");
            break;
        }
        ids = ni;
        ids[nids++] = sqlite3_column_int64(st, 0);
    }
    if (rc == 0 && step != SQLITE_DONE && step != SQLITE_ROW)
        rc = tsync__err_sqlite(s->db, step, "read set-aside changes");
    sqlite3_reset(st);
    for (size_t i = 0; rc == 0 && i < nids; i++) {
        if (!(st = tsync__prep(s, "DELETE FROM tsync_unsealable WHERE id=?1"))) {
            rc = TSYNC_EIO;
            break;
        }
        sqlite3_bind_int64(st, 1, ids[i]);
        int x = sqlite3_step(st);
        sqlite3_reset(st);
        if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "read set-aside changes");
    }
    free(ids);
    return rc;
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
