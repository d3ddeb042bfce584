/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/net/test_node_snapshot_stream.c — a new till joins a shop by snapshot while both nodes
 * keep answering liveness: two node processes on loopback (the C API in forked children, so the
 * liveness timeout can be a test knob), a sender whose log is pruned so the joiner is behind its
 * horizon, and a table large enough that exporting or merging it in one go takes longer than
 * the liveness timeout (before snapshots streamed, the session was dropped for silence and the
 * joiner stayed empty). Also: a sender killed in the middle of a transfer; the joiner keeps what
 * it merged, takes the snapshot again from the restarted sender, and converges.
 *
 * TSYNC_SNAP_ROWS overrides the table size (default 300 000), TSYNC_SNAP_WAIT_MS the time a join
 * may take (default 120 000), TSYNC_SNAP_LIVENESS_MS both nodes' liveness timeout (default 2 000).
 * Each test prints the join time and both nodes' peak RSS (VmHWM): scripts/snapshot_join.sh runs it
 * at 1M rows (not in CI).
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/sync.h"
#include "tests/lib/helpers.h"
#include "tests/lib/node_util.h"
#include "tillsync/node.h"

TestSuite(node_snapshot_stream, .fini = nu_fini, .timeout = 300);

#define LIVENESS_MS 2000 /* the knob: PINGs go every 1 s, so a silence of 2 s is a busy node */

typedef struct {
    char db[NU_PATH], log[NU_PATH], listen[NU_EP], peer[NU_EP + 80];
} child;

static int node_main(void *arg)
{
    child *c = arg;
    if (!freopen(c->log, "a", stderr)) return 3;
    setvbuf(stderr, NULL, _IOLBF, 0);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = c->listen;
    o.no_mdns = 1;
    const char *lv = getenv("TSYNC_SNAP_LIVENESS_MS");
    o.liveness_ms = lv && atoi(lv) > 0 ? atoi(lv) : LIVENESS_MS;
    o.prune_keep = -1;
    o.log_level = TSYNC_LOG_INFO;
    const char *peers[1] = {c->peer};
    if (c->peer[0]) {
        o.peers = peers;
        o.npeers = 1;
    }
    tsync_node *n;
    if (tsync_node_new(&n, c->db, &o)) {
        fprintf(stderr, "node: %s\n", tsync_error_last()->message);
        return 2;
    }
    return tsync_node_run(n, NULL) ? 1 : 0;
}

static int rows_wanted(void)
{
    const char *e = getenv("TSYNC_SNAP_ROWS");
    int n = e && *e ? atoi(e) : 300000;
    return n > 0 ? n : 300000;
}

/* a.db: n products, sealed, its log pruned to a stub and the newest batch (a member that
 * acknowledged everything, made up for the purpose), so any new till is behind its horizon. */
static void make_sender(const char *db, int n)
{
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(db, &h), SQLITE_OK);
    char sql[512];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x<%d) "
             "INSERT INTO products SELECT printf('p%%08d',x), 'product '||x, x%%50 FROM c",
             n);
    char *err = NULL;
    cr_assert_eq(sqlite3_exec(h, sql, NULL, NULL, &err), SQLITE_OK, "%s", err ? err : "");
    sqlite3_close(h);
    tsync_store *s;
    cr_assert_eq(tsync_store_open(&s, db, NULL), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_store_seal(s, NULL), 0, "%s", tsync_error_last()->message);
    tsync__vv vv = {0};
    cr_assert_eq(tsync__sync_vv(s, &vv), 0);
    uint8_t member[TSYNC__PK_BYTES];
    memset(member, 0x5a, sizeof member);
    cr_assert_eq(tsync__sync_ack_put(s, member, &vv), 0, "%s", tsync_error_last()->message);
    size_t pruned = 0;
    cr_assert_eq(tsync__sync_prune(s, member, 1, 1, &pruned), 0, "%s", tsync_error_last()->message);
    cr_assert_gt(pruned, 0, "nothing pruned");
    tsync__vv_free(&vv);
    tsync_store_free(s);
}

typedef struct {
    char dir[NU_PATH - 16], key[NU_PATH];
    child a, c;
    pid_t pa, pc;
    int rows;
} shop;

static void setup(shop *sh)
{
    memset(sh, 0, sizeof *sh);
    snprintf(sh->dir, sizeof sh->dir, "%s", nu_tmpdir());
    snprintf(sh->key, sizeof sh->key, "%s/shop.key", sh->dir);
    nu_shop_create(sh->key, "Snapshot Shop");
    child *ch[2] = {&sh->a, &sh->c};
    const char *nm[2] = {"a", "c"};
    for (int i = 0; i < 2; i++) {
        snprintf(ch[i]->db, sizeof ch[i]->db, "%s/%s.db", sh->dir, nm[i]);
        snprintf(ch[i]->log, sizeof ch[i]->log, "%s/%s.log", sh->dir, nm[i]);
        nu_make_db(ch[i]->db);
        char name[16];
        snprintf(name, sizeof name, "till-%s", nm[i]);
        nu_enrol(ch[i]->db, sh->key, name);
    }
    sh->rows = rows_wanted();
    make_sender(sh->a.db, sh->rows);
    snprintf(sh->a.listen, sizeof sh->a.listen, "tcp://127.0.0.1:*");
    snprintf(sh->c.listen, sizeof sh->c.listen, "tcp://127.0.0.1:*");
}

/* The endpoint a node bound, from its status file (waits up to 30 s). */
static void listen_of(const child *c, char out[NU_EP])
{
    char path[NU_PATH + 8];
    snprintf(path, sizeof path, "%s.node", c->db);
    for (int i = 0; i < 600; i++) {
        json_error_t je;
        json_t *o = json_load_file(path, 0, &je);
        const char *l = o ? json_string_value(json_object_get(o, "listen")) : NULL;
        if (l && strstr(l, "tcp://")) {
            snprintf(out, NU_EP, "%s", l);
            json_decref(o);
            return;
        }
        json_decref(o);
        nu_sleep_ms(50);
    }
    cr_assert_fail("%s wrote no status: %s", c->db, nu_tail_s(c->log, 5));
}

static int64_t status_num(const child *c, const char *field)
{
    char path[NU_PATH + 8];
    snprintf(path, sizeof path, "%s.node", c->db);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    json_t *v = o ? json_object_get(o, field) : NULL;
    int64_t r = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
    json_decref(o);
    return r;
}

/* With TSYNC_SNAP_EXEC=1 (the measurement) a node is `tillsync run`, a fresh process, so its peak
 * RSS is its own and not partly the test's (a forked child shares the test's heap); the liveness
 * knob is then the CLI's default. */
static pid_t spawn_node(child *c)
{
    const char *e = getenv("TSYNC_SNAP_EXEC");
    if (!e || *e != '1') return nu_fork(node_main, c);
    const char *argv[12] = {nu_cli(),  "run",       c->db,       "--listen",
                            c->listen, "--no-mdns", "--no-prune"};
    int k = 7;
    if (c->peer[0]) {
        argv[k++] = "--peer";
        argv[k++] = c->peer;
    }
    argv[k] = NULL;
    return nu_spawn(argv, c->log);
}

static void start_a(shop *sh)
{
    sh->pa = spawn_node(&sh->a);
    char ep[NU_EP];
    listen_of(&sh->a, ep);
    /* a restart listens where c dials */
    snprintf(sh->a.listen, sizeof sh->a.listen, "%s", ep);
}

static void start_c(shop *sh)
{
    char key[65];
    nu_pubkey(sh->a.db, key);
    snprintf(sh->c.peer, sizeof sh->c.peer, "%s#%s", sh->a.listen, key);
    sh->pc = spawn_node(&sh->c);
}

static int hashes_equal(const shop *sh)
{
    char ha[65], hc[65];
    nu_cli_hash(sh->a.db, ha);
    nu_cli_hash(sh->c.db, hc);
    return strcmp(ha, hc) == 0;
}

/* Peak RSS of a process in kB (VmHWM), -1 when unknown. */
static long peak_kb(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "VmHWM:", 6)) kb = strtol(line + 6, NULL, 10);
    if (f) fclose(f);
    return kb;
}

static void report(const shop *sh, const char *what, int64_t ms)
{
    fprintf(stderr, "%s: %d rows, %lld ms, peak RSS a %ld kB, c %ld kB\n", what, sh->rows,
            (long long)ms, peak_kb(sh->pa), peak_kb(sh->pc));
}

/* Waits until c took a snapshot and both databases hash the same; returns the ms until the
 * snapshot was in (the hashes are compared after: hashing 1M rows takes a while). */
static int64_t wait_joined(shop *sh, int ms)
{
    const char *e = getenv("TSYNC_SNAP_WAIT_MS");
    if (e && atoi(e) > 0) ms = atoi(e);
    int64_t t0 = nu_now_ms(), took = -1;
    while (nu_now_ms() - t0 < ms) {
        if (took < 0 && status_num(&sh->c, "snapshots_received") >= 1) took = nu_now_ms() - t0;
        if (took >= 0 && hashes_equal(sh)) return took;
        nu_sleep_ms(50);
    }
    report(sh, "not joined", nu_now_ms() - t0);
    cr_assert_fail("c did not converge with a in %d ms (c has %lld of %d rows)\na: %s\nc: %s", ms,
                   (long long)nu_query(sh->c.db, "SELECT count(*) FROM products"), sh->rows,
                   nu_tail_s(sh->a.log, 8), nu_tail_s(sh->c.log, 8));
    return -1;
}

static void truncate_log(const char *path)
{
    FILE *f = fopen(path, "w");
    if (f) fclose(f);
}

static int log_has(const char *path, const char *what)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[2048];
    int found = 0;
    while (!found && fgets(line, sizeof line, f)) found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

/* A till joins a shop whose snapshot takes longer to make and to merge than the liveness
 * timeout: neither node drops the session for silence, and the till converges. */
Test(node_snapshot_stream, joins_without_a_silent_session)
{
    shop sh;
    setup(&sh);
    start_a(&sh);
    start_c(&sh);
    int64_t took = wait_joined(&sh, 120000);
    report(&sh, "joined", took);
    cr_assert_eq(nu_query(sh.c.db, "SELECT count(*) FROM products"), sh.rows);
    cr_assert(!log_has(sh.a.log, "taking the link as lost"), "a dropped c for silence: %s",
              nu_tail_s(sh.a.log, 8));
    cr_assert(!log_has(sh.c.log, "taking the link as lost"), "c dropped a for silence: %s",
              nu_tail_s(sh.c.log, 8));
    /* The receiver's acknowledgements, late ones included, are never taken for a snapshot of
     * its own (refused, and an ERROR sent back). */
    cr_assert(!log_has(sh.a.log, "refused"), "a refused something: %s", nu_tail_s(sh.a.log, 8));
    cr_assert(!log_has(sh.c.log, "refused"), "c refused something: %s", nu_tail_s(sh.c.log, 8));
    cr_assert_eq(status_num(&sh.a, "snapshots_sent"), 1);
    cr_assert_eq(status_num(&sh.c, "snapshots_received"), 1);
    cr_assert(log_has(sh.c.log, "took a snapshot from"), "%s", nu_tail_s(sh.c.log, 8));
    nu_kill(sh.pa, SIGKILL, 5000);
    nu_kill(sh.pc, SIGKILL, 5000);
}

/* The sender dies in the middle of a transfer: the rows merged so far stay (a join with a state
 * of the shop), the vector is not taken, and the restarted sender's snapshot completes it. */
Test(node_snapshot_stream, interrupted_transfer_restarts_and_converges)
{
    shop sh;
    setup(&sh);
    start_a(&sh);
    start_c(&sh);
    int64_t t0 = nu_now_ms(), got = 0;
    while (nu_now_ms() - t0 < 60000 &&
           (got = nu_query(sh.c.db, "SELECT count(*) FROM products")) < sh.rows / 10)
        nu_sleep_ms(20);
    cr_assert_geq(got, sh.rows / 10, "c merged no chunk: %s", nu_tail_s(sh.c.log, 8));
    nu_kill(sh.pa, SIGKILL, 5000);
    got = nu_query(sh.c.db, "SELECT count(*) FROM products");
    cr_assert_lt(got, sh.rows, "the transfer ended before the kill (rows %lld): make it larger",
                 (long long)got);
    /* Half a snapshot: rows, but not the vector: c still knows none of a's batches. */
    cr_assert_eq(status_num(&sh.c, "snapshots_received"), 0);
    nu_sleep_ms(500);
    start_a(&sh);
    wait_joined(&sh, 120000);
    cr_assert_eq(nu_query(sh.c.db, "SELECT count(*) FROM products"), sh.rows);
    cr_assert_eq(status_num(&sh.c, "snapshots_received"), 1);
    nu_kill(sh.pa, SIGKILL, 5000);
    nu_kill(sh.pc, SIGKILL, 5000);
}

/* A till restored from a backup older than the horizon (a new incarnation, rows the shop has
 * changed since) takes a snapshot again and converges: every row changed, merged chunk by chunk
 * with no session dropped. */
Test(node_snapshot_stream, restored_till_joins_again)
{
    shop sh;
    setup(&sh);
    start_a(&sh);
    start_c(&sh);
    wait_joined(&sh, 120000);
    nu_kill(sh.pc, SIGKILL, 5000);
    char bak[NU_PATH + 8];
    snprintf(bak, sizeof bak, "%s.bak", sh.c.db);
    free(nu_cli_ok("backup", sh.c.db, bak, NULL));
    /* the shop moves on while the till is away, and prunes again */
    nu_kill(sh.pa, SIGKILL, 5000);
    sqlite3 *h;
    cr_assert_eq(sqlite3_open(sh.a.db, &h), SQLITE_OK);
    cr_assert_eq(sqlite3_exec(h, "UPDATE products SET name = name || '*'", NULL, NULL, NULL),
                 SQLITE_OK);
    sqlite3_close(h);
    tsync_store *s;
    cr_assert_eq(tsync_store_open(&s, sh.a.db, NULL), 0, "%s", tsync_error_last()->message);
    cr_assert_eq(tsync_store_seal(s, NULL), 0, "%s", tsync_error_last()->message);
    tsync__vv vv = {0};
    cr_assert_eq(tsync__sync_vv(s, &vv), 0);
    uint8_t member[TSYNC__PK_BYTES];
    memset(member, 0x5a, sizeof member);
    cr_assert_eq(tsync__sync_ack_put(s, member, &vv), 0);
    cr_assert_eq(tsync__sync_prune(s, member, 1, 1, NULL), 0, "%s", tsync_error_last()->message);
    tsync__vv_free(&vv);
    tsync_store_free(s);
    free(nu_cli_ok("restore", sh.c.db, bak, NULL));
    cr_assert_eq(nu_query(sh.c.db, "SELECT count(*) FROM products WHERE name LIKE '%*'"), 0,
                 "the backup has the new names");
    truncate_log(sh.c.log);
    truncate_log(sh.a.log);
    char st[NU_PATH + 8];
    snprintf(st, sizeof st, "%s.node", sh.c.db); /* the killed node's status */
    remove(st);
    start_a(&sh);
    sh.pc = nu_fork(node_main, &sh.c);
    int64_t took = wait_joined(&sh, 120000);
    report(&sh, "restored till joined", took);
    cr_assert_eq(nu_query(sh.c.db, "SELECT count(*) FROM products WHERE name LIKE '%*'"), sh.rows);
    cr_assert(!log_has(sh.a.log, "taking the link as lost"), "a dropped c for silence: %s",
              nu_tail_s(sh.a.log, 8));
    cr_assert(!log_has(sh.c.log, "taking the link as lost"), "c dropped a for silence: %s",
              nu_tail_s(sh.c.log, 8));
    nu_kill(sh.pa, SIGKILL, 5000);
    nu_kill(sh.pc, SIGKILL, 5000);
}
