/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_horizon.c — peers below the pruned horizon (store/sync.c, store/bundle_io.c): a
 * peer whose vector stops at a batch that pruning deleted (a till restored from an old backup,
 * one that was offline while the others pruned) is told it needs a snapshot
 * (TSYNC__SYNC_BEHIND), exactly like a new till; so is a peer whose head falls in the hole a
 * snapshot leaves in a log that stopped short of it; a bundle for such a state is refused with
 * one line that says what to do; and a real gap in a log is still reported as corruption.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/snapshot.h"
#include "store/sync.h"
#include "tests/lib/helpers.h"

TestSuite(horizon, .fini = th_cleanup);

static int count_piece(void *ctx, const tsync__run_piece *p)
{
    *(size_t *)ctx += p->n;
    return 0;
}

/* What tsync__sync_runs says to a peer holding what `peer` holds. */
static int runs_for(tsync_store *from, tsync_store *peer)
{
    tsync__vv pv;
    cr_assert_eq(tsync__sync_vv(peer, &pv), 0, "%s", th_errmsg());
    size_t n = 0;
    int rc = tsync__sync_runs(from, &pv, SIZE_MAX, count_piece, &n, NULL);
    tsync__vv_free(&pv);
    return rc;
}

/* from acknowledges to `to` everything it holds, and `to` prunes to the newest `keep` batches. */
static void ack_and_prune(tsync_store *to, tsync_store *member, uint64_t keep)
{
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(member, &v), 0);
    uint8_t pk[TSYNC__PK_BYTES];
    memcpy(pk, tsync__sync_public_key(member), sizeof pk);
    cr_assert_eq(tsync__sync_ack_put(to, pk, &v), 0, "%s", th_errmsg());
    tsync__vv_free(&v);
    size_t pruned = 0;
    cr_assert_eq(tsync__sync_prune(to, pk, 1, keep, &pruned), 0, "%s", th_errmsg());
    cr_assert_gt(pruned, 0);
}

/* A bundle of what `peer` lacks, from `from`: the return code (the bundle is freed). */
static int bundle_for(tsync_store *from, tsync_store *peer)
{
    char *state = NULL;
    cr_assert_eq(tsync_store_state_json(&state, peer), 0);
    uint8_t *bun = NULL;
    size_t len = 0;
    int rc = tsync_store_bundle(&bun, &len, from, state, NULL);
    free(state);
    free(bun);
    return rc;
}

typedef struct {
    uint8_t *chunk[64];
    size_t len[64];
    size_t n;
} chunks;

static int keep_chunk(void *ctx, const uint8_t *c, size_t len)
{
    chunks *k = ctx;
    cr_assert_lt(k->n, 64);
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
    cr_assert_eq(tsync__snap_export(from, TSYNC__SNAP_CHUNK_BYTES, keep_chunk, &k, &vv), 0, "%s",
                 th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync__snap_import(to, (const uint8_t *const *)k.chunk, k.len, k.n, &vv, &r), 0,
                 "%s", th_errmsg());
    tsync_merge_report_clear(&r);
    tsync__vv_free(&vv);
    for (size_t i = 0; i < k.n; i++) free(k.chunk[i]);
}

/* The restored till: its head of an origin is a batch the others deleted when they pruned. */
Test(horizon, a_peer_whose_head_was_pruned_away_gets_a_snapshot)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_store *old = th_open_products(th_path(d, "old.db"));
    th_sell(a, 0, 5);
    cr_assert_eq(th_sync(a, old), 0, "%s", th_errmsg()); /* the state of the backup: a up to 5 */
    th_sell(a, 100, 25);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    ack_and_prune(a, b, 3); /* a keeps its newest 3 batches, a stub at 27 */
    cr_assert_eq(th_int(a, "SELECT min(seq) FROM tsync_log", -1), 27);

    int rc = runs_for(a, old);
    cr_assert_eq(rc, TSYNC__SYNC_BEHIND, "rc %d: %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), "snapshot"), "%s", th_errmsg());

    /* A bundle cannot do it: one line that says what does. */
    rc = bundle_for(a, old);
    cr_assert_eq(rc, TSYNC_ENOTFOUND, "rc %d: %s", rc, th_errmsg());
    const char *m = th_errmsg();
    cr_assert(!strchr(m, '\n') && strstr(m, "pruned") && strstr(m, "snapshot") &&
                  strstr(m, "enrolled") && strstr(m, "backup") && !strstr(m, "lacks batch"),
              "%s", m);
    /* ... while a state at the horizon still gets its batches. */
    cr_assert_eq(bundle_for(a, b), 0, "%s", th_errmsg());

    /* The snapshot brings everything, and batches go on from there. */
    give_snapshot(a, old);
    cr_assert_str_eq(th_hash(old), th_hash(a));
    cr_assert_eq(runs_for(a, old), 0, "%s", th_errmsg());
    th_sell(a, 200, 2);
    cr_assert_eq(th_sync(a, old), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(old), th_hash(a));
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(old);
}

/* A replica that took a snapshot over a log that stopped short of it holds a's bodies 1..5 and a
 * stub at 30: a peer whose head lies in between needs a snapshot too, it is not a corrupt log. */
Test(horizon, a_peer_in_the_hole_a_snapshot_left_gets_a_snapshot)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    tsync_store *r = th_open_products(th_path(d, "r.db"));
    tsync_store *mid = th_open_products(th_path(d, "mid.db"));
    th_sell(a, 0, 5);
    cr_assert_eq(th_sync(a, r), 0, "%s", th_errmsg());
    th_sell(a, 100, 5);
    cr_assert_eq(th_sync(a, mid), 0, "%s", th_errmsg()); /* mid: a up to 10 */
    th_sell(a, 200, 20);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    ack_and_prune(a, b, 3);
    give_snapshot(a, r);
    cr_assert_eq(th_int(r, "SELECT count(*) FROM tsync_log WHERE length(body) = 0", -1), 1,
                 "r holds a stub at the snapshot's head");

    int rc = runs_for(r, mid);
    cr_assert_eq(rc, TSYNC__SYNC_BEHIND, "rc %d: %s", rc, th_errmsg());
    rc = bundle_for(r, mid);
    cr_assert_eq(rc, TSYNC_ENOTFOUND, "rc %d: %s", rc, th_errmsg());
    give_snapshot(r, mid);
    cr_assert_str_eq(th_hash(mid), th_hash(a));
    tsync_store_free(a);
    tsync_store_free(b);
    tsync_store_free(r);
    tsync_store_free(mid);
}

/* A batch missing from the middle of a log with no stub above it is damage, not a horizon. */
Test(horizon, a_gap_without_a_stub_is_still_corruption)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *p = th_open_products(th_path(d, "p.db"));
    th_sell(a, 0, 4);
    cr_assert_eq(th_sync(a, p), 0, "%s", th_errmsg()); /* p: a up to 4 */
    th_sell(a, 100, 6);
    th_exec(a, "DELETE FROM tsync_log WHERE seq = 4");
    int rc = runs_for(a, p);
    cr_assert_eq(rc, TSYNC_ECORRUPT, "rc %d: %s", rc, th_errmsg());
    cr_assert(strstr(th_errmsg(), "gap"), "%s", th_errmsg());
    tsync_store_free(a);
    tsync_store_free(p);
}
