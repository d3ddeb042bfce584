/* tools/cmd_schema.h — the commands of tillsync about table definitions and parked changes
 * (tools/cmd_schema.c), and the part of `tillsync status` that shows them. They take argv as
 * main gets it (argv[1] is the command name) and return the exit status: 0, 1 for a failure, 2
 * for a usage error. */
#ifndef TSYNC_TOOLS_CMD_SCHEMA_H
#define TSYNC_TOOLS_CMD_SCHEMA_H

#include <jansson.h>

#include "tillsync/tillsync.h"

/* tillsync schema DB [--json] */
int cmd_schema(int argc, char **argv);
/* tillsync parked DB [--json] [--limit N] */
int cmd_parked(int argc, char **argv);

/* Adds "state" ("ok" or "attention"), "schema_mismatches" and "parked_changes" (the first few,
 * with their reasons) to a status object. 0 or a tsync error. */
int cli_schema_status(tsync_store *s, json_t *out);
/* Prints what cli_schema_status added, as status text. */
void cli_schema_status_print(json_t *out);

#endif
