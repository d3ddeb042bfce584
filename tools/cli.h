/* tools/cli.h — what the files of the tillsync command share. */
#ifndef TSYNC_TOOLS_CLI_H
#define TSYNC_TOOLS_CLI_H
#include "tillsync/tillsync.h"

/* Prints "tillsync: <what>: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);
/* tillsync demo [--dir DIR] [--seed N] */
int cmd_demo(int argc, char **argv);
/* tillsync demo [--dir DIR]: three node processes on loopback (tools/demo_live.c) */
int cmd_demo_live(int argc, char **argv);
#endif
