/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_prune_policy.c — the log policy (store/prune.c): the log is cut to its count,
 * byte and age bounds with no acknowledgement and no enrolment; what must stay stays (our own
 * batches never handed on, the newest batch of each origin, batches parked changes need); a till
 * behind the new horizon shows in status and converges by snapshot; and a seeded property test
 * checks that pruning never changes what any replica shows, and that replicas which pruned at
 * random, late ones included, converge to a replica that never pruned.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "store/internal.h"
#include "store/logrun_int.h"
#include "store/snapshot.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"
#include "tillsync/status.h"

TestSuite(prune_policy, .fini = th_cleanup);

static int64_t bodies(tsync_store *s)
{
    return th_int(s, "SELECT count(*) FROM tsync_log WHERE length(body) > 0", -1);
}

/* What the bodies take: a received run's batches their share of its row (store/logrun_int.h). */
static int64_t body_bytes(tsync_store *s)
{
    return th_int(s, "SELECT total(" TSYNC__LOG_BODY_BYTES ") FROM tsync_log", -1);
}

static void set_policy(tsync_store *s, int64_t batches, int64_t bytes, int64_t age_ms)
{
    tsync_log_policy p = {TSYNC_LOG_POLICY_VERSION, batches, bytes, age_ms};
    cr_assert_eq(tsync_store_log_policy_set(s, &p), 0, "%s", th_errmsg());
}

static size_t prune(tsync_store *s)
{
    size_t n = 0;
    cr_assert_eq(tsync_store_prune(s, &n), 0, "%s", th_errmsg());
    return n;
}

typedef struct {
    uint8_t *chunk[256];
    size_t len[256];
    size_t n;
} chunks;

static int keep_chunk(void *ctx, const uint8_t *c, size_t len)
{
    chunks *k = ctx;
    cr_assert_lt(k->n, 256);
    k->chunk[k->n] = malloc(len);
    memcpy(k->chunk[k->n], c, len);
    k->len[k->n++] = len;
    return 0;
}

/* What the node does for a peer behind the horizon: a snapshot from `from`, imported by `to`. */
static void give_snapshot(tsync_store *from, tsync_store *to)
{
    chunks k = {0};
    tsync__vv vv;
    cr_assert_eq(tsync__snap_export(from, 4096, keep_chunk, &k, &vv), 0, "%s", th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync__snap_import(to, (const uint8_t *const *)k.chunk, k.len, k.n, &vv, &r), 0,
                 "%s", th_errmsg());
    tsync_merge_report_clear(&r);
    tsync__vv_free(&vv);
    for (size_t i = 0; i < k.n; i++) free(k.chunk[i]);
}

/* Batches when `from` still has them, else a snapshot (as a node does). 1: it took a snapshot. */
static int catch_up(tsync_store *from, tsync_store *to)
{
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, to), 0);
    uint8_t *b = NULL;
    size_t len = 0;
    int rc = tsync_store_bundle(&b, &len, from, state, NULL);
    free(state);
    if (rc == TSYNC_ENOTFOUND) {
        cr_assert(strstr(th_errmsg(), "snapshot"), "%s", th_errmsg());
        give_snapshot(from, to);
        return 1;
    }
    cr_assert_eq(rc, 0, "bundle: %s", th_errmsg());
    rc = tsync_store_merge(to, b, len, NULL);
    free(b);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
    return 0;
}

/* `member` acknowledges to `to` what it holds (what a node records from an ACK). */
static void ack(tsync_store *to, tsync_store *member)
{
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(member, &v), 0);
    cr_assert_eq(tsync__sync_ack_put(to, tsync__sync_public_key(member), &v), 0, "%s", th_errmsg());
    tsync__vv_free(&v);
}

Test(prune_policy, the_count_bound_holds_with_no_ack_and_no_enrolment)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    th_sell(a, 0, 30);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg()); /* a's batches left it (in a bundle) */
    th_sell(b, 100, 3);
    set_policy(a, 10, 0, 0);
    set_policy(b, 10, 0, 0);
    cr_assert_gt(prune(a), 0);
    cr_assert_eq(bodies(a), 10);
    cr_assert_eq(th_int(a, "SELECT min(seq) FROM tsync_log", -1), 20, "a stub at the horizon");
    /* b: a's 30 batches and its own 3, which never left b and stay. */
    prune(b);
    cr_assert_eq(bodies(b), 10);
    char sql[120];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM tsync_log WHERE site = %u AND length(body) > 0",
             (unsigned)b->local_idx);
    cr_assert_eq(th_int(b, sql, -1), 3);
    /* Batches go on above the horizon, both ways. */
    th_sell(a, 200, 2);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(th_sync(b, a), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(prune_policy, the_byte_bound_holds)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    th_sell(a, 0, 40);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    int64_t all = body_bytes(b);
    set_policy(b, 0, all / 4, 0);
    cr_assert_gt(prune(b), 0);
    cr_assert_leq(body_bytes(b), all / 4);
    cr_assert_gt(bodies(b), 1);
    /* The status shows the log and the bound in force. */
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, b), 0, "%s", th_errmsg());
    cr_assert_eq(st.log_batches, bodies(b));
    cr_assert_eq(st.log_bytes, body_bytes(b));
    cr_assert_eq(st.log_max_bytes, all / 4);
    cr_assert_eq(st.log_max_batches, TSYNC__LOG_DEFAULT_BATCHES);
    cr_assert_eq(st.log_max_age_ms, TSYNC__LOG_DEFAULT_AGE_MS);
    cr_assert_eq(st.log_horizons, 1);
    cr_assert_eq(st.log_behind, 0);
    tsync_store_status_clear(&st);
    /* No bound at all: nothing more goes. */
    set_policy(b, -1, -1, -1);
    cr_assert_eq(prune(b), 0);
    tsync_store_free(a);
    tsync_store_free(b);
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void nap_ms(long ms)
{
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

Test(prune_policy, the_age_bound_holds_by_the_batch_clock)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    th_sell(a, 0, 12);
    /* The default keeps 30 days: nothing goes. */
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_eq(prune(a), 0);
    cr_assert_eq(prune(b), 0);
    nap_ms(150);
    int64_t mid = wall_ms();
    nap_ms(150);
    th_sell(a, 100, 5);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    /* A bound that reaches back to between the two: the 12 older batches go, on both. */
    int64_t age = wall_ms() - mid;
    set_policy(a, 0, 0, age);
    set_policy(b, 0, 0, age);
    prune(a);
    prune(b);
    cr_assert_eq(bodies(a), 5);
    cr_assert_eq(bodies(b), 5);
    cr_assert_eq(th_int(b, "SELECT min(seq) FROM tsync_log", -1), 12);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(prune_policy, what_must_stay_stays)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    /* Our own batches that never left this database: the only copy of those sales. */
    th_sell(a, 0, 10);
    set_policy(a, 0, 1, 0);
    cr_assert_eq(prune(a), 0);
    cr_assert_eq(bodies(a), 10);
    /* Once handed on (here in a bundle), all but the newest may go. */
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_gt(prune(a), 0);
    cr_assert_eq(bodies(a), 1, "the newest batch of an origin stays");
    /* Batches whose row changes are parked here stay too. */
    th_exec(a, "CREATE TABLE extra(id TEXT PRIMARY KEY, v INTEGER)");
    cr_assert_eq(tsync_store_replicate(a, "extra", NULL, 0), 0, "%s", th_errmsg());
    th_sell(a, 100, 3);
    th_exec(a, "INSERT INTO extra VALUES('x', 1)"); /* seq 14: b lacks the table */
    th_seal(a);
    th_sell(a, 200, 5);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_gt(th_int(b, "SELECT count(*) FROM tsync_parked", 0), 0);
    int64_t pseq = th_int(b, "SELECT min(seq) FROM tsync_parked", -1);
    set_policy(b, 0, 1, 0);
    prune(b);
    cr_assert_eq(th_int(b, "SELECT min(seq) FROM tsync_log WHERE length(body) > 0", -1), pseq);
    /* Replicating the table applies the parked change from the batch kept. */
    th_exec(b, "CREATE TABLE extra(id TEXT PRIMARY KEY, v INTEGER)");
    cr_assert_eq(tsync_store_replicate(b, "extra", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(b, "SELECT v FROM extra WHERE id = 'x'", -1), 1);
    tsync_store_free(a);
    tsync_store_free(b);
}

/* Where tills acknowledge to a node here, our own batches stay until one of them acknowledged
 * them: handing them over is not holding them (the message may have been lost). */
Test(prune_policy, our_batches_stay_until_a_till_acknowledged_them)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    th_sell(a, 0, 4);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    ack(a, b); /* b holds a's 1..4 */
    th_sell(a, 100, 6);
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg()); /* handed over up to 10, not acknowledged */
    set_policy(a, 0, 1, 0);
    prune(a);
    cr_assert_eq(th_int(a, "SELECT min(seq) FROM tsync_log", -1), 4);
    cr_assert_eq(bodies(a), 6);
    ack(a, c);
    prune(a);
    cr_assert_eq(bodies(a), 1);
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

/* A till that acknowledged, then stayed away while the policy pruned past it: status names it,
 * batches cannot catch it up, a snapshot does, and then the report goes. */
Test(prune_policy, a_till_left_behind_shows_in_status_and_converges_by_snapshot)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    th_sell(a, 0, 5);
    cr_assert_eq(th_sync(a, c), 0, "%s", th_errmsg());
    th_exec(c, "UPDATE products SET price = 7 WHERE id = 'p000001'");
    th_exec(c, "DELETE FROM products WHERE id = 'p000002'");
    th_seal(c);
    ack(a, c); /* then c goes offline */
    th_sell(a, 100, 20);
    th_exec(a, "UPDATE products SET price = 9 WHERE id = 'p000003'");
    th_seal(a);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    ack(a, b); /* b is there and holds everything */
    set_policy(a, 5, 0, 0);
    prune(a);

    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, a), 0, "%s", th_errmsg());
    cr_assert_eq(st.log_behind, 1);
    cr_assert(tsync_store_status_attention(&st));
    tsync_store_status_clear(&st);
    char *js = NULL;
    cr_assert_eq(tsync_store_log_json(&js, a), 0, "%s", th_errmsg());
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    json_t *bh = json_array_get(json_object_get(o, "behind"), 0);
    char pk[65];
    tsync__hex(tsync__sync_public_key(c), 32, pk);
    cr_assert_str_eq(json_string_value(json_object_get(bh, "key")), pk);
    cr_assert_eq(json_integer_value(json_object_get(bh, "acked")), 5);
    cr_assert_eq(json_integer_value(json_object_get(bh, "horizon")), 21);
    cr_assert_eq(json_integer_value(json_object_get(json_object_get(o, "policy"), "max_batches")),
                 5);
    json_decref(o);

    /* c comes back: a snapshot from a, then c's own batch reaches a, and both show the same. */
    cr_assert_eq(catch_up(a, c), 1, "a snapshot, not batches");
    cr_assert_eq(catch_up(c, a), 0);
    cr_assert_str_eq(th_hash(a), th_hash(c));
    cr_assert_eq(th_int(a, "SELECT price FROM products WHERE id = 'p000001'", -1), 7);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM products WHERE id = 'p000002'", -1), 0);
    ack(a, c);
    st = (tsync_store_status)TSYNC_STORE_STATUS_INIT;
    cr_assert_eq(tsync_store_status_get(&st, a), 0, "%s", th_errmsg());
    cr_assert_eq(st.log_behind, 0);
    tsync_store_status_clear(&st);
    /* Batches go on from the snapshot. */
    th_sell(a, 300, 2);
    cr_assert_eq(catch_up(a, c), 0);
    cr_assert_str_eq(th_hash(a), th_hash(c));
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(c);
}

Test(prune_policy, options_of_an_unknown_version_are_refused)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_log_policy p = {TSYNC_LOG_POLICY_VERSION + 1, 1, 1, 1};
    cr_assert_eq(tsync_store_log_policy_set(a, &p), TSYNC_EVERSION);
    cr_assert(strstr(th_errmsg(), "tsync_log_policy"), "%s", th_errmsg());
    p.version = 0;
    cr_assert_eq(tsync_store_log_policy_get(&p, a), TSYNC_EVERSION);
    /* A version 1 status (before the log) is still filled, and nothing past it written. */
    struct {
        tsync_store_status st;
        uint8_t guard[64];
    } old;
    memset(&old, 0xab, sizeof old);
    old.st.version = 1;
    cr_assert_eq(tsync_store_status_get(&old.st, a), 0, "%s", th_errmsg());
    cr_assert_eq(old.st.held, 0);
    const uint8_t *tail = (const uint8_t *)&old.st + offsetof(tsync_store_status, log_batches);
    for (size_t i = 0; i < sizeof old.st - offsetof(tsync_store_status, log_batches); i++)
        cr_assert_eq(tail[i], 0xab);
    tsync_store_status_clear(&old.st);
    tsync_store_free(a);
}

/* ---------------------------------------------------------------- property */

#define NREP  4
#define NKEYS 24

static void random_write(tsync_store *s, uint64_t *rng)
{
    char sql[200];
    int k = (int)(th_rand(rng) % NKEYS);
    switch (th_rand(rng) % 5) {
    case 0:
    case 1:
        snprintf(sql, sizeof sql,
                 "INSERT INTO products VALUES('k%02d', 'n%d', %d, %d) ON CONFLICT(id) DO UPDATE "
                 "SET name = excluded.name, price = excluded.price",
                 k, (int)(th_rand(rng) % 100), (int)(th_rand(rng) % 1000),
                 (int)(th_rand(rng) % 10));
        break;
    case 2:
        snprintf(sql, sizeof sql, "UPDATE products SET price = %d WHERE id = 'k%02d'",
                 (int)(th_rand(rng) % 1000), k);
        break;
    case 3:
        snprintf(sql, sizeof sql, "UPDATE products SET stock = stock - 1 WHERE id = 'k%02d'", k);
        break;
    default:
        snprintf(sql, sizeof sql, "DELETE FROM products WHERE id = 'k%02d'", k);
    }
    th_exec(s, sql);
    th_seal(s);
}

/* Replicas write, exchange (batches, or a snapshot when the sender pruned past the receiver) and
 * prune with random small bounds; pruning never changes what a replica shows, and in the end every
 * replica, the late ones included, shows what a replica that merged everything and never pruned
 * shows. */
Test(prune_policy, pruning_never_changes_what_a_replica_shows, .timeout = 120)
{
    uint64_t seed = th_seed("prune_policy.pruning_never_changes_what_a_replica_shows");
    int snapshots = 0;
    for (int round = 0; round < 6; round++) {
        uint64_t rng = seed + (uint64_t)round * 0x9e3779b97f4a7c15ull;
        TH_AUTO_FREE char *d = th_tmpdir_auto();
        tsync_store *r[NREP], *ref = th_open_products(th_path(d, "ref.db"));
        for (int i = 0; i < NREP; i++) {
            char name[16];
            snprintf(name, sizeof name, "r%d.db", i);
            r[i] = th_open_products(th_path(d, name));
        }
        int late = (int)(th_rand(&rng) % NREP); /* stays away until the end */
        for (int step = 0; step < 120; step++) {
            int i = (int)(th_rand(&rng) % NREP), j = (int)(th_rand(&rng) % NREP);
            switch (th_rand(&rng) % 4) {
            case 0:
            case 1:
                random_write(r[i], &rng);
                break;
            case 2:
                if (i != j && i != late && j != late) snapshots += catch_up(r[i], r[j]);
                break;
            default: {
                char before[65];
                snprintf(before, sizeof before, "%s", th_hash(r[i]));
                set_policy(r[i], 1 + (int64_t)(th_rand(&rng) % 6),
                           th_rand(&rng) % 2 ? 1 + (int64_t)(th_rand(&rng) % 2000) : 0, 0);
                prune(r[i]);
                cr_assert_str_eq(th_hash(r[i]), before, "seed %llu round %d step %d",
                                 (unsigned long long)seed, round, step);
            }
            }
        }
        /* Everyone meets everyone (the late one too), then the reference takes it all. */
        for (int pass = 0; pass < 2; pass++)
            for (int i = 0; i < NREP; i++)
                for (int j = 0; j < NREP; j++)
                    if (i != j) snapshots += catch_up(r[i], r[j]);
        for (int i = 0; i < NREP; i++) catch_up(r[i], ref);
        for (int i = 0; i < NREP; i++)
            cr_assert_str_eq(th_hash(r[i]), th_hash(ref), "seed %llu round %d replica %d",
                             (unsigned long long)seed, round, i);
        for (int i = 0; i < NREP; i++) tsync_store_free(r[i]);
        tsync_store_free(ref);
    }
    cr_assert_gt(snapshots, 0, "the test reached no horizon");
}
