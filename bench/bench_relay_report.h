/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_relay_report.h — bench_relay's results: the servers' RSS over the paced phase
 * (first and last windows, slope; the relay, the baseline server beside it, nats-server with
 * --nats), the sizes on the wire, the printed table, the RESULT lines and the SUMMARY. Part of
 * bench_relay (included once, by bench/bench_relay.c).
 */
#ifndef TSYNC_BENCH_BENCH_RELAY_REPORT_H
#define TSYNC_BENCH_BENCH_RELAY_REPORT_H

typedef struct {
    int n;                 /* samples */
    double a0, a1;         /* RssAnon, MB: mean of the first and of the last w seconds */
    double slope;          /* RSS, MB per minute (least squares) */
    long first, last, max; /* RSS, KiB */
} rss_stat;

/* RSS over the paced phase of the relay (base 0) or the baseline server (base 1), or with nats
 * of nats-server (beside the relay). */
static rss_stat paced_rss(int base, int nats, int w)
{
    rss_stat o = {.first = -1};
    double sx = 0, sy = 0, sxx = 0, sxy = 0, tlast = 0;
    int n0 = 0, n1 = 0;
    for (size_t i = 0; i < D.nrs; i++)
        if (D.rs[i].phase == PH_PACED && D.rs[i].base == base) tlast = D.rs[i].t;
    for (size_t i = 0; i < D.nrs; i++) {
        const rss_sample *x = &D.rs[i];
        if (x->phase != PH_PACED || x->base != base) continue;
        long rss = nats ? x->nrss : x->rss, anon = nats ? x->nanon : x->anon;
        if (o.first < 0) o.first = rss;
        o.last = rss;
        o.max = rss > o.max ? rss : o.max;
        if (x->t < w + 1) o.a0 += (double)anon, n0++;
        if (x->t > tlast - w) o.a1 += (double)anon, n1++;
        double xm = x->t / 60.0, ym = (double)rss / 1024.0;
        sx += xm, sy += ym, sxx += xm * xm, sxy += xm * ym, o.n++;
    }
    if (n0) o.a0 /= n0 * 1024.0;
    if (n1) o.a1 /= n1 * 1024.0;
    o.slope = o.n > 1 ? (o.n * sxy - sx * sy) / (o.n * sxx - sx * sx) : NAN;
    return o;
}

/* Every RSS sample as CSV (--rss-csv): the curve behind the slope. */
static void rss_csv(const char *path)
{
    FILE *f = fopen(path, "w");
    BENCH_CHECK(f, "%s: %s", path, strerror(errno));
    fprintf(f, "server,phase,t_s,rss_kib,rss_anon_kib,cpu_s,nats_rss_kib,nats_anon_kib\n");
    for (size_t i = 0; i < D.nrs; i++) {
        const rss_sample *x = &D.rs[i];
        fprintf(f, "%s,%s,%.1f,%ld,%ld,%.2f,%ld,%ld\n", x->base ? "baseline" : "relay",
                PH_NAME[x->phase], x->t, x->rss, x->anon, x->cpu, x->nrss, x->nanon);
    }
    BENCH_CHECK(fclose(f) == 0, "%s: %s", path, strerror(errno));
}

/* What main measured, for report. */
typedef struct {
    run_res R, B;
    cu_res cu1, cur;
    const payload *one, *many;
    double la0, la1, la2, relay_cpu;
    long rss_end;
    uint64_t files; /* the store's bytes: relay.db + WAL, or JetStream's store_dir */
} results;

/* Prints the results (a missed target is printed as MISS, and is no failure). */
static void report(const results *res)
{
    const run_res R = res->R, B = res->B;
    cu_res cu1 = res->cu1, cur = res->cur;
    const payload one = *res->one, many = *res->many;
    double la0 = res->la0, la1 = res->la1, la2 = res->la2, relay_cpu = res->relay_cpu;
    long rss_end = res->rss_end;
    uint64_t files = res->files;
    double over = D.envs ? ((double)files - (double)D.env_bytes) / (double)D.envs : NAN;

    /* 7. the relay's process over the paced phase: RSS flat? (and the baseline's, and
     * nats-server's, beside it) */
    int w = C.duration >= 30 ? 10 : (int)(C.duration / 3);
    rss_stat rs = paced_rss(0, 0, w), bs = paced_rss(1, 0, w), ns = paced_rss(0, 1, w);
    BENCH_CHECK(rs.n > 1, "no RSS samples of the relay");
    double a0 = rs.a0, a1 = rs.a1, slope = rs.slope;
    long rfirst = rs.first, rlast = rs.last, rmax = rs.max;
    long rmax_all = 0, nmax_all = 0;
    for (size_t i = 0; i < D.nrs; i++)
        if (!D.rs[i].base) {
            rmax_all = D.rs[i].rss > rmax_all ? D.rs[i].rss : rmax_all;
            nmax_all = D.rs[i].nrss > nmax_all ? D.rs[i].nrss : nmax_all;
        }
    if (C.rss_csv) rss_csv(C.rss_csv);

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
    if (bs.n > 1)
        printf(
            "baseline (plain ZeroMQ CURVE ROUTER, same sessions and messages) RSS over its paced "
            "phase: first %.1f MB, last %.1f MB, slope %+.2f MB/min; RssAnon mean of the first "
            "%d s %.1f MB, of the last %d s %.1f MB\n",
            bs.first / 1024.0, bs.last / 1024.0, bs.slope, w, bs.a0, w, bs.a1);
    if (D.nats > 0)
        printf("nats-server (JetStream, the relay's store) RSS over the paced phase: first %.1f "
               "MB, last %.1f MB, max %.1f MB, slope %+.2f MB/min; max over all phases %.1f MB\n",
               ns.first / 1024.0, ns.last / 1024.0, ns.max / 1024.0, ns.slope, nmax_all / 1024.0);
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
           relay_cpu, bench_cpu(), la0, la1, la2, bench_load1());

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
    f = bench_add(&rep, "paced.rss_slope", "paced: relay RSS slope, MB/min (vs plain zmq)", slope,
                  "MB/min", bs.n > 1 ? bs.slope : NAN, BENCH_T_NONE, 0);
    if (bs.n > 1) bench_extra(f, "base_anon_first=%.1f base_anon_last=%.1f", bs.a0, bs.a1);
    if (D.nats > 0) {
        f = bench_add(&rep, "paced.nats_rss_max", "paced: nats-server RSS, max", ns.max / 1024.0,
                      "MB", NAN, BENCH_T_NONE, 0);
        bench_extra(f, "first=%.1f last=%.1f slope_mb_min=%.3f max_all=%.1f", ns.first / 1024.0,
                    ns.last / 1024.0, ns.slope, nmax_all / 1024.0);
    }
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
           cu_target, bench_load1());
    printf("bench_relay: all correctness checks passed (load average %.2f)\n", bench_load1());
}

#endif
