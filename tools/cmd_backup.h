/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_backup.h — the backup, backup-check and restore commands of tillsync
 * (tools/cmd_backup.c). Each takes argv as main gets it (argv[1] is the command name) and returns
 * the exit status: 0, 1 for a failure or a refused file, 2 for a usage error. Format and
 * guarantees: docs/BACKUP.md. */
#ifndef TSYNC_TOOLS_CMD_BACKUP_H
#define TSYNC_TOOLS_CMD_BACKUP_H

/* tillsync backup DB OUT [--encrypt] [--passphrase-file F] */
int cmd_backup(int argc, char **argv);
/* tillsync backup-check FILE [--passphrase-file F] */
int cmd_backup_check(int argc, char **argv);
/* tillsync restore DB FILE [--passphrase-file F] */
int cmd_restore(int argc, char **argv);

#endif
