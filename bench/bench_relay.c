/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay.c — the blind relay (docs/RELAY.md) under the load of a chain of shops:
 * PERFORMANCE.md's relay targets. A real relay (`tillsync relay run`, exec'd as its own process so
 * its RSS and CPU are its own) admits --shops (200) shops; one load-driver process (one thread,
 * one ZeroMQ context with --io-threads I/O threads, one DEALER per simulated till) runs --tills
 * (3) tills per shop, each with its own device key certified by its shop's admin key, speaking
 * the relay protocol over CURVE: RHELLO, then RPUTs of real envelopes (tsync__env_seal, the
 * shop's data key, of a one-sale compact run measured at start), and the relay pushes each stored
 * envelope to the shop's two other tills (RENV, req 0).
 *
 * Phases, in order (each figure names its phase):
 * paced     every till sells one sale every --interval-ms (1000-3000: a busy shop) for
 *           --duration (120) s; per sale, the time from its RPUT to the push's arrival at the
 *           last of the shop's other tills (p50/p99/max; target p99 < 50 ms); the relay's RSS
 *           every second (flat: RssAnon of the last 10 s within 8 MiB + 10 % of the first 10 s;
 *           first / last / max and the slope printed) and its CPU per envelope.
 * heavy     the same at --heavy-ms (400-800) per sale per till, for --heavy-seconds (20).
 * saturate  every till keeps --window (2) RPUTs in flight for --sat-seconds (20): envelopes the
 *           relay stores per second, and its CPU per envelope.
 * catchup   a till of another shop stores --batches (100,000) sales as envelopes, then a new till
 *           of that shop RGETs them following `more` (the relay's share of a catch-up: no
 *           decrypting or merging, which the node's relay client adds): time (target < 5 s) and
 *           bytes. Twice: one sale per envelope (as a till online pushes them) and --run (100)
 *           sales per envelope (as a till back from offline pushes its backlog).
 * Baseline, same run, same connections and message sizes: a plain ZeroMQ CURVE ROUTER in its own
 * process (bench_relay_base.h) that answers a put and forwards it to the shop's other tills with
 * no check, decoding or store; paced, heavy and saturate run against it first (--base-seconds
 * (30) split 2:1:1), and the catch-up's reads are replayed against it in the same sizes.
 *
 * Checks (a wrong result exits 1): every till is admitted; every RPUT is stored exactly once
 * (RACK stored 1, dup 0); every envelope put reaches both other tills of its shop (by push, or
 * for a push the relay dropped at saturation, where pushes are best effort, by RGET as a till
 * would), none reaches another shop, none twice by push; in the paced and heavy phases no push is
 * lost; the catch-up gets every batch exactly once, in order. --quick: --duration 6, 2 s heavy,
 * 2 s saturate, 10,000 batches, 4 s of baseline. --store URL goes to the relay (an unknown store
 * or option makes the relay refuse to start: the bench fails with its message).
 */
#include "bench/bench_common.h"

#include <fcntl.h>
#include <sodium.h>
#include <zmq.h>

#include "codec/cert.h"
#include "codec/compact.h"
#include "codec/envelope.h"
#include "codec/relay.h"
#include "crdt/crdt.h"
#include "store/sync.h"
#include "tillsync/relay.h"

#include "bench/bench_relay_base.h"

#ifndef TSYNC_CLI
#define TSYNC_CLI "tillsync"
#endif

enum { PH_PACED, PH_HEAVY, PH_SAT, PH_N };
static const char *const PH_NAME[PH_N] = {"paced", "heavy", "saturate"};

static struct {
    int shops, tills, window, io_threads, quick, run;
    double duration, heavy_s, sat_s, base_s;
    double lo, hi, hlo, hhi; /* ms between sales: paced and heavy */
    long batches;
    uint64_t seed;
    const char *store, *cli;
} C;

/* ---------------------------------------------------------------- payloads */

#define SALES_SQL                                                                                  \
    "CREATE TABLE sales(id TEXT PRIMARY KEY, till INTEGER, seq INTEGER, t_ns INTEGER, total "      \
    "INTEGER); CREATE TABLE sale_lines(id TEXT PRIMARY KEY, sale TEXT, product TEXT, qty "         \
    "INTEGER, price INTEGER)"

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

typedef struct {
    sqlite3 *db;
    sqlite3_stmt *line, *stock, *sale;
    bench_rng r;
    int seq;
} seller;

/* One sale, one transaction, sealed as its own batch. */
static void sell(tsync_store *s, seller *w)
{
    char sid[32], lid[48], pid[16];
    snprintf(sid, sizeof sid, "t0-%d", ++w->seq);
    bench_exec(w->db, "BEGIN");
    int64_t total = 0;
    for (int l = 0; l < 2; l++) {
        int p = (int)bench_below(&w->r, 1000);
        int64_t qty = 1 + (int64_t)bench_below(&w->r, 3), price = 100 + p % 900;
        snprintf(lid, sizeof lid, "%s-%d", sid, l);
        snprintf(pid, sizeof pid, "p%05d", p);
        sqlite3_bind_text(w->line, 1, lid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(w->line, 2, sid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(w->line, 3, pid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(w->line, 4, qty);
        sqlite3_bind_int64(w->line, 5, price);
        bench_step_done(w->db, w->line);
        sqlite3_bind_text(w->stock, 1, pid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(w->stock, 2, qty);
        bench_step_done(w->db, w->stock);
        total += qty * price;
    }
    sqlite3_bind_text(w->sale, 1, sid, -1, SQLITE_TRANSIENT);
    sqlite3_bind_int64(w->sale, 2, 0);
    sqlite3_bind_int64(w->sale, 3, w->seq);
    sqlite3_bind_int64(w->sale, 4, (int64_t)(bench_now() * 1e9));
    sqlite3_bind_int64(w->sale, 5, total);
    bench_step_done(w->db, w->sale);
    bench_exec(w->db, "COMMIT");
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
    seller w = {.db = tsync_store_sqlite(s), .r = {C.seed}};
    bench_products_replicated(s);
    bench_exec(w.db, SALES_SQL);
    BENCH_TS(tsync_store_replicate(s, "sales", NULL, 0));
    BENCH_TS(tsync_store_replicate(s, "sale_lines", NULL, 0));
    bench_exec(w.db, "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i+1 FROM n WHERE i<999) "
                     "INSERT INTO products SELECT printf('p%05d',i), 'product '||i, 100+i, 50 "
                     "FROM n");
    BENCH_TS(tsync_store_seal(s, NULL));
    w.line = bench_prepare(w.db, "INSERT INTO sale_lines VALUES(?,?,?,?,?)");
    w.stock = bench_prepare(w.db, "UPDATE products SET stock=stock-?2 WHERE id=?1");
    w.sale = bench_prepare(w.db, "INSERT INTO sales VALUES(?,?,?,?,?)");
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
    sqlite3_finalize(w.line);
    sqlite3_finalize(w.stock);
    sqlite3_finalize(w.sale);
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

/* ---------------------------------------------------------------- processes */

static pid_t relay_pid = -1, base_pid = -1;

static void kill_kids(void)
{
    if (relay_pid > 0) kill(relay_pid, SIGTERM), waitpid(relay_pid, NULL, 0), relay_pid = -1;
    if (base_pid > 0) kill(base_pid, SIGTERM), waitpid(base_pid, NULL, 0), base_pid = -1;
}

/* The last non-empty line of a file (for a relay that refused to start). */
static const char *last_line(const char *path)
{
    static char out[512];
    char line[512];
    out[0] = 0;
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f))
        if (line[0] != '\n') snprintf(out, sizeof out, "%s", line);
    if (f) fclose(f);
    out[strcspn(out, "\n")] = 0;
    return out;
}

/* Execs `tillsync relay run DIR --listen tcp://127.0.0.1:* [--store URL]`, its log in
 * relay.log; waits for "listening on ENDPOINT". */
static void relay_start(const char *dir, char *ep, size_t n)
{
    const char *log = bench_path("relay.log");
    fflush(NULL);
    relay_pid = fork();
    BENCH_CHECK(relay_pid >= 0, "fork: %s", strerror(errno));
    if (relay_pid == 0) {
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0) _exit(127);
        const char *argv[] = {C.cli, "relay", "run", dir, "--listen", "tcp://127.0.0.1:*",
                              NULL,  NULL,    NULL};
        if (C.store) argv[6] = "--store", argv[7] = C.store;
        execv(C.cli, (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s\n", C.cli, strerror(errno));
        _exit(127);
    }
    for (int i = 0; i < 600; i++) {
        usleep(50000);
        int st;
        if (waitpid(relay_pid, &st, WNOHANG) == relay_pid) {
            relay_pid = -1;
            bench_fail(__FILE__, __LINE__, "the relay did not start%s%s (exit status %d): %s",
                       C.store ? " with --store " : "", C.store ? C.store : "",
                       WIFEXITED(st) ? WEXITSTATUS(st) : -1, last_line(log));
        }
        FILE *f = fopen(log, "r");
        char line[512];
        while (f && fgets(line, sizeof line, f)) {
            char *p = strstr(line, "listening on ");
            if (!p) continue;
            snprintf(ep, n, "%s", p + 13);
            ep[strcspn(ep, "\n")] = 0;
            fclose(f);
            return;
        }
        if (f) fclose(f);
    }
    bench_fail(__FILE__, __LINE__, "the relay did not say where it listens (%s)", log);
}

/* RSS and anonymous RSS (KiB) and CPU seconds (user + system) of a process. */
static void proc_sample(pid_t pid, long *rss, long *anon, double *cpu)
{
    char path[64], line[512];
    *rss = *anon = 0;
    *cpu = 0;
    snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    while (f && fgets(line, sizeof line, f)) {
        if (!strncmp(line, "VmRSS:", 6)) *rss = atol(line + 6);
        if (!strncmp(line, "RssAnon:", 8)) *anon = atol(line + 8);
    }
    if (f) fclose(f);
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    f = fopen(path, "r");
    if (f && fgets(line, sizeof line, f)) {
        char *p = strrchr(line, ')');
        unsigned long ut = 0, stt = 0;
        /* fields 3.. after the name: state ppid pgrp session tty tpgid flags minflt cminflt
         * majflt cmajflt utime stime */
        if (p &&
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %lu %lu", &ut, &stt) == 2)
            *cpu = (double)(ut + stt) / (double)sysconf(_SC_CLK_TCK);
    }
    if (f) fclose(f);
}

static double load1(void)
{
    double l = NAN;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (fscanf(f, "%lf", &l) != 1) l = NAN;
        fclose(f);
    }
    return l;
}

/* The three load averages, without bench_read_load's newline. */
static const char *load3(void)
{
    static char b[64];
    snprintf(b, sizeof b, "%s", bench_read_load());
    b[strcspn(b, "\n")] = 0;
    return b;
}

/* ---------------------------------------------------------------- the load driver */

typedef struct {
    double *v;
    size_t n, cap;
} vec;

static void vec_add(vec *x, double v)
{
    if (x->n == x->cap) {
        x->cap = x->cap ? x->cap * 2 : 4096;
        x->v = realloc(x->v, x->cap * sizeof *x->v);
        BENCH_CHECK(x->v, "out of memory");
    }
    x->v[x->n++] = v;
}

/* The p-th percentile (0..1) of x, sorted in place; NAN when empty. */
static double pct(vec *x, double p)
{
    if (!x->n) return NAN;
    qsort(x->v, x->n, sizeof *x->v, bench_dbl_cmp);
    double r = p * (double)x->n; /* the rank, rounded up (no libm: the benches do not link it) */
    size_t i = (size_t)r;
    if ((double)i < r) i++;
    return x->v[i ? i - 1 : 0];
}

typedef struct {
    double t, cpu;
    long rss, anon;
    int phase;
} rss_sample;

static struct {
    int base; /* 1: talking to the baseline server */
    void *ctx;
    uint8_t server_curve[32];
    char ep[256];
    zmq_pollitem_t *items;
    const payload *pl;
    pid_t srv; /* the server process (relay or baseline) */
    /* per run */
    vec lat[PH_N], ack[PH_N];
    uint64_t puts[PH_N], pushes, push_dup, push_foreign, acks;
    rss_sample *rs;
    size_t nrs, caprs;
    double next_rss, t0;
    uint64_t env_bytes, envs; /* envelopes put to the relay, and their bytes */
    uint64_t cuts, resent;    /* sessions the server cut (the till said RHELLO again); RPUTs
                                 sent again after one */
    size_t env1;              /* bytes of a one-sale envelope */
} D;

static int setopt_int(void *s, int opt, int v)
{
    return zmq_setsockopt(s, opt, &v, sizeof v);
}

/* A DEALER to the server with the CURVE key of an Ed25519 key pair; *mon (may be NULL) receives
 * a monitor of its handshakes and disconnects. ZMQ_IMMEDIATE: nothing queues while no session is
 * up, so the first message of a new session is always the RHELLO sent when it comes up. */
static void *dealer(const uint8_t ed_pk[32], const uint8_t ed_sk[64], void **mon)
{
    static unsigned gen;
    uint8_t cpk[32], csk[32];
    BENCH_CHECK(crypto_sign_ed25519_pk_to_curve25519(cpk, ed_pk) == 0 &&
                    crypto_sign_ed25519_sk_to_curve25519(csk, ed_sk) == 0,
                "curve key");
    void *s = zmq_socket(D.ctx, ZMQ_DEALER);
    BENCH_CHECK(s, "zmq_socket: %s (sockets: raise ZMQ_MAX_SOCKETS)", zmq_strerror(errno));
    BENCH_CHECK(!setopt_int(s, ZMQ_LINGER, 0) && !setopt_int(s, ZMQ_SNDHWM, 100000) &&
                    !setopt_int(s, ZMQ_RCVHWM, 100000) && !setopt_int(s, ZMQ_IMMEDIATE, 1) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, D.server_curve, 32) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, cpk, 32) &&
                    !zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, csk, 32),
                "dealer setup: %s", zmq_strerror(errno));
    if (mon) {
        char ep[64];
        snprintf(ep, sizeof ep, "inproc://bench-relay-mon-%u", ++gen);
        BENCH_CHECK(zmq_socket_monitor(
                        s, ep, ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED) == 0 &&
                        (*mon = zmq_socket(D.ctx, ZMQ_PAIR)) && !zmq_connect(*mon, ep),
                    "monitor: %s", zmq_strerror(errno));
    }
    BENCH_CHECK(!zmq_connect(s, D.ep), "connect: %s", zmq_strerror(errno));
    sodium_memzero(csk, sizeof csk);
    return s;
}

/* Sends without blocking; EAGAIN (no session up just now: the relay cut it) is for the caller. */
static int send_bytes(void *s, const void *b, size_t n)
{
    if (zmq_send(s, b, n, ZMQ_DONTWAIT) == (int)n) return 0;
    BENCH_CHECK(errno == EAGAIN, "send: %s", zmq_strerror(errno));
    return -1;
}

static int send_msg(void *s, const tsync__rmsg *m)
{
    uint8_t *b;
    size_t n;
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_encode(m, &b, &n, err) == 0, "encode: %s", err);
    int rc = send_bytes(s, b, n);
    free(b);
    return rc;
}

static int hello(till_t *t)
{
    if (D.base) {
        uint8_t b[4] = {(uint8_t)(t->idx >> 24), (uint8_t)(t->idx >> 16), (uint8_t)(t->idx >> 8),
                        (uint8_t)t->idx};
        return send_bytes(t->sock, b, 4);
    }
    tsync__rblob rec;
    tsync__rmsg h;
    tsync__relay_hello(&h, &rec, S[t->shop].shop_id, t->cert, t->cert_len);
    return send_msg(t->sock, &h);
}

/* Seals envelopes for the sales first..first+n-1 of till t (one sale each, or one run of
 * `batches` sales each when pl is a run) into one RPUT with request id req. */
static int put(till_t *t, uint64_t first, uint32_t n, const payload *pl, uint64_t req)
{
    tsync__renv env[512];
    BENCH_CHECK(n <= 512, "too many envelopes");
    for (uint32_t i = 0; i < n; i++) {
        tsync__env_header h = {.epoch = 1};
        memcpy(h.shop_id, S[t->shop].shop_id, 16);
        memcpy(h.origin, t->origin, 16);
        h.first_seq = first + i * pl->batches;
        h.last_seq = h.first_seq + pl->batches - 1;
        if (h.first_seq > 1) memcpy(h.prev_hash, t->last_hash, 32);
        randombytes_buf(t->last_hash, 32);
        memcpy(h.last_hash, t->last_hash, 32);
        uint8_t *b;
        size_t bl;
        char err[TSYNC__ERRLEN];
        BENCH_CHECK(tsync__env_seal(&h, S[t->shop].key, pl->p, pl->len, &b, &bl, err) == 0,
                    "seal: %s", err);
        memcpy(env[i].origin, t->origin, 16);
        env[i].first_seq = h.first_seq;
        env[i].last_seq = h.last_seq;
        env[i].bytes = b;
        env[i].len = bl;
    }
    tsync__rmsg m = {.type = TSYNC__R_PUT, .req = req, .nenvs = n, .envs = env};
    int rc = send_msg(t->sock, &m);
    for (uint32_t i = 0; i < n; i++) free((void *)env[i].bytes);
    return rc;
}

/* One sale of till t in phase ph: an RPUT of one envelope (req = its seq). */
static void sale(till_t *t, int ph)
{
    t->seq++;
    till_grow(t);
    size_t i = t->seq - 1;
    t->phase[i] = (uint8_t)ph;
    t->got[i] = t->acked[i] = 0;
    t->inflight++;
    D.puts[ph]++;
    t->sent[i] = bench_now();
    put(t, t->seq, 1, D.pl, t->seq); /* not sent: the session is down, resent after RHELLO */
}

/* Envelopes of another till arrived at till t (by push: timed; by RGET: not). */
static void arrived(till_t *t, const tsync__renv *e, uint32_t n, int by_push)
{
    double now = bench_now();
    for (uint32_t k = 0; k < n; k++) {
        int o = origin_idx(e[k].origin);
        BENCH_CHECK(o >= 0 && o < NT && o != t->idx, "an envelope of unknown origin %d", o);
        till_t *a = &T[o];
        if (a->shop != t->shop) {
            D.push_foreign++;
            bench_fail(__FILE__, __LINE__, "till %d (shop %d) got an envelope of shop %d", t->idx,
                       t->shop, a->shop);
        }
        for (uint64_t q = e[k].first_seq; q <= e[k].last_seq; q++) {
            BENCH_CHECK(q >= 1 && q <= a->seq, "till %d: seq %" PRIu64 " of till %d not put",
                        t->idx, q, o);
            /* got counts the tills holding it; one bit per receiving till of the shop */
            int bit = 1 << (t->idx - t->shop * C.tills);
            if (a->got[q - 1] & bit) {
                if (by_push) D.push_dup++;
                continue;
            }
            a->got[q - 1] |= (uint8_t)bit;
            if (by_push) D.pushes++;
            int have = __builtin_popcount(a->got[q - 1]);
            if (have == C.tills - 1 && by_push)
                vec_add(&D.lat[a->phase[q - 1]], (now - a->sent[q - 1]) * 1e3);
        }
    }
}

static uint64_t get_req = 1ull << 40; /* RGET request ids (above any seq) */

static void on_msg(till_t *t, const uint8_t *d, size_t n)
{
    if (D.base) {
        if (n == 2 && !memcmp(d, "HI", 2)) {
            t->served = 1;
            return;
        }
        if (n == 3 && !memcmp(d, "ACK", 3)) { /* in order: the oldest put not acknowledged */
            BENCH_CHECK(t->inflight > 0, "baseline: an ACK for nothing");
            t->inflight--, t->stored++, D.acks++;
            for (uint64_t q = 0; q < t->seq; q++)
                if (!t->acked[q]) {
                    t->acked[q] = 1;
                    break;
                }
            return;
        }
    }
    tsync__arena a = {0};
    tsync__rmsg m;
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_decode(d, n, &m, &a, err) == 0, "till %d: decode: %s", t->idx, err);
    switch (m.type) {
    case TSYNC__R_HAVE:
        BENCH_CHECK(!t->served, "till %d: RHAVE twice", t->idx);
        t->served = 1;
        for (uint64_t q = 1; q <= t->seq; q++) /* what the cut session left unacknowledged */
            if (!t->acked[q - 1]) put(t, q, 1, D.pl, q), t->inflight++, D.resent++;
        break;
    case TSYNC__R_ERR:
        bench_fail(__FILE__, __LINE__, "till %d: the relay refused (%s): %.*s", t->idx,
                   tsync__rerr_name(m.code), (int)m.line_len, m.line);
    case TSYNC__R_ACK:
        /* a duplicate only for an RPUT sent again after a cut session (it may have been stored) */
        BENCH_CHECK(m.req >= 1 && m.req <= t->seq && m.stored + m.dup == 1 &&
                        (m.dup == 0 || t->sessions > 1),
                    "till %d: RACK %" PRIu64 " stored %" PRIu64 " dup %" PRIu64, t->idx, m.req,
                    m.stored, m.dup);
        BENCH_CHECK(!t->acked[m.req - 1] || m.dup, "till %d: seq %" PRIu64 " stored twice", t->idx,
                    m.req);
        if (t->inflight) t->inflight--;
        D.acks++;
        if (!t->acked[m.req - 1]) {
            t->acked[m.req - 1] = 1, t->stored++;
            D.env_bytes += D.env1, D.envs++;
            vec_add(&D.ack[t->phase[m.req - 1]], (bench_now() - t->sent[m.req - 1]) * 1e3);
        }
        break;
    case TSYNC__R_PUT: /* the baseline forwards the put itself */
        BENCH_CHECK(D.base, "till %d: an RPUT from the relay", t->idx);
        arrived(t, m.envs, m.nenvs, 1);
        break;
    case TSYNC__R_ENV:
        arrived(t, m.envs, m.nenvs, m.req == 0);
        if (m.req != 0 && m.more) { /* a gap fill: ask for the rest */
            tsync__rmsg g = {.type = TSYNC__R_GET,
                             .req = get_req++,
                             .from_seq = m.envs[m.nenvs - 1].last_seq + 1,
                             .max_bytes = 8u << 20};
            memcpy(g.origin, m.envs[0].origin, 16);
            send_msg(t->sock, &g);
        }
        break;
    default:
        bench_fail(__FILE__, __LINE__, "till %d: message type %u", t->idx, m.type);
    }
    tsync__arena_free(&a);
}

static void sample_rss(int ph)
{
    double now = bench_now();
    if (now < D.next_rss || D.base) return;
    D.next_rss = now + 1.0;
    if (D.nrs == D.caprs) {
        D.caprs = D.caprs ? D.caprs * 2 : 256;
        D.rs = realloc(D.rs, D.caprs * sizeof *D.rs);
        BENCH_CHECK(D.rs, "out of memory");
    }
    rss_sample *r = &D.rs[D.nrs++];
    r->t = now - D.t0;
    r->phase = ph;
    proc_sample(D.srv, &r->rss, &r->anon, &r->cpu);
}

/* The next event of a monitor (0: none now). */
static int mon_event(void *mon)
{
    zmq_msg_t a, b;
    zmq_msg_init(&a);
    if (zmq_msg_recv(&a, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&a);
        return 0;
    }
    uint16_t ev = 0;
    if (zmq_msg_size(&a) >= 2) memcpy(&ev, zmq_msg_data(&a), 2);
    zmq_msg_init(&b);
    if (zmq_msg_more(&a)) zmq_msg_recv(&b, mon, 0);
    zmq_msg_close(&a);
    zmq_msg_close(&b);
    return ev;
}

/* A session of till t came up (RHELLO now) or went down (what it had in flight is lost with the
 * connection's queues: resent once the next session is served). */
static void on_mon(till_t *t)
{
    for (int ev; (ev = mon_event(t->mon)) != 0;) {
        if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
            t->up = 1;
            if (++t->sessions > 1) D.cuts++;
            hello(t);
        } else if (ev == ZMQ_EVENT_DISCONNECTED) {
            t->up = t->served = 0;
            t->inflight = 0;
            if (D.base) /* the baseline's ACKs carry no id: forget what was in flight */
                for (uint64_t q = 0; q < t->seq; q++) t->acked[q] = 1;
        }
    }
}

/* Polls every till's socket and monitor once (waiting up to ms) and handles what came. */
static void pump(int ms)
{
    int rc = zmq_poll(D.items, 2 * NT, ms);
    BENCH_CHECK(rc >= 0 || errno == EINTR, "zmq_poll: %s", zmq_strerror(errno));
    for (int i = 0; i < NT && rc > 0; i++) {
        if (D.items[2 * i + 1].revents & ZMQ_POLLIN) on_mon(&T[i]);
        if (!(D.items[2 * i].revents & ZMQ_POLLIN)) continue;
        for (int k = 0; k < 64; k++) {
            zmq_msg_t m;
            zmq_msg_init(&m);
            if (zmq_msg_recv(&m, T[i].sock, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&m);
                break;
            }
            on_msg(&T[i], zmq_msg_data(&m), zmq_msg_size(&m));
            zmq_msg_close(&m);
        }
    }
}

/* Connects every till and waits for each to be served. */
static double connect_all(void)
{
    double t0 = bench_now();
    for (int i = 0; i < NT; i++) {
        T[i].sock = dealer(T[i].pk, T[i].sk, &T[i].mon);
        T[i].served = T[i].up = 0;
        T[i].sessions = 0;
        D.items[2 * i] = (zmq_pollitem_t){.socket = T[i].sock, .events = ZMQ_POLLIN};
        D.items[2 * i + 1] = (zmq_pollitem_t){.socket = T[i].mon, .events = ZMQ_POLLIN};
    }
    for (;;) {
        int n = 0;
        for (int i = 0; i < NT; i++) n += T[i].served;
        if (n == NT) break;
        BENCH_CHECK(bench_now() - t0 < 120, "%d of %d tills served after 120 s", n, NT);
        pump(20);
    }
    return bench_now() - t0;
}

static void close_all(void)
{
    for (int i = 0; i < NT; i++) {
        zmq_socket_monitor(T[i].sock, NULL, 0);
        zmq_close(T[i].mon);
        zmq_close(T[i].sock);
        T[i].sock = T[i].mon = NULL;
    }
}

/* Runs phase ph for secs seconds, then waits (up to 90 s) for what it put to be acknowledged and
 * pushed. Returns the seconds the load ran. */
static double run_phase(int ph, double secs, bench_rng *r)
{
    double t0 = bench_now(), end = t0 + secs;
    double lo = ph == PH_PACED ? C.lo : C.hlo, hi = ph == PH_PACED ? C.hi : C.hhi;
    for (int i = 0; i < NT; i++) T[i].next_at = t0 + urand(r, 0, hi) / 1e3;
    for (double now = t0; now < end; now = bench_now()) {
        double wake = end;
        for (int i = 0; i < NT; i++) {
            till_t *t = &T[i];
            if (ph == PH_SAT) {
                while (t->served && t->inflight < (uint64_t)C.window) sale(t, ph);
                continue;
            }
            if (t->next_at <= now) {
                if (t->served) sale(t, ph); /* a till whose session is down sells offline */
                t->next_at += urand(r, lo, hi) / 1e3;
            }
            if (t->next_at < wake) wake = t->next_at;
        }
        sample_rss(ph);
        double w = (wake - bench_now()) * 1e3;
        pump(ph == PH_SAT ? 5 : w < 0 ? 0 : w > 10 ? 10 : (int)w);
    }
    double ran = bench_now() - t0;
    /* drain: every put acknowledged, and (outside saturation) pushed to both other tills */
    double dl = bench_now() + 90; /* an overloaded relay catches up slowly */
    for (;;) {
        uint64_t open = 0, missing = 0;
        for (int i = 0; i < NT; i++)
            for (uint64_t q = 0; q < T[i].seq; q++) {
                open += !T[i].acked[q];
                /* a push is lost only with a cut session: then RGET fetches it (fill_gaps) */
                if (ph != PH_SAT && !D.cuts && T[i].phase[q] == ph &&
                    __builtin_popcount(T[i].got[q]) < C.tills - 1)
                    missing++;
            }
        if (!open && !missing) break;
        if (bench_now() > dl) {
            BENCH_CHECK(!open, "%s: %" PRIu64 " RPUTs never acknowledged", PH_NAME[ph], open);
            bench_fail(__FILE__, __LINE__,
                       "%s: %" PRIu64 " envelopes never pushed to every other till of their shop",
                       PH_NAME[ph], missing);
        }
        sample_rss(ph);
        pump(10);
    }
    return ran;
}

/* Every till fetches by RGET what it lacks of its shop's other tills (pushes are best effort: the
 * relay drops one it cannot queue, and none reaches a till while its session is down), asking
 * again every 2 s while anything is missing; then every envelope must be at every other till. */
static uint64_t fill_gaps(void)
{
    uint64_t asked = 0;
    double dl = bench_now() + 60, next = 0;
    for (;;) {
        uint64_t missing = 0;
        for (int i = 0; i < NT; i++)
            for (uint64_t q = 0; q < T[i].seq; q++)
                missing += __builtin_popcount(T[i].got[q]) < C.tills - 1;
        if (!missing) break;
        BENCH_CHECK(bench_now() < dl, "%" PRIu64 " envelopes missing at a till after RGET",
                    missing);
        if (bench_now() >= next) {
            next = bench_now() + 2;
            for (int i = 0; i < NT; i++) {
                till_t *t = &T[i];
                int bit = 1 << (t->idx - t->shop * C.tills);
                for (int k = 0; k < C.tills && t->served; k++) {
                    till_t *a = &T[t->shop * C.tills + k];
                    uint64_t q = 0;
                    while (q < a->seq && (a->got[q] & bit)) q++;
                    if (a == t || q == a->seq) continue;
                    tsync__rmsg g = {.type = TSYNC__R_GET,
                                     .req = get_req++,
                                     .from_seq = q + 1,
                                     .max_bytes = 8u << 20};
                    memcpy(g.origin, a->origin, 16);
                    if (send_msg(t->sock, &g) == 0) asked++;
                }
            }
        }
        pump(10);
    }
    return asked;
}

/* ---------------------------------------------------------------- catch-up */

/* The next message on s within 30 s (m initialised by the caller, closed by the caller). */
static void recv_one(void *s, zmq_msg_t *m, const char *what)
{
    zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
    double dl = bench_now() + 30;
    while (zmq_msg_recv(m, s, ZMQ_DONTWAIT) < 0) {
        BENCH_CHECK(bench_now() < dl, "%s: nothing from the relay in 30 s", what);
        zmq_poll(&it, 1, 100);
    }
}

static const tsync__rmsg *recv_rmsg(till_t *t, zmq_msg_t *m, tsync__arena *a, tsync__rmsg *out,
                                    const char *what)
{
    recv_one(t->sock, m, what);
    char err[TSYNC__ERRLEN];
    BENCH_CHECK(tsync__relay_decode(zmq_msg_data(m), zmq_msg_size(m), out, a, err) == 0,
                "%s: decode: %s", what, err);
    if (out->type == TSYNC__R_ERR)
        bench_fail(__FILE__, __LINE__, "%s: the relay refused (%s): %.*s", what,
                   tsync__rerr_name(out->code), (int)out->line_len, out->line);
    return out;
}

/* A DEALER for t whose session is up (its monitor said so). */
static void dealer_up(till_t *t)
{
    t->sock = dealer(t->pk, t->sk, &t->mon);
    zmq_pollitem_t it = {.socket = t->mon, .events = ZMQ_POLLIN};
    double dl = bench_now() + 30;
    while (mon_event(t->mon) != ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
        BENCH_CHECK(bench_now() < dl, "no session with the server in 30 s");
        zmq_poll(&it, 1, 100);
    }
}

static void dealer_close(till_t *t)
{
    zmq_socket_monitor(t->sock, NULL, 0);
    zmq_close(t->mon);
    zmq_close(t->sock);
}

static void say_hello(till_t *t)
{
    zmq_msg_t m;
    zmq_msg_init(&m);
    tsync__arena a = {0};
    tsync__rmsg r;
    hello(t);
    recv_rmsg(t, &m, &a, &r, "catch-up hello");
    BENCH_CHECK(r.type == TSYNC__R_HAVE, "catch-up: RHELLO answered by type %u", r.type);
    tsync__arena_free(&a);
    zmq_msg_close(&m);
}

typedef struct {
    double load_s, secs, base_s;
    uint64_t envs, bytes, msgs, env_bytes;
} cu_res;

/* A till of shop sh stores C.batches sales as envelopes of pl (pl->batches sales each); a new
 * till of the shop then reads them all with RGET following `more`. sizes: the RENV sizes. */
static cu_res catchup(int sh, int idx, const payload *pl, vec *sizes)
{
    cu_res out = {0};
    till_t a, b;
    till_make(&a, idx, sh);
    till_make(&b, idx + 1, sh);
    dealer_up(&a);
    dealer_up(&b);
    say_hello(&a);
    BENCH_CHECK(C.batches % (long)pl->batches == 0, "--batches must be a multiple of --run %zu",
                pl->batches);
    uint64_t E = (uint64_t)C.batches / pl->batches, sent = 0, stored = 0, inflight = 0;
    uint32_t per = (uint32_t)((4u << 20) / (pl->len + 256));
    per = per > 256 ? 256 : per < 1 ? 1 : per;
    double t0 = bench_now();
    while (stored < E) {
        while (sent < E && inflight < 4) {
            uint32_t n = (uint32_t)(E - sent < per ? E - sent : per);
            BENCH_CHECK(put(&a, sent * pl->batches + 1, n, pl, sent + 1) == 0,
                        "catch-up: the relay cut the session");
            for (uint32_t k = 0; k < n; k++) D.env_bytes += TSYNC__ENV_HEADER_BYTES + pl->len + 16;
            D.envs += n;
            sent += n, inflight++;
        }
        zmq_msg_t m;
        zmq_msg_init(&m);
        tsync__arena ar = {0};
        tsync__rmsg r;
        recv_rmsg(&a, &m, &ar, &r, "catch-up load");
        BENCH_CHECK(r.type == TSYNC__R_ACK && r.dup == 0, "catch-up load: type %u dup %" PRIu64,
                    r.type, r.dup);
        stored += r.stored, inflight--;
        tsync__arena_free(&ar);
        zmq_msg_close(&m);
    }
    out.load_s = bench_now() - t0;
    out.envs = E;
    /* the new till: RHELLO (its RHAVE must show 1..batches), then RGET ... following more */
    zmq_msg_t m;
    zmq_msg_init(&m);
    tsync__arena ar = {0};
    tsync__rmsg r;
    hello(&b);
    recv_rmsg(&b, &m, &ar, &r, "catch-up hello");
    BENCH_CHECK(r.type == TSYNC__R_HAVE && r.norigins == 1 && r.origins[0].nranges == 1 &&
                    r.origins[0].ranges[0].first == 1 &&
                    r.origins[0].ranges[0].last == (uint64_t)C.batches,
                "catch-up: RHAVE does not show 1..%ld", C.batches);
    tsync__arena_free(&ar);
    zmq_msg_close(&m);
    uint64_t next = 1;
    t0 = bench_now();
    for (;;) {
        tsync__rmsg g = {
            .type = TSYNC__R_GET, .req = next, .from_seq = next, .max_bytes = 8u << 20};
        memcpy(g.origin, a.origin, 16);
        BENCH_CHECK(send_msg(b.sock, &g) == 0, "catch-up: the relay cut the session");
        zmq_msg_init(&m);
        recv_rmsg(&b, &m, &ar, &r, "catch-up");
        BENCH_CHECK(r.type == TSYNC__R_ENV && r.req == next && r.nenvs > 0,
                    "catch-up: RGET from %" PRIu64 " answered by type %u", next, r.type);
        out.bytes += zmq_msg_size(&m);
        out.msgs++;
        vec_add(sizes, (double)zmq_msg_size(&m));
        for (uint32_t k = 0; k < r.nenvs; k++) {
            BENCH_CHECK(r.envs[k].first_seq == next,
                        "catch-up: expected seq %" PRIu64 ", got %" PRIu64, next,
                        r.envs[k].first_seq);
            next = r.envs[k].last_seq + 1;
            out.env_bytes += r.envs[k].len;
        }
        int more = r.more;
        tsync__arena_free(&ar);
        zmq_msg_close(&m);
        if (!more) break;
    }
    out.secs = bench_now() - t0;
    BENCH_CHECK(next == (uint64_t)C.batches + 1, "catch-up ended at seq %" PRIu64 " of %ld",
                next - 1, C.batches);
    dealer_close(&a);
    dealer_close(&b);
    free(a.cert);
    free(b.cert);
    return out;
}

/* The catch-up's reads replayed against the baseline server: the same sizes, one request each. */
static double catchup_base(const vec *sizes)
{
    till_t t = {.idx = BASE_MAX_TILLS - 1};
    crypto_sign_keypair(t.pk, t.sk);
    dealer_up(&t);
    BENCH_CHECK(hello(&t) == 0, "baseline: no session");
    zmq_msg_t m;
    zmq_msg_init(&m);
    recv_one(t.sock, &m, "baseline hello");
    zmq_msg_close(&m);
    double t0 = bench_now();
    for (size_t i = 0; i < sizes->n; i++) {
        size_t want = (size_t)sizes->v[i];
        uint8_t g[5] = {'G', (uint8_t)(want >> 24), (uint8_t)(want >> 16), (uint8_t)(want >> 8),
                        (uint8_t)want};
        BENCH_CHECK(send_bytes(t.sock, g, 5) == 0, "baseline: session cut");
        zmq_msg_init(&m);
        recv_one(t.sock, &m, "baseline read");
        BENCH_CHECK(zmq_msg_size(&m) == want, "baseline read of %zu bytes got %zu", want,
                    zmq_msg_size(&m));
        zmq_msg_close(&m);
    }
    double s = bench_now() - t0;
    dealer_close(&t);
    return s;
}

/* ---------------------------------------------------------------- a run of the three phases */

typedef struct {
    double ran[PH_N], p50[PH_N], p99[PH_N], max[PH_N], ack50[PH_N], ack99[PH_N];
    double cpu[PH_N]; /* server CPU seconds in the phase */
    uint64_t puts[PH_N];
    double connect_s;
    uint64_t gaps, pushes, push_dup, cuts, resent;
} run_res;

static void reset_tills(void)
{
    for (int i = 0; i < NT; i++) {
        till_t *t = &T[i];
        t->seq = t->inflight = t->stored = 0;
        if (t->got) memset(t->got, 0, t->cap);
    }
    for (int p = 0; p < PH_N; p++) D.lat[p].n = D.ack[p].n = 0, D.puts[p] = 0;
    D.pushes = D.push_dup = D.push_foreign = D.acks = D.cuts = D.resent = 0;
}

static run_res run_all(const double secs[PH_N], uint64_t seed)
{
    run_res o = {0};
    bench_rng r = {seed};
    reset_tills();
    o.connect_s = connect_all();
    D.t0 = bench_now();
    D.next_rss = 0;
    for (int p = 0; p < PH_N; p++) {
        long rss, anon;
        double c0, c1;
        proc_sample(D.srv, &rss, &anon, &c0);
        fprintf(stderr, "[relay %s] %s, %.0f s\n", D.base ? "baseline" : "relay", PH_NAME[p],
                secs[p]);
        o.ran[p] = run_phase(p, secs[p], &r);
        proc_sample(D.srv, &rss, &anon, &c1);
        o.cpu[p] = c1 - c0;
        o.puts[p] = D.puts[p];
        o.p50[p] = pct(&D.lat[p], 0.50), o.p99[p] = pct(&D.lat[p], 0.99);
        o.max[p] = pct(&D.lat[p], 1.0);
        o.ack50[p] = pct(&D.ack[p], 0.50), o.ack99[p] = pct(&D.ack[p], 0.99);
    }
    uint64_t puts = 0, stored = 0;
    for (int i = 0; i < NT; i++) puts += T[i].seq, stored += T[i].stored;
    BENCH_CHECK(puts == stored || (D.base && D.cuts),
                "%" PRIu64 " envelopes put, %" PRIu64 " acknowledged", puts, stored);
    o.pushes = D.pushes, o.push_dup = D.push_dup, o.cuts = D.cuts, o.resent = D.resent;
    if (!D.base) o.gaps = fill_gaps();
    BENCH_CHECK(D.push_dup == 0 || D.base, "%" PRIu64 " envelopes pushed twice to a till",
                D.push_dup);
    close_all();
    return o;
}

/* ---------------------------------------------------------------- main */

static void parse_ms(int argc, char **argv, const char *name, double *lo, double *hi)
{
    const char *v = bench_arg(argc, argv, name);
    if (!v) return;
    if (sscanf(v, "%lf-%lf", lo, hi) < 1 || *lo <= 0) {
        fprintf(stderr, "%s takes LO-HI in ms\n", name);
        exit(2);
    }
    if (!strchr(v, '-')) *hi = *lo;
    if (*hi < *lo) {
        fprintf(stderr, "%s: HI below LO\n", name);
        exit(2);
    }
}

static uint64_t file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

int main(int argc, char **argv)
{
    static const char *const known[] = {
        "--shops=",        "--tills=",       "--duration=", "--heavy-seconds=", "--sat-seconds=",
        "--base-seconds=", "--interval-ms=", "--heavy-ms=", "--window=",        "--batches=",
        "--run=",          "--io-threads=",  "--store=",    "--cli=",           "--seed=",
        "--quick",         "--help",         NULL};
    bench_args_check(
        argc, argv, known,
        "usage: bench_relay [--quick] [options]\n"
        "  --shops N          shops admitted (200); --tills N tills per shop (3, 2..8)\n"
        "  --duration S       the paced phase, RSS sampled every second (120)\n"
        "  --interval-ms LO-HI  ms between a till's sales, paced (1000-3000)\n"
        "  --heavy-ms LO-HI   the same, heavy phase (400-800); --heavy-seconds S (20)\n"
        "  --sat-seconds S    saturation (20), each till keeps --window N RPUTs in flight (2)\n"
        "  --base-seconds S   the baseline server's three phases together (30; split 2:1:1)\n"
        "  --batches N        catch-up batches (100000); --run N sales per envelope in the\n"
        "                     second catch-up (100)\n"
        "  --io-threads N     the load driver's ZeroMQ I/O threads (2)\n"
        "  --store URL        passed to `tillsync relay run --store URL`\n"
        "  --cli PATH         the tillsync program (default: the build's; also $TSYNC_CLI)\n"
        "  --quick            --duration 6 --heavy-seconds 2 --sat-seconds 2 --base-seconds 4\n"
        "                     --batches 10000 (a correctness check in about 20 s)\n"
        "  --seed S\n"
        "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    C.quick = bench_has_flag(argc, argv, "--quick");
    C.shops = (int)bench_arg_int(argc, argv, "--shops", 200);
    C.tills = (int)bench_arg_int(argc, argv, "--tills", 3);
    C.duration = (double)bench_arg_int(argc, argv, "--duration", C.quick ? 6 : 120);
    C.heavy_s = (double)bench_arg_int(argc, argv, "--heavy-seconds", C.quick ? 2 : 20);
    C.sat_s = (double)bench_arg_int(argc, argv, "--sat-seconds", C.quick ? 2 : 20);
    C.base_s = (double)bench_arg_int(argc, argv, "--base-seconds", C.quick ? 4 : 30);
    C.window = (int)bench_arg_int(argc, argv, "--window", 2);
    C.batches = (long)bench_arg_int(argc, argv, "--batches", C.quick ? 10000 : 100000);
    C.run = (int)bench_arg_int(argc, argv, "--run", 100);
    C.io_threads = (int)bench_arg_int(argc, argv, "--io-threads", 2);
    C.store = bench_arg(argc, argv, "--store");
    C.cli = bench_arg(argc, argv, "--cli");
    if (!C.cli) C.cli = getenv("TSYNC_CLI");
    if (!C.cli || !*C.cli) C.cli = TSYNC_CLI;
    C.seed = bench_seed(argc, argv, 20240601);
    C.lo = 1000, C.hi = 3000, C.hlo = 400, C.hhi = 800;
    parse_ms(argc, argv, "--interval-ms", &C.lo, &C.hi);
    parse_ms(argc, argv, "--heavy-ms", &C.hlo, &C.hhi);
    if (C.shops < 1 || C.shops > 2000 || C.tills < 2 || C.tills > 8 || C.duration < 3 ||
        C.window < 1 || C.batches < 1 || C.run < 1 || C.run > 4096 || C.io_threads < 1 ||
        C.base_s < 1 || (C.store && !*C.store)) {
        fprintf(stderr, "bad arguments (shops 1..2000, tills 2..8, duration >= 3; see --help)\n");
        return 2;
    }
    BENCH_CHECK(access(C.cli, X_OK) == 0, "no tillsync program at %s (--cli PATH)", C.cli);
    signal(SIGPIPE, SIG_IGN);
    BENCH_CHECK(sodium_init() >= 0, "sodium_init");

    const char *dir = bench_dir_init("bench_relay");
    atexit(kill_kids);
    bench_header("bench_relay",
                 "the blind relay: shops x tills on loopback, push latency, "
                 "throughput, RSS, catch-up",
                 C.seed, 1);
    printf("%ld cores, load average %s; ZeroMQ %d.%d.%d; relay: `%s relay run` (its own process)"
           "%s%s; load driver: one process, one thread, one ZeroMQ context with %d I/O threads, "
           "one CURVE DEALER per till\n",
           sysconf(_SC_NPROCESSORS_ONLN), load3(), ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR,
           ZMQ_VERSION_PATCH, C.cli, C.store ? " --store " : "", C.store ? C.store : "",
           C.io_threads);
    /* 1. what a sale weighs */
    payload one = {0}, many = {0};
    measure_payloads(&one, &many, C.run);
    printf("a sale (1 sales row, 2 sale_lines, 2 stock decrements; its own batch): compact run "
           "%zu B, zstd + signature = payload %zu B; a run of %d sales: compact %zu B, payload "
           "%zu B (%.1f B per sale)\n",
           one.crun, one.len, C.run, many.crun, many.len, (double)many.len / C.run);

    /* 2. shops, tills, the relay's directory */
    int nshops = C.shops + 2; /* + the two catch-up shops */
    S = calloc((size_t)nshops, sizeof *S);
    NT = C.shops * C.tills;
    T = calloc((size_t)NT, sizeof *T);
    D.items = calloc(2 * (size_t)NT, sizeof *D.items);
    BENCH_CHECK(S && T && D.items, "out of memory");
    char rdir[4400], rpk[65];
    snprintf(rdir, sizeof rdir, "%s/relay", dir);
    BENCH_TS(tsync_relay_init(rdir, rpk));
    for (int i = 0; i < nshops; i++) {
        shop_make(&S[i], i);
        BENCH_TS(tsync_relay_admit(rdir, S[i].admin_pk, 4096, 0));
    }
    for (int i = 0; i < NT; i++) till_make(&T[i], i, i / C.tills);

    /* 3. the baseline server (forked before this process makes a ZeroMQ context) and the relay */
    uint8_t bpk[32], bsk[32];
    crypto_box_keypair(bpk, bsk);
    const char *bep_file = bench_path("base.ep");
    fflush(NULL);
    base_pid = fork();
    BENCH_CHECK(base_pid >= 0, "fork: %s", strerror(errno));
    if (base_pid == 0) {
        base_serve(bep_file, bpk, bsk, C.tills);
        _exit(0);
    }
    char bep[256] = "";
    for (int i = 0; i < 200 && !bep[0]; i++) {
        usleep(20000);
        size_t n = 0;
        FILE *f = fopen(bep_file, "r");
        if (f) n = fread(bep, 1, sizeof bep - 1, f), fclose(f);
        bep[n] = 0;
    }
    BENCH_CHECK(bep[0], "the baseline server did not start");
    char rep_ep[256];
    relay_start(rdir, rep_ep, sizeof rep_ep);
    uint8_t red[32];
    BENCH_CHECK(sodium_hex2bin(red, 32, rpk, 64, NULL, NULL, NULL) == 0, "relay key");

    /* room for two sets of tills (the baseline's closed sockets are reaped in the background
     * while the relay's open) of three sockets each (the DEALER, its monitor's two ends), and
     * their descriptors (eventfds, TCP) */
    struct rlimit nf;
    if (getrlimit(RLIMIT_NOFILE, &nf) == 0 && nf.rlim_cur < nf.rlim_max) {
        nf.rlim_cur = nf.rlim_max;
        setrlimit(RLIMIT_NOFILE, &nf);
    }
    D.ctx = zmq_ctx_new();
    BENCH_CHECK(D.ctx && zmq_ctx_set(D.ctx, ZMQ_IO_THREADS, C.io_threads) == 0 &&
                    zmq_ctx_set(D.ctx, ZMQ_MAX_SOCKETS, 8 * NT + 64) == 0,
                "zmq context");
    D.pl = &one;
    D.env1 = TSYNC__ENV_HEADER_BYTES + one.len + TSYNC__ENV_TAG_BYTES;
    printf("%d shops x %d tills = %d sessions; paced: a sale every %.0f-%.0f ms per till for %.0f "
           "s; heavy: every %.0f-%.0f ms for %.0f s; saturate: %d RPUTs in flight per till for "
           "%.0f s; baseline: the same against a plain ZeroMQ CURVE ROUTER (%.0f s)\n",
           C.shops, C.tills, NT, C.lo, C.hi, C.duration, C.hlo, C.hhi, C.heavy_s, C.window, C.sat_s,
           C.base_s);
    fflush(stdout);

    /* 4. the baseline's phases, then the relay's */
    D.base = 1;
    D.srv = base_pid;
    memcpy(D.server_curve, bpk, 32);
    snprintf(D.ep, sizeof D.ep, "%s", bep);
    double la0 = load1();
    double bsecs[PH_N] = {C.base_s / 2, C.base_s / 4, C.base_s / 4};
    run_res B = run_all(bsecs, C.seed);
    D.base = 0;
    D.srv = relay_pid;
    BENCH_CHECK(crypto_sign_ed25519_pk_to_curve25519(D.server_curve, red) == 0, "relay curve");
    snprintf(D.ep, sizeof D.ep, "%s", rep_ep);
    double secs[PH_N] = {C.duration, C.heavy_s, C.sat_s};
    run_res R = run_all(secs, C.seed + 1);
    double la1 = load1();

    /* 5. catch-up: one sale per envelope, then runs of --run sales */
    vec sz1 = {0}, szr = {0};
    fprintf(stderr, "[relay catchup] %ld batches, one sale per envelope\n", C.batches);
    cu_res cu1 = catchup(C.shops, NT, &one, &sz1);
    fprintf(stderr, "[relay catchup] %ld batches, %d sales per envelope\n", C.batches, C.run);
    cu_res cur = catchup(C.shops + 1, NT + 2, &many, &szr);
    D.base = 1;
    memcpy(D.server_curve, bpk, 32);
    snprintf(D.ep, sizeof D.ep, "%s", bep);
    cu1.base_s = catchup_base(&sz1);
    cur.base_s = catchup_base(&szr);
    double la2 = load1();

    /* 6. stop both servers; the relay's files hold what it stored */
    long rss_end, anon_end;
    double relay_cpu;
    proc_sample(relay_pid, &rss_end, &anon_end, &relay_cpu);
    {
        till_t q = {.idx = BASE_MAX_TILLS - 2};
        crypto_sign_keypair(q.pk, q.sk);
        dealer_up(&q);
        BENCH_CHECK(send_bytes(q.sock, "QUIT", 5) == 0, "baseline: no session");
        int st;
        for (int i = 0; i < 100 && waitpid(base_pid, &st, WNOHANG) != base_pid; i++) usleep(50000);
        dealer_close(&q);
    }
    zmq_ctx_term(D.ctx);
    kill_kids();
    char f1[4500], f2[4500];
    snprintf(f1, sizeof f1, "%s/relay.db", rdir);
    snprintf(f2, sizeof f2, "%s/relay.db-wal", rdir);
    uint64_t files = file_size(f1) + file_size(f2);
    double over = D.envs ? ((double)files - (double)D.env_bytes) / (double)D.envs : NAN;

    /* 7. the relay's process over the paced phase: RSS flat? */
    int w = C.duration >= 30 ? 10 : (int)(C.duration / 3);
    double a0 = 0, a1 = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
    int n0 = 0, n1 = 0, np = 0;
    long rfirst = -1, rlast = 0, rmax = 0;
    double tlast = 0;
    for (size_t i = 0; i < D.nrs; i++)
        if (D.rs[i].phase == PH_PACED) tlast = D.rs[i].t;
    for (size_t i = 0; i < D.nrs; i++) {
        rss_sample *x = &D.rs[i];
        if (x->phase != PH_PACED) continue;
        if (rfirst < 0) rfirst = x->rss;
        rlast = x->rss;
        rmax = x->rss > rmax ? x->rss : rmax;
        if (x->t < w + 1) a0 += (double)x->anon, n0++;
        if (x->t > tlast - w) a1 += (double)x->anon, n1++;
        double xm = x->t / 60.0, ym = (double)x->rss / 1024.0;
        sx += xm, sy += ym, sxx += xm * xm, sxy += xm * ym, np++;
    }
    BENCH_CHECK(n0 && n1 && np > 1, "no RSS samples of the relay");
    a0 /= n0 * 1024.0, a1 /= n1 * 1024.0;
    double slope = (np * sxy - sx * sy) / (np * sxx - sx * sx); /* MB per minute */
    long rmax_all = 0;
    for (size_t i = 0; i < D.nrs; i++) rmax_all = D.rs[i].rss > rmax_all ? D.rs[i].rss : rmax_all;

    /* 8. sizes on the wire (one sale): an RPUT of one envelope, the push, the RACK */
    size_t env_len = TSYNC__ENV_HEADER_BYTES + one.len + TSYNC__ENV_TAG_BYTES, put_len, push_len,
           ack_len;
    {
        uint8_t *zero = calloc(1, env_len), *b;
        tsync__renv e = {.first_seq = 1000, .last_seq = 1000, .bytes = zero, .len = env_len};
        tsync__rmsg m = {.type = TSYNC__R_PUT, .req = 1000, .nenvs = 1, .envs = &e};
        char err[TSYNC__ERRLEN];
        BENCH_CHECK(zero && !tsync__relay_encode(&m, &b, &put_len, err), "encode");
        free(b);
        m.type = TSYNC__R_ENV, m.req = 0;
        BENCH_CHECK(!tsync__relay_encode(&m, &b, &push_len, err), "encode");
        free(b);
        tsync__rmsg a = {.type = TSYNC__R_ACK, .req = 1000, .stored = 1};
        BENCH_CHECK(!tsync__relay_encode(&a, &b, &ack_len, err), "encode");
        free(b);
        free(zero);
    }

    /* 9. print */
    printf("\nsessions: %d admitted in %.2f s (baseline server: %.2f s)\n", NT, R.connect_s,
           B.connect_s);
    printf("%-9s | %8s %9s %9s %9s %9s | %9s %9s %9s | %9s %9s | %11s\n", "phase", "puts", "env/s",
           "p50 ms", "p99", "max", "base p50", "p99", "max", "RACK p50", "p99", "relay CPU/env");
    for (int p = 0; p < PH_N; p++)
        printf("%-9s | %8" PRIu64 " %9.0f %9.2f %9.2f %9.2f | %9.2f %9.2f %9.2f | %9.2f %9.2f | "
               "%8.1f us\n",
               PH_NAME[p], R.puts[p], (double)R.puts[p] / R.ran[p], R.p50[p], R.p99[p], R.max[p],
               B.p50[p], B.p99[p], B.max[p], R.ack50[p], R.ack99[p],
               R.cpu[p] / (double)R.puts[p] * 1e6);
    printf("(latency: per sale, its RPUT until the push reached the last of the shop's other %d "
           "tills; base: the plain ZeroMQ CURVE ROUTER forwarding the same bytes)\n",
           C.tills - 1);
    printf("pushes received %" PRIu64 " of %" PRIu64 "; %" PRIu64
           " RGETs for envelopes not pushed; sessions the relay cut %" PRIu64 " (RPUTs sent again "
           "after RHELLO: %" PRIu64 "); baseline: forwards received %" PRIu64 " of %" PRIu64
           ", sessions cut %" PRIu64 "\n",
           R.pushes, (R.puts[0] + R.puts[1] + R.puts[2]) * (uint64_t)(C.tills - 1), R.gaps, R.cuts,
           R.resent, B.pushes, (B.puts[0] + B.puts[1] + B.puts[2]) * (uint64_t)(C.tills - 1),
           B.cuts);
    printf("relay RSS over the paced phase: first %.1f MB, last %.1f MB, max %.1f MB, slope %+.2f "
           "MB/min; RssAnon mean of the first %d s %.1f MB, of the last %d s %.1f MB; max over "
           "all phases %.1f MB, at the end (after the catch-ups) %.1f MB\n",
           rfirst / 1024.0, rlast / 1024.0, rmax / 1024.0, slope, w, a0, w, a1, rmax_all / 1024.0,
           rss_end / 1024.0);
    printf("catch-up of %ld batches (the relay's share: RGET following more, no decrypting or "
           "merging): one sale per envelope %.3f s, %" PRIu64 " RENVs, %.2f MB (baseline %.3f s); "
           "%d sales per envelope %.3f s, %" PRIu64 " RENVs, %.2f MB (baseline %.3f s); "
           "storing them took %.2f s and %.2f s\n",
           C.batches, cu1.secs, cu1.msgs, cu1.bytes / 1e6, cu1.base_s, C.run, cur.secs, cur.msgs,
           cur.bytes / 1e6, cur.base_s, cu1.load_s, cur.load_s);
    printf("sizes: envelope of one sale %zu B (header %u + payload %zu + tag %u); RPUT %zu B, "
           "push RENV %zu B, RACK %zu B (ZeroMQ CURVE framing not included); relay files %.1f "
           "MB for %" PRIu64 " envelopes of %.1f MB: %.1f B of storage per envelope beyond its "
           "bytes\n",
           env_len, TSYNC__ENV_HEADER_BYTES, one.len, TSYNC__ENV_TAG_BYTES, put_len, push_len,
           ack_len, files / 1e6, D.envs, D.env_bytes / 1e6, over);
    printf("relay CPU over the whole run %.1f s; load driver CPU %.1f s; load average %.2f -> "
           "%.2f -> %.2f (now %.2f)\n",
           relay_cpu, bench_cpu(), la0, la1, la2, load1());

    bench_report rep = {.bench = "relay"};
    bench_fig *f;
    char nm[80], lb[88];
    int pass = 1;
    for (int p = 0; p < PH_N; p++) {
        const char *pn = PH_NAME[p];
        double rate = (double)R.puts[p] / R.ran[p], brate = (double)B.puts[p] / B.ran[p];
        snprintf(nm, sizeof nm, "%s.env_per_s", pn);
        snprintf(lb, sizeof lb, "%s: envelopes stored per s (vs plain zmq)", pn);
        f = bench_add(&rep, nm, lb, rate, "env/s", brate, BENCH_T_NONE, 0);
        bench_extra(f, "shops=%d tills=%d secs=%.1f load=%.2f", C.shops, C.tills, R.ran[p], la1);
        if (p == PH_SAT) bench_extra(f, "window=%d", C.window);
        snprintf(nm, sizeof nm, "%s.p50", pn);
        snprintf(lb, sizeof lb, "%s: RPUT to push at both others, p50", pn);
        bench_add(&rep, nm, lb, R.p50[p], "ms", B.p50[p], BENCH_T_NONE, 0);
        snprintf(nm, sizeof nm, "%s.p99", pn);
        snprintf(lb, sizeof lb, "%s: RPUT to push at both others, p99", pn);
        f = bench_add(&rep, nm, lb, R.p99[p], "ms", B.p99[p],
                      p == PH_SAT ? BENCH_T_NONE : BENCH_T_VALUE_LT, 50);
        bench_extra(f, "samples=%zu load=%.2f", D.lat[p].n, la1);
        if (p != PH_SAT) pass &= R.p99[p] < 50;
        snprintf(nm, sizeof nm, "%s.max", pn);
        snprintf(lb, sizeof lb, "%s: RPUT to push at both others, max", pn);
        bench_add(&rep, nm, lb, R.max[p], "ms", B.max[p], BENCH_T_NONE, 0);
        snprintf(nm, sizeof nm, "%s.cpu_per_env", pn);
        snprintf(lb, sizeof lb, "%s: server CPU per envelope (vs plain zmq)", pn);
        f = bench_add(&rep, nm, lb, R.cpu[p] / (double)R.puts[p] * 1e6, "us",
                      B.cpu[p] / (double)B.puts[p] * 1e6, BENCH_T_NONE, 0);
        bench_extra(f, "cpu_s=%.2f", R.cpu[p]);
    }
    double rss_limit = a0 * 1.10 + 8;
    f = bench_add(&rep, "paced.rss_anon_last", "paced: relay RssAnon, last vs first window", a1,
                  "MB", a0, BENCH_T_VALUE_LE, rss_limit);
    bench_extra(f, "window_s=%d rss_first=%.1f rss_last=%.1f rss_max=%.1f slope_mb_min=%.3f", w,
                rfirst / 1024.0, rlast / 1024.0, rmax / 1024.0, slope);
    pass &= a1 <= rss_limit;
    bench_add(&rep, "paced.rss_max", "paced: relay RSS, max", rmax / 1024.0, "MB", NAN,
              BENCH_T_NONE, 0);
    bench_add(&rep, "rss_max_all", "relay RSS, max over all phases", rmax_all / 1024.0, "MB", NAN,
              BENCH_T_NONE, 0);
    double cu_target = 5.0 * (double)C.batches / 100000.0;
    cu_res *cus[2] = {&cu1, &cur};
    const char *cun[2] = {"catchup.one_sale", "catchup.runs"};
    for (int k = 0; k < 2; k++) {
        cu_res *c = cus[k];
        snprintf(nm, sizeof nm, "%s.time", cun[k]);
        snprintf(lb, sizeof lb, "catch-up %ld, %s: RGETs (vs plain zmq)", C.batches,
                 k ? "runs" : "1 sale/env");
        f = bench_add(&rep, nm, lb, c->secs, "s", c->base_s, BENCH_T_VALUE_LT, cu_target);
        bench_extra(f,
                    "batches=%ld envelopes=%" PRIu64 " renvs=%" PRIu64 " sales_per_env=%d "
                    "load=%.2f",
                    C.batches, c->envs, c->msgs, k ? C.run : 1, la2);
        pass &= c->secs < cu_target;
        snprintf(nm, sizeof nm, "%s.bytes", cun[k]);
        snprintf(lb, sizeof lb, "catch-up %ld, %s: bytes (vs envelope bytes)", C.batches,
                 k ? "runs" : "1 sale/env");
        f = bench_add(&rep, nm, lb, (double)c->bytes / 1e6, "MB", (double)c->env_bytes / 1e6,
                      BENCH_T_NONE, 0);
        bench_extra(f, "bytes_per_batch=%.1f", (double)c->bytes / (double)C.batches);
        snprintf(nm, sizeof nm, "%s.store_rate", cun[k]);
        snprintf(lb, sizeof lb, "catch-up %ld, %s: storing, env/s", C.batches,
                 k ? "runs" : "1 sale/env");
        bench_add(&rep, nm, lb, (double)c->envs / c->load_s, "env/s", NAN, BENCH_T_NONE, 0);
    }
    f = bench_add(&rep, "size.payload_one_sale", "size: one sale's payload (zstd run + sig)",
                  (double)one.len, "B", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "crun=%zu envelope=%zu rput=%zu push=%zu rack=%zu run%d_payload=%zu", one.crun,
                env_len, put_len, push_len, ack_len, C.run, many.len);
    f = bench_add(&rep, "size.storage_per_env", "size: relay storage per envelope, beyond it", over,
                  "B", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "files=%" PRIu64 " envelopes=%" PRIu64 " envelope_bytes=%" PRIu64, files, D.envs,
                D.env_bytes);
    bench_add(&rep, "connect", "sessions admitted (all), s (vs plain zmq)", R.connect_s, "s",
              B.connect_s, BENCH_T_NONE, 0);
    f = bench_add(&rep, "sessions_cut", "sessions the server cut (vs plain zmq)", (double)R.cuts,
                  "sessions", (double)B.cuts, BENCH_T_NONE, 0);
    bench_extra(f, "resent=%" PRIu64 " rgets=%" PRIu64, R.resent, R.gaps);
    bench_print(&rep);
    printf("\nSUMMARY relay: %s: %d shops x %d tills; paced p99 %.2f ms (plain zmq %.2f), heavy "
           "p99 %.2f ms (target < 50); saturation %.0f env/s (plain zmq %.0f), relay CPU %.1f "
           "us/env; RssAnon %.1f -> %.1f MB (limit %.1f); catch-up of %ld batches %.2f s / %.2f s "
           "(target < %.1f); load %.2f\n",
           pass ? "PASS" : "MISS", C.shops, C.tills, R.p99[0], B.p99[0], R.p99[1],
           (double)R.puts[2] / R.ran[2], (double)B.puts[2] / B.ran[2],
           R.cpu[2] / (double)R.puts[2] * 1e6, a0, a1, rss_limit, C.batches, cu1.secs, cur.secs,
           cu_target, load1());
    printf("bench_relay: all correctness checks passed (load average %.2f)\n", load1());
    for (int i = 0; i < NT; i++) free(T[i].cert), free(T[i].sent), free(T[i].phase), free(T[i].got);
    for (int p = 0; p < PH_N; p++) free(D.lat[p].v), free(D.ack[p].v);
    free(sz1.v), free(szr.v), free(D.rs), free(D.items), free(T), free(S), free(one.p),
        free(many.p);
    return 0;
}
