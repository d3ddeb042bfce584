/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_vault.h — cloud backup commands (tools/cmd_vault.c), reached through backup and
 * restore (tools/cmd_backup.c). Each takes argv as main gets it and returns the exit status: 0,
 * 1 for a failure, 2 for a usage error. */
#ifndef TSYNC_TOOLS_CMD_VAULT_H
#define TSYNC_TOOLS_CMD_VAULT_H

/* tillsync backup DB --remote [--max-chunks N] [--timeout-ms MS] */
int cmd_vault_backup(int argc, char **argv);
/* tillsync backup list DB --remote [--json] */
int cmd_vault_list(int argc, char **argv);
/* tillsync backup delete DB --remote ID */
int cmd_vault_delete(int argc, char **argv);
/* tillsync restore DB --remote ID|latest */
int cmd_vault_restore(int argc, char **argv);

/* Whether argv (main's) holds --remote before any "--". */
int cmd_vault_wanted(int argc, char **argv);

#endif
