/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_vault.c — cloud backup from the command line (tillsync/vault.h, docs/BACKUP.md
 * "Cloud backup"): `backup DB --remote`, `backup list DB --remote [--json]`, `backup delete DB
 * --remote ID` and `restore DB --remote ID|latest`. The work is the library's; this file parses
 * the arguments and says in a few lines what happened. tools/cmd_backup.c hands these forms over.
 */
#include <jansson.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_vault.h"

typedef struct {
    int remote;
    long max_chunks;
    long timeout_ms;
} vault_args;

static const struct option OPTS[] = {{"remote", no_argument, NULL, 'r'},
                                     {"max-chunks", required_argument, NULL, 'm'},
                                     {"timeout-ms", required_argument, NULL, 't'},
                                     {"json", no_argument, NULL, 'j'},
                                     {NULL, 0, NULL, 0}};

static int on_opt(void *ctx, int c, const char *v)
{
    vault_args *a = ctx;
    char *end;
    if (c == 'r') a->remote = 1;
    if (c == 'm' || c == 't') {
        long n = strtol(v, &end, 10);
        if (*end || n < 1 || n > 1000000000)
            return cli_usage("backup", c == 'm' ? "--max-chunks takes a number of chunks >= 1"
                                                : "--timeout-ms takes milliseconds >= 1");
        if (c == 'm') a->max_chunks = n;
        if (c == 't') a->timeout_ms = n;
    }
    return 0;
}

/* Parses cmd's options (argv: main's, from the command name on); 0 or the exit status. */
static int parse(const char *cmd, int argc, char **argv, int *json, vault_args *a, const char **pos,
                 int maxpos, int *npos)
{
    memset(a, 0, sizeof *a);
    int rc = cli_parse(cmd, argc, argv, OPTS, NULL, json, on_opt, a, pos, maxpos, npos);
    if (rc) return rc;
    if (!a->remote) {
        char m[200];
        snprintf(m, sizeof m, "%s: --remote is needed (the relay's vault)", cmd);
        return cli_usage(cmd, m);
    }
    return 0;
}

static void opts_of(const vault_args *a, tsync_vault_options *o)
{
    *o = (tsync_vault_options)TSYNC_VAULT_OPTIONS_INIT;
    o->max_chunks = (uint32_t)a->max_chunks;
    o->timeout_ms = (int32_t)a->timeout_ms;
}

static void utc(char out[32], uint64_t ms)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 32, "%Y-%m-%d %H:%M:%S", &tm);
}

int cmd_vault_backup(int argc, char **argv)
{
    const char *pos[1] = {NULL};
    vault_args a;
    int npos;
    int rc = parse("backup", argc, argv, NULL, &a, pos, 1, &npos);
    if (rc) return rc;
    if (npos < 1) return cli_usage("backup", "backup --remote needs DB");
    tsync_vault_options o;
    opts_of(&a, &o);
    tsync_vault_report r = TSYNC_VAULT_REPORT_INIT;
    if (tsync_vault_backup(pos[0], &o, &r) != 0) return cli_fail("backup --remote");
    if (r.resumed) printf("resumed the interrupted upload of cloud backup %s\n", r.backup.id);
    if (!r.complete) {
        printf("cloud backup %s: sent %u chunks, %u of %u at the relay %s; the upload is pending:"
               " run again to finish it\n",
               r.backup.id, r.chunks_sent, r.chunks_sent + r.chunks_held, r.backup.chunks, r.relay);
        return 0;
    }
    printf("cloud backup %s of %s stored at %s: %llu bytes in %u chunks (%u sent, %u already"
           " there), verified by the relay\n",
           r.backup.id, pos[0], r.relay, (unsigned long long)r.backup.size, r.backup.chunks,
           r.chunks_sent, r.chunks_held);
    if (r.resumed) printf("this finished an earlier upload; run again for a new backup\n");
    return 0;
}

int cmd_vault_list(int argc, char **argv)
{
    const char *pos[1] = {NULL};
    vault_args a;
    int npos, json = 0;
    int rc = parse("backup list", argc - 1, argv + 1, &json, &a, pos, 1, &npos);
    if (rc) return rc;
    if (npos < 1) return cli_usage("backup", "backup list needs DB");
    tsync_vault_options o;
    opts_of(&a, &o);
    tsync_vault_entry *v = NULL;
    size_t n = 0;
    if (tsync_vault_list(pos[0], &o, &v, &n) != 0) return cli_fail("backup list --remote");
    json_t *arr = json ? json_array() : NULL;
    if (!json && n == 0) printf("no cloud backups of this shop yet\n");
    if (!json && n > 0)
        printf("%-32s  %-19s  %12s  %6s  %5s  %s\n", "ID", "CREATED (UTC)", "BYTES", "CHUNKS",
               "EPOCH", "FROM SITE");
    for (size_t i = 0; i < n; i++) {
        char when[32], origin[33], hash[65];
        utc(when, v[i].created_ms);
        sodium_bin2hex(origin, sizeof origin, v[i].origin, sizeof v[i].origin);
        sodium_bin2hex(hash, sizeof hash, v[i].hash, sizeof v[i].hash);
        if (json)
            json_array_append_new(
                arr, json_pack("{s:s,s:I,s:s,s:I,s:i,s:i,s:s,s:s}", "id", v[i].id, "created_ms",
                               (json_int_t)v[i].created_ms, "created_at", when, "size",
                               (json_int_t)v[i].size, "chunks", (int)v[i].chunks, "epoch",
                               (int)v[i].epoch, "origin", origin, "blake2b_256", hash));
        else
            printf("%-32s  %-19s  %12llu  %6u  %5u  %s\n", v[i].id, when,
                   (unsigned long long)v[i].size, v[i].chunks, v[i].epoch, origin);
    }
    if (json) {
        json_t *top = json_pack("{s:o}", "backups", arr);
        char *txt = json_dumps(top, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(txt ? txt : "{}");
        free(txt);
        json_decref(top);
    }
    free(v);
    return 0;
}

int cmd_vault_delete(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    vault_args a;
    int npos;
    int rc = parse("backup delete", argc - 1, argv + 1, NULL, &a, pos, 2, &npos);
    if (rc) return rc;
    if (npos < 2) return cli_usage("backup", "backup delete needs DB and a backup ID");
    tsync_vault_options o;
    opts_of(&a, &o);
    if (tsync_vault_delete(pos[0], pos[1], &o) != 0) return cli_fail("backup delete --remote");
    printf("cloud backup %s deleted\n", pos[1]);
    return 0;
}

int cmd_vault_restore(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL};
    vault_args a;
    int npos;
    int rc = parse("restore", argc, argv, NULL, &a, pos, 2, &npos);
    if (rc) return rc;
    if (npos < 2)
        return cli_usage("restore", "restore --remote needs DB and a backup ID or latest");
    tsync_vault_options o;
    opts_of(&a, &o);
    tsync_restore_report r = TSYNC_RESTORE_REPORT_INIT;
    if (tsync_vault_restore(pos[0], pos[1], &o, &r) != 0) return cli_fail("restore --remote");
    char site[33], old[33];
    sodium_bin2hex(site, sizeof site, r.site_id, sizeof r.site_id);
    sodium_bin2hex(old, sizeof old, r.backup_site_id, sizeof r.backup_site_id);
    json_t *m = json_loads(r.manifest_json, 0, NULL);
    printf("restored %s from cloud backup %s (backup of site %s, made %s)\n", pos[0], pos[1], old,
           json_string_value(json_object_get(m, "created_at")));
    json_decref(m);
    printf("new site id %s (incarnation renewed: no sequence number is ever reused)\n", site);
    printf("sales made after the backup come back from the other tills: let the node sync\n");
    tsync_restore_report_clear(&r);
    return 0;
}

int cmd_vault_wanted(int argc, char **argv)
{
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
        if (!strcmp(argv[i], "--remote")) return 1;
    return 0;
}
