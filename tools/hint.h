/* SPDX-License-Identifier: Apache-2.0 */
/* tools/hint.h — the command's own advice after a library error: which tillsync command helps. */
#ifndef TSYNC_TOOLS_HINT_H
#define TSYNC_TOOLS_HINT_H
#include <stddef.h>

/* Writes into buf (size n) the hint for a library error of the given code and message, as
 * "run `tillsync ...`: ...", and returns buf; or returns NULL when no command helps, or when the
 * message names a tillsync command itself (wording of an older library). */
const char *cli_hint(int code, const char *message, char *buf, size_t n);
#endif
