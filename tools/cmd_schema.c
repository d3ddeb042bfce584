/*
 * tools/cmd_schema.c — `tillsync schema` (this till's definitions of its replicated tables and
 * their digest), `tillsync parked` (the changes from other tills this one could not apply, with
 * their reasons) and the part of `tillsync status` that says when another till's definitions
 * differ. All through the public API (tillsync/schema.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/cli.h"
#include "tools/cmd_schema.h"

/* Status lists this many parked changes; `tillsync parked` lists them all. */
#define STATUS_PARKED_MAX 10

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
    const char *db = NULL;
    int as_json = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json"))
            as_json = 1;
        else if (argv[i][0] == '-' || db)
            return usage("schema takes DB and --json");
        else
            db = argv[i];
    }
    if (!db) return usage("schema needs DB");
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
        }
        printf(")\n");
    }
    json_decref(o);
    return 0;
}

static json_t *parked_json(const tsync_parked_change *c)
{
    json_t *e = json_object();
    json_object_set_new(e, "id", json_integer(c->id));
    json_object_set_new(e, "origin", json_string(c->origin_hex));
    json_object_set_new(e, "till", json_string(c->till));
    json_object_set_new(e, "seq", json_integer((json_int_t)c->seq));
    json_object_set_new(e, "row", json_integer(c->row));
    json_object_set_new(e, "table", json_string(c->table));
    json_object_set_new(e, "column", c->column ? json_string(c->column) : json_null());
    json_object_set_new(e, "reason", json_string(c->reason));
    return e;
}

static int parked_add(void *ctx, const tsync_parked_change *c)
{
    json_array_append_new(ctx, parked_json(c));
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
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) {
            as_json = 1;
        } else if (!strcmp(argv[i], "--limit")) {
            char *end;
            if (i + 1 >= argc) return usage("parked: --limit needs a value");
            limit = strtol(argv[++i], &end, 10);
            if (*end || limit < 1) return usage("parked: --limit takes a number of at least 1");
        } else if (argv[i][0] == '-' || db) {
            return usage("parked takes DB, --json and --limit N");
        } else {
            db = argv[i];
        }
    }
    if (!db) return usage("parked needs DB");
    tsync_store *s;
    if (open_db(db, &s) != 0) return cli_fail("parked");
    json_t *list = json_array();
    size_t total = 0;
    int rc = tsync_store_parked_foreach(s, (size_t)limit, &total, parked_add, list);
    tsync_store_free(s);
    if (rc != 0) {
        json_decref(list);
        return cli_fail("parked");
    }
    if (as_json) {
        json_t *o = json_object();
        json_object_set_new(o, "total", json_integer((json_int_t)total));
        json_object_set_new(o, "parked", list);
        char *txt = json_dumps(o, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        puts(txt ? txt : "{}");
        free(txt);
        json_decref(o);
        return 0;
    }
    printf("%zu parked change%s%s\n", total, total == 1 ? "" : "s",
           total ? " (applied once this till's definitions fit; see docs/MIGRATIONS.md)" : "");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) parked_print(e, "  ");
    if (json_array_size(list) < total)
        printf("  ... and %zu more (--limit)\n", total - json_array_size(list));
    json_decref(list);
    return 0;
}

static int mismatch_add(void *ctx, const tsync_schema_mismatch *m)
{
    json_t *e = json_object();
    json_object_set_new(e, "table", json_string(m->table));
    json_object_set_new(e, "column", m->column ? json_string(m->column) : json_null());
    json_object_set_new(e, "site", json_string(m->site_hex));
    json_object_set_new(e, "till", json_string(m->till));
    json_object_set_new(e, "what", json_string(m->what));
    json_object_set_new(e, "seen_ms", json_integer((json_int_t)m->seen_ms));
    json_array_append_new(ctx, e);
    return 0;
}

int cli_schema_status(tsync_store *s, json_t *out)
{
    json_t *mm = json_array(), *pk = json_array();
    size_t total = 0;
    int rc = tsync_store_schema_mismatches(s, mismatch_add, mm);
    if (rc == 0) rc = tsync_store_parked_foreach(s, STATUS_PARKED_MAX, &total, parked_add, pk);
    char *merr = NULL;
    if (rc == 0) rc = tsync_store_signed_migration_error(&merr, s);
    json_object_set_new(out, "state",
                        json_string(json_array_size(mm) || merr ? "attention" : "ok"));
    json_object_set_new(out, "schema_mismatches", mm);
    json_object_set_new(out, "signed_migration_error", merr ? json_string(merr) : json_null());
    json_object_set_new(out, "parked_changes", pk);
    free(merr);
    return rc;
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
