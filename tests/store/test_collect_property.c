/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_collect_property.c — collection never changes what a replica shows: a seeded
 * history (inserts, updates, deletes, re-inserts, counter changes, exchanges by bundle or by
 * snapshot, acknowledgements, log pruning, a late till, a till restored from an old backup, a new
 * till joining by snapshot) is played twice, step by step, in two shops: one enrolled whose tills
 * collect at random points, one that never collects. After every step every replica's
 * tsync_store_hash equals its twin's. The late till never collects, so collected and kept
 * tombstones meet; the restored till takes a snapshot from a till that collected a row its backup
 * still shows. Without the counter rule or the frontier's sweep this test fails.
 *
 * Both shops see the same clocks: SQLite's 'now' (which stamps captured changes) comes from a
 * VFS whose clock moves one second per step, so every row change gets the same HLC in both shops
 * and no two changes tie. Site ids differ between the shops, which only matters for ties.
 */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/internal.h"
#include "store/schema.h"
#include "store/snapshot.h"
#include "store/sync.h"
#include "store/trust.h"
#include "tests/lib/helpers.h"
#include "tillsync/backup.h"

TestSuite(collect_property, .fini = th_cleanup);

/* ---------------------------------------------------------------- a clock both shops share */

static sqlite3_vfs fake_vfs, *real_vfs;
static int64_t fake_ms;

static int fake_time64(sqlite3_vfs *v, sqlite3_int64 *out)
{
    (void)v;
    *out = (sqlite3_int64)fake_ms + 210866760000000LL; /* Unix epoch in Julian-day ms */
    return SQLITE_OK;
}

static int fake_time(sqlite3_vfs *v, double *out)
{
    (void)v;
    *out = (double)fake_ms / 86400000.0 + 2440587.5;
    return SQLITE_OK;
}

static void fake_clock(void)
{
    sqlite3_initialize();
    real_vfs = sqlite3_vfs_find(NULL);
    fake_vfs = *real_vfs;
    fake_vfs.zName = "tsync_test_clock";
    fake_vfs.xCurrentTimeInt64 = fake_time64;
    fake_vfs.xCurrentTime = fake_time;
    sqlite3_vfs_register(&fake_vfs, 1);
    fake_ms = (int64_t)tsync__wall_ms() - 2 * 86400000LL;
}

/* ---------------------------------------------------------------- the shops */

#define NREP  4
#define NKEYS 12

static tsync__shopkey shop;

typedef struct {
    int collects; /* shop 1 collects, shop 0 never does */
    char *dir;
    tsync_store *r[NREP + 1]; /* NREP tills, then the one that joins at the end */
    char path[NREP + 1][4200];
} world;

static tsync_store *open_till(world *w, int i)
{
    tsync_store *s = th_open_products(w->path[i]);
    th_exec(s, "CREATE TABLE IF NOT EXISTS notes(id TEXT PRIMARY KEY, body TEXT, n INTEGER)");
    int rc = tsync_store_replicate(s, "notes", NULL, 0);
    cr_assert(rc == 0 || rc == TSYNC_EEXISTS, "%s", th_errmsg());
    if (w->collects && !tsync__trust_enrolled(s, NULL)) {
        char name[8];
        snprintf(name, sizeof name, "t%d", i);
        th_must_enrol(s, &shop, name);
    }
    return s;
}

static void ack(tsync_store *to, tsync_store *member)
{
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(member, &v), 0);
    cr_assert_eq(tsync__sync_ack_put(to, tsync__sync_public_key(member), &v), 0, "%s", th_errmsg());
    tsync__vv_free(&v);
}

typedef struct {
    uint8_t **chunk;
    size_t *len, n, cap;
} chunks;

static int keep_chunk(void *ctx, const uint8_t *c, size_t len)
{
    chunks *k = ctx;
    if (k->n == k->cap) {
        k->cap = k->cap ? k->cap * 2 : 8;
        k->chunk = realloc(k->chunk, k->cap * sizeof *k->chunk);
        k->len = realloc(k->len, k->cap * sizeof *k->len);
        cr_assert(k->chunk && k->len);
    }
    k->chunk[k->n] = malloc(len);
    memcpy(k->chunk[k->n], c, len);
    k->len[k->n++] = len;
    return 0;
}

static int frontier_snaps;

static void give_snapshot(tsync_store *from, tsync_store *to)
{
    chunks k = {0};
    tsync__vv vv;
    cr_assert_eq(tsync__snap_export(from, 512, keep_chunk, &k, &vv), 0, "%s", th_errmsg());
    if (k.chunk[0][1] == TSYNC__SNAP_FORMAT_FRONT) frontier_snaps++;
    tsync__snap_in *in = NULL;
    cr_assert_eq(tsync__snap_in_open(to, &vv, &in), 0, "%s", th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    for (size_t i = 0; i < k.n; i++)
        cr_assert_eq(tsync__snap_in_chunk(in, k.chunk[i], k.len[i], &r), 0, "%s", th_errmsg());
    cr_assert_eq(tsync__snap_in_finish(in, &r), 0, "%s", th_errmsg());
    tsync__snap_in_free(in);
    tsync_merge_report_clear(&r);
    tsync__vv_free(&vv);
    for (size_t i = 0; i < k.n; i++) free(k.chunk[i]);
    free(k.chunk);
    free(k.len);
}

/* from's batches to `to`, or a snapshot when from pruned past what `to` holds. */
static void catch_up(tsync_store *from, tsync_store *to)
{
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, to), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    int rc = tsync_store_bundle(&b, &len, from, state, NULL);
    free(state);
    if (rc == TSYNC_ENOTFOUND) {
        give_snapshot(from, to);
        return;
    }
    cr_assert_eq(rc, 0, "bundle: %s", th_errmsg());
    rc = tsync_store_merge(to, b, len, NULL);
    free(b);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
}

/* ---------------------------------------------------------------- the history */

typedef struct {
    uint64_t rng;
    int late, restored, away; /* away: the late till is gone */
    size_t collected;
} plan;

static void write_op(tsync_store *s, uint64_t *rng)
{
    char sql[220];
    int k = (int)(th_rand(rng) % NKEYS);
    uint64_t v = th_rand(rng) % 1000;
    switch (th_rand(rng) % 9) {
    case 0:
    case 1:
        snprintf(sql, sizeof sql,
                 "INSERT INTO notes VALUES('k%02d', 'b%d', %d) ON CONFLICT(id) DO UPDATE SET "
                 "body = excluded.body, n = excluded.n",
                 k, (int)v, (int)(v % 7));
        break;
    case 2:
        snprintf(sql, sizeof sql, "UPDATE notes SET n = %d WHERE id = 'k%02d'", (int)v, k);
        break;
    case 3:
    case 4:
        snprintf(sql, sizeof sql, "DELETE FROM notes WHERE id = 'k%02d'", k);
        break;
    case 5:
        /* a re-insert with the counter at 0, or one that counts */
        snprintf(sql, sizeof sql,
                 "INSERT INTO products VALUES('p%02d', 'n%d', %d, %d) ON CONFLICT(id) DO UPDATE "
                 "SET name = excluded.name, price = excluded.price",
                 k, (int)v, (int)v, v % 2 ? 0 : 1 + (int)(v % 5));
        break;
    case 6:
        snprintf(sql, sizeof sql, "UPDATE products SET stock = stock - 1 WHERE id = 'p%02d'", k);
        break;
    case 7:
        snprintf(sql, sizeof sql, "UPDATE products SET price = %d WHERE id = 'p%02d'", (int)v, k);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id = 'p%02d'", k);
    }
    th_exec(s, sql);
    th_seal(s);
}

static int present(const plan *p, int i)
{
    return !(p->away && i == p->late);
}

/* One step, the same in both shops (each draws from its own copy of the generator). */
static void step(world *w, plan *p, int n, int nsteps)
{
    uint64_t *rng = &p->rng;
    int i = (int)(th_rand(rng) % NREP), j = (int)(th_rand(rng) % NREP);
    int op = (int)(th_rand(rng) % 11);
    if (n == nsteps * 2 / 3) p->away = 1;
    if (n == nsteps / 5) {
        /* the backup a till is restored from later shows a row deleted just after it */
        tsync_store *s = w->r[p->restored];
        th_exec(s, "INSERT OR REPLACE INTO notes VALUES('old', 'in the backup', 1)");
        th_seal(s);
        char bak[4300];
        snprintf(bak, sizeof bak, "%s.bak", w->path[p->restored]);
        cr_assert_eq(tsync_backup(s, bak, NULL, NULL), 0, "%s", th_errmsg());
        th_exec(s, "DELETE FROM notes WHERE id = 'old'");
        th_seal(s);
        return;
    }
    if (n == nsteps * 2 / 5) {
        /* everyone meets everyone, acknowledging, and collects (the late till is still here) */
        for (int pass = 0; pass < 3; pass++)
            for (int a = 0; a < NREP; a++)
                for (int b = 0; b < NREP; b++) {
                    if (a == b) continue;
                    catch_up(w->r[a], w->r[b]);
                    if (!w->collects) continue;
                    ack(w->r[a], w->r[b]);
                    size_t c = 0;
                    if (a != p->late)
                        cr_assert_eq(tsync_store_collect(w->r[a], &c), 0, "%s", th_errmsg());
                    p->collected += c;
                }
        return;
    }
    if (n == nsteps / 2) {
        /* restored from the old backup (a new incarnation), and caught up before it writes */
        int x = p->restored;
        char bak[4300];
        snprintf(bak, sizeof bak, "%s.bak", w->path[x]);
        tsync_store_free(w->r[x]);
        cr_assert_eq(tsync_restore(w->path[x], bak, NULL, NULL), 0, "%s", th_errmsg());
        w->r[x] = open_till(w, x);
        int from = (x + 1 + (int)(th_rand(rng) % (NREP - 1))) % NREP;
        if (from == p->late) from = (from + 1) % NREP == x ? (from + 2) % NREP : (from + 1) % NREP;
        /* behind the horizon: a snapshot (the frontier deletes what `from` collected) */
        give_snapshot(w->r[from], w->r[x]);
        if (w->collects) {
            th_tell(w->r[x], w->r[from]);
            ack(w->r[from], w->r[x]);
        }
        return;
    }
    if (!present(p, i) || !present(p, j)) return;
    switch (op) {
    case 0:
    case 1:
    case 2:
        write_op(w->r[i], rng);
        break;
    case 3:
    case 4:
    case 5:
        if (i == j) break;
        catch_up(w->r[i], w->r[j]);
        if (w->collects) ack(w->r[i], w->r[j]); /* j tells i what it holds now */
        break;
    case 6: {
        /* the log policy: a till behind the horizon then gets a snapshot */
        tsync_log_policy pol = {TSYNC_LOG_POLICY_VERSION, 1 + (int64_t)(th_rand(rng) % 8), 0, 0};
        cr_assert_eq(tsync_store_log_policy_set(w->r[i], &pol), 0, "%s", th_errmsg());
        size_t pr;
        cr_assert_eq(tsync_store_prune(w->r[i], &pr), 0, "%s", th_errmsg());
        break;
    }
    default:
        if (w->collects && i != p->late) { /* the late till never collects */
            size_t c = 0;
            cr_assert_eq(tsync_store_collect(w->r[i], &c), 0, "%s", th_errmsg());
            p->collected += c;
        }
    }
}

static void world_open(world *w, int collects)
{
    memset(w, 0, sizeof *w);
    w->collects = collects;
    w->dir = th_tmpdir();
    for (int i = 0; i <= NREP; i++) {
        char name[16];
        snprintf(name, sizeof name, "t%d.db", i);
        snprintf(w->path[i], sizeof w->path[i], "%s", th_path(w->dir, name));
    }
    for (int i = 0; i < NREP; i++) w->r[i] = open_till(w, i);
    if (collects)
        for (int i = 0; i < NREP; i++)
            for (int j = 0; j < NREP; j++)
                if (i != j) th_tell(w->r[i], w->r[j]);
}

static void world_close(world *w)
{
    for (int i = 0; i <= NREP; i++)
        if (w->r[i]) tsync_store_free(w->r[i]);
    th_rmdir(w->dir);
    free(w->dir);
}

static void same(world *w0, world *w1, uint64_t seed, int round, int n, const char *when)
{
    for (int i = 0; i <= NREP; i++) {
        if (!w0->r[i]) continue;
        char h0[65];
        snprintf(h0, sizeof h0, "%s", th_hash(w0->r[i]));
        cr_assert_str_eq(th_hash(w1->r[i]), h0,
                         "seed %llu round %d step %d (%s): till %d shows something else after "
                         "collection",
                         (unsigned long long)seed, round, n, when, i);
    }
}

Test(collect_property, collection_never_changes_what_a_replica_shows, .timeout = 600)
{
    uint64_t seed = th_seed("collect_property.collection_never_changes_what_a_replica_shows");
    shop = th_shop_make(5, 6, "property shop");
    fake_clock();
    size_t collected = 0;
    const int rounds = 6, nsteps = 200;
    for (int round = 0; round < rounds; round++) {
        world w[2];
        plan p[2];
        uint64_t rng = seed + (uint64_t)round * 0x9e3779b97f4a7c15ull;
        world_open(&w[0], 0);
        world_open(&w[1], 1);
        p[0].rng = rng;
        p[0].late = (int)(th_rand(&p[0].rng) % NREP);
        p[0].restored = (p[0].late + 1 + (int)(th_rand(&p[0].rng) % (NREP - 1))) % NREP;
        p[0].away = 0;
        p[0].collected = 0;
        p[1] = p[0];
        for (int n = 0; n < nsteps; n++) {
            fake_ms += 1000;
            for (int k = 0; k < 2; k++) step(&w[k], &p[k], n, nsteps);
            same(&w[0], &w[1], seed, round, n, "history");
        }
        /* A row that counted, sold out and deleted (collection must keep it: a re-insert below
         * counts on from its old count where it is not collected). */
        fake_ms += 1000;
        for (int k = 0; k < 2; k++) {
            tsync_store *s = w[k].r[(round + 1) % NREP];
            th_exec(s, "INSERT INTO products VALUES('p00', 'counted', 1, 3) ON CONFLICT(id) DO "
                       "UPDATE SET stock = stock + 3");
            th_exec(s, "UPDATE products SET stock = stock - 1 WHERE id = 'p00'");
            th_exec(s, "DELETE FROM products WHERE id = 'p00'");
            th_seal(s);
        }
        /* The late till comes back; everyone meets everyone, acknowledging, and collects. */
        p[0].away = p[1].away = 0;
        for (int pass = 0; pass < 4; pass++) {
            fake_ms += 1000;
            for (int k = 0; k < 2; k++)
                for (int i = 0; i < NREP; i++)
                    for (int j = 0; j < NREP; j++) {
                        if (i == j) continue;
                        catch_up(w[k].r[i], w[k].r[j]);
                        if (k) {
                            ack(w[k].r[i], w[k].r[j]);
                            if (i == p[1].late) continue;
                            size_t c = 0;
                            cr_assert_eq(tsync_store_collect(w[k].r[i], &c), 0, "%s", th_errmsg());
                            p[1].collected += c;
                        }
                    }
            same(&w[0], &w[1], seed, round, nsteps + pass, "meeting");
        }
        for (int i = 1; i < NREP; i++)
            cr_assert_str_eq(th_hash(w[1].r[i]), th_hash(w[1].r[0]), "seed %llu round %d",
                             (unsigned long long)seed, round);
        /* Every key inserted again (a re-insert of every row deleted, collected or not), on one
         * till, then on the others by batches. */
        fake_ms += 1000;
        for (int k = 0; k < 2; k++) {
            tsync_store *s = w[k].r[round % NREP];
            for (int key = 0; key < NKEYS; key++) {
                char sql[160];
                snprintf(sql, sizeof sql, "INSERT OR IGNORE INTO notes VALUES('k%02d', 'again', 1)",
                         key);
                th_exec(s, sql);
                snprintf(sql, sizeof sql,
                         "INSERT OR IGNORE INTO products VALUES('p%02d', 'again', 1, 2)", key);
                th_exec(s, sql);
            }
            th_seal(s);
            for (int i = 0; i < NREP; i++)
                if (i != round % NREP) catch_up(s, w[k].r[i]);
        }
        same(&w[0], &w[1], seed, round, nsteps + 4, "re-inserted");
        /* A new till joins by snapshot from the till that collected most. */
        int best = 0;
        int64_t most = -1;
        for (int i = 0; i < NREP; i++) {
            int64_t c = th_int(w[1].r[i], "SELECT v FROM tsync_meta WHERE k = 'collected_rows'", 0);
            if (c > most) most = c, best = i;
        }
        for (int k = 0; k < 2; k++) {
            w[k].r[NREP] = open_till(&w[k], NREP);
            if (k) th_tell(w[k].r[best], w[k].r[NREP]);
            give_snapshot(w[k].r[best], w[k].r[NREP]);
        }
        same(&w[0], &w[1], seed, round, nsteps + 5, "joined");
        cr_assert_str_eq(th_hash(w[1].r[NREP]), th_hash(w[1].r[best]));
        collected += p[1].collected;
        world_close(&w[0]);
        world_close(&w[1]);
    }
    fprintf(stderr,
            "collect_property: seed %llu, %d rounds of %d steps: %zu rows collected, %d snapshots "
            "carried a frontier\n",
            (unsigned long long)seed, rounds, nsteps, collected, frontier_snaps);
    cr_assert_gt(collected, 0, "nothing was ever collected: the test proves nothing");
}
