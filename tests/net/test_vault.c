/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_vault.c — cloud backup through a real `tillsync relay run` on loopback
 * (tillsync/vault.h, net/relay/vault*.c): tills enrolled through the public trust API, holding
 * the shop's data key and grant. An upload cut after two chunks is not listed, and the next call
 * resumes it sending only the chunks the relay lacks; the committed backup is listed by the CLI
 * on another till of the shop and not for a till of another shop; `restore --remote latest` on a
 * freshly enrolled till gives the source's content hash (and keeps the till enrolled); a chunk
 * damaged in the relay's store is found at restore and the live database stays byte for byte as
 * it was; keep-N deletes only the till's own older backups; a shop past its quota is refused with
 * the reason; the relay's files hold none of the shop's distinctive values.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tests/lib/relay_util.h"
#include "tillsync/tillsync.h"

TestSuite(vault, .fini = nu_fini, .timeout = 180);

static const char DISTINCT[] = "VAULT-DISTINCT-Espresso-Bohnen-9f2c";

static const char *db_in(const char *tmp, const char *name)
{
    static char ring[4][600];
    static int k;
    char *p = ring[k++ & 3];
    snprintf(p, 600, "%s/%s", tmp, name);
    return p;
}

/* The bytes of a file (malloc'd; *n its size; NULL and 0 when missing). */
static uint8_t *slurp(const char *path, size_t *n)
{
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    fclose(f);
    return b;
}

static void relay_sql(const ru_vrelay *r, const char *sql)
{
    char path[600];
    snprintf(path, sizeof path, "%s/relay.db", r->dir);
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(path, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK, "%s", sqlite3_errmsg(db));
    sqlite3_close(db);
}

Test(vault, upload_resume_list_restore_damage)
{
    const char *tmp = nu_tmpdir();
    ru_vrelay r;
    ru_vrelay_new(&r, tmp, NULL);
    ru_vshop a, b;
    ru_vshop_make(&a, tmp, "ShopA", &r, 200);
    ru_vshop_make(&b, tmp, "ShopB", &r, 200);
    const char *p1 = db_in(tmp, "a1.db"), *p2 = db_in(tmp, "a2.db");
    char p3[600], pb[600];
    snprintf(p3, sizeof p3, "%s", db_in(tmp, "a3.db"));
    snprintf(pb, sizeof pb, "%s", db_in(tmp, "b1.db"));
    tsync_store *a1 = ru_till_make(&a, p1, "till-a1");
    tsync_store *a2 = ru_till_make(&a, p2, "till-a2");
    tsync_store *b1 = ru_till_make(&b, pb, "till-b1");
    ru_fill(a1, 2500, DISTINCT);
    char src_hash[65];
    snprintf(src_hash, sizeof src_hash, "%s", th_hash(a1));
    tsync_store_free(a1);

    /* Cut after two chunks: pending, not listed. */
    tsync_vault_options o = TSYNC_VAULT_OPTIONS_INIT;
    o.max_chunks = 2;
    tsync_vault_report rep = TSYNC_VAULT_REPORT_INIT;
    cr_assert_eq(tsync_vault_backup(p1, &o, &rep), 0, "%s", th_errmsg());
    cr_assert_eq(rep.complete, 0);
    cr_assert_eq(rep.chunks_sent, 2);
    cr_assert_eq(rep.resumed, 0);
    uint32_t nchunks = rep.backup.chunks;
    cr_assert(nchunks >= 4, "the backup is %u chunks: the filler should make more", nchunks);
    char id[TSYNC_VAULT_ID_HEX];
    memcpy(id, rep.backup.id, sizeof id);
    char pending[700];
    snprintf(pending, sizeof pending, "%s.vault-pending", p1);
    cr_assert_eq(access(pending, F_OK), 0, "the upload waits in %s", pending);
    tsync_vault_entry *v = NULL;
    size_t n = 9;
    cr_assert_eq(tsync_vault_list(p2, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 0, "an uncommitted backup is not listed");

    /* Resumed: only the missing chunks go. */
    o.max_chunks = 0;
    tsync_vault_report rep2 = TSYNC_VAULT_REPORT_INIT;
    cr_assert_eq(tsync_vault_backup(p1, &o, &rep2), 0, "%s", th_errmsg());
    cr_assert_eq(rep2.resumed, 1);
    cr_assert_eq(rep2.complete, 1);
    cr_assert_str_eq(rep2.backup.id, id);
    cr_assert_eq(rep2.chunks_held, 2);
    cr_assert_eq(rep2.chunks_sent, nchunks - 2, "sent %u of %u", rep2.chunks_sent, nchunks);
    cr_assert_neq(access(pending, F_OK), 0, "the pending file goes once committed");

    /* Listed on another till of the shop (the CLI), not for another shop. */
    char *out = nu_cli_ok("backup", "list", p2, "--remote", "--json", NULL);
    json_t *j = json_loads(out, 0, NULL);
    cr_assert_not_null(j, "%s", out);
    json_t *arr = json_object_get(j, "backups");
    cr_assert_eq(json_array_size(arr), 1, "%s", out);
    cr_assert_str_eq(json_string_value(json_object_get(json_array_get(arr, 0), "id")), id);
    cr_assert_eq(json_integer_value(json_object_get(json_array_get(arr, 0), "chunks")), nchunks);
    json_decref(j);
    free(out);
    cr_assert_eq(tsync_vault_list(pb, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 0, "shop B sees none of shop A's backups");
    tsync_vault_report rb = TSYNC_VAULT_REPORT_INIT;
    cr_assert_eq(tsync_vault_restore(pb, id, NULL, NULL), TSYNC_ENOTFOUND);
    (void)rb;

    /* A freshly enrolled till restores the latest: the source's content, a new site id, and it
     * stays enrolled in its shop. */
    tsync_store *a3 = ru_till_make(&a, p3, "till-a3");
    tsync_store_free(a3);
    out = nu_cli_ok("restore", p3, "--remote", "latest", NULL);
    cr_assert(strstr(out, "restored") && strstr(out, "new site id"), "%s", out);
    free(out);
    a3 = th_open_products(p3);
    cr_assert_str_eq(th_hash(a3), src_hash);
    uint8_t *cert = NULL;
    size_t cert_len = 0;
    cr_assert_eq(tsync_store_grant(&cert, &cert_len, a3), 0, "the grant stays: %s", th_errmsg());
    free(cert);
    uint32_t held = 0;
    cr_assert_eq(tsync_store_data_key_epoch(&held, NULL, a3), 0);
    cr_assert_eq(held, 1, "the data key stays");
    tsync_store_free(a3);
    /* ... and can use the vault at once (its certificate is there). */
    cr_assert_eq(tsync_vault_list(p3, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 1);
    free(v);

    /* A chunk damaged in the relay's store: found at restore, the live database untouched. */
    relay_sql(&r, "UPDATE vault_chunks SET bytes = randomblob(length(bytes)) WHERE idx = 1");
    th_exec(a2, "INSERT INTO products(id, name) VALUES ('live', 'kept')");
    th_seal(a2);
    char live_hash[65];
    snprintf(live_hash, sizeof live_hash, "%s", th_hash(a2));
    tsync_store_free(a2);
    size_t n0, w0, n1, w1;
    char wal[700];
    snprintf(wal, sizeof wal, "%s-wal", p2);
    uint8_t *before = slurp(p2, &n0), *wbefore = slurp(wal, &w0);
    char *err = NULL;
    int code = nu_cli_run(&out, &err, "restore", p2, "--remote", id, NULL);
    cr_assert_eq(code, 1, "restore of a damaged backup: exit %d\n%s", code, err);
    cr_assert(strstr(err, "chunk 1 does not match its hash"), "%s", err);
    free(out);
    free(err);
    uint8_t *after = slurp(p2, &n1), *wafter = slurp(wal, &w1);
    cr_assert(n0 == n1 && memcmp(before, after, n0) == 0, "the live database changed");
    cr_assert(w0 == w1 && (!w0 || memcmp(wbefore, wafter, w0) == 0), "its -wal changed");
    free(before), free(after), free(wbefore), free(wafter);
    a2 = th_open_products(p2);
    cr_assert_str_eq(th_hash(a2), live_hash);
    tsync_store_free(a2);

    /* Keep 1 of a1's own: two new backups, the oldest two of a1 go, a3's stays. */
    cr_assert_eq(tsync_vault_backup(p1, NULL, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_vault_backup(p3, NULL, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_vault_backup(p1, NULL, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_vault_list(p1, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 4);
    char newest[TSYNC_VAULT_ID_HEX];
    memcpy(newest, v[3].id, sizeof newest);
    free(v);
    uint32_t deleted = 0;
    cr_assert_eq(tsync_vault_keep(p1, 1, NULL, &deleted), 0, "%s", th_errmsg());
    cr_assert_eq(deleted, 2);
    cr_assert_eq(tsync_vault_list(p1, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 2);
    cr_assert_str_eq(v[1].id, newest);
    free(v);

    /* The relay stored the backups, and nothing of the shop's values. */
    json_t *st = ru_status(r.dir);
    cr_assert_gt(ru_shop_field(st, 0, "bytes"), 2 * TSYNC__VAULT_CHUNK);
    json_decref(st);
    cr_assert(!ru_files_contain(r.dir, DISTINCT, sizeof DISTINCT - 1),
              "the relay's files hold a product name");
    cr_assert(!ru_files_contain(r.dir, "till-a1", 7), "the relay's files hold a device name");

    tsync_store_free(b1);
    ru_vshop_free(&a);
    ru_vshop_free(&b);
    nu_kill(r.pid, SIGTERM, 5000);
}

Test(vault, quota_refused_with_reason)
{
    const char *tmp = nu_tmpdir();
    ru_vrelay r;
    ru_vrelay_new(&r, tmp, NULL);
    ru_vshop a;
    ru_vshop_make(&a, tmp, "SmallShop", &r, 1);
    const char *p1 = db_in(tmp, "s1.db");
    char p1c[600];
    snprintf(p1c, sizeof p1c, "%s", p1);
    tsync_store *s1 = ru_till_make(&a, p1c, "till-s1");
    ru_fill(s1, 1500, DISTINCT);
    tsync_store_free(s1);
    cr_assert_eq(tsync_vault_backup(p1c, NULL, NULL), TSYNC_EFULL);
    cr_assert(strstr(th_errmsg(), "refused (quota)") && strstr(th_errmsg(), "quota of 1048576"),
              "%s", th_errmsg());
    /* The CLI says it in one line. */
    char *out = NULL, *err = NULL;
    int code = nu_cli_run(&out, &err, "backup", p1c, "--remote", NULL);
    cr_assert_eq(code, 1);
    cr_assert(strstr(err, "backup --remote") && strstr(err, "quota"), "%s", err);
    free(out);
    free(err);
    json_t *st = ru_status(r.dir);
    cr_assert_geq(ru_refused(st, "quota"), 2);
    cr_assert_eq(ru_shop_field(st, 0, "bytes"), 0, "the refused upload's chunks were dropped");
    json_decref(st);
    tsync_vault_entry *v;
    size_t n;
    cr_assert_eq(tsync_vault_list(p1c, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 0);
    ru_vshop_free(&a);
    nu_kill(r.pid, SIGTERM, 5000);
}

/* `tillsync status DB --json`, parsed (the caller's); NULL when it failed. */
static json_t *status_json(const char *db)
{
    char *out = NULL;
    int code = nu_cli_run(&out, NULL, "status", db, "--json", NULL);
    json_t *j = code == 0 ? json_loads(out, 0, NULL) : NULL;
    free(out);
    return j;
}

/* Waits up to ms for the node's cloud_backup to satisfy want(); returns the status (caller's). */
static json_t *wait_cloud(const char *db, int ms, int (*want)(json_t *c), const char *what)
{
    int64_t end = nu_now_ms() + ms;
    json_t *last = NULL;
    while (nu_now_ms() < end) {
        json_t *j = status_json(db);
        if (j && want(json_object_get(j, "cloud_backup"))) {
            json_decref(last);
            return j;
        }
        json_decref(last);
        last = j;
        nu_sleep_ms(200);
    }
    char *txt = last ? json_dumps(json_object_get(last, "cloud_backup"), 0) : NULL;
    cr_assert_fail("%s: not within %d ms (cloud_backup %s)", what, ms, txt ? txt : "?");
    return NULL;
}

static int three_done(json_t *c)
{
    return json_integer_value(json_object_get(c, "done")) >= 3;
}

static int failed_once(json_t *c)
{
    const char *r = json_string_value(json_object_get(c, "last_result"));
    return r && !strcmp(r, "failed");
}

/* A running relay, a shop on it (quota 200 MiB) and its tills till-<tag>1 and till-<tag>2 at p1
 * and p2, made and closed, the first holding rows filler products (none for 0); log: for a node
 * of the first; relay_log: the relay's. */
typedef struct {
    ru_vrelay r;
    ru_vshop a;
    char p1[600], p2[600], log[600], relay_log[600];
} two_tills;

static void two_tills_make(two_tills *x, const char *shop_name, const char *tag, int rows)
{
    const char *tmp = nu_tmpdir();
    char name[64];
    ru_vrelay_new(&x->r, tmp, NULL);
    ru_vshop_make(&x->a, tmp, shop_name, &x->r, 200);
    snprintf(name, sizeof name, "%s1.db", tag);
    snprintf(x->p1, sizeof x->p1, "%s", db_in(tmp, name));
    snprintf(name, sizeof name, "%s2.db", tag);
    snprintf(x->p2, sizeof x->p2, "%s", db_in(tmp, name));
    snprintf(x->log, sizeof x->log, "%s/node.log", tmp);
    snprintf(x->relay_log, sizeof x->relay_log, "%s/relay.log", tmp);
    snprintf(name, sizeof name, "till-%s1", tag);
    tsync_store *t1 = ru_till_make(&x->a, x->p1, name);
    snprintf(name, sizeof name, "till-%s2", tag);
    tsync_store *t2 = ru_till_make(&x->a, x->p2, name);
    if (rows) ru_fill(t1, rows, DISTINCT);
    tsync_store_free(t1);
    tsync_store_free(t2);
}

Test(vault, scheduled_by_run)
{
    two_tills x;
    two_tills_make(&x, "RunShop", "r", 50);
    const char *argv[] = {nu_cli(),
                          "run",
                          x.p1,
                          "--listen",
                          "tcp://127.0.0.1:*",
                          "--no-mdns",
                          "--cloud-backup-every",
                          "1s",
                          "--cloud-keep",
                          "2",
                          NULL};
    pid_t node = nu_spawn(argv, x.log);
    json_t *st = wait_cloud(x.p1, 30000, three_done, "three scheduled cloud backups");
    json_t *c = json_object_get(st, "cloud_backup");
    cr_assert_str_eq(json_string_value(json_object_get(c, "last_result")), "ok");
    cr_assert_eq(json_integer_value(json_object_get(c, "every_ms")), 1000);
    cr_assert(json_is_string(json_object_get(c, "last_id")));
    cr_assert(json_is_null(json_object_get(c, "last_error")));
    cr_assert_geq(json_integer_value(json_object_get(c, "deleted")), 1, "keep 2 deleted some");
    json_decref(st);
    /* Another till of the shop lists them: the newest two of r1 (keep 2). */
    tsync_vault_entry *v;
    size_t n;
    cr_assert_eq(tsync_vault_list(x.p2, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert(n >= 1 && n <= 3, "%zu backups listed (keep 2, one may be between upload and keep)",
              n);
    free(v);
    char *out = nu_cli_ok("status", x.p1, NULL);
    cr_assert(strstr(out, "cloud backup: every 1s") && strstr(out, "last ok"), "%s", out);
    free(out);

    /* The relay gone: the next attempt fails, with its error in status (text and JSON). */
    nu_kill(x.r.pid, SIGTERM, 5000);
    st = wait_cloud(x.p1, 40000, failed_once, "a failed cloud backup");
    c = json_object_get(st, "cloud_backup");
    cr_assert(json_is_string(json_object_get(c, "last_error")));
    cr_assert(strstr(json_string_value(json_object_get(c, "last_error")), x.r.ep), "%s",
              json_string_value(json_object_get(c, "last_error")));
    int flagged = 0;
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(st, "attention"), i, e) flagged |=
        !strcmp(json_string_value(e), "cloud_backup_failed");
    cr_assert(flagged, "attention lacks cloud_backup_failed");
    json_decref(st);
    out = nu_cli_ok("status", x.p1, NULL);
    cr_assert(strstr(out, "attention: the last cloud backup failed"), "%s", out);
    free(out);
    cr_assert_eq(nu_kill(node, SIGTERM, 10000) & 0x7f, 0, "the node stops cleanly: %s",
                 nu_tail_s(x.log, 20));
    ru_vshop_free(&x.a);
}

/* `tillsync status DB --json`'s relay object, as a number field (-1 when absent). */
static long long relay_field(const char *db, const char *f)
{
    json_t *j = status_json(db);
    json_t *v = j ? json_object_get(json_object_get(j, "relay"), f) : NULL;
    long long out = json_is_integer(v) ? (long long)json_integer_value(v) : -1;
    json_decref(j);
    return out;
}

static int relay_up(const char *db)
{
    json_t *j = status_json(db);
    const char *st =
        j ? json_string_value(json_object_get(json_object_get(j, "relay"), "state")) : NULL;
    int up = st && !strcmp(st, "up");
    json_decref(j);
    return up;
}

static int wait_relay_up(const char *db, int ms)
{
    int64_t end = nu_now_ms() + ms;
    while (nu_now_ms() < end) {
        if (relay_up(db)) return 1;
        nu_sleep_ms(200);
    }
    return 0;
}

/* A relay serves several sessions of one key: the node's live session and a hand-run remote
 * backup of the same till both work, and the live session is never cut (its session count stays
 * 1, the relay logs no superseded session). */
Test(vault, remote_backup_beside_live_session)
{
    two_tills x;
    two_tills_make(&x, "BesideShop", "b", 1500); /* a backup of several chunks */
    const char *argv[] = {nu_cli(),    "run", x.p1, "--listen", "tcp://127.0.0.1:*",
                          "--no-mdns", NULL};
    pid_t node = nu_spawn(argv, x.log);
    cr_assert(wait_relay_up(x.p1, 30000), "the node's relay session did not come up: %s",
              nu_tail_s(x.log, 20));
    cr_assert_eq(relay_field(x.p1, "sessions"), 1);

    for (int i = 0; i < 2; i++) {
        char *out = NULL, *err = NULL;
        int code = nu_cli_run(&out, &err, "backup", x.p1, "--remote", NULL);
        cr_assert_eq(code, 0, "backup --remote beside the node: %s", err);
        free(out);
        free(err);
    }
    /* A sale the node puts after the backups goes through the same live session. */
    long long sent = relay_field(x.p1, "envelopes_sent");
    sqlite3 *db;
    cr_assert_eq(sqlite3_open(x.p1, &db), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    cr_assert_eq(sqlite3_exec(db, "UPDATE products SET stock = stock - 1 WHERE id = 'espresso'",
                              NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(db);
    int64_t end = nu_now_ms() + 20000;
    while (nu_now_ms() < end && relay_field(x.p1, "envelopes_sent") <= sent) nu_sleep_ms(200);
    cr_assert_gt(relay_field(x.p1, "envelopes_sent"), sent, "the sale was not put: %s",
                 nu_tail_s(x.log, 20));
    cr_assert(relay_up(x.p1));
    cr_assert_eq(relay_field(x.p1, "sessions"), 1, "the live session was cut and dialled again: %s",
                 nu_tail_s(x.log, 20));
    size_t n = 0;
    uint8_t *rl = slurp(x.relay_log, &n);
    cr_assert_not_null(rl);
    rl[n] = 0;
    cr_assert_null(strstr((char *)rl, "superseded"), "the relay cut a session of the key");
    free(rl);
    tsync_vault_entry *v;
    cr_assert_eq(tsync_vault_list(x.p2, NULL, &v, &n), 0, "%s", th_errmsg());
    cr_assert_eq(n, 2, "both backups are listed");
    free(v);
    cr_assert_eq(nu_kill(node, SIGTERM, 10000) & 0x7f, 0, "the node stops cleanly");
    ru_vshop_free(&x.a);
    nu_kill(x.r.pid, SIGTERM, 5000);
}

/* The admin revokes till 2 on till 1 alone; till 1's node tells the relay (RTRUST) and the relay
 * refuses till 2's next RHELLO with `revoked`, without any relay command. */
Test(vault, revocation_forwarded_to_relay)
{
    two_tills x;
    two_tills_make(&x, "RevokeShop", "v", 0);
    /* Till 2 is served before. */
    tsync_vault_entry *v = NULL;
    size_t n;
    cr_assert_eq(tsync_vault_list(x.p2, NULL, &v, &n), 0, "%s", th_errmsg());
    free(v);
    uint8_t *rev;
    size_t rev_len;
    cr_assert_eq(tsync_shop_key_revoke(&rev, &rev_len, x.a.k, x.a.devs[1], NULL, 0), 0, "%s",
                 th_errmsg());
    tsync_store *t1 = th_open(x.p1);
    cr_assert_eq(tsync_trust_revoke(t1, rev, rev_len), 0, "%s", th_errmsg());
    tsync_store_free(t1);
    free(rev);

    const char *argv[] = {nu_cli(),    "run", x.p1, "--listen", "tcp://127.0.0.1:*",
                          "--no-mdns", NULL};
    pid_t node = nu_spawn(argv, x.log);
    int64_t end = nu_now_ms() + 30000;
    while (nu_now_ms() < end && relay_field(x.p1, "revocations_sent") < 1) nu_sleep_ms(200);
    cr_assert_geq(relay_field(x.p1, "revocations_sent"), 1, "the node did not send RTRUST: %s",
                  nu_tail_s(x.log, 20));
    json_t *st = ru_status(x.r.dir);
    cr_assert_eq(ru_shop_field(st, 0, "revocations"), 1);
    json_decref(st);

    cr_assert_eq(tsync_vault_list(x.p2, NULL, &v, &n), TSYNC_EREFUSED);
    cr_assert(strstr(th_errmsg(), "refused (revoked)"), "%s", th_errmsg());
    st = ru_status(x.r.dir);
    cr_assert_geq(ru_refused(st, "revoked"), 1);
    json_decref(st);
    /* Till 1 itself is still served (its node's session stays up). */
    cr_assert(relay_up(x.p1), "%s", nu_tail_s(x.log, 20));
    cr_assert_eq(tsync_vault_list(x.p1, NULL, &v, &n), 0, "%s", th_errmsg());
    free(v);
    cr_assert_eq(nu_kill(node, SIGTERM, 10000) & 0x7f, 0, "the node stops cleanly");
    ru_vshop_free(&x.a);
    nu_kill(x.r.pid, SIGTERM, 5000);
}
