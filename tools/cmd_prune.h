/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_prune.h — the log policy on the command line (tools/cmd_prune.c). */
#ifndef TSYNC_TOOLS_CMD_PRUNE_H
#define TSYNC_TOOLS_CMD_PRUNE_H

#include "tillsync/tillsync.h"

/* tillsync prune DB [--log-max-batches N] [--log-max-mb N] [--log-max-days D]: records the
 * bounds given, prunes to the policy now. 0, 1 (failure), 2 (usage). */
int cmd_prune(int argc, char **argv);

/* Reads argv[*i] when it is one of the bounds above (its value is argv[*i + 1]; "none": no bound)
 * into p, moving *i past it: 1; 0 when argv[*i] is not one; -1 (usage error printed) when its
 * value is bad. cmd names the command in messages. */
int cli_log_policy_arg(const char *cmd, int argc, char **argv, int *i, tsync_log_policy *p);

/* Records the non-zero bounds of set as the database's (the others keep their value): 0, or 1
 * with the error printed. */
int cli_log_policy_record(const char *db, const tsync_log_policy *set);

#endif
