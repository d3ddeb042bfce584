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
 * 2 s saturate, 10,000 batches, 4 s of baseline. --store URL goes to the relay, and the shops are
 * admitted in that store (an unknown store or option makes the relay refuse to start: the bench
 * fails with its message). --nats starts a nats-server with JetStream on loopback itself (its
 * store_dir in the scratch folder, stopped by PID) and runs the relay on it; nats-server's RSS is
 * sampled beside the relay's. The baseline server's RSS is sampled too: its paced phase is the
 * control for the relay's (the same sessions and messages through plain ZeroMQ); --rss-csv FILE
 * writes every sample, the curve behind the slopes.
 *
 * The parts, one file each, included here once after the configuration C: the payloads, shops
 * and tills (bench_relay_tills.h); the relay and nats-server processes (bench_relay_procs.h); the
 * load driver and its phases (bench_relay_driver.h); the catch-up (bench_relay_catchup.h); the
 * report (bench_relay_report.h); the baseline server (bench_relay_base.h).
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
    const char *store, *cli, *rss_csv;
    int nats; /* --nats: a nats-server with JetStream started here is the relay's store */
} C;

#include "bench/bench_relay_tills.h"
#include "bench/bench_relay_procs.h"
#include "bench/bench_relay_driver.h"
#include "bench/bench_relay_catchup.h"
#include "bench/bench_relay_report.h"

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
        "--rss-csv=",      "--nats",         "--quick",     "--help",           NULL};
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
        "  --store URL        passed to `tillsync relay run --store URL` (shops admitted there)\n"
        "  --nats             start a nats-server with JetStream on loopback (its store in the\n"
        "                     scratch folder, stopped by PID at the end) and use it as --store;\n"
        "                     its RSS is sampled beside the relay's\n"
        "  --rss-csv FILE     every RSS sample (relay, baseline, nats-server) as CSV\n"
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
    C.nats = bench_has_flag(argc, argv, "--nats");
    C.rss_csv = bench_arg(argc, argv, "--rss-csv");
    C.cli = bench_arg(argc, argv, "--cli");
    if (!C.cli) C.cli = getenv("TSYNC_CLI");
    if (!C.cli || !*C.cli) C.cli = TSYNC_CLI;
    C.seed = bench_seed(argc, argv, 20240601);
    C.lo = 1000, C.hi = 3000, C.hlo = 400, C.hhi = 800;
    parse_ms(argc, argv, "--interval-ms", &C.lo, &C.hi);
    parse_ms(argc, argv, "--heavy-ms", &C.hlo, &C.hhi);
    if (C.shops < 1 || C.shops > 2000 || C.tills < 2 || C.tills > 8 || C.duration < 3 ||
        C.window < 1 || C.batches < 1 || C.run < 1 || C.run > 4096 || C.io_threads < 1 ||
        C.base_s < 1 || (C.store && !*C.store) || (C.store && C.nats)) {
        fprintf(stderr, "bad arguments (shops 1..2000, tills 2..8, duration >= 3, not --store "
                        "with --nats; see --help)\n");
        return 2;
    }
    BENCH_CHECK(access(C.cli, X_OK) == 0, "no tillsync program at %s (--cli PATH)", C.cli);
    signal(SIGPIPE, SIG_IGN);
    BENCH_CHECK(sodium_init() >= 0, "sodium_init");

    const char *dir = bench_dir_init("bench_relay");
    atexit(kill_kids);
    signal(SIGINT, on_stop_signal);
    signal(SIGTERM, on_stop_signal);
    static char nats_url[64];
    if (C.nats) { /* before any ZeroMQ context: a forked child inherits none */
        nats_start(dir, nats_url, sizeof nats_url);
        C.store = nats_url;
        D.nats = nats_pid;
    }
    bench_header("bench_relay",
                 "the blind relay: shops x tills on loopback, push latency, "
                 "throughput, RSS, catch-up",
                 C.seed, 1);
    printf("%ld cores, load average %s; ZeroMQ %d.%d.%d; relay: `%s relay run` (its own process)"
           "%s%s%s; load driver: one process, one thread, one ZeroMQ context with %d I/O threads, "
           "one CURVE DEALER per till\n",
           sysconf(_SC_NPROCESSORS_ONLN), load3(), ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR,
           ZMQ_VERSION_PATCH, C.cli, C.store ? " --store " : "", C.store ? C.store : "",
           C.nats ? " (nats-server with JetStream started here, its own process)" : "",
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
        BENCH_TS(tsync_relay_admit_store(rdir, C.store, S[i].admin_pk, 4096, 0));
    }
    for (int i = 0; i < NT; i++) till_make(&T[i], i, i / C.tills);

    /* 3. the baseline server (forked before this process makes a ZeroMQ context) and the relay */
    uint8_t bpk[32], bsk[32];
    crypto_box_keypair(bpk, bsk);
    const char *bep_file = bench_path("base.ep");
    fflush(NULL);
    base_pid = fork();
    BENCH_CHECK(base_pid >= 0, "fork: %s", strerror(errno));
    if (base_pid == 0) { /* nothing of the parent's to stop from here */
        nats_pid = -1;
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
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
    double la0 = bench_load1();
    double bsecs[PH_N] = {C.base_s / 2, C.base_s / 4, C.base_s / 4};
    run_res B = run_all(bsecs, C.seed);
    D.base = 0;
    D.srv = relay_pid;
    BENCH_CHECK(crypto_sign_ed25519_pk_to_curve25519(D.server_curve, red) == 0, "relay curve");
    snprintf(D.ep, sizeof D.ep, "%s", rep_ep);
    double secs[PH_N] = {C.duration, C.heavy_s, C.sat_s};
    run_res R = run_all(secs, C.seed + 1);
    double la1 = bench_load1();

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
    double la2 = bench_load1();

    /* 6. stop the servers; the relay's files (or JetStream's) hold what it stored */
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
    char js[4500];
    snprintf(js, sizeof js, "%s/nats/store", dir);
    uint64_t files = C.nats ? dir_bytes(js) : file_size(f1) + file_size(f2);

    results res = {.R = R,
                   .B = B,
                   .cu1 = cu1,
                   .cur = cur,
                   .one = &one,
                   .many = &many,
                   .la0 = la0,
                   .la1 = la1,
                   .la2 = la2,
                   .relay_cpu = relay_cpu,
                   .rss_end = rss_end,
                   .files = files};
    report(&res);
    for (int i = 0; i < NT; i++) free(T[i].cert), free(T[i].sent), free(T[i].phase), free(T[i].got);
    for (int p = 0; p < PH_N; p++) free(D.lat[p].v), free(D.ack[p].v);
    free(sz1.v), free(szr.v), free(D.rs), free(D.items), free(T), free(S), free(one.p),
        free(many.p);
    return 0;
}
