/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/demo_live.c — `tillsync demo`: three tills of one shop as three separate processes
 * (`tillsync run`) on loopback. Three cashiers (threads of this process, each writing to its own
 * till's database with plain SQLite, as a POS app would) sell at the same time; every half second
 * the demo shows how many of each till's sales every till already sees, so the sales appear live
 * on the others. At the end all three tills must show the same content hash and every product's
 * stock must equal its initial stock minus what the demo itself recorded as sold at all tills.
 * `tillsync demo --offline` is the earlier demo: offline tills converging by bundles.
 *
 * Each till's node serves its shop console (docs/CONSOLE.md); the demo prints their addresses with
 * the token, as `tillsync status` does. `--stay` then keeps the tills running and the cashiers
 * selling slowly (one sale every 1-3 s each) until SIGINT or SIGTERM, after making one conflict
 * (till1 and till2 rename a product at the same moment), so a person can watch the consoles and
 * resolve it there; the folder is kept.
 */
#include <errno.h>
#include <jansson.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <sodium.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"

#define NT            3
#define NPROD         12
#define INITIAL_STOCK 1000
#define SELL_SECONDS  5.0

static const char *const PRODUCT[NPROD] = {
    "Espresso",     "Cappuccino",   "Flat white", "Black tea", "Croissant",    "Muffin",
    "Cinnamon bun", "Ham sandwich", "Soup",       "Brownie",   "Orange juice", "Water",
};

typedef struct {
    int idx;
    char db[512];
    int slow; /* --stay: a sale every 1-3 s until stopped (instead of SELL_SECONDS of bursts) */
    uint64_t seed;
    atomic_int sold;       /* sales committed */
    atomic_int qty[NPROD]; /* units sold per product */
    char err[1024];
} cashier;

static uint64_t rnd(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/* --stay: set by SIGINT / SIGTERM; the cashiers and the main loop end when they see it. */
static volatile sig_atomic_t stop_flag;

static void on_stop_signal(int sig)
{
    (void)sig;
    stop_flag = 1;
}

/* Sleeps ms, or less when stop_flag is set. */
static void nap_ms(int ms)
{
    for (; ms > 0 && !stop_flag; ms -= 100) sleep_ms(ms < 100 ? ms : 100);
}

/* A cashier: sells at random intervals for SELL_SECONDS, one transaction per sale. */
static void *cashier_main(void *arg)
{
    cashier *c = arg;
    sqlite3 *db;
    if (sqlite3_open(c->db, &db) != SQLITE_OK) {
        snprintf(c->err, sizeof c->err, "open %s: %s", c->db, sqlite3_errmsg(db));
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 10000);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
    sqlite3_stmt *ins = NULL, *upd = NULL;
    if (sqlite3_prepare_v2(db, "INSERT INTO sales(id, till, product, qty) VALUES(?1, ?2, ?3, ?4)",
                           -1, &ins, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(db, "UPDATE products SET stock = stock - ?1 WHERE id = ?2", -1, &upd,
                           NULL) != SQLITE_OK) {
        snprintf(c->err, sizeof c->err, "%s", sqlite3_errmsg(db));
        goto out;
    }
    double end = cli_mono_s() + SELL_SECONDS;
    int n = atomic_load(&c->sold); /* --stay follows the first round: ids go on */
    while (!stop_flag && (c->slow || cli_mono_s() < end)) {
        int p = (int)(rnd(&c->seed) % NPROD), q = 1 + (int)(rnd(&c->seed) % 3);
        char id[32], pid[16], till[16];
        snprintf(id, sizeof id, "t%d-%05d", c->idx + 1, ++n);
        snprintf(pid, sizeof pid, "P%02d", p + 1);
        snprintf(till, sizeof till, "till%d", c->idx + 1);
        int ok = sqlite3_exec(db, "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
        sqlite3_bind_text(ins, 1, id, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 2, till, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(ins, 3, pid, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int(ins, 4, q);
        ok = ok && sqlite3_step(ins) == SQLITE_DONE;
        sqlite3_reset(ins);
        sqlite3_bind_int(upd, 1, q);
        sqlite3_bind_text(upd, 2, pid, -1, SQLITE_TRANSIENT);
        ok = ok && sqlite3_step(upd) == SQLITE_DONE;
        sqlite3_reset(upd);
        ok = ok && sqlite3_exec(db, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
        if (!ok) {
            snprintf(c->err, sizeof c->err, "sale %s: %s", id, sqlite3_errmsg(db));
            sqlite3_exec(db, "ROLLBACK", NULL, NULL, NULL);
            break;
        }
        atomic_fetch_add(&c->qty[p], q);
        atomic_fetch_add(&c->sold, 1);
        if (c->slow)
            nap_ms(1000 + (int)(rnd(&c->seed) % 2001));
        else
            sleep_ms(15 + (int)(rnd(&c->seed) % 50));
    }
out:
    sqlite3_finalize(ins);
    sqlite3_finalize(upd);
    sqlite3_close(db);
    return NULL;
}

/* A free TCP port on 127.0.0.1 (bound and released; the node binds it a moment later). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static int setup_till(const char *path, int catalogue, char key[65], char *err, size_t errlen)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s;
    if (tsync_store_open(&s, path, &o) != 0) {
        snprintf(err, errlen, "%s: %s", path, tsync_error_last()->message);
        return -1;
    }
    static const char *const COUNTERS[] = {"stock"};
    int rc = tsync_store_exec(s,
                              "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, "
                              "stock INTEGER NOT NULL DEFAULT 0);"
                              "CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, product TEXT, "
                              "qty INTEGER)",
                              NULL, NULL);
    if (rc == 0) rc = tsync_store_replicate(s, "products", COUNTERS, 1);
    if (rc == 0) rc = tsync_store_replicate(s, "sales", NULL, 0);
    for (int p = 0; rc == 0 && catalogue && p < NPROD; p++) {
        char sql[256];
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('P%02d', '%s', %d)", p + 1,
                 PRODUCT[p], INITIAL_STOCK);
        rc = tsync_store_exec(s, sql, NULL, NULL);
    }
    char *state = NULL;
    if (rc == 0) rc = tsync_store_state_json(&state, s);
    if (rc == 0) {
        const char *k = strstr(state, "\"public_key\": \"");
        if (k) snprintf(key, 65, "%.64s", k + 15);
    }
    free(state);
    if (rc) snprintf(err, errlen, "%s: %s", path, tsync_error_last()->message);
    tsync_store_free(s);
    return rc ? -1 : 0;
}

/* Sales of till `from` that till `at` shows, and stock totals. */
static int count_seen(sqlite3 *db, int from)
{
    char sql[96];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM sales WHERE till='till%d'", from + 1);
    sqlite3_stmt *st;
    int v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK) {
        if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
    }
    return v;
}

/* One progress line: what each cashier sold, and what each till sees of every cashier's sales. */
static void progress_line(double secs, int decimals, cashier *cs, sqlite3 *const *view)
{
    printf("  %4.*f s  sold %3d/%3d/%3d |", decimals, secs, atomic_load(&cs[0].sold),
           atomic_load(&cs[1].sold), atomic_load(&cs[2].sold));
    for (int i = 0; i < NT; i++)
        printf("  till%d sees %3d/%3d/%3d", i + 1, count_seen(view[i], 0), count_seen(view[i], 1),
               count_seen(view[i], 2));
    printf("\n");
}

/* Waits for the cashiers. Returns rc when it is an error already (err says why), else -1 with
 * the first failed cashier's error in err, else 0. */
static int join_cashiers(pthread_t *th, const cashier *cs, int rc, char *err, size_t errlen)
{
    for (int i = 0; i < NT; i++) pthread_join(th[i], NULL);
    if (rc) return rc;
    for (int i = 0; i < NT; i++)
        if (cs[i].err[0]) {
            snprintf(err, errlen, "cashier %d: %s", i + 1, cs[i].err);
            return -1;
        }
    return 0;
}

static int hash_of(const char *path, char out[17])
{
    tsync_store *s;
    uint8_t h[TSYNC_HASH_BYTES];
    if (tsync_store_open(&s, path, NULL) != 0) return -1;
    int rc = tsync_store_hash(h, s, NULL);
    tsync_store_free(s);
    sodium_bin2hex(out, 17, h, 8);
    return rc;
}

/* Till db's console address with its token ("http://ADDR/?token=TOKEN"), as `tillsync status`
 * prints it: from the status file the node writes (DB.node: console.address, .token_file).
 * Waits up to 20 s for the node to write it. 0, 1 when stopped (--stay) first, or -1 with why in
 * err. */
static int console_url(const char *db, char *url, size_t len, char *err, size_t errlen)
{
    char path[600];
    snprintf(path, sizeof path, "%s.node", db);
    double t0 = cli_mono_s();
    for (;;) {
        json_t *o = json_load_file(path, 0, NULL);
        json_t *con = json_object_get(o, "console");
        const char *addr = json_string_value(json_object_get(con, "address"));
        const char *tf = json_string_value(json_object_get(con, "token_file"));
        char token[160] = "";
        FILE *f = addr && tf ? fopen(tf, "r") : NULL;
        if (f) {
            if (!fgets(token, sizeof token, f)) token[0] = 0;
            fclose(f);
            token[strcspn(token, "\r\n")] = 0;
        }
        if (token[0]) snprintf(url, len, "http://%s/?token=%s", addr, token);
        json_decref(o);
        if (token[0]) return 0;
        if (stop_flag) return 1;
        if (cli_mono_s() - t0 > 20) {
            snprintf(err, errlen, "%s: the node did not say where its console listens within 20 s",
                     db);
            return -1;
        }
        sleep_ms(50);
    }
}

/* A conflict for the console to show: till1 and till2 rename product P01 at the same moment.
 * Both write transactions are open before either commits, so neither node can merge the other's
 * rename first: the two writes are concurrent and every till records the collision. */
static int make_conflict(const cashier *cs, char *err, size_t errlen)
{
    sqlite3 *db[2] = {NULL, NULL};
    int ok = 1;
    for (int i = 0; i < 2 && ok; i++) {
        ok = sqlite3_open(cs[i].db, &db[i]) == SQLITE_OK;
        sqlite3_busy_timeout(db[i], 10000);
        ok = ok && sqlite3_exec(db[i], "BEGIN IMMEDIATE", NULL, NULL, NULL) == SQLITE_OK;
        char sql[128];
        snprintf(sql, sizeof sql, "UPDATE products SET name = '%s (till%d)' WHERE id = 'P01'",
                 PRODUCT[0], i + 1);
        ok = ok && sqlite3_exec(db[i], sql, NULL, NULL, NULL) == SQLITE_OK;
    }
    for (int i = 0; i < 2 && ok; i++)
        ok = sqlite3_exec(db[i], "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
    if (!ok) snprintf(err, errlen, "making a conflict: %s", sqlite3_errmsg(db[db[1] ? 1 : 0]));
    for (int i = 0; i < 2; i++) sqlite3_close(db[i]);
    return ok ? 0 : -1;
}

static const char *const FILES[] = {"",          "-wal",  "-shm",       ".key",
                                    ".key.mark", ".node", ".node.lock", ".console-token"};

int cmd_demo_live(int argc, char **argv)
{
    const char *dir_arg = NULL;
    int keep = 0, stay = 0;
    static const struct option opts[] = {{"dir", required_argument, NULL, 'd'},
                                         {"keep", no_argument, NULL, 'k'},
                                         {"stay", no_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    cli_opts po = {.cmd = "demo", .argc = argc - 1, .argv = argv + 1, .longopts = opts};
    int c;
    while ((c = cli_opt_next(&po)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        if (c == 'd') dir_arg = optarg;
        if (c == 'k') keep = 1;
        if (c == 's') stay = keep = 1; /* the person works with the databases: never removed */
    }
    if (stay) {
        /* Ctrl-C (or SIGTERM) at any step stops the cashiers and the nodes cleanly. */
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_stop_signal; /* no SA_RESTART: a sleep ends at once */
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, NULL);
        sigaction(SIGTERM, &sa, NULL);
    }
    if (optind < argc - 1) {
        fprintf(stderr, "tillsync: demo: unexpected argument '%s' (see 'tillsync demo --help')\n",
                argv[1 + optind]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    signal(SIGPIPE, SIG_IGN);
    char dir[256];
    if (dir_arg) {
        snprintf(dir, sizeof dir, "%s", dir_arg);
        if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
            fprintf(stderr, "tillsync: demo: cannot create %s: %s\n", dir, strerror(errno));
            return 1;
        }
        keep = 1;
    } else {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof dir, "%s/tillsync-demo-XXXXXX", tmp && tmp[0] ? tmp : "/tmp");
        if (!mkdtemp(dir)) {
            fprintf(stderr, "tillsync: demo: cannot create a folder: %s\n", strerror(errno));
            return 1;
        }
    }
    char self[1024];
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) {
        fprintf(stderr, "tillsync: demo: cannot find the tillsync program\n");
        return 1;
    }
    self[sl] = 0;

    printf("tillsync demo: three tills of one shop, three processes on loopback, live sync\n");
    printf("  folder %s\n\n", dir);
    static cashier cs[NT];
    char key[NT][65], err[1200];
    int port[NT];
    int rc = 0;
    for (int i = 0; i < NT && rc == 0; i++) {
        memset(&cs[i], 0, sizeof cs[i]);
        cs[i].idx = i;
        cs[i].seed = (uint64_t)time(NULL) * 31 + (uint64_t)i;
        snprintf(cs[i].db, sizeof cs[i].db, "%s/till%d.db", dir, i + 1);
        for (size_t f = 0; f < sizeof FILES / sizeof FILES[0]; f++) {
            char p[600];
            snprintf(p, sizeof p, "%s%s", cs[i].db, FILES[f]);
            remove(p);
        }
        rc = setup_till(cs[i].db, i == 0, key[i], err, sizeof err);
        port[i] = free_port();
        if (port[i] < 0) rc = -1, snprintf(err, sizeof err, "no free port on 127.0.0.1");
    }
    if (rc) {
        fprintf(stderr, "tillsync: demo: %s\n", err);
        return 1;
    }
    printf("1. till1 has the catalogue (%d products, stock %d each); till2 and till3 start "
           "empty\n",
           NPROD, INITIAL_STOCK);

    /* 2. Start the three nodes: till2 dials till1, till3 dials till1 and till2 (a full mesh). */
    pid_t pid[NT] = {0};
    for (int i = 0; i < NT; i++) {
        char listen[64], peers[2][256], log[600];
        snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", port[i]);
        for (int j = 0; j < i; j++)
            snprintf(peers[j], sizeof peers[j], "tcp://127.0.0.1:%d#%s", port[j], key[j]);
        snprintf(log, sizeof log, "%s.log", cs[i].db);
        pid[i] = fork();
        if (pid[i] == 0) {
            FILE *lf = freopen(log, "w", stderr);
            (void)lf;
            char *args[12];
            int a = 0;
            args[a++] = self;
            args[a++] = "run";
            args[a++] = cs[i].db;
            args[a++] = "--listen";
            args[a++] = listen;
            args[a++] = "--no-mdns"; /* the peers are given: nothing to announce nor browse */
            for (int j = 0; j < i; j++) {
                args[a++] = "--peer";
                args[a++] = peers[j];
            }
            args[a] = NULL;
            execv(self, args);
            _exit(127);
        }
    }
    printf("2. started three nodes (pids %d %d %d) on 127.0.0.1 ports %d %d %d\n", (int)pid[0],
           (int)pid[1], (int)pid[2], port[0], port[1], port[2]);

    sqlite3 *view[NT];
    for (int i = 0; i < NT; i++) {
        sqlite3_open_v2(cs[i].db, &view[i], SQLITE_OPEN_READONLY, NULL);
        sqlite3_busy_timeout(view[i], 2000);
    }
    /* Wait for the catalogue to reach every till. */
    double t0 = cli_mono_s();
    for (;;) {
        int ok = 1;
        for (int i = 1; i < NT; i++) {
            sqlite3_stmt *st;
            int n = 0;
            if (sqlite3_prepare_v2(view[i], "SELECT count(*) FROM products", -1, &st, NULL) ==
                SQLITE_OK) {
                if (sqlite3_step(st) == SQLITE_ROW) n = sqlite3_column_int(st, 0);
                sqlite3_finalize(st);
            }
            ok &= n == NPROD;
        }
        if (ok || stop_flag) break;
        if (cli_mono_s() - t0 > 20) {
            rc = -1;
            snprintf(err, sizeof err,
                     "the catalogue did not reach every till in 20 s (logs: "
                     "%s/till*.db.log)",
                     dir);
            break;
        }
        sleep_ms(20);
    }
    if (rc == 0 && !stop_flag)
        printf("3. the catalogue reached till2 and till3 over the network in %.0f ms\n",
               (cli_mono_s() - t0) * 1000);
    /* Each node's shop console: its address with the token, as `tillsync status` prints it. */
    for (int i = 0; i < NT && rc == 0 && !stop_flag; i++) {
        char url[400];
        int r = console_url(cs[i].db, url, sizeof url, err, sizeof err);
        if (r < 0) rc = -1;
        if (r == 0)
            printf("   till%d console: %s%s\n", i + 1, url,
                   i < NT - 1 ? ""
                   : stay     ? "  (open in a browser)"
                              : "  (open while the demo runs; --stay keeps them up)");
    }

    /* 4. Sell concurrently and watch. */
    pthread_t th[NT];
    if (rc == 0 && !stop_flag) {
        printf("4. three cashiers sell for %.0f s; each line: sales of till1/till2/till3 seen at "
               "each till\n",
               SELL_SECONDS);
        for (int i = 0; i < NT; i++) pthread_create(&th[i], NULL, cashier_main, &cs[i]);
        double start = cli_mono_s();
        while (cli_mono_s() - start < SELL_SECONDS + 0.6 && !stop_flag) {
            sleep_ms(500);
            progress_line(cli_mono_s() - start, 1, cs, view);
        }
        rc = join_cashiers(th, cs, rc, err, sizeof err);
    }

    /* 5. Converged? Same hash everywhere, and stock = initial - what was sold everywhere. */
    char h[NT][17];
    if (rc == 0 && !stop_flag) {
        double c0 = cli_mono_s();
        for (; !stop_flag;) {
            int same = 1;
            for (int i = 0; i < NT; i++)
                if (hash_of(cs[i].db, h[i]) != 0) same = 0;
            for (int i = 1; i < NT; i++) same &= strcmp(h[0], h[i]) == 0;
            if (same) break;
            if (cli_mono_s() - c0 > 20) {
                rc = -1;
                snprintf(err, sizeof err, "the tills did not converge within 20 s");
                break;
            }
            sleep_ms(50);
        }
    }
    if (rc == 0 && !stop_flag) {
        int total = 0;
        for (int i = 0; i < NT; i++) total += atomic_load(&cs[i].sold);
        printf("5. all three tills show the same content (hash %s…): %d sales\n", h[0], total);
        for (int p = 0; p < NPROD && rc == 0; p++) {
            int sold = 0;
            for (int i = 0; i < NT; i++) sold += atomic_load(&cs[i].qty[p]);
            for (int i = 0; i < NT && rc == 0; i++) {
                char sql[96];
                snprintf(sql, sizeof sql, "SELECT stock FROM products WHERE id='P%02d'", p + 1);
                sqlite3_stmt *st;
                int stock = -1;
                if (sqlite3_prepare_v2(view[i], sql, -1, &st, NULL) == SQLITE_OK) {
                    if (sqlite3_step(st) == SQLITE_ROW) stock = sqlite3_column_int(st, 0);
                    sqlite3_finalize(st);
                }
                if (stock != INITIAL_STOCK - sold) {
                    rc = -1;
                    snprintf(err, sizeof err, "till%d: %s stock %d, expected %d - %d", i + 1,
                             PRODUCT[p], stock, INITIAL_STOCK, sold);
                }
            }
            if (rc == 0 && p < 4)
                printf("   %-12s stock %4d = %d - %d sold across the tills (a counter)\n",
                       PRODUCT[p], INITIAL_STOCK - sold, INITIAL_STOCK, sold);
        }
        if (rc == 0) printf("   ... every product's stock checks out on every till\n");
    }
    /* --stay: sell slowly until SIGINT / SIGTERM, with one conflict to resolve. */
    int early = stop_flag; /* stopped before the stay: the checks above were skipped */
    if (rc == 0 && stay && !stop_flag) rc = make_conflict(cs, err, sizeof err);
    if (rc == 0 && stay && !stop_flag) {
        printf("6. the tills stay up; each cashier sells about once every 1-3 s until Ctrl-C.\n"
               "   Open the consoles above. till1 and till2 just renamed %s at the same moment:\n"
               "   the Conflicts page shows both names; keep one, take the other or enter a "
               "value.\n"
               "   Make another: pause till2's node, rename a product on both, let it go on:\n"
               "     kill -STOP %d; tillsync sql %s \"UPDATE products SET name='Tea' WHERE "
               "id='P04'\"\n"
               "     tillsync sql %s \"UPDATE products SET name='Chai' WHERE id='P04'\"; kill "
               "-CONT %d\n",
               PRODUCT[0], (int)pid[1], cs[0].db, cs[1].db, (int)pid[1]);
        for (int i = 0; i < NT; i++) {
            cs[i].slow = 1;
            pthread_create(&th[i], NULL, cashier_main, &cs[i]);
        }
        double start = cli_mono_s(), next = start + 10;
        while (!stop_flag) {
            nap_ms(200);
            if (stop_flag || cli_mono_s() < next) continue;
            next += 10;
            progress_line(cli_mono_s() - start, 0, cs, view);
        }
        rc = join_cashiers(th, cs, rc, err, sizeof err);
        printf("\n7. stopping: %d/%d/%d sales in all\n", atomic_load(&cs[0].sold),
               atomic_load(&cs[1].sold), atomic_load(&cs[2].sold));
    }
    if (rc == 0 && early) printf("\n   stopped (SIGINT or SIGTERM) before the demo's end\n");
    for (int i = 0; i < NT; i++) sqlite3_close(view[i]);
    for (int i = 0; i < NT; i++)
        if (pid[i] > 0) kill(pid[i], SIGTERM);
    for (int i = 0; i < NT; i++)
        if (pid[i] > 0) waitpid(pid[i], NULL, 0);
    if (rc) {
        fprintf(stderr, "tillsync: demo: %s\n", err);
        return 1;
    }
    printf("%s nodes stopped. Try it by hand: tillsync run DB --listen ... --peer ...; tillsync "
           "status DB\n",
           stay ? "  " : "6.");
    if (!keep) {
        for (int i = 0; i < NT; i++)
            for (size_t f = 0; f < sizeof FILES / sizeof FILES[0]; f++) {
                char p[600];
                snprintf(p, sizeof p, "%s%s", cs[i].db, FILES[f]);
                remove(p);
                snprintf(p, sizeof p, "%s.log", cs[i].db);
                remove(p);
            }
        rmdir(dir);
    } else {
        printf("   databases and node logs kept in %s (till1.db, till2.db, till3.db; "
               "tillsync status %s/till1.db)\n",
               dir, dir);
    }
    return 0;
}
