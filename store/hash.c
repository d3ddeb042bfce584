/* SPDX-License-Identifier: Apache-2.0 */
/*
 * store/hash.c — the content hash of the visible replicated data (the conflict report moved to
 * store/conflicts.c). The library's own replicated tables (tsync_resolved) are left out of the
 * hash of all tables.
 *
 * Canonical form (docs/DATA_MODEL.md): names folded to lowercase (ASCII letters only: `Items` on
 * one till and `items` on another are the same table, as to SQLite); for each replicated table in
 * bytewise order of its folded name: "T", the name, NUL, then its columns sorted bytewise by
 * folded name, each name followed by NUL; then
 * each row in primary-key order, each value in that column order as a type byte (0 NULL, 1
 * INTEGER, 2 REAL, 3 TEXT, 4 BLOB) followed by 8 bytes big-endian (integer, or IEEE-754 bits of a
 * real) or a 4-byte big-endian length and the bytes. The hash is BLAKE2b-256 of that stream. No
 * clock or other metadata enters it: two replicas hash equal exactly when they show the same rows.
 */
#include <sodium.h>
#include <stdlib.h>
#include <string.h>

#include "conflicts_int.h"
#include "internal.h"

static int name_cmp(const void *a, const void *b)
{
    const char *x = *(char *const *)a, *y = *(char *const *)b;
    return tsync__name_cmp(x, strlen(x), y, strlen(y));
}

/* A name as the hash sees it: ASCII letters folded to lowercase, then its NUL. */
static void hash_name(crypto_generichash_state *h, const char *name)
{
    for (const char *p = name;; p++) {
        uint8_t c = (uint8_t)*p;
        if (c >= 'A' && c <= 'Z') c = (uint8_t)(c + ('a' - 'A'));
        crypto_generichash_update(h, &c, 1);
        if (!*p) break;
    }
}

static void put_be(crypto_generichash_state *h, uint64_t v, int n)
{
    uint8_t b[8];
    for (int i = 0; i < n; i++) b[i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    crypto_generichash_update(h, b, (size_t)n);
}

static int hash_table(tsync_store *s, tsync__table *t, crypto_generichash_state *h)
{
    crypto_generichash_update(h, (const uint8_t *)"T", 1);
    hash_name(h, t->name);
    char **names = malloc((size_t)t->ncols * sizeof *names);
    if (!names) return tsync__err(TSYNC_ENOMEM, "out of memory");
    for (int i = 0; i < t->ncols; i++) names[i] = t->cols[i];
    qsort(names, (size_t)t->ncols, sizeof *names, name_cmp);
    size_t cap = 64 + strlen(t->qname) + (size_t)t->ncols * 8 + strlen(t->all_cols) * 2 +
                 strlen(t->pk_where);
    char *sql = malloc(cap);
    if (!sql) {
        free(names);
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    size_t o = (size_t)snprintf(sql, cap, "SELECT ");
    for (int i = 0; i < t->ncols; i++) {
        hash_name(h, names[i]);
        o += (size_t)snprintf(sql + o, cap - o, "%s\"", i ? "," : "");
        for (const char *p = names[i]; *p; p++)
            o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
        o += (size_t)snprintf(sql + o, cap - o, "\"");
    }
    o += (size_t)snprintf(sql + o, cap - o, " FROM %s ORDER BY ", t->qname);
    for (int i = 0; i < t->npk; i++) {
        o += (size_t)snprintf(sql + o, cap - o, "%s\"", i ? "," : "");
        for (const char *p = t->cols[t->pk[i]]; *p; p++)
            o += (size_t)snprintf(sql + o, cap - o, *p == '"' ? "\"\"" : "%c", *p);
        o += (size_t)snprintf(sql + o, cap - o, "\"");
    }
    free(names);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    free(sql);
    if (rc != SQLITE_OK) return tsync__err_sqlite(s->db, rc, "hash table");
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int i = 0; i < t->ncols; i++) {
            tsync__val v;
            tsync__col_val(st, i, &v);
            uint8_t ty = v.type;
            crypto_generichash_update(h, &ty, 1);
            if (v.type == TSYNC__V_INT) {
                put_be(h, (uint64_t)v.i, 8);
            } else if (v.type == TSYNC__V_REAL) {
                uint64_t bits;
                memcpy(&bits, &v.r, 8);
                put_be(h, bits, 8);
            } else if (v.type == TSYNC__V_TEXT || v.type == TSYNC__V_BLOB) {
                put_be(h, v.n, 4);
                if (v.n) crypto_generichash_update(h, v.p, v.n);
            }
        }
    }
    sqlite3_finalize(st);
    return rc == SQLITE_DONE ? 0 : tsync__err_sqlite(s->db, rc, "hash table");
}

int tsync_store_hash(uint8_t out[TSYNC_HASH_BYTES], tsync_store *s, const char *table)
{
    int rc = tsync__tables_refresh(s);
    if (rc) return rc;
    if (table && !tsync__table_by_name(s, table, strlen(table)))
        return tsync__err(TSYNC_ENOTFOUND, "table %s is not replicated", table);
    /* one snapshot for all tables */
    if ((rc = tsync__exec(s, "BEGIN"))) return rc;
    tsync__table **order = malloc(((size_t)s->ntables + 1) * sizeof *order);
    if (!order) {
        tsync__exec(s, "COMMIT");
        return tsync__err(TSYNC_ENOMEM, "out of memory");
    }
    int n = 0;
    for (int i = 0; i < s->ntables; i++)
        if (table ? tsync__name_eqz(table, s->tables[i].name)
                  : !tsync__table_internal(s->tables[i].name))
            order[n++] = &s->tables[i];
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && name_cmp(&order[j - 1]->name, &order[j]->name) > 0; j--) {
            tsync__table *x = order[j];
            order[j] = order[j - 1];
            order[j - 1] = x;
        }
    crypto_generichash_state h;
    crypto_generichash_init(&h, NULL, 0, TSYNC_HASH_BYTES);
    for (int i = 0; rc == 0 && i < n; i++) rc = hash_table(s, order[i], &h);
    crypto_generichash_final(&h, out, TSYNC_HASH_BYTES);
    free(order);
    tsync__exec(s, "COMMIT");
    return rc;
}
