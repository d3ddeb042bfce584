/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/console_util.c — see console_util.h.
 */
#include "tests/lib/console_util.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"

void cu_start(cu_till *t, const char *dir, const char *name, const char *backup_dir,
              const char *const *peers, const char *password_file)
{
    memset(t, 0, sizeof *t);
    snprintf(t->db, sizeof t->db, "%s/%s.db", dir, name);
    tsync_store_free(th_open_products(t->db));
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = "tcp://127.0.0.1:*";
    o.no_mdns = 1;
    o.status_path = "";
    o.log_level = TSYNC_LOG_WARN;
    o.anti_entropy_ms = 200;
    o.console = "127.0.0.1:0";
    o.console_password_file = password_file;
    o.backup_dir = backup_dir;
    size_t np = 0;
    while (peers && peers[np]) np++;
    o.peers = peers;
    o.npeers = np;
    cr_assert_eq(tsync_node_new(&t->n, t->db, &o), 0, "node: %s", th_errmsg());
    cr_assert_eq(tsync_node_start(t->n), 0);
    snprintf(t->addr, sizeof t->addr, "%s", tsync_node_console_address(t->n));
    cr_assert(strncmp(t->addr, "127.0.0.1:", 10) == 0 && atoi(t->addr + 10) > 0, "%s", t->addr);
    char tp[1100];
    snprintf(tp, sizeof tp, "%s.console-token", t->db);
    struct stat sb;
    cr_assert_eq(stat(tp, &sb), 0);
    cr_assert_eq(sb.st_mode & 0777, 0600, "token file mode %o", sb.st_mode & 0777);
    FILE *f = fopen(tp, "r");
    cr_assert(f && fgets(t->token, sizeof t->token, f));
    fclose(f);
    cr_assert_eq(strlen(t->token), 64);
    snprintf(t->bearer, sizeof t->bearer, "Authorization: Bearer %s\r\n", t->token);
}

void cu_stop(cu_till *t)
{
    tsync_node_free(t->n);
    t->n = NULL;
}

hc_reply cu_req(const cu_till *t, const char *method, const char *path, const char *headers,
                const void *body, size_t len)
{
    hc_reply r;
    hc_request(&r, t->addr, method, path, headers, body, len, HC_LENGTH);
    cr_assert_neq(r.status, 0, "no reply to %s %s", method, path);
    return r;
}

json_t *cu_api(const cu_till *t, const char *method, const char *path, const char *body, int want)
{
    hc_reply r = cu_req(t, method, path, t->bearer, body, body ? strlen(body) : 0);
    cr_assert_eq(r.status, want, "%s %s: %d %s", method, path, r.status, r.body);
    json_error_t je;
    json_t *j = json_loads(r.body, 0, &je);
    cr_assert(j, "%s %s: not JSON: %s", method, path, r.body);
    hc_reply_free(&r);
    return j;
}

void cu_one_line_error(const hc_reply *r)
{
    json_t *j = json_loads(r->body, 0, NULL);
    cr_assert(json_is_string(json_object_get(j, "error")), "%s", r->body);
    cr_assert_null(strchr(r->body, '\n'), "%s", r->body);
    json_decref(j);
}

char *cu_pubkey(const cu_till *t)
{
    json_t *st = cu_api(t, "GET", "/api/status", NULL, 200);
    char *k = strdup(json_string_value(json_object_get(st, "public_key")));
    cr_assert(json_is_object(json_object_get(st, "console")), "no console in the status");
    json_decref(st);
    return k;
}

char *cu_backup_now(const cu_till *t)
{
    json_t *job = cu_api(t, "POST", "/api/backups", "{}", 202);
    json_int_t id = json_integer_value(json_object_get(job, "id"));
    cr_assert_gt(id, 0);
    json_decref(job);
    char path[64];
    snprintf(path, sizeof path, "/api/backups/jobs/%lld", (long long)id);
    char state[32] = "running", *file = NULL;
    for (int i = 0; i < 300 && !strcmp(state, "running"); i++) {
        usleep(100 * 1000);
        job = cu_api(t, "GET", path, NULL, 200);
        snprintf(state, sizeof state, "%s", json_string_value(json_object_get(job, "state")));
        free(file);
        file = strdup(json_string_value(json_object_get(job, "file")));
        json_decref(job);
    }
    cr_assert_str_eq(state, "done");
    return file;
}

void cu_session(const cu_till *t, char cookie[256], char csrf_hdr[512])
{
    char path[200];
    snprintf(path, sizeof path, "/?token=%s", t->token);
    hc_reply r = cu_req(t, "GET", path, NULL, NULL, 0);
    cr_assert_eq(r.status, 303);
    char *sc = hc_header(&r, "Set-Cookie");
    cr_assert(sc);
    snprintf(cookie, 256, "Cookie: %.*s\r\n", (int)strcspn(sc, ";"), sc);
    free(sc);
    hc_reply_free(&r);
    r = cu_req(t, "GET", "/api/session", cookie, NULL, 0);
    cr_assert_eq(r.status, 200);
    json_t *s = json_loads(r.body, 0, NULL);
    const char *csrf = json_string_value(json_object_get(s, "csrf"));
    cr_assert(csrf && strlen(csrf) == 64, "%s", r.body);
    snprintf(csrf_hdr, 512, "%sX-CSRF-Token: %s\r\n", cookie, csrf);
    json_decref(s);
    hc_reply_free(&r);
}

void cu_pair_collided(cu_till *a, cu_till *b, const char *dir, int n)
{
    tsync_store *sa = th_open_products(th_path(dir, "a.db"));
    tsync_store *sb = th_open_products(th_path(dir, "b.db"));
    char sql[160];
    for (int i = 1; i <= n; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%d', 'n%d', %d, 0)", i, i,
                 100 * i);
        th_exec(sa, sql);
    }
    th_seal(sa);
    cr_assert_eq(th_sync(sa, sb), 0, "%s", th_errmsg());
    /* Apart: each till writes every price, neither sees the other's write. */
    for (int k = 1; k <= 2; k++) {
        snprintf(sql, sizeof sql, "UPDATE products SET price = price + %d", k);
        th_exec(k == 1 ? sa : sb, sql);
        th_seal(k == 1 ? sa : sb);
    }
    tsync_store_free(sa);
    tsync_store_free(sb);
    /* Then connected. */
    cu_start(a, dir, "a", NULL, NULL, NULL);
    char *ka = cu_pubkey(a);
    json_t *st = cu_api(a, "GET", "/api/status", NULL, 200);
    char peer[300];
    snprintf(peer, sizeof peer, "%s#%s", json_string_value(json_object_get(st, "listen")), ka);
    json_decref(st);
    free(ka);
    const char *peers[] = {peer, NULL};
    cu_start(b, dir, "b", NULL, peers, NULL);
    json_decref(cu_wait_count(a, "/api/conflicts?open=1", (size_t)n, 30000));
    json_decref(cu_wait_count(b, "/api/conflicts?open=1", (size_t)n, 30000));
}

json_t *cu_wait_count(const cu_till *t, const char *path, size_t want, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        json_t *j = cu_api(t, "GET", path, NULL, 200);
        cr_assert(json_is_array(j), "GET %s: not an array", path);
        if (json_array_size(j) == want) return j;
        if (nu_now_ms() > end) {
            char *s = json_dumps(j, JSON_COMPACT);
            cr_assert_fail("GET %s on %s: %zu entries after %d ms, want %zu: %s", path, t->db,
                           json_array_size(j), ms, want, s);
        }
        json_decref(j);
        nu_sleep_ms(100);
    }
}
