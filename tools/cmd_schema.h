/* SPDX-License-Identifier: Apache-2.0 */
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

/* Status lists this many parked changes; `tillsync parked` lists them all. */
#define CLI_STATUS_PARKED_MAX 10

/* Prints the "state", "schema_mismatches" and "parked_changes" of a status object (from
 * tsync_store_status_json) as status text. */
void cli_schema_status_print(json_t *out);

#endif
