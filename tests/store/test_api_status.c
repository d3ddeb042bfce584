/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_api_status.c — the database's status through the public API only
 * (tillsync/status.h), as an app's status screen reads it: the counts field by field (unsealed,
 * conflicts, held with their reasons, parked), what needs a person (another till's definitions
 * differ), the JSON built from the same reads, and the version of the status struct checked on
 * entry (an old and a future one).
 */
#include <criterion/criterion.h>
#include <ftw.h>
#include <jansson.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tillsync/tillsync.h"

static char g_dir[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb, (void)flag, (void)ftw;
    return remove(p);
}

static void setup(void)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(g_dir, sizeof g_dir, "%.40s/apistXXXXXX", tmp && *tmp ? tmp : "/tmp");
    cr_assert(mkdtemp(g_dir));
}

static void teardown(void)
{
    nftw(g_dir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite(api_status, .init = setup, .fini = teardown);

static void run(tsync_store *s, const char *sql)
{
    cr_assert_eq(tsync_store_exec(s, sql, NULL, NULL), 0, "%s: %s", sql,
                 tsync_error_last()->message);
}

static tsync_store *open_db(const char *name, const char *table_sql)
{
    char path[128];
    snprintf(path, sizeof path, "%s/%s", g_dir, name);
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s = NULL;
    cr_assert_eq(tsync_store_open(&s, path, &o), 0, "open: %s", tsync_error_last()->message);
    run(s, table_sql);
    cr_assert_eq(tsync_store_replicate(s, "items", NULL, 0), 0);
    return s;
}

#define ITEMS "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, qty INTEGER)"

/* Merges into `to` the batches of `from` that a replica in state `since` lacks (all: NULL). */
static tsync_merge_report merge_from(tsync_store *from, tsync_store *since, tsync_store *to)
{
    char *state = NULL;
    if (since) cr_assert_eq(tsync_store_state_json(&state, since), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    cr_assert_eq(tsync_store_bundle(&b, &len, from, state, NULL), 0);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    /* A merge that refuses part of the bundle still reports it: the caller checks the report. */
    int rc = tsync_store_merge(to, b, len, &r);
    (void)rc;
    free(b);
    free(state);
    return r;
}

static tsync_store_status status_of(tsync_store *s)
{
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, s), 0, "%s", tsync_error_last()->message);
    return st;
}

Test(api_status, counts_field_by_field)
{
    tsync_store *a = open_db("a.db", ITEMS), *b = open_db("b.db", ITEMS);
    tsync_store_status st = status_of(a);
    cr_assert_eq(memcmp(st.site_id, tsync_store_site_id(a), TSYNC_SITE_ID_BYTES), 0);
    cr_assert_eq(st.held, 0);
    cr_assert_eq(st.parked, 0);
    cr_assert_eq(st.conflicts, 0);
    cr_assert_eq(st.forks, 0);
    cr_assert_eq(st.unsealed, 0);
    cr_assert_eq(st.rollbacks, 0);
    cr_assert_eq(st.schema_mismatches, 0);
    cr_assert_null(st.unsealable);
    cr_assert_null(st.signed_migration_error);
    cr_assert_null(st.last_rollback_json);
    cr_assert_not(tsync_store_status_attention(&st));
    tsync_store_status_clear(&st);
    cr_assert_eq(st.version, TSYNC_STORE_STATUS_VERSION, "clear keeps the version");

    /* A commit through plain SQLite, not sealed yet. */
    sqlite3 *db = tsync_store_sqlite(a);
    cr_assert_eq(sqlite3_exec(db, "INSERT INTO items VALUES ('p1', 'tea', 1)", NULL, NULL, NULL),
                 SQLITE_OK);
    st = status_of(a);
    cr_assert_eq(st.unsealed, 1);
    tsync_store_status_clear(&st);
    cr_assert_eq(tsync_store_seal(a, NULL), 0);

    /* Concurrent writes of one field: a conflict on the side that merges. */
    tsync_merge_report r = merge_from(a, NULL, b);
    tsync_merge_report_clear(&r);
    run(a, "UPDATE items SET name = 'green tea' WHERE id = 'p1'");
    run(b, "UPDATE items SET name = 'black tea' WHERE id = 'p1'");
    r = merge_from(a, b, b);
    tsync_merge_report_clear(&r);
    st = status_of(b);
    cr_assert_eq(st.conflicts, 1);
    cr_assert_eq(st.unsealed, 0);
    tsync_store_status_clear(&st);
    tsync_store_free(a);
    tsync_store_free(b);
}

typedef struct {
    int n;
    char origin[33];
    uint64_t seq;
    char reason[200];
} held_seen;

static int held_one(void *ctx, const tsync_held_batch *h)
{
    held_seen *w = ctx;
    cr_assert_eq(h->version, TSYNC_HELD_BATCH_VERSION);
    if (!w->n++) {
        snprintf(w->origin, sizeof w->origin, "%s", h->origin_hex);
        w->seq = h->seq;
        snprintf(w->reason, sizeof w->reason, "%s", h->reason);
    }
    return 0;
}

static int stop_at_first(void *ctx, const tsync_held_batch *h)
{
    (void)h;
    ++*(int *)ctx;
    return 42;
}

Test(api_status, held_batches_with_reasons)
{
    tsync_store *a = open_db("a.db", ITEMS), *b = open_db("b.db", ITEMS),
                *c = open_db("c.db", ITEMS);
    run(a, "INSERT INTO items VALUES ('p1', 'tea', 1)");
    tsync_merge_report r = merge_from(a, NULL, c); /* c holds a's first batch */
    tsync_merge_report_clear(&r);
    run(a, "INSERT INTO items VALUES ('p2', 'milk', 2)");
    /* b gets only what c lacks: a's second batch, without the first. */
    r = merge_from(a, c, b);
    cr_assert_eq(r.held, 1, "merged %zu held %zu", r.merged, r.held);
    tsync_merge_report_clear(&r);

    tsync_store_status st = status_of(b);
    cr_assert_eq(st.held, 1);
    tsync_store_status_clear(&st);
    held_seen w = {0};
    size_t total = 0;
    cr_assert_eq(tsync_store_held_foreach(&total, b, 0, held_one, &w), 0);
    cr_assert_eq(total, 1);
    cr_assert_eq(w.n, 1);
    char hex[33];
    const uint8_t *id = tsync_store_site_id(a);
    for (int i = 0; i < 16; i++) snprintf(hex + 2 * i, 3, "%02x", id[i]);
    cr_assert_str_eq(w.origin, hex);
    cr_assert_eq(w.seq, 2);
    cr_assert_gt(strlen(w.reason), 0, "a held batch says why");
    int calls = 0;
    cr_assert_eq(tsync_store_held_foreach(NULL, b, 0, stop_at_first, &calls), 42);
    cr_assert_eq(calls, 1);

    /* The missing batch arrives: nothing is held any more. */
    r = merge_from(a, NULL, b);
    tsync_merge_report_clear(&r);
    w.n = 0;
    cr_assert_eq(tsync_store_held_foreach(&total, b, 0, held_one, &w), 0);
    cr_assert_eq(total, 0);
    cr_assert_eq(w.n, 0);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

/* b replicates items without the column a has: a's changes of it park at b, and their
 * definitions differ; status says so, field by field and as JSON. */
Test(api_status, parked_and_mismatch_as_json)
{
    tsync_store *a = open_db("a.db", ITEMS),
                *b = open_db("b.db", "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT)");
    run(a, "INSERT INTO items VALUES ('p1', 'tea', 3)");
    tsync_merge_report r = merge_from(a, NULL, b);
    tsync_merge_report_clear(&r);

    tsync_store_status st = status_of(b);
    cr_assert_gt(st.parked, 0);
    cr_assert_gt(st.schema_mismatches, 0);
    cr_assert(tsync_store_status_attention(&st));
    tsync_store_status_clear(&st);

    char *js = NULL;
    cr_assert_eq(tsync_store_schema_mismatches_json(&js, b), 0);
    json_t *mm = json_loads(js, 0, NULL);
    free(js);
    cr_assert(json_is_array(mm) && json_array_size(mm) > 0);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(mm, 0), "table")), "items");
    json_decref(mm);

    cr_assert_eq(tsync_store_parked_json(&js, b, 0), 0);
    json_t *pk = json_loads(js, 0, NULL);
    free(js);
    cr_assert_gt(json_integer_value(json_object_get(pk, "total")), 0);
    json_t *first = json_array_get(json_object_get(pk, "parked"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(first, "table")), "items");
    cr_assert(json_string_value(json_object_get(first, "reason")));
    json_decref(pk);

    cr_assert_eq(tsync_store_status_json(&js, b, 1), 0);
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    cr_assert(o);
    static const char *const order[] = {"site",
                                        "public_key",
                                        "rollbacks",
                                        "held",
                                        "parked",
                                        "conflicts",
                                        "conflicts_open",
                                        "forks",
                                        "unsealed",
                                        "last_rollback",
                                        "state",
                                        "schema_mismatches",
                                        "signed_migration_error",
                                        "parked_changes",
                                        "relay_keys"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v)
    {
        cr_assert(i < sizeof order / sizeof order[0]);
        cr_assert_str_eq(k, order[i], "field %zu", i);
        i++;
    }
    cr_assert_eq(i, sizeof order / sizeof order[0]);
    cr_assert_str_eq(json_string_value(json_object_get(o, "state")), "attention");
    cr_assert_eq(json_array_size(json_object_get(o, "parked_changes")), 1, "parked_max");
    cr_assert_gt(json_integer_value(json_object_get(o, "parked")), 0);
    json_decref(o);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* An old (0: before any version) and a future version are refused on entry, with one line, and
 * nothing is filled. */
Test(api_status, version_checked_on_entry)
{
    tsync_store *a = open_db("a.db", ITEMS);
    unsigned int bad[] = {0, TSYNC_STORE_STATUS_VERSION + 1};
    for (size_t i = 0; i < 2; i++) {
        tsync_store_status st = TSYNC_STORE_STATUS_INIT;
        st.version = bad[i];
        st.held = 77;
        cr_assert_eq(tsync_store_status_get(&st, a), TSYNC_EVERSION);
        const tsync_error *e = tsync_error_last();
        cr_assert(e && strstr(e->message, "version") && !strchr(e->message, '\n'), "%s",
                  e ? e->message : "");
        cr_assert_eq(st.held, 77, "nothing filled");
    }
    tsync_store_free(a);
}
