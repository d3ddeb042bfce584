/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench/bench_node.c — the sync node (tillsync/node.h) on loopback, each till its own process:
 * PERFORMANCE.md's LAN targets. Three cases (--case, default all three):
 *
 * latency  Commit at one till to visible at the others: --tills (5) processes each run a node
 *          (tsync_node_new + tsync_node_start); till 0's main thread sells --sales (1000) sales
 *          (one transaction: a sales row, --lines sale_lines rows, --lines stock decrements of a
 *          PN-counter) through its own plain SQLite connection, paced every 5-10 ms (seeded
 *          random), after --warmup unmeasured ones. Every other till timestamps each sale's
 *          arrival: in the node's on_change callback (after the merge committed) it reads the new
 *          sales through its own connection (--observe callback), or its main thread polls
 *          PRAGMA data_version + a query every 0.2 ms (--observe poll). CLOCK_MONOTONIC is shared
 *          by the processes. Topologies (--topology mesh,star): mesh = every till dials every
 *          lower-numbered till (one session per pair); star = every till dials till 1 (the hub),
 *          so till 0's sales reach tills 2.. in two hops. Baseline, same run, same pacing and
 *          topology: plain ZeroMQ PUSH/PULL over loopback TCP (no CURVE, no SQLite) carrying a
 *          --base-bytes message per sale, received with a blocking zmq_recv (the star's hub
 *          forwards). Figures: p50/p99/max of the time until the sale is visible at the farthest
 *          till (per sale, the last till to see it), per till too. Target: p99 < 10 ms.
 *
 * catchup  A till that missed --batches (100,000) sales, each sealed as its own batch at till A
 *          while it was offline, starts its node (dialling A, whose node runs in another process)
 *          and is current again: the time from just before tsync_node_new at B until B's
 *          on_change callbacks have counted every batch merged (B's vector then covers A's; the
 *          vectors and content hashes are checked afterwards). Bytes over the wire: TCP payload
 *          bytes received and sent by B's process (TCP_INFO tcpi_bytes_received/acked over its
 *          sockets: ZMTP + CURVE framing included, IP/TCP headers not). Baseline, same run: what
 *          `tillsync bundle --since B` + `tillsync merge` do through a file (tsync_store_bundle
 *          at A written to a file, then tsync_store_merge at a copy of B, each in its own
 *          process, store opening included); ratio node/baseline for time, wire bytes/bundle file
 *          size for bytes. Target: < 3 s (scaled linearly when --batches is not 100,000).
 *
 * load     Sustained load: every till sells --rate (200) sales/s for --duration (60) s, mesh.
 *          Each second each till samples, in its process: how many sales of the other tills it
 *          does not see yet ("behind") and the age of the oldest of them ("stale"), its node's
 *          status (they_lack/we_lack summed over its peers), and its RSS and RssAnon. After the
 *          writes stop: time until every till sees every sale. PASS when the lag is bounded (the
 *          mean of the last 10 s of the per-second maximum of "behind" over tills is at most
 *          2x that of the first 10 s + 20 sales, and all tills converge within 10 s after the
 *          writes stop) and memory is flat (no till's RssAnon grows by more than 8 MiB + 10%
 *          from the mean of the first 10 s to the mean of the last 10 s). Windows are 10 s, or
 *          a third of --duration when shorter; the first one starts at second 2 (second 1 holds
 *          the start-up). Also reported: batch copies received per merged batch (duplicates),
 *          wire bytes, CPU of the till processes, and the POS's sale transaction times (they
 *          include waiting for the node's write lock).
 *
 * console  The console's cost to sync (issue 12): latency's mesh with and without a viewer on
 *          every till's console, and GET /api/status times while a till sells --rate sales/s
 *          (bench_node_console.h says how).
 *
 * Checks (a wrong result exits 1): every sale reaches every till; after each case every till
 * hashes equal (tsync_store_hash) and holds every sale; catch-up merges exactly --batches batches
 * and its vector equals A's; the baseline merge merges every batch and refuses nothing.
 * --quick: 300 sales, 20,000 batches, 15 s of load. Load average is printed with every case.
 */
#include "bench/bench_common.h"

#include <jansson.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <zmq.h>

#include "tillsync/node.h"

#define MAXT 16

/* ---------------------------------------------------------------- configuration */

static struct {
    int n;        /* tills */
    int products; /* catalogue */
    int lines;    /* sale_lines per sale */
    int sales, warmup, base_bytes, observe_poll, topos;
    double ivl_lo, ivl_hi; /* ms */
    long batches;
    int duration, rate;
    int tick_ms, reps, verbose, quick;
    int con_reps, status_seconds; /* the console case */
    long window_kb;               /* the node's window_bytes in KiB; 0: its default */
    uint64_t seed;
    const char *dump; /* latency: raw times per sale, appended as CSV */
} C;

/* ---------------------------------------------------------------- small helpers */

static const char *loadavg(void)
{
    static char buf[64];
    buf[0] = 0;
    FILE *f = fopen("/proc/loadavg", "r");
    if (f) {
        if (!fgets(buf, sizeof buf, f)) buf[0] = 0;
        fclose(f);
    }
    char *sp = buf;
    for (int k = 0; k < 3 && sp; k++) sp = strchr(sp + 1, ' ');
    if (sp) *sp = 0;
    return buf;
}

static void sleep_until(double t)
{
    struct timespec ts;
    ts.tv_sec = (time_t)t;
    ts.tv_nsec = (long)((t - (double)ts.tv_sec) * 1e9);
    if (ts.tv_nsec >= 1000000000L) ts.tv_sec++, ts.tv_nsec -= 1000000000L;
    while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR) {
    }
}

static void sleep_s(double s)
{
    sleep_until(bench_now() + s);
}

static int ld(volatile int *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void st(volatile int *p, int v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static int64_t ld64(volatile int64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_ACQUIRE);
}

static void st64(volatile int64_t *p, int64_t v)
{
    __atomic_store_n(p, v, __ATOMIC_RELEASE);
}

static int dbl_cmp(const void *a, const void *b)
{
    return bench_dbl_cmp(a, b);
}

/* Nearest-rank percentile of a sorted array. */
static double pct(const double *v, int n, double p)
{
    return bench_pct_sorted(v, n > 0 ? (size_t)n : 0, p);
}

/* TCP payload bytes received and sent (acknowledged) over every TCP socket of this process. */
static void tcp_bytes(int64_t *rx, int64_t *tx)
{
    *rx = *tx = 0;
    DIR *d = opendir("/proc/self/fd");
    if (!d) return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        int fd = atoi(e->d_name);
        struct stat sb;
        if (fstat(fd, &sb) != 0 || !S_ISSOCK(sb.st_mode)) continue;
        struct tcp_info ti;
        socklen_t len = sizeof ti;
        memset(&ti, 0, sizeof ti);
        if (getsockopt(fd, IPPROTO_TCP, TCP_INFO, &ti, &len) != 0) continue;
        if (len < offsetof(struct tcp_info, tcpi_bytes_received) + sizeof ti.tcpi_bytes_received)
            continue;
        *rx += (int64_t)ti.tcpi_bytes_received;
        *tx += (int64_t)ti.tcpi_bytes_acked;
    }
    closedir(d);
}

/* ---------------------------------------------------------------- child processes */

typedef struct {
    pid_t pid;
    int done, status;
    struct rusage ru;
    char what[48];
} kid;

static kid kids[64];
static int nkids;
static pid_t parent_pid;

static void kids_kill(void)
{
    if (getpid() != parent_pid) return;
    for (int i = 0; i < nkids; i++)
        if (!kids[i].done && kids[i].pid > 0) kill(kids[i].pid, SIGKILL);
    for (int i = 0; i < nkids; i++)
        if (!kids[i].done && kids[i].pid > 0) waitpid(kids[i].pid, NULL, 0);
}

/* Starts fn(arg) in a child process (which dies with the parent) and returns its index. */
static int spawn(const char *what, void (*fn)(void *), void *arg)
{
    BENCH_CHECK(nkids < (int)(sizeof kids / sizeof *kids), "too many children");
    fflush(NULL);
    pid_t pid = fork();
    BENCH_CHECK(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent_pid) _exit(1);
        nkids = 0;
        fn(arg);
        fflush(NULL);
        _exit(0);
    }
    kid *k = &kids[nkids];
    memset(k, 0, sizeof *k);
    k->pid = pid;
    snprintf(k->what, sizeof k->what, "%s", what);
    return nkids++;
}

static void kid_reaped(kid *k, int status)
{
    k->done = 1;
    k->status = status;
    BENCH_CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "%s failed (%s %d)", k->what,
                WIFEXITED(status) ? "exit status" : "signal",
                WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
}

/* Fails at once when a child failed; reaps the ones that ended well. */
static void kids_check(void)
{
    for (int i = 0; i < nkids; i++) {
        kid *k = &kids[i];
        if (k->done) continue;
        int status;
        pid_t w = wait4(k->pid, &status, WNOHANG, &k->ru);
        if (w == k->pid) kid_reaped(k, status);
    }
}

/* Waits for every child (timeout in s), then forgets them. */
static void kids_wait_all(double timeout)
{
    double end = bench_now() + timeout;
    for (;;) {
        kids_check();
        int left = 0;
        for (int i = 0; i < nkids; i++) left += !kids[i].done;
        if (!left) break;
        if (bench_now() >= end) {
            /* A node that does not stop is a finding: name it and show where it is stuck. */
            for (int i = 0; i < nkids; i++) {
                if (kids[i].done) continue;
                fprintf(stderr, "%s (pid %d) still running %.0f s after it was told to stop\n",
                        kids[i].what, (int)kids[i].pid, timeout);
                if (access("/usr/bin/gdb", X_OK) == 0) {
                    char cmd[160];
                    snprintf(cmd, sizeof cmd,
                             "/usr/bin/gdb -batch -p %d -ex 'thread apply all bt' 1>&2 2>/dev/null",
                             (int)kids[i].pid);
                    if (system(cmd) != 0) fprintf(stderr, "(gdb could not attach)\n");
                }
            }
            BENCH_CHECK(0, "children did not end within %.0f s", timeout);
        }
        sleep_s(0.005);
    }
}

/* Waits until pred(ctx) holds, checking the children; fails after timeout s with what. */
static void wait_for(int (*pred)(void *), void *ctx, double timeout, const char *what)
{
    double end = bench_now() + timeout;
    while (!pred(ctx)) {
        kids_check();
        BENCH_CHECK(bench_now() < end, "timed out after %.0f s waiting for %s", timeout, what);
        sleep_s(0.002);
    }
}

/* ---------------------------------------------------------------- tills: files and schema */

typedef struct {
    char db[4400];
    char key[2 * TSYNC_HASH_BYTES + 1];
    int port;
} till_t;

static till_t T[MAXT];

static void json_field(const char *json, const char *name, char *out, size_t n)
{
    json_error_t je;
    json_t *o = json_loads(json, 0, &je);
    BENCH_CHECK(o, "bad JSON: %s", je.text);
    const char *v = json_string_value(json_object_get(o, name));
    BENCH_CHECK(v, "no %s in JSON", name);
    snprintf(out, n, "%s", v);
    json_decref(o);
}

/* Creates till i's database (schema replicated, stock a PN-counter) and learns its key. */
static void till_create(int i, const char *name)
{
    snprintf(T[i].db, sizeof T[i].db, "%s", bench_path(name));
    bench_rm_db(T[i].db);
    tsync_store *s = bench_store_open(T[i].db, TSYNC_SYNC_NORMAL);
    bench_products_replicated(s);
    bench_exec(tsync_store_sqlite(s), BENCH_SALES_SQL);
    BENCH_TS(tsync_store_replicate(s, "sales", NULL, 0));
    BENCH_TS(tsync_store_replicate(s, "sale_lines", NULL, 0));
    char *js = NULL;
    BENCH_TS(tsync_store_state_json(&js, s));
    json_field(js, "public_key", T[i].key, sizeof T[i].key);
    free(js);
    tsync_store_free(s);
}

/* Till 0 writes the catalogue and seals; every other till merges it. */
static void tills_catalogue(int n)
{
    tsync_store *s = bench_store_open(T[0].db, TSYNC_SYNC_NORMAL);
    sqlite3 *db = tsync_store_sqlite(s);
    sqlite3_stmt *ins = bench_prepare(db, "INSERT INTO products VALUES(?1, ?2, ?3, ?4)");
    bench_exec(db, "BEGIN");
    for (int p = 0; p < C.products; p++) {
        char id[16], name[32];
        snprintf(id, sizeof id, "p%05d", p);
        snprintf(name, sizeof name, "Product %d", p);
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(ins, 3, 100 + p % 900);
        sqlite3_bind_int64(ins, 4, 1000000);
        bench_step_done(db, ins);
    }
    bench_exec(db, "COMMIT");
    sqlite3_finalize(ins);
    BENCH_TS(tsync_store_seal(s, NULL));
    uint8_t *b = NULL;
    size_t len = 0;
    BENCH_TS(tsync_store_bundle(&b, &len, s, NULL, NULL));
    char h0[2 * TSYNC_HASH_BYTES + 1];
    snprintf(h0, sizeof h0, "%s", bench_hash_hex(s));
    tsync_store_free(s);
    for (int i = 1; i < n; i++) {
        tsync_store *o = bench_store_open(T[i].db, TSYNC_SYNC_NORMAL);
        tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
        BENCH_TS(tsync_store_merge(o, b, len, &r));
        BENCH_CHECK(r.merged >= 1 && r.refused == 0 && r.held == 0, "catalogue merge at till %d",
                    i);
        tsync_merge_report_clear(&r);
        BENCH_CHECK(strcmp(bench_hash_hex(o), h0) == 0, "till %d differs after the catalogue", i);
        tsync_store_free(o);
    }
    free(b);
}

static void tills_setup(int n, const char *prefix)
{
    for (int i = 0; i < n; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s%d.db", prefix, i);
        till_create(i, name);
    }
    tills_catalogue(n);
}

/* Distinct free loopback ports (bound together, then released). */
static void pick_ports(int n)
{
    int fds[MAXT];
    for (int i = 0; i < n; i++) {
        fds[i] = socket(AF_INET, SOCK_STREAM, 0);
        BENCH_CHECK(fds[i] >= 0, "socket: %s", strerror(errno));
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        a.sin_port = 0;
        socklen_t l = sizeof a;
        BENCH_CHECK(bind(fds[i], (struct sockaddr *)&a, sizeof a) == 0 &&
                        getsockname(fds[i], (struct sockaddr *)&a, &l) == 0,
                    "bind: %s", strerror(errno));
        T[i].port = ntohs(a.sin_port);
    }
    for (int i = 0; i < n; i++) close(fds[i]);
}

/* Content hashes of every till equal; returns till 0's (static). */
static const char *tills_same_hash(int n)
{
    static char h0[2 * TSYNC_HASH_BYTES + 1];
    snprintf(h0, sizeof h0, "%s", bench_file_hash(T[0].db));
    for (int i = 1; i < n; i++) {
        const char *h = bench_file_hash(T[i].db);
        BENCH_CHECK(strcmp(h, h0) == 0, "till %d hashes %s, till 0 %s", i, h, h0);
    }
    return h0;
}

static int64_t file_count(const char *db_path, const char *sql)
{
    sqlite3 *db = NULL;
    BENCH_CHECK(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK, "open %s",
                db_path);
    sqlite3_busy_timeout(db, 10000);
    int64_t v = bench_int(db, sql);
    sqlite3_close(db);
    return v;
}

/* ---------------------------------------------------------------- selling */

/* One sale, one transaction: C.lines lines, their stock decrements, the sale row. */
static void sell(bench_seller *w, int64_t seq)
{
    bench_sell(w, seq, C.lines, C.products);
}

/* ---------------------------------------------------------------- nodes */

static void node_log(void *ctx, int level, const char *line)
{
    static const char *const lv[] = {"", "ERROR", "WARN", "INFO", "DEBUG"};
    fprintf(stderr, "[till %d] %s %s\n", (int)(intptr_t)ctx,
            lv[level >= 1 && level <= 4 ? level : 0], line);
}

/* The console address a node started by node_up serves (NULL: no console), set in the till's
 * process before node_up (the console case, bench_node_console.h). */
static const char *node_console;

/* Opens and starts till i's node on a thread: listening on its port (or not), dialling the tills
 * in dial[0..ndial). */
static tsync_node *node_up(int i, int listen, const int *dial, int ndial, tsync_change_fn ch,
                           tsync_peer_fn pf, void *ctx)
{
    char specs[MAXT][256];
    const char *pp[MAXT];
    for (int k = 0; k < ndial; k++) {
        snprintf(specs[k], sizeof specs[k], "tcp://127.0.0.1:%d#%.64s", T[dial[k]].port,
                 T[dial[k]].key);
        pp[k] = specs[k];
    }
    char lis[64];
    snprintf(lis, sizeof lis, "tcp://127.0.0.1:%d", T[i].port);
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    o.listen = listen ? lis : "";
    o.peers = pp;
    o.npeers = (size_t)ndial;
    o.log_level = C.verbose ? TSYNC_LOG_INFO : TSYNC_LOG_WARN;
    o.log = node_log;
    o.log_ctx = (void *)(intptr_t)i;
    o.on_change = ch;
    o.on_peer = pf;
    o.cb_ctx = ctx;
    o.tick_ms = C.tick_ms;
    o.window_bytes = (size_t)C.window_kb << 10;
    o.console = node_console;
    o.no_mdns = 1; /* loopback only: never announce nor browse on the machine's network */
    tsync_node *nd = NULL;
    BENCH_TS(tsync_node_new(&nd, T[i].db, &o));
    BENCH_TS(tsync_node_start(nd));
    return nd;
}

/* Sessions in state "connected", from the node's status. */
static int node_connected(tsync_node *nd)
{
    char *s = NULL;
    if (tsync_node_status_json(&s, nd) != 0 || !s) return 0;
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    int c = 0;
    json_t *peers = o ? json_object_get(o, "peers") : NULL;
    for (size_t k = 0; peers && k < json_array_size(peers); k++) {
        const char *stt = json_string_value(json_object_get(json_array_get(peers, k), "state"));
        if (stt && strcmp(stt, "connected") == 0) c++;
    }
    json_decref(o);
    return c;
}

typedef struct {
    int64_t they_lack, we_lack, batches_in, batches_out, pending, held, merged, sealed;
} node_counts;

static node_counts node_status(tsync_node *nd)
{
    node_counts r;
    memset(&r, 0, sizeof r);
    char *s = NULL;
    if (tsync_node_status_json(&s, nd) != 0 || !s) return r;
    json_t *o = json_loads(s, 0, NULL);
    free(s);
    if (!o) return r;
    json_t *peers = json_object_get(o, "peers");
    for (size_t k = 0; k < json_array_size(peers); k++) {
        json_t *p = json_array_get(peers, k);
        r.they_lack += json_integer_value(json_object_get(p, "they_lack"));
        r.we_lack += json_integer_value(json_object_get(p, "we_lack"));
        r.batches_in += json_integer_value(json_object_get(p, "batches_in"));
        r.batches_out += json_integer_value(json_object_get(p, "batches_out"));
    }
    r.pending = json_integer_value(json_object_get(o, "pending_out"));
    r.held = json_integer_value(json_object_get(o, "held"));
    r.merged = json_integer_value(json_object_get(o, "batches_merged"));
    r.sealed = json_integer_value(json_object_get(o, "batches_sealed"));
    json_decref(o);
    return r;
}

/* Whom till i dials, and how many sessions it should have. topo 0: mesh; 1: star (hub 1). */
static int topo_dial(int topo, int i, int n, int *dial, int *expect)
{
    int nd = 0;
    if (topo == 0) {
        for (int j = 0; j < i; j++) dial[nd++] = j;
        *expect = n - 1;
    } else {
        if (i != 1) dial[nd++] = 1;
        *expect = i == 1 ? n - 1 : 1;
    }
    return nd;
}

static const char *const TOPO_NAME[2] = {"mesh", "star"};

/* ---------------------------------------------------------------- 1. latency */

typedef struct {
    int n, S, topo, zmq;
    int console; /* each node serves its console on a free port (con_addr) */
    int fixed;   /* the writer keeps a fixed schedule (sale k at start + sum of ivl) */
    char con_addr[MAXT][48];
    volatile int listening[MAXT], ready[MAXT], go, stop, writer_done;
    volatile int seen[MAXT];
    int64_t rx[MAXT], tx[MAXT];
    node_counts nc[MAXT];
    double *ivl;      /* [S + 1]: pause before sale k, s */
    double *t_commit; /* [S + 1] */
    double *t_seen;   /* [n][S + 1] */
} lat_shm;

static lat_shm *L;

typedef struct {
    int idx;
    sqlite3 *db;
    sqlite3_stmt *q, *dv;
    int64_t next, count;
    int64_t dv_last;
} observer;

static double *seen_of(int i)
{
    return L->t_seen + (size_t)i * (size_t)(L->S + 1);
}

/* Timestamps every sale of till 0 not seen yet with t. */
static void obs_scan(observer *o, double t)
{
    double *ts = seen_of(o->idx);
    sqlite3_bind_int64(o->q, 1, o->next);
    int rc;
    while ((rc = sqlite3_step(o->q)) == SQLITE_ROW) {
        int64_t k = sqlite3_column_int64(o->q, 0);
        if (k >= 1 && k <= L->S && ts[k] == 0) {
            ts[k] = t;
            o->count++;
        }
    }
    BENCH_CHECK(rc == SQLITE_DONE, "observer query: %s", sqlite3_errmsg(o->db));
    sqlite3_reset(o->q);
    while (o->next <= L->S && ts[o->next] != 0) o->next++;
    st(&L->seen[o->idx], (int)o->count);
}

static void obs_on_change(void *ctx, const tsync_node_change *c)
{
    (void)c;
    obs_scan(ctx, bench_now());
}

static void lat_writer_wait(void)
{
    double end = bench_now() + 15;
    for (;;) {
        int all = 1;
        for (int j = 1; j < L->n; j++) all &= ld(&L->seen[j]) >= L->S;
        if (all || bench_now() > end) break;
        sleep_s(0.001);
    }
    st(&L->writer_done, 1);
}

static void wait_flag(volatile int *f)
{
    while (!ld(f)) sleep_s(0.001);
}

/* A till process of the node run. */
static void lat_node_till(void *arg)
{
    int i = (int)(intptr_t)arg, dial[MAXT], expect;
    int nd = topo_dial(L->topo, i, L->n, dial, &expect);
    observer ob;
    memset(&ob, 0, sizeof ob);
    bench_seller w;
    sqlite3 *db = bench_plain_open(T[i].db, TSYNC_SYNC_NORMAL);
    if (i == 0) {
        bench_seller_open(&w, db, 0, C.seed * 1000003u);
    } else {
        ob.idx = i;
        ob.db = db;
        ob.next = 1;
        ob.q = bench_prepare(db, "SELECT seq FROM sales WHERE till = 0 AND seq >= ?1");
        ob.dv = bench_prepare(db, "PRAGMA data_version");
    }
    node_console = L->console ? "127.0.0.1:0" : NULL;
    tsync_node *node =
        node_up(i, 1, dial, nd, i && !C.observe_poll ? obs_on_change : NULL, NULL, &ob);
    if (L->console) {
        snprintf(L->con_addr[i], sizeof L->con_addr[i], "%s", tsync_node_console_address(node));
        BENCH_CHECK(L->con_addr[i][0], "till %d: the console does not listen", i);
    }
    st(&L->listening[i], 1);
    double end = bench_now() + 30;
    while (node_connected(node) < expect) {
        BENCH_CHECK(bench_now() < end, "till %d: %d sessions of %d after 30 s", i,
                    node_connected(node), expect);
        sleep_s(0.01);
    }
    st(&L->ready[i], 1);
    wait_flag(&L->go);
    if (i == 0) {
        double next = bench_now() + 0.05;
        for (int k = 1; k <= L->S; k++) {
            sleep_until(next);
            sell(&w, k);
            L->t_commit[k] = bench_now();
            next = (L->fixed ? next : L->t_commit[k]) + L->ivl[k];
        }
        lat_writer_wait();
        wait_flag(&L->stop);
    } else if (C.observe_poll) {
        while (!ld(&L->stop)) {
            int rc = sqlite3_step(ob.dv);
            BENCH_CHECK(rc == SQLITE_ROW, "data_version: %s", sqlite3_errmsg(db));
            int64_t v = sqlite3_column_int64(ob.dv, 0);
            sqlite3_reset(ob.dv);
            if (v != ob.dv_last) {
                ob.dv_last = v;
                obs_scan(&ob, bench_now());
            }
            sleep_s(0.0002);
        }
    } else {
        wait_flag(&L->stop);
    }
    tcp_bytes(&L->rx[i], &L->tx[i]);
    sleep_s(0.15); /* the node republishes its status within 100 ms of a change */
    L->nc[i] = node_status(node);
    tsync_node_free(node);
    if (i == 0) bench_seller_close(&w);
    sqlite3_finalize(ob.q);
    sqlite3_finalize(ob.dv);
    sqlite3_close(db);
}

/* A till process of the plain ZeroMQ baseline. */
static void lat_zmq_till(void *arg)
{
    int i = (int)(intptr_t)arg, n = L->n, star = L->topo == 1;
    void *ctx = zmq_ctx_new();
    BENCH_CHECK(ctx, "zmq_ctx_new");
    void *out[MAXT];
    int nout = 0;
    int lin = 0;
    char ep[64];
    void *in = NULL;
    if (i != 0) {
        in = zmq_socket(ctx, ZMQ_PULL);
        zmq_setsockopt(in, ZMQ_LINGER, &lin, sizeof lin);
        int to = 20;
        zmq_setsockopt(in, ZMQ_RCVTIMEO, &to, sizeof to);
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", T[i].port);
        BENCH_CHECK(zmq_bind(in, ep) == 0, "zmq_bind %s: %s", ep, zmq_strerror(zmq_errno()));
    }
    st(&L->listening[i], 1);
    st(&L->ready[i], 1);
    wait_flag(&L->go);
    /* who this process sends to */
    int to_list[MAXT], nto = 0;
    if (i == 0) {
        if (star)
            to_list[nto++] = 1;
        else
            for (int j = 1; j < n; j++) to_list[nto++] = j;
    } else if (star && i == 1) {
        for (int j = 2; j < n; j++) to_list[nto++] = j;
    }
    for (int k = 0; k < nto; k++) {
        out[nout] = zmq_socket(ctx, ZMQ_PUSH);
        zmq_setsockopt(out[nout], ZMQ_LINGER, &lin, sizeof lin);
        snprintf(ep, sizeof ep, "tcp://127.0.0.1:%d", T[to_list[k]].port);
        BENCH_CHECK(zmq_connect(out[nout], ep) == 0, "zmq_connect %s", ep);
        nout++;
    }
    size_t mlen = (size_t)C.base_bytes < sizeof(int32_t) ? sizeof(int32_t) : (size_t)C.base_bytes;
    uint8_t *msg = calloc(1, mlen);
    BENCH_CHECK(msg, "out of memory");
    if (i == 0) {
        sleep_s(0.3); /* let the connections come up */
        double next = bench_now() + 0.05;
        for (int k = 1; k <= L->S; k++) {
            sleep_until(next);
            int32_t kk = k;
            memcpy(msg, &kk, sizeof kk);
            L->t_commit[k] = bench_now();
            for (int j = 0; j < nout; j++)
                BENCH_CHECK(zmq_send(out[j], msg, mlen, 0) == (int)mlen, "zmq_send");
            next = L->t_commit[k] + L->ivl[k];
        }
        lat_writer_wait();
        wait_flag(&L->stop);
    } else {
        double *ts = seen_of(i);
        int64_t count = 0;
        while (!ld(&L->stop)) {
            int r = zmq_recv(in, msg, mlen, 0);
            if (r < 0) continue;
            double t = bench_now();
            for (int j = 0; j < nout; j++) zmq_send(out[j], msg, (size_t)r, 0);
            int32_t kk;
            memcpy(&kk, msg, sizeof kk);
            if (kk >= 1 && kk <= L->S && ts[kk] == 0) {
                ts[kk] = t;
                st(&L->seen[i], (int)++count);
            }
        }
    }
    free(msg);
    for (int j = 0; j < nout; j++) zmq_close(out[j]);
    if (in) zmq_close(in);
    zmq_ctx_term(ctx);
}

static int lat_all_ready(void *x)
{
    (void)x;
    for (int i = 0; i < L->n; i++)
        if (!ld(&L->ready[i])) return 0;
    return 1;
}

static int lat_listening_k;
static int lat_listening(void *x)
{
    (void)x;
    return ld(&L->listening[lat_listening_k]);
}

static int lat_done(void *x)
{
    (void)x;
    return ld(&L->writer_done);
}

typedef struct {
    double p50, p99, max;
    int missing;
} lat_stat;

static lat_stat lat_summary(double *v, int n, int missing)
{
    qsort(v, (size_t)n, sizeof *v, dbl_cmp);
    lat_stat s = {pct(v, n, 0.50), pct(v, n, 0.99), n ? v[n - 1] : NAN, missing};
    return s;
}

typedef struct {
    lat_stat far, per[MAXT];
    double wall;
    int64_t rx[MAXT], tx[MAXT];
    node_counts nc[MAXT];
} lat_result;

/* Set by the console case (bench_node_console.h) for the runs it makes: L->console, L->fixed,
 * and a function lat_run calls once every session is up, before the first sale. */
static int lat_console, lat_fixed;
static void (*lat_on_ready)(void);

/* One run: n till processes, node or plain ZeroMQ. */
static lat_result lat_run(int topo, int zmq)
{
    int n = C.n, S = C.warmup + C.sales;
    memset((void *)L, 0, offsetof(lat_shm, ivl));
    L->n = n;
    L->S = S;
    L->topo = topo;
    L->zmq = zmq;
    L->console = lat_console;
    L->fixed = lat_fixed;
    memset(L->t_commit, 0, (size_t)(S + 1) * sizeof(double));
    memset(L->t_seen, 0, (size_t)n * (size_t)(S + 1) * sizeof(double));
    pick_ports(n);
    double t0 = bench_now();
    for (int i = 0; i < n; i++) {
        char what[48];
        snprintf(what, sizeof what, "%s till %d (%s)", zmq ? "zmq" : "node", i, TOPO_NAME[topo]);
        spawn(what, zmq ? lat_zmq_till : lat_node_till, (void *)(intptr_t)i);
        lat_listening_k = i;
        wait_for(lat_listening, NULL, 30, "a till to listen");
    }
    wait_for(lat_all_ready, NULL, 60, "every session to come up");
    if (lat_on_ready) lat_on_ready();
    st(&L->go, 1);
    wait_for(lat_done, NULL, 60 + S * C.ivl_hi * 1e-3 * 2, "the writer");
    st(&L->stop, 1);
    kids_wait_all(30);
    nkids = 0;
    lat_result r;
    memset(&r, 0, sizeof r);
    r.wall = bench_now() - t0;
    double *far = calloc((size_t)S, sizeof *far), *v = calloc((size_t)S, sizeof *v);
    BENCH_CHECK(far && v, "out of memory");
    int nf = 0, far_missing = 0;
    for (int k = C.warmup + 1; k <= S; k++) {
        double m = -1e9;
        int miss = 0;
        for (int i = 1; i < n; i++) {
            double ts = seen_of(i)[k];
            if (ts == 0)
                miss = 1;
            else if (ts - L->t_commit[k] > m)
                m = ts - L->t_commit[k];
        }
        if (miss)
            far_missing++;
        else
            far[nf++] = m * 1e3;
    }
    r.far = lat_summary(far, nf, far_missing);
    for (int i = 1; i < n; i++) {
        int nv = 0, miss = 0;
        for (int k = C.warmup + 1; k <= S; k++) {
            double ts = seen_of(i)[k];
            if (ts == 0)
                miss++;
            else
                v[nv++] = (ts - L->t_commit[k]) * 1e3;
        }
        r.per[i] = lat_summary(v, nv, miss);
        r.rx[i] = L->rx[i];
        r.tx[i] = L->tx[i];
        r.nc[i] = L->nc[i];
    }
    r.rx[0] = L->rx[0];
    r.tx[0] = L->tx[0];
    r.nc[0] = L->nc[0];
    if (C.dump) {
        FILE *df = fopen(C.dump, "a");
        BENCH_CHECK(df, "cannot write %s", C.dump);
        for (int k = 1; k <= S; k++) {
            fprintf(df, "%s,%s,%d,%.6f", zmq ? "zmq" : "node", TOPO_NAME[topo], k, L->t_commit[k]);
            for (int i = 1; i < n; i++) fprintf(df, ",%.6f", seen_of(i)[k]);
            fputc('\n', df);
        }
        fclose(df);
    }
    free(far);
    free(v);
    BENCH_CHECK(far_missing == 0, "%s %s: %d sales never reached every till within 15 s",
                zmq ? "zmq" : "node", TOPO_NAME[topo], far_missing);
    return r;
}

/* Maps L for S sales and n tills with the seeded pauses of --interval-ms; returns its size. */
static size_t lat_alloc(int n, int S)
{
    size_t sz = sizeof(lat_shm) + (size_t)(S + 1) * sizeof(double) * (size_t)(2 + n);
    L = bench_shared(sz);
    L->ivl = (double *)(L + 1);
    L->t_commit = L->ivl + (S + 1);
    L->t_seen = L->t_commit + (S + 1);
    bench_rng r = {C.seed ^ 0x1a7e};
    for (int k = 0; k <= S; k++)
        L->ivl[k] =
            (C.ivl_lo + (C.ivl_hi - C.ivl_lo) * (double)bench_below(&r, 1000001) / 1e6) * 1e-3;
    return sz;
}

static int case_latency(bench_report *rep)
{
    int n = C.n, S = C.warmup + C.sales;
    size_t sz = lat_alloc(n, S);
    int pass = 1;
    char summary[512] = "";
    size_t so = 0;
    for (int topo = 0; topo < 2; topo++) {
        if (!(C.topos & (1 << topo))) continue;
        printf("\n-- latency, %s: %d tills, %s; till 0 sells %d sales (+%d warm-up), one every "
               "%.0f-%.0f ms; %d stock lines per sale; observers: %s\n",
               TOPO_NAME[topo], n,
               topo == 0 ? "every till dials every lower-numbered one (one session per pair)"
                         : "star, every till dials till 1 (hub), tills 2.. are two hops away",
               C.sales, C.warmup, C.ivl_lo, C.ivl_hi, C.lines,
               C.observe_poll ? "PRAGMA data_version + query every 0.2 ms"
                              : "on_change callback, then a query on their own connection");
        fflush(stdout);
        tills_setup(n, topo == 0 ? "lat_mesh_" : "lat_star_");
        double la0 = bench_load1();
        fprintf(stderr, "[node latency %s] plain ZeroMQ baseline\n", TOPO_NAME[topo]);
        lat_result base = lat_run(topo, 1);
        fprintf(stderr, "[node latency %s] nodes\n", TOPO_NAME[topo]);
        lat_result nr = lat_run(topo, 0);
        double la1 = bench_load1();
        /* all tills hold the same sales */
        const char *h = tills_same_hash(n);
        for (int i = 0; i < n; i++)
            BENCH_CHECK(file_count(T[i].db, "SELECT count(*) FROM sales") == S,
                        "till %d lacks sales", i);
        printf("%-6s %-4s | %9s %9s %9s | %9s %9s %9s | %8s %8s %9s\n", "till", "hops", "node p50",
               "p99", "max", "zmq p50", "p99", "max", "KB in", "KB out", "batch in");
        for (int i = 1; i < n; i++)
            printf("%-6d %-4d | %9.3f %9.3f %9.3f | %9.3f %9.3f %9.3f | %8.0f %8.0f %9lld\n", i,
                   topo == 1 && i > 1 ? 2 : 1, nr.per[i].p50, nr.per[i].p99, nr.per[i].max,
                   base.per[i].p50, base.per[i].p99, base.per[i].max, nr.rx[i] / 1024.0,
                   nr.tx[i] / 1024.0, (long long)nr.nc[i].batches_in);
        printf("%-11s | %9.3f %9.3f %9.3f | %9.3f %9.3f %9.3f |  (ms; farthest = per sale, the "
               "last till to see it)\n",
               "farthest", nr.far.p50, nr.far.p99, nr.far.max, base.far.p50, base.far.p99,
               base.far.max);
        int64_t obs_in = 0;
        for (int i = 1; i < n; i++) obs_in += nr.nc[i].batches_in;
        printf(
            "batch copies received per sale: %.2f per observing till (1 would be no duplicates); "
            "till 0 (the writer) got %lld of its own batches back; till 0 sent %.0f KB, "
            "received %.0f KB; load average %.2f -> %.2f (%s)\n",
            (double)obs_in / (n - 1) / S, (long long)nr.nc[0].batches_in, nr.tx[0] / 1024.0,
            nr.rx[0] / 1024.0, la0, la1, loadavg());
        printf("all %d tills hash %s\n", n, h);
        char nm[80], lb[88];
        bench_fig *f;
        const char *tn = TOPO_NAME[topo];
        snprintf(nm, sizeof nm, "latency.%s.p50", tn);
        snprintf(lb, sizeof lb, "latency %s, farthest till: p50 (vs zmq)", tn);
        f = bench_add(rep, nm, lb, nr.far.p50, "ms", base.far.p50, BENCH_T_NONE, 0);
        bench_extra(f, "tills=%d sales=%d load=%.2f", n, C.sales, la1);
        snprintf(nm, sizeof nm, "latency.%s.p99", tn);
        snprintf(lb, sizeof lb, "latency %s, farthest till: p99 (vs zmq)", tn);
        f = bench_add(rep, nm, lb, nr.far.p99, "ms", base.far.p99, BENCH_T_VALUE_LT, 10);
        bench_extra(f, "tills=%d sales=%d observe=%s tick_ms=%d load=%.2f", n, C.sales,
                    C.observe_poll ? "poll" : "callback", C.tick_ms ? C.tick_ms : 2, la1);
        pass &= nr.far.p99 < 10;
        snprintf(nm, sizeof nm, "latency.%s.max", tn);
        snprintf(lb, sizeof lb, "latency %s, farthest till: max (vs zmq)", tn);
        f = bench_add(rep, nm, lb, nr.far.max, "ms", base.far.max, BENCH_T_NONE, 0);
        bench_extra(f, "load=%.2f", la1);
        so += (size_t)snprintf(summary + so, sizeof summary - so,
                               "%s%s p50 %.2f ms p99 %.2f ms max %.2f ms (zmq p99 %.3f ms, %.0fx)",
                               so ? "; " : "", tn, nr.far.p50, nr.far.p99, nr.far.max, base.far.p99,
                               nr.far.p99 / base.far.p99);
        fflush(stdout);
    }
    printf("\nSUMMARY latency: %s: %s, target p99 < 10 ms with %d tills\n", pass ? "PASS" : "MISS",
           summary, n);
    munmap(L, sz);
    return pass;
}

/* ---------------------------------------------------------------- 2. catch-up */

typedef struct {
    long N;
    volatile int a_ready, stop, b_done;
    double write_s;
    double bundle_s, merge_s;
    size_t bundle_bytes;
    uint64_t bundle_raw;
    size_t base_merged;
    /* node run at B */
    double t0, t_new, t_up, t_first, t_done;
    volatile int64_t merged;
    int64_t merges;
    int64_t rx, tx;
    node_counts nc;
    char since[8192];
    char bfile[4400], bbase[4400], bnode[4400];
} cu_shm;

static cu_shm *CU;

static void cu_write_a(void *arg)
{
    (void)arg;
    tsync_store *s = bench_store_open(T[0].db, TSYNC_SYNC_NORMAL);
    bench_seller w;
    bench_seller_open(&w, tsync_store_sqlite(s), 0, C.seed * 1000003u);
    double t0 = bench_now();
    for (long k = 1; k <= CU->N; k++) {
        sell(&w, k);
        size_t nb = 0;
        BENCH_TS(tsync_store_seal(s, &nb));
        BENCH_CHECK(nb == 1, "sale %ld sealed as %zu batches", k, nb);
        if (k % 20000 == 0) fprintf(stderr, "[node catchup] A: %ld sales sealed\n", k);
    }
    CU->write_s = bench_now() - t0;
    bench_seller_close(&w);
    tsync_store_free(s);
}

static void cu_bundle(void *arg)
{
    (void)arg;
    double t0 = bench_now();
    tsync_store *s = bench_store_open(T[0].db, TSYNC_SYNC_NORMAL);
    uint8_t *b = NULL;
    size_t len = 0, nb = 0;
    BENCH_TS(tsync_store_bundle(&b, &len, s, CU->since, &nb));
    bench_write_file(CU->bfile, b, len);
    tsync_store_free(s);
    CU->bundle_s = bench_now() - t0;
    BENCH_CHECK(nb == (size_t)CU->N, "the bundle holds %zu batches, expected %ld", nb, CU->N);
    CU->bundle_bytes = len;
    CU->bundle_raw = bench_bundle_raw_size(b, len);
    free(b);
}

static void cu_merge(void *arg)
{
    (void)arg;
    double t0 = bench_now();
    tsync_store *s = bench_store_open(CU->bbase, TSYNC_SYNC_NORMAL);
    size_t len = 0;
    uint8_t *b = bench_read_file(CU->bfile, &len);
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    BENCH_TS(tsync_store_merge(s, b, len, &r));
    tsync_store_free(s);
    CU->merge_s = bench_now() - t0;
    BENCH_CHECK(r.merged == (size_t)CU->N && r.refused == 0 && r.held == 0 && r.parked == 0,
                "baseline merge: merged %zu held %zu refused %zu parked %zu, expected %ld merged",
                r.merged, r.held, r.refused, r.parked, CU->N);
    CU->base_merged = r.merged;
    tsync_merge_report_clear(&r);
    free(b);
}

static double ru_cpu(const struct rusage *ru)
{
    return (double)ru->ru_utime.tv_sec + ru->ru_utime.tv_usec * 1e-6 + (double)ru->ru_stime.tv_sec +
           ru->ru_stime.tv_usec * 1e-6;
}

static void cu_node_a(void *arg)
{
    (void)arg;
    tsync_node *nd = node_up(0, 1, NULL, 0, NULL, NULL, NULL);
    st(&CU->a_ready, 1);
    wait_flag(&CU->stop);
    tsync_node_free(nd);
}

static void cu_on_change(void *ctx, const tsync_node_change *c)
{
    (void)ctx;
    double t = bench_now();
    if (CU->t_first == 0) CU->t_first = t;
    CU->merges++;
    int64_t m = ld64(&CU->merged) + (int64_t)c->batches;
    if (m >= CU->N && CU->t_done == 0) CU->t_done = t;
    st64(&CU->merged, m);
}

static void cu_on_peer(void *ctx, const char *key, const char *addr, int up, int on)
{
    (void)ctx, (void)key, (void)addr, (void)on;
    if (up && CU->t_up == 0) CU->t_up = bench_now();
}

static void cu_node_b(void *arg)
{
    (void)arg;
    /* B is a copy of the offline till; its node dials A and does not listen. */
    snprintf(T[1].db, sizeof T[1].db, "%s", CU->bnode);
    int dial[1] = {0};
    CU->t0 = bench_now();
    tsync_node *nd = node_up(1, 0, dial, 1, cu_on_change, cu_on_peer, NULL);
    CU->t_new = bench_now();
    double end = CU->t0 + 120;
    while (ld64(&CU->merged) < CU->N && bench_now() < end) sleep_s(0.0005);
    tcp_bytes(&CU->rx, &CU->tx);
    sleep_s(0.15); /* the node publishes its status within 100 ms */
    CU->nc = node_status(nd);
    st(&CU->b_done, 1);
    tsync_node_free(nd);
}

static int cu_a_ready(void *x)
{
    (void)x;
    return ld(&CU->a_ready);
}

static int cu_b_done(void *x)
{
    (void)x;
    return ld(&CU->b_done);
}

static void copy_file(const char *from, const char *to, mode_t mode)
{
    size_t n = 0;
    uint8_t *p = bench_read_file(from, &n);
    unlink(to);
    bench_write_file(to, p, n);
    chmod(to, mode);
    free(p);
}

/* A copy of the offline till B's database (never opened while a copy is made). */
static void copy_db(const char *from, const char *to)
{
    char a[4600], b[4600];
    bench_rm_db(to);
    copy_file(from, to, 0644);
    snprintf(a, sizeof a, "%s.key", from);
    snprintf(b, sizeof b, "%s.key", to);
    copy_file(a, b, 0600);
}

/* The vector of a database as JSON text (static). */
static json_t *vector_of(const char *db)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    tsync_store *s = NULL;
    BENCH_TS(tsync_store_open(&s, db, &o));
    char *js = NULL;
    BENCH_TS(tsync_store_state_json(&js, s));
    tsync_store_free(s);
    json_t *j = json_loads(js, 0, NULL);
    free(js);
    BENCH_CHECK(j, "bad state JSON");
    json_t *v = json_incref(json_object_get(j, "vector"));
    json_decref(j);
    return v;
}

/* Every entry of a's vector is in b's with the same seq and hash. */
static int vector_covers(json_t *b, json_t *a)
{
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *ea = json_array_get(a, i);
        const char *site = json_string_value(json_object_get(ea, "site"));
        int found = 0;
        for (size_t k = 0; k < json_array_size(b) && !found; k++) {
            json_t *eb = json_array_get(b, k);
            if (strcmp(site, json_string_value(json_object_get(eb, "site"))) != 0) continue;
            found = json_integer_value(json_object_get(eb, "seq")) ==
                        json_integer_value(json_object_get(ea, "seq")) &&
                    strcmp(json_string_value(json_object_get(eb, "hash")),
                           json_string_value(json_object_get(ea, "hash"))) == 0;
        }
        if (!found) return 0;
    }
    return 1;
}

static int case_catchup(bench_report *rep)
{
    CU = bench_shared(sizeof *CU);
    CU->N = C.batches;
    double target = 3.0 * (double)C.batches / 100000.0;
    printf("\n-- catch-up: till A sells %ld sales (%d lines each), each sealed as its own batch, "
           "while till B is offline; then B's node starts and dials A's (running in another "
           "process)\n",
           C.batches, C.lines);
    fflush(stdout);
    tills_setup(2, "cu_");
    char b0[4400];
    snprintf(b0, sizeof b0, "%s", T[1].db); /* B as it was when it went offline */
    snprintf(CU->bfile, sizeof CU->bfile, "%s", bench_path("cu_delta.bundle"));
    snprintf(CU->bbase, sizeof CU->bbase, "%s", bench_path("cu_b_base.db"));
    snprintf(CU->bnode, sizeof CU->bnode, "%s", bench_path("cu_b_node.db"));
    {
        tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
        tsync_store *s = NULL;
        BENCH_TS(tsync_store_open(&s, b0, &o));
        char *js = NULL;
        BENCH_TS(tsync_store_state_json(&js, s));
        BENCH_CHECK(strlen(js) < sizeof CU->since, "state too long");
        snprintf(CU->since, sizeof CU->since, "%s", js);
        free(js);
        tsync_store_free(s);
    }
    fprintf(stderr, "[node catchup] A writes %ld sales, sealing each\n", C.batches);
    long rss_w = bench_child("catch-up: A's sales", cu_write_a, NULL);
    printf("A wrote and sealed %ld sales in %.1f s (%.0f sales/s, peak RSS %.1f MB)\n", C.batches,
           CU->write_s, C.batches / CU->write_s, rss_w / 1024.0);
    json_t *va = vector_of(T[0].db);
    char ha[2 * TSYNC_HASH_BYTES + 1];
    snprintf(ha, sizeof ha, "%s", bench_file_hash(T[0].db));

    enum { NODE, BASE, BUN, MER, UP, FIRST, CPUA, CPUB, NS };
    double v[NS][16];
    long rss_b = 0, rss_m = 0;
    double la[16];
    for (int r = 0; r < C.reps; r++) {
        fprintf(stderr, "[node catchup] repetition %d/%d: baseline (bundle + merge)\n", r + 1,
                C.reps);
        copy_db(b0, CU->bbase);
        bench_child("catch-up: bundle", cu_bundle, NULL);
        rss_m = bench_child("catch-up: merge", cu_merge, NULL);
        v[BUN][r] = CU->bundle_s;
        v[MER][r] = CU->merge_s;
        v[BASE][r] = CU->bundle_s + CU->merge_s;
        BENCH_CHECK(strcmp(bench_file_hash(CU->bbase), ha) == 0, "the baseline's B differs from A");

        fprintf(stderr, "[node catchup] repetition %d/%d: nodes\n", r + 1, C.reps);
        copy_db(b0, CU->bnode);
        CU->a_ready = CU->stop = CU->b_done = 0;
        CU->t0 = CU->t_new = CU->t_up = CU->t_first = CU->t_done = 0;
        CU->merged = CU->merges = 0;
        pick_ports(2);
        bench_settle();
        int ka = spawn("catch-up: A's node", cu_node_a, NULL);
        wait_for(cu_a_ready, NULL, 30, "A's node");
        sleep_s(0.2);
        int kb = spawn("catch-up: B's node", cu_node_b, NULL);
        wait_for(cu_b_done, NULL, 150, "B's catch-up");
        st(&CU->stop, 1);
        kids_wait_all(30);
        rss_b = kids[kb].ru.ru_maxrss;
        /* CPU of each node process (its whole life): under load, wall times follow the load. */
        v[CPUA][r] = ru_cpu(&kids[ka].ru);
        v[CPUB][r] = ru_cpu(&kids[kb].ru);
        nkids = 0;
        la[r] = bench_load1();
        BENCH_CHECK(CU->merged == CU->N, "B merged %lld batches of %ld within 120 s",
                    (long long)CU->merged, CU->N);
        v[NODE][r] = CU->t_done - CU->t0;
        v[UP][r] = CU->t_up - CU->t0;
        v[FIRST][r] = CU->t_first - CU->t0;
        BENCH_CHECK(strcmp(bench_file_hash(CU->bnode), ha) == 0, "B differs from A after catch-up");
        json_t *vb = vector_of(CU->bnode);
        BENCH_CHECK(vector_covers(vb, va), "B's vector does not cover A's");
        json_decref(vb);
        printf("rep %d: node %.3f s (session up %.3f s, first merge %.3f s, %lld merges, "
               "%.0f batches/s; CPU user+sys: A's node %.3f s, B's node %.3f s) | baseline %.3f s "
               "(bundle %.3f + merge %.3f) | load %.2f\n",
               r + 1, v[NODE][r], v[UP][r], v[FIRST][r], (long long)CU->merges,
               C.batches / (v[NODE][r] - v[FIRST][r] + 1e-9), v[CPUA][r], v[CPUB][r], v[BASE][r],
               v[BUN][r], v[MER][r], la[r]);
        fflush(stdout);
    }
    json_decref(va);
    double node_t = bench_median(v[NODE], C.reps), base_t = bench_median(v[BASE], C.reps);
    double la_m = bench_median(la, C.reps);
    printf("wire (last rep, B's TCP payload): received %.2f MB, sent %.2f MB; bundle file %.2f MB "
           "(payload %.2f MB uncompressed); B's status: %lld batches in, %lld merged; B's peak "
           "RSS %.1f MB (baseline merge %.1f MB); load average %s\n",
           CU->rx / 1e6, CU->tx / 1e6, CU->bundle_bytes / 1e6, CU->bundle_raw / 1e6,
           (long long)CU->nc.batches_in, (long long)CU->nc.merged, rss_b / 1024.0, rss_m / 1024.0,
           loadavg());
    bench_fig *f;
    f = bench_add(rep, "catchup.time", "catch-up: B current again (vs bundle+merge)", node_t, "s",
                  base_t, BENCH_T_VALUE_LT, target);
    bench_extra(f, "batches=%ld lines=%d load=%.2f", C.batches, C.lines, la_m);
    bench_spreads(f, v[NODE], v[BASE], C.reps);
    f = bench_add(rep, "catchup.session_up", "  of which until the session is up",
                  bench_median(v[UP], C.reps), "s", NAN, BENCH_T_NONE, 0);
    f = bench_add(rep, "catchup.wire_bytes", "catch-up: bytes received by B (vs bundle file)",
                  CU->rx / 1e6, "MB", CU->bundle_bytes / 1e6, BENCH_T_NONE, 0);
    bench_extra(f, "sent_by_b=%lld bundle_raw=%llu bytes_per_batch=%.1f", (long long)CU->tx,
                (unsigned long long)CU->bundle_raw, (double)CU->rx / C.batches);
    f = bench_add(rep, "catchup.cpu_b", "catch-up: CPU (user+sys) of B's node process",
                  bench_median(v[CPUB], C.reps), "s", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "cpu_a=%.3f", bench_median(v[CPUA], C.reps));
    f = bench_add(rep, "catchup.rss_b", "catch-up: peak RSS of B's node process", rss_b / 1024.0,
                  "MB", rss_m / 1024.0, BENCH_T_NONE, 0);
    int pass = node_t < target;
    printf("\nSUMMARY catchup: %s: %ld batches in %.3f s (target < %.2f s), baseline bundle+merge "
           "%.3f s (ratio %.2f); wire %.2f MB vs bundle %.2f MB (ratio %.2f); load %.2f\n",
           pass ? "PASS" : "MISS", C.batches, node_t, target, base_t, node_t / base_t, CU->rx / 1e6,
           CU->bundle_bytes / 1e6, (double)CU->rx / (double)CU->bundle_bytes, la_m);
    munmap(CU, sizeof *CU);
    return pass;
}

/* ---------------------------------------------------------------- 3. sustained load */

typedef struct {
    double t;
    int64_t committed, behind;
    double stale_ms;
    int64_t they_lack, we_lack, pending;
    long rss_kb, anon_kb;
} lsample;

typedef struct {
    int n, rate, duration, maxk, maxs;
    volatile int listening[MAXT], ready[MAXT], go, stop, wdone[MAXT], conv[MAXT];
    double t0;
    volatile int64_t committed[MAXT];
    double t_wend[MAXT], t_conv[MAXT];
    double late_max[MAXT]; /* the writer's worst lateness behind its schedule, s */
    double txn_p50[MAXT], txn_p99[MAXT], txn_max[MAXT]; /* the POS's sale transactions, ms */
    int64_t rx[MAXT], tx[MAXT];
    node_counts nc[MAXT];
    volatile int nsamp[MAXT];
    lsample *samp; /* [n][maxs] */
    double *tc;    /* [n][maxk + 1]: commit time of each sale */
} load_shm;

static load_shm *LD;

typedef struct {
    int i;
    tsync_node *node;
    sqlite3 *db;
    sqlite3_stmt *vis;
} sampler;

/* Sales of till u visible here (their highest seq: an origin's batches merge in order). */
static int64_t visible(sqlite3 *db, sqlite3_stmt *q, int u)
{
    sqlite3_bind_int64(q, 1, u);
    int rc = sqlite3_step(q);
    BENCH_CHECK(rc == SQLITE_ROW, "visible: %s", sqlite3_errmsg(db));
    int64_t v = sqlite3_column_int64(q, 0);
    sqlite3_reset(q);
    return v;
}

static void *sampler_main(void *arg)
{
    sampler *sm = arg;
    int i = sm->i, n = LD->n;
    for (int s = 1; s < LD->maxs && !ld(&LD->stop); s++) {
        sleep_until(LD->t0 + s);
        if (ld(&LD->stop)) break;
        lsample x;
        memset(&x, 0, sizeof x);
        int64_t com[MAXT];
        for (int u = 0; u < n; u++) com[u] = ld64(&LD->committed[u]);
        double now = bench_now();
        x.t = now - LD->t0;
        for (int u = 0; u < n; u++) {
            x.committed += com[u];
            if (u == i) continue;
            int64_t vis = visible(sm->db, sm->vis, u);
            if (vis < com[u]) {
                x.behind += com[u] - vis;
                double age =
                    (now - LD->tc[(size_t)u * (size_t)(LD->maxk + 1) + (size_t)vis + 1]) * 1e3;
                if (age > x.stale_ms) x.stale_ms = age;
            }
        }
        node_counts c = node_status(sm->node);
        x.they_lack = c.they_lack;
        x.we_lack = c.we_lack;
        x.pending = c.pending;
        bench_proc_mem(0, &x.rss_kb, &x.anon_kb);
        LD->samp[(size_t)i * (size_t)LD->maxs + (size_t)s] = x;
        st(&LD->nsamp[i], s + 1);
    }
    return NULL;
}

static void load_till(void *arg)
{
    int i = (int)(intptr_t)arg, n = LD->n, dial[MAXT], expect;
    int nd = topo_dial(0, i, n, dial, &expect);
    sqlite3 *db = bench_plain_open(T[i].db, TSYNC_SYNC_NORMAL);
    sqlite3_stmt *vis =
        bench_prepare(db, "SELECT coalesce(max(seq), 0) FROM sales WHERE till = ?1");
    bench_seller w;
    bench_seller_open(&w, db, i, C.seed * 1000003u + (uint64_t)i);
    tsync_node *node = node_up(i, 1, dial, nd, NULL, NULL, NULL);
    st(&LD->listening[i], 1);
    double end = bench_now() + 30;
    while (node_connected(node) < expect) {
        BENCH_CHECK(bench_now() < end, "till %d: %d sessions of %d after 30 s", i,
                    node_connected(node), expect);
        sleep_s(0.01);
    }
    st(&LD->ready[i], 1);
    sampler sm = {i, node, bench_plain_open(T[i].db, TSYNC_SYNC_NORMAL), NULL};
    sm.vis = bench_prepare(sm.db, "SELECT coalesce(max(seq), 0) FROM sales WHERE till = ?1");
    wait_flag(&LD->go);
    pthread_t th;
    BENCH_CHECK(pthread_create(&th, NULL, sampler_main, &sm) == 0, "pthread_create");
    /* sell on schedule: sale k at t0 + k / rate (each till offset a little) */
    double *tc = LD->tc + (size_t)i * (size_t)(LD->maxk + 1), late = 0;
    double off = (double)i / (double)(n * LD->rate);
    double *dur = calloc((size_t)LD->maxk, sizeof *dur);
    BENCH_CHECK(dur, "out of memory");
    for (int k = 1; k <= LD->maxk; k++) {
        double due = LD->t0 + off + (double)k / LD->rate;
        double now = bench_now();
        if (now < due)
            sleep_until(due);
        else if (now - due > late)
            late = now - due;
        double b = bench_now();
        sell(&w, k);
        tc[k] = bench_now();
        dur[k - 1] = (tc[k] - b) * 1e3;
        st64(&LD->committed[i], k);
    }
    LD->t_wend[i] = bench_now();
    LD->late_max[i] = late;
    qsort(dur, (size_t)LD->maxk, sizeof *dur, dbl_cmp);
    LD->txn_p50[i] = pct(dur, LD->maxk, 0.50);
    LD->txn_p99[i] = pct(dur, LD->maxk, 0.99);
    LD->txn_max[i] = dur[LD->maxk - 1];
    free(dur);
    st(&LD->wdone[i], 1);
    /* converge: every other till's sales visible here */
    for (;;) {
        int all = 1;
        for (int u = 0; u < n && all; u++) {
            if (u == i) continue;
            all = ld(&LD->wdone[u]) && visible(db, vis, u) >= ld64(&LD->committed[u]);
        }
        if (all || ld(&LD->stop)) break;
        sleep_s(0.002);
    }
    LD->t_conv[i] = bench_now();
    st(&LD->conv[i], 1);
    wait_flag(&LD->stop);
    pthread_join(th, NULL);
    tcp_bytes(&LD->rx[i], &LD->tx[i]);
    LD->nc[i] = node_status(node);
    tsync_node_free(node);
    bench_seller_close(&w);
    sqlite3_finalize(vis);
    sqlite3_finalize(sm.vis);
    sqlite3_close(sm.db);
    sqlite3_close(db);
}

static int load_k;
static int load_listening(void *x)
{
    (void)x;
    return ld(&LD->listening[load_k]);
}

static int load_all(volatile int *flags)
{
    for (int i = 0; i < LD->n; i++)
        if (!ld(&flags[i])) return 0;
    return 1;
}

static int load_ready(void *x)
{
    (void)x;
    return load_all(LD->ready);
}

static int load_wdone(void *x)
{
    (void)x;
    return load_all(LD->wdone);
}

static int load_conv(void *x)
{
    (void)x;
    return load_all(LD->conv);
}

static lsample *samp_of(int i, int s)
{
    return &LD->samp[(size_t)i * (size_t)LD->maxs + (size_t)s];
}

static int case_load(bench_report *rep)
{
    int n = C.n;
    int maxk = C.rate * C.duration, maxs = C.duration + 90;
    size_t sz = sizeof(load_shm) + (size_t)n * (size_t)maxs * sizeof(lsample) +
                (size_t)n * (size_t)(maxk + 1) * sizeof(double);
    LD = bench_shared(sz);
    LD->n = n;
    LD->rate = C.rate;
    LD->duration = C.duration;
    LD->maxk = maxk;
    LD->maxs = maxs;
    LD->samp = (lsample *)(LD + 1);
    LD->tc = (double *)(LD->samp + (size_t)n * (size_t)maxs);
    printf("\n-- sustained load: %d tills (mesh), each sells %d sales/s (%d lines each) for %d s; "
           "sampled every second in each till's process\n",
           n, C.rate, C.lines, C.duration);
    fflush(stdout);
    tills_setup(n, "load_");
    pick_ports(n);
    for (int i = 0; i < n; i++) {
        char what[32];
        snprintf(what, sizeof what, "load till %d", i);
        spawn(what, load_till, (void *)(intptr_t)i);
        load_k = i;
        wait_for(load_listening, NULL, 30, "a till to listen");
    }
    wait_for(load_ready, NULL, 60, "every session to come up");
    double la0 = bench_load1();
    LD->t0 = bench_now() + 0.2;
    st(&LD->go, 1);
    fprintf(stderr, "[node load] %d tills selling for %d s\n", n, C.duration);
    wait_for(load_wdone, NULL, C.duration * 3 + 60, "the writers");
    double la1 = bench_load1();
    double t_wend = 0;
    for (int i = 0; i < n; i++) t_wend = LD->t_wend[i] > t_wend ? LD->t_wend[i] : t_wend;
    wait_for(load_conv, NULL, 120, "every till to see every sale");
    double t_conv = 0;
    for (int i = 0; i < n; i++) t_conv = LD->t_conv[i] > t_conv ? LD->t_conv[i] : t_conv;
    sleep_s(1.2); /* one more sample after convergence */
    st(&LD->stop, 1);
    kids_wait_all(30);
    double cpu[MAXT];
    double wall = bench_now() - LD->t0;
    for (int i = 0; i < n; i++)
        cpu[i] = (double)kids[i].ru.ru_utime.tv_sec + kids[i].ru.ru_utime.tv_usec * 1e-6 +
                 (double)kids[i].ru.ru_stime.tv_sec + kids[i].ru.ru_stime.tv_usec * 1e-6;
    nkids = 0;

    /* checks */
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += LD->committed[i];
    const char *h = tills_same_hash(n);
    for (int i = 0; i < n; i++)
        BENCH_CHECK(file_count(T[i].db, "SELECT count(*) FROM sales") == total,
                    "till %d does not hold all %lld sales", i, (long long)total);

    /* per second: max over tills */
    int ns = LD->maxs;
    for (int i = 0; i < n; i++) ns = LD->nsamp[i] < ns ? LD->nsamp[i] : ns;
    int win = C.duration >= 30 ? 10 : C.duration / 3 > 0 ? C.duration / 3 : 1;
    int step = C.duration > 30 ? 5 : 1;
    printf("%5s %8s %8s %9s %10s %9s %9s %14s %14s\n", "t s", "sales", "behind", "stale ms",
           "they_lack", "we_lack", "pending", "RSS MB min-max", "anon MB min-max");
    double b_first = 0, b_last = 0;
    int n_first = 0, n_last = 0;
    double anon_first[MAXT] = {0}, anon_last[MAXT] = {0}, rss_first[MAXT] = {0},
           rss_last[MAXT] = {0};
    double stale_max = 0, behind_max = 0;
    for (int s = 1; s < ns; s++) {
        int64_t behind = 0, tl = 0, wl = 0, pend = 0, com = 0;
        double stale = 0, rmin = 1e18, rmax = 0, amin = 1e18, amax = 0;
        for (int i = 0; i < n; i++) {
            lsample *x = samp_of(i, s);
            behind = x->behind > behind ? x->behind : behind;
            stale = x->stale_ms > stale ? x->stale_ms : stale;
            tl = x->they_lack > tl ? x->they_lack : tl;
            wl = x->we_lack > wl ? x->we_lack : wl;
            pend = x->pending > pend ? x->pending : pend;
            com = x->committed > com ? x->committed : com;
            rmin = x->rss_kb < rmin ? x->rss_kb : rmin;
            rmax = x->rss_kb > rmax ? x->rss_kb : rmax;
            amin = x->anon_kb < amin ? x->anon_kb : amin;
            amax = x->anon_kb > amax ? x->anon_kb : amax;
            if (s >= 2 && s <= win + 1) {
                anon_first[i] += x->anon_kb / (double)win;
                rss_first[i] += x->rss_kb / (double)win;
            }
            if (s <= C.duration && s > C.duration - win) {
                anon_last[i] += x->anon_kb / (double)win;
                rss_last[i] += x->rss_kb / (double)win;
            }
        }
        if (s <= C.duration) {
            if (s >= 2 && s <= win + 1) b_first += (double)behind, n_first++;
            if (s > C.duration - win) b_last += (double)behind, n_last++;
            stale_max = stale > stale_max ? stale : stale_max;
            behind_max = behind > behind_max ? behind : behind_max;
        }
        if (s % step == 0 || s <= 2 || s >= C.duration - 1)
            printf("%5d %8lld %8lld %9.1f %10lld %9lld %9lld %6.1f-%-7.1f %6.1f-%-7.1f%s\n", s,
                   (long long)com, (long long)behind, stale, (long long)tl, (long long)wl,
                   (long long)pend, rmin / 1024, rmax / 1024, amin / 1024, amax / 1024,
                   s > C.duration ? "  (writes stopped)" : "");
    }
    b_first /= n_first ? n_first : 1;
    b_last /= n_last ? n_last : 1;
    double conv_s = t_conv - t_wend;
    double grow_worst = -1e18, grow_rss_worst = -1e18;
    int mem_ok = 1;
    for (int i = 0; i < n; i++) {
        double g = (anon_last[i] - anon_first[i]) / 1024;
        double gr = (rss_last[i] - rss_first[i]) / 1024;
        grow_worst = g > grow_worst ? g : grow_worst;
        grow_rss_worst = gr > grow_rss_worst ? gr : grow_rss_worst;
        if (g > 8 + 0.10 * anon_first[i] / 1024) mem_ok = 0;
    }
    double lag_limit = 2 * b_first + 20;
    int lag_ok = b_last <= lag_limit && conv_s <= 10;
    int64_t bin = 0, merged = 0, sealed = 0, rxa = 0, txa = 0;
    double late = 0, cpu_sum = 0, txn50 = 0, txn99 = 0, txnmax = 0;
    for (int i = 0; i < n; i++) {
        bin += LD->nc[i].batches_in;
        merged += LD->nc[i].merged;
        sealed += LD->nc[i].sealed;
        rxa += LD->rx[i];
        txa += LD->tx[i];
        late = LD->late_max[i] > late ? LD->late_max[i] : late;
        txn50 = LD->txn_p50[i] > txn50 ? LD->txn_p50[i] : txn50;
        txn99 = LD->txn_p99[i] > txn99 ? LD->txn_p99[i] : txn99;
        txnmax = LD->txn_max[i] > txnmax ? LD->txn_max[i] : txnmax;
        cpu_sum += cpu[i];
    }
    printf("behind = sales of the other tills not yet visible at a till (max over tills); stale = "
           "age of the oldest of them; they_lack/we_lack: the node's status, summed over its "
           "peers (max over tills)\n");
    printf("%lld sales in all (%.0f/s offered), %lld batches sealed, %lld merged, %lld received "
           "(%.2f copies per merged batch); wire: %.1f MB received by all tills (%.0f B per "
           "sale per receiving till); writers at most %.1f ms late; CPU per till %.0f%% of a "
           "core (all: %.2f cores); load average %.2f -> %.2f (%s)\n",
           (long long)total, (double)n * C.rate, (long long)sealed, (long long)merged,
           (long long)bin, merged ? (double)bin / (double)merged : 0, rxa / 1e6,
           (double)rxa / (double)total / (n - 1), late * 1e3, 100 * cpu_sum / n / wall,
           cpu_sum / wall, la0, la1, loadavg());
    printf("the POS's sale transactions (BEGIN IMMEDIATE .. COMMIT, waiting for the node's write "
           "lock included), worst till: p50 %.2f ms, p99 %.2f ms, max %.1f ms\n",
           txn50, txn99, txnmax);
    printf("all %d tills hash %s; converged %.3f s after the last write\n", n, h, conv_s);
    bench_fig *f;
    f = bench_add(rep, "load.behind_first", "load: sales behind, first window (mean of max)",
                  b_first, "sales", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "window_s=%d", win);
    f = bench_add(rep, "load.behind_last", "load: sales behind, last window (vs first)", b_last,
                  "sales", b_first, BENCH_T_VALUE_LE, lag_limit);
    bench_extra(f, "window_s=%d tills=%d rate=%d duration=%d load=%.2f", win, n, C.rate, C.duration,
                la1);
    f = bench_add(rep, "load.stale_max", "load: oldest unseen sale, worst sample", stale_max, "ms",
                  NAN, BENCH_T_NONE, 0);
    f = bench_add(rep, "load.converge", "load: all tills current after the last write", conv_s, "s",
                  NAN, BENCH_T_VALUE_LE, 10);
    f = bench_add(rep, "load.anon_growth", "load: RssAnon growth, worst till (last - first)",
                  grow_worst, "MB", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "rss_growth_worst=%.2f", grow_rss_worst);
    f = bench_add(rep, "load.copies", "load: batch copies received per merged batch",
                  merged ? (double)bin / (double)merged : 0, "x", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "wire_rx_bytes=%lld", (long long)rxa);
    f = bench_add(rep, "load.cpu", "load: CPU of all till processes", cpu_sum / wall, "cores", NAN,
                  BENCH_T_NONE, 0);
    f = bench_add(rep, "load.pos_txn_p99", "load: POS sale transaction p99, worst till", txn99,
                  "ms", NAN, BENCH_T_NONE, 0);
    bench_extra(f, "p50=%.3f max=%.1f writer_late_max_ms=%.1f", txn50, txnmax, late * 1e3);
    int pass = lag_ok && mem_ok;
    printf("\nSUMMARY load: %s: behind %.1f sales (last %ds) vs %.1f (first %ds), limit %.1f; "
           "converged %.2f s after the writes (limit 10 s); RssAnon growth worst %.2f MB "
           "(limit 8 MB + 10%%) %s; %d tills x %d sales/s x %d s; load %.2f\n",
           pass ? "PASS" : "MISS", b_last, win, b_first, win, lag_limit, conv_s, grow_worst,
           mem_ok ? "flat" : "GROWS", n, C.rate, C.duration, la1);
    munmap(LD, sz);
    return pass;
}

/* ---------------------------------------------------------------- main */

/* ---------------------------------------------------------------- 4. console */

#include "bench/bench_node_console.h"

int main(int argc, char **argv)
{
    static const char *const known[] = {
        "--case=",       "--quick",     "--tills=",          "--products=", "--lines=",
        "--sales=",      "--warmup=",   "--interval-ms=",    "--topology=", "--observe=",
        "--base-bytes=", "--batches=",  "--duration=",       "--rate=",     "--tick-ms=",
        "--window-kb=",  "--reps=",     "--seed=",           "--verbose",   "--dump=",
        "--help",        "--con-reps=", "--status-seconds=", NULL};
    bench_args_check(
        argc, argv, known,
        "usage: bench_node [--case latency,catchup,load,console] [--quick] [options]\n"
        "  --quick            300 sales, 20000 batches, 15 s of load, 1 console repetition,\n"
        "                     5 s of /api/status timing (CI-like check)\n"
        "  --tills N          tills (processes) for latency and load (default 5)\n"
        "  --products N       catalogue size (default 1000); --lines N lines per sale (2)\n"
        "latency: --sales N (1000) --warmup N (20) --interval-ms LO-HI (5-10)\n"
        "         --topology mesh,star (both) --observe callback|poll (callback)\n"
        "         --base-bytes N: the ZeroMQ baseline's message size (512)\n"
        "         --dump FILE: append each sale's commit and arrival times (CLOCK_MONOTONIC s)\n"
        "                      as CSV: run,topology,sale,commit,till1,till2,...\n"
        "catchup: --batches N (100000) --reps N (1)\n"
        "load:    --duration S (60) --rate N sales/s per till (200)\n"
        "console: --con-reps N (3) runs with and without viewers (latency's --sales etc.)\n"
        "         --status-seconds S (15) of /api/status timing at --rate sales/s\n"
        "all:     --tick-ms N, --window-kb N (the node's tick_ms and window_bytes; 0: defaults)\n"
        "         --seed S --verbose (the nodes log at INFO)\n"
        "environment: TSYNC_BENCH_DIR, TSYNC_BENCH_KEEP (see docs/BENCHMARKS.md)\n");
    parent_pid = getpid();
    C.quick = bench_has_flag(argc, argv, "--quick");
    C.n = (int)bench_arg_int(argc, argv, "--tills", 5);
    C.products = (int)bench_arg_int(argc, argv, "--products", 1000);
    C.lines = (int)bench_arg_int(argc, argv, "--lines", 2);
    C.sales = (int)bench_arg_int(argc, argv, "--sales", C.quick ? 300 : 1000);
    C.warmup = (int)bench_arg_int(argc, argv, "--warmup", 20);
    C.base_bytes = (int)bench_arg_int(argc, argv, "--base-bytes", 512);
    C.batches = (long)bench_arg_int(argc, argv, "--batches", C.quick ? 20000 : 100000);
    C.duration = (int)bench_arg_int(argc, argv, "--duration", C.quick ? 15 : 60);
    C.rate = (int)bench_arg_int(argc, argv, "--rate", 200);
    C.tick_ms = (int)bench_arg_int(argc, argv, "--tick-ms", 0);
    C.window_kb = (long)bench_arg_int(argc, argv, "--window-kb", 0);
    C.reps = (int)bench_arg_int(argc, argv, "--reps", 1);
    C.con_reps = (int)bench_arg_int(argc, argv, "--con-reps", C.quick ? 1 : 3);
    C.status_seconds = (int)bench_arg_int(argc, argv, "--status-seconds", C.quick ? 5 : 15);
    C.verbose = bench_has_flag(argc, argv, "--verbose");
    C.dump = bench_arg(argc, argv, "--dump");
    C.seed = bench_seed(argc, argv, 20240601);
    C.ivl_lo = 5;
    C.ivl_hi = 10;
    const char *iv = bench_arg(argc, argv, "--interval-ms");
    if (iv && (sscanf(iv, "%lf-%lf", &C.ivl_lo, &C.ivl_hi) < 1 || C.ivl_lo <= 0)) {
        fprintf(stderr, "--interval-ms takes LO-HI in ms\n");
        return 2;
    }
    if (iv && !strchr(iv, '-')) C.ivl_hi = C.ivl_lo;
    const char *topo = bench_arg(argc, argv, "--topology");
    if (!topo) topo = "mesh,star";
    C.topos = (strstr(topo, "mesh") ? 1 : 0) | (strstr(topo, "star") ? 2 : 0);
    const char *obs = bench_arg(argc, argv, "--observe");
    C.observe_poll = obs && strcmp(obs, "poll") == 0;
    const char *cases = bench_arg(argc, argv, "--case");
    if (!cases) cases = "latency,catchup,load,console";
    BENCH_CHECK(C.n >= 2 && C.n <= MAXT && C.products >= 1 && C.lines >= 0 && C.sales >= 1 &&
                    C.batches >= 1 && C.duration >= 3 && C.rate >= 1 && C.reps >= 1 &&
                    C.reps <= 16 && C.con_reps >= 1 && C.con_reps <= 16 && C.status_seconds >= 1 &&
                    C.topos && C.ivl_hi >= C.ivl_lo &&
                    (!obs || !strcmp(obs, "poll") || !strcmp(obs, "callback")),
                "bad arguments (tills 2..%d, reps 1..16, duration >= 3; see --help)", MAXT);
    if (C.topos & 2) BENCH_CHECK(C.n >= 3, "a star needs 3 tills or more");
    signal(SIGPIPE, SIG_IGN);

    bench_dir_init("bench_node");
    atexit(kids_kill);
    bench_header("bench_node",
                 "the sync node on loopback: latency, catch-up, sustained load, console", C.seed,
                 C.reps);
    printf("%ld cores, load average %s; ZeroMQ %d.%d.%d; every till is its own process, its node "
           "on a thread (tsync_node_start), tick_ms %d, the POS writes through its own plain "
           "SQLite connection (WAL, synchronous=NORMAL)\n",
           sysconf(_SC_NPROCESSORS_ONLN), loadavg(), ZMQ_VERSION_MAJOR, ZMQ_VERSION_MINOR,
           ZMQ_VERSION_PATCH, C.tick_ms ? C.tick_ms : 2);
    printf("schema: %s; %s; stock is a PN-counter; catalogue %d products; a sale = 1 sales row + "
           "%d sale_lines rows + %d stock decrements, one transaction\n",
           BENCH_PRODUCTS_SQL, BENCH_SALES_SQL, C.products, C.lines, C.lines);
    fflush(stdout);

    bench_report rep = {.bench = "node"};
    int res[4] = {-1, -1, -1, -1};
    if (strstr(cases, "latency")) res[0] = case_latency(&rep);
    if (strstr(cases, "catchup")) res[1] = case_catchup(&rep);
    if (strstr(cases, "load")) res[2] = case_load(&rep);
    if (strstr(cases, "console")) res[3] = case_console(&rep);
    bench_print(&rep);
    static const char *const nm[4] = {"latency", "catchup", "load", "console"};
    for (int k = 0; k < 4; k++)
        if (res[k] >= 0) printf("bench_node %s: %s\n", nm[k], res[k] ? "PASS" : "MISS");
    printf("bench_node: all correctness checks passed (load average %s)\n", loadavg());
    return 0;
}
