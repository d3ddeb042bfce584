/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_sync.c — the store's interface to the sync engine (store/sync.c): the
 * vector, run pieces a peer lacks (cut at signed batches near 1 MiB, from the right place,
 * budgets), acknowledgements and log pruning (nothing pruned until every member acknowledged, the
 * newest `keep` batches kept, a stub at the horizon, parked changes protected), and what a peer
 * behind the pruned horizon gets (TSYNC__SYNC_BEHIND; bundles refuse with a message), while a peer
 * at or past the horizon still gets batches and old duplicates merge as duplicates.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/sync.h"
#include "tests/lib/helpers.h"

TestSuite(store_sync, .fini = th_cleanup);

typedef struct {
    size_t pieces, batches, max_bytes;
    uint64_t next_seq;
    int contiguous;
} collect;

static int on_piece(void *ctx, const tsync__run_piece *p)
{
    collect *c = ctx;
    if (c->next_seq && p->first_seq != c->next_seq) c->contiguous = 0;
    c->next_seq = p->first_seq + p->n;
    c->pieces++;
    c->batches += p->n;
    if (p->bytes > c->max_bytes) c->max_bytes = p->bytes;
    cr_assert(p->sig && p->last && p->prev);
    return 0;
}

Test(store_sync, vector_and_pieces)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    th_sell(a, 0, 50);
    tsync__vv v;
    cr_assert_eq(tsync__sync_vv(a, &v), 0, "%s", th_errmsg());
    cr_assert_eq(v.n, 1);
    cr_assert_eq(v.e[0].seq, 50, "50 sales: %llu", (unsigned long long)v.e[0].seq);

    collect c = {0, 0, 0, 0, 1};
    int more = 0;
    cr_assert_eq(tsync__sync_runs(a, NULL, SIZE_MAX, on_piece, &c, &more), 0, "%s", th_errmsg());
    cr_assert_eq(c.batches, 50);
    cr_assert(c.contiguous);
    cr_assert_eq(more, 0);

    /* A peer holding 40 gets 10. */
    tsync__vv peer = {0};
    cr_assert_eq(tsync__vv_set(&peer, v.e[0].site, 40, NULL), 0);
    collect c2 = {0, 0, 0, 0, 1};
    cr_assert_eq(tsync__sync_runs(a, &peer, SIZE_MAX, on_piece, &c2, NULL), 0);
    cr_assert_eq(c2.batches, 10);
    /* A tiny budget stops after one piece and says there is more. */
    collect c3 = {0, 0, 0, 0, 1};
    cr_assert_eq(tsync__sync_runs(a, NULL, 1, on_piece, &c3, &more), 0);
    cr_assert_eq(c3.pieces, 1);
    cr_assert_eq(more, 1);
    tsync__vv_free(&peer);
    tsync__vv_free(&v);
    tsync_store_free(a);
}

Test(store_sync, pieces_are_cut_near_one_mib)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    /* ~3 MiB of batches: 300 batches of 10 KiB names. */
    char *big = malloc(10001);
    memset(big, 'x', 10000);
    big[10000] = 0;
    for (int i = 0; i < 300; i++) {
        char *sql = malloc(10200);
        snprintf(sql, 10200, "INSERT INTO products VALUES('b%04d', '%s', 1, 1)", i, big);
        th_exec(a, sql);
        free(sql);
        th_seal(a);
    }
    free(big);
    collect c = {0, 0, 0, 0, 1};
    cr_assert_eq(tsync__sync_runs(a, NULL, SIZE_MAX, on_piece, &c, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(c.batches, 300);
    cr_assert_geq(c.pieces, 3, "3 MiB in %zu pieces", c.pieces);
    cr_assert_leq(c.max_bytes, TSYNC__RUN_PIECE_BYTES + 20000, "piece of %zu bytes", c.max_bytes);
    tsync_store_free(a);
}

Test(store_sync, prune_waits_for_every_member_and_keeps_a_stub)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    th_sell(a, 0, 200);
    cr_assert_eq(th_sync(a, b), 0);
    tsync__vv bv;
    cr_assert_eq(tsync__sync_vv(b, &bv), 0);
    uint8_t members[2][32];
    memset(members, 0, sizeof members);
    memcpy(members[0], tsync__sync_public_key(b), 32);
    memset(members[1], 7, 32); /* a member that never acknowledged */
    int64_t before = th_int(a, "SELECT count(*) FROM tsync_log", -1);
    size_t pruned = 99;
    /* No acknowledgement at all: nothing. */
    cr_assert_eq(tsync__sync_prune(a, &members[0][0], 1, 10, &pruned), 0, "%s", th_errmsg());
    cr_assert_eq(pruned, 0);
    cr_assert_eq(tsync__sync_ack_put(a, members[0], &bv), 0, "%s", th_errmsg());
    /* One of two members acknowledged: nothing. */
    cr_assert_eq(tsync__sync_prune(a, &members[0][0], 2, 10, &pruned), 0);
    cr_assert_eq(pruned, 0);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_log", -1), before);
    /* Every member did: all but the newest 10 of each origin go, a stub at the horizon. */
    cr_assert_eq(tsync__sync_prune(a, &members[0][0], 1, 10, &pruned), 0);
    cr_assert_gt(pruned, 0);
    const uint8_t *site = tsync_store_site_id(a);
    (void)site;
    int64_t head = th_int(a, "SELECT max(seq) FROM tsync_log", -1);
    cr_assert_eq(head, 200);
    cr_assert_eq(th_int(a, "SELECT min(seq) FROM tsync_log", -1), 190, "horizon");
    cr_assert_eq(th_int(a, "SELECT length(body) FROM tsync_log WHERE seq=190", -1), 0, "stub");
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_log WHERE seq=190 AND hash IS NOT NULL", -1),
                 1);
    cr_assert_eq(th_int(a, "SELECT count(*) FROM tsync_log WHERE length(body) > 0", -1), 10);
    /* Content is untouched by pruning. */
    cr_assert_str_eq(th_hash(a), th_hash(b));

    /* b (at the head) keeps getting batches; duplicates of pruned batches stay duplicates. */
    th_sell(a, 1000, 5);
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    cr_assert_str_eq(th_hash(a), th_hash(b));
    uint8_t *all;
    size_t len;
    cr_assert_eq(tsync_store_bundle(&all, &len, b, NULL, NULL), 0, "%s", th_errmsg());
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    cr_assert_eq(tsync_store_merge(a, all, len, &r), 0, "%s", th_errmsg());
    cr_assert_eq(r.merged, 0);
    cr_assert_gt(r.duplicates, 0);
    tsync_merge_report_clear(&r);
    free(all);

    /* A new replica is behind the horizon: runs say so, a bundle refuses with a message. */
    tsync_store *c = th_open_products(th_path(d, "c.db"));
    tsync__vv cv;
    cr_assert_eq(tsync__sync_vv(c, &cv), 0);
    collect col = {0, 0, 0, 0, 1};
    int rc = tsync__sync_runs(a, &cv, SIZE_MAX, on_piece, &col, NULL);
    cr_assert_eq(rc, TSYNC__SYNC_BEHIND, "got %d", rc);
    char *state;
    cr_assert_eq(tsync_store_state_json(&state, c), 0);
    uint8_t *bun = NULL;
    rc = tsync_store_bundle(&bun, &len, a, state, NULL);
    cr_assert_eq(rc, TSYNC_ENOTFOUND);
    cr_assert(strstr(th_errmsg(), "pruned") && strstr(th_errmsg(), "snapshot"), "%s", th_errmsg());
    free(state);
    tsync__vv_free(&cv);
    tsync__vv_free(&bv);
    tsync_store_free(c);
    tsync_store_free(a);
    tsync_store_free(b);
}

Test(store_sync, prune_keeps_batches_of_parked_changes)
{
    TH_AUTO_FREE char *d = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(d, "a.db"));
    th_exec(a, "CREATE TABLE extras(id TEXT PRIMARY KEY, note TEXT)");
    cr_assert_eq(tsync_store_replicate(a, "extras", NULL, 0), 0);
    th_sell(a, 0, 30);
    th_exec(a, "INSERT INTO extras VALUES('e1', 'kept')");
    th_seal(a);
    th_sell(a, 100, 30);
    /* b lacks the extras table: that change is parked at b, so b must keep its batch. */
    tsync_store *b = th_open_products(th_path(d, "b.db"));
    cr_assert_eq(th_sync(a, b), 0, "%s", th_errmsg());
    int64_t pseq = th_int(b, "SELECT min(seq) FROM tsync_parked", -1);
    cr_assert_gt(pseq, 0, "a parked change");
    tsync__vv av;
    cr_assert_eq(tsync__sync_vv(a, &av), 0);
    uint8_t m[32];
    memcpy(m, tsync__sync_public_key(a), 32);
    cr_assert_eq(tsync__sync_ack_put(b, m, &av), 0);
    size_t pruned = 0;
    cr_assert_eq(tsync__sync_prune(b, m, 1, 1, &pruned), 0, "%s", th_errmsg());
    cr_assert_gt(pruned, 0);
    cr_assert_eq(th_int(b,
                        "SELECT count(*) FROM tsync_log l JOIN tsync_parked p ON "
                        "l.site=p.site AND l.seq=p.seq WHERE length(l.body) > 0",
                        -1),
                 th_int(b, "SELECT count(*) FROM tsync_parked", -1),
                 "every parked change still has its batch body");
    /* ... so replicating the table later still brings the row. */
    th_exec(b, "CREATE TABLE extras(id TEXT PRIMARY KEY, note TEXT)");
    cr_assert_eq(tsync_store_replicate(b, "extras", NULL, 0), 0, "%s", th_errmsg());
    char *note = th_text(b, "SELECT note FROM extras WHERE id='e1'");
    cr_assert(note && !strcmp(note, "kept"), "parked row after pruning: %s",
              note ? note : "(none)");
    free(note);
    tsync__vv_free(&av);
    tsync_store_free(a);
    tsync_store_free(b);
}
