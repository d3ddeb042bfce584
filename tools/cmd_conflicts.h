/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_conflicts.h — the conflict journal on the command line (tools/cmd_conflicts.c). */
#ifndef TSYNC_TOOLS_CMD_CONFLICTS_H
#define TSYNC_TOOLS_CMD_CONFLICTS_H

/* tillsync conflicts DB [--json] [--open] [--since ID] [--limit N]
 * tillsync conflicts DB resolve ID --keep|--take-other|--value V
 * tillsync conflicts DB dismiss ID...|--all
 * 0, 1 (failure), 2 (usage). */
int cmd_conflicts(int argc, char **argv);

#endif
