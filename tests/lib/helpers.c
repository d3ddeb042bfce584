/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/helpers.c — see helpers.h.
 */
#include "tests/lib/helpers.h"

#include "crdt/crdt.h"
#include "store/internal.h"
#include "store/schema.h"
#include "store/sync.h"

#include <criterion/criterion.h>
#include <ftw.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

char *th_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[4096];
    snprintf(tmpl, sizeof tmpl, "%s/tsync-test-XXXXXX", base && *base ? base : "/tmp");
    char *d = mkdtemp(tmpl);
    cr_assert(d != NULL, "mkdtemp failed");
    return strdup(d);
}

static char *auto_dirs[32];
static int nauto_dirs;

char *th_tmpdir_auto(void)
{
    char *d = th_tmpdir();
    if (nauto_dirs < 32) auto_dirs[nauto_dirs++] = strdup(d);
    return d;
}

void th_cleanup(void)
{
    for (int i = 0; i < nauto_dirs; i++) {
        th_rmdir(auto_dirs[i]);
        free(auto_dirs[i]);
    }
    nauto_dirs = 0;
}

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

void th_rmdir(const char *dir)
{
    if (dir) nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *th_path(const char *dir, const char *name)
{
    static char ring[16][4096];
    static int k;
    char *b = ring[k++ & 15];
    snprintf(b, 4096, "%s/%s", dir, name);
    return b;
}

tsync_store *th_open(const char *path)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s = NULL;
    int rc = tsync_store_open(&s, path, &o);
    cr_assert(rc == 0, "open %s: %s", path, tsync_error_last() ? tsync_error_last()->message : "?");
    return s;
}

tsync_store *th_open_products(const char *path)
{
    tsync_store *s = th_open(path);
    th_exec(s, "CREATE TABLE IF NOT EXISTS products(id TEXT PRIMARY KEY, name TEXT, "
               "price INTEGER, stock INTEGER NOT NULL DEFAULT 0)");
    const char *ctr[] = {"stock"};
    int rc = tsync_store_replicate(s, "products", ctr, 1);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate: %s",
              tsync_error_last() ? tsync_error_last()->message : "?");
    return s;
}

void th_exec(tsync_store *s, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(tsync_store_sqlite(s), sql, NULL, NULL, &err);
    cr_assert(rc == SQLITE_OK, "SQL failed: %s: %s", sql, err ? err : "?");
}

int64_t th_int(tsync_store *s, const char *sql, int64_t dflt)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(tsync_store_sqlite(s), sql, -1, &st, NULL);
    cr_assert(rc == SQLITE_OK, "prepare %s: %s", sql, sqlite3_errmsg(tsync_store_sqlite(s)));
    int64_t v = dflt;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

char *th_text(tsync_store *s, const char *sql)
{
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(tsync_store_sqlite(s), sql, -1, &st, NULL);
    cr_assert(rc == SQLITE_OK, "prepare %s: %s", sql, sqlite3_errmsg(tsync_store_sqlite(s)));
    char *v = NULL;
    if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_type(st, 0) != SQLITE_NULL)
        v = strdup((const char *)sqlite3_column_text(st, 0));
    sqlite3_finalize(st);
    return v;
}

size_t th_seal(tsync_store *s)
{
    size_t n = 0;
    int rc = tsync_store_seal(s, &n);
    cr_assert(rc == 0, "seal: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    return n;
}

uint8_t *th_bundle(tsync_store *from, size_t *len)
{
    uint8_t *b = NULL;
    int rc = tsync_store_bundle(&b, len, from, NULL, NULL);
    cr_assert(rc == 0, "bundle: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    return b;
}

int th_sync(tsync_store *from, tsync_store *to)
{
    char *state = NULL;
    int rc = tsync_store_state_json(&state, to);
    cr_assert(rc == 0, "state: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    uint8_t *b = NULL;
    size_t len = 0;
    rc = tsync_store_bundle(&b, &len, from, state, NULL);
    cr_assert(rc == 0, "bundle: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    rc = tsync_store_merge(to, b, len, NULL);
    free(b);
    free(state);
    return rc;
}

const char *th_hash(tsync_store *s)
{
    static char ring[8][65];
    static int k;
    char *out = ring[k++ & 7];
    uint8_t h[TSYNC_HASH_BYTES];
    int rc = tsync_store_hash(h, s, NULL);
    cr_assert(rc == 0, "hash: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) snprintf(out + 2 * i, 3, "%02x", h[i]);
    return out;
}

uint64_t th_seed(const char *test_name)
{
    const char *e = getenv("TSYNC_SEED");
    uint64_t seed;
    if (e && *e) {
        seed = strtoull(e, NULL, 0);
    } else {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ (uint64_t)getpid();
    }
    fprintf(stderr, "%s: seed %llu (replay with TSYNC_SEED=%llu)\n", test_name,
            (unsigned long long)seed, (unsigned long long)seed);
    return seed;
}

uint64_t th_rand(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

int64_t th_check_log(tsync_store *s, const uint8_t *site, const char *who, int own,
                     const char *keys_table, char **keys)
{
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT l.seq, l.hash, tsync_log_body(l.site, l.seq, l.body), "
                                "l.sig, t.pk, t.seq FROM "
                                "tsync_log l JOIN tsync_sites t ON t.idx = l.site WHERE "
                                "t.site = ?1 ORDER BY l.seq",
                                -1, &st, NULL);
    cr_assert(rc == SQLITE_OK, "read log: %s", sqlite3_errmsg(db));
    sqlite3_bind_blob(st, 1, site, TSYNC__SITE_BYTES, SQLITE_STATIC);
    uint8_t prev[TSYNC__HASH_BYTES] = {0};
    int64_t expect = 1, head = 0;
    tsync__hlc last = 0;
    size_t klen = 0, kcap = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        head = sqlite3_column_int64(st, 5);
        cr_assert_eq(seq, expect, "%s: log has batch %lld where %lld was expected", who,
                     (long long)seq, (long long)expect);
        const uint8_t *body = sqlite3_column_blob(st, 2);
        size_t blen = (size_t)sqlite3_column_bytes(st, 2);
        uint8_t h[TSYNC__HASH_BYTES];
        tsync__batch_hash(prev, body, blen, h);
        cr_assert(sqlite3_column_bytes(st, 1) == TSYNC__HASH_BYTES &&
                      memcmp(h, sqlite3_column_blob(st, 1), TSYNC__HASH_BYTES) == 0,
                  "%s: batch %lld: stored hash is not BLAKE2b(prev || body)", who, (long long)seq);
        tsync__arena a = {0};
        tsync__batch b;
        char err[TSYNC__ERRLEN];
        cr_assert(tsync__batch_decode(body, blen, &b, &a, err) == 0, "%s: batch %lld: %s", who,
                  (long long)seq, err);
        cr_assert(b.seq == (uint64_t)seq && memcmp(b.origin, site, TSYNC__SITE_BYTES) == 0,
                  "%s: batch %lld names another origin or seq", who, (long long)seq);
        if (own) {
            cr_assert(b.hlc_lo > last, "%s: batch %lld starts at clock %llu, not after %llu", who,
                      (long long)seq, (unsigned long long)b.hlc_lo, (unsigned long long)last);
            cr_assert(sqlite3_column_bytes(st, 3) == TSYNC__SIG_BYTES,
                      "%s: own batch %lld has no signature", who, (long long)seq);
        }
        last = b.hlc_hi;
        for (uint32_t i = 0; keys && i < b.nrows; i++) {
            const tsync__btable *t = &b.tables[b.rows[i].table];
            const tsync__val *k = &b.rows[i].pk[0];
            if (t->name_len != strlen(keys_table) ||
                memcmp(t->name, keys_table, t->name_len) != 0 || k->type != TSYNC__V_TEXT)
                continue;
            if (klen + k->n + 2 > kcap) {
                kcap = (kcap + k->n + 2) * 2;
                *keys = realloc(*keys, kcap);
                cr_assert(*keys);
            }
            memcpy(*keys + klen, k->p, k->n);
            klen += k->n;
            (*keys)[klen++] = '\n';
            (*keys)[klen] = 0;
        }
        tsync__arena_free(&a);
        if (sqlite3_column_bytes(st, 3) == TSYNC__SIG_BYTES) {
            cr_assert(sqlite3_column_bytes(st, 4) == TSYNC__PK_BYTES, "%s: no public key", who);
            int ok = tsync__batch_verify(sqlite3_column_blob(st, 4), site, (uint64_t)seq, h,
                                         sqlite3_column_blob(st, 3));
            cr_assert(ok == 0, "%s: batch %lld: signature does not verify", who, (long long)seq);
        }
        memcpy(prev, h, sizeof prev);
        expect++;
    }
    sqlite3_finalize(st);
    cr_assert_eq(head, expect - 1, "%s: the vector says %lld batches, the log has %lld", who,
                 (long long)head, (long long)(expect - 1));
    if (own) {
        int64_t stored = th_int(s, "SELECT v FROM tsync_meta WHERE k='hlc'", 0);
        cr_assert((tsync__hlc)stored >= last, "%s: stored clock %lld went back before %llu", who,
                  (long long)stored, (unsigned long long)last);
    }
    return expect - 1;
}

/* ---------------------------------------------------------------- shop trust */

tsync__shopkey th_shop_make(uint8_t seed_byte, uint8_t id_byte, const char *name)
{
    uint8_t seed[32], id[TSYNC__SHOP_ID_BYTES];
    memset(seed, seed_byte, sizeof seed);
    memset(id, id_byte, sizeof id);
    tsync__shopkey k;
    char err[TSYNC__ERRLEN];
    int rc = tsync__shopkey_init(&k, seed, id, name, strlen(name), TH_T0, err);
    cr_assert_eq(rc, 0, "%s", err);
    return k;
}

uint8_t *th_cert_make(const tsync__shopkey *k, const uint8_t pk[TSYNC__PK_BYTES], const char *name,
                      uint64_t nb, uint64_t exp, size_t *len)
{
    tsync__cert c = {.shop_name = k->name,
                     .shop_name_len = k->name_len,
                     .device_name = name,
                     .device_name_len = (uint32_t)strlen(name),
                     .not_before_ms = nb,
                     .expires_ms = exp};
    memcpy(c.shop_id, k->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(c.device_pk, pk, TSYNC__PK_BYTES);
    memcpy(c.admin_pk, k->pk, TSYNC__PK_BYTES);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    int rc = tsync__cert_sign(&c, k->sk, &out, len, err);
    cr_assert_eq(rc, 0, "%s", err);
    return out;
}

uint8_t *th_rev_make(const tsync__shopkey *k, const uint8_t pk[TSYNC__PK_BYTES],
                     const tsync__cutoff *cuts, uint32_t n, uint64_t issued, size_t *len)
{
    tsync__revocation v = {.ncutoffs = n, .cutoffs = (tsync__cutoff *)cuts, .issued_ms = issued};
    memcpy(v.shop_id, k->shop_id, TSYNC__SHOP_ID_BYTES);
    memcpy(v.device_pk, pk, TSYNC__PK_BYTES);
    memcpy(v.admin_pk, k->pk, TSYNC__PK_BYTES);
    uint8_t *out;
    char err[TSYNC__ERRLEN];
    int rc = tsync__revocation_sign(&v, k->sk, &out, len, err);
    cr_assert_eq(rc, 0, "%s", err);
    return out;
}

int th_enrol(tsync_store *s, const tsync__shopkey *k, const char *name, uint64_t days,
             tsync__enrol_result *res)
{
    size_t len;
    uint64_t now = tsync__now_ms(s);
    uint8_t *c = th_cert_make(k, s->pk, name, now - TH_DAY, now + days * TH_DAY, &len);
    const uint8_t *recs[1] = {c};
    int rc = tsync__trust_enrol(s, recs, &len, 1, res);
    free(c);
    return rc;
}

void th_must_enrol(tsync_store *s, const tsync__shopkey *k, const char *name)
{
    int rc = th_enrol(s, k, name, 365, NULL);
    cr_assert_eq(rc, 0, "enrol %s: %s", name,
                 tsync_error_last() ? tsync_error_last()->message : "?");
}

const char *th_errmsg(void)
{
    return tsync_error_last() ? tsync_error_last()->message : "?";
}

void th_free_ptr(void *p)
{
    free(*(void **)p);
}

void th_sell(tsync_store *s, int from, int n)
{
    for (int i = from; i < from + n; i++) {
        char sql[160];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%06d', 'item %d', %d, 1)", i, i,
                 100 + i);
        th_exec(s, sql);
        th_seal(s);
    }
}

char *th_products_state(tsync_store *s)
{
    static const char *q[] = {
        "SELECT group_concat(x, '|') FROM (SELECT id || ',' || quote(name) || ',' || "
        "quote(price) || ',' || quote(stock) AS x FROM products ORDER BY id)",
        "SELECT group_concat(x, '|') FROM (SELECT id || ',' || hex(tsync_m) AS x FROM "
        "tsync_clk_products ORDER BY id)",
        /* A tombstone's counter column is never read back (a resurrection takes a counter's
         * total from its clocks): a row inserted and deleted within one chunk leaves it NULL,
         * across two chunks the DEFAULT the insert took, as with two merges. */
        "SELECT group_concat(x, '|') FROM (SELECT id || ',' || quote(name) || ',' || "
        "quote(price) AS x FROM tsync_tomb_products ORDER BY id)",
        "SELECT group_concat(x, '|') FROM (SELECT site || ',' || seq || ',' || reason AS x FROM "
        "tsync_held ORDER BY site, seq)",
        "SELECT group_concat(x, '|') FROM (SELECT site || ',' || seq || ',' || hex(hash) AS x "
        "FROM tsync_log ORDER BY site, seq)",
        "SELECT group_concat(x, '|') FROM (SELECT tbl || pk || col || quote(win_val) || win_hlc "
        "|| hex(win_site) || quote(lose_val) || lose_hlc || hex(lose_site) AS x FROM "
        "tsync_conflicts ORDER BY 1)",
        "SELECT group_concat(x, '|') FROM (SELECT site || ',' || seq || ',' || row || ',' || "
        "ifnull(col, '') AS x FROM tsync_parked ORDER BY 1)",
    };
    size_t cap = 1 << 16, len = 0;
    char *out = malloc(cap);
    cr_assert(out);
    out[0] = 0;
    for (size_t i = 0; i < sizeof q / sizeof *q; i++) {
        char *t = th_text(s, q[i]);
        size_t n = strlen(t ? t : "") + 8;
        while (len + n + 1 > cap) {
            cap *= 2;
            out = realloc(out, cap);
            cr_assert(out);
        }
        len += (size_t)snprintf(out + len, cap - len, "#%zu:%s", i, t ? t : "");
        free(t);
    }
    return out;
}

tsync_store *th_open_shop(const char *path)
{
    tsync_store *s = th_open_products(path);
    th_exec(s, "CREATE TABLE IF NOT EXISTS lines(shop TEXT, n INTEGER, item TEXT, qty INTEGER, "
               "note BLOB, PRIMARY KEY(shop, n)) WITHOUT ROWID;"
               "CREATE TABLE IF NOT EXISTS moves(id INT PRIMARY KEY, what TEXT, amount REAL)");
    int rc = tsync_store_replicate(s, "lines", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate lines: %s", tsync_error_last()->message);
    rc = tsync_store_replicate(s, "moves", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "replicate moves: %s", tsync_error_last()->message);
    return s;
}

void th_tell(tsync_store *from, tsync_store *to)
{
    uint8_t **blobs = NULL;
    size_t *lens = NULL, n = 0;
    cr_assert_eq(tsync__trust_export(from, &blobs, &lens, &n), 0, "%s", th_errmsg());
    char err[TSYNC__ERRLEN];
    for (size_t i = 0; i < n; i++) (void)tsync__trust_import(to, blobs[i], lens[i], err);
    tsync__trust_export_free(blobs, lens, n);
    uint8_t site[TSYNC__SITE_BYTES], inc[TSYNC__INC_BYTES], *defs = NULL;
    size_t len = 0;
    cr_assert_eq(tsync__schema_message(from, site, inc, &defs, &len), 0, "%s", th_errmsg());
    cr_assert_eq(tsync__schema_record(to, site, tsync__sync_public_key(from), defs, len, NULL), 0,
                 "%s", th_errmsg());
    free(defs);
}

int th_buf_write(void *ctx, const void *p, size_t n)
{
    th_buf *b = ctx;
    if (b->len + n > b->cap) {
        b->cap = (b->len + n) * 2;
        b->p = realloc(b->p, b->cap);
        cr_assert_not_null(b->p);
    }
    memcpy(b->p + b->len, p, n);
    b->len += n;
    return 0;
}

int th_chunks_collect(void *ctx, const uint8_t *chunk, size_t len)
{
    th_chunks *k = ctx;
    if (k->stop_at && (int)k->n + 1 == k->stop_at) return 42;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        k->c = realloc(k->c, k->cap * sizeof *k->c);
        k->len = realloc(k->len, k->cap * sizeof *k->len);
        cr_assert(k->c && k->len);
    }
    k->c[k->n] = malloc(len);
    cr_assert(k->c[k->n]);
    memcpy(k->c[k->n], chunk, len);
    k->len[k->n++] = len;
    return 0;
}

void th_chunks_free(th_chunks *k)
{
    for (size_t i = 0; i < k->n; i++) free(k->c[i]);
    free(k->c);
    free(k->len);
    tsync__vv_free(&k->vv);
    memset(k, 0, sizeof *k);
}
