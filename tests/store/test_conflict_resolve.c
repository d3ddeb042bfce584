/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_conflict_resolve.c — the conflict journal a person works through
 * (tillsync/conflicts.h, store/conflicts.c): two tills that meet one collision give it the same
 * identity; a resolution (keep, take the other value, enter a value, dismiss) replicates, and the
 * value written wins on every till; listing pages by id and filters open entries; resolved
 * entries past the bound are dropped by pruning, open ones never; errors name the entry. A
 * property test plays seeded schedules of writes, resolutions and merges across three tills and
 * checks that they end with the same rows and the same resolutions.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/conflicts_int.h"
#include "store/internal.h"
#include "store/snapshot.h"
#include "tests/lib/helpers.h"
#include "tillsync/conflicts.h"

static char *dir;

static void setup(void)
{
    dir = th_tmpdir_auto();
}

TestSuite(conflict_resolve, .init = setup, .fini = th_cleanup);

/* Both ways until nothing is left to send. */
static void exchange(tsync_store *a, tsync_store *b)
{
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
}

/* The journal of s (since, limit, open_only as the API takes them), parsed. */
static json_t *journal(tsync_store *s, int64_t since, size_t limit, int open_only)
{
    char *js = NULL;
    cr_assert_eq(tsync_store_conflicts_list_json(&js, s, since, limit, open_only), 0, "%s",
                 th_errmsg());
    json_error_t je;
    json_t *a = json_loads(js, 0, &je);
    cr_assert(json_is_array(a), "not an array: %s", js);
    tsync_free(js);
    return a;
}

static int64_t n_open(tsync_store *s)
{
    int64_t open = -1, total = -1;
    cr_assert_eq(tsync_store_conflicts_count(&open, &total, s), 0, "%s", th_errmsg());
    return open;
}

/* a and b each write price (and, with two, name) of row key concurrently, then exchange. */
static void collide(tsync_store *a, tsync_store *b, const char *key, int two)
{
    char sql[256];
    snprintf(sql, sizeof sql, "UPDATE products SET price = price + 1%s WHERE id = '%s'",
             two ? ", name = name || 'a'" : "", key);
    th_exec(a, sql);
    th_seal(a);
    snprintf(sql, sizeof sql, "UPDATE products SET price = price + 2%s WHERE id = '%s'",
             two ? ", name = name || 'b'" : "", key);
    th_exec(b, sql);
    th_seal(b);
    exchange(a, b);
}

/* Two tills sharing rows p1..pn; enrolled in shop k as till-a and till-b when k is given. */
static void pair_in(tsync_store **a, tsync_store **b, int n, const tsync__shopkey *k)
{
    *a = th_open_products(th_path(dir, "a.db"));
    *b = th_open_products(th_path(dir, "b.db"));
    if (k) {
        th_must_enrol(*a, k, "till-a");
        th_must_enrol(*b, k, "till-b");
        th_tell(*a, *b);
        th_tell(*b, *a);
    }
    for (int i = 1; i <= n; i++) {
        char sql[128];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%d', 'n%d', %d, 0)", i, i,
                 100 * i);
        th_exec(*a, sql);
    }
    th_seal(*a);
    exchange(*a, *b);
}

static void pair(tsync_store **a, tsync_store **b, int n)
{
    pair_in(a, b, n, NULL);
}

static const char *str(json_t *o, const char *k)
{
    return json_string_value(json_object_get(o, k));
}

Test(conflict_resolve, both_tills_give_a_collision_the_same_identity)
{
    tsync_store *a, *b;
    pair(&a, &b, 1);
    collide(a, b, "p1", 0);
    json_t *ja = journal(a, 0, 0, 0), *jb = journal(b, 0, 0, 0);
    cr_assert_eq(json_array_size(ja), 1);
    cr_assert_eq(json_array_size(jb), 1);
    json_t *ea = json_array_get(ja, 0), *eb = json_array_get(jb, 0);
    cr_assert(str(ea, "cid") && strlen(str(ea, "cid")) == 32, "cid: %s", str(ea, "cid"));
    cr_assert_str_eq(str(ea, "cid"), str(eb, "cid"));
    cr_assert(json_is_true(json_object_get(ea, "open")));
    cr_assert(json_is_null(json_object_get(ea, "resolved")));
    /* Both values with their times and tills (the site in hex without certificates). */
    json_t *w = json_object_get(ea, "winner"), *l = json_object_get(ea, "loser");
    cr_assert_str_eq(str(w, "till"), str(w, "site"));
    cr_assert_gt(json_integer_value(json_object_get(l, "time_ms")), 0);
    cr_assert_eq(json_integer_value(json_object_get(w, "time_ms")),
                 json_integer_value(json_object_get(w, "hlc")) >> 16);
    json_decref(ja), json_decref(jb);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, take_other_wins_everywhere_and_shows_resolved_on_the_other_till)
{
    tsync_store *a, *b;
    /* Device names come from the trust set: both enrolled, each told of the other. */
    tsync__shopkey k = th_shop_make(7, 7, "shop");
    pair_in(&a, &b, 1, &k);
    collide(a, b, "p1", 0);
    json_t *ja = journal(a, 0, 0, 0);
    json_t *e = json_array_get(ja, 0);
    int64_t id = json_integer_value(json_object_get(e, "id"));
    int64_t loser = json_integer_value(json_object_get(json_object_get(e, "loser"), "value"));
    int64_t winner = json_integer_value(json_object_get(json_object_get(e, "winner"), "value"));
    const char *wt = str(json_object_get(e, "winner"), "till");
    cr_assert(!strcmp(wt, "till-a") || !strcmp(wt, "till-b"), "winner's till: %s", wt);
    cr_assert_eq(th_int(a, "SELECT price FROM products", -1), winner);
    json_decref(ja);

    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_TAKE_OTHER, NULL), 0, "%s",
                 th_errmsg());
    cr_assert_eq(th_int(a, "SELECT price FROM products", -1), loser);
    cr_assert_eq(n_open(a), 0);
    cr_assert_eq(n_open(b), 1);
    exchange(a, b);
    cr_assert_eq(th_int(b, "SELECT price FROM products", -1), loser);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(n_open(b), 0);
    json_t *jb = journal(b, 0, 0, 0);
    json_t *r = json_object_get(json_array_get(jb, 0), "resolved");
    cr_assert(json_is_object(r), "not resolved on b");
    cr_assert_str_eq(str(r, "how"), "take");
    cr_assert_str_eq(str(r, "till"), "till-a");
    cr_assert_eq(json_integer_value(json_object_get(r, "value")), loser);
    char hex[33];
    tsync__hex(tsync_store_site_id(a), 16, hex);
    cr_assert_str_eq(str(r, "site"), hex);
    cr_assert_gt(json_integer_value(json_object_get(r, "at_ms")), 0);
    json_decref(jb);
    /* The app's tables hash as before: the resolutions are not in the hash of all tables. */
    uint8_t h[TSYNC_HASH_BYTES];
    cr_assert_eq(tsync_store_hash(h, b, TSYNC__RESOLVED), 0, "%s", th_errmsg());
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, an_entered_value_takes_the_column_affinity_and_wins)
{
    tsync_store *a, *b;
    pair(&a, &b, 1);
    collide(a, b, "p1", 1);
    json_t *jb = journal(b, 0, 0, 0);
    cr_assert_eq(json_array_size(jb), 2);
    int64_t price_id = 0, name_id = 0;
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(jb, i);
        int64_t id = json_integer_value(json_object_get(e, "id"));
        if (!strcmp(str(e, "column"), "price")) price_id = id;
        if (!strcmp(str(e, "column"), "name")) name_id = id;
    }
    json_decref(jb);
    cr_assert(price_id && name_id);
    tsync_value v = {TSYNC_VALUE_TEXT, 0, 0, "275", 3};
    cr_assert_eq(tsync_store_conflict_resolve(b, price_id, TSYNC_RESOLVE_VALUE, &v), 0, "%s",
                 th_errmsg());
    tsync_value blob = {TSYNC_VALUE_BLOB, 0, 0, "\x01\x02", 2};
    cr_assert_eq(tsync_store_conflict_resolve(b, name_id, TSYNC_RESOLVE_VALUE, &blob), 0, "%s",
                 th_errmsg());
    exchange(a, b);
    cr_assert_eq(th_int(a, "SELECT typeof(price) = 'integer' AND price = 275 FROM products", -1),
                 1);
    cr_assert_eq(th_int(a, "SELECT name = x'0102' FROM products", -1), 1);
    cr_assert_str_eq(th_hash(a), th_hash(b));
    cr_assert_eq(n_open(a), 0);
    json_t *ja = journal(a, 0, 0, 0);
    for (size_t i = 0; i < 2; i++) {
        json_t *e = json_array_get(ja, i), *r = json_object_get(e, "resolved");
        cr_assert_str_eq(str(r, "how"), "value");
        /* The record holds the value as the column stored it (the integer, not the text). */
        if (!strcmp(str(e, "column"), "price"))
            cr_assert(json_is_integer(json_object_get(r, "value")) &&
                      json_integer_value(json_object_get(r, "value")) == 275);
    }
    json_decref(ja);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, dismiss_in_bulk_by_ids_and_all)
{
    tsync_store *a, *b;
    pair(&a, &b, 4);
    for (int i = 1; i <= 4; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", i);
        collide(a, b, k, 0);
    }
    cr_assert_eq(n_open(a), 4);
    json_t *ja = journal(a, 0, 0, 0);
    int64_t ids[4];
    for (int i = 0; i < 4; i++)
        ids[i] = json_integer_value(json_object_get(json_array_get(ja, (size_t)i), "id"));
    json_decref(ja);
    char *before = th_text(a, "SELECT group_concat(price) FROM products");
    size_t n = 0;
    cr_assert_eq(tsync_store_conflicts_dismiss(a, ids, 2, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 2);
    cr_assert_eq(n_open(a), 2);
    /* All or nothing: one unknown id, nothing dismissed. */
    int64_t bad[2] = {ids[2], 9999};
    cr_assert_eq(tsync_store_conflicts_dismiss(a, bad, 2, &n), TSYNC_ENOTFOUND);
    cr_assert(strstr(th_errmsg(), "9999"), "%s", th_errmsg());
    cr_assert_eq(n_open(a), 2);
    cr_assert_eq(tsync_store_conflicts_dismiss(a, ids, 1, &n), TSYNC_EINVAL);
    /* An id given twice is dismissed, not refused as resolved by the same call. */
    int64_t twice[2] = {ids[2], ids[2]};
    cr_assert_eq(tsync_store_conflicts_dismiss(a, twice, 2, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 1, "an id given twice counted %zu times", n);
    cr_assert_eq(n_open(a), 1);
    cr_assert_eq(tsync_store_conflicts_dismiss(a, NULL, 0, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(n_open(a), 0);
    /* Dismissing keeps every value. */
    TH_AUTO_FREE char *after = th_text(a, "SELECT group_concat(price) FROM products");
    cr_assert_str_eq(before, after);
    free(before);
    exchange(a, b);
    cr_assert_eq(n_open(b), 0);
    json_t *jb = journal(b, 0, 0, 0);
    for (size_t i = 0; i < json_array_size(jb); i++)
        cr_assert_str_eq(str(json_object_get(json_array_get(jb, i), "resolved"), "how"),
                         "dismissed");
    json_decref(jb);
    cr_assert_eq(tsync_store_conflicts_dismiss(b, NULL, 0, &n), 0);
    cr_assert_eq(n, 0);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, pages_by_id_and_filters_open_ones)
{
    tsync_store *a, *b;
    pair(&a, &b, 5);
    for (int i = 1; i <= 5; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", i);
        collide(a, b, k, 0);
    }
    json_t *all = journal(a, 0, 0, 0);
    cr_assert_eq(json_array_size(all), 5);
    int64_t ids[5];
    for (int i = 0; i < 5; i++)
        ids[i] = json_integer_value(json_object_get(json_array_get(all, (size_t)i), "id"));
    json_decref(all);
    /* Pages of two: 2, 2, 1, then none. */
    int64_t since = 0;
    size_t seen = 0, sizes[4], np = 0;
    for (;;) {
        json_t *p = journal(a, since, 2, 0);
        size_t n = json_array_size(p);
        sizes[np++] = n;
        for (size_t i = 0; i < n; i++) {
            int64_t id = json_integer_value(json_object_get(json_array_get(p, i), "id"));
            cr_assert_eq(id, ids[seen], "page entry %zu is id %lld", seen, (long long)id);
            cr_assert_gt(id, since);
            seen++;
        }
        if (n) since = json_integer_value(json_object_get(json_array_get(p, n - 1), "id"));
        json_decref(p);
        if (!n) break;
        cr_assert_lt(np, 4);
    }
    cr_assert_eq(seen, 5);
    cr_assert(np == 4 && sizes[0] == 2 && sizes[1] == 2 && sizes[2] == 1 && sizes[3] == 0);
    /* Resolve the 2nd and the 4th: the open filter leaves 1, 3, 5. */
    cr_assert_eq(tsync_store_conflict_resolve(a, ids[1], TSYNC_RESOLVE_KEEP, NULL), 0);
    cr_assert_eq(tsync_store_conflicts_dismiss(a, &ids[3], 1, NULL), 0);
    json_t *open = journal(a, 0, 0, 1);
    cr_assert_eq(json_array_size(open), 3);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(open, 1), "id")), ids[2]);
    json_decref(open);
    json_t *p = journal(a, ids[2], 1, 1);
    cr_assert_eq(json_array_size(p), 1);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(p, 0), "id")), ids[4]);
    json_decref(p);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, pruning_drops_old_resolved_entries_and_keeps_open_ones)
{
    tsync_store *a, *b;
    pair(&a, &b, 2);
    collide(a, b, "p1", 0);
    collide(a, b, "p2", 0);
    json_t *ja = journal(a, 0, 0, 0);
    int64_t first = json_integer_value(json_object_get(json_array_get(ja, 0), "id"));
    int64_t second = json_integer_value(json_object_get(json_array_get(ja, 1), "id"));
    json_decref(ja);
    cr_assert_eq(tsync_store_conflict_resolve(a, first, TSYNC_RESOLVE_KEEP, NULL), 0);
    /* Within the bound: kept. */
    cr_assert_eq(tsync_store_prune(a, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_conflicts", -1), 2);
    /* Past it: the resolved entry goes, the open one stays, however old. */
    a->clock_offset_ms = (int64_t)(TSYNC_CONFLICTS_KEEP_DAYS + 1) * 86400000;
    cr_assert_eq(tsync_store_prune(a, NULL), 0, "%s", th_errmsg());
    a->clock_offset_ms = 0;
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_conflicts", -1), 1);
    cr_assert_eq(th_int(a, "SELECT id FROM tsync_conflicts", -1), second);
    cr_assert_eq(n_open(a), 1);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, errors_name_the_entry)
{
    tsync_store *a, *b;
    pair(&a, &b, 1);
    collide(a, b, "p1", 0);
    int64_t id = th_int(a, "SELECT id FROM tsync_conflicts", -1);
    cr_assert_eq(tsync_store_conflict_resolve(a, 4242, TSYNC_RESOLVE_KEEP, NULL), TSYNC_ENOTFOUND);
    cr_assert(strstr(th_errmsg(), "conflict 4242 does not exist"), "%s", th_errmsg());
    cr_assert_eq(tsync_store_conflict_resolve(a, id, 9, NULL), TSYNC_EINVAL);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_VALUE, NULL), TSYNC_EINVAL);
    tsync_value bad = {77, 0, 0, NULL, 0};
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_VALUE, &bad), TSYNC_EINVAL);
    cr_assert_eq(n_open(a), 1);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_KEEP, NULL), 0);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_TAKE_OTHER, NULL), TSYNC_EINVAL);
    cr_assert(strstr(th_errmsg(), "already resolved (keep)"), "%s", th_errmsg());
    cr_assert(!strchr(th_errmsg(), '\n'));
    /* A row deleted since: nothing to write, nothing resolved. */
    collide(a, b, "p1", 0);
    int64_t id2 = th_int(b, "SELECT max(id) FROM tsync_conflicts", -1);
    th_exec(b, "DELETE FROM products WHERE id = 'p1'");
    th_seal(b);
    cr_assert_eq(tsync_store_conflict_resolve(b, id2, TSYNC_RESOLVE_TAKE_OTHER, NULL),
                 TSYNC_ENOTFOUND);
    cr_assert(strstr(th_errmsg(), "deleted"), "%s", th_errmsg());
    json_t *jb = journal(b, id2 - 1, 0, 0);
    cr_assert(json_is_true(json_object_get(json_array_get(jb, 0), "open")));
    json_decref(jb);
    tsync_store_free(a), tsync_store_free(b);
}

Test(conflict_resolve, a_till_recording_the_collision_with_its_resolution_shows_it_resolved)
{
    tsync_store *a, *b;
    pair(&a, &b, 1);
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    collide(a, b, "p1", 0);
    int64_t id = th_int(a, "SELECT id FROM tsync_conflicts", -1);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_KEEP, NULL), 0);
    /* c gets both writes and the resolution in one bundle: it records the collision in the
     * merge that also brings its resolution. */
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg());
    json_t *jc = journal(c, 0, 0, 0), *ja = journal(a, 0, 0, 0);
    cr_assert_eq(json_array_size(jc), 1, "c recorded no conflict");
    cr_assert_str_eq(str(json_array_get(jc, 0), "cid"), str(json_array_get(ja, 0), "cid"));
    cr_assert_str_eq(str(json_object_get(json_array_get(jc, 0), "resolved"), "how"), "keep");
    cr_assert_eq(n_open(c), 0);
    /* Nothing was parked for want of the table of resolutions. */
    cr_assert_eq(th_int(c, "SELECT count(*) FROM tsync_parked", -1), 0);
    json_decref(jc), json_decref(ja);
    tsync_store_free(a), tsync_store_free(b), tsync_store_free(c);
}

/* Snapshot chunks, collected (store/snapshot.h). */
typedef struct {
    uint8_t *c[64];
    size_t len[64], n;
} chunks;

static int collect(void *ctx, const uint8_t *chunk, size_t len)
{
    chunks *k = ctx;
    cr_assert_lt(k->n, 64);
    k->c[k->n] = malloc(len);
    cr_assert(k->c[k->n]);
    memcpy(k->c[k->n], chunk, len);
    k->len[k->n++] = len;
    return 0;
}

Test(conflict_resolve, a_snapshot_carries_the_resolutions)
{
    tsync_store *a, *b;
    pair(&a, &b, 1);
    collide(a, b, "p1", 0);
    int64_t id = th_int(a, "SELECT id FROM tsync_conflicts", -1);
    cr_assert_eq(tsync_store_conflict_resolve(a, id, TSYNC_RESOLVE_TAKE_OTHER, NULL), 0);
    /* c, which never had the table of resolutions, takes a's state whole. */
    tsync_store *c = th_open_products(th_path(dir, "c.db"));
    chunks k = {0};
    tsync__vv vv;
    memset(&vv, 0, sizeof vv);
    cr_assert_eq(tsync__snap_export(a, 4096, collect, &k, &vv), 0, "%s", th_errmsg());
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync__snap_import(c, (const uint8_t *const *)k.c, k.len, k.n, &vv, &rep), 0, "%s",
                 th_errmsg());
    tsync_merge_report_clear(&rep);
    cr_assert_str_eq(th_hash(a), th_hash(c));
    TH_AUTO_FREE char *ra = th_text(a, "SELECT hex(cid) || how FROM tsync_resolved");
    TH_AUTO_FREE char *rc = th_text(c, "SELECT hex(cid) || how FROM tsync_resolved");
    cr_assert_str_eq(ra, rc);
    for (size_t i = 0; i < k.n; i++) free(k.c[i]);
    tsync__vv_free(&vv);
    /* b then hears c: the resolution reaches it from a till that had it by snapshot. */
    exchange(b, a);
    cr_assert_eq(n_open(b), 0);
    tsync_store_free(a), tsync_store_free(b), tsync_store_free(c);
}

Test(conflict_resolve, a_database_from_before_identities_is_upgraded_at_open)
{
    const char *p = th_path(dir, "old.db");
    tsync_store *s = th_open_products(p);
    /* The journal as an older build left it: no cid and key columns, one entry. */
    th_exec(s, "DROP INDEX tsync_conflicts_cid; ALTER TABLE tsync_conflicts DROP COLUMN cid;"
               "ALTER TABLE tsync_conflicts DROP COLUMN key;"
               "INSERT INTO tsync_conflicts(at_ms, tbl, pk, col, win_val, win_hlc, win_site,"
               " lose_val, lose_hlc, lose_site) VALUES(1, 'products', '[\"p1\"]', 'price', 2,"
               " 65536, NULL, 1, 65535, NULL)");
    tsync_store_free(s);
    /* Read-only, not upgraded: listed as open, without identity. */
    tsync_store_options ro = TSYNC_STORE_OPTIONS_INIT;
    ro.read_only = 1;
    cr_assert_eq(tsync_store_open(&s, p, &ro), 0, "%s", th_errmsg());
    json_t *j = journal(s, 0, 0, 1);
    cr_assert_eq(json_array_size(j), 1);
    cr_assert(json_is_null(json_object_get(json_array_get(j, 0), "cid")));
    json_decref(j);
    tsync_store_free(s);
    s = th_open(p);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM tsync_conflicts WHERE length(cid) = 16", -1), 1);
    int64_t id = th_int(s, "SELECT id FROM tsync_conflicts", -1);
    /* Without its row's key it cannot be written, but it can be kept or dismissed. */
    cr_assert_eq(tsync_store_conflict_resolve(s, id, TSYNC_RESOLVE_TAKE_OTHER, NULL), TSYNC_EINVAL);
    size_t n = 0;
    cr_assert_eq(tsync_store_conflicts_dismiss(s, NULL, 0, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 1);
    cr_assert_eq(n_open(s), 0);
    tsync_store_free(s);
}

/* ---------------------------------------------------------------- property */

/* The resolutions s holds, as one string (empty without the table). */
static char *resolutions(tsync_store *s)
{
    if (!th_int(s, "SELECT count(*) FROM sqlite_schema WHERE name = 'tsync_resolved'", 0))
        return strdup("");
    char *t = th_text(s, "SELECT group_concat(x, ';') FROM (SELECT hex(cid) || ':' || how || ':' "
                         "|| quote(value) AS x FROM tsync_resolved ORDER BY cid)");
    return t ? t : strdup("");
}

Test(conflict_resolve, three_tills_converge_under_random_schedules)
{
    uint64_t seed = th_seed("conflict_resolve_property");
    size_t total = 0;
    for (int round = 0; round < 6; round++) {
        uint64_t st = seed + (uint64_t)round;
        tsync_store *r[3];
        char name[32];
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "r%d-%d.db", round, i);
            r[i] = th_open_products(th_path(dir, name));
        }
        th_exec(r[0], "INSERT INTO products VALUES('k0','a',1,0),('k1','b',2,0),('k2','c',3,0)");
        th_seal(r[0]);
        for (int i = 1; i < 3; i++) cr_assert_eq(th_sync(r[0], r[i]), 0);
        size_t resolved = 0;
        for (int step = 0; step < 60; step++) {
            int who = (int)(th_rand(&st) % 3), what = (int)(th_rand(&st) % 10);
            tsync_store *s = r[who];
            char sql[160];
            if (what < 5) {
                snprintf(sql, sizeof sql, "UPDATE products SET %s = %d WHERE id = 'k%d'",
                         th_rand(&st) % 2 ? "price" : "name", (int)(th_rand(&st) % 1000),
                         (int)(th_rand(&st) % 3));
                th_exec(s, sql);
                th_seal(s);
            } else if (what < 8) {
                int to = (int)(th_rand(&st) % 3);
                if (to != who)
                    cr_assert_eq(th_sync(s, r[to]), 0, "seed %llu: %s", (unsigned long long)seed,
                                 th_errmsg());
            } else {
                json_t *open = journal(s, 0, 0, 1);
                size_t n = json_array_size(open);
                if (n) {
                    json_t *e = json_array_get(open, th_rand(&st) % n);
                    int64_t id = json_integer_value(json_object_get(e, "id"));
                    int how = (int)(th_rand(&st) % 4);
                    tsync_value v = {TSYNC_VALUE_INTEGER, (int64_t)(th_rand(&st) % 1000), 0, NULL,
                                     0};
                    int rc = how == 3 ? tsync_store_conflicts_dismiss(s, &id, 1, NULL)
                                      : tsync_store_conflict_resolve(s, id, how + 1, &v);
                    cr_assert_eq(rc, 0, "seed %llu: resolve %lld: %s", (unsigned long long)seed,
                                 (long long)id, th_errmsg());
                    resolved++;
                }
                json_decref(open);
            }
        }
        /* Everyone hears everything. */
        for (int k = 0; k < 2; k++)
            for (int i = 0; i < 3; i++)
                for (int j = 0; j < 3; j++)
                    if (i != j) cr_assert_eq(th_sync(r[i], r[j]), 0, "%s", th_errmsg());
        char *res0 = resolutions(r[0]);
        for (int i = 1; i < 3; i++) {
            cr_assert_str_eq(th_hash(r[0]), th_hash(r[i]), "seed %llu round %d: rows differ",
                             (unsigned long long)seed, round);
            char *ri = resolutions(r[i]);
            cr_assert_str_eq(res0, ri, "seed %llu round %d: resolutions differ",
                             (unsigned long long)seed, round);
            free(ri);
        }
        /* A collision two tills recorded is open on both or resolved on both. */
        for (int i = 0; resolved && i < 3; i++)
            for (int j = 0; j < 3; j++) {
                if (i == j) continue;
                char att[300];
                snprintf(att, sizeof att, "ATTACH '%s/r%d-%d.db' AS o", dir, round, j);
                th_exec(r[i], att);
                int64_t differ =
                    th_int(r[i],
                           "SELECT count(*) FROM tsync_conflicts c JOIN o.tsync_conflicts d ON "
                           "d.cid = c.cid WHERE (c.cid IN (SELECT cid FROM main.tsync_resolved)) "
                           "!= (d.cid IN (SELECT cid FROM o.tsync_resolved))",
                           -1);
                th_exec(r[i], "DETACH o");
                cr_assert_eq(differ, 0, "seed %llu round %d: tills %d and %d disagree",
                             (unsigned long long)seed, round, i, j);
            }
        free(res0);
        for (int i = 0; i < 3; i++) tsync_store_free(r[i]);
        total += resolved;
    }
    /* The schedules met conflicts and resolved some. */
    cr_assert_gt(total, 0, "seed %llu: no conflict was resolved", (unsigned long long)seed);
    fprintf(stderr, "conflict_resolve_property: %zu resolutions in 6 rounds\n", total);
}
