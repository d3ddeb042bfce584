/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_console_conflicts.c — the console's conflict endpoints (docs/CONSOLE.md,
 * "Conflicts") against two real nodes on loopback that wrote the same fields while apart, then
 * connected: each lists the collisions; one resolved on till A (take the other value, enter a
 * value, keep) shows resolved, with that value in the row, on till B too; dismissing by ids and
 * all; paging and filters; and every refusal (token, CSRF, malformed or ambiguous body, oversize
 * body, a bad or unknown id, an entry already resolved) changes nothing.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/console_util.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/conflicts.h"

TestSuite(console_conflicts, .fini = th_cleanup, .timeout = 180);

#define NROWS 6

/* The entry for row key in a journal (borrowed), or fails. */
static json_t *entry_of(json_t *journal, const char *key)
{
    size_t i;
    json_t *e;
    json_array_foreach(journal, i, e)
    {
        const char *k = json_string_value(json_array_get(json_object_get(e, "key"), 0));
        if (k && strcmp(k, key) == 0) return e;
    }
    cr_assert_fail("no conflict for row %s", key);
    return NULL;
}

static json_int_t id_of(json_t *journal, const char *key)
{
    return json_integer_value(json_object_get(entry_of(journal, key), "id"));
}

/* price of row key in db, read with a connection of its own. */
static int64_t price(const char *db, const char *key)
{
    char sql[128];
    snprintf(sql, sizeof sql, "SELECT price FROM products WHERE id = '%s'", key);
    tsync_store *s = th_open(db);
    int64_t v = th_int(s, sql, -1);
    tsync_store_free(s);
    return v;
}

/* Polls t's journal (up to 30 s) until row key's conflict is resolved with how; returns the
 * entry (a new reference). */
static json_t *wait_resolved(const cu_till *t, const char *key, const char *how)
{
    int64_t end = nu_now_ms() + 30000;
    for (;;) {
        json_t *j = cu_api(t, "GET", "/api/conflicts", NULL, 200);
        json_t *e = entry_of(j, key);
        json_t *r = json_object_get(e, "resolved");
        const char *h = json_string_value(json_object_get(r, "how"));
        if (h && strcmp(h, how) == 0) {
            cr_assert(json_is_false(json_object_get(e, "open")));
            json_incref(e);
            json_decref(j);
            return e;
        }
        char *s = json_dumps(e, JSON_COMPACT);
        cr_assert(nu_now_ms() < end, "%s: row %s not resolved (%s) after 30 s: %s", t->db, key, how,
                  s);
        free(s);
        json_decref(j);
        nu_sleep_ms(100);
    }
}

/* Polls until row key's price in db is want (30 s). */
static void wait_price(const char *db, const char *key, int64_t want)
{
    int64_t end = nu_now_ms() + 30000, got;
    while ((got = price(db, key)) != want && nu_now_ms() < end) nu_sleep_ms(100);
    cr_assert_eq(got, want, "%s: price of %s is %lld, want %lld", db, key, (long long)got,
                 (long long)want);
}

/* Every refusal of a resolve or dismiss on A, then: every entry still open, every price as
 * before. */
static void refusals_change_nothing(const cu_till *a, json_t *journal)
{
    char rpath[80], cookie[256], csrf[512], wrong[400];
    json_int_t id1 = id_of(journal, "p1");
    snprintf(rpath, sizeof rpath, "/api/conflicts/%lld/resolve", (long long)id1);
    int64_t before[NROWS + 1];
    for (int i = 1; i <= NROWS; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", i);
        before[i] = price(a->db, k);
    }
    cu_session(a, cookie, csrf);
    snprintf(wrong, sizeof wrong, "%sX-CSRF-Token: %064d\r\n", cookie, 3);
    char bearer_wrong[128];
    snprintf(bearer_wrong, sizeof bearer_wrong, "Authorization: Bearer %064d\r\n", 9);
    const char *take = "{\"take\":\"other\"}", *all = "{\"all\":true}";
    char unknown_too[80];
    snprintf(unknown_too, sizeof unknown_too, "{\"ids\":[%lld,999999]}", (long long)id1);
    static char big[(64u << 10) + 16];
    memset(big, ' ', sizeof big);
    memcpy(big, "{\"ids\":[1]", 10);
    big[sizeof big - 1] = '}';
    const struct {
        const char *path, *headers, *body;
        size_t len;
        int status;
    } cases[] = {
        /* who */
        {rpath, NULL, take, 0, 401},
        {rpath, bearer_wrong, take, 0, 401},
        {rpath, cookie, take, 0, 403},
        {rpath, wrong, take, 0, 403},
        {"/api/conflicts/dismiss", NULL, all, 0, 401},
        {"/api/conflicts/dismiss", bearer_wrong, all, 0, 401},
        {"/api/conflicts/dismiss", cookie, all, 0, 403},
        {"/api/conflicts/dismiss", wrong, all, 0, 403},
        /* the body */
        {rpath, a->bearer, "{not json", 0, 400},
        {rpath, a->bearer, "[1]", 0, 400},
        {rpath, a->bearer, "", 0, 400},
        {rpath, a->bearer, "{}", 0, 400},
        {rpath, a->bearer, "{\"keep\":false}", 0, 400},
        {rpath, a->bearer, "{\"take\":\"mine\"}", 0, 400},
        {rpath, a->bearer, "{\"value\":[1]}", 0, 400},
        {rpath, a->bearer, "{\"value\":true}", 0, 400},
        {rpath, a->bearer, "{\"keep\":true,\"take\":\"other\"}", 0, 400},
        {rpath, a->bearer, "{\"value\":1,\"keep\":true}", 0, 400},
        {rpath, a->bearer, big, sizeof big, 413},
        {"/api/conflicts/dismiss", a->bearer, "{oops", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"ids\":[]}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"ids\":[\"1\"]}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"ids\":[0]}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"ids\":1}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"all\":false}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, "{\"all\":true,\"ids\":[1]}", 0, 400},
        {"/api/conflicts/dismiss", a->bearer, big, sizeof big, 413},
        /* all or nothing: one unknown id, and the known one is not dismissed either */
        {"/api/conflicts/dismiss", a->bearer, unknown_too, 0, 404},
        /* the id */
        {"/api/conflicts/abc/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/0/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/-1/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/1x/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/+1/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/99999999999999999999/resolve", a->bearer, take, 0, 400},
        {"/api/conflicts/999999/resolve", a->bearer, take, 0, 404},
        {"/api/conflicts/1/resolve?x=1", a->bearer, take, 0, 400},
        {"/api/conflicts/dismiss?all=1", a->bearer, all, 0, 400},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        size_t len = cases[i].len ? cases[i].len : strlen(cases[i].body);
        hc_reply r = cu_req(a, "POST", cases[i].path, cases[i].headers, cases[i].body, len);
        cr_assert_eq(r.status, cases[i].status, "case %zu: POST %s %.60s: %d %s", i, cases[i].path,
                     cases[i].body, r.status, r.body);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    /* GET where a POST is wanted. */
    hc_reply r = cu_req(a, "GET", rpath, a->bearer, NULL, 0);
    cr_assert_eq(r.status, 405, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    r = cu_req(a, "GET", "/api/conflicts/dismiss", a->bearer, NULL, 0);
    cr_assert_eq(r.status, 405, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    /* Nothing changed. */
    json_decref(cu_wait_count(a, "/api/conflicts?open=1", NROWS, 0));
    for (int i = 1; i <= NROWS; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", i);
        cr_assert_eq(price(a->db, k), before[i], "a refused request changed %s", k);
    }
    /* The cookie session with its CSRF token does get through (here: an unknown id, 404). */
    r = cu_req(a, "POST", "/api/conflicts/999999/resolve", csrf, take, strlen(take));
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    hc_reply_free(&r);
}

Test(console_conflicts, listed_paged_and_filtered)
{
    cu_till a, b;
    char *dir = th_tmpdir_auto();
    cu_pair_collided(&a, &b, dir, NROWS);
    json_t *ja = cu_api(&a, "GET", "/api/conflicts", NULL, 200);
    json_t *jb = cu_api(&b, "GET", "/api/conflicts", NULL, 200);
    cr_assert_eq(json_array_size(ja), NROWS);
    /* One collision, one identity, on both tills; both values with their times and tills. */
    for (int i = 1; i <= NROWS; i++) {
        char k[8];
        snprintf(k, sizeof k, "p%d", i);
        json_t *ea = entry_of(ja, k), *eb = entry_of(jb, k);
        cr_assert_str_eq(json_string_value(json_object_get(ea, "cid")),
                         json_string_value(json_object_get(eb, "cid")));
        cr_assert_str_eq(json_string_value(json_object_get(ea, "column")), "price");
        cr_assert(json_is_null(json_object_get(ea, "resolved")));
        json_t *w = json_object_get(ea, "winner"), *l = json_object_get(ea, "loser");
        json_int_t vw = json_integer_value(json_object_get(w, "value"));
        json_int_t vl = json_integer_value(json_object_get(l, "value"));
        cr_assert((vw == 100 * i + 1 && vl == 100 * i + 2) ||
                      (vw == 100 * i + 2 && vl == 100 * i + 1),
                  "%s: winner %lld loser %lld", k, (long long)vw, (long long)vl);
        cr_assert(json_is_string(json_object_get(w, "till")));
        cr_assert(json_is_integer(json_object_get(l, "time_ms")));
    }
    /* Pages: limit, then since the last id of the page. */
    json_t *p1 = cu_api(&a, "GET", "/api/conflicts?limit=4", NULL, 200);
    cr_assert_eq(json_array_size(p1), 4);
    char path[80];
    snprintf(path, sizeof path, "/api/conflicts?since=%lld&limit=4",
             (long long)json_integer_value(json_object_get(json_array_get(p1, 3), "id")));
    json_t *p2 = cu_api(&a, "GET", path, NULL, 200);
    cr_assert_eq(json_array_size(p2), NROWS - 4);
    cr_assert(json_equal(json_array_get(p2, 0), json_array_get(ja, 4)));
    json_decref(p1);
    json_decref(p2);
    json_t *all = cu_api(&a, "GET", "/api/conflicts?open=0&limit=0&since=0", NULL, 200);
    cr_assert(json_equal(all, ja));
    json_decref(all);
    /* Parameters are checked like everywhere else. */
    static const char *const bad[] = {
        "/api/conflicts?since=abc", "/api/conflicts?since=-1",      "/api/conflicts?open=2",
        "/api/conflicts?open=yes",  "/api/conflicts?limit=x",       "/api/conflicts?limit=10001",
        "/api/conflicts?x=1",       "/api/conflicts?open=1&open=1", "/api/conflicts?since="};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        hc_reply r = cu_req(&a, "GET", bad[i], a.bearer, NULL, 0);
        cr_assert_eq(r.status, 400, "GET %s: %d %s", bad[i], r.status, r.body);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    json_decref(ja);
    json_decref(jb);
    cu_stop(&b);
    cu_stop(&a);
}

/* Waits until t's /metrics has the line want, and its /api/status the same count. */
static void wait_open_count(const cu_till *t, long long want)
{
    char line[64];
    snprintf(line, sizeof line, "\ntillsync_conflicts_open %lld\n", want);
    int64_t end = nu_now_ms() + 30000;
    for (;;) {
        hc_reply r = cu_req(t, "GET", "/metrics", t->bearer, NULL, 0);
        json_t *st = cu_api(t, "GET", "/api/status", NULL, 200);
        int ok = r.status == 200 && strstr(r.body, line) &&
                 json_integer_value(json_object_get(st, "conflicts_open")) == want;
        if (ok || nu_now_ms() > end) {
            cr_assert(ok, "%s: want %lld open conflicts; /api/status says %lld; /metrics:\n%s",
                      t->db, want,
                      (long long)json_integer_value(json_object_get(st, "conflicts_open")), r.body);
            hc_reply_free(&r);
            json_decref(st);
            return;
        }
        hc_reply_free(&r);
        json_decref(st);
        nu_sleep_ms(100);
    }
}

Test(console_conflicts, resolved_on_one_till_shows_resolved_on_the_other)
{
    cu_till a, b;
    char *dir = th_tmpdir_auto();
    cu_pair_collided(&a, &b, dir, NROWS);
    json_t *ja = cu_api(&a, "GET", "/api/conflicts", NULL, 200);
    refusals_change_nothing(&a, ja);
    wait_open_count(&a, NROWS);

    /* p1: take the other value on A. */
    json_t *e1 = entry_of(ja, "p1");
    json_int_t loser = json_integer_value(json_object_get(json_object_get(e1, "loser"), "value"));
    char path[80];
    snprintf(path, sizeof path, "/api/conflicts/%lld/resolve", (long long)id_of(ja, "p1"));
    json_t *res = cu_api(&a, "POST", path, "{\"take\":\"other\"}", 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "id")), id_of(ja, "p1"));
    json_t *rr = json_object_get(res, "resolved");
    cr_assert_str_eq(json_string_value(json_object_get(rr, "how")), "take");
    cr_assert_eq(json_integer_value(json_object_get(rr, "value")), loser);
    json_decref(res);
    cr_assert_eq(price(a.db, "p1"), loser);
    /* Again: already resolved, 409, nothing changed. */
    hc_reply r = cu_req(&a, "POST", path, a.bearer, "{\"value\":5}", 11);
    cr_assert_eq(r.status, 409, "%d %s", r.status, r.body);
    cu_one_line_error(&r);
    hc_reply_free(&r);
    cr_assert_eq(price(a.db, "p1"), loser);
    /* B: the entry of the same collision resolved, with that value, and the row has it. */
    json_t *eb = wait_resolved(&b, "p1", "take");
    cr_assert_str_eq(json_string_value(json_object_get(eb, "cid")),
                     json_string_value(json_object_get(e1, "cid")));
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(eb, "resolved"), "value")),
                 loser);
    json_decref(eb);
    wait_price(b.db, "p1", loser);

    /* p2: a value entered on A (a number), p5: a string into the INTEGER column (its affinity
     * stores 555), p3: keep. */
    snprintf(path, sizeof path, "/api/conflicts/%lld/resolve", (long long)id_of(ja, "p2"));
    res = cu_api(&a, "POST", path, "{\"value\":777}", 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(res, "resolved"), "how")),
                     "value");
    json_decref(res);
    snprintf(path, sizeof path, "/api/conflicts/%lld/resolve", (long long)id_of(ja, "p5"));
    json_decref(cu_api(&a, "POST", path, "{\"value\":\"555\"}", 200));
    json_int_t winner3 =
        json_integer_value(json_object_get(json_object_get(entry_of(ja, "p3"), "winner"), "value"));
    snprintf(path, sizeof path, "/api/conflicts/%lld/resolve", (long long)id_of(ja, "p3"));
    res = cu_api(&a, "POST", path, "{\"keep\":true}", 200);
    cr_assert_str_eq(json_string_value(json_object_get(json_object_get(res, "resolved"), "how")),
                     "keep");
    json_decref(res);
    cr_assert_eq(price(a.db, "p2"), 777);
    cr_assert_eq(price(a.db, "p5"), 555);
    cr_assert_eq(price(a.db, "p3"), winner3);
    json_decref(wait_resolved(&b, "p2", "value"));
    json_decref(wait_resolved(&b, "p5", "value"));
    json_decref(wait_resolved(&b, "p3", "keep"));
    wait_price(b.db, "p2", 777);
    wait_price(b.db, "p5", 555);
    cr_assert_eq(price(b.db, "p3"), winner3);

    /* Dismiss p4 by id (an id given twice counts once), p4 again is 409, then all (p6). */
    char body[80];
    json_int_t id4 = id_of(ja, "p4");
    snprintf(body, sizeof body, "{\"ids\":[%lld,%lld]}", (long long)id4, (long long)id4);
    res = cu_api(&a, "POST", "/api/conflicts/dismiss", body, 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "dismissed")), 1);
    json_decref(res);
    snprintf(body, sizeof body, "{\"ids\":[%lld]}", (long long)id4);
    r = cu_req(&a, "POST", "/api/conflicts/dismiss", a.bearer, body, strlen(body));
    cr_assert_eq(r.status, 409, "%d %s", r.status, r.body);
    cu_one_line_error(&r);
    hc_reply_free(&r);
    json_decref(cu_wait_count(&a, "/api/conflicts?open=1", 1, 0));
    res = cu_api(&a, "POST", "/api/conflicts/dismiss", "{\"all\":true}", 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "dismissed")), 1);
    json_decref(res);
    json_decref(cu_wait_count(&a, "/api/conflicts?open=1", 0, 0));
    /* Nothing left to dismiss: all is 0, not an error. */
    res = cu_api(&a, "POST", "/api/conflicts/dismiss", "{\"all\":true}", 200);
    cr_assert_eq(json_integer_value(json_object_get(res, "dismissed")), 0);
    json_decref(res);
    json_decref(wait_resolved(&b, "p4", "dismissed"));
    json_decref(wait_resolved(&b, "p6", "dismissed"));
    json_decref(cu_wait_count(&b, "/api/conflicts?open=1", 0, 30000));
    wait_open_count(&b, 0);
    json_decref(ja);
    cu_stop(&b);
    cu_stop(&a);
}
