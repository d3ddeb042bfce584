/* SPDX-License-Identifier: Apache-2.0 */
/* tools/cmd_trust.h — the shop trust commands of tillsync: the admin's in tools/cmd_shop.c, the
 * till's in tools/cmd_trust.c, the files they share in tools/trust_text.c. Each takes argv as
 * main gets it (argv[1] is the command name) and returns the exit status: 0, 1 for a failure, 2
 * for a usage error. */
#ifndef TSYNC_TOOLS_CMD_TRUST_H
#define TSYNC_TOOLS_CMD_TRUST_H

#include <stddef.h>
#include <stdint.h>

/* tillsync shop create KEYFILE --name NAME
 * tillsync shop sign KEYFILE REQ [--days N] [--name DEVICE]          > CERT
 * tillsync shop revoke KEYFILE DEVICEKEY [--cutoff SITE:SEQ]... [--cutoffs-from DB] > REVOCATION
 * tillsync shop rotate KEYFILE NEWKEYFILE                            > ROTATION
 * tillsync shop sign-migration KEYFILE NNN_NAME.sql [-o OUT]            > OUT (NNN_NAME.tsmig)
 * tillsync shop show FILE
 * tillsync shop data-key KEYFILE [--device PUBKEY]... [--from DB]     > DATA KEY */
int cmd_shop(int argc, char **argv);
/* The signed migration in FILE (armoured or raw), malloc'd into *rec. 0, or 1 after printing
 * why not. */
int cli_read_signed_migration(const char *path, uint8_t **rec, size_t *len);
/* tillsync enrol-request DB [--name NAME] > REQ */
int cmd_enrol_request(int argc, char **argv);
/* tillsync enrol DB CERT [FILE]...   |   tillsync enrol DB --shop-key KEYFILE [--name N] [--days N]
 */
int cmd_enrol(int argc, char **argv);
/* tillsync revoke DB REVOCATION */
int cmd_revoke(int argc, char **argv);
/* tillsync trust DB [--json]   |   tillsync trust add DB FILE... */
int cmd_trust(int argc, char **argv);

#endif
