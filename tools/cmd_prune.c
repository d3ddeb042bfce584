/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cmd_prune.c — the log policy on the command line: `tillsync prune DB [bounds]` records
 * the database's policy and prunes to it now (a shop synced only by bundles has no node to do it),
 * and the same bounds for `tillsync run`, which prunes every period. docs/NODE.md, "Pruning and
 * snapshots".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cmd_prune.h"

/* "none" is no bound (-1); otherwise a number > 0 times unit. */
static int bound(const char *cmd, const char *opt, const char *v, double unit, int64_t *out)
{
    if (!strcmp(v, "none")) {
        *out = -1;
        return 0;
    }
    char *end;
    double d = strtod(v, &end);
    if (*end || end == v || !(d > 0) || d * unit > 9.0e18) {
        fprintf(stderr, "tillsync: %s: %s needs a number > 0 or 'none', not '%s'\n", cmd, opt, v);
        return -1;
    }
    *out = (int64_t)(d * unit);
    if (*out < 1) *out = 1;
    return 0;
}

int cli_log_policy_arg(const char *cmd, int argc, char **argv, int *i, tsync_log_policy *p)
{
    static const struct {
        const char *opt;
        double unit;
        int field;
    } opts[] = {{"--log-max-batches", 1, 0},
                {"--log-max-mb", 1024.0 * 1024, 1},
                {"--log-max-days", 86400.0 * 1000, 2}};
    for (size_t k = 0; k < sizeof opts / sizeof opts[0]; k++) {
        if (strcmp(argv[*i], opts[k].opt)) continue;
        if (*i + 1 >= argc) {
            fprintf(stderr, "tillsync: %s: %s needs a value (see 'tillsync --help')\n", cmd,
                    opts[k].opt);
            return -1;
        }
        int64_t *f = opts[k].field == 0   ? &p->max_batches
                     : opts[k].field == 1 ? &p->max_bytes
                                          : &p->max_age_ms;
        return bound(cmd, opts[k].opt, argv[++*i], opts[k].unit, f) ? -1 : 1;
    }
    return 0;
}

int cli_log_policy_record(const char *db, const tsync_log_policy *set)
{
    tsync_store *s;
    if (cli_open(db, CLI_RW, &s)) return 1;
    /* Only the bounds given change; the others keep what the database has. */
    tsync_log_policy p = TSYNC_LOG_POLICY_INIT;
    int rc = tsync_store_log_policy_get(&p, s);
    if (set->max_batches) p.max_batches = set->max_batches;
    if (set->max_bytes) p.max_bytes = set->max_bytes;
    if (set->max_age_ms) p.max_age_ms = set->max_age_ms;
    if (rc == 0) rc = tsync_store_log_policy_set(s, &p);
    if (rc) cli_fail("log policy");
    tsync_store_free(s);
    return rc ? 1 : 0;
}

static void print_bound(int64_t v, double unit, const char *what)
{
    if (v < 0)
        printf(" any %s", what);
    else
        printf(" %.0f %s", (double)v / unit, what);
}

static const struct option POLICY_OPTS[] = {{"log-max-batches", required_argument, NULL, 'b'},
                                            {"log-max-mb", required_argument, NULL, 'm'},
                                            {"log-max-days", required_argument, NULL, 'd'},
                                            {NULL, 0, NULL, 0}};

/* A bound from getopt_long, read as cli_log_policy_arg reads it. */
static int on_policy_opt(void *ctx, int c, const char *v)
{
    char name[32];
    snprintf(name, sizeof name, "--%s",
             c == 'b'   ? POLICY_OPTS[0].name
             : c == 'm' ? POLICY_OPTS[1].name
                        : POLICY_OPTS[2].name);
    char *av[] = {name, (char *)v, NULL};
    int i = 0;
    return cli_log_policy_arg("prune", 2, av, &i, ctx) < 0 ? 2 : 0;
}

int cmd_prune(int argc, char **argv)
{
    tsync_log_policy set = {TSYNC_LOG_POLICY_VERSION, 0, 0, 0};
    const char *pos[1] = {NULL};
    int npos;
    int rc =
        cli_parse("prune", argc, argv, POLICY_OPTS, NULL, NULL, on_policy_opt, &set, pos, 1, &npos);
    if (rc) return rc;
    const char *db = pos[0];
    int given = set.max_batches || set.max_bytes || set.max_age_ms;
    if (!db) {
        fprintf(stderr, "tillsync: prune needs DB (see 'tillsync --help')\n");
        return 2;
    }
    if (given && cli_log_policy_record(db, &set)) return 1;
    tsync_store *s;
    if (cli_open(db, CLI_RW, &s)) return 1;
    int ret = 0;
    size_t n = 0;
    tsync_store_status st = TSYNC_STORE_STATUS_INIT;
    if (tsync_store_prune(s, &n) != 0 || tsync_store_status_get(&st, s) != 0) {
        ret = cli_fail("prune");
    } else {
        printf("pruned %zu log entries; log: %lld batches, %.1f MB; kept at most:", n,
               (long long)st.log_batches, (double)st.log_bytes / (1024.0 * 1024));
        print_bound(st.log_max_batches, 1, "batches,");
        print_bound(st.log_max_bytes, 1024.0 * 1024, "MB,");
        print_bound(st.log_max_age_ms, 86400.0 * 1000, "days");
        printf("\n");
        if (st.log_behind > 0)
            printf("attention: %lld till(s) are behind the log's horizon: they need a snapshot "
                   "from an enrolled till, or a restore of a current backup ('tillsync status "
                   "%s')\n",
                   (long long)st.log_behind, db);
    }
    tsync_store_status_clear(&st);
    tsync_store_free(s);
    return ret;
}
