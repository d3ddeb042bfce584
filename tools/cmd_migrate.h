/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_migrate.h — the migrate command of tillsync (tools/cmd_migrate.c). It takes argv as
 * main gets it (argv[1] is the command name) and returns the exit status: 0, 1 for a failure or a
 * refusal, 2 for a usage error. docs/MIGRATIONS.md describes migrations. */
#ifndef TSYNC_TOOLS_CMD_MIGRATE_H
#define TSYNC_TOOLS_CMD_MIGRATE_H

/* tillsync migrate DB DIR | tillsync migrate DB --status [--json] */
int cmd_migrate(int argc, char **argv);

#endif
