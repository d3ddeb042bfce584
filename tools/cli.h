/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cli.h — what the files of the tillsync command share. */
#ifndef TSYNC_TOOLS_CLI_H
#define TSYNC_TOOLS_CLI_H
#include <getopt.h>

#include "tillsync/tillsync.h"

/* Prints "tillsync: <what>: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);
/* Opens a database for a command. CLI_RO: read-only (nothing is written, so it works on a full
 * disk); CLI_RW_OR_RO: read-write, or read-only when the disk is full (saying so on stdout).
 * 0, or 1 with the error printed as "tillsync: open: ...". */
enum { CLI_RW = 0, CLI_RO = 1, CLI_RW_OR_RO = 2 };
int cli_open(const char *path, int mode, tsync_store **s);
/* Reads the arguments "DB [--json]" of the command cmd (argv[2] on). 0, or -1 with the one-line
 * usage error ("<cmd> takes DB and --json", "<cmd> needs DB") in err for the caller's usage(). */
int cli_db_json_args(int argc, char **argv, const char *cmd, const char **db, int *as_json,
                     char *err, size_t errlen);
/* A command's options through getopt_long (tools/cli_opt.c). argv[0] is the command's name
 * (main's argv + 1, or + 2 for "shop sign"); operands are argv[optind..argc) afterwards, in order.
 * shortopts without the leading ':' (added). */
typedef struct {
    const char *cmd; /* "run", "shop sign": names the command in messages */
    int argc;
    char **argv;
    const char *shortopts;
    const struct option *longopts;
    int started;
    int quiet; /* no message on CLI_OPT_BAD: the caller prints its own */
} cli_opts;
#define CLI_OPT_BAD (-2)
/* The next option's code (optarg holds its value), -1 after the last one, or CLI_OPT_BAD with the
 * usage error printed (the command returns 2). */
int cli_opt_next(cli_opts *o);
/* The options of a command (main's argv, or main's argv + 1 for "shop sign") through
 * getopt_long (shortopts: as getopt's, NULL for none), its operands (at most maxpos) into pos,
 * their count in *npos. An option with code 'j' sets *json when json is not NULL (CLI_JSON_OPTS:
 * --json alone); any other code goes to on_opt(ctx, code, value), which returns 0 or the exit
 * status. 0, or the exit status with the usage error printed; "CMD needs ..." (too few operands) is
 * the caller's to say. */
int cli_parse(const char *cmd, int argc, char **argv, const struct option *opts,
              const char *shortopts, int *json, int (*on_opt)(void *ctx, int c, const char *v),
              void *ctx, const char **pos, int maxpos, int *npos);
extern const struct option CLI_JSON_OPTS[];
/* An on_opt for cli_parse: the option's value into *(const char **)ctx (the last one counts). */
int cli_on_value(void *ctx, int c, const char *v);
/* An on_opt for cli_parse: sets *(int *)ctx to 1 (a flag). */
int cli_on_flag(void *ctx, int c, const char *v);
/* Prints "tillsync: <msg> (see 'tillsync <cmd> --help')" and returns 2. */
int cli_usage(const char *cmd, const char *msg);
/* tools/cli_help.c: the help of cmd ("run", "shop") on stdout; 0, or -1 for no such command. */
int cli_help_command(const char *cmd);
/* The overview of every command (tillsync --help). */
void cli_help_overview(void);
/* tillsync(1) in roff, from the same text. */
void cli_help_man(void);
/* Set when stderr goes to journald: messages carry a "<N>" priority prefix (tools/node_service.c).
 */
extern int cli_journal;

/* Wall-clock time, ms since 1970 (UTC): when something happened. tools/cli_clock.c. */
uint64_t cli_wall_ms(void);
/* Monotonic time in seconds: how long something took. */
double cli_mono_s(void);
/* tillsync demo [--dir DIR] [--seed N] */
int cmd_demo(int argc, char **argv);
/* tillsync demo [--dir DIR] [--stay]: three node processes on loopback (tools/demo_live.c) */
int cmd_demo_live(int argc, char **argv);
#endif
