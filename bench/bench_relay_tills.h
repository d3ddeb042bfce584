/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_tills.h — bench_relay's payloads (a real till's sales, sealed and compressed as
 * the wire carries them), its shops (admin keys, shop ids, data keys) and tills (device keys,
 * certificates, what each put and received). Part of bench_relay (included once, by
 * bench/bench_relay.c, after its configuration C).
 */
#ifndef TSYNC_BENCH_BENCH_RELAY_TILLS_H
#define TSYNC_BENCH_BENCH_RELAY_TILLS_H

typedef struct {
    uint8_t *p;
    size_t len, crun, batches;
} payload;

static int on_piece(void *ctx, const tsync__run_piece *pc)
{
    payload *out = ctx;
    uint8_t *raw;
    size_t rl;
    BENCH_CHECK(
        tsync__crun_encode(pc->site->site, pc->first_seq, pc->n, pc->body, pc->len, &raw, &rl) == 0,
        "crun_encode");
    size_t bound = ZSTD_compressBound(rl);
    uint8_t *z = malloc(bound + TSYNC__SIG_BYTES);
    size_t zl = ZSTD_compress(z, bound, raw, rl, 3);
    BENCH_CHECK(z && !ZSTD_isError(zl), "zstd");
    memcpy(z + zl, pc->sig, TSYNC__SIG_BYTES);
    free(out->p);
    out->p = z;
    out->len = zl + TSYNC__SIG_BYTES;
    out->crun = rl;
    out->batches = pc->n;
    free(raw);
    return 0;
}

/* One sale (2 lines of 1,000 products), one transaction, sealed as its own batch. */
static void sell(tsync_store *s, bench_seller *w)
{
    static int64_t seq;
    bench_sell(w, ++seq, 2, 1000);
    size_t nb = 0;
    BENCH_TS(tsync_store_seal(s, &nb));
    BENCH_CHECK(nb == 1, "a sale sealed as %zu batches", nb);
}

/* A real till's one-sale run (the median of 21) and an n-sale run: a sale is one sales row, 2
 * sale_lines rows and 2 stock decrements of a PN-counter (bench_node's sale), sealed as its own
 * batch (the live shape); the payload is the compact run (codec/compact.h) in one zstd frame
 * (level 3, as the wire's BATCHES) plus the last batch's signature. */
static void measure_payloads(payload *one, payload *many, int n)
{
    tsync_store *s = bench_store_open(bench_path("till.db"), TSYNC_SYNC_NORMAL);
    bench_seller w;
    bench_products_replicated(s);
    sqlite3 *db = tsync_store_sqlite(s);
    bench_exec(db, BENCH_SALES_SQL);
    BENCH_TS(tsync_store_replicate(s, "sales", NULL, 0));
    BENCH_TS(tsync_store_replicate(s, "sale_lines", NULL, 0));
    bench_exec(db, "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i<999) "
                   "INSERT INTO products SELECT printf('p%05d',i), 'product '||i, 100+i, 50 "
                   "FROM n");
    BENCH_TS(tsync_store_seal(s, NULL));
    bench_seller_open(&w, db, 0, C.seed);
    payload one_of[21] = {{0}};
    double v[21];
    for (int k = 0; k < 21; k++) {
        tsync__vv vv = {0};
        BENCH_TS(tsync__sync_vv(s, &vv));
        sell(s, &w);
        BENCH_TS(tsync__sync_runs(s, &vv, (size_t)1 << 30, on_piece, &one_of[k], NULL));
        tsync__vv_free(&vv);
        BENCH_CHECK(one_of[k].batches == 1, "a one-sale run of %zu batches", one_of[k].batches);
        v[k] = (double)one_of[k].len;
    }
    tsync__vv vv = {0};
    BENCH_TS(tsync__sync_vv(s, &vv));
    for (int k = 0; k < n; k++) sell(s, &w);
    BENCH_TS(tsync__sync_runs(s, &vv, (size_t)1 << 30, on_piece, many, NULL));
    tsync__vv_free(&vv);
    BENCH_CHECK(many->batches == (size_t)n, "a %d-sale run came as pieces of %zu", n,
                many->batches);
    bench_seller_close(&w);
    tsync_store_free(s);
    double med = bench_median(v, 21);
    for (int k = 0; k < 21; k++) {
        if (!one->p && (double)one_of[k].len == med)
            *one = one_of[k];
        else
            free(one_of[k].p);
    }
    BENCH_CHECK(one->p, "no median one-sale payload");
}

/* ---------------------------------------------------------------- shops and tills */

typedef struct {
    uint8_t admin_pk[32], admin_sk[64], shop_id[16], key[32];
    char name[24];
} shop_t;

typedef struct {
    void *sock, *mon; /* the DEALER and its monitor (handshake, disconnect) */
    int idx, shop, served, up;
    uint64_t sessions; /* sessions that came up: more than one means the relay cut one */
    uint8_t pk[32], sk[64], origin[16], last_hash[32];
    uint8_t *cert;
    size_t cert_len;
    uint64_t seq, inflight, stored;
    double next_at;
    /* per seq (index seq - 1): when it was put, its phase, how many other tills have it */
    double *sent;
    uint8_t *phase, *got, *acked;
    size_t cap;
} till_t;

static shop_t *S;
static till_t *T;
static int NT; /* tills in T */

static double urand(bench_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * (double)(bench_rand(r) >> 11) / 9007199254740992.0;
}

static void shop_make(shop_t *s, int i)
{
    crypto_sign_keypair(s->admin_pk, s->admin_sk);
    randombytes_buf(s->shop_id, sizeof s->shop_id);
    randombytes_buf(s->key, sizeof s->key);
    snprintf(s->name, sizeof s->name, "shop %d", i);
}

/* A till of shop sh with a new device key and a certificate valid for a day either way. Its
 * origin carries its index in the first 4 bytes, so a push names its author without a lookup. */
static void till_make(till_t *t, int idx, int sh)
{
    memset(t, 0, sizeof *t);
    t->idx = idx;
    t->shop = sh;
    crypto_sign_keypair(t->pk, t->sk);
    randombytes_buf(t->origin, sizeof t->origin);
    t->origin[0] = (uint8_t)(idx >> 24), t->origin[1] = (uint8_t)(idx >> 16);
    t->origin[2] = (uint8_t)(idx >> 8), t->origin[3] = (uint8_t)idx;
    char name[32];
    snprintf(name, sizeof name, "till %d", idx);
    uint64_t now = (uint64_t)time(NULL) * 1000u;
    tsync__cert c = {.shop_name = S[sh].name,
                     .shop_name_len = (uint32_t)strlen(S[sh].name),
                     .device_name = name,
                     .device_name_len = (uint32_t)strlen(name),
                     .not_before_ms = now - 86400000u,
                     .expires_ms = now + 86400000u};
    memcpy(c.shop_id, S[sh].shop_id, 16);
    memcpy(c.device_pk, t->pk, 32);
    memcpy(c.admin_pk, S[sh].admin_pk, 32);
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__cert_sign(&c, S[sh].admin_sk, &t->cert, &t->cert_len, err) == 0, "cert: %s",
                err);
}

static int origin_idx(const uint8_t o[16])
{
    return (int)((uint32_t)o[0] << 24 | (uint32_t)o[1] << 16 | (uint32_t)o[2] << 8 | o[3]);
}

static void till_grow(till_t *t)
{
    if (t->seq < t->cap) return;
    size_t nc = t->cap ? t->cap * 2 : 256;
    t->sent = realloc(t->sent, nc * sizeof *t->sent);
    t->phase = realloc(t->phase, nc);
    t->got = realloc(t->got, nc);
    t->acked = realloc(t->acked, nc);
    BENCH_CHECK(t->sent && t->phase && t->got && t->acked, "out of memory");
    memset(t->got + t->cap, 0, nc - t->cap);
    memset(t->acked + t->cap, 0, nc - t->cap);
    t->cap = nc;
}

#endif
