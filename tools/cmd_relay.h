/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_relay.h — tillsync relay init|admit|run|status (tools/cmd_relay.c). */
#ifndef TSYNC_TOOLS_CMD_RELAY_H
#define TSYNC_TOOLS_CMD_RELAY_H
int cmd_relay(int argc, char **argv);
#endif
