/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_cloud.c — the off-site side of a till, end to end with real processes (issue 13):
 * a real relay (`tillsync relay run`, exec'd on loopback), a real shop key, grant and data key
 * (the public trust API), and the till as the CLI or a `tillsync run` node.
 *
 * --case vault (cloud backup, tillsync/vault.h): a till's database of --rows products (default
 *   1,000,000; replicated, stock a PN-counter, one transaction, sealed) is backed up to the relay
 *   (tsync_vault_backup, in this process: backup, encrypt, upload in 1 MiB chunks, commit), then
 *   restored on a second till of the shop, each repetition twice in place of the same database:
 *   `tillsync restore DB --remote latest` (download, hash checks, decrypt, restore) and
 *   `tillsync restore DB FILE` of a plain local backup of the same source (tsync_backup) — whole
 *   CLI processes, timed, their peak RSS from wait4. The order alternates between repetitions.
 *   Reported: the upload's time, both restores, bytes the relay stores (the backup as listed, the
 *   relay's folder on disk) against the database's file, the peak RSS of each restore. The cloud
 *   restore streams 1 MiB chunks, so its RSS must not grow with the database: target peak RSS
 *   < 64 MiB (the local one is printed beside it).
 * --case catchup (the relay client inside the node, net/node/relay.c): till A of a shop sells
 *   --batches (100,000) sales, each sealed as its own batch, then its node (`tillsync run`)
 *   puts them all to the relay and stops. A freshly enrolled till B (the same tables, no rows,
 *   the shop's data key and grant) then starts its node; timed from the exec of B's node to the
 *   moment B's database holds every sale (polled every 20 ms with a read-only connection), with
 *   the first sale's arrival and the node's own counters. Target < 5 s. This is the whole path
 *   where bench_relay's catch-up is the relay's share: dialling, RGET, decrypting, checking the
 *   envelopes and merging into the database.
 *
 * Checks (a wrong result exits 1): the backup commits and is listed once with the size the upload
 * reported; both restores give the source's products hash; the catch-up ends with A's sales
 * hash on B and the node refused no envelope. --quick: --rows 20,000, --batches 2,000, one
 * repetition (bench_cloud_quick runs it for correctness; its figures mean nothing).
 */
#include "bench/bench_common.h"

#include <fcntl.h>
#include <ftw.h>
#include <jansson.h>
#include <sodium.h>
#include <sys/resource.h>

#include "tillsync/tillsync.h"

#ifndef TSYNC_CLI
#define TSYNC_CLI "tillsync"
#endif

#define RESTORE_RSS_TARGET_MIB 64

static struct {
    const char *cli;
    long rows, batches;
    int reps;
    uint64_t seed;
} C;

/* ---------------------------------------------------------------- processes */

static pid_t relay_pid = -1, node_pid = -1;

static void kill_kids(void)
{
    if (node_pid > 0) kill(node_pid, SIGTERM), waitpid(node_pid, NULL, 0), node_pid = -1;
    if (relay_pid > 0) kill(relay_pid, SIGTERM), waitpid(relay_pid, NULL, 0), relay_pid = -1;
}

/* Execs the CLI with args (NULL-terminated), its stdout and stderr to log. */
static pid_t spawn(const char *const *args, const char *log)
{
    const char *argv[24] = {C.cli};
    int n = 1;
    for (; args[n - 1] && n < 23; n++) argv[n] = args[n - 1];
    argv[n] = NULL;
    fflush(NULL);
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        execv(C.cli, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", C.cli, strerror(errno));
        _exit(127);
    }
    return pid;
}

/* Runs the CLI with args to the end (output in log); must exit 0. *rss_kb: its peak RSS. */
static double run_cli(const char *const *args, const char *log, long *rss_kb)
{
    double t0 = bench_now();
    pid_t pid = spawn(args, log);
    int st;
    struct rusage ru;
    pid_t w;
    while ((w = wait4(pid, &st, 0, &ru)) < 0 && errno == EINTR) {
    }
    double t = bench_now() - t0;
    BENCH_CHECK(w == pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "tillsync %s %s failed (status %d): see %s", args[0], args[1] ? args[1] : "",
                WIFEXITED(st) ? WEXITSTATUS(st) : -1, log);
    if (rss_kb) *rss_kb = ru.ru_maxrss;
    return t;
}

/* The first line of file holding needle, from needle on (static; "" when none). */
static const char *line_with(const char *path, const char *needle)
{
    static char out[512];
    char line[512];
    out[0] = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        char *p = strstr(line, needle);
        if (!p) continue;
        snprintf(out, sizeof out, "%s", p + strlen(needle));
        out[strcspn(out, "\n")] = 0;
        break;
    }
    if (f) fclose(f);
    return out;
}

/* ---------------------------------------------------------------- relay and shop */

typedef struct {
    char dir[4400], ep[256];
    uint8_t pk[32];
} relay_t;

typedef struct {
    tsync_shop_key *k;
    uint8_t data_key[TSYNC_DATA_KEY_BYTES];
    uint8_t devs[4][TSYNC_PUBLIC_KEY_BYTES];
    size_t ndevs;
} shop_t;

/* A relay in the folder `name` of the scratch folder, serving shop s. */
static void relay_start(relay_t *r, const shop_t *s, const char *name)
{
    snprintf(r->dir, sizeof r->dir, "%s", bench_path(name));
    char log[4500];
    snprintf(log, sizeof log, "%s.log", r->dir);
    const char *init[] = {"relay", "init", r->dir, NULL};
    unlink(log);
    run_cli(init, log, NULL);
    const char *pk = line_with(log, "public key: ");
    BENCH_CHECK(sodium_hex2bin(r->pk, 32, pk, strlen(pk), NULL, NULL, NULL) == 0,
                "relay init printed no public key (%s)", log);
    tsync_shop_info info = TSYNC_SHOP_INFO_INIT;
    BENCH_TS(tsync_shop_key_info(&info, s->k));
    char admin[65];
    sodium_bin2hex(admin, sizeof admin, info.admin_key, 32);
    const char *admit[] = {"relay", "admit", r->dir, admin, "--quota-mb", "100000", NULL};
    run_cli(admit, log, NULL);
    const char *run[] = {"relay", "run", r->dir, "--listen", "tcp://127.0.0.1:*", NULL};
    relay_pid = spawn(run, log);
    for (int i = 0; i < 400 && !r->ep[0]; i++) {
        usleep(25000);
        snprintf(r->ep, sizeof r->ep, "%s", line_with(log, "listening on "));
        BENCH_CHECK(waitpid(relay_pid, NULL, WNOHANG) == 0, "the relay stopped: see %s", log);
    }
    BENCH_CHECK(r->ep[0], "the relay did not say where it listens (%s)", log);
}

/* Shop s (its key file "<name>-shop.key", a new data key) and a relay serving it in the folder
 * "<name>-relay". */
static void shop_make(shop_t *s, relay_t *r, const char *name)
{
    char file[256];
    memset(s, 0, sizeof *s);
    memset(r, 0, sizeof *r);
    snprintf(file, sizeof file, "%s-shop.key", name);
    BENCH_TS(tsync_shop_key_create(&s->k, bench_path(file), "Bench Shop"));
    randombytes_buf(s->data_key, sizeof s->data_key);
    snprintf(file, sizeof file, "%s-relay", name);
    relay_start(r, s, file);
}

/* Enrols the till at path in the shop (its certificate from the shop key). */
static void till_enrol(shop_t *s, const char *path, const char *name)
{
    tsync_store *t = bench_store_open(path, TSYNC_SYNC_NORMAL);
    tsync_sign_options so = TSYNC_SIGN_OPTIONS_INIT;
    so.device_name = name;
    BENCH_TS(tsync_trust_enrol_with_key(NULL, t, s->k, &so));
    BENCH_CHECK(s->ndevs < 4, "too many tills");
    BENCH_TS(tsync_store_public_key(s->devs[s->ndevs++], t));
    tsync_store_free(t);
}

/* Installs on every till given the data key (epoch 1, sealed to all of them) and the grant. */
static void install(const shop_t *s, const relay_t *r, const char *const *paths, int n)
{
    uint8_t *dk, *gr;
    size_t dkl, grl;
    BENCH_TS(tsync_shop_key_sign_data_key(&dk, &dkl, s->k, 1, s->data_key, s->devs, s->ndevs));
    const char *addrs[1] = {r->ep};
    BENCH_TS(tsync_shop_key_sign_grant(&gr, &grl, s->k, addrs, (const uint8_t(*)[32])r->pk, 1, 0,
                                       (uint64_t)time(NULL) * 1000u + 86400000u));
    for (int i = 0; i < n; i++) {
        tsync_store *t = bench_store_open(paths[i], TSYNC_SYNC_NORMAL);
        const uint8_t *recs[2] = {dk, gr};
        size_t lens[2] = {dkl, grl};
        BENCH_TS(tsync_trust_enrol(NULL, t, recs, lens, 2));
        tsync_store_free(t);
    }
    tsync_free(dk);
    tsync_free(gr);
}

static uint64_t tree_bytes;

static int tree_add(const char *p, const struct stat *sb, int flag, struct FTW *f)
{
    (void)p, (void)f;
    if (flag == FTW_F) tree_bytes += (uint64_t)sb->st_size;
    return 0;
}

/* Bytes of the files under dir. */
static uint64_t tree_size(const char *dir)
{
    tree_bytes = 0;
    BENCH_CHECK(nftw(dir, tree_add, 16, FTW_PHYS) == 0, "nftw %s: %s", dir, strerror(errno));
    return tree_bytes;
}

static uint64_t file_size(const char *path)
{
    struct stat sb;
    BENCH_CHECK(stat(path, &sb) == 0, "%s is missing", path);
    return (uint64_t)sb.st_size;
}

static void products_hash(const char *path, char hex[2 * TSYNC_HASH_BYTES + 1])
{
    tsync_store *s = bench_store_open(path, TSYNC_SYNC_NORMAL);
    uint8_t h[TSYNC_HASH_BYTES];
    BENCH_TS(tsync_store_hash(h, s, "products"));
    tsync_store_free(s);
    sodium_bin2hex(hex, 2 * TSYNC_HASH_BYTES + 1, h, sizeof h);
}

/* ---------------------------------------------------------------- vault */

static void case_vault(bench_report *rep)
{
    const char *src_c = bench_path("src.db");
    char src[4400], dst[4400], local[4400], log[4400], ldst[4400];
    snprintf(src, sizeof src, "%s", src_c);
    snprintf(dst, sizeof dst, "%s", bench_path("till2.db"));
    snprintf(local, sizeof local, "%s", bench_path("local.tsb"));
    snprintf(ldst, sizeof ldst, "%s", bench_path("till3.db"));
    snprintf(log, sizeof log, "%s", bench_path("restore.log"));
    shop_t s;
    relay_t r;
    shop_make(&s, &r, "vault");

    fprintf(stderr, "[vault] writing %ld source rows\n", C.rows);
    bench_row *rows;
    bench_make_rows(C.seed, C.rows, &rows, NULL);
    tsync_store *t = bench_store_open(src, TSYNC_SYNC_NORMAL);
    bench_products_replicated(t);
    sqlite3 *db = tsync_store_sqlite(t);
    sqlite3_stmt *st =
        bench_prepare(db, "INSERT INTO products(id, name, price, stock) VALUES(?1, ?2, ?3, ?4)");
    bench_exec(db, "BEGIN");
    for (long i = 0; i < C.rows; i++) {
        bench_bind_row(st, &rows[i]);
        bench_step_done(db, st);
    }
    bench_exec(db, "COMMIT");
    sqlite3_finalize(st);
    BENCH_TS(tsync_store_seal(t, NULL));
    bench_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)");
    tsync_store_free(t);
    free(rows);
    till_enrol(&s, src, "till-1");
    t = bench_store_open(dst, TSYNC_SYNC_NORMAL);
    bench_products_replicated(t);
    tsync_store_free(t);
    till_enrol(&s, dst, "till-2");
    const char *paths[2] = {src, dst};
    install(&s, &r, paths, 2);
    char want[2 * TSYNC_HASH_BYTES + 1], got[2 * TSYNC_HASH_BYTES + 1];
    products_hash(src, want);
    uint64_t db_bytes = file_size(src);

    /* The upload, and a plain local backup of the same source for the local restore. */
    fprintf(stderr, "[vault] uploading\n");
    bench_settle();
    bench_timer tm = bench_start();
    tsync_vault_report vr = TSYNC_VAULT_REPORT_INIT;
    BENCH_TS(tsync_vault_backup(src, NULL, &vr));
    bench_span up = bench_stop(tm);
    BENCH_CHECK(vr.complete == 1 && vr.chunks_sent == vr.backup.chunks && !vr.resumed,
                "the upload did not commit in one call (complete %d, %u of %u chunks)", vr.complete,
                vr.chunks_sent, vr.backup.chunks);
    tsync_vault_entry *list = NULL;
    size_t nlist = 0;
    BENCH_TS(tsync_vault_list(dst, NULL, &list, &nlist));
    BENCH_CHECK(nlist == 1 && !strcmp(list[0].id, vr.backup.id) && list[0].size == vr.backup.size,
                "the other till lists %zu backups, not the one uploaded", nlist);
    tsync_free(list);
    uint64_t relay_disk = tree_size(r.dir);
    tsync_store *ts = bench_store_open(src, TSYNC_SYNC_NORMAL);
    unlink(local);
    tm = bench_start();
    BENCH_TS(tsync_backup(ts, local, NULL, NULL));
    double local_backup = bench_stop(tm).wall;
    tsync_store_free(ts);

    double vr_t[64], vl_t[64], vr_rss[64], vl_rss[64];
    const char *remote[] = {"restore", dst, "--remote", "latest", NULL};
    /* The local restore has a database of its own: tsync_restore takes the trust records of the
     * backup (another till's), so the till it restored is no longer this shop's till-2, which the
     * cloud restore needs. It is made once, untimed, so every timed restore replaces one. */
    const char *loc[] = {"restore", ldst, local, NULL};
    run_cli(loc, log, NULL);
    for (int k = 0; k < C.reps; k++) {
        fprintf(stderr, "[vault] restore, repetition %d/%d\n", k + 1, C.reps);
        for (int side = 0; side < 2; side++) {
            long kb;
            bench_settle();
            if ((side ^ (k & 1)) == 0) {
                vr_t[k] = run_cli(remote, log, &kb);
                vr_rss[k] = (double)kb / 1024;
            } else {
                vl_t[k] = run_cli(loc, log, &kb);
                vl_rss[k] = (double)kb / 1024;
            }
            int cloud = (side ^ (k & 1)) == 0;
            products_hash(cloud ? dst : ldst, got);
            BENCH_CHECK(!strcmp(got, want), "a %s restore gives products hash %s, the source %s",
                        cloud ? "cloud" : "local", got, want);
        }
    }
    double spread_r[64], spread_l[64];
    memcpy(spread_r, vr_t, sizeof vr_t);
    memcpy(spread_l, vl_t, sizeof vl_t);
    double mr = bench_median(vr_t, C.reps), ml = bench_median(vl_t, C.reps);
    double rss_r = 0, rss_l = 0;
    for (int k = 0; k < C.reps; k++) {
        if (vr_rss[k] > rss_r) rss_r = vr_rss[k];
        if (vl_rss[k] > rss_l) rss_l = vl_rss[k];
    }
    double mb = (double)db_bytes / 1e6;
    bench_fig *f = bench_add(rep, "vault.upload", "cloud backup: make, encrypt, upload, commit",
                             up.wall * 1e3, "ms", local_backup * 1e3, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld db_bytes=%" PRIu64 " chunks=%u mb_per_s=%.0f cpu_s=%.2f", C.rows,
                db_bytes, vr.backup.chunks, mb / up.wall, up.cpu);
    f = bench_add(rep, "vault.restore", "restore --remote latest (vs restore of a local file)",
                  mr * 1e3, "ms", ml * 1e3, BENCH_T_NONE, 0);
    bench_extra(f, "rows=%ld mb_per_s=%.0f local_mb_per_s=%.0f", C.rows, mb / mr, mb / ml);
    bench_spreads(f, spread_r, spread_l, C.reps);
    f = bench_add(rep, "vault.stored", "bytes at the relay (vs the database file)",
                  (double)vr.backup.size, "B", (double)db_bytes, BENCH_T_NONE, 0);
    bench_extra(f, "relay_dir_bytes=%" PRIu64 " local_backup_bytes=%" PRIu64, relay_disk,
                file_size(local));
    f = bench_add(rep, "vault.restore_rss", "peak RSS of the till, restore --remote", rss_r, "MiB",
                  rss_l, BENCH_T_VALUE_LT, RESTORE_RSS_TARGET_MIB);
    bench_extra(f, "local_restore_rss_mib=%.1f", rss_l);
    printf("every restore gives the source's products hash %s\n", want);
    kill_kids();
    tsync_shop_key_free(s.k);
}

/* ---------------------------------------------------------------- catch-up */

#define SALES_SQL                                                                                  \
    "CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, total INTEGER);"                           \
    "CREATE TABLE sale_lines(id TEXT PRIMARY KEY, sale TEXT, product TEXT, qty INTEGER, "          \
    "price INTEGER)"

static void shop_tables(const char *path)
{
    tsync_store *s = bench_store_open(path, TSYNC_SYNC_NORMAL);
    bench_products_replicated(s);
    bench_exec(tsync_store_sqlite(s), SALES_SQL);
    BENCH_TS(tsync_store_replicate(s, "sales", NULL, 0));
    BENCH_TS(tsync_store_replicate(s, "sale_lines", NULL, 0));
    tsync_store_free(s);
}

/* --batches sales on the till at path, each a sales row, two lines and two stock decrements
 * (a PN-counter), sealed as its own batch (the live shape). */
static void sell_all(const char *path)
{
    tsync_store *s = bench_store_open(path, TSYNC_SYNC_NORMAL);
    sqlite3 *db = tsync_store_sqlite(s);
    bench_exec(db, "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i<999) "
                   "INSERT INTO products SELECT printf('p%05d',i), 'product '||i, 100+i, 50 "
                   "FROM n");
    BENCH_TS(tsync_store_seal(s, NULL));
    sqlite3_stmt *sale = bench_prepare(db, "INSERT INTO sales VALUES(?1, 'a', ?2)");
    sqlite3_stmt *line = bench_prepare(db, "INSERT INTO sale_lines VALUES(?1, ?2, ?3, ?4, ?5)");
    sqlite3_stmt *stock = bench_prepare(db, "UPDATE products SET stock = stock - ?2 WHERE id = ?1");
    bench_rng rng = {C.seed};
    for (long i = 0; i < C.batches; i++) {
        char sid[32], lid[40], pid[16];
        snprintf(sid, sizeof sid, "a-%ld", i + 1);
        bench_exec(db, "BEGIN");
        int64_t total = 0;
        for (int l = 0; l < 2; l++) {
            int p = (int)bench_below(&rng, 1000), q = 1 + (int)bench_below(&rng, 3);
            snprintf(lid, sizeof lid, "%s/%d", sid, l);
            snprintf(pid, sizeof pid, "p%05d", p);
            sqlite3_bind_text(line, 1, lid, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(line, 2, sid, -1, SQLITE_TRANSIENT);
            sqlite3_bind_text(line, 3, pid, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(line, 4, q);
            sqlite3_bind_int(line, 5, 100 + p);
            bench_step_done(db, line);
            sqlite3_bind_text(stock, 1, pid, -1, SQLITE_TRANSIENT);
            sqlite3_bind_int(stock, 2, q);
            bench_step_done(db, stock);
            total += (int64_t)q * (100 + p);
        }
        sqlite3_bind_text(sale, 1, sid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(sale, 2, total);
        bench_step_done(db, sale);
        bench_exec(db, "COMMIT");
        BENCH_TS(tsync_store_seal(s, NULL));
    }
    sqlite3_finalize(sale);
    sqlite3_finalize(line);
    sqlite3_finalize(stock);
    tsync_store_free(s);
}

/* The node's status file (<db>.node), once it is the node's of pid; NULL before. */
static json_t *node_status(const char *db, pid_t pid)
{
    char p[4500];
    snprintf(p, sizeof p, "%s.node", db);
    json_t *o = json_load_file(p, 0, NULL);
    if (o && json_integer_value(json_object_get(o, "pid")) != pid) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

static long long relay_field(json_t *st, const char *f)
{
    return (long long)json_integer_value(json_object_get(json_object_get(st, "relay"), f));
}

/* Stops the node; returns its CPU seconds (user + system) over its life; *rss_mib (may be NULL):
 * its peak RSS. */
static double node_stop(double *rss_mib)
{
    BENCH_CHECK(kill(node_pid, SIGTERM) == 0, "kill the node: %s", strerror(errno));
    int st;
    struct rusage ru;
    BENCH_CHECK(wait4(node_pid, &st, 0, &ru) == node_pid && WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "the node did not stop cleanly");
    node_pid = -1;
    if (rss_mib) *rss_mib = (double)ru.ru_maxrss / 1024;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec * 1e-6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec * 1e-6;
}

static const char *sales_hash(const char *path)
{
    static char hex[2 * TSYNC_HASH_BYTES + 1];
    tsync_store *s = bench_store_open(path, TSYNC_SYNC_NORMAL);
    uint8_t h[TSYNC_HASH_BYTES];
    BENCH_TS(tsync_store_hash(h, s, "sales"));
    tsync_store_free(s);
    sodium_bin2hex(hex, sizeof hex, h, sizeof h);
    return hex;
}

typedef struct {
    double done, first, cpu, rss; /* seconds from the exec; the node's CPU s and peak RSS MiB */
    json_t *status;               /* the node's last status (the caller's) */
} caught_t;

/* Execs `tillsync run db` with the extra args, and times it from the exec until db holds every
 * sale (a read-only connection polls every 20 ms); then stops the node. */
static caught_t catch_up(const char *db, const char *const *extra, const char *log, const char *who)
{
    const char *args[16] = {"run", db, "--listen", "tcp://127.0.0.1:*", "--no-mdns", "-v"};
    int na = 6;
    for (int i = 0; extra[i] && na < 15; i++) args[na++] = extra[i];
    args[na] = NULL;
    sqlite3 *rd = NULL;
    BENCH_CHECK(sqlite3_open_v2(db, &rd, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s", db);
    sqlite3_busy_timeout(rd, 1000);
    sqlite3_stmt *cnt = bench_prepare(rd, "SELECT count(*) FROM sales");
    bench_settle();
    caught_t c = {NAN, NAN, 0, 0, NULL};
    double t0 = bench_now(), said = 0;
    node_pid = spawn(args, log);
    long n = 0;
    while (isnan(c.done)) {
        usleep(20000);
        double now = bench_now() - t0;
        if (now - said >= 5) {
            said = now;
            fprintf(stderr, "[catchup] %s holds %ld sales after %.0f s\n", who, n, now);
        }
        BENCH_CHECK(waitpid(node_pid, NULL, WNOHANG) == 0, "node %s stopped: see %s", who, log);
        BENCH_CHECK(now < 600, "%s holds %ld of %ld sales after 600 s (%s)", who, n, C.batches,
                    log);
        if (sqlite3_step(cnt) == SQLITE_ROW) n = (long)sqlite3_column_int64(cnt, 0);
        sqlite3_reset(cnt);
        if (n > 0 && isnan(c.first)) c.first = now;
        if (n == C.batches) c.done = now;
    }
    sqlite3_finalize(cnt);
    sqlite3_close(rd);
    /* a status written after the last merge (the node writes it about every second) */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    int64_t done_ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
    for (int i = 0; i < 100; i++) {
        json_decref(c.status);
        c.status = node_status(db, node_pid);
        if (c.status && json_integer_value(json_object_get(c.status, "updated_ms")) > done_ms)
            break;
        usleep(50000);
    }
    BENCH_CHECK(c.status, "node %s wrote no status", who);
    c.cpu = node_stop(&c.rss);
    return c;
}

static void case_catchup(bench_report *rep)
{
    char a[4400], b[4400], l[4400], alog[4400];
    snprintf(a, sizeof a, "%s", bench_path("a.db"));
    snprintf(b, sizeof b, "%s", bench_path("b.db"));
    snprintf(l, sizeof l, "%s", bench_path("lan.db"));
    snprintf(alog, sizeof alog, "%s", bench_path("node-a.log"));
    shop_t s;
    relay_t r;
    shop_make(&s, &r, "catchup");
    const char *paths[3] = {a, b, l};
    const char *names[3] = {"till-a", "till-b", "till-lan"};
    for (int i = 0; i < 3; i++) {
        shop_tables(paths[i]);
        till_enrol(&s, paths[i], names[i]);
    }
    install(&s, &r, paths, 3);
    fprintf(stderr, "[catchup] till A sells %ld sales, one batch each\n", C.batches);
    sell_all(a);

    /* A's node puts everything to the relay, then stops. */
    const char *run_a[] = {"run", a, "--listen", "tcp://127.0.0.1:*", "--no-mdns", NULL};
    double t0 = bench_now();
    node_pid = spawn(run_a, alog);
    json_t *st = NULL;
    for (;;) {
        usleep(50000);
        BENCH_CHECK(waitpid(node_pid, NULL, WNOHANG) == 0, "node A stopped: see %s", alog);
        BENCH_CHECK(bench_now() - t0 < 600, "node A did not put its batches in 600 s (%s)", alog);
        json_decref(st);
        st = node_status(a, node_pid);
        json_t *rl = st ? json_object_get(st, "relay") : NULL;
        const char *state = json_string_value(json_object_get(rl, "state"));
        if (state && !strcmp(state, "up") && json_is_integer(json_object_get(rl, "relay_lacks")) &&
            relay_field(st, "relay_lacks") == 0)
            break;
    }
    double put_s = bench_now() - t0;
    long long envs_put = relay_field(st, "envelopes_sent");
    json_decref(st);
    node_stop(NULL);
    fprintf(stderr, "[catchup] the relay holds A's batches (%.1f s, %lld envelopes)\n", put_s,
            envs_put);

    /* B: a new till whose only source is the relay (A is stopped). */
    const char *none[] = {NULL};
    caught_t cb = catch_up(b, none, bench_path("node-b.log"), "B");
    long long envs_in = relay_field(cb.status, "envelopes_received");
    long long batches_in = relay_field(cb.status, "batches_received");
    json_t *refused = json_object_get(json_object_get(cb.status, "relay"), "envelopes_refused");
    const char *k;
    json_t *v;
    json_object_foreach(refused, k, v)
        BENCH_CHECK(json_integer_value(v) == 0, "node B refused %lld envelopes (%s)",
                    (long long)json_integer_value(v), k);
    BENCH_CHECK(batches_in >= C.batches, "node B says %lld batches came from the relay",
                batches_in);
    json_decref(cb.status);

    /* The baseline, same run: another new till catching up from A's node over the LAN
     * (loopback), neither of them using the relay. */
    const char *run_a_lan[] = {"run",        a,   "--listen", "tcp://127.0.0.1:*", "--no-mdns",
                               "--no-relay", NULL};
    node_pid = spawn(run_a_lan, alog);
    char peer[512] = "";
    for (int i = 0; i < 400 && !peer[0]; i++) {
        usleep(25000);
        json_t *o = node_status(a, node_pid);
        const char *ep = json_string_value(json_object_get(o, "listen"));
        if (ep && ep[0]) {
            char key[65];
            sodium_bin2hex(key, sizeof key, s.devs[0], 32);
            snprintf(peer, sizeof peer, "%s#%s", ep, key);
        }
        json_decref(o);
    }
    BENCH_CHECK(peer[0], "node A said no endpoint (%s)", alog);
    pid_t a_pid = node_pid;
    const char *lan_args[] = {"--no-relay", "--peer", peer, NULL};
    caught_t cl = catch_up(l, lan_args, bench_path("node-lan.log"), "LAN till");
    json_decref(cl.status);
    node_pid = a_pid;
    node_stop(NULL);

    char want[2 * TSYNC_HASH_BYTES + 1];
    snprintf(want, sizeof want, "%s", sales_hash(a));
    BENCH_CHECK(!strcmp(sales_hash(b), want), "B's sales hash %s, A's %s", sales_hash(b), want);
    BENCH_CHECK(!strcmp(sales_hash(l), want), "the LAN till's sales hash %s, A's %s", sales_hash(l),
                want);
    bench_fig *f = bench_add(rep, "catchup.node", "new till via the relay (vs via the LAN)",
                             cb.done * 1e3, "ms", cl.done * 1e3, BENCH_T_VALUE_LT, 5000);
    bench_extra(f, "batches=%ld first_sale_ms=%.0f envelopes=%lld sales_per_s=%.0f", C.batches,
                cb.first * 1e3, envs_in, (double)C.batches / cb.done);
    f = bench_add(rep, "catchup.cpu", "CPU of the new till's node, relay (vs LAN)", cb.cpu, "s",
                  cl.cpu, BENCH_T_NONE, 0);
    bench_extra(f, "lan_first_sale_ms=%.0f", cl.first * 1e3);
    f = bench_add(rep, "catchup.rss", "peak RSS of the new till's node, relay (vs LAN)", cb.rss,
                  "MiB", cl.rss, BENCH_T_VALUE_LT, 64);
    f = bench_add(rep, "catchup.put", "till A's node: exec to the relay holding all", put_s * 1e3,
                  "ms", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "envelopes=%lld", envs_put);
    printf("B's and the LAN till's sales hash = A's = %s; node B refused no envelope\n", want);
    kill_kids();
    tsync_shop_key_free(s.k);
}

int main(int argc, char **argv)
{
    static const char *const known[] = {"--case=", "--rows=", "--batches=", "--reps=", "--seed=",
                                        "--quick", "--cli=",  "--help",     NULL};
    bench_args_check(
        argc, argv, known,
        "usage: bench_cloud [--case vault|catchup] [--rows N] [--batches N] [--reps N] [--quick]\n"
        "  --case     one case (default: both)\n"
        "  --rows     vault: rows of products (default 1000000)\n"
        "  --batches  catchup: one-sale batches at the relay (default 100000)\n"
        "  --reps     vault: restore repetitions; figures are medians (default 3)\n"
        "  --quick    20,000 rows, 2,000 batches, one repetition (a correctness run)\n"
        "  --cli PATH the tillsync program (default: the build's; also $TSYNC_CLI)\n"
        "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    int quick = bench_has_flag(argc, argv, "--quick");
    C.rows = (long)bench_arg_int(argc, argv, "--rows", quick ? 20000 : 1000000);
    C.batches = (long)bench_arg_int(argc, argv, "--batches", quick ? 2000 : 100000);
    C.reps = (int)bench_arg_int(argc, argv, "--reps", quick ? 1 : 3);
    C.seed = bench_seed(argc, argv, 20261207);
    C.cli = bench_arg(argc, argv, "--cli");
    if (!C.cli) C.cli = getenv("TSYNC_CLI");
    if (!C.cli || !*C.cli) C.cli = TSYNC_CLI;
    const char *which = bench_arg(argc, argv, "--case");
    BENCH_CHECK(C.reps >= 1 && C.reps <= 64 && C.rows >= 1 && C.batches >= 1,
                "bad sizes (reps 1..64, rows and batches >= 1)");
    BENCH_CHECK(!which || !strcmp(which, "vault") || !strcmp(which, "catchup"),
                "--case is vault or catchup");
    BENCH_CHECK(access(C.cli, X_OK) == 0, "%s is not a program (--cli)", C.cli);
    BENCH_CHECK(sodium_init() >= 0, "sodium_init");
    atexit(kill_kids);

    bench_dir_init("bench_cloud");
    bench_header("bench_cloud", "cloud backup and a new till's catch-up through a real relay",
                 C.seed, C.reps);
    printf("relay: %s relay run on loopback (own process); restores and nodes: the same program, "
           "each its own process\n",
           C.cli);
    bench_report rep = {.bench = "cloud"};
    if (!which || !strcmp(which, "vault")) case_vault(&rep);
    if (!which || !strcmp(which, "catchup")) case_catchup(&rep);
    bench_print(&rep);
    printf("bench_cloud: all correctness checks passed\n");
    return 0;
}
