/* SPDX-License-Identifier: Apache-2.0 */
/*
 * net/relay/relay_int.h — what the relay's files share: the directory layout and the key file.
 *
 * DIR/relay.key: "TSYNCRLY" | version u8 (1) | Ed25519 secret key (64, libsodium layout) |
 * BLAKE2b-256 of everything before (32). 105 bytes, mode 0600.
 */
#ifndef TSYNC_NET_RELAY_INT_H
#define TSYNC_NET_RELAY_INT_H

#include <stddef.h>
#include <stdint.h>

#define TSYNC__RELAY_KEY_FILE  "relay.key"
#define TSYNC__RELAY_KEY_BYTES 105u

/* Reads and checks DIR/relay.key into sk (64 bytes). Errors (message set): TSYNC_ENOTFOUND,
 * TSYNC_ECORRUPT, TSYNC_EIO. */
int tsync__relay_key_load(const char *dir, uint8_t sk[64]);

#endif
