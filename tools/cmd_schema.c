/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_schema.c — `tillsync schema` (this till's definitions of its replicated tables and
 * their digest), `tillsync parked` (the changes from other tills this one could not apply, with
 * their reasons) and the part of `tillsync status` that says when another till's definitions
 * differ. All through the public API (tillsync/schema.h, tillsync/status.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_schema.h"

static int usage(const char *msg)
{
    fprintf(stderr, "tillsync: %s (see 'tillsync help')\n", msg);
    return 2;
}

static int open_db(const char *db, tsync_store **s)
{
    tsync_store_options so = TSYNC_STORE_OPTIONS_INIT;
    return tsync_store_open(s, db, &so);
}

int cmd_schema(int argc, char **argv)
{
    const char *db;
    int as_json;
    char err[64];
    if (cli_db_json_args(argc, argv, "schema", &db, &as_json, err, sizeof err)) return usage(err);
    tsync_store *s;
    if (open_db(db, &s) != 0) return cli_fail("schema");
    char *js = NULL;
    if (tsync_store_schema_json(&js, s, NULL) != 0) {
        tsync_store_free(s);
        return cli_fail("schema");
    }
    tsync_store_free(s);
    if (as_json) {
        puts(js);
        free(js);
        return 0;
    }
    json_error_t je;
    json_t *o = json_loads(js, 0, &je);
    free(js);
    printf("digest %s\n", json_string_value(json_object_get(o, "digest")));
    size_t i, k;
    json_t *t, *c;
    json_array_foreach(json_object_get(o, "tables"), i, t)
    {
        printf("%s(", json_string_value(json_object_get(t, "name")));
        json_array_foreach(json_object_get(t, "columns"), k, c)
        {
            const char *type = json_string_value(json_object_get(c, "type"));
            json_int_t key = json_integer_value(json_object_get(c, "key"));
            printf("%s%s%s%s", k ? ", " : "", json_string_value(json_object_get(c, "name")),
                   type && type[0] ? " " : "", type ? type : "");
            if (key) printf(" key %lld", (long long)key);
            if (json_is_true(json_object_get(c, "counter"))) printf(" counter");
            if (json_is_string(json_object_get(c, "policy")))
                printf(" %s", json_string_value(json_object_get(c, "policy")));
        }
        printf(")\n");
    }
    json_decref(o);
    return 0;
}

static void parked_print(json_t *e, const char *indent)
{
    const char *origin = json_string_value(json_object_get(e, "origin"));
    const char *till = json_string_value(json_object_get(e, "till"));
    const char *col = json_string_value(json_object_get(e, "column"));
    printf("%s%s%s%s", indent, json_string_value(json_object_get(e, "table")), col ? "." : "",
           col ? col : " (row)");
    if (origin && origin[0])
        printf(" from %s%s%.16s batch %lld row %lld", till && till[0] ? till : "",
               till && till[0] ? " " : "", origin,
               (long long)json_integer_value(json_object_get(e, "seq")),
               (long long)json_integer_value(json_object_get(e, "row")));
    else
        printf(" (a row this till could not write)");
    printf(": %s\n", json_string_value(json_object_get(e, "reason")));
}

int cmd_parked(int argc, char **argv)
{
    const char *db = NULL;
    int as_json = 0;
    long limit = 0;
    static const struct option opts[] = {{"json", no_argument, NULL, 'j'},
                                         {"limit", required_argument, NULL, 'l'},
                                         {NULL, 0, NULL, 0}};
    const char *pos[2] = {NULL, NULL}, *lim = NULL;
    int npos;
    int prc =
        cli_parse("parked", argc, argv, opts, NULL, &as_json, cli_on_value, &lim, pos, 2, &npos);
    if (prc) return prc;
    if (npos > 1) return usage("parked takes DB, --json and --limit N");
    db = pos[0];
    if (lim) {
        char *end;
        limit = strtol(lim, &end, 10);
        if (*end || end == lim || limit < 1)
            return usage("parked: --limit takes a number of at least 1");
    }
    if (!db) return usage("parked needs DB");
    tsync_store *s;
    if (open_db(db, &s) != 0) return cli_fail("parked");
    char *js = NULL;
    int rc = tsync_store_parked_json(&js, s, (size_t)limit);
    tsync_store_free(s);
    if (rc != 0) return cli_fail("parked");
    if (as_json) {
        puts(js);
        free(js);
        return 0;
    }
    json_t *o = json_loads(js, 0, NULL), *list = json_object_get(o, "parked");
    free(js);
    size_t total = (size_t)json_integer_value(json_object_get(o, "total"));
    printf("%zu parked change%s%s\n", total, total == 1 ? "" : "s",
           total ? " (applied once this till's definitions fit; see docs/MIGRATIONS.md)" : "");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) parked_print(e, "  ");
    if (json_array_size(list) < total)
        printf("  ... and %zu more (--limit)\n", total - json_array_size(list));
    json_decref(o);
    return 0;
}

void cli_schema_status_print(json_t *out)
{
    json_t *mm = json_object_get(out, "schema_mismatches");
    printf("state: %s", json_string_value(json_object_get(out, "state")));
    size_t i;
    json_t *e;
    json_array_foreach(json_object_get(out, "attention"), i, e)
        printf("%s%s", i ? ", " : " (", json_string_value(e));
    printf("%s\n", json_array_size(json_object_get(out, "attention")) ? ")" : "");
    json_array_foreach(mm, i, e)
    {
        const char *till = json_string_value(json_object_get(e, "till"));
        printf("  definition of %s differs on till %s%s%.16s: %s\n",
               json_string_value(json_object_get(e, "table")), till && till[0] ? till : "",
               till && till[0] ? " " : "", json_string_value(json_object_get(e, "site")),
               json_string_value(json_object_get(e, "what")));
    }
    const char *merr = json_string_value(json_object_get(out, "signed_migration_error"));
    if (merr) printf("  signed migrations cannot run here: %s\n", merr);
    if (json_array_size(mm))
        printf("  (one definition must change: a migration on the tills that differ; "
               "docs/MIGRATIONS.md)\n");
    json_t *pk = json_object_get(out, "parked_changes");
    json_array_foreach(pk, i, e) parked_print(e, "  parked: ");
    json_int_t total = json_integer_value(json_object_get(out, "parked"));
    if ((json_int_t)json_array_size(pk) < total)
        printf("  parked: ... %lld in all ('tillsync parked DB')\n", (long long)total);
}
