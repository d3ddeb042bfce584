/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_migrate.c — tillsync migrate: apply a folder of numbered SQL migrations to a
 * database (all pending ones in one transaction), or show which were applied. The work is
 * store/migrate.c's; this file parses the arguments and prints.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "cli.h"
#include "cmd_migrate.h"
#include "cmd_trust.h"

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync --help')\n", msg);
    return 2;
}

static int status(tsync_store *s, int json)
{
    char *js = NULL;
    if (tsync_store_migrations_json(&js, s) != 0) return cli_fail("migrate");
    if (json) {
        puts(js);
        free(js);
        return 0;
    }
    json_t *o = json_loads(js, 0, NULL);
    free(js);
    json_t *a = json_object_get(o, "applied");
    long long v = (long long)json_integer_value(json_object_get(o, "version"));
    if (json_array_size(a) == 0)
        printf("no migrations applied: version 0\n");
    else
        printf("version %lld, %zu migrations applied:\n", v, json_array_size(a));
    size_t i;
    json_t *e;
    json_array_foreach(a, i, e)
    {
        time_t t = (time_t)(json_integer_value(json_object_get(e, "applied_ms")) / 1000);
        char when[32] = "?";
        struct tm tm;
        if (gmtime_r(&t, &tm)) strftime(when, sizeof when, "%Y-%m-%d %H:%M:%SZ", &tm);
        printf("  %s  applied %s  hash %s\n", json_string_value(json_object_get(e, "name")), when,
               json_string_value(json_object_get(e, "hash")));
    }
    json_decref(o);
    return 0;
}

int cmd_migrate(int argc, char **argv)
{
    static const struct option opts[] = {
        {"status", no_argument, NULL, 's'}, {"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};
    const char *pos[3] = {NULL, NULL, NULL};
    int npos, json = 0, st = 0;
    int prc = cli_parse("migrate", argc, argv, opts, NULL, &json, cli_on_flag, &st, pos, 3, &npos);
    if (prc) return prc;
    if (npos > 2) return usage("migrate takes DB and DIR, or DB --status");
    if (!pos[0]) return usage("migrate needs DB and DIR (or DB --status)");
    if (st ? npos != 1 : npos != 2)
        return usage(st ? "migrate --status takes only DB" : "migrate needs DB and DIR");
    if (json && !st) return usage("migrate: --json goes with --status");
    tsync_store *s;
    tsync_store_options o = TSYNC_STORE_OPTIONS_INIT;
    if (tsync_store_open(&s, pos[0], &o) != 0) return cli_fail("open");
    int ret = 0;
    if (st) {
        ret = status(s, json);
        tsync_store_free(s);
        return ret;
    }
    tsync_migrate_report r = TSYNC_MIGRATE_REPORT_INIT;
    int rc;
    struct stat sb;
    if (stat(pos[1], &sb) == 0 && S_ISREG(sb.st_mode)) {
        /* A signed migration (tillsync shop sign-migration): kept and replicated to every till. */
        uint8_t *rec = NULL;
        size_t len = 0;
        if (cli_read_signed_migration(pos[1], &rec, &len)) {
            tsync_store_free(s);
            return 1;
        }
        rc = tsync_store_migrate_signed(s, rec, len, &r);
        free(rec);
        if (rc == 0) printf("installed %s: it replicates to every till of the shop\n", pos[1]);
    } else {
        rc = tsync_store_migrate(s, pos[1], &r);
    }
    for (size_t i = 0; i < r.nnotes; i++) printf("note: %s\n", r.notes[i]);
    if (rc != 0) {
        ret = cli_fail("migrate");
    } else if (r.napplied == 0) {
        printf("up to date at version %lld\n", (long long)r.to_version);
    } else {
        for (size_t i = 0; i < r.napplied; i++)
            printf("applied %s (hash %s)\n", r.applied[i].name, r.applied[i].hash);
        if (r.unparked)
            printf("applied %zu parked change%s from other tills\n", r.unparked,
                   r.unparked == 1 ? "" : "s");
        printf("now at version %lld (was %lld)\n", (long long)r.to_version,
               (long long)r.from_version);
    }
    tsync_migrate_report_clear(&r);
    tsync_store_free(s);
    return ret;
}
