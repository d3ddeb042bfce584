/* tools/cli.h — what the files of the tillsync command share. */
#ifndef TSYNC_TOOLS_CLI_H
#define TSYNC_TOOLS_CLI_H
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
/* Wall-clock time, ms since 1970 (UTC): when something happened. tools/cli_clock.c. */
uint64_t cli_wall_ms(void);
/* Monotonic time in seconds: how long something took. */
double cli_mono_s(void);
/* tillsync demo [--dir DIR] [--seed N] */
int cmd_demo(int argc, char **argv);
/* tillsync demo [--dir DIR]: three node processes on loopback (tools/demo_live.c) */
int cmd_demo_live(int argc, char **argv);
#endif
