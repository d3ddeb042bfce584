/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_io.h — the export and import commands of tillsync (tools/cmd_io.c). Each takes argv as
 * main gets it (argv[1] is the command name) and returns the exit status: 0, 1 for a failure, 2
 * for a usage error. Formats: docs/IO.md. */
#ifndef TSYNC_TOOLS_CMD_IO_H
#define TSYNC_TOOLS_CMD_IO_H

/* tillsync export DB TABLE|--query SQL [--format csv|json|ndjson] [-o FILE] */
int cmd_export(int argc, char **argv);
/* tillsync import DB TABLE FILE [--format csv|json|ndjson] [--skip-bad] */
int cmd_import(int argc, char **argv);

#endif
