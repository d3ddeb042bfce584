/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/store/test_store_badinput.c — bad input to tsync_store_merge (store/merge.c): flipped bytes
 * in compressed and uncompressed bundles (headers, batch bodies, signatures), truncation at every
 * length, runs signed with the wrong key, broken hash chains, forks, and batches this database
 * cannot apply yet (missing table or column).
 *
 * The rule under test (DESIGN.md, "Durability and failure rules"): bad input gets a clear one-line
 * error and changes nothing. "Nothing" is checked as the content hash, the state JSON (clock,
 * vector) and the row counts of every metadata table. A fork is the one refusal that does change
 * something: it is recorded with its proof and freezes the origin.
 *
 * Uncompressed and hand-made bundles are built with crdt's bundle writer from batch bodies taken
 * verbatim from the origin's tsync_log; forged batches are signed with the origin's own secret
 * key, read from its store object through store/internal.h.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "store/internal.h"
#include "tests/lib/helpers.h"

TestSuite(store_badinput, .fini = th_cleanup);

static void push(tsync_store *from, tsync_store *to)
{
    int rc = th_sync(from, to);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
}

/* ---------------------------------------------------------------- "changes nothing" */

static const char *const COUNTED[] = {
    "SELECT count(*) FROM tsync_log",       "SELECT count(*) FROM tsync_held",
    "SELECT count(*) FROM tsync_parked",    "SELECT count(*) FROM tsync_forks",
    "SELECT count(*) FROM tsync_conflicts", "SELECT count(*) FROM tsync_sites",
    "SELECT count(*) FROM tsync_pending",
};

typedef struct {
    char hash[65];
    char *state;
    int64_t counts[sizeof COUNTED / sizeof COUNTED[0]];
} snapshot;

static void snap_take(tsync_store *s, snapshot *out)
{
    strcpy(out->hash, th_hash(s));
    out->state = NULL;
    cr_assert_eq(tsync_store_state_json(&out->state, s), 0, "state: %s", th_errmsg());
    for (size_t i = 0; i < sizeof COUNTED / sizeof COUNTED[0]; i++)
        out->counts[i] = th_int(s, COUNTED[i], -1);
}

static void snap_free(snapshot *s)
{
    free(s->state);
    s->state = NULL;
}

static void snap_assert_same(tsync_store *s, const snapshot *before, const char *what)
{
    snapshot now;
    snap_take(s, &now);
    cr_assert_str_eq(now.hash, before->hash, "%s: the rows changed", what);
    cr_assert_str_eq(now.state, before->state, "%s: the state changed", what);
    for (size_t i = 0; i < sizeof COUNTED / sizeof COUNTED[0]; i++)
        cr_assert_eq(now.counts[i], before->counts[i], "%s: %s went from %lld to %lld", what,
                     COUNTED[i], (long long)before->counts[i], (long long)now.counts[i]);
    snap_free(&now);
}

/* Merges bad and checks: refused (a negative code, and `code` exactly when it is not 0), one
 * line that starts as a refusal and contains `needle` (when not NULL), nothing changed. */
static int expect_refused(tsync_store *s, const snapshot *before, const uint8_t *b, size_t len,
                          int code, const char *needle, const char *what)
{
    tsync_error_clear();
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(s, b, len, &rep);
    cr_assert_lt(rc, 0, "%s: accepted", what);
    if (code) cr_assert_eq(rc, code, "%s: code %d (%s), expected %d", what, rc, th_errmsg(), code);
    cr_assert_geq(rep.refused, 1, "%s: report.refused is 0", what);
    cr_assert_eq(rep.merged, 0, "%s", what);
    tsync_merge_report_clear(&rep);
    const tsync_error *e = tsync_error_last();
    cr_assert_not_null(e, "%s: no error recorded", what);
    cr_assert_eq(e->code, rc, "%s", what);
    cr_assert(e->message && strlen(e->message) > 20, "%s: no message", what);
    cr_assert_null(strchr(e->message, '\n'), "%s: message is not one line", what);
    cr_assert(strstr(e->message, "refused") != NULL, "%s: message '%s' does not say refused", what,
              e->message);
    if (needle)
        cr_assert(strstr(e->message, needle) != NULL, "%s: message '%s' does not name '%s'", what,
                  e->message, needle);
    snap_assert_same(s, before, what);
    return rc;
}

static int expect_accepted(tsync_store *s, const uint8_t *b, size_t len, tsync_merge_report *rep)
{
    tsync_merge_report init = TSYNC_MERGE_REPORT_INIT;
    *rep = init;
    int rc = tsync_store_merge(s, b, len, rep);
    cr_assert_eq(rc, 0, "merge: %s", th_errmsg());
    return rc;
}

/* ---------------------------------------------------------------- building bundles by hand */

typedef struct {
    uint8_t *body;
    size_t len;
    uint8_t hash[TSYNC__HASH_BYTES];
    uint8_t sig[TSYNC__SIG_BYTES];
    int has_sig;
} logent;

/* The origin's own batches 1..n from its log (n returned). */
static int load_log(tsync_store *s, logent *out, int max)
{
    sqlite3_stmt *st;
    cr_assert_eq(sqlite3_prepare_v2(s->db,
                                    "SELECT seq, body, hash, sig FROM tsync_log WHERE "
                                    "site=?1 ORDER BY seq",
                                    -1, &st, NULL),
                 SQLITE_OK);
    sqlite3_bind_int64(st, 1, s->local_idx);
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        cr_assert_lt(n, max);
        cr_assert_eq(sqlite3_column_int64(st, 0), n + 1, "log of the origin has a gap");
        logent *e = &out[n++];
        e->len = (size_t)sqlite3_column_bytes(st, 1);
        e->body = malloc(e->len);
        memcpy(e->body, sqlite3_column_blob(st, 1), e->len);
        memcpy(e->hash, sqlite3_column_blob(st, 2), TSYNC__HASH_BYTES);
        e->has_sig = sqlite3_column_bytes(st, 3) == TSYNC__SIG_BYTES;
        if (e->has_sig) memcpy(e->sig, sqlite3_column_blob(st, 3), TSYNC__SIG_BYTES);
    }
    sqlite3_finalize(st);
    return n;
}

static void free_log(logent *l, int n)
{
    for (int i = 0; i < n; i++) free(l[i].body);
}

static void bsite_of(tsync_store *s, tsync__bsite *out)
{
    memcpy(out->site, s->site, TSYNC__SITE_BYTES);
    memcpy(out->pk, s->pk, TSYNC__PK_BYTES);
    memcpy(out->inc, s->inc, TSYNC__INC_BYTES);
}

/* One run of `origin`: bodies `bodies[0..n)` (indexes into log), claimed to start at first_seq
 * after prev, ending with sig. */
static uint8_t *one_run(tsync_store *origin, const logent *log, const int *bodies, int n,
                        uint64_t first_seq, const uint8_t prev[TSYNC__HASH_BYTES],
                        const uint8_t sig[TSYNC__SIG_BYTES], bool compress, size_t *len)
{
    tsync__bundle_writer *w = tsync__bundle_writer_new();
    cr_assert_not_null(w);
    tsync__bsite bs;
    bsite_of(origin, &bs);
    uint32_t si;
    cr_assert_eq(tsync__bundle_writer_site(w, &bs, &si), 0);
    cr_assert_eq(tsync__bundle_writer_run(w, si, first_seq, prev), 0);
    for (int i = 0; i < n; i++)
        cr_assert_eq(tsync__bundle_writer_body(w, log[bodies[i]].body, log[bodies[i]].len), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(w, sig), 0);
    uint8_t *out = NULL;
    cr_assert_eq(tsync__bundle_writer_finish(w, compress, &out, len), 0);
    tsync__bundle_writer_free(w);
    return out;
}

/* The chained hash over log[bodies[i]] from prev, as a receiver computes it. */
static void chain_hash(const logent *log, const int *bodies, int n, const uint8_t *prev,
                       uint8_t out[TSYNC__HASH_BYTES])
{
    uint8_t h[TSYNC__HASH_BYTES];
    memcpy(h, prev, sizeof h);
    for (int i = 0; i < n; i++) tsync__batch_hash(h, log[bodies[i]].body, log[bodies[i]].len, h);
    memcpy(out, h, sizeof h);
}

/* ---------------------------------------------------------------- a common setup */

/* origin A with three batches; receiver R that already has A's batch 1 and a row of its own. */
typedef struct {
    char *dir;
    tsync_store *a, *r;
    logent log[8];
    int nlog;
} world;

static void world_open(world *w)
{
    w->dir = th_tmpdir_auto();
    w->a = th_open_products(th_path(w->dir, "a.db"));
    w->r = th_open_products(th_path(w->dir, "r.db"));
    th_exec(w->r, "INSERT INTO products VALUES('r1', 'own row', 5, 5)");
    th_seal(w->r);
    th_exec(w->a, "INSERT INTO products VALUES('p1', 'apple', 100, 10)");
    th_seal(w->a);
    push(w->a, w->r);
    th_exec(w->a, "UPDATE products SET price = 110, stock = stock - 1 WHERE id='p1'");
    th_seal(w->a);
    th_exec(w->a, "INSERT INTO products VALUES('p2', 'pear', 80, 4)");
    th_seal(w->a);
    w->nlog = load_log(w->a, w->log, 8);
    cr_assert_eq(w->nlog, 3);
}

static void world_close(world *w)
{
    free_log(w->log, w->nlog);
    tsync_store_free(w->a);
    tsync_store_free(w->r);
    th_rmdir(w->dir);
    free(w->dir);
}

/* The run R lacks (A's batches 2..3), by hand. */
static uint8_t *world_tail(world *w, bool compress, size_t *len)
{
    static const int idx[] = {1, 2};
    return one_run(w->a, w->log, idx, 2, 2, w->log[0].hash, w->log[2].sig, compress, len);
}

/* After the refusals, the good bundle still goes in: the refusals were not for another reason. */
static void world_finish_with(world *w, const uint8_t *good, size_t len)
{
    tsync_merge_report rep;
    expect_accepted(w->r, good, len, &rep);
    cr_assert_eq(rep.merged, 2);
    tsync_merge_report_clear(&rep);
    push(w->r, w->a);
    cr_assert_str_eq(th_hash(w->r), th_hash(w->a));
    cr_assert_eq(th_int(w->r, "SELECT price FROM products WHERE id='p1'", -1), 110);
    cr_assert_eq(th_int(w->r, "SELECT stock FROM products WHERE id='p2'", -1), 4);
}

/* ---------------------------------------------------------------- flipped bytes */

static const uint8_t FLIPS[] = {0x01, 0x80, 0xff};

/* The decompressed payload of a compressed bundle image (zstd called directly, independently of
 * the code under test), or NULL when it does not decompress. */
static uint8_t *unzstd(const uint8_t *img, size_t len, size_t *outlen)
{
    if (len <= 10) return NULL;
    size_t cap = 1 << 20;
    uint8_t *out = malloc(cap);
    size_t n = ZSTD_decompress(out, cap, img + 10, len - 10);
    if (ZSTD_isError(n)) {
        free(out);
        return NULL;
    }
    *outlen = n;
    return out;
}

/* Flips every byte of good three ways; each must be refused and change nothing. For a compressed
 * image the only exception is a flip zstd itself ignores (a reserved bit of a block header):
 * the payload, and so every batch and signature, is then byte-identical to the original, so
 * nothing was tampered with. Those are counted, not merged, and must stay rare. */
static void flip_every_byte(world *w, const uint8_t *good, size_t len, const char *kind)
{
    snapshot before;
    snap_take(w->r, &before);
    uint8_t *bad = malloc(len);
    size_t plain_len = 0, same = 0;
    uint8_t *plain = (good[9] & 1) ? unzstd(good, len, &plain_len) : NULL;
    for (size_t pos = 0; pos < len; pos++)
        for (size_t f = 0; f < sizeof FLIPS; f++) {
            memcpy(bad, good, len);
            bad[pos] ^= FLIPS[f];
            char what[96];
            snprintf(what, sizeof what, "%s bundle, byte %zu of %zu xor 0x%02x", kind, pos, len,
                     FLIPS[f]);
            if (plain && pos >= 10) {
                size_t n = 0;
                uint8_t *p = unzstd(bad, len, &n);
                int identical = p && n == plain_len && memcmp(p, plain, n) == 0;
                free(p);
                if (identical) {
                    cr_log_info("%s: zstd ignores this flip; payload identical", what);
                    same++;
                    continue;
                }
            }
            expect_refused(w->r, &before, bad, len, 0, NULL, what);
        }
    cr_assert_leq(same, 3, "%zu flips left the payload identical", same);
    free(plain);
    free(bad);
    snap_free(&before);
}

Test(store_badinput, flipped_byte_in_compressed_bundle_is_refused)
{
    world w;
    world_open(&w);
    /* The bundle the API writes (zstd with a checksum) for a peer in R's state. */
    char *since = NULL;
    cr_assert_eq(tsync_store_state_json(&since, w.r), 0);
    uint8_t *good = NULL;
    size_t len = 0, nb = 0;
    cr_assert_eq(tsync_store_bundle(&good, &len, w.a, since, &nb), 0, "%s", th_errmsg());
    cr_assert_eq(nb, 2);
    cr_assert_eq(good[9] & 1, 1, "expected a compressed bundle");
    flip_every_byte(&w, good, len, "compressed");
    world_finish_with(&w, good, len);
    free(good);
    free(since);
    world_close(&w);
}

Test(store_badinput, flipped_byte_in_uncompressed_bundle_is_refused)
{
    /* Uncompressed, a flip lands directly in the sites, the run header, a batch body or the
     * signature, where only the hash chain and the signature can catch it. */
    world w;
    world_open(&w);
    size_t len;
    uint8_t *good = world_tail(&w, false, &len);
    cr_assert_eq(good[9] & 1, 0);
    flip_every_byte(&w, good, len, "uncompressed");
    world_finish_with(&w, good, len);
    free(good);
    world_close(&w);
}

Test(store_badinput, flipped_byte_inside_bodies_and_signature_names_the_problem)
{
    world w;
    world_open(&w);
    size_t len;
    uint8_t *good = world_tail(&w, false, &len);
    snapshot before;
    snap_take(w.r, &before);
    uint8_t *bad = malloc(len);

    /* The signature is the last thing in a one-run bundle. */
    cr_assert_eq(memcmp(good + len - TSYNC__SIG_BYTES, w.log[2].sig, TSYNC__SIG_BYTES), 0);
    for (size_t pos = len - TSYNC__SIG_BYTES; pos < len; pos++) {
        memcpy(bad, good, len);
        bad[pos] ^= 0x10;
        char what[64];
        snprintf(what, sizeof what, "signature byte %zu", pos - (len - TSYNC__SIG_BYTES));
        expect_refused(w.r, &before, bad, len, TSYNC_EBADSIG, "signature", what);
    }
    /* Inside each body: refused as malformed, or, when the body still decodes, by the signature
     * over the hash chain. Either way the message names the batch's site. */
    char site[13];
    tsync__hex(w.a->site, 6, site);
    for (int b = 1; b <= 2; b++) {
        const uint8_t *at = memmem(good, len, w.log[b].body, w.log[b].len);
        cr_assert_not_null(at, "body %d not found in the bundle", b + 1);
        size_t off = (size_t)(at - good);
        int sigs = 0;
        for (size_t k = 0; k < w.log[b].len; k++) {
            memcpy(bad, good, len);
            bad[off + k] ^= 0x01;
            char what[64];
            snprintf(what, sizeof what, "body of batch %d, byte %zu", b + 1, k);
            int rc = expect_refused(w.r, &before, bad, len, 0, site, what);
            cr_assert(rc == TSYNC_EBADSIG || rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION ||
                          rc == TSYNC_ECHAIN,
                      "%s: unexpected code %d: %s", what, rc, th_errmsg());
            if (rc == TSYNC_EBADSIG) sigs++;
        }
        /* Most bytes of a body are values: those flips must reach the signature check. */
        cr_assert_gt(sigs, 0, "no flip in body %d was caught by the signature", b + 1);
    }
    free(bad);
    snap_free(&before);
    world_finish_with(&w, good, len);
    free(good);
    world_close(&w);
}

/* ---------------------------------------------------------------- truncation */

static void truncate_every_length(world *w, const uint8_t *good, size_t len, const char *kind)
{
    snapshot before;
    snap_take(w->r, &before);
    for (size_t n = 0; n < len; n++) {
        /* A copy of exactly n bytes, so a read past the end is caught by ASan. */
        uint8_t *cut = malloc(n ? n : 1);
        memcpy(cut, good, n);
        char what[96];
        snprintf(what, sizeof what, "%s bundle cut to %zu of %zu bytes", kind, n, len);
        int rc = expect_refused(w->r, &before, cut, n, 0, NULL, what);
        cr_assert(rc == TSYNC_ECORRUPT || rc == TSYNC_EVERSION, "%s: code %d: %s", what, rc,
                  th_errmsg());
        free(cut);
    }
    snap_free(&before);
}

Test(store_badinput, truncated_bundle_every_length_is_refused)
{
    world w;
    world_open(&w);
    size_t zlen, plen;
    uint8_t *z = world_tail(&w, true, &zlen);
    uint8_t *p = world_tail(&w, false, &plen);
    truncate_every_length(&w, z, zlen, "compressed");
    truncate_every_length(&w, p, plen, "uncompressed");
    /* NULL with a length, and garbage of the right size. */
    snapshot before;
    snap_take(w.r, &before);
    expect_refused(w.r, &before, NULL, 0, TSYNC_ECORRUPT, "bundle", "NULL bundle");
    uint8_t junk[256];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = (uint8_t)(i * 37 + 11);
    expect_refused(w.r, &before, junk, sizeof junk, TSYNC_ECORRUPT, "bundle", "junk");
    snap_free(&before);
    world_finish_with(&w, p, plen);
    free(z);
    free(p);
    world_close(&w);
}

/* ---------------------------------------------------------------- signatures */

Test(store_badinput, run_signed_with_another_key_is_refused)
{
    world w;
    world_open(&w);
    tsync_store *m = th_open_products(th_path(w.dir, "mallory.db"));
    static const int idx[] = {1, 2};
    uint8_t h[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    chain_hash(w.log, idx, 2, w.log[0].hash, h);
    /* The right message (A's site, seq 3, the right chain hash) signed with Mallory's key. */
    tsync__batch_sign(m->sk, w.a->site, 3, h, sig);
    snapshot before;
    snap_take(w.r, &before);
    size_t len;
    uint8_t *bad = one_run(w.a, w.log, idx, 2, 2, w.log[0].hash, sig, true, &len);
    expect_refused(w.r, &before, bad, len, TSYNC_EBADSIG, "signature", "signed by another key");
    free(bad);

    /* Nor does swapping Mallory's public key in for A's, so that the signature verifies: the
     * site id is bound to the key. (The writer refuses such a site, so the bytes are patched.) */
    bad = one_run(w.a, w.log, idx, 2, 2, w.log[0].hash, sig, false, &len);
    uint8_t *pk = memmem(bad, len, w.a->pk, TSYNC__PK_BYTES);
    cr_assert_not_null(pk);
    memcpy(pk, m->pk, TSYNC__PK_BYTES);
    expect_refused(w.r, &before, bad, len, TSYNC_ECORRUPT, "site", "another key in the site");
    free(bad);

    /* A signature of an earlier batch does not cover a longer run. */
    bad = one_run(w.a, w.log, idx, 2, 2, w.log[0].hash, w.log[1].sig, false, &len);
    expect_refused(w.r, &before, bad, len, TSYNC_EBADSIG, "signature", "signature of batch 2");
    free(bad);
    snap_free(&before);
    tsync_store_free(m);
    world_close(&w);
}

Test(store_badinput, one_bad_run_refuses_the_whole_bundle)
{
    /* A bundle with A's good run and a run of another origin with a bad signature: refused
     * whole, so A's good batches are not applied either. */
    world w;
    world_open(&w);
    tsync_store *c = th_open_products(th_path(w.dir, "c.db"));
    th_exec(c, "INSERT INTO products VALUES('c1', 'from c', 1, 1)");
    th_seal(c);
    logent clog[4];
    int nc = load_log(c, clog, 4);
    cr_assert_eq(nc, 1);
    uint8_t badsig[TSYNC__SIG_BYTES];
    memcpy(badsig, clog[0].sig, sizeof badsig);
    badsig[7] ^= 0x04;

    tsync__bundle_writer *bw = tsync__bundle_writer_new();
    tsync__bsite sa, sc;
    bsite_of(w.a, &sa);
    bsite_of(c, &sc);
    uint32_t ia, ic;
    static const uint8_t zero[TSYNC__HASH_BYTES];
    cr_assert_eq(tsync__bundle_writer_site(bw, &sa, &ia), 0);
    cr_assert_eq(tsync__bundle_writer_site(bw, &sc, &ic), 0);
    cr_assert_eq(tsync__bundle_writer_run(bw, ia, 2, w.log[0].hash), 0);
    for (int i = 1; i < 3; i++)
        cr_assert_eq(tsync__bundle_writer_body(bw, w.log[i].body, w.log[i].len), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(bw, w.log[2].sig), 0);
    cr_assert_eq(tsync__bundle_writer_run(bw, ic, 1, zero), 0);
    cr_assert_eq(tsync__bundle_writer_body(bw, clog[0].body, clog[0].len), 0);
    cr_assert_eq(tsync__bundle_writer_end_run(bw, badsig), 0);
    uint8_t *bad;
    size_t len;
    cr_assert_eq(tsync__bundle_writer_finish(bw, true, &bad, &len), 0);
    tsync__bundle_writer_free(bw);

    snapshot before;
    snap_take(w.r, &before);
    char csite[13];
    tsync__hex(c->site, 6, csite);
    expect_refused(w.r, &before, bad, len, TSYNC_EBADSIG, csite, "one bad run");
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM products WHERE id='p2'", -1), 0);
    snap_free(&before);
    free(bad);
    free_log(clog, nc);
    tsync_store_free(c);
    world_close(&w);
}

/* ---------------------------------------------------------------- hash chains */

Test(store_badinput, run_with_a_batch_missing_in_the_middle_is_refused)
{
    world w;
    world_open(&w);
    /* R has nothing of A's beyond batch 1 here; a fresh receiver has nothing at all. */
    tsync_store *f = th_open_products(th_path(w.dir, "fresh.db"));
    th_exec(f, "INSERT INTO products VALUES('f1', 'fresh', 1, 1)");
    th_seal(f);
    static const uint8_t zero[TSYNC__HASH_BYTES];
    static const int gap[] = {0, 2};
    snapshot before;
    snap_take(f, &before);
    size_t len;

    /* Batches 1 and 3 as a run "1..2", with batch 3's real signature. */
    uint8_t *bad = one_run(w.a, w.log, gap, 2, 1, zero, w.log[2].sig, false, &len);
    expect_refused(f, &before, bad, len, TSYNC_ECHAIN, "chain", "batch 2 missing");
    free(bad);

    /* The same, re-signed by the origin itself over the shortened chain: the signature is
     * valid, but each body names its own seq, so the gap still shows. */
    uint8_t h[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    chain_hash(w.log, gap, 2, zero, h);
    tsync__batch_sign(w.a->sk, w.a->site, 2, h, sig);
    bad = one_run(w.a, w.log, gap, 2, 1, zero, sig, true, &len);
    expect_refused(f, &before, bad, len, TSYNC_ECHAIN, "chain", "batch 2 missing, re-signed");
    free(bad);

    /* Claiming the run starts at 2 after batch 1 (the receiver R's position), without 2. */
    static const int only3[] = {2};
    snapshot rb;
    snap_take(w.r, &rb);
    bad = one_run(w.a, w.log, only3, 1, 2, w.log[0].hash, w.log[2].sig, false, &len);
    expect_refused(w.r, &rb, bad, len, TSYNC_ECHAIN, "chain", "batch 3 presented as 2");
    free(bad);
    snap_free(&rb);
    snap_free(&before);
    tsync_store_free(f);
    world_close(&w);
}

Test(store_badinput, run_with_two_batches_swapped_is_refused)
{
    world w;
    world_open(&w);
    snapshot before;
    snap_take(w.r, &before);
    static const int swapped[] = {2, 1};
    size_t len;
    uint8_t *bad = one_run(w.a, w.log, swapped, 2, 2, w.log[0].hash, w.log[2].sig, false, &len);
    expect_refused(w.r, &before, bad, len, TSYNC_ECHAIN, "chain", "batches 2 and 3 swapped");
    free(bad);
    /* Swapped and re-signed by the origin over the swapped chain. */
    uint8_t h[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    chain_hash(w.log, swapped, 2, w.log[0].hash, h);
    tsync__batch_sign(w.a->sk, w.a->site, 3, h, sig);
    bad = one_run(w.a, w.log, swapped, 2, 2, w.log[0].hash, sig, true, &len);
    expect_refused(w.r, &before, bad, len, TSYNC_ECHAIN, "chain", "swapped, re-signed");
    free(bad);
    /* The right bodies after the wrong previous hash: the signature does not verify. */
    static const int idx[] = {1, 2};
    uint8_t wrongprev[TSYNC__HASH_BYTES];
    memcpy(wrongprev, w.log[0].hash, sizeof wrongprev);
    wrongprev[0] ^= 1;
    bad = one_run(w.a, w.log, idx, 2, 2, wrongprev, w.log[2].sig, false, &len);
    expect_refused(w.r, &before, bad, len, TSYNC_EBADSIG, "signature", "wrong previous hash");
    free(bad);
    snap_free(&before);
    size_t glen;
    uint8_t *good = world_tail(&w, true, &glen);
    world_finish_with(&w, good, glen);
    free(good);
    world_close(&w);
}

/* ---------------------------------------------------------------- forks */

/* A different batch `seq` of origin (same origin, same seq, different content), signed with the
 * origin's own secret key over a chain that continues from prev. */
static uint8_t *forge(tsync_store *origin, const logent *real, uint64_t seq,
                      const uint8_t prev[TSYNC__HASH_BYTES], size_t *len)
{
    tsync__arena ar = {0};
    tsync__batch b;
    char err[TSYNC__ERRLEN];
    cr_assert_eq(tsync__batch_decode(real->body, real->len, &b, &ar, err), 0, "%s", err);
    cr_assert_eq(b.seq, seq);
    cr_assert_gt(b.nrows, 0);
    /* Change one written value of the first row with written columns. */
    int changed = 0;
    for (uint32_t r = 0; r < b.nrows && !changed; r++)
        if (b.rows[r].ncols > 0) {
            b.rows[r].cols[0].val = (tsync__val){.type = TSYNC__V_TEXT, .p = "forged", .n = 6};
            changed = 1;
        }
    cr_assert(changed);
    uint8_t *body = NULL;
    size_t blen = 0;
    cr_assert_eq(tsync__batch_encode(&b, &body, &blen, err), 0, "%s", err);
    tsync__arena_free(&ar);
    cr_assert(blen != real->len || memcmp(body, real->body, blen) != 0);

    logent fake = {.body = body, .len = blen};
    static const int one[] = {0};
    uint8_t h[TSYNC__HASH_BYTES], sig[TSYNC__SIG_BYTES];
    chain_hash(&fake, one, 1, prev, h);
    tsync__batch_sign(origin->sk, origin->site, seq, h, sig);
    uint8_t *out = one_run(origin, &fake, one, 1, seq, prev, sig, true, len);
    free(body);
    return out;
}

static json_t *vector_entry(tsync_store *s, tsync_store *of)
{
    char *js = NULL;
    cr_assert_eq(tsync_store_state_json(&js, s), 0);
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    free(js);
    cr_assert_not_null(o);
    char hex[33];
    tsync__hex(of->site, TSYNC__SITE_BYTES, hex);
    json_t *vec = json_object_get(o, "vector"), *e, *found = NULL;
    size_t i;
    json_array_foreach(vec, i, e)
    {
        if (strcmp(json_string_value(json_object_get(e, "site")) ?: "", hex) == 0) found = e;
    }
    if (found) json_incref(found);
    json_decref(o);
    return found;
}

Test(store_badinput, forked_batch_is_recorded_and_freezes_the_origin)
{
    world w;
    world_open(&w);
    /* R gets A's batches 2 and 3. */
    push(w.a, w.r);
    cr_assert_eq(th_int(w.r, "SELECT price FROM products WHERE id='p1'", -1), 110);
    int64_t log_before = th_int(w.r, "SELECT count(*) FROM tsync_log", -1);

    /* A second, different batch 2 of A, validly signed with A's key: a cloned device. */
    size_t len;
    uint8_t *fork = forge(w.a, &w.log[1], 2, w.log[0].hash, &len);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    tsync_error_clear();
    int rc = tsync_store_merge(w.r, fork, len, &rep);
    cr_assert_eq(rc, TSYNC_EFORK, "rc %d: %s", rc, th_errmsg());
    cr_assert_geq(rep.refused, 1);
    cr_assert_eq(rep.merged, 0);
    tsync_merge_report_clear(&rep);
    const tsync_error *e = tsync_error_last();
    cr_assert(e && strstr(e->message, "fork") && !strchr(e->message, '\n'), "message: %s",
              e ? e->message : "(none)");

    /* Recorded with its proof, kept out of the log, and the origin frozen at the last common
     * batch. (Its rows are merged as data by design: docs/DATA_MODEL.md, "Forks".) */
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_forks", -1), 1);
    cr_assert_eq(th_int(w.r, "SELECT length(proof) > 0 FROM tsync_forks", -1), 1);
    cr_assert_eq(th_int(w.r, "SELECT seq FROM tsync_forks", -1), 2);
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_log", -1), log_before);
    json_t *ve = vector_entry(w.r, w.a);
    cr_assert_not_null(ve);
    json_t *fa = json_object_get(ve, "frozen_at");
    cr_assert(json_is_integer(fa) && json_integer_value(fa) == 1, "frozen_at missing or wrong");
    cr_assert_eq(json_integer_value(json_object_get(ve, "seq")), 3, "the origin's log moved");
    json_decref(ve);

    /* The same forged batch again: refused again, one proof is enough. */
    rc = tsync_store_merge(w.r, fork, len, NULL);
    cr_assert_eq(rc, TSYNC_EFORK);
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_forks", -1), 1);
    char hash_frozen[65];
    strcpy(hash_frozen, th_hash(w.r));

    /* A's later batches are refused: the origin is frozen. */
    th_exec(w.a, "INSERT INTO products VALUES('p9', 'after the fork', 1, 1)");
    th_seal(w.a);
    char *since = NULL;
    cr_assert_eq(tsync_store_state_json(&since, w.r), 0);
    uint8_t *later = NULL;
    size_t llen = 0;
    cr_assert_eq(tsync_store_bundle(&later, &llen, w.a, since, NULL), 0);
    rep = (tsync_merge_report)TSYNC_MERGE_REPORT_INIT;
    rc = tsync_store_merge(w.r, later, llen, &rep);
    cr_assert_eq(rc, TSYNC_EFORK, "rc %d: %s", rc, th_errmsg());
    cr_assert_geq(rep.refused, 1);
    cr_assert_eq(rep.merged, 0);
    tsync_merge_report_clear(&rep);
    e = tsync_error_last();
    cr_assert(e && strstr(e->message, "frozen"), "message: %s", e ? e->message : "(none)");
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM products WHERE id='p9'", -1), 0);
    cr_assert_str_eq(th_hash(w.r), hash_frozen);
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_log", -1), log_before);
    free(later);
    free(since);
    free(fork);
    world_close(&w);
}

Test(store_badinput, fork_detected_whichever_copy_arrives_first)
{
    /* R has batch 1 only; the forged batch 2 arrives first and, being valid, is applied and
     * logged. The real batches 2 and 3 then reveal the fork: recorded, the origin frozen at 1,
     * and the real branch's rows merged as data but not logged. */
    world w;
    world_open(&w);
    size_t len;
    uint8_t *fork = forge(w.a, &w.log[1], 2, w.log[0].hash, &len);
    tsync_merge_report rep;
    expect_accepted(w.r, fork, len, &rep);
    cr_assert_eq(rep.merged, 1);
    tsync_merge_report_clear(&rep);

    size_t glen;
    uint8_t *good = world_tail(&w, true, &glen);
    rep = (tsync_merge_report)TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(w.r, good, glen, &rep);
    cr_assert_eq(rc, TSYNC_EFORK, "rc %d: %s", rc, th_errmsg());
    cr_assert_geq(rep.refused, 1);
    cr_assert_eq(rep.merged, 0);
    tsync_merge_report_clear(&rep);
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_forks", -1), 1);
    json_t *ve = vector_entry(w.r, w.a);
    cr_assert_not_null(ve);
    json_t *fa = json_object_get(ve, "frozen_at");
    cr_assert(json_is_integer(fa) && json_integer_value(fa) == 1);
    json_decref(ve);
    cr_assert_eq(th_int(w.r,
                        "SELECT max(seq) FROM tsync_log WHERE site = (SELECT idx FROM "
                        "tsync_sites WHERE frozen_seq IS NOT NULL)",
                        -1),
                 2, "the frozen origin's log grew");
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM products WHERE id='p2'", -1), 1,
                 "the real branch's rows were not merged as data");
    free(good);
    free(fork);
    world_close(&w);
}

Test(store_badinput, fork_branches_converge_in_any_order)
{
    /* Two replicas see the two branches of a fork in opposite orders. docs/DATA_MODEL.md: "merging
     * them makes every replica that has seen both branches show the same rows". The forged batch
     * reuses the clocks of the real one (a compromised key can write any clock), so the two
     * values of p1.price tie on (clock, site). */
    world w;
    world_open(&w);
    tsync_store *r2 = th_open_products(th_path(w.dir, "r2.db"));
    push(w.r, r2); /* r2 has R's row and A's batch 1, like R */
    size_t flen, glen;
    uint8_t *fork = forge(w.a, &w.log[1], 2, w.log[0].hash, &flen);
    uint8_t *good = world_tail(&w, true, &glen);
    cr_assert_eq(tsync_store_merge(w.r, good, glen, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_merge(w.r, fork, flen, NULL), TSYNC_EFORK);
    cr_assert_eq(tsync_store_merge(r2, fork, flen, NULL), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_merge(r2, good, glen, NULL), TSYNC_EFORK);
    cr_assert_eq(th_int(w.r, "SELECT count(*) FROM tsync_forks", -1), 1);
    cr_assert_eq(th_int(r2, "SELECT count(*) FROM tsync_forks", -1), 1);
    char *p1 = th_text(w.r, "SELECT price FROM products WHERE id='p1'");
    char *p2 = th_text(r2, "SELECT price FROM products WHERE id='p1'");
    cr_assert_str_eq(th_hash(w.r), th_hash(r2),
                     "replicas that saw both branches differ: p1.price is %s on one and %s on "
                     "the other",
                     p1 ? p1 : "(none)", p2 ? p2 : "(none)");
    free(p1);
    free(p2);
    free(good);
    free(fork);
    tsync_store_free(r2);
    world_close(&w);
}

/* Copies a file's bytes over another, keeping the target's inode (as a restore in place does). */
static void overwrite_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "r+b");
    cr_assert(in && out, "cannot copy %s to %s", from, to);
    char buf[8192];
    size_t n, total = 0;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) {
        cr_assert_eq(fwrite(buf, 1, n, out), n);
        total += n;
    }
    fclose(in);
    cr_assert_eq(fflush(out), 0);
    cr_assert_eq(ftruncate(fileno(out), (off_t)total), 0);
    fclose(out);
}

static void copy_to_new(const char *from, const char *to)
{
    FILE *f = fopen(to, "wb");
    cr_assert_not_null(f);
    fclose(f);
    overwrite_file(from, to);
}

Test(store_badinput, fork_by_restoring_a_till_in_place_converges_and_keeps_both_sales)
{
    /* A till's files are restored in place to an earlier state (a VM snapshot, a disk image):
     * same machine, same inode, so the same site id, and it re-issues batch 2 with other sales.
     * Both branches were really sold: the sale rows of both must be kept, and the counter must
     * count both (the report says "the other branch's rows are merged so no sale is lost"). */
    char *dir = th_tmpdir_auto();
    char db[4096], key[4200], snap_db[4200], snap_key[4200], mark[4300], snap_mark[4300];
    snprintf(db, sizeof db, "%s/a.db", dir);
    snprintf(key, sizeof key, "%s.key", db);
    /* the whole image: also the marker of the highest batch handed out (store/identity.c) */
    snprintf(mark, sizeof mark, "%s.mark", key);
    snprintf(snap_mark, sizeof snap_mark, "%s/snap.mark", dir);
    snprintf(snap_db, sizeof snap_db, "%s/snap.db", dir);
    snprintf(snap_key, sizeof snap_key, "%s/snap.key", dir);
    tsync_store *a = th_open_products(db);
    tsync_store *r = th_open_products(th_path(dir, "r.db"));
    tsync_store *r2 = th_open_products(th_path(dir, "r2.db"));
    th_exec(a, "CREATE TABLE sales(id TEXT PRIMARY KEY, sku TEXT, qty INTEGER)");
    cr_assert_eq(tsync_store_replicate(a, "sales", NULL, 0), 0, "%s", th_errmsg());
    for (int i = 0; i < 2; i++) {
        tsync_store *x = i ? r2 : r;
        th_exec(x, "CREATE TABLE sales(id TEXT PRIMARY KEY, sku TEXT, qty INTEGER)");
        cr_assert_eq(tsync_store_replicate(x, "sales", NULL, 0), 0, "%s", th_errmsg());
    }
    th_exec(a, "INSERT INTO products VALUES('p1', 'apple', 100, 10)");
    push(a, r);
    push(a, r2);
    uint8_t site[TSYNC_SITE_ID_BYTES];
    memcpy(site, tsync_store_site_id(a), sizeof site);
    th_exec(a, "PRAGMA wal_checkpoint(TRUNCATE)");
    tsync_store_free(a);
    copy_to_new(db, snap_db);
    copy_to_new(key, snap_key);
    copy_to_new(mark, snap_mark);

    /* Branch 1: sells 3 and syncs to R. */
    a = th_open(db);
    th_exec(a, "INSERT INTO sales VALUES('s-a', 'p1', 3)");
    th_exec(a, "UPDATE products SET stock = stock - 3 WHERE id='p1'");
    push(a, r);
    th_exec(a, "PRAGMA wal_checkpoint(TRUNCATE)");
    tsync_store_free(a);

    /* Restored in place; branch 2: sells 5 and syncs to R2. */
    overwrite_file(snap_db, db);
    overwrite_file(snap_key, key);
    overwrite_file(snap_mark, mark);
    a = th_open(db);
    cr_assert_eq(memcmp(tsync_store_site_id(a), site, sizeof site), 0,
                 "the restored till got a new site id: no fork to test");
    th_exec(a, "INSERT INTO sales VALUES('s-b', 'p1', 5)");
    th_exec(a, "UPDATE products SET stock = stock - 5 WHERE id='p1'");
    push(a, r2);

    /* R and R2 meet: each sees the other branch. */
    cr_assert_eq(th_sync(r, r2), TSYNC_EFORK, "%s", th_errmsg());
    cr_assert_eq(th_sync(r2, r), TSYNC_EFORK, "%s", th_errmsg());
    cr_assert_gt(th_int(r, "SELECT count(*) FROM tsync_forks", -1), 0);
    cr_assert_gt(th_int(r2, "SELECT count(*) FROM tsync_forks", -1), 0);
    cr_assert_str_eq(th_hash(r), th_hash(r2), "replicas that saw both branches differ");
    cr_assert_eq(th_int(r, "SELECT count(*) FROM sales", -1), 2, "a branch's sale row was lost");
    cr_assert_eq(th_int(r, "SELECT stock FROM products WHERE id='p1'", -1), 2,
                 "stock is %lld, not 10 - 3 - 5: one branch's sales were not counted",
                 (long long)th_int(r, "SELECT stock FROM products WHERE id='p1'", -1));
    tsync_store_free(a);
    tsync_store_free(r);
    tsync_store_free(r2);
    th_rmdir(dir);
    free(dir);
}

Test(store_badinput, fork_message_names_the_fork_without_a_report)
{
    /* tsync_error_last() must name the problem whether or not the caller asked for a report. */
    world w;
    world_open(&w);
    push(w.a, w.r);
    size_t len;
    uint8_t *fork = forge(w.a, &w.log[1], 2, w.log[0].hash, &len);
    tsync_error_clear();
    int rc = tsync_store_merge(w.r, fork, len, NULL);
    cr_assert_eq(rc, TSYNC_EFORK);
    const tsync_error *e = tsync_error_last();
    cr_assert_not_null(e);
    cr_assert(strstr(e->message, "fork") != NULL, "the message does not name the fork: '%s'",
              e->message);
    free(fork);
    world_close(&w);
}

/* ---------------------------------------------------------------- parking */

Test(store_badinput, batch_for_a_missing_table_is_parked_then_applied_after_replicate)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *r = th_open_products(th_path(dir, "r.db"));
    th_exec(a, "CREATE TABLE extras(id TEXT PRIMARY KEY, note TEXT, n INTEGER DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(a, "extras", NULL, 0), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO products VALUES('p1', 'apple', 100, 10)");
    th_exec(a, "INSERT INTO extras VALUES('e1', 'first', 1), ('e2', 'second', 2), "
               "('e3', 'third', 3)");
    th_seal(a);
    th_exec(a, "UPDATE extras SET note = 'first, edited' WHERE id='e1'");
    th_exec(a, "DELETE FROM extras WHERE id='e2'");
    th_seal(a);

    size_t len;
    uint8_t *bun = th_bundle(a, &len);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(r, bun, len, &rep);
    cr_assert_eq(rc, 0, "parking is not refusing: %s", th_errmsg());
    cr_assert_eq(rep.merged, 2);
    cr_assert_gt(rep.parked, 0);
    int named = 0;
    for (size_t i = 0; i < rep.nmessages; i++)
        if (strstr(rep.messages[i], "parked") && strstr(rep.messages[i], "extras")) named = 1;
    cr_assert(named, "no message says that extras was parked");
    tsync_merge_report_clear(&rep);
    /* The rest of the batch applied; the extras rows wait in tsync_parked. */
    cr_assert_eq(th_int(r, "SELECT stock FROM products WHERE id='p1'", -1), 10);
    cr_assert_gt(th_int(r, "SELECT count(*) FROM tsync_parked WHERE tbl='extras'", -1), 0);
    free(bun);

    /* The table arrives here (a migration) and is replicated: the parked rows apply. */
    th_exec(r, "CREATE TABLE extras(id TEXT PRIMARY KEY, note TEXT, n INTEGER DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(r, "extras", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(th_int(r, "SELECT count(*) FROM tsync_parked WHERE tbl='extras'", -1), 0);
    char *got = th_text(r, "SELECT group_concat(id || ':' || note || ':' || n, ',') FROM "
                           "(SELECT * FROM extras ORDER BY id)");
    cr_assert(got && strcmp(got, "e1:first, edited:1,e3:third:3") == 0, "extras: %s",
              got ? got : "(none)");
    free(got);
    cr_assert_str_eq(th_hash(r), th_hash(a));

    /* From now on the table syncs like any other, both ways. */
    th_exec(a, "UPDATE extras SET n = 30 WHERE id='e3'");
    push(a, r);
    th_exec(r, "INSERT INTO extras VALUES('e4', 'from r', 4)");
    push(r, a);
    cr_assert_eq(th_int(r, "SELECT n FROM extras WHERE id='e3'", -1), 30);
    cr_assert_str_eq(th_hash(r), th_hash(a));
    tsync_store_free(a);
    tsync_store_free(r);
    th_rmdir(dir);
    free(dir);
}

Test(store_badinput, parked_rows_are_not_dropped_by_a_mismatched_replicate)
{
    /* The table arrives with a definition that still cannot take the parked rows (here: the
     * counter is not declared a counter). The rows must stay parked, not vanish: "what cannot
     * apply yet is parked and reported, and applied when it can". */
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open_products(th_path(dir, "a.db"));
    tsync_store *r = th_open_products(th_path(dir, "r.db"));
    th_exec(a, "CREATE TABLE bins(id TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0)");
    const char *ctr[] = {"qty"};
    cr_assert_eq(tsync_store_replicate(a, "bins", ctr, 1), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO bins VALUES('b1', 7)");
    push(a, r);
    int64_t parked = th_int(r, "SELECT count(*) FROM tsync_parked WHERE tbl='bins'", -1);
    cr_assert_gt(parked, 0);

    th_exec(r, "CREATE TABLE bins(id TEXT PRIMARY KEY, qty INTEGER NOT NULL DEFAULT 0)");
    cr_assert_eq(tsync_store_replicate(r, "bins", NULL, 0), 0, "%s", th_errmsg());
    int64_t shown = th_int(r, "SELECT count(*) FROM bins", -1);
    int64_t still = th_int(r, "SELECT count(*) FROM tsync_parked WHERE tbl='bins'", -1);
    cr_assert(shown == 1 || still == parked,
              "the parked change of bins was neither applied (%lld rows) nor kept parked (%lld "
              "of %lld left)",
              (long long)shown, (long long)still, (long long)parked);
    tsync_store_free(a);
    tsync_store_free(r);
    th_rmdir(dir);
    free(dir);
}

Test(store_badinput, batch_with_a_missing_column_is_parked_and_reported)
{
    char *dir = th_tmpdir_auto();
    tsync_store *a = th_open(th_path(dir, "a.db"));
    tsync_store *r = th_open(th_path(dir, "r.db"));
    th_exec(a, "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT, colour TEXT)");
    th_exec(r, "CREATE TABLE items(id TEXT PRIMARY KEY, name TEXT)");
    cr_assert_eq(tsync_store_replicate(a, "items", NULL, 0), 0, "%s", th_errmsg());
    cr_assert_eq(tsync_store_replicate(r, "items", NULL, 0), 0, "%s", th_errmsg());
    th_exec(a, "INSERT INTO items VALUES('i1', 'mug', 'blue')");
    th_seal(a);

    size_t len;
    uint8_t *bun = th_bundle(a, &len);
    tsync_merge_report rep = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge(r, bun, len, &rep);
    cr_assert_eq(rc, 0, "%s", th_errmsg());
    cr_assert_eq(rep.merged, 1);
    cr_assert_gt(rep.parked, 0);
    int named = 0;
    for (size_t i = 0; i < rep.nmessages; i++)
        if (strstr(rep.messages[i], "parked") && strstr(rep.messages[i], "colour")) named = 1;
    cr_assert(named, "no message names the parked column");
    tsync_merge_report_clear(&rep);
    /* The columns this database has are applied; the missing one is parked, not lost. */
    char *name = th_text(r, "SELECT name FROM items WHERE id='i1'");
    cr_assert(name && strcmp(name, "mug") == 0, "name: %s", name ? name : "(none)");
    free(name);
    cr_assert_eq(th_int(r,
                        "SELECT count(*) FROM tsync_parked WHERE tbl='items' AND "
                        "col='colour'",
                        -1),
                 1);
    cr_assert_eq(th_int(r,
                        "SELECT count(*) FROM tsync_log l JOIN tsync_parked p ON "
                        "l.site=p.site AND l.seq=p.seq",
                        -1),
                 1, "the parked change's batch is not kept in the log");
    free(bun);
    tsync_store_free(a);
    tsync_store_free(r);
    th_rmdir(dir);
    free(dir);
}
