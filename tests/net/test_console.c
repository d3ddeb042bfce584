/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_console.c — the shop console (net/console/, docs/CONSOLE.md) against real nodes
 * on loopback, spoken to over HTTP (tests/lib/http_client.c): every endpoint refuses a missing or
 * wrong token, the cookie flow of /?token=, CSRF on cookie-authenticated POSTs, the security
 * headers and no CORS, oversize uploads (413), malformed bodies and parameters (400), the status
 * and its event stream, an export imported into another till (preview, then for real: equal
 * hashes), an import with a bad row (line and column, nothing written), backups listed and made
 * on demand, /metrics, /api/schema, /api/conflicts, and the password beyond the token.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/console_util.h"
#include "tests/lib/helpers.h"
#include "tests/lib/http_client.h"
#include "tillsync/backup.h"
#include "tillsync/node.h"

TestSuite(console, .fini = th_cleanup, .timeout = 120);

static const char *const GETS[] = {"/",
                                   "/api/status",
                                   "/api/events",
                                   "/api/session",
                                   "/api/conflicts",
                                   "/api/conflicts?open=1&since=0&limit=5",
                                   "/api/backups/download?file=x.tsbak",
                                   "/api/backups",
                                   "/api/backups/jobs/1",
                                   "/api/export?table=products",
                                   "/api/schema",
                                   "/metrics",
                                   "/app.js"};
static const char *const POSTS[] = {"/api/backups", "/api/import?table=products&format=csv",
                                    "/api/conflicts/1/resolve", "/api/conflicts/dismiss",
                                    "/api/backups/verify"};

Test(console, every_endpoint_refuses_a_missing_or_wrong_token)
{
    cu_till a;
    char *dir = th_tmpdir_auto();
    mkdir(th_path(dir, "bk"), 0700);
    cu_start(&a, dir, "a", th_path(dir, "bk"), NULL, NULL);
    char wrong[128];
    snprintf(wrong, sizeof wrong, "Authorization: Bearer %064d\r\n", 7);
    const char *const bad[] = {NULL, wrong, "Authorization: Bearer \r\n",
                               "Cookie: tsync_console=0123\r\n", "Authorization: Basic eDp5\r\n"};
    for (size_t i = 0; i < sizeof GETS / sizeof *GETS; i++)
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
            hc_reply r = cu_req(&a, "GET", GETS[i], bad[k], NULL, 0);
            cr_assert_eq(r.status, 401, "GET %s with %s: %d", GETS[i], bad[k] ? bad[k] : "nothing",
                         r.status);
            cu_one_line_error(&r);
            hc_reply_free(&r);
        }
    for (size_t i = 0; i < sizeof POSTS / sizeof *POSTS; i++)
        for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
            hc_reply r = cu_req(&a, "POST", POSTS[i], bad[k], "{}", 2);
            cr_assert_eq(r.status, 401, "POST %s: %d", POSTS[i], r.status);
            hc_reply_free(&r);
        }
    /* A wrong token on the page's entry sets no cookie. */
    char path[200];
    snprintf(path, sizeof path, "/?token=%064d", 7);
    hc_reply r = cu_req(&a, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 401);
    char *cookie = hc_header(&r, "Set-Cookie");
    cr_assert_null(cookie);
    hc_reply_free(&r);
    /* Nothing was backed up or imported by the refused requests. */
    json_t *b = cu_api(&a, "GET", "/api/backups", NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(b, "backups")), 0);
    cr_assert(json_is_null(json_object_get(b, "job")));
    json_decref(b);
    cu_stop(&a);
}

Test(console, cookie_flow_csrf_and_security_headers)
{
    cu_till a;
    char *dir = th_tmpdir_auto();
    mkdir(th_path(dir, "bk"), 0700);
    cu_start(&a, dir, "a", th_path(dir, "bk"), NULL, NULL);
    char path[200];
    snprintf(path, sizeof path, "/?token=%s", a.token);
    hc_reply r = cu_req(&a, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 303);
    char *loc = hc_header(&r, "Location");
    cr_assert_str_eq(loc, "/");
    free(loc);
    char *sc = hc_header(&r, "Set-Cookie");
    cr_assert(sc && strstr(sc, "HttpOnly") && strstr(sc, "SameSite=Strict"), "%s", sc);
    char cookie[256];
    snprintf(cookie, sizeof cookie, "Cookie: %.*s\r\n", (int)strcspn(sc, ";"), sc);
    free(sc);
    hc_reply_free(&r);

    /* The cookie authenticates reads, and the page. */
    r = cu_req(&a, "GET", "/api/status", cookie, NULL, 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    static const char *const sec[][2] = {
        {"X-Content-Type-Options", "nosniff"},
        {"Referrer-Policy", "no-referrer"},
        {"Content-Security-Policy", "default-src 'self'"},
        {"Content-Security-Policy", "frame-ancestors 'none'"},
    };
    for (size_t i = 0; i < sizeof sec / sizeof *sec; i++) {
        char *v = hc_header(&r, sec[i][0]);
        cr_assert(v && strstr(v, sec[i][1]), "%s: %s", sec[i][0], v);
        free(v);
    }
    cr_assert_null(strcasestr(r.headers, "Access-Control-"), "%s", r.headers);
    hc_reply_free(&r);
    r = cu_req(&a, "GET", "/", cookie, NULL, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "<script src=\"/app.js\""), "%s", r.body);
    char *ct = hc_header(&r, "Content-Type");
    cr_assert(ct && strstr(ct, "text/html"));
    free(ct);
    hc_reply_free(&r);

    /* A POST on the cookie alone is refused (403): it could come from another site's page. */
    r = cu_req(&a, "POST", "/api/backups", cookie, "{}", 2);
    cr_assert_eq(r.status, 403, "%d %s", r.status, r.body);
    cu_one_line_error(&r);
    hc_reply_free(&r);
    char hdr[512];
    snprintf(hdr, sizeof hdr, "%sX-CSRF-Token: %064d\r\n", cookie, 5);
    r = cu_req(&a, "POST", "/api/backups", hdr, "{}", 2);
    cr_assert_eq(r.status, 403);
    hc_reply_free(&r);
    r = cu_req(&a, "POST", "/api/import?table=products&format=csv", cookie, "id\np9\n", 6);
    cr_assert_eq(r.status, 403);
    hc_reply_free(&r);
    json_t *p = cu_api(&a, "GET", "/api/backups", NULL, 200);
    cr_assert(json_is_null(json_object_get(p, "job")), "a refused POST started a backup");
    json_decref(p);

    /* With the session's CSRF token it goes through. */
    r = cu_req(&a, "GET", "/api/session", cookie, NULL, 0);
    cr_assert_eq(r.status, 200);
    json_t *s = json_loads(r.body, 0, NULL);
    const char *csrf = json_string_value(json_object_get(s, "csrf"));
    cr_assert(csrf && strlen(csrf) == 64, "%s", r.body);
    snprintf(hdr, sizeof hdr, "%sX-CSRF-Token: %s\r\n", cookie, csrf);
    json_decref(s);
    hc_reply_free(&r);
    r = cu_req(&a, "POST", "/api/backups", hdr, "{}", 2);
    cr_assert_eq(r.status, 202, "%d %s", r.status, r.body);
    hc_reply_free(&r);

    /* Bearer requests carry no ambient credential: no CSRF token needed (409: one is running,
     * or 202 when it finished already; never 403). */
    r = cu_req(&a, "POST", "/api/backups", a.bearer, NULL, 0);
    cr_assert(r.status == 202 || r.status == 409, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    cu_stop(&a);
}

Test(console, bad_requests_get_4xx_and_change_nothing)
{
    cu_till a;
    char *dir = th_tmpdir_auto();
    mkdir(th_path(dir, "bk"), 0700);
    cu_start(&a, dir, "a", th_path(dir, "bk"), NULL, NULL);
    static const struct {
        const char *method, *path, *body;
        int status;
    } cases[] = {
        {"POST", "/api/backups", "{not json", 400},
        {"POST", "/api/backups", "[1,2]", 400},
        {"GET", "/api/status?x=1", NULL, 400},
        {"GET", "/api/export", NULL, 400},
        {"GET", "/api/export?table=products;drop", NULL, 400},
        {"GET", "/api/export?table=products&format=xml", NULL, 400},
        {"GET", "/api/export?table=products&table=products", NULL, 400},
        {"GET", "/api/export?table=nosuch", NULL, 404},
        {"POST", "/api/import?table=products&format=csv&dry_run=2", "id\np1\n", 400},
        {"POST", "/api/import?format=csv", "id\np1\n", 400},
        {"POST", "/api/import?table=products&format=csv", "", 400},
        {"POST", "/api/import?table=nosuch&format=csv", "id\np1\n", 404},
        {"POST", "/api/import?table=products&format=csv", "id,nosuch\np1,2\n", 400},
        {"POST", "/api/import?table=products&format=json", "[{\"id\":", 400},
        {"GET", "/api/backups/jobs/abc", NULL, 400},
        {"GET", "/api/backups/jobs/99", NULL, 404},
        {"GET", "/api/nosuch", NULL, 404},
        {"POST", "/api/status", "{}", 405},
        {"DELETE", "/api/status", NULL, 405},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const char *b = cases[i].body;
        hc_reply r = cu_req(&a, cases[i].method, cases[i].path, a.bearer, b, b ? strlen(b) : 0);
        cr_assert_eq(r.status, cases[i].status, "%s %s: %d %s", cases[i].method, cases[i].path,
                     r.status, r.body);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    /* Uploads over 32 MiB: refused on the announced length, and (chunked, no length ahead)
     * once the stream passes the cap. */
    size_t big = (32u << 20) + 1;
    char *buf = malloc(big);
    memset(buf, 'a', big);
    memcpy(buf, "id\n", 3);
    for (int how = HC_CHUNKED; how <= HC_EXPECT; how++) {
        hc_reply r;
        hc_request(&r, a.addr, "POST", "/api/import?table=products&format=csv", a.bearer, buf, big,
                   how);
        cr_assert_eq(r.status, 413, "how %d: %d %s", how, r.status, r.body ? r.body : "");
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    free(buf);
    hc_reply r = cu_req(&a, "POST", "/api/backups", a.bearer, "x", 1);
    hc_reply_free(&r);
    /* Nothing changed: no row, no backup. */
    tsync_store *s = th_open(a.db);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM products", -1), 0);
    tsync_store_free(s);
    json_t *bk = cu_api(&a, "GET", "/api/backups", NULL, 200);
    cr_assert_eq(json_array_size(json_object_get(bk, "backups")), 0);
    json_decref(bk);
    cu_stop(&a);
}

Test(console, status_and_events_on_a_change)
{
    cu_till a, b;
    char *dir = th_tmpdir_auto();
    cu_start(&a, dir, "a", NULL, NULL, NULL);
    char *ka = cu_pubkey(&a);
    int fd = hc_stream_open(a.addr, "/api/events", a.bearer);
    cr_assert_geq(fd, 0);
    char *buf = NULL;
    size_t len = 0;
    long at = hc_stream_until(fd, &buf, &len, 0, "event: status\ndata: {", 10000);
    cr_assert_gt(at, 0, "no first event: %s", buf ? buf : "");
    cr_assert(strstr(buf, "text/event-stream"), "%s", buf);
    /* A second till connects: A's status lists it connected, and the stream says so. */
    const char *ep = NULL;
    json_t *st = cu_api(&a, "GET", "/api/status", NULL, 200);
    ep = json_string_value(json_object_get(st, "listen"));
    char peer[300];
    snprintf(peer, sizeof peer, "%s#%s", ep, ka);
    json_decref(st);
    const char *peers[] = {peer, NULL};
    cu_start(&b, dir, "b", NULL, peers, NULL);
    /* (A sees an inbound till of no shop by its address: its key is not known there.) */
    long hit = hc_stream_until(fd, &buf, &len, (size_t)at,
                               "\"via\":\"inbound\",\"direction\":\"inbound\",\"state\":"
                               "\"connected\"",
                               20000);
    cr_assert_gt(hit, 0, "no event with till B connected: ...%s",
                 buf + (len > 400 ? len - 400 : 0));
    cr_assert(strstr(buf + at, "\"online\":true"));
    /* At most about one event a second. */
    size_t n0 = 0;
    for (char *q = buf + hit; (q = strstr(q, "event: status")); q++) n0++;
    long long t0 = (long long)time(NULL);
    hc_stream_until(fd, &buf, &len, len, "no such text", 3000);
    size_t n1 = 0;
    for (char *q = buf + hit; (q = strstr(q, "event: status")); q++) n1++;
    cr_assert_leq(n1 - n0, (size_t)((long long)time(NULL) - t0 + 2), "%zu events", n1 - n0);
    free(buf);
    free(ka);
    /* Stopping a node whose console has a stream open ends the stream; nothing waits on it. */
    cu_stop(&b);
    cu_stop(&a);
    char tail[64];
    cr_assert_eq(read(fd, tail, sizeof tail) >= 0, 1);
    close(fd);
}

/* The hash of products in a database. */
static void hash_of(const char *db, char out[65])
{
    tsync_store *s = th_open(db);
    snprintf(out, 65, "%s", th_hash(s));
    tsync_store_free(s);
}

Test(console, export_round_trip_into_another_till)
{
    cu_till a, b;
    char *dir = th_tmpdir_auto();
    cu_start(&a, dir, "a", NULL, NULL, NULL);
    cu_start(&b, dir, "b", NULL, NULL, NULL);
    tsync_store *s = th_open(a.db);
    th_exec(s, "INSERT INTO products VALUES('p1','Tea, green',3,10),('p2','Cake \"x\"',NULL,2),"
               "('p3','Crème',7,0)");
    th_seal(s);
    tsync_store_free(s);
    hc_reply r = cu_req(&a, "GET", "/api/export?table=products&format=csv", a.bearer, NULL, 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    char *ct = hc_header(&r, "Content-Type");
    cr_assert(ct && strstr(ct, "text/csv"), "%s", ct);
    free(ct);
    cr_assert(strstr(r.body, "Tea, green"), "%s", r.body);
    char ha[65], hb0[65], hb[65];
    hash_of(a.db, ha);
    hash_of(b.db, hb0);
    cr_assert_str_neq(ha, hb0);

    /* The preview: the first rows, nothing written. */
    hc_reply p = cu_req(&b, "POST", "/api/import?table=products&format=csv&dry_run=1", b.bearer,
                        r.body, r.body_len);
    cr_assert_eq(p.status, 200, "%d %s", p.status, p.body);
    json_t *pj = json_loads(p.body, 0, NULL);
    cr_assert(json_is_true(json_object_get(pj, "ok")), "%s", p.body);
    cr_assert(json_is_true(json_object_get(pj, "dry_run")));
    cr_assert_eq(json_integer_value(json_object_get(pj, "rows")), 3);
    json_t *pv = json_object_get(pj, "preview");
    cr_assert_eq(json_array_size(pv), 3, "%s", p.body);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(pv, 0), "name")),
                     "Tea, green");
    json_decref(pj);
    hc_reply_free(&p);
    hash_of(b.db, hb);
    cr_assert_str_eq(hb, hb0, "the preview wrote");

    /* For real: B shows what A shows. */
    p = cu_req(&b, "POST", "/api/import?table=products&format=csv", b.bearer, r.body, r.body_len);
    cr_assert_eq(p.status, 200, "%d %s", p.status, p.body);
    hc_reply_free(&p);
    hash_of(b.db, hb);
    cr_assert_str_eq(hb, ha);
    hc_reply_free(&r);

    /* JSON and NDJSON exports parse and hold every row. */
    r = cu_req(&a, "GET", "/api/export?table=products&format=json", a.bearer, NULL, 0);
    json_t *arr = json_loads(r.body, 0, NULL);
    cr_assert_eq(json_array_size(arr), 3, "%s", r.body);
    json_decref(arr);
    hc_reply_free(&r);
    r = cu_req(&a, "GET", "/api/export?table=products&format=ndjson", a.bearer, NULL, 0);
    size_t lines = 0;
    for (char *q = r.body; (q = strchr(q, '\n')); q++) lines++;
    cr_assert_eq(lines, 3, "%s", r.body);
    hc_reply_free(&r);
    cu_stop(&b);
    cu_stop(&a);
}

Test(console, import_with_a_bad_row_reports_it_and_writes_nothing)
{
    cu_till a;
    char *dir = th_tmpdir_auto();
    cu_start(&a, dir, "a", NULL, NULL, NULL);
    char h0[65], h[65];
    hash_of(a.db, h0);
    const char *csv = "id,name,price\np1,Tea,3\np2,Cake,cheap\np3,Bun,2\n";
    for (int dry = 1; dry >= 0; dry--) {
        hc_reply r = cu_req(&a, "POST",
                            dry ? "/api/import?table=products&format=csv&dry_run=1"
                                : "/api/import?table=products&format=csv",
                            a.bearer, csv, strlen(csv));
        cr_assert_eq(r.status, dry ? 200 : 422, "%d %s", r.status, r.body);
        json_t *j = json_loads(r.body, 0, NULL);
        cr_assert(json_is_false(json_object_get(j, "ok")), "%s", r.body);
        json_t *bad = json_object_get(j, "bad");
        cr_assert_eq(json_array_size(bad), 1, "%s", r.body);
        json_t *b0 = json_array_get(bad, 0);
        cr_assert_eq(json_integer_value(json_object_get(b0, "line")), 3, "%s", r.body);
        cr_assert_str_eq(json_string_value(json_object_get(b0, "column")), "price");
        cr_assert_eq(json_integer_value(json_object_get(j, "imported")), 0, "%s", r.body);
        cr_assert(json_is_string(json_object_get(j, "error")));
        json_decref(j);
        hc_reply_free(&r);
        hash_of(a.db, h);
        cr_assert_str_eq(h, h0, "dry_run=%d wrote", dry);
    }
    tsync_store *s = th_open(a.db);
    cr_assert_eq(th_int(s, "SELECT count(*) FROM products", -1), 0);
    tsync_store_free(s);
    cu_stop(&a);
}

Test(console, backups_listed_and_made_on_demand)
{
    cu_till a, nb;
    char *dir = th_tmpdir_auto();
    const char *bk = th_path(dir, "bk");
    mkdir(bk, 0700);
    cu_start(&a, dir, "a", bk, NULL, NULL);
    json_t *l = cu_api(&a, "GET", "/api/backups", NULL, 200);
    cr_assert_str_eq(json_string_value(json_object_get(l, "dir")), bk);
    cr_assert_eq(json_array_size(json_object_get(l, "backups")), 0);
    json_decref(l);
    /* A file of another database in the same folder is not listed. */
    FILE *f = fopen(th_path(bk, "other.db-20260101T000000.000Z.tsbak"), "w");
    fputs("x", f);
    fclose(f);
    free(cu_backup_now(&a));
    l = cu_api(&a, "GET", "/api/backups", NULL, 200);
    json_t *arr = json_object_get(l, "backups");
    cr_assert_eq(json_array_size(arr), 1, "%s", json_dumps(l, 0));
    json_t *e = json_array_get(arr, 0);
    cr_assert(strncmp(json_string_value(json_object_get(e, "file")), "a.db-", 5) == 0);
    cr_assert_gt(json_integer_value(json_object_get(e, "bytes")), 0);
    cr_assert(json_is_true(json_object_get(e, "verified")), "%s", json_dumps(e, 0));
    cr_assert(json_is_false(json_object_get(e, "encrypted")));
    /* It really is a backup of this database. */
    char file[1200];
    snprintf(file, sizeof file, "%s/%s", bk, json_string_value(json_object_get(e, "file")));
    cr_assert_eq(tsync_backup_check(file, NULL, NULL), 0, "%s", th_errmsg());
    json_decref(l);
    hc_reply r = cu_req(&a, "GET", "/metrics", a.bearer, NULL, 0);
    cr_assert_eq(r.status, 200);
    cr_assert(strstr(r.body, "tillsync_last_backup_age_seconds "), "%s", r.body);
    cr_assert_null(strstr(r.body, "tillsync_last_backup_age_seconds -1"), "%s", r.body);
    hc_reply_free(&r);
    /* A node without a backup folder says so. */
    cu_start(&nb, dir, "n", NULL, NULL, NULL);
    r = cu_req(&nb, "POST", "/api/backups", nb.bearer, NULL, 0);
    cr_assert_eq(r.status, 409, "%d %s", r.status, r.body);
    cu_one_line_error(&r);
    hc_reply_free(&r);
    cu_stop(&nb);
    cu_stop(&a);
}

Test(console, metrics_schema_conflicts)
{
    cu_till a;
    char *dir = th_tmpdir_auto();
    cu_start(&a, dir, "a", NULL, NULL, NULL);
    hc_reply r = cu_req(&a, "GET", "/metrics", a.bearer, NULL, 0);
    cr_assert_eq(r.status, 200);
    char *ct = hc_header(&r, "Content-Type");
    cr_assert(ct && strstr(ct, "text/plain"));
    free(ct);
    static const char *const want[] = {"# TYPE tillsync_peers gauge",
                                       "tillsync_peers{state=\"connected\"} 0",
                                       "tillsync_pending_out 0",
                                       "tillsync_held 0",
                                       "tillsync_parked 0",
                                       "tillsync_conflicts 0",
                                       "tillsync_refused_total{reason=\"malformed\"} 0",
                                       "tillsync_last_backup_age_seconds -1"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_assert(strstr(r.body, want[i]), "%s not in\n%s", want[i], r.body);
    hc_reply_free(&r);
    json_t *sc = cu_api(&a, "GET", "/api/schema", NULL, 200);
    json_t *t0 = json_array_get(json_object_get(sc, "tables"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(t0, "name")), "products");
    cr_assert_eq(json_array_size(json_object_get(t0, "columns")), 4);
    cr_assert(json_is_object(json_object_get(sc, "migrations")));
    json_decref(sc);
    json_t *cf = cu_api(&a, "GET", "/api/conflicts", NULL, 200);
    cr_assert(json_is_array(cf));
    json_decref(cf);
    cu_stop(&a);
}

Test(console, password_beyond_the_token)
{
    char *dir = th_tmpdir_auto();
    /* Beyond loopback without a password: refused before anything listens. */
    tsync_store_free(th_open_products(th_path(dir, "x.db")));
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    o.console = "0.0.0.0:0";
    tsync_node *n = NULL;
    cr_assert_eq(tsync_node_new(&n, th_path(dir, "x.db"), &o), TSYNC_EINVAL);
    cr_assert(strstr(th_errmsg(), "password"), "%s", th_errmsg());
    o.console = "127.0.0.1";
    cr_assert_eq(tsync_node_new(&n, th_path(dir, "x.db"), &o), TSYNC_EINVAL);
    o.console = "127.0.0.1:0";
    o.console_password_file = th_path(dir, "nosuch");
    cr_assert_eq(tsync_node_new(&n, th_path(dir, "x.db"), &o), TSYNC_ENOTFOUND);

    FILE *f = fopen(th_path(dir, "pw"), "w");
    fputs("s3cret\n", f);
    fclose(f);
    cu_till a;
    cu_start(&a, dir, "a", NULL, NULL, th_path(dir, "pw"));
    hc_reply r = cu_req(&a, "GET", "/api/status", a.bearer, NULL, 0);
    cr_assert_eq(r.status, 401, "the token alone: %d", r.status);
    char *wa = hc_header(&r, "WWW-Authenticate");
    cr_assert(wa && strstr(wa, "Basic"), "%s", wa);
    free(wa);
    hc_reply_free(&r);
    char hdr[256];
    /* The token in X-Tillsync-Token, the password (x:wrong, then x:s3cret) as Basic. */
    snprintf(hdr, sizeof hdr, "X-Tillsync-Token: %s\r\nAuthorization: Basic eDp3cm9uZw==\r\n",
             a.token);
    r = cu_req(&a, "GET", "/api/status", hdr, NULL, 0);
    cr_assert_eq(r.status, 401);
    hc_reply_free(&r);
    snprintf(hdr, sizeof hdr, "X-Tillsync-Token: %s\r\nAuthorization: Basic eDpzM2NyZXQ=\r\n",
             a.token);
    r = cu_req(&a, "GET", "/api/status", hdr, NULL, 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    /* The password alone is not enough. */
    r = cu_req(&a, "GET", "/api/status", "Authorization: Basic eDpzM2NyZXQ=\r\n", NULL, 0);
    cr_assert_eq(r.status, 401);
    hc_reply_free(&r);
    /* The page: the password with the cookie. */
    char path[200];
    snprintf(path, sizeof path, "/?token=%s", a.token);
    r = cu_req(&a, "GET", path, "Authorization: Basic eDpzM2NyZXQ=\r\n", NULL, 0);
    cr_assert_eq(r.status, 303, "%d %s", r.status, r.body);
    char *sc = hc_header(&r, "Set-Cookie");
    snprintf(hdr, sizeof hdr, "Authorization: Basic eDpzM2NyZXQ=\r\nCookie: %.*s\r\n",
             (int)strcspn(sc, ";"), sc);
    free(sc);
    hc_reply_free(&r);
    r = cu_req(&a, "GET", "/api/status", hdr, NULL, 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    cu_stop(&a);
}

/* Options of version 3 (before the console): the fields after key_path are not read, so an app
 * built against that header gets no console whatever follows its struct. */
Test(console, options_version_3_have_no_console)
{
    char *dir = th_tmpdir_auto();
    const char *db = th_path(dir, "v3.db");
    tsync_store_free(th_open_products(db));
    tsync_node_options o;
    memset(&o, 0xff, sizeof o);
    cr_assert_eq(tsync_node_options_init(&o, 3), 0);
    o.listen = "";
    o.no_mdns = 1;
    o.status_path = "";
    tsync_node *n = NULL;
    cr_assert_eq(tsync_node_new(&n, db, &o), 0, "%s", th_errmsg());
    cr_assert_str_eq(tsync_node_console_address(n), "");
    char tp[1100];
    snprintf(tp, sizeof tp, "%s.console-token", db);
    cr_assert_neq(access(tp, F_OK), 0, "a token was made");
    tsync_node_free(n);
}

/* The bytes of a file (malloc'd), its size in *len. */
static char *slurp(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert(f, "%s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    cr_assert_eq(fread(b, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return b;
}

Test(console, backups_download_and_verify)
{
    cu_till a, nb;
    char *dir = th_tmpdir_auto();
    const char *bk = th_path(dir, "bk");
    mkdir(bk, 0700);
    cu_start(&a, dir, "a", bk, NULL, NULL);
    tsync_store *s = th_open(a.db);
    th_exec(s, "INSERT INTO products VALUES('p1','Tea',3,10)");
    th_seal(s);
    tsync_store_free(s);
    char *name = cu_backup_now(&a);
    char file[1200], path[1400];
    snprintf(file, sizeof file, "%s/%s", bk, name);

    /* The download is the file, byte for byte, as an attachment with its name. */
    snprintf(path, sizeof path, "/api/backups/download?file=%s", name);
    hc_reply r = cu_req(&a, "GET", path, a.bearer, NULL, 0);
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    size_t len;
    char *want = slurp(file, &len);
    cr_assert_gt(len, 0);
    cr_assert_eq(r.body_len, len, "downloaded %zu bytes of %zu", r.body_len, len);
    cr_assert_eq(memcmp(r.body, want, len), 0, "the download differs from the file");
    char *ct = hc_header(&r, "Content-Type"), *cd = hc_header(&r, "Content-Disposition");
    cr_assert_str_eq(ct, "application/octet-stream");
    char disp[1300];
    snprintf(disp, sizeof disp, "attachment; filename=\"%s\"", name);
    cr_assert_str_eq(cd, disp);
    char *nosniff = hc_header(&r, "X-Content-Type-Options");
    cr_assert_str_eq(nosniff, "nosniff");
    free(nosniff);
    free(ct);
    free(cd);
    hc_reply_free(&r);

    /* Verify: ok. */
    char body[1300];
    snprintf(body, sizeof body, "{\"file\":\"%s\"}", name);
    json_t *v = cu_api(&a, "POST", "/api/backups/verify", body, 200);
    cr_assert(json_is_true(json_object_get(v, "ok")), "%s", json_dumps(v, 0));
    cr_assert_str_eq(json_string_value(json_object_get(v, "file")), name);
    cr_assert_null(json_object_get(v, "error"));
    json_decref(v);

    /* A damaged copy (one byte changed in its middle): ok false with a reason, and the list
     * shows it not verified. */
    const char *damaged = "a.db-20990101T000000.000Z.tsbak";
    want[len / 2] ^= 0x55;
    FILE *f = fopen(th_path(bk, damaged), "wb");
    cr_assert_eq(fwrite(want, 1, len, f), len);
    fclose(f);
    snprintf(body, sizeof body, "{\"file\":\"%s\"}", damaged);
    v = cu_api(&a, "POST", "/api/backups/verify", body, 200);
    cr_assert(json_is_false(json_object_get(v, "ok")), "%s", json_dumps(v, 0));
    const char *why = json_string_value(json_object_get(v, "error"));
    cr_assert(why && why[0] && !strchr(why, '\n'), "%s", why);
    json_decref(v);
    json_t *l = cu_api(&a, "GET", "/api/backups", NULL, 200);
    json_t *e0 = json_array_get(json_object_get(l, "backups"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(e0, "file")), damaged);
    cr_assert(json_is_false(json_object_get(e0, "verified")), "%s", json_dumps(e0, 0));
    json_decref(l);
    free(want);

    /* An encrypted backup cannot be checked without its passphrase: ok false, said so, and the
     * list still shows it as not known (null), not as failed. */
    const char *enc = "a.db-20990101T000001.000Z.tsbak";
    tsync_backup_options bo = TSYNC_BACKUP_OPTIONS_INIT;
    bo.passphrase = "pw";
    bo.kdf_opslimit = 1;
    bo.kdf_memlimit = 8192;
    s = th_open(a.db);
    cr_assert_eq(tsync_backup(s, th_path(bk, enc), &bo, NULL), 0, "%s", th_errmsg());
    tsync_store_free(s);
    snprintf(body, sizeof body, "{\"file\":\"%s\"}", enc);
    v = cu_api(&a, "POST", "/api/backups/verify", body, 200);
    cr_assert(json_is_false(json_object_get(v, "ok")), "%s", json_dumps(v, 0));
    cr_assert(strstr(json_string_value(json_object_get(v, "error")), "encrypted"), "%s",
              json_dumps(v, 0));
    json_decref(v);
    l = cu_api(&a, "GET", "/api/backups", NULL, 200);
    e0 = json_array_get(json_object_get(l, "backups"), 0);
    cr_assert_str_eq(json_string_value(json_object_get(e0, "file")), enc);
    cr_assert(json_is_null(json_object_get(e0, "verified")), "%s", json_dumps(e0, 0));
    json_decref(l);

    /* Only names the list shows: not the database, not another database's backup, not a path,
     * not a link that looks like a backup. */
    FILE *o = fopen(th_path(bk, "other.db-20260101T000000.000Z.tsbak"), "w");
    fputs("x", o);
    fclose(o);
    cr_assert_eq(symlink(a.db, th_path(bk, "a.db-20990102T000000.000Z.tsbak")), 0);
    static const char *const names[] = {"a.db",
                                        "other.db-20260101T000000.000Z.tsbak",
                                        "a.db-20990102T000000.000Z.tsbak",
                                        "../a.db",
                                        "..%2Fa.db",
                                        "bk%2F..%2Fa.db-20990101T000000.000Z.tsbak",
                                        "a.db-..%2F..%2Fa.db-x.tsbak",
                                        "a.db-nosuch.tsbak",
                                        "%2Fetc%2Fpasswd"};
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        snprintf(path, sizeof path, "/api/backups/download?file=%s", names[i]);
        r = cu_req(&a, "GET", path, a.bearer, NULL, 0);
        cr_assert_eq(r.status, 404, "download %s: %d", names[i], r.status);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    static const char *const bodies[] = {"{\"file\":\"a.db\"}", "{\"file\":\"../a.db\"}",
                                         "{\"file\":\"a.db-20990102T000000.000Z.tsbak\"}",
                                         "{\"file\":\"other.db-20260101T000000.000Z.tsbak\"}"};
    for (size_t i = 0; i < sizeof bodies / sizeof *bodies; i++) {
        r = cu_req(&a, "POST", "/api/backups/verify", a.bearer, bodies[i], strlen(bodies[i]));
        cr_assert_eq(r.status, 404, "verify %s: %d %s", bodies[i], r.status, r.body);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    /* Malformed requests: 400. */
    static const struct {
        const char *method, *path, *body;
    } bad[] = {
        {"GET", "/api/backups/download", NULL},
        {"GET", "/api/backups/download?file=", NULL},
        {"GET", "/api/backups/download?file=a&x=1", NULL},
        {"GET", "/api/backups/download?file=a&file=b", NULL},
        {"POST", "/api/backups/verify", ""},
        {"POST", "/api/backups/verify", "{}"},
        {"POST", "/api/backups/verify", "{\"file\":1}"},
        {"POST", "/api/backups/verify", "{\"file\":\"a\",\"x\":1}"},
        {"POST", "/api/backups/verify", "{\"file\":"},
        {"POST", "/api/backups/verify", "[\"a\"]"},
        {"POST", "/api/backups/verify?x=1", "{\"file\":\"a\"}"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        const char *b = bad[i].body;
        r = cu_req(&a, bad[i].method, bad[i].path, a.bearer, b, b ? strlen(b) : 0);
        cr_assert_eq(r.status, 400, "%s %s %s: %d %s", bad[i].method, bad[i].path, b ? b : "",
                     r.status, r.body);
        cu_one_line_error(&r);
        hc_reply_free(&r);
    }
    /* Oversize, and a cookie POST without its CSRF token. */
    size_t big = (64u << 10) + 1;
    char *buf = malloc(big);
    memset(buf, ' ', big);
    buf[0] = '{';
    buf[big - 1] = '}';
    r = cu_req(&a, "POST", "/api/backups/verify", a.bearer, buf, big);
    cr_assert_eq(r.status, 413, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    hc_request(&r, a.addr, "POST", "/api/backups/verify", a.bearer, buf, big, HC_CHUNKED);
    cr_assert_eq(r.status, 413, "chunked: %d %s", r.status, r.body ? r.body : "");
    hc_reply_free(&r);
    free(buf);
    char cookie[256], csrf[512];
    cu_session(&a, cookie, csrf);
    snprintf(body, sizeof body, "{\"file\":\"%s\"}", name);
    r = cu_req(&a, "POST", "/api/backups/verify", cookie, body, strlen(body));
    cr_assert_eq(r.status, 403, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    r = cu_req(&a, "POST", "/api/backups/verify", csrf, body, strlen(body));
    cr_assert_eq(r.status, 200, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    /* A node without a backup folder has no backup to give. */
    cu_start(&nb, dir, "n", NULL, NULL, NULL);
    snprintf(path, sizeof path, "/api/backups/download?file=%s", name);
    r = cu_req(&nb, "GET", path, nb.bearer, NULL, 0);
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    r = cu_req(&nb, "POST", "/api/backups/verify", nb.bearer, "{\"file\":\"n.db-x.tsbak\"}", 23);
    cr_assert_eq(r.status, 404, "%d %s", r.status, r.body);
    hc_reply_free(&r);
    cu_stop(&nb);
    free(name);
    cu_stop(&a);
}
