/* SPDX-License-Identifier: Apache-2.0 */
/*
 * tools/cli_opt.c — the options of every tillsync command go through getopt_long, so that
 * `--listen=ADDR` and `--listen ADDR` both work, options and operands mix in any order, and `--`
 * ends the options (a table named "-x"). This file only turns getopt's '?' and ':' into the
 * command's one-line usage error; each command keeps its own option table.
 */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

int cli_usage(const char *cmd, const char *msg)
{
    fprintf(stderr, "%stillsync: %s (see 'tillsync %s --help')\n", cli_journal ? "<3>" : "", msg,
            cmd ? cmd : "");
    return 2;
}

int cli_opt_next(cli_opts *o)
{
    if (!o->started) {
        optind = 0; /* GNU getopt: 0 starts over, for the second command parsed in a process */
        opterr = 0; /* the messages below name the command */
        o->started = 1;
    }
    char shortopts[64];
    snprintf(shortopts, sizeof shortopts, ":%s", o->shortopts ? o->shortopts : "");
    int c = getopt_long(o->argc, o->argv, shortopts, o->longopts, NULL);
    if (c != '?' && c != ':') return c;
    if (o->quiet) return CLI_OPT_BAD;
    char m[320];
    const char *what = optind > 0 && optind <= o->argc ? o->argv[optind - 1] : "?";
    if (c == ':')
        snprintf(m, sizeof m, "%s: %.200s needs a value", o->cmd, what);
    else if (optopt && strncmp(what, "--", 2) == 0)
        snprintf(m, sizeof m, "%s: option '%.200s' takes no value", o->cmd, what);
    else if (optopt)
        snprintf(m, sizeof m, "%s: unknown option '-%c'", o->cmd, optopt);
    else
        snprintf(m, sizeof m, "%s: unknown option '%.200s'", o->cmd, what);
    cli_usage(o->cmd, m);
    return CLI_OPT_BAD;
}

const struct option CLI_JSON_OPTS[] = {{"json", no_argument, NULL, 'j'}, {NULL, 0, NULL, 0}};

int cli_on_value(void *ctx, int c, const char *v)
{
    (void)c;
    *(const char **)ctx = v;
    return 0;
}

int cli_on_flag(void *ctx, int c, const char *v)
{
    (void)c, (void)v;
    *(int *)ctx = 1;
    return 0;
}

int cli_parse(const char *cmd, int argc, char **argv, const struct option *opts,
              const char *shortopts, int *json, int (*on_opt)(void *ctx, int c, const char *v),
              void *ctx, const char **pos, int maxpos, int *npos)
{
    cli_opts p = {
        .cmd = cmd, .argc = argc - 1, .argv = argv + 1, .shortopts = shortopts, .longopts = opts};
    int c;
    *npos = 0;
    while ((c = cli_opt_next(&p)) != -1) {
        if (c == CLI_OPT_BAD) return 2;
        if (c == 'j' && json) {
            *json = 1;
        } else {
            int rc = on_opt ? on_opt(ctx, c, optarg) : 2;
            if (rc) return rc;
        }
    }
    for (int i = 1 + optind; i < argc; i++) {
        if (*npos == maxpos) {
            char m[300];
            snprintf(m, sizeof m, "%s: unexpected argument '%.200s'", cmd, argv[i]);
            return cli_usage(cmd, m);
        }
        pos[(*npos)++] = argv[i];
    }
    return 0;
}
