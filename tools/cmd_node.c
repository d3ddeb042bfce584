/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_node.c — `tillsync run` (the sync node in the foreground) and `tillsync status` (what
 * the node reports). The node writes its status to DB.node about once a second (and within 100 ms
 * of a change); status reads that file, checks that the process that wrote it is alive, and adds
 * what the database itself says (held, parked, conflicts: tsync_store_status_json). run reads its
 * options from the command line and a config file with the same names, starts the node (which
 * takes the database's lock: one node per database) and speaks the systemd protocol through
 * tools/node_service.c. docs/NODE.md, "Running as a service".
 */
#include <errno.h>
#include <getopt.h>
#include <netdb.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_schema.h"
#include "cmd_node.h"
#include "cmd_prune.h"
#include "node_service.h"

static int usage(const char *msg)
{
    return cli_usage("status", msg);
}

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

/* The options of run; a config file's settings are these names (tools/node_service.c). RUN_OPTS
 * lists them in the order of their codes: code - OPT_CONFIG is the index. */
enum {
    OPT_CONFIG = 256,
    OPT_LISTEN,
    OPT_PEER,
    OPT_KEY,
    OPT_STATUS_FILE,
    OPT_PRUNE_KEEP,
    OPT_PRUNE_EVERY,
    OPT_NO_PRUNE,
    OPT_LOG_MAX_BATCHES,
    OPT_LOG_MAX_MB,
    OPT_LOG_MAX_DAYS,
    OPT_BACKUP_EVERY,
    OPT_BACKUP_DIR,
    OPT_KEEP,
    OPT_NO_MDNS,
    OPT_VERBOSE,
    OPT_QUIET,
    OPT_PRINT_CONFIG,
    OPT_CONSOLE,
    OPT_NO_CONSOLE,
    OPT_CONSOLE_PASSWORD_FILE,
    OPT_NO_RELAY,
    OPT_CLOUD_BACKUP_EVERY, /* cloud backups (net/node/cloud.c) */
    OPT_CLOUD_KEEP,
    OPT_LIVENESS,
};
static const struct option RUN_OPTS[] = {
    {"config", required_argument, NULL, OPT_CONFIG},
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"peer", required_argument, NULL, OPT_PEER},
    {"key", required_argument, NULL, OPT_KEY},
    {"status-file", required_argument, NULL, OPT_STATUS_FILE},
    {"prune-keep", required_argument, NULL, OPT_PRUNE_KEEP},
    {"prune-every", required_argument, NULL, OPT_PRUNE_EVERY},
    {"no-prune", no_argument, NULL, OPT_NO_PRUNE},
    {"log-max-batches", required_argument, NULL, OPT_LOG_MAX_BATCHES},
    {"log-max-mb", required_argument, NULL, OPT_LOG_MAX_MB},
    {"log-max-days", required_argument, NULL, OPT_LOG_MAX_DAYS},
    {"backup-every", required_argument, NULL, OPT_BACKUP_EVERY},
    {"backup-dir", required_argument, NULL, OPT_BACKUP_DIR},
    {"keep", required_argument, NULL, OPT_KEEP},
    {"no-mdns", no_argument, NULL, OPT_NO_MDNS},
    {"verbose", no_argument, NULL, OPT_VERBOSE},
    {"quiet", no_argument, NULL, OPT_QUIET},
    {"print-config", no_argument, NULL, OPT_PRINT_CONFIG},
    {"console", required_argument, NULL, OPT_CONSOLE},
    {"no-console", no_argument, NULL, OPT_NO_CONSOLE},
    {"console-password-file", required_argument, NULL, OPT_CONSOLE_PASSWORD_FILE},
    {"no-relay", no_argument, NULL, OPT_NO_RELAY},
    {"cloud-backup-every", required_argument, NULL, OPT_CLOUD_BACKUP_EVERY},
    {"cloud-keep", required_argument, NULL, OPT_CLOUD_KEEP},
    {"liveness", required_argument, NULL, OPT_LIVENESS},
    {NULL, 0, NULL, 0},
};
#define RUN_NOPTS (sizeof RUN_OPTS / sizeof RUN_OPTS[0] - 1)

typedef struct {
    tsync_node_options o;
    tsync_log_policy lp;
    int lp_given;
    const char *db, *config;
    const char **peers;
    size_t npeers;
    const char *vals[RUN_NOPTS]; /* each setting as given, by RUN_OPTS index: --print-config */
    int print_config;
} run_args;

/* "tcp://HOST:PORT" with a port from 1 to 65535 ("*" too when listening), checked as the
 * options are read: a typo stops run at once (exit 1, as the library's own check of a peer
 * did), not a node that never connects. The host is copied into host. */
static int check_endpoint(const char *opt, const char *ep, int listening, char *host, size_t hlen)
{
    size_t elen = strcspn(ep, "#");
    const char *colon = NULL;
    for (const char *p = ep; p < ep + elen; p++)
        if (*p == ':') colon = p;
    if (strncmp(ep, "tcp://", 6) != 0 || !colon || colon <= ep + 6) {
        fprintf(stderr, "tillsync: run: --%s '%.200s': expected tcp://ADDR:PORT%s\n", opt, ep,
                listening ? "" : " or tcp://ADDR:PORT#KEY");
        return 1;
    }
    const char *port = colon + 1;
    size_t plen = (size_t)(ep + elen - port);
    char *end;
    long v = plen ? strtol(port, &end, 10) : 0;
    int star = listening && plen == 1 && *port == '*';
    if (!star && (plen == 0 || plen > 5 || end != ep + elen || v < 1 || v > 65535)) {
        fprintf(stderr,
                "tillsync: run: --%s '%.200s': the port must be a number from 1 to 65535%s\n", opt,
                ep, listening ? " (or *: any free one)" : "");
        return 1;
    }
    const char *h = ep + 6;
    size_t hl = (size_t)(colon - h);
    if (hl >= 2 && h[0] == '[' && h[hl - 1] == ']') h++, hl -= 2;
    snprintf(host, hlen, "%.*s", (int)hl, h);
    return 0;
}

static int positive(const char *opt, const char *v, double lo, double hi, double *out)
{
    char *end;
    double d = strtod(v, &end);
    if (*end || end == v || !(d >= lo) || d > hi) {
        char m[300];
        snprintf(m, sizeof m, "run: --%s needs a number from %g to %g, not '%.100s'", opt, lo, hi,
                 v);
        return cli_usage("run", m);
    }
    *out = d;
    return 0;
}

/* One option of run into a, from the command line or the config file. 0, or the exit status
 * (the message printed). */
static int run_opt(run_args *a, int c, const char *v)
{
    double d;
    char host[256];
    if (c == 'v') c = OPT_VERBOSE;
    if (c == 'q') c = OPT_QUIET;
    if (c >= OPT_CONFIG && c < OPT_CONFIG + (int)RUN_NOPTS)
        a->vals[c - OPT_CONFIG] = v ? v : "true";
    if (c == OPT_VERBOSE) a->vals[OPT_QUIET - OPT_CONFIG] = NULL;
    if (c == OPT_QUIET) a->vals[OPT_VERBOSE - OPT_CONFIG] = NULL;
    switch (c) {
    case OPT_PRINT_CONFIG:
        a->print_config = 1;
        return 0;
    case OPT_CONFIG:
        a->config = v;
        return 0;
    case OPT_LISTEN:
        if (v[0] && check_endpoint("listen", v, 1, host, sizeof host)) return 1;
        a->o.listen = v;
        return 0;
    case OPT_PEER:
        if (check_endpoint("peer", v, 0, host, sizeof host)) return 1;
        a->peers[a->npeers++] = v;
        return 0;
    case OPT_KEY:
        a->o.key_path = v;
        return 0;
    case OPT_STATUS_FILE:
        a->o.status_path = v;
        return 0;
    case OPT_PRUNE_KEEP:
        if (positive("prune-keep", v, 1, 1e12, &d)) return 2;
        a->o.prune_keep = (long)d;
        return 0;
    case OPT_PRUNE_EVERY:
        if (positive("prune-every", v, 0.1, 86400, &d)) return 2;
        a->o.prune_ms = (int)(d * 1000);
        return 0;
    case OPT_NO_PRUNE:
        a->o.prune_keep = -1;
        return 0;
    case OPT_LOG_MAX_BATCHES:
    case OPT_LOG_MAX_MB:
    case OPT_LOG_MAX_DAYS: {
        /* The bounds are read as `prune` reads them (tools/cmd_prune.c). */
        char name[32];
        snprintf(name, sizeof name, "--%s", RUN_OPTS[c - OPT_CONFIG].name);
        char *av[] = {name, (char *)v, NULL};
        int i = 0;
        if (cli_log_policy_arg("run", 2, av, &i, &a->lp) < 0) return 2;
        a->lp_given = 1;
        return 0;
    }
    case OPT_CLOUD_BACKUP_EVERY:
    case OPT_BACKUP_EVERY: {
        /* 90s, 30m, 6h, 1d (a bare number is seconds) */
        const char *opt = c == OPT_BACKUP_EVERY ? "backup-every" : "cloud-backup-every";
        char *end;
        double x = strtod(v, &end);
        double mult = !*end || !strcmp(end, "s") ? 1
                      : !strcmp(end, "m")        ? 60
                      : !strcmp(end, "h")        ? 3600
                      : !strcmp(end, "d")        ? 86400
                                                 : -1;
        if (end == v || mult < 0 || x * mult < 1 || x * mult > 366 * 86400.0) {
            char m[300];
            snprintf(m, sizeof m, "run: --%s needs a period like 90s, 30m, 6h or 1d, not '%.100s'",
                     opt, v);
            return cli_usage("run", m);
        }
        if (c == OPT_BACKUP_EVERY)
            a->o.backup_every_ms = (unsigned long)(x * mult * 1000);
        else
            a->o.cloud_backup_every_ms = (unsigned long)(x * mult * 1000);
        return 0;
    }
    case OPT_CLOUD_KEEP:
        if (positive("cloud-keep", v, 1, 100000, &d)) return 2;
        a->o.cloud_keep = (int)d;
        return 0;
    case OPT_LIVENESS: /* below a second: the pings of an idle peer come every second */
        if (positive("liveness", v, 1000, 600000, &d)) return 2;
        a->o.liveness_ms = (int)d;
        return 0;
    case OPT_BACKUP_DIR:
        a->o.backup_dir = v;
        return 0;
    case OPT_KEEP:
        if (positive("keep", v, 1, 100000, &d)) return 2;
        a->o.backup_keep = (int)d;
        return 0;
    case OPT_NO_MDNS:
        a->o.no_mdns = 1;
        return 0;
    case OPT_NO_RELAY:
        a->o.no_relay = 1;
        return 0;
    case OPT_VERBOSE:
        a->o.log_level = TSYNC_LOG_DEBUG;
        return 0;
    case OPT_QUIET:
        a->o.log_level = TSYNC_LOG_WARN;
        return 0;
    case OPT_CONSOLE: /* checked by the node: ADDR:PORT, a password beyond loopback */
        a->o.console = v;
        a->vals[OPT_NO_CONSOLE - OPT_CONFIG] = NULL;
        return 0;
    case OPT_NO_CONSOLE:
        a->o.console = "";
        a->vals[OPT_CONSOLE - OPT_CONFIG] = NULL;
        return 0;
    case OPT_CONSOLE_PASSWORD_FILE:
        a->o.console_password_file = v;
        return 0;
    }
    return 2;
}

static void run_args_init(run_args *a, const char **peers)
{
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    memset(a, 0, sizeof *a);
    a->o = o;
    a->o.log_level = TSYNC_LOG_INFO;
    a->o.console = "127.0.0.1:0"; /* the console: on, on loopback, at a free port */
    a->lp.version = TSYNC_LOG_POLICY_VERSION;
    a->peers = peers;
}

/* --print-config: the settings in effect, as a config file says them (it reads back the same). */
static void print_config(const run_args *a)
{
    printf("# tillsync run %s\n", a->db);
    for (size_t i = 0; i < RUN_NOPTS; i++) {
        int code = RUN_OPTS[i].val;
        if (code == OPT_CONFIG || code == OPT_PRINT_CONFIG) continue;
        if (code == OPT_PEER)
            for (size_t k = 0; k < a->npeers; k++) printf("peer = %s\n", a->peers[k]);
        else if (a->vals[i])
            printf("%s = %s\n", RUN_OPTS[i].name, a->vals[i]);
    }
}

/* Parses argv (argv[0] "run"): 0, or the exit status. */
static int run_parse(run_args *a, int argc, char **argv)
{
    cli_opts p = {
        .cmd = "run", .argc = argc, .argv = argv, .shortopts = "vq", .longopts = RUN_OPTS};
    int c;
    while ((c = cli_opt_next(&p)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        int rc = run_opt(a, c, optarg);
        if (rc) return rc;
    }
    for (int i = optind; i < argc; i++) {
        if (a->db) {
            char m[300];
            snprintf(m, sizeof m, "run: unexpected argument '%.200s'", argv[i]);
            return cli_usage("run", m);
        }
        a->db = argv[i];
    }
    return 0;
}

/* A peer's host that does not resolve now is said once, in the log and in `status`: the node
 * still dials it (ZeroMQ resolves again on each attempt), but "unreachable" alone would hide why.
 */
static void check_hosts(run_args *a, json_t *notes)
{
    for (size_t i = 0; i < a->npeers; i++) {
        char host[256];
        if (check_endpoint("peer", a->peers[i], 0, host, sizeof host)) continue;
        struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res = NULL;
        int rc = getaddrinfo(host, NULL, &hints, &res);
        if (res) freeaddrinfo(res);
        if (rc == 0) continue;
        char line[600];
        snprintf(line, sizeof line,
                 "peer %.300s: host %.200s does not resolve (%s); dialled anyway, it is resolved "
                 "again on each attempt",
                 a->peers[i], host, gai_strerror(rc));
        if (cli_journal)
            svc_log(NULL, TSYNC_LOG_WARN, line);
        else
            fprintf(stderr, "tillsync: run: %s\n", line);
        json_array_append_new(notes, json_string(line));
    }
}

int cmd_run(int argc, char **argv)
{
    run_args a;
    run_args_init(&a, NULL);
    /* Two passes: the first finds --config (and checks the command line); the second reads the
     * config's settings first and the command line after, so that a flag given overrides the
     * file (and --peer adds to its peers). */
    int cargc = argc - 1;
    char **cargv = calloc((size_t)argc + 1, sizeof *cargv);
    char **args = NULL;
    int nargs = 0, ret = 0;
    if (!cargv) return 1;
    memcpy(cargv, argv + 1, (size_t)cargc * sizeof *cargv);
    a.peers = calloc((size_t)argc + 1, sizeof *a.peers);
    if (!a.peers) ret = 1;
    if (!ret) ret = run_parse(&a, cargc, cargv);
    if (!ret && a.config) {
        const char *cfg = a.config;
        args = calloc(2, sizeof *args);
        if (!args) ret = 1;
        if (!ret && !(args[0] = strdup("run"))) ret = 1;
        nargs = 1;
        if (!ret) ret = svc_config_args(cfg, RUN_OPTS, &args, &nargs);
        char **all = ret ? NULL : calloc((size_t)(nargs + argc), sizeof *all);
        if (!ret && !all) ret = 1;
        if (!ret) {
            memcpy(all, args, (size_t)nargs * sizeof *all);
            memcpy(all + nargs, argv + 2, (size_t)(argc - 2) * sizeof *all);
            const char **np = realloc(a.peers, (size_t)(nargs + argc) * sizeof *np);
            if (!np) ret = 1;
            if (np) a.peers = np;
            if (!ret) {
                run_args_init(&a, np);
                ret = run_parse(&a, nargs + argc - 2, all);
            }
        }
        free(cargv);
        cargv = all; /* freed below; the strings are args' and main's */
    }
    if (!ret && !a.db) ret = cli_usage("run", "run needs DB");
    /* --backup-dir alone: no schedule, backups when asked for (the console's "back up now"). */
    if (!ret && a.o.backup_every_ms && !a.o.backup_dir)
        ret = cli_usage("run", "run: --backup-every needs --backup-dir");
    if (!ret && a.print_config) {
        print_config(&a);
        ret = -1;
    }
    struct stat sb;
    if (!ret && stat(a.db, &sb) != 0) {
        fprintf(stderr, "%stillsync: run: no database %s (create it with 'tillsync init %s')\n",
                cli_journal ? "<3>" : "", a.db, a.db);
        ret = 1;
    }
    /* From the lock on, `status` says the node runs: a SIGTERM from then on is a clean stop
     * (tsync_node_run sees the flag at once). */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    json_t *notes = json_array();
    if (!ret) check_hosts(&a, notes);
    tsync_node *n = NULL;
    if (!ret) {
        a.o.peers = a.peers;
        a.o.npeers = a.npeers;
        if (cli_journal) a.o.log = svc_log;
        /* The node creates files (its status, backups, the database's -wal and -shm): the shop's
         * data, for the service's user only. It takes the database's lock first: a second node
         * is refused (TSYNC_EBUSY, naming the first) before anything is written. */
        umask(077);
        if (tsync_node_new(&n, a.db, &a.o) != 0) {
            if (tsync_error_last()->code == TSYNC_EBUSY)
                fprintf(stderr, "%stillsync: run: %s ('tillsync status %s' shows it)\n",
                        cli_journal ? "<3>" : "", tsync_error_last()->message, a.db);
            ret = tsync_error_last()->code == TSYNC_EBUSY ? 1 : cli_fail("run");
        }
    }
    /* Under the node's lock, so a refused second run writes nothing. */
    if (!ret && a.lp_given && cli_log_policy_record(a.db, &a.lp)) ret = 1;
    if (!ret) {
        svc_lock_notes(a.db, tsync_node_endpoint(n), notes);
        svc_ready(tsync_node_endpoint(n));
        if (svc_watchdog_start(n) != 0)
            fprintf(stderr, "%stillsync: run: no watchdog thread\n", cli_journal ? "<4>" : "");
        int rc = tsync_node_run(n, &g_stop);
        svc_stopping();
        svc_watchdog_stop();
        ret = rc ? 1 : 0;
    }
    tsync_node_free(n);
    json_decref(notes);
    for (int i = 0; i < nargs; i++) free(args[i]);
    free(args);
    free(cargv);
    free(a.peers);
    return ret < 0 ? 0 : ret;
}

/* The console's address with its token, to open in a browser (the token file is the node's,
 * 0600: whoever can read it may use the console). */
static void print_console(json_t *con)
{
    const char *addr = json_string_value(json_object_get(con, "address"));
    const char *tf = json_string_value(json_object_get(con, "token_file"));
    if (!addr) {
        printf("console: off\n");
        return;
    }
    char token[128] = "";
    FILE *f = tf ? fopen(tf, "r") : NULL;
    if (f) {
        if (!fgets(token, sizeof token, f)) token[0] = 0;
        fclose(f);
        token[strcspn(token, "\r\n")] = 0;
    }
    if (token[0])
        printf("console: http://%s/?token=%s\n", addr, token);
    else
        printf("console: http://%s/ (token in %s, not readable here)\n", addr, tf ? tf : "?");
}

static void ago(uint64_t now, json_t *v, char *out, size_t len)
{
    if (!json_is_integer(v)) {
        snprintf(out, len, "never");
        return;
    }
    int64_t d = (int64_t)now - json_integer_value(v);
    if (d < 0) d = 0;
    if (d < 10000)
        snprintf(out, len, "%.1f s ago", (double)d / 1000);
    else if (d < 3600000)
        snprintf(out, len, "%lld s ago", (long long)(d / 1000));
    else
        snprintf(out, len, "%.1f h ago", (double)d / 3600000);
}

/* The node's status file, when a live node wrote it. Whether a node runs comes from the node's
 * lock (net/node/lock.c): a node that crashed holds no lock, and a pid the system reused is no
 * node. Without a lock file (a node of an older version), from the pid in the status file. */
static json_t *read_node_status(const char *db, int *running, json_t **notes)
{
    *running = 0;
    long long lpid;
    char listen[256];
    int held = svc_lock_probe(db, &lpid, listen, sizeof listen, notes);
    size_t len = strlen(db) + 6;
    char *path = malloc(len);
    if (!path) return NULL;
    snprintf(path, len, "%s.node", db);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    free(path);
    json_t *pid = json_object_get(o, "pid");
    if (held >= 0)
        *running = held;
    else if (json_is_integer(pid) &&
             (kill((pid_t)json_integer_value(pid), 0) == 0 || errno == EPERM))
        *running = 1;
    if (held > 0 && !o && lpid) {
        /* Started, no status written yet: what the lock file says. */
        o = json_pack("{s:I}", "pid", (json_int_t)lpid);
        if (listen[0]) json_object_set_new(o, "listen", json_string(listen));
    }
    return o;
}

/* The relay line of `status` (docs/RELAY.md, "The till's side"): its state and reason, the lag
 * both ways, the last exchange, and the envelopes refused by reason. */
static void print_relay(uint64_t now, json_t *r)
{
    const char *st = json_string_value(json_object_get(r, "state"));
    if (!st) return;
    const char *why = json_string_value(json_object_get(r, "reason"));
    const char *addr = json_string_value(json_object_get(r, "address"));
    if (!strcmp(st, "none")) {
        printf("relay: none (%s)\n", why ? why : "not used");
        return;
    }
    printf("relay: %s %s", st, addr ? addr : "");
    if (strcmp(st, "up") && why) printf(" (%s)", why);
    if (json_is_integer(json_object_get(r, "relay_lacks")))
        printf("  lag: relay lacks %lld, we lack %lld",
               (long long)json_integer_value(json_object_get(r, "relay_lacks")),
               (long long)json_integer_value(json_object_get(r, "till_lacks")));
    char a[32];
    if (json_is_integer(json_object_get(r, "last_exchange_ms"))) {
        ago(now, json_object_get(r, "last_exchange_ms"), a, sizeof a);
        printf("  last exchange %s", a);
    } else {
        printf("  no exchange yet");
    }
    printf("\n");
    const char *up = json_string_value(json_object_get(r, "uploads"));
    if (up) printf("relay: %s\n", up);
    const char *k;
    json_t *v;
    int any = 0;
    json_object_foreach(json_object_get(r, "envelopes_refused"), k, v)
    {
        if (json_integer_value(v) <= 0) continue;
        printf("%s %s %lld", any ? "," : "relay: envelopes refused:", k,
               (long long)json_integer_value(v));
        any = 1;
    }
    if (any) printf("\n");
}

/* The clock lines of `status`: this till's wall clock against the shop's median, and whether its
 * hybrid clock had run ahead and was taken back (docs/DATA_MODEL.md, "Clocks"). */
static void print_clock(uint64_t now, json_t *c)
{
    if (!c) return;
    const char *st = json_string_value(json_object_get(c, "state"));
    long long peers = (long long)json_integer_value(json_object_get(c, "peers"));
    long long ahead = (long long)json_integer_value(json_object_get(c, "ahead_ms"));
    long long abs_ahead = ahead < 0 ? -ahead : ahead;
    if (!st || !strcmp(st, "unknown"))
        printf("clock: not compared yet (no peer online)\n");
    else if (!strcmp(st, "ok"))
        printf("clock: ok (within %lld s of the shop's median, %lld peer(s))\n",
               abs_ahead / 1000 + 1, peers);
    else
        printf("clock: %s the shop's median by %lld s (%lld peer(s)): changes are stamped with "
               "the shop's time; set this machine's clock right\n",
               !strcmp(st, "ahead") ? "AHEAD of" : "BEHIND", abs_ahead / 1000, peers);
    long long ha = (long long)json_integer_value(json_object_get(c, "hlc_ahead_ms"));
    long long bound = (long long)json_integer_value(json_object_get(c, "skew_bound_ms"));
    if (st && strcmp(st, "unknown") && ha > bound)
        printf("clock: the hybrid clock is %lld s ahead of the shop's time (the next change takes "
               "it back)\n",
               ha / 1000);
    if (json_integer_value(json_object_get(c, "resets")) > 0) {
        char a[32];
        ago(now, json_object_get(c, "reset_at_ms"), a, sizeof a);
        printf("clock: hybrid clock taken back %lld time(s) to the shop's time, last %s (it was "
               "%lld s ahead)\n",
               (long long)json_integer_value(json_object_get(c, "resets")), a,
               (long long)(json_integer_value(json_object_get(c, "reset_from_ms")) -
                           json_integer_value(json_object_get(c, "reset_at_ms"))) /
                   1000);
    }
}

/* One line for the log and its policy, and one per till it left behind. */
static void print_log(const char *db, json_t *lg)
{
    if (!json_is_object(lg)) return;
    json_t *p = json_object_get(lg, "policy");
    long long mb = (long long)json_integer_value(json_object_get(p, "max_bytes"));
    long long mn = (long long)json_integer_value(json_object_get(p, "max_batches"));
    long long ma = (long long)json_integer_value(json_object_get(p, "max_age_ms"));
    printf("log: %lld batches, %.1f MB; kept: ",
           (long long)json_integer_value(json_object_get(lg, "batches")),
           (double)json_integer_value(json_object_get(lg, "bytes")) / (1024.0 * 1024));
    if (mn < 0)
        printf("any number, ");
    else
        printf("%lld batches, ", mn);
    if (mb < 0)
        printf("any size, ");
    else
        printf("%.0f MB, ", (double)mb / (1024.0 * 1024));
    if (ma < 0)
        printf("any age");
    else
        printf("%.0f days", (double)ma / 86400000.0);
    size_t nh = json_array_size(json_object_get(lg, "horizon"));
    if (nh) printf("; pruned below a horizon for %zu till(s)", nh);
    printf("\n");
    size_t i;
    json_t *b;
    json_array_foreach(json_object_get(lg, "behind"), i, b)
    {
        printf("attention: till %.16s… is behind the log's horizon (it acknowledged batch %lld of "
               "%.16s…, the log starts at %lld): it needs a snapshot from an enrolled till, or a "
               "restore of a current backup ('tillsync prune %s --log-max-days N' keeps more)\n",
               json_string_value(json_object_get(b, "key")),
               (long long)json_integer_value(json_object_get(b, "acked")),
               json_string_value(json_object_get(b, "origin")),
               (long long)json_integer_value(json_object_get(b, "horizon")), db);
    }
}

/* The relay keys lines of status (docs/RELAY_KEYS.md): the data-key epoch this till holds and
 * the shop's relay grant. */
/* The schedule of cloud backups and the last one's time, result and error. */
static void print_cloud_backup(uint64_t now, json_t *c)
{
    if (!json_is_object(c)) return;
    char every[32], last[32], ok[32];
    snprintf(every, sizeof every, "%llus",
             (unsigned long long)json_integer_value(json_object_get(c, "every_ms")) / 1000);
    ago(now, json_object_get(c, "last_ms"), last, sizeof last);
    ago(now, json_object_get(c, "last_ok_ms"), ok, sizeof ok);
    const char *res = json_string_value(json_object_get(c, "last_result"));
    char what[80];
    if (res)
        snprintf(what, sizeof what, "last %s %s", res, last);
    else
        snprintf(what, sizeof what, "none yet");
    printf("cloud backup: every %s%s; %s; last stored %s; %lld stored, %lld failed\n", every,
           json_is_true(json_object_get(c, "running")) ? " (one running now)" : "", what, ok,
           (long long)json_integer_value(json_object_get(c, "done")),
           (long long)json_integer_value(json_object_get(c, "failed")));
    const char *err = json_string_value(json_object_get(c, "last_error"));
    if (err) printf("attention: the last cloud backup failed: %s\n", err);
}

static void print_relay_keys(json_t *rk)
{
    if (!json_is_object(rk)) return;
    json_int_t held = json_integer_value(json_object_get(rk, "data_key_epoch"));
    json_int_t latest = json_integer_value(json_object_get(rk, "data_key_latest"));
    if (held > 0)
        printf("data key: epoch %lld%s\n", (long long)held,
               latest > held ? " (a later epoch exists that is not sealed to this till)" : "");
    else
        printf("data key: none sealed to this till%s\n",
               latest > 0 ? " (the shop has one: the admin must issue a data key that "
                            "includes this till)"
                          : "");
    json_t *g = json_object_get(rk, "grant");
    if (!json_is_object(g)) return;
    json_t *rl = json_object_get(g, "relays");
    char d[32];
    printf("relay grant: %s", json_string_value(json_object_get(json_array_get(rl, 0), "address")));
    if (json_array_size(rl) > 1) printf(" (+%zu more)", json_array_size(rl) - 1);
    json_int_t q = json_integer_value(json_object_get(g, "quota_mb"));
    if (q > 0) printf(", quota %lld MB", (long long)q);
    printf(", expires %s\n",
           tsync_trust_date((uint64_t)json_integer_value(json_object_get(g, "expires_ms")), d));
}

int cmd_status(int argc, char **argv)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"key", required_argument, NULL, 'k'},
                                         {NULL, 0, NULL, 0}};
    cli_opts po = {.cmd = "status", .argc = argc - 1, .argv = argv + 1, .longopts = opts};
    const char *db = NULL;
    int as_json = 0, c;
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    while ((c = cli_opt_next(&po)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        if (c == 'j') as_json = 1;
        if (c == 'k') so.key_path = optarg;
    }
    if (optind + 1 < argc - 1) return usage("status takes one DB");
    if (optind + 1 > argc - 1) return usage("status needs DB");
    db = argv[1 + optind];
    tsync_store *s;
    /* Read-only: status works on a full disk and changes nothing. */
    so.read_only = 1;
    if (tsync_store_open(&s, db, &so) != 0) return cli_fail("status");
    /* The database's own part, read now; the node's from its last report. */
    char *js = NULL;
    int rc = tsync_store_status_json(&js, s, CLI_STATUS_PARKED_MAX);
    char *lj = NULL;
    if (rc == 0) rc = tsync_store_log_json(&lj, s);
    tsync_store_free(s);
    if (rc != 0) {
        free(js);
        return cli_fail("status");
    }
    int running;
    json_t *notes = NULL;
    json_t *node = read_node_status(db, &running, &notes);
    json_t *out = json_object();
    json_object_set_new(out, "running", json_boolean(running));
    json_object_set_new(out, "online",
                        json_boolean(running && json_is_true(json_object_get(node, "online"))));
    json_t *st = json_loads(js, 0, NULL);
    free(js);
    const char *field;
    json_t *val;
    json_object_foreach(st, field, val) json_object_set(out, field, val);
    json_decref(st);
    json_t *logj = json_loads(lj, 0, NULL);
    free(lj);
    json_object_set_new(out, "log", logj ? logj : json_null());
    /* A full disk: the node's own report, or the file system's free space when it runs not. */
    int full = running && json_is_true(json_object_get(node, "disk_full"));
    struct statvfs vfs;
    char *dir = strdup(db), *sl = dir ? strrchr(dir, '/') : NULL;
    if (sl) *sl = 0;
    if (!full && dir && statvfs(sl ? (*dir ? dir : "/") : ".", &vfs) == 0 &&
        (uint64_t)vfs.f_bavail * vfs.f_frsize < 64 * 1024)
        full = 1;
    free(dir);
    json_object_set_new(out, "disk_full", json_boolean(full));
    if (running)
        json_object_set(out, "disk_full_since_ms", json_object_get(node, "disk_full_since_ms"));
    if (running) {
        static const char *const keep[] = {"pid",
                                           "listen",
                                           "updated_ms",
                                           "peers",
                                           "schema",
                                           "pending_out",
                                           "refused",
                                           "handshakes_incomplete",
                                           "batches_merged",
                                           "batches_sealed",
                                           "batches_pruned",
                                           "snapshots_sent",
                                           "snapshots_received",
                                           "mdns",
                                           "backups",
                                           "cloud_backup",
                                           "clock",
                                           "held_reasons",
                                           "console",
                                           "sync",
                                           "relay"};
        for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
            json_object_set(out, keep[i], json_object_get(node, keep[i]));
    }
    /* The indicator's word (docs/NODE.md, "Sync state"): a database no node runs on syncs not. */
    if (!json_is_object(json_object_get(out, "sync")))
        json_object_set_new(out, "sync",
                            json_pack("{s:s,s:n,s:n,s:s}", "state", "offline", "since_ms",
                                      "last_synced_at_ms", "reason",
                                      "no node runs on this database"));
    /* One word for a UI and what needs a person (docs/NODE.md, "Status"). */
    json_t *need = json_array();
    const char *cs = json_string_value(json_object_get(json_object_get(out, "clock"), "state"));
    if (json_array_size(json_object_get(out, "schema_mismatches")))
        json_array_append_new(need, json_string("schema_mismatch"));
    if (json_is_string(json_object_get(out, "signed_migration_error")))
        json_array_append_new(need, json_string("signed_migration"));
    if (full) json_array_append_new(need, json_string("disk_full"));
    /* A relay grant but no data key sealed to this till: it cannot use the relay. */
    json_t *rkj = json_object_get(out, "relay_keys");
    if (json_is_object(json_object_get(rkj, "grant")) &&
        json_integer_value(json_object_get(rkj, "data_key_epoch")) == 0)
        json_array_append_new(need, json_string("data_key_missing"));
    if (json_is_string(json_object_get(out, "unsealable")))
        json_array_append_new(need, json_string("unsealable"));
    if (cs && (!strcmp(cs, "ahead") || !strcmp(cs, "behind")))
        json_array_append_new(need, json_string("clock"));
    if (json_array_size(json_object_get(logj, "behind")))
        json_array_append_new(need, json_string("log_behind"));
    if (json_integer_value(json_object_get(out, "review_open")) > 0)
        json_array_append_new(need, json_string("review_conflicts"));
    /* The shop's relay refused this till (revoked, expired, unknown shop, ...). */
    const char *rs = json_string_value(json_object_get(json_object_get(out, "relay"), "state"));
    if (rs && !strcmp(rs, "refused")) json_array_append_new(need, json_string("relay_refused"));
    /* ... or takes no more of its batches (quota, ...): reading goes on, the off-site copy not. */
    if (json_is_string(json_object_get(json_object_get(out, "relay"), "uploads")))
        json_array_append_new(need, json_string("relay_uploads"));
    const char *cloud_last =
        json_string_value(json_object_get(json_object_get(out, "cloud_backup"), "last_result"));
    if (cloud_last && !strcmp(cloud_last, "failed"))
        json_array_append_new(need, json_string("cloud_backup_failed"));
    size_t pi;
    json_t *pv;
    json_array_foreach(json_object_get(out, "peers"), pi, pv)
    {
        const char *ps = json_string_value(json_object_get(pv, "state"));
        if (ps && !strcmp(ps, "refused")) {
            json_array_append_new(need, json_string("peer_refused"));
            break;
        }
    }
    /* What run found wrong at start (a peer's host that does not resolve). */
    if (running && json_array_size(notes)) {
        json_object_set(out, "start_notes", notes);
        json_array_append_new(need, json_string("start_notes"));
    }
    json_object_set_new(out, "state", json_string(json_array_size(need) ? "attention" : "ok"));
    json_object_set_new(out, "attention", need);
    if (as_json) {
        char *txt = json_dumps(out, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(txt ? txt : "{}");
        free(txt);
    } else {
        uint64_t now = cli_wall_ms();
        if (!running) {
            printf("node: not running (start it with 'tillsync run %s')\n", db);
        } else {
            char a[32];
            ago(now, json_object_get(node, "updated_ms"), a, sizeof a);
            printf("node: running (pid %lld, listening %s), %s; reported %s\n",
                   (long long)json_integer_value(json_object_get(node, "pid")),
                   json_string_value(json_object_get(node, "listen"))
                       ? json_string_value(json_object_get(node, "listen"))
                       : "-",
                   json_is_true(json_object_get(node, "online")) ? "online" : "offline", a);
        }
        json_t *sy = json_object_get(out, "sync");
        char syn_since[32], syn_last[32];
        ago(now, json_object_get(sy, "since_ms"), syn_since, sizeof syn_since);
        ago(now, json_object_get(sy, "last_synced_at_ms"), syn_last, sizeof syn_last);
        printf("sync: %s (%s); since %s; last synced %s\n",
               json_string_value(json_object_get(sy, "state")),
               json_string_value(json_object_get(sy, "reason")), syn_since, syn_last);
        printf("site %s  key %s\n", json_string_value(json_object_get(out, "site")),
               json_string_value(json_object_get(out, "public_key")));
        if (running) print_console(json_object_get(node, "console"));
        if (running) {
            json_t *md = json_object_get(node, "mdns");
            const char *daemon = json_string_value(json_object_get(md, "daemon"));
            const char *as = json_string_value(json_object_get(md, "published_as"));
            if (!json_is_true(json_object_get(md, "enabled")))
                printf("mDNS: off\n");
            else if (!json_is_true(json_object_get(node, "enrolled")))
                printf("mDNS: not enrolled, so no till is dialled from mDNS (static peers only)\n");
            else if (daemon && !strcmp(daemon, "unreachable"))
                printf("mDNS: no avahi daemon reachable: sessions and static peers go on, no new "
                       "tills are found\n");
            else
                printf("mDNS: %s%s%s, %lld till(s) of the shop advertised\n",
                       as ? "published as \"" : "not published", as ? as : "", as ? "\"" : "",
                       (long long)json_integer_value(json_object_get(md, "shop_tills_found")));
            json_t *peers = json_object_get(node, "peers");
            size_t i;
            json_t *p;
            if (json_array_size(peers) == 0) printf("peers: none\n");
            json_array_foreach(peers, i, p)
            {
                char a[32], since[32];
                ago(now, json_object_get(p, "last_seen_ms"), a, sizeof a);
                ago(now, json_object_get(p, "since_ms"), since, sizeof since);
                const char *key = json_string_value(json_object_get(p, "key"));
                const char *name = json_string_value(json_object_get(p, "name"));
                printf("peer %s%s%.16s  %s  %s  %s since %s  last seen %s", name ? name : "",
                       name ? " " : "", key ? key : "(key unknown)",
                       json_string_value(json_object_get(p, "address")),
                       json_string_value(json_object_get(p, "via")),
                       json_string_value(json_object_get(p, "state")), since, a);
                if (json_is_integer(json_object_get(p, "they_lack")))
                    printf("  lag: they lack %lld, we lack %lld",
                           (long long)json_integer_value(json_object_get(p, "they_lack")),
                           (long long)json_integer_value(json_object_get(p, "we_lack")));
                const char *wait_why = json_string_value(json_object_get(p, "reason"));
                if (wait_why) printf("  not dialled: %s", wait_why);
                long long cd = (long long)json_integer_value(json_object_get(p, "clock_delta_ms"));
                if (cd > 60000 || cd < -60000) printf("  its clock %+lld s", cd / 1000);
                const char *why = json_string_value(json_object_get(p, "refused_reason"));
                if (why) printf("  refused: %s", why);
                printf("\n");
            }
            printf("pending outgoing: %lld batches\n",
                   (long long)json_integer_value(json_object_get(node, "pending_out")));
            print_clock(now, json_object_get(node, "clock"));
            print_relay(now, json_object_get(node, "relay"));
        }
        printf("held %lld  parked %lld  conflicts %lld (%lld open)  forks %lld  unsealed %lld\n",
               (long long)json_integer_value(json_object_get(out, "held")),
               (long long)json_integer_value(json_object_get(out, "parked")),
               (long long)json_integer_value(json_object_get(out, "conflicts")),
               (long long)json_integer_value(json_object_get(out, "conflicts_open")),
               (long long)json_integer_value(json_object_get(out, "forks")),
               (long long)json_integer_value(json_object_get(out, "unsealed")));
        print_log(db, logj);
        print_relay_keys(json_object_get(out, "relay_keys"));
        print_cloud_backup(now, json_object_get(out, "cloud_backup"));
        cli_schema_status_print(out);
        json_int_t review = json_integer_value(json_object_get(out, "review_open"));
        if (review > 0)
            printf("attention: %lld conflict%s on review columns wait%s for a person to settle "
                   "(the winner shows until then; 'tillsync conflicts %s')\n",
                   (long long)review, review == 1 ? "" : "s", review == 1 ? "s" : "", db);
        json_t *rb = json_object_get(out, "last_rollback");
        if (json_integer_value(json_object_get(out, "rollbacks")) > 0 && json_is_object(rb)) {
            char a[32];
            ago(now, json_object_get(rb, "at_ms"), a, sizeof a);
            printf("rollbacks %lld: %s the log of this till was found gone back (an old copy "
                   "written over it: batch %lld here, %lld %s); new incarnation, site %.12s -> "
                   "%.12s; its lost batches are taken back from peers\n",
                   (long long)json_integer_value(json_object_get(out, "rollbacks")), a,
                   (long long)json_integer_value(json_object_get(rb, "log_seq")),
                   (long long)json_integer_value(json_object_get(rb, "seen_seq")),
                   strcmp(json_string_value(json_object_get(rb, "detected_by")) ?: "", "peer")
                       ? "already sent out"
                       : "at a peer",
                   json_string_value(json_object_get(rb, "old_site")) ?: "?",
                   json_string_value(json_object_get(rb, "new_site")) ?: "?");
        }
        if (json_is_true(json_object_get(out, "disk_full")))
            printf("disk full: the database's disk has no space left; sealing and merging wait "
                   "and are retried, nothing is lost; free space (status, hash, export, backup "
                   "and bundle to another disk still work)\n");
        if (running) {
            json_t *hr = json_object_get(node, "held_reasons"), *e;
            size_t i;
            json_array_foreach(hr, i, e) printf(
                "  held %lld: %s\n", (long long)json_integer_value(json_object_get(e, "count")),
                json_string_value(json_object_get(e, "reason")));
        }
        if (json_string_value(json_object_get(out, "unsealable")))
            printf("attention: %s\n", json_string_value(json_object_get(out, "unsealable")));
        if (running) {
            json_t *ref = json_object_get(node, "refused");
            const char *k;
            json_t *v;
            int any = 0;
            printf("refused:");
            json_object_foreach(ref, k, v)
            {
                if (json_integer_value(v) == 0) continue;
                printf("%s %s %lld", any ? "," : "", k, (long long)json_integer_value(v));
                any = 1;
            }
            printf("%s\n", any ? "" : " nothing");
        }
    }
    if (!as_json && running) {
        size_t ni;
        json_t *nv;
        json_array_foreach(notes, ni, nv) printf("attention: %s\n", json_string_value(nv));
    }
    json_decref(notes);
    json_decref(out);
    json_decref(node);
    /* For monitoring (docs/NODE.md, "Exit status"): 0 a node runs, 3 none does (as LSB's
     * "program is not running"); 1 and 2 stay failures and usage errors. */
    return running ? 0 : 3;
}
