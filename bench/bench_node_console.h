/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_node_console.h — bench_node's console case (issue 12, "Performance"), included by
 * bench_node.c after its other cases so that it reuses their till processes, pacing and checks
 * (lat_run) rather than copying them; not a header of its own API.
 *
 * console  (a) Does the console slow sync? The latency case's mesh run (--tills processes, till 0
 *          sells --sales paced 5-10 ms, the others timestamp each sale's arrival) twice per
 *          repetition: with no console (the baseline), and with each node serving its console on
 *          a free loopback port and a viewer connected to each: a client process with one thread
 *          per till that keeps GET /api/events open (reading every server-sent event) and GETs
 *          /api/status once a second, as the console page does. --con-reps (3) repetitions, the
 *          side that goes first alternating; figures are medians. Target: propagation p99 with
 *          viewers <= 1.10 x without.
 *          (b) /api/status latency while the till sells: the same mesh with the console and
 *          viewers on, till 0 selling --rate (200) sales/s on a fixed schedule for
 *          --status-seconds (15), while another thread of the client times GET /api/status at
 *          till 0 every 10 ms (connect, request, the whole answer: one request per connection,
 *          HTTP/1.0, tests/lib/http_client.c). Baseline, same run: 200 such requests while the
 *          tills are connected and idle, before the first sale. Target: p99 < 5 ms.
 * Checks (exit 1): every viewer got its stream's first event and 200 answers to every poll;
 * every sale reaches every till; all tills hash equal and hold every sale.
 */

#include <poll.h>

#include "tests/lib/http_client.h"

#define CON_MAXS 20000 /* status samples kept per phase */
#define CON_IDLE 200   /* idle samples (the baseline) */

typedef struct {
    int measure; /* (b): till 0's /api/status is timed */
    volatile int ready, meas_ready;
    volatile int64_t events[MAXT], polls[MAXT];
    int nidle, nbusy;
    double idle[CON_MAXS], busy[CON_MAXS]; /* ms */
} con_shm;

static con_shm *CN;

typedef struct {
    int i;
    char hdr[200];
    pthread_t th;
} con_thr;

/* "Authorization: Bearer TOKEN\r\n" for till i (the token its node wrote at first start). */
static void con_token(int i, char *hdr, size_t n)
{
    char path[4500], tok[160];
    int pn = snprintf(path, sizeof path, "%s.console-token", T[i].db);
    BENCH_CHECK(pn > 0 && (size_t)pn < sizeof path, "path too long: %s", T[i].db);
    FILE *f = fopen(path, "r");
    BENCH_CHECK(f, "cannot read %s: %s", path, strerror(errno));
    BENCH_CHECK(fgets(tok, sizeof tok, f), "%s is empty", path);
    fclose(f);
    tok[strcspn(tok, "\r\n")] = 0;
    snprintf(hdr, n, "Authorization: Bearer %s\r\n", tok);
}

/* One GET /api/status on its own connection; its time in ms. */
static double con_status(const char *addr, const char *hdr)
{
    hc_reply r;
    double t0 = bench_now();
    int rc = hc_request(&r, addr, "GET", "/api/status", hdr, NULL, 0, HC_LENGTH);
    double ms = (bench_now() - t0) * 1e3;
    BENCH_CHECK(rc == 0 && r.status == 200 && r.body_len > 0 && r.body[0] == '{',
                "GET /api/status at %s: status %d", addr, r.status);
    hc_reply_free(&r);
    return ms;
}

/* A viewer of till c->i: the event stream read as it comes, /api/status once a second. */
static void *con_viewer(void *arg)
{
    con_thr *c = arg;
    const char *addr = L->con_addr[c->i];
    int fd = hc_stream_open(addr, "/api/events", c->hdr);
    BENCH_CHECK(fd >= 0, "till %d: cannot connect to the console at %s", c->i, addr);
    char *buf = NULL;
    size_t len = 0;
    long at = hc_stream_until(fd, &buf, &len, 0, "\n\n", 10000);
    at = at > 0 ? hc_stream_until(fd, &buf, &len, 0, "event: status", 10000) : at;
    BENCH_CHECK(at > 0 && strncmp(buf, "HTTP/1.", 7) == 0 && strncmp(buf + 9, "200", 3) == 0,
                "till %d: no status event on GET /api/events within 10 s", c->i);
    free(buf);
    CN->events[c->i] = 1;
    __atomic_add_fetch(&CN->ready, 1, __ATOMIC_SEQ_CST);
    /* Count the events (a name split between two reads is found through the kept tail). */
    static const char ev[] = "event: status";
    char chunk[65536 + sizeof ev];
    size_t keep = 0;
    double next_poll = bench_now() + 1;
    while (!ld(&L->stop)) {
        struct pollfd p = {fd, POLLIN, 0};
        if (poll(&p, 1, 50) > 0) {
            ssize_t k = recv(fd, chunk + keep, 65536, 0);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) {
                BENCH_CHECK(ld(&L->stop), "till %d: the console closed the event stream", c->i);
                break;
            }
            size_t end = keep + (size_t)k;
            chunk[end] = 0;
            for (char *h = strstr(chunk, ev); h; h = strstr(h + 1, ev)) CN->events[c->i]++;
            keep = end < sizeof ev - 1 ? end : sizeof ev - 1;
            memmove(chunk, chunk + end - keep, keep);
        }
        if (bench_now() >= next_poll) {
            con_status(addr, c->hdr);
            CN->polls[c->i]++;
            next_poll += 1;
        }
    }
    close(fd);
    return NULL;
}

/* (b): till 0's /api/status timed, idle first (the baseline), then while the writer sells. */
static void *con_measure(void *arg)
{
    con_thr *c = arg;
    const char *addr = L->con_addr[0];
    for (int k = 0; k < CON_IDLE; k++) {
        CN->idle[CN->nidle++] = con_status(addr, c->hdr);
        sleep_s(0.01);
    }
    st(&CN->meas_ready, 1);
    wait_flag(&L->go);
    volatile double *last = &L->t_commit[L->S];
    while (*last == 0 && CN->nbusy < CON_MAXS) {
        CN->busy[CN->nbusy++] = con_status(addr, c->hdr);
        sleep_s(0.01);
    }
    return NULL;
}

/* The client process: one viewer per till, and in (b) the timing thread. */
static void con_client(void *arg)
{
    (void)arg;
    con_thr th[MAXT + 1];
    int n = L->n;
    for (int i = 0; i < n; i++) {
        th[i].i = i;
        con_token(i, th[i].hdr, sizeof th[i].hdr);
        BENCH_CHECK(pthread_create(&th[i].th, NULL, con_viewer, &th[i]) == 0, "pthread_create");
    }
    if (CN->measure) {
        th[n] = th[0];
        BENCH_CHECK(pthread_create(&th[n].th, NULL, con_measure, &th[n]) == 0, "pthread_create");
    }
    for (int i = 0; i < n + CN->measure; i++) pthread_join(th[i].th, NULL);
}

static int con_all_ready(void *x)
{
    (void)x;
    return ld(&CN->ready) == L->n && (!CN->measure || ld(&CN->meas_ready));
}

/* lat_run's hook: every session is up; start the viewers before the first sale. */
static void con_on_ready(void)
{
    spawn("console client", con_client, NULL);
    wait_for(con_all_ready, NULL, 60, "the console viewers");
}

/* One latency run (mesh) with or without the console and its viewers. */
static lat_result con_run(int console, const char *prefix)
{
    int n = C.n, S = C.warmup + C.sales;
    tills_setup(n, prefix);
    memset(CN, 0, offsetof(con_shm, idle));
    CN->measure = console == 2;
    lat_console = console != 0;
    lat_on_ready = console ? con_on_ready : NULL;
    lat_result r = lat_run(0, 0);
    lat_console = 0;
    lat_on_ready = NULL;
    tills_same_hash(n);
    for (int i = 0; i < n; i++) {
        BENCH_CHECK(file_count(T[i].db, "SELECT count(*) FROM sales") == S, "till %d lacks sales",
                    i);
        if (console)
            BENCH_CHECK(CN->events[i] >= 1 && (r.wall < 3 || CN->polls[i] >= 1),
                        "till %d's viewer: %lld events, %lld polls", i, (long long)CN->events[i],
                        (long long)CN->polls[i]);
    }
    return r;
}

static int case_console(bench_report *rep)
{
    int n = C.n, R = C.con_reps, pass = 1;
    CN = bench_shared(sizeof *CN);
    char nm[80], lb[88];
    bench_fig *f;

    /* (a) propagation with and without viewers */
    int S = C.warmup + C.sales;
    size_t sz = lat_alloc(n, S);
    printf("\n-- console (a): propagation, mesh of %d tills, till 0 sells %d sales (+%d warm-up) "
           "one every %.0f-%.0f ms; without the console vs with it on and a viewer on each till "
           "(GET /api/events kept open, GET /api/status every second); %d repetition%s, "
           "alternating which goes first\n",
           n, C.sales, C.warmup, C.ivl_lo, C.ivl_hi, R, R == 1 ? "" : "s");
    printf("%-4s %-8s | %9s %9s %9s | %8s %8s | %s\n", "rep", "console", "p50 ms", "p99", "max",
           "events", "polls", "load");
    fflush(stdout);
    double v[2][3][16];
    double la0 = bench_load1();
    for (int r = 0; r < R; r++) {
        for (int j = 0; j < 2; j++) {
            int con = r % 2 ? !j : j;
            fprintf(stderr, "[node console] repetition %d/%d, %s\n", r + 1, R,
                    con ? "with viewers" : "without the console");
            lat_result res = con_run(con, con ? "con_on_" : "con_off_");
            v[con][0][r] = res.far.p50;
            v[con][1][r] = res.far.p99;
            v[con][2][r] = res.far.max;
            int64_t ev = 0, po = 0;
            for (int i = 0; i < n && con; i++) ev += CN->events[i], po += CN->polls[i];
            printf("%-4d %-8s | %9.3f %9.3f %9.3f | %8lld %8lld | %s\n", r + 1,
                   con ? "viewers" : "off", res.far.p50, res.far.p99, res.far.max, (long long)ev,
                   (long long)po, loadavg());
            fflush(stdout);
        }
    }
    double la1 = bench_load1();
    munmap(L, sz);
    static const char *const fig[3] = {"p50", "p99", "max"};
    double med[2][3];
    for (int k = 0; k < 3; k++) {
        double spread[2];
        for (int con = 0; con < 2; con++) {
            spread[con] = bench_spread(v[con][k], R);
            med[con][k] = bench_median(v[con][k], R);
        }
        snprintf(nm, sizeof nm, "console.mesh.%s", fig[k]);
        snprintf(lb, sizeof lb, "console: propagation %s with viewers (vs none)", fig[k]);
        f = bench_add(rep, nm, lb, med[1][k], "ms", med[0][k],
                      k == 1 ? BENCH_T_RATIO_LE : BENCH_T_NONE, 1.10);
        bench_extra(f, "tills=%d sales=%d reps=%d spread=%.2f base_spread=%.2f load=%.2f", n,
                    C.sales, R, spread[1], spread[0], la1);
    }
    int pass_a = med[1][1] <= 1.10 * med[0][1];
    printf("propagation p99 (median of %d): %.3f ms with viewers, %.3f ms without, ratio %.3f "
           "(target <= 1.10: %s); load average %.2f -> %.2f\n",
           R, med[1][1], med[0][1], med[1][1] / med[0][1], pass_a ? "PASS" : "MISS", la0, la1);

    /* (b) /api/status while till 0 sells --rate sales/s */
    int keep_sales = C.sales;
    C.sales = C.rate * C.status_seconds;
    S = C.warmup + C.sales;
    sz = lat_alloc(n, S);
    for (int k = 0; k <= S; k++) L->ivl[k] = 1.0 / C.rate;
    printf("\n-- console (b): GET /api/status at till 0 every 10 ms (a connection each) while it "
           "sells %d sales/s for %d s (fixed schedule), mesh of %d tills, console on and a viewer "
           "on each; baseline: %d requests while idle, before the first sale\n",
           C.rate, C.status_seconds, n, CON_IDLE);
    fflush(stdout);
    fprintf(stderr, "[node console] /api/status under %d sales/s\n", C.rate);
    la0 = bench_load1();
    lat_fixed = 1;
    lat_result res = con_run(2, "con_status_");
    lat_fixed = 0;
    la1 = bench_load1();
    double rate = (double)(S - 1) / (L->t_commit[S] - L->t_commit[1]);
    int ni = CN->nidle, nb = CN->nbusy;
    BENCH_CHECK(ni == CON_IDLE && nb >= 10, "only %d idle and %d busy /api/status samples", ni, nb);
    lat_stat idle = lat_summary(CN->idle, ni, 0), busy = lat_summary(CN->busy, nb, 0);
    printf("%-22s | %9s %9s %9s | %s\n", "GET /api/status", "p50 ms", "p99", "max", "requests");
    printf("%-22s | %9.3f %9.3f %9.3f | %d\n", "idle (baseline)", idle.p50, idle.p99, idle.max, ni);
    printf("%-22s | %9.3f %9.3f %9.3f | %d\n", "selling", busy.p50, busy.p99, busy.max, nb);
    printf("sales/s achieved %.1f (target rate %d); propagation meanwhile p50 %.3f p99 %.3f max "
           "%.3f ms; load average %.2f -> %.2f (%s)\n",
           rate, C.rate, res.far.p50, res.far.p99, res.far.max, la0, la1, loadavg());
    double bv[3] = {busy.p50, busy.p99, busy.max}, iv[3] = {idle.p50, idle.p99, idle.max};
    for (int k = 0; k < 3; k++) {
        snprintf(nm, sizeof nm, "console.status.%s", fig[k]);
        snprintf(lb, sizeof lb, "console: GET /api/status %s selling (vs idle)", fig[k]);
        f = bench_add(rep, nm, lb, bv[k], "ms", iv[k], k == 1 ? BENCH_T_VALUE_LT : BENCH_T_NONE, 5);
        bench_extra(f, "tills=%d rate=%d achieved=%.1f requests=%d load=%.2f", n, C.rate, rate, nb,
                    la1);
    }
    int pass_b = busy.p99 < 5;
    munmap(L, sz);
    munmap(CN, sizeof *CN);
    C.sales = keep_sales;
    pass = pass_a && pass_b;
    printf("\nSUMMARY console: %s: propagation p99 %.2f ms with viewers vs %.2f ms without (ratio "
           "%.3f, target <= 1.10: %s); GET /api/status at %d sales/s p50 %.2f p99 %.2f max %.2f ms "
           "(target p99 < 5 ms: %s)\n",
           pass ? "PASS" : "MISS", med[1][1], med[0][1], med[1][1] / med[0][1],
           pass_a ? "PASS" : "MISS", C.rate, busy.p50, busy.p99, busy.max,
           pass_b ? "PASS" : "MISS");
    return pass;
}
