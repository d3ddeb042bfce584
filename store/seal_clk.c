/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/seal_clk.c — the clock entries a seal writes (new rows' and rewritten ones, seal_int.h),
 * written many per statement.
 */
#include <stdlib.h>
#include <string.h>

#include "seal_int.h"

int tsync__seal_newclk_rows = TSYNC__NEWCLK_ROWS;

/* Writes the buffered clock entries of new rows: with the TSYNC__NEWCLK_ROWS-row statement when the
 * buffer is full, else one by one. */
int tsync__newclk_flush(tsync_store *s, tsync__newclk *c)
{
    tsync__table *t = c->t;
    int rc = 0;
    if (c->n == TSYNC__NEWCLK_ROWS && !c->st) {
        sqlite3_str *q = sqlite3_str_new(NULL);
        sqlite3_str_appendf(q, "INSERT OR REPLACE INTO %s(", t->qclk);
        for (int i = 0; i < t->npk; i++) {
            tsync__sql_ident(q, "", t->cols[t->pk[i]]);
            sqlite3_str_appendchar(q, 1, ',');
        }
        sqlite3_str_appendall(q, "tsync_m) VALUES");
        for (int r = 0; r < TSYNC__NEWCLK_ROWS; r++) {
            sqlite3_str_appendall(q, r ? ",(" : "(");
            for (int i = 0; i <= t->npk; i++) sqlite3_str_appendall(q, i ? ",?" : "?");
            sqlite3_str_appendchar(q, 1, ')');
        }
        char *sql = tsync__sql_finish(q);
        if (!sql) return tsync__err(TSYNC_ENOMEM, "out of memory");
        int x = sqlite3_prepare_v2(s->db, sql, -1, &c->st, NULL);
        sqlite3_free(sql);
        if (x != SQLITE_OK) return tsync__err_sqlite(s->db, x, "prepare the write of row clocks");
    }
    for (int r = 0; rc == 0 && r < c->n; r++) {
        const uint8_t *key = c->data + c->off[r];
        tsync__val kv[TSYNC__MAX_PK_COLS];
        if (tsync__key_decode(key, c->klen[r], kv, t->npk) != 0)
            return tsync__err(TSYNC_ECORRUPT, "bad row key in table %s", t->name);
        sqlite3_stmt *st = c->n == TSYNC__NEWCLK_ROWS ? c->st : t->put_clk;
        int base = c->n == TSYNC__NEWCLK_ROWS ? r * (t->npk + 1) : 0;
        if (st == t->put_clk) sqlite3_reset(st);
        for (int i = 0; i < t->npk; i++) tsync__bind_val(st, base + i + 1, &kv[i]);
        sqlite3_bind_blob(st, base + t->npk + 1, key + c->klen[r], (int)c->blen[r], SQLITE_STATIC);
        if (st == t->put_clk || r == c->n - 1) {
            int x = sqlite3_step(st);
            sqlite3_reset(st);
            if (x != SQLITE_DONE) rc = tsync__err_sqlite(s->db, x, "write row clocks");
        }
    }
    c->n = 0;
    c->len = 0;
    return rc;
}

int tsync__newclk_add(tsync_store *s, tsync__newclk *c, tsync__table *t, const uint8_t *key,
                      uint32_t klen, const tsync__rowmeta *m, uint8_t **buf, size_t *cap)
{
    size_t blen;
    int rc = tsync__rowmeta_encode(m, buf, cap, &blen);
    if (rc) return rc;
    if (c->t != t) {
        if (c->n && (rc = tsync__newclk_flush(s, c))) return rc;
        sqlite3_finalize(c->st);
        c->st = NULL;
        c->t = t;
    }
    if (c->len + klen + blen > c->cap) {
        size_t nc = 2 * c->cap > c->len + klen + blen ? 2 * c->cap : c->len + klen + blen + 4096;
        uint8_t *nd = realloc(c->data, nc);
        if (!nd) return tsync__err(TSYNC_ENOMEM, "out of memory");
        c->data = nd;
        c->cap = nc;
    }
    c->off[c->n] = c->len;
    memcpy(c->data + c->len, key, klen);
    memcpy(c->data + c->len + klen, *buf, blen);
    c->len += klen + blen;
    c->klen[c->n] = klen;
    c->blen[c->n] = (uint32_t)blen;
    return ++c->n == TSYNC__NEWCLK_ROWS || c->n >= tsync__seal_newclk_rows
               ? tsync__newclk_flush(s, c)
               : 0;
}

void tsync__newclk_free(tsync__newclk *c)
{
    sqlite3_finalize(c->st);
    free(c->data);
    memset(c, 0, sizeof *c);
}
