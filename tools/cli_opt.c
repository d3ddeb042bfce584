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
    fprintf(stderr, "tillsync: %s (see 'tillsync %s --help')\n", msg, cmd ? cmd : "");
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
