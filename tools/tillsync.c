/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/tillsync.c — the tillsync command: one subcommand per job a shop's IT person or a POS
 * developer does by hand. Every error is one line on stderr naming the problem; exit status 1 for
 * a failure, 2 for a usage error. Every command reads its options with getopt_long
 * (tools/cli_opt.c) and says how it is used with --help (tools/cli_help.c, which is also the
 * manual page).
 */
#include <errno.h>
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cmd_backup.h"
#include "cmd_io.h"
#include "cmd_migrate.h"
#include "cmd_node.h"
#include "cmd_prune.h"
#include "cmd_conflicts.h"
#include "cmd_schema.h"
#include "cmd_trust.h"
#include "cmd_relay.h"
#include "hint.h"
#include "node_service.h"

int cli_fail(const char *what)
{
    const tsync_error *e = tsync_error_last();
    char hint[512];
    const char *h = e->code ? cli_hint(e->code, e->message, hint, sizeof hint) : NULL;
    fprintf(stderr, "%stillsync: %s: %s%s%s%s\n", cli_journal ? "<3>" : "", what,
            e->code ? e->message : "unknown error", h ? " (hint: " : "", h ? h : "", h ? ")" : "");
    return 1;
}

int cli_db_json_args(int argc, char **argv, const char *cmd, const char **db, int *as_json,
                     char *err, size_t errlen)
{
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    *db = NULL;
    *as_json = 0;
    cli_opts p = {.cmd = cmd, .argc = argc - 1, .argv = argv + 1, .longopts = opts, .quiet = 1};
    int c;
    while ((c = cli_opt_next(&p)) != -1) {
        if (c == CLI_OPT_BAD) {
            snprintf(err, errlen, "%s takes DB and --json", cmd);
            return -1;
        }
        *as_json = 1;
    }
    if (optind < argc - 1) *db = argv[1 + optind];
    if (optind + 1 < argc - 1) {
        snprintf(err, errlen, "%s takes DB and --json", cmd);
        return -1;
    }
    if (*db) return 0;
    snprintf(err, errlen, "%s needs DB", cmd);
    return -1;
}

static int usage_error(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

/* Whether the arguments of a command (argv[2] on) ask for its help: --help anywhere before a
 * "--", or -h first. */
static int wants_help(int argc, char **argv)
{
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (!strcmp(argv[i], "--help") || (i == 2 && !strcmp(argv[i], "-h"))) return 1;
    return 0;
}

static int cmd_help(int argc, char **argv)
{
    if (argc > 3) return usage_error("help takes one COMMAND or --man");
    if (argc == 2) {
        cli_help_overview();
        return 0;
    }
    if (!strcmp(argv[2], "--help") || !strcmp(argv[2], "-h")) return cli_help_command("help");
    if (!strcmp(argv[2], "--man")) {
        cli_help_man();
        return 0;
    }
    if (cli_help_command(argv[2]) == 0) return 0;
    fprintf(stderr, "tillsync: help: unknown command '%s' (see 'tillsync --help')\n", argv[2]);
    return 2;
}

/* tillsync init DB [--key PATH] */
static int cmd_init(int argc, char **argv)
{
    static const struct option opts[] = {{"key", required_argument, NULL, 'k'}, {NULL, 0, NULL, 0}};
    cli_opts p = {.cmd = "init", .argc = argc - 1, .argv = argv + 1, .longopts = opts};
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    int c;
    while ((c = cli_opt_next(&p)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        o.key_path = optarg;
    }
    int n = argc - 1 - optind;
    if (n != 1) return usage_error(n < 1 ? "init needs DB" : "init takes only DB");
    const char *db = argv[1 + optind];
    o.create = 1;
    /* The database, its -wal and -shm and the key hold the shop's data and this device's
     * secret: readable by their owner only. */
    umask(077);
    tsync_store *s;
    if (tsync_store_open(&s, db, &o) != 0) return cli_fail("open");
    char hex[2 * TSYNC_SITE_ID_BYTES + 1];
    sodium_bin2hex(hex, sizeof hex, tsync_store_site_id(s), TSYNC_SITE_ID_BYTES);
    printf("database %s ready, site %s, key file %s%s\n", db, hex, o.key_path ? o.key_path : db,
           o.key_path ? "" : ".key");
    tsync_store_free(s);
    return 0;
}

int cli_open(const char *path, int mode, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.read_only = mode == CLI_RO;
    int rc = tsync_store_open(s, path, &o);
    if ((rc == TSYNC_EFULL || rc == TSYNC_EIO) && mode == CLI_RW_OR_RO) {
        /* A full disk fails the open's writes with SQLITE_FULL, or its shared-memory index with
         * an I/O error: read what is there instead. */
        char first[512];
        snprintf(first, sizeof first, "%s", tsync_error_last()->message);
        o.read_only = 1;
        rc = tsync_store_open(s, path, &o);
        if (rc == 0)
            printf("cannot write to %s (%s): opened read-only; changes not sealed yet are not "
                   "sealed now\n",
                   path, first);
    }
    if (rc != 0) return cli_fail("open");
    return 0;
}

static int open_db(const char *path, int create, tsync_store **s)
{
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    o.create = create;
    if (tsync_store_open(s, path, &o) != 0) return cli_fail("open");
    return 0;
}

static int read_file(const char *path, uint8_t **out, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "tillsync: cannot open %s: %s\n", path, strerror(errno));
        return 1;
    }
    size_t cap = 1 << 16, n = 0;
    uint8_t *buf = malloc(cap);
    size_t k;
    while (buf && (k = fread(buf + n, 1, cap - n, f)) > 0) {
        n += k;
        if (n == cap) {
            uint8_t *nb = realloc(buf, cap *= 2);
            if (!nb) free(buf);
            buf = nb;
        }
    }
    int bad = ferror(f);
    fclose(f);
    if (!buf || bad) {
        free(buf);
        fprintf(stderr, "tillsync: cannot read %s\n", path);
        return 1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* ---------------------------------------------------------------- sql */

/* Text output: one line per row, columns separated by '|', NULL as nothing, like the sqlite3
 * shell's default list mode. */
static int print_row(void *ctx, int n, const char *const *names, const char *const *vals)
{
    for (int i = 0; i < n; i++) {
        if (i) fputc('|', stdout);
        if (vals[i]) fputs(vals[i], stdout);
    }
    fputc('\n', stdout);
    return 0;
}

static json_t *hex_json(const uint8_t *p, size_t n)
{
    char *h = malloc(2 * n + 1);
    if (!h) return NULL;
    sodium_bin2hex(h, 2 * n + 1, p, n);
    json_t *j = json_stringn(h, 2 * n);
    free(h);
    return j;
}

/* A column value with its SQL type kept: integer and real as numbers, NULL as null, text as a
 * string, blob as a hex string. Text that is not UTF-8 cannot be a JSON string: it goes as hex
 * too. A real that JSON cannot hold (±Inf) goes as SQLite's text for it. */
static json_t *value_json(sqlite3_stmt *st, int i)
{
    switch (sqlite3_column_type(st, i)) {
    case SQLITE_INTEGER:
        return json_integer((json_int_t)sqlite3_column_int64(st, i));
    case SQLITE_FLOAT: {
        json_t *j = json_real(sqlite3_column_double(st, i));
        return j ? j : json_string((const char *)sqlite3_column_text(st, i));
    }
    case SQLITE_TEXT: {
        const char *t = (const char *)sqlite3_column_text(st, i);
        size_t n = (size_t)sqlite3_column_bytes(st, i);
        json_t *j = json_stringn(t ? t : "", n);
        return j ? j : hex_json((const uint8_t *)t, n);
    }
    case SQLITE_BLOB:
        return hex_json(sqlite3_column_blob(st, i), (size_t)sqlite3_column_bytes(st, i));
    default:
        return json_null();
    }
}

/* --json: the rows of every statement, as one array of objects. This runs through SQLite
 * directly (the library's row callback gives text only) and seals afterwards, as
 * tsync_store_exec would. */
static int sql_json(tsync_store *s, const char *sql)
{
    sqlite3 *db = tsync_store_sqlite(s);
    json_t *rows = json_array();
    const char *tail = sql;
    int rc = rows ? SQLITE_OK : SQLITE_NOMEM;
    while (rc == SQLITE_OK && tail && *tail) {
        sqlite3_stmt *st = NULL;
        rc = sqlite3_prepare_v2(db, tail, -1, &st, &tail);
        if (rc != SQLITE_OK || !st) break; /* !st: only whitespace or a comment was left */
        int n = sqlite3_column_count(st);
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
            json_t *o = json_object();
            for (int i = 0; o && i < n; i++) {
                json_t *v = value_json(st, i);
                if (!v || json_object_set_new(o, sqlite3_column_name(st, i), v) != 0) {
                    json_decref(o);
                    o = NULL;
                }
            }
            if (!o || json_array_append_new(rows, o) != 0) {
                rc = SQLITE_NOMEM;
                break;
            }
        }
        if (rc == SQLITE_DONE) rc = SQLITE_OK;
        sqlite3_finalize(st);
    }
    if (rc != SQLITE_OK) {
        fprintf(stderr, "tillsync: sql: SQL error: %s\n",
                rc == SQLITE_NOMEM ? "out of memory" : sqlite3_errmsg(db));
        json_decref(rows);
        return 1;
    }
    /* Inside a transaction the SQL left open, sealing waits for its commit (and closing the
     * connection rolls it back), as with tsync_store_exec. */
    if (sqlite3_get_autocommit(db) && tsync_store_seal(s, NULL) != 0) {
        json_decref(rows);
        return cli_fail("seal");
    }
    char *out = json_dumps(rows, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_ENCODE_ANY);
    json_decref(rows);
    if (!out) {
        fprintf(stderr, "tillsync: sql: out of memory\n");
        return 1;
    }
    puts(out);
    free(out);
    return 0;
}

static int cmd_sql(int argc, char **argv)
{
    const char *pos[2];
    int npos, json = 0;
    int rc = cli_parse("sql", argc, argv, CLI_JSON_OPTS, NULL, &json, NULL, NULL, pos, 2, &npos);
    if (rc) return rc;
    if (npos < 2) return cli_usage("sql", "sql needs DB and SQL");
    tsync_store *s;
    if (open_db(pos[0], 0, &s)) return 1;
    int ret;
    if (json)
        ret = sql_json(s, pos[1]);
    else
        ret = tsync_store_exec(s, pos[1], print_row, NULL) ? cli_fail("sql") : 0;
    tsync_store_free(s);
    return ret;
}

/* replicate's --counter COLUMN and --max/--min/--review COLUMN, repeatable. */
typedef struct {
    const char **ctr;
    size_t n;
    tsync_column_policy *pol;
    size_t npol;
} counters;

static int on_counter(void *ctx, int c, const char *v)
{
    counters *k = ctx;
    if (c == 'c')
        k->ctr[k->n++] = v;
    else
        k->pol[k->npol++] = (tsync_column_policy){v, c == 'M'   ? TSYNC_POLICY_MAX
                                                     : c == 'm' ? TSYNC_POLICY_MIN
                                                                : TSYNC_POLICY_REVIEW};
    return 0;
}

static int cmd_replicate(int argc, char **argv)
{
    static const struct option opts[] = {{"counter", required_argument, NULL, 'c'},
                                         {"max", required_argument, NULL, 'M'},
                                         {"min", required_argument, NULL, 'm'},
                                         {"review", required_argument, NULL, 'r'},
                                         {NULL, 0, NULL, 0}};
    counters k = {calloc((size_t)argc, sizeof(const char *)), 0,
                  calloc((size_t)argc, sizeof(tsync_column_policy)), 0};
    const char **ctr = k.ctr;
    const char *pos[2];
    int npos;
    if (!ctr || !k.pol) {
        free(ctr), free(k.pol);
        return 1;
    }
    int rc = cli_parse("replicate", argc, argv, opts, NULL, NULL, on_counter, &k, pos, 2, &npos);
    if (rc || npos < 2) {
        free(ctr), free(k.pol);
        return rc ? rc : cli_usage("replicate", "replicate needs DB and TABLE");
    }
    const char *table = pos[1];
    size_t n = k.n;
    tsync_store *s;
    if (open_db(pos[0], 0, &s)) {
        free(ctr), free(k.pol);
        return 1;
    }
    int ret = 0;
    tsync_replicate_options o = TSYNC_REPLICATE_OPTIONS_INIT;
    o.counters = ctr;
    o.ncounters = n;
    o.policies = k.pol;
    o.npolicies = k.npol;
    if (tsync_store_replicate_ext(s, table, &o) != 0)
        ret = cli_fail("replicate");
    else
        printf("table %s is replicated%s%s\n", table, n ? " (with counters)" : "",
               k.npol ? " (with column policies)" : "");
    free(ctr), free(k.pol);
    tsync_store_free(s);
    return ret;
}

static int cmd_state(int argc, char **argv)
{
    const char *pos[1];
    int npos, json = 0;
    int rc = cli_parse("state", argc, argv, CLI_JSON_OPTS, NULL, &json, NULL, NULL, pos, 1, &npos);
    if (rc) return rc;
    if (npos < 1) return cli_usage("state", "state needs DB");
    tsync_store *s;
    /* Read-write when it can: a copied database shows the site id it gets (a new incarnation). */
    if (cli_open(pos[0], CLI_RW_OR_RO, &s)) return 1;
    char *js = NULL;
    int ret = 0;
    if (tsync_store_state_json(&js, s) != 0) {
        ret = cli_fail("state");
    } else if (json) {
        puts(js);
    } else {
        json_t *o = json_loads(js, 0, NULL);
        printf("site:        %s\n", json_string_value(json_object_get(o, "site")));
        printf("incarnation: %s\n", json_string_value(json_object_get(o, "incarnation")));
        printf("public key:  %s\n", json_string_value(json_object_get(o, "public_key")));
        printf("clock:       %lld\n", (long long)json_integer_value(json_object_get(o, "hlc")));
        printf("vector:\n");
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(o, "vector"), i, e)
        {
            printf("  %s  seq %lld  head %.16s…%s\n", json_string_value(json_object_get(e, "site")),
                   (long long)json_integer_value(json_object_get(e, "seq")),
                   json_string_value(json_object_get(e, "hash")) ?: "",
                   json_object_get(e, "frozen_at") ? "  FROZEN after a fork" : "");
        }
        json_decref(o);
    }
    free(js);
    tsync_store_free(s);
    return ret;
}

static int cmd_bundle(int argc, char **argv)
{
    static const struct option opts[] = {{"since", required_argument, NULL, 's'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[2], *since_file = NULL;
    int npos;
    int rc =
        cli_parse("bundle", argc, argv, opts, NULL, NULL, cli_on_value, &since_file, pos, 2, &npos);
    if (rc) return rc;
    if (npos < 2) return cli_usage("bundle", "bundle needs DB and FILE");
    char *since = NULL;
    if (since_file) {
        uint8_t *b;
        size_t n;
        if (read_file(since_file, &b, &n)) return 1;
        since = realloc(b, n + 1);
        if (!since) return 1;
        since[n] = 0;
    }
    const char *out = pos[1];
    tsync_store *s;
    if (cli_open(pos[0], CLI_RW_OR_RO, &s)) {
        free(since);
        return 1;
    }
    size_t nb;
    int ret = 0;
    struct stat st;
    /* Streamed into the file as the log is read: a bundle of any size takes a few MiB. */
    if (tsync_store_bundle_file(s, out, since, &nb) != 0) {
        ret = cli_fail("bundle");
    } else if (stat(out, &st) != 0) {
        fprintf(stderr, "tillsync: bundle: cannot stat %s: %s\n", out, strerror(errno));
        ret = 1;
    } else {
        printf("wrote %zu batches, %lld bytes to %s\n", nb, (long long)st.st_size, out);
    }
    free(since);
    tsync_store_free(s);
    return ret;
}

static int cmd_merge(int argc, char **argv)
{
    const char *pos[2];
    int npos, json = 0;
    int prc = cli_parse("merge", argc, argv, CLI_JSON_OPTS, NULL, &json, NULL, NULL, pos, 2, &npos);
    if (prc) return prc;
    if (npos < 2) return cli_usage("merge", "merge needs DB and FILE");
    tsync_store *s;
    if (open_db(pos[0], 0, &s)) return 1;
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge_file(s, pos[1], &r);
    int ret = 0;
    if (rc != 0 && r.merged == 0 && r.duplicates == 0 && r.held == 0 && r.refused <= 1 &&
        rc != TSYNC_EFORK) {
        ret = cli_fail("merge");
    } else if (json) {
        /* The counts and messages; a refusal still exits 1 (and says why on stderr). */
        json_t *o = json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "merged", (json_int_t)r.merged,
                              "duplicates", (json_int_t)r.duplicates, "held", (json_int_t)r.held,
                              "parked", (json_int_t)r.parked, "refused", (json_int_t)r.refused,
                              "conflicts", (json_int_t)r.conflicts);
        json_t *m = json_array();
        for (size_t i = 0; i < r.nmessages; i++)
            json_array_append_new(m, json_string(r.messages[i]));
        json_object_set_new(o, "messages", m);
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        json_decref(o);
        puts(txt ? txt : "{}");
        free(txt);
        if (rc != 0) ret = cli_fail("merge");
    } else {
        printf("merged %zu, duplicates %zu, held %zu, parked %zu, refused %zu, conflicts %zu\n",
               r.merged, r.duplicates, r.held, r.parked, r.refused, r.conflicts);
        for (size_t i = 0; i < r.nmessages; i++) printf("  %s\n", r.messages[i]);
        if (rc != 0) ret = cli_fail("merge");
    }
    tsync_merge_report_clear(&r);
    tsync_store_free(s);
    return ret;
}

static int cmd_hash(int argc, char **argv)
{
    static const struct option none[] = {{NULL, 0, NULL, 0}};
    const char *pos[2];
    int npos;
    int rc = cli_parse("hash", argc, argv, none, NULL, NULL, NULL, NULL, pos, 2, &npos);
    if (rc) return rc;
    if (npos < 1) return cli_usage("hash", "hash needs DB");
    const char *table = npos > 1 ? pos[1] : NULL;
    tsync_store *s;
    if (cli_open(pos[0], CLI_RO, &s)) return 1;
    uint8_t h[TSYNC_HASH_BYTES];
    int ret = 0;
    if (tsync_store_hash(h, s, table) != 0) {
        ret = cli_fail("hash");
    } else {
        char hex[2 * TSYNC_HASH_BYTES + 1];
        printf("%s\n", sodium_bin2hex(hex, sizeof hex, h, sizeof h));
    }
    tsync_store_free(s);
    return ret;
}

int main(int argc, char **argv)
{
    svc_journal_detect();
    if (argc < 2) return usage_error("no command given");
    const char *c = argv[1];
    if (!strcmp(c, "--help") || !strcmp(c, "-h")) return cmd_help(2, argv);
    if (!strcmp(c, "help")) return cmd_help(argc, argv);
    if (wants_help(argc, argv)) {
        if (cli_help_command(c) == 0) return 0;
        fprintf(stderr, "tillsync: unknown command '%s' (see 'tillsync --help')\n", c);
        return 2;
    }
    if (!strcmp(c, "--version")) {
        printf("tillsync %s\n", tsync_version());
        return 0;
    }
    if (!strcmp(c, "init")) return cmd_init(argc, argv);
    if (!strcmp(c, "sql")) return cmd_sql(argc, argv);
    if (!strcmp(c, "replicate")) return cmd_replicate(argc, argv);
    if (!strcmp(c, "state")) return cmd_state(argc, argv);
    if (!strcmp(c, "bundle")) return cmd_bundle(argc, argv);
    if (!strcmp(c, "merge")) return cmd_merge(argc, argv);
    if (!strcmp(c, "hash")) return cmd_hash(argc, argv);
    if (!strcmp(c, "conflicts")) return cmd_conflicts(argc, argv);
    if (!strcmp(c, "demo")) {
        /* --offline (anywhere before a "--"): the earlier demo, offline tills converging by
         * bundles; moved first, where cmd_demo expects it. */
        for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++) {
            if (strcmp(argv[i], "--offline") != 0) continue;
            memmove(argv + 3, argv + 2, (size_t)(i - 2) * sizeof *argv);
            argv[2] = "--offline";
            return cmd_demo(argc - 1, argv + 1);
        }
        return cmd_demo_live(argc, argv);
    }
    if (!strcmp(c, "shop")) return cmd_shop(argc, argv);
    if (!strcmp(c, "enrol-request")) return cmd_enrol_request(argc, argv);
    if (!strcmp(c, "enrol")) return cmd_enrol(argc, argv);
    if (!strcmp(c, "revoke")) return cmd_revoke(argc, argv);
    if (!strcmp(c, "trust")) return cmd_trust(argc, argv);
    if (!strcmp(c, "run")) return cmd_run(argc, argv);
    if (!strcmp(c, "status")) return cmd_status(argc, argv);
    if (!strcmp(c, "prune")) return cmd_prune(argc, argv);
    if (!strcmp(c, "schema")) return cmd_schema(argc, argv);
    if (!strcmp(c, "parked")) return cmd_parked(argc, argv);
    if (!strcmp(c, "migrate")) return cmd_migrate(argc, argv);
    if (!strcmp(c, "export")) return cmd_export(argc, argv);
    if (!strcmp(c, "import")) return cmd_import(argc, argv);
    if (!strcmp(c, "backup")) return cmd_backup(argc, argv);
    if (!strcmp(c, "backup-check")) return cmd_backup_check(argc, argv);
    if (!strcmp(c, "restore")) return cmd_restore(argc, argv);
    if (!strcmp(c, "relay")) return cmd_relay(argc, argv);
    fprintf(stderr, "tillsync: unknown command '%s' (see 'tillsync --help')\n", c);
    return 2;
}
