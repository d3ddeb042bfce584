/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_node.h — the run and status commands of tillsync (tools/cmd_node.c). Each takes argv as
 * main gets it (argv[1] is the command name) and returns the exit status: 0, 1 for a failure, 2
 * for a usage error. docs/NODE.md describes the node. */
#ifndef TSYNC_TOOLS_CMD_NODE_H
#define TSYNC_TOOLS_CMD_NODE_H

/* tillsync run DB [--config FILE] [--listen EP] [--peer EP[#KEY]]... [--key PATH] [-v|-q] ...
 * (tools/cli_help.c lists every option; tools/node_service.c does the service's part) */
int cmd_run(int argc, char **argv);
/* tillsync status DB [--json] [--key PATH]: exit 0 when a node runs, 3 when none does */
int cmd_status(int argc, char **argv);

#endif
