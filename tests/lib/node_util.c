/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tests/lib/node_util.c — see node_util.h.
 */
#include "tests/lib/node_util.h"

#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/helpers.h"

#ifndef TSYNC_CLI
#define TSYNC_CLI "tillsync"
#endif

int64_t nu_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void nu_sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

double nu_scale(void)
{
    const char *e = getenv("TSYNC_PROP_SCALE");
    double x = e && *e ? strtod(e, NULL) : 1.0;
    return x > 0 && x < 1 ? x : 1.0;
}

int nu_scaled(int n, int lo)
{
    int v = (int)(n * nu_scale());
    return v < lo ? lo : v;
}

const char *nu_cli(void)
{
    const char *e = getenv("TSYNC_CLI");
    return e && *e ? e : TSYNC_CLI;
}

/* Copies a malloc'd string into a ring of static buffers and frees it: for failure messages,
 * which criterion prints after a longjmp that would leak anything malloc'd. */
static const char *keep_s(char *m)
{
    static char ring[4][32768];
    static int k;
    char *b = ring[k++ & 3];
    snprintf(b, sizeof ring[0], "%s", m ? m : "");
    free(m);
    return b;
}

/* ---------------------------------------------------------------- processes */

#define MAXPROC 64
static pid_t procs[MAXPROC];
static int nprocs;

static void reg(pid_t pid)
{
    for (int i = 0; i < nprocs; i++)
        if (procs[i] == 0) {
            procs[i] = pid;
            return;
        }
    if (nprocs < MAXPROC) procs[nprocs++] = pid;
}

static void unreg(pid_t pid)
{
    for (int i = 0; i < nprocs; i++)
        if (procs[i] == pid) procs[i] = 0;
}

static void stores_close(void);

/* In the child, before exec or fn: die with the test process, and start from a clean slate. */
static void child_setup(pid_t parent)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(99);
    signal(SIGPIPE, SIG_DFL);
}

pid_t nu_spawn(const char *const *argv, const char *log)
{
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_setup(parent);
        int in = open("/dev/null", O_RDONLY);
        int out =
            log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0644) : open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0) _exit(98);
        dup2(in, 0);
        dup2(out, 1);
        dup2(out, 2);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(97);
    }
    reg(pid);
    return pid;
}

pid_t nu_fork(int (*fn)(void *), void *arg)
{
    stores_close(); /* no SQLite connection crosses fork() */
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_setup(parent);
        _exit(fn(arg));
    }
    reg(pid);
    return pid;
}

int nu_wait(pid_t pid, int ms)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            unreg(pid);
            return st;
        }
        if (r < 0) {
            unreg(pid);
            return -2; /* not our child (already reaped) */
        }
        if (nu_now_ms() >= end) return -1;
        nu_sleep_ms(5);
    }
}

int nu_kill(pid_t pid, int sig, int ms)
{
    if (pid <= 0) return -1;
    kill(pid, sig);
    int st = nu_wait(pid, ms);
    if (st == -2) return st;
    if (st == -1) {
        kill(pid, SIGKILL);
        if (waitpid(pid, &st, 0) != pid) st = -1;
        unreg(pid);
    }
    return st;
}

void nu_kill_all(void)
{
    for (int i = 0; i < nprocs; i++)
        if (procs[i] > 0) kill(procs[i], SIGKILL);
    for (int i = 0; i < nprocs; i++)
        if (procs[i] > 0) {
            waitpid(procs[i], NULL, 0);
            procs[i] = 0;
        }
    nprocs = 0;
}

static int keep(void)
{
    const char *k = getenv("TSYNC_KEEP");
    return k && *k == '1';
}

const char *nu_tmpdir(void)
{
    static char ring[4][NU_PATH];
    static int k;
    char *b = ring[k++ & 3];
    char *d = keep() ? th_tmpdir() : th_tmpdir_auto();
    snprintf(b, NU_PATH, "%s", d);
    free(d);
    if (keep()) fprintf(stderr, "TSYNC_KEEP: test folder %s\n", b);
    return b;
}

void nu_fini(void)
{
    nu_kill_all();
    stores_close();
    th_cleanup();
}

const char *nu_status_str(int st)
{
    static char ring[4][64];
    static int k;
    char *b = ring[k++ & 3];
    if (st == -1)
        snprintf(b, 64, "still running");
    else if (st == -2)
        snprintf(b, 64, "not a child process");
    else if (WIFEXITED(st))
        snprintf(b, 64, "exit %d", WEXITSTATUS(st));
    else if (WIFSIGNALED(st))
        snprintf(b, 64, "signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
    else
        snprintf(b, 64, "status 0x%x", st);
    return b;
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    size_t cap = 4096, n = 0, k;
    char *b = malloc(cap);
    while (b && (k = fread(b + n, 1, cap - n - 1, f)) > 0) {
        n += k;
        if (n + 1 == cap) {
            char *nb = realloc(b, cap *= 2);
            if (!nb) free(b);
            b = nb;
        }
    }
    fclose(f);
    if (!b) return strdup("");
    b[n] = 0;
    return b;
}

static int vcli(char **out, char **err, const char *arg, va_list ap)
{
    const char *argv[32];
    int n = 0;
    argv[n++] = nu_cli();
    for (const char *a = arg; a && n < 31; a = va_arg(ap, const char *)) argv[n++] = a;
    argv[n] = NULL;
    char tmpl_o[] = "/tmp/nu-out-XXXXXX", tmpl_e[] = "/tmp/nu-err-XXXXXX";
    int fo = mkstemp(tmpl_o), fe = mkstemp(tmpl_e);
    cr_assert(fo >= 0 && fe >= 0, "mkstemp: %s", strerror(errno));
    fflush(stdout);
    fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
        child_setup(parent);
        int in = open("/dev/null", O_RDONLY);
        dup2(in, 0);
        dup2(fo, 1);
        dup2(fe, 2);
        execv(argv[0], (char *const *)argv);
        dprintf(2, "exec %s: %s\n", argv[0], strerror(errno));
        _exit(97);
    }
    reg(pid);
    close(fo);
    close(fe);
    int st = nu_wait(pid, 60000);
    if (st == -1) st = nu_kill(pid, SIGKILL, 1000);
    if (out) *out = slurp(tmpl_o);
    if (err) *err = slurp(tmpl_e);
    unlink(tmpl_o);
    unlink(tmpl_e);
    return st != -1 && WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

int nu_cli_run(char **out, char **err, const char *arg, ...)
{
    va_list ap;
    va_start(ap, arg);
    int rc = vcli(out, err, arg, ap);
    va_end(ap);
    return rc;
}

char *nu_cli_ok(const char *arg, ...)
{
    char *out = NULL, *err = NULL;
    va_list ap;
    va_start(ap, arg);
    int rc = vcli(&out, &err, arg, ap);
    va_end(ap);
    if (rc != 0) {
        const char *o = keep_s(out), *e = keep_s(err);
        cr_assert_fail("tillsync %s ... failed (%d): %s%s", arg, rc, o, e);
    }
    free(err);
    return out;
}

const char *nu_tail_s(const char *path, int lines)
{
    return keep_s(nu_tail(path, lines));
}

char *nu_tail(const char *path, int lines)
{
    char *all = slurp(path);
    size_t n = strlen(all);
    int seen = 0;
    size_t i = n;
    while (i > 0) {
        if (all[i - 1] == '\n' && i != n && ++seen >= lines) break;
        i--;
    }
    char *t = strdup(all + i);
    free(all);
    return t;
}

/* ---------------------------------------------------------------- databases */

/* Stores kept open for reading (opening one writes to the database, which would wake nodes). */
#define MAXSTORES 24
static struct {
    char path[NU_PATH];
    tsync_store *s;
} stores[MAXSTORES];

static void stores_close(void)
{
    for (int i = 0; i < MAXSTORES; i++)
        if (stores[i].s) {
            tsync_store_free(stores[i].s);
            stores[i].s = NULL;
            stores[i].path[0] = 0;
        }
}

static tsync_store *store_for(const char *path)
{
    for (int i = 0; i < MAXSTORES; i++)
        if (stores[i].s && strcmp(stores[i].path, path) == 0) return stores[i].s;
    for (int i = 0; i < MAXSTORES; i++)
        if (!stores[i].s) {
            tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
            o.busy_timeout_ms = 2000;
            if (tsync_store_open(&stores[i].s, path, &o) != 0) {
                stores[i].s = NULL;
                return NULL;
            }
            snprintf(stores[i].path, sizeof stores[i].path, "%s", path);
            return stores[i].s;
        }
    cr_assert_fail("too many databases open");
    return NULL; /* not reached */
}

static const char *errmsg(void)
{
    const tsync_error *e = tsync_error_last();
    return e && e->message ? e->message : "?";
}

void nu_make_db(const char *path)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = 1;
    tsync_store *s = NULL;
    int rc = tsync_store_open(&s, path, &o);
    cr_assert_eq(rc, 0, "create %s: %s", path, errmsg());
    th_exec(s, "CREATE TABLE products(id TEXT PRIMARY KEY, name TEXT, "
               "stock INTEGER NOT NULL DEFAULT 0);"
               "CREATE TABLE sales(id TEXT PRIMARY KEY, till TEXT, product TEXT, "
               "qty INTEGER NOT NULL DEFAULT 0)");
    const char *ctr[] = {"stock"};
    rc = tsync_store_replicate(s, "products", ctr, 1);
    cr_assert_eq(rc, 0, "replicate products: %s", errmsg());
    rc = tsync_store_replicate(s, "sales", NULL, 0);
    cr_assert_eq(rc, 0, "replicate sales: %s", errmsg());
    tsync_store_free(s);
}

void nu_insert_catalogue(const char *path)
{
    tsync_store *s = store_for(path);
    cr_assert(s, "open %s: %s", path, errmsg());
    char sql[256];
    th_exec(s, "BEGIN IMMEDIATE");
    for (int k = 0; k < NU_NPROD; k++) {
        snprintf(sql, sizeof sql, "INSERT INTO products VALUES('p%d', 'product %d', %d)", k, k,
                 NU_STOCK);
        th_exec(s, sql);
    }
    th_exec(s, "COMMIT");
    th_seal(s);
}

void nu_sell_sealed(const char *path, int n)
{
    nu_sell_sealed_from(path, 0, n);
}

void nu_sell_sealed_from(const char *path, int from, int to)
{
    tsync_store *s = th_open(path);
    char sql[256];
    for (int i = from; i < to; i++) {
        snprintf(sql, sizeof sql,
                 "INSERT INTO sales VALUES('a-%d', 'a', 'p%d', %d); UPDATE products SET stock = "
                 "stock - %d WHERE id = 'p%d'",
                 i, i % NU_NPROD, 1 + i % 3, 1 + i % 3, i % NU_NPROD);
        th_exec(s, sql);
        cr_assert_eq(th_seal(s), 1, "sale %d sealed as one batch", i);
    }
    tsync_store_free(s);
}

void nu_shop_create(const char *keyfile, const char *name)
{
    free(nu_cli_ok("shop", "create", keyfile, "--name", name, NULL));
}

void nu_enrol(const char *db, const char *keyfile, const char *name)
{
    free(nu_cli_ok("enrol", db, "--shop-key", keyfile, "--name", name, NULL));
}

static void state_field(const char *db, const char *field, char *out, size_t len)
{
    char *js = nu_cli_ok("state", db, "--json", NULL);
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    cr_assert(o, "state --json of %s is not JSON: %s", db, js);
    const char *v = json_string_value(json_object_get(o, field));
    cr_assert(v && strlen(v) + 1 == len, "state of %s has no %s: %s", db, field, js);
    memcpy(out, v, len);
    json_decref(o);
    free(js);
}

void nu_pubkey(const char *db, char out[65])
{
    state_field(db, "public_key", out, 65);
}

void nu_node_options(tsync_node_options *o, const char *listen, const char *const *peer)
{
    *o = (tsync_node_options)TSYNC_NODE_OPTIONS_INIT;
    o->listen = listen;
    o->no_mdns = 1;
    o->status_path = "";
    const char *v = getenv("TSYNC_NODE_VERBOSE");
    o->log_level = v && *v == '1' ? TSYNC_LOG_DEBUG : TSYNC_LOG_WARN;
    if (peer) {
        o->peers = peer;
        o->npeers = 1;
    }
}

void nu_peer_addr(char out[NU_EP + 80], const char *endpoint, const char *db)
{
    char key[65];
    nu_pubkey(db, key);
    snprintf(out, NU_EP + 80, "%s#%s", endpoint, key);
}

void nu_site(const char *db, char out[33])
{
    state_field(db, "site", out, 33);
}

static int64_t q_int(sqlite3 *h, const char *sql, int *ok)
{
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(h, sql, -1, &st, NULL) != SQLITE_OK) {
        *ok = 0;
        return -1;
    }
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    else if (rc != SQLITE_DONE)
        *ok = 0;
    sqlite3_finalize(st);
    return v;
}

nu_facts nu_read(const char *db)
{
    nu_facts f;
    memset(&f, 0, sizeof f);
    tsync_store *s = store_for(db);
    if (!s) return f;
    uint8_t h[TSYNC_HASH_BYTES];
    if (tsync_store_hash(h, s, NULL) != 0) return f;
    for (int i = 0; i < TSYNC_HASH_BYTES; i++) snprintf(f.hash + 2 * i, 3, "%02x", h[i]);
    sqlite3 *c = tsync_store_sqlite(s);
    int ok = 1;
    f.sales = q_int(c, "SELECT count(*) FROM sales", &ok);
    f.products = q_int(c, "SELECT count(*) FROM products", &ok);
    f.held = q_int(c, "SELECT count(*) FROM tsync_held", &ok);
    f.parked = q_int(c, "SELECT count(*) FROM tsync_parked", &ok);
    f.forks = q_int(c, "SELECT count(*) FROM tsync_forks", &ok);
    for (int k = 0; k < NU_NPROD; k++) {
        char sql[96];
        snprintf(sql, sizeof sql,
                 "SELECT coalesce((SELECT stock FROM products WHERE id='p%d'), -1)", k);
        f.stock[k] = q_int(c, sql, &ok);
    }
    f.ok = ok;
    return f;
}

int64_t nu_query(const char *db, const char *sql)
{
    tsync_store *s = store_for(db);
    if (!s) return -1;
    int ok = 1;
    int64_t v = q_int(tsync_store_sqlite(s), sql, &ok);
    return ok ? v : -1;
}

void nu_cli_hash(const char *db, char out[65])
{
    char *h = nu_cli_ok("hash", db, NULL);
    size_t n = strcspn(h, " \r\n");
    cr_assert_eq(n, 64, "tillsync hash %s printed '%s'", db, h);
    memcpy(out, h, 64);
    out[64] = 0;
    free(h);
}

/* ---------------------------------------------------------------- sellers */

static int seller_main(void *arg)
{
    const nu_seller *s = arg;
    if (s->delay_ms) nu_sleep_ms(s->delay_ms);
    sqlite3 *h;
    if (sqlite3_open_v2(s->db, &h, SQLITE_OPEN_READWRITE, NULL) != SQLITE_OK) {
        fprintf(stderr, "seller %s: cannot open %s\n", s->till, s->db);
        return 2;
    }
    sqlite3_busy_timeout(h, 10000);
    char *e = NULL;
    if (sqlite3_exec(h, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", NULL, NULL, &e) !=
        SQLITE_OK) {
        fprintf(stderr, "seller %s: pragmas: %s\n", s->till, e ? e : "?");
        return 2;
    }
    char sql[512];
    for (int i = s->first; i < s->first + s->n; i++) {
        int k = i % NU_NPROD, q = 1 + i % 3;
        snprintf(sql, sizeof sql,
                 "BEGIN IMMEDIATE; INSERT INTO sales VALUES('%s-%d', '%s', 'p%d', %d); "
                 "UPDATE products SET stock = stock - %d WHERE id = 'p%d'",
                 s->till, i, s->till, k, q, q, k);
        if (sqlite3_exec(h, sql, NULL, NULL, &e) != SQLITE_OK) {
            fprintf(stderr, "seller %s: sale %d: %s\n", s->till, i, e ? e : "?");
            return 3;
        }
        if (sqlite3_changes(h) != 1) {
            fprintf(stderr, "seller %s: sale %d: product p%d not in the database\n", s->till, i, k);
            return 4;
        }
        if (sqlite3_exec(h, "COMMIT", NULL, NULL, &e) != SQLITE_OK) {
            fprintf(stderr, "seller %s: commit %d: %s\n", s->till, i, e ? e : "?");
            return 5;
        }
        if (s->pause_us) usleep((useconds_t)s->pause_us);
    }
    sqlite3_close(h);
    return 0;
}

pid_t nu_seller_start(const nu_seller *s)
{
    return nu_fork(seller_main, (void *)s);
}

int64_t nu_sold(int first, int n, int k)
{
    int64_t t = 0;
    for (int i = first; i < first + n; i++)
        if (i % NU_NPROD == k) t += 1 + i % 3;
    return t;
}

void nu_seller_wait(pid_t pid, int ms, const char *what)
{
    int st = nu_wait(pid, ms);
    cr_assert(st != -1, "%s: the seller did not finish within %d ms", what, ms);
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0, "%s: the seller failed (%s)", what,
              nu_status_str(st));
}

/* ---------------------------------------------------------------- nodes */

void nu_node_init(nu_node *n, const char *dir, const char *name, const char *db)
{
    memset(n, 0, sizeof *n);
    snprintf(n->name, sizeof n->name, "%s", name);
    snprintf(n->db, sizeof n->db, "%s", db);
    snprintf(n->log, sizeof n->log, "%s/%s.log", dir, name);
    snprintf(n->listen, sizeof n->listen, "tcp://127.0.0.1:*");
    nu_pubkey(db, n->key);
}

void nu_node_peer(nu_node *n, const nu_node *to, int with_key)
{
    cr_assert(n->npeers < NU_MAXPEERS);
    cr_assert(to->endpoint[0], "peer %s has not been started", to->name);
    if (with_key)
        snprintf(n->peers[n->npeers++], sizeof n->peers[0], "%s#%s", to->endpoint, to->key);
    else
        snprintf(n->peers[n->npeers++], sizeof n->peers[0], "%s", to->endpoint);
}

static char *status_path(const nu_node *n, char *buf, size_t len)
{
    snprintf(buf, len, "%s.node", n->db);
    return buf;
}

json_t *nu_node_status(const nu_node *n)
{
    char p[NU_PATH + 8];
    json_error_t je;
    json_t *o = json_load_file(status_path(n, p, sizeof p), 0, &je);
    if (!o) return NULL;
    if (n->pid <= 0 || json_integer_value(json_object_get(o, "pid")) != n->pid) {
        json_decref(o);
        return NULL;
    }
    return o;
}

void nu_node_start(nu_node *n)
{
    const char *argv[10 + 2 * NU_MAXPEERS];
    char liveness[16];
    int k = 0;
    argv[k++] = nu_cli();
    argv[k++] = "run";
    argv[k++] = n->db;
    argv[k++] = "--listen";
    argv[k++] = n->listen;
    for (int i = 0; i < n->npeers; i++) {
        argv[k++] = "--peer";
        argv[k++] = n->peers[i];
    }
    if (n->liveness_ms) {
        snprintf(liveness, sizeof liveness, "%d", n->liveness_ms);
        argv[k++] = "--liveness";
        argv[k++] = liveness;
    }
    const char *v = getenv("TSYNC_NODE_VERBOSE");
    if (n->verbose || (v && *v == '1')) argv[k++] = "-v";
    argv[k] = NULL;
    FILE *f = fopen(n->log, "a");
    if (f) {
        fprintf(f, "---- test: start %d of %s:", n->starts + 1, n->name);
        for (int i = 0; argv[i]; i++) fprintf(f, " %s", argv[i]);
        fprintf(f, "\n");
        fclose(f);
    }
    n->pid = nu_spawn(argv, n->log);
    n->starts++;
    int64_t end = nu_now_ms() + 30000;
    for (;;) {
        json_t *o = nu_node_status(n);
        if (o) {
            const char *ep = json_string_value(json_object_get(o, "listen"));
            if (ep && (ep[0] || !n->listen[0])) {
                snprintf(n->endpoint, sizeof n->endpoint, "%s", ep);
                if (ep[0]) snprintf(n->listen, sizeof n->listen, "%s", ep);
                json_decref(o);
                return;
            }
            json_decref(o);
        }
        int st;
        if (waitpid(n->pid, &st, WNOHANG) == n->pid) {
            unreg(n->pid);
            n->pid = 0;
            cr_assert_fail("node %s exited at start (%s):\n%s", n->name, nu_status_str(st),
                           nu_tail_s(n->log, 20));
        }
        if (nu_now_ms() > end) {
            cr_assert_fail("node %s did not write its status file with its pid and listen "
                           "endpoint within 30 s:\n%s",
                           n->name, nu_tail_s(n->log, 20));
        }
        nu_sleep_ms(20);
    }
}

void nu_node_kill(nu_node *n)
{
    if (n->pid > 0) nu_kill(n->pid, SIGKILL, 10000);
    n->pid = 0;
}

/* The stacks of a process that hangs, appended to its log (when gdb is there). */
static void dump_stacks(const nu_node *n, pid_t pid)
{
    if (access("/usr/bin/gdb", X_OK) != 0) return;
    char ps[32];
    snprintf(ps, sizeof ps, "%d", (int)pid);
    const char *argv[] = {"/usr/bin/gdb", "-p", ps, "-batch", "-ex", "thread apply all bt", NULL};
    FILE *f = fopen(n->log, "a");
    if (f) {
        fprintf(f, "---- test: %s did not stop; its threads:\n", n->name);
        fclose(f);
    }
    pid_t g = nu_spawn(argv, n->log);
    if (nu_wait(g, 60000) == -1) nu_kill(g, SIGKILL, 1000);
}

void nu_node_stop(nu_node *n)
{
    if (n->pid <= 0) return;
    pid_t pid = n->pid;
    kill(pid, SIGTERM);
    int st = nu_wait(pid, 30000);
    if (st == -1) {
        dump_stacks(n, pid);
        st = nu_kill(pid, SIGKILL, 5000) | 0x10000;
    }
    n->pid = 0;
    if (st != 0) {
        cr_assert_fail("node %s did not stop cleanly on SIGTERM (%s%s):\n%s", n->name,
                       nu_status_str(st & 0xffff), st & 0x10000 ? ", killed after 30 s" : "",
                       nu_tail_s(n->log, 80));
    }
}

int64_t nu_node_refused(const nu_node *n, const char *reason)
{
    json_t *o = nu_node_status(n);
    if (!o) return -1;
    json_t *v = json_object_get(json_object_get(o, "refused"), reason);
    int64_t r = json_is_integer(v) ? (int64_t)json_integer_value(v) : -1;
    json_decref(o);
    return r;
}

int nu_node_connected(const nu_node *n)
{
    json_t *o = nu_node_status(n);
    if (!o) return -1;
    size_t i;
    json_t *p;
    int c = 0;
    json_array_foreach(json_object_get(o, "peers"), i, p)
    {
        const char *st = json_string_value(json_object_get(p, "state"));
        if (st && strcmp(st, "connected") == 0) c++;
    }
    json_decref(o);
    return c;
}

static char *describe(const nu_node *n)
{
    nu_facts f = nu_read(n->db);
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    fprintf(m, "-- %s (pid %d, %s): ", n->name, (int)n->pid, n->endpoint);
    if (f.ok)
        fprintf(m,
                "hash %.16s sales %lld products %lld stock %lld/%lld/%lld held %lld parked %lld "
                "forks %lld\n",
                f.hash, (long long)f.sales, (long long)f.products, (long long)f.stock[0],
                (long long)f.stock[1], (long long)f.stock[2], (long long)f.held,
                (long long)f.parked, (long long)f.forks);
    else
        fprintf(m, "(database not readable now)\n");
    json_t *o = nu_node_status(n);
    if (o) {
        size_t i;
        json_t *p;
        json_array_foreach(json_object_get(o, "peers"), i, p)
        {
            fprintf(m, "   peer %s %s %s they_lack %lld we_lack %lld in_flight_bytes %lld\n",
                    json_string_value(json_object_get(p, "address")),
                    json_string_value(json_object_get(p, "direction")),
                    json_string_value(json_object_get(p, "state")),
                    (long long)json_integer_value(json_object_get(p, "they_lack")),
                    (long long)json_integer_value(json_object_get(p, "we_lack")),
                    (long long)json_integer_value(json_object_get(p, "in_flight_bytes")));
        }
        char *r = json_dumps(json_object_get(o, "refused"), JSON_COMPACT);
        fprintf(m, "   refused %s, merged %lld, sealed %lld\n", r ? r : "?",
                (long long)json_integer_value(json_object_get(o, "batches_merged")),
                (long long)json_integer_value(json_object_get(o, "batches_sealed")));
        free(r);
        json_decref(o);
    } else {
        fprintf(m, "   (no status file of this run)\n");
    }
    char *t = nu_tail(n->log, 8);
    fprintf(m, "   log tail:\n%s", t);
    free(t);
    fclose(m);
    return buf;
}

const char *nu_node_describe(const nu_node *n)
{
    return keep_s(describe(n));
}

static const char *describe_all(nu_node *const *nodes, int nn)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    for (int i = 0; i < nn; i++) {
        char *d = describe(nodes[i]);
        fputs(d, m);
        free(d);
    }
    fclose(m);
    return keep_s(buf);
}

int64_t nu_wait_converged(nu_node *const *nodes, int nn, int64_t want_sales,
                          const int64_t *want_stock, int ms, const char *what)
{
    int64_t t0 = nu_now_ms(), end = t0 + ms;
    for (;;) {
        int good = 1;
        char first[65] = "";
        for (int i = 0; i < nn && good; i++) {
            nu_facts f = nu_read(nodes[i]->db);
            good = f.ok && f.sales == want_sales && f.held == 0;
            for (int k = 0; good && want_stock && k < NU_NPROD; k++)
                good = f.stock[k] == want_stock[k];
            if (good && i == 0) memcpy(first, f.hash, sizeof first);
            if (good && i > 0) good = strcmp(first, f.hash) == 0;
        }
        if (good) return nu_now_ms() - t0;
        if (nu_now_ms() > end) {
            const char *d = describe_all(nodes, nn);
            char want[160] = "any stock";
            if (want_stock)
                snprintf(want, sizeof want, "stock %lld/%lld/%lld", (long long)want_stock[0],
                         (long long)want_stock[1], (long long)want_stock[2]);
            cr_assert_fail("%s: not converged after %d ms; waited for every node to show %lld "
                           "sales, %s, nothing held and one hash:\n%s",
                           what, ms, (long long)want_sales, want, d);
        }
        nu_sleep_ms(50);
    }
}

void nu_wait_connected(nu_node *const *nodes, int nn, const int *want, int ms, const char *what)
{
    int64_t end = nu_now_ms() + ms;
    for (;;) {
        int good = 1;
        for (int i = 0; i < nn && good; i++) good = nu_node_connected(nodes[i]) == want[i];
        if (good) return;
        if (nu_now_ms() > end) {
            const char *d = describe_all(nodes, nn);
            char got[128] = "";
            for (int i = 0; i < nn; i++)
                snprintf(got + strlen(got), sizeof got - strlen(got), "%s%s %d/%d", i ? ", " : "",
                         nodes[i]->name, nu_node_connected(nodes[i]), want[i]);
            cr_assert_fail("%s: peers connected (got/want) %s after %d ms:\n%s", what, got, ms, d);
        }
        nu_sleep_ms(50);
    }
}
