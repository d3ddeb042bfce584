/* tools/cli.h — what the files of the tillsync command share. */
#ifndef TSYNC_TOOLS_CLI_H
#define TSYNC_TOOLS_CLI_H
#include "tillsync/tillsync.h"

/* Prints "tillsync: <what>: <last error>" to stderr and returns 1. */
int cli_fail(const char *what);
/* tillsync demo [--dir DIR] [--seed N] */
int cmd_demo(int argc, char **argv);
#endif
