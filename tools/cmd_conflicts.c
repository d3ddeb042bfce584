/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_conflicts.c — the conflict journal on the command line: `tillsync conflicts DB`
 * lists it (a page at a time with --since and --limit, --open for the open ones), `conflicts DB
 * resolve ID --keep|--take-other|--value V` resolves one, `conflicts DB dismiss ID...|--all`
 * dismisses many. All of it through tillsync/conflicts.h.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cli.h"
#include "cmd_conflicts.h"

typedef struct {
    int open, all, how, nhow;
    const char *since, *limit, *value;
} opts;

static int on_opt(void *ctx, int c, const char *v)
{
    opts *o = ctx;
    switch (c) {
    case 'o':
        o->open = 1;
        break;
    case 'a':
        o->all = 1;
        break;
    case 's':
        o->since = v;
        break;
    case 'l':
        o->limit = v;
        break;
    case 'k':
    case 't':
    case 'v':
        o->how = c == 'k'   ? TSYNC_RESOLVE_KEEP
                 : c == 't' ? TSYNC_RESOLVE_TAKE_OTHER
                            : TSYNC_RESOLVE_VALUE;
        o->nhow++;
        if (c == 'v') o->value = v;
        break;
    default:
        return 2;
    }
    return 0;
}

/* A conflict id or a count: a whole number >= min. */
static int number(const char *what, const char *v, long long min, long long *out)
{
    char *end;
    long long n = strtoll(v, &end, 10);
    if (!*v || *end || n < min) {
        char m[300];
        snprintf(m, sizeof m, "conflicts: %s must be a whole number >= %lld, not '%.200s'", what,
                 min, v);
        return cli_usage("conflicts", m);
    }
    *out = n;
    return 0;
}

static void when(json_t *ms, char *buf, size_t n)
{
    time_t t = (time_t)(json_integer_value(ms) / 1000);
    struct tm tm;
    snprintf(buf, n, "?");
    if (gmtime_r(&t, &tm)) strftime(buf, n, "%Y-%m-%d %H:%M:%SZ", &tm);
}

static void print_entry(json_t *e)
{
    char *key = json_dumps(json_object_get(e, "key"), JSON_COMPACT | JSON_ENCODE_ANY);
    json_t *w = json_object_get(e, "winner"), *l = json_object_get(e, "loser");
    char *wv = json_dumps(json_object_get(w, "value"), JSON_ENCODE_ANY);
    char *lv = json_dumps(json_object_get(l, "value"), JSON_ENCODE_ANY);
    printf("%s %s.%s: kept %s, overwritten %s\n", key ? key : "?",
           json_string_value(json_object_get(e, "table")),
           json_string_value(json_object_get(e, "column")), wv ? wv : "?", lv ? lv : "?");
    char wt[32], lt[32];
    when(json_object_get(w, "time_ms"), wt, sizeof wt);
    when(json_object_get(l, "time_ms"), lt, sizeof lt);
    printf("  #%lld  kept: %s at %s  overwritten: %s at %s\n",
           (long long)json_integer_value(json_object_get(e, "id")),
           json_string_value(json_object_get(w, "till")) ?: "?", wt,
           json_string_value(json_object_get(l, "till")) ?: "?", lt);
    json_t *r = json_object_get(e, "resolved");
    if (json_is_object(r)) {
        char rt[32];
        when(json_object_get(r, "at_ms"), rt, sizeof rt);
        char *rv = json_dumps(json_object_get(r, "value"), JSON_ENCODE_ANY);
        const char *how = json_string_value(json_object_get(r, "how"));
        printf("  resolved: %s", how ? how : "?");
        if (how && (!strcmp(how, "take") || !strcmp(how, "value"))) printf(" %s", rv ? rv : "?");
        printf(" by %s at %s\n", json_string_value(json_object_get(r, "till")) ?: "?", rt);
        free(rv);
    } else {
        printf("  open\n");
    }
    free(key), free(wv), free(lv);
}

static int list(tsync_store *s, const opts *o, int json)
{
    long long since = 0, limit = 0;
    if (o->since && number("--since", o->since, 0, &since)) return 2;
    if (o->limit && number("--limit", o->limit, 1, &limit)) return 2;
    char *js;
    if (tsync_store_conflicts_list_json(&js, s, since, (size_t)limit, o->open) != 0)
        return cli_fail("conflicts");
    if (json) {
        puts(js);
        tsync_free(js);
        return 0;
    }
    json_t *a = json_loads(js, 0, NULL);
    tsync_free(js);
    size_t i;
    json_t *e;
    if (json_array_size(a) == 0) printf(o->open ? "no open conflicts\n" : "no conflicts\n");
    json_array_foreach(a, i, e) print_entry(e);
    /* A full page: where the next starts. */
    if (limit && json_array_size(a) == (size_t)limit)
        printf("more: --since %lld\n", (long long)json_integer_value(json_object_get(
                                           json_array_get(a, json_array_size(a) - 1), "id")));
    json_decref(a);
    return 0;
}

static int resolve(tsync_store *s, const opts *o, const char **pos, int npos)
{
    if (npos != 3) return cli_usage("conflicts", "conflicts resolve needs one ID");
    if (o->nhow != 1)
        return cli_usage("conflicts", "conflicts resolve needs one of --keep, --take-other, "
                                      "--value V");
    long long id = 0;
    if (number("ID", pos[2], 1, &id)) return 2;
    /* Text: the column's affinity makes a number of it where the column holds numbers. */
    tsync_value v = {TSYNC_VALUE_TEXT, 0, 0, o->value, o->value ? strlen(o->value) : 0};
    if (tsync_store_conflict_resolve(s, id, o->how, o->how == TSYNC_RESOLVE_VALUE ? &v : NULL))
        return cli_fail("conflicts resolve");
    printf("conflict %lld resolved (%s)\n", id,
           o->how == TSYNC_RESOLVE_KEEP         ? "keep"
           : o->how == TSYNC_RESOLVE_TAKE_OTHER ? "take"
                                                : "value");
    return 0;
}

static int dismiss(tsync_store *s, const opts *o, const char **pos, int npos)
{
    if (o->all == (npos > 2))
        return cli_usage("conflicts", "conflicts dismiss needs IDs or --all (not both)");
    int64_t *ids = calloc((size_t)npos + 1, sizeof *ids);
    if (!ids) return cli_fail("conflicts dismiss");
    for (int i = 2; i < npos; i++) {
        long long id = 0;
        if (number("ID", pos[i], 1, &id)) {
            free(ids);
            return 2;
        }
        ids[i - 2] = id;
    }
    size_t n = 0;
    int rc = tsync_store_conflicts_dismiss(s, o->all ? NULL : ids, (size_t)(npos - 2), &n);
    free(ids);
    if (rc) return cli_fail("conflicts dismiss");
    printf("%zu conflict%s dismissed\n", n, n == 1 ? "" : "s");
    return 0;
}

int cmd_conflicts(int argc, char **argv)
{
    static const struct option lo[] = {{"json", no_argument, NULL, 'j'},
                                       {"open", no_argument, NULL, 'o'},
                                       {"since", required_argument, NULL, 's'},
                                       {"limit", required_argument, NULL, 'l'},
                                       {"keep", no_argument, NULL, 'k'},
                                       {"take-other", no_argument, NULL, 't'},
                                       {"value", required_argument, NULL, 'v'},
                                       {"all", no_argument, NULL, 'a'},
                                       {NULL, 0, NULL, 0}};
    opts o = {0};
    int npos, json = 0;
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return cli_fail("conflicts");
    int rc = cli_parse("conflicts", argc, argv, lo, NULL, &json, on_opt, &o, pos, argc, &npos);
    if (rc) goto out;
    if (npos < 1) {
        rc = cli_usage("conflicts", "conflicts needs DB");
        goto out;
    }
    const char *verb = npos > 1 ? pos[1] : NULL;
    if (verb && strcmp(verb, "resolve") && strcmp(verb, "dismiss")) {
        char m[300];
        snprintf(m, sizeof m, "conflicts: unknown action '%.200s' (resolve or dismiss)", verb);
        rc = cli_usage("conflicts", m);
        goto out;
    }
    int listing = !verb;
    if ((listing && (o.nhow || o.all)) || (!listing && (o.open || o.since || o.limit || json)) ||
        (verb && !strcmp(verb, "dismiss") && o.nhow) ||
        (verb && !strcmp(verb, "resolve") && o.all)) {
        rc = cli_usage("conflicts", "conflicts: an option that does not go with this form");
        goto out;
    }
    tsync_store *s;
    /* Listing writes nothing (works on a full disk); resolving writes. */
    if (cli_open(pos[0], listing ? CLI_RO : CLI_RW, &s)) {
        rc = 1;
        goto out;
    }
    rc = listing                    ? list(s, &o, json)
         : !strcmp(verb, "resolve") ? resolve(s, &o, pos, npos)
                                    : dismiss(s, &o, pos, npos);
    tsync_store_free(s);
out:
    free(pos);
    return rc;
}
