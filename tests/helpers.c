/*
 * tests/helpers.c — see helpers.h.
 */
#include "tests/helpers.h"

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
    int rc = tsync_store_bundle(from, NULL, &b, len, NULL);
    cr_assert(rc == 0, "bundle: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    return b;
}

int th_sync(tsync_store *from, tsync_store *to)
{
    char *state = NULL;
    int rc = tsync_store_state_json(to, &state);
    cr_assert(rc == 0, "state: %s", tsync_error_last() ? tsync_error_last()->message : "?");
    uint8_t *b = NULL;
    size_t len = 0;
    rc = tsync_store_bundle(from, state, &b, &len, NULL);
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
    int rc = tsync_store_hash(s, NULL, h);
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
