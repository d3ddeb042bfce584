/*
 * tools/tillsync.c — the tillsync command: one subcommand per job a shop's IT person or a POS
 * developer does by hand. Every error is one line on stderr naming the problem; exit status 1 for
 * a failure, 2 for a usage error.
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
#include "cmd_schema.h"
#include "cmd_trust.h"
#include "hint.h"

static const char *USAGE =
    "usage: tillsync COMMAND [ARGS]\n"
    "\n"
    "Keeps the SQLite databases of a shop's tills in sync.\n"
    "\n"
    "commands:\n"
    "  init DB                          create DB and its device key file DB.key (0600)\n"
    "  sql DB \"SQL; ...\" [--json]       run SQL with replication active; rows print as a|b|c\n"
    "                                   (--json: one array of objects, SQL types kept)\n"
    "  replicate DB TABLE [--counter COLUMN]...\n"
    "                                   make TABLE replicated; COLUMNs are PN-counters\n"
    "  state DB [--json]                site id, incarnation and version vector\n"
    "  bundle DB FILE [--since STATEFILE]\n"
    "                                   write the batches a peer with that state lacks\n"
    "                                   (all batches without --since)\n"
    "  merge DB FILE                    verify and merge a bundle; fails if anything is refused\n"
    "  hash DB [TABLE]                  hash of the visible content of the replicated tables\n"
    "  conflicts DB [--json]            concurrent writes that last-writer-wins resolved\n"
    "  shop create KEYFILE --name NAME  create a shop: its admin key file KEYFILE (0600; keep it\n"
    "                                   off the tills)\n"
    "  shop sign KEYFILE REQ [--days N] [--name DEVICE]\n"
    "                                   verify an enrolment request, print a certificate\n"
    "                                   (valid 365 days unless --days)\n"
    "  shop revoke KEYFILE DEVICEKEY [--cutoff SITE:SEQ]... [--cutoffs-from DB] [--check DB]...\n"
    "              [--dry-run]          print a revocation of DEVICEKEY (hex, or a certificate\n"
    "                                   file); its batches after the cutoffs are refused unless\n"
    "                                   honest tills merged them; --dry-run shows what it cuts\n"
    "  shop rotate KEYFILE NEWKEYFILE   new admin key for the shop; print the rotation record\n"
    "  shop sign-migration KEYFILE NNN_NAME.sql [-o OUT]\n"
    "                                   sign a migration for every till of the shop (OUT:\n"
    "                                   NNN_NAME.tsmig); install it with migrate DB OUT\n"
    "  shop show FILE                   describe a key file, request, certificate or revocation\n"
    "  enrol-request DB [--name NAME]   print this till's enrolment request (name: host name)\n"
    "  enrol DB CERT [FILE]...          install this till's certificate (and other devices'\n"
    "                                   certificates, rotations): DB joins the shop\n"
    "  enrol DB --shop-key KEYFILE [--name NAME] [--days N]\n"
    "                                   request, sign and install in one step (one machine)\n"
    "  revoke DB REVOCATION             install a revocation; it replicates to every till\n"
    "  trust DB [--json]                the shop DB is enrolled in and its devices\n"
    "  export DB TABLE|--query SQL [--format csv|json|ndjson] [-o FILE]\n"
    "                                   write a table or query as CSV (RFC 4180), JSON or NDJSON\n"
    "  import DB TABLE FILE [--format csv|json|ndjson] [--skip-bad]\n"
    "                                   upsert FILE's rows (they replicate); any bad value:\n"
    "                                   nothing imported (--skip-bad: bad rows to FILE.rejects)\n"
    "  backup DB OUT [--encrypt] [--passphrase-file F]\n"
    "                                   online backup into one verified file (encrypted:\n"
    "                                   passphrase from F, $TILLSYNC_PASSPHRASE or the terminal)\n"
    "  backup-check FILE [--passphrase-file F]\n"
    "                                   verify a backup without restoring it; print its manifest\n"
    "  restore DB FILE [--passphrase-file F]\n"
    "                                   replace DB's content with a verified backup (DB not in\n"
    "                                   use); DB gets a new site id, catches up from its peers\n"
    "  run DB [--listen tcp://ADDR:PORT] [--peer tcp://ADDR:PORT[#KEY]]... [-v|-q]\n"
    "                                   run the sync node in the foreground (default listen\n"
    "                                   tcp://0.0.0.0:7400); stops on SIGINT/SIGTERM\n"
    "                                   [--prune-keep N] [--prune-every S] [--no-prune]: every S\n"
    "                                   seconds (10), drop batches all tills hold but the last N\n"
    "                                   per till (10000); a till behind then gets a snapshot\n"
    "                                   [--log-max-batches N] [--log-max-mb N]\n"
    "                                   [--log-max-days D]: record the log policy (as prune\n"
    "                                   does); the node keeps the log within it, whatever\n"
    "                                   tills acknowledged\n"
    "                                   [--backup-every 6h --backup-dir DIR [--keep 10]]: backups\n"
    "                                   on a schedule, the newest N kept\n"
    "                                   [--no-mdns]: no discovery (an enrolled till finds the\n"
    "                                   tills of its shop on the LAN over mDNS by default)\n"
    "  migrate DB DIR|--status [--json] apply DIR's migrations (NNN_name.sql), or list applied\n"
    "  migrate DB FILE.tsmig            install a signed migration: this till runs it, and it\n"
    "                                   replicates to every till of the shop, which run it too\n"
    "  prune DB [--log-max-batches N|none] [--log-max-mb N|none] [--log-max-days D|none]\n"
    "                                   record the log policy given and prune the log to it now\n"
    "                                   (defaults: 1000000 batches, as many MB as the rest of the\n"
    "                                   database and at least 64, 30 days); a till that still\n"
    "                                   lacked what is pruned needs a snapshot (enrolled shops)\n"
    "  status DB [--json]               the node's peers, lag, pending, held, parked, refused\n"
    "                                   and whether another till's table definitions differ\n"
    "  schema DB [--json]               this till's replicated tables as compared with other\n"
    "                                   tills (names, types, key, counters) and their digest\n"
    "  parked DB [--json] [--limit N]   changes from other tills not applied here, and why\n"
    "  demo [--dir DIR]                 three tills as three processes on loopback sell at once;\n"
    "                                   their sales show up on the others live, then converge\n"
    "  demo --offline [--dir DIR] [--seed N] [--keep]\n"
    "                                   three offline tills sell, then converge by bundles\n"
    "  help, --help                     this text\n"
    "  --version                        print the version\n"
    "  (replicate, hash, export and import take -- before a TABLE that starts with '-':\n"
    "   tillsync export DB -- -x)\n";

int cli_fail(const char *what)
{
    const tsync_error *e = tsync_error_last();
    char hint[512];
    const char *h = e->code ? cli_hint(e->code, e->message, hint, sizeof hint) : NULL;
    fprintf(stderr, "tillsync: %s: %s%s%s%s\n", what, e->code ? e->message : "unknown error",
            h ? " (hint: " : "", h ? h : "", h ? ")" : "");
    return 1;
}

int cli_db_json_args(int argc, char **argv, const char *cmd, const char **db, int *as_json,
                     char *err, size_t errlen)
{
    *db = NULL;
    *as_json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            *as_json = 1;
        } else if (argv[i][0] == '-' || *db) {
            snprintf(err, errlen, "%s takes DB and --json", cmd);
            return -1;
        } else {
            *db = argv[i];
        }
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
    const char *pos[2] = {NULL, NULL};
    int npos = 0, json = 0;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (npos < 2)
            pos[npos++] = argv[i];
        else
            return usage_error("sql takes DB, one SQL string and optionally --json");
    }
    if (npos < 2) return usage_error("sql needs DB and SQL");
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

/* Extra arguments of a command that takes only --json: 1 if --json, -1 if anything else. */
static int json_flag(int argc, char **argv, int from)
{
    int json = 0;
    for (int i = from; i < argc; i++) {
        if (strcmp(argv[i], "--json") != 0) return -1;
        json = 1;
    }
    return json;
}

static int cmd_replicate(int argc, char **argv)
{
    if (argc < 4) return usage_error("replicate needs DB and TABLE");
    const char **ctr = calloc((size_t)argc, sizeof *ctr);
    const char *table = NULL;
    size_t n = 0;
    int opts = 1; /* "--" ends the options: a table may be named "-x" */
    for (int i = 3; i < argc; i++) {
        if (opts && strcmp(argv[i], "--") == 0) {
            opts = 0;
        } else if (opts && strcmp(argv[i], "--counter") == 0 && i + 1 < argc) {
            ctr[n++] = argv[++i];
        } else if (!table && (!opts || i == 3 || argv[i][0] != '-')) {
            table = argv[i];
        } else {
            free(ctr);
            return usage_error("replicate: unknown argument");
        }
    }
    if (!table) {
        free(ctr);
        return usage_error("replicate needs DB and TABLE");
    }
    tsync_store *s;
    if (open_db(argv[2], 0, &s)) {
        free(ctr);
        return 1;
    }
    int ret = 0;
    if (tsync_store_replicate(s, table, ctr, n) != 0)
        ret = cli_fail("replicate");
    else
        printf("table %s is replicated%s\n", table, n ? " (with counters)" : "");
    free(ctr);
    tsync_store_free(s);
    return ret;
}

static int cmd_state(int argc, char **argv)
{
    if (argc < 3) return usage_error("state needs DB");
    int json = json_flag(argc, argv, 3);
    if (json < 0) return usage_error("state: unknown argument");
    tsync_store *s;
    /* Read-write when it can: a copied database shows the site id it gets (a new incarnation). */
    if (cli_open(argv[2], CLI_RW_OR_RO, &s)) return 1;
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
    if (argc < 4) return usage_error("bundle needs DB and FILE");
    char *since = NULL;
    for (int i = 4; i < argc; i++) {
        if (strcmp(argv[i], "--since") == 0 && i + 1 < argc) {
            uint8_t *b;
            size_t n;
            if (read_file(argv[++i], &b, &n)) return 1;
            since = realloc(b, n + 1);
            if (!since) return 1;
            since[n] = 0;
        } else {
            return usage_error("bundle: unknown argument");
        }
    }
    tsync_store *s;
    if (cli_open(argv[2], CLI_RW_OR_RO, &s)) {
        free(since);
        return 1;
    }
    size_t nb;
    int ret = 0;
    struct stat st;
    /* Streamed into the file as the log is read: a bundle of any size takes a few MiB. */
    if (tsync_store_bundle_file(s, argv[3], since, &nb) != 0) {
        ret = cli_fail("bundle");
    } else if (stat(argv[3], &st) != 0) {
        fprintf(stderr, "tillsync: bundle: cannot stat %s: %s\n", argv[3], strerror(errno));
        ret = 1;
    } else {
        printf("wrote %zu batches, %lld bytes to %s\n", nb, (long long)st.st_size, argv[3]);
    }
    free(since);
    tsync_store_free(s);
    return ret;
}

static int cmd_merge(int argc, char **argv)
{
    if (argc < 4) return usage_error("merge needs DB and FILE");
    if (argc > 4) return usage_error("merge takes only DB and FILE");
    tsync_store *s;
    if (open_db(argv[2], 0, &s)) return 1;
    tsync_merge_report r = TSYNC_MERGE_REPORT_INIT;
    int rc = tsync_store_merge_file(s, argv[3], &r);
    int ret = 0;
    if (rc != 0 && r.merged == 0 && r.duplicates == 0 && r.held == 0 && r.refused <= 1 &&
        rc != TSYNC_EFORK) {
        ret = cli_fail("merge");
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
    if (argc < 3) return usage_error("hash needs DB");
    int k = argc > 3 && strcmp(argv[3], "--") == 0 ? 4 : 3; /* "--": a table named "-x" */
    if (argc > k + 1) return usage_error("hash takes DB and at most one TABLE");
    const char *table = argc > k ? argv[k] : NULL;
    tsync_store *s;
    if (cli_open(argv[2], CLI_RO, &s)) return 1;
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

static int cmd_conflicts(int argc, char **argv)
{
    if (argc < 3) return usage_error("conflicts needs DB");
    int json = json_flag(argc, argv, 3);
    if (json < 0) return usage_error("conflicts: unknown argument");
    tsync_store *s;
    if (cli_open(argv[2], CLI_RO, &s)) return 1;
    char *js;
    int ret = 0;
    if (tsync_store_conflicts_json(&js, s) != 0) {
        ret = cli_fail("conflicts");
    } else if (json) {
        puts(js);
        free(js);
    } else {
        json_t *a = json_loads(js, 0, NULL);
        free(js);
        size_t i;
        json_t *e;
        if (json_array_size(a) == 0) printf("no conflicts\n");
        json_array_foreach(a, i, e)
        {
            char *key = json_dumps(json_object_get(e, "key"), JSON_COMPACT | JSON_ENCODE_ANY);
            char *w =
                json_dumps(json_object_get(json_object_get(e, "winner"), "value"), JSON_ENCODE_ANY);
            char *l =
                json_dumps(json_object_get(json_object_get(e, "loser"), "value"), JSON_ENCODE_ANY);
            printf("%s %s.%s: kept %s, overwritten %s\n", key ? key : "?",
                   json_string_value(json_object_get(e, "table")),
                   json_string_value(json_object_get(e, "column")), w ? w : "?", l ? l : "?");
            free(key), free(w), free(l);
        }
        json_decref(a);
    }
    tsync_store_free(s);
    return ret;
}

int main(int argc, char **argv)
{
    if (argc < 2) return usage_error("no command given");
    const char *c = argv[1];
    if (!strcmp(c, "help") || !strcmp(c, "--help") || !strcmp(c, "-h")) {
        fputs(USAGE, stdout);
        return 0;
    }
    if (!strcmp(c, "--version")) {
        printf("tillsync %s\n", tsync_version());
        return 0;
    }
    if (!strcmp(c, "init")) {
        if (argc != 3) return usage_error(argc < 3 ? "init needs DB" : "init takes only DB");
        tsync_store *s;
        if (open_db(argv[2], 1, &s)) return 1;
        char hex[2 * TSYNC_SITE_ID_BYTES + 1];
        sodium_bin2hex(hex, sizeof hex, tsync_store_site_id(s), TSYNC_SITE_ID_BYTES);
        printf("database %s ready, site %s, key file %s.key\n", argv[2], hex, argv[2]);
        tsync_store_free(s);
        return 0;
    }
    if (!strcmp(c, "sql")) return cmd_sql(argc, argv);
    if (!strcmp(c, "replicate")) return cmd_replicate(argc, argv);
    if (!strcmp(c, "state")) return cmd_state(argc, argv);
    if (!strcmp(c, "bundle")) return cmd_bundle(argc, argv);
    if (!strcmp(c, "merge")) return cmd_merge(argc, argv);
    if (!strcmp(c, "hash")) return cmd_hash(argc, argv);
    if (!strcmp(c, "conflicts")) return cmd_conflicts(argc, argv);
    if (!strcmp(c, "demo")) {
        /* --offline (first): the earlier demo, offline tills converging by bundles */
        if (argc > 2 && !strcmp(argv[2], "--offline")) return cmd_demo(argc - 1, argv + 1);
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
    fprintf(stderr, "tillsync: unknown command '%s' (see 'tillsync --help')\n", c);
    return 2;
}
