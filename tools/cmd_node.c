/*
 * tools/cmd_node.c — `tillsync run` (the sync node in the foreground) and `tillsync status` (what
 * the node reports). The node writes its status to DB.node about once a second (and within 100 ms
 * of a change); status reads that file, checks that the process that wrote it is alive, and adds
 * what the database itself says (held, parked, conflicts: tsync_store_status_json). docs/NODE.md.
 */
#include <errno.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statvfs.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cmd_schema.h"
#include "cmd_node.h"
#include "cmd_prune.h"

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

int cmd_run(int argc, char **argv)
{
    tsync_node_options o = TSYNC_NODE_OPTIONS_INIT;
    const char *db = NULL;
    const char **peers = calloc((size_t)argc, sizeof *peers);
    if (!peers) return 1;
    size_t npeers = 0;
    o.log_level = TSYNC_LOG_INFO;
    tsync_log_policy lp = {TSYNC_LOG_POLICY_VERSION, 0, 0, 0};
    int lp_given = 0;
    for (int i = 2; i < argc; i++) {
        const char *a = argv[i];
        if ((!strcmp(a, "--listen") || !strcmp(a, "--peer") || !strcmp(a, "--status-file") ||
             !strcmp(a, "--prune-keep") || !strcmp(a, "--prune-every") ||
             !strcmp(a, "--backup-every") || !strcmp(a, "--backup-dir") || !strcmp(a, "--keep")) &&
            i + 1 >= argc) {
            free(peers);
            fprintf(stderr, "tillsync: run: %s needs a value (see 'tillsync --help')\n", a);
            return 2;
        }
        int lr = cli_log_policy_arg("run", argc, argv, &i, &lp);
        if (lr < 0) {
            free(peers);
            return 2;
        }
        if (lr > 0)
            lp_given = 1;
        else if (!strcmp(a, "--listen"))
            o.listen = argv[++i];
        else if (!strcmp(a, "--peer"))
            peers[npeers++] = argv[++i];
        else if (!strcmp(a, "--status-file"))
            o.status_path = argv[++i];
        else if (!strcmp(a, "--prune-keep")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1) {
                free(peers);
                fprintf(stderr, "tillsync: run: --prune-keep needs a number >= 1, not '%s'\n",
                        argv[i]);
                return 2;
            }
            o.prune_keep = v;
        } else if (!strcmp(a, "--prune-every")) {
            char *end;
            double v = strtod(argv[++i], &end);
            if (*end || end == argv[i] || v < 0.1 || v > 86400) {
                free(peers);
                fprintf(stderr,
                        "tillsync: run: --prune-every needs seconds (0.1 to 86400), not '%s'\n",
                        argv[i]);
                return 2;
            }
            o.prune_ms = (int)(v * 1000);
        } else if (!strcmp(a, "--backup-every")) {
            /* 90s, 30m, 6h, 1d (a bare number is seconds) */
            char *end;
            double v = strtod(argv[++i], &end);
            double mult = !*end || !strcmp(end, "s") ? 1
                          : !strcmp(end, "m")        ? 60
                          : !strcmp(end, "h")        ? 3600
                          : !strcmp(end, "d")        ? 86400
                                                     : -1;
            if (end == argv[i] || mult < 0 || v * mult < 1 || v * mult > 366 * 86400.0) {
                free(peers);
                fprintf(stderr,
                        "tillsync: run: --backup-every needs a period like 90s, 30m, 6h or 1d, not "
                        "'%s'\n",
                        argv[i]);
                return 2;
            }
            o.backup_every_ms = (unsigned long)(v * mult * 1000);
        } else if (!strcmp(a, "--backup-dir"))
            o.backup_dir = argv[++i];
        else if (!strcmp(a, "--keep")) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 100000) {
                free(peers);
                fprintf(stderr, "tillsync: run: --keep needs a number >= 1, not '%s'\n", argv[i]);
                return 2;
            }
            o.backup_keep = (int)v;
        } else if (!strcmp(a, "--no-mdns"))
            o.no_mdns = 1;
        else if (!strcmp(a, "--no-prune"))
            o.prune_keep = -1;
        else if (!strcmp(a, "-v") || !strcmp(a, "--verbose"))
            o.log_level = TSYNC_LOG_DEBUG;
        else if (!strcmp(a, "-q") || !strcmp(a, "--quiet"))
            o.log_level = TSYNC_LOG_WARN;
        else if (a[0] == '-' || db) {
            free(peers);
            fprintf(stderr, "tillsync: run: unexpected argument '%s' (see 'tillsync --help')\n", a);
            return 2;
        } else
            db = a;
    }
    if (!db) {
        free(peers);
        return usage("run needs DB");
    }
    if (!o.backup_every_ms != !o.backup_dir) {
        free(peers);
        return usage("run: --backup-every and --backup-dir go together");
    }
    o.peers = peers;
    o.npeers = npeers;
    struct stat sb;
    if (stat(db, &sb) != 0) {
        free(peers);
        fprintf(stderr, "tillsync: run: no database %s (create it with 'tillsync init %s')\n", db,
                db);
        return 1;
    }
    if (lp_given && cli_log_policy_record(db, &lp)) {
        free(peers);
        return 1;
    }
    tsync_node *n;
    int rc = tsync_node_new(&n, db, &o);
    free(peers);
    if (rc) return cli_fail("run");
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    rc = tsync_node_run(n, &g_stop);
    tsync_node_free(n);
    return rc ? 1 : 0;
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

/* The node's status file, when a live node wrote it. */
static json_t *read_node_status(const char *db, int *running)
{
    *running = 0;
    size_t len = strlen(db) + 6;
    char *path = malloc(len);
    if (!path) return NULL;
    snprintf(path, len, "%s.node", db);
    json_error_t je;
    json_t *o = json_load_file(path, 0, &je);
    free(path);
    if (!o) return NULL;
    json_t *pid = json_object_get(o, "pid");
    if (json_is_integer(pid) && (kill((pid_t)json_integer_value(pid), 0) == 0 || errno == EPERM))
        *running = 1;
    return o;
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

int cmd_status(int argc, char **argv)
{
    const char *db;
    int as_json;
    char err[64];
    if (cli_db_json_args(argc, argv, "status", &db, &as_json, err, sizeof err)) return usage(err);
    tsync_store *s;
    /* Read-only: status works on a full disk and changes nothing. */
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
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
    json_t *node = read_node_status(db, &running);
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
                                           "clock",
                                           "held_reasons"};
        for (size_t i = 0; i < sizeof keep / sizeof keep[0]; i++)
            json_object_set(out, keep[i], json_object_get(node, keep[i]));
    }
    /* One word for a UI and what needs a person (docs/NODE.md, "Status"). */
    json_t *need = json_array();
    const char *cs = json_string_value(json_object_get(json_object_get(out, "clock"), "state"));
    if (json_array_size(json_object_get(out, "schema_mismatches")))
        json_array_append_new(need, json_string("schema_mismatch"));
    if (json_is_string(json_object_get(out, "signed_migration_error")))
        json_array_append_new(need, json_string("signed_migration"));
    if (full) json_array_append_new(need, json_string("disk_full"));
    if (json_is_string(json_object_get(out, "unsealable")))
        json_array_append_new(need, json_string("unsealable"));
    if (cs && (!strcmp(cs, "ahead") || !strcmp(cs, "behind")))
        json_array_append_new(need, json_string("clock"));
    if (json_array_size(json_object_get(logj, "behind")))
        json_array_append_new(need, json_string("log_behind"));
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
        printf("site %s  key %s\n", json_string_value(json_object_get(out, "site")),
               json_string_value(json_object_get(out, "public_key")));
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
        }
        printf("held %lld  parked %lld  conflicts %lld  forks %lld  unsealed %lld\n",
               (long long)json_integer_value(json_object_get(out, "held")),
               (long long)json_integer_value(json_object_get(out, "parked")),
               (long long)json_integer_value(json_object_get(out, "conflicts")),
               (long long)json_integer_value(json_object_get(out, "forks")),
               (long long)json_integer_value(json_object_get(out, "unsealed")));
        print_log(db, logj);
        cli_schema_status_print(out);
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
    json_decref(out);
    json_decref(node);
    return 0;
}
